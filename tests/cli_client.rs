//! The client commands against three `sitelog node` processes: `append --ledger` writes what
//! was acknowledged, `read --check-ledger` agrees with it (and exits 2 on a doctored ledger),
//! `read` prints committed records as JSON lines, `status` shows one leader (and warns that
//! `--role` has no effect with `--insecure`); a wrong
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
        .arg("--insecure")
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
    // Appends go through an idempotent producer: each line says how often it was resent.
    assert!(text.lines().all(|l| l.contains(" retries=")), "{text}");

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

    // --role with --insecure: plaintext has no roles; said at start, and the command works.
    let out = sitelog(&["status", "--role", "consume"], &nodes);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("--role has no effect with --insecure: plaintext has no roles"),
        "{err}"
    );
    assert!(
        !String::from_utf8_lossy(&sitelog(&["status"], &nodes).stderr).contains("--role"),
        "no warning without an explicit --role"
    );

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
            "--insecure",
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

/// Lines of a child's stdout, as they come (a thread reads them into a channel).
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next `n` lines within 20 s, parsed as JSON.
fn take_json(rx: &std::sync::mpsc::Receiver<String>, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    (0..n)
        .map(|i| {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("line {i} of {n} did not come: {e}"));
            serde_json::from_str(&line).unwrap()
        })
        .collect()
}

#[test]
fn read_follow_prints_records_as_they_commit_and_stops_at_to() {
    use common::spawn_node_with;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let addrs: BTreeMap<u64, String> = BTreeMap::from([(1, free_port())]);
    let _node = spawn_node_with(
        1,
        dir.path(),
        &addrs,
        CLUSTER,
        &["--allow-unsafe-placement"],
        true,
    );
    let node = &addrs[&1];
    let append = |n: &str| {
        let out = sitelog(&["append", "--count", n, "--size", "40"], node);
        assert!(out.status.success(), "{out:?}");
    };
    append("3");

    let mut follow = common::Proc {
        child: Command::new(env!("CARGO_BIN_EXE_sitelog"))
            .args(["read", "--follow", "--payload"])
            .args(["--node", node, "--cluster-id", &CLUSTER.to_string()])
            .arg("--insecure")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    };
    let rx = lines_of(&mut follow.child);
    let old = take_json(&rx, 3);
    // Appended while it follows: printed as they commit, same line format as `read`.
    append("4");
    let new = take_json(&rx, 4);
    let all: Vec<_> = old.iter().chain(&new).collect();
    for (i, r) in all.iter().enumerate() {
        for field in ["offset", "term", "timestamp_us", "size", "crc32", "payload"] {
            assert!(r.get(field).is_some(), "{field} missing in {r}");
        }
        let i_sent = if i < 3 { i } else { i - 3 };
        let payload = r["payload"].as_str().unwrap();
        assert!(payload.starts_with(&format!("msg {i_sent} ")), "{r}");
        if i > 0 {
            assert!(
                r["offset"].as_u64() > all[i - 1]["offset"].as_u64(),
                "order"
            );
        }
    }
    assert!(
        follow.child.try_wait().unwrap().is_none(),
        "still following"
    );
    drop(follow);

    // --to still stops it, also right after the last record (nothing more to wait for).
    let to = (all[6]["offset"].as_u64().unwrap() + 1).to_string();
    let mut bounded = common::Proc {
        child: Command::new(env!("CARGO_BIN_EXE_sitelog"))
            .args(["read", "--follow", "--payload", "--from", "0", "--to", &to])
            .args(["--node", node, "--cluster-id", &CLUSTER.to_string()])
            .arg("--insecure")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    };
    let rx = lines_of(&mut bounded.child);
    assert_eq!(
        take_json(&rx, 7),
        all.into_iter().cloned().collect::<Vec<_>>()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = bounded.child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "--to did not stop it");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success());
    assert!(rx.recv().is_err(), "nothing after --to");
}
