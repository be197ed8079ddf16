//! The patch metadata of the served kinds: which lists merge, by which key, and where the
//! Pod template sits. Taken from the `patchStrategy`/`patchMergeKey` tags of k8s.io/api.
//!
//! Fields not listed here behave as untagged fields do upstream: maps merge key by key and
//! lists are replaced whole.

use crate::sim::model::Resource;

/// The API type a JSON value stands for, as far as patching cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    /// No tagged fields below: maps merge, lists replace.
    Unknown,
    /// `runtime.RawExtension` (`ControllerRevision.data`): kept verbatim, directives included.
    Raw,
    /// A top-level object whose only tagged fields are in `metadata` (ConfigMap, Event, Lease).
    MetadataOnly,
    ObjectMeta,
    Namespace,
    NamespaceStatus,
    Node,
    NodeSpec,
    NodeStatus,
    Pod,
    PodTemplateSpec,
    PodSpec,
    Container,
    PodStatus,
    Service,
    ServiceSpec,
    ServiceStatus,
    /// DaemonSet, Deployment and ReplicaSet share the tagged parts that matter.
    Workload,
    WorkloadSpec,
    WorkloadStatus,
    ControllerRevision,
    WebhookConfiguration,
    Webhook,
}

/// How a field patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    /// The type of the value, or of each element for a list.
    pub ty: Ty,
    /// `patchStrategy:"merge"`: the list merges instead of being replaced.
    pub merge_list: bool,
    /// `patchMergeKey`, for merging lists of maps; `None` for lists of primitives.
    pub merge_key: Option<&'static str>,
}

impl Field {
    const fn plain(ty: Ty) -> Self {
        Self {
            ty,
            merge_list: false,
            merge_key: None,
        }
    }

    const fn merged_by(ty: Ty, key: &'static str) -> Self {
        Self {
            ty,
            merge_list: true,
            merge_key: Some(key),
        }
    }

    const fn merged_set() -> Self {
        Self {
            ty: Ty::Unknown,
            merge_list: true,
            merge_key: None,
        }
    }

    /// The merge key, or "" as upstream passes it when there is none.
    pub fn merge_key_or_empty(&self) -> &'static str {
        self.merge_key.unwrap_or("")
    }
}

/// The type of a whole object of `resource`.
pub(crate) fn root(resource: Resource) -> Ty {
    match resource {
        Resource::Namespaces => Ty::Namespace,
        Resource::Nodes => Ty::Node,
        Resource::Pods => Ty::Pod,
        Resource::ConfigMaps | Resource::Events | Resource::Leases => Ty::MetadataOnly,
        Resource::Services => Ty::Service,
        Resource::DaemonSets | Resource::Deployments | Resource::ReplicaSets => Ty::Workload,
        Resource::ControllerRevisions => Ty::ControllerRevision,
        Resource::ValidatingWebhookConfigurations => Ty::WebhookConfiguration,
    }
}

/// The patch metadata of field `key` of a value of type `ty`.
pub(crate) fn field(ty: Ty, key: &str) -> Field {
    use Ty::*;
    match (ty, key) {
        (Raw, _) => Field::plain(Raw),
        (
            MetadataOnly | Namespace | Node | Pod | PodTemplateSpec | Service | Workload
            | ControllerRevision | WebhookConfiguration,
            "metadata",
        ) => Field::plain(ObjectMeta),
        (ObjectMeta, "finalizers") => Field::merged_set(),
        (ObjectMeta, "ownerReferences") => Field::merged_by(Unknown, "uid"),

        (Namespace, "status") => Field::plain(NamespaceStatus),
        (NamespaceStatus, "conditions") => Field::merged_by(Unknown, "type"),

        (Node, "spec") => Field::plain(NodeSpec),
        (Node, "status") => Field::plain(NodeStatus),
        (NodeSpec, "podCIDRs") => Field::merged_set(),
        (NodeStatus, "conditions" | "addresses") => Field::merged_by(Unknown, "type"),

        (Pod, "spec") | (PodTemplateSpec, "spec") => Field::plain(PodSpec),
        (Pod, "status") => Field::plain(PodStatus),
        (PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
            Field::merged_by(Container, "name")
        }
        (PodSpec, "volumes" | "imagePullSecrets" | "schedulingGates" | "resourceClaims") => {
            Field::merged_by(Unknown, "name")
        }
        (PodSpec, "hostAliases") => Field::merged_by(Unknown, "ip"),
        (PodSpec, "topologySpreadConstraints") => Field::merged_by(Unknown, "topologyKey"),
        (Container, "env") => Field::merged_by(Unknown, "name"),
        (Container, "ports") => Field::merged_by(Unknown, "containerPort"),
        (Container, "volumeMounts") => Field::merged_by(Unknown, "mountPath"),
        (Container, "volumeDevices") => Field::merged_by(Unknown, "devicePath"),
        (PodStatus, "conditions") => Field::merged_by(Unknown, "type"),
        (PodStatus, "podIPs" | "hostIPs") => Field::merged_by(Unknown, "ip"),
        (PodStatus, "resourceClaimStatuses") => Field::merged_by(Unknown, "name"),

        (Service, "spec") => Field::plain(ServiceSpec),
        (Service, "status") => Field::plain(ServiceStatus),
        (ServiceSpec, "ports") => Field::merged_by(Unknown, "port"),
        (ServiceStatus, "conditions") => Field::merged_by(Unknown, "type"),

        (Workload, "spec") => Field::plain(WorkloadSpec),
        (Workload, "status") => Field::plain(WorkloadStatus),
        (WorkloadSpec, "template") => Field::plain(PodTemplateSpec),
        (WorkloadStatus, "conditions") => Field::merged_by(Unknown, "type"),

        (ControllerRevision, "data") => Field::plain(Raw),

        (WebhookConfiguration, "webhooks") => Field::merged_by(Webhook, "name"),
        (Webhook, "matchConditions") => Field::merged_by(Unknown, "name"),

        _ => Field::plain(Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_template_is_reached_from_every_workload() {
        for resource in [
            Resource::DaemonSets,
            Resource::Deployments,
            Resource::ReplicaSets,
        ] {
            let spec = field(root(resource), "spec").ty;
            let template = field(spec, "template").ty;
            let pod_spec = field(template, "spec").ty;
            let containers = field(pod_spec, "initContainers");
            assert_eq!(containers, Field::merged_by(Ty::Container, "name"));
            assert_eq!(
                field(containers.ty, "volumeMounts").merge_key,
                Some("mountPath")
            );
            assert_eq!(field(template, "metadata").ty, Ty::ObjectMeta);
        }
    }

    #[test]
    fn untagged_lists_replace() {
        let pod_spec = field(field(Ty::Pod, "spec").ty, "tolerations");
        assert!(!pod_spec.merge_list);
        let taints = field(field(Ty::Node, "spec").ty, "taints");
        assert!(!taints.merge_list);
        let env_from = field(Ty::Container, "envFrom");
        assert!(!env_from.merge_list);
        assert!(!field(Ty::Container, "resizePolicy").merge_list);
    }

    #[test]
    fn finalizers_merge_as_a_set() {
        let finalizers = field(field(Ty::MetadataOnly, "metadata").ty, "finalizers");
        assert!(finalizers.merge_list);
        assert_eq!(finalizers.merge_key, None);
    }
}
