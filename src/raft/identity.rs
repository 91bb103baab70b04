//! Who a data directory belongs to: the cluster id and node id it was created for, written
//! once, before anything else, when a node's data directory is created.
//!
//! A node started on a directory of another node or cluster is refused with
//! [`Error::WrongIdentity`] before it opens the log (so `--id 1` on node 3's directory can never
//! run as node 1 with node 3's votes and entries). A directory from before this file existed
//! (it has `raft_meta` but no `identity`) is adopted: the file is written then, with the
//! cluster id `raft_meta` records and the node id given (the `ADOPTED` flag says the node id
//! was not checked that once). A damaged file is [`Error::Corruption`], never rewritten.
//!
//! File `identity` in the node's data directory, written once (temporary file, fsync, rename,
//! directory fsync: a crash leaves no file or the whole file):
//!
//! ```text
//! byte  size  field
//!    0     8  magic "SLIDENTY"
//!    8     4  format version (1)
//!   12     4  flags: bit 0 adopted (written for a directory from before identity files)
//!   16     8  cluster_id
//!   24     8  node_id
//!   32     8  incarnation   random, non-zero: tells two lives of one node id apart
//!   40     8  created_us    creation time, µs since the Unix epoch
//!   48    12  reserved (0)
//!   60     4  CRC-32 of bytes 0..60
//! ```

use crate::io::IoRef;
use crate::storage::checksum::checksum;
use crate::storage::record::{u32_at, u64_at};
use crate::{Error, Result};
use std::path::Path;

/// The file's name inside a node's data directory.
pub const FILE_NAME: &str = "identity";
/// Size of the file in bytes.
pub const ENCODED_BYTES: usize = 64;
const MAGIC: &[u8; 8] = b"SLIDENTY";
const VERSION: u32 = 1;
const FLAG_ADOPTED: u32 = 1;
const CRC_AT: usize = ENCODED_BYTES - 4;
const RESERVED: std::ops::Range<usize> = 48..CRC_AT;

/// The identity recorded in a data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The cluster the directory belongs to.
    pub cluster_id: u64,
    /// The node the directory belongs to.
    pub node_id: u64,
    /// Random, drawn when the file was written: tells two lives of one node id apart.
    pub incarnation: u64,
    /// When the file was written, µs since the Unix epoch.
    pub created_us: u64,
    /// Written for a directory from before identity files (its node id was taken on trust).
    pub adopted: bool,
}

impl Identity {
    fn new(cluster_id: u64, node_id: u64, adopted: bool) -> Identity {
        let incarnation = loop {
            let i = fastrand::u64(..);
            if i != 0 {
                break i;
            }
        };
        Identity {
            cluster_id,
            node_id,
            incarnation,
            created_us: crate::storage::recovery::now_us(),
            adopted,
        }
    }

    /// The file's bytes.
    pub fn encode(&self) -> [u8; ENCODED_BYTES] {
        let mut b = [0u8; ENCODED_BYTES];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        let flags = if self.adopted { FLAG_ADOPTED } else { 0 };
        b[12..16].copy_from_slice(&flags.to_le_bytes());
        for (at, v) in [
            (16, self.cluster_id),
            (24, self.node_id),
            (32, self.incarnation),
            (40, self.created_us),
        ] {
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        let crc = checksum(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes the file's bytes; `Err` says what check failed.
    pub fn decode(b: &[u8]) -> std::result::Result<Identity, &'static str> {
        if b.len() != ENCODED_BYTES {
            return Err("wrong size");
        }
        if &b[0..8] != MAGIC {
            return Err("bad magic");
        }
        if checksum(&b[..CRC_AT]) != u32_at(b, CRC_AT) {
            return Err("checksum mismatch");
        }
        if u32_at(b, 8) != VERSION {
            return Err("unknown format version");
        }
        let flags = u32_at(b, 12);
        if flags & !FLAG_ADOPTED != 0 || b[RESERVED].iter().any(|&x| x != 0) {
            return Err("unknown flags or non-zero reserved bytes");
        }
        Ok(Identity {
            cluster_id: u64_at(b, 16),
            node_id: u64_at(b, 24),
            incarnation: u64_at(b, 32),
            created_us: u64_at(b, 40),
            adopted: flags & FLAG_ADOPTED != 0,
        })
    }
}

fn has_file(io: &IoRef, dir: &Path, name: &str) -> Result<bool> {
    let names = io.list(dir).map_err(|e| Error::io(dir, e))?;
    Ok(names.iter().any(|n| n == name))
}

fn corrupt(path: &Path, detail: &str) -> Error {
    Error::Corruption {
        segment: path.to_path_buf(),
        file_offset: 0,
        record_offset: None,
        detail: format!("identity file: {detail}"),
    }
}

/// Reads `dir/identity`: `None` when there is none, [`Error::Corruption`] when it does not
/// verify.
pub fn load(io: &IoRef, dir: &Path) -> Result<Option<Identity>> {
    if !has_file(io, dir, FILE_NAME)? {
        return Ok(None);
    }
    let path = dir.join(FILE_NAME);
    let f = io.open(&path, false).map_err(|e| Error::io(&path, e))?;
    let len = f.len().map_err(|e| Error::io(&path, e))?;
    if len != ENCODED_BYTES as u64 {
        return Err(corrupt(
            &path,
            &format!("{len} bytes, expected {ENCODED_BYTES}"),
        ));
    }
    let mut b = [0u8; ENCODED_BYTES];
    crate::io::read_exact_at(&*f, &mut b, 0).map_err(|e| Error::io(&path, e))?;
    Identity::decode(&b)
        .map(Some)
        .map_err(|d| corrupt(&path, d))
}

/// Checks an identity file offline, opening it read-only (`sitelog verify`).
#[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
pub fn verify_file(path: &Path) -> Result<Identity> {
    let b = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Identity::decode(&b).map_err(|d| corrupt(path, d))
}

fn write(io: &IoRef, dir: &Path, id: &Identity) -> Result<()> {
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let path = dir.join(FILE_NAME);
    let f = io.open(&tmp, true).map_err(|e| Error::io(&tmp, e))?;
    f.set_len(0).map_err(|e| Error::io(&tmp, e))?;
    f.write_at_sync(&id.encode(), 0)
        .map_err(|e| Error::io(&tmp, e))?;
    io.rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    io.sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Refuses `found` unless it is `node_id` of `cluster_id`.
pub fn check(dir: &Path, found: &Identity, node_id: u64, cluster_id: u64) -> Result<()> {
    if found.node_id == node_id && found.cluster_id == cluster_id {
        return Ok(());
    }
    Err(Error::WrongIdentity {
        path: dir.to_path_buf(),
        expected_node_id: node_id,
        expected_cluster_id: cluster_id,
        found_node_id: Some(found.node_id),
        found_cluster_id: found.cluster_id,
    })
}

/// Establishes the directory's identity for node `node_id` of cluster `cluster_id` (the
/// directory exists): checks the recorded one, adopts a directory from before identity files,
/// or records it in a new directory. Call it before anything else is written there.
pub fn establish(io: &IoRef, dir: &Path, node_id: u64, cluster_id: u64) -> Result<Identity> {
    if let Some(found) = load(io, dir)? {
        check(dir, &found, node_id, cluster_id)?;
        return Ok(found);
    }
    let adopted = has_file(io, dir, super::meta::FILE_NAME)?;
    if adopted {
        // A directory from before identity files: its cluster is the one raft_meta records.
        let found_cluster_id = super::meta::stored_cluster_id(io, dir)?;
        if found_cluster_id != cluster_id {
            return Err(Error::WrongIdentity {
                path: dir.to_path_buf(),
                expected_node_id: node_id,
                expected_cluster_id: cluster_id,
                found_node_id: None,
                found_cluster_id,
            });
        }
        tracing::warn!(dir = %dir.display(), node_id, "adopting a data directory without an identity file");
    }
    let id = Identity::new(cluster_id, node_id, adopted);
    write(io, dir, &id)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Io, SimDisk};
    use std::sync::Arc;

    fn disk() -> (Arc<SimDisk>, IoRef) {
        let disk = Arc::new(SimDisk::new(3));
        disk.create_dir_all(Path::new("/n")).unwrap();
        let io: IoRef = disk.clone();
        (disk, io)
    }

    #[test]
    fn created_once_then_checked() {
        let (_disk, io) = disk();
        let dir = Path::new("/n");
        let first = establish(&io, dir, 3, 0x77).unwrap();
        assert_eq!(
            (first.node_id, first.cluster_id, first.adopted),
            (3, 0x77, false)
        );
        assert_ne!(first.incarnation, 0);
        assert_eq!(
            establish(&io, dir, 3, 0x77).unwrap(),
            first,
            "not rewritten"
        );
        let err = establish(&io, dir, 1, 0x77).unwrap_err();
        assert!(
            matches!(
                err,
                Error::WrongIdentity {
                    expected_node_id: 1,
                    found_node_id: Some(3),
                    ..
                }
            ),
            "{err}"
        );
        let err = establish(&io, dir, 3, 0x78).unwrap_err();
        assert!(
            matches!(
                err,
                Error::WrongIdentity {
                    found_cluster_id: 0x77,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            load(&io, dir).unwrap(),
            Some(first),
            "refusals write nothing"
        );
    }

    #[test]
    fn old_directory_is_adopted_with_its_cluster() {
        let (_disk, io) = disk();
        let dir = Path::new("/n");
        drop(super::super::meta::MetaFile::open(&io, dir, 0x51).unwrap());
        let err = establish(&io, dir, 2, 0x52).unwrap_err();
        assert!(
            matches!(
                err,
                Error::WrongIdentity {
                    found_node_id: None,
                    found_cluster_id: 0x51,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            load(&io, dir).unwrap(),
            None,
            "a refused adoption writes nothing"
        );
        let id = establish(&io, dir, 2, 0x51).unwrap();
        assert!(id.adopted);
        assert_eq!(load(&io, dir).unwrap(), Some(id));
        assert!(
            establish(&io, dir, 1, 0x51).is_err(),
            "adopted ids are then enforced"
        );
    }

    #[test]
    fn damage_is_corruption_and_never_rewritten() {
        let (disk, io) = disk();
        let dir = Path::new("/n");
        let id = establish(&io, dir, 1, 9).unwrap();
        let path = dir.join(FILE_NAME);
        let bytes = id.encode();
        for at in [0u64, 20, 61] {
            // Flipped, not overwritten with a constant: the incarnation is random, and a byte
            // that already held the constant stayed undamaged (a 1-in-85 flake).
            disk.poke(&path, at, &[bytes[at as usize] ^ 0xff]).unwrap();
            let err = establish(&io, dir, 1, 9).unwrap_err();
            assert!(matches!(err, Error::Corruption { .. }), "byte {at}: {err}");
            disk.poke(&path, at, &id.encode()[at as usize..at as usize + 1])
                .unwrap();
        }
        assert_eq!(establish(&io, dir, 1, 9).unwrap(), id);
        let f = io.open(&path, false).unwrap();
        f.set_len(10).unwrap();
        let err = establish(&io, dir, 1, 9).unwrap_err();
        assert!(matches!(err, Error::Corruption { .. }), "{err}");
    }

    #[test]
    fn unknown_flags_and_reserved_bytes_are_refused() {
        let id = Identity::new(1, 2, false);
        let reseal = |mut b: [u8; ENCODED_BYTES]| {
            let crc = checksum(&b[..CRC_AT]);
            b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
            b
        };
        assert_eq!(Identity::decode(&id.encode()), Ok(id));
        let mut b = id.encode();
        b[13] = 1;
        assert!(Identity::decode(&reseal(b)).is_err());
        let mut b = id.encode();
        b[50] = 1;
        assert!(Identity::decode(&reseal(b)).is_err());
        let mut b = id.encode();
        b[8] = 2;
        assert!(Identity::decode(&reseal(b)).is_err());
    }
}
