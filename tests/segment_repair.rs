//! Repair from peers: a bit flipped in a follower's sealed segment file while a three-node
//! cluster runs is found (by the background scrub, or by a read) and the file is replaced by
//! a verified copy from a peer, byte-identical, without a restart; reads return the right
//! bytes again and the repair is counted (node stats and metrics).

use bytes::Bytes;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use sitelog::node::Role;
use sitelog::node::{Node, NodeConfig, Peer};
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

fn snapshotter() -> &'static Snapshotter {
    static S: OnceLock<Snapshotter> = OnceLock::new();
    S.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let s = recorder.snapshotter();
        recorder.install().unwrap();
        s
    })
}

/// Counter totals by (name, node label), accumulated across snapshots (a snapshot drains).
fn counters(acc: &mut BTreeMap<(String, String), u64>) {
    for (k, _, _, v) in snapshotter().snapshot().into_vec() {
        let key = k.key();
        let node = key
            .labels()
            .find(|l| l.key() == "node")
            .map(|l| l.value().to_string())
            .unwrap_or_default();
        if let DebugValue::Counter(n) = v {
            *acc.entry((key.name().to_string(), node)).or_default() += n;
        }
    }
}

fn config(root: &Path, id: u64, cluster: u64, scrub_mb_per_s: u64) -> NodeConfig {
    let mut cfg = NodeConfig::new(
        id,
        &format!("site-{id}"),
        root.join(format!("n{id}")),
        "",
        cluster,
    );
    cfg.log.segment_size_bytes = 64 << 10;
    cfg.log.max_record_bytes = 8 << 10;
    cfg.snapshots.every_entries = None;
    cfg.snapshots.keep_entries = 100;
    cfg.catch_up.fetch.chunk_bytes = 16 << 10;
    cfg.repair.scrub_mb_per_s = scrub_mb_per_s;
    cfg.repair.scrub_pass_interval_ms = 20;
    cfg
}

async fn start_three(
    root: &Path,
    first_id: u64,
    cluster: u64,
    scrub_mb_per_s: u64,
) -> (BTreeMap<u64, Peer>, BTreeMap<u64, Node>) {
    let mut listeners = BTreeMap::new();
    for id in first_id..first_id + 3 {
        listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let members: BTreeMap<u64, Peer> = listeners
        .iter()
        .map(|(id, l)| {
            let addr = l.local_addr().unwrap().to_string();
            let site = format!("site-{id}");
            (*id, Peer { site, addr })
        })
        .collect();
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        let mut cfg = config(root, id, cluster, scrub_mb_per_s);
        cfg.initial_members = members.clone();
        nodes.insert(id, Node::start_on(cfg, l).await.unwrap());
    }
    (members, nodes)
}

async fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Appends through whichever node leads, retrying writes refused before they were appended
/// (an election just finishing); returns the leader that took them and the last offset.
async fn append(nodes: &BTreeMap<u64, Node>, payloads: Vec<Bytes>) -> (Node, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(n) = nodes.values().find(|n| n.status().role == Role::Leader) {
            match n.append(payloads.clone()).await {
                Ok(o) => return (n.clone(), o[o.len() - 1]),
                Err(sitelog::Error::NotLeader { .. }) => {}
                Err(e) => panic!("append: {e}"),
            }
        }
        assert!(Instant::now() < deadline, "no leader took the write");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes `n` records of about 1 KiB and waits until every node has committed them; returns
/// the leader.
async fn fill(nodes: &BTreeMap<u64, Node>, n: usize) -> Node {
    let mut last = None;
    for batch in (0..n).collect::<Vec<_>>().chunks(10) {
        let payloads = batch
            .iter()
            .map(|i| Bytes::from(format!("record {i:05} {}", "m".repeat(1000))))
            .collect();
        last = Some(append(nodes, payloads).await);
    }
    let (leader, offset) = last.unwrap();
    for node in nodes.values() {
        node.wait_for(10_000, |s| s.commit_end > offset)
            .await
            .unwrap();
    }
    leader
}

fn seg_path(root: &Path, id: u64, name: &str) -> PathBuf {
    root.join(format!("n{id}")).join("log").join(name)
}

/// The names of the sealed segment files of node `id` (all but the highest-numbered).
fn sealed_names(root: &Path, id: u64) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join(format!("n{id}")).join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    names.pop();
    names
}

/// Whether node `id`'s newest segment still has its prepared name: a roll into a prepared
/// file names it only after its first records are durable (`src/storage/namer.rs`), so the
/// highest segment name is not the active segment until then. Such a file's header (magic,
/// then the base at byte 24) lies above every named segment; a recycled spare's old header
/// lies below.
fn newest_segment_unnamed(root: &Path, id: u64) -> bool {
    let dir = root.join(format!("n{id}")).join("log");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let newest_named = names
        .iter()
        .filter(|n| n.ends_with(".seg"))
        .map(|n| base_of(n))
        .max()
        .unwrap_or(0);
    names
        .iter()
        .filter(|n| n.starts_with("prepared-"))
        .any(|n| {
            let head = std::fs::read(dir.join(n)).unwrap_or_default();
            head.len() >= 32
                && &head[..8] == b"SLSEGMNT"
                && u64::from_le_bytes(head[24..32].try_into().unwrap()) > newest_named
        })
}

/// Flips one bit inside the frames of a segment file, behind the log's back (a bad sector).
fn flip_bit(path: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_at(&mut b, at).unwrap();
    f.write_at(&[b[0] ^ 0x04], at).unwrap();
    f.sync_all().unwrap();
}

fn byte_at(path: &Path, at: u64) -> u8 {
    let mut b = [0u8; 1];
    std::fs::File::open(path)
        .unwrap()
        .read_at(&mut b, at)
        .unwrap();
    b[0]
}

fn base_of(name: &str) -> u64 {
    name.trim_end_matches(".seg").parse().unwrap()
}

/// Every record of `[from, to)` reads the same on `node` as on `leader`.
fn same_records(node: &Node, leader: &Node, from: u64, to: u64) {
    for o in from..to {
        let (a, b) = (node.read(o).unwrap(), leader.read(o).unwrap());
        assert_eq!((a.payload, a.term), (b.payload, b.term), "offset {o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_finds_a_flipped_bit_in_a_follower_and_repairs_it_from_a_peer() {
    snapshotter();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_, nodes) = start_three(root, 1, 0x7e1, 1000).await;
    let leader = fill(&nodes, 400).await;
    let follower = nodes.values().find(|n| n.id() != leader.id()).unwrap();
    let (f, l) = (follower.id(), leader.id());
    let names = sealed_names(root, f);
    assert!(names.len() >= 4, "{names:?}");
    let name = &names[2];
    let good = std::fs::read(seg_path(root, l, name)).unwrap();
    // Sealed files are the same bytes on every replica: that is what makes a peer's copy a
    // repair.
    assert_eq!(std::fs::read(seg_path(root, f, name)).unwrap(), good);
    poll("a clean scrub pass", Duration::from_secs(10), || {
        (follower.repair_stats().scrub_segments >= names.len() as u64).then_some(())
    })
    .await;
    assert_eq!(follower.repair_stats().segments_repaired, 0);

    flip_bit(&seg_path(root, f, name), 4096 + 3000);
    // The cluster keeps taking writes meanwhile.
    let writer = {
        let nodes = nodes.clone();
        tokio::spawn(async move {
            for i in 0..50 {
                append(&nodes, vec![Bytes::from(format!("during {i}"))]).await;
            }
        })
    };
    poll("the repair", Duration::from_secs(20), || {
        (follower.repair_stats().segments_repaired == 1).then_some(())
    })
    .await;
    writer.await.unwrap();
    assert_eq!(std::fs::read(seg_path(root, f, name)).unwrap(), good);
    let next = base_of(&names[3]);
    same_records(follower, &leader, base_of(name), next);
    let stats = follower.repair_stats();
    assert_eq!((stats.segments_repaired, stats.repair_failures), (1, 0));
    assert!(stats.scrub_bytes > 0);
    assert!(!root
        .join(format!("n{f}"))
        .join("repair")
        .join(name)
        .exists());

    let mut acc = BTreeMap::new();
    counters(&mut acc);
    let get = |acc: &BTreeMap<(String, String), u64>, m: &str, id: u64| {
        acc.get(&(m.to_string(), id.to_string()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(get(&acc, "sitelog_segments_repaired_total", f), 1);
    assert_eq!(get(&acc, "sitelog_segments_repaired_total", l), 0);
    assert!(get(&acc, "sitelog_scrub_bytes_total", f) > 0);
    assert!(get(&acc, "sitelog_scrub_segments_total", f) > 0);
    for n in nodes.into_values() {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_meets_damage_starts_a_repair() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Scrub off: only the read can find the damage.
    let (_, nodes) = start_three(root, 11, 0x7e2, 0).await;
    let leader = fill(&nodes, 300).await;
    let follower = nodes.values().find(|n| n.id() != leader.id()).unwrap();
    let (f, l) = (follower.id(), leader.id());
    let names = sealed_names(root, f);
    let name = &names[1];
    let (base, next) = (base_of(name), base_of(&names[2]));
    let good = std::fs::read(seg_path(root, l, name)).unwrap();

    // Damage the first record's payload: its read fails with a typed corruption error.
    flip_bit(&seg_path(root, f, name), 4096 + 60);
    match follower.read(base) {
        Err(sitelog::Error::Corruption { .. }) => {}
        other => panic!("expected corruption, got {other:?}"),
    }
    poll("the read-triggered repair", Duration::from_secs(20), || {
        (follower.repair_stats().segments_repaired == 1).then_some(())
    })
    .await;
    assert_eq!(std::fs::read(seg_path(root, f, name)).unwrap(), good);
    same_records(follower, &leader, base, next);
    assert_eq!(follower.repair_stats().scrub_bytes, 0);

    // Damage in the active segment, below the watermark, is refused with the typed error.
    // The damaged record must be in a full block: a write with O_DIRECT rewrites the last,
    // partial one from memory.
    let (active, active_base) = loop {
        let leader = fill(&nodes, 10).await;
        poll("the newest segment's name", Duration::from_secs(20), || {
            (!newest_segment_unnamed(root, f)).then_some(())
        })
        .await;
        let active = std::fs::read_dir(root.join(format!("n{f}")).join("log"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".seg"))
            .max()
            .unwrap();
        let base = base_of(&active);
        if leader.commit_end() >= base + 10 && follower.commit_end() >= base + 10 {
            break (active, base);
        }
    };
    // The follower may still be writing its last batch when the bit is flipped, and a batch
    // rewrites its first (then partial) block from memory: an undone flip is flipped again.
    let path = seg_path(root, f, &active);
    let mut attempts = 0;
    loop {
        let before = byte_at(&path, 4096 + 60);
        flip_bit(&path, 4096 + 60);
        match follower.read(active_base) {
            Err(sitelog::Error::Corruption { .. }) => break,
            other if byte_at(&path, 4096 + 60) == before && attempts < 5 => {
                eprintln!("the flip was rewritten by a write in flight ({other:?}); again");
                attempts += 1;
            }
            other => panic!("expected corruption in the active segment, got {other:?}"),
        }
    }
    let stats = follower.repair_stats();
    assert_eq!((stats.segments_repaired, stats.repair_failures), (1, 0));

    // Once that segment seals (its footer's whole-file CRC is computed from the bytes as
    // written, not as the disk now holds them), it is repaired like any sealed segment.
    let leader = fill(&nodes, 100).await;
    assert!(sealed_names(root, f).contains(&active));
    assert!(follower.read(active_base).is_err());
    poll(
        "the repair of the once active segment",
        Duration::from_secs(20),
        || (follower.repair_stats().segments_repaired == 2).then_some(()),
    )
    .await;
    assert_eq!(
        std::fs::read(seg_path(root, f, &active)).unwrap(),
        std::fs::read(seg_path(root, leader.id(), &active)).unwrap()
    );
    assert_eq!(
        follower.read(active_base).unwrap().payload,
        leader.read(active_base).unwrap().payload
    );
    for n in nodes.into_values() {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_footer_found_at_start_is_repaired_before_the_node_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let cluster = 0x7e3;
    let (members, mut nodes) = start_three(root, 21, cluster, 0).await;
    let leader = fill(&nodes, 300).await;
    let f = *nodes.keys().find(|id| **id != leader.id()).unwrap();
    let names = sealed_names(root, f);
    let name = &names[1];
    let (base, next) = (base_of(name), base_of(&names[2]));
    let good = std::fs::read(seg_path(root, leader.id(), name)).unwrap();
    nodes.remove(&f).unwrap().shutdown().await.unwrap();

    // Damage the footer while the node is down: its log then refuses to open.
    let path = seg_path(root, f, name);
    flip_bit(&path, good.len() as u64 - 40);
    let mut cfg = config(root, f, cluster, 0);
    cfg.initial_members = members.clone();
    let opened = poll(
        "the stopped node's log lock",
        Duration::from_secs(10),
        || match sitelog::storage::Log::open(cfg.data_dir.join("log"), cfg.log.clone()) {
            Err(sitelog::Error::Locked { .. }) => None,
            other => Some(other),
        },
    )
    .await;
    assert!(
        matches!(opened, Err(sitelog::Error::Corruption { .. })),
        "{opened:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let node = loop {
        let listener = TcpListener::bind(&members[&f].addr).await.unwrap();
        match Node::start_on(cfg.clone(), listener).await {
            Ok(n) => break n,
            // The stopped node's log lock is released as its last tasks end.
            Err(sitelog::Error::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("restart {f}: {e}"),
        }
    };
    assert_eq!(node.repair_stats().segments_repaired, 1);
    assert_eq!(std::fs::read(&path).unwrap(), good);
    let end = leader.commit_end();
    node.wait_for(10_000, |s| s.commit_end >= end)
        .await
        .unwrap();
    same_records(&node, &leader, base, next);
    nodes.insert(f, node);
    for n in nodes.into_values() {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_that_meets_damage_on_the_leader_repairs_it_and_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let cluster = 0x7e4;
    // Scrub off: only the leader's replication reads find the damage.
    let (members, mut nodes) = start_three(root, 31, cluster, 0).await;
    let leader = fill(&nodes, 50).await;
    let l = leader.id();
    let f = *nodes.keys().find(|id| **id != l).unwrap();
    let other = *nodes.keys().find(|id| **id != l && **id != f).unwrap();
    nodes.remove(&f).unwrap().shutdown().await.unwrap();
    let stopped_at = leader.commit_end();

    // The follower misses several segments' worth of records; one of them is damaged on the
    // leader before the follower comes back and needs it.
    let leader = fill(&nodes, 400).await;
    assert_eq!(
        leader.id(),
        l,
        "the leader changed while the follower was down"
    );
    let name = sealed_names(root, l)
        .into_iter()
        .find(|n| base_of(n) > stopped_at)
        .unwrap();
    let good = std::fs::read(seg_path(root, other, &name)).unwrap();
    flip_bit(&seg_path(root, l, &name), 4096 + 2000);

    let mut cfg = config(root, f, cluster, 0);
    cfg.initial_members = members.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    let follower = loop {
        let listener = TcpListener::bind(&members[&f].addr).await.unwrap();
        match Node::start_on(cfg.clone(), listener).await {
            Ok(n) => break n,
            Err(sitelog::Error::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("restart {f}: {e}"),
        }
    };
    let end = leader.commit_end();
    follower
        .wait_for(20_000, |s| s.commit_end >= end)
        .await
        .unwrap();
    assert_eq!(leader.repair_stats().segments_repaired, 1);
    assert_ne!(leader.status().role, Role::Shutdown);
    assert_eq!(std::fs::read(seg_path(root, l, &name)).unwrap(), good);
    assert_eq!(std::fs::read(seg_path(root, f, &name)).unwrap(), good);
    let next = base_of(&name) + 1;
    same_records(&follower, &nodes[&other], base_of(&name), next);
    nodes.insert(f, follower);
    for n in nodes.into_values() {
        n.shutdown().await.unwrap();
    }
}
