//! The webhook's serving certificate: PEM loading with checks (key matches, not expired),
//! a rustls resolver whose certificate can be swapped while the server runs, and a reloader
//! that notices when the files on disk change.
//!
//! Kubernetes Secret volumes never rewrite `tls.crt` in place: they write a new timestamped
//! directory and atomically swap the `..data` symlink that `tls.crt -> ..data/tls.crt`
//! points through. So change detection must not rely on the inode or mtime of the path we
//! were given; the reloader re-reads both files through their (re-resolved) paths and
//! compares contents, which catches symlink swaps and in-place writes alike.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} is not valid PEM: {reason}")]
    Pem { what: String, reason: String },
    #[error("{0} holds no certificate")]
    NoCertificate(String),
    #[error("{0} holds no private key")]
    NoKey(String),
    #[error("the private key in {key} cannot be used: {reason}")]
    Key { key: String, reason: String },
    #[error("the certificate in {cert} does not match the private key in {key}")]
    Mismatch { cert: String, key: String },
    #[error("the certificate in {cert} cannot be parsed: {reason}")]
    Certificate { cert: String, reason: String },
    #[error("the certificate in {cert} expired at {not_after}")]
    Expired { cert: String, not_after: String },
    #[error("the certificate in {cert} is not valid before {not_before}")]
    NotYetValid { cert: String, not_before: String },
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

/// What the leaf certificate says about itself, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    pub subject: String,
    /// DNS and IP subject alternative names.
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    pub serial: String,
}

/// A served certificate this close to its notAfter is worth a warning: the apiserver stops
/// trusting the webhook at that moment, and a week leaves time to renew.
pub const EXPIRY_WARNING_SECONDS: i64 = 7 * 86_400;

/// Where a certificate stands against its notAfter, as far as warnings care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Fine,
    Soon { seconds_left: i64 },
    Expired,
}

impl Expiry {
    /// Same kind, whatever the seconds left: warnings fire when the kind changes.
    pub fn same_kind(self, other: Self) -> bool {
        std::mem::discriminant(&self) == std::mem::discriminant(&other)
    }
}

impl CertificateInfo {
    pub fn not_after_rfc3339(&self) -> String {
        rfc3339(self.not_after)
    }

    pub fn expiry_at(&self, now: i64) -> Expiry {
        let seconds_left = self.not_after.saturating_sub(now);
        if seconds_left <= 0 {
            Expiry::Expired
        } else if seconds_left < EXPIRY_WARNING_SECONDS {
            Expiry::Soon { seconds_left }
        } else {
            Expiry::Fine
        }
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// A checked certificate chain and key, ready for rustls.
#[derive(Clone)]
pub struct LoadedCertificate {
    pub certified_key: Arc<CertifiedKey>,
    pub info: CertificateInfo,
}

impl fmt::Debug for LoadedCertificate {
    // Never print the key, not even its debug form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCertificate")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Parses and checks a PEM certificate chain and private key. `cert_name`/`key_name` say
/// where they came from in errors; `now` (Unix seconds) is the moment the validity is
/// checked at.
pub fn load_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_name: &str,
    key_name: &str,
    now: i64,
) -> Result<LoadedCertificate, TlsError> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            what: cert_name.to_owned(),
            reason: e.to_string(),
        })?;
    let leaf = chain
        .first()
        .ok_or_else(|| TlsError::NoCertificate(cert_name.to_owned()))?;
    let info = certificate_info(leaf.as_ref()).map_err(|reason| TlsError::Certificate {
        cert: cert_name.to_owned(),
        reason,
    })?;
    if now > info.not_after {
        return Err(TlsError::Expired {
            cert: cert_name.to_owned(),
            not_after: rfc3339(info.not_after),
        });
    }
    if now < info.not_before {
        return Err(TlsError::NotYetValid {
            cert: cert_name.to_owned(),
            not_before: rfc3339(info.not_before),
        });
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| TlsError::Pem {
            what: key_name.to_owned(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| TlsError::NoKey(key_name.to_owned()))?;
    let provider = provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key {
            key: key_name.to_owned(),
            reason: e.to_string(),
        })?;
    let certified_key = CertifiedKey::new(chain, signing_key);
    match certified_key.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::Mismatch {
                cert: cert_name.to_owned(),
                key: key_name.to_owned(),
            });
        }
        // ring can always tell; an unknown answer is not a reason to refuse.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(TlsError::Certificate {
                cert: cert_name.to_owned(),
                reason: e.to_string(),
            });
        }
    }
    Ok(LoadedCertificate {
        certified_key: Arc::new(certified_key),
        info,
    })
}

/// Reads the leaf certificate's names and validity.
pub fn certificate_info(der: &[u8]) -> Result<CertificateInfo, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => names.push(ip_to_string(bytes)),
                _ => {}
            }
        }
    }
    Ok(CertificateInfo {
        subject: cert.subject().to_string(),
        names,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string(),
    })
}

fn ip_to_string(bytes: &[u8]) -> String {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        std::net::Ipv4Addr::from(v4).to_string()
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        std::net::Ipv6Addr::from(v6).to_string()
    } else {
        format!("{bytes:02x?}")
    }
}

fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Where the serving certificate comes from.
#[derive(Clone)]
pub enum CertificateSource {
    /// PEM files, re-read while serving.
    Files { cert: PathBuf, key: PathBuf },
    /// PEM text held in memory (tests, the simulated cluster); never changes.
    Pem { cert: String, key: String },
}

impl fmt::Debug for CertificateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Files { cert, key } => f
                .debug_struct("Files")
                .field("cert", cert)
                .field("key", key)
                .finish(),
            Self::Pem { .. } => f.write_str("Pem { .. }"),
        }
    }
}

/// The bytes last read from disk, to tell whether anything changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Snapshot {
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_snapshot(cert: &Path, key: &Path) -> Result<Snapshot, TlsError> {
    Ok(Snapshot {
        cert: read(cert)?,
        key: read(key)?,
    })
}

/// Where a path leads now (through `..data` and any other symlinks), for messages.
fn resolved(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}

fn load_snapshot(
    snapshot: &Snapshot,
    cert: &Path,
    key: &Path,
) -> Result<LoadedCertificate, TlsError> {
    load_pem(
        &snapshot.cert,
        &snapshot.key,
        &resolved(cert),
        &resolved(key),
        unix_now(),
    )
}

/// A rustls certificate resolver whose certificate can be replaced at any time; every new
/// handshake gets the current one.
pub struct ReloadingResolver {
    current: RwLock<LoadedCertificate>,
}

impl fmt::Debug for ReloadingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingResolver")
            .field("current", &self.current().info)
            .finish()
    }
}

impl ReloadingResolver {
    pub fn new(initial: LoadedCertificate) -> Self {
        Self {
            current: RwLock::new(initial),
        }
    }

    pub fn current(&self) -> LoadedCertificate {
        // A poisoned lock still holds a whole value: the writer only assigns.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn replace(&self, next: LoadedCertificate) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .certified_key
                .clone(),
        )
    }
}

/// The rustls server configuration: TLS 1.2 and 1.3, ALPN h2 then http/1.1.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// What one look at the files found.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// The files hold what is being served (or what was already refused).
    Unchanged,
    /// A new pair loaded and is now served.
    Reloaded(CertificateInfo),
    /// The files changed but the new pair cannot be used; the old one is still served.
    Rejected(TlsError),
}

/// Loads the certificate at start and reloads it when the files change.
pub struct CertificateReloader {
    source: CertificateSource,
    resolver: Arc<ReloadingResolver>,
    /// The contents last acted on (served or refused), so a bad pair is reported once.
    last_seen: Snapshot,
    /// The last read failure, so a missing file is reported once, not on every look.
    last_read_error: Option<String>,
}

impl fmt::Debug for CertificateReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateReloader")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl CertificateReloader {
    /// Loads the initial pair: any problem here (unreadable, mismatched, expired) is an
    /// error, so a misconfigured webhook does not start.
    pub fn start(source: CertificateSource) -> Result<Self, TlsError> {
        let (loaded, last_seen) = match &source {
            CertificateSource::Files { cert, key } => {
                let snapshot = read_snapshot(cert, key)?;
                (load_snapshot(&snapshot, cert, key)?, snapshot)
            }
            CertificateSource::Pem { cert, key } => (
                load_pem(
                    cert.as_bytes(),
                    key.as_bytes(),
                    "the certificate",
                    "the key",
                    unix_now(),
                )?,
                Snapshot::default(),
            ),
        };
        Ok(Self {
            source,
            resolver: Arc::new(ReloadingResolver::new(loaded)),
            last_seen,
            last_read_error: None,
        })
    }

    pub fn resolver(&self) -> Arc<ReloadingResolver> {
        self.resolver.clone()
    }

    pub fn current(&self) -> CertificateInfo {
        self.resolver.current().info
    }

    /// Whether there are files to watch at all.
    pub fn watches_files(&self) -> bool {
        matches!(self.source, CertificateSource::Files { .. })
    }

    /// Re-reads the files; swaps the served pair only when the new one loads and matches.
    pub fn poll(&mut self) -> ReloadOutcome {
        let CertificateSource::Files { cert, key } = &self.source else {
            return ReloadOutcome::Unchanged;
        };
        let snapshot = match read_snapshot(cert, key) {
            Ok(s) => {
                self.last_read_error = None;
                s
            }
            // Mid-swap a path can vanish for a moment; keep serving and look again later.
            Err(err) => {
                let text = err.to_string();
                if self.last_read_error.as_deref() == Some(text.as_str()) {
                    return ReloadOutcome::Unchanged;
                }
                self.last_read_error = Some(text);
                return ReloadOutcome::Rejected(err);
            }
        };
        if snapshot == self.last_seen {
            return ReloadOutcome::Unchanged;
        }
        let outcome = match load_snapshot(&snapshot, cert, key) {
            Ok(loaded) => {
                let info = loaded.info.clone();
                self.resolver.replace(loaded);
                ReloadOutcome::Reloaded(info)
            }
            Err(err) => ReloadOutcome::Rejected(err),
        };
        self.last_seen = snapshot;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn pair(not_before: time::OffsetDateTime, not_after: time::OffsetDateTime) -> (String, String) {
        let mut params = CertificateParams::new(vec!["guard.test".to_owned()]).unwrap();
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn valid_pair() -> (String, String) {
        let now = time::OffsetDateTime::now_utc();
        pair(
            now - time::Duration::days(1),
            now + time::Duration::days(30),
        )
    }

    #[test]
    fn a_matching_pair_loads_with_its_names_and_expiry() {
        crate::install_crypto_provider();
        let (cert, key) = valid_pair();
        let loaded = load_pem(cert.as_bytes(), key.as_bytes(), "c", "k", unix_now()).unwrap();
        assert_eq!(loaded.info.names, vec!["guard.test".to_owned()]);
        assert!(loaded.info.not_after > unix_now() + 29 * 86_400);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        crate::install_crypto_provider();
        let (cert, _) = valid_pair();
        let (_, other_key) = valid_pair();
        let err =
            load_pem(cert.as_bytes(), other_key.as_bytes(), "c", "k", unix_now()).unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        crate::install_crypto_provider();
        let now = time::OffsetDateTime::now_utc();
        let (cert, key) = pair(
            now - time::Duration::days(10),
            now - time::Duration::days(1),
        );
        let err = load_pem(cert.as_bytes(), key.as_bytes(), "c", "k", unix_now()).unwrap_err();
        assert!(matches!(err, TlsError::Expired { .. }), "{err}");
        assert!(err.to_string().contains("expired"));
    }

    #[test]
    fn expiry_is_fine_then_soon_then_expired() {
        let info = CertificateInfo {
            subject: String::new(),
            names: Vec::new(),
            not_before: 0,
            not_after: 100 * 86_400,
            serial: String::new(),
        };
        assert_eq!(info.expiry_at(0), Expiry::Fine);
        assert_eq!(
            info.expiry_at(99 * 86_400),
            Expiry::Soon {
                seconds_left: 86_400
            }
        );
        assert_eq!(info.expiry_at(100 * 86_400), Expiry::Expired);
        assert!(Expiry::Soon { seconds_left: 1 }.same_kind(Expiry::Soon { seconds_left: 2 }));
        assert!(!Expiry::Fine.same_kind(Expiry::Expired));
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        crate::install_crypto_provider();
        let err = load_pem(b"not pem", b"not pem", "c", "k", unix_now()).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate(_)), "{err}");
        let (cert, _) = valid_pair();
        let err = load_pem(cert.as_bytes(), b"", "c", "k", unix_now()).unwrap_err();
        assert!(matches!(err, TlsError::NoKey(_)), "{err}");
    }

    #[test]
    fn the_reloader_keeps_the_old_pair_when_the_new_one_is_bad() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let cert_path = dir.path().join("tls.crt");
        let key_path = dir.path().join("tls.key");
        let (cert, key) = valid_pair();
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let mut reloader = CertificateReloader::start(CertificateSource::Files {
            cert: cert_path.clone(),
            key: key_path.clone(),
        })
        .unwrap();
        let first = reloader.current();
        assert!(matches!(reloader.poll(), ReloadOutcome::Unchanged));

        let (new_cert, _) = valid_pair();
        std::fs::write(&cert_path, &new_cert).unwrap();
        assert!(matches!(
            reloader.poll(),
            ReloadOutcome::Rejected(TlsError::Mismatch { .. })
        ));
        assert_eq!(reloader.current(), first);
        // Reported once, not on every look.
        assert!(matches!(reloader.poll(), ReloadOutcome::Unchanged));

        let (good_cert, good_key) = valid_pair();
        std::fs::write(&key_path, &good_key).unwrap();
        std::fs::write(&cert_path, &good_cert).unwrap();
        match reloader.poll() {
            ReloadOutcome::Reloaded(info) => assert_ne!(info.serial, first.serial),
            other => panic!("expected a reload, got {other:?}"),
        }
        assert_ne!(reloader.current().serial, first.serial);
    }
}
