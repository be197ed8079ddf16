//! A tiny in-memory store for the controllers' tests: it applies [`Action`]s the way the
//! API server does (uid, resourceVersion, generation, 409 on stale writes, status kept on
//! update, graceful pod deletion, garbage collection of owned objects).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::reconcile;
use super::util;
use crate::sim::model::{Action, Behaviour, EventRecord, Reconciled, Resource, Snapshot};

pub struct FakeStore {
    pub objects: BTreeMap<(Resource, String, String), Arc<Value>>,
    pub events: Vec<EventRecord>,
    pub now: OffsetDateTime,
    next_rv: u64,
    pub conflicts: usize,
}

impl FakeStore {
    pub fn new() -> Self {
        Self {
            objects: BTreeMap::new(),
            events: Vec::new(),
            now: OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap(),
            next_rv: 1,
            conflicts: 0,
        }
    }

    pub fn with_nodes(masters: usize, workers: usize) -> Self {
        let mut s = Self::new();
        for (i, name) in (1..=masters)
            .map(|i| format!("master-{i}"))
            .chain((1..=workers).map(|i| format!("worker-{i}")))
            .enumerate()
        {
            let master = name.starts_with("master-");
            s.put(
                Resource::Nodes,
                crate::sim::cluster::node_object(&name, i, master),
            );
        }
        s
    }

    fn rv(&mut self) -> String {
        self.next_rv += 1;
        self.next_rv.to_string()
    }

    fn key(resource: Resource, obj: &Value) -> (Resource, String, String) {
        (
            resource,
            util::namespace(obj).to_string(),
            util::name(obj).to_string(),
        )
    }

    /// Creates an object as a client would.
    pub fn put(&mut self, resource: Resource, mut obj: Value) {
        let rv = self.rv();
        let meta = obj["metadata"].as_object_mut().unwrap();
        meta.entry("uid")
            .or_insert_with(|| json!(format!("uid-{rv}")));
        meta.insert("resourceVersion".into(), json!(rv));
        meta.insert("generation".into(), json!(1));
        meta.insert("creationTimestamp".into(), json!(util::timestamp(self.now)));
        self.objects
            .insert(Self::key(resource, &obj), Arc::new(obj));
    }

    pub fn get(&self, resource: Resource, ns: &str, name: &str) -> Option<Value> {
        self.objects
            .get(&(resource, ns.to_string(), name.to_string()))
            .map(|v| v.as_ref().clone())
    }

    pub fn list(&self, resource: Resource) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((r, _, _), _)| *r == resource)
            .map(|(_, v)| v.as_ref().clone())
            .collect()
    }

    /// A client's update: spec changes bump the generation.
    pub fn patch(&mut self, resource: Resource, ns: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let key = (resource, ns.to_string(), name.to_string());
        let mut obj = self.objects.get(&key).unwrap().as_ref().clone();
        let before = obj.get("spec").cloned();
        f(&mut obj);
        let rv = self.rv();
        obj["metadata"]["resourceVersion"] = json!(rv);
        if obj.get("spec") != before.as_ref() {
            let g = util::generation(&obj) + 1;
            obj["metadata"]["generation"] = json!(g);
        }
        self.objects.insert(key, Arc::new(obj));
    }

    pub fn patch_node(&mut self, name: &str, f: impl FnOnce(&mut Value)) {
        self.patch(Resource::Nodes, "", name, f);
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    pub fn snapshot(&self) -> Snapshot {
        let of = |r: Resource| -> Vec<Arc<Value>> {
            self.objects
                .iter()
                .filter(|((kind, _, _), _)| *kind == r)
                .map(|(_, v)| Arc::clone(v))
                .collect()
        };
        Snapshot {
            now: Some(self.now),
            nodes: of(Resource::Nodes),
            pods: of(Resource::Pods),
            daemonsets: of(Resource::DaemonSets),
            deployments: of(Resource::Deployments),
            replicasets: of(Resource::ReplicaSets),
            controllerrevisions: of(Resource::ControllerRevisions),
        }
    }

    /// One reconcile pass, applied.
    pub fn pass(&mut self, behaviour: &Behaviour) -> Reconciled {
        let r = reconcile(&self.snapshot(), behaviour);
        for a in &r.actions {
            self.apply(a.clone());
        }
        r
    }

    /// Passes until nothing is left to do; returns how many passes wrote something.
    pub fn settle(&mut self, behaviour: &Behaviour, max_passes: usize) -> usize {
        for i in 0..max_passes {
            if self.pass(behaviour).actions.is_empty() {
                return i;
            }
        }
        panic!("not quiescent after {max_passes} passes");
    }

    fn check_rv(&mut self, key: &(Resource, String, String), obj: &Value) -> Option<Value> {
        let current = self.objects.get(key)?;
        if current["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"] {
            self.conflicts += 1;
            return None;
        }
        Some(current.as_ref().clone())
    }

    pub fn apply(&mut self, action: Action) {
        match action {
            Action::Create { resource, object } => {
                let key = Self::key(resource, &object);
                if self.objects.contains_key(&key) {
                    self.conflicts += 1;
                    return;
                }
                self.put(resource, object);
            }
            Action::Update {
                resource,
                mut object,
            } => {
                let key = Self::key(resource, &object);
                let Some(current) = self.check_rv(&key, &object) else {
                    return;
                };
                if let Some(s) = current.get("status") {
                    object["status"] = s.clone();
                }
                let mut g = util::generation(&current);
                if object.get("spec") != current.get("spec") {
                    g += 1;
                }
                object["metadata"]["generation"] = json!(g);
                object["metadata"]["resourceVersion"] = json!(self.rv());
                self.objects.insert(key, Arc::new(object));
            }
            Action::UpdateStatus { resource, object } => {
                let key = Self::key(resource, &object);
                let Some(mut current) = self.check_rv(&key, &object) else {
                    return;
                };
                current["status"] = object.get("status").cloned().unwrap_or(Value::Null);
                current["metadata"]["resourceVersion"] = json!(self.rv());
                self.objects.insert(key, Arc::new(current));
            }
            Action::Delete {
                resource,
                namespace,
                name,
            } => {
                let key = (resource, namespace.unwrap_or_default(), name);
                let Some(current) = self.objects.get(&key).map(|v| v.as_ref().clone()) else {
                    return;
                };
                // Graceful deletion: a bound pod first gets a deletionTimestamp.
                if resource == Resource::Pods
                    && !util::is_deleting(&current)
                    && current.pointer("/spec/nodeName").is_some()
                {
                    let mut c = current;
                    c["metadata"]["deletionTimestamp"] = json!(util::timestamp(self.now));
                    c["metadata"]["resourceVersion"] = json!(self.rv());
                    self.objects.insert(key, Arc::new(c));
                    return;
                }
                self.objects.remove(&key);
                // Pods own nothing; skipping them keeps big rollouts linear.
                if resource != Resource::Pods {
                    self.collect_garbage(util::uid(&current).to_string());
                }
            }
            Action::Event(e) => self.events.push(e),
        }
    }

    fn collect_garbage(&mut self, owner_uid: String) {
        let dependents: Vec<_> = self
            .objects
            .iter()
            .filter(|(_, v)| util::controller_uid(v) == Some(owner_uid.as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        for k in dependents {
            if let Some(v) = self.objects.remove(&k) {
                self.collect_garbage(util::uid(&v).to_string());
            }
        }
    }

    pub fn pods_with_label(&self, key: &str, value: &str) -> Vec<Value> {
        self.list(Resource::Pods)
            .into_iter()
            .filter(|p| util::label(p, key) == Some(value))
            .collect()
    }
}
