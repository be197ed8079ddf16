//! The kubelets of all nodes: a bound pod starts (init containers complete, containers run)
//! and turns Ready after `pod_ready_delay`; broken images fail with ErrImagePull, then
//! ImagePullBackOff; only the leader ipam pod is Ready when `ipam_leader_only` is set; pods
//! being deleted are removed.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::util::{self, str_at};
use super::{Out, Pass, PodInfo};
use crate::sim::model::{Action, Resource, Snapshot};

const COMPONENT: &str = "kubelet";
const IPAM_LABEL: (&str, &str) = ("app", "cce-eni-ipam");
/// How long a failed pull shows ErrImagePull before the kubelet backs off.
const PULL_BACKOFF_AFTER: Duration = Duration::from_secs(1);

pub(crate) fn reconcile(pass: &Pass, snapshot: &Snapshot, out: &mut Out) {
    let leaders = if pass.behaviour.ipam_leader_only {
        Some(ipam_leaders(pass, snapshot))
    } else {
        None
    };
    for info in &pass.pods {
        let pod = info.obj;
        let Some(node_name) = info.node else {
            if info.deleting {
                out.delete(Resource::Pods, pod);
            }
            continue;
        };
        let Some(node) = pass.node_by_name.get(node_name) else {
            continue;
        };
        if out.touched(Resource::Pods, pod) {
            continue;
        }
        if info.deleting {
            if out.delete(Resource::Pods, pod) {
                for c in running_containers(pod) {
                    out.event(util::event(
                        pod,
                        "Pod",
                        "v1",
                        "Normal",
                        "Killing",
                        format!("Stopping container {c}"),
                        COMPONENT,
                        Some(node_name),
                    ));
                }
            }
            continue;
        }
        if info.terminal() {
            continue;
        }
        sync_pod(pass, info, node, leaders.as_ref(), out);
    }
}

/// The ipam pods allowed to be Ready: the current leader, or else the oldest candidate.
fn ipam_leaders(pass: &Pass, snapshot: &Snapshot) -> HashSet<String> {
    let mut by_ns: std::collections::BTreeMap<&str, Vec<&Value>> = Default::default();
    for pod in &snapshot.pods {
        let pod = pod.as_ref();
        if util::label(pod, IPAM_LABEL.0) == Some(IPAM_LABEL.1)
            && !util::is_deleting(pod)
            && !util::pod_is_terminal(pod)
            && str_at(pod, "/spec/nodeName").is_some_and(|n| !n.is_empty())
            && broken_image(pass, pod).is_none()
            && ready_at(pass, pod).is_some_and(|t| t <= pass.now)
        {
            by_ns.entry(util::namespace(pod)).or_default().push(pod);
        }
    }
    let mut leaders = HashSet::new();
    for (ns, mut pods) in by_ns {
        pods.sort_by(|a, b| {
            util::pod_is_ready(b)
                .cmp(&util::pod_is_ready(a))
                .then_with(|| {
                    str_at(a, "/metadata/creationTimestamp")
                        .cmp(&str_at(b, "/metadata/creationTimestamp"))
                })
                .then_with(|| util::name(a).cmp(util::name(b)))
        });
        if let Some(p) = pods.first() {
            leaders.insert(format!("{ns}/{}", util::name(p)));
        }
    }
    leaders
}

fn start_time(pass: &Pass, pod: &Value) -> OffsetDateTime {
    util::time_at(pod, "/status/startTime").unwrap_or(pass.now)
}

fn ready_at(pass: &Pass, pod: &Value) -> Option<OffsetDateTime> {
    util::time_at(pod, "/status/startTime").map(|t| t + pass.behaviour.pod_ready_delay)
}

fn containers<'a>(pod: &'a Value, list: &str) -> Vec<&'a Value> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// The first container (init containers first) whose image fails to pull.
fn broken_image<'a>(pass: &Pass, pod: &'a Value) -> Option<(&'static str, &'a Value)> {
    let re = pass.broken_image.as_ref()?;
    for list in ["initContainers", "containers"] {
        for c in containers(pod, list) {
            if re.is_match(str_at(c, "/image").unwrap_or("")) {
                return Some((list, c));
            }
        }
    }
    None
}

fn running_containers(pod: &Value) -> Vec<String> {
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|s| s.pointer("/state/running").is_some())
        .filter_map(|s| str_at(s, "/name").map(str::to_string))
        .collect()
}

fn previous_state<'a>(pod: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
    let key = if list == "initContainers" {
        "/status/initContainerStatuses"
    } else {
        "/status/containerStatuses"
    };
    pod.pointer(key)
        .and_then(Value::as_array)?
        .iter()
        .find(|s| str_at(s, "/name") == Some(name))
}

fn sync_pod(
    pass: &Pass,
    info: &PodInfo,
    node: &Value,
    leaders: Option<&HashSet<String>>,
    out: &mut Out,
) {
    let pod = info.obj;
    let now = pass.now;
    let node_name = util::name(node);
    let broken = broken_image(pass, pod);
    let has_started = pod
        .get("status")
        .and_then(|s| s.get("startTime"))
        .is_some_and(Value::is_string);
    // Parsing timestamps is the costly part of a pass over thousands of settled pods.
    let (started, delay_over) = if pass.behaviour.pod_ready_delay.is_zero() && has_started {
        (None, true)
    } else {
        let started = start_time(pass, pod);
        (
            Some(started),
            started + pass.behaviour.pod_ready_delay <= now,
        )
    };
    if broken.is_none()
        && !delay_over
        && let Some(started) = started
    {
        out.requeue_at(now, started + pass.behaviour.pod_ready_delay);
    }
    let leader_ok = match leaders {
        Some(l) if util::label(pod, IPAM_LABEL.0) == Some(IPAM_LABEL.1) => {
            l.contains(&format!("{}/{}", util::namespace(pod), util::name(pod)))
        }
        _ => true,
    };
    // Fast path for the common case: a running pod whose readiness is already right.
    if broken.is_none()
        && info.phase == "Running"
        && info.ready == (delay_over && leader_ok)
        && has_started
        // Init containers already ran; only a container's image change restarts it.
        && statuses_match(pod, "containers", "containerStatuses")
    {
        return;
    }
    let key = format!("{}/{}", util::namespace(pod), util::name(pod));
    let started = started.unwrap_or_else(|| start_time(pass, pod));
    let ts = util::timestamp(now);
    let start_ts = util::timestamp(started);

    let mut events: Vec<(&str, &str, String)> = Vec::new();
    // Init containers run one after another; a broken one stops the rest.
    let mut init_statuses = Vec::new();
    let mut init_blocked: Option<String> = None;
    for c in containers(pod, "initContainers") {
        let name = str_at(c, "/name").unwrap_or("");
        let image = str_at(c, "/image").unwrap_or("");
        let prev = previous_state(pod, "initContainers", name);
        if init_blocked.is_some() {
            init_statuses.push(waiting_status(c, "PodInitializing", None));
            continue;
        }
        if broken.is_some_and(|(_, b)| std::ptr::eq(b, c)) {
            init_statuses.push(pull_failure(pass, pod, c, prev, started, &mut events, out));
            init_blocked = Some(name.to_string());
            continue;
        }
        if prev.and_then(|p| p.pointer("/state/terminated")).is_none() {
            events.extend(start_events(image, name));
        }
        init_statuses.push(json!({
            "name": name,
            "image": image,
            "imageID": image_id(image),
            "containerID": container_id(&key, name),
            "ready": true,
            "restartCount": 0,
            "started": false,
            "lastState": {},
            "state": {"terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": start_ts,
                "finishedAt": start_ts,
                "containerID": container_id(&key, name),
            }},
        }));
    }
    let mut statuses = Vec::new();
    let mut unready: Vec<String> = Vec::new();
    let mut any_running = false;
    for c in containers(pod, "containers") {
        let name = str_at(c, "/name").unwrap_or("");
        let image = str_at(c, "/image").unwrap_or("");
        let prev = previous_state(pod, "containers", name);
        if init_blocked.is_some() {
            statuses.push(waiting_status(c, "PodInitializing", None));
            unready.push(name.into());
            continue;
        }
        if broken.is_some_and(|(_, b)| std::ptr::eq(b, c)) {
            statuses.push(pull_failure(pass, pod, c, prev, started, &mut events, out));
            unready.push(name.into());
            continue;
        }
        any_running = true;
        if prev.and_then(|p| p.pointer("/state/running")).is_none() {
            events.extend(start_events(image, name));
        }
        let ready = delay_over && leader_ok;
        if !ready {
            unready.push(name.into());
        }
        statuses.push(json!({
            "name": name,
            "image": image,
            "imageID": image_id(image),
            "containerID": container_id(&key, name),
            "ready": ready,
            "restartCount": 0,
            "started": true,
            "lastState": {},
            "state": {"running": {"startedAt": start_ts}},
        }));
    }

    let mut conditions: Vec<Value> = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let cond = |type_: &str, ok: bool, reason: &str, message: String| {
        let mut c = json!({"type": type_, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": ts});
        if !ok {
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        c
    };
    let initialized = init_blocked.is_none();
    let containers_ready = unready.is_empty();
    util::set_condition(
        &mut conditions,
        cond(
            "Initialized",
            initialized,
            "ContainersNotInitialized",
            format!(
                "containers with incomplete status: [{}]",
                init_blocked.clone().unwrap_or_default()
            ),
        ),
    );
    let unready_msg = format!("containers with unready status: [{}]", unready.join(" "));
    util::set_condition(
        &mut conditions,
        cond(
            "Ready",
            containers_ready,
            "ContainersNotReady",
            unready_msg.clone(),
        ),
    );
    util::set_condition(
        &mut conditions,
        cond(
            "ContainersReady",
            containers_ready,
            "ContainersNotReady",
            unready_msg,
        ),
    );
    util::set_condition(
        &mut conditions,
        cond("PodScheduled", true, "", String::new()),
    );
    let order = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ];
    conditions.sort_by_key(|c| {
        order
            .iter()
            .position(|o| Some(*o) == str_at(c, "/type"))
            .unwrap_or(order.len())
    });

    let host_ip = node_ip(node);
    let pod_ip = if util::bool_at(pod, "/spec/hostNetwork") {
        host_ip.clone()
    } else {
        pod_ip_on(node, &key)
    };
    let mut status = Map::new();
    status.insert(
        "phase".into(),
        json!(if any_running { "Running" } else { "Pending" }),
    );
    status.insert("conditions".into(), Value::Array(conditions));
    status.insert("hostIP".into(), json!(host_ip));
    status.insert("hostIPs".into(), json!([{"ip": host_ip}]));
    status.insert("podIP".into(), json!(pod_ip));
    status.insert("podIPs".into(), json!([{"ip": pod_ip}]));
    // Milliseconds, unlike other timestamps: the ready delay is measured from it, and
    // sub-second delays need more than whole seconds (clients parse fractions fine).
    status.insert("startTime".into(), json!(util::timestamp_millis(started)));
    if !init_statuses.is_empty() {
        status.insert("initContainerStatuses".into(), Value::Array(init_statuses));
    }
    status.insert("containerStatuses".into(), Value::Array(statuses));
    let qos = pod
        .pointer("/status/qosClass")
        .cloned()
        .unwrap_or_else(|| json!(qos_class(pod.get("spec").unwrap_or(&Value::Null))));
    status.insert("qosClass".into(), qos);
    let status = Value::Object(status);
    if pod.get("status") == Some(&status) {
        return;
    }
    let mut updated = pod.clone();
    updated["status"] = status;
    if out.write(Action::UpdateStatus {
        resource: Resource::Pods,
        object: updated,
    }) {
        for (type_, reason, message) in events {
            out.event(util::event(
                pod,
                "Pod",
                "v1",
                type_,
                reason,
                message,
                COMPONENT,
                Some(node_name),
            ));
        }
    }
}

/// Whether every container of `list` has a status with its current image.
fn statuses_match(pod: &Value, list: &str, status_key: &str) -> bool {
    let specs = pod
        .get("spec")
        .and_then(|s| s.get(list))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let statuses = pod
        .get("status")
        .and_then(|s| s.get(status_key))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    specs.len() == statuses.len()
        && specs
            .iter()
            .zip(statuses)
            .all(|(c, s)| c.get("name") == s.get("name") && c.get("image") == s.get("image"))
}

fn start_events(image: &str, name: &str) -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("Normal", "Pulling", format!("Pulling image \"{image}\"")),
        (
            "Normal",
            "Pulled",
            format!("Successfully pulled image \"{image}\" in 1.02s (1.02s including waiting)"),
        ),
        ("Normal", "Created", format!("Created container {name}")),
        ("Normal", "Started", format!("Started container {name}")),
    ]
}

fn waiting_status(c: &Value, reason: &str, message: Option<String>) -> Value {
    let mut waiting = json!({"reason": reason});
    if let Some(m) = message {
        waiting["message"] = json!(m);
    }
    json!({
        "name": str_at(c, "/name").unwrap_or(""),
        "image": str_at(c, "/image").unwrap_or(""),
        "imageID": "",
        "ready": false,
        "restartCount": 0,
        "started": false,
        "lastState": {},
        "state": {"waiting": waiting},
    })
}

/// ErrImagePull first, ImagePullBackOff a moment later, with the kubelet's events.
fn pull_failure(
    pass: &Pass,
    _pod: &Value,
    c: &Value,
    prev: Option<&Value>,
    started: OffsetDateTime,
    events: &mut Vec<(&'static str, &'static str, String)>,
    out: &mut Out,
) -> Value {
    let image = str_at(c, "/image").unwrap_or("");
    let prev_reason = prev.and_then(|p| str_at(p, "/state/waiting/reason"));
    let pull_error = format!(
        "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": not found"
    );
    let backoff_at = started + PULL_BACKOFF_AFTER;
    match prev_reason {
        Some("ImagePullBackOff") => waiting_status(
            c,
            "ImagePullBackOff",
            Some(format!("Back-off pulling image \"{image}\"")),
        ),
        Some("ErrImagePull") if pass.now >= backoff_at => {
            events.push((
                "Normal",
                "BackOff",
                format!("Back-off pulling image \"{image}\""),
            ));
            events.push(("Warning", "Failed", "Error: ImagePullBackOff".into()));
            waiting_status(
                c,
                "ImagePullBackOff",
                Some(format!("Back-off pulling image \"{image}\"")),
            )
        }
        Some("ErrImagePull") => {
            out.requeue_at(pass.now, backoff_at);
            waiting_status(c, "ErrImagePull", Some(pull_error))
        }
        _ => {
            out.requeue_at(pass.now, backoff_at);
            events.push(("Normal", "Pulling", format!("Pulling image \"{image}\"")));
            events.push((
                "Warning",
                "Failed",
                format!("Failed to pull image \"{image}\": {pull_error}"),
            ));
            events.push(("Warning", "Failed", "Error: ErrImagePull".into()));
            waiting_status(c, "ErrImagePull", Some(pull_error))
        }
    }
}

fn image_id(image: &str) -> String {
    let repo = image.split('@').next().unwrap_or(image);
    let repo = match repo.rfind(':') {
        Some(i) if !repo[i..].contains('/') => &repo[..i],
        _ => repo,
    };
    format!("{repo}@sha256:{}", util::hex_digest(image))
}

fn container_id(pod_key: &str, name: &str) -> String {
    format!(
        "containerd://{}",
        util::hex_digest(&format!("{pod_key}/{name}"))
    )
}

fn node_ip(node: &Value) -> String {
    node.pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| str_at(a, "/type") == Some("InternalIP"))
        .and_then(|a| str_at(a, "/address"))
        .unwrap_or("")
        .to_string()
}

/// A pod IP from the node's podCIDR (a /24 is assumed), stable for the pod's name.
fn pod_ip_on(node: &Value, pod_key: &str) -> String {
    let cidr = str_at(node, "/spec/podCIDR").unwrap_or("10.244.0.0/24");
    let base: Vec<&str> = cidr.split('/').next().unwrap_or("").split('.').collect();
    if base.len() != 4 {
        return String::new();
    }
    let host = util::fnv32a(pod_key.as_bytes()) % 250 + 2;
    format!("{}.{}.{}.{host}", base[0], base[1], base[2])
}

/// The pod's QoS class from its containers' requests and limits.
pub(crate) fn qos_class(spec: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for list in ["initContainers", "containers"] {
        for c in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let limits = c.pointer("/resources/limits").and_then(Value::as_object);
            let requests = c.pointer("/resources/requests").and_then(Value::as_object);
            for res in ["cpu", "memory"] {
                let l = limits.and_then(|m| m.get(res));
                let r = requests.and_then(|m| m.get(res));
                if l.is_some() || r.is_some() {
                    any = true;
                }
                match (l, r) {
                    (Some(l), Some(r)) if l == r => {}
                    (Some(_), None) => {}
                    _ => guaranteed = false,
                }
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::sim::model::Behaviour;

    fn bound_pod(name: &str, image: &str, labels: Value) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "kube-system", "labels": labels},
            "spec": {
                "nodeName": "master-1",
                "hostNetwork": true,
                "initContainers": [{"name": "init", "image": image}],
                "containers": [{"name": "main", "image": image}]
            },
            "status": {"phase": "Pending"}
        })
    }

    #[test]
    fn pods_become_ready_after_the_delay() {
        let mut store = FakeStore::with_nodes(1, 0);
        store.put(Resource::Pods, bound_pod("p", "img:v1", json!({})));
        let b = Behaviour {
            pod_ready_delay: Duration::from_secs(5),
            ..Default::default()
        };
        let r = store.pass(&b);
        assert_eq!(r.requeue_after, Some(Duration::from_secs(5)));
        let p = store.get(Resource::Pods, "kube-system", "p").unwrap();
        assert_eq!(p["status"]["phase"], "Running");
        assert!(!util::pod_is_ready(&p));
        assert_eq!(p["status"]["podIP"], p["status"]["hostIP"]);
        assert_eq!(
            p["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        assert!(store.pass(&b).actions.is_empty());
        store.advance(Duration::from_secs(5));
        store.pass(&b);
        let p = store.get(Resource::Pods, "kube-system", "p").unwrap();
        assert!(util::pod_is_ready(&p));
        for t in ["Initialized", "Ready", "ContainersReady", "PodScheduled"] {
            assert_eq!(util::condition(&p, t).unwrap()["status"], "True", "{t}");
        }
        let reasons: Vec<&str> = store.events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "Pulling", "Pulled", "Created", "Started", "Pulling", "Pulled", "Created",
                "Started"
            ]
        );
        assert!(
            store
                .events
                .iter()
                .all(|e| e.host.as_deref() == Some("master-1"))
        );
    }

    #[test]
    fn broken_image_goes_from_err_image_pull_to_back_off() {
        let mut store = FakeStore::with_nodes(1, 0);
        store.put(
            Resource::Pods,
            bound_pod("p", "reg/cce-cni:v9.9.9", json!({})),
        );
        let b = Behaviour {
            broken_image: Some("v9\\.9\\.9$".into()),
            ..Default::default()
        };
        store.pass(&b);
        let p = store.get(Resource::Pods, "kube-system", "p").unwrap();
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(
            p["status"]["initContainerStatuses"][0]["state"]["waiting"]["reason"],
            "ErrImagePull"
        );
        assert_eq!(
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
            "PodInitializing"
        );
        store.advance(Duration::from_secs(1));
        store.settle(&b, 10);
        let p = store.get(Resource::Pods, "kube-system", "p").unwrap();
        assert_eq!(
            p["status"]["initContainerStatuses"][0]["state"]["waiting"]["reason"],
            "ImagePullBackOff"
        );
        assert!(!util::pod_is_ready(&p));
        assert_eq!(
            util::condition(&p, "Initialized").unwrap()["status"],
            "False"
        );
        let warn: Vec<&str> = store
            .events
            .iter()
            .filter(|e| e.type_ == "Warning")
            .map(|e| e.message.as_str())
            .collect();
        assert!(warn.contains(&"Error: ErrImagePull"));
        assert!(warn.contains(&"Error: ImagePullBackOff"));
        assert!(store.events.iter().any(|e| e.reason == "BackOff"));
    }

    #[test]
    fn only_the_ipam_leader_is_ready() {
        let mut store = FakeStore::with_nodes(1, 0);
        for n in ["a", "b", "c"] {
            store.put(
                Resource::Pods,
                bound_pod(n, "img:v1", json!({"app": "cce-eni-ipam"})),
            );
            store.advance(Duration::from_secs(1));
        }
        let b = Behaviour {
            ipam_leader_only: true,
            ..Default::default()
        };
        store.settle(&b, 10);
        let ready = |s: &FakeStore| -> Vec<String> {
            s.pods_with_label("app", "cce-eni-ipam")
                .iter()
                .filter(|p| util::pod_is_ready(p))
                .map(|p| util::name(p).to_string())
                .collect()
        };
        assert_eq!(ready(&store), vec!["a"]);
        let b_pod = store.get(Resource::Pods, "kube-system", "b").unwrap();
        assert_eq!(b_pod["status"]["phase"], "Running");
        // The leader goes; the next oldest takes over.
        store.apply(Action::Delete {
            resource: Resource::Pods,
            namespace: Some("kube-system".into()),
            name: "a".into(),
        });
        store.settle(&b, 10);
        assert_eq!(ready(&store), vec!["b"]);
    }

    #[test]
    fn deleted_pods_are_removed() {
        let mut store = FakeStore::with_nodes(1, 0);
        store.put(Resource::Pods, bound_pod("p", "img:v1", json!({})));
        store.settle(&Behaviour::default(), 10);
        store.apply(Action::Delete {
            resource: Resource::Pods,
            namespace: Some("kube-system".into()),
            name: "p".into(),
        });
        assert!(store.get(Resource::Pods, "kube-system", "p").is_some());
        store.settle(&Behaviour::default(), 10);
        assert!(store.get(Resource::Pods, "kube-system", "p").is_none());
        assert!(store.events.iter().any(|e| e.reason == "Killing"));
    }
}
