//! Measures how long reopening a large log takes (recovery reads footers and scans only the
//! unsealed tail). `cargo run --release --example reopen -- DIR [GiB]`
//!
//! Prints one line per phase; the directory is left in place for inspection.

use sitelog::{Log, LogOptions, SyncMode};
use std::time::Instant;

fn main() -> sitelog::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "/tmp/sitelog-reopen".into());
    let gib: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let _ = std::fs::remove_dir_all(&dir);
    let mut opts = LogOptions::default();
    opts.sync = SyncMode::Manual;
    let log = Log::open(&dir, opts.clone())?;
    let record = vec![0x5au8; 1000];
    let batch: Vec<&[u8]> = (0..1024).map(|_| record.as_slice()).collect();
    let started = Instant::now();
    while log.size_bytes() < gib << 30 {
        log.append_batch(&batch)?;
    }
    log.sync()?;
    let records = log.end_offset();
    println!(
        "wrote {records} records, {} MiB, in {:?}",
        log.size_bytes() >> 20,
        started.elapsed()
    );
    log.close()?;
    for round in 0..3 {
        let started = Instant::now();
        let log = Log::open(&dir, opts.clone())?;
        let took = started.elapsed();
        let report = log.recovery_report().clone();
        println!(
            "reopen {round}: {took:?} ({} segments, {} tail records scanned)",
            report.segments, report.tail_records_scanned
        );
        drop(log);
    }
    Ok(())
}
