//! openraft's network traits over any message transport, and the server-side handlers.
//!
//! The transport (TCP in `net`) only moves whole, opaque messages ([`super::wire`] encodes
//! them); it implements [`Connector`]. This keeps every openraft type inside `raft`.
//!
//! Two kinds of connection:
//! - **RPC** (vote, pre-vote, a single AppendEntries): one request, one response, in turn.
//!   One cached connection per peer; any failure drops it and the next call reconnects
//!   (openraft backs off between attempts).
//! - **Append stream** (replication *and* heartbeats in openraft 0.10): one connection per
//!   stream. Requests are sent as they come, up to [`MAX_APPENDS_IN_FLIGHT`] unanswered
//!   (a bounded window: the sender waits, memory stays bounded); responses arrive in order and
//!   are yielded one per request. The stream ends when the input ends and every response has
//!   arrived, at the first rejection, or at the first transport error. openraft opens one
//!   stream per heartbeat (one request each) and one long replication stream, which carries
//!   nothing at all while the cluster is idle: the server closes it after its idle timeout,
//!   and a close while no request is in flight ends the stream cleanly (openraft opens a new
//!   one when it has entries to send), not as an error.
//!
//!   A stream that ended cleanly (its input ended and every response was a success) leaves
//!   its connection idle in its [`RemoteNetwork`], and the next stream of that network reuses
//!   it (after checking the server has not closed it): heartbeats (20 a second per follower
//!   at the LAN timers) then ride one connection instead of one TCP connect, TLS handshake
//!   and hello each. The server side is unchanged: it serves a connection's requests in
//!   order, whichever stream they belong to, and closes it after a rejection, which ends the
//!   client's stream with that rejection, so such a connection is never reused.

use super::snapshot::{SegmentManifest, Snapshot as SnapshotOf};
use super::wire::{self, tag};
use super::{NodeInfo, Raft, TypeConfig, Vote};
use crate::{Error, Result};
use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use openraft::{RaftNetworkFactory, RaftNetworkV2};
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;

/// Most AppendEntries requests sent on one stream and not yet answered.
pub const MAX_APPENDS_IN_FLIGHT: usize = 8;

/// What a connection is for; the transport tells the server in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnPurpose {
    /// Request/response calls.
    Rpc,
    /// A pipelined stream of appends.
    AppendStream,
}

/// The sending half of a message connection.
pub trait MessageTx: Send + Sync + 'static {
    /// Sends one whole message.
    fn send(&mut self, msg: Bytes) -> impl Future<Output = Result<()>> + Send;
}

/// The receiving half of a message connection.
pub trait MessageRx: Send + Sync + 'static {
    /// Receives one whole message (checked by the transport).
    fn recv(&mut self) -> impl Future<Output = Result<Bytes>> + Send;
}

/// Opens message connections to peers.
pub trait Connector: Clone + Send + Sync + 'static {
    /// The sending half.
    type Tx: MessageTx;
    /// The receiving half.
    type Rx: MessageRx;
    /// Connects to node `target` at `addr` (handshake included).
    fn connect(
        &self,
        target: u64,
        addr: &str,
        purpose: ConnPurpose,
    ) -> impl Future<Output = Result<(Self::Tx, Self::Rx)>> + Send;
}

/// Creates [`RemoteNetwork`] clients.
#[derive(Debug, Clone)]
pub struct RemoteNetworkFactory<C> {
    connector: C,
}

impl<C: Connector> RemoteNetworkFactory<C> {
    /// A factory over `connector`.
    pub fn new(connector: C) -> Self {
        RemoteNetworkFactory { connector }
    }
}

/// A client towards one peer.
pub struct RemoteNetwork<C: Connector> {
    connector: C,
    target: u64,
    addr: String,
    rpc: Option<(C::Tx, C::Rx)>,
    /// The connection of the last append stream that ended cleanly, for the next one.
    idle_stream: Option<(C::Tx, C::Rx)>,
}

impl<C: Connector> RaftNetworkFactory<TypeConfig> for RemoteNetworkFactory<C> {
    type Network = RemoteNetwork<C>;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> RemoteNetwork<C> {
        RemoteNetwork {
            connector: self.connector.clone(),
            target,
            addr: node.addr.clone(),
            rpc: None,
            idle_stream: None,
        }
    }
}

fn unreachable(e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::from_string(e.to_string()))
}

fn network(e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(e.to_string()))
}

impl<C: Connector> RemoteNetwork<C> {
    /// One request, one response on the cached RPC connection; any failure drops it. A
    /// cached connection the server closed meanwhile (its idle timeout, or eviction) fails
    /// at once; the call is then retried once on a new connection (Raft RPCs are idempotent).
    async fn call(&mut self, msg: Bytes, ttl: Duration) -> Result<Bytes, RPCError<TypeConfig>> {
        let deadline = tokio::time::Instant::now() + ttl;
        if let Some(conn) = self.rpc.take() {
            match tokio::time::timeout_at(deadline, Self::round_trip(conn, msg.clone())).await {
                Err(_) => return Err(self.no_answer(ttl)),
                Ok(Ok((resp, conn))) => {
                    self.rpc = Some(conn);
                    return Ok(resp);
                }
                Ok(Err(e)) => tracing::debug!(target = self.target, error = %e,
                    "cached RPC connection failed; reconnecting"),
            }
        }
        let fresh = async {
            let conn = self
                .connector
                .connect(self.target, &self.addr, ConnPurpose::Rpc)
                .await
                .map_err(unreachable)?;
            Self::round_trip(conn, msg).await.map_err(network)
        };
        let (resp, conn) = tokio::time::timeout_at(deadline, fresh)
            .await
            .map_err(|_| self.no_answer(ttl))??;
        self.rpc = Some(conn);
        Ok(resp)
    }

    async fn round_trip(
        (mut tx, mut rx): (C::Tx, C::Rx),
        msg: Bytes,
    ) -> Result<(Bytes, (C::Tx, C::Rx))> {
        tx.send(msg).await?;
        let resp = rx.recv().await?;
        Ok((resp, (tx, rx)))
    }

    /// The idle connection of the last clean append stream, unless the server closed it
    /// meanwhile (its idle timeout, an eviction, a restart): an idle append connection
    /// receives nothing, so anything ready to read (the close, or a stray message) rules it
    /// out. A close still on its way is not seen here: that stream then fails like one whose
    /// connection breaks, and openraft opens the next one on a new connection.
    fn take_idle_stream(&mut self) -> Option<(C::Tx, C::Rx)> {
        let (tx, mut rx) = self.idle_stream.take()?;
        // One poll: nothing is consumed when nothing is ready to read.
        match rx.recv().now_or_never() {
            None => Some((tx, rx)),
            Some(_) => {
                tracing::debug!(target = self.target, "idle append connection closed; reconnecting");
                None
            }
        }
    }

    fn no_answer(&self, ttl: Duration) -> RPCError<TypeConfig> {
        network(format!(
            "no answer from node {} within {ttl:?}",
            self.target
        ))
    }
}

impl<C: Connector> RaftNetworkV2<TypeConfig> for RemoteNetwork<C> {
    type SnapshotData = SegmentManifest;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let resp = self
            .call(
                wire::encode_append(&rpc).map_err(network)?,
                option.hard_ttl(),
            )
            .await?;
        wire::decode_append_resp(&resp).map_err(network)
    }

    #[tracing::instrument(name = "replication_stream", skip_all, fields(target = self.target))]
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        _option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let (tx, rx) = match self.take_idle_stream() {
                Some(conn) => conn,
                None => self
                    .connector
                    .connect(self.target, &self.addr, ConnPurpose::AppendStream)
                    .await
                    .map_err(unreachable)?,
            };
            Ok(pipelined(input, tx, rx, &mut self.idle_stream))
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let resp = self
            .call(wire::encode_vote(&rpc, false), option.hard_ttl())
            .await?;
        wire::decode_vote_resp(&resp).map_err(network)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let resp = self
            .call(wire::encode_vote(&rpc, true), option.hard_ttl())
            .await?;
        wire::decode_vote_resp(&resp).map_err(network)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        // Only the manifest travels here; the receiver fetches the segments it lacks in bulk
        // and answers once the snapshot is installed, which can take minutes: no timeout but
        // openraft's cancellation.
        let msg = wire::encode_snapshot(&vote, &snapshot)
            .map_err(|e| StreamingError::Network(NetworkError::from_string(e.to_string())))?;
        let (mut tx, mut rx) = self
            .connector
            .connect(self.target, &self.addr, ConnPurpose::Rpc)
            .await
            .map_err(|e| StreamingError::Unreachable(Unreachable::from_string(e.to_string())))?;
        let exchange = async {
            tx.send(msg).await?;
            rx.recv().await
        };
        // Biased: a fixed polling order keeps simulated runs replayable.
        tokio::select! {
            biased;
            r = exchange => {
                let bytes = r.map_err(|e| StreamingError::Network(NetworkError::from_string(e.to_string())))?;
                let vote = wire::decode_snapshot_resp(&bytes)
                    .map_err(|e| StreamingError::Network(NetworkError::from_string(e.to_string())))?;
                Ok(SnapshotResponse::new(vote))
            }
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }
}

/// Aborts a task when dropped (the output stream owns its sender task).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends requests as they come (window: a bounded queue of unanswered requests) and yields
/// the responses in order. A stream that ends cleanly (input ended, every response a
/// success) leaves its connection in `idle` for the next one.
fn pipelined<'s, S, Tx, Rx>(
    mut input: S,
    mut tx: Tx,
    rx: Rx,
    idle: &'s mut Option<(Tx, Rx)>,
) -> BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    Tx: MessageTx,
    Rx: MessageRx,
{
    // One token per request sent and not yet answered; the capacity is the window.
    let (pending_tx, pending_rx) = mpsc::channel::<()>(MAX_APPENDS_IN_FLIGHT);
    // The sending half, handed back once the input ended with every request sent.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Tx>();
    // Through the runtime's spawn: openraft code runs inside (the request stream), and its
    // random draws must follow the caller's seed in a simulation.
    let sender = super::runtime::spawn(async move {
        while let Some(req) = input.next().await {
            if pending_tx.send(()).await.is_err() {
                return; // the output side is gone
            }
            let msg = match wire::encode_append(&req) {
                Ok(msg) => msg,
                Err(e) => {
                    // Refused, not cut: the stream ends and the receiver sees it fail.
                    tracing::warn!(error = %e, "append request does not fit its encoding");
                    return;
                }
            };
            metrics::counter!("sitelog_replicated_bytes_total").increment(msg.len() as u64);
            if let Err(e) = tx.send(msg).await {
                tracing::debug!(error = %e, "append stream send failed");
                return; // the receiver sees the connection fail
            }
        }
        // Handed back before the tokens' channel closes, so the receiving side finds it
        // once it has seen the last token.
        let _ = done_tx.send(tx);
        drop(pending_tx);
    });
    let guard = AbortOnDrop(sender);
    let state = Some((pending_rx, rx, guard, done_rx, idle));
    let out = futures_util::stream::unfold(state, |state| async move {
        let (mut pending, mut rx, guard, mut done, idle) = state?;
        // Biased towards `pending`: a response only ever follows a token (the sender queues
        // the token before sending), so `rx` is polled only while nothing is in flight and no
        // response can be half read when its future is dropped.
        tokio::select! {
            biased;
            token = pending.recv() => {
                if token.is_none() {
                    // Every request was answered with a success: keep the connection if
                    // the sender finished its input (not if it failed or was cut short).
                    *idle = done.try_recv().ok().map(|tx| (tx, rx));
                    return None;
                }
            }
            _ = rx.recv() => {
                // The server closed the stream while nothing was in flight (its idle timeout,
                // or it made room for another connection): a clean end, not a replication
                // error; openraft opens a new stream when it has something to send.
                tracing::debug!("append stream closed by the server while idle");
                return None;
            }
        }
        let item = match rx.recv().await {
            Ok(msg) => wire::decode_stream_result(&msg).map_err(network),
            Err(e) => Err(network(e)),
        };
        // Stop after a rejection or a failure; openraft opens a new stream as needed.
        let next = matches!(item, Ok(Ok(_))).then_some((pending, rx, guard, done, idle));
        Some((item, next))
    });
    Box::pin(out)
}

/// Handles one request of an RPC connection; always returns a reply (an error message if the
/// request is malformed or the node failed). Votes asked by a node `retired` says was
/// removed from the cluster are refused with an error reply.
pub async fn handle_rpc(
    raft: &Raft,
    from: u64,
    msg: Bytes,
    retired: impl Fn(u64) -> bool,
) -> Bytes {
    let reply = match wire::tag_of(&msg) {
        Some(tag::APPEND) => match wire::decode_append(&msg) {
            Ok(req) if req.vote.leader_id.voted_for != from => {
                Err(speaks_for_another("append", from, req.vote.leader_id.voted_for))
            }
            Ok(req) => raft
                .append_entries(req)
                .await
                .map(|r| wire::encode_append_resp(&r))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        Some(tag::VOTE) | Some(tag::PRE_VOTE) => match wire::decode_vote(&msg) {
            Ok((req, _)) if req.vote.leader_id.voted_for != from => {
                Err(speaks_for_another("vote", from, req.vote.leader_id.voted_for))
            }
            Ok((req, _)) if retired(req.vote.leader_id.voted_for) => Err(format!(
                "node {} was removed from the cluster: no vote for it",
                req.vote.leader_id.voted_for
            )),
            Ok((req, false)) => raft
                .vote(req)
                .await
                .map(|r| wire::encode_vote_resp(&r))
                .map_err(|e| e.to_string()),
            Ok((req, true)) => raft
                .pre_vote(req)
                .await
                .map(|r| wire::encode_vote_resp(&r))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        _ => Err("unknown request".to_string()),
    };
    reply.unwrap_or_else(|e| wire::encode_error(&e))
}

/// Why a consensus message is refused whose leader or candidate is not the node on the other
/// end of the connection (its hello, over TLS checked against its certificate): with a valid
/// certificate of its own, a node could otherwise vote or lead in another's name.
pub(crate) fn speaks_for_another(what: &str, from: u64, claimed: u64) -> String {
    static REFUSED: crate::net::warn_rate::WarnRate =
        crate::net::warn_rate::WarnRate::new(crate::net::warn_rate::WARN_EVERY);
    if let Some(n) = REFUSED.event() {
        tracing::warn!(from, claimed, refused = n, "refused a {what} sent in another node's name");
    }
    format!("node {from} sent a {what} in the name of node {claimed}")
}

/// Serves one append stream until the peer closes it or sends something malformed: feeds
/// the requests to openraft's pipelined `stream_append` and sends each result back, in order.
#[tracing::instrument(name = "serve_append_stream", skip_all)]
pub async fn serve_append_stream<Tx: MessageTx, Rx: MessageRx>(
    raft: Raft,
    from: u64,
    mut tx: Tx,
    rx: Rx,
) -> Result<()> {
    let (bad_tx, mut bad_rx) = mpsc::channel::<String>(1);
    // openraft reads the input in a task of its own, which would keep the connection (and
    // its descriptor) open after this function returns or is dropped (eviction, shutdown)
    // until the peer sends again or the idle timeout: the input ends when `_stop` goes.
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let input = futures_util::stream::unfold(Some((rx, bad_tx)), move |state| async move {
        let (mut rx, bad) = state?;
        let msg = rx.recv().await.ok()?;
        match wire::decode_append(&msg) {
            Ok(req) if req.vote.leader_id.voted_for != from => {
                let claimed = req.vote.leader_id.voted_for;
                let _ = bad.try_send(speaks_for_another("append", from, claimed));
                None
            }
            Ok(req) => Some((req, Some((rx, bad)))),
            Err(e) => {
                let _ = bad.try_send(e.to_string());
                None
            }
        }
    });
    let mut out = std::pin::pin!(raft.stream_append(input.take_until(stopped)));
    while let Some(item) = out.next().await {
        match item {
            Ok(r) => tx.send(wire::encode_stream_result(&r)).await?,
            Err(fatal) => {
                tx.send(wire::encode_error(&fatal.to_string())).await?;
                return Err(super::errors::fatal(&fatal));
            }
        }
    }
    match bad_rx.try_recv() {
        Ok(why) => Err(Error::InvalidArgument(format!("append stream: {why}"))),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
#[path = "remote_tests.rs"]
mod tests;
