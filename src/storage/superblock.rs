//! The superblock: the log's identity and its durable watermark, in two checksummed copies.
//!
//! File `superblock`, two 4096-byte slots at file offsets 0 and 4096. Copy `sequence` goes to
//! slot `sequence % 2`, so a torn write can only damage the slot being written while the other
//! keeps the previous state. Recovery takes the valid copy with the highest sequence. Changes
//! that must not be undone by falling back to the older copy (clearing a pending truncation,
//! moving the start after a purge) are written twice, so both slots agree.
//!
//! ```text
//! byte  size  field
//!    0     8  magic "SLSUPERB"
//!    8     4  format version (1)
//!   12     4  reserved (0)
//!   16     8  sequence         increases by one per write
//!   24     8  log_id           identity checked in every record frame
//!   32     8  created_us       creation time, microseconds since the Unix epoch
//!   40     8  start_offset     logical first offset (records below were purged)
//!   48     8  durable_end      every offset below this was fsynced: damage below it is corruption
//!   56     8  truncate_from    u64::MAX, or a truncation in progress: records at or above it go
//!   64    60  reserved (0)
//!  124     4  CRC-32 of bytes 0..124
//! ```

use crate::io::{read_exact_at, File, FileRef};
use std::io;

/// Size of one slot; a sector multiple so a slot write never shares a sector with the other.
pub const SLOT_SIZE_BYTES: usize = 4096;
const ENCODED_BYTES: usize = 128;
const MAGIC: &[u8; 8] = b"SLSUPERB";
const VERSION: u32 = 1;
/// `truncate_from` value meaning "no truncation in progress".
pub const NO_TRUNCATION: u64 = u64::MAX;

const _: () = assert!(ENCODED_BYTES <= SLOT_SIZE_BYTES);
const _: () = assert!(SLOT_SIZE_BYTES % 512 == 0);

/// The contents of one superblock copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// Write sequence; the higher valid copy wins.
    pub sequence: u64,
    /// The log's identity.
    pub log_id: u64,
    /// Creation time.
    pub created_us: u64,
    /// Logical first offset.
    pub start_offset: u64,
    /// Exclusive end of the offsets known fsynced.
    pub durable_end: u64,
    /// A truncation in progress, or [`NO_TRUNCATION`].
    pub truncate_from: u64,
}

impl Superblock {
    /// Encodes into one slot's bytes.
    pub fn encode(&self) -> [u8; SLOT_SIZE_BYTES] {
        let mut b = [0u8; SLOT_SIZE_BYTES];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        b[24..32].copy_from_slice(&self.log_id.to_le_bytes());
        b[32..40].copy_from_slice(&self.created_us.to_le_bytes());
        b[40..48].copy_from_slice(&self.start_offset.to_le_bytes());
        b[48..56].copy_from_slice(&self.durable_end.to_le_bytes());
        b[56..64].copy_from_slice(&self.truncate_from.to_le_bytes());
        let crc = crate::storage::checksum::checksum(&b[..ENCODED_BYTES - 4]);
        b[ENCODED_BYTES - 4..ENCODED_BYTES].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes one slot; `None` unless magic, version and checksum are right.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < ENCODED_BYTES || &b[0..8] != MAGIC {
            return None;
        }
        let u64_at = |at: usize| super::record::u64_at(b, at);
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&b[ENCODED_BYTES - 4..ENCODED_BYTES]);
        if crate::storage::checksum::checksum(&b[..ENCODED_BYTES - 4]) != u32::from_le_bytes(crc) {
            return None;
        }
        if b[8..12] != VERSION.to_le_bytes() {
            return None;
        }
        if b[12..16]
            .iter()
            .chain(&b[64..ENCODED_BYTES - 4])
            .any(|&x| x != 0)
        {
            return None;
        }
        Some(Superblock {
            sequence: u64_at(16),
            log_id: u64_at(24),
            created_us: u64_at(32),
            start_offset: u64_at(40),
            durable_end: u64_at(48),
            truncate_from: u64_at(56),
        })
    }
}

/// Reads both slots and returns the newest valid copy, or `None` if neither is valid.
pub fn read(file: &dyn File) -> io::Result<Option<Superblock>> {
    read_newest_slot(file, ENCODED_BYTES, |b| {
        Superblock::decode(b).map(|sb| (sb.sequence, sb))
    })
}

/// The two-slot protocol shared by every small metadata file (the superblock, Raft's metadata):
/// reads the first `encoded_bytes` of both [`SLOT_SIZE_BYTES`] slots, decodes each into
/// `(sequence, value)`, and returns the valid value with the highest sequence. A copy in the
/// wrong slot (`sequence % 2` names the slot it was written to) is a misdirected write and is
/// ignored.
pub(crate) fn read_newest_slot<T>(
    file: &dyn File,
    encoded_bytes: usize,
    decode: impl Fn(&[u8]) -> Option<(u64, T)>,
) -> io::Result<Option<T>> {
    debug_assert!(encoded_bytes <= SLOT_SIZE_BYTES);
    let len = file.len()?;
    let mut best: Option<(u64, T)> = None;
    let mut buf = vec![0u8; encoded_bytes];
    for slot in 0..2u64 {
        let at = slot * SLOT_SIZE_BYTES as u64;
        if len < at + encoded_bytes as u64 {
            continue;
        }
        read_exact_at(file, &mut buf, at)?;
        if let Some((seq, value)) = decode(&buf) {
            if seq % 2 == slot && best.as_ref().is_none_or(|(b, _)| seq > *b) {
                best = Some((seq, value));
            }
        }
    }
    Ok(best.map(|(_, v)| v))
}

/// Writes the superblock durably, holding the last state written.
#[derive(Debug)]
pub struct SuperblockWriter {
    file: FileRef,
    current: Superblock,
}

impl SuperblockWriter {
    /// Wraps an open superblock file whose newest valid copy is `current`.
    pub fn new(file: FileRef, current: Superblock) -> Self {
        SuperblockWriter { file, current }
    }

    /// The last state made durable.
    pub fn current(&self) -> Superblock {
        self.current
    }

    /// Writes `next` (its sequence is assigned here) to the next slot and fsyncs it.
    pub fn write(&mut self, mut next: Superblock) -> io::Result<()> {
        next.sequence = self.current.sequence + 1;
        next.log_id = self.current.log_id;
        let slot = next.sequence % 2;
        self.file
            .write_at_sync(&next.encode(), slot * SLOT_SIZE_BYTES as u64)?;
        self.current = next;
        Ok(())
    }

    /// Writes `next` to both slots, so that no fallback can return an older state.
    pub fn write_both(&mut self, next: Superblock) -> io::Result<()> {
        self.write(next)?;
        self.write(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Io, SimDisk};
    use std::path::Path;

    fn sb() -> Superblock {
        Superblock {
            sequence: 0,
            log_id: 9,
            created_us: 1,
            start_offset: 0,
            durable_end: 0,
            truncate_from: NO_TRUNCATION,
        }
    }

    #[test]
    fn newest_valid_copy_wins_and_torn_slot_falls_back() {
        let disk = SimDisk::new(1);
        disk.create_dir_all(Path::new("/l")).unwrap();
        let f = disk.open(Path::new("/l/superblock"), true).unwrap();
        let mut w = SuperblockWriter::new(f.clone(), sb());
        w.write(Superblock {
            durable_end: 10,
            ..sb()
        })
        .unwrap();
        w.write(Superblock {
            durable_end: 20,
            ..sb()
        })
        .unwrap();
        assert_eq!(read(&*f).unwrap().unwrap().durable_end, 20);
        // Damage the newest slot (sequence 2 lives in slot 0).
        disk.poke(Path::new("/l/superblock"), 50, &[0xff]).unwrap();
        let got = read(&*f).unwrap().unwrap();
        assert_eq!((got.sequence, got.durable_end), (1, 10));
        disk.poke(Path::new("/l/superblock"), 4096 + 50, &[0xff])
            .unwrap();
        assert!(read(&*f).unwrap().is_none());
    }

    #[test]
    fn copy_in_wrong_slot_is_ignored() {
        let mut s = sb();
        s.sequence = 3;
        let disk = SimDisk::new(2);
        disk.create_dir_all(Path::new("/l")).unwrap();
        let f = disk.open(Path::new("/l/superblock"), true).unwrap();
        f.write_at(&s.encode(), 0).unwrap();
        assert!(read(&*f).unwrap().is_none());
    }
}
