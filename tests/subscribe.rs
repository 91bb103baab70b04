//! The async API, in one process over loopback TCP:
//! - `Node::subscribe` is a `Stream`: records appended after subscribing arrive in order as
//!   they commit; below the retention floor it yields `BelowFloor` and ends; when the node
//!   stops it yields the error once and ends.
//! - `Client::subscribe` follows a three-node cluster: records appended while following arrive
//!   in order; below the floor it yields `BelowFloor` and ends.

mod common;

use bytes::Bytes;
use futures_util::StreamExt;
use sitelog::node::client::{AppendOutcome, Client};
use sitelog::node::{Node, NodeConfig, Placement};
use sitelog::storage::EntryKind;
use sitelog::Error;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const CLUSTER: u64 = 0x5b5;
const DEADLINE: Duration = Duration::from_secs(20);

/// Founds a cluster of `n` nodes on loopback; `tune` adjusts each node's config.
async fn start(root: &Path, n: u64, tune: impl Fn(&mut NodeConfig)) -> BTreeMap<u64, Node> {
    let (_, nodes) = common::found_cluster(n, |id| {
        let dir = root.join(format!("n{id}"));
        let mut cfg = NodeConfig::new(id, &format!("site-{id}"), dir, "", CLUSTER);
        tune(&mut cfg);
        cfg
    })
    .await;
    let any = nodes.values().next().unwrap();
    any.wait_for(10_000, |s| s.leader.is_some()).await.unwrap();
    nodes
}

/// The next item of `s` within the test's deadline.
async fn next_within<S: futures_util::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    tokio::time::timeout(DEADLINE, s.next())
        .await
        .expect("the stream answered within the deadline")
}

/// A single node (its own majority) with small segments, retention and frequent snapshots,
/// so that its floor rises after a few hundred records.
fn retained(cfg: &mut NodeConfig) {
    cfg.placement = Placement::Warn;
    cfg.log.segment_size_bytes = 16 << 10;
    cfg.log.max_record_bytes = 2 << 10;
    cfg.log.retention_bytes = Some(32 << 10);
    cfg.snapshots.every_entries = Some(40);
    cfg.snapshots.keep_entries = 10;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_subscription_streams_commits_in_order_then_below_floor_then_ends_on_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start(tmp.path(), 1, retained).await;
    let node = nodes[&1].clone();

    // Subscribed before the appends: every record arrives as it commits, in order.
    let mut sub = node.subscribe(0);
    let writer = node.clone();
    let appends = tokio::spawn(async move {
        let mut offsets = Vec::new();
        for i in 0..20u32 {
            let o = writer.append(vec![Bytes::from(format!("m{i}"))]).await;
            offsets.push(o.unwrap()[0]);
        }
        offsets
    });
    let mut got = Vec::new();
    let mut last = None;
    while got.len() < 20 {
        let rec = next_within(&mut sub).await.unwrap().unwrap();
        assert!(
            last.is_none_or(|l| rec.offset == l + 1),
            "gap before {}",
            rec.offset
        );
        last = Some(rec.offset);
        assert_eq!(sub.position(), rec.offset + 1);
        if rec.kind == EntryKind::Normal {
            got.push((rec.offset, rec.payload));
        }
    }
    let offsets = appends.await.unwrap();
    for (i, (off, payload)) in got.iter().enumerate() {
        assert_eq!(*off, offsets[i]);
        assert_eq!(&payload[..], format!("m{i}").as_bytes());
    }

    // Enough records for retention to delete the first segments.
    let filler = Bytes::from("f".repeat(300));
    let deadline = Instant::now() + DEADLINE;
    let floor = loop {
        if let Err(Error::BelowFloor {
            first_available, ..
        }) = node.read(0)
        {
            break first_available;
        }
        assert!(Instant::now() < deadline, "retention deleted nothing");
        node.append(vec![filler.clone(); 20]).await.unwrap();
    };
    let mut below = node.subscribe(0);
    match next_within(&mut below).await {
        Some(Err(Error::BelowFloor {
            offset: 0,
            first_available,
        })) => assert!(first_available >= floor),
        other => panic!("node subscription below the floor: {other:?}"),
    }
    assert!(
        next_within(&mut below).await.is_none(),
        "ended after BelowFloor"
    );
    let client = Client::new(vec![node.advertise_addr().to_string()], CLUSTER);
    let mut below = client.subscribe(0);
    match next_within(&mut below).await {
        Some(Err(Error::BelowFloor { offset: 0, .. })) => {}
        other => panic!("client subscription below the floor: {other:?}"),
    }
    assert!(
        next_within(&mut below).await.is_none(),
        "ended after BelowFloor"
    );

    // Caught up, waiting at the commit end when the node stops: one error, then the end.
    let mut tail = node.subscribe(node.commit_end());
    drop(nodes);
    node.shutdown().await.unwrap();
    assert!(matches!(
        next_within(&mut tail).await,
        Some(Err(Error::Shutdown))
    ));
    assert!(
        next_within(&mut tail).await.is_none(),
        "ended after the stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_follow_gets_records_appended_while_following_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start(tmp.path(), 3, |_| {}).await;
    let addrs: Vec<String> = nodes
        .values()
        .map(|n| n.advertise_addr().to_string())
        .collect();
    let client = Client::new(addrs.clone(), CLUSTER);
    let mut follow = client.subscribe(0);
    let writer = Client::new(addrs, CLUSTER);
    let appends = tokio::spawn(async move {
        let mut offsets = Vec::new();
        for i in 0..30u32 {
            match writer.append(vec![Bytes::from(format!("c{i}"))]).await {
                AppendOutcome::Ok(o) => offsets.push(o[0]),
                other => panic!("append {i}: {other:?}"),
            }
        }
        offsets
    });
    let mut got = Vec::new();
    while got.len() < 30 {
        let rec = next_within(&mut follow).await.unwrap().unwrap();
        assert!(got.last().is_none_or(|(l, _)| rec.offset > *l));
        got.push((rec.offset, rec.payload));
    }
    let offsets = appends.await.unwrap();
    for (i, (off, payload)) in got.iter().enumerate() {
        assert_eq!(*off, offsets[i]);
        assert_eq!(&payload[..], format!("c{i}").as_bytes());
    }
    for n in nodes.into_values() {
        n.shutdown().await.unwrap();
    }
}
