//! `RaftLogStorage` on the segment log: entries are records, stored once.
//!
//! - `append` writes the entries' frames into the log (readable at once, no fsync waited for)
//!   and hands `(end, callback)` to one completion task per store, which awaits the group
//!   commit's durable future for `end` and only then calls `IOFlushed::io_completed`. One task
//!   completes callbacks strictly in append order, so openraft's flushed position never moves
//!   backwards. The queue to it is bounded ([`MAX_PENDING_FLUSHES`]): a disk that stops
//!   syncing back-pressures `append` instead of growing memory.
//! - `save_vote` writes the metadata file and fsyncs it before returning, so the vote is
//!   durable before any later append of its term.
//! - `truncate_after` maps to [`Log::truncate_from`]; `purge` only records the purged log id
//!   in the metadata file (Raft no longer reads below it): the segment files stay, as the
//!   snapshot's data and the messages readers read; retention removes files, never purge.
//!   The store holds a [`Pin`] one past the purged id, so that retention never deletes an
//!   entry openraft may still read: openraft purges only behind a snapshot, so the Raft log
//!   shrinks only where a lagging replica can catch up by snapshot instead.
//! - `save_committed` keeps the committed log id in memory and persists it at most every
//!   [`COMMITTED_PERSIST_INTERVAL_MS`] (a stale committed id is a safe lower bound; this keeps
//!   an fsync off every commit).
//! - A read that meets a damaged sealed segment asks the installed [`SegmentRepair`] (the
//!   node's repair from peers) to replace it and reads once more, so that damage found by
//!   replication or apply does not stop consensus; without one, or when the repair fails,
//!   the typed error goes to openraft as before.

use super::entry::{from_record, to_payload, to_records};
use super::health::{Fault, FaultSlot};
use super::meta::{MetaFile, RaftMeta, StoredVote};
use super::{log_id, Entry, LogId, TypeConfig, Vote};
use crate::storage::{Log, Pin};
use crate::Error;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
// tokio's clock: the simulation's virtual time decides when the committed id is persisted.
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Most appends whose flush callback is still pending.
pub const MAX_PENDING_FLUSHES: usize = 4096;
/// How often, at most, `save_committed` persists the committed log id.
pub const COMMITTED_PERSIST_INTERVAL_MS: u64 = 200;
/// Most bytes of payload one `limited_get_log_entries` call returns (it may return fewer
/// entries than asked; the consensus library sends the rest next).
pub const MAX_READ_BATCH_BYTES: usize = 4 << 20;

fn to_io(e: Error) -> io::Error {
    io::Error::other(e)
}

/// Hands a storage error to openraft (which stops on it), first recording what kind of fault
/// it is, so that the node can tell a full disk from a failing device when it heals.
fn record(faults: &FaultSlot, e: Error) -> io::Error {
    faults.record(&e);
    to_io(e)
}

struct MetaState {
    file: MetaFile,
    /// The committed log id last given to `save_committed` (maybe newer than the file's).
    committed: Option<LogId>,
    committed_persisted_at: Option<Instant>,
}

/// Replaces a damaged sealed segment of the log with a verified copy (installed by the node
/// layer: repair from peers). Resolves once the segment at `base` reads clean again.
pub trait SegmentRepair: Send + Sync + 'static {
    /// Repairs the sealed segment starting at `base`.
    fn repair(&self, base: u64) -> futures_util::future::BoxFuture<'static, crate::Result<()>>;
}

/// The Raft log storage of one node: the segment log plus the metadata file.
#[derive(Clone)]
pub struct LogStore {
    log: Log,
    meta: Arc<Mutex<MetaState>>,
    flushes: mpsc::Sender<(u64, IOFlushed<TypeConfig>)>,
    faults: FaultSlot,
    repair: Arc<std::sync::OnceLock<Arc<dyn SegmentRepair>>>,
    /// Keeps retention at or below one past the purged id (see the module doc).
    purge_pin: Arc<Mutex<Pin>>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("log", &self.log).finish()
    }
}

fn lock(m: &Mutex<MetaState>) -> MutexGuard<'_, MetaState> {
    // The state behind the lock is replaced whole; a panic cannot leave it half-written.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn to_pair(id: Option<LogId>) -> Option<(u64, u64)> {
    id.map(|l| (l.leader_id.term, l.index))
}

fn from_pair(p: Option<(u64, u64)>) -> Option<LogId> {
    p.map(|(t, i)| log_id(t, i))
}

impl LogStore {
    /// Wraps an open log and its metadata file. Must be called inside a tokio runtime (it
    /// starts the completion task).
    pub fn new(log: Log, meta: MetaFile) -> LogStore {
        let (tx, rx) = mpsc::channel(MAX_PENDING_FLUSHES);
        let faults = FaultSlot::default();
        super::runtime::spawn(complete_flushes(log.clone(), rx, faults.clone()));
        let committed = from_pair(meta.current().committed);
        let purge_pin = log.pin(meta.current().purged.map_or(0, |(_, i)| i + 1));
        LogStore {
            purge_pin: Arc::new(Mutex::new(purge_pin)),
            log,
            meta: Arc::new(Mutex::new(MetaState {
                file: meta,
                committed,
                committed_persisted_at: None,
            })),
            flushes: tx,
            faults,
            repair: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// The first storage fault this store handed to openraft, if any.
    pub fn fault(&self) -> Option<(Fault, String)> {
        self.faults.get()
    }

    fn fail(&self, e: Error) -> io::Error {
        record(&self.faults, e)
    }

    /// Installs the repair reads use when they meet a damaged sealed segment (once; later
    /// calls are ignored).
    pub fn set_repair(&self, repair: Arc<dyn SegmentRepair>) {
        let _ = self.repair.set(repair);
    }

    /// The segment log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    fn vote(&self) -> Option<Vote> {
        let v = lock(&self.meta).file.current().vote;
        let node = v.node?;
        Some(if v.committed {
            Vote::new_committed(v.term, node)
        } else {
            Vote::new(v.term, node)
        })
    }

    /// Persists the committed log id last given to `save_committed` if the file holds an older
    /// one (at a clean stop: the interval may have held the latest back, and a restarted node
    /// reads its committed end, e.g. to know which segments it may repair at start).
    pub fn persist_committed(&self) -> crate::Result<()> {
        let mut m = lock(&self.meta);
        let next = RaftMeta {
            committed: to_pair(m.committed),
            ..m.file.current()
        };
        if next != m.file.current() {
            m.file.write(next)?;
            m.committed_persisted_at = Some(Instant::now());
        }
        Ok(())
    }

    fn write_meta(&self, f: impl FnOnce(&mut RaftMeta)) -> Result<(), io::Error> {
        let mut m = lock(&self.meta);
        let mut next = m.file.current();
        f(&mut next);
        m.file.write(next).map_err(|e| self.fail(e))
    }

    /// The entries the log holds in `[start, end)` (purged ones at the start are left out, as
    /// openraft allows), at most `limit_bytes` of payload unless the first entry alone is
    /// larger (at least one entry is returned when any is held).
    fn read_range(&self, start: u64, end: u64, limit_bytes: usize) -> crate::Result<Vec<Entry>> {
        // Purged entries stay in the segment files (they are the snapshot's data and the
        // messages readers read) but are gone for Raft.
        let purged_end = lock(&self.meta)
            .file
            .current()
            .purged
            .map_or(0, |(_, i)| i + 1);
        let start = start.max(self.log.start_offset()).max(purged_end);
        let end = end.min(self.log.end_offset());
        if start >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((end.saturating_sub(start)).min(4096) as usize);
        let mut bytes = 0usize;
        for rec in self.log.iter(start).bounded(end, limit_bytes as u64) {
            let rec = rec?;
            if rec.offset >= end {
                break;
            }
            bytes += rec.payload.len();
            if !out.is_empty() && bytes > limit_bytes {
                break;
            }
            out.push(from_record(rec)?);
        }
        Ok(out)
    }

    /// [`Self::read_range`]; damage in a sealed segment is repaired (when a repair is
    /// installed) and the range read once more.
    async fn read_range_repairing(
        &self,
        start: u64,
        end: u64,
        limit_bytes: usize,
    ) -> Result<Vec<Entry>, io::Error> {
        let err = match self.read_range(start, end, limit_bytes) {
            Ok(entries) => return Ok(entries),
            Err(e) => e,
        };
        let base = crate::storage::repair::damaged_segment_base(&err);
        let (Some(base), Some(repair)) = (base, self.repair.get()) else {
            return Err(self.fail(err));
        };
        tracing::warn!(segment = base, error = %err, "Raft read met a damaged segment; repairing it");
        if let Err(e) = repair.repair(base).await {
            tracing::error!(segment = base, error = %e, "repair failed; the read fails");
            return Err(self.fail(err));
        }
        self.read_range(start, end, limit_bytes)
            .map_err(|e| self.fail(e))
    }
}

/// Completes flush callbacks in append order, each once its records are durable. A failed
/// sync poisons the log; the error reaches openraft, which stops the node (nothing after it is
/// acknowledged).
async fn complete_flushes(
    log: Log,
    mut rx: mpsc::Receiver<(u64, IOFlushed<TypeConfig>)>,
    faults: FaultSlot,
) {
    while let Some((end, callback)) = rx.recv().await {
        let result = log.durable(end).await.map_err(|e| record(&faults, e));
        callback.io_completed(result);
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = bounds(&range);
        self.read_range_repairing(start, end, usize::MAX).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.vote())
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        let end = end.min(self.log.end_offset());
        if start >= end {
            return Ok(Vec::new());
        }
        self.read_range_repairing(start, end, MAX_READ_BATCH_BYTES)
            .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged = from_pair(lock(&self.meta).file.current().purged);
        let (start, end) = (self.log.start_offset(), self.log.end_offset());
        let last = if end > start {
            let rec = self.log.read(end - 1).map_err(|e| self.fail(e))?;
            Some(log_id(rec.term, rec.offset))
        } else {
            purged
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let stored = StoredVote {
            term: vote.leader_id.term,
            node: Some(vote.leader_id.voted_for),
            committed: vote.committed,
        };
        self.write_meta(|m| m.vote = stored)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let mut m = lock(&self.meta);
        m.committed = committed;
        let due = m
            .committed_persisted_at
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(COMMITTED_PERSIST_INTERVAL_MS));
        if due {
            let next = RaftMeta {
                committed: to_pair(committed),
                ..m.file.current()
            };
            m.file.write(next).map_err(|e| self.fail(e))?;
            m.committed_persisted_at = Some(Instant::now());
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let committed = lock(&self.meta).committed;
        // The committed id may have been learned (and saved) for entries this node had
        // accepted but not yet made durable; after a crash the log can end below it. Those
        // entries were never reported flushed, so the majority holds them without this node:
        // answer the last entry the log does hold, and let the leader send the rest.
        let end = self.log.end_offset();
        match committed {
            Some(c) if c.index >= end => {
                if end > self.log.start_offset() {
                    let rec = self.log.read(end - 1).map_err(|e| self.fail(e))?;
                    Ok(Some(log_id(rec.term, end - 1)))
                } else {
                    Ok(from_pair(lock(&self.meta).file.current().purged))
                }
            }
            other => Ok(other),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let end = match entries.first() {
            None => self.log.end_offset(),
            Some(first) => {
                let mut expected = self.log.end_offset();
                if first.log_id.index > expected && self.log.start_offset() == expected {
                    // An empty log whose first entry comes at a later index (after a purge
                    // past its end): continue the log there.
                    self.log
                        .restart_at(first.log_id.index)
                        .map_err(|e| self.fail(e))?;
                    expected = first.log_id.index;
                }
                if first.log_id.index != expected {
                    // openraft never leaves holes; this would be a bug, and writing would put
                    // entries at the wrong offsets.
                    return Err(io::Error::other(format!(
                        "append at index {} but the log ends at {expected}",
                        first.log_id.index
                    )));
                }
                let mut end = expected;
                // Runs of entries that carry their stored frame (from a peer) are stored
                // verbatim; the others (this leader's new entries) are encoded here.
                for run in entries.chunk_by(|a, b| a.frame.is_some() == b.frame.is_some()) {
                    let range = if run[0].frame.is_some() {
                        let frames: Vec<_> = run.iter().filter_map(|e| e.frame.clone()).collect();
                        self.log.append_frames(&frames)
                    } else {
                        // A membership that does not fit its encoding is refused before
                        // anything is written (not a storage fault: the log stays healthy).
                        let payloads = run
                            .iter()
                            .map(to_payload)
                            .collect::<crate::Result<Vec<_>>>()
                            .map_err(io::Error::other)?;
                        self.log.write_records(&to_records(run, &payloads), false)
                    }
                    .map_err(|e| self.fail(e))?;
                    debug_assert_eq!(range.start, run[0].log_id.index);
                    end = range.end;
                }
                end
            }
        };
        self.flushes
            .send((end, callback))
            .await
            .map_err(|_| io::Error::other("flush completion task stopped"))
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        let from = last.map_or(0, |l| l.index + 1).max(self.log.start_offset());
        self.log.truncate_from(from).map_err(|e| self.fail(e))
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), io::Error> {
        // Metadata only: the purged entries' segments are the snapshot's data (and the
        // committed messages readers still read); files are removed by retention, never here.
        self.write_meta(|m| m.purged = Some((upto.leader_id.term, upto.index)))?;
        let start = upto.index + 1;
        // Retention may now delete the segments wholly below the purged entries (and what
        // the snapshot and the other pins allow).
        self.purge_pin
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .move_to(start);
        if start > self.log.end_offset() {
            // Purged past the last entry (a snapshot covers more than the log holds).
            self.log.restart_at(start).map_err(|e| self.fail(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! openraft's own storage conformance suite, run against the segment log. Left out, by
    //! design of manifest snapshots: `snapshot_meta` and `transfer_snapshot` (they expect a
    //! snapshot exactly at the applied point; a manifest covers the sealed segments whose
    //! records are all applied, which may end before it), `get_initial_state_log_ids` and
    //! `get_initial_state_re_apply_committed` (a log purged with no snapshot saved, which
    //! sitelog cannot reach: the snapshot file is written before openraft purges).
    use super::*;
    use crate::io::IoRef;
    use crate::raft::meta::MetaFile;
    use crate::raft::state_machine::StateMachine;
    use crate::storage::{IoBackend, LogOptions};
    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::StorageError;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
            let dir = tempfile::tempdir().unwrap();
            let opts = LogOptions {
                segment_size_bytes: 64 << 10,
                max_record_bytes: 4 << 10,
                io: IoBackend::Posix,
                ..LogOptions::default()
            };
            let io: IoRef = opts.io.resolve(opts.direct_io).unwrap();
            let meta = MetaFile::open(&io, dir.path(), 1).unwrap();
            let log = Log::open(dir.path().join("log"), opts).unwrap();
            let store = LogStore::new(log, meta);
            let (sm, _, _) = StateMachine::new(store.clone(), io, dir.path(), 1).unwrap();
            Ok((dir, store, sm))
        }
    }

    type S = Suite<TypeConfig, LogStore, StateMachine, Builder, tempfile::TempDir>;

    #[tokio::test]
    async fn committed_beyond_the_surviving_log_is_clamped_to_its_last_entry() {
        let (_dir, mut store, _sm) = Builder.build().await.unwrap();
        for _ in 0..10 {
            let rec = crate::storage::NewRecord {
                term: 3,
                kind: crate::storage::EntryKind::Normal,
                timestamp_us: None,
                payload: b"x",
            };
            store.log().append_records(&[rec]).unwrap();
        }
        // Learned (and saved) for entries that did not survive a crash.
        store.save_committed(Some(log_id(3, 25))).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(3, 9)));
        store.save_committed(Some(log_id(3, 4))).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(3, 4)));
    }

    macro_rules! suite_cases {
        ($($case:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $case() {
                let (_dir, store, sm) = Builder.build().await.unwrap();
                S::$case(store, sm).await.unwrap();
            }
        )*};
    }

    suite_cases!(
        last_membership_in_log_initial,
        last_membership_in_log,
        last_membership_in_log_multi_step,
        get_membership_initial,
        get_membership_from_log_and_empty_sm,
        get_membership_from_empty_log_and_sm,
        get_membership_from_log_le_sm_last_applied,
        get_membership_from_log_gt_sm_last_applied_1,
        get_membership_from_log_gt_sm_last_applied_2,
        get_initial_state_without_init,
        get_initial_state_with_state,
        get_initial_state_last_log_gt_sm,
        get_initial_state_inverted_log_order,
        get_initial_state_conflict_at_same_index,
        save_vote,
        get_log_entries,
        limited_get_log_entries,
        leader_bounded_stream,
        entries_stream,
        try_get_log_entry,
        log_reader_reads_new_entries,
        initial_logs,
        get_log_state,
        get_log_id,
        last_id_in_log,
        last_applied_state,
        purge_logs_upto_0,
        purge_logs_upto_5,
        purge_logs_upto_20,
        delete_logs_after_11,
        delete_logs_after_5,
        delete_logs_after_0,
        delete_logs_after_none,
        append_to_log,
        apply_single,
        apply_multiple,
        get_initial_state_last_log_lt_sm,
        get_initial_state_membership_from_empty_log_and_sm,
        get_initial_state_membership_from_log_insm_is_smaller,
        get_initial_state_membership_from_sm_inlog_is_smaller,
        snapshot_meta_optional,
    );
}
