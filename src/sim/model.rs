//! The vocabulary shared by the sim's API server and its pure controllers.
//!
//! The server takes a [`Snapshot`] of the objects the controllers read, calls
//! [`crate::sim::controllers::reconcile`], and applies the returned [`Action`]s through the
//! same storage path as API writes (resourceVersion, generation, watch events), so a
//! controller write looks to clients exactly like one made by a real controller.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

/// A stored object as JSON, shared without copying between the store, watchers and controllers.
pub type Object = Arc<Value>;

/// The resources the simulated cluster serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Namespaces,
    Nodes,
    Pods,
    ConfigMaps,
    Services,
    Events,
    Leases,
    DaemonSets,
    Deployments,
    ReplicaSets,
    ControllerRevisions,
    ValidatingWebhookConfigurations,
}

/// A point-in-time, consistent view of what the controllers read.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Wall-clock time of the snapshot, as RFC 3339 timestamps are compared against it.
    pub now: Option<time::OffsetDateTime>,
    pub nodes: Vec<Object>,
    pub pods: Vec<Object>,
    pub daemonsets: Vec<Object>,
    pub deployments: Vec<Object>,
    pub replicasets: Vec<Object>,
    pub controllerrevisions: Vec<Object>,
}

/// How the simulated kubelet behaves (from `sim` flags).
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Time from a pod being bound to a node until it is Running and Ready.
    pub pod_ready_delay: Duration,
    /// Images matching this pattern fail to pull (ErrImagePull, then ImagePullBackOff).
    pub broken_image: Option<String>,
    /// Only one ipam pod (`app=cce-eni-ipam`) is Ready at a time, as the leader-elected ipam.
    pub ipam_leader_only: bool,
}

/// A write a controller asks the server to make.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create the object; the server fills uid, resourceVersion, creationTimestamp.
    Create { resource: Resource, object: Value },
    /// Replace the object (not its status); `metadata.resourceVersion` is the precondition.
    Update { resource: Resource, object: Value },
    /// Replace only the status of the object; `metadata.resourceVersion` is the precondition.
    UpdateStatus { resource: Resource, object: Value },
    /// Delete the object (owned objects are garbage-collected by the server).
    Delete {
        resource: Resource,
        namespace: Option<String>,
        name: String,
    },
    /// Record a core/v1 Event about an object.
    Event(EventRecord),
}

/// A core/v1 Event, as a controller, the scheduler or the kubelet reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// `involvedObject`: kind, namespace, name, uid, apiVersion.
    pub involved_object: Value,
    /// `Normal` or `Warning`.
    pub type_: String,
    pub reason: String,
    pub message: String,
    /// `source.component`, e.g. `daemonset-controller`, `default-scheduler`, `kubelet`.
    pub component: String,
    /// `source.host`, for kubelet events.
    pub host: Option<String>,
}

/// What one reconcile pass wants done.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reconciled {
    pub actions: Vec<Action>,
    /// Run again after this long even if nothing changes (e.g. a pod becomes Ready later).
    pub requeue_after: Option<Duration>,
}

/// How the ipam Deployment rolls out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpamStrategy {
    /// RollingUpdate with maxSurge 1, maxUnavailable 0: the SOP's host-port conflict happens.
    #[default]
    Rolling,
    /// Recreate: old pods go first, so no conflict.
    Recreate,
}

/// The shape of the default cluster (from `sim` flags).
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub masters: usize,
    pub workers: usize,
    /// Image tag of all guarded containers, e.g. `v1.9.3`.
    pub cni_version: String,
    pub ipam_strategy: IpamStrategy,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            masters: 3,
            workers: 2,
            cni_version: "v1.9.3".into(),
            ipam_strategy: IpamStrategy::Rolling,
        }
    }
}
