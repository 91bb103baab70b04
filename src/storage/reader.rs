//! Readers: a sequential iterator and a tailing reader that waits for durable records.

use super::read_ahead::{self, ReadAhead};
use super::record::{self, Record};
use super::segment::Segment;
use crate::{Error, Log, Result};
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Bytes an iterator reads at a time from an unsealed segment.
const READ_CHUNK_BYTES: u64 = 1 << 20;

/// Sequential reader over records from an offset to the log's end (as it grows).
///
/// Sealed segments are walked in their memory map; the unsealed one is read in 1 MiB chunks.
/// Every frame's checksum is verified; a failure ends the iteration with `Corruption`.
#[derive(Debug)]
pub struct Iter {
    log: Log,
    next: u64,
    cursor: Option<Cursor>,
    done: bool,
    /// How far the caller will read, if it said so ([`Iter::bounded`]): read-ahead never goes
    /// beyond it. Frame bytes served so far count against `max_bytes`.
    bound: Bound,
    served_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bound {
    end_offset: u64,
    max_bytes: u64,
}

#[derive(Debug)]
struct Cursor {
    seg: Arc<Segment>,
    pos: u64,
    /// Bytes starting at file position `window_pos`.
    window: Bytes,
    window_pos: u64,
    /// Once the segment is sealed: its frames (the map up to `data_end`) and its end offset,
    /// taken once, so that each record costs no lock (a sealed segment never changes; a
    /// truncation into it makes a new file, which `truncations` catches).
    sealed: Option<(Bytes, u64)>,
    /// `Shared::truncations` when the cursor was made.
    truncations: u64,
    /// Where the sealed walk began, and the helper verifying frames ahead of it, once this
    /// cursor has read enough of the segment to start one (see `read_ahead.rs`).
    sealed_from: u64,
    ahead: Option<ReadAhead>,
    ahead_tried: bool,
}

impl Iter {
    pub(crate) fn new(log: Log, from: u64) -> Self {
        Iter {
            log,
            next: from,
            cursor: None,
            done: false,
            bound: Bound {
                end_offset: u64::MAX,
                max_bytes: u64::MAX,
            },
            served_bytes: 0,
        }
    }

    /// Tells the iterator that its caller reads no record at or past `end_offset` and at most
    /// about `max_bytes` (of frames): read-ahead stays within that (a bounded Raft read must
    /// not make a helper read, or start, beyond it).
    pub(crate) fn bounded(mut self, end_offset: u64, max_bytes: u64) -> Self {
        self.bound = Bound {
            end_offset,
            max_bytes,
        };
        self
    }

    /// The offset the next call will return.
    pub fn position(&self) -> u64 {
        self.next
    }

    fn step(&mut self) -> Result<Option<Record>> {
        if self.next >= self.log.end_offset() {
            return Ok(None);
        }
        // Read after the end: a truncation that began since made the cursor stale (offsets
        // past the cut get new records), and one that began after this load is later than
        // this read.
        let truncations = self.log.shared.truncations.load(Ordering::SeqCst);
        let stale = self.cursor.as_ref().is_none_or(|c| {
            c.truncations != truncations
                || self.next >= c.sealed.as_ref().map_or_else(|| c.seg.end_offset(), |s| s.1)
        });
        if stale {
            let seg = self.log.segment_for(self.next)?;
            let pos = seg.locate(self.next)?;
            self.cursor = Some(Cursor {
                seg,
                pos,
                window: Bytes::new(),
                window_pos: 0,
                sealed: None,
                truncations,
                sealed_from: pos,
                ahead: None,
                ahead_tried: false,
            });
        }
        let Some(c) = self.cursor.as_mut() else {
            return Ok(None);
        };
        if c.sealed.is_none() {
            let (sealed, data_end, end) = c.seg.read_state(|s| (s.sealed, s.data_end, s.end_offset));
            if !sealed {
                let frame = c.window_for(data_end)?;
                let rec = decode(&c.seg, &frame, 0, c.pos, 0, &self.log, self.next)?;
                return Ok(c.advance(rec, &mut self.next));
            }
            let map = c.seg.map()?;
            if data_end > map.len() as u64 {
                let detail = "sealed file shorter than its frames".to_string();
                return Err(c.seg.corruption(c.pos, Some(self.next), detail));
            }
            c.sealed = Some((map.slice(..data_end as usize), end));
            c.sealed_from = c.pos;
        }
        let bytes_left = self.bound.max_bytes.saturating_sub(self.served_bytes);
        let verified_end = c.read_ahead(&self.log, self.next, self.bound.end_offset, bytes_left);
        let Some((frames, _)) = c.sealed.as_ref() else {
            return Ok(None);
        };
        if c.pos > frames.len() as u64 {
            let detail = "frame position outside the sealed segment".to_string();
            return Err(c.seg.corruption(c.pos, Some(self.next), detail));
        }
        let (at, verified) = (c.pos as usize, verified_end as usize);
        let rec = decode(&c.seg, frames, at, c.pos, verified, &self.log, self.next)?;
        Ok(c.advance(rec, &mut self.next))
    }

    /// Waits until the read-ahead helper of the current segment (if any) ended its walk; true
    /// if there was one. Tests only: the reader then skips every checksum the helper verified.
    #[cfg(test)]
    pub(crate) fn wait_read_ahead(&mut self) -> bool {
        self.cursor
            .as_mut()
            .and_then(|c| c.ahead.as_mut())
            .map(|a| a.wait_walked())
            .is_some()
    }
}

impl Cursor {
    /// The end of the frames of this sealed segment that a read-ahead helper verified (0 if
    /// none), starting the helper once this cursor has read `START_AFTER_BYTES` with at least
    /// `MIN_AHEAD_BYTES` still ahead. `next` is the offset of the frame at `pos`.
    fn read_ahead(&mut self, log: &Log, next: u64, end_offset: u64, bytes_left: u64) -> u64 {
        if let Some(a) = self.ahead.as_mut() {
            return a.verified_end(self.pos);
        }
        if self.ahead_tried || self.pos < self.sealed_from + read_ahead::START_AFTER_BYTES {
            return 0;
        }
        self.ahead_tried = true;
        let Some((frames, _)) = self.sealed.as_ref() else {
            return 0;
        };
        let limit = log.shared.opts.read_ahead_threads;
        let end_pos = self.pos.saturating_add(bytes_left).min(frames.len() as u64);
        let ahead_bytes = end_pos.saturating_sub(self.pos);
        if limit == 0
            || log.shared.opts.is_driven()
            || ahead_bytes < read_ahead::MIN_AHEAD_BYTES
            || end_offset <= next
        {
            return 0;
        }
        let job = read_ahead::Job {
            frames: frames.clone(),
            pos: self.pos,
            offset: next,
            log_id: log.log_id(),
            max_payload_bytes: log.max_record_bytes(),
            end_offset,
            end_pos,
            idle_exit_ms: read_ahead::IDLE_EXIT_MS,
        };
        self.ahead = ReadAhead::start(job, &log.shared.read_ahead_running, limit);
        self.ahead.as_mut().map_or(0, |a| a.verified_end(self.pos))
    }

    /// Moves past `rec`, the record at `*next`.
    fn advance(&mut self, rec: Record, next: &mut u64) -> Option<Record> {
        self.pos += record::frame_len(rec.payload.len()) as u64;
        *next += 1;
        Some(rec)
    }

    /// Bytes from `pos` onward holding at least the whole frame at `pos` (as far as the
    /// frame's declared length can be trusted), refilling the window from the file if needed.
    fn window_for(&mut self, data_end: u64) -> Result<Bytes> {
        let window_end = self.window_pos + self.window.len() as u64;
        if self.pos >= self.window_pos && self.pos < window_end {
            let rest = self.window.slice((self.pos - self.window_pos) as usize..);
            if declared_frame_len(&rest).is_some_and(|len| len <= rest.len() as u64) {
                return Ok(rest);
            }
        }
        if let Some(bytes) = self.seg.unwritten_at(self.pos) {
            self.window = bytes.clone();
            self.window_pos = self.pos;
            return Ok(bytes);
        }
        // Only what is already in the file; newer bytes are in the unwritten chunks.
        let data_end = data_end.min(self.seg.written_end());
        let mut head = [0u8; record::HEADER_SIZE_BYTES];
        let head_len =
            (record::HEADER_SIZE_BYTES as u64).min(data_end.saturating_sub(self.pos)) as usize;
        crate::io::read_exact_at(&*self.seg.file, &mut head[..head_len], self.pos)
            .map_err(|e| Error::io(&self.seg.path, e))?;
        let frame_len = declared_frame_len(&head[..head_len]).unwrap_or(0);
        let want = READ_CHUNK_BYTES
            .max(frame_len)
            .min(data_end.saturating_sub(self.pos));
        let mut buf = vec![0u8; want as usize];
        // The read-ahead beyond this frame may meet the end of the file: a follower's
        // uncommitted tail can be truncated between `data_end` above and this read. Only the
        // frame at `pos` must be whole.
        let got = crate::io::read_up_to(&*self.seg.file, &mut buf, self.pos)
            .map_err(|e| Error::io(&self.seg.path, e))?;
        if (got as u64) < frame_len.min(want) {
            let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read");
            return Err(Error::io(&self.seg.path, eof));
        }
        buf.truncate(got);
        self.window = Bytes::from(buf);
        self.window_pos = self.pos;
        Ok(self.window.clone())
    }
}

/// Decodes the frame at `at` in `region` (at file position `pos`) as the record at `next`,
/// skipping its checksum if it ends within `region`'s first `verified_end` bytes (frames a
/// read-ahead helper verified; 0: none).
fn decode(
    seg: &Segment,
    region: &Bytes,
    at: usize,
    pos: u64,
    verified_end: usize,
    log: &Log,
    next: u64,
) -> Result<Record> {
    let (id, max) = (log.log_id(), log.max_record_bytes());
    record::decode_record_trusting(region, at, id, Some(next), max, verified_end)
        .map_err(|e| seg.corruption(pos, Some(next), e.to_string()))
}

/// The frame length a header declares (bounded by the format's hard limit), unverified.
fn declared_frame_len(b: &[u8]) -> Option<u64> {
    if b.len() < record::HEADER_SIZE_BYTES {
        return None;
    }
    let payload_len = u32::from_le_bytes([b[4], b[5], b[6], b[7]]).min(record::MAX_PAYLOAD_BYTES);
    Some(record::frame_len(payload_len as usize) as u64)
}

impl Iterator for Iter {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(r)) => {
                self.served_bytes += r.frame.len() as u64;
                Some(Ok(r))
            }
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(self.log.read_failure(self.next, e)))
            }
        }
    }
}

/// Yields durable records in order, waiting for the next one to become durable.
#[derive(Debug)]
pub struct TailReader {
    iter: Iter,
}

impl TailReader {
    pub(crate) fn new(log: Log, from: u64) -> Self {
        TailReader {
            iter: Iter::new(log, from),
        }
    }

    /// The offset the next call will return.
    pub fn position(&self) -> u64 {
        self.iter.next
    }

    /// Returns the next durable record, waiting up to `timeout` for it; `Error::Timeout` if
    /// none arrived (call again to keep waiting).
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Record> {
        let offset = self.iter.next;
        self.iter.log.wait_durable(offset, timeout)?;
        match self.iter.step()? {
            Some(r) => Ok(r),
            None => Err(Error::Timeout { offset }),
        }
    }
}
