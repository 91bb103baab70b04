//! The seal of a segment the log rolled past, off the acknowledgement path.
//!
//! A roll's barrier in group commit runs before the next segment's first group (in manual
//! mode it makes the old segment's frames durable; into a file not prepared ahead it writes
//! the new header, the name and the directory entry; a prepared file's first group writes its
//! header and the namer names it later, `namer.rs`), and the records of the new segment are
//! acknowledged as soon as their group is durable. The segment it left is sealed afterwards (index,
//! footer, fsync: `Segment::seal`), by the background thread, or by `Log::pump` on a driven
//! log. Before this, a roll's first appends waited for the seal's fsync, which commits the
//! file system's journal (the file's size changes): the slowest appends across rolls
//! (issue 16).
//!
//! On disk this allows one more unsealed segment: the one before the last. Its frames were
//! all durable before the next segment was named, so recovery finds them all, up to the next
//! segment's base, followed at most by an interrupted seal, which it completes
//! (`recovery::recover_in`). At most one seal is pending: the next roll's barrier finishes it
//! (waits for it, or runs it on its own thread) before another segment can be headed or
//! named.

use super::group_commit::GroupCommit;
use super::segment::Segment;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// What the outcome of owed housekeeping (`what`: a segment's seal here, its name in
/// `namer.rs`) means for the log, the one policy for every caller: done; a full disk (it
/// stays owed, nothing acknowledged depends on it: `Ok(false)`); anything else poisons the
/// log (a failed fsync).
pub(crate) fn judge(
    outcome: std::io::Result<bool>,
    gc: &GroupCommit,
    what: &str,
) -> crate::Result<bool> {
    match outcome {
        Ok(done) => Ok(done),
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
            // Not a warning: `flush` may ask again and again while the disk stays full, and
            // the appends that need the space say so themselves.
            tracing::debug!("no space for a {what}; done later");
            Ok(false)
        }
        Err(e) => Err(gc.poison(format!("{what} failed: {e}"))),
    }
}

/// The seal owed for the segment before the active one, if any.
#[derive(Default)]
pub(crate) struct Sealer {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Default)]
struct State {
    /// The segment to seal and the running CRC-32 of its bytes.
    pending: Option<(Arc<Segment>, u32)>,
    /// A thread is sealing the segment taken from `pending` now.
    running: bool,
    /// A seal failed other than for lack of space: no segment may be named after it (there
    /// would be three unsealed segments on disk), so every later `finish` fails too.
    failed: bool,
}

impl Sealer {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Owes the seal of `seg` (a roll made the segment after it). The roll's barrier has
    /// finished the previous seal first, so none is pending.
    pub fn submit(&self, seg: Arc<Segment>, file_crc: u32) {
        let mut st = self.lock();
        debug_assert!(st.pending.is_none() && !st.running, "one seal at a time");
        debug_assert!(!seg.is_sealed());
        st.pending = Some((seg, file_crc));
    }

    /// Seals the pending segment on this thread, unless there is none or another thread runs
    /// it; `Ok(true)` if this call sealed one. After a failure for lack of space the seal
    /// stays owed (the disk may have room later). Any other failure is final: the caller
    /// poisons the log, and the seal is never tried again (an fsync retried after a failure
    /// can report success for data the kernel already dropped).
    pub fn run_pending(&self) -> std::io::Result<bool> {
        let mut st = self.lock();
        if st.running {
            return Ok(false);
        }
        let Some((seg, file_crc)) = st.pending.take() else {
            return Ok(false);
        };
        st.running = true;
        drop(st);
        let sealed = seg.seal(file_crc);
        let mut st = self.lock();
        st.running = false;
        match &sealed {
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => st.pending = Some((seg, file_crc)),
            Err(_) => st.failed = true,
            Ok(()) => {}
        }
        drop(st);
        self.done.notify_all();
        sealed.map(|()| true)
    }

    /// Returns once no seal is owed: waits for one another thread runs, runs a pending one
    /// here. Its error, if it fails here; an error too once any seal failed (other than for
    /// lack of space).
    pub fn finish(&self) -> std::io::Result<()> {
        loop {
            let mut st = self.lock();
            while st.running {
                st = self.done.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.failed {
                return Err(std::io::Error::other("the seal of an earlier segment failed"));
            }
            if st.pending.is_none() {
                return Ok(());
            }
            drop(st);
            self.run_pending()?;
        }
    }

    /// Whether a seal is owed, running, or failed.
    pub fn owed(&self) -> bool {
        let st = self.lock();
        st.pending.is_some() || st.running || st.failed
    }

    /// Forgets an owed seal of a segment that ends above `cut` (a truncation cuts into it or
    /// deletes it: it becomes the active segment again, or goes). Waits for a seal another
    /// thread runs first.
    pub fn forget_above(&self, cut: u64) {
        let mut st = self.lock();
        while st.running {
            st = self.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.pending.as_ref().is_some_and(|(s, _)| s.end_offset() > cut) {
            st.pending = None;
        }
    }
}
