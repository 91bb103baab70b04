//! Check logic of the `superblock_decode` fuzz target, shared (through `#[path]`) by
//! `fuzz/fuzz_targets/superblock_decode.rs` and `tests/fuzz_regressions.rs`.
//!
//! Arbitrary bytes through the fixed-layout decoders: `Superblock::decode`, `Footer::decode`,
//! `segment::check_header` and `SparseIndex::decode`. Input layout (missing bytes read as
//! zero):
//! ```text
//!  0      mode: bit 0 log id from the body (at 8 for a footer, 16 for a header), bit 1 base
//!         offset from the body (at 16 / 24), bit 2 file length consistent with the footer's
//!         geometry
//!  1..9   log id     9..17 base offset     17..25 file length     25..29 index interval
//! 29..    body
//! ```
//! The body is also read as field values for the opposite direction: encode a superblock,
//! footer and segment header with arbitrary fields and decode them back.
//!
//! Rules checked: reserved bytes (superblock 12..16 and 64..124, segment header 40..60) are
//! zero in anything that decodes, so every decoded structure re-encodes byte for byte; a
//! footer decodes only if its geometry holds without overflow: `data_end` 8-aligned and at
//! least the header region, `data_end + index + 64 == file_len`, `base <= end_offset <=
//! MAX_OFFSET`, no more records than 48-byte frame headers fit in `data_end - 4096`, and no
//! more index entries than records.

use sitelog::storage::checksum::{checksum, checksum_append};
use sitelog::storage::index::{IndexEntry, SparseIndex, INDEX_ENTRY_SIZE_BYTES};
use sitelog::storage::record::{FRAME_ALIGN_BYTES, HEADER_SIZE_BYTES, MAX_OFFSET};
use sitelog::storage::segment::{self, Footer, FOOTER_BYTES, HEADER_BYTES, HEADER_REGION_BYTES};
use sitelog::storage::superblock::Superblock;

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

/// Bytes of an encoded superblock copy (the rest of its 4 KiB slot is zero).
const SUPERBLOCK_BYTES: usize = 128;

/// Runs every decoder on one input; panics on any violated property.
pub fn check(data: &[u8]) {
    let mut input = data;
    let mode = take::<1>(&mut input)[0];
    let log_id = u64::from_le_bytes(take(&mut input));
    let base = u64::from_le_bytes(take(&mut input));
    let file_len = u64::from_le_bytes(take(&mut input));
    let interval = u32::from_le_bytes(take(&mut input));
    let body = input;

    check_superblock(body);
    let footer = body.get(..FOOTER_BYTES).unwrap_or(body);
    check_footer(footer, mode, log_id, base, file_len);
    if body.len() != FOOTER_BYTES {
        check_footer(body, mode, log_id, base, file_len);
    }
    check_segment_header(body, mode, log_id, base);
    // `SparseIndex::new` asserts a positive interval (validated by `LogOptions`).
    check_index(body, interval.max(1));

    let mut fields = body;
    encode_superblock(&mut fields);
    encode_footer(&mut fields, log_id, base, interval);
    encode_segment_header(log_id, base, file_len, interval);
}

/// The footer geometry rules `Footer::decode` enforces (besides magic, checksum and
/// identity), evaluated without overflow.
fn footer_geometry_ok(f: &Footer, file_len: u64) -> bool {
    let index_bytes = u64::from(f.index_entries) * INDEX_ENTRY_SIZE_BYTES as u64;
    let total = f
        .data_end
        .checked_add(index_bytes)
        .and_then(|x| x.checked_add(FOOTER_BYTES as u64));
    let Some(frame_bytes) = f.data_end.checked_sub(HEADER_REGION_BYTES) else {
        return false;
    };
    let Some(records) = f.end_offset.checked_sub(f.base_offset) else {
        return false;
    };
    total == Some(file_len)
        && f.data_end & (FRAME_ALIGN_BYTES as u64 - 1) == 0 // a power of two
        && f.end_offset <= MAX_OFFSET
        && records <= frame_bytes / HEADER_SIZE_BYTES as u64
        && u64::from(f.index_entries) <= records
}

fn check_superblock(b: &[u8]) {
    let Some(sb) = Superblock::decode(b) else {
        return;
    };
    let enc = sb.encode();
    assert_eq!(
        Superblock::decode(&enc),
        Some(sb),
        "superblock value round trip"
    );
    assert!(enc[128..].iter().all(|&x| x == 0), "slot padding not zero");
    // Every field the decoder reads is re-encoded identically.
    assert_eq!(enc[..12], b[..12], "magic / version");
    assert_eq!(enc[16..64], b[16..64], "superblock fields");
    // Reserved bytes (12..16, 64..124) must be zero: what decodes re-encodes byte for byte.
    assert_eq!(
        enc[..SUPERBLOCK_BYTES],
        b[..SUPERBLOCK_BYTES],
        "superblock with non-zero reserved bytes accepted"
    );
}

fn check_footer(b: &[u8], mode: u8, log_id: u64, base: u64, file_len: u64) {
    let log_id = match mode & 1 {
        0 => log_id,
        _ => u64_at(b, 8).unwrap_or(log_id),
    };
    let base = match mode & 2 {
        0 => base,
        _ => u64_at(b, 16).unwrap_or(base),
    };
    let file_len = match mode & 4 {
        0 => file_len,
        _ => {
            let data_end = u64_at(b, 32).unwrap_or(0);
            let entries = u64::from(u32_at(b, 48).unwrap_or(0));
            data_end
                .wrapping_add(entries * INDEX_ENTRY_SIZE_BYTES as u64)
                .wrapping_add(FOOTER_BYTES as u64)
                .wrapping_add(file_len % 2)
        }
    };
    let Some(f) = Footer::decode(b, log_id, base, file_len) else {
        return;
    };
    assert_eq!(b.len(), FOOTER_BYTES);
    assert_eq!(f.base_offset, base);
    assert_eq!(u64_at(b, 8), Some(log_id), "footer of another log accepted");
    assert!(f.end_offset >= f.base_offset);
    assert!(f.data_end >= HEADER_REGION_BYTES);
    assert!(
        footer_geometry_ok(&f, file_len),
        "footer with bad geometry accepted: {f:?}, file length {file_len}"
    );
    assert_eq!(u32_at(b, 60), Some(f.file_crc));
    // Every byte but the whole-file CRC (which depends on the file before the footer) is
    // re-encoded identically, and the value round-trips.
    let enc = f.encode(log_id, 0);
    assert_eq!(enc[..60], b[..60], "footer round trip");
    let back = Footer::decode(&enc, log_id, base, file_len).expect("re-encoded footer decodes");
    assert_eq!(
        Footer {
            file_crc: f.file_crc,
            ..back
        },
        f
    );
}

fn check_segment_header(b: &[u8], mode: u8, log_id: u64, base: u64) {
    let log_id = match mode & 1 {
        0 => log_id,
        _ => u64_at(b, 16).unwrap_or(log_id),
    };
    let base = match mode & 2 {
        0 => base,
        _ => u64_at(b, 24).unwrap_or(base),
    };
    if segment::check_header(b, log_id, base).is_err() {
        return;
    }
    assert!(b.len() >= HEADER_BYTES);
    assert_eq!(
        u64_at(b, 16),
        Some(log_id),
        "header of another log accepted"
    );
    assert_eq!(
        u64_at(b, 24),
        Some(base),
        "header of another segment accepted"
    );
    let created_us = u64_at(b, 32).unwrap_or(0);
    // Format versions OLDEST_VERSION..=VERSION are read; this binary writes VERSION, so an
    // older accepted header re-encodes with its own version put back (checksum redone).
    let version = u32_at(b, 8).unwrap_or(0);
    assert!((segment::OLDEST_VERSION..=segment::VERSION).contains(&version));
    let mut enc = segment::encode_header(log_id, base, created_us);
    assert!(segment::check_header(&enc, log_id, base).is_ok());
    enc[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = checksum(&enc[..60]);
    enc[60..64].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(enc[..40], b[..40], "segment header fields");
    // Reserved bytes 40..60 must be zero: what checks out re-encodes byte for byte.
    assert_eq!(
        enc[..HEADER_BYTES],
        b[..HEADER_BYTES],
        "segment header with non-zero reserved bytes accepted"
    );
}

fn check_index(b: &[u8], interval: u32) {
    let Some(mut ix) = SparseIndex::decode(b, interval) else {
        return;
    };
    assert_eq!(b.len() % INDEX_ENTRY_SIZE_BYTES, 0);
    assert_eq!(ix.len(), b.len() / INDEX_ENTRY_SIZE_BYTES);
    assert_eq!(ix.is_empty(), b.is_empty());
    assert_eq!(ix.encode(), b, "index round trip");
    let entries: Vec<IndexEntry> = b
        .chunks_exact(INDEX_ENTRY_SIZE_BYTES)
        .map(|c| IndexEntry {
            relative_offset: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            file_pos: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    for (i, e) in entries.iter().enumerate().take(64) {
        assert_eq!(ix.lookup(e.relative_offset), Some(*e));
        if e.relative_offset > 0 {
            let before = ix.lookup(e.relative_offset - 1);
            assert_eq!(before, i.checked_sub(1).map(|j| entries[j]));
        }
    }
    if let Some(first) = entries.first().filter(|e| e.relative_offset < u32::MAX) {
        ix.truncate(first.relative_offset + 1);
        assert_eq!(ix.len(), 1);
        assert_eq!(ix.lookup(u32::MAX), Some(*first));
    }
}

fn encode_superblock(fields: &mut &[u8]) {
    let sb = Superblock {
        sequence: u64::from_le_bytes(take(fields)),
        log_id: u64::from_le_bytes(take(fields)),
        created_us: u64::from_le_bytes(take(fields)),
        start_offset: u64::from_le_bytes(take(fields)),
        durable_end: u64::from_le_bytes(take(fields)),
        truncate_from: u64::from_le_bytes(take(fields)),
    };
    let enc = sb.encode();
    assert_eq!(Superblock::decode(&enc), Some(sb));
    assert_eq!(Superblock::decode(&enc[..128]), Some(sb));
    assert_eq!(Superblock::decode(&enc[..127]), None);
    let bit = (sb.sequence % (128 * 8)) as usize;
    let mut flipped = enc;
    flipped[bit / 8] ^= 1 << (bit % 8);
    assert_eq!(
        Superblock::decode(&flipped),
        None,
        "bit {bit} flip not detected"
    );
    // A non-zero reserved byte is rejected even with the checksum redone over it.
    let reserved: Vec<usize> = (12..16).chain(64..SUPERBLOCK_BYTES - 4).collect();
    let at = reserved[(sb.created_us % reserved.len() as u64) as usize];
    let mut forged = enc;
    forged[at] = (sb.log_id as u8).max(1);
    let crc = checksum(&forged[..SUPERBLOCK_BYTES - 4]);
    forged[SUPERBLOCK_BYTES - 4..SUPERBLOCK_BYTES].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        Superblock::decode(&forged),
        None,
        "superblock with reserved byte {at} set accepted"
    );
}

fn encode_footer(fields: &mut &[u8], log_id: u64, base: u64, crc_before: u32) {
    let end_sel = u64::from_le_bytes(take(fields));
    let mut data_end = u64::from_le_bytes(take(fields));
    let max_timestamp_us = u64::from_le_bytes(take(fields));
    let mut index_entries = u32::from_le_bytes(take(fields));
    let index_crc = u32::from_le_bytes(take(fields));
    let end_offset = match end_sel & 3 {
        0 => base.saturating_add(end_sel >> 2),
        1 => end_sel,
        // Steered towards a consistent geometry (which arbitrary fields rarely have); the
        // expected outcome is still decided by `footer_geometry_ok` alone.
        _ => {
            data_end = HEADER_REGION_BYTES + (data_end % (1 << 24)) * FRAME_ALIGN_BYTES as u64;
            let fit = (data_end - HEADER_REGION_BYTES) / HEADER_SIZE_BYTES as u64;
            let records = (end_sel >> 2) % (fit + 2); // one more than fits, now and then
            index_entries = (u64::from(index_entries) % (records + 2)) as u32;
            base.saturating_add(records)
        }
    };
    let f = Footer {
        base_offset: base,
        end_offset,
        data_end,
        max_timestamp_us,
        index_entries,
        index_crc,
        file_crc: 0,
    };
    let enc = f.encode(log_id, crc_before);
    let index_bytes = u64::from(f.index_entries) * INDEX_ENTRY_SIZE_BYTES as u64;
    // Wraps when the geometry overflows: decode must then reject it, not wrap too.
    let file_len = f
        .data_end
        .wrapping_add(index_bytes)
        .wrapping_add(FOOTER_BYTES as u64);
    let got = Footer::decode(&enc, log_id, base, file_len);
    let valid = footer_geometry_ok(&f, file_len);
    assert_eq!(got.is_some(), valid, "footer {f:?}: decode gave {got:?}");
    if let Some(g) = got {
        assert_eq!(Footer { file_crc: 0, ..g }, f);
        assert_eq!(
            g.file_crc,
            checksum_append(crc_before, &enc[..60]),
            "whole-file CRC continues the CRC of the bytes before the footer"
        );
        assert_eq!(Footer::decode(&enc, log_id ^ 1, base, file_len), None);
        assert_eq!(Footer::decode(&enc, log_id, base ^ 1, file_len), None);
        assert_eq!(Footer::decode(&enc, log_id, base, file_len ^ 8), None);
    }
}

fn encode_segment_header(log_id: u64, base: u64, created_us: u64, sel: u32) {
    let enc = segment::encode_header(log_id, base, created_us);
    assert_eq!(enc.len() as u64, HEADER_REGION_BYTES);
    assert!(enc[HEADER_BYTES..].iter().all(|&b| b == 0));
    assert_eq!(segment::check_header(&enc, log_id, base), Ok(()));
    assert_eq!(
        segment::check_header(&enc[..HEADER_BYTES], log_id, base),
        Ok(())
    );
    assert!(segment::check_header(&enc, log_id ^ 1, base).is_err());
    assert!(segment::check_header(&enc, log_id, base ^ 1).is_err());
    assert!(segment::check_header(&enc[..HEADER_BYTES - 1], log_id, base).is_err());
    // A non-zero reserved byte (40..60) is rejected even with the checksum redone over it.
    let at = 40 + (sel % 20) as usize;
    let mut forged = enc.clone();
    forged[at] = ((sel >> 8) as u8).max(1);
    let crc = checksum(&forged[..60]);
    forged[60..64].copy_from_slice(&crc.to_le_bytes());
    assert!(
        segment::check_header(&forged, log_id, base).is_err(),
        "segment header with reserved byte {at} set accepted"
    );
}
