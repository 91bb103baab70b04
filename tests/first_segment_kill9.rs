//! Real-process crashes around the swap of a new log's empty first segment for the first
//! prepared file (`Log::wait_prepared`, `src/storage/writer.rs`: `adopt_prepared`). The swap
//! is a roll to the same base: the prepared file's header is made durable, then the file is
//! renamed over the empty segment and the directory fsynced. Whatever moment a kill -9 comes
//! at, the next open finds a valid first segment (the empty one or the prepared one), every
//! acknowledged record, and a log that takes appends and verifies clean.
//!
//! The child is this test binary re-invoked on the ignored test [`first_segment_child`],
//! which does nothing unless `SITELOG_FIRST_SEGMENT_CHILD_DIR` is set. It opens a new log on
//! the real POSIX backend, prints `OPEN`, waits for the first prepared file (the swap), then
//! appends durably forever, printing `ACKED <end>` after each append.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sitelog::{IoBackend, Log, LogOptions, SyncMode};

mod common;

const ENV_DIR: &str = "SITELOG_FIRST_SEGMENT_CHILD_DIR";
const SEGMENT_BYTES: u64 = 1 << 20;
const RECORD_BYTES: usize = 1000;
/// When the parent kills the child: so many milliseconds after it said `OPEN` (inside the
/// first preparation, 1 MiB of zeros, or the swap's barrier, or the appends after it,
/// depending on the machine), or right after it acknowledged so many appends (after the
/// swap, whatever the machine).
#[derive(Debug, Clone, Copy)]
enum Kill {
    AfterOpenMs(u64),
    AfterAcks(u64),
}
const KILLS: [Kill; 9] = [
    Kill::AfterOpenMs(0),
    Kill::AfterOpenMs(2),
    Kill::AfterOpenMs(5),
    Kill::AfterOpenMs(10),
    Kill::AfterOpenMs(20),
    Kill::AfterOpenMs(40),
    Kill::AfterOpenMs(80),
    Kill::AfterAcks(1),
    Kill::AfterAcks(50),
];

fn options() -> LogOptions {
    let mut opts = LogOptions::default();
    opts.io = IoBackend::Posix;
    opts.segment_size_bytes = SEGMENT_BYTES;
    opts.max_record_bytes = 4 << 10;
    opts.sync = SyncMode::Always;
    opts.preallocate = true;
    opts
}

fn payload(n: u64) -> Vec<u8> {
    (0..RECORD_BYTES)
        .map(|i| (n as usize * 11 + i * 7) as u8)
        .collect()
}

/// The child process: a no-op unless `SITELOG_FIRST_SEGMENT_CHILD_DIR` is set.
#[test]
#[ignore = "child process of the first-segment kill -9 test; a no-op unless its env is set"]
fn first_segment_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let log = Log::open(&dir, options()).expect("open");
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nOPEN").expect("stdout");
    out.flush().expect("stdout");
    assert!(log.wait_prepared(Duration::from_secs(60)), "prepared");
    loop {
        log.append(&payload(log.end_offset())).expect("append");
        writeln!(out, "ACKED {}", log.end_offset()).expect("stdout");
        out.flush().expect("stdout");
    }
}

/// Runs the child on `dir`, kills it as `kill` says, and returns the highest end offset it
/// acknowledged (0 if none).
fn run_and_kill(dir: &Path, kill: Kill) -> u64 {
    let mut child = Command::new(common::this_test_binary())
        .args(["--ignored", "--exact", "first_segment_child", "--nocapture"])
        .env(ENV_DIR, dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().trim() == "OPEN" {
            break;
        }
    }
    let acked = |line: &str| -> Option<u64> { line.strip_prefix("ACKED ")?.trim().parse().ok() };
    let mut highest = 0;
    match kill {
        Kill::AfterOpenMs(ms) => std::thread::sleep(Duration::from_millis(ms)),
        Kill::AfterAcks(n) => {
            for line in lines.by_ref() {
                highest = highest.max(acked(&line.unwrap()).unwrap_or(0));
                if highest >= n {
                    break;
                }
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Whatever the child printed before it died was acknowledged before it was printed.
    lines
        .map_while(Result::ok)
        .filter_map(|l| acked(&l))
        .fold(highest, u64::max)
}

/// Length of the segment file with the lowest base (names are zero-padded bases).
fn first_segment_len(dir: &Path) -> u64 {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    std::fs::metadata(&segments[0]).unwrap().len()
}

#[test]
fn a_kill_around_the_first_segment_swap_loses_nothing() {
    let mut swapped = 0;
    for kill in KILLS {
        let dir = tempfile::tempdir().unwrap();
        let acked = run_and_kill(dir.path(), kill);
        let log = Log::open(dir.path(), options()).unwrap();
        let case = format!("killed {kill:?}, {acked} acknowledged");
        assert!(log.end_offset() >= acked, "{case}");
        for r in log.iter(0) {
            let r = r.unwrap();
            assert_eq!(r.payload[..], payload(r.offset)[..], "{case}");
        }
        let first_len = first_segment_len(dir.path());
        swapped += u64::from(first_len == SEGMENT_BYTES);
        if acked > 0 {
            // The child's first append came after `wait_prepared`, which swapped.
            assert_eq!(first_len, SEGMENT_BYTES, "{case}: preallocated");
        }
        let end = log.end_offset();
        assert_eq!(log.append(&payload(end)).unwrap(), end, "{case}");
        log.verify().unwrap();
        log.close().unwrap();
    }
    eprintln!(
        "first-segment swap: {swapped} of {} kills found the prepared file named",
        KILLS.len()
    );
    assert!(
        swapped >= 2,
        "the kills after acknowledgements came after the swap"
    );
}
