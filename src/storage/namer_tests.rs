//! Pointer-swap rolls (`namer.rs`) on the simulated disk: records acknowledged in a segment
//! whose file still has its prepared name survive a crash (recovery finds the file by its
//! header and names it); a read-only inspection reads them there; two headed prepared files
//! are damage.

use super::segment::{self, HEADER_REGION_BYTES};
use super::*;
use crate::io::{SimDisk, SimFaults};
use crate::Error;
use std::path::Path;
use std::time::Duration;

const SEGMENT_BYTES: u64 = 16 << 10;
const RECORD_BYTES: usize = 700;
const WAIT: Duration = Duration::from_secs(30);
const DIR: &str = "/named";

fn payload(offset: u64) -> Vec<u8> {
    (0..RECORD_BYTES)
        .map(|i| (offset as usize * 13 + i * 7) as u8)
        .collect()
}

fn opts(disk: &SimDisk) -> LogOptions {
    LogOptions {
        io: disk.io().into(),
        segment_size_bytes: SEGMENT_BYTES,
        max_record_bytes: 1024,
        preallocate: true,
        ..Default::default()
    }
}

fn check_records(log: &Log, end: u64) {
    assert_eq!(log.end_offset(), end);
    for offset in 0..end {
        assert_eq!(log.read(offset).unwrap().payload.as_ref(), &payload(offset)[..]);
    }
    assert!(log.iter(0).map(|r| r.unwrap().offset).eq(0..end));
}

fn prepared_names(disk: &SimDisk) -> Vec<String> {
    let names = disk.io().list(Path::new(DIR)).unwrap();
    names
        .into_iter()
        .filter(|n| n.starts_with(super::background::PREPARED_PREFIX))
        .collect()
}

/// Opens a log whose next roll takes a prepared file, holds its naming back, appends across
/// that roll (every append durable), and crashes the disk with the log still open. Returns
/// the log and the pause (dropped after the log, so that nothing renames the file after the
/// crash), the acknowledged end, and the new segment's base.
fn crash_before_the_rename(disk: &SimDisk) -> ((Log, impl Drop), u64, u64) {
    let log = Log::open(DIR, opts(disk)).unwrap();
    // The first segment (made at open) takes the first prepared file; the next is ready.
    assert!(log.wait_prepared(WAIT));
    assert!(log.shared.background.wait_prepared(WAIT));
    let pause = log.pause_naming();
    while log.segment_count() < 2 {
        log.append(&payload(log.end_offset())).unwrap();
    }
    for _ in 0..3 {
        log.append(&payload(log.end_offset())).unwrap();
    }
    let base = log.segments_snapshot()[1].base_offset;
    let end = log.end_offset();
    assert_eq!(log.durable_end(), end);
    // The background thread idle (the next file prepared): it changes nothing after the
    // crash while the reopen lists the directory.
    assert!(log.shared.background.wait_prepared(WAIT));
    disk.crash();
    ((log, pause), end, base)
}

/// The new segment's records were acknowledged while its file had only its prepared name;
/// after the crash the directory still says so, and the next open names it and keeps them.
#[test]
fn records_acknowledged_before_the_rename_survive_a_crash() {
    for seed in 0..8 {
        let disk = SimDisk::new(seed);
        let (crashed, end, base) = crash_before_the_rename(&disk);
        let named = Path::new(DIR).join(segment::file_name(base));
        assert!(disk.peek_durable(&named).is_err(), "seed {seed}: named before the crash");
        let prepared = prepared_names(&disk);
        let holds_base = prepared.iter().filter(|n| {
            let head = disk.peek_durable(&Path::new(DIR).join(n)).unwrap();
            segment::header_base(&head[..HEADER_REGION_BYTES as usize], crashed.0.log_id())
                == Some(base)
        });
        assert_eq!(holds_base.count(), 1, "seed {seed}: {prepared:?}");

        let log = Log::open(DIR, opts(&disk)).unwrap();
        assert_eq!(log.recovery_report().segments_named, 1, "seed {seed}");
        assert_eq!(log.recovery_report().torn_bytes_truncated, 0);
        check_records(&log, end);
        assert!(disk.peek_durable(&named).is_ok(), "the rename is durable");
        log.verify().unwrap();
        // Appends go on in it, and across the next rolls.
        for _ in 0..40 {
            log.append(&payload(log.end_offset())).unwrap();
        }
        let end = log.end_offset();
        // A clean stop names the segment of the last roll (a pointer swap too).
        log.close().unwrap();
        drop(crashed);
        disk.crash();
        let log = Log::open(DIR, opts(&disk)).unwrap();
        assert_eq!(log.recovery_report().segments_named, 0, "seed {seed}");
        check_records(&log, end);
        log.verify().unwrap();
    }
}

/// A read-only inspection reads the unnamed segment under its prepared name, notes the rename
/// the next open makes, and changes nothing.
#[test]
fn an_inspection_reads_an_unnamed_segment_and_changes_nothing() {
    let disk = SimDisk::new(21);
    let (crashed, end, base) = crash_before_the_rename(&disk);
    let before = prepared_names(&disk);
    let found = verify::verify_dir(&disk.io(), Path::new(DIR), &opts(&disk)).unwrap();
    let noted = found.pending.unnamed_segment.expect("the rename is noted");
    assert!(before.iter().any(|n| noted.ends_with(n)), "{noted:?} in {before:?}");
    assert_eq!(found.report.records, end);
    assert_eq!(prepared_names(&disk), before);
    let named = Path::new(DIR).join(segment::file_name(base));
    assert!(disk.peek_durable(&named).is_err());
    drop(crashed);
    let log = Log::open(DIR, opts(&disk)).unwrap();
    check_records(&log, end);
}

/// Two prepared files holding segment headers above every named segment cannot both be the
/// last segment (a roll names the one before first): damage, reported, nothing renamed.
#[test]
fn two_headed_prepared_files_are_damage() {
    let disk = SimDisk::new(31);
    let (crashed, _, base) = crash_before_the_rename(&disk);
    let log_id = crashed.0.log_id();
    drop(crashed);
    let io = disk.io();
    let extra = Path::new(DIR).join(format!("{}999999.seg.tmp", super::background::PREPARED_PREFIX));
    let file = io.open(&extra, true).unwrap();
    let header = segment::encode_header(log_id, base + 1_000, 0);
    file.write_at(&header, 0).unwrap();
    file.sync_data().unwrap();
    io.sync_dir(Path::new(DIR)).unwrap();
    let before = prepared_names(&disk);
    let err = Log::open(DIR, opts(&disk)).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err}");
    assert_eq!(prepared_names(&disk), before, "nothing renamed");
}

/// Opens a log whose next roll takes a prepared file, then makes every rename fail with
/// ENOSPC (a full directory) and appends across the roll: the new segment stays unnamed
/// (`flush` leaves it so). Returns the log, the acknowledged end and the new segment's base.
fn roll_while_renames_fail(disk: &SimDisk) -> (Log, u64, u64) {
    let log = Log::open(DIR, opts(disk)).unwrap();
    assert!(log.wait_prepared(WAIT));
    assert!(log.shared.background.wait_prepared(WAIT));
    disk.set_faults(SimFaults {
        fail_renames_nospace: u32::MAX,
        ..Default::default()
    });
    while log.segment_count() < 2 {
        log.append(&payload(log.end_offset())).unwrap();
    }
    for _ in 0..3 {
        log.append(&payload(log.end_offset())).unwrap();
    }
    log.flush().unwrap();
    let base = log.segments_snapshot()[1].base_offset;
    assert_eq!(log.shared.namer.pending_base(), Some(base), "still unnamed");
    let end = log.end_offset();
    (log, end, base)
}

/// `purge_before` into the unnamed segment names it first: recovery adopts an unnamed
/// segment only at or above the start, and the start is about to pass its base.
#[test]
fn a_purge_into_an_unnamed_segment_names_it_first() {
    let disk = SimDisk::new(41);
    let log = Log::open(DIR, opts(&disk)).unwrap();
    assert!(log.wait_prepared(WAIT));
    assert!(log.shared.background.wait_prepared(WAIT));
    let pause = log.pause_naming();
    while log.segment_count() < 2 {
        log.append(&payload(log.end_offset())).unwrap();
    }
    log.append(&payload(log.end_offset())).unwrap();
    let base = log.segments_snapshot()[1].base_offset;
    let end = log.end_offset();
    log.purge_before(base + 1).unwrap();
    assert_eq!(log.shared.namer.pending_base(), None, "named by the purge");
    assert!(log.shared.background.wait_prepared(WAIT));
    disk.crash();
    let crashed = (log, pause);
    let log = Log::open(DIR, opts(&disk)).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (base + 1, end));
    assert_eq!(log.recovery_report().segments_named, 0);
    for offset in base + 1..end {
        assert_eq!(log.read(offset).unwrap().payload.as_ref(), &payload(offset)[..]);
    }
    drop(crashed);
}

/// While a full disk keeps the segment unnamed, `purge_before` moves the start only up to its
/// base; after a crash the next open names it (once there is room) and keeps every record
/// from the start on.
#[test]
fn a_purge_stops_at_a_segment_a_full_disk_left_unnamed() {
    let disk = SimDisk::new(42);
    let (log, end, base) = roll_while_renames_fail(&disk);
    log.purge_before(base + 2).unwrap();
    assert_eq!(log.start_offset(), base, "the start stops at the unnamed segment");
    disk.crash();
    // Stopped before renames work again: a crashed process renames nothing afterwards.
    drop(log);
    disk.set_faults(SimFaults::default());
    let log2 = Log::open(DIR, opts(&disk)).unwrap();
    assert_eq!(log2.recovery_report().segments_named, 1);
    assert_eq!((log2.start_offset(), log2.end_offset()), (base, end));
    for offset in base..end {
        assert_eq!(log2.read(offset).unwrap().payload.as_ref(), &payload(offset)[..]);
    }
    log2.verify().unwrap();
}

/// A truncation below a segment a full disk left unnamed deletes it by its prepared name and
/// forgets it: appends go on in the segment before, and after a crash nothing of the deleted
/// segment comes back.
#[test]
fn a_truncation_deletes_an_unnamed_segment_by_its_prepared_name() {
    let disk = SimDisk::new(43);
    let (log, _, base) = roll_while_renames_fail(&disk);
    let unnamed = log.segments_snapshot()[1].disk_path();
    assert!(unnamed.to_string_lossy().contains(super::background::PREPARED_PREFIX));
    // Renames work again (the cut of the sealed segment before is a copy and a rename).
    disk.set_faults(SimFaults::default());
    log.truncate_from(base - 2).unwrap();
    assert_eq!(log.shared.namer.pending_base(), None);
    assert!(disk.peek(&unnamed).is_err(), "the unnamed file is gone");
    log.append(&payload(base - 2)).unwrap();
    let end = log.end_offset();
    assert_eq!(end, base - 1);
    disk.crash();
    drop(log);
    let log2 = Log::open(DIR, opts(&disk)).unwrap();
    assert_eq!(log2.recovery_report().segments_named, 0);
    check_records(&log2, end);
    log2.verify().unwrap();
}
