//! One Raft replica: the segment log, the metadata file, the state machine and openraft,
//! opened together from a data directory.
//!
//! Data directory layout: `identity` (whose directory it is, see [`super::identity`]),
//! `log/` (the segment log, see `storage`) and `raft_meta` (see [`super::meta`]).

use super::errors;
use super::log_store::LogStore;
use super::meta::MetaFile;
use super::remote::{MessageRx, MessageTx};
use super::state_machine::StateMachine;
use super::{AppData, NodeInfo, Raft, TypeConfig, Vote};
use crate::io::IoRef;
use crate::storage::{Log, LogOptions};
use crate::{Error, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use openraft::{Config, RaftNetworkFactory, SnapshotPolicy};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

/// Raft timers. Defaults are for a LAN (or one machine); [`RaftTimers::wan`] gives settings
/// for sites a few tens of milliseconds apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTimers {
    /// A leader sends heartbeats this often. Default 50 ms.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in
    /// `[election_timeout_min_ms, election_timeout_max_ms)` starts an election (after a
    /// pre-vote). Defaults 150 and 300 ms.
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms`.
    pub election_timeout_max_ms: u64,
}

impl Default for RaftTimers {
    fn default() -> Self {
        RaftTimers {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
        }
    }
}

/// Most entries the consensus library puts in one replication message.
pub const MAX_PAYLOAD_ENTRIES: u64 = 64;

/// When snapshots are taken and how much log stays behind them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotSettings {
    /// Take a snapshot (a manifest of sealed segments) every this many applied entries;
    /// `None`: never (the Raft log is then never purged, and every replica catches up entry
    /// by entry). Default `Some(100_000)`.
    pub every_entries: Option<u64>,
    /// Entries kept for Raft behind a snapshot, so that a briefly lagging replica catches up
    /// by replication instead of a snapshot. Default 10 000.
    pub keep_entries: u64,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings {
            every_entries: Some(100_000),
            keep_entries: 10_000,
        }
    }
}

/// openraft's configuration (built by [`openraft_config`]).
pub type RaftConfig = Config;

/// Builds openraft's configuration: pre-vote on (a node cut off from the leader cannot
/// disrupt the cluster when it comes back), manifest snapshots as `snapshots` says.
pub fn openraft_config(
    cluster_name: &str,
    timers: RaftTimers,
    snapshots: SnapshotSettings,
) -> Result<Arc<Config>> {
    let cfg = Config {
        cluster_name: cluster_name.to_string(),
        heartbeat_interval: timers.heartbeat_interval_ms,
        election_timeout_min: timers.election_timeout_min_ms,
        election_timeout_max: timers.election_timeout_max_ms,
        enable_pre_vote: Some(true),
        // A restarted leader must win a new election (standard Raft), never resume its old
        // term. openraft's default resumes it, which is unsafe here: a leader sends entries
        // before its own fdatasync covers them, so a power loss (or an fdatasync that fails
        // and drops the dirty pages) can leave its log without entries its followers hold.
        // Resuming the same term, it proposed new entries at those very (term, index) ids, and
        // followers kept their old entries under the same ids: an acknowledged record was then
        // missing from the majority's log. Found by the cluster simulation (seed 1001).
        enable_leader_restore: Some(false),
        // Bounds one replication message: 64 entries of at most 1 MiB (the node's record
        // limit) fit the transport's frame limit.
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        snapshot_policy: match snapshots.every_entries {
            Some(n) => SnapshotPolicy::LogsSinceLast(n),
            None => SnapshotPolicy::Never,
        },
        max_in_snapshot_log_to_keep: snapshots.keep_entries,
        ..Default::default()
    };
    let cfg = cfg
        .validate()
        .map_err(|e| Error::InvalidArgument(format!("raft configuration: {e}")))?;
    Ok(Arc::new(cfg))
}

/// The options a replica's log is opened with: `opts` with the cluster id as the log's identity
/// and no node-local durability hint in any frame, so that every replica's frames are the same
/// bytes (see `LogOptions::durable_hints`).
pub fn replica_log_options(cluster_id: u64, opts: LogOptions) -> LogOptions {
    LogOptions {
        log_id: Some(cluster_id),
        durable_hints: false,
        ..opts
    }
}

/// An open replica.
#[derive(Clone)]
pub struct Replica {
    /// The consensus library's handle: crate-private, so that no openraft type is part of
    /// the API (the node layer goes through `Replica`'s methods).
    pub(crate) raft: Raft,
    /// The Raft log (the segment log).
    pub store: LogStore,
    /// Follows the committed end (one past the highest applied offset).
    pub committed_end: watch::Receiver<u64>,
    /// The node's data directory.
    pub dir: std::path::PathBuf,
    /// The I/O backend of the node's files.
    pub io: IoRef,
    /// The cluster id (the lineage snapshots must carry).
    pub cluster_id: u64,
    sm: std::sync::Arc<super::state_machine::SmShared>,
    /// The idempotent producers' proposer lock and the leader's prediction (issue 17).
    proposer: produce::Proposer,
}

#[path = "replica_produce.rs"]
mod produce;
// The clock, `Produced` and the gap wait are for the simulation and the raft-level tests
// (the `testing` feature); the node uses the rest.
#[cfg_attr(not(feature = "testing"), allow(unused_imports))]
pub use produce::{ProducerClock, ProducerInfo, ProducerSettings, Produced, PRODUCE_GAP_WAIT_MS};

/// A snapshot the leader offers: a manifest whose segments the receiver must stage (fetch,
/// or link the ones it holds) before [`Replica::install_snapshot`].
pub struct IncomingSnapshot {
    vote: Vote,
    snapshot: super::snapshot::Snapshot,
}

impl IncomingSnapshot {
    /// The cluster the snapshot belongs to.
    pub fn lineage(&self) -> u64 {
        self.snapshot.snapshot.lineage
    }

    /// The sealed segments to have, oldest first.
    pub fn segments(&self) -> &[crate::storage::SegmentInfo] {
        &self.snapshot.snapshot.segments
    }

    /// The leader that sent it.
    pub fn leader(&self) -> u64 {
        self.vote.leader_id.voted_for
    }

    /// The members (voters and learners) as of the snapshot, with sites and addresses.
    pub fn members(&self) -> Vec<(u64, NodeInfo)> {
        self.snapshot
            .meta
            .last_membership
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }

    /// Checks that the offer comes from the leader it names: the node `from` on the other
    /// end of the connection (over TLS, the node its certificate names). The reason is the
    /// error reply's text.
    pub fn check_sender(&self, from: u64) -> std::result::Result<(), String> {
        match self.leader() {
            claimed if claimed != from => {
                Err(super::remote::speaks_for_another("snapshot", from, claimed))
            }
            _ => Ok(()),
        }
    }

    /// The nodes the offer's segments may be fetched from, with sites and addresses: every
    /// node the offered membership names except `me`. Each must be a voter or learner of
    /// that membership and not retired, neither in the offer's own retired set nor in
    /// `retired` (the receiver's): a retired id never comes back, so an offer naming one is
    /// damaged or forged, and its address may now be anyone's. Refused whole
    /// ([`Error::UntrustedSnapshot`]) otherwise: nothing is fetched from a node the cluster
    /// does not hold.
    pub fn sources(&self, me: u64, retired: &BTreeSet<u64>) -> Result<Vec<(u64, NodeInfo)>> {
        let membership = self.snapshot.meta.last_membership.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let learners: BTreeSet<u64> = membership.learner_ids().collect();
        let offered_retired = &self.snapshot.snapshot.retired;
        let mut out = Vec::new();
        for (id, node) in self.members() {
            let refuse = |reason: &str| Error::UntrustedSnapshot {
                node_id: id,
                reason: reason.to_string(),
            };
            if !voters.contains(&id) && !learners.contains(&id) {
                return Err(refuse("which is no voter or learner of the offered membership"));
            }
            if offered_retired.contains(&id) {
                return Err(refuse("which the offer itself lists as retired"));
            }
            if retired.contains(&id) {
                return Err(refuse("which this node knows as retired"));
            }
            if id != me {
                out.push((id, node));
            }
        }
        Ok(out)
    }
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("store", &self.store)
            .finish()
    }
}

impl Replica {
    /// The consensus library's handle, for the consensus layer's own tests
    /// (`tests/raft_cluster.rs`, the simulation) only: hidden, not part of the API.
    #[doc(hidden)]
    #[cfg(any(test, feature = "testing"))]
    pub fn raft_handle(&self) -> &Raft {
        &self.raft
    }

    /// Opens (recovering) or creates the replica in `dir` and starts openraft.
    pub async fn start<N>(
        id: u64,
        dir: &Path,
        cluster_id: u64,
        log_opts: LogOptions,
        config: Arc<Config>,
        network: N,
    ) -> Result<Replica>
    where
        N: RaftNetworkFactory<TypeConfig>,
        N::Network: openraft::network::NetSnapshot<
            TypeConfig,
            SnapshotData = super::snapshot::SegmentManifest,
        >,
    {
        if cluster_id == 0 {
            return Err(Error::InvalidArgument("cluster id 0 is reserved".into()));
        }
        let log_opts = replica_log_options(cluster_id, log_opts);
        let io: IoRef = log_opts.io.resolve(log_opts.direct_io)?;
        io.create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        // Before anything else: a directory of another node or cluster is refused untouched.
        super::identity::establish(&io, dir, id, cluster_id)?;
        let meta = MetaFile::open(&io, dir, cluster_id)?;
        let log = Log::open(dir.join("log"), log_opts)?;
        // Again under the log's lock: two processes creating one directory at once cannot
        // both go on, the one whose identity file lost the race is refused here.
        if let Some(found) = super::identity::load(&io, dir)? {
            super::identity::check(dir, &found, id, cluster_id)?;
        }
        let store = LogStore::new(log, meta);
        let (sm, committed_end, sm_shared) =
            StateMachine::new(store.clone(), io.clone(), dir, cluster_id)?;
        // Boxed: openraft's start-up future is large, and unboxed it would sit on the caller's
        // stack (a debug build overflowed the main thread's stack with it).
        let raft = Box::pin(Raft::new(id, config, network, store.clone(), sm))
            .await
            .map_err(|e| errors::fatal(&e))?;
        Ok(Replica {
            raft,
            store,
            committed_end,
            dir: dir.to_path_buf(),
            io,
            cluster_id,
            sm: sm_shared,
            proposer: produce::Proposer::default(),
        })
    }
}

/// A node's role, as sitelog reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepts writes.
    Leader,
    /// Replicates from the leader and votes.
    Follower,
    /// Asking for votes.
    Candidate,
    /// Replicates but does not vote.
    Learner,
    /// Stopped.
    Shutdown,
}

/// How far one follower has replicated (known on the leader only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower's node id.
    pub node_id: u64,
    /// One past the highest offset it holds matching the leader, if known.
    pub matched_end: Option<u64>,
    /// Entries it is behind the leader's last entry.
    pub lag_entries: u64,
}

/// A snapshot of a replica's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// This node.
    pub node_id: u64,
    /// Its role.
    pub role: Role,
    /// The current term.
    pub term: u64,
    /// The leader it knows, if any.
    pub leader: Option<u64>,
    /// One past the highest committed (and applied) offset on this node.
    pub commit_end: u64,
    /// One past the last offset in its log.
    pub log_end: u64,
    /// Voter ids of the effective membership.
    pub voters: Vec<u64>,
    /// Learner ids of the effective membership.
    pub learners: Vec<u64>,
    /// Per follower (leader only).
    pub followers: Vec<FollowerProgress>,
    /// Catch-up by snapshot on this node: (bytes of segments in place, bytes to have); (0, 0)
    /// when there was none. Filled in by the node layer.
    pub catch_up_bytes: (u64, u64),
}

impl Replica {
    /// Whether this replica's log has a membership (it was initialized or joined).
    pub async fn is_initialized(&self) -> Result<bool> {
        self.raft
            .is_initialized()
            .await
            .map_err(|e| errors::fatal(&e))
    }

    /// Makes `members` the first membership of a new cluster (all of them voters). Calling it
    /// on every initial member with the same set is safe; it fails on an initialized node.
    pub async fn initialize(&self, members: BTreeMap<u64, NodeInfo>) -> Result<()> {
        for n in members.values() {
            super::entry::check_node_info(n)?;
        }
        self.raft
            .initialize(members)
            .await
            .map_err(|e| errors::raft(e, errors::initialize))
    }

    #[tracing::instrument(name = "raft_append", skip_all, fields(n = payloads.len()))]
    /// Appends payloads through Raft; resolves to their offsets once a majority of voters
    /// have them fsynced (and this leader applied them). On a follower: [`Error::NotLeader`].
    pub async fn append(&self, payloads: Vec<Bytes>) -> Result<Vec<u64>> {
        let n = payloads.len();
        let mut results = self
            .raft
            .client_write_many(payloads.into_iter().map(AppData::normal))
            .await
            .map_err(|e| errors::fatal(&e))?;
        let mut offsets = Vec::with_capacity(n);
        while let Some(r) = results.next().await {
            match r.map_err(|e| errors::fatal(&e))? {
                Ok(w) => offsets.push(w.response.offset),
                Err(e) => return Err(errors::client_write(e)),
            }
        }
        if offsets.len() != n {
            // The unanswered writes were handed to consensus and may still commit.
            return Err(Error::OutcomeUnknown {
                reason: format!("{} of {n} writes answered", offsets.len()),
            });
        }
        Ok(offsets)
    }

    /// Node ids removed from the membership: they never join again. Known on every node
    /// from the committed memberships (and from the snapshot it was rebuilt from).
    pub fn retired_ids(&self) -> BTreeSet<u64> {
        self.sm.applied_ids().0
    }

    /// Whether `id` is retired, or is being removed by a membership change not applied yet
    /// (the effective membership dropped it): adding it back is refused either way.
    pub fn is_retired(&self, id: u64) -> bool {
        let (retired, applied) = self.sm.applied_ids();
        retired.contains(&id) || (applied.contains(&id) && !self.members().contains_key(&id))
    }

    /// [`Error::RetiredNode`] for the first retired id of `ids`.
    fn refuse_retired(&self, ids: impl IntoIterator<Item = u64>) -> Result<()> {
        match ids.into_iter().find(|id| self.is_retired(*id)) {
            Some(node_id) => Err(Error::RetiredNode { node_id }),
            None => Ok(()),
        }
    }

    /// Adds a non-voting member and starts replicating to it (returns once the change is
    /// committed, not when the learner has caught up). A retired id is refused with
    /// [`Error::RetiredNode`] (on any node, leader or not), a current voter's id with
    /// [`Error::InvalidArgument`].
    pub async fn add_learner(&self, id: u64, node: NodeInfo) -> Result<()> {
        super::entry::check_node_info(&node)?;
        self.refuse_retired([id])?;
        // openraft accepts it as a no-op, and a replacement started empty under the voter's
        // own id would then be taken for that voter, its lost votes and log included.
        if self.status().voters.contains(&id) {
            return Err(Error::InvalidArgument(format!(
                "node {id} is a voter already; a replacement node needs a new id"
            )));
        }
        self.raft
            .add_learner(id, node, false)
            .await
            .map_err(|e| errors::raft(e, errors::client_write))?;
        Ok(())
    }

    /// Replaces the voter set (joint consensus); removed voters stay as learners when
    /// `retain`. A set naming a retired id is refused with [`Error::RetiredNode`].
    pub async fn change_membership(&self, voters: BTreeSet<u64>, retain: bool) -> Result<()> {
        self.refuse_retired(voters.iter().copied())?;
        self.raft
            .change_membership(voters, retain)
            .await
            .map_err(|e| errors::raft(e, errors::client_write))?;
        Ok(())
    }

    /// The membership's nodes (voters and learners) with their sites and addresses.
    pub fn members(&self) -> BTreeMap<u64, NodeInfo> {
        let m = self.raft.metrics().borrow_watched().clone();
        m.membership_config
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }

    /// Why openraft stopped, if it stopped on a fatal error (a storage failure, a panic).
    pub fn fatal(&self) -> Option<String> {
        let m = self.raft.metrics();
        let state = m.borrow_watched();
        state.running_state.as_ref().err().map(|e| e.to_string())
    }

    /// The storage fault that stopped consensus, if one did (see [`super::health`]).
    pub fn fault(&self) -> Option<(super::health::Fault, String)> {
        self.store.fault()
    }

    /// Resolves once openraft has stopped (on a fatal error, or a shutdown), with why.
    pub async fn stopped(&self) -> String {
        let mut rx = self.raft.metrics();
        loop {
            if let Some(why) = self.fatal() {
                return why;
            }
            if rx.changed().await.is_err() {
                return "consensus stopped".into();
            }
        }
    }

    /// The current state.
    pub fn status(&self) -> ReplicaStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let log_end = m.last_log_index.map_or(0, |i| i + 1);
        let role = match m.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        };
        let membership = m.membership_config.membership();
        let followers = m
            .replication
            .iter()
            .flatten()
            .filter(|(id, _)| **id != m.id)
            .map(|(id, matched)| {
                let matched_end = matched.map(|l| l.index + 1);
                FollowerProgress {
                    node_id: *id,
                    matched_end,
                    lag_entries: log_end.saturating_sub(matched_end.unwrap_or(0)),
                }
            })
            .collect();
        ReplicaStatus {
            node_id: m.id,
            role,
            term: m.current_term,
            leader: m.current_leader,
            commit_end: *self.committed_end.borrow(),
            log_end,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            followers,
            catch_up_bytes: (0, 0),
        }
    }

    /// Waits until `f(status)` holds or `timeout_ms` passes; returns the last status seen.
    pub async fn wait_for(
        &self,
        timeout_ms: u64,
        f: impl Fn(&ReplicaStatus) -> bool,
    ) -> Result<ReplicaStatus> {
        let mut rx = self.raft.metrics();
        let mut committed = self.committed_end.clone();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
        loop {
            let s = self.status();
            if f(&s) {
                return Ok(s);
            }
            // Biased: a fixed polling order keeps simulated runs replayable.
            tokio::select! {
                biased;
                // A closed watch: openraft (or the state machine) stopped.
                r = rx.changed() => r.map_err(|_| Error::Shutdown)?,
                r = committed.changed() => r.map_err(|_| Error::Shutdown)?,
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Error::Timeout { offset: s.commit_end });
                }
            }
        }
    }

    /// Attaches the application's state as of `offset` (every record up to it reflected):
    /// stored durably, zstd-compressed, and shipped with the next snapshot, so that a new
    /// replica's application starts from it instead of replaying the whole log.
    pub fn attach_app_state(&self, offset: u64, state: &[u8]) -> Result<()> {
        let commit_end = *self.committed_end.borrow();
        if offset >= commit_end {
            return Err(Error::InvalidArgument(format!(
                "state at offset {offset} is not committed yet (commit end {commit_end})"
            )));
        }
        let a = super::snapshot::AppState::compress(offset, state)?;
        super::snapshot::save_app_state(&self.io, &self.dir, &a)?;
        *self.sm.app_state() = Some(a);
        self.sm.refresh_floor_pin();
        Ok(())
    }

    /// Whether retention waits for a new snapshot: a snapshot built now would list fewer
    /// segments than the current one (which pins its first), because the retention cut moved
    /// past it. The node then asks openraft for one, which the state machine builds even when
    /// no entry was applied since (an idle log's age retention needs this). Reads nothing from
    /// disk: cheap enough for every tick.
    pub fn retention_wants_snapshot(&self) -> bool {
        let Some(first) = self.sm.snapshot_first() else {
            return false;
        };
        let log = self.store.log();
        let Some(cut) = log.retention_cut() else {
            return false;
        };
        let applied_end = *self.committed_end.borrow();
        let last_sealed = log
            .sealed_geometry()
            .iter()
            .rev()
            .find(|g| g.end_offset <= applied_end)
            .map(|g| g.base_offset);
        let app_needs = self
            .sm
            .app_state()
            .as_ref()
            .map(|a| a.offset.saturating_add(1));
        let planned = [Some(cut), app_needs, last_sealed]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(0);
        last_sealed.is_some() && planned > first
    }

    /// The application state attached here or received with a snapshot: (offset, state).
    pub fn app_state(&self) -> Result<Option<(u64, Bytes)>> {
        let a = self.sm.app_state().clone();
        a.map(|a| Ok((a.offset, a.decompress()?))).transpose()
    }

    /// Decodes a snapshot offer received by the transport.
    pub fn decode_snapshot(msg: &[u8]) -> Result<IncomingSnapshot> {
        let (vote, snapshot) =
            super::wire::decode_snapshot(msg).map_err(|e| Error::Protocol(e.to_string()))?;
        Ok(IncomingSnapshot { vote, snapshot })
    }

    /// Where a fetched copy of the segment at `base` is staged.
    pub fn staged_path(&self, base: u64) -> std::path::PathBuf {
        super::state_machine::staged_path(&self.dir, base)
    }

    /// The path of this node's own copy of a sealed segment, if it holds exactly that one.
    pub fn held_segment_path(
        &self,
        info: &crate::storage::SegmentInfo,
    ) -> Option<std::path::PathBuf> {
        let log = self.store.log();
        log.sealed_segment_file(info)
            .map(|_| crate::storage::segment::Segment::path_in(log.dir(), info.base_offset))
    }

    /// Installs a snapshot whose segments are all staged; returns the reply for the leader.
    pub async fn install_snapshot(&self, s: IncomingSnapshot) -> Bytes {
        match self.raft.install_full_snapshot(s.vote, s.snapshot).await {
            Ok(resp) => super::wire::encode_snapshot_resp(&resp.vote),
            Err(e) => super::wire::encode_error(&format!("snapshot install failed: {e}")),
        }
    }

    /// Answers one Raft RPC received by the transport. A vote or pre-vote asked by a retired
    /// node is refused (an error reply): a removed node that did not learn of its removal
    /// cannot disturb the cluster with elections.
    /// `from`: the calling node (checked against its certificate over TLS); a message that
    /// speaks for another node is refused.
    pub async fn handle_rpc(&self, from: u64, msg: Bytes) -> Bytes {
        // Only committed retirements: an uncommitted removal may still be undone.
        let retired = |id| self.retired_ids().contains(&id);
        super::remote::handle_rpc(&self.raft, from, msg, retired).await
    }

    /// Serves one append stream received by the transport.
    pub async fn serve_append_stream<Tx: MessageTx, Rx: MessageRx>(
        &self,
        from: u64,
        tx: Tx,
        rx: Rx,
    ) -> Result<()> {
        super::remote::serve_append_stream(self.raft.clone(), from, tx, rx).await
    }

    /// Stops openraft, then persists the log's durable watermark
    /// ([`Log::persist_watermark`]): after a clean stop no acknowledged entry lies above it,
    /// so damage to one is refused as corruption at the next open, never cut as a torn tail.
    /// The active segment is not sealed (replicas must seal at the same frame). A log whose
    /// storage already failed (poisoned) cannot write the watermark: that is said in the node's
    /// log and the stop goes on, as a crash would have left it.
    pub async fn shutdown(&self) -> Result<()> {
        let stopped = self.raft.shutdown().await.map_err(|e| Error::Fatal {
            reason: format!("stopping consensus: {e}"),
        });
        let committed = match self.store.log().poisoned() {
            Some(_) => Ok(()),
            None => self.store.persist_committed(),
        };
        let log = self.store.log().clone();
        let persisted = tokio::task::spawn_blocking(move || match log.poisoned() {
            Some(reason) => {
                tracing::warn!(dir = %log.dir().display(), %reason,
                    "storage failed earlier; the watermark is not persisted at stop");
                Ok(())
            }
            None => log.persist_watermark(),
        })
        .await
        .map_err(|e| Error::TaskFailed {
            task: "persisting the watermark at stop",
            reason: e.to_string(),
        })?;
        stopped.and(persisted).and(committed)
    }
}

#[cfg(test)]
mod incoming_tests {
    use super::*;
    use crate::raft::snapshot::{SegmentManifest, Snapshot, SnapshotMeta};
    use crate::raft::{log_id, Membership, StoredMembership};

    /// An offer from leader 1 of voters {1, 2, 3} and learner 4, retiring `offered_retired`.
    fn offer(offered_retired: &[u64]) -> IncomingSnapshot {
        let nodes: BTreeMap<u64, NodeInfo> = (1..=4)
            .map(|i| {
                let n = NodeInfo {
                    site: format!("site-{i}"),
                    addr: format!("h{i}:1"),
                };
                (i, n)
            })
            .collect();
        let m = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes).unwrap();
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(2, 9)),
            last_membership: StoredMembership::new(Some(log_id(2, 5)), m),
        };
        let manifest = SegmentManifest {
            lineage: 7,
            segments: Vec::new(),
            segment_terms: Vec::new(),
            app_state: None,
            retired: offered_retired.iter().copied().collect(),
            producers: None,
        };
        IncomingSnapshot {
            vote: Vote::new_committed(2, 1),
            snapshot: Snapshot {
                meta,
                snapshot: manifest,
            },
        }
    }

    fn ids(v: &[(u64, NodeInfo)]) -> Vec<u64> {
        v.iter().map(|(id, _)| *id).collect()
    }

    #[test]
    fn sources_are_the_offered_voters_and_learners_but_me() {
        let s = offer(&[]);
        let got = s.sources(2, &BTreeSet::from([9])).unwrap();
        assert_eq!(ids(&got), vec![1, 3, 4], "the learner is a source, this node is not");
        assert_eq!(got[2].1.addr, "h4:1");
        assert!(s.check_sender(1).is_ok());
        let forged = s.check_sender(3).unwrap_err();
        assert!(forged.contains("node 3"), "{forged}");
    }

    #[test]
    fn an_offer_naming_a_retired_node_is_refused() {
        // The receiver knows node 3 as retired: the offer still names it (forged, or damaged).
        match offer(&[]).sources(2, &BTreeSet::from([3])) {
            Err(Error::UntrustedSnapshot { node_id: 3, .. }) => {}
            other => panic!("a retired source was trusted: {other:?}"),
        }
        // The offer lists node 4 as retired and as a learner at once.
        match offer(&[4]).sources(2, &BTreeSet::new()) {
            Err(Error::UntrustedSnapshot { node_id: 4, .. }) => {}
            other => panic!("a self-contradicting offer was trusted: {other:?}"),
        }
        // Retired ids the offer does not name are no reason to refuse it.
        assert!(offer(&[7]).sources(2, &BTreeSet::from([8])).is_ok());
    }
}
