//! Fencing over a real network: three `sitelog node` processes, each in its own network
//! namespace, joined by a bridge in a fourth; the test talks to them through a veth of its
//! own on that bridge. nft drop rules isolate the leader's namespace from the other nodes
//! (the test can still reach it): the old leader acknowledges nothing, the majority elects a
//! new leader and keeps acknowledging, and after healing every node holds every
//! acknowledged record and none of the fenced ones.
//!
//! Needs root, `ip` and `nft` (`.ci/run` installs nftables); otherwise it prints why it is
//! skipped. Addresses are 10.201.N.0/24 on interfaces this test creates and removes.

use bytes::Bytes;
mod common;
use sitelog::node::client::{AppendOutcome, Client};
use sitelog::node::Role;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLUSTER: u64 = 0x0e55;

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn must(args: &[&str]) {
    assert!(sh(args), "command failed: {}", args.join(" "));
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    for tool in ["ip", "nft"] {
        if !sh(&[tool, "-V"]) && !sh(&[tool, "--version"]) {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// The namespaces, links and processes of one test run; removed on drop.
struct Net {
    tag: String,
    subnet: u32,
    procs: Vec<Child>,
}

impl Net {
    fn ns(&self, i: u64) -> String {
        format!("sl{}n{i}", self.tag)
    }
    fn sw(&self) -> String {
        format!("sl{}sw", self.tag)
    }
    fn ip(&self, i: u64) -> String {
        format!("10.201.{}.{i}", self.subnet)
    }

    fn build() -> Net {
        let pid = std::process::id();
        let net = Net {
            tag: format!("{:x}", pid % 0xfffff),
            subnet: pid % 250 + 1,
            procs: Vec::new(),
        };
        let sw = net.sw();
        must(&["ip", "netns", "add", &sw]);
        must(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        // Nodes 1..=3 in their namespaces, 100 = the test itself in the root namespace.
        for i in [1u64, 2, 3, 100] {
            let (a, b) = (format!("sl{}a{i}", net.tag), format!("sl{}b{i}", net.tag));
            must(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
            must(&["ip", "link", "set", &b, "netns", &sw]);
            must(&["ip", "-n", &sw, "link", "set", &b, "master", "br0", "up"]);
            let addr = format!("{}/24", net.ip(i));
            if i == 100 {
                must(&["ip", "addr", "add", &addr, "dev", &a]);
                must(&["ip", "link", "set", &a, "up"]);
            } else {
                let ns = net.ns(i);
                must(&["ip", "netns", "add", &ns]);
                must(&["ip", "link", "set", &a, "netns", &ns]);
                must(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &a]);
                must(&["ip", "-n", &ns, "link", "set", &a, "up"]);
                must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            }
        }
        net
    }

    fn addr(&self, i: u64) -> String {
        format!("{}:7000", self.ip(i))
    }

    fn start_node(&mut self, i: u64, root: &std::path::Path) {
        let ns = self.ns(i);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_sitelog"), "node"])
            .args(["--id", &i.to_string(), "--site", &format!("site-{i}")])
            .arg("--data")
            .arg(root.join(format!("n{i}")))
            .args([
                "--listen",
                &self.addr(i),
                "--cluster-id",
                &CLUSTER.to_string(),
            ])
            .args(["--exit-after-secs", "120", "--insecure"]);
        for m in 1..=3 {
            cmd.args(["--member", &format!("{m}=site-{m}@{}", self.addr(m))]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("LISTENING"), "node {i}: {line:?}");
        self.procs.push(child);
    }

    /// Drops everything node `i` exchanges with the other nodes (both directions).
    fn isolate(&self, i: u64) {
        let ns = self.ns(i);
        must(&[
            "ip", "netns", "exec", &ns, "nft", "add", "table", "inet", "chaos",
        ]);
        for (chain, hook) in [("in", "input"), ("out", "output")] {
            let spec = format!("{{ type filter hook {hook} priority 0; policy accept; }}");
            must(&[
                "ip", "netns", "exec", &ns, "nft", "add", "chain", "inet", "chaos", chain, &spec,
            ]);
        }
        for other in (1..=3).filter(|&o| o != i) {
            let ip = self.ip(other);
            must(&[
                "ip", "netns", "exec", &ns, "nft", "add", "rule", "inet", "chaos", "in", "ip",
                "saddr", &ip, "drop",
            ]);
            must(&[
                "ip", "netns", "exec", &ns, "nft", "add", "rule", "inet", "chaos", "out", "ip",
                "daddr", &ip, "drop",
            ]);
        }
    }

    fn heal(&self, i: u64) {
        must(&[
            "ip",
            "netns",
            "exec",
            &self.ns(i),
            "nft",
            "delete",
            "table",
            "inet",
            "chaos",
        ]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = sh(&["ip", "link", "del", &format!("sl{}a100", self.tag)]);
        for i in 1..=3 {
            let _ = sh(&["ip", "netns", "del", &self.ns(i)]);
        }
        let _ = sh(&["ip", "netns", "del", &self.sw()]);
    }
}

async fn status(addr: &str) -> Option<sitelog::node::NodeStatus> {
    let mut c = Client::new(vec![], CLUSTER);
    c.request_timeout_ms = 500;
    c.status_of(addr).await.ok()
}

async fn leader_among(net: &Net, ids: &[u64]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for &i in ids {
            if status(&net.addr(i))
                .await
                .is_some_and(|s| s.role == Role::Leader && s.term > 0)
            {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader among {ids:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_in_its_own_namespace_acknowledges_nothing() {
    if let Some(why) = skip_reason() {
        common::skip(&format!("netns partition test: {why}"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut net = Net::build();
    for i in 1..=3 {
        net.start_node(i, dir.path());
    }
    let all: Vec<String> = (1..=3).map(|i| net.addr(i)).collect();
    let client = Client::new(all.clone(), CLUSTER);
    let mut acked = BTreeMap::new();
    for k in 0..20 {
        let p = format!("before {k}");
        match client.append(vec![Bytes::from(p.clone())]).await {
            AppendOutcome::Ok(o) => {
                acked.insert(o[0], p);
            }
            other => panic!("append before the partition: {other:?}"),
        }
    }
    let old = leader_among(&net, &[1, 2, 3]).await;
    net.isolate(old);
    // The old leader is still reachable from the test, but not from its peers.
    let mut to_old = Client::new(vec![net.addr(old)], CLUSTER);
    to_old.request_timeout_ms = 1500;
    to_old.leader_wait_ms = 2000;
    for k in 0..3 {
        let outcome = to_old
            .append(vec![Bytes::from(format!("fenced {k}"))])
            .await;
        assert!(
            !matches!(outcome, AppendOutcome::Ok(_)),
            "isolated leader acknowledged: {outcome:?}"
        );
    }
    let others: Vec<u64> = (1..=3).filter(|&i| i != old).collect();
    let new = leader_among(&net, &others).await;
    let majority = Client::new(others.iter().map(|&i| net.addr(i)).collect(), CLUSTER);
    for k in 0..20 {
        let p = format!("after {k}");
        match majority.append(vec![Bytes::from(p.clone())]).await {
            AppendOutcome::Ok(o) => {
                acked.insert(o[0], p);
            }
            other => panic!("append on the majority side via {new}: {other:?}"),
        }
    }
    net.heal(old);
    let max = *acked.keys().max().unwrap();
    for i in 1..=3 {
        let addr = net.addr(i);
        let deadline = Instant::now() + Duration::from_secs(30);
        while status(&addr).await.is_none_or(|s| s.commit_end <= max) {
            assert!(Instant::now() < deadline, "node {i} did not catch up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let c = Client::new(vec![addr], CLUSTER);
        let (_, recs) = c.read(0, 10_000).await.unwrap();
        let got: BTreeMap<u64, String> = recs
            .iter()
            .map(|r| (r.offset, String::from_utf8_lossy(&r.payload).into_owned()))
            .collect();
        for (off, p) in &acked {
            assert_eq!(got.get(off), Some(p), "node {i} offset {off}");
        }
        assert!(
            !got.values().any(|p| p.starts_with("fenced")),
            "node {i} committed a fenced write"
        );
    }
}
