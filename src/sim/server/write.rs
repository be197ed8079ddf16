//! The semantics of every write, decided against the current store without changing it:
//! create, replace, patch and delete of objects and their `/status` and `/scale`
//! subresources. The server admits the result and then commits it.

use serde_json::{Map, Value, json};

use super::super::model::{Object, Resource};
use super::super::smp;
use super::admission::Operation;
use super::defaults;
use super::errors::{ApiError, ApiResult};
use super::events;
use super::resources::{self, ApiResource, View};
use super::selectors::format_label_selector;
use super::store::{Key, Store, rv_of};
use super::util;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Main,
    Status,
    Scale,
}

impl Sub {
    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::Main => None,
            Self::Status => Some("status"),
            Self::Scale => Some("scale"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Strategic,
    Merge,
    Json,
}

#[derive(Debug, Clone)]
pub enum Change {
    Create {
        body: Value,
    },
    Replace {
        name: String,
        body: Value,
    },
    Patch {
        name: String,
        kind: PatchKind,
        patch: Value,
    },
    Delete {
        name: String,
        options: Value,
    },
}

#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub api: &'static ApiResource,
    pub namespace: Option<String>,
    pub sub: Sub,
    pub change: Change,
    pub dry_run: bool,
    /// Seeding: keep a given creationTimestamp and status.
    pub preserve: bool,
}

/// What a write would do, ready for admission and commit.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub operation: Operation,
    pub key: Key,
    /// The stored object the decision was based on (None for create).
    pub old: Option<Object>,
    /// The object to store (None for delete).
    pub new: Option<Value>,
    /// Old and new as the endpoint serves them (Scale, events.k8s.io), for admission.
    pub view_old: Option<Value>,
    pub view_new: Option<Value>,
    /// Nothing would change: answer with the stored object, keep its resourceVersion.
    pub noop: bool,
    /// Delete only: leave dependents in place (propagationPolicy Orphan).
    pub orphan: bool,
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn metadata_mut(object: &mut Value) -> ApiResult<&mut Map<String, Value>> {
    let map = object
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if meta.is_null() {
        *meta = json!({});
    }
    meta.as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

/// The object as the endpoint serves it.
pub fn to_view(api: &ApiResource, sub: Sub, stored: &Value) -> Value {
    match (sub, api.view) {
        (Sub::Scale, _) => scale_of(stored),
        (_, View::EventsV1) => events::core_to_v1(stored),
        _ => stored.clone(),
    }
}

fn from_view(api: &ApiResource, body: Value) -> Value {
    match api.view {
        View::EventsV1 => events::v1_to_core(&body),
        View::Native => body,
    }
}

/// The autoscaling/v1 Scale of a Deployment or ReplicaSet.
pub fn scale_of(object: &Value) -> Value {
    let meta = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let pick = |f: &str| meta.get(f).cloned().unwrap_or(Value::Null);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": pick("name"),
            "namespace": pick("namespace"),
            "uid": pick("uid"),
            "resourceVersion": pick("resourceVersion"),
            "creationTimestamp": pick("creationTimestamp"),
        },
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": format_label_selector(object.pointer("/spec/selector").unwrap_or(&Value::Null)),
        },
    })
}

fn check_type(api: &ApiResource, body: &Value, sub: Sub) -> ApiResult<()> {
    let (kind, api_version) = if sub == Sub::Scale {
        ("Scale".to_string(), "autoscaling/v1".to_string())
    } else {
        (api.kind.to_string(), api.api_version())
    };
    if let Some(v) = body.get("apiVersion").and_then(Value::as_str)
        && v != api_version
        && !(sub == Sub::Scale && v.starts_with("autoscaling/"))
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({v}) does not match the expected API version ({api_version})"
        )));
    }
    if let Some(k) = body.get("kind").and_then(Value::as_str)
        && k != kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({kind})"
        )));
    }
    Ok(())
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn valid_name(name: &str, allow_dots: bool) -> bool {
    let max = if allow_dots { 253 } else { 63 };
    !name.is_empty()
        && name.len() <= max
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (allow_dots && c == '.')
        })
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The checks of `ValidateX` that matter to the sim's clients.
fn validate(api: &ApiResource, object: &Value, old: Option<&Value>) -> ApiResult<()> {
    let name = meta_str(object, "name").unwrap_or_default();
    let dns_label = api.storage == Resource::Namespaces;
    if old.is_none() && !valid_name(name, !dns_label) {
        let msg = if dns_label { LABEL_MSG } else { SUBDOMAIN_MSG };
        return Err(ApiError::invalid(
            api,
            name,
            "metadata.name",
            &format!("Invalid value: \"{name}\": {msg}"),
        ));
    }
    let workload = matches!(
        api.storage,
        Resource::DaemonSets | Resource::Deployments | Resource::ReplicaSets
    );
    if workload {
        if let Some(r) = object.pointer("/spec/replicas") {
            match r.as_i64() {
                Some(n) if n < 0 => {
                    return Err(ApiError::invalid(
                        api,
                        name,
                        "spec.replicas",
                        &format!("Invalid value: {n}: must be greater than or equal to 0"),
                    ));
                }
                Some(n) if n > i64::from(i32::MAX) => {
                    return Err(ApiError::bad_request(format!(
                        "spec.replicas: {n} does not fit in int32"
                    )));
                }
                Some(_) => {}
                None => {
                    return Err(ApiError::bad_request(format!(
                        "json: cannot unmarshal {r} into Go struct field spec.replicas of type int32"
                    )));
                }
            }
        }
        let selector = object.pointer("/spec/selector");
        if selector.is_none_or(|s| s.as_object().is_none_or(Map::is_empty)) {
            return Err(ApiError::invalid(
                api,
                name,
                "spec.selector",
                "Required value",
            ));
        }
        let labels = object.pointer("/spec/template/metadata/labels");
        let sel = super::selectors::LabelSelector::parse(&format_label_selector(
            selector.unwrap_or(&Value::Null),
        ))
        .map_err(|e| ApiError::invalid(api, name, "spec.selector", &e.to_string()))?;
        let template = json!({"metadata": {"labels": labels.cloned().unwrap_or(json!({}))}});
        if !sel.matches(&template) {
            return Err(ApiError::invalid(
                api,
                name,
                "spec.template.metadata.labels",
                &format!(
                    "Invalid value: {}: `selector` does not match template `labels`",
                    labels.cloned().unwrap_or(json!({}))
                ),
            ));
        }
        if let Some(old) = old
            && old.pointer("/spec/selector") != selector
        {
            return Err(ApiError::invalid(
                api,
                name,
                "spec.selector",
                &format!(
                    "Invalid value: {}: field is immutable",
                    selector.cloned().unwrap_or(Value::Null)
                ),
            ));
        }
        let containers = object.pointer("/spec/template/spec/containers");
        if containers
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            return Err(ApiError::invalid(
                api,
                name,
                "spec.template.spec.containers",
                "Required value",
            ));
        }
    }
    if api.storage == Resource::Pods {
        let containers = object.pointer("/spec/containers");
        if containers
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            return Err(ApiError::invalid(
                api,
                name,
                "spec.containers",
                "Required value",
            ));
        }
    }
    if api.storage == Resource::ConfigMaps
        && let Some(Value::Object(data)) = object.get("data")
        && let Some((k, _)) = data.iter().find(|(_, v)| !v.is_string())
    {
        return Err(ApiError::bad_request(format!(
            "json: cannot unmarshal non-string into Go struct field ConfigMap.data of type string (key {k})"
        )));
    }
    Ok(())
}

fn key_for(api: &ApiResource, namespace: Option<&str>, name: &str) -> Key {
    let ns = if api.namespaced {
        namespace.unwrap_or_default()
    } else {
        ""
    };
    (ns.to_string(), name.to_string())
}

/// Decides what `request` would do against `store`.
pub fn prepare(store: &Store, request: &WriteRequest, now: &str) -> ApiResult<Prepared> {
    let api = request.api;
    match &request.change {
        Change::Create { body } => prepare_create(store, request, body.clone(), now),
        Change::Replace { name, body } => {
            check_type(api, body, request.sub)?;
            if let Some(body_name) = meta_str(body, "name")
                && body_name != name
            {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
            let key = key_for(api, request.namespace.as_deref(), name);
            let Some(old) = store.get(api.storage, &key) else {
                if api.create_on_update && request.sub == Sub::Main {
                    let mut body = body.clone();
                    metadata_mut(&mut body)?.insert("name".into(), json!(name));
                    return prepare_create(store, request, body, now);
                }
                return Err(ApiError::not_found(api, name));
            };
            let body_rv = meta_str(body, "resourceVersion");
            if let Some(rv) = body_rv
                && rv != rv_of(&old).to_string()
            {
                return Err(ApiError::conflict(api, name));
            }
            let candidate = match request.sub {
                Sub::Scale => scaled(api, &old, body)?,
                _ => from_view(api, body.clone()),
            };
            finish_update(api, request.sub, old, candidate)
        }
        Change::Patch { name, kind, patch } => {
            let key = key_for(api, request.namespace.as_deref(), name);
            let old = store
                .get(api.storage, &key)
                .ok_or_else(|| ApiError::not_found(api, name))?;
            let base = to_view(api, request.sub, &old);
            let patched = apply_patch(api, request.sub, *kind, &base, patch)?;
            if !patched.is_object() {
                return Err(ApiError::bad_request(
                    "the patched object is not a JSON object",
                ));
            }
            let patched_rv = meta_str(&patched, "resourceVersion").unwrap_or_default();
            if !patched_rv.is_empty() && patched_rv != rv_of(&old).to_string() {
                return Err(ApiError::conflict(api, name));
            }
            if meta_str(&patched, "name").unwrap_or_default() != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    meta_str(&patched, "name").unwrap_or_default()
                )));
            }
            check_type(api, &patched, request.sub)?;
            let candidate = match request.sub {
                Sub::Scale => scaled(api, &old, &patched)?,
                _ => from_view(api, patched),
            };
            finish_update(api, request.sub, old, candidate)
        }
        Change::Delete { name, options } => {
            let key = key_for(api, request.namespace.as_deref(), name);
            let old = store
                .get(api.storage, &key)
                .ok_or_else(|| ApiError::not_found(api, name))?;
            let pre = options.get("preconditions");
            if let Some(uid) = pre.and_then(|p| p.get("uid")).and_then(Value::as_str) {
                let actual = meta_str(&old, "uid").unwrap_or_default();
                if uid != actual {
                    return Err(ApiError::conflict_because(
                        api,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                        ),
                    ));
                }
            }
            if let Some(rv) = pre
                .and_then(|p| p.get("resourceVersion"))
                .and_then(Value::as_str)
            {
                let actual = rv_of(&old).to_string();
                if rv != actual {
                    return Err(ApiError::conflict_because(
                        api,
                        name,
                        &format!(
                            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                        ),
                    ));
                }
            }
            let orphan = options.get("propagationPolicy").and_then(Value::as_str) == Some("Orphan")
                || options.get("orphanDependents").and_then(Value::as_bool) == Some(true);
            Ok(Prepared {
                operation: Operation::Delete,
                key,
                view_old: Some(to_view(api, Sub::Main, &old)),
                view_new: None,
                old: Some(old),
                new: None,
                noop: false,
                orphan,
            })
        }
    }
}

/// The Deployment/ReplicaSet with the replicas of a Scale body.
fn scaled(api: &ApiResource, old: &Value, scale: &Value) -> ApiResult<Value> {
    let name = meta_str(old, "name").unwrap_or_default();
    let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
    let n = replicas.as_i64().ok_or_else(|| {
        ApiError::bad_request(format!(
            "json: cannot unmarshal {replicas} into Go struct field ScaleSpec.spec.replicas of type int32"
        ))
    })?;
    if n < 0 {
        return Err(ApiError::invalid(
            api,
            name,
            "spec.replicas",
            &format!("Invalid value: {n}: must be greater than or equal to 0"),
        ));
    }
    let mut candidate = old.clone();
    if let Some(spec) = candidate.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("replicas".into(), json!(n));
    }
    Ok(candidate)
}

/// As the apiserver's `maxJSONPatchOperations`.
const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

fn apply_patch(
    api: &ApiResource,
    sub: Sub,
    kind: PatchKind,
    base: &Value,
    patch: &Value,
) -> ApiResult<Value> {
    match kind {
        PatchKind::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "the merge patch must be a JSON object",
                ));
            }
            let mut doc = base.clone();
            json_patch::merge(&mut doc, patch);
            Ok(doc)
        }
        PatchKind::Strategic => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "the strategic merge patch must be a JSON object",
                ));
            }
            if sub == Sub::Scale {
                let mut doc = base.clone();
                json_patch::merge(&mut doc, patch);
                return Ok(doc);
            }
            smp::apply(api.storage, base, patch).map_err(|e| ApiError::bad_request(e.to_string()))
        }
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            if ops.0.len() > MAX_JSON_PATCH_OPERATIONS {
                return Err(ApiError::new(
                    413,
                    "RequestEntityTooLarge",
                    format!(
                        "Request entity too large: The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
                        ops.0.len()
                    ),
                ));
            }
            let mut doc = base.clone();
            // The apiserver answers a failed operation with a generic 422 that drops the reason.
            json_patch::patch(&mut doc, &ops.0).map_err(|_| {
                let mut err = ApiError::new(
                    422,
                    "Invalid",
                    "the server rejected our request due to an error in our request",
                );
                err.details = Some(Box::new(json!({})));
                err
            })?;
            Ok(doc)
        }
    }
}

fn prepare_create(
    store: &Store,
    request: &WriteRequest,
    body: Value,
    now: &str,
) -> ApiResult<Prepared> {
    let api = request.api;
    if request.sub != Sub::Main {
        return Err(ApiError::method_not_allowed());
    }
    check_type(api, &body, Sub::Main)?;
    let mut object = from_view(api, body);
    let map = object
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    let stored_as = resources::native(api.storage);
    map.insert("kind".into(), json!(stored_as.kind));
    map.insert("apiVersion".into(), json!(stored_as.api_version()));
    let path_ns = request.namespace.clone().unwrap_or_default();
    let meta = metadata_mut(&mut object)?;
    let mut name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty()
        && let Some(prefix) = meta.get("generateName").and_then(Value::as_str)
        && !prefix.is_empty()
    {
        name = format!("{prefix}{}", util::name_suffix(5));
        meta.insert("name".into(), json!(name));
    }
    if name.is_empty() {
        return Err(ApiError::invalid(
            api,
            "",
            "metadata.name",
            "Required value: name or generateName is required",
        ));
    }
    if api.namespaced {
        if let Some(ns) = meta.get("namespace").and_then(Value::as_str)
            && !ns.is_empty()
            && ns != path_ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta.insert("namespace".into(), json!(path_ns));
    } else {
        meta.remove("namespace");
    }
    meta.insert("uid".into(), json!(util::uuid()));
    let keep_time = request.preserve
        && meta
            .get("creationTimestamp")
            .and_then(Value::as_str)
            .is_some();
    if !keep_time {
        meta.insert("creationTimestamp".into(), json!(now));
    }
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("managedFields");
    meta.remove("selfLink");
    if api.generation {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    let key = key_for(api, request.namespace.as_deref(), &name);
    if api.namespaced
        && store
            .get(Resource::Namespaces, &(String::new(), path_ns.clone()))
            .is_none()
    {
        return Err(ApiError::namespace_not_found(&path_ns));
    }
    if store.get(api.storage, &key).is_some() {
        return Err(ApiError::already_exists(api, &name));
    }
    let keep_status = request.preserve && object.get("status").is_some();
    if !keep_status
        && let Some(status) = defaults::initial_status(api.storage, &object)
        && let Some(map) = object.as_object_mut()
    {
        map.insert("status".into(), status);
    }
    defaults::apply(api.storage, &mut object, true);
    if api.storage == Resource::Pods
        && !keep_status
        && let Some(status) = defaults::initial_status(api.storage, &object)
        && let Some(map) = object.as_object_mut()
    {
        map.insert("status".into(), status);
    }
    validate(api, &object, None)?;
    Ok(Prepared {
        operation: Operation::Create,
        key,
        old: None,
        view_old: None,
        view_new: Some(to_view(api, Sub::Main, &object)),
        new: Some(object),
        noop: false,
        orphan: false,
    })
}

fn finish_update(
    api: &ApiResource,
    sub: Sub,
    old: Object,
    candidate: Value,
) -> ApiResult<Prepared> {
    let mut new = match sub {
        Sub::Status => {
            let mut new = (*old).clone();
            if let Some(map) = new.as_object_mut() {
                match candidate.get("status") {
                    Some(status) if !status.is_null() => {
                        map.insert("status".into(), status.clone());
                    }
                    _ => {
                        map.remove("status");
                    }
                }
            }
            new
        }
        Sub::Main | Sub::Scale => {
            let mut new = candidate;
            let map = new
                .as_object_mut()
                .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
            let stored_as = resources::native(api.storage);
            map.insert("kind".into(), json!(stored_as.kind));
            map.insert("apiVersion".into(), json!(stored_as.api_version()));
            if api.status {
                match old.get("status") {
                    Some(status) => {
                        map.insert("status".into(), status.clone());
                    }
                    None => {
                        map.remove("status");
                    }
                }
            }
            let meta = metadata_mut(&mut new)?;
            for field in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "generation",
                "resourceVersion",
                "deletionTimestamp",
            ] {
                match old.get("metadata").and_then(|m| m.get(field)) {
                    Some(v) => {
                        meta.insert(field.into(), v.clone());
                    }
                    None => {
                        meta.remove(field);
                    }
                }
            }
            meta.remove("managedFields");
            meta.remove("selfLink");
            defaults::apply(api.storage, &mut new, false);
            if api.generation && new.get("spec") != old.get("spec") {
                let generation = old
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("generation".into(), json!(generation + 1));
                }
            }
            new
        }
    };
    if new
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .is_some_and(Value::is_null)
        && let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.remove("labels");
    }
    validate(api, &new, Some(&old))?;
    let noop = new == *old;
    let name = meta_str(&old, "name").unwrap_or_default().to_string();
    let ns = meta_str(&old, "namespace").unwrap_or_default().to_string();
    Ok(Prepared {
        operation: Operation::Update,
        key: (ns, name),
        view_old: Some(to_view(api, sub, &old)),
        view_new: Some(to_view(api, sub, &new)),
        old: Some(old),
        new: Some(new),
        noop,
        orphan: false,
    })
}

/// The `Status` a successful immediate delete answers with.
pub fn delete_status(api: &ApiResource, deleted: &Value) -> Value {
    let mut details = Map::new();
    details.insert(
        "name".into(),
        json!(meta_str(deleted, "name").unwrap_or_default()),
    );
    if !api.group.is_empty() {
        details.insert("group".into(), json!(api.group));
    }
    details.insert("kind".into(), json!(api.plural));
    details.insert(
        "uid".into(),
        json!(meta_str(deleted, "uid").unwrap_or_default()),
    );
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": Value::Object(details)})
}

#[cfg(test)]
mod tests {
    use super::super::resources::lookup;
    use super::*;

    fn store_with_namespace() -> Store {
        let mut store = Store::new(100);
        store.put(
            Resource::Namespaces,
            json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "kube-system"}}),
        );
        store
    }

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "cce-eni-ipam", "namespace": "kube-system"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "cce-eni-ipam"}},
                "template": {"metadata": {"labels": {"app": "cce-eni-ipam"}},
                    "spec": {"containers": [{"name": "cce-eni-ipam", "image": "r/cce-cni:v1.9.3"}]}}},
            "status": {"replicas": 9}})
    }

    fn request(change: Change, sub: Sub) -> WriteRequest {
        WriteRequest {
            api: lookup("apps", "v1", "deployments").unwrap(),
            namespace: Some("kube-system".into()),
            sub,
            change,
            dry_run: false,
            preserve: false,
        }
    }

    fn commit(store: &mut Store, prepared: Prepared) -> Object {
        store.put(Resource::Deployments, prepared.new.unwrap())
    }

    #[test]
    fn create_sets_metadata_defaults_and_clears_status() {
        let mut store = store_with_namespace();
        let p = prepare(
            &store,
            &request(Change::Create { body: deployment() }, Sub::Main),
            "now",
        )
        .unwrap();
        let stored = commit(&mut store, p);
        assert_eq!(stored["metadata"]["generation"], 1);
        assert_eq!(stored["metadata"]["creationTimestamp"], "now");
        assert_eq!(stored["status"], json!({}));
        assert_eq!(stored["spec"]["strategy"]["type"], "RollingUpdate");
        let again = prepare(
            &store,
            &request(Change::Create { body: deployment() }, Sub::Main),
            "now",
        );
        assert_eq!(again.unwrap_err().reason, "AlreadyExists");
    }

    #[test]
    fn generation_moves_only_with_spec_and_noops_are_detected() {
        let mut store = store_with_namespace();
        let p = prepare(
            &store,
            &request(Change::Create { body: deployment() }, Sub::Main),
            "t",
        )
        .unwrap();
        commit(&mut store, p);
        let patch = |store: &Store, patch: Value, sub: Sub| {
            prepare(
                store,
                &request(
                    Change::Patch {
                        name: "cce-eni-ipam".into(),
                        kind: PatchKind::Merge,
                        patch,
                    },
                    sub,
                ),
                "t",
            )
        };
        let p = patch(
            &store,
            json!({"metadata": {"labels": {"a": "b"}}}),
            Sub::Main,
        )
        .unwrap();
        assert!(!p.noop);
        let stored = commit(&mut store, p);
        assert_eq!(stored["metadata"]["generation"], 1);
        let p = patch(
            &store,
            json!({"metadata": {"labels": {"a": "b"}}}),
            Sub::Main,
        )
        .unwrap();
        assert!(p.noop);
        let p = patch(&store, json!({"spec": {"replicas": 0}}), Sub::Scale).unwrap();
        let stored = commit(&mut store, p);
        assert_eq!(stored["metadata"]["generation"], 2);
        assert_eq!(stored["spec"]["replicas"], 0);
        let p = patch(&store, json!({"status": {"replicas": 5}}), Sub::Main).unwrap();
        assert!(p.noop, "status is ignored on the main resource");
        let p = patch(&store, json!({"status": {"replicas": 5}}), Sub::Status).unwrap();
        let stored = commit(&mut store, p);
        assert_eq!(stored["status"]["replicas"], 5);
        assert_eq!(stored["metadata"]["generation"], 2);
        assert_eq!(scale_of(&stored)["status"]["selector"], "app=cce-eni-ipam");
    }

    #[test]
    fn stale_resource_version_conflicts() {
        let mut store = store_with_namespace();
        let p = prepare(
            &store,
            &request(Change::Create { body: deployment() }, Sub::Main),
            "t",
        )
        .unwrap();
        commit(&mut store, p);
        let mut body = deployment();
        body["metadata"]["resourceVersion"] = json!("1");
        let err = prepare(
            &store,
            &request(
                Change::Replace {
                    name: "cce-eni-ipam".into(),
                    body,
                },
                Sub::Main,
            ),
            "t",
        )
        .unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(err.reason, "Conflict");
    }

    #[test]
    fn json_patch_failures_are_422() {
        let mut store = store_with_namespace();
        let p = prepare(
            &store,
            &request(Change::Create { body: deployment() }, Sub::Main),
            "t",
        )
        .unwrap();
        commit(&mut store, p);
        let err = prepare(
            &store,
            &request(
                Change::Patch {
                    name: "cce-eni-ipam".into(),
                    kind: PatchKind::Json,
                    patch: json!([{"op": "test", "path": "/spec/replicas", "value": 1}]),
                },
                Sub::Main,
            ),
            "t",
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        let err = prepare(
            &store,
            &request(
                Change::Patch {
                    name: "cce-eni-ipam".into(),
                    kind: PatchKind::Json,
                    patch: json!({"not": "a list"}),
                },
                Sub::Main,
            ),
            "t",
        )
        .unwrap_err();
        assert_eq!(err.code, 400);
    }

    #[test]
    fn validation_rejects_bad_objects() {
        let store = store_with_namespace();
        let mut body = deployment();
        body["spec"]["replicas"] = json!(-1);
        let err = prepare(&store, &request(Change::Create { body }, Sub::Main), "t").unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message
                .starts_with("Deployment.apps \"cce-eni-ipam\" is invalid")
        );
        let mut body = deployment();
        body["metadata"]["name"] = json!("Bad_Name");
        let err = prepare(&store, &request(Change::Create { body }, Sub::Main), "t").unwrap_err();
        assert_eq!(err.code, 422);
        let mut body = deployment();
        body["metadata"]["namespace"] = json!("other");
        let err = prepare(&store, &request(Change::Create { body }, Sub::Main), "t").unwrap_err();
        assert_eq!(err.code, 400);
    }
}
