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

use super::entry::{decode_membership, encode_membership};
use super::{log_id, AppData, AppKind, Entry, LogId, TypeConfig, Vote};
use crate::codec::{clip_utf8, DecodeError, DecodeResult, Reader, Writer};
use crate::limits::MAX_ERROR_TEXT_BYTES;
use crate::Result;
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
/// The smallest encoded entry: index, term, kind, length.
const MIN_ENTRY_BYTES: usize = crate::limits::APPEND_ENTRY_OVERHEAD_BYTES;

/// Why a message did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes are not a valid message of the expected kind.
    #[error("malformed {0} message: {1}")]
    Malformed(&'static str, DecodeError),
    /// The remote node answered with an error instead.
    #[error("remote error instead of {what}: {text}")]
    Remote {
        /// Which message was expected.
        what: &'static str,
        /// The remote's error text.
        text: String,
    },
}

fn decoded<T>(v: DecodeResult<T>, what: &'static str) -> Result<T, WireError> {
    v.map_err(|e| WireError::Malformed(what, e))
}

fn put_log_id(w: &mut Writer<'_>, id: &LogId) {
    w.u64(id.leader_id.term);
    w.u64(id.index);
}

fn put_opt_log_id(w: &mut Writer<'_>, id: &Option<LogId>) {
    match id {
        None => w.u8(0),
        Some(id) => {
            w.u8(1);
            put_log_id(w, id);
        }
    }
}

fn put_vote(w: &mut Writer<'_>, v: &Vote) {
    w.u64(v.leader_id.term);
    w.u64(v.leader_id.voted_for);
    w.bool(v.committed);
}

pub(crate) fn get_log_id(c: &mut Reader<'_>) -> DecodeResult<LogId> {
    let term = c.u64()?;
    Ok(log_id(term, c.u64()?))
}

pub(crate) fn get_opt_log_id(c: &mut Reader<'_>) -> DecodeResult<Option<LogId>> {
    Ok(if c.bool()? {
        Some(get_log_id(c)?)
    } else {
        None
    })
}

fn get_vote(c: &mut Reader<'_>) -> DecodeResult<Vote> {
    let term = c.u64()?;
    let node = c.u64()?;
    Ok(if c.bool()? {
        Vote::new_committed(term, node)
    } else {
        Vote::new(term, node)
    })
}

/// Encodes a message into a fresh buffer.
fn message(f: impl FnOnce(&mut Writer<'_>)) -> Bytes {
    let mut out = Vec::new();
    f(&mut Writer::new(&mut out));
    out.into()
}

/// Decodes a whole message of kind `what` with `f`; trailing bytes are refused.
fn decode_whole<'a, T>(
    buf: &'a [u8],
    what: &'static str,
    f: impl FnOnce(&mut Reader<'a>) -> Result<T, WireError>,
) -> Result<T, WireError> {
    let mut c = Reader::new(buf, what);
    let v = f(&mut c)?;
    decoded(c.finish(v), what)
}

fn expect_tag(c: &mut Reader<'_>, want: u8, what: &'static str) -> Result<(), WireError> {
    match decoded(c.u8(), what)? {
        t if t == want => Ok(()),
        tag::ERROR => {
            let text = c.text_u16(u16::MAX as usize).unwrap_or_default();
            Err(WireError::Remote { what, text })
        }
        _ => Err(WireError::Malformed(what, c.invalid())),
    }
}

/// The tag of a message, if it has one.
pub fn tag_of(buf: &[u8]) -> Option<u8> {
    buf.first().copied()
}

/// Encodes an error reply. The text is a diagnostic: it is clipped to
/// [`MAX_ERROR_TEXT_BYTES`] (at a character boundary) as the format documents.
pub fn encode_error(text: &str) -> Bytes {
    let b = clip_utf8(text, MAX_ERROR_TEXT_BYTES).as_bytes();
    message(|w| {
        w.u8(tag::ERROR);
        // Fits: MAX_ERROR_TEXT_BYTES <= u16::MAX (asserted in `limits`).
        w.u16(b.len() as u16);
        w.raw(b);
    })
}

/// The entry kinds of an entry sent without its stored frame: 0 normal, 1 blank, 2
/// membership, (3 is a stored frame), 4 produce, 5 register.
const PRODUCE_WIRE_KIND: u8 = 4;
const REGISTER_WIRE_KIND: u8 = 5;

fn app_wire_kind(k: AppKind) -> u8 {
    match k {
        AppKind::Normal => 0,
        AppKind::Produce => PRODUCE_WIRE_KIND,
        AppKind::Register => REGISTER_WIRE_KIND,
    }
}

fn put_entry(w: &mut Writer<'_>, e: &Entry) -> Result<()> {
    w.u64(e.log_id.index);
    w.u64(e.log_id.leader_id.term);
    if let Some(frame) = &e.frame {
        w.u8(3);
        return w.bytes_u32("stored frame", frame, u32::MAX as usize);
    }
    let (kind, payload): (u8, std::borrow::Cow<'_, [u8]>) = match &e.payload {
        EntryPayload::Normal(d) => (app_wire_kind(d.kind), (&d.bytes[..]).into()),
        EntryPayload::Blank => (1, (&[][..]).into()),
        EntryPayload::Membership(m) => (2, encode_membership(m)?.into()),
    };
    w.u8(kind);
    w.bytes_u32("entry payload", &payload, u32::MAX as usize)
}

fn get_entry(c: &mut Reader<'_>, whole: &Bytes) -> DecodeResult<Entry> {
    let index = c.u64()?;
    let term = c.u64()?;
    let kind = c.u8()?;
    let len = c.count_u32(u32::MAX as usize, 1)?;
    // Zero-copy: the payload is a slice of the received message.
    let at = c.position();
    let payload = c.take(len)?;
    let id = log_id(term, index);
    Ok(match kind {
        0 => Entry::new_normal(id, AppData::normal(whole.slice(at..at + len))),
        PRODUCE_WIRE_KIND | REGISTER_WIRE_KIND => {
            let kind = match kind {
                PRODUCE_WIRE_KIND => AppKind::Produce,
                _ => AppKind::Register,
            };
            let d = AppData {
                kind,
                bytes: whole.slice(at..at + len),
            };
            super::entry::producer_entry(&d)?;
            Entry::new_normal(id, d)
        }
        1 if len == 0 => Entry::new_blank(id),
        2 => Entry::new_membership(id, decode_membership(payload)?),
        3 => return entry_from_frame(whole.slice(at..at + len), index, term),
        _ => return Err(c.invalid()),
    })
}

/// The entry a stored frame holds, if the frame is whole, its checksum right, and it is the
/// entry the message says (index and term).
fn entry_from_frame(frame: Bytes, index: u64, term: u64) -> DecodeResult<Entry> {
    let bad = DecodeError::Invalid {
        what: "stored frame",
    };
    if frame.len() < crate::storage::record::HEADER_SIZE_BYTES {
        return Err(bad);
    }
    // The identity is checked when the frame is stored (against the local log's).
    let identity = crate::storage::record::u64_at(&frame, 16);
    let max = crate::storage::record::MAX_PAYLOAD_BYTES;
    let rec = crate::storage::record::decode_record(&frame, identity, Some(index), max)
        .map_err(|_| bad.clone())?;
    if rec.term != term || rec.frame.len() != frame.len() {
        return Err(bad);
    }
    super::entry::from_record(rec).map_err(|_| bad)
}

/// Encodes an AppendEntries request. Refuses ([`crate::Error::TooLong`]) more than
/// [`MAX_ENTRIES_PER_MESSAGE`] entries and a membership that does not fit its encoding.
pub fn encode_append(req: &AppendEntriesRequest<TypeConfig>) -> Result<Bytes> {
    let payload_bytes: usize = req
        .entries
        .iter()
        .map(|e| match &e.payload {
            EntryPayload::Normal(d) => d.bytes.len(),
            _ => 64,
        })
        .sum();
    let mut out = Vec::with_capacity(64 + req.entries.len() * 24 + payload_bytes);
    let mut w = Writer::new(&mut out);
    w.u8(tag::APPEND);
    put_vote(&mut w, &req.vote);
    put_opt_log_id(&mut w, &req.prev_log_id);
    put_opt_log_id(&mut w, &req.leader_commit);
    w.len_u32("append entries", req.entries.len(), MAX_ENTRIES_PER_MESSAGE)?;
    for e in &req.entries {
        put_entry(&mut w, e)?;
    }
    Ok(out.into())
}

/// Decodes an AppendEntries request (payloads are zero-copy slices of `buf`).
pub fn decode_append(buf: &Bytes) -> Result<AppendEntriesRequest<TypeConfig>, WireError> {
    const WHAT: &str = "append";
    decode_whole(buf, WHAT, |c| {
        expect_tag(c, tag::APPEND, WHAT)?;
        decoded(
            (|| {
                let vote = get_vote(c)?;
                let prev_log_id = get_opt_log_id(c)?;
                let leader_commit = get_opt_log_id(c)?;
                let n = c.count_u32(MAX_ENTRIES_PER_MESSAGE, MIN_ENTRY_BYTES)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(get_entry(c, buf)?);
                }
                Ok(AppendEntriesRequest {
                    vote,
                    prev_log_id,
                    entries,
                    leader_commit,
                })
            })(),
            WHAT,
        )
    })
}

/// Encodes an AppendEntries response.
pub fn encode_append_resp(resp: &AppendEntriesResponse<TypeConfig>) -> Bytes {
    message(|w| {
        w.u8(tag::APPEND_RESP);
        match resp {
            AppendEntriesResponse::Success => w.u8(0),
            AppendEntriesResponse::PartialSuccess(id) => {
                w.u8(1);
                put_opt_log_id(w, id);
            }
            AppendEntriesResponse::Conflict => w.u8(2),
            AppendEntriesResponse::HigherVote(v) => {
                w.u8(3);
                put_vote(w, v);
            }
        }
    })
}

/// Decodes an AppendEntries response.
pub fn decode_append_resp(buf: &[u8]) -> Result<AppendEntriesResponse<TypeConfig>, WireError> {
    const WHAT: &str = "append response";
    decode_whole(buf, WHAT, |c| {
        expect_tag(c, tag::APPEND_RESP, WHAT)?;
        let v = match decoded(c.u8(), WHAT)? {
            0 => Ok(AppendEntriesResponse::Success),
            1 => get_opt_log_id(c).map(AppendEntriesResponse::PartialSuccess),
            2 => Ok(AppendEntriesResponse::Conflict),
            3 => get_vote(c).map(AppendEntriesResponse::HigherVote),
            _ => Err(c.invalid()),
        };
        decoded(v, WHAT)
    })
}

/// Encodes a vote (or, with `pre`, pre-vote) request.
pub fn encode_vote(req: &VoteRequest<TypeConfig>, pre: bool) -> Bytes {
    message(|w| {
        w.u8(if pre { tag::PRE_VOTE } else { tag::VOTE });
        put_vote(w, &req.vote);
        put_opt_log_id(w, &req.last_log_id);
        w.bool(req.leadership_transfer);
    })
}

/// Decodes a vote or pre-vote request; the flag tells which.
pub fn decode_vote(buf: &[u8]) -> Result<(VoteRequest<TypeConfig>, bool), WireError> {
    const WHAT: &str = "vote";
    decode_whole(buf, WHAT, |c| {
        let v = (|| {
            let pre = match c.u8()? {
                tag::VOTE => false,
                tag::PRE_VOTE => true,
                _ => return Err(c.invalid()),
            };
            let vote = get_vote(c)?;
            let last = get_opt_log_id(c)?;
            let mut req = VoteRequest::new(vote, last);
            req.leadership_transfer = c.bool()?;
            Ok((req, pre))
        })();
        decoded(v, WHAT)
    })
}

/// Encodes a vote response.
pub fn encode_vote_resp(resp: &VoteResponse<TypeConfig>) -> Bytes {
    message(|w| {
        w.u8(tag::VOTE_RESP);
        put_vote(w, &resp.vote);
        w.bool(resp.vote_granted);
        put_opt_log_id(w, &resp.last_log_id);
    })
}

/// Decodes a vote response.
pub fn decode_vote_resp(buf: &[u8]) -> Result<VoteResponse<TypeConfig>, WireError> {
    const WHAT: &str = "vote response";
    decode_whole(buf, WHAT, |c| {
        expect_tag(c, tag::VOTE_RESP, WHAT)?;
        let v = (|| {
            let vote = get_vote(c)?;
            let granted = c.bool()?;
            let last = get_opt_log_id(c)?;
            Ok(VoteResponse::new(vote, last, granted))
        })();
        decoded(v, WHAT)
    })
}

/// Encodes a snapshot offer (refused, [`crate::Error::TooLong`], when the snapshot does not
/// fit its encoding).
pub fn encode_snapshot(vote: &Vote, snap: &super::snapshot::Snapshot) -> Result<Bytes> {
    let body = super::snapshot::encode(&snap.meta, &snap.snapshot)?;
    Ok(message(|w| {
        w.u8(tag::SNAPSHOT);
        put_vote(w, vote);
        w.raw(&body);
    }))
}

/// Decodes a snapshot offer.
pub fn decode_snapshot(buf: &[u8]) -> Result<(Vote, super::snapshot::Snapshot), WireError> {
    const WHAT: &str = "snapshot";
    decode_whole(buf, WHAT, |c| {
        expect_tag(c, tag::SNAPSHOT, WHAT)?;
        let v = (|| {
            let vote = get_vote(c)?;
            let (meta, snapshot) = super::snapshot::decode_from(c)?;
            Ok((vote, super::snapshot::Snapshot { meta, snapshot }))
        })();
        decoded(v, WHAT)
    })
}

/// Encodes the answer to a snapshot.
pub fn encode_snapshot_resp(vote: &Vote) -> Bytes {
    message(|w| {
        w.u8(tag::SNAPSHOT_RESP);
        put_vote(w, vote);
    })
}

/// Decodes the answer to a snapshot.
pub fn decode_snapshot_resp(buf: &[u8]) -> Result<Vote, WireError> {
    const WHAT: &str = "snapshot response";
    decode_whole(buf, WHAT, |c| {
        expect_tag(c, tag::SNAPSHOT_RESP, WHAT)?;
        decoded(get_vote(c), WHAT)
    })
}

/// Encodes one result of a stream of appends.
pub fn encode_stream_result(r: &StreamAppendResult<TypeConfig>) -> Bytes {
    message(|w| {
        w.u8(tag::STREAM_RESP);
        match r {
            Ok(id) => {
                w.u8(0);
                put_opt_log_id(w, id);
            }
            Err(StreamAppendError::Conflict(id)) => {
                w.u8(1);
                put_log_id(w, id);
            }
            Err(StreamAppendError::HigherVote(v)) => {
                w.u8(2);
                put_vote(w, v);
            }
        }
    })
}

/// Decodes one result of a stream of appends.
pub fn decode_stream_result(buf: &[u8]) -> Result<StreamAppendResult<TypeConfig>, WireError> {
    const WHAT: &str = "stream result";
    decode_whole(buf, WHAT, |c| {
        expect_tag(c, tag::STREAM_RESP, WHAT)?;
        let v = match decoded(c.u8(), WHAT)? {
            0 => get_opt_log_id(c).map(Ok),
            1 => get_log_id(c).map(|id| Err(StreamAppendError::Conflict(id))),
            2 => get_vote(c).map(|v| Err(StreamAppendError::HigherVote(v))),
            _ => Err(c.invalid()),
        };
        decoded(v, WHAT)
    })
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
                Entry::new_normal(log_id(4, 12), AppData::normal(Bytes::from_static(b"payload"))),
                // Producer entries without their stored frame (wire kinds 4 and 5).
                Entry::new_normal(
                    log_id(4, 13),
                    crate::raft::entry::encode_produce(1, 0, 5, b"m"),
                ),
                Entry::new_normal(log_id(4, 14), crate::raft::entry::encode_register(5, 9, 3)),
            ],
            leader_commit: Some(log_id(3, 9)),
        }
    }

    #[test]
    fn every_message_round_trips() {
        let req = sample_append();
        let enc = encode_append(&req).unwrap();
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
        let enc = encode_append(&sample_append()).unwrap();
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
        put_vote(&mut Writer::new(&mut b), &Vote::new(1, 1));
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_append(&Bytes::from(b)),
            Err(WireError::Malformed(_, DecodeError::TooMany { .. }))
        ));
    }

    #[test]
    fn the_encoding_is_unchanged() {
        let enc = encode_vote(
            &VoteRequest::new(Vote::new(5, 3), Some(log_id(4, 40))),
            false,
        );
        let mut want = vec![
            tag::VOTE,
            5,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            3,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            1,
        ];
        want.extend_from_slice(&[4, 0, 0, 0, 0, 0, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&enc[..], &want[..]);
        let enc = encode_error("no");
        assert_eq!(&enc[..], &[tag::ERROR, 2, 0, b'n', b'o']);
    }

    #[test]
    fn a_long_error_text_is_clipped_at_a_character_boundary() {
        let text = "é".repeat(MAX_ERROR_TEXT_BYTES); // 2 bytes each
        let err = decode_vote_resp(&encode_error(&text)).unwrap_err();
        let WireError::Remote { text: got, .. } = err else {
            panic!("{err:?}");
        };
        assert_eq!(got, "é".repeat(MAX_ERROR_TEXT_BYTES / 2));
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
        let mut e = Entry::new_normal(log_id(2, 7), AppData::normal(Bytes::from_static(b"hello")));
        e.frame = Some(frame.clone());
        let got = decode_append(&encode_append(&request(e.clone())).unwrap()).unwrap();
        assert_eq!(got.entries[0], e);
        assert_eq!(
            got.entries[0].frame.as_ref(),
            Some(&frame),
            "the same bytes"
        );

        // A frame whose index or term disagrees with the message, or with a flipped bit.
        let mut wrong = e.clone();
        wrong.log_id = log_id(3, 7);
        assert!(decode_append(&encode_append(&request(wrong)).unwrap()).is_err());
        let mut flipped = frame.to_vec();
        flipped[50] ^= 4;
        let mut bad = e;
        bad.frame = Some(Bytes::from(flipped));
        assert!(decode_append(&encode_append(&request(bad)).unwrap()).is_err());
    }
}
