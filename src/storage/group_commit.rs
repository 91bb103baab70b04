//! Pipelined group commit: one flusher thread per log turns appended chunks into write (and
//! fdatasync) submissions and publishes the durable end.
//!
//! Appenders never touch the disk: under the writer lock they encode frames into a chunk, make
//! it readable (the segment keeps unconfirmed chunks in memory) and queue it here. The flusher
//! takes every queued chunk of one segment, up to [`MAX_GROUP_BYTES`] and
//! [`MAX_GROUP_CHUNKS`], as one *group*: a vectored write followed, when durability is wanted,
//! by an fdatasync ordered after it (linked SQEs on io_uring). While one group's fdatasync is in
//! flight the next group is already being written: up to `max_groups_in_flight` groups overlap
//! on backends that complete asynchronously (io_uring); synchronous backends run one at a time
//! on the flusher thread, which still overlaps the appenders' encoding with the disk.
//!
//! Direct segments (`LogOptions::direct_io`): a group someone waits on is one block-aligned
//! O_DIRECT write (see `DirectWrite`), which starts with the partly filled block the previous
//! group ended in. Two writes of that block must not race, so a direct group is formed only
//! when nothing is in flight, and nothing is formed while it is.
//!
//! Groups complete in any order but are retired in submission order, so the durable end only
//! moves forward over a contiguous prefix, and every waiter is woken exactly when its offset is
//! durable, never before. No lock is held across any write or fsync.
//!
//! Failures: ENOSPC on a group stops the pipeline; waiters for offsets at or after that group's
//! first offset get `NoSpace`, and the writer discards that never-acknowledged tail before the
//! next append (see `Log::discard_failed_tail`). Any other error poisons the log.

use super::segment::{Segment, HEADER_REGION_BYTES};
use crate::io::{read_exact_at, AlignedBuf, FileRef, DIRECT_ALIGN_BYTES};
use crate::{Error, Result};
use bytes::Bytes;
use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

/// Most bytes one group writes.
pub const MAX_GROUP_BYTES: usize = 8 << 20;
/// Most chunks one group writes (one iovec each).
pub const MAX_GROUP_CHUNKS: usize = crate::io::MAX_IOVECS;
/// Longest a failed read waits for the groups in flight to retire (`GroupCommit::settle`):
/// they are single writes and fsyncs, done in milliseconds; the bound only keeps a hung
/// device from hanging a reader too.
const SETTLE_TIMEOUT_MS: u64 = 10_000;
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(SETTLE_TIMEOUT_MS);

/// Frames appended by one call, waiting to be written; or, with `barrier`, a segment roll's
/// housekeeping (no bytes), run in queue order.
pub(crate) struct Chunk {
    pub seg: Arc<Segment>,
    pub pos: u64,
    pub bytes: Bytes,
    pub first_offset: u64,
    pub end_offset: u64,
    pub barrier: Option<Arc<dyn Barrier>>,
}

/// Housekeeping of a segment roll (what must precede the new segment's first group: see
/// `writer.rs`, `RollWork`), which the pipeline runs in order: after every group of the old segment
/// has completed and before any group of the new one is formed. The appender that rolled only
/// queues it, so no append waits for it under the writer lock; waiters for offsets in the new
/// segment are acknowledged only after it succeeded (it is retired in order like a synced group).
pub(crate) trait Barrier: Send + Sync {
    /// Does the work, blocking the calling thread (the flusher, or a waiter that submits).
    /// `sync_previous`: the old segment holds frames written without an fsync (manual mode),
    /// which the barrier makes durable first.
    fn run(&self, sync_previous: bool) -> std::io::Result<()>;
    /// What it does, for the poison reason.
    fn what(&self) -> String;
    /// The segment the roll left and its running CRC (ENOSPC: the writer makes it active
    /// again, see `FailedTail`).
    fn previous(&self) -> Option<(Arc<Segment>, u32)>;
    /// A swap's empty segment, which the new file replaces under the same name (see
    /// `Log::adopt_prepared`), and whether the rename was done (the name holds the new file).
    fn replaces(&self) -> (Option<(Arc<Segment>, u32)>, bool);
    /// Removes the new segment's file after a failure (best effort; recovery removes it too).
    fn discard(&self);
}

struct Group {
    id: u64,
    seg: Arc<Segment>,
    start_pos: u64,
    end_pos: u64,
    first_offset: u64,
    end_offset: u64,
    sync: bool,
    /// Written with O_DIRECT.
    direct: bool,
    /// A roll's barrier (see `Barrier`).
    barrier: Option<Arc<dyn Barrier>>,
    /// Writes the segment's header region before its frames (the first group of a segment a
    /// pointer-swap roll made, see `namer.rs`).
    heads: bool,
    done: Option<std::io::Result<()>>,
    /// When it was submitted (for the write + fdatasync latency metric).
    submitted_at: std::time::Instant,
}

/// The never-acknowledged tail a failed group leaves behind.
#[derive(Clone)]
pub(crate) struct FailedTail {
    pub seg: Arc<Segment>,
    pub pos: u64,
    pub first_offset: u64,
    pub path: PathBuf,
    /// A roll's barrier failed with ENOSPC: `seg` is the new segment, never named; the
    /// writer forgets it and everything after it, and reactivates the old segment.
    pub roll: Option<Arc<dyn Barrier>>,
}

struct State {
    queue: VecDeque<Chunk>,
    in_flight: VecDeque<Group>,
    next_group_id: u64,
    /// Exclusive end of the offsets written (completed writes, synced or not).
    written_end: u64,
    durable_end: u64,
    /// Manual mode: offsets below this must be made durable.
    sync_requested: u64,
    /// The segment the last group wrote, for a bare fdatasync.
    last_seg: Option<Arc<Segment>>,
    failed: Option<FailedTail>,
    wakers: Vec<(u64, Waker)>,
    /// The flusher is blocked waiting for work (so an enqueue must wake it).
    flusher_waiting: bool,
    /// Threads blocked in `wait_idle` or `settle` (the only waiters on `progress`; a notify is a system
    /// call, so it is skipped when nobody waits).
    idle_waiters: usize,
    shutdown: bool,
    /// Direct writes: the partly filled block the last group ended in, which the next group
    /// rewrites (kept so that it is not read back from the disk).
    tail: Option<TailBlock>,
    stats: CommitStats,
    /// Bytes of the synced groups retired so far, and when the last synced group was formed:
    /// what the segment preparer paces itself by (`GroupCommit::append_activity`).
    flushed_bytes: u64,
    last_sync_at: std::time::Instant,
    /// Groups written direct (tests).
    #[cfg(test)]
    direct_groups: u64,
}

/// What group commit has done since the log was opened (see [`crate::Log::commit_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Groups written and synced (one write + one fdatasync each, or one `RWF_DSYNC` write
    /// with `direct_io`): the device flushes appends asked for. Roll barriers not counted.
    pub flushes: u64,
    /// Records those flushes made durable: `records_flushed / flushes` is the mean group size.
    pub records_flushed: u64,
    /// Segment rolls whose housekeeping (the owed seal and name, and for a file not prepared
    /// ahead the new segment's header, name and directory fsync)
    /// the pipeline ran off the append path.
    pub roll_barriers: u64,
}

/// The bytes of a segment from a block boundary up to the end of the last group written.
struct TailBlock {
    seg: Arc<Segment>,
    block_pos: u64,
    bytes: Vec<u8>,
}

/// The shared state of one log's group commit.
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    /// Wakes the flusher.
    work: Condvar,
    /// Wakes waiters for durability or idleness.
    progress: Condvar,
    poison: OnceLock<String>,
    /// `State::durable_end`, stored under the lock whenever it changes.
    durable_mirror: AtomicU64,
    sync_always: bool,
    max_in_flight: usize,
    /// No flusher thread: waiters and `Log::pump` do the work (deterministic simulation).
    driven: bool,
    /// Spare buffers for direct writes.
    direct_pool: DirectPool,
    /// Woken when a group that wrote a segment's header region completed: the segment can
    /// be named now (`namer.rs`; set by the log when it starts its background thread).
    headed: OnceLock<Waker>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state stays consistent across a panic in a waiter (every update is a plain field
    // assignment), so a poisoned mutex is recovered rather than spreading the panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GroupCommit {
    /// `driven`: no flusher thread; whoever waits runs the work itself ([`GroupCommit::pump`]).
    pub fn new(
        end_offset: u64,
        sync_always: bool,
        max_in_flight: usize,
        driven: bool,
    ) -> Arc<Self> {
        assert!(max_in_flight >= 1);
        Arc::new(GroupCommit {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                in_flight: VecDeque::new(),
                next_group_id: 0,
                written_end: end_offset,
                durable_end: end_offset,
                sync_requested: end_offset,
                last_seg: None,
                failed: None,
                wakers: Vec::new(),
                flusher_waiting: false,
                idle_waiters: 0,
                shutdown: false,
                tail: None,
                stats: CommitStats::default(),
                flushed_bytes: 0,
                // A new log counts as busy: appends usually follow its open at once.
                last_sync_at: std::time::Instant::now(),
                #[cfg(test)]
                direct_groups: 0,
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
            poison: OnceLock::new(),
            durable_mirror: AtomicU64::new(end_offset),
            sync_always,
            max_in_flight,
            driven,
            direct_pool: DirectPool::default(),
            headed: OnceLock::new(),
        })
    }

    /// Sets what is woken when a segment's header region was written (see `headed`).
    pub fn on_headed(&self, waker: Waker) {
        let _ = self.headed.set(waker);
    }

    /// Driven mode: writes (and fsyncs, as asked) everything queued, on the calling thread,
    /// and retires what completed. The backend must complete a submission before `submit`
    /// returns (the simulated disk and POSIX do; `Log::open` refuses io_uring in driven mode).
    pub fn pump(self: &Arc<Self>) {
        let mut wakes = Wakes::default();
        let mut st = lock(&self.state);
        loop {
            st = self.retire(st, &mut wakes);
            let Some(group) = self.next_group(&mut st) else {
                break;
            };
            drop(st);
            wakes.flush();
            self.submit(group);
            st = lock(&self.state);
        }
        debug_assert!(
            st.in_flight.is_empty(),
            "driven mode with an asynchronous backend"
        );
    }

    pub fn poisoned(&self) -> Option<&str> {
        self.poison.get().map(String::as_str)
    }

    pub fn check_poison(&self) -> Result<()> {
        match self.poison.get() {
            Some(reason) => Err(Error::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Poisons the log (first reason wins) and wakes everyone.
    pub fn poison(&self, reason: String) -> Error {
        if self.poison.set(reason.clone()).is_ok() {
            tracing::error!(%reason, "log poisoned");
        }
        let mut wakes = Wakes::default();
        self.wake_all(&mut lock(&self.state), &mut wakes);
        drop(wakes);
        Error::Poisoned {
            reason: self.poison.get().cloned().unwrap_or(reason),
        }
    }

    fn wake_all(&self, st: &mut State, wakes: &mut Wakes) {
        self.progress.notify_all();
        self.work.notify_all();
        wakes.0.extend(st.wakers.drain(..).map(|(_, w)| w));
    }

    /// Read without the state lock (every append reads it for its frames' durable hint; at
    /// hundreds of writers the lock is the hot spot).
    pub fn durable_end(&self) -> u64 {
        self.durable_mirror.load(Ordering::Acquire)
    }

    /// Groups written direct so far (tests).
    #[cfg(test)]
    pub fn direct_groups(&self) -> u64 {
        lock(&self.state).direct_groups
    }

    pub fn stats(&self) -> CommitStats {
        lock(&self.state).stats
    }

    /// Bytes that synced groups made durable so far, and how long ago the last synced group
    /// was formed (the segment preparer's pace, see `background::Pacer`).
    pub fn append_activity(&self) -> (u64, std::time::Duration) {
        let st = lock(&self.state);
        (st.flushed_bytes, st.last_sync_at.elapsed())
    }

    /// Queues a chunk; the flusher writes it. `wake_flusher` false: the caller is about to
    /// wait for durability and submits the group itself if the flusher is idle (see
    /// `park_until`), so waking the flusher would only cost it a context switch.
    pub fn enqueue(&self, chunk: Chunk, wake_flusher: bool) {
        let mut st = lock(&self.state);
        // After a failure the chunk stays queued until the writer discards the tail (reset).
        st.queue.push_back(chunk);
        // A busy flusher comes back for the queue by itself; waking it costs a context switch
        // per append.
        let wake = wake_flusher && st.flusher_waiting;
        drop(st);
        if wake {
            self.work.notify_one();
        }
    }

    /// Moves the waiters whose offsets are durable into `wakes`, to be woken once the lock is
    /// released: a woken thread's first step is to take this lock, so waking it while the lock
    /// is held would only put it back to sleep on the mutex.
    fn wake_ready(&self, st: &mut State, wakes: &mut Wakes) {
        if st.idle_waiters > 0 {
            self.progress.notify_all();
        }
        let durable = st.durable_end;
        st.wakers.retain(|(target, w)| {
            let ready = *target <= durable;
            if ready {
                wakes.0.push(w.clone());
            }
            !ready
        });
    }

    /// After a truncation or a discarded tail, which both end with an fdatasync of the cut
    /// file (and leave only sealed segments before it): everything below `end` is durable,
    /// nothing at or after it exists.
    pub fn reset(&self, end: u64) {
        let mut wakes = Wakes::default();
        let mut st = lock(&self.state);
        debug_assert!(st.in_flight.is_empty());
        // Chunks queued after a failure belong to the discarded tail.
        st.queue.clear();
        st.written_end = end;
        st.durable_end = end;
        self.durable_mirror.store(end, Ordering::Release);
        st.sync_requested = end;
        st.failed = None;
        st.last_seg = None;
        // The segment's bytes before the new end may have changed (a cut inside the block).
        st.tail = None;
        self.wake_ready(&mut st, &mut wakes);
    }

    /// The outcome for a waiter on `end`, if decided.
    fn outcome(&self, st: &State, end: u64) -> Option<Result<()>> {
        if let Some(reason) = self.poison.get() {
            return Some(Err(Error::Poisoned {
                reason: reason.clone(),
            }));
        }
        if st.durable_end >= end {
            return Some(Ok(()));
        }
        // The pipeline stays stopped until the writer discards the failed tail, so no sync will
        // run: every waiter learns of the full disk now, also for offsets written before the
        // failed group but not yet synced (they stay; a later sync can cover them).
        if let Some(f) = st.failed.as_ref() {
            return Some(Err(Error::NoSpace {
                path: f.path.clone(),
            }));
        }
        None
    }

    fn request_sync(&self, st: &mut State, end: u64) {
        if end > st.sync_requested {
            st.sync_requested = end;
            // With every group synced the request changes nothing the flusher does; a busy
            // flusher sees it when it comes back.
            if !self.sync_always && st.flusher_waiting {
                self.work.notify_one();
            }
        }
    }

    /// Blocks until every offset below `end` is durable. The thread parks and is unparked only
    /// when its own offset became durable (or the log failed): a group commit wakes the waiters
    /// it covers, not everyone.
    pub fn wait_durable(self: &Arc<Self>, end: u64) -> Result<()> {
        self.park_until(end, None, true).map(|_| ())
    }

    /// Like [`GroupCommit::wait_durable`] with a deadline; `Ok(false)` on timeout. Does not ask
    /// for a sync (tailing readers only watch).
    pub fn wait_durable_timeout(
        self: &Arc<Self>,
        end: u64,
        timeout: std::time::Duration,
    ) -> Result<bool> {
        let deadline = std::time::Instant::now() + timeout;
        self.park_until(end, Some(deadline), false)
    }

    fn park_until(
        self: &Arc<Self>,
        end: u64,
        deadline: Option<std::time::Instant>,
        sync: bool,
    ) -> Result<bool> {
        if self.driven {
            // Nobody else would do the work: do it now, then the outcome is decided (a
            // watcher without `sync` may still find its offset not yet durable).
            if sync {
                self.request_sync(&mut lock(&self.state), end);
            }
            self.pump();
            let st = lock(&self.state);
            return match self.outcome(&st, end) {
                Some(r) => r.map(|()| true),
                None if !sync => Ok(false),
                // Only a backend that completes asynchronously gets here (a bug: refused).
                None => Err(self.poison("driven log: a requested sync did not complete".into())),
            };
        }
        let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        // Whether this call's waker is registered. An entry leaves `wakers` only when it is
        // woken for an outcome (durable, failed, poisoned) or on this call's own timeout, so a
        // wake-up that finds no outcome leaves it in place: no rescan of hundreds of waiters
        // under the hot lock per spurious wake-up.
        let mut registered = false;
        loop {
            let mut own_group = None;
            let mut wakes = Wakes::default();
            {
                let mut st = lock(&self.state);
                if sync {
                    self.request_sync(&mut st, end);
                }
                st = self.retire(st, &mut wakes);
                if let Some(r) = self.outcome(&st, end) {
                    return r.map(|()| true);
                }
                // Fast path: with the flusher idle and room in the pipeline, this thread
                // submits the group itself instead of waking the flusher and waiting for it
                // (two context switches less per append). Groups still enter `in_flight`
                // under the lock, so they retire in order whoever submits them.
                if sync && st.flusher_waiting {
                    own_group = self.next_group(&mut st);
                }
                // Registered in the critical section that found no outcome: a completion
                // after it sees the entry, so no wake-up is lost (one lock round per append
                // instead of two).
                if own_group.is_none() && !registered {
                    st.wakers.push((end, waker.clone()));
                    registered = true;
                }
            }
            // Before this thread submits or parks: the others' turn does not wait for it.
            wakes.flush();
            if let Some(sub) = own_group {
                self.submit(sub);
                continue;
            }
            match deadline {
                None => std::thread::park(),
                Some(d) => {
                    let now = std::time::Instant::now();
                    if now >= d {
                        let mut st = lock(&self.state);
                        st.wakers.retain(|(_, w)| !w.will_wake(&waker));
                        return Ok(false);
                    }
                    std::thread::park_timeout(d - now);
                }
            }
        }
    }

    /// A future resolving when every offset below `end` is durable.
    pub fn durable_future(self: &Arc<Self>, end: u64) -> DurableFuture {
        DurableFuture {
            gc: self.clone(),
            end,
        }
    }

    /// Blocks until nothing is queued or in flight. Returns the failed tail, if a group failed
    /// with ENOSPC (the caller must discard it), or the poison error.
    pub fn wait_idle(self: &Arc<Self>) -> Result<Option<FailedTail>> {
        if self.driven {
            self.pump();
        }
        let mut st = lock(&self.state);
        loop {
            self.check_poison()?;
            if st.in_flight.is_empty() && (st.queue.is_empty() || st.failed.is_some()) {
                return Ok(st.failed.clone());
            }
            self.work.notify_one();
            st.idle_waiters += 1;
            st = self.progress.wait(st).unwrap_or_else(|p| p.into_inner());
            st.idle_waiters -= 1;
        }
    }

    /// Blocks until every group in flight now (writes, fsyncs, roll barriers) has retired, or
    /// `SETTLE_TIMEOUT_MS` passes: a failure among them has then been decided (the log
    /// poisoned, or the failed tail recorded). Groups submitted meanwhile are not waited for,
    /// so a steady stream of appends cannot keep the caller here.
    pub fn settle(&self) {
        let deadline = std::time::Instant::now() + SETTLE_TIMEOUT;
        let mut st = lock(&self.state);
        // Ids grow in submission order; every group in flight now has a smaller one.
        let submitted_before = st.next_group_id;
        while st
            .in_flight
            .front()
            .is_some_and(|g| g.id < submitted_before)
            && self.poison.get().is_none()
        {
            let now = std::time::Instant::now();
            if now >= deadline {
                tracing::warn!("groups in flight did not retire within the settle timeout");
                return;
            }
            st.idle_waiters += 1;
            let (guard, _) = self
                .progress
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner());
            st = guard;
            st.idle_waiters -= 1;
        }
    }

    /// The failed tail, if any, without waiting.
    pub fn failed(&self) -> Option<FailedTail> {
        lock(&self.state).failed.clone()
    }

    /// Stops the flusher once everything queued has been written.
    pub fn shutdown(&self) {
        let mut st = lock(&self.state);
        st.shutdown = true;
        drop(st);
        self.work.notify_all();
    }

    /// The flusher thread's body.
    pub fn run_flusher(self: Arc<Self>) {
        let mut wakes = Wakes::default();
        let mut st = lock(&self.state);
        loop {
            st = self.retire(st, &mut wakes);
            if let Some(group) = self.next_group(&mut st) {
                drop(st);
                wakes.flush();
                self.submit(group);
                st = lock(&self.state);
                continue;
            }
            if st.shutdown && st.in_flight.is_empty() && (st.queue.is_empty() || self.stopped(&st))
            {
                self.wake_all(&mut st, &mut wakes);
                return;
            }
            // About to wait on the condvar: nothing may stay unwoken while the flusher sleeps
            // (under the lock here; the flusher rarely retires since completions do).
            wakes.flush();
            st.flusher_waiting = true;
            st = self.work.wait(st).unwrap_or_else(|p| p.into_inner());
            st.flusher_waiting = false;
        }
    }

    fn stopped(&self, st: &State) -> bool {
        st.failed.is_some() || self.poison.get().is_some()
    }

    /// Retires completed groups at the front, in order. After a failure, later groups are
    /// retired without effect: their data lies beyond the failed tail and is discarded.
    fn retire<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        wakes: &mut Wakes,
    ) -> MutexGuard<'a, State> {
        let mut progressed = false;
        while st.in_flight.front().is_some_and(|g| g.done.is_some()) {
            let Some(g) = st.in_flight.pop_front() else {
                break;
            };
            progressed = true;
            let Some(result) = g.done else { continue };
            if self.stopped(&st) {
                continue;
            }
            match result {
                Err(e) if g.barrier.is_some() && e.raw_os_error() != Some(libc::ENOSPC) => {
                    let what = g.barrier.as_ref().map(|b| b.what()).unwrap_or_default();
                    let reason = format!("{what} failed: {e}");
                    if self.poison.set(reason.clone()).is_ok() {
                        tracing::error!(%reason, "log poisoned");
                    }
                    st.queue.clear();
                }
                Ok(()) => {
                    if g.heads {
                        g.seg.header_written(g.sync);
                        wakes.0.extend(self.headed.get().cloned());
                    }
                    g.seg.confirm_written(g.end_pos);
                    st.written_end = st.written_end.max(g.end_offset);
                    if g.barrier.is_some() {
                        st.stats.roll_barriers += 1;
                    } else if g.sync && g.end_offset > g.first_offset {
                        st.stats.flushes += 1;
                        st.stats.records_flushed += g.end_offset - g.first_offset;
                        st.flushed_bytes += g.end_pos - g.start_pos;
                    }
                    if g.sync {
                        st.durable_end = st.durable_end.max(g.end_offset);
                        self.durable_mirror.store(st.durable_end, Ordering::Release);
                        metrics::histogram!("sitelog_fsync_latency_seconds")
                            .record(g.submitted_at.elapsed().as_secs_f64());
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    st.failed = Some(FailedTail {
                        path: g.seg.path.clone(),
                        pos: g.start_pos,
                        seg: g.seg.clone(),
                        first_offset: g.first_offset,
                        roll: g.barrier.clone(),
                    });
                    st.queue.clear();
                }
                Err(e) => {
                    let path = g.seg.path.display();
                    let reason = format!("write or fdatasync of {path} failed: {e}");
                    if self.poison.set(reason.clone()).is_ok() {
                        tracing::error!(%reason, "log poisoned");
                    }
                    st.queue.clear();
                }
            }
        }
        if progressed {
            self.wake_ready(&mut st, wakes);
            if self.stopped(&st) {
                self.wake_all(&mut st, wakes);
            }
        }
        st
    }

    /// Forms the next group to submit, if the pipeline has room and there is work.
    fn next_group(&self, st: &mut State) -> Option<Submission> {
        if self.stopped(st) || st.in_flight.len() >= self.max_in_flight {
            return None;
        }
        let Some(first) = st.queue.front() else {
            return self.bare_sync(st);
        };
        // Nothing overlaps a barrier: it follows every older group and precedes every newer.
        if st.in_flight.iter().any(|g| g.barrier.is_some()) {
            return None;
        }
        if first.barrier.is_some() {
            return self.next_barrier(st);
        }
        let seg = first.seg.clone();
        let start_pos = first.pos;
        let first_offset = first.first_offset;
        let sync = self.sync_always || st.sync_requested > st.durable_end.max(first_offset);
        // Only groups someone waits on are written direct; the others go through the page
        // cache at memory speed (manual mode). A direct write is durable on its own (io_uring
        // writes it `RWF_DSYNC`, which syncs only its own range, or with FUA only itself): so
        // while bytes before it were written through the page cache and not yet synced (a
        // sync asked for in manual mode), the group is a buffered write and a whole-file
        // fdatasync instead, which makes them durable too.
        let earlier_unsynced = st.durable_end < first_offset;
        let direct = seg
            .direct_file()
            .filter(|_| sync && !earlier_unsynced);
        // Two writes of the same partly filled block must not race when one is direct: the
        // older one could land last and erase the newer one's bytes. Page-cache writes among
        // themselves are ordered by the page cache.
        let busy = match direct {
            Some(_) => !st.in_flight.is_empty(),
            None => st.in_flight.iter().any(|g| g.direct),
        };
        if busy {
            return None;
        }
        // The first group of a segment a pointer-swap roll made writes its header region too,
        // in the same write (frames start right after it).
        let header = (start_pos == HEADER_REGION_BYTES)
            .then(|| seg.pending_header())
            .flatten();
        let max_chunks = MAX_GROUP_CHUNKS - usize::from(header.is_some());
        let (mut end_pos, mut end_offset, mut bytes) = (start_pos, first_offset, 0usize);
        let mut bufs = Vec::new();
        while let Some(c) = st.queue.front() {
            let contiguous = Arc::ptr_eq(&c.seg, &seg) && c.pos == end_pos && c.barrier.is_none();
            let fits = bufs.is_empty()
                || (bytes + c.bytes.len() <= MAX_GROUP_BYTES && bufs.len() < max_chunks);
            if !contiguous || !fits {
                break;
            }
            let Some(c) = st.queue.pop_front() else { break };
            end_pos += c.bytes.len() as u64;
            end_offset = c.end_offset;
            bytes += c.bytes.len();
            bufs.push(c.bytes);
        }
        let span = (start_pos, end_pos, first_offset, end_offset);
        let heads = header.is_some();
        // Where the write starts: the header region's start when it leads.
        let write_pos = if heads { 0 } else { start_pos };
        if let Some(h) = header {
            debug_assert_eq!(h.len() as u64, HEADER_REGION_BYTES);
            bufs.insert(0, h);
        }
        if direct.is_none() {
            // The next direct group reads its first block back (from the page cache).
            st.tail = None;
        }
        let direct = direct.map(|file| DirectWrite {
            head: direct_head(st, &seg, write_pos, end_pos, &bufs),
            file,
            seg: seg.clone(),
            start_pos: write_pos,
            pool: self.direct_pool.clone(),
        });
        let mut sub = self.push_group(st, seg, span, sync, bufs);
        if let Some(g) = st.in_flight.back_mut() {
            g.direct = direct.is_some();
            g.heads = heads;
        }
        #[cfg(test)]
        {
            st.direct_groups += u64::from(direct.is_some());
        }
        sub.pos = write_pos;
        sub.direct = direct;
        Some(sub)
    }

    /// The barrier at the front of the queue, once every older group has completed. It counts
    /// as a synced group ending at the roll's offset: everything before it is durable when it
    /// completes (what manual mode wrote without syncing, the barrier syncs).
    fn next_barrier(&self, st: &mut State) -> Option<Submission> {
        if !st.in_flight.is_empty() {
            return None;
        }
        let c = st.queue.pop_front()?;
        let barrier = c.barrier?;
        let sync_previous = st.durable_end < c.first_offset;
        let span = (c.pos, c.pos, c.first_offset, c.end_offset);
        let mut sub = self.push_group(st, c.seg, span, true, Vec::new());
        if let Some(g) = st.in_flight.back_mut() {
            g.barrier = Some(barrier.clone());
        }
        // The next direct group writes another file (or a new first block).
        st.tail = None;
        sub.barrier = Some((barrier, sync_previous));
        Some(sub)
    }

    /// Manual mode: everything is written but a sync was asked for: a bare fdatasync.
    fn bare_sync(&self, st: &mut State) -> Option<Submission> {
        let wanted = st.sync_requested > st.durable_end && st.in_flight.is_empty();
        let seg = st.last_seg.clone().filter(|_| wanted)?;
        let end = st.written_end;
        let pos = seg.read_state(|s| s.data_end);
        Some(self.push_group(st, seg, (pos, pos, end, end), true, Vec::new()))
    }

    fn push_group(
        &self,
        st: &mut State,
        seg: Arc<Segment>,
        (start_pos, end_pos, first_offset, end_offset): (u64, u64, u64, u64),
        sync: bool,
        bufs: Vec<Bytes>,
    ) -> Submission {
        debug_assert!(first_offset <= end_offset && start_pos <= end_pos);
        let id = st.next_group_id;
        st.next_group_id += 1;
        st.last_seg = Some(seg.clone());
        let submitted_at = std::time::Instant::now();
        if sync {
            st.last_sync_at = submitted_at;
        }
        st.in_flight.push_back(Group {
            id,
            seg: seg.clone(),
            start_pos,
            end_pos,
            first_offset,
            end_offset,
            sync,
            direct: false,
            barrier: None,
            heads: false,
            done: None,
            submitted_at,
        });
        Submission {
            id,
            file: seg.file.clone(),
            bufs,
            pos: start_pos,
            sync,
            direct: None,
            barrier: None,
        }
    }

    fn submit(self: &Arc<Self>, sub: Submission) {
        let gc = self.clone();
        let id = sub.id;
        // The completion retires what it can and wakes the waiters it covers itself (on the
        // io_uring ring thread, or inline on a synchronous backend): a hop through the flusher
        // would cost two context switches per group. The flusher is woken only for work it
        // must do: queued chunks, a requested sync, shutdown.
        let done = Box::new(move |result: std::io::Result<()>| {
            let mut wakes = Wakes::default();
            let mut st = lock(&gc.state);
            if let Some(g) = st.in_flight.iter_mut().find(|g| g.id == id) {
                g.done = Some(result);
            }
            st = gc.retire(st, &mut wakes);
            let manual_sync_wanted = !gc.sync_always && st.sync_requested > st.durable_end;
            let wake = st.flusher_waiting
                && (st.shutdown || !st.queue.is_empty() || manual_sync_wanted || gc.stopped(&st));
            drop(st);
            wakes.flush();
            if wake {
                gc.work.notify_one();
            }
        });
        if let Some((barrier, sync_previous)) = &sub.barrier {
            return done(barrier.run(*sync_previous));
        }
        match &sub.direct {
            None => sub.file.submit_write(sub.bufs, sub.pos, sub.sync, done),
            // Filled here, outside the state lock: a group may be megabytes.
            Some(d) => match d.buffer(&sub.bufs) {
                Ok((pos, buf)) => d.file.submit_write(vec![buf], pos, sub.sync, done),
                Err(e) => done(Err(e)),
            },
        }
    }
}

/// A group handed to the backend.
struct Submission {
    id: u64,
    /// The segment's file.
    file: FileRef,
    bufs: Vec<Bytes>,
    pos: u64,
    sync: bool,
    /// Written with O_DIRECT instead, as one block-aligned buffer.
    direct: Option<DirectWrite>,
    /// A roll's housekeeping instead of a write, and whether the old segment needs a sync.
    barrier: Option<(Arc<dyn Barrier>, bool)>,
}

/// Most spare direct-write buffers a log keeps (one group is in flight at a time; one more
/// is being filled).
const DIRECT_POOL_BUFFERS: usize = 2;
/// Capacity of a pooled direct-write buffer: the largest usual group with its first and last
/// blocks. Larger groups (one huge batch) get a buffer of their own.
const DIRECT_POOL_BUFFER_BYTES: usize = MAX_GROUP_BYTES + 2 * DIRECT_ALIGN_BYTES;

/// Spare direct-write buffers: a fresh allocation of megabytes is a fresh mapping whose every
/// page faults and is zeroed by the kernel, a measurable part of the flusher's time.
type DirectPool = Arc<Mutex<Vec<AlignedBuf>>>;

/// How a direct group is laid out, decided in order under the state lock; the buffer is
/// filled outside it (`DirectWrite::buffer`).
struct DirectWrite {
    file: FileRef,
    seg: Arc<Segment>,
    start_pos: u64,
    /// The bytes from the block boundary before `start_pos` up to it, when the last group's
    /// tail had them (None: read them back from the file).
    head: Option<Vec<u8>>,
    pool: DirectPool,
}

/// Takes the last group's tail as the head of the group `start_pos..end_pos` (if it is that
/// group's block), and records this group's own tail for the next one. Frames are assigned
/// positions in order and groups formed in order, so the tail always describes the bytes
/// just before the next group; a truncation or a discarded tail clears it (`reset`).
fn direct_head(
    st: &mut State,
    seg: &Arc<Segment>,
    start_pos: u64,
    end_pos: u64,
    bufs: &[Bytes],
) -> Option<Vec<u8>> {
    let align = DIRECT_ALIGN_BYTES as u64;
    let block_pos = start_pos / align * align;
    let head_len = (start_pos - block_pos) as usize;
    let head = st
        .tail
        .take()
        .filter(|t| {
            Arc::ptr_eq(&t.seg, seg) && t.block_pos == block_pos && t.bytes.len() == head_len
        })
        .map(|t| t.bytes);
    let tail_pos = end_pos / align * align;
    let mut tail = Vec::with_capacity((end_pos - tail_pos) as usize);
    if tail_pos < start_pos {
        // The whole group lies in the block it started in.
        tail.extend_from_slice(head.as_deref().unwrap_or(&[]));
        if tail.len() != head_len {
            // The head must be read back; the next group reads its own.
            return head;
        }
    }
    let mut skip = tail_pos.saturating_sub(start_pos) as usize;
    for b in bufs {
        let from = skip.min(b.len());
        tail.extend_from_slice(&b[from..]);
        skip -= from;
    }
    debug_assert_eq!(tail.len() as u64, end_pos - tail_pos);
    st.tail = Some(TailBlock {
        seg: seg.clone(),
        block_pos: tail_pos,
        bytes: tail,
    });
    head
}

impl DirectWrite {
    /// One block-aligned buffer holding the block's bytes before the group, the group's frames
    /// and zeros up to the next block boundary; returns it with its file position. No group is
    /// in flight (see `next_group`), so the bytes before the group are all in the file.
    fn buffer(&self, bufs: &[Bytes]) -> std::io::Result<(u64, Bytes)> {
        let align = DIRECT_ALIGN_BYTES as u64;
        let block_pos = self.start_pos / align * align;
        let head_len = (self.start_pos - block_pos) as usize;
        let len: usize = head_len + bufs.iter().map(Bytes::len).sum::<usize>();
        let padded = len.div_ceil(DIRECT_ALIGN_BYTES) * DIRECT_ALIGN_BYTES;
        let mut buf = self.take_buffer(padded)?;
        let out = &mut buf.as_mut_slice()[..padded];
        match &self.head {
            Some(head) => out[..head_len].copy_from_slice(head),
            None => read_exact_at(&*self.seg.file, &mut out[..head_len], block_pos)?,
        }
        let mut at = head_len;
        for b in bufs {
            out[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        }
        // A pooled buffer holds an older group's bytes.
        out[at..].fill(0);
        let owner = PooledBuf {
            buf: Some(buf),
            pool: self.pool.clone(),
        };
        Ok((block_pos, Bytes::from_owner(owner).slice(..padded)))
    }

    fn take_buffer(&self, len: usize) -> std::io::Result<AlignedBuf> {
        if len <= DIRECT_POOL_BUFFER_BYTES {
            let spare = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
            return spare.map_or_else(|| AlignedBuf::zeroed(DIRECT_POOL_BUFFER_BYTES), Ok);
        }
        AlignedBuf::zeroed(len)
    }
}

/// A direct-write buffer that goes back to its pool when the write is done with it.
struct PooledBuf {
    buf: Option<AlignedBuf>,
    pool: DirectPool,
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], |b| b.as_ref())
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        let Some(buf) = self.buf.take() else { return };
        if buf.as_ref().len() == DIRECT_POOL_BUFFER_BYTES {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < DIRECT_POOL_BUFFERS {
                pool.push(buf);
            }
        }
    }
}

/// Waiters to wake once the state lock is released (declare it before the guard, so that it
/// is dropped after it, or `flush` it after unlocking).
#[derive(Default)]
struct Wakes(Vec<Waker>);

impl Wakes {
    fn flush(&mut self) {
        for w in self.0.drain(..) {
            w.wake();
        }
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Unparks a thread blocked in `park_until`.
struct ThreadWaker(std::thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Resolves when the offsets it waits for are durable (or the log fails).
pub struct DurableFuture {
    gc: Arc<GroupCommit>,
    end: u64,
}

impl std::fmt::Debug for DurableFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableFuture")
            .field("end", &self.end)
            .finish()
    }
}

impl Future for DurableFuture {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = lock(&self.gc.state);
        self.gc.request_sync(&mut st, self.end);
        if let Some(r) = self.gc.outcome(&st, self.end) {
            return Poll::Ready(r);
        }
        st.wakers.push((self.end, cx.waker().clone()));
        Poll::Pending
    }
}
