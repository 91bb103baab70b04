//! Property test: the local log against an in-memory model, on the simulated disk, with
//! random appends, syncs, reads, truncations, purges, reopens, crashes, failed fsyncs and full
//! disks.
//!
//! Invariants checked after every reopen and crash:
//! - every acknowledged record is present, byte-identical, at its offset;
//! - nothing is returned that was never appended (payloads are unique);
//! - offsets never change meaning (a record read at an offset is the one appended there);
//! - unacknowledged records survive or not, but only as a contiguous prefix of what was
//!   appended after the last acknowledged one.

use proptest::prelude::*;
use sitelog::io::{SimDisk, SimFaults};
use sitelog::{Error, IoBackend, Log, LogOptions, SyncMode};
use std::path::PathBuf;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<usize>),
    Sync,
    Read(usize),
    Truncate(usize),
    Purge(usize),
    Reopen,
    Crash,
    FailNextSync,
    FullDisk(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => prop::collection::vec(0usize..1500, 1..6).prop_map(Op::Append),
        3 => Just(Op::Sync),
        4 => any::<usize>().prop_map(Op::Read),
        1 => any::<usize>().prop_map(Op::Truncate),
        1 => any::<usize>().prop_map(Op::Purge),
        1 => Just(Op::Reopen),
        3 => Just(Op::Crash),
        1 => Just(Op::FailNextSync),
        1 => any::<u16>().prop_map(Op::FullDisk),
    ]
}

struct Harness {
    /// The simulated disk, or None on a real backend (then crashes are process exits and no
    /// disk faults are injected).
    disk: Option<SimDisk>,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    opts: LogOptions,
    log: Option<Log>,
    /// Model: the payload at each offset, as the live process sees the log.
    records: Vec<Vec<u8>>,
    start: u64,
    /// Offsets below this were acknowledged as durable.
    acked: u64,
    poisoned: bool,
    next_payload_id: u64,
    /// A full-disk limit armed for the next operation only.
    full_disk: bool,
    /// The start a failed purge may have made durable.
    maybe_start: Option<u64>,
}

impl Harness {
    fn log(&self) -> &Log {
        self.log.as_ref().expect("log is open between operations")
    }

    fn payload(&mut self, len: usize) -> Vec<u8> {
        self.next_payload_id += 1;
        let id = self.next_payload_id.to_le_bytes();
        (0..len.max(8))
            .map(|i| {
                if i < 8 {
                    id[i]
                } else {
                    (i as u64 * 7 + self.next_payload_id) as u8
                }
            })
            .collect()
    }

    fn len(&self) -> u64 {
        self.records.len() as u64
    }

    /// Records written by a failed append: whatever prefix the log now holds.
    fn absorb_partial(&mut self, batch: Vec<Vec<u8>>) {
        self.absorb_discard();
        let written = self.log().end_offset().saturating_sub(self.len()) as usize;
        self.records.extend(batch.into_iter().take(written));
    }

    /// A full disk discards the never-synced tail; acknowledged records must stay.
    fn absorb_discard(&mut self) {
        let end = self.log().end_offset();
        assert!(end >= self.acked, "a discard removed acknowledged records");
        self.records.truncate(end as usize);
    }

    fn apply(&mut self, op: Op) {
        // A segment roll's seal runs in group commit, after the append that rolled returned:
        // its failure (a failed fsync drops unsynced pages) poisons the log between two
        // operations, and the model must know before it judges the next one (a truncation or
        // purge refused as `Poisoned` did nothing).
        if self.log.as_ref().is_some_and(|l| l.poisoned().is_some()) {
            self.poisoned = true;
        }
        match op {
            Op::Append(sizes) => self.append(sizes),
            Op::Sync => match self.log().sync() {
                Ok(()) => self.acked = self.len(),
                Err(e) => {
                    self.absorb_discard();
                    self.failed(e)
                }
            },
            Op::Read(h) if !self.poisoned && self.len() > self.start => {
                let offset = self.start + (h as u64 % (self.len() - self.start));
                let rec = match self.log().read(offset) {
                    Ok(rec) => rec,
                    // A roll's seal failed (in group commit) since the check in `apply`: the
                    // failed fsync dropped unsynced pages. The read says so with the log's
                    // verdict, never with a bare I/O error (`Log::read_failure`).
                    Err(Error::Poisoned { .. }) => {
                        assert!(offset >= self.acked, "a durable record became unreadable");
                        self.poisoned = true;
                        return;
                    }
                    Err(e) => panic!("readable: {e:?}"),
                };
                assert_eq!(
                    rec.payload.as_ref(),
                    &self.records[offset as usize][..],
                    "offset {offset}"
                );
            }
            Op::Truncate(h) if !self.poisoned => {
                let cut = self.start + (h as u64 % (self.len() - self.start + 1));
                // A truncation that fails part-way poisons the log; recovery then either
                // finishes it (its superblock mark was written) or never saw it. Either way the
                // survivors are a prefix of the old records, and only those below the cut
                // must survive.
                match self.log().truncate_from(cut) {
                    Ok(()) => self.records.truncate(cut as usize),
                    // A full disk discarded an unsynced tail first; the truncation did not run.
                    Err(Error::NoSpace { .. }) => self.absorb_discard(),
                    Err(e) => {
                        assert!(matches!(e, Error::Poisoned { .. }), "{e}");
                        self.poisoned = true;
                    }
                }
                self.acked = self.acked.min(cut);
            }
            Op::Purge(h) if !self.poisoned => {
                let to = self.start + (h as u64 % (self.len() - self.start + 1));
                match self.log().purge_before(to) {
                    Ok(_) => {
                        self.acked = self.acked.max(to);
                        self.start = self.start.max(to);
                        assert_eq!(self.log().start_offset(), self.start);
                    }
                    Err(Error::NoSpace { .. }) => self.absorb_discard(),
                    Err(e) => {
                        // Failed part-way: the new start may or may not have become durable.
                        assert!(matches!(e, Error::Poisoned { .. }), "{e}");
                        self.poisoned = true;
                        self.maybe_start = Some(to);
                    }
                }
            }
            Op::Reopen => self.reopen(false),
            Op::Crash => self.reopen(true),
            Op::FailNextSync => {
                if let Some(disk) = &self.disk {
                    disk.set_faults(SimFaults {
                        fail_syncs: 1,
                        ..Default::default()
                    });
                }
            }
            Op::FullDisk(headroom) => {
                if let Some(disk) = &self.disk {
                    let capacity = disk.used_bytes() + u64::from(headroom % 8192);
                    let faults = SimFaults {
                        capacity_bytes: Some(capacity),
                        ..Default::default()
                    };
                    disk.set_faults(faults);
                    self.full_disk = true;
                }
                return;
            }
            _ => {}
        }
        if let Some(disk) = self.disk.as_ref().filter(|_| self.full_disk) {
            disk.set_faults(SimFaults {
                fail_syncs: disk.faults().fail_syncs,
                ..Default::default()
            });
            self.full_disk = false;
        }
    }

    fn append(&mut self, sizes: Vec<usize>) {
        let batch: Vec<Vec<u8>> = sizes.into_iter().map(|s| self.payload(s)).collect();
        match self.log().append_batch(&batch) {
            Ok(range) => {
                assert!(!self.poisoned, "a poisoned log acknowledged an append");
                assert_eq!(range.start, self.len());
                assert_eq!(range.end - range.start, batch.len() as u64);
                self.records.extend(batch);
                if self.opts.sync == SyncMode::Always {
                    self.acked = self.len();
                }
            }
            Err(e) => {
                self.absorb_partial(batch);
                self.failed(e);
            }
        }
    }

    fn failed(&mut self, e: Error) {
        match e {
            Error::NoSpace { .. } => {
                assert!(self.log().poisoned().is_none(), "ENOSPC must not poison")
            }
            Error::Poisoned { .. } => self.poisoned = true,
            other => panic!("unexpected error {other}"),
        }
    }

    fn reopen(&mut self, crash: bool) {
        drop(self.log.take());
        // On a real backend a "crash" is a process exit: the page cache keeps what was written.
        if let Some(disk) = &self.disk {
            if crash {
                disk.crash();
            }
            disk.set_faults(SimFaults::default());
        }
        self.full_disk = false;
        let log = Log::open(&self.dir, self.opts.clone()).expect("recovery succeeds after crashes");
        let end = log.end_offset();
        assert!(
            end >= self.acked,
            "acknowledged records lost: end {end} < acked {}",
            self.acked
        );
        assert!(
            end <= self.len(),
            "records that were never appended: end {end} > {}",
            self.len()
        );
        let start = log.start_offset();
        assert!(
            start == self.start || Some(start) == self.maybe_start,
            "purges are durable"
        );
        if start > self.start {
            self.acked = self.acked.max(start);
            self.start = start;
        }
        self.maybe_start = None;
        let mut expected = self.start;
        for rec in log.iter(self.start) {
            let rec = rec.expect("every recovered record verifies");
            assert_eq!(rec.offset, expected);
            assert_eq!(
                rec.payload.as_ref(),
                &self.records[rec.offset as usize][..],
                "offset {}",
                rec.offset
            );
            expected += 1;
        }
        assert_eq!(expected, end);
        self.records.truncate(end as usize);
        self.acked = end;
        self.poisoned = false;
        log.verify().expect("verify after recovery");
        self.log = Some(log);
    }
}

/// Aborts the test process with the case's description if one case runs longer than a
/// minute: a hang in the log (a waiter nobody wakes) must fail loudly, not stall CI.
struct Watchdog {
    done: std::sync::mpsc::Sender<()>,
}

impl Watchdog {
    fn start(case: String) -> Self {
        let (done, finished) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                finished.recv_timeout(std::time::Duration::from_secs(60))
            {
                eprintln!("log_model: case hung for 60 s: {case}");
                std::process::abort();
            }
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.done.send(());
    }
}

fn run(seed: u64, manual: bool, ops: Vec<Op>, real: Option<IoBackend>) {
    let _watchdog = Watchdog::start(format!(
        "seed {seed} manual {manual} real {real:?} ops {ops:?}"
    ));
    let (disk, dir, tmp, io) = match real {
        None => {
            let disk = SimDisk::new(seed);
            let io = disk.io().into();
            (Some(disk), PathBuf::from("/log"), None, io)
        }
        Some(backend) => {
            let tmp = tempfile::tempdir().expect("temp dir");
            (None, tmp.path().join("log"), Some(tmp), backend)
        }
    };
    let mut opts = LogOptions::default();
    opts.io = io;
    opts.segment_size_bytes = 16 << 10;
    opts.max_record_bytes = 2048;
    opts.index_interval_bytes = 512;
    opts.sync = if manual {
        SyncMode::Manual
    } else {
        SyncMode::Always
    };
    opts.superblock_interval_ms = if seed % 2 == 0 { 1 } else { 1_000_000 };
    opts.preallocate = disk.is_none() && seed % 3 == 0;
    // O_DIRECT group writes in half the cases (the simulated disk checks their alignment).
    opts.direct_io = (seed >> 8) % 2 == 1;
    let log = Log::open(&dir, opts.clone()).expect("create");
    let mut h = Harness {
        disk,
        dir,
        _tmp: tmp,
        opts,
        log: Some(log),
        records: Vec::new(),
        start: 0,
        acked: 0,
        poisoned: false,
        next_payload_id: 0,
        full_disk: false,
        maybe_start: None,
    };
    for op in ops {
        h.apply(op);
    }
    h.reopen(true);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model_across_crashes(seed in any::<u64>(), manual in any::<bool>(), ops in prop::collection::vec(op(), 1..100)) {
        run(seed, manual, ops, None);
    }
}

proptest! {
    // Real fsyncs are slow; fewer cases.
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The same model on the real kernel, through io_uring and through POSIX.
    #[test]
    fn log_matches_model_on_real_backends(seed in any::<u64>(), manual in any::<bool>(), uring in any::<bool>(), ops in prop::collection::vec(op(), 1..60)) {
        let backend = if uring { IoBackend::IoUring } else { IoBackend::Posix };
        run(seed, manual, ops, Some(backend));
    }
}
