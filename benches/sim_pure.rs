//! Micro-benchmarks of the sim's pure request-path work: strategic merge patches as kubectl
//! sends them, a patch of a long merging list, and Table rendering of a pod list.
//!
//! `cargo bench --bench sim_pure` measures; `cargo test --benches` runs each once.

use std::hint::black_box;
use std::sync::Arc;

use cce_cni_guard::sim::model::{Object, Resource};
use cce_cni_guard::sim::{smp, table};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const IMAGE: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.3";

fn agent_daemonset() -> Value {
    let env: Vec<Value> = (0..12)
        .map(|i| json!({"name": format!("ENV_{i}"), "value": format!("value-{i}")}))
        .collect();
    let mounts: Vec<Value> = (0..8)
        .map(|i| json!({"name": format!("v{i}"), "mountPath": format!("/mnt/{i}")}))
        .collect();
    let volumes: Vec<Value> = (0..8)
        .map(|i| json!({"name": format!("v{i}"), "hostPath": {"path": format!("/host/{i}")}}))
        .collect();
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "cce-cni-node-agent", "namespace": "kube-system",
                     "labels": {"app": "cce-cni-node-agent"},
                     "annotations": {"deprecated.daemonset.template.generation": "2"}},
        "spec": {
            "selector": {"matchLabels": {"name": "cce-cni-node-agent"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"name": "cce-cni-node-agent"}},
                "spec": {
                    "hostNetwork": true,
                    "initContainers": [{"name": "install-cni-binary", "image": IMAGE,
                                        "volumeMounts": mounts.clone()}],
                    "containers": [{"name": "cce-cni-node-agent", "image": IMAGE, "env": env,
                                    "volumeMounts": mounts, "args": ["--v=3"]}],
                    "tolerations": [{"operator": "Exists"}],
                    "volumes": volumes
                }
            }
        },
        "status": {"desiredNumberScheduled": 5, "numberReady": 5}
    })
}

fn set_image_body() -> Value {
    let image = "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4";
    json!({"spec":{"template":{"spec":{
        "$setElementOrder/containers":[{"name":"cce-cni-node-agent"}],
        "$setElementOrder/initContainers":[{"name":"install-cni-binary"}],
        "containers":[{"image":image,"name":"cce-cni-node-agent"}],
        "initContainers":[{"image":image,"name":"install-cni-binary"}]}}}})
}

fn long_list() -> (Value, Value) {
    let containers: Vec<Value> = (0..1000)
        .map(|i| json!({"name": format!("c{i}"), "image": "a:1"}))
        .collect();
    let order: Vec<Value> = (0..1000)
        .rev()
        .map(|i| json!({"name": format!("c{i}")}))
        .collect();
    let patch_items: Vec<Value> = (0..1000)
        .rev()
        .step_by(2)
        .map(|i| json!({"name": format!("c{i}"), "image": "a:2"}))
        .collect();
    (
        json!({"spec": {"containers": containers}}),
        json!({"spec": {"$setElementOrder/containers": order, "containers": patch_items}}),
    )
}

fn pods(now: OffsetDateTime) -> Vec<Object> {
    let created = (now - time::Duration::days(3)).format(&Rfc3339).unwrap();
    (0..100)
        .map(|i| {
            Arc::new(json!({
                "metadata": {"name": format!("cce-cni-node-agent-{i:05}"), "namespace": "kube-system",
                             "creationTimestamp": created, "labels": {"name": "cce-cni-node-agent"}},
                "spec": {"nodeName": format!("10.0.0.{i}"),
                         "initContainers": [{"name": "install-cni-binary", "image": IMAGE}],
                         "containers": [{"name": "cce-cni-node-agent", "image": IMAGE}]},
                "status": {"phase": "Running", "podIPs": [{"ip": format!("10.0.0.{i}")}],
                           "conditions": [{"type": "Initialized", "status": "True"},
                                          {"type": "Ready", "status": "True"}],
                           "initContainerStatuses": [{"name": "install-cni-binary",
                               "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
                           "containerStatuses": [{"name": "cce-cni-node-agent", "ready": true,
                               "restartCount": 1, "state": {"running": {"startedAt": created}},
                               "lastState": {"terminated": {"finishedAt": created}}}]}
            }))
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let daemonset = agent_daemonset();
    let body = set_image_body();
    c.bench_function("smp set image on the agent DaemonSet", |b| {
        b.iter(|| {
            smp::apply(
                Resource::DaemonSets,
                black_box(&daemonset),
                black_box(&body),
            )
        })
    });
    let (original, patch) = long_list();
    c.bench_function("smp 1000-container list with $setElementOrder", |b| {
        b.iter(|| smp::apply(Resource::Pods, black_box(&original), black_box(&patch)))
    });
    let now = OffsetDateTime::now_utc();
    let pods = pods(now);
    c.bench_function("table of 100 pods", |b| {
        b.iter(|| table::render(Resource::Pods, black_box(&pods), "1000", now))
    });
}

criterion_group!(sim_pure, benches);
criterion_main!(sim_pure);
