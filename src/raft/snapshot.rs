//! Segment-manifest snapshots: a snapshot is a few bytes per sealed segment, never a copy of
//! the data. The records *are* the sealed segments; a replica that installs a snapshot fetches
//! the segments it lacks in bulk (`net::fetch`) and adopts them into its log.
//!
//! Encoding (wire and file; little-endian, counts bounded before allocation):
//!
//! ```text
//! snapshot  = u64 lineage (the cluster id: a snapshot of another cluster is refused),
//!             opt_log_id last_log_id, opt_log_id membership_log_id, u32 len, membership,
//!             u32 n, n × (u64 base, u64 end, u64 size, u32 file_crc)
//! ```
//!
//! The file `snapshot` in a node's data directory holds the current one (written to a
//! temporary name, fsynced, renamed, directory fsynced), so a restarted node can serve it and
//! restore its state machine from it.

use super::entry::{decode_membership, encode_membership, Cursor};
use super::{log_id, LogId, StoredMembership, TypeConfig};
use crate::io::IoRef;
use crate::storage::SegmentInfo;
use crate::{Error, Result};
use openraft::alias::{SnapshotMetaOf, SnapshotOf as SnapshotOfAlias};
use std::path::Path;

/// Most segments one manifest lists (64 TiB of 64 MiB segments).
pub const MAX_MANIFEST_SEGMENTS: usize = 1 << 20;
/// The file name of the current snapshot in a node's data directory.
pub const FILE_NAME: &str = "snapshot";

/// The snapshot payload: the sealed segments holding every record up to the snapshot's last
/// log id, and the lineage they belong to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentManifest {
    /// The cluster id; a manifest of another cluster is refused.
    pub lineage: u64,
    /// Contiguous sealed segments, oldest first.
    pub segments: Vec<SegmentInfo>,
}

/// A sitelog snapshot: openraft's metadata and the manifest.
pub type Snapshot = SnapshotOfAlias<TypeConfig, SegmentManifest>;
/// Snapshot metadata.
pub type SnapshotMeta = SnapshotMetaOf<TypeConfig>;

fn put_opt(out: &mut Vec<u8>, id: Option<LogId>) {
    match id {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            out.extend_from_slice(&id.leader_id.term.to_le_bytes());
            out.extend_from_slice(&id.index.to_le_bytes());
        }
    }
}

fn get_opt(c: &mut Cursor<'_>) -> Option<Option<LogId>> {
    match c.u8()? {
        0 => Some(None),
        1 => {
            let term = c.u64()?;
            Some(Some(log_id(term, c.u64()?)))
        }
        _ => None,
    }
}

fn u32_of(c: &mut Cursor<'_>) -> Option<u32> {
    let b = c.take(4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Encodes a snapshot (metadata and manifest).
pub fn encode(meta: &SnapshotMeta, m: &SegmentManifest) -> Vec<u8> {
    let mut out = m.lineage.to_le_bytes().to_vec();
    put_opt(&mut out, meta.last_log_id);
    put_opt(&mut out, *meta.last_membership.log_id());
    let mem = encode_membership(meta.last_membership.membership());
    out.extend_from_slice(&(mem.len() as u32).to_le_bytes());
    out.extend_from_slice(&mem);
    out.extend_from_slice(&(m.segments.len() as u32).to_le_bytes());
    for s in &m.segments {
        for v in [s.base_offset, s.end_offset, s.size_bytes] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&s.file_crc.to_le_bytes());
    }
    out
}

/// Decodes a snapshot from the front of `c`.
pub(crate) fn decode_from(c: &mut Cursor<'_>) -> Option<(SnapshotMeta, SegmentManifest)> {
    let lineage = c.u64()?;
    let last_log_id = get_opt(c)?;
    let mem_id = get_opt(c)?;
    let mem_len = u32_of(c)? as usize;
    let membership = decode_membership(c.take(mem_len)?)?;
    let n = u32_of(c)? as usize;
    if n > MAX_MANIFEST_SEGMENTS || n > c.buf.len() / 28 {
        return None;
    }
    let mut segments = Vec::with_capacity(n);
    for _ in 0..n {
        let (base_offset, end_offset, size_bytes) = (c.u64()?, c.u64()?, c.u64()?);
        let file_crc = u32_of(c)?;
        segments.push(SegmentInfo {
            base_offset,
            end_offset,
            size_bytes,
            file_crc,
        });
    }
    let contiguous = segments
        .windows(2)
        .all(|w| w[0].end_offset == w[1].base_offset);
    let meta = SnapshotMeta {
        last_log_id,
        last_membership: StoredMembership::new(mem_id, membership),
    };
    contiguous.then_some((meta, SegmentManifest { lineage, segments }))
}

/// Decodes a whole encoded snapshot.
pub fn decode(b: &[u8]) -> Option<(SnapshotMeta, SegmentManifest)> {
    let mut c = Cursor { buf: b };
    let v = decode_from(&mut c)?;
    c.buf.is_empty().then_some(v)
}

/// Writes the current snapshot durably to `dir/snapshot` (temporary file, fsync, rename,
/// directory fsync). The content carries a CRC-32 at its end.
pub fn save(io: &IoRef, dir: &Path, meta: &SnapshotMeta, m: &SegmentManifest) -> Result<()> {
    let mut body = encode(meta, m);
    let crc = crate::storage::checksum::checksum(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let path = dir.join(FILE_NAME);
    let f = io.open(&tmp, true).map_err(|e| Error::io(&tmp, e))?;
    f.set_len(0).map_err(|e| Error::io(&tmp, e))?;
    f.write_at_sync(&body, 0).map_err(|e| Error::io(&tmp, e))?;
    io.rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    io.sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Reads `dir/snapshot`, if there is one; [`Error::Corruption`] if it does not verify.
pub fn load(io: &IoRef, dir: &Path) -> Result<Option<(SnapshotMeta, SegmentManifest)>> {
    let path = dir.join(FILE_NAME);
    let names = io.list(dir).map_err(|e| Error::io(dir, e))?;
    if !names.iter().any(|n| n == FILE_NAME) {
        return Ok(None);
    }
    let f = io.open(&path, false).map_err(|e| Error::io(&path, e))?;
    let len = f.len().map_err(|e| Error::io(&path, e))? as usize;
    let mut b = vec![0u8; len.min(64 << 20)];
    crate::io::read_exact_at(&*f, &mut b, 0).map_err(|e| Error::io(&path, e))?;
    let bad = || Error::Corruption {
        segment: path.clone(),
        file_offset: 0,
        record_offset: None,
        detail: "snapshot file does not verify".into(),
    };
    if b.len() < 4 {
        return Err(bad());
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crate::storage::checksum::checksum(body).to_le_bytes() != crc {
        return Err(bad());
    }
    decode(body).map(Some).ok_or_else(bad)
}
