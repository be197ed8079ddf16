//! The apiserver's defaulting (`SetDefaults_*` of `k8s.io/kubernetes/pkg/apis/*/v1`) for the
//! fields kubectl and the controllers read, plus the admission plugins every cluster runs
//! (ServiceAccount, DefaultTolerationSeconds).

use serde_json::{Map, Value, json};

use super::super::model::Resource;

fn obj(value: &mut Value) -> Option<&mut Map<String, Value>> {
    value.as_object_mut()
}

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

/// The child object at `key`, created as `{}` when missing.
fn child<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Value {
    let entry = map.entry(key.to_string()).or_insert_with(|| json!({}));
    if entry.is_null() {
        *entry = json!({});
    }
    entry
}

fn default_container(container: &mut Value, host_network: bool) {
    let Some(c) = obj(container) else { return };
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or_default();
    let tag = if last.contains('@') {
        Some("digest")
    } else {
        last.split_once(':').map(|(_, t)| t)
    };
    let policy = match tag {
        None | Some("latest") => "Always",
        Some(_) => "IfNotPresent",
    };
    set_default(c, "imagePullPolicy", json!(policy));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(port, "protocol", json!("TCP"));
            if host_network && let Some(cp) = port.get("containerPort").cloned() {
                set_default(port, "hostPort", cp);
            }
        }
    }
    if let Some(Value::Array(env)) = c.get_mut("env") {
        for var in env.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(field_ref) = var
                .get_mut("valueFrom")
                .and_then(|v| v.get_mut("fieldRef"))
                .and_then(Value::as_object_mut)
            {
                set_default(field_ref, "apiVersion", json!("v1"));
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
        }
    }
}

/// `SetDefaults_PodSpec` and the container defaults, for pods and pod templates alike.
pub fn default_pod_spec(spec: &mut Value) {
    let Some(s) = obj(spec) else { return };
    set_default(s, "restartPolicy", json!("Always"));
    set_default(s, "terminationGracePeriodSeconds", json!(30));
    set_default(s, "dnsPolicy", json!("ClusterFirst"));
    set_default(s, "securityContext", json!({}));
    set_default(s, "schedulerName", json!("default-scheduler"));
    let host_network = s
        .get("hostNetwork")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for list in ["initContainers", "containers"] {
        if let Some(Value::Array(containers)) = s.get_mut(list) {
            for c in containers {
                default_container(c, host_network);
            }
        }
    }
    if let Some(Value::Array(volumes)) = s.get_mut("volumes") {
        for v in volumes.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(hp) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
                set_default(hp, "type", json!(""));
            }
            for source in ["configMap", "secret"] {
                if let Some(src) = v.get_mut(source).and_then(Value::as_object_mut) {
                    set_default(src, "defaultMode", json!(420));
                }
            }
        }
    }
}

fn default_template(spec: &mut Map<String, Value>) {
    if let Some(template) = spec.get_mut("template").and_then(Value::as_object_mut) {
        default_pod_spec(child(template, "spec"));
    }
}

fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = spec
        .get("containers")
        .and_then(Value::as_array)
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    let has = |c: &Value, what: &str| {
        c.get("resources")
            .and_then(|r| r.get(what))
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
    };
    if containers
        .iter()
        .all(|c| !has(c, "requests") && !has(c, "limits"))
    {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let limits = c.pointer("/resources/limits");
        let requests = c.pointer("/resources/requests");
        ["cpu", "memory"].iter().all(|r| {
            let limit = limits.and_then(|l| l.get(*r));
            limit.is_some()
                && requests
                    .and_then(|q| q.get(*r))
                    .is_none_or(|q| Some(q) == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn default_pod(pod: &mut Map<String, Value>, creating: bool) {
    let spec = child(pod, "spec");
    default_pod_spec(spec);
    if let Some(s) = obj(spec) {
        set_default(s, "enableServiceLinks", json!(true));
        set_default(s, "priority", json!(0));
        set_default(s, "preemptionPolicy", json!("PreemptLowerPriority"));
        if creating {
            // ServiceAccount admission.
            let sa = s
                .get("serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string();
            set_default(s, "serviceAccountName", json!(sa));
            set_default(s, "serviceAccount", json!(sa));
            // DefaultTolerationSeconds admission.
            let tolerations = s.entry("tolerations").or_insert_with(|| json!([]));
            if let Value::Array(list) = tolerations {
                for taint in [
                    "node.kubernetes.io/not-ready",
                    "node.kubernetes.io/unreachable",
                ] {
                    let covered = list.iter().any(|t| {
                        let key = t.get("key").and_then(Value::as_str);
                        let effect = t.get("effect").and_then(Value::as_str);
                        let exists = t.get("operator").and_then(Value::as_str) == Some("Exists");
                        (key == Some(taint) || (key.is_none() && exists))
                            && effect.is_none_or(|e| e == "NoExecute")
                    });
                    if !covered {
                        list.push(json!({"key": taint, "operator": "Exists",
                            "effect": "NoExecute", "tolerationSeconds": 300}));
                    }
                }
            }
        }
    }
}

/// Applies the defaults of `resource` to an object about to be stored.
pub fn apply(resource: Resource, object: &mut Value, creating: bool) {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(o) = obj(object) else { return };
    match resource {
        Resource::Pods => default_pod(o, creating),
        Resource::DaemonSets => {
            let spec = child(o, "spec");
            if let Some(s) = obj(spec) {
                let strategy = child(s, "updateStrategy");
                if let Some(st) = obj(strategy) {
                    set_default(st, "type", json!("RollingUpdate"));
                    if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                        let ru = child(st, "rollingUpdate");
                        if let Some(r) = obj(ru) {
                            set_default(r, "maxUnavailable", json!(1));
                            set_default(r, "maxSurge", json!(0));
                        }
                    }
                }
                set_default(s, "revisionHistoryLimit", json!(10));
                default_template(s);
            }
        }
        Resource::Deployments => {
            let spec = child(o, "spec");
            if let Some(s) = obj(spec) {
                set_default(s, "replicas", json!(1));
                let strategy = child(s, "strategy");
                if let Some(st) = obj(strategy) {
                    set_default(st, "type", json!("RollingUpdate"));
                    if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                        let ru = child(st, "rollingUpdate");
                        if let Some(r) = obj(ru) {
                            set_default(r, "maxUnavailable", json!("25%"));
                            set_default(r, "maxSurge", json!("25%"));
                        }
                    }
                }
                set_default(s, "revisionHistoryLimit", json!(10));
                set_default(s, "progressDeadlineSeconds", json!(600));
                default_template(s);
            }
        }
        Resource::ReplicaSets => {
            let spec = child(o, "spec");
            if let Some(s) = obj(spec) {
                set_default(s, "replicas", json!(1));
                default_template(s);
            }
        }
        Resource::Namespaces => {
            let meta = child(o, "metadata");
            if let Some(m) = obj(meta) {
                let labels = child(m, "labels");
                if let Some(l) = obj(labels) {
                    l.insert("kubernetes.io/metadata.name".into(), json!(name));
                }
            }
            let spec = child(o, "spec");
            if let Some(s) = obj(spec) {
                set_default(s, "finalizers", json!(["kubernetes"]));
            }
        }
        Resource::Services => {
            let spec = child(o, "spec");
            if let Some(s) = obj(spec) {
                set_default(s, "type", json!("ClusterIP"));
                set_default(s, "sessionAffinity", json!("None"));
                set_default(s, "internalTrafficPolicy", json!("Cluster"));
                set_default(s, "ipFamilies", json!(["IPv4"]));
                set_default(s, "ipFamilyPolicy", json!("SingleStack"));
                if let Some(Value::Array(ports)) = s.get_mut("ports") {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(p, "protocol", json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            set_default(p, "targetPort", port);
                        }
                    }
                }
            }
        }
        Resource::ValidatingWebhookConfigurations => {
            if let Some(Value::Array(hooks)) = o.get_mut("webhooks") {
                for h in hooks.iter_mut().filter_map(Value::as_object_mut) {
                    set_default(h, "failurePolicy", json!("Fail"));
                    set_default(h, "matchPolicy", json!("Equivalent"));
                    set_default(h, "namespaceSelector", json!({}));
                    set_default(h, "objectSelector", json!({}));
                    set_default(h, "timeoutSeconds", json!(10));
                    if let Some(svc) = h
                        .get_mut("clientConfig")
                        .and_then(|c| c.get_mut("service"))
                        .and_then(Value::as_object_mut)
                    {
                        set_default(svc, "port", json!(443));
                    }
                    if let Some(Value::Array(rules)) = h.get_mut("rules") {
                        for r in rules.iter_mut().filter_map(Value::as_object_mut) {
                            set_default(r, "scope", json!("*"));
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// The status a newly created object starts with (`PrepareForCreate`).
pub fn initial_status(resource: Resource, object: &Value) -> Option<Value> {
    match resource {
        Resource::Pods => Some(json!({
            "phase": "Pending",
            "qosClass": qos_class(object.get("spec").unwrap_or(&Value::Null)),
        })),
        Resource::DaemonSets => Some(json!({
            "currentNumberScheduled": 0, "numberMisscheduled": 0,
            "desiredNumberScheduled": 0, "numberReady": 0,
        })),
        Resource::Deployments => Some(json!({})),
        Resource::ReplicaSets => Some(json!({"replicas": 0})),
        Resource::Namespaces => Some(json!({"phase": "Active"})),
        Resource::Services => Some(json!({"loadBalancer": {}})),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemonset_gets_rolling_update_defaults() {
        let mut ds = json!({"metadata": {"name": "a"}, "spec": {"template": {"spec": {
            "hostNetwork": true,
            "initContainers": [{"name": "i", "image": "r/x:v1"}],
            "containers": [{"name": "c", "image": "r/x", "ports": [{"containerPort": 9997}]}]}}}});
        apply(Resource::DaemonSets, &mut ds, true);
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
        let pod = &ds["spec"]["template"]["spec"];
        assert_eq!(pod["dnsPolicy"], "ClusterFirst");
        assert_eq!(pod["initContainers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["containers"][0]["ports"][0]["hostPort"], 9997);
        assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(
            pod["containers"][0]["terminationMessagePath"],
            "/dev/termination-log"
        );
    }

    #[test]
    fn deployment_defaults_and_recreate_has_no_rolling_update() {
        let mut d = json!({"spec": {"strategy": {"type": "Recreate"}, "template": {"spec": {}}}});
        apply(Resource::Deployments, &mut d, true);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        let mut d = json!({"spec": {"replicas": 3}});
        apply(Resource::Deployments, &mut d, true);
        assert_eq!(d["spec"]["replicas"], 3);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    }

    #[test]
    fn pods_get_admission_defaults_once() {
        let mut pod = json!({"spec": {"containers": [{"name": "c", "image": "x:1",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        apply(Resource::Pods, &mut pod, true);
        assert_eq!(pod["spec"]["serviceAccountName"], "default");
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 2);
        apply(Resource::Pods, &mut pod, true);
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(
            initial_status(Resource::Pods, &pod).unwrap()["qosClass"],
            "Guaranteed"
        );
    }
}
