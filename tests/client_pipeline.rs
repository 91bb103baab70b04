//! One `Client` shared by many tasks, in-process over real TCP on loopback: concurrent
//! appends from clones are pipelined on one connection to the leader and all acknowledged
//! with distinct offsets that read back; concurrent reads and status requests on one
//! connection each get their own reply; appends in flight when the leader stops are
//! `Unknown`, never `Failed`; after a lost connection the next request reconnects.

mod common;

use bytes::Bytes;
use sitelog::node::client::{AppendOutcome, Client};
use sitelog::node::{Node, NodeConfig, Role, Timers};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const CLUSTER: u64 = 0x919e;
const CONCURRENT_APPENDS: usize = 200;

fn config(dir: &std::path::Path, id: u64) -> NodeConfig {
    let mut cfg = NodeConfig::new(
        id,
        &format!("site-{id}"),
        dir.join(format!("n{id}")),
        "127.0.0.1:0",
        CLUSTER,
    );
    cfg.log.segment_size_bytes = 1 << 20;
    cfg.log.max_record_bytes = 64 << 10;
    // WAN timers: on a loaded machine, LAN election timeouts may move the leadership while a
    // test relies on it staying (a follower asked for its status, a leader whose followers
    // are stopped).
    cfg.timers = Timers::wan();
    cfg
}

async fn leader(nodes: &BTreeMap<u64, Node>) -> u64 {
    let any = nodes.values().next().unwrap();
    let s = any
        .wait_for(10_000, |s| s.leader.is_some_and(|l| nodes.contains_key(&l)))
        .await
        .unwrap();
    s.leader.unwrap()
}

fn addrs(nodes: &BTreeMap<u64, Node>) -> Vec<String> {
    nodes
        .values()
        .map(|n| n.advertise_addr().to_string())
        .collect()
}

fn payload(i: usize) -> Bytes {
    Bytes::from(format!("record-{i}"))
}

/// Appends `payload(i)` for every `i` in `range`, each from its own task on a clone of
/// `client`; the outcomes by `i`.
async fn append_concurrently(
    client: &Client,
    range: std::ops::Range<usize>,
) -> BTreeMap<usize, AppendOutcome> {
    let tasks: Vec<_> = range
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { (i, c.append(vec![payload(i)]).await) })
        })
        .collect();
    let mut out = BTreeMap::new();
    for t in tasks {
        let (i, outcome) = t.await.unwrap();
        out.insert(i, outcome);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_from_clones_are_all_acknowledged_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut nodes) = common::found_cluster(3, |id| config(dir.path(), id)).await;
    leader(&nodes).await;
    let mut client = Client::new(addrs(&nodes), CLUSTER);
    client.request_timeout_ms = 20_000;

    let outcomes = append_concurrently(&client, 0..CONCURRENT_APPENDS).await;
    let mut at = BTreeMap::new();
    for (i, outcome) in outcomes {
        match outcome {
            AppendOutcome::Ok(o) => {
                assert_eq!(o.len(), 1);
                assert!(at.insert(o[0], i).is_none(), "offset {} twice", o[0]);
            }
            other => panic!("append {i}: {other:?}"),
        }
    }
    assert_eq!(at.len(), CONCURRENT_APPENDS);
    // Every record reads back at its offset, the reads concurrent too.
    let reads: Vec<_> = at
        .iter()
        .map(|(&offset, &i)| {
            let c = client.clone();
            tokio::spawn(async move { (offset, i, c.read(offset, 1).await.unwrap()) })
        })
        .collect();
    for r in reads {
        let (offset, i, (_, records)) = r.await.unwrap();
        assert_eq!(records[0].offset, offset);
        assert_eq!(records[0].payload, payload(i), "offset {offset}");
    }

    // The leader stops: its connection is lost; the next append reconnects and finds the
    // new leader.
    let old = leader(&nodes).await;
    nodes.remove(&old).unwrap().shutdown().await.unwrap();
    client.leader_wait_ms = 30_000;
    match client.append(vec![payload(CONCURRENT_APPENDS)]).await {
        AppendOutcome::Ok(o) => assert!(!at.contains_key(&o[0])),
        other => panic!("append after the leader stopped: {other:?}"),
    }
    for (_, n) in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_and_status_on_one_connection_get_their_own_replies() {
    let dir = tempfile::tempdir().unwrap();
    let (_, nodes) = common::found_cluster(3, |id| config(dir.path(), id)).await;
    let l = leader(&nodes).await;
    let writer = Client::new(addrs(&nodes), CLUSTER);
    let mut at = BTreeMap::new();
    for i in 0..50 {
        match writer.append(vec![payload(i)]).await {
            AppendOutcome::Ok(o) => at.insert(o[0], i),
            other => panic!("append {i}: {other:?}"),
        };
    }
    let last = *at.keys().last().unwrap();
    // A follower, once it applied every record: one address, so one connection.
    let (&id, follower) = nodes.iter().find(|(&id, _)| id != l).unwrap();
    follower
        .wait_for(10_000, |s| s.commit_end > last)
        .await
        .unwrap();
    let client = Client::new(vec![follower.advertise_addr().to_string()], CLUSTER);
    let addr = follower.advertise_addr().to_string();
    let mut tasks = Vec::new();
    for (&offset, &i) in &at {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let (_, records) = c.read(offset, 1).await.unwrap();
            assert_eq!(records[0].offset, offset);
            assert_eq!(records[0].payload, payload(i));
        }));
        let (c, addr) = (client.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            let s = c.status_of(&addr).await.unwrap();
            assert_eq!(s.node_id, id);
            assert_eq!(s.role, Role::Follower);
            // The membership travels in the status reply.
            assert_eq!(s.voters, vec![1, 2, 3]);
            assert!(s.learners.is_empty());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for (_, n) in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_in_flight_when_the_leader_stops_are_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut nodes) = common::found_cluster(3, |id| config(dir.path(), id)).await;
    let l = leader(&nodes).await;
    let client = Client::new(vec![nodes[&l].advertise_addr().to_string()], CLUSTER);
    // A first append: the client's connection to the leader is open.
    assert!(matches!(
        client.append(vec![payload(0)]).await,
        AppendOutcome::Ok(_)
    ));
    // Without its followers the leader appends but commits nothing: the appends stay in
    // flight on the one connection.
    let leader_node = nodes.remove(&l).unwrap();
    for (_, n) in std::mem::take(&mut nodes) {
        n.shutdown().await.unwrap();
    }
    // Alone, it stays the leader (no one can be elected) and commits nothing.
    let s = leader_node.status();
    assert_eq!(
        s.role,
        Role::Leader,
        "the leader moved before its followers stopped"
    );
    let log_end = s.log_end;
    let in_flight = 16;
    let tasks: Vec<_> = (1..=in_flight)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { c.append(vec![payload(i)]).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while leader_node.status().log_end < log_end + in_flight as u64 {
        assert!(
            Instant::now() < deadline,
            "the appends never reached the leader: {:?}, log_end before {log_end}",
            leader_node.status()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    leader_node.shutdown().await.unwrap();
    for t in tasks {
        let outcome = t.await.unwrap();
        assert!(
            matches!(outcome, AppendOutcome::Unknown(_)),
            "an append in flight on a lost connection: {outcome:?}"
        );
    }
}
