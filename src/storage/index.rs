//! The sparse offset index of one segment.
//!
//! One entry `(relative offset u32, file position u32)` is kept for the first record of a
//! segment and then for the first record that starts at least `index_interval_bytes` after the
//! previously indexed one. `read(offset)` binary-searches the entries and walks at most one
//! interval of frames. With the default 4 KiB interval an entry costs 8 bytes per 4 KiB of log:
//! **2 MiB of memory per GiB of log** (less with records larger than the interval, one entry per
//! record at most). Sealed segments store the same entries on disk, in front of the footer, so
//! reopening never rescans them.

/// One index entry, as stored on disk (8 bytes, little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset minus the segment's base offset.
    pub relative_offset: u32,
    /// File position of that record's frame.
    pub file_pos: u32,
}

/// Bytes per stored entry.
pub const INDEX_ENTRY_SIZE_BYTES: usize = 8;

/// A segment's sparse index.
#[derive(Debug, Clone, Default)]
pub struct SparseIndex {
    entries: Vec<IndexEntry>,
    interval_bytes: u32,
}

impl SparseIndex {
    /// An empty index that adds an entry every `interval_bytes` of frames.
    pub fn new(interval_bytes: u32) -> Self {
        assert!(interval_bytes > 0);
        SparseIndex {
            entries: Vec::new(),
            interval_bytes,
        }
    }

    /// File position of the last kept entry.
    pub fn last_pos(&self) -> Option<u32> {
        self.entries.last().map(|e| e.file_pos)
    }

    /// Whether `observe` keeps a record whose frame starts at `file_pos`, given the last kept
    /// position `last` and the interval.
    pub fn would_keep(interval_bytes: u32, last: Option<u32>, file_pos: u32) -> bool {
        last.is_none_or(|l| file_pos - l >= interval_bytes)
    }

    /// Notes a record at `relative_offset` whose frame starts at `file_pos`; keeps it when the
    /// interval since the last kept entry has passed.
    pub fn observe(&mut self, relative_offset: u32, file_pos: u32) {
        match self.entries.last() {
            Some(last) => {
                debug_assert!(relative_offset > last.relative_offset);
                debug_assert!(file_pos > last.file_pos);
                if Self::would_keep(self.interval_bytes, Some(last.file_pos), file_pos) {
                    self.entries.push(IndexEntry {
                        relative_offset,
                        file_pos,
                    });
                }
            }
            None => self.entries.push(IndexEntry {
                relative_offset,
                file_pos,
            }),
        }
    }

    /// The entry to start walking from to find `relative_offset`: the last one at or before it.
    pub fn lookup(&self, relative_offset: u32) -> Option<IndexEntry> {
        let idx = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        idx.checked_sub(1).map(|i| self.entries[i])
    }

    /// Drops every entry for offsets at or after `relative_offset` (after a truncation).
    pub fn truncate(&mut self, relative_offset: u32) {
        let keep = self
            .entries
            .partition_point(|e| e.relative_offset < relative_offset);
        self.entries.truncate(keep);
    }

    /// True when every entry points at an 8-aligned frame position in `[first_pos, data_end)`
    /// and at an offset below `record_count`, starting with the segment's first frame.
    pub fn fits(&self, first_pos: u32, data_end: u64, record_count: u64) -> bool {
        let first_ok = self
            .entries
            .first()
            .is_none_or(|e| e.relative_offset == 0 && e.file_pos == first_pos);
        first_ok
            && self.entries.iter().all(|e| {
                u64::from(e.file_pos) < data_end
                    && e.file_pos % 8 == 0
                    && u64::from(e.relative_offset) < record_count
            })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The on-disk encoding of all entries.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * INDEX_ENTRY_SIZE_BYTES);
        for e in &self.entries {
            out.extend_from_slice(&e.relative_offset.to_le_bytes());
            out.extend_from_slice(&e.file_pos.to_le_bytes());
        }
        out
    }

    /// Decodes stored entries; `None` if they are not strictly increasing or the length is off.
    pub fn decode(bytes: &[u8], interval_bytes: u32) -> Option<Self> {
        if bytes.len() % INDEX_ENTRY_SIZE_BYTES != 0 {
            return None;
        }
        let mut index = SparseIndex::new(interval_bytes);
        for chunk in bytes.chunks_exact(INDEX_ENTRY_SIZE_BYTES) {
            let relative_offset = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let file_pos = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            if let Some(last) = index.entries.last() {
                if relative_offset <= last.relative_offset || file_pos <= last.file_pos {
                    return None;
                }
            }
            index.entries.push(IndexEntry {
                relative_offset,
                file_pos,
            });
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_entries_and_lookup() {
        let mut ix = SparseIndex::new(100);
        for i in 0..50u32 {
            ix.observe(i, 4096 + i * 40);
        }
        // 40-byte records, 100-byte interval: an entry every third record.
        assert_eq!(ix.len(), 17);
        for i in 0..50u32 {
            let e = ix.lookup(i).unwrap();
            assert!(e.relative_offset <= i && i - e.relative_offset < 3);
        }
        let round = SparseIndex::decode(&ix.encode(), 100).unwrap();
        assert_eq!(round.entries, ix.entries);
        ix.truncate(10);
        assert!(ix.lookup(20).unwrap().relative_offset < 10);
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(SparseIndex::decode(&[1, 2, 3], 1).is_none());
        let mut bad = Vec::new();
        for (r, p) in [(5u32, 100u32), (4, 200)] {
            bad.extend_from_slice(&r.to_le_bytes());
            bad.extend_from_slice(&p.to_le_bytes());
        }
        assert!(SparseIndex::decode(&bad, 1).is_none());
    }
}
