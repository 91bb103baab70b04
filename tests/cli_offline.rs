//! `sitelog verify` and `sitelog dump` on real directories: exit 0 on a clean log, 2 on a copy
//! with one flipped bit (naming the damaged file); a dump prints every record as a JSON line
//! and never prints a record whose checksum fails.

use sitelog::{Log, LogOptions};
use std::path::Path;
use std::process::{Command, Output};

fn sitelog(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(args)
        .arg(dir)
        .output()
        .unwrap()
}

fn make_log(dir: &Path) -> Vec<Vec<u8>> {
    let opts = LogOptions {
        segment_size_bytes: 64 << 10,
        max_record_bytes: 4 << 10,
        ..LogOptions::default()
    };
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
