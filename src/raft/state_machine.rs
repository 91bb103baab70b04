//! The state machine: it stores nothing again. The messages *are* the log; applying an entry
//! only advances the committed end that readers may see, and remembers the membership.
//!
//! After a restart the state machine starts empty and openraft applies the log again from its
//! start up to the committed id it recovers (`read_committed`) or learns from the leader: the
//! cost is one read pass over the local log and no copy. Snapshots (a manifest of sealed
//! segments) come with the catch-up work; until then building or installing one is refused
//! with an error, and the node configuration never asks for one (`SnapshotPolicy::Never`), so
//! no node can ever install a snapshot that lacks data.

use super::{LogId, StoredMembership, TypeConfig};
use futures_util::StreamExt;
use openraft::alias::{SnapshotMetaOf, SnapshotOf as SnapshotOfAlias};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::EntryPayload;
use std::io;
use tokio::sync::watch;

/// The (future) snapshot payload: a manifest of sealed segments. Empty until catch-up lands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentManifest {}

/// The snapshot type of sitelog.
pub type SnapshotOf = SnapshotOfAlias<TypeConfig, SegmentManifest>;

/// What has been applied: the committed end readers may use.
#[derive(Debug)]
pub struct StateMachine {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    committed_end: watch::Sender<u64>,
}

impl StateMachine {
    /// A fresh state machine and a receiver that follows its committed end (one past the
    /// highest applied offset).
    pub fn new() -> (StateMachine, watch::Receiver<u64>) {
        let (tx, rx) = watch::channel(0);
        let sm = StateMachine {
            last_applied: None,
            membership: StoredMembership::default(),
            committed_end: tx,
        };
        (sm, rx)
    }
}

fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "segment-manifest snapshots are not implemented yet",
    )
}

/// Refuses to build a snapshot (see the module docs).
#[derive(Debug)]
pub struct ManifestBuilder;

impl RaftSnapshotBuilder<TypeConfig> for ManifestBuilder {
    type SnapshotData = SegmentManifest;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf, io::Error> {
        Err(unsupported())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SegmentManifest;
    type SnapshotBuilder = ManifestBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.membership.clone()))
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
            if let EntryPayload::Membership(m) = &entry.payload {
                self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
            }
            self.last_applied = Some(entry.log_id);
            self.committed_end.send_replace(entry.log_id.index + 1);
            if let Some(r) = responder {
                r.send(entry.log_id.index);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        ManifestBuilder
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<Self::SnapshotBuilder> {
        None
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMetaOf<TypeConfig>,
        _snapshot: SegmentManifest,
    ) -> Result<(), io::Error> {
        Err(unsupported())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf>, io::Error> {
        Ok(None)
    }
}
