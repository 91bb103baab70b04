//! The node's answers to connections the TCP server accepted.
//!
//! Client requests are decoded here, served by the node's [`NodeCore`] (the same methods the
//! embedding API calls) and encoded back; errors become replies in [`core::reply_to`].

use super::core::{self, NodeCore};
use super::protocol::{Reply, Request, WireRecord, MAX_READ_BYTES};
use crate::limits::MAX_ERROR_TEXT_BYTES;
use crate::net::tcp::{BoxFut, FrameRx, FrameTx, Service};
use crate::net::tls::{ClientRole, Operation};
use crate::net::warn_rate::WarnRate;
use crate::Result;
use bytes::Bytes;
use std::sync::Arc;

pub(super) struct NodeService {
    /// What the node serves (its replica, replaced when the node heals its storage).
    pub(super) core: Arc<NodeCore>,
    pub(super) site: String,
    pub(super) catch_up: super::catchup::CatchUpOptions,
    /// Requests refused by the client's role: logged at most once per second, with a count.
    pub(super) refused: WarnRate,
}

impl Service for NodeService {
    fn rpc(&self, from: u64, msg: Bytes) -> BoxFut<Bytes> {
        let Some(r) = self.core.cell.get() else {
            return Box::pin(async { crate::raft::wire::encode_error(NOT_OPEN) });
        };
        if crate::raft::wire::tag_of(&msg) == Some(crate::raft::wire::tag::SNAPSHOT) {
            // Decoded once, here: the sender check and the catch-up both use this value.
            let offer = crate::raft::replica::Replica::decode_snapshot(&msg)
                .and_then(|s| s.check_sender(from).map(|()| s).map_err(crate::Error::Protocol));
            let s = match offer {
                Ok(s) => s,
                Err(e) => {
                    let why = e.to_string();
                    return Box::pin(async move { crate::raft::wire::encode_error(&why) });
                }
            };
            let (site, opts, state) = (
                self.site.clone(),
                self.catch_up.clone(),
                self.core.catch_up.clone(),
            );
            return Box::pin(
                async move { super::catchup::receive(&r, &site, s, opts, state).await },
            );
        }
        Box::pin(async move { r.handle_rpc(from, msg).await })
    }

    fn append_stream(&self, from: u64, tx: FrameTx, rx: FrameRx) -> BoxFut<Result<()>> {
        let r = match self.core.cell.serving() {
            Ok(r) => r,
            Err(e) => return Box::pin(async { Err(e) }),
        };
        Box::pin(async move { r.serve_append_stream(from, tx, rx).await })
    }

    fn fetch(&self, msg: Bytes) -> BoxFut<Bytes> {
        let Some(r) = self.core.cell.get() else {
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
        let budget = self.core.catch_up.budget.clone();
        Box::pin(async move {
            budget
                .run_cpu(move || crate::net::fetch::serve_chunk(r.store.log(), &msg))
                .await
                .unwrap_or_else(|e| crate::net::fetch::error_reply(&e.to_string()))
        })
    }

    fn client(&self, role: ClientRole, msg: Bytes) -> BoxFut<Bytes> {
        let core = self.core.clone();
        let allowed = self.authorize(role, &msg);
        Box::pin(async move {
            let reply = match allowed {
                Ok(request) => answer(&core, request).await,
                Err(e) => Err(e),
            };
            let reply = reply.unwrap_or_else(core::reply_to);
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

impl NodeService {
    /// Decodes a client request and checks that `role` may make it, before anything is done;
    /// a refusal ([`crate::Error::NotAllowed`]) is counted and logged (rate-limited).
    fn authorize(&self, role: ClientRole, msg: &Bytes) -> Result<Request> {
        let request = Request::decode(msg)?;
        let op = operation(&request);
        role.check(op).inspect_err(|_| {
            metrics::counter!("sitelog_client_requests_refused_total", "role" => role.as_str())
                .increment(1);
            if let Some(n) = self.refused.event() {
                tracing::warn!(%role, %op, refused = n, "refused a client request: role does not allow it");
            }
        })?;
        Ok(request)
    }
}

/// The kind of a request, as the role check sees it.
fn operation(request: &Request) -> Operation {
    match request {
        // Registering and producing are appends: the produce role makes them.
        Request::Append(_) | Request::RegisterProducer | Request::Produce { .. } => {
            Operation::Append
        }
        Request::Read { .. } => Operation::Read,
        Request::Status => Operation::Status,
        Request::AddLearner { .. } | Request::ChangeMembership(_) => Operation::Membership,
        Request::ReplaceVoter { .. } => Operation::ReplaceNode,
    }
}

/// What a replica that is not open answers to peers.
const NOT_OPEN: &str = "node not serving: reopening its storage";

/// Decodes a client request and serves it from the core. A node whose storage failed still
/// says where it stands, and serves committed reads while its log is open; everything that
/// needs consensus is refused ([`crate::Error::Unavailable`]) and goes elsewhere.
async fn answer(core: &NodeCore, request: Request) -> Result<Reply> {
    Ok(match request {
        Request::Append(payloads) => Reply::Offsets(core.append(payloads).await?),
        Request::RegisterProducer => {
            let p = core.register_producer().await?;
            Reply::Producer {
                producer: p.producer,
                idle_expiry_ms: p.idle_expiry_ms,
                max_producers: p.max_producers,
            }
        }
        Request::Produce {
            producer,
            first_seq,
            payloads,
        } => {
            let ack = core.produce(producer, first_seq, payloads).await?;
            Reply::Produced {
                offsets: ack.offsets,
                deduplicated: ack.deduplicated,
            }
        }
        Request::Read {
            offset,
            max_records,
        } => {
            let range = core.read_range(offset, max_records, MAX_READ_BYTES)?;
            let records = range.records.into_iter().map(wire_record).collect();
            Reply::Records {
                commit_end: range.commit_end,
                records,
            }
        }
        Request::Status => Reply::Status(core.status()),
        Request::AddLearner { id, peer } => {
            core.add_learner(id, peer).await?;
            Reply::Done
        }
        Request::ReplaceVoter { dead, new } => {
            core.replace_voter(dead, new).await?;
            Reply::Done
        }
        Request::ChangeMembership(voters) => {
            core.change_membership(voters.into_iter().collect()).await?;
            Reply::Done
        }
    })
}

fn wire_record(rec: crate::storage::Record) -> WireRecord {
    WireRecord {
        offset: rec.offset,
        term: rec.term,
        timestamp_us: rec.timestamp_us,
        payload: rec.payload,
    }
}
