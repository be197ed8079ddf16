//! The simulated apiserver's strategic merge patch. Input: one byte choosing the resource
//! (its schema of merge keys), then `ORIGINAL NUL PATCH`, both JSON. `apply` never panics,
//! answers an object or an error, and an empty patch leaves a directive-free object alone.
#![no_main]

use cce_cni_guard::sim::model::Resource;
use cce_cni_guard::sim::smp::apply;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const RESOURCES: [Resource; 12] = [
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
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let resource = RESOURCES[usize::from(selector) % RESOURCES.len()];
    let Some(split) = rest.iter().position(|&b| b == 0) else {
        return;
    };
    let (Ok(original), Ok(patch)) = (
        serde_json::from_slice::<Value>(&rest[..split]),
        serde_json::from_slice::<Value>(&rest[split + 1..]),
    ) else {
        return;
    };
    if let Ok(patched) = apply(resource, &original, &patch)
        && original.is_object()
    {
        assert!(patched.is_object(), "patched into a non-object: {patched}");
    }
    if original.is_object() && !has_dollar_key(&original) {
        let unchanged = apply(resource, &original, &Value::Object(Default::default()));
        assert_eq!(
            unchanged.as_ref(),
            Ok(&original),
            "an empty patch changed the object"
        );
        let unchanged = apply(resource, &original, &Value::Null);
        assert_eq!(
            unchanged.as_ref(),
            Ok(&original),
            "a null patch changed the object"
        );
    }
});

fn has_dollar_key(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.starts_with('$') || has_dollar_key(v)),
        Value::Array(items) => items.iter().any(has_dollar_key),
        _ => false,
    }
}
