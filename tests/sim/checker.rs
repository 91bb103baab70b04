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
}

/// One client operation.
#[derive(Debug, Clone)]
pub struct Op {
    pub client: u32,
    pub payload: Bytes,
    pub node: u64,
    pub invoked_ms: u64,
    pub outcome: Option<Outcome>,
}

/// One record of a replica's final log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalRecord {
    pub term: u64,
    pub kind: u8,
    pub payload: Bytes,
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
}

impl History {
    /// Checks every property; returns the violations.
    pub fn check(&self) -> Vec<String> {
        let mut v = self.live_violations.clone();
        let canonical = self.agreement(&mut v);
        self.acked_present(&canonical, &mut v);
        self.no_duplicates_or_phantoms(&canonical, &mut v);
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
                    Some(r) if r.payload == op.payload && r.kind == 0 => {}
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
        for (off, r) in canon.iter().filter(|(_, r)| r.kind == 0) {
            if !seen.insert(&r.payload) {
                v.push(format!("{:?} appears twice (again at {off})", r.payload));
            }
            match sent.get(&r.payload) {
                None => v.push(format!("offset {off} holds {:?}, never sent", r.payload)),
                Some(op) if op.outcome == Some(Outcome::Failed) => v.push(format!(
                    "offset {off} holds {:?}, whose append was refused",
                    r.payload
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
            let expect = (r.kind == 0).then(|| r.payload.clone());
            if *p != expect {
                v.push(format!(
                    "consumer read {p:?} at {off}; the committed log holds {:?}",
                    r
                ));
            }
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
                    "{} {:?} {} {} {:?}\n",
                    op.client, op.payload, op.node, op.invoked_ms, op.outcome
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
        h.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(p: &'static [u8], outcome: Outcome) -> Op {
        Op {
            client: 0,
            payload: Bytes::from_static(p),
            node: 1,
            invoked_ms: 0,
            outcome: Some(outcome),
        }
    }

    fn rec(p: &'static [u8]) -> FinalRecord {
        FinalRecord {
            term: 1,
            kind: 0,
            payload: Bytes::from_static(p),
        }
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
