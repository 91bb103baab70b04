//! Machine facts and system operations the bench needs: the working directory, dropping the
//! page cache, the file-system type, the kernel release.

use super::{CliResult, Context};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The bench's working directory: a fresh, uniquely named directory, removed on drop unless
/// kept.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    /// Creates `<base>/sitelog-bench-<pid>-<nanos>`; `base` defaults to the system temp dir.
    pub fn create(base: Option<&Path>, keep: bool) -> CliResult<WorkDir> {
        let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = base.join(format!("sitelog-bench-{}-{nanos:09}", std::process::id()));
        std::fs::create_dir_all(&path)
            .context(|| format!("cannot create the bench directory {}", path.display()))?;
        Ok(WorkDir { path, keep })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A fresh path inside the working directory (not created).
    pub fn sub(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            // Best effort: a failure leaves files in the temp dir, which is not worth a panic.
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                eprintln!(
                    "sitelog bench: could not remove {}: {e}",
                    self.path.display()
                );
            }
        }
    }
}

/// Removes a file or directory tree if it exists.
pub fn remove_path(path: &Path) -> CliResult<()> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Writes back all dirty data and drops the page cache (`echo 3 > /proc/sys/vm/drop_caches`).
/// `Err` holds the reason it is not permitted here.
pub fn drop_page_cache() -> Result<(), String> {
    // SAFETY: sync(2) takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", b"3\n")
        .map_err(|e| format!("cannot write /proc/sys/vm/drop_caches: {e}"))
}

/// Writes back every dirty page and journal transaction of the machine (`sync(2)`), so that a
/// measurement does not pay for the previous one's writeback or file deletions (an fdatasync
/// waits for the file system's running journal commit, whoever filled it).
pub fn settle_disk() {
    // SAFETY: sync(2) takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::sync() };
}

/// The kernel release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The 1-minute load average (other work on the machine skews every figure).
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Number of CPUs available to this process.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The file-system type of `path` (from statfs), e.g. `ext4`, `tmpfs`.
pub fn fs_type(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return "unknown".into();
    };
    // SAFETY: `statfs` is plain old data, so all-zero is a valid value; the call only writes
    // into it, and `c_path` is a valid NUL-terminated string that outlives the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        return "unknown".into();
    }
    // `f_type`'s integer type differs between libc targets; the magic numbers fit in 32 bits.
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as u64 as u32;
    match magic {
        0xEF53 => "ext4",
        0x0102_1994 => "tmpfs",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x2FC1_2FC1 => "zfs",
        0x6969 => "nfs",
        0x794C_7630 => "overlayfs",
        0xF2F5_2010 => "f2fs",
        _ => return format!("fs magic {magic:#x}"),
    }
    .to_string()
}

/// Bytes an unprivileged user may still write on the file system of `path` (statvfs
/// `f_bavail × f_frsize`).
pub fn free_bytes(path: &Path) -> CliResult<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| super::CliError(format!("{} contains a NUL byte", path.display())))?;
    // SAFETY: `statvfs` is plain old data, so all-zero is a valid value; the call only writes
    // into it, and `c_path` is a valid NUL-terminated string that outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .context(|| format!("cannot statvfs {}", path.display()));
    }
    // The field types differ between libc targets; both fit in u64.
    #[allow(clippy::unnecessary_cast)]
    let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    Ok(free)
}

/// What a bench may keep on disk at once: `max_bytes` (`--max-disk-mib`) if given, else half
/// the free space; never more than is free.
pub fn allowed_bytes(free_bytes: u64, max_bytes: Option<u64>) -> u64 {
    max_bytes.map_or(free_bytes / 2, |m| m.min(free_bytes))
}

/// How much a bench may hold on disk at once in its working directory, and the segment size
/// that lets its logs fit in that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskBudget {
    /// Free bytes when the bench started.
    pub free_bytes: u64,
    /// Bytes the bench may hold at once: `--max-disk-mib`, else half the free space.
    pub bytes: u64,
    /// Segment size of the logs the bench writes: the default (64 MiB) unless the budget is
    /// smaller than `SEGMENTS_PER_BUDGET` of those.
    pub segment_bytes: u64,
}

impl DiskBudget {
    /// A log holds at most this many segments' worth of the budget: the active one, the one
    /// preallocated ahead of it, and sealed ones.
    pub const SEGMENTS_PER_BUDGET: u64 = 8;
    /// Smallest segment the bench uses: it must hold a 1 MiB record with room to spare.
    pub const MIN_SEGMENT_BYTES: u64 = 4 << 20;
    /// Smallest budget the bench runs with.
    pub const MIN_BYTES: u64 = Self::SEGMENTS_PER_BUDGET * Self::MIN_SEGMENT_BYTES;

    /// The budget for a bench in `dir` that keeps `logs` logs at once.
    pub fn for_dir(dir: &Path, max_disk_mib: Option<u64>, logs: u64) -> CliResult<DiskBudget> {
        Self::new(free_bytes(dir)?, max_disk_mib.map(|m| m << 20), logs).map_err(|e| {
            super::CliError(format!("{e} in {} (choose another --dir)", dir.display()))
        })
    }

    /// The budget from the free space, an optional cap and the number of logs kept at once;
    /// an error if even the smallest segments would not fit.
    pub fn new(free_bytes: u64, max_bytes: Option<u64>, logs: u64) -> Result<DiskBudget, String> {
        debug_assert!(logs >= 1);
        let bytes = allowed_bytes(free_bytes, max_bytes);
        let per_log = bytes / logs.max(1);
        let need = Self::MIN_BYTES * logs.max(1);
        if per_log < Self::MIN_BYTES {
            return Err(format!(
                "the bench needs at least {} of disk, it may use {} ({} free)",
                super::stats::fmt_bytes(need),
                super::stats::fmt_bytes(bytes),
                super::stats::fmt_bytes(free_bytes)
            ));
        }
        let default = crate::LogOptions::default().segment_size_bytes;
        let fit = per_log / Self::SEGMENTS_PER_BUDGET;
        // A power of two keeps the figures comparable between runs on similar machines.
        let segment_bytes = default.min(1 << fit.ilog2()).max(Self::MIN_SEGMENT_BYTES);
        debug_assert!(segment_bytes * Self::SEGMENTS_PER_BUDGET <= per_log);
        Ok(DiskBudget {
            free_bytes,
            bytes,
            segment_bytes,
        })
    }

    /// Whether the segments are smaller than the default.
    pub fn shrunk(&self) -> bool {
        self.segment_bytes < crate::LogOptions::default().segment_size_bytes
    }

    /// Payload bytes one of the `logs` logs may take: its share, less the active segment, the
    /// preallocated one and room for the segments' headers and indexes.
    pub fn log_payload_bytes(&self, logs: u64) -> u64 {
        (self.bytes / logs.max(1)).saturating_sub(3 * self.segment_bytes)
    }

    /// One line for the report's notes when the budget changed what the bench does.
    pub fn note(&self) -> Option<String> {
        self.shrunk().then(|| {
            format!(
                "only {} free: the bench keeps at most {} on disk, with {} segments \
                 instead of {}",
                super::stats::fmt_bytes(self.free_bytes),
                super::stats::fmt_bytes(self.bytes),
                super::stats::fmt_bytes(self.segment_bytes),
                super::stats::fmt_bytes(crate::LogOptions::default().segment_size_bytes)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::DiskBudget;

    #[test]
    fn budget_keeps_default_segments_when_disk_is_plentiful() {
        let b = DiskBudget::new(100 << 30, None, 1).unwrap();
        assert_eq!(b.bytes, 50 << 30);
        assert_eq!(b.segment_bytes, 64 << 20);
        assert!(!b.shrunk() && b.note().is_none());
    }

    #[test]
    fn budget_shrinks_segments_to_fit_and_refuses_too_little() {
        // 256 MiB free → 128 MiB budget → 16 MiB segments for one log.
        let b = DiskBudget::new(256 << 20, None, 1).unwrap();
        assert_eq!((b.bytes, b.segment_bytes), (128 << 20, 16 << 20));
        assert_eq!(b.log_payload_bytes(1), 80 << 20);
        assert!(b.note().unwrap().contains("16 MiB segments"));
        // Three logs share it: 4 MiB segments.
        let b3 = DiskBudget::new(256 << 20, None, 3).unwrap();
        assert_eq!(b3.segment_bytes, 4 << 20);
        // An explicit cap wins over half the free space, but not over the free space.
        let capped = DiskBudget::new(10 << 30, Some(64 << 20), 1).unwrap();
        assert_eq!((capped.bytes, capped.segment_bytes), (64 << 20, 8 << 20));
        assert_eq!(
            DiskBudget::new(1 << 30, Some(4 << 30), 1).unwrap().bytes,
            1 << 30
        );
        let err = DiskBudget::new(40 << 20, None, 1).unwrap_err();
        assert!(err.contains("at least 32 MiB"), "{err}");
        assert!(DiskBudget::new(128 << 20, None, 3).is_err());
    }
}
