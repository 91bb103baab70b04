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

use crate::raft::replica::{Replica, Role};
use std::time::Duration;

/// Records an acknowledged append.
pub fn appended(records: usize, bytes: usize, latency: Duration) {
    metrics::counter!("sitelog_append_records_total").increment(records as u64);
    metrics::counter!("sitelog_append_bytes_total").increment(bytes as u64);
    metrics::histogram!("sitelog_append_latency_seconds").record(latency.as_secs_f64());
}

/// Follows a replica's state into gauges until aborted.
pub(super) async fn watch_replica(replica: Replica) {
    let mut last_term = None;
    loop {
        let s = replica.status();
        metrics::gauge!("sitelog_commit_offset").set(s.commit_end as f64);
        metrics::gauge!("sitelog_term").set(s.term as f64);
        metrics::gauge!("sitelog_is_leader").set(if s.role == Role::Leader { 1.0 } else { 0.0 });
        if last_term.is_some_and(|t| t != s.term) {
            metrics::counter!("sitelog_elections_total").increment(1);
        }
        last_term = Some(s.term);
        for f in &s.followers {
            metrics::gauge!("sitelog_follower_lag_entries", "follower" => f.node_id.to_string())
                .set(f.lag_entries as f64);
        }
        // Wake on any change of the Raft state or the commit point.
        let term = s.term;
        let commit = s.commit_end;
        if replica
            .wait_for(1000, |n| {
                n.term != term || n.commit_end != commit || n.role != s.role
            })
            .await
            .is_err()
        {
            continue; // one second without change: refresh anyway
        }
    }
}
