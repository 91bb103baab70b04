//! The background thread of a log: names the segment a pointer-swap roll made once its header is
//! written (`namer.rs`), seals the segment a roll left (`sealer.rs`), prepares the next segment
//! file (off the append path, its name made durable before it is handed over), persists the durable
//! watermark to the superblock every `superblock_interval_ms`, off the acknowledgement path, and
//! applies retention by age every `retention_check_interval_ms` (an idle log, whose segments are
//! never sealed, still ages out).
//!
//! The next segment file is prepared from a *spare* when there is one: a segment that
//! retention retired, renamed to a prepared name instead of deleted (`Log::purge_locked`).
//! Only the gap between its size and the segment size is written with zeros; its old frames
//! stay in it until the new ones overwrite them (recovery tells them apart: see
//! `recovery::scan_tail`), and the new segment's first group writes a fresh header block
//! before the file takes the segment's name. Otherwise the file is zero-filled whole.

use super::group_commit::GroupCommit;
use super::namer::Namer;
use super::sealer::Sealer;
use super::segment::Segment;
use super::superblock::{Superblock, SuperblockWriter, NO_TRUNCATION};
use crate::io::{AlignedBuf, IoRef, DIRECT_ALIGN_BYTES};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Prefix of prepared segment files, `prepared-{n}.seg.tmp`. Every preparation uses a new
/// name: once a prepared file is handed over and renamed into a segment, nothing can ever open
/// its old name again and write zeros into a live segment. Leftovers from an earlier process
/// are removed by the background thread when it starts, off the open path (after recovery
/// named the one that held the last segment, if any: `recovery::find_unnamed`).
pub const PREPARED_PREFIX: &str = "prepared-";
/// Bytes of zeros written per step while preparing (the thread checks for shutdown between).
/// Small, and written with `O_DIRECT`: a durable append queued behind one step waits well
/// under a millisecond. Through the page cache the 64 MiB of zeros went to the disk as one
/// writeback burst (and one large fdatasync) that the appends' synced writes queued behind:
/// 10-23 ms per append for the ~0.6 s a preparation took (measured, see README).
const PREPARE_STEP_BYTES: usize = 256 << 10;
/// While appends run, a preparation writes at most this many bytes of zeros per byte that
/// synced groups made durable (see `Pacer`): the next segment is then ready by the time the
/// active one is half full, and its zeros are spread between the appends' flushes instead of
/// filling the device queue in front of them. Unpaced, the first 200 appends after opening a
/// new log (the preparation of its second segment running meanwhile) took twice as long as
/// with preparation off, the slowest 3-10 ms (measured, issue 16).
const PACE_ZERO_BYTES_PER_DURABLE_BYTE: u64 = 2;
/// Step while appends run: one such write queued in front of a flush costs it ~0.1 ms.
const PACED_STEP_BYTES: usize = 64 << 10;
/// Appends count as idle when no synced group was formed for this long; the preparation then
/// writes at full speed. Long enough that a writer descheduled for a while still counts as
/// busy, short against the time a preparation takes.
const APPENDS_IDLE_MS: u64 = 50;
const APPENDS_IDLE: Duration = Duration::from_millis(APPENDS_IDLE_MS);
/// Longest a paced preparation waits before it looks at the appends' progress again.
const PACE_POLL_MS: u64 = 1;
const PACE_POLL: Duration = Duration::from_millis(PACE_POLL_MS);

const _: () = {
    assert!(PACED_STEP_BYTES <= PREPARE_STEP_BYTES);
    assert!(PACED_STEP_BYTES % DIRECT_ALIGN_BYTES == 0);
    assert!(PREPARE_STEP_BYTES % DIRECT_ALIGN_BYTES == 0);
    assert!(PACE_ZERO_BYTES_PER_DURABLE_BYTE >= 1, "a preparation must keep up with appends");
    assert!(PACE_POLL_MS < APPENDS_IDLE_MS);
};

/// When a preparation may write its next step of zeros: at full speed while appends are
/// idle; while they run, within a credit of `PACE_ZERO_BYTES_PER_DURABLE_BYTE` per byte they
/// made durable since the preparation began, plus one paced step to start with. Zeros
/// written while the appends were idle are not charged: appends resuming after a long idle
/// stretch would otherwise find the preparation waiting to earn back what it wrote meanwhile
/// (and the next roll might come before it is done).
#[derive(Debug, Clone, Copy)]
struct Pacer {
    /// `GroupCommit::append_activity`'s bytes when the preparation began.
    flushed_at_start: u64,
    /// Zeros charged to the credit: the paced steps taken.
    zeros_written: u64,
}

impl Pacer {
    /// Takes the next step: the bytes it may write now (0: wait), given the appends' durable
    /// bytes so far and the time since their last synced group. A paced step is charged to
    /// the credit whole (the last step of a range may write less).
    fn take_step(&mut self, flushed_bytes: u64, since_last_sync: Duration) -> usize {
        if since_last_sync >= APPENDS_IDLE {
            return PREPARE_STEP_BYTES;
        }
        let durable = flushed_bytes.saturating_sub(self.flushed_at_start);
        let credit = durable
            .saturating_mul(PACE_ZERO_BYTES_PER_DURABLE_BYTE)
            .saturating_add(PACED_STEP_BYTES as u64);
        if self.zeros_written.saturating_add(PACED_STEP_BYTES as u64) <= credit {
            self.zeros_written += PACED_STEP_BYTES as u64;
            PACED_STEP_BYTES
        } else {
            0
        }
    }
}

/// The superblock writer and when it last wrote.
pub(crate) struct SuperblockState {
    pub writer: SuperblockWriter,
    pub written_at: Instant,
}

pub(crate) fn lock_sb(sb: &Mutex<SuperblockState>) -> MutexGuard<'_, SuperblockState> {
    // Updates are single assignments after a successful write: consistent after a panic.
    sb.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes the durable watermark to the superblock if `force` or if the interval passed.
pub(crate) fn persist_watermark(
    sb: &Mutex<SuperblockState>,
    gc: &GroupCommit,
    force: bool,
    interval: Duration,
) -> crate::Result<()> {
    let mut sbs = lock_sb(sb);
    if !force && sbs.written_at.elapsed() < interval {
        return Ok(());
    }
    let durable_end = gc.durable_end();
    let current = sbs.writer.current();
    if current.durable_end != durable_end && current.truncate_from == NO_TRUNCATION {
        let next = Superblock {
            durable_end,
            ..current
        };
        if let Err(e) = sbs.writer.write(next) {
            return Err(gc.poison(format!("superblock write failed: {e}")));
        }
    }
    sbs.written_at = Instant::now();
    Ok(())
}

/// Removes prepared files an earlier process left behind (never segments: only names with
/// the prepared prefix).
pub(crate) fn remove_leftovers(io: &IoRef, dir: &Path) {
    let Ok(names) = io.list(dir) else {
        return;
    };
    for name in names.iter().filter(|n| n.starts_with(PREPARED_PREFIX)) {
        let _ = io.remove(&dir.join(name));
    }
}

/// A prepared segment file: zero-filled, or recycled from a retired segment.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub path: PathBuf,
    /// Recycled: holds a retired segment's stale bytes below the segment size.
    pub recycled: bool,
    /// The retired segment's end offset: every stale frame lies below it (0 if zero-filled).
    pub stale_below: u64,
}

/// How the log's segment files were prepared (counted since open), for tests, metrics and
/// the bandwidth measurement in the README.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrepareStats {
    /// Prepared files zero-filled whole.
    pub zero_filled: u64,
    /// Prepared files recycled from retired segments (only their gap written).
    pub recycled: u64,
    /// Bytes of zeros written to prepare files (whole files and recycled gaps).
    pub zero_bytes_written: u64,
    /// Retired segments renamed to spares instead of deleted.
    pub retired_kept: u64,
    /// Prepared segment files a roll took (to become a segment).
    pub taken: u64,
    /// Spares deleted instead of recycled because something still read them.
    pub spares_still_read: u64,
    /// Prepared files that replaced an empty segment created without one (a new log's
    /// first segment, see `Log::wait_prepared`).
    pub adopted: u64,
}

/// A retired segment renamed to a prepared name, waiting to be prepared.
#[derive(Debug, Clone)]
pub(crate) struct Spare {
    pub path: PathBuf,
    pub len_bytes: u64,
    /// The retired segment's end offset.
    pub stale_below: u64,
    /// The retired segment: its file is overwritten only once this is the last reference.
    pub seg: Arc<Segment>,
}

struct State {
    prepared: Option<Prepared>,
    /// A retired segment renamed to a prepared name, and its length: prepared next.
    spare: Option<Spare>,
    /// Leftovers of earlier processes are gone: spares may be kept from now on (before,
    /// `remove_leftovers` could delete one just renamed).
    accepting_spares: bool,
    stats: PrepareStats,
    /// Number of preparations started, for unique names.
    generation: u64,
    want_prepare: bool,
    /// A roll left a segment to seal (`Sealer`).
    want_seal: bool,
    /// A segment's header region was written: it can be named (`Namer`).
    want_name: bool,
    shutdown: bool,
}

/// Shared between the log and its background thread.
pub(crate) struct Background {
    state: Mutex<State>,
    cv: Condvar,
}

/// Periodic age retention: how often, and the work (false once the log is gone).
pub(crate) struct RetentionTimer {
    pub interval: Duration,
    pub apply: Box<dyn Fn() -> bool + Send>,
}

/// What the background thread works with.
pub(crate) struct BackgroundJob {
    pub bg: Arc<Background>,
    pub io: IoRef,
    pub dir: PathBuf,
    pub segment_size_bytes: u64,
    pub preallocate: bool,
    pub superblock: Arc<Mutex<SuperblockState>>,
    pub gc: Arc<GroupCommit>,
    pub sealer: Arc<Sealer>,
    pub namer: Arc<Namer>,
    pub interval: Duration,
    /// `Some` when `retention_age_ms` is set.
    pub retention: Option<RetentionTimer>,
}

impl Background {
    pub fn new() -> Arc<Self> {
        Arc::new(Background {
            state: Mutex::new(State {
                prepared: None,
                spare: None,
                accepting_spares: false,
                stats: PrepareStats::default(),
                generation: 0,
                want_prepare: false,
                want_seal: false,
                want_name: false,
                shutdown: false,
            }),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the prepared file, if one is ready.
    pub fn take_prepared(&self) -> Option<Prepared> {
        let mut st = self.lock();
        let taken = st.prepared.take();
        st.stats.taken += u64::from(taken.is_some());
        taken
    }

    /// Whether a prepared file is ready.
    pub fn has_prepared(&self) -> bool {
        self.lock().prepared.is_some()
    }

    /// Counts a prepared file that replaced an empty segment.
    pub fn count_adopted(&self) {
        self.lock().stats.adopted += 1;
    }

    /// What preparing has done so far.
    pub fn stats(&self) -> PrepareStats {
        self.lock().stats
    }

    /// A fresh prepared name for a retired segment if a spare is wanted (the thread runs and
    /// holds none): at most one spare waits, beside at most one prepared file.
    pub fn spare_name(&self, dir: &Path) -> Option<PathBuf> {
        let mut st = self.lock();
        if !st.accepting_spares || st.shutdown || st.spare.is_some() {
            return None;
        }
        st.generation += 1;
        Some(dir.join(format!("{PREPARED_PREFIX}{:06}.seg.tmp", st.generation)))
    }

    /// Hands over a retired segment renamed to `path` (a name from `spare_name`).
    pub fn keep_spare(&self, spare: Spare) {
        let mut st = self.lock();
        debug_assert!(st.spare.is_none());
        st.spare = Some(spare);
        st.stats.retired_kept += 1;
        if st.prepared.is_none() {
            // Nothing is prepared (a preparation failed or runs now): prepare from the spare.
            st.want_prepare = true;
            self.cv.notify_all();
        }
    }

    /// Asks for the segment a roll left to be sealed (between two steps of a preparation).
    pub fn request_seal(&self) {
        self.lock().want_seal = true;
        self.cv.notify_all();
    }

    /// What group commit wakes when a segment's header region was written: asks for the
    /// segment to be named (between two steps of a preparation).
    pub fn name_waker(self: &Arc<Self>) -> std::task::Waker {
        std::task::Waker::from(Arc::new(NameWaker(self.clone())))
    }

    /// Asks for the next segment file to be prepared.
    pub fn request_prepare(&self) {
        self.lock().want_prepare = true;
        self.cv.notify_all();
    }

    pub fn shutdown(&self) {
        self.lock().shutdown = true;
        self.cv.notify_all();
    }

    /// Blocks until a prepared file is ready, the thread stops, or `timeout` passes; returns
    /// whether one is ready. A preparation that failed leaves none: the wait runs to the
    /// timeout (the next roll creates its segment without preallocation).
    pub fn wait_prepared(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if st.prepared.is_some() {
                return true;
            }
            let now = Instant::now();
            if st.shutdown || now >= deadline {
                return false;
            }
            st = self
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn is_shutdown(&self) -> bool {
        self.lock().shutdown
    }
}

/// Wakes the background thread to name a segment (see `Background::name_waker`).
struct NameWaker(Arc<Background>);

impl std::task::Wake for NameWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.lock().want_name = true;
        self.0.cv.notify_all();
    }
}

impl BackgroundJob {
    /// The thread's body.
    pub fn run(self) {
        self.remove_leftovers();
        self.bg.lock().accepting_spares = self.preallocate;
        let mut next_retention = self.retention.as_ref().map(|r| Instant::now() + r.interval);
        loop {
            if !self.name_owed() || !self.seal_owed() {
                return;
            }
            let prepare = {
                let mut st = self.bg.lock();
                if !st.shutdown && !st.want_prepare && !st.want_seal && !st.want_name {
                    let wait = next_retention
                        .map_or(self.interval, |at| {
                            at.saturating_duration_since(Instant::now())
                        })
                        .min(self.interval);
                    st = self
                        .bg
                        .cv
                        .wait_timeout(st, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                if st.shutdown {
                    return;
                }
                if st.want_seal || st.want_name {
                    continue;
                }
                let prepare = st.want_prepare && st.prepared.is_none() && self.preallocate;
                st.want_prepare = false;
                st.generation += 1;
                prepare.then(|| (st.generation, st.spare.take()))
            };
            if let Some((generation, spare)) = prepare {
                if !self.prepare_next(generation, spare) {
                    return;
                }
            }
            if let (Some(r), Some(at)) = (&self.retention, next_retention) {
                if Instant::now() >= at {
                    // The check may have dropped the log's last handle (its owner let go
                    // meanwhile): then the directory is unlocked already, and nothing more
                    // may be written.
                    if !(r.apply)() || self.bg.is_shutdown() {
                        return;
                    }
                    next_retention = Some(Instant::now() + r.interval);
                }
            }
            if persist_watermark(&self.superblock, &self.gc, false, self.interval).is_err() {
                return;
            }
        }
    }

    /// Names the segment a pointer-swap roll made, if asked to (its header region was
    /// written); false once the log is poisoned. A full disk leaves it unnamed: the next
    /// roll, `Log::flush` or the next open names it.
    fn name_owed(&self) -> bool {
        if !std::mem::take(&mut self.bg.lock().want_name) {
            return true;
        }
        super::sealer::judge(self.namer.name_ready(), &self.gc, "segment rename").is_ok()
    }

    /// Seals the segment a roll left, if asked to; false once the log is poisoned (a failed
    /// fsync). A full disk leaves the seal owed: the next roll, `Log::flush` or the next open
    /// completes it.
    fn seal_owed(&self) -> bool {
        if !std::mem::take(&mut self.bg.lock().want_seal) {
            return true;
        }
        match super::sealer::judge(self.sealer.run_pending(), &self.gc, "segment seal") {
            // After a seal, as a seal always did; the watermark is a hint (recovery scans the
            // unsealed segments), written here, off the acknowledgement path.
            Ok(true) => persist_watermark(&self.superblock, &self.gc, true, self.interval).is_ok(),
            Ok(false) => true,
            Err(_) => false,
        }
    }

    /// Prepares the next segment file, from the spare if there is one; false on shutdown.
    fn prepare_next(&self, generation: u64, spare: Option<Spare>) -> bool {
        if let Some(spare) = spare {
            let Spare {
                path,
                len_bytes,
                stale_below,
                seg,
            } = spare;
            let filled = match seg.into_unshared() {
                Some((_, file)) => {
                    drop(file);
                    self.fill(&path, len_bytes)
                }
                None => {
                    self.bg.lock().stats.spares_still_read += 1;
                    Err(std::io::Error::other(
                        "a reader still holds the retired segment",
                    ))
                }
            };
            match filled {
                Ok(true) => {
                    let prepared = Prepared {
                        path,
                        recycled: true,
                        stale_below,
                    };
                    return self.ready(prepared);
                }
                Ok(false) => return false,
                Err(e) => {
                    // Not fatal: a new file is zero-filled instead. Readers of a retired
                    // segment still read keep its unlinked inode.
                    tracing::debug!(error = %e, "could not recycle a retired segment file");
                    let _ = self.io.remove(&path);
                }
            }
        }
        let path = self
            .dir
            .join(format!("{PREPARED_PREFIX}{generation:06}.seg.tmp"));
        match self.prepare(&path) {
            Ok(true) => {
                let prepared = Prepared {
                    path,
                    recycled: false,
                    stale_below: 0,
                };
                self.ready(prepared)
            }
            Ok(false) => false,
            Err(e) => {
                // Not fatal: the next segment is created without preallocation.
                tracing::debug!(error = %e, "could not prepare the next segment file");
                let _ = self.io.remove(&path);
                true
            }
        }
    }

    /// Publishes a prepared file.
    fn ready(&self, prepared: Prepared) -> bool {
        let recycled = prepared.recycled;
        let mut st = self.bg.lock();
        st.prepared = Some(prepared);
        let stats = &mut st.stats;
        if recycled {
            stats.recycled += 1;
        } else {
            stats.zero_filled += 1;
        }
        drop(st);
        self.bg.cv.notify_all();
        true
    }

    fn remove_leftovers(&self) {
        remove_leftovers(&self.io, &self.dir);
    }

    /// Writes the zero-filled file and makes its name durable; `Ok(false)` if interrupted by
    /// shutdown. The name must be durable before a roll takes the file: a pointer-swap roll
    /// acknowledges records in it before it has its segment name (`namer.rs`). A recycled
    /// file's prepared name was made durable when it was retired (`Log::purge_locked`).
    fn prepare(&self, path: &Path) -> std::io::Result<bool> {
        let file = self.io.open(path, true)?;
        file.set_len(0)?;
        if !self.write_zeros(path, &*file, 0)? {
            return Ok(false);
        }
        self.io.sync_dir(&self.dir)?;
        Ok(true)
    }

    /// Completes a retired segment of `len_bytes` (at most the segment size) as a prepared
    /// file: zeros from its end to the segment size, then fsync. Its old bytes stay.
    fn fill(&self, path: &Path, len_bytes: u64) -> std::io::Result<bool> {
        let file = self.io.open(path, false)?;
        if file.len()? != len_bytes || len_bytes > self.segment_size_bytes {
            return Err(std::io::Error::other("retired segment changed size"));
        }
        self.write_zeros(path, &*file, len_bytes)
    }

    /// Writes zeros from `from` to the segment size and fsyncs; `Ok(false)` if interrupted
    /// by shutdown. The block-aligned middle goes through an `O_DIRECT` handle where the
    /// file system allows one (see `PREPARE_STEP_BYTES`), the unaligned ends through `file`.
    fn write_zeros(
        &self,
        path: &Path,
        file: &dyn crate::io::File,
        from: u64,
    ) -> std::io::Result<bool> {
        let end = self.segment_size_bytes;
        let align = DIRECT_ALIGN_BYTES as u64;
        let (mid_from, mid_end) = (from.div_ceil(align) * align, end / align * align);
        let direct = (mid_from < mid_end)
            .then(|| self.io.open_direct(path).ok())
            .flatten();
        let mut pacer = Pacer {
            flushed_at_start: self.gc.append_activity().0,
            zeros_written: 0,
        };
        let done = match &direct {
            Some(d) => {
                let zeros = AlignedBuf::zeroed(PREPARE_STEP_BYTES)?;
                self.zeros_in(file, zeros.as_ref(), from, mid_from, &mut pacer)?
                    && self.zeros_in(&**d, zeros.as_ref(), mid_from, mid_end, &mut pacer)?
                    && self.zeros_in(file, zeros.as_ref(), mid_end, end, &mut pacer)?
            }
            None => {
                let zeros = vec![0u8; PREPARE_STEP_BYTES];
                self.zeros_in(file, &zeros, from, end, &mut pacer)?
            }
        };
        if done {
            file.sync_data()?;
        }
        Ok(done)
    }

    /// Writes `zeros` over `from..end` in steps at `pacer`'s pace; `Ok(false)` if
    /// interrupted by shutdown.
    fn zeros_in(
        &self,
        file: &dyn crate::io::File,
        zeros: &[u8],
        from: u64,
        end: u64,
        pacer: &mut Pacer,
    ) -> std::io::Result<bool> {
        let mut pos = from;
        while pos < end {
            let Some(step) = self.wait_for_step(pacer) else {
                return Ok(false);
            };
            let n = (end - pos).min(step.min(zeros.len()) as u64) as usize;
            file.write_at(&zeros[..n], pos)?;
            pos += n as u64;
            self.bg.lock().stats.zero_bytes_written += n as u64;
        }
        Ok(true)
    }

    /// Waits until `pacer` allows a step; its size, or None on shutdown.
    fn wait_for_step(&self, pacer: &mut Pacer) -> Option<usize> {
        loop {
            // A name and a seal go first: the preparation waits one step at most.
            if !self.name_owed() || !self.seal_owed() {
                return None;
            }
            let (flushed_bytes, since_last_sync) = self.gc.append_activity();
            let step = pacer.take_step(flushed_bytes, since_last_sync);
            let st = self.bg.lock();
            if st.shutdown {
                return None;
            }
            if step > 0 {
                return Some(step);
            }
            // Woken early by any request to the thread; the pace is looked at again anyway.
            drop(self.bg.cv.wait_timeout(st, PACE_POLL));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUSY: Duration = Duration::from_millis(1);
    const STEP: u64 = PACED_STEP_BYTES as u64;

    fn pacer_from(flushed_bytes: u64) -> Pacer {
        Pacer {
            flushed_at_start: flushed_bytes,
            zeros_written: 0,
        }
    }

    #[test]
    fn idle_appends_let_a_preparation_run_at_full_speed() {
        let mut pacer = pacer_from(0);
        assert_eq!(pacer.take_step(0, BUSY), PACED_STEP_BYTES);
        assert_eq!(pacer.take_step(0, APPENDS_IDLE - BUSY), 0);
        for _ in 0..100 {
            assert_eq!(pacer.take_step(0, APPENDS_IDLE), PREPARE_STEP_BYTES);
        }
    }

    #[test]
    fn busy_appends_get_one_step_then_credit_by_their_durable_bytes() {
        let mut pacer = pacer_from(1000);
        assert_eq!(pacer.take_step(1000, BUSY), PACED_STEP_BYTES);
        assert_eq!(pacer.take_step(1000, BUSY), 0, "no durable bytes: no credit");
        let half_step = STEP / PACE_ZERO_BYTES_PER_DURABLE_BYTE;
        assert_eq!(pacer.take_step(1000 + half_step - 1, BUSY), 0);
        assert_eq!(pacer.take_step(1000 + half_step, BUSY), PACED_STEP_BYTES);
        assert_eq!(pacer.take_step(1000 + half_step, BUSY), 0, "the credit was spent");
        // Bytes made durable before the preparation began buy nothing.
        assert_eq!(pacer_from(1000).take_step(500, BUSY), PACED_STEP_BYTES);
    }

    /// Zeros written at full speed while appends were idle are not charged to the appends
    /// that resume: half a step of theirs buys the next step, as if the idle stretch had not
    /// been.
    #[test]
    fn zeros_written_while_appends_are_idle_are_not_charged() {
        let mut pacer = pacer_from(0);
        assert_eq!(pacer.take_step(0, BUSY), PACED_STEP_BYTES);
        for _ in 0..100 {
            assert_eq!(pacer.take_step(0, APPENDS_IDLE), PREPARE_STEP_BYTES);
        }
        assert_eq!(pacer.take_step(0, BUSY), 0);
        let half_step = STEP / PACE_ZERO_BYTES_PER_DURABLE_BYTE;
        assert_eq!(pacer.take_step(half_step, BUSY), PACED_STEP_BYTES);
    }

    /// Appends of 1 KiB groups, the preparation writing whenever allowed: it never gets
    /// ahead of its credit, and it has written a whole segment by the time the appends have
    /// filled half of one (so the next roll finds it prepared).
    #[test]
    fn a_paced_preparation_keeps_to_its_credit_and_finishes_by_half_a_segment() {
        let segment_bytes: u64 = 64 << 20;
        let mut pacer = pacer_from(0);
        let (mut durable, mut zeros) = (0u64, 0u64);
        while zeros < segment_bytes {
            durable += 1024;
            while zeros < segment_bytes {
                let step = pacer.take_step(durable, BUSY) as u64;
                if step == 0 {
                    break;
                }
                zeros += step;
                assert!(zeros <= durable * PACE_ZERO_BYTES_PER_DURABLE_BYTE + STEP);
            }
        }
        assert!(durable <= segment_bytes / 2, "prepared after {durable} durable bytes");
    }
}
