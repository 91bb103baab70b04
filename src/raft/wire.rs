//! The byte encoding of Raft RPCs, so that the transport (`net`) moves opaque, bounded
//! messages and never names openraft types.
//!
//! Every message starts with a one-byte tag. All integers are little-endian. Decoding checks
//! every count and length against what is left in the buffer *before* allocating, and refuses
//! trailing bytes. The transport adds framing and a CRC-32 per message.
//!
//! ```text
//! log_id      = u64 term, u64 index
//! opt_log_id  = u8 present (0/1) [, log_id]
//! vote        = u64 term, u64 voted_for, u8 committed (0/1)
//! entry       = u64 index, u64 term, u8 kind (0 normal, 1 blank, 2 membership, 3 stored
//!               frame), u32 len, bytes: the payload (membership: see raft::entry), or with
//!               kind 3 the record frame exactly as the sender stored it (its checksum is
//!               verified here and again when the receiver stores it verbatim)
//! APPEND      = 1, vote, opt_log_id prev, opt_log_id leader_commit, u32 n, n × entry
//! APPEND_RESP = 2, u8 (0 success | 1 partial, opt_log_id | 2 conflict | 3 higher, vote)
//! VOTE        = 3, vote, opt_log_id last, u8 leadership_transfer
//! PRE_VOTE    = 4, same body as VOTE
//! VOTE_RESP   = 5, vote, u8 granted, opt_log_id last
//! STREAM_RESP = 6, u8 (0 matched, opt_log_id | 1 conflict, log_id | 2 higher, vote)
//! ERROR       = 7, u16 len, UTF-8 text (the remote node failed to handle the request)
//! SNAPSHOT    = 8, vote, snapshot (see raft::snapshot: metadata and segment manifest)
//! SNAPSHOT_RESP = 9, vote
//! ```

use super::entry::{decode_membership, encode_membership, Cursor};
use super::{log_id, AppBytes, Entry, LogId, TypeConfig, Vote};
use bytes::Bytes;
use openraft::entry::RaftEntry;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, StreamAppendResult,
    VoteRequest, VoteResponse,
};
use openraft::EntryPayload;

/// Message tags.
pub mod tag {
    /// AppendEntries request.
    pub const APPEND: u8 = 1;
    /// AppendEntries response.
    pub const APPEND_RESP: u8 = 2;
    /// Vote request.
    pub const VOTE: u8 = 3;
    /// Pre-vote request.
    pub const PRE_VOTE: u8 = 4;
    /// Vote (and pre-vote) response.
    pub const VOTE_RESP: u8 = 5;
    /// One result of a stream of appends.
    pub const STREAM_RESP: u8 = 6;
    /// The remote failed to handle the request.
    pub const ERROR: u8 = 7;
    /// A snapshot to install (its segments are fetched by the receiver).
    pub const SNAPSHOT: u8 = 8;
    /// The answer to a snapshot.
    pub const SNAPSHOT_RESP: u8 = 9;
}

/// Most entries one AppendEntries message may carry.
pub const MAX_ENTRIES_PER_MESSAGE: usize = 65_536;
/// Longest error text carried.
const MAX_ERROR_BYTES: usize = 1024;

/// Why a message did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes are not a valid message of the expected kind.
    #[error("malformed {0} message")]
    Malformed(&'static str),
    /// The remote node answered with an error instead.
    #[error("remote error instead of {what}: {text}")]
    Remote {
        /// Which message was expected.
        what: &'static str,
        /// The remote's error text.
        text: String,
    },
}

fn bad(what: &'static str) -> WireError {
    WireError::Malformed(what)
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_log_id(out: &mut Vec<u8>, id: &LogId) {
    put_u64(out, id.leader_id.term);
    put_u64(out, id.index);
}

fn put_opt_log_id(out: &mut Vec<u8>, id: &Option<LogId>) {
    match id {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            put_log_id(out, id);
        }
    }
}

fn put_vote(out: &mut Vec<u8>, v: &Vote) {
    put_u64(out, v.leader_id.term);
    put_u64(out, v.leader_id.voted_for);
    out.push(v.committed as u8);
}

impl Cursor<'_> {
    fn bool(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn log_id(&mut self) -> Option<LogId> {
        let term = self.u64()?;
        Some(log_id(term, self.u64()?))
    }
    fn opt_log_id(&mut self) -> Option<Option<LogId>> {
        if self.bool()? {
            Some(Some(self.log_id()?))
        } else {
            Some(None)
        }
    }
    fn vote(&mut self) -> Option<Vote> {
        let term = self.u64()?;
        let node = self.u64()?;
        Some(if self.bool()? {
            Vote::new_committed(term, node)
        } else {
            Vote::new(term, node)
        })
    }
}

fn finish<T>(c: Cursor<'_>, v: Option<T>, what: &'static str) -> Result<T, WireError> {
    match v {
        Some(v) if c.buf.is_empty() => Ok(v),
        _ => Err(bad(what)),
    }
}

fn expect_tag(c: &mut Cursor<'_>, want: u8, what: &'static str) -> Result<(), WireError> {
    match c.u8() {
        Some(t) if t == want => Ok(()),
        Some(tag::ERROR) => {
            let n = c.u16().map(usize::from).unwrap_or(0);
            let text = c.take(n).map(String::from_utf8_lossy).unwrap_or_default();
            Err(WireError::Remote {
                what,
                text: text.into_owned(),
            })
        }
        _ => Err(bad(what)),
    }
}

/// The tag of a message, if it has one.
pub fn tag_of(buf: &[u8]) -> Option<u8> {
    buf.first().copied()
}

/// Encodes an error reply.
pub fn encode_error(text: &str) -> Bytes {
    let b = &text.as_bytes()[..text.len().min(MAX_ERROR_BYTES)];
    let mut out = vec![tag::ERROR];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
    out.into()
}

fn put_entry(out: &mut Vec<u8>, e: &Entry) {
    put_u64(out, e.log_id.index);
    put_u64(out, e.log_id.leader_id.term);
    if let Some(frame) = &e.frame {
        out.push(3);
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(frame);
        return;
    }
    let (kind, payload): (u8, std::borrow::Cow<'_, [u8]>) = match &e.payload {
        EntryPayload::Normal(d) => (0, (&d.0[..]).into()),
        EntryPayload::Blank => (1, (&[][..]).into()),
        EntryPayload::Membership(m) => (2, encode_membership(m).into()),
    };
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
}

fn get_entry(c: &mut Cursor<'_>, whole: &Bytes) -> Option<Entry> {
    let index = c.u64()?;
    let term = c.u64()?;
    let kind = c.u8()?;
    let len = c.u32()? as usize;
    // Zero-copy: the payload is a slice of the received message.
    let at = whole.len() - c.buf.len();
    let payload = c.take(len)?;
    let id = log_id(term, index);
    Some(match kind {
        0 => Entry::new_normal(id, AppBytes(whole.slice(at..at + len))),
        1 if len == 0 => Entry::new_blank(id),
        2 => Entry::new_membership(id, decode_membership(payload)?),
        3 => return entry_from_frame(whole.slice(at..at + len), index, term),
        _ => return None,
    })
}

/// The entry a stored frame holds, if the frame is whole, its checksum right, and it is the
/// entry the message says (index and term).
fn entry_from_frame(frame: Bytes, index: u64, term: u64) -> Option<Entry> {
    if frame.len() < 24 {
        return None;
    }
    // The identity is checked when the frame is stored (against the local log's).
    let identity = crate::storage::record::u64_at(&frame, 16);
    let max = crate::storage::record::MAX_PAYLOAD_BYTES;
    let rec = crate::storage::record::decode_record(&frame, identity, Some(index), max).ok()?;
    if rec.term != term || rec.frame.len() != frame.len() {
        return None;
    }
    super::entry::from_record(rec).ok()
}

/// Encodes an AppendEntries request.
pub fn encode_append(req: &AppendEntriesRequest<TypeConfig>) -> Bytes {
    let payload_bytes: usize = req
        .entries
        .iter()
        .map(|e| match &e.payload {
            EntryPayload::Normal(d) => d.0.len(),
            _ => 64,
        })
        .sum();
    let mut out = Vec::with_capacity(64 + req.entries.len() * 24 + payload_bytes);
    out.push(tag::APPEND);
    put_vote(&mut out, &req.vote);
    put_opt_log_id(&mut out, &req.prev_log_id);
    put_opt_log_id(&mut out, &req.leader_commit);
    out.extend_from_slice(&(req.entries.len() as u32).to_le_bytes());
    for e in &req.entries {
        put_entry(&mut out, e);
    }
    out.into()
}

/// Decodes an AppendEntries request (payloads are zero-copy slices of `buf`).
pub fn decode_append(buf: &Bytes) -> Result<AppendEntriesRequest<TypeConfig>, WireError> {
    const WHAT: &str = "append";
    let mut c = Cursor { buf };
    expect_tag(&mut c, tag::APPEND, WHAT)?;
    let v = (|| {
        let vote = c.vote()?;
        let prev_log_id = c.opt_log_id()?;
        let leader_commit = c.opt_log_id()?;
        let n = c.u32()? as usize;
        // An entry takes at least 21 bytes: refuse counts the message cannot hold.
        if n > MAX_ENTRIES_PER_MESSAGE || n > c.buf.len() / 21 {
            return None;
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(get_entry(&mut c, buf)?);
        }
        Some(AppendEntriesRequest {
            vote,
            prev_log_id,
            entries,
            leader_commit,
        })
    })();
    finish(c, v, WHAT)
}

/// Encodes an AppendEntries response.
pub fn encode_append_resp(resp: &AppendEntriesResponse<TypeConfig>) -> Bytes {
    let mut out = vec![tag::APPEND_RESP];
    match resp {
        AppendEntriesResponse::Success => out.push(0),
        AppendEntriesResponse::PartialSuccess(id) => {
            out.push(1);
            put_opt_log_id(&mut out, id);
        }
        AppendEntriesResponse::Conflict => out.push(2),
        AppendEntriesResponse::HigherVote(v) => {
            out.push(3);
            put_vote(&mut out, v);
        }
    }
    out.into()
}

/// Decodes an AppendEntries response.
pub fn decode_append_resp(buf: &[u8]) -> Result<AppendEntriesResponse<TypeConfig>, WireError> {
    const WHAT: &str = "append response";
    let mut c = Cursor { buf };
    expect_tag(&mut c, tag::APPEND_RESP, WHAT)?;
    let v = match c.u8() {
        Some(0) => Some(AppendEntriesResponse::Success),
        Some(1) => c.opt_log_id().map(AppendEntriesResponse::PartialSuccess),
        Some(2) => Some(AppendEntriesResponse::Conflict),
        Some(3) => c.vote().map(AppendEntriesResponse::HigherVote),
        _ => None,
    };
    finish(c, v, WHAT)
}

/// Encodes a vote (or, with `pre`, pre-vote) request.
pub fn encode_vote(req: &VoteRequest<TypeConfig>, pre: bool) -> Bytes {
    let mut out = vec![if pre { tag::PRE_VOTE } else { tag::VOTE }];
    put_vote(&mut out, &req.vote);
    put_opt_log_id(&mut out, &req.last_log_id);
    out.push(req.leadership_transfer as u8);
    out.into()
}

/// Decodes a vote or pre-vote request; the flag tells which.
pub fn decode_vote(buf: &[u8]) -> Result<(VoteRequest<TypeConfig>, bool), WireError> {
    const WHAT: &str = "vote";
    let mut c = Cursor { buf };
    let pre = match c.u8() {
        Some(tag::VOTE) => false,
        Some(tag::PRE_VOTE) => true,
        _ => return Err(bad(WHAT)),
    };
    let v = (|| {
        let vote = c.vote()?;
        let last = c.opt_log_id()?;
        let transfer = c.bool()?;
        let mut req = VoteRequest::new(vote, last);
        req.leadership_transfer = transfer;
        Some((req, pre))
    })();
    finish(c, v, WHAT)
}

/// Encodes a vote response.
pub fn encode_vote_resp(resp: &VoteResponse<TypeConfig>) -> Bytes {
    let mut out = vec![tag::VOTE_RESP];
    put_vote(&mut out, &resp.vote);
    out.push(resp.vote_granted as u8);
    put_opt_log_id(&mut out, &resp.last_log_id);
    out.into()
}

/// Decodes a vote response.
pub fn decode_vote_resp(buf: &[u8]) -> Result<VoteResponse<TypeConfig>, WireError> {
    const WHAT: &str = "vote response";
    let mut c = Cursor { buf };
    expect_tag(&mut c, tag::VOTE_RESP, WHAT)?;
    let v = (|| {
        let vote = c.vote()?;
        let granted = c.bool()?;
        let last = c.opt_log_id()?;
        Some(VoteResponse::new(vote, last, granted))
    })();
    finish(c, v, WHAT)
}

/// Encodes a snapshot offer.
pub fn encode_snapshot(vote: &Vote, snap: &super::snapshot::Snapshot) -> Bytes {
    let mut out = vec![tag::SNAPSHOT];
    put_vote(&mut out, vote);
    out.extend_from_slice(&super::snapshot::encode(&snap.meta, &snap.snapshot));
    out.into()
}

/// Decodes a snapshot offer.
pub fn decode_snapshot(buf: &[u8]) -> Result<(Vote, super::snapshot::Snapshot), WireError> {
    const WHAT: &str = "snapshot";
    let mut c = Cursor { buf };
    expect_tag(&mut c, tag::SNAPSHOT, WHAT)?;
    let v = (|| {
        let vote = c.vote()?;
        let (meta, snapshot) = super::snapshot::decode_from(&mut c)?;
        Some((vote, super::snapshot::Snapshot { meta, snapshot }))
    })();
    finish(c, v, WHAT)
}

/// Encodes the answer to a snapshot.
pub fn encode_snapshot_resp(vote: &Vote) -> Bytes {
    let mut out = vec![tag::SNAPSHOT_RESP];
    put_vote(&mut out, vote);
    out.into()
}

/// Decodes the answer to a snapshot.
pub fn decode_snapshot_resp(buf: &[u8]) -> Result<Vote, WireError> {
    const WHAT: &str = "snapshot response";
    let mut c = Cursor { buf };
    expect_tag(&mut c, tag::SNAPSHOT_RESP, WHAT)?;
    let v = c.vote();
    finish(c, v, WHAT)
}

/// Encodes one result of a stream of appends.
pub fn encode_stream_result(r: &StreamAppendResult<TypeConfig>) -> Bytes {
    let mut out = vec![tag::STREAM_RESP];
    match r {
        Ok(id) => {
            out.push(0);
            put_opt_log_id(&mut out, id);
        }
        Err(StreamAppendError::Conflict(id)) => {
            out.push(1);
            put_log_id(&mut out, id);
        }
        Err(StreamAppendError::HigherVote(v)) => {
            out.push(2);
            put_vote(&mut out, v);
        }
    }
    out.into()
}

/// Decodes one result of a stream of appends.
pub fn decode_stream_result(buf: &[u8]) -> Result<StreamAppendResult<TypeConfig>, WireError> {
    const WHAT: &str = "stream result";
    let mut c = Cursor { buf };
    expect_tag(&mut c, tag::STREAM_RESP, WHAT)?;
    let v = match c.u8() {
        Some(0) => c.opt_log_id().map(Ok),
        Some(1) => c.log_id().map(|id| Err(StreamAppendError::Conflict(id))),
        Some(2) => c.vote().map(|v| Err(StreamAppendError::HigherVote(v))),
        _ => None,
    };
    finish(c, v, WHAT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Membership, NodeInfo};
    use std::collections::{BTreeMap, BTreeSet};

    fn sample_append() -> AppendEntriesRequest<TypeConfig> {
        let m = Membership::new(
            vec![BTreeSet::from([1, 2, 3])],
            (1..=3)
                .map(|i| {
                    let addr = format!("127.0.0.1:{i}");
                    (
                        i,
                        NodeInfo {
                            site: format!("s{i}"),
                            addr,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        )
        .unwrap();
        AppendEntriesRequest {
            vote: Vote::new_committed(4, 2),
            prev_log_id: Some(log_id(3, 9)),
            entries: vec![
                Entry::new_blank(log_id(4, 10)),
                Entry::new_membership(log_id(4, 11), m),
                Entry::new_normal(log_id(4, 12), AppBytes(Bytes::from_static(b"payload"))),
            ],
            leader_commit: Some(log_id(3, 9)),
        }
    }

    #[test]
    fn every_message_round_trips() {
        let req = sample_append();
        let enc = encode_append(&req);
        let got = decode_append(&enc).unwrap();
        assert_eq!(
            (got.vote, got.prev_log_id, got.leader_commit, got.entries),
            (req.vote, req.prev_log_id, req.leader_commit, req.entries)
        );
        for resp in [
            AppendEntriesResponse::Success,
            AppendEntriesResponse::PartialSuccess(Some(log_id(1, 2))),
            AppendEntriesResponse::PartialSuccess(None),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(Vote::new(9, 1)),
        ] {
            assert_eq!(
                decode_append_resp(&encode_append_resp(&resp)).unwrap(),
                resp
            );
        }
        let mut v = VoteRequest::new(Vote::new(5, 3), Some(log_id(4, 40)));
        v.leadership_transfer = true;
        for pre in [false, true] {
            let (got, got_pre) = decode_vote(&encode_vote(&v, pre)).unwrap();
            assert_eq!(
                (got.vote, got.last_log_id, got.leadership_transfer),
                (v.vote, v.last_log_id, true)
            );
            assert_eq!(got_pre, pre);
        }
        let vr = VoteResponse::new(Vote::new_committed(5, 3), None, true);
        assert_eq!(decode_vote_resp(&encode_vote_resp(&vr)).unwrap(), vr);
        for r in [
            Ok(Some(log_id(1, 1))),
            Ok(None),
            Err(StreamAppendError::Conflict(log_id(2, 3))),
            Err(StreamAppendError::HigherVote(Vote::new(7, 7))),
        ] {
            assert_eq!(decode_stream_result(&encode_stream_result(&r)).unwrap(), r);
        }
    }

    #[test]
    fn truncated_extended_and_flipped_messages_never_panic() {
        let enc = encode_append(&sample_append());
        for n in 0..enc.len() {
            assert!(
                decode_append(&enc.slice(..n)).is_err(),
                "prefix {n} accepted"
            );
        }
        let mut longer = enc.to_vec();
        longer.push(0);
        assert!(decode_append(&Bytes::from(longer)).is_err());
        for i in 0..enc.len() {
            let mut b = enc.to_vec();
            b[i] ^= 0xff;
            let _ = decode_append(&Bytes::from(b)); // may decode to something else; must not panic
        }
    }

    #[test]
    fn huge_entry_count_is_refused_before_allocating() {
        let mut b = vec![tag::APPEND];
        put_vote(&mut b, &Vote::new(1, 1));
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_append(&Bytes::from(b)).is_err());
    }

    #[test]
    fn remote_error_is_reported() {
        let err = decode_vote_resp(&encode_error("node shutting down")).unwrap_err();
        assert!(err.to_string().contains("node shutting down"), "{err}");
    }
}

#[cfg(test)]
mod frame_tests {
    use super::*;
    use crate::storage::record::{encode_with_lag, RecordRef};
    use crate::storage::EntryKind;

    fn stored_frame(index: u64, term: u64, payload: &[u8]) -> Bytes {
        let mut buf = Vec::new();
        let rec = RecordRef {
            offset: index,
            term,
            timestamp_us: 5,
            kind: EntryKind::Normal,
            payload,
        };
        encode_with_lag(&mut buf, 0xc1, rec, 0);
        buf.into()
    }

    fn request(entry: Entry) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: None,
            entries: vec![entry],
            leader_commit: None,
        }
    }

    #[test]
    fn stored_frames_travel_verbatim_and_are_verified() {
        let frame = stored_frame(7, 2, b"hello");
        let mut e = Entry::new_normal(log_id(2, 7), AppBytes(Bytes::from_static(b"hello")));
        e.frame = Some(frame.clone());
        let got = decode_append(&encode_append(&request(e.clone()))).unwrap();
        assert_eq!(got.entries[0], e);
        assert_eq!(
            got.entries[0].frame.as_ref(),
            Some(&frame),
            "the same bytes"
        );

        // A frame whose index or term disagrees with the message, or with a flipped bit.
        let mut wrong = e.clone();
        wrong.log_id = log_id(3, 7);
        assert!(decode_append(&encode_append(&request(wrong))).is_err());
        let mut flipped = frame.to_vec();
        flipped[50] ^= 4;
        let mut bad = e;
        bad.frame = Some(Bytes::from(flipped));
        assert!(decode_append(&encode_append(&request(bad))).is_err());
    }
}
