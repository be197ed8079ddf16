//! The HTTP side: `POST /validate` on the HTTPS port, `/healthz`, `/readyz` and `/metrics` on
//! the plain port. Handlers only decode and wrap; `review::review` decides.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::timeout::TimeoutLayer;

use crate::policy::{Config, NoSiblings, SiblingLookup, Verdict};
use crate::review::{self, ReviewOutcome};

use super::metrics::{self, Metrics};
use super::siblings::SiblingCache;

/// Where the policy's sibling images come from.
#[derive(Clone)]
pub enum Siblings {
    /// No cluster: rule 3 is skipped.
    None,
    /// A watch-backed cache of the cluster's guarded workloads.
    Cache(Arc<SiblingCache>),
    /// A fixed lookup (tests, the simulated cluster); counts as synced.
    Fixed(Arc<dyn SiblingLookup>),
}

impl std::fmt::Debug for Siblings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Cache(c) => c.fmt(f),
            Self::Fixed(_) => f.write_str("Fixed"),
        }
    }
}

impl Siblings {
    fn lookup(&self) -> &dyn SiblingLookup {
        match self {
            Self::None => &NoSiblings,
            Self::Cache(cache) => cache.as_ref(),
            Self::Fixed(lookup) => lookup.as_ref(),
        }
    }

    fn synced(&self) -> bool {
        match self {
            Self::None | Self::Fixed(_) => true,
            Self::Cache(cache) => cache.synced(),
        }
    }
}

/// Everything the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    siblings: Siblings,
    metrics: Arc<Metrics>,
    tls_loaded: AtomicBool,
    shutting_down: AtomicBool,
    body_limit: usize,
    request_timeout: Duration,
}

/// Default largest accepted request body: 4 MiB (an apiserver sends at most ~3 MiB objects).
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;
/// Bodies larger than this are judged on the blocking pool.
const INLINE_REVIEW_LIMIT: usize = 256 * 1024;
/// Default time a request may take from its first byte to its answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl AppState {
    /// State with the default body limit and request timeout; TLS counts as loaded.
    pub fn new(config: Config, siblings: Siblings, metrics: Arc<Metrics>) -> Self {
        Self::with_limits(
            config,
            siblings,
            metrics,
            DEFAULT_BODY_LIMIT,
            DEFAULT_REQUEST_TIMEOUT,
        )
    }

    pub fn with_limits(
        config: Config,
        siblings: Siblings,
        metrics: Arc<Metrics>,
        body_limit: usize,
        request_timeout: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                siblings,
                metrics,
                tls_loaded: AtomicBool::new(true),
                shutting_down: AtomicBool::new(false),
                body_limit,
                request_timeout,
            }),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn set_tls_loaded(&self, loaded: bool) {
        self.inner.tls_loaded.store(loaded, Ordering::Relaxed);
    }

    /// From now on `/readyz` says no, so the Service stops sending new requests here.
    pub fn set_shutting_down(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Ready when the serving certificate is loaded and, with a cluster, the sibling cache
    /// has listed the guarded workloads.
    pub fn ready(&self) -> Result<(), &'static str> {
        if !self.inner.tls_loaded.load(Ordering::Relaxed) {
            return Err("the serving certificate is not loaded");
        }
        if self.inner.shutting_down.load(Ordering::Relaxed) {
            return Err("shutting down");
        }
        if !self.inner.siblings.synced() {
            return Err("the sibling cache has not synced yet");
        }
        Ok(())
    }
}

/// The webhook router: `POST /validate`, with the body limit and request timeout.
pub fn router(state: AppState) -> Router {
    let limit = state.inner.body_limit;
    let timeout = state.inner.request_timeout;
    Router::new()
        .route("/validate", post(validate))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .with_state(state)
}

/// The plain-HTTP router: `/healthz`, `/readyz`, `/metrics`.
pub fn health_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .with_state(state)
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not found")
}

fn is_json(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

async fn validate(State(state): State<AppState>, request: Request) -> Response {
    let metrics = state.metrics().clone();
    let _in_flight = metrics.in_flight();
    if !is_json(&request) {
        metrics.count_refused();
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be an AdmissionReview with Content-Type: application/json",
        );
    }
    let body = match Bytes::from_request(request, &state).await {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            metrics.count_refused();
            let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!(
                    "the body is larger than the limit of {} bytes",
                    state.inner.body_limit
                )
            } else {
                format!("cannot read the body: {}", rejection.body_text())
            };
            tracing::info!(status = status.as_u16(), reason = %reason, "refused an admission request");
            return json_error(status, &reason);
        }
    };
    let started = Instant::now();
    let outcome = if body.len() > INLINE_REVIEW_LIMIT {
        // Decoding megabytes of JSON takes milliseconds: not on a reactor thread.
        let judge = state.clone();
        let judged = tokio::task::spawn_blocking(move || {
            review::review(&body, &judge.inner.config, judge.inner.siblings.lookup())
        })
        .await;
        match judged {
            Ok(outcome) => outcome,
            Err(err) => {
                tracing::warn!(error = %err, "the review task failed");
                metrics.count_refused();
                return json_error(StatusCode::INTERNAL_SERVER_ERROR, "the review failed");
            }
        }
    } else {
        review::review(&body, &state.inner.config, state.inner.siblings.lookup())
    };
    let elapsed = started.elapsed().as_secs_f64();
    record(&metrics, &outcome, elapsed);
    log(&outcome);
    let status = StatusCode::from_u16(outcome.http_status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        outcome.body,
    )
        .into_response()
}

fn record(metrics: &Metrics, outcome: &ReviewOutcome, seconds: f64) {
    let (decision, rule) = match &outcome.decision {
        None => ("invalid", "none"),
        Some(d) => (
            d.verdict.as_str(),
            d.primary_rule().map(|r| r.as_str()).unwrap_or("none"),
        ),
    };
    metrics.observe_admission(
        decision,
        rule,
        &outcome.summary.operation,
        &outcome.summary.kind,
        seconds,
    );
}

/// One line per denied or exempted request at info; allowed ones at debug only.
fn log(outcome: &ReviewOutcome) {
    let s = &outcome.summary;
    let Some(decision) = &outcome.decision else {
        tracing::info!(
            uid = %s.uid,
            reason = outcome.error.as_deref().unwrap_or_default(),
            "refused a malformed admission request"
        );
        return;
    };
    match decision.verdict {
        Verdict::Denied | Verdict::Exempted => {
            let rules: Vec<&str> = decision
                .violations
                .iter()
                .map(|v| v.rule.as_str())
                .collect();
            tracing::info!(
                decision = decision.verdict.as_str(),
                user = %s.username,
                groups = ?s.groups,
                operation = %s.operation,
                kind = %s.kind,
                namespace = %s.namespace,
                name = %s.name,
                uid = %s.uid,
                dry_run = s.dry_run,
                rules = ?rules,
                // Debug-quoted: the message spans lines, the log line must not.
                reason = ?decision.message,
                "admission {}",
                decision.verdict.as_str()
            );
        }
        Verdict::Allowed | Verdict::NotGuarded => {
            tracing::debug!(
                decision = decision.verdict.as_str(),
                user = %s.username,
                operation = %s.operation,
                kind = %s.kind,
                namespace = %s.namespace,
                name = %s.name,
                uid = %s.uid,
                "admission allowed"
            );
        }
    }
}

async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.ready() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        state.metrics().encode(),
    )
        .into_response()
}
