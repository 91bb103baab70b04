//! The record frame: one appended message (or Raft entry) as it lies on disk and travels on the
//! wire.
//!
//! ```text
//! byte  size  field          meaning
//!    0     4  checksum       CRC-32 of bytes 4 .. 48 + payload_len (header and payload)
//!    4     4  payload_len    bytes of payload, <= MAX_PAYLOAD_BYTES
//!    8     8  offset         the record's log offset
//!   16     8  log_id         identity of the log (random at creation, kept by replicas)
//!   24     8  term           Raft term (0 for a local log)
//!   32     8  timestamp_us   microseconds since the Unix epoch, set by the appender
//!   40     1  kind           0 normal, 1 blank, 2 membership, 3 produce, 4 register
//!                             (3 and 4 only inside segments of format version 2)
//!   41     1  flags          must be 0 (reserved: compression)
//!   42     2  reserved       must be 0
//!   44     4  durable_lag    1 + offset - durable_end at write time; 0 = unknown
//!   48     n  payload
//!  48+n    p  zero padding to the next multiple of 8
//! ```
//! All integers are little-endian. Because the checksum covers the offset and the log id, a
//! well-formed frame that sits in the wrong place (misdirected write, stale file, another log)
//! fails to decode, not only a frame with flipped bits. `durable_lag` lets recovery prove that
//! an earlier record had been fsynced (and so acknowledged) when a later record was written:
//! damage to such a record is corruption, never a torn tail.

use crate::codec::Writer;
use bytes::Bytes;

/// Size of the fixed frame header.
pub const HEADER_SIZE_BYTES: usize = 48;
/// Frames start and end on this alignment.
pub const FRAME_ALIGN_BYTES: usize = 8;
/// Hard upper bound on a payload, whatever the options say; checked before any allocation.
pub const MAX_PAYLOAD_BYTES: u32 = 64 << 20;
/// Largest offset a record may have (2^62): arithmetic on offsets never overflows, and a
/// log appending a million records a second takes 146 000 years to get there.
pub const MAX_OFFSET: u64 = 1 << 62;

const _: () = assert!(HEADER_SIZE_BYTES % FRAME_ALIGN_BYTES == 0);
const _: () = assert!(FRAME_ALIGN_BYTES.is_power_of_two());

/// What a record is, in Raft terms. Local logs append `Normal` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// An application message.
    Normal = 0,
    /// A Raft blank (no-op) entry written by a new leader.
    Blank = 1,
    /// A Raft membership-change entry.
    Membership = 2,
    /// A message of an idempotent producer: the payload starts with its producer header
    /// (`raft::entry`). Only inside segments of format version 2 or later.
    Produce = 3,
    /// A producer registration (its id is the entry's offset). Only inside segments of
    /// format version 2 or later.
    Register = 4,
}

impl EntryKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::Blank),
            2 => Some(EntryKind::Membership),
            3 => Some(EntryKind::Produce),
            4 => Some(EntryKind::Register),
            _ => None,
        }
    }

    /// Whether this kind is one of the producer kinds, which an older binary cannot read and
    /// which therefore may only appear in segments of format version 2 or later.
    pub fn is_producer(self) -> bool {
        matches!(self, EntryKind::Produce | EntryKind::Register)
    }
}

/// A decoded record. The payload is a zero-copy slice of a segment map or read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's log offset.
    pub offset: u64,
    /// Raft term (0 in a local log).
    pub term: u64,
    /// Microseconds since the Unix epoch at append.
    pub timestamp_us: u64,
    /// The entry kind.
    pub kind: EntryKind,
    /// The payload bytes.
    pub payload: Bytes,
    /// The whole stored frame (header, payload, zero padding), checksum verified: what
    /// replication ships and a follower stores verbatim (`Log::append_frames`).
    pub frame: Bytes,
}

/// The header fields of a frame that decoded and verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The record's log offset.
    pub offset: u64,
    /// Raft term.
    pub term: u64,
    /// Microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// Entry kind.
    pub kind: EntryKind,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// `1 + offset - durable_end` when written; 0 when unknown (too far behind).
    pub durable_lag: u32,
    /// The stored checksum.
    pub checksum: u32,
}

impl FrameHeader {
    /// Total bytes the frame occupies, padding included.
    pub fn frame_len(&self) -> usize {
        frame_len(self.payload_len as usize)
    }

    /// The durable end (exclusive) the writer knew of when it wrote this frame, if known.
    pub fn durable_end_hint(&self) -> Option<u64> {
        let lag = u64::from(self.durable_lag);
        // A lag of 0 means unknown; a lag beyond offset + 1 is malformed, and offsets are
        // bounded by MAX_OFFSET, so offset + 1 cannot overflow.
        (lag != 0)
            .then(|| (self.offset + 1).checked_sub(lag))
            .flatten()
    }
}

/// Why bytes are not a valid frame at a place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the header or the declared payload.
    Truncated,
    /// `payload_len` above the limit.
    TooLong,
    /// Unknown kind, non-zero flags or reserved bits.
    BadHeader,
    /// Checksum mismatch.
    BadChecksum,
    /// Valid frame of another log.
    WrongLog,
    /// Valid frame, but for another offset than the one expected here.
    WrongOffset,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            FrameError::Truncated => "frame truncated",
            FrameError::TooLong => "payload length above limit",
            FrameError::BadHeader => "malformed header",
            FrameError::BadChecksum => "checksum mismatch",
            FrameError::WrongLog => "frame belongs to another log",
            FrameError::WrongOffset => "frame belongs at another offset",
        };
        f.write_str(s)
    }
}

/// Bytes a frame with `payload_len` bytes of payload occupies.
pub const fn frame_len(payload_len: usize) -> usize {
    (HEADER_SIZE_BYTES + payload_len + FRAME_ALIGN_BYTES - 1) & !(FRAME_ALIGN_BYTES - 1)
}

/// The fields of a record to encode.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// Log offset.
    pub offset: u64,
    /// Raft term.
    pub term: u64,
    /// Microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// Entry kind.
    pub kind: EntryKind,
    /// Payload.
    pub payload: &'a [u8],
}

/// Appends the frame for `rec` to `out`. `durable_end` is the exclusive end of what is known
/// fsynced at this moment.
pub fn encode(out: &mut Vec<u8>, log_id: u64, rec: RecordRef<'_>, durable_end: u64) {
    debug_assert!(
        durable_end <= rec.offset,
        "a record cannot be durable before it is written"
    );
    // The writer never passes offsets above MAX_OFFSET (decode rejects them); the arithmetic
    // stays overflow-free for any input all the same.
    let lag = (rec.offset - durable_end.min(rec.offset)).checked_add(1);
    let durable_lag = lag.and_then(|l| u32::try_from(l).ok()).unwrap_or(0);
    encode_with_lag(out, log_id, rec, durable_lag)
}

/// Encodes a frame with an explicit `durable_lag` (0 = no durability hint: the frames of a
/// replicated log, which must be the same bytes on every replica).
pub fn encode_with_lag(out: &mut Vec<u8>, log_id: u64, rec: RecordRef<'_>, durable_lag: u32) {
    assert!(
        rec.payload.len() <= MAX_PAYLOAD_BYTES as usize,
        "payload bounded by caller"
    );
    let start = out.len();
    let mut w = Writer::new(out);
    // The checksum, filled in below.
    w.u32(0);
    // Fits: bounded by MAX_PAYLOAD_BYTES (asserted above).
    w.u32(rec.payload.len() as u32);
    w.u64(rec.offset);
    w.u64(log_id);
    w.u64(rec.term);
    w.u64(rec.timestamp_us);
    w.raw(&[rec.kind as u8, 0, 0, 0]);
    w.u32(durable_lag);
    w.raw(rec.payload);
    debug_assert_eq!(out.len() - start, HEADER_SIZE_BYTES + rec.payload.len());
    let crc = crate::storage::checksum::checksum(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    out.resize(start + frame_len(rec.payload.len()), 0);
}

/// Byte position of the timestamp in a frame header.
pub(crate) const TIMESTAMP_AT: usize = 32;

pub(crate) use crate::codec::{u32_at, u64_at};

/// Decodes and verifies the frame at the start of `buf` (which may continue past it).
///
/// Checks, in order: enough bytes for a header, length bound, header well-formed, enough bytes
/// for the payload, checksum, log id, and (when given) the expected offset. Nothing is
/// allocated; the declared length is bounded by `max_payload_bytes` and by `buf` itself.
pub fn decode_header(
    buf: &[u8],
    log_id: u64,
    expected_offset: Option<u64>,
    max_payload_bytes: u32,
) -> Result<FrameHeader, FrameError> {
    decode_header_trusting(buf, log_id, expected_offset, max_payload_bytes, 0)
}

/// [`decode_header`] that skips the checksum of a frame whose checksummed bytes lie within
/// the first `verified_bytes` of `buf`: bytes a read-ahead thread already verified frame by
/// frame, walking from the same frame start (see `read_ahead.rs`). Every other check runs.
pub(crate) fn decode_header_trusting(
    buf: &[u8],
    log_id: u64,
    expected_offset: Option<u64>,
    max_payload_bytes: u32,
    verified_bytes: usize,
) -> Result<FrameHeader, FrameError> {
    let raw = read_header(buf).ok_or(FrameError::Truncated)?;
    let payload_len = raw.payload_len;
    if payload_len > max_payload_bytes.min(MAX_PAYLOAD_BYTES) {
        return Err(FrameError::TooLong);
    }
    let kind = EntryKind::from_u8(raw.kind[0]).ok_or(FrameError::BadHeader)?;
    if raw.kind[1..] != [0, 0, 0] {
        return Err(FrameError::BadHeader);
    }
    let body_end = HEADER_SIZE_BYTES + payload_len as usize;
    if buf.len() < body_end {
        return Err(FrameError::Truncated);
    }
    let checksum = raw.checksum;
    if body_end > verified_bytes && crate::storage::checksum::checksum(&buf[4..body_end]) != checksum
    {
        return Err(FrameError::BadChecksum);
    }
    if raw.log_id != log_id {
        return Err(FrameError::WrongLog);
    }
    let offset = raw.offset;
    if expected_offset.is_some_and(|e| e != offset) {
        return Err(FrameError::WrongOffset);
    }
    if offset > MAX_OFFSET {
        return Err(FrameError::BadHeader);
    }
    // Padding is not covered by the checksum; the writer zeroes it, so anything else is damage.
    let padding_end = frame_len(payload_len as usize).min(buf.len());
    if buf[body_end..padding_end].iter().any(|&b| b != 0) {
        return Err(FrameError::BadHeader);
    }
    Ok(FrameHeader {
        offset,
        term: raw.term,
        timestamp_us: raw.timestamp_us,
        kind,
        payload_len,
        durable_lag: raw.durable_lag,
        checksum,
    })
}

/// The header fields as stored, before any check.
struct RawHeader {
    checksum: u32,
    payload_len: u32,
    offset: u64,
    log_id: u64,
    term: u64,
    timestamp_us: u64,
    /// The kind byte and three zero bytes.
    kind: [u8; 4],
    durable_lag: u32,
}

fn read_header(buf: &[u8]) -> Option<RawHeader> {
    // One bounds check for the whole header (a sequential reader decodes millions a second).
    let h: &[u8; HEADER_SIZE_BYTES] = buf.get(..HEADER_SIZE_BYTES)?.try_into().ok()?;
    Some(RawHeader {
        checksum: u32_at(h, 0),
        payload_len: u32_at(h, 4),
        offset: u64_at(h, 8),
        log_id: u64_at(h, 16),
        term: u64_at(h, 24),
        timestamp_us: u64_at(h, 32),
        kind: [h[40], h[41], h[42], h[43]],
        durable_lag: u32_at(h, 44),
    })
}

/// Decodes the frame at the start of `frame` into a [`Record`] whose payload shares `frame`.
pub fn decode_record(
    frame: &Bytes,
    log_id: u64,
    expected_offset: Option<u64>,
    max_payload_bytes: u32,
) -> Result<Record, FrameError> {
    decode_record_at(frame, 0, log_id, expected_offset, max_payload_bytes)
}

/// [`decode_record`] of the frame at `pos` in `region` (a sealed segment's frames): the
/// record's payload and frame are slices of `region`, so a sequential reader makes no
/// intermediate slice per record.
pub fn decode_record_at(
    region: &Bytes,
    pos: usize,
    log_id: u64,
    expected_offset: Option<u64>,
    max_payload_bytes: u32,
) -> Result<Record, FrameError> {
    decode_record_trusting(region, pos, log_id, expected_offset, max_payload_bytes, 0)
}

/// [`decode_record_at`] that skips the checksum of a frame ending within `region`'s first
/// `verified_end` bytes (see [`decode_header_trusting`]).
pub(crate) fn decode_record_trusting(
    region: &Bytes,
    pos: usize,
    log_id: u64,
    expected_offset: Option<u64>,
    max_payload_bytes: u32,
    verified_end: usize,
) -> Result<Record, FrameError> {
    let buf = region.get(pos..).ok_or(FrameError::Truncated)?;
    let verified_bytes = verified_end.saturating_sub(pos);
    let h = decode_header_trusting(buf, log_id, expected_offset, max_payload_bytes, verified_bytes)?;
    let body = pos + HEADER_SIZE_BYTES;
    let payload = region.slice(body..body + h.payload_len as usize);
    Ok(Record {
        offset: h.offset,
        term: h.term,
        timestamp_us: h.timestamp_us,
        kind: h.kind,
        payload,
        frame: region.slice(pos..pos + h.frame_len().min(buf.len())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_layout_is_unchanged() {
        // Field by field as the README's FORMAT section documents it.
        let mut got = Vec::new();
        let r = RecordRef {
            offset: 7,
            term: 3,
            timestamp_us: 9,
            kind: EntryKind::Membership,
            payload: b"abc",
        };
        encode_with_lag(&mut got, 0x51, r, 2);
        let mut want = vec![0u8; 4];
        want.extend_from_slice(&3u32.to_le_bytes());
        for v in [7u64, 0x51, 3, 9] {
            want.extend_from_slice(&v.to_le_bytes());
        }
        want.extend_from_slice(&[2, 0, 0, 0, 2, 0, 0, 0]);
        want.extend_from_slice(b"abc");
        let crc = crate::storage::checksum::checksum(&want[4..]);
        want[..4].copy_from_slice(&crc.to_le_bytes());
        want.resize(frame_len(3), 0);
        assert_eq!(got, want);
    }

    fn rec(offset: u64, payload: &[u8]) -> RecordRef<'_> {
        RecordRef {
            offset,
            term: 3,
            timestamp_us: 99,
            kind: EntryKind::Membership,
            payload,
        }
    }

    #[test]
    fn round_trip_and_alignment() {
        for len in [0usize, 1, 7, 8, 9, 100, 4096] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut buf = Vec::new();
            encode(&mut buf, 42, rec(10, &payload), 5);
            assert_eq!(buf.len(), frame_len(len));
            assert_eq!(buf.len() % FRAME_ALIGN_BYTES, 0);
            let r = decode_record(&Bytes::from(buf), 42, Some(10), MAX_PAYLOAD_BYTES).unwrap();
            assert_eq!(r.payload.as_ref(), &payload[..]);
            assert_eq!(
                (r.offset, r.term, r.timestamp_us, r.kind),
                (10, 3, 99, EntryKind::Membership)
            );
        }
    }

    #[test]
    fn durable_hint_round_trips() {
        let hint = |offset: u64, durable_end: u64| {
            let mut buf = Vec::new();
            encode(&mut buf, 1, rec(offset, b"x"), durable_end);
            decode_header(&buf, 1, None, MAX_PAYLOAD_BYTES)
                .unwrap()
                .durable_end_hint()
        };
        assert_eq!(hint(100, 90), Some(90));
        assert_eq!(
            hint(100, 100),
            Some(100),
            "everything before me was durable"
        );
        assert_eq!(
            hint(u64::from(u32::MAX) + 5, 0),
            None,
            "too far behind to encode"
        );
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, rec(1, b"hello world"), 0);
        let body = HEADER_SIZE_BYTES + 11;
        for bit in 0..body * 8 {
            let mut copy = buf.clone();
            copy[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_header(&copy, 7, Some(1), MAX_PAYLOAD_BYTES).is_err(),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn misplaced_frames_are_rejected() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, rec(1, b"abc"), 0);
        assert_eq!(
            decode_header(&buf, 8, Some(1), MAX_PAYLOAD_BYTES),
            Err(FrameError::WrongLog)
        );
        assert_eq!(
            decode_header(&buf, 7, Some(2), MAX_PAYLOAD_BYTES),
            Err(FrameError::WrongOffset)
        );
        assert_eq!(
            decode_header(&buf[..20], 7, None, MAX_PAYLOAD_BYTES),
            Err(FrameError::Truncated)
        );
        assert_eq!(decode_header(&buf, 7, None, 2), Err(FrameError::TooLong));
        assert_eq!(
            decode_header(&[0u8; 64], 7, None, 100),
            Err(FrameError::BadChecksum)
        );
    }
}
