//! Full verification of a log: every sealed segment's whole-file checksum and footer, the
//! active segment's header region, and the checksum of every readable record.
//!
//! Two entry points: [`Log::verify`] on an open log (tests, embedders), and [`verify_dir`], the
//! read-only check behind `sitelog verify`: it never modifies the directory. Every file is
//! opened read-only through [`ReadOnlyIo`], nothing is cut, removed, created or fsynced, and
//! what the next open's recovery would change (a torn, never-acknowledged tail to cut,
//! leftovers to remove) is reported in [`DirReport::pending`] instead of done. Recovery itself
//! reads only footers and the tail.

use super::options::LogOptions;
use super::record::MAX_PAYLOAD_BYTES;
use super::recovery::{self, PendingRecovery, LOCK_FILE};
use super::segment::{self, Footer, Segment, FOOTER_BYTES, HEADER_REGION_BYTES};
use crate::io::{read_exact_at, IoRef, ReadOnlyIo};
use crate::{Error, Log, Result};
use std::path::Path;
use std::sync::Arc;

/// What a clean verification covered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Sealed segments whose whole-file checksum matched.
    pub sealed_segments: usize,
    /// Records whose checksum matched.
    pub records: u64,
    /// Bytes of segment files read.
    pub bytes: u64,
}

/// What [`verify_dir`] found in a directory without damage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirReport {
    /// What was checked.
    pub report: VerifyReport,
    /// What the next open would change (not damage: never-acknowledged or released bytes).
    pub pending: PendingRecovery,
}

/// Checks the sealed segments' footers and whole-file checksums and the active segments'
/// header regions (frames are checked by the caller).
fn check_files(segments: &[Arc<Segment>], log_id: u64, report: &mut VerifyReport) -> Result<()> {
    for seg in segments.iter().filter(|s| s.is_sealed()) {
        let len = seg.size_bytes();
        let io_err = |e| Error::io(&seg.path, e);
        let mut foot = [0u8; FOOTER_BYTES];
        read_exact_at(&*seg.file, &mut foot, len - FOOTER_BYTES as u64).map_err(io_err)?;
        let footer = Footer::decode(&foot, log_id, seg.base_offset, len).ok_or_else(|| {
            seg.corruption(len - FOOTER_BYTES as u64, None, "footer damaged".into())
        })?;
        let crc = segment::crc_of_prefix(&*seg.file, len - 4).map_err(io_err)?;
        if crc != footer.file_crc {
            return Err(seg.corruption(0, None, "whole-file checksum mismatch".into()));
        }
        report.sealed_segments += 1;
        report.bytes += len;
    }
    // The active segment's header region: its frames are checked by the caller, and nothing
    // else in it is covered by a checksum until the seal.
    for seg in segments.iter().filter(|s| !s.is_sealed()) {
        let mut head = vec![0u8; HEADER_REGION_BYTES as usize];
        read_exact_at(&*seg.file, &mut head, 0).map_err(|e| Error::io(&seg.path, e))?;
        segment::check_header(&head, log_id, seg.base_offset)
            .map_err(|detail| seg.corruption(0, None, detail))?;
        report.bytes += HEADER_REGION_BYTES;
    }
    Ok(())
}

/// Checks every frame of `seg` holding an offset in `[start, end)`, walking the file in order.
fn check_frames(seg: &Segment, start: u64, end: u64, report: &mut VerifyReport) -> Result<()> {
    let (seg_end, data_end) = seg.read_state(|s| (s.end_offset, s.data_end));
    let (mut offset, mut pos) = if start > seg.base_offset && start < seg_end {
        (start, seg.locate(start)?)
    } else {
        (seg.base_offset, HEADER_REGION_BYTES)
    };
    while offset < seg_end.min(end) {
        let (h, frame) = seg.frame_at(pos, offset, data_end)?;
        if offset >= start {
            report.records += 1;
            if !seg.is_sealed() {
                report.bytes += frame.len() as u64;
            }
        }
        pos += h.frame_len() as u64;
        offset += 1;
    }
    Ok(())
}

/// Verifies the log in `dir` without modifying anything (see the module doc). Fails with
/// [`Error::Locked`] while a running log holds the directory (its `LOCK` file is flocked
/// exclusively; this holds a shared lock meanwhile, so a log cannot open it during the check),
/// with [`Error::Corruption`] naming the file, position and offset at the first damage, and
/// with [`Error::InvalidArgument`] when `dir` holds no log. `opts` gives the index interval
/// the log was written with; any record size up to the format's limit is accepted.
pub fn verify_dir(io: &IoRef, dir: &Path, opts: &LogOptions) -> Result<DirReport> {
    let io = ReadOnlyIo::new_ref(io.clone());
    let lock_path = dir.join(LOCK_FILE);
    let _shared = io.lock_shared(&lock_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => Error::Locked {
            path: dir.to_path_buf(),
        },
        _ => Error::io(&lock_path, e),
    })?;
    let opts = LogOptions {
        max_record_bytes: MAX_PAYLOAD_BYTES,
        preallocate: false,
        direct_io: false,
        ..opts.clone()
    };
    let (rec, pending) = recovery::inspect(&io, dir, &opts)?;
    let segments: Vec<Arc<Segment>> = rec.segments.values().cloned().collect();
    let mut report = VerifyReport::default();
    check_files(&segments, rec.log_id, &mut report)?;
    let start = rec.superblock.current().start_offset;
    // Records a pending truncation removes are not the log's any more.
    let end = rec
        .end_offset
        .min(pending.truncate_from.unwrap_or(u64::MAX));
    for seg in &segments {
        check_frames(seg, start, end, &mut report)?;
    }
    Ok(DirReport { report, pending })
}

impl Log {
    /// Checks every checksum in the log; the first damage found is returned as
    /// [`Error::Corruption`] naming the file, position and offset.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let segments: Vec<_> = self.segments_snapshot();
        check_files(&segments, self.log_id(), &mut report)?;
        for record in self.iter(self.start_offset()) {
            let record = record?;
            report.records += 1;
            if !segments.iter().any(|s| {
                s.is_sealed() && s.base_offset <= record.offset && record.offset < s.end_offset()
            }) {
                report.bytes += record.payload.len() as u64;
            }
        }
        Ok(report)
    }
}
