//! Local quickstart: append durably, reopen, read back.
//!
//! `cargo run --release --example quickstart -- /tmp/sitelog-demo`

use sitelog::{Log, LogOptions};

fn main() -> sitelog::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/sitelog-quickstart".into());
    let log = Log::open(&dir, LogOptions::default())?;
    let first = log.append(b"hello, site")?; // fsynced before it returns
    let batch = log.append_batch(&[b"one".as_slice(), b"two", b"three"])?;
    println!("appended offset {first} and offsets {batch:?} in {dir}");
    log.close()?;

    let log = Log::open(&dir, LogOptions::default())?;
    for record in log.iter(log.start_offset()) {
        let record = record?;
        println!(
            "{:>6}  {}",
            record.offset,
            String::from_utf8_lossy(&record.payload)
        );
    }
    Ok(())
}
