//! Deterministic simulation of a whole sitelog cluster in one thread, from one seed.
//!
//! Real code inside: openraft, sitelog's Raft storage (`raft::log_store`, the segment log,
//! recovery, snapshots, snapshot install), the Raft wire encoding and the pipelined append
//! streams of `raft::remote`. Simulated outside: the disk (`io::SimDisk`, one per node, in
//! driven mode so the simulation decides when bytes reach it), the network ([`net`]) and the
//! clock (tokio's paused clock on a current-thread runtime: time jumps to the next timer when
//! every task is idle). Every random choice (the nemesis's, the network's, the disks',
//! openraft's election timeouts) follows from the seed, so a failing seed replays exactly.
//!
//! Not simulated here: TCP framing and the handshake (tested over real sockets in
//! `node_cluster`), and the bulk segment fetch protocol (`segment_fetch`): a replacement node
//! copies each segment from a live holder's disk after a transfer delay, then installs the
//! snapshot through the real path.

pub mod checker;
pub mod net;

use bytes::Bytes;
use checker::{FinalNode, FinalRecord, History, Op, Outcome, Refusal, TableSample};
use net::{Accept, NetFaults, SimNet};
use sitelog::io::{SimDisk, SimFaults};
use sitelog::raft::dedup::{DEFAULT_MAX_PRODUCERS, DEFAULT_PRODUCER_IDLE_EXPIRY_MS};
use sitelog::raft::remote::{ConnPurpose, MessageRx, MessageTx, RemoteNetworkFactory};
use sitelog::raft::replica::{
    openraft_config, ProducerSettings, RaftTimers, Replica, SnapshotSettings,
};
use sitelog::raft::{runtime, wire, NodeInfo};
use sitelog::storage::LogOptions;
use sitelog::{EntryKind, Error};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::AbortHandle;
use tokio::time::{sleep, timeout, Instant};

const CLUSTER_ID: u64 = 0x51u64 << 32 | 0x7e;

/// What one run does.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Virtual milliseconds of faults (clients write throughout).
    pub fault_ms: u64,
    /// Virtual milliseconds the cluster has to converge after the faults stop.
    pub converge_ms: u64,
    pub clients: u32,
    /// Media faults too: bit flips in sealed segments and misdirected writes (one damaged
    /// node at a time, found by a scrub and replaced); and a site burns down only once the
    /// previous replacement completed (two sites lost at once is outside the fault model).
    /// Regression seeds found before this existed run without it, to replay as they did.
    pub media_faults: bool,
    /// Grey failures too: the leader's storage fails (an fdatasync EIO or a full disk) with a
    /// liveness bound on the takeover, and descriptor exhaustion (opens fail with EMFILE). Off,
    /// the nemesis draws exactly as before they existed. (A slow disk is not simulated: the
    /// simulated disk is synchronous, so a delay in `sync_data` only sleeps in real time
    /// while the virtual clock stands still — it slowed CI and tested nothing.)
    pub grey_faults: bool,
    /// Retention by size on every node (`LogOptions::retention_bytes`): whole sealed segments
    /// below the floor are deleted, and a node applies retention every virtual second (what
    /// a real node's retention task does). The checker then learns each node's floor.
    /// `None` (the default) runs as before retention existed.
    pub retention_bytes: Option<u64>,
    /// How many of the clients are idempotent producers (issue 17); the others append
    /// plainly. 0 runs as before producers existed (the regression seeds found before).
    pub producer_clients: u32,
    /// The producer bound registrations carry: small in some seeds, so that registering
    /// evicts the oldest idle producer and its next produce is refused as expired.
    pub max_producers: u32,
    /// The idle expiry registrations carry (entry time): short in some seeds, where
    /// producers pause now and then for longer and expire.
    pub idle_expiry_ms: u64,
}

/// After the leader's storage failed (in a cluster otherwise whole, network calm), another
/// node must lead and commit within this many virtual ms: one election timeout (at most
/// 300 ms) after the lease (300 ms), a pre-vote and a vote round, with room for a retry.
pub const TAKEOVER_BOUND_MS: u64 = 2_000;
/// How long the nemesis waits for a leader's injected storage fault to be hit.
const LEADER_FAULT_WAIT_MS: u64 = 2_000;

impl SimConfig {
    pub fn new(seed: u64) -> Self {
        // Its own stream: the run's other draws stay what they were.
        let mut draw = fastrand::Rng::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15);
        let max_producers = if draw.u32(0..3) == 0 {
            draw.u32(1..=2)
        } else {
            DEFAULT_MAX_PRODUCERS
        };
        let idle_expiry_ms = if draw.u32(0..3) == 0 {
            draw.u64(1_000..=3_000)
        } else {
            DEFAULT_PRODUCER_IDLE_EXPIRY_MS
        };
        SimConfig {
            seed,
            fault_ms: 8_000,
            converge_ms: 30_000,
            clients: 3,
            media_faults: true,
            grey_faults: true,
            retention_bytes: None,
            producer_clients: 2,
            max_producers,
            idle_expiry_ms,
        }
    }
}

/// What a run produced.
pub struct RunReport {
    pub history: History,
    pub violations: Vec<String>,
    pub digest: u32,
    pub summary: String,
}

type Live = Arc<Mutex<BTreeMap<u64, Replica>>>;

struct NodeSlot {
    site: String,
    disk: SimDisk,
    incarnation: u64,
    /// Tasks of the running incarnation (pump, connection handlers), aborted on a crash.
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    /// Removed from the cluster (replaced); never restarted.
    retired: bool,
}

struct Sim {
    cfg: SimConfig,
    rng: fastrand::Rng,
    net: SimNet,
    nodes: BTreeMap<u64, NodeSlot>,
    live: Live,
    history: Arc<Mutex<History>>,
    start: Instant,
    next_id: u64,
    /// The node whose disk was damaged (at most one at a time), until a scrub replaces it.
    damaged: Option<u64>,
}

fn dir() -> PathBuf {
    PathBuf::from("/node")
}

fn log_options(disk: &SimDisk, retention_bytes: Option<u64>) -> LogOptions {
    let mut opts = LogOptions::default();
    opts.retention_bytes = retention_bytes;
    opts.io = disk.io().into();
    opts.segment_size_bytes = 16 << 10;
    opts.max_record_bytes = 2 << 10;
    opts.preallocate = false;
    opts.driven = true;
    opts
}

fn raft_config() -> Arc<openraft::Config> {
    let mut snapshots = SnapshotSettings::default();
    snapshots.every_entries = Some(150);
    snapshots.keep_entries = 40;
    openraft_config("sim", RaftTimers::default(), snapshots).unwrap()
}

fn info(site: &str, id: u64) -> NodeInfo {
    NodeInfo {
        site: site.to_string(),
        addr: format!("sim:{id}"),
    }
}

impl Sim {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn event(&self, e: String) {
        let line = format!("{:>6} ms  {e}\n", self.now_ms());
        self.history.lock().unwrap().events.push(line);
    }

    fn live_ids(&self) -> Vec<u64> {
        self.live.lock().unwrap().keys().copied().collect()
    }

    fn replica(&self, id: u64) -> Option<Replica> {
        self.live.lock().unwrap().get(&id).cloned()
    }

    fn voters(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, s)| !s.retired)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Starts (recovering) node `id`'s next incarnation; an error if its disk cannot be
    /// opened (a typed corruption error, for instance).
    async fn start_node(&mut self, id: u64) -> sitelog::Result<()> {
        let seed = self.rng.u64(..);
        let slot = self.nodes.get_mut(&id).unwrap();
        slot.incarnation += 1;
        let inc = slot.incarnation;
        let disk = slot.disk.clone();
        let tasks = slot.tasks.clone();
        let factory = RemoteNetworkFactory::new(self.net.connector(id, inc));
        let r = runtime::scope(
            seed,
            Replica::start(
                id,
                &dir(),
                CLUSTER_ID,
                log_options(&disk, self.cfg.retention_bytes),
                raft_config(),
                factory,
            ),
        )
        .await?;
        // Producer entries are stamped with virtual time, so a seed replays exactly.
        let t0 = self.start;
        r.set_producer_clock(Arc::new(move || t0.elapsed().as_millis() as u64));
        let (live, history) = (self.live.clone(), self.history.clone());
        let accept_r = r.clone();
        let accept_tasks = tasks.clone();
        let accept: Accept = Arc::new(move |purpose, from, tx, rx| {
            let (r, live, history) = (accept_r.clone(), live.clone(), history.clone());
            let h = runtime::spawn(async move {
                match purpose {
                    ConnPurpose::Rpc => serve_rpc(r, live, history, from, tx, rx).await,
                    ConnPurpose::AppendStream => {
                        if let Err(e) = r.serve_append_stream(from, tx, rx).await {
                            if std::env::var("SIM_DEBUG").is_ok() {
                                eprintln!("append stream: {e}");
                            }
                        }
                    }
                }
            });
            let mut t = accept_tasks.lock().unwrap();
            t.retain(|h| !h.is_finished());
            t.push(h.abort_handle());
        });
        self.net.up(id, inc, accept);
        // The disk: appends become durable only when this task pumps the log, every 1–4 ms.
        let mut prng = fastrand::Rng::with_seed(seed ^ 0xd15c);
        let log_r = r.clone();
        let pump = runtime::spawn(async move {
            loop {
                sleep(Duration::from_millis(prng.u64(1..=4))).await;
                if log_r.store.log().pump().is_err() {
                    return; // poisoned: the supervisor restarts the node
                }
            }
        });
        tasks.lock().unwrap().push(pump.abort_handle());
        if self.cfg.retention_bytes.is_some() {
            // As a node's retention task does (`node::retention`): a snapshot when retention
            // passed the current one, then retention down to the floor.
            let ret_r = r.clone();
            let retainer = runtime::spawn(async move {
                loop {
                    sleep(Duration::from_millis(1000)).await;
                    if ret_r.retention_wants_snapshot() {
                        let _ = ret_r.raft_handle().trigger().snapshot().await;
                    }
                    if ret_r.store.log().apply_retention().is_err() {
                        return; // poisoned: the supervisor restarts the node
                    }
                }
            });
            tasks.lock().unwrap().push(retainer.abort_handle());
        }
        self.live.lock().unwrap().insert(id, r);
        Ok(())
    }

    /// Kills node `id` as a power cut would: its tasks stop, unsynced writes are lost (torn).
    async fn crash(&mut self, id: u64) {
        let Some(r) = self.live.lock().unwrap().remove(&id) else {
            return;
        };
        self.net.down(id);
        let slot = &self.nodes[&id];
        for h in slot.tasks.lock().unwrap().drain(..) {
            h.abort();
        }
        // Stops openraft's tasks; what it does while stopping cannot reach the disk after the
        // crash below (old file handles belong to the old disk epoch). Not `Replica::shutdown`:
        // a clean stop would make the log durable first, and a crash must not.
        let _ = timeout(Duration::from_secs(5), r.raft_handle().shutdown()).await;
        slot.disk.crash();
        drop(r);
    }

    /// Restarts node `id`; a node whose disk cannot be recovered is replaced.
    async fn restart(&mut self, id: u64) {
        let disk = &self.nodes[&id].disk;
        disk.set_faults(SimFaults::default());
        match self.start_node(id).await {
            Ok(()) => self.event(format!("node {id} restarted")),
            Err(e) => {
                self.event(format!("node {id} cannot start ({e}); replacing it"));
                self.nodes.get_mut(&id).unwrap().retired = true;
                self.net.down(id);
                self.replace(id).await;
            }
        }
    }

    /// Brings up a new, empty node in `dead`'s site and makes it a voter in `dead`'s place
    /// (the catch-up path: snapshot of sealed segments, then the tail). Retries until a
    /// leader accepts the changes.
    async fn replace(&mut self, dead: u64) {
        if self.damaged == Some(dead) {
            self.damaged = None;
        }
        let site = self.nodes[&dead].site.clone();
        let id = self.next_id;
        self.next_id += 1;
        let disk = SimDisk::new(self.rng.u64(..));
        self.nodes.insert(
            id,
            NodeSlot {
                site: site.clone(),
                disk,
                incarnation: 0,
                tasks: Arc::default(),
                retired: false,
            },
        );
        self.nodes.get_mut(&dead).unwrap().retired = true;
        if let Err(e) = self.start_node(id).await {
            panic!("a fresh node failed to start: {e}");
        }
        self.event(format!("node {id} (site {site}) replaces node {dead}"));
        // The membership change may fail while faults rage; the final phase retries.
        let _ = self.reconfigure(Duration::from_secs(5)).await;
    }

    /// Makes the voter set `self.voters()` (adding learners first), through whichever node
    /// leads. Ok once committed.
    async fn reconfigure(&mut self, within: Duration) -> Result<(), String> {
        let want: BTreeSet<u64> = self.voters().into_iter().collect();
        let deadline = Instant::now() + within;
        loop {
            if Instant::now() >= deadline {
                return Err("membership change not committed in time".into());
            }
            if let Some(l) = self.leader() {
                let r = self.replica(l).unwrap();
                let current: BTreeSet<u64> = r.status().voters.into_iter().collect();
                if current == want {
                    return Ok(());
                }
                let mut ok = true;
                for id in want.difference(&current) {
                    let inf = info(&self.nodes[id].site, *id);
                    let add = timeout(Duration::from_secs(2), r.add_learner(*id, inf)).await;
                    ok &= matches!(add, Ok(Ok(())));
                }
                if ok {
                    let change = timeout(
                        Duration::from_secs(3),
                        r.change_membership(want.clone(), false),
                    )
                    .await;
                    if matches!(change, Ok(Ok(()))) {
                        self.event(format!("voters now {want:?}"));
                        return Ok(());
                    }
                }
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether losing one more node's data is within the fault model (one site at a time):
    /// the leader's voter set is the intended one (an earlier replacement completed) and every
    /// voter runs with an intact disk.
    fn settled(&self) -> bool {
        let want: BTreeSet<u64> = self.voters().into_iter().collect();
        let running = want.iter().all(|id| self.replica(*id).is_some());
        let current = self
            .leader()
            .and_then(|l| self.replica(l))
            .map(|r| r.status().voters.into_iter().collect::<BTreeSet<u64>>());
        running && self.damaged.is_none() && current == Some(want)
    }

    /// Cuts every link between `id` and every other node, both ways.
    fn isolate(&self, id: u64) {
        for o in self.nodes.keys().copied().filter(|o| *o != id) {
            self.net.cut(id, o);
            self.net.cut(o, id);
        }
    }

    /// Every live node's view, for failure messages.
    fn describe(&self) -> String {
        let live = self.live.lock().unwrap();
        let mut out = String::new();
        for (id, r) in live.iter() {
            let s = r.status();
            out += &format!(
                "[node {id}: {:?} term {} leader {:?} commit {} end {} voters {:?} fatal {:?} poisoned {:?}] ",
                s.role,
                s.term,
                s.leader,
                s.commit_end,
                r.store.log().end_offset(),
                s.voters,
                r.fatal(),
                r.store.log().poisoned()
            );
            if std::env::var("SIM_DEBUG").is_ok() {
                use openraft::async_runtime::WatchReceiver;
                out += &format!(
                    "{:?} durable {}\n",
                    r.raft_handle().metrics().borrow_watched(),
                    r.store.log().durable_end()
                );
            }
        }
        out
    }

    /// The node that leads by its own account with the highest term, if any.
    fn leader(&self) -> Option<u64> {
        let live = self.live.lock().unwrap();
        live.iter()
            .map(|(id, r)| (*id, r.status()))
            .filter(|(_, s)| s.role == sitelog::raft::replica::Role::Leader)
            .max_by_key(|(_, s)| s.term)
            .map(|(id, _)| id)
    }
}

/// Serves one RPC connection: Raft requests, and snapshot offers (staged from live holders,
/// then installed through the real install path).
async fn serve_rpc(
    r: Replica,
    live: Live,
    history: Arc<Mutex<History>>,
    from: u64,
    mut tx: net::SimTx,
    mut rx: net::SimRx,
) {
    while let Ok(msg) = rx.recv().await {
        let reply = if wire::tag_of(&msg) == Some(wire::tag::SNAPSHOT) {
            match stage_snapshot(&r, &live, &msg).await {
                Ok(s) => {
                    let reply = r.install_snapshot(s).await;
                    if wire::tag_of(&reply) == Some(wire::tag::SNAPSHOT_RESP) {
                        history.lock().unwrap().snapshot_installs += 1;
                    }
                    reply
                }
                Err(e) => wire::encode_error(&e.to_string()),
            }
        } else {
            r.handle_rpc(from, msg).await
        };
        if tx.send(reply).await.is_err() {
            return;
        }
    }
}

/// Bulk transfer at 100 MB/s of virtual time.
const TRANSFER_BYTES_PER_MS: u64 = 100_000;

async fn stage_snapshot(
    r: &Replica,
    live: &Live,
    msg: &[u8],
) -> sitelog::Result<sitelog::raft::replica::IncomingSnapshot> {
    let s = Replica::decode_snapshot(msg)?;
    let staging = r.dir.join(sitelog::raft::state_machine::STAGING_DIR);
    r.io.create_dir_all(&staging)
        .map_err(|e| ioe(&staging, e))?;
    for seg in s.segments() {
        let staged = r.staged_path(seg.base_offset);
        let holders: Vec<(sitelog::io::IoRef, PathBuf)> = live
            .lock()
            .unwrap()
            .values()
            .filter_map(|h| h.held_segment_path(seg).map(|p| (h.io.clone(), p)))
            .collect();
        // Like the real fetch: every holder in turn until a copy verifies.
        let mut staged_ok = Err(Error::Protocol(format!(
            "no live node holds segment {}",
            seg.base_offset
        )));
        for (src_io, src_path) in holders {
            staged_ok = copy_segment(r, seg, &src_io, &src_path, &staged).await;
            if staged_ok.is_ok() {
                break;
            }
        }
        staged_ok?;
    }
    r.io.sync_dir(&staging).map_err(|e| ioe(&staging, e))?;
    Ok(s)
}

/// Copies one sealed segment from a holder's disk (after the transfer time) and verifies it.
async fn copy_segment(
    r: &Replica,
    seg: &sitelog::storage::SegmentInfo,
    src_io: &sitelog::io::IoRef,
    src_path: &Path,
    staged: &Path,
) -> sitelog::Result<()> {
    let bytes = read_file(src_io, src_path)?;
    sleep(Duration::from_millis(
        bytes.len() as u64 / TRANSFER_BYTES_PER_MS + 1,
    ))
    .await;
    let f = r.io.open(staged, true).map_err(|e| ioe(staged, e))?;
    f.set_len(0).map_err(|e| ioe(staged, e))?;
    f.write_at(&bytes, 0).map_err(|e| ioe(staged, e))?;
    f.sync_data().map_err(|e| ioe(staged, e))?;
    sitelog::storage::manifest::verify_segment_file(&r.io, staged, seg, r.cluster_id)
}

fn ioe(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn read_file(io: &sitelog::io::IoRef, path: &Path) -> sitelog::Result<Vec<u8>> {
    let f = io.open(path, false).map_err(|e| ioe(path, e))?;
    let len = f.len().map_err(|e| ioe(path, e))?;
    let mut buf = vec![0u8; len as usize];
    sitelog::io::read_exact_at(&*f, &mut buf, 0).map_err(|e| ioe(path, e))?;
    Ok(buf)
}

/// The node to send to: the hinted leader if it is live, else a random live one.
fn pick_node(live: &Live, hint: Option<u64>, rng: &mut fastrand::Rng) -> Option<(u64, Replica)> {
    let live = live.lock().unwrap();
    let ids: Vec<u64> = live.keys().copied().collect();
    let id = hint
        .filter(|h| live.contains_key(h))
        .or_else(|| (!ids.is_empty()).then(|| ids[rng.usize(..ids.len())]));
    id.and_then(|id| live.get(&id).map(|r| (id, r.clone())))
}

/// The payload of a client's `n`th message: unique, with some padding.
fn message(c: u32, n: u64, rng: &mut fastrand::Rng) -> Bytes {
    let pad = rng.usize(0..600);
    let mut p = format!("c{c}-{n}-").into_bytes();
    p.extend(std::iter::repeat_n(b'a' + (n % 26) as u8, pad));
    Bytes::from(p)
}

/// One client: appends unique payloads through whichever node it believes leads.
async fn client(c: u32, seed: u64, live: Live, history: Arc<Mutex<History>>, stop: Instant) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let start = Instant::now();
    let mut hint: Option<u64> = None;
    let mut seq = 0u64;
    while Instant::now() < stop {
        let Some((node, r)) = pick_node(&live, hint, &mut rng) else {
            sleep(Duration::from_millis(50)).await;
            continue;
        };
        seq += 1;
        let payload = message(c, seq, &mut rng);
        let i = {
            let mut h = history.lock().unwrap();
            let invoked_ms = start.elapsed().as_millis() as u64;
            h.ops.push(Op::plain(c, payload.clone(), node, invoked_ms));
            h.ops.len() - 1
        };
        let res = timeout(Duration::from_secs(2), r.append(vec![payload])).await;
        drop(r);
        let outcome = match res {
            Ok(Ok(offs)) => Outcome::Acked(offs[0]),
            Ok(Err(Error::NotLeader { leader, .. })) => {
                hint = leader;
                Outcome::Failed
            }
            Ok(Err(_)) | Err(_) => {
                hint = None;
                Outcome::Unknown
            }
        };
        history.lock().unwrap().ops[i].outcome = Some(outcome);
        sleep(Duration::from_millis(rng.u64(0..15))).await;
    }
}

/// How long one attempt (a register or a produce on one node) may take.
const ATTEMPT_TIMEOUT_MS: u64 = 2_000;
/// How long a producer resends a batch whose outcome is unknown (as the real client does,
/// clamped to half the idle expiry, so that a retrying producer does not expire).
const PRODUCE_RETRY_DEADLINE_MS: u64 = 6_000;
/// The most messages one produce carries here.
const MAX_PRODUCE_BATCH: u64 = 3;
/// Backoff between attempts: from the first, doubling up to the last.
const BACKOFF_FIRST_MS: u64 = 20;
const BACKOFF_MAX_MS: u64 = 500;

/// How a batch ended for its producer.
enum Batch {
    /// Acknowledged: the producer goes on with the next seqs.
    Done,
    /// Refused for good or unknown past the deadline: a later seq could never follow it, so
    /// the client registers a new producer (as a Kafka producer bumps its epoch).
    GiveUp,
}

/// One producer client (issue 17): registers a producer, retrying until it gets an id, then
/// produces batches of unique messages with consecutive seqs; a batch whose outcome is
/// unknown is resent with the same seqs to any live node until a virtual deadline.
async fn producer_client(
    c: u32,
    seed: u64,
    live: Live,
    history: Arc<Mutex<History>>,
    stop: Instant,
    settings: ProducerSettings,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let start = Instant::now();
    let mut hint: Option<u64> = None;
    let mut n = 0u64;
    let retry_ms = PRODUCE_RETRY_DEADLINE_MS.min(settings.idle_expiry_ms / 2);
    while let Some(producer) =
        register(c, &mut rng, &live, &mut hint, &history, stop, settings).await
    {
        let mut next_seq = 0u64;
        while Instant::now() < stop {
            // Now and then idle for a while: where the expiry is short, the producer expires.
            if rng.u32(0..40) == 0 {
                sleep(Duration::from_millis(rng.u64(500..3_000))).await;
            }
            let count = rng.u64(1..=MAX_PRODUCE_BATCH);
            let payloads: Vec<Bytes> = (0..count)
                .map(|_| {
                    n += 1;
                    message(c, n, &mut rng)
                })
                .collect();
            let first = {
                let mut h = history.lock().unwrap();
                let invoked_ms = start.elapsed().as_millis() as u64;
                for (seq, p) in (next_seq..).zip(&payloads) {
                    h.ops.push(Op {
                        producer_seq: Some((producer, seq)),
                        attempts: 0,
                        maybe_sent: false,
                        ..Op::plain(c, p.clone(), 0, invoked_ms)
                    });
                }
                h.ops.len() - payloads.len()
            };
            let sent = Sent {
                producer,
                first_seq: next_seq,
                payloads,
                ops: first,
            };
            let deadline = Instant::now() + Duration::from_millis(retry_ms);
            match produce_batch(&sent, &mut rng, &live, &mut hint, &history, deadline).await {
                Batch::Done => next_seq += count,
                Batch::GiveUp => break,
            }
            sleep(Duration::from_millis(rng.u64(0..15))).await;
        }
    }
}

/// A produce request and where its ops are in the history.
struct Sent {
    producer: u64,
    first_seq: u64,
    payloads: Vec<Bytes>,
    /// Index of its first op (one per message, consecutive).
    ops: usize,
}

impl Sent {
    fn update(&self, history: &Mutex<History>, f: impl Fn(usize, &mut Op)) {
        let mut h = history.lock().unwrap();
        for i in 0..self.payloads.len() {
            f(i, &mut h.ops[self.ops + i]);
        }
    }
}

/// Registers a producer through whichever node leads, until one answers with an id (or the
/// clients stop: `None`). A registration whose answer was lost leaves an unused producer in
/// the table, which expires or is evicted like any idle one.
async fn register(
    c: u32,
    rng: &mut fastrand::Rng,
    live: &Live,
    hint: &mut Option<u64>,
    history: &Mutex<History>,
    stop: Instant,
    settings: ProducerSettings,
) -> Option<u64> {
    let mut backoff_ms = BACKOFF_FIRST_MS;
    while Instant::now() < stop {
        if let Some((_, r)) = pick_node(live, *hint, rng) {
            let attempt = Duration::from_millis(ATTEMPT_TIMEOUT_MS);
            match timeout(attempt, r.register_producer(settings)).await {
                Ok(Ok(info)) => {
                    history
                        .lock()
                        .unwrap()
                        .registrations
                        .push((c, info.producer));
                    return Some(info.producer);
                }
                Ok(Err(Error::NotLeader { leader, .. })) => *hint = leader,
                Ok(Err(_)) | Err(_) => *hint = None,
            }
        }
        sleep(Duration::from_millis(backoff_ms)).await;
        backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
    }
    None
}

/// Sends `sent` until it is acknowledged or refused for good, resending the same seqs after
/// any other answer until `deadline`.
async fn produce_batch(
    sent: &Sent,
    rng: &mut fastrand::Rng,
    live: &Live,
    hint: &mut Option<u64>,
    history: &Mutex<History>,
    deadline: Instant,
) -> Batch {
    let mut backoff_ms = BACKOFF_FIRST_MS;
    let mut maybe_sent = false;
    let mut out_of_order = false;
    while Instant::now() < deadline {
        let Some((node, r)) = pick_node(live, *hint, rng) else {
            sleep(Duration::from_millis(50)).await;
            continue;
        };
        sent.update(history, |_, op| {
            op.attempts += 1;
            op.node = node;
        });
        let attempt = Duration::from_millis(ATTEMPT_TIMEOUT_MS)
            .min(deadline.saturating_duration_since(Instant::now()));
        let res = timeout(
            attempt,
            r.produce(sent.producer, sent.first_seq, sent.payloads.clone()),
        )
        .await;
        drop(r);
        let mut redirected = false;
        let refused = match res {
            Ok(Ok(produced)) => {
                let dups = produced.iter().filter(|p| p.duplicate).count() as u64;
                sent.update(history, |i, op| {
                    op.outcome = Some(Outcome::Acked(produced[i].offset));
                    op.maybe_sent = true;
                });
                history.lock().unwrap().deduplicated += dups;
                return Batch::Done;
            }
            Ok(Err(Error::ProducerExpired { .. })) => Some(Refusal::Expired),
            Ok(Err(Error::ProducerSeqBelowWindow { .. })) => Some(Refusal::BelowWindow),
            Ok(Err(Error::ProducerOutOfOrder { .. })) => {
                // An earlier seq is unresolved on that node: wait and resend.
                out_of_order = true;
                None
            }
            Ok(Err(Error::NotLeader { leader, .. })) => {
                // Maybe after it was appended (leadership moved before the commit).
                maybe_sent = true;
                redirected = leader.is_some_and(|l| l != node);
                *hint = leader;
                None
            }
            Ok(Err(_)) | Err(_) => {
                maybe_sent = true;
                *hint = None;
                None
            }
        };
        if let Some(why) = refused {
            sent.update(history, |_, op| {
                op.outcome = Some(Outcome::Refused(why));
                op.maybe_sent = maybe_sent;
            });
            return Batch::GiveUp;
        }
        // Told where the leader is: go there next (as the real client follows a redirect),
        // which also reaches a new leader early in its term, before it has applied the old
        // term's entries (the gate's case). A millisecond all the same: two nodes with stale
        // views could redirect to each other without virtual time moving.
        let wait_ms = if redirected { 1 } else { backoff_ms };
        sleep(Duration::from_millis(wait_ms)).await;
        backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
    }
    let outcome = match (maybe_sent, out_of_order) {
        (true, _) => Outcome::Unknown,
        (false, true) => Outcome::Refused(Refusal::OutOfOrder),
        (false, false) => Outcome::Failed,
    };
    sent.update(history, |_, op| {
        op.outcome = Some(outcome.clone());
        op.maybe_sent = maybe_sent;
    });
    Batch::GiveUp
}

/// A consumer: reads committed records in order from some live node, switching nodes when
/// its node goes away; records what it read.
async fn consumer(seed: u64, live: Live, history: Arc<Mutex<History>>, stop: Instant) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut next = 0u64;
    while Instant::now() < stop {
        let r = {
            let live = live.lock().unwrap();
            let ids: Vec<u64> = live.keys().copied().collect();
            if ids.is_empty() {
                None
            } else {
                live.get(&ids[rng.usize(..ids.len())]).cloned()
            }
        };
        let Some(r) = r else {
            sleep(Duration::from_millis(20)).await;
            continue;
        };
        // Stay on this node for a while.
        let until = Instant::now() + Duration::from_millis(rng.u64(50..500));
        while Instant::now() < until {
            let commit_end = *r.committed_end.borrow();
            if next >= commit_end {
                sleep(Duration::from_millis(5)).await;
                continue;
            }
            let log = r.store.log();
            // What a reader is served: produced messages without their header.
            match log.read(next).and_then(sitelog::raft::entry::message_view) {
                Ok(rec) => {
                    let p = rec.map(|r| r.payload);
                    history.lock().unwrap().consumed.push((next, p));
                    next += 1;
                }
                Err(Error::BelowFloor {
                    offset,
                    first_available,
                }) => {
                    // Deleted here. Only if every live node deleted it may the consumer
                    // skip ahead (as a Kafka consumer resets on OffsetOutOfRange), to the
                    // lowest first offset still held; otherwise another node serves it.
                    let lowest = live_replicas(&live)
                        .iter()
                        .map(|(_, r)| r.store.log().start_offset())
                        .min()
                        .unwrap_or(first_available);
                    if lowest > offset {
                        history.lock().unwrap().floor_skips.push((offset, lowest));
                        next = lowest;
                    }
                    break;
                }
                Err(_) => break,
            }
        }
    }
}

fn live_replicas(live: &Live) -> Vec<(u64, Replica)> {
    live.lock()
        .unwrap()
        .iter()
        .map(|(i, r)| (*i, r.clone()))
        .collect()
}

/// Diagnostics (`SIM_WATCH_OFFSET=N`): what each node holds at offset N, printed when it changes.
fn describe_offset(r: &Replica, off: u64) -> String {
    let log = r.store.log();
    match log.read(off) {
        Ok(rec) => format!(
            "term {} {:?} end {} durable {} commit {} term {}",
            rec.term,
            &rec.payload[..rec.payload.len().min(8)],
            log.end_offset(),
            log.durable_end(),
            *r.committed_end.borrow(),
            r.status().term
        ),
        Err(_) => format!(
            "absent end {} durable {}",
            log.end_offset(),
            log.durable_end()
        ),
    }
}

/// Samples every live node's committed end; it must never go back within an incarnation.
async fn monitor(live: Live, history: Arc<Mutex<History>>, stop: Instant) {
    let mut last: BTreeMap<u64, (tokio::sync::watch::Receiver<u64>, u64)> = BTreeMap::new();
    let watch: Option<u64> = std::env::var("SIM_WATCH_OFFSET")
        .ok()
        .and_then(|s| s.parse().ok());
    let mut seen: BTreeMap<u64, String> = BTreeMap::new();
    let mut sampled: BTreeMap<u64, u64> = BTreeMap::new();
    let t0 = Instant::now();
    while Instant::now() < stop {
        for (id, r) in live_replicas(&live) {
            if let Some(off) = watch {
                let d = describe_offset(&r, off);
                if seen.get(&id) != Some(&d) {
                    eprintln!("{:>6?} node {id} @{off}: {d}", t0.elapsed());
                    seen.insert(id, d);
                }
            }
            let ce = *r.committed_end.borrow();
            if let Some((rx, prev)) = last.get(&id) {
                // The same watch channel: the same incarnation of the node.
                if rx.same_channel(&r.committed_end) && ce < *prev {
                    history.lock().unwrap().live_violations.push(format!(
                        "node {id}: committed end went back from {prev} to {ce}"
                    ));
                }
            }
            last.insert(id, (r.committed_end.clone(), ce));
            sample_producers(&history, id, &r, &mut sampled);
        }
        sleep(Duration::from_millis(25)).await;
    }
}

/// What the producers' messages came to in a run.
#[derive(Debug, Default)]
pub struct ProducerStats {
    /// Acknowledged after more than one attempt (resent with the same seq).
    pub retried_acked: u64,
    /// Refused as expired (evicted by a registration, or idle past the expiry).
    pub expired: u64,
    /// Unknown past the retry deadline.
    pub unknown: u64,
}

impl ProducerStats {
    pub fn of(history: &History) -> ProducerStats {
        let mut p = ProducerStats::default();
        for o in history.ops.iter().filter(|o| o.producer_seq.is_some()) {
            let acked = matches!(o.outcome, Some(Outcome::Acked(_)));
            p.retried_acked += u64::from(o.attempts > 1 && acked);
            p.expired += u64::from(o.outcome == Some(Outcome::Refused(Refusal::Expired)));
            p.unknown += u64::from(o.outcome == Some(Outcome::Unknown));
        }
        p
    }
}

/// Records `r`'s producer table with its applied end (once per node and applied end), where
/// the table is exactly the applied prefix's, and its leader's mispredictions so far.
/// `sampled`: the applied end last sampled per node.
fn sample_producers(
    history: &Mutex<History>,
    id: u64,
    r: &Replica,
    sampled: &mut BTreeMap<u64, u64>,
) {
    // Read together, with no await between: apply moves both at once on this thread.
    let applied_end = *r.committed_end.borrow();
    let (as_of, digest) = r.producer_table_probe();
    let mispredicted = r.dedup_mispredicted();
    let mut h = history.lock().unwrap();
    let worst = h.mispredicted.entry(id).or_default();
    *worst = (*worst).max(mispredicted);
    if as_of.is_some_and(|a| a >= applied_end) || sampled.get(&id) == Some(&applied_end) {
        return;
    }
    sampled.insert(id, applied_end);
    h.table_samples.push(TableSample {
        node: id,
        applied_end,
        digest,
    });
}

/// Runs one simulated cluster from `cfg.seed` and checks its history.
pub fn run(cfg: SimConfig) -> RunReport {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time().start_paused(true);
    // tokio's own random draws (a watch channel's waiter shard) follow the seed too.
    #[cfg(tokio_unstable)]
    builder.rng_seed(tokio::runtime::RngSeed::from_bytes(&cfg.seed.to_le_bytes()));
    let rt = builder.build().unwrap();
    let seed = cfg.seed;
    rt.block_on(runtime::scope(seed, async move { run_inner(cfg).await }))
}

async fn run_inner(cfg: SimConfig) -> RunReport {
    let mut rng = fastrand::Rng::with_seed(cfg.seed);
    let net = SimNet::new(rng.u64(..));
    let mut sim = Sim {
        cfg: cfg.clone(),
        rng: fastrand::Rng::with_seed(rng.u64(..)),
        net,
        nodes: BTreeMap::new(),
        live: Arc::default(),
        history: Arc::default(),
        start: Instant::now(),
        next_id: 4,
        damaged: None,
    };
    for id in 1..=3u64 {
        let disk = SimDisk::new(rng.u64(..));
        let slot = NodeSlot {
            site: format!("site-{id}"),
            disk,
            incarnation: 0,
            tasks: Arc::default(),
            retired: false,
        };
        sim.nodes.insert(id, slot);
        sim.start_node(id).await.unwrap();
    }
    let members: BTreeMap<u64, NodeInfo> = (1..=3)
        .map(|id| (id, info(&format!("site-{id}"), id)))
        .collect();
    sim.replica(1).unwrap().initialize(members).await.unwrap();

    let stop_clients = sim.start + Duration::from_millis(cfg.fault_ms + 1_000);
    let mut workers = Vec::new();
    let settings = ProducerSettings {
        idle_expiry_ms: cfg.idle_expiry_ms,
        max_producers: cfg.max_producers,
    };
    for c in 0..cfg.clients {
        let (live, h) = (sim.live.clone(), sim.history.clone());
        let seed = rng.u64(..);
        // The plain clients come first: with no producers, a run is what it was before them.
        let w = if c < cfg.clients - cfg.producer_clients.min(cfg.clients) {
            runtime::spawn(client(c, seed, live, h, stop_clients))
        } else {
            runtime::spawn(producer_client(c, seed, live, h, stop_clients, settings))
        };
        workers.push(w);
    }
    let (live, h) = (sim.live.clone(), sim.history.clone());
    let consumer_stop = stop_clients + Duration::from_millis(cfg.converge_ms);
    let consumer_task = runtime::spawn(consumer(rng.u64(..), live, h, consumer_stop));
    let (live, h) = (sim.live.clone(), sim.history.clone());
    workers.push(runtime::spawn(monitor(live, h, consumer_stop)));

    nemesis(&mut sim).await;
    let converged = converge(&mut sim, stop_clients).await;
    for w in workers {
        // A panic in a client (a debug assertion inside the replica it called, say) is a
        // violation, never swallowed.
        if let Err(e) = w.await {
            sim.history
                .lock()
                .unwrap()
                .live_violations
                .push(format!("a client or the monitor failed: {e}"));
        }
    }
    // Let the consumer finish reading what is committed (bounded by its own stop time).
    let _ = consumer_task.await;
    let finals = collect_finals(&sim).await;
    let (delivered, resets, ghosts) = sim.net.stats();
    if let Ok(path) = std::env::var("SIM_TRACE") {
        let _ = std::fs::write(path, sim.net.take_trace().join("\n"));
    }
    let mut history = std::mem::take(&mut *sim.history.lock().unwrap());
    history.finals = finals;
    if let Err(e) = converged {
        history.live_violations.push(e);
    }
    let mut violations = history.check();
    if runtime::unseeded_draws() > 0 {
        violations.push(format!(
            "{} random draws escaped the seed (the run cannot be replayed)",
            runtime::unseeded_draws()
        ));
    }
    let acked = history
        .ops
        .iter()
        .filter(|o| matches!(o.outcome, Some(Outcome::Acked(_))))
        .count();
    let p = ProducerStats::of(&history);
    let summary = format!(
        "seed {}: {} ops, {} acked, {} producers registered (bound {}, idle expiry {} ms), {} produced acked after a retry, {} deduplicated, {} expired, {} unknown, {} producer table samples ({} applied ends compared), {} consumed, {} faults, {} snapshot installs, {} messages delivered, {} connection resets, {} stale duplicates, nodes {:?}",
        cfg.seed,
        history.ops.len(),
        acked,
        history.registrations.len(),
        cfg.max_producers,
        cfg.idle_expiry_ms,
        p.retried_acked,
        history.deduplicated,
        p.expired,
        p.unknown,
        history.table_samples.len(),
        history.tables_compared(),
        history.consumed.len(),
        history.events.len(),
        history.snapshot_installs,
        delivered,
        resets,
        ghosts,
        history.finals.keys().collect::<Vec<_>>()
    );
    // The runtime's end stops every node's tasks (as a crash would).
    RunReport {
        digest: history.digest(),
        violations,
        history,
        summary,
    }
}

/// The supervisor: a node whose log or consensus failed (EIO, a full disk, corruption found
/// while reading) is restarted; one that cannot start is replaced.
async fn restart_failed(sim: &mut Sim) {
    for id in sim.live_ids() {
        let r = sim.replica(id).unwrap();
        if r.fatal().is_some() || r.store.log().poisoned().is_some() {
            sim.event(format!("node {id} failed ({:?}); restarting", r.fatal()));
            sim.crash(id).await;
            sim.restart(id).await;
        }
    }
}

/// Injects faults for `fault_ms` of virtual time.
async fn nemesis(sim: &mut Sim) {
    let end = sim.start + Duration::from_millis(sim.cfg.fault_ms);
    let mut down: Option<u64> = None;
    while Instant::now() < end {
        sleep(Duration::from_millis(sim.rng.u64(100..700))).await;
        restart_failed(sim).await;
        if sim.damaged.is_some() && sim.rng.u32(0..4) == 0 {
            scrub(sim).await;
        }
        let voters = sim.voters();
        let pick = voters[sim.rng.usize(..voters.len())];
        let roll = sim.rng.u32(0..if sim.cfg.grey_faults { 112 } else { 100 });
        if roll >= 100 {
            grey_fault(sim, pick, roll - 100, down).await;
            continue;
        }
        match roll {
            0..=17 => {
                if let Some(d) = down.take() {
                    sim.restart(d).await;
                } else if sim.replica(pick).is_some() {
                    sim.event(format!("crash node {pick}"));
                    sim.crash(pick).await;
                    down = Some(pick);
                }
            }
            18..=32 => {
                sim.net.heal();
                sim.event(format!(
                    "isolate node {pick} (site {})",
                    sim.nodes[&pick].site
                ));
                sim.isolate(pick);
            }
            33..=42 => {
                let other = voters[sim.rng.usize(..voters.len())];
                if other != pick {
                    sim.event(format!("cut link {pick} → {other} (one way)"));
                    sim.net.cut(pick, other);
                }
            }
            43..=52 => {
                if let Some(l) = sim.leader() {
                    sim.net.heal();
                    sim.event(format!("isolate the leader's site (node {l})"));
                    sim.isolate(l);
                }
            }
            53..=62 => {
                sim.event("heal the network".into());
                sim.net.heal();
            }
            63..=70 => {
                let ms = sim.rng.u64(100..1500);
                sim.event(format!("pause node {pick} for {ms} ms"));
                sim.net
                    .pause(pick, Instant::now() + Duration::from_millis(ms));
            }
            71..=80 => {
                let f = NetFaults {
                    delay_min_ms: sim.rng.u64(0..5),
                    delay_max_ms: sim.rng.u64(5..60),
                    loss_per_mille: sim.rng.u32(0..40),
                    dup_per_mille: sim.rng.u32(0..60),
                };
                sim.event(format!("network faults {f:?}"));
                sim.net.set_faults(f);
            }
            81..=84 => {
                sim.event(format!("node {pick}: next fdatasync fails (EIO)"));
                sim.nodes[&pick].disk.set_faults(SimFaults {
                    fail_syncs: 1,
                    ..SimFaults::default()
                });
            }
            85..=87 => {
                let disk = &sim.nodes[&pick].disk;
                let cap = disk.used_bytes() + sim.rng.u64(0..4096);
                sim.event(format!("node {pick}: disk full at {cap} bytes"));
                disk.set_faults(SimFaults {
                    capacity_bytes: Some(cap),
                    ..SimFaults::default()
                });
            }
            88..=91 => {
                // (Runs from before media faults burned a site without waiting for the last
                // replacement to complete; they keep doing so, to replay as they did.)
                if down.is_none() && (!sim.cfg.media_faults || sim.settled()) {
                    sim.event(format!("site of node {pick} burns down"));
                    sim.crash(pick).await;
                    sim.nodes.get_mut(&pick).unwrap().retired = true;
                    sim.replace(pick).await;
                }
            }
            roll if sim.cfg.media_faults && roll < 95 => flip_a_bit(sim, pick),
            roll if sim.cfg.media_faults && roll < 97 => misdirect_a_write(sim, pick),
            _ => {
                sim.event("calm network".into());
                sim.net.set_faults(NetFaults::calm());
            }
        }
    }
    if let Some(d) = down {
        sim.restart(d).await;
    }
}

/// A grey failure (`roll` in 0..12): the leader's storage fails, or descriptors run out on
/// `pick`.
async fn grey_fault(sim: &mut Sim, pick: u64, roll: u32, down: Option<u64>) {
    match roll {
        0..=4 => {
            if down.is_none() && sim.settled() {
                fail_the_leaders_storage(sim).await;
            }
        }
        _ => {
            sim.event(format!(
                "node {pick}: out of descriptors (next open fails, EMFILE)"
            ));
            sim.nodes[&pick].disk.set_faults(SimFaults {
                fail_opens: 1,
                ..SimFaults::default()
            });
        }
    }
}

/// Fails the leader's storage in an otherwise whole, calm cluster and checks liveness: once
/// the fault has stopped the leader, another node must lead and commit within
/// [`TAKEOVER_BOUND_MS`]. The failed node is left alone meanwhile (it stepped aside); its
/// disk works again afterwards and the supervisor restarts it.
async fn fail_the_leaders_storage(sim: &mut Sim) {
    let Some(leader) = sim.leader() else { return };
    sim.net.heal();
    sim.net.set_faults(NetFaults::calm());
    // The bound is about one failed node: a fault still armed on another node's disk (an
    // fdatasync EIO drawn earlier, a full disk) would fail it too as soon as it campaigns, and
    // two failed nodes of three leave no majority. Those disks are made whole first.
    for (id, node) in sim.nodes.iter().filter(|(id, _)| **id != leader) {
        if node.disk.faults() != SimFaults::default() {
            sim.event(format!(
                "node {id}: pending disk fault cleared before the takeover check"
            ));
            node.disk.set_faults(SimFaults::default());
        }
    }
    let disk = sim.nodes[&leader].disk.clone();
    let faults = if sim.rng.bool() {
        SimFaults {
            fail_syncs: 1,
            ..SimFaults::default()
        }
    } else {
        SimFaults {
            capacity_bytes: Some(disk.used_bytes() + sim.rng.u64(0..4096)),
            ..SimFaults::default()
        }
    };
    sim.event(format!("leader {leader}: storage fails ({faults:?})"));
    disk.set_faults(faults);
    let deadline = Instant::now() + Duration::from_millis(LEADER_FAULT_WAIT_MS);
    let stopped = |sim: &Sim| {
        sim.replica(leader)
            .is_none_or(|r| r.fatal().is_some() || r.store.log().poisoned().is_some())
    };
    while !stopped(sim) {
        if Instant::now() >= deadline {
            sim.event(format!("leader {leader}: the storage fault was not hit"));
            disk.set_faults(SimFaults::default());
            return;
        }
        sleep(Duration::from_millis(5)).await;
    }
    let failed_at = Instant::now();
    let base = live_replicas(&sim.live)
        .iter()
        .map(|(_, r)| *r.committed_end.borrow())
        .max()
        .unwrap_or(0);
    let bound = Duration::from_millis(TAKEOVER_BOUND_MS);
    loop {
        let took_over = sim.leader().filter(|l| *l != leader).and_then(|l| {
            let r = sim.replica(l)?;
            let committed = *r.committed_end.borrow();
            (committed > base).then_some(l)
        });
        if let Some(l) = took_over {
            let ms = failed_at.elapsed().as_millis();
            sim.event(format!(
                "node {l} leads and commits {ms} ms after the leader's fault"
            ));
            break;
        }
        if failed_at.elapsed() > bound {
            // What each live node thought then, to tell a slow election from a stuck one.
            let seen: Vec<String> = live_replicas(&sim.live)
                .iter()
                .map(|(id, r)| {
                    let s = r.status();
                    format!(
                        "node {id}: {:?} term {} leader {:?} commit {} log {} voters {:?}",
                        s.role, s.term, s.leader, s.commit_end, s.log_end, s.voters
                    )
                })
                .collect();
            sim.history.lock().unwrap().live_violations.push(format!(
                "liveness: no other node led and committed within {TAKEOVER_BOUND_MS} ms \
                 after leader {leader}'s storage failed ({})",
                seen.join("; ")
            ));
            break;
        }
        sleep(Duration::from_millis(5)).await;
    }
    disk.set_faults(SimFaults::default());
}

/// Media damage on `id`: one byte of one of its sealed segments changes on the platter.
fn flip_a_bit(sim: &mut Sim, id: u64) {
    if !sim.settled() {
        return;
    }
    let Some(r) = sim.replica(id) else { return };
    let log = r.store.log();
    let Ok(sealed) = log.sealed_segments(u64::MAX) else {
        return;
    };
    if sealed.is_empty() {
        return;
    }
    let seg = &sealed[sim.rng.usize(..sealed.len())];
    let path = sitelog::storage::segment::Segment::path_in(log.dir(), seg.base_offset);
    let at = sim.rng.u64(..seg.size_bytes);
    let disk = &sim.nodes[&id].disk;
    let Ok(image) = disk.peek(&path) else { return };
    let flipped = image[at as usize] ^ (1 << sim.rng.u32(0..8));
    disk.poke(&path, at, &[flipped]).unwrap();
    sim.event(format!(
        "node {id}: bit flip in sealed segment {} at byte {at}",
        seg.base_offset
    ));
    sim.damaged = Some(id);
}

/// Media damage on `id`: its next write lands some sectors away from where it was aimed.
fn misdirect_a_write(sim: &mut Sim, id: u64) {
    if !sim.settled() {
        return;
    }
    sim.event(format!("node {id}: the next write is misdirected"));
    sim.nodes[&id].disk.set_faults(SimFaults {
        misdirect_writes: 1,
        ..SimFaults::default()
    });
    sim.damaged = Some(id);
}

/// The operator's scrub of the damaged node: a full verification (every checksum). Damage it
/// finds gets the node replaced by a fresh one (the repair); damage it misses stays, and the
/// checker then catches any record or segment that differs from the other replicas'.
async fn scrub(sim: &mut Sim) {
    let Some(id) = sim.damaged else { return };
    let Some(r) = sim.replica(id) else {
        return; // down: scrubbed once it runs again (or replaced if it cannot start)
    };
    if sim.nodes[&id].disk.faults().misdirect_writes > 0 {
        return; // the misdirected write has not happened yet: nothing to find so far
    }
    sim.damaged = None;
    match r.store.log().verify() {
        Ok(_) => sim.event(format!("scrub of node {id}: clean")),
        Err(e) => {
            sim.event(format!("scrub of node {id}: {e}; replacing it"));
            sim.crash(id).await;
            sim.nodes.get_mut(&id).unwrap().retired = true;
            sim.replace(id).await;
        }
    }
}

/// Stops every fault and waits until every voter holds and has applied the whole log.
async fn converge(sim: &mut Sim, clients_stop: Instant) -> Result<(), String> {
    sim.event("faults stop".into());
    sim.net.heal();
    sim.net.set_faults(NetFaults::calm());
    for slot in sim.nodes.values().filter(|s| !s.retired) {
        slot.disk.set_faults(SimFaults::default());
    }
    // Restart whatever failed or is down.
    restart_failed(sim).await;
    for id in sim.voters() {
        if sim.replica(id).is_none() && !sim.nodes[&id].retired {
            sim.restart(id).await;
        }
    }
    scrub(sim).await;
    let deadline = Instant::now().max(clients_stop) + Duration::from_millis(sim.cfg.converge_ms);
    sim.reconfigure(Duration::from_millis(sim.cfg.converge_ms))
        .await?;
    sleep(clients_stop.saturating_duration_since(Instant::now())).await;
    // One more write in the final term commits everything before it.
    loop {
        if Instant::now() >= deadline {
            return Err(format!(
                "no leader accepted the final write in time: {}",
                sim.describe()
            ));
        }
        if let Some(l) = sim.leader() {
            let r = sim.replica(l).unwrap();
            let payload = Bytes::from(format!("final-{}", sim.now_ms()));
            let i = {
                let mut h = sim.history.lock().unwrap();
                h.ops
                    .push(Op::plain(u32::MAX, payload.clone(), l, sim.now_ms()));
                h.ops.len() - 1
            };
            let w = timeout(Duration::from_secs(2), r.append(vec![payload])).await;
            let outcome = match w {
                Ok(Ok(offs)) => Outcome::Acked(offs[0]),
                Ok(Err(Error::NotLeader { .. })) => Outcome::Failed,
                _ => Outcome::Unknown,
            };
            let acked = matches!(outcome, Outcome::Acked(_));
            sim.history.lock().unwrap().ops[i].outcome = Some(outcome);
            if acked {
                break;
            }
        }
        restart_failed(sim).await;
        sleep(Duration::from_millis(100)).await;
    }
    loop {
        let voters = sim.voters();
        let ends: Vec<(u64, u64, u64)> = voters
            .iter()
            .filter_map(|id| {
                sim.replica(*id)
                    .map(|r| (*id, *r.committed_end.borrow(), r.store.log().end_offset()))
            })
            .collect();
        let top = ends.iter().map(|e| e.2).max().unwrap_or(0);
        if ends.len() == voters.len() && ends.iter().all(|e| e.1 == top && e.2 == top) {
            sim.event(format!("converged at {top}"));
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no convergence in time: (node, committed, end) {ends:?}; {}",
                sim.describe()
            ));
        }
        restart_failed(sim).await;
        sleep(Duration::from_millis(50)).await;
    }
}

/// A record as the checker sees it: a produced message as its message, with its
/// (producer, seq).
fn final_record(rec: &sitelog::storage::Record) -> Result<FinalRecord, String> {
    use checker::{KIND_NORMAL, KIND_PRODUCE, KIND_RAFT, KIND_REGISTER};
    let (kind, payload, producer_seq) = match rec.kind {
        EntryKind::Normal => (KIND_NORMAL, rec.payload.clone(), None),
        EntryKind::Produce => {
            let (producer, seq, _, message) =
                sitelog::raft::entry::decode_produce_header(&rec.payload)
                    .map_err(|e| format!("a produce header: {e}"))?;
            let at = rec.payload.len() - message.len();
            (KIND_PRODUCE, rec.payload.slice(at..), Some((producer, seq)))
        }
        EntryKind::Register => (KIND_REGISTER, rec.payload.clone(), None),
        EntryKind::Blank | EntryKind::Membership => (KIND_RAFT, rec.payload.clone(), None),
    };
    Ok(FinalRecord {
        term: rec.term,
        kind,
        payload,
        producer_seq,
    })
}

/// Reads every live replica's final log and sealed segments (and a last sample of its
/// producer table).
async fn collect_finals(sim: &Sim) -> BTreeMap<u64, FinalNode> {
    let mut out = BTreeMap::new();
    for id in sim.live_ids() {
        let r = sim.replica(id).unwrap();
        sample_producers(&sim.history, id, &r, &mut BTreeMap::new());
        let log = r.store.log();
        let mut n = FinalNode {
            start: log.start_offset(),
            commit_end: *r.committed_end.borrow(),
            ..FinalNode::default()
        };
        if n.start > 0 {
            // Below the floor a read is told where the log starts: never served as present.
            n.below_floor = match log.read(n.start - 1) {
                Err(Error::BelowFloor {
                    first_available, ..
                }) if first_available == n.start => None,
                Ok(_) => Some(format!("offset {} below the start is served", n.start - 1)),
                Err(e) => Some(format!("offset {}: {e}", n.start - 1)),
            };
        }
        for off in n.start..log.end_offset() {
            match log.read(off) {
                Ok(rec) => match final_record(&rec) {
                    Ok(f) => {
                        n.records.insert(off, f);
                    }
                    Err(e) => {
                        n.read_error = Some(format!("offset {off}: {e}"));
                        break;
                    }
                },
                Err(e) => {
                    n.read_error = Some(format!("offset {off}: {e}"));
                    break;
                }
            }
        }
        if let Ok(infos) = log.sealed_segments(u64::MAX) {
            for i in infos {
                let path = sitelog::storage::segment::Segment::path_in(log.dir(), i.base_offset);
                if let Ok(bytes) = sim.nodes[&id].disk.peek(&path) {
                    n.sealed.insert(i.base_offset, Bytes::from(bytes));
                }
            }
        }
        out.insert(id, n);
    }
    out
}
