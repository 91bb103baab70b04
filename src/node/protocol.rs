//! The client protocol (connection purpose "client"): append, read, status. Messages are
//! opaque to the transport; this module encodes them. All integers little-endian; counts and
//! lengths are checked against what is left before anything is allocated.
//!
//! ```text
//! APPEND      = 0x41, u32 n, n × (u32 len, bytes)        → OFFSETS | NOT_LEADER | ERROR
//! READ        = 0x42, u64 offset, u32 max_records        → RECORDS | ERROR
//!               (committed records only, from offset, at most max_records and 4 MiB)
//! STATUS      = 0x43                                     → STATUS_RESP
//! ADD_LEARNER = 0x44, u64 id, u16 len, site, u16 len, addr → DONE | NOT_LEADER | ERROR
//! MEMBERSHIP  = 0x45, u16 n, n × u64 voter id             → DONE | NOT_LEADER | ERROR
//! REPLACE     = 0x46, u64 dead voter, u64 new voter         → DONE | NOT_LEADER | ERROR
//! OFFSETS     = 0x61, u32 n, n × u64
//! NOT_LEADER  = 0x62, u8 known, u64 leader, u16 len, addr
//! RECORDS     = 0x63, u64 commit_end, u32 n, n × (u64 offset, u64 term, u64 timestamp_us,
//!               u32 len, payload)
//! STATUS_RESP = 0x64, u64 node, u8 role, u64 term, u8 has_leader, u64 leader, u64 commit_end,
//!               u64 log_end, u64 catch_up_done, u64 catch_up_total, u16 n_followers,
//!               n × (u64 id, u64 lag), u16 n_voters, n × u64 voter id, u16 n_learners,
//!               n × u64 learner id   (voters and learners: the node's effective membership)
//! ERROR       = 0x65, u16 len, text
//! DONE        = 0x66
//! UNAVAILABLE = 0x67, u16 len, reason   (the node is not serving: its storage failed and
//!               it is healing, or it gave up; nothing was done, so the request may go to
//!               another node — an append answered so was appended nowhere)
//! BELOW_FLOOR = 0x68, u64 offset, u64 first_available
//! NOT_ALLOWED = 0x69, u8 role (0 produce, 1 consume, 2 admin), u8 operation (0 append,
//!               1 read, 2 subscribe, 3 status, 4 membership, 5 replace-node, 6 snapshot)
//!               (the client certificate's role does not allow the request; nothing was done)
//! REGISTER_PRODUCER = 0x47                          → PRODUCER | NOT_LEADER | ERROR
//! PRODUCE     = 0x48, u64 producer, u64 first_seq, u32 n, n × (u32 len, bytes)
//!                                     → PRODUCED | PRODUCE_REFUSED | NOT_LEADER | ERROR
//! PRODUCER    = 0x6A, u64 producer, u64 idle_expiry_ms, u32 max_producers
//! PRODUCED    = 0x6B, u32 n, n × u64 offset, u32 deduplicated (how many were earlier commits)
//! PRODUCE_REFUSED = 0x6C, u8 why (0 expired, 1 out_of_order, 2 below_window), u64 producer,
//!               u64 expected_seq (out_of_order) / last_seq (below_window) / 0 (expired)
//!               (nothing of the request was appended)
//! ```

use super::status::{FollowerProgress, NodeStatus, Role};
use crate::codec::{DecodeError, DecodeResult, Reader, Writer};
use crate::limits::{MAX_CLIENT_STRING_BYTES, MAX_MEMBERS};
use crate::net::tls::{ClientRole, Operation};
use crate::raft::dedup::ProduceRefusal;
use crate::{Error, Result};
use bytes::Bytes;

/// Message tags of the client protocol.
pub mod tag {
    /// Append request.
    pub const APPEND: u8 = 0x41;
    /// Read request.
    pub const READ: u8 = 0x42;
    /// Status request.
    pub const STATUS: u8 = 0x43;
    /// Add a learner (on the leader).
    pub const ADD_LEARNER: u8 = 0x44;
    /// Replace the voter set (on the leader).
    pub const MEMBERSHIP: u8 = 0x45;
    /// Swap one voter for another (on the leader).
    pub const REPLACE: u8 = 0x46;
    /// Register an idempotent producer (on the leader).
    pub const REGISTER_PRODUCER: u8 = 0x47;
    /// Append through a producer, with sequence numbers (on the leader).
    pub const PRODUCE: u8 = 0x48;
    /// Offsets of an append.
    pub const OFFSETS: u8 = 0x61;
    /// Not the leader.
    pub const NOT_LEADER: u8 = 0x62;
    /// Committed records.
    pub const RECORDS: u8 = 0x63;
    /// A node's status.
    pub const STATUS_RESP: u8 = 0x64;
    /// An error.
    pub const ERROR: u8 = 0x65;
    /// A membership change was committed.
    pub const DONE: u8 = 0x66;
    /// The node is not serving (storage fault); nothing was done.
    pub const UNAVAILABLE: u8 = 0x67;
    /// A read below the first offset still held (deleted by retention).
    pub const BELOW_FLOOR: u8 = 0x68;
    /// The client's role does not allow the request; nothing was done.
    pub const NOT_ALLOWED: u8 = 0x69;
    /// A registered producer.
    pub const PRODUCER: u8 = 0x6A;
    /// The offsets of a produce.
    pub const PRODUCED: u8 = 0x6B;
    /// A produce the producer table refused; nothing was appended.
    pub const PRODUCE_REFUSED: u8 = 0x6C;
}

const ROLES: [ClientRole; 3] = [ClientRole::Produce, ClientRole::Consume, ClientRole::Admin];
const OPERATIONS: [Operation; 7] = [
    Operation::Append,
    Operation::Read,
    Operation::Subscribe,
    Operation::Status,
    Operation::Membership,
    Operation::ReplaceNode,
    Operation::Snapshot,
];

fn code_of<T: PartialEq>(all: &[T], v: &T) -> u8 {
    // Invariant: every value is in its table, and the tables are short.
    all.iter().position(|x| x == v).unwrap_or(0) as u8
}

/// Most payloads in one append request.
pub const MAX_APPEND_PAYLOADS: usize = 4096;
/// Most payload bytes one read reply carries (at least one record is always returned).
pub const MAX_READ_BYTES: usize = 4 << 20;

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Append these payloads.
    Append(Vec<Bytes>),
    /// Read committed records from `offset`, at most `max_records`.
    Read {
        /// First offset.
        offset: u64,
        /// Most records.
        max_records: u32,
    },
    /// The node's status.
    Status,
    /// Add a learner (new node id, its site and address).
    AddLearner {
        /// The new node's id (never a reused one).
        id: u64,
        /// Its site and address.
        peer: crate::node::Peer,
    },
    /// Replace the voter set.
    ChangeMembership(Vec<u64>),
    /// Swap voter `dead` for `new` (a learner that has caught up), keeping the others.
    ReplaceVoter {
        /// The voter to remove.
        dead: u64,
        /// The node to make a voter.
        new: u64,
    },
    /// Register an idempotent producer.
    RegisterProducer,
    /// Append `payloads` as seqs `first_seq..` of `producer`, exactly once.
    Produce {
        /// The producer id (from [`Reply::Producer`]).
        producer: u64,
        /// The seq of the first payload; the others follow it by one.
        first_seq: u64,
        /// The messages.
        payloads: Vec<Bytes>,
    },
}

/// One record of a read reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRecord {
    /// Offset.
    pub offset: u64,
    /// Raft term.
    pub term: u64,
    /// Append time.
    pub timestamp_us: u64,
    /// Payload.
    pub payload: Bytes,
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The offsets of an acknowledged append.
    Offsets(Vec<u64>),
    /// Not the leader; retry there.
    NotLeader {
        /// The leader's id, if known.
        leader: Option<u64>,
        /// Its address, if known.
        addr: Option<String>,
    },
    /// Committed records and the commit end when read.
    Records {
        /// One past the highest committed offset.
        commit_end: u64,
        /// The records.
        records: Vec<WireRecord>,
    },
    /// A node's status (followers' lag only on the leader).
    Status(NodeStatus),
    /// The request failed.
    Error(String),
    /// A membership change was committed.
    Done,
    /// The node is not serving (its storage failed); nothing was done: try another node.
    Unavailable(String),
    /// A read from below the first offset the node still holds (Kafka's `OffsetOutOfRange`):
    /// older records were deleted by retention. Read again from `first_available`.
    BelowFloor {
        /// The offset asked for.
        offset: u64,
        /// The first offset the node holds.
        first_available: u64,
    },
    /// The client certificate's role does not allow the request; nothing was done.
    NotAllowed {
        /// The client's role.
        role: ClientRole,
        /// The refused kind of request.
        op: Operation,
    },
    /// A registered producer and the parameters it was registered with.
    Producer {
        /// Its id.
        producer: u64,
        /// Entry time it may stay idle before it expires.
        idle_expiry_ms: u64,
        /// The producer bound it was registered under.
        max_producers: u32,
    },
    /// The offsets of a produce (committed now or, for a retried seq, before).
    Produced {
        /// One offset per message, in order.
        offsets: Vec<u64>,
        /// How many of them were committed by an earlier attempt (nothing appended now).
        deduplicated: u32,
    },
    /// The producer table refused the produce; nothing of it was appended.
    ProduceRefused {
        /// The producer id.
        producer: u64,
        /// Why.
        why: ProduceRefusal,
    },
}

fn malformed(what: &str, e: DecodeError) -> Error {
    Error::Protocol(format!("malformed {what}: {e}"))
}

/// The smallest encoded record of a read reply: offset, term, timestamp, length.
const MIN_WIRE_RECORD_BYTES: usize = 28;
/// The smallest encoded follower of a status reply: id, lag.
const FOLLOWER_BYTES: usize = 16;

/// Reads `u32 len, bytes` as a zero-copy slice of `whole`, the buffer `c` reads.
fn slice_u32(c: &mut Reader<'_>, whole: &Bytes) -> DecodeResult<Bytes> {
    let len = c.count_u32(u32::MAX as usize, 1)?;
    let at = c.position();
    c.take(len)?;
    Ok(whole.slice(at..at + len))
}

/// Reads `u32 n, n × (u32 len, bytes)`, `n` at most [`MAX_APPEND_PAYLOADS`], as zero-copy
/// slices of `whole`.
fn payloads(c: &mut Reader<'_>, whole: &Bytes) -> DecodeResult<Vec<Bytes>> {
    let n = c.count_u32(MAX_APPEND_PAYLOADS, 4)?;
    let mut ps = Vec::with_capacity(n);
    for _ in 0..n {
        ps.push(slice_u32(c, whole)?);
    }
    Ok(ps)
}

/// The wire code of a refusal and the seq it carries.
fn refusal_code(why: &ProduceRefusal) -> (u8, u64) {
    match *why {
        ProduceRefusal::Expired => (0, 0),
        ProduceRefusal::OutOfOrder { expected_seq } => (1, expected_seq),
        ProduceRefusal::BelowWindow { last_seq } => (2, last_seq),
    }
}

fn refusal_from(code: u8, seq: u64) -> Option<ProduceRefusal> {
    Some(match code {
        0 => ProduceRefusal::Expired,
        1 => ProduceRefusal::OutOfOrder { expected_seq: seq },
        2 => ProduceRefusal::BelowWindow { last_seq: seq },
        _ => return None,
    })
}

impl Request {
    /// Encodes the request. Refuses ([`Error::TooLong`]), never cuts, a string over
    /// [`MAX_CLIENT_STRING_BYTES`], a membership change naming more than [`MAX_MEMBERS`] ids
    /// and an append of more than [`MAX_APPEND_PAYLOADS`] payloads.
    pub fn encode(&self) -> Result<Bytes> {
        let mut o = Vec::new();
        let mut w = Writer::new(&mut o);
        match self {
            Request::Append(ps) => {
                w.u8(tag::APPEND);
                w.len_u32("append payloads", ps.len(), MAX_APPEND_PAYLOADS)?;
                for p in ps {
                    w.bytes_u32("append payload", p, u32::MAX as usize)?;
                }
            }
            Request::Read {
                offset,
                max_records,
            } => {
                w.u8(tag::READ);
                w.u64(*offset);
                w.u32(*max_records);
            }
            Request::Status => w.u8(tag::STATUS),
            Request::AddLearner { id, peer } => {
                w.u8(tag::ADD_LEARNER);
                w.u64(*id);
                w.str_u16("learner site", &peer.site, MAX_CLIENT_STRING_BYTES)?;
                w.str_u16("learner address", &peer.addr, MAX_CLIENT_STRING_BYTES)?;
            }
            Request::ReplaceVoter { dead, new } => {
                w.u8(tag::REPLACE);
                w.u64(*dead);
                w.u64(*new);
            }
            Request::ChangeMembership(ids) => {
                w.u8(tag::MEMBERSHIP);
                w.len_u16("membership change voter ids", ids.len(), MAX_MEMBERS)?;
                ids.iter().for_each(|&i| w.u64(i));
            }
            Request::RegisterProducer => w.u8(tag::REGISTER_PRODUCER),
            Request::Produce {
                producer,
                first_seq,
                payloads,
            } => {
                w.u8(tag::PRODUCE);
                w.u64(*producer);
                w.u64(*first_seq);
                w.len_u32("produce payloads", payloads.len(), MAX_APPEND_PAYLOADS)?;
                for p in payloads {
                    w.bytes_u32("produce payload", p, u32::MAX as usize)?;
                }
            }
        }
        Ok(o.into())
    }

    /// Decodes a request (payloads are zero-copy slices of `buf`).
    pub fn decode(buf: &Bytes) -> Result<Request> {
        Self::decode_from(buf).map_err(|e| malformed("client request", e))
    }

    fn decode_from(buf: &Bytes) -> DecodeResult<Request> {
        let mut c = Reader::new(buf, "client request");
        let r = match c.u8()? {
            tag::APPEND => Request::Append(payloads(&mut c, buf)?),
            tag::REGISTER_PRODUCER => Request::RegisterProducer,
            tag::PRODUCE => Request::Produce {
                producer: c.u64()?,
                first_seq: c.u64()?,
                payloads: payloads(&mut c, buf)?,
            },
            tag::READ => Request::Read {
                offset: c.u64()?,
                max_records: c.u32()?,
            },
            tag::STATUS => Request::Status,
            tag::ADD_LEARNER => {
                let id = c.u64()?;
                let site = c.str_u16(MAX_CLIENT_STRING_BYTES)?;
                let addr = c.str_u16(MAX_CLIENT_STRING_BYTES)?;
                Request::AddLearner {
                    id,
                    peer: crate::node::Peer { site, addr },
                }
            }
            tag::REPLACE => Request::ReplaceVoter {
                dead: c.u64()?,
                new: c.u64()?,
            },
            tag::MEMBERSHIP => {
                let n = c.count_u16(MAX_MEMBERS, 8)?;
                let ids = (0..n).map(|_| c.u64()).collect::<DecodeResult<Vec<_>>>()?;
                Request::ChangeMembership(ids)
            }
            _ => return Err(c.invalid()),
        };
        c.finish(r)
    }
}

fn role_code(r: Role) -> u8 {
    match r {
        Role::Leader => 0,
        Role::Follower => 1,
        Role::Candidate => 2,
        Role::Learner => 3,
        Role::Shutdown => 4,
    }
}

fn role_from(b: u8) -> Option<Role> {
    Some(match b {
        0 => Role::Leader,
        1 => Role::Follower,
        2 => Role::Candidate,
        3 => Role::Learner,
        4 => Role::Shutdown,
        _ => return None,
    })
}

impl Reply {
    /// Encodes the reply. Refuses ([`Error::TooLong`]), never cuts, a text over
    /// [`MAX_CLIENT_STRING_BYTES`] and a status with more than [`MAX_MEMBERS`] followers.
    pub fn encode(&self) -> Result<Bytes> {
        let mut o = Vec::new();
        let mut w = Writer::new(&mut o);
        match self {
            Reply::Offsets(offs) => {
                w.u8(tag::OFFSETS);
                w.len_u32("offsets", offs.len(), u32::MAX as usize)?;
                offs.iter().for_each(|&x| w.u64(x));
            }
            Reply::NotLeader { leader, addr } => {
                w.u8(tag::NOT_LEADER);
                w.bool(leader.is_some());
                w.u64(leader.unwrap_or(0));
                let addr = addr.as_deref().unwrap_or("");
                w.str_u16("leader address", addr, MAX_CLIENT_STRING_BYTES)?;
            }
            Reply::Records {
                commit_end,
                records,
            } => {
                w.u8(tag::RECORDS);
                w.u64(*commit_end);
                w.len_u32("records", records.len(), u32::MAX as usize)?;
                for r in records {
                    w.u64(r.offset);
                    w.u64(r.term);
                    w.u64(r.timestamp_us);
                    w.bytes_u32("record payload", &r.payload, u32::MAX as usize)?;
                }
            }
            Reply::Status(s) => encode_status(&mut w, s)?,
            Reply::Error(e) => {
                w.u8(tag::ERROR);
                w.str_u16("error text", e, MAX_CLIENT_STRING_BYTES)?;
            }
            Reply::Done => w.u8(tag::DONE),
            Reply::Unavailable(why) => {
                w.u8(tag::UNAVAILABLE);
                w.str_u16("unavailable reason", why, MAX_CLIENT_STRING_BYTES)?;
            }
            Reply::BelowFloor {
                offset,
                first_available,
            } => {
                w.u8(tag::BELOW_FLOOR);
                w.u64(*offset);
                w.u64(*first_available);
            }
            Reply::NotAllowed { role, op } => {
                w.u8(tag::NOT_ALLOWED);
                w.u8(code_of(&ROLES, role));
                w.u8(code_of(&OPERATIONS, op));
            }
            Reply::Producer {
                producer,
                idle_expiry_ms,
                max_producers,
            } => {
                w.u8(tag::PRODUCER);
                w.u64(*producer);
                w.u64(*idle_expiry_ms);
                w.u32(*max_producers);
            }
            Reply::Produced {
                offsets,
                deduplicated,
            } => {
                w.u8(tag::PRODUCED);
                w.len_u32("produced offsets", offsets.len(), MAX_APPEND_PAYLOADS)?;
                offsets.iter().for_each(|&x| w.u64(x));
                w.u32(*deduplicated);
            }
            Reply::ProduceRefused { producer, why } => {
                let (code, seq) = refusal_code(why);
                w.u8(tag::PRODUCE_REFUSED);
                w.u8(code);
                w.u64(*producer);
                w.u64(seq);
            }
        }
        Ok(o.into())
    }

    /// Decodes a reply (payloads are zero-copy slices of `buf`).
    pub fn decode(buf: &Bytes) -> Result<Reply> {
        Self::decode_from(buf).map_err(|e| malformed("client reply", e))
    }

    fn decode_from(buf: &Bytes) -> DecodeResult<Reply> {
        let mut c = Reader::new(buf, "client reply");
        let r = match c.u8()? {
            tag::OFFSETS => {
                let n = c.count_u32(u32::MAX as usize, 8)?;
                let offs = (0..n).map(|_| c.u64()).collect::<DecodeResult<Vec<_>>>()?;
                Reply::Offsets(offs)
            }
            tag::NOT_LEADER => {
                let known = c.u8()? == 1;
                let leader = c.u64()?;
                let addr = c.str_u16(MAX_CLIENT_STRING_BYTES)?;
                Reply::NotLeader {
                    leader: known.then_some(leader),
                    addr: (!addr.is_empty()).then_some(addr),
                }
            }
            tag::RECORDS => {
                let commit_end = c.u64()?;
                let n = c.count_u32(u32::MAX as usize, MIN_WIRE_RECORD_BYTES)?;
                let mut records = Vec::with_capacity(n);
                for _ in 0..n {
                    let (offset, term, timestamp_us) = (c.u64()?, c.u64()?, c.u64()?);
                    let payload = slice_u32(&mut c, buf)?;
                    records.push(WireRecord {
                        offset,
                        term,
                        timestamp_us,
                        payload,
                    });
                }
                Reply::Records {
                    commit_end,
                    records,
                }
            }
            tag::STATUS_RESP => Reply::Status(decode_status(&mut c)?),
            tag::ERROR => Reply::Error(c.str_u16(MAX_CLIENT_STRING_BYTES)?),
            tag::DONE => Reply::Done,
            tag::UNAVAILABLE => Reply::Unavailable(c.str_u16(MAX_CLIENT_STRING_BYTES)?),
            tag::BELOW_FLOOR => Reply::BelowFloor {
                offset: c.u64()?,
                first_available: c.u64()?,
            },
            tag::NOT_ALLOWED => {
                let role = ROLES.get(usize::from(c.u8()?)).copied();
                let op = OPERATIONS.get(usize::from(c.u8()?)).copied();
                match (role, op) {
                    (Some(role), Some(op)) => Reply::NotAllowed { role, op },
                    _ => return Err(c.invalid()),
                }
            }
            tag::PRODUCER => Reply::Producer {
                producer: c.u64()?,
                idle_expiry_ms: c.u64()?,
                max_producers: c.u32()?,
            },
            tag::PRODUCED => {
                let n = c.count_u32(MAX_APPEND_PAYLOADS, 8)?;
                let offsets = (0..n).map(|_| c.u64()).collect::<DecodeResult<Vec<_>>>()?;
                let deduplicated = c.u32()?;
                if deduplicated as usize > n {
                    return Err(c.invalid());
                }
                Reply::Produced {
                    offsets,
                    deduplicated,
                }
            }
            tag::PRODUCE_REFUSED => {
                let code = c.u8()?;
                let producer = c.u64()?;
                let seq = c.u64()?;
                let why = refusal_from(code, seq).ok_or_else(|| c.invalid())?;
                Reply::ProduceRefused { producer, why }
            }
            _ => return Err(c.invalid()),
        };
        c.finish(r)
    }
}

fn encode_status(w: &mut Writer<'_>, s: &NodeStatus) -> Result<()> {
    w.u8(tag::STATUS_RESP);
    w.u64(s.node_id);
    w.u8(role_code(s.role));
    w.u64(s.term);
    w.bool(s.leader.is_some());
    w.u64(s.leader.unwrap_or(0));
    w.u64(s.commit_end);
    w.u64(s.log_end);
    w.u64(s.catch_up_bytes.0);
    w.u64(s.catch_up_bytes.1);
    w.len_u16("status followers", s.followers.len(), MAX_MEMBERS)?;
    for f in &s.followers {
        w.u64(f.node_id);
        w.u64(f.lag_entries);
    }
    for (what, ids) in [
        ("status voters", &s.voters),
        ("status learners", &s.learners),
    ] {
        w.len_u16(what, ids.len(), MAX_MEMBERS)?;
        for id in ids {
            w.u64(*id);
        }
    }
    Ok(())
}

fn decode_status(c: &mut Reader<'_>) -> DecodeResult<NodeStatus> {
    let node_id = c.u64()?;
    let role = role_from(c.u8()?).ok_or_else(|| c.invalid())?;
    let term = c.u64()?;
    let has_leader = c.u8()? == 1;
    let leader = c.u64()?;
    let commit_end = c.u64()?;
    let log_end = c.u64()?;
    let catch_up_bytes = (c.u64()?, c.u64()?);
    let n = c.count_u16(MAX_MEMBERS, FOLLOWER_BYTES)?;
    let mut followers = Vec::with_capacity(n);
    for _ in 0..n {
        let node_id = c.u64()?;
        let lag_entries = c.u64()?;
        followers.push(FollowerProgress {
            node_id,
            matched_end: None,
            lag_entries,
        });
    }
    let voters = decode_ids(c)?;
    let learners = decode_ids(c)?;
    Ok(NodeStatus {
        node_id,
        role,
        term,
        leader: has_leader.then_some(leader),
        commit_end,
        log_end,
        voters,
        learners,
        followers,
        catch_up_bytes,
    })
}

/// A u16 count of node ids, then the ids.
fn decode_ids(c: &mut Reader<'_>) -> DecodeResult<Vec<u64>> {
    let n = c.count_u16(MAX_MEMBERS, 8)?;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(c.u64()?);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_and_prefixes_fail() {
        let reqs = [
            Request::Append(vec![Bytes::from_static(b"a"), Bytes::new()]),
            Request::Read {
                offset: 7,
                max_records: 100,
            },
            Request::Status,
            Request::AddLearner {
                id: 4,
                peer: crate::node::Peer {
                    site: "d".into(),
                    addr: "127.0.0.1:4".into(),
                },
            },
            Request::ChangeMembership(vec![2, 3, 4]),
            Request::ReplaceVoter { dead: 1, new: 4 },
            Request::RegisterProducer,
            Request::Produce {
                producer: 9,
                first_seq: 3,
                payloads: vec![Bytes::from_static(b"m"), Bytes::from_static(b"no")],
            },
        ];
        for r in reqs {
            let enc = r.encode().unwrap();
            assert_eq!(Request::decode(&enc).unwrap(), r);
            for n in 0..enc.len() {
                assert!(Request::decode(&enc.slice(..n)).is_err());
            }
        }
        let replies = [
            Reply::Offsets(vec![1, 2, 3]),
            Reply::NotLeader {
                leader: Some(2),
                addr: Some("127.0.0.1:9".into()),
            },
            Reply::NotLeader {
                leader: None,
                addr: None,
            },
            Reply::Records {
                commit_end: 10,
                records: vec![WireRecord {
                    offset: 9,
                    term: 2,
                    timestamp_us: 5,
                    payload: Bytes::from_static(b"x"),
                }],
            },
            Reply::Error("boom".into()),
            Reply::BelowFloor {
                offset: 3,
                first_available: 4096,
            },
            Reply::Done,
            Reply::Unavailable("disk full".into()),
            Reply::Producer {
                producer: 17,
                idle_expiry_ms: 900_000,
                max_producers: 4096,
            },
            Reply::Produced {
                offsets: vec![5, 6],
                deduplicated: 1,
            },
            Reply::ProduceRefused {
                producer: 17,
                why: ProduceRefusal::Expired,
            },
            Reply::ProduceRefused {
                producer: 17,
                why: ProduceRefusal::OutOfOrder { expected_seq: 4 },
            },
            Reply::ProduceRefused {
                producer: 17,
                why: ProduceRefusal::BelowWindow { last_seq: 99 },
            },
            Reply::NotAllowed {
                role: ClientRole::Consume,
                op: Operation::Append,
            },
            Reply::NotAllowed {
                role: ClientRole::Produce,
                op: Operation::Snapshot,
            },
            Reply::Status(NodeStatus {
                node_id: 2,
                role: Role::Leader,
                term: 7,
                leader: Some(2),
                commit_end: 100,
                log_end: 101,
                voters: vec![1, 2, 4],
                learners: vec![5],
                followers: vec![FollowerProgress {
                    node_id: 4,
                    matched_end: None,
                    lag_entries: 3,
                }],
                catch_up_bytes: (10, 20),
            }),
            Reply::Status(NodeStatus {
                node_id: 3,
                role: Role::Follower,
                term: 1,
                leader: None,
                commit_end: 0,
                log_end: 0,
                voters: Vec::new(),
                learners: Vec::new(),
                followers: Vec::new(),
                catch_up_bytes: (0, 0),
            }),
        ];
        for r in replies {
            let enc = r.encode().unwrap();
            assert_eq!(Reply::decode(&enc).unwrap(), r);
            for n in 0..enc.len() {
                assert!(Reply::decode(&enc.slice(..n)).is_err());
            }
        }
    }

    #[test]
    fn a_membership_change_with_too_many_ids_is_refused_not_cut() {
        let ids: Vec<u64> = (0..=MAX_MEMBERS as u64).collect();
        let err = Request::ChangeMembership(ids).encode().unwrap_err();
        assert!(
            matches!(err, Error::TooLong { len, max, .. } if len == MAX_MEMBERS + 1 && max == MAX_MEMBERS),
            "{err:?}"
        );
        // The limit itself still travels whole.
        let ids: Vec<u64> = (0..MAX_MEMBERS as u64).collect();
        let enc = Request::ChangeMembership(ids.clone()).encode().unwrap();
        assert_eq!(
            Request::decode(&enc).unwrap(),
            Request::ChangeMembership(ids)
        );
    }

    #[test]
    fn over_long_strings_are_refused_not_cut() {
        let long = "x".repeat(MAX_CLIENT_STRING_BYTES + 1);
        let req = Request::AddLearner {
            id: 4,
            peer: crate::node::Peer {
                site: "d".into(),
                addr: long.clone(),
            },
        };
        assert!(matches!(req.encode(), Err(Error::TooLong { .. })));
        assert!(matches!(
            Reply::Error(long.clone()).encode(),
            Err(Error::TooLong { .. })
        ));
        assert!(matches!(
            Reply::Unavailable(long).encode(),
            Err(Error::TooLong { .. })
        ));
    }

    #[test]
    fn the_encoding_is_unchanged() {
        // Bytes as the FORMAT section of the README documents them (and older peers wrote).
        let enc = Request::AddLearner {
            id: 0x0102,
            peer: crate::node::Peer {
                site: "ab".into(),
                addr: "c".into(),
            },
        }
        .encode()
        .unwrap();
        let want: &[u8] = &[0x44, 2, 1, 0, 0, 0, 0, 0, 0, 2, 0, b'a', b'b', 1, 0, b'c'];
        assert_eq!(&enc[..], want);
        let enc = Request::ChangeMembership(vec![7]).encode().unwrap();
        assert_eq!(&enc[..], &[0x45, 1, 0, 7, 0, 0, 0, 0, 0, 0, 0]);
        // Plain appends keep their encoding beside the producer tags.
        let enc = Request::Append(vec![Bytes::from_static(b"z")]).encode().unwrap();
        assert_eq!(&enc[..], &[0x41, 1, 0, 0, 0, 1, 0, 0, 0, b'z']);
    }

    #[test]
    fn the_producer_encoding_is_unchanged() {
        // Bytes as the module docs (issue 17 design §1) spell them.
        assert_eq!(&Request::RegisterProducer.encode().unwrap()[..], &[0x47]);
        let enc = Request::Produce {
            producer: 2,
            first_seq: 0x0103,
            payloads: vec![Bytes::from_static(b"ab")],
        }
        .encode()
        .unwrap();
        let want: &[u8] = &[
            0x48, 2, 0, 0, 0, 0, 0, 0, 0, 3, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a',
            b'b',
        ];
        assert_eq!(&enc[..], want);
        let enc = Reply::Producer {
            producer: 5,
            idle_expiry_ms: 0x0200,
            max_producers: 3,
        }
        .encode()
        .unwrap();
        let want: &[u8] = &[
            0x6A, 5, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0,
        ];
        assert_eq!(&enc[..], want);
        let enc = Reply::Produced {
            offsets: vec![7],
            deduplicated: 1,
        }
        .encode()
        .unwrap();
        assert_eq!(&enc[..], &[0x6B, 1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        let enc = Reply::ProduceRefused {
            producer: 4,
            why: ProduceRefusal::OutOfOrder { expected_seq: 6 },
        }
        .encode()
        .unwrap();
        let want: &[u8] = &[0x6C, 1, 4, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(&enc[..], want);
    }

    #[test]
    fn bad_producer_replies_are_refused() {
        // An unknown refusal code, and more deduplicated than offsets.
        let bad: &[&[u8]] = &[
            &[0x6C, 3, 4, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0],
            &[0x6B, 1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0],
        ];
        for b in bad {
            assert!(Reply::decode(&Bytes::copy_from_slice(b)).is_err(), "{b:?}");
        }
        let mut b = vec![tag::PRODUCE];
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Request::decode(&Bytes::from(b)).is_err());
    }

    #[test]
    fn huge_counts_are_refused() {
        let mut b = vec![tag::APPEND];
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Request::decode(&Bytes::from(b)).is_err());
    }
}
