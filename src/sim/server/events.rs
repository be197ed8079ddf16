//! Events: `events.k8s.io/v1` is served as a view of the stored core/v1 Events, and the
//! controllers' event records become aggregated core/v1 Events.

use serde_json::{Map, Value, json};

use super::super::model::EventRecord;

/// Field renames between core/v1 (left) and events.k8s.io/v1 (right); the rest keep their name.
const RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

const SHARED: &[&str] = &[
    "metadata",
    "eventTime",
    "series",
    "reportingInstance",
    "action",
    "reason",
    "related",
    "type",
];

fn convert(object: &Value, api_version: &str, to_v1: bool) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), json!("Event"));
    out.insert("apiVersion".into(), json!(api_version));
    let Some(src) = object.as_object() else {
        return Value::Object(out);
    };
    for field in SHARED {
        if let Some(v) = src.get(*field) {
            out.insert((*field).into(), v.clone());
        }
    }
    for (core, v1) in RENAMES {
        let (from, to) = if to_v1 { (core, v1) } else { (v1, core) };
        if let Some(v) = src.get(*from) {
            out.insert((*to).into(), v.clone());
        }
    }
    Value::Object(out)
}

/// A stored core/v1 Event as events.k8s.io/v1 serves it.
pub fn core_to_v1(object: &Value) -> Value {
    convert(object, "events.k8s.io/v1", true)
}

/// An events.k8s.io/v1 Event as core/v1 stores it.
pub fn v1_to_core(object: &Value) -> Value {
    convert(object, "v1", false)
}

/// What makes two event records the same event for aggregation.
pub fn aggregation_key(record: &EventRecord) -> String {
    let field = |name: &str| {
        record
            .involved_object
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    [
        field("kind"),
        field("namespace"),
        field("name"),
        field("uid"),
        record.type_.clone(),
        record.reason.clone(),
        record.message.clone(),
        record.component.clone(),
        record.host.clone().unwrap_or_default(),
    ]
    .join("\u{0}")
}

/// A new core/v1 Event for a record; the name is `<object>.<unique suffix>` as client-go makes it.
pub fn new_event(record: &EventRecord, name: &str, now: &str) -> Value {
    let namespace = record
        .involved_object
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let mut source = Map::new();
    source.insert("component".into(), json!(record.component));
    if let Some(host) = &record.host {
        source.insert("host".into(), json!(host));
    }
    json!({
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": record.involved_object,
        "reason": record.reason,
        "message": record.message,
        "source": Value::Object(source),
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": record.type_,
        "eventTime": null,
        "reportingComponent": record.component,
        "reportingInstance": record.host.clone().unwrap_or_default(),
    })
}

/// The stored event with one more occurrence at `now`.
pub fn repeated(existing: &Value, now: &str) -> Value {
    let mut event = existing.clone();
    let count = event.get("count").and_then(Value::as_i64).unwrap_or(1) + 1;
    if let Some(map) = event.as_object_mut() {
        map.insert("count".into(), json!(count));
        map.insert("lastTimestamp".into(), json!(now));
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> EventRecord {
        EventRecord {
            involved_object: json!({"kind": "DaemonSet", "namespace": "kube-system",
                "name": "cce-cni-node-agent", "uid": "u"}),
            type_: "Normal".into(),
            reason: "SuccessfulCreate".into(),
            message: "Created pod: x".into(),
            component: "daemonset-controller".into(),
            host: None,
        }
    }

    #[test]
    fn converts_both_ways() {
        let core = new_event(&record(), "cce-cni-node-agent.1", "2026-01-01T00:00:00Z");
        let v1 = core_to_v1(&core);
        assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
        assert_eq!(v1["note"], "Created pod: x");
        assert_eq!(v1["regarding"]["name"], "cce-cni-node-agent");
        assert_eq!(v1["deprecatedCount"], 1);
        assert_eq!(v1_to_core(&v1), core);
    }

    #[test]
    fn repeats_count_up() {
        let core = new_event(&record(), "e", "t1");
        let again = repeated(&core, "t2");
        assert_eq!(again["count"], 2);
        assert_eq!(again["firstTimestamp"], "t1");
        assert_eq!(again["lastTimestamp"], "t2");
        let mut other = record();
        other.message = "Created pod: y".into();
        assert_ne!(aggregation_key(&record()), aggregation_key(&other));
    }
}
