//! The servers: HTTPS for `/validate` (rustls, HTTP/1.1 and h2 by ALPN) and plain HTTP for
//! health and metrics, with the limits that keep idle or hostile clients from starving the
//! apiserver's requests, certificate reload, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::policy::{Config, SiblingLookup};
use crate::tls::{
    CertificateInfo, CertificateReloader, CertificateSource, Expiry, ReloadOutcome, TlsError,
};

use super::metrics::{Metrics, ReloadResult};
use super::router::{self, AppState, Siblings};
use super::shutdown::{self, ShutdownSignal, ShutdownTrigger};
use super::siblings::SiblingCache;

/// Why the webhook could not start. Each message already carries its cause, so no
/// `source` is chained: an error report prints the cause once, not twice.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the serving certificate cannot be used: {0}")]
    Tls(TlsError),
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

impl From<TlsError> for ServeError {
    fn from(error: TlsError) -> Self {
        Self::Tls(error)
    }
}

/// Where the sibling workloads' images come from.
#[derive(Clone)]
pub enum SiblingSource {
    /// No cluster: rule 3 is skipped.
    None,
    /// Watch the guarded workloads through this client.
    Cluster(kube::Client),
    /// A fixed lookup (tests); counts as synced.
    Fixed(Arc<dyn SiblingLookup>),
}

impl std::fmt::Debug for SiblingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::Cluster(_) => "Cluster",
            Self::Fixed(_) => "Fixed",
        })
    }
}

/// Everything `Server::bind` needs. [`ServeOptions::new`] fills the defaults of `serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Plain HTTP for `/healthz`, `/readyz`, `/metrics`; `None` serves none.
    pub health_listen: Option<SocketAddr>,
    pub certificate: CertificateSource,
    pub config: Config,
    pub siblings: SiblingSource,
    pub body_limit: usize,
    /// Memory all request bodies being read may take together; over it, 503.
    pub body_budget: usize,
    /// How long in-flight requests may take to finish once shutdown starts.
    pub shutdown_grace: Duration,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    /// A connection with no request for this long is closed (gracefully).
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
    /// How often the certificate files are re-read.
    pub reload_interval: Duration,
}

pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 128;
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

impl ServeOptions {
    /// The defaults of `serve`: no health port, embedded config, no cluster.
    pub fn new(listen: SocketAddr, certificate: CertificateSource) -> Self {
        Self {
            listen,
            health_listen: None,
            certificate,
            config: Config::default(),
            siblings: SiblingSource::None,
            body_limit: router::DEFAULT_BODY_LIMIT,
            body_budget: router::DEFAULT_BODY_BUDGET,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            request_timeout: router::DEFAULT_REQUEST_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
        }
    }
}

/// Starts the webhook in this process.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Loads the certificate, binds both listeners and starts serving. Returns once the
    /// sockets are bound, so the caller can read the addresses (port 0 picks a free one).
    pub async fn bind(options: ServeOptions) -> Result<RunningServer, ServeError> {
        let reloader = CertificateReloader::start(options.certificate.clone())?;
        let tls_config = crate::tls::server_config(reloader.resolver())?;
        let acceptor = TlsAcceptor::from(Arc::new(tls_config));

        let listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|error| ServeError::Bind {
                    addr: options.listen,
                    error,
                })?;
        let local_addr = listener.local_addr().map_err(|error| ServeError::Bind {
            addr: options.listen,
            error,
        })?;
        let health_listener = match options.health_listen {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|error| ServeError::Bind { addr, error })?;
                let bound = l
                    .local_addr()
                    .map_err(|error| ServeError::Bind { addr, error })?;
                Some((l, bound))
            }
            None => None,
        };

        let metrics = Arc::new(Metrics::new());
        let current = reloader.current();
        metrics.set_certificate_expiry(current.not_after);
        let siblings = match &options.siblings {
            SiblingSource::None => Siblings::None,
            SiblingSource::Fixed(lookup) => Siblings::Fixed(lookup.clone()),
            SiblingSource::Cluster(client) => Siblings::Cache(Arc::new(SiblingCache::start(
                client.clone(),
                &options.config,
                metrics.clone(),
            ))),
        };
        let state = AppState::with_body_budget(
            options.config.clone(),
            siblings.clone(),
            metrics.clone(),
            options.body_limit,
            options.request_timeout,
            options.body_budget,
        );
        state.set_tls_loaded(true);

        let (trigger, signal) = shutdown::channel();
        tracing::info!(
            subject = %current.subject,
            names = ?current.names,
            not_after = %current.not_after_rfc3339(),
            "serving certificate loaded"
        );
        let expiry = current.expiry_at(crate::tls::unix_now());
        warn_expiry(&current, expiry);
        tracing::info!("listening on https://{local_addr}");
        let health_addr = health_listener.as_ref().map(|(_, a)| *a);
        if let Some(addr) = health_addr {
            tracing::info!("health and metrics on http://{addr}");
        }

        let reload_task = tokio::spawn(reload_loop(
            reloader,
            metrics.clone(),
            options.reload_interval,
            expiry,
            signal.clone(),
        ));
        let health_task = health_listener.map(|(listener, _)| {
            let app = router::health_router(state.clone());
            let mut signal = signal.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { signal.wait().await })
                    .await;
                if let Err(err) = served {
                    tracing::warn!(error = %err, "the health server stopped");
                }
            })
        });
        let limits = ConnectionLimits::from(&options);
        let main_task = tokio::spawn(serve_tls(
            listener,
            acceptor,
            router::router(state.clone()),
            limits,
            state.clone(),
            signal,
        ));
        let task = tokio::spawn(async move {
            let _ = main_task.await;
            reload_task.abort();
            if let Some(health) = health_task {
                let _ = health.await;
            }
            if let Siblings::Cache(cache) = siblings {
                cache.stop();
            }
            tracing::info!("webhook stopped");
        });
        Ok(RunningServer {
            local_addr,
            health_addr,
            state,
            trigger,
            task: Some(task),
        })
    }
}

/// A webhook serving in this process. Dropping it starts shutdown.
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    health_addr: Option<SocketAddr>,
    state: AppState,
    trigger: ShutdownTrigger,
    task: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// The HTTPS address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The plain HTTP address of health and metrics, if one was asked for.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        self.state.metrics()
    }

    /// A handle that starts shutdown from elsewhere (another task, a signal handler).
    pub fn trigger_handle(&self) -> ShutdownTrigger {
        self.trigger.clone()
    }

    /// Starts shutdown without waiting for it.
    pub fn trigger_shutdown(&self) {
        self.trigger.trigger();
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace period), and
    /// returns when everything has stopped.
    pub async fn shutdown(mut self) {
        self.trigger.trigger();
        self.wait_stopped().await;
    }

    /// Like [`shutdown`](Self::shutdown), but first reports not-ready and keeps serving for
    /// `delay`, so that the Service's endpoints drop this pod before it stops accepting
    /// (the apiserver would otherwise meet refused connections and apply the webhook's
    /// failurePolicy). A shutdown triggered meanwhile cuts the delay short.
    pub async fn shutdown_after(self, delay: Duration) {
        self.state.set_shutting_down();
        if !delay.is_zero() {
            tracing::info!(
                ?delay,
                "not ready any more; still serving until endpoints catch up"
            );
            let mut signal = self.trigger.subscribe();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = signal.wait() => {}
            }
        }
        self.shutdown().await;
    }

    /// Returns when the server has stopped (after someone triggered shutdown).
    pub async fn wait_stopped(&mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.trigger.trigger();
    }
}

#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    handshake_timeout: Duration,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
    max_concurrent_streams: u32,
    shutdown_grace: Duration,
}

impl From<&ServeOptions> for ConnectionLimits {
    fn from(o: &ServeOptions) -> Self {
        Self {
            handshake_timeout: o.handshake_timeout,
            header_read_timeout: o.header_read_timeout,
            idle_timeout: o.idle_timeout,
            max_connections: o.max_connections.max(1),
            max_concurrent_streams: o.max_concurrent_streams.max(1),
            shutdown_grace: o.shutdown_grace,
        }
    }
}

/// Protocol builders, made once and shared by every connection.
struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    auto: hyper_util::server::conn::auto::Builder<TokioExecutor>,
}

/// What one connection may buffer before the handler takes it: an HTTP/1.1 read buffer
/// (request heads are a few KiB; hyper's default of ~400 KiB per connection adds up over
/// a thousand connections), and the h2 flow-control windows (hyper's default of 1 MiB per
/// connection, likewise).
const H1_READ_BUFFER: usize = 64 * 1024;
const H2_WINDOW: u32 = 256 * 1024;

impl Protocols {
    fn new(limits: &ConnectionLimits) -> Self {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(H1_READ_BUFFER)
            .keep_alive(true);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams)
            .initial_stream_window_size(H2_WINDOW)
            .initial_connection_window_size(H2_WINDOW)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let mut auto = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(H1_READ_BUFFER);
        auto.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams)
            .initial_stream_window_size(H2_WINDOW)
            .initial_connection_window_size(H2_WINDOW);
        Self { http1, http2, auto }
    }
}

async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    limits: ConnectionLimits,
    state: AppState,
    mut signal: ShutdownSignal,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let protocols = Arc::new(Protocols::new(&limits));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        // Over the cap, new connections wait in the kernel's backlog rather than here.
        let permit = tokio::select! {
            biased;
            _ = signal.wait() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            biased;
            _ = signal.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let protocols = protocols.clone();
        let signal = signal.clone();
        let open = state.metrics().open_connection();
        connections.spawn(async move {
            let _permit = permit;
            let _open = open;
            serve_connection(tcp, peer, acceptor, app, &protocols, signal, limits).await;
        });
    }
    drop(listener);
    state.set_shutting_down();
    while connections.try_join_next().is_some() {}
    tracing::info!(
        open_connections = connections.len(),
        "shutting down: no new connections, finishing in-flight requests"
    );
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace = ?limits.shutdown_grace,
            open_connections = connections.len(),
            "shutdown grace period over, closing the remaining connections"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// What a connection has been doing, as its service sees it.
#[derive(Debug)]
struct Activity {
    started: Instant,
    active: AtomicUsize,
    served: AtomicBool,
    /// Milliseconds after `started` of the last request start or end.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            active: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.served.store(true, Ordering::Relaxed);
        self.touch();
        RequestGuard(self.clone())
    }

    /// When the connection counts as idle for `limit`, if it is not busy now.
    fn idle_deadline(&self, limit: Duration) -> Option<Instant> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        Some(self.started + last + limit)
    }
}

struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    protocols: &Protocols,
    signal: ShutdownSignal,
    limits: ConnectionLimits,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            tracing::debug!(%peer, error = %err, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let guard = activity.begin();
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(axum::body::Body::new)).await;
                drop(guard);
                response
            }
        })
    };
    let io = TokioIo::new(tls);
    let served = match alpn.as_deref() {
        Some(b"h2") => {
            let conn = protocols.http2.serve_connection(io, service);
            drive(conn, |c| c.graceful_shutdown(), &activity, limits, signal).await
        }
        Some(b"http/1.1") => {
            let conn = protocols.http1.serve_connection(io, service);
            drive(conn, |c| c.graceful_shutdown(), &activity, limits, signal).await
        }
        // No ALPN: tell the protocol by the first bytes.
        _ => {
            let conn = protocols.auto.serve_connection(io, service);
            drive(conn, |c| c.graceful_shutdown(), &activity, limits, signal).await
        }
    };
    if let Err(err) = served {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

/// On shutdown, how long a connection that has carried no request yet gets to close
/// gracefully: long enough for an h2 GOAWAY (which tells the client its request was not
/// processed and may be retried) or a request already on its way, short enough that silent
/// connections do not hold up the exit.
const UNSERVED_SHUTDOWN_WAIT: Duration = Duration::from_millis(500);

/// Runs one connection to its end, closing it gracefully on shutdown or when it has been
/// idle too long: the first request must start within the header timeout (an h2 client
/// that never sends its preface would otherwise hold a slot forever), later ones within
/// the idle timeout. A connection that never carried a request is dropped when idle, and
/// on shutdown gets [`UNSERVED_SHUTDOWN_WAIT`] to close gracefully.
async fn drive<F, E>(
    conn: F,
    begin_shutdown: impl Fn(Pin<&mut F>),
    activity: &Activity,
    limits: ConnectionLimits,
    mut signal: ShutdownSignal,
) -> Result<(), String>
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    let mut cutoff: Option<Instant> = None;
    loop {
        let limit = if activity.served.load(Ordering::Relaxed) {
            limits.idle_timeout
        } else {
            limits.header_read_timeout
        };
        let idle_at = activity.idle_deadline(limit);
        // Busy: look again after `limit`; a request ending resets the clock anyway.
        let check_at = idle_at.unwrap_or_else(|| Instant::now() + limit);
        tokio::select! {
            result = conn.as_mut() => return result.map_err(|e| e.to_string()),
            _ = signal.wait(), if !closing => {
                closing = true;
                if !activity.served.load(Ordering::Relaxed) {
                    cutoff = Some(Instant::now() + UNSERVED_SHUTDOWN_WAIT);
                }
                begin_shutdown(conn.as_mut());
            }
            _ = tokio::time::sleep_until(cutoff.unwrap_or(check_at).into()), if cutoff.is_some() => {
                // A request that started meanwhile is in flight: it gets the grace period.
                if activity.active.load(Ordering::Relaxed) == 0 {
                    return Ok(());
                }
                cutoff = None;
            }
            _ = tokio::time::sleep_until(check_at.into()), if !closing => {
                if activity.idle_deadline(limit).is_some_and(|at| at <= Instant::now()) {
                    closing = true;
                    if !activity.served.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    begin_shutdown(conn.as_mut());
                }
            }
        }
    }
}

/// Says how soon the served certificate expires, when that is worth saying.
fn warn_expiry(info: &CertificateInfo, expiry: Expiry) {
    match expiry {
        Expiry::Fine => {}
        Expiry::Soon { seconds_left } => tracing::warn!(
            not_after = %info.not_after_rfc3339(),
            hours_left = seconds_left / 3600,
            serial = %info.serial,
            "the serving certificate expires soon: renew it (the apiserver refuses it from then on)"
        ),
        Expiry::Expired => tracing::error!(
            not_after = %info.not_after_rfc3339(),
            serial = %info.serial,
            "the serving certificate has expired: the apiserver cannot call this webhook until it is renewed"
        ),
    }
}

async fn reload_loop(
    mut reloader: CertificateReloader,
    metrics: Arc<Metrics>,
    interval: Duration,
    mut expiry: Expiry,
    mut signal: ShutdownSignal,
) {
    if !reloader.watches_files() {
        return;
    }
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = signal.wait() => return,
            _ = ticker.tick() => {}
        }
        // File reads are small; a blocking read here is cheaper than a thread hop.
        match reloader.poll() {
            ReloadOutcome::Unchanged => {}
            ReloadOutcome::Reloaded(info) => {
                metrics.count_reload(ReloadResult::Success);
                metrics.set_certificate_expiry(info.not_after);
                tracing::info!(
                    subject = %info.subject,
                    names = ?info.names,
                    serial = %info.serial,
                    not_after = %info.not_after_rfc3339(),
                    "serving certificate reloaded"
                );
                expiry = info.expiry_at(crate::tls::unix_now());
                warn_expiry(&info, expiry);
            }
            ReloadOutcome::Rejected(err) => {
                metrics.count_reload(ReloadResult::Failure);
                tracing::warn!(error = %err, "new serving certificate refused, still serving the previous one");
            }
        }
        // A certificate left alone still ages: say so once when it nears or passes expiry.
        let current = reloader.current();
        let now = current.expiry_at(crate::tls::unix_now());
        if !now.same_kind(expiry) {
            warn_expiry(&current, now);
            expiry = now;
        }
    }
}
