//! Mutual TLS 1.3 (rustls, ring provider): identities in certificates, the rustls
//! configurations of a node or client, and their reload from disk.
//!
//! The transport ([`super::tcp`]) takes a [`TlsReloader`] on every listener and connector;
//! [`Security`] is how a node or client is configured.
//!
//! # Identities
//!
//! Every certificate carries exactly one identity, as a subject-alternative-name URI:
//! - a node: `sitelog://node/<id>?site=<site>`, plus the DNS name `node-<id>` (what a client
//!   dialling node `<id>` checks the chain against);
//! - a client: `sitelog://client/<role>`, role `produce`, `consume` or `admin`.
//!
//! Parsing is strict (no other URI, one identity, canonical spelling): a certificate with no
//! identity or with two is refused during the handshake, by the verifiers below.
//!
//! # Trust
//!
//! Only the cluster CA (`ca.pem` of the [`TlsDir`]) is trusted, in both directions: a server
//! requires a client certificate chaining to it; a client verifies the server's chain against it
//! and then that the certificate names the node it dialled ([`DialTarget`]). TLS 1.3 only.
//! Session resumption is off: every connection runs the full verification against the current
//! CA, so a reloaded CA or certificate takes effect for every new connection.

use crate::error::{Error, Result};
use crate::limits::MAX_SITE_BYTES;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName,
    RootCertStore, ServerConfig, SignatureScheme,
};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

/// Largest PEM file read (a certificate chain, a key, the CA): real ones are a few KiB; a
/// larger file is a mistake (or an attack on memory) and is refused unread.
pub const MAX_PEM_FILE_BYTES: u64 = 64 << 10;
/// Most certificates in one PEM file (the CA file, or an end entity and its intermediates).
pub const MAX_CHAIN_CERTS: usize = 8;
/// The URI prefix of a node identity.
pub const NODE_URI_PREFIX: &str = "sitelog://node/";
/// The URI prefix of a client identity.
pub const CLIENT_URI_PREFIX: &str = "sitelog://client/";
/// The server name a client sends when it does not know which node it dials (a seed
/// address): any node certificate of the cluster CA is accepted.
pub const ANY_NODE_SERVER_NAME: &str = "any-node.sitelog";

/// What a client may do; each client certificate carries one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientRole {
    /// Append only.
    Produce,
    /// Read, subscribe and status only.
    Consume,
    /// Everything, including membership changes, node replacement and snapshots.
    Admin,
}

/// A kind of request, as the authorization check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Append records.
    Append,
    /// Read committed records.
    Read,
    /// Subscribe to (tail) the log.
    Subscribe,
    /// Cluster and node status.
    Status,
    /// Add or remove members, change voters.
    Membership,
    /// Replace a lost node.
    ReplaceNode,
    /// Snapshots (trigger, fetch).
    Snapshot,
}

impl ClientRole {
    /// Every role, in the order `sitelog certs init` issues them.
    pub const ALL: [ClientRole; 3] = [ClientRole::Produce, ClientRole::Consume, ClientRole::Admin];

    /// The role's name in certificates, file names and `--role`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientRole::Produce => "produce",
            ClientRole::Consume => "consume",
            ClientRole::Admin => "admin",
        }
    }

    /// True when this role may perform `op`.
    pub fn allows(self, op: Operation) -> bool {
        match self {
            ClientRole::Admin => true,
            ClientRole::Produce => op == Operation::Append,
            ClientRole::Consume => {
                matches!(
                    op,
                    Operation::Read | Operation::Subscribe | Operation::Status
                )
            }
        }
    }

    /// `Ok` when this role may perform `op`, else [`Error::NotAllowed`].
    pub fn check(self, op: Operation) -> Result<()> {
        if self.allows(op) {
            Ok(())
        } else {
            Err(Error::NotAllowed { role: self, op })
        }
    }
}

impl fmt::Display for ClientRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ClientRole {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        ClientRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| tls_error(format!("{s:?} is not a role (produce, consume, admin)")))
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Append => "append",
            Operation::Read => "read",
            Operation::Subscribe => "subscribe",
            Operation::Status => "status",
            Operation::Membership => "membership change",
            Operation::ReplaceNode => "replace-node",
            Operation::Snapshot => "snapshot",
        })
    }
}

/// Who a certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsIdentity {
    /// A node of the cluster.
    Node {
        /// Its node id.
        id: u64,
        /// Its site.
        site: String,
    },
    /// A client with a role.
    Client {
        /// What it may do.
        role: ClientRole,
    },
}

impl TlsIdentity {
    /// The identity's URI (the certificate's subject alternative name).
    pub fn uri(&self) -> String {
        match self {
            TlsIdentity::Node { id, site } => format!("{NODE_URI_PREFIX}{id}?site={site}"),
            TlsIdentity::Client { role } => format!("{CLIENT_URI_PREFIX}{role}"),
        }
    }

    /// Parses an identity URI, strictly: exactly the spelling [`TlsIdentity::uri`] writes.
    pub fn parse_uri(uri: &str) -> Result<Self> {
        let bad = || tls_error(format!("{uri:?} is not a sitelog identity"));
        if let Some(rest) = uri.strip_prefix(NODE_URI_PREFIX) {
            let (id, site) = rest.split_once("?site=").ok_or_else(bad)?;
            let id = parse_canonical_u64(id).ok_or_else(bad)?;
            if !valid_site(site) {
                return Err(bad());
            }
            return Ok(TlsIdentity::Node {
                id,
                site: site.to_string(),
            });
        }
        let role = uri.strip_prefix(CLIENT_URI_PREFIX).ok_or_else(bad)?;
        let role = role.parse().map_err(|_| bad())?;
        Ok(TlsIdentity::Client { role })
    }

    /// The identity of a certificate: its one URI name, parsed. A certificate with no URI
    /// name, with two, or with one that is not an identity is refused.
    pub fn from_cert(cert: &CertificateDer<'_>) -> Result<Self> {
        let parsed = webpki::EndEntityCert::try_from(cert)
            .map_err(|e| tls_error(format!("unreadable certificate: {e}")))?;
        let mut uris = parsed.valid_uri_names();
        let first = uris.next();
        let second = uris.next();
        match (first, second) {
            (Some(uri), None) => TlsIdentity::parse_uri(uri),
            (None, _) => Err(tls_error(
                "the certificate names no sitelog identity".into(),
            )),
            (Some(_), Some(_)) => Err(tls_error(
                "the certificate names more than one identity (URI name)".into(),
            )),
        }
    }
}

impl TlsIdentity {
    /// `Ok` when this is node `claimed_id`'s identity: a peer's claimed node id (in its
    /// handshake or messages) must be the one its certificate names.
    pub fn check_node(&self, claimed_id: u64) -> Result<()> {
        match self {
            TlsIdentity::Node { id, .. } if *id == claimed_id => Ok(()),
            _ => Err(tls_error(format!(
                "the peer claims to be node {claimed_id} but its certificate names {self}"
            ))),
        }
    }
}

impl fmt::Display for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsIdentity::Node { id, site } => write!(f, "node {id} (site {site})"),
            TlsIdentity::Client { role } => write!(f, "client with role {role}"),
        }
    }
}

/// A site name a certificate can carry: URI-unreserved characters only (letters, digits,
/// `-`, `.`, `_`, `~`), so that the URI needs no escaping and parses one way only.
pub fn valid_site(site: &str) -> bool {
    !site.is_empty()
        && site.len() <= MAX_SITE_BYTES
        && site
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Decimal digits without sign or leading zero (so that one id has one spelling).
fn parse_canonical_u64(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical {
        s.parse().ok()
    } else {
        None
    }
}

/// The node DNS name of node `id` (`node-<id>`), in its certificate and in a dialling
/// client's server name.
pub fn node_dns_name(id: u64) -> String {
    format!("node-{id}")
}

/// Which certificate a process presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// A node (serves with, and dials peers with, its node certificate).
    Node(u64),
    /// A client with a role (dials only).
    Client(ClientRole),
}

/// The node a client dials, as its certificate must name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialTarget {
    /// This node id exactly (a peer, or a client that knows the leader's id).
    Node(u64),
    /// Any node of the cluster (a client dialling a seed address).
    AnyNode,
}

impl DialTarget {
    /// The server name to connect with: the verifier reads the target back from it.
    pub fn server_name(self) -> ServerName<'static> {
        let name = match self {
            DialTarget::Node(id) => node_dns_name(id),
            DialTarget::AnyNode => ANY_NODE_SERVER_NAME.to_string(),
        };
        // Both spellings are valid DNS names by construction (letters, digits, '-', '.').
        ServerName::try_from(name).expect("node-<id> and the any-node name are DNS names")
    }

    fn from_server_name(name: &ServerName<'_>) -> Option<Self> {
        let ServerName::DnsName(dns) = name else {
            return None;
        };
        let dns = dns.as_ref();
        if dns == ANY_NODE_SERVER_NAME {
            return Some(DialTarget::AnyNode);
        }
        let id = dns.strip_prefix("node-")?;
        parse_canonical_u64(id).map(DialTarget::Node)
    }
}

/// How a node's ports (or a client's connections) are secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// Plaintext, no authentication: everyone who knows the cluster id is admin. Labs and
    /// tests only; a node started so logs a warning.
    Insecure,
    /// Mutual TLS 1.3 with the certificates of this directory (see [`TlsDir`]).
    Tls(TlsDir),
}

/// The files of a TLS directory (what `sitelog certs init` writes):
/// `ca.pem` (the cluster CA certificate, all that is trusted), `ca.key` (its key: needed only to
/// issue certificates; keep it off the nodes), `node-<id>.pem` + `node-<id>.key`,
/// `client-<role>.pem` + `client-<role>.key`. Keys are PKCS#8 PEM, mode 0600.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsDir {
    path: PathBuf,
}

impl TlsDir {
    /// The directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        TlsDir { path: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cluster CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.path.join("ca.pem")
    }

    /// The cluster CA key.
    pub fn ca_key(&self) -> PathBuf {
        self.path.join("ca.key")
    }

    /// The certificate (chain) that `who` presents.
    pub fn cert(&self, who: Who) -> PathBuf {
        self.path.join(format!("{}.pem", Self::stem(who)))
    }

    /// The private key of `who`.
    pub fn key(&self, who: Who) -> PathBuf {
        self.path.join(format!("{}.key", Self::stem(who)))
    }

    fn stem(who: Who) -> String {
        match who {
            Who::Node(id) => format!("node-{id}"),
            Who::Client(role) => format!("client-{role}"),
        }
    }
}

/// The rustls configurations of one node or client, loaded from a [`TlsDir`].
#[derive(Clone)]
pub struct TlsConfig {
    identity: TlsIdentity,
    server: Option<Arc<ServerConfig>>,
    client: Arc<ClientConfig>,
}

impl fmt::Debug for TlsConfig {
    /// The identity only: the configurations hold the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("identity", &self.identity)
            .field("serves", &self.server.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Reads the CA and `who`'s certificate and key from `dir` and builds the configurations:
    /// a server configuration (nodes only) that requires a client certificate of the cluster
    /// CA, and a client configuration that verifies servers with [`DialTarget`] names. The
    /// certificate must name `who` (a node certificate for another id is refused).
    pub fn load(dir: &TlsDir, who: Who) -> Result<Self> {
        let OwnCert {
            provider,
            roots,
            chain,
            key,
            identity,
        } = OwnCert::load(dir, who)?;
        let roots = Arc::new(roots);
        let server = match who {
            Who::Node(_) => Some(Arc::new(server_config(
                &provider,
                &roots,
                chain.clone(),
                key.clone_key(),
            )?)),
            Who::Client(_) => None,
        };
        let client = Arc::new(client_config(&provider, &roots, chain, key)?);
        Ok(TlsConfig {
            identity,
            server,
            client,
        })
    }

    /// Who this configuration's certificate says we are.
    pub fn identity(&self) -> &TlsIdentity {
        &self.identity
    }

    /// The server configuration (`None` for a client).
    pub fn server_config(&self) -> Option<&Arc<ServerConfig>> {
        self.server.as_ref()
    }

    /// The client configuration; connect with [`DialTarget::server_name`].
    pub fn client_config(&self) -> &Arc<ClientConfig> {
        &self.client
    }

    /// An acceptor for the server configuration (`None` for a client).
    pub fn acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.server.clone().map(tokio_rustls::TlsAcceptor::from)
    }

    /// A connector for the client configuration.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.clone())
    }
}

/// A server configuration for a side endpoint that any local client may read (the metrics
/// endpoint): `who`'s certificate from `dir`, checked like [`TlsConfig::load`] does, and no
/// client certificate asked for. TLS 1.3 only, no resumption.
#[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
pub fn server_config_without_client_auth(dir: &TlsDir, who: Who) -> Result<Arc<ServerConfig>> {
    let OwnCert {
        provider,
        chain,
        key,
        ..
    } = OwnCert::load(dir, who)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error(format!("server configuration: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_error(format!("server certificate and key: {e}")))?;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// `who`'s own certificate chain and key from a TLS directory, with the cluster CA, checked
/// before use: the certificate names `who` and chains to the CA.
struct OwnCert {
    provider: Arc<CryptoProvider>,
    roots: RootCertStore,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    identity: TlsIdentity,
}

impl OwnCert {
    fn load(dir: &TlsDir, who: Who) -> Result<Self> {
        let roots = load_roots(&dir.ca_cert())?;
        let cert_path = dir.cert(who);
        let chain = load_chain(&cert_path)?;
        let provider = crypto_provider();
        let key = load_key(&provider, &dir.key(who))?;
        let identity = TlsIdentity::from_cert(&chain[0])
            .map_err(|e| tls_error(format!("{}: {e}", cert_path.display())))?;
        check_names(&identity, who, &cert_path)?;
        check_own_chain(&provider, &roots, &chain, &cert_path)?;
        Ok(OwnCert {
            provider,
            roots,
            chain,
            key,
            identity,
        })
    }
}

/// The identity of the peer of an established connection (either side), from its verified
/// certificate. Use `stream.get_ref().1` of a tokio-rustls stream.
pub fn peer_identity(conn: &CommonState) -> Result<TlsIdentity> {
    let cert = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| tls_error("the peer presented no certificate".into()))?;
    TlsIdentity::from_cert(cert)
}

/// The ring provider, chosen over aws-lc-rs because ring builds with a C compiler alone (aws-lc
/// needs cmake and nasm, and builds much longer on a 2-core CI machine). rustls 0.23.48
/// deprecates it because it lacks post-quantum key exchange (X25519MLKEM768 comes only with
/// aws-lc-rs); the classical X25519/P-256 exchange is the accepted trade-off until then.
#[allow(deprecated)]
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The typed error of a failed TLS handshake or TLS read/write (tokio-rustls reports them as
/// `io::Error`); the reason is rustls' own text (alerts, certificate errors), which carries no
/// key material.
pub fn handshake_error(e: std::io::Error) -> Error {
    tls_error(format!("handshake: {e}"))
}

fn check_names(identity: &TlsIdentity, who: Who, path: &Path) -> Result<()> {
    let matches = match (identity, who) {
        (TlsIdentity::Node { id, .. }, Who::Node(want)) => *id == want,
        (TlsIdentity::Client { role }, Who::Client(want)) => *role == want,
        _ => false,
    };
    if matches {
        Ok(())
    } else {
        Err(tls_error(format!(
            "{} names {identity}, not the expected {who:?}",
            path.display()
        )))
    }
}

/// Our own certificate must chain to the CA we trust and be valid now: a rotation that
/// installs a certificate of another CA (or an expired one) is refused at load, and a reload
/// keeps the working configuration, instead of making this process unreachable to its peers.
fn check_own_chain(
    provider: &CryptoProvider,
    roots: &RootCertStore,
    chain: &[CertificateDer<'static>],
    path: &Path,
) -> Result<()> {
    let cert = webpki::EndEntityCert::try_from(&chain[0])
        .map_err(|e| tls_error(format!("{}: unreadable certificate: {e}", path.display())))?;
    // Node and client certificates both carry client authentication (nodes dial peers).
    cert.verify_for_usage(
        provider.signature_verification_algorithms.all,
        &roots.roots,
        &chain[1..],
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map_err(|e| {
        tls_error(format!(
            "{}: not valid under the cluster CA now: {e}",
            path.display()
        ))
    })?;
    Ok(())
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    roots: &Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig> {
    let webpki = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| tls_error(format!("client verifier: {e}")))?;
    let verifier = Arc::new(IdentityClientVerifier { inner: webpki });
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error(format!("server configuration: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls_error(format!("server certificate and key: {e}")))?;
    // No resumption: a resumed session would skip verification against a reloaded CA.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    roots: &Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ClientConfig> {
    let webpki = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| tls_error(format!("server verifier: {e}")))?;
    let verifier = Arc::new(NodeServerVerifier { inner: webpki });
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error(format!("client configuration: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(|e| tls_error(format!("client certificate and key: {e}")))?;
    config.resumption = Resumption::disabled();
    // The server name only encodes the dialled node for our verifier; servers ignore SNI.
    config.enable_sni = false;
    Ok(config)
}

/// Verifies a server's chain against the cluster CA (webpki), then that its certificate names
/// the node that was dialled: the node id of [`DialTarget`] (read back from the server name)
/// in its identity URI and its DNS name `node-<id>`.
#[derive(Debug)]
struct NodeServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let not_valid = || rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        let target = DialTarget::from_server_name(server_name).ok_or_else(not_valid)?;
        let id = match TlsIdentity::from_cert(end_entity) {
            Ok(TlsIdentity::Node { id, .. }) => id,
            Ok(TlsIdentity::Client { .. }) | Err(_) => return Err(not_valid()),
        };
        if matches!(target, DialTarget::Node(want) if want != id) {
            return Err(not_valid());
        }
        // The chain, validity dates and usage, and the DNS name node-<id> of the identity.
        let name = DialTarget::Node(id).server_name();
        self.inner
            .verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Verifies a client's chain against the cluster CA (webpki; a certificate is mandatory), then
/// that it carries exactly one identity, so that [`peer_identity`] cannot fail afterwards.
#[derive(Debug)]
struct IdentityClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for IdentityClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        TlsIdentity::from_cert(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Reads a PEM file of at most [`MAX_PEM_FILE_BYTES`].
fn read_pem_file(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(tls_error(format!(
            "{} is larger than {MAX_PEM_FILE_BYTES} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// The certificates of a PEM file: at least one, at most [`MAX_CHAIN_CERTS`].
fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read_pem_file(path)?;
    let mut chain = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        // The PEM error's text is left out on purpose: it may quote the file's lines.
        let cert = cert.map_err(|_| tls_error(format!("{}: malformed PEM", path.display())))?;
        if chain.len() == MAX_CHAIN_CERTS {
            return Err(tls_error(format!(
                "{} holds more than {MAX_CHAIN_CERTS} certificates",
                path.display()
            )));
        }
        chain.push(cert);
    }
    if chain.is_empty() {
        return Err(tls_error(format!(
            "{} holds no certificate",
            path.display()
        )));
    }
    Ok(chain)
}

fn load_roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_chain(path)? {
        roots
            .add(cert)
            .map_err(|e| tls_error(format!("{}: not a CA certificate: {e}", path.display())))?;
    }
    Ok(roots)
}

/// The private key of a PEM file, checked usable by `provider` (so that a bad key is
/// reported with its file name, not later by the configuration builder).
fn load_key(provider: &CryptoProvider, path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = read_pem_file(path)?;
    // Nothing of the key file goes into the errors: not even the parsers' messages.
    let key = PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|_| tls_error(format!("{}: no PEM private key", path.display())))?;
    provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|_| tls_error(format!("{}: not a usable private key", path.display())))?;
    Ok(key)
}

fn tls_error(reason: String) -> Error {
    Error::Tls { reason }
}

/// The sizes and modification times of the files a configuration was read from: a change
/// means a reload is due (certificate rotation writes new files).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<Option<(u64, SystemTime)>>);

impl Stamp {
    fn of(dir: &TlsDir, who: Who) -> Self {
        let files = [dir.ca_cert(), dir.cert(who), dir.key(who)];
        Stamp(
            files
                .iter()
                .map(|p| {
                    let meta = std::fs::metadata(p).ok()?;
                    Some((meta.len(), meta.modified().ok()?))
                })
                .collect(),
        )
    }
}

/// The current [`TlsConfig`] of a node or client, reloaded from its directory on demand
/// (SIGHUP, or [`Reloading::reload_if_changed`] polled). A failed reload keeps the old
/// configuration. Connections take the configuration current when they start and keep it:
/// established ones are not affected by a reload.
pub type TlsReloader = Reloading<TlsConfig>;

/// The current server configuration of a side endpoint without client certificates (the
/// metrics endpoint, see [`server_config_without_client_auth`]), reloaded like
/// [`TlsReloader`].
#[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
pub type SideTlsReloader = Reloading<Arc<ServerConfig>>;

/// A configuration `T` read from a TLS directory, reloaded on demand: a failed reload keeps
/// the old one. See [`TlsReloader`] and [`SideTlsReloader`].
#[derive(Debug)]
pub struct Reloading<T> {
    dir: TlsDir,
    who: Who,
    read: fn(&TlsDir, Who) -> Result<T>,
    current: RwLock<Arc<T>>,
    stamp: Mutex<Stamp>,
}

impl Reloading<TlsConfig> {
    /// Loads the first configuration (an error here is the caller's to report: nothing to
    /// keep yet).
    pub fn load(dir: TlsDir, who: Who) -> Result<Self> {
        Self::first(dir, who, TlsConfig::load)
    }
}

impl Reloading<Arc<ServerConfig>> {
    /// Loads the first side-endpoint configuration of `who` (see
    /// [`server_config_without_client_auth`]).
    #[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
    pub fn load_without_client_auth(dir: TlsDir, who: Who) -> Result<Self> {
        Self::first(dir, who, server_config_without_client_auth)
    }
}

impl<T> Reloading<T> {
    fn first(dir: TlsDir, who: Who, read: fn(&TlsDir, Who) -> Result<T>) -> Result<Self> {
        let stamp = Stamp::of(&dir, who);
        let config = read(&dir, who)?;
        Ok(Reloading {
            dir,
            who,
            read,
            current: RwLock::new(Arc::new(config)),
            stamp: Mutex::new(stamp),
        })
    }

    /// The configuration new connections should use.
    pub fn current(&self) -> Arc<T> {
        // A poisoned lock still holds a whole Arc: the swap below cannot leave it half-written.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the directory and swaps in the new configuration; on error the old one stays
    /// and the error is returned.
    pub fn reload(&self) -> Result<()> {
        let stamp = Stamp::of(&self.dir, self.who);
        *self.stamp.lock().unwrap_or_else(PoisonError::into_inner) = stamp;
        let config = (self.read)(&self.dir, self.who)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        Ok(())
    }

    /// Reloads when a file changed (size or modification time) since the last (attempted)
    /// load; true when a new configuration was swapped in. A failed attempt is not retried
    /// until the files change again.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let changed = {
            let stamp = self.stamp.lock().unwrap_or_else(PoisonError::into_inner);
            *stamp != Stamp::of(&self.dir, self.who)
        };
        if !changed {
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
