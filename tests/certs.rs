//! `cce-cni-guard certs`: the files it writes, read back and verified as a client would.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use base64::Engine;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::extensions::GeneralName;

const BIN: &str = env!("CARGO_BIN_EXE_cce-cni-guard");

fn certs(out: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args([
            "certs",
            "--service",
            "cce-cni-guard",
            "--namespace",
            "kube-system",
        ])
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn der(pem: &str) -> CertificateDer<'static> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
}

fn verify(ca_pem: &str, leaf_pem: &str, name: &str) -> Result<(), rustls::Error> {
    cce_cni_guard::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(ca_pem)).unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder(roots.into())
        .build()
        .unwrap();
    verifier
        .verify_server_cert(
            &der(leaf_pem),
            &[],
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

#[test]
fn writes_a_ca_and_a_serving_certificate_for_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let output = certs(
        &out,
        &["--dns", "localhost", "--ip", "127.0.0.1", "--days", "30"],
    );
    assert!(output.status.success(), "{output:?}");

    let ca = std::fs::read_to_string(out.join("ca.crt")).unwrap();
    let leaf = std::fs::read_to_string(out.join("tls.crt")).unwrap();
    let key = std::fs::read_to_string(out.join("tls.key")).unwrap();
    assert!(key.contains("PRIVATE KEY"));

    // stdout is exactly one line: the caBundle, base64 of ca.crt.
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(stdout.trim())
        .unwrap();
    assert_eq!(bundle, ca.as_bytes());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("caBundle"), "{stderr}");
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");

    let mode = std::fs::metadata(out.join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let leaf_der = der(&leaf);
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf_der.as_ref()).unwrap();
    let san = parsed.subject_alternative_name().unwrap().unwrap();
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(n) => dns.push(n.to_string()),
            GeneralName::IPAddress(b) => ips.push(b.to_vec()),
            _ => {}
        }
    }
    assert_eq!(
        dns,
        [
            "cce-cni-guard",
            "cce-cni-guard.kube-system",
            "cce-cni-guard.kube-system.svc",
            "cce-cni-guard.kube-system.svc.cluster.local",
            "localhost",
        ]
    );
    assert_eq!(ips, [vec![127, 0, 0, 1]]);
    let eku = parsed.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth);
    assert!(!parsed.is_ca());
    let leaf_days = (parsed.validity().not_after.timestamp()
        - parsed.validity().not_before.timestamp())
        / 86_400;
    assert_eq!(leaf_days, 30, "--days 30 plus the hour of back-dating");

    let ca_der = der(&ca);
    let (_, ca_parsed) = x509_parser::parse_x509_certificate(ca_der.as_ref()).unwrap();
    assert!(ca_parsed.is_ca());
    assert_eq!(parsed.issuer(), ca_parsed.subject());
    assert!(ca_parsed.validity().not_after.timestamp() > parsed.validity().not_after.timestamp());

    // A client trusting the CA accepts the certificate for the Service's DNS names.
    verify(&ca, &leaf, "cce-cni-guard.kube-system.svc").unwrap();
    verify(&ca, &leaf, "cce-cni-guard.kube-system.svc.cluster.local").unwrap();
    assert!(verify(&ca, &leaf, "other.kube-system.svc").is_err());
    let stranger = cce_cni_guard::certs::generate(&cce_cni_guard::certs::CertSpec::new(
        "cce-cni-guard",
        "kube-system",
    ))
    .unwrap();
    assert!(verify(&stranger.ca_pem, &leaf, "cce-cni-guard.kube-system.svc").is_err());
}

#[test]
fn refuses_to_overwrite_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    assert!(certs(out, &[]).status.success());
    let before = std::fs::read(out.join("tls.crt")).unwrap();

    let again = certs(out, &[]);
    assert!(!again.status.success());
    assert!(
        again.stdout.is_empty(),
        "no caBundle when nothing was written"
    );
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(out.join("tls.crt")).unwrap(), before);

    // One file in the way is enough to refuse, and nothing else is written.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("tls.key"), "keep me").unwrap();
    assert!(!certs(other.path(), &[]).status.success());
    assert!(!other.path().join("ca.crt").exists());
    assert_eq!(
        std::fs::read_to_string(other.path().join("tls.key")).unwrap(),
        "keep me"
    );

    std::fs::set_permissions(out.join("tls.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let forced = certs(out, &["--force"]);
    assert!(forced.status.success(), "{forced:?}");
    assert_ne!(std::fs::read(out.join("tls.crt")).unwrap(), before);
    let mode = std::fs::metadata(out.join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "a forced key is tightened again");
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args([
            "certs",
            "--service",
            "Not_A_Name",
            "--namespace",
            "kube-system",
        ])
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DNS label"), "{stderr}");
    assert!(!dir.path().join("tls.key").exists());
}

#[test]
fn the_library_makes_certificates_in_memory() {
    let generated =
        cce_cni_guard::certs::generate(&cce_cni_guard::certs::CertSpec::new("guard", "ns"))
            .unwrap();
    verify(&generated.ca_pem, &generated.cert_pem, "guard.ns.svc").unwrap();
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(generated.ca_bundle())
        .unwrap();
    assert_eq!(bundle, generated.ca_pem.as_bytes());
    assert!(!format!("{generated:?}").contains("PRIVATE KEY"));
}
