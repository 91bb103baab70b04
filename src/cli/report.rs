//! The results of one bench run, the targets they are checked against, and their rendering as
//! text tables or one JSON object.

use super::bench::Backend;
use super::json::Json;
use super::raw::{BufferedTimes, RawFile, RawLoop};
use super::stats::{
    fmt_bytes, fmt_mbs, fmt_ms, fmt_rate, fmt_ratio, fmt_us, mb_per_s, round, Latency, Table,
};
use super::sys::DiskBudget;
use crate::storage::RecoveryReport;
use std::path::PathBuf;
use std::time::Duration;

/// Durable cells with records at least this large are compared by bandwidth with the raw loop
/// at this group size (their `record × writers` group would be hundreds of MiB).
const BANDWIDTH_GROUP_BYTES: u64 = 1 << 20;
/// The reopen targets are stated for a log of (at least) this size.
const REOPEN_TARGET_LOG_BYTES: u64 = 1 << 30;

/// Facts about the run.
#[derive(Debug, Default)]
pub struct Meta {
    pub cpus: usize,
    pub kernel: String,
    pub dir: PathBuf,
    pub fs: String,
    pub seconds: f64,
    pub quick: bool,
    pub backends: Vec<&'static str>,
    pub workloads: Vec<&'static str>,
    /// Why cold reads could not be measured, if they could not.
    pub cold_reason: Option<String>,
    pub total_secs: f64,
    /// 1-minute load average at the start and at the end of the run.
    pub load_start: Option<f64>,
    pub load_end: Option<f64>,
    /// Free space at the start, what the bench kept on disk at most, its logs' segment size.
    pub disk: DiskBudget,
}

/// One durable-append cell.
#[derive(Debug, Clone)]
pub struct DurableCell {
    /// The backend the log actually used.
    pub backend: &'static str,
    pub record_bytes: u64,
    pub writers: usize,
    /// The writers are async tasks (awaiting `Log::append_batch_async` on a tokio runtime with
    /// one worker per CPU) rather than OS threads blocked in `Log::append`.
    pub tasks: bool,
    pub records: u64,
    pub secs: f64,
    pub lat: Latency,
    /// Whether the log's next segment had been prepared (zero-filled in the background) when
    /// timing started; until it is, that preparation competes with the appends for the disk.
    pub next_segment_prepared: bool,
    /// Segment files at the end of the cell.
    pub segments: usize,
    /// Groups written and fsynced while the cell was timed (`None`: not counted).
    pub flushes: Option<u64>,
}

/// The naive group commit (`src/cli/naive.rs`) in one durable cell, run back to back with
/// sitelog's cells of the same record size and writers.
#[derive(Debug, Clone)]
pub struct BaselineCell {
    pub record_bytes: u64,
    pub writers: usize,
    pub tasks: bool,
    pub records: u64,
    pub secs: f64,
    pub lat: Latency,
    pub flushes: u64,
}

impl BaselineCell {
    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.secs
    }

    fn json(&self) -> Json {
        Json::obj([
            ("records", self.records.into()),
            ("seconds", round(self.secs, 4).into()),
            ("records_per_s", round(self.records_per_s(), 1).into()),
            ("latency", self.lat.json()),
            ("flushes", self.flushes.into()),
            (
                "records_per_flush",
                per_flush(self.records, Some(self.flushes)).into(),
            ),
        ])
    }
}

/// Records per fsynced group, rounded; `None` when not counted or nothing was flushed.
fn per_flush(records: u64, flushes: Option<u64>) -> Option<f64> {
    flushes
        .filter(|&f| f > 0)
        .map(|f| round(records as f64 / f as f64, 1))
}

/// Which stall a [`StallRun`] looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallKind {
    /// The first appends (one writer) right after the log is opened.
    Open,
    /// Appends from several writers into small segments, so that segments roll meanwhile.
    Roll,
}

impl StallKind {
    pub fn key(self) -> &'static str {
        match self {
            StallKind::Open => "open",
            StallKind::Roll => "roll",
        }
    }
}

/// One stall measurement of sitelog (a backend) or of the naive baseline (`"naive"`).
#[derive(Debug, Clone)]
pub struct StallRun {
    pub backend: &'static str,
    pub kind: StallKind,
    pub record_bytes: u64,
    pub writers: usize,
    pub segment_bytes: u64,
    pub records: u64,
    pub secs: f64,
    pub lat: Latency,
    /// Segment files (sitelog) or files (naive) at the end.
    pub segments: u64,
    pub flushes: Option<u64>,
}

impl StallRun {
    fn json(&self) -> Json {
        Json::obj([
            ("backend", self.backend.into()),
            ("kind", self.kind.key().into()),
            ("record_bytes", self.record_bytes.into()),
            ("writers", self.writers.into()),
            ("segment_bytes", self.segment_bytes.into()),
            ("records", self.records.into()),
            ("seconds", round(self.secs, 4).into()),
            (
                "records_per_s",
                round(self.records as f64 / self.secs, 1).into(),
            ),
            ("latency", self.lat.json()),
            ("max_us", round(self.lat.max_us, 1).into()),
            ("segments", self.segments.into()),
            ("flushes", self.flushes.into()),
            (
                "records_per_flush",
                per_flush(self.records, self.flushes).into(),
            ),
        ])
    }
}

/// How a durable cell's writers are named: `tasks` (async) or `threads`.
pub fn writer_kind(tasks: bool) -> &'static str {
    if tasks {
        "tasks"
    } else {
        "threads"
    }
}

impl DurableCell {
    /// `threads` or `tasks`.
    pub fn kind(&self) -> &'static str {
        writer_kind(self.tasks)
    }

    /// How target names refer to this cell's writers, e.g. `64 writers`, `64 async tasks`.
    fn writers_name(writers: usize, tasks: bool) -> String {
        match (tasks, writers) {
            (false, 1) => "1 writer".into(),
            (false, w) => format!("{w} writers"),
            (true, 1) => "1 async task".into(),
            (true, w) => format!("{w} async tasks"),
        }
    }

    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.secs
    }

    /// Payload megabytes per second.
    pub fn mb_per_s(&self) -> f64 {
        mb_per_s(self.records * self.record_bytes, self.secs)
    }

    /// The raw loop's group size this cell is compared with, and whether by bandwidth only.
    pub fn base_group(&self) -> (u64, bool) {
        if self.record_bytes >= BANDWIDTH_GROUP_BYTES {
            (BANDWIDTH_GROUP_BYTES, true)
        } else {
            (self.record_bytes * self.writers as u64, false)
        }
    }
}

/// A buffered write of a log (`SyncMode::Manual` batches, then one sync).
#[derive(Debug, Clone, Default)]
pub struct BufferedRun {
    pub backend: &'static str,
    /// Payload bytes.
    pub bytes: u64,
    pub records: u64,
    /// Until the last `append_batch` returned.
    pub write_secs: f64,
    /// Including the final `sync()`.
    pub total_secs: f64,
    /// Bytes of segment files afterwards.
    pub file_bytes: u64,
    pub segments: usize,
}

impl BufferedRun {
    pub fn new(backend: Backend) -> Self {
        BufferedRun {
            backend: backend.name(),
            ..Default::default()
        }
    }
}

/// One sequential read of a log, with the raw read of its segment files in the same state.
#[derive(Debug, Clone)]
pub struct ReadRun {
    pub backend: &'static str,
    pub cold: bool,
    pub records: u64,
    /// Payload bytes read.
    pub bytes: u64,
    pub secs: f64,
    /// The reopen before the cold read.
    pub open_secs: Option<f64>,
    /// The raw read: bytes of the segment files and its seconds.
    pub raw_bytes: u64,
    pub raw_secs: f64,
}

/// What preceded a reopen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReopenKind {
    Clean,
    /// After a clean close and with the page cache dropped.
    CleanCold,
    /// The first open after a writing child was killed with SIGKILL.
    Killed,
}

impl ReopenKind {
    fn name(self) -> &'static str {
        match self {
            ReopenKind::Clean => "clean close",
            ReopenKind::CleanCold => "clean close, cache dropped",
            ReopenKind::Killed => "kill -9 of a writer",
        }
    }

    fn key(self) -> &'static str {
        match self {
            ReopenKind::Clean => "clean",
            ReopenKind::CleanCold => "clean_cold",
            ReopenKind::Killed => "kill9",
        }
    }
}

/// Timed opens of the reopen log.
#[derive(Debug, Clone)]
pub struct ReopenRun {
    pub backend: &'static str,
    pub kind: ReopenKind,
    pub times: Vec<Duration>,
    pub report: RecoveryReport,
    /// Bytes of segment files.
    pub log_bytes: u64,
    /// After a kill: one past the highest offset the child acknowledged.
    pub acked_end: Option<u64>,
}

impl ReopenRun {
    fn sorted(&self) -> Vec<Duration> {
        let mut t = self.times.clone();
        t.sort();
        t
    }

    /// The first open (after the long write and its clean close, or right after the kill).
    pub fn first(&self) -> Duration {
        self.times.first().copied().unwrap_or_default()
    }

    pub fn min(&self) -> Duration {
        self.sorted().first().copied().unwrap_or_default()
    }

    pub fn median(&self) -> Duration {
        let t = self.sorted();
        t.get(t.len() / 2).copied().unwrap_or_default()
    }
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Results {
    pub meta: Meta,
    pub notes: Vec<String>,
    pub raw: Vec<RawLoop>,
    pub durable: Vec<DurableCell>,
    /// The naive group commit, one per durable cell (record size, writers, kind).
    pub baseline: Vec<BaselineCell>,
    /// Max latency right after open and across segment rolls, sitelog and naive.
    pub stalls: Vec<StallRun>,
    pub buffered_raw: Option<BufferedTimes>,
    pub buffered: Vec<BufferedRun>,
    pub read: Vec<ReadRun>,
    /// Cold sequential reads by record size against a plain read of the same files.
    pub cold_reads: Vec<super::coldread::ColdRead>,
    pub reopen_build: Option<BufferedRun>,
    pub reopen: Vec<ReopenRun>,
}

/// A target of the issue, checked against one measurement.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub backend: &'static str,
    /// What was measured, e.g. `1.62× raw`.
    pub measured: String,
    pub value: f64,
    pub limit: f64,
    /// `true` if `value >= limit` passes, `false` if `value <= limit` does.
    pub at_least: bool,
    /// Why the target does not apply to this run, if it does not.
    pub not_applicable: Option<String>,
}

impl Target {
    pub fn pass(&self) -> Option<bool> {
        if self.not_applicable.is_some() {
            return None;
        }
        Some(if self.at_least {
            self.value >= self.limit
        } else {
            self.value <= self.limit
        })
    }

    fn mark(&self) -> &'static str {
        match self.pass() {
            Some(true) => "✓",
            Some(false) => "✗",
            None => "–",
        }
    }
}

impl Results {
    fn raw_loop(&self, file: RawFile, group: u64) -> Option<&RawLoop> {
        self.raw
            .iter()
            .find(|l| l.file == file && l.group_bytes == group)
    }

    /// Sitelog's payload bandwidth ÷ the raw loop's at the cell's base group size. For cells
    /// compared by group, this equals records/s ÷ (raw fsyncs/s × writers).
    pub fn durable_ratio(&self, cell: &DurableCell, file: RawFile) -> Option<f64> {
        let (group, _) = cell.base_group();
        let raw = self.raw_loop(file, group)?;
        Some(cell.mb_per_s() / raw.mb_per_s())
    }

    /// The ratio against the faster of the two raw loops (the stricter comparison).
    fn durable_ratio_strict(&self, cell: &DurableCell) -> Option<f64> {
        let f = self.durable_ratio(cell, RawFile::Fresh);
        let p = self.durable_ratio(cell, RawFile::Prewritten);
        match (f, p) {
            (Some(f), Some(p)) => Some(f.min(p)),
            (f, p) => f.or(p),
        }
    }

    fn cell(
        &self,
        backend: &str,
        record: u64,
        writers: usize,
        tasks: bool,
    ) -> Option<&DurableCell> {
        self.durable.iter().find(|c| {
            c.backend == backend
                && c.record_bytes == record
                && c.writers == writers
                && c.tasks == tasks
        })
    }

    /// The naive group commit's run of `cell`'s record size, writers and kind.
    pub fn baseline_of(&self, cell: &DurableCell) -> Option<&BaselineCell> {
        self.baseline.iter().find(|b| {
            b.record_bytes == cell.record_bytes
                && b.writers == cell.writers
                && b.tasks == cell.tasks
        })
    }

    /// Sitelog's records/s ÷ the naive group commit's in the same cell.
    pub fn baseline_ratio(&self, cell: &DurableCell) -> Option<f64> {
        let b = self.baseline_of(cell)?;
        (b.records > 0).then(|| cell.records_per_s() / b.records_per_s())
    }

    /// Issue 16's targets against the naive group commit: throughput and p999 of the 1 KiB
    /// cells, and the stalls.
    fn baseline_targets(&self, backend: &'static str, out: &mut Vec<Target>) {
        let cells = self
            .durable
            .iter()
            .filter(|c| c.backend == backend && c.record_bytes == 1 << 10);
        for c in cells {
            let (Some(b), Some(ratio)) = (self.baseline_of(c), self.baseline_ratio(c)) else {
                continue;
            };
            let who = DurableCell::writers_name(c.writers, c.tasks);
            let limit = if c.writers >= 8 { 1.3 } else { 1.0 };
            out.push(Target {
                name: format!("durable 1 KiB, {who}: throughput ≥ {limit}× naive group commit"),
                backend,
                measured: format!("{ratio:.2}×"),
                value: ratio,
                limit,
                at_least: true,
                not_applicable: None,
            });
            out.push(Target {
                name: format!("durable 1 KiB, {who}: p999 ≤ naive group commit's"),
                backend,
                measured: format!(
                    "{} µs vs {} µs",
                    fmt_us(c.lat.p999_us),
                    fmt_us(b.lat.p999_us)
                ),
                value: c.lat.p999_us,
                limit: b.lat.p999_us,
                at_least: false,
                not_applicable: None,
            });
        }
        for r in self.stalls.iter().filter(|r| r.backend == backend) {
            let what = match r.kind {
                StallKind::Open => "max append latency in the first 200 appends after open ≤ 5 ms",
                StallKind::Roll => "max append latency across segment rolls ≤ 5 ms",
            };
            let no_roll = r.kind == StallKind::Roll && r.segments < 2;
            let ms = r.lat.max_us / 1e3;
            out.push(Target {
                name: what.into(),
                backend,
                measured: format!("{ms:.2} ms"),
                value: ms,
                limit: 5.0,
                at_least: false,
                not_applicable: no_roll.then(|| "no segment rolled during the run".to_string()),
            });
        }
    }

    fn buffered_ratio(&self, run: &BufferedRun) -> Option<f64> {
        let raw = self.buffered_raw?;
        Some(mb_per_s(run.bytes, run.total_secs) / mb_per_s(raw.bytes, raw.total_secs))
    }

    /// The targets of the issue, per backend, for what this run measured.
    pub fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        for &backend in &self.meta.backends {
            // (record bytes, writers, what is compared, limit, raw file or the stricter of both)
            let durable: [(u64, usize, &str, f64, Option<RawFile>); 4] = [
                (
                    1 << 10,
                    1,
                    "≥ 1.5× raw loop into a fresh file (group 1 KiB)",
                    1.5,
                    Some(RawFile::Fresh),
                ),
                (
                    1 << 10,
                    64,
                    "≥ 1.5× raw loop at group 64 (64 KiB; faster of fresh/pre-written)",
                    1.5,
                    None,
                ),
                (
                    1 << 10,
                    256,
                    "≥ 0.7× raw bandwidth with 1 MiB writes (faster of fresh/pre-written)",
                    0.7,
                    None,
                ),
                (
                    1 << 20,
                    256,
                    "≥ 0.7× raw bandwidth with 1 MiB writes (faster of fresh/pre-written)",
                    0.7,
                    None,
                ),
            ];
            let kinds = durable
                .into_iter()
                .flat_map(|d| [false, true].map(|tasks| (d, tasks)));
            for ((record, writers, what, limit, file), tasks) in kinds {
                let Some(cell) = self.cell(backend, record, writers, tasks) else {
                    continue;
                };
                let name = format!(
                    "durable {}, {} {what}",
                    fmt_bytes(record),
                    DurableCell::writers_name(writers, tasks)
                );
                let value = if writers == 256 {
                    let raw = [RawFile::Fresh, RawFile::Prewritten]
                        .into_iter()
                        .filter_map(|f| self.raw_loop(f, BANDWIDTH_GROUP_BYTES))
                        .map(RawLoop::mb_per_s)
                        .fold(0.0, f64::max);
                    (raw > 0.0).then(|| cell.mb_per_s() / raw)
                } else {
                    match file {
                        Some(f) => self.durable_ratio(cell, f),
                        None => self.durable_ratio_strict(cell),
                    }
                };
                let Some(value) = value else { continue };
                out.push(Target {
                    name,
                    backend,
                    measured: format!("{value:.2}×"),
                    value,
                    limit,
                    at_least: true,
                    not_applicable: None,
                });
            }
            self.baseline_targets(backend, &mut out);
            for run in self.buffered.iter().filter(|r| r.backend == backend) {
                if let Some(value) = self.buffered_ratio(run) {
                    out.push(Target {
                        name: "buffered append + one sync ≥ 0.95× raw pwrite + fdatasync".into(),
                        backend,
                        measured: format!("{value:.2}×"),
                        value,
                        limit: 0.95,
                        at_least: true,
                        not_applicable: None,
                    });
                }
            }
            for run in self.reopen.iter().filter(|r| r.backend == backend) {
                let (name, limit, took) = match run.kind {
                    ReopenKind::Clean => (
                        "reopen of a 1 GiB log after clean close ≤ 20 ms (first open after the close)",
                        20.0,
                        run.first(),
                    ),
                    ReopenKind::Killed => (
                        "reopen of a 1 GiB log after kill -9 ≤ 50 ms (first open after the kill)",
                        50.0,
                        run.first(),
                    ),
                    ReopenKind::CleanCold => continue,
                };
                let ms = took.as_secs_f64() * 1e3;
                out.push(Target {
                    name: name.into(),
                    backend,
                    measured: format!("{ms:.1} ms"),
                    value: ms,
                    limit,
                    at_least: false,
                    not_applicable: (run.log_bytes < REOPEN_TARGET_LOG_BYTES)
                        .then(|| format!("the log is {}, not 1 GiB", fmt_bytes(run.log_bytes))),
                });
            }
        }
        out
    }

    /// The target column of a durable cell.
    fn cell_target(&self, targets: &[Target], cell: &DurableCell) -> String {
        let prefix = format!(
            "durable {}, {} ",
            fmt_bytes(cell.record_bytes),
            DurableCell::writers_name(cell.writers, cell.tasks)
        );
        targets
            .iter()
            .find(|t| t.backend == cell.backend && t.name.starts_with(&prefix))
            .map(|t| {
                let what = if t.name.contains("bandwidth") {
                    "raw 1 MiB bw"
                } else if t.name.contains("fresh file") {
                    "fresh"
                } else {
                    "raw"
                };
                format!("{} ≥{}× {what}", t.mark(), t.limit)
            })
            .unwrap_or_default()
    }

    /// Sitelog beside the naive group commit, cell by cell.
    fn baseline_table(&self, targets: &[Target]) -> String {
        let mut out = String::from(
            "\nDurable append against the naive group commit (src/cli/naive.rs: one mutex, the \
             first waiter writes all queued with one pwrite + one fdatasync into a file it \
             extends; async tasks call it through spawn_blocking), run back to back in each \
             cell; ×naive = records/s ÷ naive records/s; rec/flush = records per fsynced group\n",
        );
        let mut t = Table::new(
            &[
                "backend",
                "record",
                "W",
                "rec/s",
                "naive rec/s",
                "×naive",
                "p999 µs",
                "naive p999",
                "max µs",
                "naive max",
                "rec/flush",
                "naive rec/flush",
                "target",
            ],
            3,
        );
        for c in &self.durable {
            let Some(b) = self.baseline_of(c) else {
                continue;
            };
            let prefix = format!(
                "durable {}, {}: ",
                fmt_bytes(c.record_bytes),
                DurableCell::writers_name(c.writers, c.tasks)
            );
            let marks: String = targets
                .iter()
                .filter(|t| t.backend == c.backend && t.name.starts_with(&prefix))
                .map(|t| t.mark())
                .collect();
            let opt = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{x:.1}"));
            t.row(vec![
                c.backend.into(),
                fmt_bytes(c.record_bytes),
                format!("{} {}", c.writers, c.kind()),
                fmt_rate(c.records_per_s()),
                fmt_rate(b.records_per_s()),
                fmt_ratio(self.baseline_ratio(c)),
                fmt_us(c.lat.p999_us),
                fmt_us(b.lat.p999_us),
                fmt_us(c.lat.max_us),
                fmt_us(b.lat.max_us),
                opt(per_flush(c.records, c.flushes)),
                opt(per_flush(b.records, Some(b.flushes))),
                marks,
            ]);
        }
        out.push_str(&t.render());
        out
    }

    /// The stall measurements: max latency after open and across rolls.
    fn stall_table(&self, targets: &[Target]) -> String {
        let mut out = String::from(
            "\nStalls: open = the first appends of one writer right after opening a new log; \
             roll = W writers into small segments, so that segments roll during the run \
             (naive = the naive group commit)\n",
        );
        let mut t = Table::new(
            &[
                "backend", "stall", "record", "W", "segment", "appends", "segments", "rec/s",
                "p50 µs", "p999 µs", "max µs", "target",
            ],
            2,
        );
        for r in &self.stalls {
            let prefix = match r.kind {
                StallKind::Open => "max append latency in the first",
                StallKind::Roll => "max append latency across",
            };
            let mark = targets
                .iter()
                .find(|t| t.backend == r.backend && t.name.starts_with(prefix))
                .map(|t| format!("{} ≤{} ms", t.mark(), t.limit))
                .unwrap_or_default();
            t.row(vec![
                r.backend.into(),
                r.kind.key().into(),
                fmt_bytes(r.record_bytes),
                r.writers.to_string(),
                fmt_bytes(r.segment_bytes),
                r.records.to_string(),
                r.segments.to_string(),
                fmt_rate(r.records as f64 / r.secs),
                fmt_us(r.lat.p50_us),
                fmt_us(r.lat.p999_us),
                fmt_us(r.lat.max_us),
                mark,
            ]);
        }
        out.push_str(&t.render());
        out
    }

    /// The tables.
    pub fn text(&self) -> String {
        let m = &self.meta;
        let mut out = format!(
            "sitelog bench: {} CPUs, Linux {}, {} at {}; load average {} at the start, {} at \
             the end\n{} s per durable cell and raw loop{}; backends: {}; workloads: {}; total \
             {:.0} s\n",
            m.cpus,
            m.kernel,
            m.fs,
            m.dir.display(),
            m.load_start.map_or("?".into(), |l| format!("{l:.2}")),
            m.load_end.map_or("?".into(), |l| format!("{l:.2}")),
            m.seconds,
            if m.quick { " (--quick)" } else { "" },
            if m.backends.is_empty() {
                "none".to_string()
            } else {
                m.backends.join(", ")
            },
            m.workloads.join(", "),
            m.total_secs,
        );
        let targets = self.targets();
        if !self.raw.is_empty() {
            out.push_str(
                "\nRaw loop: one thread, pwrite(group) + fdatasync, sequential; fresh = new file \
                 extended by every write, pre-written = file of written zeros overwritten\n",
            );
            let mut t = Table::new(
                &[
                    "group", "file", "fsync/s", "MB/s", "p50 µs", "p99 µs", "p999 µs",
                ],
                2,
            );
            let mut sorted: Vec<&RawLoop> = self.raw.iter().collect();
            sorted.sort_by_key(|l| (l.group_bytes, l.file == RawFile::Prewritten));
            for l in sorted {
                t.row(vec![
                    fmt_bytes(l.group_bytes),
                    l.file.name().into(),
                    fmt_rate(l.fsyncs_per_s()),
                    fmt_mbs(l.mb_per_s()),
                    fmt_us(l.lat.p50_us),
                    fmt_us(l.lat.p99_us),
                    fmt_us(l.lat.p999_us),
                ]);
            }
            out.push_str(&t.render());
        }
        if !self.durable.is_empty() {
            out.push_str(
                "\nDurable append (SyncMode::Always; W writers, each appending one record at a time: \
                 OS threads blocked in Log::append, or async tasks awaiting append_batch_async \
                 on a runtime with one worker per CPU; MB/s of payload; latency of each append)\n\
                 ratio = records/s ÷ raw records/s at group = record × W (raw records/s = fsync/s × W); \
                 1 MiB records: bandwidth ÷ raw bandwidth at group 1 MiB\n",
            );
            let mut t = Table::new(
                &[
                    "backend",
                    "record",
                    "W",
                    "rec/s",
                    "MB/s",
                    "p50 µs",
                    "p99 µs",
                    "p999 µs",
                    "raw group",
                    "×fresh",
                    "×pre-wr",
                    "next seg ready",
                    "target",
                ],
                3,
            );
            for c in &self.durable {
                let (group, bw) = c.base_group();
                t.row(vec![
                    c.backend.into(),
                    fmt_bytes(c.record_bytes),
                    format!("{} {}", c.writers, c.kind()),
                    fmt_rate(c.records_per_s()),
                    fmt_mbs(c.mb_per_s()),
                    fmt_us(c.lat.p50_us),
                    fmt_us(c.lat.p99_us),
                    fmt_us(c.lat.p999_us),
                    format!("{}{}", fmt_bytes(group), if bw { " (bw)" } else { "" }),
                    fmt_ratio(self.durable_ratio(c, RawFile::Fresh)),
                    fmt_ratio(self.durable_ratio(c, RawFile::Prewritten)),
                    if c.next_segment_prepared { "yes" } else { "no" }.into(),
                    self.cell_target(&targets, c),
                ]);
            }
            out.push_str(&t.render());
        }
        if !self.baseline.is_empty() {
            out.push_str(&self.baseline_table(&targets));
        }
        if !self.stalls.is_empty() {
            out.push_str(&self.stall_table(&targets));
        }
        if !self.buffered.is_empty() {
            out.push_str(
                "\nBuffered append (SyncMode::Manual, append_batch of 64 × 1 KiB, then one sync()); \
                 raw = 64 KiB pwrites into a fresh file, then one fdatasync; MB/s of payload\n",
            );
            let mut t = Table::new(
                &[
                    "backend",
                    "size",
                    "append MB/s",
                    "+ sync MB/s",
                    "×raw",
                    "target",
                ],
                2,
            );
            if let Some(raw) = self.buffered_raw {
                t.row(vec![
                    "raw".into(),
                    fmt_bytes(raw.bytes),
                    fmt_mbs(mb_per_s(raw.bytes, raw.write_secs)),
                    fmt_mbs(mb_per_s(raw.bytes, raw.total_secs)),
                    String::new(),
                    String::new(),
                ]);
            }
            for r in &self.buffered {
                let target = targets
                    .iter()
                    .find(|t| t.backend == r.backend && t.name.starts_with("buffered"))
                    .map(|t| format!("{} ≥{}×", t.mark(), t.limit))
                    .unwrap_or_default();
                t.row(vec![
                    r.backend.into(),
                    fmt_bytes(r.bytes),
                    fmt_mbs(mb_per_s(r.bytes, r.write_secs)),
                    fmt_mbs(mb_per_s(r.bytes, r.total_secs)),
                    fmt_ratio(self.buffered_ratio(r)),
                    target,
                ]);
            }
            out.push_str(&t.render());
        }
        if !self.read.is_empty() || m.cold_reason.is_some() && m.workloads.contains(&"read") {
            out.push_str(
                "\nSequential read (reopen, then Log::iter over everything: checksums verified, \
                 offsets and payloads checked); raw = 1 MiB reads of the segment files; \
                 ratio = raw time ÷ sitelog time\n",
            );
            let mut t = Table::new(
                &[
                    "backend", "cache", "reopen", "records", "rec/s", "MB/s", "raw MB/s", "×raw",
                ],
                2,
            );
            for r in &self.read {
                t.row(vec![
                    r.backend.into(),
                    if r.cold { "cold" } else { "warm" }.into(),
                    r.open_secs
                        .map(|s| fmt_ms(Duration::from_secs_f64(s)))
                        .unwrap_or_default(),
                    r.records.to_string(),
                    fmt_rate(r.records as f64 / r.secs),
                    fmt_mbs(mb_per_s(r.bytes, r.secs)),
                    fmt_mbs(mb_per_s(r.raw_bytes, r.raw_secs)),
                    fmt_ratio(Some(r.raw_secs / r.secs)),
                ]);
            }
            out.push_str(&t.render());
            if let Some(reason) = &m.cold_reason {
                out.push_str(&format!(" cold: not permitted ({reason})\n"));
            }
        }
        if !self.cold_reads.is_empty() {
            out.push_str(&format!(
                "\nCold sequential read by record size (page cache dropped before each read; \
                 Log::iter over every record after Log::open, against 1 MiB reads of the same \
                 segment files; {} rounds, the plain read first in every other; ratio = plain \
                 time ÷ sitelog time; target ≥ 0.90×)\n",
                super::coldread::ROUNDS
            ));
            for c in &self.cold_reads {
                out.push_str(&c.text_line());
            }
        }
        if !self.reopen.is_empty() {
            let size = self
                .reopen_build
                .as_ref()
                .map(|b| {
                    format!(
                        "log of {} records of 1 KiB ({} of payload) in {} segments, written \
                         (Manual, batches of 1024, one sync) at {} MB/s",
                        b.records,
                        fmt_bytes(b.bytes),
                        b.segments,
                        fmt_mbs(mb_per_s(b.bytes, b.total_secs))
                    )
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "\nReopen (Log::open; {size})\nclean: {} opens in a row after the writer's close, \
                 the first counts; kill -9: a child appending 1 KiB records durably from 4 \
                 threads is SIGKILLed after 2000 acks, the first open after it counts\n",
                self.reopen
                    .iter()
                    .find(|r| r.kind == ReopenKind::Clean)
                    .map_or(0, |r| r.times.len())
            ));
            let mut t = Table::new(
                &[
                    "backend",
                    "after",
                    "first",
                    "min",
                    "median",
                    "segments",
                    "tail records scanned",
                    "torn bytes cut",
                    "temp files removed",
                    "target",
                ],
                2,
            );
            for r in &self.reopen {
                let target = targets
                    .iter()
                    .find(|t| {
                        t.backend == r.backend
                            && t.name.starts_with("reopen")
                            && (t.name.contains("kill") == (r.kind == ReopenKind::Killed))
                            && r.kind != ReopenKind::CleanCold
                    })
                    .map(|t| format!("{} ≤{} ms", t.mark(), t.limit))
                    .unwrap_or_default();
                t.row(vec![
                    r.backend.into(),
                    r.kind.name().into(),
                    fmt_ms(r.first()),
                    fmt_ms(r.min()),
                    fmt_ms(r.median()),
                    r.report.segments.to_string(),
                    r.report.tail_records_scanned.to_string(),
                    r.report.torn_bytes_truncated.to_string(),
                    r.report.temp_files_removed.to_string(),
                    target,
                ]);
            }
            out.push_str(&t.render());
        }
        if !targets.is_empty() {
            out.push_str("\nTargets\n");
            for t in &targets {
                out.push_str(&format!(
                    " {} {:<8} {}: {}{}\n",
                    t.mark(),
                    t.backend,
                    t.name,
                    t.measured,
                    t.not_applicable
                        .as_ref()
                        .map(|r| format!(" (not applicable: {r})"))
                        .unwrap_or_default()
                ));
            }
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }

    /// The JSON object.
    pub fn json(&self) -> Json {
        let m = &self.meta;
        let targets = self.targets();
        let raw: Vec<Json> = self
            .raw
            .iter()
            .map(|l| {
                Json::obj([
                    ("file", l.file.name().into()),
                    ("group_bytes", l.group_bytes.into()),
                    ("fsyncs", l.fsyncs.into()),
                    ("seconds", round(l.secs, 4).into()),
                    ("fsyncs_per_s", round(l.fsyncs_per_s(), 1).into()),
                    ("mb_per_s", round(l.mb_per_s(), 2).into()),
                    ("latency", l.lat.json()),
                ])
            })
            .collect();
        let durable: Vec<Json> = self
            .durable
            .iter()
            .map(|c| {
                let (group, bw) = c.base_group();
                let raw_rps = |f| {
                    self.raw_loop(f, group)
                        .filter(|_| !bw)
                        .map(|l| round(l.fsyncs_per_s() * c.writers as f64, 1))
                };
                Json::obj([
                    ("backend", c.backend.into()),
                    ("record_bytes", c.record_bytes.into()),
                    ("writers", c.writers.into()),
                    ("writer_kind", c.kind().into()),
                    ("records", c.records.into()),
                    ("seconds", round(c.secs, 4).into()),
                    ("records_per_s", round(c.records_per_s(), 1).into()),
                    ("mb_per_s", round(c.mb_per_s(), 2).into()),
                    ("latency", c.lat.json()),
                    ("raw_group_bytes", group.into()),
                    ("compared_by_bandwidth", bw.into()),
                    ("raw_fresh_records_per_s", raw_rps(RawFile::Fresh).into()),
                    (
                        "raw_prewritten_records_per_s",
                        raw_rps(RawFile::Prewritten).into(),
                    ),
                    (
                        "ratio_fresh",
                        self.durable_ratio(c, RawFile::Fresh)
                            .map(|r| round(r, 3))
                            .into(),
                    ),
                    (
                        "ratio_prewritten",
                        self.durable_ratio(c, RawFile::Prewritten)
                            .map(|r| round(r, 3))
                            .into(),
                    ),
                    ("next_segment_prepared", c.next_segment_prepared.into()),
                    ("segments", c.segments.into()),
                    ("p999_us", round(c.lat.p999_us, 1).into()),
                    ("max_us", round(c.lat.max_us, 1).into()),
                    ("flushes", c.flushes.into()),
                    ("records_per_flush", per_flush(c.records, c.flushes).into()),
                    (
                        "baseline",
                        self.baseline_of(c).map(BaselineCell::json).into(),
                    ),
                    (
                        "ratio_baseline",
                        self.baseline_ratio(c).map(|r| round(r, 3)).into(),
                    ),
                    (
                        "baseline_p999_us",
                        self.baseline_of(c).map(|b| round(b.lat.p999_us, 1)).into(),
                    ),
                    (
                        "baseline_max_us",
                        self.baseline_of(c).map(|b| round(b.lat.max_us, 1)).into(),
                    ),
                ])
            })
            .collect();
        let buffered_raw = self.buffered_raw.map(|r| {
            Json::obj([
                ("bytes", r.bytes.into()),
                (
                    "write_mb_per_s",
                    round(mb_per_s(r.bytes, r.write_secs), 2).into(),
                ),
                ("mb_per_s", round(mb_per_s(r.bytes, r.total_secs), 2).into()),
                ("seconds", round(r.total_secs, 4).into()),
            ])
        });
        let buffered: Vec<Json> = self
            .buffered
            .iter()
            .map(|r| {
                Json::obj([
                    ("backend", r.backend.into()),
                    ("bytes", r.bytes.into()),
                    ("records", r.records.into()),
                    (
                        "write_mb_per_s",
                        round(mb_per_s(r.bytes, r.write_secs), 2).into(),
                    ),
                    ("mb_per_s", round(mb_per_s(r.bytes, r.total_secs), 2).into()),
                    ("seconds", round(r.total_secs, 4).into()),
                    ("file_bytes", r.file_bytes.into()),
                    ("ratio", self.buffered_ratio(r).map(|x| round(x, 3)).into()),
                ])
            })
            .collect();
        let read: Vec<Json> = self
            .read
            .iter()
            .map(|r| {
                Json::obj([
                    ("backend", r.backend.into()),
                    ("cache", if r.cold { "cold" } else { "warm" }.into()),
                    ("records", r.records.into()),
                    ("bytes", r.bytes.into()),
                    ("seconds", round(r.secs, 4).into()),
                    ("records_per_s", round(r.records as f64 / r.secs, 1).into()),
                    ("mb_per_s", round(mb_per_s(r.bytes, r.secs), 2).into()),
                    ("reopen_ms", r.open_secs.map(|s| round(s * 1e3, 3)).into()),
                    (
                        "raw_mb_per_s",
                        round(mb_per_s(r.raw_bytes, r.raw_secs), 2).into(),
                    ),
                    ("ratio", round(r.raw_secs / r.secs, 3).into()),
                ])
            })
            .collect();
        let reopen: Vec<Json> = self
            .reopen
            .iter()
            .map(|r| {
                let ms = |d: Duration| round(d.as_secs_f64() * 1e3, 3);
                Json::obj([
                    ("backend", r.backend.into()),
                    ("after", r.kind.key().into()),
                    ("log_bytes", r.log_bytes.into()),
                    (
                        "times_ms",
                        Json::Arr(r.times.iter().map(|&d| ms(d).into()).collect()),
                    ),
                    ("first_ms", ms(r.first()).into()),
                    ("min_ms", ms(r.min()).into()),
                    ("median_ms", ms(r.median()).into()),
                    ("segments", r.report.segments.into()),
                    ("tail_records_scanned", r.report.tail_records_scanned.into()),
                    ("torn_bytes_truncated", r.report.torn_bytes_truncated.into()),
                    ("temp_files_removed", r.report.temp_files_removed.into()),
                    ("acked_end", r.acked_end.into()),
                ])
            })
            .collect();
        let targets: Vec<Json> = targets
            .iter()
            .map(|t| {
                Json::obj([
                    ("name", t.name.clone().into()),
                    ("backend", t.backend.into()),
                    ("value", round(t.value, 3).into()),
                    ("limit", t.limit.into()),
                    ("at_least", t.at_least.into()),
                    ("pass", t.pass().into()),
                    ("not_applicable", t.not_applicable.clone().into()),
                ])
            })
            .collect();
        Json::obj([
            ("tool", "sitelog bench".into()),
            ("version", env!("CARGO_PKG_VERSION").into()),
            ("cpus", m.cpus.into()),
            ("kernel", m.kernel.clone().into()),
            ("fs", m.fs.clone().into()),
            ("dir", m.dir.display().to_string().into()),
            ("seconds_per_cell", m.seconds.into()),
            ("quick", m.quick.into()),
            (
                "backends",
                Json::Arr(m.backends.iter().map(|&b| b.into()).collect()),
            ),
            (
                "workloads",
                Json::Arr(m.workloads.iter().map(|&w| w.into()).collect()),
            ),
            ("cold_not_permitted", m.cold_reason.clone().into()),
            ("total_seconds", round(m.total_secs, 2).into()),
            ("load_average_start", m.load_start.into()),
            ("load_average_end", m.load_end.into()),
            ("free_bytes", m.disk.free_bytes.into()),
            ("disk_budget_bytes", m.disk.bytes.into()),
            ("segment_bytes", m.disk.segment_bytes.into()),
            ("raw", Json::Arr(raw)),
            ("durable", Json::Arr(durable)),
            (
                "stalls",
                Json::Arr(self.stalls.iter().map(StallRun::json).collect()),
            ),
            ("buffered_raw", buffered_raw.into()),
            ("buffered", Json::Arr(buffered)),
            ("read", Json::Arr(read)),
            (
                "cold_reads",
                Json::Arr(self.cold_reads.iter().map(|c| c.json()).collect()),
            ),
            ("reopen", Json::Arr(reopen)),
            ("targets", Json::Arr(targets)),
            (
                "notes",
                Json::Arr(self.notes.iter().map(|n| n.clone().into()).collect()),
            ),
        ])
    }
}
