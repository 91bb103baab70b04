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
//!               n × (u64 id, u64 lag)
//! ERROR       = 0x65, u16 len, text
//! DONE        = 0x66
//! UNAVAILABLE = 0x67, u16 len, reason   (the node is not serving: its storage failed and
//!               it is healing, or it gave up; nothing was done, so the request may go to
//!               another node — an append answered so was appended nowhere)
//! ```

use crate::raft::entry::Cursor;
use crate::raft::replica::{FollowerProgress, ReplicaStatus, Role};
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
    Status(ReplicaStatus),
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
}

fn put_u64(o: &mut Vec<u8>, v: u64) {
    o.extend_from_slice(&v.to_le_bytes());
}
fn put_u32(o: &mut Vec<u8>, v: u32) {
    o.extend_from_slice(&v.to_le_bytes());
}
fn put_str(o: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    o.extend_from_slice(&(b.len() as u16).to_le_bytes());
    o.extend_from_slice(b);
}

impl Cursor<'_> {
    fn u32_le(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn str16(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        Some(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
}

fn malformed(what: &str) -> Error {
    Error::Protocol(format!("malformed {what}"))
}

impl Request {
    /// Encodes the request.
    pub fn encode(&self) -> Bytes {
        let mut o = Vec::new();
        match self {
            Request::Append(ps) => {
                o.push(tag::APPEND);
                put_u32(&mut o, ps.len() as u32);
                for p in ps {
                    put_u32(&mut o, p.len() as u32);
                    o.extend_from_slice(p);
                }
            }
            Request::Read {
                offset,
                max_records,
            } => {
                o.push(tag::READ);
                put_u64(&mut o, *offset);
                put_u32(&mut o, *max_records);
            }
            Request::Status => o.push(tag::STATUS),
            Request::AddLearner { id, peer } => {
                o.push(tag::ADD_LEARNER);
                put_u64(&mut o, *id);
                put_str(&mut o, &peer.site);
                put_str(&mut o, &peer.addr);
            }
            Request::ReplaceVoter { dead, new } => {
                o.push(tag::REPLACE);
                put_u64(&mut o, *dead);
                put_u64(&mut o, *new);
            }
            Request::ChangeMembership(ids) => {
                o.push(tag::MEMBERSHIP);
                o.extend_from_slice(&(ids.len().min(1024) as u16).to_le_bytes());
                ids.iter().take(1024).for_each(|&i| put_u64(&mut o, i));
            }
        }
        o.into()
    }

    /// Decodes a request (payloads are zero-copy slices of `buf`).
    pub fn decode(buf: &Bytes) -> Result<Request> {
        let mut c = Cursor { buf };
        let r = match c.u8() {
            Some(tag::APPEND) => (|| {
                let n = c.u32_le()? as usize;
                if n > MAX_APPEND_PAYLOADS || n > c.buf.len() / 4 {
                    return None;
                }
                let mut ps = Vec::with_capacity(n);
                for _ in 0..n {
                    let len = c.u32_le()? as usize;
                    let at = buf.len() - c.buf.len();
                    c.take(len)?;
                    ps.push(buf.slice(at..at + len));
                }
                Some(Request::Append(ps))
            })(),
            Some(tag::READ) => (|| {
                let offset = c.u64()?;
                let max_records = c.u32_le()?;
                Some(Request::Read {
                    offset,
                    max_records,
                })
            })(),
            Some(tag::STATUS) => Some(Request::Status),
            Some(tag::ADD_LEARNER) => (|| {
                let id = c.u64()?;
                let site = c.str16()?;
                let addr = c.str16()?;
                Some(Request::AddLearner {
                    id,
                    peer: crate::node::Peer { site, addr },
                })
            })(),
            Some(tag::REPLACE) => (|| {
                let dead = c.u64()?;
                let new = c.u64()?;
                Some(Request::ReplaceVoter { dead, new })
            })(),
            Some(tag::MEMBERSHIP) => (|| {
                let n = c.u16()? as usize;
                if n > 1024 {
                    return None;
                }
                (0..n)
                    .map(|_| c.u64())
                    .collect::<Option<Vec<_>>>()
                    .map(Request::ChangeMembership)
            })(),
            _ => None,
        };
        match r {
            Some(r) if c.buf.is_empty() => Ok(r),
            _ => Err(malformed("client request")),
        }
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
    /// Encodes the reply.
    pub fn encode(&self) -> Bytes {
        let mut o = Vec::new();
        match self {
            Reply::Offsets(offs) => {
                o.push(tag::OFFSETS);
                put_u32(&mut o, offs.len() as u32);
                offs.iter().for_each(|&x| put_u64(&mut o, x));
            }
            Reply::NotLeader { leader, addr } => {
                o.push(tag::NOT_LEADER);
                o.push(leader.is_some() as u8);
                put_u64(&mut o, leader.unwrap_or(0));
                put_str(&mut o, addr.as_deref().unwrap_or(""));
            }
            Reply::Records {
                commit_end,
                records,
            } => {
                o.push(tag::RECORDS);
                put_u64(&mut o, *commit_end);
                put_u32(&mut o, records.len() as u32);
                for r in records {
                    put_u64(&mut o, r.offset);
                    put_u64(&mut o, r.term);
                    put_u64(&mut o, r.timestamp_us);
                    put_u32(&mut o, r.payload.len() as u32);
                    o.extend_from_slice(&r.payload);
                }
            }
            Reply::Status(s) => {
                o.push(tag::STATUS_RESP);
                put_u64(&mut o, s.node_id);
                o.push(role_code(s.role));
                put_u64(&mut o, s.term);
                o.push(s.leader.is_some() as u8);
                put_u64(&mut o, s.leader.unwrap_or(0));
                put_u64(&mut o, s.commit_end);
                put_u64(&mut o, s.log_end);
                put_u64(&mut o, s.catch_up_bytes.0);
                put_u64(&mut o, s.catch_up_bytes.1);
                o.extend_from_slice(&(s.followers.len().min(1024) as u16).to_le_bytes());
                for f in s.followers.iter().take(1024) {
                    put_u64(&mut o, f.node_id);
                    put_u64(&mut o, f.lag_entries);
                }
            }
            Reply::Error(e) => {
                o.push(tag::ERROR);
                put_str(&mut o, e);
            }
            Reply::Done => o.push(tag::DONE),
            Reply::Unavailable(why) => {
                o.push(tag::UNAVAILABLE);
                put_str(&mut o, why);
            }
            Reply::BelowFloor {
                offset,
                first_available,
            } => {
                o.push(tag::BELOW_FLOOR);
                put_u64(&mut o, *offset);
                put_u64(&mut o, *first_available);
            }
        }
        o.into()
    }

    /// Decodes a reply (payloads are zero-copy slices of `buf`).
    pub fn decode(buf: &Bytes) -> Result<Reply> {
        let mut c = Cursor { buf };
        let r = match c.u8() {
            Some(tag::OFFSETS) => (|| {
                let n = c.u32_le()? as usize;
                if n > c.buf.len() / 8 {
                    return None;
                }
                (0..n)
                    .map(|_| c.u64())
                    .collect::<Option<Vec<_>>>()
                    .map(Reply::Offsets)
            })(),
            Some(tag::NOT_LEADER) => (|| {
                let known = c.u8()? == 1;
                let leader = c.u64()?;
                let addr = c.str16()?;
                Some(Reply::NotLeader {
                    leader: known.then_some(leader),
                    addr: (!addr.is_empty()).then_some(addr),
                })
            })(),
            Some(tag::RECORDS) => (|| {
                let commit_end = c.u64()?;
                let n = c.u32_le()? as usize;
                if n > c.buf.len() / 28 {
                    return None;
                }
                let mut records = Vec::with_capacity(n);
                for _ in 0..n {
                    let (offset, term, timestamp_us) = (c.u64()?, c.u64()?, c.u64()?);
                    let len = c.u32_le()? as usize;
                    let at = buf.len() - c.buf.len();
                    c.take(len)?;
                    let payload = buf.slice(at..at + len);
                    records.push(WireRecord {
                        offset,
                        term,
                        timestamp_us,
                        payload,
                    });
                }
                Some(Reply::Records {
                    commit_end,
                    records,
                })
            })(),
            Some(tag::STATUS_RESP) => (|| {
                let node_id = c.u64()?;
                let role = role_from(c.u8()?)?;
                let term = c.u64()?;
                let has_leader = c.u8()? == 1;
                let leader = c.u64()?;
                let commit_end = c.u64()?;
                let log_end = c.u64()?;
                let catch_up_bytes = (c.u64()?, c.u64()?);
                let n = c.u16()? as usize;
                let mut followers = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let node_id = c.u64()?;
                    let lag_entries = c.u64()?;
                    followers.push(FollowerProgress {
                        node_id,
                        matched_end: None,
                        lag_entries,
                    });
                }
                Some(Reply::Status(ReplicaStatus {
                    node_id,
                    role,
                    term,
                    leader: has_leader.then_some(leader),
                    commit_end,
                    log_end,
                    voters: Vec::new(),
                    learners: Vec::new(),
                    followers,
                    catch_up_bytes,
                }))
            })(),
            Some(tag::ERROR) => c.str16().map(Reply::Error),
            Some(tag::DONE) => Some(Reply::Done),
            Some(tag::UNAVAILABLE) => c.str16().map(Reply::Unavailable),
            Some(tag::BELOW_FLOOR) => (|| {
                let offset = c.u64()?;
                let first_available = c.u64()?;
                Some(Reply::BelowFloor {
                    offset,
                    first_available,
                })
            })(),
            _ => None,
        };
        match r {
            Some(r) if c.buf.is_empty() => Ok(r),
            _ => Err(malformed("client reply")),
        }
    }
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
        ];
        for r in reqs {
            let enc = r.encode();
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
        ];
        for r in replies {
            let enc = r.encode();
            assert_eq!(Reply::decode(&enc).unwrap(), r);
            for n in 0..enc.len() {
                assert!(Reply::decode(&enc.slice(..n)).is_err());
            }
        }
    }

    #[test]
    fn huge_counts_are_refused() {
        let mut b = vec![tag::APPEND];
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Request::decode(&Bytes::from(b)).is_err());
    }
}
