//! Shared by the process-level tests: `sitelog node` child processes on loopback.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// This test binary, to re-invoke as a child process on one of its own ignored tests:
/// `/proc/self/exe` still execs this binary if a concurrent build has replaced the file.
pub fn this_test_binary() -> std::path::PathBuf {
    let proc_exe = Path::new("/proc/self/exe");
    if proc_exe.exists() {
        proc_exe.to_path_buf()
    } else {
        std::env::current_exe().expect("current_exe")
    }
}

/// For a child process (see `kill_child_after`): prints `line` on a line of its own and
/// blocks on standard input until the parent kills this process.
pub fn say_and_wait_for_kill(line: &str) {
    use std::io::{Read, Write};
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n{line}").expect("stdout");
    out.flush().expect("stdout");
    drop(out);
    let _ = std::io::stdin().read(&mut [0u8; 1]);
}

/// Runs this test binary on its ignored test `child` with `envs`, reads its standard output
/// until a line starting with `prefix`, then kills it (SIGKILL) and reaps it; returns the rest
/// of that line (`None` if the child ended without printing one). The child blocks on its
/// standard input (a pipe kept open) until it is killed.
pub fn kill_child_after(child: &str, envs: &[(&str, &str)], prefix: &str) -> Option<String> {
    let mut proc = Command::new(this_test_binary())
        .args(["--ignored", "--exact", child, "--nocapture"])
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(proc.stdout.take().unwrap());
    let found = stdout
        .lines()
        .map(|l| l.unwrap())
        .find_map(|l| l.strip_prefix(prefix).map(str::to_string));
    proc.kill().unwrap();
    proc.wait().unwrap();
    found
}

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

/// Like `spawn_node_with`; the node's stderr (its log lines) goes to the file `stderr`.
pub fn spawn_node_logged(
    id: u64,
    root: &Path,
    addrs: &BTreeMap<u64, String>,
    cluster: u64,
    extra: &[&str],
    founding: bool,
    stderr: &Path,
) -> Proc {
    let log = std::fs::File::create(stderr).expect("node log file");
    spawn_node_configured(id, root, addrs, cluster, extra, founding, |cmd| {
        cmd.stderr(log);
    })
}

/// Like `spawn_node_with`; `configure` adjusts the command last (e.g. a `pre_exec`, another
/// stderr).
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
    // A node needs a security choice: plaintext unless the test gives its TLS directory.
    if !extra.contains(&"--tls-dir") {
        cmd.arg("--insecure");
    }
    cmd.args(extra);
    for (m, a) in addrs.iter().filter(|_| founding) {
        cmd.args(["--member", &format!("{m}=site-{m}@{a}")]);
    }
    // The node's log lines go to `root/n<id>.stderr` (appended across restarts), so a node
    // that fails to start says why; SITELOG_TEST_STDERR=1 shows them (with RUST_LOG) instead.
    let stderr_path = root.join(format!("n{id}.stderr"));
    cmd.stdout(Stdio::piped())
        .stderr(if std::env::var_os("SITELOG_TEST_STDERR").is_some() {
            Stdio::inherit()
        } else {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&stderr_path)
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null())
        });
    // Descriptors this process inherited without close-on-exec (a CI runner's) must not
    // reach the node: tests that cap its descriptors count on a node that starts with a
    // few. std's own are close-on-exec already; kernels before 5.11 lack close_range.
    // SAFETY: a raw syscall, async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
    configure(&mut cmd);
    let mut child = cmd.spawn().expect("spawn sitelog node");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    if !line.starts_with("LISTENING") {
        let _ = child.wait();
        let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
        panic!("node {id} said {line:?}; the last lines of its log, newest first:\n{tail}");
    }
    // Drain the rest (a closed pipe would kill the node at its next line, e.g. `METRICS`).
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Proc { child }
}

/// All committed normal records of the node at `addr` below `commit_end`, by offset.
pub async fn read_all(addr: &str, cluster: u64, commit_end: u64) -> BTreeMap<u64, bytes::Bytes> {
    let c = sitelog::node::client::Client::new(vec![addr.to_string()], cluster);
    let mut out = BTreeMap::new();
    let mut next = 0;
    while next < commit_end {
        let (_, recs) = c.read(next, 1000).await.unwrap();
        let Some(last) = recs.last() else { break };
        next = last.offset + 1;
        for r in recs {
            out.insert(r.offset, r.payload);
        }
    }
    out
}

/// Says on stderr that a test (or a part of it) is skipped, and why: `SKIPPED: <reason>`.
/// libtest captures `println!`/`eprintln!` of a passing test, so the line is written to stderr
/// directly, where `cargo test` shows it, instead of a silent "ok".
pub fn skip(reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {reason}");
}

/// Whether this process runs as root (mounting file systems needs it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A tmpfs of `size` (as `mount -o size=` takes it) on a temporary directory; unmounted
/// (lazily if busy) on drop.
pub struct Tmpfs {
    pub path: std::path::PathBuf,
    // Removed after `drop` has unmounted the file system.
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let path = dir.path().to_path_buf();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { path, _dir: dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Founds an in-process cluster of nodes `1..=n` on loopback, one site each (`site-<id>`):
/// every listener is bound first, so each founding node is given every member's address.
/// `config(id)` gives node `id`'s configuration; its `initial_members` is set here.
pub async fn found_cluster(
    n: u64,
    config: impl Fn(u64) -> sitelog::node::NodeConfig,
) -> (
    BTreeMap<u64, sitelog::node::Peer>,
    BTreeMap<u64, sitelog::node::Node>,
) {
    let mut listeners = BTreeMap::new();
    for id in 1..=n {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listeners.insert(id, l);
    }
    let members: BTreeMap<u64, sitelog::node::Peer> = listeners
        .iter()
        .map(|(id, l)| {
            let p = sitelog::node::Peer {
                site: format!("site-{id}"),
                addr: l.local_addr().unwrap().to_string(),
            };
            (*id, p)
        })
        .collect();
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        let mut cfg = config(id);
        cfg.initial_members = members.clone();
        let node = sitelog::node::Node::start_on(cfg, l).await.unwrap();
        nodes.insert(id, node);
    }
    (members, nodes)
}

/// The id of the live node that says it leads `cluster`, asked of each in turn (20 s at most).
pub async fn leader_of(
    addrs: &BTreeMap<u64, String>,
    live: &BTreeMap<u64, Proc>,
    cluster: u64,
) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        for id in live.keys() {
            let mut c = sitelog::node::client::Client::new(vec![], cluster);
            c.request_timeout_ms = 500;
            if let Ok(s) = c.status_of(&addrs[id]).await {
                if s.role == sitelog::node::Role::Leader {
                    return *id;
                }
            }
        }
        assert!(std::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The body (with status line and headers) of one `GET /metrics` from a node's metrics
/// endpoint at `addr` (plain HTTP; 5 s read timeout).
pub fn scrape_metrics(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}
