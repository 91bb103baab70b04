//! Sealed segments as shippable files: the manifest entry of a segment, verifying a copy of
//! one, and adopting verified copies into a log (what a replica does after fetching a
//! snapshot's segments from its peers).
//!
//! A sealed segment's identity is its base offset, its size and its whole-file CRC-32 (the
//! footer's last field: the CRC of every byte before it). Two replicas hold the same segment
//! when the three match; a copy is verified by recomputing that CRC over the whole file and
//! decoding the footer against the expected identity, base and end offsets.

use super::log::lock;
use super::segment::{Footer, Segment, FOOTER_BYTES};
use crate::io::{read_exact_at, FileRef, IoRef};
use crate::{Error, Log, Result};
use std::path::{Path, PathBuf};

/// One sealed segment, as a snapshot manifest lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// First offset in the segment (its file is named after it).
    pub base_offset: u64,
    /// One past its last offset.
    pub end_offset: u64,
    /// Size of the file.
    pub size_bytes: u64,
    /// CRC-32 of every byte of the file but the last four (which store it).
    pub file_crc: u32,
}

fn corrupt(path: &Path, detail: String) -> Error {
    Error::Corruption {
        segment: path.to_path_buf(),
        file_offset: 0,
        record_offset: None,
        detail,
    }
}

/// Reads the whole-file CRC a sealed segment file stores in its last four bytes.
fn stored_crc(file: &dyn crate::io::File, len: u64) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    read_exact_at(file, &mut b, len - 4)?;
    Ok(u32::from_le_bytes(b))
}

/// Verifies a copy of a sealed segment file against its manifest entry: size, whole-file CRC
/// (recomputed over every byte), footer (identity `log_id`, base and end offsets).
pub fn verify_segment_file(io: &IoRef, path: &Path, info: &SegmentInfo, log_id: u64) -> Result<()> {
    let file = io.open(path, false).map_err(|e| Error::io(path, e))?;
    let len = file.len().map_err(|e| Error::io(path, e))?;
    if len != info.size_bytes || len < FOOTER_BYTES as u64 {
        return Err(corrupt(
            path,
            format!("{len} bytes, expected {}", info.size_bytes),
        ));
    }
    let crc = super::segment::crc_of_prefix(&*file, len - 4).map_err(|e| Error::io(path, e))?;
    let stored = stored_crc(&*file, len).map_err(|e| Error::io(path, e))?;
    if crc != info.file_crc || stored != info.file_crc {
        return Err(corrupt(path, "whole-file checksum mismatch".into()));
    }
    let mut foot = [0u8; FOOTER_BYTES];
    read_exact_at(&*file, &mut foot, len - FOOTER_BYTES as u64).map_err(|e| Error::io(path, e))?;
    match Footer::decode(&foot, log_id, info.base_offset, len) {
        Some(f) if f.end_offset == info.end_offset => Ok(()),
        _ => Err(corrupt(path, "footer does not match the manifest".into())),
    }
}

impl Log {
    /// The sealed segments whose records all lie below `below`, oldest first, from the
    /// log's start. O(number of segments): each file's stored CRC is read, nothing scanned.
    pub fn sealed_segments(&self, below: u64) -> Result<Vec<SegmentInfo>> {
        self.sealed_segments_from(self.start_offset(), below)
    }

    /// The sealed segments whose records all lie below `below`, oldest first, from the one
    /// holding `from` (or the log's start, if later): what a snapshot lists when retention
    /// will drop the older ones.
    pub(crate) fn sealed_segments_from(&self, from: u64, below: u64) -> Result<Vec<SegmentInfo>> {
        // The segment the last roll left is normally sealed in the background by now; if its
        // seal is still owed, it is completed first, so the list ends at the last full segment.
        self.finish_seal()?;
        let start = self.start_offset().max(from);
        let mut out = Vec::new();
        for seg in self.segments_snapshot() {
            let st = seg.state();
            if !st.sealed || st.end_offset > below || st.end_offset <= start {
                continue;
            }
            let file_crc =
                stored_crc(&*seg.file, st.file_len).map_err(|e| Error::io(&seg.path, e))?;
            out.push(SegmentInfo {
                base_offset: seg.base_offset,
                end_offset: st.end_offset,
                size_bytes: st.file_len,
                file_crc,
            });
        }
        Ok(out)
    }

    /// Where terms start in `[base, end)`: `(term, first offset)` for each term present, in
    /// order. Terms never decrease along a Raft log, so each change is found by binary search:
    /// O(terms × log(records)) reads, no scan.
    pub(crate) fn term_starts(&self, base: u64, end: u64) -> Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        let mut at = base;
        while at < end {
            let term = self.read(at)?.term;
            out.push((term, at));
            // First offset in (at, end) whose term is above `term`.
            let (mut lo, mut hi) = (at + 1, end);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if self.read(mid)?.term > term {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            at = lo;
        }
        Ok(out)
    }

    /// The open file of the sealed segment `info` names, if this log holds exactly that
    /// segment (same base, size and whole-file CRC): a source for peers fetching it.
    pub(crate) fn sealed_segment_file(&self, info: &SegmentInfo) -> Option<FileRef> {
        let seg = self
            .segments_snapshot()
            .into_iter()
            .find(|s| s.base_offset == info.base_offset)?;
        let st = seg.state();
        let same = st.sealed
            && st.file_len == info.size_bytes
            && st.end_offset == info.end_offset
            && stored_crc(&*seg.file, st.file_len).ok() == Some(info.file_crc);
        same.then(|| seg.file.clone())
    }

    /// Replaces the log's content with verified copies of sealed segments (`staged`: each
    /// manifest entry with the path of its verified copy, contiguous, oldest first). The log
    /// then starts at the first base and ends at the last end; appends continue there.
    ///
    /// Crash safety: everything local is dropped first (a durable truncation and
    /// `restart_at`), then the copies are renamed into the directory in offset order and the
    /// directory fsynced. A crash in between leaves a valid log holding a contiguous prefix
    /// of the copies; the caller installs again (its copies then fetched again).
    pub fn adopt_sealed(&self, staged: &[(SegmentInfo, PathBuf)]) -> Result<()> {
        let (Some((first, _)), Some((last, _))) = (staged.first(), staged.last()) else {
            return Ok(());
        };
        for pair in staged.windows(2) {
            if pair[0].0.end_offset != pair[1].0.base_offset {
                return Err(Error::InvalidArgument(
                    "segments to adopt are not contiguous".into(),
                ));
            }
        }
        let b0 = first.base_offset;
        if b0 < self.start_offset() {
            return Err(Error::InvalidArgument(format!(
                "segments from {b0} are older than the log's start {}",
                self.start_offset()
            )));
        }
        self.truncate_from(b0.max(self.start_offset()))?;
        self.restart_at(b0.max(self.end_offset()))?;
        if self.end_offset() != b0 {
            return Err(Error::InvalidArgument(
                "log did not empty at the segments' base".into(),
            ));
        }
        let mut w = lock(&self.shared.writer);
        self.quiesce(&mut w)?;
        let io = &self.shared.io;
        let mut loaded = Vec::with_capacity(staged.len());
        for (info, from) in staged {
            let to = Segment::path_in(&self.shared.dir, info.base_offset);
            io.rename(from, &to).map_err(|e| Error::io(&to, e))?;
            loaded.push((info, to));
        }
        io.sync_dir(&self.shared.dir)
            .map_err(|e| self.poison_with("directory fsync", e))?;
        for (info, path) in loaded {
            self.map_sealed(&path, info.base_offset)?;
        }
        let end = last.end_offset;
        w.next_offset = end;
        self.shared
            .written_end
            .store(end, std::sync::atomic::Ordering::Release);
        self.shared.gc.reset(end);
        drop(w);
        let mut sbs = super::background::lock_sb(&self.shared.superblock);
        let next = super::superblock::Superblock {
            durable_end: end,
            ..sbs.writer.current()
        };
        sbs.writer
            .write_both(next)
            .map_err(|e| self.poison_with("superblock write", e))
    }
}
