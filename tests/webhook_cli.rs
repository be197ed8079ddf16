//! `cce-cni-guard serve` as a process: it prints its addresses, serves, and on SIGTERM lets
//! the request in flight finish and exits 0; a bad certificate makes it exit non-zero.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use cce_cni_guard::certs::{CertSpec, GeneratedCerts};

const BIN: &str = env!("CARGO_BIN_EXE_cce-cni-guard");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/webhook/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn write_certs(dir: &Path) -> GeneratedCerts {
    let mut spec = CertSpec::new("cce-cni-guard", "kube-system");
    spec.ip_addresses = vec!["127.0.0.1".parse().unwrap()];
    let certs = cce_cni_guard::certs::generate(&spec).unwrap();
    cce_cni_guard::certs::write(dir, &certs, false).unwrap();
    certs
}

/// Kills the child if a test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path, extra: &[&str]) -> (Running, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(dir.join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.join("tls.key"))
        .args(extra)
        .env_remove("KUBECONFIG")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("[serve] {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Running(child), rx)
}

/// The address after `marker` in the first log line that has it.
fn address_after(
    lines: &mpsc::Receiver<String>,
    marker: &str,
    seen: &mut Vec<String>,
) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(addr) = seen.iter().find_map(|l| {
            let rest = &l[l.find(marker)? + marker.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        }) {
            return addr;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no {marker:?} line in {seen:#?}"),
        }
    }
}

async fn plain_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: guard\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

fn wait_exit(child: &mut Running, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn serve_prints_its_addresses_and_exits_0_after_sigterm_with_the_request_finished() {
    cce_cni_guard::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let certs = write_certs(dir.path());
    let (mut child, lines) = serve(dir.path(), &["--no-cluster", "--shutdown-grace", "20s"]);
    let mut seen = Vec::new();
    let addr = address_after(&lines, "listening on https://", &mut seen);
    let health = address_after(&lines, "health and metrics on http://", &mut seen);
    assert!(
        seen.iter()
            .any(|l| l.contains("WARN") && l.contains("without a cluster")),
        "{seen:#?}"
    );

    let healthz = plain_get(health, "/healthz").await;
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    let readyz = plain_get(health, "/readyz").await;
    assert!(readyz.starts_with("HTTP/1.1 200"), "{readyz}");

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut certs.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut stream = TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap();
    let body = fixture("agent-one-container.v1.json");
    let (head, tail) = body.split_at(body.len() / 2);
    let request_head = format!(
        "POST /validate HTTP/1.1\r\nHost: guard\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(request_head.as_bytes()).await.unwrap();
    stream.write_all(head).await.unwrap();
    stream.flush().await.unwrap();

    // Inside the handler, waiting for the rest of the body.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = plain_get(health, "/metrics").await;
        if metrics
            .lines()
            .any(|l| l == "cce_cni_guard_admission_in_flight_requests 1")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "request never in flight: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    stream.write_all(tail).await.unwrap();
    stream.flush().await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap_or_default();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"allowed\":false"), "{response}");

    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    // The denial was logged with who, what and why.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        seen.push(line);
    }
    let denial = seen
        .iter()
        .find(|l| l.contains("admission denied"))
        .unwrap_or_else(|| panic!("no denial line in {seen:#?}"));
    for part in [
        "alice@example.com",
        "UPDATE",
        "DaemonSet",
        "cce-cni-node-agent",
        "0d1b5d3e-1111-4c2a-9d7e-5b1f00000002",
        "dry_run=true",
        "consistent",
    ] {
        assert!(denial.contains(part), "{part:?} missing in {denial}");
    }
    assert!(
        !seen.iter().any(|l| l.contains("PRIVATE KEY")),
        "a key was logged"
    );
}

#[test]
fn serve_refuses_a_certificate_that_does_not_match_its_key() {
    let dir = tempfile::tempdir().unwrap();
    write_certs(dir.path());
    let other = cce_cni_guard::certs::generate(&CertSpec::new("other", "default")).unwrap();
    std::fs::write(dir.path().join("tls.key"), other.key_pem).unwrap();
    let output = Command::new(BIN)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .arg("--no-cluster")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not match"), "{stderr}");
}

#[test]
fn serve_refuses_an_unusable_configuration() {
    let dir = tempfile::tempdir().unwrap();
    write_certs(dir.path());
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "workloads: []\n").unwrap();
    let output = Command::new(BIN)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .arg("--config")
        .arg(&config)
        .arg("--no-cluster")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("config.yaml"), "{stderr}");
    assert!(stderr.contains("at least one workload"), "{stderr}");
}
