//! Check logic of the `record_decode` fuzz target, shared (through `#[path]`) by
//! `fuzz/fuzz_targets/record_decode.rs` and `tests/fuzz_regressions.rs`.
//!
//! Input layout (missing bytes read as zero):
//! ```text
//!  0      mode: bit 0 log id from the frame, bits 1-2 expected offset (none / the frame's /
//!         param / the frame's + 1), bits 3-4 max payload (format max / param / u32::MAX /
//!         param % 8192), bits 5-6 entry kind for the encode direction, bit 7 durable end
//!         as `offset - dur` instead of `min(dur, offset)`
//!  1..9   log id        9..17  offset     17..21 max payload    21..29 term
//! 29..37  timestamp    37..45  durable end (encode direction)
//! 45..    body: decoded as a frame, and encoded as a payload
//! ```
//!
//! Offsets above `record::MAX_OFFSET` (2^62) are not valid: `decode_header` rejects them
//! (`BadHeader`), and `encode` produces, without panicking, a frame that does not decode.
//! Padding after the payload must be zero as far as the buffer holds it.

use bytes::Bytes;
use sitelog::storage::checksum::checksum;
use sitelog::storage::record::{
    self, EntryKind, FrameError, RecordRef, FRAME_ALIGN_BYTES, HEADER_SIZE_BYTES, MAX_OFFSET,
    MAX_PAYLOAD_BYTES,
};

struct Params {
    mode: u8,
    log_id: u64,
    offset: u64,
    max: u32,
    term: u64,
    timestamp_us: u64,
    durable: u64,
}

fn take<const N: usize>(input: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = N.min(input.len());
    out[..n].copy_from_slice(&input[..n]);
    *input = &input[n..];
    out
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// Runs both directions on one input; panics on any violated property.
pub fn check(data: &[u8]) {
    let mut input = data;
    let p = Params {
        mode: take::<1>(&mut input)[0],
        log_id: u64::from_le_bytes(take(&mut input)),
        offset: u64::from_le_bytes(take(&mut input)),
        max: u32::from_le_bytes(take(&mut input)),
        term: u64::from_le_bytes(take(&mut input)),
        timestamp_us: u64::from_le_bytes(take(&mut input)),
        durable: u64::from_le_bytes(take(&mut input)),
    };
    decode_direction(&p, input);
    encode_direction(&p, input);
}

/// Arbitrary bytes through `decode_header` / `decode_record`.
fn decode_direction(p: &Params, buf: &[u8]) {
    let log_id = match p.mode & 1 {
        0 => p.log_id,
        _ => u64_at(buf, 16).unwrap_or(p.log_id),
    };
    let expected = match (p.mode >> 1) & 3 {
        0 => None,
        1 => Some(u64_at(buf, 8).unwrap_or(p.offset)),
        2 => Some(p.offset),
        _ => Some(u64_at(buf, 8).unwrap_or(p.offset).wrapping_add(1)),
    };
    let max = match (p.mode >> 3) & 3 {
        0 => MAX_PAYLOAD_BYTES,
        1 => p.max,
        2 => u32::MAX,
        _ => p.max % 8192,
    };
    let header = record::decode_header(buf, log_id, expected, max);
    let shared = Bytes::copy_from_slice(buf);
    let rec = record::decode_record(&shared, log_id, expected, max);

    let h = match header {
        Err(e) => {
            assert_eq!(
                rec.err(),
                Some(e),
                "decode_record disagrees with decode_header"
            );
            check_error_reason(buf, log_id, expected, max, e);
            return;
        }
        Ok(h) => h,
    };
    let rec = rec.expect("decode_record fails where decode_header succeeds");
    assert!(
        h.payload_len <= max,
        "payload_len {} above max {max}",
        h.payload_len
    );
    assert!(h.payload_len <= MAX_PAYLOAD_BYTES);
    let body_end = HEADER_SIZE_BYTES + h.payload_len as usize;
    assert!(
        body_end <= buf.len(),
        "decoded a frame longer than the buffer"
    );
    if let Some(e) = expected {
        assert_eq!(h.offset, e, "offset differs from the expected one");
    }
    assert_eq!(
        u64_at(buf, 16),
        Some(log_id),
        "frame of another log accepted"
    );
    assert_eq!(u64_at(buf, 8), Some(h.offset));
    assert!(
        h.offset <= MAX_OFFSET,
        "offset {} above MAX_OFFSET",
        h.offset
    );
    assert_eq!(u32_at(buf, 0), Some(h.checksum));
    assert_eq!(u32_at(buf, 44), Some(h.durable_lag));
    let padding_end = h.frame_len().min(buf.len());
    assert!(
        buf[body_end..padding_end].iter().all(|&b| b == 0),
        "frame decoded although its padding is not zero"
    );
    // `durable_lag` is `1 + offset - durable_end`, 0 when unknown.
    assert_eq!(h.durable_end_hint(), expected_hint(h.offset, h.durable_lag));
    assert_eq!(
        (rec.offset, rec.term, rec.timestamp_us, rec.kind),
        (h.offset, h.term, h.timestamp_us, h.kind)
    );
    assert_eq!(rec.payload.as_ref(), &buf[HEADER_SIZE_BYTES..body_end]);
    let base = shared.as_ptr() as usize;
    let at = rec.payload.as_ptr() as usize;
    assert!(
        rec.payload.is_empty() || (at >= base && at + rec.payload.len() <= base + shared.len()),
        "payload is not a slice of the frame buffer"
    );

    // Round trip: the decoded fields encode back to the same bytes, padding included.
    let payload = &buf[HEADER_SIZE_BYTES..body_end];
    let mut out = Vec::new();
    match durable_end_for_lag(h.offset, h.durable_lag) {
        Some(durable_end) => {
            record::encode(&mut out, log_id, fields(&h, payload), durable_end);
        }
        None => {
            // No `durable_end` makes `encode` write this lag (0 below offset u32::MAX, or more
            // than offset + 1): compare with the lag patched in and the checksum redone.
            record::encode(&mut out, log_id, fields(&h, payload), h.offset);
            out[44..48].copy_from_slice(&h.durable_lag.to_le_bytes());
            let crc = checksum(&out[4..body_end]);
            out[..4].copy_from_slice(&crc.to_le_bytes());
        }
    }
    assert_eq!(out.len(), h.frame_len());
    assert_eq!(
        &out[..body_end],
        &buf[..body_end],
        "checksummed bytes differ"
    );
    assert_eq!(
        &out[body_end..padding_end],
        &buf[body_end..padding_end],
        "padding differs from what encode writes"
    );

    // The declared length is a hard bound.
    if h.payload_len > 0 {
        assert_eq!(
            record::decode_header(buf, log_id, expected, h.payload_len - 1),
            Err(FrameError::TooLong)
        );
    }
    assert_eq!(
        record::decode_header(&buf[..body_end - 1], log_id, expected, max),
        Err(FrameError::Truncated)
    );
}

fn fields<'a>(h: &record::FrameHeader, payload: &'a [u8]) -> RecordRef<'a> {
    RecordRef {
        offset: h.offset,
        term: h.term,
        timestamp_us: h.timestamp_us,
        kind: h.kind,
        payload,
    }
}

/// The durable end whose encoding is `lag` at `offset`, if `encode` can produce it.
fn durable_end_for_lag(offset: u64, lag: u32) -> Option<u64> {
    match lag {
        0 => offset.checked_sub(u64::from(u32::MAX)),
        _ => offset.checked_sub(u64::from(lag) - 1),
    }
}

/// `durable_end_hint` as documented: `offset + 1 - durable_lag`; none for a lag of 0
/// (unknown) or above `offset + 1` (malformed).
fn expected_hint(offset: u64, lag: u32) -> Option<u64> {
    let back = u64::from(lag).checked_sub(1)?;
    offset.checked_sub(back)
}

/// The reason reported for a frame that does not decode is the first failing check.
fn check_error_reason(buf: &[u8], log_id: u64, expected: Option<u64>, max: u32, e: FrameError) {
    if buf.len() < HEADER_SIZE_BYTES {
        assert_eq!(e, FrameError::Truncated);
        return;
    }
    let payload_len = u32_at(buf, 4).unwrap_or(0);
    if payload_len > max.min(MAX_PAYLOAD_BYTES) {
        assert_eq!(e, FrameError::TooLong);
        return;
    }
    // Kinds 0..=4: normal, blank, membership, produce, register (issue 17).
    if buf[40] > 4 || buf[41..44] != [0, 0, 0] {
        assert_eq!(e, FrameError::BadHeader);
        return;
    }
    let body_end = HEADER_SIZE_BYTES + payload_len as usize;
    if buf.len() < body_end {
        assert_eq!(e, FrameError::Truncated);
        return;
    }
    if checksum(&buf[4..body_end]) != u32_at(buf, 0).unwrap_or(0) {
        assert_eq!(e, FrameError::BadChecksum);
        return;
    }
    if u64_at(buf, 16) != Some(log_id) {
        assert_eq!(e, FrameError::WrongLog);
        return;
    }
    let offset = u64_at(buf, 8).unwrap_or(0);
    if expected.is_some_and(|x| x != offset) {
        assert_eq!(e, FrameError::WrongOffset);
        return;
    }
    if offset > MAX_OFFSET {
        assert_eq!(e, FrameError::BadHeader);
        return;
    }
    let padding_end = record::frame_len(payload_len as usize).min(buf.len());
    assert!(
        buf[body_end..padding_end].iter().any(|&b| b != 0),
        "a frame that passes every check was rejected with {e:?}"
    );
    assert_eq!(e, FrameError::BadHeader);
}

/// Arbitrary fields through `encode`, then back through `decode_header` / `decode_record`.
fn encode_direction(p: &Params, payload: &[u8]) {
    let kind = match (p.mode >> 5) & 3 {
        0 => EntryKind::Normal,
        1 => EntryKind::Blank,
        _ => EntryKind::Membership,
    };
    let durable_end = if p.mode & 0x80 != 0 {
        p.offset.saturating_sub(p.durable)
    } else {
        p.durable.min(p.offset)
    };
    let mut out = vec![0xa5; usize::from(p.mode & 7)]; // encode appends after existing bytes
    let start = out.len();
    // Never panics, whatever the offset (above MAX_OFFSET too).
    record::encode(
        &mut out,
        p.log_id,
        RecordRef {
            offset: p.offset,
            term: p.term,
            timestamp_us: p.timestamp_us,
            kind,
            payload,
        },
        durable_end,
    );
    assert!(
        out[..start].iter().all(|&b| b == 0xa5),
        "encode touched earlier bytes"
    );
    let frame = &out[start..];
    assert_eq!(frame.len(), record::frame_len(payload.len()));
    assert_eq!(frame.len() % FRAME_ALIGN_BYTES, 0);
    let body_end = HEADER_SIZE_BYTES + payload.len();
    assert!(
        frame[body_end..].iter().all(|&b| b == 0),
        "padding not zero"
    );
    assert_eq!(u64_at(frame, 8), Some(p.offset), "offset field");
    assert_eq!(u64_at(frame, 16), Some(p.log_id), "log id field");
    // `1 + offset - durable_end`, or 0 (unknown) when that does not fit in a u32.
    let stored_lag = u32::try_from(p.offset - durable_end)
        .ok()
        .and_then(|l| l.checked_add(1))
        .unwrap_or(0);
    assert_eq!(u32_at(frame, 44), Some(stored_lag), "durable lag field");

    let len = payload.len() as u32;
    // A frame is only accepted at its own place, whole and under the limit (these checks
    // come before the offset bound).
    assert_eq!(
        record::decode_header(frame, p.log_id ^ 1, None, len),
        Err(FrameError::WrongLog)
    );
    assert_eq!(
        record::decode_header(frame, p.log_id, Some(p.offset ^ 1), len),
        Err(FrameError::WrongOffset)
    );
    assert_eq!(
        record::decode_header(&frame[..body_end - 1], p.log_id, None, len),
        Err(FrameError::Truncated)
    );
    if len > 0 {
        assert_eq!(
            record::decode_header(frame, p.log_id, None, len - 1),
            Err(FrameError::TooLong)
        );
    }

    if p.offset > MAX_OFFSET {
        // Encoded without overflow, but not a valid frame: decode rejects it.
        for expected in [Some(p.offset), None] {
            assert_eq!(
                record::decode_header(frame, p.log_id, expected, len),
                Err(FrameError::BadHeader),
                "frame with offset {} above MAX_OFFSET",
                p.offset
            );
        }
        let shared = Bytes::copy_from_slice(frame);
        assert_eq!(
            record::decode_record(&shared, p.log_id, None, MAX_PAYLOAD_BYTES).err(),
            Some(FrameError::BadHeader)
        );
        return;
    }

    let h = record::decode_header(frame, p.log_id, Some(p.offset), len)
        .unwrap_or_else(|e| panic!("encoded frame does not decode: {e}"));
    assert_eq!(
        (h.offset, h.term, h.timestamp_us, h.kind, h.payload_len),
        (p.offset, p.term, p.timestamp_us, kind, len)
    );
    assert_eq!(h.frame_len(), frame.len());
    assert_eq!(h.durable_lag, stored_lag);
    assert_eq!(
        h.durable_end_hint(),
        (stored_lag != 0).then_some(durable_end)
    );
    let shared = Bytes::copy_from_slice(frame);
    let rec = record::decode_record(&shared, p.log_id, None, MAX_PAYLOAD_BYTES)
        .unwrap_or_else(|e| panic!("encoded frame does not decode as a record: {e}"));
    assert_eq!(rec.payload.as_ref(), payload);
    assert_eq!(
        (rec.offset, rec.term, rec.timestamp_us, rec.kind),
        (p.offset, p.term, p.timestamp_us, kind)
    );
    // The padding is checked as far as the buffer holds it: a buffer that ends inside it
    // still decodes.
    assert_eq!(
        record::decode_header(&frame[..body_end], p.log_id, Some(p.offset), len),
        Ok(h),
        "frame cut inside its padding"
    );

    // A flipped bit anywhere in the checksummed bytes (the length field aside: a changed
    // length can only be caught by the checksum over different bytes) is detected, and so is
    // a non-zero padding byte (outside the checksum).
    let bit = (p.durable as usize) % (body_end * 8);
    if !(32..64).contains(&bit) {
        let mut copy = frame.to_vec();
        copy[bit / 8] ^= 1 << (bit % 8);
        assert!(
            record::decode_header(&copy, p.log_id, Some(p.offset), MAX_PAYLOAD_BYTES).is_err(),
            "bit {bit} flipped and the frame still decodes"
        );
    }
    let padding = frame.len() - body_end;
    if padding > 0 {
        let at = body_end + (p.term as usize) % padding;
        let mut copy = frame.to_vec();
        copy[at] = (p.timestamp_us as u8).max(1);
        assert_eq!(
            record::decode_header(&copy, p.log_id, Some(p.offset), len),
            Err(FrameError::BadHeader),
            "non-zero padding byte at {at} accepted"
        );
        // Cut just after that byte: still in the buffer, still rejected.
        assert_eq!(
            record::decode_header(&copy[..at + 1], p.log_id, Some(p.offset), len),
            Err(FrameError::BadHeader),
            "non-zero padding byte at the end of the buffer accepted"
        );
    }
}
