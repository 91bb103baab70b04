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

/// What kind of application entry an [`AppData`] is (the record kind it is stored as).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppKind {
    /// A plain message.
    #[default]
    Normal,
    /// A message of an idempotent producer: its bytes start with the producer header.
    Produce,
    /// A producer registration.
    Register,
}

impl AppKind {
    /// The record kind that stores it.
    pub fn entry_kind(self) -> crate::storage::EntryKind {
        match self {
            AppKind::Normal => crate::storage::EntryKind::Normal,
            AppKind::Produce => crate::storage::EntryKind::Produce,
            AppKind::Register => crate::storage::EntryKind::Register,
        }
    }
}

/// An application entry as Raft carries it: `bytes` is exactly the record payload (the
/// producer header included), zero-copy.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AppData {
    /// What the entry is.
    pub kind: AppKind,
    /// The stored payload.
    pub bytes: Bytes,
}

impl AppData {
    /// A plain message.
    pub fn normal(bytes: Bytes) -> Self {
        AppData {
            kind: AppKind::Normal,
            bytes,
        }
    }

    /// The message a reader sees: the bytes past the producer header of a produced message,
    /// all of a plain one, nothing of a registration. (Used by tests and the simulation.)
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn message(&self) -> Bytes {
        match self.kind {
            AppKind::Normal => self.bytes.clone(),
            AppKind::Produce => self
                .bytes
                .slice(entry::PRODUCE_HEADER_BYTES.min(self.bytes.len())..),
            AppKind::Register => Bytes::new(),
        }
    }
}

impl fmt::Debug for AppData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppData({:?}, {} bytes)", self.kind, self.bytes.len())
    }
}

impl fmt::Display for AppData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {} bytes", self.kind, self.bytes.len())
    }
}

/// What applying an entry gave its proposer: where it is stored and what the producer table
/// made of it (plain entries: [`dedup::ApplyOutcome::Appended`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The entry's offset (for a registration: the producer id).
    pub offset: u64,
    /// What the state machine decided.
    pub outcome: dedup::ApplyOutcome,
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
    /// in log ids), payloads as zero-copy bytes with their kind, responses are the applied
    /// entry's offset and the producer table's outcome.
    pub TypeConfig:
        D = AppData,
        R = Applied,
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
