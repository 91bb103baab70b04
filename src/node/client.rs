//! A client of a sitelog cluster over TCP: appends go to the leader (found by asking and by
//! following `NotLeader` answers), reads and status go to any node.
//!
//! A [`Client`] is cheap to clone, and every method takes `&self`: many tasks may call one
//! client (or its clones) at once. Requests to the same node share one connection and are
//! pipelined on it (the node answers them concurrently and replies in request order; see
//! `client_conn`). Appends one task awaits in turn are ordered; concurrent appends have no
//! order among themselves.
//!
//! A plain [`Client::append`] that fails after it was sent (connection lost, timeout) is
//! *unknown*, not failed: it may have been committed. The client never retries such an
//! append by itself (that could store it twice); it returns [`AppendOutcome::Unknown`] and
//! the caller decides.
//!
//! A [`Producer`] ([`Client::producer`]) does retry: its messages carry a producer id and
//! sequence numbers, and the leader answers a seq committed before with its original offset,
//! appending nothing. So [`Producer::append`] resends an unknown outcome with the same seqs,
//! with backoff, until its retry deadline, through leader changes: it resolves to
//! [`AppendOutcome::Ok`] or [`AppendOutcome::Failed`], and is `Unknown` only past the deadline.
//!
//! Security: [`Client::new`] speaks plaintext; [`Client::new_tls`] connects with mutual TLS,
//! presenting the client certificate of one role (`client-<role>.pem` of the directory), and
//! checks that every node it reaches holds a node certificate of the cluster CA. A request
//! the role does not allow fails with [`Error::NotAllowed`] (nothing was done).

use super::protocol::{Reply, Request, WireRecord};
use super::status::NodeStatus;
use super::Peer;
use crate::limits::MAX_MEMBERS;
use crate::net::tcp::NetLimits;
use crate::net::tls::{ClientRole, TlsDir, TlsReloader, Who};
use crate::{Error, Result};
use bytes::Bytes;
use conn::{Conn, Failure};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

#[path = "client_conn.rs"]
mod conn;
#[path = "client_producer.rs"]
mod producer;

pub use producer::{ProduceReport, Producer, DEFAULT_PRODUCE_RETRY_DEADLINE_MS};
use producer::SeqHold;

/// Most node connections a client and its clones keep (one per node address asked).
pub const MAX_CLIENT_CONNECTIONS: usize = MAX_MEMBERS;
/// Pause before asking again when no node could be reached or none knows a leader.
const RETRY_PAUSE_MS: u64 = 20;

/// How an append (or another request for the leader) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome<T = Vec<u64>> {
    /// Acknowledged by a majority: the records' offsets.
    Ok(T),
    /// Refused before it was appended anywhere (no leader could take it in time).
    Failed(String),
    /// Sent, but no answer: it may or may not be committed.
    Unknown(String),
}

/// A client of a cluster: cheap to clone (the settings are copied, the connections shared).
#[derive(Debug, Clone)]
pub struct Client {
    addrs: Arc<[String]>,
    cluster_id: u64,
    limits: NetLimits,
    /// The client certificate's configuration (`None`: plaintext).
    tls: Option<Arc<TlsReloader>>,
    pool: Arc<Pool>,
    /// How long one request may take (queueing on its connection included).
    pub request_timeout_ms: u64,
    /// How long an append may search for a leader before failing.
    pub leader_wait_ms: u64,
}

/// A connection being opened or open, per node address.
type ConnSlot = Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>;

/// The connections of a client and its clones.
#[derive(Debug, Default)]
struct Pool {
    conns: Mutex<HashMap<String, ConnSlot>>,
    /// The node that last answered a request for the leader.
    leader: Mutex<Option<String>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code panics while holding these; the data stays consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    /// The slot of `addr`, making room (a lost connection first, else any other) when the
    /// pool is full. Requests in flight keep a dropped connection alive until they end.
    fn slot(&self, addr: &str) -> ConnSlot {
        let mut conns = locked(&self.conns);
        if !conns.contains_key(addr) && conns.len() >= MAX_CLIENT_CONNECTIONS {
            let victim = conns
                .iter()
                .find(|(_, s)| {
                    s.try_lock()
                        .is_ok_and(|c| c.as_ref().is_none_or(|c| !c.is_alive()))
                })
                .or_else(|| conns.iter().next())
                .map(|(a, _)| a.clone());
            if let Some(v) = victim {
                conns.remove(&v);
            }
        }
        conns.entry(addr.to_string()).or_default().clone()
    }

    fn leader(&self) -> Option<String> {
        locked(&self.leader).clone()
    }

    fn set_leader(&self, addr: Option<&str>) {
        *locked(&self.leader) = addr.map(str::to_string);
    }

    /// Forgets `addr` as the leader (if it was the one remembered).
    fn not_leader(&self, addr: &str) {
        let mut l = locked(&self.leader);
        if l.as_deref() == Some(addr) {
            *l = None;
        }
    }
}

/// One request's reply, decoded; `Err` tells whether it was sent.
type Answer = std::result::Result<Reply, Failure>;

impl Client {
    /// A client for the cluster whose nodes listen on `addrs`.
    pub fn new(addrs: Vec<String>, cluster_id: u64) -> Client {
        Client {
            addrs: addrs.into(),
            cluster_id,
            limits: NetLimits::default(),
            tls: None,
            pool: Arc::default(),
            request_timeout_ms: 5000,
            leader_wait_ms: 10_000,
        }
    }

    /// A client that connects with mutual TLS, presenting the certificate of `role` from
    /// `dir` (`client-<role>.pem`, `client-<role>.key`, trusting `ca.pem` only). Fails with
    /// [`Error::Tls`] when the files are missing, malformed, expired or name another role.
    pub fn new_tls(
        addrs: Vec<String>,
        cluster_id: u64,
        dir: TlsDir,
        role: ClientRole,
    ) -> Result<Client> {
        let tls = TlsReloader::load(dir, Who::Client(role))?;
        Ok(Client {
            tls: Some(Arc::new(tls)),
            ..Client::new(addrs, cluster_id)
        })
    }

    /// Re-reads the client certificate (rotation); connections already open keep theirs. A
    /// plaintext client has nothing to reload: `Ok`.
    pub fn reload_tls(&self) -> Result<()> {
        self.tls.as_ref().map_or(Ok(()), |t| t.reload())
    }

    /// The node addresses this client was given.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The cluster id this client connects with.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// A client of the same nodes with the same settings and connections of its own.
    pub(crate) fn sibling(&self) -> Client {
        Client {
            pool: Arc::default(),
            ..self.clone()
        }
    }

    /// A client of `addrs` with this one's settings (TLS included) and connections of its own.
    pub(crate) fn with_addrs(&self, addrs: Vec<String>) -> Client {
        Client {
            addrs: addrs.into(),
            pool: Arc::default(),
            ..self.clone()
        }
    }

    /// This client presenting `tls` (a node's own reloader: a node driving a replacement);
    /// `None`: plaintext.
    pub(crate) fn with_tls(self, tls: Option<Arc<TlsReloader>>) -> Client {
        Client { tls, ..self }
    }

    /// The shared connection to `addr`, opened (or reopened, if lost) now if needed.
    async fn conn(&self, addr: &str) -> Result<Arc<Conn>> {
        let slot = self.pool.slot(addr);
        // Held while connecting: concurrent callers wait for this one connection.
        let mut open = slot.lock().await;
        if let Some(c) = open.as_ref().filter(|c| c.is_alive()) {
            return Ok(c.clone());
        }
        *open = None;
        let c = Arc::new(Conn::open(addr, self.cluster_id, self.limits, self.tls.clone()).await?);
        *open = Some(c.clone());
        Ok(c)
    }

    /// One request to `addr` within `request_timeout_ms`.
    async fn ask(&self, addr: &str, req: Bytes) -> Answer {
        self.ask_holding(addr, req, None).await
    }

    /// [`Client::ask`] dropping `hold` once the request is queued on its connection (or
    /// could not be).
    async fn ask_holding(&self, addr: &str, req: Bytes, hold: Option<SeqHold>) -> Answer {
        let deadline = Instant::now() + Duration::from_millis(self.request_timeout_ms);
        let conn = match tokio::time::timeout_at(deadline, self.conn(addr)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(Failure::NotSent(e)),
            Err(_) => return Err(Failure::NotSent(Error::Timeout { offset: 0 })),
        };
        let bytes = conn.request(req, deadline, hold).await?;
        // An undecodable reply came from a node that may have done the request.
        Reply::decode(&bytes).map_err(Failure::Unknown)
    }

    /// [`Client::ask`] for a request that may be done twice (a read, a status): asked again
    /// once on a new connection when the shared one was found lost (the node restarted, or
    /// closed it while idle).
    async fn ask_again(&self, addr: &str, req: Bytes) -> Answer {
        match self.ask(addr, req.clone()).await {
            Err(Failure::NotSent(Error::ConnectionLost { .. }))
            | Err(Failure::Unknown(Error::ConnectionLost { .. })) => self.ask(addr, req).await,
            r => r,
        }
    }

    /// Sends `req` to some node (the leader last seen first, then in the order given) until
    /// one that is serving answers.
    async fn any_node(&self, req: Bytes) -> Result<Reply> {
        let mut last = Error::Protocol("no nodes configured".into());
        let first = self.pool.leader();
        let order = first
            .iter()
            .chain(self.addrs.iter().filter(|a| Some(*a) != first.as_ref()));
        for addr in order {
            match self.ask_again(addr, req.clone()).await {
                // Not serving (its storage failed): the next node may.
                Ok(Reply::Unavailable(why)) => last = Error::Unavailable { reason: why },
                Ok(r) => return Ok(r),
                Err(Failure::NotSent(e) | Failure::Unknown(e)) => last = e,
            }
        }
        Err(last)
    }

    /// Appends payloads through the leader.
    pub async fn append(&self, payloads: Vec<Bytes>) -> AppendOutcome {
        match self.try_append(payloads).await {
            Ok(o) => AppendOutcome::Ok(o),
            Err(Error::OutcomeUnknown { reason }) => AppendOutcome::Unknown(reason),
            Err(e) => AppendOutcome::Failed(e.to_string()),
        }
    }

    /// [`Client::append`] with a typed error: [`Error::OutcomeUnknown`] when the append was
    /// sent and its fate is unknown; any other error means nothing was appended
    /// ([`Error::NotAllowed`] for a role that may not append).
    pub async fn try_append(&self, payloads: Vec<Bytes>) -> Result<Vec<u64>> {
        let msg = Request::Append(payloads).encode()?;
        let unknown = |reason: String| Error::OutcomeUnknown { reason };
        match self.send_to_leader(msg).await {
            Ok(Reply::Offsets(o)) => Ok(o),
            Ok(Reply::NotAllowed { role, op }) => Err(Error::NotAllowed { role, op }),
            Ok(Reply::Error(e)) => Err(unknown(e)),
            Ok(other) => Err(unknown(format!("unexpected reply {other:?}"))),
            Err(Failure::NotSent(e)) => Err(e),
            Err(Failure::Unknown(e)) => Err(unknown(e.to_string())),
        }
    }

    /// Adds a learner through the leader (returns once the change is committed).
    pub async fn add_learner(&self, id: u64, peer: Peer) -> Result<()> {
        self.admin(Request::AddLearner { id, peer }).await
    }

    /// Replaces the voter set through the leader (placement is checked there).
    pub async fn change_membership(&self, voters: Vec<u64>) -> Result<()> {
        self.admin(Request::ChangeMembership(voters)).await
    }

    /// Swaps voter `dead` for `new` through the leader (placement is checked there).
    pub async fn replace_voter(&self, dead: u64, new: u64) -> Result<()> {
        self.admin(Request::ReplaceVoter { dead, new }).await
    }

    /// A membership request through the leader: the leader's refusal is
    /// [`Error::Remote`]; a request whose answer was lost is [`Error::OutcomeUnknown`].
    async fn admin(&self, req: Request) -> Result<()> {
        match self.send_to_leader(req.encode()?).await {
            Ok(Reply::Done) => Ok(()),
            Ok(Reply::NotAllowed { role, op }) => Err(Error::NotAllowed { role, op }),
            Ok(Reply::Error(message)) => Err(Error::Remote { message }),
            Ok(other) => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
            Err(Failure::NotSent(e)) => Err(e),
            Err(Failure::Unknown(e)) => Err(Error::OutcomeUnknown {
                reason: e.to_string(),
            }),
        }
    }

    /// Sends `req` to the leader, following `NotLeader` answers and moving past nodes that
    /// answer `Unavailable` (a refused request was not applied anywhere, so it is safe to send
    /// again); gives up after `leader_wait_ms` with `NotSent`.
    async fn send_to_leader(&self, req: Bytes) -> Answer {
        let deadline = Instant::now() + Duration::from_millis(self.leader_wait_ms);
        self.send_to_leader_holding(req, None, deadline).await
    }

    /// [`Client::send_to_leader`] until `deadline`, dropping `hold` once the first attempt is
    /// queued on its connection (a producer's seq lock: later attempts are resends, which the
    /// leader orders by waiting out a gap).
    async fn send_to_leader_holding(
        &self,
        req: Bytes,
        mut hold: Option<SeqHold>,
        deadline: Instant,
    ) -> Answer {
        let mut candidates: Vec<String> = self.addrs.to_vec();
        let mut next = 0usize;
        // The leader last seen by this client or a clone: asked first.
        let mut target = self.pool.leader();
        // Nodes that said they are not serving, within this call: a follower may still name
        // one as the leader until it hears of the next election, and following that hint
        // would bounce between the two until then.
        let mut down: Vec<String> = Vec::new();
        let mut last_refusal = String::from("no leader accepted the request in time");
        loop {
            if Instant::now() >= deadline {
                return Err(Failure::NotSent(Error::Unavailable {
                    reason: last_refusal,
                }));
            }
            let addr = match target.take() {
                Some(a) => a,
                None if candidates.is_empty() => {
                    return Err(Failure::NotSent(Error::Protocol(
                        "no nodes configured".into(),
                    )))
                }
                None => {
                    if down.len() >= candidates.len() {
                        // Every node refused once: ask them all again.
                        down.clear();
                    }
                    let a = candidates[next % candidates.len()].clone();
                    next += 1;
                    if down.contains(&a) {
                        continue;
                    }
                    a
                }
            };
            match self.ask_holding(&addr, req.clone(), hold.take()).await {
                Ok(Reply::NotLeader { addr: hint, .. }) => {
                    self.pool.not_leader(&addr);
                    match hint.filter(|a| !down.contains(a)) {
                        Some(a) => {
                            candidates.insert(0, a);
                            next = 0;
                        }
                        None => pause().await,
                    }
                }
                // The role check comes before leadership: any node answers it alike.
                Ok(r @ Reply::NotAllowed { .. }) => return Ok(r),
                Ok(Reply::Unavailable(why)) => {
                    self.pool.not_leader(&addr);
                    down.push(addr);
                    last_refusal = format!("no leader accepted the request in time ({why})");
                }
                Ok(reply) => {
                    self.pool.set_leader(Some(&addr));
                    return Ok(reply);
                }
                // Another cluster's node, or TLS refused: no leader will come from waiting.
                Err(Failure::NotSent(e @ (Error::ClusterMismatch { .. } | Error::Tls { .. }))) => {
                    return Err(Failure::NotSent(e))
                }
                // Out of time while queued: nothing was sent.
                Err(Failure::NotSent(e @ Error::Timeout { .. })) => {
                    return Err(Failure::NotSent(e))
                }
                // Unreachable, or its connection was lost before this was written.
                Err(Failure::NotSent(e)) => {
                    tracing::debug!(%addr, error = %e, "leader candidate not reached");
                    self.pool.not_leader(&addr);
                    pause().await;
                }
                Err(e @ Failure::Unknown(_)) => return Err(e),
            }
        }
    }

    /// Committed records from `offset` (at most `max_records`), and the commit end, from any
    /// node. Below the first offset the node still holds: [`Error::BelowFloor`] naming it.
    pub async fn read(&self, offset: u64, max_records: u32) -> Result<(u64, Vec<WireRecord>)> {
        let req = Request::Read {
            offset,
            max_records,
        };
        match self.any_node(req.encode()?).await? {
            Reply::Records {
                commit_end,
                records,
            } => Ok((commit_end, records)),
            Reply::BelowFloor {
                offset,
                first_available,
            } => Err(Error::BelowFloor {
                offset,
                first_available,
            }),
            Reply::NotAllowed { role, op } => Err(Error::NotAllowed { role, op }),
            Reply::Error(message) => Err(Error::Remote { message }),
            other => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    /// The status of the node at `addr` (on this client's connection to it).
    pub async fn status_of(&self, addr: &str) -> Result<NodeStatus> {
        match self.ask_again(addr, Request::Status.encode()?).await {
            Ok(Reply::Status(s)) => Ok(s),
            Ok(Reply::NotAllowed { role, op }) => Err(Error::NotAllowed { role, op }),
            Ok(other) => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
            Err(Failure::NotSent(e) | Failure::Unknown(e)) => Err(e),
        }
    }
}

async fn pause() {
    tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
}
