//! The name of a segment that a pointer-swap roll made (issue 16: no append waits on
//! housekeeping).
//!
//! A roll that finds a prepared file ready (zeros written and fsynced, its `prepared-N` name
//! durable in the directory: `background.rs`) makes it the active segment at once. Its
//! barrier in group commit renames nothing and fsyncs nothing of the new segment: the
//! segment's first group writes the header region together with its frames, one write and
//! one fdatasync (`group_commit.rs`), so the first records of a segment cost what any other
//! records cost. Once that group has completed, the namer, on the background thread, renames
//! the file to the segment's name and fsyncs the directory, off the acknowledgement path.
//!
//! Until then a crash leaves acknowledged records in a file under a prepared name. Recovery
//! finds them by the header: a prepared file whose header region is a valid header of the
//! log, at a base above every named segment, is the last segment, and is renamed before the
//! scan (`recovery::find_unnamed`). A prepared file never holds such a header otherwise: a
//! zero-filled one holds zeros, and a recycled one keeps the header of a retired segment,
//! whose base lies below the log's start.
//!
//! At most one segment is unnamed: every roll's barrier names the one before first (waits
//! for the namer, or names it on its own thread), just as it finishes the seal owed before
//! it, and the segment's own seal is queued after that. So recovery adopts at most one
//! prepared file, and sealed segments always have their names (catch-up, repair and
//! verification open them by name). `Log::flush` (and so `close`) and a truncation that
//! keeps it name it first too, and `purge_before` names it before moving the log's start past
//! its base (recovery adopts it only at or above the start): while a full disk keeps it
//! unnamed, the start stops at its base.

use super::segment::{HeaderState, Segment};
use crate::io::IoRef;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// The unnamed segment of a log, if any.
pub(crate) struct Namer {
    io: IoRef,
    dir: PathBuf,
    /// Held while a segment is named (a rename and a directory fsync, about a millisecond),
    /// so that a second caller waits for the first instead of naming it twice.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    pending: Option<Arc<Segment>>,
    /// A naming failed other than for lack of space: no later segment may be headed (two
    /// unnamed segments), so every later `finish` fails too.
    failed: bool,
    /// `name_ready` does nothing (a test hook, see `pause`).
    #[cfg(any(test, feature = "testing"))]
    paused: bool,
}

/// Ends a pause when dropped.
#[cfg(any(test, feature = "testing"))]
struct Pause(Arc<Namer>);

#[cfg(any(test, feature = "testing"))]
impl Drop for Pause {
    fn drop(&mut self) {
        self.0.lock().paused = false;
    }
}

impl Namer {
    pub fn new(io: IoRef, dir: PathBuf) -> Self {
        Namer {
            io,
            dir,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Single assignments after each step: consistent after a panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Owes the name of `seg`, made by a pointer-swap roll whose barrier ran `finish` first.
    pub fn submit(&self, seg: Arc<Segment>) {
        let mut st = self.lock();
        debug_assert!(st.pending.is_none(), "one unnamed segment at a time");
        debug_assert!(seg.unnamed().is_some());
        st.pending = Some(seg);
    }

    /// Names the unnamed segment if a group has written its header region (the background
    /// thread, when group commit says so); `Ok(true)` if this call named it.
    pub fn name_ready(&self) -> std::io::Result<bool> {
        let mut st = self.lock();
        #[cfg(any(test, feature = "testing"))]
        if st.paused {
            return Ok(false);
        }
        let headed = st.pending.as_ref().is_some_and(|s| s.pending_header().is_none());
        if !headed || st.failed {
            return Ok(false);
        }
        self.name_pending(&mut st).map(|()| true)
    }

    /// Names the unnamed segment now, writing its header region first if no group has. Only
    /// where no group of that segment is in flight or can still be formed with its header: a
    /// roll's barrier (it runs after every older group, and the roll moved on from the
    /// segment), or under the writer lock once group commit is idle.
    pub fn finish(&self) -> std::io::Result<()> {
        let mut st = self.lock();
        if st.failed {
            return Err(std::io::Error::other("the rename of an earlier segment failed"));
        }
        if st.pending.is_none() {
            return Ok(());
        }
        self.name_pending(&mut st)
    }

    /// Keeps the background thread from naming until the guard drops (`Log::pause_naming`, a
    /// test hook); `finish` still names.
    #[cfg(any(test, feature = "testing"))]
    pub fn pause(self: &Arc<Self>) -> impl Drop {
        self.lock().paused = true;
        Pause(self.clone())
    }

    /// The base of the unnamed segment, if any.
    pub fn pending_base(&self) -> Option<u64> {
        self.lock().pending.as_ref().map(|s| s.base_offset)
    }

    /// Forgets the unnamed segment if it starts at or after `cut` (a truncation deletes it,
    /// by the name its file has: `Segment::disk_path`).
    pub fn forget_from(&self, cut: u64) {
        let mut st = self.lock();
        if st.pending.as_ref().is_some_and(|s| s.base_offset >= cut) {
            st.pending = None;
        }
    }

    fn name_pending(&self, st: &mut State) -> std::io::Result<()> {
        let Some(seg) = st.pending.clone() else {
            return Ok(());
        };
        match self.name(&seg) {
            Ok(()) => {
                st.pending = None;
                Ok(())
            }
            Err(e) => {
                // Lack of space leaves it owed (a rename may need a directory block); any
                // other failure is final (the caller poisons the log; an fsync is not retried).
                st.failed = e.raw_os_error() != Some(libc::ENOSPC);
                Err(e)
            }
        }
    }

    /// The header region durable (written here if no group did), then the rename and the
    /// directory fsync: a file under a segment name always has a valid header.
    fn name(&self, seg: &Segment) -> std::io::Result<()> {
        let Some((at, header)) = seg.unnamed() else {
            return Ok(());
        };
        if let HeaderState::Pending(h) = &header {
            seg.file.write_at(h, 0)?;
        }
        // A failed fsync is final whatever it reports (never retried: the kernel may have
        // dropped the data), and so is anything after the rename (it cannot be run again).
        let fatal =
            |what: &'static str| move |e| std::io::Error::other(format!("{what}: {e}"));
        if !matches!(header, HeaderState::Durable) {
            seg.file.sync_data().map_err(fatal("segment header fsync"))?;
            seg.header_written(true);
        }
        self.io.rename(&at, &seg.path)?;
        self.io.sync_dir(&self.dir).map_err(fatal("directory fsync after a segment rename"))?;
        seg.set_named();
        Ok(())
    }
}
