//! Shared by the process-level tests: `sitelog node` child processes on loopback.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A free loopback address (the port is released for the node to bind).
pub fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A node process, killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts node `id` of the cluster whose founding members listen on `addrs`, with its data
/// in `root/n<id>`; returns once it listens.
pub fn spawn_node(id: u64, root: &Path, addrs: &BTreeMap<u64, String>, cluster: u64) -> Proc {
    spawn_node_with(id, root, addrs, cluster, &[], true)
}

/// Like `spawn_node`, with more arguments; `founding: false` starts a node that waits to be
/// added (no `--member`).
pub fn spawn_node_with(
    id: u64,
    root: &Path,
    addrs: &BTreeMap<u64, String>,
    cluster: u64,
    extra: &[&str],
    founding: bool,
) -> Proc {
    spawn_node_configured(id, root, addrs, cluster, extra, founding, |_| {})
}

/// Like `spawn_node_with`; `configure` adjusts the command last (e.g. a `pre_exec`).
pub fn spawn_node_configured(
    id: u64,
    root: &Path,
    addrs: &BTreeMap<u64, String>,
    cluster: u64,
    extra: &[&str],
    founding: bool,
    configure: impl FnOnce(&mut Command),
) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sitelog"));
    cmd.arg("node")
        .args(["--id", &id.to_string(), "--site", &format!("site-{id}")])
        .arg("--data")
        .arg(root.join(format!("n{id}")))
        .args([
            "--listen",
            &addrs[&id],
            "--cluster-id",
            &cluster.to_string(),
        ])
        .args(["--exit-after-secs", "300"]);
    cmd.args(extra);
    for (m, a) in addrs.iter().filter(|_| founding) {
        cmd.args(["--member", &format!("{m}=site-{m}@{a}")]);
    }
    configure(&mut cmd);
    let mut child = cmd
        .stdout(Stdio::piped())
        // SITELOG_TEST_STDERR=1 shows the nodes' logs (with RUST_LOG) when debugging a test.
        .stderr(if std::env::var_os("SITELOG_TEST_STDERR").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("spawn sitelog node");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("LISTENING"), "node {id} said {line:?}");
    // Drain the rest (a closed pipe would kill the node at its next line, e.g. `METRICS`).
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Proc { child }
}
