//! Tests of `O_DIRECT` group writes (`LogOptions::direct_io`): on the simulated disk, which
//! refuses a misaligned direct write with EINVAL as a disk would, and on the real file system
//! through both backends.

use super::*;
use crate::io::{AlignedBuf, PosixIo, SimDisk, SimFaults, UringIo, DIRECT_ALIGN_BYTES};
use bytes::Bytes;

fn direct_opts(disk: &SimDisk) -> LogOptions {
    LogOptions {
        io: disk.io().into(),
        segment_size_bytes: 32 << 10,
        max_record_bytes: 6 << 10,
        preallocate: false,
        direct_io: true,
        ..Default::default()
    }
}

/// Record `i`'s payload: lengths from 0 to 5 KiB, so groups start and end anywhere in a block
/// and some span several blocks.
fn payload(i: u64, salt: u8) -> Vec<u8> {
    let len = (i * 733 % 5200) as usize;
    (0..len)
        .map(|j| (i as usize * 7 + j) as u8 ^ salt)
        .collect()
}

fn check(log: &Log, expected: &[Vec<u8>]) {
    assert_eq!(log.end_offset(), expected.len() as u64);
    for (i, p) in expected.iter().enumerate() {
        assert_eq!(
            log.read(i as u64).unwrap().payload.as_ref(),
            &p[..],
            "offset {i}"
        );
    }
    log.verify().unwrap();
}

#[test]
fn the_simulated_disk_refuses_misaligned_direct_writes() {
    let disk = SimDisk::new(1);
    let io = disk.io();
    io.create_dir_all("/d".as_ref()).unwrap();
    io.open("/d/f".as_ref(), true).unwrap();
    let file = io.open_direct("/d/f".as_ref()).unwrap();
    let einval = Some(libc::EINVAL);
    let mut aligned = AlignedBuf::zeroed(2 * DIRECT_ALIGN_BYTES).unwrap();
    aligned.as_mut_slice()[0] = 7;
    let aligned = Bytes::from_owner(aligned);
    assert!(file.write_at(&aligned, 4096).is_ok());
    let err = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    assert_eq!(err(file.write_at(&aligned, 512)), einval, "offset");
    assert_eq!(err(file.write_at(&aligned[..4000], 0)), einval, "length");
    assert_eq!(err(file.write_at(&aligned[1..4097], 0)), einval, "address");
    assert!(AlignedBuf::zeroed(100).is_err());
    let mut back = [0u8; 1];
    io.open("/d/f".as_ref(), false)
        .unwrap()
        .read_at(&mut back, 4096)
        .unwrap();
    assert_eq!(
        back,
        [7],
        "the ordinary handle reads what the direct one wrote"
    );
}

#[test]
fn direct_group_writes_survive_a_crash_and_a_reopen() {
    let disk = SimDisk::new(2);
    let log = Log::open("/l", direct_opts(&disk)).unwrap();
    assert!(
        log.writes_direct(),
        "a new log opens with its first segment, written direct"
    );
    let mut expected = Vec::new();
    for i in 0..120u64 {
        let p = payload(i, 0);
        assert_eq!(log.append(&p).unwrap(), i);
        assert!(log.writes_direct());
        expected.push(p);
    }
    assert!(log.segment_count() > 3, "segments roll under direct writes");
    check(&log, &expected);
    drop(log);
    disk.crash();
    let log = Log::open("/l", direct_opts(&disk)).unwrap();
    check(&log, &expected);
    assert!(
        log.writes_direct(),
        "the recovered active segment is written direct again"
    );
    // The first group after a restart starts inside a block it must read back from the file.
    for i in 120..160u64 {
        let p = payload(i, 0);
        log.append(&p).unwrap();
        expected.push(p);
    }
    drop(log);
    disk.crash();
    check(&Log::open("/l", direct_opts(&disk)).unwrap(), &expected);
}

#[test]
fn appends_after_a_cut_inside_a_block_rewrite_that_block_from_the_cut_file() {
    let disk = SimDisk::new(3);
    let log = Log::open("/l", direct_opts(&disk)).unwrap();
    let mut expected: Vec<Vec<u8>> = (0..40u64).map(|i| payload(i, 0)).collect();
    for p in &expected {
        log.append(p).unwrap();
    }
    // Cut inside the active segment (and inside a block), then write other bytes there.
    log.truncate_after(35).unwrap();
    expected.truncate(36);
    for i in 36..60u64 {
        let p = payload(i, 0x5a);
        log.append(&p).unwrap();
        expected.push(p);
    }
    check(&log, &expected);
    // A failed fsync poisons; what was acknowledged survives the crash that follows.
    disk.set_faults(SimFaults {
        fail_syncs: 1,
        ..SimFaults::default()
    });
    assert!(log.append(b"never acknowledged").is_err());
    drop(log);
    disk.crash();
    disk.set_faults(SimFaults::default());
    check(&Log::open("/l", direct_opts(&disk)).unwrap(), &expected);
}

#[test]
fn a_refused_direct_open_falls_back_to_buffered_writes() {
    let disk = SimDisk::new(4);
    disk.set_faults(SimFaults {
        refuse_direct: true,
        ..SimFaults::default()
    });
    let log = Log::open("/l", direct_opts(&disk)).unwrap();
    let expected: Vec<Vec<u8>> = (0..30u64).map(|i| payload(i, 1)).collect();
    for p in &expected {
        log.append(p).unwrap();
    }
    assert!(!log.writes_direct());
    drop(log);
    disk.crash();
    check(&Log::open("/l", direct_opts(&disk)).unwrap(), &expected);
}

#[test]
fn direct_writes_on_the_real_file_system_through_both_backends() {
    let mut backends: Vec<(IoBackend, crate::io::IoRef)> =
        vec![(IoBackend::Posix, PosixIo::new_ref())];
    if let Ok(io) = UringIo::new_ref() {
        backends.push((IoBackend::IoUring, io));
    }
    for (backend, io) in backends {
        let dir = tempfile::tempdir().unwrap();
        // Whether this file system takes O_DIRECT at all (tmpfs does not).
        let probe = dir.path().join("probe");
        io.open(&probe, true).unwrap();
        let supported = io.open_direct(&probe).is_ok();
        let opts = LogOptions {
            io: backend.clone(),
            segment_size_bytes: 256 << 10,
            max_record_bytes: 6 << 10,
            direct_io: true,
            ..Default::default()
        };
        let path = dir.path().join("log");
        let log = Log::open(&path, opts.clone()).unwrap();
        let mut expected = Vec::new();
        for i in 0..150u64 {
            let p = payload(i, 2);
            log.append(&p).unwrap();
            expected.push(p);
        }
        assert_eq!(log.writes_direct(), supported, "{backend:?}");
        let batch: Vec<Vec<u8>> = (150..400u64).map(|i| payload(i, 2)).collect();
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        log.append_batch(&refs).unwrap();
        expected.extend(batch);
        check(&log, &expected);
        log.close().unwrap();
        check(&Log::open(&path, opts).unwrap(), &expected);
    }
}

#[test]
fn concurrent_appenders_with_direct_writes_keep_every_record() {
    // `Auto` is POSIX for a direct log: name io_uring explicitly where the kernel has it.
    let mut backends = vec![IoBackend::Posix];
    if UringIo::new_ref().is_ok() {
        backends.push(IoBackend::IoUring);
    }
    for backend in backends {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            io: backend.clone(),
            segment_size_bytes: 512 << 10,
            max_record_bytes: 6 << 10,
            direct_io: true,
            ..Default::default()
        };
        let path = dir.path().join("log");
        let log = Log::open(&path, opts.clone()).unwrap();
        let written: Vec<Vec<(u64, Vec<u8>)>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8u8)
                .map(|t| {
                    let log = &log;
                    s.spawn(move || {
                        (0..150u64)
                            .map(|i| {
                                let p = payload(i * 8 + t as u64, t);
                                (log.append(&p).unwrap(), p)
                            })
                            .collect()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        log.close().unwrap();
        let log = Log::open(&path, opts).unwrap();
        assert_eq!(log.end_offset(), 8 * 150, "{backend:?}");
        for (offset, p) in written.iter().flatten() {
            assert_eq!(log.read(*offset).unwrap().payload.as_ref(), &p[..]);
        }
        log.verify().unwrap();
    }
}

/// A direct write is durable on its own range only (io_uring's `RWF_DSYNC`, a FUA write): in
/// manual mode, a sync asked for while earlier groups went through the page cache unsynced is
/// a buffered write and a whole-file fdatasync instead, so that those become durable too.
/// With nothing unsynced before it, a synced group is written direct.
#[test]
fn a_sync_after_unsynced_groups_is_not_a_direct_write() {
    let disk = SimDisk::new(9);
    // Driven: the groups are formed when the test says (`pump`, or the wait of `sync`).
    let manual = LogOptions {
        sync: SyncMode::Manual,
        driven: true,
        ..direct_opts(&disk)
    };
    let log = Log::open("/m", manual.clone()).unwrap();
    let gc = log.shared.gc.clone();
    let mut expected = Vec::new();
    let mut append = |log: &Log, i: u64| {
        let p = payload(i + 1, 3);
        log.append_batch(std::slice::from_ref(&p)).unwrap();
        expected.push(p);
    };
    append(&log, 0);
    log.sync().unwrap();
    assert_eq!(gc.direct_groups(), 1, "nothing unsynced before: direct");
    append(&log, 1);
    append(&log, 2);
    log.pump().unwrap();
    assert_eq!(gc.direct_groups(), 1, "groups nobody waits for go through the page cache");
    append(&log, 3);
    log.sync().unwrap();
    assert_eq!(gc.direct_groups(), 1, "unsynced groups before: not direct");
    drop(log);
    disk.crash();
    check(&Log::open("/m", manual).unwrap(), &expected);
}
