//! Raft's own durable state beside the segment log: the vote, the last purged log id and the
//! last known committed log id, in two checksummed copies.
//!
//! File `raft_meta` in the node's data directory, two 4096-byte slots written alternately
//! exactly like the log's superblock (copy `sequence` goes to slot `sequence % 2`; the valid
//! copy with the highest sequence wins; a torn write can only damage the slot being written).
//! Every write is fsynced before it returns, so a vote is durable before any entry of its term
//! is appended (openraft's I/O ordering rule).
//!
//! ```text
//! byte  size  field
//!    0     8  magic "SLRAFTMT"
//!    8     4  format version (1)
//!   12     4  flags: bit 0 vote has a candidate, bit 1 vote committed,
//!                    bit 2 purged present, bit 3 committed present; other bits 0
//!   16     8  sequence          increases by one per write
//!   24     8  cluster_id        the cluster this node belongs to (refused if another)
//!   32     8  vote_term
//!   40     8  vote_node         the candidate voted for (valid with flag bit 0)
//!   48     8  purged_term       last purged log id (valid with flag bit 2)
//!   56     8  purged_index
//!   64     8  committed_term    last committed log id seen (valid with flag bit 3)
//!   72     8  committed_index
//!   80    44  reserved (0)
//!  124     4  CRC-32 of bytes 0..124
//! ```

use crate::io::{FileRef, IoRef};
use crate::storage::checksum::checksum;
use crate::storage::record::{u32_at, u64_at};
use crate::storage::superblock::{read_newest_slot, SLOT_SIZE_BYTES};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

const ENCODED_BYTES: usize = 128;
const MAGIC: &[u8; 8] = b"SLRAFTMT";
const VERSION: u32 = 1;
const FLAG_VOTE_NODE: u32 = 1;
const FLAG_VOTE_COMMITTED: u32 = 2;
const FLAG_PURGED: u32 = 4;
const FLAG_COMMITTED: u32 = 8;
const KNOWN_FLAGS: u32 = FLAG_VOTE_NODE | FLAG_VOTE_COMMITTED | FLAG_PURGED | FLAG_COMMITTED;
/// The file's name inside a node's data directory.
pub const FILE_NAME: &str = "raft_meta";

const _: () = assert!(ENCODED_BYTES <= SLOT_SIZE_BYTES);

/// A log position as Raft sees it: (term, index); index = the record's log offset.
pub type TermIndex = (u64, u64);

/// The vote as stored: openraft's standard leader id (term, voted-for) plus `committed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoredVote {
    /// The term.
    pub term: u64,
    /// The candidate voted for in `term`, if any.
    pub node: Option<u64>,
    /// True once a quorum granted this vote (the node is or was leader in `term`).
    pub committed: bool,
}

/// One copy of the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RaftMeta {
    /// Write sequence; the higher valid copy wins.
    pub sequence: u64,
    /// The cluster this node belongs to.
    pub cluster_id: u64,
    /// The last vote saved.
    pub vote: StoredVote,
    /// The last log id purged from the Raft log (`None`: nothing purged).
    pub purged: Option<TermIndex>,
    /// The last committed log id this node learned (`None`: unknown).
    pub committed: Option<TermIndex>,
}

impl RaftMeta {
    fn encode(&self) -> [u8; ENCODED_BYTES] {
        let mut b = [0u8; ENCODED_BYTES];
        let mut flags = 0;
        let put = |b: &mut [u8; ENCODED_BYTES], at: usize, v: u64| {
            b[at..at + 8].copy_from_slice(&v.to_le_bytes())
        };
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        put(&mut b, 16, self.sequence);
        put(&mut b, 24, self.cluster_id);
        put(&mut b, 32, self.vote.term);
        if let Some(n) = self.vote.node {
            flags |= FLAG_VOTE_NODE;
            put(&mut b, 40, n);
        }
        if self.vote.committed {
            flags |= FLAG_VOTE_COMMITTED;
        }
        if let Some((t, i)) = self.purged {
            flags |= FLAG_PURGED;
            put(&mut b, 48, t);
            put(&mut b, 56, i);
        }
        if let Some((t, i)) = self.committed {
            flags |= FLAG_COMMITTED;
            put(&mut b, 64, t);
            put(&mut b, 72, i);
        }
        b[12..16].copy_from_slice(&flags.to_le_bytes());
        let crc = checksum(&b[..ENCODED_BYTES - 4]);
        b[ENCODED_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < ENCODED_BYTES || &b[0..8] != MAGIC || u32_at(b, 8) != VERSION {
            return None;
        }
        if checksum(&b[..ENCODED_BYTES - 4]) != u32_at(b, ENCODED_BYTES - 4) {
            return None;
        }
        let flags = u32_at(b, 12);
        if flags & !KNOWN_FLAGS != 0 || b[80..ENCODED_BYTES - 4].iter().any(|&x| x != 0) {
            return None;
        }
        let has = |f: u32| flags & f != 0;
        Some(RaftMeta {
            sequence: u64_at(b, 16),
            cluster_id: u64_at(b, 24),
            vote: StoredVote {
                term: u64_at(b, 32),
                node: has(FLAG_VOTE_NODE).then(|| u64_at(b, 40)),
                committed: has(FLAG_VOTE_COMMITTED),
            },
            purged: has(FLAG_PURGED).then(|| (u64_at(b, 48), u64_at(b, 56))),
            committed: has(FLAG_COMMITTED).then(|| (u64_at(b, 64), u64_at(b, 72))),
        })
    }
}

/// True when at least one of the two copies in the file's bytes is valid (for offline checks).
#[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
pub fn any_valid_copy(file: &[u8]) -> bool {
    (0..2).any(|slot| {
        let at = slot * SLOT_SIZE_BYTES;
        file.get(at..at + ENCODED_BYTES)
            .and_then(RaftMeta::decode)
            .is_some_and(|m| m.sequence % 2 == slot as u64)
    })
}

fn read_current(file: &FileRef, path: &Path) -> Result<RaftMeta> {
    read_newest_slot(&**file, ENCODED_BYTES, |b| {
        RaftMeta::decode(b).map(|m| (m.sequence, m))
    })
    .map_err(|e| Error::io(path, e))?
    .ok_or_else(|| Error::Corruption {
        segment: path.to_path_buf(),
        file_offset: 0,
        record_offset: None,
        detail: "neither copy of the Raft metadata is valid".into(),
    })
}

/// The cluster id an existing `dir/raft_meta` records (to adopt a directory from before
/// identity files; see [`super::identity`]).
pub fn stored_cluster_id(io: &IoRef, dir: &Path) -> Result<u64> {
    let path = dir.join(FILE_NAME);
    let file = io.open(&path, false).map_err(|e| Error::io(&path, e))?;
    Ok(read_current(&file, &path)?.cluster_id)
}

/// The open metadata file: the last state made durable, and the means to replace it.
#[derive(Debug)]
pub struct MetaFile {
    path: PathBuf,
    file: FileRef,
    current: RaftMeta,
}

impl MetaFile {
    /// Opens `dir/raft_meta`, creating it (durably, directory entry included) for `cluster_id`
    /// when missing. Fails with [`Error::InvalidArgument`] when the file belongs to another
    /// cluster, and with [`Error::Corruption`] when it exists but neither copy is valid.
    pub fn open(io: &IoRef, dir: &Path, cluster_id: u64) -> Result<MetaFile> {
        let path = dir.join(FILE_NAME);
        let existed = io
            .list(dir)
            .map_err(|e| Error::io(dir, e))?
            .iter()
            .any(|n| n == FILE_NAME);
        let file = io.open(&path, true).map_err(|e| Error::io(&path, e))?;
        if !existed {
            let mut m = MetaFile {
                path: path.clone(),
                file,
                current: RaftMeta {
                    cluster_id,
                    ..RaftMeta::default()
                },
            };
            // Both slots are written (and so allocated) now: later writes never need space.
            m.write_both(m.current)?;
            io.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
            return Ok(m);
        }
        let current = read_current(&file, &path)?;
        if current.cluster_id != cluster_id {
            return Err(Error::InvalidArgument(format!(
                "{} belongs to cluster {:#x}, not {:#x}",
                path.display(),
                current.cluster_id,
                cluster_id
            )));
        }
        Ok(MetaFile {
            path,
            file,
            current,
        })
    }

    /// The last state made durable.
    pub fn current(&self) -> RaftMeta {
        self.current
    }

    /// Writes `next` (sequence and cluster id assigned here) to the next slot and fsyncs it.
    pub fn write(&mut self, mut next: RaftMeta) -> Result<()> {
        next.sequence = self.current.sequence + 1;
        next.cluster_id = self.current.cluster_id;
        let slot = next.sequence % 2;
        self.file
            .write_at_sync(&next.encode(), slot * SLOT_SIZE_BYTES as u64)
            .map_err(|e| Error::io(&self.path, e))?;
        self.current = next;
        Ok(())
    }

    /// Writes `next` to both slots, so no fallback to the older copy can undo it.
    pub fn write_both(&mut self, next: RaftMeta) -> Result<()> {
        self.write(next)?;
        self.write(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Io, SimDisk};
    use std::sync::Arc;

    fn disk() -> (Arc<SimDisk>, IoRef) {
        let disk = Arc::new(SimDisk::new(7));
        disk.create_dir_all(Path::new("/n")).unwrap();
        let io: IoRef = disk.clone();
        (disk, io)
    }

    #[test]
    fn round_trip_and_cluster_check() {
        let (_disk, io) = disk();
        let mut m = MetaFile::open(&io, Path::new("/n"), 42).unwrap();
        let next = RaftMeta {
            vote: StoredVote {
                term: 5,
                node: Some(3),
                committed: true,
            },
            purged: Some((2, 99)),
            committed: Some((5, 120)),
            ..m.current()
        };
        m.write(next).unwrap();
        drop(m);
        let m = MetaFile::open(&io, Path::new("/n"), 42).unwrap();
        let got = m.current();
        assert_eq!(
            (got.vote, got.purged, got.committed),
            (next.vote, next.purged, next.committed)
        );
        drop(m);
        let err = MetaFile::open(&io, Path::new("/n"), 43).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn torn_newest_slot_falls_back_and_both_bad_is_corruption() {
        let (disk, io) = disk();
        let mut m = MetaFile::open(&io, Path::new("/n"), 1).unwrap();
        let v = |term| RaftMeta {
            vote: StoredVote {
                term,
                node: None,
                committed: false,
            },
            ..m.current()
        };
        m.write(v(7)).unwrap();
        let seq = m.current().sequence;
        drop(m);
        let p = Path::new("/n/raft_meta");
        disk.poke(p, (seq % 2) * 4096 + 33, &[0xee]).unwrap();
        let m = MetaFile::open(&io, Path::new("/n"), 1).unwrap();
        assert_eq!(
            m.current().vote.term,
            0,
            "older copy wins over a damaged newer one"
        );
        drop(m);
        disk.poke(p, ((seq + 1) % 2) * 4096 + 33, &[0xee]).unwrap();
        let err = MetaFile::open(&io, Path::new("/n"), 1).unwrap_err();
        assert!(matches!(err, Error::Corruption { .. }), "{err}");
    }

    #[test]
    fn unknown_flags_and_reserved_bytes_are_rejected() {
        let m = RaftMeta::default();
        let mut b = m.encode();
        assert_eq!(RaftMeta::decode(&b), Some(m));
        b[12] |= 0x80;
        let crc = checksum(&b[..ENCODED_BYTES - 4]);
        b[ENCODED_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(RaftMeta::decode(&b), None);
    }
}
