//! `sitelog bench`'s cold sequential reads by record size (issue 16 item 5): a log of one
//! record size is written once, then, with the page cache dropped before each read, a plain
//! large-block read of its segment files and a `Log::open` + `Log::iter` over every record
//! alternate for a few rounds (the plain read first in every other round, so that neither
//! always meets the disk the other just warmed below the page cache).

use super::json::Json;
use super::stats::{fmt_bytes, fmt_mbs, fmt_ratio, mb_per_s, round};
use super::sys;
use super::{CliError, CliResult, Context};
use crate::{Log, LogOptions, SyncMode};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The record sizes the issue measured.
pub const RECORD_SIZES_BYTES: [usize; 3] = [100, 1000, 10_000];
/// Rounds per size (each one plain read and one sitelog read).
pub const ROUNDS: usize = 3;
/// Records per appended batch while the log is written.
const WRITE_BATCH_BYTES: usize = 4 << 20;

/// One record size's reads.
#[derive(Debug, Clone)]
pub struct ColdRead {
    pub record_bytes: usize,
    pub records: u64,
    /// Bytes of the segment files (both reads read all of them).
    pub file_bytes: u64,
    /// Seconds of each round: (plain read, sitelog's open + iteration).
    pub rounds: Vec<(f64, f64)>,
}

impl ColdRead {
    /// Per round, plain time ÷ sitelog time (the same files, so the throughput ratio).
    fn ratios(&self) -> Vec<f64> {
        self.rounds.iter().map(|&(raw, log)| raw / log).collect()
    }

    /// The median round's ratio.
    pub fn median_ratio(&self) -> f64 {
        median(self.ratios())
    }

    fn median_secs(&self, pick: impl Fn(&(f64, f64)) -> f64) -> f64 {
        median(self.rounds.iter().map(pick).collect())
    }

    pub fn json(&self) -> Json {
        let rounds = self
            .rounds
            .iter()
            .map(|&(raw, log)| {
                Json::obj([
                    ("raw_seconds", round(raw, 4).into()),
                    ("seconds", round(log, 4).into()),
                ])
            })
            .collect();
        Json::obj([
            ("record_bytes", self.record_bytes.into()),
            ("records", self.records.into()),
            ("file_bytes", self.file_bytes.into()),
            (
                "mb_per_s",
                round(mb_per_s(self.file_bytes, self.median_secs(|r| r.1)), 2).into(),
            ),
            (
                "raw_mb_per_s",
                round(mb_per_s(self.file_bytes, self.median_secs(|r| r.0)), 2).into(),
            ),
            ("ratio", round(self.median_ratio(), 3).into()),
            ("rounds", Json::Arr(rounds)),
        ])
    }

    pub fn text_line(&self) -> String {
        let ratios: Vec<String> = self.ratios().iter().map(|r| format!("{r:.2}")).collect();
        format!(
            "  {} B records ({} of files): sitelog {} MB/s, plain {} MB/s, {} (median; rounds {})\n",
            self.record_bytes,
            fmt_bytes(self.file_bytes),
            fmt_mbs(mb_per_s(self.file_bytes, self.median_secs(|r| r.1))),
            fmt_mbs(mb_per_s(self.file_bytes, self.median_secs(|r| r.0))),
            fmt_ratio(Some(self.median_ratio())),
            ratios.join(", ")
        )
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

/// Writes a log of `log_bytes` of payload per record size under `work`, measures it, removes
/// it. `segment_bytes` is the disk budget's segment size.
pub fn measure(
    work: impl Fn(&str) -> PathBuf,
    log_bytes: u64,
    segment_bytes: u64,
) -> CliResult<Vec<ColdRead>> {
    let mut out = Vec::new();
    for size in RECORD_SIZES_BYTES {
        let dir = work(&format!("cold-read-{size}"));
        super::bench::progress(&format!("cold read: {size} B records"));
        let opts = LogOptions {
            sync: SyncMode::Manual,
            // A reader needs no prepared segment; its zeros would compete with the reads.
            preallocate: false,
            ..super::bench::budget_options(segment_bytes)
        };
        let records = write(&dir, opts.clone(), size, log_bytes)?;
        let files = super::bench::segment_files(&dir)?;
        let mut run = ColdRead {
            record_bytes: size,
            records,
            file_bytes: 0,
            rounds: Vec::new(),
        };
        for round in 0..ROUNDS {
            let raw_first = round % 2 == 0;
            let ((bytes, raw_secs), log_secs) = if raw_first {
                let raw = plain_read(&files)?;
                (raw, iterate(&dir, opts.clone(), records, size)?)
            } else {
                let log_secs = iterate(&dir, opts.clone(), records, size)?;
                (plain_read(&files)?, log_secs)
            };
            run.file_bytes = bytes;
            run.rounds.push((raw_secs, log_secs));
        }
        sys::remove_path(&dir)?;
        out.push(run);
    }
    Ok(out)
}

/// Drops the page cache, then reads every file in 1 MiB blocks.
fn plain_read(files: &[PathBuf]) -> CliResult<(u64, f64)> {
    sys::drop_page_cache().map_err(CliError)?;
    super::raw::read_files(files)
}

/// Appends `size`-byte records (each begins with its offset) until `log_bytes` of payload.
fn write(dir: &Path, opts: LogOptions, size: usize, log_bytes: u64) -> CliResult<u64> {
    let log = Log::open(dir, opts).context(|| format!("cannot open a log in {}", dir.display()))?;
    let per_batch = (WRITE_BATCH_BYTES / size).max(1);
    let mut batch = vec![vec![0x5au8; size]; per_batch];
    let mut written = 0u64;
    while written < log_bytes {
        let next = log.end_offset();
        for (i, b) in batch.iter_mut().enumerate() {
            let tag = (next + i as u64).to_le_bytes();
            let n = tag.len().min(b.len());
            b[..n].copy_from_slice(&tag[..n]);
        }
        log.append_batch(&batch)?;
        written += (per_batch * size) as u64;
    }
    log.sync()?;
    let records = log.end_offset();
    log.close()?;
    Ok(records)
}

/// Drops the page cache, opens the log and iterates over every record (checksums verified by
/// the log, offsets and sizes checked here); the iteration's seconds.
fn iterate(dir: &Path, opts: LogOptions, records: u64, size: usize) -> CliResult<f64> {
    sys::drop_page_cache().map_err(CliError)?;
    let log = Log::open(dir, opts).context(|| format!("cannot reopen {}", dir.display()))?;
    let started = Instant::now();
    let mut expected = log.start_offset();
    for rec in log.iter(expected) {
        let rec = rec?;
        if rec.offset != expected || rec.payload.len() != size {
            return Err(CliError(format!(
                "record {} (expected {expected}) has {} bytes, expected {size}",
                rec.offset,
                rec.payload.len()
            )));
        }
        expected += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    log.close()?;
    if expected != records {
        return Err(CliError(format!(
            "iteration ended at {expected}, the log holds {records} records"
        )));
    }
    Ok(secs)
}
