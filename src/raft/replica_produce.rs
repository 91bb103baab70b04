//! Idempotent producers on the leader (issue 17, design §5): registration, and produce with
//! the leader predicting the state machine's decision against its log prefix, so that a
//! retried seq that is already committed (or in flight) is answered with its original offset
//! and never appended again.
//!
//! The prediction is exact because of three rules:
//! - **the gate**: no decision in a term until every entry in the leader's log at that moment
//!   is applied (so the state machine's table reflects the whole prefix, older terms included);
//! - **one prediction per term** (`Spec`), a copy of the table taken after the gate and
//!   updated, under the proposer lock, with each producer entry this leader proposes;
//! - **conditional proposals** (`write().with_leader(term)`): if leadership moved meanwhile,
//!   openraft appends nothing and the caller gets `NotLeader`, safe to resend.
//!
//! The outcome a caller gets is always the state machine's (through `Applied`); a
//! disagreement with the prediction would be a bug and is asserted in debug builds.

use super::super::dedup::{
    ApplyOutcome, Decision, ProduceRefusal, ProducerEntry, ProducerTable,
    DEFAULT_MAX_PRODUCERS, DEFAULT_PRODUCER_IDLE_EXPIRY_MS, MAX_PRODUCERS,
};
use super::super::entry::{encode_produce, encode_register};
use super::super::{AppData, Applied, TypeConfig};
use super::{errors, Replica, Role};
use crate::{Error, Result};
use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::impls::ProgressResponder;
use openraft::raft::ClientWriteResult;
use std::time::Duration;
use tokio::sync::{Mutex, Notify};

/// How long a produce whose first seq is ahead of the next expected waits for the earlier
/// ones (pipelined requests are answered concurrently, so seq n+1 may arrive first) before it
/// is refused as out of order.
pub const PRODUCE_GAP_WAIT_MS: u64 = 1000;
/// How long the gate waits for the leader's log to be applied.
const GATE_WAIT_MS: u64 = 10_000;
/// How long a retry of a seq proposed but not applied yet waits for its original's offset.
const IN_FLIGHT_WAIT_MS: u64 = 10_000;
/// The most messages one produce call carries (as one client append).
pub(crate) const MAX_PRODUCE_PAYLOADS: usize = crate::node::protocol::MAX_APPEND_PAYLOADS;

/// The parameters a registration carries (every replica applies them from the entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSettings {
    /// Entry time a producer may stay idle before it expires.
    pub idle_expiry_ms: u64,
    /// Most producers the table holds; past it the oldest idle one is evicted.
    pub max_producers: u32,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings {
            idle_expiry_ms: DEFAULT_PRODUCER_IDLE_EXPIRY_MS,
            max_producers: DEFAULT_MAX_PRODUCERS,
        }
    }
}

/// A registered producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerInfo {
    /// Its id (the offset of its Register entry).
    pub producer: u64,
    /// The idle expiry it was registered with.
    pub idle_expiry_ms: u64,
    /// The producer bound it was registered with.
    pub max_producers: u32,
}

/// Where one produced message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    /// Its offset.
    pub offset: u64,
    /// True when it was committed before (a retry): nothing was appended for it now.
    pub duplicate: bool,
}

/// The leader's prediction of the table for one term.
struct Spec {
    term: u64,
    table: ProducerTable,
    /// The offset given to the next predicted entry. Real offsets are unknown until applied;
    /// these are at most the real ones (each producer entry takes at least one index), so the
    /// table's `as_of` order holds. The prediction needs no offset: duplicates are resolved
    /// to their real offsets from the state machine's table.
    next_pseudo_offset: u64,
}

impl Spec {
    fn apply(&mut self, entry: &ProducerEntry) -> Option<ApplyOutcome> {
        let at = self.next_pseudo_offset;
        self.next_pseudo_offset += 1;
        self.table.apply(at, entry)
    }
}

/// The proposer lock and the prediction it guards, shared by the replica's clones.
pub(crate) type Proposer = std::sync::Arc<ProposerState>;

/// The clock the leader stamps producer entries with (ms since the Unix epoch): the wall
/// clock unless replaced ([`Replica::set_producer_clock`], for the simulation's virtual
/// time). Only the leader reads it; apply uses the stamps in the entries.
pub type ProducerClock = std::sync::Arc<dyn Fn() -> u64 + Send + Sync>;

/// What [`Proposer`] holds.
#[derive(Default)]
pub(crate) struct ProposerState {
    spec: Mutex<Option<Spec>>,
    /// Produces waiting for `spec`'s lock. Whoever holds the lock decides and proposes every
    /// job queued, in arrival order, so a burst of producers (all the writers a group commit
    /// answered at once) pays one lock hand-off instead of one each: `bench --replicated
    /// --producers` measured the hand-offs as the producers' cost. At most one job per produce
    /// request in flight, which the service's pipelining limits bound.
    queue: std::sync::Mutex<std::collections::VecDeque<Job>>,
    /// Signalled when a producer's next seq advances in the prediction.
    advanced: Notify,
    /// Times the state machine's outcome differed from the prediction (a bug if ever > 0).
    mispredicted: std::sync::atomic::AtomicU64,
    /// Replaces the wall clock, when set.
    clock: std::sync::Mutex<Option<ProducerClock>>,
}

impl ProposerState {
    fn now_ms(&self) -> u64 {
        // Replaced whole; a panic cannot leave it half-written.
        let clock = self.clock.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match clock {
            Some(c) => c(),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Job>> {
        // Pushes and drains only; a panic cannot leave the queue half-changed.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mispredicted(&self, producer: u64, seq: u64) {
        use std::sync::atomic::Ordering;
        self.mispredicted.fetch_add(1, Ordering::Relaxed);
        tracing::error!(producer, seq, "dedup mispredicted the state machine's outcome");
    }
}

fn refusal(producer: u64, seq: u64, why: ProduceRefusal) -> Error {
    match why {
        ProduceRefusal::Expired => Error::ProducerExpired { producer },
        ProduceRefusal::OutOfOrder { expected_seq } => Error::ProducerOutOfOrder {
            producer,
            expected_seq,
            got_seq: seq,
        },
        ProduceRefusal::BelowWindow { last_seq } => Error::ProducerSeqBelowWindow {
            producer,
            seq,
            last_seq,
        },
    }
}

type Responded = openraft::type_config::alias::OneshotReceiverOf<TypeConfig, ClientWriteResult<TypeConfig>>;

impl Replica {
    /// Registers a producer (a Register entry) and returns its id once the entry is applied.
    /// The proposer lock is held until then, so the prediction never has to guess an id.
    /// On a follower: [`Error::NotLeader`].
    pub async fn register_producer(&self, settings: ProducerSettings) -> Result<ProducerInfo> {
        if settings.max_producers == 0 || settings.max_producers > MAX_PRODUCERS {
            return Err(Error::InvalidArgument(format!(
                "max_producers must be 1..={MAX_PRODUCERS}"
            )));
        }
        let mut guard = self.proposer.spec.lock().await;
        let spec = self.gate(&mut guard).await?;
        let ts_ms = self.proposer.now_ms().max(spec.table.clock_ms());
        let d = encode_register(ts_ms, settings.idle_expiry_ms, settings.max_producers);
        let rx = self.propose(spec.term, d).await?;
        let applied = match self.answer(rx).await {
            Ok(a) => a,
            Err(e) => {
                // Whether it was appended is not known here: predict again after a gate.
                *guard = None;
                return Err(e);
            }
        };
        let entry = ProducerEntry::Register {
            ts_ms,
            idle_expiry_ms: settings.idle_expiry_ms,
            max_producers: settings.max_producers,
        };
        // The real offset is known now: the prediction takes the id as it is.
        spec.next_pseudo_offset = spec.next_pseudo_offset.max(applied.offset);
        let predicted = spec.apply(&entry);
        debug_assert_eq!(predicted, Some(ApplyOutcome::Registered));
        Ok(ProducerInfo {
            producer: applied.offset,
            idle_expiry_ms: settings.idle_expiry_ms,
            max_producers: settings.max_producers,
        })
    }

    /// Appends `payloads` as seqs `first_seq..` of `producer`, exactly once: a seq committed
    /// before (or proposed and not yet applied) resolves to its original offset and appends
    /// nothing. Refusals are typed ([`Error::ProducerExpired`], [`Error::ProducerOutOfOrder`],
    /// [`Error::ProducerSeqBelowWindow`]); on a follower, or when leadership moved before
    /// anything was proposed, [`Error::NotLeader`]. Resending the same seqs after any error is
    /// safe.
    pub async fn produce(
        &self,
        producer: u64,
        first_seq: u64,
        payloads: Vec<Bytes>,
    ) -> Result<Vec<Produced>> {
        if payloads.is_empty() || payloads.len() > MAX_PRODUCE_PAYLOADS {
            return Err(Error::InvalidArgument(format!(
                "a produce carries 1..={MAX_PRODUCE_PAYLOADS} messages"
            )));
        }
        let pending = self.propose_produce(producer, first_seq, &payloads).await?;
        let mut out = Vec::with_capacity(pending.len());
        for (seq, p) in (first_seq..).zip(pending) {
            out.push(match p {
                Pending::Known(offset) => Produced {
                    offset,
                    duplicate: true,
                },
                Pending::InFlight => Produced {
                    offset: self.original_offset(producer, seq).await?,
                    duplicate: true,
                },
                Pending::Proposed(rx) => self.produced(producer, seq, rx).await?,
            });
        }
        Ok(out)
    }

    /// Queues the produce for the proposer lock's holder (this task, if it gets the lock
    /// first), which predicts each seq and proposes the new ones; waits out a gap of earlier
    /// seqs not yet proposed (up to [`PRODUCE_GAP_WAIT_MS`]).
    async fn propose_produce(
        &self,
        producer: u64,
        first_seq: u64,
        payloads: &[Bytes],
    ) -> Result<Vec<Pending>> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(PRODUCE_GAP_WAIT_MS);
        loop {
            // Created before the job is queued: a prediction that advances after this point
            // wakes it (`notify_waiters` reaches every `Notified` created before it).
            let notified = self.proposer.advanced.notified();
            let (done, mut answer) = tokio::sync::oneshot::channel();
            self.proposer.queue().push_back(Job {
                producer,
                first_seq,
                payloads: payloads.to_vec(),
                may_wait: tokio::time::Instant::now() < deadline,
                done,
            });
            let result = tokio::select! {
                r = &mut answer => r,
                mut guard = self.proposer.spec.lock() => {
                    self.propose_queued(&mut guard).await;
                    drop(guard);
                    answer.await
                }
            };
            match result {
                Ok(JobResult::Proposed(r)) => return r,
                Ok(JobResult::Ahead) => {
                    // A wake-up or the deadline: either way decide again.
                    let _ = tokio::time::timeout_at(deadline, notified).await;
                }
                Err(_) => {
                    return Err(Error::Internal("a queued produce was dropped unanswered"))
                }
            }
        }
    }

    /// Under the proposer lock: decides and proposes every queued job, in order.
    async fn propose_queued(&self, spec: &mut Option<Spec>) {
        let jobs: Vec<Job> = self.proposer.queue().drain(..).collect();
        let mut advanced = false;
        for job in jobs {
            let result = self.propose_job(spec, &job).await;
            advanced |= matches!(result, JobResult::Proposed(Ok(_)));
            // Its owner may be gone (a cancelled request): what was proposed stays proposed,
            // as a retry of the same seqs finds.
            let _ = job.done.send(result);
        }
        if advanced {
            self.proposer.advanced.notify_waiters();
        }
    }

    /// One job: refused, ahead of its producer's next seq (its owner waits), or proposed.
    async fn propose_job(&self, spec: &mut Option<Spec>, job: &Job) -> JobResult {
        let spec = match self.gate(spec).await {
            Ok(s) => s,
            Err(e) => return JobResult::Proposed(Err(e)),
        };
        let ahead = spec
            .table
            .next_seq(job.producer)
            .is_some_and(|next| job.first_seq > next);
        if ahead && job.may_wait {
            return JobResult::Ahead;
        }
        let ts_ms = self.proposer.now_ms().max(spec.table.clock_ms());
        let mut pending = Vec::with_capacity(job.payloads.len());
        for (seq, message) in (job.first_seq..).zip(&job.payloads) {
            match self.propose_one(spec, job.producer, seq, ts_ms, message).await {
                Ok(p) => pending.push(p),
                Err(e) => return JobResult::Proposed(Err(e)),
            }
        }
        JobResult::Proposed(Ok(pending))
    }

    async fn propose_one(
        &self,
        spec: &mut Spec,
        producer: u64,
        seq: u64,
        ts_ms: u64,
        message: &Bytes,
    ) -> Result<Pending> {
        // At the entry's stamp: apply sweeps idle producers before it decides.
        match spec.table.decide_at(ts_ms, producer, seq) {
            Decision::Refused(why) => Err(refusal(producer, seq, why)),
            Decision::Duplicate { .. } => {
                // Its real offset is in the state machine's table once it is applied.
                match self.sm.producer_table().decide(producer, seq) {
                    Decision::Duplicate { offset } => Ok(Pending::Known(offset)),
                    _ => Ok(Pending::InFlight),
                }
            }
            Decision::Append => {
                let rx = self
                    .propose(spec.term, encode_produce(producer, seq, ts_ms, message))
                    .await?;
                let predicted = spec.apply(&ProducerEntry::Produce {
                    producer,
                    seq,
                    ts_ms,
                });
                debug_assert_eq!(predicted, Some(ApplyOutcome::Appended));
                Ok(Pending::Proposed(rx))
            }
        }
    }

    /// The prediction for the current term: made after the gate if this term has none.
    async fn gate<'a>(&self, spec: &'a mut Option<Spec>) -> Result<&'a mut Spec> {
        // Role and term only, read in place: every produce passes here under the proposer
        // lock, and a full `status()` (a clone of the metrics, the followers' list) per
        // request lengthened the lock's hold for all producers behind it.
        let (leading, term, leader) = {
            let m = self.raft.metrics();
            let b = m.borrow_watched();
            (
                b.state == openraft::ServerState::Leader,
                b.current_term,
                b.current_leader,
            )
        };
        if !leading {
            return Err(self.not_leader(leader));
        }
        if spec.as_ref().is_some_and(|p| p.term != term) {
            *spec = None;
        }
        if spec.is_none() {
            let s = self.status();
            if s.role != Role::Leader || s.term != term {
                return Err(self.not_leader(s.leader));
            }
            self.refuse_old_active_segment()?;
            // Every entry in this leader's log now (older terms' included) applied: the
            // table reflects the whole prefix. Only this leader appends from here on, and its
            // producer entries go through the lock held by the caller.
            let term = s.term;
            let ready = self
                .wait_for(GATE_WAIT_MS, |now| {
                    now.role != Role::Leader || now.term != term || now.commit_end >= s.log_end
                })
                .await?;
            if ready.role != Role::Leader || ready.term != term {
                return Err(self.not_leader(ready.leader));
            }
            let table = self.sm.producer_table();
            let next_pseudo_offset = table.as_of().map_or(0, |a| a + 1);
            *spec = Some(Spec {
                term,
                table,
                next_pseudo_offset,
            });
        }
        spec.as_mut().ok_or(Error::Internal("the gate sets the prediction"))
    }

    /// Refuses producer entries while the log's active segment is of a format that cannot
    /// hold them (created by an earlier release before the upgrade): written there, they
    /// would be unreadable, and an older binary could cut them as a torn tail. Once it rolls,
    /// every later segment is this binary's, so one check per term's prediction suffices.
    fn refuse_old_active_segment(&self) -> Result<()> {
        let segments = self.store.log().segments_snapshot();
        let Some(active) = segments.last().filter(|s| !s.is_sealed()) else {
            return Ok(());
        };
        let version = active.format_version()?;
        if version < crate::storage::segment::PRODUCER_KINDS_VERSION {
            return Err(Error::Unavailable {
                reason: format!(
                    "the active segment (from offset {}) is of format version {version},                      written before the upgrade: producers are served once it rolls",
                    active.base_offset
                ),
            });
        }
        Ok(())
    }

    fn not_leader(&self, leader: Option<u64>) -> Error {
        let addr = leader.and_then(|l| self.members().get(&l).map(|n| n.addr.clone()));
        Error::NotLeader { leader, addr }
    }

    /// Proposes `d` only while this node leads `term`.
    async fn propose(&self, term: u64, d: AppData) -> Result<Responded> {
        let (tx, rx) = ProgressResponder::complete_only();
        self.raft
            .write(d)
            .with_leader(term)
            .responder(tx)
            .await
            .map_err(|e| errors::fatal(&e))?;
        Ok(rx)
    }

    async fn answer(&self, rx: Responded) -> Result<Applied> {
        match rx.await {
            Ok(Ok(w)) => Ok(*w.response()),
            Ok(Err(e)) => Err(errors::client_write(e)),
            Err(_) => Err(Error::OutcomeUnknown {
                reason: "the write's answer was dropped".into(),
            }),
        }
    }

    /// The state machine's answer for a proposed seq.
    async fn produced(&self, producer: u64, seq: u64, rx: Responded) -> Result<Produced> {
        let a = self.answer(rx).await?;
        match a.outcome {
            ApplyOutcome::Appended => Ok(Produced {
                offset: a.offset,
                duplicate: false,
            }),
            ApplyOutcome::Duplicate { original } => {
                self.proposer.mispredicted(producer, seq);
                debug_assert!(false, "mispredicted: ({producer}, {seq}) was a duplicate");
                Ok(Produced {
                    offset: original,
                    duplicate: true,
                })
            }
            ApplyOutcome::Refused(why) => {
                self.proposer.mispredicted(producer, seq);
                debug_assert!(false, "mispredicted: ({producer}, {seq}) refused");
                Err(refusal(producer, seq, why))
            }
            ApplyOutcome::Registered => Err(Error::Internal("a produce applied as a register")),
        }
    }

    /// The offset of a seq proposed earlier and not applied when it was asked again: waits
    /// until the state machine has it.
    async fn original_offset(&self, producer: u64, seq: u64) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(IN_FLIGHT_WAIT_MS);
        let mut committed = self.committed_end.clone();
        loop {
            match self.sm.producer_table().decide(producer, seq) {
                Decision::Duplicate { offset } => return Ok(offset),
                Decision::Refused(ProduceRefusal::Expired) => {
                    return Err(Error::ProducerExpired { producer })
                }
                _ => {}
            }
            tokio::select! {
                biased;
                r = committed.changed() => r.map_err(|_| Error::Shutdown)?,
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Error::OutcomeUnknown {
                        reason: format!("producer {producer} seq {seq} still in flight"),
                    });
                }
            }
        }
    }

    /// How many times the state machine's outcome of a produced message differed from the
    /// leader's prediction (`sitelog_dedup_mispredicted_total`): a bug if ever above 0.
    pub fn dedup_mispredicted(&self) -> u64 {
        self.proposer
            .mispredicted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces the wall clock the leader stamps producer entries with (the simulation's
    /// virtual time keeps seeded runs replayable).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn set_producer_clock(&self, clock: ProducerClock) {
        *self
            .proposer
            .clock
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(clock);
    }

    /// A digest of the state machine's producer table (the simulation compares replicas'
    /// at the same applied index).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn producer_table_digest(&self) -> u64 {
        self.sm.producer_table().digest()
    }

    /// For the simulation's determinism check: the table's `as_of` and a digest of its
    /// contents with `as_of` left out. `as_of` is where the table was captured (a snapshot's
    /// applied point, or the last producer entry applied), which differs between replicas
    /// holding the same contents; while it is at or past the applied end (a replica still
    /// replaying under a restored table) the contents are ahead of the applied index and are
    /// not comparable.
    #[cfg(feature = "testing")]
    pub fn producer_table_probe(&self) -> (Option<u64>, u64) {
        let mut t = self.sm.producer_table();
        let as_of = t.as_of();
        // Moves any set `as_of` to one value, so that only the contents differ in the digest.
        t.advance_as_of(u64::MAX);
        (as_of, t.digest())
    }
}

/// One seq of a produce, after the prediction.
/// A produce queued for the proposer lock (see `ProposerState::queue`).
struct Job {
    producer: u64,
    first_seq: u64,
    payloads: Vec<Bytes>,
    /// Whether a first seq ahead of the producer's next may still wait for the gap to fill.
    may_wait: bool,
    done: tokio::sync::oneshot::Sender<JobResult>,
}

/// What the lock's holder did with a job.
enum JobResult {
    /// Decided: refused, or every seq resolved or proposed.
    Proposed(Result<Vec<Pending>>),
    /// Its first seq is ahead of the producer's next: nothing proposed; wait and queue again.
    Ahead,
}

enum Pending {
    /// Committed before, at this offset.
    Known(u64),
    /// Proposed earlier, not applied yet.
    InFlight,
    /// Proposed now: the state machine's answer will come.
    Proposed(Responded),
}
