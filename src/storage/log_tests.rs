//! Unit tests of the local log on the simulated disk and on the real file system.

use super::*;
use crate::io::{SimDisk, SimFaults};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn sim_opts(disk: &SimDisk) -> LogOptions {
    LogOptions {
        io: disk.io().into(),
        segment_size_bytes: 16 << 10,
        max_record_bytes: 4 << 10,
        // No background preparation: keeps the simulated disk's operation order deterministic.
        preallocate: false,
        ..Default::default()
    }
}

/// `sim_opts` in driven mode: no threads; `pump` or a blocking wait does the disk work.
fn driven_opts(disk: &SimDisk) -> LogOptions {
    LogOptions {
        driven: true,
        ..sim_opts(disk)
    }
}

fn payload(offset: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (offset as usize * 31 + i) as u8).collect()
}

fn fill(log: &Log, n: u64, len: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let offset = log.end_offset();
            let p = payload(offset, len);
            assert_eq!(log.append(&p).unwrap(), offset, "record {i}");
            p
        })
        .collect()
}

#[test]
fn append_read_reopen_across_segments_on_real_fs() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        segment_size_bytes: 16 << 10,
        max_record_bytes: 4096,
        ..Default::default()
    };
    let log = Log::open(dir.path(), opts.clone()).unwrap();
    let written: Vec<Vec<u8>> = (0..300u64)
        .map(|i| payload(i, (i as usize * 37) % 900))
        .collect();
    for (i, p) in written.iter().enumerate() {
        assert_eq!(log.append(p).unwrap(), i as u64);
    }
    let range = log.append_batch(&[b"a".as_slice(), b"bb", b"ccc"]).unwrap();
    assert_eq!(range, 300..303);
    assert!(log.segment_count() > 5, "small segments roll");
    log.close().unwrap();
    let log = Log::open(dir.path(), opts).unwrap();
    assert_eq!(log.recovery_report().torn_bytes_truncated, 0);
    assert_eq!(log.end_offset(), 303);
    for (i, p) in written.iter().enumerate() {
        assert_eq!(log.read(i as u64).unwrap().payload.as_ref(), &p[..]);
    }
    let all: Vec<Record> = log.iter(0).collect::<Result<_>>().unwrap();
    assert_eq!(all.len(), 303);
    assert!(all.iter().enumerate().all(|(i, r)| r.offset == i as u64));
    assert_eq!(all[302].payload.as_ref(), b"ccc");
    let report = log.verify().unwrap();
    assert_eq!(report.records, 303);
    assert_eq!(
        report.sealed_segments + 1,
        log.segment_count(),
        "close left the tail active"
    );
    assert!(log.recovery_report().tail_records_scanned > 0);
    assert_eq!(log.append(b"after reopen").unwrap(), 303);
}

#[test]
fn second_open_is_refused_while_locked() {
    let disk = SimDisk::new(1);
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    assert!(matches!(
        Log::open("/l", sim_opts(&disk)),
        Err(Error::Locked { .. })
    ));
    drop(log);
    Log::open("/l", sim_opts(&disk)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let real = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert!(matches!(
        Log::open(dir.path(), LogOptions::default()),
        Err(Error::Locked { .. })
    ));
    drop(real);
}

#[test]
fn durable_append_survives_crash_and_syncs_once_per_group() {
    let disk = SimDisk::new(2);
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    let before = disk.sync_count();
    let written = fill(&log, 50, 100);
    assert!(
        disk.sync_count() - before >= 50,
        "every durable append fsyncs"
    );
    assert_eq!(log.durable_end(), 50);
    drop(log);
    disk.crash();
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    assert_eq!(log.end_offset(), 50);
    for (i, p) in written.iter().enumerate() {
        assert_eq!(log.read(i as u64).unwrap().payload.as_ref(), &p[..]);
    }
}

#[test]
fn manual_mode_keeps_only_a_prefix_of_unsynced_records() {
    for seed in 0..40 {
        let disk = SimDisk::new(seed);
        let opts = LogOptions {
            sync: SyncMode::Manual,
            ..sim_opts(&disk)
        };
        let log = Log::open("/l", opts.clone()).unwrap();
        let synced = fill(&log, 20, 300);
        log.sync().unwrap();
        let unsynced = fill(&log, 40, 300);
        drop(log);
        disk.crash();
        let log = Log::open("/l", opts).unwrap();
        let end = log.end_offset();
        assert!((20..=60).contains(&end), "seed {seed}: end {end}");
        let expected: Vec<&Vec<u8>> = synced.iter().chain(unsynced.iter()).collect();
        for offset in 0..end {
            assert_eq!(
                log.read(offset).unwrap().payload.as_ref(),
                &expected[offset as usize][..]
            );
        }
    }
}

#[test]
fn truncate_in_active_and_sealed_segments_then_append() {
    let disk = SimDisk::new(3);
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    fill(&log, 200, 500);
    let segments = log.segment_count();
    assert!(segments > 4);
    log.truncate_after(189).unwrap(); // inside the active segment (probably)
    assert_eq!(log.end_offset(), 190);
    log.truncate_after(40).unwrap(); // inside a sealed segment
    assert_eq!(log.end_offset(), 41);
    assert!(log.segment_count() < segments);
    assert!(matches!(log.read(41), Err(Error::OutOfRange { .. })));
    let fresh = log.append(b"after truncate").unwrap();
    assert_eq!(fresh, 41);
    fill(&log, 100, 500);
    drop(log);
    disk.crash();
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    assert_eq!(log.end_offset(), 142);
    assert_eq!(log.read(41).unwrap().payload.as_ref(), b"after truncate");
    assert_eq!(
        log.read(40).unwrap().payload.as_ref(),
        &payload(40, 500)[..]
    );
    log.verify().unwrap();
    log.truncate_from(0).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (0, 0));
    assert_eq!(log.append(b"x").unwrap(), 0);
}

#[test]
fn purge_moves_start_and_deletes_whole_sealed_segments() {
    let disk = SimDisk::new(4);
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    fill(&log, 200, 500);
    let size = log.size_bytes();
    let outcome = log.purge_before(100).unwrap();
    assert!(outcome.segments_removed > 0);
    assert_eq!(log.size_bytes(), size - outcome.bytes_removed);
    assert_eq!(log.start_offset(), 100);
    assert!(matches!(
        log.read(99),
        Err(Error::BelowFloor {
            offset: 99,
            first_available: 100
        })
    ));
    assert_eq!(
        log.read(100).unwrap().payload.as_ref(),
        &payload(100, 500)[..]
    );
    assert_eq!(log.iter(100).count(), 100);
    drop(log);
    disk.crash();
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    assert_eq!(log.start_offset(), 100);
    assert_eq!(log.end_offset(), 200);
    // Purging everything keeps the last segment; the log stays appendable.
    log.purge_before(u64::MAX).unwrap();
    assert_eq!(log.start_offset(), 200);
    assert_eq!(log.append(b"next").unwrap(), 200);
}

#[test]
fn retention_by_size_and_age() {
    let disk = SimDisk::new(5);
    let opts = LogOptions {
        retention_bytes: Some(64 << 10),
        ..sim_opts(&disk)
    };
    let log = Log::open("/l", opts).unwrap();
    fill(&log, 600, 500);
    assert!(
        log.size_bytes() <= (64 << 10) + (16 << 10) + 4096,
        "size {}",
        log.size_bytes()
    );
    assert!(log.start_offset() > 0);
    drop(log);
    let disk = SimDisk::new(6);
    let opts = LogOptions {
        retention_age_ms: Some(60_000),
        ..sim_opts(&disk)
    };
    let log = Log::open("/l", opts).unwrap();
    let old_us = now_us() - 3_600_000_000;
    for _ in 0..100 {
        log.append_records(&[NewRecord {
            term: 0,
            kind: EntryKind::Normal,
            timestamp_us: Some(old_us),
            payload: &[1; 500],
        }])
        .unwrap();
    }
    fill(&log, 100, 500);
    assert!(
        log.start_offset() >= 60,
        "old segments purged, start {}",
        log.start_offset()
    );
    assert!(log.read(150).is_ok());
}

#[test]
fn failed_fsync_poisons_and_reopen_keeps_acknowledged() {
    let disk = SimDisk::new(7);
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    let acked = fill(&log, 10, 200);
    disk.set_faults(SimFaults {
        fail_syncs: 1,
        ..Default::default()
    });
    let err = log.append(b"doomed").unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert!(log.poisoned().is_some());
    assert!(matches!(log.append(b"after"), Err(Error::Poisoned { .. })));
    assert!(matches!(log.sync(), Err(Error::Poisoned { .. })));
    drop(log);
    disk.crash();
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    assert!(log.end_offset() >= 10);
    for (i, p) in acked.iter().enumerate() {
        assert_eq!(log.read(i as u64).unwrap().payload.as_ref(), &p[..]);
    }
    assert_eq!(log.append(b"fine again").unwrap(), log.end_offset() - 1);
}

#[test]
fn failed_write_poisons() {
    let disk = SimDisk::new(8);
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    fill(&log, 3, 10);
    disk.set_faults(SimFaults {
        fail_writes: 1,
        ..Default::default()
    });
    assert!(matches!(log.append(b"x"), Err(Error::Poisoned { .. })));
    assert!(matches!(log.append(b"y"), Err(Error::Poisoned { .. })));
}

#[test]
fn enospc_fails_cleanly_and_recovers_when_space_returns() {
    let disk = SimDisk::new(9);
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    let acked = fill(&log, 20, 500);
    disk.set_faults(SimFaults {
        capacity_bytes: Some(40 << 10),
        ..Default::default()
    });
    let mut failures = 0;
    for i in 0..200u64 {
        match log.append(&payload(1000 + i, 500)) {
            Ok(_) => {}
            Err(Error::NoSpace { .. }) => failures += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(failures > 0);
    assert!(log.poisoned().is_none());
    let end = log.end_offset();
    disk.set_faults(SimFaults::default());
    let next = log.append(b"space again").unwrap();
    assert_eq!(next, end);
    drop(log);
    disk.crash();
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    for (i, p) in acked.iter().enumerate() {
        assert_eq!(log.read(i as u64).unwrap().payload.as_ref(), &p[..]);
    }
    assert_eq!(log.read(next).unwrap().payload.as_ref(), b"space again");
    log.verify().unwrap();
}

/// A log without an active segment (here: its first segment's name never became durable)
/// on a full disk still opens, for its readers; the segment `open` could not create comes with
/// the first append once there is space.
#[test]
fn a_log_opens_on_a_full_disk_without_its_next_segment() {
    let disk = SimDisk::new(12);
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    let first = Path::new("/l/00000000000000000000.seg");
    assert!(disk.peek(first).is_ok(), "open made the first segment");
    drop(log);
    disk.io().remove(first).unwrap();
    disk.io().sync_dir(Path::new("/l")).unwrap();
    disk.set_faults(SimFaults {
        capacity_bytes: Some(disk.used_bytes()),
        ..Default::default()
    });
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    assert_eq!(log.end_offset(), 0);
    assert!(matches!(log.append(b"no room"), Err(Error::NoSpace { .. })));
    assert!(log.poisoned().is_none());
    disk.set_faults(SimFaults::default());
    assert_eq!(log.append(b"room again").unwrap(), 0);
    drop(log);
    disk.crash();
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    assert_eq!(log.read(0).unwrap().payload.as_ref(), b"room again");
    log.verify().unwrap();
}

#[test]
fn tail_reader_waits_for_durable_records() {
    let disk = SimDisk::new(10);
    let opts = LogOptions {
        sync: SyncMode::Manual,
        ..sim_opts(&disk)
    };
    let log = Log::open("/l", opts).unwrap();
    let mut tail = log.tail(0);
    assert!(matches!(
        tail.next_timeout(Duration::from_millis(1)),
        Err(Error::Timeout { offset: 0 })
    ));
    log.append(b"written, not durable").unwrap();
    assert!(matches!(
        tail.next_timeout(Duration::from_millis(1)),
        Err(Error::Timeout { offset: 0 })
    ));
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for i in 0..100u64 {
                log.append(&i.to_le_bytes()).unwrap();
                log.sync().unwrap();
            }
        })
    };
    assert_eq!(
        tail.next_timeout(Duration::from_secs(10))
            .unwrap()
            .payload
            .as_ref(),
        b"written, not durable"
    );
    for i in 0..100u64 {
        let r = tail.next_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(r.offset, i + 1);
        assert_eq!(r.payload.as_ref(), &i.to_le_bytes());
    }
    writer.join().unwrap();
}

#[test]
fn concurrent_durable_appenders_share_fsyncs() {
    let disk = SimDisk::new(11);
    let opts = LogOptions {
        segment_size_bytes: 1 << 20,
        // Only the appends' fsyncs are counted: no background superblock write (which a
        // loaded machine's slow appends would otherwise let in, and push the count past).
        superblock_interval_ms: 3_600_000,
        ..sim_opts(&disk)
    };
    let log = Log::open("/l", opts).unwrap();
    // Open created the segment (its header and directory entry synced); one append first, so
    // that only the appends' own fsyncs are counted below.
    assert_eq!(log.append(b"first").unwrap(), 0);
    let before = disk.sync_count();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..200u64)
                    .map(|i| (log.append(&[t as u8; 64]).unwrap(), t, i))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut offsets: Vec<u64> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .map(|x| x.0)
        .collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (1..1601).collect::<Vec<_>>());
    assert_eq!(log.durable_end(), 1601);
    let syncs = disk.sync_count() - before;
    assert!(
        syncs <= 1600,
        "never more than one fsync per append ({syncs})"
    );
}

#[test]
fn oversized_and_invalid_arguments_are_rejected() {
    let disk = SimDisk::new(12);
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    assert!(matches!(
        log.append(&vec![0u8; (4 << 10) + 1]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(log.sync_to(0), Err(Error::OutOfRange { .. })));
    let bad = LogOptions {
        segment_size_bytes: 100,
        ..sim_opts(&disk)
    };
    assert!(matches!(
        Log::open("/m", bad),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(log.end_offset(), 0);
}

#[test]
fn restart_at_continues_an_emptied_log_at_a_later_offset_and_survives_a_crash() {
    let disk = SimDisk::new(11);
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    fill(&log, 300, 100); // several segments
    assert!(
        matches!(log.restart_at(10), Err(Error::InvalidArgument(_))),
        "below the end"
    );
    log.restart_at(1000).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (1000, 1000));
    assert!(matches!(
        log.read(5),
        Err(Error::BelowFloor {
            first_available: 1000,
            ..
        })
    ));
    assert_eq!(log.append(b"after").unwrap(), 1000);
    drop(log);
    disk.crash();
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (1000, 1001));
    assert_eq!(log.read(1000).unwrap().payload.as_ref(), b"after");
    assert_eq!(log.segment_count(), 1, "old segments are gone");
    // An empty log restarted and reopened before any append.
    log.restart_at(5000).unwrap();
    drop(log);
    disk.crash();
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (5000, 5000));
    assert_eq!(log.append(b"x").unwrap(), 5000);
}

#[test]
fn frames_of_one_replica_are_stored_verbatim_by_another() {
    let opts = |disk: &SimDisk| LogOptions {
        log_id: Some(77),
        durable_hints: false,
        ..sim_opts(disk)
    };
    let (da, db) = (SimDisk::new(21), SimDisk::new(22));
    let a = Log::open("/a", opts(&da)).unwrap();
    let b = Log::open("/b", opts(&db)).unwrap();
    fill(&a, 200, 150); // crosses segment rolls
    let frames: Vec<Bytes> = a.iter(0).map(|r| r.unwrap().frame).collect();
    assert!(
        matches!(
            b.append_frames(&frames[1..3]),
            Err(Error::InvalidArgument(_))
        ),
        "gap"
    );
    let mut bad = frames[0].to_vec();
    bad[60] ^= 1;
    assert!(matches!(
        b.append_frames(&[Bytes::from(bad)]),
        Err(Error::InvalidArgument(_))
    ));
    for chunk in frames.chunks(17) {
        b.append_frames(chunk).unwrap();
    }
    b.sync().unwrap();
    for (ra, rb) in a.iter(0).zip(b.iter(0)) {
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.frame, rb.frame, "offset {}", ra.offset);
        assert_eq!(ra.timestamp_us, rb.timestamp_us);
    }
    assert_eq!(b.end_offset(), 200);
    // A log of another identity refuses them.
    let dc = SimDisk::new(23);
    let c = Log::open("/c", sim_opts(&dc)).unwrap();
    assert!(matches!(
        c.append_frames(&frames[..1]),
        Err(Error::InvalidArgument(_))
    ));
    // The identity is checked at open.
    drop(b);
    let wrong = LogOptions {
        log_id: Some(78),
        ..opts(&db)
    };
    assert!(matches!(
        Log::open("/b", wrong),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn sealed_segments_are_identical_across_replicas_and_adoptable_by_a_new_one() {
    use crate::storage::manifest::verify_segment_file;
    let opts = |disk: &SimDisk| LogOptions {
        log_id: Some(77),
        durable_hints: false,
        ..sim_opts(disk)
    };
    let (da, db) = (SimDisk::new(31), SimDisk::new(32));
    let a = Log::open("/a", opts(&da)).unwrap();
    let b = Log::open("/b", opts(&db)).unwrap();
    let written = fill(&a, 400, 120);
    let frames: Vec<Bytes> = a.iter(0).map(|r| r.unwrap().frame).collect();
    b.append_frames(&frames).unwrap();
    b.sync().unwrap();
    // The last roll's seal may still be owed (`flush` completes it).
    for l in [&a, &b] {
        l.flush().unwrap();
    }
    let manifest = a.sealed_segments(a.end_offset()).unwrap();
    assert!(manifest.len() >= 3, "{manifest:?}");
    assert_eq!(
        b.sealed_segments(b.end_offset()).unwrap(),
        manifest,
        "same files on both"
    );

    // A new replica (on its own disk) gets copies of A's sealed files and adopts them.
    let dc = SimDisk::new(33);
    let io = dc.io();
    io.create_dir_all(Path::new("/stage")).unwrap();
    let mut staged = Vec::new();
    for info in &manifest {
        let bytes = da
            .peek(&Segment::path_in(Path::new("/a"), info.base_offset))
            .unwrap();
        let path = PathBuf::from(format!("/stage/{}", info.base_offset));
        let f = io.open(&path, true).unwrap();
        f.write_at_sync(&bytes, 0).unwrap();
        verify_segment_file(&io, &path, info, 77).unwrap();
        staged.push((*info, path));
    }
    // A damaged copy is refused.
    let bad = &staged[1];
    let mut bytes = dc.peek(&bad.1).unwrap();
    bytes[5000] ^= 1;
    dc.poke(&bad.1, 5000, &bytes[5000..5001]).unwrap();
    assert!(matches!(
        verify_segment_file(&io, &bad.1, &bad.0, 77),
        Err(Error::Corruption { .. })
    ));
    dc.poke(&bad.1, 5000, &[bytes[5000] ^ 1]).unwrap();

    io.sync_dir(Path::new("/stage")).unwrap();
    let c = Log::open("/c", opts(&dc)).unwrap();
    c.append(b"local, to be replaced").unwrap();
    c.adopt_sealed(&staged).unwrap();
    let end = manifest.last().unwrap().end_offset;
    assert_eq!((c.start_offset(), c.end_offset()), (0, end));
    for (i, p) in written.iter().enumerate().take(end as usize) {
        assert_eq!(c.read(i as u64).unwrap().payload.as_ref(), &p[..]);
    }
    assert_eq!(c.append(b"next").unwrap(), end);
    drop(c);
    dc.crash();
    let c = Log::open("/c", opts(&dc)).unwrap();
    assert_eq!(c.end_offset(), end + 1);
    assert_eq!(c.sealed_segments(end).unwrap(), manifest);
    c.verify().unwrap();
}

#[test]
fn term_starts_are_found_by_binary_search() {
    let disk = SimDisk::new(41);
    let log = Log::open("/t", sim_opts(&disk)).unwrap();
    let terms = [1u64, 1, 1, 2, 2, 5, 5, 5, 5, 7];
    for (i, &t) in terms.iter().enumerate() {
        let rec = NewRecord {
            term: t,
            kind: EntryKind::Normal,
            timestamp_us: None,
            payload: &[i as u8],
        };
        log.append_records(&[rec]).unwrap();
    }
    assert_eq!(
        log.term_starts(0, 10).unwrap(),
        vec![(1, 0), (2, 3), (5, 5), (7, 9)]
    );
    assert_eq!(log.term_starts(4, 8).unwrap(), vec![(2, 4), (5, 5)]);
    assert_eq!(log.term_starts(3, 3).unwrap(), vec![]);
}

/// Driven mode: nothing reaches the disk until `pump` (or a blocking wait) runs it, so a
/// crash before the pump loses exactly the unpumped appends and nothing else.
#[test]
fn driven_log_writes_only_when_pumped() {
    let disk = SimDisk::new(40);
    let opts = driven_opts(&disk);
    let dir = Path::new("/driven");
    let log = Log::open(dir, opts.clone()).unwrap();
    // A blocking append does the flusher's work itself.
    assert_eq!(log.append(b"first").unwrap(), 0);
    assert_eq!(log.durable_end(), 1);
    let syncs = disk.sync_count();
    let r = log.append_nowait(&[&b"second"[..], &b"third"[..]]).unwrap();
    assert_eq!(r, 1..3);
    assert_eq!(
        log.durable_end(),
        1,
        "no thread made it durable behind our back"
    );
    assert_eq!(disk.sync_count(), syncs, "nothing synced before the pump");
    log.pump().unwrap();
    assert_eq!(log.durable_end(), 3);
    log.append_nowait(&[b"lost"]).unwrap();
    drop(log);
    disk.crash();
    let log = Log::open(dir, opts).unwrap();
    assert_eq!(log.end_offset(), 3, "the unpumped append was never durable");
    assert_eq!(&log.read(2).unwrap().payload[..], b"third");
}

#[test]
fn driven_log_refuses_io_uring() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        driven: true,
        io: crate::IoBackend::IoUring,
        ..Default::default()
    };
    match Log::open(dir.path(), opts) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("driven"), "{m}"),
        // A kernel that refuses io_uring fails the open with its own error.
        Err(Error::Io { .. }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// (base, end, size) of every sealed segment: where a log's segments begin and end.
fn segment_bounds(l: &Log) -> Vec<(u64, u64, u64)> {
    // The last roll's seal may still be owed (`flush` completes it).
    l.flush().unwrap();
    l.sealed_segments(u64::MAX)
        .unwrap()
        .iter()
        .map(|s| (s.base_offset, s.end_offset, s.size_bytes))
        .collect()
}

/// A frame that sealed a segment and was then truncated must not leave its mark: the frames
/// that replace it land exactly where they land on a log that never held it (replicas seal
/// identical segments). Once sealed only because the next frame did not fit, a segment kept
/// the boundary of a frame that no longer existed.
#[test]
fn a_truncated_frame_leaves_no_mark_on_segment_boundaries() {
    let disk = SimDisk::new(41);
    let a = Log::open("/a", sim_opts(&disk)).unwrap();
    let b = Log::open("/b", sim_opts(&disk)).unwrap();
    let big = vec![7u8; 4 << 10];
    // Fill both alike until the big record would seal b's segment (then truncate it there).
    loop {
        let x = b.end_offset();
        let before = segment_bounds(&b).len();
        b.append(&big).unwrap();
        let rolled = segment_bounds(&b).len() > before;
        b.truncate_from(x).unwrap();
        if rolled {
            break;
        }
        assert_eq!(a.append(&payload(x, 1000)).unwrap(), x);
        assert_eq!(b.append(&payload(x, 1000)).unwrap(), x);
    }
    // Small records follow on both: they must land in the same segments on both logs.
    for _ in 0..100 {
        let x = a.end_offset();
        assert_eq!(a.append(&payload(x, 300)).unwrap(), x);
        assert_eq!(b.append(&payload(x, 300)).unwrap(), x);
    }
    assert!(segment_bounds(&a).len() >= 2, "{:?}", segment_bounds(&a));
    assert_eq!(segment_bounds(&a), segment_bounds(&b));
}

/// The same after a crash: a frame that was never durable must not decide where a segment
/// ends (the log that lost it continues exactly like one that never held it).
#[test]
fn a_lost_unsynced_frame_leaves_no_mark_on_segment_boundaries() {
    // One disk each: b's crashes must not touch a.
    let (disk_a, disk) = (SimDisk::new(42), SimDisk::new(43));
    let opts = driven_opts(&disk);
    let a_opts = driven_opts(&disk_a);
    let a = Log::open("/a", a_opts).unwrap();
    let mut b = Log::open("/b", opts.clone()).unwrap();
    let big = vec![7u8; 4 << 10];
    for round in 0..60 {
        let x = a.end_offset();
        assert_eq!(a.append(&payload(x, 700)).unwrap(), x);
        assert_eq!(b.append(&payload(x, 700)).unwrap(), x);
        if round % 7 == 3 {
            // b takes a large record that never becomes durable, then crashes.
            b.append_nowait(&[&big[..]]).unwrap();
            drop(b);
            disk.crash();
            b = Log::open("/b", opts.clone()).unwrap();
            if b.end_offset() == x + 2 {
                // It filled its segment, whose seal made it durable: Raft truncates it.
                b.truncate_from(x + 1).unwrap();
            }
            assert_eq!(b.end_offset(), x + 1);
        }
    }
    assert!(segment_bounds(&a).len() >= 2, "{:?}", segment_bounds(&a));
    assert_eq!(segment_bounds(&a), segment_bounds(&b));
}

/// A truncated record's timestamp does not stay behind in the segment's footer: a log that
/// held and lost it seals a file byte-identical to one that never held it.
#[test]
fn a_truncated_record_leaves_no_timestamp_in_the_footer() {
    let (disk_a, disk_b) = (SimDisk::new(44), SimDisk::new(45));
    let opts = |d: &SimDisk| LogOptions {
        log_id: Some(7),
        durable_hints: false,
        ..sim_opts(d)
    };
    let a = Log::open("/l", opts(&disk_a)).unwrap();
    let b = Log::open("/l", opts(&disk_b)).unwrap();
    let rec = |ts: u64, payload: &'static [u8]| NewRecord {
        term: 1,
        kind: EntryKind::Normal,
        timestamp_us: Some(ts),
        payload,
    };
    let body = &[5u8; 900][..];
    for i in 0..5 {
        a.append_records(&[rec(i, body)]).unwrap();
        b.append_records(&[rec(i, body)]).unwrap();
    }
    b.append_records(&[rec(1 << 50, b"from a deposed leader")])
        .unwrap();
    b.truncate_from(5).unwrap();
    // A roll adds the next segment at once; its seal follows (the background thread).
    while a.segment_count() < 2 {
        let i = a.end_offset();
        a.append_records(&[rec(i, body)]).unwrap();
        b.append_records(&[rec(i, body)]).unwrap();
    }
    for l in [&a, &b] {
        // The roll's seal may still be owed (`flush` completes it).
        l.flush().unwrap();
    }
    let path = crate::storage::segment::Segment::path_in(Path::new("/l"), 0);
    let (fa, fb) = (disk_a.peek(&path).unwrap(), disk_b.peek(&path).unwrap());
    let first_diff = fa.iter().zip(&fb).position(|(x, y)| x != y);
    assert!(fa == fb, "lengths {} {}, first difference at {first_diff:?}", fa.len(), fb.len());
}

/// An active segment that is already full when appends resume (its seal failed, or the
/// process died between the frame that filled it and the seal) is sealed before the next
/// frame goes in: it ends where it ends on a log that sealed it at once.
#[test]
fn an_active_segment_found_full_is_sealed_before_the_next_frame() {
    let (disk_a, disk_b) = (SimDisk::new(46), SimDisk::new(47));
    let a = Log::open("/l", sim_opts(&disk_a)).unwrap();
    // b first runs with a smaller record limit, so nothing seals it where a seals.
    let small_limit = LogOptions {
        max_record_bytes: 1 << 10,
        ..sim_opts(&disk_b)
    };
    let b = Log::open("/l", small_limit).unwrap();
    // A roll adds the next segment at once; its seal follows (the background thread).
    while a.segment_count() < 2 {
        let x = a.end_offset();
        a.append(&payload(x, 700)).unwrap();
        b.append(&payload(x, 700)).unwrap();
    }
    // Past a's seal point, b's segment is still active (and full by a's rule).
    assert!(b.sealed_segments(u64::MAX).unwrap().is_empty());
    drop(b);
    let b = Log::open("/l", sim_opts(&disk_b)).unwrap();
    for _ in 0..30 {
        let x = b.end_offset();
        a.append(&payload(x, 700)).unwrap();
        b.append(&payload(x, 700)).unwrap();
    }
    assert_eq!(segment_bounds(&a), segment_bounds(&b));
}

/// The iterator's read-ahead (up to 1 MiB past the frame it needs) must not fail when the
/// file ends before the log's data end, as it does for a moment when a follower's
/// uncommitted tail is truncated under a reader: the frames still in the file are read, and
/// only a frame that is really cut short is an error. (CI: "short read" applying a committed
/// entry on a follower during a leader change.)
#[test]
fn iterator_read_ahead_tolerates_a_file_shorter_than_the_data_end() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        io: crate::IoBackend::Posix,
        preallocate: false,
        ..Default::default()
    };
    let log = Log::open(dir.path(), opts).unwrap();
    let written = fill(&log, 20, 1000);
    let seg = log.segments_snapshot()[0].clone();
    assert!(!seg.is_sealed());
    // Where record 10 starts: the file is cut there behind the log's back.
    let cut = crate::storage::segment::HEADER_REGION_BYTES
        + 10 * crate::storage::record::frame_len(1000) as u64;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg.path)
        .unwrap();
    file.set_len(cut).unwrap();
    // A fresh iterator reads records 0..10 from the file though its read-ahead wanted more.
    let mut it = log.iter(0);
    for (i, want) in written.iter().enumerate().take(10) {
        let rec = it.next().unwrap().unwrap();
        assert_eq!((rec.offset, &rec.payload[..]), (i as u64, &want[..]));
    }
    // Record 10 is gone from the file: an error, not a silent end.
    assert!(matches!(it.next(), Some(Err(_))));
}

/// A misdirected write that lands in the zeros after an active segment's header is covered by
/// no frame checksum: verify and recovery must still refuse it, or the seal would write a
/// whole-file checksum over the damage (found by the simulation, seed 7979391600331021945).
#[test]
fn damage_in_the_active_segments_header_padding_is_corruption() {
    let disk = SimDisk::new(11);
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    fill(&log, 5, 100);
    let seg = Segment::path_in(Path::new("/l"), 0);
    disk.poke(&seg, 1536, &[0xc6, 0xf3]).unwrap();
    match log.verify() {
        Err(Error::Corruption { file_offset, .. }) => assert_eq!(file_offset, 0),
        other => panic!("verify missed the damage: {other:?}"),
    }
    drop(log);
    match Log::open("/l", sim_opts(&disk)) {
        Err(Error::Corruption { segment, .. }) => assert_eq!(segment, seg),
        other => panic!("recovery accepted the damage: {other:?}"),
    }
}

/// Options of a replicated log whose watermark is persisted only when asked (no background
/// write within a test's lifetime).
fn replicated_opts(disk: &SimDisk) -> LogOptions {
    LogOptions {
        log_id: Some(77),
        durable_hints: false,
        superblock_interval_ms: 3_600_000,
        segment_size_bytes: 1 << 20,
        ..sim_opts(disk)
    }
}

/// Flips a byte in the payload of the last record of the (unsealed) segment at 0.
fn damage_last_record(disk: &SimDisk, dir: &str) {
    let seg = Segment::path_in(Path::new(dir), 0);
    // The file may end in zeros (direct writes fill whole blocks): the last non-zero byte is
    // in the last frame.
    let bytes = disk.peek(&seg).unwrap();
    let at = bytes.iter().rposition(|&b| b != 0).unwrap();
    disk.poke(&seg, at as u64, &[bytes[at] ^ 0x40]).unwrap();
}

/// Issue 12, "clean stop": a record acknowledged after the last background watermark write is
/// above the on-disk watermark unless the stop persists it; damaged later, recovery would take
/// it for a torn tail and cut it silently. `persist_watermark` through a clone (what
/// `Replica::shutdown` does) and `close` leave none above it.
#[test]
fn clean_stop_persists_the_watermark_so_damage_is_corruption_not_a_cut() {
    // Without a clean stop (the old `Node::shutdown`): the damaged record is silently cut.
    let disk = SimDisk::new(41);
    let log = Log::open("/l", replicated_opts(&disk)).unwrap();
    fill(&log, 20, 100);
    drop(log);
    damage_last_record(&disk, "/l");
    let log = Log::open("/l", replicated_opts(&disk)).unwrap();
    assert_eq!(log.end_offset(), 19, "the counterfactual: a silent cut");
    assert!(log.recovery_report().torn_bytes_truncated > 0);
    drop(log);

    // `persist_watermark` through one clone while another lives on.
    let disk = SimDisk::new(42);
    let log = Log::open("/l", replicated_opts(&disk)).unwrap();
    fill(&log, 20, 100);
    let other = log.clone();
    other.persist_watermark().unwrap();
    drop((log, other));
    damage_last_record(&disk, "/l");
    match Log::open("/l", replicated_opts(&disk)) {
        Err(Error::Corruption { record_offset, .. }) => assert_eq!(record_offset, Some(19)),
        other => panic!("damage to an acknowledged record was not refused: {other:?}"),
    }

    // `close` of a replicated log: the watermark, and no seal (replicas seal at one frame).
    let disk = SimDisk::new(43);
    let log = Log::open("/l", replicated_opts(&disk)).unwrap();
    fill(&log, 20, 100);
    log.close().unwrap();
    let log = Log::open("/l", replicated_opts(&disk)).unwrap();
    assert_eq!(log.sealed_segments(u64::MAX).unwrap(), vec![], "not sealed");
    assert_eq!(log.recovery_report().tail_records_scanned, 20);
    drop(log);
    damage_last_record(&disk, "/l");
    assert!(matches!(
        Log::open("/l", replicated_opts(&disk)),
        Err(Error::Corruption { .. })
    ));
}

/// A local log's `close` seals nothing: open, append, close N times leaves one segment file,
/// appended to in place, every record readable and `verify` clean; a drop without close (a
/// crash) in between changes nothing of that.
#[test]
fn close_and_reopen_continue_the_active_segment() {
    let disk = SimDisk::new(44);
    let mut written = Vec::new();
    for round in 0..12u64 {
        let log = Log::open("/l", sim_opts(&disk)).unwrap();
        assert_eq!(log.end_offset(), written.len() as u64, "round {round}");
        assert_eq!(log.recovery_report().torn_bytes_truncated, 0);
        written.extend(fill(&log, 3, 100));
        if round % 3 == 2 {
            drop(log);
            disk.crash();
        } else {
            log.close().unwrap();
        }
    }
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    assert_eq!(log.segment_count(), 1, "one file, continued");
    assert_eq!(log.sealed_segments(u64::MAX).unwrap(), vec![]);
    let names = disk.io().list(Path::new("/l")).unwrap();
    let files = names.iter().filter(|n| n.ends_with(".seg")).count();
    assert_eq!(files, 1, "{names:?}");
    assert_eq!(log.recovery_report().tail_records_scanned, 36);
    for (i, p) in written.iter().enumerate() {
        assert_eq!(log.read(i as u64).unwrap().payload.as_ref(), &p[..]);
    }
    assert_eq!(log.verify().unwrap().records, 36);
    drop(log);
    let dir = crate::storage::verify_dir(&disk.io(), Path::new("/l"), &sim_opts(&disk)).unwrap();
    assert!(dir.pending.is_empty(), "{:?}", dir.pending);
    assert_eq!(dir.report.records, 36);
}

/// The same on the real file system with preallocation and O_DIRECT (the reopened segment's
/// first partly filled block is read back for the next direct write).
#[test]
fn close_and_reopen_on_real_fs_keep_one_segment() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        segment_size_bytes: 1 << 20,
        max_record_bytes: 4096,
        ..Default::default()
    };
    let mut written = Vec::new();
    for _ in 0..10 {
        let log = Log::open(dir.path(), opts.clone()).unwrap();
        assert_eq!(log.recovery_report().torn_bytes_truncated, 0);
        written.extend(fill(&log, 5, 333));
        log.close().unwrap();
    }
    let segs = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count();
    assert_eq!(segs, 1);
    let log = Log::open(dir.path(), opts).unwrap();
    for (i, p) in written.iter().enumerate() {
        assert_eq!(log.read(i as u64).unwrap().payload.as_ref(), &p[..]);
    }
    assert_eq!(log.verify().unwrap().records, 50);
}

#[test]
fn retention_stops_at_pins_and_readers_below_the_floor_get_a_typed_error() {
    let disk = SimDisk::new(17);
    let opts = LogOptions {
        retention_bytes: Some(32 << 10),
        ..sim_opts(&disk)
    };
    let log = Log::open("/l", opts).unwrap();
    let mut pin = log.pin(0);
    fill(&log, 400, 500);
    // The pin at 0 holds every segment, whatever the retention cut.
    assert_eq!(log.start_offset(), 0);
    let cut = log.retention_cut().expect("over the size limit");
    assert!(cut > 0);
    // An iterator started before retention moves on.
    let mut early = log.iter(0);
    assert_eq!(early.next().unwrap().unwrap().offset, 0);
    // Moved into the middle of the log: only whole sealed segments ending at or below it go.
    pin.move_to(cut / 2);
    log.apply_retention().unwrap();
    let start = log.start_offset();
    assert!(start <= cut / 2, "start {start} passed the pin {}", cut / 2);
    assert!(log.read(start).is_ok());
    assert!(
        matches!(
            log.read(start.saturating_sub(1)),
            Err(Error::BelowFloor { first_available, .. }) if first_available == start
        ) || start == 0
    );
    drop(pin);
    log.apply_retention().unwrap();
    let start = log.start_offset();
    assert_eq!(start, cut, "without pins retention cuts where size says");
    // A reader asking below the floor, or one that falls below it, is told where data starts.
    match log.iter(0).next() {
        Some(Err(Error::BelowFloor {
            offset: 0,
            first_available,
        })) => assert_eq!(first_available, start),
        other => panic!("expected BelowFloor, got {other:?}"),
    }
    let mut fell_below = false;
    for rec in early.by_ref() {
        match rec {
            Ok(_) => {}
            Err(Error::BelowFloor {
                first_available, ..
            }) => {
                assert_eq!(first_available, start);
                fell_below = true;
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(fell_below, "an iterator below the floor was not told");
    assert!(matches!(
        log.tail(0)
            .next_timeout(std::time::Duration::from_millis(10)),
        Err(Error::BelowFloor { .. })
    ));
    // A lease holds a segment for a while (a bulk transfer), then lets retention go on.
    let before = log.start_offset();
    log.lease_pin(before, std::time::Duration::from_secs(60));
    fill(&log, 200, 500);
    log.apply_retention().unwrap();
    assert!(log.retention_cut().is_some_and(|cut| cut > before));
    assert_eq!(log.start_offset(), before, "a leased segment was deleted");
    // A finished transfer ends its lease (here at once): retention goes on.
    log.shorten_lease_pin(before, std::time::Duration::ZERO);
    log.apply_retention().unwrap();
    assert!(
        log.start_offset() > before,
        "a finished transfer still holds retention"
    );
}

#[test]
fn an_iterator_across_a_truncation_reads_the_records_that_replaced_the_cut_ones() {
    // A follower's reader may be inside a sealed segment when a conflicting suffix is cut and
    // replaced: it must return the new records at the reused offsets, never the old ones its
    // segment map still holds.
    let disk = SimDisk::new(11);
    let log = Log::open("/l", sim_opts(&disk)).unwrap();
    fill(&log, 200, 500);
    let mut it = log.iter(0);
    for expected in 0..20 {
        assert_eq!(it.next().unwrap().unwrap().offset, expected);
    }
    assert!(log.segments_snapshot()[0].is_sealed(), "the reader is in a sealed segment");
    log.truncate_from(25).unwrap();
    let fresh: Vec<Vec<u8>> = (0..50).map(|i| format!("new {i}").into_bytes()).collect();
    for p in &fresh {
        log.append(p).unwrap();
    }
    for expected in 20..25 {
        let rec = it.next().unwrap().unwrap();
        assert_eq!(rec.payload.as_ref(), &payload(expected, 500)[..]);
    }
    for (i, p) in fresh.iter().enumerate() {
        let rec = it.next().unwrap().unwrap();
        assert_eq!(rec.offset, 25 + i as u64);
        assert_eq!(rec.payload.as_ref(), &p[..], "offset {}", rec.offset);
    }
    assert!(it.next().is_none());
}

/// Names of the segment files in `dir` on the simulated disk (durable or not).
fn segment_names(disk: &SimDisk, dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = disk
        .io()
        .list(dir)
        .unwrap()
        .into_iter()
        .filter(|n| crate::storage::segment::parse_file_name(n).is_some())
        .collect();
    names.sort();
    names
}

/// Appends without waiting until the log holds `segments` segments (the last append rolled).
fn append_until_segments(log: &Log, segments: usize) -> Vec<Vec<u8>> {
    let mut written = Vec::new();
    while log.segment_count() < segments {
        let p = payload(log.end_offset(), 1000);
        log.append_nowait(&[&p]).unwrap();
        written.push(p);
        assert!(written.len() < 1000, "no roll");
    }
    written
}

/// A roll is a pointer swap: appends across rolls issue no seal, header, rename or fsync on
/// the append path; group commit runs that housekeeping in order when it runs (on a driven
/// log: at the pump, so nothing runs behind the test's back).
#[test]
fn a_roll_leaves_its_seal_and_the_new_segments_name_to_group_commit() {
    let disk = SimDisk::new(60);
    let opts = driven_opts(&disk);
    let dir = Path::new("/roll");
    let log = Log::open(dir, opts.clone()).unwrap();
    log.append(b"first").unwrap();
    assert_eq!(segment_names(&disk, dir).len(), 1);
    assert_eq!(log.commit_stats().roll_barriers, 1, "the first segment's");
    let syncs = disk.sync_count();
    let written = append_until_segments(&log, 3);
    assert_eq!(disk.sync_count(), syncs, "no fsync on the append path");
    assert_eq!(segment_names(&disk, dir).len(), 1, "no new name yet");
    assert!(log.sealed_segments(u64::MAX).unwrap().is_empty(), "no seal yet");
    // Readable at once all the same.
    assert_eq!(&log.read(1).unwrap().payload[..], &written[0][..]);
    log.pump().unwrap();
    assert_eq!(log.durable_end(), log.end_offset());
    assert_eq!(segment_names(&disk, dir).len(), 3);
    assert_eq!(log.sealed_segments(u64::MAX).unwrap().len(), 2);
    let stats = log.commit_stats();
    assert_eq!(stats.roll_barriers, 3);
    assert!(stats.flushes >= 2 && stats.records_flushed == log.end_offset());
    drop(log);
    disk.crash();
    let log = Log::open(dir, opts).unwrap();
    for (i, p) in written.iter().enumerate() {
        assert_eq!(&log.read(i as u64 + 1).unwrap().payload[..], &p[..]);
    }
}

/// Crash points around a roll: before its barrier ran (the old segment is then the unsealed
/// last one, full: sealed by the next append; the new one never got its name), with the
/// barrier failing at the new header's fsync or at the seal it owes the segment before (the
/// log is poisoned; the new segment unnamed), and with the seal that follows the barrier
/// failing (poisoned; the new segment named, the one before it unsealed: recovery finds all
/// its records and completes its seal). Every acknowledged record survives, and appends and
/// rolls continue after the reopen.
#[test]
fn a_crash_before_or_inside_a_rolls_barrier_keeps_every_acknowledged_record() {
    // Syncs that succeed in the pump before the failing one: the old segment's last group,
    // the new header's (submitted first; inline on the simulated disk), the seal of the
    // segment before (owed since the first roll: `sync` does not run seals on a driven log),
    // then, after the barrier, the seal of the segment it left.
    for (succeed_first, names) in [(None, 2), (Some(1), 2), (Some(2), 2), (Some(3), 3)] {
        let case = format!("succeed_first {succeed_first:?}");
        let disk = SimDisk::new(61);
        let opts = driven_opts(&disk);
        let dir = Path::new("/crashroll");
        let log = Log::open(dir, opts.clone()).unwrap();
        let mut acked = vec![b"first".to_vec()];
        log.append(&acked[0]).unwrap();
        acked.extend(append_until_segments(&log, 2));
        // Everything acknowledged: the first roll's barrier ran as well.
        log.sync().unwrap();
        append_until_segments(&log, 3);
        if let Some(n) = succeed_first {
            disk.set_faults(SimFaults {
                fail_sync_after: Some(n),
                ..disk.faults()
            });
            assert!(log.pump().is_err(), "a sync of the barrier or seal failed");
            assert!(log.poisoned().is_some());
            // A failed seal is never retried (a second fsync could report success for pages
            // the kernel dropped): not by a flush, nor by a snapshot's list of segments.
            assert!(log.flush().is_err());
            assert!(log.sealed_segments(u64::MAX).is_err());
            let unsealed = log.segments_snapshot().iter().filter(|s| !s.is_sealed()).count();
            assert!(unsealed >= 2, "{case}: {unsealed}");
        }
        drop(log);
        disk.crash();
        disk.set_faults(SimFaults::default());
        let log = Log::open(dir, opts.clone()).unwrap();
        assert!(log.end_offset() >= acked.len() as u64, "{case}");
        assert_eq!(segment_names(&disk, dir).len(), names, "{case}: names");
        for (i, p) in acked.iter().enumerate() {
            assert_eq!(&log.read(i as u64).unwrap().payload[..], &p[..], "{case}");
        }
        // Every segment before the last is sealed: recovery completed what a crash left.
        assert_eq!(log.sealed_segments(u64::MAX).unwrap().len(), names - 1, "{case}");
        // Appends continue: a full segment is sealed first, and rolls work again.
        let more = append_until_segments(&log, names + 1);
        log.flush().unwrap();
        let first_more = log.end_offset() - more.len() as u64;
        assert_eq!(&log.read(first_more).unwrap().payload[..], &more[0][..], "{case}");
        assert_eq!(log.sealed_segments(u64::MAX).unwrap().len(), names, "{case}");
    }
}

/// In manual mode a roll's barrier fsyncs the old segment's frames while reads go on; when
/// that fsync fails, the kernel may drop the old segment's unsynced pages (the simulated disk
/// does). A record appended but not
/// yet durable then reads back as the log's verdict, `Poisoned`, through `read` and `iter`
/// alike, never as a bare I/O error (a short read) on a log that looks healthy; durable
/// records stay readable.
#[test]
fn a_record_lost_with_a_failed_seal_reads_as_poisoned_not_as_an_io_error() {
    let disk = SimDisk::new(62);
    let opts = LogOptions {
        sync: SyncMode::Manual,
        ..driven_opts(&disk)
    };
    let log = Log::open("/sealfail", opts).unwrap();
    log.append(b"durable").unwrap();
    log.sync().unwrap();
    let written = append_until_segments(&log, 2);
    // The pump writes the old segment's frames through the page cache (manual mode: no
    // fsync), then runs the roll's barrier: the new header's fsync succeeds, the old
    // segment's fails.
    disk.set_faults(SimFaults {
        fail_sync_after: Some(1),
        ..disk.faults()
    });
    assert!(log.pump().is_err(), "the old segment's fsync failed");
    assert!(log.poisoned().is_some());
    assert_eq!(log.durable_end(), 1);
    assert_eq!(&log.read(0).unwrap().payload[..], b"durable");
    let lost = log.read(1);
    assert!(matches!(lost, Err(Error::Poisoned { .. })), "{lost:?}");
    let mut iter = log.iter(0);
    assert_eq!(&iter.next().unwrap().unwrap().payload[..], b"durable");
    let lost = iter.next().unwrap();
    assert!(matches!(lost, Err(Error::Poisoned { .. })), "{lost:?}");
    assert!(written.len() > 1);
}

#[test]
fn a_producer_frame_at_the_start_of_a_segment_reads_before_the_rolls_barrier_ran() {
    // The roll's barrier writes the new segment's header later, in group commit: until then the
    // file holds no header, and the frame kinds allowed by the format version must come from
    // what this binary wrote, not from the file (a drill on TLS found the first frame of a new
    // segment, a produce, refused as corruption: "kind 3 inside a segment of format version 0").
    let disk = SimDisk::new(41);
    let opts = driven_opts(&disk);
    let log = Log::open("/roll", opts).unwrap();
    let produce = |payload| NewRecord {
        term: 1,
        kind: EntryKind::Produce,
        timestamp_us: Some(0),
        payload,
    };
    let body = vec![7u8; 1000];
    let first_segments = log.segment_count();
    let mut offsets = Vec::new();
    while log.segment_count() == first_segments {
        let r = log.write_records(&[produce(&body)], false).unwrap();
        offsets.push(r.start);
    }
    let first_of_new = *offsets.last().unwrap();
    let rec = log.read(first_of_new).unwrap();
    assert_eq!(rec.kind, EntryKind::Produce);
    assert_eq!(&rec.payload[..], &body[..]);
    let all: Vec<_> = log.iter(0).map(|r| r.unwrap().offset).collect();
    assert_eq!(all, offsets);
    log.pump().unwrap();
    assert_eq!(log.read(first_of_new).unwrap().kind, EntryKind::Produce);
}
