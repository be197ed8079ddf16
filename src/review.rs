//! One AdmissionReview in, one AdmissionReview out: the webhook's `POST /validate` and the
//! offline `review` command share this, so they answer byte for byte the same.
//!
//! The request is decoded in one pass into a view that keeps only what the policy reads (the
//! request's header, and of each object its name, namespace, containers' names and images):
//! managedFields, status, options and the rest are checked as JSON and skipped without being
//! built, which is where the time of a 20 KB review would otherwise go. The response is
//! written straight from the decision, keys in sorted order, so `serve` and `review` answer
//! byte for byte the same.

use std::collections::BTreeMap;

use kube::core::admission::Operation as AdmissionOperation;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::policy::{
    Config, ContainerImage, Decision, Labels, Operation, PodTemplateImages, Request, SiblingLookup,
    TemplateError, UserIdentity, Verdict, labels_from_json,
};

/// The AdmissionReview versions we answer, each in its own version.
const SUPPORTED_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// What one review produced.
#[derive(Debug, Clone)]
pub struct ReviewOutcome {
    /// 200 with an AdmissionReview, or 400 when the body is not an AdmissionReview at all.
    pub http_status: u16,
    /// JSON: the response AdmissionReview, or for a 400 a short `{"error": …}`.
    pub body: Vec<u8>,
    /// The decision, when the request could be judged (a 400 has none).
    pub decision: Option<Decision>,
    /// Who asked and about what, for logs.
    pub summary: RequestSummary,
    /// Why the body was refused (400), or why a guarded object could not be read.
    pub error: Option<String>,
}

impl ReviewOutcome {
    pub fn verdict(&self) -> Option<Verdict> {
        self.decision.as_ref().map(|d| d.verdict)
    }
}

/// The parts of a request that logs and metrics name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestSummary {
    pub uid: String,
    pub api_version: String,
    pub operation: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub sub_resource: Option<String>,
    pub username: String,
    pub groups: Vec<String>,
    pub dry_run: bool,
}

impl RequestSummary {
    fn user(&self) -> UserIdentity {
        UserIdentity {
            username: self.username.clone(),
            groups: self.groups.clone(),
        }
    }
}

/// A workload as the policy sees it: identity and pod-template images, nothing else.
#[derive(Debug, Clone)]
pub struct TemplateView {
    name: Option<String>,
    labels: Labels,
    template: Result<PodTemplateImages, TemplateError>,
}

impl<'de> Deserialize<'de> for TemplateView {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let view = ObjectView::deserialize(deserializer)?;
        Ok(Self {
            name: view.metadata.name,
            labels: view
                .metadata
                .labels
                .as_ref()
                .map(labels_from_json)
                .unwrap_or_default(),
            template: view.spec.into_template(),
        })
    }
}

#[derive(Deserialize)]
struct ObjectView {
    #[serde(default)]
    metadata: MetaView,
    #[serde(default)]
    spec: Option<SpecView>,
}

#[derive(Deserialize, Default)]
struct MetaView {
    #[serde(default)]
    name: Option<String>,
    /// Read as `check` reads a manifest's labels (a few entries: building them is cheap).
    #[serde(default)]
    labels: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct SpecView {
    #[serde(default)]
    template: Option<PodTemplateView>,
}

#[derive(Deserialize)]
struct PodTemplateView {
    #[serde(default)]
    spec: Option<PodSpecView>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpecView {
    #[serde(default)]
    containers: Option<Vec<ContainerView>>,
    #[serde(default)]
    init_containers: Option<Vec<ContainerView>>,
}

#[derive(Deserialize)]
struct ContainerView {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    image: Option<String>,
}

trait IntoTemplate {
    fn into_template(self) -> Result<PodTemplateImages, TemplateError>;
}

impl IntoTemplate for Option<SpecView> {
    fn into_template(self) -> Result<PodTemplateImages, TemplateError> {
        let spec = self.ok_or(TemplateError::Missing("spec"))?;
        let template = spec
            .template
            .ok_or(TemplateError::Missing("spec.template"))?;
        let pod = template
            .spec
            .ok_or(TemplateError::Missing("spec.template.spec"))?;
        let mut containers = Vec::with_capacity(2);
        for (list, field, init) in [
            (
                pod.init_containers,
                "spec.template.spec.initContainers",
                true,
            ),
            (pod.containers, "spec.template.spec.containers", false),
        ] {
            for (index, c) in list.into_iter().flatten().enumerate() {
                let name = c
                    .name
                    .filter(|n| !n.is_empty())
                    .ok_or(TemplateError::Unnamed { list: field, index })?;
                containers.push(ContainerImage {
                    name,
                    image: c.image.unwrap_or_default(),
                    init,
                });
            }
        }
        Ok(PodTemplateImages { containers })
    }
}

/// The whole review in one pass.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<RequestView>,
}

/// The request as the policy reads it. Strict where the policy depends on it (an unknown
/// operation or a misshapen object fails the fast path and is judged by `review_slow`),
/// and blind to the rest (`options`, `resource`, `userInfo.extra`, …).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestView {
    #[serde(default)]
    uid: String,
    kind: HeaderKind,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: AdmissionOperation,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    user_info: UserView,
    #[serde(default)]
    object: Option<TemplateView>,
    #[serde(default)]
    old_object: Option<TemplateView>,
    #[serde(default)]
    dry_run: Option<bool>,
}

#[derive(Deserialize, Default)]
struct UserView {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    groups: Option<Vec<String>>,
}

/// The envelope again, lazily, when the one-pass decode failed and we need to say why.
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(borrow)]
    request: Option<&'a RawValue>,
}

/// The few fields that decide whether a request is guarded at all, read when the objects
/// cannot be: an object we cannot decode is only refused when it is one we guard.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Header {
    uid: String,
    kind: HeaderKind,
    name: String,
    namespace: Option<String>,
    operation: String,
    sub_resource: Option<String>,
    user_info: HeaderUser,
    dry_run: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HeaderKind {
    group: String,
    kind: String,
}

/// Strict in types (a `null` username is unreadable), lenient in presence.
#[derive(Deserialize, Default)]
#[serde(default)]
struct HeaderUser {
    username: String,
    groups: Vec<String>,
}

/// Judges one AdmissionReview body.
pub fn review(body: &[u8], config: &Config, siblings: &dyn SiblingLookup) -> ReviewOutcome {
    match serde_json::from_slice::<Envelope>(body) {
        Ok(envelope) => judge(envelope, config, siblings),
        Err(_) => review_slow(body, config, siblings),
    }
}

fn check_envelope(api_version: &str, kind: &str) -> Result<(), String> {
    if kind != "AdmissionReview" || !SUPPORTED_VERSIONS.contains(&api_version) {
        return Err(format!(
            "expected kind AdmissionReview in {} or {}, got kind {kind:?} apiVersion {api_version:?}",
            SUPPORTED_VERSIONS[0], SUPPORTED_VERSIONS[1]
        ));
    }
    Ok(())
}

fn judge(envelope: Envelope, config: &Config, siblings: &dyn SiblingLookup) -> ReviewOutcome {
    if let Err(reason) = check_envelope(&envelope.api_version, &envelope.kind) {
        return bad_request(reason, RequestSummary::default());
    }
    let Some(request) = envelope.request else {
        return bad_request(
            "the AdmissionReview has no request".into(),
            RequestSummary::default(),
        );
    };
    let name = if request.name.is_empty() {
        request
            .object
            .as_ref()
            .and_then(|o| o.name.clone())
            .unwrap_or_default()
    } else {
        request.name
    };
    let summary = RequestSummary {
        uid: request.uid,
        api_version: envelope.api_version,
        operation: operation_name(&request.operation).to_owned(),
        kind: request.kind.kind,
        namespace: request.namespace.unwrap_or_default(),
        name,
        sub_resource: request.sub_resource,
        username: request.user_info.username.unwrap_or_default(),
        groups: request.user_info.groups.unwrap_or_default(),
        dry_run: request.dry_run.unwrap_or(false),
    };
    if summary.uid.is_empty() {
        return bad_request("the AdmissionReview request has no uid".into(), summary);
    }
    let user = summary.user();
    let policy_request = Request {
        operation: operation(&request.operation),
        group: &request.kind.group,
        kind: &summary.kind,
        sub_resource: summary.sub_resource.as_deref(),
        namespace: &summary.namespace,
        name: &summary.name,
        object: request.object.as_ref().map(|o| o.template.as_ref()),
        old_object: request.old_object.as_ref().map(|o| o.template.as_ref()),
        labels: request.object.as_ref().map(|o| &o.labels),
        old_labels: request.old_object.as_ref().map(|o| &o.labels),
        user: &user,
    };
    let decision = crate::policy::decide(&policy_request, siblings, config);
    finish(decision, summary, None)
}

/// The one-pass decode failed: find out whether it is not an AdmissionReview at all (400) or
/// an AdmissionReview whose objects cannot be read (refused if guarded, with the reason).
fn review_slow(body: &[u8], config: &Config, siblings: &dyn SiblingLookup) -> ReviewOutcome {
    let envelope: RawEnvelope<'_> = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(err) => {
            return bad_request(
                format!("the body is not an AdmissionReview: {err}"),
                Default::default(),
            );
        }
    };
    if let Err(reason) = check_envelope(&envelope.api_version, &envelope.kind) {
        return bad_request(reason, RequestSummary::default());
    }
    let Some(raw_request) = envelope.request else {
        return bad_request(
            "the AdmissionReview has no request".into(),
            RequestSummary::default(),
        );
    };
    let header: Header = match serde_json::from_str(raw_request.get()) {
        Ok(h) => h,
        Err(err) => {
            return bad_request(
                format!("the AdmissionReview request cannot be read: {err}"),
                Default::default(),
            );
        }
    };
    let operation = match header.operation.as_str() {
        "CREATE" => Operation::Create,
        "UPDATE" => Operation::Update,
        "DELETE" => Operation::Delete,
        _ => Operation::Connect,
    };
    let summary = RequestSummary {
        uid: header.uid,
        api_version: envelope.api_version,
        operation: header.operation,
        kind: header.kind.kind,
        namespace: header.namespace.unwrap_or_default(),
        name: header.name,
        sub_resource: header.sub_resource,
        username: header.user_info.username,
        groups: header.user_info.groups,
        dry_run: header.dry_run.unwrap_or(false),
    };
    if summary.uid.is_empty() {
        return bad_request("the AdmissionReview request has no uid".into(), summary);
    }
    let mut json = serde_json::Deserializer::from_str(raw_request.get());
    let reason = match serde_path_to_error::deserialize::<_, RequestView>(&mut json) {
        Err(err) => format!("request.{}: {}", err.path(), err.inner()),
        // Decodes alone, so the envelope around it was at fault.
        Ok(_) => "the AdmissionReview cannot be read".to_owned(),
    };
    let error = TemplateError::Unreadable(reason.clone());
    let user = summary.user();
    let request = Request {
        operation,
        group: &header.kind.group,
        kind: &summary.kind,
        sub_resource: summary.sub_resource.as_deref(),
        namespace: &summary.namespace,
        name: &summary.name,
        object: Some(Err(&error)),
        old_object: None,
        labels: None,
        old_labels: None,
        user: &user,
    };
    let decision = crate::policy::decide(&request, siblings, config);
    finish(decision, summary, Some(reason))
}

fn operation(op: &kube::core::admission::Operation) -> Operation {
    use kube::core::admission::Operation as K;
    match op {
        K::Create => Operation::Create,
        K::Update => Operation::Update,
        K::Delete => Operation::Delete,
        K::Connect => Operation::Connect,
    }
}

fn operation_name(op: &kube::core::admission::Operation) -> &'static str {
    use kube::core::admission::Operation as K;
    match op {
        K::Create => "CREATE",
        K::Update => "UPDATE",
        K::Delete => "DELETE",
        K::Connect => "CONNECT",
    }
}

/// The response AdmissionReview. Fields are declared in sorted order, as kube's types
/// encoded through a sorted map would put them, so the bytes do not depend on the encoder.
#[derive(Serialize)]
struct ReviewOut<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    allowed: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: &'a BTreeMap<String, String>,
    status: StatusOut<'a>,
    uid: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

/// A metav1.Status: empty when allowed, 403 Forbidden with the message when denied.
#[derive(Serialize, Default)]
struct StatusOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
}

fn finish(decision: Decision, summary: RequestSummary, error: Option<String>) -> ReviewOutcome {
    let allowed = decision.allowed();
    let status = if allowed {
        StatusOut::default()
    } else {
        StatusOut {
            code: Some(403),
            message: Some(&decision.message),
            reason: Some("Forbidden"),
            status: Some("Failure"),
        }
    };
    let review = ReviewOut {
        api_version: &summary.api_version,
        kind: "AdmissionReview",
        response: ResponseOut {
            allowed,
            audit_annotations: &decision.audit_annotations,
            status,
            uid: &summary.uid,
            warnings: &decision.warnings,
        },
    };
    match serde_json::to_vec(&review) {
        Ok(body) => ReviewOutcome {
            http_status: 200,
            body,
            decision: Some(decision),
            summary,
            error,
        },
        Err(err) => bad_request(format!("cannot encode the response: {err}"), summary),
    }
}

fn bad_request(reason: String, summary: RequestSummary) -> ReviewOutcome {
    let body = serde_json::to_vec(&serde_json::json!({ "error": reason })).unwrap_or_default();
    ReviewOutcome {
        http_status: 400,
        body,
        decision: None,
        summary,
        error: Some(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::NoSiblings;

    const REVIEW: &str = include_str!("../tests/fixtures/review-daemonset-update.json");

    #[test]
    fn the_realistic_review_is_read_in_one_pass() {
        let envelope: Envelope = serde_json::from_str(REVIEW).unwrap();
        let request = envelope.request.unwrap();
        let new = request.object.unwrap().template.unwrap();
        assert_eq!(new.containers.len(), 2);
        assert!(new.containers.iter().all(|c| c.image.ends_with(":v1.9.4")));
        let outcome = review(REVIEW.as_bytes(), &Config::default(), &NoSiblings);
        assert_eq!(outcome.http_status, 200);
        assert_eq!(outcome.verdict(), Some(Verdict::Allowed));
        assert_eq!(outcome.summary.username, "kubernetes-admin");
    }

    #[test]
    fn a_type_error_deep_in_the_object_names_its_path() {
        let mut review_json: serde_json::Value = serde_json::from_str(REVIEW).unwrap();
        review_json["request"]["object"]["spec"]["template"]["spec"]["containers"] =
            serde_json::json!({"x": 1});
        let body = serde_json::to_vec(&review_json).unwrap();
        let outcome = review(&body, &Config::default(), &NoSiblings);
        assert_eq!(outcome.http_status, 200);
        assert_eq!(outcome.verdict(), Some(Verdict::Denied));
        let error = outcome.error.unwrap();
        assert!(
            error.contains("request.object.spec.template.spec.containers"),
            "{error}"
        );
        let response: serde_json::Value = serde_json::from_slice(&outcome.body).unwrap();
        assert_eq!(
            response["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
    }

    #[test]
    fn answers_are_byte_for_byte_stable() {
        let mut review_json: serde_json::Value = serde_json::from_str(REVIEW).unwrap();
        let minor = "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.10.0";
        review_json["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] =
            minor.into();
        review_json["request"]["object"]["spec"]["template"]["spec"]["initContainers"][0]["image"] =
            minor.into();
        review_json["request"]["userInfo"]["username"] = "helm-operator".into();
        let body = serde_json::to_vec(&review_json).unwrap();
        let config = Config {
            exempt: crate::policy::Exemptions {
                users: ["helm-operator".to_owned()].into(),
                ..Default::default()
            },
            ..Config::default()
        };
        let first = review(&body, &config, &NoSiblings);
        assert_eq!(first.verdict(), Some(Verdict::Exempted));
        assert!(first.decision.as_ref().unwrap().audit_annotations.len() >= 3);
        for _ in 0..20 {
            assert_eq!(review(&body, &config, &NoSiblings).body, first.body);
        }
    }

    #[test]
    fn an_unreadable_object_that_is_not_guarded_is_allowed() {
        let mut review_json: serde_json::Value = serde_json::from_str(REVIEW).unwrap();
        review_json["request"]["name"] = serde_json::json!("cce-ip-masq-agent");
        review_json["request"]["object"]["spec"] = serde_json::json!("nonsense");
        let body = serde_json::to_vec(&review_json).unwrap();
        let outcome = review(&body, &Config::default(), &NoSiblings);
        assert_eq!(outcome.verdict(), Some(Verdict::NotGuarded));
    }
}
