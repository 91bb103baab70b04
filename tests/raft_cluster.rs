//! Three Raft replicas in one process on the in-process network: writes continue while the
//! leader is killed again and again; every acknowledged record is present exactly once,
//! byte-identical, at its offset on every live replica; committed ends never go back; a
//! restarted replica catches up; a partitioned old leader acknowledges nothing (fencing).

use openraft::async_runtime::WatchReceiver;
use openraft::{EntryPayload, ServerState};
use sitelog::raft::network::LocalRouter;
use sitelog::raft::replica::{openraft_config, RaftTimers, Replica, SnapshotSettings};
use sitelog::raft::{AppData, NodeInfo};
use sitelog::storage::LogOptions;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::timeout;

const CLUSTER_ID: u64 = 0x5173_1095;

/// The in-process network moves no segments: these tests catch up by replication only.
fn no_snapshots() -> SnapshotSettings {
    let mut settings = SnapshotSettings::default();
    settings.every_entries = None;
    settings
}

struct Cluster {
    dir: tempfile::TempDir,
    router: LocalRouter,
    nodes: BTreeMap<u64, Replica>,
}

fn node_dir(root: &Path, id: u64) -> PathBuf {
    root.join(format!("n{id}"))
}

fn members() -> BTreeMap<u64, NodeInfo> {
    (1..=3)
        .map(|i| {
            let info = NodeInfo {
                site: format!("site-{i}"),
                addr: format!("local:{i}"),
            };
            (i, info)
        })
        .collect()
}

impl Cluster {
    async fn start() -> Cluster {
        let mut c = Cluster {
            dir: tempfile::tempdir().unwrap(),
            router: LocalRouter::default(),
            nodes: BTreeMap::new(),
        };
        for id in 1..=3 {
            c.start_node(id).await;
        }
        c.nodes[&1]
            .raft_handle()
            .initialize(members())
            .await
            .unwrap();
        c
    }

    async fn start_node(&mut self, id: u64) {
        let cfg = openraft_config("test", RaftTimers::default(), no_snapshots()).unwrap();
        let dir = node_dir(self.dir.path(), id);
        // The killed replica's threads release the directory lock as they wind down; a
        // reopen may race them, so it is retried for a bounded time.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let r = loop {
            let mut opts = LogOptions::default();
            opts.segment_size_bytes = 1 << 20;
            opts.max_record_bytes = 64 << 10;
            match Replica::start(
                id,
                &dir,
                CLUSTER_ID,
                opts,
                cfg.clone(),
                self.router.factory(id),
            )
            .await
            {
                Ok(r) => break r,
                Err(sitelog::Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("start node {id}: {e}"),
            }
        };
        self.router.register(id, r.raft_handle().clone());
        self.nodes.insert(id, r);
    }

    async fn kill(&mut self, id: u64) {
        self.router.unregister(id);
        let r = self.nodes.remove(&id).unwrap();
        r.raft_handle().shutdown().await.unwrap();
    }

    /// The node that is leader by its own account (polled: openraft's metrics of other
    /// nodes may lag), within a deadline.
    async fn leader(&self) -> u64 {
        self.leader_among(&self.nodes.keys().copied().collect::<Vec<_>>())
            .await
    }

    /// Like `leader`, among `ids` only (a partitioned old leader may still think it leads).
    async fn leader_among(&self, ids: &[u64]) -> u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            for (id, r) in self.nodes.iter().filter(|(i, _)| ids.contains(i)) {
                if r.raft_handle().metrics().borrow_watched().state == ServerState::Leader {
                    return *id;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no leader elected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Writes `payload` through the leader: `Some(offset)` once a majority has it. A write the
/// node refused before appending it (ForwardToLeader) is retried on the new leader; a write
/// whose fate is unknown (timeout, leader died) is given up, never retried (that could
/// duplicate it).
async fn write(c: &Cluster, payload: Vec<u8>) -> Option<u64> {
    write_among(c, &c.nodes.keys().copied().collect::<Vec<_>>(), payload).await
}

async fn write_among(c: &Cluster, ids: &[u64], payload: Vec<u8>) -> Option<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        let leader = c.leader_among(ids).await;
        let fut = c.nodes[&leader]
            .raft_handle()
            .client_write(AppData::normal(payload.clone().into()));
        match timeout(Duration::from_secs(2), fut).await {
            Ok(Ok(resp)) => return Some(resp.data.offset),
            Ok(Err(e)) if e.forward_to_leader().is_some() => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Ok(Err(e)) => {
                eprintln!("write via {leader} failed: {e}");
                return None;
            }
            Err(_) => return None,
        }
    }
    None
}

/// Every live replica: wait until it applied `upto`, then check every acknowledged payload at
/// its offset and that no payload appears twice in the committed log.
async fn check(c: &Cluster, acked: &HashMap<u64, Vec<u8>>, upto: u64) {
    let mut first_frames: Option<(u64, Vec<bytes::Bytes>)> = None;
    for (id, r) in &c.nodes {
        r.raft_handle()
            .wait(Some(Duration::from_secs(20)))
            .applied_index_at_least(Some(upto), "caught up")
            .await
            .unwrap_or_else(|e| panic!("node {id} did not catch up: {e}"));
        let log = r.store.log();
        for (&off, want) in acked {
            let rec = log.read(off).unwrap();
            assert_eq!(&rec.payload[..], &want[..], "node {id} offset {off}");
        }
        // Replicas store the leader's frames verbatim: the same bytes (timestamps included)
        // at every offset of the committed prefix.
        let frames: Vec<bytes::Bytes> = log
            .iter(0)
            .take(upto as usize + 1)
            .map(|r| r.unwrap().frame)
            .collect();
        match &first_frames {
            None => first_frames = Some((*id, frames)),
            Some((other, theirs)) => {
                for (off, (a, b)) in theirs.iter().zip(&frames).enumerate() {
                    assert_eq!(
                        a, b,
                        "frame at {off} differs between nodes {other} and {id}"
                    );
                }
            }
        }
        let mut seen = HashMap::new();
        for rec in log.iter(0) {
            let rec = rec.unwrap();
            if rec.offset > upto {
                break;
            }
            let e = sitelog::raft::entry::from_record(rec.clone()).unwrap();
            if let EntryPayload::Normal(d) = e.payload {
                if let Some(prev) = seen.insert(d.bytes.clone(), rec.offset) {
                    panic!("node {id}: payload at {prev} again at {}", rec.offset);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_repeatedly_loses_no_acknowledged_write() {
    let mut c = Cluster::start().await;
    let mut acked: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut seq = 0u64;
    let mut last_commit: HashMap<u64, u64> = HashMap::new();
    for round in 0..4 {
        let leader = c.leader().await;
        for _ in 0..40 {
            seq += 1;
            let payload = format!("round {round} msg {seq}").into_bytes();
            if let Some(off) = write(&c, payload.clone()).await {
                assert!(
                    acked.insert(off, payload).is_none(),
                    "offset {off} acked twice"
                );
            }
        }
        // Commit ends never go back.
        for (id, r) in &c.nodes {
            let now = *r.committed_end.borrow();
            let before = last_commit.insert(*id, now).unwrap_or(0);
            assert!(
                now >= before,
                "node {id} commit went back {before} -> {now}"
            );
        }
        c.kill(leader).await;
        // Writes go on with the two survivors.
        let next = c.leader().await;
        assert_ne!(next, leader);
        for _ in 0..20 {
            seq += 1;
            let payload = format!("round {round} after-kill {seq}").into_bytes();
            if let Some(off) = write(&c, payload.clone()).await {
                assert!(acked.insert(off, payload).is_none());
            }
        }
        c.start_node(leader).await;
        last_commit.remove(&leader);
    }
    assert!(
        acked.len() >= 200,
        "only {} writes acknowledged",
        acked.len()
    );
    let upto = *acked.keys().max().unwrap();
    check(&c, &acked, upto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_old_leader_acknowledges_nothing() {
    let mut c = Cluster::start().await;
    let old = c.leader().await;
    let mut acked = HashMap::new();
    for i in 0..10u64 {
        let p = format!("before {i}").into_bytes();
        acked.insert(write(&c, p.clone()).await.unwrap(), p);
    }
    let others: Vec<u64> = c.nodes.keys().copied().filter(|&i| i != old).collect();
    c.router.isolate(old, others.clone());
    // The old leader cannot reach a majority: nothing it accepts is acknowledged.
    for i in 0..5 {
        let fut = c.nodes[&old]
            .raft_handle()
            .client_write(AppData::normal(format!("fenced {i}").into()));
        let got = timeout(Duration::from_millis(1500), fut).await;
        assert!(
            !matches!(got, Ok(Ok(_))),
            "isolated old leader acknowledged a write"
        );
    }
    // The majority side elects a new leader and keeps writing.
    let m = c.nodes[&others[0]]
        .raft_handle()
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.current_leader.is_some_and(|l| l != old),
            "new leader on the majority side",
        )
        .await
        .unwrap();
    let new = m.current_leader.unwrap();
    assert_ne!(new, old);
    for i in 0..10u64 {
        let p = format!("after {i}").into_bytes();
        acked.insert(write_among(&c, &others, p.clone()).await.unwrap(), p);
    }
    c.router.heal();
    let upto = *acked.keys().max().unwrap();
    check(&c, &acked, upto).await;
    // The old leader's unacknowledged entries were replaced: nothing "fenced" is committed.
    c.kill(new).await; // keep the check honest: read from the healed old leader too
    for r in c.nodes.values() {
        for rec in r.store.log().iter(0) {
            let rec = rec.unwrap();
            assert!(
                !rec.payload.starts_with(b"fenced"),
                "fenced write survived at {}",
                rec.offset
            );
        }
    }
}

/// Issue 17: a produce retried on the new leader, after the leader that committed it was
/// stopped, gets the original offsets and appends nothing; a retry that overlaps new seqs
/// appends only the new ones; every message is in the log once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_produce_on_the_new_leader_returns_the_original_offsets() {
    use bytes::Bytes;
    use sitelog::raft::replica::{ProducerSettings, Role};
    let mut c = Cluster::start().await;
    let old = c.leader().await;
    // A virtual producer clock: the leader stamps entries with it, not the wall clock.
    for r in c.nodes.values() {
        r.set_producer_clock(std::sync::Arc::new(|| 5_000));
    }
    let info = c.nodes[&old]
        .register_producer(ProducerSettings::default())
        .await
        .unwrap();
    let reg = c.nodes[&old].store.log().read(info.producer).unwrap();
    assert_eq!(reg.kind, sitelog::storage::EntryKind::Register);
    assert_eq!(
        reg.payload[1..9],
        5_000u64.to_le_bytes(),
        "ts_ms from the clock"
    );
    let msgs: Vec<Bytes> = (0..4).map(|i| Bytes::from(format!("msg {i}"))).collect();
    let first = c.nodes[&old]
        .produce(info.producer, 0, msgs[..3].to_vec())
        .await
        .unwrap();
    assert!(first.iter().all(|p| !p.duplicate), "{first:?}");
    let offsets: Vec<u64> = first.iter().map(|p| p.offset).collect();
    // The same request again on the same leader: answered from the table.
    let again = c.nodes[&old]
        .produce(info.producer, 0, msgs[..3].to_vec())
        .await
        .unwrap();
    assert_eq!(again.iter().map(|p| p.offset).collect::<Vec<_>>(), offsets);

    c.kill(old).await;
    let new = c.leader().await;
    let follower = *c.nodes.keys().find(|&&id| id != new).unwrap();
    let err = c.nodes[&follower]
        .produce(info.producer, 0, msgs[..3].to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, sitelog::Error::NotLeader { .. }), "{err:?}");
    // Once the new leader committed its own first entry, its log end only moves by appends.
    let ready = c.nodes[&new]
        .wait_for(10_000, |s| {
            s.role == Role::Leader && s.commit_end == s.log_end
        })
        .await
        .unwrap();
    let retried = c.nodes[&new]
        .produce(info.producer, 0, msgs[..3].to_vec())
        .await
        .unwrap();
    assert!(retried.iter().all(|p| p.duplicate), "{retried:?}");
    assert_eq!(
        retried.iter().map(|p| p.offset).collect::<Vec<_>>(),
        offsets
    );
    assert_eq!(
        c.nodes[&new].status().log_end,
        ready.log_end,
        "nothing appended"
    );

    // Seqs 1..=3: two retries and one new message.
    let mixed = c.nodes[&new]
        .produce(info.producer, 1, msgs[1..4].to_vec())
        .await
        .unwrap();
    assert_eq!(
        mixed
            .iter()
            .map(|p| (p.offset, p.duplicate))
            .collect::<Vec<_>>()[..2],
        [(offsets[1], true), (offsets[2], true)]
    );
    assert!(!mixed[2].duplicate);
    assert_eq!(c.nodes[&new].status().log_end, ready.log_end + 1);

    // Every message once in the new leader's log, as readers see it.
    let log = c.nodes[&new].store.log().clone();
    let mut seen: HashMap<Bytes, u64> = HashMap::new();
    for rec in log.iter(0) {
        let rec = rec.unwrap();
        if rec.offset >= log.end_offset() {
            break;
        }
        if let Some(m) = sitelog::raft::entry::message_view(rec).unwrap() {
            *seen.entry(m.payload).or_default() += 1;
        }
    }
    for m in &msgs {
        assert_eq!(seen.get(m), Some(&1), "{m:?}");
    }
    assert_eq!(c.nodes[&new].dedup_mispredicted(), 0);
}

/// Issue 17: right after an upgrade the active segment is still of format version 1 (an
/// earlier release created it), which cannot hold producer entries. Registering is refused,
/// typed, until the segment rolls; then producers work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_wait_for_an_active_segment_of_the_older_format_to_roll() {
    use sitelog::raft::replica::ProducerSettings;
    let mut c = Cluster::start().await;
    write(&c, b"before the upgrade".to_vec()).await.unwrap();
    for id in 1..=3 {
        c.kill(id).await;
    }
    // What an earlier release would have left: the same segment with a version-1 header.
    for id in 1..=3 {
        let log_dir = node_dir(c.dir.path(), id).join("log");
        for e in std::fs::read_dir(&log_dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "seg") {
                let mut b = std::fs::read(&path).unwrap();
                b[8..12].copy_from_slice(&1u32.to_le_bytes());
                let crc = sitelog::storage::checksum::checksum(&b[..60]);
                b[60..64].copy_from_slice(&crc.to_le_bytes());
                std::fs::write(&path, &b).unwrap();
            }
        }
    }
    for id in 1..=3 {
        c.start_node(id).await;
    }
    let leader = c.leader().await;
    let err = c.nodes[&leader]
        .register_producer(ProducerSettings::default())
        .await
        .unwrap_err();
    assert!(matches!(err, sitelog::Error::Unavailable { .. }), "{err:?}");
    // 1 MiB segments: twenty 60 KiB records roll the old one.
    for i in 0..20u8 {
        write(&c, vec![i; 60 << 10]).await.unwrap();
    }
    let leader = c.leader().await;
    let info = c.nodes[&leader]
        .register_producer(ProducerSettings::default())
        .await
        .unwrap();
    let got = c.nodes[&leader]
        .produce(info.producer, 0, vec![bytes::Bytes::from_static(b"after")])
        .await
        .unwrap();
    assert_eq!(
        c.nodes[&leader]
            .store
            .log()
            .read(got[0].offset)
            .unwrap()
            .kind,
        sitelog::storage::EntryKind::Produce
    );
}

/// Issue 17: pipelined requests may arrive out of order, so a seq ahead of the next one waits
/// (up to `PRODUCE_GAP_WAIT_MS`) for the missing one instead of being refused; a seq that
/// stays ahead is refused as out of order; past the producer bound the oldest idle producer is
/// evicted and gets `ProducerExpired`; a restarted replica rebuilds the same table from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_wait_for_a_gap_expire_past_the_bound_and_rebuild_on_restart() {
    use bytes::Bytes;
    use sitelog::raft::replica::{ProducerSettings, Role};
    let mut c = Cluster::start().await;
    let leader = c.leader().await;
    let one = ProducerSettings {
        max_producers: 1,
        ..ProducerSettings::default()
    };
    let p = c.nodes[&leader].register_producer(one).await.unwrap();

    let r = c.nodes[&leader].clone();
    let mut late = tokio::spawn(async move {
        r.produce(p.producer, 1, vec![Bytes::from_static(b"second")])
            .await
    });
    // Seq 1 is held back while seq 0 is missing: neither refused nor appended yet.
    assert!(timeout(Duration::from_millis(200), &mut late)
        .await
        .is_err());
    let first = c.nodes[&leader]
        .produce(p.producer, 0, vec![Bytes::from_static(b"first")])
        .await
        .unwrap();
    let second = late.await.unwrap().unwrap();
    assert!(second[0].offset > first[0].offset);
    let err = c.nodes[&leader]
        .produce(p.producer, 5, vec![Bytes::from_static(b"gap")])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            sitelog::Error::ProducerOutOfOrder {
                expected_seq: 2,
                got_seq: 5,
                ..
            }
        ),
        "{err:?}"
    );

    // A bound of one: the next registration evicts the first producer.
    let q = c.nodes[&leader].register_producer(one).await.unwrap();
    let err = c.nodes[&leader]
        .produce(p.producer, 2, vec![Bytes::from_static(b"late")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, sitelog::Error::ProducerExpired { producer } if producer == p.producer),
        "{err:?}"
    );
    c.nodes[&leader]
        .produce(q.producer, 0, vec![Bytes::from_static(b"q")])
        .await
        .unwrap();

    // A follower restarted (no snapshots here) replays its log into the same table.
    let follower = *c.nodes.keys().find(|&&id| id != leader).unwrap();
    c.kill(follower).await;
    c.start_node(follower).await;
    let end = c.nodes[&leader].status().commit_end;
    c.nodes[&follower]
        .wait_for(10_000, |s| s.commit_end >= end && s.role != Role::Shutdown)
        .await
        .unwrap();
    assert_eq!(
        c.nodes[&follower].producer_table_digest(),
        c.nodes[&leader].producer_table_digest()
    );
}
