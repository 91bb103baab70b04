//! The yardstick of issue 16: a *naive group commit*, about as simple as a durable log can be.
//!
//! Writers queue their framed records under one mutex; the first waiter that finds no leader
//! becomes the leader, takes everything queued, writes it with one `pwrite` and one
//! `fdatasync` (the lock released meanwhile), then marks it durable and wakes everyone with a
//! condvar. Whoever is still not durable then elects the next leader the same way.
//!
//! Frames are minimal but do the same work per record as sitelog's: `len: u32 LE`,
//! `crc: u32 LE` (CRC-32 of the payload, the same crc32fast sitelog uses), payload.
//!
//! Files are *not* preallocated: each write extends the file, so every `fdatasync` also
//! commits the new size, as a plain design would. It rolls to a new file when the next write
//! would pass `segment_bytes`: the leader creates the file and fsyncs the directory inline
//! (no background work at all). A failed write or fsync poisons it: every later append fails.
//!
//! Async callers (the bench's task cells) call [`NaiveLog::append`] through
//! `tokio::task::spawn_blocking`, as a simple design without an async API would.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Bytes of a frame header: length and checksum.
pub const FRAME_HEADER_BYTES: usize = 8;

/// The file the leader writes into: only the leader touches it, outside the lock.
#[derive(Debug)]
struct Tail {
    file: File,
    /// Bytes written into `file`.
    pos_bytes: u64,
    /// Number of `file` (its name is `{index:08}.naive`).
    index: u64,
}

#[derive(Debug)]
struct State {
    /// Framed records waiting for a leader: at most one per blocked writer, so bounded by the
    /// writers times their record size.
    queue: Vec<u8>,
    /// Sequence number the next queued record gets.
    next_seq: u64,
    /// Every record below this is durable.
    durable_seq: u64,
    /// `None` while a leader writes.
    tail: Option<Tail>,
    /// Why the log failed, once it has.
    failed: Option<String>,
    flushes: u64,
    rolls: u64,
}

/// A naive group-commit log in one directory.
#[derive(Debug)]
pub struct NaiveLog {
    dir: PathBuf,
    segment_bytes: u64,
    state: Mutex<State>,
    durable: Condvar,
}

/// Counters since open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NaiveStats {
    pub records: u64,
    /// `fdatasync`s of written groups (one per group).
    pub flushes: u64,
    /// New files started after the first.
    pub rolls: u64,
}

fn file_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{index:08}.naive"))
}

/// Creates file `index` in `dir` and makes its name durable.
fn create_file(dir: &Path, index: u64) -> io::Result<File> {
    let file = File::create_new(file_path(dir, index))?;
    File::open(dir)?.sync_all()?;
    Ok(file)
}

impl NaiveLog {
    /// Creates the directory (it must not hold a naive log yet) and the first file.
    pub fn create(dir: &Path, segment_bytes: u64) -> io::Result<NaiveLog> {
        assert!(
            segment_bytes > FRAME_HEADER_BYTES as u64,
            "segment too small"
        );
        std::fs::create_dir_all(dir)?;
        let file = create_file(dir, 0)?;
        let tail = Tail {
            file,
            pos_bytes: 0,
            index: 0,
        };
        Ok(NaiveLog {
            dir: dir.to_path_buf(),
            segment_bytes,
            state: Mutex::new(State {
                queue: Vec::new(),
                next_seq: 0,
                durable_seq: 0,
                tail: Some(tail),
                failed: None,
                flushes: 0,
                rolls: 0,
            }),
            durable: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking writer cannot leave the state half-changed: every change is one store.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one record and returns once it is durable (its sequence number).
    pub fn append(&self, payload: &[u8]) -> io::Result<u64> {
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record too large"))?;
        let mut st = self.lock();
        if let Some(why) = &st.failed {
            return Err(io::Error::other(why.clone()));
        }
        st.queue.extend_from_slice(&len.to_le_bytes());
        st.queue
            .extend_from_slice(&crate::storage::checksum::checksum(payload).to_le_bytes());
        st.queue.extend_from_slice(payload);
        let seq = st.next_seq;
        st.next_seq += 1;
        loop {
            if st.durable_seq > seq {
                return Ok(seq);
            }
            if let Some(why) = &st.failed {
                return Err(io::Error::other(why.clone()));
            }
            match st.tail.take() {
                Some(tail) => st = self.lead(st, tail),
                None => st = self.durable.wait(st).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }

    /// As the leader: writes and fsyncs everything queued without the lock, then publishes.
    fn lead<'a>(&'a self, mut st: MutexGuard<'a, State>, mut tail: Tail) -> MutexGuard<'a, State> {
        let group = std::mem::take(&mut st.queue);
        let end_seq = st.next_seq;
        drop(st);
        let written = self.write_group(&mut tail, &group);
        let mut st = self.lock();
        match written {
            Ok(rolled) => {
                st.durable_seq = end_seq;
                st.flushes += 1;
                st.rolls += u64::from(rolled);
            }
            Err(e) => st.failed = Some(format!("naive log write or fdatasync failed: {e}")),
        }
        st.tail = Some(tail);
        // Keep the emptied buffer's capacity for the next group.
        if st.queue.is_empty() {
            st.queue = group;
            st.queue.clear();
        }
        self.durable.notify_all();
        st
    }

    /// One group: a roll if it would pass the segment size, one pwrite, one fdatasync.
    /// Returns whether it rolled.
    fn write_group(&self, tail: &mut Tail, group: &[u8]) -> io::Result<bool> {
        let rolled = tail.pos_bytes > 0 && tail.pos_bytes + group.len() as u64 > self.segment_bytes;
        if rolled {
            tail.file = create_file(&self.dir, tail.index + 1)?;
            tail.index += 1;
            tail.pos_bytes = 0;
        }
        tail.file.write_all_at(group, tail.pos_bytes)?;
        tail.file.sync_data()?;
        tail.pos_bytes += group.len() as u64;
        Ok(rolled)
    }

    pub fn stats(&self) -> NaiveStats {
        let st = self.lock();
        NaiveStats {
            records: st.durable_seq,
            flushes: st.flushes,
            rolls: st.rolls,
        }
    }
}

/// Reads every record of the naive log in `dir`, in order, checking every checksum; a frame
/// that does not fit or does not match is an `InvalidData` error naming file and position.
#[cfg(test)]
pub fn read_all(dir: &Path) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut index = 0;
    loop {
        let data = match std::fs::read(file_path(dir, index)) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        let mut pos = 0;
        while pos < data.len() {
            let bad = || {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad frame in {} at {pos}", file_path(dir, index).display()),
                )
            };
            let header = data.get(pos..pos + FRAME_HEADER_BYTES).ok_or_else(bad)?;
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let start = pos + FRAME_HEADER_BYTES;
            let payload = data.get(start..start + len).ok_or_else(bad)?;
            if crate::storage::checksum::checksum(payload) != crc {
                return Err(bad());
            }
            out.push(payload.to_vec());
            pos = start + len;
        }
        index += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writers append concurrently; every acknowledged record is read back, each writer's in
    /// its order, and groups formed (fewer flushes than records) across several files.
    #[test]
    fn concurrent_writers_read_back_with_fewer_flushes() {
        const WRITERS: usize = 16;
        const PER_WRITER: usize = 200;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("naive");
        let log = NaiveLog::create(&dir, 64 << 10).unwrap();
        std::thread::scope(|s| {
            for w in 0..WRITERS {
                let log = &log;
                s.spawn(move || {
                    for i in 0..PER_WRITER {
                        let payload = format!("writer {w} record {i} {}", "x".repeat(i % 300));
                        log.append(payload.as_bytes()).unwrap();
                    }
                });
            }
        });
        let stats = log.stats();
        let total = (WRITERS * PER_WRITER) as u64;
        assert_eq!(stats.records, total);
        assert!(stats.flushes >= 1 && stats.flushes <= total, "{stats:?}");
        assert!(stats.rolls >= 1, "64 KiB files must roll: {stats:?}");
        let records = read_all(&dir).unwrap();
        assert_eq!(records.len() as u64, total);
        for w in 0..WRITERS {
            let prefix = format!("writer {w} record ");
            let mine: Vec<usize> = records
                .iter()
                .map(|r| std::str::from_utf8(r).unwrap())
                .filter_map(|r| r.strip_prefix(&prefix))
                .map(|r| r.split(' ').next().unwrap().parse().unwrap())
                .collect();
            assert_eq!(mine, (0..PER_WRITER).collect::<Vec<_>>(), "writer {w}");
        }
    }

    #[test]
    fn a_damaged_frame_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("naive");
        let log = NaiveLog::create(&dir, 1 << 20).unwrap();
        log.append(b"hello").unwrap();
        assert_eq!(log.stats().flushes, 1);
        let path = file_path(&dir, 0);
        let mut data = std::fs::read(&path).unwrap();
        *data.last_mut().unwrap() ^= 1;
        std::fs::write(&path, data).unwrap();
        let err = read_all(&dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
