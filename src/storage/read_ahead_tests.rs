//! Read-ahead of sealed segments (`read_ahead.rs`) through `Log::iter`, on real files: the
//! records served are the same with and without helpers, and damage is found exactly where it
//! is, whether it lies before the helper started, where the helper stopped, or at a sealed
//! segment's last frame.

use super::manifest::SegmentInfo;
use super::record::{frame_len, HEADER_SIZE_BYTES};
use super::segment::{Segment, HEADER_REGION_BYTES};
use super::*;
use crate::Error;
use std::os::unix::fs::FileExt;
use std::path::Path;

const SEGMENT_BYTES: u64 = 4 << 20;
const RECORD_BYTES: usize = 200;

fn opts(read_ahead_threads: usize) -> LogOptions {
    LogOptions {
        io: IoBackend::Posix,
        segment_size_bytes: SEGMENT_BYTES,
        max_record_bytes: 4096,
        sync: SyncMode::Manual,
        preallocate: false,
        read_ahead_threads,
        ..Default::default()
    }
}

fn payload(offset: u64) -> Vec<u8> {
    (0..RECORD_BYTES)
        .map(|i| (offset as usize * 13 + i) as u8)
        .collect()
}

/// A log of at least three sealed segments; their descriptions.
fn write_log(dir: &Path) -> Vec<SegmentInfo> {
    let log = Log::open(dir, opts(2)).unwrap();
    while log.sealed_segments(u64::MAX).unwrap().len() < 3 {
        let next = log.end_offset();
        let batch: Vec<Vec<u8>> = (next..next + 1000).map(payload).collect();
        log.append_batch(&batch).unwrap();
    }
    log.sync().unwrap();
    let sealed = log.sealed_segments(u64::MAX).unwrap();
    log.close().unwrap();
    sealed
}

/// File position of the frame of `offset` in `seg` (every frame has the same length).
fn frame_pos(seg: &SegmentInfo, offset: u64) -> u64 {
    assert!((seg.base_offset..seg.end_offset).contains(&offset));
    HEADER_REGION_BYTES + (offset - seg.base_offset) * frame_len(RECORD_BYTES) as u64
}

/// Flips a payload byte of the record at `offset` in `seg`.
fn damage(dir: &Path, seg: &SegmentInfo, offset: u64) {
    let path = Segment::path_in(dir, seg.base_offset);
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let at = frame_pos(seg, offset) + HEADER_SIZE_BYTES as u64 + 7;
    let mut b = [0u8];
    file.read_exact_at(&mut b, at).unwrap();
    file.write_all_at(&[b[0] ^ 0x10], at).unwrap();
}

/// The first offset of `seg` whose frame lies past the point where a reader starts a helper.
fn past_helper_start(seg: &SegmentInfo) -> u64 {
    let frames = read_ahead::START_AFTER_BYTES.div_ceil(frame_len(RECORD_BYTES) as u64);
    seg.base_offset + frames + 1
}

/// Reads records from `iter` up to (not including) `until`, checking each.
fn read_until(iter: &mut Iter, until: u64) {
    while Iter::position(iter) < until {
        let r = iter.next().unwrap().unwrap();
        assert_eq!(r.payload.as_ref(), &payload(r.offset)[..], "offset {}", r.offset);
    }
}

#[test]
fn the_same_records_with_and_without_helpers() {
    let dir = tempfile::tempdir().unwrap();
    let sealed = write_log(dir.path());
    for threads in [0, 2] {
        let log = Log::open(dir.path(), opts(threads)).unwrap();
        let mut iter = log.iter(0);
        // Part way into the second sealed segment: a helper runs there (when allowed).
        read_until(&mut iter, past_helper_start(&sealed[1]));
        assert_eq!(iter.wait_read_ahead(), threads > 0, "{threads} threads");
        let end = log.end_offset();
        read_until(&mut iter, end);
        assert!(iter.next().is_none());
    }
}

#[test]
fn damage_is_found_where_the_helper_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let sealed = write_log(dir.path());
    let seg = &sealed[1];
    let bad = seg.base_offset + (seg.end_offset - seg.base_offset) / 2;
    damage(dir.path(), seg, bad);
    let log = Log::open(dir.path(), opts(2)).unwrap();
    let mut iter = log.iter(0);
    read_until(&mut iter, past_helper_start(seg));
    // The helper stopped at the damaged frame; the reader trusts every frame before it.
    assert!(iter.wait_read_ahead());
    read_until(&mut iter, bad);
    match iter.next() {
        Some(Err(Error::Corruption { record_offset, .. })) => assert_eq!(record_offset, Some(bad)),
        other => panic!("damage at {bad} not found: {other:?}"),
    }
    assert!(iter.next().is_none(), "the iteration ends at damage");
}

#[test]
fn damage_before_the_helper_and_at_a_segments_last_frame_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let sealed = write_log(dir.path());
    let early = sealed[0].base_offset + 10;
    let last = sealed[1].end_offset - 1;
    damage(dir.path(), &sealed[0], early);
    damage(dir.path(), &sealed[1], last);
    let log = Log::open(dir.path(), opts(2)).unwrap();

    let mut iter = log.iter(0);
    read_until(&mut iter, early);
    let got = iter.next().unwrap();
    assert!(
        matches!(got, Err(Error::Corruption { record_offset: Some(o), .. }) if o == early),
        "{got:?}"
    );

    let mut iter = log.iter(sealed[1].base_offset);
    read_until(&mut iter, past_helper_start(&sealed[1]));
    assert!(iter.wait_read_ahead());
    read_until(&mut iter, last);
    let got = iter.next().unwrap();
    assert!(
        matches!(got, Err(Error::Corruption { record_offset: Some(o), .. }) if o == last),
        "{got:?}"
    );
}
