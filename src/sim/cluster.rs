//! The default simulated CCE v1 cluster: nodes, the agent DaemonSet, the ipam Deployment,
//! its Service and the ConfigMap that marks the v1 network.
//!
//! The workloads are written the way the API server returns them after defaulting, so that
//! the revision history seeded here (the previous patch release as revision 1) compares
//! equal, byte for byte, with what the controllers and kubectl compute from the live objects.

use serde_json::{Value, json};

use super::controllers::{daemonset_revision_data, pod_template_hash};
use super::model::{ClusterSpec, IpamStrategy, Resource};

pub const NAMESPACE: &str = "kube-system";
pub const AGENT: &str = "cce-cni-node-agent";
pub const IPAM: &str = "cce-eni-ipam";
pub const IMAGE_REPOSITORY: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni";

/// The objects the simulated cluster starts with, in creation order.
pub fn default_objects(spec: &ClusterSpec) -> Vec<(Resource, Value)> {
    let mut objects = Vec::new();
    for ns in [NAMESPACE, "default"] {
        objects.push((
            Resource::Namespaces,
            json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }),
        ));
    }
    let masters = (1..=spec.masters).map(|i| (format!("master-{i}"), true));
    let workers = (1..=spec.workers).map(|i| (format!("worker-{i}"), false));
    for (index, (name, master)) in masters.chain(workers).enumerate() {
        objects.push((Resource::Nodes, node_object(&name, index, master)));
    }
    objects.push((Resource::ConfigMaps, agent_config()));
    objects.push((Resource::Services, ipam_service()));

    let image = format!("{IMAGE_REPOSITORY}:{}", spec.cni_version);
    // The history comes first, so the controllers adopt it before they record the current
    // templates as revision 2.
    if let Some(previous) = previous_patch(&spec.cni_version) {
        let old_image = format!("{IMAGE_REPOSITORY}:{previous}");
        objects.push((Resource::ControllerRevisions, agent_revision(&old_image, 1)));
        objects.push((
            Resource::ReplicaSets,
            ipam_replicaset(&old_image, 1, spec.ipam_strategy),
        ));
    }
    objects.push((Resource::DaemonSets, agent_daemonset(&image)));
    objects.push((
        Resource::Deployments,
        ipam_deployment(&image, spec.ipam_strategy),
    ));
    objects
}

/// `v1.9.3` → `v1.9.2`; none for a `.0` release or a tag that is not a version.
fn previous_patch(version: &str) -> Option<String> {
    let (prefix, rest) = match version.strip_prefix('v') {
        Some(r) => ("v", r),
        None => ("", version),
    };
    let parts: Vec<&str> = rest.split('.').collect();
    if parts.len() != 3 {
        return None;
    }
    let nums: Vec<u64> = parts
        .iter()
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let patch = nums[2].checked_sub(1)?;
    Some(format!("{prefix}{}.{}.{patch}", nums[0], nums[1]))
}

/// A Ready node; masters carry `cluster-role: master`, where ipam is pinned.
pub fn node_object(name: &str, index: usize, master: bool) -> Value {
    let mut labels = json!({
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": "BCC",
    });
    if master {
        labels["cluster-role"] = json!("master");
    }
    let ip = format!("10.0.{}.{}", index / 200, 10 + index % 200);
    let cidr = format!("172.{}.{}.0/24", 16 + index / 256, index % 256);
    let resources = json!({
        "cpu": "8",
        "ephemeral-storage": "101430960Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": "32778044Ki",
        "pods": "110",
    });
    let condition = |type_: &str, status: &str, reason: &str, message: &str| json!({"type": type_, "status": status, "reason": reason, "message": message});
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "podCIDR": cidr,
            "podCIDRs": [cidr],
            "providerID": format!("cce://i-sim{index:05}"),
        },
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
            "allocatable": resources,
            "capacity": resources,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "containerRuntimeVersion": "containerd://1.7.13",
                "kernelVersion": "5.10.0-1.0.0.28",
                "kubeProxyVersion": "v1.30.4",
                "kubeletVersion": "v1.30.4",
                "operatingSystem": "linux",
                "osImage": "Baidu Linux 3.0",
                "machineID": format!("{index:032x}"),
                "systemUUID": format!("00000000-0000-0000-0000-{index:012x}"),
                "bootID": format!("b0000000-0000-0000-0000-{index:012x}"),
            },
        },
    })
}

/// The ConfigMap whose presence marks the v1 network: one `config` key with the agent's
/// configuration.
fn agent_config() -> Value {
    let config = "\
cniMode: vpc-secondary-ip-veth
resyncPeriod: 60s
workers: 1
cniConfig: {}
cce:
  region: bj
  clusterID: cce-sim00001
  vpcID: vpc-sim00001
  containerNetworkCIDRIPv4: 172.16.0.0/16
  routeController:
    enableVPCRoute: false
    enableStaticRoute: false
  eniController:
    eniSubnetList:
      - sbn-sim00001
    securityGroupList:
      - g-sim00001
    enterpriseSecurityGroupList: []
    routeTableOffset: 127
    eniSyncPeriod: 180s
  podSubnetController:
    subnetList:
      - sbn-sim00001
";
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": AGENT,
            "namespace": NAMESPACE,
            "labels": {"addonmanager.kubernetes.io/mode": "EnsureExists"},
        },
        "data": {"config": config},
    })
}

fn ipam_service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": IPAM, "namespace": NAMESPACE},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": IPAM},
            "ports": [{"port": 80, "protocol": "TCP", "targetPort": 9997}],
            "sessionAffinity": "None",
        },
    })
}

fn field_env(name: &str, path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}})
}

fn endpoints_env() -> Vec<Value> {
    vec![
        json!({"name": "CCE_GATEWAY_ENDPOINT", "value": "cce-gateway.bj.baidubce.com"}),
        json!({"name": "BCC_ENDPOINT", "value": "bcc.bj.baidubce.com"}),
        json!({"name": "BBC_ENDPOINT", "value": "bbc.bj.baidubce.com"}),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("NODE_NAME", "spec.nodeName"),
    ]
}

fn host_path(name: &str, path: &str, type_: &str) -> Value {
    json!({"name": name, "hostPath": {"path": path, "type": type_}})
}

fn token_volume() -> Value {
    json!({"name": "cce-plugin-token", "secret": {"defaultMode": 256, "secretName": "cce-plugin-token"}})
}

/// The agent's pod template, as the API server stores it after defaulting.
pub fn agent_template(image: &str) -> Value {
    let mount = |name: &str, path: &str| json!({"name": name, "mountPath": path});
    json!({
        "metadata": {
            "creationTimestamp": null,
            "labels": {"name": AGENT},
            "annotations": {"scheduler.alpha.kubernetes.io/critical-pod": ""},
        },
        "spec": {
            "tolerations": [{"operator": "Exists"}],
            "serviceAccountName": "cce-cni",
            "serviceAccount": "cce-cni",
            "hostNetwork": true,
            "priorityClassName": "system-node-critical",
            "dnsPolicy": "ClusterFirst",
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "terminationGracePeriodSeconds": 10,
            "initContainers": [{
                "name": "install-cni-binary",
                "image": image,
                "imagePullPolicy": "Always",
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "volumeMounts": [mount("cni-bin-dir", "/opt/cni/bin"), mount("cni-net-dir", "/etc/cni/net.d")],
            }],
            "containers": [{
                "name": AGENT,
                "image": image,
                "imagePullPolicy": "Always",
                "command": [
                    "/bin/cni-node-agent",
                    "--config=/etc/kubernetes/cni-node-agent.yaml",
                    "--logtostderr=false",
                    "--alsologtostderr=true",
                    "--log-file=/var/log/cce/cce-cni-node-agent.log",
                    "--log-file-max-size=1800",
                ],
                "env": endpoints_env(),
                "lifecycle": {"preStop": {"exec": {"command": ["/uninstall-cni.sh"]}}},
                "resources": {"limits": {"memory": "200Mi"}, "requests": {"memory": "200Mi"}},
                "securityContext": {"privileged": true},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "volumeMounts": [
                    mount("log-dir", "/var/log/cce"),
                    mount("lib-modules", "/lib/modules/"),
                    mount("cni-net-dir", "/etc/cni/net.d"),
                    mount("cce-cni-node-agent-config", "/etc/kubernetes"),
                    mount("cce-cni-config-template", "/etc/kubernetes/cni"),
                    {"name": "cce-plugin-token", "mountPath": "/var/run/secrets/cce/cce-plugin-token", "readOnly": true},
                ],
            }],
            "volumes": [
                host_path("cni-bin-dir", "/opt/cni/bin", ""),
                host_path("cni-net-dir", "/etc/cni/net.d", ""),
                host_path("log-dir", "/var/log/cce", "DirectoryOrCreate"),
                token_volume(),
                host_path("lib-modules", "/lib/modules/", ""),
                {"name": "cce-cni-node-agent-config", "configMap": {
                    "name": AGENT, "optional": true, "defaultMode": 420,
                    "items": [{"key": "config", "path": "cni-node-agent.yaml"}]}},
                {"name": "cce-cni-config-template", "configMap": {
                    "name": "cce-cni-config-template", "optional": true, "defaultMode": 420,
                    "items": [
                        {"key": "cce-cni-secondary-ip-veth", "path": "cce-cni-secondary-ip-veth.tmpl"},
                        {"key": "cce-cni-secondary-ip-ipvlan", "path": "cce-cni-secondary-ip-ipvlan.tmpl"},
                        {"key": "cce-vpc-route-veth", "path": "cce-vpc-route-veth.tmpl"},
                    ]}},
            ],
        },
    })
}

/// The ipam pod template: hostNetwork, so containerPorts 9997/9998 are host ports.
pub fn ipam_template(image: &str) -> Value {
    json!({
        "metadata": {
            "creationTimestamp": null,
            "labels": {"app": IPAM, "cce-app": "true"},
            "annotations": {"prometheus.io/port": "9998", "prometheus.io/scrape": "true"},
        },
        "spec": {
            "priorityClassName": "system-node-critical",
            "hostNetwork": true,
            "nodeSelector": {"cluster-role": "master"},
            "tolerations": [
                {"key": "node-role.kubernetes.io/master", "operator": "Exists"},
                {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists"},
            ],
            "serviceAccountName": "cce-cni",
            "serviceAccount": "cce-cni",
            "dnsPolicy": "ClusterFirst",
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": IPAM,
                "image": image,
                "imagePullPolicy": "Always",
                "command": [
                    "/bin/cce-ipam",
                    "--cni-mode=vpc-secondary-ip-veth",
                    "--cluster-id=cce-sim00001",
                    "--region=bj",
                    "--vpc-id=vpc-sim00001",
                    "--eni-sync-period=20s",
                    "--gc-period=120s",
                    "--port=9997",
                    "--debug-port=9998",
                    "--logtostderr=false",
                    "--alsologtostderr=true",
                    "--log-file=/var/log/cce/cce-eni-ipam.log",
                    "--log-file-max-size=1800",
                ],
                "env": endpoints_env(),
                "ports": [
                    {"name": "grpc", "containerPort": 9997, "protocol": "TCP"},
                    {"name": "debug", "containerPort": 9998, "protocol": "TCP"},
                ],
                "readinessProbe": {
                    "tcpSocket": {"port": 9997},
                    "initialDelaySeconds": 15,
                    "periodSeconds": 2,
                    "timeoutSeconds": 1,
                    "successThreshold": 1,
                    "failureThreshold": 3,
                },
                "resources": {"limits": {"memory": "1000Mi"}, "requests": {"memory": "500Mi"}},
                "securityContext": {"privileged": true},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "volumeMounts": [
                    {"name": "log-dir", "mountPath": "/var/log/cce"},
                    {"name": "cce-plugin-token", "mountPath": "/var/run/secrets/cce/cce-plugin-token", "readOnly": true},
                ],
            }],
            "volumes": [host_path("log-dir", "/var/log/cce", "DirectoryOrCreate"), token_volume()],
        },
    })
}

/// The agent DaemonSet; like the upstream manifest it names no updateStrategy (the API
/// server defaults RollingUpdate with maxUnavailable 1).
pub fn agent_daemonset(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": AGENT, "namespace": NAMESPACE, "labels": {"k8s-app": AGENT}},
        "spec": {
            "selector": {"matchLabels": {"name": AGENT}},
            "template": agent_template(image),
        },
    })
}

fn ipam_strategy(strategy: IpamStrategy) -> Value {
    match strategy {
        IpamStrategy::Rolling => {
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
        }
        IpamStrategy::Recreate => json!({"type": "Recreate"}),
    }
}

pub fn ipam_deployment(image: &str, strategy: IpamStrategy) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": IPAM, "namespace": NAMESPACE, "labels": {"app": IPAM}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": IPAM}},
            "strategy": ipam_strategy(strategy),
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
            "template": ipam_template(image),
        },
    })
}

/// A ControllerRevision of the agent at `image`, without owner: the DaemonSet controller
/// adopts it as it adopts any orphan matching its selector.
fn agent_revision(image: &str, revision: i64) -> Value {
    let template = agent_template(image);
    let hash = pod_template_hash(&template);
    json!({
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": format!("{AGENT}-{hash}"),
            "namespace": NAMESPACE,
            "labels": {"name": AGENT, "controller-revision-hash": hash},
        },
        "data": daemonset_revision_data(&template),
        "revision": revision,
    })
}

/// A scaled-down ReplicaSet of ipam at `image`, without owner, for the Deployment to adopt.
fn ipam_replicaset(image: &str, revision: i64, strategy: IpamStrategy) -> Value {
    let mut template = ipam_template(image);
    let hash = pod_template_hash(&template);
    template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    let max = match strategy {
        IpamStrategy::Rolling => 4,
        IpamStrategy::Recreate => 3,
    };
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{IPAM}-{hash}"),
            "namespace": NAMESPACE,
            "labels": template["metadata"]["labels"].clone(),
            "annotations": {
                "deployment.kubernetes.io/revision": revision.to_string(),
                "deployment.kubernetes.io/desired-replicas": "3",
                "deployment.kubernetes.io/max-replicas": max.to_string(),
            },
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": IPAM, "pod-template-hash": hash}},
            "template": template,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_patch_only_for_versions_with_a_patch_to_step_back() {
        assert_eq!(previous_patch("v1.9.3").as_deref(), Some("v1.9.2"));
        assert_eq!(previous_patch("1.2.1").as_deref(), Some("1.2.0"));
        assert_eq!(previous_patch("v1.9.0"), None);
        assert_eq!(previous_patch("host-local"), None);
    }

    #[test]
    fn default_cluster_has_the_sop_objects() {
        let objects = default_objects(&ClusterSpec::default());
        let count = |r: Resource| objects.iter().filter(|(k, _)| *k == r).count();
        assert_eq!(count(Resource::Nodes), 5);
        assert_eq!(count(Resource::Namespaces), 2);
        assert_eq!(count(Resource::ConfigMaps), 1);
        assert_eq!(count(Resource::ControllerRevisions), 1);
        assert_eq!(count(Resource::ReplicaSets), 1);
        let (_, ds) = objects
            .iter()
            .find(|(k, _)| *k == Resource::DaemonSets)
            .unwrap();
        assert!(ds["spec"].get("updateStrategy").is_none());
        assert_eq!(
            ds["spec"]["template"]["spec"]["initContainers"][0]["image"],
            "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.3"
        );
        let masters = objects
            .iter()
            .filter(|(k, v)| {
                *k == Resource::Nodes && v["metadata"]["labels"]["cluster-role"] == "master"
            })
            .count();
        assert_eq!(masters, 3);
        // History objects come before the workloads that adopt them.
        let pos = |r: Resource| objects.iter().position(|(k, _)| *k == r).unwrap();
        assert!(pos(Resource::ControllerRevisions) < pos(Resource::DaemonSets));
        assert!(pos(Resource::ReplicaSets) < pos(Resource::Deployments));
    }
}
