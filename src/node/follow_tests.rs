use super::*;
use bytes::Bytes;

fn follower(next: u64) -> Follower {
    Follower {
        client: Client::new(vec!["127.0.0.1:1".into()], 1),
        next,
        buffered: VecDeque::new(),
        wait: false,
        ended: false,
        poll: Duration::from_millis(DEFAULT_FOLLOW_POLL_MS),
        batch_records: DEFAULT_FOLLOW_BATCH_RECORDS,
    }
}

fn rec(offset: u64) -> WireRecord {
    WireRecord {
        offset,
        term: 1,
        timestamp_us: 0,
        payload: Bytes::from_static(b"x"),
    }
}

#[test]
fn a_batch_short_of_the_commit_end_reads_again_at_once() {
    let mut f = follower(3);
    f.take_batch(10, vec![rec(3), rec(5)]);
    assert_eq!(f.next, 6);
    assert!(!f.wait);
    assert_eq!(f.buffered.len(), 2);
}

#[test]
fn a_batch_reaching_the_commit_end_waits_a_poll_period() {
    let mut f = follower(3);
    f.take_batch(6, vec![rec(3), rec(5)]);
    assert_eq!(f.next, 6);
    assert!(f.wait);
}

#[test]
fn an_empty_batch_skips_raft_entries_up_to_the_commit_end_and_never_goes_back() {
    // Only Raft's own entries in [3, 8): nothing to serve, continue at 8.
    let mut f = follower(3);
    f.take_batch(8, Vec::new());
    assert_eq!(f.next, 8);
    assert!(f.wait);
    // A lagging node answers with an older commit end: the position stays.
    f.take_batch(5, Vec::new());
    assert_eq!(f.next, 8);
    assert!(f.wait);
}
