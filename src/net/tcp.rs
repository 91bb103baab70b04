//! The TCP transport: a connector for outgoing connections (implements the Raft layer's
//! [`Connector`]) and a server that accepts, handshakes and dispatches incoming ones.
//!
//! Limits (all in [`NetLimits`]): frames are bounded; incoming connections are budgeted per
//! kind (in their handshake, peers, clients, fetch; see `net::budget`), so a flood of one kind
//! cannot starve another, and a full budget evicts its least recently active idle connection;
//! a connection is closed at accept when fewer than `fd_reserve` descriptors would stay free
//! (see `net::descriptors`); a handshake must complete within `handshake_timeout_ms`; any
//! connection that receives nothing for `idle_timeout_ms` is closed. Refusals are logged at
//! most once per second each, with a count (see `net::warn_rate`).
//!
//! Security: with a [`TlsReloader`] every connection, both ways, is mutual TLS 1.3 (see
//! `net::tls`); the hello follows inside it and is checked against the certificate: peer
//! purposes and fetch need the certificate of the node the hello names, a client connection
//! takes its role from its certificate (a node certificate is admin). Until the hello is
//! accepted a connection may send at most [`MAX_PRE_AUTH_BYTES`], and TLS and hello together
//! must finish within `handshake_timeout_ms`. Without TLS everyone is admin.

use super::budget::{Activity, Admission, Budget, Slot};
use super::descriptors::{DescriptorGuard, Headroom};
use super::frame::{read_frame, write_frame};
use super::handshake::{self, Hello, Purpose, ANY_NODE, MAX_HANDSHAKE_BYTES, PROTOCOL_VERSION};
pub use super::limits::{KindBudgets, NetLimits};
use super::tls::{peer_identity, ClientRole, DialTarget, TlsIdentity, TlsReloader};
use super::warn_rate::{WarnRate, WARN_EVERY};
use crate::limits::{MAX_CONSUME_REQUEST_BYTES, MAX_PRE_AUTH_BYTES};
use crate::raft::remote::{ConnPurpose, Connector, MessageRx, MessageTx};
use crate::{Error, Result};
use bytes::Bytes;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, BufReader, BufWriter, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// The first byte of a TLS connection: a handshake record (its ClientHello). Anything else on
/// a TLS port is a plaintext caller.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A TLS record's largest body (RFC 8446 5.1: 2^14 bytes of plaintext, the ClientHello's).
const MAX_TLS_RECORD_BYTES: usize = 1 << 14;
/// A plaintext TLS record: a fatal alert, `protocol_version` (RFC 8446 6): what a plaintext
/// port answers a TLS caller.
const TLS_PROTOCOL_VERSION_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 70];

/// A boxed future, for the dyn-compatible [`Service`].
pub type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The reading half of a connection: a plain TCP half or a TLS stream's.
type ByteRx = Box<dyn AsyncRead + Send + Sync + Unpin>;
/// The writing half of a connection: a plain TCP half or a TLS stream's.
type ByteTx = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// The sending half of a framed connection (plain TCP or TLS).
pub struct FrameTx {
    w: BufWriter<ByteTx>,
    /// Server side: the connection's activity record in its budget.
    activity: Option<Arc<Activity>>,
}

impl std::fmt::Debug for FrameTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameTx").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for FrameRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameRx")
            .field("max_frame_bytes", &self.max_frame_bytes)
            .finish_non_exhaustive()
    }
}

/// The receiving half of a framed connection (plain TCP or TLS).
pub struct FrameRx {
    r: BufReader<ByteRx>,
    max_frame_bytes: usize,
    /// Server side: nothing received for this long reads as a clean close.
    idle: Option<Duration>,
    /// Server side: the connection's activity record in its budget.
    activity: Option<Arc<Activity>>,
}

impl MessageTx for FrameTx {
    async fn send(&mut self, msg: Bytes) -> Result<()> {
        write_frame(&mut self.w, &msg).await?;
        if let Some(a) = &self.activity {
            a.sent();
        }
        Ok(())
    }
}

impl MessageRx for FrameRx {
    async fn recv(&mut self) -> Result<Bytes> {
        self.recv_or_close()
            .await?
            .ok_or_else(|| Error::Protocol("connection closed (by the peer, or idle)".into()))
    }
}

impl FrameRx {

    /// The next message, `None` when the peer closed between messages (or, on a server
    /// connection, sent nothing for the idle timeout).
    pub async fn recv_or_close(&mut self) -> Result<Option<Bytes>> {
        let frame = match self.idle {
            None => read_frame(&mut self.r, self.max_frame_bytes).await?,
            Some(idle) => {
                match timeout(idle, read_frame(&mut self.r, self.max_frame_bytes)).await {
                    Err(_) => return Ok(None),
                    Ok(r) => r?,
                }
            }
        };
        if let (Some(a), Some(_)) = (&self.activity, &frame) {
            a.received();
        }
        Ok(frame)
    }
}

/// The framed halves over a byte stream's halves.
fn framed(
    r: impl AsyncRead + Send + Sync + Unpin + 'static,
    w: impl AsyncWrite + Send + Sync + Unpin + 'static,
    limits: &NetLimits,
) -> (FrameTx, FrameRx) {
    (
        FrameTx {
            w: BufWriter::new(Box::new(w)),
            activity: None,
        },
        FrameRx {
            r: BufReader::new(Box::new(r)),
            max_frame_bytes: limits.max_frame_bytes,
            idle: None,
            activity: None,
        },
    )
}

/// A server connection's bytes until it is authenticated: reads fail once the peer sent more
/// than [`MAX_PRE_AUTH_BYTES`] before `authenticated` is set (after its TLS handshake and
/// hello were accepted), so nobody unknown makes the node read, buffer or allocate more.
/// Writes pass through.
struct PreAuth<S> {
    inner: S,
    read_bytes: usize,
    authenticated: Arc<AtomicBool>,
}

impl<S> PreAuth<S> {
    fn new(inner: S, authenticated: Arc<AtomicBool>) -> Self {
        PreAuth {
            inner,
            read_bytes: 0,
            authenticated,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PreAuth<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if !this.authenticated.load(Ordering::Acquire) {
            this.read_bytes += buf.filled().len() - before;
            if this.read_bytes > MAX_PRE_AUTH_BYTES {
                return Poll::Ready(Err(std::io::Error::other(format!(
                    "more than {MAX_PRE_AUTH_BYTES} bytes before authentication"
                ))));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PreAuth<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

fn net_io(what: &str, e: std::io::Error) -> Error {
    Error::Io {
        path: what.into(),
        source: e,
    }
}

/// Opens connections to other nodes (or, for clients, to any node).
#[derive(Debug, Clone)]
pub struct TcpConnector {
    /// The cluster spoken to.
    pub cluster_id: u64,
    /// The calling node ([`ANY_NODE`] for a client).
    pub from_node: u64,
    /// Limits.
    pub limits: NetLimits,
    /// TLS with this (node's or client's) current configuration; `None`: plaintext.
    pub tls: Option<Arc<TlsReloader>>,
}

impl TcpConnector {
    /// Connects to `addr`, handshakes (TLS, then the hello) for `purpose`, and returns the
    /// framed halves and the answering node's id. Over TLS the server's certificate must
    /// name `to_node` (any node of the cluster for [`ANY_NODE`], and then the node id its
    /// answer gives).
    ///
    /// A node whose handshake budget is full of young handshakes closes newcomers at once
    /// (see `NetLimits::max_handshaking`): such a refusal ([`Error::ConnectRefused`]) is
    /// tried again after a short, growing, jittered backoff, within the time one open is
    /// allowed (`connect_timeout_ms + handshake_timeout_ms`) and at most
    /// [`MAX_CONNECT_ATTEMPTS`] times; the last refusal is returned when out of either.
    pub async fn open(
        &self,
        addr: &str,
        to_node: u64,
        purpose: Purpose,
    ) -> Result<(FrameTx, FrameRx, u64)> {
        let allowed_ms = self.limits.connect_timeout_ms + self.limits.handshake_timeout_ms;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(allowed_ms);
        let mut backoff_ms = CONNECT_RETRY_MIN_MS;
        let mut attempt = 1;
        loop {
            match self.open_once(addr, to_node, purpose).await {
                Err(e @ Error::ConnectRefused { .. }) => {
                    // Jittered: a herd refused together must not come back together.
                    let pause = Duration::from_millis(fastrand::u64(backoff_ms / 2..=backoff_ms));
                    if attempt >= MAX_CONNECT_ATTEMPTS
                        || tokio::time::Instant::now() + pause >= deadline
                    {
                        return Err(e);
                    }
                    tracing::debug!(%addr, attempt, error = %e, "connection refused; trying again");
                    tokio::time::sleep(pause).await;
                    backoff_ms = (backoff_ms * 2).min(CONNECT_RETRY_MAX_MS);
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// One try of [`TcpConnector::open`].
    async fn open_once(
        &self,
        addr: &str,
        to_node: u64,
        purpose: Purpose,
    ) -> Result<(FrameTx, FrameRx, u64)> {
        let ms = |v| Duration::from_millis(v);
        let stream = timeout(ms(self.limits.connect_timeout_ms), TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Protocol(format!("connect to {addr} timed out")))?
            .map_err(|e| net_io(&format!("<connect {addr}>"), e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| net_io("<nodelay>", e))?;
        let handshake = async {
            let (tx, rx, server) = self.secure(stream, addr, to_node).await?;
            let node = self.hello(tx, rx, addr, to_node, purpose).await?;
            if let Some(identity) = server {
                // A client dialling any node learns the id from the answer: the certificate
                // must be that node's.
                identity.check_node(node.2)?;
            }
            Ok::<_, Error>(node)
        };
        timeout(ms(self.limits.handshake_timeout_ms), handshake)
            .await
            .map_err(|_| Error::Protocol(format!("handshake with {addr} timed out")))?
    }

    /// The framed halves over plain TCP, or over TLS (then with the server's identity).
    async fn secure(
        &self,
        stream: TcpStream,
        addr: &str,
        to_node: u64,
    ) -> Result<(FrameTx, FrameRx, Option<TlsIdentity>)> {
        let Some(tls) = &self.tls else {
            let (r, w) = stream.into_split();
            let (tx, rx) = framed(r, w, &self.limits);
            return Ok((tx, rx, None));
        };
        let target = if to_node == ANY_NODE {
            DialTarget::AnyNode
        } else {
            DialTarget::Node(to_node)
        };
        let stream = tls
            .current()
            .connector()
            .connect(target.server_name(), stream)
            .await
            .map_err(|e| match closed_early(&e) {
                true => refused(addr, e),
                false => super::tls::handshake_error(e),
            })?;
        let server = peer_identity(stream.get_ref().1)?;
        let (r, w) = tokio::io::split(stream);
        let (tx, rx) = framed(r, w, &self.limits);
        Ok((tx, rx, Some(server)))
    }

    async fn hello(
        &self,
        mut tx: FrameTx,
        mut rx: FrameRx,
        addr: &str,
        to_node: u64,
        purpose: Purpose,
    ) -> Result<(FrameTx, FrameRx, u64)> {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            purpose,
            cluster_id: self.cluster_id,
            from_node: self.from_node,
            to_node,
        };
        // A node refuses with an answer; closing (or resetting) without one is a newcomer
        // closed at once or evicted, to be tried again.
        let early = |e: Error| match e {
            Error::Io { source, .. } if closed_early(&source) => refused(addr, source),
            e => e,
        };
        write_frame(&mut tx.w, &hello.encode()).await.map_err(early)?;
        let answer = read_frame(&mut rx.r, MAX_HANDSHAKE_BYTES)
            .await
            .map_err(early)?
            .ok_or_else(|| Error::ConnectRefused {
                addr: addr.to_string(),
                reason: "closed without an answer".into(),
            })?;
        let node = handshake::decode_answer(&answer, self.cluster_id)?;
        Ok((tx, rx, node))
    }
}

/// First pause before connecting again after [`Error::ConnectRefused`].
const CONNECT_RETRY_MIN_MS: u64 = 10;
/// Longest pause between two tries: a refused herd is let in within a few of these.
const CONNECT_RETRY_MAX_MS: u64 = 200;
/// Most tries of one [`TcpConnector::open`] (the time allowed bounds them first).
pub const MAX_CONNECT_ATTEMPTS: u32 = 64;

/// Whether `e` says the other end closed or reset the connection (no answer, no TLS alert).
fn closed_early(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

fn refused(addr: &str, e: std::io::Error) -> Error {
    Error::ConnectRefused {
        addr: addr.to_string(),
        reason: e.to_string(),
    }
}

impl Connector for TcpConnector {
    type Tx = FrameTx;
    type Rx = FrameRx;

    async fn connect(
        &self,
        target: u64,
        addr: &str,
        purpose: ConnPurpose,
    ) -> Result<(FrameTx, FrameRx)> {
        let purpose = match purpose {
            ConnPurpose::Rpc => Purpose::Rpc,
            ConnPurpose::AppendStream => Purpose::AppendStream,
        };
        let (tx, rx, _) = self.open(addr, target, purpose).await?;
        Ok((tx, rx))
    }
}

/// What a server does with accepted connections (implemented by the node).
pub trait Service: Send + Sync + 'static {
    /// Answers one Raft RPC.
    fn rpc(&self, from: u64, msg: Bytes) -> BoxFut<Bytes>;
    /// Serves one append stream to its end.
    fn append_stream(&self, from: u64, tx: FrameTx, rx: FrameRx) -> BoxFut<Result<()>>;
    /// Answers one client request of a client with `role` (from its certificate; admin for
    /// a node's certificate and on a plaintext server).
    fn client(&self, role: ClientRole, msg: Bytes) -> BoxFut<Bytes>;
    /// Answers one segment-fetch request (see `net::fetch`).
    fn fetch(&self, msg: Bytes) -> BoxFut<Bytes>;
}

/// Identity and limits of a server.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    /// This node's id.
    pub node_id: u64,
    /// This node's cluster.
    pub cluster_id: u64,
    /// Limits.
    pub limits: NetLimits,
    /// TLS with this node's current configuration (taken by each connection when accepted);
    /// `None`: plaintext.
    pub tls: Option<Arc<TlsReloader>>,
}

/// A connection past its handshake is evicted only after this long without a message
/// either way (see `net::budget`): longer than any round trip and any pause between two
/// requests of a client or peer in steady use, far shorter than the idle timeout.
pub const MIN_QUIET_FOR_EVICTION_MS: u64 = 1000;

/// The per-kind budgets of one server.
#[derive(Debug, Clone)]
struct Kinds {
    handshaking: Budget,
    peers: Budget,
    clients: Budget,
    fetch: Budget,
}

impl Kinds {
    fn new(b: KindBudgets, limits: &NetLimits) -> Self {
        // A connection in its handshake is never active (nothing marks it), so its quiet time
        // is its age: it is evicted only once old enough to have finished an honest one.
        let hs_age = Duration::from_millis(limits.min_handshake_age_for_eviction_ms());
        let quiet = Duration::from_millis(MIN_QUIET_FOR_EVICTION_MS);
        Kinds {
            handshaking: Budget::new("handshaking", b.handshaking, hs_age),
            peers: Budget::new("peer", b.peers, quiet),
            clients: Budget::new("client", b.clients, quiet),
            fetch: Budget::new("fetch", b.fetch, quiet),
        }
    }

    /// Descriptors are short: closes one idle connection so that the next newcomer finds a
    /// descriptor, from the kind that is not peers and holds the most connections (a flood
    /// still queued in the listen backlog refills the handshake budget at once, so shedding
    /// there alone would free nothing), peers last. Returns the kind it closed.
    fn shed_one(&self) -> Option<&'static str> {
        let mut others = [&self.handshaking, &self.clients, &self.fetch];
        others.sort_by_key(|b| std::cmp::Reverse(b.len()));
        others
            .into_iter()
            .chain([&self.peers])
            .find(|b| b.evict_one())
            .map(|b| b.name())
    }

    fn for_purpose(&self, p: Purpose) -> &Budget {
        match p {
            Purpose::Rpc | Purpose::AppendStream => &self.peers,
            Purpose::Client => &self.clients,
            Purpose::Fetch => &self.fetch,
        }
    }
}

/// Why connections were closed early; each reason is logged at most once per
/// [`WARN_EVERY`], with the count since its last line.
#[derive(Debug)]
struct Refusals {
    accept_failed: WarnRate,
    no_descriptors: WarnRate,
    budget_full: WarnRate,
    evicted: WarnRate,
    bad_hello: WarnRate,
    /// TLS handshakes that failed (other CA, expired, plaintext on a TLS port), timed out
    /// handshakes, and hellos that the certificate does not back.
    unauthenticated: WarnRate,
}

impl Refusals {
    fn new() -> Self {
        let w = || WarnRate::new(WARN_EVERY);
        Refusals {
            accept_failed: w(),
            no_descriptors: w(),
            budget_full: w(),
            evicted: w(),
            bad_hello: w(),
            unauthenticated: w(),
        }
    }
}

fn count_refusal(reason: &'static str) {
    metrics::counter!("sitelog_net_connections_refused_total", "reason" => reason).increment(1);
}

/// Accepts connections on `listener` until the task is dropped or aborted; dropping it also
/// ends every connection it accepted (they live in its `JoinSet`), so a stopped node keeps
/// nothing of itself alive through an open connection.
pub async fn serve(listener: TcpListener, id: ServerIdentity, service: Arc<dyn Service>) {
    let spare = DescriptorGuard::new(id.limits.fd_reserve).spare_now();
    let budgets = id.limits.fit(spare);
    // The last descriptors above the reserve are kept for peers (and their handshakes).
    let mut fds = DescriptorGuard::new(id.limits.fd_reserve)
        .with_peer_margin(budgets.peers + budgets.handshaking);
    tracing::info!(
        ?budgets,
        fd_reserve = id.limits.fd_reserve,
        "connection budgets"
    );
    let kinds = Kinds::new(budgets, &id.limits);
    let refusals = Arc::new(Refusals::new());
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: keep serving the connections we have, give back an
                // idle one's descriptor if out of them, back off.
                count_refusal("accept_failed");
                let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                let shed = out_of_fds.then(|| kinds.shed_one()).flatten();
                if let Some(n) = refusals.accept_failed.event() {
                    tracing::warn!(error = %e, failures = n, ?shed, "accept failed; backing off");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let headroom = fds.headroom(stream.as_raw_fd());
        if headroom == Headroom::None {
            count_refusal("fd_reserve");
            let shed = kinds.shed_one();
            if let Some(n) = refusals.no_descriptors.event() {
                tracing::warn!(%peer, refused = n, reserve = id.limits.fd_reserve, ?shed,
                    "descriptor reserve reached: closing new and idle connections");
            }
            continue; // dropping the stream closes it
        }
        let Some(slot) = admit(&kinds.handshaking, &refusals, peer) else {
            continue;
        };
        let (service, kinds, refusals) = (service.clone(), kinds.clone(), refusals.clone());
        let id = id.clone();
        conns.spawn(async move {
            let conn = Conn {
                id,
                peer,
                kinds,
                refusals,
                peers_only: headroom == Headroom::PeersOnly,
            };
            if let Err(e) = conn.serve(stream, slot, service).await {
                tracing::debug!(%peer, error = %e, "connection closed");
            }
        });
    }
}

/// A place in `budget`, evicting an idle connection if it is full; `None` (logged,
/// counted) when every place is busy.
fn admit(budget: &Budget, refusals: &Refusals, peer: SocketAddr) -> Option<Slot> {
    match budget.admit() {
        Admission::Admitted { slot, evicted } => {
            if evicted {
                count_refusal("evicted");
                if let Some(n) = refusals.evicted.event() {
                    tracing::warn!(%peer, kind = budget.name(), evicted = n,
                        capacity = budget.capacity(),
                        "connection budget full: closed the least recently active idle ones");
                }
            }
            Some(slot)
        }
        Admission::Refused => {
            count_refusal("budget_full");
            if let Some(n) = refusals.budget_full.event() {
                tracing::warn!(%peer, kind = budget.name(), refused = n,
                    capacity = budget.capacity(),
                    "connection budget full of busy (or, handshaking, young) connections: \
                     refused newcomers");
            }
            None
        }
    }
}

/// One accepted connection.
struct Conn {
    id: ServerIdentity,
    peer: SocketAddr,
    kinds: Kinds,
    refusals: Arc<Refusals>,
    /// Accepted with little descriptor headroom: kept only if it is a peer.
    peers_only: bool,
}

fn evicted_err() -> Error {
    Error::Protocol("closed to make room for another connection".into())
}

impl Conn {
    async fn serve(
        self,
        stream: TcpStream,
        hs_slot: Slot,
        service: Arc<dyn Service>,
    ) -> Result<()> {
        stream
            .set_nodelay(true)
            .map_err(|e| net_io("<nodelay>", e))?;
        let authenticated = Arc::new(AtomicBool::new(false));
        let handshake_ms = Duration::from_millis(self.id.limits.handshake_timeout_ms);
        // TLS and hello together, within one deadline.
        let opening = async {
            let (mut tx, mut rx, identity) = self.secure(stream, authenticated.clone()).await?;
            let (hello, role) = self.hello(&mut tx, &mut rx, identity.as_ref()).await?;
            Ok::<_, Error>((tx, rx, hello, role))
        };
        let (mut tx, mut rx, hello, role) = tokio::select! {
            h = timeout(handshake_ms, opening) => h.map_err(|_| self.slow_handshake())??,
            _ = hs_slot.evicted() => return Err(evicted_err()),
        };
        authenticated.store(true, Ordering::Release);
        if hello.purpose == Purpose::Client && role == ClientRole::Consume {
            // Reads and status requests are a few bytes.
            rx.max_frame_bytes = rx.max_frame_bytes.min(MAX_CONSUME_REQUEST_BYTES);
        }
        let budget = self.kinds.for_purpose(hello.purpose);
        let is_peer = matches!(hello.purpose, Purpose::Rpc | Purpose::AppendStream);
        let slot = if self.peers_only && !is_peer {
            count_refusal("fd_reserve");
            let shed = self.kinds.shed_one();
            if let Some(n) = self.refusals.no_descriptors.event() {
                tracing::warn!(peer = %self.peer, refused = n, kind = budget.name(), ?shed,
                    "descriptors low: only peer connections are accepted");
            }
            None
        } else {
            admit(budget, &self.refusals, self.peer)
        };
        let Some(slot) = slot else {
            let why = handshake::Refusal::other(if self.peers_only && !is_peer {
                "descriptors are short: only peer connections are accepted; try again later"
                    .to_string()
            } else {
                format!(
                    "too many busy {} connections; try again later",
                    budget.name()
                )
            });
            let _ = write_frame(
                &mut tx.w,
                &handshake::encode_answer(self.id.node_id, Some(&why)),
            )
            .await;
            return Err(Error::Protocol(why.reason));
        };
        drop(hs_slot);
        write_frame(&mut tx.w, &handshake::encode_answer(self.id.node_id, None)).await?;
        tx.activity = Some(slot.activity());
        rx.activity = Some(slot.activity());
        rx.idle = Some(Duration::from_millis(self.id.limits.idle_timeout_ms));
        let work = async {
            match hello.purpose {
                // `from_node` is the caller's own word in plaintext; over TLS the hello was
                // checked against its certificate. The consensus messages are checked against
                // it: a peer speaks only for itself.
                Purpose::AppendStream => service.append_stream(hello.from_node, tx, rx).await,
                Purpose::Rpc => request_loop(tx, rx, |m| service.rpc(hello.from_node, m)).await,
                Purpose::Client => {
                    pipeline::pipelined_loop(tx, rx, pipeline::Window::CLIENT, |m| {
                        service.client(role, m)
                    })
                    .await
                }
                Purpose::Fetch => request_loop(tx, rx, |m| service.fetch(m)).await,
            }
        };
        tokio::select! {
            r = work => r,
            _ = slot.evicted() => Err(evicted_err()),
        }
    }

    fn slow_handshake(&self) -> Error {
        count_refusal("handshake_timeout");
        if let Some(n) = self.refusals.unauthenticated.event() {
            tracing::warn!(peer = %self.peer, refused = n, "closed a connection: no handshake in time");
        }
        Error::Protocol("no handshake in time".into())
    }

    /// The framed halves over plain TCP, or over TLS once its handshake succeeded (then with
    /// the peer's identity). Reads are limited to [`MAX_PRE_AUTH_BYTES`] until
    /// `authenticated` is set.
    async fn secure(
        &self,
        stream: TcpStream,
        authenticated: Arc<AtomicBool>,
    ) -> Result<(FrameTx, FrameRx, Option<TlsIdentity>)> {
        let Some(tls) = &self.id.tls else {
            let mut first = [0u8; 1];
            let peeked = stream.peek(&mut first).await.map_err(|e| net_io("<peek>", e))?;
            if peeked == 1 && first[0] == TLS_HANDSHAKE_RECORD {
                return Err(self.refuse_tls(stream).await);
            }
            let (r, w) = stream.into_split();
            let (tx, rx) = framed(PreAuth::new(r, authenticated), w, &self.id.limits);
            return Ok((tx, rx, None));
        };
        let acceptor = tls.current().acceptor().ok_or_else(|| Error::Tls {
            reason: "the server's TLS configuration is not a node's".into(),
        })?;
        let mut first = [0u8; 1];
        let peeked = stream.peek(&mut first).await.map_err(|e| net_io("<peek>", e))?;
        if peeked == 1 && first[0] != TLS_HANDSHAKE_RECORD {
            return Err(self.refuse_plaintext(stream).await);
        }
        let accepted = acceptor.accept(PreAuth::new(stream, authenticated)).await;
        let stream = accepted
            .map_err(super::tls::handshake_error)
            .and_then(|s| peer_identity(s.get_ref().1).map(|id| (s, id)));
        let (stream, identity) = stream.inspect_err(|e| {
            count_refusal("tls");
            if let Some(n) = self.refusals.unauthenticated.event() {
                // rustls' reason: alerts and certificate errors, never key material.
                tracing::warn!(peer = %self.peer, error = %e, refused = n, "refused a TLS connection");
            }
        })?;
        let (r, w) = tokio::io::split(stream);
        let (tx, rx) = framed(r, w, &self.id.limits);
        Ok((tx, rx, Some(identity)))
    }

    /// A plaintext caller on a TLS port (a sitelog client or node started without
    /// `--tls-dir`): answered in plaintext with a refusal it reads as [`Error::Tls`], so that
    /// it stops at once with the reason instead of retrying until its deadline. The caller's
    /// hello (at most a handshake frame) is read first: closing a socket with unread bytes
    /// resets it, and the reset could reach the caller before the answer.
    async fn refuse_plaintext(&self, mut stream: TcpStream) -> Error {
        count_refusal("tls");
        if let Some(n) = self.refusals.unauthenticated.event() {
            tracing::warn!(peer = %self.peer, refused = n, "refused a plaintext connection on the TLS port");
        }
        if let Ok(Some(_)) = read_frame(&mut stream, MAX_HANDSHAKE_BYTES).await {
            let why = handshake::Refusal::identity(
                "this node serves mutual TLS only: connect with a certificate (--tls-dir), not in plaintext",
            );
            let answer = handshake::encode_answer(self.id.node_id, Some(&why));
            let _ = write_frame(&mut stream, &answer).await;
        }
        Error::Tls {
            reason: "a plaintext connection to a TLS port".into(),
        }
    }

    /// A TLS caller on a plaintext port (a client or node given `--tls-dir` against one
    /// started `--insecure`): answered with a fatal TLS alert (`protocol_version`), which
    /// its TLS stack reads as a refused handshake ([`Error::Tls`]): it stops at once, where a
    /// bare close would read as a busy node ([`Error::ConnectRefused`]) and be tried again.
    /// The ClientHello (one record, at most 16 KiB + 5) is read first, so that the close
    /// sends no reset ahead of the alert.
    async fn refuse_tls(&self, mut stream: TcpStream) -> Error {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        count_refusal("tls");
        if let Some(n) = self.refusals.unauthenticated.event() {
            tracing::warn!(peer = %self.peer, refused = n, "refused a TLS connection on the plaintext port");
        }
        let mut head = [0u8; 5];
        if stream.read_exact(&mut head).await.is_ok() {
            let len = usize::from(u16::from_be_bytes([head[3], head[4]])).min(MAX_TLS_RECORD_BYTES);
            let mut body = vec![0u8; len];
            let _ = stream.read_exact(&mut body).await;
            let _ = stream.write_all(&TLS_PROTOCOL_VERSION_ALERT).await;
        }
        Error::Tls {
            reason: "a TLS connection to a plaintext port".into(),
        }
    }

    /// Reads and checks the hello (against the certificate's identity, over TLS); refusals
    /// are answered. The client role the connection's requests are authorized with.
    async fn hello(
        &self,
        tx: &mut FrameTx,
        rx: &mut FrameRx,
        identity: Option<&TlsIdentity>,
    ) -> Result<(Hello, ClientRole)> {
        let peer = self.peer;
        let hello = read_frame(&mut rx.r, MAX_HANDSHAKE_BYTES)
            .await?
            .ok_or_else(|| Error::Protocol("closed before the handshake".into()))?;
        let hello = Hello::decode(&hello).inspect_err(|e| {
            count_refusal("bad_hello");
            if let Some(n) = self.refusals.bad_hello.event() {
                tracing::warn!(%peer, error = %e, refused = n, "refused a connection: not a sitelog peer");
            }
        })?;
        if let Err(refusal) = hello.check(self.id.cluster_id, self.id.node_id) {
            count_refusal("bad_hello");
            let reason = &refusal.reason;
            if let Some(n) = self.refusals.bad_hello.event() {
                tracing::warn!(%peer, from = hello.from_node, %reason, refused = n, "refused a connection");
            }
            let answer = handshake::encode_answer(self.id.node_id, Some(&refusal));
            let _ = write_frame(&mut tx.w, &answer).await;
            return Err(Error::Protocol(refusal.reason));
        }
        match hello.authorize(identity) {
            Ok(role) => Ok((hello, role)),
            Err(refusal) => {
                count_refusal("identity");
                let reason = &refusal.reason;
                if let Some(n) = self.refusals.unauthenticated.event() {
                    tracing::warn!(%peer, from = hello.from_node, %reason, refused = n,
                        "refused a connection: its certificate does not back its hello");
                }
                let answer = handshake::encode_answer(self.id.node_id, Some(&refusal));
                let _ = write_frame(&mut tx.w, &answer).await;
                Err(Error::Tls {
                    reason: refusal.reason,
                })
            }
        }
    }
}

/// Answers requests in turn until the peer closes, or sends nothing for the idle timeout.
///
/// Raft RPCs and segment fetches are answered so: a node's Raft client sends one RPC at a
/// time per connection, and a fetch chunk is megabytes of disk and CPU that the fetching node
/// asks for in turn. Client requests are pipelined (see [`pipeline`]).
async fn request_loop(
    mut tx: FrameTx,
    mut rx: FrameRx,
    handle: impl Fn(Bytes) -> BoxFut<Bytes>,
) -> Result<()> {
    while let Some(msg) = rx.recv_or_close().await? {
        let reply = handle(msg).await;
        tx.send(reply).await?;
    }
    Ok(())
}

/// A segment-fetch connection to any node (see `net::fetch`), from node `from_node` (over
/// TLS, the node whose certificate `tls` holds; [`ANY_NODE`] is accepted in plaintext only).
pub async fn connect_fetch(
    addr: &str,
    cluster_id: u64,
    from_node: u64,
    limits: NetLimits,
    tls: Option<Arc<TlsReloader>>,
) -> Result<(FrameTx, FrameRx, u64)> {
    let c = TcpConnector {
        cluster_id,
        from_node,
        limits,
        tls,
    };
    c.open(addr, ANY_NODE, Purpose::Fetch).await
}

/// A plaintext client connection to a node (not a node itself). For tests.
#[cfg(any(test, feature = "testing"))]
pub async fn connect_client(
    addr: &str,
    cluster_id: u64,
    limits: NetLimits,
) -> Result<(FrameTx, FrameRx, u64)> {
    connect_client_secured(addr, cluster_id, limits, None).await
}

/// A client connection to any node, over TLS with the client certificate of `tls` when
/// given.
pub async fn connect_client_secured(
    addr: &str,
    cluster_id: u64,
    limits: NetLimits,
    tls: Option<Arc<TlsReloader>>,
) -> Result<(FrameTx, FrameRx, u64)> {
    let c = TcpConnector {
        cluster_id,
        from_node: ANY_NODE,
        limits,
        tls,
    };
    c.open(addr, ANY_NODE, Purpose::Client).await
}

#[path = "pipeline.rs"]
mod pipeline;

#[cfg(test)]
#[path = "tcp_tests.rs"]
mod tests;
