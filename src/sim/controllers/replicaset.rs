//! The ReplicaSet controller, after `pkg/controller/replicaset`: as many active pods as
//! `spec.replicas`, the least useful deleted first, and the status counters.

use std::cmp::Ordering;

use serde_json::{Map, Value, json};

use super::util::{self, str_at};
use super::{Out, Pass};
use crate::sim::model::{Action, Resource, Snapshot};

const COMPONENT: &str = "replicaset-controller";
/// `BurstReplicas`: pods created or deleted per ReplicaSet and pass at most.
const BURST: usize = 500;

pub(crate) fn reconcile(pass: &Pass, snapshot: &Snapshot, out: &mut Out) {
    for rs in &snapshot.replicasets {
        // A ReplicaSet the Deployment controller just rescaled waits for the next pass.
        if util::is_deleting(rs) || out.touched(Resource::ReplicaSets, rs) {
            continue;
        }
        sync(pass, rs, out);
    }
}

fn sync(pass: &Pass, rs: &Value, out: &mut Out) {
    let replicas = util::i64_at(rs, "/spec/replicas").unwrap_or(1).max(0) as usize;
    let owned = pass.owned_pods(util::uid(rs));
    let active: Vec<&Value> = owned
        .iter()
        .copied()
        .filter(|p| util::pod_is_active(p))
        .collect();
    let now = pass.now;
    if active.len() < replicas {
        let missing = (replicas - active.len()).min(BURST);
        let names = out.pod_names(rs, missing);
        for pod_name in names {
            if out.write(Action::Create {
                resource: Resource::Pods,
                object: new_pod(rs, &pod_name),
            }) {
                out.event(util::event(
                    rs,
                    "ReplicaSet",
                    "apps/v1",
                    "Normal",
                    "SuccessfulCreate",
                    format!("Created pod: {pod_name}"),
                    COMPONENT,
                    None,
                ));
            }
        }
    } else if active.len() > replicas {
        let mut victims = active.clone();
        victims.sort_by(|a, b| deletion_order(a, b));
        for pod in victims
            .into_iter()
            .take((active.len() - replicas).min(BURST))
        {
            if out.delete(Resource::Pods, pod) {
                out.event(util::event(
                    rs,
                    "ReplicaSet",
                    "apps/v1",
                    "Normal",
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", util::name(pod)),
                    COMPONENT,
                    None,
                ));
            }
        }
    }

    let min_ready = util::i64_at(rs, "/spec/minReadySeconds").unwrap_or(0);
    let template_labels = rs
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object);
    let (mut fully_labeled, mut ready, mut available) = (0, 0, 0);
    for p in &active {
        let labels = util::labels(p);
        if template_labels.is_none_or(|t| {
            t.iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        }) {
            fully_labeled += 1;
        }
        if util::pod_is_ready(p) {
            ready += 1;
            if util::pod_is_available(p, min_ready, now) {
                available += 1;
            } else if let Some(at) = util::available_at(p, min_ready) {
                out.requeue_at(now, at);
            }
        }
    }
    let mut status = Map::new();
    status.insert("replicas".into(), json!(active.len()));
    let omitempty = [
        ("fullyLabeledReplicas", fully_labeled),
        ("readyReplicas", ready),
        ("availableReplicas", available),
        ("observedGeneration", util::generation(rs)),
    ];
    for (k, v) in omitempty {
        if v != 0 {
            status.insert(k.into(), json!(v));
        }
    }
    let status = Value::Object(status);
    if rs.get("status") != Some(&status) {
        let mut copy = rs.clone();
        copy["status"] = status;
        out.write(Action::UpdateStatus {
            resource: Resource::ReplicaSets,
            object: copy,
        });
    }
}

/// `ActivePods` ordering: unassigned < assigned, Pending < Unknown < Running, not ready <
/// ready, recently ready < long ready, newer < older.
fn deletion_order(a: &Value, b: &Value) -> Ordering {
    let assigned = |p: &Value| str_at(p, "/spec/nodeName").is_some_and(|n| !n.is_empty());
    let phase_rank = |p: &Value| match util::pod_phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    };
    let ready_since = |p: &Value| {
        util::condition(p, "Ready")
            .and_then(|c| str_at(c, "/lastTransitionTime"))
            .unwrap_or("")
            .to_string()
    };
    assigned(a)
        .cmp(&assigned(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| util::pod_is_ready(a).cmp(&util::pod_is_ready(b)))
        .then_with(|| ready_since(b).cmp(&ready_since(a)))
        .then_with(|| {
            str_at(b, "/metadata/creationTimestamp").cmp(&str_at(a, "/metadata/creationTimestamp"))
        })
        .then_with(|| util::name(b).cmp(util::name(a)))
}

fn new_pod(rs: &Value, pod_name: &str) -> Value {
    let template = rs.pointer("/spec/template").unwrap_or(&Value::Null);
    let mut meta = json!({
        "name": pod_name,
        "generateName": format!("{}-", util::name(rs)),
        "namespace": util::namespace(rs),
        "ownerReferences": [util::controller_ref(rs, "ReplicaSet")],
    });
    for key in ["labels", "annotations"] {
        if let Some(v) = template
            .pointer(&format!("/metadata/{key}"))
            .filter(|v| v.as_object().is_some_and(|m| !m.is_empty()))
        {
            meta[key] = v.clone();
        }
    }
    let spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    let qos = super::kubelet::qos_class(&spec);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": {"phase": "Pending", "qosClass": qos},
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::sim::model::Behaviour;

    fn rs(replicas: i64) -> Value {
        json!({
            "metadata": {"name": "web-abc", "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "img"}]}}
            }
        })
    }

    #[test]
    fn creates_and_deletes_to_match_replicas() {
        let mut store = FakeStore::with_nodes(0, 2);
        store.put(Resource::ReplicaSets, rs(3));
        store.settle(&Behaviour::default(), 20);
        let pods = store.pods_with_label("app", "web");
        assert_eq!(pods.len(), 3);
        assert!(pods.iter().all(|p| util::name(p).starts_with("web-abc-")));
        let s = store
            .get(Resource::ReplicaSets, "default", "web-abc")
            .unwrap()["status"]
            .clone();
        assert_eq!(
            s,
            json!({"replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 3,
            "availableReplicas": 3, "observedGeneration": 1})
        );
        store.patch(Resource::ReplicaSets, "default", "web-abc", |r| {
            r["spec"]["replicas"] = json!(0)
        });
        store.settle(&Behaviour::default(), 20);
        assert!(store.pods_with_label("app", "web").is_empty());
        let s = store
            .get(Resource::ReplicaSets, "default", "web-abc")
            .unwrap()["status"]
            .clone();
        assert_eq!(s, json!({"replicas": 0, "observedGeneration": 2}));
        store.patch(Resource::ReplicaSets, "default", "web-abc", |r| {
            r["spec"]["replicas"] = json!(3)
        });
        store.settle(&Behaviour::default(), 20);
        assert_eq!(store.pods_with_label("app", "web").len(), 3);
        assert_eq!(
            store
                .events
                .iter()
                .filter(|e| e.reason == "SuccessfulCreate")
                .count(),
            6
        );
    }

    #[test]
    fn scale_down_removes_unscheduled_pods_first() {
        let mut store = FakeStore::with_nodes(0, 1);
        store.put(Resource::ReplicaSets, rs(2));
        store.settle(&Behaviour::default(), 20);
        // A third pod that cannot be scheduled anywhere.
        store.patch_node("worker-1", |n| n["spec"]["unschedulable"] = json!(true));
        store.patch(Resource::ReplicaSets, "default", "web-abc", |r| {
            r["spec"]["replicas"] = json!(3)
        });
        store.settle(&Behaviour::default(), 20);
        let pending: Vec<String> = store
            .pods_with_label("app", "web")
            .iter()
            .filter(|p| p.pointer("/spec/nodeName").is_none())
            .map(|p| util::name(p).to_string())
            .collect();
        assert_eq!(pending.len(), 1);
        store.patch(Resource::ReplicaSets, "default", "web-abc", |r| {
            r["spec"]["replicas"] = json!(2)
        });
        store.settle(&Behaviour::default(), 20);
        let left: Vec<String> = store
            .pods_with_label("app", "web")
            .iter()
            .map(|p| util::name(p).to_string())
            .collect();
        assert_eq!(left.len(), 2);
        assert!(!left.contains(&pending[0]));
    }
}
