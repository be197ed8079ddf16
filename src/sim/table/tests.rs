use std::sync::Arc;

use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use super::*;

fn now() -> OffsetDateTime {
    OffsetDateTime::parse("2026-12-01T12:00:00Z", &Rfc3339).unwrap()
}
const IMAGE: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.3";

fn ago(d: Duration) -> String {
    (now() - d)
        .format(&Rfc3339)
        .unwrap_or_else(|e| panic!("format: {e}"))
}

fn created(days: i64) -> String {
    ago(Duration::days(days))
}

fn row_cells(resource: Resource, object: Value) -> Vec<Value> {
    cells(resource, &object, now())
}

fn column_names(resource: Resource) -> Vec<(String, i64)> {
    let table = render(resource, &[], "1", now());
    table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["priority"].as_i64().unwrap(),
            )
        })
        .collect()
}

// --- Table shape ----------------------------------------------------------------------------

#[test]
fn table_has_the_shape_kubectl_accepts() {
    let ds = json!({
        "kind": "DaemonSet", "apiVersion": "apps/v1",
        "metadata": {"name": "cce-cni-node-agent", "namespace": "kube-system",
                     "resourceVersion": "77", "creationTimestamp": created(90)},
        "spec": {"selector": {"matchLabels": {"name": "cce-cni-node-agent"}},
                 "template": {"spec": {"containers": [{"name": "cce-cni-node-agent", "image": IMAGE}]}}},
        "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 2,
                   "updatedNumberScheduled": 2, "numberAvailable": 2}
    });
    let table = render(Resource::DaemonSets, &[Arc::new(ds.clone())], "1022", now());
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(table["metadata"], json!({"resourceVersion": "1022"}));
    assert_eq!(
        table["columnDefinitions"][0],
        json!({"name": "Name", "type": "string", "format": "name",
               "description": NAME_DOC, "priority": 0})
    );
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0]["cells"],
        json!([
            "cce-cni-node-agent",
            2,
            2,
            2,
            2,
            2,
            "<none>",
            "90d",
            "cce-cni-node-agent",
            IMAGE,
            "name=cce-cni-node-agent"
        ])
    );
    assert_eq!(
        rows[0]["object"],
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
               "metadata": ds["metadata"]})
    );
    assert!(rows[0].get("conditions").is_none());
}

#[test]
fn every_resource_has_as_many_cells_as_columns() {
    let object = json!({"metadata": {"name": "x"}});
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
        let table = render(resource, &[Arc::new(object.clone())], "5", now());
        let columns = table["columnDefinitions"].as_array().unwrap().len();
        let cells = table["rows"][0]["cells"].as_array().unwrap().len();
        assert_eq!(cells, columns, "{resource:?}");
    }
}

#[test]
fn wide_columns_are_marked_priority_one() {
    assert_eq!(
        column_names(Resource::DaemonSets),
        [
            ("Name", 0),
            ("Desired", 0),
            ("Current", 0),
            ("Ready", 0),
            ("Up-to-date", 0),
            ("Available", 0),
            ("Node Selector", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1)
        ]
        .map(|(n, p)| (n.to_string(), p))
    );
    assert_eq!(
        column_names(Resource::Events),
        [
            ("Last Seen", 0),
            ("Type", 0),
            ("Reason", 0),
            ("Object", 0),
            ("Subobject", 1),
            ("Source", 1),
            ("Message", 0),
            ("First Seen", 1),
            ("Count", 1),
            ("Name", 1)
        ]
        .map(|(n, p)| (n.to_string(), p))
    );
    assert_eq!(
        column_names(Resource::Pods),
        [
            ("Name", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Restarts", 0),
            ("Age", 0),
            ("IP", 1),
            ("Node", 1),
            ("Nominated Node", 1),
            ("Readiness Gates", 1)
        ]
        .map(|(n, p)| (n.to_string(), p))
    );
}

// --- Human durations ------------------------------------------------------------------------

#[test]
fn human_durations_match_apimachinery() {
    let cases = [
        (Duration::seconds(-5), "<invalid>"),
        (Duration::milliseconds(-1500), "0s"),
        (Duration::ZERO, "0s"),
        (Duration::seconds(59), "59s"),
        (Duration::seconds(119), "119s"),
        (Duration::seconds(120), "2m"),
        (Duration::seconds(123), "2m3s"),
        (Duration::minutes(10), "10m"),
        (Duration::minutes(179), "179m"),
        (Duration::minutes(185), "3h5m"),
        (Duration::hours(3), "3h"),
        (Duration::hours(8), "8h"),
        (Duration::hours(47), "47h"),
        (Duration::hours(51), "2d3h"),
        (Duration::days(2), "2d"),
        (Duration::days(90), "90d"),
        (Duration::days(729), "729d"),
        (Duration::days(365 * 2 + 10), "2y10d"),
        (Duration::days(365 * 3), "3y"),
        (Duration::days(365 * 9), "9y"),
    ];
    for (d, want) in cases {
        assert_eq!(human_duration(d), want, "{d:?}");
    }
}

// --- Nodes ----------------------------------------------------------------------------------

fn node(labels: Value, ready: &str, unschedulable: bool) -> Value {
    json!({
        "metadata": {"name": "10.0.0.1", "creationTimestamp": created(90), "labels": labels},
        "spec": {"unschedulable": unschedulable},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": ready}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n1"}],
            "nodeInfo": {"kubeletVersion": "v1.30.4", "osImage": "Ubuntu 22.04.4 LTS",
                         "kernelVersion": "5.15.0-105-generic", "containerRuntimeVersion": "containerd://1.7.2"}
        }
    })
}

#[test]
fn node_cells() {
    assert_eq!(
        row_cells(
            Resource::Nodes,
            node(
                json!({"cluster-role": "master", "node-role.kubernetes.io/master": "",
                        "node-role.kubernetes.io/control-plane": ""}),
                "True",
                false
            )
        ),
        json!([
            "10.0.0.1",
            "Ready",
            "control-plane,master",
            "90d",
            "v1.30.4",
            "10.0.0.1",
            "<none>",
            "Ubuntu 22.04.4 LTS",
            "5.15.0-105-generic",
            "containerd://1.7.2"
        ])
        .as_array()
        .unwrap()
        .clone()
    );
}

#[test]
fn node_status_variants() {
    let status = |n: Value| row_cells(Resource::Nodes, n)[1].clone();
    assert_eq!(
        status(node(json!({}), "True", true)),
        "Ready,SchedulingDisabled"
    );
    assert_eq!(status(node(json!({}), "Unknown", false)), "NotReady");
    let bare = json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}});
    let cells = row_cells(Resource::Nodes, bare);
    assert_eq!(
        cells,
        json!([
            "n",
            "Unknown,SchedulingDisabled",
            "<none>",
            "<unknown>",
            "",
            "<none>",
            "<none>",
            "<unknown>",
            "<unknown>",
            "<unknown>"
        ])
        .as_array()
        .unwrap()
        .clone()
    );
    let role_label = node(json!({"kubernetes.io/role": "worker"}), "True", false);
    assert_eq!(row_cells(Resource::Nodes, role_label)[2], "worker");
}

// --- Pods -----------------------------------------------------------------------------------

fn pod(status: Value) -> Value {
    json!({
        "metadata": {"name": "cce-eni-ipam-7d9c-abcde", "creationTimestamp": created(2)},
        "spec": {
            "nodeName": "10.0.0.1",
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "cce-eni-ipam", "image": IMAGE}, {"name": "sidecar", "image": "b"}]
        },
        "status": status
    })
}

fn running(name: &str, restarts: i64) -> Value {
    json!({"name": name, "ready": true, "restartCount": restarts,
           "state": {"running": {"startedAt": created(2)}}})
}

#[test]
fn running_pod_cells() {
    let p = pod(json!({
        "phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}],
        "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
        "initContainerStatuses": [{"name": "init", "ready": true, "restartCount": 0,
                                   "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
        "containerStatuses": [running("cce-eni-ipam", 0), running("sidecar", 0)]
    }));
    assert_eq!(
        row_cells(Resource::Pods, p),
        json!([
            "cce-eni-ipam-7d9c-abcde",
            "2/2",
            "Running",
            "0",
            "2d",
            "10.0.0.1",
            "10.0.0.1",
            "<none>",
            "<none>"
        ])
        .as_array()
        .unwrap()
        .clone()
    );
}

#[test]
fn restarts_show_when_the_last_one_was() {
    let mut restarted = running("cce-eni-ipam", 3);
    restarted["lastState"] =
        json!({"terminated": {"exitCode": 1, "finishedAt": ago(Duration::minutes(5))}});
    let p = pod(json!({
        "phase": "Running",
        "conditions": [{"type": "Initialized", "status": "True"}],
        "initContainerStatuses": [{"name": "init", "state": {"terminated": {"exitCode": 0}}}],
        "containerStatuses": [restarted, running("sidecar", 1)]
    }));
    assert_eq!(row_cells(Resource::Pods, p)[3], "4 (5m ago)");
}

#[test]
fn image_pull_failures_show_the_waiting_reason() {
    for reason in ["ErrImagePull", "ImagePullBackOff"] {
        let p = pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "Initialized", "status": "True"}],
            "initContainerStatuses": [{"name": "init", "state": {"terminated": {"exitCode": 0}}}],
            "containerStatuses": [
                {"name": "cce-eni-ipam", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": reason, "message": "rpc error"}}},
                running("sidecar", 0)
            ]
        }));
        let cells = row_cells(Resource::Pods, p);
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], reason);
    }
}

#[test]
fn init_containers_show_progress_and_failures() {
    let status_of = |init_status: Value| {
        let p = pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "Initialized", "status": "False"}],
            "initContainerStatuses": [init_status],
            "containerStatuses": [
                {"name": "cce-eni-ipam", "state": {"waiting": {"reason": "PodInitializing"}}},
                {"name": "sidecar", "state": {"waiting": {"reason": "PodInitializing"}}}
            ]
        }));
        row_cells(Resource::Pods, p)[2].clone()
    };
    assert_eq!(
        status_of(json!({"name": "init", "state": {"running": {}}})),
        "Init:0/1"
    );
    assert_eq!(
        status_of(json!({"name": "init", "state": {"waiting": {"reason": "ImagePullBackOff"}}})),
        "Init:ImagePullBackOff"
    );
    assert_eq!(
        status_of(json!({"name": "init", "state": {"terminated": {"exitCode": 2}}})),
        "Init:ExitCode:2"
    );
    assert_eq!(
        status_of(
            json!({"name": "init", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}})
        ),
        "Init:Error"
    );
    assert_eq!(
        status_of(json!({"name": "init", "state": {"terminated": {"exitCode": 137, "signal": 9}}})),
        "Init:Signal:9"
    );
}

#[test]
fn pod_ip_comes_from_pod_ips_or_pod_ip() {
    let both = json!({"metadata": {"name": "p"}, "spec": {"containers": []},
                      "status": {"podIP": "10.0.0.9", "podIPs": [{"ip": "10.0.0.8"}, {"ip": "fd00::8"}]}});
    assert_eq!(row_cells(Resource::Pods, both)[5], "10.0.0.8");
    let only_ip = json!({"metadata": {"name": "p"}, "spec": {"containers": []},
                         "status": {"podIP": "10.0.0.9"}});
    assert_eq!(row_cells(Resource::Pods, only_ip)[5], "10.0.0.9");
}

#[test]
fn pending_unscheduled_pod() {
    let p = json!({
        "metadata": {"name": "p", "creationTimestamp": ago(Duration::seconds(30))},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Pending", "nominatedNodeName": "10.0.0.2",
                   "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}
    });
    assert_eq!(
        row_cells(Resource::Pods, p),
        json!([
            "p", "0/1", "Pending", "0", "30s", "<none>", "<none>", "10.0.0.2", "<none>"
        ])
        .as_array()
        .unwrap()
        .clone()
    );
}

#[test]
fn deleting_pod_is_terminating_unless_finished() {
    let mut p = pod(json!({
        "phase": "Running",
        "conditions": [{"type": "Initialized", "status": "True"}],
        "containerStatuses": [running("cce-eni-ipam", 0), running("sidecar", 0)]
    }));
    p["metadata"]["deletionTimestamp"] = json!(ago(Duration::seconds(3)));
    assert_eq!(row_cells(Resource::Pods, p.clone())[2], "Terminating");
    p["status"]["phase"] = json!("Succeeded");
    p["status"]["containerStatuses"] = json!([]);
    assert_eq!(row_cells(Resource::Pods, p.clone())[2], "Succeeded");
    p["status"]["reason"] = json!("NodeLost");
    assert_eq!(row_cells(Resource::Pods, p)[2], "Unknown");
}

#[test]
fn completed_container_beside_a_running_one_reads_running_or_not_ready() {
    let mut p = pod(json!({
        "phase": "Running",
        "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
        "containerStatuses": [
            {"name": "cce-eni-ipam", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            running("sidecar", 0)
        ]
    }));
    assert_eq!(row_cells(Resource::Pods, p.clone())[2], "Running");
    p["status"]["conditions"][1]["status"] = json!("False");
    assert_eq!(row_cells(Resource::Pods, p)[2], "NotReady");
}

#[test]
fn readiness_gates_and_row_conditions() {
    let p = json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [], "readinessGates": [{"conditionType": "a"}, {"conditionType": "b"}]},
        "status": {"phase": "Failed", "conditions": [{"type": "a", "status": "True"}, {"type": "b", "status": "False"}]}
    });
    assert_eq!(row_cells(Resource::Pods, p.clone())[8], "1/2");
    let table = render(Resource::Pods, &[Arc::new(p)], "9", now());
    assert_eq!(
        table["rows"][0]["conditions"],
        json!([{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}])
    );
}

#[test]
fn scheduling_gated_pod() {
    let p = json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c"}]},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "reason": "SchedulingGated"}]}
    });
    assert_eq!(row_cells(Resource::Pods, p)[2], "SchedulingGated");
}

// --- Workloads ------------------------------------------------------------------------------

#[test]
fn deployment_cells() {
    let d = json!({
        "metadata": {"name": "cce-eni-ipam", "creationTimestamp": created(90)},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "cce-eni-ipam"}},
                 "template": {"spec": {"containers": [{"name": "cce-eni-ipam", "image": IMAGE}]}}},
        "status": {"readyReplicas": 3, "updatedReplicas": 3, "availableReplicas": 3}
    });
    assert_eq!(
        row_cells(Resource::Deployments, d),
        json!([
            "cce-eni-ipam",
            "3/3",
            3,
            3,
            "90d",
            "cce-eni-ipam",
            IMAGE,
            "app=cce-eni-ipam"
        ])
        .as_array()
        .unwrap()
        .clone()
    );
    let fresh = json!({"metadata": {"name": "d"}, "spec": {"selector": {}}});
    assert_eq!(
        row_cells(Resource::Deployments, fresh),
        json!(["d", "0/1", 0, 0, "<unknown>", "", "", ""])
            .as_array()
            .unwrap()
            .clone()
    );
}

#[test]
fn daemonset_with_node_selector_and_expressions() {
    let ds = json!({
        "metadata": {"name": "agent", "creationTimestamp": created(1)},
        "spec": {
            "selector": {"matchLabels": {"name": "agent"},
                         "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]},
                                              {"key": "arch", "operator": "Exists"},
                                              {"key": "zz", "operator": "DoesNotExist"}]},
            "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux", "cluster-role": "master"},
                                  "initContainers": [{"name": "install-cni-binary", "image": "x"}],
                                  "containers": [{"name": "a", "image": "ia"}, {"name": "b", "image": "ib"}]}}
        },
        "status": {"desiredNumberScheduled": 5, "currentNumberScheduled": 4, "numberReady": 3,
                   "updatedNumberScheduled": 2, "numberAvailable": 1}
    });
    assert_eq!(
        row_cells(Resource::DaemonSets, ds),
        json!([
            "agent",
            5,
            4,
            3,
            2,
            1,
            "cluster-role=master,kubernetes.io/os=linux",
            "24h",
            "a,b",
            "ia,ib",
            "arch,name=agent,tier in (a,b),!zz"
        ])
        .as_array()
        .unwrap()
        .clone()
    );
}

#[test]
fn replicaset_cells() {
    let rs = json!({
        "metadata": {"name": "cce-eni-ipam-6f7d9", "creationTimestamp": ago(Duration::minutes(185))},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "cce-eni-ipam", "pod-template-hash": "6f7d9"}},
                 "template": {"spec": {"containers": [{"name": "cce-eni-ipam", "image": IMAGE}]}}},
        "status": {"replicas": 3, "readyReplicas": 2}
    });
    assert_eq!(
        row_cells(Resource::ReplicaSets, rs),
        json!([
            "cce-eni-ipam-6f7d9",
            3,
            3,
            2,
            "3h5m",
            "cce-eni-ipam",
            IMAGE,
            "app=cce-eni-ipam,pod-template-hash=6f7d9"
        ])
        .as_array()
        .unwrap()
        .clone()
    );
    let bad = json!({"metadata": {"name": "r"},
                     "spec": {"replicas": 0, "selector": {"matchExpressions": [{"key": "k", "operator": "Near"}]}}});
    let cells = row_cells(Resource::ReplicaSets, bad);
    assert_eq!(cells[1], 0);
    assert_eq!(cells[7], "<error>");
    for expression in [
        json!({"key": "k", "operator": "In", "values": []}),
        json!({"key": "k", "operator": "Exists", "values": ["v"]}),
    ] {
        let rs = json!({"metadata": {"name": "r"}, "spec": {"selector": {"matchExpressions": [expression]}}});
        assert_eq!(row_cells(Resource::ReplicaSets, rs)[7], "<error>");
    }
    let single = json!({"metadata": {"name": "r"},
                        "spec": {"selector": {"matchExpressions": [{"key": "k", "operator": "NotIn", "values": ["v"]}]}}});
    assert_eq!(row_cells(Resource::ReplicaSets, single)[7], "k notin (v)");
    let invalid = json!({"metadata": {"name": "d"},
                         "spec": {"selector": {"matchExpressions": [{"key": "k", "operator": "Near"}]}}});
    assert_eq!(row_cells(Resource::Deployments, invalid)[7], "<invalid>");
}

#[test]
fn controller_revision_cells() {
    let cr = json!({
        "metadata": {"name": "cce-cni-node-agent-5d8f", "creationTimestamp": created(90),
                     "ownerReferences": [
                         {"apiVersion": "v1", "kind": "Other", "name": "x", "uid": "0"},
                         {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "cce-cni-node-agent",
                          "uid": "1", "controller": true}]},
        "revision": 2
    });
    assert_eq!(
        row_cells(Resource::ControllerRevisions, cr),
        json!([
            "cce-cni-node-agent-5d8f",
            "daemonset.apps/cce-cni-node-agent",
            2,
            "90d"
        ])
        .as_array()
        .unwrap()
        .clone()
    );
    let orphan = json!({"metadata": {"name": "o"}, "revision": 1});
    assert_eq!(
        row_cells(Resource::ControllerRevisions, orphan)[1],
        "<none>"
    );
}

// --- Core kinds -----------------------------------------------------------------------------

#[test]
fn namespace_configmap_lease_and_webhook_cells() {
    assert_eq!(
        row_cells(
            Resource::Namespaces,
            json!({"metadata": {"name": "kube-system", "creationTimestamp": created(90)},
                   "status": {"phase": "Terminating"}})
        ),
        vec![json!("kube-system"), json!("Terminating"), json!("90d")]
    );
    assert_eq!(
        row_cells(
            Resource::Namespaces,
            json!({"metadata": {"name": "default"}})
        )[1],
        "Active"
    );
    assert_eq!(
        row_cells(
            Resource::ConfigMaps,
            json!({"metadata": {"name": "cce-cni-node-agent", "creationTimestamp": created(90)},
                   "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}})
        ),
        vec![json!("cce-cni-node-agent"), json!(3), json!("90d")]
    );
    assert_eq!(
        row_cells(
            Resource::Leases,
            json!({"metadata": {"name": "cce-eni-ipam", "creationTimestamp": ago(Duration::seconds(59))},
                   "spec": {"holderIdentity": "10.0.0.1_abc"}})
        ),
        vec![json!("cce-eni-ipam"), json!("10.0.0.1_abc"), json!("59s")]
    );
    assert_eq!(
        row_cells(
            Resource::Leases,
            json!({"metadata": {"name": "l"}, "spec": {}})
        )[1],
        ""
    );
    assert_eq!(
        row_cells(
            Resource::ValidatingWebhookConfigurations,
            json!({"metadata": {"name": "cce-cni-guard", "creationTimestamp": created(3)},
                   "webhooks": [{"name": "a"}, {"name": "b"}]})
        ),
        vec![json!("cce-cni-guard"), json!(2), json!("3d")]
    );
}

#[test]
fn service_cells() {
    let svc = json!({
        "metadata": {"name": "cce-cni-guard", "creationTimestamp": created(90)},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "ports": [{"port": 443, "protocol": "TCP", "targetPort": 9443},
                           {"port": 53, "protocol": "UDP"}],
                 "selector": {"app": "cce-cni-guard"}}
    });
    assert_eq!(
        row_cells(Resource::Services, svc),
        json!([
            "cce-cni-guard",
            "ClusterIP",
            "10.96.0.10",
            "<none>",
            "443/TCP,53/UDP",
            "90d",
            "app=cce-cni-guard"
        ])
        .as_array()
        .unwrap()
        .clone()
    );
    let node_port = json!({"metadata": {"name": "np"},
                           "spec": {"type": "NodePort", "clusterIP": "10.96.0.11", "externalIPs": ["1.2.3.4"],
                                    "ports": [{"port": 80, "nodePort": 30080}]}});
    let cells = row_cells(Resource::Services, node_port);
    assert_eq!(cells[2], "10.96.0.11");
    assert_eq!(cells[3], "1.2.3.4");
    assert_eq!(cells[4], "80:30080/TCP");
    assert_eq!(cells[6], "<none>");
    let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["None"]}});
    let cells = row_cells(Resource::Services, lb);
    assert_eq!(cells[2], "None");
    assert_eq!(cells[3], "<pending>");
    assert_eq!(cells[4], "<none>");
    let external = json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "example.com"}});
    let cells = row_cells(Resource::Services, external);
    assert_eq!(cells[2], "<none>");
    assert_eq!(cells[3], "example.com");
}

#[test]
fn event_cells() {
    let event = json!({
        "metadata": {"name": "cce-eni-ipam-7d9c.17a1"},
        "involvedObject": {"kind": "Pod", "name": "cce-eni-ipam-7d9c", "fieldPath": "spec.containers{cce-eni-ipam}"},
        "type": "Warning", "reason": "FailedScheduling",
        "message": "0/5 nodes are available: 3 node(s) didn't have free ports for the requested pod ports.\n",
        "source": {"component": "default-scheduler"},
        "firstTimestamp": ago(Duration::minutes(12)), "lastTimestamp": ago(Duration::seconds(40)),
        "count": 7
    });
    assert_eq!(
        row_cells(Resource::Events, event),
        json!(["40s", "Warning", "FailedScheduling", "pod/cce-eni-ipam-7d9c",
               "spec.containers{cce-eni-ipam}", "default-scheduler",
               "0/5 nodes are available: 3 node(s) didn't have free ports for the requested pod ports.",
               "12m", 7, "cce-eni-ipam-7d9c.17a1"])
        .as_array()
        .unwrap()
        .clone()
    );
}

#[test]
fn event_time_fallbacks_series_and_source_host() {
    let singleton = json!({
        "metadata": {"name": "e"},
        "involvedObject": {"kind": "Node"},
        "eventTime": "2026-12-01T11:58:00.123456Z",
        "reportingComponent": "kubelet", "reportingInstance": "10.0.0.1",
        "type": "Normal", "reason": "Starting", "message": "  Starting kubelet.  "
    });
    assert_eq!(
        row_cells(Resource::Events, singleton),
        // 119.88s truncates to 119s, as Go's int(d.Seconds()) does.
        json!([
            "119s",
            "Normal",
            "Starting",
            "node",
            "",
            "kubelet, 10.0.0.1",
            "Starting kubelet.",
            "119s",
            1,
            "e"
        ])
        .as_array()
        .unwrap()
        .clone()
    );
    let series = json!({
        "metadata": {"name": "s"},
        "involvedObject": {"kind": "DaemonSet", "name": "agent"},
        "firstTimestamp": ago(Duration::hours(2)),
        "series": {"count": 12, "lastObservedTime": "2026-12-01T11:59:30.000000Z"},
        "source": {"component": "daemonset-controller", "host": "master-1"}
    });
    let cells = row_cells(Resource::Events, series);
    assert_eq!(cells[0], "30s");
    assert_eq!(cells[5], "daemonset-controller, master-1");
    assert_eq!(cells[7], "120m");
    assert_eq!(cells[8], 12);
    let timeless = json!({"metadata": {"name": "t"}});
    let cells = row_cells(Resource::Events, timeless);
    assert_eq!(cells[0], "<unknown>");
    assert_eq!(cells[7], "<unknown>");
    assert_eq!(cells[3], "");
}

#[test]
fn rows_keep_the_servers_order() {
    let objects: Vec<Object> = ["b", "a", "c"]
        .iter()
        .map(|n| Arc::new(json!({"metadata": {"name": n}})))
        .collect();
    let table = render(Resource::ConfigMaps, &objects, "3", now());
    let names: Vec<&str> = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cells"][0].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b", "a", "c"]);
}

#[test]
fn odd_field_types_render_as_zero_values_without_panicking() {
    let weird = json!({"metadata": {"name": 5, "creationTimestamp": "yesterday", "labels": []},
                       "spec": {"replicas": "three", "template": {"spec": {"containers": {"a": 1}}},
                                "selector": "app=x", "ports": "80"},
                       "status": {"conditions": "Ready", "containerStatuses": [1, null]}});
    for resource in [
        Resource::Nodes,
        Resource::Pods,
        Resource::Services,
        Resource::Events,
        Resource::DaemonSets,
        Resource::Deployments,
        Resource::ReplicaSets,
    ] {
        let cells = row_cells(resource, weird.clone());
        assert!(!cells.is_empty(), "{resource:?}");
    }
    assert_eq!(
        row_cells(Resource::Deployments, weird)[..5],
        [
            json!(""),
            json!("0/1"),
            json!(0),
            json!(0),
            json!("<unknown>")
        ]
    );
}

#[test]
fn include_object_chooses_what_rows_carry() {
    let cm = json!({"kind": "ConfigMap", "apiVersion": "v1",
                    "metadata": {"name": "c", "namespace": "kube-system"}, "data": {"a": "1"}});
    let objects = [Arc::new(cm.clone())];
    let object_of = |include| {
        render_with(Resource::ConfigMaps, &objects, "7", now(), include)["rows"][0]["object"]
            .clone()
    };
    assert_eq!(object_of(IncludeObject::Object), cm);
    assert_eq!(object_of(IncludeObject::None), Value::Null);
    assert_eq!(
        object_of(IncludeObject::Metadata),
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
               "metadata": {"name": "c", "namespace": "kube-system"}})
    );
    assert_eq!(
        render(Resource::ConfigMaps, &objects, "7", now()),
        render_with(
            Resource::ConfigMaps,
            &objects,
            "7",
            now(),
            IncludeObject::default()
        )
    );
    assert_eq!(IncludeObject::parse("Object"), Some(IncludeObject::Object));
    assert_eq!(IncludeObject::parse("None"), Some(IncludeObject::None));
    assert_eq!(
        IncludeObject::parse("Metadata"),
        Some(IncludeObject::Metadata)
    );
    assert_eq!(IncludeObject::parse("object"), None);
}
