//! An in-process network between Raft nodes with fault injection: every RPC is a direct call on
//! the target's `Raft` handle, unless the link is cut. Used by the in-process cluster tests
//! (and by the deterministic simulation to come); the TCP transport lives in `net`.
//!
//! Links are directional: cutting `a → b` drops requests from `a` to `b` *and* responses from
//! `b` to `a` that travel that way, so asymmetric partitions and "request delivered, reply
//! lost" both happen.

use super::snapshot::{SegmentManifest, Snapshot as SnapshotOf};
use super::{NodeInfo, Raft, TypeConfig, Vote};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{RaftNetworkFactory, RaftNetworkV2};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct RouterState {
    nodes: BTreeMap<u64, Raft>,
    /// Cut directional links `(from, to)`.
    cut: BTreeSet<(u64, u64)>,
}

/// The in-process network: a registry of nodes and the links cut between them.
#[derive(Clone, Default)]
pub struct LocalRouter {
    state: Arc<Mutex<RouterState>>,
}

impl std::fmt::Debug for LocalRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("LocalRouter")
            .field("nodes", &s.nodes.keys().collect::<Vec<_>>())
            .field("cut", &s.cut)
            .finish()
    }
}

impl LocalRouter {
    fn lock(&self) -> MutexGuard<'_, RouterState> {
        // Only plain maps behind the lock; a panic cannot leave them inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `raft` reachable as node `id` (replacing an earlier registration).
    pub fn register(&self, id: u64, raft: Raft) {
        self.lock().nodes.insert(id, raft);
    }

    /// Makes node `id` unreachable, as if its process died.
    pub fn unregister(&self, id: u64) {
        self.lock().nodes.remove(&id);
    }

    /// Cuts the link `from → to` (one direction).
    pub fn cut(&self, from: u64, to: u64) {
        self.lock().cut.insert((from, to));
    }

    /// Cuts every link between `id` and every other node, both ways.
    pub fn isolate(&self, id: u64, others: impl IntoIterator<Item = u64>) {
        let mut s = self.lock();
        for o in others {
            s.cut.insert((id, o));
            s.cut.insert((o, id));
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    fn target(&self, from: u64, to: u64) -> Result<Raft, Unreachable<TypeConfig>> {
        let s = self.lock();
        if s.cut.contains(&(from, to)) {
            return Err(Unreachable::from_string(format!(
                "link {from}->{to} is cut"
            )));
        }
        s.nodes
            .get(&to)
            .cloned()
            .ok_or_else(|| Unreachable::from_string(format!("node {to} is down")))
    }

    fn reply_ok(&self, from: u64, to: u64) -> Result<(), Unreachable<TypeConfig>> {
        if self.lock().cut.contains(&(to, from)) {
            return Err(Unreachable::from_string(format!(
                "link {to}->{from} is cut"
            )));
        }
        Ok(())
    }

    /// A network factory for node `from`.
    pub fn factory(&self, from: u64) -> LocalNetworkFactory {
        LocalNetworkFactory {
            router: self.clone(),
            from,
        }
    }
}

/// Creates [`LocalNetwork`] clients for one node.
#[derive(Clone, Debug)]
pub struct LocalNetworkFactory {
    router: LocalRouter,
    from: u64,
}

/// One node's client towards one target.
#[derive(Debug)]
pub struct LocalNetwork {
    router: LocalRouter,
    from: u64,
    to: u64,
}

impl RaftNetworkFactory<TypeConfig> for LocalNetworkFactory {
    type Network = LocalNetwork;

    async fn new_client(&mut self, target: u64, _node: &NodeInfo) -> LocalNetwork {
        LocalNetwork {
            router: self.router.clone(),
            from: self.from,
            to: target,
        }
    }
}

fn remote_failed(e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(e.to_string()))
}

impl LocalNetwork {
    async fn call<T, E: std::fmt::Display, F>(
        &self,
        f: impl FnOnce(Raft) -> F,
    ) -> Result<T, RPCError<TypeConfig>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let raft = self.router.target(self.from, self.to)?;
        let resp = f(raft).await.map_err(remote_failed)?;
        self.router.reply_ok(self.from, self.to)?;
        Ok(resp)
    }
}

impl RaftNetworkV2<TypeConfig> for LocalNetwork {
    type SnapshotData = SegmentManifest;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(|r| async move { r.append_entries(rpc).await })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(|r| async move { r.vote(rpc).await }).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(|r| async move { r.pre_vote(rpc).await }).await
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: SnapshotOf,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(Unreachable::from_string(
            "the in-process network moves no segments: snapshots travel over TCP only",
        )))
    }
}
