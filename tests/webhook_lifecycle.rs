//! `cce-cni-guard serve` (the real binary) through its lifecycle under load: the serving
//! certificate rotated by a Kubernetes Secret-volume `..data` swap while clients keep
//! sending reviews, SIGTERM while requests are in flight, and certificates that must stop
//! it from starting at all.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use cce_cni_guard::certs::{CertSpec, GeneratedCerts};
use common::serve::{self, Guard};

/// How many clients send reviews at once, each as fast as it is answered.
const CLIENTS: usize = 6;

fn serial_of(pem: &str) -> String {
    let der = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    cce_cni_guard::tls::certificate_info(der.as_ref())
        .unwrap()
        .serial
}

fn certs_valid_for(days: u32) -> GeneratedCerts {
    cce_cni_guard::install_crypto_provider();
    let mut spec = CertSpec::new("cce-cni-guard", "kube-system");
    spec.ip_addresses = vec!["127.0.0.1".parse().unwrap()];
    spec.days = days;
    cce_cni_guard::certs::generate(&spec).unwrap()
}

/// A self-signed pair for 127.0.0.1 valid from `from` to `until` days from now.
fn self_signed(from: i64, until: i64) -> (String, String) {
    let now = time::OffsetDateTime::now_utc();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap())];
    params.not_before = now + time::Duration::days(from);
    params.not_after = now + time::Duration::days(until);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// What one request saw: the certificate serial of its connection, or what failed.
#[derive(Debug, Clone)]
struct Sample {
    /// When its handshake completed (or, if it failed to connect, when it began).
    at: Instant,
    serial: Option<String>,
    failure: Option<String>,
}

/// One review on a new connection: connect, note the served serial, post, check the answer.
async fn one_review(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Sample {
    let mut at = Instant::now();
    let result = async {
        let stream = serve::connect(addr, config)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        at = Instant::now();
        let serial = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| cce_cni_guard::tls::certificate_info(leaf.as_ref()).ok())
            .map(|info| info.serial);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let request = serve::validate_request(serve::fixture("agent-patch-upgrade.v1.json"));
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        check_allowed(response).await?;
        Ok::<_, String>(serial)
    }
    .await;
    match result {
        Ok(serial) => Sample {
            at,
            serial,
            failure: None,
        },
        Err(failure) => Sample {
            at,
            serial: None,
            failure: Some(failure),
        },
    }
}

async fn check_allowed(response: http::Response<hyper::body::Incoming>) -> Result<(), String> {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    let review: Value = serde_json::from_slice(&body).map_err(|e| format!("answer: {e}"))?;
    if status != StatusCode::OK || review["response"]["allowed"] != true {
        return Err(format!("wrong answer: {status} {review}"));
    }
    Ok(())
}

/// `CLIENTS` clients sending reviews on new connections until `stop`.
fn load(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<Vec<Sample>>> {
    (0..CLIENTS)
        .map(|_| {
            let (config, stop) = (config.clone(), stop.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    samples.push(one_review(addr, config.clone()).await);
                }
                samples
            })
        })
        .collect()
}

/// A client that keeps one connection (HTTP/1.1 keep-alive or h2) and sends reviews on it
/// until `stop`: rotation must not disturb connections already open.
fn keep_alive_client(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    h2: bool,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let stream = serve::connect(addr, config).await.unwrap();
        let io = TokioIo::new(stream);
        let mut failures = Vec::new();
        let mut answered = 0;
        if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let request =
                    serve::validate_request(serve::fixture("agent-patch-upgrade.v1.json"));
                match sender.send_request(request).await {
                    Ok(response) => match check_allowed(response).await {
                        Ok(()) => answered += 1,
                        Err(e) => failures.push(e),
                    },
                    Err(e) => failures.push(format!("h2 request: {e}")),
                }
            }
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let request =
                    serve::validate_request(serve::fixture("agent-patch-upgrade.v1.json"));
                match sender.send_request(request).await {
                    Ok(response) => match check_allowed(response).await {
                        Ok(()) => answered += 1,
                        Err(e) => failures.push(e),
                    },
                    Err(e) => failures.push(format!("h1 request: {e}")),
                }
            }
        }
        (answered, failures)
    })
}

async fn collect(tasks: Vec<JoinHandle<Vec<Sample>>>) -> Vec<Sample> {
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_by_key(|s| s.at);
    all
}

#[tokio::test]
async fn rotation_under_load_fails_no_request_and_serves_the_new_certificate_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let first = certs_valid_for(365);
    let second = certs_valid_for(365);
    serve::secret_volume_revision(
        dir.path(),
        "..2026_12_01_22_00_00.1",
        &first.cert_pem,
        &first.key_pem,
    );
    let guard = serve::start(
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
        &["--cert-reload-interval", "200ms"],
    );
    // Clients trust both CAs, as the webhook configuration's caBundle does during a rotation.
    // Every handshake is a full one: a resumed session shows the certificate it began with.
    let mut full_handshakes =
        (*serve::client_config(&[&first.ca_pem, &second.ca_pem], &[b"http/1.1"])).clone();
    full_handshakes.resumption = rustls::client::Resumption::disabled();
    let trust_both = Arc::new(full_handshakes);
    let trust_both_h2 = serve::client_config(&[&first.ca_pem, &second.ca_pem], &[b"h2"]);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(guard.addr, trust_both.clone(), stop.clone());
    let kept = [false, true].map(|h2| {
        let config = if h2 {
            trust_both_h2.clone()
        } else {
            trust_both.clone()
        };
        keep_alive_client(guard.addr, config, h2, stop.clone())
    });

    tokio::time::sleep(Duration::from_secs(1)).await;
    let swapped = Instant::now();
    serve::secret_volume_revision(
        dir.path(),
        "..2026_12_01_22_05_00.2",
        &second.cert_pem,
        &second.key_pem,
    );
    guard
        .wait_for_log("serving certificate reloaded", Duration::from_secs(10))
        .await;
    // Another second of load on the new certificate.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A swap to an expired pair is refused; the current one goes on being served.
    let (expired_cert, expired_key) = self_signed(-30, -1);
    serve::secret_volume_revision(
        dir.path(),
        "..2026_12_01_22_10_00.3",
        &expired_cert,
        &expired_key,
    );
    let refused = guard
        .wait_for_log("new serving certificate refused", Duration::from_secs(10))
        .await;
    assert!(refused.contains("expired"), "{refused}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);

    let samples = collect(clients).await;
    let failures: Vec<&Sample> = samples.iter().filter(|s| s.failure.is_some()).collect();
    let (old, new) = (serial_of(&first.cert_pem), serial_of(&second.cert_pem));
    let first_new = samples
        .iter()
        .find(|s| s.serial.as_deref() == Some(new.as_str()))
        .map(|s| s.at.duration_since(swapped));
    let last_old = samples
        .iter()
        .rev()
        .find(|s| s.serial.as_deref() == Some(old.as_str()))
        .map(|s| s.at.saturating_duration_since(swapped));
    let mut kept_answers = 0;
    let mut kept_failures = Vec::new();
    for task in kept {
        let (answered, failed) = task.await.unwrap();
        kept_answers += answered;
        kept_failures.extend(failed);
    }
    eprintln!(
        "rotation under load: {} requests on new connections by {CLIENTS} clients, {kept_answers} on 2 kept connections; \
         {} failed; new certificate first served {first_new:?} after the swap, the old one last {last_old:?} after",
        samples.len(),
        failures.len() + kept_failures.len()
    );
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(
        kept_failures.is_empty(),
        "kept connections: {kept_failures:#?}"
    );
    assert!(
        samples.len() >= 5 * CLIENTS,
        "too little load: {}",
        samples.len()
    );
    assert!(
        kept_answers >= 5,
        "the kept connections were not used: {kept_answers}"
    );
    let first_new = first_new.expect("the new certificate was never served");
    assert!(
        first_new < Duration::from_secs(5),
        "the new certificate took {first_new:?}"
    );
    // Once one handshake got the new certificate, every later one does (the expired pair
    // was never served).
    let switch = samples
        .iter()
        .position(|s| s.serial.as_deref() == Some(new.as_str()))
        .unwrap();
    let stale: Vec<_> = samples[switch..]
        .iter()
        .filter(|s| s.serial.as_deref() != Some(new.as_str()))
        .filter(|s| s.at > samples[switch].at + Duration::from_millis(100))
        .collect();
    assert!(
        stale.is_empty(),
        "served something else after the switch: {stale:#?}"
    );

    let text = guard.metrics().await;
    assert_eq!(
        serve::metric(
            &text,
            "cce_cni_guard_certificate_reloads_total{result=\"success\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        serve::metric(
            &text,
            "cce_cni_guard_certificate_reloads_total{result=\"failure\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_certificate_near_its_expiry_is_served_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let lasting = certs_valid_for(365);
    serve::secret_volume_revision(dir.path(), "..1", &lasting.cert_pem, &lasting.key_pem);
    let guard = serve::start(
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
        &["--cert-reload-interval", "200ms"],
    );
    assert!(
        !guard.log().iter().any(|l| l.contains("expires soon")),
        "a year is not soon: {:#?}",
        guard.log()
    );
    let short = certs_valid_for(2);
    serve::secret_volume_revision(dir.path(), "..2", &short.cert_pem, &short.key_pem);
    let warning = guard
        .wait_for_log("expires soon", Duration::from_secs(10))
        .await;
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains(&serial_of(&short.cert_pem)), "{warning}");
    // Served all the same: it is still valid.
    serve::assert_still_serving(guard.addr, &short.ca_pem).await;

    // At start, too.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = serve::write_pair(dir.path(), &short.cert_pem, &short.key_pem);
    let guard = serve::start(&cert, &key, &[]);
    let warning = guard
        .wait_for_log("expires soon", Duration::from_secs(10))
        .await;
    assert!(
        warning.contains("hours_left=47") || warning.contains("hours_left=48"),
        "{warning}"
    );
}

/// Starts a slow request: the head and half the body of a one-container change (denied).
async fn half_sent_request(guard: &Guard, ca: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut stream = serve::connect(guard.addr, serve::client_config(&[ca], &[b"http/1.1"]))
        .await
        .unwrap();
    let body = serve::fixture("agent-one-container.v1.json");
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: guard\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

async fn finish_request(mut stream: tokio_rustls::client::TlsStream<TcpStream>) -> String {
    let body = serve::fixture("agent-one-container.v1.json");
    stream.write_all(&body[body.len() / 2..]).await.unwrap();
    stream.flush().await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn sigterm_under_load_finishes_in_flight_requests_refuses_new_ones_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let certs = serve::loopback_certs();
    let (cert, key) = serve::write_pair(dir.path(), &certs.cert_pem, &certs.key_pem);
    let grace = Duration::from_secs(15);
    let delay = Duration::from_secs(1);
    let mut guard = serve::start(
        &cert,
        &key,
        &["--shutdown-grace", "15s", "--shutdown-delay", "1s"],
    );
    let in_flight = "cce_cni_guard_admission_in_flight_requests";
    let mut slow = Vec::new();
    for _ in 0..3 {
        slow.push(half_sent_request(&guard, &certs.ca_pem).await);
    }
    guard
        .wait_metric(in_flight, 3.0, Duration::from_secs(10))
        .await;

    let config = serve::client_config(&[&certs.ca_pem], &[b"http/1.1"]);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(guard.addr, config.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let signalled = Instant::now();
    guard.sigterm();

    // During the delay it reports not ready and goes on serving new connections.
    loop {
        let readyz = serve::plain_get(guard.health, "/readyz").await;
        if readyz.starts_with("HTTP/1.1 503") {
            assert!(readyz.contains("shutting down"), "{readyz}");
            break;
        }
        assert!(
            signalled.elapsed() < delay,
            "still ready during the shutdown delay: {readyz}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Then the listener closes.
    while TcpStream::connect(guard.addr).await.is_ok() {
        assert!(
            signalled.elapsed() < delay + Duration::from_secs(10),
            "still accepting after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closed_after = signalled.elapsed();
    stop.store(true, Ordering::Relaxed);
    let samples = collect(clients).await;
    // Requests that began well inside the delay were all answered.
    let within_delay: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= signalled && s.at + Duration::from_millis(300) < signalled + delay)
        .collect();
    let failed_within: Vec<_> = within_delay
        .iter()
        .filter(|s| s.failure.is_some())
        .collect();
    let before = samples.iter().filter(|s| s.at < signalled).count();
    eprintln!(
        "SIGTERM under load: {before} requests before, {} in the first {:?} of the delay ({} failed); listener closed after {closed_after:?}",
        within_delay.len(),
        delay - Duration::from_millis(300),
        failed_within.len()
    );
    assert!(failed_within.is_empty(), "{failed_within:#?}");
    assert!(!within_delay.is_empty(), "no load during the delay");
    assert!(closed_after >= delay, "closed before the delay was over");
    // A connection refused now is what the apiserver sees once endpoints have moved on.
    assert!(
        serve::connect(guard.addr, config).await.is_err(),
        "a new connection was accepted after shutdown began"
    );
    assert!(guard.is_running(), "exited with requests still in flight");

    // The requests in flight since before SIGTERM are answered in full.
    for stream in slow {
        let response = finish_request(stream).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("\"allowed\":false"), "{response}");
    }
    let status = guard
        .wait_exit(grace)
        .await
        .expect("serve did not exit within the grace period");
    eprintln!("exited {status:?} {:?} after SIGTERM", signalled.elapsed());
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() < grace);
}

#[tokio::test]
async fn sigterm_tells_an_h2_client_with_no_request_yet_to_go_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let certs = serve::loopback_certs();
    let (cert, key) = serve::write_pair(dir.path(), &certs.cert_pem, &certs.key_pem);
    let mut guard = serve::start(&cert, &key, &[]);
    // An h2 connection set up (preface and SETTINGS both ways) that has sent nothing else.
    let mut stream = serve::connect(guard.addr, serve::client_config(&[&certs.ca_pem], &[b"h2"]))
        .await
        .unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    stream.flush().await.unwrap();
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 0x4, "the server's SETTINGS come first");
    let mut rest = vec![0u8; u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize];
    stream.read_exact(&mut rest).await.unwrap();
    stream.write_all(b"\0\0\0\x04\x01\0\0\0\0").await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    guard.sigterm();
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut seen)).await;
    // Frames: find a GOAWAY (type 7) with NO_ERROR.
    let mut at = 0;
    let mut goaway = None;
    while at + 9 <= seen.len() {
        let len = u32::from_be_bytes([0, seen[at], seen[at + 1], seen[at + 2]]) as usize;
        if seen[at + 3] == 0x7 && at + 9 + 8 <= seen.len() {
            let p = &seen[at + 9..at + 17];
            goaway = Some((
                u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff,
                u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            ));
        }
        at += 9 + len;
    }
    // The first GOAWAY of a graceful shutdown names the highest possible stream and is
    // followed by a PING; either way the client stops sending on this connection.
    assert!(
        goaway.is_some_and(|(_, code)| code == 0),
        "no GOAWAY with NO_ERROR before the close: {seen:?}"
    );
    let status = guard.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_request_that_never_finishes_is_cut_at_the_end_of_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let certs = serve::loopback_certs();
    let (cert, key) = serve::write_pair(dir.path(), &certs.cert_pem, &certs.key_pem);
    let mut guard = serve::start(
        &cert,
        &key,
        &["--shutdown-grace", "2s", "--request-timeout", "60s"],
    );
    let mut stuck = half_sent_request(&guard, &certs.ca_pem).await;
    guard
        .wait_metric(
            "cce_cni_guard_admission_in_flight_requests",
            1.0,
            Duration::from_secs(10),
        )
        .await;
    let signalled = Instant::now();
    guard.sigterm();
    let status = guard
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("serve did not exit after its grace period");
    let took = signalled.elapsed();
    eprintln!("exited {status:?} {took:?} after SIGTERM with a stuck request");
    assert!(status.success(), "{status:?}");
    assert!(
        took >= Duration::from_secs(2),
        "did not wait for the grace period: {took:?}"
    );
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stuck.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the stuck connection was left open");
    assert!(
        guard.log().iter().any(|l| l.contains("grace period over")),
        "{:#?}",
        guard.log()
    );
}

/// Starts `serve` with `cert`/`key` in `dir` and expects it to refuse: a non-zero exit,
/// quickly, with `expect` in its log.
fn assert_refuses_to_start(dir: &Path, cert: &[u8], key: &[u8], expect: &[&str]) -> String {
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let outcome = serve::try_start(&cert_path, &key_path, &[], Duration::from_secs(30));
    let (status, log) = match outcome {
        Ok(_) => panic!("serve started with a certificate it must refuse ({expect:?})"),
        Err(failed) => failed,
    };
    let text = log.join("\n");
    assert!(!status.success(), "{status:?}\n{text}");
    for part in expect {
        assert!(text.contains(part), "{part:?} missing in:\n{text}");
    }
    assert!(!text.contains("PRIVATE KEY"), "a key was logged:\n{text}");
    text
}

/// What a case writes as the certificate and key, and what the error must say.
type StartCase<'a> = (&'a str, &'a [u8], &'a [u8], &'a [&'a str]);

#[test]
fn certificates_that_cannot_be_served_stop_serve_at_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = serve::loopback_certs();
    let other = serve::loopback_certs();
    let (expired_cert, expired_key) = self_signed(-30, -1);
    let (future_cert, future_key) = self_signed(2, 30);
    let cases: [StartCase<'_>; 7] = [
        (
            "expired",
            expired_cert.as_bytes(),
            expired_key.as_bytes(),
            &["expired at", "tls.crt"],
        ),
        (
            "not yet valid",
            future_cert.as_bytes(),
            future_key.as_bytes(),
            &["not valid before", "tls.crt"],
        ),
        (
            "key of another certificate",
            good.cert_pem.as_bytes(),
            other.key_pem.as_bytes(),
            &["does not match the private key", "tls.key"],
        ),
        (
            "certificate and key swapped",
            good.key_pem.as_bytes(),
            good.cert_pem.as_bytes(),
            &["holds no certificate", "tls.crt"],
        ),
        (
            "empty key",
            good.cert_pem.as_bytes(),
            b"",
            &["holds no private key", "tls.key"],
        ),
        (
            "the CA instead of the serving certificate",
            good.ca_pem.as_bytes(),
            good.key_pem.as_bytes(),
            &["does not match", "tls.key"],
        ),
        (
            "a truncated certificate",
            &good.cert_pem.as_bytes()[..good.cert_pem.len() / 2],
            good.key_pem.as_bytes(),
            &["tls.crt"],
        ),
    ];
    for (what, cert, key, expect) in cases {
        let log = assert_refuses_to_start(dir.path(), cert, key, expect);
        let last = log.lines().last().unwrap_or_default();
        eprintln!("{what}: {last}");
    }
    // A file that is not there at all.
    let missing = dir.path().join("absent.crt");
    let outcome = serve::try_start(
        &missing,
        &dir.path().join("tls.key"),
        &[],
        Duration::from_secs(30),
    );
    let Err((status, log)) = outcome else {
        panic!("serve started without a certificate file");
    };
    assert!(!status.success());
    assert!(log.join("\n").contains("absent.crt"), "{log:#?}");
}
