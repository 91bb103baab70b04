//! Full disk on the real path: a log on a tiny tmpfs is filled until the kernel returns ENOSPC.
//!
//! Needs root (to mount the tmpfs); without root, or if the mount fails, the test prints
//! "SKIPPED: <reason>" to stderr and passes. Each scenario:
//! 1. mounts a 4 MiB tmpfs and opens a log with 1 MiB segments in it;
//! 2. appends (single records and batches, 1 B..64 KiB, payload derived from the offset) until
//!    an append fails: the error must be `Error::NoSpace`, the log must not be poisoned, and
//!    every acknowledged record must read back byte-identical; further appends while full must
//!    fail with `NoSpace` again (or succeed), never poison;
//! 3. flushes, closes and reopens the log while the disk is still full: same start and end, same
//!    bytes;
//! 4. frees space with `purge_before` and fills the disk again (appends work again);
//! 5. grows the tmpfs with `mount -o remount,size=16m`, appends several MiB, closes, reopens and
//!    checks that everything acknowledged and not purged is intact.
//!
//! Scenarios cover single appends, batches, `SyncMode::Manual` with explicit syncs, a disk that
//! fills inside the first segment, and both backends (io_uring where the kernel allows it, and
//! POSIX). The tmpfs is unmounted by a guard, also when an assertion fails; a watchdog turns a
//! deadlock into a failure.

mod common;
use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::Duration;

use sitelog::{Error, IoBackend, Log, LogOptions, SyncMode};

const SEGMENT_BYTES: u64 = 1 << 20;
const MAX_RECORD_BYTES: u32 = 64 << 10;
/// Safety stop: a 4 MiB tmpfs must be full long before this much has been appended.
const MAX_FILL_BYTES: u64 = 64 << 20;
/// All scenarios normally take a few seconds; past this the log is taken to be deadlocked.
const WATCHDOG: Duration = Duration::from_secs(120);

/// File systems this process mounted and has not unmounted yet (for the watchdog).
static MOUNTED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn mounted() -> MutexGuard<'static, Vec<PathBuf>> {
    MOUNTED.lock().unwrap_or_else(|p| p.into_inner())
}

/// SplitMix64: a tiny seedable generator.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// The payload of the record at `offset`: its length and bytes depend only on the offset and
/// the scenario's seed; the offset is embedded at the start.
fn payload(seed: u64, offset: u64) -> Vec<u8> {
    let mut rng = Rng(seed ^ offset.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let len = match rng.range(0, 9) {
        0..=2 => rng.range(1, 64),
        3..=6 => rng.range(65, 8 << 10),
        _ => rng.range(1, u64::from(MAX_RECORD_BYTES)),
    } as usize;
    let mut p: Vec<u8> = Vec::with_capacity(len + 8);
    p.extend_from_slice(&offset.to_le_bytes());
    while p.len() < len {
        p.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    p.truncate(len);
    p
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{cmd} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A tmpfs mounted on a temporary directory; unmounted on drop.
struct Tmpfs {
    path: PathBuf,
    // Dropped (removed) after `drop` has unmounted the file system.
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let path = dir.path().to_path_buf();
        let p = path.to_str().ok_or("non-UTF-8 temp path")?;
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", p],
        )?;
        mounted().push(path.clone());
        Ok(Tmpfs { path, _dir: dir })
    }

    fn resize(&self, size: &str) {
        let p = self.path.to_str().expect("UTF-8 temp path");
        run("mount", &["-o", &format!("remount,size={size}"), p])
            .unwrap_or_else(|e| panic!("growing the tmpfs: {e}"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let p = self.path.to_string_lossy().into_owned();
        if let Err(e) = run("umount", &[&p]) {
            eprintln!("{e}; unmounting lazily");
            let _ = run("umount", &["-l", &p]);
        }
        mounted().retain(|m| m != &self.path);
    }
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    (euid != 0).then(|| format!("not root (euid {euid}); mounting a tmpfs needs root"))
}

struct Scenario {
    name: &'static str,
    seed: u64,
    sync: SyncMode,
    /// Largest batch; 1 means single appends only.
    max_batch: u64,
    /// The tmpfs size until it is grown to 16 MiB.
    tmpfs_size: &'static str,
    /// Whether to free space with `purge_before` (needs sealed segments on the disk).
    purge: bool,
    superblock_interval_ms: u64,
    /// `true`: the POSIX backend; `false`: the default (io_uring where the kernel allows it).
    posix: bool,
}

/// The log under test plus what the test knows about it.
struct Harness<'a> {
    sc: &'a Scenario,
    dir: PathBuf,
    log: Option<Log>,
    rng: Rng,
    /// Offsets below this were acknowledged (appended, and synced in `Manual` mode).
    acked_end: u64,
    /// Records appended (acknowledged or not) and not purged: `start..end` of the log.
    start: u64,
    appended_bytes: u64,
    appends_since_sync: u32,
    /// Offsets whose payload was appended cut to a shorter length (a prefix of the usual one).
    cut: HashMap<u64, usize>,
}

impl Harness<'_> {
    fn log(&self) -> &Log {
        self.log.as_ref().expect("log open")
    }

    fn ctx(&self) -> String {
        let backend = self.log.as_ref().map_or("?", |l| l.backend_name());
        format!(
            "scenario {} ({backend}, seed {})",
            self.sc.name, self.sc.seed
        )
    }

    fn options(&self) -> LogOptions {
        let mut opts = LogOptions::default();
        opts.segment_size_bytes = SEGMENT_BYTES;
        opts.max_record_bytes = MAX_RECORD_BYTES;
        opts.sync = self.sc.sync;
        opts.superblock_interval_ms = self.sc.superblock_interval_ms;
        opts.io = if self.sc.posix {
            IoBackend::Posix
        } else {
            IoBackend::Auto
        };
        opts
    }

    fn open(&mut self) {
        let log = Log::open(&self.dir, self.options())
            .unwrap_or_else(|e| panic!("{}: open: {e}", self.ctx()));
        self.log = Some(log);
    }

    /// One append (single or batch, `limit` caps payload sizes); acknowledges on success.
    fn append_one(&mut self, limit: Option<usize>) -> Result<Range<u64>, Error> {
        let ctx = self.ctx();
        let first = self.log().end_offset();
        let n = if self.sc.max_batch > 1 && self.rng.range(0, 2) == 0 {
            self.rng.range(2, self.sc.max_batch)
        } else {
            1
        };
        let payloads: Vec<Vec<u8>> = (first..first + n)
            .map(|o| {
                let mut p = payload(self.sc.seed, o);
                if let Some(max) = limit {
                    p.truncate(max.max(1));
                }
                p
            })
            .collect();
        // Recorded before the call: a failed batch may still leave a prefix behind.
        for (o, p) in (first..).zip(&payloads) {
            match limit {
                Some(_) => self.cut.insert(o, p.len()),
                None => self.cut.remove(&o),
            };
        }
        let range = self.log().append_batch(&payloads)?;
        assert_eq!(
            range,
            first..first + n,
            "{ctx}: append_batch returned unexpected offsets"
        );
        self.appended_bytes += payloads.iter().map(|p| p.len() as u64).sum::<u64>();
        match self.sc.sync {
            SyncMode::Always => self.acked_end = range.end,
            SyncMode::Manual => {
                self.appends_since_sync += 1;
                if self.appends_since_sync >= 4 {
                    self.sync()?;
                }
            }
        }
        Ok(range)
    }

    fn sync(&mut self) -> Result<(), Error> {
        let end = self.log().end_offset();
        self.log().sync()?;
        self.appends_since_sync = 0;
        self.acked_end = end;
        Ok(())
    }

    /// Appends until an append fails; returns the error.
    fn fill(&mut self) -> Error {
        let began = self.appended_bytes;
        loop {
            match self.append_one(None) {
                Ok(_) => assert!(
                    self.appended_bytes - began < MAX_FILL_BYTES,
                    "{}: appended {} bytes to a small tmpfs without running out of space",
                    self.ctx(),
                    self.appended_bytes - began
                ),
                Err(e) => return e,
            }
        }
    }

    fn expect_no_space(&self, e: &Error, when: &str) {
        let ctx = self.ctx();
        assert!(
            matches!(e, Error::NoSpace { .. }),
            "{ctx}: {when}: expected Error::NoSpace, got {e:?}"
        );
        assert!(e.is_retryable(), "{ctx}: NoSpace must be retryable");
        assert!(
            self.log().poisoned().is_none(),
            "{ctx}: {when}: the log was poisoned by a full disk: {:?}",
            self.log().poisoned()
        );
    }

    /// The bytes appended at `offset`.
    fn expected(&self, offset: u64) -> Vec<u8> {
        let mut p = payload(self.sc.seed, offset);
        if let Some(&len) = self.cut.get(&offset) {
            p.truncate(len);
        }
        p
    }

    /// Checks every record in the log: dense offsets from `start`, bytes equal to the offset's
    /// payload, every acknowledged one present; by iteration and by random access.
    fn verify(&self, when: &str) {
        let ctx = self.ctx();
        let log = self.log();
        let (start, end) = (log.start_offset(), log.end_offset());
        assert_eq!(start, self.start, "{ctx}: {when}: unexpected log start");
        assert!(
            end >= self.acked_end,
            "{ctx}: {when}: log ends at {end} but offsets below {} were acknowledged",
            self.acked_end
        );
        let mut next = start;
        for item in log.iter(start) {
            let rec = item.unwrap_or_else(|e| panic!("{ctx}: {when}: iterating at {next}: {e}"));
            assert_eq!(rec.offset, next, "{ctx}: {when}: offsets not dense");
            let want = self.expected(next);
            assert!(
                rec.payload[..] == want[..],
                "{ctx}: {when}: record {next} differs from what was appended ({} bytes, \
                 expected {})",
                rec.payload.len(),
                want.len()
            );
            next += 1;
        }
        assert_eq!(next, end, "{ctx}: {when}: iteration stopped early");
        for o in (start..end).step_by(7) {
            let rec = log
                .read(o)
                .unwrap_or_else(|e| panic!("{ctx}: {when}: read({o}): {e}"));
            assert!(
                rec.payload[..] == self.expected(o)[..],
                "{ctx}: {when}: read({o}) returned different bytes"
            );
        }
        if start > 0 {
            assert!(
                matches!(log.read(start - 1), Err(Error::BelowFloor { .. })),
                "{ctx}: {when}: a purged offset is still readable"
            );
        }
    }

    /// Closes and reopens; the log must come back exactly as it was closed.
    fn reopen(&mut self, when: &str) {
        let ctx = self.ctx();
        let log = self.log.take().expect("log open");
        let (start, end) = (log.start_offset(), log.end_offset());
        log.flush()
            .unwrap_or_else(|e| panic!("{ctx}: {when}: flush: {e}"));
        // Everything is durable now: closing has nothing left that needs space.
        log.close().unwrap_or_else(|e| {
            panic!("{ctx}: {when}: close failed after a successful flush: {e}")
        });
        self.acked_end = end;
        self.open();
        let log = self.log();
        assert_eq!(
            (log.start_offset(), log.end_offset()),
            (start, end),
            "{ctx}: {when}: the log reopened with a different range than it was closed with \
             (recovery report {:?})",
            log.recovery_report()
        );
        self.verify(when);
    }
}

/// Frees space with `purge_before` and fills the disk again.
fn purge_and_refill(h: &mut Harness<'_>) {
    let ctx = h.ctx();
    let purge_to = h.log().end_offset();
    let before = h.log().segment_count();
    let outcome = h
        .log()
        .purge_before(purge_to)
        .unwrap_or_else(|e| panic!("{ctx}: purge_before on a full disk: {e}"));
    assert!(
        outcome.segments_removed > 0,
        "{ctx}: purge freed nothing ({before} segments)"
    );
    h.start = purge_to;
    h.verify("after purge");
    let at_purge = h.log().end_offset();
    let e = h.fill();
    h.expect_no_space(&e, "second fill");
    let refilled = h.log().end_offset() - at_purge;
    assert!(
        refilled > 0,
        "{ctx}: no append succeeded after purge freed {} bytes",
        outcome.bytes_removed
    );
    eprintln!(
        "{ctx}: purge freed {} segments ({} KiB); {refilled} more records until NoSpace again",
        outcome.segments_removed,
        outcome.bytes_removed >> 10
    );
    h.verify("after the second NoSpace");
}

fn scenario(sc: &Scenario) -> Result<(), String> {
    let fs = Tmpfs::mount(sc.tmpfs_size)?;
    let mut h = Harness {
        sc,
        dir: fs.path.join("log"),
        log: None,
        rng: Rng(sc.seed),
        acked_end: 0,
        start: 0,
        appended_bytes: 0,
        appends_since_sync: 0,
        cut: HashMap::new(),
    };
    h.open();
    let ctx = h.ctx();

    // 1. Fill the disk.
    let e = h.fill();
    h.expect_no_space(&e, "first fill");
    eprintln!(
        "{ctx}: NoSpace after {} records, {} KiB of payload, {} segments: {e}",
        h.log().end_offset(),
        h.appended_bytes >> 10,
        h.log().segment_count()
    );
    h.verify("after the first NoSpace");
    // Nothing of the failed append may come back, and close/open work on a full disk.
    h.reopen("reopened right after NoSpace");

    // 2. While full: more appends fail with NoSpace (or fit in the last scraps of space).
    let mut fitted = 0;
    for limit in [32 << 10, 4 << 10, 512, 64, 1] {
        for _ in 0..3 {
            match h.append_one(Some(limit)) {
                Ok(_) => fitted += 1,
                Err(e) => h.expect_no_space(&e, "appending to a full disk"),
            }
        }
    }
    if sc.sync == SyncMode::Manual {
        if let Err(e) = h.sync() {
            h.expect_no_space(&e, "syncing a full disk");
        }
    }
    eprintln!("{ctx}: {fitted} small appends still fitted on the full disk");
    h.verify("after retries on the full disk");
    h.reopen("reopened after retries on the full disk");

    // 3. Purge old segments and fill again.
    if sc.purge {
        purge_and_refill(&mut h);
    }

    // 4. Grow the file system: appends succeed again, with no error at all.
    fs.resize("16m");
    let grown_from = h.log().end_offset();
    let target = h.appended_bytes + (6 << 20);
    while h.appended_bytes < target {
        if let Err(e) = h.append_one(None) {
            panic!("{ctx}: append after growing the tmpfs: {e}");
        }
    }
    if sc.sync == SyncMode::Manual {
        h.sync()
            .unwrap_or_else(|e| panic!("{ctx}: sync after growing the tmpfs: {e}"));
    }
    assert!(h.log().poisoned().is_none());
    eprintln!(
        "{ctx}: {} records appended after growing the tmpfs",
        h.log().end_offset() - grown_from
    );
    h.verify("after growing the tmpfs");
    h.reopen("final reopen");
    // The reopened log accepts appends.
    h.append_one(None)
        .unwrap_or_else(|e| panic!("{ctx}: append after the final reopen: {e}"));
    if sc.sync == SyncMode::Manual {
        h.sync().expect("sync");
    }
    h.reopen("last reopen");
    // The log's files must be closed before the guard unmounts.
    drop(h);
    drop(fs);
    Ok(())
}

#[test]
fn full_tmpfs_returns_no_space_and_recovers() {
    if let Some(reason) = skip_reason() {
        common::skip(&format!("real ENOSPC tests: {reason}"));
        return;
    }
    // A deadlock in the log must fail the test, not hang `cargo test`: the scenarios run on a
    // thread of their own, and on timeout the tmpfs is detached (`umount -l`; the stuck
    // thread's files keep it alive until the test process exits).
    let (done_tx, done) = mpsc::channel::<()>();
    let worker = std::thread::Builder::new()
        .name("full tmpfs scenarios".into())
        .spawn(move || {
            run_scenarios();
            let _ = done_tx.send(());
        })
        .expect("spawn the scenarios");
    match done.recv_timeout(WATCHDOG) {
        // Finished, or panicked (the sender was dropped): join to pass the panic on.
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            for path in mounted().drain(..) {
                let _ = run("umount", &["-l", &path.to_string_lossy()]);
            }
            panic!("no result after {WATCHDOG:?}: the log appears to be deadlocked");
        }
    }
}

fn run_scenarios() {
    let scenarios = [
        Scenario {
            name: "always-single",
            seed: 0x5EED_0001,
            sync: SyncMode::Always,
            max_batch: 1,
            tmpfs_size: "4m",
            purge: true,
            superblock_interval_ms: 200,
            posix: false,
        },
        Scenario {
            name: "always-batches",
            seed: 0x5EED_0002,
            sync: SyncMode::Always,
            max_batch: 16,
            tmpfs_size: "4m",
            purge: true,
            superblock_interval_ms: 200,
            posix: false,
        },
        Scenario {
            name: "manual-batches",
            seed: 0x5EED_0003,
            sync: SyncMode::Manual,
            max_batch: 32,
            tmpfs_size: "4m",
            purge: true,
            superblock_interval_ms: 200,
            posix: false,
        },
        // The disk fills inside the first segment, before the superblock was ever rewritten.
        Scenario {
            name: "tiny-first-segment",
            seed: 0x5EED_0004,
            sync: SyncMode::Always,
            max_batch: 8,
            tmpfs_size: "512k",
            purge: false,
            superblock_interval_ms: 60_000,
            posix: false,
        },
        // The same full disks through pwrite/fdatasync.
        Scenario {
            name: "posix-always-batches",
            seed: 0x5EED_0005,
            sync: SyncMode::Always,
            max_batch: 16,
            tmpfs_size: "4m",
            purge: true,
            superblock_interval_ms: 200,
            posix: true,
        },
        Scenario {
            name: "posix-manual-batches",
            seed: 0x5EED_0006,
            sync: SyncMode::Manual,
            max_batch: 32,
            tmpfs_size: "4m",
            purge: true,
            superblock_interval_ms: 200,
            posix: true,
        },
    ];
    for sc in &scenarios {
        if let Err(reason) = scenario(sc) {
            common::skip(&format!("real ENOSPC tests: {reason}"));
            return;
        }
    }
}
