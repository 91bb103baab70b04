//! The soak's per-minute series and the bounds it checks on them (pure functions, so that
//! the unit tests below exercise every bound without running a cluster).

use super::json::Json;
use super::stats::round;
use std::collections::{BTreeMap, BTreeSet};

/// Growth bound: the last third's peak may exceed the middle third's by this ratio...
pub const GROWTH_RATIO: f64 = 1.10;
/// ...plus these absolute slacks, for figures where 10 % is less than one unit of normal
/// jitter (see the README's soak section): the allocator keeps a few MiB of freed arenas,
/// a node holds one descriptor per open segment and per connection (a seal or a client
/// reconnecting moves it by a few), and tokio's blocking pool starts and reaps threads on
/// demand (each fsync-heavy burst may add one or two for 10 s).
pub const RSS_SLACK_BYTES: u64 = 8 << 20;
pub const FD_SLACK: u64 = 8;
pub const THREAD_SLACK: u64 = 2;
/// p99 bound: a steady minute's p99 may be this many times the first steady minute's (the
/// issue's figure; `--soak-p99-factor` overrides it).
pub const P99_FACTOR: f64 = 2.0;

/// One site's figures in one bucket: the largest of the bucket's samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SiteFigures {
    pub node: u64,
    pub disk_bytes: u64,
    /// VmRSS: anonymous memory plus the pages of mapped files (sealed segments are read
    /// through mmap, so this includes the log's pages a read has touched).
    pub rss_bytes: u64,
    /// RssAnon: heap and stacks, what a leak grows.
    pub rss_anon_bytes: u64,
    pub fds: u64,
    /// Of those, sockets (peers, clients).
    pub sockets: u64,
    pub threads: u64,
    /// Segment files in its log directory (each open segment holds a descriptor).
    pub segments: u64,
}

impl SiteFigures {
    /// Descriptors other than sockets, beyond one per segment file: what must not grow even
    /// while the log does (without retention the segment count grows by design).
    pub fn file_fds(&self) -> u64 {
        self.fds.saturating_sub(self.sockets + self.segments)
    }

    /// The per-field maximum of two samples (the node is the latest one's).
    pub fn merge(&mut self, s: SiteFigures) {
        self.node = s.node;
        self.disk_bytes = self.disk_bytes.max(s.disk_bytes);
        self.rss_bytes = self.rss_bytes.max(s.rss_bytes);
        self.rss_anon_bytes = self.rss_anon_bytes.max(s.rss_anon_bytes);
        self.fds = self.fds.max(s.fds);
        self.sockets = self.sockets.max(s.sockets);
        self.threads = self.threads.max(s.threads);
        self.segments = self.segments.max(s.segments);
    }
}

/// One "minute" of the soak (`--soak-minute-secs` long).
#[derive(Debug, Clone, Default)]
pub struct Bucket {
    /// Commit latencies (ms) of the messages sent in this bucket and acknowledged.
    pub lat_ms: Vec<f32>,
    /// Figures per site slot (a rebuilt site takes the burned one's slot).
    pub sites: BTreeMap<usize, SiteFigures>,
    /// Slots whose process started (restart or rebuild) during this bucket.
    pub fresh: BTreeSet<usize>,
    /// What happened (fire, rebuild, restart, verify).
    pub events: Vec<String>,
    /// A fire, rebuild or rolling restart overlapped this bucket.
    pub disrupted: bool,
    /// The slowest message sent in this bucket: its commit latency (ms) and when it was sent
    /// (seconds since the soak began), to place a hiccup within the minute.
    pub slowest: Option<(f32, f64)>,
}

impl Bucket {
    /// Files one acknowledged message's commit latency, sent `sent_s` into the soak.
    pub fn add(&mut self, lat_ms: f32, sent_s: f64) {
        self.lat_ms.push(lat_ms);
        if self.slowest.is_none_or(|(ms, _)| lat_ms > ms) {
            self.slowest = Some((lat_ms, sent_s));
        }
    }

    /// Nearest-rank p99 of the bucket's commit latencies in ms (0 without any).
    pub fn p99_ms(&self) -> f64 {
        let mut l = self.lat_ms.clone();
        if l.is_empty() {
            return 0.0;
        }
        l.sort_by(f32::total_cmp);
        let rank = (l.len() as f64 * 0.99).ceil() as usize;
        f64::from(l[rank.clamp(1, l.len()) - 1])
    }
}

/// The outcome of one bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bound {
    /// False when the run gave it nothing to check (then it does not fail the soak).
    pub checked: bool,
    pub ok: bool,
    pub detail: String,
}

impl Bound {
    fn pass(detail: String) -> Bound {
        Bound {
            checked: true,
            ok: true,
            detail,
        }
    }
    fn fail(detail: String) -> Bound {
        Bound {
            checked: true,
            ok: false,
            detail,
        }
    }
    fn skipped(detail: &str) -> Bound {
        Bound {
            checked: false,
            ok: true,
            detail: detail.to_string(),
        }
    }

    pub fn json(&self) -> Json {
        Json::obj([
            ("checked", self.checked.into()),
            ("ok", self.ok.into()),
            ("detail", self.detail.clone().into()),
        ])
    }
}

/// Disk per site, after the site's first fill (its disk reached `retention_bytes`), stays
/// at most `limit_bytes`. Unchecked without retention.
pub fn check_disk(buckets: &[Bucket], retention_bytes: Option<u64>, limit_bytes: u64) -> Bound {
    let Some(retention) = retention_bytes else {
        return Bound::skipped("retention off: the nodes keep everything");
    };
    let mut filled: BTreeSet<usize> = BTreeSet::new();
    let mut worst = 0u64;
    for (i, b) in buckets.iter().enumerate() {
        for (&slot, f) in &b.sites {
            if filled.contains(&slot) && f.disk_bytes > limit_bytes {
                return Bound::fail(format!(
                    "minute {i}: site slot {slot} (node {}) holds {} bytes > limit {limit_bytes}",
                    f.node, f.disk_bytes
                ));
            }
            if filled.contains(&slot) {
                worst = worst.max(f.disk_bytes);
            }
            if f.disk_bytes >= retention {
                filled.insert(slot);
            }
        }
    }
    if filled.is_empty() {
        return Bound::skipped("no site reached its retention size");
    }
    Bound::pass(format!(
        "largest after the first fill {worst} bytes <= {limit_bytes}"
    ))
}

/// One figure of a site's, read from its sample.
type Figure = fn(&SiteFigures) -> u64;

/// The peak of `field` over the undisturbed buckets in `range` (no fire, rebuild or restart,
/// and not one in which the slot's own process started).
fn peak(
    buckets: &[Bucket],
    range: std::ops::Range<usize>,
    slot: usize,
    field: Figure,
) -> Option<u64> {
    buckets[range]
        .iter()
        .filter(|b| !b.disrupted && !b.fresh.contains(&slot))
        .filter_map(|b| b.sites.get(&slot).map(field))
        .max()
}

/// RSS, descriptors and threads of each site's process: the last third's peak stays within
/// [`GROWTH_RATIO`] of the middle third's (plus the slacks above), both over undisturbed
/// minutes: a fire, rebuild or restart is a transient on every site (the snapshot source
/// serves a bulk fetch on extra threads, clients reconnect). Descriptors are checked in
/// two parts: files beyond one per segment file (the segment count is the disk bound's
/// business: it plateaus with retention and grows without it; a leak, of deleted segments'
/// descriptors too, shows) and sockets. Anonymous RSS is always checked; the whole RSS only when `log_bounded`
/// (retention on): otherwise the mapped pages of a log that grows by design grow with it.
/// Sockets get `clients` more slack: the soak's clients connect to the leader, and the
/// leadership moves with every fire and restart.
pub fn check_growth(buckets: &[Bucket], log_bounded: bool, clients: u64) -> Bound {
    let n = buckets.len();
    if n < 3 {
        return Bound::skipped("fewer than 3 minutes");
    }
    let (middle, last) = (n / 3..2 * n / 3, 2 * n / 3..n);
    let slots: BTreeSet<usize> = buckets
        .iter()
        .flat_map(|b| b.sites.keys().copied())
        .collect();
    let all: [(&str, Figure, u64); 5] = [
        ("rss_bytes", |f| f.rss_bytes, RSS_SLACK_BYTES),
        ("rss_anon_bytes", |f| f.rss_anon_bytes, RSS_SLACK_BYTES),
        (
            "fds (files beyond one per segment)",
            |f| f.file_fds(),
            FD_SLACK,
        ),
        ("fds (sockets)", |f| f.sockets, FD_SLACK + clients),
        ("threads", |f| f.threads, THREAD_SLACK),
    ];
    let fields = &all[usize::from(!log_bounded)..];
    let mut compared = 0;
    let mut notes = Vec::new();
    for &slot in &slots {
        for &(name, field, slack) in fields {
            let (Some(mid), Some(end)) = (
                peak(buckets, middle.clone(), slot, field),
                peak(buckets, last.clone(), slot, field),
            ) else {
                continue;
            };
            compared += 1;
            let limit = (mid as f64 * GROWTH_RATIO) as u64 + slack;
            if end > limit {
                return Bound::fail(format!(
                    "site slot {slot}: {name} grew from {mid} (middle third) to {end} (last third) > {limit}"
                ));
            }
            notes.push(format!("slot {slot} {name} {mid}->{end}"));
        }
    }
    if compared == 0 {
        return Bound::skipped("no site had undisturbed minutes in both thirds");
    }
    Bound::pass(notes.join(", "))
}

/// The first steady minute: the first after minute 0 (elections, connections, the first
/// segments) that no fire, rebuild or restart overlapped and that acknowledged something.
pub fn first_steady(buckets: &[Bucket]) -> Option<usize> {
    (1..buckets.len()).find(|&i| !buckets[i].disrupted && !buckets[i].lat_ms.is_empty())
}

/// p99 of every undisturbed minute after the first steady one <= `factor` x that minute's
/// p99.
pub fn check_p99(buckets: &[Bucket], factor: f64) -> Bound {
    let Some(first) = first_steady(buckets) else {
        return Bound::skipped("no steady minute");
    };
    let base = buckets[first].p99_ms();
    let limit = base * factor;
    let mut worst = 0f64;
    for (i, b) in buckets.iter().enumerate().skip(first) {
        if b.disrupted || b.lat_ms.is_empty() {
            continue;
        }
        let p99 = b.p99_ms();
        if p99 > limit {
            return Bound::fail(format!(
                "minute {i}: p99 {p99:.1} ms > {factor} x {base:.1} ms (minute {first})"
            ));
        }
        worst = worst.max(p99);
    }
    Bound::pass(format!(
        "worst steady p99 {:.1} ms <= {:.1} ms ({factor} x minute {first})",
        round(worst, 1),
        round(limit, 1)
    ))
}

#[cfg(test)]
#[path = "soak_check_tests.rs"]
mod tests;
