//! Benchmarks of the local log: buffered and durable appends (each against a plain-file baseline:
//! `pwrite`, and `pwrite` + `fdatasync`), group commit, sequential iteration, random reads and
//! reopening. The read benchmarks' 64 MiB log is written even when a filter skips them.
//!
//! Run with `cargo bench --bench log`. Logs live in fresh temporary directories under
//! `$SITELOG_BENCH_DIR` if set, else the system temp dir; a warning is printed if that is a
//! tmpfs, since durable-append figures are meaningless without a real disk.
//!
//! Append benchmarks time whole runs of appends with `iter_custom`. A log (or baseline file) is
//! thrown away and recreated, untimed, before it would hold [`APPEND_CAP_BYTES`] of frames, so
//! files never grow without bound and no timed run includes a segment seal or a segment
//! creation (both fsync): the figures are the steady-state cost of appending inside a segment.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sitelog::storage::record::frame_len;
use sitelog::storage::segment::parse_file_name;
use sitelog::{Log, LogOptions, SyncMode};
use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Bytes of frames a log (or baseline file) may hold before it is recreated; below the default
/// 64 MiB segment size so that no timed append seals a segment.
const APPEND_CAP_BYTES: u64 = 48 << 20;
/// Records per batch in the batch benchmarks.
const BATCH: usize = 64;
/// Payload bytes written before the read benchmarks.
const READ_LOG_BYTES: u64 = 64 << 20;
/// Payload size of the records in the durable and read benchmarks.
const RECORD_BYTES: usize = 1 << 10;

fn label(size: usize) -> String {
    if size >= 1 << 10 && size % (1 << 10) == 0 {
        format!("{}KiB", size >> 10)
    } else {
        format!("{size}B")
    }
}

/// Where the benchmark directories go; warns once if it is not a real disk.
fn bench_root() -> PathBuf {
    let root = std::env::var_os("SITELOG_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&root).expect("create bench root");
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let c_path = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).expect("path");
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` a writable statfs.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } == 0 && st.f_type as i64 == TMPFS_MAGIC {
        eprintln!(
            "WARNING: {} is a tmpfs; set SITELOG_BENCH_DIR to a directory on a real disk",
            root.display()
        );
    }
    root
}

fn bench_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("sitelog-bench-")
        .tempdir_in(bench_root())
        .expect("create temp dir")
}

/// Payload whose first 8 bytes are `tag` (little-endian), the rest pseudo-random.
fn payload(size: usize, tag: u64, rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut p: Vec<u8> = (0..size).map(|_| rng.u8(..)).collect();
    let n = size.min(8);
    p[..n].copy_from_slice(&tag.to_le_bytes()[..n]);
    p
}

/// Something appended to in timed runs and recreated, untimed, when it gets too big.
trait Target {
    fn reset(&mut self);
    fn written(&mut self) -> &mut u64;
}

/// Runs `iters` calls of `op`, timing them in runs that fit under [`APPEND_CAP_BYTES`].
fn timed_runs<T: Target>(
    target: &mut T,
    iters: u64,
    op_bytes: u64,
    mut op: impl FnMut(&mut T),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let room = APPEND_CAP_BYTES.saturating_sub(*target.written()) / op_bytes;
        if room == 0 {
            target.reset();
            continue;
        }
        let n = room.min(left);
        let start = Instant::now();
        for _ in 0..n {
            op(target);
        }
        total += start.elapsed();
        *target.written() += n * op_bytes;
        left -= n;
    }
    total
}

/// A log in its own temporary directory.
struct LogTarget {
    _tmp: TempDir,
    path: PathBuf,
    opts: LogOptions,
    log: Option<Log>,
    written: u64,
}

impl LogTarget {
    fn new(opts: LogOptions) -> Self {
        let tmp = bench_dir();
        let path = tmp.path().join("log");
        let mut t = LogTarget {
            _tmp: tmp,
            path,
            opts,
            log: None,
            written: 0,
        };
        t.reset();
        t
    }

    fn log(&self) -> &Log {
        self.log.as_ref().expect("log open")
    }
}

impl Target for LogTarget {
    fn reset(&mut self) {
        // Drop without `close`: nothing needs to be durable, and unlinking the files discards
        // their dirty pages instead of writing them back.
        self.log = None;
        if self.path.exists() {
            std::fs::remove_dir_all(&self.path).expect("remove log dir");
        }
        let log = Log::open(&self.path, self.opts.clone()).expect("open log");
        // Create the first segment (header and directory fsyncs) outside the timed runs.
        log.append(b"warm-up").expect("append");
        self.written = frame_len(7) as u64;
        self.log = Some(log);
    }

    fn written(&mut self) -> &mut u64 {
        &mut self.written
    }
}

/// The baseline: a plain file written with `pwrite` at its end, `fdatasync`ed if `sync`.
struct RawTarget {
    tmp: TempDir,
    sync: bool,
    file: Option<File>,
    generation: u64,
    written: u64,
}

impl RawTarget {
    fn new(sync: bool) -> Self {
        let mut t = RawTarget {
            tmp: bench_dir(),
            sync,
            file: None,
            generation: 0,
            written: 0,
        };
        t.reset();
        t
    }

    fn append(&mut self, buf: &[u8]) {
        let file = self.file.as_ref().expect("file open");
        file.write_all_at(buf, self.written).expect("pwrite");
        if self.sync {
            file.sync_data().expect("fdatasync");
        }
        // `timed_runs` adds the run's bytes afterwards; track the position here meanwhile.
        self.written += buf.len() as u64;
    }
}

impl Target for RawTarget {
    fn reset(&mut self) {
        self.file = None;
        let old = self.tmp.path().join(format!("raw-{}", self.generation));
        let _ = std::fs::remove_file(&old);
        self.generation += 1;
        let path = self.tmp.path().join(format!("raw-{}", self.generation));
        let file = File::options()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .expect("create raw file");
        // Make the file's creation durable outside the timed runs, as the log does.
        file.sync_all().expect("fsync");
        File::open(self.tmp.path())
            .and_then(|d| d.sync_all())
            .expect("fsync dir");
        self.file = Some(file);
        self.written = 0;
    }

    fn written(&mut self) -> &mut u64 {
        &mut self.written
    }
}

/// `timed_runs` for the raw target, whose `append` already advances `written`.
fn timed_raw_runs(target: &mut RawTarget, iters: u64, buf: &[u8]) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    let op_bytes = buf.len() as u64;
    while left > 0 {
        let room = APPEND_CAP_BYTES.saturating_sub(target.written) / op_bytes;
        if room == 0 {
            target.reset();
            continue;
        }
        let n = room.min(left);
        let start = Instant::now();
        for _ in 0..n {
            target.append(buf);
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

fn manual_opts() -> LogOptions {
    let mut opts = LogOptions::default();
    opts.sync = SyncMode::Manual;
    opts
}

/// Appends in `SyncMode::Manual` without any sync: encode, checksum and `pwrite` to the page
/// cache; against a plain `pwrite` of the same payload bytes (one per record, or one per batch).
fn append_buffered(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_buffered");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let mut rng = fastrand::Rng::with_seed(1);
    for size in [100, 1 << 10, 16 << 10] {
        let record = payload(size, 0, &mut rng);
        let batch: Vec<Vec<u8>> = (0..BATCH as u64)
            .map(|i| payload(size, i, &mut rng))
            .collect();
        let batch_flat: Vec<u8> = batch.concat();
        let frame = frame_len(size) as u64;

        group.throughput(Throughput::Bytes(size as u64));
        let mut target = LogTarget::new(manual_opts());
        group.bench_function(BenchmarkId::new("single", label(size)), |b| {
            b.iter_custom(|iters| {
                timed_runs(&mut target, iters, frame, |t| {
                    black_box(t.log().append(&record).expect("append"));
                })
            })
        });
        drop(target);
        let mut raw = RawTarget::new(false);
        group.bench_function(BenchmarkId::new("raw_pwrite_single", label(size)), |b| {
            b.iter_custom(|iters| timed_raw_runs(&mut raw, iters, &record))
        });
        drop(raw);

        group.throughput(Throughput::Bytes((size * BATCH) as u64));
        let mut target = LogTarget::new(manual_opts());
        group.bench_function(BenchmarkId::new("batch64", label(size)), |b| {
            b.iter_custom(|iters| {
                timed_runs(&mut target, iters, frame * BATCH as u64, |t| {
                    black_box(t.log().append_batch(&batch).expect("append"));
                })
            })
        });
        drop(target);
        let mut raw = RawTarget::new(false);
        group.bench_function(BenchmarkId::new("raw_pwrite_batch64", label(size)), |b| {
            b.iter_custom(|iters| timed_raw_runs(&mut raw, iters, &batch_flat))
        });
    }
    group.finish();
}

/// Appends in `SyncMode::Always` (default options), against `pwrite` + `fdatasync` of the same
/// payload bytes into a fresh file.
fn append_durable(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_durable");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let mut rng = fastrand::Rng::with_seed(2);
    let size = RECORD_BYTES;
    let record = payload(size, 0, &mut rng);
    let batch: Vec<Vec<u8>> = (0..BATCH as u64)
        .map(|i| payload(size, i, &mut rng))
        .collect();
    let batch_flat: Vec<u8> = batch.concat();
    let frame = frame_len(size) as u64;

    group.throughput(Throughput::Bytes(size as u64));
    let mut target = LogTarget::new(LogOptions::default());
    group.bench_function(BenchmarkId::new("log_single", label(size)), |b| {
        b.iter_custom(|iters| {
            timed_runs(&mut target, iters, frame, |t| {
                black_box(t.log().append(&record).expect("append"));
            })
        })
    });
    drop(target);

    let mut raw = RawTarget::new(true);
    group.bench_function(
        BenchmarkId::new("raw_pwrite_fdatasync_single", label(size)),
        |b| b.iter_custom(|iters| timed_raw_runs(&mut raw, iters, &record)),
    );
    drop(raw);

    // Group commit: four threads appending single records concurrently; the figure is per
    // record (total time / records).
    let threads = 4u64;
    let mut target = LogTarget::new(LogOptions::default());
    group.bench_function(BenchmarkId::new("log_single_4_threads", label(size)), |b| {
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(threads);
            let bytes = per_thread * threads * frame;
            if target.written + bytes > APPEND_CAP_BYTES {
                target.reset();
            }
            let log = target.log();
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        for _ in 0..per_thread {
                            black_box(log.append(&record).expect("append"));
                        }
                    });
                }
            });
            let elapsed = start.elapsed();
            target.written += bytes;
            // Scale to `iters` records (per_thread * threads may round up).
            elapsed.mul_f64(iters as f64 / (per_thread * threads) as f64)
        })
    });
    drop(target);

    group.throughput(Throughput::Bytes((size * BATCH) as u64));
    let mut target = LogTarget::new(LogOptions::default());
    group.bench_function(BenchmarkId::new("log_batch64", label(size)), |b| {
        b.iter_custom(|iters| {
            timed_runs(&mut target, iters, frame * BATCH as u64, |t| {
                black_box(t.log().append_batch(&batch).expect("append"));
            })
        })
    });
    drop(target);

    let mut raw = RawTarget::new(true);
    group.bench_function(
        BenchmarkId::new("raw_pwrite_fdatasync_batch64", label(size)),
        |b| b.iter_custom(|iters| timed_raw_runs(&mut raw, iters, &batch_flat)),
    );
    group.finish();
}

/// A closed log of [`READ_LOG_BYTES`] of 1 KiB records whose first 8 bytes are the offset.
fn write_read_log(dir: &Path) -> u64 {
    let log = Log::open(dir, manual_opts()).expect("open log");
    let mut rng = fastrand::Rng::with_seed(3);
    let records = READ_LOG_BYTES / RECORD_BYTES as u64;
    let mut offset = 0u64;
    while offset < records {
        let batch: Vec<Vec<u8>> = (offset..offset + BATCH as u64)
            .map(|o| payload(RECORD_BYTES, o, &mut rng))
            .collect();
        let range = log.append_batch(&batch).expect("append");
        assert_eq!(range.start, offset);
        offset = range.end;
    }
    log.close().expect("close");
    offset
}

/// The base offset of the last segment file in `dir` (the unsealed tail after a reopen).
fn last_segment_base(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("list log dir")
        .filter_map(|e| parse_file_name(&e.ok()?.file_name().to_string_lossy()))
        .max()
        .expect("a segment")
}

/// Copies a closed log's files (a second log to open beside the first, with other options).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's dir");
    for e in std::fs::read_dir(from).expect("list log dir") {
        let e = e.expect("dir entry");
        if e.file_type().expect("file type").is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy a log file");
        }
    }
}

fn check(rec: &sitelog::Record) {
    assert_eq!(
        u64::from_le_bytes(rec.payload[..8].try_into().expect("8 bytes")),
        rec.offset
    );
    assert_eq!(rec.payload.len(), RECORD_BYTES);
}

/// Sequential and random reads of a reopened 64 MiB log (all of it in the page cache).
fn read(c: &mut Criterion) {
    let tmp = bench_dir();
    let dir = tmp.path().join("log");
    let records = write_read_log(&dir);
    let tail_base = last_segment_base(&dir);
    let log = Log::open(&dir, LogOptions::default()).expect("reopen log");
    assert_eq!((log.start_offset(), log.end_offset()), (0, records));
    eprintln!(
        "read log: {records} records of {RECORD_BYTES} B in {} segments ({} bytes); \
         unsealed tail starts at offset {tail_base}",
        log.segment_count(),
        log.size_bytes()
    );

    let mut group = c.benchmark_group("read");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    let seq = |b: &mut criterion::Bencher, (from, to): (u64, u64)| {
        b.iter(|| {
            let mut n = from;
            for rec in log.iter(from) {
                let rec = rec.expect("read");
                check(&rec);
                n += 1;
            }
            assert_eq!(n, to);
        })
    };
    group.throughput(Throughput::Bytes(records * RECORD_BYTES as u64));
    group.bench_function("iter_all_64MiB", |b| seq(b, (0, records)));
    // The same walk with no read-ahead helper (every checksum on the reader's thread): the
    // baseline of the line above, in the same run.
    {
        let mut opts = LogOptions::default();
        opts.read_ahead_threads = 0;
        let dir2 = tmp.path().join("log-no-read-ahead");
        copy_dir(&dir, &dir2);
        let plain = Log::open(&dir2, opts).expect("open the copy");
        group.bench_function("iter_all_64MiB_no_read_ahead", |b| {
            b.iter(|| {
                let mut n = 0;
                for rec in plain.iter(0) {
                    check(&rec.expect("read"));
                    n += 1;
                }
                assert_eq!(n, records);
            })
        });
    }
    group.throughput(Throughput::Bytes(
        (records - tail_base) * RECORD_BYTES as u64,
    ));
    group.bench_function("iter_unsealed_tail", |b| seq(b, (tail_base, records)));

    group.throughput(Throughput::Bytes(RECORD_BYTES as u64));
    for (name, lo, hi) in [
        ("random_read_all", 0, records),
        ("random_read_sealed", 0, tail_base),
        ("random_read_unsealed_tail", tail_base, records),
    ] {
        let mut rng = fastrand::Rng::with_seed(4);
        group.bench_function(name, |b| {
            b.iter(|| {
                let rec = log.read(rng.u64(lo..hi)).expect("read");
                check(&rec);
                black_box(rec)
            })
        });
    }
    group.finish();

    drop(log);
    let mut group = c.benchmark_group("open");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("reopen_64MiB", |b| {
        b.iter(|| black_box(Log::open(&dir, LogOptions::default()).expect("open log")))
    });
    group.finish();
}

criterion_group!(benches, append_buffered, append_durable, read);
criterion_main!(benches);
