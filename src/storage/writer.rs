//! The append path: encode frames into a chunk, publish it to readers, queue it for group
//! commit; roll and create segments (the seal follows: `sealer.rs`); discard a tail that failed
//! for lack of space.

use super::background::{Prepared, PREPARED_PREFIX};
use super::namer::Namer;
use super::checksum::{checksum, checksum_append};
use super::group_commit::{Barrier, Chunk};
use super::index::{SparseIndex, INDEX_ENTRY_SIZE_BYTES};
use super::log::{lock, Active, NewRecord, Writer};
use super::record::{self, RecordRef};
use super::recovery::now_us;
use super::sealer::Sealer;
use super::segment::{self, Segment, SegmentState, FOOTER_BYTES, HEADER_REGION_BYTES};
use crate::io::{FileRef, IoRef};
use crate::{Error, Log, Result};
use bytes::Bytes;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Where each record of a chunk went: (offset, file position, timestamp).
type Notes = Vec<(u64, u64, u64)>;

/// What an append writes: records to encode, or verified frames to copy as they are (with the
/// offsets their headers carry).
enum Input<'a> {
    Records(&'a [NewRecord<'a>]),
    Frames(&'a [Bytes], &'a [u64]),
}

impl Input<'_> {
    fn len(&self) -> usize {
        match self {
            Input::Records(r) => r.len(),
            Input::Frames(f, _) => f.len(),
        }
    }

    fn frame_len(&self, i: usize) -> usize {
        match self {
            Input::Records(r) => record::frame_len(r[i].payload.len()),
            Input::Frames(f, _) => f[i].len(),
        }
    }
}

impl Log {
    fn validate_batch(&self, recs: &[NewRecord<'_>]) -> Result<()> {
        let opts = &self.shared.opts;
        if recs.len() > opts.max_batch_records {
            return Err(Error::InvalidArgument(format!(
                "batch of {} records exceeds max_batch_records {}",
                recs.len(),
                opts.max_batch_records
            )));
        }
        if let Some(r) = recs
            .iter()
            .find(|r| r.payload.len() > opts.max_record_bytes as usize)
        {
            return Err(Error::InvalidArgument(format!(
                "payload of {} bytes exceeds max_record_bytes {}",
                r.payload.len(),
                opts.max_record_bytes
            )));
        }
        Ok(())
    }

    /// Assigns offsets, makes the records readable and queues them for writing; returns their
    /// offsets. If it fails part-way across a segment roll, a prefix of the batch may stay in
    /// the log, unacknowledged, exactly as after a crash. `will_wait`: the caller waits for
    /// durability right after (and submits the group itself when the flusher is idle), so the
    /// flusher is not woken for the last chunk.
    pub(crate) fn write_records(
        &self,
        recs: &[NewRecord<'_>],
        will_wait: bool,
    ) -> Result<Range<u64>> {
        self.validate_batch(recs)?;
        self.write_input(Input::Records(recs), will_wait)
    }

    /// Appends frames exactly as they are (as another replica stored them), at the next
    /// offsets: each must decode with this log's id and checksum, be exactly one whole frame,
    /// and carry the offset it lands at; otherwise nothing is appended
    /// ([`Error::InvalidArgument`]). Like [`Log::append_nowait`], it does not wait for
    /// durability. The checksums are verified before the writer lock is taken.
    pub(crate) fn append_frames(&self, frames: &[Bytes]) -> Result<Range<u64>> {
        let opts = &self.shared.opts;
        if frames.len() > opts.max_batch_records {
            return Err(Error::InvalidArgument(format!(
                "batch of {} frames exceeds max_batch_records {}",
                frames.len(),
                opts.max_batch_records
            )));
        }
        let mut offsets = Vec::with_capacity(frames.len());
        for f in frames {
            let h = record::decode_header(f, self.shared.log_id, None, opts.max_record_bytes)
                .map_err(|e| Error::InvalidArgument(format!("frame refused: {e:?}")))?;
            if h.frame_len() != f.len() {
                return Err(Error::InvalidArgument("not exactly one whole frame".into()));
            }
            offsets.push(h.offset);
        }
        self.write_input(Input::Frames(frames, &offsets), false)
    }

    fn write_input(&self, input: Input<'_>, will_wait: bool) -> Result<Range<u64>> {
        self.check_poison()?;
        let mut w = lock(&self.shared.writer);
        self.check_poison()?;
        if self.shared.gc.failed().is_some() {
            // Records appended earlier (not yet synced) hit a full disk: they are discarded
            // now, and this call says so instead of silently reusing their offsets.
            self.quiesce(&mut w)?;
        }
        // Only a caller that waits for durability right after swaps here (the wait for the
        // swap's barrier costs it about what the wait for its own group would): the
        // no-wait appends (the async API, replication) never wait for an fsync.
        if will_wait && w.adoptable {
            self.adopt_prepared(&mut w)?;
        }
        let first = w.next_offset;
        let n = input.len();
        if first + n as u64 > record::MAX_OFFSET {
            return Err(Error::InvalidArgument(format!(
                "offsets above {} are not supported",
                record::MAX_OFFSET
            )));
        }
        if let Input::Frames(_, offsets) = &input {
            if !offsets.iter().copied().eq(first..first + n as u64) {
                return Err(Error::InvalidArgument(format!(
                    "frames for offsets {:?}.. do not continue the log at {first}",
                    offsets.first()
                )));
            }
        }
        let hint = self.durable_end();
        let seg_size = self.shared.opts.segment_size_bytes;
        let estimate: usize = (0..n).map(|i| input.frame_len(i)).sum();
        let mut buf = Vec::with_capacity(estimate.min(seg_size as usize));
        let mut notes: Notes = Vec::with_capacity(n);
        // Index entries the unpublished frames will add, and the position of the last one:
        // the seal decision counts the index exactly, so that it depends only on the frames
        // and not on how appends were batched (replicas then roll at the same offsets).
        let (mut pending_index, mut last_kept) = (0usize, None);
        let interval = self.shared.opts.index_interval_bytes;
        for (i, offset) in (first..).enumerate().take(n) {
            let flen = input.frame_len(i) as u64;
            let (data_end, index_len, published_last) = self.ensure_active(&mut w)?;
            let mut pos = data_end + buf.len() as u64;
            if pending_index == 0 {
                last_kept = published_last;
            }
            let mut adds = SparseIndex::would_keep(interval, last_kept, pos as u32);
            // Room for this frame, the index entries and the footer: the sealed file never
            // outgrows the segment (nor its preallocated space). Normally `full_after` sealed
            // the segment before this can happen; it still can for an active segment written
            // before that rule or with a smaller `max_record_bytes`.
            let seal_bytes = (index_len + pending_index + adds as usize) as u64
                * INDEX_ENTRY_SIZE_BYTES as u64
                + FOOTER_BYTES as u64;
            // A segment already full (its seal failed, or a crash came between the frame
            // that filled it and the seal) is sealed before anything else goes in.
            let full = self.full_after(pos, index_len + pending_index);
            if (full || pos + flen + seal_bytes > seg_size) && pos > HEADER_REGION_BYTES {
                self.publish_chunk(&mut w, &mut buf, &mut notes, true);
                self.roll(&mut w)?;
                pos = self.ensure_active(&mut w)?.0;
                (pending_index, last_kept, adds) = (0, None, true);
            }
            if adds {
                pending_index += 1;
                last_kept = Some(pos as u32);
            }
            let timestamp_us = match &input {
                Input::Records(recs) => {
                    let r = &recs[i];
                    let timestamp_us = r.timestamp_us.unwrap_or_else(now_us);
                    let rec = RecordRef {
                        offset,
                        term: r.term,
                        timestamp_us,
                        kind: r.kind,
                        payload: r.payload,
                    };
                    if self.shared.opts.durable_hints {
                        record::encode(&mut buf, self.shared.log_id, rec, hint.min(offset));
                    } else {
                        record::encode_with_lag(&mut buf, self.shared.log_id, rec, 0);
                    }
                    timestamp_us
                }
                Input::Frames(frames, _) => {
                    buf.extend_from_slice(&frames[i]);
                    record::u64_at(&frames[i], record::TIMESTAMP_AT)
                }
            };
            notes.push((offset, pos, timestamp_us));
            if self.full_after(pos + flen, index_len + pending_index) {
                self.publish_chunk(&mut w, &mut buf, &mut notes, true);
                self.roll(&mut w)?;
                (pending_index, last_kept) = (0, None);
            }
        }
        self.publish_chunk(&mut w, &mut buf, &mut notes, !will_wait);
        Ok(first..w.next_offset)
    }

    /// Whether a segment whose frames end at `data_end`, with `index_entries`, is full: it
    /// could not take one more frame of the largest size (with its index entry) and still
    /// seal. A segment is sealed right after the frame that fills it, so the decision depends
    /// only on the frames in it and never on the next one, which a truncation or a crash may
    /// replace: replicas holding the same frames seal the same files. (The cost: at most one
    /// largest frame of space per segment.)
    fn full_after(&self, data_end: u64, index_entries: usize) -> bool {
        let opts = &self.shared.opts;
        let largest_frame = record::frame_len(opts.max_record_bytes as usize) as u64;
        let seal_bytes =
            (index_entries + 1) as u64 * INDEX_ENTRY_SIZE_BYTES as u64 + FOOTER_BYTES as u64;
        data_end + largest_frame + seal_bytes > opts.segment_size_bytes
    }

    /// Makes sure there is an active segment; returns its data end, index length and the
    /// position of its last index entry.
    fn ensure_active(&self, w: &mut Writer) -> Result<(u64, usize, Option<u32>)> {
        if w.active.is_none() {
            self.create_segment(w)?;
        }
        let state = w.active.as_ref().map(|a| {
            a.seg
                .read_state(|s| (s.data_end, s.index.len(), s.index.last_pos()))
        });
        Ok(state.unwrap_or((HEADER_REGION_BYTES, 0, None)))
    }

    /// Publishes the encoded frames to readers and queues them for group commit (waking an
    /// idle flusher if `wake_flusher`).
    fn publish_chunk(
        &self,
        w: &mut Writer,
        buf: &mut Vec<u8>,
        notes: &mut Notes,
        wake_flusher: bool,
    ) {
        let (Some(active), Some(&(first_offset, _, _))) = (w.active.as_mut(), notes.first()) else {
            return;
        };
        let seg = active.seg.clone();
        let bytes = Bytes::from(std::mem::take(buf));
        let pos = seg.read_state(|s| s.data_end);
        debug_assert_eq!(notes[0].1, pos);
        active.file_crc = checksum_append(active.file_crc, &bytes);
        let end_offset = first_offset + notes.len() as u64;
        let new_end = pos + bytes.len() as u64;
        seg.push_unwritten(pos, bytes.clone());
        seg.update_state(|s| {
            debug_assert_eq!(s.end_offset, first_offset);
            for &(offset, at, ts) in notes.iter() {
                s.index
                    .observe((offset - seg.base_offset) as u32, at as u32);
                s.max_timestamp_us = s.max_timestamp_us.max(ts);
            }
            s.data_end = new_end;
            s.file_len = s.file_len.max(new_end);
            s.end_offset = end_offset;
        });
        w.next_offset = end_offset;
        w.adoptable = false;
        self.shared.written_end.store(end_offset, Ordering::Release);
        self.shared.gc.enqueue(
            Chunk {
                seg,
                pos,
                bytes,
                first_offset,
                end_offset,
                barrier: None,
            },
            wake_flusher,
        );
        notes.clear();
    }

    /// Waits until group commit is idle. If a group failed for lack of space, discards the
    /// never-acknowledged tail from that group on and returns `NoSpace`: the caller's operation
    /// did not happen, and the records it may have seen are gone.
    pub(crate) fn quiesce(&self, w: &mut Writer) -> Result<()> {
        let Some(failed) = self.shared.gc.wait_idle()? else {
            // Idle includes the seal a roll left: what follows (retention, truncation, a
            // snapshot's list of sealed segments) sees every full segment sealed.
            return self.finish_seal();
        };
        if let Some(roll) = failed.roll.clone() {
            return self.undo_failed_roll(w, failed, &*roll);
        }
        let seg = failed.seg;
        if !w.active.as_ref().is_some_and(|a| Arc::ptr_eq(&a.seg, &seg)) {
            self.undo_rolls(w, &seg);
        }
        let cut = seg
            .file
            .set_len(failed.pos)
            .and_then(|_| seg.file.sync_data());
        cut.map_err(|e| self.poison_with("cutting a tail that failed with ENOSPC", e))?;
        seg.drop_unwritten();
        let rel = (failed.first_offset - seg.base_offset) as u32;
        seg.update_state(|s| {
            s.index.truncate(rel);
            s.end_offset = failed.first_offset;
            s.data_end = failed.pos;
            s.file_len = failed.pos;
        });
        // A pointer-swap roll's segment whose first group failed: its header region is still
        // to be written (the next group writes it), and the running CRC starts from it.
        let pending_header = seg
            .pending_header()
            .filter(|_| failed.pos == HEADER_REGION_BYTES);
        let crc = match pending_header {
            Some(header) => Ok(checksum(&header)),
            None => segment::crc_of_prefix(&*seg.file, failed.pos),
        }
        .map_err(|e| self.poison_with("segment read", e))?;
        let max_ts = seg.max_timestamp_below(failed.pos)?;
        seg.update_state(|s| s.max_timestamp_us = max_ts);
        if let Some(active) = w.active.as_mut() {
            active.file_crc = crc;
        }
        w.next_offset = failed.first_offset;
        self.shared
            .written_end
            .store(failed.first_offset, Ordering::Release);
        self.shared.gc.reset(failed.first_offset);
        tracing::warn!(
            offset = failed.first_offset,
            "discarded unacknowledged tail after ENOSPC"
        );
        Err(Error::NoSpace { path: failed.path })
    }

    /// Completes the seal a roll left, on this thread if the background thread has not begun
    /// it (see `sealer.rs`). A full disk leaves it owed: nothing acknowledged depends on it,
    /// and the next roll, flush or open completes it. Any other failure poisons the log.
    pub(crate) fn finish_seal(&self) -> Result<()> {
        // A poisoned log's seal stays undone (recovery completes it from what is durable).
        self.check_poison()?;
        let outcome = self.shared.sealer.finish().map(|()| true);
        super::sealer::judge(outcome, &self.shared.gc, "segment seal").map(drop)
    }

    /// Names the segment a pointer-swap roll made, on this thread if the background thread
    /// has not (see `namer.rs`); the caller holds the writer lock with group commit idle. A
    /// full disk leaves it unnamed (recovery finds it by its header); any other failure
    /// poisons the log.
    pub(crate) fn finish_naming(&self) -> Result<()> {
        self.check_poison()?;
        let outcome = self.shared.namer.finish().map(|()| true);
        super::sealer::judge(outcome, &self.shared.gc, "segment rename").map(drop)
    }

    /// A roll's barrier failed for lack of space: the new segment (never named) and every
    /// record in it or after it are discarded; the old segment is active again (the barrier
    /// does not write to it). The next append retries the roll.
    fn undo_failed_roll(
        &self,
        w: &mut Writer,
        failed: super::group_commit::FailedTail,
        roll: &dyn Barrier,
    ) -> Result<()> {
        let base = failed.first_offset;
        debug_assert_eq!(base, failed.seg.base_offset);
        let (replaced, renamed) = roll.replaces();
        if replaced.is_some() && renamed {
            // A swap failed after its rename: the name holds the new file, and the replaced
            // segment's file has lost it. Neither can be written on safely; a reopen finds a
            // valid empty segment under the name either way.
            return Err(self.shared.gc.poison(format!(
                "{} failed for lack of space after its rename",
                roll.what()
            )));
        }
        self.undo_rolls(w, &failed.seg);
        let mut segments = self
            .shared
            .segments
            .write()
            .unwrap_or_else(|p| p.into_inner());
        segments.remove(&base);
        // A swap that failed before its rename: the empty segment still has its name, and
        // is the log's segment at `base` again.
        if let Some((seg, _)) = &replaced {
            segments.insert(base, seg.clone());
        }
        drop(segments);
        roll.discard();
        w.active = roll.previous().or(replaced).map(|(seg, file_crc)| {
            debug_assert!(!seg.is_sealed());
            Active { seg, file_crc }
        });
        w.next_offset = base;
        self.shared.written_end.store(base, Ordering::Release);
        self.shared.gc.reset(base);
        tracing::warn!(offset = base, "a segment roll failed for lack of space; undone");
        Err(Error::NoSpace { path: failed.path })
    }

    /// A group of `failed` failed after the writer had rolled past it: the rolls' barriers
    /// never ran (a failure clears the queue), so the segments after it were never named.
    /// They are forgotten and `failed` is active again (its tail is cut next); their files,
    /// still under temporary or prepared names, are left for the next open to remove (none
    /// was headed: their barriers never ran).
    fn undo_rolls(&self, w: &mut Writer, failed: &Arc<Segment>) {
        let mut segs = self
            .shared
            .segments
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let later: Vec<u64> = segs
            .range(failed.base_offset + 1..)
            .map(|(&b, _)| b)
            .collect();
        for base in later {
            segs.remove(&base);
        }
        drop(segs);
        w.active = Some(Active {
            seg: failed.clone(),
            // Recomputed from the file once the tail is cut.
            file_crc: 0,
        });
    }

    /// Rolls to the next segment: the active one is full and takes no more frames. The roll
    /// itself is a pointer swap under the writer lock, and so is its barrier when it takes a
    /// prepared file (the new segment's first group writes its header, the namer renames it
    /// afterwards: `namer.rs`); otherwise the new segment's header, name and directory entry
    /// are the barrier that group commit runs in order (see `RollWork`), off the append path.
    /// The old segment is sealed after it (`sealer.rs`). With retention configured the roll
    /// then waits for both and applies retention inline (as before).
    fn roll(&self, w: &mut Writer) -> Result<()> {
        if w.active.is_none() {
            return Ok(());
        }
        let opts = &self.shared.opts;
        if opts.retention_bytes.is_none() && opts.retention_age_ms.is_none() {
            return self.create_segment(w);
        }
        // The next file is asked for only after retention: a segment it retires then becomes
        // that file (recycled) instead of racing a new file's zero-fill.
        let rolled = self.create_segment_replacing(w, &mut None, false);
        let retained = rolled
            .and_then(|()| self.quiesce(w))
            .and_then(|()| self.retention_locked(w).map(drop));
        if opts.preallocate {
            self.shared.background.request_prepare();
        }
        retained
    }

    /// Replaces an active segment that was created without a prepared file and holds no
    /// frame yet by the prepared file, if one is ready; returns whether it did. A new log's
    /// first segment is created at `open`, before any file could be prepared: as an empty
    /// file, each flush into it extends the file and so commits the file system's journal
    /// too, which halved the throughput of 8 durable writers against a prepared segment
    /// (measured, issue 16). The replacement is a roll to the same base: its barrier makes the
    /// prepared file's header durable and renames it over the empty segment (at every crash
    /// point a valid empty segment has the name), and readers at that base, which find no
    /// record in the old segment, look the segment up again.
    pub(crate) fn adopt_prepared(&self, w: &mut Writer) -> Result<bool> {
        if !self.shared.opts.preallocate || !self.shared.background.has_prepared() {
            return Ok(false);
        }
        // Checked before and after the wait below: a segment with a frame (the common case
        // of `wait_prepared`) costs no wait for group commit.
        if !self.holds_only_an_unprepared_empty_segment(w) {
            w.adoptable = false;
            return Ok(false);
        }
        // The empty segment's own roll barrier runs first (nothing else can be queued: it
        // holds no frame).
        self.quiesce(w)?;
        if self.shared.sealer.owed() {
            // A seal left owed by a full disk: the swap's barrier would need it done first,
            // and would fail the same way. Tried again later.
            return Ok(false);
        }
        if !self.holds_only_an_unprepared_empty_segment(w) {
            w.adoptable = false;
            return Ok(false);
        }
        let mut empty = w.active.take();
        if let Err(e) = self.create_segment_replacing(w, &mut empty, true) {
            w.active = empty;
            return Err(e);
        }
        // The swap is done when its barrier has run (for `wait_prepared`'s caller; an
        // appender's first group would wait behind it anyway). Without space for it, it is
        // undone (`undo_failed_roll`): before its rename the empty segment is the active one
        // again; after it the log is poisoned.
        self.quiesce(w)?;
        self.shared.background.count_adopted();
        Ok(true)
    }

    /// Whether the active segment starts at the next offset, holds no frame and was not
    /// preallocated (a prepared file is segment-sized from the start).
    fn holds_only_an_unprepared_empty_segment(&self, w: &Writer) -> bool {
        let seg_size = self.shared.opts.segment_size_bytes;
        w.active.as_ref().is_some_and(|a| {
            let base = a.seg.base_offset;
            base == w.next_offset
                && !a.seg.is_sealed()
                && a.seg.read_state(|s| {
                    s.end_offset == base
                        && s.data_end == HEADER_REGION_BYTES
                        && s.file_len < seg_size
                })
        })
    }

    /// Makes the segment starting at the next offset the active one. Only cheap steps run
    /// here, under the writer lock: take the prepared file (or create a file under a temporary
    /// name), open it, and queue a [`RollWork`] barrier, which group commit runs before it
    /// forms any group of the new segment. Into a prepared file (a pointer swap, `namer.rs`)
    /// the barrier writes nothing: the segment's first group writes its header, and the namer
    /// renames it once that is durable (recovery finds it by its header before). Otherwise
    /// the barrier writes and fsyncs the new header, renames the file to the segment's name
    /// and fsyncs the directory, in that order: no record in it is acknowledged before its
    /// name is durable. A swap (`replaces`) always takes that path: its rename replaces the
    /// empty segment under the same name. The old active segment, whose frames are all
    /// durable by then, is sealed after the barrier (`sealer.rs`); recovery's rule: only the
    /// last two segments may be unsealed.
    pub(crate) fn create_segment(&self, w: &mut Writer) -> Result<()> {
        self.create_segment_replacing(w, &mut None, true)
    }

    /// `create_segment`, for a swap: the new file replaces `replaces` (an empty segment at
    /// the same base, taken from it once nothing can fail any more) under its name.
    /// `prepare_next`: ask for the next file now (the caller asks later otherwise).
    fn create_segment_replacing(
        &self,
        w: &mut Writer,
        replaces: &mut Option<Active>,
        prepare_next: bool,
    ) -> Result<()> {
        let base = w.next_offset;
        let path = Segment::path_in(&self.shared.dir, base);
        // A replicated log's segments carry no node-local creation time, so that replicas
        // that sealed a segment at the same offsets hold the same file.
        let created_us = if self.shared.opts.durable_hints {
            now_us()
        } else {
            0
        };
        let header = segment::encode_header(self.shared.log_id, base, created_us);
        let (file, from, prepared) = self.segment_file(base, &path)?;
        if self.shared.opts.preallocate && prepare_next {
            self.shared.background.request_prepare();
        }
        let file_len = file.len().map_err(|e| Error::io(&from, e))?;
        let state = SegmentState {
            end_offset: base,
            data_end: HEADER_REGION_BYTES,
            index: SparseIndex::new(self.shared.opts.index_interval_bytes),
            max_timestamp_us: 0,
            sealed: false,
            file_len,
        };
        let opts = &self.shared.opts;
        let seg = Segment::new(
            path.clone(),
            file.clone(),
            self.shared.log_id,
            base,
            opts.max_record_bytes,
            state,
        );
        seg.set_created_version();
        // A pointer-swap roll (`namer.rs`): a prepared file, whose name is durable already,
        // needs no barrier work of its own; its first group writes the header.
        let swap = prepared && replaces.is_none();
        if swap {
            seg.set_unnamed(from.clone(), Bytes::copy_from_slice(&header));
        }
        let seg = Arc::new(seg);
        // Opened under the name the file has now (the barrier or the namer renames it later).
        self.attach_direct_at(&seg, &from);
        let work = RollWork {
            previous: w.active.take().map(|a| (a.seg, a.file_crc)),
            replaces: replaces.take().map(|a| (a.seg, a.file_crc)),
            renamed: AtomicBool::new(false),
            file,
            header: header.clone(),
            from,
            to: path,
            io: self.shared.io.clone(),
            dir: self.shared.dir.clone(),
            sealer: self.shared.sealer.clone(),
            background: self.shared.background.clone(),
            namer: self.shared.namer.clone(),
            unnamed: swap.then(|| seg.clone()),
        };
        self.shared
            .segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(base, seg.clone());
        self.shared.gc.enqueue(
            Chunk {
                seg: seg.clone(),
                pos: HEADER_REGION_BYTES,
                bytes: Bytes::new(),
                first_offset: base,
                end_offset: base,
                barrier: Some(Arc::new(work)),
            },
            true,
        );
        w.active = Some(Active {
            seg,
            file_crc: checksum(&header),
        });
        w.adoptable = !prepared && self.shared.opts.preallocate;
        Ok(())
    }

    /// The file of a new segment, the name it has until its roll barrier (or the namer) renames it,
    /// and whether it is a prepared file: the prepared file if one is ready, otherwise a new empty
    /// file under a temporary name (recovery removes it if a crash comes first).
    fn segment_file(&self, base: u64, path: &Path) -> Result<(FileRef, PathBuf, bool)> {
        let io = &self.shared.io;
        let prepared = self
            .shared
            .opts
            .preallocate
            .then(|| self.shared.background.take_prepared())
            .flatten();
        if let Some(file) = prepared.as_ref().and_then(|p| self.open_prepared(p, base)) {
            return Ok((file, prepared.map(|p| p.path).unwrap_or_default(), true));
        }
        let mut name = path.as_os_str().to_owned();
        name.push(segment::TEMP_SUFFIX);
        let tmp = PathBuf::from(name);
        let file: FileRef = io.open(&tmp, true).map_err(|e| match e.raw_os_error() {
            // A file system out of space can refuse the file itself (no inode, no room for
            // its directory entry): the same outcome as a full disk at its first write.
            Some(libc::ENOSPC) => Error::NoSpace { path: tmp.clone() },
            _ => Error::io(&tmp, e),
        })?;
        if let Err(e) = file.set_len(0) {
            let _ = io.remove(&tmp);
            if e.raw_os_error() == Some(libc::ENOSPC) {
                return Err(Error::NoSpace { path: tmp });
            }
            return Err(self.poison_with("segment create", e));
        }
        Ok((file, tmp, false))
    }

    /// Opens the prepared file for the segment at `base`; `None` (and the file removed) if it
    /// cannot be used: the caller creates the segment afresh.
    fn open_prepared(&self, prepared: &Prepared, base: u64) -> Option<FileRef> {
        let io = &self.shared.io;
        debug_assert!(prepared.path.to_string_lossy().contains(PREPARED_PREFIX));
        // Recovery's rule for stale bytes needs every frame a recycled file holds to lie below
        // the base it gets; retired segments end at or below the log start, which never
        // exceeds the next offset.
        let stale_ok = prepared.stale_below <= base;
        debug_assert!(stale_ok, "recycled file holds offsets at or above {base}");
        let file = stale_ok
            .then(|| io.open(&prepared.path, false).ok())
            .flatten();
        if file.is_none() {
            let _ = io.remove(&prepared.path);
        }
        file
    }
}

/// A segment roll's housekeeping, run by group commit as a barrier (see
/// `Log::create_segment`): what must be done before the new segment's first group is
/// formed. The old segment's seal is not part of it (`sealer.rs`).
struct RollWork {
    /// The segment the roll left and the running CRC of its bytes (none for a log's first
    /// segment, or after recovery found the last segment sealed): sealed after the barrier.
    previous: Option<(Arc<Segment>, u32)>,
    /// A swap's empty segment at the same base, which the new file replaces under its name
    /// (`Log::adopt_prepared`), and whether the rename was done.
    replaces: Option<(Arc<Segment>, u32)>,
    renamed: AtomicBool,
    /// The new segment's file, its header region, and its name now and to be.
    file: FileRef,
    header: Vec<u8>,
    from: PathBuf,
    to: PathBuf,
    io: IoRef,
    dir: PathBuf,
    sealer: Arc<Sealer>,
    background: Arc<super::background::Background>,
    namer: Arc<Namer>,
    /// A pointer-swap roll's new segment (`namer.rs`): nothing of it is written here.
    unnamed: Option<Arc<Segment>>,
}

impl RollWork {
    /// A pointer-swap roll's barrier: only what must precede the new segment's header (its
    /// first group writes it, see `namer.rs`): the seal owed before, and in manual mode the
    /// old segment's frames made durable (recovery finds every frame of the segment before
    /// the last up to the last one's base).
    fn run_swap(&self, seg: &Arc<Segment>, sync_previous: bool) -> std::io::Result<()> {
        self.sealer.finish()?;
        if let (Some((previous, _)), true) = (&self.previous, sync_previous) {
            previous.file.sync_data()?;
        }
        self.namer.submit(seg.clone());
        if let Some((previous, file_crc)) = &self.previous {
            self.sealer.submit(previous.clone(), *file_crc);
            self.background.request_seal();
        }
        Ok(())
    }
}

impl Barrier for RollWork {
    fn run(&self, sync_previous: bool) -> std::io::Result<()> {
        // The segment before (made by a pointer-swap roll) gets its name first: at most one
        // segment is unnamed, and none is sealed under a prepared name.
        self.namer.finish()?;
        if let Some(seg) = &self.unnamed {
            return self.run_swap(seg, sync_previous);
        }
        // A fresh header block (the header, then zeros) is durable *before* the file takes the
        // segment's name: a file under a segment name always has a valid header (a recycled
        // file's body is not zeros, so recovery could not take it for one never written).
        // It is submitted first and overlaps the rest (io_uring completes it on the ring
        // thread; synchronous backends run it inline): the file has no name yet, so they are
        // independent.
        debug_assert_eq!(self.header.len() as u64, HEADER_REGION_BYTES);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.file.submit_write(
            vec![Bytes::copy_from_slice(&self.header)],
            0,
            true,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        // Recovery allows two unsealed segments, the last two: the one before the segment
        // this roll leaves must be sealed before another name appears. Its seal was owed since
        // the previous roll and is normally long done.
        let earlier = self.sealer.finish();
        // Manual mode: frames of the old segment written without an fsync become durable
        // before the next segment is named (recovery finds every frame of an unsealed segment
        // before the last up to the next one's base).
        let synced = match (&self.previous, sync_previous) {
            (Some((seg, _)), true) => seg.file.sync_data(),
            _ => Ok(()),
        };
        let headed = rx
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the I/O thread stopped")));
        earlier.and(synced).and(headed)?;
        if self.from != self.to {
            self.io.rename(&self.from, &self.to)?;
            self.renamed.store(true, Ordering::Release);
        }
        self.io.sync_dir(&self.dir)?;
        if let Some((seg, file_crc)) = &self.previous {
            self.sealer.submit(seg.clone(), *file_crc);
            self.background.request_seal();
        }
        Ok(())
    }

    fn what(&self) -> String {
        format!("segment roll to {}", self.to.display())
    }

    fn previous(&self) -> Option<(Arc<Segment>, u32)> {
        self.previous.clone()
    }

    fn replaces(&self) -> (Option<(Arc<Segment>, u32)>, bool) {
        (self.replaces.clone(), self.renamed.load(Ordering::Acquire))
    }

    fn discard(&self) {
        let _ = self.io.remove(&self.from);
    }
}
