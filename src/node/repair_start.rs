//! Repair at start: a node whose log refuses to open because a sealed segment is damaged
//! (a footer, header or index that no longer verifies; damage inside the frames is found by
//! the scrub after the start instead) fetches the identical file from a peer and swaps it in
//! before Raft starts, then opens the log again.
//!
//! What to ask for: the damaged file's base comes from the error; its end is the next
//! segment's base (the segments are contiguous). The segment before the last may be unsealed
//! (a crash between a roll and its seal) and damaged: recovery refuses it the same way, and
//! the peers' sealed copy replaces it.
//! The whole-file CRC comes from the last snapshot's manifest when it lists the segment, else
//! from the peers (`IDENTIFY`). Peers are the configured members (`initial_members`, which
//! the CLI passes on every start) and the members of the last snapshot. Only a segment wholly
//! below the committed end recorded in `raft_meta` is repaired. Damage in the last (active)
//! segment is refused: the original [`Error::Corruption`] is returned.

use super::repair::{fetch_copy, identify_copies, Expected};
use super::NodeConfig;
use crate::net::fetch_budget::FetchBudget;
use crate::raft::start_hints;
use crate::storage::repair::{damaged_segment_base, replace_sealed_file};
use crate::storage::SegmentInfo;
use crate::{Error, Result};
use std::collections::BTreeSet;
use std::path::Path;

/// At most this many segments are repaired before one start.
pub(crate) const MAX_START_REPAIRS: usize = 16;

/// Tries to repair the damage `err` (from opening the replica) names. `Ok(())`: repaired,
/// open again; otherwise the original error (after one log line saying why it was not
/// repaired).
pub(crate) async fn repair_at_start(
    cfg: &NodeConfig,
    budget: &FetchBudget,
    err: Error,
    tried: &mut BTreeSet<u64>,
) -> Result<()> {
    match try_repair(cfg, budget, &err, tried).await {
        Ok(Some(info)) => {
            metrics::counter!("sitelog_segments_repaired_total", "node" => cfg.node_id.to_string())
                .increment(1);
            tracing::warn!(
                segment = info.base_offset,
                end = info.end_offset,
                bytes = info.size_bytes,
                "repaired damaged sealed segment {} at start with a verified copy from a peer",
                info.base_offset
            );
            Ok(())
        }
        Ok(None) => Err(err),
        Err(why) => {
            metrics::counter!("sitelog_segment_repair_failures_total", "node" => cfg.node_id.to_string())
                .increment(1);
            tracing::error!(error = %err, why = %why, "damaged log not repaired at start");
            Err(err)
        }
    }
}

/// `Ok(None)` when `err` is not damage this repairs (not a sealed segment of this log, or
/// already tried).
async fn try_repair(
    cfg: &NodeConfig,
    budget: &FetchBudget,
    err: &Error,
    tried: &mut BTreeSet<u64>,
) -> Result<Option<SegmentInfo>> {
    let log_dir = cfg.data_dir.join("log");
    let Some(base) = damaged_segment_base(err) else {
        return Ok(None);
    };
    let in_log_dir = matches!(err, Error::Corruption { segment, .. }
        if segment.parent() == Some(log_dir.as_path()));
    if !in_log_dir || tried.len() >= MAX_START_REPAIRS || !tried.insert(base) {
        return Ok(None);
    }
    let io = cfg.log.io.resolve(cfg.log.direct_io)?;
    let Some(end) = next_base(&io, &log_dir, base)? else {
        return Err(Error::InvalidArgument(format!(
            "segment {base} is the active segment: only sealed segments are repaired"
        )));
    };
    let hints = start_hints::read(&io, &cfg.data_dir, cfg.cluster_id)?;
    if hints.committed_end < end {
        return Err(Error::InvalidArgument(format!(
            "segment {base}..{end} is not known committed (committed end {}): not repaired",
            hints.committed_end
        )));
    }
    let sources = sources(cfg, &hints.members);
    let listed = hints
        .segments
        .iter()
        .find(|i| i.base_offset == base && i.end_offset == end)
        .copied();
    let candidates = match listed {
        Some(info) => vec![info],
        None => {
            let expect = Expected {
                base_offset: base,
                end_offset: end,
                size_bytes: None,
            };
            identify_copies(&expect, &sources, &cfg.catch_up.fetch).await?
        }
    };
    let mut last = None;
    for info in candidates {
        let fetched = fetch_copy(
            &io,
            &cfg.data_dir,
            cfg.cluster_id,
            &info,
            &sources,
            &cfg.catch_up.fetch,
            budget,
        )
        .await;
        let swapped = fetched
            .and_then(|copy| replace_sealed_file(&io, &log_dir, cfg.cluster_id, &info, &copy));
        match swapped {
            Ok(_) => return Ok(Some(info)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Protocol("no candidate copy".into())))
}

/// The base of the segment file after `base` in `log_dir`, if there is one.
fn next_base(io: &crate::io::IoRef, log_dir: &Path, base: u64) -> Result<Option<u64>> {
    let names = io.list(log_dir).map_err(|e| Error::io(log_dir, e))?;
    Ok(names
        .iter()
        .filter_map(|n| crate::storage::segment::parse_file_name(n))
        .filter(|&b| b > base)
        .min())
}

/// Peer addresses from the configuration and the last snapshot, same site first, never this
/// node, each once.
fn sources(cfg: &NodeConfig, snapshot_members: &[(u64, crate::raft::NodeInfo)]) -> Vec<String> {
    let mut peers: Vec<(bool, String)> = Vec::new();
    let configured = cfg
        .initial_members
        .iter()
        .map(|(id, p)| (*id, p.site.clone(), p.addr.clone()));
    let stored = snapshot_members
        .iter()
        .map(|(id, n)| (*id, n.site.clone(), n.addr.clone()));
    for (id, site, addr) in configured.chain(stored) {
        if id != cfg.node_id && !peers.iter().any(|(_, a)| *a == addr) {
            peers.push((site != cfg.site, addr));
        }
    }
    peers.sort_by_key(|(other_site, _)| *other_site);
    peers.into_iter().map(|(_, a)| a).collect()
}
