//! Grey failures on the real path: a node that is alive but cannot write.
//!
//! `full_disk_…`: a full disk under the leader, then under a follower.
//! Three `sitelog node` processes on loopback, each with its data directory on its own small
//! tmpfs (mounting needs root: without it the test prints a SKIPPED line and passes), 1 MiB
//! segments, and a client appending 4 × 2 KiB batches (at most 200 a second) throughout. Then:
//! 1. the leader's tmpfs is filled to the last byte. Within the next segment roll its append
//!    fails with ENOSPC: it must step aside (status `Shutdown`, no leadership), another node
//!    must lead, and acknowledgements must resume (the longest gap between two acknowledged
//!    writes is printed and bounded);
//! 2. the space is freed: the node must heal without a restart (same process) and catch up;
//! 3. the same with a follower's disk: acknowledgements go on, the follower heals;
//! 4. every acknowledged record reads back byte-identical from all three nodes, and every
//!    node process is still the one started at the beginning.
//!
//! `descriptor_exhaustion_…`: the leader's soft `RLIMIT_NOFILE` is lowered (prlimit(2)) to the
//! descriptors it holds, so its next segment roll fails with EMFILE: it steps aside, another
//! node leads; once the limit is restored it heals in place, and nothing acknowledged is lost.
//!
//! The two tests share the machine's two cores, so they run one after the other.

use bytes::Bytes;
use sitelog::node::client::{AppendOutcome, Client};
use sitelog::node::{NodeStatus, Role};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, is_root, read_all, spawn_node_logged, Proc, Tmpfs};

const CLUSTER: u64 = 0x6772_6579;
const TMPFS_SIZE: &str = "128m";
const RECORD_BYTES: usize = 2048;
const BATCH: usize = 4;
/// The writer sends at most one batch per this interval, so that the test's data (no
/// retention on a replicated log) stays well inside the tmpfs while a full disk is still
/// reached within a segment or two.
const PACE: Duration = Duration::from_millis(5);
/// Bounds, generous for a loaded 2-core CI machine; the measured figures are printed. With
/// LAN timers a failover takes one election timeout plus a vote round (~0.6 s here).
const MAX_ACK_GAP: Duration = Duration::from_secs(4);
const MAX_HEAL: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(30);

/// The payload of the `k`th record the writer sends: its number, then a pattern of it.
fn payload(k: u64) -> Bytes {
    let mut p = Vec::with_capacity(RECORD_BYTES);
    p.extend_from_slice(&k.to_le_bytes());
    p.resize(RECORD_BYTES, (k % 251) as u8);
    p.into()
}

#[derive(Default)]
struct Ledger {
    /// When each batch was acknowledged, and its (offset, payload) pairs.
    acked: Vec<(Instant, Vec<(u64, Bytes)>)>,
    unknown: u64,
    failed: u64,
}

fn ledger(l: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

async fn write_loop(addrs: Vec<String>, stop: Arc<AtomicBool>, ledger_: Arc<Mutex<Ledger>>) {
    let mut c = Client::new(addrs, CLUSTER);
    c.request_timeout_ms = 2000;
    let mut k = 0u64;
    let mut pace = tokio::time::interval(PACE);
    while !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        let batch: Vec<Bytes> = (k..k + BATCH as u64).map(payload).collect();
        k += BATCH as u64;
        let out = c.append(batch.clone()).await;
        let mut l = ledger(&ledger_);
        match out {
            AppendOutcome::Ok(offs) => {
                l.acked
                    .push((Instant::now(), offs.into_iter().zip(batch).collect()));
            }
            AppendOutcome::Unknown(_) => l.unknown += 1,
            AppendOutcome::Failed(_) => l.failed += 1,
        }
    }
}

struct Cluster {
    addrs: BTreeMap<u64, String>,
    procs: BTreeMap<u64, Proc>,
    pids: BTreeMap<u64, u32>,
    /// The tmpfs each node's data sits on (none in the descriptor test).
    disks: BTreeMap<u64, Tmpfs>,
    logs: PathBuf,
}

type Writer = (
    Cluster,
    Arc<Mutex<Ledger>>,
    Arc<AtomicBool>,
    tokio::task::JoinHandle<()>,
);

/// Starts nodes 1..=3 with their data under `roots` and the writer; returns once it has
/// acknowledged writes.
async fn start(roots: BTreeMap<u64, PathBuf>, disks: BTreeMap<u64, Tmpfs>, logs: &Path) -> Writer {
    let addrs: BTreeMap<u64, String> = (1..=3).map(|id| (id, free_port())).collect();
    let mut procs = BTreeMap::new();
    for (id, root) in &roots {
        let log = logs.join(format!("n{id}.log"));
        let extra = ["--segment-bytes", "1048576"];
        let p = spawn_node_logged(*id, root, &addrs, CLUSTER, &extra, true, &log);
        procs.insert(*id, p);
    }
    let pids = procs.iter().map(|(id, p)| (*id, p.child.id())).collect();
    let c = Cluster {
        addrs,
        procs,
        pids,
        disks,
        logs: logs.into(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let l = Arc::new(Mutex::new(Ledger::default()));
    let writer = tokio::spawn(write_loop(
        c.addrs.values().cloned().collect(),
        stop.clone(),
        l.clone(),
    ));
    wait_acks_after(&l, Instant::now() - WAIT, 20).await;
    (c, l, stop, writer)
}

impl Cluster {
    async fn status(&self, id: u64) -> Option<NodeStatus> {
        let mut c = Client::new(vec![], CLUSTER);
        c.request_timeout_ms = 500;
        c.status_of(&self.addrs[&id]).await.ok()
    }

    /// Waits until `f` holds for node `id`'s status; panics with the node's log after `WAIT`.
    async fn wait_status(&self, id: u64, what: &str, f: impl Fn(&NodeStatus) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.status(id).await {
                if f(&s) {
                    return;
                }
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("node {id}: {what} did not happen within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn leader(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            for id in self.addrs.keys() {
                if self
                    .status(*id)
                    .await
                    .is_some_and(|s| s.role == Role::Leader)
                {
                    return *id;
                }
            }
            assert!(Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn dump_logs(&self) {
        for id in self.addrs.keys() {
            let text = std::fs::read_to_string(self.logs.join(format!("n{id}.log")));
            let text = text.unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            eprintln!("--- node {id} log (last lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }

    /// Every acknowledged record reads back byte-identical from every node, and every node is
    /// still the process started first; returns the acknowledged records.
    async fn check_every_ack(&mut self, l: &Mutex<Ledger>) -> Vec<(u64, Bytes)> {
        self.assert_same_processes();
        let acked: Vec<(u64, Bytes)> = ledger(l)
            .acked
            .iter()
            .flat_map(|a| a.1.iter().cloned())
            .collect();
        let end = acked.iter().map(|a| a.0 + 1).max().unwrap();
        for id in self.addrs.keys() {
            self.wait_status(*id, "catching up", |s| s.commit_end >= end)
                .await;
            let got = read_all(&self.addrs[id], CLUSTER, end).await;
            for (off, p) in &acked {
                assert_eq!(
                    got.get(off),
                    Some(p),
                    "node {id}: acknowledged offset {off}"
                );
            }
        }
        acked
    }

    /// Every node is still the process started first (it healed in place, never restarted).
    fn assert_same_processes(&mut self) {
        for (id, p) in self.procs.iter_mut() {
            assert!(
                p.child.try_wait().unwrap().is_none(),
                "node {id} exited; it should have healed in place"
            );
            assert_eq!(p.child.id(), self.pids[id]);
        }
    }
}

/// One test at a time: each runs three node processes and measures pauses.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Fills the file system at `dir` to the last byte with a file `filler`.
fn fill(dir: &Path) {
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    for chunk in [1 << 20, 4096, 512, 1] {
        let buf = vec![0u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    // tmpfs allocates on write; the file now holds every free page.
}

fn free(dir: &Path) {
    std::fs::remove_file(dir.join("filler")).unwrap();
}

/// The longest time between two acknowledgements after `since`, and the number after it.
fn ack_gap(l: &Ledger, since: Instant) -> (Duration, usize) {
    let times: Vec<Instant> = l
        .acked
        .iter()
        .map(|a| a.0)
        .filter(|t| *t >= since)
        .collect();
    let gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    (gap, times.len())
}

async fn wait_acks_after(l: &Mutex<Ledger>, t: Instant, n: usize) {
    let deadline = Instant::now() + WAIT;
    while ledger(l).acked.iter().filter(|a| a.0 > t).count() < n {
        assert!(Instant::now() < deadline, "acknowledgements did not resume");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fills node `id`'s disk, waits until it stepped aside and acknowledgements went on, frees
/// the space and waits until it healed; returns (ack gap, heal time).
async fn full_disk_round(
    c: &Cluster,
    id: u64,
    l: &Mutex<Ledger>,
    was_leader: bool,
) -> (Duration, Duration) {
    let filled_at = Instant::now();
    fill(&c.disks[&id].path);
    c.wait_status(id, "stepping aside on a full disk", |s| {
        s.role == Role::Shutdown
    })
    .await;
    let stepped_aside = Instant::now();
    if was_leader {
        let new = c.leader().await;
        assert_ne!(new, id, "a node with a full disk must not lead");
    }
    wait_acks_after(l, stepped_aside, 20).await;
    // Still full: it must not come back (no campaign, no leadership) before space is freed.
    let s = c
        .status(id)
        .await
        .expect("a stepped-aside node still answers status");
    assert_eq!(s.role, Role::Shutdown, "node {id} rejoined on a full disk");
    let (gap, _) = ack_gap(&ledger(l), filled_at);
    let freed_at = Instant::now();
    free(&c.disks[&id].path);
    let leader = c.leader().await;
    let target = c.status(leader).await.map_or(0, |s| s.commit_end);
    c.wait_status(id, "healing after space was freed", |s| {
        s.role == Role::Follower && s.commit_end >= target
    })
    .await;
    (gap, freed_at.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_on_leader_and_follower_steps_aside_and_heals_in_place() {
    let _serial = SERIAL.lock().await;
    if !is_root() {
        common::skip("grey_failures full disk needs root to mount small tmpfs file systems");
        return;
    }
    let mut disks = BTreeMap::new();
    for id in 1..=3u64 {
        match Tmpfs::mount(TMPFS_SIZE) {
            Ok(t) => disks.insert(id, t),
            Err(e) => {
                common::skip(&format!(
                    "grey_failures full disk cannot mount a tmpfs: {e}"
                ));
                return;
            }
        };
    }
    let logs = tempfile::tempdir().unwrap();
    let roots = disks.iter().map(|(id, d)| (*id, d.path.clone())).collect();
    let (mut c, l, stop, writer) = start(roots, disks, logs.path()).await;
    let leader = c.leader().await;
    let (gap, heal) = full_disk_round(&c, leader, &l, true).await;
    println!(
        "grey: full disk on leader {leader}: longest ack gap {} ms; healed {} ms after space \
         was freed",
        gap.as_millis(),
        heal.as_millis()
    );
    assert!(
        gap < MAX_ACK_GAP,
        "acks stalled {gap:?} after the leader's disk filled"
    );
    assert!(heal < MAX_HEAL, "healing took {heal:?}");

    let leader = c.leader().await;
    let follower = *c.addrs.keys().find(|id| **id != leader).unwrap();
    let (gap, heal) = full_disk_round(&c, follower, &l, false).await;
    println!(
        "grey: full disk on follower {follower}: longest ack gap {} ms; healed {} ms after \
         space was freed",
        gap.as_millis(),
        heal.as_millis()
    );
    assert!(
        gap < MAX_ACK_GAP,
        "acks stalled {gap:?} with a follower's disk full"
    );
    assert!(heal < MAX_HEAL, "healing took {heal:?}");

    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let acked = c.check_every_ack(&l).await;
    let l = ledger(&l);
    println!(
        "grey: {} records acknowledged, all read back from 3 nodes; {} appends unknown, {} \
         failed",
        acked.len(),
        l.unknown,
        l.failed
    );
}

/// Sets the soft `RLIMIT_NOFILE` of process `pid` (the hard limit stays).
fn set_soft_nofile(pid: u32, soft: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit with a null new limit only writes the current one into `old`.
    let r = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: old.rlim_max,
    };
    // SAFETY: `new` is a valid rlimit; the old value is not asked for.
    let r = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
}

fn open_descriptors(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_exhaustion_on_the_leader_steps_aside_and_heals_in_place() {
    let _serial = SERIAL.lock().await;
    let data = tempfile::tempdir().unwrap();
    let roots = (1..=3).map(|id| (id, data.path().to_path_buf())).collect();
    let (mut c, l, stop, writer) = start(roots, BTreeMap::new(), data.path()).await;

    let leader = c.leader().await;
    let pid = c.pids[&leader];
    let since = Instant::now();
    // No descriptor left: the next file the node opens (a segment at its next roll) fails.
    set_soft_nofile(pid, open_descriptors(pid));
    let deadline = Instant::now() + WAIT;
    let new = loop {
        let new = c.leader().await;
        if new != leader {
            break new;
        }
        assert!(
            Instant::now() < deadline,
            "node {leader} kept leading without descriptors"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    wait_acks_after(&l, Instant::now(), 20).await;
    let (gap, _) = ack_gap(&ledger(&l), since);
    let restored = Instant::now();
    set_soft_nofile(pid, 1024);
    let target = c.status(new).await.map_or(0, |s| s.commit_end);
    c.wait_status(leader, "healing after descriptors were freed", |s| {
        s.role == Role::Follower && s.commit_end >= target
    })
    .await;
    let heal = restored.elapsed();
    let log = std::fs::read_to_string(data.path().join(format!("n{leader}.log"))).unwrap();
    assert!(
        log.contains("fault=descriptors"),
        "node {leader} should have stepped aside on EMFILE:\n{log}"
    );
    println!(
        "grey: descriptors exhausted on leader {leader}: longest ack gap {} ms; healed {} ms \
         after the limit was restored",
        gap.as_millis(),
        heal.as_millis()
    );
    assert!(gap < MAX_ACK_GAP, "acks stalled {gap:?}");
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    c.check_every_ack(&l).await;
}
