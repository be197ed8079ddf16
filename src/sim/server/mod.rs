//! The simulated cluster's API server: HTTPS on loopback with its own CA, bearer-token users,
//! in-memory storage with watch, patches, discovery, Tables, the controller loop, an
//! admission seam and fault injection. [`Sim::start`] runs it in-process.

pub mod admission;
pub mod auth;
pub mod defaults;
pub mod discovery;
pub mod errors;
pub mod events;
pub mod faults;
pub mod http;
pub mod protobuf;
pub mod resources;
pub mod selectors;
pub mod state;
pub mod store;
pub mod tls;
pub mod util;
pub mod watch;
pub mod write;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::cluster;
use super::model::{Behaviour, ClusterSpec, Object, Resource};
pub use admission::{AdmissionHook, AdmissionRequest, AdmissionVerdict, Operation, UserInfo};
pub use auth::UserSpec;
pub use discovery::K8sVersion;
pub use errors::ApiError;
pub use faults::FaultRule;
pub use state::RequestRecord;
use state::{State, lock};

/// Why the sim could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot seed the cluster with {resource:?} {name}: {error}")]
    Seed {
        resource: Resource,
        name: String,
        error: ApiError,
    },
    #[error("cannot write the kubeconfig {0}: {1}")]
    Kubeconfig(PathBuf, std::io::Error),
}

/// How to run the sim.
#[derive(Clone)]
pub struct SimOptions {
    pub listen: SocketAddr,
    /// Where to write the kubeconfig once serving; None keeps it in memory only.
    pub kubeconfig: Option<PathBuf>,
    pub k8s_version: K8sVersion,
    pub cluster: ClusterSpec,
    pub behaviour: Behaviour,
    pub users: Vec<UserSpec>,
    pub admission: Option<Arc<dyn AdmissionHook>>,
    /// Watch events kept for resuming watches.
    pub history: usize,
    pub faults: Vec<FaultRule>,
    pub latency: Duration,
    /// Seed the default CCE v1 cluster (`cluster::default_objects`); otherwise namespaces only.
    pub seed_default_cluster: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kubeconfig: None,
            k8s_version: K8sVersion {
                minor: 32,
                patch: 5,
            },
            cluster: ClusterSpec::default(),
            behaviour: Behaviour::default(),
            users: Vec::new(),
            admission: None,
            history: store::DEFAULT_HISTORY,
            faults: Vec::new(),
            latency: Duration::ZERO,
            seed_default_cluster: true,
        }
    }
}

impl std::fmt::Debug for SimOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimOptions")
            .field("listen", &self.listen)
            .field("kubeconfig", &self.kubeconfig)
            .field("k8s_version", &self.k8s_version)
            .field("cluster", &self.cluster)
            .field("behaviour", &self.behaviour)
            .field("users", &self.users)
            .field("admission", &self.admission.is_some())
            .finish_non_exhaustive()
    }
}

/// The simulated cluster.
pub struct Sim;

struct Running {
    url: String,
    kubeconfig_path: Option<PathBuf>,
    kubeconfig: String,
    ca_pem: String,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A running sim; cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    state: Arc<State>,
    running: Arc<Running>,
}

const BASE_NAMESPACES: &[&str] = &["default", "kube-node-lease", "kube-public", "kube-system"];

impl Sim {
    /// Seeds the store, reconciles until quiet, serves, and then writes the kubeconfig.
    pub async fn start(options: SimOptions) -> Result<SimHandle, SimError> {
        crate::install_crypto_provider();
        let users = auth::Users::new(&options.users);
        let state = Arc::new(State::new(
            users,
            options.k8s_version,
            options.behaviour.clone(),
            options.history,
            options.admission.clone(),
        ));
        {
            let mut faults = lock(&state.faults);
            for rule in &options.faults {
                faults.add(rule.clone());
            }
            faults.latency = options.latency;
        }
        seed(&state, &options).await?;
        settle_through_requeues(&state).await;

        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|e| SimError::Listen(options.listen, e))?;
        let local = listener
            .local_addr()
            .map_err(|e| SimError::Listen(options.listen, e))?;
        let tls = tls::make(local.ip())?;
        let host = if local.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else if local.is_ipv6() {
            format!("[{}]", local.ip())
        } else {
            local.ip().to_string()
        };
        let address = format!("{host}:{}", local.port());
        let url = format!("https://{address}");
        if let Ok(mut a) = state.server_address.write() {
            *a = address;
        }
        let kubeconfig = auth::kubeconfig(&url, &tls.ca_pem, &state.users);
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);

        let server = tokio::spawn(serve(
            listener,
            tokio_rustls::TlsAcceptor::from(tls.config.clone()),
            state.clone(),
            shutdown_rx.clone(),
        ));
        let controllers = tokio::spawn(controller_loop(state.clone(), shutdown_rx));

        if let Some(path) = &options.kubeconfig {
            auth::write_atomically(path, &kubeconfig)
                .map_err(|e| SimError::Kubeconfig(path.clone(), e))?;
        }
        tracing::info!(url = %url, "simulated cluster serving");
        Ok(SimHandle {
            state,
            running: Arc::new(Running {
                url,
                kubeconfig_path: options.kubeconfig.clone(),
                kubeconfig,
                ca_pem: tls.ca_pem,
                shutdown,
                tasks: Mutex::new(vec![server, controllers]),
            }),
        })
    }
}

async fn seed(state: &State, options: &SimOptions) -> Result<(), SimError> {
    let objects = if options.seed_default_cluster {
        cluster::default_objects(&options.cluster)
    } else {
        Vec::new()
    };
    let has = |name: &str| {
        objects.iter().any(|(r, o)| {
            *r == Resource::Namespaces
                && o.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
        })
    };
    let mut all: Vec<(Resource, Value)> = BASE_NAMESPACES
        .iter()
        .filter(|ns| !has(ns))
        .map(|ns| {
            (
                Resource::Namespaces,
                serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
        })
        .collect();
    all.extend(objects);
    for (resource, object) in all {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        state
            .seed(resource, object)
            .await
            .map_err(|error| SimError::Seed {
                resource,
                name,
                error,
            })?;
    }
    Ok(())
}

/// Reconciles the seeded cluster, following short requeues (pods becoming Ready), so the
/// cluster is healthy when the kubeconfig appears; bounded for controllers that keep requeueing.
async fn settle_through_requeues(state: &State) {
    const SHORT: Duration = Duration::from_secs(10);
    const BUDGET: Duration = Duration::from_secs(30);
    let started = tokio::time::Instant::now();
    while let Some(wait) = state.reconcile_until_quiet().await {
        if wait > SHORT || started.elapsed() + wait > BUDGET {
            break;
        }
        tokio::time::sleep(wait).await;
    }
}

async fn controller_loop(state: Arc<State>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        let requeue = state.reconcile_until_quiet().await;
        let wait = requeue.unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = state.reconcile.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(http::handle(state, request).await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A client that never finishes its headers does not hold a connection forever.
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30));
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                }
                _ = shutdown.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
                }
            }
        });
    }
}

impl SimHandle {
    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.running.url
    }

    pub fn kubeconfig_path(&self) -> Option<&Path> {
        self.running.kubeconfig_path.as_deref()
    }

    /// The kubeconfig text (also written to the path, when one was given).
    pub fn kubeconfig(&self) -> &str {
        &self.running.kubeconfig
    }

    pub fn ca_pem(&self) -> &str {
        &self.running.ca_pem
    }

    pub fn admin_token(&self) -> &str {
        self.state.users.token_of(auth::ADMIN).unwrap_or_default()
    }

    /// The bearer token of a `--user`.
    pub fn token_of(&self, user: &str) -> Option<&str> {
        self.state.users.token_of(user)
    }

    /// The stored object (cluster-scoped resources ignore `namespace`).
    pub fn get(&self, resource: Resource, namespace: Option<&str>, name: &str) -> Option<Object> {
        self.state.get(resource, namespace, name)
    }

    /// Stored objects of a resource, in one namespace or all.
    pub fn list(&self, resource: Resource, namespace: Option<&str>) -> Vec<Object> {
        lock(&self.state.store).list(resource, namespace)
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.state.store).current_rv()
    }

    /// Creates an object as the admin would (admission, defaulting and controllers apply).
    pub async fn create(&self, resource: Resource, object: Value) -> Result<Value, ApiError> {
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string);
        let admin = self
            .state
            .users
            .ordered
            .first()
            .map(|(u, _)| u.clone())
            .unwrap_or(UserInfo {
                username: auth::ADMIN.into(),
                groups: Vec::new(),
            });
        self.state
            .write(
                write::WriteRequest {
                    api: resources::native(resource),
                    namespace,
                    sub: write::Sub::Main,
                    change: write::Change::Create { body: object },
                    dry_run: false,
                    preserve: false,
                },
                &admin,
                true,
            )
            .await
            .map(|o| o.body)
    }

    /// Fails the next matching requests with the rule's status.
    pub fn fail_next(&self, rule: FaultRule) {
        lock(&self.state.faults).add(rule);
    }

    /// Adds latency to every request (zero turns it off).
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.state.faults).latency = latency;
    }

    /// Removes every pending fault rule and the latency.
    pub fn clear_faults(&self) {
        lock(&self.state.faults).clear();
    }

    /// Closes every open watch stream (clients see the stream end and re-watch).
    pub fn drop_watches(&self) {
        self.state.watch_epoch.send_modify(|epoch| *epoch += 1);
    }

    /// The kubelet's behaviour (ready delay, broken images, ipam leader) in effect.
    pub fn behaviour(&self) -> Behaviour {
        self.state
            .behaviour
            .read()
            .map(|b| b.clone())
            .unwrap_or_default()
    }

    /// Changes the kubelet's behaviour from the next reconcile on (e.g. break an image mid-test).
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        if let Ok(mut slot) = self.state.behaviour.write() {
            *slot = behaviour;
        }
        self.state.reconcile.notify_one();
    }

    /// Registers (or with None removes) the admission hook.
    pub fn set_admission_hook(&self, hook: Option<Arc<dyn AdmissionHook>>) {
        if let Ok(mut slot) = self.state.hook.write() {
            *slot = hook;
        }
    }

    /// Requests made with a user's token (`admin`, a `--user` name, or "" for anonymous/401).
    pub fn request_count(&self, user: &str) -> u64 {
        lock(&self.state.stats)
            .by_user
            .get(user)
            .copied()
            .unwrap_or(0)
    }

    /// Requests whose User-Agent starts with `prefix`.
    pub fn request_count_by_user_agent(&self, prefix: &str) -> u64 {
        lock(&self.state.stats)
            .by_user_agent
            .iter()
            .filter(|(ua, _)| ua.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// The most recent requests (up to 100,000), oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.state.stats).log.iter().cloned().collect()
    }

    pub fn total_requests(&self) -> u64 {
        lock(&self.state.stats).total
    }

    /// Runs the controllers until they have nothing to do, waiting through short requeues
    /// (pods becoming Ready, image pulls) for at most 30 s.
    pub async fn settle(&self) {
        settle_through_requeues(&self.state).await;
    }

    /// Stops serving: ends watches, lets connections finish, stops the controllers.
    pub async fn shutdown(self) {
        self.drop_watches();
        let _ = self.running.shutdown.send(true);
        let tasks: Vec<JoinHandle<()>> = lock(&self.running.tasks).drain(..).collect();
        for task in tasks {
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!("a sim task did not stop in time");
            }
        }
    }
}
