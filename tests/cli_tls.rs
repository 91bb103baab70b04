//! The TLS contract of the `sitelog` binary (issue 15): a node (or client command) given
//! neither `--tls-dir` nor `--insecure`, or both, refuses to run and says why; a cluster of
//! `sitelog node --tls-dir` processes serves `append`/`read`/`status --tls-dir`, refuses a
//! `consume` client's append with the typed error and a plaintext client altogether; node
//! certificates rotated on disk are served after SIGHUP without a restart, and a bad
//! rotation keeps the node serving with the previous ones.

mod common;

use common::{free_port, spawn_node_with};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sitelog::net::certs::{self, CertOptions};
use sitelog::net::tls::{ClientRole, TlsDir, TlsIdentity, Who};
use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLUSTER: u64 = 0x7154;

fn sitelog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn node_and_client_refuse_to_run_without_exactly_one_security_choice() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("n1");
    let node = |extra: &[&str]| {
        let mut args = vec!["node", "--id", "1", "--site", "site-1", "--data"];
        args.push(data.to_str().unwrap());
        args.extend(["--listen", "127.0.0.1:0", "--cluster-id", "7"]);
        args.extend(["--exit-after-secs", "5"]);
        args.extend(extra);
        sitelog(&args)
    };
    let neither = node(&[]);
    assert!(!neither.status.success());
    let msg = stderr(&neither);
    assert!(
        msg.contains("--tls-dir") && msg.contains("--insecure"),
        "{msg}"
    );
    assert!(
        !data.exists(),
        "a refused node must not create its data: {msg}"
    );

    let tls = tmp.path().join("tls");
    let both = node(&["--insecure", "--tls-dir", tls.to_str().unwrap()]);
    assert!(!both.status.success());
    let msg = stderr(&both);
    assert!(
        msg.contains("--tls-dir") && msg.contains("--insecure"),
        "{msg}"
    );

    // The TOML keys follow the same rule.
    let cfg = tmp.path().join("n1.toml");
    std::fs::write(
        &cfg,
        format!(
            "id = 1\nsite = \"site-1\"\ndata = \"{}\"\ncluster_id = 7\nlisten = \"127.0.0.1:0\"\n\
             insecure = true\ntls_dir = \"{}\"\n",
            data.display(),
            tls.display()
        ),
    )
    .unwrap();
    let file_both = sitelog(&["node", "--config", cfg.to_str().unwrap()]);
    assert!(!file_both.status.success());
    assert!(stderr(&file_both).contains("exclude each other"));

    // A client command: the same rule.
    let client = sitelog(&["status", "--node", &free_port(), "--cluster-id", "7"]);
    assert!(!client.status.success());
    let msg = stderr(&client);
    assert!(
        msg.contains("--tls-dir") && msg.contains("--insecure"),
        "{msg}"
    );
}

/// The certificate node `id` serves now (a TLS handshake as the admin client).
async fn served_cert(addr: &str, tls: &TlsDir, id: u64) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(tls.ca_cert()).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let who = Who::Client(ClientRole::Admin);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(tls.cert(who))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(tls.key(who)).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(sitelog::net::tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(format!("node-{id}")).unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let (_, conn) = stream.get_ref();
    conn.peer_certificates().unwrap()[0].to_vec()
}

fn cert_file_der(tls: &TlsDir, id: u64) -> Vec<u8> {
    let mut certs = CertificateDer::pem_file_iter(tls.cert(Who::Node(id))).unwrap();
    certs.next().unwrap().unwrap().to_vec()
}

fn sighup(pid: u32) {
    // SAFETY: kill(2) on our own child, not yet reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0);
}

/// Polls `cond` every 50 ms until it holds or `limit_ms` passes.
async fn eventually(limit_ms: u64, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_millis(limit_ms);
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_processes_serve_tls_clients_by_role_and_rotate_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let dir_s = dir.to_str().unwrap().to_string();
    let init = sitelog(&[
        "certs",
        "init",
        "--dir",
        &dir_s,
        "--nodes",
        "1=site-1,2=site-2,3=site-3",
    ]);
    assert!(init.status.success(), "{}", stderr(&init));
    let tls = TlsDir::new(&dir);
    let addrs: BTreeMap<u64, String> = (1..=3).map(|i| (i, free_port())).collect();
    let extra = ["--tls-dir", dir_s.as_str()];
    let procs: BTreeMap<u64, _> = (1..=3)
        .map(|i| {
            (
                i,
                spawn_node_with(i, tmp.path(), &addrs, CLUSTER, &extra, true),
            )
        })
        .collect();
    let nodes = addrs.values().cloned().collect::<Vec<_>>().join(",");
    let cluster = CLUSTER.to_string();
    let client = |cmd: &[&str], more: &[&str]| {
        let mut args = cmd.to_vec();
        args.extend(["--node", nodes.as_str(), "--cluster-id", cluster.as_str()]);
        args.extend(more);
        sitelog(&args)
    };
    let tls_flags = ["--tls-dir", dir_s.as_str()];

    let out = client(&["append", "--count", "5", "--size", "50"], &tls_flags);
    assert!(out.status.success(), "{}", stderr(&out));
    let consume = ["--tls-dir", dir_s.as_str(), "--role", "consume"];
    let out = client(&["read"], &consume);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);
    let out = client(&["status"], &consume);
    assert!(out.status.success(), "{}", stderr(&out));

    // Refused by role: the typed error, exit non-zero, nothing appended.
    let out = client(&["append", "--count", "1"], &consume);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not allowed"), "{}", stderr(&out));
    // Plaintext against the TLS ports: no append goes through.
    let t = Instant::now();
    let out = client(&["append", "--count", "1"], &["--insecure"]);
    eprintln!(
        "plaintext append refused in {:?}: {}",
        t.elapsed(),
        stderr(&out)
    );
    assert!(!out.status.success(), "{}", stderr(&out));
    let out = client(&["read"], &consume);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);

    // Rotation: a new certificate for node 1 from the same CA, then SIGHUP.
    let addr1 = addrs[&1].clone();
    let old = served_cert(&addr1, &tls, 1).await;
    assert_eq!(old, cert_file_der(&tls, 1));
    let node1 = TlsIdentity::Node {
        id: 1,
        site: "site-1".into(),
    };
    let force = CertOptions {
        force: true,
        ..CertOptions::default()
    };
    certs::issue(&dir, &node1, &force).unwrap();
    let new = cert_file_der(&tls, 1);
    assert_ne!(old, new);
    sighup(procs[&1].child.id());
    let rotated = eventually(10_000, async || served_cert(&addr1, &tls, 1).await == new).await;
    assert!(rotated, "node 1 never served its rotated certificate");
    let out = sitelog(&[
        "status",
        "--node",
        &addr1,
        "--cluster-id",
        &cluster,
        "--tls-dir",
        &dir_s,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A bad rotation (a truncated certificate): the node says so and keeps the last good one.
    std::fs::write(tls.cert(Who::Node(1)), "-----BEGIN CERTIFICATE-----\n").unwrap();
    sighup(procs[&1].child.id());
    let log = tmp.path().join("n1.stderr");
    let logged = eventually(10_000, async || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("TLS reload failed"))
    })
    .await;
    assert!(logged, "no reload failure logged");
    assert_eq!(served_cert(&addr1, &tls, 1).await, new);
    let out = client(&["append", "--count", "2"], &tls_flags);
    assert!(out.status.success(), "{}", stderr(&out));
}
