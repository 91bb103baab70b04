//! Three `sitelog node` processes on loopback. A client writes continuously while the leader's
//! process is killed with SIGKILL again and again (and restarted on its data directory).
//! Afterwards every acknowledged record is present exactly once, byte-identical, at its offset
//! on every node; a node's commit end never goes back while its process lives; restarted nodes
//! catch up.

use bytes::Bytes;
use sitelog::node::client::{AppendOutcome, Client};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, spawn_node, Proc};

const CLUSTER: u64 = 0x4b11_1009;
const KILLS: usize = 5;

fn spawn(id: u64, root: &Path, addrs: &BTreeMap<u64, String>) -> Proc {
    spawn_node(id, root, addrs, CLUSTER)
}

async fn leader(addrs: &BTreeMap<u64, String>, live: &BTreeMap<u64, Proc>) -> u64 {
    common::leader_of(addrs, live, CLUSTER).await
}

async fn read_all(addr: &str, commit_end: u64) -> BTreeMap<u64, Bytes> {
    common::read_all(addr, CLUSTER, commit_end).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill9_loop_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().into();
    let addrs: BTreeMap<u64, String> = (1..=3).map(|i| (i, free_port())).collect();
    let mut live: BTreeMap<u64, Proc> = (1..=3).map(|i| (i, spawn(i, &root, &addrs))).collect();

    let acked: Arc<Mutex<HashMap<u64, Vec<u8>>>> = Arc::default();
    let unknown = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, unknown, stop) = (acked.clone(), unknown.clone(), stop.clone());
        let mut client = Client::new(addrs.values().cloned().collect(), CLUSTER);
        client.request_timeout_ms = 2000;
        client.leader_wait_ms = 20_000;
        tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let p = format!("message {seq} {}", "x".repeat((seq % 200) as usize)).into_bytes();
                match client.append(vec![Bytes::from(p.clone())]).await {
                    AppendOutcome::Ok(o) => {
                        let prev = acked.lock().unwrap().insert(o[0], p);
                        assert!(prev.is_none(), "offset {} acknowledged twice", o[0]);
                    }
                    AppendOutcome::Unknown(_) => *unknown.lock().unwrap() += 1,
                    AppendOutcome::Failed(e) => panic!("no leader took a write: {e}"),
                }
            }
        })
    };
    // Watches every node's commit end; a process restart starts a new generation.
    let generation: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let went_back: Arc<Mutex<Vec<String>>> = Arc::default();
    let monitor = {
        let (generation, went_back, stop, addrs) = (
            generation.clone(),
            went_back.clone(),
            stop.clone(),
            addrs.clone(),
        );
        tokio::spawn(async move {
            let mut last: HashMap<u64, (u64, u64)> = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                for (id, addr) in &addrs {
                    let gen_before = generation.lock().unwrap().get(id).copied().unwrap_or(0);
                    let mut c = Client::new(vec![], CLUSTER);
                    c.request_timeout_ms = 300;
                    let Ok(s) = c.status_of(addr).await else {
                        continue;
                    };
                    let gen = generation.lock().unwrap().get(id).copied().unwrap_or(0);
                    if gen != gen_before {
                        continue; // restarted while asking
                    }
                    if let Some(&(g, c)) = last.get(id) {
                        if g == gen && s.commit_end < c {
                            went_back
                                .lock()
                                .unwrap()
                                .push(format!("node {id}: {c} -> {}", s.commit_end));
                        }
                    }
                    last.insert(*id, (gen, s.commit_end));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let acked_count = || acked.lock().unwrap().len();
    let wait_acks = |more: usize| {
        let target = acked_count() + more;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while acked_count() < target {
                assert!(
                    Instant::now() < deadline,
                    "writes stalled at {}",
                    acked_count()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };

    for _ in 0..KILLS {
        wait_acks(30).await;
        let l = leader(&addrs, &live).await;
        *generation.lock().unwrap().entry(l).or_default() += 1;
        drop(live.remove(&l)); // SIGKILL, then reap
        wait_acks(20).await; // the survivors elected a leader and acknowledge again
        live.insert(l, spawn(l, &root, &addrs));
    }
    wait_acks(20).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    monitor.await.unwrap();
    assert!(
        went_back.lock().unwrap().is_empty(),
        "{:?}",
        went_back.lock().unwrap()
    );

    let acked = acked.lock().unwrap().clone();
    let max = *acked.keys().max().unwrap();
    for (id, addr) in &addrs {
        let deadline = Instant::now() + Duration::from_secs(30);
        let c = Client::new(vec![], CLUSTER);
        let commit_end = loop {
            let s = c.status_of(addr).await.unwrap();
            if s.commit_end > max {
                break s.commit_end;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} stuck at {}",
                s.commit_end
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let recs = read_all(addr, commit_end).await;
        for (off, want) in &acked {
            let got = recs
                .get(off)
                .unwrap_or_else(|| panic!("node {id} lacks offset {off}"));
            assert_eq!(&got[..], &want[..], "node {id} offset {off}");
        }
        let mut seen = HashMap::new();
        for (off, p) in &recs {
            if let Some(prev) = seen.insert(p.clone(), *off) {
                panic!("node {id}: the same message at {prev} and {off}");
            }
        }
    }
    let unknown = *unknown.lock().unwrap();
    eprintln!(
        "{} acknowledged, {unknown} unknown, {KILLS} leader kills",
        acked.len()
    );
    assert!(acked.len() >= 200);
}
