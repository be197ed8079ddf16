//! The generated-certificate route inside the cluster (`cce-cni-guard certs --in-cluster`):
//! keep the webhook's `kubernetes.io/tls` Secret valid and the `caBundle` of its
//! ValidatingWebhookConfiguration in step with it. The chart's hook Jobs run it before every
//! install and upgrade (the Secret exists before the pods mount it) and after (the
//! configuration exists by then).
//!
//! Idempotent: an existing Secret is kept while its certificates parse, name the Service, chain
//! to its CA and stay valid for more than the renewal window. On renewal the old CA is kept
//! in the Secret as `ca-previous.crt` and stays in the caBundle while it is valid, so pods that
//! still serve the old pair remain trusted until the kubelet hands them the new one.
//!
//! The decisions are pure ([`assess_secret`], [`ca_bundle_for`], [`ca_bundle_patch`]); the
//! kube calls are at the edge ([`reconcile`]).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};

/// Keys of the Secret, as a `kubernetes.io/tls` Secret and cert-manager name them.
pub const CA_KEY: &str = "ca.crt";
pub const CERT_KEY: &str = "tls.crt";
pub const PRIVATE_KEY_KEY: &str = "tls.key";
/// The CA that signed the certificate before the last renewal.
pub const PREVIOUS_CA_KEY: &str = "ca-previous.crt";
pub const SECRET_TYPE: &str = "kubernetes.io/tls";
/// How often a missing ValidatingWebhookConfiguration is looked for again while waiting.
const WAIT_POLL: Duration = Duration::from_secs(2);
/// Writes retried after a conflict with a concurrent writer (the other hook Job).
const MAX_ATTEMPTS: usize = 5;

/// Flags of `cce-cni-guard certs` for the in-cluster route.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// Keep the certificates in the cluster instead of files: create or renew the TLS Secret
    /// `--secret` in `--namespace` and set the caBundle of `--webhook-config`. Uses the usual
    /// kubeconfig or the pod's ServiceAccount.
    #[arg(
        long,
        env = "CCE_GUARD_CERTS_IN_CLUSTER",
        requires = "secret",
        conflicts_with = "out"
    )]
    pub in_cluster: bool,
    /// Name of the TLS Secret the webhook mounts.
    #[arg(long, env = "CCE_GUARD_CERTS_SECRET", requires = "in_cluster")]
    pub secret: Option<String>,
    /// Name of the ValidatingWebhookConfiguration whose webhooks get the caBundle.
    #[arg(long, env = "CCE_GUARD_WEBHOOK_CONFIG", requires = "in_cluster")]
    pub webhook_config: Option<String>,
    /// Renew when a certificate in the Secret expires within this many days.
    #[arg(long, env = "CCE_GUARD_CERTS_RENEW_WITHIN_DAYS", default_value_t = 30)]
    pub renew_within_days: u32,
    /// Wait this long (e.g. `120s`, `2m`) for the ValidatingWebhookConfiguration to appear;
    /// without it a missing configuration is reported and skipped.
    #[arg(long, env = "CCE_GUARD_WAIT_FOR_WEBHOOK_CONFIG", value_parser = crate::webhook::parse_duration)]
    pub wait_for_webhook_config: Option<Duration>,
}

/// Why the in-cluster certificates could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum CertsClusterError {
    // The source is printed by the caller's error chain, not repeated here.
    #[error("cannot reach the cluster")]
    Client(#[source] kube::Error),
    #[error("{action}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot generate the certificates: {0}")]
    Generate(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("ValidatingWebhookConfiguration {name} did not appear within {waited:?}")]
    WebhookConfigMissing { name: String, waited: Duration },
    #[error("{0} kept changing under us; gave up after {MAX_ATTEMPTS} attempts")]
    Contended(String),
}

pub type Result<T, E = CertsClusterError> = std::result::Result<T, E>;

/// A CA and a serving certificate with its key, as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    // The key stays out of debug output and logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// What a certificate says about itself, for the renewal decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub not_after: OffsetDateTime,
    pub dns_names: Vec<String>,
    pub subject: Vec<u8>,
    pub issuer: Vec<u8>,
    pub subject_key_id: Option<Vec<u8>>,
    pub authority_key_id: Option<Vec<u8>>,
}

impl CertFacts {
    /// Whether `ca` issued this certificate: by key identifiers when both carry them (every
    /// CA here has the same name), else by name.
    pub fn issued_by(&self, ca: &CertFacts) -> bool {
        match (&self.authority_key_id, &ca.subject_key_id) {
            (Some(aki), Some(ski)) => aki == ski && self.issuer == ca.subject,
            _ => self.issuer == ca.subject,
        }
    }
}

/// Reads the first certificate of a PEM text.
pub fn cert_facts(pem: &str) -> Result<CertFacts, String> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| format!("not PEM: {e}"))?;
    if block.label != "CERTIFICATE" {
        return Err(format!("PEM block is {:?}, not CERTIFICATE", block.label));
    }
    let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let not_after = cert.validity().not_after.to_datetime();
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                dns_names.push((*dns).to_owned());
            }
        }
    }
    let mut subject_key_id = None;
    let mut authority_key_id = None;
    for extension in cert.extensions() {
        match extension.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => subject_key_id = Some(id.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                authority_key_id = aki.key_identifier.as_ref().map(|id| id.0.to_vec());
            }
            _ => {}
        }
    }
    Ok(CertFacts {
        not_after,
        dns_names,
        subject: cert.subject().as_raw().to_vec(),
        issuer: cert.issuer().as_raw().to_vec(),
        subject_key_id,
        authority_key_id,
    })
}

/// Why a Secret must be (re)written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewReason {
    Missing,
    MissingKey(&'static str),
    Unreadable {
        key: &'static str,
        error: String,
    },
    ExpiresSoon {
        key: &'static str,
        not_after: OffsetDateTime,
    },
    MissingNames(Vec<String>),
    NotSignedByCa,
}

impl std::fmt::Display for RenewReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => f.write_str("the Secret does not exist"),
            Self::MissingKey(key) => write!(f, "the Secret has no {key}"),
            Self::Unreadable { key, error } => write!(f, "{key} cannot be read: {error}"),
            Self::ExpiresSoon { key, not_after } => write!(f, "{key} expires at {not_after}"),
            Self::MissingNames(names) => {
                write!(f, "tls.crt does not name {}", names.join(", "))
            }
            Self::NotSignedByCa => f.write_str("tls.crt was not issued by ca.crt"),
        }
    }
}

/// Keep the Secret, or renew it and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    Keep { not_after: OffsetDateTime },
    Renew(RenewReason),
}

/// Decides whether the Secret's data can stay: both certificates parse, the serving one names
/// every `expected_names` entry, was issued by the CA, and neither expires before
/// `now + renew_within`.
pub fn assess_secret(
    data: Option<&BTreeMap<String, ByteString>>,
    expected_names: &[String],
    now: OffsetDateTime,
    renew_within: time::Duration,
) -> Assessment {
    let Some(data) = data else {
        return Assessment::Renew(RenewReason::Missing);
    };
    let text = |key: &'static str| -> Result<String, RenewReason> {
        let bytes = data
            .get(key)
            .filter(|b| !b.0.is_empty())
            .ok_or(RenewReason::MissingKey(key))?;
        String::from_utf8(bytes.0.clone()).map_err(|_| RenewReason::Unreadable {
            key,
            error: "not UTF-8".into(),
        })
    };
    let facts = |key: &'static str| -> Result<CertFacts, RenewReason> {
        cert_facts(&text(key)?).map_err(|error| RenewReason::Unreadable { key, error })
    };
    let assessed = (|| {
        let ca = facts(CA_KEY)?;
        let cert = facts(CERT_KEY)?;
        text(PRIVATE_KEY_KEY)?;
        let deadline = now + renew_within;
        for (key, facts) in [(CA_KEY, &ca), (CERT_KEY, &cert)] {
            if facts.not_after <= deadline {
                return Err(RenewReason::ExpiresSoon {
                    key,
                    not_after: facts.not_after,
                });
            }
        }
        let missing: Vec<String> = expected_names
            .iter()
            .filter(|n| !cert.dns_names.contains(n))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(RenewReason::MissingNames(missing));
        }
        if !cert.issued_by(&ca) {
            return Err(RenewReason::NotSignedByCa);
        }
        Ok(cert.not_after)
    })();
    match assessed {
        Ok(not_after) => Assessment::Keep { not_after },
        Err(reason) => Assessment::Renew(reason),
    }
}

/// The Secret's data after a renewal: the new pair, and the CA it replaces (when that one
/// still parses and is valid) so both stay trusted until every pod has the new pair.
pub fn renewed_data(
    material: &TlsMaterial,
    old: Option<&BTreeMap<String, ByteString>>,
    now: OffsetDateTime,
) -> BTreeMap<String, ByteString> {
    let mut data = BTreeMap::from([
        (CA_KEY.to_owned(), bytes(&material.ca_pem)),
        (CERT_KEY.to_owned(), bytes(&material.cert_pem)),
        (PRIVATE_KEY_KEY.to_owned(), bytes(&material.key_pem)),
    ]);
    let old_ca = old
        .and_then(|d| d.get(CA_KEY))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|pem| *pem != material.ca_pem)
        .filter(|pem| cert_facts(pem).is_ok_and(|f| f.not_after > now));
    if let Some(old_ca) = old_ca {
        data.insert(PREVIOUS_CA_KEY.to_owned(), bytes(&old_ca));
    }
    data
}

fn bytes(text: &str) -> ByteString {
    ByteString(text.as_bytes().to_vec())
}

/// The caBundle for the Secret's data: `ca.crt`, then `ca-previous.crt` while it is valid;
/// base64 of the PEM text, one line.
pub fn ca_bundle_for(
    data: &BTreeMap<String, ByteString>,
    now: OffsetDateTime,
) -> Result<String, String> {
    let ca = data
        .get(CA_KEY)
        .ok_or("the Secret has no ca.crt")?
        .0
        .clone();
    let ca = String::from_utf8(ca).map_err(|_| "ca.crt is not UTF-8")?;
    cert_facts(&ca).map_err(|e| format!("ca.crt: {e}"))?;
    let mut pem = ca.trim_end().to_owned();
    pem.push('\n');
    if let Some(previous) = data
        .get(PREVIOUS_CA_KEY)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|p| cert_facts(p).is_ok_and(|f| f.not_after > now))
    {
        pem.push_str(previous.trim_end());
        pem.push('\n');
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(pem))
}

/// A JSON patch that sets `ca_bundle` on every webhook of the configuration, guarded by its
/// resourceVersion so a concurrent change is not overwritten; `None` when all already have it.
pub fn ca_bundle_patch(configuration: &Value, ca_bundle: &str) -> Result<Option<Value>, String> {
    let webhooks = configuration
        .get("webhooks")
        .and_then(Value::as_array)
        .filter(|w| !w.is_empty())
        .ok_or("the configuration has no webhooks")?;
    if webhooks
        .iter()
        .all(|w| w.pointer("/clientConfig/caBundle").and_then(Value::as_str) == Some(ca_bundle))
    {
        return Ok(None);
    }
    let resource_version = configuration
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .ok_or("the configuration has no resourceVersion")?;
    let mut ops = vec![json!({
        "op": "test", "path": "/metadata/resourceVersion", "value": resource_version
    })];
    for (i, webhook) in webhooks.iter().enumerate() {
        if webhook.get("clientConfig").is_none() {
            return Err(format!("webhooks[{i}] has no clientConfig"));
        }
        ops.push(json!({
            "op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": ca_bundle
        }));
    }
    Ok(Some(Value::Array(ops)))
}

/// What [`reconcile`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `None`: the Secret was kept.
    pub renewed: Option<RenewReason>,
    pub not_after: Option<OffsetDateTime>,
    pub ca_bundle: String,
    pub webhook_config: WebhookConfigOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookConfigOutcome {
    NotRequested,
    NotFound,
    AlreadyCurrent,
    Patched { webhooks: usize },
}

/// What to reconcile.
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    pub secret: String,
    pub dns_names: Vec<String>,
    pub webhook_config: Option<String>,
    pub renew_within_days: u32,
    pub wait_for_webhook_config: Option<Duration>,
}

impl Target {
    /// The target for the webhook Service `service` in `namespace`, from the flags; the
    /// certificate must name `dns_names` (the Service's four forms plus any extras).
    pub fn from_args(namespace: &str, dns_names: Vec<String>, args: &ClusterArgs) -> Result<Self> {
        let secret = args
            .secret
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| CertsClusterError::Invalid("--in-cluster needs --secret NAME".into()))?;
        Ok(Self {
            namespace: namespace.to_owned(),
            secret,
            dns_names,
            webhook_config: args.webhook_config.clone().filter(|s| !s.is_empty()),
            renew_within_days: args.renew_within_days,
            wait_for_webhook_config: args.wait_for_webhook_config,
        })
    }
}

impl From<crate::certs::GeneratedCerts> for TlsMaterial {
    fn from(certs: crate::certs::GeneratedCerts) -> Self {
        Self {
            ca_pem: certs.ca_pem,
            cert_pem: certs.cert_pem,
            key_pem: certs.key_pem,
        }
    }
}

/// `cce-cni-guard certs --in-cluster`: certificates for `spec`, kept in the cluster.
pub fn run_for(spec: &crate::certs::CertSpec, args: &ClusterArgs) -> anyhow::Result<()> {
    let target = Target::from_args(&spec.namespace, spec.dns_names(), args)?;
    // Check the spec once up front, so a bad one fails before anything is read or written.
    crate::certs::generate(spec)?;
    let spec = spec.clone();
    let generate = move || {
        crate::certs::generate(&spec)
            .map(TlsMaterial::from)
            .map_err(|e| e.to_string())
    };
    run_blocking(target, &generate)?;
    Ok(())
}

/// [`run`] from synchronous code running on a multi-threaded tokio runtime (the CLI's).
pub fn run_blocking(
    target: Target,
    generate: &(dyn Fn() -> Result<TlsMaterial, String> + Send + Sync),
) -> Result<Outcome> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|e| CertsClusterError::Invalid(format!("no async runtime: {e}")))?;
    tokio::task::block_in_place(|| handle.block_on(run(target, generate)))
}

/// Makes sure the Secret is valid (creating or renewing it with `generate`), then sets the
/// caBundle of the configuration's webhooks. Safe to run any number of times, also two at once.
pub async fn reconcile(
    client: kube::Client,
    target: &Target,
    generate: &(dyn Fn() -> Result<TlsMaterial, String> + Send + Sync),
) -> Result<Outcome> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &target.namespace);
    let renew_within = time::Duration::days(i64::from(target.renew_within_days));
    let mut renewed = None;
    let mut current = None;
    for _ in 0..MAX_ATTEMPTS {
        let now = OffsetDateTime::now_utc();
        let existing = secrets
            .get_opt(&target.secret)
            .await
            .map_err(|source| api_error(format!("reading Secret {}", target.secret), source))?;
        let data = existing.as_ref().and_then(|s| s.data.as_ref());
        match assess_secret(data, &target.dns_names, now, renew_within) {
            Assessment::Keep { not_after } => {
                current = Some((data.cloned().unwrap_or_default(), not_after));
                break;
            }
            Assessment::Renew(reason) => {
                tracing::info!(secret = %target.secret, %reason, "writing new certificates");
                let material = generate().map_err(CertsClusterError::Generate)?;
                let new_data = renewed_data(&material, data, now);
                let not_after = cert_facts(&material.cert_pem)
                    .map_err(|e| CertsClusterError::Generate(format!("generated tls.crt: {e}")))?
                    .not_after;
                let secret = secret_object(target, existing.as_ref(), new_data.clone());
                let written = match &existing {
                    None => secrets.create(&PostParams::default(), &secret).await,
                    Some(_) => {
                        secrets
                            .replace(&target.secret, &PostParams::default(), &secret)
                            .await
                    }
                };
                match written {
                    Ok(_) => {
                        renewed = Some(reason);
                        current = Some((new_data, not_after));
                        break;
                    }
                    // The other hook Job got there first: look again.
                    Err(kube::Error::Api(status)) if status.code == 409 => continue,
                    Err(source) => {
                        return Err(api_error(
                            format!("writing Secret {}", target.secret),
                            source,
                        ));
                    }
                }
            }
        }
    }
    let Some((data, not_after)) = current else {
        return Err(CertsClusterError::Contended(format!(
            "Secret {}",
            target.secret
        )));
    };
    let ca_bundle =
        ca_bundle_for(&data, OffsetDateTime::now_utc()).map_err(CertsClusterError::Invalid)?;
    let webhook_config = match &target.webhook_config {
        None => WebhookConfigOutcome::NotRequested,
        Some(name) => {
            set_ca_bundle(client, name, &ca_bundle, target.wait_for_webhook_config).await?
        }
    };
    Ok(Outcome {
        renewed,
        not_after: Some(not_after),
        ca_bundle,
        webhook_config,
    })
}

fn secret_object(
    target: &Target,
    existing: Option<&Secret>,
    data: BTreeMap<String, ByteString>,
) -> Secret {
    let mut labels = existing
        .and_then(|s| s.metadata.labels.clone())
        .unwrap_or_default();
    labels.insert("app.kubernetes.io/name".into(), "cce-cni-guard".into());
    labels.insert("app.kubernetes.io/component".into(), "webhook-tls".into());
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "cce-cni-guard-certs".into(),
    );
    Secret {
        metadata: ObjectMeta {
            name: Some(target.secret.clone()),
            namespace: Some(target.namespace.clone()),
            labels: Some(labels),
            annotations: existing.and_then(|s| s.metadata.annotations.clone()),
            // Replace only the version we assessed; a concurrent writer makes this a 409.
            resource_version: existing.and_then(|s| s.metadata.resource_version.clone()),
            ..ObjectMeta::default()
        },
        type_: Some(SECRET_TYPE.into()),
        data: Some(data),
        ..Secret::default()
    }
}

async fn set_ca_bundle(
    client: kube::Client,
    name: &str,
    ca_bundle: &str,
    wait: Option<Duration>,
) -> Result<WebhookConfigOutcome> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let deadline = wait.map(|w| (tokio::time::Instant::now() + w, w));
    for _ in 0..MAX_ATTEMPTS {
        let configuration = loop {
            let found = api.get_opt(name).await.map_err(|source| {
                api_error(
                    format!("reading ValidatingWebhookConfiguration {name}"),
                    source,
                )
            })?;
            match (found, deadline) {
                (Some(c), _) => break c,
                (None, None) => return Ok(WebhookConfigOutcome::NotFound),
                (None, Some((at, waited))) => {
                    if tokio::time::Instant::now() >= at {
                        return Err(CertsClusterError::WebhookConfigMissing {
                            name: name.into(),
                            waited,
                        });
                    }
                    tokio::time::sleep(WAIT_POLL).await;
                }
            }
        };
        let value = serde_json::to_value(&configuration)
            .map_err(|e| CertsClusterError::Invalid(e.to_string()))?;
        let Some(ops) = ca_bundle_patch(&value, ca_bundle).map_err(CertsClusterError::Invalid)?
        else {
            return Ok(WebhookConfigOutcome::AlreadyCurrent);
        };
        let webhooks = ops.as_array().map_or(0, |o| o.len().saturating_sub(1));
        let patch: json_patch::Patch =
            serde_json::from_value(ops).map_err(|e| CertsClusterError::Invalid(e.to_string()))?;
        match api
            .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
        {
            Ok(_) => return Ok(WebhookConfigOutcome::Patched { webhooks }),
            // The resourceVersion test failed (422) or a write raced us (409): look again.
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 422 => continue,
            Err(source) => {
                return Err(api_error(
                    format!("patching the caBundle of ValidatingWebhookConfiguration {name}"),
                    source,
                ));
            }
        }
    }
    Err(CertsClusterError::Contended(format!(
        "ValidatingWebhookConfiguration {name}"
    )))
}

fn api_error(action: String, source: kube::Error) -> CertsClusterError {
    CertsClusterError::Api { action, source }
}

/// Runs the in-cluster route with the default client and prints the caBundle on stdout.
pub async fn run(
    target: Target,
    generate: &(dyn Fn() -> Result<TlsMaterial, String> + Send + Sync),
) -> Result<Outcome> {
    let client = kube::Client::try_default()
        .await
        .map_err(CertsClusterError::Client)?;
    let outcome = reconcile(client, &target, generate).await?;
    match &outcome.renewed {
        Some(reason) => eprintln!(
            "wrote Secret {}/{} ({reason}); serving certificate valid until {}",
            target.namespace,
            target.secret,
            outcome
                .not_after
                .map_or_else(String::new, |t| t.to_string())
        ),
        None => eprintln!(
            "kept Secret {}/{}: valid until {}",
            target.namespace,
            target.secret,
            outcome
                .not_after
                .map_or_else(String::new, |t| t.to_string())
        ),
    }
    match (&outcome.webhook_config, &target.webhook_config) {
        (WebhookConfigOutcome::Patched { webhooks }, Some(name)) => {
            eprintln!("set the caBundle of {webhooks} webhook(s) in {name}")
        }
        (WebhookConfigOutcome::AlreadyCurrent, Some(name)) => {
            eprintln!("the caBundle of {name} is already current")
        }
        (WebhookConfigOutcome::NotFound, Some(name)) => eprintln!(
            "ValidatingWebhookConfiguration {name} does not exist yet; its caBundle is set by the next run"
        ),
        _ => {}
    }
    println!("{}", outcome.ca_bundle);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    fn names() -> Vec<String> {
        ["svc", "svc.ns", "svc.ns.svc", "svc.ns.svc.cluster.local"]
            .map(String::from)
            .to_vec()
    }

    /// A CA and a serving certificate valid for the given days from now.
    fn material(ca_days: i64, days: i64, dns: &[String]) -> TlsMaterial {
        let now = OffsetDateTime::now_utc();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        ca_params.not_before = now - time::Duration::days(400);
        ca_params.not_after = now + time::Duration::days(ca_days);
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let mut params = CertificateParams::new(dns.to_vec()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "svc.ns.svc");
        params.not_before = now - time::Duration::days(400);
        params.not_after = now + time::Duration::days(days);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        TlsMaterial {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn data(m: &TlsMaterial) -> BTreeMap<String, ByteString> {
        renewed_data(m, None, OffsetDateTime::now_utc())
    }

    fn assess(d: Option<&BTreeMap<String, ByteString>>) -> Assessment {
        assess_secret(
            d,
            &names(),
            OffsetDateTime::now_utc(),
            time::Duration::days(30),
        )
    }

    #[test]
    fn a_valid_secret_is_kept() {
        let m = material(3650, 365, &names());
        assert!(matches!(assess(Some(&data(&m))), Assessment::Keep { .. }));
    }

    #[test]
    fn a_missing_or_incomplete_secret_is_renewed() {
        assert_eq!(assess(None), Assessment::Renew(RenewReason::Missing));
        let mut d = data(&material(3650, 365, &names()));
        d.remove(PRIVATE_KEY_KEY);
        assert_eq!(
            assess(Some(&d)),
            Assessment::Renew(RenewReason::MissingKey(PRIVATE_KEY_KEY))
        );
        d.insert(CERT_KEY.into(), bytes("garbage"));
        d.insert(PRIVATE_KEY_KEY.into(), bytes("k"));
        assert!(matches!(
            assess(Some(&d)),
            Assessment::Renew(RenewReason::Unreadable { key: CERT_KEY, .. })
        ));
    }

    #[test]
    fn a_certificate_expiring_within_the_window_is_renewed() {
        let soon = material(3650, 10, &names());
        assert!(matches!(
            assess(Some(&data(&soon))),
            Assessment::Renew(RenewReason::ExpiresSoon { key: CERT_KEY, .. })
        ));
        let ca_soon = material(20, 10, &names());
        assert!(matches!(
            assess(Some(&data(&ca_soon))),
            Assessment::Renew(RenewReason::ExpiresSoon { key: CA_KEY, .. })
        ));
        let later = material(3650, 31, &names());
        assert!(matches!(
            assess(Some(&data(&later))),
            Assessment::Keep { .. }
        ));
    }

    #[test]
    fn a_certificate_for_another_service_is_renewed() {
        let other = material(3650, 365, &["other.ns.svc".to_owned()]);
        match assess(Some(&data(&other))) {
            Assessment::Renew(RenewReason::MissingNames(missing)) => {
                assert_eq!(missing, names())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_certificate_from_another_ca_is_renewed() {
        let a = material(3650, 365, &names());
        let b = material(3650, 365, &names());
        let mut mixed = data(&a);
        mixed.insert(CA_KEY.into(), bytes(&b.ca_pem));
        assert_eq!(
            assess(Some(&mixed)),
            Assessment::Renew(RenewReason::NotSignedByCa)
        );
    }

    #[test]
    fn renewal_keeps_the_old_ca_in_the_bundle_while_it_is_valid() {
        let now = OffsetDateTime::now_utc();
        let old = material(3650, 5, &names());
        let new = material(3650, 365, &names());
        let renewed = renewed_data(&new, Some(&data(&old)), now);
        assert_eq!(renewed[PREVIOUS_CA_KEY].0, old.ca_pem.as_bytes());
        let bundle = base64::engine::general_purpose::STANDARD
            .decode(ca_bundle_for(&renewed, now).unwrap())
            .unwrap();
        let bundle = String::from_utf8(bundle).unwrap();
        assert!(bundle.starts_with(new.ca_pem.trim_end()));
        assert!(bundle.contains(old.ca_pem.trim_end()));
        // An expired old CA is dropped; a fresh Secret has only its own CA.
        let expired = material(-1, -2, &names());
        let renewed = renewed_data(&new, Some(&data(&expired)), now);
        assert!(!renewed.contains_key(PREVIOUS_CA_KEY));
        let only_new = base64::engine::general_purpose::STANDARD
            .decode(ca_bundle_for(&data(&new), now).unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(only_new).unwrap().trim_end(),
            new.ca_pem.trim_end()
        );
    }

    #[test]
    fn the_patch_sets_every_webhook_and_is_guarded_by_resource_version() {
        let configuration = json!({
            "metadata": {"name": "cce-cni-guard", "resourceVersion": "42"},
            "webhooks": [
                {"name": "a.example.com", "clientConfig": {"service": {"name": "s", "namespace": "n"}}},
                {"name": "b.example.com", "clientConfig": {"caBundle": "b2xk", "service": {"name": "s", "namespace": "n"}}}
            ]
        });
        let ops = ca_bundle_patch(&configuration, "bmV3").unwrap().unwrap();
        assert_eq!(
            ops,
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
                {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "bmV3"},
                {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": "bmV3"}
            ])
        );
        // It is a valid JSON patch, and applying it leaves nothing to do.
        let patch: json_patch::Patch = serde_json::from_value(ops).unwrap();
        let mut patched = configuration.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(ca_bundle_patch(&patched, "bmV3").unwrap(), None);
    }

    #[test]
    fn the_patch_refuses_a_configuration_without_webhooks() {
        let empty = json!({"metadata": {"resourceVersion": "1"}, "webhooks": []});
        assert!(ca_bundle_patch(&empty, "eA==").is_err());
        assert!(ca_bundle_patch(&json!({}), "eA==").is_err());
    }

    #[test]
    fn the_key_stays_out_of_debug_output() {
        let m = material(3650, 365, &names());
        assert!(!format!("{m:?}").contains("PRIVATE KEY"));
    }

    /// A stand-in apiserver with one Secret and one ValidatingWebhookConfiguration, enough
    /// for [`reconcile`]: GET, POST and PUT of the Secret (409 on a stale resourceVersion or
    /// an existing name), GET and JSON PATCH of the configuration (422 when a test fails).
    mod fake_apiserver {
        use std::sync::{Arc, Mutex};

        use axum::Router;
        use axum::body::Bytes;
        use axum::extract::{Path, State};
        use axum::http::StatusCode;
        use axum::response::{IntoResponse, Response};
        use axum::routing::get;
        use serde_json::{Value, json};

        #[derive(Default)]
        pub struct Store {
            pub secret: Option<Value>,
            pub configuration: Option<Value>,
            pub writes: Vec<String>,
            /// Put in place by "another writer" just before the next create is answered.
            pub secret_created_concurrently: Option<Value>,
            version: u64,
        }

        impl Store {
            fn bump(&mut self, object: &mut Value) {
                self.version += 1;
                object["metadata"]["resourceVersion"] = json!(self.version.to_string());
            }
        }

        pub type Shared = Arc<Mutex<Store>>;

        fn status(code: u16, reason: &str) -> Response {
            let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": reason, "reason": reason, "code": code});
            (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
        }

        async fn get_secret(
            State(s): State<Shared>,
            Path((_ns, name)): Path<(String, String)>,
        ) -> Response {
            let store = s.lock().unwrap();
            match &store.secret {
                Some(secret) if secret["metadata"]["name"] == name.as_str() => {
                    axum::Json(secret.clone()).into_response()
                }
                _ => status(404, "NotFound"),
            }
        }

        async fn create_secret(State(s): State<Shared>, body: Bytes) -> Response {
            let mut store = s.lock().unwrap();
            store.writes.push("create secret".into());
            if let Some(mut other) = store.secret_created_concurrently.take() {
                store.bump(&mut other);
                store.secret = Some(other);
            }
            if store.secret.is_some() {
                return status(409, "AlreadyExists");
            }
            let mut secret: Value = serde_json::from_slice(&body).unwrap();
            store.bump(&mut secret);
            store.secret = Some(secret.clone());
            (StatusCode::CREATED, axum::Json(secret)).into_response()
        }

        async fn replace_secret(State(s): State<Shared>, body: Bytes) -> Response {
            let mut store = s.lock().unwrap();
            store.writes.push("replace secret".into());
            let mut secret: Value = serde_json::from_slice(&body).unwrap();
            let current = store
                .secret
                .as_ref()
                .map(|c| c["metadata"]["resourceVersion"].clone());
            if current != Some(secret["metadata"]["resourceVersion"].clone()) {
                return status(409, "Conflict");
            }
            store.bump(&mut secret);
            store.secret = Some(secret.clone());
            axum::Json(secret).into_response()
        }

        async fn get_configuration(State(s): State<Shared>) -> Response {
            match &s.lock().unwrap().configuration {
                Some(c) => axum::Json(c.clone()).into_response(),
                None => status(404, "NotFound"),
            }
        }

        async fn patch_configuration(State(s): State<Shared>, body: Bytes) -> Response {
            let mut store = s.lock().unwrap();
            store.writes.push("patch configuration".into());
            let patch: json_patch::Patch = serde_json::from_slice(&body).unwrap();
            let Some(mut configuration) = store.configuration.clone() else {
                return status(404, "NotFound");
            };
            if json_patch::patch(&mut configuration, &patch).is_err() {
                return status(422, "Invalid");
            }
            store.bump(&mut configuration);
            store.configuration = Some(configuration.clone());
            axum::Json(configuration).into_response()
        }

        /// Serves on a loopback port; the task ends with the test's runtime.
        pub async fn start(store: Shared) -> kube::Client {
            let app = Router::new()
                .route(
                    "/api/v1/namespaces/{ns}/secrets",
                    axum::routing::post(create_secret),
                )
                .route(
                    "/api/v1/namespaces/{ns}/secrets/{name}",
                    get(get_secret).put(replace_secret),
                )
                .route(
                    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}",
                    get(get_configuration).patch(patch_configuration),
                )
                .with_state(store);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
            kube::Client::try_from(config).unwrap()
        }
    }

    fn configuration() -> Value {
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "cce-cni-guard", "resourceVersion": "7"},
            "webhooks": [{
                "name": "cce-cni-guard.cce.baidubce.com",
                "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "clientConfig": {"service": {"name": "svc", "namespace": "ns", "path": "/validate"}}
            }]
        })
    }

    fn target(webhook_config: Option<&str>) -> Target {
        Target {
            namespace: "ns".into(),
            secret: "svc-tls".into(),
            dns_names: names(),
            webhook_config: webhook_config.map(str::to_owned),
            renew_within_days: 30,
            wait_for_webhook_config: None,
        }
    }

    fn secret_value(m: &TlsMaterial) -> Value {
        let encode = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
            "metadata": {"name": "svc-tls", "namespace": "ns", "resourceVersion": "3"},
            "data": {"ca.crt": encode(&m.ca_pem), "tls.crt": encode(&m.cert_pem), "tls.key": encode(&m.key_pem)}
        })
    }

    fn secret_data(store: &fake_apiserver::Shared) -> BTreeMap<String, ByteString> {
        let secret: Secret =
            serde_json::from_value(store.lock().unwrap().secret.clone().unwrap()).unwrap();
        secret.data.unwrap()
    }

    fn bundle_in_cluster(store: &fake_apiserver::Shared) -> Option<String> {
        store.lock().unwrap().configuration.as_ref().and_then(|c| {
            c.pointer("/webhooks/0/clientConfig/caBundle")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
    }

    fn generator() -> impl Fn() -> Result<TlsMaterial, String> + Send + Sync {
        || Ok(material(3650, 365, &names()))
    }

    #[tokio::test]
    async fn first_run_creates_the_secret_and_sets_the_ca_bundle_then_reruns_change_nothing() {
        crate::install_crypto_provider();
        let store = fake_apiserver::Shared::default();
        store.lock().unwrap().configuration = Some(configuration());
        let client = fake_apiserver::start(store.clone()).await;
        let first = reconcile(client.clone(), &target(Some("cce-cni-guard")), &generator())
            .await
            .unwrap();
        assert_eq!(first.renewed, Some(RenewReason::Missing));
        assert_eq!(
            first.webhook_config,
            WebhookConfigOutcome::Patched { webhooks: 1 }
        );
        let data = secret_data(&store);
        assert!(matches!(
            assess_secret(
                Some(&data),
                &names(),
                OffsetDateTime::now_utc(),
                time::Duration::days(30)
            ),
            Assessment::Keep { .. }
        ));
        assert_eq!(bundle_in_cluster(&store), Some(first.ca_bundle.clone()));
        let secret = store.lock().unwrap().secret.clone().unwrap();
        assert_eq!(secret["type"], SECRET_TYPE);

        store.lock().unwrap().writes.clear();
        let again = reconcile(client, &target(Some("cce-cni-guard")), &generator())
            .await
            .unwrap();
        assert_eq!(again.renewed, None);
        assert_eq!(again.webhook_config, WebhookConfigOutcome::AlreadyCurrent);
        assert_eq!(again.ca_bundle, first.ca_bundle);
        assert!(store.lock().unwrap().writes.is_empty());
    }

    #[tokio::test]
    async fn an_expiring_secret_is_replaced_and_both_cas_are_trusted() {
        crate::install_crypto_provider();
        let old = material(3650, 10, &names());
        let store = fake_apiserver::Shared::default();
        store.lock().unwrap().secret = Some(secret_value(&old));
        store.lock().unwrap().configuration = Some(configuration());
        let client = fake_apiserver::start(store.clone()).await;
        let outcome = reconcile(client, &target(Some("cce-cni-guard")), &generator())
            .await
            .unwrap();
        assert!(matches!(
            outcome.renewed,
            Some(RenewReason::ExpiresSoon { key: CERT_KEY, .. })
        ));
        assert_eq!(store.lock().unwrap().writes[0], "replace secret");
        let data = secret_data(&store);
        assert_eq!(data[PREVIOUS_CA_KEY].0, old.ca_pem.as_bytes());
        let bundle = bundle_in_cluster(&store).unwrap();
        let pem = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(bundle)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(pem.contains(old.ca_pem.trim_end()));
    }

    #[tokio::test]
    async fn a_secret_created_concurrently_is_kept() {
        crate::install_crypto_provider();
        let theirs = material(3650, 365, &names());
        let store = fake_apiserver::Shared::default();
        store.lock().unwrap().secret_created_concurrently = Some(secret_value(&theirs));
        let client = fake_apiserver::start(store.clone()).await;
        let outcome = reconcile(client, &target(None), &generator())
            .await
            .unwrap();
        assert_eq!(outcome.renewed, None);
        assert_eq!(outcome.webhook_config, WebhookConfigOutcome::NotRequested);
        assert_eq!(secret_data(&store)[CA_KEY].0, theirs.ca_pem.as_bytes());
    }

    #[tokio::test]
    async fn a_missing_configuration_is_reported_or_waited_for() {
        crate::install_crypto_provider();
        let store = fake_apiserver::Shared::default();
        let client = fake_apiserver::start(store.clone()).await;
        let outcome = reconcile(client.clone(), &target(Some("cce-cni-guard")), &generator())
            .await
            .unwrap();
        assert_eq!(outcome.webhook_config, WebhookConfigOutcome::NotFound);
        // The Secret is in place even though the configuration is not there yet.
        assert!(store.lock().unwrap().secret.is_some());
        let mut waiting = target(Some("cce-cni-guard"));
        waiting.wait_for_webhook_config = Some(Duration::ZERO);
        let err = reconcile(client, &waiting, &generator()).await.unwrap_err();
        assert!(
            matches!(err, CertsClusterError::WebhookConfigMissing { .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_generator_failure_is_an_error_not_a_half_written_secret() {
        crate::install_crypto_provider();
        let store = fake_apiserver::Shared::default();
        let client = fake_apiserver::start(store.clone()).await;
        let failing = || Err::<TlsMaterial, _>("no entropy".to_owned());
        let err = reconcile(client, &target(None), &failing)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no entropy"));
        assert!(store.lock().unwrap().secret.is_none());
    }
}
