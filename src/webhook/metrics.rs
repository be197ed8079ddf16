//! Prometheus metrics of one webhook instance (each `Server` has its own registry, so tests
//! running several servers in one process do not mix their counts).

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The content type `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    decision: &'static str,
    rule: &'static str,
    operation: &'static str,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

/// The outcome of a certificate reload, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Success,
    Failure,
}

/// All metrics of the webhook.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<AdmissionLabels, Counter>,
    duration: Histogram,
    certificate_expiry: Gauge<i64, AtomicI64>,
    reloads: Family<ReloadLabels, Counter>,
    sibling_cache_synced: Gauge<i64, AtomicI64>,
    in_flight: Gauge<i64, AtomicI64>,
    open_connections: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cce_cni_guard");
        let requests = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "AdmissionReview requests answered, by decision, primary rule, operation and kind",
            requests.clone(),
        );
        // 25 µs .. ~0.8 s: a decision is usually well below a millisecond.
        let duration = Histogram::new(exponential_buckets(0.000_025, 2.0, 16));
        registry.register(
            "admission_duration_seconds",
            "Time from a complete request body to the encoded answer",
            duration.clone(),
        );
        let certificate_expiry = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate, in Unix seconds",
            certificate_expiry.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate changes seen on disk, by result",
            reloads.clone(),
        );
        let sibling_cache_synced = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "sibling_cache_synced",
            "1 when the cache of guarded workloads has listed them from the cluster",
            sibling_cache_synced.clone(),
        );
        let in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "admission_in_flight_requests",
            "Requests to /validate being read or judged right now",
            in_flight.clone(),
        );
        let open_connections = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "open_connections",
            "TLS connections accepted and not yet closed, handshakes included",
            open_connections.clone(),
        );
        let build = Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION")),
            ("name", env!("CARGO_PKG_NAME")),
        ]);
        registry.register("build", "Build of this binary", build);
        Self {
            registry,
            requests,
            duration,
            certificate_expiry,
            reloads,
            sibling_cache_synced,
            in_flight,
            open_connections,
        }
    }

    /// Counts a connection as open until the returned guard is dropped.
    pub fn open_connection(&self) -> InFlight {
        self.open_connections.inc();
        InFlight(self.open_connections.clone())
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Counts one answered request. Labels are fixed strings so that request content
    /// cannot grow the number of series.
    pub fn observe_admission(
        &self,
        decision: &'static str,
        rule: &'static str,
        operation: &str,
        kind: &str,
        seconds: f64,
    ) {
        self.requests
            .get_or_create(&AdmissionLabels {
                decision,
                rule,
                operation: operation_label(operation),
                kind: kind_label(kind),
            })
            .inc();
        self.duration.observe(seconds);
    }

    /// Counts a request refused before it could be judged (wrong content type, too
    /// large): `invalid`, and no duration, as nothing was decided.
    pub fn count_refused(&self) {
        self.requests
            .get_or_create(&AdmissionLabels {
                decision: "invalid",
                rule: "none",
                operation: "none",
                kind: "none",
            })
            .inc();
    }

    pub fn set_certificate_expiry(&self, not_after: i64) {
        self.certificate_expiry.set(not_after);
    }

    pub fn count_reload(&self, result: ReloadResult) {
        let result = match result {
            ReloadResult::Success => "success",
            ReloadResult::Failure => "failure",
        };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    pub fn set_sibling_cache_synced(&self, synced: bool) {
        self.sibling_cache_synced.set(i64::from(synced));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Holds one request (or connection) in its gauge until dropped.
#[derive(Debug)]
pub struct InFlight(Gauge<i64, AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn operation_label(operation: &str) -> &'static str {
    match operation {
        "CREATE" => "CREATE",
        "UPDATE" => "UPDATE",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "" => "none",
        _ => "other",
    }
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "DaemonSet" => "DaemonSet",
        "Deployment" => "Deployment",
        "" => "none",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_labelled_and_bounded() {
        let metrics = Metrics::new();
        metrics.observe_admission("denied", "consistent", "UPDATE", "DaemonSet", 0.0001);
        metrics.observe_admission("allowed", "none", "PATCH?", "Weird<kind>", 0.0001);
        let text = metrics.encode();
        assert!(text.contains(
            "cce_cni_guard_admission_requests_total{decision=\"denied\",rule=\"consistent\",operation=\"UPDATE\",kind=\"DaemonSet\"} 1"
        ), "{text}");
        assert!(
            text.contains("operation=\"other\",kind=\"other\"} 1"),
            "{text}"
        );
        assert!(text.contains("cce_cni_guard_build_info{"), "{text}");
        assert!(
            text.contains("cce_cni_guard_admission_duration_seconds_bucket"),
            "{text}"
        );
    }
}
