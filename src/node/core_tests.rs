//! Every error becomes its reply in one place: `reply_to`.

use super::*;

#[test]
fn not_leader_names_the_leader() {
    let e = Error::NotLeader {
        leader: Some(3),
        addr: Some("h:3".into()),
    };
    assert_eq!(
        reply_to(e),
        Reply::NotLeader {
            leader: Some(3),
            addr: Some("h:3".into())
        }
    );
    let unknown = Error::NotLeader {
        leader: None,
        addr: None,
    };
    assert_eq!(
        reply_to(unknown),
        Reply::NotLeader {
            leader: None,
            addr: None
        }
    );
}

#[test]
fn unavailable_says_the_node_does_not_serve() {
    let e = Error::Unavailable {
        reason: "healing".into(),
    };
    let text = e.to_string();
    assert_eq!(reply_to(e), Reply::Unavailable(text));
}

#[test]
fn below_floor_names_the_first_offset_held() {
    let e = Error::BelowFloor {
        offset: 5,
        first_available: 100,
    };
    assert_eq!(
        reply_to(e),
        Reply::BelowFloor {
            offset: 5,
            first_available: 100
        }
    );
}

#[test]
fn every_other_error_is_answered_with_its_text() {
    let others = [
        Error::InvalidArgument("node 1 cannot replace itself".into()),
        Error::RetiredNode { node_id: 4 },
        Error::MembershipChangeInProgress,
        Error::Shutdown,
        Error::NoLeader { waited_ms: 10 },
        Error::Internal("broken invariant"),
        Error::TaskFailed {
            task: "segment repair",
            reason: "panicked".into(),
        },
        Error::OutOfRange {
            offset: 9,
            start: 0,
            end: 3,
        },
    ];
    for e in others {
        let text = e.to_string();
        assert_eq!(reply_to(e), Reply::Error(text));
    }
}

#[test]
fn a_closed_replica_reports_shutdown_at_its_last_commit_end() {
    let s = closed_status(7, 42);
    assert_eq!(
        (s.node_id, s.role, s.commit_end, s.log_end),
        (7, Role::Shutdown, 42, 42)
    );
    assert!(s.voters.is_empty() && s.learners.is_empty() && s.followers.is_empty());
}

#[test]
fn producer_refusals_become_typed_replies_not_text() {
    let cases = [
        (
            Error::ProducerExpired { producer: 7 },
            ProduceRefusal::Expired,
        ),
        (
            Error::ProducerOutOfOrder {
                producer: 7,
                expected_seq: 3,
                got_seq: 5,
            },
            ProduceRefusal::OutOfOrder { expected_seq: 3 },
        ),
        (
            Error::ProducerSeqBelowWindow {
                producer: 7,
                seq: 1,
                last_seq: 900,
            },
            ProduceRefusal::BelowWindow { last_seq: 900 },
        ),
    ];
    for (e, why) in cases {
        assert_eq!(reply_to(e), Reply::ProduceRefused { producer: 7, why });
    }
}
