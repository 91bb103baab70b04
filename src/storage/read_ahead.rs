//! Read-ahead of a sealed segment for a sequential reader: a helper thread walks the frames
//! ahead of the reader, verifying each frame's checksum exactly as the reader would, and so
//! also faulting the segment's pages in from disk, with `MADV_WILLNEED` hints keeping reads
//! queued ahead of it. The reader's own thread then decodes the headers of frames already
//! verified and skips their checksums: the checksum and the wait for the disk, most of a cold
//! read of small records, move to a second core.
//!
//! Why a thread and not only a kernel hint: hints given on the reader's own thread (a
//! `posix_fadvise` window, `madvise` of each map, software prefetch) changed nothing
//! measurable or blocked the reader (see the README); what bounded a cold iteration of
//! 100-byte records was the reader's CPU time per frame.
//!
//! Trust: the helper verifies the frames of an immutable sealed map (a sealed file never
//! changes; a truncation into it writes a new file), starting at the frame the reader starts
//! at and stepping by each frame's length as the reader does, so the frame starts it vouches
//! for are the reader's. It publishes the end of the last frame it verified; a frame the
//! reader reaches beyond it, or one that failed in the helper, the reader verifies itself
//! (and reports the damage as it always did). Trust is bounded in time as well as in bytes:
//! a verified page the reader reaches much later could have been evicted and read again from
//! the device, unverified. So the helper stays until its reader has caught up (parked), and
//! if the reader makes no progress for `IDLE_EXIT_MS` it revokes everything it vouched for
//! and exits; the reader then verifies every frame itself. A helper that cannot start (thread
//! limit, no thread from the system) changes nothing but the speed.
//!
//! Exposure: the helper touches pages up to `MAX_LEAD_BYTES` ahead of the reader (never past
//! the reader's own bound, see `Job`); an unreadable page there raises SIGBUS in the process,
//! as it would in the reader (every reader of a mapped file shares this).

use super::record;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// A reader starts a helper only after this many bytes of one sealed segment, so that a short
/// read (a few raft entries) never pays for a thread.
pub const START_AFTER_BYTES: u64 = 256 << 10;
/// A reader starts a helper only while at least this many bytes of frames lie ahead (within
/// its bound).
pub const MIN_AHEAD_BYTES: u64 = 1 << 20;
/// The helper publishes its verified end, and the reader its position, once per this many
/// bytes: each publication touches a cache line the other core reads.
pub const PUBLISH_STEP_BYTES: u64 = 256 << 10;
/// The helper stays at most this far ahead of the reader (pages it faulted in must still be
/// in the page cache when the reader gets there, and a reader that stops must not make it
/// read the whole segment).
pub const MAX_LEAD_BYTES: u64 = 16 << 20;
/// The helper asks the kernel to read the segment up to this far ahead of itself (plus one
/// step), in steps of `ADVISE_STEP_BYTES` (`madvise(MADV_WILLNEED)`: it queues the reads and
/// returns), so that the disk always has reads queued in front of both threads; a page fault
/// alone reads a window around the faulting page and leaves the disk idle between windows.
pub const ADVISE_AHEAD_BYTES: u64 = 16 << 20;
pub const ADVISE_STEP_BYTES: u64 = 4 << 20;
/// How often a waiting helper looks for the reader's progress (the reader also wakes it).
const LEAD_POLL_MS: u64 = 10;
/// A waiting helper whose reader reported no progress for this long revokes its trust and
/// exits (the reader verifies the rest itself). The reader reports every
/// `PUBLISH_STEP_BYTES`, so a reader slower than that per `IDLE_EXIT_MS` loses its helper for
/// the rest of the segment (it hardly needs one).
pub const IDLE_EXIT_MS: u64 = 1000;

const _: () = assert!(PUBLISH_STEP_BYTES < MAX_LEAD_BYTES);
const _: () = assert!(START_AFTER_BYTES < MIN_AHEAD_BYTES);
const _: () = assert!(LEAD_POLL_MS < IDLE_EXIT_MS);
const _: () = assert!(ADVISE_STEP_BYTES <= ADVISE_AHEAD_BYTES);

/// What the two threads share.
#[derive(Debug)]
struct Progress {
    /// End (a position in the region) of the last frame the helper verified.
    verified_end: AtomicU64,
    /// The reader's position, as of its last report.
    reader_pos: AtomicU64,
    /// Set when the reader no longer wants the helper.
    stop: AtomicBool,
    /// Set by a helper whose reader went idle: nothing it verified may be trusted any more.
    revoked: AtomicBool,
    /// Set when the walk ended (tests wait for it).
    #[cfg(test)]
    walked: AtomicBool,
}

/// The frames a helper verifies: a sealed segment's map up to its last frame.
#[derive(Debug, Clone)]
pub struct Job {
    pub frames: Bytes,
    /// Position of the first frame (the reader's position).
    pub pos: u64,
    /// The offset of that frame.
    pub offset: u64,
    pub log_id: u64,
    pub max_payload_bytes: u32,
    /// The reader's bound: no frame at or past this offset, nor starting at or past this
    /// position, is verified (a bounded read must not make the helper read beyond it).
    pub end_offset: u64,
    pub end_pos: u64,
    /// `IDLE_EXIT_MS`, except in tests.
    pub idle_exit_ms: u64,
}

/// The reader's handle on its helper; dropping it stops the helper.
#[derive(Debug)]
pub struct ReadAhead {
    progress: Arc<Progress>,
    helper: Thread,
    #[cfg(test)]
    join: Option<JoinHandle<()>>,
    /// The verified end as last loaded (a load per frame would pull the helper's cache line).
    known_end: u64,
    /// The reader reports its position when it passes this.
    next_report: u64,
}

impl ReadAhead {
    /// Starts a helper for `job` if one of `running`'s `limit` slots is free and the system
    /// gives a thread; `None` otherwise (the reader verifies everything itself).
    pub fn start(job: Job, running: &Arc<AtomicUsize>, limit: usize) -> Option<ReadAhead> {
        let slot = Slot::take(running, limit)?;
        let progress = Arc::new(Progress {
            verified_end: AtomicU64::new(job.pos),
            reader_pos: AtomicU64::new(job.pos),
            stop: AtomicBool::new(false),
            revoked: AtomicBool::new(false),
            #[cfg(test)]
            walked: AtomicBool::new(false),
        });
        let shared = progress.clone();
        let first = job.pos;
        // A refused thread drops the closure, and with it the slot.
        let handle: JoinHandle<()> = std::thread::Builder::new()
            .name("sitelog-readahead".into())
            .spawn(move || {
                let _slot = slot;
                run(&job, &shared);
            })
            .ok()?;
        Some(ReadAhead {
            progress,
            helper: handle.thread().clone(),
            #[cfg(test)]
            join: Some(handle),
            known_end: first,
            next_report: first + PUBLISH_STEP_BYTES,
        })
    }

    /// The end of the frames verified so far, as the reader at `pos` may use it: frames that
    /// end at or before it need no checksum. 0 once the helper revoked its trust.
    pub fn verified_end(&mut self, pos: u64) -> u64 {
        if pos >= self.next_report {
            self.progress.reader_pos.store(pos, Ordering::Relaxed);
            self.next_report = pos + PUBLISH_STEP_BYTES;
            self.helper.unpark();
        }
        if self.progress.revoked.load(Ordering::Acquire) {
            return 0;
        }
        if pos >= self.known_end {
            self.known_end = self.progress.verified_end.load(Ordering::Acquire);
        }
        self.known_end
    }

    /// Waits (at most 30 s) until the helper's walk ended; its verified end then. Tests only:
    /// the reader then trusts every frame the helper verified.
    #[cfg(test)]
    pub fn wait_walked(&mut self) -> u64 {
        testing::within_30s(|| self.progress.walked.load(Ordering::Acquire));
        self.known_end = self.progress.verified_end.load(Ordering::Acquire);
        self.known_end
    }

    /// The verified end the helper published last. Tests only.
    #[cfg(test)]
    fn published(&self) -> u64 {
        self.progress.verified_end.load(Ordering::Acquire)
    }

    /// Waits for the helper thread to end (it must end by itself). Tests only.
    #[cfg(test)]
    fn join(&mut self) {
        if let Some(j) = self.join.take() {
            j.join().expect("the helper does not panic");
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.progress.stop.store(true, Ordering::Relaxed);
        self.helper.unpark();
    }
}

/// One of a log's helper slots, given back when its thread ends.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(running: &Arc<AtomicUsize>, limit: usize) -> Option<Slot> {
        running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1))
            .ok()?;
        Some(Slot(running.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The helper: verifies the frames, then stays until its reader caught up.
fn run(job: &Job, progress: &Progress) {
    let Some(verified) = walk(job, progress) else {
        return;
    };
    #[cfg(test)]
    progress.walked.store(true, Ordering::Release);
    // Trust lasts while the reader moves: wait until it reaches the last publication step
    // before the end of what was verified (past it, it does not report again).
    let caught_up = |reader: u64| reader + PUBLISH_STEP_BYTES >= verified;
    wait_for_reader(job, progress, caught_up);
}

/// Verifies frame after frame until the region or the reader's bound ends, or a frame fails
/// (the reader will find it); publishes as it goes. The verified end, or `None` if the reader
/// stopped the helper or went idle (then trust is revoked).
fn walk(job: &Job, progress: &Progress) -> Option<u64> {
    let frames = &job.frames[..];
    let end = frames.len().min(usize::try_from(job.end_pos).unwrap_or(usize::MAX));
    let mut pos = job.pos as usize;
    let mut offset = job.offset;
    let mut published = pos;
    let page_bytes = page_size_bytes();
    let mut advised = pos - pos % page_bytes;
    while pos < end && offset < job.end_offset {
        if progress.stop.load(Ordering::Relaxed) {
            return None;
        }
        if advised < end && advised < pos + ADVISE_AHEAD_BYTES as usize {
            advise_will_need(frames, advised, (ADVISE_STEP_BYTES as usize).min(end - advised));
            advised += ADVISE_STEP_BYTES as usize;
        }
        let Some(buf) = frames.get(pos..) else { break };
        let Ok(h) = record::decode_header(buf, job.log_id, Some(offset), job.max_payload_bytes)
        else {
            break;
        };
        // decode_header checked that the payload lies within `buf`; the padding may not (the
        // last frame); the reader steps the same way.
        pos += h.frame_len().min(buf.len());
        offset += 1;
        if pos - published >= PUBLISH_STEP_BYTES as usize {
            progress.verified_end.store(pos as u64, Ordering::Release);
            published = pos;
            let within_lead = |reader: u64| (pos as u64).saturating_sub(reader) <= MAX_LEAD_BYTES;
            if !wait_for_reader(job, progress, within_lead) {
                return None;
            }
        }
    }
    progress.verified_end.store(pos as u64, Ordering::Release);
    Some(pos as u64)
}

/// The system's page size (`madvise` ranges start on a page).
fn page_size_bytes() -> usize {
    // SAFETY: sysconf reads a constant of the system; it touches no memory of ours.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Asks the kernel to start reading `len` bytes of `region` from `at` into the page cache.
/// Only a range that starts on a page boundary (a file map's do: the map is page-aligned and
/// `at` is a multiple of the page size) is advised; a refusal only loses the hint.
fn advise_will_need(region: &[u8], at: usize, len: usize) {
    let base = region.as_ptr();
    if (base as usize + at) % page_size_bytes() != 0 || at >= region.len() {
        return;
    }
    let len = len.min(region.len() - at);
    // SAFETY: [base + at, base + at + len) lies within `region`, which is mapped for as long
    // as the borrow lasts; MADV_WILLNEED changes no memory contents (for a file map it starts
    // reads into the page cache, for anonymous memory it is a no-op or a swap-in).
    unsafe {
        libc::madvise(base.add(at) as *mut libc::c_void, len, libc::MADV_WILLNEED);
    }
}

/// Waits while `done` is false of the reader's reported position; false if the reader
/// stopped the helper, or made no progress for `job.idle_exit_ms` (trust is then revoked).
fn wait_for_reader(job: &Job, progress: &Progress, done: impl Fn(u64) -> bool) -> bool {
    let mut last_seen = progress.reader_pos.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        if progress.stop.load(Ordering::Relaxed) {
            return false;
        }
        let reader = progress.reader_pos.load(Ordering::Relaxed);
        if done(reader) {
            return true;
        }
        if reader != last_seen {
            last_seen = reader;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_millis(job.idle_exit_ms) {
            progress.revoked.store(true, Ordering::Release);
            return false;
        }
        std::thread::park_timeout(Duration::from_millis(LEAD_POLL_MS));
    }
}

/// Test helpers shared with the reader's tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::time::{Duration, Instant};

    /// Polls `cond` every millisecond until it holds; panics after 30 s (a test fails, it does
    /// not hang). Polling, not spinning: a spinning test starves the other tests' threads on a
    /// 2-core machine.
    pub fn within_30s(mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "not within 30 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::within_30s;
    use super::*;
    use crate::storage::record::{encode_with_lag, RecordRef};
    use crate::EntryKind;

    const LOG_ID: u64 = 0x51;
    const HOUR_MS: u64 = 3_600_000;

    fn frames(n: u64, payload_bytes: usize) -> Bytes {
        let mut out = Vec::new();
        for offset in 0..n {
            let payload = vec![offset as u8; payload_bytes];
            let r = RecordRef {
                offset,
                term: 1,
                timestamp_us: 2,
                kind: EntryKind::Normal,
                payload: &payload,
            };
            encode_with_lag(&mut out, LOG_ID, r, 0);
        }
        Bytes::from(out)
    }

    fn job(frames: &Bytes, idle_exit_ms: u64) -> Job {
        Job {
            frames: frames.clone(),
            pos: 0,
            offset: 0,
            log_id: LOG_ID,
            max_payload_bytes: 1 << 20,
            end_offset: u64::MAX,
            end_pos: u64::MAX,
            idle_exit_ms,
        }
    }

    #[test]
    fn the_helper_verifies_every_frame_and_stops_at_damage() {
        let running = Arc::new(AtomicUsize::new(0));
        let whole = frames(20_000, 100);
        let mut ra = ReadAhead::start(job(&whole, HOUR_MS), &running, 1).unwrap();
        assert_eq!(ra.wait_walked(), whole.len() as u64, "every frame verified");

        // A flipped payload byte in frame 7000: the helper stops at that frame's start.
        let frame_bytes = record::frame_len(100);
        let mut bad = whole.to_vec();
        bad[7000 * frame_bytes + record::HEADER_SIZE_BYTES + 3] ^= 1;
        let mut ra = ReadAhead::start(job(&Bytes::from(bad), HOUR_MS), &running, 2).unwrap();
        assert_eq!(ra.wait_walked(), (7000 * frame_bytes) as u64);
    }

    #[test]
    fn the_helper_stops_at_the_readers_bound() {
        let running = Arc::new(AtomicUsize::new(0));
        let whole = frames(20_000, 100);
        let frame_bytes = record::frame_len(100) as u64;
        let mut by_offset = job(&whole, HOUR_MS);
        by_offset.end_offset = 5000;
        let mut ra = ReadAhead::start(by_offset, &running, 1).unwrap();
        assert_eq!(ra.wait_walked(), 5000 * frame_bytes);
        let mut by_pos = job(&whole, HOUR_MS);
        by_pos.end_pos = 3000 * frame_bytes + 1;
        let mut ra = ReadAhead::start(by_pos, &running, 2).unwrap();
        assert_eq!(ra.wait_walked(), 3001 * frame_bytes, "the frame starting before it");
    }

    #[test]
    fn no_helper_beyond_the_limit_and_the_slot_comes_back() {
        let running = Arc::new(AtomicUsize::new(0));
        let whole = frames(20_000, 100);
        let mut first = ReadAhead::start(job(&whole, HOUR_MS), &running, 1).unwrap();
        // The first holds the one slot until its thread ends (it waits for its reader).
        assert!(ReadAhead::start(job(&whole, HOUR_MS), &running, 1).is_none());
        assert!(ReadAhead::start(job(&whole, HOUR_MS), &running, 0).is_none());
        first.wait_walked();
        // Its reader catches up: the helper ends and gives the slot back.
        assert_eq!(first.verified_end(whole.len() as u64), whole.len() as u64);
        first.join();
        assert_eq!(running.load(Ordering::Acquire), 0);
        assert!(ReadAhead::start(job(&whole, HOUR_MS), &running, 1).is_some());
    }

    #[test]
    fn a_helper_keeps_within_its_lead_and_revokes_its_trust_when_the_reader_idles() {
        let running = Arc::new(AtomicUsize::new(0));
        let whole = frames(40_000, 1000);
        assert!(whole.len() as u64 > 2 * MAX_LEAD_BYTES);
        // The reader never moves: the helper stops at its lead, then gives up on the reader.
        let mut ra = ReadAhead::start(job(&whole, 100), &running, 1).unwrap();
        ra.join();
        let held = ra.published();
        assert!(held >= MAX_LEAD_BYTES, "{held}");
        assert!(held <= MAX_LEAD_BYTES + PUBLISH_STEP_BYTES + 2048, "{held}");
        assert_eq!(ra.verified_end(0), 0, "nothing trusted after an idle exit");
        assert_eq!(running.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_helper_follows_its_reader_and_stops_when_dropped() {
        let running = Arc::new(AtomicUsize::new(0));
        let whole = frames(60_000, 1000);
        // Idle exit an hour away: only the reader's drop can end this helper.
        let mut ra = ReadAhead::start(job(&whole, HOUR_MS), &running, 1).unwrap();
        within_30s(|| ra.published() >= MAX_LEAD_BYTES);
        let pos = MAX_LEAD_BYTES + MAX_LEAD_BYTES / 2;
        ra.verified_end(pos);
        within_30s(|| ra.published() >= pos + MAX_LEAD_BYTES / 2);
        assert!(ra.published() < whole.len() as u64, "still held by its lead");
        drop(ra);
        within_30s(|| running.load(Ordering::Acquire) == 0);
    }
}
