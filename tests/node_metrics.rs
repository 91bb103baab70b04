//! The node's metrics reach the recorder an embedding service installs (here metrics-util's
//! debugging recorder): appends, fsync latency, commit offset, replication bytes, lag.

use bytes::Bytes;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use sitelog::node::{Node, NodeConfig, Peer, Placement};
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_show_up_in_the_installed_recorder() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        listeners.insert(
            id,
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        );
    }
    let members: BTreeMap<u64, Peer> = listeners
        .iter()
        .map(|(id, l)| {
            let addr = l.local_addr().unwrap().to_string();
            (
                *id,
                Peer {
                    site: format!("s{id}"),
                    addr,
                },
            )
        })
        .collect();
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        let mut cfg = NodeConfig::new(
            id,
            &format!("s{id}"),
            dir.path().join(id.to_string()),
            "",
            5,
        );
        cfg.initial_members = members.clone();
        cfg.placement = Placement::Enforce;
        nodes.insert(id, Node::start_on(cfg, l).await.unwrap());
    }
    let s = nodes[&1]
        .wait_for(10_000, |s| s.leader.is_some())
        .await
        .unwrap();
    let leader = &nodes[&s.leader.unwrap()];
    leader.wait_for(10_000, |s| s.commit_end > 0).await.unwrap();
    for i in 0..10 {
        leader
            .append(vec![Bytes::from(format!("m{i}"))])
            .await
            .unwrap();
    }
    leader
        .wait_for(10_000, |s| {
            s.followers.len() == 2 && s.followers.iter().all(|f| f.lag_entries == 0)
        })
        .await
        .unwrap();

    // Gauges are sampled periodically: take snapshots (bounded) until one has them all. A
    // snapshot drains counters and histograms, so they are accumulated across snapshots.
    let gauges = [
        "sitelog_commit_offset",
        "sitelog_term",
        "sitelog_follower_lag_entries",
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut snap: BTreeMap<String, DebugValue> = BTreeMap::new();
    loop {
        for (k, _, _, v) in snapshotter.snapshot().into_vec() {
            let name = k.key().name().to_string();
            match (snap.get_mut(&name), v) {
                (Some(DebugValue::Counter(a)), DebugValue::Counter(b)) => *a += b,
                (Some(DebugValue::Histogram(a)), DebugValue::Histogram(b)) => a.extend(b),
                (_, v) => {
                    snap.insert(name, v);
                }
            }
        }
        if gauges.iter().all(|g| snap.contains_key(*g)) || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    match snap.get("sitelog_append_records_total") {
        Some(DebugValue::Counter(n)) => assert!(*n >= 10, "{n}"),
        other => panic!("append counter: {other:?}"),
    }
    for h in [
        "sitelog_append_latency_seconds",
        "sitelog_fsync_latency_seconds",
    ] {
        match snap.get(h) {
            Some(DebugValue::Histogram(v)) => assert!(!v.is_empty(), "{h} empty"),
            other => panic!("{h}: {other:?}"),
        }
    }
    match snap.get("sitelog_replicated_bytes_total") {
        Some(DebugValue::Counter(n)) => assert!(*n > 0),
        other => panic!("replicated bytes: {other:?}"),
    }
    for g in [
        "sitelog_commit_offset",
        "sitelog_term",
        "sitelog_follower_lag_entries",
    ] {
        assert!(snap.contains_key(g), "gauge {g} missing: {:?}", snap.keys());
    }
}
