//! The cluster CA and the certificates it issues (rcgen, ECDSA P-256): what
//! `sitelog certs init` writes and tests and the drill use. See [`super::tls`] for the
//! identities and the directory layout.
//!
//! Files are written durably (a temporary file, fsync, rename, fsync of the directory); keys
//! are created with mode 0600 and never printed: [`IssuedCert`]'s `Debug` leaves the key out.

use super::tls::{valid_site, ClientRole, TlsDir, TlsIdentity, Who, MAX_PEM_FILE_BYTES};
use crate::error::{Error, Result};
use crate::limits::MAX_MEMBERS;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default validity of `certs init` certificates, in days.
pub const DEFAULT_VALIDITY_DAYS: u32 = 365;
/// Longest validity `certs init` issues, in days (ten years): a bound, and a nudge to rotate.
pub const MAX_VALIDITY_DAYS: u32 = 3650;
/// How far back a new certificate's validity starts, so that a peer whose clock is a little
/// behind accepts it at once.
pub const CLOCK_SKEW_ALLOWANCE_SECS: u64 = 3600;
const SECS_PER_DAY: u64 = 86_400;
const KEY_FILE_MODE: u32 = 0o600;
const CERT_FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o700;

/// A certificate's validity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Not valid before.
    pub not_before: SystemTime,
    /// Not valid after.
    pub not_after: SystemTime,
}

impl Validity {
    /// From an hour ago ([`CLOCK_SKEW_ALLOWANCE_SECS`]) to `days` days from now.
    pub fn days_from_now(days: u32) -> Self {
        let now = SystemTime::now();
        Validity {
            not_before: now - Duration::from_secs(CLOCK_SKEW_ALLOWANCE_SECS),
            not_after: now + Duration::from_secs(u64::from(days) * SECS_PER_DAY),
        }
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// The PKCS#8 private key. Secret: never log it.
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<secret>")
            .finish()
    }
}

/// A cluster CA in memory: issues node and client certificates.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    ca: IssuedCert,
}

impl fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAuthority")
            .field("ca", &self.ca)
            .finish()
    }
}

impl CertAuthority {
    /// A new CA (self-signed, may issue end-entity certificates only).
    pub fn new(validity: Validity) -> Result<Self> {
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let mut params = CertificateParams::default();
        set_validity(&mut params, validity)?;
        // A random tag tells two clusters' CAs apart by name, so that a certificate of
        // another cluster is refused as "unknown issuer" rather than as a bad signature.
        let name = format!("sitelog cluster CA {:016x}", fastrand::u64(..));
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        let ca = IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(CertAuthority {
            issuer: Issuer::new(params, key),
            ca,
        })
    }

    /// The CA already in `dir` (`ca.pem` and `ca.key`, as `certs init` wrote them), to issue
    /// more certificates under it: certificates it issued before stay valid.
    pub fn load(dir: &TlsDir) -> Result<Self> {
        let cert_pem = read_pem_text(&dir.ca_cert())?;
        let key_pem = read_pem_text(&dir.ca_key())?;
        // Nothing of the key file goes into the error: not even the parser's message.
        let key = KeyPair::from_pem(&key_pem).map_err(|_| Error::Tls {
            reason: format!("{}: not a usable CA private key", dir.ca_key().display()),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| Error::Tls {
            reason: format!("{}: not a CA certificate: {e}", dir.ca_cert().display()),
        })?;
        Ok(CertAuthority {
            issuer,
            ca: IssuedCert { cert_pem, key_pem },
        })
    }

    /// The CA's own certificate and key.
    pub fn ca(&self) -> &IssuedCert {
        &self.ca
    }

    /// A certificate (and new key) naming `identity`: a node certificate serves and dials
    /// (server and client authentication, DNS name `node-<id>`), a client certificate only
    /// dials.
    pub fn issue(&self, identity: &TlsIdentity, validity: Validity) -> Result<IssuedCert> {
        if let TlsIdentity::Node { site, .. } = identity {
            check_site(site)?;
        }
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let mut params = CertificateParams::default();
        set_validity(&mut params, validity)?;
        params
            .distinguished_name
            .push(DnType::CommonName, identity.to_string());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.subject_alt_names = vec![SanType::URI(ia5(identity.uri())?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if let TlsIdentity::Node { id, .. } = identity {
            let dns = super::tls::node_dns_name(*id);
            params.subject_alt_names.push(SanType::DnsName(ia5(dns)?));
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_error)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// What `certs init` does besides its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertOptions {
    /// Validity of every certificate, in days (1..=[`MAX_VALIDITY_DAYS`]).
    pub validity_days: u32,
    /// Replace an existing CA (and every certificate) in the directory.
    pub force: bool,
}

impl Default for CertOptions {
    fn default() -> Self {
        CertOptions {
            validity_days: DEFAULT_VALIDITY_DAYS,
            force: false,
        }
    }
}

/// Creates `dir` (mode 0700) with a new CA, a certificate and key for each node (id → site),
/// and a client certificate and key for each role. An existing CA (`ca.pem` or `ca.key`) is
/// refused unless `opts.force`: a new CA invalidates every certificate the old one issued.
pub fn generate(dir: &Path, nodes: &BTreeMap<u64, String>, opts: &CertOptions) -> Result<TlsDir> {
    check_request(nodes, opts)?;
    let tls = TlsDir::new(dir);
    refuse_existing_ca(&tls, opts.force)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| Error::io(dir, e))?;
    let validity = Validity::days_from_now(opts.validity_days);
    let ca = CertAuthority::new(validity)?;
    for (id, site) in nodes {
        let identity = TlsIdentity::Node {
            id: *id,
            site: site.clone(),
        };
        write_issued(&tls, Who::Node(*id), &ca.issue(&identity, validity)?)?;
    }
    for role in ClientRole::ALL {
        let cert = ca.issue(&TlsIdentity::Client { role }, validity)?;
        write_issued(&tls, Who::Client(role), &cert)?;
    }
    // The CA last: a directory with a CA is a complete one (an interrupted run can be rerun).
    write_ca(&tls, &ca)?;
    Ok(tls)
}

/// Issues one more certificate for `identity` (a replacement node, a new client) from the CA
/// already in `dir` and writes it there; returns who it was written as. An existing
/// certificate or key of that node is refused unless `opts.force` (a node's files are its
/// identity; a client role's certificate may be shared, but replacing it also needs `force`).
pub fn issue(dir: &Path, identity: &TlsIdentity, opts: &CertOptions) -> Result<Who> {
    check_validity_days(opts.validity_days)?;
    let tls = TlsDir::new(dir);
    let who = match identity {
        TlsIdentity::Node { id, .. } => Who::Node(*id),
        TlsIdentity::Client { role } => Who::Client(*role),
    };
    refuse_existing(&tls, who, opts.force)?;
    let ca = CertAuthority::load(&tls)?;
    let cert = ca.issue(identity, Validity::days_from_now(opts.validity_days))?;
    write_issued(&tls, who, &cert)?;
    Ok(who)
}

/// Writes the CA's certificate and key into `dir` (key mode 0600), replacing old ones.
pub fn write_ca(dir: &TlsDir, ca: &CertAuthority) -> Result<()> {
    write_file(&dir.ca_key(), ca.ca().key_pem.as_bytes(), KEY_FILE_MODE)?;
    write_file(&dir.ca_cert(), ca.ca().cert_pem.as_bytes(), CERT_FILE_MODE)?;
    sync_dir(dir.path())
}

/// Writes `who`'s certificate and key into `dir` (key mode 0600), replacing old ones.
pub fn write_issued(dir: &TlsDir, who: Who, cert: &IssuedCert) -> Result<()> {
    write_file(&dir.key(who), cert.key_pem.as_bytes(), KEY_FILE_MODE)?;
    write_file(&dir.cert(who), cert.cert_pem.as_bytes(), CERT_FILE_MODE)?;
    sync_dir(dir.path())
}

fn check_request(nodes: &BTreeMap<u64, String>, opts: &CertOptions) -> Result<()> {
    if nodes.is_empty() || nodes.len() > MAX_MEMBERS {
        return Err(Error::InvalidArgument(format!(
            "certificates for {} nodes: give 1 to {MAX_MEMBERS}",
            nodes.len()
        )));
    }
    check_validity_days(opts.validity_days)?;
    nodes.values().try_for_each(|site| check_site(site))
}

fn check_validity_days(days: u32) -> Result<()> {
    if days == 0 || days > MAX_VALIDITY_DAYS {
        return Err(Error::InvalidArgument(format!(
            "validity of {days} days: give 1 to {MAX_VALIDITY_DAYS}"
        )));
    }
    Ok(())
}

fn refuse_existing(dir: &TlsDir, who: Who, force: bool) -> Result<()> {
    for path in [dir.cert(who), dir.key(who)] {
        if !force && path.exists() {
            return Err(Error::Tls {
                reason: format!(
                    "{} exists: refusing to replace it; pass --force to issue a new one",
                    path.display()
                ),
            });
        }
    }
    Ok(())
}

/// A PEM file of the CA as text, bounded like every PEM file read
/// ([`MAX_PEM_FILE_BYTES`]).
fn read_pem_text(path: &Path) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut text = String::new();
    let read = file.take(MAX_PEM_FILE_BYTES + 1).read_to_string(&mut text);
    // Nothing of the file goes into the error (it may be a key).
    read.map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => Error::Tls {
            reason: format!("{}: not a PEM file", path.display()),
        },
        _ => Error::io(path, e),
    })?;
    if text.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(Error::Tls {
            reason: format!(
                "{} is larger than {MAX_PEM_FILE_BYTES} bytes",
                path.display()
            ),
        });
    }
    Ok(text)
}

fn check_site(site: &str) -> Result<()> {
    if valid_site(site) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "site {site:?} cannot be named in a certificate: use 1 to 255 letters, digits, \
             '-', '.', '_' or '~'"
        )))
    }
}

fn refuse_existing_ca(dir: &TlsDir, force: bool) -> Result<()> {
    for path in [dir.ca_cert(), dir.ca_key()] {
        if !force && path.exists() {
            return Err(Error::Tls {
                reason: format!(
                    "{} exists: refusing to replace the cluster CA (every certificate it issued \
                     would stop working); pass --force to replace it",
                    path.display()
                ),
            });
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file created with `mode` (so a key is never
/// readable by others, not even briefly), fsynced, then renamed over `path`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    // A leftover of an interrupted run may have other permissions: start afresh.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&tmp, e)),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

fn set_validity(params: &mut CertificateParams, validity: Validity) -> Result<()> {
    params.not_before = to_datetime(validity.not_before)?;
    params.not_after = to_datetime(validity.not_after)?;
    Ok(())
}

fn to_datetime(t: SystemTime) -> Result<time::OffsetDateTime> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::InvalidArgument("a validity date before 1970".into()))?
        .as_secs();
    let secs = i64::try_from(secs)
        .map_err(|_| Error::InvalidArgument("a validity date out of range".into()))?;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| Error::InvalidArgument("a validity date out of range".into()))
}

fn ia5(s: String) -> Result<rcgen::string::Ia5String> {
    rcgen::string::Ia5String::try_from(s).map_err(rcgen_error)
}

fn rcgen_error(e: rcgen::Error) -> Error {
    Error::Tls {
        reason: format!("certificate generation: {e}"),
    }
}
