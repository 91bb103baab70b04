//! Consensus: openraft (pinned to `=0.10.0-alpha.37`) on top of the segment log.
//!
//! Not part of sitelog's API (hidden from its docs): public only for the simulation and the
//! raft-level tests in `tests/`. Embedders use `node`, whose types never name openraft.
//!
//! This is the only module that names openraft types; everything above it (`net`, `node`)
//! uses sitelog's own types. The mapping (see `shared/research/replication-anchors.md` §9):
//!
//! - **The Raft log is the segment log.** A Raft entry at index *i* is the record at log
//!   offset *i*: its term sits in the record header's `term` field, its kind in `kind`
//!   (normal, blank, membership), an application payload is stored as the record payload, so a
//!   message is stored exactly once. See [`entry`].
//! - **Leader ids are standard Raft's** (`leader_id_std`: one leader per term), so a log id is
//!   `(term, index)` and fits the record header without a format change.
//! - **Vote, last purged and committed log ids** live in a small two-slot file beside the log
//!   ([`meta`]), fsynced before `save_vote` returns: a vote is durable before any entry of its
//!   term is appended.
//! - **`append` never blocks on the disk**: entries are written into the log (readable at
//!   once) and the `IOFlushed` callback fires only once the group commit's fdatasync covers
//!   them ([`log_store`]).
//! - **A data directory knows whose it is**: the file `identity` ([`identity`]) records the
//!   cluster and node it was created for; starting it as another node is refused.
//! - **The state machine stores nothing again**: applying advances the committed offset that
//!   readers may see and remembers the membership ([`state_machine`]).

pub mod dedup;
pub mod entry;
pub(crate) mod errors;
pub mod health;
pub mod identity;
pub mod log_store;
pub mod meta;
// The in-process router: a test hook (the raft-level tests and the simulation).
#[cfg(any(test, feature = "testing"))]
pub mod network;
pub mod remote;
pub mod replica;
pub mod runtime;
pub mod snapshot;
pub mod start_hints;
pub mod state_machine;
pub mod wire;

use bytes::Bytes;
use std::fmt;

/// An application message as Raft carries it: the record payload, zero-copy.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AppBytes(pub Bytes);

impl fmt::Debug for AppBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppBytes({} bytes)", self.0.len())
    }
}

impl fmt::Display for AppBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

/// What the cluster knows of a node: the site (datacenter) it stands in and its address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// The site (datacenter, availability zone) name; placement rules count sites.
    pub site: String,
    /// The address peers connect to (`host:port`).
    pub addr: String,
}

openraft::declare_raft_types!(
    /// sitelog's openraft configuration: u64 node ids, standard Raft leader ids (term only
    /// in log ids), payloads as zero-copy bytes, responses are the applied entry's offset.
    pub TypeConfig:
        D = AppBytes,
        R = u64,
        NodeId = u64,
        Node = NodeInfo,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
        Entry = entry::LogEntry,
        AsyncRuntime = runtime::SeededRuntime,
);

/// The Raft handle type of a sitelog node.
pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;
/// A Raft entry of sitelog.
pub type Entry = entry::LogEntry;
/// A log id: (term, index).
pub type LogId = openraft::LogId<openraft::vote::leader_id_std::CommittedLeaderId<u64>>;
/// A vote.
pub type Vote = <TypeConfig as openraft::RaftTypeConfig>::Vote;
/// A membership configuration.
pub type Membership = openraft::Membership<u64, NodeInfo>;
/// A membership with the log id that introduced it.
pub type StoredMembership = openraft::StoredMembership<
    openraft::vote::leader_id_std::CommittedLeaderId<u64>,
    u64,
    NodeInfo,
>;

/// Builds a log id from a term and an index (= log offset).
pub fn log_id(term: u64, index: u64) -> LogId {
    LogId::new_term_index(term, index)
}
