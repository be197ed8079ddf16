//! The webhook over real TLS on loopback: CA verification with HTTP/1.1 and h2, certificate
//! rotation through a Secret-volume-like `..data` symlink swap, the body limit, graceful
//! shutdown, and refusal of a bad certificate at start.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use cce_cni_guard::certs::{CertSpec, GeneratedCerts};
use cce_cni_guard::tls::{CertificateSource, TlsError};
use cce_cni_guard::webhook::{RunningServer, ServeError, ServeOptions, Server};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/webhook/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn loopback_certs() -> GeneratedCerts {
    let mut spec = CertSpec::new("cce-cni-guard", "kube-system");
    spec.extra_dns = vec!["localhost".into()];
    spec.ip_addresses = vec!["127.0.0.1".parse().unwrap()];
    cce_cni_guard::certs::generate(&spec).unwrap()
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn client_config(cas: &[&str], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for cert in rustls_pemfile::certs(&mut ca.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    TlsConnector::from(config).connect(name, tcp).await
}

fn validate_request(body: Vec<u8>) -> Request<Full<Bytes>> {
    Request::post("/validate")
        .header(header::HOST, "cce-cni-guard.kube-system.svc")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn answer(response: http::Response<hyper::body::Incoming>) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

async fn post_http1(stream: TlsStream<TcpStream>, body: Vec<u8>) -> (StatusCode, Value) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    answer(sender.send_request(validate_request(body)).await.unwrap()).await
}

async fn start(options: ServeOptions) -> RunningServer {
    cce_cni_guard::install_crypto_provider();
    Server::bind(options).await.unwrap()
}

fn pem_options(certs: &GeneratedCerts) -> ServeOptions {
    let mut options = ServeOptions::new(
        loopback(),
        CertificateSource::Pem {
            cert: certs.cert_pem.clone(),
            key: certs.key_pem.clone(),
        },
    );
    options.health_listen = Some(loopback());
    options
}

#[tokio::test]
async fn http1_and_h2_over_tls_with_ca_verification() {
    let certs = loopback_certs();
    let server = start(pem_options(&certs)).await;
    let addr = server.local_addr();

    let stream = connect(addr, client_config(&[&certs.ca_pem], &[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, review) = post_http1(stream, fixture("agent-patch-upgrade.v1.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(review["response"]["allowed"], true);

    let stream = connect(addr, client_config(&[&certs.ca_pem], &[b"h2", b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Several requests multiplexed on one connection.
    let requests = ["agent-patch-upgrade.v1.json", "agent-one-container.v1.json"]
        .map(|f| sender.send_request(validate_request(fixture(f))));
    let [allowed, denied] = requests;
    let (allowed, denied) = tokio::join!(allowed, denied);
    let (status, review) = answer(allowed.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(review["response"]["allowed"], true);
    let (status, review) = answer(denied.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(review["response"]["allowed"], false);
    assert_eq!(review["response"]["status"]["code"], 403);

    // A client that does not trust the CA cannot talk to it.
    let other = loopback_certs();
    assert!(
        connect(addr, client_config(&[&other.ca_pem], &[b"h2"]))
            .await
            .is_err()
    );
    // Without ALPN the server still tells the protocol from the first bytes.
    let stream = connect(addr, client_config(&[&certs.ca_pem], &[]))
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    let (status, _) = post_http1(stream, fixture("configmap-create.v1.json")).await;
    assert_eq!(status, StatusCode::OK);

    // TLS 1.2 still works for older clients.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut certs.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls12 = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        .with_root_certificates(roots)
        .with_no_client_auth();
    let stream = connect(addr, Arc::new(tls12)).await.unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );

    server.shutdown().await;
}

/// Lays out `dir` the way the kubelet writes a Secret volume: a timestamped directory with
/// the files, `..data` pointing at it, and `tls.crt`/`tls.key` pointing through `..data`.
fn secret_volume_revision(dir: &Path, revision: &str, cert_pem: &str, key_pem: &str) {
    let data = dir.join(revision);
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("tls.crt"), cert_pem).unwrap();
    std::fs::write(data.join("tls.key"), key_pem).unwrap();
    // Swap `..data` atomically: a new symlink renamed over the old one.
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(revision, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

async fn served_serial(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Option<String> {
    let stream = connect(addr, config).await.ok()?;
    let leaf = stream.get_ref().1.peer_certificates()?.first()?.clone();
    Some(
        cce_cni_guard::tls::certificate_info(leaf.as_ref())
            .ok()?
            .serial,
    )
}

fn serial_of(pem: &str) -> String {
    let der = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    cce_cni_guard::tls::certificate_info(der.as_ref())
        .unwrap()
        .serial
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_swapped_secret_volume_is_served_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let first = loopback_certs();
    let second = loopback_certs();
    secret_volume_revision(
        dir.path(),
        "..2026_01_01_00_00_00.1",
        &first.cert_pem,
        &first.key_pem,
    );
    let mut options = ServeOptions::new(
        loopback(),
        CertificateSource::Files {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        },
    );
    options.reload_interval = Duration::from_millis(100);
    let server = start(options).await;
    let addr = server.local_addr();
    let trust_both = client_config(&[&first.ca_pem, &second.ca_pem], &[b"h2"]);
    assert_eq!(
        served_serial(addr, trust_both.clone()).await,
        Some(serial_of(&first.cert_pem))
    );

    secret_volume_revision(
        dir.path(),
        "..2026_01_01_00_05_00.2",
        &second.cert_pem,
        &second.key_pem,
    );
    let wanted = serial_of(&second.cert_pem);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = None;
    while Instant::now() < deadline {
        seen = served_serial(addr, trust_both.clone()).await;
        if seen.as_deref() == Some(wanted.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen,
        Some(wanted.clone()),
        "the new certificate was never served"
    );
    // Only the new CA is needed now.
    assert!(
        connect(addr, client_config(&[&second.ca_pem], &[b"h2"]))
            .await
            .is_ok()
    );
    let text = server.metrics().encode();
    assert_eq!(
        metric(
            &text,
            "cce_cni_guard_certificate_reloads_total{result=\"success\"}"
        ),
        Some(1.0),
        "{text}"
    );
    let expiry = metric(&text, "cce_cni_guard_certificate_expiry_timestamp_seconds").unwrap();
    let now = cce_cni_guard::tls::unix_now() as f64;
    assert!(expiry > now + 300.0 * 86_400.0, "{expiry}");

    // A broken pair (key of another certificate) is refused; the served one stays.
    let third = loopback_certs();
    secret_volume_revision(
        dir.path(),
        "..2026_01_01_00_10_00.3",
        &third.cert_pem,
        &first.key_pem,
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let failure = "cce_cni_guard_certificate_reloads_total{result=\"failure\"}";
    while Instant::now() < deadline && metric(&server.metrics().encode(), failure).is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&server.metrics().encode(), failure), Some(1.0));
    assert_eq!(served_serial(addr, trust_both).await, Some(wanted));

    server.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_and_the_server_keeps_serving() {
    let certs = loopback_certs();
    let mut options = pem_options(&certs);
    options.body_limit = 2048;
    let server = start(options).await;
    let addr = server.local_addr();
    let big = {
        let mut body = fixture("agent-patch-upgrade.v1.json");
        body.resize(8192, b' ');
        body
    };

    let stream = connect(addr, client_config(&[&certs.ca_pem], &[b"http/1.1"]))
        .await
        .unwrap();
    let (status, answer_body) = post_http1(stream, big.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer_body["error"].as_str().unwrap().contains("2048"));
    let stream = connect(addr, client_config(&[&certs.ca_pem], &[b"http/1.1"]))
        .await
        .unwrap();
    let (status, _) = post_http1(stream, fixture("configmap-create.v1.json")).await;
    assert_eq!(status, StatusCode::OK);

    // On h2 the same connection goes on after the refusal.
    let stream = connect(addr, client_config(&[&certs.ca_pem], &[b"h2"]))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (status, _) = answer(sender.send_request(validate_request(big)).await.unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let response = sender
        .send_request(validate_request(fixture("configmap-create.v1.json")))
        .await
        .unwrap();
    assert_eq!(answer(response).await.0, StatusCode::OK);

    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_then_stops() {
    let certs = loopback_certs();
    let mut options = pem_options(&certs);
    options.shutdown_grace = Duration::from_secs(20);
    let mut server = start(options).await;
    let addr = server.local_addr();
    let health = server.health_addr().unwrap();

    let mut stream = connect(addr, client_config(&[&certs.ca_pem], &[b"http/1.1"]))
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

    // Wait until the server is inside the request (headers read, body awaited).
    let in_flight = "cce_cni_guard_admission_in_flight_requests";
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && metric(&server.metrics().encode(), in_flight) != Some(1.0) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metric(&server.metrics().encode(), in_flight), Some(1.0));
    server.trigger_shutdown();
    // Shutdown has begun once the listener is closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && TcpStream::connect(addr).await.is_ok() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );

    stream.write_all(tail).await.unwrap();
    stream.flush().await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap_or_default();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"allowed\":false"), "{response}");

    tokio::time::timeout(Duration::from_secs(20), server.wait_stopped())
        .await
        .expect("the server did not stop after its last request");
    assert!(
        TcpStream::connect(health).await.is_err(),
        "health port closed"
    );
}

#[tokio::test]
async fn a_bad_certificate_or_key_at_start_is_a_clear_error() {
    cce_cni_guard::install_crypto_provider();
    let certs = loopback_certs();
    let other = loopback_certs();
    let mismatched = ServeOptions::new(
        loopback(),
        CertificateSource::Pem {
            cert: certs.cert_pem.clone(),
            key: other.key_pem.clone(),
        },
    );
    let err = Server::bind(mismatched).await.unwrap_err();
    assert!(
        matches!(err, ServeError::Tls(TlsError::Mismatch { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("does not match"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let missing = ServeOptions::new(
        loopback(),
        CertificateSource::Files {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        },
    );
    let err = Server::bind(missing).await.unwrap_err();
    assert!(err.to_string().contains("tls.crt"), "{err}");

    let now = time::OffsetDateTime::now_utc();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now - time::Duration::days(1);
    let key = rcgen::KeyPair::generate().unwrap();
    let expired = params.self_signed(&key).unwrap();
    let err = Server::bind(ServeOptions::new(
        loopback(),
        CertificateSource::Pem {
            cert: expired.pem(),
            key: key.serialize_pem(),
        },
    ))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

async fn served_within(addr: SocketAddr, ca: &str, within: Duration) -> StatusCode {
    let stream = tokio::time::timeout(within, connect(addr, client_config(&[ca], &[b"http/1.1"])))
        .await
        .expect("no connection slot came free")
        .unwrap();
    post_http1(stream, fixture("configmap-create.v1.json"))
        .await
        .0
}

#[tokio::test]
async fn idle_or_silent_connections_do_not_hold_the_only_slot() {
    let certs = loopback_certs();
    let mut options = pem_options(&certs);
    options.max_connections = 1;
    options.handshake_timeout = Duration::from_millis(300);
    options.header_read_timeout = Duration::from_millis(300);
    options.idle_timeout = Duration::from_millis(300);
    let server = start(options).await;
    let addr = server.local_addr();
    let wait = Duration::from_secs(10);

    // Connects and never starts TLS: freed by the handshake timeout.
    let _silent_tcp = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        served_within(addr, &certs.ca_pem, wait).await,
        StatusCode::OK
    );

    // Completes TLS with h2 and never sends the preface.
    let _silent_h2 = connect(addr, client_config(&[&certs.ca_pem], &[b"h2"]))
        .await
        .unwrap();
    assert_eq!(
        served_within(addr, &certs.ca_pem, wait).await,
        StatusCode::OK
    );

    // Sends half a request head over HTTP/1.1 and stops.
    let mut half = connect(addr, client_config(&[&certs.ca_pem], &[b"http/1.1"]))
        .await
        .unwrap();
    half.write_all(b"POST /validate HTTP/1.1\r\nHost: gu")
        .await
        .unwrap();
    half.flush().await.unwrap();
    assert_eq!(
        served_within(addr, &certs.ca_pem, wait).await,
        StatusCode::OK
    );

    // An h2 connection that served a request and then idles is closed too.
    let stream = connect(addr, client_config(&[&certs.ca_pem], &[b"h2"]))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let response = sender
        .send_request(validate_request(fixture("configmap-create.v1.json")))
        .await
        .unwrap();
    assert_eq!(answer(response).await.0, StatusCode::OK);
    tokio::time::timeout(wait, conn)
        .await
        .expect("the idle h2 connection was never closed")
        .unwrap()
        .unwrap();
    assert_eq!(
        served_within(addr, &certs.ca_pem, wait).await,
        StatusCode::OK
    );
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_connections_without_a_request() {
    let certs = loopback_certs();
    let mut options = pem_options(&certs);
    options.shutdown_grace = Duration::from_secs(600);
    let mut server = start(options).await;
    let addr = server.local_addr();
    let _silent_h2 = connect(addr, client_config(&[&certs.ca_pem], &[b"h2"]))
        .await
        .unwrap();
    // An h1 keep-alive connection that already served a request.
    let stream = connect(addr, client_config(&[&certs.ca_pem], &[b"http/1.1"]))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let response = sender
        .send_request(validate_request(fixture("configmap-create.v1.json")))
        .await
        .unwrap();
    assert_eq!(answer(response).await.0, StatusCode::OK);

    server.trigger_shutdown();
    tokio::time::timeout(Duration::from_secs(10), server.wait_stopped())
        .await
        .expect("shutdown waited on idle connections");
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the keep-alive connection was not closed")
        .unwrap()
        .unwrap();
}

async fn plain_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: guard\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn a_shutdown_delay_reports_not_ready_but_keeps_serving() {
    let certs = loopback_certs();
    let server = start(pem_options(&certs)).await;
    let addr = server.local_addr();
    let health = server.health_addr().unwrap();
    assert!(
        plain_get(health, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let trigger = server.trigger_handle();
    let draining = tokio::spawn(server.shutdown_after(Duration::from_secs(600)));

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let readyz = plain_get(health, "/readyz").await;
        if readyz.starts_with("HTTP/1.1 503") {
            assert!(readyz.contains("shutting down"), "{readyz}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still ready while draining: {readyz}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // New connections are still served during the delay.
    let stream = connect(addr, client_config(&[&certs.ca_pem], &[b"http/1.1"]))
        .await
        .unwrap();
    let (status, _) = post_http1(stream, fixture("configmap-create.v1.json")).await;
    assert_eq!(status, StatusCode::OK);

    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(10), draining)
        .await
        .expect("a trigger did not cut the delay short")
        .unwrap();
}
