//! The TCP transport: a connector for outgoing connections (implements the Raft layer's
//! [`Connector`]) and a server that accepts, handshakes and dispatches incoming ones.
//!
//! Limits (all in [`NetLimits`]): frames are bounded; at most `max_connections` incoming
//! connections are served at once (more are closed at accept, so a flood of half-open or idle
//! connections cannot grow memory); a handshake must complete within `handshake_timeout_ms`;
//! an RPC or client connection idle for `idle_timeout_ms` is closed.

use super::frame::{read_frame, write_frame};
use super::handshake::{self, Hello, Purpose, ANY_NODE, MAX_HANDSHAKE_BYTES, PROTOCOL_VERSION};
use crate::raft::remote::{ConnPurpose, Connector, MessageRx, MessageTx};
use crate::{Error, Result};
use bytes::Bytes;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;

/// A boxed future, for the dyn-compatible [`Service`].
pub type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Network limits, with documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetLimits {
    /// Largest message body accepted. Default 72 MiB: a replication message holds at most 64
    /// entries of at most 1 MiB (the node's record limit) plus headers. Only a peer that
    /// passed the handshake can send a frame this large; one that has not is limited to 512
    /// bytes.
    pub max_frame_bytes: usize,
    /// Most incoming connections served at once. Default 256.
    pub max_connections: usize,
    /// Time allowed for connecting (outgoing). Default 1000 ms.
    pub connect_timeout_ms: u64,
    /// Time allowed for the handshake. Default 2000 ms.
    pub handshake_timeout_ms: u64,
    /// An RPC or client connection with no request for this long is closed. Default 300 s.
    pub idle_timeout_ms: u64,
}

impl Default for NetLimits {
    fn default() -> Self {
        NetLimits {
            max_frame_bytes: 72 << 20,
            max_connections: 256,
            connect_timeout_ms: 1000,
            handshake_timeout_ms: 2000,
            idle_timeout_ms: 300_000,
        }
    }
}

/// The sending half of a framed connection.
#[derive(Debug)]
pub struct FrameTx(BufWriter<OwnedWriteHalf>);

/// The receiving half of a framed connection.
#[derive(Debug)]
pub struct FrameRx {
    r: BufReader<OwnedReadHalf>,
    max_frame_bytes: usize,
}

impl MessageTx for FrameTx {
    async fn send(&mut self, msg: Bytes) -> Result<()> {
        write_frame(&mut self.0, &msg).await
    }
}

impl MessageRx for FrameRx {
    async fn recv(&mut self) -> Result<Bytes> {
        read_frame(&mut self.r, self.max_frame_bytes)
            .await?
            .ok_or_else(|| Error::Protocol("connection closed by peer".into()))
    }
}

impl FrameRx {
    /// The next message, `None` when the peer closed between messages.
    pub async fn recv_or_close(&mut self) -> Result<Option<Bytes>> {
        read_frame(&mut self.r, self.max_frame_bytes).await
    }
}

fn split(stream: TcpStream, limits: &NetLimits) -> (FrameTx, FrameRx) {
    let (r, w) = stream.into_split();
    (
        FrameTx(BufWriter::new(w)),
        FrameRx {
            r: BufReader::new(r),
            max_frame_bytes: limits.max_frame_bytes,
        },
    )
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
}

impl TcpConnector {
    /// Connects to `addr`, handshakes for `purpose`, and returns the framed halves and the
    /// answering node's id.
    pub async fn open(
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
        let (mut tx, mut rx) = split(stream, &self.limits);
        let hello = Hello {
            version: PROTOCOL_VERSION,
            purpose,
            cluster_id: self.cluster_id,
            from_node: self.from_node,
            to_node,
        };
        let exchange = async {
            write_frame(&mut tx.0, &hello.encode()).await?;
            let answer = read_frame(&mut rx.r, MAX_HANDSHAKE_BYTES)
                .await?
                .ok_or_else(|| Error::Protocol(format!("{addr} closed during the handshake")))?;
            handshake::decode_answer(&answer)
        };
        let node = timeout(ms(self.limits.handshake_timeout_ms), exchange)
            .await
            .map_err(|_| Error::Protocol(format!("handshake with {addr} timed out")))??;
        Ok((tx, rx, node))
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
    fn rpc(&self, msg: Bytes) -> BoxFut<Bytes>;
    /// Serves one append stream to its end.
    fn append_stream(&self, tx: FrameTx, rx: FrameRx) -> BoxFut<Result<()>>;
    /// Answers one client request.
    fn client(&self, msg: Bytes) -> BoxFut<Bytes>;
    /// Answers one segment-fetch request (see `net::fetch`).
    fn fetch(&self, msg: Bytes) -> BoxFut<Bytes>;
}

/// Identity and limits of a server.
#[derive(Debug, Clone, Copy)]
pub struct ServerIdentity {
    /// This node's id.
    pub node_id: u64,
    /// This node's cluster.
    pub cluster_id: u64,
    /// Limits.
    pub limits: NetLimits,
}

/// Accepts connections on `listener` until the task is dropped or aborted; dropping it also
/// ends every connection it accepted (they live in its `JoinSet`), so a stopped node keeps
/// nothing of itself alive through an open connection.
pub async fn serve(listener: TcpListener, id: ServerIdentity, service: Arc<dyn Service>) {
    let slots = Arc::new(Semaphore::new(id.limits.max_connections));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: keep serving the connections we have.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = id.limits.max_connections, "too many connections; closing");
            continue; // dropping the stream closes it
        };
        let service = service.clone();
        conns.spawn(async move {
            if let Err(e) = serve_conn(stream, peer, id, service).await {
                tracing::debug!(%peer, error = %e, "connection closed");
            }
            drop(permit);
        });
    }
}

async fn serve_conn(
    stream: TcpStream,
    peer: SocketAddr,
    id: ServerIdentity,
    service: Arc<dyn Service>,
) -> Result<()> {
    stream
        .set_nodelay(true)
        .map_err(|e| net_io("<nodelay>", e))?;
    let (mut tx, mut rx) = split(stream, &id.limits);
    let handshake_ms = Duration::from_millis(id.limits.handshake_timeout_ms);
    let hello = timeout(handshake_ms, read_frame(&mut rx.r, MAX_HANDSHAKE_BYTES))
        .await
        .map_err(|_| Error::Protocol("no handshake in time".into()))??
        .ok_or_else(|| Error::Protocol("closed before the handshake".into()))?;
    let hello = Hello::decode(&hello).inspect_err(|e| {
        tracing::warn!(%peer, error = %e, "refused a connection: not a sitelog peer");
    })?;
    if let Err(reason) = hello.check(id.cluster_id, id.node_id) {
        tracing::warn!(%peer, from = hello.from_node, %reason, "refused a connection");
        let _ = write_frame(
            &mut tx.0,
            &handshake::encode_answer(id.node_id, Some(&reason)),
        )
        .await;
        return Err(Error::Protocol(reason));
    }
    write_frame(&mut tx.0, &handshake::encode_answer(id.node_id, None)).await?;
    match hello.purpose {
        Purpose::AppendStream => service.append_stream(tx, rx).await,
        Purpose::Rpc => request_loop(tx, rx, id.limits, |m| service.rpc(m)).await,
        Purpose::Client => request_loop(tx, rx, id.limits, |m| service.client(m)).await,
        Purpose::Fetch => request_loop(tx, rx, id.limits, |m| service.fetch(m)).await,
    }
}

async fn request_loop(
    mut tx: FrameTx,
    mut rx: FrameRx,
    limits: NetLimits,
    handle: impl Fn(Bytes) -> BoxFut<Bytes>,
) -> Result<()> {
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    loop {
        let msg = match timeout(idle, rx.recv_or_close()).await {
            Err(_) => return Ok(()), // idle: close
            Ok(r) => match r? {
                None => return Ok(()),
                Some(m) => m,
            },
        };
        let reply = handle(msg).await;
        tx.send(reply).await?;
    }
}

/// A segment-fetch connection to a node (see `net::fetch`).
pub async fn connect_fetch(
    addr: &str,
    cluster_id: u64,
    limits: NetLimits,
) -> Result<(FrameTx, FrameRx, u64)> {
    connect_anonymous(addr, cluster_id, limits, Purpose::Fetch).await
}

/// A client connection to a node (not a node itself).
pub async fn connect_client(
    addr: &str,
    cluster_id: u64,
    limits: NetLimits,
) -> Result<(FrameTx, FrameRx, u64)> {
    connect_anonymous(addr, cluster_id, limits, Purpose::Client).await
}

/// A connection from something that is not a node, to any node.
async fn connect_anonymous(
    addr: &str,
    cluster_id: u64,
    limits: NetLimits,
    purpose: Purpose,
) -> Result<(FrameTx, FrameRx, u64)> {
    let c = TcpConnector {
        cluster_id,
        from_node: ANY_NODE,
        limits,
    };
    c.open(addr, ANY_NODE, purpose).await
}
