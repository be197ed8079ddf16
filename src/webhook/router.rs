//! The HTTP side: `POST /validate` on the HTTPS port, `/healthz`, `/readyz` and `/metrics` on
//! the plain port. Handlers only decode and wrap; `review::review` decides.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
    /// Bytes of request bodies all requests together may hold while they are read.
    body_budget: Arc<Semaphore>,
    body_budget_bytes: usize,
    request_timeout: Duration,
}

/// Default largest accepted request body: 4 MiB (an apiserver sends at most ~3 MiB objects).
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;
/// Bodies larger than this are judged on the blocking pool.
const INLINE_REVIEW_LIMIT: usize = 256 * 1024;
/// Default time a request may take from its first byte to its answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default memory all request bodies being read may take together. Without a shared cap,
/// each of 128 h2 streams on each connection may hold a body just under the limit: one
/// client could make the pod (limit 128 MiB) run out of memory.
pub const DEFAULT_BODY_BUDGET: usize = 48 * 1024 * 1024;

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
        Self::with_body_budget(
            config,
            siblings,
            metrics,
            body_limit,
            request_timeout,
            DEFAULT_BODY_BUDGET,
        )
    }

    /// Like [`with_limits`](Self::with_limits), with the memory all bodies being read may
    /// take together; never less than one body of the limit, so any one request can pass.
    pub fn with_body_budget(
        config: Config,
        siblings: Siblings,
        metrics: Arc<Metrics>,
        body_limit: usize,
        request_timeout: Duration,
        body_budget: usize,
    ) -> Self {
        let body_budget = body_budget.max(body_limit).min(Semaphore::MAX_PERMITS);
        Self {
            inner: Arc::new(Inner {
                config,
                siblings,
                metrics,
                tls_loaded: AtomicBool::new(true),
                shutting_down: AtomicBool::new(false),
                body_limit,
                body_budget: Arc::new(Semaphore::new(body_budget)),
                body_budget_bytes: body_budget,
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
    // Held until the answer is made: the body's bytes count against the shared budget.
    let (body, _budget) = match read_body(request, &state).await {
        Ok(read) => read,
        Err((status, reason)) => {
            metrics.count_refused();
            tracing::info!(status = status.as_u16(), reason = %reason, "refused an admission request");
            let mut response = json_error(status, &reason);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            return response;
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

/// Reads the whole body within the per-request limit, taking each chunk's bytes from the
/// shared budget before keeping it. A body over the limit is refused (413) as soon as that
/// is known, from its declared length or from what arrived; when the budget is spent the
/// request is refused at once (503) rather than waiting, so memory stays bounded and the
/// apiserver can retry elsewhere.
async fn read_body(
    request: Request,
    state: &AppState,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), (StatusCode, String)> {
    let limit = state.inner.body_limit;
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut take = |bytes: usize| -> Result<(), (StatusCode, String)> {
        let busy = || {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the webhook already holds its limit of {} bytes of request bodies being read; try again shortly",
                    state.inner.body_budget_bytes
                ),
            )
        };
        let count = u32::try_from(bytes).map_err(|_| too_large())?;
        let permit = state
            .inner
            .body_budget
            .clone()
            .try_acquire_many_owned(count)
            .map_err(|_| busy())?;
        match held.as_mut() {
            Some(all) => all.merge(permit),
            None => held = Some(permit),
        }
        Ok(())
    };
    // A declared length is reserved up front, so the buffer is allocated once.
    let mut taken = declared.map_or(0, |n| n as usize);
    take(taken)?;
    let mut buffer = Vec::with_capacity(taken);
    let mut body = request.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = buffer.len() + data.len();
        if total > limit {
            return Err(too_large());
        }
        if total > taken {
            take(total - taken)?;
            taken = total;
        }
        buffer.extend_from_slice(&data);
    }
    Ok((Bytes::from(buffer), held))
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    fn budgeted(limit: usize, budget: usize) -> AppState {
        AppState::with_body_budget(
            Config::default(),
            Siblings::None,
            Arc::new(Metrics::new()),
            limit,
            Duration::from_secs(30),
            budget,
        )
    }

    fn post(body: Body, length: Option<usize>) -> Request {
        let mut builder =
            http::Request::post("/validate").header(header::CONTENT_TYPE, "application/json");
        if let Some(n) = length {
            builder = builder.header(header::CONTENT_LENGTH, n);
        }
        builder.body(body).unwrap()
    }

    #[tokio::test]
    async fn bodies_share_one_budget_and_give_it_back() {
        let state = budgeted(1000, 1500);
        // A body that declares 1000 bytes and never sends them holds 1000 of the 1500.
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let stalled = Body::from_stream(tokio_stream_from(rx));
        let app = router(state.clone());
        let holder = tokio::spawn(app.clone().oneshot(post(stalled, Some(1000))));
        while state.inner.body_budget.available_permits() == 1500 {
            tokio::task::yield_now().await;
        }
        let response = app
            .clone()
            .oneshot(post(Body::from(vec![b' '; 600]), Some(600)))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        // Undeclared lengths are counted as they arrive.
        let response = app
            .clone()
            .oneshot(post(Body::from(vec![b' '; 600]), None))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = app
            .clone()
            .oneshot(post(Body::from(vec![b' '; 400]), None))
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "within budget: judged"
        );
        holder.abort();
        let _ = holder.await;
        assert_eq!(state.inner.body_budget.available_permits(), 1500);
        let response = app
            .oneshot(post(Body::from(vec![b' '; 600]), Some(600)))
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "budget given back"
        );
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_before_reading() {
        let state = budgeted(1000, 1000);
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let never = Body::from_stream(tokio_stream_from(rx));
        let response = router(state)
            .oneshot(post(never, Some(1001)))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    /// A body that arrives in pieces is judged like one that arrives whole,
    /// with or without a declared length, and over the limit in pieces is still 413.
    #[tokio::test]
    async fn a_body_in_pieces_is_judged_like_one_in_a_piece() {
        let review = include_bytes!("../../tests/fixtures/review-daemonset-update.json");
        let state = budgeted(review.len(), review.len() * 4);
        let app = router(state.clone());
        let answer = |response: Response| async move {
            assert_eq!(response.status(), StatusCode::OK);
            axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap()
        };
        let whole = answer(
            app.clone()
                .oneshot(post(Body::from(&review[..]), Some(review.len())))
                .await
                .unwrap(),
        )
        .await;
        assert!(whole.starts_with(b"{\"apiVersion\""));
        for pieces in [2, 3, 7, 1000] {
            for declared in [None, Some(review.len())] {
                let chunks: Vec<Result<Bytes, std::io::Error>> = review
                    .chunks(review.len().div_ceil(pieces))
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .chain([Ok(Bytes::new())])
                    .collect();
                let body = Body::from_stream(futures::stream::iter(chunks));
                let got = answer(app.clone().oneshot(post(body, declared)).await.unwrap()).await;
                assert_eq!(got, whole, "{pieces} pieces, declared {declared:?}");
            }
        }
        let mut over = review.to_vec();
        over.push(b' ');
        let chunks: Vec<Result<Bytes, std::io::Error>> = over
            .chunks(4096)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let response = app
            .oneshot(post(Body::from_stream(futures::stream::iter(chunks)), None))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            state.inner.body_budget.available_permits(),
            review.len() * 4,
            "every piece's bytes given back"
        );
    }

    #[test]
    fn the_budget_is_never_below_one_body() {
        let state = budgeted(4096, 10);
        assert_eq!(state.inner.body_budget_bytes, 4096);
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
