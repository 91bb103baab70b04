//! Age retention on a timer: retention runs after every segment seal, but a node that stops
//! receiving writes seals nothing, and its old segments would outlive `retention_age_ms`.
//! This task applies retention every [`RETENTION_CHECK_INTERVAL_MS`] to the open replica's
//! log (a node-level task, not a storage thread: the storage layer's own timer is for local
//! logs). It deletes only below the floor (the pins of Raft, the snapshot and transfers), so
//! running it often is safe. When the retention cut has passed the first segment the current
//! snapshot pins, it first asks openraft for a new snapshot (listing fewer segments): an idle
//! node applies nothing, so the snapshot policy alone would never move that pin.

use super::supervisor::ReplicaCell;
use crate::net::warn_rate::WarnRate;
use std::sync::Arc;

/// How often the node applies retention.
pub const RETENTION_CHECK_INTERVAL_MS: u64 = 1000;
/// At most one warning about failing retention per this many seconds.
const FAILURE_WARN_EVERY_S: u64 = 60;

pub(super) async fn run(cell: Arc<ReplicaCell>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(
        RETENTION_CHECK_INTERVAL_MS,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A disk that keeps failing must not write a line a second for as long as it fails.
    let warn = WarnRate::new(std::time::Duration::from_secs(FAILURE_WARN_EVERY_S));
    loop {
        tick.tick().await;
        let Some(r) = cell.get() else {
            continue;
        };
        if r.retention_wants_snapshot() {
            // openraft builds it only if the state machine finds it lists fewer segments
            // (or covers more entries); the next tick's retention then deletes below it.
            if let Err(e) = r.raft.trigger().snapshot().await {
                tracing::debug!(error = %e, "snapshot for retention not triggered");
            }
        }
        let log = r.store.log().clone();
        // File deletions and a directory fsync: off the async threads.
        let outcome = tokio::task::spawn_blocking(move || log.apply_retention()).await;
        match outcome {
            Ok(Ok(o)) if o.segments_removed > 0 => {
                tracing::debug!(
                    segments = o.segments_removed,
                    bytes = o.bytes_removed,
                    "retention deleted segments"
                );
            }
            Ok(Ok(_)) => {}
            // A failing disk is the supervisor's to heal (the next append or fsync reports
            // it to Raft); here it is only said.
            Ok(Err(e)) => {
                if let Some(times) = warn.event() {
                    tracing::warn!(error = %e, times, "retention failed");
                }
            }
            Err(e) => {
                if let Some(times) = warn.event() {
                    tracing::warn!(error = %e, times, "retention task failed");
                }
            }
        }
    }
}
