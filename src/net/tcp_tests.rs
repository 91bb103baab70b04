//! The server's per-kind budgets: floods of one kind (silent connections, idle clients, idle
//! fake append streams) lock out neither peers nor newcomers of the same kind.

use super::*;

/// Set once the slow request is being handled.
static SLOW_STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Echoes every request (`slow` after 1.5 s); append streams echo until closed.
struct Echo;

impl Service for Echo {
    fn rpc(&self, msg: Bytes) -> BoxFut<Bytes> {
        Box::pin(async move { msg })
    }
    fn append_stream(&self, mut tx: FrameTx, mut rx: FrameRx) -> BoxFut<Result<()>> {
        Box::pin(async move {
            while let Some(m) = rx.recv_or_close().await? {
                tx.send(m).await?;
            }
            Ok(())
        })
    }
    fn client(&self, msg: Bytes) -> BoxFut<Bytes> {
        Box::pin(async move {
            if &msg[..] == b"slow" {
                SLOW_STARTED.store(true, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            msg
        })
    }
    fn fetch(&self, msg: Bytes) -> BoxFut<Bytes> {
        Box::pin(async move { msg })
    }
}

const CLUSTER: u64 = 77;
const NODE: u64 = 1;

/// Budgets of 4 each, 16 in all: the old single budget of 16 was filled by any one flood.
fn limits() -> NetLimits {
    NetLimits {
        max_connections: 16,
        max_handshaking: 4,
        max_peer_connections: 4,
        max_client_connections: 4,
        max_fetch_connections: 4,
        handshake_timeout_ms: 30_000, // silent connections stay until evicted
        ..NetLimits::default()
    }
}

async fn server(limits: NetLimits) -> (String, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let id = ServerIdentity {
        node_id: NODE,
        cluster_id: CLUSTER,
        limits,
    };
    (addr, tokio::spawn(serve(l, id, Arc::new(Echo))))
}

fn peer(from: u64) -> TcpConnector {
    TcpConnector {
        cluster_id: CLUSTER,
        from_node: from,
        limits: limits(),
    }
}

/// One request and its echo on a fresh connection of `purpose`.
async fn works(addr: &str, purpose: Purpose) -> Result<()> {
    let c = match purpose {
        Purpose::Client | Purpose::Fetch => peer(ANY_NODE),
        _ => peer(2),
    };
    let (mut tx, mut rx, node) = c.open(addr, ANY_NODE, purpose).await?;
    assert_eq!(node, NODE);
    tx.send(Bytes::from_static(b"ping")).await?;
    let got = timeout(Duration::from_secs(5), rx.recv())
        .await
        .map_err(|_| Error::Protocol("no echo".into()))??;
    assert_eq!(&got[..], b"ping");
    Ok(())
}

/// `works`, retried for up to 3 s: a full budget refuses newcomers until its quietest
/// connection has been quiet for `MIN_QUIET_FOR_EVICTION_MS`.
async fn works_soon(addr: &str, purpose: Purpose) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        match works(addr, purpose).await {
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "not yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r => return r,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_one_kind_lock_out_no_one() {
    let (addr, task) = server(limits()).await;
    let mut held = Vec::new();
    // Silent connections (no handshake), four times the handshake budget.
    for _ in 0..16 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Idle clients and idle fake append streams (claiming a member's id), four times their
    // budgets; each completed its handshake.
    // Those beyond the budgets are refused while the held ones are fresh.
    let mut idle = Vec::new();
    for _ in 0..16 {
        if let Ok((tx, rx, _)) = peer(ANY_NODE).open(&addr, ANY_NODE, Purpose::Client).await {
            idle.push((tx, rx));
        }
        if let Ok((tx, rx, _)) = peer(3).open(&addr, NODE, Purpose::AppendStream).await {
            idle.push((tx, rx));
        }
    }
    assert!(idle.len() >= 8, "the budgets filled: {}", idle.len());
    // Peers, clients and fetches still get in and are served, while the flood is held open.
    for _ in 0..3 {
        works_soon(&addr, Purpose::Rpc).await.unwrap();
        works_soon(&addr, Purpose::AppendStream).await.unwrap();
        works_soon(&addr, Purpose::Client).await.unwrap();
        works_soon(&addr, Purpose::Fetch).await.unwrap();
    }
    drop((held, idle));
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_connections_keep_their_place_and_idle_ones_time_out() {
    let limits = NetLimits {
        max_client_connections: 1,
        idle_timeout_ms: 3_000,
        handshake_timeout_ms: 500,
        ..limits()
    };
    let (addr, task) = server(limits).await;
    // The only client place is held by a connection with a request in flight: a newcomer is
    // refused with a reason instead of evicting it.
    let (mut busy_tx, mut busy_rx, _) = peer(ANY_NODE)
        .open(&addr, ANY_NODE, Purpose::Client)
        .await
        .unwrap();
    busy_tx.send(Bytes::from_static(b"slow")).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !SLOW_STARTED.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "slow request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = works(&addr, Purpose::Client).await.unwrap_err();
    assert!(
        refused.to_string().contains("too many busy client"),
        "{refused}"
    );
    assert_eq!(&busy_rx.recv().await.unwrap()[..], b"slow");
    // Answered, it is idle again: once quiet long enough, a newcomer evicts it.
    works_soon(&addr, Purpose::Client).await.unwrap();
    let evicted = timeout(Duration::from_secs(5), busy_rx.recv_or_close()).await;
    assert!(
        matches!(evicted, Ok(Ok(None)) | Ok(Err(_))),
        "evicted: {evicted:?}"
    );
    // An idle client is closed after the idle timeout. (The place frees once the server
    // saw the last client go.)
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let (_tx, mut rx) = loop {
        match peer(ANY_NODE).open(&addr, ANY_NODE, Purpose::Client).await {
            Ok((tx, rx, _)) => break (tx, rx),
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let closed = timeout(Duration::from_secs(10), rx.recv_or_close()).await;
    assert!(
        matches!(closed, Ok(Ok(None)) | Ok(Err(_))),
        "idle client closed by the server: {closed:?}"
    );
    task.abort();
}
