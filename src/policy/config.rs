//! What the guard protects and whom it trusts, from a YAML file or the embedded defaults.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::image::ImageRef;
use super::selector::LabelSelector;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot parse the configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The kinds of workload the guard can protect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WorkloadKind {
    DaemonSet,
    Deployment,
}

impl WorkloadKind {
    /// The resource name kubectl and the API use (`daemonset/NAME`, `deployment/NAME`).
    pub fn kubectl_name(self) -> &'static str {
        match self {
            Self::DaemonSet => "daemonset",
            Self::Deployment => "deployment",
        }
    }

    /// The API resource (`daemonsets`, `deployments`) in group `apps`.
    pub fn resource(self) -> &'static str {
        match self {
            Self::DaemonSet => "daemonsets",
            Self::Deployment => "deployments",
        }
    }

    pub fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "DaemonSet" => Some(Self::DaemonSet),
            "Deployment" => Some(Self::Deployment),
            _ => None,
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DaemonSet => "DaemonSet",
            Self::Deployment => "Deployment",
        })
    }
}

/// One guarded workload and the containers in it that must carry the guarded image.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuardedWorkload {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    /// Container names, looked up in both `containers` and `initContainers`.
    pub containers: Vec<String>,
    /// The labels the webhook entry selects this workload by where matchConditions are off
    /// (the chart's `workloads[].objectSelector`). An update that would take the workload
    /// out of it is refused: every later change would bypass the guard.
    #[serde(default, skip_serializing_if = "LabelSelector::is_empty")]
    pub object_selector: LabelSelector,
}

impl GuardedWorkload {
    /// `DaemonSet kube-system/cce-cni-node-agent`.
    pub fn display_name(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    /// `daemonset/cce-cni-node-agent`, as kubectl takes it.
    pub fn kubectl_ref(&self) -> String {
        format!("{}/{}", self.kind.kubectl_name(), self.name)
    }
}

/// Identities whose requests are allowed even when the policy would deny them (e.g. the
/// account that runs a helm minor upgrade). Never an annotation: anyone can add one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exemptions {
    #[serde(default)]
    pub users: BTreeSet<String>,
    #[serde(default)]
    pub groups: BTreeSet<String>,
    /// `NAMESPACE/NAME` of service accounts.
    #[serde(default)]
    pub service_accounts: BTreeSet<String>,
}

/// The guard's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// The workloads that must share one image; each is the others' sibling.
    #[serde(default = "default_workloads")]
    pub workloads: Vec<GuardedWorkload>,
    /// Groups of repositories (`host/path`) treated as the same repository, e.g. a registry
    /// mirror. Empty by default: a repository change is refused.
    #[serde(default)]
    pub repository_aliases: Vec<Vec<String>>,
    #[serde(default)]
    pub exempt: Exemptions,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            workloads: default_workloads(),
            repository_aliases: Vec::new(),
            exempt: Exemptions::default(),
        }
    }
}

fn default_workloads() -> Vec<GuardedWorkload> {
    vec![
        GuardedWorkload {
            kind: WorkloadKind::DaemonSet,
            namespace: "kube-system".into(),
            name: "cce-cni-node-agent".into(),
            containers: vec!["cce-cni-node-agent".into(), "install-cni-binary".into()],
            // Upstream's DaemonSet has carried this label in every version.
            object_selector: LabelSelector::matching_labels([(
                "k8s-app".into(),
                "cce-cni-node-agent".into(),
            )]),
        },
        GuardedWorkload {
            kind: WorkloadKind::Deployment,
            namespace: "kube-system".into(),
            name: "cce-eni-ipam".into(),
            containers: vec!["cce-eni-ipam".into()],
            // Upstream's Deployment has no labels of its own to select it by.
            object_selector: LabelSelector::default(),
        },
    ]
}

impl Config {
    /// Parses a YAML (or JSON) configuration and checks it.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let config: Config =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: non-empty names, parseable aliases, no duplicates.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.workloads.is_empty() {
            return Err(ConfigError::Invalid(
                "workloads: at least one workload must be guarded".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for w in &self.workloads {
            if w.name.is_empty() || w.namespace.is_empty() {
                return Err(ConfigError::Invalid(
                    "workloads: every workload needs a namespace and a name".into(),
                ));
            }
            if w.containers.is_empty() || w.containers.iter().any(String::is_empty) {
                return Err(ConfigError::Invalid(format!(
                    "workloads: {} needs at least one non-empty container name",
                    w.display_name()
                )));
            }
            w.object_selector.validate().map_err(|e| {
                ConfigError::Invalid(format!(
                    "workloads: {}: objectSelector: {e}",
                    w.display_name()
                ))
            })?;
            if !seen.insert((w.kind, w.namespace.as_str(), w.name.as_str())) {
                return Err(ConfigError::Invalid(format!(
                    "workloads: {} is listed twice",
                    w.display_name()
                )));
            }
        }
        for group in &self.repository_aliases {
            for repo in group {
                let parsed = ImageRef::parse(repo).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "repositoryAliases: {repo:?} is not a repository: {e}"
                    ))
                })?;
                if parsed.tag().is_some() || parsed.digest().is_some() {
                    return Err(ConfigError::Invalid(format!(
                        "repositoryAliases: {repo:?} must be a repository without tag or digest"
                    )));
                }
            }
        }
        for sa in &self.exempt.service_accounts {
            if sa
                .split_once('/')
                .is_none_or(|(ns, name)| ns.is_empty() || name.is_empty() || name.contains('/'))
            {
                return Err(ConfigError::Invalid(format!(
                    "exempt.serviceAccounts: {sa:?} must be NAMESPACE/NAME"
                )));
            }
        }
        Ok(())
    }

    /// The guarded workload of this kind, namespace and name, if any.
    pub fn workload(
        &self,
        kind: WorkloadKind,
        namespace: &str,
        name: &str,
    ) -> Option<&GuardedWorkload> {
        self.workloads
            .iter()
            .find(|w| w.kind == kind && w.namespace == namespace && w.name == name)
    }

    /// Every other guarded workload: the ones whose images must agree with `workload`'s.
    pub fn siblings_of<'a>(
        &'a self,
        workload: &'a GuardedWorkload,
    ) -> impl Iterator<Item = &'a GuardedWorkload> {
        self.workloads.iter().filter(move |w| *w != workload)
    }

    /// Whether two normalised repositories (`host/path`) count as the same one.
    pub fn same_repository(&self, a: &str, b: &str) -> bool {
        if a == b {
            return true;
        }
        let normalised = |r: &str| {
            ImageRef::parse(r)
                .map(|i| i.repository())
                .unwrap_or_else(|_| r.to_owned())
        };
        self.repository_aliases.iter().any(|group| {
            let group: Vec<String> = group.iter().map(|r| normalised(r)).collect();
            group.iter().any(|r| r == a) && group.iter().any(|r| r == b)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_guard_the_two_workloads() {
        let config = Config::default();
        let agent = config
            .workload(WorkloadKind::DaemonSet, "kube-system", "cce-cni-node-agent")
            .unwrap();
        assert_eq!(
            agent.containers,
            ["cce-cni-node-agent", "install-cni-binary"]
        );
        let ipam = config
            .workload(WorkloadKind::Deployment, "kube-system", "cce-eni-ipam")
            .unwrap();
        assert_eq!(config.siblings_of(agent).collect::<Vec<_>>(), [ipam]);
        assert!(
            config
                .workload(WorkloadKind::Deployment, "default", "cce-eni-ipam")
                .is_none()
        );
        config.validate().unwrap();
        assert_eq!(
            agent.object_selector.to_string(),
            "k8s-app=cce-cni-node-agent"
        );
        assert!(ipam.object_selector.is_empty());
    }

    #[test]
    fn reads_the_selectors_the_chart_renders() {
        let config = Config::from_yaml(
            "workloads:\n  - kind: Deployment\n    namespace: kube-system\n    name: cce-eni-ipam\n    containers: [cce-eni-ipam]\n    objectSelector:\n      matchLabels: {app: cce-eni-ipam}\n      matchExpressions: [{key: tier, operator: Exists}]\n",
        )
        .unwrap();
        assert_eq!(
            config.workloads[0].object_selector.to_string(),
            "app=cce-eni-ipam,tier"
        );
    }

    #[test]
    fn reads_yaml_and_keeps_default_workloads() {
        let config = Config::from_yaml(
            "exempt:\n  users: [helm-admin]\n  serviceAccounts: [kube-system/cce-upgrader]\n\
             repositoryAliases:\n  - [registry.baidubce.com/cce-plugin-pro/cce-cni, hub.baidubce.com/cce-plugin-pro/cce-cni]\n",
        )
        .unwrap();
        assert_eq!(config.workloads.len(), 2);
        assert!(config.exempt.users.contains("helm-admin"));
        assert!(config.same_repository(
            "registry.baidubce.com/cce-plugin-pro/cce-cni",
            "hub.baidubce.com/cce-plugin-pro/cce-cni"
        ));
        assert!(!config.same_repository(
            "registry.baidubce.com/cce-plugin-pro/cce-cni",
            "registry.baidubce.com/cce-plugin-pro/cce-cni-arm64"
        ));
    }

    #[test]
    fn rejects_bad_configuration_clearly() {
        for (yaml, needle) in [
            ("workloads: []\n", "at least one workload"),
            ("exempt:\n  serviceAccounts: [no-slash]\n", "NAMESPACE/NAME"),
            (
                "repositoryAliases:\n  - [\"registry.example.com/a:v1\"]\n",
                "without tag",
            ),
            ("unknownKey: 1\n", "unknownKey"),
            ("workloads: {\n", "parse"),
            (
                "workloads:\n  - {kind: StatefulSet, namespace: a, name: b, containers: [c]}\n",
                "StatefulSet",
            ),
            (
                "workloads:\n  - {kind: DaemonSet, namespace: a, name: b, containers: [c],\n     objectSelector: {matchExpressions: [{key: k, operator: In}]}}\n",
                "DaemonSet a/b: objectSelector: matchExpressions \"k\" In: values must be non-empty",
            ),
            (
                "workloads:\n  - {kind: DaemonSet, namespace: a, name: b, containers: [c],\n     objectSelector: {matchLabel: {k: v}}}\n",
                "matchLabel",
            ),
        ] {
            let err = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(needle), "{yaml:?}: {err}");
        }
    }
}
