//! The background thread of a log: prepares the next segment file (written zeros, off the
//! append path) and persists the durable watermark to the superblock every
//! `superblock_interval_ms`, off the acknowledgement path.

use super::group_commit::GroupCommit;
use super::superblock::{Superblock, SuperblockWriter, NO_TRUNCATION};
use crate::io::IoRef;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Prefix of prepared segment files, `prepared-{n}.seg.tmp`. Every preparation uses a new
/// name: once a prepared file is handed over and renamed into a segment, nothing can ever open
/// its old name again and write zeros into a live segment. Leftovers from an earlier process
/// are removed by the background thread when it starts, off the open path.
pub const PREPARED_PREFIX: &str = "prepared-";
/// Bytes of zeros written per step while preparing (the thread checks for shutdown between).
const PREPARE_STEP_BYTES: usize = 1 << 20;

/// The superblock writer and when it last wrote.
pub(crate) struct SuperblockState {
    pub writer: SuperblockWriter,
    pub written_at: Instant,
}

pub(crate) fn lock_sb(sb: &Mutex<SuperblockState>) -> MutexGuard<'_, SuperblockState> {
    // Updates are single assignments after a successful write: consistent after a panic.
    sb.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes the durable watermark to the superblock if `force` or if the interval passed.
pub(crate) fn persist_watermark(
    sb: &Mutex<SuperblockState>,
    gc: &GroupCommit,
    force: bool,
    interval: Duration,
) -> crate::Result<()> {
    let mut sbs = lock_sb(sb);
    if !force && sbs.written_at.elapsed() < interval {
        return Ok(());
    }
    let durable_end = gc.durable_end();
    let current = sbs.writer.current();
    if current.durable_end != durable_end && current.truncate_from == NO_TRUNCATION {
        let next = Superblock {
            durable_end,
            ..current
        };
        if let Err(e) = sbs.writer.write(next) {
            return Err(gc.poison(format!("superblock write failed: {e}")));
        }
    }
    sbs.written_at = Instant::now();
    Ok(())
}

/// Removes prepared files an earlier process left behind (never segments: only names with
/// the prepared prefix).
pub(crate) fn remove_leftovers(io: &IoRef, dir: &Path) {
    let Ok(names) = io.list(dir) else {
        return;
    };
    for name in names.iter().filter(|n| n.starts_with(PREPARED_PREFIX)) {
        let _ = io.remove(&dir.join(name));
    }
}

struct State {
    prepared: Option<PathBuf>,
    /// Number of preparations started, for unique names.
    generation: u64,
    want_prepare: bool,
    shutdown: bool,
}

/// Shared between the log and its background thread.
pub(crate) struct Background {
    state: Mutex<State>,
    cv: Condvar,
}

/// What the background thread works with.
pub(crate) struct BackgroundJob {
    pub bg: Arc<Background>,
    pub io: IoRef,
    pub dir: PathBuf,
    pub segment_size_bytes: u64,
    pub preallocate: bool,
    pub superblock: Arc<Mutex<SuperblockState>>,
    pub gc: Arc<GroupCommit>,
    pub interval: Duration,
}

impl Background {
    pub fn new() -> Arc<Self> {
        Arc::new(Background {
            state: Mutex::new(State {
                prepared: None,
                generation: 0,
                want_prepare: false,
                shutdown: false,
            }),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the prepared file, if one is ready.
    pub fn take_prepared(&self) -> Option<PathBuf> {
        self.lock().prepared.take()
    }

    /// Asks for the next segment file to be prepared.
    pub fn request_prepare(&self) {
        self.lock().want_prepare = true;
        self.cv.notify_all();
    }

    pub fn shutdown(&self) {
        self.lock().shutdown = true;
        self.cv.notify_all();
    }

    /// Blocks until a prepared file is ready, the thread stops, or `timeout` passes; returns
    /// whether one is ready. A preparation that failed leaves none: the wait runs to the
    /// timeout (the next roll creates its segment without preallocation).
    pub fn wait_prepared(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if st.prepared.is_some() {
                return true;
            }
            let now = Instant::now();
            if st.shutdown || now >= deadline {
                return false;
            }
            st = self
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn is_shutdown(&self) -> bool {
        self.lock().shutdown
    }
}

impl BackgroundJob {
    /// The thread's body.
    pub fn run(self) {
        self.remove_leftovers();
        loop {
            let prepare = {
                let mut st = self.bg.lock();
                if !st.shutdown && !st.want_prepare {
                    st = self
                        .bg
                        .cv
                        .wait_timeout(st, self.interval)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                if st.shutdown {
                    return;
                }
                let prepare = st.want_prepare && st.prepared.is_none() && self.preallocate;
                st.want_prepare = false;
                st.generation += 1;
                prepare.then_some(st.generation)
            };
            if let Some(generation) = prepare {
                let path = self
                    .dir
                    .join(format!("{PREPARED_PREFIX}{generation:06}.seg.tmp"));
                match self.prepare(&path) {
                    Ok(true) => {
                        self.bg.lock().prepared = Some(path);
                        self.bg.cv.notify_all();
                    }
                    Ok(false) => return,
                    Err(e) => {
                        // Not fatal: the next segment is created without preallocation.
                        tracing::debug!(error = %e, "could not prepare the next segment file");
                        let _ = self.io.remove(&path);
                    }
                }
            }
            if persist_watermark(&self.superblock, &self.gc, false, self.interval).is_err() {
                return;
            }
        }
    }

    fn remove_leftovers(&self) {
        remove_leftovers(&self.io, &self.dir);
    }

    /// Writes the zero-filled file; `Ok(false)` if interrupted by shutdown.
    fn prepare(&self, path: &Path) -> std::io::Result<bool> {
        let file = self.io.open(path, true)?;
        file.set_len(0)?;
        let zeros = vec![0u8; PREPARE_STEP_BYTES];
        let mut pos = 0u64;
        while pos < self.segment_size_bytes {
            if self.bg.is_shutdown() {
                return Ok(false);
            }
            let n = (self.segment_size_bytes - pos).min(zeros.len() as u64) as usize;
            file.write_at(&zeros[..n], pos)?;
            pos += n as u64;
        }
        file.sync_data()?;
        Ok(true)
    }
}
