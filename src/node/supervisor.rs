//! Step aside, then heal in place or give up: what a node does when its consensus stops on a
//! storage fault (a full disk, no descriptors left, a failing device).
//!
//! - **Step aside at once.** A stopped openraft sends no heartbeats and casts no votes, so the
//!   other voters elect a leader one election timeout after the fault; meanwhile this node
//!   answers clients [`Error::Unavailable`] (they move on to another node: nothing was
//!   appended) and peers get errors. It does not start openraft again — so it can neither
//!   campaign nor lead — until its storage works.
//! - **Heal in place.** The supervisor closes the replica, waits until [`probe`] passes (space
//!   freed, descriptors available, a small file can be written and fsynced), reopens the log,
//!   cuts every record above what it had made durable (bytes written but never fsynced may sit
//!   in the page cache only, or were dropped by a failed fsync: this node never acknowledged
//!   them, and Raft sends them again), starts openraft and rejoins as a follower. One log line
//!   per attempt; attempts back off from [`HealOptions::backoff_initial_ms`] to
//!   [`HealOptions::backoff_max_ms`].
//! - **Give up.** What cannot heal in place — durable data that fails its checksum, a data
//!   directory of another identity, an invalid configuration — ends in [`Health::Failed`]: the
//!   node stops serving for good and [`super::Node::failed`] resolves, so that the process exits
//!   non-zero and its supervisor (systemd, Kubernetes) restarts it.

use super::metrics as node_metrics;
use super::repair::Repairer;
use super::NodeConfig;
use crate::net::fetch_budget::FetchBudget;
use crate::net::tcp::TcpConnector;
use crate::raft::health::{probe, Fault};
use crate::raft::remote::RemoteNetworkFactory;
use crate::raft::replica::{replica_log_options, RaftConfig, Replica};
use crate::storage::{Log, LogOptions};
use crate::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// How a node heals its storage, with documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealOptions {
    /// Free bytes the data directory's file system must have before a node whose storage
    /// failed rejoins. `None` (default): twice the log's `segment_size_bytes` (the next
    /// segment is prepared ahead of the active one, and snapshots need room too).
    pub min_free_bytes: Option<u64>,
    /// First wait between two heal attempts. Default 100 ms.
    pub backoff_initial_ms: u64,
    /// Longest wait between two heal attempts (the wait doubles up to it). Default 5000 ms.
    pub backoff_max_ms: u64,
}

impl Default for HealOptions {
    fn default() -> Self {
        HealOptions {
            min_free_bytes: None,
            backoff_initial_ms: 100,
            backoff_max_ms: 5000,
        }
    }
}

/// Whether a node serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Consensus runs; the node takes part.
    Serving,
    /// Consensus stopped on `fault`; the node stepped aside and is healing its storage.
    Healing {
        /// What stopped it.
        fault: Fault,
        /// The error, as the consensus layer's storage saw it.
        detail: String,
        /// Heal attempts so far.
        attempts: u32,
    },
    /// The node cannot heal in place and serves no more; restart it (after repair).
    Failed {
        /// Why.
        reason: String,
    },
    /// The node was shut down.
    Stopped,
}

/// The node's current replica and its repairer (scrub and repair from peers): replaced when
/// the node heals, absent while it reopens.
pub(super) struct ReplicaCell {
    current: RwLock<Option<(Replica, Arc<Repairer>)>>,
    health: watch::Sender<Health>,
    /// The commit end of the last replica taken out (what `commit_end` reports while none
    /// is open).
    last_commit_end: AtomicU64,
}

impl ReplicaCell {
    pub(super) fn new(replica: Replica, repairer: Arc<Repairer>) -> ReplicaCell {
        ReplicaCell {
            current: RwLock::new(Some((replica, repairer))),
            health: watch::Sender::new(Health::Serving),
            last_commit_end: AtomicU64::new(0),
        }
    }

    /// The open replica, serving or not.
    pub(super) fn get(&self) -> Option<Replica> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.as_ref().map(|(r, _)| r.clone())
    }

    /// The open replica's repairer.
    pub(super) fn repairer(&self) -> Option<Arc<Repairer>> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.as_ref().map(|(_, rep)| rep.clone())
    }

    /// The replica when the node serves: open, healthy and with openraft running.
    pub(super) fn serving(&self) -> Result<Replica> {
        let unavailable = |reason: String| Error::Unavailable { reason };
        match &*self.health.borrow() {
            Health::Serving => {}
            Health::Healing { fault, detail, .. } => {
                return Err(unavailable(format!(
                    "healing from a {fault} fault: {detail}"
                )))
            }
            Health::Failed { reason } => return Err(unavailable(reason.clone())),
            Health::Stopped => return Err(unavailable("shut down".into())),
        }
        let r = self
            .get()
            .ok_or_else(|| unavailable("reopening its storage".into()))?;
        match r.fatal() {
            Some(why) => Err(unavailable(format!("consensus stopped: {why}"))),
            None => Ok(r),
        }
    }

    pub(super) fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    pub(super) fn watch_health(&self) -> watch::Receiver<Health> {
        self.health.subscribe()
    }

    pub(super) fn commit_end(&self) -> u64 {
        match self.get() {
            Some(r) => *r.committed_end.borrow(),
            None => self.last_commit_end.load(Ordering::Relaxed),
        }
    }

    /// Takes the replica out (its repairer stopped): nothing new reaches it.
    pub(super) fn take(&self) -> Option<Replica> {
        let taken = self
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let (r, repairer) = taken?;
        repairer.stop();
        self.last_commit_end
            .store(*r.committed_end.borrow(), Ordering::Relaxed);
        Some(r)
    }

    fn put(&self, replica: Replica, repairer: Arc<Repairer>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some((replica, repairer));
    }

    pub(super) fn set_health(&self, h: Health) {
        node_metrics::health(&h);
        self.health.send_replace(h);
    }
}

/// What is needed to open the node's replica (at start, and again when it heals).
pub(super) struct Starter {
    pub(super) cfg: NodeConfig,
    pub(super) raft: Arc<RaftConfig>,
    pub(super) connector: TcpConnector,
    /// The node's one budget for bulk fetches (catch-up and repair).
    pub(super) budget: FetchBudget,
}

/// Why one heal attempt did not bring the replica back.
enum Attempt {
    /// The fault still stands; try again later.
    NotYet(Fault, String),
    /// It cannot heal in place.
    GiveUp(Error),
}

fn classify(e: Error) -> Attempt {
    match e {
        Error::Corruption { .. } | Error::InvalidArgument(_) | Error::WrongIdentity { .. } => {
            Attempt::GiveUp(e)
        }
        e => Attempt::NotYet(Fault::of(&e), e.to_string()),
    }
}

impl Starter {
    fn min_free_bytes(&self) -> u64 {
        self.cfg
            .heal
            .min_free_bytes
            .unwrap_or_else(|| self.cfg.log.segment_size_bytes.saturating_mul(2))
    }

    /// Opens the replica (a damaged sealed segment found while opening is repaired from a
    /// peer, then the replica is opened again: `repair_start`) and starts its repairer.
    pub(super) async fn open(&self) -> Result<(Replica, Arc<Repairer>)> {
        let cfg = &self.cfg;
        let mut repaired_at_start = std::collections::BTreeSet::new();
        let replica = loop {
            let opened = Box::pin(Replica::start(
                cfg.node_id,
                &cfg.data_dir,
                cfg.cluster_id,
                cfg.log.clone(),
                self.raft.clone(),
                RemoteNetworkFactory::new(self.connector.clone()),
            ))
            .await;
            match opened {
                Ok(r) => break r,
                Err(e) => {
                    super::repair_start::repair_at_start(
                        cfg,
                        &self.budget,
                        e,
                        &mut repaired_at_start,
                    )
                    .await?
                }
            }
        };
        let repairer = Repairer::start(
            replica.clone(),
            &cfg.site,
            cfg.catch_up.fetch.clone(),
            self.budget.clone(),
            cfg.repair,
        );
        repairer.count_start_repairs(repaired_at_start.len() as u64);
        Ok((replica, repairer))
    }

    /// Opens the replica again: probe, cut what was never durable, open.
    async fn restart(
        &self,
        trusted_end: u64,
    ) -> std::result::Result<(Replica, Arc<Repairer>), Attempt> {
        let (dir, min_free) = (self.cfg.data_dir.clone(), self.min_free_bytes());
        let opts = replica_log_options(self.cfg.cluster_id, self.cfg.log.clone());
        // The probe and the reopen are blocking file work.
        tokio::task::spawn_blocking(move || {
            probe(&dir, min_free).map_err(|(f, why)| Attempt::NotYet(f, why))?;
            cut_unsynced(&dir, opts, trusted_end).map_err(classify)
        })
        .await
        .map_err(|e| Attempt::NotYet(Fault::Other, e.to_string()))??;
        self.open().await.map_err(classify)
    }
}

/// Opens the log and removes every record at or above `trusted_end`, the durable end the
/// failed replica had reached: what lies above it was written but never made durable (and
/// never acknowledged by this node), so it may exist in the page cache only.
fn cut_unsynced(dir: &std::path::Path, opts: LogOptions, trusted_end: u64) -> Result<()> {
    let opts = LogOptions {
        // Only opened to cut: no segment is prepared ahead.
        preallocate: false,
        ..opts
    };
    let log = Log::open(dir.join("log"), opts)?;
    if log.end_offset() > trusted_end {
        tracing::warn!(
            from = trusted_end,
            to = log.end_offset(),
            "healing: cutting records this node never made durable (Raft sends them again)"
        );
        log.truncate_from(trusted_end.max(log.start_offset()))?;
    }
    Ok(())
}

/// Watches the node's replica; when its consensus stops, steps aside and heals (or gives
/// up). Runs until the node shuts down (aborted) or gives up.
pub(super) async fn supervise(cell: Arc<ReplicaCell>, starter: Starter) {
    loop {
        let Some(replica) = cell.get() else { return };
        let why = replica.stopped().await;
        let (fault, detail) = replica.fault().unwrap_or((Fault::Other, why));
        tracing::error!(
            node = starter.cfg.node_id,
            %fault,
            %detail,
            "consensus stopped on a storage fault: stepped aside (no leadership, no votes, \
             clients sent elsewhere); healing in place"
        );
        node_metrics::storage_fault(fault);
        cell.set_health(Health::Healing {
            fault,
            detail: detail.clone(),
            attempts: 0,
        });
        let trusted_end = replica.store.log().durable_end();
        drop(cell.take());
        // The only error is "already stopped", which is why we are here.
        let _ = replica.shutdown().await;
        drop(replica);
        if !heal(&cell, &starter, fault, detail, trusted_end).await {
            return;
        }
    }
}

/// Heal attempts with backoff until one works (true) or the fault cannot heal (false).
async fn heal(
    cell: &ReplicaCell,
    starter: &Starter,
    fault: Fault,
    detail: String,
    trusted_end: u64,
) -> bool {
    let started = tokio::time::Instant::now();
    let mut backoff_ms = starter.cfg.heal.backoff_initial_ms;
    let mut attempts = 0u32;
    loop {
        attempts = attempts.saturating_add(1);
        cell.set_health(Health::Healing {
            fault,
            detail: detail.clone(),
            attempts,
        });
        match starter.restart(trusted_end).await {
            Ok((replica, repairer)) => {
                tracing::warn!(
                    node = starter.cfg.node_id,
                    attempts,
                    after_ms = started.elapsed().as_millis() as u64,
                    "healed: storage works again; rejoined the cluster"
                );
                cell.put(replica, repairer);
                cell.set_health(Health::Serving);
                node_metrics::healed();
                return true;
            }
            Err(Attempt::NotYet(still, why)) => tracing::warn!(
                node = starter.cfg.node_id,
                attempts,
                fault = %still,
                retry_in_ms = backoff_ms,
                "healing: storage not usable yet: {why}"
            ),
            Err(Attempt::GiveUp(e)) => {
                tracing::error!(
                    node = starter.cfg.node_id,
                    error = %e,
                    "cannot heal in place; this node stops serving (restart it after repair)"
                );
                cell.set_health(Health::Failed {
                    reason: format!("cannot heal in place: {e}"),
                });
                return false;
            }
        }
        tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
        backoff_ms = backoff_ms
            .saturating_mul(2)
            .min(starter.cfg.heal.backoff_max_ms);
    }
}

/// Most time [`release`] waits for other holders of the log to let go.
pub(super) const RELEASE_WAIT_MS: u64 = 2_000;

/// Drops a stopped replica and waits (up to [`RELEASE_WAIT_MS`]) until nothing else holds its
/// log, then closes it, so that the data directory is unlocked when this returns. Tasks that
/// held it (the flush-completion task, aborted connection handlers) end on the runtime's
/// schedule, a moment after the replica stopped.
pub(super) async fn release(replica: Replica) {
    let log = replica.store.log().clone();
    drop(replica);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(RELEASE_WAIT_MS);
    while log.handles() > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if log.handles() > 1 {
        tracing::warn!(dir = %log.dir().display(), "log still held after shutdown; it stays locked until released");
    }
    // The last handle's drop joins the log's threads: blocking work.
    let _ = tokio::task::spawn_blocking(move || drop(log)).await;
}
