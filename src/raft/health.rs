//! Storage health of a replica: which kind of fault stopped it ([`Fault`], recorded by the
//! log store the moment it hands openraft a storage error) and whether its storage works again
//! ([`probe`], run before a healing node reopens its log and rejoins).
//!
//! Why a probe and not just a retry: a node that reopened onto a disk that is still full would
//! win an election, fail its first append and stop again, costing the cluster one election per
//! attempt. The probe checks what the log needs to run, before openraft is started at all.

use crate::{Error, Result};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Descriptors that must be free (below the soft `RLIMIT_NOFILE`) before a node rejoins: the
/// log's segments, its superblock, the Raft metadata, a snapshot being written and a few
/// peer connections.
pub const MIN_FREE_DESCRIPTORS: u64 = 64;
/// Size of the file the probe writes, fsyncs and removes.
pub const PROBE_FILE_BYTES: usize = 4096;
/// Name of that file in the data directory.
pub const PROBE_FILE_NAME: &str = ".probe";

/// What kind of fault stopped a replica's storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The file system is full (ENOSPC).
    NoSpace,
    /// The process ran out of file descriptors (EMFILE, ENFILE).
    Descriptors,
    /// A write, fsync or read failed on the device (EIO and every other OS error), or an
    /// earlier failure poisoned the log.
    Device,
    /// Durable data failed its checksum.
    Corruption,
    /// Anything else (consensus stopped for a reason that is not storage).
    Other,
}

impl Fault {
    /// Classifies a storage error.
    pub fn of(e: &Error) -> Fault {
        match e {
            Error::NoSpace { .. } => Fault::NoSpace,
            Error::Io { source, .. } => match source.raw_os_error() {
                Some(libc::EMFILE | libc::ENFILE) => Fault::Descriptors,
                Some(libc::ENOSPC) => Fault::NoSpace,
                _ => Fault::Device,
            },
            Error::Poisoned { .. } => Fault::Device,
            Error::Corruption { .. } => Fault::Corruption,
            _ => Fault::Other,
        }
    }

    /// The short name used in log lines and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Fault::NoSpace => "no_space",
            Fault::Descriptors => "descriptors",
            Fault::Device => "device",
            Fault::Corruption => "corruption",
            Fault::Other => "other",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The first storage fault a log store saw, with its message. Shared by the store's clones
/// and its flush-completion task; the first fault wins (later ones are its consequences).
#[derive(Debug, Clone, Default)]
pub struct FaultSlot(Arc<Mutex<Option<(Fault, String)>>>);

impl FaultSlot {
    /// Records `e` unless a fault was recorded already.
    pub fn record(&self, e: &Error) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some((Fault::of(e), e.to_string()));
        }
    }

    /// The first fault recorded, if any.
    pub fn get(&self) -> Option<(Fault, String)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Checks that the storage under `dir` can run a log again: at least `min_free_bytes` free
/// on its file system, [`MIN_FREE_DESCRIPTORS`] descriptors free, and a small file can be
/// written, fsynced and removed. On failure: the fault that still stands and why.
pub fn probe(dir: &Path, min_free_bytes: u64) -> std::result::Result<(), (Fault, String)> {
    let free = free_bytes(dir).map_err(|e| (Fault::of(&e), e.to_string()))?;
    if free < min_free_bytes {
        return Err((
            Fault::NoSpace,
            format!(
                "{free} bytes free in {}, need {min_free_bytes}",
                dir.display()
            ),
        ));
    }
    if let Some((open, limit)) = descriptors() {
        if limit.saturating_sub(open) < MIN_FREE_DESCRIPTORS {
            return Err((
                Fault::Descriptors,
                format!("{open} of {limit} descriptors open, need {MIN_FREE_DESCRIPTORS} free"),
            ));
        }
    }
    write_probe_file(dir).map_err(|e| (Fault::of(&e), e.to_string()))
}

fn write_probe_file(dir: &Path) -> Result<()> {
    use std::io::Write;
    let path = dir.join(PROBE_FILE_NAME);
    let io = |e| Error::io(&path, e);
    let mut f = std::fs::File::create(&path).map_err(io)?;
    let written = f
        .write_all(&[0u8; PROBE_FILE_BYTES])
        .and_then(|()| f.sync_data());
    drop(f);
    // Removed whether or not the write worked: a probe never leaves a file behind.
    let removed = std::fs::remove_file(&path);
    written.map_err(io)?;
    removed.map_err(io)
}

/// Bytes an unprivileged writer may still use on the file system of `path`.
pub fn free_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("{} has a NUL byte", path.display())))?;
    // SAFETY: `statvfs` is plain old data, so all-zero is a valid value; the call only writes
    // into it, and `c_path` is a valid NUL-terminated string that outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    // The field types differ between libc targets; both fit in u64.
    #[allow(clippy::unnecessary_cast)]
    let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    Ok(free)
}

/// (descriptors open, soft limit) of this process, when both can be read.
pub fn descriptors() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into `lim`, a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    // Counting /proc/self/fd costs one directory read; the probe runs only while healing.
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    #[allow(clippy::unnecessary_cast)]
    Some((open, lim.rlim_cur as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_classified_by_type_not_text() {
        let io = |errno| Error::io("/x", std::io::Error::from_raw_os_error(errno));
        assert_eq!(Fault::of(&io(libc::ENOSPC)), Fault::NoSpace);
        assert_eq!(Fault::of(&io(libc::EMFILE)), Fault::Descriptors);
        assert_eq!(Fault::of(&io(libc::ENFILE)), Fault::Descriptors);
        assert_eq!(Fault::of(&io(libc::EIO)), Fault::Device);
        let poisoned = Error::Poisoned {
            reason: "no space left".into(),
        };
        assert_eq!(Fault::of(&poisoned), Fault::Device);
        assert_eq!(Fault::of(&Error::Internal("x")), Fault::Other);
    }

    #[test]
    fn the_first_fault_wins() {
        let slot = FaultSlot::default();
        assert_eq!(slot.get(), None);
        slot.record(&Error::NoSpace { path: "/a".into() });
        slot.record(&Error::Shutdown);
        assert_eq!(slot.get().map(|f| f.0), Some(Fault::NoSpace));
    }

    #[test]
    fn probe_passes_on_a_working_directory_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        probe(dir.path(), 4096).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn probe_reports_too_little_space() {
        let dir = tempfile::tempdir().unwrap();
        let (fault, why) = probe(dir.path(), u64::MAX).unwrap_err();
        assert_eq!(fault, Fault::NoSpace, "{why}");
    }

    #[test]
    fn probe_reports_a_missing_directory_as_a_device_fault() {
        let (fault, _) = probe(Path::new("/nonexistent/sitelog-probe"), 0).unwrap_err();
        assert_eq!(fault, Fault::Device);
    }
}
