//! The state machine: it stores nothing again. The messages *are* the log; applying an entry
//! only advances the committed end that readers may see, and remembers the membership.
//!
//! Snapshots are segment manifests (`snapshot.rs`): building one lists the sealed segments
//! whose records are all applied (no data is copied); installing one adopts the fetched
//! copies of those segments into the log (`Log::adopt_sealed`). The current snapshot is kept
//! in the file `snapshot`, so that a restarted node restores its state machine from it
//! (openraft installs it again; the segments are already in the log, so nothing moves) and
//! re-applies the committed entries after it.
//!
//! **Retention.** A snapshot lists the sealed segments from the retention cut on (or from
//! the one holding the first record the attached application state needs, if older), and
//! always its last one: a replica rebuilt from it fetches only retained data and its log
//! starts there. The state machine pins (`floor_pin`) the first segment the current snapshot
//! lists and the first record after the attached application state, so retention never
//! deletes what a snapshot being served or the next one needs.
//!
//! **Retired ids.** Applying a membership that drops a node id from the previous one retires
//! that id for good: the set of retired ids is kept with every remembered membership, carried
//! in the snapshot (so a node rebuilt from one knows them), and the replica refuses to add a
//! retired id again or to vote for it. It is derived from committed entries only, so every
//! node computes the same set.

use super::log_store::LogStore;
use super::snapshot::{self, AppState, SegmentManifest, Snapshot, SnapshotMeta};
use super::dedup::{ApplyOutcome, ProducerEntry, ProducerTable};
use super::{log_id, AppData, Applied, LogId, StoredMembership, TypeConfig};
use crate::io::IoRef;
use futures_util::StreamExt;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::EntryPayload;
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// The staging directory (inside a node's data directory) where fetched segments wait.
pub const STAGING_DIR: &str = "fetch";
/// How many past memberships the state machine remembers (to give a snapshot the membership
/// in force at its last log id).
const MEMBERSHIP_HISTORY: usize = 64;

/// The staged copy of the segment at `base` in `data_dir`.
pub fn staged_path(data_dir: &Path, base: u64) -> PathBuf {
    data_dir.join(STAGING_DIR).join(format!("{base:020}.seg"))
}

/// The state a state machine shares with its snapshot builders and its replica.
pub struct SmShared {
    pub(crate) store: LogStore,
    pub(crate) io: IoRef,
    pub(crate) dir: PathBuf,
    pub(crate) cluster_id: u64,
    current: Mutex<Option<(SnapshotMeta, SegmentManifest)>>,
    /// The application's attached state (shipped with the next snapshot).
    pub(crate) app_state: Mutex<Option<AppState>>,
    /// As of the last applied membership: (retired ids, the membership's node ids).
    applied_ids: Mutex<(BTreeSet<u64>, BTreeSet<u64>)>,
    /// What the current snapshot and the attached application state need kept.
    floor_pin: Mutex<crate::storage::Pin>,
    /// The producer table as of the last applied producer entry (issue 17).
    producers: Mutex<ProducerTable>,
}

impl SmShared {
    fn current(&self) -> MutexGuard<'_, Option<(SnapshotMeta, SegmentManifest)>> {
        // Replaced whole; a panic cannot leave it half-written.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn app_state(&self) -> MutexGuard<'_, Option<AppState>> {
        self.app_state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first offset the current snapshot and the attached application state need:
    /// the first segment the snapshot lists (one past its last entry if it lists none) and
    /// one past the application state's offset; `u64::MAX` when neither needs anything.
    pub(crate) fn needed_from(&self) -> u64 {
        let snap = self.current().as_ref().map(|(meta, m)| {
            m.segments
                .first()
                .map(|s| s.base_offset)
                .unwrap_or_else(|| meta.last_log_id.map_or(0, |l| l.index + 1))
        });
        let app = self
            .app_state()
            .as_ref()
            .map(|a| a.offset.saturating_add(1));
        snap.into_iter().chain(app).min().unwrap_or(u64::MAX)
    }

    /// The first segment the current snapshot lists, if there is one.
    pub(crate) fn snapshot_first(&self) -> Option<u64> {
        self.current()
            .as_ref()
            .and_then(|(_, m)| m.segments.first().map(|s| s.base_offset))
    }

    /// Moves the floor pin to [`Self::needed_from`] (after a snapshot is built or installed,
    /// or an application state attached).
    pub(crate) fn refresh_floor_pin(&self) {
        let at = self.needed_from();
        self.floor_pin
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .move_to(at);
    }

    /// As of the last applied membership: the retired ids, and the membership's node ids.
    pub(crate) fn applied_ids(&self) -> (BTreeSet<u64>, BTreeSet<u64>) {
        // Replaced whole; a panic cannot leave it half-written.
        self.applied_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn producers(&self) -> MutexGuard<'_, ProducerTable> {
        // Every update is one `ProducerTable::apply`, which only panics on a broken invariant.
        self.producers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the producer table as of the last applied producer entry (the leader's gate
    /// starts its prediction from it).
    pub(crate) fn producer_table(&self) -> ProducerTable {
        self.producers().clone()
    }

    /// Applies a producer entry to the table; a plain message is [`ApplyOutcome::Appended`].
    /// An entry the table already reflects (replayed after a snapshot or restart) changes
    /// nothing and is reported as what it was, appended or registered.
    fn apply_producer(&self, offset: u64, d: &AppData) -> io::Result<ApplyOutcome> {
        // Entries were checked when they were decoded from a record or a message, or built by
        // this replica: one that does not decode here is a bug, and stopping is the only
        // answer that keeps replicas equal.
        let entry = super::entry::producer_entry(d).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("producer entry at {offset}: {e}"),
            )
        })?;
        let Some(entry) = entry else {
            return Ok(ApplyOutcome::Appended);
        };
        let applied = self.producers().apply(offset, &entry);
        Ok(applied.unwrap_or(match entry {
            ProducerEntry::Register { .. } => ApplyOutcome::Registered,
            ProducerEntry::Produce { .. } => ApplyOutcome::Appended,
        }))
    }

    fn set_applied_ids(&self, m: &StoredMembership, retired: &BTreeSet<u64>) {
        let nodes = m.nodes().map(|(id, _)| *id).collect();
        *self.applied_ids.lock().unwrap_or_else(|p| p.into_inner()) = (retired.clone(), nodes);
    }
}

/// What has been applied: the committed end readers may use.
pub struct StateMachine {
    shared: Arc<SmShared>,
    last_applied: Option<LogId>,
    /// Memberships applied, oldest first (bounded), each with the ids retired as of it.
    memberships: Vec<(StoredMembership, BTreeSet<u64>)>,
    committed_end: watch::Sender<u64>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("last_applied", &self.last_applied)
            .finish()
    }
}

fn io_err(e: crate::Error) -> io::Error {
    io::Error::other(e)
}

impl StateMachine {
    /// A state machine over `store` whose node keeps its files in `dir`, and a receiver that
    /// follows its committed end (one past the highest applied offset). Loads the current
    /// snapshot from `dir/snapshot` if there is one.
    pub fn new(
        store: LogStore,
        io: IoRef,
        dir: &Path,
        cluster_id: u64,
    ) -> crate::Result<(StateMachine, watch::Receiver<u64>, Arc<SmShared>)> {
        let current = snapshot::load(&io, dir)?;
        let app_state = match snapshot::load_app_state(&io, dir)? {
            Some(a) => Some(a),
            None => current.as_ref().and_then(|(_, m)| m.app_state.clone()),
        };
        let retired = current
            .as_ref()
            .map(|(_, m)| m.retired.clone())
            .unwrap_or_default();
        // Without a snapshot the table starts empty and the replay from the log start
        // rebuilds it (retention never passes the snapshot, so the entries are there).
        let producers = current
            .as_ref()
            .and_then(|(_, m)| m.producers.clone())
            .unwrap_or_default();
        let (tx, rx) = watch::channel(0);
        let floor_pin = Mutex::new(store.log().pin(0));
        let shared = Arc::new(SmShared {
            floor_pin,
            store,
            io,
            dir: dir.to_path_buf(),
            cluster_id,
            current: Mutex::new(current),
            app_state: Mutex::new(app_state),
            applied_ids: Mutex::new((retired, BTreeSet::new())),
            producers: Mutex::new(producers),
        });
        shared.refresh_floor_pin();
        let sm = StateMachine {
            shared: shared.clone(),
            last_applied: None,
            memberships: Vec::new(),
            committed_end: tx,
        };
        Ok((sm, rx, shared))
    }

    fn membership(&self) -> StoredMembership {
        self.membership_and_retired().0
    }

    fn membership_and_retired(&self) -> (StoredMembership, BTreeSet<u64>) {
        match self.memberships.last() {
            Some(m) => m.clone(),
            // Before any membership: only what the loaded snapshot retired.
            None => (StoredMembership::default(), self.shared.applied_ids().0),
        }
    }

    /// Remembers `m`, retiring every node id of the previous membership it drops.
    fn remember(&mut self, m: StoredMembership) {
        let (prev, mut retired) = self.membership_and_retired();
        retired.extend(
            prev.nodes()
                .map(|(id, _)| *id)
                .filter(|id| !m.membership().nodes().any(|(n, _)| n == id)),
        );
        self.remember_with(m, retired);
    }

    fn remember_with(&mut self, m: StoredMembership, retired: BTreeSet<u64>) {
        self.shared.set_applied_ids(&m, &retired);
        self.memberships.push((m, retired));
        if self.memberships.len() > MEMBERSHIP_HISTORY {
            self.memberships.remove(0);
        }
    }

    /// The membership in force at `at`, with the ids retired as of it.
    fn membership_at(&self, at: LogId) -> (StoredMembership, BTreeSet<u64>) {
        self.memberships
            .iter()
            .rev()
            .find(|(m, _)| m.log_id().is_none_or(|id| id <= at))
            .cloned()
            .unwrap_or_else(|| self.membership_and_retired())
    }

    /// A builder for the sealed segments whose records are all applied, if they reach past
    /// the current snapshot (or `force`). It lists them from the retention cut (or the first
    /// record the attached application state needs, if older), and always the last one.
    fn builder(&self, force: bool) -> io::Result<Option<ManifestBuilder>> {
        let Some(applied) = self.last_applied else {
            return Ok(None);
        };
        let log = self.shared.store.log();
        let all = log.sealed_segments(applied.index + 1).map_err(io_err)?;
        let (current_end, current_first) = match self.shared.current().as_ref() {
            Some((m, man)) => (
                m.last_log_id.map_or(0, |l| l.index + 1),
                man.segments.first().map(|s| s.base_offset),
            ),
            None => (0, None),
        };
        let end = all.last().map_or(0, |s| s.end_offset);
        let app_needs = self
            .shared
            .app_state()
            .as_ref()
            .map(|a| a.offset.saturating_add(1));
        let from = log
            .retention_cut()
            .into_iter()
            .chain(app_needs)
            .min()
            .unwrap_or(0)
            .min(all.last().map_or(0, |s| s.base_offset));
        let segments: Vec<_> = all.into_iter().filter(|s| s.end_offset > from).collect();
        // A snapshot that covers no more entries is still worth building when it lists fewer
        // segments: retention moved past the current one's first, which it pins.
        let trims = current_first
            .zip(segments.first())
            .is_some_and(|(f, s)| end >= current_end && s.base_offset > f);
        if end <= current_end && !trims && !force {
            return Ok(None);
        }
        let last = match end {
            0 => None,
            e => Some(log_id(log.read(e - 1).map_err(io_err)?.term, e - 1)),
        };
        let (membership, retired) =
            last.map_or_else(|| self.membership_and_retired(), |l| self.membership_at(l));
        let segment_terms = segments
            .iter()
            .map(|s| log.term_starts(s.base_offset, s.end_offset))
            .collect::<crate::Result<Vec<_>>>()
            .map_err(io_err)?;
        Ok(Some(ManifestBuilder {
            segment_terms,
            shared: self.shared.clone(),
            meta: SnapshotMeta {
                last_log_id: last,
                last_membership: membership,
            },
            segments,
            retired,
            producers: self.producers_as_of(applied.index),
        }))
    }

    /// The producer table as of `applied` (the last applied entry, usually past the
    /// snapshot's last log id: the sealed segments end below it), `None` while no producer
    /// entry was applied. Every producer entry up to `applied` is in the table, so marking it
    /// as of `applied` is exact; entries up to it are skipped when replayed after an install.
    fn producers_as_of(&self, applied: u64) -> Option<ProducerTable> {
        let mut t = self.shared.producer_table();
        t.advance_as_of(applied);
        (!t.is_pristine()).then_some(t)
    }
}

/// `m` without the segments wholly below `start`, when `start` is one of its segment bases:
/// this replica's retention already deleted them (replicas' segments share their bounds), and
/// the log cannot adopt segments below its start. Otherwise `m` unchanged.
fn without_segments_below(mut m: SegmentManifest, start: u64) -> SegmentManifest {
    let Some(k) = m.segments.iter().position(|s| s.base_offset == start) else {
        return m;
    };
    m.segments.drain(..k);
    m.segment_terms.drain(..k.min(m.segment_terms.len()));
    m
}

/// Builds a manifest snapshot: O(number of segments), no data copied.
pub struct ManifestBuilder {
    segment_terms: Vec<Vec<(u64, u64)>>,
    shared: Arc<SmShared>,
    meta: SnapshotMeta,
    segments: Vec<crate::storage::SegmentInfo>,
    retired: BTreeSet<u64>,
    producers: Option<ProducerTable>,
}

impl RaftSnapshotBuilder<TypeConfig> for ManifestBuilder {
    type SnapshotData = SegmentManifest;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let manifest = SegmentManifest {
            lineage: self.shared.cluster_id,
            segments: self.segments.clone(),
            segment_terms: self.segment_terms.clone(),
            app_state: self.shared.app_state().clone(),
            retired: self.retired.clone(),
            producers: self.producers.clone(),
        };
        snapshot::save(&self.shared.io, &self.shared.dir, &self.meta, &manifest).map_err(io_err)?;
        *self.shared.current() = Some((self.meta.clone(), manifest.clone()));
        self.shared.refresh_floor_pin();
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: manifest,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SegmentManifest;
    type SnapshotBuilder = ManifestBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.membership()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + Send,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            debug_assert!(self
                .last_applied
                .is_none_or(|l| l.index < entry.log_id.index));
            let outcome = match &entry.payload {
                EntryPayload::Membership(m) => {
                    self.remember(StoredMembership::new(Some(entry.log_id), m.clone()));
                    ApplyOutcome::Appended
                }
                EntryPayload::Normal(d) => self.shared.apply_producer(entry.log_id.index, d)?,
                EntryPayload::Blank => ApplyOutcome::Appended,
            };
            self.last_applied = Some(entry.log_id);
            self.committed_end.send_replace(entry.log_id.index + 1);
            if let Some(r) = responder {
                r.send(Applied {
                    offset: entry.log_id.index,
                    outcome,
                });
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // openraft calls this only through `try_create_snapshot_builder` here; an empty
        // manifest at the applied point is the safe answer if it ever does.
        match self.builder(true) {
            Ok(Some(b)) => b,
            _ => {
                let (membership, retired) = self.membership_and_retired();
                ManifestBuilder {
                    segment_terms: Vec::new(),
                    shared: self.shared.clone(),
                    meta: SnapshotMeta {
                        last_log_id: None,
                        last_membership: membership,
                    },
                    segments: Vec::new(),
                    retired,
                    producers: self
                        .last_applied
                        .and_then(|l| self.producers_as_of(l.index)),
                }
            }
        }
    }

    async fn try_create_snapshot_builder(&mut self, force: bool) -> Option<Self::SnapshotBuilder> {
        match self.builder(force) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot build a snapshot now");
                None
            }
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        manifest: SegmentManifest,
    ) -> Result<(), io::Error> {
        if manifest.lineage != self.shared.cluster_id {
            return Err(io::Error::other(format!(
                "snapshot of cluster {:#x} refused by cluster {:#x}",
                manifest.lineage, self.shared.cluster_id
            )));
        }
        // The table only moves forward: a snapshot whose table is older than this node's
        // would make it forget committed seqs (openraft installs only newer snapshots).
        let incoming = manifest.producers.clone().unwrap_or_default();
        let current_as_of = self.shared.producers().as_of();
        if current_as_of > incoming.as_of() {
            return Err(io::Error::other(format!(
                "snapshot with a producer table as of {:?} refused: this node's is as of {:?}",
                incoming.as_of(),
                current_as_of
            )));
        }
        let log = self.shared.store.log();
        let manifest = without_segments_below(manifest, log.start_offset());
        let held = manifest
            .segments
            .iter()
            .all(|s| log.sealed_segment_file(s).is_some());
        if !held {
            let staged: Vec<_> = manifest
                .segments
                .iter()
                .map(|s| (*s, staged_path(&self.shared.dir, s.base_offset)))
                .collect();
            for (info, path) in &staged {
                crate::storage::manifest::verify_segment_file(
                    &self.shared.io,
                    path,
                    info,
                    self.shared.cluster_id,
                )
                .map_err(io_err)?;
            }
            log.adopt_sealed(&staged).map_err(io_err)?;
        }
        snapshot::save(&self.shared.io, &self.shared.dir, meta, &manifest).map_err(io_err)?;
        if let Some(a) = &manifest.app_state {
            snapshot::save_app_state(&self.shared.io, &self.shared.dir, a).map_err(io_err)?;
            *self.shared.app_state() = Some(a.clone());
        }
        // Retirement is for good: what this node already knew stays retired.
        let mut retired = self.shared.applied_ids().0;
        retired.extend(manifest.retired.iter().copied());
        *self.shared.current() = Some((meta.clone(), manifest));
        *self.shared.producers() = incoming;
        self.shared.refresh_floor_pin();
        self.last_applied = meta.last_log_id;
        self.memberships.clear();
        self.remember_with(meta.last_membership.clone(), retired);
        let end = meta.last_log_id.map_or(0, |l| l.index + 1);
        self.committed_end.send_if_modified(|c| {
            let moved = end > *c;
            *c = (*c).max(end);
            moved
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self
            .shared
            .current()
            .clone()
            .map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

#[cfg(test)]
#[path = "state_machine_tests.rs"]
mod tests;
