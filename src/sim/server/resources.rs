//! The API resources the simulated apiserver serves, as discovery describes them.

use super::super::model::Resource;

/// How objects of an endpoint relate to what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Stored as served.
    Native,
    /// `events.k8s.io/v1` Events: stored as core/v1 Events and converted on the way in and out.
    EventsV1,
}

/// One servable resource endpoint: `/<prefix>/<group>/<version>/…/<plural>`.
#[derive(Debug)]
pub struct ApiResource {
    pub storage: Resource,
    pub view: View,
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// The object has a `status` that only the `/status` subresource writes.
    pub status: bool,
    /// `/scale` (autoscaling/v1 Scale) is served.
    pub scale: bool,
    /// `metadata.generation` is maintained (bumped on spec changes).
    pub generation: bool,
    /// PUT of a missing object creates it, as the apiserver allows for these kinds.
    pub create_on_update: bool,
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Every endpoint, in discovery order.
pub static RESOURCES: &[ApiResource] = &[
    ApiResource {
        storage: Resource::ConfigMaps,
        view: View::Native,
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        verbs: ALL_VERBS,
        categories: &[],
        status: false,
        scale: false,
        generation: false,
        create_on_update: false,
    },
    ApiResource {
        storage: Resource::Events,
        view: View::Native,
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        verbs: ALL_VERBS,
        categories: &[],
        status: false,
        scale: false,
        generation: false,
        create_on_update: true,
    },
    ApiResource {
        storage: Resource::Namespaces,
        view: View::Native,
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        verbs: &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
        categories: &[],
        status: true,
        scale: false,
        generation: false,
        create_on_update: false,
    },
    ApiResource {
        storage: Resource::Nodes,
        view: View::Native,
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        verbs: ALL_VERBS,
        categories: &[],
        status: true,
        scale: false,
        generation: false,
        create_on_update: false,
    },
    ApiResource {
        storage: Resource::Pods,
        view: View::Native,
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        verbs: ALL_VERBS,
        categories: &["all"],
        status: true,
        scale: false,
        generation: false,
        create_on_update: false,
    },
    ApiResource {
        storage: Resource::Services,
        view: View::Native,
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        verbs: ALL_VERBS,
        categories: &["all"],
        status: true,
        scale: false,
        generation: false,
        create_on_update: false,
    },
    ApiResource {
        storage: Resource::ControllerRevisions,
        view: View::Native,
        group: "apps",
        version: "v1",
        plural: "controllerrevisions",
        singular: "controllerrevision",
        kind: "ControllerRevision",
        namespaced: true,
        short_names: &[],
        verbs: ALL_VERBS,
        categories: &[],
        status: false,
        scale: false,
        generation: false,
        create_on_update: false,
    },
    ApiResource {
        storage: Resource::DaemonSets,
        view: View::Native,
        group: "apps",
        version: "v1",
        plural: "daemonsets",
        singular: "daemonset",
        kind: "DaemonSet",
        namespaced: true,
        short_names: &["ds"],
        verbs: ALL_VERBS,
        categories: &["all"],
        status: true,
        scale: false,
        generation: true,
        create_on_update: false,
    },
    ApiResource {
        storage: Resource::Deployments,
        view: View::Native,
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        verbs: ALL_VERBS,
        categories: &["all"],
        status: true,
        scale: true,
        generation: true,
        create_on_update: false,
    },
    ApiResource {
        storage: Resource::ReplicaSets,
        view: View::Native,
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        verbs: ALL_VERBS,
        categories: &["all"],
        status: true,
        scale: true,
        generation: true,
        create_on_update: false,
    },
    ApiResource {
        storage: Resource::Leases,
        view: View::Native,
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        verbs: ALL_VERBS,
        categories: &[],
        status: false,
        scale: false,
        generation: false,
        create_on_update: true,
    },
    ApiResource {
        storage: Resource::ValidatingWebhookConfigurations,
        view: View::Native,
        group: "admissionregistration.k8s.io",
        version: "v1",
        plural: "validatingwebhookconfigurations",
        singular: "validatingwebhookconfiguration",
        kind: "ValidatingWebhookConfiguration",
        namespaced: false,
        short_names: &[],
        verbs: ALL_VERBS,
        categories: &["api-extensions"],
        status: false,
        scale: false,
        generation: true,
        create_on_update: false,
    },
    ApiResource {
        storage: Resource::Events,
        view: View::EventsV1,
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        verbs: ALL_VERBS,
        categories: &[],
        status: false,
        scale: false,
        generation: false,
        create_on_update: true,
    },
];

/// The group-versions served, in discovery order (core first).
pub static GROUP_VERSIONS: &[(&str, &str)] = &[
    ("", "v1"),
    ("apps", "v1"),
    ("events.k8s.io", "v1"),
    ("coordination.k8s.io", "v1"),
    ("admissionregistration.k8s.io", "v1"),
];

impl ApiResource {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, or `configmaps` for the core group, as error messages name it.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Deployment.apps`, as validation errors name it.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Subresources served besides the object itself.
    pub fn subresources(&self) -> Vec<&'static str> {
        let mut subs = Vec::new();
        if self.scale {
            subs.push("scale");
        }
        if self.status {
            subs.push("status");
        }
        subs
    }
}

/// The endpoint for `group`/`version`/`plural`, if served.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ApiResource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The native endpoint that stores `resource`.
pub fn native(resource: Resource) -> &'static ApiResource {
    RESOURCES
        .iter()
        .find(|r| r.storage == resource && r.view == View::Native)
        .unwrap_or(&RESOURCES[0])
}

/// Every native endpoint, one per stored resource.
pub fn natives() -> impl Iterator<Item = &'static ApiResource> {
    RESOURCES.iter().filter(|r| r.view == View::Native)
}

/// The endpoints of one group-version, in discovery order.
pub fn in_group_version(group: &str, version: &str) -> impl Iterator<Item = &'static ApiResource> {
    let (group, version) = (group.to_string(), version.to_string());
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_resource_has_a_native_endpoint() {
        for resource in [
            Resource::Namespaces,
            Resource::Nodes,
            Resource::Pods,
            Resource::ConfigMaps,
            Resource::Services,
            Resource::Events,
            Resource::Leases,
            Resource::DaemonSets,
            Resource::Deployments,
            Resource::ReplicaSets,
            Resource::ControllerRevisions,
            Resource::ValidatingWebhookConfigurations,
        ] {
            assert_eq!(native(resource).storage, resource);
        }
    }

    #[test]
    fn names_are_qualified_like_the_apiserver() {
        let deploy = lookup("apps", "v1", "deployments").unwrap();
        assert_eq!(deploy.qualified(), "deployments.apps");
        assert_eq!(deploy.api_version(), "apps/v1");
        let cm = lookup("", "v1", "configmaps").unwrap();
        assert_eq!(cm.qualified(), "configmaps");
        assert_eq!(cm.api_version(), "v1");
    }

    #[test]
    fn every_group_version_serves_something() {
        for (g, v) in GROUP_VERSIONS {
            assert!(in_group_version(g, v).next().is_some(), "{g}/{v}");
        }
    }
}
