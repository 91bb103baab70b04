//! Segment preallocation races: the background thread prepares zero-filled files while the
//! writer rolls segments as fast as it can. Regression test for a bug where a preparation
//! reused the name of a file just handed over, opened the new live segment and zeroed it.

use sitelog::{IoBackend, Log, LogOptions, SyncMode};

fn payload(i: u64) -> Vec<u8> {
    let mut p = i.to_le_bytes().to_vec();
    p.resize(1000, (i % 251) as u8);
    p
}

fn roll_fast_then_reopen(backend: IoBackend, sync: SyncMode) {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        io: backend,
        sync,
        segment_size_bytes: 4 << 20,
        max_record_bytes: 4096,
        ..Default::default()
    };
    let log = Log::open(dir.path(), opts.clone()).unwrap();
    let mut next = 0u64;
    while log.segment_count() < 8 {
        let batch: Vec<Vec<u8>> = (next..next + 64).map(payload).collect();
        log.append_batch(&batch).unwrap();
        next += 64;
    }
    log.close().unwrap();
    let log = Log::open(dir.path(), opts).unwrap();
    assert_eq!(log.end_offset(), next);
    for r in log.iter(0) {
        let r = r.unwrap();
        assert_eq!(r.payload.as_ref(), &payload(r.offset)[..]);
    }
    log.verify().unwrap();
}

#[test]
fn rolling_while_preparing_never_damages_a_segment() {
    for round in 0..8 {
        let backend = if round % 2 == 0 {
            IoBackend::Auto
        } else {
            IoBackend::Posix
        };
        let sync = if round % 3 == 0 {
            SyncMode::Always
        } else {
            SyncMode::Manual
        };
        roll_fast_then_reopen(backend, sync);
    }
}
