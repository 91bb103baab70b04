//! openraft's errors as sitelog's typed [`Error`] variants.
//!
//! Matched on openraft's error enums, never on their text, so that callers above this layer
//! act on a kind (`Error::AlreadyInitialized`, `Error::MembershipChangeInProgress`, ...)
//! instead of parsing messages. The text of a variant openraft may reword keeps only the
//! display of the inner error, for people to read.

use super::TypeConfig;
use crate::Error;
use openraft::error::{
    ChangeMembershipError, ClientWriteError, Fatal, ForwardToLeader, InitializeError, RaftError,
};

/// openraft's committed leader id under sitelog's type configuration.
type CommittedLeaderId = openraft::vote::leader_id_std::CommittedLeaderId<u64>;

/// A write reached a follower: [`Error::NotLeader`] naming the leader openraft knows.
pub(crate) fn not_leader(f: &ForwardToLeader<TypeConfig>) -> Error {
    Error::NotLeader {
        leader: f.leader_id,
        addr: f.leader_node.as_ref().map(|n| n.addr.clone()),
    }
}

/// openraft stopped: on a shutdown ([`Error::Shutdown`]) or on a fatal error
/// ([`Error::Fatal`]: a storage failure, a panic of its core task).
pub(crate) fn fatal(e: &Fatal<TypeConfig>) -> Error {
    match e {
        Fatal::Stopped => Error::Shutdown,
        Fatal::StorageError(_) | Fatal::Panicked => Error::Fatal {
            reason: e.to_string(),
        },
    }
}

/// An API error wrapped with openraft's fatal errors.
pub(crate) fn raft<E>(e: RaftError<TypeConfig, E>, api: impl FnOnce(E) -> Error) -> Error {
    match e {
        RaftError::APIError(e) => api(e),
        RaftError::Fatal(f) => fatal(&f),
    }
}

/// `initialize` refused: the node has a log or a vote already
/// ([`Error::AlreadyInitialized`]), or is not one of the members it was given.
pub(crate) fn initialize(e: InitializeError<TypeConfig>) -> Error {
    match e {
        InitializeError::NotAllowed(_) => Error::AlreadyInitialized,
        InitializeError::NotInMembers(n) => Error::ChangeMembershipRefused {
            reason: n.to_string(),
        },
    }
}

/// A write (an application entry or a membership change) refused before it was appended, or
/// whose entry was discarded.
pub(crate) fn client_write(e: ClientWriteError<TypeConfig>) -> Error {
    match e {
        ClientWriteError::ForwardToLeader(f) => not_leader(&f),
        // The entry was appended and then overwritten by another leader's log: it may still be
        // committed through that leader, so the caller must not take this as "not written".
        ClientWriteError::LogEntryDiscarded(f) => Error::OutcomeUnknown {
            reason: format!(
                "entry discarded on a leader change (leader now {:?})",
                f.leader_id
            ),
        },
        ClientWriteError::ChangeMembershipError(c) => change_membership(c),
        // Invariant: sitelog attaches no precondition to its writes. Should one ever fail,
        // nothing was appended; the log says which.
        ClientWriteError::PreconditionFailed(p) => {
            tracing::error!(precondition = %p, "a write precondition failed");
            Error::Internal("a write precondition failed, but sitelog sets none")
        }
    }
}

/// A membership change refused by openraft.
pub(crate) fn change_membership(e: ChangeMembershipError<CommittedLeaderId, u64>) -> Error {
    match e {
        ChangeMembershipError::InProgress(_) | ChangeMembershipError::UncommittedLeaderLog(_) => {
            Error::MembershipChangeInProgress
        }
        other @ (ChangeMembershipError::EmptyMembership(_)
        | ChangeMembershipError::LearnerNotFound(_)
        | ChangeMembershipError::UnsupportedMembershipTransition(_)
        | ChangeMembershipError::NodeMetadataChanged(_)) => Error::ChangeMembershipRefused {
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
#[path = "errors_tests.rs"]
mod tests;
