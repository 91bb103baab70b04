//! The client commands against three `sitelog node` processes: `append --ledger` writes what
//! was acknowledged, `read --check-ledger` agrees with it (and exits 2 on a doctored ledger),
//! `read` prints committed records as JSON lines, `status` shows one leader; a wrong
//! `--cluster-id` and nodes that are only learners are named at once.

use std::collections::BTreeMap;
use std::process::Command;

mod common;
use common::{free_port, spawn_node};

const CLUSTER: u64 = 0xc11e;

fn sitelog(args: &[&str], nodes: &str) -> std::process::Output {
    sitelog_of(CLUSTER, args, nodes)
}

fn sitelog_of(cluster: u64, args: &[&str], nodes: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(args)
        .args(["--node", nodes, "--cluster-id", &cluster.to_string()])
        .output()
        .unwrap()
}

/// Far below the client's 10 s leader wait: the refusal comes from the nodes' answers.
const QUICK_MS: u128 = 5000;

#[test]
fn wrong_cluster_id_and_learner_only_nodes_are_named_quickly() {
    use common::spawn_node_with;
    let dir = tempfile::tempdir().unwrap();
    let addrs: BTreeMap<u64, String> = (1..=3).map(|i| (i, free_port())).collect();
    // No `--member`: each node waits to be added, a learner of no cluster.
    let _procs: Vec<_> = (1..=3)
        .map(|i| spawn_node_with(i, dir.path(), &addrs, CLUSTER, &[], false))
        .collect();
    let nodes = addrs.values().cloned().collect::<Vec<_>>().join(",");

    let started = std::time::Instant::now();
    let out = sitelog_of(CLUSTER + 1, &["append", "--count", "1"], &nodes);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cluster id mismatch"), "{err}");
    assert!(started.elapsed().as_millis() < QUICK_MS, "{err}");

    let out = sitelog_of(CLUSTER + 1, &["read"], &nodes);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cluster id mismatch"), "{err}");

    let started = std::time::Instant::now();
    let out = sitelog(&["append", "--count", "1"], &nodes);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "no leader: nodes are learners — start them with --member ID=SITE@ADDR on every node"
        ),
        "{err}"
    );
    assert!(started.elapsed().as_millis() < QUICK_MS, "{err}");

    // Learners know no leader: `leader none`, never Rust's `None`.
    let out = sitelog(&["status"], &nodes);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("leader none").count(), 3, "{text}");

    // Nobody answers: a failure, not a table of errors with exit 0.
    let out = sitelog(&["status"], &free_port());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no node answered"));
}

#[test]
fn append_ledger_read_and_status_agree() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: BTreeMap<u64, String> = (1..=3).map(|i| (i, free_port())).collect();
    let _procs: Vec<_> = (1..=3)
        .map(|i| spawn_node(i, dir.path(), &addrs, CLUSTER))
        .collect();
    let nodes = addrs.values().cloned().collect::<Vec<_>>().join(",");
    let ledger = dir.path().join("ledger");
    let ledger_s = ledger.to_str().unwrap();

    let out = sitelog(
        &[
            "append", "--count", "200", "--size", "100", "--ledger", ledger_s,
        ],
        &nodes,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&ledger).unwrap();
    let ok = text.lines().filter(|l| l.contains(" OK ")).count();
    assert_eq!(text.lines().count(), 200);
    assert_eq!(ok, 200, "{text}");

    let out = sitelog(&["read", "--check-ledger", ledger_s], &nodes);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = sitelog(&["read", "--payload"], &nodes);
    assert!(out.status.success());
    let recs: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 200, "only the messages, not Raft's own entries");
    assert!(recs[0]["payload"].as_str().unwrap().starts_with("msg 0 "));

    // A doctored ledger (one checksum changed) is caught.
    let doctored = dir.path().join("doctored");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let f: Vec<&str> = lines[5].split(' ').collect();
    lines[5] = format!("{} 00000000 {} OK {}", f[0], f[2], f[4]);
    std::fs::write(&doctored, lines.join("\n")).unwrap();
    let out = sitelog(
        &["read", "--check-ledger", doctored.to_str().unwrap()],
        &nodes,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MISMATCH"));

    let out = sitelog(&["status"], &nodes);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(!table.contains("Some("), "{table}");
    assert_eq!(table.matches("leader none").count(), 0, "{table}");

    let out = sitelog(&["status", "--json"], &nodes);
    let st: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(st.len(), 3);
    assert_eq!(
        st.iter().filter(|s| s["role"] == "Leader").count(),
        1,
        "{st:?}"
    );

    // A second run appends to the ledger, its ids continuing after the highest.
    let out = sitelog(&["append", "--count", "5", "--ledger", ledger_s], &nodes);
    assert!(out.status.success());
    let text = std::fs::read_to_string(&ledger).unwrap();
    let ids: Vec<u64> = text
        .lines()
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (0..205).collect::<Vec<u64>>());
    let out = sitelog(&["read", "--check-ledger", ledger_s], &nodes);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("205 acknowledged messages checked"), "{said}");
}

#[test]
fn replace_node_rebuilds_a_lost_site_by_snapshot() {
    use common::spawn_node_with;
    let dir = tempfile::tempdir().unwrap();
    let mut addrs: BTreeMap<u64, String> = (1..=3).map(|i| (i, free_port())).collect();
    let small = [
        "--segment-bytes",
        "65536",
        "--snapshot-every",
        "300",
        "--snapshot-keep",
        "50",
    ];
    let mut procs: BTreeMap<u64, _> = (1..=3)
        .map(|i| {
            (
                i,
                spawn_node_with(i, dir.path(), &addrs, CLUSTER, &small, true),
            )
        })
        .collect();
    let nodes = addrs.values().cloned().collect::<Vec<_>>().join(",");
    let ledger = dir.path().join("ledger");
    let out = sitelog(
        &[
            "append",
            "--count",
            "800",
            "--size",
            "400",
            "--ledger",
            ledger.to_str().unwrap(),
        ],
        &nodes,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Site 3 is lost with its disk; node 4 (a new id) starts empty and waits.
    drop(procs.remove(&3));
    std::fs::remove_dir_all(dir.path().join("n3")).unwrap();
    addrs.insert(4, free_port());
    let _n4 = spawn_node_with(4, dir.path(), &addrs, CLUSTER, &small, false);
    let survivors = format!("{},{}", addrs[&1], addrs[&2]);
    let out = Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args([
            "replace-node",
            "--node",
            &survivors,
            "--cluster-id",
            &CLUSTER.to_string(),
        ])
        .args([
            "--dead",
            "3",
            "--new-id",
            "4",
            "--new-site",
            "site-4",
            "--new-addr",
            &addrs[&4],
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The new node alone serves every acknowledged message.
    let out = sitelog(
        &["read", "--check-ledger", ledger.to_str().unwrap()],
        &addrs[&4],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sitelog(&["status", "--json"], &addrs[&4]);
    let st: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(st["node"], 4);
    let total = st["catch_up_total_bytes"].as_u64().unwrap();
    assert!(total > 0, "caught up without a snapshot: {st}");
    assert_eq!(st["catch_up_done_bytes"].as_u64().unwrap(), total);
}
