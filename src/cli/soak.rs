//! `sitelog drill --soak MINUTES`: the soak.
//!
//! The drill's chat workload runs at a steady rate against N sites whose logs keep only
//! `--retention-bytes` (small, so that disk use plateaus within the first minutes). Every
//! `--fire-every-secs` the leader's site burns (SIGKILL, data directory deleted) and a new
//! site is rebuilt by snapshot catch-up; every `--restart-every-secs` every site is restarted
//! in turn (SIGTERM, restart on the same directory, wait for its catch-up). The nodes take
//! their manifest snapshots themselves (`--snapshot-every`).
//!
//! A sampler reads every site's process (/proc: VmRSS, Threads, open descriptors) and data
//! directory (bytes of its files) several times per "minute" (`--soak-minute-secs`); the
//! writers file each acknowledged message's commit latency under the minute it was
//! acknowledged in. After each rebuild and at the end, every acknowledged message still inside
//! the retention of a live site is read back from it and compared byte for byte (RPO 0).
//! The bounds (`soak_check`) decide the exit status.

use super::cluster::LocalCluster;
use super::drill::{message, Acked, DrillArgs};
use super::json::Json;
use super::soak_check::{self as check, Bound, Bucket, SiteFigures};
use super::stats::{round, Latency};
use super::sys::WorkDir;
use super::{CliError, CliResult, Context};
use crate::node::client::{AppendOutcome, Client};
use crate::storage::checksum::checksum;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const CLUSTER_ID: u64 = 0x50_a4;
/// Limits on the run's shape.
const MAX_SOAK_MINUTES: f64 = 24.0 * 60.0;
const MAX_BUCKETS: usize = 10_000;
const MIN_MINUTE_SECS: f64 = 1.0;
const MIN_EVENT_EVERY_SECS: f64 = 5.0;
/// Files under a site's directory besides segments: superblock, Raft metadata, identity,
/// the snapshot manifest (a few KiB); rounded up.
const SNAPSHOT_FIXED_OVERHEAD_BYTES: u64 = 64 << 10;
/// How long a site may take to stop on SIGTERM before it is killed (and counted unclean).
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// How long a restarted or rebuilt site may take to catch up.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(300);
/// Records per read when verifying.
const READ_BATCH: u32 = 10_000;

/// The soak's settings after defaults.
struct Plan {
    total: Duration,
    minute: Duration,
    rate: u64,
    retention_bytes: Option<u64>,
    segment_bytes: u64,
    snapshot_every: u64,
    fire_every: Duration,
    restart_every: Duration,
}

impl Plan {
    fn new(args: &DrillArgs, minutes: f64) -> CliResult<Plan> {
        if !(minutes > 0.0 && minutes <= MAX_SOAK_MINUTES) {
            return Err(CliError(format!(
                "--soak takes 0 < MINUTES <= {MAX_SOAK_MINUTES}, not {minutes}"
            )));
        }
        let minute_secs = args.soak_minute_secs;
        if !(MIN_MINUTE_SECS..=3600.0).contains(&minute_secs) {
            return Err(CliError(format!(
                "--soak-minute-secs takes 1 to 3600, not {minute_secs}"
            )));
        }
        let total_secs = minutes * 60.0;
        if total_secs / minute_secs > MAX_BUCKETS as f64 {
            return Err(CliError(format!(
                "more than {MAX_BUCKETS} minutes of --soak-minute-secs"
            )));
        }
        if args.soak_p99_factor.is_nan() || args.soak_p99_factor < 1.0 {
            return Err(CliError(format!(
                "--soak-p99-factor takes at least 1, not {}",
                args.soak_p99_factor
            )));
        }
        let every = |v: Option<f64>, default: f64, flag: &str| match v.unwrap_or(default) {
            s if s >= MIN_EVENT_EVERY_SECS => Ok(Duration::from_secs_f64(s)),
            s => Err(CliError(format!(
                "--{flag} takes at least {MIN_EVENT_EVERY_SECS} s, not {s}"
            ))),
        };
        let segment_bytes =
            args.segment_bytes
                .unwrap_or(if args.quick { 256 << 10 } else { 1 << 20 });
        let retention = args
            .retention_bytes
            .unwrap_or(if args.quick { 1 << 20 } else { 16 << 20 });
        Ok(Plan {
            total: Duration::from_secs_f64(total_secs),
            minute: Duration::from_secs_f64(minute_secs),
            rate: args.rate.unwrap_or(if args.quick { 300 } else { 1000 }),
            retention_bytes: Some(retention),
            segment_bytes,
            snapshot_every: args
                .snapshot_every
                .unwrap_or(if args.quick { 500 } else { 5000 }),
            fire_every: every(args.fire_every_secs, 180.0, "fire-every-secs")?,
            restart_every: every(args.restart_every_secs, 300.0, "restart-every-secs")?,
        })
    }

    fn buckets(&self) -> usize {
        let n = (self.total.as_secs_f64() / self.minute.as_secs_f64()).ceil() as usize;
        n.clamp(1, MAX_BUCKETS)
    }

    /// The disk bound per site: retention + 3 segments (the open one, the preallocated next
    /// one, one sealed but not yet past retention) + snapshot overhead (a segment being fetched
    /// by a catch-up, plus the small metadata files).
    fn disk_limit_bytes(&self) -> u64 {
        self.retention_bytes.unwrap_or(0)
            + 3 * self.segment_bytes
            + self.segment_bytes
            + SNAPSHOT_FIXED_OVERHEAD_BYTES
    }

    fn node_args(&self, args: &DrillArgs) -> Vec<String> {
        let timers = match args.timers {
            super::node::Timers::Lan => "lan",
            super::node::Timers::Wan => "wan",
        };
        let mut a: Vec<String> = [
            "--segment-bytes",
            &self.segment_bytes.to_string(),
            "--snapshot-every",
            &self.snapshot_every.to_string(),
            "--snapshot-keep",
            &(self.snapshot_every / 5).max(1).to_string(),
            "--timers",
            timers,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(r) = self.retention_bytes {
            a.extend(["--retention-bytes".to_string(), r.to_string()]);
        }
        a
    }
}

/// A site's running process.
#[derive(Debug, Clone)]
struct Proc {
    node: u64,
    pid: u32,
    dir: PathBuf,
}

/// What the writers, the sampler and the main loop share.
#[derive(Default)]
struct Tally {
    /// Acknowledged messages not yet out of every live site's retention.
    acked: Vec<Acked>,
    acknowledged: u64,
    unknown: u64,
    failed: u64,
    buckets: Vec<Bucket>,
}

/// The addresses the writers use; a new generation makes them reconnect.
#[derive(Default)]
struct Book {
    generation: u64,
    addrs: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    start: Instant,
    minute: Duration,
    /// The number of minutes of the run (what comes after the planned end, the drain and
    /// verification, counts in the last one).
    buckets: usize,
    tally: Arc<Mutex<Tally>>,
    book: Arc<Mutex<Book>>,
    /// Site slot -> its process (a rebuilt site takes the burned one's slot).
    procs: Arc<Mutex<BTreeMap<usize, Proc>>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn ms(&self, t: Instant) -> f64 {
        t.duration_since(self.start).as_secs_f64() * 1e3
    }

    fn bucket_index(&self, t: Instant) -> usize {
        let i = t.duration_since(self.start).as_secs_f64() / self.minute.as_secs_f64();
        (i as usize).min(self.buckets - 1)
    }

    /// Runs `f` on the bucket of time `t` (created on first use).
    fn with_bucket<R>(&self, t: Instant, f: impl FnOnce(&mut Bucket) -> R) -> R {
        let i = self.bucket_index(t);
        let mut tally = locked(&self.tally);
        if tally.buckets.len() <= i {
            tally.buckets.resize_with(i + 1, Bucket::default);
        }
        f(&mut tally.buckets[i])
    }

    /// Marks every bucket overlapping `[from, to]` disrupted, with `what` in the last one.
    fn disrupted(&self, from: Instant, to: Instant, what: String) {
        for i in self.bucket_index(from)..=self.bucket_index(to) {
            let t = self.start + self.minute.mul_f64(i as f64);
            self.with_bucket(t.max(from), |b| b.disrupted = true);
        }
        self.with_bucket(to, |b| b.events.push(what));
    }

    fn publish_addrs(&self, cluster: &LocalCluster) {
        let mut book = locked(&self.book);
        book.generation += 1;
        book.addrs = cluster.addrs.values().cloned().collect();
    }

    fn set_proc(&self, slot: usize, cluster: &LocalCluster, node: u64) {
        let mut procs = locked(&self.procs);
        match cluster.pid(node) {
            Some(pid) => {
                let dir = cluster.node_dir(node);
                procs.insert(slot, Proc { node, pid, dir });
            }
            None => {
                procs.remove(&slot);
            }
        }
        drop(procs);
        self.with_bucket(Instant::now(), |b| {
            b.fresh.insert(slot);
        });
    }

    fn slot_of(&self, node: u64) -> Option<usize> {
        locked(&self.procs)
            .iter()
            .find(|(_, p)| p.node == node)
            .map(|(&s, _)| s)
    }
}

/// Runs the soak (`drill --soak MINUTES`).
pub async fn soak(args: &DrillArgs, minutes: f64) -> CliResult<()> {
    if args.sites < 3 {
        return Err(CliError("a soak needs at least 3 sites".into()));
    }
    let plan = Plan::new(args, minutes)?;
    let work = WorkDir::create(args.dir.as_deref(), args.keep)?;
    eprintln!(
        "soak: {} sites in {}, {:.1} min, {} msg/s",
        args.sites,
        work.path().display(),
        minutes,
        plan.rate
    );
    let mut cluster = LocalCluster::start(
        work.path(),
        args.sites,
        CLUSTER_ID,
        "auto",
        plan.node_args(args),
        !args.insecure,
    )?;
    // The children's safety net must outlast the soak.
    cluster.max_runtime_secs = plan.total.as_secs() + 3600;
    cluster.leader(Duration::from_secs(20)).await?;
    let shared = Shared {
        start: Instant::now(),
        minute: plan.minute,
        buckets: plan.buckets(),
        tally: Arc::default(),
        book: Arc::default(),
        procs: Arc::default(),
    };
    shared.publish_addrs(&cluster);
    for (slot, id) in cluster.live().into_iter().enumerate() {
        shared.set_proc(slot, &cluster, id);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(args, &shared, cluster.client_of(vec![]), plan.rate, &stop);
    let sampler = tokio::spawn(sample_loop(shared.clone(), stop.clone()));
    let mut run = Run {
        lost: BTreeSet::new(),
        verified_messages: 0,
        out_of_retention: 0,
        verified_nodes: 0,
        fires: 0,
        restarts: 0,
        unclean_stops: 0,
        next_node: args.sites + 1,
        events: Vec::new(),
    };
    let outcome = drive(&plan, &shared, &mut cluster, &mut run).await;
    stop.store(true, Ordering::Relaxed);
    let end = Instant::now();
    for w in writers {
        let _ = w.await;
    }
    let _ = sampler.await;
    outcome?;
    run.events.push((shared.ms(end), "end".into()));
    run.verified_nodes = verify(&shared, &cluster, &mut run).await?;
    let tally = std::mem::take(&mut *locked(&shared.tally));
    let summary = Summary::new(args, &plan, minutes, &shared, end, tally, run);
    summary.write_svg()?;
    summary.print(args.json);
    if !summary.bounds_ok() {
        return Err(CliError(format!(
            "soak bounds broken: {}",
            summary.broken().join("; ")
        )));
    }
    Ok(())
}

/// Counters of the run.
struct Run {
    lost: BTreeSet<u64>,
    verified_messages: u64,
    out_of_retention: u64,
    verified_nodes: usize,
    fires: u64,
    restarts: u64,
    unclean_stops: u64,
    next_node: u64,
    /// (ms since start, what) for the report's markers.
    events: Vec<(f64, String)>,
}

/// The main loop: fires and rolling restarts on their schedule until the time is up.
async fn drive(
    plan: &Plan,
    shared: &Shared,
    cluster: &mut LocalCluster,
    run: &mut Run,
) -> CliResult<()> {
    let mut next_fire = plan.fire_every / 2;
    let mut next_restart = plan.restart_every / 2;
    let mut printed = 0;
    loop {
        let now = shared.start.elapsed();
        if now >= plan.total {
            return Ok(());
        }
        if now >= next_fire {
            fire_and_rebuild(shared, cluster, run).await?;
            verify(shared, cluster, run).await?;
            next_fire += plan.fire_every;
        } else if now >= next_restart {
            rolling_restart(shared, cluster, run).await?;
            next_restart += plan.restart_every;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let current = shared.bucket_index(Instant::now());
        while printed < current {
            print_minute(shared, printed);
            printed += 1;
        }
    }
}

fn print_minute(shared: &Shared, i: usize) {
    let tally = locked(&shared.tally);
    let Some(b) = tally.buckets.get(i) else {
        return;
    };
    let disk: Vec<String> = b
        .sites
        .values()
        .map(|f| format!("{:.1}", f.disk_bytes as f64 / 1e6))
        .collect();
    let rss: Vec<String> = b
        .sites
        .values()
        .map(|f| format!("{:.0}", f.rss_bytes as f64 / 1e6))
        .collect();
    let slowest = b.slowest.map_or(String::new(), |(ms, at_s)| {
        format!("; slowest {ms:.1} ms, sent at {at_s:.1} s")
    });
    eprintln!(
        "minute {i}: {:.0} msg/s, p99 {:.1} ms, disk MB [{}], RSS MB [{}]{}{slowest}",
        b.lat_ms.len() as f64 / shared.minute.as_secs_f64(),
        b.p99_ms(),
        disk.join(" "),
        rss.join(" "),
        if b.events.is_empty() {
            String::new()
        } else {
            format!(" ({})", b.events.join(", "))
        }
    );
}

/// The leader's site burns (SIGKILL, directory deleted); a site with a new node id is
/// rebuilt by snapshot catch-up and swapped in, in the burned one's slot.
async fn fire_and_rebuild(
    shared: &Shared,
    cluster: &mut LocalCluster,
    run: &mut Run,
) -> CliResult<()> {
    let t0 = Instant::now();
    let burned = cluster.leader(Duration::from_secs(20)).await?;
    let slot = shared
        .slot_of(burned)
        .ok_or_else(|| CliError(format!("site-{burned} has no slot")))?;
    locked(&shared.procs).remove(&slot);
    cluster.forget(burned);
    let dir = cluster.node_dir(burned);
    std::fs::remove_dir_all(&dir).context(|| format!("cannot delete {}", dir.display()))?;
    shared.publish_addrs(cluster);
    run.events.push((shared.ms(t0), format!("fire {burned}")));
    eprintln!("FIRE: site-{burned} (the leader) is gone, data directory deleted");

    let new_id = run.next_node;
    run.next_node += 1;
    let addr = cluster.spawn_joining(new_id)?;
    shared.set_proc(slot, cluster, new_id);
    let voters = super::drill::replace(cluster, burned, new_id, addr)
        .await?
        .voters;
    shared.publish_addrs(cluster);
    let t1 = Instant::now();
    run.events
        .push((shared.ms(t1), format!("rebuilt {new_id}")));
    shared.disrupted(t0, t1, format!("fire site-{burned}, rebuilt site-{new_id}"));
    run.fires += 1;
    eprintln!("site-{new_id} rebuilt and swapped in: voters {voters:?}");
    Ok(())
}

/// Every site in turn: SIGTERM (a clean stop), restart on the same directory, wait until it
/// has caught up with the leader's commit before the next.
async fn rolling_restart(
    shared: &Shared,
    cluster: &mut LocalCluster,
    run: &mut Run,
) -> CliResult<()> {
    let t0 = Instant::now();
    run.events.push((shared.ms(t0), "restarts".into()));
    for id in cluster.live() {
        let slot = shared
            .slot_of(id)
            .ok_or_else(|| CliError(format!("site-{id} has no slot")))?;
        if !cluster.terminate(id, STOP_LIMIT).await {
            run.unclean_stops += 1;
            eprintln!("site-{id} did not stop cleanly on SIGTERM");
        }
        cluster.spawn(id)?;
        shared.set_proc(slot, cluster, id);
        wait_caught_up(cluster, id).await?;
    }
    let t1 = Instant::now();
    shared.disrupted(t0, t1, "rolling restart".into());
    run.restarts += 1;
    eprintln!(
        "rolling restart of {} sites done in {:.1} s",
        cluster.live().len(),
        (t1 - t0).as_secs_f64()
    );
    Ok(())
}

/// Waits until node `id` holds what the leader had committed when the wait began.
async fn wait_caught_up(cluster: &LocalCluster, id: u64) -> CliResult<()> {
    let deadline = Instant::now() + CATCH_UP_LIMIT;
    let leader = cluster.leader(Duration::from_secs(30)).await?;
    let target = cluster.status(leader).await.map_or(0, |s| s.commit_end);
    while cluster
        .status(id)
        .await
        .is_none_or(|s| s.commit_end < target)
    {
        if Instant::now() >= deadline {
            return Err(CliError(format!(
                "site-{id} did not catch up after restart"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Steady-rate writers (no bursts: a soak measures the steady state). A writer that fell
/// behind (a fire, an election) does not catch up in a burst either.
fn spawn_writers(
    args: &DrillArgs,
    shared: &Shared,
    base: Client,
    rate: u64,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let writers = args.writers.max(1);
    let period = Duration::from_secs_f64(writers as f64 / rate.max(1) as f64);
    let next_id = Arc::new(AtomicU64::new(0));
    (0..writers)
        .map(|_| {
            let (shared, stop, next_id) = (shared.clone(), stop.clone(), next_id.clone());
            let base = base.with_addrs(vec![]);
            let conversations = args.conversations;
            tokio::spawn(async move {
                let mut due = Instant::now();
                let mut generation = u64::MAX;
                let mut client = base.with_addrs(vec![]);
                while !stop.load(Ordering::Relaxed) {
                    due += period;
                    let now = Instant::now();
                    if now.saturating_duration_since(due) > period {
                        due = now;
                    }
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        tokio::time::sleep(wait).await;
                    }
                    {
                        let book = locked(&shared.book);
                        if book.generation != generation {
                            generation = book.generation;
                            client = base.with_addrs(book.addrs.clone());
                            client.request_timeout_ms = 2000;
                            client.leader_wait_ms = 30_000;
                        }
                    }
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let m = message(id, conversations);
                    let (crc, len) = (checksum(&m), m.len() as u32);
                    let sent = Instant::now();
                    let outcome = client.append(vec![Bytes::from(m)]).await;
                    record(
                        &shared,
                        outcome,
                        Acked {
                            offset: 0,
                            crc,
                            len,
                        },
                        sent,
                    );
                }
            })
        })
        .collect()
}

fn record(shared: &Shared, outcome: AppendOutcome, mut a: Acked, sent: Instant) {
    let acked_at = Instant::now();
    match outcome {
        AppendOutcome::Ok(o) => {
            a.offset = o[0];
            let lat_ms = (acked_at - sent).as_secs_f64() * 1e3;
            // Filed under the minute it was sent in: a message stuck in a fire counts in the
            // fire's (disrupted) minute, not in the steady one after it.
            let sent_s = sent.duration_since(shared.start).as_secs_f64();
            shared.with_bucket(sent, |b| b.add(lat_ms as f32, sent_s));
            let mut t = locked(&shared.tally);
            t.acked.push(a);
            t.acknowledged += 1;
        }
        AppendOutcome::Unknown(_) => locked(&shared.tally).unknown += 1,
        AppendOutcome::Failed(_) => locked(&shared.tally).failed += 1,
    }
}

/// Samples every site several times per minute; each bucket keeps the largest sample.
async fn sample_loop(shared: Shared, stop: Arc<AtomicBool>) {
    let every = (shared.minute / 5).min(Duration::from_secs(1));
    while !stop.load(Ordering::Relaxed) {
        let procs: Vec<(usize, Proc)> = locked(&shared.procs)
            .iter()
            .map(|(&s, p)| (s, p.clone()))
            .collect();
        for (slot, p) in procs {
            if let Some(f) = sample(&p) {
                shared.with_bucket(Instant::now(), |b| {
                    b.sites.entry(slot).or_default().merge(f)
                });
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// One site's figures now; None when its process is gone (a restart in progress).
fn sample(p: &Proc) -> Option<SiteFigures> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid)).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    let rss_kib = field("VmRSS:")?;
    let anon_kib = field("RssAnon:")?;
    let threads = field("Threads:")?;
    let (mut fds, mut sockets) = (0, 0);
    for e in std::fs::read_dir(format!("/proc/{}/fd", p.pid))
        .ok()?
        .flatten()
    {
        fds += 1;
        let target = std::fs::read_link(e.path()).unwrap_or_default();
        sockets += u64::from(target.to_string_lossy().starts_with("socket:"));
    }
    Some(SiteFigures {
        node: p.node,
        disk_bytes: dir_bytes(&p.dir),
        rss_bytes: rss_kib * 1024,
        rss_anon_bytes: anon_kib * 1024,
        fds,
        sockets,
        threads,
        segments: segment_bases(&p.dir).count() as u64,
    })
}

/// Bytes of the files under `dir` (each inode once: a hard link is not more disk).
pub fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    const MAX_DEPTH: usize = 4;
    const MAX_ENTRIES: usize = 100_000;
    let mut seen = BTreeSet::new();
    let mut total = 0;
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    let mut entries = 0;
    while let Some((d, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            entries += 1;
            if entries > MAX_ENTRIES {
                return total;
            }
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() && depth < MAX_DEPTH {
                stack.push((e.path(), depth + 1));
            } else if m.is_file() && seen.insert((m.dev(), m.ino())) {
                total += m.len();
            }
        }
    }
    total
}

/// The lowest offset a site still keeps: the base of its oldest segment file (retention
/// removes whole sealed segments). Without any segment, 0.
fn log_floor(dir: &Path) -> u64 {
    segment_bases(dir).min().unwrap_or(0)
}

/// The base offsets of the segment files of a site's log.
fn segment_bases(dir: &Path) -> impl Iterator<Item = u64> {
    std::fs::read_dir(dir.join("log"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(crate::storage::segment::parse_file_name)
        })
}

/// Reads every acknowledged message still inside retention back from every live site and
/// compares it (CRC-32 and length of what was sent); a missing or different one is an RPO
/// loss. Then forgets the messages out of every live site's retention. Returns the number of
/// sites checked.
async fn verify(shared: &Shared, cluster: &LocalCluster, run: &mut Run) -> CliResult<usize> {
    let mut acked = locked(&shared.tally).acked.clone();
    acked.sort_unstable_by_key(|a| a.offset);
    let Some(max) = acked.last().map(|a| a.offset) else {
        return Ok(0);
    };
    let t0 = Instant::now();
    let mut floors = Vec::new();
    for id in cluster.live() {
        let (floor, missing, differing) = compare_site(cluster, id, &acked, max).await?;
        run.lost.extend(missing.into_iter().filter(|&o| o >= floor));
        run.lost.extend(differing);
        let kept = acked.iter().filter(|a| a.offset >= floor).count() as u64;
        run.verified_messages += kept;
        run.out_of_retention += acked.len() as u64 - kept;
        floors.push(floor);
    }
    if !run.lost.is_empty() {
        eprintln!(
            "RPO VIOLATION: {} acknowledged messages missing or different",
            run.lost.len()
        );
    }
    eprintln!(
        "read back {} acknowledged messages from {} sites in {:.1} s",
        acked.len(),
        floors.len(),
        t0.elapsed().as_secs_f64()
    );
    let floor = floors.into_iter().min().unwrap_or(0);
    locked(&shared.tally).acked.retain(|a| a.offset >= floor);
    Ok(cluster.live().len())
}

/// Reads site `id` up to `max` and walks it against `acked` (sorted). Returns the site's
/// retention floor, read after the read (retention may have moved it meanwhile: what is below
/// the later floor may have gone legitimately; what is above it must have been read), and the
/// offsets of the messages it did not return and of those it returned different.
async fn compare_site(
    cluster: &LocalCluster,
    id: u64,
    acked: &[Acked],
    max: u64,
) -> CliResult<(u64, Vec<u64>, Vec<u64>)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.status(id).await.is_none_or(|s| s.commit_end <= max) {
        if Instant::now() >= deadline {
            return Err(CliError(format!("site-{id} never committed offset {max}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = cluster.client_of(vec![cluster.addrs[&id].clone()]);
    let (mut missing, mut differing) = (Vec::new(), Vec::new());
    let mut j = 0;
    let mut next = acked.first().map_or(0, |a| a.offset);
    // Where the site said its records start, when a read fell below it.
    let mut said_floor = 0;
    while next <= max && j < acked.len() {
        let recs = match client.read(next, READ_BATCH).await {
            Ok((_, recs)) => recs,
            // Retention deleted what lies below: read on from where the site starts.
            Err(crate::Error::BelowFloor {
                first_available, ..
            }) if first_available > next => {
                said_floor = first_available;
                next = first_available;
                continue;
            }
            Err(e) => return Err(CliError(format!("read from site-{id}: {e}"))),
        };
        let Some(last) = recs.last() else { break };
        next = last.offset + 1;
        for r in recs {
            while j < acked.len() && acked[j].offset < r.offset {
                missing.push(acked[j].offset);
                j += 1;
            }
            if j < acked.len() && acked[j].offset == r.offset {
                let a = acked[j];
                if checksum(&r.payload) != a.crc || r.payload.len() as u32 != a.len {
                    eprintln!("RPO VIOLATION: site-{id} offset {} differs", a.offset);
                    differing.push(a.offset);
                }
                j += 1;
            }
        }
    }
    missing.extend(acked[j..].iter().map(|a| a.offset));
    let floor = log_floor(&cluster.node_dir(id)).max(said_floor);
    Ok((floor, missing, differing))
}

/// The outcome, for the text or JSON summary and the exit status.
struct Summary {
    sites: u64,
    minutes: f64,
    minute_secs: f64,
    rate: u64,
    retention_bytes: Option<u64>,
    segment_bytes: u64,
    disk_limit_bytes: u64,
    p99_factor: f64,
    tally: Tally,
    /// Seconds of each bucket (the last one may be partial).
    bucket_secs: Vec<f64>,
    run: Run,
    disk: Bound,
    growth: Bound,
    p99: Bound,
    report: PathBuf,
}

impl Summary {
    fn new(
        args: &DrillArgs,
        plan: &Plan,
        minutes: f64,
        shared: &Shared,
        end: Instant,
        tally: Tally,
        run: Run,
    ) -> Summary {
        let minute_secs = plan.minute.as_secs_f64();
        let end_s = end.duration_since(shared.start).as_secs_f64();
        // The last minute runs until the writers stopped (it may be longer or shorter).
        let n = tally.buckets.len();
        let bucket_secs = (0..n)
            .map(|i| match end_s - i as f64 * minute_secs {
                s if i + 1 == n => s.max(1e-3),
                s => s.clamp(1e-3, minute_secs),
            })
            .collect();
        let disk_limit_bytes = plan.disk_limit_bytes();
        Summary {
            sites: args.sites,
            minutes,
            minute_secs,
            rate: plan.rate,
            retention_bytes: plan.retention_bytes,
            segment_bytes: plan.segment_bytes,
            disk_limit_bytes,
            p99_factor: args.soak_p99_factor,
            disk: check::check_disk(&tally.buckets, plan.retention_bytes, disk_limit_bytes),
            growth: check::check_growth(
                &tally.buckets,
                plan.retention_bytes.is_some(),
                // The writers and the soak's own admin and read-back clients.
                args.writers as u64 + 2,
            ),
            p99: check::check_p99(&tally.buckets, args.soak_p99_factor),
            tally,
            bucket_secs,
            run,
            report: args.report.clone(),
        }
    }

    fn rpo_ok(&self) -> bool {
        self.run.lost.is_empty() && self.tally.acknowledged > 0
    }

    fn bounds_ok(&self) -> bool {
        self.rpo_ok() && self.disk.ok && self.growth.ok && self.p99.ok
    }

    fn broken(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.rpo_ok() {
            out.push(format!(
                "rpo: {} messages lost of {} acknowledged",
                self.run.lost.len(),
                self.tally.acknowledged
            ));
        }
        for (name, b) in [
            ("disk", &self.disk),
            ("growth", &self.growth),
            ("p99", &self.p99),
        ] {
            if !b.ok {
                out.push(format!("{name}: {}", b.detail));
            }
        }
        out
    }

    fn write_svg(&self) -> CliResult<()> {
        super::soak_report::write_svg(
            &self.report,
            &self.tally.buckets,
            &self.bucket_secs,
            self.minute_secs,
            &self.run.events,
        )
    }

    fn latency(&self) -> Latency {
        let all: Vec<u64> = self
            .tally
            .buckets
            .iter()
            .flat_map(|b| b.lat_ms.iter().map(|&ms| (f64::from(ms) * 1e6) as u64))
            .collect();
        Latency::from_nanos(all)
    }

    fn minute_json(&self, i: usize, b: &Bucket) -> Json {
        let sites = b
            .sites
            .iter()
            .map(|(&slot, f)| {
                Json::obj([
                    ("slot", slot.into()),
                    ("node", f.node.into()),
                    ("disk_bytes", f.disk_bytes.into()),
                    ("rss_bytes", f.rss_bytes.into()),
                    ("rss_anon_bytes", f.rss_anon_bytes.into()),
                    ("fds", f.fds.into()),
                    ("sockets", f.sockets.into()),
                    ("segments", f.segments.into()),
                    ("threads", f.threads.into()),
                ])
            })
            .collect();
        let secs = self.bucket_secs[i];
        Json::obj([
            ("minute", i.into()),
            ("start_s", round(i as f64 * self.minute_secs, 3).into()),
            ("secs", round(secs, 3).into()),
            ("acked_per_s", round(b.lat_ms.len() as f64 / secs, 1).into()),
            ("p99_ms", round(b.p99_ms(), 2).into()),
            (
                "slowest_ms",
                b.slowest
                    .map_or(Json::Null, |(ms, _)| round(f64::from(ms), 2).into()),
            ),
            (
                "slowest_sent_at_s",
                b.slowest.map_or(Json::Null, |(_, s)| round(s, 3).into()),
            ),
            ("disrupted", b.disrupted.into()),
            (
                "events",
                Json::Arr(b.events.iter().map(|e| e.clone().into()).collect()),
            ),
            ("sites", Json::Arr(sites)),
        ])
    }

    fn json(&self) -> Json {
        let r = &self.run;
        let per_minute = self
            .tally
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| self.minute_json(i, b))
            .collect();
        Json::obj([
            ("mode", "soak".into()),
            ("sites", self.sites.into()),
            ("minutes", self.minutes.into()),
            ("minute_secs", self.minute_secs.into()),
            ("p99_factor", self.p99_factor.into()),
            ("rate", self.rate.into()),
            (
                "retention_bytes",
                self.retention_bytes.map_or(Json::Null, Json::from),
            ),
            ("segment_bytes", self.segment_bytes.into()),
            ("disk_limit_bytes", self.disk_limit_bytes.into()),
            ("acknowledged", self.tally.acknowledged.into()),
            ("unknown", self.tally.unknown.into()),
            ("failed", self.tally.failed.into()),
            ("rpo_lost", r.lost.len().into()),
            ("verified_nodes", r.verified_nodes.into()),
            ("verified_messages", r.verified_messages.into()),
            ("out_of_retention", r.out_of_retention.into()),
            ("fires", r.fires.into()),
            ("rolling_restarts", r.restarts.into()),
            ("unclean_stops", r.unclean_stops.into()),
            ("commit_latency", self.latency().json()),
            (
                "bounds",
                Json::obj([
                    ("rpo", Json::obj([("ok", self.rpo_ok().into())])),
                    ("disk", self.disk.json()),
                    ("growth", self.growth.json()),
                    ("p99", self.p99.json()),
                ]),
            ),
            ("bounds_ok", self.bounds_ok().into()),
            ("per_minute", Json::Arr(per_minute)),
            ("report", self.report.display().to_string().into()),
        ])
    }

    fn print(&self, json: bool) {
        if json {
            println!("{}", self.json().render());
            return;
        }
        let r = &self.run;
        let lat = self.latency();
        println!(
            "\nsoak: {} sites, {:.2} min, {} fires + rebuilds, {} rolling restarts",
            self.sites, self.minutes, r.fires, r.restarts
        );
        println!(
            "  messages acknowledged  {} (unknown outcome {}, refused {})",
            self.tally.acknowledged, self.tally.unknown, self.tally.failed
        );
        println!(
            "  RPO                    {} lost; {} message copies read back, {} out of retention",
            r.lost.len(),
            r.verified_messages,
            r.out_of_retention
        );
        println!(
            "  commit latency         p50 {:.1} ms, p99 {:.1} ms",
            lat.p50_us / 1e3,
            lat.p99_us / 1e3
        );
        for (name, b) in [
            ("disk bound", &self.disk),
            ("growth bound", &self.growth),
            ("p99 bound", &self.p99),
        ] {
            let verdict = match (b.checked, b.ok) {
                (false, _) => "not checked",
                (true, true) => "ok",
                (true, false) => "BROKEN",
            };
            println!("  {name:22} {verdict}: {}", b.detail);
        }
        println!(
            "  bounds                 {}",
            if self.bounds_ok() { "ok" } else { "BROKEN" }
        );
        println!("  report                 {}", self.report.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_bytes_counts_each_inode_once_and_log_floor_is_the_oldest_segment() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("log");
        std::fs::create_dir_all(&log).unwrap();
        assert_eq!(log_floor(tmp.path()), 0, "no segment");
        std::fs::write(log.join("00000000000000000500.seg"), [0u8; 1000]).unwrap();
        std::fs::write(log.join("00000000000000000900.seg"), [0u8; 300]).unwrap();
        std::fs::write(log.join("prepared-000001.seg.tmp"), [0u8; 20]).unwrap();
        // A snapshot that hard-links a segment holds no more disk.
        std::fs::hard_link(
            log.join("00000000000000000500.seg"),
            tmp.path().join("linked"),
        )
        .unwrap();
        assert_eq!(dir_bytes(tmp.path()), 1320);
        assert_eq!(log_floor(tmp.path()), 500);
        assert_eq!(segment_bases(tmp.path()).count(), 2);
    }

    #[test]
    fn sample_reads_this_process() {
        let tmp = tempfile::tempdir().unwrap();
        let p = Proc {
            node: 7,
            pid: std::process::id(),
            dir: tmp.path().to_path_buf(),
        };
        let f = sample(&p).unwrap();
        assert_eq!(f.node, 7);
        assert!(f.rss_bytes > 0 && f.rss_anon_bytes > 0 && f.rss_anon_bytes <= f.rss_bytes);
        assert!(f.threads >= 1 && f.fds >= 3, "{f:?}");
        assert!(f.sockets <= f.fds);
        let gone = Proc { pid: u32::MAX, ..p };
        assert_eq!(sample(&gone), None, "a process that is gone has no figures");
    }
}
