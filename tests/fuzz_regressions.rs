//! Replays every input under `tests/fuzz_regressions/<target>/` through the same checks the
//! cargo-fuzz targets in `fuzz/` run (the check code lives in `fuzz/checks/` and is compiled
//! into both). Crashes found by the fuzzers are added there as `crash-<short-name>.bin`; the
//! seeds make sure the checks run even when there are none. Inputs that once exposed library
//! bugs (since fixed, see `fuzz/README.md`) stay as regressions and run with the full checks.

use std::path::{Path, PathBuf};

#[path = "../fuzz/checks/record_decode.rs"]
mod record_decode;
#[path = "../fuzz/checks/recovery_scan.rs"]
mod recovery_scan;
#[path = "../fuzz/checks/superblock_decode.rs"]
mod superblock_decode;
#[path = "../fuzz/checks/tls_handshake.rs"]
mod tls_handshake;
#[path = "../fuzz/checks/wire_decode.rs"]
mod wire_decode;

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    let mut failed = Vec::new();
    for path in inputs(target) {
        let data = std::fs::read(&path).expect("read regression input");
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: failing inputs: {failed:#?}");
}

#[test]
fn record_decode_regressions() {
    replay("record_decode", record_decode::check);
}

#[test]
fn recovery_scan_regressions() {
    replay("recovery_scan", recovery_scan::check);
}

#[test]
fn superblock_decode_regressions() {
    replay("superblock_decode", superblock_decode::check);
}

#[test]
fn wire_decode_regressions() {
    replay("wire_decode", wire_decode::check);
}

/// Rewrites the hand-made seed inputs (file names not starting with `crash-`) from the
/// current encoders, for when the on-disk format changes:
/// `cargo test --test fuzz_regressions -- --ignored write_seeds`.
#[test]
#[ignore = "writes files; run by hand after a format change"]
fn write_seeds() {
    seeds::write_all(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions"));
}

mod seeds {
    use sitelog::storage::checksum::checksum;
    use sitelog::storage::index::SparseIndex;
    use sitelog::storage::record::{self, EntryKind, RecordRef, MAX_OFFSET};
    use sitelog::storage::segment::{self, Footer};
    use sitelog::storage::superblock::Superblock;
    use std::path::Path;

    fn put(root: &Path, target: &str, name: &str, data: &[u8]) {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("create seed directory");
        std::fs::write(dir.join(format!("{name}.bin")), data).expect("write seed");
    }

    /// The 45-byte parameter block of `record_decode` (see `fuzz/checks/record_decode.rs`).
    fn record_params(mode: u8, log_id: u64, offset: u64, max: u32, durable: u64) -> Vec<u8> {
        let mut v = vec![mode];
        v.extend_from_slice(&log_id.to_le_bytes());
        v.extend_from_slice(&offset.to_le_bytes());
        v.extend_from_slice(&max.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes()); // term
        v.extend_from_slice(&2u64.to_le_bytes()); // timestamp
        v.extend_from_slice(&durable.to_le_bytes());
        v
    }

    fn frame(durable_end: u64) -> Vec<u8> {
        frame_at(7, durable_end)
    }

    fn frame_at(offset: u64, durable_end: u64) -> Vec<u8> {
        let mut f = Vec::new();
        let rec = RecordRef {
            offset,
            term: 3,
            timestamp_us: 99,
            kind: EntryKind::Membership,
            payload: b"hello world",
        };
        record::encode(&mut f, 42, rec, durable_end);
        f
    }

    /// The 29-byte parameter block of `superblock_decode`.
    fn fixed_params(mode: u8, log_id: u64, base: u64, file_len: u64, interval: u32) -> Vec<u8> {
        let mut v = vec![mode];
        v.extend_from_slice(&log_id.to_le_bytes());
        v.extend_from_slice(&base.to_le_bytes());
        v.extend_from_slice(&file_len.to_le_bytes());
        v.extend_from_slice(&interval.to_le_bytes());
        v
    }

    /// Header of `recovery_scan`: flags, record count, sync point, disk seed, lengths.
    fn scan_head(flags: u8, n: u8, sync_at: u8, seed: u8, len: u8) -> Vec<u8> {
        let mut v = vec![flags, n - 1, sync_at, seed];
        v.extend((0..n).map(|i| len.wrapping_add(i.wrapping_mul(13))));
        v
    }

    pub fn write_all(root: &Path) {
        // record_decode. Modes: bit 0 log id from the frame, bits 1-2 expected offset,
        // bits 3-4 max, bit 7 durable end as offset - dur.
        let t = "record_decode";
        let with = |mode: u8, max: u32, body: &[u8]| {
            let mut v = record_params(mode, 0, 0, max, 0);
            v.extend_from_slice(body);
            v
        };
        put(root, t, "valid_frame", &with(0b011, 0, &frame(5)));
        put(
            root,
            t,
            "valid_frame_wrong_offset",
            &with(0b111, 0, &frame(7)),
        );
        put(
            root,
            t,
            "valid_frame_above_max",
            &with(0b01_011, 4, &frame(0)),
        );
        let mut f = frame(5);
        f[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        put(root, t, "oversized_length_field", &with(0b10_011, 0, &f));
        put(root, t, "all_zero", &[0u8; 256]);
        put(root, t, "empty", &[]);
        let mut v = record_params(0b1110_0000, u64::MAX, u64::MAX, u32::MAX, 1 << 40);
        v.extend_from_slice(&[0xff; 100]);
        put(root, t, "encode_extremes", &v);
        // Fixed: padding bytes outside the checksum were not checked to be zero (now
        // BadHeader).
        let mut f = frame(5);
        let last = f.len() - 1;
        f[last] = 4;
        put(root, t, "nonzero_padding_accepted", &with(0b011, 0, &f));
        // Fixed: encode overflowed computing the lag of offset u64::MAX, durable end 0.
        put(
            root,
            t,
            "encode_lag_overflow",
            &record_params(0, 1, u64::MAX, 0, 0),
        );
        // The largest valid offset round-trips, with a durable hint; one above it is encoded
        // without panicking and rejected (BadHeader), also when found in the decode direction.
        let mut v = record_params(0b011, 42, MAX_OFFSET, 0, 3);
        v.extend_from_slice(&frame_at(MAX_OFFSET, MAX_OFFSET - 3));
        put(root, t, "offset_max_round_trip", &v);
        let mut v = record_params(0b011, 42, MAX_OFFSET + 1, 0, 0);
        v.extend_from_slice(&frame_at(MAX_OFFSET + 1, MAX_OFFSET));
        put(root, t, "offset_above_max_rejected", &v);

        // superblock_decode. Modes: bit 0 log id from the body, bit 1 base from the body,
        // bit 2 file length consistent with the footer.
        let t = "superblock_decode";
        let sb = Superblock {
            sequence: 5,
            log_id: 9,
            created_us: 1,
            start_offset: 2,
            durable_end: 10,
            truncate_from: u64::MAX,
        };
        let mut v = fixed_params(0, 0, 0, 0, 0);
        v.extend_from_slice(&sb.encode()[..128]);
        put(root, t, "valid_superblock", &v);
        let footer = Footer {
            base_offset: 100,
            end_offset: 110,
            data_end: 8192,
            max_timestamp_us: 3,
            index_entries: 2,
            index_crc: 1,
            file_crc: 0,
        };
        let mut v = fixed_params(0b111, 0, 0, 0, 4096);
        v.extend_from_slice(&footer.encode(7, 12345));
        put(root, t, "valid_footer", &v);
        let mut v = fixed_params(0b011, 0, 0, 0, 0);
        v.extend_from_slice(&segment::encode_header(7, 100, 5)[..64]);
        put(root, t, "valid_segment_header", &v);
        let mut ix = SparseIndex::new(100);
        for i in 0..10u32 {
            ix.observe(i, 4096 + i * 64);
        }
        let mut v = fixed_params(0, 0, 0, 0, 100);
        v.extend_from_slice(&ix.encode());
        put(root, t, "valid_index", &v);
        put(root, t, "all_zero", &[0u8; 200]);
        // Fixed: a checksum-valid footer whose data_end + index + 64 wraps around overflowed.
        let wrapping = Footer {
            data_end: u64::MAX - 8,
            index_entries: 0,
            ..footer
        };
        let mut v = fixed_params(0b111, 0, 0, 0, 4096);
        v.extend_from_slice(&wrapping.encode(7, 0));
        put(root, t, "footer_geometry_overflow", &v);
        // Checksum-valid footers that break one geometry rule each (file length consistent).
        let broken = [
            (
                "footer_data_end_unaligned",
                Footer {
                    data_end: 8196,
                    ..footer
                },
            ),
            (
                "footer_too_many_records",
                Footer {
                    end_offset: 100 + 86,
                    ..footer
                },
            ),
            (
                "footer_index_above_records",
                Footer {
                    end_offset: 101,
                    ..footer
                },
            ),
            (
                "footer_end_offset_above_max",
                Footer {
                    base_offset: MAX_OFFSET - 5,
                    end_offset: MAX_OFFSET + 1,
                    ..footer
                },
            ),
        ];
        for (name, f) in broken {
            let mut v = fixed_params(0b111, 0, 0, 0, 4096);
            v.extend_from_slice(&f.encode(7, 0));
            put(root, t, name, &v);
        }
        // Reserved bytes set, checksums redone: rejected.
        let mut enc = sb.encode();
        enc[70] = 1;
        let crc = checksum(&enc[..124]);
        enc[124..128].copy_from_slice(&crc.to_le_bytes());
        let mut v = fixed_params(0, 0, 0, 0, 0);
        v.extend_from_slice(&enc[..128]);
        put(root, t, "superblock_reserved_nonzero", &v);
        let mut enc = segment::encode_header(7, 100, 5);
        enc[50] = 1;
        let crc = checksum(&enc[..60]);
        enc[60..64].copy_from_slice(&crc.to_le_bytes());
        let mut v = fixed_params(0b011, 0, 0, 0, 0);
        v.extend_from_slice(&enc[..64]);
        put(root, t, "segment_header_reserved_nonzero", &v);

        // recovery_scan. Flags: 1 sync mid, 2 close, 4 crash, 8 eager watermark, 16 dense
        // index, 32 reopen, 64 long records. Mutation op: bits 0-1 file (0/1 tail, 2 first,
        // 3 chosen), bits 2-5 kind; then u16 position, u8 length, operands.
        let t = "recovery_scan";
        put(
            root,
            t,
            "clean_close_reopen",
            &scan_head(2 | 32 | 16, 20, 0, 0, 10),
        );
        put(
            root,
            t,
            "crash_after_mid_sync",
            &scan_head(4 | 1 | 8 | 32, 40, 25, 7, 200),
        );
        let mut v = scan_head(0, 10, 0, 0, 30);
        v.extend_from_slice(&[4 << 2, 0x10, 0x10, 0x40]); // flip a byte of the tail
        put(root, t, "tail_bit_flip", &v);
        let mut v = scan_head(2 | 64, 48, 0, 0, 120);
        v.extend_from_slice(&[2, 0x88, 0x13, 16]); // 16 bytes into the first (sealed) segment
        v.extend_from_slice(&[0xab; 16]);
        put(root, t, "sealed_segment_poke", &v);
        let mut v = scan_head(2 | 64, 48, 0, 0, 120);
        v.extend_from_slice(&[2 | (1 << 2), 10, 0, 4, 1, 2, 3, 4]); // damage the first footer
        put(root, t, "sealed_footer_damage", &v);
        let mut v = scan_head(1 | 16 | 32, 12, 6, 0, 40);
        v.extend_from_slice(&[3 << 2, 0x00, 0x16, 0]); // chop acknowledged records
        put(root, t, "tail_chop", &v);
        let mut v = scan_head(64 | 32, 30, 0, 3, 60);
        v.extend_from_slice(&[7 << 2, 0x00, 0x20, 0]); // zero a sector of the tail
        v.extend_from_slice(&[2 << 2, 0, 0, 8, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]);
        put(root, t, "tail_lost_sector_and_garbage", &v);
        let mut v = scan_head(2 | 16, 20, 0, 0, 20);
        v.extend_from_slice(&[5 << 2, 0x00, 0x14, 12, 0x00, 0x10]); // stale copy of frames
        put(root, t, "tail_stale_copy", &v);
        // A checksum-valid frame of offset 2 written over record 1 of the tail.
        let mut v = scan_head(32, 6, 0, 0, 1);
        v.extend_from_slice(&[9 << 2, 0x38, 0x10, 4, 202, 0, 1, 2, 3, 4, 0]);
        put(root, t, "forged_frame_wrong_place", &v);
        // A checksum-valid index and footer ending the tail: it loads as sealed.
        let mut v = scan_head(32 | 16, 6, 0, 0, 1);
        v.extend_from_slice(&[12 << 2, 0, 0, 2, 2, 1, 0, 0]);
        put(root, t, "forged_footer_on_tail", &v);
        // Fixed bug, reached from Log::open: after a bad frame, the search for a later proof
        // of durability finds a valid frame of offset u64::MAX and `durable_end_hint`
        // overflows. Three 56-byte frames end the tail at 4264; 8 bytes of garbage, then the
        // forged frame at 4272.
        let mut v = scan_head(0, 3, 0, 0, 1);
        v.extend_from_slice(&[
            2 << 2,
            0,
            0,
            8,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
        ]);
        v.extend_from_slice(&[9 << 2, 0xb0, 0x10, 0, 255, 0, 1, 0]);
        put(root, t, "open_proof_frame_offset_max", &v);
        // Fixed bug, reached from Log::open: a checksum-valid footer whose geometry only adds
        // up by wrapping around (Footer::decode overflows).
        let mut v = scan_head(0, 3, 0, 0, 1);
        v.extend_from_slice(&[12 << 2, 0, 0, 0, 2 << 3, 0]);
        put(root, t, "open_footer_geometry_overflow", &v);
        // Fixed bug, reached from Log::open: a tail file cut to 1000 bytes keeps a valid
        // header, and scan_tail sliced map[..4096]. Now removed like a never-used file (the
        // log was not synced, nothing was durable).
        let mut v = scan_head(0, 3, 0, 0, 1);
        v.extend_from_slice(&[3 << 2, 0xe8, 0x03, 0]);
        put(root, t, "open_short_tail_file", &v);
        // Fixed bug, reached from Log::read: a checksum-valid index and footer end the tail
        // of an unsynced log (so it loads as sealed) with data_end 4264 and an entry (1, 4944)
        // past it; Segment::frame_at sliced map[4944..4264].
        let mut v = scan_head(0, 3, 0, 0, 1);
        v.extend_from_slice(&[12 << 2, 0xa8, 0x10, 2, 0b1010, 0, 100, 0, 0]);
        put(root, t, "read_sealed_index_past_data_end", &v);
        // Fixed bug, reached from Log::append: a checksum-valid index and footer end the tail
        // with end offset u64::MAX; the log opened ending there and the next append overflowed.
        let mut v = scan_head(32, 3, 0, 0, 1);
        v.extend_from_slice(&[12 << 2, 0, 0, 1, 4]);
        v.extend_from_slice(&u64::MAX.to_le_bytes());
        v.extend_from_slice(&[0, 0]);
        put(root, t, "append_after_footer_end_offset_max", &v);
        // The same cut after a close with an eager watermark: the tail was durable, so the
        // short file is corruption, not a never-used file.
        let mut v = scan_head(2 | 8, 3, 0, 0, 1);
        v.extend_from_slice(&[3 << 2, 0xe8, 0x03, 0]);
        put(root, t, "short_tail_below_watermark", &v);
        // A checksum-valid index with an entry (1, 4100) that is not 8-aligned.
        let mut v = scan_head(32, 6, 0, 0, 1);
        v.extend_from_slice(&[12 << 2, 0, 0, 2, 1 | 2 | (3 << 3)]);
        for x in [0u32, 4096, 1, 4100] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&[0, 0]);
        put(root, t, "sealed_index_unaligned_position", &v);
        // A checksum-valid footer ending the tail at MAX_OFFSET (more records than fit).
        let mut v = scan_head(32, 3, 0, 0, 1);
        v.extend_from_slice(&[12 << 2, 0, 0, 1, 6 | (3 << 3)]);
        v.extend_from_slice(&MAX_OFFSET.to_le_bytes());
        v.extend_from_slice(&[0, 0]);
        put(root, t, "footer_end_offset_at_max", &v);
        // A valid frame of offset MAX_OFFSET + 1 past a bad tail frame, where recovery looks
        // for a later proof of durability.
        let mut v = scan_head(0, 3, 0, 0, 1);
        v.extend_from_slice(&[
            2 << 2,
            0,
            0,
            8,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
        ]);
        v.extend_from_slice(&[9 << 2, 0xb0, 0x10, 0, 253]);
        v.extend_from_slice(&(MAX_OFFSET + 1).to_le_bytes());
        v.extend_from_slice(&[1, 1]);
        put(root, t, "open_proof_frame_offset_above_max", &v);
    }
}

#[test]
fn tls_handshake_regressions() {
    replay("tls_handshake", tls_handshake::check);
}
