//! `cce-cni-guard certs`: a CA and a serving certificate for the webhook Service.
//!
//! The apiserver reaches the webhook as `https://SERVICE.NAMESPACE.svc:PORT`, so the serving
//! certificate names the Service in all the forms a client may use; the CA goes into the
//! ValidatingWebhookConfiguration's `caBundle` (base64 of the CA's PEM).

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Flags of `cce-cni-guard certs`.
#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    /// Name of the webhook's Service.
    #[arg(long, env = "CCE_GUARD_SERVICE")]
    pub service: String,
    /// Namespace of the webhook's Service.
    #[arg(long, env = "CCE_GUARD_NAMESPACE")]
    pub namespace: String,
    /// Directory to write ca.crt, tls.crt and tls.key into (or use --in-cluster).
    #[arg(
        long,
        env = "CCE_GUARD_CERTS_OUT",
        required_unless_present = "in_cluster"
    )]
    pub out: Option<PathBuf>,
    /// Validity of the serving certificate, in days.
    #[arg(long, env = "CCE_GUARD_CERT_DAYS", default_value_t = 365)]
    pub days: u32,
    /// Validity of the CA, in days.
    #[arg(long, env = "CCE_GUARD_CA_DAYS", default_value_t = 3650)]
    pub ca_days: u32,
    /// Extra DNS name for the serving certificate (repeatable), e.g. `localhost`.
    #[arg(long = "dns", env = "CCE_GUARD_CERT_DNS", value_delimiter = ',')]
    pub dns: Vec<String>,
    /// Extra IP address for the serving certificate (repeatable), e.g. `127.0.0.1`.
    #[arg(long = "ip", env = "CCE_GUARD_CERT_IP", value_delimiter = ',')]
    pub ip: Vec<IpAddr>,
    /// Overwrite existing files.
    #[arg(long, env = "CCE_GUARD_CERTS_FORCE")]
    pub force: bool,
    #[command(flatten)]
    pub cluster: crate::certs_cluster::ClusterArgs,
}

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("cannot generate the certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0} already exists (pass --force to overwrite)")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What to certify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    pub service: String,
    pub namespace: String,
    pub extra_dns: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub days: u32,
    pub ca_days: u32,
}

impl CertSpec {
    /// A one-year serving certificate under a ten-year CA.
    pub fn new(service: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            namespace: namespace.into(),
            extra_dns: Vec::new(),
            ip_addresses: Vec::new(),
            days: 365,
            ca_days: 3650,
        }
    }

    /// `S`, `S.N`, `S.N.svc`, `S.N.svc.cluster.local`, then the extra names.
    pub fn dns_names(&self) -> Vec<String> {
        let (s, n) = (&self.service, &self.namespace);
        let mut names = vec![
            s.clone(),
            format!("{s}.{n}"),
            format!("{s}.{n}.svc"),
            format!("{s}.{n}.svc.cluster.local"),
        ];
        for extra in &self.extra_dns {
            if !names.contains(extra) {
                names.push(extra.clone());
            }
        }
        names
    }
}

/// The certificates, as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedCerts {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for GeneratedCerts {
    // The key stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedCerts")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl GeneratedCerts {
    /// The `caBundle` of a webhook configuration: base64 of the CA's PEM, one line.
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes())
    }
}

/// A DNS-1123 label: what a Service name and a namespace must be.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Makes a CA and a serving certificate signed by it, in memory.
pub fn generate(spec: &CertSpec) -> Result<GeneratedCerts, CertsError> {
    if !is_dns_label(&spec.service) {
        return Err(CertsError::Invalid(format!(
            "service {:?} is not a DNS label (lowercase letters, digits, '-', at most 63)",
            spec.service
        )));
    }
    if !is_dns_label(&spec.namespace) {
        return Err(CertsError::Invalid(format!(
            "namespace {:?} is not a DNS label (lowercase letters, digits, '-', at most 63)",
            spec.namespace
        )));
    }
    if spec.days == 0 || spec.ca_days == 0 {
        return Err(CertsError::Invalid(
            "validity must be at least one day".into(),
        ));
    }
    if spec.days > spec.ca_days {
        return Err(CertsError::Invalid(format!(
            "the serving certificate ({} days) cannot outlive its CA ({} days)",
            spec.days, spec.ca_days
        )));
    }
    let now = time::OffsetDateTime::now_utc();
    // A little back-dating absorbs clock skew between this machine and the apiserver.
    let not_before = now - time::Duration::hours(1);

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "cce-cni-guard webhook CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = now + time::Duration::days(i64::from(spec.ca_days));
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(Vec::<String>::new())?;
    for name in spec.dns_names() {
        let name = name
            .clone()
            .try_into()
            .map_err(|_| CertsError::Invalid(format!("{name:?} is not a DNS name")))?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    for ip in &spec.ip_addresses {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.distinguished_name.push(
        DnType::CommonName,
        format!("{}.{}.svc", spec.service, spec.namespace),
    );
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = now + time::Duration::days(i64::from(spec.days));
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    Ok(GeneratedCerts {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The file names written into the output directory, as a Secret of type kubernetes.io/tls
/// names its keys.
pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// Writes `ca.crt`, `tls.crt` and `tls.key` (0600) into `dir`, refusing to overwrite
/// unless `force`.
pub fn write(dir: &Path, certs: &GeneratedCerts, force: bool) -> Result<(), CertsError> {
    std::fs::create_dir_all(dir).map_err(|source| CertsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let files = [
        (CA_FILE, certs.ca_pem.as_str(), 0o644),
        (CERT_FILE, certs.cert_pem.as_str(), 0o644),
        (KEY_FILE, certs.key_pem.as_str(), 0o600),
    ];
    if !force {
        // Check all first, so a refusal writes nothing at all.
        for (name, _, _) in &files {
            let path = dir.join(name);
            if path.symlink_metadata().is_ok() {
                return Err(CertsError::Exists(path));
            }
        }
    }
    for (name, text, mode) in files {
        write_file(&dir.join(name), text, mode, force)?;
    }
    Ok(())
}

fn write_file(path: &Path, text: &str, mode: u32, force: bool) -> Result<(), CertsError> {
    let err = |source| CertsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let mut file = options.open(path).map_err(err)?;
    // `mode` only applies to new files; an overwritten key must not keep looser bits.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(err)?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    file.write_all(text.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)
}

/// Writes the certificates and prints the base64 caBundle.
pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let spec = CertSpec {
        service: args.service,
        namespace: args.namespace,
        extra_dns: args.dns,
        ip_addresses: args.ip,
        days: args.days,
        ca_days: args.ca_days,
    };
    if args.cluster.in_cluster {
        return crate::certs_cluster::run_for(&spec, &args.cluster);
    }
    let Some(out) = args.out else {
        anyhow::bail!("--out DIR is required (or --in-cluster)");
    };
    let certs = generate(&spec)?;
    write(&out, &certs, args.force)?;
    println!("{}", certs.ca_bundle());
    eprintln!(
        "wrote {ca}, {cert} and {key} (0600) in {dir}\n\
         serving certificate for {names} valid {days} days, CA valid {ca_days} days\n\
         stdout is the caBundle for the ValidatingWebhookConfiguration; create the Secret with\n  \
         kubectl -n {ns} create secret tls {svc}-tls --cert={dir}/{cert} --key={dir}/{key}",
        ca = CA_FILE,
        cert = CERT_FILE,
        key = KEY_FILE,
        dir = out.display(),
        names = spec.dns_names().join(", "),
        days = spec.days,
        ca_days = spec.ca_days,
        ns = spec.namespace,
        svc = spec.service,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_every_form_of_the_service() {
        let mut spec = CertSpec::new("guard", "kube-system");
        spec.extra_dns = vec!["localhost".into(), "guard".into()];
        assert_eq!(
            spec.dns_names(),
            vec![
                "guard",
                "guard.kube-system",
                "guard.kube-system.svc",
                "guard.kube-system.svc.cluster.local",
                "localhost",
            ]
        );
    }

    #[test]
    fn bad_names_and_validity_are_refused() {
        assert!(matches!(
            generate(&CertSpec::new("Guard_1", "kube-system")),
            Err(CertsError::Invalid(_))
        ));
        assert!(matches!(
            generate(&CertSpec::new("guard", "")),
            Err(CertsError::Invalid(_))
        ));
        let mut spec = CertSpec::new("guard", "ns");
        spec.days = 4000;
        assert!(matches!(generate(&spec), Err(CertsError::Invalid(_))));
    }
}
