//! Issue 12, "clean stop": `Node::shutdown` (and with it SIGTERM of `sitelog node`, exit 0)
//! persists the durable watermark, so no acknowledged record lies above it. Damage to the last
//! acknowledged record is then refused (`sitelog verify` exit 2, the log does not open, the
//! node does not start) instead of being cut silently as a torn, never-acknowledged tail.
//!
//! The in-process test is the sharp one: its log writes the watermark in the background only
//! once an hour, so only the stop can have written it. The process test cannot set that
//! interval (200 ms by default), so it checks the whole path end to end, not the race.

use bytes::Bytes;
use sitelog::node::{Node, NodeConfig, Peer, Placement};
use sitelog::{Error, Log, LogOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{free_port, spawn_node_with};

const CLUSTER: u64 = 0xc1ea;

fn sitelog(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(args)
        .output()
        .unwrap()
}

/// The last segment file of a log directory.
fn last_segment(log_dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(log_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

/// Flips the last non-zero byte of `path` (inside its last frame: what follows is zeros).
fn damage_last_frame(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[at] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn sigterm_persists_the_watermark_so_damage_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: BTreeMap<u64, String> = [(1, free_port())].into();
    let extra = ["--allow-unsafe-placement", "--segment-bytes", "1048576"];
    let mut node = spawn_node_with(1, dir.path(), &addrs, CLUSTER, &extra, true);
    let out = sitelog(&[
        "append",
        "--insecure",
        "--count",
        "20",
        "--size",
        "100",
        "--node",
        &addrs[&1],
        "--cluster-id",
        &CLUSTER.to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGTERM: a clean stop, exit 0.
    let pid = node.child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child; no memory is passed.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = node.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "SIGTERM exit: {status:?}");

    let data = dir.path().join("n1");
    let clean = sitelog(&["verify", data.to_str().unwrap()]);
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );

    let stdout = String::from_utf8_lossy(&clean.stdout);
    assert!(stdout.contains("raft_meta"), "{stdout}");

    damage_last_frame(&last_segment(&data.join("log")));
    let out = sitelog(&["verify", data.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "verify: {stderr}");
    assert!(stderr.contains("DAMAGE"), "{stderr}");

    // The node refuses to start on it (no silent cut).
    let restart = Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["node", "--id", "1", "--site", "site-1", "--data"])
        .arg(&data)
        .args([
            "--listen",
            &free_port(),
            "--cluster-id",
            &CLUSTER.to_string(),
        ])
        .args(["--exit-after-secs", "10", "--insecure"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&restart.stdout);
    assert!(!restart.status.success(), "started on damage: {stdout}");
    assert!(!stdout.contains("LISTENING"), "{stdout}");
    let stderr = String::from_utf8_lossy(&restart.stderr);
    assert!(
        stderr.contains(".seg"),
        "refused for another reason: {stderr}"
    );
}

/// Opens the log once the stopped node's last handles are gone (they drop as its tasks end).
fn open_when_released(dir: &Path, opts: LogOptions) -> sitelog::Result<Log> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Log::open(dir, opts.clone()) {
            Err(Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_shutdown_persists_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let data = dir.path().join("n1");
    let mut cfg = NodeConfig::new(1, "site-1", data.clone(), "", CLUSTER);
    cfg.initial_members = [(
        1,
        Peer {
            site: "site-1".into(),
            addr,
        },
    )]
    .into();
    cfg.placement = Placement::Warn;
    cfg.log.segment_size_bytes = 1 << 20;
    cfg.log.max_record_bytes = 64 << 10;
    cfg.log.preallocate = false;
    // Only the stop can persist the watermark within this test.
    cfg.log.superblock_interval_ms = 3_600_000;
    let node = Node::start_on(cfg, listener).await.unwrap();
    node.wait_for(10_000, |s| s.leader == Some(1))
        .await
        .unwrap();
    let payloads: Vec<Bytes> = (0..20u8).map(|i| Bytes::from(vec![i + 1; 100])).collect();
    let offsets = node.append(payloads).await.unwrap();
    let last = *offsets.last().unwrap();
    node.shutdown().await.unwrap();

    let log_dir = data.join("log");
    damage_last_frame(&last_segment(&log_dir));
    let mut opts = LogOptions::default();
    opts.log_id = Some(CLUSTER);
    opts.durable_hints = false;
    opts.preallocate = false;
    match open_when_released(&log_dir, opts) {
        Err(Error::Corruption { record_offset, .. }) => assert_eq!(record_offset, Some(last)),
        Ok(log) => panic!(
            "the damaged, acknowledged record {last} was cut: the log ends at {} ({} bytes cut)",
            log.end_offset(),
            log.recovery_report().torn_bytes_truncated
        ),
        Err(e) => panic!("unexpected: {e}"),
    }
    // The log is released now (a failed open holds nothing).
    let out = sitelog(&["verify", data.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "verify: {stderr}");
}
