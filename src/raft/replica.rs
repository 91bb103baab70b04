//! One Raft replica: the segment log, the metadata file, the state machine and openraft,
//! opened together from a data directory.
//!
//! Data directory layout: `log/` (the segment log, see `storage`) and `raft_meta` (see
//! [`super::meta`]).

use super::log_store::LogStore;
use super::meta::MetaFile;
use super::state_machine::StateMachine;
use super::{Raft, TypeConfig};
use crate::io::IoRef;
use crate::storage::{Log, LogOptions};
use crate::{Error, Result};
use openraft::{Config, RaftNetworkFactory, SnapshotPolicy};
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

impl RaftTimers {
    /// Settings for sites up to ~50 ms round trip apart: elections after 1–2 s of silence
    /// (about 20–40 round trips, so a slow link does not cause needless elections), heartbeats
    /// every 100 ms. Expect a failover of about 1.5–3 s.
    pub fn wan() -> Self {
        RaftTimers {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
        }
    }
}

/// Builds openraft's configuration: pre-vote on (a node cut off from the leader cannot
/// disrupt the cluster when it comes back), no snapshots yet (see `state_machine`).
pub fn openraft_config(cluster_name: &str, timers: RaftTimers) -> Result<Arc<Config>> {
    let cfg = Config {
        cluster_name: cluster_name.to_string(),
        heartbeat_interval: timers.heartbeat_interval_ms,
        election_timeout_min: timers.election_timeout_min_ms,
        election_timeout_max: timers.election_timeout_max_ms,
        enable_pre_vote: Some(true),
        snapshot_policy: SnapshotPolicy::Never,
        ..Default::default()
    };
    let cfg = cfg
        .validate()
        .map_err(|e| Error::InvalidArgument(format!("raft configuration: {e}")))?;
    Ok(Arc::new(cfg))
}

/// An open replica.
#[derive(Clone)]
pub struct Replica {
    /// The openraft handle.
    pub raft: Raft,
    /// The Raft log (the segment log).
    pub store: LogStore,
    /// Follows the committed end (one past the highest applied offset).
    pub committed_end: watch::Receiver<u64>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("store", &self.store)
            .finish()
    }
}

impl Replica {
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
            SnapshotData = super::state_machine::SegmentManifest,
        >,
    {
        let io: IoRef = log_opts.io.resolve()?;
        io.create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let meta = MetaFile::open(&io, dir, cluster_id)?;
        let log = Log::open(dir.join("log"), log_opts)?;
        let store = LogStore::new(log, meta);
        let (sm, committed_end) = StateMachine::new();
        let raft = Raft::new(id, config, network, store.clone(), sm)
            .await
            .map_err(|e| Error::Raft(format!("start: {e}")))?;
        Ok(Replica {
            raft,
            store,
            committed_end,
        })
    }
}
