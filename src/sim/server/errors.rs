//! `metav1.Status` errors shaped exactly like the apiserver's (`k8s.io/apimachinery/pkg/api/errors`).

use serde_json::{Map, Value, json};

use super::resources::ApiResource;

/// An API error answered as a `kind: Status` body with the same HTTP code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    /// Empty for errors the apiserver sends without a reason.
    pub reason: String,
    pub message: String,
    pub details: Option<Box<Value>>,
    pub retry_after_seconds: Option<u64>,
    /// Admission warnings to send along (`Warning:` headers).
    pub warnings: Vec<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

fn details(name: &str, resource: &ApiResource, kind: Option<&str>) -> Value {
    let mut map = Map::new();
    if !name.is_empty() {
        map.insert("name".into(), json!(name));
    }
    if !resource.group.is_empty() {
        map.insert("group".into(), json!(resource.group));
    }
    map.insert("kind".into(), json!(kind.unwrap_or(resource.plural)));
    Value::Object(map)
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
            retry_after_seconds: None,
            warnings: Vec::new(),
        }
    }

    pub fn not_found(resource: &ApiResource, name: &str) -> Self {
        Self {
            details: Some(Box::new(details(name, resource, None))),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", resource.qualified()),
            )
        }
    }

    /// A namespace that does not exist, as create in it answers.
    pub fn namespace_not_found(name: &str) -> Self {
        Self {
            details: Some(Box::new(json!({"name": name, "kind": "namespaces"}))),
            ..Self::new(404, "NotFound", format!("namespaces \"{name}\" not found"))
        }
    }

    /// An unknown path or resource type.
    pub fn no_such_resource() -> Self {
        Self {
            details: Some(Box::new(json!({}))),
            ..Self::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
    }

    pub fn already_exists(resource: &ApiResource, name: &str) -> Self {
        Self {
            details: Some(Box::new(details(name, resource, None))),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", resource.qualified()),
            )
        }
    }

    /// A stale `metadata.resourceVersion` on an update.
    pub fn conflict(resource: &ApiResource, name: &str) -> Self {
        Self::conflict_because(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn conflict_because(resource: &ApiResource, name: &str, why: &str) -> Self {
        Self {
            details: Some(Box::new(details(name, resource, None))),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": {why}",
                    resource.qualified()
                ),
            )
        }
    }

    /// A 422 with one field cause, as validation answers.
    pub fn invalid(resource: &ApiResource, name: &str, field: &str, detail: &str) -> Self {
        let mut d = details(name, resource, Some(resource.kind));
        if let Value::Object(map) = &mut d {
            map.insert(
                "causes".into(),
                json!([{"reason": "FieldValueInvalid", "message": detail, "field": field}]),
            );
        }
        Self {
            details: Some(Box::new(d)),
            ..Self::new(
                422,
                "Invalid",
                format!(
                    "{} \"{name}\" is invalid: {field}: {detail}",
                    resource.qualified_kind()
                ),
            )
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed() -> Self {
        Self {
            details: Some(Box::new(json!({}))),
            ..Self::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        }
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
            ),
        )
    }

    pub fn not_acceptable() -> Self {
        Self::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml",
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    pub fn too_many_requests() -> Self {
        Self {
            details: Some(Box::new(json!({"retryAfterSeconds": 1}))),
            retry_after_seconds: Some(1),
            ..Self::new(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.",
            )
        }
    }

    pub fn internal(message: &str) -> Self {
        Self {
            details: Some(Box::new(json!({"causes": [{"message": message}]}))),
            ..Self::new(
                500,
                "InternalError",
                format!("Internal error occurred: {message}"),
            )
        }
    }

    /// A watch from a resourceVersion older than the kept history.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// An error with a given HTTP code and the apiserver's generic reason for it.
    pub fn with_code(code: u16, message: impl Into<String>) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Gone",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "",
        };
        let mut err = Self::new(code, reason, message);
        if code == 429 {
            err.retry_after_seconds = Some(1);
            err.details = Some(Box::new(json!({"retryAfterSeconds": 1})));
        }
        err
    }

    /// The `kind: Status` body.
    pub fn status(&self) -> Value {
        let mut map = Map::new();
        map.insert("kind".into(), json!("Status"));
        map.insert("apiVersion".into(), json!("v1"));
        map.insert("metadata".into(), json!({}));
        map.insert("status".into(), json!("Failure"));
        map.insert("message".into(), json!(self.message));
        if !self.reason.is_empty() {
            map.insert("reason".into(), json!(self.reason));
        }
        if let Some(details) = &self.details {
            map.insert("details".into(), (**details).clone());
        }
        map.insert("code".into(), json!(self.code));
        Value::Object(map)
    }

    /// Builds an error from a `kind: Status` value (e.g. an admission denial).
    pub fn from_status(status: &Value) -> Self {
        let code = status
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| *c >= 400 && *c < 600)
            .unwrap_or(400);
        Self {
            code,
            reason: status
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            message: status
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            details: status.get("details").cloned().map(Box::new),
            retry_after_seconds: None,
            warnings: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::resources::lookup;
    use super::*;

    #[test]
    fn not_found_names_the_group() {
        let deploy = lookup("apps", "v1", "deployments").unwrap();
        assert_eq!(
            ApiError::not_found(deploy, "x").status(),
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                "message":"deployments.apps \"x\" not found","reason":"NotFound",
                "details":{"name":"x","group":"apps","kind":"deployments"},"code":404})
        );
        let cm = lookup("", "v1", "configmaps").unwrap();
        assert_eq!(
            ApiError::not_found(cm, "y").status()["details"],
            json!({"name":"y","kind":"configmaps"})
        );
    }

    #[test]
    fn conflict_message_is_the_apiservers() {
        let deploy = lookup("apps", "v1", "deployments").unwrap();
        assert_eq!(
            ApiError::conflict(deploy, "cce-eni-ipam").message,
            "Operation cannot be fulfilled on deployments.apps \"cce-eni-ipam\": the object has been modified; please apply your changes to the latest version and try again"
        );
    }

    #[test]
    fn denial_codes_below_400_become_400() {
        let err = ApiError::from_status(&json!({"code": 200, "message": "no"}));
        assert_eq!(err.code, 400);
        assert_eq!(err.status().get("reason"), None);
    }
}
