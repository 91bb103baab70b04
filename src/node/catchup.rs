//! Catch-up by snapshot: receiving a snapshot offer from the leader, staging its segments
//! (a verified copy already staged by an interrupted attempt is kept; a segment this node
//! holds is hard-linked; every other one is fetched in bulk from the replicas), then
//! installing it.
//!
//! Sources are tried in this order: replicas in this node's site, other replicas, the
//! leader last (it has the most work). Several segments are fetched at once
//! ([`CatchUpOptions::parallel_segments`]), each resumable and verified (`net::fetch`).

use crate::io::IoRef;
use crate::net::fetch::{fetch_segment, FetchOptions, FetchProgress};
use crate::net::fetch_budget::FetchBudget;
use crate::raft::replica::{IncomingSnapshot, Replica};
use crate::raft::wire;
use crate::storage::manifest::verify_segment_file;
use crate::storage::SegmentInfo;
use crate::{Error, Result};
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// How a node catches up.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CatchUpOptions {
    /// Bulk fetch settings (chunk size, zstd, throttle).
    pub fetch: FetchOptions,
    /// Segments fetched at once. Default 4.
    pub parallel_segments: usize,
}

impl CatchUpOptions {
    /// Defaults for `cluster_id`.
    pub fn new(cluster_id: u64) -> Self {
        CatchUpOptions {
            fetch: FetchOptions::new(cluster_id),
            parallel_segments: 4,
        }
    }
}

/// Progress of the current (or last) catch-up, for `status`.
#[derive(Debug, Default)]
pub struct CatchUpState {
    /// Bytes in place and to have.
    pub progress: FetchProgress,
    /// When the current catch-up started.
    pub started: std::sync::Mutex<Option<Instant>>,
    /// The node's fetch budget: all parallel segment fetches (and repairs) draw from it.
    pub budget: FetchBudget,
}

impl CatchUpState {
    /// No catch-up yet; fetches draw from `budget`.
    pub fn new(budget: FetchBudget) -> Self {
        CatchUpState {
            budget,
            ..CatchUpState::default()
        }
    }

    /// (bytes in place, bytes to have).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.progress.done_bytes.load(Ordering::Relaxed),
            self.progress.total_bytes.load(Ordering::Relaxed),
        )
    }
}

/// Addresses of the nodes to fetch a snapshot's segments from, best first: same site, then
/// other followers, then the leader; never this node. Only members of the cluster (see
/// [`IncomingSnapshot::sources`]): an offer naming another node is refused.
fn sources(s: &IncomingSnapshot, replica: &Replica, my_site: &str) -> Result<Vec<String>> {
    let me = replica.status().node_id;
    let mut members = s.sources(me, &replica.retired_ids())?;
    members.sort_by_key(|(id, n)| (*id == s.leader(), n.site != my_site, *id));
    Ok(members.into_iter().map(|(_, n)| n.addr).collect())
}

/// Stages one segment: a verified staged copy is kept, a held one hard-linked, the rest
/// fetched.
async fn stage(
    replica: &Replica,
    info: SegmentInfo,
    sources: &[String],
    opts: &FetchOptions,
    state: &CatchUpState,
) -> Result<()> {
    let staged: PathBuf = replica.staged_path(info.base_offset);
    let io: &IoRef = &replica.io;
    let progress = &state.progress;
    if verify_segment_file(io, &staged, &info, replica.cluster_id).is_ok() {
        progress
            .done_bytes
            .fetch_add(info.size_bytes, Ordering::Relaxed);
        return Ok(());
    }
    if let Some(own) = replica.held_segment_path(&info) {
        let _ = std::fs::remove_file(&staged);
        if std::fs::hard_link(&own, &staged).is_ok() {
            progress
                .done_bytes
                .fetch_add(info.size_bytes, Ordering::Relaxed);
            return Ok(());
        }
    }
    fetch_segment(
        io,
        replica.cluster_id,
        &info,
        &staged,
        sources,
        opts,
        &state.budget,
        progress,
    )
    .await
}

/// Handles a snapshot offer (decoded, its sender checked): stages every segment, installs,
/// and returns the reply.
pub(crate) async fn receive(
    replica: &Replica,
    my_site: &str,
    s: IncomingSnapshot,
    opts: CatchUpOptions,
    state: Arc<CatchUpState>,
) -> Bytes {
    match receive_inner(replica, my_site, s, opts, state).await {
        Ok(reply) => reply,
        Err(e) => {
            tracing::warn!(error = %e, "snapshot catch-up failed; the leader will offer it again");
            wire::encode_error(&e.to_string())
        }
    }
}

async fn receive_inner(
    replica: &Replica,
    my_site: &str,
    s: IncomingSnapshot,
    opts: CatchUpOptions,
    state: Arc<CatchUpState>,
) -> Result<Bytes> {
    if s.lineage() != replica.cluster_id {
        return Err(Error::Protocol(format!(
            "snapshot of cluster {:#x} refused (this is {:#x})",
            s.lineage(),
            replica.cluster_id
        )));
    }
    let srcs = sources(&s, replica, my_site)?;
    let staging = replica.dir.join(crate::raft::state_machine::STAGING_DIR);
    replica
        .io
        .create_dir_all(&staging)
        .map_err(|e| Error::io(&staging, e))?;
    let total: u64 = s.segments().iter().map(|i| i.size_bytes).sum();
    state.progress.total_bytes.store(total, Ordering::Relaxed);
    state.progress.done_bytes.store(0, Ordering::Relaxed);
    *state.started.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    tracing::info!(
        segments = s.segments().len(),
        total_bytes = total,
        "catching up by snapshot"
    );
    let mut tasks = tokio::task::JoinSet::new();
    let mut pending = s.segments().to_vec().into_iter();
    loop {
        while tasks.len() < opts.parallel_segments.max(1) {
            let Some(info) = pending.next() else { break };
            let (r, srcs, st) = (replica.clone(), srcs.clone(), state.clone());
            let fetch = opts.fetch.clone();
            tasks.spawn(async move { stage(&r, info, &srcs, &fetch, &st).await });
        }
        match tasks.join_next().await {
            None => break,
            Some(r) => r.map_err(|e| Error::TaskFailed {
                task: "snapshot segment fetch",
                reason: e.to_string(),
            })??,
        }
    }
    replica
        .io
        .sync_dir(&staging)
        .map_err(|e| Error::io(&staging, e))?;
    Ok(replica.install_snapshot(s).await)
}
