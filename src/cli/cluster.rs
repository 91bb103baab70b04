//! A cluster of `sitelog node` child processes on loopback, for `bench --replicated` (and the
//! drill): spawn, SIGKILL, restart, find the leader.

use super::{CliError, CliResult, Context};
use crate::net::certs::{self, CertOptions};
use crate::net::tls::{ClientRole, TlsIdentity};
use crate::node::client::Client;
use crate::node::{NodeStatus, Role};
use crate::TlsDir;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Children exit by themselves after this long, should the parent die without killing them.
const CHILD_MAX_RUNTIME_SECS: u64 = 3600;

/// Node processes of one cluster.
pub struct LocalCluster {
    pub cluster_id: u64,
    /// `--io` of every node (`auto`, `io_uring`, `posix`).
    pub io: &'static str,
    /// More `sitelog node` arguments for every node.
    pub extra_args: Vec<String>,
    pub addrs: BTreeMap<u64, String>,
    /// `--exit-after-secs` of every node spawned from now on (a long soak raises it).
    pub max_runtime_secs: u64,
    /// The certificates (a CA of this cluster's own, under the root) when the nodes serve TLS;
    /// `None`: `--insecure`.
    pub tls: Option<TlsDir>,
    /// The client every other one is made from (admin role under TLS).
    base: Client,
    root: PathBuf,
    procs: BTreeMap<u64, Child>,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for (_, mut p) in std::mem::take(&mut self.procs) {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn free_port() -> CliResult<String> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").context(|| "cannot find a free port".into())?;
    Ok(l.local_addr().context(|| "local_addr".into())?.to_string())
}

impl LocalCluster {
    /// Starts `n` nodes (ids 1..=n, one site each) with data under `root`; with `tls`, a new
    /// CA and certificates in `root/tls` and mutual TLS everywhere, else `--insecure`.
    pub fn start(
        root: &Path,
        n: u64,
        cluster_id: u64,
        io: &'static str,
        extra_args: Vec<String>,
        tls: bool,
    ) -> CliResult<LocalCluster> {
        let mut addrs = BTreeMap::new();
        for id in 1..=n {
            addrs.insert(id, free_port()?);
        }
        let (tls, base) = if tls {
            let sites = (1..=n).map(|id| (id, site_of(id))).collect();
            let dir = root.join("tls");
            let dir = certs::generate(&dir, &sites, &CertOptions::default())
                .context(|| format!("cannot create certificates in {}", dir.display()))?;
            let base = Client::new_tls(vec![], cluster_id, dir.clone(), ClientRole::Admin)?;
            (Some(dir), base)
        } else {
            (None, Client::new(vec![], cluster_id))
        };
        let mut c = LocalCluster {
            cluster_id,
            io,
            extra_args,
            addrs,
            max_runtime_secs: CHILD_MAX_RUNTIME_SECS,
            tls,
            base,
            root: root.to_path_buf(),
            procs: BTreeMap::new(),
        };
        for id in 1..=n {
            c.spawn(id)?;
        }
        Ok(c)
    }

    /// Starts (or restarts) node `id` on its data directory.
    pub fn spawn(&mut self, id: u64) -> CliResult<()> {
        self.spawn_with(id, true)
    }

    /// Starts a new node `id` (site `site-<id>`, a fresh port) that joins an existing cluster
    /// as a learner once the leader adds it; returns its address.
    pub fn spawn_joining(&mut self, id: u64) -> CliResult<String> {
        let addr = free_port()?;
        self.addrs.insert(id, addr.clone());
        self.spawn_with(id, false)?;
        Ok(addr)
    }

    /// Node `id`'s data directory.
    pub fn node_dir(&self, id: u64) -> PathBuf {
        self.root.join(format!("node-{id}"))
    }

    /// Forgets node `id` (killed and lost for good): clients stop trying it.
    pub fn forget(&mut self, id: u64) {
        self.kill(id);
        self.addrs.remove(&id);
    }

    /// The `sitelog node` security flags of node `id`: its certificate (issued now by the
    /// cluster's CA if the node is new, e.g. a replacement) or `--insecure`.
    fn security_args(&self, id: u64) -> CliResult<Vec<std::ffi::OsString>> {
        let Some(dir) = &self.tls else {
            return Ok(vec!["--insecure".into()]);
        };
        if !dir.cert(crate::net::tls::Who::Node(id)).exists() {
            let identity = TlsIdentity::Node {
                id,
                site: site_of(id),
            };
            certs::issue(dir.path(), &identity, &CertOptions::default())
                .context(|| format!("cannot issue node {id}'s certificate"))?;
        }
        Ok(vec!["--tls-dir".into(), dir.path().into()])
    }

    fn spawn_with(&mut self, id: u64, founding: bool) -> CliResult<()> {
        let exe = std::env::current_exe().context(|| "cannot find the sitelog binary".into())?;
        let mut cmd = Command::new(exe);
        cmd.arg("node")
            .args(["--id", &id.to_string(), "--site", &site_of(id)])
            .args(self.security_args(id)?)
            .arg("--data")
            .arg(self.node_dir(id))
            .args(["--listen", &self.addrs[&id]])
            .args([
                "--cluster-id",
                &self.cluster_id.to_string(),
                "--io",
                self.io,
            ])
            .args(["--exit-after-secs", &self.max_runtime_secs.to_string()]);
        cmd.args(&self.extra_args);
        if founding {
            for (m, a) in &self.addrs {
                cmd.args(["--member", &format!("{m}={}@{a}", site_of(*m))]);
            }
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context(|| format!("cannot start node {id}"))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out)
                .read_line(&mut line)
                .context(|| format!("node {id} output"))?;
        }
        if !line.starts_with("LISTENING") {
            let _ = child.kill();
            return Err(CliError(format!("node {id} did not start: {line:?}")));
        }
        self.procs.insert(id, child);
        Ok(())
    }

    /// SIGKILL of node `id`'s process (and reaping it).
    pub fn kill(&mut self, id: u64) {
        if let Some(mut p) = self.procs.remove(&id) {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// The process id of node `id`, if it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.procs.get(&id).map(Child::id)
    }

    /// Clean stop of node `id`: SIGTERM, then waits up to `limit` for it to exit (SIGKILL
    /// after that). Returns whether it exited by itself with status 0.
    pub async fn terminate(&mut self, id: u64, limit: Duration) -> bool {
        let Some(mut p) = self.procs.remove(&id) else {
            return false;
        };
        let Ok(pid) = libc::pid_t::try_from(p.id()) else {
            let _ = p.kill();
            let _ = p.wait();
            return false;
        };
        // SAFETY: kill(2) on our own, not yet reaped child: the pid cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        loop {
            match p.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                _ => {
                    let _ = p.kill();
                    let _ = p.wait();
                    return false;
                }
            }
        }
    }

    /// The ids of running nodes.
    pub fn live(&self) -> Vec<u64> {
        self.procs.keys().copied().collect()
    }

    /// The status of node `id`, if it answers quickly.
    pub async fn status(&self, id: u64) -> Option<NodeStatus> {
        let mut c = self.base.with_addrs(vec![]);
        c.request_timeout_ms = 500;
        c.status_of(&self.addrs[&id]).await.ok()
    }

    /// The running node that leads by its own account, within `timeout`.
    pub async fn leader(&self, timeout: Duration) -> CliResult<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            for id in self.live() {
                if self
                    .status(id)
                    .await
                    .is_some_and(|s| s.role == Role::Leader)
                {
                    return Ok(id);
                }
            }
            if Instant::now() >= deadline {
                return Err(CliError("no leader was elected in time".into()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A client of the whole cluster.
    pub fn client(&self) -> Client {
        self.base.with_addrs(self.addrs.values().cloned().collect())
    }

    /// A client of `addrs` only (secured like the cluster).
    pub fn client_of(&self, addrs: Vec<String>) -> Client {
        self.base.with_addrs(addrs)
    }
}

/// The site of node `id` in a local cluster.
fn site_of(id: u64) -> String {
    format!("site-{id}")
}
