//! The machine's own limit, measured in the same run: plain `pwrite` + `fdatasync` loops on one
//! thread, plain buffered writes, plain sequential reads. No sitelog code is involved.

use super::stats::{nanos, Latency};
use super::{CliResult, Context};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes per write when pre-writing a file with zeros.
const PREWRITE_STEP_BYTES: usize = 1 << 20;
/// Read buffer of the raw sequential read.
const READ_BUF_BYTES: usize = 1 << 20;

/// Which file a durable raw loop writes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFile {
    /// A new, empty file: every write extends it, so every fdatasync also commits metadata.
    Fresh,
    /// A file already filled with written zeros: every write overwrites allocated blocks.
    Prewritten,
}

impl RawFile {
    pub fn name(self) -> &'static str {
        match self {
            RawFile::Fresh => "fresh",
            RawFile::Prewritten => "pre-written",
        }
    }
}

/// One durable raw loop: `pwrite(group_bytes)` then `fdatasync`, sequentially, until a deadline.
#[derive(Debug, Clone)]
pub struct RawLoop {
    pub file: RawFile,
    pub group_bytes: u64,
    pub fsyncs: u64,
    pub secs: f64,
    /// Latency of one pwrite + fdatasync.
    pub lat: Latency,
    /// How far into the file the loop got (before any wrap-around).
    pub reached_bytes: u64,
}

impl RawLoop {
    pub fn fsyncs_per_s(&self) -> f64 {
        self.fsyncs as f64 / self.secs
    }

    pub fn mb_per_s(&self) -> f64 {
        (self.fsyncs * self.group_bytes) as f64 / 1e6 / self.secs
    }
}

/// A buffer of `len` bytes of a non-zero pattern.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ 0x5a).collect()
}

/// Fills `path` (created or truncated) with `len` bytes of written zeros and fdatasyncs it.
pub fn prewrite(path: &Path, len: u64) -> CliResult<()> {
    let file = File::create(path).context(|| format!("cannot create {}", path.display()))?;
    let zeros = vec![0u8; PREWRITE_STEP_BYTES];
    let mut pos = 0u64;
    while pos < len {
        let n = (len - pos).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], pos)
            .context(|| format!("cannot write {}", path.display()))?;
        pos += n as u64;
    }
    file.sync_data()
        .context(|| format!("fdatasync of {} failed", path.display()))
}

/// Runs the durable loop for `duration`. `Fresh` creates (truncates) `path` and stops early
/// when the next write would take the file past `max_file_bytes` (the disk budget);
/// `Prewritten` overwrites the existing file at `path`, wrapping to its start when the next
/// write would pass its end.
pub fn durable_loop(
    path: &Path,
    file: RawFile,
    group_bytes: usize,
    duration: Duration,
    max_file_bytes: u64,
) -> CliResult<RawLoop> {
    let f = match file {
        RawFile::Fresh => File::create(path),
        RawFile::Prewritten => OpenOptions::new().write(true).open(path),
    }
    .context(|| format!("cannot open {}", path.display()))?;
    let limit = match file {
        RawFile::Fresh => max_file_bytes,
        RawFile::Prewritten => f
            .metadata()
            .context(|| format!("cannot stat {}", path.display()))?
            .len(),
    };
    if (group_bytes as u64) > limit {
        return Err(super::CliError(format!(
            "{} may hold only {limit} bytes, less than one {group_bytes}-byte write",
            path.display()
        )));
    }
    let buf = pattern(group_bytes);
    let mut lat = Vec::new();
    let (mut pos, mut reached, mut fsyncs) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let deadline = started + duration;
    loop {
        let t0 = Instant::now();
        if t0 >= deadline {
            break;
        }
        if pos + group_bytes as u64 > limit {
            if file == RawFile::Fresh {
                break;
            }
            pos = 0;
        }
        f.write_all_at(&buf, pos)
            .context(|| format!("pwrite to {} failed", path.display()))?;
        f.sync_data()
            .context(|| format!("fdatasync of {} failed", path.display()))?;
        lat.push(nanos(t0.elapsed()));
        pos += group_bytes as u64;
        reached = reached.max(pos);
        fsyncs += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(RawLoop {
        file,
        group_bytes: group_bytes as u64,
        fsyncs,
        secs,
        lat: Latency::from_nanos(lat),
        reached_bytes: reached,
    })
}

/// Timings of a buffered write: chunks written into the page cache, then one fdatasync.
#[derive(Debug, Clone, Copy)]
pub struct BufferedTimes {
    pub bytes: u64,
    /// Until the last write returned.
    pub write_secs: f64,
    /// Including the final fdatasync.
    pub total_secs: f64,
}

/// Writes `total` bytes into a fresh file at `path` in `chunk`-byte pwrites, then fdatasyncs.
pub fn buffered(path: &Path, total: u64, chunk: usize) -> CliResult<BufferedTimes> {
    let f = File::create(path).context(|| format!("cannot create {}", path.display()))?;
    let buf = pattern(chunk);
    let started = Instant::now();
    let mut pos = 0u64;
    while pos < total {
        f.write_all_at(&buf, pos)
            .context(|| format!("pwrite to {} failed", path.display()))?;
        pos += chunk as u64;
    }
    let write_secs = started.elapsed().as_secs_f64();
    f.sync_data()
        .context(|| format!("fdatasync of {} failed", path.display()))?;
    Ok(BufferedTimes {
        bytes: pos,
        write_secs,
        total_secs: started.elapsed().as_secs_f64(),
    })
}

/// Reads `files` sequentially, whole, in 1 MiB reads; returns (bytes, seconds).
pub fn read_files(files: &[std::path::PathBuf]) -> CliResult<(u64, f64)> {
    let mut buf = vec![0u8; READ_BUF_BYTES];
    let started = Instant::now();
    let mut bytes = 0u64;
    for path in files {
        let mut f = File::open(path).context(|| format!("cannot open {}", path.display()))?;
        loop {
            let n = f
                .read(&mut buf)
                .context(|| format!("read of {} failed", path.display()))?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
    }
    Ok((bytes, started.elapsed().as_secs_f64()))
}
