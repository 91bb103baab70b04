//! The node's one implementation of what it serves: appends, committed reads, status and
//! membership changes.
//!
//! Both the embedding API ([`super::Node`]) and the wire protocol (`NodeService::client`)
//! call these methods, so the two cannot drift apart: the service only decodes a request,
//! calls the core and encodes the reply ([`reply_to`] maps every error to its reply).

use super::catchup::CatchUpState;
use super::metrics;
use super::protocol::Reply;
use super::status::{NodeStatus, Role};
use super::supervisor::ReplicaCell;
use super::{change_membership_checked, Peer, Placement};
use crate::raft::dedup::ProduceRefusal;
use crate::raft::entry::message_view;
use crate::raft::replica::{ProducerInfo, ProducerSettings, Replica};
use crate::raft::NodeInfo;
use crate::storage::{EntryKind, Record};
use crate::{Error, Result};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// What a node serves, shared by the node's handles and its TCP service.
pub(super) struct NodeCore {
    pub(super) id: u64,
    pub(super) placement: Placement,
    /// The replica, replaced when the node heals its storage.
    pub(super) cell: Arc<ReplicaCell>,
    pub(super) catch_up: Arc<CatchUpState>,
    /// The parameters new producers are registered with.
    pub(super) producers: ProducerSettings,
}

/// The offsets of a produce and how many of them an earlier attempt had committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceAck {
    /// One offset per message, in order.
    pub offsets: Vec<u64>,
    /// How many were committed by an earlier attempt (nothing was appended for them now).
    pub deduplicated: u32,
}

/// Committed normal records read from one offset, with the commit end they were read under.
#[derive(Debug)]
pub(super) struct CommittedRange {
    /// One past the highest committed offset when read.
    pub(super) commit_end: u64,
    /// The records, in order (Raft's own entries left out).
    pub(super) records: Vec<Record>,
}

impl NodeCore {
    /// The replica when the node serves; [`Error::Unavailable`] while it heals or after it
    /// gave up.
    pub(super) fn replica(&self) -> Result<Replica> {
        self.cell.serving()
    }

    /// The open replica, serving or not (reads of committed records work while consensus is
    /// stopped, as long as the log is open). When none is open: the reason the node does not
    /// serve, as [`Error::Unavailable`].
    pub(super) fn open_replica(&self) -> Result<Replica> {
        // `serving` fails when no replica is open, naming why (healing, gave up, stopped);
        // should one have been put back in between, it is as good.
        self.cell.get().map_or_else(|| self.cell.serving(), Ok)
    }

    /// Appends payloads; their offsets once a majority of voters have them fsynced.
    pub(super) async fn append(&self, payloads: Vec<Bytes>) -> Result<Vec<u64>> {
        let start = Instant::now();
        let bytes: usize = payloads.iter().map(|p| p.len()).sum();
        let offsets = self.replica()?.append(payloads).await?;
        metrics::appended(offsets.len(), bytes, start.elapsed());
        Ok(offsets)
    }

    /// Registers an idempotent producer with the node's producer settings (on the leader).
    pub(super) async fn register_producer(&self) -> Result<ProducerInfo> {
        let info = self.replica()?.register_producer(self.producers).await?;
        metrics::producer_registered();
        Ok(info)
    }

    /// Appends `payloads` as seqs `first_seq..` of `producer`, exactly once (on the leader):
    /// a seq committed before resolves to its original offset. Refusals are typed
    /// (`Error::Producer*`); nothing of a refused request was appended.
    pub(super) async fn produce(
        &self,
        producer: u64,
        first_seq: u64,
        payloads: Vec<Bytes>,
    ) -> Result<ProduceAck> {
        let start = Instant::now();
        let bytes: usize = payloads.iter().map(|p| p.len()).sum();
        let produced = match self.replica()?.produce(producer, first_seq, payloads).await {
            Ok(p) => p,
            Err(e) => {
                if let Some(why) = refusal_of(&e) {
                    metrics::produce_refused(why);
                }
                return Err(e);
            }
        };
        let deduplicated = produced.iter().filter(|p| p.duplicate).count();
        metrics::appended(produced.len() - deduplicated, bytes, start.elapsed());
        metrics::deduplicated(deduplicated);
        Ok(ProduceAck {
            offsets: produced.iter().map(|p| p.offset).collect(),
            // At most MAX_APPEND_PAYLOADS (checked by the replica).
            deduplicated: deduplicated as u32,
        })
    }

    /// The committed record at `offset` ([`Error::OutOfRange`] if not committed yet,
    /// [`Error::BelowFloor`] if retention deleted it). A produced message reads as a normal
    /// record of its message (the producer header is the log's business, not the reader's);
    /// other kinds read as they are. A read error reaches the repairer.
    pub(super) fn read(&self, offset: u64) -> Result<Record> {
        let replica = self.open_replica()?;
        let commit_end = *replica.committed_end.borrow();
        let log = replica.store.log();
        if offset >= commit_end {
            return Err(Error::OutOfRange {
                offset,
                start: log.start_offset(),
                end: commit_end,
            });
        }
        let rec = log.read(offset).inspect_err(|e| self.read_failed(e))?;
        reader_view(rec)
    }

    /// Committed normal records from `offset`: at most `max_records` and `max_bytes` of
    /// payload, but at least one when there is one (a record over `max_bytes` is still
    /// readable). From or past the commit end: none. Below the log's start (deleted by
    /// retention): [`Error::BelowFloor`], never a silent skip to the start. A read error
    /// reaches the repairer.
    pub(super) fn read_range(
        &self,
        offset: u64,
        max_records: u32,
        max_bytes: usize,
    ) -> Result<CommittedRange> {
        let replica = self.open_replica()?;
        let commit_end = *replica.committed_end.borrow();
        let mut records = Vec::new();
        if offset < commit_end {
            collect(
                &replica,
                offset,
                commit_end,
                max_records,
                max_bytes,
                &mut records,
            )
            .inspect_err(|e| self.read_failed(e))?;
        }
        Ok(CommittedRange {
            commit_end,
            records,
        })
    }

    /// Tells the repairer of a failed read: a damaged sealed segment is repaired from peers.
    fn read_failed(&self, e: &Error) {
        if let Some(repairer) = self.cell.repairer() {
            repairer.on_read_error(e);
        }
    }

    /// Where the node stands, with the progress of a catch-up by snapshot. A node whose
    /// replica is not open (reopening its storage) answers [`closed_status`].
    pub(super) fn status(&self) -> NodeStatus {
        let mut s = match self.cell.get() {
            Some(r) => NodeStatus::from(r.status()),
            None => closed_status(self.id, self.cell.commit_end()),
        };
        s.catch_up_bytes = self.catch_up.bytes();
        s
    }

    /// Progress of the current or last catch-up by snapshot: (bytes in place, bytes to have,
    /// seconds since it started).
    pub(super) fn catch_up_progress(&self) -> (u64, u64, f64) {
        let p = &self.catch_up.progress;
        let started = *self
            .catch_up
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        (
            p.done_bytes.load(Ordering::Relaxed),
            p.total_bytes.load(Ordering::Relaxed),
            started.map_or(0.0, |t| t.elapsed().as_secs_f64()),
        )
    }

    /// Adds a learner (on the leader).
    pub(super) async fn add_learner(&self, id: u64, peer: Peer) -> Result<()> {
        let info = NodeInfo {
            site: peer.site,
            addr: peer.addr,
        };
        self.replica()?.add_learner(id, info).await
    }

    /// Replaces the voter set (on the leader), placement checked.
    pub(super) async fn change_membership(&self, voters: BTreeSet<u64>) -> Result<()> {
        change_membership_checked(&self.replica()?, voters, self.placement).await
    }

    /// Swaps voter `dead` for `new` (on the leader), placement checked. `dead == new` is
    /// refused with [`Error::InvalidArgument`]: a replacement needs a new id.
    pub(super) async fn replace_voter(&self, dead: u64, new: u64) -> Result<()> {
        if dead == new {
            return Err(Error::InvalidArgument(format!(
                "node {dead} cannot replace itself: a replacement node needs a new id"
            )));
        }
        let replica = self.replica()?;
        let mut voters: BTreeSet<u64> = replica.status().voters.into_iter().collect();
        voters.remove(&dead);
        voters.insert(new);
        change_membership_checked(&replica, voters, self.placement).await
    }
}

/// Appends to `out` the committed normal records in `[offset, commit_end)`, within the
/// limits of [`NodeCore::read_range`].
fn collect(
    replica: &Replica,
    offset: u64,
    commit_end: u64,
    max_records: u32,
    max_bytes: usize,
    out: &mut Vec<Record>,
) -> Result<()> {
    let mut bytes = 0usize;
    for rec in replica.store.log().iter(offset) {
        let rec = rec?;
        if rec.offset >= commit_end || out.len() >= max_records as usize {
            break;
        }
        // Messages only: a produced one without its header; Raft's and registrations skipped.
        let Some(rec) = message_view(rec)? else {
            continue;
        };
        bytes += rec.payload.len();
        if !out.is_empty() && bytes > max_bytes {
            break;
        }
        out.push(rec);
    }
    Ok(())
}

/// What a reader of one record sees: a produced message as a normal record of its message,
/// any other kind as it is (readers skip kinds they do not know).
pub(super) fn reader_view(rec: Record) -> Result<Record> {
    if rec.kind != EntryKind::Produce {
        return Ok(rec);
    }
    let offset = rec.offset;
    message_view(rec)?.ok_or_else(|| {
        Error::Protocol(format!("invariant: produced record at {offset} has a message view"))
    })
}

/// The refusal a typed producer error stands for, if it is one.
fn refusal_of(e: &Error) -> Option<(u64, ProduceRefusal)> {
    Some(match *e {
        Error::ProducerExpired { producer } => (producer, ProduceRefusal::Expired),
        Error::ProducerOutOfOrder {
            producer,
            expected_seq,
            ..
        } => (producer, ProduceRefusal::OutOfOrder { expected_seq }),
        Error::ProducerSeqBelowWindow {
            producer, last_seq, ..
        } => (producer, ProduceRefusal::BelowWindow { last_seq }),
        _ => return None,
    })
}

/// A status for a node whose replica is not open (it is reopening its storage).
pub(super) fn closed_status(node_id: u64, commit_end: u64) -> NodeStatus {
    NodeStatus {
        node_id,
        role: Role::Shutdown,
        term: 0,
        leader: None,
        commit_end,
        log_end: commit_end,
        voters: Vec::new(),
        learners: Vec::new(),
        followers: Vec::new(),
        catch_up_bytes: (0, 0),
    }
}

/// The reply to a request that failed: the one place where errors become replies. A write on
/// a follower names the leader, a node that does not serve says so (the client tries another
/// node), a read below the floor names the first offset held; anything else is its text.
pub(super) fn reply_to(e: Error) -> Reply {
    if let Some((producer, why)) = refusal_of(&e) {
        return Reply::ProduceRefused { producer, why };
    }
    match e {
        Error::NotLeader { leader, addr } => Reply::NotLeader { leader, addr },
        e @ Error::Unavailable { .. } => Reply::Unavailable(e.to_string()),
        Error::NotAllowed { role, op } => Reply::NotAllowed { role, op },
        Error::BelowFloor {
            offset,
            first_available,
        } => Reply::BelowFloor {
            offset,
            first_available,
        },
        e => Reply::Error(e.to_string()),
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
