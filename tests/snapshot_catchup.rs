//! Replacing a lost site by snapshot: three nodes over TCP take manifest snapshots; node 3 is
//! stopped and its data directory deleted; a new node (new id 4) joins as a learner, receives
//! the snapshot, fetches the sealed segments in bulk from the replicas, installs them, takes
//! the tail by replication, and is swapped in for node 3. Afterwards every committed record is
//! identical on every node, and the new node's sealed segment files are byte-identical to the
//! leader's.

mod common;

use bytes::Bytes;
use sitelog::node::{Node, NodeConfig, Peer};
use std::collections::BTreeMap;
use std::path::Path;
use tokio::net::TcpListener;

const CLUSTER: u64 = 0x5a9;

fn config(root: &Path, id: u64) -> NodeConfig {
    let mut cfg = NodeConfig::new(
        id,
        &format!("site-{id}"),
        root.join(format!("n{id}")),
        "",
        CLUSTER,
    );
    cfg.log.segment_size_bytes = 64 << 10;
    cfg.log.max_record_bytes = 8 << 10;
    cfg.snapshots.every_entries = Some(500);
    cfg.snapshots.keep_entries = 100;
    cfg.catch_up.fetch.chunk_bytes = 16 << 10;
    cfg
}

/// Appends through whichever node leads, retrying writes refused before they were appended
/// (a leader change under load); returns the offset.
async fn append(nodes: &BTreeMap<u64, Node>, payload: String) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let leader = nodes
            .values()
            .find_map(|n| n.status().leader)
            .and_then(|l| nodes.get(&l));
        if let Some(n) = leader {
            match n.append(vec![Bytes::from(payload.clone())]).await {
                Ok(o) => return o[0],
                Err(sitelog::Error::NotLeader { .. }) => {}
                Err(e) => panic!("append: {e}"),
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no leader took the write"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The node that leads by its own account (waits for one).
async fn leader_of(nodes: &BTreeMap<u64, Node>) -> Node {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(n) = nodes
            .values()
            .find(|n| n.status().role == sitelog::node::Role::Leader)
        {
            return n.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Runs an admin call on the leader, again on the next leader if it was refused.
macro_rules! on_leader {
    ($nodes:expr, |$l:ident| $call:expr) => {{
        loop {
            let $l = leader_of($nodes).await;
            match $call.await {
                Err(sitelog::Error::NotLeader { .. }) => continue,
                other => break other.unwrap(),
            }
        }
    }};
}

async fn start_three(root: &Path) -> (BTreeMap<u64, Peer>, BTreeMap<u64, Node>) {
    common::found_cluster(3, |id| config(root, id)).await
}

fn sealed_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    // Sealed segments are the files that end with a valid footer; the active one (still
    // written) is the highest-numbered file, left out.
    let mut names: Vec<_> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    names.pop();
    names
        .into_iter()
        .map(|n| (n.clone(), std::fs::read(dir.join("log").join(&n)).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_site_is_rebuilt_from_a_snapshot_with_bulk_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (members, mut nodes) = start_three(root).await;
    let s = nodes[&1]
        .wait_for(10_000, |s| s.leader.is_some())
        .await
        .unwrap();
    let leader_id = s.leader.unwrap();
    let leader = nodes[&leader_id].clone();
    leader.wait_for(10_000, |s| s.commit_end > 0).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..2000u32 {
        let p = format!("msg {i} {}", "y".repeat((i % 400) as usize));
        let off = append(&nodes, p.clone()).await;
        sent.push((off, p));
    }
    assert!(
        root.join(format!("n{leader_id}")).join("snapshot").exists(),
        "no snapshot taken"
    );

    // Under load: a client keeps writing through the loss and the rebuild.
    let addrs: Vec<String> = members.values().map(|p| p.addr.clone()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let client = sitelog::node::client::Client::new(addrs, CLUSTER);
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let p = format!("under load {i}");
                i += 1;
                if let sitelog::node::client::AppendOutcome::Ok(o) =
                    client.append(vec![Bytes::from(p.clone())]).await
                {
                    acked.push((o[0], p));
                }
            }
            acked
        })
    };

    // Site 3 burns (not the leader): stopped, data deleted.
    let lost = *nodes.keys().find(|&&i| i != leader_id).unwrap();
    nodes.remove(&lost).unwrap().shutdown().await.unwrap();
    std::fs::remove_dir_all(root.join(format!("n{lost}"))).unwrap();

    // A new node, new id, joins as a learner and catches up.
    let l4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr4 = l4.local_addr().unwrap().to_string();
    let n4 = Node::start_on(config(root, 4), l4).await.unwrap();
    leader
        .add_learner(
            4,
            Peer {
                site: "site-4".into(),
                addr: addr4,
            },
        )
        .await
        .unwrap();
    let target = leader.commit_end();
    n4.wait_for(60_000, |s| s.commit_end >= target)
        .await
        .unwrap();
    let (done, total, _) = n4.catch_up_progress();
    assert!(
        total > 0 && done == total,
        "not caught up by snapshot: {done}/{total}"
    );

    let mut voters: std::collections::BTreeSet<u64> = nodes.keys().copied().collect();
    voters.insert(4);
    on_leader!(&nodes, |l| l.change_membership(voters.clone()));
    nodes.insert(4, n4);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let under_load = writer.await.unwrap();
    assert!(
        !under_load.is_empty(),
        "no write was acknowledged during the rebuild"
    );
    sent.extend(under_load);
    let last = sent.iter().map(|(o, _)| *o).max().unwrap();
    for (id, n) in &nodes {
        n.wait_for(30_000, |s| s.commit_end > last)
            .await
            .unwrap_or_else(|e| panic!("node {id} did not catch up: {e}"));
    }

    for (id, n) in &nodes {
        for (off, p) in &sent {
            let rec = n
                .read(*off)
                .unwrap_or_else(|e| panic!("node {id} offset {off}: {e}"));
            assert_eq!(&rec.payload[..], p.as_bytes(), "node {id} offset {off}");
        }
    }
    // Founding members wrote the initial membership entry each for itself; their sealed
    // segments are still the same files as the leader's.
    let founders: Vec<u64> = nodes.keys().copied().filter(|&i| i != 4).collect();
    let (a, b) = (
        sealed_files(&root.join(format!("n{}", founders[0]))),
        sealed_files(&root.join(format!("n{}", founders[1]))),
    );
    let first = format!("{:020}.seg", 0);
    assert!(a.contains_key(&first) && b.contains_key(&first));
    assert!(
        a[&first] == b[&first],
        "the founders' first segments differ"
    );
    // The new node holds the leader's sealed segments, byte for byte.
    let theirs = sealed_files(&root.join(format!("n{leader_id}")));
    let ours = sealed_files(&root.join("n4"));
    let common: Vec<_> = ours.keys().filter(|k| theirs.contains_key(*k)).collect();
    assert!(
        common.len() >= 5,
        "too few sealed segments in common: {}",
        common.len()
    );
    for k in common {
        assert!(ours[k] == theirs[k], "segment {k} differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetching_node_killed_half_way_resumes_without_refetching_finished_segments() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_, nodes) = start_three(root).await;
    let leader_id = nodes[&1]
        .wait_for(10_000, |s| s.leader.is_some())
        .await
        .unwrap()
        .leader
        .unwrap();
    let leader = nodes[&leader_id].clone();
    leader.wait_for(10_000, |s| s.commit_end > 0).await.unwrap();
    for i in 0..2000u32 {
        append(&nodes, format!("msg {i} {}", "z".repeat(300))).await;
    }

    // Node 4 fetches slowly, one segment at a time, and is stopped part-way.
    let l4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr4 = l4.local_addr().unwrap().to_string();
    let slow = |mut cfg: NodeConfig| {
        cfg.catch_up.parallel_segments = 1;
        cfg.catch_up.fetch.max_bytes_per_s = Some(150_000);
        cfg
    };
    let n4 = Node::start_on(slow(config(root, 4)), l4).await.unwrap();
    on_leader!(&nodes, |l| l.add_learner(
        4,
        Peer {
            site: "site-4".into(),
            addr: addr4.clone()
        }
    ));
    loop {
        let (done, total, _) = n4.catch_up_progress();
        if total > 0 && done * 5 >= total * 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    n4.shutdown().await.unwrap();
    let staging = root.join("n4").join("fetch");
    let before: BTreeMap<String, (u64, u64)> = std::fs::read_dir(&staging)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let m = e.metadata().unwrap();
            (e.file_name().into_string().unwrap(), (m.ino(), m.len()))
        })
        .collect();

    // Restarted at full speed: it finishes, and the segments it had staged whole were kept.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let n4 = loop {
        let l = TcpListener::bind(&addr4).await.unwrap();
        match Node::start_on(config(root, 4), l).await {
            Ok(n) => break n,
            Err(sitelog::Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("restart: {e}"),
        }
    };
    let target = leader_of(&nodes).await.commit_end();
    n4.wait_for(60_000, |s| s.commit_end >= target)
        .await
        .unwrap();
    let mut kept = 0;
    for (name, (ino, len)) in &before {
        let adopted = root.join("n4").join("log").join(name);
        if let Ok(m) = std::fs::metadata(&adopted) {
            if m.len() == *len {
                assert_eq!(m.ino(), *ino, "{name} was fetched again");
                kept += 1;
            }
        }
    }
    assert!(
        kept >= 1,
        "no whole segment was staged before the stop: {before:?}"
    );
    let rec = n4.read(target - 1).unwrap();
    assert_eq!(rec.offset, target - 1);
}
