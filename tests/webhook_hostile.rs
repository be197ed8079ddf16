//! Hostile clients against `cce-cni-guard serve` (the real binary, over real TLS): malformed
//! and oversized JSON, wrong media types, huge headers, bodies over the limit, slow drips,
//! half-open handshakes, hundreds of idle connections, HTTP/2 stream floods and clients that
//! vanish mid-request. After each attack the server must still judge a good review
//! correctly, and its resident memory (read from /proc) must stay bounded.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use common::serve::{self, Guard, Memory};

/// What the server may hold on top of its idle footprint during any one attack here. The
/// attacks send at most a few MiB at a time; a leak or an unbounded buffer shows as tens
/// or hundreds of MiB.
const MEMORY_BUDGET_KIB: u64 = 96 * 1024;

struct Bed {
    guard: Guard,
    ca: String,
    baseline: Memory,
    _dir: tempfile::TempDir,
}

impl Bed {
    async fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certs = serve::loopback_certs();
        let (cert, key) = serve::write_pair(dir.path(), &certs.cert_pem, &certs.key_pem);
        let guard = serve::start(&cert, &key, extra);
        // Warm up: the first answers allocate the lasting buffers and tables.
        serve::assert_still_serving(guard.addr, &certs.ca_pem).await;
        let baseline = guard.memory();
        eprintln!("baseline after the first requests: {baseline}");
        Self {
            guard,
            ca: certs.ca_pem,
            baseline,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.guard.addr
    }

    fn h1(&self) -> Arc<rustls::ClientConfig> {
        serve::client_config(&[&self.ca], &[b"http/1.1"])
    }

    fn h2(&self) -> Arc<rustls::ClientConfig> {
        serve::client_config(&[&self.ca], &[b"h2"])
    }

    async fn tls(&self, config: Arc<rustls::ClientConfig>) -> TlsStream<TcpStream> {
        serve::connect(self.addr(), config).await.unwrap()
    }

    /// Posts `body` as JSON over a new HTTP/1.1 connection.
    async fn post(&self, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        serve::post_h1(self.addr(), self.h1(), serve::validate_request(body))
            .await
            .unwrap()
    }

    /// After an attack: a good review is answered correctly and memory stayed bounded.
    async fn assert_unharmed(&self, attack: &str) {
        serve::assert_still_serving(self.addr(), &self.ca).await;
        let now = self.guard.memory();
        eprintln!("after {attack}: {now} (baseline {})", self.baseline);
        assert!(
            now.peak_kib < self.baseline.rss_kib + MEMORY_BUDGET_KIB,
            "{attack}: peak memory {now} grew more than {MEMORY_BUDGET_KIB} KiB over {}",
            self.baseline
        );
    }
}

fn review_of(object: Value, old_object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "6a1e0c2a-0000-4000-8000-000000000001",
            "kind": {"group": "apps", "version": "v1", "kind": "DaemonSet"},
            "resource": {"group": "apps", "version": "v1", "resource": "daemonsets"},
            "requestKind": {"group": "apps", "version": "v1", "kind": "DaemonSet"},
            "requestResource": {"group": "apps", "version": "v1", "resource": "daemonsets"},
            "name": "cce-cni-node-agent",
            "namespace": "kube-system",
            "operation": "UPDATE",
            "userInfo": {"username": "mallory", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": old_object,
            "dryRun": false
        }
    }))
    .unwrap()
}

/// The patch-upgrade fixture's review, as JSON to mangle.
fn patch_upgrade() -> Value {
    serde_json::from_slice(&serve::fixture("agent-patch-upgrade.v1.json")).unwrap()
}

/// Sets the value at a JSON pointer, creating object members on the way.
fn set_at(value: &mut Value, pointer: &str, new: Value) {
    let mut at = value;
    for segment in pointer.trim_start_matches('/').split('/') {
        at = match segment.parse::<usize>() {
            Ok(index) if at.is_array() => &mut at[index],
            _ => &mut at[segment],
        };
    }
    *at = new;
}

fn allowed(body: &[u8]) -> Option<bool> {
    let review: Value = serde_json::from_slice(body).ok()?;
    review["response"]["allowed"].as_bool()
}

/// Malformed input gets 400 with a reason; junk inside a guarded object is refused (fail
/// closed); never an allow.
fn assert_refused(what: &str, status: StatusCode, body: &[u8]) {
    let reason = serve::reason(body);
    match status {
        StatusCode::BAD_REQUEST => assert!(!reason.is_empty(), "{what}: 400 without a reason"),
        StatusCode::OK => {
            assert_eq!(
                allowed(body),
                Some(false),
                "{what}: a malformed guarded object was not refused: {}",
                String::from_utf8_lossy(body)
            );
            assert!(!reason.is_empty(), "{what}: a denial without a reason");
        }
        other => panic!(
            "{what}: {other} {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        ),
    }
    eprintln!("{what}: {status}: {}", &reason[..reason.len().min(160)]);
}

#[tokio::test]
async fn malformed_json_is_refused_with_a_reason_and_never_allowed() {
    let bed = Bed::start(&[]).await;
    let good = serve::fixture("agent-patch-upgrade.v1.json");

    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [1, good.len() / 3, good.len() / 2, good.len() - 2] {
        cases.push((format!("truncated at {cut} bytes"), good[..cut].to_vec()));
    }
    let depth = 200_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    cases.push(("200,000 nested arrays".into(), nested.clone().into_bytes()));
    cases.push((
        "200,000 nested objects, unclosed".into(),
        r#"{"a":"#.repeat(depth).into_bytes(),
    ));
    let mut deep_request = patch_upgrade();
    deep_request["request"] = json!("PLACEHOLDER");
    cases.push((
        "nested arrays as the request".into(),
        deep_request
            .to_string()
            .replace("\"PLACEHOLDER\"", &nested)
            .into_bytes(),
    ));
    // Deep nesting and bad numbers where the policy reads the guarded object (its
    // containers and images): refused, fail closed.
    let mangled = |pointer: &str, junk: &str| -> Vec<u8> {
        let mut review = patch_upgrade();
        set_at(&mut review, pointer, json!("PLACEHOLDER"));
        review
            .to_string()
            .replace("\"PLACEHOLDER\"", junk)
            .into_bytes()
    };
    let read_fields = [
        "/request/object/spec/template/spec/containers/0/image",
        "/request/object/spec/template/spec/containers/0/name",
        "/request/object/spec/template/spec/containers",
        "/request/object/spec/template/spec",
        "/request/object/spec",
    ];
    for pointer in read_fields {
        cases.push((
            format!("nested arrays at {pointer}"),
            mangled(pointer, &nested),
        ));
        for number in ["1e999", "-1e999", "99999999999999999999999999"] {
            cases.push((format!("{number} at {pointer}"), mangled(pointer, number)));
        }
    }
    let mut review = patch_upgrade();
    review["request"]["uid"] = json!("PLACEHOLDER");
    cases.push((
        "a number out of range as the uid".into(),
        review
            .to_string()
            .replace("\"PLACEHOLDER\"", "1e999")
            .into_bytes(),
    ));
    // Invalid UTF-8: a lone continuation byte in an image, an overlong encoding in the uid,
    // and a surrogate escape.
    let text = String::from_utf8(good.clone()).unwrap();
    let image_at = text
        .find("cce-cni:v1.9.4")
        .expect("the fixture's new image");
    let mut bad_image = good.clone();
    bad_image[image_at + 4] = 0x80;
    cases.push(("invalid UTF-8 in an image".into(), bad_image));
    let uid_at = text.find("0d1b5d3e").unwrap();
    let mut bad_uid = good.clone();
    bad_uid.splice(uid_at..uid_at + 2, [0xc0, 0xaf]);
    cases.push(("overlong UTF-8 in the uid".into(), bad_uid));
    cases.push((
        "a lone surrogate escape in an image".into(),
        text.replacen("cce-cni:v1.9.4", "cce-cni:v1.9.4\\ud800", 1)
            .into_bytes(),
    ));
    cases.push(("a NUL byte".into(), b"\0".to_vec()));
    cases.push(("a UTF-8 byte order mark".into(), {
        let mut b = vec![0xef, 0xbb, 0xbf];
        b.extend_from_slice(&good);
        b
    }));

    for (what, body) in cases {
        let (status, answer) = bed.post(body).await;
        assert_refused(&what, status, &answer);
    }

    // The same junk in fields the policy does not judge (the apiserver has validated them
    // before any webhook sees them) must never make a verdict more permissive: a denial
    // stays a denial; an allowed change stays allowed, or is refused (fail closed).
    for (fixture, verdict) in [
        ("agent-patch-upgrade.v1.json", true),
        ("agent-one-container.v1.json", false),
    ] {
        let clean: Value = serde_json::from_slice(&serve::fixture(fixture)).unwrap();
        for pointer in [
            "/request/object/metadata/labels",
            "/request/object/metadata/managedFields",
            "/request/object/spec/template/metadata",
            "/request/object/spec/template/spec/containers/0/env",
            "/request/object/status",
            "/request/options",
        ] {
            for junk in [
                nested.as_str(),
                "1e999",
                "-1e999",
                "99999999999999999999999999",
            ] {
                let mut review = clean.clone();
                set_at(&mut review, pointer, json!("PLACEHOLDER"));
                let body = review.to_string().replace("\"PLACEHOLDER\"", junk);
                let (status, answer) = bed.post(body.into_bytes()).await;
                let what = format!("{fixture}: {} at {pointer}", &junk[..junk.len().min(12)]);
                match (status, allowed(&answer)) {
                    (StatusCode::OK, Some(now)) if now == verdict => {}
                    (StatusCode::OK, Some(false)) => assert_refused(&what, status, &answer),
                    (StatusCode::BAD_REQUEST, _) => assert_refused(&what, status, &answer),
                    (other, now) => panic!("{what}: {other}, allowed {now:?}"),
                }
            }
        }
    }
    bed.assert_unharmed("malformed JSON").await;
}

#[tokio::test]
async fn ten_thousand_element_arrays_are_judged_not_choked_on() {
    let bed = Bed::start(&[]).await;
    let base = patch_upgrade();
    let request = &base["request"];
    let filler = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"name": format!("sidecar-{i}"), "image": format!("example.com/sidecar:{i}")}))
            .collect()
    };

    // 10,000 more containers beside the guarded ones, on both sides: still a patch upgrade.
    let mut object = request["object"].clone();
    let mut old = request["oldObject"].clone();
    for side in [&mut object, &mut old] {
        let containers = side["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap();
        containers.extend(filler(10_000));
    }
    let body = review_of(object, old);
    let size_kib = body.len() / 1024;
    let started = Instant::now();
    let (status, answer) = bed.post(body).await;
    eprintln!(
        "10,000 extra containers ({size_kib} KiB): {status} in {:?}",
        started.elapsed()
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(allowed(&answer), Some(true), "{}", serve::reason(&answer));

    // 10,000 env entries and 10,000 labels on the guarded container's pod.
    let mut object = request["object"].clone();
    let env: Vec<Value> = (0..10_000)
        .map(|i| json!({"name": format!("VAR_{i}"), "value": "x"}))
        .collect();
    object["spec"]["template"]["spec"]["containers"][0]["env"] = Value::Array(env);
    let labels: serde_json::Map<String, Value> = (0..10_000)
        .map(|i| (format!("label-{i}"), json!("v")))
        .collect();
    object["metadata"]["labels"] = Value::Object(labels);
    let (status, answer) = bed
        .post(review_of(object, request["oldObject"].clone()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(allowed(&answer), Some(true), "{}", serve::reason(&answer));

    // 10,000 copies of a guarded container, all at the new image but one: still inconsistent.
    let mut object = request["object"].clone();
    let containers = object["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap();
    let guarded = containers[0].clone();
    for _ in 0..10_000 {
        containers.push(guarded.clone());
    }
    containers[5_000]["image"] = json!("registry.example.com/cce-plugin-pro/cce-cni:v1.9.3");
    let (status, answer) = bed
        .post(review_of(object, request["oldObject"].clone()))
        .await;
    eprintln!(
        "10,000 copies of a guarded container: {status}: {}",
        serve::reason(&answer).lines().next().unwrap_or("")
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        allowed(&answer),
        Some(false),
        "duplicates must not slip through"
    );

    // A top-level array of 10,000 review envelopes is not a review.
    let envelope = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
    let many: Vec<Value> = (0..10_000).map(|_| envelope.clone()).collect();
    let body = serde_json::to_vec(&many).unwrap();
    let (status, answer) = bed.post(body).await;
    assert_refused("an array of 10,000 reviews", status, &answer);
    bed.assert_unharmed("10,000-element arrays").await;
}

#[tokio::test]
async fn wrong_media_type_method_or_path_is_refused() {
    let bed = Bed::start(&[]).await;
    let body = serve::fixture("agent-patch-upgrade.v1.json");
    let request = |method: Method, path: &str, content_type: Option<&str>| {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "guard");
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        builder.body(Full::new(Bytes::from(body.clone()))).unwrap()
    };
    for (what, req, expected) in [
        (
            "text/plain",
            request(Method::POST, "/validate", Some("text/plain")),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "no content type",
            request(Method::POST, "/validate", None),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "application/yaml",
            request(Method::POST, "/validate", Some("application/yaml")),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "application/json-patch+json",
            request(
                Method::POST,
                "/validate",
                Some("application/json-patch+json"),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "a content type that is not text",
            {
                let mut req = request(Method::POST, "/validate", None);
                req.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_bytes(b"application/\xffjson").unwrap(),
                );
                req
            },
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "GET",
            request(Method::GET, "/validate", Some("application/json")),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "another path",
            request(Method::POST, "/mutate", Some("application/json")),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (status, answer) = serve::post_h1(bed.addr(), bed.h1(), req)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(status, expected, "{what}");
        assert_ne!(allowed(&answer), Some(true), "{what}");
    }
    bed.assert_unharmed("wrong media types").await;
}

/// Writes raw bytes on a TLS connection and reads what comes back until the server closes
/// it or `within` passes.
async fn raw_exchange(
    stream: &mut TlsStream<TcpStream>,
    request: &[u8],
    within: Duration,
) -> (String, bool) {
    let _ = stream.write_all(request).await;
    let _ = stream.flush().await;
    read_until_closed(stream, within).await
}

/// Writes `request` while reading the answer, as a client does that is still sending a
/// body the server has already refused.
async fn write_while_reading(stream: TlsStream<TcpStream>, request: Vec<u8>) -> String {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        let _ = writer.flush().await;
        writer
    });
    let (answer, _) = read_until_closed(&mut reader, Duration::from_secs(10)).await;
    writing.abort();
    answer
}

/// What the server sent, and whether it closed the connection within `within`.
async fn read_until_closed<S: AsyncReadExt + Unpin>(
    stream: &mut S,
    within: Duration,
) -> (String, bool) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&seen).into(), false),
        }
    }
}

#[tokio::test]
async fn huge_headers_are_refused() {
    let bed = Bed::start(&[]).await;
    let body = serve::fixture("configmap-create.v1.json");
    let head = |extra: &str| {
        format!(
            "POST /validate HTTP/1.1\r\nHost: guard\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
    };
    let one_huge = format!("X-Filler: {}\r\n", "a".repeat(1024 * 1024));
    let many: String = (0..500).map(|i| format!("X-Filler-{i}: a\r\n")).collect();
    for (what, extra) in [("a 1 MiB header", one_huge), ("500 headers", many)] {
        let mut stream = bed.tls(bed.h1()).await;
        let mut request = head(&extra).into_bytes();
        request.extend_from_slice(&body);
        let (answer, closed) = raw_exchange(&mut stream, &request, Duration::from_secs(10)).await;
        eprintln!("{what}: {}", answer.lines().next().unwrap_or("(closed)"));
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{what}: {answer}"
        );
        assert!(closed, "{what}: the connection stayed open");
    }

    // h2: a header list far over the advertised SETTINGS_MAX_HEADER_LIST_SIZE.
    let mut h2 = RawH2::open(&bed).await;
    let filler: Vec<(String, String)> = (0..800)
        .map(|i| (format!("x-filler-{i}"), "a".repeat(8)))
        .collect();
    h2.headers(1, &filler, false).await;
    let frames = h2.read_frames(Duration::from_secs(3)).await;
    eprintln!("h2 header list of ~40 KiB: {frames:?}");
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::Reset { stream: 1, .. })
                || matches!(f, Frame::GoAway { .. })
                || matches!(
                    f,
                    Frame::Headers {
                        stream: 1,
                        status: Some(431)
                    }
                )),
        "the oversized header list was not refused: {frames:?}"
    );
    bed.assert_unharmed("huge headers").await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_without_being_read_whole() {
    let bed = Bed::start(&["--body-limit", "64KiB"]).await;

    // Declares 1 GiB and sends 128 KiB of it: refused long before the rest would arrive.
    let stream = bed.tls(bed.h1()).await;
    let head = "POST /validate HTTP/1.1\r\nHost: guard\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n";
    let mut request = head.as_bytes().to_vec();
    request.extend(std::iter::repeat_n(b' ', 128 * 1024));
    let answer = write_while_reading(stream, request).await;
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "declared 1 GiB: {answer}"
    );
    assert!(answer.contains("65536"), "{answer}");

    // Chunked, no length given: refused once it passes the limit.
    let mut stream = bed.tls(bed.h1()).await;
    let head = "POST /validate HTTP/1.1\r\nHost: guard\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut request = head.as_bytes().to_vec();
    for _ in 0..40 {
        request.extend_from_slice(format!("{:x}\r\n", 4096).as_bytes());
        request.extend(std::iter::repeat_n(b' ', 4096));
        request.extend_from_slice(b"\r\n");
    }
    let (answer, _) = raw_exchange(&mut stream, &request, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "chunked: {answer}");

    // A whole 8 MiB body, and one just over the limit, each with its length declared.
    for size in [8 * 1024 * 1024, 64 * 1024 + 1] {
        let stream = bed.tls(bed.h1()).await;
        let head = format!(
            "POST /validate HTTP/1.1\r\nHost: guard\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
        );
        let mut request = head.into_bytes();
        request.extend(std::iter::repeat_n(b' ', size));
        let answer = write_while_reading(stream, request).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{size} bytes: {answer}");
        assert!(answer.contains("65536"), "{answer}");
    }

    // On h2, a stream that sends past the limit is answered 413 and the connection goes on.
    let mut h2 = RawH2::open(&bed).await;
    h2.headers(1, &[], false).await;
    for _ in 0..8 {
        h2.data(1, &[b' '; 16 * 1024], false).await;
    }
    let frames = h2.read_frames(Duration::from_secs(3)).await;
    assert!(
        frames.iter().any(|f| matches!(
            f,
            Frame::Headers {
                stream: 1,
                status: Some(413)
            }
        )),
        "{frames:?}"
    );
    h2.headers(3, &[], false).await;
    h2.data(3, &serve::fixture("configmap-create.v1.json"), true)
        .await;
    let frames = h2.read_frames(Duration::from_secs(3)).await;
    assert!(
        frames.iter().any(|f| matches!(
            f,
            Frame::Headers {
                stream: 3,
                status: Some(200)
            }
        )),
        "{frames:?}"
    );
    bed.assert_unharmed("bodies over the limit").await;
}

#[tokio::test]
async fn slow_drips_time_out_while_other_clients_are_served() {
    let bed = Bed::start(&["--request-timeout", "1s", "--header-read-timeout", "1s"]).await;
    let body = serve::fixture("agent-patch-upgrade.v1.json");

    // A body dripped a byte at a time: the request timeout answers 408.
    let body_drip = {
        let mut stream = bed.tls(bed.h1()).await;
        let head = format!(
            "POST /validate HTTP/1.1\r\nHost: guard\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let body = body.clone();
        tokio::spawn(async move {
            stream.write_all(head.as_bytes()).await.unwrap();
            let started = Instant::now();
            for byte in body.iter().take(200) {
                if stream.write_all(&[*byte]).await.is_err() || stream.flush().await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
            (answer, started.elapsed())
        })
    };
    // A request head dripped a byte at a time: the header timeout closes the connection.
    let head_drip = {
        let mut stream = bed.tls(bed.h1()).await;
        tokio::spawn(async move {
            let started = Instant::now();
            let head = b"POST /validate HTTP/1.1\r\nHost: guard\r\nX-Slow: ".repeat(4);
            for byte in head {
                if stream.write_all(&[byte]).await.is_err() || stream.flush().await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
            (answer, closed, started.elapsed())
        })
    };
    // An h2 stream whose body never completes.
    let h2_drip = {
        let mut h2 = RawH2::open(&bed).await;
        tokio::spawn(async move {
            h2.headers(1, &[], false).await;
            h2.data(1, b"{", false).await;
            h2.read_frames(Duration::from_secs(4)).await
        })
    };
    // An h2 request head that is never finished (HEADERS without END_HEADERS): nothing
    // reached the server's handler, so the header timeout closes the connection.
    let h2_head_drip = {
        let mut h2 = RawH2::open(&bed).await;
        tokio::spawn(async move {
            let started = Instant::now();
            h2.frame(0x1, 0, 1, &[0x83, 0x87]).await;
            let frames = h2.read_frames(Duration::from_secs(10)).await;
            (frames, started.elapsed())
        })
    };
    // A CONTINUATION flood: one head spread over thousands of frames.
    let continuation_flood = {
        let mut h2 = RawH2::open(&bed).await;
        tokio::spawn(async move {
            h2.frame(0x1, 0, 1, &[0x83, 0x87]).await;
            let mut sent = 0usize;
            let filler = [0x40, 0x01, b'x', 0x7f, 0x81, 0x7f]
                .into_iter()
                .chain(std::iter::repeat_n(b'a', 16_000))
                .collect::<Vec<u8>>();
            for _ in 0..2_000 {
                if !h2.frame(0x9, 0, 1, &filler).await {
                    break;
                }
                sent += filler.len();
            }
            (h2.read_frames(Duration::from_secs(3)).await, sent)
        })
    };

    // Meanwhile other clients are answered as usual, several times over.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        serve::assert_still_serving(bed.addr(), &bed.ca).await;
    }

    let (answer, took) = body_drip.await.unwrap();
    eprintln!(
        "dripped body: {} after {took:?}",
        answer.lines().next().unwrap_or("")
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "dripped body: {answer}");
    let (answer, closed, took) = head_drip.await.unwrap();
    eprintln!("dripped head: closed={closed} after {took:?}: {answer:?}");
    assert!(closed, "the dripped head was never cut off");
    assert!(!answer.contains(" 200 "), "{answer}");
    let (frames, took) = h2_head_drip.await.unwrap();
    eprintln!("unfinished h2 head: {frames:?} after {took:?}");
    assert!(
        took < Duration::from_secs(10),
        "the unfinished h2 head was never cut off"
    );
    assert!(
        !frames
            .iter()
            .any(|f| matches!(f, Frame::Headers { stream: 1, .. })),
        "{frames:?}"
    );
    let (frames, sent) = continuation_flood.await.unwrap();
    eprintln!(
        "CONTINUATION flood: {:.1} MiB written before the server stopped it: {:?}",
        sent as f64 / 1048576.0,
        frames.last()
    );
    assert!(
        sent < 2_000 * 16_000,
        "the server took all 32 MB of one header block"
    );
    let frames = h2_drip.await.unwrap();
    assert!(
        frames.iter().any(|f| matches!(
            f,
            Frame::Headers {
                stream: 1,
                status: Some(408)
            }
        )),
        "h2 dripped body: {frames:?}"
    );
    bed.guard
        .wait_metric(
            "cce_cni_guard_admission_in_flight_requests",
            0.0,
            Duration::from_secs(5),
        )
        .await;
    bed.assert_unharmed("slow drips").await;
}

/// The first bytes of a TLS ClientHello record, and no more.
const HALF_A_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];

#[tokio::test]
async fn half_open_handshakes_are_freed_by_the_timeout_while_others_are_served() {
    let bed = Bed::start(&["--handshake-timeout", "1s", "--max-connections", "64"]).await;
    let mut stalled = Vec::new();
    for _ in 0..48 {
        let mut tcp = TcpStream::connect(bed.addr()).await.unwrap();
        tcp.write_all(HALF_A_CLIENT_HELLO).await.unwrap();
        stalled.push(tcp);
    }
    // Plain TCP that never says anything is the other half-open kind.
    for _ in 0..16 {
        stalled.push(TcpStream::connect(bed.addr()).await.unwrap());
    }
    let started = Instant::now();
    // All 64 slots are taken by stalled handshakes; the next client waits at most one
    // handshake timeout for one to come free.
    serve::assert_still_serving(bed.addr(), &bed.ca).await;
    eprintln!(
        "served beside 64 stalled handshakes after {:?}",
        started.elapsed()
    );

    for (i, tcp) in stalled.iter_mut().enumerate() {
        let (_, closed) = read_until_closed(tcp, Duration::from_secs(10)).await;
        assert!(closed, "stalled handshake {i} was never closed");
    }
    eprintln!(
        "all stalled handshakes closed after {:?}",
        started.elapsed()
    );
    bed.guard
        .wait_metric(
            "cce_cni_guard_open_connections",
            0.0,
            Duration::from_secs(5),
        )
        .await;
    bed.assert_unharmed("half-open handshakes").await;
}

#[tokio::test]
async fn three_hundred_idle_connections_are_held_cheaply_and_then_closed() {
    // Long enough that all 300 are open at once even on a slow machine.
    let bed = Bed::start(&["--header-read-timeout", "8s", "--idle-timeout", "8s"]).await;
    let opened = Instant::now();
    let mut idle = Vec::new();
    for i in 0..300 {
        // Half over each protocol.
        let config = if i % 2 == 0 { bed.h1() } else { bed.h2() };
        idle.push(bed.tls(config).await);
    }
    eprintln!("opened 300 TLS connections in {:?}", opened.elapsed());
    let open = bed.guard.metric("cce_cni_guard_open_connections").await;
    assert_eq!(open, Some(300.0), "the server does not count them");
    let with_idle = bed.guard.memory();
    eprintln!("with 300 idle connections: {with_idle}");
    serve::assert_still_serving(bed.addr(), &bed.ca).await;

    for (i, stream) in idle.iter_mut().enumerate() {
        let (_, closed) = read_until_closed(stream, Duration::from_secs(15)).await;
        assert!(closed, "idle connection {i} was never closed");
    }
    eprintln!("all idle connections closed after {:?}", opened.elapsed());
    bed.guard
        .wait_metric(
            "cce_cni_guard_open_connections",
            0.0,
            Duration::from_secs(5),
        )
        .await;
    bed.assert_unharmed("300 idle connections").await;
}

#[tokio::test]
async fn h2_stream_floods_are_limited_by_max_concurrent_streams() {
    let bed = Bed::start(&["--max-concurrent-streams", "8"]).await;

    // The limit is advertised...
    let mut h2 = RawH2::open(&bed).await;
    assert_eq!(h2.server_max_streams, Some(8), "not advertised");
    // ...and a client that ignores it gets the excess streams refused.
    for i in 0..64u32 {
        h2.headers(1 + 2 * i, &[], false).await;
    }
    let frames = h2.read_frames(Duration::from_secs(2)).await;
    let refused = frames
        .iter()
        .filter(|f| {
            matches!(
                f,
                Frame::Reset {
                    code: REFUSED_STREAM,
                    ..
                }
            )
        })
        .count();
    eprintln!("64 streams opened at once with a limit of 8: {refused} refused");
    assert!(
        refused >= 56 || frames.iter().any(|f| matches!(f, Frame::GoAway { .. })),
        "excess streams were not refused: {frames:?}"
    );
    // The streams it kept are still served.
    let review = serve::fixture("configmap-create.v1.json");
    h2.data(1, &review, true).await;
    let frames = h2.read_frames(Duration::from_secs(3)).await;
    if !frames.iter().any(|f| matches!(f, Frame::GoAway { .. })) {
        assert!(
            frames.iter().any(|f| matches!(
                f,
                Frame::Headers {
                    stream: 1,
                    status: Some(200)
                }
            )),
            "{frames:?}"
        );
    }

    // Closing the connection ends the streams it still held.
    drop(h2);
    bed.guard
        .wait_metric(
            "cce_cni_guard_admission_in_flight_requests",
            0.0,
            Duration::from_secs(5),
        )
        .await;

    // Rapid reset (CVE-2023-44487): open and cancel thousands of streams.
    let mut h2 = RawH2::open(&bed).await;
    let mut sent = 0;
    for i in 0..5_000u32 {
        let id = 1 + 2 * i;
        if !h2.headers(id, &[], false).await || !h2.reset(id, CANCEL).await {
            break;
        }
        sent += 1;
    }
    let frames = h2.read_frames(Duration::from_secs(2)).await;
    let away = frames.iter().find(|f| matches!(f, Frame::GoAway { .. }));
    eprintln!("rapid reset: {sent} streams opened and cancelled; server: {away:?}");
    bed.guard
        .wait_metric(
            "cce_cni_guard_admission_in_flight_requests",
            0.0,
            Duration::from_secs(5),
        )
        .await;

    // Many connections each filling its streams with bodies that never end.
    let mut floods = Vec::new();
    for _ in 0..16 {
        let mut h2 = RawH2::open(&bed).await;
        for i in 0..8u32 {
            h2.headers(1 + 2 * i, &[], false).await;
            h2.data(1 + 2 * i, &[b' '; 60 * 1024], false).await;
        }
        floods.push(h2);
    }
    let flooded = bed.guard.memory();
    eprintln!("16 connections x 8 streams x 60 KiB held open: {flooded}");
    bed.assert_unharmed("h2 stream floods").await;
    drop(floods);
}

#[tokio::test]
async fn bodies_held_open_on_many_streams_cannot_exhaust_memory() {
    // Defaults: 4 MiB bodies, 128 streams per connection. Each stream sends most of a
    // maximal body, within flow control, and never finishes it.
    let bed = Bed::start(&["--request-timeout", "30s"]).await;
    let almost = vec![b' '; 4 * 1024 * 1024 - 1024];
    let mut connections = Vec::new();
    let mut held = 0usize;
    let mut refused = 0usize;
    for _ in 0..4 {
        let mut h2 = RawH2::open(&bed).await;
        for i in 0..32u32 {
            let id = 1 + 2 * i;
            if !h2.headers(id, &[], false).await {
                break;
            }
            let (sent, seen) = h2
                .data_within_window(id, &almost, Duration::from_secs(2))
                .await;
            held += sent;
            if !seen.is_empty() {
                refused += 1;
            }
        }
        connections.push(h2);
    }
    let now = bed.guard.memory();
    eprintln!(
        "128 streams sending {:.0} MiB of bodies that never end ({refused} answered early): {now}",
        held as f64 / 1048576.0
    );
    assert!(
        refused > 0,
        "every stream's body was taken in: {held} bytes"
    );
    // While the budget is spent a new request is answered at once, not left hanging.
    let (status, answer) = bed
        .post(serve::fixture("agent-patch-upgrade.v1.json"))
        .await;
    assert!(
        status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
        "{status}"
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert!(serve::reason(&answer).contains("try again"), "{answer:?}");
    }
    let peak = bed.guard.memory().peak_kib;
    assert!(
        peak < bed.baseline.rss_kib + MEMORY_BUDGET_KIB,
        "peak {peak} KiB"
    );
    // Once those clients are gone, their share is free again.
    drop(connections);
    bed.guard
        .wait_metric(
            "cce_cni_guard_admission_in_flight_requests",
            0.0,
            Duration::from_secs(10),
        )
        .await;
    bed.assert_unharmed("unfinished bodies on many streams")
        .await;
}

#[tokio::test]
async fn a_client_that_vanishes_mid_request_frees_everything() {
    let bed = Bed::start(&[]).await;
    let body = serve::fixture("agent-patch-upgrade.v1.json");
    let in_flight = "cce_cni_guard_admission_in_flight_requests";
    for round in 0..20 {
        let mut stream = bed.tls(bed.h1()).await;
        let head = format!(
            "POST /validate HTTP/1.1\r\nHost: guard\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body[..body.len() / 2]).await.unwrap();
        stream.flush().await.unwrap();
        if round == 0 {
            bed.guard
                .wait_metric(in_flight, 1.0, Duration::from_secs(5))
                .await;
        }
        // Alternately a clean close and an abrupt one (no TLS close_notify).
        if round % 2 == 0 {
            let _ = stream.shutdown().await;
        }
        drop(stream);
    }
    // h2: streams opened, half a body sent, then the connection dropped.
    for _ in 0..10 {
        let mut h2 = RawH2::open(&bed).await;
        for i in 0..4u32 {
            h2.headers(1 + 2 * i, &[], false).await;
            h2.data(1 + 2 * i, &body[..body.len() / 2], false).await;
        }
        drop(h2);
    }
    bed.guard
        .wait_metric(in_flight, 0.0, Duration::from_secs(10))
        .await;
    bed.guard
        .wait_metric(
            "cce_cni_guard_open_connections",
            0.0,
            Duration::from_secs(10),
        )
        .await;
    bed.assert_unharmed("clients vanishing mid-request").await;
}

// --- a deliberately naive HTTP/2 client that writes frames by hand, so it can break the
// rules a real client keeps (stream limits, header list sizes, resets).

const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Frame {
    /// A response head; `status` is its `:status` when HPACK put it in the static table
    /// or as a plain literal.
    Headers {
        stream: u32,
        status: Option<u16>,
    },
    Reset {
        stream: u32,
        code: u32,
    },
    GoAway {
        last_stream: u32,
        code: u32,
    },
    Other {
        kind: u8,
        stream: u32,
    },
}

struct RawH2 {
    stream: TlsStream<TcpStream>,
    server_max_streams: Option<u32>,
    buffer: Vec<u8>,
    /// The server's SETTINGS_INITIAL_WINDOW_SIZE: what each new stream may send.
    stream_window: i64,
    /// Flow-control credit the server has granted: connection, and per stream.
    connection_credit: i64,
    stream_credit: std::collections::HashMap<u32, i64>,
}

impl RawH2 {
    /// Connects with ALPN h2, exchanges SETTINGS and acknowledges the server's.
    async fn open(bed: &Bed) -> Self {
        let stream = bed.tls(bed.h2()).await;
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut h2 = Self {
            stream,
            server_max_streams: None,
            buffer: Vec::new(),
            stream_window: 65_535,
            connection_credit: 65_535,
            stream_credit: Default::default(),
        };
        h2.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        h2.frame(0x4, 0, 0, &[]).await;
        // Wait for the server's SETTINGS, its ACK of ours, and the WINDOW_UPDATE that opens
        // its connection window beyond 64 KiB, so later DATA stays within flow control.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let (mut settings, mut acked, mut window) = (false, false, false);
        while !(settings && acked && window) {
            let (kind, flags, stream, payload) = h2
                .next_raw(deadline)
                .await
                .expect("the server did not finish the h2 preface");
            match kind {
                0x4 if flags & 0x1 != 0 => acked = true,
                0x4 => {
                    for setting in payload.chunks_exact(6) {
                        let id = u16::from_be_bytes([setting[0], setting[1]]);
                        let value =
                            u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
                        match id {
                            0x3 => h2.server_max_streams = Some(value),
                            0x4 => h2.stream_window = i64::from(value),
                            _ => {}
                        }
                    }
                    h2.frame(0x4, 0x1, 0, &[]).await;
                    settings = true;
                }
                0x8 if stream == 0 => {
                    h2.connection_credit += window_increment(&payload);
                    window = true;
                }
                _ => {}
            }
        }
        h2
    }

    async fn write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok() && self.stream.flush().await.is_ok()
    }

    async fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> bool {
        let len = u32::try_from(payload.len()).unwrap();
        let mut frame = len.to_be_bytes()[1..].to_vec();
        frame.push(kind);
        frame.push(flags);
        frame.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        frame.extend_from_slice(payload);
        self.write(&frame).await
    }

    /// A POST /validate head with `extra` headers (HPACK literals, no Huffman), split into
    /// CONTINUATION frames as needed.
    async fn headers(&mut self, stream: u32, extra: &[(String, String)], end_stream: bool) -> bool {
        let mut block = vec![0x83, 0x87]; // :method POST, :scheme https
        literal(&mut block, 4, b"/validate"); // :path
        literal(&mut block, 1, b"guard"); // :authority
        literal(&mut block, 31, b"application/json"); // content-type
        for (name, value) in extra {
            block.push(0x00);
            string(&mut block, name.as_bytes());
            string(&mut block, value.as_bytes());
        }
        let mut chunks = block.chunks(16 * 1024).peekable();
        let first = chunks.next().unwrap_or_default();
        let last = chunks.peek().is_none();
        let flags = (if end_stream { 0x1 } else { 0 }) | (if last { 0x4 } else { 0 });
        if !self.frame(0x1, flags, stream, first).await {
            return false;
        }
        while let Some(chunk) = chunks.next() {
            let flags = if chunks.peek().is_none() { 0x4 } else { 0 };
            if !self.frame(0x9, flags, stream, chunk).await {
                return false;
            }
        }
        true
    }

    async fn data(&mut self, stream: u32, bytes: &[u8], end_stream: bool) -> bool {
        let chunks: Vec<&[u8]> = bytes.chunks(16 * 1024).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let flags = if end_stream && last { 0x1 } else { 0 };
            if !self.frame(0x0, flags, stream, chunk).await {
                return false;
            }
        }
        true
    }

    /// Sends `bytes` on `stream` within the flow-control credit the server grants, waiting
    /// for WINDOW_UPDATEs as a real client does. Stops early when the server answers or
    /// resets the stream, or nothing comes within `patience`; returns the bytes sent and
    /// the frames seen meanwhile.
    async fn data_within_window(
        &mut self,
        stream: u32,
        bytes: &[u8],
        patience: Duration,
    ) -> (usize, Vec<Frame>) {
        let mut sent = 0;
        let mut seen = Vec::new();
        while sent < bytes.len() {
            let credit = *self
                .stream_credit
                .entry(stream)
                .or_insert(self.stream_window);
            let room = credit.min(self.connection_credit).min(16 * 1024);
            if room > 0 {
                let end = (sent + room as usize).min(bytes.len());
                if !self.data(stream, &bytes[sent..end], false).await {
                    break;
                }
                let n = (end - sent) as i64;
                self.connection_credit -= n;
                *self.stream_credit.get_mut(&stream).unwrap() -= n;
                sent = end;
                continue;
            }
            let deadline = tokio::time::Instant::now() + patience;
            let Some((kind, _, id, payload)) = self.next_raw(deadline).await else {
                break;
            };
            match kind {
                0x8 if id == 0 => self.connection_credit += window_increment(&payload),
                0x8 => {
                    *self.stream_credit.entry(id).or_insert(self.stream_window) +=
                        window_increment(&payload)
                }
                0x1 => seen.push(Frame::Headers {
                    stream: id,
                    status: None,
                }),
                0x3 => seen.push(Frame::Reset {
                    stream: id,
                    code: 0,
                }),
                0x7 => {
                    seen.push(Frame::GoAway {
                        last_stream: 0,
                        code: 0,
                    });
                    break;
                }
                _ => {}
            }
            if seen.iter().any(|f| match f {
                Frame::Headers { stream: s, .. } | Frame::Reset { stream: s, .. } => *s == stream,
                _ => false,
            }) {
                break;
            }
        }
        (sent, seen)
    }

    async fn reset(&mut self, stream: u32, code: u32) -> bool {
        self.frame(0x3, 0, stream, &code.to_be_bytes()).await
    }

    async fn next_raw(&mut self, deadline: tokio::time::Instant) -> Option<(u8, u8, u32, Vec<u8>)> {
        loop {
            if self.buffer.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buffer[0], self.buffer[1], self.buffer[2]])
                    as usize;
                if self.buffer.len() >= 9 + len {
                    let kind = self.buffer[3];
                    let flags = self.buffer[4];
                    let stream = u32::from_be_bytes([
                        self.buffer[5],
                        self.buffer[6],
                        self.buffer[7],
                        self.buffer[8],
                    ]) & 0x7fff_ffff;
                    let payload = self.buffer[9..9 + len].to_vec();
                    self.buffer.drain(..9 + len);
                    return Some((kind, flags, stream, payload));
                }
            }
            let mut buf = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.buffer.extend_from_slice(&buf[..n]),
                _ => return None,
            }
        }
    }

    /// The frames that arrive within `within` (or until the server closes), decoded enough
    /// to judge the server's behaviour. PINGs are answered.
    async fn read_frames(&mut self, within: Duration) -> Vec<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        let mut frames = Vec::new();
        while let Some((kind, flags, stream, payload)) = self.next_raw(deadline).await {
            let word = |at: usize| {
                payload
                    .get(at..at + 4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0)
            };
            frames.push(match kind {
                0x1 => Frame::Headers {
                    stream,
                    status: response_status(&payload, flags),
                },
                0x3 => Frame::Reset {
                    stream,
                    code: word(0),
                },
                0x7 => Frame::GoAway {
                    last_stream: word(0) & 0x7fff_ffff,
                    code: word(4),
                },
                0x6 if flags & 0x1 == 0 => {
                    self.frame(0x6, 0x1, 0, &payload).await;
                    Frame::Other { kind, stream }
                }
                _ => Frame::Other { kind, stream },
            });
        }
        frames
    }
}

fn window_increment(payload: &[u8]) -> i64 {
    payload
        .get(..4)
        .map(|b| i64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff))
        .unwrap_or(0)
}

/// A literal header field without indexing, its name from the static table.
fn literal(block: &mut Vec<u8>, name_index: u8, value: &[u8]) {
    // 4-bit prefix integer.
    if name_index < 15 {
        block.push(name_index);
    } else {
        block.push(0x0f);
        block.push(name_index - 15);
    }
    string(block, value);
}

/// An HPACK string literal (no Huffman), 7-bit prefix length.
fn string(block: &mut Vec<u8>, bytes: &[u8]) {
    let mut len = bytes.len();
    if len < 127 {
        block.push(len as u8);
    } else {
        block.push(0x7f);
        len -= 127;
        while len >= 128 {
            block.push((len % 128) as u8 | 0x80);
            len /= 128;
        }
        block.push(len as u8);
    }
    block.extend_from_slice(bytes);
}

/// The `:status` of a response head, when it is the first field: an indexed static entry
/// (200, 204, 206, 304, 400, 404, 500) or a literal with a static name (e.g. 413, 408).
fn response_status(block: &[u8], flags: u8) -> Option<u16> {
    let mut block = block;
    // PADDED and PRIORITY flags shift the block.
    if flags & 0x8 != 0 {
        let pad = *block.first()? as usize;
        block = block.get(1..block.len().checked_sub(pad)?)?;
    }
    if flags & 0x20 != 0 {
        block = block.get(5..)?;
    }
    let first = *block.first()?;
    let indexed = [
        (8, 200),
        (9, 204),
        (10, 206),
        (11, 304),
        (12, 400),
        (13, 404),
        (14, 500),
    ];
    if first & 0x80 != 0 {
        let index = first & 0x7f;
        return indexed.iter().find(|(i, _)| *i == index).map(|(_, s)| *s);
    }
    // Literal with incremental indexing (6-bit prefix) or without/never indexed (4-bit),
    // name index 8..=14 are all `:status`.
    let name = if first & 0x40 != 0 {
        first & 0x3f
    } else {
        first & 0x0f
    };
    if !(8..=14).contains(&name) {
        return None;
    }
    let len_byte = *block.get(1)?;
    if len_byte & 0x80 != 0 {
        // Huffman-coded: decode the three digits.
        return huffman_digits(block.get(2..2 + (len_byte & 0x7f) as usize)?);
    }
    let value = block.get(2..2 + len_byte as usize)?;
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Decodes a Huffman-coded string of decimal digits (each digit is 5 or 6 bits in RFC 7541).
fn huffman_digits(bytes: &[u8]) -> Option<u16> {
    let codes: [(u32, u32); 10] = [
        (0x0, 5),
        (0x1, 5),
        (0x2, 5),
        (0x19, 6),
        (0x1a, 6),
        (0x1b, 6),
        (0x1c, 6),
        (0x1d, 6),
        (0x1e, 6),
        (0x1f, 6),
    ];
    let mut bits: Vec<bool> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| b & (1 << i) != 0))
        .collect();
    let mut digits = String::new();
    'outer: while !bits.is_empty() {
        for (digit, (code, len)) in codes.iter().enumerate() {
            let len = *len as usize;
            if bits.len() >= len {
                let value = bits[..len]
                    .iter()
                    .fold(0u32, |acc, b| (acc << 1) | u32::from(*b));
                if value == *code {
                    digits.push(char::from(b'0' + digit as u8));
                    bits.drain(..len);
                    continue 'outer;
                }
            }
        }
        // Padding: the rest are ones.
        break;
    }
    digits.parse().ok()
}
