//! Real-process crash between a segment roll and the seal of the segment it left: the roll
//! names the next segment and acknowledges its records before the old one is sealed (the seal
//! runs after, in the background), so a kill -9 can leave two unsealed segments on disk. The
//! next open finds every record of the first up to the second's base and completes its seal.
//!
//! The child is this test binary re-invoked on the ignored test [`seal_child`], which does
//! nothing unless `SITELOG_SEAL_CHILD_DIR` is set. It opens a *driven* log on the real POSIX
//! backend, so that the seal never runs behind its back (on a driven log only `Log::pump` and
//! `Log::flush` seal), appends across one roll, prints `ACKED <n>` and blocks on its standard
//! input until the parent kills it.

use sitelog::{IoBackend, Log, LogOptions, SyncMode};

mod common;

const ENV_DIR: &str = "SITELOG_SEAL_CHILD_DIR";
const SEGMENT_BYTES: u64 = 64 << 10;
const RECORD_BYTES: usize = 3000;

fn options(driven: bool) -> LogOptions {
    let mut opts = LogOptions::default();
    opts.io = IoBackend::Posix;
    opts.segment_size_bytes = SEGMENT_BYTES;
    opts.max_record_bytes = 8 << 10;
    opts.sync = SyncMode::Always;
    opts.driven = driven;
    opts
}

fn payload(n: u64) -> Vec<u8> {
    (0..RECORD_BYTES)
        .map(|i| (n as usize * 7 + i * 13) as u8)
        .collect()
}

/// The child process: a no-op unless `SITELOG_SEAL_CHILD_DIR` is set.
#[test]
#[ignore = "child process of the seal kill -9 test; a no-op unless SITELOG_SEAL_CHILD_DIR is set"]
fn seal_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let log = Log::open(&dir, options(true)).expect("open");
    // Durable on return (the append runs the group and, after the roll, the roll's barrier).
    while log.segment_count() < 2 {
        log.append(&payload(log.end_offset())).expect("append");
    }
    log.append(&payload(log.end_offset())).expect("append");
    common::say_and_wait_for_kill(&format!("ACKED {}", log.end_offset()));
}

#[test]
fn a_kill_between_a_roll_and_its_seal_loses_nothing_and_the_next_open_seals() {
    let dir = tempfile::tempdir().unwrap();
    let envs = [(ENV_DIR, dir.path().to_str().unwrap())];
    let acked = common::kill_child_after("seal_child", &envs, "ACKED ")
        .map(|n| n.trim().parse::<u64>().unwrap());
    let acked = acked.expect("the child acknowledged its appends");

    let log = Log::open(dir.path(), options(false)).unwrap();
    assert_eq!(
        log.recovery_report().seals_completed,
        1,
        "the first segment was left unsealed"
    );
    assert_eq!(log.recovery_report().torn_bytes_truncated, 0);
    assert_eq!(log.end_offset(), acked);
    let sealed = log.sealed_segments(u64::MAX).unwrap();
    assert_eq!(sealed.len(), 1, "{sealed:?}");
    assert_eq!(
        sealed[0].end_offset,
        acked - 1,
        "the roll came before the last record"
    );
    for (i, r) in log.iter(0).enumerate() {
        let r = r.unwrap();
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.payload[..], payload(r.offset)[..]);
    }
    log.verify().unwrap();
    drop(log);
    let log = Log::open(dir.path(), options(false)).unwrap();
    assert_eq!(
        log.recovery_report().seals_completed,
        0,
        "the seal was durable"
    );
    assert_eq!(log.end_offset(), acked);
}
