//! Each openraft error kind sitelog maps, to its typed variant.

use super::*;
use crate::raft::{log_id, NodeInfo, Vote};
use openraft::error::{EmptyMembership, InProgress, LearnerNotFound, NotAllowed};
use openraft::{ErrorSubject, ErrorVerb, StorageError};

fn leader_at(id: u64, addr: &str) -> ForwardToLeader<TypeConfig> {
    ForwardToLeader::new(
        id,
        NodeInfo {
            site: "a".into(),
            addr: addr.into(),
        },
    )
}

#[test]
fn fatal_stopped_is_shutdown_and_the_rest_fatal() {
    assert!(matches!(fatal(&Fatal::Stopped), Error::Shutdown));
    assert!(matches!(fatal(&Fatal::Panicked), Error::Fatal { .. }));
    let storage = StorageError::from_io_error(
        ErrorSubject::Logs,
        ErrorVerb::Write,
        std::io::Error::other("disk gone"),
    );
    match fatal(&Fatal::StorageError(storage)) {
        Error::Fatal { reason } => assert!(!reason.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn raft_error_maps_the_api_error_or_the_fatal_one() {
    let api: RaftError<TypeConfig, InitializeError<TypeConfig>> =
        RaftError::APIError(InitializeError::NotAllowed(NotAllowed {
            last_log_id: Some(log_id(1, 0)),
            vote: Vote::new(1, 1),
        }));
    assert!(matches!(raft(api, initialize), Error::AlreadyInitialized));
    let stopped: RaftError<TypeConfig, InitializeError<TypeConfig>> =
        RaftError::Fatal(Fatal::Stopped);
    assert!(matches!(raft(stopped, initialize), Error::Shutdown));
}

#[test]
fn forward_to_leader_is_not_leader_with_its_address() {
    match client_write(ClientWriteError::ForwardToLeader(leader_at(3, "h:1"))) {
        Error::NotLeader { leader, addr } => {
            assert_eq!(leader, Some(3));
            assert_eq!(addr.as_deref(), Some("h:1"));
        }
        other => panic!("{other:?}"),
    }
    match client_write(ClientWriteError::ForwardToLeader(ForwardToLeader::empty())) {
        Error::NotLeader { leader, addr } => assert_eq!((leader, addr), (None, None)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_discarded_entry_has_an_unknown_outcome() {
    let e = client_write(ClientWriteError::LogEntryDiscarded(leader_at(2, "h:2")));
    assert!(matches!(e, Error::OutcomeUnknown { .. }), "{e:?}");
}

#[test]
fn membership_errors_are_typed() {
    let in_progress = ChangeMembershipError::InProgress(InProgress {
        committed: Some(log_id(1, 3)),
        membership_log_id: Some(log_id(1, 4)),
    });
    let e = client_write(ClientWriteError::ChangeMembershipError(in_progress));
    assert!(matches!(e, Error::MembershipChangeInProgress), "{e:?}");
    assert!(e.is_retryable());
    for refused in [
        ChangeMembershipError::EmptyMembership(EmptyMembership {}),
        ChangeMembershipError::LearnerNotFound(LearnerNotFound { node_id: 7 }),
    ] {
        let e = change_membership(refused);
        assert!(matches!(e, Error::ChangeMembershipRefused { .. }), "{e:?}");
        assert!(!e.is_retryable());
    }
}

#[test]
fn a_failed_precondition_is_an_internal_error() {
    let p = openraft::error::PreconditionFailed::LastLogIdMismatch {
        expected: None,
        actual: Some(log_id(1, 2)),
    };
    let e = client_write(ClientWriteError::PreconditionFailed(p));
    assert!(matches!(e, Error::Internal(_)), "{e:?}");
}
