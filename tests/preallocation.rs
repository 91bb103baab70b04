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
    let mut opts = LogOptions::default();
    opts.io = backend;
    opts.sync = sync;
    opts.segment_size_bytes = 4 << 20;
    opts.max_record_bytes = 4096;
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

/// `wait_prepared` returns once the next segment file exists, zero-filled to the segment
/// size; after a roll takes it, the following one is prepared again. Without preallocation
/// it returns `false` at once.
#[test]
fn wait_prepared_reports_the_prepared_next_segment() {
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = 1u64 << 20;
    let mut opts = LogOptions::default();
    opts.segment_size_bytes = segment_bytes;
    opts.max_record_bytes = 4096;
    let prepared_files = || -> Vec<u64> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().starts_with("prepared-"))
            .map(|e| e.metadata().unwrap().len())
            .collect()
    };
    let log = Log::open(dir.path(), opts.clone()).unwrap();
    assert!(log.wait_prepared(std::time::Duration::from_secs(30)));
    assert_eq!(prepared_files(), vec![segment_bytes]);
    // Fill the first segment: the roll renames the prepared file into place.
    let mut next = 0;
    while log.segment_count() < 2 {
        log.append(&payload(next)).unwrap();
        next += 1;
    }
    // The first record of the new segment is acknowledged after the roll's barrier renamed
    // the prepared file.
    log.append(&payload(next)).unwrap();
    assert!(log.wait_prepared(std::time::Duration::from_secs(30)));
    assert_eq!(prepared_files(), vec![segment_bytes]);
    log.close().unwrap();

    let plain = tempfile::tempdir().unwrap();
    let log = Log::open(plain.path(), {
        let mut opts = opts;
        opts.preallocate = false;
        opts
    })
    .unwrap();
    let t0 = std::time::Instant::now();
    assert!(!log.wait_prepared(std::time::Duration::from_secs(30)));
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
}

/// Bytes this process caused to be written to storage (`write_bytes` of /proc/self/io).
fn process_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
}

/// Rolls `segments` segments of 1 KiB durable records, waiting for each prepared file;
/// returns (bytes written by the process, the log's prepare stats).
fn roll_segments(retention: Option<u64>, segments: usize) -> (Option<u64>, sitelog::PrepareStats) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut opts = LogOptions::default();
    opts.io = IoBackend::Posix;
    opts.segment_size_bytes = 4 << 20;
    opts.max_record_bytes = 4096;
    opts.retention_bytes = retention;
    let log = Log::open(dir.path(), opts).unwrap();
    assert!(log.wait_prepared(std::time::Duration::from_secs(60)));
    let before = process_write_bytes();
    let batch: Vec<Vec<u8>> = (0..64)
        .map(|i| {
            let mut p = payload(i);
            p.resize(1024, 7);
            p
        })
        .collect();
    let mut rolled = 0;
    let mut last_base = 0;
    while rolled < segments {
        log.append_batch(&batch).unwrap();
        // A roll (retention may delete a segment at the same time: counts stay).
        let base = log
            .sealed_segments(u64::MAX)
            .unwrap()
            .last()
            .map_or(0, |s| s.end_offset);
        if base != last_base {
            last_base = base;
            rolled += 1;
            assert!(log.wait_prepared(std::time::Duration::from_secs(60)));
        }
    }
    let written = process_write_bytes().zip(before).map(|(a, b)| a - b);
    let stats = log.prepare_stats();
    log.close().unwrap();
    (written, stats)
}

/// The write bandwidth recycling saves (a measurement, run by hand; figures in the README):
/// `cargo test --release --test preallocation -- --ignored --nocapture recycling_bandwidth`.
/// Rolls 32 segments of 4 MiB with retention by bytes (retired segments recycled) and
/// without retention (every segment zero-filled, as every segment was before recycling:
/// deleting writes nothing), and prints the bytes the process wrote.
#[test]
#[ignore = "a measurement: prints bytes written with and without recycling"]
fn recycling_bandwidth() {
    let segments = 32;
    let (plain, plain_stats) = roll_segments(None, segments);
    let (recycled, recycled_stats) = roll_segments(Some(4 * (4 << 20)), segments);
    println!("zero-filled: write_bytes {plain:?}, {plain_stats:?}");
    println!("recycled:    write_bytes {recycled:?}, {recycled_stats:?}");
    assert!(recycled_stats.recycled > 0);
    assert!(recycled_stats.zero_bytes_written < plain_stats.zero_bytes_written);
}

/// The next segment's zeros are written at the pace of the durable appends (at most two bytes
/// per byte made durable, plus one step), not at full speed in front of their flushes: on
/// this disk 300 single appends take tens of milliseconds, in which an unpaced preparation
/// wrote tens of MiB of its 64 MiB.
#[test]
fn a_preparation_beside_durable_appends_keeps_to_their_pace() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let payload = vec![7u8; 1000];
    for _ in 0..300 {
        log.append(&payload).unwrap();
    }
    let zeros = log.prepare_stats().zero_bytes_written;
    // 300 frames of ~1 KiB, rewritten blocks included, are well under 1 MiB of groups.
    assert!(
        zeros <= 3 << 20,
        "{zeros} bytes of zeros written beside 300 appends"
    );
    log.close().unwrap();
}
