//! `sitelog certs init`: the files of the contract, private keys (mode 0600), certificates
//! that load as the identities they were issued for, and a CA that is not replaced without
//! `--force`.

use sitelog::net::tls::{ClientRole, TlsConfig, TlsDir, TlsIdentity, Who};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn certs_init(dir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["certs", "init", "--dir"])
        .arg(dir)
        .args(["--nodes", "1=site-1,2=site-2,3=site-3"])
        .args(extra)
        .output()
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn certs_init_writes_the_contract_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let out = certs_init(&dir, &["--days", "30"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want = vec!["ca.key".to_string(), "ca.pem".to_string()];
    for stem in ["node-1", "node-2", "node-3"]
        .into_iter()
        .map(String::from)
        .chain(["produce", "consume", "admin"].map(|r| format!("client-{r}")))
    {
        want.push(format!("{stem}.key"));
        want.push(format!("{stem}.pem"));
    }
    want.sort();
    assert_eq!(names, want, "exactly the documented files, no leftovers");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed.lines().count(), want.len(), "{printed}");
    for name in &names {
        let want_mode = if name.ends_with(".key") { 0o600 } else { 0o644 };
        assert_eq!(mode(&dir.join(name)), want_mode, "{name}");
    }
    assert_eq!(mode(&dir), 0o700);

    let tls = TlsDir::new(&dir);
    for id in 1..=3u64 {
        let config = TlsConfig::load(&tls, Who::Node(id)).unwrap();
        let site = format!("site-{id}");
        assert_eq!(config.identity(), &TlsIdentity::Node { id, site });
    }
    for role in ClientRole::ALL {
        let config = TlsConfig::load(&tls, Who::Client(role)).unwrap();
        assert_eq!(config.identity(), &TlsIdentity::Client { role });
    }
}

#[test]
fn certs_init_keeps_an_existing_ca_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert!(certs_init(dir, &[]).status.success());
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let again = certs_init(dir, &[]);
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);
    let forced = certs_init(dir, &["--force"]);
    assert!(forced.status.success());
    assert_ne!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);
}

#[test]
fn certs_init_refuses_bad_node_lists() {
    let tmp = tempfile::tempdir().unwrap();
    for nodes in ["1=site 1", "1=a,1=b", "x=site", "1=", ""] {
        let out = Command::new(env!("CARGO_BIN_EXE_sitelog"))
            .args(["certs", "init", "--dir"])
            .arg(tmp.path().join("never"))
            .args(["--nodes", nodes])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{nodes:?}");
        assert!(
            !tmp.path().join("never").join("ca.pem").exists(),
            "{nodes:?}"
        );
    }
}

fn certs_issue(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sitelog"))
        .args(["certs", "issue", "--dir"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

/// A replacement node gets a certificate from the existing CA: it loads (so it chains to the
/// CA the other nodes trust), names the new node, and the CA and old certificates are
/// untouched; an existing node certificate is replaced only with `--force`.
#[test]
fn certs_issue_adds_a_node_under_the_existing_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert!(certs_init(dir, &[]).status.success());
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let node1 = std::fs::read(dir.join("node-1.pem")).unwrap();

    let out = certs_issue(dir, &["--node", "4=site-2", "--days", "30"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let files: Vec<&str> = printed.lines().collect();
    assert_eq!(files.len(), 2, "{printed}");
    assert!(files[0].ends_with("node-4.pem") && files[1].ends_with("node-4.key"));
    assert_eq!(mode(&dir.join("node-4.key")), 0o600);
    assert_eq!(
        std::fs::read(dir.join("ca.pem")).unwrap(),
        ca,
        "CA unchanged"
    );
    assert_eq!(std::fs::read(dir.join("node-1.pem")).unwrap(), node1);
    let tls = TlsDir::new(dir);
    // `load` checks the chain against ca.pem: issued by the same CA.
    let config = TlsConfig::load(&tls, Who::Node(4)).unwrap();
    let site = "site-2".to_string();
    assert_eq!(config.identity(), &TlsIdentity::Node { id: 4, site });

    let key = std::fs::read(dir.join("node-4.key")).unwrap();
    let again = certs_issue(dir, &["--node", "4=site-2"]);
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    assert_eq!(std::fs::read(dir.join("node-4.key")).unwrap(), key, "kept");

    let forced = certs_issue(dir, &["--node", "4=site-3", "--force"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_ne!(
        std::fs::read(dir.join("node-4.key")).unwrap(),
        key,
        "a new key"
    );
    let config = TlsConfig::load(&tls, Who::Node(4)).unwrap();
    let site = "site-3".to_string();
    assert_eq!(config.identity(), &TlsIdentity::Node { id: 4, site });
}

#[test]
fn certs_issue_client_roles_and_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // No CA yet: refused, nothing written.
    let none = certs_issue(dir, &["--client", "consume"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(!dir.join("client-consume.pem").exists());

    assert!(certs_init(dir, &[]).status.success());
    let refused = certs_issue(dir, &["--client", "consume"]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "an existing role needs --force"
    );
    let out = certs_issue(dir, &["--client", "consume", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tls = TlsDir::new(dir);
    let config = TlsConfig::load(&tls, Who::Client(ClientRole::Consume)).unwrap();
    let role = ClientRole::Consume;
    assert_eq!(config.identity(), &TlsIdentity::Client { role });

    for bad in [
        vec!["--client", "root"],
        vec!["--node", "5"],
        vec!["--node", "5=a,6=b"],
        vec![],
        vec!["--node", "5=a", "--client", "admin"],
    ] {
        let out = certs_issue(dir, &bad);
        assert!(!out.status.success(), "{bad:?} accepted");
    }
    assert!(!dir.join("node-5.pem").exists());
}
