//! Full verification of a log: every sealed segment's whole-file checksum and footer, the
//! active segment's header region, and the checksum of every readable record. Used by
//! `sitelog verify` and by tests; recovery itself reads only footers and the tail.

use super::segment::{self, Footer, FOOTER_BYTES, HEADER_REGION_BYTES};
use crate::io::read_exact_at;
use crate::{Error, Log, Result};

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

impl Log {
    /// Checks every checksum in the log; the first damage found is returned as
    /// [`Error::Corruption`] naming the file, position and offset.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let segments: Vec<_> = self.segments_snapshot();
        for seg in segments.iter().filter(|s| s.is_sealed()) {
            let len = seg.size_bytes();
            let io_err = |e| Error::io(&seg.path, e);
            let mut foot = [0u8; FOOTER_BYTES];
            read_exact_at(&*seg.file, &mut foot, len - FOOTER_BYTES as u64).map_err(io_err)?;
            let footer =
                Footer::decode(&foot, self.log_id(), seg.base_offset, len).ok_or_else(|| {
                    seg.corruption(len - FOOTER_BYTES as u64, None, "footer damaged".into())
                })?;
            let crc = segment::crc_of_prefix(&*seg.file, len - 4).map_err(io_err)?;
            if crc != footer.file_crc {
                return Err(seg.corruption(0, None, "whole-file checksum mismatch".into()));
            }
            report.sealed_segments += 1;
            report.bytes += len;
        }
        // The active segment's header region: its frames are checked below, and nothing else
        // in it is covered by a checksum until the seal.
        for seg in segments.iter().filter(|s| !s.is_sealed()) {
            let mut head = vec![0u8; HEADER_REGION_BYTES as usize];
            read_exact_at(&*seg.file, &mut head, 0).map_err(|e| Error::io(&seg.path, e))?;
            segment::check_header(&head, self.log_id(), seg.base_offset)
                .map_err(|detail| seg.corruption(0, None, detail))?;
            report.bytes += HEADER_REGION_BYTES;
        }
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
