//! `sitelog verify` and `sitelog dump` on real directories: exit 0 on a clean log, 2 on a copy
//! with one flipped bit (naming the damaged file); a dump prints every record as a JSON line
//! and never prints a record whose checksum fails. `verify` never modifies the directory
//! (a torn tail is reported, not cut) and checks a node's `raft_meta`, `snapshot` and
//! `app_state` files.

use sitelog::io::PosixIo;
use sitelog::raft::meta::MetaFile;
use sitelog::raft::snapshot::{self, AppState};
use sitelog::{Log, LogOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sitelog(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(args)
        .arg(dir)
        .output()
        .unwrap()
}

fn make_log(dir: &Path) -> Vec<Vec<u8>> {
    let mut opts = LogOptions::default();
    opts.segment_size_bytes = 64 << 10;
    opts.max_record_bytes = 4 << 10;
    let log = Log::open(dir, opts).unwrap();
    let payloads: Vec<Vec<u8>> = (0..500)
        .map(|i| format!("message {i} {}", "z".repeat(i % 300)).into_bytes())
        .collect();
    for p in &payloads {
        log.append(p).unwrap();
    }
    log.close().unwrap();
    payloads
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn verify_and_dump_clean_and_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    let payloads = make_log(&clean);

    let out = sitelog(&["verify"], &clean);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("500 records"));

    let out = sitelog(&["dump", "--payload"], &clean);
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 500);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["offset"], i as u64);
        assert_eq!(l["payload"].as_str().unwrap().as_bytes(), &payloads[i][..]);
    }
    let out = sitelog(&["dump", "--from", "10", "--to", "20"], &clean);
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 10);

    // One flipped bit in the payload area of the first (sealed) segment.
    let damaged = tmp.path().join("damaged");
    copy_dir(&clean, &damaged);
    let first = damaged.join(format!("{:020}.seg", 0));
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[4096 + 48 + 3] ^= 0x10;
    std::fs::write(&first, bytes).unwrap();

    let out = sitelog(&["verify"], &damaged);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("DAMAGE") && stderr.contains("00000000000000000000.seg"),
        "{stderr}"
    );

    let out = sitelog(&["dump"], &damaged);
    assert_eq!(out.status.code(), Some(2));
    let printed: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        printed.iter().all(|l| l["offset"] != 0),
        "the damaged record 0 was printed"
    );

    // Not a log at all, and a missing directory: exit 1 with a message.
    let out = sitelog(&["verify"], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a sitelog"));
}

/// Every file of a directory (recursively) with its contents, to compare before and after.
fn snapshot_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(snapshot_files(&p));
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    out
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x08;
    std::fs::write(path, bytes).unwrap();
}

/// Issue 12, "`verify` never writes": a torn tail (100 junk bytes after the last segment, as
/// in the report) is reported, not cut; every file stays byte-identical and no LOCK file is
/// created. A directory held by a running log is refused (exit 1).
#[test]
fn verify_never_writes_and_reports_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    make_log(&clean);
    let torn = tmp.path().join("torn");
    copy_dir(&clean, &torn);
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&torn)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let last = segs.last().unwrap().clone();
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(&[0xa5; 100]);
    std::fs::write(&last, bytes).unwrap();
    // A leftover temporary file, too (the next open removes it).
    std::fs::write(torn.join("00000000000000999999.seg.tmp"), b"x").unwrap();

    let before = snapshot_files(&torn);
    let out = sitelog(&["verify"], &torn);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("500 records"), "{stdout}");
    let name = last.file_name().unwrap().to_str().unwrap();
    assert!(
        stdout.contains("note: torn, never-acknowledged tail") && stdout.contains(name),
        "{stdout}"
    );
    assert!(stdout.contains("leftover file"), "{stdout}");
    assert_eq!(
        snapshot_files(&torn),
        before,
        "verify modified the directory"
    );
    assert!(!torn.join("LOCK").exists(), "verify created a LOCK file");
    // `dump` is read-only too: every record, not the tail, nothing changed.
    let out = sitelog(&["dump"], &torn);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 500);
    assert!(String::from_utf8_lossy(&out.stderr).contains("note: torn"));
    assert_eq!(snapshot_files(&torn), before, "dump modified the directory");
    // `repair` is the explicit fixer: it cuts what verify reported.
    let out = sitelog(&["repair"], &torn);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("cut ") && stdout.contains("log: offsets 0..500"),
        "{stdout}"
    );
    let out = sitelog(&["verify"], &torn);
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("note:"));

    // Held by a running log: refused, exit 1.
    let log = Log::open(&clean, LogOptions::default()).unwrap();
    let out = sitelog(&["verify"], &clean);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop the node"));
    drop(log);
    assert_eq!(sitelog(&["verify"], &clean).status.code(), Some(0));
}

/// A node's data directory: `raft_meta`, `snapshot` and `app_state` are checked with their own
/// checksums; damage to any is exit 2 naming the file.
#[test]
fn verify_checks_a_nodes_metadata_snapshot_and_app_state() {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    make_log(&node.join("log"));
    let io = PosixIo::new_ref();
    drop(MetaFile::open(&io, &node, 7).unwrap());
    let app = AppState::compress(42, &[7u8; 5000]).unwrap();
    snapshot::save_app_state(&io, &node, &app).unwrap();

    let out = sitelog(&["verify"], &node);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("raft_meta") && stdout.contains("app_state"),
        "{stdout}"
    );

    let damaged = |name: &str| {
        let out = sitelog(&["verify"], &node);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains("DAMAGE") && stderr.contains(name),
            "{stderr}"
        );
    };
    let app_path = node.join("app_state");
    let good_app = std::fs::read(&app_path).unwrap();
    flip(&app_path, 20);
    damaged("app_state");
    std::fs::write(&app_path, &good_app).unwrap();

    // Both copies of the Raft metadata (slots at 0 and 4096).
    let meta_path = node.join("raft_meta");
    let good_meta = std::fs::read(&meta_path).unwrap();
    flip(&meta_path, 30);
    assert_eq!(
        sitelog(&["verify"], &node).status.code(),
        Some(0),
        "one copy is enough"
    );
    flip(&meta_path, 4096 + 30);
    damaged("raft_meta");
    std::fs::write(&meta_path, &good_meta).unwrap();

    std::fs::write(node.join("snapshot"), [1u8; 64]).unwrap();
    damaged("snapshot");
}
