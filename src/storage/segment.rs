//! Segment files: a header, record frames, and (once sealed) the sparse index and a footer.
//!
//! File name `{base_offset:020}.seg`. Layout:
//!
//! ```text
//! [0, 4096)                  header region; the header below, then zeros
//! [4096, data_end)           record frames (see record.rs), each 8-byte aligned
//! sealed only:
//! [data_end, index_end)      sparse index entries (see index.rs), 8 bytes each
//! [index_end, index_end+64)  footer; always the last 64 bytes of a sealed file
//! ```
//!
//! Header (64 bytes, little-endian): magic "SLSEGMNT" (8), format version u32 (2), header
//! region size u32 (4096), log_id u64, base_offset u64, created_us u64, 20 reserved zero bytes,
//! CRC-32 of bytes 0..60 (u32).
//!
//! Format versions: new segments are written as version 2; version 1 segments (earlier
//! releases) are still read. The two differ only in the frame kinds they may hold: the
//! producer kinds (3 produce, 4 register) only in version 2. An older binary refuses a
//! version-2 header before it reads a frame, so it can never take a producer frame for a torn
//! tail and cut it.
//!
//! Footer (64 bytes): magic "SLFOOTER" (8), log_id u64, base_offset u64, end_offset u64
//! (exclusive), data_end u64, max_timestamp_us u64, index entry count u32, CRC-32 of the index
//! bytes u32, CRC-32 of footer bytes 0..56 u32, and last the CRC-32 of the whole file before
//! this field (u32): a sealed segment can be shipped to another machine and verified as a file.
//!
//! A sealed segment is immutable: it is only ever read (through memmap2), deleted, or, when a
//! truncation cuts into it, replaced by a new file renamed over it. Once retention retired it
//! and nothing references it any more, its file may be recycled (renamed, re-headed and
//! overwritten as a new segment: `background.rs`). The header region is 4 KiB
//! so frames start sector- and page-aligned (room for O_DIRECT writers).

use super::checksum::{checksum, checksum_append};
use super::index::{SparseIndex, INDEX_ENTRY_SIZE_BYTES};
use super::record::{self, u32_at, u64_at, FrameError, FrameHeader, Record, HEADER_SIZE_BYTES};
use crate::io::{read_exact_at, FileRef};
use crate::{Error, Result};
use bytes::Bytes;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

/// Bytes before the first frame.
pub const HEADER_REGION_BYTES: u64 = 4096;
/// Bytes of the encoded header.
pub const HEADER_BYTES: usize = 64;
/// Bytes of the footer.
pub const FOOTER_BYTES: usize = 64;
const HEADER_MAGIC: &[u8; 8] = b"SLSEGMNT";
const FOOTER_MAGIC: &[u8; 8] = b"SLFOOTER";
/// The format version of the segments this binary writes.
pub const VERSION: u32 = 2;
/// The oldest format version this binary reads.
pub const OLDEST_VERSION: u32 = 1;
/// The first format version whose frames may be of the producer kinds (3 and 4).
pub const PRODUCER_KINDS_VERSION: u32 = 2;
/// Byte position of the format version in the header.
const VERSION_AT: usize = 8;
/// File name suffix of segments.
pub const SEGMENT_SUFFIX: &str = ".seg";
/// Suffix of files being written before a rename (cleaned up by recovery).
pub const TEMP_SUFFIX: &str = ".tmp";

const _: () = assert!(HEADER_BYTES as u64 <= HEADER_REGION_BYTES);
const _: () = assert!(OLDEST_VERSION <= PRODUCER_KINDS_VERSION && PRODUCER_KINDS_VERSION <= VERSION);
const _: () = assert!(HEADER_REGION_BYTES % 4096 == 0);
const _: () = assert!(FOOTER_BYTES % record::FRAME_ALIGN_BYTES == 0);

/// The file name of the segment starting at `base_offset`.
pub fn file_name(base_offset: u64) -> String {
    format!("{base_offset:020}{SEGMENT_SUFFIX}")
}

/// Parses a segment file name back to its base offset.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header region of a new segment.
pub fn encode_header(log_id: u64, base_offset: u64, created_us: u64) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_REGION_BYTES as usize];
    b[0..8].copy_from_slice(HEADER_MAGIC);
    b[VERSION_AT..VERSION_AT + 4].copy_from_slice(&VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&(HEADER_REGION_BYTES as u32).to_le_bytes());
    b[16..24].copy_from_slice(&log_id.to_le_bytes());
    b[24..32].copy_from_slice(&base_offset.to_le_bytes());
    b[32..40].copy_from_slice(&created_us.to_le_bytes());
    let crc = crate::storage::checksum::checksum(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The base offset in a header region that is a valid header of `log_id`, if it is one
/// (recovery's test for a prepared file that a roll headed before its rename, see
/// `namer.rs`).
pub fn header_base(b: &[u8], log_id: u64) -> Option<u64> {
    if b.len() < HEADER_BYTES {
        return None;
    }
    let base = u64_at(b, 24);
    check_header(b, log_id, base).ok().map(|()| base)
}

/// Checks a header against the expected identity; returns a reason on mismatch. Accepts the
/// format versions [`OLDEST_VERSION`] to [`VERSION`].
pub fn check_header(b: &[u8], log_id: u64, base_offset: u64) -> std::result::Result<(), String> {
    check_header_upto(b, log_id, base_offset, VERSION)
}

/// [`check_header`] of a binary that reads format versions up to `newest` (an older binary
/// is `newest = 1`: the downgrade check).
fn check_header_upto(
    b: &[u8],
    log_id: u64,
    base_offset: u64,
    newest: u32,
) -> std::result::Result<(), String> {
    if b.len() < HEADER_BYTES {
        return Err("segment shorter than its header".into());
    }
    if &b[0..8] != HEADER_MAGIC {
        return Err("bad segment magic".into());
    }
    if crate::storage::checksum::checksum(&b[..60]) != u32_at(b, 60) {
        return Err("segment header checksum mismatch".into());
    }
    let version = u32_at(b, VERSION_AT);
    if !(OLDEST_VERSION..=newest).contains(&version)
        || u64::from(u32_at(b, 12)) != HEADER_REGION_BYTES
    {
        return Err("unsupported segment format version".into());
    }
    if u64_at(b, 16) != log_id {
        return Err("segment belongs to another log".into());
    }
    if u64_at(b, 24) != base_offset {
        return Err("segment base offset does not match its file name".into());
    }
    if b[40..60].iter().any(|&x| x != 0) {
        return Err("segment header reserved bytes are not zero".into());
    }
    // The rest of the header region is zeros. No frame checksum covers it, so in an active
    // segment (whose running checksum recovery recomputes from the disk) damage there, such as
    // a misdirected write, would otherwise be sealed into the file as if it were data.
    let padding = b
        .get(HEADER_BYTES..HEADER_REGION_BYTES as usize)
        .unwrap_or(&[]);
    if padding.iter().any(|&x| x != 0) {
        return Err("segment header region padding is not zero".into());
    }
    Ok(())
}

/// Whether `b` (at least 64 bytes) starts with the footer of a segment of `log_id` based
/// below `base_offset`, checksum verified: the stale footer a recycled file keeps after its
/// old frames and index (see `recovery::scan_tail`).
pub fn is_stale_footer(b: &[u8], log_id: u64, base_offset: u64) -> bool {
    b.len() >= FOOTER_BYTES
        && &b[0..8] == FOOTER_MAGIC
        && crate::storage::checksum::checksum(&b[..56]) == u32_at(b, 56)
        && u64_at(b, 8) == log_id
        && u64_at(b, 16) < base_offset
}

/// The decoded footer of a sealed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// First offset.
    pub base_offset: u64,
    /// Exclusive end offset.
    pub end_offset: u64,
    /// End of the frames.
    pub data_end: u64,
    /// Largest record timestamp (for retention by age).
    pub max_timestamp_us: u64,
    /// Number of index entries stored before the footer.
    pub index_entries: u32,
    /// CRC-32 of the stored index.
    pub index_crc: u32,
    /// CRC-32 of the whole file before the last four bytes.
    pub file_crc: u32,
}

impl Footer {
    /// Encodes the footer; `crc_before` is the running CRC-32 of every file byte before it.
    pub fn encode(&self, log_id: u64, crc_before: u32) -> [u8; FOOTER_BYTES] {
        let mut b = [0u8; FOOTER_BYTES];
        b[0..8].copy_from_slice(FOOTER_MAGIC);
        b[8..16].copy_from_slice(&log_id.to_le_bytes());
        b[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.end_offset.to_le_bytes());
        b[32..40].copy_from_slice(&self.data_end.to_le_bytes());
        b[40..48].copy_from_slice(&self.max_timestamp_us.to_le_bytes());
        b[48..52].copy_from_slice(&self.index_entries.to_le_bytes());
        b[52..56].copy_from_slice(&self.index_crc.to_le_bytes());
        let crc = crate::storage::checksum::checksum(&b[..56]);
        b[56..60].copy_from_slice(&crc.to_le_bytes());
        let file_crc = crate::storage::checksum::checksum_append(crc_before, &b[..60]);
        b[60..64].copy_from_slice(&file_crc.to_le_bytes());
        b
    }

    /// Decodes a footer read from the last 64 bytes of a `file_len`-byte file; `None` unless
    /// magic, checksum, identity and geometry are consistent.
    pub fn decode(b: &[u8], log_id: u64, base_offset: u64, file_len: u64) -> Option<Footer> {
        if b.len() != FOOTER_BYTES || &b[0..8] != FOOTER_MAGIC {
            return None;
        }
        if crate::storage::checksum::checksum(&b[..56]) != u32_at(b, 56) {
            return None;
        }
        let f = Footer {
            base_offset: u64_at(b, 16),
            end_offset: u64_at(b, 24),
            data_end: u64_at(b, 32),
            max_timestamp_us: u64_at(b, 40),
            index_entries: u32_at(b, 48),
            index_crc: u32_at(b, 52),
            file_crc: u32_at(b, 60),
        };
        let index_bytes = u64::from(f.index_entries) * INDEX_ENTRY_SIZE_BYTES as u64;
        let total = f
            .data_end
            .checked_add(index_bytes)?
            .checked_add(FOOTER_BYTES as u64)?;
        // Every frame takes at least a header: a footer cannot claim more records than that.
        let max_records = (f.data_end.checked_sub(HEADER_REGION_BYTES)?) / HEADER_SIZE_BYTES as u64;
        let geometry_ok = total == file_len
            && f.data_end % record::FRAME_ALIGN_BYTES as u64 == 0
            && f.end_offset >= f.base_offset
            && f.end_offset <= record::MAX_OFFSET
            && f.end_offset - f.base_offset <= max_records
            && u64::from(f.index_entries) <= f.end_offset - f.base_offset;
        (u64_at(b, 8) == log_id && f.base_offset == base_offset && geometry_ok).then_some(f)
    }
}

/// Mutable state of a segment, guarded by the segment's lock.
#[derive(Debug, Clone)]
pub struct SegmentState {
    /// Exclusive end offset of the records readable here.
    pub end_offset: u64,
    /// File position after the last frame.
    pub data_end: u64,
    /// Sparse index over the frames.
    pub index: SparseIndex,
    /// Largest record timestamp.
    pub max_timestamp_us: u64,
    /// True once the footer is durable; the file never changes again.
    pub sealed: bool,
    /// Bytes of the whole file (including index and footer when sealed).
    pub file_len: u64,
}

/// One segment file and its in-memory index.
#[derive(Debug)]
pub struct Segment {
    /// First offset stored in this segment.
    pub base_offset: u64,
    /// The file's path.
    pub path: PathBuf,
    /// The open file.
    pub file: FileRef,
    log_id: u64,
    max_payload_bytes: u32,
    state: RwLock<SegmentState>,
    map: OnceLock<Bytes>,
    /// Chunks appended but not yet confirmed written to the file, ascending by position.
    /// Readers find the newest records here; the flusher drops chunks once their write
    /// completed (from then on the page cache serves them).
    unwritten: Mutex<VecDeque<(u64, Bytes)>>,
    /// A second handle that bypasses the page cache, for the group commit's aligned writes
    /// (`LogOptions::direct_io`); held by the active segment only (closed at the seal, so a
    /// long log does not keep two descriptors per sealed segment).
    direct: Mutex<Option<FileRef>>,
    /// One clone lives in every map handed out by [`Segment::map`] (and so in every record
    /// payload sliced from it): while any of them lives, the count is above one, and the file
    /// must not be recycled (its bytes would change under a reader).
    map_users: Arc<()>,
    /// The file's format version, read from its header when a frame first needs it.
    version: OnceLock<u32>,
    /// Set while the file is not yet under `path` (a pointer-swap roll, see `namer.rs`).
    unnamed: Mutex<Option<Unnamed>>,
}

/// A segment whose file still has its prepared name: a roll took a prepared file and queued
/// no barrier. Its first group writes `header` with its frames; the namer renames the file
/// once that group is durable.
#[derive(Debug)]
struct Unnamed {
    /// The name the file has now.
    at: PathBuf,
    header: HeaderState,
}

/// Where an unnamed segment's header region stands.
#[derive(Debug, Clone)]
pub(crate) enum HeaderState {
    /// Not written yet: the segment's first group writes it.
    Pending(Bytes),
    /// Written by a group nobody waited on (manual mode): not durable yet.
    Written,
    /// Written and fsynced.
    Durable,
}

/// The owner of a segment's map: the mapped bytes, and a clone of the segment's `map_users`.
struct TrackedMap {
    bytes: Bytes,
    _user: Arc<()>,
}

impl AsRef<[u8]> for TrackedMap {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Segment {
    /// Wraps an open segment file whose state recovery (or the writer) has established.
    pub fn new(
        path: PathBuf,
        file: FileRef,
        log_id: u64,
        base_offset: u64,
        max_payload_bytes: u32,
        state: SegmentState,
    ) -> Self {
        debug_assert!(state.end_offset >= base_offset);
        debug_assert!(state.data_end >= HEADER_REGION_BYTES);
        Segment {
            base_offset,
            path,
            file,
            log_id,
            max_payload_bytes,
            state: RwLock::new(state),
            map: OnceLock::new(),
            unwritten: Mutex::new(VecDeque::new()),
            direct: Mutex::new(None),
            map_users: Arc::new(()),
            version: OnceLock::new(),
            unnamed: Mutex::new(None),
        }
    }

    fn lock_unnamed(&self) -> MutexGuard<'_, Option<Unnamed>> {
        // Single assignments: consistent after a panic.
        self.unnamed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a new segment whose file lies at `at` (a prepared name) and whose header region,
    /// `header`, is not written yet (see `namer.rs`).
    pub(crate) fn set_unnamed(&self, at: PathBuf, header: Bytes) {
        debug_assert_eq!(header.len() as u64, HEADER_REGION_BYTES);
        *self.lock_unnamed() = Some(Unnamed {
            at,
            header: HeaderState::Pending(header),
        });
    }

    /// The header region the segment's next group must write first, if none has yet.
    pub(crate) fn pending_header(&self) -> Option<Bytes> {
        match self.lock_unnamed().as_ref().map(|u| &u.header) {
            Some(HeaderState::Pending(h)) => Some(h.clone()),
            _ => None,
        }
    }

    /// Records that the header region was written (`durable`: and fsynced). A header already
    /// durable stays so.
    pub(crate) fn header_written(&self, durable: bool) {
        if let Some(u) = self.lock_unnamed().as_mut() {
            if durable {
                u.header = HeaderState::Durable;
            } else if matches!(u.header, HeaderState::Pending(_)) {
                u.header = HeaderState::Written;
            }
        }
    }

    /// The file's prepared name and its header's state while it is not under `path`.
    pub(crate) fn unnamed(&self) -> Option<(PathBuf, HeaderState)> {
        self.lock_unnamed()
            .as_ref()
            .map(|u| (u.at.clone(), u.header.clone()))
    }

    /// The name the file has now: `path`, or its prepared name while unnamed.
    pub(crate) fn disk_path(&self) -> PathBuf {
        self.lock_unnamed()
            .as_ref()
            .map_or_else(|| self.path.clone(), |u| u.at.clone())
    }

    /// The file is under `path` now.
    pub(crate) fn set_named(&self) {
        *self.lock_unnamed() = None;
    }

    /// Records the format version of a segment this binary creates: its header is written later, by
    /// the roll's barrier or the segment's first group in group commit, so reading it from the file
    /// before then would find zeros (and refuse the producer frames at its start as damage).
    pub(crate) fn set_created_version(&self) {
        let _ = self.version.set(VERSION);
    }

    /// The file's format version (its header was checked when the segment was opened, or the
    /// segment was created by this binary; read from an opened file once, when a producer frame
    /// first needs it).
    pub(crate) fn format_version(&self) -> Result<u32> {
        if let Some(v) = self.version.get() {
            return Ok(*v);
        }
        let mut b = [0u8; 4];
        read_exact_at(&*self.file, &mut b, VERSION_AT as u64)
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(*self.version.get_or_init(|| u32::from_le_bytes(b)))
    }

    /// Refuses a frame of a producer kind inside a segment whose format cannot hold one: it
    /// is damage (or a foreign writer), never a record to serve.
    fn check_kind(&self, h: &FrameHeader, pos: u64) -> Result<()> {
        if !h.kind.is_producer() {
            return Ok(());
        }
        let version = self.format_version()?;
        if version < PRODUCER_KINDS_VERSION {
            return Err(self.corruption(
                pos,
                Some(h.offset),
                format!(
                    "entry kind {} inside a segment of format version {version}",
                    h.kind as u8
                ),
            ));
        }
        Ok(())
    }

    /// Takes a segment that nobody else references apart: its path and open file, if no map
    /// of it, no record sliced from one and no other handle of its file lives anywhere (a
    /// segment fetch server holds the file, a reader the `Arc<Segment>` or a payload). Only
    /// then may the file be overwritten in place (recycled); `None` when something still
    /// reads it, and the caller deletes the file instead (readers keep the unlinked inode).
    pub(crate) fn into_unshared(self: Arc<Self>) -> Option<(PathBuf, FileRef)> {
        let seg = Arc::try_unwrap(self).ok()?;
        let Segment {
            path,
            file,
            map,
            map_users,
            direct,
            ..
        } = seg;
        // Dropping our own map leaves only the maps (and payloads) held elsewhere.
        drop((map, direct));
        let unshared = Arc::strong_count(&map_users) == 1 && Arc::strong_count(&file) == 1;
        unshared.then_some((path, file))
    }

    fn direct(&self) -> MutexGuard<'_, Option<FileRef>> {
        // A plain replace or clone under the lock: consistent even if a holder panicked.
        self.direct.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attaches the segment's direct-write handle.
    pub(crate) fn attach_direct(&self, file: FileRef) {
        *self.direct() = Some(file);
    }

    /// Closes the direct-write handle (the segment was sealed).
    pub(crate) fn detach_direct(&self) {
        self.direct().take();
    }

    /// Writes the index and footer of a segment that takes no more frames and whose frames
    /// are all written, cuts the file to its final size and fsyncs it: the segment is then
    /// immutable and everything in it durable. `file_crc` is the running CRC-32 of every byte
    /// of the file before the index. Run off the acknowledgement path (`sealer.rs`) or by
    /// recovery, which completes a seal a crash interrupted; running it again after a failure
    /// rewrites the same bytes.
    pub(crate) fn seal(&self, file_crc: u32) -> std::io::Result<()> {
        let st = self.state();
        debug_assert!(!st.sealed, "sealed twice");
        let index_bytes = st.index.encode();
        let footer = Footer {
            base_offset: self.base_offset,
            end_offset: st.end_offset,
            data_end: st.data_end,
            max_timestamp_us: st.max_timestamp_us,
            index_entries: st.index.len() as u32,
            index_crc: checksum(&index_bytes),
            file_crc: 0,
        };
        let crc_before = checksum_append(file_crc, &index_bytes);
        let mut tail = index_bytes;
        tail.extend_from_slice(&footer.encode(self.log_id, crc_before));
        let file_len = st.data_end + tail.len() as u64;
        self.file.write_at(&tail, st.data_end)?;
        self.file.set_len(file_len)?;
        self.file.sync_data()?;
        self.update_state(|s| {
            s.sealed = true;
            s.file_len = file_len;
        });
        self.detach_direct();
        Ok(())
    }

    /// The direct-write handle, if one is attached.
    pub(crate) fn direct_file(&self) -> Option<FileRef> {
        self.direct().clone()
    }

    /// A snapshot of the segment's state.
    pub fn state(&self) -> SegmentState {
        self.read_state(|s| s.clone())
    }

    /// Runs `f` on the state under the read lock.
    pub fn read_state<T>(&self, f: impl FnOnce(&SegmentState) -> T) -> T {
        // Poisoning would need a panic while the write lock is held; the state stays valid
        // because every update is a plain field assignment.
        let guard = self.state.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// Runs `f` on the state under the write lock.
    pub fn update_state<T>(&self, f: impl FnOnce(&mut SegmentState) -> T) -> T {
        let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Exclusive end offset.
    pub fn end_offset(&self) -> u64 {
        self.read_state(|s| s.end_offset)
    }

    /// True once sealed.
    pub fn is_sealed(&self) -> bool {
        self.read_state(|s| s.sealed)
    }

    /// Size of the file in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.read_state(|s| s.file_len)
    }

    /// The read-only map of a sealed segment (created on first use).
    pub fn map(&self) -> Result<&Bytes> {
        if let Some(m) = self.map.get() {
            return Ok(m);
        }
        let bytes = self.file.map().map_err(|e| Error::io(&self.path, e))?;
        let map = Bytes::from_owner(TrackedMap {
            bytes,
            _user: self.map_users.clone(),
        });
        Ok(self.map.get_or_init(|| map))
    }

    pub(crate) fn corruption(
        &self,
        file_offset: u64,
        offset: Option<u64>,
        detail: String,
    ) -> Error {
        Error::Corruption {
            segment: self.path.clone(),
            file_offset,
            record_offset: offset,
            detail,
        }
    }

    /// Decodes the frame at `pos` that must hold `offset`; `limit` is the end of the frames.
    /// Returns the frame's header and its bytes.
    pub fn frame_at(&self, pos: u64, offset: u64, limit: u64) -> Result<(FrameHeader, Bytes)> {
        let sealed = self.is_sealed();
        let bytes = if sealed {
            let map = self.map()?;
            if pos > limit || limit > map.len() as u64 {
                return Err(self.corruption(
                    pos,
                    Some(offset),
                    "sealed file shorter than its footer".into(),
                ));
            }
            map.slice(pos as usize..limit as usize)
        } else {
            self.pread_frame(pos, offset, limit)?
        };
        match record::decode_header(&bytes, self.log_id, Some(offset), self.max_payload_bytes) {
            Ok(h) => {
                self.check_kind(&h, pos)?;
                let len = h.frame_len().min(bytes.len());
                Ok((h, bytes.slice(..len)))
            }
            Err(e) => Err(self.corruption(pos, Some(offset), e.to_string())),
        }
    }

    /// Reads one frame of the unsealed segment with two preads (header, then the rest).
    fn pread_frame(&self, pos: u64, offset: u64, limit: u64) -> Result<Bytes> {
        if let Some(bytes) = self.unwritten_at(pos) {
            return Ok(bytes);
        }
        let limit = limit.min(self.written_end());
        if pos + HEADER_SIZE_BYTES as u64 > limit {
            return Err(self.corruption(pos, Some(offset), FrameError::Truncated.to_string()));
        }
        let mut head = [0u8; HEADER_SIZE_BYTES];
        read_exact_at(&*self.file, &mut head, pos).map_err(|e| Error::io(&self.path, e))?;
        let payload_len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if payload_len > self.max_payload_bytes {
            return Err(self.corruption(pos, Some(offset), FrameError::TooLong.to_string()));
        }
        let total = record::frame_len(payload_len as usize) as u64;
        if pos + total > limit {
            return Err(self.corruption(pos, Some(offset), FrameError::Truncated.to_string()));
        }
        let mut buf = vec![0u8; total as usize];
        buf[..HEADER_SIZE_BYTES].copy_from_slice(&head);
        read_exact_at(
            &*self.file,
            &mut buf[HEADER_SIZE_BYTES..],
            pos + HEADER_SIZE_BYTES as u64,
        )
        .map_err(|e| Error::io(&self.path, e))?;
        Ok(Bytes::from(buf))
    }

    fn unwritten(&self) -> MutexGuard<'_, VecDeque<(u64, Bytes)>> {
        // Plain pushes and pops: consistent even if a holder panicked.
        self.unwritten.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes appended bytes at `pos` readable before they reach the file.
    pub(crate) fn push_unwritten(&self, pos: u64, bytes: Bytes) {
        let mut q = self.unwritten();
        debug_assert!(q.back().is_none_or(|(p, b)| p + b.len() as u64 == pos));
        q.push_back((pos, bytes));
    }

    /// The write of everything before `end_pos` completed.
    pub(crate) fn confirm_written(&self, end_pos: u64) {
        let mut q = self.unwritten();
        while q
            .front()
            .is_some_and(|(p, b)| p + b.len() as u64 <= end_pos)
        {
            q.pop_front();
        }
    }

    /// Forgets unwritten chunks (their records were discarded or truncated).
    pub(crate) fn drop_unwritten(&self) {
        self.unwritten().clear();
    }

    /// The bytes from `pos` to the end of the unwritten chunk holding `pos` (chunks hold whole
    /// frames), if `pos` is not yet written to the file.
    pub(crate) fn unwritten_at(&self, pos: u64) -> Option<Bytes> {
        let q = self.unwritten();
        let (p, b) = q
            .iter()
            .find(|(p, b)| *p <= pos && pos < p + b.len() as u64)?;
        Some(b.slice((pos - p) as usize..))
    }

    /// File position up to which every appended byte is in the file (page cache or disk).
    pub(crate) fn written_end(&self) -> u64 {
        let first_unwritten = self.unwritten().front().map(|(p, _)| *p);
        first_unwritten.unwrap_or_else(|| self.read_state(|s| s.data_end))
    }

    /// The largest record timestamp among the frames below `data_end` (a segment cut short
    /// must not keep a removed record's timestamp for its footer).
    pub fn max_timestamp_below(&self, data_end: u64) -> Result<u64> {
        let (mut pos, mut offset, mut max) = (HEADER_REGION_BYTES, self.base_offset, 0);
        while pos < data_end {
            let (h, _) = self.frame_at(pos, offset, data_end)?;
            max = max.max(h.timestamp_us);
            pos += h.frame_len() as u64;
            offset += 1;
        }
        Ok(max)
    }

    /// Finds the file position of the frame holding `offset` (which must be in this segment)
    /// by an index lookup and a short walk; verifies every frame it steps over.
    pub fn locate(&self, offset: u64) -> Result<u64> {
        let (entry, end_offset, data_end) = self.read_state(|s| {
            let rel = u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX);
            (s.index.lookup(rel), s.end_offset, s.data_end)
        });
        debug_assert!(offset >= self.base_offset && offset < end_offset);
        let entry =
            entry.ok_or_else(|| self.corruption(0, Some(offset), "index has no entry".into()))?;
        let mut at = self.base_offset + u64::from(entry.relative_offset);
        let mut pos = u64::from(entry.file_pos);
        while at < offset {
            match self.frame_at(pos, at, data_end) {
                Ok((h, _)) => pos += h.frame_len() as u64,
                // A damaged neighbour must not make the records after it unreadable.
                Err(e) => return self.search_forward(pos, offset, data_end)?.ok_or(e),
            }
            at += 1;
        }
        Ok(pos)
    }

    /// Looks for the frame of `offset` after a damaged frame at `from`, at every aligned
    /// position of a sealed segment. A frame only matches if its checksum, log id and offset
    /// all do, so this cannot return another record's bytes.
    fn search_forward(&self, from: u64, offset: u64, data_end: u64) -> Result<Option<u64>> {
        if !self.is_sealed() {
            return Ok(None);
        }
        let map = self.map()?;
        let end = (data_end as usize).min(map.len());
        let mut p = from as usize + record::FRAME_ALIGN_BYTES;
        while p + HEADER_SIZE_BYTES <= end {
            let found = record::decode_header(
                &map[p..end],
                self.log_id,
                Some(offset),
                self.max_payload_bytes,
            );
            if found.is_ok() {
                return Ok(Some(p as u64));
            }
            p += record::FRAME_ALIGN_BYTES;
        }
        Ok(None)
    }

    /// Reads the record at `offset`, which must lie in `[base_offset, end_offset)`.
    pub fn read(&self, offset: u64) -> Result<Record> {
        let pos = self.locate(offset)?;
        let data_end = self.read_state(|s| s.data_end);
        let (h, frame) = self.frame_at(pos, offset, data_end)?;
        let payload = frame.slice(HEADER_SIZE_BYTES..HEADER_SIZE_BYTES + h.payload_len as usize);
        let frame_len = h.frame_len().min(frame.len());
        Ok(Record {
            offset,
            term: h.term,
            timestamp_us: h.timestamp_us,
            kind: h.kind,
            payload,
            frame: frame.slice(..frame_len),
        })
    }

    /// The path of the segment at `base_offset` in `dir`.
    pub fn path_in(dir: &Path, base_offset: u64) -> PathBuf {
        dir.join(file_name(base_offset))
    }
}

/// Computes the CRC-32 of the first `len_bytes` of a file, reading 1 MiB at a time.
pub fn crc_of_prefix(file: &dyn crate::io::File, len_bytes: u64) -> std::io::Result<u32> {
    const CHUNK_BYTES: u64 = 1 << 20;
    let mut crc = 0u32;
    let mut buf = vec![0u8; CHUNK_BYTES as usize];
    let mut pos = 0u64;
    while pos < len_bytes {
        let n = CHUNK_BYTES.min(len_bytes - pos) as usize;
        read_exact_at(file, &mut buf[..n], pos)?;
        crc = crate::storage::checksum::checksum_append(crc, &buf[..n]);
        pos += n as u64;
    }
    Ok(crc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert_eq!(parse_file_name("00000000000000000042.seg.tmp"), None);
        assert_eq!(parse_file_name("42.seg"), None);
    }

    #[test]
    fn header_and_footer_round_trip() {
        let h = encode_header(7, 100, 5);
        assert!(check_header(&h, 7, 100).is_ok());
        assert!(check_header(&h, 8, 100).is_err());
        assert!(check_header(&h, 7, 101).is_err());
        let f = Footer {
            base_offset: 100,
            end_offset: 110,
            data_end: 8192,
            max_timestamp_us: 3,
            index_entries: 2,
            index_crc: 1,
            file_crc: 0,
        };
        let bytes = f.encode(7, 0);
        let len = 8192 + 16 + 64;
        let back = Footer::decode(&bytes, 7, 100, len).unwrap();
        assert_eq!(back.end_offset, 110);
        assert!(Footer::decode(&bytes, 7, 100, len + 8).is_none());
        assert!(Footer::decode(&bytes, 6, 100, len).is_none());
    }

    #[test]
    fn version_2_is_written_version_1_read_and_an_older_binary_refuses_version_2() {
        let h = encode_header(7, 100, 5);
        assert_eq!(u32_at(&h, VERSION_AT), 2);
        assert!(check_header(&h, 7, 100).is_ok());
        // An older binary (reading version 1 only) refuses the header before any frame.
        assert_eq!(
            check_header_upto(&h, 7, 100, 1),
            Err("unsupported segment format version".into())
        );
        for (version, ok) in [(0u32, false), (1, true), (3, false)] {
            let b = with_version(&h, version);
            assert_eq!(check_header(&b, 7, 100).is_ok(), ok, "version {version}");
        }
    }

    /// `header` with another format version (checksum recomputed).
    fn with_version(header: &[u8], version: u32) -> Vec<u8> {
        let mut b = header.to_vec();
        b[VERSION_AT..VERSION_AT + 4].copy_from_slice(&version.to_le_bytes());
        let crc = crate::storage::checksum::checksum(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn a_version_1_segment_still_reads_and_refuses_producer_kinds() {
        use crate::storage::{EntryKind, Log, LogOptions, NewRecord};
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions::default();
        let rec = |kind, payload| NewRecord {
            term: 1,
            kind,
            timestamp_us: Some(0),
            payload,
        };
        let log = Log::open(dir.path(), opts.clone()).unwrap();
        let recs = [
            rec(EntryKind::Normal, b"plain".as_slice()),
            rec(EntryKind::Produce, b"produced"),
            rec(EntryKind::Register, b"registered"),
        ];
        log.append_records(&recs).unwrap();
        log.sync().unwrap();
        log.close().unwrap();
        // Version 2 (as written): every kind reads.
        let log = Log::open(dir.path(), opts.clone()).unwrap();
        let kinds: Vec<_> = (0..3).map(|o| log.read(o).unwrap().kind).collect();
        assert_eq!(
            kinds,
            [EntryKind::Normal, EntryKind::Produce, EntryKind::Register]
        );
        log.close().unwrap();
        // The same file as version 1 (what an earlier release wrote, had it held these
        // frames): the plain record reads, the producer kinds are corruption, never served.
        let path = Segment::path_in(dir.path(), 0);
        let mut file = std::fs::read(&path).unwrap();
        let head = with_version(&file[..HEADER_BYTES], 1);
        file[..HEADER_BYTES].copy_from_slice(&head);
        std::fs::write(&path, &file).unwrap();
        let log = Log::open(dir.path(), opts).unwrap();
        assert_eq!(log.read(0).unwrap().payload.as_ref(), b"plain");
        // (Reading 2 walks over 1 from the index entry, so it may report 1.)
        for offset in [1, 2] {
            let err = log.read(offset).unwrap_err();
            assert!(
                matches!(err, Error::Corruption { record_offset: Some(o), .. } if o == 1 || o == offset),
                "{err:?}"
            );
        }
    }
}
