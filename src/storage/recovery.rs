//! Opening a log directory: identity, sealed segments, and the unsealed tail.
//!
//! Recovery reads, per sealed segment, only its header, footer and stored index (a few
//! hundred KiB per GiB), and scans frames only in the unsealed segments: the last one, and the
//! one before it when a crash came between a roll and the seal of the segment it left
//! (`sealer.rs`). That one must hold every record up to the last segment's base (they were
//! durable before the last was headed or named; fewer is `Error::Corruption`), and its seal is
//! completed. Decision table for the first frame of the last segment that fails to decode, at
//! offset `o`:
//!
//! | condition                                                     | outcome                  |
//! |---------------------------------------------------------------|--------------------------|
//! | `o < durable_end` of the superblock                           | `Error::Corruption`      |
//! | a later valid frame says `durable_end > o` when it was written| `Error::Corruption`      |
//! | the rest is unused: zeros, or a recycled file's stale bytes    | the segment ends here    |
//! | otherwise: nothing proves the record was ever fsynced          | torn tail: truncate here |
//!
//! Stale bytes: a recycled segment file keeps its old life's frames, index and footer after
//! the new frames. It only ever gets a base above every offset it held, and frames carry
//! their offset, so a stale frame never decodes as the next record. The rest counts as unused
//! (left in place, not reported) when it holds a stale frame or footer and no frame of this
//! segment (offset at or above its base); any frame of this segment there is cut with the
//! tail, so a record a crash discarded never reappears (see `after_the_tail`).
//!
//! "Nothing proves it" is not quite "never acknowledged": the watermark is persisted off the
//! acknowledgement path (every `superblock_interval_ms`, at seals, truncations, purges and at
//! a clean stop: `Log::close`, `Log::persist_watermark`, `Node::shutdown`) and each record
//! proves only its predecessors. A record acknowledged after the last watermark write, with no
//! later record, that the medium then damages before a crash (a clean stop leaves no such
//! record), is cut like a torn write. Bit rot of freshly fsynced sectors at exactly that moment
//! is the residual risk; replication re-fetches such a record from the majority that
//! acknowledged it.
//!
//! Everything else that is wrong (a sealed segment with a bad footer, index or header, a gap
//! between segments, a missing superblock beside existing segments, fewer records than the
//! watermark) is `Error::Corruption` too. After a torn tail is cut, the tail file is fsynced:
//! after a kill -9 the surviving bytes may still be only in the page cache.
//!
//! A roll into a prepared file acknowledges records in it before it has its segment name
//! (`namer.rs`): a prepared file whose header region is a valid header of this log, at a base
//! above every named segment and at or above the start, is the last segment, renamed before
//! the scan (`find_unnamed`). Two such files are `Error::Corruption`.
//!
//! `inspect` runs the same checks read-only (for `sitelog verify`): files opened read-only,
//! and what an open would change (cut, remove) returned as [`PendingRecovery`] instead.

use super::index::{SparseIndex, INDEX_ENTRY_SIZE_BYTES};
use super::options::LogOptions;
use super::record::{self, FrameHeader};
use super::segment::{self, Footer, Segment, SegmentState, FOOTER_BYTES, HEADER_REGION_BYTES};
use super::superblock::{self, Superblock, SuperblockWriter, NO_TRUNCATION};
use crate::io::{read_exact_at, FileRef, IoRef};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the superblock file.
pub const SUPERBLOCK_FILE: &str = "superblock";
/// Name of the lock file.
pub const LOCK_FILE: &str = "LOCK";

/// What recovery found, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files in use after recovery.
    pub segments: usize,
    /// Frames scanned in unsealed segments (the tail, and a segment before it whose seal a
    /// crash interrupted).
    pub tail_records_scanned: u64,
    /// Bytes of torn, never-acknowledged tail that were cut.
    pub torn_bytes_truncated: u64,
    /// Leftover temporary files removed.
    pub temp_files_removed: usize,
    /// Seals of segments before the last that a crash interrupted, completed.
    pub seals_completed: usize,
    /// Last segments found under a prepared name (a crash came before a pointer-swap roll's
    /// rename) and renamed.
    pub segments_named: usize,
}

/// A torn, never-acknowledged tail that recovery would cut (found read-only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub path: PathBuf,
    /// Where the cut would be (the first frame that does not decode).
    pub file_offset: u64,
    /// The offset the frame there should have held.
    pub offset: u64,
    /// Bytes that would be cut.
    pub bytes: u64,
    /// Why the frame there does not decode.
    pub reason: String,
}

/// What the next open's recovery would change, found by a read-only inspection (none of it is
/// damage: all of it concerns bytes never acknowledged or already released).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingRecovery {
    /// A torn tail to cut.
    pub torn_tail: Option<TornTail>,
    /// Leftover temporary files to remove.
    pub temp_files: Vec<PathBuf>,
    /// A last segment created but never written (header missing, all zeros) to remove.
    pub unused_segment: Option<PathBuf>,
    /// A last segment still under its prepared name (a crash came before a pointer-swap
    /// roll's rename, see `namer.rs`), to rename.
    pub unnamed_segment: Option<PathBuf>,
    /// A segment before the last whose seal a crash interrupted (its records are all there),
    /// to seal.
    pub interrupted_seal: Option<PathBuf>,
    /// Segments a purge had released (all below the start) to remove.
    pub released_segments: Vec<PathBuf>,
    /// A truncation in progress to complete: records from this offset on go.
    pub truncate_from: Option<u64>,
}

impl PendingRecovery {
    /// True when the next open would change nothing.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        *self == PendingRecovery::default()
    }
}

pub(crate) struct Recovered {
    pub log_id: u64,
    pub superblock: SuperblockWriter,
    pub segments: BTreeMap<u64, Arc<Segment>>,
    /// The unsealed last segment and the running CRC of its bytes.
    pub active: Option<(Arc<Segment>, u32)>,
    pub end_offset: u64,
    pub report: RecoveryReport,
}

pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

struct Ctx<'a> {
    io: &'a IoRef,
    dir: &'a Path,
    opts: &'a LogOptions,
    /// `Some` in a read-only inspection: what would change is noted here instead of done.
    pending: Option<std::cell::RefCell<PendingRecovery>>,
}

impl Ctx<'_> {
    fn open(&self, path: &Path) -> std::io::Result<FileRef> {
        match self.pending {
            Some(_) => self.io.open_read_only(path),
            None => self.io.open(path, false),
        }
    }

    /// In an inspection, notes a change and returns true (the caller skips it).
    fn note(&self, f: impl FnOnce(&mut PendingRecovery)) -> bool {
        match &self.pending {
            Some(p) => {
                f(&mut p.borrow_mut());
                true
            }
            None => false,
        }
    }

    fn io_err(&self, path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
        let path = path.to_path_buf();
        move |e| Error::io(path.clone(), e)
    }

    fn corrupt(
        path: &Path,
        file_offset: u64,
        offset: Option<u64>,
        detail: impl Into<String>,
    ) -> Error {
        Error::Corruption {
            segment: path.to_path_buf(),
            file_offset,
            record_offset: offset,
            detail: detail.into(),
        }
    }
}

/// Opens or creates the log in `dir`.
pub(crate) fn recover(io: &IoRef, dir: &Path, opts: &LogOptions) -> Result<Recovered> {
    let ctx = Ctx {
        io,
        dir,
        opts,
        pending: None,
    };
    recover_in(&ctx)
}

/// Runs recovery's checks on an existing log without changing anything: every file is opened
/// read-only, and what recovery would change (cut, remove) is returned instead of done.
/// Damage is [`Error::Corruption`] exactly as at open.
#[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
pub(crate) fn inspect(
    io: &IoRef,
    dir: &Path,
    opts: &LogOptions,
) -> Result<(Recovered, PendingRecovery)> {
    let ctx = Ctx {
        io,
        dir,
        opts,
        pending: Some(Default::default()),
    };
    let rec = recover_in(&ctx)?;
    let mut pending = ctx.pending.map(|p| p.into_inner()).unwrap_or_default();
    let truncate_from = rec.superblock.current().truncate_from;
    pending.truncate_from = (truncate_from != NO_TRUNCATION).then_some(truncate_from);
    Ok((rec, pending))
}

fn recover_in(ctx: &Ctx<'_>) -> Result<Recovered> {
    let (io, dir, opts) = (ctx.io, ctx.dir, ctx.opts);
    let mut report = RecoveryReport::default();
    let mut names = io.list(dir).map_err(ctx.io_err(dir))?;
    names.sort();
    // Prepared segment files are left to the background thread (removing 64 MiB is slow).
    let temporary = |n: &&String| {
        n.ends_with(segment::TEMP_SUFFIX) && !n.starts_with(super::background::PREPARED_PREFIX)
    };
    for name in names.iter().filter(temporary) {
        if ctx.note(|p| p.temp_files.push(dir.join(name))) {
            continue;
        }
        io.remove(&dir.join(name)).map_err(ctx.io_err(dir))?;
        report.temp_files_removed += 1;
    }
    let mut bases: Vec<u64> = names
        .iter()
        .filter_map(|n| segment::parse_file_name(n))
        .collect();
    let sb_path = dir.join(SUPERBLOCK_FILE);
    if !names.iter().any(|n| n == SUPERBLOCK_FILE) {
        if let Some(first) = bases.first() {
            let path = Segment::path_in(dir, *first);
            return Err(Ctx::corrupt(
                &path,
                0,
                None,
                "segments exist but the superblock is missing",
            ));
        }
        if ctx.pending.is_some() {
            return Err(Error::InvalidArgument(format!(
                "{} holds no log (no superblock)",
                dir.display()
            )));
        }
        return create(ctx, &sb_path, report);
    }
    let sb_file = ctx.open(&sb_path).map_err(ctx.io_err(&sb_path))?;
    let sb = superblock::read(&*sb_file)
        .map_err(ctx.io_err(&sb_path))?
        .ok_or_else(|| Ctx::corrupt(&sb_path, 0, None, "both superblock copies are invalid"))?;
    if let Some(want) = opts.log_id.filter(|&w| w != sb.log_id) {
        return Err(Error::InvalidArgument(format!(
            "{} holds log {:#x}, not the expected {want:#x}",
            dir.display(),
            sb.log_id
        )));
    }
    // An inspection reads the unnamed last segment under its prepared name.
    let mut unnamed_at = None;
    if let Some((from, base)) = find_unnamed(ctx, &names, &sb, &bases)? {
        if ctx.note(|p| p.unnamed_segment = Some(from.clone())) {
            unnamed_at = Some((base, from));
        } else {
            let to = Segment::path_in(dir, base);
            tracing::info!(
                from = %from.display(),
                to = %to.display(),
                "naming the last segment a crash left under its prepared name"
            );
            io.rename(&from, &to).map_err(ctx.io_err(&from))?;
            io.sync_dir(dir).map_err(ctx.io_err(dir))?;
            report.segments_named += 1;
        }
        bases.push(base);
    }
    let mut segments = BTreeMap::new();
    let mut active = None;
    // The segment before the last may be unsealed too: a roll heads or names the next segment
    // before the one it left is sealed (`sealer.rs`).
    let mut unsealed_before_last = None;
    for (i, &base) in bases.iter().enumerate() {
        let path = match &unnamed_at {
            Some((b, from)) if *b == base => from.clone(),
            _ => Segment::path_in(dir, base),
        };
        let file = ctx.open(&path).map_err(ctx.io_err(&path))?;
        let is_last = i + 1 == bases.len();
        match load_sealed(ctx, &path, &file, sb.log_id, base)? {
            Some(state) => {
                let seg = Segment::new(path, file, sb.log_id, base, opts.max_record_bytes, state);
                segments.insert(base, Arc::new(seg));
            }
            None if is_last => {
                if let Some((seg, crc)) = scan_tail(ctx, &path, file, &sb, base, &mut report)? {
                    let seg = Arc::new(seg);
                    segments.insert(base, seg.clone());
                    active = Some((seg, crc));
                }
            }
            None if i + 2 == bases.len() => unsealed_before_last = Some((path, file, base)),
            None => {
                return Err(Ctx::corrupt(
                    &path,
                    0,
                    None,
                    "a segment before the last two is not sealed",
                ));
            }
        }
    }
    if let Some((path, file, base)) = unsealed_before_last {
        match segments.keys().next_back().copied().filter(|&b| b > base) {
            Some(next) => {
                let seg = complete_seal(ctx, &path, file, &sb, base, next, &mut report)?;
                segments.insert(base, Arc::new(seg));
            }
            // The last segment was never written and is gone: this one is the tail.
            None => {
                if let Some((seg, crc)) = scan_tail(ctx, &path, file, &sb, base, &mut report)? {
                    let seg = Arc::new(seg);
                    segments.insert(base, seg.clone());
                    active = Some((seg, crc));
                }
            }
        }
    }
    if report.temp_files_removed > 0 {
        io.sync_dir(dir).map_err(ctx.io_err(dir))?;
    }
    finish(ctx, sb_file, sb, segments, active, report)
}

/// The prepared file a pointer-swap roll headed before a crash came before its rename
/// (`namer.rs`), and its base: a prepared file whose header region is a valid header of this
/// log at a base above every named segment, at or above the start. Anything else under a
/// prepared name is left to the background thread: zeros, or a recycled file's old header,
/// whose base lies below the start (it was purged). Two such files are damage: a roll names
/// the segment before it first.
fn find_unnamed(
    ctx: &Ctx<'_>,
    names: &[String],
    sb: &Superblock,
    bases: &[u64],
) -> Result<Option<(PathBuf, u64)>> {
    let floor = bases.last().map_or(0, |&b| b + 1).max(sb.start_offset);
    let mut found: Option<(PathBuf, u64)> = None;
    let prepared = names
        .iter()
        .filter(|n| n.starts_with(super::background::PREPARED_PREFIX));
    for name in prepared {
        let path = ctx.dir.join(name);
        let file = ctx.open(&path).map_err(ctx.io_err(&path))?;
        let mut head = vec![0u8; HEADER_REGION_BYTES as usize];
        match read_exact_at(&*file, &mut head, 0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => continue,
            Err(e) => return Err(Error::io(&path, e)),
        }
        let Some(base) = segment::header_base(&head, sb.log_id).filter(|&b| b >= floor) else {
            continue;
        };
        if let Some((other, _)) = &found {
            let detail = format!(
                "two files under prepared names hold segment headers ({} too)",
                other.display()
            );
            return Err(Ctx::corrupt(&path, 0, Some(base), detail));
        }
        found = Some((path, base));
    }
    Ok(found)
}

fn create(ctx: &Ctx<'_>, sb_path: &Path, report: RecoveryReport) -> Result<Recovered> {
    let log_id = ctx.opts.log_id.unwrap_or_else(|| loop {
        let id = fastrand::u64(..);
        if id != 0 {
            break id;
        }
    });
    let sb = Superblock {
        sequence: 0,
        log_id,
        created_us: now_us(),
        start_offset: 0,
        durable_end: 0,
        truncate_from: NO_TRUNCATION,
    };
    let file = ctx.io.open(sb_path, true).map_err(ctx.io_err(sb_path))?;
    file.set_len(0).map_err(ctx.io_err(sb_path))?;
    // Both slots are allocated now, so that later superblock writes never grow the file and
    // cannot fail for lack of space.
    let mut both = sb.encode().to_vec();
    both.resize(2 * superblock::SLOT_SIZE_BYTES, 0);
    file.write_at_sync(&both, 0).map_err(ctx.io_err(sb_path))?;
    ctx.io.sync_dir(ctx.dir).map_err(ctx.io_err(ctx.dir))?;
    Ok(Recovered {
        log_id,
        superblock: SuperblockWriter::new(file, sb),
        segments: BTreeMap::new(),
        active: None,
        end_offset: 0,
        report,
    })
}

/// Validates segment order, watermark and start; drops segments a purge had already released.
fn finish(
    ctx: &Ctx<'_>,
    sb_file: FileRef,
    sb: Superblock,
    mut segments: BTreeMap<u64, Arc<Segment>>,
    active: Option<(Arc<Segment>, u32)>,
    mut report: RecoveryReport,
) -> Result<Recovered> {
    let mut expected: Option<u64> = None;
    for seg in segments.values() {
        if let Some(e) = expected {
            if seg.base_offset != e {
                let detail = format!("gap or overlap: previous segment ends at {e}");
                return Err(Ctx::corrupt(&seg.path, 0, Some(seg.base_offset), detail));
            }
        }
        expected = Some(seg.end_offset());
    }
    let end_offset = expected.unwrap_or(sb.start_offset).max(sb.start_offset);
    let durable_floor = sb.durable_end.min(sb.truncate_from);
    if end_offset < durable_floor {
        let path = segments
            .values()
            .last()
            .map_or_else(|| ctx.dir.to_path_buf(), |s| s.path.clone());
        let detail =
            format!("log ends at {end_offset} but offsets below {durable_floor} were durable");
        return Err(Ctx::corrupt(&path, 0, Some(end_offset), detail));
    }
    // A crash between a purge's superblock write and its deletes leaves released segments.
    // The last segment stays (appends continue in it) unless it ends below the start: then a
    // `restart_at` moved the start past it, and the next append starts a new segment there.
    let last_base = segments.keys().last().copied();
    let released: Vec<u64> = segments
        .values()
        .filter(|s| {
            let below = s.end_offset() <= sb.start_offset;
            below && (Some(s.base_offset) != last_base || s.end_offset() < sb.start_offset)
        })
        .map(|s| s.base_offset)
        .collect();
    for base in &released {
        if let Some(seg) = segments.remove(base) {
            if !ctx.note(|p| p.released_segments.push(seg.path.clone())) {
                ctx.io.remove(&seg.path).map_err(ctx.io_err(&seg.path))?;
            }
        }
    }
    let active = active.filter(|(seg, _)| !released.contains(&seg.base_offset));
    if !released.is_empty() && ctx.pending.is_none() {
        ctx.io.sync_dir(ctx.dir).map_err(ctx.io_err(ctx.dir))?;
    }
    if let Some(first) = segments.values().next() {
        if first.base_offset > sb.start_offset {
            let detail = format!(
                "segments before {} are missing (log starts at {})",
                first.base_offset, sb.start_offset
            );
            return Err(Ctx::corrupt(&first.path, 0, Some(sb.start_offset), detail));
        }
    }
    report.segments = segments.len();
    Ok(Recovered {
        log_id: sb.log_id,
        superblock: SuperblockWriter::new(sb_file, sb),
        segments,
        active,
        end_offset,
        report,
    })
}

/// Opens a sealed segment file through its footer and stored index (for segments adopted from
/// a peer); [`Error::Corruption`] unless it is a valid sealed segment of `log_id` at `base`.
pub(crate) fn open_sealed(
    io: &IoRef,
    path: &Path,
    log_id: u64,
    base: u64,
    opts: &LogOptions,
) -> Result<Segment> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let ctx = Ctx {
        io,
        dir,
        opts,
        pending: None,
    };
    let file = io.open(path, false).map_err(ctx.io_err(path))?;
    match load_sealed(&ctx, path, &file, log_id, base)? {
        Some(state) => Ok(Segment::new(
            path.to_path_buf(),
            file,
            log_id,
            base,
            opts.max_record_bytes,
            state,
        )),
        None => Err(Ctx::corrupt(path, 0, Some(base), "not a sealed segment")),
    }
}

/// Loads a segment through its footer; `Ok(None)` when it has no valid footer (unsealed).
fn load_sealed(
    ctx: &Ctx<'_>,
    path: &Path,
    file: &FileRef,
    log_id: u64,
    base: u64,
) -> Result<Option<SegmentState>> {
    let io_err = ctx.io_err(path);
    let file_len = file.len().map_err(&io_err)?;
    if file_len < HEADER_REGION_BYTES + FOOTER_BYTES as u64 {
        return Ok(None);
    }
    let mut foot = [0u8; FOOTER_BYTES];
    read_exact_at(&**file, &mut foot, file_len - FOOTER_BYTES as u64).map_err(&io_err)?;
    let Some(footer) = Footer::decode(&foot, log_id, base, file_len) else {
        return Ok(None);
    };
    let mut head = vec![0u8; segment::HEADER_BYTES];
    read_exact_at(&**file, &mut head, 0).map_err(&io_err)?;
    segment::check_header(&head, log_id, base).map_err(|d| Ctx::corrupt(path, 0, Some(base), d))?;
    let mut index_bytes = vec![0u8; footer.index_entries as usize * INDEX_ENTRY_SIZE_BYTES];
    read_exact_at(&**file, &mut index_bytes, footer.data_end).map_err(&io_err)?;
    let index = (crate::storage::checksum::checksum(&index_bytes) == footer.index_crc)
        .then(|| SparseIndex::decode(&index_bytes, ctx.opts.index_interval_bytes))
        .flatten()
        .filter(|ix| {
            let records = footer.end_offset - base;
            ix.fits(HEADER_REGION_BYTES as u32, footer.data_end, records)
        })
        .ok_or_else(|| {
            Ctx::corrupt(
                path,
                footer.data_end,
                None,
                "sealed segment index is damaged",
            )
        })?;
    if index.is_empty() != (footer.end_offset == base) {
        return Err(Ctx::corrupt(
            path,
            footer.data_end,
            None,
            "sealed segment index disagrees with its footer",
        ));
    }
    Ok(Some(SegmentState {
        end_offset: footer.end_offset,
        data_end: footer.data_end,
        index,
        max_timestamp_us: footer.max_timestamp_us,
        sealed: true,
        file_len,
    }))
}

/// What scanning a segment's frames from its header region on found.
struct Scan {
    /// Where the frames end: the first that does not decode, or the end of the file.
    pos: u64,
    /// The offset the next frame would hold.
    offset: u64,
    /// Running CRC-32 of the file's bytes up to `pos`.
    crc: u32,
    index: SparseIndex,
    max_ts: u64,
    /// Why the frame at `pos` does not decode (`None` at the end of the file).
    failure: Option<record::FrameError>,
}

impl Scan {
    /// The unsealed segment the frames make, ending where they end, and the running CRC of
    /// its bytes.
    fn into_segment(
        self,
        ctx: &Ctx<'_>,
        path: &Path,
        file: FileRef,
        log_id: u64,
        base: u64,
        file_len: u64,
    ) -> (Segment, u32) {
        let state = SegmentState {
            end_offset: self.offset,
            data_end: self.pos,
            index: self.index,
            max_timestamp_us: self.max_ts,
            sealed: false,
            file_len,
        };
        let max = ctx.opts.max_record_bytes;
        let seg = Segment::new(path.to_path_buf(), file, log_id, base, max, state);
        (seg, self.crc)
    }
}

/// Decodes the frames of an unsealed segment in order, from its header region on.
fn scan_frames(
    path: &Path,
    map: &[u8],
    log_id: u64,
    base: u64,
    opts: &LogOptions,
    report: &mut RecoveryReport,
) -> Result<Scan> {
    let len = map.len() as u64;
    let mut crc = crate::storage::checksum::checksum(&map[..HEADER_REGION_BYTES as usize]);
    let mut index = SparseIndex::new(opts.index_interval_bytes);
    let (mut pos, mut offset, mut max_ts) = (HEADER_REGION_BYTES, base, 0u64);
    let max = opts.max_record_bytes;
    let failure = loop {
        if pos == len {
            break None;
        }
        match record::decode_header(&map[pos as usize..], log_id, Some(offset), max) {
            Ok(h) if pos + h.frame_len() as u64 <= len => {
                let rel = u32::try_from(offset - base)
                    .map_err(|_| Ctx::corrupt(path, pos, Some(offset), "too many records"))?;
                index.observe(rel, pos as u32);
                let end = pos as usize + h.frame_len();
                crc = crate::storage::checksum::checksum_append(crc, &map[pos as usize..end]);
                max_ts = max_ts.max(h.timestamp_us);
                report.tail_records_scanned += 1;
                pos = end as u64;
                offset += 1;
            }
            Ok(_) => break Some(record::FrameError::Truncated),
            Err(e) => break Some(e),
        }
    };
    Ok(Scan {
        pos,
        offset,
        crc,
        index,
        max_ts,
        failure,
    })
}

/// An unsealed segment before the last: a crash came after a roll named the next segment and
/// before the seal of this one completed (`sealer.rs`). Every frame of it was durable before
/// the next segment was named, so its frames must run up to `next`, the next segment's base;
/// fewer is damage ([`Error::Corruption`], nothing cut). What follows them (an interrupted
/// seal, zeros, a recycled file's stale bytes) is replaced by the seal, completed here (in an
/// inspection, noted instead).
fn complete_seal(
    ctx: &Ctx<'_>,
    path: &Path,
    file: FileRef,
    sb: &Superblock,
    base: u64,
    next: u64,
    report: &mut RecoveryReport,
) -> Result<Segment> {
    let io_err = ctx.io_err(path);
    let map = file.map().map_err(&io_err)?;
    if (map.len() as u64) < HEADER_REGION_BYTES {
        return Err(Ctx::corrupt(path, 0, Some(base), "segment shorter than its header region"));
    }
    segment::check_header(&map, sb.log_id, base)
        .map_err(|d| Ctx::corrupt(path, 0, Some(base), d))?;
    let scan = scan_frames(path, &map, sb.log_id, base, ctx.opts, report)?;
    let file_len = map.len() as u64;
    drop(map);
    if scan.offset != next {
        let why = scan
            .failure
            .map_or_else(|| "the file ends".to_string(), |e| e.to_string());
        let detail = format!(
            "unsealed segment before the last ends at offset {} ({why}), but the next segment \
             begins at {next}: its records were durable before the next was named",
            scan.offset
        );
        return Err(Ctx::corrupt(path, scan.pos, Some(scan.offset), detail));
    }
    let (seg, crc) = scan.into_segment(ctx, path, file, sb.log_id, base, file_len);
    if !ctx.note(|p| p.interrupted_seal = Some(path.to_path_buf())) {
        tracing::info!(segment = %path.display(), "completing the seal a crash interrupted");
        seg.seal(crc).map_err(&io_err)?;
        report.seals_completed += 1;
    }
    Ok(seg)
}

/// Scans the unsealed last segment, cutting a torn tail; `None` if the file was never
/// initialised (a crash while creating it) and has been removed.
fn scan_tail(
    ctx: &Ctx<'_>,
    path: &Path,
    file: FileRef,
    sb: &Superblock,
    base: u64,
    report: &mut RecoveryReport,
) -> Result<Option<(Segment, u32)>> {
    let io_err = ctx.io_err(path);
    let map = file.map().map_err(&io_err)?;
    let header = if (map.len() as u64) < HEADER_REGION_BYTES {
        Err("segment shorter than its header region".to_string())
    } else {
        segment::check_header(&map, sb.log_id, base)
    };
    if let Err(detail) = header {
        // Created (or renamed from a prepared file) but never written to: nothing after the
        // header region but zeros.
        let body = map.get(HEADER_REGION_BYTES as usize..).unwrap_or(&[]);
        let never_used = body.iter().all(|&b| b == 0);
        if never_used && base >= sb.durable_end.min(sb.truncate_from) {
            drop(map);
            if ctx.note(|p| p.unused_segment = Some(path.to_path_buf())) {
                return Ok(None);
            }
            ctx.io.remove(path).map_err(&io_err)?;
            ctx.io.sync_dir(ctx.dir).map_err(ctx.io_err(ctx.dir))?;
            return Ok(None);
        }
        return Err(Ctx::corrupt(path, 0, Some(base), detail));
    }
    let len = map.len() as u64;
    let scan = scan_frames(path, &map, sb.log_id, base, ctx.opts, report)?;
    let (pos, offset) = (scan.pos, scan.offset);
    let max = ctx.opts.max_record_bytes;
    if let Some(err) = &scan.failure {
        let durable_floor = sb.durable_end.min(sb.truncate_from);
        if offset < durable_floor {
            let detail = format!("{err}; offsets below {durable_floor} were durable");
            return Err(Ctx::corrupt(path, pos, Some(offset), detail));
        }
        // Zeros from here on are preallocated space, the stale bytes of a recycled file are
        // not a torn write either; anything else is cut.
        let preallocated = match after_the_tail(&map, pos, sb.log_id, base, offset, max) {
            After::Proof(proof) => {
                let detail = format!(
                    "{err}; record {} was written after this one was durable (durable end {:?})",
                    proof.offset,
                    proof.durable_end_hint()
                );
                return Err(Ctx::corrupt(path, pos, Some(offset), detail));
            }
            After::Unused => true,
            After::Torn => false,
        };
        drop(map);
        let torn = TornTail {
            path: path.to_path_buf(),
            file_offset: pos,
            offset,
            bytes: len - pos,
            reason: err.to_string(),
        };
        // An inspection notes the tail; the segment ends at the torn frame either way.
        if !preallocated && !ctx.note(|p| p.torn_tail = Some(torn)) {
            tracing::warn!(segment = %path.display(), file_offset = pos, offset, %err, "cutting torn, never-acknowledged tail");
            report.torn_bytes_truncated += len - pos;
            file.set_len(pos).map_err(&io_err)?;
        }
    }
    if ctx.pending.is_none() {
        file.sync_data().map_err(&io_err)?;
    }
    let file_len = file.len().map_err(&io_err)?;
    Ok(Some(scan.into_segment(ctx, path, file, sb.log_id, base, file_len)))
}

/// True when every byte is zero (word at a time: this runs over the preallocated rest of the
/// tail segment at every open).
fn is_all_zero(bytes: &[u8]) -> bool {
    // SAFETY: u128 has no invalid bit patterns; align_to only reinterprets aligned middle bytes.
    let (head, words, tail) = unsafe { bytes.align_to::<u128>() };
    head.iter().all(|&b| b == 0)
        && tail.iter().all(|&b| b == 0)
        && words
            .chunks(64)
            .all(|c| c.iter().fold(0u128, |acc, w| acc | w) == 0)
}

/// What lies after the last record of the tail (at `pos`, where the record `offset` should
/// have been) in a segment based at `base`.
enum After {
    /// A valid frame of this log, at a higher offset, written when `offset` was already
    /// durable: proof that the bad frame was acknowledged (corruption).
    Proof(FrameHeader),
    /// Space never written in this segment's life: zeros (preallocated), or the stale bytes
    /// of a recycled file (frames of offsets below `base`, their index and footer), with no
    /// frame of this segment among them. Left in place: nothing there can ever decode as a
    /// record of this segment (every frame carries its offset, and a recycled file only ever
    /// gets a base above every offset it held), and the next appends overwrite it.
    Unused,
    /// Anything else: a torn, never-acknowledged tail, cut. A frame of this segment (offset at
    /// or above `base`) after the end is always cut, so that no record a crash discarded can
    /// later reappear where a new frame happens to end.
    Torn,
}

/// Classifies the bytes from `pos` on (see [`After`]) by one pass over every aligned
/// position; zeros are skipped a word at a time.
fn after_the_tail(map: &[u8], pos: u64, log_id: u64, base: u64, offset: u64, max: u32) -> After {
    if is_all_zero(&map[pos as usize..]) {
        return After::Unused;
    }
    let (mut ours, mut stale) = (false, false);
    let mut p = pos as usize;
    while p + record::HEADER_SIZE_BYTES <= map.len() {
        if map[p..p + 8] == [0u8; 8] {
            // No frame starts with a zero checksum and length (preallocated space).
            p += record::FRAME_ALIGN_BYTES;
            continue;
        }
        if let Ok(h) = record::decode_header(&map[p..], log_id, None, max) {
            let later = p > pos as usize && h.offset > offset;
            if later && h.durable_end_hint().is_some_and(|d| d > offset) {
                return After::Proof(h);
            }
            if h.offset >= base {
                ours = true;
            } else {
                stale = true;
            }
        } else if segment::is_stale_footer(&map[p..], log_id, base) {
            stale = true;
        }
        p += record::FRAME_ALIGN_BYTES;
    }
    if stale && !ours {
        After::Unused
    } else {
        After::Torn
    }
}

