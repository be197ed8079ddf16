//! In-memory storage: one ordered map per resource, one global resourceVersion counter, a
//! bounded history of watch events, and a broadcast of each event to every open watch.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::broadcast;

use super::super::model::{Object, Resource};

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub type Key = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change to one object; shared by every watcher, serialised at most once.
#[derive(Debug)]
pub struct WatchEvent {
    pub type_: EventType,
    pub resource: Resource,
    pub rv: u64,
    pub object: Object,
    /// The object before the change (for selector transitions).
    pub old: Option<Object>,
    encoded: OnceLock<Bytes>,
}

impl WatchEvent {
    /// The object as JSON, computed once for all watchers.
    pub fn object_json(&self) -> &Bytes {
        self.encoded
            .get_or_init(|| Bytes::from(serde_json::to_vec(&*self.object).unwrap_or_default()))
    }
}

/// How many events the history keeps for watches that resume from a resourceVersion.
pub const DEFAULT_HISTORY: usize = 50_000;
const BROADCAST_CAPACITY: usize = 16_384;

pub struct Store {
    rv: u64,
    tables: HashMap<Resource, BTreeMap<Key, Object>>,
    history: VecDeque<Arc<WatchEvent>>,
    history_limit: usize,
    /// Every event with rv above this is in `history`.
    floor: u64,
    tx: broadcast::Sender<Arc<WatchEvent>>,
    /// Owner uid → objects whose ownerReferences name it.
    dependents: HashMap<String, BTreeSet<(Resource, Key)>>,
}

pub fn key_of(object: &Value) -> Key {
    let meta = object.get("metadata");
    let field = |name: &str| {
        meta.and_then(|m| m.get(name))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (field("namespace"), field("name"))
}

fn owner_uids(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The `metadata.resourceVersion` of a stored object as a number (0 when absent).
pub fn rv_of(object: &Value) -> u64 {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        Self {
            rv: 0,
            tables: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            floor: 0,
            tx,
            dependents: HashMap::new(),
        }
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, resource: Resource, key: &Key) -> Option<Object> {
        self.tables.get(&resource).and_then(|t| t.get(key)).cloned()
    }

    /// Objects of `resource` in key order, limited to `namespace` when given.
    pub fn list(&self, resource: Resource, namespace: Option<&str>) -> Vec<Object> {
        let Some(table) = self.tables.get(&resource) else {
            return Vec::new();
        };
        match namespace {
            Some(ns) => table
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, o)| o.clone())
                .collect(),
            None => table.values().cloned().collect(),
        }
    }

    pub fn count(&self, resource: Resource) -> usize {
        self.tables.get(&resource).map_or(0, BTreeMap::len)
    }

    /// Stores `object` (its resourceVersion is set here) and records the event.
    pub fn put(&mut self, resource: Resource, mut object: Value) -> Object {
        self.rv += 1;
        let rv = self.rv;
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let key = key_of(&object);
        let object: Object = Arc::new(object);
        let old = self
            .tables
            .entry(resource)
            .or_default()
            .insert(key.clone(), object.clone());
        if let Some(old) = &old {
            self.unindex(resource, &key, old);
        }
        self.index(resource, &key, &object);
        let type_ = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(type_, resource, rv, object.clone(), old);
        object
    }

    /// Removes an object and records a DELETED event carrying the deletion's resourceVersion.
    pub fn remove(&mut self, resource: Resource, key: &Key) -> Option<Object> {
        let old = self.tables.get_mut(&resource)?.remove(key)?;
        self.unindex(resource, key, &old);
        self.rv += 1;
        let rv = self.rv;
        let mut last = (*old).clone();
        if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        self.record(
            EventType::Deleted,
            resource,
            rv,
            Arc::new(last),
            Some(old.clone()),
        );
        Some(old)
    }

    /// Objects that name `uid` in their ownerReferences.
    pub fn dependents_of(&self, uid: &str) -> Vec<(Resource, Key)> {
        self.dependents
            .get(uid)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn index(&mut self, resource: Resource, key: &Key, object: &Value) {
        for uid in owner_uids(object) {
            self.dependents
                .entry(uid)
                .or_default()
                .insert((resource, key.clone()));
        }
    }

    fn unindex(&mut self, resource: Resource, key: &Key, object: &Value) {
        for uid in owner_uids(object) {
            if let Some(set) = self.dependents.get_mut(&uid) {
                set.remove(&(resource, key.clone()));
                if set.is_empty() {
                    self.dependents.remove(&uid);
                }
            }
        }
    }

    fn record(
        &mut self,
        type_: EventType,
        resource: Resource,
        rv: u64,
        object: Object,
        old: Option<Object>,
    ) {
        let event = Arc::new(WatchEvent {
            type_,
            resource,
            rv,
            object,
            old,
            encoded: OnceLock::new(),
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.floor = dropped.rv;
            }
        }
        // No receivers is fine: nobody watches.
        let _ = self.tx.send(event);
    }

    /// A receiver of every future event; take it under the same lock as the initial state.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.tx.subscribe()
    }

    /// Events of `resource` after `rv`, or `Err(oldest)` when the history no longer reaches back.
    pub fn events_since(&self, resource: Resource, rv: u64) -> Result<Vec<Arc<WatchEvent>>, u64> {
        if rv < self.floor {
            return Err(self.floor + 1);
        }
        let start = self.history.partition_point(|e| e.rv <= rv);
        Ok(self
            .history
            .range(start..)
            .filter(|e| e.resource == resource)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "kube-system"}, "data": {}})
    }

    #[test]
    fn every_write_bumps_the_global_resource_version() {
        let mut store = Store::new(10);
        let a = store.put(Resource::ConfigMaps, cm("a"));
        let b = store.put(Resource::Pods, cm("b"));
        assert_eq!(rv_of(&a), 1);
        assert_eq!(rv_of(&b), 2);
        assert_eq!(store.current_rv(), 2);
        let removed = store.remove(Resource::ConfigMaps, &key_of(&a)).unwrap();
        assert_eq!(rv_of(&removed), 1);
        assert_eq!(store.current_rv(), 3);
        assert!(store.get(Resource::ConfigMaps, &key_of(&a)).is_none());
    }

    #[test]
    fn history_replays_and_expires() {
        let mut store = Store::new(3);
        for name in ["a", "b", "c", "d", "e"] {
            store.put(Resource::ConfigMaps, cm(name));
        }
        let events = store.events_since(Resource::ConfigMaps, 3).unwrap();
        assert_eq!(events.iter().map(|e| e.rv).collect::<Vec<_>>(), vec![4, 5]);
        assert!(store.events_since(Resource::ConfigMaps, 2).is_ok());
        assert_eq!(store.events_since(Resource::ConfigMaps, 1).unwrap_err(), 3);
        assert!(store.events_since(Resource::Pods, 4).unwrap().is_empty());
    }

    #[test]
    fn lists_one_namespace_in_name_order() {
        let mut store = Store::new(10);
        store.put(Resource::ConfigMaps, cm("b"));
        store.put(Resource::ConfigMaps, cm("a"));
        store.put(
            Resource::ConfigMaps,
            json!({"metadata": {"name": "z", "namespace": "default"}}),
        );
        let names: Vec<String> = store
            .list(Resource::ConfigMaps, Some("kube-system"))
            .iter()
            .map(|o| key_of(o).1)
            .collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(store.list(Resource::ConfigMaps, None).len(), 3);
    }

    #[test]
    fn indexes_dependents_by_owner_uid() {
        let mut store = Store::new(10);
        let mut pod = cm("p");
        pod["metadata"]["ownerReferences"] = json!([{"uid": "u1", "kind": "ReplicaSet"}]);
        store.put(Resource::Pods, pod.clone());
        assert_eq!(store.dependents_of("u1").len(), 1);
        pod["metadata"]["ownerReferences"] = json!([]);
        store.put(Resource::Pods, pod);
        assert!(store.dependents_of("u1").is_empty());
    }
}
