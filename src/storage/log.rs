//! The local log façade: appends with group commit, reads, truncation, purge and retention.
//!
//! Concurrency: one `writer` mutex orders appends, seals, truncations and purges; it is never
//! held across the fsync of an ordinary group commit. Group commit uses a separate `sync`
//! mutex and condvar: the first waiter whose offset is not yet durable becomes the syncer,
//! snapshots the written end under the writer lock, fsyncs without any lock, publishes the new
//! durable end and wakes everyone. A truncation bumps a generation so that a syncer that started
//! before it cannot publish a durable end covering records that no longer exist.
//! Lock order: writer → superblock → sync.

use super::options::{LogOptions, SyncMode};
use super::reader::{Iter, TailReader};
use super::record::{self, EntryKind, Record, RecordRef};
use super::recovery::{self, now_us, RecoveryReport};
use super::segment::{self, Footer, Segment, SegmentState, HEADER_REGION_BYTES};
use super::superblock::{SuperblockWriter, NO_TRUNCATION};
use crate::io::{FileRef, IoRef, LockGuard};
use crate::storage::index::SparseIndex;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// One record to append with its Raft metadata (local users call [`Log::append`]).
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    /// Raft term (0 for a local log).
    pub term: u64,
    /// Entry kind.
    pub kind: EntryKind,
    /// Microseconds since the Unix epoch; `None` stamps the append time.
    pub timestamp_us: Option<u64>,
    /// The payload.
    pub payload: &'a [u8],
}

/// What a purge released.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeOutcome {
    /// Segment files deleted.
    pub segments_removed: usize,
    /// Bytes of files deleted.
    pub bytes_removed: u64,
}

/// A local, checksummed, crash-safe append-only log in one directory.
///
/// Cloning is cheap; clones share the same open log. The directory is locked while any clone
/// lives.
#[derive(Debug, Clone)]
pub struct Log {
    shared: Arc<Shared>,
}

struct Active {
    seg: Arc<Segment>,
    /// Running CRC-32 of every byte of the file so far (for the sealed footer).
    file_crc: u32,
}

struct Writer {
    active: Option<Active>,
    next_offset: u64,
    buf: Vec<u8>,
}

struct SyncState {
    durable_end: u64,
    syncing: bool,
    generation: u64,
}

struct SuperblockState {
    writer: SuperblockWriter,
    written_at: Instant,
}

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) io: IoRef,
    pub(crate) opts: LogOptions,
    pub(crate) log_id: u64,
    pub(crate) segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    writer: Mutex<Writer>,
    superblock: Mutex<SuperblockState>,
    sync: Mutex<SyncState>,
    pub(crate) synced: Condvar,
    pub(crate) written_end: AtomicU64,
    pub(crate) start_offset: AtomicU64,
    poison: OnceLock<String>,
    recovery: RecoveryReport,
    _lock: Box<dyn LockGuard>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("log_id", &self.log_id)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a lock is held can only come from a failed assertion (a bug); the state
    // behind it is left consistent by construction, so recover the guard instead of panicking
    // in every other thread.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Log {
    /// Opens (recovering) or creates the log in `dir`. Fails with [`Error::Locked`] if another
    /// handle holds it, and with [`Error::Corruption`] if durable data is damaged.
    pub fn open(dir: impl AsRef<Path>, opts: LogOptions) -> Result<Log> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let io = opts.io.clone();
        if io.list(&dir).is_err() {
            io.create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                io.sync_dir(parent).map_err(|e| Error::io(parent, e))?;
            }
        }
        let lock_path = dir.join(recovery::LOCK_FILE);
        let guard = io.lock(&lock_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::Locked { path: dir.clone() },
            _ => Error::io(&lock_path, e),
        })?;
        let rec = recovery::recover(&io, &dir, &opts)?;
        let start = rec.superblock.current().start_offset;
        let active = rec.active.map(|(seg, file_crc)| Active { seg, file_crc });
        let shared = Arc::new(Shared {
            dir,
            io,
            log_id: rec.log_id,
            segments: RwLock::new(rec.segments),
            writer: Mutex::new(Writer {
                active,
                next_offset: rec.end_offset,
                buf: Vec::new(),
            }),
            superblock: Mutex::new(SuperblockState {
                writer: rec.superblock,
                written_at: Instant::now(),
            }),
            sync: Mutex::new(SyncState {
                durable_end: rec.end_offset,
                syncing: false,
                generation: 0,
            }),
            synced: Condvar::new(),
            written_end: AtomicU64::new(rec.end_offset),
            start_offset: AtomicU64::new(start),
            poison: OnceLock::new(),
            recovery: rec.report,
            opts,
            _lock: guard,
        });
        let log = Log { shared };
        log.finish_recovery()?;
        Ok(log)
    }

    /// Completes an interrupted truncation and records the recovered durable end.
    fn finish_recovery(&self) -> Result<()> {
        let sb = lock(&self.shared.superblock).writer.current();
        let mut w = lock(&self.shared.writer);
        if sb.truncate_from != NO_TRUNCATION {
            self.truncate_locked(&mut w, sb.truncate_from)?;
        }
        let end = w.next_offset;
        let mut sbs = lock(&self.shared.superblock);
        let current = sbs.writer.current();
        if current.durable_end != end {
            let next = super::superblock::Superblock {
                durable_end: end,
                ..current
            };
            sbs.writer
                .write(next)
                .map_err(|e| self.poison_with("superblock write", e))?;
        }
        Ok(())
    }

    /// The log's identity (stored in every record frame).
    pub fn log_id(&self) -> u64 {
        self.shared.log_id
    }

    pub(crate) fn max_record_bytes(&self) -> u32 {
        self.shared.opts.max_record_bytes
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// What recovery did when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.shared.recovery
    }

    /// First readable offset.
    pub fn start_offset(&self) -> u64 {
        self.shared.start_offset.load(Ordering::Acquire)
    }

    /// One past the last appended offset.
    pub fn end_offset(&self) -> u64 {
        self.shared.written_end.load(Ordering::Acquire)
    }

    /// One past the last durable offset.
    pub fn durable_end(&self) -> u64 {
        lock(&self.shared.sync).durable_end
    }

    /// The reason the log is poisoned, if it is.
    pub fn poisoned(&self) -> Option<&str> {
        self.shared.poison.get().map(String::as_str)
    }

    fn check_poison(&self) -> Result<()> {
        match self.shared.poison.get() {
            Some(reason) => Err(Error::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison_with(&self, what: &str, e: std::io::Error) -> Error {
        let reason = format!("{what} failed: {e}");
        tracing::error!(dir = %self.shared.dir.display(), %reason, "log poisoned");
        let _ = self.shared.poison.set(reason);
        self.shared.synced.notify_all();
        self.check_poison().err().unwrap_or(Error::Poisoned {
            reason: what.to_owned(),
        })
    }

    /// Appends one payload and returns its offset. Durable on return in [`SyncMode::Always`].
    pub fn append(&self, payload: &[u8]) -> Result<u64> {
        Ok(self.append_batch(&[payload])?.start)
    }

    /// Appends payloads as consecutive records and returns their offsets.
    pub fn append_batch<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<Range<u64>> {
        let now = now_us();
        let recs: Vec<NewRecord<'_>> = payloads
            .iter()
            .map(|p| NewRecord {
                term: 0,
                kind: EntryKind::Normal,
                timestamp_us: Some(now),
                payload: p.as_ref(),
            })
            .collect();
        self.append_records(&recs)
    }

    /// Appends records with explicit term, kind and timestamp (used by replication).
    pub fn append_records(&self, recs: &[NewRecord<'_>]) -> Result<Range<u64>> {
        let range = self.write_records(recs)?;
        if self.shared.opts.sync == SyncMode::Always && !range.is_empty() {
            self.sync_until(range.end)?;
        }
        Ok(range)
    }

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

    /// Writes records (not yet durable) and makes them readable; returns their offsets.
    /// If it fails part-way across a segment roll, a prefix of the batch may stay in the log,
    /// unacknowledged, exactly as after a crash.
    pub(crate) fn write_records(&self, recs: &[NewRecord<'_>]) -> Result<Range<u64>> {
        self.validate_batch(recs)?;
        self.check_poison()?;
        let mut w = lock(&self.shared.writer);
        self.check_poison()?;
        let first = w.next_offset;
        let durable_hint = self.durable_end();
        let mut buf = std::mem::take(&mut w.buf);
        let result = self.write_locked(&mut w, &mut buf, recs, durable_hint);
        buf.clear();
        if buf.capacity() > 16 << 20 {
            buf = Vec::new();
        }
        w.buf = buf;
        result?;
        Ok(first..w.next_offset)
    }

    fn write_locked(
        &self,
        w: &mut Writer,
        buf: &mut Vec<u8>,
        recs: &[NewRecord<'_>],
        hint: u64,
    ) -> Result<()> {
        let seg_size = self.shared.opts.segment_size_bytes;
        let mut notes: Vec<(u64, u64, u64)> = Vec::with_capacity(recs.len());
        for (offset, r) in (w.next_offset..).zip(recs) {
            let flen = record::frame_len(r.payload.len()) as u64;
            let mut pos = self.ensure_active(w)? + buf.len() as u64;
            if pos + flen > seg_size && pos > HEADER_REGION_BYTES {
                self.flush_locked(w, buf, &mut notes)?;
                self.seal_locked(w)?;
                pos = self.ensure_active(w)?;
            }
            let ts = r.timestamp_us.unwrap_or_else(now_us);
            let rec = RecordRef {
                offset,
                term: r.term,
                timestamp_us: ts,
                kind: r.kind,
                payload: r.payload,
            };
            record::encode(buf, self.shared.log_id, rec, hint.min(offset));
            notes.push((offset, pos, ts));
        }
        self.flush_locked(w, buf, &mut notes)
    }

    /// Makes sure there is an active segment; returns its data end.
    fn ensure_active(&self, w: &mut Writer) -> Result<u64> {
        if w.active.is_none() {
            self.create_segment(w)?;
        }
        Ok(w.active
            .as_ref()
            .map_or(HEADER_REGION_BYTES, |a| a.seg.read_state(|s| s.data_end)))
    }

    /// Writes the buffered frames at the active segment's end and publishes them to readers.
    fn flush_locked(
        &self,
        w: &mut Writer,
        buf: &mut Vec<u8>,
        notes: &mut Vec<(u64, u64, u64)>,
    ) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let active = w
            .active
            .as_mut()
            .ok_or_else(|| Error::InvalidArgument("no active segment".into()))?;
        let seg = active.seg.clone();
        let data_end = seg.read_state(|s| s.data_end);
        if let Err(e) = seg.file.write_at(buf, data_end) {
            buf.clear();
            notes.clear();
            return Err(self.failed_write(&seg, data_end, e));
        }
        active.file_crc = crate::storage::checksum::checksum_append(active.file_crc, buf);
        let new_end = data_end + buf.len() as u64;
        let last = notes.last().map(|n| n.0 + 1);
        seg.update_state(|s| {
            for &(offset, pos, ts) in notes.iter() {
                s.index
                    .observe((offset - seg.base_offset) as u32, pos as u32);
                s.max_timestamp_us = s.max_timestamp_us.max(ts);
            }
            s.data_end = new_end;
            s.file_len = new_end;
            if let Some(end) = last {
                debug_assert_eq!(end, s.end_offset + notes.len() as u64);
                s.end_offset = end;
            }
        });
        if let Some(end) = last {
            w.next_offset = end;
            self.shared.written_end.store(end, Ordering::Release);
        }
        buf.clear();
        notes.clear();
        Ok(())
    }

    /// Handles a failed write at `data_end` of the active segment. ENOSPC leaves the log usable:
    /// the partial write is cut off durably, so that no complete frame of a failed append can
    /// reappear after a crash. Anything else (or a failure to cut) poisons the log.
    fn failed_write(&self, seg: &Segment, data_end: u64, e: std::io::Error) -> Error {
        match Error::io(&seg.path, e) {
            err @ Error::NoSpace { .. } => {
                match seg
                    .file
                    .set_len(data_end)
                    .and_then(|_| seg.file.sync_data())
                {
                    Ok(()) => err,
                    Err(e) => self.poison_with("cutting a failed write", e),
                }
            }
            Error::Io { source, .. } => self.poison_with("segment write", source),
            other => other,
        }
    }

    /// Creates the segment starting at the next offset: header written and fsynced, directory
    /// entry fsynced, before any record goes into it.
    fn create_segment(&self, w: &mut Writer) -> Result<()> {
        debug_assert!(w.active.is_none());
        let base = w.next_offset;
        let path = Segment::path_in(&self.shared.dir, base);
        let io = &self.shared.io;
        let header = segment::encode_header(self.shared.log_id, base, now_us());
        let file: FileRef = io.open(&path, true).map_err(|e| Error::io(&path, e))?;
        let init = file.set_len(0).and_then(|_| file.write_at_sync(&header, 0));
        if let Err(e) = init {
            // Never referenced by a durable directory entry yet; recovery also removes it.
            let _ = io.remove(&path);
            if e.raw_os_error() == Some(libc::ENOSPC) {
                return Err(Error::NoSpace { path });
            }
            return Err(self.poison_with("segment create", e));
        }
        io.sync_dir(&self.shared.dir)
            .map_err(|e| self.poison_with("directory fsync", e))?;
        let state = SegmentState {
            end_offset: base,
            data_end: HEADER_REGION_BYTES,
            index: SparseIndex::new(self.shared.opts.index_interval_bytes),
            max_timestamp_us: 0,
            sealed: false,
            file_len: HEADER_REGION_BYTES,
        };
        let seg = Arc::new(Segment::new(
            path,
            file,
            self.shared.log_id,
            base,
            self.shared.opts.max_record_bytes,
            state,
        ));
        self.shared
            .segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(base, seg.clone());
        w.active = Some(Active {
            seg,
            file_crc: crate::storage::checksum::checksum(&header),
        });
        Ok(())
    }

    /// Writes the index and footer of the active segment and fsyncs it; the segment is then
    /// immutable and everything in it durable.
    fn seal_locked(&self, w: &mut Writer) -> Result<()> {
        let Some(active) = w.active.as_ref() else {
            return Ok(());
        };
        let seg = active.seg.clone();
        let st = seg.state();
        let index_bytes = st.index.encode();
        let footer = Footer {
            base_offset: seg.base_offset,
            end_offset: st.end_offset,
            data_end: st.data_end,
            max_timestamp_us: st.max_timestamp_us,
            index_entries: st.index.len() as u32,
            index_crc: crate::storage::checksum::checksum(&index_bytes),
            file_crc: 0,
        };
        let crc_before = crate::storage::checksum::checksum_append(active.file_crc, &index_bytes);
        let mut tail = index_bytes;
        tail.extend_from_slice(&footer.encode(self.shared.log_id, crc_before));
        if let Err(e) = seg.file.write_at(&tail, st.data_end) {
            return Err(self.failed_write(&seg, st.data_end, e));
        }
        seg.file
            .sync_data()
            .map_err(|e| self.poison_with("segment seal fsync", e))?;
        let file_len = st.data_end + tail.len() as u64;
        seg.update_state(|s| {
            s.sealed = true;
            s.file_len = file_len;
        });
        w.active = None;
        self.publish_durable(st.end_offset, None);
        self.persist_watermark(true)?;
        if self.shared.opts.retention_bytes.is_some() || self.shared.opts.retention_age_ms.is_some()
        {
            self.retention_locked(w)?;
        }
        Ok(())
    }

    /// Raises the durable end (unless a truncation happened since `generation`) and wakes
    /// waiters.
    fn publish_durable(&self, end: u64, generation: Option<u64>) {
        let mut st = lock(&self.shared.sync);
        if generation.is_none_or(|g| g == st.generation) && end > st.durable_end {
            st.durable_end = end;
        }
        drop(st);
        self.shared.synced.notify_all();
    }

    /// Writes the durable watermark to the superblock if forced or if the interval passed.
    fn persist_watermark(&self, force: bool) -> Result<()> {
        let mut sbs = lock(&self.shared.superblock);
        let interval = Duration::from_millis(self.shared.opts.superblock_interval_ms);
        if !force && sbs.written_at.elapsed() < interval {
            return Ok(());
        }
        let durable_end = lock(&self.shared.sync).durable_end;
        let current = sbs.writer.current();
        if current.durable_end == durable_end && current.truncate_from == NO_TRUNCATION {
            sbs.written_at = Instant::now();
            return Ok(());
        }
        let next = super::superblock::Superblock {
            durable_end,
            ..current
        };
        sbs.writer
            .write(next)
            .map_err(|e| self.poison_with("superblock write", e))?;
        sbs.written_at = Instant::now();
        Ok(())
    }

    /// Makes every appended record durable.
    pub fn sync(&self) -> Result<()> {
        let end = self.end_offset();
        self.sync_until(end)
    }

    /// Blocks until the record at `offset` is durable (group commit: concurrent callers share
    /// one fsync).
    pub fn sync_to(&self, offset: u64) -> Result<()> {
        let end = self.end_offset();
        if offset >= end {
            return Err(Error::OutOfRange {
                offset,
                start: self.start_offset(),
                end,
            });
        }
        self.sync_until(offset + 1)
    }

    fn sync_until(&self, end: u64) -> Result<()> {
        loop {
            let mut st = lock(&self.shared.sync);
            loop {
                self.check_poison()?;
                if st.durable_end >= end {
                    return Ok(());
                }
                if !st.syncing {
                    break;
                }
                st = self
                    .shared
                    .synced
                    .wait(st)
                    .unwrap_or_else(|p| p.into_inner());
            }
            st.syncing = true;
            let generation = st.generation;
            drop(st);
            let result = self.sync_once();
            lock(&self.shared.sync).syncing = false;
            match result {
                Ok(synced_end) => self.publish_durable(synced_end, Some(generation)),
                Err(e) => {
                    self.shared.synced.notify_all();
                    return Err(e);
                }
            }
            self.persist_watermark(false)?;
        }
    }

    /// One group commit: fsync the active segment outside the writer lock.
    fn sync_once(&self) -> Result<u64> {
        let (file, end) = {
            let w = lock(&self.shared.writer);
            (w.active.as_ref().map(|a| a.seg.file.clone()), w.next_offset)
        };
        if let Some(file) = file {
            file.sync_data().map_err(|e| self.poison_with("fsync", e))?;
        }
        Ok(end)
    }

    /// Reads the record at `offset`.
    pub fn read(&self, offset: u64) -> Result<Record> {
        let seg = self.segment_for(offset)?;
        seg.read(offset)
    }

    /// The segment holding `offset`, checking the readable range.
    pub(crate) fn segment_for(&self, offset: u64) -> Result<Arc<Segment>> {
        let (start, end) = (self.start_offset(), self.end_offset());
        if offset < start || offset >= end {
            return Err(Error::OutOfRange { offset, start, end });
        }
        let segs = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let seg = segs.range(..=offset).next_back().map(|(_, s)| s.clone());
        seg.filter(|s| offset < s.end_offset())
            .ok_or(Error::OutOfRange { offset, start, end })
    }

    /// Iterates records from `from` to the end of the log (as it grows).
    pub fn iter(&self, from: u64) -> Iter {
        Iter::new(self.clone(), from)
    }

    /// A reader that yields durable records from `from` and waits for new ones.
    pub fn tail(&self, from: u64) -> TailReader {
        TailReader::new(self.clone(), from)
    }

    /// Waits until `offset` is durable or `timeout` passes.
    pub(crate) fn wait_durable(&self, offset: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.shared.sync);
        while st.durable_end <= offset {
            self.check_poison()?;
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout { offset });
            }
            let (g, _) = self
                .shared
                .synced
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner());
            st = g;
        }
        Ok(())
    }

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
    fn truncate_locked(&self, w: &mut Writer, cut: u64) -> Result<()> {
        {
            let mut st = lock(&self.shared.sync);
            st.generation += 1;
            st.durable_end = st.durable_end.min(cut);
        }
        let mut sbs = lock(&self.shared.superblock);
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
                .remove(&seg.path)
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
        self.shared
            .segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target.base_offset, target.clone());
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
            self.sync_until(target)?;
        }
        let mut w = lock(&self.shared.writer);
        self.purge_locked(&mut w, offset)
    }

    fn purge_locked(&self, w: &mut Writer, offset: u64) -> Result<PurgeOutcome> {
        let new_start = offset.min(w.next_offset).min(self.durable_end());
        if new_start > self.start_offset() {
            let mut sbs = lock(&self.shared.superblock);
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
        for seg in released {
            self.shared
                .io
                .remove(&seg.path)
                .map_err(|e| Error::io(&seg.path, e))?;
            self.shared
                .segments
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&seg.base_offset);
            outcome.segments_removed += 1;
            outcome.bytes_removed += seg.size_bytes();
        }
        if outcome.segments_removed > 0 {
            self.shared
                .io
                .sync_dir(&self.shared.dir)
                .map_err(|e| self.poison_with("directory fsync", e))?;
        }
        Ok(outcome)
    }

    /// Applies the retention options now (also done after every segment seal).
    pub fn apply_retention(&self) -> Result<PurgeOutcome> {
        self.check_poison()?;
        let mut w = lock(&self.shared.writer);
        self.retention_locked(&mut w)
    }

    fn retention_locked(&self, w: &mut Writer) -> Result<PurgeOutcome> {
        let opts = &self.shared.opts;
        let segs: Vec<Arc<Segment>> = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
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
        match purge_to {
            Some(offset) => self.purge_locked(w, offset),
            None => Ok(PurgeOutcome::default()),
        }
    }

    /// Makes everything durable and persists the watermark; the handle stays usable.
    pub fn flush(&self) -> Result<()> {
        self.check_poison()?;
        self.sync()?;
        self.persist_watermark(true)
    }

    /// Flushes and closes this handle (the directory unlocks when the last clone drops).
    pub fn close(self) -> Result<()> {
        self.flush()
    }

    /// The segments, oldest first.
    pub(crate) fn segments_snapshot(&self) -> Vec<Arc<Segment>> {
        self.shared
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Total bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        self.shared
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|s| s.size_bytes())
            .sum()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.shared
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
