//! The producer table through the state machine: applied from entries, carried by a snapshot
//! taken mid-segment, installed into a fresh state machine or loaded on restart, and rebuilt
//! to the same table by replaying the tail.

use super::*;
use crate::io::IoRef;
use crate::raft::dedup::ApplyOutcome;
use crate::raft::entry::{encode_produce, encode_register, from_record, to_payload, to_records};
use crate::raft::log_store::LogStore;
use crate::raft::meta::MetaFile;
use crate::raft::{log_id, Entry};
use crate::storage::{IoBackend, Log, LogOptions};
use openraft::entry::RaftEntry;

struct Fixture {
    _dir: tempfile::TempDir,
    io: IoRef,
    store: LogStore,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    // Small segments: a few hundred entries seal several of them.
    let opts = LogOptions {
        segment_size_bytes: 16 << 10,
        max_record_bytes: 1 << 10,
        io: IoBackend::Posix,
        ..LogOptions::default()
    };
    let io: IoRef = opts.io.resolve(opts.direct_io).unwrap();
    let meta = MetaFile::open(&io, dir.path(), 1).unwrap();
    let log = Log::open(dir.path().join("log"), opts).unwrap();
    let root = dir.path().to_path_buf();
    Fixture {
        _dir: dir,
        io,
        store: LogStore::new(log, meta),
        root,
    }
}

impl Fixture {
    /// A state machine keeping its files in `root/name`.
    fn sm(&self, name: &str) -> (StateMachine, Arc<SmShared>) {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let (sm, _, shared) = StateMachine::new(self.store.clone(), self.io.clone(), &dir, 1).unwrap();
        (sm, shared)
    }
}

/// The membership entry a snapshot needs (at offset 0).
fn membership() -> Entry {
    let node = crate::raft::NodeInfo {
        site: "a".into(),
        addr: "a:1".into(),
    };
    let m = crate::raft::Membership::new(
        vec![BTreeSet::from([1])],
        std::collections::BTreeMap::from([(1, node)]),
    )
    .unwrap();
    Entry::new_membership(log_id(1, 0), m)
}

/// A membership, two producers registered at offsets 1 and 2, then 297 messages: mostly each
/// producer's next seq, every 7th a retry of the previous one (a duplicate that reached the
/// log), every 10th a plain message.
fn workload() -> Vec<Entry> {
    let mut out = vec![
        membership(),
        Entry::new_normal(log_id(1, 1), encode_register(1_000, 60_000, 16)),
        Entry::new_normal(log_id(1, 2), encode_register(1_001, 60_000, 16)),
    ];
    let mut next = [0u64; 2];
    let body = [7u8; 200];
    for i in 3..300u64 {
        let id = log_id(1, i);
        let p = (i % 2) as usize;
        let producer = 1 + p as u64;
        let d = if i % 10 == 0 {
            AppData::normal(bytes::Bytes::from_static(b"plain"))
        } else if i % 7 == 0 && next[p] > 0 {
            encode_produce(producer, next[p] - 1, 1_000 + i, &body)
        } else {
            next[p] += 1;
            encode_produce(producer, next[p] - 1, 1_000 + i, &body)
        };
        out.push(Entry::new_normal(id, d));
    }
    out
}

/// Stores `entries` in the log and returns them as read back (with their frames).
fn store(store: &LogStore, entries: &[Entry]) -> Vec<Entry> {
    let payloads: Vec<_> = entries.iter().map(|e| to_payload(e).unwrap()).collect();
    store
        .log()
        .append_records(&to_records(entries, &payloads))
        .unwrap();
    store.log().sync().unwrap();
    (0..entries.len() as u64)
        .map(|o| from_record(store.log().read(o).unwrap()).unwrap())
        .collect()
}

async fn apply(sm: &mut StateMachine, entries: &[Entry]) {
    let items = entries.iter().map(|e| Ok((e.clone(), None)));
    sm.apply(futures_util::stream::iter(items)).await.unwrap();
}

#[tokio::test]
async fn a_snapshot_mid_segment_carries_the_table_and_the_tail_replays_to_the_same_digest() {
    let f = fixture();
    let entries = store(&f.store, &workload());
    let (mut sm, shared) = f.sm("a");
    apply(&mut sm, &entries).await;
    let table = shared.producer_table();
    assert_eq!(table.len(), 2);
    assert_eq!(table.as_of(), Some(299));

    let mut b = sm.try_create_snapshot_builder(true).await.unwrap();
    let snap = b.build_snapshot().await.unwrap();
    let last = snap.meta.last_log_id.unwrap().index;
    assert!(last > 0 && last < 299, "the snapshot ends at a sealed segment: {last}");
    let carried = snap.snapshot.producers.clone().unwrap();
    assert_eq!(carried.as_of(), Some(299), "the table as of last_applied");
    assert_eq!(carried.digest(), table.digest());

    // A fresh state machine installs it, then openraft replays the entries after its last
    // log id: those up to as_of are skipped, so nothing is applied twice.
    let (mut fresh, fresh_shared) = f.sm("b");
    fresh
        .install_snapshot(&snap.meta, snap.snapshot.clone())
        .await
        .unwrap();
    apply(&mut fresh, &entries[last as usize + 1..]).await;
    assert_eq!(fresh_shared.producer_table().digest(), table.digest());

    // So does a restart of the first one (the table is loaded from its snapshot file).
    drop(sm);
    let (mut again, again_shared) = f.sm("a");
    assert_eq!(again_shared.producer_table(), carried);
    apply(&mut again, &entries[last as usize + 1..]).await;
    assert_eq!(again_shared.producer_table().digest(), table.digest());

    // More entries after the replay apply on top of the same table on both.
    let more = [Entry::new_normal(log_id(1, 300), encode_produce(1, 999, 5_000, b"x"))];
    apply(&mut fresh, &more).await;
    apply(&mut again, &more).await;
    assert_eq!(
        fresh_shared.producer_table().digest(),
        again_shared.producer_table().digest()
    );
}

#[tokio::test]
async fn an_older_table_is_refused_and_plain_logs_write_no_table() {
    let f = fixture();
    let plain: Vec<_> = std::iter::once(membership())
        .chain((1..300).map(|i| Entry::new_normal(log_id(1, i), AppData::normal(vec![1u8; 200].into()))))
        .collect();
    let entries = store(&f.store, &plain);
    let (mut sm, shared) = f.sm("a");
    apply(&mut sm, &entries).await;
    let snap = sm
        .try_create_snapshot_builder(true)
        .await
        .unwrap()
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.snapshot.producers, None, "no producer entry, no table");
    assert!(shared.producer_table().is_pristine());

    // A node whose table is past the snapshot's refuses it.
    let reg = [Entry::new_normal(log_id(1, 300), encode_register(1, 1, 1))];
    apply(&mut sm, &reg).await;
    let err = sm
        .install_snapshot(&snap.meta, snap.snapshot.clone())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Other);
    assert_eq!(shared.producer_table().as_of(), Some(300));
}

#[tokio::test]
async fn replayed_entries_report_what_they_were() {
    let f = fixture();
    let (_sm, shared) = f.sm("a");
    let reg = encode_register(1, 1000, 4);
    let prod = encode_produce(0, 0, 2, b"m");
    assert_eq!(shared.apply_producer(0, &reg).unwrap(), ApplyOutcome::Registered);
    assert_eq!(shared.apply_producer(1, &prod).unwrap(), ApplyOutcome::Appended);
    // Again (a replay below as_of): the same answers, and the table is unchanged.
    let before = shared.producer_table();
    assert_eq!(shared.apply_producer(0, &reg).unwrap(), ApplyOutcome::Registered);
    assert_eq!(shared.apply_producer(1, &prod).unwrap(), ApplyOutcome::Appended);
    assert_eq!(shared.producer_table(), before);
    // The same seq at a new offset is a duplicate of the first.
    assert_eq!(
        shared.apply_producer(2, &prod).unwrap(),
        ApplyOutcome::Duplicate { original: 1 }
    );
    let garbage = AppData {
        kind: crate::raft::AppKind::Produce,
        bytes: bytes::Bytes::from_static(&[1, 2, 3]),
    };
    assert_eq!(
        shared.apply_producer(3, &garbage).unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
}
