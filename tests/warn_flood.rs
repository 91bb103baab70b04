//! A flood of garbage on a node's port is logged in aggregate: thousands of refused
//! connections (counted one by one in `sitelog_net_connections_refused_total`) leave at most
//! a handful of warning lines on the node's stderr, each with the count it stands for, and no
//! line quotes what the peers sent.

use sitelog::net::handshake::{Hello, Purpose, PROTOCOL_VERSION};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{free_port, spawn_node_logged};

const CLUSTER: u64 = 0xf100d;
const FLOOD_MS: u64 = 3000;
const FLOODERS: usize = 4;
/// Refusals the flood must reach for the test to say anything (a debug build on a loaded
/// 2-core machine still manages several thousand in 3 s).
const MIN_REFUSED: u64 = 1000;
/// Warning lines allowed: one per reason per `WARN_EVERY`, plus the node's own at start.
const MAX_WARN_LINES: usize = 20;
/// Marks the garbage, so that the test can tell a log line quoting it.
const MARK: &[u8] = b"GARBAGE-MARK";

/// One message as the framing sends it: length, CRC-32, body.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + body.len());
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    f.extend_from_slice(body);
    f
}

/// What flooder `n` sends on its `i`-th connection: a hello of another cluster, a frame of
/// garbage the size of a hello, or raw garbage (not even a frame).
fn garbage(n: usize, i: u64) -> Vec<u8> {
    match (n as u64 + i) % 3 {
        0 => frame(
            &Hello {
                version: PROTOCOL_VERSION,
                purpose: Purpose::Client,
                cluster_id: CLUSTER + 1,
                from_node: u64::MAX,
                to_node: u64::MAX,
            }
            .encode(),
        ),
        1 => frame(&[MARK, &[0x5a; 23][..]].concat()),
        _ => [MARK, &fastrand::u64(..).to_le_bytes()[..]].concat(),
    }
}

fn flood(addr: String, n: usize, until: Instant, sent: Arc<AtomicU64>) {
    let mut i = 0u64;
    while Instant::now() < until {
        let Ok(mut s) = TcpStream::connect(&addr) else {
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(&garbage(n, i));
        // Until the node closes it: the refusal is done when the flooder moves on.
        let _ = s.read_to_end(&mut Vec::new());
        i += 1;
        sent.fetch_add(1, Ordering::Relaxed);
    }
}

fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// `sitelog_net_connections_refused_total` summed over its reasons.
fn refused_total(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("sitelog_net_connections_refused_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn garbage_flood_is_logged_in_aggregate() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = BTreeMap::from([(1, free_port())]);
    let metrics_port = free_port().rsplit_once(':').unwrap().1.to_string();
    let log = dir.path().join("n1.log");
    let extra = [
        "--allow-unsafe-placement",
        "--metrics-listen",
        &metrics_port,
    ];
    let _n1 = spawn_node_logged(1, dir.path(), &addrs, CLUSTER, &extra, true, &log);
    let metrics = format!("127.0.0.1:{metrics_port}");

    let until = Instant::now() + Duration::from_millis(FLOOD_MS);
    let sent = Arc::new(AtomicU64::new(0));
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|n| {
            let (addr, sent) = (addrs[&1].clone(), sent.clone());
            std::thread::spawn(move || flood(addr, n, until, sent))
        })
        .collect();
    for f in flooders {
        f.join().unwrap();
    }
    let sent = sent.load(Ordering::Relaxed);

    // Every hello-shaped connection is counted before it is closed, so the count is final
    // once the flooders saw their connections closed.
    let refused = refused_total(&scrape(&metrics));
    let stderr = std::fs::read_to_string(&log).unwrap();
    let warns: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    eprintln!(
        "{sent} garbage connections, {refused} counted refusals, {} warning lines",
        warns.len()
    );
    assert!(refused >= MIN_REFUSED, "only {refused} refusals of {sent}");
    assert!(
        warns.len() <= MAX_WARN_LINES,
        "{} warning lines:\n{}",
        warns.len(),
        warns.join("\n")
    );
    let counted = warns
        .iter()
        .any(|l| l.contains("refused a connection") && l.contains("refused="));
    assert!(counted, "no aggregated refusal line:\n{stderr}");
    let mark = std::str::from_utf8(MARK).unwrap();
    assert!(
        !stderr.contains(mark),
        "a log line quotes the garbage:\n{stderr}"
    );
}
