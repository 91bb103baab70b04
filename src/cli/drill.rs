//! `sitelog drill`: the site-loss drill.
//!
//! 1. Starts N sites (one `sitelog node` process each, own data directory) on loopback and a
//!    chat workload: many conversations, message sizes from a few words to a few KiB, a steady
//!    rate with bursts, every message acknowledged only by a majority of sites.
//! 2. **Fire**: SIGKILL of the leader's process and deletion of its data directory. Writes go
//!    on; the RTO is the time from the fire to the first acknowledged write sent after it.
//! 3. **Rebuild**: a replacement site with a new node id joins as a learner, catches up, and a
//!    membership change swaps it in for the burned one: time to full redundancy, catch-up rate.
//! 4. **Verify (RPO)**: every acknowledged message is read back from every live site and
//!    compared byte for byte (CRC-32 and length of what was sent).
//! 5. **Report**: a text summary and an SVG timeline (throughput, p99 commit latency, events).
//!
//! The sites take manifest snapshots often (`--snapshot-every`) over small segments
//! (`--segment-bytes`), so the rebuilt site catches up as a site with hundreds of GiB would:
//! a snapshot, a bulk fetch of the sealed segments, then the tail by replication (the report
//! says which path ran).

use super::cluster::LocalCluster;
use super::json::Json;
use super::stats::{round, Latency};
use super::sys::WorkDir;
use super::{CliError, CliResult, Context};
use crate::node::client::AppendOutcome;
use crate::node::{Peer, ReplaceEvent, ReplaceOptions, ReplacePhase};
use crate::storage::checksum::checksum;
use bytes::Bytes;
use clap::Args;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLUSTER_ID: u64 = 0xd1_11;
/// Width of one timeline bucket.
const BUCKET_MS: u64 = 250;

/// Arguments of `sitelog drill`.
#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Directory for the sites' data (a fresh subdirectory, removed unless --keep).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the sites' data directories.
    #[arg(long)]
    pub keep: bool,
    /// Short run (CI): a few seconds per phase, a lower rate.
    #[arg(long)]
    pub quick: bool,
    /// Number of sites (one voter each), at least 3.
    #[arg(long, default_value_t = 3)]
    pub sites: u64,
    /// Target message rate (messages/s) outside bursts [default: 2000, or 500 with --quick].
    #[arg(long)]
    pub rate: Option<u64>,
    /// Seconds of traffic before the fire [default: 10, or 3 with --quick].
    #[arg(long)]
    pub warmup_secs: Option<u64>,
    /// Seconds of traffic after the fire before the rebuild [default: 5, or 2 with --quick].
    #[arg(long)]
    pub after_fire_secs: Option<u64>,
    /// Conversations the messages belong to.
    #[arg(long, default_value_t = 10_000)]
    pub conversations: u64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 16)]
    pub writers: usize,
    /// Segment size of the sites' logs in bytes [default: 1 MiB; 256 KiB with --quick].
    #[arg(long)]
    pub segment_bytes: Option<u64>,
    /// Each site takes a manifest snapshot every this many entries [default: 5000, or 500
    /// with --quick].
    #[arg(long)]
    pub snapshot_every: Option<u64>,
    /// Raft timers of the sites.
    #[arg(long, value_enum, default_value = "lan")]
    pub timers: super::node::Timers,
    /// Where to write the SVG timeline.
    #[arg(long, default_value = "sitelog-drill.svg")]
    pub report: PathBuf,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Run the sites in plaintext (`sitelog node --insecure`). Without it they serve mutual
    /// TLS with a CA and certificates generated into the work directory.
    #[arg(long)]
    pub insecure: bool,
    /// The soak instead of the one-fire drill: run this many minutes (fractions allowed, e.g.
    /// 0.75) at a steady rate with retention, periodic fires + rebuilds and rolling restarts,
    /// checking disk, RSS/descriptor/thread growth, p99 and RPO bounds (README: the soak).
    #[arg(long, value_name = "MINUTES")]
    pub soak: Option<f64>,
    /// Soak: seconds per reported "minute" (per-minute figures and bounds; short CI soaks use a
    /// few seconds).
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub soak_minute_secs: f64,
    /// Soak: the p99 bound, as a factor of the first steady minute's p99 (the CI test loosens
    /// it for debug builds on shared 2-core runners).
    #[arg(long, value_name = "X", default_value_t = super::soak_check::P99_FACTOR)]
    pub soak_p99_factor: f64,
    /// Soak: log bytes each site keeps (retention by size) [default: 16 MiB, or 1 MiB with
    /// --quick].
    #[arg(long)]
    pub retention_bytes: Option<u64>,
    /// Soak: a fire (the leader's site burns) and a rebuild every this many seconds, the first
    /// after half of it [default: 180].
    #[arg(long, value_name = "SECS")]
    pub fire_every_secs: Option<f64>,
    /// Soak: a rolling restart (SIGTERM, restart, catch-up; site by site) every this many
    /// seconds, the first after half of it [default: 300].
    #[arg(long, value_name = "SECS")]
    pub restart_every_secs: Option<f64>,
}

/// One acknowledged message: where it went and what it was.
#[derive(Debug, Clone, Copy)]
pub(super) struct Acked {
    pub(super) offset: u64,
    pub(super) crc: u32,
    pub(super) len: u32,
}

/// What the writers saw.
#[derive(Default)]
struct Ledger {
    acked: Vec<Acked>,
    unknown: u64,
    /// Appends resent (with the same producer seq) after an unknown outcome.
    retries: u64,
    /// Messages a resend found already committed: answered with their first offset, not
    /// stored again.
    deduplicated: u64,
    failed: u64,
    /// (sent since start, acked since start) of each acknowledged message, in ms.
    timeline: Vec<(f64, f64)>,
}

/// The drill's events, in ms since the start.
#[derive(Debug, Default, Clone)]
struct Events {
    fire_ms: f64,
    first_ack_after_fire_ms: f64,
    learner_added_ms: f64,
    caught_up_ms: f64,
    membership_changed_ms: f64,
    end_ms: f64,
}

/// What a site replacement took, from its events' timestamps.
pub(super) struct Replaced {
    /// The `AddingLearner` event: the replacement began.
    pub(super) learner_added: Instant,
    /// The `Swapping` event: the new node was seen caught up.
    pub(super) caught_up: Instant,
    /// The `Done` event (produced in the poll that returned it): the swap was committed.
    pub(super) swapped: Instant,
    /// The leader's commit end when the learner was added.
    pub(super) target: u64,
    /// Bytes of sealed segments the new node had to have from a snapshot (0: none).
    pub(super) snapshot_bytes: u64,
    /// The voters after the swap.
    pub(super) voters: Vec<u64>,
}

/// Replaces the burned site's node `dead` by the joining node `new_id` (listening on `addr`,
/// in its own site) through `Client::replace_site`, showing the catch-up.
pub(super) async fn replace(
    cluster: &LocalCluster,
    dead: u64,
    new_id: u64,
    addr: String,
) -> CliResult<Replaced> {
    let peer = Peer {
        site: format!("site-{new_id}"),
        addr,
    };
    let opts = ReplaceOptions {
        // A fine poll: the drill reports the catch-up time.
        poll_ms: 20,
        catch_up_deadline_ms: 600_000,
        ..ReplaceOptions::default()
    };
    let mut events = cluster.client().replace_site(dead, new_id, peer, opts);
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{msg:32} [{bar:30}] {pos}/{len} records")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("site-{new_id} catching up"));
    let (mut learner_added, mut caught_up) = (None, None);
    let (mut target, mut snapshot_bytes) = (0, 0);
    let mut phase = ReplacePhase::AddingLearner;
    while let Some(event) = events.next().await {
        match event {
            ReplaceEvent::Progress(p) => {
                phase = p.phase;
                match p.phase {
                    ReplacePhase::AddingLearner => learner_added = Some(p.at),
                    ReplacePhase::CatchingUp => {
                        bar.set_length(p.commit_target.max(1));
                        bar.set_position(p.commit_done.min(p.commit_target));
                    }
                    ReplacePhase::Swapping => {
                        bar.finish();
                        caught_up = Some(p.at);
                        (target, snapshot_bytes) = (p.commit_target, p.snapshot_total_bytes);
                    }
                }
            }
            ReplaceEvent::Done { voters } => {
                let swapped = Instant::now();
                let (Some(learner_added), Some(caught_up)) = (learner_added, caught_up) else {
                    return Err(CliError("replacement done without its phases".into()));
                };
                return Ok(Replaced {
                    learner_added,
                    caught_up,
                    swapped,
                    target,
                    snapshot_bytes,
                    voters,
                });
            }
            ReplaceEvent::Failed(e) => {
                let what = match phase {
                    ReplacePhase::AddingLearner => "add learner",
                    ReplacePhase::CatchingUp => "catch-up",
                    ReplacePhase::Swapping => "membership change",
                };
                return Err(CliError(format!("site-{new_id}: {what}: {e}")));
            }
        }
    }
    Err(CliError("the replacement ended without an outcome".into()))
}

/// A chat message of `id`: deterministic, sizes skewed like a messenger's.
pub(super) fn message(id: u64, conversations: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(id);
    let conv = rng.u64(..conversations.max(1));
    let user = rng.u32(..1_000_000);
    let text_len = match rng.u8(..100) {
        0..=69 => rng.usize(20..120),
        70..=94 => rng.usize(120..600),
        _ => rng.usize(1024..4096),
    };
    let mut m = format!("{{\"conv\":{conv},\"from\":{user},\"id\":{id},\"text\":\"").into_bytes();
    const WORDS: [&str; 8] = [
        "hi",
        "see you",
        "on my way",
        "ok",
        "lol",
        "payment sent",
        "taxi",
        "where?",
    ];
    while m.len() < text_len {
        m.extend_from_slice(WORDS[rng.usize(..WORDS.len())].as_bytes());
        m.push(b' ');
    }
    m.extend_from_slice(b"\"}");
    m
}

/// Runs the drill.
pub fn run(args: &DrillArgs) -> CliResult<()> {
    if args.sites < 3 {
        return Err(CliError("a site-loss drill needs at least 3 sites".into()));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context(|| "cannot start the async runtime".into())?;
    match args.soak {
        Some(minutes) => rt.block_on(super::soak::soak(args, minutes)),
        None => rt.block_on(drill(args)),
    }
}

fn phase(msg: &str, secs: u64) -> ProgressBar {
    let bar = ProgressBar::new(secs.max(1));
    bar.set_style(
        ProgressStyle::with_template("{msg:32} [{bar:30}] {pos}/{len} s")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(msg.to_string());
    bar
}

async fn tick_for(bar: &ProgressBar, secs: u64) {
    for _ in 0..secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    bar.finish();
}

async fn drill(args: &DrillArgs) -> CliResult<()> {
    let rate = args.rate.unwrap_or(if args.quick { 500 } else { 2000 });
    let warmup = args.warmup_secs.unwrap_or(if args.quick { 3 } else { 10 });
    let after_fire = args
        .after_fire_secs
        .unwrap_or(if args.quick { 2 } else { 5 });
    let work = WorkDir::create(args.dir.as_deref(), args.keep)?;
    let start = Instant::now();
    let ms = move |t: Instant| t.duration_since(start).as_secs_f64() * 1e3;

    eprintln!("starting {} sites in {}", args.sites, work.path().display());
    // Small segments and frequent snapshots, so that the rebuilt site catches up the way a
    // site that must copy hundreds of GiB would: snapshot, bulk fetch of sealed segments,
    // then the tail by replication.
    let snapshot_every = args
        .snapshot_every
        .unwrap_or(if args.quick { 500 } else { 5000 });
    let timers = match args.timers {
        super::node::Timers::Lan => "lan",
        super::node::Timers::Wan => "wan",
    };
    let node_args = vec![
        "--segment-bytes".to_string(),
        args.segment_bytes
            .unwrap_or(if args.quick { 256 << 10 } else { 1 << 20 })
            .to_string(),
        "--snapshot-every".to_string(),
        snapshot_every.to_string(),
        "--snapshot-keep".to_string(),
        (snapshot_every / 5).max(1).to_string(),
        "--timers".to_string(),
        timers.to_string(),
    ];
    let mut cluster = LocalCluster::start(
        work.path(),
        args.sites,
        CLUSTER_ID,
        "auto",
        node_args,
        !args.insecure,
    )?;
    cluster.leader(Duration::from_secs(20)).await?;

    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(0));
    let writers = spawn_writers(args, &cluster, rate, start, &ledger, &stop, &next_id);

    tick_for(&phase("chat traffic (before the fire)", warmup), warmup).await;

    // The fire: the leader's site is gone, disk included.
    let burned = cluster.leader(Duration::from_secs(20)).await?;
    let fire = Instant::now();
    cluster.forget(burned);
    let burned_dir = cluster.node_dir(burned);
    std::fs::remove_dir_all(&burned_dir)
        .context(|| format!("cannot delete {}", burned_dir.display()))?;
    eprintln!("FIRE: site-{burned} (the leader) is gone, data directory deleted");
    let first_ack = wait_first_ack_after(&ledger, ms(fire), Duration::from_secs(60)).await?;
    let rto_ms = first_ack - ms(fire);
    eprintln!("writes acknowledged again after {rto_ms:.0} ms");
    tick_for(
        &phase("chat traffic (two sites left)", after_fire),
        after_fire,
    )
    .await;

    // The rebuild: a new node id (ids are never reused), joining as a learner.
    let new_id = args.sites + 1;
    let addr = cluster.spawn_joining(new_id)?;
    let replaced = replace(&cluster, burned, new_id, addr).await?;
    let (learner_added, caught_up, swapped) =
        (replaced.learner_added, replaced.caught_up, replaced.swapped);
    let (target, snapshot_bytes) = (replaced.target, replaced.snapshot_bytes);
    // Bytes of the record frames the new site had to receive (acknowledged messages below
    // the catch-up target; Raft's own small entries left out).
    let log_bytes: u64 = ledger
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .acked
        .iter()
        .filter(|a| a.offset < target)
        .map(|a| crate::storage::record::frame_len(a.len as usize) as u64)
        .sum();
    eprintln!(
        "site-{new_id} caught up and replaced site-{burned}: voters {:?}",
        replaced.voters
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let end = Instant::now();
    let ledger = std::mem::take(&mut *ledger.lock().unwrap_or_else(|p| p.into_inner()));
    let verified = verify(&cluster, &ledger.acked).await?;
    let events = Events {
        fire_ms: ms(fire),
        first_ack_after_fire_ms: first_ack,
        learner_added_ms: ms(learner_added),
        caught_up_ms: ms(caught_up),
        membership_changed_ms: ms(swapped),
        end_ms: ms(end),
    };
    let catch_up_secs = caught_up.duration_since(learner_added).as_secs_f64();
    super::drill_report::write_svg(
        &args.report,
        &ledger.timeline,
        &events_list(&events),
        BUCKET_MS,
    )?;
    let summary = Summary {
        sites: args.sites,
        burned,
        replacement: new_id,
        ledger: &ledger,
        rto_ms,
        catch_up_secs,
        log_bytes,
        snapshot_bytes,
        redundancy_ms: ms(swapped) - ms(fire),
        verified_nodes: verified,
        report: args.report.clone(),
        tls: !args.insecure,
    };
    summary.print(args.json);
    if ledger.acked.is_empty() {
        return Err(CliError("no message was acknowledged".into()));
    }
    Ok(())
}

fn events_list(e: &Events) -> Vec<(f64, &'static str)> {
    vec![
        (e.fire_ms, "fire"),
        (e.first_ack_after_fire_ms, "new leader: writes resume"),
        (e.learner_added_ms, "catch-up starts"),
        (e.caught_up_ms, "caught up"),
        (e.membership_changed_ms, "redundancy restored"),
        (e.end_ms, "end"),
    ]
}

fn spawn_writers(
    args: &DrillArgs,
    cluster: &LocalCluster,
    rate: u64,
    start: Instant,
    ledger: &Arc<Mutex<Ledger>>,
    stop: &Arc<AtomicBool>,
    next_id: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let per_writer = (rate as f64 / args.writers.max(1) as f64).max(0.1);
    (0..args.writers.max(1))
        .map(|_| {
            let (ledger, stop, next_id) = (ledger.clone(), stop.clone(), next_id.clone());
            let mut client = cluster.client();
            client.request_timeout_ms = 2000;
            client.leader_wait_ms = 30_000;
            let conversations = args.conversations;
            tokio::spawn(async move {
                // Each writer is one idempotent producer: a lost answer (the burned leader)
                // is resent with the same seq and resolves to the original offset.
                let producer = match client.producer().await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "drill writer could not register a producer");
                        ledger.lock().unwrap_or_else(|p| p.into_inner()).failed += 1;
                        return;
                    }
                };
                let mut due = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    // Bursts: one second in five at three times the rate.
                    let secs = start.elapsed().as_secs();
                    let r = if secs % 5 == 4 {
                        per_writer * 3.0
                    } else {
                        per_writer
                    };
                    due += Duration::from_secs_f64(1.0 / r);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        tokio::time::sleep(wait).await;
                    }
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let m = message(id, conversations);
                    let (crc, len) = (checksum(&m), m.len() as u32);
                    let sent = start.elapsed().as_secs_f64() * 1e3;
                    let report = producer.append_report(vec![Bytes::from(m)]).await;
                    let acked_at = start.elapsed().as_secs_f64() * 1e3;
                    let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
                    l.retries += u64::from(report.retries);
                    l.deduplicated += u64::from(report.deduplicated);
                    match report.outcome {
                        AppendOutcome::Ok(o) => {
                            l.acked.push(Acked {
                                offset: o[0],
                                crc,
                                len,
                            });
                            l.timeline.push((sent, acked_at));
                        }
                        AppendOutcome::Unknown(_) => l.unknown += 1,
                        AppendOutcome::Failed(_) => l.failed += 1,
                    }
                }
            })
        })
        .collect()
}

async fn wait_first_ack_after(
    ledger: &Mutex<Ledger>,
    t_ms: f64,
    limit: Duration,
) -> CliResult<f64> {
    let deadline = Instant::now() + limit;
    loop {
        let first = ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .timeline
            .iter()
            .filter(|(sent, _)| *sent >= t_ms)
            .map(|(_, acked)| *acked)
            .reduce(f64::min);
        if let Some(f) = first {
            return Ok(f);
        }
        if Instant::now() >= deadline {
            return Err(CliError("no write was acknowledged after the fire".into()));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Reads every acknowledged message back from every live node; returns how many nodes were
/// checked. Any difference is an error.
/// Reads every committed record back from each live site: every acknowledged message must be
/// at its offset, byte-identical (RPO), and no message id may be stored at two offsets (a
/// retried or resent message stored twice), acknowledged or not.
async fn verify(cluster: &LocalCluster, acked: &[Acked]) -> CliResult<usize> {
    let max = acked.iter().map(|a| a.offset).max().unwrap_or(0);
    let mut checked = 0;
    for id in cluster.live() {
        let addr = cluster.addrs[&id].clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        while cluster.status(id).await.is_none_or(|s| s.commit_end <= max) {
            if Instant::now() >= deadline {
                return Err(CliError(format!("site-{id} never committed offset {max}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let client = cluster.client_of(vec![addr]);
        let mut scan = Scan::default();
        let mut next = 0;
        loop {
            let (end, recs) = client
                .read(next, 10_000)
                .await
                .map_err(|e| CliError(format!("read from site-{id}: {e}")))?;
            let Some(last) = recs.last() else { break };
            next = last.offset + 1;
            for r in recs {
                scan.add(r.offset, &r.payload);
            }
            if next >= end {
                break;
            }
        }
        if let Some((mid, first, second)) = scan.example {
            return Err(CliError(format!(
                "DUPLICATES: site-{id} holds {} messages more than once \
                 (message {mid} at offsets {first} and {second})",
                scan.duplicates
            )));
        }
        let got = scan.got;
        for a in acked {
            match got.get(&a.offset) {
                Some(&(crc, len)) if crc == a.crc && len == a.len => {}
                other => {
                    return Err(CliError(format!(
                        "RPO VIOLATION: site-{id} offset {} holds {other:?}, acknowledged {:?}",
                        a.offset, a
                    )))
                }
            }
        }
        checked += 1;
    }
    Ok(checked)
}

/// One site's records as read back: checksum and length per offset, and message ids found at
/// more than one offset.
#[derive(Default)]
struct Scan {
    got: BTreeMap<u64, (u32, u32)>,
    /// Message id -> the first offset it was found at.
    ids: HashMap<u64, u64>,
    duplicates: u64,
    /// The first duplicate: (message id, first offset, second offset).
    example: Option<(u64, u64, u64)>,
}

impl Scan {
    fn add(&mut self, offset: u64, payload: &[u8]) {
        if let Some(mid) = message_id(payload) {
            if let Some(first) = self.ids.insert(mid, offset) {
                self.duplicates += 1;
                self.example.get_or_insert((mid, first, offset));
            }
        }
        self.got
            .insert(offset, (checksum(payload), payload.len() as u32));
    }
}

/// The `"id"` a drill message carries (see [`message`]), if the payload is one.
fn message_id(payload: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"id\":";
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = payload[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&payload[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

struct Summary<'a> {
    sites: u64,
    burned: u64,
    replacement: u64,
    ledger: &'a Ledger,
    rto_ms: f64,
    catch_up_secs: f64,
    log_bytes: u64,
    snapshot_bytes: u64,
    redundancy_ms: f64,
    verified_nodes: usize,
    report: PathBuf,
    tls: bool,
}

impl Summary<'_> {
    fn method(&self) -> String {
        if self.snapshot_bytes > 0 {
            format!(
                "snapshot: {:.1} MB of sealed segments fetched in bulk, then the tail replicated",
                self.snapshot_bytes as f64 / 1e6
            )
        } else {
            "raft log replication".to_string()
        }
    }

    fn print(&self, json: bool) {
        let l = self.ledger;
        let lat = Latency::from_nanos(
            l.timeline
                .iter()
                .map(|(s, a)| ((a - s) * 1e6) as u64)
                .collect(),
        );
        let rate_mbs = self.log_bytes as f64 / 1e6 / self.catch_up_secs.max(1e-9);
        if json {
            let out = Json::obj([
                ("sites", self.sites.into()),
                ("tls", self.tls.into()),
                ("burned_site", self.burned.into()),
                ("replacement_node", self.replacement.into()),
                ("acknowledged", l.acked.len().into()),
                ("unknown", l.unknown.into()),
                // The read-back fails the drill on any message stored twice (as on any loss).
                ("duplicates", 0u64.into()),
                ("retries", l.retries.into()),
                ("deduplicated", l.deduplicated.into()),
                ("failed", l.failed.into()),
                ("rpo_lost", 0u64.into()),
                ("verified_nodes", self.verified_nodes.into()),
                ("rto_ms", round(self.rto_ms, 1).into()),
                ("catch_up_secs", round(self.catch_up_secs, 3).into()),
                ("catch_up_bytes", self.log_bytes.into()),
                ("catch_up_mb_per_s", round(rate_mbs, 1).into()),
                ("catch_up_method", self.method().into()),
                ("snapshot_segment_bytes", self.snapshot_bytes.into()),
                (
                    "fire_to_full_redundancy_ms",
                    round(self.redundancy_ms, 1).into(),
                ),
                ("commit_latency", lat.json()),
                ("report", self.report.display().to_string().into()),
            ]);
            println!("{}", out.render());
            return;
        }
        println!(
            "\nsite-loss drill: {} sites ({}), site-{} burned, site-{} rebuilt",
            self.sites,
            if self.tls { "mutual TLS" } else { "plaintext" },
            self.burned,
            self.replacement
        );
        println!(
            "  messages acknowledged  {} (unknown outcome {}, refused {}, retried {}, \
             deduplicated {})",
            l.acked.len(),
            l.unknown,
            l.failed,
            l.retries,
            l.deduplicated
        );
        println!("  duplicates             0: no message id stored at two offsets on any site");
        println!(
            "  RPO                    0: every acknowledged message read back byte-identical from {} sites",
            self.verified_nodes
        );
        println!(
            "  RTO                    {:.0} ms (fire -> first acknowledged write)",
            self.rto_ms
        );
        println!(
            "  commit latency         p50 {:.1} ms, p99 {:.1} ms",
            lat.p50_us / 1e3,
            lat.p99_us / 1e3
        );
        println!(
            "  catch-up               {:.1} MB in {:.2} s = {:.1} MB/s ({})",
            self.log_bytes as f64 / 1e6,
            self.catch_up_secs,
            rate_mbs,
            self.method()
        );
        println!(
            "  fire -> full redundancy {:.1} s",
            self.redundancy_ms / 1e3
        );
        println!("  timeline               {}", self.report.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_messages_id_is_read_back_from_its_payload() {
        for id in [0, 7, 123_456_789, u64::MAX] {
            assert_eq!(message_id(&message(id, 10)), Some(id));
        }
        assert_eq!(message_id(b"{\"conv\":1}"), None);
        assert_eq!(message_id(b"\"id\":"), None);
        assert_eq!(message_id(b"\"id\":99999999999999999999999"), None);
    }

    #[test]
    fn a_message_stored_twice_is_counted_with_both_offsets() {
        let mut scan = Scan::default();
        for (offset, id) in [(0, 1), (1, 2), (2, 1), (3, 3), (4, 2)] {
            scan.add(offset, &message(id, 10));
        }
        scan.add(5, b"not a drill message");
        assert_eq!(scan.duplicates, 2);
        assert_eq!(scan.example, Some((1, 0, 2)));
        assert_eq!(scan.got.len(), 6);
    }
}
