//! The local log façade: open, append, sync, read, close.
//!
//! The append path lives in `writer.rs`, truncation, purge and retention in `truncate.rs`,
//! group commit in `group_commit.rs` and the background thread in `background.rs`.
//!
//! Concurrency: one `writer` mutex orders appends, rolls, truncations and purges; it is never
//! held across the fdatasync of a group commit (the flusher thread runs those). Lock order:
//! writer → superblock → group commit state; the segment map and a segment's state are
//! leaves.

use super::background::{self, Background, BackgroundJob, PrepareStats, SuperblockState};
use super::group_commit::{CommitStats, DurableFuture, GroupCommit};
use super::options::{LogOptions, SyncMode};
use super::reader::{Iter, TailReader};
use super::record::{EntryKind, Record};
use super::recovery::{self, now_us, RecoveryReport};
use super::namer::Namer;
use super::sealer::Sealer;
use super::segment::Segment;
use super::superblock::{Superblock, NO_TRUNCATION};
use crate::io::{IoRef, LockGuard};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One record to append with its Raft metadata (local users call [`Log::append`]).
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    /// Raft term (0 for a local log).
    pub term: u64,
    /// Entry kind.
    pub kind: EntryKind,
    /// Microseconds since the Unix epoch; `None` stamps the append time.
    pub timestamp_us: Option<u64>,
    /// The payload.
    pub payload: &'a [u8],
}

/// What a purge released.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeOutcome {
    /// Segment files deleted.
    pub segments_removed: usize,
    /// Bytes of files deleted.
    pub bytes_removed: u64,
}

/// A local, checksummed, crash-safe append-only log in one directory.
///
/// Cloning is cheap; clones share the same open log. The directory is locked while any clone
/// lives; dropping the last clone writes out what was appended (without fsync, as a crash
/// would leave it) and stops the log's threads.
#[derive(Debug, Clone)]
pub struct Log {
    pub(crate) shared: Arc<Shared>,
}

/// The segment being appended to.
pub(crate) struct Active {
    pub seg: Arc<Segment>,
    /// Running CRC-32 of every byte of the file so far (for the sealed footer).
    pub file_crc: u32,
}

pub(crate) struct Writer {
    pub active: Option<Active>,
    pub next_offset: u64,
    /// The active segment may be one a prepared file can replace (`Log::adopt_prepared`):
    /// set when a segment is created without one, cleared by its first frame. A hint only;
    /// the segment's state is checked before anything is replaced.
    pub adoptable: bool,
}

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) io: IoRef,
    pub(crate) opts: LogOptions,
    pub(crate) log_id: u64,
    pub(crate) segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) superblock: Arc<Mutex<SuperblockState>>,
    pub(crate) gc: Arc<GroupCommit>,
    pub(crate) background: Arc<Background>,
    /// The seal owed for the segment a roll left (see `sealer.rs`).
    pub(crate) sealer: Arc<Sealer>,
    /// The segment a pointer-swap roll made, until it has its name (see `namer.rs`).
    pub(crate) namer: Arc<Namer>,
    pub(crate) written_end: AtomicU64,
    pub(crate) start_offset: AtomicU64,
    /// Truncations begun since open: a reader holding a segment's bytes (a sealed map, a read
    /// window) drops them when this changes, since the offsets past a cut get new records.
    pub(crate) truncations: AtomicU64,
    /// The file system refused `O_DIRECT` once (said once in the log; writes stay buffered).
    pub(crate) direct_refused: AtomicBool,
    /// What retention must keep (see `pin.rs`).
    pub(crate) pins: Arc<super::pin::Pins>,
    /// Read-ahead helpers running for this log's readers (at most `opts.read_ahead_threads`).
    pub(crate) read_ahead_running: Arc<AtomicUsize>,
    recovery: RecoveryReport,
    threads: Mutex<Vec<JoinHandle<()>>>,
    _lock: Box<dyn LockGuard>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("log_id", &self.log_id)
            .finish()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.gc.shutdown();
        self.background.shutdown();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let me = std::thread::current().id();
        // The background thread drops the last handle itself when the owner dropped theirs
        // while it applied retention: it exits on its own once this returns.
        for t in threads.into_iter().filter(|t| t.thread().id() != me) {
            // A panicked thread has nothing left to clean up; the lock is released below.
            let _ = t.join();
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a lock is held can only come from a failed assertion (a bug); the state
    // behind it is left consistent by construction, so recover the guard instead of panicking
    // in every other thread.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Log {
    /// Opens (recovering) or creates the log in `dir`. Fails with [`Error::Locked`] if another
    /// handle holds it, and with [`Error::Corruption`] if durable data is damaged.
    pub fn open(dir: impl AsRef<Path>, opts: LogOptions) -> Result<Log> {
        let _span = tracing::info_span!("log_open", dir = %dir.as_ref().display()).entered();
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let io = opts.io.resolve(opts.direct_io)?;
        if opts.is_driven() && io.name() == "io_uring" {
            return Err(Error::InvalidArgument(
                "a driven log needs a synchronous backend (posix or sim), not io_uring".into(),
            ));
        }
        if io.list(&dir).is_err() {
            io.create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                io.sync_dir(parent).map_err(|e| Error::io(parent, e))?;
            }
        }
        let lock_path = dir.join(recovery::LOCK_FILE);
        let guard = io.lock(&lock_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::Locked { path: dir.clone() },
            _ => Error::io(&lock_path, e),
        })?;
        let rec = recovery::recover(&io, &dir, &opts)?;
        let start = rec.superblock.current().start_offset;
        let active = rec.active.map(|(seg, file_crc)| Active { seg, file_crc });
        let sync_always = opts.sync == SyncMode::Always;
        let gc = GroupCommit::new(
            rec.end_offset,
            sync_always,
            opts.max_groups_in_flight,
            opts.is_driven(),
        );
        let superblock = Arc::new(Mutex::new(SuperblockState {
            writer: rec.superblock,
            written_at: Instant::now(),
        }));
        let namer = Arc::new(Namer::new(io.clone(), dir.clone()));
        let shared = Arc::new(Shared {
            dir,
            io,
            log_id: rec.log_id,
            segments: RwLock::new(rec.segments),
            writer: Mutex::new(Writer {
                active,
                next_offset: rec.end_offset,
                adoptable: opts.preallocate,
            }),
            superblock,
            gc,
            background: Background::new(),
            sealer: Arc::default(),
            namer,
            written_end: AtomicU64::new(rec.end_offset),
            start_offset: AtomicU64::new(start),
            truncations: AtomicU64::new(0),
            direct_refused: AtomicBool::new(false),
            pins: Arc::default(),
            read_ahead_running: Arc::default(),
            recovery: rec.report,
            threads: Mutex::new(Vec::new()),
            opts,
            _lock: guard,
        });
        let log = Log { shared };
        if let Some(active) = lock(&log.shared.writer).active.as_ref() {
            log.attach_direct(&active.seg);
        }
        log.start_threads()?;
        log.finish_recovery()?;
        if !log.shared.opts.is_driven() {
            log.open_active_segment()?;
        }
        Ok(log)
    }

    /// Gives a log without an active segment (a new one, or one whose last segment is
    /// sealed) its next segment now, file, header, name and directory entry durable, so that
    /// the first append does not wait for them: the directory fsync commits the file
    /// system's journal, up to several milliseconds (measured: the slowest of the first 200
    /// appends after opening a new log, issue 16). Without space for it the log still opens
    /// (readers need none); the next append tries again.
    fn open_active_segment(&self) -> Result<()> {
        let mut w = lock(&self.shared.writer);
        if w.active.is_some() {
            return Ok(());
        }
        self.create_segment(&mut w)?;
        match self.quiesce(&mut w) {
            Err(Error::NoSpace { path }) => {
                tracing::warn!(path = %path.display(), "no space for the next segment at open");
                Ok(())
            }
            other => other,
        }
    }

    fn start_threads(&self) -> Result<()> {
        let s = &self.shared;
        if s.opts.is_driven() {
            // No threads: `pump` and the waiters do the flusher's work; nothing is prepared.
            background::remove_leftovers(&s.io, &s.dir);
            return Ok(());
        }
        let gc = s.gc.clone();
        let flusher = std::thread::Builder::new()
            .name("sitelog-flush".into())
            .spawn(move || gc.run_flusher())
            .map_err(|e| Error::io(&s.dir, e))?;
        let job = BackgroundJob {
            bg: s.background.clone(),
            io: s.io.clone(),
            dir: s.dir.clone(),
            segment_size_bytes: s.opts.segment_size_bytes,
            preallocate: s.opts.preallocate,
            superblock: s.superblock.clone(),
            gc: s.gc.clone(),
            sealer: s.sealer.clone(),
            namer: s.namer.clone(),
            interval: Duration::from_millis(s.opts.superblock_interval_ms.max(1)),
            retention: self.retention_timer(),
        };
        let background = std::thread::Builder::new()
            .name("sitelog-background".into())
            .spawn(move || job.run())
            .map_err(|e| Error::io(&s.dir, e))?;
        lock(&s.threads).extend([flusher, background]);
        s.gc.on_headed(s.background.name_waker());
        if s.opts.preallocate {
            s.background.request_prepare();
        }
        Ok(())
    }

    /// The background thread's periodic retention by age (`retention_check_interval_ms`),
    /// when `retention_age_ms` is set. It holds the log weakly: a log nobody holds any more
    /// is not kept open by its own timer.
    fn retention_timer(&self) -> Option<background::RetentionTimer> {
        let s = &self.shared;
        s.opts.retention_age_ms?;
        let weak = Arc::downgrade(s);
        let apply = move || {
            let Some(shared) = weak.upgrade() else {
                return false;
            };
            let log = Log { shared };
            if let Err(e) = log.apply_retention() {
                // A poisoned log refuses; the appender sees that error itself.
                tracing::debug!(error = %e, "periodic retention failed");
            }
            true
        };
        Some(background::RetentionTimer {
            interval: Duration::from_millis(s.opts.retention_check_interval_ms),
            apply: Box::new(apply),
        })
    }

    /// What group commit has done since open: device flushes, the records they carried
    /// (`records_flushed / flushes` is the mean group size) and the rolls run off the append
    /// path.
    pub fn commit_stats(&self) -> CommitStats {
        self.shared.gc.stats()
    }

    /// How the log's segment files were prepared since open: zero-filled whole, or recycled
    /// from segments retention retired (see `LogOptions::preallocate`).
    pub fn prepare_stats(&self) -> PrepareStats {
        self.shared.background.stats()
    }

    /// Gives the active segment its direct-write handle (`LogOptions::direct_io`). Where the
    /// file system refuses `O_DIRECT` it says so once and leaves the segment to buffered
    /// writes, which are just as safe.
    pub(crate) fn attach_direct(&self, seg: &Segment) {
        self.attach_direct_at(seg, &seg.disk_path());
    }

    /// [`Log::attach_direct`] for a segment whose file still lies at `path` (a roll renames
    /// it to the segment's name later).
    pub(crate) fn attach_direct_at(&self, seg: &Segment, path: &Path) {
        let s = &self.shared;
        if !s.opts.direct_io || seg.direct_file().is_some() {
            return;
        }
        match s.io.open_direct(path) {
            Ok(file) => seg.attach_direct(file),
            Err(e) => {
                if !s.direct_refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(dir = %s.dir.display(), error = %e,
                        "O_DIRECT refused; writing through the page cache");
                }
            }
        }
    }

    /// Whether the active segment is written with `O_DIRECT` (false without an active segment,
    /// as a driven log has before its first append, or where the file system refused it).
    #[cfg(test)]
    pub(crate) fn writes_direct(&self) -> bool {
        lock(&self.shared.writer)
            .active
            .as_ref()
            .is_some_and(|a| a.seg.direct_file().is_some())
    }

    /// Completes an interrupted truncation and records the recovered durable end.
    fn finish_recovery(&self) -> Result<()> {
        let pending = background::lock_sb(&self.shared.superblock)
            .writer
            .current()
            .truncate_from;
        let mut w = lock(&self.shared.writer);
        if pending != NO_TRUNCATION {
            self.truncate_locked(&mut w, pending)?;
        }
        let end = w.next_offset;
        let mut sbs = background::lock_sb(&self.shared.superblock);
        let current = sbs.writer.current();
        if current.durable_end != end {
            let next = Superblock {
                durable_end: end,
                ..current
            };
            sbs.writer
                .write(next)
                .map_err(|e| self.poison_with("superblock write", e))?;
        }
        Ok(())
    }

    /// Holds back the rename of the segment a pointer-swap roll makes (see `namer.rs`) until the
    /// returned guard drops: the background thread leaves it to the next roll, `flush` and `close`,
    /// which still name it. A test hook (crash tests of the unnamed window): only with the
    /// `testing` feature.
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn pause_naming(&self) -> impl Drop {
        self.shared.namer.pause()
    }

    /// Driven mode ([`LogOptions::driven`]): writes and fsyncs everything appended so far and
    /// persists the durable watermark, on the calling thread. Appends become durable (and
    /// their waiters wake) only through this call or a blocking wait. A no-op otherwise.
    /// A test hook (the simulation): only with the `testing` feature.
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn pump(&self) -> Result<()> {
        self.pump_driven()
    }

    /// [`Log::pump`]'s work, which [`Log::persist_watermark`] does on a driven log too.
    fn pump_driven(&self) -> Result<()> {
        let s = &self.shared;
        if !s.opts.is_driven() {
            return Ok(());
        }
        s.gc.pump();
        s.gc.check_poison()?;
        // What the background thread does on its own: the seal a roll left.
        self.finish_seal()?;
        let interval = Duration::from_millis(s.opts.superblock_interval_ms);
        background::persist_watermark(&s.superblock, &s.gc, true, interval)
    }

    /// The log's identity (stored in every record frame).
    pub fn log_id(&self) -> u64 {
        self.shared.log_id
    }

    pub(crate) fn max_record_bytes(&self) -> u32 {
        self.shared.opts.max_record_bytes
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The I/O backend in use (`"io_uring"`, `"posix"` or `"sim"`).
    pub fn backend_name(&self) -> &'static str {
        self.shared.io.name()
    }

    /// What recovery did when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.shared.recovery
    }

    /// First readable offset.
    pub fn start_offset(&self) -> u64 {
        self.shared.start_offset.load(Ordering::Acquire)
    }

    /// One past the last appended offset.
    pub fn end_offset(&self) -> u64 {
        self.shared.written_end.load(Ordering::Acquire)
    }

    /// One past the last durable offset.
    pub fn durable_end(&self) -> u64 {
        self.shared.gc.durable_end()
    }

    /// The reason the log is poisoned, if it is.
    pub fn poisoned(&self) -> Option<&str> {
        self.shared.gc.poisoned()
    }

    pub(crate) fn check_poison(&self) -> Result<()> {
        self.shared.gc.check_poison()
    }

    pub(crate) fn poison_with(&self, what: &str, e: std::io::Error) -> Error {
        self.shared.gc.poison(format!("{what} failed: {e}"))
    }

    /// Appends one payload and returns its offset. Durable on return in [`SyncMode::Always`].
    pub fn append(&self, payload: &[u8]) -> Result<u64> {
        Ok(self.append_batch(&[payload])?.start)
    }

    /// Appends payloads as consecutive records and returns their offsets. Durable on return in
    /// [`SyncMode::Always`].
    pub fn append_batch<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<Range<u64>> {
        let recs = normal_records(payloads);
        self.append_records(&recs)
    }

    /// Appends records with explicit term, kind and timestamp (used by replication).
    pub fn append_records(&self, recs: &[NewRecord<'_>]) -> Result<Range<u64>> {
        let will_wait = self.shared.opts.sync == SyncMode::Always;
        let range = self.write_records(recs, will_wait)?;
        if will_wait && !range.is_empty() {
            self.wait_durable_or_discard(range.end)?;
        }
        Ok(range)
    }

    /// Waits for durability; if the disk filled up on the way, discards the never-acknowledged
    /// tail at once, so that the failed records are gone when the error is returned.
    fn wait_durable_or_discard(&self, end: u64) -> Result<()> {
        match self.shared.gc.wait_durable(end) {
            Err(e @ Error::NoSpace { .. }) => {
                // Discards the failed tail (and says NoSpace again, unless another caller
                // already discarded it).
                self.quiesce(&mut lock(&self.shared.writer)).and(Err(e))
            }
            other => other,
        }
    }

    /// Appends without waiting for durability: the records get offsets and are readable at
    /// once; await [`Log::durable`] (or call [`Log::sync_to`]) for durability. This is the
    /// building block of the async API: it never waits for an fsync, not even at a segment
    /// roll (its barrier runs in group commit, the seal after it), except with retention
    /// configured, where a roll waits for its barrier and seal and applies retention.
    pub fn append_nowait<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<Range<u64>> {
        self.write_records(&normal_records(payloads), false)
    }

    /// Appends and resolves once the records are durable, without blocking an async runtime's
    /// thread on I/O (see [`Log::append_nowait`] for the one exception, a roll with retention).
    pub async fn append_batch_async<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<Range<u64>> {
        let range = self.append_nowait(payloads)?;
        self.durable(range.end).await?;
        Ok(range)
    }

    /// A future that resolves when every offset below `end` is durable (it asks for an fsync in
    /// [`SyncMode::Manual`]).
    pub fn durable(&self, end: u64) -> DurableFuture {
        self.shared.gc.durable_future(end)
    }

    /// Makes every appended record durable.
    pub fn sync(&self) -> Result<()> {
        self.wait_durable_or_discard(self.end_offset())
    }

    /// Blocks until the record at `offset` is durable (group commit: concurrent callers share
    /// one fsync).
    pub fn sync_to(&self, offset: u64) -> Result<()> {
        let end = self.end_offset();
        if offset >= end {
            return Err(Error::OutOfRange {
                offset,
                start: self.start_offset(),
                end,
            });
        }
        self.wait_durable_or_discard(offset + 1)
    }

    /// Makes everything durable, completes the seal of a segment the log rolled past (it
    /// normally runs in the background) and persists the watermark; the handle stays usable.
    pub fn flush(&self) -> Result<()> {
        self.check_poison()?;
        self.sync()?;
        // A roll's barrier may still be queued (the records before it were durable already),
        // and its seal follows it: both done here, so that every full segment is sealed; and
        // the name of a segment a pointer-swap roll made, under the same lock (`namer.rs`).
        let mut w = lock(&self.shared.writer);
        self.quiesce(&mut w)?;
        self.finish_naming()?;
        drop(w);
        let interval = Duration::from_millis(self.shared.opts.superblock_interval_ms);
        background::persist_watermark(&self.shared.superblock, &self.shared.gc, true, interval)
    }

    /// What a clean stop needs, through any clone of the handle: everything appended made
    /// durable and the superblock's `durable_end` written (fsynced) up to it, so that no
    /// acknowledged record lies above the on-disk watermark. Recovery then refuses damage to
    /// any of them with [`Error::Corruption`] instead of cutting it as a torn tail. A tail
    /// that failed for lack of space is discarded (it was never acknowledged) and the
    /// watermark still written. Nothing is sealed: a replicated log must seal at the same frame
    /// on every replica. Driven logs are pumped first. The handle stays usable.
    pub(crate) fn persist_watermark(&self) -> Result<()> {
        if self.shared.opts.is_driven() {
            self.pump_driven()?;
        }
        match self.flush() {
            // The failed tail is gone now; what remains is durable.
            Err(Error::NoSpace { .. }) => self.flush(),
            other => other,
        }
    }

    /// Flushes, writes the durable watermark (see [`Log::flush`]) and closes this handle (the
    /// directory unlocks when the last clone drops). Nothing is sealed, for a local log as for
    /// a replicated one: the next open scans the active segment (as after a crash, but with
    /// every record below the watermark, so damage to any of them is [`Error::Corruption`])
    /// and appends continue in the same file. A process that opens and closes a log often
    /// thus leaves no trail of small sealed segments; a segment is sealed only when it is
    /// full (a replicated log's replicas must seal at the same frame, which only the roll at
    /// the segment size guarantees). The cost: the next open reads the active segment's
    /// frames (at most one segment) instead of a footer.
    pub fn close(self) -> Result<()> {
        self.persist_watermark()
    }

    /// Opens the sealed segment file at `path` (verifying it) and puts it in the segment map at
    /// `base`, replacing what was there (readers holding the old map finish on it).
    pub(crate) fn map_sealed(&self, path: &Path, base: u64) -> Result<()> {
        let seg = super::recovery::open_sealed(
            &self.shared.io,
            path,
            self.log_id(),
            base,
            &self.shared.opts,
        )?;
        self.shared
            .segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(base, Arc::new(seg));
        Ok(())
    }

    /// How many handles (clones) of this log exist; the directory stays locked until the last
    /// is dropped.
    pub(crate) fn handles(&self) -> usize {
        Arc::strong_count(&self.shared)
    }

    /// Reads the record at `offset`.
    pub fn read(&self, offset: u64) -> Result<Record> {
        let seg = self.segment_for(offset)?;
        seg.read(offset).map_err(|e| self.read_failure(offset, e))
    }

    /// The error a failed read of `offset` reports. A record not yet durable is read from the
    /// page cache, and an fsync that fails may drop those pages (Linux may; the simulated
    /// disk does): the read then fails (short read, or bytes that do not decode) *before*
    /// the thread that ran the fsync has poisoned the log. A roll's seal is such an fsync,
    /// running in group commit while appends and reads go on. So a failed read of a record
    /// at or above the durable end waits for the groups in flight to retire and reports
    /// `Poisoned` if one of them failed: the caller learns the log's verdict, not a bare I/O
    /// error or a corruption that never was on the disk. Durable records lose no pages: their
    /// errors are returned as they are.
    pub(crate) fn read_failure(&self, offset: u64, e: Error) -> Error {
        let maybe_dropped = matches!(e, Error::Io { .. } | Error::Corruption { .. });
        if !maybe_dropped || offset < self.durable_end() {
            return e;
        }
        self.shared.gc.settle();
        match self.check_poison() {
            Err(poisoned) => poisoned,
            Ok(()) => e,
        }
    }

    /// The segment holding `offset`, checking the readable range: below the start (deleted
    /// by retention or purged) is [`Error::BelowFloor`], never a silent skip.
    pub(crate) fn segment_for(&self, offset: u64) -> Result<Arc<Segment>> {
        let (start, end) = (self.start_offset(), self.end_offset());
        if offset < start {
            return Err(Error::BelowFloor {
                offset,
                first_available: start,
            });
        }
        if offset >= end {
            return Err(Error::OutOfRange { offset, start, end });
        }
        let segs = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let seg = segs.range(..=offset).next_back().map(|(_, s)| s.clone());
        seg.filter(|s| offset < s.end_offset()).ok_or_else(|| {
            // A purge moves the start before it deletes the files: a segment gone since the
            // check above is below the new start.
            let first_available = self.start_offset();
            if offset < first_available {
                Error::BelowFloor {
                    offset,
                    first_available,
                }
            } else {
                Error::OutOfRange { offset, start, end }
            }
        })
    }

    /// Keeps every record at or above `offset` from retention while the pin lives.
    pub fn pin(&self, offset: u64) -> super::pin::Pin {
        super::pin::Pin::new(self.shared.pins.clone(), offset)
    }

    /// Keeps every record at or above `offset` from retention for `lease` (a later call for
    /// the same offset extends it): what a bulk transfer made of many requests holds.
    pub(crate) fn lease_pin(&self, offset: u64, lease: Duration) {
        self.shared.pins.lease(offset, Instant::now(), lease);
    }

    /// When the lease on `offset` ends, if there is one.
    #[cfg(test)]
    pub(crate) fn lease_expiry(&self, offset: u64) -> Option<Instant> {
        self.shared.pins.lease_expiry(offset)
    }

    /// Ends the lease on `offset` within `grace` (sooner if it already ends sooner): the
    /// transfer that held it is done.
    pub(crate) fn shorten_lease_pin(&self, offset: u64, grace: Duration) {
        self.shared
            .pins
            .shorten_lease(offset, Instant::now(), grace);
    }

    /// Iterates records from `from` to the end of the log (as it grows). Starting below the
    /// log's start, or falling below it (retention deleted the next segment before the
    /// iterator reached it), yields [`Error::BelowFloor`].
    pub fn iter(&self, from: u64) -> Iter {
        Iter::new(self.clone(), from)
    }

    /// A reader that yields durable records from `from` and waits for new ones.
    pub fn tail(&self, from: u64) -> TailReader {
        TailReader::new(self.clone(), from)
    }

    /// Waits until `offset` is durable or `timeout` passes.
    pub(crate) fn wait_durable(&self, offset: u64, timeout: Duration) -> Result<()> {
        if self.shared.gc.wait_durable_timeout(offset + 1, timeout)? {
            Ok(())
        } else {
            Err(Error::Timeout { offset })
        }
    }

    /// The segments, oldest first.
    pub(crate) fn segments_snapshot(&self) -> Vec<Arc<Segment>> {
        self.shared
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Total bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        self.segments_snapshot()
            .iter()
            .map(|s| s.size_bytes())
            .sum()
    }

    /// Blocks until the next segment file has been prepared in the background (written zeros,
    /// synced), or `timeout` passes; returns whether it is ready. A new log prepares one right
    /// after `open`; until that is done (about a second for 64 MiB here), its zero writes and
    /// their fdatasync compete with appends for the disk. Latency-sensitive embedders and
    /// benchmarks that just opened a log can wait here first. Always `false` without
    /// `preallocate` or on a driven log (nothing is prepared).
    ///
    /// A segment created without a prepared file (a new log's first segment, made at `open`
    /// before any file was prepared) that still holds no record is replaced by the prepared
    /// file here, and the wait goes on for the next one: the log is then in the state a
    /// long-running log is in, its active segment preallocated (its flushes commit data
    /// only; in the first segment each one also extended the file).
    pub fn wait_prepared(&self, timeout: Duration) -> bool {
        let s = &self.shared;
        if !s.opts.preallocate || s.opts.is_driven() {
            return false;
        }
        let deadline = Instant::now() + timeout;
        if !s.background.wait_prepared(timeout) {
            return false;
        }
        let adopted = {
            let mut w = lock(&s.writer);
            self.adopt_prepared(&mut w)
        };
        match adopted {
            Ok(false) => true,
            Ok(true) => s
                .background
                .wait_prepared(deadline.saturating_duration_since(Instant::now())),
            Err(e) => {
                // The appends that need the segment report it themselves.
                tracing::debug!(error = %e, "an empty segment kept its file");
                false
            }
        }
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.shared
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

fn normal_records<P: AsRef<[u8]>>(payloads: &[P]) -> Vec<NewRecord<'_>> {
    let now = now_us();
    payloads
        .iter()
        .map(|p| NewRecord {
            term: 0,
            kind: EntryKind::Normal,
            timestamp_us: Some(now),
            payload: p.as_ref(),
        })
        .collect()
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
