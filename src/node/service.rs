//! The node's answers to connections the TCP server accepted.

use super::metrics;
use super::protocol::{Reply, Request, WireRecord, MAX_READ_BYTES};
use super::status::{NodeStatus, Role};
use super::supervisor::ReplicaCell;
use crate::limits::MAX_ERROR_TEXT_BYTES;
use crate::net::tcp::{BoxFut, FrameRx, FrameTx, Service};
use crate::raft::replica::Replica;
use crate::storage::EntryKind;
use crate::{Error, Result};
use bytes::Bytes;

pub(super) struct NodeService {
    /// The node's replica (replaced when the node heals its storage).
    pub(super) cell: std::sync::Arc<ReplicaCell>,
    pub(super) node_id: u64,
    pub(super) placement: super::Placement,
    pub(super) site: String,
    pub(super) catch_up: super::catchup::CatchUpOptions,
    pub(super) catch_up_state: std::sync::Arc<super::catchup::CatchUpState>,
}

impl Service for NodeService {
    fn rpc(&self, msg: Bytes) -> BoxFut<Bytes> {
        let Some(r) = self.cell.get() else {
            return Box::pin(async { crate::raft::wire::encode_error(NOT_OPEN) });
        };
        if crate::raft::wire::tag_of(&msg) == Some(crate::raft::wire::tag::SNAPSHOT) {
            let (site, opts, state) = (
                self.site.clone(),
                self.catch_up,
                self.catch_up_state.clone(),
            );
            return Box::pin(
                async move { super::catchup::receive(&r, &site, msg, opts, state).await },
            );
        }
        Box::pin(async move { r.handle_rpc(msg).await })
    }

    fn append_stream(&self, tx: FrameTx, rx: FrameRx) -> BoxFut<Result<()>> {
        let r = match self.cell.serving() {
            Ok(r) => r,
            Err(e) => return Box::pin(async { Err(e) }),
        };
        Box::pin(async move { r.serve_append_stream(tx, rx).await })
    }

    fn fetch(&self, msg: Bytes) -> BoxFut<Bytes> {
        let Some(r) = self.cell.get() else {
            return Box::pin(async { crate::net::fetch::error_reply(NOT_OPEN) });
        };
        if crate::net::fetch::is_identify(&msg) {
            let commit_end = *r.committed_end.borrow();
            let reply = crate::net::fetch::serve_identify(r.store.log(), commit_end, &msg);
            return Box::pin(async move { reply });
        }
        // Reading and compressing a chunk is a few MiB of pread and zstd: on the node's
        // low-priority bulk-transfer thread, so serving a rebuild never takes more than one
        // core from the writers, nor the async threads.
        let budget = self.catch_up_state.budget.clone();
        Box::pin(async move {
            budget
                .run_cpu(move || crate::net::fetch::serve_chunk(r.store.log(), &msg))
                .await
                .unwrap_or_else(|e| crate::net::fetch::error_reply(&e.to_string()))
        })
    }

    fn client(&self, msg: Bytes) -> BoxFut<Bytes> {
        let cell = self.cell.clone();
        let (placement, node_id) = (self.placement, self.node_id);
        let progress = self.catch_up_state.clone();
        Box::pin(async move {
            let mut reply = answer(&cell, node_id, placement, msg).await;
            if let Reply::Status(s) = &mut reply {
                s.catch_up_bytes = progress.bytes();
            }
            // A reply that does not fit its encoding (an error text over 64 KiB) is
            // answered with the refusal itself, clipped to a size that always fits.
            reply.encode().unwrap_or_else(|e| {
                let text = e.to_string();
                let text = crate::codec::clip_utf8(&text, MAX_ERROR_TEXT_BYTES);
                Reply::Error(text.to_string())
                    .encode()
                    .expect("invariant: an error text of at most 1 KiB fits its u16 length")
            })
        })
    }
}

fn done(r: Result<()>) -> Reply {
    match r {
        Ok(()) => Reply::Done,
        Err(Error::NotLeader { leader, addr }) => Reply::NotLeader { leader, addr },
        Err(e) => Reply::Error(e.to_string()),
    }
}

/// What a replica that is not open answers to peers.
const NOT_OPEN: &str = "node not serving: reopening its storage";

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

async fn answer(
    cell: &ReplicaCell,
    node_id: u64,
    placement: super::Placement,
    msg: Bytes,
) -> Reply {
    let req = match Request::decode(&msg) {
        Ok(req) => req,
        Err(e) => return Reply::Error(e.to_string()),
    };
    let r = match (&req, cell.serving()) {
        (_, Ok(r)) => r,
        // A node whose storage failed still says where it stands, and serves committed reads
        // while its log is open; everything that needs consensus goes elsewhere.
        (Request::Status, Err(_)) => {
            return Reply::Status(match cell.get() {
                Some(r) => r.status().into(),
                None => closed_status(node_id, cell.commit_end()),
            })
        }
        (Request::Read { .. }, Err(e)) => match cell.get() {
            Some(r) => r,
            None => return Reply::Unavailable(e.to_string()),
        },
        (_, Err(e)) => return Reply::Unavailable(e.to_string()),
    };
    let r = &r;
    match req {
        Request::Append(payloads) => {
            let start = std::time::Instant::now();
            let bytes = payloads.iter().map(|p| p.len()).sum();
            match r.append(payloads).await {
                Ok(offs) => {
                    metrics::appended(offs.len(), bytes, start.elapsed());
                    Reply::Offsets(offs)
                }
                Err(Error::NotLeader { leader, addr }) => Reply::NotLeader { leader, addr },
                Err(e) => Reply::Error(e.to_string()),
            }
        }
        Request::Read {
            offset,
            max_records,
        } => read(r, offset, max_records).unwrap_or_else(|e| match e {
            Error::BelowFloor {
                offset,
                first_available,
            } => Reply::BelowFloor {
                offset,
                first_available,
            },
            e => {
                if let Some(repairer) = cell.repairer() {
                    repairer.on_read_error(&e);
                }
                Reply::Error(e.to_string())
            }
        }),
        Request::Status => Reply::Status(r.status().into()),
        Request::AddLearner { id, peer } => {
            let info = crate::raft::NodeInfo {
                site: peer.site,
                addr: peer.addr,
            };
            done(r.add_learner(id, info).await)
        }
        Request::ReplaceVoter { dead, new } if dead == new => done(Err(Error::InvalidArgument(
            format!("node {dead} cannot replace itself: a replacement node needs a new id"),
        ))),
        Request::ReplaceVoter { dead, new } => {
            let mut voters: std::collections::BTreeSet<u64> =
                r.status().voters.into_iter().collect();
            voters.remove(&dead);
            voters.insert(new);
            done(super::change_membership_checked(r, voters, placement).await)
        }
        Request::ChangeMembership(voters) => {
            let voters = voters.into_iter().collect();
            done(super::change_membership_checked(r, voters, placement).await)
        }
    }
}

/// Committed normal records from `offset`: at most `max_records` and [`MAX_READ_BYTES`]
/// (at least one when there is one). Below the log's start (deleted by retention):
/// [`Error::BelowFloor`], never a silent skip to the start.
fn read(r: &Replica, offset: u64, max_records: u32) -> Result<Reply> {
    let commit_end = *r.committed_end.borrow();
    let log = r.store.log();
    let mut records = Vec::new();
    let mut bytes = 0usize;
    if offset < commit_end {
        for rec in log.iter(offset) {
            let rec = rec?;
            if rec.offset >= commit_end || records.len() >= max_records as usize {
                break;
            }
            if rec.kind != EntryKind::Normal {
                continue;
            }
            bytes += rec.payload.len();
            if !records.is_empty() && bytes > MAX_READ_BYTES {
                break;
            }
            records.push(WireRecord {
                offset: rec.offset,
                term: rec.term,
                timestamp_us: rec.timestamp_us,
                payload: rec.payload,
            });
        }
    }
    Ok(Reply::Records {
        commit_end,
        records,
    })
}
