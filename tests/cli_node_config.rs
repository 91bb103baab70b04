//! `sitelog node --config FILE` (TOML) with `metrics_listen`: the node joins its peers, and a
//! plain HTTP GET on the metrics address returns the Prometheus text with sitelog's metrics.
//! The node writes its log with O_DIRECT (`direct_io = true`) beside two that do not.
//! Producer limits out of range are refused before the node starts.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, spawn_node, spawn_node_with, Proc};

const CLUSTER: u64 = 0xc0f1;

#[test]
fn node_from_toml_serves_prometheus_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: BTreeMap<u64, String> = (1..=3).map(|i| (i, free_port())).collect();
    let members: Vec<String> = addrs
        .iter()
        .map(|(i, a)| format!("{{ id = {i}, site = \"site-{i}\", addr = \"{a}\" }}"))
        .collect();
    let toml = format!(
        "id = 1\nsite = \"site-1\"\ndata = \"{}\"\nlisten = \"{}\"\ncluster_id = {CLUSTER}\n\
         insecure = true\nmetrics_listen = \"127.0.0.1:0\"\ntimers = \"lan\"\ndirect_io = true\nscrub_mb_per_s = 50\n\
         max_producers = 100\nproducer_idle_expiry_ms = 60000\nmembers = [{}]\n",
        dir.path().join("n1").display(),
        addrs[&1],
        members.join(", ")
    );
    let cfg = dir.path().join("node1.toml");
    std::fs::write(&cfg, toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["node", "--exit-after-secs", "120", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut l1, mut l2) = (String::new(), String::new());
    out.read_line(&mut l1).unwrap();
    out.read_line(&mut l2).unwrap();
    let _n1 = Proc { child };
    assert!(l1.starts_with("LISTENING"), "{l1:?}");
    let metrics_url = l2
        .trim()
        .strip_prefix("METRICS http://")
        .unwrap()
        .to_string();
    let metrics_addr = metrics_url.trim_end_matches("/metrics").to_string();
    let _others: Vec<_> = (2..=3)
        .map(|i| spawn_node(i, dir.path(), &addrs, CLUSTER))
        .collect();

    let nodes = addrs.values().cloned().collect::<Vec<_>>().join(",");
    let st = Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args([
            "append",
            "--insecure",
            "--count",
            "20",
            "--node",
            &nodes,
            "--cluster-id",
            &CLUSTER.to_string(),
        ])
        .status()
        .unwrap();
    assert!(st.success());

    // The gauges are sampled periodically: scrape until node 1 reports a commit offset.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = common::scrape_metrics(&metrics_addr);
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        if body.contains("sitelog_commit_offset") && body.contains("sitelog_fsync_latency_seconds")
        {
            break;
        }
        assert!(Instant::now() < deadline, "metrics never appeared:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A config missing a required field says which.
    std::fs::write(&cfg, "site = \"x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["node", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--id is required"));
}

/// Issue 16 item 6: `sitelog node` follows the library default and writes its log with
/// O_DIRECT (its metrics say `sitelog_direct_io 1`); `--no-direct-io` turns that off (0).
#[test]
fn node_writes_direct_by_default_and_no_direct_io_turns_it_off() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(u64, &[&str], &str); 2] = [
        (1, &[], "sitelog_direct_io 1"),
        (2, &["--no-direct-io"], "sitelog_direct_io 0"),
    ];
    for (id, extra, want) in cases {
        let addrs: BTreeMap<u64, String> = [(id, free_port())].into();
        let metrics_addr = free_port();
        // One node alone: placement would refuse a single site.
        let mut args = vec![
            "--metrics-listen",
            metrics_addr.as_str(),
            "--allow-unsafe-placement",
        ];
        args.extend_from_slice(extra);
        let _node = spawn_node_with(id, dir.path(), &addrs, CLUSTER, &args, true);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let body = common::scrape_metrics(&metrics_addr);
            if body.contains("sitelog_direct_io ") {
                assert!(body.lines().any(|l| l == want), "{want}:\n{body}");
                break;
            }
            assert!(Instant::now() < deadline, "no sitelog_direct_io:\n{body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn producer_limits_out_of_range_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    for (flag, value) in [
        ("--max-producers", "0"),
        ("--max-producers", "65537"),
        ("--producer-idle-expiry-ms", "9999"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sitelog"))
            .args(["node", "--id", "1", "--site", "site-1", "--insecure"])
            .arg("--data")
            .arg(dir.path().join("n1"))
            .args(["--listen", &addr, "--cluster-id", &CLUSTER.to_string()])
            .args(["--member", &format!("1=site-1@{addr}")])
            .args(["--exit-after-secs", "5", flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        let name = flag.trim_start_matches("--").replace('-', "_");
        assert!(stderr.contains(&name), "{flag} {value}: {stderr}");
    }
}
