//! `sitelog bench --replicated`: three `sitelog node` processes on loopback (one data
//! directory each, same disk), measured in the same run as a single local log:
//!
//! - **single-node durable**: W threads appending R-byte records to one `Log` (fsync before
//!   ack) — the figure replication is compared with;
//! - **replicated**: W client connections appending R-byte records to the cluster; an append
//!   counts when a majority has it fsynced (committed);
//! - **failover**: K times, SIGKILL of the leader's process while one client writes; the time
//!   from the kill to the first acknowledged write sent after it. The killed node is restarted
//!   and caught up before the next kill.

use super::bench::{budget_options, run_writers, BackendArg, BenchArgs, ByteBudget};
use super::cluster::LocalCluster;
use super::json::Json;
use super::stats::{fmt_rate, fmt_us, nanos, round, Latency, Table};
use super::sys::{self, DiskBudget, WorkDir};
use super::{CliError, CliResult, Context};
use crate::node::client::{AppendOutcome, Client, Producer};
use crate::{IoBackend, Log, LogOptions};
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLUSTER_ID: u64 = 0xbe9c;
/// Nodes of the cluster (one site each).
const NODES: u64 = 3;

struct Throughput {
    records: u64,
    secs: f64,
    lat: Latency,
}

impl Throughput {
    fn rate(&self) -> f64 {
        self.records as f64 / self.secs.max(1e-9)
    }
    fn json(&self) -> Json {
        Json::obj([
            ("records", self.records.into()),
            ("seconds", round(self.secs, 3).into()),
            ("records_per_s", round(self.rate(), 1).into()),
            ("latency", self.lat.json()),
        ])
    }
}

/// Runs the replicated benchmark and prints its report.
pub fn run(args: &BenchArgs) -> CliResult<()> {
    let secs = args.seconds.unwrap_or(if args.quick { 1.0 } else { 5.0 });
    let duration = Duration::from_secs_f64(secs);
    let writers = args.writers;
    let record_bytes = args.record_bytes;
    let kills = args.kills.unwrap_or(if args.quick { 3 } else { 20 });
    let work = WorkDir::create(args.dir.as_deref(), args.keep)?;
    // Three nodes on this disk at once; the single log is removed before they start.
    let disk = DiskBudget::for_dir(work.path(), args.max_disk_mib, NODES)?;
    if let Some(note) = disk.note() {
        eprintln!("bench: {note}");
    }
    let payload = vec![0x5au8; record_bytes];

    let (io_name, io, direct_io) = match args.backend {
        // The defaults, as `sitelog node` has them.
        BackendArg::All => ("auto", IoBackend::Auto, LogOptions::default().direct_io),
        BackendArg::IoUring => ("io_uring", IoBackend::IoUring, false),
        BackendArg::Posix => ("posix", IoBackend::Posix, false),
        BackendArg::IoUringDirect => ("io_uring", IoBackend::IoUring, true),
        BackendArg::PosixDirect => ("posix", IoBackend::Posix, true),
    };
    let single = {
        let opts = LogOptions {
            io,
            direct_io,
            ..budget_options(disk.segment_bytes)
        };
        let dir = work.sub("single");
        let log = Log::open(&dir, opts)?;
        let max_bytes = disk.log_payload_bytes(NODES);
        let (records, secs, lat) = run_writers(&log, &payload, writers, duration, max_bytes)?;
        log.close()?;
        if !args.keep {
            sys::remove_path(&dir)?;
        }
        Throughput {
            records,
            secs,
            lat: Latency::from_nanos(lat),
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context(|| "cannot start the async runtime".into())?;
    let (replicated, failovers) = rt.block_on(async {
        let mut node_args = vec!["--segment-bytes".into(), disk.segment_bytes.to_string()];
        if !direct_io {
            node_args.push("--no-direct-io".into());
        }
        let mut cluster = LocalCluster::start(
            &work.sub("cluster"),
            NODES,
            CLUSTER_ID,
            io_name,
            node_args,
            !args.insecure,
        )?;
        cluster.leader(Duration::from_secs(20)).await?;
        let max_bytes = disk.log_payload_bytes(NODES);
        let t = replicated_throughput(
            &cluster,
            &payload,
            writers,
            args.producers,
            duration,
            max_bytes,
        )
        .await?;
        let f = failover(&mut cluster, kills).await?;
        Ok::<_, CliError>((t, f))
    })?;
    report(
        args,
        &single,
        &replicated,
        &failovers,
        writers,
        record_bytes,
    );
    Ok(())
}

/// How one writer appends: plainly, or through its idempotent producer (`--producers`).
enum Writer {
    Plain(Client),
    Producer(Producer),
}

impl Writer {
    async fn append(&self, payloads: Vec<Bytes>) -> AppendOutcome {
        match self {
            Writer::Plain(c) => c.append(payloads).await,
            Writer::Producer(p) => p.append(payloads).await,
        }
    }
}

/// One client per writer, each with its connections open (one untimed append) and, with
/// `producers`, its producer registered: the timed run measures steady appends, not connection
/// setup (a TLS handshake each). All at once: a leader whose handshake budget is full of young
/// handshakes refuses the rest, and they connect again after a short backoff
/// (`TcpConnector::open`).
async fn connected_writers(
    cluster: &LocalCluster,
    payload: &Bytes,
    writers: usize,
    producers: bool,
) -> CliResult<Vec<Writer>> {
    let warmups: Vec<_> = (0..writers)
        .map(|_| {
            let (client, payload) = (cluster.client(), payload.clone());
            tokio::spawn(async move {
                let writer = if producers {
                    match client.producer().await {
                        Ok(p) => Writer::Producer(p),
                        Err(e) => return Err(format!("producer registration: {e}")),
                    }
                } else {
                    Writer::Plain(client)
                };
                match writer.append(vec![payload]).await {
                    AppendOutcome::Ok(_) => Ok(writer),
                    other => Err(format!("{other:?}")),
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(writers);
    for w in warmups {
        match w.await {
            Ok(Ok(writer)) => out.push(writer),
            Ok(Err(e)) => return Err(CliError(format!("replicated warm-up append: {e}"))),
            Err(e) => return Err(CliError(format!("replicated warm-up append: {e}"))),
        }
    }
    Ok(out)
}

async fn replicated_throughput(
    cluster: &LocalCluster,
    payload: &[u8],
    writers: usize,
    producers: bool,
    duration: Duration,
    max_payload_bytes: u64,
) -> CliResult<Throughput> {
    let payload = Bytes::copy_from_slice(payload);
    let budget = Arc::new(ByteBudget::new(max_payload_bytes));
    let all_writers = connected_writers(cluster, &payload, writers, producers).await?;
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(writers);
    for writer in all_writers {
        let payload = payload.clone();
        let budget = budget.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            // Until the deadline, or until the disk budget is spent.
            while Instant::now() < deadline && budget.take(payload.len()) {
                let t0 = Instant::now();
                match writer.append(vec![payload.clone()]).await {
                    AppendOutcome::Ok(_) => lat.push(nanos(t0.elapsed())),
                    other => return Err(CliError(format!("replicated append: {other:?}"))),
                }
            }
            Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| CliError(e.to_string()))??);
    }
    Ok(Throughput {
        records: all.len() as u64,
        secs: start.elapsed().as_secs_f64(),
        lat: Latency::from_nanos(all),
    })
}

/// Kill-to-next-ack times.
async fn failover(cluster: &mut LocalCluster, kills: usize) -> CliResult<Vec<Duration>> {
    let mut out = Vec::with_capacity(kills);
    let mut attempts = 0;
    while out.len() < kills {
        attempts += 1;
        if attempts > 2 * kills + 2 {
            return Err(CliError(
                "failover: could not kill a confirmed leader".into(),
            ));
        }
        let leader = cluster.leader(Duration::from_secs(20)).await?;
        let term_before = cluster.status(leader).await.map_or(0, |s| s.term);
        // (sent, acked) of every acknowledged write.
        let acks: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (acks, stop) = (acks.clone(), stop.clone());
            let mut client = cluster.client();
            client.request_timeout_ms = 1000;
            client.leader_wait_ms = 30_000;
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    if let AppendOutcome::Ok(_) = client
                        .append(vec![Bytes::from_static(b"failover probe")])
                        .await
                    {
                        acks.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((sent, Instant::now()));
                    }
                }
            })
        };
        let acked = || acks.lock().unwrap_or_else(|p| p.into_inner()).len();
        wait_until(Duration::from_secs(10), || acked() >= 20).await?;
        let killed_at = Instant::now();
        cluster.kill(leader);
        let first_after = || {
            acks.lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(sent, _)| *sent >= killed_at)
                .map(|(_, acked)| *acked)
                .min()
        };
        wait_until(Duration::from_secs(30), || first_after().is_some()).await?;
        stop.store(true, Ordering::Relaxed);
        let _ = writer.await;
        // Count it only if the killed node really led: a new leader in a later term took over.
        let next = cluster.leader(Duration::from_secs(20)).await?;
        let term_after = cluster.status(next).await.map_or(0, |s| s.term);
        if let Some(t) = first_after().filter(|_| next != leader && term_after > term_before) {
            out.push(t - killed_at);
        }
        cluster.spawn(leader)?;
        rejoin(cluster, leader).await?;
    }
    Ok(out)
}

/// Waits until the restarted node has caught up with the leader's commit point.
async fn rejoin(cluster: &LocalCluster, id: u64) -> CliResult<()> {
    let leader = cluster.leader(Duration::from_secs(20)).await?;
    let target = cluster.status(leader).await.map_or(0, |s| s.commit_end);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if cluster
            .status(id)
            .await
            .is_some_and(|s| s.commit_end >= target)
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CliError(format!(
                "node {id} did not catch up after its restart"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_until(limit: Duration, f: impl Fn() -> bool) -> CliResult<()> {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() >= deadline {
            return Err(CliError("timed out waiting for acknowledged writes".into()));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(
    args: &BenchArgs,
    single: &Throughput,
    repl: &Throughput,
    failovers: &[Duration],
    writers: usize,
    record_bytes: usize,
) {
    let mut sorted = failovers.to_vec();
    sorted.sort();
    let (median, p99) = (percentile(&sorted, 0.5), percentile(&sorted, 0.99));
    let ratio = repl.rate() / single.rate().max(1e-9);
    let p99_ratio = repl.lat.p99_us / single.lat.p99_us.max(1e-9);
    if args.json {
        let ms = |d: Duration| round(d.as_secs_f64() * 1e3, 1);
        let out = Json::obj([
            ("writers", writers.into()),
            ("record_bytes", record_bytes.into()),
            ("producers", args.producers.into()),
            ("single_node", single.json()),
            ("replicated", repl.json()),
            ("throughput_ratio", round(ratio, 3).into()),
            ("p99_ratio", round(p99_ratio, 3).into()),
            (
                "failover_ms",
                Json::obj([
                    ("kills", failovers.len().into()),
                    ("median", ms(median).into()),
                    ("p99", ms(p99).into()),
                    ("max", ms(sorted.last().copied().unwrap_or_default()).into()),
                    (
                        "all",
                        Json::Arr(failovers.iter().map(|d| ms(*d).into()).collect()),
                    ),
                ]),
            ),
        ]);
        println!("{}", out.render());
        return;
    }
    let mut t = Table::new(&["workload", "records/s", "p50 µs", "p99 µs", "ratio"], 1);
    let row = |name: &str, x: &Throughput, r: String| {
        vec![
            name.to_string(),
            fmt_rate(x.rate()),
            fmt_us(x.lat.p50_us),
            fmt_us(x.lat.p99_us),
            r,
        ]
    };
    t.row(row("single-node durable", single, "1.00".into()));
    let name = if args.producers {
        "replicated (3 processes, producers)"
    } else {
        "replicated (3 processes)"
    };
    t.row(row(name, repl, format!("{ratio:.2}")));
    println!(
        "{writers} writers, {record_bytes}-byte records\n{}",
        t.render()
    );
    println!(
        "p99 replicated / single: {p99_ratio:.2} (target <= 2); throughput ratio {ratio:.2} (target >= 0.7)"
    );
    println!(
        "failover (SIGKILL of the leader -> next acknowledged write), {} kills: median {:.0} ms, \
         p99 {:.0} ms, max {:.0} ms (target: median < 1000 ms)",
        failovers.len(),
        median.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        sorted.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}
