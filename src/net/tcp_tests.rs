//! The server's per-kind budgets: floods of one kind (silent connections, idle clients, idle
//! fake append streams) lock out neither peers nor newcomers of the same kind.

use super::*;

/// Set once the slow request is being handled.
static SLOW_STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Echoes every request (`slow` after 1.5 s); append streams echo until closed.
struct Echo;

impl Service for Echo {
    fn rpc(&self, _from: u64, msg: Bytes) -> BoxFut<Bytes> {
        Box::pin(async move { msg })
    }
    fn append_stream(&self, _from: u64, mut tx: FrameTx, mut rx: FrameRx) -> BoxFut<Result<()>> {
        Box::pin(async move {
            while let Some(m) = rx.recv_or_close().await? {
                tx.send(m).await?;
            }
            Ok(())
        })
    }
    fn client(&self, _: crate::net::tls::ClientRole, msg: Bytes) -> BoxFut<Bytes> {
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
        tls: None,
    };
    (addr, tokio::spawn(serve(l, id, Arc::new(Echo))))
}

fn peer(from: u64) -> TcpConnector {
    TcpConnector {
        cluster_id: CLUSTER,
        from_node: from,
        limits: limits(),
        tls: None,
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

/// How many requests the gated handler has started, once it stopped growing: polled until
/// it reaches `n`, then checked to stay there a while (an absence can only be checked by
/// waiting; the wait is not what the test synchronises on).
async fn started_exactly(started: &std::sync::atomic::AtomicUsize, n: usize) {
    use std::sync::atomic::Ordering::SeqCst;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while started.load(SeqCst) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{n} requests never started"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(started.load(SeqCst), n, "the server read past its window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_connection_stops_reading_at_its_window_and_replies_in_order() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let window = pipeline::Window {
        max_requests: 4,
        max_bytes: 1000,
    };
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (server, _) = l.accept().await.unwrap();
    let (stx, srx) = split(server, &limits());
    let (mut tx, mut rx) = split(client, &limits());
    // Each request waits for a permit of `gate` (used up), at a moment of its own, so that
    // answers complete out of request order.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let (g, s) = (gate.clone(), started.clone());
    let serving = tokio::spawn(pipeline::pipelined_loop(stx, srx, window, move |m| {
        let (g, s) = (g.clone(), s.clone());
        Box::pin(async move {
            let n = s.fetch_add(1, SeqCst);
            g.acquire().await.unwrap().forget();
            tokio::time::sleep(Duration::from_millis(((7 - n % 7) * 2) as u64)).await;
            m
        })
    }));

    // Ten small requests, no reply read: four are taken, the rest wait in the socket.
    for i in 0..10u8 {
        tx.send(Bytes::from(vec![i; 2])).await.unwrap();
    }
    started_exactly(&started, 4).await;
    gate.add_permits(10);
    for i in 0..10u8 {
        assert_eq!(&rx.recv().await.unwrap()[..], &[i; 2], "reply {i} in order");
    }

    // The byte bound: two 400-byte requests fit 1000 bytes, the third waits; a frame over
    // the window's bytes is admitted alone, once nothing else is in flight.
    started.store(0, SeqCst);
    for (i, len) in [(1u8, 400), (2, 400), (3, 400), (4, 5000)] {
        tx.send(Bytes::from(vec![i; len])).await.unwrap();
    }
    started_exactly(&started, 2).await;
    gate.add_permits(2);
    started_exactly(&started, 3).await;
    gate.add_permits(1);
    started_exactly(&started, 4).await;
    gate.add_permits(1);
    for (i, len) in [(1u8, 400), (2, 400), (3, 400), (4, 5000)] {
        assert_eq!(rx.recv().await.unwrap(), Bytes::from(vec![i; len]));
    }
    drop((tx, rx));
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn pre_auth_reads_stop_past_the_limit_until_authenticated() {
    use tokio::io::AsyncReadExt;
    let data = vec![7u8; MAX_PRE_AUTH_BYTES + 4096];
    let authenticated = Arc::new(AtomicBool::new(false));
    let mut r = PreAuth::new(&data[..], authenticated.clone());
    let mut sink = vec![0u8; MAX_PRE_AUTH_BYTES + 4096];
    let mut got = 0;
    loop {
        match r.read(&mut sink[got..got + 1000]).await {
            Ok(0) => panic!("the whole input was read unauthenticated"),
            Ok(n) => got += n,
            Err(_) => break,
        }
    }
    assert!(
        got <= MAX_PRE_AUTH_BYTES,
        "read {got} bytes unauthenticated"
    );
    // Once authenticated, everything passes.
    let authenticated = Arc::new(AtomicBool::new(true));
    let mut r = PreAuth::new(&data[..], authenticated);
    let mut all = Vec::new();
    r.read_to_end(&mut all).await.unwrap();
    assert_eq!(all.len(), data.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_frame_header_before_the_hello_allocates_nothing_and_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, task) = server(NetLimits {
        handshake_timeout_ms: 2000,
        ..limits()
    })
    .await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let mut head = (64u32 << 20).to_le_bytes().to_vec();
    head.extend_from_slice(&[0; 4]);
    s.write_all(&head).await.unwrap();
    // Refused at once: a hello frame is at most MAX_HANDSHAKE_BYTES.
    let mut buf = [0u8; 16];
    let closed = timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    works(&addr, Purpose::Client).await.unwrap();
    task.abort();
}

/// Framed halves over a plain TCP stream.
fn split(stream: TcpStream, limits: &NetLimits) -> (FrameTx, FrameRx) {
    let (r, w) = stream.into_split();
    framed(r, w, limits)
}

/// A node that closes every newcomer at once (its handshake budget full of young
/// handshakes): the caller gets `Error::ConnectRefused` after trying again, within the time
/// one open is allowed. A TLS caller on a plaintext port gets a TLS alert: `Error::Tls` at
/// once, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connects_are_tried_again_and_tls_on_a_plaintext_port_is_not() {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closing = l.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let closer = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, Relaxed);
            drop(s);
        }
    });
    let c = TcpConnector {
        limits: NetLimits {
            connect_timeout_ms: 200,
            handshake_timeout_ms: 400,
            ..limits()
        },
        ..peer(ANY_NODE)
    };
    let start = std::time::Instant::now();
    match c.open(&closing, ANY_NODE, Purpose::Client).await {
        Err(Error::ConnectRefused { .. }) => {}
        other => panic!("a bare close is a refused connect: {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    assert!(accepted.load(Relaxed) >= 2, "tried again");
    closer.abort();

    let dir = tempfile::tempdir().unwrap();
    let sites = std::collections::BTreeMap::from([(1, "site-1".to_string())]);
    let certs = crate::net::certs::generate(dir.path(), &sites, &Default::default()).unwrap();
    let who = crate::net::tls::Who::Client(ClientRole::Admin);
    let (plain, task) = server(limits()).await;
    let tls_caller = TcpConnector {
        tls: Some(Arc::new(TlsReloader::load(certs, who).unwrap())),
        ..peer(ANY_NODE)
    };
    let start = std::time::Instant::now();
    match tls_caller.open(&plain, ANY_NODE, Purpose::Client).await {
        Err(Error::Tls { .. }) => {}
        other => panic!("TLS against a plaintext port: {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_millis(500), "not retried: {:?}", start.elapsed());
    works(&plain, Purpose::Client).await.unwrap();
    task.abort();
}
