//! Recycled segments (retention renames a retired segment into the next prepared file),
//! retention applied on demand and by the background timer, and a new log's empty first
//! segment replaced by the first prepared file.

use super::segment::{self, HEADER_REGION_BYTES};
use super::*;
use crate::io::{SimDisk, SimFaults};
use crate::Error;
use std::path::Path;
use std::time::{Duration, Instant};

const SEGMENT_BYTES: u64 = 16 << 10;
const RECORD_BYTES: usize = 300;
const WAIT: Duration = Duration::from_secs(30);

fn payload(offset: u64) -> Vec<u8> {
    let len = RECORD_BYTES - (offset as usize * 7) % 200;
    (0..len).map(|i| (offset as usize * 31 + i) as u8).collect()
}

/// A small-segment log with preallocation and retention by bytes (three segments).
fn recycling_opts(io: IoBackend) -> LogOptions {
    LogOptions {
        io,
        segment_size_bytes: SEGMENT_BYTES,
        max_record_bytes: 1024,
        retention_bytes: Some(3 * SEGMENT_BYTES),
        preallocate: true,
        ..Default::default()
    }
}

/// Appends `n` records (payloads by offset); after every roll waits for the next prepared
/// file, so that rolls take prepared files instead of racing their preparation.
fn append_rolling(log: &Log, n: u64) -> u64 {
    for _ in 0..n {
        let last_base = |log: &Log| log.segments_snapshot().last().map(|s| s.base_offset);
        let before = last_base(log);
        let offset = log.end_offset();
        assert_eq!(log.append(&payload(offset)).unwrap(), offset);
        // A roll (counting segments would miss one that retention matched with a purge).
        if last_base(log) != before {
            assert!(log.wait_prepared(WAIT), "no prepared file");
        }
    }
    log.end_offset()
}

/// Every record from the start to the end is the one appended at its offset.
fn check_records(log: &Log) {
    let (start, end) = (log.start_offset(), log.end_offset());
    for offset in start..end {
        let r = log.read(offset).unwrap();
        assert_eq!(r.offset, offset);
        assert_eq!(r.payload.as_ref(), &payload(offset)[..], "offset {offset}");
    }
    let walked = log.iter(start).map(|r| r.unwrap().offset);
    assert!(walked.eq(start..end), "the iterator serves exactly the log");
}

fn prepared_files(names: &[String]) -> usize {
    names
        .iter()
        .filter(|n| n.starts_with(super::background::PREPARED_PREFIX))
        .count()
}

/// The active segment's bytes after its last frame are not zeros: it is a recycled file.
fn active_is_recycled(log: &Log, bytes: &[u8]) -> bool {
    let data_end = log.segments_snapshot().last().unwrap().state().data_end as usize;
    bytes[data_end..].iter().any(|&b| b != 0)
}

#[test]
fn retention_recycles_retired_segments_instead_of_zero_filling() {
    recycles_on(IoBackend::Posix);
    // `Auto` is POSIX for a direct log: name io_uring where the kernel has it.
    if crate::io::UringIo::new_ref().is_ok() {
        recycles_on(IoBackend::IoUring);
    }
}

fn recycles_on(backend: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let opts = recycling_opts(backend);
    let log = Log::open(dir.path(), opts.clone()).unwrap();
    append_rolling(&log, 600);
    let stats = log.prepare_stats();
    assert!(stats.taken >= 8, "{stats:?}");
    assert!(
        stats.recycled >= 4,
        "retired segments were recycled: {stats:?}"
    );
    assert!(stats.retired_kept >= stats.recycled);
    // Only the first files (before retention retired anything) were zero-filled whole.
    assert!(stats.zero_filled <= 5, "{stats:?}");
    let whole = (stats.zero_filled + stats.recycled) * SEGMENT_BYTES;
    assert!(
        stats.zero_bytes_written * 2 < whole,
        "recycling writes only gaps: {stats:?}"
    );
    check_records(&log);
    assert!(log.start_offset() > 0, "retention dropped a prefix");
    assert!(log.size_bytes() <= 3 * SEGMENT_BYTES + SEGMENT_BYTES);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(prepared_files(&names) <= 2, "{names:?}");
    log.verify().unwrap();
    // Named (a pointer-swap roll's file may still have its prepared name, `namer.rs`).
    log.flush().unwrap();
    let active = log.segments_snapshot().last().unwrap().path.clone();
    assert!(active_is_recycled(&log, &std::fs::read(&active).unwrap()));
    // A clean reopen of a recycled active segment: nothing torn, nothing pending.
    log.close().unwrap();
    let found = verify_dir(&opts.io.resolve(opts.direct_io).unwrap(), dir.path(), &opts).unwrap();
    assert!(found.pending.is_empty(), "{:?}", found.pending);
    let log = Log::open(dir.path(), opts).unwrap();
    assert_eq!(log.recovery_report().torn_bytes_truncated, 0);
    check_records(&log);
    append_rolling(&log, 100);
    check_records(&log);
    log.verify().unwrap();
}

/// Crashes (the simulated disk loses everything not fsynced) at many points of a recycling
/// log; every acknowledged record survives, nothing stale is ever served, and stale bytes
/// after the tail are never taken for damage.
#[test]
fn crashes_while_recycling_keep_every_acknowledged_record() {
    for seed in 0..12u64 {
        let disk = SimDisk::new(seed);
        let opts = recycling_opts(disk.io().into());
        let (mut acknowledged, mut recycled) = (0, 0);
        for round in 0..4u64 {
            let log = Log::open("/l", opts.clone()).unwrap();
            assert!(
                log.end_offset() >= acknowledged,
                "seed {seed} round {round}"
            );
            if acknowledged > 0 {
                check_records(&log);
            }
            // Crash points spread over the segment (and over the roll).
            acknowledged = append_rolling(&log, 150 + (seed * 37 + round * 11) % 90);
            recycled += log.prepare_stats().recycled;
            let manual = LogOptions {
                sync: SyncMode::Manual,
                ..opts.clone()
            };
            drop(log);
            if round % 2 == 1 {
                // Unsynced records on top, which the crash may tear.
                let log = Log::open("/l", manual).unwrap();
                log.append_batch(&[payload(acknowledged), payload(acknowledged + 1)])
                    .unwrap();
                drop(log);
            }
            disk.crash();
        }
        let log = Log::open("/l", opts.clone()).unwrap();
        assert!(log.end_offset() >= acknowledged);
        check_records(&log);
        assert!(log.start_offset() > 0);
        log.verify().unwrap();
        assert!(recycled > 0, "seed {seed}: nothing was recycled");
    }
}

/// After a crash in a recycled active segment whose tail holds only stale bytes, recovery
/// keeps them (no torn tail); a frame of this segment after the tail is cut instead.
#[test]
fn stale_bytes_are_kept_and_a_frame_of_the_segment_after_the_tail_is_cut() {
    let disk = SimDisk::new(7);
    let opts = recycling_opts(disk.io().into());
    let log = Log::open("/l", opts.clone()).unwrap();
    let mut end = append_rolling(&log, 260);
    // Until the active segment is a recycled file.
    let active = loop {
        // Named (a pointer-swap roll's file may still have its prepared name, `namer.rs`).
        log.flush().unwrap();
        let seg = log.segments_snapshot().last().unwrap().clone();
        if log.prepare_stats().recycled > 0
            && active_is_recycled(&log, &disk.peek(&seg.path).unwrap())
        {
            break seg;
        }
        end = append_rolling(&log, 20);
    };
    let (base, data_end) = (active.base_offset, active.state().data_end);
    let log_id = log.log_id();
    drop(active);
    drop(log);
    disk.crash();
    let log = Log::open("/l", opts.clone()).unwrap();
    assert_eq!(log.end_offset(), end);
    assert_eq!(
        log.recovery_report().torn_bytes_truncated,
        0,
        "stale is not torn"
    );
    check_records(&log);
    drop(log);
    // A copy of the segment's first frame (offset `base`) planted after the tail: a record
    // of this segment a crash discarded would look like this. Recovery cuts it.
    let path = segment::Segment::path_in(Path::new("/l"), base);
    let bytes = disk.peek(&path).unwrap();
    let first = record::decode_header(
        &bytes[HEADER_REGION_BYTES as usize..],
        log_id,
        Some(base),
        1024,
    )
    .unwrap();
    let frame = &bytes[HEADER_REGION_BYTES as usize..][..first.frame_len()];
    let plant_at = data_end + 8 * 64;
    assert!(plant_at + frame.len() as u64 <= bytes.len() as u64);
    disk.poke(&path, plant_at, frame).unwrap();
    let found = verify_dir(&disk.io(), Path::new("/l"), &opts).unwrap();
    let torn = found.pending.torn_tail.expect("reported");
    assert_eq!((torn.offset, torn.file_offset), (end, data_end));
    let log = Log::open("/l", opts).unwrap();
    assert!(log.recovery_report().torn_bytes_truncated > 0);
    assert_eq!(log.end_offset(), end);
    check_records(&log);
}

/// A retired segment that a reader still maps (a record's payload is a slice of the map) is
/// deleted, not recycled: the payload the reader holds never changes.
#[test]
fn a_segment_still_read_is_deleted_not_recycled() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        retention_bytes: None,
        ..recycling_opts(IoBackend::Posix)
    };
    let log = Log::open(dir.path(), opts).unwrap();
    append_rolling(&log, 200);
    // Purges the oldest segment and rolls: the roll prepares the next file from the spare.
    let retire_oldest = || {
        let end = log.segments_snapshot()[0].state().end_offset;
        assert_eq!(log.purge_before(end).unwrap().segments_removed, 1);
        append_rolling(&log, 120);
        log.prepare_stats()
    };
    // A payload sliced from the oldest segment's map.
    let held = log.read(0).unwrap();
    let stats = retire_oldest();
    assert_eq!(
        (stats.retired_kept, stats.spares_still_read, stats.recycled),
        (1, 1, 0)
    );
    assert_eq!(
        held.payload.as_ref(),
        &payload(0)[..],
        "the map outlives the name"
    );
    // An `Arc<Segment>` a reader holds.
    let held_seg = log.segments_snapshot()[0].clone();
    let stats = retire_oldest();
    assert_eq!(
        (stats.retired_kept, stats.spares_still_read, stats.recycled),
        (2, 2, 0)
    );
    assert_eq!(
        held_seg
            .read(held_seg.base_offset)
            .unwrap()
            .payload
            .as_ref(),
        &payload(held_seg.base_offset)[..]
    );
    // Once nothing reads it, the retired segment is recycled.
    let stats = retire_oldest();
    assert_eq!(
        (stats.retired_kept, stats.spares_still_read, stats.recycled),
        (3, 2, 1)
    );
    assert_eq!(held.payload.as_ref(), &payload(0)[..]);
    check_records(&log);
}

#[test]
fn apply_retention_by_bytes_and_by_age() {
    let disk = SimDisk::new(3);
    let opts = LogOptions {
        io: disk.io().into(),
        segment_size_bytes: SEGMENT_BYTES,
        max_record_bytes: 1024,
        preallocate: false,
        ..Default::default()
    };
    let log = Log::open("/l", opts.clone()).unwrap();
    for offset in 0..300 {
        log.append(&payload(offset)).unwrap();
    }
    let segments = log.segment_count();
    assert!(segments >= 6);
    assert_eq!(
        log.apply_retention().unwrap(),
        PurgeOutcome::default(),
        "none set"
    );
    drop(log);

    // By bytes: the oldest sealed segments go until the files fit (the active one stays).
    let by_bytes = LogOptions {
        retention_bytes: Some(3 * SEGMENT_BYTES),
        ..opts.clone()
    };
    let log = Log::open("/l", by_bytes).unwrap();
    let out = log.apply_retention().unwrap();
    assert!(out.segments_removed >= segments - 4, "{out:?}");
    assert!(log.size_bytes() <= 3 * SEGMENT_BYTES);
    assert!(log.start_offset() > 0);
    assert_eq!(log.read(299).unwrap().payload.as_ref(), &payload(299)[..]);
    assert!(matches!(log.read(0), Err(Error::BelowFloor { .. })));
    drop(log);

    // By age: nothing is old yet; once every record is, all sealed segments go.
    let by_age = LogOptions {
        retention_age_ms: Some(200),
        ..opts
    };
    let log = Log::open("/l", by_age).unwrap();
    let start = log.start_offset();
    assert_eq!(
        log.apply_retention().unwrap().segments_removed,
        0,
        "too young"
    );
    let deadline = Instant::now() + WAIT;
    let mut removed = 0;
    // Records age one after another: poll until every sealed segment went.
    while log.segment_count() > 1 {
        assert!(Instant::now() < deadline, "never aged out");
        removed += log.apply_retention().unwrap().segments_removed;
        std::thread::sleep(Duration::from_millis(5)); // polling interval, not synchronisation
    }
    assert!(removed >= 1);
    assert!(log.start_offset() > start);
    assert_eq!(log.segment_count(), 1, "only the active segment is left");
    assert_eq!(log.read(299).unwrap().payload.as_ref(), &payload(299)[..]);
}

/// An idle log (no append, so no seal) still ages out: the background timer applies
/// retention by age every `retention_check_interval_ms`.
#[test]
fn the_retention_timer_ages_out_an_idle_log() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        io: IoBackend::Posix,
        segment_size_bytes: SEGMENT_BYTES,
        max_record_bytes: 1024,
        retention_age_ms: Some(1500),
        retention_check_interval_ms: 20,
        sync: SyncMode::Manual,
        ..Default::default()
    };
    let log = Log::open(dir.path(), opts).unwrap();
    let payloads: Vec<Vec<u8>> = (0..300).map(payload).collect();
    log.append_batch(&payloads).unwrap();
    log.sync().unwrap();
    // The last sealed segment was sealed just now: only the timer can age it out (no seal
    // comes after it).
    assert!(log.segment_count() >= 2);
    let deadline = Instant::now() + WAIT;
    while log.segment_count() > 1 {
        assert!(Instant::now() < deadline, "old segments never aged out");
        std::thread::sleep(Duration::from_millis(5)); // polling interval, not synchronisation
    }
    assert!(log.start_offset() > 0);
    assert_eq!(log.read(299).unwrap().payload.as_ref(), &payload(299)[..]);
    // The timer holds the log weakly: dropping the handle stops it and unlocks the directory
    // (at once, or once a check in progress lets go of it).
    drop(log);
    let deadline = Instant::now() + WAIT;
    loop {
        match Log::open(dir.path(), LogOptions::default()) {
            Ok(_) => break,
            Err(Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5)); // polling interval
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn retention_check_interval_is_bounded() {
    for bad in [0, 86_400_001] {
        let opts = LogOptions {
            retention_check_interval_ms: bad,
            ..Default::default()
        };
        assert!(matches!(opts.validate(), Err(Error::InvalidArgument(_))));
    }
}

/// A simulated disk and preallocating options without retention, for the swap tests.
fn swap_disk(seed: u64) -> (SimDisk, LogOptions) {
    let disk = SimDisk::new(seed);
    let opts = LogOptions {
        retention_bytes: None,
        ..recycling_opts(disk.io().into())
    };
    (disk, opts)
}

/// A new log's first segment is created at open, before any file is prepared; `wait_prepared`
/// replaces it (still empty) by the first prepared file and waits for the next one. A reader
/// made before the swap serves the records appended after it; a crash after the swap keeps
/// the preallocated, named first segment and every acknowledged record.
#[test]
fn a_new_logs_empty_first_segment_takes_the_first_prepared_file() {
    let (disk, opts) = swap_disk(11);
    let dir = Path::new("/adopt");
    let log = Log::open(dir, opts.clone()).unwrap();
    let first = log.segments_snapshot()[0].path.clone();
    assert!(disk.peek(&first).unwrap().len() < SEGMENT_BYTES as usize, "not preallocated");
    let mut early = log.iter(0);
    assert!(early.next().is_none());
    assert!(log.wait_prepared(WAIT));
    assert_eq!(log.prepare_stats().adopted, 1);
    let segs = log.segments_snapshot();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].path, first);
    assert_eq!(disk.peek(&first).unwrap().len(), SEGMENT_BYTES as usize, "preallocated");
    let names = disk.io().list(dir).unwrap();
    assert_eq!(prepared_files(&names), 1, "the next one: {names:?}");
    let end = append_rolling(&log, 120);
    assert!(log.segments_snapshot().len() > 2);
    assert_eq!(early.next().unwrap().unwrap().payload.as_ref(), &payload(0)[..]);
    check_records(&log);
    // Only an empty segment made without a prepared file is replaced.
    assert!(log.wait_prepared(WAIT));
    assert_eq!(log.prepare_stats().adopted, 1);
    drop(log);
    disk.crash();
    let log = Log::open(dir, opts.clone()).unwrap();
    assert_eq!(log.end_offset(), end);
    check_records(&log);
    log.verify().unwrap();
    drop(log);

    // Crashed right after the swap (its barrier durable), before any append.
    let (disk, opts) = swap_disk(12);
    let log = Log::open(dir, opts.clone()).unwrap();
    assert!(log.wait_prepared(WAIT));
    drop(log);
    disk.crash();
    assert_eq!(disk.peek(&first).unwrap().len(), SEGMENT_BYTES as usize);
    let log = Log::open(dir, opts).unwrap();
    assert_eq!(log.end_offset(), 0);
    assert_eq!(append_rolling(&log, 60), 60);
    check_records(&log);
    log.verify().unwrap();
}

/// Durable appends that find the prepared file ready while the first segment is still empty
/// swap it in themselves (the first append pays the swap's barrier, like a roll); once the segment
/// holds a record nothing is swapped.
#[test]
fn the_first_append_after_the_preparation_swaps_an_empty_first_segment() {
    let (disk, opts) = swap_disk(13);
    let log = Log::open(Path::new("/first"), opts).unwrap();
    let first = log.segments_snapshot()[0].path.clone();
    assert!(log.shared.background.wait_prepared(WAIT));
    assert_eq!(log.append(&payload(0)).unwrap(), 0);
    assert_eq!(log.prepare_stats().adopted, 1);
    assert_eq!(disk.peek(&first).unwrap().len(), SEGMENT_BYTES as usize);
    assert_eq!(log.read(0).unwrap().payload.as_ref(), &payload(0)[..]);
    assert!(log.shared.background.wait_prepared(WAIT));
    assert_eq!(log.append(&payload(1)).unwrap(), 1);
    assert_eq!(log.prepare_stats().adopted, 1, "a segment with a record is kept");
    check_records(&log);
}

/// A swap whose barrier fails for lack of space before its rename is undone: the empty
/// segment, which kept its name, is the log's first segment again, the prepared file is
/// gone, and appends, reads and a crash and reopen go on as if no swap had been tried.
#[test]
fn a_swap_that_finds_no_space_before_its_rename_keeps_the_empty_segment() {
    let (disk, opts) = swap_disk(14);
    let dir = Path::new("/nospace-swap");
    let log = Log::open(dir, opts.clone()).unwrap();
    let empty = log.segments_snapshot()[0].clone();
    assert!(log.shared.background.wait_prepared(WAIT));
    disk.set_faults(SimFaults {
        fail_renames_nospace: 1,
        ..disk.faults()
    });
    assert!(!log.wait_prepared(WAIT), "the swap failed");
    assert_eq!(disk.faults().fail_renames_nospace, 0, "the barrier renamed");
    assert!(log.poisoned().is_none());
    assert_eq!(log.prepare_stats().adopted, 0);
    let segs = log.segments_snapshot();
    assert_eq!(segs.len(), 1);
    assert!(std::sync::Arc::ptr_eq(&segs[0], &empty), "the empty segment is back");
    let end = append_rolling(&log, 80);
    check_records(&log);
    drop((segs, empty, log));
    disk.crash();
    let log = Log::open(dir, opts).unwrap();
    assert_eq!(log.end_offset(), end);
    check_records(&log);
    log.verify().unwrap();
}
