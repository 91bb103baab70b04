//! A client of a sitelog cluster over TCP: appends go to the leader (found by asking and by
//! following `NotLeader` answers), reads and status go to any node.
//!
//! An append that fails after it was sent (connection lost, timeout) is *unknown*, not
//! failed: it may have been committed. The client never retries such an append by itself
//! (that could store it twice); it returns [`AppendOutcome::Unknown`] and the caller decides.

use super::protocol::{Reply, Request, WireRecord};
use super::status::NodeStatus;
use super::Peer;
use crate::net::tcp::{connect_client, FrameRx, FrameTx, NetLimits};
use crate::raft::remote::{MessageRx, MessageTx};
use crate::{Error, Result};
use bytes::Bytes;
use std::time::Duration;

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

/// A client connection to a cluster.
#[derive(Debug)]
pub struct Client {
    addrs: Vec<String>,
    cluster_id: u64,
    limits: NetLimits,
    /// The connection to the node believed to lead.
    conn: Option<(String, FrameTx, FrameRx)>,
    /// How long one request may take.
    pub request_timeout_ms: u64,
    /// How long an append may search for a leader before failing.
    pub leader_wait_ms: u64,
}

impl Client {
    /// A client for the cluster whose nodes listen on `addrs`.
    pub fn new(addrs: Vec<String>, cluster_id: u64) -> Client {
        Client {
            addrs,
            cluster_id,
            limits: NetLimits::default(),
            conn: None,
            request_timeout_ms: 5000,
            leader_wait_ms: 10_000,
        }
    }

    /// The node addresses this client was given.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The cluster id this client connects with.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// A client of the same nodes with the same settings and no connection yet.
    pub(crate) fn sibling(&self) -> Client {
        Client {
            addrs: self.addrs.clone(),
            cluster_id: self.cluster_id,
            limits: self.limits,
            conn: None,
            request_timeout_ms: self.request_timeout_ms,
            leader_wait_ms: self.leader_wait_ms,
        }
    }

    /// Forgets the cached connection if the node closed it meanwhile (its idle timeout).
    fn drop_stale_conn(&mut self) {
        if let Some((_, _, rx)) = self.conn.as_mut() {
            if rx.closed_while_idle() {
                self.conn = None;
            }
        }
    }

    async fn connect(&mut self, addr: &str) -> Result<()> {
        let (tx, rx, _) = connect_client(addr, self.cluster_id, self.limits).await?;
        self.conn = Some((addr.to_string(), tx, rx));
        Ok(())
    }

    /// One request on the current connection; `Err` means the fate is unknown.
    async fn round_trip(&mut self, req: Bytes) -> Result<Reply> {
        let Some((_, tx, rx)) = self.conn.as_mut() else {
            return Err(Error::Protocol("not connected".into()));
        };
        let t = Duration::from_millis(self.request_timeout_ms);
        let r = tokio::time::timeout(t, async {
            tx.send(req).await?;
            rx.recv().await
        })
        .await;
        match r {
            Ok(Ok(bytes)) => Reply::decode(&bytes),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(Error::Timeout { offset: 0 })
            }
        }
    }

    /// Sends `req` to some node (the current connection, else the first that answers).
    async fn any_node(&mut self, req: Bytes) -> Result<Reply> {
        self.drop_stale_conn();
        if self.conn.is_some() {
            match self.round_trip(req.clone()).await {
                Ok(Reply::Unavailable(_)) => self.conn = None,
                Ok(r) => return Ok(r),
                Err(_) => {}
            }
        }
        let mut last = Error::Protocol("no nodes configured".into());
        for addr in self.addrs.clone() {
            if let Err(e) = self.connect(&addr).await {
                last = e;
                continue;
            }
            match self.round_trip(req.clone()).await {
                // Not serving (its storage failed): the next node may.
                Ok(Reply::Unavailable(why)) => {
                    self.conn = None;
                    last = Error::Unavailable { reason: why };
                }
                Ok(r) => return Ok(r),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Appends payloads through the leader.
    pub async fn append(&mut self, payloads: Vec<Bytes>) -> AppendOutcome {
        let msg = match Request::Append(payloads).encode() {
            Ok(msg) => msg,
            Err(e) => return AppendOutcome::Failed(e.to_string()),
        };
        match self.send_to_leader(msg).await {
            AppendOutcome::Ok(Reply::Offsets(o)) => AppendOutcome::Ok(o),
            AppendOutcome::Ok(Reply::Error(e)) => AppendOutcome::Unknown(e),
            AppendOutcome::Ok(other) => {
                AppendOutcome::Unknown(format!("unexpected reply {other:?}"))
            }
            AppendOutcome::Failed(e) => AppendOutcome::Failed(e),
            AppendOutcome::Unknown(e) => AppendOutcome::Unknown(e),
        }
    }

    /// Adds a learner through the leader (returns once the change is committed).
    pub async fn add_learner(&mut self, id: u64, peer: Peer) -> Result<()> {
        self.admin(Request::AddLearner { id, peer }).await
    }

    /// Replaces the voter set through the leader (placement is checked there).
    pub async fn change_membership(&mut self, voters: Vec<u64>) -> Result<()> {
        self.admin(Request::ChangeMembership(voters)).await
    }

    /// Swaps voter `dead` for `new` through the leader (placement is checked there).
    pub async fn replace_voter(&mut self, dead: u64, new: u64) -> Result<()> {
        self.admin(Request::ReplaceVoter { dead, new }).await
    }

    async fn admin(&mut self, req: Request) -> Result<()> {
        match self.send_to_leader(req.encode()?).await {
            AppendOutcome::Ok(Reply::Done) => Ok(()),
            AppendOutcome::Ok(Reply::Error(e)) => Err(Error::Raft(e)),
            AppendOutcome::Ok(other) => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
            AppendOutcome::Failed(e) | AppendOutcome::Unknown(e) => Err(Error::Raft(e)),
        }
    }

    /// Sends `req` to the leader, following `NotLeader` answers and moving past nodes that
    /// answer `Unavailable` (a refused request was not applied anywhere, so it is safe to send
    /// again); gives up after `leader_wait_ms`.
    async fn send_to_leader(&mut self, req: Bytes) -> AppendOutcome<Reply> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.leader_wait_ms);
        let mut candidates = self.addrs.clone();
        let mut next = 0usize;
        // Nodes that said they are not serving, within this call: a follower may still name
        // one as the leader until it hears of the next election, and following that hint
        // would bounce between the two until then.
        let mut down: Vec<String> = Vec::new();
        let mut last_refusal = String::from("no leader accepted the request in time");
        loop {
            if tokio::time::Instant::now() >= deadline {
                return AppendOutcome::Failed(last_refusal);
            }
            self.drop_stale_conn();
            if self.conn.is_none() {
                if down.len() >= self.addrs.len() {
                    // Every node refused once: ask them all again.
                    down.clear();
                }
                let addr = candidates[next % candidates.len()].clone();
                next += 1;
                if down.contains(&addr) {
                    continue;
                }
                match self.connect(&addr).await {
                    Ok(()) => {}
                    // Another cluster's node: no leader will ever come from waiting.
                    Err(e @ Error::ClusterMismatch { .. }) => {
                        return AppendOutcome::Failed(e.to_string())
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
            }
            match self.round_trip(req.clone()).await {
                Ok(Reply::NotLeader { addr, .. }) => {
                    self.conn = None;
                    match addr.filter(|a| !down.contains(a)) {
                        Some(a) => {
                            candidates.insert(0, a);
                            next = 0;
                        }
                        None => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                Ok(Reply::Unavailable(why)) => {
                    if let Some((addr, _, _)) = self.conn.take() {
                        down.push(addr);
                    }
                    last_refusal = format!("no leader accepted the request in time ({why})");
                }
                Ok(reply) => return AppendOutcome::Ok(reply),
                Err(e) => return AppendOutcome::Unknown(e.to_string()),
            }
        }
    }

    /// Committed records from `offset` (at most `max_records`), and the commit end, from any
    /// node. Below the first offset the node still holds: [`Error::BelowFloor`] naming it.
    pub async fn read(&mut self, offset: u64, max_records: u32) -> Result<(u64, Vec<WireRecord>)> {
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
            Reply::Error(e) => Err(Error::Protocol(e)),
            other => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    /// The status of the node at `addr`.
    pub async fn status_of(&mut self, addr: &str) -> Result<NodeStatus> {
        self.connect(addr).await?;
        match self.round_trip(Request::Status.encode()?).await? {
            Reply::Status(s) => Ok(s),
            other => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
        }
    }
}
