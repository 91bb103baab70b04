//! Retention on a replicated log (three nodes over TCP, in one process): small segments,
//! retention by bytes on every node, a snapshot every few entries.
//!
//! - A follower stopped early lags below the floor (the leader deleted the segments it
//!   needs); restarted, it catches up by snapshot, and its log starts at the snapshot's first
//!   segment, not at 0.
//! - Every node deletes only whole sealed segments: what each still holds is byte-identical
//!   across the nodes, and every acknowledged record at or above a node's floor is there.
//! - Reads below the floor (`Node::read`, a subscription, the client protocol) are told the
//!   first available offset (`Error::BelowFloor`), never skipped silently.
//! - Age retention runs on a timer: an idle cluster still deletes old segments.

use bytes::Bytes;
use futures_util::StreamExt;
use sitelog::node::{Node, NodeConfig, Peer};
use sitelog::Error;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

mod common;

const CLUSTER: u64 = 0x7e7;
const SEGMENT_BYTES: u64 = 16 << 10;
const RETENTION_BYTES: u64 = 64 << 10;

fn config(root: &Path, id: u64) -> NodeConfig {
    let mut cfg = NodeConfig::new(
        id,
        &format!("site-{id}"),
        root.join(format!("n{id}")),
        "",
        CLUSTER,
    );
    cfg.log.segment_size_bytes = SEGMENT_BYTES;
    cfg.log.max_record_bytes = 2 << 10;
    cfg.log.retention_bytes = Some(RETENTION_BYTES);
    cfg.snapshots.every_entries = Some(40);
    cfg.snapshots.keep_entries = 10;
    cfg.catch_up.fetch.chunk_bytes = 8 << 10;
    cfg
}

async fn start_three(root: &Path) -> (BTreeMap<u64, Peer>, BTreeMap<u64, Node>) {
    common::found_cluster(3, |id| config(root, id)).await
}

/// Appends through whichever node leads (retrying refused writes); returns the offset.
async fn append(nodes: &BTreeMap<u64, Node>, payload: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = nodes
            .values()
            .find_map(|n| n.status().leader)
            .and_then(|l| nodes.get(&l));
        if let Some(n) = leader {
            match n.append(vec![Bytes::from(payload.to_string())]).await {
                Ok(o) => return o[0],
                Err(Error::NotLeader { .. }) => {}
                Err(e) => panic!("append: {e}"),
            }
        }
        assert!(Instant::now() < deadline, "no leader took the write");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first offset `node` still holds (0 when nothing was deleted).
fn floor_of(node: &Node) -> u64 {
    match node.read(0) {
        Err(Error::BelowFloor {
            offset: 0,
            first_available,
        }) => first_available,
        _ => 0,
    }
}

/// Polls `f` every 50 ms until it holds or `secs` pass.
async fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The node's segment files (name -> bytes), oldest first, and the name of its last one.
fn segment_files(dir: &Path) -> (BTreeMap<String, Vec<u8>>, String) {
    let mut names: Vec<_> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    let last = names.last().cloned().unwrap_or_default();
    let files = names
        .into_iter()
        .map(|n| (n.clone(), std::fs::read(dir.join("log").join(&n)).unwrap()))
        .collect();
    (files, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_below_the_floor_catches_up_by_snapshot_and_readers_are_told_the_floor() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (members, mut nodes) = start_three(root).await;
    let s = nodes[&1]
        .wait_for(10_000, |s| s.leader.is_some())
        .await
        .unwrap();
    let leader_id = s.leader.unwrap();
    let lagger = *nodes.keys().find(|&&i| i != leader_id).unwrap();
    let lagger_end = nodes[&lagger].status().log_end;
    nodes.remove(&lagger).unwrap().shutdown().await.unwrap();

    // Many segments' worth: retention deletes the lagger's whole range on the others.
    let mut sent = BTreeMap::new();
    for i in 0..1500u32 {
        let p = format!("msg {i} {}", "r".repeat(200 + (i % 200) as usize));
        sent.insert(append(&nodes, &p).await, p);
    }
    let leader = nodes[&leader_id].clone();
    until(20, "the leader's floor to pass the lagger", || {
        floor_of(&leader) > lagger_end + SEGMENT_BYTES / 100
    })
    .await;
    let leader_floor = floor_of(&leader);
    let (files, _) = segment_files(&root.join(format!("n{leader_id}")));
    let held: u64 = files.values().map(|f| f.len() as u64).sum();
    assert!(
        held <= RETENTION_BYTES + 6 * SEGMENT_BYTES,
        "the leader still holds {held} bytes of segments"
    );

    // Every kind of reader below the floor is told where the log starts.
    match leader.subscribe(0).next().await {
        Some(Err(Error::BelowFloor {
            offset: 0,
            first_available,
        })) => assert!(first_available >= leader_floor),
        other => panic!("subscription below the floor: {other:?}"),
    }
    let client =
        sitelog::node::client::Client::new(vec![members[&leader_id].addr.clone()], CLUSTER);
    match client.read(1, 10).await {
        Err(Error::BelowFloor {
            offset: 1,
            first_available,
        }) => assert!(first_available >= leader_floor),
        other => panic!("client read below the floor: {other:?}"),
    }

    // The lagger comes back: the entries it needs are gone, so it catches up by snapshot.
    let l = TcpListener::bind(&members[&lagger].addr).await.unwrap();
    let back = Node::start_on(config(root, lagger), l).await.unwrap();
    let target = leader.commit_end();
    back.wait_for(60_000, |s| s.commit_end >= target)
        .await
        .unwrap();
    let (done, total, _) = back.catch_up_progress();
    assert!(
        total > 0 && done == total,
        "not caught up by snapshot: {done}/{total}"
    );
    let back_floor = floor_of(&back);
    assert!(
        back_floor > lagger_end,
        "the lagger's log starts at {back_floor}: it did not install the snapshot's floor"
    );
    nodes.insert(lagger, back);

    // Nothing acknowledged above a node's floor is lost; nothing below it is served.
    let last = *sent.keys().next_back().unwrap();
    for (id, n) in &nodes {
        n.wait_for(30_000, |s| s.commit_end > last).await.unwrap();
        let floor = floor_of(n);
        for (off, p) in sent.range(floor..) {
            let rec = n
                .read(*off)
                .unwrap_or_else(|e| panic!("node {id} offset {off}: {e}"));
            assert_eq!(&rec.payload[..], p.as_bytes(), "node {id} offset {off}");
        }
        if floor > 0 {
            // Retention runs every second: the floor may have moved up since it was read.
            assert!(matches!(
                n.read(floor - 1),
                Err(Error::BelowFloor { first_available, .. }) if first_available >= floor
            ));
        }
        // Only whole segments go: the first file starts exactly at the floor. Retention may
        // run between reading the floor and listing the files (it raises the floor, then
        // deletes): the two are compared until they agree, within a bound.
        let dir = root.join(format!("n{id}"));
        let first_file = || segment_files(&dir).0.keys().next().unwrap().clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut floor, mut first) = (floor_of(n), first_file());
        while first != format!("{floor:020}.seg") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            (floor, first) = (floor_of(n), first_file());
        }
        assert_eq!(first, format!("{floor:020}.seg"), "node {id}");
    }

    // Sealed segments still held by several nodes are the same bytes on each.
    let all: Vec<(BTreeMap<String, Vec<u8>>, String)> = nodes
        .keys()
        .map(|id| segment_files(&root.join(format!("n{id}"))))
        .collect();
    let mut compared = 0;
    for (i, (a, a_last)) in all.iter().enumerate() {
        for (b, b_last) in &all[i + 1..] {
            for (name, bytes) in a {
                if name == a_last || name == b_last {
                    continue;
                }
                if let Some(other) = b.get(name) {
                    assert!(bytes == other, "segment {name} differs between replicas");
                    compared += 1;
                }
            }
        }
    }
    assert!(
        compared >= 3,
        "too few sealed segments compared: {compared}"
    );
    for (_, n) in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_retention_runs_on_a_timer_on_an_idle_node() {
    let tmp = tempfile::tempdir().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let me = Peer {
        site: "site-1".into(),
        addr: l.local_addr().unwrap().to_string(),
    };
    let mut cfg = config(tmp.path(), 1);
    cfg.initial_members = BTreeMap::from([(1, me)]);
    cfg.log.retention_bytes = None;
    cfg.log.retention_age_ms = Some(1000);
    // One node (a test of the timer, not of placement).
    cfg.placement = sitelog::node::Placement::Warn;
    let node = Node::start_on(cfg, l).await.unwrap();
    node.wait_for(10_000, |s| s.commit_end > 0).await.unwrap();
    let nodes = BTreeMap::from([(1, node.clone())]);
    let mut last = 0;
    for i in 0..300u32 {
        last = append(&nodes, &format!("old {i} {}", "a".repeat(300))).await;
    }
    // No more writes, so no more seals: only the timer can delete what ages out.
    until(20, "age retention on the idle node", || floor_of(&node) > 0).await;
    let floor = floor_of(&node);
    assert!(floor <= last, "the active segment was deleted");
    assert!(node.read(last).is_ok());
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn retention_without_snapshots_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), 1);
    cfg.listen = "127.0.0.1:0".into();
    cfg.snapshots.every_entries = None;
    match Node::start(cfg).await {
        Err(Error::InvalidArgument(why)) => assert!(why.contains("snapshots"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// `sitelog node --retention-bytes` (nodes 2 and 3) and the TOML keys `retention_bytes` and
/// `retention_age_secs` (node 1): the cluster deletes old segments, `sitelog read --from 0`
/// fails naming the first available offset, and `sitelog read` without `--from` starts there.
#[test]
fn cli_flags_and_toml_keys_set_retention_and_read_names_the_floor() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let addrs: BTreeMap<u64, String> = (1..=3).map(|i| (i, common::free_port())).collect();
    let members: Vec<String> = addrs
        .iter()
        .map(|(i, a)| format!("{{ id = {i}, site = \"site-{i}\", addr = \"{a}\" }}"))
        .collect();
    let toml = format!(
        "id = 1\nsite = \"site-1\"\ndata = \"{}\"\nlisten = \"{}\"\ncluster_id = {CLUSTER}\n\
         segment_bytes = 16384\nsnapshot_every = 40\nsnapshot_keep = 10\n\
         retention_bytes = 65536\nretention_age_secs = 3600\ninsecure = true\nmembers = [{}]\n",
        dir.path().join("n1").display(),
        addrs[&1],
        members.join(", ")
    );
    let cfg = dir.path().join("node1.toml");
    std::fs::write(&cfg, toml).unwrap();
    let n1 = Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["node", "--exit-after-secs", "120", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _n1 = common::Proc { child: n1 };
    let flags = [
        "--segment-bytes",
        "16384",
        "--snapshot-every",
        "40",
        "--snapshot-keep",
        "10",
        "--retention-bytes",
        "65536",
        "--retention-age-secs",
        "3600",
    ];
    let _others: Vec<_> = (2..=3)
        .map(|i| common::spawn_node_with(i, dir.path(), &addrs, CLUSTER, &flags, true))
        .collect();
    let nodes = addrs.values().cloned().collect::<Vec<_>>().join(",");
    let cluster = CLUSTER.to_string();
    let target = ["--node", &nodes, "--cluster-id", &cluster, "--insecure"];
    let st = Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["append", "--count", "1200", "--size", "300"])
        .args(target)
        .status()
        .unwrap();
    assert!(st.success());
    // Poll until retention deleted the start: `read --from 0` then fails naming the floor.
    let deadline = Instant::now() + Duration::from_secs(30);
    let message = loop {
        let out = Command::new(env!("CARGO_BIN_EXE_sitelog"))
            .args(["read", "--from", "0", "--to", "1"])
            .args(target)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        if !out.status.success() {
            break err;
        }
        assert!(Instant::now() < deadline, "no node deleted anything");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        message.contains("below the first available offset"),
        "{message}"
    );
    let first: u64 = message
        .split("first available offset ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset in {message:?}"));
    assert!(first > 0, "{message}");
    // Without --from the read starts at the first offset still held, and succeeds.
    let out = Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .arg("read")
        .args(target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let first_line = text.lines().next().expect("records");
    let off: u64 = first_line
        .split("\"offset\":")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset in {first_line:?}"));
    assert!(off >= first, "read from {off}, below the floor {first}");
}
