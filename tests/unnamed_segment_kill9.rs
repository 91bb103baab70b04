//! Real-process crash inside a pointer-swap roll's window (`src/storage/namer.rs`): a roll
//! that takes a prepared file acknowledges records in it before the file has its segment
//! name; the rename and the directory fsync follow on the background thread. A kill -9 in
//! between leaves acknowledged records in a file under its prepared name, which the next
//! open must find by its header and name (the background thread removes leftover prepared
//! files: without that, the records would be deleted).
//!
//! The child is this test binary re-invoked on the ignored test [`unnamed_child`], which
//! does nothing unless `SITELOG_UNNAMED_CHILD_DIR` is set. It opens a log on the real POSIX
//! backend (with `O_DIRECT` or through the page cache, `SITELOG_UNNAMED_CHILD_DIRECT`),
//! waits until the next segment file is prepared, holds the background naming back
//! (`Log::pause_naming`, a test hook), appends durably across the roll, prints
//! `ACKED <end>` and blocks on its standard input until the parent kills it.

use std::time::Duration;

use sitelog::{IoBackend, Log, LogOptions, SyncMode};

mod common;

const ENV_DIR: &str = "SITELOG_UNNAMED_CHILD_DIR";
const ENV_DIRECT: &str = "SITELOG_UNNAMED_CHILD_DIRECT";
const SEGMENT_BYTES: u64 = 64 << 10;
const RECORD_BYTES: usize = 3000;
const WAIT: Duration = Duration::from_secs(60);

fn options(direct_io: bool) -> LogOptions {
    let mut opts = LogOptions::default();
    opts.io = IoBackend::Posix;
    opts.segment_size_bytes = SEGMENT_BYTES;
    opts.max_record_bytes = 8 << 10;
    opts.sync = SyncMode::Always;
    opts.preallocate = true;
    opts.direct_io = direct_io;
    opts
}

fn payload(n: u64) -> Vec<u8> {
    (0..RECORD_BYTES)
        .map(|i| (n as usize * 5 + i * 11) as u8)
        .collect()
}

/// The child process: a no-op unless `SITELOG_UNNAMED_CHILD_DIR` is set.
#[test]
#[ignore = "child process of the unnamed-segment kill -9 test; a no-op unless SITELOG_UNNAMED_CHILD_DIR is set"]
fn unnamed_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let direct = std::env::var(ENV_DIRECT).is_ok_and(|v| v == "1");
    let log = Log::open(&dir, options(direct)).expect("open");
    // The first segment takes the first prepared file; this waits for the next one too.
    assert!(log.wait_prepared(WAIT), "no prepared file");
    let _pause = log.pause_naming();
    while log.segment_count() < 2 {
        log.append(&payload(log.end_offset())).expect("append");
    }
    for _ in 0..3 {
        log.append(&payload(log.end_offset())).expect("append");
    }
    common::say_and_wait_for_kill(&format!("ACKED {}", log.end_offset()));
}

/// Runs the child and kills it; returns the acknowledged end.
fn run_child(dir: &std::path::Path, direct: bool) -> u64 {
    let dir = dir.to_str().unwrap();
    let envs = [(ENV_DIR, dir), (ENV_DIRECT, if direct { "1" } else { "0" })];
    let acked = common::kill_child_after("unnamed_child", &envs, "ACKED ");
    let acked = acked.expect("the child acknowledged its appends");
    acked.trim().parse().unwrap()
}

#[test]
fn a_kill_before_a_pointer_swap_rolls_rename_loses_nothing() {
    for direct in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let acked = run_child(dir.path(), direct);
        // Only the first segment has a segment name; the second's file is a prepared one.
        let segments = |dir: &std::path::Path| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".seg"))
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            segments(dir.path()),
            [format!("{:020}.seg", 0)],
            "direct {direct}"
        );

        let log = Log::open(dir.path(), options(direct)).unwrap();
        let report = log.recovery_report();
        assert_eq!(report.segments_named, 1, "direct {direct}");
        assert_eq!(report.torn_bytes_truncated, 0);
        assert_eq!(log.end_offset(), acked);
        assert_eq!(segments(dir.path()).len(), 2, "named at open");
        for (i, r) in log.iter(0).enumerate() {
            let r = r.unwrap();
            assert_eq!(r.offset, i as u64);
            assert_eq!(r.payload[..], payload(r.offset)[..]);
        }
        log.verify().unwrap();
        log.append(&payload(acked)).unwrap();
        log.close().unwrap();
        let log = Log::open(dir.path(), options(direct)).unwrap();
        assert_eq!(log.recovery_report().segments_named, 0);
        assert_eq!(log.end_offset(), acked + 1);
        log.verify().unwrap();
    }
}
