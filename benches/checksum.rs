//! CRC32C (`crc32c`, what sitelog's frames use) against CRC32 (`crc32fast`) on buffers from one
//! small record to one large chunk. Both crates pick a hardware path at run time (SSE4.2 `crc32`
//! for CRC32C, PCLMULQDQ folding for CRC32), so the figures depend on the CPU.
//!
//! Run with `cargo bench --bench checksum`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

/// Buffer sizes: a small record, a typical record, a large record, a read chunk.
const SIZES: [usize; 4] = [64, 1 << 10, 16 << 10, 1 << 20];

fn label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{}MiB", s >> 20),
        s if s >= 1 << 10 => format!("{}KiB", s >> 10),
        s => format!("{s}B"),
    }
}

fn checksum(c: &mut Criterion) {
    let mut group = c.benchmark_group("checksum");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for size in SIZES {
        // Non-trivial content, so that nothing special-cases zeros.
        let mut rng = fastrand::Rng::with_seed(size as u64);
        let buf: Vec<u8> = (0..size).map(|_| rng.u8(..)).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("crc32c", label(size)), &buf, |b, buf| {
            b.iter(|| crc32c::crc32c(black_box(buf)))
        });
        group.bench_with_input(
            BenchmarkId::new("crc32fast", label(size)),
            &buf,
            |b, buf| b.iter(|| crc32fast::hash(black_box(buf))),
        );
    }
    group.finish();
}

criterion_group!(benches, checksum);
criterion_main!(benches);
