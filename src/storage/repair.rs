//! The storage half of repairing a damaged sealed segment: checking one sealed file (the
//! scrub), naming what a good copy must be, and swapping a verified copy in.
//!
//! The policy (where a good copy comes from, when to look) lives in the replicated layers
//! (`node::repair`); the local log never mends damage by itself and keeps returning
//! [`Error::Corruption`] for it. A sealed file is replaced only by a copy whose whole-file CRC,
//! footer, base, end and size all match, so the records it holds are the same bytes.

use super::log::lock;
use super::manifest::{verify_segment_file, SegmentInfo};
use super::segment::{self, Footer, Segment, FOOTER_BYTES};
use crate::io::read_exact_at;
use crate::{Error, Log, Result};
use std::path::Path;
use std::sync::Arc;

/// Bytes the scrub reads at a time (its pacing step).
pub const SCRUB_CHUNK_BYTES: u64 = 1 << 20;

/// A sealed segment as this log knows it from memory (its footer was valid when it was
/// opened or sealed), whatever its file now says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedGeometry {
    /// First offset.
    pub base_offset: u64,
    /// One past the last offset.
    pub end_offset: u64,
    /// Size of the file in bytes.
    pub size_bytes: u64,
}

impl Log {
    /// The sealed segments, oldest first, as known in memory (nothing is read from disk).
    pub(crate) fn sealed_geometry(&self) -> Vec<SealedGeometry> {
        self.segments_snapshot()
            .iter()
            .filter_map(|s| geometry(s))
            .collect()
    }

    /// The identity of the sealed segment starting at `base` (its whole-file CRC read from the
    /// file's last four bytes, not recomputed), if there is one.
    pub(crate) fn sealed_segment_info(&self, base: u64) -> Option<SegmentInfo> {
        let seg = self.sealed_segment(base)?;
        let g = geometry(&seg)?;
        let mut crc = [0u8; 4];
        read_exact_at(&*seg.file, &mut crc, g.size_bytes.checked_sub(4)?).ok()?;
        Some(SegmentInfo {
            base_offset: base,
            end_offset: g.end_offset,
            size_bytes: g.size_bytes,
            file_crc: u32::from_le_bytes(crc),
        })
    }

    /// Re-reads a whole sealed segment file and checks its footer and whole-file CRC; `pace`
    /// is called after every `SCRUB_CHUNK_BYTES` read with the bytes read (a rate limit
    /// sleeps there) and returns false to stop. `Ok(None)` when stopped, or when no sealed
    /// segment starts at `base` any more (purged or cut); [`Error::Corruption`] when the file
    /// is damaged; else the bytes checked.
    pub(crate) fn scrub_sealed(
        &self,
        base: u64,
        pace: &mut dyn FnMut(u64) -> bool,
    ) -> Result<Option<u64>> {
        let Some(seg) = self.sealed_segment(base) else {
            return Ok(None);
        };
        let len = seg.size_bytes();
        let io_err = |e| Error::io(&seg.path, e);
        let mut foot = [0u8; FOOTER_BYTES];
        read_exact_at(&*seg.file, &mut foot, len - FOOTER_BYTES as u64).map_err(io_err)?;
        let footer = Footer::decode(&foot, self.log_id(), base, len).ok_or_else(|| {
            seg.corruption(len - FOOTER_BYTES as u64, None, "footer damaged".into())
        })?;
        let (mut crc, mut pos) = (0u32, 0u64);
        let mut buf = vec![0u8; SCRUB_CHUNK_BYTES as usize];
        while pos < len - 4 {
            let n = SCRUB_CHUNK_BYTES.min(len - 4 - pos) as usize;
            read_exact_at(&*seg.file, &mut buf[..n], pos).map_err(io_err)?;
            crc = super::checksum::checksum_append(crc, &buf[..n]);
            pos += n as u64;
            if !pace(n as u64) {
                return Ok(None);
            }
        }
        if crc != footer.file_crc {
            return Err(seg.corruption(0, None, "whole-file checksum mismatch".into()));
        }
        Ok(Some(len))
    }

    /// Swaps the sealed segment `info` names for `copy`, a verified copy of it fetched from a
    /// peer: the copy is verified again here (size, whole-file CRC, footer, base, end and this
    /// log's id) and must match the geometry this log holds in memory; then it is fsynced,
    /// renamed over the damaged file, the directory fsynced, and the segment re-opened (a new
    /// map: readers that still hold the old segment keep its map of the old file).
    ///
    /// Failing before the rename changes nothing. The rename swaps one file for another holding
    /// the same records, so a crash or a failed directory fsync after it leaves either file:
    /// nothing acknowledged depends on which, and the log is not poisoned.
    pub(crate) fn replace_sealed(&self, info: &SegmentInfo, copy: &Path) -> Result<()> {
        let io = &self.shared.io;
        verify_segment_file(io, copy, info, self.log_id())?;
        // The writer lock orders the swap with truncations and purges of the same file.
        let _w = lock(&self.shared.writer);
        let seg = self.sealed_segment(info.base_offset).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "no sealed segment at {} to replace",
                info.base_offset
            ))
        })?;
        let held = geometry(&seg);
        let wanted = Some(SealedGeometry {
            base_offset: info.base_offset,
            end_offset: info.end_offset,
            size_bytes: info.size_bytes,
        });
        if held != wanted {
            return Err(Error::InvalidArgument(format!(
                "copy of segment {} ({}..{}, {} bytes) does not match the one held ({held:?})",
                info.base_offset, info.base_offset, info.end_offset, info.size_bytes
            )));
        }
        swap_in(io, copy, &seg.path)?;
        self.map_sealed(&seg.path, info.base_offset)
    }

    fn sealed_segment(&self, base: u64) -> Option<Arc<Segment>> {
        self.shared
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&base)
            .filter(|s| s.is_sealed())
            .cloned()
    }
}

fn geometry(seg: &Segment) -> Option<SealedGeometry> {
    seg.read_state(|st| {
        st.sealed.then_some(SealedGeometry {
            base_offset: seg.base_offset,
            end_offset: st.end_offset,
            size_bytes: st.file_len,
        })
    })
}

/// Replaces the sealed segment file `info` names in the directory `log_dir` of a log that is
/// not open (a node repairing its log before it starts) with `copy`, after verifying the copy
/// (size, whole-file CRC, footer, base, end, `log_id`). Returns the path replaced.
pub fn replace_sealed_file(
    io: &crate::io::IoRef,
    log_dir: &Path,
    log_id: u64,
    info: &SegmentInfo,
    copy: &Path,
) -> Result<std::path::PathBuf> {
    verify_segment_file(io, copy, info, log_id)?;
    let target = Segment::path_in(log_dir, info.base_offset);
    swap_in(io, copy, &target)?;
    Ok(target)
}

/// fsyncs `copy`, renames it over `target` and fsyncs the directory.
fn swap_in(io: &crate::io::IoRef, copy: &Path, target: &Path) -> Result<()> {
    let copy_file = io.open(copy, false).map_err(|e| Error::io(copy, e))?;
    copy_file.sync_data().map_err(|e| Error::io(copy, e))?;
    drop(copy_file);
    io.rename(copy, target).map_err(|e| Error::io(target, e))?;
    let dir = target.parent().unwrap_or(Path::new("."));
    io.sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// The base offset of the segment file an [`Error::Corruption`] names, if it names one.
pub fn damaged_segment_base(e: &Error) -> Option<u64> {
    match e {
        Error::Corruption { segment: path, .. } => path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(segment::parse_file_name),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LogOptions;

    fn opts() -> LogOptions {
        LogOptions {
            segment_size_bytes: 16 << 10,
            max_record_bytes: 1 << 10,
            preallocate: false,
            ..LogOptions::default()
        }
    }

    fn fill(log: &Log, n: usize) {
        for i in 0..n {
            log.append(format!("record {i:05} {}", "x".repeat(200)).as_bytes())
                .unwrap();
        }
        log.sync().unwrap();
    }

    fn flip(path: &Path, at: u64) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_at(&mut b, at).unwrap();
        f.write_at(&[b[0] ^ 0x10], at).unwrap();
        f.sync_all().unwrap();
    }

    #[test]
    fn scrub_finds_a_flipped_bit_and_a_good_copy_replaces_the_file() {
        let a = tempfile::tempdir().unwrap();
        let log = Log::open(a.path(), opts()).unwrap();
        fill(&log, 200);
        let g = log.sealed_geometry()[1];
        let path = Segment::path_in(a.path(), g.base_offset);
        let good = std::fs::read(&path).unwrap();
        let mut paced = 0;
        assert_eq!(
            log.scrub_sealed(g.base_offset, &mut |n| {
                paced += n;
                true
            })
            .unwrap(),
            Some(g.size_bytes)
        );
        assert_eq!(paced, g.size_bytes - 4);

        flip(&path, 5000);
        let e = log.scrub_sealed(g.base_offset, &mut |_| true).unwrap_err();
        assert_eq!(damaged_segment_base(&e), Some(g.base_offset));
        assert!(log.verify().is_err());

        let info = log.sealed_segments(u64::MAX).unwrap()[1];
        let copy = a.path().join("copy");
        std::fs::write(&copy, &good).unwrap();
        // A copy of another segment, or a damaged copy, is refused and changes nothing.
        let wrong = SegmentInfo {
            end_offset: info.end_offset + 1,
            ..info
        };
        assert!(log.replace_sealed(&wrong, &copy).is_err());
        let mut bad = good.clone();
        bad[6000] ^= 1;
        std::fs::write(&copy, &bad).unwrap();
        assert!(matches!(
            log.replace_sealed(&info, &copy),
            Err(Error::Corruption { .. })
        ));
        std::fs::write(&copy, &good).unwrap();
        log.replace_sealed(&info, &copy).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), good);
        assert!(!copy.exists());
        log.verify().unwrap();
        for o in g.base_offset..g.end_offset {
            assert!(log.read(o).is_ok());
        }
        fill(&log, 10);
        drop(log);
        Log::open(a.path(), opts()).unwrap().verify().unwrap();
    }

    #[test]
    fn only_sealed_segments_are_named_or_scrubbed() {
        let a = tempfile::tempdir().unwrap();
        let log = Log::open(a.path(), opts()).unwrap();
        fill(&log, 200);
        let sealed = log.sealed_geometry();
        let last = log.segments_snapshot().last().unwrap().base_offset;
        assert!(sealed.iter().all(|g| g.base_offset != last));
        assert_eq!(log.scrub_sealed(last, &mut |_| true).unwrap(), None);
    }
}
