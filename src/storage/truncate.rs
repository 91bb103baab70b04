//! Truncation (cut the tail, for Raft), purge (drop a prefix) and retention.

use super::background::{lock_sb, Spare};
use super::index::INDEX_ENTRY_SIZE_BYTES;
use super::log::{lock, Active, PurgeOutcome, Writer};
use super::record;
use super::recovery::now_us;
use super::segment::{self, Segment};
use super::superblock::NO_TRUNCATION;
use crate::{Error, Log, Result};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Log {
    /// Removes every record at or after `offset`. Durable on return.
    pub fn truncate_from(&self, offset: u64) -> Result<()> {
        self.check_poison()?;
        let mut w = lock(&self.shared.writer);
        if offset >= w.next_offset {
            return Ok(());
        }
        if offset < self.start_offset() {
            return Err(Error::InvalidArgument(format!(
                "cannot truncate at {offset}, below the log start {}",
                self.start_offset()
            )));
        }
        self.truncate_locked(&mut w, offset)
    }

    /// Removes every record after `offset` (keeps `offset`). Durable on return.
    pub fn truncate_after(&self, offset: u64) -> Result<()> {
        self.truncate_from(offset.saturating_add(1))
    }

    /// The truncation protocol; idempotent, so recovery replays it after a crash:
    /// 1. superblock (both copies): `durable_end = min(durable_end, cut)`, `truncate_from = cut`;
    /// 2. delete whole segments at or after the cut, newest first, and fsync the directory;
    /// 3. cut the segment holding the cut (in place if unsealed, by copy and rename if sealed);
    /// 4. superblock (both copies): no truncation in progress.
    pub(crate) fn truncate_locked(&self, w: &mut Writer, cut: u64) -> Result<()> {
        self.quiesce(w)?;
        // A seal a full disk left owed for a segment this cuts or deletes is not owed any more.
        self.shared.sealer.forget_above(cut);
        // Nor the name of a segment it deletes (by the name its file has); one it keeps is
        // named first (a segment left unnamed by a full disk stays so).
        self.shared.namer.forget_from(cut);
        self.finish_naming()?;
        // Before anything changes: a reader that sees the old count read before the cut.
        self.shared.truncations.fetch_add(1, Ordering::SeqCst);
        let mut sbs = lock_sb(&self.shared.superblock);
        let cur = sbs.writer.current();
        let marked = super::superblock::Superblock {
            durable_end: cur.durable_end.min(cut),
            truncate_from: cut,
            ..cur
        };
        sbs.writer
            .write_both(marked)
            .map_err(|e| self.poison_with("superblock write", e))?;
        self.shared
            .written_end
            .store(cut.min(w.next_offset), Ordering::Release);
        let doomed: Vec<Arc<Segment>> = {
            let segs = self
                .shared
                .segments
                .read()
                .unwrap_or_else(|p| p.into_inner());
            segs.range(cut..).rev().map(|(_, s)| s.clone()).collect()
        };
        for seg in &doomed {
            self.shared
                .io
                .remove(&seg.disk_path())
                .map_err(|e| self.poison_with("segment delete", e))?;
            self.shared
                .segments
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&seg.base_offset);
        }
        if w.active.as_ref().is_some_and(|a| a.seg.base_offset >= cut) {
            w.active = None;
        }
        self.shared
            .io
            .sync_dir(&self.shared.dir)
            .map_err(|e| self.poison_with("directory fsync", e))?;
        let holder = {
            let segs = self
                .shared
                .segments
                .read()
                .unwrap_or_else(|p| p.into_inner());
            segs.range(..cut).next_back().map(|(_, s)| s.clone())
        };
        if let Some(seg) = holder.filter(|s| s.end_offset() > cut) {
            self.cut_segment(w, &seg, cut)?;
        }
        w.next_offset = cut.min(w.next_offset).max(self.start_offset());
        let cleared = super::superblock::Superblock {
            truncate_from: NO_TRUNCATION,
            ..sbs.writer.current()
        };
        sbs.writer
            .write_both(cleared)
            .map_err(|e| self.poison_with("superblock write", e))?;
        self.shared
            .written_end
            .store(w.next_offset, Ordering::Release);
        self.shared.gc.reset(w.next_offset);
        Ok(())
    }

    /// Shortens `seg` so that it ends just before `cut`; the result is the active segment.
    fn cut_segment(&self, w: &mut Writer, seg: &Arc<Segment>, cut: u64) -> Result<()> {
        let pos = seg.locate(cut)?;
        let rel = (cut - seg.base_offset) as u32;
        let poison = |what: &'static str| move |e: std::io::Error| self.poison_with(what, e);
        let target = if seg.is_sealed() {
            // Never truncate a sealed (possibly mapped) file in place: copy and rename.
            let tmp = seg
                .path
                .with_extension(format!("seg{}", segment::TEMP_SUFFIX));
            let io = &self.shared.io;
            let map = seg.map()?.slice(..pos as usize);
            let file = io.open(&tmp, true).map_err(poison("segment rewrite"))?;
            file.set_len(0).map_err(poison("segment rewrite"))?;
            file.write_at_sync(&map, 0)
                .map_err(poison("segment rewrite"))?;
            io.rename(&tmp, &seg.path)
                .map_err(poison("segment rename"))?;
            io.sync_dir(&self.shared.dir)
                .map_err(poison("directory fsync"))?;
            let mut state = seg.state();
            state.sealed = false;
            Arc::new(Segment::new(
                seg.path.clone(),
                file,
                self.shared.log_id,
                seg.base_offset,
                self.shared.opts.max_record_bytes,
                state,
            ))
        } else {
            seg.file.set_len(pos).map_err(poison("segment truncate"))?;
            seg.file
                .sync_data()
                .map_err(poison("segment truncate fsync"))?;
            seg.drop_unwritten();
            seg.clone()
        };
        target.update_state(|s| {
            s.index.truncate(rel);
            s.end_offset = cut;
            s.data_end = pos;
            s.file_len = pos;
        });
        let file_crc =
            segment::crc_of_prefix(&*target.file, pos).map_err(poison("segment read"))?;
        let max_ts = target.max_timestamp_below(pos)?;
        target.update_state(|s| s.max_timestamp_us = max_ts);
        self.shared
            .segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target.base_offset, target.clone());
        self.attach_direct(&target);
        w.active = Some(Active {
            seg: target,
            file_crc,
        });
        Ok(())
    }

    /// Drops every record below `offset`: moves the logical start (durably) and deletes
    /// sealed segments that end at or before it. The active segment is never deleted; readers
    /// that still hold a deleted segment keep reading it (its map outlives the file name).
    pub fn purge_before(&self, offset: u64) -> Result<PurgeOutcome> {
        self.check_poison()?;
        // The start must never pass the durable end: a crash could otherwise leave a log whose
        // last record lies below its start.
        let target = offset.min(self.end_offset());
        if target > self.durable_end() {
            self.shared.gc.wait_durable(target)?;
        }
        let mut w = lock(&self.shared.writer);
        self.purge_locked(&mut w, offset)
    }

    fn purge_locked(&self, w: &mut Writer, offset: u64) -> Result<PurgeOutcome> {
        let mut new_start = offset.min(w.next_offset).min(self.durable_end());
        // Recovery finds a segment still under its prepared name only at or above the start
        // (`namer.rs`): one the start would pass is named first, or, while it cannot be (a
        // full disk), the start stops at its base.
        if self.shared.namer.pending_base().is_some_and(|b| b < new_start) {
            self.finish_naming()?;
            if let Some(base) = self.shared.namer.pending_base() {
                new_start = new_start.min(base);
            }
        }
        if new_start > self.start_offset() {
            let mut sbs = lock_sb(&self.shared.superblock);
            let next = super::superblock::Superblock {
                start_offset: new_start,
                ..sbs.writer.current()
            };
            sbs.writer
                .write_both(next)
                .map_err(|e| self.poison_with("superblock write", e))?;
            self.shared.start_offset.store(new_start, Ordering::Release);
        }
        let start = self.start_offset();
        let active_base = w.active.as_ref().map(|a| a.seg.base_offset);
        let released: Vec<Arc<Segment>> = {
            let segs = self
                .shared
                .segments
                .read()
                .unwrap_or_else(|p| p.into_inner());
            let last_base = segs.keys().last().copied();
            segs.values()
                .filter(|s| s.is_sealed() && s.end_offset() <= start)
                .filter(|s| Some(s.base_offset) != active_base && Some(s.base_offset) != last_base)
                .cloned()
                .collect()
        };
        let mut outcome = PurgeOutcome::default();
        let mut spare = None;
        for seg in released {
            self.shared
                .segments
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&seg.base_offset);
            outcome.segments_removed += 1;
            outcome.bytes_removed += seg.size_bytes();
            if let Some(kept) = self.retire(seg, spare.is_none())? {
                spare = Some(kept);
            }
        }
        if outcome.segments_removed > 0 {
            self.shared
                .io
                .sync_dir(&self.shared.dir)
                .map_err(|e| self.poison_with("directory fsync", e))?;
        }
        // Only once the rename is durable: were the spare's zeros written first, a crash
        // could bring back the old segment name over a file that no longer ends in its footer.
        if let Some(spare) = spare {
            self.shared.background.keep_spare(spare);
        }
        Ok(outcome)
    }

    /// Takes a released segment (already out of the segment map) off its name: renamed to a
    /// spare, to become the next prepared segment without writing it whole (like PostgreSQL
    /// recycles its WAL segments), or deleted. Kept only if
    /// - the background thread prepares files and holds no spare yet, and this purge kept
    ///   none (at most one waits);
    /// - it is a full segment of the current size (its seal left less than one largest frame
    ///   and its index entry free), so only that gap is zero-filled; any other size is deleted.
    ///
    /// The rename changes no byte, so it is safe under readers. The spare keeps the segment's
    /// `Arc`, and the background thread overwrites the file only once nothing else references
    /// it (`Segment::into_unshared`: no reader, iterator or group commit holding the segment,
    /// no map of it or payload sliced from one, no other handle of its file such as a segment
    /// fetch server's); a spare still read then is deleted instead, and its readers finish on
    /// the unlinked inode, as after a plain delete.
    fn retire(&self, seg: Arc<Segment>, want_spare: bool) -> Result<Option<Spare>> {
        let opts = &self.shared.opts;
        let (len_bytes, stale_below) = seg.read_state(|s| (s.file_len, s.end_offset));
        let largest = record::frame_len(opts.max_record_bytes as usize) as u64;
        let full = want_spare
            && len_bytes <= opts.segment_size_bytes
            && len_bytes + largest + INDEX_ENTRY_SIZE_BYTES as u64 >= opts.segment_size_bytes;
        let kept = full
            .then(|| self.shared.background.spare_name(&self.shared.dir))
            .flatten()
            .filter(|to| self.shared.io.rename(&seg.path, to).is_ok())
            .map(|path| Spare {
                path,
                len_bytes,
                stale_below,
                seg: seg.clone(),
            });
        if kept.is_none() {
            self.shared
                .io
                .remove(&seg.path)
                .map_err(|e| Error::io(&seg.path, e))?;
        }
        Ok(kept)
    }

    /// Drops every record and continues the log at `offset` (at or after its end): the next
    /// append gets `offset`. Raft needs this after installing a snapshot that ends past the
    /// local log, and for a log whose first entry arrives at a later index. Durable on return.
    ///
    /// Protocol: everything is made durable; the superblock (both copies) moves the start and
    /// the durable end to `offset`; then every segment file is removed and the directory
    /// fsynced. A crash between the two leaves segments wholly below the start, which
    /// recovery releases.
    pub(crate) fn restart_at(&self, offset: u64) -> Result<()> {
        self.check_poison()?;
        if offset > super::record::MAX_OFFSET {
            return Err(Error::InvalidArgument(format!(
                "offset {offset} above the maximum"
            )));
        }
        let end = self.end_offset();
        if offset < end {
            return Err(Error::InvalidArgument(format!(
                "restart_at({offset}) below the log end {end}; truncate first"
            )));
        }
        self.sync()?;
        let mut w = lock(&self.shared.writer);
        self.quiesce(&mut w)?;
        // Every segment goes, by the name its file has.
        self.shared.namer.forget_from(0);
        {
            let mut sbs = lock_sb(&self.shared.superblock);
            let next = super::superblock::Superblock {
                start_offset: offset,
                durable_end: offset,
                ..sbs.writer.current()
            };
            sbs.writer
                .write_both(next)
                .map_err(|e| self.poison_with("superblock write", e))?;
        }
        w.active = None;
        let all: Vec<Arc<Segment>> = {
            let mut segs = self
                .shared
                .segments
                .write()
                .unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *segs).into_values().collect()
        };
        for seg in &all {
            self.shared
                .io
                .remove(&seg.disk_path())
                .map_err(|e| self.poison_with("segment delete", e))?;
        }
        self.shared
            .io
            .sync_dir(&self.shared.dir)
            .map_err(|e| self.poison_with("directory fsync", e))?;
        w.next_offset = offset;
        self.shared.start_offset.store(offset, Ordering::Release);
        self.shared.written_end.store(offset, Ordering::Release);
        self.shared.gc.reset(offset);
        Ok(())
    }

    /// Applies the retention options now (also done after every segment seal).
    pub fn apply_retention(&self) -> Result<PurgeOutcome> {
        self.check_poison()?;
        let mut w = lock(&self.shared.writer);
        self.retention_locked(&mut w)
    }

    /// Retention deletes whole sealed segments below the *floor*: the lowest of the
    /// retention cut (by size or age), every [`crate::storage::Pin`] and lease, rounded down
    /// to a segment end, never the active or the last segment ([`super::pin::floor`]). What
    /// the pins hold back is deleted by a later call, once they move.
    pub(crate) fn retention_locked(&self, w: &mut Writer) -> Result<PurgeOutcome> {
        let Some(cut) = self.retention_cut() else {
            return Ok(PurgeOutcome::default());
        };
        let bounds: Vec<super::pin::SegmentBounds> = self
            .segments_snapshot()
            .iter()
            .map(|s| {
                let (sealed, end) = s.read_state(|st| (st.sealed, st.end_offset));
                super::pin::SegmentBounds {
                    base: s.base_offset,
                    end,
                    sealed,
                }
            })
            .collect();
        let lowest_pin = self.shared.pins.lowest(std::time::Instant::now());
        match super::pin::floor(cut, lowest_pin, &bounds) {
            Some(floor) if floor > self.start_offset() => self.purge_locked(w, floor),
            _ => Ok(PurgeOutcome::default()),
        }
    }

    /// Where retention by size and age alone would cut: the end of the oldest sealed
    /// segments it would drop (pins not counted), or `None` when it would drop none or no
    /// retention is set. A snapshot lists only the segments from here on.
    pub(crate) fn retention_cut(&self) -> Option<u64> {
        let opts = &self.shared.opts;
        if opts.retention_bytes.is_none() && opts.retention_age_ms.is_none() {
            return None;
        }
        let segs = self.segments_snapshot();
        let mut total: u64 = segs.iter().map(|s| s.size_bytes()).sum();
        let age_floor = opts
            .retention_age_ms
            .map(|ms| now_us().saturating_sub(ms * 1000));
        let mut purge_to = None;
        for seg in segs
            .iter()
            .filter(|s| s.is_sealed())
            .take(segs.len().saturating_sub(1))
        {
            let st = seg.state();
            let too_big = opts.retention_bytes.is_some_and(|max| total > max);
            let too_old = age_floor.is_some_and(|floor| st.max_timestamp_us < floor);
            if !(too_big || too_old) {
                break;
            }
            total -= st.file_len;
            purge_to = Some(st.end_offset);
        }
        purge_to
    }
}
