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
use super::record::{Record, HEADER_SIZE_BYTES, MAX_PAYLOAD_BYTES};
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
#[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
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
    // A segment a pointer-swap roll made whose first group has not run has no header yet.
    for seg in segments
        .iter()
        .filter(|s| !s.is_sealed() && s.pending_header().is_none())
    {
        let mut head = vec![0u8; HEADER_REGION_BYTES as usize];
        read_exact_at(&*seg.file, &mut head, 0).map_err(|e| Error::io(&seg.path, e))?;
        segment::check_header(&head, log_id, seg.base_offset)
            .map_err(|detail| seg.corruption(0, None, detail))?;
        report.bytes += HEADER_REGION_BYTES;
    }
    Ok(())
}

/// Decodes, in order, every frame of `seg` holding an offset in `[start, end)` (checksums
/// verified) and hands each to `f`; the first damaged frame is [`Error::Corruption`].
#[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
fn walk_frames(
    seg: &Segment,
    start: u64,
    end: u64,
    mut f: impl FnMut(Record) -> Result<()>,
) -> Result<()> {
    let (seg_end, data_end) = seg.read_state(|s| (s.end_offset, s.data_end));
    if seg_end <= start || seg.base_offset >= end {
        return Ok(());
    }
    let (mut offset, mut pos) = if start > seg.base_offset {
        (start, seg.locate(start)?)
    } else {
        (seg.base_offset, HEADER_REGION_BYTES)
    };
    while offset < seg_end.min(end) {
        let (h, frame) = seg.frame_at(pos, offset, data_end)?;
        let body_end = HEADER_SIZE_BYTES + h.payload_len as usize;
        f(Record {
            offset,
            term: h.term,
            timestamp_us: h.timestamp_us,
            kind: h.kind,
            payload: frame.slice(HEADER_SIZE_BYTES..body_end),
            frame,
        })?;
        pos += h.frame_len() as u64;
        offset += 1;
    }
    Ok(())
}

/// A log directory inspected read-only, its shared lock held while this lives.
#[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
struct Inspected {
    log_id: u64,
    segments: Vec<Arc<Segment>>,
    /// The log's start and the end of what an open would keep.
    range: std::ops::Range<u64>,
    pending: PendingRecovery,
    _shared: Option<Box<dyn crate::io::LockGuard>>,
}

#[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
fn inspect(io: &IoRef, dir: &Path, opts: &LogOptions) -> Result<Inspected> {
    let io = ReadOnlyIo::new_ref(io.clone());
    let lock_path = dir.join(LOCK_FILE);
    let shared = io.lock_shared(&lock_path).map_err(|e| match e.kind() {
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
    let start = rec.superblock.current().start_offset;
    // Records a pending truncation removes are not the log's any more.
    let end = rec
        .end_offset
        .min(pending.truncate_from.unwrap_or(u64::MAX));
    Ok(Inspected {
        log_id: rec.log_id,
        segments: rec.segments.values().cloned().collect(),
        range: start..end.max(start),
        pending,
        _shared: shared,
    })
}

/// Reads the records of the log in `dir` from `from` (or the log's start) to `to` (or its end)
/// without modifying anything, as [`verify_dir`] opens it, handing each, checksum verified,
/// to `f`; stops at the first damaged record ([`Error::Corruption`]) or error of `f`. Returns
/// what the next open would change (a torn tail is not read).
#[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
pub fn read_dir(
    io: &IoRef,
    dir: &Path,
    opts: &LogOptions,
    from: Option<u64>,
    to: Option<u64>,
    mut f: impl FnMut(Record) -> Result<()>,
) -> Result<PendingRecovery> {
    let log = inspect(io, dir, opts)?;
    let start = from.unwrap_or(0).max(log.range.start);
    let end = to.unwrap_or(u64::MAX).min(log.range.end);
    for seg in &log.segments {
        walk_frames(seg, start, end, &mut f)?;
    }
    Ok(log.pending)
}

/// Verifies the log in `dir` without modifying anything (see the module doc). Fails with
/// [`Error::Locked`] while a running log holds the directory (its `LOCK` file is flocked
/// exclusively; this holds a shared lock meanwhile, so a log cannot open it during the check),
/// with [`Error::Corruption`] naming the file, position and offset at the first damage, and
/// with [`Error::InvalidArgument`] when `dir` holds no log. `opts` gives the index interval
/// the log was written with; any record size up to the format's limit is accepted.
#[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
pub fn verify_dir(io: &IoRef, dir: &Path, opts: &LogOptions) -> Result<DirReport> {
    let log = inspect(io, dir, opts)?;
    let mut report = VerifyReport::default();
    check_files(&log.segments, log.log_id, &mut report)?;
    for seg in &log.segments {
        let sealed = seg.is_sealed();
        walk_frames(seg, log.range.start, log.range.end, |r| {
            report.records += 1;
            if !sealed {
                report.bytes += r.frame.len() as u64;
            }
            Ok(())
        })?;
    }
    Ok(DirReport {
        report,
        pending: log.pending,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::SimDisk;
    use crate::storage::segment::Segment;

    fn opts(disk: &SimDisk) -> LogOptions {
        LogOptions {
            io: disk.io().into(),
            segment_size_bytes: 16 << 10,
            max_record_bytes: 4 << 10,
            preallocate: false,
            direct_io: false,
            ..Default::default()
        }
    }

    fn write_log(disk: &SimDisk, records: u64) -> Log {
        let log = Log::open("/l", opts(disk)).unwrap();
        for i in 0..records {
            log.append(&[i as u8 + 1; 300]).unwrap();
        }
        log
    }

    #[test]
    fn a_torn_tail_is_reported_and_left_in_place() {
        let disk = SimDisk::new(5);
        let log = write_log(&disk, 80);
        log.close().unwrap();
        let last = log_last_segment(&disk);
        let len = disk.peek(&last).unwrap().len() as u64;
        disk.poke(&last, len, &[0x5a; 100]).unwrap();
        let before = disk.peek(&last).unwrap();
        let found = verify_dir(&disk.io(), Path::new("/l"), &opts(&disk)).unwrap();
        assert_eq!(found.report.records, 80);
        let torn = found.pending.torn_tail.expect("the tail is reported");
        assert_eq!((torn.path, torn.offset), (last.clone(), 80));
        assert!(torn.bytes >= 100, "{}", torn.bytes);
        assert_eq!(disk.peek(&last).unwrap(), before, "nothing was cut");
        // An open cuts exactly what was reported.
        let log = Log::open("/l", opts(&disk)).unwrap();
        assert_eq!(log.recovery_report().torn_bytes_truncated, torn.bytes);
    }

    #[test]
    fn damage_is_corruption_and_a_held_directory_is_locked() {
        let disk = SimDisk::new(6);
        let log = write_log(&disk, 80);
        assert!(matches!(
            verify_dir(&disk.io(), Path::new("/l"), &opts(&disk)),
            Err(Error::Locked { .. })
        ));
        // Closed, not dropped: a drop is a crash, which may interrupt a seal the background
        // thread was doing (verify then rightly reports it as pending recovery).
        log.close().unwrap();
        let clean = verify_dir(&disk.io(), Path::new("/l"), &opts(&disk)).unwrap();
        assert!(clean.pending.is_empty(), "{:?}", clean.pending);
        assert_eq!(clean.report.records, 80);
        // A flipped bit in the first record of the first (sealed) segment.
        let first = Segment::path_in(Path::new("/l"), 0);
        disk.poke(&first, HEADER_REGION_BYTES + 60, &[0xff])
            .unwrap();
        match verify_dir(&disk.io(), Path::new("/l"), &opts(&disk)) {
            Err(Error::Corruption { segment, .. }) => assert_eq!(segment, first),
            other => panic!("damage missed: {other:?}"),
        }
    }

    fn log_last_segment(disk: &SimDisk) -> std::path::PathBuf {
        let mut names = disk.io().list(Path::new("/l")).unwrap();
        names.retain(|n| segment::parse_file_name(n).is_some());
        names.sort();
        Path::new("/l").join(names.last().unwrap())
    }
}
