//! `sitelog bench --catch-up`: how fast a new replica reaches the leader's commit point, by
//! snapshot plus bulk fetch against entry-by-entry replication (forced by configuration), in
//! the same run, with the machine's own limits (sequential write + fdatasync; loopback TCP):
//!
//! 1. the limits: 256 MiB written with 4 MiB writes and one fdatasync; 256 MiB through a
//!    loopback TCP connection;
//! 2. cluster A (snapshots on, fetch unthrottled): filled with `--catch-up-mib` of 1 KiB
//!    records; a new node joins; time until it has the leader's commit point, and the fetch
//!    rate of the sealed segments;
//! 3. cluster A again, a second new node joins while 8 writers run, fetch throttled to
//!    100 MB/s: p99 commit latency during the catch-up against the quiet p99 before it;
//! 4. cluster B (snapshots off): the same fill; a new node catches up by replication only.

use super::bench::BenchArgs;
use super::cluster::LocalCluster;
use super::json::Json;
use super::stats::{fmt_bytes, nanos, round, Latency};
use super::sys::{self, WorkDir};
use super::{CliError, CliResult, Context};
use crate::node::client::{AppendOutcome, Client};
use crate::node::{Peer, ReplaceEvent, ReplaceOptions, ReplacePhase};
use bytes::Bytes;
use futures_util::StreamExt;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLUSTER_ID: u64 = 0xca7c;
const LIMIT_BYTES: usize = 256 << 20;

/// Sequential write of `LIMIT_BYTES` in 4 MiB writes and one fdatasync, in MB/s.
fn disk_limit(dir: &std::path::Path) -> CliResult<f64> {
    let path = dir.join("disk-limit");
    let mut f = std::fs::File::create(&path).context(|| "disk limit file".into())?;
    let buf = vec![0x3cu8; 4 << 20];
    let t = Instant::now();
    for _ in 0..LIMIT_BYTES / buf.len() {
        f.write_all(&buf).context(|| "disk limit write".into())?;
    }
    f.sync_data().context(|| "disk limit fdatasync".into())?;
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    Ok(LIMIT_BYTES as f64 / 1e6 / secs)
}

/// `LIMIT_BYTES` through a loopback TCP connection, in MB/s.
fn loopback_limit() -> CliResult<f64> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context(|| "loopback".into())?;
    let addr = l.local_addr().context(|| "loopback".into())?;
    let reader = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0;
        loop {
            let r = s.read(&mut buf)?;
            if r == 0 {
                return Ok(n);
            }
            n += r;
        }
    });
    let mut s = std::net::TcpStream::connect(addr).context(|| "loopback".into())?;
    let buf = vec![0x3cu8; 1 << 20];
    let t = Instant::now();
    for _ in 0..LIMIT_BYTES / buf.len() {
        s.write_all(&buf).context(|| "loopback write".into())?;
    }
    drop(s);
    let n = reader
        .join()
        .map_err(|_| CliError("loopback reader panicked".into()))?
        .context(|| "loopback read".into())?;
    Ok(n as f64 / 1e6 / t.elapsed().as_secs_f64())
}

/// Appends `bytes` of 1 KiB records with 16 clients in batches of 64.
async fn fill(cluster: &LocalCluster, bytes: u64) -> CliResult<()> {
    let per_client = bytes / 16 / (64 * 1024) + 1;
    let mut tasks = Vec::new();
    for c in 0..16u64 {
        let client = cluster.client();
        tasks.push(tokio::spawn(async move {
            for b in 0..per_client {
                let batch: Vec<Bytes> = (0..64)
                    .map(|i| Bytes::from(format!("{c}:{b}:{i}:{}", "m".repeat(1000))))
                    .collect();
                if let AppendOutcome::Failed(e) | AppendOutcome::Unknown(e) =
                    client.append(batch).await
                {
                    return Err(CliError(format!("fill: {e}")));
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| CliError(e.to_string()))??;
    }
    Ok(())
}

/// Adds node `id` as a learner and waits until it holds the leader's commit point (through
/// `Client::add_caught_up_learner`, the first phases of a site replacement); returns the time
/// it took (from the events' timestamps) and the snapshot bytes it fetched.
async fn join_and_catch_up(cluster: &mut LocalCluster, id: u64) -> CliResult<(Duration, u64)> {
    let addr = cluster.spawn_joining(id)?;
    cluster.leader(Duration::from_secs(20)).await?;
    let peer = Peer {
        site: format!("site-{id}"),
        addr,
    };
    let opts = ReplaceOptions {
        // A fine poll: the bench reports the catch-up time.
        poll_ms: 20,
        ..ReplaceOptions::default()
    };
    let mut events = cluster.client().add_caught_up_learner(id, peer, opts);
    let (mut started, mut last) = (None, None);
    while let Some(event) = events.next().await {
        match event {
            ReplaceEvent::Progress(p) if p.phase == ReplacePhase::AddingLearner => {
                started = Some(p.at)
            }
            ReplaceEvent::Progress(p) => last = Some(p),
            ReplaceEvent::Done { .. } => {
                let (Some(t), Some(p)) = (started, last) else {
                    return Err(CliError(format!("node {id}: caught up without progress")));
                };
                return Ok((p.at.duration_since(t), p.snapshot_total_bytes));
            }
            ReplaceEvent::Failed(e) => {
                return Err(CliError(format!("node {id} did not catch up: {e}")))
            }
        }
    }
    Err(CliError(format!(
        "node {id}: the catch-up ended without an outcome"
    )))
}

/// Paced writers (8 clients, one record each at a time) until `stop`; their latencies.
fn writers(clients: Vec<Client>, stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<Vec<u64>>> {
    clients
        .into_iter()
        .map(|client| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if let AppendOutcome::Ok(_) =
                        client.append(vec![Bytes::from_static(&[7u8; 1024])]).await
                    {
                        lat.push(nanos(t.elapsed()));
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                lat
            })
        })
        .collect()
}

async fn p99_while<F: std::future::Future>(
    clients: Vec<Client>,
    during: F,
) -> CliResult<(F::Output, Latency)> {
    let stop = Arc::new(AtomicBool::new(false));
    let ws = writers(clients, &stop);
    let out = during.await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for w in ws {
        all.extend(w.await.map_err(|e| CliError(e.to_string()))?);
    }
    Ok((out, Latency::from_nanos(all)))
}

/// Nodes of cluster A at its largest: three, and the two that join it.
const PEAK_NODES: u64 = 5;
/// Per node, besides the log: the active and preallocated 16 MiB segments, and slack for
/// snapshot manifests, Raft state and partly fetched segments.
const NODE_OVERHEAD_BYTES: u64 = 64 << 20;

/// Fails with a clear message, before anything is written, when `log_bytes` of log on every
/// node of the larger cluster will not fit the disk budget (half the free space, or
/// `--max-disk-mib`).
fn check_disk(dir: &std::path::Path, max_disk_mib: Option<u64>, log_bytes: u64) -> CliResult<()> {
    let free = sys::free_bytes(dir)?;
    let budget = sys::allowed_bytes(free, max_disk_mib.map(|m| m << 20));
    let need = PEAK_NODES * (log_bytes + NODE_OVERHEAD_BYTES);
    if need > budget {
        return Err(CliError(format!(
            "the catch-up bench needs about {} in {} for {PEAK_NODES} nodes, it may use {}              ({} free): use a smaller --catch-up-mib or another --dir",
            fmt_bytes(need),
            dir.display(),
            fmt_bytes(budget),
            fmt_bytes(free)
        )));
    }
    Ok(())
}

/// Runs the catch-up benchmark and prints its report.
pub fn run(args: &BenchArgs) -> CliResult<()> {
    let mib = args
        .catch_up_mib
        .unwrap_or(if args.quick { 64 } else { 1024 });
    let bytes = mib << 20;
    let work = WorkDir::create(args.dir.as_deref(), args.keep)?;
    check_disk(work.path(), args.max_disk_mib, bytes)?;
    let disk = disk_limit(work.path())?;
    let net = loopback_limit()?;
    let limit = disk.min(net);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context(|| "cannot start the async runtime".into())?;
    let result = rt.block_on(async {
        // 16 MiB segments: most of the log is sealed (shippable) when the new node joins.
        let snap_args = |every: &str, throttle: &str| {
            vec![
                "--segment-bytes".into(),
                (16u64 << 20).to_string(),
                "--snapshot-every".into(),
                every.to_string(),
                "--snapshot-keep".into(),
                "1000".into(),
                "--fetch-mb-per-s".into(),
                throttle.to_string(),
            ]
        };
        eprintln!("filling cluster A (snapshots on) with {mib} MiB");
        let mut a = LocalCluster::start(
            &work.sub("a"),
            3,
            CLUSTER_ID,
            "auto",
            snap_args("5000", "0"),
            !args.insecure,
        )?;
        a.leader(Duration::from_secs(20)).await?;
        fill(&a, bytes).await?;
        let (t_snap, fetched) = join_and_catch_up(&mut a, 4).await?;
        eprintln!(
            "snapshot catch-up: {:.2} s, {:.0} MB fetched",
            t_snap.as_secs_f64(),
            fetched as f64 / 1e6
        );

        // Writes during a throttled catch-up (node 5, 100 MB/s) against the quiet p99.
        a.extra_args = snap_args("5000", "100");
        let clients = |c: &LocalCluster| (0..8).map(|_| c.client()).collect::<Vec<_>>();
        let ((), quiet) =
            p99_while(clients(&a), tokio::time::sleep(Duration::from_secs(3))).await?;
        let busy_clients = clients(&a);
        let (r, busy) = p99_while(busy_clients, join_and_catch_up(&mut a, 5)).await?;
        r?;
        drop(a);
        if !args.keep {
            sys::remove_path(&work.sub("a"))?;
        }

        eprintln!("filling cluster B (snapshots off) with {mib} MiB");
        let mut b = LocalCluster::start(
            &work.sub("b"),
            3,
            CLUSTER_ID,
            "auto",
            snap_args("0", "0"),
            !args.insecure,
        )?;
        b.leader(Duration::from_secs(20)).await?;
        fill(&b, bytes).await?;
        let (t_replay, _) = join_and_catch_up(&mut b, 4).await?;
        eprintln!("replication-only catch-up: {:.2} s", t_replay.as_secs_f64());
        Ok::<_, CliError>((t_snap, fetched, quiet, busy, t_replay))
    });
    let (t_snap, fetched, quiet, busy, t_replay) = result?;
    let speedup = t_replay.as_secs_f64() / t_snap.as_secs_f64().max(1e-9);
    let rate = fetched as f64 / 1e6 / t_snap.as_secs_f64().max(1e-9);
    let p99_ratio = busy.p99_us / quiet.p99_us.max(1e-9);
    if args.json {
        let out = Json::obj([
            ("log_mib", mib.into()),
            ("disk_write_mb_per_s", round(disk, 1).into()),
            ("loopback_mb_per_s", round(net, 1).into()),
            (
                "snapshot_catch_up_secs",
                round(t_snap.as_secs_f64(), 3).into(),
            ),
            ("snapshot_fetched_bytes", fetched.into()),
            ("snapshot_rate_mb_per_s", round(rate, 1).into()),
            ("rate_ratio_to_limit", round(rate / limit, 3).into()),
            (
                "replication_catch_up_secs",
                round(t_replay.as_secs_f64(), 3).into(),
            ),
            ("speedup", round(speedup, 2).into()),
            ("quiet_commit_latency", quiet.json()),
            ("during_catch_up_commit_latency", busy.json()),
            ("p99_ratio", round(p99_ratio, 2).into()),
        ]);
        println!("{}", out.render());
        return Ok(());
    }
    println!(
        "catch-up of a new replica, {mib} MiB of log (1 KiB records), 3 nodes on this machine"
    );
    println!("  machine limits        disk write {disk:.0} MB/s, loopback {net:.0} MB/s");
    println!(
        "  snapshot + bulk fetch {:.2} s ({:.0} MB of segments, {rate:.0} MB/s = {:.2}x the limit; target >= 0.8x)",
        t_snap.as_secs_f64(),
        fetched as f64 / 1e6,
        rate / limit
    );
    println!("  replication only      {:.2} s", t_replay.as_secs_f64());
    println!("  speed-up              {speedup:.1}x (target >= 10x)");
    println!(
        "  commit p99 quiet {:.1} ms, during a 100 MB/s-throttled catch-up {:.1} ms = {p99_ratio:.2}x (target <= 2x)",
        quiet.p99_us / 1e3,
        busy.p99_us / 1e3
    );
    Ok(())
}
