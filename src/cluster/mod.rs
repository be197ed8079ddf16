//! The kube client the cluster commands share: connecting (kubeconfig, `--context`,
//! in-cluster), typed reads, guarded JSON patches, `/scale`, Leases, Events and watches,
//! with retries on 429/5xx and transport errors. Every error names the object and what was
//! being attempted, e.g. `patching DaemonSet kube-system/cce-cni-node-agent: …`.

pub mod retry;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use retry::{RetryPolicy, is_conflict, is_not_found};

/// The User-Agent of every request, so the API server can tell the upgrader's requests apart.
pub const USER_AGENT: &str = concat!("cce-cni-guard/", env!("CARGO_PKG_VERSION"));
/// The field manager of every write.
pub const FIELD_MANAGER: &str = "cce-cni-guard";

/// How to reach the cluster (shared by `status`, `history`, `upgrade`, `rollback`).
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Kubeconfig file; without it `KUBECONFIG`, `~/.kube/config`, then the in-cluster
    /// service account are tried.
    #[arg(long, env = "CCE_GUARD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use instead of the current one.
    #[arg(long, env = "CCE_GUARD_CONTEXT")]
    pub context: Option<String>,
    /// Namespace of the CNI workloads, the v1 ConfigMap and the upgrade Lease.
    #[arg(
        short = 'n',
        long,
        env = "CCE_GUARD_NAMESPACE",
        default_value = "kube-system"
    )]
    pub namespace: String,
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot connect to the cluster: {0}")]
    Connect(String),
    #[error("{what}: {message}")]
    Api {
        what: String,
        /// HTTP status of the API's answer, when there was one.
        code: Option<u16>,
        message: String,
    },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

impl ClusterError {
    pub fn api(what: impl Into<String>, err: &kube::Error) -> Self {
        let code = retry::status_code(err);
        let message = match err {
            kube::Error::Api(status) => {
                let reason = if status.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", status.reason)
                };
                format!("{}{reason} [HTTP {}]", status.message, status.code)
            }
            other => other.to_string(),
        };
        Self::Api {
            what: what.into(),
            code,
            message,
        }
    }

    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Api { code, .. } => *code,
            _ => None,
        }
    }

    pub fn is_conflict(&self) -> bool {
        // A failed JSON Patch `test` answers 422 (Invalid) on the real apiserver and
        // 409 on some servers; both mean "the object is not as planned".
        matches!(self.code(), Some(409) | Some(422))
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }
}

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// Counts the upgrader's writes; a test hook makes the process exit abruptly after the Nth.
#[derive(Debug, Default)]
pub struct WriteCounter {
    count: AtomicU64,
    /// `CCE_GUARD_TEST_EXIT_AFTER_WRITES`: exit(137) right after this many writes.
    exit_after: Option<u64>,
}

/// The env var of the crash test hook.
pub const EXIT_AFTER_WRITES_ENV: &str = "CCE_GUARD_TEST_EXIT_AFTER_WRITES";

impl WriteCounter {
    pub fn from_env() -> Self {
        Self {
            count: AtomicU64::new(0),
            exit_after: std::env::var(EXIT_AFTER_WRITES_ENV)
                .ok()
                .and_then(|v| v.trim().parse().ok()),
        }
    }

    /// Called after each successful write.
    fn wrote(&self) {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if self.exit_after == Some(n) {
            eprintln!("test hook: exiting abruptly after write {n}");
            std::process::exit(137);
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
}

/// A connected client bound to the CNI namespace.
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    pub namespace: String,
    pub retry: RetryPolicy,
    pub writes: Arc<WriteCounter>,
}

impl Cluster {
    /// Connects from `--kubeconfig`/`--context`, `KUBECONFIG`, `~/.kube/config` or in-cluster.
    pub async fn connect(args: &ClusterArgs) -> Result<Self> {
        let options = KubeConfigOptions {
            context: args.context.clone(),
            ..Default::default()
        };
        let mut config = match &args.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                    ClusterError::Connect(format!("reading kubeconfig {}: {e}", path.display()))
                })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| {
                        ClusterError::Connect(format!("kubeconfig {}: {e}", path.display()))
                    })?
            }
            None => match kube::Config::from_kubeconfig(&options).await {
                Ok(config) => config,
                Err(kubeconfig_err) => {
                    if args.context.is_some() {
                        return Err(ClusterError::Connect(format!(
                            "kubeconfig: {kubeconfig_err}"
                        )));
                    }
                    kube::Config::incluster().map_err(|e| {
                        ClusterError::Connect(format!(
                            "no kubeconfig ({kubeconfig_err}) and not in a cluster ({e})"
                        ))
                    })?
                }
            },
        };
        // Our own retries say which object failed; kube's would retry silently underneath.
        config.default_retry = false;
        config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_static(USER_AGENT),
        ));
        let client = kube::Client::try_from(config)
            .map_err(|e| ClusterError::Connect(format!("building the client: {e}")))?;
        Ok(Self {
            client,
            namespace: args.namespace.clone(),
            retry: RetryPolicy::default(),
            writes: Arc::new(WriteCounter::from_env()),
        })
    }

    pub fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn get_opt<K>(&self, namespace: &str, kind: &str, name: &str) -> Result<Option<K>>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let api: Api<K> = self.api(namespace);
        let what = format!("reading {kind} {namespace}/{name}");
        self.retry.run(&what, || api.get_opt(name)).await
    }

    pub async fn daemonset(&self, namespace: &str, name: &str) -> Result<Option<DaemonSet>> {
        self.get_opt(namespace, "DaemonSet", name).await
    }

    pub async fn deployment(&self, namespace: &str, name: &str) -> Result<Option<Deployment>> {
        self.get_opt(namespace, "Deployment", name).await
    }

    pub async fn configmap(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>> {
        self.get_opt(namespace, "ConfigMap", name).await
    }

    pub async fn lease(&self, name: &str) -> Result<Option<Lease>> {
        let ns = self.namespace.clone();
        self.get_opt(&ns, "Lease", name).await
    }

    async fn list<K>(&self, namespace: &str, kind: &str, selector: &str) -> Result<Vec<K>>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let api: Api<K> = self.api(namespace);
        let what = format!("listing {kind} in {namespace} with labels {selector:?}");
        let params = ListParams::default().labels(selector);
        let list = self.retry.run(&what, || api.list(&params)).await?;
        Ok(list.items)
    }

    pub async fn controller_revisions(
        &self,
        namespace: &str,
        selector: &str,
    ) -> Result<Vec<ControllerRevision>> {
        self.list(namespace, "ControllerRevisions", selector).await
    }

    pub async fn replica_sets(&self, namespace: &str, selector: &str) -> Result<Vec<ReplicaSet>> {
        self.list(namespace, "ReplicaSets", selector).await
    }

    pub async fn pods(&self, namespace: &str, selector: &str) -> Result<Vec<Pod>> {
        self.list(namespace, "Pods", selector).await
    }

    /// Every ValidatingWebhookConfiguration, or `None` when the caller may not list them.
    pub async fn webhook_configurations(
        &self,
    ) -> Result<Option<Vec<ValidatingWebhookConfiguration>>> {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let what = "listing ValidatingWebhookConfigurations";
        let params = ListParams::default();
        match self.retry.run(what, || api.list(&params)).await {
            Ok(list) => Ok(Some(list.items)),
            Err(err) if matches!(err.code(), Some(401 | 403 | 404)) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// A JSON Patch (with `test` preconditions) on a DaemonSet or Deployment.
    pub async fn json_patch<K>(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
        patch: json_patch::Patch,
    ) -> Result<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let api: Api<K> = self.api(namespace);
        let what = format!("patching {kind} {namespace}/{name}");
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let patch = Patch::<()>::Json(patch);
        let out = self
            .retry
            .run(&what, || api.patch(name, &params, &patch))
            .await?;
        self.writes.wrote();
        Ok(out)
    }

    /// Sets a Deployment's replicas through `/scale`, as `kubectl scale` does.
    pub async fn scale_deployment(&self, namespace: &str, name: &str, replicas: i32) -> Result<()> {
        let api: Api<Deployment> = self.api(namespace);
        let what = format!("scaling Deployment {namespace}/{name} to {replicas} replicas");
        let patch = Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}}));
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        self.retry
            .run(&what, || api.patch_scale(name, &params, &patch))
            .await?;
        self.writes.wrote();
        Ok(())
    }

    /// Creates the Lease; `Ok(None)` when another process created it first.
    pub async fn create_lease(&self, lease: &Lease) -> Result<Option<Lease>> {
        let api: Api<Lease> = self.api(&self.namespace);
        let name = lease.metadata.name.clone().unwrap_or_default();
        let what = format!("creating Lease {}/{name}", self.namespace);
        let params = PostParams::default();
        match self.retry.run(&what, || api.create(&params, lease)).await {
            Ok(created) => {
                self.writes.wrote();
                Ok(Some(created))
            }
            Err(err) if err.code() == Some(409) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Replaces the Lease, guarded by its resourceVersion; `Ok(None)` on a conflict.
    /// `counted` is false for the periodic renewals, whose number depends on timing.
    pub async fn replace_lease(&self, lease: &Lease, counted: bool) -> Result<Option<Lease>> {
        let api: Api<Lease> = self.api(&self.namespace);
        let name = lease.metadata.name.clone().unwrap_or_default();
        let what = format!("updating Lease {}/{name}", self.namespace);
        let params = PostParams::default();
        match self
            .retry
            .run(&what, || api.replace(&name, &params, lease))
            .await
        {
            Ok(updated) => {
                if counted {
                    self.writes.wrote();
                }
                Ok(Some(updated))
            }
            Err(err) if err.code() == Some(409) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Records an Event; failures are only logged: Events are informative.
    pub async fn event(&self, event: &Event) {
        let ns = event
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| self.namespace.clone());
        let api: Api<Event> = self.api(&ns);
        let what = format!(
            "recording Event {} on {}",
            event.reason.as_deref().unwrap_or(""),
            event.involved_object.name.as_deref().unwrap_or("")
        );
        let params = PostParams::default();
        if let Err(err) = self.retry.run(&what, || api.create(&params, event)).await {
            tracing::warn!("{err}");
        }
    }
}
