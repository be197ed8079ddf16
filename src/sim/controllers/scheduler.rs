//! The scheduler: binds Pending pods to nodes with the default plugins that matter here, in
//! their upstream order: NodeUnschedulable, TaintToleration, NodeAffinity (nodeSelector and
//! required node affinity), NodePorts. A pod that fits nowhere stays Pending with
//! `PodScheduled=False/Unschedulable` and the scheduler's own FailedScheduling message.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::util::{self, str_at};
use super::{Out, Pass};
use crate::sim::model::{Action, Resource, Snapshot};

const COMPONENT: &str = "default-scheduler";
const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
const REASON_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
const REASON_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
const PREEMPTION_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// A host port as the NodePorts plugin sees it.
type HostPort = (String, i64);

/// Why one node does not fit, and whether preemption could change that.
enum Unfit {
    /// UnschedulableAndUnresolvable: preemption cannot help.
    Unresolvable(String),
    /// Unschedulable: removing lower-priority pods might help.
    Ports,
}

pub(crate) fn reconcile(pass: &Pass, _snapshot: &Snapshot, out: &mut Out) {
    let mut pending: Vec<&Value> = pass
        .pods
        .iter()
        .filter(|p| p.node.is_none() && !p.deleting && !p.terminal())
        .map(|p| p.obj)
        .filter(|p| str_at(p, "/spec/schedulerName").is_none_or(|s| s == COMPONENT))
        .collect();
    if pending.is_empty() {
        return;
    }
    // The active queue pops higher priority first, then older pods.
    pending.sort_by(|a, b| {
        priority(b).cmp(&priority(a)).then_with(|| {
            str_at(a, "/metadata/creationTimestamp")
                .cmp(&str_at(b, "/metadata/creationTimestamp"))
                .then_with(|| util::name(a).cmp(util::name(b)))
        })
    });
    let mut used_ports: HashMap<&str, HashSet<HostPort>> = HashMap::new();
    for (node, pods) in &pass.pods_by_node {
        let set = used_ports.entry(node).or_default();
        for p in pods {
            if !util::pod_is_terminal(p) {
                set.extend(host_ports(p));
            }
        }
    }
    for pod in pending {
        if out.touched(Resource::Pods, pod) {
            continue;
        }
        schedule_one(pass, pod, &mut used_ports, out);
    }
}

fn schedule_one<'a>(
    pass: &Pass<'a>,
    pod: &Value,
    used_ports: &mut HashMap<&'a str, HashSet<HostPort>>,
    out: &mut Out,
) {
    let wanted = host_ports(pod);
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    // NodeAffinity's PreFilter: a single node named by matchFields narrows the search.
    let only = util::pod_target_node(pod);
    let mut reasons: Vec<Unfit> = Vec::new();
    let mut chosen: Option<&'a str> = None;
    for node in &pass.nodes {
        let node_name = util::name(node);
        if only.is_some_and(|n| n != node_name) {
            reasons.push(Unfit::Unresolvable(REASON_AFFINITY.into()));
            continue;
        }
        match fits(spec, node, &wanted, used_ports.get(node_name)) {
            Ok(()) => {
                chosen = Some(node_name);
                break;
            }
            Err(why) => reasons.push(why),
        }
    }
    if let Some(node_name) = chosen {
        used_ports.entry(node_name).or_default().extend(wanted);
        let mut bound = pod.clone();
        if let Some(spec) = bound.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("nodeName".into(), Value::String(node_name.into()));
        }
        if out.write(Action::Update {
            resource: Resource::Pods,
            object: bound,
        }) {
            out.event(util::event(
                pod,
                "Pod",
                "v1",
                "Normal",
                "Scheduled",
                format!(
                    "Successfully assigned {}/{} to {}",
                    util::namespace(pod),
                    util::name(pod),
                    node_name
                ),
                COMPONENT,
                None,
            ));
        }
        return;
    }
    let message = fit_error(pass, pod, &reasons);
    let current = util::condition(pod, "PodScheduled");
    if current.and_then(|c| str_at(c, "/message")) == Some(message.as_str())
        && current.and_then(|c| str_at(c, "/status")) == Some("False")
    {
        return;
    }
    let mut updated = pod.clone();
    let now = util::timestamp(pass.now);
    if let Some(obj) = updated.as_object_mut() {
        let status = obj
            .entry("status")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(status) = status.as_object_mut() {
            status
                .entry("phase")
                .or_insert_with(|| Value::String("Pending".into()));
            let mut conds: Vec<Value> = status
                .get("conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            util::set_condition(
                &mut conds,
                json!({
                    "type": "PodScheduled",
                    "status": "False",
                    "lastProbeTime": null,
                    "lastTransitionTime": now,
                    "reason": "Unschedulable",
                    "message": message,
                }),
            );
            status.insert("conditions".into(), Value::Array(conds));
        }
    }
    if out.write(Action::UpdateStatus {
        resource: Resource::Pods,
        object: updated,
    }) {
        out.event(util::event(
            pod,
            "Pod",
            "v1",
            "Warning",
            "FailedScheduling",
            message,
            COMPONENT,
            None,
        ));
    }
}

/// `FitError.Error()`: the histogram of reasons, then the preemption attempt's histogram.
fn fit_error(pass: &Pass, pod: &Value, reasons: &[Unfit]) -> String {
    let total = pass.nodes.len();
    if total == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut filter: BTreeMap<String, usize> = BTreeMap::new();
    let mut preemption: BTreeMap<String, usize> = BTreeMap::new();
    let pod_priority = priority(pod);
    for (node, why) in pass.nodes.iter().zip(reasons) {
        match why {
            Unfit::Unresolvable(r) => {
                *filter.entry(r.clone()).or_default() += 1;
                *preemption.entry(PREEMPTION_NOT_HELPFUL.into()).or_default() += 1;
            }
            Unfit::Ports => {
                *filter.entry(REASON_PORTS.into()).or_default() += 1;
                // SelectVictimsOnNode: with no lower-priority pod there is nothing to evict;
                // otherwise the ports stay taken by equal-or-higher priority pods.
                let lower = pass
                    .pods_by_node
                    .get(util::name(node))
                    .is_some_and(|pods| pods.iter().any(|p| priority(p) < pod_priority));
                let r = if lower { REASON_PORTS } else { NO_VICTIMS };
                *preemption.entry(r.into()).or_default() += 1;
            }
        }
    }
    let histogram = |m: &BTreeMap<String, usize>| {
        let mut parts: Vec<String> = m.iter().map(|(r, n)| format!("{n} {r}")).collect();
        parts.sort();
        parts.join(", ")
    };
    format!(
        "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {}.",
        histogram(&filter),
        histogram(&preemption)
    )
}

fn fits(
    spec: &Value,
    node: &Value,
    wanted: &[HostPort],
    used: Option<&HashSet<HostPort>>,
) -> Result<(), Unfit> {
    let tolerations = spec.get("tolerations").and_then(Value::as_array);
    if util::bool_at(node, "/spec/unschedulable")
        && !tolerates(
            tolerations,
            &json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}),
        )
    {
        return Err(Unfit::Unresolvable(REASON_UNSCHEDULABLE.into()));
    }
    if let Some(taint) = untolerated_taint(tolerations, node, &["NoSchedule", "NoExecute"]) {
        return Err(Unfit::Unresolvable(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            str_at(taint, "/key").unwrap_or(""),
            str_at(taint, "/value").unwrap_or("")
        )));
    }
    if !node_matches(spec, node) {
        return Err(Unfit::Unresolvable(REASON_AFFINITY.into()));
    }
    if let Some(used) = used
        && wanted.iter().any(|p| used.contains(p))
    {
        return Err(Unfit::Ports);
    }
    Ok(())
}

/// The host ports a pod takes: `hostPort` of its containers, and with `hostNetwork` every
/// `containerPort` (the API server defaults `hostPort` to it).
pub(crate) fn host_ports(pod: &Value) -> Vec<HostPort> {
    let host_network = util::bool_at(pod, "/spec/hostNetwork");
    let mut ports = Vec::new();
    for c in pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for p in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let host = p
                .get("hostPort")
                .and_then(Value::as_i64)
                .filter(|h| *h > 0)
                .or_else(|| {
                    host_network
                        .then(|| p.get("containerPort").and_then(Value::as_i64))
                        .flatten()
                });
            if let Some(h) = host {
                let proto = str_at(p, "/protocol").unwrap_or("TCP").to_string();
                ports.push((proto, h));
            }
        }
    }
    ports
}

pub(crate) fn priority(pod: &Value) -> i64 {
    util::i64_at(pod, "/spec/priority").unwrap_or(0)
}

/// `Toleration.ToleratesTaint` over a list of tolerations.
pub(crate) fn tolerates(tolerations: Option<&Vec<Value>>, taint: &Value) -> bool {
    let key = str_at(taint, "/key").unwrap_or("");
    let value = str_at(taint, "/value").unwrap_or("");
    let effect = str_at(taint, "/effect").unwrap_or("");
    tolerations.into_iter().flatten().any(|t| {
        let t_effect = str_at(t, "/effect").unwrap_or("");
        let t_key = str_at(t, "/key").unwrap_or("");
        if !t_effect.is_empty() && t_effect != effect {
            return false;
        }
        if !t_key.is_empty() && t_key != key {
            return false;
        }
        match str_at(t, "/operator").unwrap_or("") {
            "" | "Equal" => str_at(t, "/value").unwrap_or("") == value,
            "Exists" => true,
            _ => false,
        }
    })
}

/// The first taint with one of `effects` that the tolerations do not tolerate.
pub(crate) fn untolerated_taint<'a>(
    tolerations: Option<&Vec<Value>>,
    node: &'a Value,
    effects: &[&str],
) -> Option<&'a Value> {
    node.get("spec")?
        .get("taints")
        .and_then(Value::as_array)?
        .iter()
        .filter(|t| effects.contains(&str_at(t, "/effect").unwrap_or("")))
        .find(|t| !tolerates(tolerations, t))
}

/// nodeSelector and required node affinity (`matchExpressions` on labels, `matchFields`
/// on `metadata.name`).
pub(crate) fn node_matches(spec: &Value, node: &Value) -> bool {
    if spec.get("nodeSelector").is_none() && spec.get("affinity").is_none() {
        return true;
    }
    let labels = util::labels(node);
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    if let Some(sel) = spec.get("nodeSelector").and_then(Value::as_object) {
        for (k, v) in sel {
            if label(k) != v.as_str() {
                return false;
            }
        }
    }
    let Some(terms) = spec
        .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
    else {
        return true;
    };
    let node_name = util::name(node);
    terms.iter().any(|term| {
        let exprs = term.get("matchExpressions").and_then(Value::as_array);
        let fields = term.get("matchFields").and_then(Value::as_array);
        if exprs.is_none_or(Vec::is_empty) && fields.is_none_or(Vec::is_empty) {
            return false;
        }
        exprs
            .into_iter()
            .flatten()
            .all(|e| requirement_matches(e, label(str_at(e, "/key").unwrap_or(""))))
            && fields.into_iter().flatten().all(|e| {
                let v = (str_at(e, "/key") == Some("metadata.name")).then_some(node_name);
                requirement_matches(e, v)
            })
    })
}

fn requirement_matches(req: &Value, have: Option<&str>) -> bool {
    let values: Vec<&str> = req
        .get("values")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let num = |s: &str| s.parse::<i64>().ok();
    match str_at(req, "/operator").unwrap_or("") {
        "In" => have.is_some_and(|h| values.contains(&h)),
        "NotIn" => have.is_none_or(|h| !values.contains(&h)),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        "Gt" => {
            matches!((have.and_then(num), values.first().and_then(|v| num(v))), (Some(h), Some(v)) if h > v)
        }
        "Lt" => {
            matches!((have.and_then(num), values.first().and_then(|v| num(v))), (Some(h), Some(v)) if h < v)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    fn ipam_pod(name: &str, node: Option<&str>) -> Value {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "kube-system", "labels": {"app": "cce-eni-ipam"}},
            "spec": {
                "hostNetwork": true,
                "nodeSelector": {"cluster-role": "master"},
                "containers": [{"name": "cce-eni-ipam", "image": "img:v1",
                    "ports": [{"containerPort": 9997, "protocol": "TCP"}, {"containerPort": 9998, "protocol": "TCP"}]}]
            },
            "status": {"phase": "Pending"}
        });
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
            p["status"]["phase"] = json!("Running");
        }
        p
    }

    #[test]
    fn host_port_conflict_keeps_the_surge_pod_pending_with_the_real_message() {
        let mut store = FakeStore::with_nodes(3, 2);
        for (i, n) in ["master-1", "master-2", "master-3"].iter().enumerate() {
            store.put(Resource::Pods, ipam_pod(&format!("old-{i}"), Some(n)));
        }
        store.put(Resource::Pods, ipam_pod("surge", None));
        let r = store.pass(&Default::default());
        let pod = store.get(Resource::Pods, "kube-system", "surge").unwrap();
        assert!(pod.pointer("/spec/nodeName").is_none());
        let cond = util::condition(&pod, "PodScheduled").unwrap();
        assert_eq!(cond["reason"], "Unschedulable");
        let expected = "0/5 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, \
            3 node(s) didn't have free ports for the requested pod ports. preemption: 0/5 nodes are \
            available: 2 Preemption is not helpful for scheduling, 3 No preemption victims found for incoming pod.";
        assert_eq!(cond["message"], expected);
        assert!(store.events.iter().any(|e| e.reason == "FailedScheduling"
            && e.type_ == "Warning"
            && e.message == expected));
        assert!(!r.actions.is_empty());
        // The same failure again writes nothing new.
        let again = store.pass(&Default::default());
        assert!(again.actions.is_empty());
    }

    #[test]
    fn binds_to_a_fitting_node_and_reports_scheduled() {
        let mut store = FakeStore::with_nodes(3, 2);
        store.put(Resource::Pods, ipam_pod("old-0", Some("master-1")));
        store.put(Resource::Pods, ipam_pod("new", None));
        store.pass(&Default::default());
        let pod = store.get(Resource::Pods, "kube-system", "new").unwrap();
        assert_eq!(pod["spec"]["nodeName"], "master-2");
        assert!(store.events.iter().any(|e| e.reason == "Scheduled"
            && e.message == "Successfully assigned kube-system/new to master-2"));
    }

    #[test]
    fn taints_and_cordons_are_honoured() {
        let mut store = FakeStore::with_nodes(1, 1);
        store.patch_node("master-1", |n| n["spec"]["unschedulable"] = json!(true));
        store.patch_node("worker-1", |n| {
            n["spec"]["taints"] =
                json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
        });
        store.put(
            Resource::Pods,
            json!({"metadata": {"name": "p", "namespace": "default"},
                   "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        );
        store.pass(&Default::default());
        let pod = store.get(Resource::Pods, "default", "p").unwrap();
        assert_eq!(
            util::condition(&pod, "PodScheduled").unwrap()["message"],
            "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were \
             unschedulable. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
        );
        // Tolerating the taint lets it in.
        store.patch(Resource::Pods, "default", "p", |p| {
            p["spec"]["tolerations"] = json!([{"key": "dedicated", "operator": "Exists"}])
        });
        store.pass(&Default::default());
        let pod = store.get(Resource::Pods, "default", "p").unwrap();
        assert_eq!(pod["spec"]["nodeName"], "worker-1");
    }
}
