//! TLS configurations against real handshakes over loopback TCP, with certificates from
//! `certs`.

use super::*;
use crate::net::certs::{self, CertAuthority, CertOptions, Validity};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every handshake of these tests finishes in milliseconds; this only turns a hang into a
/// failure.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
const DAY: Duration = Duration::from_secs(86_400);

fn sites() -> BTreeMap<u64, String> {
    (1..=3).map(|id| (id, format!("site-{id}"))).collect()
}

fn init(dir: &Path) -> TlsDir {
    certs::generate(dir, &sites(), &CertOptions::default()).unwrap()
}

fn node(id: u64, site: &str) -> TlsIdentity {
    TlsIdentity::Node {
        id,
        site: site.into(),
    }
}

fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

fn is_cert_error(e: &std::io::Error, want: fn(&CertificateError) -> bool) -> bool {
    matches!(rustls_error(e), Some(rustls::Error::InvalidCertificate(c)) if want(c))
}

/// Like `TlsConfig::load` without the check of our own chain: what a misconfigured (or
/// hostile) peer would present.
fn load_unchecked(dir: &TlsDir, who: Who) -> TlsConfig {
    let provider = crypto_provider();
    let roots = Arc::new(load_roots(&dir.ca_cert()).unwrap());
    let chain = load_chain(&dir.cert(who)).unwrap();
    let key = load_key(&provider, &dir.key(who)).unwrap();
    let identity = TlsIdentity::from_cert(&chain[0]).unwrap();
    let server = match who {
        Who::Node(_) => {
            let config = server_config(&provider, &roots, chain.clone(), key.clone_key());
            Some(Arc::new(config.unwrap()))
        }
        Who::Client(_) => None,
    };
    let client = Arc::new(client_config(&provider, &roots, chain, key).unwrap());
    TlsConfig {
        identity,
        server,
        client,
    }
}

type Side = std::result::Result<TlsIdentity, std::io::Error>;

/// One handshake between `server` and `client` dialling `target`, then one byte from the
/// server (so that a client refused by the server learns it). Returns what each side saw:
/// the peer's identity, or its error.
async fn handshake(server: &TlsConfig, client: &TlsConfig, target: DialTarget) -> (Side, Side) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = server.acceptor().expect("a node configuration serves");
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let id = peer_identity(tls.get_ref().1).expect("a verified peer has an identity");
        tls.write_all(b"k").await?;
        tls.shutdown().await?;
        Ok(id)
    });
    let connector = client.connector();
    let client_side = async move {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = connector.connect(target.server_name(), tcp).await?;
        let id = peer_identity(tls.get_ref().1).expect("a verified peer has an identity");
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        Ok(id)
    };
    let client = tokio::time::timeout(HANDSHAKE_DEADLINE, client_side)
        .await
        .expect("client side finished");
    let server = tokio::time::timeout(HANDSHAKE_DEADLINE, server_side)
        .await
        .expect("server side finished")
        .unwrap();
    (server, client)
}

#[tokio::test]
async fn the_right_node_is_accepted_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let tls = init(dir.path());
    let server = TlsConfig::load(&tls, Who::Node(2)).unwrap();
    let client = TlsConfig::load(&tls, Who::Node(1)).unwrap();
    assert_eq!(server.identity(), &node(2, "site-2"));
    let (s, c) = handshake(&server, &client, DialTarget::Node(2)).await;
    assert_eq!(c.unwrap(), node(2, "site-2"));
    let peer = s.unwrap();
    assert_eq!(peer, node(1, "site-1"));
    peer.check_node(1).unwrap();
    // Node 1 claiming (in its messages) to be node 3 is caught against its certificate.
    assert!(matches!(peer.check_node(3), Err(Error::Tls { .. })));
    // The configuration's Debug leaves the key out (it prints the identity only).
    let debug = format!("{server:?}");
    assert!(
        debug.contains("site-2") && !debug.contains("key"),
        "{debug}"
    );
}

#[tokio::test]
async fn a_consume_client_is_identified_by_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let tls = init(dir.path());
    let server = TlsConfig::load(&tls, Who::Node(2)).unwrap();
    let client = TlsConfig::load(&tls, Who::Client(ClientRole::Consume)).unwrap();
    assert!(client.server_config().is_none(), "a client does not serve");
    let (s, c) = handshake(&server, &client, DialTarget::AnyNode).await;
    assert_eq!(c.unwrap(), node(2, "site-2"));
    let seen = s.unwrap();
    assert_eq!(
        seen,
        TlsIdentity::Client {
            role: ClientRole::Consume
        }
    );
    let TlsIdentity::Client { role } = seen else {
        unreachable!()
    };
    assert!(role.check(Operation::Read).is_ok());
    assert!(matches!(
        role.check(Operation::Append),
        Err(Error::NotAllowed {
            role: ClientRole::Consume,
            op: Operation::Append
        })
    ));
}

/// Copies `who`'s certificate and key from `from` into `to` (which trusts another CA).
fn transplant(from: &TlsDir, to: &TlsDir, who: Who) {
    std::fs::copy(from.cert(who), to.cert(who)).unwrap();
    std::fs::copy(from.key(who), to.key(who)).unwrap();
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_refused_both_ways() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    let ours = init(ours.path());
    let theirs = init(theirs.path());
    // A client that trusts our CA but presents their certificate: our server refuses it.
    let mixed = tempfile::tempdir().unwrap();
    let mixed = TlsDir::new(mixed.path());
    std::fs::copy(ours.ca_cert(), mixed.ca_cert()).unwrap();
    transplant(&theirs, &mixed, Who::Node(1));
    transplant(&theirs, &mixed, Who::Node(2));
    let server = TlsConfig::load(&ours, Who::Node(2)).unwrap();
    let err = TlsConfig::load(&mixed, Who::Node(1)).unwrap_err();
    assert!(
        matches!(err, Error::Tls { .. }),
        "our own load refuses it: {err}"
    );
    let intruder = load_unchecked(&mixed, Who::Node(1));
    let (s, c) = handshake(&server, &intruder, DialTarget::Node(2)).await;
    let s = s.unwrap_err();
    assert!(
        is_cert_error(&s, |c| *c == CertificateError::UnknownIssuer),
        "{s}"
    );
    assert!(c.is_err(), "the refused client learns it");
    // A server that trusts our CA but presents their certificate: our client refuses it.
    let impostor = load_unchecked(&mixed, Who::Node(2));
    let client = TlsConfig::load(&ours, Who::Node(1)).unwrap();
    let (s, c) = handshake(&impostor, &client, DialTarget::Node(2)).await;
    let c = c.unwrap_err();
    assert!(
        is_cert_error(&c, |c| *c == CertificateError::UnknownIssuer),
        "{c}"
    );
    assert!(s.is_err());
}

/// A directory whose CA is kept in memory, to issue more certificates later.
fn dir_with_ca(path: &Path) -> (TlsDir, CertAuthority) {
    let tls = TlsDir::new(path);
    let ca = CertAuthority::new(Validity::days_from_now(1)).unwrap();
    certs::write_ca(&tls, &ca).unwrap();
    for (id, site) in sites() {
        let cert = ca
            .issue(&node(id, &site), Validity::days_from_now(1))
            .unwrap();
        certs::write_issued(&tls, Who::Node(id), &cert).unwrap();
    }
    (tls, ca)
}

#[tokio::test]
async fn an_expired_certificate_is_refused_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, ca) = dir_with_ca(dir.path());
    let now = SystemTime::now();
    let expired = Validity {
        not_before: now - 2 * DAY,
        not_after: now - DAY,
    };
    let server = TlsConfig::load(&tls, Who::Node(2)).unwrap();
    let old = ca.issue(&node(1, "site-1"), expired).unwrap();
    certs::write_issued(&tls, Who::Node(1), &old).unwrap();
    let err = TlsConfig::load(&tls, Who::Node(1)).unwrap_err();
    assert!(
        matches!(err, Error::Tls { .. }),
        "our own load refuses it: {err}"
    );
    let stale = load_unchecked(&tls, Who::Node(1));
    let expired_error = |c: &CertificateError| {
        matches!(
            c,
            CertificateError::Expired | CertificateError::ExpiredContext { .. }
        )
    };
    let (s, c) = handshake(&server, &stale, DialTarget::Node(2)).await;
    let s = s.unwrap_err();
    assert!(is_cert_error(&s, expired_error), "{s}");
    assert!(c.is_err());
    // And the other way round: node 1 (expired) serving, node 2 dialling it.
    let client = TlsConfig::load(&tls, Who::Node(2)).unwrap();
    let (s, c) = handshake(&stale, &client, DialTarget::Node(1)).await;
    let c = c.unwrap_err();
    assert!(is_cert_error(&c, expired_error), "{c}");
    assert!(s.is_err());
}

#[tokio::test]
async fn node_2_dialled_as_node_3_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tls = init(dir.path());
    let server = TlsConfig::load(&tls, Who::Node(2)).unwrap();
    let client = TlsConfig::load(&tls, Who::Node(1)).unwrap();
    let (s, c) = handshake(&server, &client, DialTarget::Node(3)).await;
    let c = c.unwrap_err();
    assert!(
        is_cert_error(&c, |c| *c == CertificateError::NotValidForName),
        "{c}"
    );
    assert!(s.is_err());
    // Nor can node 2's certificate be installed as node 3's: loading it is refused.
    std::fs::copy(tls.cert(Who::Node(2)), tls.cert(Who::Node(3))).unwrap();
    std::fs::copy(tls.key(Who::Node(2)), tls.key(Who::Node(3))).unwrap();
    let err = TlsConfig::load(&tls, Who::Node(3)).unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");
}

#[tokio::test]
async fn plaintext_against_the_tls_server_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let tls = init(dir.path());
    let acceptor = TlsConfig::load(&tls, Who::Node(2))
        .unwrap()
        .acceptor()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.map(|_| ())
    });
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: node-2\r\n\r\n")
        .await
        .unwrap();
    let result = tokio::time::timeout(HANDSHAKE_DEADLINE, server)
        .await
        .expect("the server gives up at once")
        .expect("no panic");
    let err = result.unwrap_err();
    assert!(rustls_error(&err).is_some(), "a TLS error: {err}");
    assert!(matches!(handshake_error(err), Error::Tls { .. }));
    // The server answered with an alert (or closed); either way the stream ends.
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest).await;
}

/// Serves with `reloader`'s current configuration at each accept, echoing bytes back.
async fn echo_server(reloader: Arc<TlsReloader>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = reloader.current().acceptor().unwrap();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = tls.read(&mut buf).await {
                    if tls.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

async fn dial(addr: SocketAddr, client: &TlsConfig) -> (ClientStream, TlsIdentity) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio::time::timeout(
        HANDSHAKE_DEADLINE,
        client
            .connector()
            .connect(DialTarget::Node(2).server_name(), tcp),
    )
    .await
    .expect("handshake finished")
    .unwrap();
    let id = peer_identity(tls.get_ref().1).unwrap();
    (tls, id)
}

async fn echo(stream: &mut ClientStream, msg: &[u8]) {
    stream.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(HANDSHAKE_DEADLINE, stream.read_exact(&mut back))
        .await
        .expect("echo arrived")
        .unwrap();
    assert_eq!(back, msg);
}

#[tokio::test]
async fn reload_swaps_the_certificate_for_new_connections_only() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, ca) = dir_with_ca(dir.path());
    let reloader = Arc::new(TlsReloader::load(tls.clone(), Who::Node(2)).unwrap());
    let addr = echo_server(reloader.clone()).await;
    let client = TlsConfig::load(&tls, Who::Node(1)).unwrap();
    let (mut old, id) = dial(addr, &client).await;
    assert_eq!(id, node(2, "site-2"));
    assert!(
        !reloader.reload_if_changed().unwrap(),
        "nothing changed yet"
    );

    // Rotation: node 2 gets a new certificate (another site, to tell them apart).
    let rotated = ca
        .issue(&node(2, "site-2b"), Validity::days_from_now(1))
        .unwrap();
    certs::write_issued(&tls, Who::Node(2), &rotated).unwrap();
    assert!(reloader.reload_if_changed().unwrap());
    let (mut new, id) = dial(addr, &client).await;
    assert_eq!(id, node(2, "site-2b"));
    echo(&mut new, b"new").await;
    echo(&mut old, b"the old connection still works").await;

    // A broken file: the reload fails with a typed error and the last good configuration stays.
    std::fs::write(tls.cert(Who::Node(2)), b"not a certificate").unwrap();
    let err = reloader.reload().unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    // Nor does a certificate of another CA replace it.
    let other = CertAuthority::new(Validity::days_from_now(1)).unwrap();
    let foreign = other
        .issue(&node(2, "site-2x"), Validity::days_from_now(1))
        .unwrap();
    certs::write_issued(&tls, Who::Node(2), &foreign).unwrap();
    assert!(matches!(
        reloader.reload_if_changed(),
        Err(Error::Tls { .. })
    ));
    assert!(
        !reloader.reload_if_changed().unwrap(),
        "not retried unchanged"
    );
    let (mut again, id) = dial(addr, &client).await;
    assert_eq!(id, node(2, "site-2b"));
    echo(&mut again, b"still served").await;
    echo(&mut old, b"and the old one too").await;
}

#[test]
fn identities_parse_strictly() {
    for id in [node(0, "a"), node(u64::MAX, "site-1.x_y~z")] {
        assert_eq!(TlsIdentity::parse_uri(&id.uri()).unwrap(), id);
    }
    for role in ClientRole::ALL {
        let id = TlsIdentity::Client { role };
        assert_eq!(TlsIdentity::parse_uri(&id.uri()).unwrap(), id);
    }
    assert_eq!(node(7, "s").uri(), "sitelog://node/7?site=s");
    assert_eq!(
        TlsIdentity::Client {
            role: ClientRole::Produce
        }
        .uri(),
        "sitelog://client/produce"
    );
    for bad in [
        "",
        "sitelog://node/1",
        "sitelog://node/1?site=",
        "sitelog://node/01?site=a",
        "sitelog://node/+1?site=a",
        "sitelog://node/-1?site=a",
        "sitelog://node/18446744073709551616?site=a",
        "sitelog://node/1?site=a b",
        "sitelog://node/1?site=a&x=y",
        "sitelog://node/1/?site=a",
        "sitelog://client/root",
        "sitelog://client/admin/",
        "sitelog://client/Admin",
        "https://node/1?site=a",
    ] {
        let err = TlsIdentity::parse_uri(bad).unwrap_err();
        assert!(matches!(err, Error::Tls { .. }), "{bad:?}");
    }
}

#[test]
fn roles_allow_exactly_their_operations() {
    use Operation::*;
    let all = [
        Append,
        Read,
        Subscribe,
        Status,
        Membership,
        ReplaceNode,
        Snapshot,
    ];
    for op in all {
        assert!(ClientRole::Admin.allows(op));
        assert_eq!(ClientRole::Produce.allows(op), op == Append, "{op}");
        assert_eq!(
            ClientRole::Consume.allows(op),
            matches!(op, Read | Subscribe | Status),
            "{op}"
        );
    }
    let err = ClientRole::Produce.check(Membership).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not allowed: the client role produce does not allow membership change"
    );
}

/// A certificate of `uris` (and nothing else), self-signed: enough for identity parsing.
fn cert_with_uris(uris: &[&str]) -> CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = uris
        .iter()
        .map(|u| rcgen::SanType::URI((*u).try_into().unwrap()))
        .collect();
    params.self_signed(&key).unwrap().der().clone()
}

#[test]
fn a_certificate_needs_exactly_one_identity() {
    let one = cert_with_uris(&["sitelog://client/admin"]);
    assert_eq!(
        TlsIdentity::from_cert(&one).unwrap(),
        TlsIdentity::Client {
            role: ClientRole::Admin
        }
    );
    for uris in [
        &[][..],
        &["sitelog://client/admin", "sitelog://node/1?site=a"][..],
        &["sitelog://client/admin", "https://example.com/"][..],
        &["sitelog://client/superuser"][..],
    ] {
        let err = TlsIdentity::from_cert(&cert_with_uris(uris)).unwrap_err();
        assert!(matches!(err, Error::Tls { .. }), "{uris:?}");
    }
}

#[test]
fn certs_generate_writes_private_keys_and_guards_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tls");
    let tls = init(&path);
    let mut keys = vec![tls.ca_key()];
    keys.extend((1..=3).map(|id| tls.key(Who::Node(id))));
    keys.extend(ClientRole::ALL.map(|r| tls.key(Who::Client(r))));
    for key in &keys {
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    }
    let dir_mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let ca_before = std::fs::read(tls.ca_cert()).unwrap();
    let err = certs::generate(&path, &sites(), &CertOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    assert_eq!(std::fs::read(tls.ca_cert()).unwrap(), ca_before, "CA kept");
    let force = CertOptions {
        force: true,
        ..CertOptions::default()
    };
    certs::generate(&path, &sites(), &force).unwrap();
    assert_ne!(
        std::fs::read(tls.ca_cert()).unwrap(),
        ca_before,
        "CA replaced"
    );
    let bad_site: BTreeMap<u64, String> = [(1, "site 1".to_string())].into();
    let err = certs::generate(&dir.path().join("x"), &bad_site, &force).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[test]
fn load_errors_name_the_file_and_never_its_contents() {
    let dir = tempfile::tempdir().unwrap();
    let tls = init(dir.path());
    let secret = "-----BEGIN PRIVATE KEY-----\nU0VDUkVUU0VDUkVU\n-----END PRIVATE KEY-----\n";
    std::fs::write(tls.key(Who::Node(1)), secret).unwrap();
    let err = TlsConfig::load(&tls, Who::Node(1)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Tls { .. }), "{text}");
    assert!(text.contains("node-1.key"), "{text}");
    assert!(!text.contains("U0VDUkVU"), "{text}");
    // A file over the limit is refused unread.
    let big = vec![b'A'; MAX_PEM_FILE_BYTES as usize + 1];
    std::fs::write(tls.cert(Who::Node(2)), big).unwrap();
    let err = TlsConfig::load(&tls, Who::Node(2)).unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    // A missing file is an I/O error naming it.
    std::fs::remove_file(tls.ca_cert()).unwrap();
    let err = TlsConfig::load(&tls, Who::Node(3)).unwrap_err();
    assert!(
        matches!(err, Error::Io { ref path, .. } if *path == tls.ca_cert()),
        "{err}"
    );
}

#[test]
fn issued_cert_debug_hides_the_key() {
    let ca = CertAuthority::new(Validity::days_from_now(1)).unwrap();
    let text = format!("{ca:?}");
    assert!(text.contains("<secret>"));
    assert!(!text.contains("PRIVATE KEY"), "{text}");
}
