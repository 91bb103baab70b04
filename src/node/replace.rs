//! Site replacement as one call: add the new node as a learner, wait until it has caught up,
//! then swap it in for the lost voter ([`Client::replace_site`], [`Node::replace_site`]).
//!
//! The work is a lazy stream of [`ReplaceEvent`]s: nothing runs until it is polled, each
//! event is produced in the poll that returns it (so the consumer sees it at its `at`), and
//! dropping the stream stops the work between steps. Progress events come first (phases in
//! order: `AddingLearner`, `CatchingUp`..., `Swapping`), then exactly one outcome (`Done` or
//! `Failed`), then the stream ends.
//!
//! The catch-up target is the leader's commit end right after the learner was added; the new
//! node has caught up when its own commit end reaches it. The swap is the `ReplaceVoter`
//! request (placement is checked on the leader).

use super::client::Client;
use super::status::{NodeStatus, Role};
use super::{Node, Peer};
use crate::{Error, Result};
use futures_util::stream::{self, Stream};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Default period between two status polls of the new node.
pub const DEFAULT_POLL_MS: u64 = 100;
/// Default limit on the catch-up (a site of hundreds of GiB copies for tens of minutes).
pub const DEFAULT_CATCH_UP_DEADLINE_MS: u64 = 3_600_000;
/// Bounds of the poll period: a tighter poll only loads the nodes, a looser one hides progress.
const POLL_MS_MIN: u64 = 1;
const POLL_MS_MAX: u64 = 60_000;
/// A status request to one node may take this long (a node that does not answer is polled
/// again at the next period, until the deadline).
const STATUS_TIMEOUT_MS: u64 = 2_000;

/// How a replacement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplaceOptions {
    /// Period between two polls of the new node's status (one progress event each), clamped
    /// to 1 ms ..= 60 s. Default `DEFAULT_POLL_MS` (100 ms).
    pub poll_ms: u64,
    /// The new node must have caught up within this long after it was added as a learner,
    /// else the outcome is `Failed(Error::Timeout { offset: target })`. Default
    /// `DEFAULT_CATCH_UP_DEADLINE_MS` (1 hour).
    pub catch_up_deadline_ms: u64,
}

impl Default for ReplaceOptions {
    fn default() -> Self {
        ReplaceOptions {
            poll_ms: DEFAULT_POLL_MS,
            catch_up_deadline_ms: DEFAULT_CATCH_UP_DEADLINE_MS,
        }
    }
}

/// The step a replacement is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplacePhase {
    /// Adding the new node as a learner (one event, before the request).
    AddingLearner,
    /// Waiting until the new node's commit end reaches the target (one event per poll; the
    /// last one has `commit_done >= commit_target`).
    CatchingUp,
    /// The new node has caught up; swapping it in for the dead voter (one event, before the
    /// request: its `at` is the moment the catch-up was seen complete).
    Swapping,
}

/// Where a replacement stands.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaceProgress {
    /// The step.
    pub phase: ReplacePhase,
    /// When this event was produced.
    pub at: Instant,
    /// Catch-up by snapshot on the new node: bytes of segments in place (0 without one).
    pub snapshot_done_bytes: u64,
    /// Catch-up by snapshot on the new node: bytes of segments to have (0 without one).
    pub snapshot_total_bytes: u64,
    /// `snapshot_done_bytes` per second since the learner was added.
    pub rate_bytes_per_s: f64,
    /// Time left for the snapshot bytes at that rate; `None` before any byte arrived.
    pub eta_ms: Option<u64>,
    /// The new node's commit end.
    pub commit_done: u64,
    /// The leader's commit end when the learner was added (0 before that).
    pub commit_target: u64,
}

/// One event of a replacement.
#[derive(Debug)]
pub enum ReplaceEvent {
    /// Progress; zero or more, phases in order.
    Progress(ReplaceProgress),
    /// The outcome: the new node replaced the dead one (or, for
    /// [`Client::add_caught_up_learner`], caught up). The voters now: from the node's own
    /// membership for [`Node::replace_site`]; for a [`Client`], from the leader's status.
    Done {
        /// Voter ids of the new membership.
        voters: Vec<u64>,
    },
    /// The outcome: the replacement stopped at the phase of the last progress event (for
    /// example [`Error::NoLeader`] when no node answered as the leader in time, or
    /// [`Error::Timeout`] past the catch-up deadline).
    Failed(Error),
}

/// The events of a replacement (see the module documentation); `Send`, `'static`.
pub struct ReplaceStream {
    inner: Pin<Box<dyn Stream<Item = ReplaceEvent> + Send>>,
}

impl std::fmt::Debug for ReplaceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplaceStream")
    }
}

impl Stream for ReplaceStream {
    type Item = ReplaceEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ReplaceEvent>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// What a run does after the catch-up.
#[derive(Debug, Clone, Copy)]
enum Then {
    /// Swap the new node in for this voter.
    Replace { dead: u64 },
    /// Nothing: the new node stays a learner (a catch-up benchmark).
    StayLearner,
}

/// The state a run carries from step to step.
struct Driver {
    admin: Client,
    /// Status requests (a connection per node asked, with a short timeout).
    probe: Client,
    cluster: Vec<String>,
    new_id: u64,
    new_peer: Peer,
    then: Then,
    poll: Duration,
    deadline: Duration,
    /// When the learner was added, and the catch-up target.
    added: Option<(Instant, u64)>,
    /// The new node's last status seen.
    last: Option<NodeStatus>,
    /// The node driving it, for [`Node::replace_site`]: its own view gives the voters.
    local: Option<Node>,
}

enum Step {
    Announce,
    AddLearner,
    Poll { wait: bool },
    AnnounceSwap,
    Swap,
    Finish(ReplaceEvent),
    End,
}

impl Driver {
    fn new(admin: Client, new_id: u64, new_peer: Peer, then: Then) -> Self {
        // The probe speaks like the admin client (TLS with the same certificate, or plaintext):
        // a plaintext probe of a TLS cluster is refused by every node.
        let mut probe = admin.with_addrs(vec![]);
        probe.request_timeout_ms = STATUS_TIMEOUT_MS;
        Driver {
            cluster: admin.addrs().to_vec(),
            admin,
            probe,
            new_id,
            new_peer,
            then,
            poll: Duration::ZERO,
            deadline: Duration::ZERO,
            added: None,
            last: None,
            local: None,
        }
    }

    fn progress(&self, phase: ReplacePhase, s: Option<&NodeStatus>) -> ReplaceEvent {
        let at = Instant::now();
        let (done, total) = s.map_or((0, 0), |s| s.catch_up_bytes);
        let (since, target) = self.added.unwrap_or((at, 0));
        let secs = at.duration_since(since).as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let eta_ms = (rate > 0.0).then(|| (total.saturating_sub(done) as f64 / rate * 1e3) as u64);
        ReplaceEvent::Progress(ReplaceProgress {
            phase,
            at,
            snapshot_done_bytes: done,
            snapshot_total_bytes: total,
            rate_bytes_per_s: rate,
            eta_ms,
            commit_done: s.map_or(0, |s| s.commit_end),
            commit_target: target,
        })
    }

    /// The status of the node leading by its own account (highest term), waiting out an
    /// election for up to the admin client's `leader_wait_ms` ([`Error::NoLeader`] past it).
    async fn leader_status(&mut self) -> Result<NodeStatus> {
        let deadline = Instant::now() + Duration::from_millis(self.admin.leader_wait_ms);
        loop {
            let mut best: Option<NodeStatus> = None;
            for addr in &self.cluster {
                if let Ok(s) = self.probe.status_of(addr).await {
                    if s.role == Role::Leader && best.as_ref().is_none_or(|b| s.term > b.term) {
                        best = Some(s);
                    }
                }
            }
            if let Some(s) = best {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(Error::NoLeader {
                    waited_ms: self.admin.leader_wait_ms,
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    async fn step(&mut self, step: Step) -> Option<(ReplaceEvent, Step)> {
        match step {
            Step::Announce => {
                let event = self.progress(ReplacePhase::AddingLearner, None);
                Some((event, Step::AddLearner))
            }
            // The first `CatchingUp` event marks the moment the learner was added.
            Step::AddLearner => Some(match self.add_learner().await {
                Ok(()) => (
                    self.progress(ReplacePhase::CatchingUp, None),
                    Step::Poll { wait: false },
                ),
                Err(e) => (ReplaceEvent::Failed(e), Step::End),
            }),
            Step::Poll { wait } => Some(self.poll_catch_up(wait).await),
            Step::AnnounceSwap => {
                let last = self.last.take();
                Some((
                    self.progress(ReplacePhase::Swapping, last.as_ref()),
                    Step::Swap,
                ))
            }
            Step::Swap => Some((self.swap().await, Step::End)),
            Step::Finish(event) => Some((event, Step::End)),
            Step::End => None,
        }
    }

    async fn add_learner(&mut self) -> Result<()> {
        self.admin
            .add_learner(self.new_id, self.new_peer.clone())
            .await?;
        let target = self.leader_status().await?.commit_end;
        self.added = Some((Instant::now(), target));
        Ok(())
    }

    /// One poll of the new node: a `CatchingUp` event, then the next step.
    async fn poll_catch_up(&mut self, wait: bool) -> (ReplaceEvent, Step) {
        if wait {
            tokio::time::sleep(self.poll).await;
        }
        let Some((added, target)) = self.added else {
            // Invariant: `AddLearner` sets it before the first poll.
            return (
                ReplaceEvent::Failed(Error::Internal("catch-up polled before the add")),
                Step::End,
            );
        };
        let status = match self.probe.status_of(&self.new_peer.addr).await {
            Ok(s) => Some(s),
            Err(e) => {
                // A node still starting may not answer yet: polled again until the deadline.
                tracing::debug!(node = self.new_id, error = %e, "new node's status");
                None
            }
        };
        let event = self.progress(ReplacePhase::CatchingUp, status.as_ref());
        let caught_up = status.as_ref().is_some_and(|s| s.commit_end >= target);
        let next = if caught_up {
            match self.then {
                Then::Replace { .. } => Step::AnnounceSwap,
                Then::StayLearner => match self.leader_status().await {
                    Ok(s) => Step::Finish(ReplaceEvent::Done { voters: s.voters }),
                    Err(e) => Step::Finish(ReplaceEvent::Failed(e)),
                },
            }
        } else if added.elapsed() >= self.deadline {
            Step::Finish(ReplaceEvent::Failed(Error::Timeout { offset: target }))
        } else {
            Step::Poll { wait: true }
        };
        self.last = status;
        (event, next)
    }

    async fn swap(&mut self) -> ReplaceEvent {
        let Then::Replace { dead } = self.then else {
            // Invariant: only a `Then::Replace` driver reaches the swap.
            return ReplaceEvent::Failed(Error::Internal("swap without a dead voter"));
        };
        if let Err(e) = self.admin.replace_voter(dead, self.new_id).await {
            return ReplaceEvent::Failed(e);
        }
        let new_id = self.new_id;
        let voters = match &self.local {
            // The node's own membership view is exact (a follower learns of the change
            // within a heartbeat).
            Some(node) => node
                .wait_for(self.admin.leader_wait_ms, |s| {
                    s.voters.contains(&new_id) && !s.voters.contains(&dead)
                })
                .await
                .map(|s| s.voters),
            // The leader's membership, once the change is in effect there.
            None => self.leader_voters(dead, new_id).await,
        };
        match voters {
            Ok(voters) => ReplaceEvent::Done { voters },
            Err(e) => ReplaceEvent::Failed(e),
        }
    }

    /// The voters in the status of the leader once `new` replaced `dead` there (the leader
    /// answering the swap committed it; a leader elected since may not have applied it yet),
    /// waiting up to `leader_wait_ms`.
    async fn leader_voters(&mut self, dead: u64, new: u64) -> Result<Vec<u64>> {
        let deadline = Instant::now() + Duration::from_millis(self.admin.leader_wait_ms);
        loop {
            let s = self.leader_status().await?;
            if s.voters.contains(&new) && !s.voters.contains(&dead) {
                return Ok(s.voters);
            }
            if Instant::now() >= deadline {
                // The swap was answered committed, yet the leader's membership does not show
                // it within the wait: where it stands is not known from here.
                return Err(Error::OutcomeUnknown {
                    reason: format!(
                        "voter {dead} still in the leader's membership {:?}",
                        s.voters
                    ),
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

/// The event stream of `driver`, started with `opts`.
fn run(mut driver: Driver, opts: ReplaceOptions) -> ReplaceStream {
    driver.poll = Duration::from_millis(opts.poll_ms.clamp(POLL_MS_MIN, POLL_MS_MAX));
    driver.deadline = Duration::from_millis(opts.catch_up_deadline_ms);
    let s = stream::unfold((driver, Step::Announce), |(mut driver, step)| async move {
        let (event, next) = driver.step(step).await?;
        Some((event, (driver, next)))
    });
    ReplaceStream { inner: Box::pin(s) }
}

impl Client {
    /// Replaces the lost voter `dead` by the new node `new_id` at `new_peer` (running,
    /// started without members): adds it as a learner, waits until its commit end reaches
    /// the leader's commit end at the time it was added, then swaps it in (`ReplaceVoter`,
    /// placement checked on the leader). Uses its own connections to this client's nodes;
    /// see [`ReplaceEvent`] for what the stream yields.
    pub fn replace_site(
        &self,
        dead: u64,
        new_id: u64,
        new_peer: Peer,
        opts: ReplaceOptions,
    ) -> ReplaceStream {
        self.drive(new_id, new_peer, Then::Replace { dead }, opts)
    }

    /// The first two phases of [`Client::replace_site`] alone: adds `new_id` as a learner
    /// and waits until it has caught up; it stays a learner (`Done` names the unchanged
    /// voters). For measuring a catch-up.
    pub fn add_caught_up_learner(
        &self,
        new_id: u64,
        new_peer: Peer,
        opts: ReplaceOptions,
    ) -> ReplaceStream {
        self.drive(new_id, new_peer, Then::StayLearner, opts)
    }

    /// A replacement driven through connections of this client's own.
    fn drive(
        &self,
        new_id: u64,
        new_peer: Peer,
        then: Then,
        opts: ReplaceOptions,
    ) -> ReplaceStream {
        let driver = Driver::new(self.sibling(), new_id, new_peer, then);
        run(driver, opts)
    }
}

impl Node {
    /// [`Client::replace_site`] from this node, leader or follower: a client of the members
    /// this node knows (their advertised addresses, its own included) drives it.
    pub fn replace_site(
        &self,
        dead: u64,
        new_id: u64,
        new_peer: Peer,
        opts: ReplaceOptions,
    ) -> ReplaceStream {
        match self.member_client() {
            Ok(client) => {
                let mut driver = Driver::new(client, new_id, new_peer, Then::Replace { dead });
                driver.local = Some(self.clone());
                run(driver, opts)
            }
            Err(e) => ReplaceStream {
                inner: Box::pin(stream::iter([ReplaceEvent::Failed(e)])),
            },
        }
    }

    fn member_client(&self) -> Result<Client> {
        let replica = self.replica()?;
        let mut addrs: Vec<String> = replica.members().into_values().map(|m| m.addr).collect();
        if !addrs.iter().any(|a| a == self.advertise_addr()) {
            addrs.push(self.advertise_addr().to_string());
        }
        // With TLS the driver presents this node's certificate (admin on a client connection).
        Ok(Client::new(addrs, replica.cluster_id).with_tls(self.inner.tls.clone()))
    }
}
