//! `cce-cni-guard serve`: the HTTPS admission webhook, with health and metrics on a plain port.
//!
//! - [`router`]: the axum routers (tests call them in-process with `oneshot`);
//! - [`server`]: listeners, TLS, limits, graceful shutdown ([`Server::bind`]);
//! - [`metrics`]: the Prometheus registry;
//! - [`siblings`]: the watch-backed cache of the guarded workloads (rule 3);
//! - [`shutdown`]: the shutdown signal.

pub mod metrics;
pub mod router;
pub mod server;
pub mod shutdown;
pub mod siblings;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

pub use metrics::Metrics;
pub use router::{AppState, Siblings, health_router, router};
pub use server::{RunningServer, ServeError, ServeOptions, Server, SiblingSource};

use crate::policy::Config;
use crate::tls::CertificateSource;

/// Flags of `cce-cni-guard serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address of the HTTPS webhook listener.
    #[arg(long, env = "CCE_GUARD_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP listener for /healthz, /readyz and /metrics.
    #[arg(long, env = "CCE_GUARD_HEALTH_LISTEN", default_value = "0.0.0.0:8080")]
    pub health_listen: SocketAddr,
    /// Serving certificate (PEM); reloaded when it changes on disk.
    #[arg(long, env = "CCE_GUARD_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// Private key of the serving certificate (PEM).
    #[arg(long, env = "CCE_GUARD_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Policy configuration (YAML); the embedded defaults when absent.
    #[arg(long, env = "CCE_GUARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Run without a cluster: the sibling rule (3) is skipped.
    #[arg(long, env = "CCE_GUARD_NO_CLUSTER")]
    pub no_cluster: bool,
    /// Largest accepted request body, e.g. `4MiB`, `512KiB`, `1000000`.
    #[arg(long, env = "CCE_GUARD_BODY_LIMIT", default_value = "4MiB", value_parser = parse_size)]
    pub body_limit: usize,
    /// Memory all request bodies being read may take together, e.g. `48MiB`; a request
    /// that would pass it is refused with 503 so the pod stays within its memory limit.
    #[arg(long, env = "CCE_GUARD_MAX_BODY_MEMORY", default_value = "48MiB", value_parser = parse_size)]
    pub max_body_memory: usize,
    /// Time in-flight requests get to finish after SIGTERM, e.g. `25s`.
    #[arg(long, env = "CCE_GUARD_SHUTDOWN_GRACE", default_value = "25s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// After SIGTERM, report not-ready and keep serving this long before refusing new
    /// connections, so endpoints drop the pod first (e.g. `5s`).
    #[arg(long, env = "CCE_GUARD_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// Time a client gets to finish the TLS handshake.
    #[arg(long, env = "CCE_GUARD_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// Time a client gets to send the request headers (HTTP/1.1).
    #[arg(long, env = "CCE_GUARD_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// A connection that carried no request for this long is closed.
    #[arg(long, env = "CCE_GUARD_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Time one request may take, body included.
    #[arg(long, env = "CCE_GUARD_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Most TLS connections served at once; more wait in the listen backlog.
    #[arg(long, env = "CCE_GUARD_MAX_CONNECTIONS", default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most concurrent HTTP/2 streams per connection.
    #[arg(long, env = "CCE_GUARD_MAX_CONCURRENT_STREAMS", default_value_t = server::DEFAULT_MAX_CONCURRENT_STREAMS)]
    pub max_concurrent_streams: u32,
    /// How often the certificate files are re-read.
    #[arg(long, env = "CCE_GUARD_CERT_RELOAD_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub cert_reload_interval: Duration,
}

/// Runs the webhook until SIGTERM/SIGINT, then shuts down gracefully.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let options = options_from_args(&args).await?;
    let server = Server::bind(options).await?;
    let signal = shutdown::terminate_signal().await;
    tracing::info!(signal, "shutdown requested");
    // A second signal during the delay stops at once rather than waiting it out.
    let stopper = server.trigger_handle();
    let second = tokio::spawn(async move {
        shutdown::terminate_signal().await;
        stopper.trigger();
    });
    server.shutdown_after(args.shutdown_delay).await;
    second.abort();
    Ok(())
}

/// Turns flags into options: reads the config file and looks for a cluster.
pub async fn options_from_args(args: &ServeArgs) -> anyhow::Result<ServeOptions> {
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the configuration {}", path.display()))?;
            let config = Config::from_yaml(&text)
                .with_context(|| format!("the configuration {} is not usable", path.display()))?;
            tracing::info!(path = %path.display(), "policy configuration loaded");
            config
        }
        None => {
            tracing::info!("policy configuration: the embedded defaults");
            Config::default()
        }
    };
    let guarded: Vec<String> = config.workloads.iter().map(|w| w.display_name()).collect();
    tracing::info!(workloads = ?guarded, "guarding");
    let siblings = if args.no_cluster {
        tracing::warn!("running without a cluster (--no-cluster): the sibling rule (3) is skipped");
        SiblingSource::None
    } else {
        match kube::Client::try_default().await {
            Ok(client) => SiblingSource::Cluster(client),
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    "no cluster configuration found: running without a cluster, the sibling rule (3) is skipped"
                );
                SiblingSource::None
            }
        }
    };
    let mut options = ServeOptions::new(
        args.listen,
        CertificateSource::Files {
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
        },
    );
    options.health_listen = Some(args.health_listen);
    options.config = config;
    options.siblings = siblings;
    options.body_limit = args.body_limit;
    options.body_budget = args.max_body_memory;
    options.shutdown_grace = args.shutdown_grace;
    options.handshake_timeout = args.handshake_timeout;
    options.header_read_timeout = args.header_read_timeout;
    options.idle_timeout = args.idle_timeout;
    options.request_timeout = args.request_timeout;
    options.max_connections = args.max_connections;
    options.max_concurrent_streams = args.max_concurrent_streams;
    options.reload_interval = args.cert_reload_interval;
    Ok(options)
}

/// `25s`, `500ms`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 25s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// `4MiB`, `512KiB`, `1MB`, or plain bytes.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 4MiB or 1048576"))?;
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "Ki" => 1 << 10,
        "MiB" | "Mi" => 1 << 20,
        "GiB" | "Gi" => 1 << 30,
        "kB" | "KB" | "k" => 1000,
        "MB" | "M" => 1_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use KiB, MiB or bytes)"
            ));
        }
    };
    value
        .checked_mul(factor)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a usable size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration("25s").unwrap(), Duration::from_secs(25));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_size("4MiB").unwrap(), 4 * 1024 * 1024);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }
}
