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

/// `opts` with buffered writes: a file grows by exactly what is written (direct writes grow
/// it by whole blocks, where a seal usually fits without growing it), so a seal needs space.
fn buffered_opts(disk: &SimDisk) -> LogOptions {
    LogOptions {
        direct_io: false,
        ..opts(disk)
    }
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

/// Appends one more record (durable on return with `durable`) and keeps its payload.
fn append_one(log: &Log, written: &mut Vec<Vec<u8>>, durable: bool) {
    let n = log.end_offset();
    written.push(vec![n as u8; BODY_BYTES]);
    let payload = &written[written.len() - 1];
    if durable {
        log.append(payload).unwrap();
    } else {
        log.append_nowait(&[payload]).unwrap();
    }
}

/// Drops `log`, crashes the disk (unsynced writes lost) and opens the log again.
fn reopen_after_crash(disk: &SimDisk, log: Log, opts: LogOptions) -> Log {
    drop(log);
    disk.crash();
    Log::open(DIR, opts).unwrap()
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
    let log = reopen_after_crash(&disk, log, opts(&disk));
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


#[test]
fn a_seal_without_space_stays_owed_and_the_next_roll_waits_for_room() {
    let disk = SimDisk::new(75);
    let log = Log::open(DIR, buffered_opts(&disk)).unwrap();
    let mut written = roll_without_seal(&log);
    // Not a byte more: the seal's index and footer do not fit.
    disk.set_faults(crate::io::SimFaults {
        capacity_bytes: Some(disk.used_bytes()),
        ..disk.faults()
    });
    log.pump().unwrap();
    assert!(log.poisoned().is_none(), "a full disk does not poison");
    assert!(!log.segments_snapshot()[0].is_sealed(), "still owed");
    log.flush().unwrap();
    // Appends into the second segment fail for lack of space, and lose nothing.
    let refused = log.append(&[1u8; BODY_BYTES]);
    assert!(matches!(refused, Err(Error::NoSpace { .. })), "{refused:?}");
    assert_reads(&log, &written);
    // With room again, the seal completes (here at the pump) and appends go on across the
    // next roll.
    disk.set_faults(crate::io::SimFaults::default());
    log.pump().unwrap();
    assert!(log.segments_snapshot()[0].is_sealed());
    while log.segment_count() < 3 {
        append_one(&log, &mut written, true);
    }
    log.flush().unwrap();
    assert_eq!(log.sealed_segments(u64::MAX).unwrap().len(), 2);
    assert_eq!(disk.peek(&first_segment()).unwrap(), sealed_in_time());
    let log = reopen_after_crash(&disk, log, buffered_opts(&disk));
    assert_reads(&log, &written);
}

#[test]
fn a_roll_whose_owed_seal_finds_no_space_is_undone_and_retried() {
    let disk = SimDisk::new(76);
    let log = Log::open(DIR, buffered_opts(&disk)).unwrap();
    let mut written = roll_without_seal(&log);
    // Fill the second segment up to its roll, with the first one's seal still owed.
    let second = log.segments_snapshot()[1].base_offset;
    while log.segment_count() < 3 {
        append_one(&log, &mut written, false);
    }
    let third = log.end_offset();
    // Room for the second segment's frames not yet written and the third's header block,
    // not for the first one's seal (its index and footer).
    let seg = log.segments_snapshot()[1].clone();
    assert_eq!(seg.base_offset, second);
    let unwritten = seg.read_state(|s| s.data_end) - disk.peek(&seg.path).unwrap().len() as u64;
    disk.set_faults(crate::io::SimFaults {
        capacity_bytes: Some(disk.used_bytes() + unwritten + super::segment::HEADER_REGION_BYTES),
        ..disk.faults()
    });
    // The barrier fails; the next call that takes the writer lock undoes the roll and says so.
    log.pump().unwrap();
    let refused = log.append(&[2u8; BODY_BYTES]);
    assert!(matches!(refused, Err(Error::NoSpace { .. })), "{refused:?}");
    assert!(log.poisoned().is_none());
    // The roll is undone: the second segment is active again, its records all there.
    assert_eq!(log.end_offset(), third);
    assert_eq!(log.segment_count(), 2);
    assert_reads(&log, &written);
    disk.set_faults(crate::io::SimFaults::default());
    append_one(&log, &mut written, true);
    log.flush().unwrap();
    assert_eq!(log.segment_count(), 3);
    assert_eq!(log.sealed_segments(u64::MAX).unwrap().len(), 2);
    let log = reopen_after_crash(&disk, log, buffered_opts(&disk));
    assert_reads(&log, &written);
}

#[test]
fn after_a_failed_seal_no_later_roll_may_name_a_segment() {
    let disk = SimDisk::new(77);
    let log = Log::open(DIR, opts(&disk)).unwrap();
    let written = roll_without_seal(&log);
    disk.set_faults(crate::io::SimFaults {
        fail_syncs: 1,
        ..disk.faults()
    });
    assert!(log.pump().is_err(), "the seal's fsync failed");
    assert!(log.poisoned().is_some());
    // What the next roll's barrier asks before it names another segment: never yes again
    // (a third unsealed segment would make recovery refuse the log).
    assert!(log.shared.sealer.finish().is_err());
    assert!(log.shared.sealer.finish().is_err());
    assert!(!log.segments_snapshot()[0].is_sealed());
    drop(log);
    disk.crash();
    disk.set_faults(crate::io::SimFaults::default());
    let log = Log::open(DIR, opts(&disk)).unwrap();
    assert_eq!(log.recovery_report().seals_completed, 1);
    assert_reads(&log, &written);
}
