//! Segment-manifest snapshots: a snapshot is a few bytes per sealed segment, never a copy of
//! the data. The records *are* the sealed segments; a replica that installs a snapshot fetches
//! the segments it lacks in bulk (`net::fetch`) and adopts them into its log.
//!
//! Encoding (wire and file; little-endian, counts bounded before allocation):
//!
//! ```text
//! snapshot  = u64 lineage (the cluster id: a snapshot of another cluster is refused),
//!             opt_log_id last_log_id, opt_log_id membership_log_id, u32 len, membership,
//!             u32 n, n × segment,
//!             u8 has_app_state [, u64 offset, u32 raw_len, u32 len, zstd bytes]
//!             [, trailer]
//! trailer   = u8 version (2), u32 k, k × u64 retired id (strictly ascending)
//!           | u8 version (3), u32 k, k × u64 retired id (strictly ascending),
//!             u32 table_len, producer table (`raft::dedup`, at most MAX_PRODUCER_TABLE_BYTES)
//! segment   = u64 base, u64 end, u64 size, u32 file_crc,
//!             u16 k, k × (u64 term, u64 first offset)   (the terms that start in it)
//! ```
//!
//! Version 1 ends after the application state; version 2 adds the retired node ids (removed
//! from the membership, never to join again) and is written only when there are any, so a
//! cluster that never removed a node keeps writing version 1. Version 3 adds the producer table
//! (issue 17) as of the state machine's last applied entry (its `as_of`, which may be past the
//! manifest's last log id: replayed entries up to it are skipped), and is written only once a
//! producer entry was applied. All three are read; an older binary refuses version 3 (its
//! decoder finds trailing bytes) rather than install a snapshot without the dedup state.
//!
//! The file `snapshot` in a node's data directory holds the current one (written to a
//! temporary name, fsynced, renamed, directory fsynced), so a restarted node can serve it and
//! restore its state machine from it.

use super::entry::{decode_membership, encode_membership};
use super::dedup::{ProducerTable, MAX_PRODUCER_TABLE_BYTES};
use super::{LogId, StoredMembership, TypeConfig};
use crate::codec::{DecodeResult, Reader, Writer};
use crate::io::IoRef;
use crate::storage::SegmentInfo;
use crate::{Error, Result};
use openraft::alias::{SnapshotMetaOf, SnapshotOf as SnapshotOfAlias};
use std::collections::BTreeSet;
use std::path::Path;

/// Most segments one manifest lists (64 TiB of 64 MiB segments).
pub const MAX_MANIFEST_SEGMENTS: usize = 1 << 20;
/// The file name of the current snapshot in a node's data directory.
pub const FILE_NAME: &str = "snapshot";

/// Most distinct terms listed for one segment.
pub const MAX_TERMS_PER_SEGMENT: usize = 4096;
/// Largest application state (compressed) a snapshot carries.
pub const MAX_APP_STATE_BYTES: usize = 32 << 20;
/// Most retired node ids a snapshot lists.
pub const MAX_RETIRED_IDS: usize = 1 << 16;
/// The encoding version that adds the retired ids.
const VERSION_RETIRED: u8 = 2;
/// The encoding version that adds the producer table.
const VERSION_PRODUCERS: u8 = 3;

/// State the embedding application attached at an offset (for example a materialized view
/// of the messages up to it), zstd-compressed; shipped with the manifest so that a new
/// replica's application starts from it and replays only the records after `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppState {
    /// The state reflects every record up to and including this offset.
    pub offset: u64,
    /// Size of the state uncompressed (bounds decompression).
    pub raw_len: u32,
    /// The zstd-compressed state.
    pub zstd: bytes::Bytes,
}

/// The snapshot payload: the sealed segments holding every record up to the snapshot's last
/// log id, the terms that start in each, the application's attached state, and the lineage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentManifest {
    /// The cluster id; a manifest of another cluster is refused.
    pub lineage: u64,
    /// Contiguous sealed segments, oldest first.
    pub segments: Vec<SegmentInfo>,
    /// Per segment (same order): `(term, first offset)` of each term that starts in it.
    pub segment_terms: Vec<Vec<(u64, u64)>>,
    /// The application's state, if it attached one.
    pub app_state: Option<AppState>,
    /// Node ids removed from the membership up to the snapshot: they never join again.
    pub retired: BTreeSet<u64>,
    /// The producer table as of its own `as_of` (at or past the last log id), once any
    /// producer entry was applied.
    pub producers: Option<ProducerTable>,
}

/// A sitelog snapshot: openraft's metadata and the manifest.
pub type Snapshot = SnapshotOfAlias<TypeConfig, SegmentManifest>;
/// Snapshot metadata.
pub type SnapshotMeta = SnapshotMetaOf<TypeConfig>;

/// The smallest encoded segment: base, end, size, crc, term count.
const MIN_SEGMENT_BYTES: usize = 8 + 8 + 8 + 4 + 2;
/// Bytes of one `(term, first offset)` pair.
const TERM_BYTES: usize = 16;

fn put_opt(w: &mut Writer<'_>, id: Option<LogId>) {
    match id {
        None => w.u8(0),
        Some(id) => {
            w.u8(1);
            w.u64(id.leader_id.term);
            w.u64(id.index);
        }
    }
}

/// Encodes a snapshot (metadata and manifest). Refuses ([`Error::TooLong`]), never cuts, a
/// manifest over [`MAX_MANIFEST_SEGMENTS`] segments, a segment with more than
/// [`MAX_TERMS_PER_SEGMENT`] terms, more than [`MAX_RETIRED_IDS`] retired ids, or application
/// state over [`MAX_APP_STATE_BYTES`].
pub fn encode(meta: &SnapshotMeta, m: &SegmentManifest) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut w = Writer::new(&mut out);
    w.u64(m.lineage);
    put_opt(&mut w, meta.last_log_id);
    put_opt(&mut w, *meta.last_membership.log_id());
    let mem = encode_membership(meta.last_membership.membership())?;
    w.bytes_u32("snapshot membership", &mem, u32::MAX as usize)?;
    w.len_u32("manifest segments", m.segments.len(), MAX_MANIFEST_SEGMENTS)?;
    for (i, s) in m.segments.iter().enumerate() {
        for v in [s.base_offset, s.end_offset, s.size_bytes] {
            w.u64(v);
        }
        w.u32(s.file_crc);
        let terms = m.segment_terms.get(i).map_or(&[][..], |t| &t[..]);
        w.len_u16("segment terms", terms.len(), MAX_TERMS_PER_SEGMENT)?;
        for (t, o) in terms {
            w.u64(*t);
            w.u64(*o);
        }
    }
    match &m.app_state {
        None => w.u8(0),
        Some(a) => {
            w.u8(1);
            w.u64(a.offset);
            w.u32(a.raw_len);
            w.bytes_u32("application state", &a.zstd, MAX_APP_STATE_BYTES)?;
        }
    }
    if m.retired.is_empty() && m.producers.is_none() {
        return Ok(out);
    }
    let version = match m.producers {
        None => VERSION_RETIRED,
        Some(_) => VERSION_PRODUCERS,
    };
    w.u8(version);
    w.len_u32("retired ids", m.retired.len(), MAX_RETIRED_IDS)?;
    m.retired.iter().for_each(|&id| w.u64(id));
    if let Some(t) = &m.producers {
        w.bytes_u32("producer table", &t.encode(), MAX_PRODUCER_TABLE_BYTES)?;
    }
    Ok(out)
}

/// The trailer, if the snapshot has one: version 2 (retired ids) or 3 (retired ids and the
/// producer table). `decode_from` decodes a snapshot inside a larger message, so the trailer
/// is told apart by its version byte; a version-1 snapshot simply ends before it.
fn get_trailer(c: &mut Reader<'_>) -> DecodeResult<(BTreeSet<u64>, Option<ProducerTable>)> {
    let version = c.rest().first().copied();
    if version != Some(VERSION_RETIRED) && version != Some(VERSION_PRODUCERS) {
        return Ok((BTreeSet::new(), None));
    }
    c.u8()?;
    let retired = get_retired(c)?;
    if version != Some(VERSION_PRODUCERS) {
        return Ok((retired, None));
    }
    let table = ProducerTable::decode(c.bytes_u32(MAX_PRODUCER_TABLE_BYTES)?)?;
    Ok((retired, Some(table)))
}

/// `u32 k, k × u64 id`, strictly ascending.
fn get_retired(c: &mut Reader<'_>) -> DecodeResult<BTreeSet<u64>> {
    let k = c.count_u32(MAX_RETIRED_IDS, 8)?;
    let mut ids = BTreeSet::new();
    let mut last = None;
    for _ in 0..k {
        let id = c.u64()?;
        if last.is_some_and(|l| l >= id) {
            return Err(c.invalid());
        }
        last = Some(id);
        ids.insert(id);
    }
    Ok(ids)
}

fn get_opt(c: &mut Reader<'_>) -> DecodeResult<Option<LogId>> {
    super::wire::get_opt_log_id(c)
}

fn get_segment(c: &mut Reader<'_>) -> DecodeResult<(SegmentInfo, Vec<(u64, u64)>)> {
    let (base_offset, end_offset, size_bytes) = (c.u64()?, c.u64()?, c.u64()?);
    let file_crc = c.u32()?;
    let info = SegmentInfo {
        base_offset,
        end_offset,
        size_bytes,
        file_crc,
    };
    let k = c.count_u16(MAX_TERMS_PER_SEGMENT, TERM_BYTES)?;
    let mut terms = Vec::with_capacity(k);
    for _ in 0..k {
        terms.push((c.u64()?, c.u64()?));
    }
    Ok((info, terms))
}

fn get_app_state(c: &mut Reader<'_>) -> DecodeResult<Option<AppState>> {
    Ok(match c.u8()? {
        0 => None,
        1 => {
            let offset = c.u64()?;
            let raw_len = c.u32()?;
            let zstd = bytes::Bytes::copy_from_slice(c.bytes_u32(MAX_APP_STATE_BYTES)?);
            Some(AppState {
                offset,
                raw_len,
                zstd,
            })
        }
        _ => return Err(c.invalid()),
    })
}

/// Decodes a snapshot from the front of `c`.
pub(crate) fn decode_from(c: &mut Reader<'_>) -> DecodeResult<(SnapshotMeta, SegmentManifest)> {
    let lineage = c.u64()?;
    let last_log_id = get_opt(c)?;
    let mem_id = get_opt(c)?;
    let membership = decode_membership(c.bytes_u32(u32::MAX as usize)?)?;
    let n = c.count_u32(MAX_MANIFEST_SEGMENTS, MIN_SEGMENT_BYTES)?;
    let mut segments = Vec::with_capacity(n);
    let mut segment_terms = Vec::with_capacity(n);
    for _ in 0..n {
        let (info, terms) = get_segment(c)?;
        segments.push(info);
        segment_terms.push(terms);
    }
    let app_state = get_app_state(c)?;
    let (retired, producers) = get_trailer(c)?;
    let contiguous = segments
        .windows(2)
        .all(|w| w[0].end_offset == w[1].base_offset);
    if !contiguous {
        return Err(c.invalid());
    }
    let meta = SnapshotMeta {
        last_log_id,
        last_membership: StoredMembership::new(mem_id, membership),
    };
    let manifest = SegmentManifest {
        lineage,
        segments,
        segment_terms,
        app_state,
        retired,
        producers,
    };
    Ok((meta, manifest))
}

impl AppState {
    /// Compresses `state`, taken as of `offset`.
    pub fn compress(offset: u64, state: &[u8]) -> Result<AppState> {
        let raw_len = u32::try_from(state.len())
            .map_err(|_| Error::InvalidArgument("application state above 4 GiB".into()))?;
        let zstd = zstd::bulk::compress(state, 3).map_err(|e| {
            Error::InvalidArgument(format!("compressing the application state: {e}"))
        })?;
        if zstd.len() > MAX_APP_STATE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "application state compresses to {} bytes, above the limit of {MAX_APP_STATE_BYTES}",
                zstd.len()
            )));
        }
        Ok(AppState {
            offset,
            raw_len,
            zstd: zstd.into(),
        })
    }

    /// The state uncompressed.
    pub fn decompress(&self) -> Result<bytes::Bytes> {
        let raw = zstd::bulk::decompress(&self.zstd, self.raw_len as usize)
            .map_err(|e| Error::Protocol(format!("application state: {e}")))?;
        Ok(raw.into())
    }
}

/// Decodes a whole encoded snapshot.
pub fn decode(b: &[u8]) -> DecodeResult<(SnapshotMeta, SegmentManifest)> {
    let mut c = Reader::new(b, "snapshot");
    let v = decode_from(&mut c)?;
    c.finish(v)
}

/// Writes the current snapshot durably to `dir/snapshot`.
pub fn save(io: &IoRef, dir: &Path, meta: &SnapshotMeta, m: &SegmentManifest) -> Result<()> {
    save_file(io, dir, FILE_NAME, encode(meta, m)?)
}

/// Writes `body` and its CRC-32 durably to `dir/name`: a temporary file, fsync, rename,
/// directory fsync (a crash leaves the old file or the new one, never a mix).
fn save_file(io: &IoRef, dir: &Path, name: &str, mut body: Vec<u8>) -> Result<()> {
    let crc = crate::storage::checksum::checksum(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let f = io.open(&tmp, true).map_err(|e| Error::io(&tmp, e))?;
    f.set_len(0).map_err(|e| Error::io(&tmp, e))?;
    f.write_at_sync(&body, 0).map_err(|e| Error::io(&tmp, e))?;
    io.rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    io.sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Reads `dir/name` written by `save_file`: `None` if absent, `Corruption` if it does not
/// verify.
fn load_file(io: &IoRef, dir: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let path = dir.join(name);
    let names = io.list(dir).map_err(|e| Error::io(dir, e))?;
    if !names.iter().any(|n| n == name) {
        return Ok(None);
    }
    let f = io.open(&path, false).map_err(|e| Error::io(&path, e))?;
    let len = f.len().map_err(|e| Error::io(&path, e))? as usize;
    let bad = || Error::Corruption {
        segment: path.clone(),
        file_offset: 0,
        record_offset: None,
        detail: format!("{name} does not verify"),
    };
    // The largest snapshot: the application state (and the manifest beside it) and a full
    // producer table.
    if !(4..=MAX_APP_STATE_BYTES * 2 + MAX_PRODUCER_TABLE_BYTES).contains(&len) {
        return Err(bad());
    }
    let mut b = vec![0u8; len];
    crate::io::read_exact_at(&*f, &mut b, 0).map_err(|e| Error::io(&path, e))?;
    let crc = b.split_off(len - 4);
    if crate::storage::checksum::checksum(&b).to_le_bytes()[..] != crc[..] {
        return Err(bad());
    }
    Ok(Some(b))
}

/// The file of the application's attached state in a node's data directory.
pub const APP_STATE_FILE: &str = "app_state";

/// Writes the attached application state durably (`dir/app_state`).
pub fn save_app_state(io: &IoRef, dir: &Path, a: &AppState) -> Result<()> {
    let mut body = Vec::with_capacity(12 + a.zstd.len());
    let mut w = Writer::new(&mut body);
    w.u64(a.offset);
    w.u32(a.raw_len);
    w.raw(&a.zstd);
    save_file(io, dir, APP_STATE_FILE, body)
}

/// Reads the attached application state, if any.
pub fn load_app_state(io: &IoRef, dir: &Path) -> Result<Option<AppState>> {
    let Some(b) = load_file(io, dir, APP_STATE_FILE)? else {
        return Ok(None);
    };
    let mut c = Reader::new(&b, "application state");
    let head = (|| Ok::<_, crate::codec::DecodeError>((c.u64()?, c.u32()?)))();
    let (offset, raw_len) = head.map_err(|e| Error::Corruption {
        segment: dir.join(APP_STATE_FILE),
        file_offset: 0,
        record_offset: None,
        detail: format!("short application state: {e}"),
    })?;
    Ok(Some(AppState {
        offset,
        raw_len,
        zstd: bytes::Bytes::copy_from_slice(c.rest()),
    }))
}

/// Reads `dir/snapshot`, if there is one; [`Error::Corruption`] if it does not verify.
pub fn load(io: &IoRef, dir: &Path) -> Result<Option<(SnapshotMeta, SegmentManifest)>> {
    let Some(body) = load_file(io, dir, FILE_NAME)? else {
        return Ok(None);
    };
    decode(&body).map(Some).map_err(|e| Error::Corruption {
        segment: dir.join(FILE_NAME),
        file_offset: 0,
        record_offset: None,
        detail: format!("snapshot does not decode: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::log_id;
    use crate::raft::{Membership, NodeInfo};
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn snapshot_round_trips_and_refuses_damage() {
        let nodes: BTreeMap<u64, NodeInfo> = (1..=3)
            .map(|i| {
                (
                    i,
                    NodeInfo {
                        site: format!("s{i}"),
                        addr: format!("h{i}:1"),
                    },
                )
            })
            .collect();
        let m = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes).unwrap();
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(3, 99)),
            last_membership: StoredMembership::new(Some(log_id(1, 0)), m),
        };
        let seg = |b, e| SegmentInfo {
            base_offset: b,
            end_offset: e,
            size_bytes: 4096,
            file_crc: 7,
        };
        let manifest = SegmentManifest {
            lineage: 0x51,
            segments: vec![seg(0, 50), seg(50, 100)],
            segment_terms: vec![vec![(1, 0), (2, 40)], vec![(3, 50)]],
            app_state: Some(AppState::compress(77, b"materialized view").unwrap()),
            retired: BTreeSet::new(),
            producers: None,
        };
        let enc = encode(&meta, &manifest).unwrap();
        let (m2, man2) = decode(&enc).unwrap();
        assert_eq!((m2, &man2), (meta.clone(), &manifest));
        assert_eq!(
            &man2.app_state.unwrap().decompress().unwrap()[..],
            b"materialized view"
        );
        for n in 0..enc.len() {
            assert!(decode(&enc[..n]).is_err(), "prefix {n} accepted");
        }
        // Segments that are not contiguous are refused.
        let gap = SegmentManifest {
            segments: vec![seg(0, 50), seg(60, 100)],
            ..manifest
        };
        assert!(decode(&encode(&meta, &gap).unwrap()).is_err());
    }

    fn sample() -> (SnapshotMeta, SegmentManifest) {
        let nodes: BTreeMap<u64, NodeInfo> = [(2, NodeInfo::default()), (4, NodeInfo::default())]
            .into_iter()
            .collect();
        let m = Membership::new(vec![BTreeSet::from([2, 4])], nodes).unwrap();
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(2, 9)),
            last_membership: StoredMembership::new(Some(log_id(2, 5)), m),
        };
        let manifest = SegmentManifest {
            lineage: 7,
            segments: vec![SegmentInfo {
                base_offset: 0,
                end_offset: 10,
                size_bytes: 4096,
                file_crc: 1,
            }],
            segment_terms: vec![vec![(1, 0)]],
            app_state: None,
            retired: BTreeSet::new(),
            producers: None,
        };
        (meta, manifest)
    }

    #[test]
    fn retired_ids_travel_in_version_2_and_version_1_still_reads() {
        let (meta, v1) = sample();
        let v1_bytes = encode(&meta, &v1).unwrap();
        let v2 = SegmentManifest {
            retired: BTreeSet::from([1, 3]),
            ..v1.clone()
        };
        let v2_bytes = encode(&meta, &v2).unwrap();
        // Version 2 only appends the trailer: a version-1 body (what earlier releases wrote)
        // is its prefix, and reads as a snapshot with no retired ids.
        assert_eq!(&v2_bytes[..v1_bytes.len()], &v1_bytes[..]);
        assert_eq!(v2_bytes[v1_bytes.len()], 2, "version byte");
        assert_eq!(decode(&v1_bytes).unwrap().1, v1);
        assert_eq!(decode(&v2_bytes).unwrap().1, v2);
        for n in v1_bytes.len() + 1..v2_bytes.len() {
            assert!(decode(&v2_bytes[..n]).is_err(), "prefix {n} accepted");
        }
        // Not ascending, an unknown version, or a count above the bytes left: refused.
        let mut b = v2_bytes.clone();
        let first = v1_bytes.len() + 5;
        b[first..first + 8].copy_from_slice(&3u64.to_le_bytes());
        assert!(decode(&b).is_err(), "ids not strictly ascending");
        let mut b = v2_bytes.clone();
        b[v1_bytes.len()] = 3;
        assert!(decode(&b).is_err(), "unknown version");
        let mut b = v2_bytes.clone();
        b[v1_bytes.len() + 1..v1_bytes.len() + 5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&b).is_err(), "count above the bytes left");
    }

    #[test]
    fn too_many_terms_or_retired_ids_are_refused_not_cut() {
        let (meta, base) = sample();
        let terms = SegmentManifest {
            segment_terms: vec![(0..=MAX_TERMS_PER_SEGMENT as u64).map(|t| (t, 0)).collect()],
            ..base.clone()
        };
        let err = encode(&meta, &terms).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooLong {
                    what: "segment terms",
                    ..
                }
            ),
            "{err:?}"
        );
        let retired = SegmentManifest {
            retired: (0..=MAX_RETIRED_IDS as u64).collect(),
            ..base
        };
        let err = encode(&meta, &retired).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooLong {
                    what: "retired ids",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    fn table() -> ProducerTable {
        use crate::raft::dedup::ProducerEntry;
        let mut t = ProducerTable::new();
        let reg = ProducerEntry::Register {
            ts_ms: 5,
            idle_expiry_ms: 1000,
            max_producers: 8,
        };
        t.apply(3, &reg);
        for (seq, off) in [(0, 4), (1, 5), (2, 9)] {
            let p = ProducerEntry::Produce {
                producer: 3,
                seq,
                ts_ms: 6,
            };
            t.apply(off, &p);
        }
        t.advance_as_of(12);
        t
    }

    #[test]
    fn the_producer_table_travels_in_version_3_and_versions_1_and_2_still_read() {
        let (meta, v1) = sample();
        let v1_bytes = encode(&meta, &v1).unwrap();
        for retired in [BTreeSet::new(), BTreeSet::from([1, 3])] {
            let v3 = SegmentManifest {
                retired: retired.clone(),
                producers: Some(table()),
                ..v1.clone()
            };
            let v3_bytes = encode(&meta, &v3).unwrap();
            // Version 3 only appends its trailer to a version-1 body.
            assert_eq!(&v3_bytes[..v1_bytes.len()], &v1_bytes[..]);
            let mut want = vec![3u8];
            want.extend_from_slice(&(retired.len() as u32).to_le_bytes());
            retired
                .iter()
                .for_each(|id| want.extend_from_slice(&id.to_le_bytes()));
            let t = table().encode();
            want.extend_from_slice(&(t.len() as u32).to_le_bytes());
            want.extend_from_slice(&t);
            assert_eq!(&v3_bytes[v1_bytes.len()..], &want[..], "the v3 trailer");
            assert_eq!(decode(&v3_bytes).unwrap(), (meta.clone(), v3));
            for n in v1_bytes.len() + 1..v3_bytes.len() {
                assert!(decode(&v3_bytes[..n]).is_err(), "prefix {n} accepted");
            }
            // A table length above the limit or the bytes left is refused before allocating.
            let len_at = v1_bytes.len() + 5 + 8 * retired.len();
            let mut b = v3_bytes.clone();
            b[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            assert!(decode(&b).is_err());
            // A damaged table inside is refused too (version byte of the table).
            let mut b = v3_bytes.clone();
            b[len_at + 4] = 9;
            assert!(decode(&b).is_err());
        }
        // Without a table nothing changes: version 1, or 2 with retired ids.
        assert_eq!(decode(&v1_bytes).unwrap().1.producers, None);
        let v2 = SegmentManifest {
            retired: BTreeSet::from([4]),
            ..v1.clone()
        };
        let v2_bytes = encode(&meta, &v2).unwrap();
        assert_eq!(v2_bytes[v1_bytes.len()], 2);
        assert_eq!(decode(&v2_bytes).unwrap().1, v2);
    }

    #[test]
    fn a_version_3_snapshot_survives_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let io: IoRef = crate::storage::IoBackend::Posix.resolve(false).unwrap();
        let (meta, base) = sample();
        let m = SegmentManifest {
            producers: Some(table()),
            ..base
        };
        save(&io, dir.path(), &meta, &m).unwrap();
        assert_eq!(load(&io, dir.path()).unwrap(), Some((meta, m)));
    }
}
