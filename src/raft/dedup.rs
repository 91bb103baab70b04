//! The producer table: what the replicated state machine knows of idempotent producers (issue
//! 17, design §2). Pure: no I/O, no clocks, no hash maps. Every replica feeds it the same
//! committed entries in log order and so holds the same table (`digest` lets the simulation
//! compare them); the leader runs the same [`ProducerTable::decide`] against its log prefix
//! before it proposes, so that duplicates never reach the log.
//!
//! **Time** comes only from the entries (`ts_ms`, chosen by the leader): a producer idle for
//! more than `idle_expiry_ms` of *entry* time is dropped, never by a wall clock on apply.
//! **Parameters** (`idle_expiry_ms`, `max_producers`) come from the latest Register entry, so
//! a node's flags cannot make replicas disagree.
//!
//! Encoding (little-endian; counts bounded before anything is allocated):
//!
//! ```text
//! table    = u8 version (1), u8 has_as_of [, u64 as_of], u64 clock_ms,
//!            u64 idle_expiry_ms, u32 max_producers,
//!            u32 n, n × producer                      (ids strictly ascending)
//! producer = u64 id, u64 last_active_ms, u64 next_seq,
//!            u8 k, k × (u64 first_seq, u64 first_offset, u32 len)
//!                                     (seq-contiguous, ending at next_seq; k = 0 iff next_seq = 0)
//! ```

use crate::codec::{DecodeResult, Reader, Writer};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How many runs (batches of contiguous offsets) each producer remembers: a retry of any seq
/// in them is answered with its original offset. At least the most requests a client has
/// pipelined (asserted in `limits`), so a retry of any of them is never below the window.
pub const PRODUCER_WINDOW_RUNS: usize = 64;
/// Hard cap on the producers a table holds (whatever a Register entry asks for).
pub const MAX_PRODUCERS: u32 = 65_536;
/// Producers a node lets the table hold unless configured otherwise.
pub const DEFAULT_MAX_PRODUCERS: u32 = 4096;
/// Entry time a producer may stay idle before it expires (15 min: well above the client's
/// retry deadline, so a retrying client is not expired under it).
pub const DEFAULT_PRODUCER_IDLE_EXPIRY_MS: u64 = 900_000;
/// Bytes of an encoded producer row before its runs.
const PRODUCER_ROW_BYTES: usize = 8 + 8 + 8 + 1;
/// Bytes of an encoded run.
const RUN_BYTES: usize = 8 + 8 + 4;
/// Bytes of the encoded table before its producers (with `as_of`).
const TABLE_HEADER_BYTES: usize = 1 + 9 + 8 + 8 + 4 + 4;
/// Largest encoded table: every producer with a full window.
pub const MAX_PRODUCER_TABLE_BYTES: usize = TABLE_HEADER_BYTES
    + MAX_PRODUCERS as usize * (PRODUCER_ROW_BYTES + PRODUCER_WINDOW_RUNS * RUN_BYTES);
const TABLE_VERSION: u8 = 1;

const _: () = assert!(PRODUCER_WINDOW_RUNS <= u8::MAX as usize);
const _: () = assert!(DEFAULT_MAX_PRODUCERS >= 1 && DEFAULT_MAX_PRODUCERS <= MAX_PRODUCERS);

/// Why a produce was refused (nothing was appended for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceRefusal {
    /// The producer is unknown: never registered, idle past its expiry, or evicted.
    Expired,
    /// A seq after the next one expected: an earlier seq is missing (retryable).
    OutOfOrder {
        /// The seq the producer must send next.
        expected_seq: u64,
    },
    /// A seq committed long ago, below the window: its offset is no longer known.
    BelowWindow {
        /// The producer's last committed seq.
        last_seq: u64,
    },
}

/// What to do with one produced message (the same function for the leader and apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The next seq: append it.
    Append,
    /// Committed before, at `offset`: answer with it and append nothing.
    Duplicate {
        /// Where the first copy is.
        offset: u64,
    },
    /// Refused; nothing is appended.
    Refused(ProduceRefusal),
}

/// What applying an entry did (returned to the proposer through Raft).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// A plain message, or a produced one that was the next seq: stored at its offset.
    Appended,
    /// A Register entry: the producer id is its offset.
    Registered,
    /// A produced message that was committed before, at `original`.
    Duplicate {
        /// The first copy's offset.
        original: u64,
    },
    /// A produced message the table refused.
    Refused(ProduceRefusal),
}

/// A committed entry that changes the table (decoded from a Produce or Register payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerEntry {
    /// Registers a producer whose id is the entry's offset, and sets the parameters.
    Register {
        /// Entry time (ms since the Unix epoch, chosen by the leader).
        ts_ms: u64,
        /// Idle expiry from now on.
        idle_expiry_ms: u64,
        /// Producer bound from now on (clamped to `1..=MAX_PRODUCERS`).
        max_producers: u32,
    },
    /// One produced message.
    Produce {
        /// The producer id (the offset of its Register entry).
        producer: u64,
        /// Its sequence number.
        seq: u64,
        /// Entry time (ms since the Unix epoch, chosen by the leader).
        ts_ms: u64,
    },
}

impl ProducerEntry {
    fn ts_ms(&self) -> u64 {
        match *self {
            ProducerEntry::Register { ts_ms, .. } | ProducerEntry::Produce { ts_ms, .. } => ts_ms,
        }
    }
}

/// A batch of seqs stored at contiguous offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    first_seq: u64,
    first_offset: u64,
    len: u32,
}

impl Run {
    fn end_seq(&self) -> u64 {
        self.first_seq + u64::from(self.len)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerState {
    last_active_ms: u64,
    next_seq: u64,
    /// The last runs, oldest first, at most [`PRODUCER_WINDOW_RUNS`].
    runs: VecDeque<Run>,
}

/// The producer table (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerTable {
    /// The last offset whose effect is in the table: replayed entries up to it are skipped.
    as_of: Option<u64>,
    /// The largest `ts_ms` of the entries applied.
    clock_ms: u64,
    idle_expiry_ms: u64,
    max_producers: u32,
    producers: BTreeMap<u64, ProducerState>,
    /// `(last_active_ms, id)` of every producer: the oldest idle first.
    by_idle: BTreeSet<(u64, u64)>,
}

impl Default for ProducerTable {
    fn default() -> Self {
        ProducerTable {
            as_of: None,
            clock_ms: 0,
            idle_expiry_ms: DEFAULT_PRODUCER_IDLE_EXPIRY_MS,
            max_producers: DEFAULT_MAX_PRODUCERS,
            producers: BTreeMap::new(),
            by_idle: BTreeSet::new(),
        }
    }
}

impl ProducerTable {
    /// An empty table (no producer entry applied yet).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn new() -> Self {
        Self::default()
    }

    /// The last offset whose effect is in the table.
    pub fn as_of(&self) -> Option<u64> {
        self.as_of
    }

    /// Marks the table as reflecting every entry up to `offset` (the state machine's last
    /// applied entry, when it holds no producer entry after the table's own `as_of`).
    pub fn advance_as_of(&mut self, offset: u64) {
        if self.as_of.is_some_and(|a| a < offset) {
            self.as_of = Some(offset);
        }
    }

    /// Whether no producer entry was ever applied (nothing to carry in a snapshot).
    pub fn is_pristine(&self) -> bool {
        self.as_of.is_none()
    }

    /// The largest entry time applied.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// The idle expiry of the latest Register entry.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn idle_expiry_ms(&self) -> u64 {
        self.idle_expiry_ms
    }

    /// The producer bound of the latest Register entry.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn max_producers(&self) -> u32 {
        self.max_producers
    }

    /// How many producers the table holds.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether the table holds no producer.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Whether `producer` is known.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn contains(&self, producer: u64) -> bool {
        self.producers.contains_key(&producer)
    }

    /// The seq `producer` must send next, if it is known.
    pub fn next_seq(&self, producer: u64) -> Option<u64> {
        self.producers.get(&producer).map(|p| p.next_seq)
    }

    /// What to do with `seq` of `producer` (the leader's prediction and apply's rule).
    pub fn decide(&self, producer: u64, seq: u64) -> Decision {
        let Some(p) = self.producers.get(&producer) else {
            return Decision::Refused(ProduceRefusal::Expired);
        };
        if seq > p.next_seq {
            return Decision::Refused(ProduceRefusal::OutOfOrder {
                expected_seq: p.next_seq,
            });
        }
        if seq == p.next_seq {
            return Decision::Append;
        }
        let run = p
            .runs
            .iter()
            .find(|r| r.first_seq <= seq && seq < r.end_seq());
        match run {
            Some(r) => Decision::Duplicate {
                offset: r.first_offset + (seq - r.first_seq),
            },
            // seq < next_seq, so next_seq >= 1.
            None => Decision::Refused(ProduceRefusal::BelowWindow {
                last_seq: p.next_seq - 1,
            }),
        }
    }

    /// What apply will decide for `seq` of `producer` in an entry stamped `ts_ms`: apply
    /// first moves the clock to the entry's stamp and drops the producers idle past the
    /// expiry by then, so a producer that [`Self::decide`] still knows may be expired. The
    /// leader predicts with this one: a prediction without the sweep proposed entries that
    /// apply then refused (found by the simulation, a short idle expiry).
    pub fn decide_at(&self, ts_ms: u64, producer: u64, seq: u64) -> Decision {
        let clock_ms = self.clock_ms.max(ts_ms);
        let idle = self.producers.get(&producer).is_some_and(|p| {
            p.last_active_ms.saturating_add(self.idle_expiry_ms) < clock_ms
        });
        if idle {
            return Decision::Refused(ProduceRefusal::Expired);
        }
        self.decide(producer, seq)
    }

    /// Applies the committed `entry` at `offset`. `None` when the table already reflects it
    /// (`offset <= as_of`: a replay after a snapshot or restart), which changes nothing.
    pub fn apply(&mut self, offset: u64, entry: &ProducerEntry) -> Option<ApplyOutcome> {
        if self.as_of.is_some_and(|a| offset <= a) {
            return None;
        }
        self.as_of = Some(offset);
        self.clock_ms = self.clock_ms.max(entry.ts_ms());
        self.sweep();
        Some(match *entry {
            ProducerEntry::Register {
                idle_expiry_ms,
                max_producers,
                ..
            } => {
                self.register(offset, idle_expiry_ms, max_producers);
                ApplyOutcome::Registered
            }
            ProducerEntry::Produce { producer, seq, .. } => match self.decide(producer, seq) {
                Decision::Append => {
                    self.record(producer, seq, offset);
                    ApplyOutcome::Appended
                }
                Decision::Duplicate { offset } => ApplyOutcome::Duplicate { original: offset },
                Decision::Refused(why) => ApplyOutcome::Refused(why),
            },
        })
    }

    /// Drops every producer idle for more than the expiry, in entry time.
    fn sweep(&mut self) {
        while let Some(&(last_active_ms, id)) = self.by_idle.first() {
            if last_active_ms.saturating_add(self.idle_expiry_ms) >= self.clock_ms {
                break;
            }
            self.by_idle.pop_first();
            self.producers.remove(&id);
        }
    }

    fn register(&mut self, id: u64, idle_expiry_ms: u64, max_producers: u32) {
        self.idle_expiry_ms = idle_expiry_ms;
        self.max_producers = max_producers.clamp(1, MAX_PRODUCERS);
        // Evict the oldest idle (ties: the lowest id) until there is room for one more; a
        // lowered bound may evict several.
        while self.producers.len() >= self.max_producers as usize {
            let Some((_, old)) = self.by_idle.pop_first() else {
                break;
            };
            self.producers.remove(&old);
        }
        let state = ProducerState {
            last_active_ms: self.clock_ms,
            next_seq: 0,
            runs: VecDeque::new(),
        };
        debug_assert!(!self.producers.contains_key(&id), "ids are offsets, unique");
        self.producers.insert(id, state);
        self.by_idle.insert((self.clock_ms, id));
        debug_assert_eq!(self.producers.len(), self.by_idle.len());
    }

    /// Records `seq` of `producer` (the next one expected) stored at `offset`.
    fn record(&mut self, producer: u64, seq: u64, offset: u64) {
        let clock_ms = self.clock_ms;
        let Some(p) = self.producers.get_mut(&producer) else {
            debug_assert!(false, "decide said Append for an unknown producer");
            return;
        };
        debug_assert_eq!(p.next_seq, seq);
        let old_key = (p.last_active_ms, producer);
        let grows = p.runs.back_mut().filter(|r| {
            r.end_seq() == seq && r.first_offset + u64::from(r.len) == offset && r.len < u32::MAX
        });
        match grows {
            Some(r) => r.len += 1,
            None => {
                p.runs.push_back(Run {
                    first_seq: seq,
                    first_offset: offset,
                    len: 1,
                });
                if p.runs.len() > PRODUCER_WINDOW_RUNS {
                    p.runs.pop_front();
                }
            }
        }
        p.next_seq = seq + 1;
        p.last_active_ms = clock_ms;
        self.by_idle.remove(&old_key);
        self.by_idle.insert((clock_ms, producer));
    }

    /// Encodes the table (see the module docs). Fits [`MAX_PRODUCER_TABLE_BYTES`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        w.u8(TABLE_VERSION);
        match self.as_of {
            None => w.u8(0),
            Some(a) => {
                w.u8(1);
                w.u64(a);
            }
        }
        w.u64(self.clock_ms);
        w.u64(self.idle_expiry_ms);
        w.u32(self.max_producers);
        // Fits: at most MAX_PRODUCERS rows (the register bound) and a u8 of runs each.
        w.u32(self.producers.len() as u32);
        for (id, p) in &self.producers {
            w.u64(*id);
            w.u64(p.last_active_ms);
            w.u64(p.next_seq);
            w.u8(p.runs.len() as u8);
            for r in &p.runs {
                w.u64(r.first_seq);
                w.u64(r.first_offset);
                w.u32(r.len);
            }
        }
        debug_assert!(out.len() <= MAX_PRODUCER_TABLE_BYTES);
        out
    }

    /// Decodes a whole encoded table; anything malformed is a typed error.
    pub fn decode(b: &[u8]) -> DecodeResult<ProducerTable> {
        let mut c = Reader::new(b, "producer table");
        let t = Self::decode_from(&mut c)?;
        c.finish(t)
    }

    fn decode_from(c: &mut Reader<'_>) -> DecodeResult<ProducerTable> {
        if c.u8()? != TABLE_VERSION {
            return Err(c.invalid());
        }
        let as_of = match c.u8()? {
            0 => None,
            1 => Some(c.u64()?),
            _ => return Err(c.invalid()),
        };
        let clock_ms = c.u64()?;
        let idle_expiry_ms = c.u64()?;
        let max_producers = c.u32()?;
        if !(1..=MAX_PRODUCERS).contains(&max_producers) {
            return Err(c.invalid());
        }
        let n = c.count_u32(MAX_PRODUCERS as usize, PRODUCER_ROW_BYTES)?;
        let mut t = ProducerTable {
            as_of,
            clock_ms,
            idle_expiry_ms,
            max_producers,
            ..ProducerTable::default()
        };
        for _ in 0..n {
            let id = c.u64()?;
            if t.producers.last_key_value().is_some_and(|(l, _)| *l >= id) {
                return Err(c.invalid());
            }
            let p = decode_producer(c)?;
            t.by_idle.insert((p.last_active_ms, id));
            t.producers.insert(id, p);
        }
        Ok(t)
    }

    /// A 64-bit FNV-1a digest of the encoding: equal tables, equal digests (the simulation
    /// compares replicas' tables at the same applied index with it).
    pub fn digest(&self) -> u64 {
        self.encode()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325, |h: u64, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
    }
}

/// One producer row after its id: the runs must be seq-contiguous, non-empty, and end at
/// `next_seq` (none at all only before the first seq).
fn decode_producer(c: &mut Reader<'_>) -> DecodeResult<ProducerState> {
    let last_active_ms = c.u64()?;
    let next_seq = c.u64()?;
    let k = usize::from(c.u8()?);
    c.check_count(k, PRODUCER_WINDOW_RUNS, RUN_BYTES)?;
    let mut runs = VecDeque::with_capacity(k);
    for _ in 0..k {
        let r = Run {
            first_seq: c.u64()?,
            first_offset: c.u64()?,
            len: c.u32()?,
        };
        let follows = runs.back().is_none_or(|p: &Run| p.end_seq() == r.first_seq);
        let fits = r.first_seq.checked_add(u64::from(r.len)).is_some()
            && r.first_offset.checked_add(u64::from(r.len)).is_some();
        if r.len == 0 || !follows || !fits {
            return Err(c.invalid());
        }
        runs.push_back(r);
    }
    let consistent = match runs.back() {
        None => next_seq == 0,
        Some(r) => r.end_seq() == next_seq,
    };
    if !consistent {
        return Err(c.invalid());
    }
    Ok(ProducerState {
        last_active_ms,
        next_seq,
        runs,
    })
}

#[cfg(test)]
#[path = "dedup_tests.rs"]
mod tests;
