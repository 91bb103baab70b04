//! Read-ahead of a sealed segment for a sequential reader: a helper thread walks the frames
//! ahead of the reader, verifying each frame's checksum exactly as the reader would, and so
//! also faulting the segment's pages in from disk. The reader's own thread then decodes the
//! headers of frames already verified and skips their checksums: the checksum and the wait for
//! the disk, most of a cold read of small records, move to a second core.
//!
//! Why a thread and not a kernel hint: the mapped segment is already read ahead by the kernel
//! (`madvise` and `posix_fadvise` hints changed nothing measurable, see the README); what
//! bounded a cold iteration of 100-byte records was the reader's CPU time per frame.
//!
//! Trust: the helper verifies the frames of an immutable sealed map (a sealed file never
//! changes; a truncation into it writes a new file), starting at the frame the reader starts
//! at and stepping by each frame's length as the reader does, so the frame starts it vouches
//! for are the reader's. It publishes the end of the last frame it verified; a frame the
//! reader reaches beyond it, or one that failed in the helper, the reader verifies itself
//! (and reports the damage as it always did). A helper that cannot start (thread limit, no
//! thread from the system) changes nothing but the speed.

use super::record;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant};

/// A reader starts a helper only after this many bytes of one sealed segment, so that a short
/// read (a few raft entries, one fetch) never pays for a thread.
pub const START_AFTER_BYTES: u64 = 256 << 10;
/// A reader starts a helper only while at least this many bytes of frames lie ahead.
pub const MIN_AHEAD_BYTES: u64 = 1 << 20;
/// The helper publishes its verified end, and the reader its position, once per this many
/// bytes: each publication touches a cache line the other core reads.
pub const PUBLISH_STEP_BYTES: u64 = 256 << 10;
/// The helper stays at most this far ahead of the reader (pages it faulted in must still be
/// in the page cache when the reader gets there, and a reader that stops must not make it
/// read the whole segment).
pub const MAX_LEAD_BYTES: u64 = 16 << 20;
/// The helper asks the kernel to read the segment this far ahead of itself, in steps of
/// `ADVISE_STEP_BYTES` (`madvise(MADV_WILLNEED)`: it queues the reads and returns), so that
/// the disk always has reads queued in front of both threads; a page fault alone reads a
/// window around the faulting page and leaves the disk idle between windows.
pub const ADVISE_AHEAD_BYTES: u64 = 16 << 20;
pub const ADVISE_STEP_BYTES: u64 = 4 << 20;
/// How often a helper that is far enough ahead looks for the reader's progress.
const LEAD_POLL_MS: u64 = 10;
/// A helper whose reader made no progress for this long exits (the reader verifies the rest
/// itself, should it come back).
pub const IDLE_EXIT_MS: u64 = 1000;

const _: () = assert!(PUBLISH_STEP_BYTES < MAX_LEAD_BYTES);
const _: () = assert!(START_AFTER_BYTES < MIN_AHEAD_BYTES);
const _: () = assert!(LEAD_POLL_MS < IDLE_EXIT_MS);
const _: () = assert!(ADVISE_STEP_BYTES <= ADVISE_AHEAD_BYTES);
const _: () = assert!(ADVISE_STEP_BYTES % PAGE_BYTES as u64 == 0);

/// The page size `madvise` ranges are aligned to (4 KiB on every platform sitelog runs on;
/// a larger page only makes the advice cover more).
const PAGE_BYTES: usize = 4096;

/// What the two threads share.
#[derive(Debug)]
struct Progress {
    /// End (a position in the region) of the last frame the helper verified.
    verified_end: AtomicU64,
    /// The reader's position, as of its last report.
    reader_pos: AtomicU64,
    /// Set when the reader no longer wants the helper.
    stop: AtomicBool,
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
}

/// The reader's handle on its helper; dropping it stops the helper.
#[derive(Debug)]
pub struct ReadAhead {
    progress: Arc<Progress>,
    helper: Thread,
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
        });
        let shared = progress.clone();
        let first = job.pos;
        let handle = std::thread::Builder::new()
            .name("sitelog-readahead".into())
            .spawn(move || {
                let _slot = slot;
                verify(&job, &shared);
            })
            .ok()?;
        Some(ReadAhead {
            progress,
            helper: handle.thread().clone(),
            known_end: first,
            next_report: first + PUBLISH_STEP_BYTES,
        })
    }

    /// The end of the frames verified so far, as the reader at `pos` may use it: frames that
    /// end at or before it need no checksum.
    pub fn verified_end(&mut self, pos: u64) -> u64 {
        if pos >= self.next_report {
            self.progress.reader_pos.store(pos, Ordering::Relaxed);
            self.next_report = pos + PUBLISH_STEP_BYTES;
            self.helper.unpark();
        }
        if pos >= self.known_end {
            self.known_end = self.progress.verified_end.load(Ordering::Acquire);
        }
        self.known_end
    }

    /// Waits until the helper stopped; its verified end then. Tests only: it makes the reader
    /// trust every frame the helper verified.
    #[cfg(test)]
    pub fn wait_done(&mut self) -> u64 {
        while !self.helper_done() {
            std::thread::yield_now();
        }
        self.known_end = self.progress.verified_end.load(Ordering::Acquire);
        self.known_end
    }

    /// The verified end the helper published last. Tests only.
    #[cfg(test)]
    fn published(&self) -> u64 {
        self.progress.verified_end.load(Ordering::Acquire)
    }

    #[cfg(test)]
    fn helper_done(&self) -> bool {
        // The helper holds one reference while it runs.
        Arc::strong_count(&self.progress) == 1
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

/// The helper: verifies frame after frame until the region ends, a frame fails (the reader
/// will find it), the reader stops it or leaves it idle.
fn verify(job: &Job, progress: &Progress) {
    let frames = &job.frames[..];
    let mut pos = job.pos as usize;
    let mut offset = job.offset;
    let mut published = pos;
    let mut advised = pos - pos % PAGE_BYTES;
    while pos < frames.len() {
        if advised < frames.len() && advised < pos + ADVISE_AHEAD_BYTES as usize {
            advise_will_need(frames, advised, ADVISE_STEP_BYTES as usize);
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
            if !wait_for_reader(pos as u64, progress) {
                return;
            }
        }
    }
    progress.verified_end.store(pos as u64, Ordering::Release);
}

/// Asks the kernel to start reading `len` bytes of `region` from `at` (page-aligned) into the
/// page cache. Only a region that starts on a page boundary (a file map does; a simulated
/// disk's heap copy may not) is advised; a refusal only loses the hint.
fn advise_will_need(region: &[u8], at: usize, len: usize) {
    let base = region.as_ptr();
    if base as usize % PAGE_BYTES != 0 || at >= region.len() {
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

/// Waits while the helper at `pos` is more than `MAX_LEAD_BYTES` ahead of the reader; false
/// if the reader stopped it or made no progress for `IDLE_EXIT_MS`.
fn wait_for_reader(pos: u64, progress: &Progress) -> bool {
    let mut last_seen = progress.reader_pos.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        if progress.stop.load(Ordering::Relaxed) {
            return false;
        }
        let reader = progress.reader_pos.load(Ordering::Relaxed);
        if pos.saturating_sub(reader) <= MAX_LEAD_BYTES {
            return true;
        }
        if reader != last_seen {
            last_seen = reader;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_millis(IDLE_EXIT_MS) {
            return false;
        }
        std::thread::park_timeout(Duration::from_millis(LEAD_POLL_MS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::record::{encode_with_lag, RecordRef};
    use crate::EntryKind;

    const LOG_ID: u64 = 0x51;

    fn frames(n: u64, payload_bytes: usize) -> Vec<u8> {
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
        out
    }

    fn job(bytes: Vec<u8>) -> Job {
        Job {
            frames: Bytes::from(bytes),
            pos: 0,
            offset: 0,
            log_id: LOG_ID,
            max_payload_bytes: 1 << 20,
        }
    }

    #[test]
    fn the_helper_verifies_every_frame_and_stops_at_damage() {
        let running = Arc::new(AtomicUsize::new(0));
        let whole = frames(20_000, 100);
        let mut ra = ReadAhead::start(job(whole.clone()), &running, 1).unwrap();
        assert_eq!(ra.wait_done(), whole.len() as u64, "every frame verified");
        assert_eq!(running.load(Ordering::Acquire), 0, "slot given back");

        // A flipped payload byte in frame 7000: the helper stops at that frame's start.
        let frame_bytes = record::frame_len(100);
        let mut bad = whole;
        bad[7000 * frame_bytes + record::HEADER_SIZE_BYTES + 3] ^= 1;
        let mut ra = ReadAhead::start(job(bad), &running, 1).unwrap();
        assert_eq!(ra.wait_done(), (7000 * frame_bytes) as u64);
    }

    #[test]
    fn no_helper_beyond_the_limit() {
        let running = Arc::new(AtomicUsize::new(0));
        let whole = frames(100_000, 1000);
        let first = ReadAhead::start(job(whole.clone()), &running, 1);
        assert!(first.is_some());
        // The first is held at MAX_LEAD_BYTES (its reader never moves), so its slot is taken.
        assert!(ReadAhead::start(job(whole.clone()), &running, 1).is_none());
        assert!(ReadAhead::start(job(whole), &running, 0).is_none());
    }

    #[test]
    fn the_helper_keeps_within_its_lead_and_stops_when_dropped() {
        let running = Arc::new(AtomicUsize::new(0));
        let whole = frames(100_000, 1000);
        let total = whole.len() as u64;
        assert!(total > 4 * MAX_LEAD_BYTES);
        let mut ra = ReadAhead::start(job(whole), &running, 1).unwrap();
        // The reader stays at 0: the helper stops at its lead (plus one publication step).
        while ra.published() < MAX_LEAD_BYTES {
            std::thread::yield_now();
        }
        // Long enough for a helper that ignored its lead to go on by megabytes.
        std::thread::sleep(Duration::from_millis(50));
        let held = ra.published();
        assert!(held <= MAX_LEAD_BYTES + PUBLISH_STEP_BYTES + 2048, "{held}");
        // The reader moves on: so does the helper.
        let pos = 2 * MAX_LEAD_BYTES;
        ra.verified_end(pos);
        while ra.published() < pos + MAX_LEAD_BYTES / 2 {
            std::thread::yield_now();
        }
        drop(ra);
        while running.load(Ordering::Acquire) != 0 {
            std::thread::yield_now();
        }
    }
}
