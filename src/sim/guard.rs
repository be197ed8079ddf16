//! `sim --with-guard`: the webhook in the same process over real HTTPS, registered the way
//! the chart registers it — the ValidatingWebhookConfiguration is read from what `deploy/`
//! ships (rendered from the chart), not written a second time here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::admission::WebhookAdmission;
use super::model::Resource;
use super::server::{K8sVersion, SimHandle, UserSpec};
use crate::certs::CertSpec;
use crate::policy::Config;
use crate::tls::CertificateSource;
use crate::webhook::server::{RunningServer, ServeOptions, Server, SiblingSource};

/// The chart's configuration for clusters with matchConditions (1.30 and later)…
const WEBHOOK_CONFIGURATION: &str =
    include_str!("../../deploy/validatingwebhookconfiguration.yaml");
/// …and the selector-only fallback the chart renders for older clusters.
const WEBHOOK_CONFIGURATION_PRE_130: &str =
    include_str!("../../deploy/pre-1.30/validatingwebhookconfiguration.yaml");

/// Where the chart puts the guard.
pub const GUARD_NAMESPACE: &str = "cce-cni-guard";
pub const GUARD_SERVICE: &str = "cce-cni-guard";
/// The identity the guard's sibling watch uses, as its ServiceAccount would.
pub const GUARD_USER: &str = "system:serviceaccount:cce-cni-guard:cce-cni-guard";

/// Why the guard could not be started next to the sim.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("cannot make the guard's certificates: {0}")]
    Certs(String),
    #[error("cannot start the guard's webhook server: {0}")]
    Serve(String),
    #[error("cannot connect the guard to the simulated cluster: {0}")]
    Client(String),
    #[error("the guard did not become ready within {0:?} (sibling cache not synced)")]
    NotReady(Duration),
    #[error("cannot register the webhook in the simulated cluster: {0}")]
    Register(String),
}

/// The user the guard's watch authenticates as; add it to the sim's users before starting.
pub fn guard_user() -> UserSpec {
    UserSpec {
        name: GUARD_USER.into(),
        groups: vec![
            "system:serviceaccounts".into(),
            "system:authenticated".into(),
        ],
    }
}

/// The ValidatingWebhookConfiguration the chart installs on a cluster of this version.
pub fn webhook_configuration(version: K8sVersion) -> Result<Value, String> {
    let text = if version.minor >= 30 {
        WEBHOOK_CONFIGURATION
    } else {
        WEBHOOK_CONFIGURATION_PRE_130
    };
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    docs.into_iter()
        .find(|d| d.get("kind").and_then(Value::as_str) == Some("ValidatingWebhookConfiguration"))
        .ok_or_else(|| "deploy/ ships no ValidatingWebhookConfiguration".to_owned())
}

/// The guard running next to a sim.
pub struct RunningGuard {
    server: RunningServer,
    admission: Arc<WebhookAdmission>,
    webhook_names: Vec<String>,
}

impl RunningGuard {
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The names kubectl prints in `admission webhook "NAME" denied the request`.
    pub fn webhook_names(&self) -> &[String] {
        &self.webhook_names
    }

    pub fn server(&self) -> &RunningServer {
        &self.server
    }

    /// Stops the webhook (the registration stays: guarded writes then fail closed).
    pub async fn stop(self) {
        let _ = &self.admission;
        self.server.shutdown().await;
    }
}

/// Starts the webhook with `config`, waits until its sibling cache has synced with the sim,
/// then installs webhook admission and registers the chart's configuration with its caBundle.
pub async fn start(
    sim: &SimHandle,
    version: K8sVersion,
    config: Config,
) -> Result<RunningGuard, GuardError> {
    let certs = crate::certs::generate(&CertSpec::new(GUARD_SERVICE, GUARD_NAMESPACE))
        .map_err(|e| GuardError::Certs(e.to_string()))?;
    let client = guard_client(sim).await?;
    let mut options = ServeOptions::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        CertificateSource::Pem {
            cert: certs.cert_pem.clone(),
            key: certs.key_pem.clone(),
        },
    );
    options.config = config;
    options.siblings = SiblingSource::Cluster(client);
    options.shutdown_grace = Duration::from_secs(5);
    let server = Server::bind(options)
        .await
        .map_err(|e| GuardError::Serve(e.to_string()))?;

    let deadline = Duration::from_secs(15);
    let started = Instant::now();
    while server.state().ready().is_err() {
        if started.elapsed() > deadline {
            server.shutdown().await;
            return Err(GuardError::NotReady(deadline));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let addr = server.local_addr();
    let admission =
        WebhookAdmission::new(Arc::new(move |namespace: &str, name: &str, _port: u16| {
            (namespace == GUARD_NAMESPACE && name == GUARD_SERVICE).then_some(addr)
        }));
    admission.install(sim);

    let mut configuration = webhook_configuration(version).map_err(GuardError::Register)?;
    let bundle = certs.ca_bundle();
    let mut webhook_names = Vec::new();
    for webhook in configuration
        .get_mut("webhooks")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        webhook["clientConfig"]["caBundle"] = json!(bundle);
        if let Some(name) = webhook.get("name").and_then(Value::as_str) {
            webhook_names.push(name.to_owned());
        }
    }
    let namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": GUARD_NAMESPACE}});
    if sim
        .get(Resource::Namespaces, None, GUARD_NAMESPACE)
        .is_none()
    {
        sim.create(Resource::Namespaces, namespace)
            .await
            .map_err(|e| GuardError::Register(e.to_string()))?;
    }
    sim.create(Resource::ValidatingWebhookConfigurations, configuration)
        .await
        .map_err(|e| GuardError::Register(e.to_string()))?;
    tracing::info!(%addr, webhooks = ?webhook_names, "the guard serves and is registered in the simulated cluster");
    Ok(RunningGuard {
        server,
        admission,
        webhook_names,
    })
}

async fn guard_client(sim: &SimHandle) -> Result<kube::Client, GuardError> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(sim.kubeconfig())
        .map_err(|e| GuardError::Client(e.to_string()))?;
    let options = kube::config::KubeConfigOptions {
        context: Some(super::server::auth::context_name(GUARD_USER)),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| GuardError::Client(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| GuardError::Client(e.to_string()))
}
