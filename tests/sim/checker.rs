//! The history checker: what every simulated run must satisfy.
//!
//! Input: every client operation (invocation and result), what a consumer read, samples of
//! each node's committed end, and the final contents of every replica's log and sealed
//! segments. Output: the list of violations (empty when the run is correct).
//!
//! Retention: each replica's final log starts at its *floor* (`FinalNode::start`). Nothing
//! below it may be served as present (a read there must be the typed `BelowFloor`), and
//! nothing acknowledged at or above it may be missing. An acknowledged record may be absent
//! from every replica only when it lies below every replica's floor (retention deleted it
//! everywhere); the consumer may skip offsets only where every live node had deleted them.

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// How a client operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged at this offset: must be in the log, there, forever.
    Acked(u64),
    /// Refused before it was proposed (not the leader): must never appear.
    Failed,
    /// Timed out or the node failed after proposing: may or may not appear (once at most).
    Unknown,
    /// A produced message refused by the producer table (final: the client gave the
    /// producer up). Committed only if an earlier attempt of the op may have appended it.
    Refused(Refusal),
}

/// Why a produced message was refused (`Error::Producer*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Expired,
    OutOfOrder,
    BelowWindow,
}

/// One client operation.
#[derive(Debug, Clone)]
pub struct Op {
    pub client: u32,
    pub payload: Bytes,
    pub node: u64,
    pub invoked_ms: u64,
    pub outcome: Option<Outcome>,
    /// `(producer, seq)` of a produced message; `None` for a plain append.
    pub producer_seq: Option<(u64, u64)>,
    /// How many times it was sent (a produced message is resent with the same seq).
    pub attempts: u32,
    /// Whether some attempt may have appended it (any answer but a producer refusal).
    pub maybe_sent: bool,
}

impl Op {
    /// A plain append (sent once).
    pub fn plain(client: u32, payload: Bytes, node: u64, invoked_ms: u64) -> Op {
        Op {
            client,
            payload,
            node,
            invoked_ms,
            outcome: None,
            producer_seq: None,
            attempts: 1,
            maybe_sent: true,
        }
    }
}

/// Kinds of [`FinalRecord::kind`].
pub const KIND_NORMAL: u8 = 0;
/// Raft's own entries (blank, membership).
pub const KIND_RAFT: u8 = 1;
pub const KIND_PRODUCE: u8 = 3;
pub const KIND_REGISTER: u8 = 4;

/// One record of a replica's final log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalRecord {
    pub term: u64,
    /// [`KIND_NORMAL`], [`KIND_RAFT`], [`KIND_PRODUCE`] or [`KIND_REGISTER`].
    pub kind: u8,
    /// The message (a produced one without its header); a Register entry's raw payload.
    pub payload: Bytes,
    /// `(producer, seq)` of a Produce entry.
    pub producer_seq: Option<(u64, u64)>,
}

impl FinalRecord {
    /// Whether it carries an application message (plain or produced).
    pub fn is_message(&self) -> bool {
        self.kind == KIND_NORMAL || self.kind == KIND_PRODUCE
    }
}

/// A replica's final state.
#[derive(Debug, Default)]
pub struct FinalNode {
    pub start: u64,
    pub commit_end: u64,
    pub records: BTreeMap<u64, FinalRecord>,
    /// Sealed segment files: base offset → bytes.
    pub sealed: BTreeMap<u64, Bytes>,
    /// A read that failed with a typed error (a corrupted replica): not a violation by itself.
    pub read_error: Option<String>,
    /// What reading just below `start` gave, when it was not the typed `BelowFloor` naming
    /// `start` (a violation).
    pub below_floor: Option<String>,
}

/// Everything a run recorded.
#[derive(Debug, Default)]
pub struct History {
    pub ops: Vec<Op>,
    /// What the consumer read, in order: (offset, normal payload or None for Raft's own).
    pub consumed: Vec<(u64, Option<Bytes>)>,
    /// Violations noticed while running (a committed end going back, a consumer gap).
    pub live_violations: Vec<String>,
    /// Faults injected, with their virtual time, for the trace.
    pub events: Vec<String>,
    pub finals: BTreeMap<u64, FinalNode>,
    /// Snapshots installed through the catch-up path (a replacement node's, a lagging one's).
    pub snapshot_installs: u64,
    /// Where the consumer skipped ahead because every live node had deleted the offset it
    /// wanted: (offset wanted, offset it went on from).
    pub floor_skips: Vec<(u64, u64)>,
    /// Each node's producer table, sampled with its applied end (only where the table is
    /// exactly the applied prefix's: see `Replica::producer_table_probe`).
    pub table_samples: Vec<TableSample>,
    /// The most produce decisions each node's leader mispredicted (sampled while it ran).
    pub mispredicted: BTreeMap<u64, u64>,
    /// Producers registered: (client, producer id).
    pub registrations: Vec<(u32, u64)>,
    /// Produced messages acknowledged as duplicates (a retry answered with the original's
    /// offset, nothing appended).
    pub deduplicated: u64,
}

/// One node's producer table at one applied end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSample {
    pub node: u64,
    /// One past the last applied entry.
    pub applied_end: u64,
    /// The table's contents (`as_of` left out).
    pub digest: u64,
}

impl Op {
    /// Whether the log may hold it: not if every attempt was refused before appending.
    fn may_be_committed(&self) -> bool {
        match self.outcome {
            Some(Outcome::Failed) => false,
            Some(Outcome::Refused(_)) => self.maybe_sent,
            _ => true,
        }
    }
}

impl History {
    /// Checks every property; returns the violations.
    pub fn check(&self) -> Vec<String> {
        let mut v = self.live_violations.clone();
        let canonical = self.agreement(&mut v);
        self.acked_present(&canonical, &mut v);
        self.no_duplicates_or_phantoms(&canonical, &mut v);
        self.producers_exactly_once(&canonical, &mut v);
        self.tables_agree(&mut v);
        self.nothing_mispredicted(&mut v);
        self.consumer_consistent(&canonical, &mut v);
        self.sealed_identical(&mut v);
        self.floors_respected(&mut v);
        v.truncate(20);
        v
    }

    /// Each offset holds one value on every node (within committed ranges); returns the
    /// agreed log.
    fn agreement(&self, v: &mut Vec<String>) -> BTreeMap<u64, FinalRecord> {
        let mut canon: BTreeMap<u64, (u64, FinalRecord)> = BTreeMap::new();
        for (id, n) in &self.finals {
            for (off, r) in n.records.range(..n.commit_end) {
                match canon.get(off) {
                    None => {
                        canon.insert(*off, (*id, r.clone()));
                    }
                    Some((other, c)) if c != r => v.push(format!(
                        "offset {off}: node {other} holds {:?}, node {id} holds {:?}",
                        c, r
                    )),
                    Some(_) => {}
                }
            }
        }
        canon.into_iter().map(|(o, (_, r))| (o, r)).collect()
    }

    /// The lowest floor of the final replicas: below it, retention deleted everywhere.
    fn lowest_floor(&self) -> u64 {
        self.finals.values().map(|n| n.start).min().unwrap_or(0)
    }

    fn acked_present(&self, canon: &BTreeMap<u64, FinalRecord>, v: &mut Vec<String>) {
        let floor = self.lowest_floor();
        for op in &self.ops {
            if let Some(Outcome::Acked(off)) = op.outcome {
                match canon.get(&off) {
                    None if off < floor => {} // deleted by retention on every replica
                    Some(r)
                        if r.payload == op.payload
                            && r.is_message()
                            && r.producer_seq == op.producer_seq => {}
                    Some(r) => v.push(format!(
                        "acknowledged {:?} at {off} (by node {} for an append invoked at {} ms), but the log holds {:?} there",
                        op.payload, op.node, op.invoked_ms, r
                    )),
                    None => v.push(format!(
                        "acknowledged {:?} at {off} is missing from every replica",
                        op.payload
                    )),
                }
            }
        }
    }

    fn no_duplicates_or_phantoms(&self, canon: &BTreeMap<u64, FinalRecord>, v: &mut Vec<String>) {
        let mut sent: BTreeMap<&Bytes, &Op> = BTreeMap::new();
        for op in &self.ops {
            sent.insert(&op.payload, op);
        }
        let mut seen = BTreeSet::new();
        for (off, r) in canon.iter().filter(|(_, r)| r.is_message()) {
            if !seen.insert(&r.payload) {
                v.push(format!("{:?} appears twice (again at {off})", r.payload));
            }
            match sent.get(&r.payload) {
                None => v.push(format!("offset {off} holds {:?}, never sent", r.payload)),
                Some(op) if !op.may_be_committed() => v.push(format!(
                    "offset {off} holds {:?}, whose append was refused ({:?}, no attempt could append it)",
                    r.payload, op.outcome
                )),
                Some(_) => {}
            }
        }
    }

    /// The consumer read offsets in order, without gaps (but where every live node had
    /// deleted them), and what it read stayed true.
    fn consumer_consistent(&self, canon: &BTreeMap<u64, FinalRecord>, v: &mut Vec<String>) {
        let floor = self.lowest_floor();
        let mut skips = self.floor_skips.iter().peekable();
        let mut expected = 0u64;
        for (i, (off, p)) in self.consumed.iter().enumerate() {
            while let Some(&&(from, to)) = skips.peek() {
                if from != expected {
                    break;
                }
                if to <= from {
                    v.push(format!("consumer skipped from {from} back to {to}"));
                    return;
                }
                expected = to;
                skips.next();
            }
            if *off != expected {
                v.push(format!("consumer read offset {off} as its record #{i}"));
                return;
            }
            expected += 1;
            let Some(r) = canon.get(off) else {
                if *off >= floor {
                    v.push(format!(
                        "consumer read offset {off}, which no replica holds now"
                    ));
                }
                continue;
            };
            let expect = r.is_message().then(|| r.payload.clone());
            if *p != expect {
                v.push(format!(
                    "consumer read {p:?} at {off}; the committed log holds {:?}",
                    r
                ));
            }
        }
    }

    /// Issue 17 in the agreed log: each (producer, seq) at most once; per producer, seqs
    /// 0, 1, 2, ... in log order (from 0 where its registration is still held); each
    /// Produce names a Register entry below it.
    fn producers_exactly_once(&self, canon: &BTreeMap<u64, FinalRecord>, v: &mut Vec<String>) {
        let floor = self.lowest_floor();
        let mut at: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        let mut last_seq: BTreeMap<u64, u64> = BTreeMap::new();
        for (off, r) in canon.iter().filter(|(_, r)| r.kind == KIND_PRODUCE) {
            let Some((producer, seq)) = r.producer_seq else {
                v.push(format!("offset {off}: a Produce entry without its header"));
                continue;
            };
            if let Some(first) = at.insert((producer, seq), *off) {
                v.push(format!(
                    "producer {producer} seq {seq} committed twice: at {first} and {off}"
                ));
            }
            let registration = canon.get(&producer);
            match last_seq.insert(producer, seq) {
                Some(prev) if seq != prev + 1 => v.push(format!(
                    "producer {producer}: seq {seq} at {off} follows seq {prev}"
                )),
                None if seq != 0 && registration.is_some() => v.push(format!(
                    "producer {producer}: its first committed seq is {seq} (at {off}), not 0"
                )),
                _ => {}
            }
            match registration {
                _ if producer >= *off => v.push(format!(
                    "offset {off}: a Produce names producer {producer}, registered at a higher offset"
                )),
                Some(reg) if reg.kind != KIND_REGISTER => v.push(format!(
                    "offset {off}: a Produce names producer {producer}, but offset {producer} holds no registration"
                )),
                None if producer >= floor => v.push(format!(
                    "offset {off}: a Produce names producer {producer}, never registered"
                )),
                _ => {}
            }
        }
    }

    /// Replica determinism: the producer tables of any two nodes at the same applied end
    /// are the same.
    fn tables_agree(&self, v: &mut Vec<String>) {
        let mut first: BTreeMap<u64, TableSample> = BTreeMap::new();
        for s in &self.table_samples {
            match first.get(&s.applied_end) {
                None => {
                    first.insert(s.applied_end, *s);
                }
                Some(f) if f.digest != s.digest => v.push(format!(
                    "producer tables differ at applied end {}: node {} has {:#x}, node {} has {:#x}",
                    s.applied_end, f.node, f.digest, s.node, s.digest
                )),
                Some(_) => {}
            }
        }
    }

    /// How many applied ends have table samples from two nodes or more (what
    /// `tables_agree` compared).
    pub fn tables_compared(&self) -> usize {
        let mut nodes: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        for s in &self.table_samples {
            nodes.entry(s.applied_end).or_default().insert(s.node);
        }
        nodes.values().filter(|n| n.len() > 1).count()
    }

    /// The leader's prediction never differed from the state machine's outcome.
    fn nothing_mispredicted(&self, v: &mut Vec<String>) {
        for (node, n) in self.mispredicted.iter().filter(|(_, n)| **n > 0) {
            v.push(format!(
                "node {node}: {n} produce decisions mispredicted (a duplicate or refusal reached the log)"
            ));
        }
    }

    fn sealed_identical(&self, v: &mut Vec<String>) {
        let mut by_base: BTreeMap<u64, (u64, &Bytes)> = BTreeMap::new();
        for (id, n) in &self.finals {
            for (base, bytes) in &n.sealed {
                match by_base.get(base) {
                    None => {
                        by_base.insert(*base, (*id, bytes));
                    }
                    Some((other, b)) if *b != bytes => {
                        let at = b.iter().zip(bytes.iter()).position(|(x, y)| x != y);
                        v.push(format!(
                            "sealed segment {base}: node {other} and node {id} differ ({} vs {} bytes, first at byte {at:?})",
                            b.len(),
                            bytes.len()
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// Per replica: nothing below its floor is served as present, and every acknowledged
    /// record at or above it (and committed there) is held, at its offset.
    fn floors_respected(&self, v: &mut Vec<String>) {
        for (id, n) in &self.finals {
            if let Some(e) = &n.below_floor {
                v.push(format!("node {id} (floor {}): {e}", n.start));
            }
            if n.read_error.is_some() {
                continue; // a damaged replica: what it lacks is reported by its read error
            }
            if let Some((&first, _)) = n.records.iter().next() {
                if first != n.start {
                    v.push(format!(
                        "node {id}: log starts at {} but its first record is {first}",
                        n.start
                    ));
                }
            }
            for op in &self.ops {
                let Some(Outcome::Acked(off)) = op.outcome else {
                    continue;
                };
                if off < n.start || off >= n.commit_end {
                    continue;
                }
                match n.records.get(&off) {
                    Some(r) if r.payload == op.payload => {}
                    _ => v.push(format!(
                        "node {id}: acknowledged {:?} at {off}, above its floor {}, is missing",
                        op.payload, n.start
                    )),
                }
            }
        }
    }

    /// A digest of everything observable about the run (replaying a seed must give the same).
    pub fn digest(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        for op in &self.ops {
            h.update(
                format!(
                    "{} {:?} {} {} {:?} {:?} {}\n",
                    op.client,
                    op.payload,
                    op.node,
                    op.invoked_ms,
                    op.outcome,
                    op.producer_seq,
                    op.attempts
                )
                .as_bytes(),
            );
        }
        for e in &self.events {
            h.update(e.as_bytes());
        }
        for (off, p) in &self.consumed {
            h.update(format!("{off} {p:?}\n").as_bytes());
        }
        for (from, to) in &self.floor_skips {
            h.update(format!("skip {from} {to}\n").as_bytes());
        }
        for (id, n) in &self.finals {
            h.update(format!("{id} {} {} {}\n", n.start, n.commit_end, n.records.len()).as_bytes());
        }
        for (c, p) in &self.registrations {
            h.update(format!("registered {c} {p}\n").as_bytes());
        }
        for (c, p) in &self.registrations {
            h.update(format!("registered {c} {p}\n").as_bytes());
        }
        for s in &self.table_samples {
            h.update(format!("{} {} {:x}\n", s.node, s.applied_end, s.digest).as_bytes());
        }
        h.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(p: &'static [u8], outcome: Outcome) -> Op {
        Op {
            outcome: Some(outcome),
            ..Op::plain(0, Bytes::from_static(p), 1, 0)
        }
    }

    fn rec(p: &'static [u8]) -> FinalRecord {
        FinalRecord {
            term: 1,
            kind: KIND_NORMAL,
            payload: Bytes::from_static(p),
            producer_seq: None,
        }
    }

    /// A produced message `p` as (producer, seq), sent once.
    fn pop(p: &'static [u8], producer_seq: (u64, u64), outcome: Outcome) -> Op {
        Op {
            producer_seq: Some(producer_seq),
            ..op(p, outcome)
        }
    }

    fn prec(p: &'static [u8], producer_seq: (u64, u64)) -> FinalRecord {
        FinalRecord {
            kind: KIND_PRODUCE,
            producer_seq: Some(producer_seq),
            ..rec(p)
        }
    }

    fn register() -> FinalRecord {
        FinalRecord {
            kind: KIND_REGISTER,
            ..rec(b"\x01register")
        }
    }

    /// A correct history with a producer (id 1: its Register entry is at offset 1): "p0"
    /// acknowledged at 2, "p1" unknown and committed at 3, "p2" refused before any send.
    fn good_producer() -> History {
        let mut h = History {
            ops: vec![
                op(b"a", Outcome::Acked(0)),
                pop(b"p0", (1, 0), Outcome::Acked(2)),
                pop(b"p1", (1, 1), Outcome::Unknown),
                Op {
                    maybe_sent: false,
                    ..pop(b"p2", (1, 2), Outcome::Refused(Refusal::Expired))
                },
            ],
            ..History::default()
        };
        let log = [
            rec(b"a"),
            register(),
            prec(b"p0", (1, 0)),
            prec(b"p1", (1, 1)),
        ];
        for id in 1..=3 {
            h.finals.insert(id, node(&log));
            h.table_samples.push(TableSample {
                node: id,
                applied_end: 4,
                digest: 7,
            });
            h.mispredicted.insert(id, 0);
        }
        h.table_samples.push(TableSample {
            node: 2,
            applied_end: 3,
            digest: 5,
        });
        h
    }

    /// Puts `r` at `off` on every node.
    fn put(h: &mut History, off: u64, r: FinalRecord) {
        for n in h.finals.values_mut() {
            n.records.insert(off, r.clone());
            n.commit_end = n.commit_end.max(off + 1);
        }
    }

    fn caught(h: &History, what: &str) {
        let v = h.check();
        assert!(v.iter().any(|e| e.contains(what)), "{what:?} not in {v:?}");
    }

    /// Issue 17's assertions, each broken once.
    #[test]
    fn the_checker_catches_each_producer_violation() {
        let good = good_producer;
        assert!(good().check().is_empty(), "{:?}", good().check());

        // 1. A (producer, seq) stored twice (a retry that was appended again).
        let mut twice = good();
        twice.ops.push(pop(b"p1x", (1, 1), Outcome::Unknown));
        put(&mut twice, 4, prec(b"p1x", (1, 1)));
        caught(&twice, "producer 1 seq 1 committed twice: at 3 and 4");

        // 2. An acknowledged produce whose offset holds another (producer, seq).
        let mut moved = good();
        moved.ops[1].producer_seq = Some((1, 5));
        caught(&moved, "acknowledged");
        let mut lost = good();
        put(&mut lost, 2, prec(b"p9", (1, 0)));
        caught(&lost, "acknowledged");

        // 3. Seqs not increasing by one, or not starting at 0.
        let mut gap = good();
        put(&mut gap, 3, prec(b"p1", (1, 2)));
        caught(&gap, "producer 1: seq 2 at 3 follows seq 0");
        let mut late_start = good();
        late_start.ops[1].outcome = Some(Outcome::Unknown);
        put(&mut late_start, 2, rec(b"x"));
        late_start.ops.push(op(b"x", Outcome::Unknown));
        caught(&late_start, "first committed seq is 1");

        // 4. A Produce naming an offset that holds no registration, or one above it.
        let mut unregistered = good();
        put(&mut unregistered, 1, rec(b"r"));
        unregistered.ops.push(op(b"r", Outcome::Unknown));
        caught(&unregistered, "offset 1 holds no registration");
        let mut ahead = good();
        ahead.ops[2].producer_seq = Some((7, 0));
        put(&mut ahead, 3, prec(b"p1", (7, 0)));
        caught(&ahead, "registered at a higher offset");

        // 5. A seq refused before any attempt could append it, committed all the same.
        let mut refused = good();
        refused.ops[2].outcome = Some(Outcome::Refused(Refusal::OutOfOrder));
        refused.ops[2].maybe_sent = false;
        caught(&refused, "whose append was refused");
        // ... which is fine when an earlier attempt may have appended it.
        refused.ops[2].maybe_sent = true;
        refused.ops[2].attempts = 2;
        assert!(refused.check().is_empty(), "{:?}", refused.check());

        // 6. Two replicas' tables differ at the same applied end.
        let mut diverged = good();
        diverged.table_samples[1].digest = 8;
        caught(&diverged, "producer tables differ at applied end 4");

        // 7. A leader's prediction differed from apply's outcome.
        let mut mispredicted = good();
        mispredicted.mispredicted.insert(2, 1);
        caught(&mispredicted, "node 2: 1 produce decisions mispredicted");

        // A consumer sees a produced message as its message.
        let mut consumed = good();
        consumed.consumed = vec![
            (0, Some(Bytes::from_static(b"a"))),
            (1, None),
            (2, Some(Bytes::from_static(b"p0"))),
        ];
        assert!(consumed.check().is_empty(), "{:?}", consumed.check());
        consumed.consumed[2].1 = None;
        caught(&consumed, "consumer read None at 2");
    }

    fn node(recs: &[FinalRecord]) -> FinalNode {
        FinalNode {
            start: 0,
            commit_end: recs.len() as u64,
            records: recs
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, r)| (i as u64, r))
                .collect(),
            ..FinalNode::default()
        }
    }

    /// A correct history, and the checker's verdict on each way of breaking it.
    #[test]
    fn the_checker_catches_each_violation() {
        let good = || {
            let mut h = History {
                ops: vec![op(b"a", Outcome::Acked(0)), op(b"b", Outcome::Unknown)],
                consumed: vec![(0, Some(Bytes::from_static(b"a")))],
                ..History::default()
            };
            for id in 1..=3 {
                h.finals.insert(id, node(&[rec(b"a"), rec(b"b")]));
            }
            h
        };
        assert!(good().check().is_empty(), "{:?}", good().check());

        let mut lost = good();
        for n in lost.finals.values_mut() {
            n.records.insert(0, rec(b"b"));
            n.records.insert(1, rec(b"x"));
        }
        let v = lost.check();
        assert!(v.iter().any(|e| e.contains("acknowledged")), "{v:?}");
        assert!(v.iter().any(|e| e.contains("never sent")), "{v:?}");

        let mut split = good();
        split
            .finals
            .get_mut(&2)
            .unwrap()
            .records
            .insert(1, rec(b"c"));
        assert!(split.check().iter().any(|e| e.contains("node 1 holds")));

        let mut dup = good();
        for n in dup.finals.values_mut() {
            n.records.insert(2, rec(b"b"));
            n.commit_end = 3;
        }
        assert!(dup.check().iter().any(|e| e.contains("appears twice")));

        let mut refused = good();
        refused.ops[1].outcome = Some(Outcome::Failed);
        assert!(refused.check().iter().any(|e| e.contains("refused")));

        let mut gap = good();
        gap.consumed = vec![(1, Some(Bytes::from_static(b"b")))];
        assert!(gap
            .check()
            .iter()
            .any(|e| e.contains("consumer read offset 1")));

        let mut stale = good();
        stale.consumed = vec![(0, Some(Bytes::from_static(b"z")))];
        assert!(stale.check().iter().any(|e| e.contains("consumer read")));

        let mut torn = good();
        torn.finals
            .get_mut(&1)
            .unwrap()
            .sealed
            .insert(0, Bytes::from_static(b"xx"));
        torn.finals
            .get_mut(&2)
            .unwrap()
            .sealed
            .insert(0, Bytes::from_static(b"xy"));
        assert!(torn.check().iter().any(|e| e.contains("sealed segment 0")));

        // Retention: a floor at 1 on every node deletes "a" everywhere; the consumer skipped.
        let mut retained = good();
        for n in retained.finals.values_mut() {
            n.records.remove(&0);
            n.start = 1;
        }
        retained.consumed = vec![(1, Some(Bytes::from_static(b"b")))];
        retained.floor_skips = vec![(0, 1)];
        assert!(retained.check().is_empty(), "{:?}", retained.check());
        let mut served = good();
        served.finals.get_mut(&1).unwrap().start = 1;
        served.finals.get_mut(&1).unwrap().below_floor = Some("offset 0 is served".into());
        assert!(served.check().iter().any(|e| e.contains("is served")));
        let mut lost_above = good();
        lost_above.finals.get_mut(&2).unwrap().records.remove(&0);
        assert!(lost_above
            .check()
            .iter()
            .any(|e| e.contains("above its floor")));
        let mut unexplained_skip = retained;
        unexplained_skip.floor_skips.clear();
        assert!(unexplained_skip
            .check()
            .iter()
            .any(|e| e.contains("consumer read offset 1")));

        let mut backwards = good();
        backwards
            .live_violations
            .push("node 1: committed end went back".into());
        assert_eq!(backwards.check().len(), 1);
    }
}
