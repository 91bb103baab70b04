//! Site replacement as one library call, in-process over real TCP on loopback: a lost voter is
//! replaced through `Node::replace_site` called on the leader, another through
//! `Client::replace_site`, a third through `Node::replace_site` called on a follower, each checked event by event (phases in order, one outcome, the new
//! voters, the new node holding every acknowledged record); a new node that never answers
//! ends in `Failed(Timeout)` at the deadline (called on a follower).

mod common;

use bytes::Bytes;
use futures_util::StreamExt;
use sitelog::node::client::{AppendOutcome, Client};
use sitelog::node::Role;
use sitelog::node::{Node, NodeConfig, Peer, ReplaceEvent, ReplaceOptions, ReplacePhase};
use sitelog::Error;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const CLUSTER: u64 = 0x4e9;
/// Any replacement here moves a few hundred KiB: far below this.
const RUN_LIMIT: Duration = Duration::from_secs(60);

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
    cfg
}

/// Three founding nodes (ids 1..=3, one site each).
async fn start_three(dir: &std::path::Path) -> BTreeMap<u64, Node> {
    common::found_cluster(3, |id| config(dir, id)).await.1
}

/// A new, empty node waiting to be added; its peer entry.
async fn start_new(dir: &std::path::Path, id: u64) -> (Node, Peer) {
    let node = Node::start(config(dir, id)).await.unwrap();
    let peer = Peer {
        site: format!("site-{id}"),
        addr: node.advertise_addr().to_string(),
    };
    (node, peer)
}

async fn leader(nodes: &BTreeMap<u64, Node>) -> u64 {
    let any = nodes.values().next().unwrap();
    let s = any
        .wait_for(10_000, |s| s.leader.is_some_and(|l| nodes.contains_key(&l)))
        .await
        .unwrap();
    s.leader.unwrap()
}

/// Every event of `stream` until it ends (within `RUN_LIMIT`).
async fn collect(stream: impl futures_util::Stream<Item = ReplaceEvent>) -> Vec<ReplaceEvent> {
    tokio::time::timeout(RUN_LIMIT, stream.collect::<Vec<_>>())
        .await
        .expect("the replacement stream did not end in time")
}

/// Phases in order (one `AddingLearner`, at least one `CatchingUp`, then `Swapping` when
/// `swapped`), timestamps non-decreasing, the target fixed once set, and one final outcome.
fn check_sequence(events: &[ReplaceEvent], swapped: bool) {
    let (last, progress) = events.split_last().expect("no events");
    let mut phases = Vec::new();
    let mut at = None;
    let mut target = None;
    for e in progress {
        let ReplaceEvent::Progress(p) = e else {
            panic!("an outcome before the last event: {events:?}");
        };
        if phases.last() != Some(&p.phase) {
            phases.push(p.phase);
        }
        assert!(at.is_none_or(|t| p.at >= t), "time went back: {events:?}");
        at = Some(p.at);
        if p.phase != ReplacePhase::AddingLearner {
            assert_eq!(*target.get_or_insert(p.commit_target), p.commit_target);
        }
    }
    let mut want = vec![ReplacePhase::AddingLearner, ReplacePhase::CatchingUp];
    if swapped {
        want.push(ReplacePhase::Swapping);
        let Some(ReplaceEvent::Progress(caught)) = progress.iter().rev().nth(1) else {
            panic!("no catch-up event before the swap: {events:?}");
        };
        assert!(caught.commit_done >= caught.commit_target, "{caught:?}");
        assert!(caught.commit_target > 0, "{caught:?}");
    }
    assert_eq!(phases, want, "{events:?}");
    assert!(
        matches!(last, ReplaceEvent::Done { .. } | ReplaceEvent::Failed(_)),
        "{last:?}"
    );
}

fn voters(events: &[ReplaceEvent]) -> Vec<u64> {
    match events.last() {
        Some(ReplaceEvent::Done { voters }) => {
            let mut v = voters.clone();
            v.sort_unstable();
            v
        }
        other => panic!("not done: {other:?}"),
    }
}

async fn write(client: &mut Client, n: u32) -> BTreeMap<u64, Bytes> {
    let mut acked = BTreeMap::new();
    for i in 0..n {
        let payload = Bytes::from(format!("record {i} {}", "x".repeat(500)));
        match client.append(vec![payload.clone()]).await {
            AppendOutcome::Ok(o) => {
                acked.insert(o[0], payload);
            }
            other => panic!("append {i}: {other:?}"),
        }
    }
    acked
}

fn holds_all(node: &Node, acked: &BTreeMap<u64, Bytes>) {
    for (off, want) in acked {
        assert_eq!(
            &node.read(*off).unwrap().payload[..],
            &want[..],
            "offset {off}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_sites_are_replaced_through_node_and_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_three(dir.path()).await;
    let l = leader(&nodes).await;
    let addrs: Vec<String> = nodes
        .values()
        .map(|n| n.advertise_addr().to_string())
        .collect();
    let mut client = Client::new(addrs.clone(), CLUSTER);
    let mut acked = write(&mut client, 300).await;

    // A follower's site is lost; the leader's embedder replaces it with node 4.
    let dead = *nodes.keys().find(|&&id| id != l).unwrap();
    nodes.remove(&dead).unwrap().shutdown().await.unwrap();
    let (n4, peer4) = start_new(dir.path(), 4).await;
    let mut opts = ReplaceOptions::default();
    opts.poll_ms = 10;
    let events = collect(nodes[&l].replace_site(dead, 4, peer4, opts)).await;
    check_sequence(&events, true);
    let mut want: Vec<u64> = nodes.keys().copied().chain([4]).collect();
    want.sort_unstable();
    assert_eq!(voters(&events), want);
    holds_all(&n4, &acked);
    nodes.insert(4, n4);

    // Another site is lost; a client of the cluster replaces it with node 5.
    acked.extend(write(&mut client, 100).await);
    let l = leader(&nodes).await;
    let dead = *nodes.keys().find(|&&id| id != l && id != 4).unwrap();
    nodes.remove(&dead).unwrap().shutdown().await.unwrap();
    let (n5, peer5) = start_new(dir.path(), 5).await;
    let mut all_addrs = addrs;
    all_addrs.push(nodes[&4].advertise_addr().to_string());
    let admin = Client::new(all_addrs, CLUSTER);
    let events = collect(admin.replace_site(dead, 5, peer5, opts)).await;
    check_sequence(&events, true);
    let mut want: Vec<u64> = nodes.keys().copied().chain([5]).collect();
    want.sort_unstable();
    assert_eq!(voters(&events), want);
    holds_all(&n5, &acked);
    let status = nodes[&l].status();
    assert_eq!(status.role, Role::Leader);
    assert!(status.learners.is_empty(), "{status:?}");
    nodes.insert(5, n5);

    // A third site is lost; a follower's embedder replaces it with node 6.
    let l = leader(&nodes).await;
    let mut followers = nodes.keys().copied().filter(|&id| id != l);
    let (dead, caller) = (followers.next().unwrap(), followers.next().unwrap());
    nodes.remove(&dead).unwrap().shutdown().await.unwrap();
    let (n6, peer6) = start_new(dir.path(), 6).await;
    let events = collect(nodes[&caller].replace_site(dead, 6, peer6, opts)).await;
    check_sequence(&events, true);
    assert_eq!(voters(&events), vec![caller.min(l), caller.max(l), 6]);
    holds_all(&n6, &acked);
    nodes.insert(6, n6);
    for (_, n) in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_node_that_never_answers_fails_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_three(dir.path()).await;
    let l = leader(&nodes).await;
    let follower = *nodes.keys().find(|&&id| id != l).unwrap();
    // A first committed write: the founding membership is committed too.
    let addrs = nodes.values().map(|n| n.advertise_addr().to_string());
    write(&mut Client::new(addrs.collect(), CLUSTER), 1).await;
    // Nothing listens there: the learner is added but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = Peer {
        site: "site-9".into(),
        addr: silent.local_addr().unwrap().to_string(),
    };
    drop(silent);
    let mut opts = ReplaceOptions::default();
    opts.poll_ms = 20;
    opts.catch_up_deadline_ms = 500;
    let t = Instant::now();
    let events = collect(nodes[&follower].replace_site(3, 9, peer, opts)).await;
    let took = t.elapsed();
    check_sequence(&events, false);
    assert!(
        matches!(
            events.last(),
            Some(ReplaceEvent::Failed(Error::Timeout { .. }))
        ),
        "{events:?}"
    );
    assert!(took >= Duration::from_millis(500), "failed early: {took:?}");
    assert!(took < Duration::from_secs(10), "failed late: {took:?}");
    // Nothing was swapped: the voters are the founding three.
    let s = nodes[&l].status();
    assert_eq!(s.voters, vec![1, 2, 3]);
    for (_, n) in nodes {
        n.shutdown().await.unwrap();
    }
}
