//! The admission seam: a hook the server calls on every create, update and delete (objects and
//! subresources alike), after defaulting and before storage, as the apiserver calls webhooks.

use futures::future::BoxFuture;
use serde_json::Value;

use super::super::model::Resource;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    /// `CREATE`, `UPDATE`, `DELETE`, as AdmissionReview spells them.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub groups: Vec<String>,
}

/// What is being admitted.
#[derive(Debug, Clone)]
pub struct AdmissionRequest {
    pub operation: Operation,
    pub resource: Resource,
    /// API group, version and plural of the endpoint called, e.g. `apps`, `v1`, `deployments`.
    pub group: String,
    pub version: String,
    pub plural: String,
    /// The object's kind as sent (`Scale` for `/scale`).
    pub kind: String,
    pub kind_group: String,
    pub kind_version: String,
    /// `status`, `scale`, or `None` for the object itself.
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    /// The stored object before the change (update, delete).
    pub old_object: Option<Value>,
    /// The object that would be stored (create, update).
    pub object: Option<Value>,
    pub dry_run: bool,
    pub user: UserInfo,
}

/// A hook's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum AdmissionVerdict {
    Allow {
        warnings: Vec<String>,
    },
    /// `status` is a `kind: Status`; its `code` (at least 400) is the HTTP answer.
    Deny {
        status: Value,
        warnings: Vec<String>,
    },
}

impl AdmissionVerdict {
    pub fn allow() -> Self {
        Self::Allow {
            warnings: Vec::new(),
        }
    }
}

/// Called on every write; a later part registers ValidatingWebhookConfigurations through it.
pub trait AdmissionHook: Send + Sync + 'static {
    fn admit(&self, request: AdmissionRequest) -> BoxFuture<'static, AdmissionVerdict>;
}
