//! Helpers shared by the controllers: reading JSON objects, label selectors, owner
//! references, time, pod state, and the hashing and canonical JSON that revisions rely on.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::sim::model::{Action, EventRecord};

pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
pub const CONTROLLER_REVISION_HASH_LABEL: &str = "controller-revision-hash";
pub const POD_TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

/// The alphabet Kubernetes uses for generated names (no vowels, no confusable digits).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

pub fn i64_at(v: &Value, ptr: &str) -> Option<i64> {
    v.pointer(ptr).and_then(Value::as_i64)
}

pub fn bool_at(v: &Value, ptr: &str) -> bool {
    v.pointer(ptr).and_then(Value::as_bool).unwrap_or(false)
}

fn meta_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get("metadata")?.get(key)?.as_str()
}

pub fn name(v: &Value) -> &str {
    meta_str(v, "name").unwrap_or("")
}

pub fn namespace(v: &Value) -> &str {
    meta_str(v, "namespace").unwrap_or("")
}

pub fn uid(v: &Value) -> &str {
    meta_str(v, "uid").unwrap_or("")
}

pub fn generation(v: &Value) -> i64 {
    i64_at(v, "/metadata/generation").unwrap_or(1)
}

pub fn labels(v: &Value) -> Option<&Map<String, Value>> {
    v.get("metadata")?.get("labels")?.as_object()
}

pub fn label<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    labels(v).and_then(|l| l.get(key)).and_then(Value::as_str)
}

pub fn annotation<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

pub fn is_deleting(v: &Value) -> bool {
    v.get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|t| !t.is_null())
}

/// The uid of the object's controller (the ownerReference with `controller: true`).
pub fn controller_uid(v: &Value) -> Option<&str> {
    v.get("metadata")?
        .get("ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
}

/// A controller ownerReference as `metav1.NewControllerRef` builds it.
pub fn controller_ref(owner: &Value, kind: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": name(owner),
        "uid": uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Adds a controller ownerReference to an orphan, as the controllers' adoption does.
pub fn adopted(obj: &Value, owner: &Value, kind: &str) -> Value {
    let mut copy = obj.clone();
    if let Some(meta) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        let refs = meta
            .entry("ownerReferences")
            .or_insert_with(|| Value::Array(Vec::new()));
        if !refs.is_array() {
            *refs = Value::Array(Vec::new());
        }
        if let Some(list) = refs.as_array_mut() {
            list.push(controller_ref(owner, kind));
        }
    }
    copy
}

/// Whether `labels` satisfy a `metav1.LabelSelector` (matchLabels and matchExpressions).
/// A missing selector matches nothing, an empty one everything, as in the API.
pub fn selector_matches(selector: Option<&Value>, labels: Option<&Map<String, Value>>) -> bool {
    let Some(selector) = selector.and_then(Value::as_object) else {
        return false;
    };
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    if let Some(ml) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            if get(k) != v.as_str() {
                return false;
            }
        }
    }
    if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let have = get(key);
            let ok = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => have.is_some_and(|h| values.contains(&h)),
                "NotIn" => have.is_none_or(|h| !values.contains(&h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

/// `intstr.GetScaledValueFromIntOrPercent`: an int, or a percentage of `total` rounded up or down.
pub fn scaled_value(v: Option<&Value>, default: &str, total: i64, round_up: bool) -> i64 {
    let fallback = Value::String(default.to_string());
    let v = v.filter(|v| !v.is_null()).unwrap_or(&fallback);
    if let Some(i) = v.as_i64() {
        return i;
    }
    let s = v.as_str().unwrap_or(default);
    if let Some(p) = s.strip_suffix('%') {
        let p: i64 = p.trim().parse().unwrap_or(0);
        let scaled = p * total;
        return if round_up {
            (scaled + 99).div_euclid(100)
        } else {
            scaled.div_euclid(100)
        };
    }
    s.trim().parse().unwrap_or(0)
}

pub fn timestamp(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// RFC 3339 with milliseconds.
pub fn timestamp_millis(t: OffsetDateTime) -> String {
    let ms = t.millisecond();
    let t = t.replace_nanosecond(u32::from(ms) * 1_000_000).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

pub fn time_at(v: &Value, ptr: &str) -> Option<OffsetDateTime> {
    str_at(v, ptr).and_then(parse_time)
}

/// The condition of `type_` in `status.conditions`.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj.get("status")?
        .get("conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

pub fn pod_phase(pod: &Value) -> &str {
    pod.get("status")
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
        .unwrap_or("Pending")
}

pub fn pod_is_terminal(pod: &Value) -> bool {
    matches!(pod_phase(pod), "Succeeded" | "Failed")
}

/// Counted by the workload controllers: not finished and not being deleted.
pub fn pod_is_active(pod: &Value) -> bool {
    !pod_is_terminal(pod) && !is_deleting(pod)
}

pub fn pod_is_ready(pod: &Value) -> bool {
    condition(pod, "Ready")
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
}

/// `podutil.IsPodAvailable`: Ready for at least `min_ready_seconds`.
pub fn pod_is_available(pod: &Value, min_ready_seconds: i64, now: OffsetDateTime) -> bool {
    if !pod_is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = condition(pod, "Ready")
        .and_then(|c| str_at(c, "/lastTransitionTime"))
        .and_then(parse_time);
    since.is_some_and(|t| t + time::Duration::seconds(min_ready_seconds) <= now)
}

/// When a Ready pod that is not yet available becomes available.
pub fn available_at(pod: &Value, min_ready_seconds: i64) -> Option<OffsetDateTime> {
    if min_ready_seconds <= 0 || !pod_is_ready(pod) {
        return None;
    }
    condition(pod, "Ready")
        .and_then(|c| str_at(c, "/lastTransitionTime"))
        .and_then(parse_time)
        .map(|t| t + time::Duration::seconds(min_ready_seconds))
}

/// The node a pod is bound to, or the one a DaemonSet pod's node affinity names.
pub fn pod_node_name(pod: &Value) -> Option<&str> {
    pod.get("spec")?
        .get("nodeName")?
        .as_str()
        .filter(|n| !n.is_empty())
}

pub fn pod_target_node(pod: &Value) -> Option<&str> {
    if let Some(n) = pod_node_name(pod) {
        return Some(n);
    }
    let terms = pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)?;
    for term in terms {
        for f in term
            .get("matchFields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if f.get("key").and_then(Value::as_str) == Some("metadata.name")
                && f.get("operator").and_then(Value::as_str) == Some("In")
                && let Some(values) = f.get("values").and_then(Value::as_array)
                && values.len() == 1
            {
                return values[0].as_str();
            }
        }
    }
    None
}

/// 32-bit FNV-1a, the hash the controllers use for template hashes.
pub fn fnv32a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn fnv64a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `rand.SafeEncodeString`: maps each byte onto the safe alphabet.
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// `controller.ComputeHash`: a stable short hash of a pod template (plus collision count).
pub fn template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut bytes = canonical_json(&go_roundtrip(template, true)).into_bytes();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(c.to_string().as_bytes());
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

/// A five-character name suffix, like `generateName` gives, derived from `seed` so that
/// passes over the same snapshot agree.
pub fn name_suffix(seed: &str) -> String {
    let mut h = fnv64a(seed.as_bytes());
    let mut out = String::with_capacity(5);
    for _ in 0..5 {
        out.push(SAFE_ALPHABET[(h % SAFE_ALPHABET.len() as u64) as usize] as char);
        h /= SAFE_ALPHABET.len() as u64;
    }
    out
}

/// Picks `count` pod names `<owner>-<suffix>` unused in `taken` (and records them there).
pub fn pod_names(owner: &Value, count: usize, taken: &mut HashSet<String>) -> Vec<String> {
    let ns = namespace(owner);
    let seed_base = format!(
        "{}/{}/{}",
        uid(owner),
        str_at(owner, "/metadata/resourceVersion").unwrap_or(""),
        name(owner)
    );
    let mut names = Vec::with_capacity(count);
    let mut n = 0u64;
    while names.len() < count {
        let candidate = format!(
            "{}-{}",
            name(owner),
            name_suffix(&format!("{seed_base}/{n}"))
        );
        n += 1;
        if taken.insert(format!("{ns}/{candidate}")) {
            names.push(candidate);
        }
    }
    names
}

/// A hex digest-like string for fake image IDs and container IDs.
pub fn hex_digest(seed: &str) -> String {
    let mut out = String::with_capacity(64);
    for i in 0..4u8 {
        let h = fnv64a(format!("{i}:{seed}").as_bytes());
        let _ = write!(out, "{h:016x}");
    }
    out
}

/// Fields that Go encodes even when they hold a zero value: pointers and required fields
/// of the pod template types.
const KEEP_ZERO: &[&str] = &[
    "privileged",
    "optional",
    "readOnlyRootFilesystem",
    "runAsNonRoot",
    "allowPrivilegeEscalation",
    "automountServiceAccountToken",
    "enableServiceLinks",
    "shareProcessNamespace",
    "hostUsers",
    "setHostnameAsFQDN",
    "terminationGracePeriodSeconds",
    "defaultMode",
    "mode",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "priority",
    "activeDeadlineSeconds",
    "type",
    "port",
    "weight",
    "containerPort",
    "preemptionPolicy",
    "runtimeClassName",
    "tolerationSeconds",
    "containers",
];

/// Maps of strings (Go `map[string]string` and resource lists): their values are kept as
/// they are, the map itself is omitted when empty.
const STRING_MAPS: &[&str] = &[
    "labels",
    "annotations",
    "nodeSelector",
    "limits",
    "requests",
    "overhead",
    "volumeAttributes",
];

/// What a pod template looks like after Go decodes it into the typed API structs and encodes
/// it again, as kubectl and the controllers do before comparing or storing it: zero values
/// of `omitempty` fields vanish, `metadata.creationTimestamp` becomes `null`, and every
/// container gets `resources`.
pub fn go_roundtrip(template: &Value, is_template: bool) -> Value {
    let mut out = strip_zero(template, None).unwrap_or_else(|| Value::Object(Map::new()));
    if is_template && let Some(obj) = out.as_object_mut() {
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(m) = meta.as_object_mut() {
            m.entry("creationTimestamp").or_insert(Value::Null);
        }
        let spec = obj
            .entry("spec")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(spec) = spec.as_object_mut() {
            for list in ["containers", "initContainers", "ephemeralContainers"] {
                if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
                    for c in cs {
                        if let Some(c) = c.as_object_mut() {
                            c.entry("resources")
                                .or_insert_with(|| Value::Object(Map::new()));
                        }
                    }
                }
            }
        }
    }
    out
}

fn strip_zero(v: &Value, key: Option<&str>) -> Option<Value> {
    let keep = key.is_some_and(|k| KEEP_ZERO.contains(&k));
    match v {
        Value::Null => None,
        Value::Bool(false) | Value::String(_) | Value::Number(_) if !keep && is_zero_scalar(v) => {
            None
        }
        Value::Array(a) => {
            if a.is_empty() && !keep {
                return None;
            }
            Some(Value::Array(
                a.iter()
                    .map(|x| strip_zero(x, None).unwrap_or_else(|| zero_like(x)))
                    .collect(),
            ))
        }
        Value::Object(m) => {
            if key.is_some_and(|k| STRING_MAPS.contains(&k)) {
                return if m.is_empty() { None } else { Some(v.clone()) };
            }
            let mut out = Map::new();
            for (k, x) in m {
                if let Some(x) = strip_zero(x, Some(k)) {
                    out.insert(k.clone(), x);
                }
            }
            Some(Value::Object(out))
        }
        _ => Some(v.clone()),
    }
}

fn is_zero_scalar(v: &Value) -> bool {
    match v {
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

fn zero_like(v: &Value) -> Value {
    match v {
        Value::Object(_) => Value::Object(Map::new()),
        other => other.clone(),
    }
}

/// Compact JSON with sorted keys and Go's escaping, byte for byte what Go's
/// `json.Marshal` of a `map[string]interface{}` prints.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_go_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(k, out);
                out.push(':');
                if let Some(x) = m.get(k) {
                    write_canonical(x, out);
                }
            }
            out.push('}');
        }
    }
}

fn write_go_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The ControllerRevision `data` of a DaemonSet template, as the controller's `getPatch`
/// and kubectl's rollback build it.
pub fn daemonset_patch(template: &Value) -> Value {
    let mut t = go_roundtrip(template, true);
    if let Some(obj) = t.as_object_mut() {
        obj.insert("$patch".into(), Value::String("replace".into()));
    }
    json!({ "spec": { "template": t } })
}

/// An event about `obj` (kind and apiVersion given, as stored objects may lack them).
#[allow(clippy::too_many_arguments)]
pub fn event(
    obj: &Value,
    kind: &str,
    api_version: &str,
    type_: &str,
    reason: &str,
    message: String,
    component: &str,
    host: Option<&str>,
) -> Action {
    Action::Event(EventRecord {
        involved_object: json!({
            "kind": kind,
            "apiVersion": api_version,
            "namespace": namespace(obj),
            "name": name(obj),
            "uid": uid(obj),
            "resourceVersion": str_at(obj, "/metadata/resourceVersion").unwrap_or(""),
        }),
        type_: type_.into(),
        reason: reason.into(),
        message,
        component: component.into(),
        host: host.map(str::to_string),
    })
}

/// Sets (or replaces) a condition in a conditions array the way the controllers' helpers do:
/// `lastTransitionTime` stays when the status does not change.
pub fn set_condition(conditions: &mut Vec<Value>, mut cond: Value) {
    let type_ = cond.get("type").cloned();
    if let Some(pos) = conditions
        .iter()
        .position(|c| c.get("type") == type_.as_ref())
    {
        let old = &conditions[pos];
        if old.get("status") == cond.get("status")
            && let (Some(t), Some(obj)) = (old.get("lastTransitionTime"), cond.as_object_mut())
        {
            obj.insert("lastTransitionTime".into(), t.clone());
        }
        conditions[pos] = cond;
    } else {
        conditions.push(cond);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_escapes_like_go() {
        let v = json!({"b": 1, "a": {"d": "x<y", "c": [true, null]}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":[true,null],"d":"x\u003cy"},"b":1}"#
        );
    }

    #[test]
    fn go_roundtrip_drops_omitempty_zeroes_and_adds_go_defaults() {
        let t = json!({
            "metadata": {"labels": {"a": ""}, "annotations": {}},
            "spec": {
                "hostNetwork": false,
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "args": [], "securityContext": {"privileged": false}}],
                "volumes": [{"name": "v", "hostPath": {"path": "/x", "type": ""}, "emptyDir": {}}]
            }
        });
        let r = go_roundtrip(&t, true);
        assert_eq!(
            r,
            json!({
                "metadata": {"labels": {"a": ""}, "creationTimestamp": null},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "c", "resources": {}, "securityContext": {"privileged": false}}],
                    "volumes": [{"name": "v", "hostPath": {"path": "/x", "type": ""}, "emptyDir": {}}]
                }
            })
        );
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let l = json!({"app": "x", "tier": "db"});
        let l = l.as_object();
        assert!(selector_matches(
            Some(&json!({"matchLabels": {"app": "x"}})),
            l
        ));
        assert!(!selector_matches(
            Some(&json!({"matchLabels": {"app": "y"}})),
            l
        ));
        assert!(selector_matches(
            Some(
                &json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}]})
            ),
            l
        ));
        assert!(!selector_matches(
            Some(&json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]})),
            l
        ));
        assert!(!selector_matches(None, l));
    }

    #[test]
    fn percentages_round_as_asked() {
        assert_eq!(scaled_value(Some(&json!("25%")), "25%", 3, true), 1);
        assert_eq!(scaled_value(Some(&json!("25%")), "25%", 3, false), 0);
        assert_eq!(scaled_value(None, "25%", 10, false), 2);
        assert_eq!(scaled_value(Some(&json!(2)), "25%", 10, false), 2);
    }

    #[test]
    fn hashes_are_stable_and_safe() {
        let a = template_hash(&json!({"spec": {"containers": [{"name": "a"}]}}), None);
        let b = template_hash(&json!({"spec": {"containers": [{"name": "a"}]}}), None);
        let c = template_hash(&json!({"spec": {"containers": [{"name": "b"}]}}), None);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.bytes().all(|x| SAFE_ALPHABET.contains(&x)));
        let mut taken = HashSet::new();
        let owner = json!({"metadata": {"name": "rs", "namespace": "ns", "uid": "u"}});
        let names = pod_names(&owner, 3, &mut taken);
        assert_eq!(names.len(), 3);
        assert!(names.iter().all(|n| n.starts_with("rs-") && n.len() == 8));
        assert_eq!(taken.len(), 3);
    }
}
