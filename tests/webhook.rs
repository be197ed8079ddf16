//! The webhook's routers, in-process with `oneshot`: answers, refusals, metrics, health, and
//! the sibling cache fed by a stand-in apiserver.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::ServiceExt;

use cce_cni_guard::policy::Config;
use cce_cni_guard::webhook::siblings::SiblingCache;
use cce_cni_guard::webhook::{AppState, Metrics, Siblings, health_router, router};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/webhook/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn state() -> AppState {
    AppState::new(Config::default(), Siblings::None, Arc::new(Metrics::new()))
}

async fn send(app: axum::Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

async fn validate(state: &AppState, body: Vec<u8>) -> (StatusCode, Value) {
    let request = Request::post("/validate")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    let (status, body) = send(router(state.clone()), request).await;
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, json)
}

async fn get(app: axum::Router, path: &str) -> (StatusCode, String) {
    let (status, body) = send(app, Request::get(path).body(Body::empty()).unwrap()).await;
    (status, String::from_utf8(body).unwrap())
}

#[tokio::test]
async fn a_patch_upgrade_of_both_containers_is_allowed() {
    let (status, review) = validate(&state(), fixture("agent-patch-upgrade.v1.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    let response = &review["response"];
    assert_eq!(response["uid"], "0d1b5d3e-1111-4c2a-9d7e-5b1f00000001");
    assert_eq!(response["allowed"], true, "{review:#}");
}

#[tokio::test]
async fn changing_one_of_two_containers_is_denied_with_a_forbidden_status() {
    let (status, review) = validate(&state(), fixture("agent-one-container.v1.json")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a denial is still a well-formed answer"
    );
    let response = &review["response"];
    assert_eq!(response["uid"], "0d1b5d3e-1111-4c2a-9d7e-5b1f00000002");
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(response["status"]["reason"], "Forbidden");
    assert_eq!(response["status"]["status"], "Failure");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("cce-cni-node-agent"), "{message}");
    assert!(message.contains("install-cni-binary"), "{message}");
}

#[tokio::test]
async fn a_v1beta1_review_is_answered_in_v1beta1() {
    let (status, review) = validate(&state(), fixture("agent-one-container.v1beta1.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(
        review["response"]["uid"],
        "0d1b5d3e-1111-4c2a-9d7e-5b1f00000003"
    );
    assert_eq!(review["response"]["allowed"], false);
}

#[tokio::test]
async fn the_router_answers_exactly_what_review_answers() {
    let body = fixture("agent-one-container.v1.json");
    let expected = cce_cni_guard::review::review(
        &body,
        &Config::default(),
        &cce_cni_guard::policy::NoSiblings,
    );
    let request = Request::post("/validate")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    let (status, answer) = send(router(state()), request).await;
    assert_eq!(status.as_u16(), expected.http_status);
    assert_eq!(
        String::from_utf8_lossy(&answer),
        String::from_utf8_lossy(&expected.body),
        "byte for byte"
    );
}

#[tokio::test]
async fn malformed_bodies_get_400_with_a_reason() {
    let state = state();
    for body in [
        &b"{not json"[..],
        b"[]",
        br#"{"apiVersion":"v1","kind":"Pod"}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        b"",
    ] {
        let (status, answer) = validate(&state, body.to_vec()).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(body)
        );
        let reason = answer["error"].as_str().unwrap();
        assert!(!reason.is_empty());
    }
}

#[tokio::test]
async fn wrong_method_and_content_type_are_refused() {
    let (status, _) = send(
        router(state()),
        Request::builder()
            .method(Method::GET)
            .uri("/validate")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    let (status, body) = send(
        router(state()),
        Request::post("/validate")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(fixture("agent-patch-upgrade.v1.json")))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(String::from_utf8_lossy(&body).contains("application/json"));

    let (status, _) = send(
        router(state()),
        Request::post("/validate")
            .body(Body::from(fixture("agent-patch-upgrade.v1.json")))
            .unwrap(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "no content type"
    );

    let request = Request::post("/validate")
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(fixture("agent-patch-upgrade.v1.json")))
        .unwrap();
    let (status, _) = send(router(state()), request).await;
    assert_eq!(status, StatusCode::OK, "parameters after the media type");

    let (status, _) = get(router(state()), "/other").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let state = AppState::with_limits(
        Config::default(),
        Siblings::None,
        Arc::new(Metrics::new()),
        1024,
        Duration::from_secs(10),
    );
    let (status, answer) = validate(&state, vec![b' '; 4096]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer["error"].as_str().unwrap().contains("1024"));
    let (status, _) = validate(&state, fixture("agent-patch-upgrade.v1.json")).await;
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "the fixture is >1 KiB"
    );
    let small = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec();
    let (status, _) = validate(&state, small).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "still serving after a 413");
}

#[tokio::test]
async fn metrics_count_requests_by_decision_and_rule() {
    let state = state();
    validate(&state, fixture("agent-patch-upgrade.v1.json")).await;
    validate(&state, fixture("agent-one-container.v1.json")).await;
    validate(&state, fixture("agent-one-container.v1beta1.json")).await;
    validate(&state, fixture("configmap-create.v1.json")).await;
    validate(&state, b"{".to_vec()).await;

    let (status, text) = get(health_router(state.clone()), "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let line = |labels: &str| {
        text.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "cce_cni_guard_admission_requests_total{{{labels}}}"
                ))
            })
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    assert_eq!(
        line(r#"decision="allowed",rule="none",operation="UPDATE",kind="DaemonSet""#).as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        line(r#"decision="denied",rule="consistent",operation="UPDATE",kind="DaemonSet""#)
            .as_deref(),
        Some("2"),
        "{text}"
    );
    assert_eq!(
        line(r#"decision="not-guarded",rule="none",operation="CREATE",kind="other""#).as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        line(r#"decision="invalid",rule="none",operation="none",kind="none""#).as_deref(),
        Some("1"),
        "{text}"
    );
    assert!(
        text.contains("cce_cni_guard_admission_duration_seconds_count 5"),
        "{text}"
    );
    assert!(text.contains("cce_cni_guard_build_info{"), "{text}");
    assert!(text.contains("cce_cni_guard_certificate_expiry_timestamp_seconds"));
    assert!(text.contains("cce_cni_guard_sibling_cache_synced"));
}

#[tokio::test]
async fn health_and_readiness() {
    let state = state();
    let (status, _) = get(health_router(state.clone()), "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get(health_router(state.clone()), "/readyz").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "no cluster: ready once TLS is loaded"
    );

    state.set_tls_loaded(false);
    let (status, body) = get(health_router(state.clone()), "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("certificate"), "{body}");

    let state = self::state();
    state.set_shutting_down();
    let (status, body) = get(health_router(state.clone()), "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("shutting down"), "{body}");
    let (status, _) = get(health_router(state), "/healthz").await;
    assert_eq!(status, StatusCode::OK, "alive while draining");
}

// ---- the sibling cache against a stand-in apiserver ----

const REPO: &str = "registry.example.com/cce-plugin-pro/cce-cni";

fn agent_daemonset(tag: &str) -> Value {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "cce-cni-node-agent", "namespace": "kube-system", "resourceVersion": "7"},
        "spec": {
            "selector": {"matchLabels": {"app": "cce-cni-node-agent"}},
            "template": {"spec": {
                "initContainers": [{"name": "install-cni-binary", "image": format!("{REPO}:{tag}")}],
                "containers": [{"name": "cce-cni-node-agent", "image": format!("{REPO}:{tag}")}]
            }}
        }
    })
}

fn ipam_deployment(tag: &str) -> Value {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cce-eni-ipam", "namespace": "kube-system", "resourceVersion": "8"},
        "spec": {
            "selector": {"matchLabels": {"app": "cce-eni-ipam"}},
            "template": {"spec": {
                "containers": [{"name": "cce-eni-ipam", "image": format!("{REPO}:{tag}")}]
            }}
        }
    })
}

/// Answers list requests for the two guarded workloads (honouring the name field selector)
/// and holds watches open without events, as an idle apiserver does.
fn fake_apiserver(
    ipam_tag: &'static str,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
) -> kube::Client {
    let service = tower::service_fn(move |request: Request<kube::client::Body>| {
        let seen = seen.clone();
        async move {
            let uri = request.uri().to_string();
            seen.lock().unwrap().push(uri.clone());
            if uri.contains("watch=true") {
                std::future::pending::<()>().await;
            }
            let (kind, item) = if uri.contains("/daemonsets") {
                ("DaemonSetList", agent_daemonset("v1.9.3"))
            } else {
                ("DeploymentList", ipam_deployment(ipam_tag))
            };
            let list = serde_json::json!({
                "apiVersion": "apps/v1", "kind": kind,
                "metadata": {"resourceVersion": "9"},
                "items": [item],
            });
            let response = http::Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(serde_json::to_vec(&list).unwrap())))
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    kube::Client::new(service, "default")
}

async fn ready_within(state: &AppState, deadline: Duration) -> bool {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        let (status, _) = get(health_router(state.clone()), "/readyz").await;
        if status == StatusCode::OK {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn the_sibling_cache_feeds_rule_3_and_readiness() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let metrics = Arc::new(Metrics::new());
    let config = Config::default();
    let cache = SiblingCache::start(
        fake_apiserver("v1.8.2", seen.clone()),
        &config,
        metrics.clone(),
    );
    let state = AppState::new(config, Siblings::Cache(Arc::new(cache)), metrics);
    assert!(
        ready_within(&state, Duration::from_secs(10)).await,
        "the cache never synced"
    );

    // The agent goes v1.9.3 → v1.9.4 while ipam runs v1.8.2: the minors disagree.
    let (status, review) = validate(&state, fixture("agent-patch-upgrade.v1.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(review["response"]["allowed"], false, "{review:#}");
    let message = review["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("cce-eni-ipam"), "{message}");

    let (_, text) = get(health_router(state.clone()), "/metrics").await;
    assert!(
        text.contains("cce_cni_guard_sibling_cache_synced 1"),
        "{text}"
    );
    assert!(
        text.contains(r#"decision="denied",rule="siblings-agree""#),
        "{text}"
    );

    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(
            |u| u.contains("/apis/apps/v1/namespaces/kube-system/deployments?")
                && u.contains("fieldSelector=metadata.name%3Dcce-eni-ipam")
        ),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(
            |u| u.contains("/apis/apps/v1/namespaces/kube-system/daemonsets?")
                && u.contains("fieldSelector=metadata.name%3Dcce-cni-node-agent")
        ),
        "{seen:?}"
    );
}

#[tokio::test]
async fn with_a_sibling_on_the_same_minor_the_patch_upgrade_is_allowed() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let metrics = Arc::new(Metrics::new());
    let config = Config::default();
    let cache = SiblingCache::start(fake_apiserver("v1.9.3", seen), &config, metrics.clone());
    let state = AppState::new(config, Siblings::Cache(Arc::new(cache)), metrics);
    assert!(ready_within(&state, Duration::from_secs(10)).await);
    let (_, review) = validate(&state, fixture("agent-patch-upgrade.v1.json")).await;
    assert_eq!(review["response"]["allowed"], true, "{review:#}");
}

#[tokio::test]
async fn an_unreachable_cluster_keeps_readyz_false() {
    let metrics = Arc::new(Metrics::new());
    let config = Config::default();
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = attempts.clone();
    let service = tower::service_fn(move |_request: Request<kube::client::Body>| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Err::<http::Response<Full<Bytes>>, _>(std::io::Error::other("connection refused")) }
    });
    let cache = SiblingCache::start(
        kube::Client::new(service, "default"),
        &config,
        metrics.clone(),
    );
    let state = AppState::new(config, Siblings::Cache(Arc::new(cache)), metrics);
    // Both watches have tried (and failed) before readiness is judged.
    let until = Instant::now() + Duration::from_secs(10);
    while attempts.load(std::sync::atomic::Ordering::SeqCst) < 2 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(attempts.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    let (status, body) = get(health_router(state.clone()), "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("sibling cache"), "{body}");
    // Before sync, rule 3 is unknown, not a reason to deny: the patch upgrade passes.
    let (_, review) = validate(&state, fixture("agent-patch-upgrade.v1.json")).await;
    assert_eq!(review["response"]["allowed"], true, "{review:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_review_is_judged_like_a_small_one() {
    let mut review: Value =
        serde_json::from_slice(&fixture("agent-one-container.v1.json")).unwrap();
    review["request"]["object"]["metadata"]["annotations"] =
        serde_json::json!({ "example.com/padding": "x".repeat(600 * 1024) });
    let body = serde_json::to_vec(&review).unwrap();
    assert!(body.len() > 512 * 1024);
    let (status, answer) = validate(&state(), body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 403);
}

#[tokio::test]
async fn an_exempted_identity_is_allowed_with_a_warning_and_counted() {
    let config = Config::from_yaml("exempt:\n  users: [alice@example.com]\n").unwrap();
    let state = AppState::new(config, Siblings::None, Arc::new(Metrics::new()));
    let (status, review) = validate(&state, fixture("agent-one-container.v1.json")).await;
    assert_eq!(status, StatusCode::OK);
    let response = &review["response"];
    assert_eq!(response["allowed"], true, "{review:#}");
    assert!(
        !response["warnings"].as_array().unwrap().is_empty(),
        "{review:#}"
    );
    assert!(
        !response["auditAnnotations"].as_object().unwrap().is_empty(),
        "{review:#}"
    );
    let (_, text) = get(health_router(state), "/metrics").await;
    assert!(
        text.contains(
            r#"decision="exempted",rule="consistent",operation="UPDATE",kind="DaemonSet"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_body_that_never_ends_times_out_with_408() {
    let state = AppState::with_limits(
        Config::default(),
        Siblings::None,
        Arc::new(Metrics::new()),
        1024 * 1024,
        Duration::from_millis(200),
    );
    let body = Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
    let request = Request::post("/validate")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap();
    let answered = tokio::time::timeout(
        Duration::from_secs(10),
        send(router(state.clone()), request),
    )
    .await
    .expect("the request timeout never fired");
    assert_eq!(answered.0, StatusCode::REQUEST_TIMEOUT);
    let (_, text) = get(health_router(state), "/metrics").await;
    assert!(
        text.contains("cce_cni_guard_admission_in_flight_requests 0"),
        "the timed-out request is not in flight any more: {text}"
    );
}
