//! `sitelog bench`: measures the machine's own limit (plain pwrite + fdatasync loops) and then
//! sitelog with each I/O backend, in the same run, on the same disk.
//!
//! Workloads (select with `--only`):
//! - `durable`: `SyncMode::Always` appends of single records from W OS threads (record sizes
//!   100 B, 1 KiB, 16 KiB; W = 1, 8, 64, 256; plus 1 MiB records with 256 writers). Compared
//!   with the raw loop at the group size one group commit would write if every writer's record
//!   were grouped (record size × W), into a fresh file and into a pre-written one. Every cell
//!   also runs the naive group commit of issue 16 (`naive.rs`) back to back with sitelog's
//!   backends (naive first in every other cell), and counts records per fsynced group. Then
//!   the stall runs: the first 200 appends of one writer after open, and 8 writers across
//!   rolls of 1 MiB segments, of every backend and the naive log.
//! - `buffered`: `SyncMode::Manual` batches of 64 × 1 KiB, then one `sync()`, against plain
//!   pwrites of the same chunk size and one fdatasync.
//! - `read`: the buffered log read back with `Log::iter` after a reopen, with the page cache
//!   dropped (when permitted) and again warm; every record's payload is checked (the iterator
//!   verifies every checksum). Compared with a plain sequential read of the segment files.
//! - `reopen`: `Log::open` of a 1 GiB log after a clean close, and after a child process that
//!   was appending durably is killed with SIGKILL.

use super::naive::NaiveLog;
use super::raw::{self, RawFile, RawLoop};
use super::report::{
    writer_kind, BaselineCell, BufferedRun, DurableCell, Meta, ReadRun, ReopenKind, ReopenRun,
    Results, StallKind, StallRun,
};
use super::stats::{nanos, Latency};
use super::sys::{self, DiskBudget, WorkDir};
use super::{CliError, CliResult, Context};
use crate::{IoBackend, Log, LogOptions, SyncMode};
use clap::{Args, ValueEnum};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Record sizes of the durable workload.
const RECORD_SIZES: [usize; 3] = [100, 1 << 10, 16 << 10];
/// Writer counts of the durable workload.
const WRITER_COUNTS: [usize; 4] = [1, 8, 64, 256];
/// Fewer cells with `--quick`.
const QUICK_RECORD_SIZES: [usize; 1] = [1 << 10];
const QUICK_WRITER_COUNTS: [usize; 3] = [1, 64, 256];
/// Async-task writer counts of the durable workload (every record size).
const TASK_WRITER_COUNTS: [usize; 2] = [64, 256];
/// The large-record durable cell: 1 MiB records with this many writers.
const BIG_RECORD_BYTES: usize = 1 << 20;
const BIG_RECORD_WRITERS: usize = 256;
/// Payload bytes appended (single-threaded) before a durable cell is timed: at most 100
/// appends.
const WARMUP_BYTES: usize = 16 << 20;
const WARMUP_APPENDS: usize = 100;
/// How long a durable cell waits for its log's next segment to be prepared before timing.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(60);
/// Stack of a writer thread (the append path keeps its buffers on the heap).
const WRITER_STACK_BYTES: usize = 512 << 10;
/// The pre-written file of the raw loop is at most this large (the loop wraps around in it).
const PREWRITTEN_MAX_BYTES: u64 = 1 << 30;
const QUICK_PREWRITTEN_MAX_BYTES: u64 = 256 << 20;
/// Buffered workload: record size, batch size, total payload.
const BUFFERED_RECORD_BYTES: usize = 1 << 10;
const BUFFERED_BATCH: usize = 64;
const BUFFERED_BYTES: u64 = 256 << 20;
const QUICK_BUFFERED_BYTES: u64 = 64 << 20;
/// Reopen workload: records per batch while building the log.
const REOPEN_BATCH: usize = 1024;
/// Clean reopens timed per backend.
const CLEAN_REOPENS: usize = 3;
/// Acknowledgements the killed child must have printed before it is killed.
const KILL_AFTER_ACKS: u64 = 2000;
/// Writer threads and record size of the killed child.
const CHILD_WRITERS: usize = 4;
const CHILD_RECORD_BYTES: usize = 1 << 10;
/// The parent gives up on a child that acknowledges too little in this time.
const CHILD_ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// A child that is somehow never killed stops on its own.
const CHILD_MAX_RUNTIME: Duration = Duration::from_secs(120);
/// The stall runs: appends timed after open, record size, and the roll run's writers and
/// segment size (small, so that segments roll several times a second).
const STALL_OPEN_APPENDS: usize = 200;
const STALL_RECORD_BYTES: usize = 1 << 10;
const STALL_ROLL_WRITERS: usize = 8;
const STALL_ROLL_SEGMENT_BYTES: u64 = 1 << 20;
/// How the report names the naive group commit (src/cli/naive.rs).
pub const NAIVE_NAME: &str = "naive";
/// Offset bytes at the start of every payload the bench writes for reading back.
const OFFSET_PREFIX_BYTES: usize = 8;

/// A concrete I/O backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    #[value(name = "io_uring", alias = "io-uring")]
    IoUring,
    Posix,
    /// io_uring with `LogOptions::direct_io` (O_DIRECT group writes).
    #[value(name = "io_uring-direct")]
    IoUringDirect,
    /// POSIX with `LogOptions::direct_io`.
    #[value(name = "posix-direct")]
    PosixDirect,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::IoUring => "io_uring",
            Backend::Posix => "posix",
            Backend::IoUringDirect => "io_uring-direct",
            Backend::PosixDirect => "posix-direct",
        }
    }

    fn io(self) -> IoBackend {
        match self {
            Backend::IoUring | Backend::IoUringDirect => IoBackend::IoUring,
            Backend::Posix | Backend::PosixDirect => IoBackend::Posix,
        }
    }

    fn direct(self) -> bool {
        matches!(self, Backend::IoUringDirect | Backend::PosixDirect)
    }

    /// Default options with this backend and `segment_bytes` segments (the disk budget's).
    fn options(self, segment_bytes: u64) -> LogOptions {
        LogOptions {
            io: self.io(),
            direct_io: self.direct(),
            ..budget_options(segment_bytes)
        }
    }
}

/// Default options with `segment_bytes` segments; records are limited to a quarter of a
/// segment when the default limit would not fit (as `sitelog node --segment-bytes` does).
pub(super) fn budget_options(segment_bytes: u64) -> LogOptions {
    let defaults = LogOptions::default();
    LogOptions {
        segment_size_bytes: segment_bytes,
        max_record_bytes: defaults
            .max_record_bytes
            .min(u32::try_from(segment_bytes / 4).unwrap_or(u32::MAX)),
        ..defaults
    }
}

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// Every backend this kernel supports, through the page cache and with O_DIRECT.
    All,
    /// io_uring (fails if the kernel refuses it).
    #[value(name = "io_uring", alias = "io-uring")]
    IoUring,
    /// pread/pwrite/fdatasync.
    Posix,
    /// io_uring with O_DIRECT group writes.
    #[value(name = "io_uring-direct")]
    IoUringDirect,
    /// POSIX with O_DIRECT group writes.
    #[value(name = "posix-direct")]
    PosixDirect,
}

/// `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Workload {
    Durable,
    Buffered,
    Read,
    Reopen,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Durable => "durable",
            Workload::Buffered => "buffered",
            Workload::Read => "read",
            Workload::Reopen => "reopen",
        }
    }
}

/// Options of `sitelog bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Directory to work in; a fresh subdirectory is created in it and removed at the end
    /// (unless --keep). Defaults to the system temp dir. Use a real disk, not a tmpfs.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the files written.
    #[arg(long)]
    pub keep: bool,
    /// I/O backend(s) to measure.
    #[arg(long, value_enum, default_value_t = BackendArg::All)]
    pub backend: BackendArg,
    /// Seconds per durable cell and per raw loop [default: 2.0, or 0.3 with --quick].
    #[arg(long, value_name = "F")]
    pub seconds: Option<f64>,
    /// Short run (CI): 0.3 s per cell, fewer cells, 64 MiB buffered, 256 MiB reopen log.
    #[arg(long)]
    pub quick: bool,
    /// Size of the reopen workload's log in GiB [default: 1, or 0.25 with --quick].
    #[arg(long, value_name = "N")]
    pub reopen_gib: Option<f64>,
    /// Print one JSON object on stdout instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Workloads to run (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_values_t = [Workload::Durable, Workload::Buffered, Workload::Read, Workload::Reopen]
    )]
    pub only: Vec<Workload>,
    /// Instead of the local workloads: three `sitelog node` processes (committed-append
    /// throughput and latency beside a single local log, then leader failover times).
    #[arg(long)]
    pub replicated: bool,
    /// Concurrent writers of the replicated benchmark.
    #[arg(long, default_value_t = 64)]
    pub writers: usize,
    /// Record size of the replicated benchmark.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Leader kills of the replicated benchmark's failover measurement [default: 20, or 3
    /// with --quick].
    #[arg(long)]
    pub kills: Option<usize>,
    /// Instead of the local workloads: catch-up of a new replica by snapshot + bulk fetch
    /// against replication only, with the machine's limits.
    #[arg(long)]
    pub catch_up: bool,
    /// Log size of the catch-up benchmark in MiB [default: 1024, or 64 with --quick].
    #[arg(long)]
    pub catch_up_mib: Option<u64>,
    /// Most the bench keeps on disk at once, in MiB [default: half the free space of the
    /// directory]. Logs get smaller segments, and loops stop early, to stay within it.
    #[arg(long, value_name = "MIB")]
    pub max_disk_mib: Option<u64>,
    /// `--replicated`: every writer appends through its own idempotent producer
    /// (`Client::producer`: a producer id and sequence per message, deduplicated by the
    /// cluster) instead of plain appends; for the cost of exactly-once appends.
    #[arg(long)]
    pub producers: bool,
    /// `--replicated` / `--catch-up`: run the nodes in plaintext. Without it they serve mutual
    /// TLS with a CA and certificates generated into the work directory.
    #[arg(long)]
    pub insecure: bool,
}

/// Options of the hidden `bench-writer` child.
#[derive(Debug, Args)]
pub struct WriterArgs {
    /// The log directory (opened with default durable options).
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, value_enum, default_value_t = Backend::IoUring)]
    pub backend: Backend,
    #[arg(long, default_value_t = CHILD_WRITERS)]
    pub writers: usize,
    #[arg(long, default_value_t = CHILD_RECORD_BYTES)]
    pub record_bytes: usize,
    /// Segment size of the log (the parent's disk budget's).
    #[arg(long, default_value_t = LogOptions::default().segment_size_bytes)]
    pub segment_bytes: u64,
}

/// What one run measures.
#[derive(Debug)]
struct Plan {
    duration: Duration,
    quick: bool,
    backends: Vec<Backend>,
    workloads: BTreeSet<Workload>,
    /// (record bytes, writers, whether the writers are async tasks) of the durable cells.
    cells: Vec<(usize, usize, bool)>,
    buffered_bytes: u64,
    reopen_bytes: u64,
    /// What may be on disk at once, and the segment size that fits it.
    disk: DiskBudget,
    keep: bool,
}

impl Plan {
    fn wants(&self, w: Workload) -> bool {
        self.workloads.contains(&w)
    }

    /// Group sizes of the raw loop: record size × writers of every cell, and 1 MiB.
    fn raw_groups(&self) -> Vec<u64> {
        let mut groups: BTreeSet<u64> = self
            .cells
            .iter()
            .filter(|(size, _, _)| *size != BIG_RECORD_BYTES)
            .map(|&(size, w, _)| (size * w) as u64)
            .collect();
        groups.insert(BIG_RECORD_BYTES as u64);
        groups.into_iter().collect()
    }
}

/// Whether the file system of `dir` takes O_DIRECT (tmpfs does not; a log there would fall
/// back to buffered writes and its figures would be mislabelled).
fn direct_probe(io: &dyn crate::io::Io, dir: &Path) -> crate::Result<()> {
    let path = dir.join("direct-probe");
    let opened = io.open(&path, true).and_then(|_| io.open_direct(&path));
    let _ = io.remove(&path);
    opened
        .map(|_| ())
        .map_err(|source| crate::Error::Io { path, source })
}

fn plan(
    args: &BenchArgs,
    disk: DiskBudget,
    work_dir: &Path,
    notes: &mut Vec<String>,
) -> CliResult<Plan> {
    let seconds = args.seconds.unwrap_or(if args.quick { 0.3 } else { 2.0 });
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        return Err(CliError(format!(
            "--seconds must be in (0, 3600], got {seconds}"
        )));
    }
    let gib = args
        .reopen_gib
        .unwrap_or(if args.quick { 0.25 } else { 1.0 });
    if !(gib.is_finite() && gib > 0.0 && gib <= 1024.0) {
        return Err(CliError(format!(
            "--reopen-gib must be in (0, 1024], got {gib}"
        )));
    }
    let candidates = match args.backend {
        BackendArg::All => vec![
            Backend::IoUring,
            Backend::Posix,
            Backend::IoUringDirect,
            Backend::PosixDirect,
        ],
        BackendArg::IoUring => vec![Backend::IoUring],
        BackendArg::Posix => vec![Backend::Posix],
        BackendArg::IoUringDirect => vec![Backend::IoUringDirect],
        BackendArg::PosixDirect => vec![Backend::PosixDirect],
    };
    let mut backends = Vec::new();
    for b in candidates {
        let usable = b.io().resolve(b.direct()).and_then(|io| {
            if b.direct() {
                direct_probe(&*io, work_dir)
            } else {
                Ok(())
            }
        });
        match usable {
            Ok(_) => backends.push(b),
            Err(e) if args.backend == BackendArg::All => {
                notes.push(format!("backend {} skipped: {e}", b.name()));
            }
            Err(e) => {
                return Err(CliError(format!(
                    "backend {} is not available: {e}",
                    b.name()
                )))
            }
        }
    }
    let (sizes, writers): (&[usize], &[usize]) = if args.quick {
        (&QUICK_RECORD_SIZES, &QUICK_WRITER_COUNTS)
    } else {
        (&RECORD_SIZES, &WRITER_COUNTS)
    };
    let mut cells: Vec<(usize, usize, bool)> = sizes
        .iter()
        .flat_map(|&s| {
            let threads = writers.iter().map(move |&w| (s, w, false));
            threads.chain(TASK_WRITER_COUNTS.iter().map(move |&w| (s, w, true)))
        })
        .collect();
    cells.push((BIG_RECORD_BYTES, BIG_RECORD_WRITERS, false));
    notes.extend(disk.note());
    let log_bytes = disk.log_payload_bytes(1);
    let configured_buffered = if args.quick {
        QUICK_BUFFERED_BYTES
    } else {
        BUFFERED_BYTES
    };
    let reopen_bytes = (gib * (1u64 << 30) as f64) as u64;
    for (what, want) in [("buffered", configured_buffered), ("reopen", reopen_bytes)] {
        if want > log_bytes {
            notes.push(format!(
                "the {what} log is {} instead of {} (disk budget)",
                super::stats::fmt_bytes(log_bytes),
                super::stats::fmt_bytes(want)
            ));
        }
    }
    Ok(Plan {
        duration: Duration::from_secs_f64(seconds),
        quick: args.quick,
        backends,
        workloads: args.only.iter().copied().collect(),
        cells,
        buffered_bytes: configured_buffered.min(log_bytes),
        reopen_bytes: reopen_bytes.min(log_bytes),
        disk,
        keep: args.keep,
    })
}

pub(super) fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

/// `sitelog bench`.
pub fn run(args: &BenchArgs) -> CliResult<()> {
    if args.replicated {
        return super::replicated::run(args);
    }
    if args.catch_up {
        return super::catchup_bench::run(args);
    }
    let started = Instant::now();
    let mut notes = Vec::new();
    let work = WorkDir::create(args.dir.as_deref(), args.keep)?;
    let disk = DiskBudget::for_dir(work.path(), args.max_disk_mib, 1)?;
    let plan = plan(args, disk, work.path(), &mut notes)?;
    let cold = sys::drop_page_cache();
    if let Err(reason) = &cold {
        notes.push(format!("cold reads not measured: {reason}"));
    }
    let fs = sys::fs_type(work.path());
    if fs == "tmpfs" {
        notes.push("the bench directory is on a tmpfs: durable figures mean nothing".into());
    }
    let mut results = Results {
        meta: Meta {
            cpus: sys::cpus(),
            kernel: sys::kernel_release(),
            dir: work.path().to_path_buf(),
            fs,
            seconds: plan.duration.as_secs_f64(),
            quick: plan.quick,
            backends: plan.backends.iter().map(|b| b.name()).collect(),
            workloads: plan.workloads.iter().map(|w| w.name()).collect(),
            cold_reason: cold.err(),
            total_secs: 0.0,
            load_start: sys::load_average(),
            load_end: None,
            disk: plan.disk,
        },
        notes,
        ..Results::default()
    };
    if plan.wants(Workload::Durable) {
        results.raw = raw_loops(&plan, &work)?;
    }
    if plan.wants(Workload::Buffered) {
        let path = work.sub("raw-buffered");
        progress(&format!(
            "raw buffered: {} MiB in {} KiB pwrites + fdatasync",
            plan.buffered_bytes >> 20,
            (BUFFERED_RECORD_BYTES * BUFFERED_BATCH) >> 10
        ));
        let times = raw::buffered(
            &path,
            plan.buffered_bytes,
            BUFFERED_RECORD_BYTES * BUFFERED_BATCH,
        )?;
        sys::remove_path(&path)?;
        results.buffered_raw = Some(times);
    }
    if plan.wants(Workload::Durable) {
        durable_workload(&plan, &work, &mut results)?;
    }
    for &backend in &plan.backends {
        if plan.wants(Workload::Buffered) || plan.wants(Workload::Read) {
            let dir = work.sub(&format!("log-{}", backend.name()));
            progress(&format!(
                "buffered {}: {} MiB",
                backend.name(),
                plan.buffered_bytes >> 20
            ));
            let run =
                write_pattern_log(&dir, backend, plan.disk.segment_bytes, plan.buffered_bytes)?;
            if plan.wants(Workload::Buffered) {
                results.buffered.push(run);
            }
            if plan.wants(Workload::Read) {
                progress(&format!("read {}", backend.name()));
                let runs = read_cells(
                    &dir,
                    backend,
                    plan.disk.segment_bytes,
                    results.meta.cold_reason.is_none(),
                )?;
                results.read.extend(runs);
            }
            if !plan.keep {
                sys::remove_path(&dir)?;
            }
        }
    }
    if plan.wants(Workload::Read) && results.meta.cold_reason.is_none() {
        results.cold_reads =
            super::coldread::measure(|n| work.sub(n), plan.reopen_bytes, plan.disk.segment_bytes)?;
    }
    if plan.wants(Workload::Reopen) && !plan.backends.is_empty() {
        reopen_workload(&plan, &work, &mut results)?;
    }
    results.meta.total_secs = started.elapsed().as_secs_f64();
    results.meta.load_end = sys::load_average();
    let out = if args.json {
        results.json().render() + "\n"
    } else {
        results.text()
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context(|| "cannot write to stdout".to_string())?;
    if args.keep {
        eprintln!("bench: files kept in {}", work.path().display());
    }
    Ok(())
}

/// The raw pwrite + fdatasync loops: every group size into a fresh file, then into one
/// pre-written file as large as the farthest fresh loop got (capped; the loops wrap around).
fn raw_loops(plan: &Plan, work: &WorkDir) -> CliResult<Vec<RawLoop>> {
    let groups = plan.raw_groups();
    let path = work.sub("raw-durable");
    let mut loops = Vec::new();
    for &g in &groups {
        progress(&format!(
            "raw pwrite+fdatasync, fresh file, group {}",
            super::stats::fmt_bytes(g)
        ));
        sys::settle_disk();
        loops.push(raw::durable_loop(
            &path,
            RawFile::Fresh,
            g as usize,
            plan.duration,
            plan.disk.bytes,
        )?);
        sys::remove_path(&path)?;
    }
    let cap = if plan.quick {
        QUICK_PREWRITTEN_MAX_BYTES
    } else {
        PREWRITTEN_MAX_BYTES
    };
    let largest = groups.iter().copied().max().unwrap_or(0);
    let reached = loops.iter().map(|l| l.reached_bytes).max().unwrap_or(0);
    let len = reached.min(cap).min(plan.disk.bytes).max(largest);
    progress(&format!(
        "raw: pre-writing {} of zeros",
        super::stats::fmt_bytes(len)
    ));
    raw::prewrite(&path, len)?;
    for &g in &groups {
        progress(&format!(
            "raw pwrite+fdatasync, pre-written file, group {}",
            super::stats::fmt_bytes(g)
        ));
        sys::settle_disk();
        loops.push(raw::durable_loop(
            &path,
            RawFile::Prewritten,
            g as usize,
            plan.duration,
            plan.disk.bytes,
        )?);
    }
    sys::remove_path(&path)?;
    Ok(loops)
}

/// The segment files of a log directory, in offset order.
pub(super) fn segment_files(dir: &Path) -> CliResult<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    Ok(files)
}

/// Every durable cell with each backend and the naive group commit back to back (the naive
/// one first in every other cell, so that neither always runs on a disk the other just
/// used), then the stall runs.
fn durable_workload(plan: &Plan, work: &WorkDir, results: &mut Results) -> CliResult<()> {
    for (i, &cell) in plan.cells.iter().enumerate() {
        let naive_first = i % 2 == 0;
        if naive_first {
            results.baseline.push(naive_cell(plan, work, cell)?);
        }
        for &backend in &plan.backends {
            let (size, writers, tasks) = cell;
            progress(&format!(
                "durable {} {} × {writers} {}",
                backend.name(),
                super::stats::fmt_bytes(size as u64),
                writer_kind(tasks)
            ));
            results
                .durable
                .push(durable_cell(plan, work, backend, cell)?);
        }
        if !naive_first {
            results.baseline.push(naive_cell(plan, work, cell)?);
        }
    }
    for kind in [StallKind::Open, StallKind::Roll] {
        // The naive log first for one kind, last for the other.
        let mut order: Vec<Option<Backend>> = std::iter::once(None)
            .chain(plan.backends.iter().copied().map(Some))
            .collect();
        if kind == StallKind::Roll {
            order.reverse();
        }
        for who in order {
            let run = match who {
                Some(backend) => stall_run(plan, work, backend, kind)?,
                None => naive_stall_run(plan, work, kind)?,
            };
            results.stalls.push(run);
        }
    }
    Ok(())
}

/// Single appends timed before a cell: at most 100, at most 16 MiB.
fn warmup_appends(record_bytes: usize) -> usize {
    (WARMUP_BYTES / record_bytes).clamp(1, WARMUP_APPENDS)
}

/// One durable cell of the naive group commit, set up as sitelog's: a new directory, the same
/// warm-up, the same writers and budget.
fn naive_cell(
    plan: &Plan,
    work: &WorkDir,
    (size, writers, tasks): (usize, usize, bool),
) -> CliResult<BaselineCell> {
    progress(&format!(
        "durable naive {} × {writers} {}",
        super::stats::fmt_bytes(size as u64),
        writer_kind(tasks)
    ));
    let dir = work.sub(&format!("naive-{size}-{writers}-{}", writer_kind(tasks)));
    let log = Arc::new(
        NaiveLog::create(&dir, plan.disk.segment_bytes)
            .context(|| format!("cannot create a naive log in {}", dir.display()))?,
    );
    let payload = raw::pattern(size);
    for _ in 0..warmup_appends(size) {
        log.append(&payload).context(|| "naive append".into())?;
    }
    sys::settle_disk();
    let before = log.stats();
    let max_bytes = plan.disk.log_payload_bytes(1);
    let (records, secs, lat) = if tasks {
        run_naive_tasks(&log, &payload, writers, plan.duration, max_bytes)?
    } else {
        let append = |p: &[u8]| log.append(p).map(|_| ()).context(|| "naive append".into());
        run_writer_threads(&append, &payload, writers, plan.duration, max_bytes)?
    };
    let flushes = log.stats().flushes - before.flushes;
    drop(log);
    if !plan.keep {
        sys::remove_path(&dir)?;
    }
    Ok(BaselineCell {
        record_bytes: size as u64,
        writers,
        tasks,
        records,
        secs,
        lat: Latency::from_nanos(lat),
        flushes,
    })
}

/// One writer's first appends to a new log, timed one by one.
fn first_appends(append: &dyn Fn(&[u8]) -> CliResult<()>) -> CliResult<(u64, f64, Vec<u64>)> {
    let payload = raw::pattern(STALL_RECORD_BYTES);
    let started = Instant::now();
    let mut lat = Vec::with_capacity(STALL_OPEN_APPENDS);
    for _ in 0..STALL_OPEN_APPENDS {
        let t0 = Instant::now();
        append(&payload)?;
        lat.push(nanos(t0.elapsed()));
    }
    Ok((lat.len() as u64, started.elapsed().as_secs_f64(), lat))
}

/// Sitelog's stall run of `kind` with `backend`: a new log, timed from its open.
fn stall_run(
    plan: &Plan,
    work: &WorkDir,
    backend: Backend,
    kind: StallKind,
) -> CliResult<StallRun> {
    progress(&format!("stall {} {}", kind.key(), backend.name()));
    let dir = work.sub(&format!("stall-{}-{}", kind.key(), backend.name()));
    let segment_bytes = match kind {
        StallKind::Open => plan.disk.segment_bytes,
        StallKind::Roll => STALL_ROLL_SEGMENT_BYTES,
    };
    sys::settle_disk();
    let log = Log::open(&dir, backend.options(segment_bytes))
        .context(|| format!("cannot open a log in {}", dir.display()))?;
    let before = log.commit_stats().flushes;
    let (records, secs, lat, writers) = match kind {
        StallKind::Open => {
            let append = |p: &[u8]| log.append(p).map(|_| ()).map_err(CliError::from);
            let (r, s, l) = first_appends(&append)?;
            (r, s, l, 1)
        }
        StallKind::Roll => {
            let payload = raw::pattern(STALL_RECORD_BYTES);
            let max_bytes = plan.disk.log_payload_bytes(1);
            let (r, s, l) =
                run_writers(&log, &payload, STALL_ROLL_WRITERS, plan.duration, max_bytes)?;
            (r, s, l, STALL_ROLL_WRITERS)
        }
    };
    let run = StallRun {
        backend: backend.name(),
        kind,
        record_bytes: STALL_RECORD_BYTES as u64,
        writers,
        segment_bytes,
        records,
        secs,
        lat: Latency::from_nanos(lat),
        segments: log.segment_count() as u64,
        flushes: log.commit_stats().flushes - before,
    };
    log.close()?;
    if !plan.keep {
        sys::remove_path(&dir)?;
    }
    Ok(run)
}

/// The naive group commit's stall run of `kind`.
fn naive_stall_run(plan: &Plan, work: &WorkDir, kind: StallKind) -> CliResult<StallRun> {
    progress(&format!("stall {} naive", kind.key()));
    let dir = work.sub(&format!("stall-{}-naive", kind.key()));
    let segment_bytes = match kind {
        StallKind::Open => plan.disk.segment_bytes,
        StallKind::Roll => STALL_ROLL_SEGMENT_BYTES,
    };
    sys::settle_disk();
    let log = NaiveLog::create(&dir, segment_bytes)
        .context(|| format!("cannot create a naive log in {}", dir.display()))?;
    let append = |p: &[u8]| log.append(p).map(|_| ()).context(|| "naive append".into());
    let ((records, secs, lat), writers) = match kind {
        StallKind::Open => (first_appends(&append)?, 1),
        StallKind::Roll => {
            let payload = raw::pattern(STALL_RECORD_BYTES);
            let max_bytes = plan.disk.log_payload_bytes(1);
            let r = run_writer_threads(
                &append,
                &payload,
                STALL_ROLL_WRITERS,
                plan.duration,
                max_bytes,
            )?;
            (r, STALL_ROLL_WRITERS)
        }
    };
    let stats = log.stats();
    drop(log);
    if !plan.keep {
        sys::remove_path(&dir)?;
    }
    Ok(StallRun {
        backend: NAIVE_NAME,
        kind,
        record_bytes: STALL_RECORD_BYTES as u64,
        writers,
        segment_bytes,
        records,
        secs,
        lat: Latency::from_nanos(lat),
        segments: stats.rolls + 1,
        flushes: stats.flushes,
    })
}

fn durable_cell(
    plan: &Plan,
    work: &WorkDir,
    backend: Backend,
    (size, writers, tasks): (usize, usize, bool),
) -> CliResult<DurableCell> {
    let dir = work.sub(&format!(
        "durable-{}-{size}-{writers}-{}",
        backend.name(),
        writer_kind(tasks)
    ));
    let base = backend.options(plan.disk.segment_bytes);
    let opts = LogOptions {
        max_record_bytes: base
            .max_record_bytes
            .max(u32::try_from(size).unwrap_or(u32::MAX)),
        ..base
    };
    let log = Arc::new(
        Log::open(&dir, opts).context(|| format!("cannot open a log in {}", dir.display()))?,
    );
    let payload = raw::pattern(size);
    // Steady state: a long-running log appends into a preallocated segment, and has its next
    // one prepared long before it is needed. A new log's first segment is created at open
    // as an empty file (every flush into it extends the file); this wait swaps in the first
    // prepared file while the segment is still empty (`Log::wait_prepared`), and the one
    // after warming up lets the next file's zeros be written before timing starts.
    let adopted = log.wait_prepared(PREPARE_TIMEOUT);
    for _ in 0..warmup_appends(size) {
        log.append(&payload)?;
    }
    let prepared = adopted && log.wait_prepared(PREPARE_TIMEOUT);
    sys::settle_disk();
    let max_bytes = plan.disk.log_payload_bytes(1);
    let before = log.commit_stats().flushes;
    let (records, secs, lat) = if tasks {
        run_tasks(&log, &payload, writers, plan.duration, max_bytes)?
    } else {
        run_writers(&log, &payload, writers, plan.duration, max_bytes)?
    };
    let cell = DurableCell {
        backend: backend.name(),
        record_bytes: size as u64,
        writers,
        tasks,
        records,
        secs,
        lat: Latency::from_nanos(lat),
        next_segment_prepared: prepared,
        segments: log.segment_count(),
        flushes: log.commit_stats().flushes - before,
    };
    // Every task has ended (`run_tasks` drops its runtime), so this is the last handle.
    let log = Arc::into_inner(log)
        .ok_or_else(|| CliError("the log is still shared after the cell".into()))?;
    log.close()?;
    if !plan.keep {
        sys::remove_path(&dir)?;
    }
    Ok(cell)
}

/// `tasks` async tasks on a tokio runtime with one worker thread per CPU, each awaiting
/// `append_batch_async` of one `payload` at a time, until `duration` has passed or
/// `max_payload_bytes` have been appended. Returns (records, seconds, per-append latencies in
/// ns).
fn run_tasks(
    log: &Arc<Log>,
    payload: &[u8],
    tasks: usize,
    duration: Duration,
    max_payload_bytes: u64,
) -> CliResult<(u64, f64, Vec<u64>)> {
    let log = log.clone();
    let append = move |payload: Arc<[u8]>| {
        let log = log.clone();
        async move {
            log.append_batch_async(&[&payload[..]]).await?;
            Ok(())
        }
    };
    run_async_tasks(append, payload, tasks, duration, max_payload_bytes)
}

/// [`run_tasks`] for the naive baseline: it has no async API, so each task calls its blocking
/// append through `spawn_blocking`, as a simple design would.
fn run_naive_tasks(
    log: &Arc<NaiveLog>,
    payload: &[u8],
    tasks: usize,
    duration: Duration,
    max_payload_bytes: u64,
) -> CliResult<(u64, f64, Vec<u64>)> {
    let log = log.clone();
    let append = move |payload: Arc<[u8]>| {
        let log = log.clone();
        async move {
            tokio::task::spawn_blocking(move || log.append(&payload))
                .await
                .map_err(|e| CliError(format!("a blocking append failed: {e}")))?
                .context(|| "naive append".to_string())?;
            Ok(())
        }
    };
    run_async_tasks(append, payload, tasks, duration, max_payload_bytes)
}

/// `tasks` async tasks, each awaiting `append(payload)` one at a time (see [`run_tasks`]).
fn run_async_tasks<F, Fut>(
    append: F,
    payload: &[u8],
    tasks: usize,
    duration: Duration,
    max_payload_bytes: u64,
) -> CliResult<(u64, f64, Vec<u64>)>
where
    F: Fn(Arc<[u8]>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = CliResult<()>> + Send,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(sys::cpus())
        .enable_time()
        .build()
        .context(|| "cannot start the async runtime".to_string())?;
    let payload: Arc<[u8]> = payload.into();
    let budget = Arc::new(ByteBudget::new(max_payload_bytes));
    let started = Instant::now();
    let deadline = started + duration;
    let result = rt.block_on(async {
        let mut handles = Vec::with_capacity(tasks);
        for _ in 0..tasks {
            let (append, payload, budget) = (append.clone(), payload.clone(), budget.clone());
            handles.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline && budget.take(payload.len()) {
                    let t0 = Instant::now();
                    append(payload.clone()).await?;
                    lat.push(nanos(t0.elapsed()));
                }
                Ok::<_, CliError>(lat)
            }));
        }
        let mut all = Vec::new();
        let mut first_error = None;
        for h in handles {
            match h.await {
                Ok(Ok(lat)) => all.extend(lat),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(CliError(format!("a writer task failed: {e}")));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(all),
        }
    });
    let secs = started.elapsed().as_secs_f64();
    // Ends every task, and with them their handles on the log.
    drop(rt);
    let all = result?;
    Ok((all.len() as u64, secs, all))
}

/// Payload bytes writers may still append (the disk budget), shared by all of them.
pub(super) struct ByteBudget {
    taken_bytes: AtomicU64,
    max_bytes: u64,
}

impl ByteBudget {
    pub(super) fn new(max_bytes: u64) -> Self {
        ByteBudget {
            taken_bytes: AtomicU64::new(0),
            max_bytes,
        }
    }

    /// Takes `n` bytes for one more append; `false` once the budget is spent.
    pub(super) fn take(&self, n: usize) -> bool {
        let n = n as u64;
        self.taken_bytes.fetch_add(n, Ordering::Relaxed) + n <= self.max_bytes
    }
}

/// Lets writer threads start together, or tells them to quit before they start.
#[derive(Default)]
struct Gate {
    state: Mutex<Option<bool>>,
    cv: Condvar,
}

impl Gate {
    /// Opens the gate: `true` to run, `false` to abort.
    fn open(&self, run: bool) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(run);
        self.cv.notify_all();
    }

    /// Waits until the gate opens; returns whether to run.
    fn wait(&self) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(run) = *st {
                return run;
            }
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// `writers` threads append `payload` one record at a time until `duration` has passed or
/// `max_payload_bytes` have been appended (the disk budget). Returns (records, seconds,
/// per-append latencies in ns).
pub(super) fn run_writers(
    log: &Log,
    payload: &[u8],
    writers: usize,
    duration: Duration,
    max_payload_bytes: u64,
) -> CliResult<(u64, f64, Vec<u64>)> {
    let append = |p: &[u8]| log.append(p).map(|_| ()).map_err(CliError::from);
    run_writer_threads(&append, payload, writers, duration, max_payload_bytes)
}

/// [`run_writers`] with any blocking durable append (sitelog's or the naive baseline's).
fn run_writer_threads(
    append: &(dyn Fn(&[u8]) -> CliResult<()> + Sync),
    payload: &[u8],
    writers: usize,
    duration: Duration,
    max_payload_bytes: u64,
) -> CliResult<(u64, f64, Vec<u64>)> {
    let gate = Gate::default();
    let stop = AtomicBool::new(false);
    let budget = ByteBudget::new(max_payload_bytes);
    std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(writers);
        let mut spawn_error = None;
        for i in 0..writers {
            let (gate, stop, budget) = (&gate, &stop, &budget);
            let spawned = std::thread::Builder::new()
                .name(format!("bench-writer-{i}"))
                .stack_size(WRITER_STACK_BYTES)
                .spawn_scoped(s, move || -> CliResult<Vec<u64>> {
                    let mut lat = Vec::new();
                    if !gate.wait() {
                        return Ok(lat);
                    }
                    while !stop.load(Ordering::Relaxed) {
                        if !budget.take(payload.len()) {
                            stop.store(true, Ordering::Relaxed);
                            break;
                        }
                        let t0 = Instant::now();
                        if let Err(e) = append(payload) {
                            stop.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                        lat.push(nanos(t0.elapsed()));
                    }
                    Ok(lat)
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    spawn_error = Some(CliError(format!("cannot start writer thread {i}: {e}")));
                    break;
                }
            }
        }
        gate.open(spawn_error.is_none());
        let started = Instant::now();
        if spawn_error.is_none() {
            let deadline = started + duration;
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
            }
        }
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        let mut first_error = spawn_error;
        for h in handles {
            match h.join() {
                Ok(Ok(lat)) => all.extend(lat),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(CliError("a writer thread panicked".into()));
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        match first_error {
            Some(e) => Err(e),
            None => Ok((all.len() as u64, secs, all)),
        }
    })
}

/// Payload `i` of a log the bench reads back: its offset (little-endian), then a fixed pattern.
fn fill_payload(buf: &mut [u8], offset: u64, pattern: &[u8]) {
    buf[..OFFSET_PREFIX_BYTES].copy_from_slice(&offset.to_le_bytes());
    buf[OFFSET_PREFIX_BYTES..].copy_from_slice(&pattern[OFFSET_PREFIX_BYTES..]);
}

/// Writes a fresh log of `total` payload bytes in `SyncMode::Manual` batches of 64 × 1 KiB,
/// then one `sync()`, and closes it.
fn write_pattern_log(
    dir: &Path,
    backend: Backend,
    segment_bytes: u64,
    total: u64,
) -> CliResult<BufferedRun> {
    write_log(
        dir,
        backend.options(segment_bytes),
        total,
        BUFFERED_BATCH,
        BufferedRun::new(backend),
    )
}

fn write_log(
    dir: &Path,
    opts: LogOptions,
    total: u64,
    batch: usize,
    mut run: BufferedRun,
) -> CliResult<BufferedRun> {
    let opts = LogOptions {
        sync: SyncMode::Manual,
        ..opts
    };
    let log = Log::open(dir, opts).context(|| format!("cannot open a log in {}", dir.display()))?;
    let pattern = raw::pattern(BUFFERED_RECORD_BYTES);
    let mut bufs = vec![vec![0u8; BUFFERED_RECORD_BYTES]; batch];
    let mut next = log.end_offset();
    let mut bytes = 0u64;
    let started = Instant::now();
    while bytes < total {
        for (i, b) in bufs.iter_mut().enumerate() {
            fill_payload(b, next + i as u64, &pattern);
        }
        let range = log.append_batch(&bufs)?;
        if range.start != next {
            return Err(CliError(format!(
                "append_batch returned offsets {range:?}, expected them to start at {next}"
            )));
        }
        next = range.end;
        bytes += (batch * BUFFERED_RECORD_BYTES) as u64;
    }
    run.write_secs = started.elapsed().as_secs_f64();
    log.sync()?;
    run.total_secs = started.elapsed().as_secs_f64();
    run.bytes = bytes;
    run.records = next;
    run.file_bytes = log.size_bytes();
    run.segments = log.segment_count();
    log.close()?;
    Ok(run)
}

/// Reads the whole log once, checking offsets, payload lengths and contents; the iterator
/// verifies every frame's checksum. Returns (records, payload bytes, seconds).
fn read_all(log: &Log) -> CliResult<(u64, u64, f64)> {
    let pattern = raw::pattern(BUFFERED_RECORD_BYTES);
    let (start, end) = (log.start_offset(), log.end_offset());
    let started = Instant::now();
    let (mut expected, mut bytes) = (start, 0u64);
    for rec in log.iter(start) {
        let rec = rec?;
        let p = &rec.payload;
        let ok = rec.offset == expected
            && p.len() == BUFFERED_RECORD_BYTES
            && p[..OFFSET_PREFIX_BYTES] == expected.to_le_bytes()
            && p[OFFSET_PREFIX_BYTES..] == pattern[OFFSET_PREFIX_BYTES..];
        if !ok {
            return Err(CliError(format!(
                "record {} (expected offset {expected}) has the wrong payload ({} bytes)",
                rec.offset,
                p.len()
            )));
        }
        bytes += p.len() as u64;
        expected += 1;
    }
    if expected != end {
        return Err(CliError(format!(
            "iteration stopped at offset {expected}, the log ends at {end}"
        )));
    }
    Ok((end - start, bytes, started.elapsed().as_secs_f64()))
}

/// Cold (page cache dropped, if permitted) and warm reads of the closed log in `dir`, each
/// with a plain sequential read of the segment files for comparison.
fn read_cells(
    dir: &Path,
    backend: Backend,
    segment_bytes: u64,
    cold_permitted: bool,
) -> CliResult<Vec<ReadRun>> {
    let files = segment_files(dir)?;
    let mut runs = Vec::new();
    let opts = LogOptions {
        // A reader needs no prepared segment; its 64 MiB of zeros would compete with the reads.
        preallocate: false,
        ..backend.options(segment_bytes)
    };
    let raw_cold = if cold_permitted {
        sys::drop_page_cache().map_err(CliError)?;
        let raw_cold = raw::read_files(&files)?;
        sys::drop_page_cache().map_err(CliError)?;
        Some(raw_cold)
    } else {
        None
    };
    let t0 = Instant::now();
    let log = Log::open(dir, opts).context(|| format!("cannot reopen {}", dir.display()))?;
    let open_secs = t0.elapsed().as_secs_f64();
    let first = read_all(&log)?;
    if let Some((raw_bytes, raw_secs)) = raw_cold {
        runs.push(ReadRun {
            backend: backend.name(),
            cold: true,
            records: first.0,
            bytes: first.1,
            secs: first.2,
            open_secs: Some(open_secs),
            raw_bytes,
            raw_secs,
        });
    }
    let warm = read_all(&log)?;
    let (raw_bytes, raw_secs) = raw::read_files(&files)?;
    runs.push(ReadRun {
        backend: backend.name(),
        cold: false,
        records: warm.0,
        bytes: warm.1,
        secs: warm.2,
        open_secs: None,
        raw_bytes,
        raw_secs,
    });
    log.close()?;
    Ok(runs)
}

/// Builds the reopen log once, then per backend: clean reopens, one reopen with the page cache
/// dropped (if permitted), and the first reopen after a SIGKILLed writer.
fn reopen_workload(plan: &Plan, work: &WorkDir, results: &mut Results) -> CliResult<()> {
    let dir = work.sub("reopen");
    let builder = plan.backends[0];
    progress(&format!(
        "reopen: building a {} log",
        super::stats::fmt_bytes(plan.reopen_bytes)
    ));
    let build = write_log(
        &dir,
        builder.options(plan.disk.segment_bytes),
        plan.reopen_bytes,
        REOPEN_BATCH,
        BufferedRun::new(builder),
    )?;
    results.reopen_build = Some(build);
    for &backend in &plan.backends {
        progress(&format!("reopen {}: after clean close", backend.name()));
        let mut times = Vec::new();
        let mut report = None;
        for _ in 0..CLEAN_REOPENS {
            let (took, log) = timed_open(&dir, backend, plan.disk.segment_bytes)?;
            times.push(took);
            // The first open's report: it is the one after the writer's close.
            report.get_or_insert_with(|| log.recovery_report().clone());
            log.close()?;
        }
        results.reopen.push(ReopenRun {
            backend: backend.name(),
            kind: ReopenKind::Clean,
            times,
            report: report.unwrap_or_default(),
            log_bytes: dir_bytes(&dir)?,
            acked_end: None,
        });
        if results.meta.cold_reason.is_none() {
            sys::drop_page_cache().map_err(CliError)?;
            let (took, log) = timed_open(&dir, backend, plan.disk.segment_bytes)?;
            results.reopen.push(ReopenRun {
                backend: backend.name(),
                kind: ReopenKind::CleanCold,
                times: vec![took],
                report: log.recovery_report().clone(),
                log_bytes: dir_bytes(&dir)?,
                acked_end: None,
            });
            log.close()?;
        }
        progress(&format!(
            "reopen {}: after kill -9 of a writer",
            backend.name()
        ));
        let acked_end = run_and_kill_writer(&dir, backend, plan.disk.segment_bytes)?;
        let (took, log) = timed_open(&dir, backend, plan.disk.segment_bytes)?;
        let run = ReopenRun {
            backend: backend.name(),
            kind: ReopenKind::Killed,
            times: vec![took],
            report: log.recovery_report().clone(),
            log_bytes: dir_bytes(&dir)?,
            acked_end: Some(acked_end),
        };
        if log.end_offset() < acked_end {
            return Err(CliError(format!(
                "after kill -9 the log ends at {}, but the child acknowledged up to {acked_end}",
                log.end_offset()
            )));
        }
        if acked_end > 0 {
            log.read(acked_end - 1)?;
        }
        log.close()?;
        results.reopen.push(run);
    }
    if !plan.keep {
        sys::remove_path(&dir)?;
    }
    Ok(())
}

fn timed_open(dir: &Path, backend: Backend, segment_bytes: u64) -> CliResult<(Duration, Log)> {
    let t0 = Instant::now();
    let log = Log::open(dir, backend.options(segment_bytes))
        .context(|| format!("cannot reopen {}", dir.display()))?;
    Ok((t0.elapsed(), log))
}

/// Bytes of the segment files in `dir`.
fn dir_bytes(dir: &Path) -> CliResult<u64> {
    let mut total = 0;
    for f in segment_files(dir)? {
        total += std::fs::metadata(&f)
            .context(|| format!("cannot stat {}", f.display()))?
            .len();
    }
    Ok(total)
}

/// Starts `sitelog bench-writer` on `dir`, waits for enough acknowledgements, kills it with
/// SIGKILL and returns the highest acknowledged end offset.
fn run_and_kill_writer(dir: &Path, backend: Backend, segment_bytes: u64) -> CliResult<u64> {
    let exe = std::env::current_exe().context(|| "cannot find this executable".to_string())?;
    let mut child = Command::new(&exe)
        .arg("bench-writer")
        .arg("--dir")
        .arg(dir)
        .args(["--backend", backend.name()])
        .arg("--segment-bytes")
        .arg(segment_bytes.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context(|| format!("cannot start {} bench-writer", exe.display()))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(CliError("the child's stdout was not captured".into()));
    };
    let (tx, rx) = mpsc::channel::<u64>();
    let reader = std::thread::spawn(move || -> (u64, u64) {
        let (mut acks, mut max_end) = (0u64, 0u64);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(end) = line
                .strip_prefix("ACK ")
                .and_then(|s| s.trim().parse::<u64>().ok())
            {
                acks += 1;
                max_end = max_end.max(end);
                // The receiver may be gone once enough acks were seen; keep draining.
                let _ = tx.send(acks);
            }
        }
        (acks, max_end)
    });
    let deadline = Instant::now() + CHILD_ACK_TIMEOUT;
    let mut enough = false;
    while !enough {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(acks) => enough = acks >= KILL_AFTER_ACKS,
            Err(_) => break,
        }
    }
    drop(rx);
    let exited_early = child
        .try_wait()
        .context(|| "cannot check on the child".to_string())?;
    child
        .kill()
        .context(|| "cannot kill the bench-writer child".to_string())?;
    child
        .wait()
        .context(|| "cannot wait for the child".to_string())?;
    let (acks, max_end) = reader
        .join()
        .map_err(|_| CliError("the child's reader thread panicked".into()))?;
    if !enough {
        let why = match exited_early {
            Some(status) => format!("exited on its own ({status})"),
            None => format!("was killed after {CHILD_ACK_TIMEOUT:?}"),
        };
        return Err(CliError(format!(
            "bench-writer acknowledged only {acks} appends (wanted {KILL_AFTER_ACKS}) and {why}"
        )));
    }
    Ok(max_end)
}

/// `sitelog bench-writer`: appends durably from several threads until killed, printing
/// `ACK <end>` (one past the acknowledged offset) after each append.
pub fn run_writer(args: &WriterArgs) -> CliResult<()> {
    if args.writers == 0 || args.record_bytes == 0 {
        return Err(CliError(
            "--writers and --record-bytes must be positive".into(),
        ));
    }
    let log = Log::open(&args.dir, args.backend.options(args.segment_bytes))
        .context(|| format!("cannot open {}", args.dir.display()))?;
    let payload = raw::pattern(args.record_bytes);
    let deadline = Instant::now() + CHILD_MAX_RUNTIME;
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.writers)
            .map(|_| {
                s.spawn(|| -> CliResult<()> {
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let offset = match log.append(&payload) {
                            Ok(o) => o,
                            Err(e) => {
                                stop.store(true, Ordering::Relaxed);
                                return Err(e.into());
                            }
                        };
                        let mut out = std::io::stdout().lock();
                        let written =
                            writeln!(out, "ACK {}", offset + 1).and_then(|()| out.flush());
                        if let Err(e) = written {
                            stop.store(true, Ordering::Relaxed);
                            return Err(CliError(format!("cannot write to stdout: {e}")));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        let mut result = Ok(());
        for h in handles {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(CliError("a writer thread panicked".into())));
            if result.is_ok() {
                result = r;
            }
        }
        result
    })?;
    log.close()?;
    Ok(())
}
