//! Check logic of the `recovery_scan` fuzz target, shared (through `#[path]`) by
//! `fuzz/fuzz_targets/recovery_scan.rs` and `tests/fuzz_regressions.rs`.
//!
//! Builds a log on a [`SimDisk`] from known records, optionally crashes, damages segment files
//! with fuzzer-chosen bytes, reopens it, and checks what comes back. Input layout (missing
//! bytes read as zero):
//! ```text
//! 0       flags (see the F_* constants)
//! 1       record count - 1 (mod 48)
//! 2       index of the record before which the log is synced (with F_SYNC_MID)
//! 3       simulated-disk seed (crash outcomes)
//! 4..4+n  payload length / 8 (or / 16 with F_LONG) of each record
//! then    up to 16 mutations: op, u16 position, u8 length, operands (see `mutate`)
//! ```
//! Besides raw damage (overwrites, truncation, bit flips, lost sectors, stale copies), a
//! mutation can write a checksum-valid frame or footer and index with fuzzer-chosen fields, as
//! a misdirected or stale write of well-formed metadata would: that takes the fuzzer past the
//! checksums into the logic behind them.
//!
//! Properties: nothing panics; every acknowledged record is in the files after a crash; a
//! clean or crash-only reopen succeeds and returns every acknowledged record; a successful
//! open after damage keeps and reads back every acknowledged record below the first one the
//! damage touched (its frame overwritten or cut off, or its segment given a forged footer);
//! every record that comes back decodes and is byte-identical to what was appended at its
//! offset unless its bytes lie in a damaged range; a successful open never ends below the
//! persisted durable watermark; failures are `Corruption`; an undamaged sealed segment reads
//! back whole; after a successful recovery the log takes appends and reopens to the same
//! contents.

use sitelog::io::{Io, SimDisk};
use sitelog::storage::checksum::checksum;
use sitelog::storage::index::INDEX_ENTRY_SIZE_BYTES;
use sitelog::storage::record::{self, RecordRef, MAX_OFFSET};
use sitelog::storage::segment::{self, Footer, FOOTER_BYTES};
use sitelog::storage::{superblock, NewRecord};
use sitelog::{EntryKind, Error, Log, LogOptions, Record, SyncMode};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const DIR: &str = "/fuzz/log";
const MAX_RECORD_BYTES: u32 = 4096;
const MAX_RECORDS: usize = 48;
const MAX_MUTATIONS: usize = 16;

/// Sync once, before the record chosen by byte 2.
const F_SYNC_MID: u8 = 1;
/// Close (flush everything) instead of dropping the handle.
const F_CLOSE: u8 = 2;
/// Simulate power loss before damaging the files.
const F_CRASH: u8 = 4;
/// Persist the watermark after every fsync (`superblock_interval_ms = 0`).
const F_EAGER_WATERMARK: u8 = 8;
/// Dense sparse index (an entry per 64 bytes instead of 4 KiB).
const F_DENSE_INDEX: u8 = 16;
/// After a successful recovery, append, close and reopen.
const F_REOPEN: u8 = 32;
/// Payload lengths are `byte * 16` (longer records, more segments) instead of `byte * 8`.
const F_LONG: u8 = 64;
/// Zero-fill the tail file to the segment size, as a preallocated segment is (not damage).
const F_ZERO_FILLED: u8 = 128;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.to_vec()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn options(disk: &SimDisk, flags: u8) -> LogOptions {
    let mut opts = LogOptions::default();
    opts.io = disk.io().into();
    opts.segment_size_bytes = 16 << 10;
    opts.max_record_bytes = MAX_RECORD_BYTES;
    opts.index_interval_bytes = if flags & F_DENSE_INDEX != 0 { 64 } else { 4096 };
    opts.sync = SyncMode::Manual;
    // Only on demand: a time-dependent watermark would make runs irreproducible.
    opts.superblock_interval_ms = if flags & F_EAGER_WATERMARK != 0 {
        0
    } else {
        3_600_000
    };
    // The background thread would prepare files at times of its own choosing.
    opts.preallocate = false;
    opts
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    term: u64,
    timestamp_us: u64,
    kind: EntryKind,
    payload: Vec<u8>,
}

fn written(offset: u64, len: usize) -> Written {
    Written {
        term: offset / 7,
        timestamp_us: 1_700_000_000_000_000 + offset * 1000,
        kind: kind_of(offset),
        payload: (0..len)
            .map(|i| (offset as u8).wrapping_mul(37) ^ (i as u8).wrapping_mul(11))
            .collect(),
    }
}

fn kind_of(x: u64) -> EntryKind {
    match x % 5 {
        3 => EntryKind::Blank,
        4 => EntryKind::Membership,
        _ => EntryKind::Normal,
    }
}

fn same(rec: &Record, w: &Written) -> bool {
    rec.term == w.term
        && rec.timestamp_us == w.timestamp_us
        && rec.kind == w.kind
        && rec.payload.as_ref() == w.payload.as_slice()
}

/// What the fuzzer did to one segment file.
#[derive(Debug, Default)]
struct FileDamage {
    /// Byte ranges written (or zero-filled by extending the file).
    written: Vec<(u64, u64)>,
    /// Byte ranges cut off by truncation (whatever was written there later).
    cut: Vec<(u64, u64)>,
    /// A checksum-valid index and footer were forged: the segment's record count, index and
    /// sealed state are the fuzzer's, so any of its records may be lost.
    forged_footer: bool,
}

impl FileDamage {
    /// True if the fuzzer's changes reach the bytes `[start, end)`.
    fn touches(&self, start: u64, end: u64) -> bool {
        self.forged_footer
            || self
                .written
                .iter()
                .chain(&self.cut)
                .any(|&(s, e)| s < end && start < e)
    }
}

/// Damage per segment file; a file missing here was not changed.
type Damage = BTreeMap<PathBuf, FileDamage>;

/// Where each record's frame lies before the damage: file and byte range.
type Frames = Vec<Option<(PathBuf, u64, u64)>>;

/// Locates the frame of every record `0..n` in the segment files.
fn locate_frames(disk: &SimDisk, segs: &[(u64, PathBuf)], log_id: u64, n: usize) -> Frames {
    let mut frames: Frames = vec![None; n];
    for (base, path) in segs {
        let file = disk.peek(path).expect("segment exists");
        let (mut pos, mut offset) = (segment::HEADER_REGION_BYTES as usize, *base);
        while pos < file.len() && (offset as usize) < n {
            match record::decode_header(&file[pos..], log_id, Some(offset), MAX_RECORD_BYTES) {
                Ok(h) if pos + h.frame_len() <= file.len() => {
                    let end = pos + h.frame_len();
                    frames[offset as usize] = Some((path.clone(), pos as u64, end as u64));
                    pos = end;
                    offset += 1;
                }
                _ => break,
            }
        }
    }
    frames
}

fn segment_files(disk: &SimDisk, dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut names = disk.list(dir).expect("log directory exists");
    names.sort();
    names
        .iter()
        .filter_map(|n| segment::parse_file_name(n).map(|b| (b, dir.join(n))))
        .collect()
}

fn poke(disk: &SimDisk, damage: &mut Damage, path: &Path, at: u64, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let len = disk.peek(path).expect("segment exists").len() as u64;
    disk.poke(path, at, data).expect("poke");
    // Bytes between the old end and `at` become zeros: damage too.
    damage
        .entry(path.to_path_buf())
        .or_default()
        .written
        .push((at.min(len), at + data.len() as u64));
}

fn chop(disk: &SimDisk, damage: &mut Damage, path: &Path, to: u64) {
    let len = disk.peek(path).expect("segment exists").len() as u64;
    if to < len {
        disk.chop(path, to).expect("chop");
        damage
            .entry(path.to_path_buf())
            .or_default()
            .cut
            .push((to, len));
    }
}

/// What a mutation may use besides the fuzzer's bytes.
struct Target<'a> {
    segs: &'a [(u64, PathBuf)],
    log_id: u64,
}

/// Applies one fuzzer-chosen mutation to a segment file.
fn mutate(disk: &SimDisk, damage: &mut Damage, t: &Target<'_>, input: &mut Input<'_>) {
    let op = input.u8();
    let (base, path) = match op & 3 {
        0 | 1 => &t.segs[t.segs.len() - 1],
        2 => &t.segs[0],
        _ => &t.segs[usize::from(input.u8()) % t.segs.len()],
    };
    let (base, path) = (*base, path.as_path());
    let file = disk.peek(path).expect("segment exists");
    let len = file.len() as u64;
    let raw = u64::from(input.u16());
    let n = usize::from(input.u8());
    match (op >> 2) & 15 {
        // Overwrite at a position (possibly past the end).
        0 | 8 => {
            let data = input.bytes(n);
            poke(disk, damage, path, raw % (len + 64), &data);
        }
        // Overwrite counting from the end (where a footer and index live).
        1 => {
            let data = input.bytes(n);
            poke(disk, damage, path, len - raw % (len + 1), &data);
        }
        // Append garbage.
        2 => {
            let data = input.bytes(n);
            poke(disk, damage, path, len, &data);
        }
        // Truncate.
        3 => chop(disk, damage, path, raw % (len + 1)),
        // Flip bits of one byte.
        4 => {
            if len > 0 {
                let at = raw % len;
                let mask = (n as u8).max(1);
                poke(disk, damage, path, at, &[file[at as usize] ^ mask]);
            }
        }
        // Copy bytes of this file elsewhere in it (a misdirected or stale write).
        5 => {
            if len > 0 {
                let from = (u64::from(input.u16()) % len) as usize;
                let to = raw % (len + 8);
                let end = (from + n * 8).min(file.len());
                poke(disk, damage, path, to, &file[from..end]);
            }
        }
        // Copy a frame-sized run of bytes from another segment.
        6 => {
            let (_, other) = &t.segs[usize::from(input.u8()) % t.segs.len()];
            let src = disk.peek(other).expect("segment exists");
            if !src.is_empty() {
                let from = usize::from(input.u16()) % src.len();
                let end = (from + n * 8).min(src.len());
                poke(disk, damage, path, raw % (len + 8), &src[from..end]);
            }
        }
        // Zero a whole 512-byte sector (a lost sector).
        7 => {
            let at = (raw % (len + 1)) & !511;
            let end = (at + 512).min(len);
            if end > at {
                poke(disk, damage, path, at, &vec![0u8; (end - at) as usize]);
            }
        }
        // A checksum-valid frame of this log with fuzzer-chosen fields.
        9..=11 => {
            let frame = forge_frame(t, base, n, input);
            let at = if op & 0x40 != 0 {
                raw % (len + 64)
            } else {
                (raw % (len + 64)) & !7
            };
            poke(disk, damage, path, at, &frame);
        }
        // A checksum-valid index and footer with fuzzer-chosen fields, ending the file.
        _ => forge_footer(disk, damage, t, base, path, raw, n, input),
    }
}

fn forge_frame(t: &Target<'_>, base: u64, n: usize, input: &mut Input<'_>) -> Vec<u8> {
    let sel = input.u8();
    // Offsets above MAX_OFFSET (2^62) must be rejected wherever recovery decodes a frame.
    let offset = match sel {
        0..=199 => base + u64::from(sel % 64),
        200..=252 => u64::from(sel - 200),
        253 => input.u64(),
        _ => u64::MAX - u64::from(input.u8() % 4),
    };
    let back = input.u8();
    let durable_end = match back {
        0 => offset,
        255 => offset.saturating_sub(u64::from(u32::MAX) + 1),
        b => offset.saturating_sub(u64::from(b)),
    };
    let payload = input.bytes(n.min(MAX_RECORD_BYTES as usize));
    let mut out = Vec::new();
    record::encode(
        &mut out,
        t.log_id,
        RecordRef {
            offset,
            term: offset / 7,
            timestamp_us: offset
                .wrapping_mul(1000)
                .wrapping_add(1_700_000_000_000_000),
            kind: kind_of(u64::from(input.u8())),
            payload: &payload,
        },
        durable_end,
    );
    out
}

#[allow(clippy::too_many_arguments)]
fn forge_footer(
    disk: &SimDisk,
    damage: &mut Damage,
    t: &Target<'_>,
    base: u64,
    path: &Path,
    raw: u64,
    n: usize,
    input: &mut Input<'_>,
) {
    let len = disk.peek(path).expect("segment exists").len() as u64;
    damage.entry(path.to_path_buf()).or_default().forged_footer = true;
    let how = input.u8();
    // Index entries: plausible (increasing from the first frame) or raw.
    let entries = n % 9;
    let mut pairs = Vec::with_capacity(entries);
    let (mut rel, mut pos) = (0u32, segment::HEADER_REGION_BYTES as u32);
    for i in 0..entries {
        if how & 1 == 0 {
            if i > 0 {
                rel = rel.saturating_add(u32::from(input.u8() % 8) + 1);
                pos = pos.saturating_add(u32::from(input.u8()) * 8 + 48);
            }
        } else {
            rel = input.u32();
            pos = input.u32();
        }
        pairs.push((rel, pos));
    }
    let index_bytes = (entries * INDEX_ENTRY_SIZE_BYTES) as u64;
    // Footer::decode must bound the end offset by MAX_OFFSET and by the frames that fit.
    let end_offset = match how & 6 {
        0 => base + u64::from(input.u8()),
        2 => base + rel as u64 + 1,
        _ => input.u64(),
    };
    // Recovery must check that index positions are 8-aligned and below `data_end`, and that
    // `data_end` is 8-aligned.
    let data_end = match (how >> 3) & 3 {
        // Where the file's frames end now (or a little before).
        0 => {
            len.saturating_sub(raw % 64)
                .max(segment::HEADER_REGION_BYTES)
                & !7
        }
        // Anywhere, possibly unaligned or inside the header region.
        1 => raw,
        // Far beyond the file: the geometry only adds up by wrapping around.
        2 => {
            let data_end = (len + index_bytes + FOOTER_BYTES as u64)
                .wrapping_sub(u64::from(u32::MAX) * INDEX_ENTRY_SIZE_BYTES as u64);
            let footer = Footer {
                base_offset: base,
                end_offset,
                data_end,
                max_timestamp_us: 0,
                index_entries: u32::MAX,
                index_crc: checksum(&[]),
                file_crc: 0,
            };
            poke(disk, damage, path, len, &footer.encode(t.log_id, 0)[..]);
            return;
        }
        _ => len & !7,
    };
    let mut index = Vec::with_capacity(index_bytes as usize);
    for (rel, pos) in pairs {
        index.extend_from_slice(&rel.to_le_bytes());
        index.extend_from_slice(&pos.to_le_bytes());
    }
    if data_end > 1 << 20 {
        return;
    }
    let footer = Footer {
        base_offset: base,
        end_offset,
        data_end,
        max_timestamp_us: u64::from(input.u16()),
        index_entries: entries as u32,
        index_crc: checksum(&index),
        file_crc: 0,
    };
    chop(disk, damage, path, data_end);
    poke(disk, damage, path, data_end, &index);
    let prefix = disk.peek(path).expect("segment exists");
    let crc_before = checksum(&prefix);
    poke(
        disk,
        damage,
        path,
        data_end + index_bytes,
        &footer.encode(t.log_id, crc_before),
    );
}

/// True if some copy of `rec` in a segment file overlaps bytes the fuzzer wrote: only then
/// may a record differ from what was appended at its offset.
fn explained_by_damage(disk: &SimDisk, damage: &Damage, log_id: u64, rec: &Record) -> bool {
    for (_, path) in segment_files(disk, Path::new(DIR)) {
        let Some(ranges) = damage.get(&path).map(|d| &d.written) else {
            continue;
        };
        let file = disk.peek(&path).expect("segment exists");
        let Some(last_start) = file.len().checked_sub(record::HEADER_SIZE_BYTES) else {
            continue;
        };
        // A frame may start as late as a header before the end of the file (a forged frame
        // with an empty payload, where recovery cut the tail right after it).
        for p in 0..=last_start {
            let b = &file[p..];
            if b[8..16] != rec.offset.to_le_bytes() || b[16..24] != log_id.to_le_bytes() {
                continue;
            }
            let Ok(h) = record::decode_header(b, log_id, Some(rec.offset), MAX_RECORD_BYTES) else {
                continue;
            };
            let end = p + record::HEADER_SIZE_BYTES + h.payload_len as usize;
            let copy = &file[p + record::HEADER_SIZE_BYTES..end];
            let matches = (h.term, h.timestamp_us, h.kind)
                == (rec.term, rec.timestamp_us, rec.kind)
                && copy == rec.payload.as_ref();
            let (p, end) = (p as u64, end as u64);
            if matches && ranges.iter().any(|&(s, e)| s < end && p < e) {
                return true;
            }
        }
    }
    false
}

fn expect_corruption(e: &Error, what: &str) {
    assert!(
        matches!(e, Error::Corruption { .. }),
        "{what} failed with something other than Corruption: {e}"
    );
}

/// What one run knows about the log it built and damaged.
struct World<'a> {
    disk: &'a SimDisk,
    appended: Vec<Written>,
    /// Segment base offsets and paths before the damage.
    segs: Vec<(u64, PathBuf)>,
    damage: Damage,
    /// Records acknowledged as durable: `durable_end` before the handle was dropped, or all of
    /// them after a successful `close`.
    acked: u64,
    /// The acknowledged records below the first one that the damage touched: a successful
    /// open must keep and read back every one of them.
    intact: u64,
    /// `durable_end.min(truncate_from)` of the superblock before the damage.
    floor: u64,
    crashed: bool,
}

impl World<'_> {
    fn damaged(&self) -> bool {
        !self.damage.is_empty()
    }

    /// Checks one record that a successful open returned.
    fn check_record(&self, log_id: u64, rec: &Record, what: &str) {
        let ok = self
            .appended
            .get(rec.offset as usize)
            .is_some_and(|w| same(rec, w));
        if !ok {
            assert!(
                explained_by_damage(self.disk, &self.damage, log_id, rec),
                "{what}: record {} came back with bytes that were never appended there \
                 and do not lie in a damaged range: {rec:?}",
                rec.offset
            );
        }
    }

    /// Verifies a successfully opened log; returns the read result of every offset.
    fn verify(&self, log: &Log) -> Vec<Option<Record>> {
        let damaged = self.damaged();
        let log_id = log.log_id();
        let end = log.end_offset();
        assert!(
            end >= self.floor,
            "open succeeded but the log ends at {end}, below the persisted durable end {}",
            self.floor
        );
        assert_eq!(log.start_offset(), 0, "nothing was purged");
        assert!(
            end >= self.intact,
            "acknowledged records lost although no damage touched them: end {end}, \
             acknowledged {}, first touched by damage {}",
            self.acked,
            self.intact
        );
        if !damaged {
            assert!(
                end >= self.acked,
                "acknowledged records lost without damage: end {end}, acked {}",
                self.acked
            );
            if !self.crashed {
                assert_eq!(
                    end,
                    self.appended.len() as u64,
                    "records lost without crash or damage"
                );
            }
        }
        match log.verify() {
            Ok(_) => {}
            Err(e) => {
                assert!(damaged, "verify failed without damage: {e}");
                expect_corruption(&e, "verify");
            }
        }

        let mut iterated = 0u64;
        for (i, r) in log.iter(0).enumerate() {
            match r {
                Ok(rec) => {
                    assert_eq!(rec.offset, i as u64, "iterator skipped an offset");
                    self.check_record(log_id, &rec, "iter");
                    iterated += 1;
                }
                Err(e) => {
                    assert!(damaged, "iteration failed without damage: {e}");
                    expect_corruption(&e, "iteration");
                    break;
                }
            }
        }
        assert!(iterated <= end);
        assert!(
            iterated >= self.intact,
            "iteration stopped at {iterated}, before the first record touched by damage ({})",
            self.intact
        );
        if !damaged {
            assert_eq!(iterated, end, "iteration stopped early without an error");
        }

        // Reads are bounded: a forged footer may claim a huge end offset.
        let mut reads = Vec::new();
        for o in 0..end.min(4 * MAX_RECORDS as u64) {
            match log.read(o) {
                Ok(rec) => {
                    assert_eq!(rec.offset, o);
                    self.check_record(log_id, &rec, "read");
                    reads.push(Some(rec));
                }
                Err(e) => {
                    assert!(damaged, "read({o}) failed without damage: {e}");
                    expect_corruption(&e, "read");
                    reads.push(None);
                }
            }
        }

        // An undamaged sealed segment (any but the last) reads back whole and unchanged.
        for w in self.segs.windows(2) {
            let (base, path, next) = (w[0].0, &w[0].1, w[1].0);
            if self.damage.contains_key(path) {
                continue;
            }
            for o in base..next.min(end) {
                let rec = reads[o as usize]
                    .as_ref()
                    .unwrap_or_else(|| panic!("undamaged sealed segment {base}: read({o}) failed"));
                assert!(
                    same(rec, &self.appended[o as usize]),
                    "undamaged sealed segment {base}: record {o} differs"
                );
            }
        }
        // Acknowledged records the damage did not reach (nor any before them) read back
        // unchanged, damage or not.
        for (o, rec) in reads.iter().enumerate().take(self.intact as usize) {
            let rec = rec
                .as_ref()
                .unwrap_or_else(|| panic!("acknowledged, untouched record {o} unreadable"));
            assert!(
                same(rec, &self.appended[o]),
                "acknowledged, untouched record {o} differs"
            );
        }
        reads
    }
}

/// Runs one input; panics on any violated property.
pub fn check(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.u8();
    let n = 1 + usize::from(input.u8()) % MAX_RECORDS;
    let sync_at = usize::from(input.u8()) % (n + 1);
    let disk = SimDisk::new(u64::from(input.u8()));
    let unit = if flags & F_LONG != 0 { 16 } else { 8 };
    let lens: Vec<usize> = (0..n).map(|_| usize::from(input.u8()) * unit).collect();
    let dir = Path::new(DIR);
    let opts = options(&disk, flags);

    // The log id comes from fastrand's thread-local generator: seed it for reproducible runs.
    fastrand::seed(0x5173_106f);
    let log = Log::open(dir, opts.clone()).expect("create a log on an empty disk");
    let mut appended = Vec::with_capacity(n);
    for (o, &len) in lens.iter().enumerate() {
        if flags & F_SYNC_MID != 0 && o == sync_at {
            log.sync().expect("sync");
        }
        let w = written(o as u64, len);
        let range = log
            .append_records(&[NewRecord {
                term: w.term,
                kind: w.kind,
                timestamp_us: Some(w.timestamp_us),
                payload: &w.payload,
            }])
            .expect("append");
        assert_eq!(range, o as u64..o as u64 + 1);
        appended.push(w);
    }
    // Acknowledged: what the log reported durable, and everything once `close` succeeded
    // (it flushes, persists the watermark and seals).
    let acked = if flags & F_CLOSE != 0 {
        log.close().expect("close");
        n as u64
    } else {
        let acked = log.durable_end();
        drop(log);
        acked
    };
    let crashed = flags & F_CRASH != 0;
    if crashed {
        disk.crash();
    }

    let sb_file = disk
        .open(&dir.join("superblock"), false)
        .expect("superblock exists");
    let sb = superblock::read(&*sb_file)
        .expect("superblock readable")
        .expect("superblock valid");
    drop(sb_file);
    let segs = segment_files(&disk, dir);
    assert!(!segs.is_empty(), "at least one record was appended");
    if flags & F_ZERO_FILLED != 0 {
        let tail = &segs[segs.len() - 1].1;
        let len = disk.peek(tail).expect("tail exists").len();
        let size = opts.segment_size_bytes as usize;
        if len < size {
            disk.poke(tail, len as u64, &vec![0u8; size - len])
                .expect("zero-fill");
        }
    }

    // Acknowledged records were fsynced: they are in the files whatever the crash dropped.
    let frames = locate_frames(&disk, &segs, sb.log_id, n);
    for (o, frame) in frames.iter().enumerate().take(acked as usize) {
        assert!(
            frame.is_some(),
            "acknowledged record {o} is not in the segment files (crash: {crashed})"
        );
    }

    let mut damage = Damage::new();
    let target = Target {
        segs: &segs,
        log_id: sb.log_id,
    };
    for _ in 0..MAX_MUTATIONS {
        if input.is_empty() {
            break;
        }
        mutate(&disk, &mut damage, &target, &mut input);
    }
    let intact = frames
        .iter()
        .take(acked as usize)
        .position(|f| {
            let (path, start, end) = f.as_ref().expect("located above");
            damage.get(path).is_some_and(|d| d.touches(*start, *end))
        })
        .map_or(acked, |o| o as u64);

    let world = World {
        disk: &disk,
        appended,
        segs,
        damage,
        acked,
        intact,
        floor: sb.durable_end.min(sb.truncate_from),
        crashed,
    };

    // A failed open must leave nothing that a second open would accept wrongly; every
    // successful open is verified.
    for attempt in 0..2 {
        let log = match Log::open(dir, opts.clone()) {
            Ok(log) => log,
            Err(e) => {
                assert!(
                    world.damaged(),
                    "open #{attempt} failed without damage (crash: {crashed}): {e}"
                );
                expect_corruption(&e, "open");
                continue;
            }
        };
        let reads = world.verify(&log);
        if flags & F_REOPEN != 0 {
            reopen(log, &reads, &opts);
        }
        return;
    }
}

/// After a successful recovery: the log takes an append, closes, and reopens to the same
/// contents plus that record.
fn reopen(log: Log, reads: &[Option<Record>], opts: &LogOptions) {
    let end = log.end_offset();
    let extra = b"appended after recovery";
    if end >= MAX_OFFSET {
        // A forged footer could only get here if it claimed more records than fit.
        let e = log.append(extra).expect_err("append past MAX_OFFSET");
        assert!(
            matches!(e, Error::InvalidArgument(_)),
            "append past MAX_OFFSET failed with {e}"
        );
        return;
    }
    let at = log
        .append(extra)
        .unwrap_or_else(|e| panic!("append after a successful recovery failed: {e}"));
    assert_eq!(at, end);
    let back = log.read(at).expect("read the record just appended");
    assert_eq!(back.payload.as_ref(), extra);
    log.close().expect("close after a successful recovery");

    let log = Log::open(DIR, opts.clone())
        .unwrap_or_else(|e| panic!("reopen after a successful recovery and close failed: {e}"));
    assert_eq!(log.end_offset(), end + 1, "reopen changed the end");
    for (o, before) in reads.iter().enumerate() {
        let now = log.read(o as u64).ok();
        assert_eq!(&now, before, "record {o} reads differently after reopen");
    }
    let last = log
        .read(end)
        .expect("record appended after recovery survives reopen");
    assert_eq!(last.payload.as_ref(), extra);
}
