use super::*;
use proptest::prelude::*;

fn register(ts_ms: u64, idle_expiry_ms: u64, max_producers: u32) -> ProducerEntry {
    ProducerEntry::Register {
        ts_ms,
        idle_expiry_ms,
        max_producers,
    }
}

fn produce(producer: u64, seq: u64, ts_ms: u64) -> ProducerEntry {
    ProducerEntry::Produce {
        producer,
        seq,
        ts_ms,
    }
}

/// A table with one producer registered at offset 0 (ts 0, expiry 1000, bound 8).
fn one_producer() -> ProducerTable {
    let mut t = ProducerTable::new();
    assert_eq!(
        t.apply(0, &register(0, 1000, 8)),
        Some(ApplyOutcome::Registered)
    );
    t
}

#[test]
fn retries_inside_the_window_get_the_original_offsets() {
    let mut t = one_producer();
    // Seqs 0..3 at offsets 10..13 (one run), seq 3 at 20 (a second run).
    for (seq, off) in [(0, 10), (1, 11), (2, 12), (3, 20)] {
        assert_eq!(t.decide(0, seq), Decision::Append);
        assert_eq!(
            t.apply(off, &produce(0, seq, 5)),
            Some(ApplyOutcome::Appended)
        );
    }
    for (seq, off) in [(0, 10), (1, 11), (2, 12), (3, 20)] {
        assert_eq!(t.decide(0, seq), Decision::Duplicate { offset: off });
    }
    // A duplicate that reached the log anyway changes nothing and reports the original.
    let before = t.clone();
    assert_eq!(
        t.apply(21, &produce(0, 1, 5)),
        Some(ApplyOutcome::Duplicate { original: 11 })
    );
    assert_eq!(t.next_seq(0), before.next_seq(0));
    assert_eq!(t.decide(0, 4), Decision::Append);
    assert!(round_trips(&t));
}

#[test]
fn a_seq_below_the_window_is_refused_with_the_last_seq() {
    let mut t = one_producer();
    // One run per seq (offsets not contiguous): the window keeps the last 64.
    let n = PRODUCER_WINDOW_RUNS as u64 + 1;
    for seq in 0..n {
        t.apply(10 + 2 * seq, &produce(0, seq, 1)).unwrap();
    }
    assert_eq!(
        t.decide(0, 0),
        Decision::Refused(ProduceRefusal::BelowWindow { last_seq: n - 1 })
    );
    assert_eq!(t.decide(0, 1), Decision::Duplicate { offset: 12 });
    assert!(round_trips(&t));
}

#[test]
fn out_of_order_and_unknown_producers_are_refused() {
    let mut t = one_producer();
    assert_eq!(
        t.decide(0, 1),
        Decision::Refused(ProduceRefusal::OutOfOrder { expected_seq: 0 })
    );
    assert_eq!(
        t.apply(1, &produce(0, 2, 1)),
        Some(ApplyOutcome::Refused(ProduceRefusal::OutOfOrder {
            expected_seq: 0
        }))
    );
    assert_eq!(t.next_seq(0), Some(0), "a refused entry changes nothing");
    assert_eq!(t.decide(7, 0), Decision::Refused(ProduceRefusal::Expired));
}

#[test]
fn idle_producers_expire_by_entry_time_only() {
    let mut t = one_producer(); // id 0, active at ts 0, expiry 1000
    // Producer 1, active at 400.
    t.apply(1, &register(400, 1000, 8)).unwrap();
    // Exactly at producer 0's expiry: kept.
    t.apply(2, &produce(1, 0, 1000)).unwrap();
    assert!(t.contains(0));
    // No entry, no time: however long ago, deciding does not expire anything.
    assert_eq!(t.decide(0, 0), Decision::Append);
    // One ms past it, by an entry of another producer: producer 0 goes.
    t.apply(3, &produce(1, 1, 1001)).unwrap();
    assert!(!t.contains(0));
    assert_eq!(t.decide(0, 0), Decision::Refused(ProduceRefusal::Expired));
    assert!(t.contains(1));
    // Predicted at an entry's stamp, a producer idle past the expiry by then is expired:
    // apply sweeps before it decides.
    assert_eq!(t.decide_at(2001, 1, 2), Decision::Append);
    assert_eq!(
        t.decide_at(2002, 1, 2),
        Decision::Refused(ProduceRefusal::Expired)
    );
    // An entry with an older timestamp never moves the clock back.
    t.apply(4, &produce(1, 2, 5)).unwrap();
    assert_eq!(t.clock_ms(), 1001);
}

#[test]
fn past_the_bound_the_oldest_idle_is_evicted_ties_by_lowest_id() {
    let mut t = ProducerTable::new();
    for off in [0, 1] {
        t.apply(off, &register(10, 1_000_000, 2)).unwrap();
    }
    // Same activity time: the lower id goes.
    t.apply(2, &register(10, 1_000_000, 2)).unwrap();
    assert!(!t.contains(0) && t.contains(1) && t.contains(2));
    // Producer 1 is active later than 2: 2 is now the oldest idle.
    t.apply(3, &produce(1, 0, 20)).unwrap();
    t.apply(4, &register(20, 1_000_000, 2)).unwrap();
    assert!(t.contains(1) && !t.contains(2) && t.contains(4));
    assert_eq!(t.decide(2, 0), Decision::Refused(ProduceRefusal::Expired));
    // A lowered bound evicts down to room for the new one; a bound of 0 means 1.
    t.apply(5, &register(30, 1_000_000, 0)).unwrap();
    assert_eq!(t.len(), 1);
    assert!(t.contains(5));
    assert_eq!(t.max_producers(), 1);
}

#[test]
fn entries_up_to_as_of_are_skipped() {
    let mut t = one_producer();
    t.apply(5, &produce(0, 0, 1)).unwrap();
    let before = t.clone();
    assert_eq!(t.apply(5, &produce(0, 0, 1)), None);
    assert_eq!(t.apply(3, &register(2, 1, 1)), None);
    assert_eq!(t, before, "a replay below as_of changes nothing");
    t.advance_as_of(9);
    assert_eq!(t.as_of(), Some(9));
    assert_eq!(t.apply(8, &produce(0, 1, 1)), None);
    assert_eq!(
        t.apply(10, &produce(0, 1, 1)),
        Some(ApplyOutcome::Appended)
    );
    // A pristine table stays pristine: no producer entry, nothing to carry.
    let mut p = ProducerTable::new();
    p.advance_as_of(100);
    assert!(p.is_pristine());
}

#[test]
fn decode_refuses_malformed_tables() {
    let mut t = one_producer();
    t.apply(1, &produce(0, 0, 1)).unwrap();
    t.apply(2, &register(1, 1000, 8)).unwrap();
    let enc = t.encode();
    assert_eq!(ProducerTable::decode(&enc), Ok(t.clone()));
    for n in 0..enc.len() {
        assert!(ProducerTable::decode(&enc[..n]).is_err(), "prefix {n}");
    }
    let mut longer = enc.clone();
    longer.push(0);
    assert!(ProducerTable::decode(&longer).is_err());
    // Unknown version; a count far above the bytes left is refused before allocating.
    let mut b = enc.clone();
    b[0] = 2;
    assert!(ProducerTable::decode(&b).is_err());
    let count_at = 1 + 9 + 8 + 8 + 4;
    let mut b = enc.clone();
    b[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        ProducerTable::decode(&b),
        Err(crate::codec::DecodeError::TooMany { .. })
    ));
    // Ids not ascending: swap the two rows' ids.
    let row0 = count_at + 4;
    let mut b = enc.clone();
    b[row0..row0 + 8].copy_from_slice(&5u64.to_le_bytes());
    assert!(ProducerTable::decode(&b).is_err());
    // next_seq inconsistent with the runs.
    let mut b = enc;
    b[row0 + 16..row0 + 24].copy_from_slice(&7u64.to_le_bytes());
    assert!(ProducerTable::decode(&b).is_err());
}

#[test]
fn the_table_encoding_is_unchanged() {
    let mut t = ProducerTable::new();
    t.apply(3, &register(7, 100, 2)).unwrap();
    t.apply(4, &produce(3, 0, 9)).unwrap();
    let mut want = vec![1u8, 1];
    want.extend_from_slice(&4u64.to_le_bytes()); // as_of
    want.extend_from_slice(&9u64.to_le_bytes()); // clock
    want.extend_from_slice(&100u64.to_le_bytes()); // expiry
    want.extend_from_slice(&2u32.to_le_bytes()); // bound
    want.extend_from_slice(&1u32.to_le_bytes()); // one producer
    for v in [3u64, 9, 1] {
        want.extend_from_slice(&v.to_le_bytes()); // id, last active, next seq
    }
    want.push(1); // one run
    want.extend_from_slice(&0u64.to_le_bytes());
    want.extend_from_slice(&4u64.to_le_bytes());
    want.extend_from_slice(&1u32.to_le_bytes());
    assert_eq!(t.encode(), want);
}

fn round_trips(t: &ProducerTable) -> bool {
    ProducerTable::decode(&t.encode()).as_ref() == Ok(t)
}

/// A stream of producer entries at increasing offsets: registrations with small bounds (so
/// eviction runs) and produces that are mostly next, sometimes retries or gaps, with clock
/// jumps that expire producers.
fn entries() -> impl Strategy<Value = Vec<(u64, ProducerEntry)>> {
    let step = (0u8..10, 0u64..8, 0u64..6, 0u64..400, 1u64..4, 1u32..5);
    prop::collection::vec(step, 1..300).prop_map(|steps| {
        let mut out = Vec::with_capacity(steps.len());
        let (mut off, mut ts) = (0u64, 0u64);
        let mut ids: Vec<u64> = Vec::new();
        let mut next: BTreeMap<u64, u64> = BTreeMap::new();
        for (what, pick, dseq, dts, doff, bound) in steps {
            off += doff;
            ts += dts;
            let e = if what == 0 || ids.is_empty() {
                ids.push(off);
                register(ts, 1000, bound)
            } else {
                let id = ids[pick as usize % ids.len()];
                let n = next.entry(id).or_default();
                // Mostly the next seq; sometimes a retry of an older one or a gap.
                let seq = match dseq {
                    0 => n.saturating_sub(1),
                    1 => *n + 1,
                    _ => *n,
                };
                if seq == *n {
                    *n += 1;
                }
                produce(id, seq, ts.saturating_sub(pick * 10))
            };
            out.push((off, e));
        }
        out
    })
}

proptest! {
    #[test]
    fn equal_streams_give_equal_tables_and_encodings_round_trip(es in entries(), cut in 0usize..300) {
        let (mut a, mut b) = (ProducerTable::new(), ProducerTable::new());
        for (off, e) in &es {
            // The leader's prediction (`decide_at` the entry's stamp) is apply's outcome.
            let predicted = match *e {
                ProducerEntry::Produce { producer, seq, ts_ms } if a.as_of() < Some(*off) => {
                    Some(match a.decide_at(ts_ms, producer, seq) {
                        Decision::Append => ApplyOutcome::Appended,
                        Decision::Duplicate { offset } => ApplyOutcome::Duplicate { original: offset },
                        Decision::Refused(why) => ApplyOutcome::Refused(why),
                    })
                }
                _ => None,
            };
            let applied = a.apply(*off, e);
            if predicted.is_some() {
                prop_assert_eq!(predicted, applied);
            }
            prop_assert_eq!(applied, b.apply(*off, e));
            prop_assert!(a.len() <= a.max_producers() as usize);
        }
        prop_assert_eq!(a.encode(), b.encode());
        prop_assert_eq!(a.digest(), b.digest());
        prop_assert!(round_trips(&a));
        // A table decoded at any point, then fed the whole stream again (a replay after a
        // snapshot), ends where the uninterrupted one does.
        let cut = cut.min(es.len());
        let mut c = ProducerTable::new();
        for (off, e) in &es[..cut] {
            c.apply(*off, e);
        }
        let mut c = ProducerTable::decode(&c.encode()).unwrap();
        for (off, e) in &es {
            c.apply(*off, e);
        }
        prop_assert_eq!(c, a);
    }

    #[test]
    fn garbage_is_a_typed_error_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        // Whatever the bytes, decode returns; a table that decodes encodes back to them.
        if let Ok(t) = ProducerTable::decode(&bytes) {
            prop_assert_eq!(t.encode(), bytes);
        }
    }

    #[test]
    fn truncated_or_flipped_tables_do_not_decode_to_garbage(es in entries(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut t = ProducerTable::new();
        for (off, e) in &es {
            t.apply(*off, e);
        }
        let enc = t.encode();
        let i = at.index(enc.len());
        prop_assert!(ProducerTable::decode(&enc[..i]).is_err());
        let mut flipped = enc.clone();
        flipped[i] ^= 1 << bit;
        // A flipped bit may still be a valid table (a timestamp), but never panics, and
        // whatever decodes encodes back to the same bytes.
        if let Ok(f) = ProducerTable::decode(&flipped) {
            prop_assert_eq!(f.encode(), flipped);
        }
    }
}
