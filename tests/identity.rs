//! Identity: a data directory belongs to one node of one cluster, and a node id removed from
//! the membership never joins again.
//!
//! - A node started on another node's (or cluster's) directory is refused with
//!   `Error::WrongIdentity`, from the library and from `sitelog node` (non-zero exit, a clear
//!   message); a directory from before identity files is adopted.
//! - In a 3-node cluster over loopback TCP, voter 1 is replaced by node 4; adding 1 back is
//!   refused (library and client), a vote asked by node 1 is refused, and a node 5 rebuilt from
//!   a snapshot taken after the removal (the removal's log entries purged) refuses it too.

use bytes::Bytes;
use sitelog::net::tcp::{NetLimits, TcpConnector};
use sitelog::node::Role;
use sitelog::node::{Node, NodeConfig, Peer};
use sitelog::raft::remote::{ConnPurpose, Connector, MessageRx, MessageTx};
use sitelog::Error;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const CLUSTER: u64 = 0x1d3;

fn config(root: &Path, id: u64) -> NodeConfig {
    let mut cfg = NodeConfig::new(
        id,
        &format!("site-{id}"),
        root.join(format!("n{id}")),
        "127.0.0.1:0",
        CLUSTER,
    );
    cfg.log.segment_size_bytes = 32 << 10;
    cfg.log.max_record_bytes = 4 << 10;
    cfg.snapshots.every_entries = Some(100);
    cfg.snapshots.keep_entries = 20;
    cfg.catch_up.fetch.chunk_bytes = 16 << 10;
    cfg
}

/// Starts a node, retrying while the previous holder of its directory releases the lock.
async fn start(cfg: NodeConfig) -> sitelog::Result<Node> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Node::start(cfg.clone()).await {
            Err(Error::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_another_node_or_cluster_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir3 = tmp.path().join("n3");
    start(config(tmp.path(), 3))
        .await
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    let identity = std::fs::read(dir3.join("identity")).unwrap();

    let mut as_node_1 = config(tmp.path(), 1);
    as_node_1.data_dir = dir3.clone();
    match start(as_node_1).await {
        Err(Error::WrongIdentity {
            path,
            expected_node_id: 1,
            expected_cluster_id: CLUSTER,
            found_node_id: Some(3),
            found_cluster_id: CLUSTER,
        }) => assert_eq!(path, dir3),
        other => panic!("node 1 on node 3's directory: {other:?}"),
    }
    let mut other_cluster = config(tmp.path(), 3);
    other_cluster.cluster_id = CLUSTER + 1;
    other_cluster.catch_up = sitelog::node::catchup::CatchUpOptions::new(CLUSTER + 1);
    assert!(
        matches!(
            start(other_cluster).await,
            Err(Error::WrongIdentity {
                found_node_id: Some(3),
                found_cluster_id: CLUSTER,
                ..
            })
        ),
        "another cluster's node on node 3's directory"
    );
    assert_eq!(
        std::fs::read(dir3.join("identity")).unwrap(),
        identity,
        "a refused start rewrote the identity"
    );
    // Its own node still starts there.
    start(config(tmp.path(), 3))
        .await
        .unwrap()
        .shutdown()
        .await
        .unwrap();

    // The binary exits non-zero and says why.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args([
            "node",
            "--id",
            "1",
            "--site",
            "site-1",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data")
        .arg(&dir3)
        .args([
            "--cluster-id",
            &CLUSTER.to_string(),
            "--exit-after-secs",
            "5",
            "--insecure",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "sitelog node started: {stderr}");
    assert!(
        stderr.contains("belongs to node 3") && stderr.contains("not to node 1"),
        "unclear message: {stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("LISTENING"),
        "it listened before refusing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_from_before_identity_files_is_adopted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n2");
    start(config(tmp.path(), 2))
        .await
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    // What an earlier release left: raft_meta and log/, no identity.
    std::fs::remove_file(dir.join("identity")).unwrap();
    let mut wrong_cluster = config(tmp.path(), 2);
    wrong_cluster.cluster_id = CLUSTER + 1;
    wrong_cluster.catch_up = sitelog::node::catchup::CatchUpOptions::new(CLUSTER + 1);
    assert!(matches!(
        start(wrong_cluster).await,
        Err(Error::WrongIdentity {
            found_node_id: None,
            found_cluster_id: CLUSTER,
            ..
        })
    ));
    assert!(!dir.join("identity").exists(), "a refused adoption wrote");
    start(config(tmp.path(), 2))
        .await
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.join("identity")).unwrap().len(), 64);
    let mut as_node_1 = config(tmp.path(), 1);
    as_node_1.data_dir = dir;
    assert!(matches!(
        start(as_node_1).await,
        Err(Error::WrongIdentity {
            found_node_id: Some(2),
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_identity_file_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("n1").join("identity");
    start(config(tmp.path(), 1))
        .await
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sitelog"))
            .arg("verify")
            .arg(tmp.path().join("n1"))
            .output()
            .unwrap()
    };
    let v = verify();
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stderr)
    );
    let mut b = std::fs::read(&path).unwrap();
    b[20] ^= 0x40;
    std::fs::write(&path, &b).unwrap();
    assert!(matches!(
        start(config(tmp.path(), 1)).await,
        Err(Error::Corruption { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b, "damage was rewritten");
    let out = verify();
    assert_eq!(
        out.status.code(),
        Some(2),
        "verify missed the damaged identity"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("identity"));
}

fn peer(id: u64, addr: &str) -> Peer {
    Peer {
        site: format!("site-{id}"),
        addr: addr.to_string(),
    }
}

/// The node that leads by its own account (waits for one).
async fn leader_of(nodes: &BTreeMap<u64, Node>) -> Node {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(n) = nodes.values().find(|n| n.status().role == Role::Leader) {
            return n.clone();
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs an admin call on the leader, again on the next leader if it was refused.
macro_rules! on_leader {
    ($nodes:expr, |$l:ident| $call:expr) => {{
        loop {
            let $l = leader_of($nodes).await;
            match $call.await {
                Err(Error::NotLeader { .. }) => continue,
                other => break other,
            }
        }
    }};
}

async fn append_batch(nodes: &BTreeMap<u64, Node>, batch: u32) {
    let payloads: Vec<Bytes> = (0..50)
        .map(|i| Bytes::from(format!("batch {batch} msg {i} {}", "x".repeat(150))))
        .collect();
    let r = on_leader!(nodes, |l| l.append(payloads.clone()));
    r.unwrap();
}

/// Asks `addr` (node `to`) for a vote as node `from`, in a far higher term; the raw reply.
async fn ask_vote(from: u64, to: u64, addr: &str) -> Bytes {
    let connector = TcpConnector {
        cluster_id: CLUSTER,
        from_node: from,
        limits: NetLimits::default(),
        tls: None,
    };
    let (mut tx, mut rx) = connector.connect(to, addr, ConnPurpose::Rpc).await.unwrap();
    let vote = sitelog::raft::Vote::new(1_000, from);
    let req = openraft::raft::VoteRequest::new(vote, Some(sitelog::raft::log_id(999, 1 << 40)));
    tx.send(sitelog::raft::wire::encode_vote(&req, false))
        .await
        .unwrap();
    rx.recv().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_id_never_joins_again_even_on_a_node_rebuilt_from_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut listeners = BTreeMap::new();
    for id in 1..=4u64 {
        listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: BTreeMap<u64, String> = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().unwrap().to_string()))
        .collect();
    let members: BTreeMap<u64, Peer> = (1..=3).map(|id| (id, peer(id, &addrs[&id]))).collect();
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        let mut cfg = config(root, id);
        if id <= 3 {
            cfg.initial_members = members.clone();
        }
        nodes.insert(id, Node::start_on(cfg, l).await.unwrap());
    }
    let founders: BTreeMap<u64, Node> = nodes
        .iter()
        .filter(|(id, _)| **id <= 3)
        .map(|(id, n)| (*id, n.clone()))
        .collect();
    append_batch(&founders, 0).await;

    // A voter's id cannot come back as a "new" node while it is a voter either.
    let r = on_leader!(&founders, |l| l.add_learner(1, peer(1, &addrs[&1])));
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    let client =
        sitelog::node::client::Client::new(addrs.values().take(3).cloned().collect(), CLUSTER);
    let r = client.replace_voter(1, 1).await;
    assert!(
        matches!(&r, Err(e) if e.to_string().contains("new id")),
        "{r:?}"
    );

    // Voter 1 is replaced by node 4, then stopped.
    on_leader!(&founders, |l| l.add_learner(4, peer(4, &addrs[&4]))).unwrap();
    on_leader!(&nodes, |l| l.change_membership(BTreeSet::from([2, 3, 4]))).unwrap();
    nodes.remove(&1).unwrap().shutdown().await.unwrap();
    for (id, n) in &nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        while n.retired_ids().unwrap() != BTreeSet::from([1]) {
            assert!(
                Instant::now() < deadline,
                "node {id} retired {:?}",
                n.retired_ids().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // Adding 1 back is refused: as a learner, as a voter, through the client protocol.
    let r = on_leader!(&nodes, |l| l.add_learner(1, peer(1, &addrs[&1])));
    assert!(matches!(r, Err(Error::RetiredNode { node_id: 1 })), "{r:?}");
    let r = on_leader!(&nodes, |l| l.change_membership(BTreeSet::from([1, 2, 3])));
    assert!(matches!(r, Err(Error::RetiredNode { node_id: 1 })), "{r:?}");
    let client = sitelog::node::client::Client::new(
        nodes
            .values()
            .map(|n| n.advertise_addr().to_string())
            .collect(),
        CLUSTER,
    );
    let r = client.add_learner(1, peer(1, &addrs[&1])).await;
    assert!(
        matches!(&r, Err(e) if e.to_string().contains("can never join again")),
        "{r:?}"
    );
    let r = client.replace_voter(2, 1).await;
    assert!(
        matches!(&r, Err(e) if e.to_string().contains("can never join again")),
        "{r:?}"
    );
    // A vote asked by node 1 (which may not know it was removed) is refused.
    let term_before = nodes[&2].status().term;
    let reply = ask_vote(1, 2, &addrs[&2]).await;
    assert_eq!(
        sitelog::raft::wire::tag_of(&reply),
        Some(sitelog::raft::wire::tag::ERROR),
        "node 2 answered a vote for a removed node"
    );
    assert_eq!(nodes[&2].status().term, term_before);
    let s = nodes[&2].status();
    assert_eq!(
        s.voters
            .iter()
            .chain(&s.learners)
            .copied()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([2, 3, 4])
    );

    // Enough writes that a snapshot is taken after the removal and the log behind it purged:
    // node 5 can learn of the removal only from the snapshot.
    for batch in 1..=16 {
        append_batch(&nodes, batch).await;
    }
    let leader = leader_of(&nodes).await;
    let leader_dir = root.join(format!("n{}", leader.id()));
    let io = sitelog::io::PosixIo::new_ref();
    let (meta, manifest) = sitelog::raft::snapshot::load(&io, &leader_dir)
        .unwrap()
        .expect("no snapshot taken");
    assert_eq!(manifest.retired, BTreeSet::from([1]));
    assert!(
        meta.last_membership.nodes().all(|(id, _)| *id != 1),
        "the snapshot predates the removal"
    );

    let l5 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr5 = l5.local_addr().unwrap().to_string();
    let n5 = Node::start_on(config(root, 5), l5).await.unwrap();
    on_leader!(&nodes, |l| l.add_learner(5, peer(5, &addr5))).unwrap();
    let target = leader.commit_end();
    n5.wait_for(30_000, |s| s.commit_end >= target)
        .await
        .unwrap();
    let (_, total, _) = n5.catch_up_progress();
    assert!(total > 0, "node 5 caught up without a snapshot");
    assert_eq!(n5.retired_ids().unwrap(), BTreeSet::from([1]));
    // Refused on a learner too (before the leader check), from what the snapshot carried.
    let r = n5.add_learner(1, peer(1, &addrs[&1])).await;
    assert!(matches!(r, Err(Error::RetiredNode { node_id: 1 })), "{r:?}");

    // Restarted, node 5 still knows (from its own snapshot file and log).
    n5.shutdown().await.unwrap();
    let mut cfg5 = config(root, 5);
    cfg5.listen = addr5.clone();
    let n5 = start(cfg5).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while n5.retired_ids().unwrap() != BTreeSet::from([1]) {
        assert!(
            Instant::now() < deadline,
            "restarted node 5 forgot: {:?}",
            n5.retired_ids().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    n5.shutdown().await.unwrap();
    for (_, n) in nodes {
        n.shutdown().await.unwrap();
    }
}
