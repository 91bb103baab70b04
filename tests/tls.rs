//! Mutual TLS on every port (issue 15): an in-process 3-node cluster on TLS keeps taking
//! honest appends while each attack is refused — a certificate of another CA, an expired
//! certificate, node 2's certificate claiming to be node 3, plaintext on the TLS port, a
//! consume client appending, a produce client changing the membership, slow handshakes —
//! and a pre-authentication flood leaves the process RSS almost unchanged. A learner added
//! to a TLS cluster catches up by snapshot (segment fetch over TLS). A herd of TLS clients
//! connecting at once (over twice the handshake budget) all get in during a flood of
//! silent connections.

mod common;

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sitelog::net::certs::{write_ca, write_issued, CertAuthority, IssuedCert, Validity};
use sitelog::net::frame::{read_frame, write_frame};
use sitelog::net::handshake::{self, Hello, Purpose, ANY_NODE, PROTOCOL_VERSION};
use sitelog::net::tcp::{NetLimits, TcpConnector};
use sitelog::net::tls::{ClientRole, Operation, Security, TlsDir, TlsIdentity, TlsReloader, Who};
use sitelog::node::client::Client;
use sitelog::node::{Node, NodeConfig, Peer, Placement, Timers};
use sitelog::raft::remote::{MessageRx, MessageTx};
use sitelog::Error;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLUSTER: u64 = 0x715;
const HANDSHAKE_TIMEOUT_MS: u64 = 1000;

/// A cluster CA with certificates for nodes 1..=4 and every client role, in `dir`.
fn cluster_certs(dir: &Path) -> (TlsDir, CertAuthority) {
    std::fs::create_dir_all(dir).unwrap();
    let tls = TlsDir::new(dir);
    let validity = Validity::days_from_now(1);
    let ca = CertAuthority::new(validity).unwrap();
    for id in 1..=4u64 {
        let identity = TlsIdentity::Node {
            id,
            site: format!("site-{id}"),
        };
        write_issued(&tls, Who::Node(id), &ca.issue(&identity, validity).unwrap()).unwrap();
    }
    for role in ClientRole::ALL {
        let cert = ca.issue(&TlsIdentity::Client { role }, validity).unwrap();
        write_issued(&tls, Who::Client(role), &cert).unwrap();
    }
    write_ca(&tls, &ca).unwrap();
    (tls, ca)
}

fn config(root: &Path, tls: &TlsDir, id: u64) -> NodeConfig {
    let mut cfg = NodeConfig::new(
        id,
        &format!("site-{id}"),
        root.join(format!("n{id}")),
        "127.0.0.1:0",
        CLUSTER,
    );
    cfg.security = Security::Tls(tls.clone());
    cfg.timers = Timers::wan();
    cfg.net.handshake_timeout_ms = HANDSHAKE_TIMEOUT_MS;
    cfg.log.segment_size_bytes = 32 << 10;
    cfg.log.max_record_bytes = 4 << 10;
    cfg.snapshots.every_entries = Some(100);
    cfg.snapshots.keep_entries = 20;
    cfg.catch_up.fetch.chunk_bytes = 16 << 10;
    cfg
}

fn addrs(members: &BTreeMap<u64, Peer>) -> Vec<String> {
    members.values().map(|p| p.addr.clone()).collect()
}

/// An honest append through `client` succeeds (the cluster still serves).
async fn honest_append(client: &Client, what: &str) {
    let payload = Bytes::from(format!("honest after {what}"));
    match client.try_append(vec![payload]).await {
        Ok(offsets) => assert_eq!(offsets.len(), 1),
        Err(e) => panic!("honest append after {what} failed: {e}"),
    }
}

/// A rustls client that trusts `ca_pem` and presents `cert` — built by hand, because the
/// library refuses to load a certificate that does not chain to its CA or has expired.
fn raw_connector(ca_pem: &Path, cert: &IssuedCert) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(sitelog::net::tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// Dials node 1 with `cert` and asks for a client connection: the node must not accept it
/// (the TLS handshake fails, or the connection ends before an accepting answer).
async fn refused_with_cert(addr: &str, ca_pem: &Path, cert: &IssuedCert, what: &str) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("node-1").unwrap();
    let Ok(mut tls) = raw_connector(ca_pem, cert).connect(name, tcp).await else {
        return; // refused during the handshake
    };
    let hello = Hello {
        version: PROTOCOL_VERSION,
        purpose: Purpose::Client,
        cluster_id: CLUSTER,
        from_node: ANY_NODE,
        to_node: ANY_NODE,
    };
    // TLS 1.3: the server checks the client's certificate after the client's last flight,
    // so the refusal shows on the first read.
    let _ = write_frame(&mut tls, &hello.encode()).await;
    let answer = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut tls, 4096))
        .await
        .expect("the node answers or closes");
    if let Ok(Some(answer)) = answer {
        let accepted = handshake::decode_answer(&answer, CLUSTER);
        assert!(accepted.is_err(), "{what}: accepted as {accepted:?}");
    }
}

/// The connection is closed by the node within the handshake timeout (plus slack) while
/// `feed` trickles bytes (or nothing) into it.
async fn closed_by_deadline(addr: &str, dribble: bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    let limit = Duration::from_millis(HANDSHAKE_TIMEOUT_MS * 5);
    let mut buf = [0u8; 64];
    loop {
        assert!(start.elapsed() < limit, "a slow handshake was not closed");
        if dribble && s.write_all(&[0x16]).await.is_err() {
            return; // closed by the node
        }
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {} // an alert, then the close
            Err(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_tls_traffic_continues_while_every_attack_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (tls, ca) = cluster_certs(&tmp.path().join("tls"));
    let (members, nodes) = common::found_cluster(3, |id| config(tmp.path(), &tls, id)).await;
    let node1 = members[&1].addr.clone();
    let admin = Client::new_tls(addrs(&members), CLUSTER, tls.clone(), ClientRole::Admin).unwrap();
    honest_append(&admin, "start").await;

    // A certificate from another CA.
    let other = CertAuthority::new(Validity::days_from_now(1)).unwrap();
    let foreign = other
        .issue(
            &TlsIdentity::Client {
                role: ClientRole::Admin,
            },
            Validity::days_from_now(1),
        )
        .unwrap();
    refused_with_cert(&node1, &tls.ca_cert(), &foreign, "another CA's certificate").await;
    honest_append(&admin, "another CA").await;

    // An expired certificate of the cluster CA.
    let day = Duration::from_secs(86_400);
    let expired = Validity {
        not_before: SystemTime::now() - 3 * day,
        not_after: SystemTime::now() - day,
    };
    let old = ca
        .issue(
            &TlsIdentity::Client {
                role: ClientRole::Admin,
            },
            expired,
        )
        .unwrap();
    refused_with_cert(&node1, &tls.ca_cert(), &old, "an expired certificate").await;
    honest_append(&admin, "expired").await;

    // Node 2's certificate claiming to be node 3, for every peer purpose and fetch.
    let node2_tls = Arc::new(TlsReloader::load(tls.clone(), Who::Node(2)).unwrap());
    let impostor = TcpConnector {
        cluster_id: CLUSTER,
        from_node: 3,
        limits: NetLimits::default(),
        tls: Some(node2_tls.clone()),
    };
    for purpose in [Purpose::Rpc, Purpose::AppendStream, Purpose::Fetch] {
        match impostor.open(&node1, 1, purpose).await {
            Err(Error::Tls { .. }) => {}
            other => panic!("node 2 claiming node 3 ({purpose:?}): {other:?}"),
        }
    }
    // A client certificate asking for a peer connection.
    let produce_tls =
        Arc::new(TlsReloader::load(tls.clone(), Who::Client(ClientRole::Produce)).unwrap());
    let client_as_peer = TcpConnector {
        cluster_id: CLUSTER,
        from_node: 2,
        limits: NetLimits::default(),
        tls: Some(produce_tls),
    };
    assert!(matches!(
        client_as_peer.open(&node1, 1, Purpose::Rpc).await,
        Err(Error::Tls { .. })
    ));
    // The honest node 2 identity still opens a peer connection.
    let honest_peer = TcpConnector {
        from_node: 2,
        ..impostor.clone()
    };
    let (mut tx, mut rx, answered) = honest_peer.open(&node1, 1, Purpose::Rpc).await.unwrap();
    assert_eq!(answered, 1);
    // On its own, authenticated connection, node 2 asks for a vote in node 3's name (in a far
    // higher term, which would depose the leader): refused, and the term does not move.
    let term_before = nodes[&1].status().term;
    let vote = sitelog::raft::Vote::new(term_before + 1_000, 3);
    let req = openraft::raft::VoteRequest::new(vote, Some(sitelog::raft::log_id(999, 1 << 40)));
    tx.send(sitelog::raft::wire::encode_vote(&req, false))
        .await
        .unwrap();
    let reply = rx.recv().await.unwrap();
    assert_eq!(
        sitelog::raft::wire::tag_of(&reply),
        Some(sitelog::raft::wire::tag::ERROR),
        "a vote in another node's name must be refused"
    );
    assert!(nodes[&1].status().term < term_before + 1_000);
    honest_append(&admin, "a node impostor").await;

    // Plaintext against the TLS port.
    let plain = TcpConnector {
        tls: None,
        ..impostor.clone()
    };
    // Refused with a typed answer in plaintext: the caller stops at once (no leader search
    // until its deadline) and can say why.
    assert!(matches!(
        plain.open(&node1, 1, Purpose::Rpc).await,
        Err(Error::Tls { .. })
    ));
    let plain_client = Client::new(vec![node1.clone()], CLUSTER);
    assert!(matches!(
        plain_client.status_of(&node1).await,
        Err(Error::Tls { .. })
    ));
    match plain_client
        .try_append(vec![Bytes::from_static(b"plain")])
        .await
    {
        Err(Error::Tls { .. }) => {}
        other => panic!("a plaintext append to a TLS node: {other:?}"),
    }
    honest_append(&admin, "plaintext").await;

    // A consume client appending; it still reads and asks for status.
    let consume =
        Client::new_tls(addrs(&members), CLUSTER, tls.clone(), ClientRole::Consume).unwrap();
    match consume.try_append(vec![Bytes::from_static(b"nope")]).await {
        Err(Error::NotAllowed {
            role: ClientRole::Consume,
            op: Operation::Append,
        }) => {}
        other => panic!("a consume client appended: {other:?}"),
    }
    let (commit_end, _) = consume.read(0, 10).await.unwrap();
    assert!(commit_end > 0);
    consume.status_of(&node1).await.unwrap();
    honest_append(&admin, "a consume append").await;

    // A produce client changing the membership; it still appends.
    let produce =
        Client::new_tls(addrs(&members), CLUSTER, tls.clone(), ClientRole::Produce).unwrap();
    match produce.change_membership(vec![1, 2]).await {
        Err(Error::NotAllowed {
            role: ClientRole::Produce,
            op: Operation::Membership,
        }) => {}
        other => panic!("a produce client changed the membership: {other:?}"),
    }
    assert!(matches!(
        produce.replace_voter(3, 4).await,
        Err(Error::NotAllowed {
            op: Operation::ReplaceNode,
            ..
        })
    ));
    assert!(matches!(
        produce.read(0, 1).await,
        Err(Error::NotAllowed {
            op: Operation::Read,
            ..
        })
    ));
    honest_append(&produce, "a produce membership change").await;
    assert_eq!(nodes[&1].status().voters.len(), 3);

    // Slow handshakes: silent, and dribbling a byte at a time.
    let (silent, dribbling) = tokio::join!(
        closed_by_deadline(&node1, false),
        closed_by_deadline(&node1, true)
    );
    let ((), ()) = (silent, dribbling);
    honest_append(&admin, "slow handshakes").await;

    // Rotation: a reload keeps serving (same files), and the old connections keep working.
    for n in nodes.values() {
        n.reload_tls().unwrap();
    }
    honest_append(&admin, "a reload").await;
    for (_, n) in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_bad_tls_directory_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (tls, ca) = cluster_certs(&tmp.path().join("tls"));
    // Node 9 given node 2's certificate.
    std::fs::copy(tls.cert(Who::Node(2)), tls.cert(Who::Node(9))).unwrap();
    std::fs::copy(tls.key(Who::Node(2)), tls.key(Who::Node(9))).unwrap();
    match Node::start(config(tmp.path(), &tls, 9)).await {
        Err(Error::Tls { .. }) => {}
        other => panic!("node 9 with node 2's certificate: {:?}", other.map(|_| ())),
    }
    // Node 1 with an expired certificate of the cluster CA.
    let day = Duration::from_secs(86_400);
    let expired = Validity {
        not_before: SystemTime::now() - 3 * day,
        not_after: SystemTime::now() - day,
    };
    let identity = TlsIdentity::Node {
        id: 1,
        site: "site-1".into(),
    };
    write_issued(&tls, Who::Node(1), &ca.issue(&identity, expired).unwrap()).unwrap();
    match Node::start(config(tmp.path(), &tls, 1)).await {
        Err(Error::Tls { .. }) => {}
        other => panic!(
            "node 1 with an expired certificate: {:?}",
            other.map(|_| ())
        ),
    }
    // A directory without certificates: the missing file is named.
    let empty = TlsDir::new(tmp.path().join("empty"));
    let mut cfg = config(tmp.path(), &tls, 2);
    cfg.security = Security::Tls(empty.clone());
    assert!(matches!(Node::start(cfg).await, Err(Error::Io { .. })));
    assert!(matches!(
        Client::new_tls(vec![], CLUSTER, empty, ClientRole::Admin),
        Err(Error::Io { .. })
    ));
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_authentication_flood_holds_almost_no_memory() {
    const CONNECTIONS: usize = 200;
    const MAX_GROWTH_BYTES: u64 = 32 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let (tls, _) = cluster_certs(&tmp.path().join("tls"));
    let (members, nodes) = common::found_cluster(3, |id| config(tmp.path(), &tls, id)).await;
    let admin = Client::new_tls(addrs(&members), CLUSTER, tls.clone(), ClientRole::Admin).unwrap();
    honest_append(&admin, "start").await;
    let before = rss_bytes();
    let node1 = members[&1].addr.clone();
    let mut held = Vec::new();
    for i in 0..CONNECTIONS {
        let Ok(mut s) = TcpStream::connect(&node1).await else {
            continue;
        };
        // Half send 64 KiB of garbage, half a frame header announcing 64 MiB; then stall.
        let bytes = if i % 2 == 0 {
            vec![0x16; 64 << 10]
        } else {
            let mut h = (64u32 << 20).to_le_bytes().to_vec();
            h.extend_from_slice(&[0; 4]);
            h
        };
        let _ = tokio::time::timeout(Duration::from_millis(200), s.write_all(&bytes)).await;
        held.push(s);
    }
    honest_append(&admin, "the flood").await;
    let growth = rss_bytes().saturating_sub(before);
    println!(
        "RSS growth under a flood of {CONNECTIONS} connections: {} KiB",
        growth >> 10
    );
    assert!(
        growth < MAX_GROWTH_BYTES,
        "RSS grew by {growth} bytes under a pre-authentication flood"
    );
    drop(held);
    honest_append(&admin, "the flood ended").await;
    for (_, n) in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_catches_up_by_snapshot_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let (tls, _) = cluster_certs(&tmp.path().join("tls"));
    let (members, nodes) = common::found_cluster(3, |id| config(tmp.path(), &tls, id)).await;
    let admin = Client::new_tls(addrs(&members), CLUSTER, tls.clone(), ClientRole::Admin).unwrap();
    // Enough records for snapshots to purge the log's start: the learner needs a fetch.
    for i in 0..40 {
        let batch = (0..10)
            .map(|j| Bytes::from(vec![(i * 10 + j) as u8; 512]))
            .collect();
        admin.try_append(batch).await.unwrap();
    }
    let learner = Node::start(config(tmp.path(), &tls, 4)).await.unwrap();
    let peer = Peer {
        site: "site-4".into(),
        addr: learner.advertise_addr().to_string(),
    };
    admin.add_learner(4, peer).await.unwrap();
    let target = admin
        .try_append(vec![Bytes::from_static(b"last")])
        .await
        .unwrap()[0]
        + 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    while learner.commit_end() < target {
        assert!(
            Instant::now() < deadline,
            "the learner did not catch up over TLS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (done, total) = learner.status().catch_up_bytes;
    assert!(
        total > 0 && done == total,
        "no snapshot fetch: {done}/{total}"
    );
    learner.shutdown().await.unwrap();
    for (_, n) in nodes {
        n.shutdown().await.unwrap();
    }
}

/// A node of a TLS cluster drives a site replacement (`Node::replace_site`): its status probes
/// and membership requests go over TLS with the node's own certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_replaces_a_lost_site_over_tls() {
    use futures_util::StreamExt;
    use sitelog::node::{ReplaceEvent, ReplaceOptions};
    let tmp = tempfile::tempdir().unwrap();
    let (tls, _) = cluster_certs(&tmp.path().join("tls"));
    let (members, mut nodes) = common::found_cluster(3, |id| config(tmp.path(), &tls, id)).await;
    let admin = Client::new_tls(addrs(&members), CLUSTER, tls.clone(), ClientRole::Admin).unwrap();
    honest_append(&admin, "founding").await;
    nodes.remove(&3).unwrap().shutdown().await.unwrap();
    let new = Node::start(config(tmp.path(), &tls, 4)).await.unwrap();
    let peer = Peer {
        site: "site-4".into(),
        addr: new.advertise_addr().to_string(),
    };
    let mut opts = ReplaceOptions::default();
    opts.poll_ms = 10;
    let events = nodes[&1].replace_site(3, 4, peer, opts);
    let events: Vec<ReplaceEvent> =
        tokio::time::timeout(Duration::from_secs(60), events.collect::<Vec<_>>())
            .await
            .expect("the replacement did not end in time");
    match events.last() {
        Some(ReplaceEvent::Done { .. }) => {}
        other => panic!("the replacement over TLS did not finish: {other:?}"),
    }
    honest_append(&admin, "the replacement").await;
    new.shutdown().await.unwrap();
    for (_, n) in nodes {
        n.shutdown().await.unwrap();
    }
}

/// Honest clients connecting at once: over twice the node's handshake budget (64).
const HERD_CLIENTS: usize = 150;
/// Silent connections held open (each reopened when the node closes it) during the herd.
const FLOOD_CONNECTIONS: usize = 32;
/// Time allowed for the whole herd.
const HERD_DEADLINE_MS: u64 = 30_000;

/// Keeps one silent connection to `addr` open, reopening it whenever the node closes it
/// (evicted for a newcomer, refused, or its handshake timed out), until `stop`.
async fn silent_flood(
    addr: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
    opened: Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    while !stop.load(Relaxed) {
        if let Ok(mut s) = TcpStream::connect(&addr).await {
            opened.fetch_add(1, Relaxed);
            let mut buf = [0u8; 64];
            let _ = tokio::time::timeout(
                Duration::from_millis(HANDSHAKE_TIMEOUT_MS * 3),
                s.read(&mut buf),
            )
            .await;
        }
        // A pause between reconnects: a flood, not a busy loop eating the test's two cores.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A herd of honest TLS clients connecting at once all append: a connection in its
/// handshake is evicted only once older than `MIN_HANDSHAKE_AGE_FOR_EVICTION_MS` (the herd
/// no longer evicts itself), and a newcomer refused meanwhile connects again after a short
/// backoff — while silent connections keep the handshake budget under pressure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_of_tls_clients_all_get_in_during_a_silent_flood() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let tmp = tempfile::tempdir().unwrap();
    let (tls, _ca) = cluster_certs(&tmp.path().join("tls"));
    let (members, nodes) = common::found_cluster(1, |id| {
        let mut cfg = config(tmp.path(), &tls, id);
        cfg.placement = Placement::Warn;
        cfg
    })
    .await;
    let addr = members[&1].addr.clone();
    let admin =
        Client::new_tls(vec![addr.clone()], CLUSTER, tls.clone(), ClientRole::Admin).unwrap();
    honest_append(&admin, "start").await;

    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..FLOOD_CONNECTIONS)
        .map(|_| tokio::spawn(silent_flood(addr.clone(), stop.clone(), opened.clone())))
        .collect();
    let clients: Vec<Client> = (0..HERD_CLIENTS)
        .map(|_| {
            let mut c = Client::new_tls(
                vec![addr.clone()],
                CLUSTER,
                tls.clone(),
                ClientRole::Produce,
            )
            .unwrap();
            // 150 TLS handshakes and appends of a debug build on two shared cores
            // take seconds: the default 5 s per request would fail the last ones however
            // fairly they are let in.
            c.request_timeout_ms = HERD_DEADLINE_MS;
            c.leader_wait_ms = HERD_DEADLINE_MS;
            c
        })
        .collect();
    let start = Instant::now();
    let herd: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(async move { c.try_append(vec![Bytes::from(format!("herd {i}"))]).await })
        })
        .collect();
    let mut failed = Vec::new();
    for h in herd {
        match tokio::time::timeout_at((start + Duration::from_millis(HERD_DEADLINE_MS)).into(), h)
            .await
        {
            Ok(Ok(Ok(offsets))) => assert_eq!(offsets.len(), 1),
            other => failed.push(format!("{other:?}")),
        }
    }
    let took = start.elapsed();
    let flooded = opened.load(Relaxed);
    stop.store(true, Relaxed);
    eprintln!(
        "{HERD_CLIENTS} TLS clients appended in {took:?}; the flood opened {flooded} connections"
    );
    assert!(
        failed.is_empty(),
        "{} of {HERD_CLIENTS} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(
        flooded > FLOOD_CONNECTIONS,
        "the flood kept reconnecting: {flooded}"
    );
    for f in flood {
        f.abort();
    }
    honest_append(&admin, "the herd").await;
    for (_, n) in nodes {
        n.shutdown().await.unwrap();
    }
}
