//! Options of a local log, with documented defaults.

use crate::io::{IoRef, PosixIo, UringIo};
use crate::storage::record::{self, MAX_PAYLOAD_BYTES};
use crate::storage::segment::{FOOTER_BYTES, HEADER_REGION_BYTES};
use crate::{Error, Result};
use std::sync::Once;

/// When appends become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// `append` returns only after its records (and what finds a new segment after a crash: its
    /// name, or its header in a prepared file whose name is durable) are fsynced. Concurrent
    /// appenders share one fsync (group commit). The default.
    Always,
    /// `append` returns once the records are written to the file (readable, not durable);
    /// call [`crate::Log::sync`] or [`crate::Log::sync_to`] to make them durable.
    Manual,
}

/// Which I/O backend a log uses.
// Non-exhaustive: the `testing` feature adds a variant (and more backends may come).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum IoBackend {
    /// Chosen by measurement (issue 16, README "Default backend"): POSIX when the log writes
    /// with `direct_io` (the default), io_uring otherwise if the kernel allows it (POSIX if
    /// not, logged once per process). With O_DIRECT a segment has one group in flight at a
    /// time, so io_uring's overlap is never used while its ring round trip (a hand-off to the
    /// ring thread and back per group) remains: POSIX was ahead in 13 of 19 durable cells.
    /// Through the page cache io_uring's overlapped writes win at high concurrency. Default.
    #[default]
    Auto,
    /// io_uring; opening fails if the kernel refuses it.
    IoUring,
    /// pread/pwrite/fdatasync.
    Posix,
    /// A backend the caller built (the simulated disk): a test hook, not part of the API.
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    Custom(IoRef),
}

impl IoBackend {
    /// Builds the backend for a log that writes with `direct_io` or not: one io_uring ring and
    /// thread per log.
    pub(crate) fn resolve(&self, direct_io: bool) -> Result<IoRef> {
        static FALLBACK_LOGGED: Once = Once::new();
        match self {
            IoBackend::Auto if direct_io => Ok(PosixIo::new_ref()),
            IoBackend::Auto => match UringIo::new_ref() {
                Ok(io) => Ok(io),
                Err(e) => {
                    FALLBACK_LOGGED.call_once(|| {
                        tracing::warn!(error = %e, "io_uring unavailable; using the POSIX backend");
                    });
                    Ok(PosixIo::new_ref())
                }
            },
            IoBackend::IoUring => UringIo::new_ref().map_err(|e| Error::Io {
                path: "io_uring_setup".into(),
                source: e,
            }),
            IoBackend::Posix => Ok(PosixIo::new_ref()),
            #[cfg(any(test, feature = "testing"))]
            IoBackend::Custom(io) => Ok(io.clone()),
        }
    }
}

/// Options for [`crate::Log::open`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LogOptions {
    /// A segment is sealed once it could not take one more record of `max_record_bytes`
    /// within this size (so segments end up between `segment_size_bytes - max_record_bytes`
    /// and `segment_size_bytes`).
    /// Default 64 MiB: a 1 GiB log is 16 files (cheap to open, list and map), a crash rescans
    /// at most one 64 MiB tail (tens of milliseconds), retention frees space in 64 MiB steps,
    /// and catch-up can ship 16 segments of a GiB in parallel. Range 16 KiB ..= 1 GiB.
    pub segment_size_bytes: u64,
    /// The sparse index keeps one entry per this many bytes of frames. Default 4 KiB
    /// (2 MiB of index memory per GiB of log; a lookup walks at most 4 KiB).
    pub index_interval_bytes: u32,
    /// Largest payload accepted. Default 8 MiB; at most 64 MiB and less than a segment.
    pub max_record_bytes: u32,
    /// Most records one `append_batch` call may carry. Default 65 536.
    pub max_batch_records: usize,
    /// Durability of appends. Default [`SyncMode::Always`].
    pub sync: SyncMode,
    /// How often (at most) a group commit also persists the durable watermark to the
    /// superblock, off the acknowledgement path. Seals, truncations, purges and `close` always
    /// persist it. 0 persists it after every fsync. Default 200 ms.
    pub superblock_interval_ms: u64,
    /// Retention by size: after each segment seal, the oldest sealed segments are purged while
    /// the log's files exceed this. Default `None` (keep everything).
    pub retention_bytes: Option<u64>,
    /// Retention by age: sealed segments whose newest record is older than this are purged,
    /// after each seal and every `retention_check_interval_ms` (so an idle log ages out too).
    /// Default `None`.
    pub retention_age_ms: Option<u64>,
    /// How often the background thread applies retention by age, when `retention_age_ms` is
    /// set. Default 1000 ms (a check lists the segments under the writer lock: microseconds);
    /// range 1 ms ..= 1 day. A driven log has no background thread: its owner calls
    /// [`crate::Log::apply_retention`].
    pub retention_check_interval_ms: u64,
    /// Create segment files ahead of time, filled with written zeros, on a background thread,
    /// so that an fdatasync after an append commits no file-system metadata (measured here: a
    /// 1 KiB append + fdatasync takes ~105 µs into written blocks against ~190 µs when it
    /// extends the file). A full segment that retention retires is recycled instead of
    /// deleted when nothing reads it any more: renamed, its gap to the segment size
    /// zero-filled, and given a fresh header when it becomes the next segment, so its blocks
    /// are not written twice ([`crate::Log::prepare_stats`] counts both). While durable appends
    /// run, the zeros are written at their pace (at most two bytes per byte they made durable,
    /// in 64 KiB steps), so that a preparation never fills the device queue in front of their
    /// flushes; idle, at full speed. Default true.
    pub preallocate: bool,
    /// Group commit writes the active segment with `O_DIRECT`: each durable group becomes one
    /// 4 KiB-aligned write (the partly filled block it starts in is rewritten from a copy kept in
    /// memory), durable on completion (`RWF_DSYNC` on io_uring, which completes it without an io-wq
    /// worker; a linked fdatasync on POSIX), with no page-cache copy. Only one group is in flight
    /// at a time (two writes of the same partly filled block must not race), so
    /// `max_groups_in_flight` does not apply. Groups nobody waits for (`SyncMode::Manual`) still go
    /// through the page cache, and so does a synced group written while such groups are not yet
    /// durable: a direct write is made durable on its own range only (`RWF_DSYNC`, or a FUA write),
    /// so that group's whole-file fdatasync covers them. Where the file system refuses `O_DIRECT`
    /// (tmpfs), the log says so once and writes through the page cache. Readers of records written
    /// direct read them from the disk, not the page cache. Default true: 1 KiB durable appends on
    /// io_uring were 1.25–2.1× faster with it here; buffered appends and 1 MiB records moved within
    /// noise (figures in the README's performance section).
    pub direct_io: bool,
    /// How many group-commit groups may be in flight at once on a backend that completes
    /// asynchronously (io_uring): the next group is written while earlier fdatasyncs run.
    /// Default 2; range 1..=16.
    pub max_groups_in_flight: usize,
    /// Most helper threads this log's sequential readers ([`crate::Log::iter`] and the
    /// readers built on it) run at once. A reader that has read 256 KiB of a sealed segment
    /// with at least 1 MiB more ahead (within its bound) starts one, which verifies the
    /// segment's frame checksums ahead of it (and so reads its pages from disk), at most about
    /// 16 MiB ahead; the reader then skips the checksums of frames already verified, as long
    /// as it keeps moving (a reader idle for a second loses its helper and verifies the rest
    /// itself). A cold iteration of small records is bound by the checksum and the wait for
    /// the disk on the reader's own core; this moves both to another. A reader that finds no
    /// free slot verifies every frame itself. 0: no helper. Default 2; at most 64. A driven
    /// log never starts one. See the README, "How a sequential read runs".
    pub read_ahead_threads: usize,
    /// The I/O backend. Default [`IoBackend::Auto`].
    pub io: IoBackend,
    /// The log's identity (the `log_id` in every frame): `None` picks a random one at creation
    /// (default); `Some(id)` creates the log with `id` and refuses to open a log with another.
    /// Replicas of one replicated log share it, so their frames are the same bytes.
    pub log_id: Option<u64>,
    /// Every frame carries a durability hint (`durable_lag`) that lets recovery tell damage to
    /// an acknowledged record from a torn tail. Default true. A replicated log turns it off:
    /// the hint is node-local, and replicas must store identical frames (a torn or damaged tail
    /// there is repaired from the peers that hold it).
    pub durable_hints: bool,
    /// No threads: the flusher's and the background thread's work runs only when the owner
    /// calls [`crate::Log::pump`] (or a blocking wait does it), so a simulation decides when
    /// bytes reach the disk and replays the same run from a seed. Nothing is preallocated.
    /// Needs a backend that completes writes synchronously (the simulated disk or POSIX;
    /// io_uring is refused). Default false. A test hook (the simulation): only with the
    /// `testing` feature.
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub driven: bool,
}

/// Most read-ahead helper threads a log may allow (see `LogOptions::read_ahead_threads`).
pub const MAX_READ_AHEAD_THREADS: usize = 64;

impl LogOptions {
    /// Whether the log is driven (see the `driven` field, which only the `testing` feature has).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn is_driven(&self) -> bool {
        self.driven
    }

    /// Never driven without the `testing` feature.
    #[cfg(not(any(test, feature = "testing")))]
    pub(crate) fn is_driven(&self) -> bool {
        false
    }
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_size_bytes: 64 << 20,
            index_interval_bytes: 4096,
            max_record_bytes: 8 << 20,
            max_batch_records: 65_536,
            sync: SyncMode::Always,
            superblock_interval_ms: 200,
            retention_bytes: None,
            retention_age_ms: None,
            retention_check_interval_ms: 1000,
            preallocate: true,
            direct_io: true,
            max_groups_in_flight: 2,
            read_ahead_threads: 2,
            io: IoBackend::Auto,
            log_id: None,
            durable_hints: true,
            #[cfg(any(test, feature = "testing"))]
            driven: false,
        }
    }
}

impl LogOptions {
    /// Checks every limit; called by `Log::open`.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if !(16 << 10..=1 << 30).contains(&self.segment_size_bytes) {
            return bad(format!(
                "segment_size_bytes {} not in 16 KiB..=1 GiB",
                self.segment_size_bytes
            ));
        }
        if self.max_record_bytes > MAX_PAYLOAD_BYTES {
            return bad(format!("max_record_bytes above {MAX_PAYLOAD_BYTES}"));
        }
        let largest_frame = record::frame_len(self.max_record_bytes as usize) as u64;
        if largest_frame + HEADER_REGION_BYTES + FOOTER_BYTES as u64 > self.segment_size_bytes {
            return bad("max_record_bytes does not fit in a segment".into());
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be positive".into());
        }
        if !(1..=16).contains(&self.max_groups_in_flight) {
            return bad("max_groups_in_flight must be in 1..=16".into());
        }
        if self.read_ahead_threads > MAX_READ_AHEAD_THREADS {
            return bad(format!("read_ahead_threads above {MAX_READ_AHEAD_THREADS}"));
        }
        if self.log_id == Some(0) {
            return bad("log_id must not be 0".into());
        }
        if !(1..=86_400_000).contains(&self.retention_check_interval_ms) {
            return bad("retention_check_interval_ms must be in 1..=86400000".into());
        }
        if self.max_batch_records == 0 {
            return bad("max_batch_records must be positive".into());
        }
        Ok(())
    }
}

#[cfg(any(test, feature = "testing"))]
impl From<IoRef> for IoBackend {
    fn from(io: IoRef) -> Self {
        IoBackend::Custom(io)
    }
}
