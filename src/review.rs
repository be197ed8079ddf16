//! One AdmissionReview in, one AdmissionReview out: the webhook's `POST /validate` and the
//! offline `review` command share this, so they answer byte for byte the same.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::response::StatusSummary;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::policy::{
    Config, Decision, Operation, PodTemplateImages, Request, SiblingLookup, TemplateError,
    UserIdentity, Verdict,
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

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(borrow)]
    request: Option<&'a RawValue>,
}

/// The few fields that decide whether a request is guarded at all; read first, so that an
/// object we cannot decode is only refused when it is one we guard.
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

#[derive(Deserialize, Default)]
#[serde(default)]
struct HeaderUser {
    username: String,
    groups: Vec<String>,
}

/// Judges one AdmissionReview body.
pub fn review(body: &[u8], config: &Config, siblings: &dyn SiblingLookup) -> ReviewOutcome {
    let envelope: Envelope<'_> = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(err) => {
            return bad_request(
                format!("the body is not an AdmissionReview: {err}"),
                Default::default(),
            );
        }
    };
    if envelope.kind != "AdmissionReview"
        || !SUPPORTED_VERSIONS.contains(&envelope.api_version.as_str())
    {
        return bad_request(
            format!(
                "expected kind AdmissionReview in {} or {}, got kind {:?} apiVersion {:?}",
                SUPPORTED_VERSIONS[0], SUPPORTED_VERSIONS[1], envelope.kind, envelope.api_version
            ),
            Default::default(),
        );
    }
    let Some(raw_request) = envelope.request else {
        return bad_request(
            "the AdmissionReview has no request".into(),
            Default::default(),
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
    let summary = RequestSummary {
        uid: header.uid.clone(),
        api_version: envelope.api_version.clone(),
        operation: header.operation.clone(),
        kind: header.kind.kind.clone(),
        namespace: header.namespace.clone().unwrap_or_default(),
        name: header.name.clone(),
        sub_resource: header.sub_resource.clone(),
        username: header.user_info.username.clone(),
        groups: header.user_info.groups.clone(),
        dry_run: header.dry_run.unwrap_or(false),
    };
    if header.uid.is_empty() {
        return bad_request("the AdmissionReview request has no uid".into(), summary);
    }
    let types = kube::core::TypeMeta {
        api_version: envelope.api_version,
        kind: envelope.kind,
    };

    let mut request: AdmissionRequest<DynamicObject> = match serde_json::from_str(raw_request.get())
    {
        Ok(r) => r,
        Err(err) => return undecodable(&header, types, summary, config, siblings, err.to_string()),
    };
    request.types = types;

    let object = request.object.as_ref().map(read_template);
    let old_object = request.old_object.as_ref().map(read_template);
    let name = if request.name.is_empty() {
        request
            .object
            .as_ref()
            .and_then(|o| o.metadata.name.clone())
            .unwrap_or_default()
    } else {
        request.name.clone()
    };
    let user = UserIdentity {
        username: request.user_info.username.clone().unwrap_or_default(),
        groups: request.user_info.groups.clone().unwrap_or_default(),
    };
    let policy_request = Request {
        operation: operation(&request.operation),
        group: &request.kind.group,
        kind: &request.kind.kind,
        sub_resource: request.sub_resource.as_deref(),
        namespace: request.namespace.as_deref().unwrap_or_default(),
        name: &name,
        object: object.as_ref().map(|r| r.as_ref()),
        old_object: old_object.as_ref().map(|r| r.as_ref()),
        user: &user,
    };
    let decision = crate::policy::decide(&policy_request, siblings, config);
    let response = respond(AdmissionResponse::from(&request), &decision);
    finish(response, decision, RequestSummary { name, ..summary }, None)
}

fn read_template(object: &DynamicObject) -> Result<PodTemplateImages, TemplateError> {
    PodTemplateImages::from_workload(&object.data)
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

/// The request's envelope was fine but its objects were not: refuse if it is guarded.
fn undecodable(
    header: &Header,
    types: kube::core::TypeMeta,
    summary: RequestSummary,
    config: &Config,
    siblings: &dyn SiblingLookup,
    reason: String,
) -> ReviewOutcome {
    let error = TemplateError::Unreadable(reason.clone());
    let user = UserIdentity {
        username: header.user_info.username.clone(),
        groups: header.user_info.groups.clone(),
    };
    let op = match header.operation.as_str() {
        "CREATE" => Operation::Create,
        "UPDATE" => Operation::Update,
        "DELETE" => Operation::Delete,
        _ => Operation::Connect,
    };
    let request = Request {
        operation: op,
        group: &header.kind.group,
        kind: &header.kind.kind,
        sub_resource: header.sub_resource.as_deref(),
        namespace: header.namespace.as_deref().unwrap_or_default(),
        name: &header.name,
        object: Some(Err(&error)),
        old_object: None,
        user: &user,
    };
    let decision = crate::policy::decide(&request, siblings, config);
    let mut response = AdmissionResponse::invalid("");
    response.types = types;
    response.uid = header.uid.clone();
    response.allowed = true;
    response.result = Default::default();
    let response = respond(response, &decision);
    finish(response, decision, summary, Some(reason))
}

/// Fills the kube response from the decision: denial status, warnings, audit annotations.
fn respond(mut response: AdmissionResponse, decision: &Decision) -> AdmissionResponse {
    if !decision.allowed() {
        response = response.deny(&decision.message);
        response.result.status = Some(StatusSummary::Failure);
        response.result.code = 403;
        response.result.reason = "Forbidden".into();
    }
    if !decision.warnings.is_empty() {
        response.warnings = Some(decision.warnings.clone());
    }
    response.audit_annotations = decision
        .audit_annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    response
}

fn finish(
    response: AdmissionResponse,
    decision: Decision,
    summary: RequestSummary,
    error: Option<String>,
) -> ReviewOutcome {
    let review: AdmissionReview<DynamicObject> = response.into_review();
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
