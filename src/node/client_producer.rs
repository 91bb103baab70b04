//! Idempotent producers on the client side (issue 17 design §5): a [`Producer`] numbers its
//! messages and resends an append whose outcome is unknown with the *same* seqs, so that a
//! lost answer (a leader killed mid-request, a timeout) resolves to the original offsets
//! instead of a second copy.

use super::conn::Failure;
use super::{AppendOutcome, Client};
use crate::node::protocol::{Reply, Request, MAX_APPEND_PAYLOADS};
use crate::raft::dedup::ProduceRefusal;
use crate::{Error, Result};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::time::Instant;

/// How long a produce is resent before it is given up (clamped to half the producer's idle
/// expiry, so that the producer never expires while its own retries run).
pub const DEFAULT_PRODUCE_RETRY_DEADLINE_MS: u64 = 30_000;
/// First pause before a resend; it doubles up to [`RETRY_BACKOFF_MAX_MS`].
const RETRY_BACKOFF_FIRST_MS: u64 = 20;
/// Longest pause between resends.
const RETRY_BACKOFF_MAX_MS: u64 = 500;

/// A producer's seq lock, held from taking seqs until the request is queued on its
/// connection, so that the wire carries one producer's requests in seq order.
pub(super) type SeqHold = OwnedMutexGuard<SeqState>;

/// Where a producer's numbering stands.
#[derive(Debug)]
pub(super) struct SeqState {
    /// The producer id messages are numbered under.
    producer: u64,
    /// The seq the next message gets.
    next_seq: u64,
    /// The first seq of an append under `producer` that ended without a commit: the leader
    /// will wait for that seq forever, so later seqs of `producer` can never commit. The next
    /// append registers a new producer.
    broken_at: Option<u64>,
}

/// An idempotent producer: appends through it are stored exactly once, retried by the client
/// through failovers. Cheap to clone; clones share the numbering.
#[derive(Debug, Clone)]
pub struct Producer {
    client: Client,
    state: Arc<Mutex<SeqState>>,
    idle_expiry_ms: u64,
    /// How long one append is resent before it gives up (default
    /// [`DEFAULT_PRODUCE_RETRY_DEADLINE_MS`]; at most half the producer's idle expiry).
    pub retry_deadline_ms: u64,
}

/// How one producer append ended, with how hard it was to get there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceReport {
    /// The outcome: offsets, a refusal (nothing appended), or unknown past the deadline.
    pub outcome: AppendOutcome,
    /// Times the request was sent again after an unknown outcome.
    pub retries: u32,
    /// Messages the leader answered with an earlier attempt's offset (appended once, then).
    pub deduplicated: u32,
}

/// What one attempt of a produce told.
enum Attempt {
    Done(Vec<u64>, u32),
    /// Final: nothing of it was (or will be) appended.
    Refused(Error),
    /// Worth resending; `sent` when the request may have reached a node.
    Again { why: String, sent: bool },
}

impl Client {
    /// Registers an idempotent producer on the leader. A registration whose answer was lost
    /// is sent again (an orphan registration only takes a table row until it expires).
    pub async fn producer(&self) -> Result<Producer> {
        let (producer, idle_expiry_ms) = self.register_producer().await?;
        Ok(Producer {
            client: self.clone(),
            state: Arc::new(Mutex::new(SeqState {
                producer,
                next_seq: 0,
                broken_at: None,
            })),
            idle_expiry_ms,
            retry_deadline_ms: DEFAULT_PRODUCE_RETRY_DEADLINE_MS,
        })
    }

    /// REGISTER_PRODUCER until it is answered or [`DEFAULT_PRODUCE_RETRY_DEADLINE_MS`] passed:
    /// the id and idle expiry.
    async fn register_producer(&self) -> Result<(u64, u64)> {
        let msg = Request::RegisterProducer.encode()?;
        let deadline = Instant::now() + Duration::from_millis(DEFAULT_PRODUCE_RETRY_DEADLINE_MS);
        let mut backoff = Backoff::new();
        loop {
            let leader_deadline = deadline.min(self.leader_deadline());
            let why = match self.send_to_leader_holding(msg.clone(), None, leader_deadline).await
            {
                Ok(Reply::Producer {
                    producer,
                    idle_expiry_ms,
                    ..
                }) => return Ok((producer, idle_expiry_ms)),
                Ok(Reply::NotAllowed { role, op }) => return Err(Error::NotAllowed { role, op }),
                Err(Failure::NotSent(e @ (Error::ClusterMismatch { .. } | Error::Tls { .. }))) => {
                    return Err(e)
                }
                Ok(other) => Error::Protocol(format!("unexpected reply {other:?}")),
                Err(Failure::NotSent(e) | Failure::Unknown(e)) => e,
            };
            if !backoff.pause_before(deadline).await {
                return Err(why);
            }
        }
    }

    fn leader_deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.leader_wait_ms)
    }
}

impl Producer {
    /// This producer's current id (a new one after an append it could not resolve).
    pub async fn id(&self) -> u64 {
        self.state.lock().await.producer
    }

    /// Appends `payloads` exactly once: [`AppendOutcome::Ok`] with their offsets, or
    /// [`AppendOutcome::Failed`] when nothing was appended, or [`AppendOutcome::Unknown`] only
    /// when the retry deadline passed with some attempt possibly delivered.
    pub async fn append(&self, payloads: Vec<Bytes>) -> AppendOutcome {
        self.append_report(payloads).await.outcome
    }

    /// [`Producer::append`] with its retries and how many messages were deduplicated.
    pub async fn append_report(&self, payloads: Vec<Bytes>) -> ProduceReport {
        let report = |outcome| ProduceReport {
            outcome,
            retries: 0,
            deduplicated: 0,
        };
        if payloads.is_empty() || payloads.len() > MAX_APPEND_PAYLOADS {
            let why = format!("a producer append carries 1..={MAX_APPEND_PAYLOADS} messages");
            return report(AppendOutcome::Failed(why));
        }
        let mut hold = match self.take_seqs(payloads.len()).await {
            Ok(h) => h,
            Err(e) => return report(AppendOutcome::Failed(e.to_string())),
        };
        let (producer, first_seq) = (hold.producer, hold.next_seq);
        hold.next_seq += payloads.len() as u64;
        let request = Request::Produce {
            producer,
            first_seq,
            payloads,
        };
        let msg = match request.encode() {
            Ok(m) => m,
            Err(e) => {
                hold.broken_at.get_or_insert(first_seq);
                return report(AppendOutcome::Failed(e.to_string()));
            }
        };
        let r = self.resend_until_resolved(msg, hold, producer, first_seq).await;
        if !matches!(r.outcome, AppendOutcome::Ok(_)) {
            self.broken(producer, first_seq).await;
        }
        r
    }

    /// The seq lock, with a producer that can take new seqs (a new registration if an earlier
    /// append left a gap under the current id).
    async fn take_seqs(&self, n: usize) -> Result<SeqHold> {
        let mut hold = self.state.clone().lock_owned().await;
        if hold.broken_at.is_some() || hold.next_seq.checked_add(n as u64).is_none() {
            let (producer, _) = self.client.register_producer().await?;
            *hold = SeqState {
                producer,
                next_seq: 0,
                broken_at: None,
            };
        }
        Ok(hold)
    }

    /// Marks seq `first_seq` of `producer` as never to be committed.
    async fn broken(&self, producer: u64, first_seq: u64) {
        let mut st = self.state.lock().await;
        if st.producer == producer {
            let at = st.broken_at.get_or_insert(first_seq);
            *at = (*at).min(first_seq);
        }
    }

    /// The retry loop: the same request until it resolves or the deadline passes.
    async fn resend_until_resolved(
        &self,
        msg: Bytes,
        hold: SeqHold,
        producer: u64,
        first_seq: u64,
    ) -> ProduceReport {
        let budget_ms = self.retry_deadline_ms.min(self.idle_expiry_ms / 2);
        let deadline = Instant::now() + Duration::from_millis(budget_ms);
        let mut backoff = Backoff::new();
        let (mut retries, mut maybe_sent) = (0u32, false);
        let mut hold = Some(hold);
        loop {
            let leader_deadline = deadline.min(self.client.leader_deadline());
            let answer = self
                .client
                .send_to_leader_holding(msg.clone(), hold.take(), leader_deadline)
                .await;
            let why = match self.attempt(answer, producer, first_seq).await {
                Attempt::Done(offsets, deduplicated) => {
                    return ProduceReport {
                        outcome: AppendOutcome::Ok(offsets),
                        retries,
                        deduplicated,
                    }
                }
                Attempt::Refused(e) => {
                    return ProduceReport {
                        outcome: AppendOutcome::Failed(e.to_string()),
                        retries,
                        deduplicated: 0,
                    }
                }
                Attempt::Again { why, sent } => {
                    maybe_sent |= sent;
                    why
                }
            };
            if !backoff.pause_before(deadline).await {
                let outcome = if maybe_sent {
                    AppendOutcome::Unknown(format!("retry deadline passed ({why})"))
                } else {
                    AppendOutcome::Failed(why)
                };
                return ProduceReport {
                    outcome,
                    retries,
                    deduplicated: 0,
                };
            }
            retries += 1;
        }
    }

    /// Classifies one attempt's answer.
    async fn attempt(
        &self,
        answer: std::result::Result<Reply, Failure>,
        producer: u64,
        first_seq: u64,
    ) -> Attempt {
        let again = |why: String, sent: bool| Attempt::Again { why, sent };
        match answer {
            Ok(Reply::Produced {
                offsets,
                deduplicated,
            }) => Attempt::Done(offsets, deduplicated),
            Ok(Reply::ProduceRefused { producer: p, why }) => {
                self.refused(p, first_seq, why).await
            }
            Ok(Reply::NotAllowed { role, op }) => Attempt::Refused(Error::NotAllowed { role, op }),
            // The node failed the request after it may have appended it (a lost leadership
            // mid-commit, a storage fault): unknown, and safe to resend.
            Ok(Reply::Error(e)) => again(e, true),
            Ok(other) => again(format!("unexpected reply {other:?}"), true),
            Err(Failure::NotSent(e @ (Error::ClusterMismatch { .. } | Error::Tls { .. }))) => {
                Attempt::Refused(e)
            }
            Err(Failure::NotSent(e)) => again(e.to_string(), false),
            Err(Failure::Unknown(e)) => {
                tracing::debug!(producer, first_seq, error = %e, "produce outcome unknown: resending");
                again(e.to_string(), true)
            }
        }
    }

    /// A refusal: final, or (an earlier seq of ours still unresolved) worth resending.
    async fn refused(&self, producer: u64, seq: u64, why: ProduceRefusal) -> Attempt {
        match why {
            ProduceRefusal::Expired => Attempt::Refused(Error::ProducerExpired { producer }),
            ProduceRefusal::BelowWindow { last_seq } => {
                Attempt::Refused(Error::ProducerSeqBelowWindow {
                    producer,
                    seq,
                    last_seq,
                })
            }
            ProduceRefusal::OutOfOrder { expected_seq } => {
                let err = Error::ProducerOutOfOrder {
                    producer,
                    expected_seq,
                    got_seq: seq,
                };
                let st = self.state.lock().await;
                let gap_is_final = st.producer == producer
                    && st.broken_at.is_some_and(|b| b <= expected_seq);
                if expected_seq < seq && !gap_is_final {
                    // An earlier append of ours is still being resent: wait for it.
                    Attempt::Again {
                        why: err.to_string(),
                        sent: false,
                    }
                } else {
                    Attempt::Refused(err)
                }
            }
        }
    }
}

/// Pauses between resends: 20 ms doubling to 500 ms.
struct Backoff {
    next_ms: u64,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next_ms: RETRY_BACKOFF_FIRST_MS,
        }
    }

    /// Sleeps the next pause; false (without sleeping) when it would end past `deadline`.
    async fn pause_before(&mut self, deadline: Instant) -> bool {
        let pause = Duration::from_millis(self.next_ms);
        if Instant::now() + pause >= deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        self.next_ms = (self.next_ms * 2).min(RETRY_BACKOFF_MAX_MS);
        true
    }
}
