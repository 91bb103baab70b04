//! Repair from peers: a node that finds a damaged sealed segment fetches the identical file
//! from a replica that holds it, verifies it and swaps it in, while it keeps serving.
//!
//! Damage is found by:
//! - a client read or subscription that returns [`Error::Corruption`] naming a sealed segment
//!   (a repair starts in the background; that read fails, a retry reads the right bytes);
//! - a Raft read (replication, apply) that meets one: the log store's hook
//!   ([`crate::raft::log_store::SegmentRepair`]) waits for the repair and reads again;
//! - the background scrub, which re-reads every committed sealed segment's whole file and
//!   checks its footer and whole-file CRC, at most [`RepairOptions::scrub_mb_per_s`] and one
//!   pass per [`RepairOptions::scrub_pass_interval_ms`];
//! - opening the log at start (`repair_start`).
//!
//! What to ask for: the geometry the node holds in memory (base, end, size; its footer was
//! valid when the segment was opened or sealed) and, from the peers, the whole-file CRC: an
//! `IDENTIFY base` on the fetch connection (`net::fetch`) answers with the identity of the
//! sealed segment a peer holds at that base, only if it is wholly below the peer's committed
//! end. Only a segment wholly below this node's committed end is repaired: committed entries
//! are the same on every replica, and sealed segments seal at the same frame everywhere with
//! a deterministic header (a replicated log writes `created_us` 0), so the peer's file is the
//! same bytes. The copy is then fetched with the catch-up's bulk fetch into `repair/` in the
//! data directory and handed to [`Log::replace_sealed`], which verifies it again (size,
//! whole-file CRC, footer, base, end, cluster id) and renames it over the damaged file.
//!
//! Not repaired (the typed [`Error::Corruption`] stays): damage in the active segment (it has
//! no whole-file identity yet; once it seals in this process, its footer's CRC is the one of
//! the bytes as written, and the damage is then repaired like any sealed segment's), and
//! sealed segments that hold entries not known committed.

use crate::net::fetch::{fetch_segment, identify, FetchOptions, FetchProgress};
use crate::net::fetch_budget::FetchBudget;
use crate::raft::replica::Replica;
use crate::storage::repair::damaged_segment_base;
use crate::storage::{Log, SegmentInfo};
use crate::{Error, Result};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Subdirectory of the data directory where repair copies are fetched.
pub const REPAIR_DIR: &str = "repair";
/// How long a peer may take to answer an IDENTIFY.
const IDENTIFY_TIMEOUT_MS: u64 = 5_000;

/// The background scrub's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairOptions {
    /// Scrub rate in MB/s (10^6 bytes per second of segment file read); 0 turns the scrub
    /// off (reads still trigger repairs). Default 10.
    pub scrub_mb_per_s: u64,
    /// A scrub pass over all committed sealed segments starts at most this often. Default
    /// 60 000 ms.
    pub scrub_pass_interval_ms: u64,
}

impl Default for RepairOptions {
    fn default() -> Self {
        RepairOptions {
            scrub_mb_per_s: 10,
            scrub_pass_interval_ms: 60_000,
        }
    }
}

/// Counters of the scrub and of repairs on this node (also exported as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairStats {
    /// Bytes of sealed segment files the scrub read.
    pub scrub_bytes: u64,
    /// Sealed segments the scrub checked (clean or not).
    pub scrub_segments: u64,
    /// Sealed segments replaced by a verified copy from a peer.
    pub segments_repaired: u64,
    /// Repair attempts that failed (retried on the next scrub pass or read).
    pub repair_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    scrub_bytes: AtomicU64,
    scrub_segments: AtomicU64,
    repaired: AtomicU64,
    failures: AtomicU64,
}

/// Finds and repairs damaged sealed segments of one node.
pub(crate) struct Repairer {
    replica: Replica,
    site: String,
    fetch: FetchOptions,
    /// The node's fetch budget, shared with catch-up.
    budget: FetchBudget,
    /// Segments with a read-triggered repair task pending (one task per segment).
    pending: Mutex<BTreeSet<u64>>,
    /// Active segments whose damage a read met (said once each, not once per read).
    active_damage_reported: Mutex<BTreeSet<u64>>,
    /// One repair at a time; each re-checks its segment first, so a second caller for the
    /// same damage waits for the first and then finds the segment clean.
    serial: tokio::sync::Mutex<()>,
    counters: Counters,
    tasks: Mutex<tokio::task::JoinSet<()>>,
    /// Set by `stop`: a scrub reading on a blocking thread (which abort cannot reach) stops
    /// within one chunk, so the log is not held long after the node stopped.
    stopped: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
    /// The `node` label of this node's repair metrics (several nodes may share a process).
    node_label: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain inserts and removes: consistent even if a holder panicked.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Repairer {
    /// A repairer for `replica`; starts the scrub per `opts`. Call inside a tokio runtime.
    pub(crate) fn start(
        replica: Replica,
        site: &str,
        fetch: FetchOptions,
        budget: FetchBudget,
        opts: RepairOptions,
    ) -> Arc<Repairer> {
        let r = Arc::new(Repairer {
            node_label: replica.status().node_id.to_string(),
            replica,
            site: site.to_string(),
            fetch,
            budget,
            pending: Mutex::new(BTreeSet::new()),
            active_damage_reported: Mutex::new(BTreeSet::new()),
            serial: tokio::sync::Mutex::new(()),
            counters: Counters::default(),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
            stopped: Arc::new(AtomicBool::new(false)),
            runtime: tokio::runtime::Handle::current(),
        });
        let hook = Arc::new(RepairHook(Arc::downgrade(&r)));
        r.replica.store.set_repair(hook);
        if opts.scrub_mb_per_s > 0 {
            let me = r.clone();
            let handle = r.runtime.clone();
            lock(&r.tasks).spawn_on(async move { me.scrub_loop(opts).await }, &handle);
        }
        r
    }

    /// Stops the scrub and any repair in flight.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        lock(&self.tasks).abort_all();
    }

    /// Counts the segments repaired before the log opened (`repair_start`).
    pub(crate) fn count_start_repairs(&self, n: u64) {
        self.counters.repaired.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> RepairStats {
        let c = &self.counters;
        RepairStats {
            scrub_bytes: c.scrub_bytes.load(Ordering::Relaxed),
            scrub_segments: c.scrub_segments.load(Ordering::Relaxed),
            segments_repaired: c.repaired.load(Ordering::Relaxed),
            repair_failures: c.failures.load(Ordering::Relaxed),
        }
    }

    fn log(&self) -> &Log {
        self.replica.store.log()
    }

    /// Looks at an error a read returned: damage in a sealed segment starts its repair in the
    /// background (the read itself still fails; a retry after the repair succeeds).
    pub(crate) fn on_read_error(self: &Arc<Self>, e: &Error) {
        let Some(base) = damaged_segment_base(e) else {
            return;
        };
        if !self
            .log()
            .sealed_geometry()
            .iter()
            .any(|g| g.base_offset == base)
        {
            if lock(&self.active_damage_reported).insert(base) {
                tracing::error!(segment = base, error = %e,
                    "damage in the active segment: not repairable from peers, reads there fail");
            }
            return;
        }
        if !lock(&self.pending).insert(base) {
            return;
        }
        let me = self.clone();
        let mut tasks = lock(&self.tasks);
        // Finished repairs leave their results here; drop them so the set stays small.
        while tasks.try_join_next().is_some() {}
        tasks.spawn_on(
            async move {
                let _ = me.repair(base).await;
                lock(&me.pending).remove(&base);
            },
            &self.runtime,
        );
    }

    /// Repairs the sealed segment at `base` from a peer, if it is (still) damaged: repairs run
    /// one at a time, and each first re-reads the whole file (a segment another caller just
    /// repaired, or that reads clean, is left alone). Logs one line when it repairs or fails.
    pub(crate) async fn repair(&self, base: u64) -> Result<()> {
        let _one_at_a_time = self.serial.lock().await;
        let log = self.log().clone();
        let checked = tokio::task::spawn_blocking(move || log.scrub_sealed(base, &mut |_| true))
            .await
            .map_err(|e| Error::TaskFailed {
                task: "segment repair",
                reason: e.to_string(),
            })?;
        match checked {
            Err(Error::Corruption { .. }) => {}
            // Clean, or no longer a sealed segment of this log (purged, cut, never sealed).
            Ok(_) => return Ok(()),
            Err(e) => return Err(e),
        }
        let started = Instant::now();
        let r = self.repair_inner(base).await;
        match &r {
            Ok(info) => {
                self.counters.repaired.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("sitelog_segments_repaired_total", "node" => self.node_label.clone()).increment(1);
                tracing::warn!(
                    segment = base,
                    end = info.end_offset,
                    bytes = info.size_bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "repaired damaged sealed segment {base} with a verified copy from a peer"
                );
            }
            Err(e) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("sitelog_segment_repair_failures_total", "node" => self.node_label.clone()).increment(1);
                tracing::error!(segment = base, error = %e,
                    "repair of damaged sealed segment {base} failed; retried on the next scrub pass or read");
            }
        }
        r.map(|_| ())
    }

    async fn repair_inner(&self, base: u64) -> Result<SegmentInfo> {
        let held = self
            .log()
            .sealed_geometry()
            .into_iter()
            .find(|g| g.base_offset == base)
            .ok_or_else(|| {
                Error::InvalidArgument(format!("no sealed segment at {base} to repair"))
            })?;
        let commit_end = *self.replica.committed_end.borrow();
        if held.end_offset > commit_end {
            return Err(Error::InvalidArgument(format!(
                "segment {base} holds entries up to {} above the committed end {commit_end}; \
                 only committed segments are repaired",
                held.end_offset
            )));
        }
        let sources = self.sources();
        let mut last = None;
        // Normally every peer names the same file; a peer whose own footer is damaged names
        // another CRC, and that copy then fails to verify: try the next candidate.
        let expect = Expected {
            base_offset: base,
            end_offset: held.end_offset,
            size_bytes: Some(held.size_bytes),
        };
        for info in identify_copies(&expect, &sources, &self.fetch).await? {
            match self.fetch_and_swap(info, &sources).await {
                Ok(()) => return Ok(info),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Protocol("no candidate copy".into())))
    }

    async fn fetch_and_swap(&self, info: SegmentInfo, sources: &[String]) -> Result<()> {
        let (io, dir) = (&self.replica.io, &self.replica.dir);
        let staging = fetch_copy(
            io,
            dir,
            self.replica.cluster_id,
            &info,
            sources,
            &self.fetch,
            &self.budget,
        )
        .await?;
        let log = self.log().clone();
        tokio::task::spawn_blocking(move || log.replace_sealed(&info, &staging))
            .await
            .map_err(|e| Error::TaskFailed {
                task: "segment repair",
                reason: e.to_string(),
            })?
    }

    /// Peers' addresses, same site first; never this node.
    fn sources(&self) -> Vec<String> {
        let me = self.replica.status().node_id;
        let mut peers: Vec<(String, String)> = self
            .replica
            .members()
            .into_iter()
            .filter(|(id, _)| *id != me)
            .map(|(_, n)| (n.site, n.addr))
            .collect();
        peers.sort_by_key(|(site, _)| *site != self.site);
        peers.into_iter().map(|(_, addr)| addr).collect()
    }

    /// Scrub passes until stopped: every committed sealed segment, oldest first, at the
    /// configured rate; damage found starts a repair (awaited, so one at a time).
    async fn scrub_loop(self: Arc<Self>, opts: RepairOptions) {
        let rate_bytes_per_s = opts.scrub_mb_per_s.saturating_mul(1_000_000);
        loop {
            let pass_started = tokio::time::Instant::now();
            let commit_end = *self.replica.committed_end.borrow();
            let mut pacer = Pacer::new(rate_bytes_per_s);
            for g in self.log().sealed_geometry() {
                if g.end_offset > commit_end {
                    break;
                }
                pacer = self.scrub_one(g.base_offset, pacer).await;
            }
            let next = pass_started + Duration::from_millis(opts.scrub_pass_interval_ms.max(1));
            tokio::time::sleep_until(next).await;
        }
    }

    async fn scrub_one(&self, base: u64, mut pacer: Pacer) -> Pacer {
        let log = self.log().clone();
        let stopped = self.stopped.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let r = log.scrub_sealed(base, &mut |n| {
                pacer.account(n);
                !stopped.load(Ordering::Relaxed)
            });
            (r, pacer)
        })
        .await;
        let Ok((result, pacer)) = checked else {
            return Pacer::new(0);
        };
        let c = &self.counters;
        match result {
            Ok(Some(bytes)) => {
                c.scrub_segments.fetch_add(1, Ordering::Relaxed);
                c.scrub_bytes.fetch_add(bytes, Ordering::Relaxed);
                metrics::counter!("sitelog_scrub_segments_total", "node" => self.node_label.clone()).increment(1);
                metrics::counter!("sitelog_scrub_bytes_total", "node" => self.node_label.clone())
                    .increment(bytes);
            }
            Ok(None) => {}
            Err(e @ Error::Corruption { .. }) => {
                c.scrub_segments.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("sitelog_scrub_segments_total", "node" => self.node_label.clone()).increment(1);
                tracing::error!(segment = base, error = %e, "scrub found a damaged sealed segment; repairing it from a peer");
                let _ = self.repair(base).await;
            }
            Err(e) => tracing::warn!(segment = base, error = %e, "scrub could not read a segment"),
        }
        pacer
    }
}

/// The hook the Raft log store calls when its reads meet a damaged sealed segment. Weak: the
/// repairer holds the replica, whose log store holds this hook.
pub(crate) struct RepairHook(pub(crate) std::sync::Weak<Repairer>);

impl crate::raft::log_store::SegmentRepair for RepairHook {
    fn repair(&self, base: u64) -> futures_util::future::BoxFuture<'static, Result<()>> {
        let repairer = self.0.upgrade();
        Box::pin(async move {
            match repairer {
                Some(r) => r.repair(base).await,
                None => Err(Error::Shutdown),
            }
        })
    }
}

/// What a good copy must be; the size is unknown when the local footer is damaged.
pub(crate) struct Expected {
    pub base_offset: u64,
    pub end_offset: u64,
    pub size_bytes: Option<u64>,
}

/// The identities peers give for the segment `expect` names, distinct, in the order of
/// `sources`; an error when no peer holds a matching one.
pub(crate) async fn identify_copies(
    expect: &Expected,
    sources: &[String],
    fetch: &FetchOptions,
) -> Result<Vec<SegmentInfo>> {
    let base = expect.base_offset;
    let mut why = String::from("no peer to ask");
    let mut found: Vec<SegmentInfo> = Vec::new();
    for addr in sources {
        let limit = Duration::from_millis(IDENTIFY_TIMEOUT_MS);
        match tokio::time::timeout(limit, identify(addr, base, fetch)).await {
            Ok(Ok(Some(info)))
                if info.end_offset == expect.end_offset
                    && expect.size_bytes.is_none_or(|s| s == info.size_bytes) =>
            {
                if !found.contains(&info) {
                    found.push(info);
                }
            }
            Ok(Ok(Some(info))) => why = format!("{addr} holds another segment: {info:?}"),
            Ok(Ok(None)) => why = format!("{addr} holds no committed segment there"),
            Ok(Err(e)) => why = format!("{addr}: {e}"),
            Err(_) => why = format!("{addr}: no answer in {IDENTIFY_TIMEOUT_MS} ms"),
        }
    }
    if !found.is_empty() {
        return Ok(found);
    }
    Err(Error::Protocol(format!(
        "no peer holds segment {base}..{}: {why}",
        expect.end_offset
    )))
}

/// Fetches a verified copy of `info` from `sources` into `repair/` under `data_dir`; returns
/// its path.
pub(crate) async fn fetch_copy(
    io: &crate::io::IoRef,
    data_dir: &std::path::Path,
    cluster_id: u64,
    info: &SegmentInfo,
    sources: &[String],
    fetch: &FetchOptions,
    budget: &FetchBudget,
) -> Result<PathBuf> {
    let dir = data_dir.join(REPAIR_DIR);
    io.create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let staging = dir.join(crate::storage::segment::file_name(info.base_offset));
    // A leftover of an earlier attempt may be of another identity: start afresh.
    let _ = io.remove(&staging);
    let progress = FetchProgress::default();
    fetch_segment(
        io, cluster_id, info, &staging, sources, fetch, budget, &progress,
    )
    .await?;
    Ok(staging)
}

/// Keeps the scrub at its rate: sleeps (on the blocking thread that reads) until the bytes
/// read so far are due.
struct Pacer {
    start: Instant,
    bytes: u64,
    rate_bytes_per_s: u64,
}

impl Pacer {
    fn new(rate_bytes_per_s: u64) -> Self {
        Pacer {
            start: Instant::now(),
            bytes: 0,
            rate_bytes_per_s,
        }
    }

    fn account(&mut self, n: u64) {
        self.bytes += n;
        if self.rate_bytes_per_s == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate_bytes_per_s as f64);
        if let Some(wait) = due.checked_sub(self.start.elapsed()) {
            // A rate limit, not synchronisation: this thread only reads the file.
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_keeps_the_rate() {
        let mut p = Pacer::new(10_000_000);
        let t = Instant::now();
        for _ in 0..5 {
            p.account(100_000);
        }
        // 500 kB at 10 MB/s: 50 ms at least.
        assert!(t.elapsed() >= Duration::from_millis(50));
        let mut off = Pacer::new(0);
        let t = Instant::now();
        off.account(u64::MAX / 2);
        assert!(t.elapsed() < Duration::from_millis(50));
    }
}
