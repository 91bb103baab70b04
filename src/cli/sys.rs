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
