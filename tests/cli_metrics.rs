//! `sitelog node --metrics-listen`: a bare port binds loopback and serves plain HTTP; a
//! closed stdout does not kill the node; `--metrics-tls-dir` serves HTTPS with the node's
//! certificate (a client trusting the cluster CA scrapes it, no client certificate needed);
//! a non-loopback address is served with a warning at start; a rotated certificate is served
//! after SIGHUP, and a bad rotation keeps the previous one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{free_port, Proc};
use sitelog::net::certs::{self, CertOptions};
use sitelog::net::tls::{TlsDir, TlsIdentity, Who};

const CLUSTER: u64 = 0x3e7c;
const GET: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

/// A one-node cluster with `extra` arguments; stdout as given, stderr to `stderr`.
fn node(root: &Path, extra: &[&str], exit_secs: u64, stdout: Stdio, stderr: &Path) -> Child {
    let addr = free_port();
    Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["node", "--id", "1", "--site", "site-1", "--data"])
        .arg(root.join("n1"))
        .args(["--listen", &addr, "--cluster-id", &CLUSTER.to_string()])
        .arg("--insecure")
        .args(["--member", &format!("1=site-1@{addr}")])
        .args([
            "--allow-unsafe-placement",
            "--exit-after-secs",
            &exit_secs.to_string(),
        ])
        .args(extra)
        .stdout(stdout)
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap()
}

fn http_get(addr: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(GET)?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// Polls `get` until it answers 200 with the Prometheus content type.
fn scrape_until_ok(what: &str, mut get: impl FnMut() -> std::io::Result<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match get() {
            Ok(body) if body.starts_with("HTTP/1.1 200 OK") => {
                assert!(
                    body.contains("Content-Type: text/plain; version=0.0.4"),
                    "{body}"
                );
                return body;
            }
            other => assert!(Instant::now() < deadline, "{what}: no scrape: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A bare port means 127.0.0.1:PORT, plain HTTP; the node's stdout is closed before it
/// prints `LISTENING`: it keeps serving and exits cleanly at `--exit-after-secs` instead of
/// dying of EPIPE (a panic exits 101).
#[test]
fn bare_port_serves_http_on_loopback_with_stdout_closed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().rsplit_once(':').unwrap().1.to_string();
    let log = dir.path().join("n1.stderr");
    let args = ["--metrics-listen", port.as_str()];
    let child = node(dir.path(), &args, EXIT_SECS, closed_pipe(), &log);
    let mut n1 = Proc { child };
    let addr = format!("127.0.0.1:{port}");
    scrape_until_ok("http", || http_get(&addr));
    let deadline = Instant::now() + Duration::from_secs(EXIT_SECS + 20);
    let status = loop {
        if let Some(status) = n1.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "node did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = read(&log);
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("non-loopback"), "{stderr}");
}

/// How long the EPIPE test's node runs: enough to start and be scraped once.
const EXIT_SECS: u64 = 4;

/// The write end of a pipe whose read end is closed: every write fails with EPIPE.
fn closed_pipe() -> Stdio {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills both descriptors on success; each is owned exactly once below.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: fresh descriptors from pipe2, owned by nothing else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read_end);
    Stdio::from(write_end)
}

/// HTTPS with the node's certificate on a non-loopback address (warned about): a rustls
/// client that trusts the cluster CA and has no certificate of its own scrapes it; plain
/// HTTP gets nothing.
#[test]
fn tls_dir_serves_https_and_a_wide_address_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let init = Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["certs", "init", "--nodes", "1=site-1", "--dir"])
        .arg(&tls)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let log = dir.path().join("n1.stderr");
    let tls_arg = tls.to_str().unwrap();
    let args = [
        "--metrics-listen",
        "0.0.0.0:0",
        "--metrics-tls-dir",
        tls_arg,
    ];
    let mut child = node(dir.path(), &args, 120, Stdio::piped(), &log);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut l1, mut l2) = (String::new(), String::new());
    out.read_line(&mut l1).unwrap();
    out.read_line(&mut l2).unwrap();
    let _n1 = Proc { child };
    assert!(l1.starts_with("LISTENING"), "{l1:?}; {}", read(&log));
    let bound = l2
        .trim()
        .strip_prefix("METRICS https://0.0.0.0:")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{l2:?}"));
    let addr = format!("127.0.0.1:{bound}");

    let client = Arc::new(tls_client(&tls.join("ca.pem")));
    let body = scrape_until_ok("https", || https_get(&addr, &client));
    assert!(body.len() > 100, "{body}");
    // Plain HTTP against the TLS port: no metrics.
    let plain = http_get(&addr).unwrap_or_default();
    assert!(!plain.contains("200 OK"), "{plain}");
    let stderr = read(&log);
    let warned = stderr
        .lines()
        .filter(|l| l.contains("non-loopback"))
        .count();
    assert_eq!(warned, 1, "{stderr}");
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");

    // Rotation: a new node certificate from the same CA, then SIGHUP: new HTTPS connections
    // get it.
    let old = served_cert(&addr, &client);
    assert_eq!(old, cert_file_der(&tls));
    let node1 = TlsIdentity::Node {
        id: 1,
        site: "site-1".into(),
    };
    let force = CertOptions {
        force: true,
        ..CertOptions::default()
    };
    certs::issue(&tls, &node1, &force).unwrap();
    let new = cert_file_der(&tls);
    assert_ne!(old, new);
    sighup(_n1.child.id());
    let rotated = eventually(|| served_cert(&addr, &client) == new);
    assert!(
        rotated,
        "the metrics endpoint never served the rotated certificate"
    );
    scrape_until_ok("https after rotation", || https_get(&addr, &client));

    // A bad rotation (a truncated certificate): logged, and the last good one is served.
    std::fs::write(
        TlsDir::new(&tls).cert(Who::Node(1)),
        "-----BEGIN CERTIFICATE-----\n",
    )
    .unwrap();
    sighup(_n1.child.id());
    let logged = eventually(|| {
        read(&log)
            .lines()
            .any(|l| l.contains("TLS reload failed") && l.contains("metrics"))
    });
    assert!(logged, "no failed metrics reload logged: {}", read(&log));
    assert_eq!(served_cert(&addr, &client), new);
}

/// The certificate the metrics endpoint at `addr` serves now.
fn served_cert(addr: &str, client: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("node-1").unwrap();
    let mut conn = rustls::ClientConnection::new(client.clone(), name).unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    conn.peer_certificates().unwrap()[0].to_vec()
}

fn cert_file_der(tls: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let path = TlsDir::new(tls).cert(Who::Node(1));
    let mut certs = rustls::pki_types::CertificateDer::pem_file_iter(path).unwrap();
    certs.next().unwrap().unwrap().to_vec()
}

fn sighup(pid: u32) {
    // SAFETY: kill(2) on our own child, not yet reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0);
}

/// Polls `cond` every 50 ms until it holds or 10 s pass.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn tls_client(ca: &Path) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(sitelog::net::tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The node's certificate names it `node-1` (DNS SAN), the name its peers dial it by.
fn https_get(addr: &str, client: &Arc<rustls::ClientConfig>) -> std::io::Result<String> {
    let name = rustls::pki_types::ServerName::try_from("node-1").unwrap();
    let conn =
        rustls::ClientConnection::new(client.clone(), name).map_err(std::io::Error::other)?;
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut s = rustls::StreamOwned::new(conn, sock);
    s.write_all(GET)?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}
