//! Metrics through the `metrics` crate facade: an embedding service installs its own exporter
//! (Prometheus, StatsD, ...) and sees these. Without an exporter they cost a no-op call.
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `sitelog_append_records_total` | counter | records acknowledged (majority-durable) |
//! | `sitelog_append_bytes_total` | counter | payload bytes acknowledged |
//! | `sitelog_append_latency_seconds` | histogram | `append` call to majority acknowledgement |
//! | `sitelog_commit_offset` | gauge | one past the highest committed offset on this node |
//! | `sitelog_term` | gauge | current Raft term |
//! | `sitelog_is_leader` | gauge | 1 on the leader, else 0 |
//! | `sitelog_elections_total` | counter | term changes seen by this node |
//! | `sitelog_follower_lag_entries` | gauge, label `follower` | entries a follower is behind (leader only) |
//! | `sitelog_fsync_latency_seconds` | histogram | one group commit's write + fdatasync (storage) |
//! | `sitelog_replicated_bytes_total` | counter | bytes sent on append streams |
//! | `sitelog_serving` | gauge | 1 while the node serves, 0 while it heals its storage or gave up |
//! | `sitelog_storage_faults_total` | counter, label `fault` | times consensus stopped on a storage fault (`no_space`, `descriptors`, `device`, `corruption`, `other`) |
//! | `sitelog_heals_total` | counter | times the node healed in place and rejoined |
//! | `sitelog_scrub_bytes_total` | counter, label `node` | bytes of sealed segments the scrub checked ([`super::repair`]) |
//! | `sitelog_scrub_segments_total` | counter, label `node` | sealed segments the scrub checked |
//! | `sitelog_segments_repaired_total` | counter, label `node` | damaged sealed segments replaced by a peer's copy |
//! | `sitelog_segment_repair_failures_total` | counter, label `node` | repair attempts that failed |
//! | `sitelog_producers_registered_total` | counter | idempotent producers registered on this node as leader |
//! | `sitelog_produce_deduplicated_total` | counter | produced messages answered with an earlier commit's offset (a retry; nothing appended) |
//! | `sitelog_dedup_mispredicted_total` | counter | produced messages whose committed outcome differed from the leader's prediction (a bug if ever above 0; counted since the replica last opened) |
//! | `sitelog_produce_refused_total` | counter, label `why` | produces the producer table refused (`expired`, `out_of_order`, `below_window`) |

use super::status::Role;
use super::supervisor::{Health, ReplicaCell};
use crate::raft::health::Fault;
use std::sync::Arc;
use std::time::Duration;

/// Records a producer registration.
pub(super) fn producer_registered() {
    metrics::counter!("sitelog_producers_registered_total").increment(1);
}

/// Records produced messages resolved to an earlier commit (dedup hits).
pub(super) fn deduplicated(n: usize) {
    if n > 0 {
        metrics::counter!("sitelog_produce_deduplicated_total").increment(n as u64);
    }
}

/// Records a produce the producer table refused.
pub(super) fn produce_refused((_, why): (u64, crate::raft::dedup::ProduceRefusal)) {
    use crate::raft::dedup::ProduceRefusal;
    let why = match why {
        ProduceRefusal::Expired => "expired",
        ProduceRefusal::OutOfOrder { .. } => "out_of_order",
        ProduceRefusal::BelowWindow { .. } => "below_window",
    };
    metrics::counter!("sitelog_produce_refused_total", "why" => why).increment(1);
}

/// Records an acknowledged append.
pub fn appended(records: usize, bytes: usize, latency: Duration) {
    metrics::counter!("sitelog_append_records_total").increment(records as u64);
    metrics::counter!("sitelog_append_bytes_total").increment(bytes as u64);
    metrics::histogram!("sitelog_append_latency_seconds").record(latency.as_secs_f64());
}

/// How often the gauges are refreshed from the Raft state.
pub const GAUGE_REFRESH_MS: u64 = 200;

/// Records the node's health.
pub(super) fn health(h: &Health) {
    let serving = if *h == Health::Serving { 1.0 } else { 0.0 };
    metrics::gauge!("sitelog_serving").set(serving);
}

/// Records a storage fault that stopped consensus.
pub(super) fn storage_fault(f: Fault) {
    metrics::counter!("sitelog_storage_faults_total", "fault" => f.name()).increment(1);
}

/// Records a heal in place.
pub(super) fn healed() {
    metrics::counter!("sitelog_heals_total").increment(1);
}

/// Samples the node's replica state into gauges every [`GAUGE_REFRESH_MS`] until aborted.
/// (Sampled, not per change: at tens of thousands of commits a second, reading the whole Raft
/// state on every commit cost measurable CPU.) Elections are counted as term increments. It
/// holds no replica between samples, so a healing node can close its log.
pub(super) async fn watch_replica(cell: Arc<ReplicaCell>) {
    let mut last_term: Option<u64> = None;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(GAUGE_REFRESH_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    health(&cell.health());
    loop {
        tick.tick().await;
        let Some((s, mispredicted)) = cell
            .get()
            .map(|r| (super::status::NodeStatus::from(r.status()), r.dedup_mispredicted()))
        else {
            continue;
        };
        metrics::counter!("sitelog_dedup_mispredicted_total").absolute(mispredicted);
        metrics::gauge!("sitelog_commit_offset").set(s.commit_end as f64);
        metrics::gauge!("sitelog_term").set(s.term as f64);
        metrics::gauge!("sitelog_is_leader").set(if s.role == Role::Leader { 1.0 } else { 0.0 });
        if let Some(t) = last_term.filter(|&t| s.term > t) {
            metrics::counter!("sitelog_elections_total").increment(s.term - t);
        }
        last_term = Some(s.term);
        for f in &s.followers {
            metrics::gauge!("sitelog_follower_lag_entries", "follower" => f.node_id.to_string())
                .set(f.lag_entries as f64);
        }
    }
}
