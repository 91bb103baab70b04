//! What a node whose log fails to open can still learn from its Raft files, to repair the log
//! from its peers before Raft starts: how far it knows the log is committed (`raft_meta`),
//! and, from its last snapshot (`snapshot`), the members' addresses and the identity of every
//! sealed segment the snapshot lists.

use super::meta::MetaFile;
use super::NodeInfo;
use crate::io::IoRef;
use crate::storage::SegmentInfo;
use crate::Result;
use std::path::Path;

/// See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct StartHints {
    /// One past the highest offset known committed (a lower bound: the committed id is
    /// persisted lazily); 0 when unknown.
    pub committed_end: u64,
    /// Members as of the last snapshot, with sites and addresses (empty without one).
    pub members: Vec<(u64, NodeInfo)>,
    /// Sealed segments the last snapshot lists.
    pub segments: Vec<SegmentInfo>,
}

/// Reads the hints from the data directory `dir` of a node of `cluster_id`.
pub fn read(io: &IoRef, dir: &Path, cluster_id: u64) -> Result<StartHints> {
    let meta = MetaFile::open(io, dir, cluster_id)?.current();
    let committed_end = meta.committed.map_or(0, |(_, index)| index + 1);
    let (members, segments) = match super::snapshot::load(io, dir)? {
        Some((m, manifest)) => (
            m.last_membership
                .nodes()
                .map(|(id, n)| (*id, n.clone()))
                .collect(),
            manifest.segments,
        ),
        None => (Vec::new(), Vec::new()),
    };
    Ok(StartHints {
        committed_end,
        members,
        segments,
    })
}
