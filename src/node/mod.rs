//! The embedding API: a [`Node`] is one replica of a replicated sitelog, serving peers and
//! clients over TCP.
//!
//! - `append` resolves to offsets only once a majority of voters have the records fsynced.
//!   Writes are **not forwarded**: on a follower they fail with [`Error::NotLeader`] naming the
//!   leader and its address (one extra round trip for a misdirected client, but no hidden
//!   second hop on the acknowledgement path, and the client always knows which node acked).
//! - `read` and `subscribe` serve committed records only.
//! - Placement: with [`Placement::Enforce`] (the default) a membership whose voters could lose
//!   a majority with one site (fewer than three sites, or one site holding half or more of the
//!   voters) is refused; [`Placement::Warn`] only logs it.
//! - Metrics go through the `metrics` facade (see [`metrics`]), spans through `tracing`.

pub mod catchup;
pub mod client;
mod core;
pub mod follow;
pub mod metrics;
pub mod protocol;
pub mod repair;
mod repair_start;
pub mod replace;
mod retention;
mod service;
pub mod status;
mod supervisor;
pub mod timers;

/// When manifest snapshots are taken (the consensus layer's settings, plain numbers).
pub use crate::raft::replica::SnapshotSettings;
pub use crate::raft::replica::{ProducerInfo, ProducerSettings};
pub use core::ProduceAck;
pub use replace::{ReplaceEvent, ReplaceOptions, ReplacePhase, ReplaceProgress, ReplaceStream};
pub use status::{FollowerProgress, NodeStatus, Role};
pub use supervisor::{HealOptions, Health};
pub use timers::Timers;

use crate::net::fetch_budget::FetchBudget;
use crate::net::tcp::{self, NetLimits, ServerIdentity, TcpConnector};
pub use crate::net::tls::Security;
use crate::net::tls::{TlsReloader, Who};
use crate::raft::replica::{openraft_config, Replica};
use crate::raft::NodeInfo;
use crate::storage::{LogOptions, Record};
use crate::{Error, Result};
use bytes::Bytes;
use futures_util::Stream;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::watch;

/// What to do with a membership that one site's loss could leave without a majority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// Refuse it (default).
    #[default]
    Enforce,
    /// Log a warning and go on (tests, two-site labs).
    Warn,
}

/// A member of the cluster as configured: its site and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Site name.
    pub site: String,
    /// Address (`host:port`).
    pub addr: String,
}

/// How to start a node.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// This node's id; never reuse an id of a node that was lost (an id removed from the
    /// membership is refused: [`Error::RetiredNode`]). The data directory records it.
    pub node_id: u64,
    /// This node's site.
    pub site: String,
    /// Data directory (holds `log/` and `raft_meta`).
    pub data_dir: PathBuf,
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// Address peers and clients use to reach this node. Default: the bound address.
    pub advertise: Option<String>,
    /// The cluster's id; connections from other clusters are refused.
    pub cluster_id: u64,
    /// The initial members (this node included) when founding a cluster; empty when joining
    /// as a learner or restarting. Initializing an already initialized node is skipped.
    pub initial_members: BTreeMap<u64, Peer>,
    /// Raft timers. Default: [`Timers::lan`].
    pub timers: Timers,
    /// Local log options. Default as `LogOptions`, with records limited to 1 MiB so that a
    /// replication message (at most 64 entries) fits the network frame limit. Its
    /// `retention_bytes` and `retention_age_ms` are the node's retention: whole sealed
    /// segments below the floor (the lowest of the retention cut, what the latest snapshot
    /// and attached application state need, one past Raft's purged entry, and segments being
    /// fetched by peers) are deleted after each seal and every second. Needs snapshots.
    pub log: LogOptions,
    /// Network limits.
    pub net: NetLimits,
    /// Placement policy.
    pub placement: Placement,
    /// When manifest snapshots are taken.
    pub snapshots: SnapshotSettings,
    /// How this node catches up from a snapshot (bulk fetch settings).
    pub catch_up: catchup::CatchUpOptions,
    /// How this node heals when its storage fails (see [`Health`]).
    pub heal: HealOptions,
    /// The background scrub of sealed segments (repairs use the `catch_up` fetch settings).
    pub repair: repair::RepairOptions,
    /// How every port and outgoing connection is secured: mutual TLS with this node's
    /// certificate (`node-<id>.pem` of the directory), or plaintext. Default
    /// [`Security::Insecure`] (logged as a warning at start).
    pub security: Security,
    /// The parameters idempotent producers are registered with while this node leads
    /// (bound and idle expiry; each registration carries them, so every replica applies the
    /// same ones). Default: [`ProducerSettings::default`] (4096 producers, 15 min).
    pub producers: ProducerSettings,
}

impl NodeConfig {
    /// A configuration with defaults for everything but identity and place.
    pub fn new(
        node_id: u64,
        site: &str,
        data_dir: impl Into<PathBuf>,
        listen: &str,
        cluster_id: u64,
    ) -> Self {
        NodeConfig {
            node_id,
            site: site.to_string(),
            data_dir: data_dir.into(),
            listen: listen.to_string(),
            advertise: None,
            cluster_id,
            initial_members: BTreeMap::new(),
            timers: Timers::default(),
            log: LogOptions {
                max_record_bytes: crate::limits::NODE_MAX_RECORD_BYTES,
                ..LogOptions::default()
            },
            net: NetLimits::default(),
            placement: Placement::default(),
            snapshots: SnapshotSettings::default(),
            catch_up: catchup::CatchUpOptions::new(cluster_id),
            heal: HealOptions::default(),
            repair: repair::RepairOptions::default(),
            security: Security::Insecure,
            producers: ProducerSettings::default(),
        }
    }

    /// Checks the limits that must agree before anything starts: the network limits (against
    /// the Raft timers), and the record limit against the frame limit. A replication message
    /// carries up to `limits::MAX_PAYLOAD_ENTRIES` stored frames, so a `log.max_record_bytes`
    /// whose full batch would not fit `net.max_frame_bytes` is refused here with
    /// [`Error::TooLong`] (it would otherwise break replication at run time, on the first
    /// full batch of large records).
    pub fn validate(&self) -> Result<()> {
        self.net.validate(self.timers.election_timeout_max_ms)?;
        validate_producers(&self.producers)?;
        let max = crate::limits::max_record_bytes_for_frame(self.net.max_frame_bytes);
        if u64::from(self.log.max_record_bytes) > max {
            return Err(Error::TooLong {
                what: "log.max_record_bytes (a full replication batch must fit \
                       net.max_frame_bytes)",
                len: self.log.max_record_bytes as usize,
                max: max as usize,
            });
        }
        debug_assert!(
            crate::limits::append_message_bytes(self.log.max_record_bytes)
                <= self.net.max_frame_bytes
        );
        Ok(())
    }
}

/// Shortest producer idle expiry a node accepts: the client's retry deadline is half of it,
/// and a deadline under this would turn a leader election into unknown outcomes.
pub const MIN_PRODUCER_IDLE_EXPIRY_MS: u64 = 10_000;
/// Longest producer idle expiry a node accepts (7 days): an idle producer holds its table row
/// that long.
pub const MAX_PRODUCER_IDLE_EXPIRY_MS: u64 = 7 * 24 * 3_600_000;

/// Checks the producer settings against their limits ([`Error::InvalidArgument`]).
fn validate_producers(p: &ProducerSettings) -> Result<()> {
    use crate::raft::dedup::MAX_PRODUCERS;
    if p.max_producers == 0 || p.max_producers > MAX_PRODUCERS {
        return Err(Error::InvalidArgument(format!(
            "max_producers {} is not in 1..={MAX_PRODUCERS}",
            p.max_producers
        )));
    }
    let range = MIN_PRODUCER_IDLE_EXPIRY_MS..=MAX_PRODUCER_IDLE_EXPIRY_MS;
    if !range.contains(&p.idle_expiry_ms) {
        return Err(Error::InvalidArgument(format!(
            "producer_idle_expiry_ms {} is not in {MIN_PRODUCER_IDLE_EXPIRY_MS}..={MAX_PRODUCER_IDLE_EXPIRY_MS}",
            p.idle_expiry_ms
        )));
    }
    Ok(())
}

/// Checks that losing any one site leaves a majority of `voters` (see [`Placement`]).
pub fn check_placement(voters: &BTreeMap<u64, String>) -> Result<()> {
    let mut per_site: BTreeMap<&str, usize> = BTreeMap::new();
    for site in voters.values() {
        *per_site.entry(site).or_default() += 1;
    }
    let n = voters.len();
    let (big_site, big) = per_site
        .iter()
        .max_by_key(|(_, c)| **c)
        .map(|(s, c)| (*s, *c))
        .unwrap_or(("", 0));
    if per_site.len() < 3 || 2 * big >= n {
        return Err(Error::InvalidArgument(format!(
            "placement: {n} voters in {} site(s), {big} in site {big_site:?}: losing that site \
             would leave no majority; use at least three sites with no site holding half the \
             voters",
            per_site.len()
        )));
    }
    Ok(())
}

fn placement_ok(voters: &BTreeMap<u64, String>, policy: Placement) -> Result<()> {
    match (check_placement(voters), policy) {
        (Err(e), Placement::Enforce) => Err(e),
        (Err(e), Placement::Warn) => {
            tracing::warn!(error = %e, "unsafe placement accepted (Placement::Warn)");
            Ok(())
        }
        (Ok(()), _) => Ok(()),
    }
}

/// Replaces the voter set after checking the placement of the new voters.
pub(crate) async fn change_membership_checked(
    replica: &Replica,
    voters: BTreeSet<u64>,
    policy: Placement,
) -> Result<()> {
    if voters.len() > crate::limits::MAX_MEMBERS {
        return Err(Error::TooLong {
            what: "membership change voter ids",
            len: voters.len(),
            max: crate::limits::MAX_MEMBERS,
        });
    }
    if let Some(&node_id) = voters.iter().find(|v| replica.is_retired(**v)) {
        return Err(Error::RetiredNode { node_id });
    }
    let members = replica.members();
    let mut sites = BTreeMap::new();
    for v in &voters {
        let info = members.get(v).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "node {v} is not a member; add it as a learner first"
            ))
        })?;
        sites.insert(*v, info.site.clone());
    }
    placement_ok(&sites, policy)?;
    replica.change_membership(voters, false).await
}

struct Inner {
    /// What the node serves; its TCP service shares it.
    core: Arc<core::NodeCore>,
    addr: SocketAddr,
    advertise: String,
    /// The node's TLS configuration (`None`: plaintext).
    tls: Option<Arc<TlsReloader>>,
    /// The storage supervisor (first: stopped before anything else, so that a shutdown is
    /// not taken for a fault), the accept loop (it owns the listener and the connections) and
    /// the metrics watcher; `None` once `shutdown` took them.
    tasks: std::sync::Mutex<Option<[tokio::task::JoinHandle<()>; 4]>>,
}

impl Inner {
    fn take_tasks(&self) -> Option<[tokio::task::JoinHandle<()>; 4]> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(repairer) = self.core.cell.repairer() {
            repairer.stop();
        }
        for t in self.take_tasks().into_iter().flatten() {
            t.abort();
        }
    }
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.core.id)
            .field("addr", &self.inner.addr)
            .finish()
    }
}

impl Node {
    /// Opens (recovering) the data directory, starts Raft and the server, and founds the
    /// cluster when `initial_members` is given and the node is not initialized yet.
    #[tracing::instrument(name = "node_start", skip_all, fields(node = cfg.node_id))]
    pub async fn start(cfg: NodeConfig) -> Result<Node> {
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .map_err(|e| Error::io(format!("<listen {}>", cfg.listen), e))?;
        Self::start_on(cfg, listener).await
    }

    /// Like [`Node::start`] on a listener the caller bound (so that every founding member's
    /// address is known before any starts); `cfg.listen` is ignored.
    pub async fn start_on(cfg: NodeConfig, listener: tokio::net::TcpListener) -> Result<Node> {
        cfg.validate()?;
        let tls = load_security(&cfg)?;
        let mut cfg = cfg;
        // Segment fetches (catch-up, repair) dial as this node.
        cfg.catch_up.fetch.from_node = cfg.node_id;
        cfg.catch_up.fetch.tls = tls.clone();
        let retention = cfg.log.retention_bytes.is_some() || cfg.log.retention_age_ms.is_some();
        if retention && cfg.snapshots.every_entries.is_none() {
            // Retention deletes only below Raft's purged entries, and Raft purges only behind
            // a snapshot: without snapshots it would never delete anything.
            return Err(Error::InvalidArgument(
                "retention on a replicated node needs snapshots (set snapshots.every_entries)"
                    .into(),
            ));
        }
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("<listen>", e))?;
        let advertise = cfg.advertise.clone().unwrap_or_else(|| addr.to_string());
        let connector = TcpConnector {
            cluster_id: cfg.cluster_id,
            from_node: cfg.node_id,
            limits: cfg.net,
            tls: tls.clone(),
        };
        let raft_cfg = openraft_config(
            &format!("{:x}", cfg.cluster_id),
            cfg.timers.to_raft(),
            cfg.snapshots,
        )?;
        // One budget for all of this node's bulk fetches, however many run at once.
        let budget = FetchBudget::new(cfg.catch_up.fetch.max_bytes_per_s);
        let starter = supervisor::Starter {
            cfg: cfg.clone(),
            raft: raft_cfg,
            connector,
            budget: budget.clone(),
        };
        let (replica, repairer) = starter.open().await?;
        let cell = Arc::new(supervisor::ReplicaCell::new(replica, repairer));
        let identity = ServerIdentity {
            node_id: cfg.node_id,
            cluster_id: cfg.cluster_id,
            limits: cfg.net,
            tls: tls.clone(),
        };
        let core = Arc::new(core::NodeCore {
            id: cfg.node_id,
            placement: cfg.placement,
            cell: cell.clone(),
            catch_up: Arc::new(catchup::CatchUpState::new(budget)),
            producers: cfg.producers,
        });
        let service = Arc::new(service::NodeService {
            core: core.clone(),
            site: cfg.site.clone(),
            catch_up: cfg.catch_up.clone(),
            refused: crate::net::warn_rate::WarnRate::new(crate::net::warn_rate::WARN_EVERY),
        });
        let guard = tokio::spawn(supervisor::supervise(cell.clone(), starter));
        let server = tokio::spawn(tcp::serve(listener, identity, service));
        let watcher = tokio::spawn(metrics::watch_replica(cell.clone()));
        let retainer = tokio::spawn(retention::run(cell.clone()));
        let node = Node {
            inner: Arc::new(Inner {
                core,
                addr,
                advertise,
                tls,
                tasks: std::sync::Mutex::new(Some([guard, server, watcher, retainer])),
            }),
        };
        if !cfg.initial_members.is_empty() && !node.replica()?.is_initialized().await? {
            node.found(&cfg.initial_members).await?;
        }
        Ok(node)
    }

    async fn found(&self, members: &BTreeMap<u64, Peer>) -> Result<()> {
        let sites = members
            .iter()
            .map(|(id, p)| (*id, p.site.clone()))
            .collect();
        self.placement_ok(&sites)?;
        let infos = members
            .iter()
            .map(|(id, p)| {
                let info = NodeInfo {
                    site: p.site.clone(),
                    addr: p.addr.clone(),
                };
                (*id, info)
            })
            .collect();
        match self.replica()?.initialize(infos).await {
            // Another founding member initialized first and replicated to us.
            Err(Error::AlreadyInitialized) => Ok(()),
            other => other,
        }
    }

    fn placement_ok(&self, voters: &BTreeMap<u64, String>) -> Result<()> {
        placement_ok(voters, self.inner.core.placement)
    }

    /// The replica when the node serves; [`Error::Unavailable`] while it heals or after it
    /// gave up.
    fn replica(&self) -> Result<Replica> {
        self.inner.core.replica()
    }

    /// The open replica, serving or not (reads of committed records work while consensus is
    /// stopped, as long as the log is open).
    fn open_replica(&self) -> Result<Replica> {
        self.inner.core.open_replica()
    }

    /// Whether this node serves, heals its storage, or gave up (see [`Health`]).
    pub fn health(&self) -> Health {
        self.inner.core.cell.health()
    }

    /// Resolves when this node gave up healing ([`Health::Failed`]), with why: it serves no
    /// more, and the process should exit non-zero so that its supervisor restarts it.
    pub async fn failed(&self) -> String {
        let mut rx = self.inner.core.cell.watch_health();
        loop {
            if let Health::Failed { reason } = &*rx.borrow_and_update() {
                return reason.clone();
            }
            if rx.changed().await.is_err() {
                return "node stopped".into();
            }
        }
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.inner.core.id
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The address peers and clients use.
    pub fn advertise_addr(&self) -> &str {
        &self.inner.advertise
    }

    /// Re-reads the node's certificate, key and CA from its TLS directory (certificate
    /// rotation, e.g. on SIGHUP): new connections, both ways, use the new configuration;
    /// established ones finish with the one they started with. On error (a bad file, a
    /// certificate for another node, expired) the old configuration stays. A plaintext node
    /// has nothing to reload: `Ok`.
    pub fn reload_tls(&self) -> Result<()> {
        match &self.inner.tls {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
    }

    /// Reloads the TLS files when one changed (size or modification time) since the last
    /// (attempted) load: `Ok(true)` when a new configuration was swapped in. Poll it (`sitelog
    /// node` does every 5 s) for rotation without a signal. A failed reload keeps the old
    /// configuration, returns the error, and is not retried until the files change again. A
    /// plaintext node: `Ok(false)`.
    pub fn reload_tls_if_changed(&self) -> Result<bool> {
        match &self.inner.tls {
            Some(tls) => tls.reload_if_changed(),
            None => Ok(false),
        }
    }

    /// Appends payloads; resolves to their offsets once a majority of voters have them
    /// fsynced. On a follower: [`Error::NotLeader`] with the leader's address.
    #[tracing::instrument(name = "node_append", skip_all, fields(node = self.inner.core.id, n = payloads.len()))]
    pub async fn append(&self, payloads: Vec<Bytes>) -> Result<Vec<u64>> {
        self.inner.core.append(payloads).await
    }

    /// Registers an idempotent producer (on the leader; a follower answers
    /// [`Error::NotLeader`]). Registering is a log entry: the id is its offset, and every
    /// replica, a restarted or rebuilt one included, knows the producer.
    pub async fn register_producer(&self) -> Result<ProducerInfo> {
        self.inner.core.register_producer().await
    }

    /// Appends `payloads` as seqs `first_seq..` of `producer`, exactly once: a seq committed
    /// before (by an attempt whose answer was lost, on this leader or an earlier one) resolves
    /// to its original offset and appends nothing. Refusals are typed and append nothing:
    /// [`Error::ProducerExpired`], [`Error::ProducerOutOfOrder`],
    /// [`Error::ProducerSeqBelowWindow`]; on a follower [`Error::NotLeader`]. Resending the
    /// same seqs after any error is safe.
    pub async fn produce(
        &self,
        producer: u64,
        first_seq: u64,
        payloads: Vec<Bytes>,
    ) -> Result<ProduceAck> {
        self.inner.core.produce(producer, first_seq, payloads).await
    }

    /// The committed record at `offset` ([`Error::OutOfRange`] if not committed yet,
    /// [`Error::BelowFloor`] naming the first offset held if retention deleted it). A produced
    /// message reads as a normal record of its message.
    pub fn read(&self, offset: u64) -> Result<Record> {
        self.inner.core.read(offset)
    }

    /// Counters of the background scrub and of repairs from peers on this node.
    /// (Counted since the node's replica last opened: healing in place starts them again.)
    pub fn repair_stats(&self) -> repair::RepairStats {
        self.inner
            .core
            .cell
            .repairer()
            .map(|r| r.stats())
            .unwrap_or_default()
    }

    /// One past the highest committed offset on this node.
    pub fn commit_end(&self) -> u64 {
        self.inner.core.cell.commit_end()
    }

    /// Committed records from `from`, in order, waiting for new ones: a [`Stream`] (use
    /// `futures_util::StreamExt::next`). Raft's own entries (blank and membership) and
    /// producer registrations are included as records of their kind; most readers skip them.
    /// A produced message comes as a normal record of its message. A subscription that asks
    /// for, or falls below, the first offset held (retention deleted it) gets
    /// [`Error::BelowFloor`] naming it, never a silent skip; see [`Subscription`] for when the
    /// stream ends.
    pub fn subscribe(&self, from: u64) -> Subscription {
        Subscription {
            position: from,
            state: SubState::Idle(Cursor {
                node: self.clone(),
                next: from,
                committed: None,
            }),
        }
    }

    /// Role, term, leader, commit and log ends, per-follower lag (on the leader), and the
    /// progress of a catch-up by snapshot.
    pub fn status(&self) -> NodeStatus {
        self.inner.core.status()
    }

    /// Attaches the application's state as of committed `offset` (for example a
    /// materialized view of the messages up to it). It is stored durably, zstd-compressed,
    /// and shipped with this node's next snapshot: a replica rebuilt from that snapshot gets
    /// it through [`Node::app_state`] and replays only the records after `offset`.
    pub fn attach_app_state(&self, offset: u64, state: &[u8]) -> Result<()> {
        self.replica()?.attach_app_state(offset, state)
    }

    /// The application state attached on this node or received with a snapshot, as
    /// `(offset, state)`.
    pub fn app_state(&self) -> Result<Option<(u64, Bytes)>> {
        self.open_replica()?.app_state()
    }

    /// Progress of the current or last catch-up by snapshot: (bytes in place, bytes to have,
    /// seconds since it started).
    pub fn catch_up_progress(&self) -> (u64, u64, f64) {
        self.inner.core.catch_up_progress()
    }

    /// Waits until `f(status)` holds, up to `timeout_ms`.
    pub async fn wait_for(
        &self,
        timeout_ms: u64,
        f: impl Fn(&NodeStatus) -> bool,
    ) -> Result<NodeStatus> {
        // The consensus layer's status is converted on each poll: a few small vectors, only
        // when its metrics or the commit end change.
        let r = self.replica()?;
        let s = r
            .wait_for(timeout_ms, |s| f(&NodeStatus::from(s.clone())))
            .await?;
        Ok(s.into())
    }

    /// Adds a learner (on the leader): a non-voting replica that starts catching up. An id
    /// removed from the membership earlier is refused with [`Error::RetiredNode`].
    pub async fn add_learner(&self, id: u64, peer: Peer) -> Result<()> {
        self.inner.core.add_learner(id, peer).await
    }

    /// Replaces the voter set (on the leader; joint consensus). Placement is checked; voters
    /// dropped from the set are removed for good (their ids are retired).
    pub async fn change_membership(&self, voters: BTreeSet<u64>) -> Result<()> {
        self.inner.core.change_membership(voters).await
    }

    /// Swaps voter `dead` for the member `new` (on the leader; `new` must have been added as
    /// a learner): the voter set less `dead`, plus `new`, placement checked. `dead` is removed
    /// for good (its id is retired). `dead == new` is refused with [`Error::InvalidArgument`]:
    /// a replacement node needs a new id.
    pub async fn replace_voter(&self, dead: u64, new: u64) -> Result<()> {
        self.inner.core.replace_voter(dead, new).await
    }

    /// Node ids removed from the membership; they never join again. ([`Error::Unavailable`]
    /// while the node reopens its storage.)
    pub fn retired_ids(&self) -> Result<BTreeSet<u64>> {
        Ok(self.open_replica()?.retired_ids())
    }

    /// Stops Raft and the server. The data directory stays consistent (what was
    /// acknowledged is on disk, and the log's durable watermark is persisted up to it, see
    /// `Replica::shutdown`); the listening address is closed and the data directory unlocked
    /// when this returns.
    pub async fn shutdown(self) -> Result<()> {
        for t in self.inner.take_tasks().into_iter().flatten() {
            t.abort();
            // Awaited, so the listener is closed when this returns: the address can be bound
            // again at once (abort alone drops the task later, on the runtime's schedule).
            // The only error is the cancellation asked for, or a panic already reported.
            let _ = t.await;
        }
        self.inner.core.cell.set_health(Health::Stopped);
        let Some(r) = self.inner.core.cell.take() else {
            return Ok(());
        };
        let stopped = r.shutdown().await;
        // The data directory is unlocked when this returns (a restart may follow at once).
        supervisor::release(r).await;
        stopped
    }
}

/// Committed records in order (see [`Node::subscribe`]): a [`Stream`] of
/// `Result<Record>`.
///
/// End-of-stream rule: the stream ends (yields `None`) only after a *terminal* error, which it
/// yields once: [`Error::BelowFloor`] (the position was deleted by retention and never becomes
/// readable again: subscribe anew at `first_available`), [`Error::Shutdown`] (the node
/// stopped) or [`Error::Unavailable`] (it gave up healing). Any other error (a read of a damaged record that the node's repair may fix) is
/// yielded with the position unchanged: polling again retries that record. While the node heals
/// its storage the stream waits and then follows the node's new replica.
pub struct Subscription {
    /// The offset of the next record the stream yields.
    position: u64,
    state: SubState,
}

/// The work of one `poll_next`: the cursor moves into the pending future and comes back with
/// its outcome, so no state is shared between the struct and the future.
type StepFuture = Pin<Box<dyn Future<Output = (Cursor, Step)> + Send>>;

enum SubState {
    Idle(Cursor),
    Pending(StepFuture),
    Ended,
}

/// What one step of a subscription produced.
enum Step {
    Record(Record),
    /// The record could not be read; the position is unchanged.
    Retry(Error),
    /// Nothing more will come.
    End(Error),
}

/// Where a subscription stands on the node.
struct Cursor {
    node: Node,
    next: u64,
    /// The committed end of the node's current replica; `None` until first needed and again
    /// after the replica was replaced (the node healed its storage).
    committed: Option<watch::Receiver<u64>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            SubState::Idle(_) => "idle",
            SubState::Pending(_) => "waiting",
            SubState::Ended => "ended",
        };
        f.debug_struct("Subscription")
            .field("position", &self.position)
            .field("state", &state)
            .finish()
    }
}

impl Subscription {
    /// The offset of the next record the stream yields.
    pub fn position(&self) -> u64 {
        self.position
    }
}

impl Stream for Subscription {
    type Item = Result<Record>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Record>>> {
        let this = &mut *self;
        let mut fut = match std::mem::replace(&mut this.state, SubState::Ended) {
            SubState::Ended => return Poll::Ready(None),
            SubState::Idle(cursor) => Box::pin(cursor.step()),
            SubState::Pending(fut) => fut,
        };
        let Poll::Ready((cursor, step)) = fut.as_mut().poll(cx) else {
            this.state = SubState::Pending(fut);
            return Poll::Pending;
        };
        let item = match step {
            Step::Record(rec) => {
                debug_assert_eq!(rec.offset, this.position, "records come in order");
                this.position = cursor.next;
                this.state = SubState::Idle(cursor);
                Ok(rec)
            }
            Step::Retry(e) => {
                this.state = SubState::Idle(cursor);
                Err(e)
            }
            // The state stays `Ended`.
            Step::End(e) => Err(e),
        };
        Poll::Ready(Some(item))
    }
}

impl Cursor {
    /// The next committed record, waiting for it to be committed (no polling: it sleeps on the
    /// replica's committed-end watch).
    async fn step(mut self) -> (Cursor, Step) {
        let step = self.next_step().await;
        (self, step)
    }

    async fn next_step(&mut self) -> Step {
        loop {
            // Whether the watch was taken from the node's current replica in this step.
            let mut fresh = false;
            let committed = match &mut self.committed {
                Some(c) => c,
                None => match self.attach().await {
                    Ok(r) => {
                        fresh = true;
                        self.committed.insert(r)
                    }
                    Err(e) => return Step::End(e),
                },
            };
            if self.next < *committed.borrow_and_update() {
                return match self.node.read(self.next) {
                    Ok(rec) => {
                        self.next += 1;
                        Step::Record(rec)
                    }
                    Err(e @ Error::BelowFloor { .. }) => Step::End(e),
                    // The watch is a replaced replica's (the node healed or is reopening its
                    // storage): follow the node to its current one, once per step.
                    Err(Error::OutOfRange { .. } | Error::Unavailable { .. }) if !fresh => {
                        self.committed = None;
                        continue;
                    }
                    Err(e) => Step::Retry(e),
                };
            }
            if committed.changed().await.is_err() {
                // That replica stopped: follow the node to its next one.
                self.committed = None;
            }
        }
    }

    /// The committed-end watch of the node's replica, waiting while the node heals.
    async fn attach(&self) -> Result<watch::Receiver<u64>> {
        let mut health = self.node.inner.core.cell.watch_health();
        loop {
            match &*health.borrow_and_update() {
                Health::Failed { reason } => {
                    return Err(Error::Unavailable {
                        reason: reason.clone(),
                    })
                }
                Health::Stopped => return Err(Error::Shutdown),
                Health::Serving | Health::Healing { .. } => {}
            }
            if let Some(r) = self.node.inner.core.cell.get() {
                if r.fatal().is_none() {
                    return Ok(r.committed_end.clone());
                }
            }
            if health.changed().await.is_err() {
                return Err(Error::Shutdown);
            }
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod config_tests;

/// The node's TLS configuration, loaded once at start: a bad directory, a certificate of
/// another node or an expired one refuses the start ([`Error::Tls`]). Plaintext is warned of.
fn load_security(cfg: &NodeConfig) -> Result<Option<Arc<TlsReloader>>> {
    match &cfg.security {
        Security::Insecure => {
            tracing::warn!(
                node = cfg.node_id,
                "plaintext: no TLS on this node's port or its connections; anyone who knows \
                 the cluster id can act as any node or as an admin client"
            );
            Ok(None)
        }
        Security::Tls(dir) => {
            let tls = TlsReloader::load(dir.clone(), Who::Node(cfg.node_id))?;
            Ok(Some(Arc::new(tls)))
        }
    }
}
