//! Validating admission as the apiserver does it: match registered
//! ValidatingWebhookConfigurations (rules, namespaceSelector, objectSelector, matchConditions),
//! POST an AdmissionReview over HTTPS verified with the caBundle, honour timeoutSeconds,
//! failurePolicy and sideEffects on dry runs, and turn a denial into the apiserver's Status.
//!
//! Modelled on k8s.io/apiserver `pkg/admission/plugin/webhook` (generic/webhook.go,
//! predicates/rules, validating/dispatcher.go, errors/statuserror.go).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};

/// The operation being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmissionOperation {
    Create,
    Update,
    Delete,
    Connect,
}

impl AdmissionOperation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmissionUser {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// Everything the apiserver knows about a write when it calls admission.
#[derive(Debug, Clone)]
pub struct AdmissionAttributes {
    pub operation: AdmissionOperation,
    pub group: String,
    pub version: String,
    /// Plural resource, e.g. `daemonsets`.
    pub resource: String,
    /// `status`, `scale`, or empty.
    pub sub_resource: String,
    /// Kind of the object sent (for `/scale`, `Scale` in group `autoscaling`).
    pub kind_group: String,
    pub kind_version: String,
    pub kind: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
    pub object: Option<Value>,
    pub old_object: Option<Value>,
    pub dry_run: bool,
    pub user: AdmissionUser,
    /// CreateOptions / UpdateOptions / DeleteOptions as the apiserver passes them.
    pub options: Option<Value>,
    /// Labels of the object's namespace (for namespaceSelector), when namespaced.
    pub namespace_labels: BTreeMap<String, String>,
}

/// What admission decided.
#[derive(Debug, Clone, PartialEq)]
pub enum AdmissionVerdict {
    Allowed {
        warnings: Vec<String>,
        audit_annotations: BTreeMap<String, String>,
    },
    /// Refused: `status` is the metav1.Status to answer with, `code` its HTTP status.
    Denied {
        status: Value,
        code: u16,
        warnings: Vec<String>,
    },
}

/// Where `clientConfig.service` points inside the simulated cluster.
pub type ServiceResolver = Arc<dyn Fn(&str, &str, u16) -> Option<SocketAddr> + Send + Sync>;

/// Calls the webhooks of the registered configurations.
#[derive(Clone)]
pub struct WebhookDispatcher {
    resolve_service: ServiceResolver,
}

impl std::fmt::Debug for WebhookDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookDispatcher").finish_non_exhaustive()
    }
}

/// Largest webhook response read (the apiserver caps them too).
const MAX_RESPONSE_BYTES: usize = 3 * 1024 * 1024;
const DEFAULT_TIMEOUT_SECONDS: u64 = 10;
/// CEL variables a matchCondition may use here; `authorizer` is not modelled.
const CEL_VARIABLES: [&str; 3] = ["object", "oldObject", "request"];

/// Checks a ValidatingWebhookConfiguration at registration, as the apiserver's validation does
/// for what the simulation models: a name and clientConfig per webhook, known enum values, and
/// matchConditions that compile and use only the variables the simulation provides.
pub fn validate_configuration(configuration: &Value) -> Result<(), String> {
    let webhooks = match configuration.get("webhooks") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(w)) => w,
        Some(_) => return Err("webhooks: must be a list".into()),
    };
    let mut names = Vec::new();
    for (i, webhook) in webhooks.iter().enumerate() {
        let path = format!("webhooks[{i}]");
        let name = webhook
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name.is_empty() || !name.contains('.') {
            return Err(format!(
                "{path}.name: Invalid value: {name:?}: should be a domain with at least three segments separated by dots"
            ));
        }
        if names.contains(&name) {
            return Err(format!("{path}.name: Duplicate value: {name:?}"));
        }
        names.push(name);
        let client = webhook
            .get("clientConfig")
            .ok_or_else(|| format!("{path}.clientConfig: Required value"))?;
        match (client.get("url"), client.get("service")) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{path}.clientConfig: Required value: exactly one of url or service is required"
                ));
            }
            (None, None) => {
                return Err(format!(
                    "{path}.clientConfig: Required value: exactly one of url or service is required"
                ));
            }
            (Some(url), None) => {
                let url = url.as_str().unwrap_or_default();
                if !url.starts_with("https://") {
                    return Err(format!(
                        "{path}.clientConfig.url: Unsupported value: {url:?}: 'https' is the only allowed URL scheme"
                    ));
                }
            }
            (None, Some(service)) => {
                if service
                    .get("name")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                    || service
                        .get("namespace")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                {
                    return Err(format!(
                        "{path}.clientConfig.service: Required value: name and namespace"
                    ));
                }
            }
        }
        if let Some(ca) = client.get("caBundle").and_then(Value::as_str)
            && base64::engine::general_purpose::STANDARD
                .decode(ca)
                .is_err()
        {
            return Err(format!(
                "{path}.clientConfig.caBundle: Invalid value: not base64"
            ));
        }
        let versions = webhook
            .get("admissionReviewVersions")
            .and_then(Value::as_array);
        if versions.is_none_or(|v| v.is_empty()) {
            return Err(format!(
                "{path}.admissionReviewVersions: Required value: must specify one of v1, v1beta1"
            ));
        }
        let side_effects = webhook
            .get("sideEffects")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !matches!(side_effects, "None" | "NoneOnDryRun") {
            return Err(format!(
                "{path}.sideEffects: Unsupported value: {side_effects:?}: supported values: \"None\", \"NoneOnDryRun\""
            ));
        }
        if let Some(policy) = webhook.get("failurePolicy").and_then(Value::as_str)
            && !matches!(policy, "Fail" | "Ignore")
        {
            return Err(format!(
                "{path}.failurePolicy: Unsupported value: {policy:?}: supported values: \"Fail\", \"Ignore\""
            ));
        }
        if let Some(t) = webhook.get("timeoutSeconds") {
            let t = t.as_i64().unwrap_or(-1);
            if !(1..=30).contains(&t) {
                return Err(format!(
                    "{path}.timeoutSeconds: Invalid value: {t}: the timeout value must be between 1 and 30 seconds"
                ));
            }
        }
        for (j, condition) in webhook
            .get("matchConditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let expression = condition
                .get("expression")
                .and_then(Value::as_str)
                .unwrap_or_default();
            compile_condition(expression).map_err(|e| {
                format!(
                    "{path}.matchConditions[{j}].expression: Invalid value: {expression:?}: {e}"
                )
            })?;
        }
    }
    Ok(())
}

fn compile_condition(expression: &str) -> Result<cel::Program, String> {
    if expression.trim().is_empty() {
        return Err("expression is required".into());
    }
    let program =
        cel::Program::compile(expression).map_err(|e| format!("compilation failed: {e}"))?;
    let references = program.references();
    for variable in references.variables() {
        if !CEL_VARIABLES.contains(&variable) {
            return Err(format!(
                "undeclared reference to '{variable}' (the simulated cluster provides {})",
                CEL_VARIABLES.join(", ")
            ));
        }
    }
    Ok(program)
}

impl WebhookDispatcher {
    pub fn new(resolve_service: ServiceResolver) -> Self {
        Self { resolve_service }
    }

    /// Runs validating admission for one write over every registered configuration.
    pub async fn admit(
        &self,
        configurations: &[Arc<Value>],
        attributes: &AdmissionAttributes,
    ) -> AdmissionVerdict {
        // The apiserver never sends its own webhook configurations to webhooks.
        if attributes.group == "admissionregistration.k8s.io" {
            return AdmissionVerdict::Allowed {
                warnings: Vec::new(),
                audit_annotations: BTreeMap::new(),
            };
        }
        let mut calls = Vec::new();
        for configuration in configurations {
            for webhook in configuration
                .get("webhooks")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if matches_webhook(webhook, attributes) {
                    calls.push(self.call_if_conditions_hold(webhook, attributes));
                }
            }
        }
        // Called in parallel, as the apiserver does; the first refusal in registration order wins.
        let results = futures::future::join_all(calls).await;
        let mut warnings = Vec::new();
        let mut audit_annotations = BTreeMap::new();
        let mut denial = None;
        for result in results {
            match result {
                CallResult::Skipped => {}
                CallResult::Allowed {
                    name,
                    warnings: w,
                    audit,
                } => {
                    warnings.extend(w);
                    for (k, v) in audit {
                        audit_annotations.insert(format!("{name}/{k}"), v);
                    }
                }
                CallResult::Denied {
                    status,
                    code,
                    warnings: w,
                } => {
                    warnings.extend(w);
                    if denial.is_none() {
                        denial = Some((status, code));
                    }
                }
            }
        }
        match denial {
            Some((status, code)) => AdmissionVerdict::Denied {
                status,
                code,
                warnings,
            },
            None => AdmissionVerdict::Allowed {
                warnings,
                audit_annotations,
            },
        }
    }

    async fn call_if_conditions_hold(
        &self,
        webhook: &Value,
        attributes: &AdmissionAttributes,
    ) -> CallResult {
        let name = webhook
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let fail_open = webhook.get("failurePolicy").and_then(Value::as_str) == Some("Ignore");
        let version = match review_version(webhook) {
            Some(v) => v,
            None => {
                return failure(
                    &name,
                    fail_open,
                    "webhook does not accept v1 or v1beta1 AdmissionReview".into(),
                );
            }
        };
        let request = admission_request(attributes);
        match conditions_hold(webhook, &request, attributes) {
            Ok(true) => {}
            Ok(false) => return CallResult::Skipped,
            Err(err) => {
                return failure(
                    &name,
                    fail_open,
                    format!("failed to evaluate match condition: {err}"),
                );
            }
        }
        if attributes.dry_run {
            let side_effects = webhook
                .get("sideEffects")
                .and_then(Value::as_str)
                .unwrap_or("Unknown");
            if !matches!(side_effects, "None" | "NoneOnDryRun") {
                let message = format!("admission webhook {name:?} does not support dry run");
                return CallResult::Denied {
                    status: status_value(400, "BadRequest", &message, None),
                    code: 400,
                    warnings: Vec::new(),
                };
            }
        }
        let timeout = webhook
            .get("timeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
            .clamp(1, 30);
        let uid = uuid::Uuid::new_v4().to_string();
        let mut request = request;
        request["uid"] = json!(uid);
        let review = json!({"apiVersion": version, "kind": "AdmissionReview", "request": request});
        let outcome = tokio::time::timeout(
            Duration::from_secs(timeout),
            self.post(webhook, &review, timeout),
        )
        .await;
        let response = match outcome {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => {
                return failure(&name, fail_open, format!("failed to call webhook: {err}"));
            }
            Err(_) => {
                return failure(
                    &name,
                    fail_open,
                    format!(
                        "failed to call webhook: Post {:?}: context deadline exceeded",
                        self.display_url(webhook, timeout)
                    ),
                );
            }
        };
        match read_response(&response, &uid) {
            Ok((true, _status, warnings, audit)) => CallResult::Allowed {
                name,
                warnings,
                audit,
            },
            Ok((false, status, warnings, _)) => {
                let (status, code) = denial_status(&name, status);
                CallResult::Denied {
                    status,
                    code,
                    warnings,
                }
            }
            Err(err) => failure(
                &name,
                fail_open,
                format!("received invalid webhook response: {err}"),
            ),
        }
    }

    fn display_url(&self, webhook: &Value, timeout: u64) -> String {
        let client = &webhook["clientConfig"];
        if let Some(url) = client.get("url").and_then(Value::as_str) {
            return url.to_owned();
        }
        let service = &client["service"];
        let port = service.get("port").and_then(Value::as_u64).unwrap_or(443);
        format!(
            "https://{}.{}.svc:{port}{}?timeout={timeout}s",
            service["name"].as_str().unwrap_or_default(),
            service["namespace"].as_str().unwrap_or_default(),
            service.get("path").and_then(Value::as_str).unwrap_or("")
        )
    }

    /// POSTs the review over HTTPS, verifying the server with the caBundle.
    async fn post(&self, webhook: &Value, review: &Value, timeout: u64) -> Result<Value, String> {
        let client = &webhook["clientConfig"];
        let (addr, server_name, path) = if let Some(url) = client.get("url").and_then(Value::as_str)
        {
            let rest = url
                .strip_prefix("https://")
                .ok_or("only https URLs are supported")?;
            let (authority, path) = rest
                .split_once('/')
                .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                    h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                    p.parse::<u16>().map_err(|_| "bad port")?,
                ),
                _ => (authority.to_owned(), 443),
            };
            let addr = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| format!("Post {url:?}: dial tcp: lookup {host}: {e}"))?
                .next()
                .ok_or_else(|| format!("Post {url:?}: dial tcp: lookup {host}: no address"))?;
            (addr, host, path)
        } else {
            let service = &client["service"];
            let name = service["name"].as_str().unwrap_or_default();
            let namespace = service["namespace"].as_str().unwrap_or_default();
            let port = service.get("port").and_then(Value::as_u64).unwrap_or(443) as u16;
            let path = service
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or("/")
                .to_owned();
            let addr = (self.resolve_service)(namespace, name, port)
                .ok_or_else(|| format!("service \"{name}\" not found in namespace {namespace:?} of the simulated cluster"))?;
            (addr, format!("{name}.{namespace}.svc"), path)
        };
        let url = self.display_url(webhook, timeout);
        let roots = root_store(client.get("caBundle").and_then(Value::as_str))?;
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("Post {url:?}: dial tcp {addr}: connect: {e}"))?;
        let name = rustls::pki_types::ServerName::try_from(server_name.clone())
            .map_err(|_| format!("invalid server name {server_name:?}"))?;
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("Post {url:?}: tls: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("Post {url:?}: {e}"))?;
        tokio::spawn(connection);
        let body = serde_json::to_vec(review).map_err(|e| e.to_string())?;
        let uri = format!("{path}?timeout={timeout}s");
        let request = http::Request::post(uri)
            .header(http::header::HOST, server_name)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, */*")
            .body(Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("Post {url:?}: {e}"))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("Post {url:?}: reading the response: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "the server responded with HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&bytes).trim()
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("cannot decode the response: {e}"))
    }
}

enum CallResult {
    Skipped,
    Allowed {
        name: String,
        warnings: Vec<String>,
        audit: BTreeMap<String, String>,
    },
    Denied {
        status: Value,
        code: u16,
        warnings: Vec<String>,
    },
}

/// A call that failed: Ignore lets the request through, Fail refuses it with InternalError.
fn failure(name: &str, fail_open: bool, error: String) -> CallResult {
    if fail_open {
        tracing::warn!(webhook = name, %error, "webhook failed, failurePolicy Ignore: continuing");
        return CallResult::Skipped;
    }
    let message = format!("Internal error occurred: failed calling webhook {name:?}: {error}");
    let details =
        json!({"causes": [{"message": format!("failed calling webhook {name:?}: {error}")}]});
    CallResult::Denied {
        status: status_value(500, "InternalError", &message, Some(details)),
        code: 500,
        warnings: Vec::new(),
    }
}

fn status_value(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    if let Some(details) = details {
        status["details"] = details;
    }
    status
}

/// errors/statuserror.go ToStatusErr.
fn denial_status(name: &str, status: Option<Value>) -> (Value, u16) {
    let mut status = match status {
        Some(Value::Object(map)) => Value::Object(map),
        _ => json!({}),
    };
    let denied_by = format!("admission webhook {name:?} denied the request");
    let code = status.get("code").and_then(Value::as_u64).unwrap_or(0);
    // Below 400 is raised to 400 (statuserror.go); above 599 is no HTTP status at all.
    let code = if (400..=599).contains(&code) {
        code as u16
    } else {
        400
    };
    let message = status
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let reason = status
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let full = if !message.is_empty() {
        format!("{denied_by}: {message}")
    } else if !reason.is_empty() {
        format!("{denied_by}: {reason}")
    } else {
        format!("{denied_by} without explanation")
    };
    status["kind"] = json!("Status");
    status["apiVersion"] = json!("v1");
    status["metadata"] = json!({});
    status["status"] = json!("Failure");
    status["message"] = json!(full);
    status["code"] = json!(code);
    (status, code)
}

type ResponseParts = (bool, Option<Value>, Vec<String>, BTreeMap<String, String>);

fn read_response(review: &Value, uid: &str) -> Result<ResponseParts, String> {
    let response = review
        .get("response")
        .ok_or("webhook response was absent")?;
    let got = response
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if got != uid {
        return Err(format!("expected response.uid={uid:?}, got {got:?}"));
    }
    let allowed = response
        .get("allowed")
        .and_then(Value::as_bool)
        .ok_or("response.allowed is missing")?;
    let warnings = response
        .get("warnings")
        .and_then(Value::as_array)
        .map(|w| {
            w.iter()
                .filter_map(Value::as_str)
                .map(sanitize_warning)
                .collect()
        })
        .unwrap_or_default();
    let audit = response
        .get("auditAnnotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    Ok((allowed, response.get("status").cloned(), warnings, audit))
}

/// The apiserver drops control characters from warnings and truncates long ones.
fn sanitize_warning(text: &str) -> String {
    const MAX: usize = 256;
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() <= MAX {
        return clean;
    }
    let mut end = MAX;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    clean[..end].to_owned()
}

fn root_store(ca_bundle: Option<&str>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let Some(ca) = ca_bundle else {
        return Err("x509: certificate signed by unknown authority (no caBundle)".into());
    };
    let pem = base64::engine::general_purpose::STANDARD
        .decode(ca)
        .map_err(|_| "caBundle is not base64")?;
    let mut reader = std::io::BufReader::new(pem.as_slice());
    for cert in rustls_pemfile::certs(&mut reader) {
        let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
    }
    if roots.is_empty() {
        return Err("caBundle holds no certificate".into());
    }
    Ok(roots)
}

fn review_version(webhook: &Value) -> Option<&'static str> {
    let versions = webhook.get("admissionReviewVersions")?.as_array()?;
    versions
        .iter()
        .filter_map(Value::as_str)
        .find_map(|v| match v {
            "v1" => Some("admission.k8s.io/v1"),
            "v1beta1" => Some("admission.k8s.io/v1beta1"),
            _ => None,
        })
}

/// The `request` of an AdmissionReview (also the CEL `request` variable).
fn admission_request(a: &AdmissionAttributes) -> Value {
    let mut request = json!({
        "kind": {"group": a.kind_group, "version": a.kind_version, "kind": a.kind},
        "resource": {"group": a.group, "version": a.version, "resource": a.resource},
        "requestKind": {"group": a.kind_group, "version": a.kind_version, "kind": a.kind},
        "requestResource": {"group": a.group, "version": a.version, "resource": a.resource},
        "name": a.name,
        "operation": a.operation.as_str(),
        "userInfo": {"username": a.user.username, "uid": a.user.uid, "groups": a.user.groups},
        "object": a.object,
        "oldObject": a.old_object,
        "dryRun": a.dry_run,
        "options": a.options,
    });
    if !a.namespace.is_empty() {
        request["namespace"] = json!(a.namespace);
    }
    if !a.sub_resource.is_empty() {
        request["subResource"] = json!(a.sub_resource);
        request["requestSubResource"] = json!(a.sub_resource);
    }
    request
}

/// All matchConditions true → call; any false → skip; an evaluation error → failure policy.
fn conditions_hold(
    webhook: &Value,
    request: &Value,
    a: &AdmissionAttributes,
) -> Result<bool, String> {
    let Some(conditions) = webhook.get("matchConditions").and_then(Value::as_array) else {
        return Ok(true);
    };
    if conditions.is_empty() {
        return Ok(true);
    }
    let mut context = cel::Context::default();
    context
        .add_variable("request", request)
        .map_err(|e| e.to_string())?;
    context
        .add_variable("object", a.object.clone().unwrap_or(Value::Null))
        .map_err(|e| e.to_string())?;
    context
        .add_variable("oldObject", a.old_object.clone().unwrap_or(Value::Null))
        .map_err(|e| e.to_string())?;
    let mut error = None;
    for condition in conditions {
        let name = condition
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let expression = condition
            .get("expression")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let program = compile_condition(expression)?;
        match program.execute(&context) {
            Ok(cel::Value::Bool(false)) => return Ok(false),
            Ok(cel::Value::Bool(true)) => {}
            Ok(other) => {
                error = Some(format!(
                    "matchCondition {name:?} evaluated to {other:?}, not a bool"
                ))
            }
            Err(e) => error = Some(format!("matchCondition {name:?}: {e}")),
        }
    }
    // As upstream: a false condition skips the webhook even if another one errored.
    match error {
        Some(e) => Err(e),
        None => Ok(true),
    }
}

/// rules, namespaceSelector and objectSelector (predicates/rules and predicates/object).
fn matches_webhook(webhook: &Value, a: &AdmissionAttributes) -> bool {
    let rules = webhook
        .get("rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !rules.iter().any(|rule| rule_matches(rule, a)) {
        return false;
    }
    let namespaced = !a.namespace.is_empty();
    if namespaced
        && let Some(selector) = webhook.get("namespaceSelector")
        && !selector_matches(selector, &a.namespace_labels)
    {
        return false;
    }
    if let Some(selector) = webhook.get("objectSelector") {
        let labels_of = |o: &Option<Value>| -> Option<BTreeMap<String, String>> {
            o.as_ref().map(|o| {
                o.pointer("/metadata/labels")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default()
            })
        };
        let new = labels_of(&a.object);
        let old = labels_of(&a.old_object);
        let any = [new, old]
            .into_iter()
            .flatten()
            .any(|labels| selector_matches(selector, &labels));
        if !any {
            return false;
        }
    }
    true
}

fn strings(value: Option<&Value>) -> Vec<&str> {
    value
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn rule_matches(rule: &Value, a: &AdmissionAttributes) -> bool {
    let has = |field: &str, value: &str| {
        strings(rule.get(field))
            .iter()
            .any(|v| *v == "*" || *v == value)
    };
    if !has("operations", a.operation.as_str())
        || !has("apiGroups", &a.group)
        || !has("apiVersions", &a.version)
    {
        return false;
    }
    let scope = rule.get("scope").and_then(Value::as_str).unwrap_or("*");
    let scope_ok = match scope {
        "Cluster" => a.namespace.is_empty(),
        "Namespaced" => !a.namespace.is_empty(),
        _ => true,
    };
    scope_ok
        && strings(rule.get("resources")).iter().any(|pattern| {
            let (res, sub) = pattern.split_once('/').unwrap_or((pattern, ""));
            let res_ok = res == "*" || res == a.resource;
            let sub_ok = if sub.is_empty() {
                a.sub_resource.is_empty()
            } else {
                sub == "*" || sub == a.sub_resource
            };
            res_ok && sub_ok
        })
}

/// metav1.LabelSelector over a label map; an empty selector matches everything.
pub fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    if let Some(match_labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in match_labels {
            if labels.get(k).map(String::as_str) != v.as_str() {
                return false;
            }
        }
    }
    for expr in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
        let values = strings(expr.get("values"));
        let value = labels.get(key);
        let ok = match expr
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "In" => value.is_some_and(|v| values.contains(&v.as_str())),
            "NotIn" => value.is_none_or(|v| !values.contains(&v.as_str())),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// The simulated apiserver's admission: registered ValidatingWebhookConfigurations, read from
/// the store on every write, called through [`WebhookDispatcher`]. Registration of a
/// configuration the simulation cannot evaluate is refused (422) with the reason.
pub struct WebhookAdmission {
    sim: std::sync::OnceLock<crate::sim::SimHandle>,
    dispatcher: WebhookDispatcher,
}

impl WebhookAdmission {
    pub fn new(resolve_service: ServiceResolver) -> Arc<Self> {
        Arc::new(Self {
            sim: std::sync::OnceLock::new(),
            dispatcher: WebhookDispatcher::new(resolve_service),
        })
    }

    /// Installs the admission into a running sim.
    pub fn install(self: &Arc<Self>, sim: &crate::sim::SimHandle) {
        let _ = self.sim.set(sim.clone());
        sim.set_admission_hook(Some(
            self.clone() as Arc<dyn crate::sim::server::AdmissionHook>
        ));
    }
}

impl crate::sim::server::AdmissionHook for WebhookAdmission {
    fn admit(
        &self,
        request: crate::sim::server::AdmissionRequest,
    ) -> futures::future::BoxFuture<'static, crate::sim::server::AdmissionVerdict> {
        use crate::sim::model::Resource;
        use crate::sim::server::{AdmissionVerdict as Hook, Operation as Op};
        let Some(sim) = self.sim.get().cloned() else {
            return Box::pin(async { Hook::allow() });
        };
        if request.resource == Resource::ValidatingWebhookConfigurations
            && request.subresource.is_none()
        {
            if let Some(object) = &request.object
                && let Err(reason) = validate_configuration(object)
            {
                let message = format!(
                    "ValidatingWebhookConfiguration.admissionregistration.k8s.io {:?} is invalid: {reason}",
                    request.name
                );
                let status = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": message, "reason": "Invalid", "code": 422,
                    "details": {"name": request.name, "group": "admissionregistration.k8s.io", "kind": "ValidatingWebhookConfiguration"},
                });
                return Box::pin(async move {
                    Hook::Deny {
                        status,
                        warnings: Vec::new(),
                    }
                });
            }
            return Box::pin(async { Hook::allow() });
        }
        let configurations = sim.list(Resource::ValidatingWebhookConfigurations, None);
        if configurations.is_empty() {
            return Box::pin(async { Hook::allow() });
        }
        let namespace = request.namespace.clone().unwrap_or_default();
        let mut namespace_labels: BTreeMap<String, String> = if namespace.is_empty() {
            BTreeMap::new()
        } else {
            sim.get(Resource::Namespaces, None, &namespace)
                .and_then(|ns| {
                    ns.pointer("/metadata/labels")
                        .and_then(Value::as_object)
                        .cloned()
                })
                .map(|m| {
                    m.into_iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
                        .collect()
                })
                .unwrap_or_default()
        };
        if !namespace.is_empty() {
            // The apiserver guarantees this label on every namespace.
            namespace_labels.insert("kubernetes.io/metadata.name".into(), namespace.clone());
        }
        let operation = match request.operation {
            Op::Create => AdmissionOperation::Create,
            Op::Update => AdmissionOperation::Update,
            Op::Delete => AdmissionOperation::Delete,
        };
        let options_kind = match request.operation {
            Op::Create => "CreateOptions",
            Op::Update => "UpdateOptions",
            Op::Delete => "DeleteOptions",
        };
        let attributes = AdmissionAttributes {
            operation,
            group: request.group,
            version: request.version,
            resource: request.plural,
            sub_resource: request.subresource.unwrap_or_default(),
            kind_group: request.kind_group,
            kind_version: request.kind_version,
            kind: request.kind,
            namespace,
            name: request.name,
            object: request.object,
            old_object: request.old_object,
            dry_run: request.dry_run,
            user: AdmissionUser {
                username: request.user.username,
                uid: String::new(),
                groups: request.user.groups,
            },
            options: Some(json!({"kind": options_kind, "apiVersion": "meta.k8s.io/v1"})),
            namespace_labels,
        };
        let dispatcher = self.dispatcher.clone();
        Box::pin(async move {
            match dispatcher.admit(&configurations, &attributes).await {
                AdmissionVerdict::Allowed { warnings, .. } => Hook::Allow { warnings },
                AdmissionVerdict::Denied {
                    status, warnings, ..
                } => Hook::Deny { status, warnings },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes() -> AdmissionAttributes {
        AdmissionAttributes {
            operation: AdmissionOperation::Update,
            group: "apps".into(),
            version: "v1".into(),
            resource: "daemonsets".into(),
            sub_resource: String::new(),
            kind_group: "apps".into(),
            kind_version: "v1".into(),
            kind: "DaemonSet".into(),
            namespace: "kube-system".into(),
            name: "cce-cni-node-agent".into(),
            object: Some(
                json!({"metadata": {"name": "cce-cni-node-agent", "labels": {"k8s-app": "cce-cni-node-agent"}}}),
            ),
            old_object: Some(
                json!({"metadata": {"name": "cce-cni-node-agent", "labels": {"k8s-app": "cce-cni-node-agent"}}}),
            ),
            dry_run: false,
            user: AdmissionUser {
                username: "admin".into(),
                uid: String::new(),
                groups: vec!["system:masters".into()],
            },
            options: None,
            namespace_labels: [(
                "kubernetes.io/metadata.name".to_owned(),
                "kube-system".to_owned(),
            )]
            .into(),
        }
    }

    fn webhook(extra: Value) -> Value {
        let mut w = json!({
            "name": "cce-cni-guard.cce.baidubce.com",
            "clientConfig": {"service": {"namespace": "cce-cni-guard", "name": "cce-cni-guard", "path": "/validate"}},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["daemonsets", "deployments"]}],
            "sideEffects": "None",
            "admissionReviewVersions": ["v1", "v1beta1"],
        });
        if let (Some(w), Some(extra)) = (w.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                w.insert(k.clone(), v.clone());
            }
        }
        w
    }

    #[test]
    fn rules_match_operations_groups_and_subresources() {
        let a = attributes();
        assert!(matches_webhook(&webhook(json!({})), &a));
        let mut status = attributes();
        status.sub_resource = "status".into();
        assert!(
            !matches_webhook(&webhook(json!({})), &status),
            "daemonsets does not cover daemonsets/status"
        );
        let all = webhook(
            json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"]}]}),
        );
        assert!(matches_webhook(&all, &status));
        let mut delete = attributes();
        delete.operation = AdmissionOperation::Delete;
        assert!(!matches_webhook(&webhook(json!({})), &delete));
        let mut cm = attributes();
        cm.group = String::new();
        cm.resource = "configmaps".into();
        assert!(!matches_webhook(&webhook(json!({})), &cm));
    }

    #[test]
    fn selectors_match_namespace_and_either_object() {
        let ns = webhook(
            json!({"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["kube-system"]}]}}),
        );
        assert!(matches_webhook(&ns, &attributes()));
        let mut other = attributes();
        other.namespace = "default".into();
        other.namespace_labels = [(
            "kubernetes.io/metadata.name".to_owned(),
            "default".to_owned(),
        )]
        .into();
        assert!(!matches_webhook(&ns, &other));

        let obj =
            webhook(json!({"objectSelector": {"matchLabels": {"k8s-app": "cce-cni-node-agent"}}}));
        let mut relabelled = attributes();
        relabelled.object = Some(json!({"metadata": {"labels": {}}}));
        assert!(
            matches_webhook(&obj, &relabelled),
            "the old object still matches"
        );
        relabelled.old_object = Some(json!({"metadata": {}}));
        assert!(!matches_webhook(&obj, &relabelled));
    }

    #[test]
    fn match_conditions_with_cel() {
        let names = webhook(json!({"matchConditions": [{"name": "guarded", "expression":
            "request.namespace == 'kube-system' && request.name in ['cce-cni-node-agent', 'cce-eni-ipam']"}]}));
        let a = attributes();
        let request = admission_request(&a);
        assert_eq!(conditions_hold(&names, &request, &a), Ok(true));
        let mut other = attributes();
        other.name = "cce-ip-masq-agent".into();
        assert_eq!(
            conditions_hold(&names, &admission_request(&other), &other),
            Ok(false)
        );
        let object = webhook(
            json!({"matchConditions": [{"name": "o", "expression": "object.metadata.labels['k8s-app'] == 'cce-cni-node-agent'"}]}),
        );
        assert_eq!(conditions_hold(&object, &request, &a), Ok(true));
    }

    #[test]
    fn registration_rejects_what_is_not_supported_with_a_clear_error() {
        validate_configuration(&json!({"webhooks": [webhook(json!({}))]})).unwrap();
        for (extra, needle) in [
            (
                json!({"matchConditions": [{"name": "a", "expression": "authorizer.group('apps').check('get')"}]}),
                "undeclared reference to 'authorizer'",
            ),
            (
                json!({"matchConditions": [{"name": "a", "expression": "request.name =="}]}),
                "compilation failed",
            ),
            (json!({"sideEffects": "Some"}), "sideEffects"),
            (json!({"timeoutSeconds": 31}), "between 1 and 30"),
            (json!({"failurePolicy": "Sometimes"}), "failurePolicy"),
            (
                json!({"admissionReviewVersions": []}),
                "admissionReviewVersions",
            ),
            (
                json!({"clientConfig": {"url": "http://127.0.0.1:1/validate"}}),
                "'https' is the only allowed URL scheme",
            ),
        ] {
            let err =
                validate_configuration(&json!({"webhooks": [webhook(extra.clone())]})).unwrap_err();
            assert!(err.contains(needle), "{extra}: {err}");
        }
    }

    #[test]
    fn denials_are_shaped_as_the_apiserver_shapes_them() {
        let name = "cce-cni-guard.cce.baidubce.com";
        let (status, code) = denial_status(
            name,
            Some(
                json!({"code": 403, "reason": "Forbidden", "message": "images must be consistent"}),
            ),
        );
        assert_eq!(code, 403);
        assert_eq!(
            status["message"],
            "admission webhook \"cce-cni-guard.cce.baidubce.com\" denied the request: images must be consistent"
        );
        assert_eq!(status["reason"], "Forbidden");
        assert_eq!(status["status"], "Failure");
        let (status, code) = denial_status(name, Some(json!({"code": 200})));
        assert_eq!(code, 400);
        assert_eq!(
            status["message"],
            "admission webhook \"cce-cni-guard.cce.baidubce.com\" denied the request without explanation"
        );
        let (status, _) = denial_status(name, Some(json!({"reason": "NotPatch"})));
        assert_eq!(
            status["message"],
            "admission webhook \"cce-cni-guard.cce.baidubce.com\" denied the request: NotPatch"
        );
    }

    #[tokio::test]
    async fn an_unreachable_webhook_fails_closed_or_open_by_policy() {
        crate::install_crypto_provider();
        let dispatcher = WebhookDispatcher::new(Arc::new(|_: &str, _: &str, _: u16| {
            Some(SocketAddr::from(([127, 0, 0, 1], 9)))
        }));
        let ca = base64::engine::general_purpose::STANDARD.encode("not pem");
        let closed = Arc::new(
            json!({"webhooks": [webhook(json!({"timeoutSeconds": 2, "clientConfig": {"service": {"namespace": "g", "name": "g"}, "caBundle": ca}}))]}),
        );
        match dispatcher.admit(&[closed], &attributes()).await {
            AdmissionVerdict::Denied { code, status, .. } => {
                assert_eq!(code, 500);
                assert_eq!(status["reason"], "InternalError");
                let message = status["message"].as_str().unwrap();
                assert!(message.starts_with("Internal error occurred: failed calling webhook \"cce-cni-guard.cce.baidubce.com\""), "{message}");
            }
            other => panic!("expected a denial, got {other:?}"),
        }
        let open = Arc::new(
            json!({"webhooks": [webhook(json!({"failurePolicy": "Ignore", "timeoutSeconds": 2}))]}),
        );
        assert!(matches!(
            dispatcher.admit(&[open], &attributes()).await,
            AdmissionVerdict::Allowed { .. }
        ));
        let mut dry = attributes();
        dry.dry_run = true;
        let unknown = Arc::new(json!({"webhooks": [webhook(json!({"sideEffects": "Unknown"}))]}));
        match dispatcher.admit(&[unknown], &dry).await {
            AdmissionVerdict::Denied { code, status, .. } => {
                assert_eq!(code, 400);
                assert!(
                    status["message"]
                        .as_str()
                        .unwrap()
                        .contains("does not support dry run")
                );
            }
            other => panic!("expected a denial, got {other:?}"),
        }
    }
}
