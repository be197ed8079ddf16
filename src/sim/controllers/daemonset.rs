//! The DaemonSet controller, after `pkg/controller/daemon`: one pod per eligible node,
//! ControllerRevisions for the template history (reused and renumbered on rollback), the
//! RollingUpdate strategy with maxUnavailable/maxSurge, OnDelete, and the status counters.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::scheduler::{node_matches, untolerated_taint};
use super::util::{
    self, CONTROLLER_REVISION_HASH_LABEL, POD_TEMPLATE_GENERATION_LABEL, canonical_json,
    daemonset_patch, str_at,
};
use super::{Out, Pass, PodInfo};
use crate::sim::model::{Action, Resource, Snapshot};

const COMPONENT: &str = "daemonset-controller";
/// `BurstReplicas`: pods created or deleted per DaemonSet and pass at most.
const BURST: usize = 250;

pub(crate) fn reconcile(pass: &Pass, snapshot: &Snapshot, out: &mut Out) {
    for ds in &snapshot.daemonsets {
        if !util::is_deleting(ds) {
            sync(pass, snapshot, ds, out);
        }
    }
}

fn sync(pass: &Pass, snapshot: &Snapshot, ds: &Value, out: &mut Out) {
    let ds_uid = util::uid(ds);
    let ns = util::namespace(ds);
    let Some(template) = ds.pointer("/spec/template") else {
        return;
    };
    let selector = ds.pointer("/spec/selector");

    // Histories: claim ours, adopt matching orphans.
    let mut owned: Vec<&Value> = Vec::new();
    for cr in &snapshot.controllerrevisions {
        let cr = cr.as_ref();
        if util::namespace(cr) != ns {
            continue;
        }
        match util::controller_uid(cr) {
            Some(u) if u == ds_uid => owned.push(cr),
            None if !util::is_deleting(cr)
                && util::selector_matches(selector, util::labels(cr)) =>
            {
                out.write(Action::Update {
                    resource: Resource::ControllerRevisions,
                    object: util::adopted(cr, ds, "DaemonSet"),
                });
                owned.push(cr);
            }
            _ => {}
        }
    }
    let data = daemonset_patch(template);
    let data_text = canonical_json(&data);
    let revision = |cr: &Value| util::i64_at(cr, "/revision").unwrap_or(0);
    let (mut current, old): (Vec<&Value>, Vec<&Value>) = owned
        .iter()
        .partition(|cr| cr.get("data").map(canonical_json).as_deref() == Some(data_text.as_str()));
    current.sort_by_key(|cr| std::cmp::Reverse(revision(cr)));
    // Duplicates of the current revision: keep the newest number.
    for dup in current.iter().skip(1) {
        out.delete(Resource::ControllerRevisions, dup);
    }
    let next_revision = old.iter().map(|cr| revision(cr)).max().unwrap_or(0) + 1;
    let collision_count = util::i64_at(ds, "/status/collisionCount");
    let hash = match current.first() {
        Some(cur) => {
            if revision(cur) < next_revision {
                let mut renumbered = (*cur).clone();
                renumbered["revision"] = json!(next_revision);
                out.write(Action::Update {
                    resource: Resource::ControllerRevisions,
                    object: renumbered,
                });
            }
            util::label(cur, CONTROLLER_REVISION_HASH_LABEL)
                .map(str::to_string)
                .unwrap_or_else(|| util::template_hash(template, collision_count))
        }
        None => {
            let hash = util::template_hash(template, collision_count);
            let cr_name = format!("{}-{}", util::name(ds), hash);
            let taken = snapshot
                .controllerrevisions
                .iter()
                .any(|cr| util::namespace(cr) == ns && util::name(cr) == cr_name);
            if taken {
                // A different revision holds the name: bump collisionCount and hash again.
                let mut bumped = ds.clone();
                bumped["status"]["collisionCount"] = json!(collision_count.unwrap_or(0) + 1);
                out.write(Action::UpdateStatus {
                    resource: Resource::DaemonSets,
                    object: bumped,
                });
                return;
            }
            let mut labels = template
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), json!(hash));
            let mut meta = json!({
                "name": cr_name,
                "namespace": ns,
                "labels": labels,
                "ownerReferences": [util::controller_ref(ds, "DaemonSet")],
            });
            if let Some(a) = ds.pointer("/metadata/annotations").filter(|a| !a.is_null()) {
                meta["annotations"] = a.clone();
            }
            out.write(Action::Create {
                resource: Resource::ControllerRevisions,
                object: json!({
                    "apiVersion": "apps/v1",
                    "kind": "ControllerRevision",
                    "metadata": meta,
                    "data": data,
                    "revision": next_revision,
                }),
            });
            hash
        }
    };
    let generation = ds_template_generation(ds);
    let is_updated = |pod: &Value| {
        util::label(pod, CONTROLLER_REVISION_HASH_LABEL) == Some(hash.as_str())
            || util::label(pod, POD_TEMPLATE_GENERATION_LABEL) == Some(generation.as_str())
    };

    let pod_spec = daemon_pod_spec(template);
    let min_ready = util::i64_at(ds, "/spec/minReadySeconds").unwrap_or(0);
    let now = pass.now;

    // Daemon pods by the node they are for; finished pods that are being deleted are gone.
    let mut by_node: HashMap<&str, Vec<Daemon>> = HashMap::new();
    for info in pass.owned_infos(ds_uid) {
        if info.terminal() && info.deleting {
            continue;
        }
        let node = info
            .node
            .or_else(|| util::pod_target_node(info.obj))
            .unwrap_or("");
        by_node.entry(node).or_default().push(Daemon {
            info,
            updated: is_updated(info.obj),
        });
    }
    for pods in by_node.values_mut() {
        if pods.len() > 1 {
            pods.sort_by(|a, b| by_creation_and_phase(a.info, b.info));
        }
    }

    let strategy = str_at(ds, "/spec/updateStrategy/type").unwrap_or("RollingUpdate");
    let rolling = strategy == "RollingUpdate";
    let eligibility: Vec<(&str, bool, bool)> = pass
        .nodes
        .iter()
        .map(|n| {
            let (run, keep) = should_run(&pod_spec, n);
            (util::name(n), run, keep)
        })
        .collect();
    let desired = eligibility.iter().filter(|(_, run, _)| *run).count() as i64;
    let rolling_update = ds.pointer("/spec/updateStrategy/rollingUpdate");
    let mut max_surge = if rolling {
        util::scaled_value(
            rolling_update.and_then(|r| r.get("maxSurge")),
            "0",
            desired,
            true,
        )
    } else {
        0
    };
    let mut max_unavailable = util::scaled_value(
        rolling_update.and_then(|r| r.get("maxUnavailable")),
        "1",
        desired,
        true,
    );
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    max_surge = max_surge.max(0);
    let surge = rolling && max_surge > 0;

    // manage: create missing pods, delete pods that must not be there.
    let mut create_on: Vec<&str> = Vec::new();
    let mut delete: Vec<&Value> = Vec::new();
    for &(node_name, run, keep) in &eligibility {
        let pods = by_node.get(node_name).map(Vec::as_slice).unwrap_or(&[]);
        if run && pods.is_empty() {
            create_on.push(node_name);
        } else if keep && !pods.is_empty() {
            let mut running: Vec<&Daemon> = Vec::new();
            for p in pods {
                if p.info.deleting {
                    continue;
                }
                if p.info.phase == "Failed" {
                    delete.push(p.info.obj);
                } else {
                    running.push(p);
                }
            }
            if running.len() > 1 {
                if !surge {
                    delete.extend(running.iter().skip(1).map(|p| p.info.obj));
                } else {
                    let new = running.iter().find(|p| p.updated);
                    let old = running.iter().find(|p| !p.updated);
                    let mut keep_set: Vec<&Value> = Vec::new();
                    match new {
                        Some(n) => {
                            keep_set.push(n.info.obj);
                            if let Some(o) = old
                                && !n.info.ready
                                && o.info.ready
                            {
                                keep_set.push(o.info.obj);
                            }
                        }
                        None => keep_set.push(running[0].info.obj),
                    }
                    delete.extend(
                        running
                            .iter()
                            .map(|p| p.info.obj)
                            .filter(|p| !keep_set.iter().any(|k| std::ptr::eq(*k, *p))),
                    );
                }
            }
        } else if !keep {
            delete.extend(live(pods));
        }
    }
    for (node_name, pods) in &by_node {
        if !pass.node_by_name.contains_key(node_name) {
            delete.extend(live(pods));
        }
    }

    if create_on.is_empty() && delete.is_empty() && rolling {
        let (del, create) = rolling_update_plan(
            &eligibility,
            &by_node,
            max_surge,
            max_unavailable,
            min_ready,
            now,
        );
        delete = del;
        create_on = create;
    }
    create_on.truncate(BURST);
    delete.truncate(BURST);
    let names = out.pod_names(ds, create_on.len());
    for (node_name, pod_name) in create_on.iter().zip(names) {
        let pod = new_pod(
            ds,
            &pod_spec,
            template,
            &hash,
            &generation,
            node_name,
            &pod_name,
        );
        if out.write(Action::Create {
            resource: Resource::Pods,
            object: pod,
        }) {
            out.event(util::event(
                ds,
                "DaemonSet",
                "apps/v1",
                "Normal",
                "SuccessfulCreate",
                format!("Created pod: {pod_name}"),
                COMPONENT,
                None,
            ));
        }
    }
    for pod in delete {
        if out.delete(Resource::Pods, pod) {
            out.event(util::event(
                ds,
                "DaemonSet",
                "apps/v1",
                "Normal",
                "SuccessfulDelete",
                format!("Deleted pod: {}", util::name(pod)),
                COMPONENT,
                None,
            ));
        }
    }

    cleanup_history(ds, &old, pass.owned_pods(ds_uid), out);

    // Status, from what the pods look like now.
    let (mut current_n, mut misscheduled, mut ready, mut available, mut updated) = (0, 0, 0, 0, 0);
    for &(node_name, run, _) in &eligibility {
        let pods = by_node.get(node_name).map(Vec::as_slice).unwrap_or(&[]);
        if run {
            let Some(pod) = pods.first() else { continue };
            current_n += 1;
            if pod.info.ready {
                ready += 1;
                if min_ready <= 0 || util::pod_is_available(pod.info.obj, min_ready, now) {
                    available += 1;
                } else if let Some(at) = util::available_at(pod.info.obj, min_ready) {
                    out.requeue_at(now, at);
                }
            }
            if pod.updated {
                updated += 1;
            }
        } else if !pods.is_empty() {
            misscheduled += 1;
        }
    }
    let mut status = Map::new();
    status.insert("currentNumberScheduled".into(), json!(current_n));
    status.insert("numberMisscheduled".into(), json!(misscheduled));
    status.insert("desiredNumberScheduled".into(), json!(desired));
    status.insert("numberReady".into(), json!(ready));
    let omitempty = [
        ("observedGeneration", util::generation(ds)),
        ("updatedNumberScheduled", updated),
        ("numberAvailable", available),
        ("numberUnavailable", desired - available),
    ];
    for (k, v) in omitempty {
        if v != 0 {
            status.insert(k.into(), json!(v));
        }
    }
    if let Some(c) = collision_count {
        status.insert("collisionCount".into(), json!(c));
    }
    if let Some(conds) = ds.pointer("/status/conditions").filter(|c| !c.is_null()) {
        status.insert("conditions".into(), conds.clone());
    }
    let status = Value::Object(status);
    if ds.get("status") != Some(&status) {
        let mut copy = ds.clone();
        copy["status"] = status;
        out.write(Action::UpdateStatus {
            resource: Resource::DaemonSets,
            object: copy,
        });
    }
}

type NewAndOld<'b, 'a> = (Option<&'b Daemon<'a>>, Option<&'b Daemon<'a>>);

/// `findUpdatedPodsOnNode`: at most one new and one old live pod, else "not ok".
fn split<'b, 'a>(pods: &'b [Daemon<'a>]) -> Option<NewAndOld<'b, 'a>> {
    let (mut new, mut old) = (None, None);
    for p in pods.iter().filter(|p| !p.info.deleting) {
        let slot = if p.updated { &mut new } else { &mut old };
        if slot.is_some() {
            return None;
        }
        *slot = Some(p);
    }
    Some((new, old))
}

/// The daemon pods not already being deleted.
fn live<'a>(pods: &[Daemon<'a>]) -> Vec<&'a Value> {
    pods.iter()
        .filter(|p| !p.info.deleting)
        .map(|p| p.info.obj)
        .collect()
}

/// A daemon pod and whether it runs the current template.
struct Daemon<'a> {
    info: &'a PodInfo<'a>,
    updated: bool,
}

/// The nodes to create a new pod on and the old pods to delete, as `rollingUpdate` decides.
fn rolling_update_plan<'a>(
    eligibility: &[(&'a str, bool, bool)],
    by_node: &HashMap<&str, Vec<Daemon<'a>>>,
    max_surge: i64,
    max_unavailable: i64,
    min_ready: i64,
    now: time::OffsetDateTime,
) -> (Vec<&'a Value>, Vec<&'a str>) {
    let available = |p: &Daemon| {
        p.info.ready && (min_ready <= 0 || util::pod_is_available(p.info.obj, min_ready, now))
    };
    // `findUpdatedPodsOnNode`: at most one new and one old live pod, else "not ok".
    let nodes_with_pods = eligibility
        .iter()
        .map(|(n, _, _)| *n)
        .filter(|n| by_node.contains_key(n));
    if max_surge == 0 {
        let mut unavailable = 0;
        let mut allowed: Vec<&Value> = Vec::new();
        let mut candidates: Vec<&Value> = Vec::new();
        for node in nodes_with_pods {
            let Some((new, old)) = split(&by_node[node]) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(n), None) => {
                    if !available(n) {
                        unavailable += 1;
                    }
                }
                (None, Some(o)) => {
                    if !available(o) {
                        allowed.push(o.info.obj);
                    } else if unavailable < max_unavailable {
                        candidates.push(o.info.obj);
                    }
                }
            }
        }
        let remaining = (max_unavailable - unavailable).clamp(0, candidates.len() as i64) as usize;
        allowed.extend(candidates.into_iter().take(remaining));
        return (allowed, Vec::new());
    }
    let mut delete: Vec<&Value> = Vec::new();
    let mut allowed_new: Vec<&str> = Vec::new();
    let mut candidate_new: Vec<&str> = Vec::new();
    let mut surged = 0;
    for node in nodes_with_pods {
        let Some((new, old)) = split(&by_node[node]) else {
            surged += 1;
            continue;
        };
        match (new, old) {
            (_, None) => {}
            (None, Some(o)) => {
                if !available(o) {
                    allowed_new.push(node);
                } else if surged < max_surge {
                    candidate_new.push(node);
                }
            }
            (Some(n), Some(o)) => {
                if !available(n) {
                    surged += 1;
                } else {
                    delete.push(o.info.obj);
                }
            }
        }
    }
    let remaining = (max_surge - surged).clamp(0, candidate_new.len() as i64) as usize;
    allowed_new.extend(candidate_new.into_iter().take(remaining));
    (delete, allowed_new)
}

/// `cleanupHistory`: old revisions beyond `revisionHistoryLimit` that no pod uses go.
fn cleanup_history(ds: &Value, old: &[&Value], pods: &[&Value], out: &mut Out) {
    let limit = util::i64_at(ds, "/spec/revisionHistoryLimit")
        .unwrap_or(10)
        .max(0) as usize;
    if old.len() <= limit {
        return;
    }
    let live: HashSet<&str> = pods
        .iter()
        .filter_map(|p| util::label(p, CONTROLLER_REVISION_HASH_LABEL))
        .collect();
    let mut sorted: Vec<&&Value> = old.iter().collect();
    sorted.sort_by_key(|cr| util::i64_at(cr, "/revision").unwrap_or(0));
    let mut to_kill = old.len() - limit;
    for cr in sorted {
        if to_kill == 0 {
            break;
        }
        if util::label(cr, CONTROLLER_REVISION_HASH_LABEL).is_some_and(|h| live.contains(h)) {
            continue;
        }
        out.delete(Resource::ControllerRevisions, cr);
        to_kill -= 1;
    }
}

fn ds_template_generation(ds: &Value) -> String {
    util::annotation(ds, "deprecated.daemonset.template.generation")
        .map(str::to_string)
        .unwrap_or_else(|| util::generation(ds).to_string())
}

/// `podByCreationTimestampAndPhase`: bound and running pods first, then the oldest.
fn by_creation_and_phase(a: &PodInfo, b: &PodInfo) -> std::cmp::Ordering {
    b.node
        .is_some()
        .cmp(&a.node.is_some())
        .then_with(|| (b.phase == "Running").cmp(&(a.phase == "Running")))
        .then_with(|| a.created.cmp(b.created))
        .then_with(|| a.name.cmp(b.name))
}

/// `nodeShouldRunDaemonPod`: (should run a new pod, may keep a running one).
fn should_run(pod_spec: &Value, node: &Value) -> (bool, bool) {
    if let Some(n) = str_at(pod_spec, "/nodeName").filter(|n| !n.is_empty())
        && n != util::name(node)
    {
        return (false, false);
    }
    if !node_matches(pod_spec, node) {
        return (false, false);
    }
    let tolerations = pod_spec.get("tolerations").and_then(Value::as_array);
    if untolerated_taint(tolerations, node, &["NoExecute"]).is_some() {
        return (false, false);
    }
    if untolerated_taint(tolerations, node, &["NoSchedule"]).is_some() {
        return (false, true);
    }
    (true, true)
}

/// The template's pod spec with the tolerations every daemon pod gets
/// (`AddOrUpdateDaemonPodTolerations`); cordoned nodes are tolerated this way.
fn daemon_pod_spec(template: &Value) -> Value {
    let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    let host_network = util::bool_at(&spec, "/hostNetwork");
    let mut wanted = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        wanted.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    if let Some(obj) = spec.as_object_mut() {
        let list = obj
            .entry("tolerations")
            .or_insert_with(|| Value::Array(Vec::new()));
        if !list.is_array() {
            *list = Value::Array(Vec::new());
        }
        if let Some(list) = list.as_array_mut() {
            for (key, effect) in wanted {
                let present = list.iter().any(|t| {
                    str_at(t, "/key") == Some(key)
                        && str_at(t, "/effect") == Some(effect)
                        && str_at(t, "/operator") == Some("Exists")
                        && str_at(t, "/value").unwrap_or("").is_empty()
                });
                if !present {
                    list.push(json!({"key": key, "operator": "Exists", "effect": effect}));
                }
            }
        }
    }
    spec
}

fn new_pod(
    ds: &Value,
    pod_spec: &Value,
    template: &Value,
    hash: &str,
    generation: &str,
    node_name: &str,
    pod_name: &str,
) -> Value {
    let mut labels = template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), json!(hash));
    labels.insert(POD_TEMPLATE_GENERATION_LABEL.into(), json!(generation));
    let mut meta = json!({
        "name": pod_name,
        "generateName": format!("{}-", util::name(ds)),
        "namespace": util::namespace(ds),
        "labels": labels,
        "ownerReferences": [util::controller_ref(ds, "DaemonSet")],
    });
    if let Some(a) = template
        .pointer("/metadata/annotations")
        .filter(|a| a.as_object().is_some_and(|m| !m.is_empty()))
    {
        meta["annotations"] = a.clone();
    }
    let mut spec = pod_spec.clone();
    let term = json!({"key": "metadata.name", "operator": "In", "values": [node_name]});
    let existing_terms = spec
        .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let terms: Vec<Value> = if existing_terms.is_empty() {
        vec![json!({"matchFields": [term]})]
    } else {
        existing_terms
            .into_iter()
            .map(|t| {
                let mut t2 = json!({"matchFields": [term.clone()]});
                if let Some(e) = t.get("matchExpressions") {
                    t2["matchExpressions"] = e.clone();
                }
                t2
            })
            .collect()
    };
    if let Some(obj) = spec.as_object_mut() {
        let affinity = obj.entry("affinity").or_insert_with(|| json!({}));
        if !affinity.is_object() {
            *affinity = json!({});
        }
        if !affinity["nodeAffinity"].is_object() {
            affinity["nodeAffinity"] = json!({});
        }
        affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] =
            json!({"nodeSelectorTerms": terms});
        // Created bound (the affinity keeps the upstream shape): saves a scheduling pass
        // per node, which matters for thousand-node rollouts.
        obj.insert("nodeName".into(), json!(node_name));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": {"phase": "Pending", "qosClass": super::kubelet::qos_class(pod_spec)},
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::sim::model::Behaviour;
    use std::time::Instant;

    fn agent(image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "kube-system"},
            "spec": {
                "selector": {"matchLabels": {"name": "agent"}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
                "revisionHistoryLimit": 10,
                "template": {
                    "metadata": {"labels": {"name": "agent"}},
                    "spec": {
                        "hostNetwork": true,
                        "tolerations": [{"operator": "Exists"}],
                        "initContainers": [{"name": "install", "image": image}],
                        "containers": [{"name": "agent", "image": image}]
                    }
                }
            }
        })
    }

    fn set_image(store: &mut FakeStore, image: &str) {
        store.patch(Resource::DaemonSets, "kube-system", "agent", |ds| {
            ds["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
            ds["spec"]["template"]["spec"]["initContainers"][0]["image"] = json!(image);
        });
    }

    fn ds(store: &FakeStore) -> Value {
        store
            .get(Resource::DaemonSets, "kube-system", "agent")
            .unwrap()
    }

    fn revisions(store: &FakeStore) -> Vec<(i64, String)> {
        let mut v: Vec<(i64, String)> = store
            .list(Resource::ControllerRevisions)
            .iter()
            .map(|cr| {
                let img = cr["data"]["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap()
                    .to_string();
                (cr["revision"].as_i64().unwrap(), img)
            })
            .collect();
        v.sort();
        v
    }

    fn images_on_nodes(store: &FakeStore) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = store
            .pods_with_label("name", "agent")
            .iter()
            .map(|p| {
                (
                    p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                    p["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn one_ready_pod_per_node_and_status() {
        let mut store = FakeStore::with_nodes(3, 2);
        store.put(Resource::DaemonSets, agent("img:v1"));
        store.settle(&Behaviour::default(), 100);
        let pods = store.pods_with_label("name", "agent");
        assert_eq!(pods.len(), 5);
        let nodes: HashSet<&str> = pods
            .iter()
            .map(|p| p["spec"]["nodeName"].as_str().unwrap())
            .collect();
        assert_eq!(nodes.len(), 5);
        assert!(pods.iter().all(util::pod_is_ready));
        let p = &pods[0];
        assert_eq!(p["metadata"]["labels"]["pod-template-generation"], "1");
        assert!(p["metadata"]["labels"]["controller-revision-hash"].is_string());
        let s = &ds(&store)["status"];
        assert_eq!(s["desiredNumberScheduled"], 5);
        assert_eq!(s["currentNumberScheduled"], 5);
        assert_eq!(s["numberReady"], 5);
        assert_eq!(s["updatedNumberScheduled"], 5);
        assert_eq!(s["numberAvailable"], 5);
        assert!(s.get("numberUnavailable").is_none());
        assert_eq!(s["observedGeneration"], 1);
        assert_eq!(revisions(&store), vec![(1, "img:v1".into())]);
        let cr = &store.list(Resource::ControllerRevisions)[0];
        assert_eq!(cr["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(cr["metadata"]["labels"]["name"], "agent");
        assert_eq!(
            cr["metadata"]["name"],
            format!(
                "agent-{}",
                cr["metadata"]["labels"]["controller-revision-hash"]
                    .as_str()
                    .unwrap()
            )
        );
        assert!(store.events.iter().any(
            |e| e.reason == "SuccessfulCreate" && e.message.starts_with("Created pod: agent-")
        ));
    }

    #[test]
    fn node_selector_and_taints_limit_the_nodes() {
        let mut store = FakeStore::with_nodes(3, 2);
        store.patch_node("worker-2", |n| {
            n["spec"]["taints"] = json!([{"key": "k", "value": "v", "effect": "NoSchedule"}])
        });
        let mut d = agent("img:v1");
        d["spec"]["template"]["spec"]["tolerations"] = json!([]);
        d["spec"]["template"]["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
        store.put(Resource::DaemonSets, d);
        store.patch_node("master-1", |n| {
            n["metadata"]["labels"]["kubernetes.io/os"] = json!("windows")
        });
        // A cordoned node still runs daemon pods (they tolerate unschedulable).
        store.patch_node("master-2", |n| n["spec"]["unschedulable"] = json!(true));
        store.settle(&Behaviour::default(), 100);
        let nodes: Vec<String> = images_on_nodes(&store)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(nodes, vec!["master-2", "master-3", "worker-1"]);
        assert_eq!(ds(&store)["status"]["desiredNumberScheduled"], 3);
        // Selecting the node away from a pod deletes the pod (misscheduled until then).
        store.patch_node("worker-1", |n| {
            n["metadata"]["labels"]["kubernetes.io/os"] = json!("windows")
        });
        store.settle(&Behaviour::default(), 100);
        let nodes: Vec<String> = images_on_nodes(&store)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(nodes, vec!["master-2", "master-3"]);
        assert_eq!(ds(&store)["status"]["numberMisscheduled"], 0);
    }

    #[test]
    fn rolling_update_respects_max_unavailable() {
        let mut store = FakeStore::with_nodes(3, 2);
        store.put(Resource::DaemonSets, agent("img:v1"));
        store.settle(&Behaviour::default(), 100);
        set_image(&mut store, "img:v2");
        let mut max_down = 0;
        for _ in 0..200 {
            let r = store.pass(&Behaviour::default());
            let ready_old_or_new = store
                .pods_with_label("name", "agent")
                .iter()
                .filter(|p| util::pod_is_ready(p) && !util::is_deleting(p))
                .count();
            max_down = max_down.max(5 - ready_old_or_new);
            if r.actions.is_empty() {
                break;
            }
        }
        assert_eq!(max_down, 1, "never more than maxUnavailable pods down");
        assert!(images_on_nodes(&store).iter().all(|(_, i)| i == "img:v2"));
        let s = &ds(&store)["status"];
        assert_eq!(s["updatedNumberScheduled"], 5);
        assert_eq!(s["observedGeneration"], 2);
        assert_eq!(
            revisions(&store),
            vec![(1, "img:v1".into()), (2, "img:v2".into())]
        );
    }

    #[test]
    fn rolling_update_with_surge_adds_before_removing() {
        let mut store = FakeStore::with_nodes(2, 2);
        let mut d = agent("img:v1");
        d["spec"]["updateStrategy"]["rollingUpdate"] =
            json!({"maxUnavailable": 0, "maxSurge": "50%"});
        store.put(Resource::DaemonSets, d);
        store.settle(&Behaviour::default(), 100);
        set_image(&mut store, "img:v2");
        let mut max_pods = 0;
        for _ in 0..200 {
            let r = store.pass(&Behaviour::default());
            let pods = store.pods_with_label("name", "agent");
            let ready = pods
                .iter()
                .filter(|p| util::pod_is_ready(p) && !util::is_deleting(p))
                .count();
            assert!(ready >= 4, "maxUnavailable 0 keeps every node served");
            max_pods = max_pods.max(pods.len());
            if r.actions.is_empty() {
                break;
            }
        }
        assert_eq!(max_pods, 6, "at most maxSurge (2 of 4) extra pods");
        assert!(images_on_nodes(&store).iter().all(|(_, i)| i == "img:v2"));
        assert_eq!(store.pods_with_label("name", "agent").len(), 4);
    }

    #[test]
    fn on_delete_does_not_replace_pods() {
        let mut store = FakeStore::with_nodes(1, 1);
        let mut d = agent("img:v1");
        d["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        store.put(Resource::DaemonSets, d);
        store.settle(&Behaviour::default(), 100);
        set_image(&mut store, "img:v2");
        store.settle(&Behaviour::default(), 100);
        assert!(images_on_nodes(&store).iter().all(|(_, i)| i == "img:v1"));
        assert_eq!(ds(&store)["status"].get("updatedNumberScheduled"), None);
        // A deleted pod comes back at the new template.
        let victim = store.pods_with_label("name", "agent")[0].clone();
        store.apply(Action::Delete {
            resource: Resource::Pods,
            namespace: Some("kube-system".into()),
            name: util::name(&victim).into(),
        });
        store.settle(&Behaviour::default(), 100);
        let images: Vec<String> = images_on_nodes(&store)
            .into_iter()
            .map(|(_, i)| i)
            .collect();
        assert_eq!(images.iter().filter(|i| *i == "img:v2").count(), 1);
    }

    #[test]
    fn rollback_reuses_and_renumbers_the_revision() {
        let mut store = FakeStore::with_nodes(1, 1);
        store.put(Resource::DaemonSets, agent("img:v1"));
        store.settle(&Behaviour::default(), 100);
        let first = store.list(Resource::ControllerRevisions)[0].clone();
        set_image(&mut store, "img:v2");
        store.settle(&Behaviour::default(), 100);
        // What `rollout undo` sends: the old revision's data as a patch of the template.
        let data = first["data"]["spec"]["template"].clone();
        store.patch(Resource::DaemonSets, "kube-system", "agent", |ds| {
            let mut t = data.clone();
            t.as_object_mut().unwrap().remove("$patch");
            ds["spec"]["template"] = t;
        });
        store.settle(&Behaviour::default(), 100);
        assert_eq!(
            revisions(&store),
            vec![(2, "img:v2".into()), (3, "img:v1".into())]
        );
        let crs = store.list(Resource::ControllerRevisions);
        let renumbered = crs.iter().find(|c| c["revision"] == 3).unwrap();
        assert_eq!(renumbered["metadata"]["name"], first["metadata"]["name"]);
        assert!(images_on_nodes(&store).iter().all(|(_, i)| i == "img:v1"));
        let hash = renumbered["metadata"]["labels"]["controller-revision-hash"].clone();
        assert!(
            store
                .pods_with_label("name", "agent")
                .iter()
                .all(|p| p["metadata"]["labels"]["controller-revision-hash"] == hash)
        );
        // The stored data is what kubectl computes from the current template.
        let current = ds(&store)["spec"]["template"].clone();
        assert_eq!(
            canonical_json(&renumbered["data"]),
            canonical_json(&daemonset_patch(&current))
        );
    }

    #[test]
    fn revision_history_limit_prunes_the_oldest_unused() {
        let mut store = FakeStore::with_nodes(1, 0);
        let mut d = agent("img:v1");
        d["spec"]["revisionHistoryLimit"] = json!(2);
        store.put(Resource::DaemonSets, d);
        store.settle(&Behaviour::default(), 100);
        for v in 2..=5 {
            set_image(&mut store, &format!("img:v{v}"));
            store.settle(&Behaviour::default(), 100);
        }
        assert_eq!(
            revisions(&store),
            vec![
                (3, "img:v3".into()),
                (4, "img:v4".into()),
                (5, "img:v5".into())
            ]
        );
    }

    #[test]
    fn orphan_revisions_are_adopted_into_the_history() {
        let mut store = FakeStore::with_nodes(1, 0);
        let old = agent("img:v0");
        let data = daemonset_patch(&old["spec"]["template"]);
        store.put(
            Resource::ControllerRevisions,
            json!({"metadata": {"name": "agent-old", "namespace": "kube-system",
                "labels": {"name": "agent", "controller-revision-hash": "old"}},
                "data": data, "revision": 1}),
        );
        store.put(Resource::DaemonSets, agent("img:v1"));
        store.settle(&Behaviour::default(), 100);
        assert_eq!(
            revisions(&store),
            vec![(1, "img:v0".into()), (2, "img:v1".into())]
        );
        let adopted = store
            .get(Resource::ControllerRevisions, "kube-system", "agent-old")
            .unwrap();
        assert_eq!(
            adopted["metadata"]["ownerReferences"][0]["uid"],
            ds(&store)["metadata"]["uid"]
        );
    }

    #[test]
    fn thousand_node_rollout_completes_and_reports_its_cost() {
        let mut store = FakeStore::with_nodes(3, 997);
        let mut d = agent("img:v1");
        d["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] = json!("10%");
        store.put(Resource::DaemonSets, d);
        let b = Behaviour::default();
        let t = Instant::now();
        let create_passes = store.settle(&b, 10_000);
        let created_in = t.elapsed();
        set_image(&mut store, "img:v2");
        let t = Instant::now();
        let rollout_passes = store.settle(&b, 100_000);
        let rolled_in = t.elapsed();
        println!(
            "1000 nodes: initial {create_passes} passes in {created_in:?}; rollout (maxUnavailable 10%) {rollout_passes} passes in {rolled_in:?}"
        );
        let s = &ds(&store)["status"];
        assert_eq!(s["updatedNumberScheduled"], 1000);
        assert_eq!(s["numberAvailable"], 1000);
        assert!(
            rollout_passes < 100,
            "10% at a time needs tens of passes, not {rollout_passes}"
        );
    }

    #[test]
    fn one_at_a_time_rollout_reports_its_cost() {
        let nodes = 200;
        let mut store = FakeStore::with_nodes(0, nodes);
        store.put(Resource::DaemonSets, agent("img:v1"));
        let b = Behaviour::default();
        store.settle(&b, 10_000);
        set_image(&mut store, "img:v2");
        let t = Instant::now();
        let passes = store.settle(&b, 100_000);
        println!(
            "{nodes} nodes, maxUnavailable 1: {passes} passes in {:?}",
            t.elapsed()
        );
        assert_eq!(ds(&store)["status"]["updatedNumberScheduled"], nodes);
        // delete, remove, create, start: four passes a node.
        assert!(passes <= 4 * nodes + 4, "{passes} passes");
    }
}
