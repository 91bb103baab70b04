//! The seal of a segment a roll left, after the roll (`sealer.rs`): records of the new segment
//! are acknowledged before it, and recovery completes a seal a crash interrupted, refusing
//! damage to the unsealed segment as corruption. On the simulated disk, driven: `sync` runs
//! the groups and the roll's barrier but not the seal, so every crash point is reachable.

use super::segment::Segment;
use super::*;
use crate::io::SimDisk;
use crate::Error;
use std::path::Path;

const DIR: &str = "/seal";
const BODY_BYTES: usize = 900;

/// Options shared by a log and its twin: a fixed log id and no node-local creation time, so
/// that the two seal byte-identical files.
fn opts(disk: &SimDisk) -> LogOptions {
    LogOptions {
        io: disk.io().into(),
        segment_size_bytes: 16 << 10,
        max_record_bytes: 4 << 10,
        preallocate: false,
        driven: true,
        log_id: Some(9),
        durable_hints: false,
        ..Default::default()
    }
}

/// Fills the first segment, rolls, and appends one record to the second; `sync` makes them
/// durable and runs the roll's barrier (the new segment named), not the seal. The payloads.
fn roll_without_seal(log: &Log) -> Vec<Vec<u8>> {
    let mut written = Vec::new();
    let mut append = |log: &Log| {
        let n = log.end_offset();
        let body = vec![n as u8; BODY_BYTES];
        let rec = NewRecord {
            term: 1,
            kind: EntryKind::Normal,
            timestamp_us: Some(n),
            payload: &body,
        };
        log.write_records(&[rec], false).unwrap();
        written.push(body);
    };
    while log.segment_count() < 2 {
        append(log);
    }
    append(log);
    log.sync().unwrap();
    written
}

fn first_segment() -> std::path::PathBuf {
    Segment::path_in(Path::new(DIR), 0)
}

/// The first segment as a log that sealed it in time holds it.
fn sealed_in_time() -> Vec<u8> {
    let disk = SimDisk::new(70);
    let log = Log::open(DIR, opts(&disk)).unwrap();
    roll_without_seal(&log);
    log.flush().unwrap();
    assert!(log.segments_snapshot()[0].is_sealed());
    disk.peek(&first_segment()).unwrap()
}

fn assert_reads(log: &Log, written: &[Vec<u8>]) {
    assert!(log.end_offset() >= written.len() as u64);
    for (i, p) in written.iter().enumerate() {
        assert_eq!(&log.read(i as u64).unwrap().payload[..], &p[..], "record {i}");
    }
}

#[test]
fn records_of_a_new_segment_are_acknowledged_before_the_old_one_is_sealed() {
    let disk = SimDisk::new(71);
    let log = Log::open(DIR, opts(&disk)).unwrap();
    let written = roll_without_seal(&log);
    assert_eq!(log.durable_end(), written.len() as u64);
    assert!(!log.segments_snapshot()[0].is_sealed(), "acknowledged before the seal");
    // The new segment's name is durable: a crash now keeps it.
    assert_eq!(log.commit_stats().roll_barriers, 2, "the first segment's and the roll's");
    // The pump runs the seal (the background thread's work on a driven log).
    log.pump().unwrap();
    assert!(log.segments_snapshot()[0].is_sealed());
    assert_eq!(disk.peek(&first_segment()).unwrap(), sealed_in_time());
}

#[test]
fn a_crash_before_the_seal_is_completed_by_recovery_with_the_same_bytes() {
    let disk = SimDisk::new(72);
    let log = Log::open(DIR, opts(&disk)).unwrap();
    let written = roll_without_seal(&log);
    drop(log);
    disk.crash();
    // Read-only inspection: notes the interrupted seal and changes nothing.
    let before = disk.peek(&first_segment()).unwrap();
    let found = verify::verify_dir(&disk.io(), Path::new(DIR), &opts(&disk)).unwrap();
    assert_eq!(found.pending.interrupted_seal, Some(first_segment()));
    assert_eq!(found.report.records, written.len() as u64);
    assert_eq!(disk.peek(&first_segment()).unwrap(), before);

    let log = Log::open(DIR, opts(&disk)).unwrap();
    assert_eq!(log.recovery_report().seals_completed, 1);
    assert_eq!(log.recovery_report().torn_bytes_truncated, 0);
    assert!(log.segments_snapshot()[0].is_sealed());
    assert_reads(&log, &written);
    assert_eq!(disk.peek(&first_segment()).unwrap(), sealed_in_time());
    // Durable: a crash right after the open keeps the seal.
    drop(log);
    disk.crash();
    let log = Log::open(DIR, opts(&disk)).unwrap();
    assert_eq!(log.recovery_report().seals_completed, 0);
    assert_reads(&log, &written);
}

#[test]
fn a_seal_torn_by_a_crash_is_rewritten_whole() {
    let disk = SimDisk::new(73);
    let log = Log::open(DIR, opts(&disk)).unwrap();
    let written = roll_without_seal(&log);
    let data_end = log.segments_snapshot()[0].read_state(|s| s.data_end);
    drop(log);
    disk.crash();
    // Half an index and no footer, as a crash in the middle of the seal's write leaves them.
    disk.poke(&first_segment(), data_end, &[0xA5; 300]).unwrap();
    let log = Log::open(DIR, opts(&disk)).unwrap();
    assert_eq!(log.recovery_report().seals_completed, 1);
    assert_reads(&log, &written);
    assert_eq!(disk.peek(&first_segment()).unwrap(), sealed_in_time());
}

#[test]
fn damage_to_an_unsealed_segment_before_the_last_is_corruption_and_nothing_is_cut() {
    // Its last frame damaged looks like a torn tail, but the next segment exists: the frame
    // was durable before it was named. Its first frame: damage in the middle.
    for last_frame in [true, false] {
        let disk = SimDisk::new(74);
        let log = Log::open(DIR, opts(&disk)).unwrap();
        roll_without_seal(&log);
        let seg = log.segments_snapshot()[0].clone();
        let (end, data_end) = seg.read_state(|s| (s.end_offset, s.data_end));
        let at = if last_frame {
            seg.locate(end - 1).unwrap() + 40
        } else {
            super::segment::HEADER_REGION_BYTES + 40
        };
        assert!(at < data_end);
        drop((seg, log));
        disk.crash();
        let mut byte = disk.peek(&first_segment()).unwrap()[at as usize];
        byte ^= 0x10;
        disk.poke(&first_segment(), at, &[byte]).unwrap();
        let before = disk.peek(&first_segment()).unwrap();
        let opened = Log::open(DIR, opts(&disk));
        assert!(
            matches!(opened, Err(Error::Corruption { .. })),
            "last_frame {last_frame}: {opened:?}"
        );
        let inspected = verify::verify_dir(&disk.io(), Path::new(DIR), &opts(&disk));
        assert!(matches!(inspected, Err(Error::Corruption { .. })));
        assert_eq!(disk.peek(&first_segment()).unwrap(), before, "nothing cut");
    }
}

