//! Appends/s of an in-process 3-node cluster on loopback, plaintext against mutual TLS, in
//! the same run: `cargo run --release --example tls_throughput [SECONDS] [WRITERS] [BYTES]`
//! (defaults 5 s, 32 concurrent appenders, 256-byte records). Each writer awaits one append
//! at a time; a record counts once a majority has it fsynced.

use bytes::Bytes;
use sitelog::net::certs::{generate, CertOptions};
use sitelog::net::tls::{ClientRole, Security};
use sitelog::node::client::Client;
use sitelog::node::{Node, NodeConfig, Peer};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const CLUSTER: u64 = 0x7b;

async fn run(root: &Path, security: Security, secs: f64, writers: usize, bytes: usize) -> f64 {
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listeners.insert(id, l);
    }
    let members: BTreeMap<u64, Peer> = listeners
        .iter()
        .map(|(id, l)| {
            let addr = l.local_addr().unwrap().to_string();
            let site = format!("site-{id}");
            (*id, Peer { site, addr })
        })
        .collect();
    let mut nodes = Vec::new();
    for (id, l) in listeners {
        let dir = root.join(format!("n{id}"));
        let mut cfg = NodeConfig::new(id, &format!("site-{id}"), dir, "127.0.0.1:0", CLUSTER);
        cfg.initial_members = members.clone();
        cfg.security = security.clone();
        nodes.push(Node::start_on(cfg, l).await.unwrap());
    }
    let addrs: Vec<String> = members.values().map(|p| p.addr.clone()).collect();
    let client = match &security {
        Security::Insecure => Client::new(addrs, CLUSTER),
        Security::Tls(dir) => {
            Client::new_tls(addrs, CLUSTER, dir.clone(), ClientRole::Produce).unwrap()
        }
    };
    let payload = Bytes::from(vec![0x5a; bytes]);
    client.try_append(vec![payload.clone()]).await.unwrap(); // a leader is elected
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (client, payload) = (client.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                if client.try_append(vec![payload.clone()]).await.is_ok() {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    for n in nodes {
        n.shutdown().await.unwrap();
    }
    rate
}

#[tokio::main]
async fn main() {
    let arg = |i: usize, d: f64| std::env::args().nth(i).map_or(d, |a| a.parse().unwrap());
    let (secs, writers, bytes) = (arg(1, 5.0), arg(2, 32.0) as usize, arg(3, 256.0) as usize);
    let tmp = tempfile::tempdir().unwrap();
    let nodes = (1..=3u64).map(|id| (id, format!("site-{id}"))).collect();
    let tls = generate(&tmp.path().join("tls"), &nodes, &CertOptions::default()).unwrap();
    let plain = run(
        &tmp.path().join("plain"),
        Security::Insecure,
        secs,
        writers,
        bytes,
    )
    .await;
    let secure = run(
        &tmp.path().join("tls-run"),
        Security::Tls(tls),
        secs,
        writers,
        bytes,
    )
    .await;
    println!("writers={writers} record_bytes={bytes} seconds={secs}");
    println!("insecure: {plain:.0} appends/s");
    println!(
        "tls:      {secure:.0} appends/s ({:+.1} %)",
        (secure / plain - 1.0) * 100.0
    );
}
