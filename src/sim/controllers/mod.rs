//! Pure controllers of the simulated cluster: DaemonSet, Deployment, ReplicaSet, scheduler
//! and kubelet. Each reads a [`Snapshot`] and returns the writes it wants.
//!
//! One pass makes at most one write per object (the server applies writes with
//! resourceVersion preconditions, so a second write to the same object would only conflict):
//! controllers run in the order Deployment, ReplicaSet, DaemonSet, scheduler, kubelet and skip
//! objects an earlier one already wrote. Work that needs a second write happens next pass.

mod daemonset;
mod deployment;
mod kubelet;
mod replicaset;
mod scheduler;
mod util;

#[cfg(test)]
mod testkit;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use regex::Regex;
use serde_json::Value;
use time::OffsetDateTime;

use super::model::{Action, Behaviour, Reconciled, Resource, Snapshot};

/// One pass of every controller over the snapshot.
pub fn reconcile(snapshot: &Snapshot, behaviour: &Behaviour) -> Reconciled {
    let pass = Pass::new(snapshot, behaviour);
    let mut out = Out::new(snapshot);
    deployment::reconcile(&pass, snapshot, &mut out);
    replicaset::reconcile(&pass, snapshot, &mut out);
    daemonset::reconcile(&pass, snapshot, &mut out);
    scheduler::reconcile(&pass, snapshot, &mut out);
    kubelet::reconcile(&pass, snapshot, &mut out);
    Reconciled {
        actions: out.actions,
        requeue_after: out.requeue,
    }
}

/// The ControllerRevision `data` the DaemonSet controller records for a pod template:
/// `{"spec":{"template":{…,"$patch":"replace"}}}`, compared as compact sorted JSON.
pub fn daemonset_revision_data(template: &Value) -> Value {
    util::daemonset_patch(template)
}

/// The hash the controllers put in `pod-template-hash` / `controller-revision-hash` for a
/// template (no hash collisions so far).
pub fn pod_template_hash(template: &Value) -> String {
    util::template_hash(template, None)
}

/// What every controller reads, indexed once per pass.
pub(crate) struct Pass<'a> {
    pub now: OffsetDateTime,
    pub behaviour: &'a Behaviour,
    pub broken_image: Option<Regex>,
    /// Nodes sorted by name.
    pub nodes: Vec<&'a Value>,
    pub node_by_name: HashMap<&'a str, &'a Value>,
    /// Pods by the uid of their controller.
    pub pods_by_owner: HashMap<&'a str, Vec<&'a Value>>,
    /// Pods bound to a node (`spec.nodeName`), by node.
    pub pods_by_node: HashMap<&'a str, Vec<&'a Value>>,
    /// Every pod's hot fields, read once per pass (walking big JSON trees again and again
    /// is what a pass over thousands of pods spends its time on).
    pub pods: Vec<PodInfo<'a>>,
    infos_by_owner: HashMap<&'a str, Vec<usize>>,
}

/// The fields of a pod the controllers look at on every pass.
pub(crate) struct PodInfo<'a> {
    pub obj: &'a Value,
    pub name: &'a str,
    pub node: Option<&'a str>,
    pub phase: &'a str,
    pub ready: bool,
    pub deleting: bool,
    pub created: &'a str,
}

impl<'a> PodInfo<'a> {
    fn new(obj: &'a Value) -> Self {
        let meta = obj.get("metadata");
        Self {
            obj,
            name: util::name(obj),
            node: util::pod_node_name(obj),
            phase: util::pod_phase(obj),
            ready: util::pod_is_ready(obj),
            deleting: util::is_deleting(obj),
            created: meta
                .and_then(|m| m.get("creationTimestamp"))
                .and_then(Value::as_str)
                .unwrap_or(""),
        }
    }

    pub fn terminal(&self) -> bool {
        matches!(self.phase, "Succeeded" | "Failed")
    }
}

impl<'a> Pass<'a> {
    fn new(snapshot: &'a Snapshot, behaviour: &'a Behaviour) -> Self {
        let mut nodes: Vec<&Value> = snapshot.nodes.iter().map(|n| n.as_ref()).collect();
        nodes.sort_by_cached_key(|n| util::name(n));
        let node_by_name = nodes.iter().map(|n| (util::name(n), *n)).collect();
        let mut pods_by_owner: HashMap<&str, Vec<&Value>> = HashMap::new();
        let mut pods_by_node: HashMap<&str, Vec<&Value>> = HashMap::new();
        let mut infos_by_owner: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut pods = Vec::with_capacity(snapshot.pods.len());
        for (i, pod) in snapshot.pods.iter().enumerate() {
            let info = PodInfo::new(pod.as_ref());
            if let Some(owner) = util::controller_uid(info.obj) {
                pods_by_owner.entry(owner).or_default().push(info.obj);
                infos_by_owner.entry(owner).or_default().push(i);
            }
            if let Some(node) = info.node {
                pods_by_node.entry(node).or_default().push(info.obj);
            }
            pods.push(info);
        }
        Self {
            now: snapshot.now.unwrap_or_else(OffsetDateTime::now_utc),
            behaviour,
            broken_image: behaviour.broken_image.as_deref().and_then(cached_regex),
            nodes,
            node_by_name,
            pods_by_owner,
            pods_by_node,
            pods,
            infos_by_owner,
        }
    }

    pub fn owned_infos(&self, owner_uid: &str) -> impl Iterator<Item = &PodInfo<'a>> {
        self.infos_by_owner
            .get(owner_uid)
            .into_iter()
            .flatten()
            .map(|i| &self.pods[*i])
    }

    pub fn owned_pods(&self, owner_uid: &str) -> &[&'a Value] {
        self.pods_by_owner
            .get(owner_uid)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

thread_local! {
    static REGEX_CACHE: RefCell<Option<(String, Option<Regex>)>> = const { RefCell::new(None) };
}

/// Compiling the broken-image pattern once, not once per pass. A pattern that does not
/// compile breaks no image.
fn cached_regex(pattern: &str) -> Option<Regex> {
    REGEX_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((p, r)) = cache.as_ref()
            && p == pattern
        {
            return r.clone();
        }
        let r = Regex::new(pattern).ok();
        *cache = Some((pattern.to_string(), r.clone()));
        r
    })
}

/// The writes of one pass, with at most one write per object.
pub(crate) struct Out<'s> {
    pub actions: Vec<Action>,
    pub requeue: Option<Duration>,
    /// Hashes of (resource, namespace, name) written this pass; a hash collision only
    /// delays a write by one pass.
    touched: HashSet<u64>,
    /// `namespace/name` of every pod that exists or is being created this pass, built on
    /// first use.
    taken_pod_names: Option<HashSet<String>>,
    pods: &'s [super::model::Object],
}

impl<'s> Out<'s> {
    fn new(snapshot: &'s Snapshot) -> Self {
        Self {
            actions: Vec::new(),
            requeue: None,
            touched: HashSet::new(),
            taken_pod_names: None,
            pods: &snapshot.pods,
        }
    }

    /// Fresh pod names for `owner`, unused by any pod.
    pub fn pod_names(&mut self, owner: &Value, count: usize) -> Vec<String> {
        if count == 0 {
            return Vec::new();
        }
        let pods = self.pods;
        let taken = self.taken_pod_names.get_or_insert_with(|| {
            pods.iter()
                .map(|p| format!("{}/{}", util::namespace(p), util::name(p)))
                .collect()
        });
        util::pod_names(owner, count, taken)
    }

    fn key(resource: Resource, namespace: &str, name: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        resource.hash(&mut h);
        namespace.hash(&mut h);
        name.hash(&mut h);
        h.finish()
    }

    fn key_of(resource: Resource, obj: &Value) -> u64 {
        Self::key(resource, util::namespace(obj), util::name(obj))
    }

    pub fn touched(&self, resource: Resource, obj: &Value) -> bool {
        !self.touched.is_empty() && self.touched.contains(&Self::key_of(resource, obj))
    }

    /// Records a write to an existing object unless one is already queued this pass.
    pub fn write(&mut self, action: Action) -> bool {
        let key = match &action {
            Action::Update { resource, object }
            | Action::UpdateStatus { resource, object }
            | Action::Create { resource, object } => Some(Self::key_of(*resource, object)),
            Action::Delete {
                resource,
                namespace,
                name,
            } => Some(Self::key(
                *resource,
                namespace.as_deref().unwrap_or(""),
                name,
            )),
            Action::Event(_) => None,
        };
        if let Some(key) = key
            && !self.touched.insert(key)
        {
            return false;
        }
        self.actions.push(action);
        true
    }

    pub fn delete(&mut self, resource: Resource, obj: &Value) -> bool {
        let ns = util::namespace(obj);
        self.write(Action::Delete {
            resource,
            namespace: (!ns.is_empty()).then(|| ns.to_string()),
            name: util::name(obj).to_string(),
        })
    }

    pub fn event(&mut self, action: Action) {
        self.actions.push(action);
    }

    pub fn requeue(&mut self, after: Duration) {
        let after = after.max(Duration::from_millis(1));
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }

    /// Requeue for the moment `at`, if it is in the future.
    pub fn requeue_at(&mut self, now: OffsetDateTime, at: OffsetDateTime) {
        let d = at - now;
        if d.is_positive() {
            self.requeue(Duration::from_secs_f64(d.as_seconds_f64()));
        }
    }
}
