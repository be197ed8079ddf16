//! The Deployment controller, after `pkg/controller/deployment`: ReplicaSets per template
//! with revision annotations (an existing match is reused and renumbered, which is how
//! `rollout undo` works), RollingUpdate and Recreate, proportional scaling, the progress
//! deadline, conditions, status, and revision history cleanup.

use std::cmp::Ordering;
#[cfg(test)]
use std::collections::HashSet;

use serde_json::{Map, Value, json};

use super::util::{
    self, DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION, POD_TEMPLATE_HASH_LABEL,
    REVISION_ANNOTATION, REVISION_HISTORY_ANNOTATION, str_at,
};
use super::{Out, Pass};
use crate::sim::model::{Action, Resource, Snapshot};

const COMPONENT: &str = "deployment-controller";
/// `maxRevHistoryLengthInChars` for the revision-history annotation.
const MAX_REV_HISTORY_CHARS: usize = 2000;
const SKIP_COPY: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    "deprecated.deployment.rollback.to",
];

pub(crate) fn reconcile(pass: &Pass, snapshot: &Snapshot, out: &mut Out) {
    for d in &snapshot.deployments {
        if !util::is_deleting(d) {
            Sync::run(pass, snapshot, d, out);
        }
    }
}

/// A ReplicaSet as this pass sees it, with the changes made to it so far.
struct Rs<'a> {
    orig: Option<&'a Value>,
    obj: Value,
    dirty: bool,
}

impl Rs<'_> {
    fn name(&self) -> &str {
        util::name(&self.obj)
    }
    fn replicas(&self) -> i64 {
        util::i64_at(&self.obj, "/spec/replicas").unwrap_or(1)
    }
    fn status(&self, field: &str) -> i64 {
        util::i64_at(&self.obj, &format!("/status/{field}")).unwrap_or(0)
    }
    fn created(&self) -> &str {
        str_at(&self.obj, "/metadata/creationTimestamp").unwrap_or("")
    }
    fn revision(&self) -> i64 {
        util::annotation(&self.obj, REVISION_ANNOTATION)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    }
    fn annotations_mut(&mut self) -> &mut Map<String, Value> {
        let meta = self.obj["metadata"].as_object_mut();
        let Some(meta) = meta else {
            unreachable!("ReplicaSets in the working set have metadata")
        };
        let a = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !a.is_object() {
            *a = Value::Object(Map::new());
        }
        match a.as_object_mut() {
            Some(m) => m,
            None => unreachable!("just made an object"),
        }
    }
}

struct Sync<'a, 'p> {
    pass: &'p Pass<'a>,
    d: &'a Value,
    replicas: i64,
    rolling: bool,
    max_surge: i64,
    max_unavailable: i64,
    progress_deadline: Option<i64>,
    /// The Deployment's conditions as the sync changes them.
    conditions: Vec<Value>,
    /// The revision annotation the Deployment should carry.
    revision: Option<String>,
    collision_bump: bool,
    created_new: bool,
    rss: Vec<Rs<'a>>,
    new_idx: Option<usize>,
    /// Names of ReplicaSets in the namespace that are not this Deployment's.
    other_rs_names: Vec<&'a str>,
}

impl<'a, 'p> Sync<'a, 'p> {
    fn run(pass: &'p Pass<'a>, snapshot: &'a Snapshot, d: &'a Value, out: &mut Out) {
        let ns = util::namespace(d);
        let d_uid = util::uid(d);
        let selector = d.pointer("/spec/selector");
        let mut rss = Vec::new();
        let mut other_rs_names = Vec::new();
        let mut adopting = false;
        for rs in &snapshot.replicasets {
            let rs = rs.as_ref();
            if util::namespace(rs) != ns {
                continue;
            }
            match util::controller_uid(rs) {
                Some(u) if u == d_uid => rss.push(Rs {
                    orig: Some(rs),
                    obj: rs.clone(),
                    dirty: false,
                }),
                None if !util::is_deleting(rs)
                    && util::selector_matches(selector, util::labels(rs)) =>
                {
                    out.write(Action::Update {
                        resource: Resource::ReplicaSets,
                        object: util::adopted(rs, d, "Deployment"),
                    });
                    adopting = true;
                }
                _ => other_rs_names.push(util::name(rs)),
            }
        }
        if adopting {
            return;
        }
        rss.sort_by(|a, b| {
            a.created()
                .cmp(b.created())
                .then_with(|| a.name().cmp(b.name()))
        });
        let replicas = util::i64_at(d, "/spec/replicas").unwrap_or(1).max(0);
        let rolling = str_at(d, "/spec/strategy/type").unwrap_or("RollingUpdate") != "Recreate";
        let (max_surge, max_unavailable) = if rolling {
            fenceposts(d, replicas)
        } else {
            (0, 0)
        };
        let progress_deadline = match d.pointer("/spec/progressDeadlineSeconds") {
            Some(v) => v.as_i64().filter(|s| *s != i64::from(i32::MAX)),
            None => Some(600),
        };
        let template = d.pointer("/spec/template").unwrap_or(&Value::Null);
        let new_idx = rss
            .iter()
            .position(|rs| equal_ignore_hash(rs.obj.pointer("/spec/template"), template));
        let mut s = Sync {
            pass,
            d,
            replicas,
            rolling,
            max_surge,
            max_unavailable: max_unavailable.min(replicas),
            progress_deadline,
            conditions: d
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            revision: None,
            collision_bump: false,
            created_new: false,
            rss,
            new_idx,
            other_rs_names,
        };
        let paused = util::bool_at(d, "/spec/paused");
        let scaling_event = s.rss.iter().any(|rs| {
            rs.replicas() > 0
                && util::annotation(&rs.obj, DESIRED_REPLICAS_ANNOTATION)
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v != replicas)
        });
        let rollout_status = if paused || scaling_event {
            s.sync_new_rs(false, out);
            s.scale(out);
            false
        } else if rolling {
            s.rollout_rolling(out);
            true
        } else {
            s.rollout_recreate(out);
            true
        };
        s.finish(rollout_status, out);
    }

    fn old_indices(&self) -> Vec<usize> {
        (0..self.rss.len())
            .filter(|i| Some(*i) != self.new_idx)
            .collect()
    }

    /// `getNewReplicaSet`: syncs the new ReplicaSet's annotations and the Deployment's
    /// revision, or creates the new ReplicaSet.
    fn sync_new_rs(&mut self, create: bool, out: &mut Out) {
        let max_old = self
            .old_indices()
            .iter()
            .map(|i| self.rss[*i].revision())
            .max()
            .unwrap_or(0);
        let new_revision = max_old + 1;
        if let Some(i) = self.new_idx {
            let changed = self.set_new_rs_annotations(i, new_revision, true);
            let min_ready = self.d.pointer("/spec/minReadySeconds").cloned();
            let rs = &mut self.rss[i];
            let min_ready_changed = rs.obj.pointer("/spec/minReadySeconds") != min_ready.as_ref()
                && !(min_ready.as_ref().is_none_or(|v| v.as_i64() == Some(0))
                    && rs
                        .obj
                        .pointer("/spec/minReadySeconds")
                        .is_none_or(|v| v.as_i64() == Some(0)));
            if changed || min_ready_changed {
                if min_ready_changed {
                    rs.obj["spec"]["minReadySeconds"] = min_ready.unwrap_or(json!(0));
                }
                rs.dirty = true;
                return;
            }
            let (revision, rs_name) = (rs.revision().to_string(), rs.name().to_string());
            self.revision = Some(revision);
            if self.progress_deadline.is_some() && self.condition("Progressing").is_none() {
                let msg = format!("Found new replica set \"{rs_name}\"");
                let c = self.new_condition("Progressing", true, "FoundNewReplicaSet", msg);
                self.set_condition(c);
            }
            return;
        }
        if !create {
            return;
        }
        let d = self.d;
        let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let collision = util::i64_at(d, "/status/collisionCount");
        let hash = util::template_hash(&template, collision);
        let name = format!("{}-{}", util::name(d), hash);
        if self.rss.iter().any(|rs| rs.name() == name)
            || self.other_rs_names.contains(&name.as_str())
        {
            self.collision_bump = true;
            return;
        }
        let mut new_template = template;
        new_template["metadata"]["labels"][POD_TEMPLATE_HASH_LABEL] = json!(hash);
        let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
        selector["matchLabels"][POD_TEMPLATE_HASH_LABEL] = json!(hash);
        let labels = new_template["metadata"]["labels"].clone();
        let mut spec = json!({
            "replicas": 0,
            "selector": selector,
            "template": new_template,
        });
        if let Some(m) = d.pointer("/spec/minReadySeconds") {
            spec["minReadySeconds"] = m.clone();
        }
        let obj = json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": util::namespace(d),
                "labels": labels,
                "ownerReferences": [util::controller_ref(d, "Deployment")],
            },
            "spec": spec,
        });
        self.rss.push(Rs {
            orig: None,
            obj,
            dirty: true,
        });
        let i = self.rss.len() - 1;
        self.new_idx = Some(i);
        let count = self.new_rs_new_replicas(i);
        self.rss[i].obj["spec"]["replicas"] = json!(count);
        self.set_new_rs_annotations(i, new_revision, false);
        if count > 0 {
            self.scaling_event(
                format!("Scaled up replica set {name} from 0 to {count}"),
                out,
            );
        }
        self.revision = Some(new_revision.to_string());
        self.created_new = true;
        if self.progress_deadline.is_some() {
            let msg = format!("Created new replica set \"{name}\"");
            let c = self.new_condition("Progressing", true, "NewReplicaSetCreated", msg);
            self.set_condition(c);
        }
    }

    /// `SetNewReplicaSetAnnotations`.
    fn set_new_rs_annotations(&mut self, i: usize, new_revision: i64, exists: bool) -> bool {
        let d_annotations: Map<String, Value> = self
            .d
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let (replicas, max) = (self.replicas, self.replicas + self.max_surge);
        let rs = &mut self.rss[i];
        let a = rs.annotations_mut();
        let mut changed = false;
        for (k, v) in &d_annotations {
            if SKIP_COPY.contains(&k.as_str()) || a.get(k) == Some(v) {
                continue;
            }
            a.insert(k.clone(), v.clone());
            changed = true;
        }
        let old = a
            .get(REVISION_ANNOTATION)
            .and_then(Value::as_str)
            .map(str::to_string);
        let old_n: i64 = old.as_deref().and_then(|o| o.parse().ok()).unwrap_or(0);
        if old
            .as_deref()
            .is_some_and(|o| !o.is_empty() && o.parse::<i64>().is_err())
        {
            return false;
        }
        if old_n < new_revision {
            a.insert(REVISION_ANNOTATION.into(), json!(new_revision.to_string()));
            changed = true;
            if let Some(old) = old.filter(|o| !o.is_empty()) {
                let history = a
                    .get(REVISION_HISTORY_ANNOTATION)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let joined = if history.is_empty() {
                    old
                } else {
                    let mut parts: Vec<&str> = history.split(',').collect();
                    let mut total = history.len() + old.len() + 1;
                    while total > MAX_REV_HISTORY_CHARS && !parts.is_empty() {
                        total -= parts[0].len() + 1;
                        parts.remove(0);
                    }
                    parts.push(&old);
                    parts.join(",")
                };
                a.insert(REVISION_HISTORY_ANNOTATION.into(), json!(joined));
            }
        }
        if !exists {
            a.insert(
                DESIRED_REPLICAS_ANNOTATION.into(),
                json!(replicas.to_string()),
            );
            a.insert(MAX_REPLICAS_ANNOTATION.into(), json!(max.to_string()));
            changed = true;
        }
        changed
    }

    /// `NewRSNewReplicas`.
    fn new_rs_new_replicas(&self, new: usize) -> i64 {
        let new_replicas = self.rss[new].replicas();
        if !self.rolling {
            return self.replicas;
        }
        let current: i64 = self.rss.iter().map(Rs::replicas).sum();
        let max_total = self.replicas + self.max_surge;
        if current >= max_total {
            return new_replicas;
        }
        new_replicas + (max_total - current).min(self.replicas - new_replicas)
    }

    fn scaling_event(&self, message: String, out: &mut Out) {
        out.event(util::event(
            self.d,
            "Deployment",
            "apps/v1",
            "Normal",
            "ScalingReplicaSet",
            message,
            COMPONENT,
            None,
        ));
    }

    /// `scaleReplicaSet`: sets the size and the replicas annotations; true if the size changed.
    fn scale_rs(&mut self, i: usize, new_scale: i64, op: &str, out: &mut Out) -> bool {
        let (replicas, max) = (self.replicas, self.replicas + self.max_surge);
        let rs = &mut self.rss[i];
        let old = rs.replicas();
        let size_changed = old != new_scale;
        let annotations_changed = util::annotation(&rs.obj, DESIRED_REPLICAS_ANNOTATION)
            != Some(replicas.to_string().as_str())
            || util::annotation(&rs.obj, MAX_REPLICAS_ANNOTATION) != Some(max.to_string().as_str());
        if !size_changed && !annotations_changed {
            return false;
        }
        rs.obj["spec"]["replicas"] = json!(new_scale);
        let a = rs.annotations_mut();
        a.insert(
            DESIRED_REPLICAS_ANNOTATION.into(),
            json!(replicas.to_string()),
        );
        a.insert(MAX_REPLICAS_ANNOTATION.into(), json!(max.to_string()));
        rs.dirty = true;
        if size_changed {
            let name = rs.name().to_string();
            self.scaling_event(
                format!("Scaled {op} replica set {name} from {old} to {new_scale}"),
                out,
            );
        }
        size_changed
    }

    fn scale_rs_and_record(&mut self, i: usize, new_scale: i64, out: &mut Out) -> bool {
        let old = self.rss[i].replicas();
        if old == new_scale {
            return false;
        }
        let op = if old < new_scale { "up" } else { "down" };
        self.scale_rs(i, new_scale, op, out)
    }

    /// `scale`: a change of `spec.replicas`, spread proportionally over active ReplicaSets.
    fn scale(&mut self, out: &mut Out) {
        let active: Vec<usize> = (0..self.rss.len())
            .filter(|i| self.rss[*i].replicas() > 0)
            .collect();
        // FindActiveOrLatest
        let target = match active.len() {
            0 => self.new_idx.or_else(|| {
                self.old_indices()
                    .into_iter()
                    .max_by(|a, b| self.rss[*a].created().cmp(self.rss[*b].created()))
            }),
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(i) = target {
            if self.rss[i].replicas() != self.replicas {
                self.scale_rs_and_record(i, self.replicas, out);
            }
            return;
        }
        if let Some(n) = self.new_idx
            && self.is_saturated(n)
        {
            for i in self.old_indices() {
                if self.rss[i].replicas() > 0 {
                    self.scale_rs_and_record(i, 0, out);
                }
            }
            return;
        }
        if !self.rolling {
            return;
        }
        let mut order = active;
        let total: i64 = order.iter().map(|i| self.rss[*i].replicas()).sum();
        let allowed = if self.replicas > 0 {
            self.replicas + self.max_surge
        } else {
            0
        };
        let to_add = allowed - total;
        let op = match to_add.cmp(&0) {
            Ordering::Greater => {
                order.sort_by(|a, b| {
                    let (a, b) = (&self.rss[*a], &self.rss[*b]);
                    b.replicas()
                        .cmp(&a.replicas())
                        .then_with(|| b.created().cmp(a.created()))
                });
                "up"
            }
            Ordering::Less => {
                order.sort_by(|a, b| {
                    let (a, b) = (&self.rss[*a], &self.rss[*b]);
                    b.replicas()
                        .cmp(&a.replicas())
                        .then_with(|| a.created().cmp(b.created()))
                });
                "down"
            }
            Ordering::Equal => "",
        };
        let mut added = 0;
        let mut sizes: Vec<i64> = Vec::with_capacity(order.len());
        for i in &order {
            let rs = &self.rss[*i];
            if to_add != 0 {
                let p = self.proportion(rs, to_add, added);
                sizes.push(rs.replicas() + p);
                added += p;
            } else {
                sizes.push(rs.replicas());
            }
        }
        for (k, i) in order.iter().enumerate() {
            if k == 0 && to_add != 0 {
                sizes[0] = (sizes[0] + to_add - added).max(0);
            }
            self.scale_rs(*i, sizes[k], op, out);
        }
    }

    /// `GetProportion`.
    fn proportion(&self, rs: &Rs, to_add: i64, added: i64) -> i64 {
        if rs.replicas() == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = if self.replicas == 0 {
            -rs.replicas()
        } else {
            let max_now = self.replicas + self.max_surge;
            let before = util::annotation(&rs.obj, MAX_REPLICAS_ANNOTATION)
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|v| *v != 0)
                .unwrap_or_else(|| util::i64_at(self.d, "/status/replicas").unwrap_or(0));
            if before == 0 {
                0
            } else {
                let size = (rs.replicas() * max_now) as f64 / before as f64;
                size.round() as i64 - rs.replicas()
            }
        };
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    fn is_saturated(&self, i: usize) -> bool {
        let rs = &self.rss[i];
        rs.replicas() == self.replicas
            && util::annotation(&rs.obj, DESIRED_REPLICAS_ANNOTATION)
                == Some(self.replicas.to_string().as_str())
            && rs.status("availableReplicas") == self.replicas
    }

    fn rollout_rolling(&mut self, out: &mut Out) {
        self.sync_new_rs(true, out);
        let Some(new) = self.new_idx else {
            return;
        };
        if self.reconcile_new(new, out) {
            return;
        }
        if self.reconcile_old(new, out) {
            return;
        }
        if self.complete_by_current_status() {
            self.cleanup(out);
        }
    }

    /// `reconcileNewReplicaSet`.
    fn reconcile_new(&mut self, new: usize, out: &mut Out) -> bool {
        let have = self.rss[new].replicas();
        if have == self.replicas {
            return false;
        }
        if have > self.replicas {
            return self.scale_rs_and_record(new, self.replicas, out);
        }
        let count = self.new_rs_new_replicas(new);
        self.scale_rs_and_record(new, count, out)
    }

    /// `reconcileOldReplicaSets`.
    fn reconcile_old(&mut self, new: usize, out: &mut Out) -> bool {
        let mut old = self.old_indices();
        let old_pods: i64 = old.iter().map(|i| self.rss[*i].replicas()).sum();
        if old_pods == 0 {
            return false;
        }
        let all_pods: i64 = self.rss.iter().map(Rs::replicas).sum();
        let min_available = self.replicas - self.max_unavailable;
        let new_unavailable = self.rss[new].replicas() - self.rss[new].status("availableReplicas");
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        old.sort_by(|a, b| {
            self.rss[*a]
                .created()
                .cmp(self.rss[*b].created())
                .then_with(|| self.rss[*a].name().cmp(self.rss[*b].name()))
        });
        // cleanupUnhealthyReplicas
        let mut cleaned = 0;
        for &i in &old {
            if cleaned >= max_scaled_down {
                break;
            }
            let (replicas, available) = (
                self.rss[i].replicas(),
                self.rss[i].status("availableReplicas"),
            );
            if replicas == 0 || replicas == available {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(replicas - available);
            self.scale_rs_and_record(i, replicas - down, out);
            cleaned += down;
        }
        // scaleDownOldReplicaSetsForRollingUpdate
        let available: i64 = self.rss.iter().map(|r| r.status("availableReplicas")).sum();
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for &i in &old {
                if scaled >= total {
                    break;
                }
                let replicas = self.rss[i].replicas();
                if replicas == 0 {
                    continue;
                }
                let down = replicas.min(total - scaled);
                self.scale_rs_and_record(i, replicas - down, out);
                scaled += down;
            }
        }
        cleaned + scaled > 0
    }

    fn rollout_recreate(&mut self, out: &mut Out) {
        self.sync_new_rs(false, out);
        let mut scaled = false;
        for i in self.old_indices() {
            if self.rss[i].replicas() > 0 {
                scaled |= self.scale_rs_and_record(i, 0, out);
            }
        }
        if scaled || self.old_pods_running() {
            return;
        }
        if self.new_idx.is_none() {
            self.sync_new_rs(true, out);
        }
        if let Some(new) = self.new_idx {
            self.scale_rs_and_record(new, self.replicas, out);
        }
        if self.complete_by_current_status() {
            self.cleanup(out);
        }
    }

    /// `oldPodsRunning`: any old ReplicaSet still reports pods, or owns a pod not finished.
    fn old_pods_running(&self) -> bool {
        self.old_indices().into_iter().any(|i| {
            let rs = &self.rss[i];
            rs.status("replicas") > 0
                || self
                    .pass
                    .owned_pods(util::uid(&rs.obj))
                    .iter()
                    .any(|p| !util::pod_is_terminal(p))
        })
    }

    fn complete_by_current_status(&self) -> bool {
        let s = |f: &str| util::i64_at(self.d, &format!("/status/{f}")).unwrap_or(0);
        s("updatedReplicas") == self.replicas
            && s("replicas") == self.replicas
            && s("availableReplicas") == self.replicas
            && s("observedGeneration") >= util::generation(self.d)
    }

    /// `cleanupDeployment`: old ReplicaSets beyond `revisionHistoryLimit` go, oldest first.
    fn cleanup(&mut self, out: &mut Out) {
        let limit = util::i64_at(self.d, "/spec/revisionHistoryLimit")
            .unwrap_or(10)
            .max(0) as usize;
        let mut old: Vec<usize> = self
            .old_indices()
            .into_iter()
            .filter(|i| self.rss[*i].orig.is_some_and(|o| !util::is_deleting(o)))
            .collect();
        if old.len() <= limit {
            return;
        }
        let diff = old.len() - limit;
        old.sort_by(|a, b| {
            let (a, b) = (&self.rss[*a], &self.rss[*b]);
            a.revision()
                .cmp(&b.revision())
                .then_with(|| a.created().cmp(b.created()))
                .then_with(|| a.name().cmp(b.name()))
        });
        for &i in old.iter().take(diff) {
            let rs = &self.rss[i];
            let observed = util::i64_at(&rs.obj, "/status/observedGeneration").unwrap_or(0);
            if rs.dirty
                || rs.status("replicas") != 0
                || rs.replicas() != 0
                || util::generation(&rs.obj) > observed
            {
                continue;
            }
            if let Some(o) = rs.orig {
                out.delete(Resource::ReplicaSets, o);
            }
        }
    }

    fn condition(&self, type_: &str) -> Option<&Value> {
        self.conditions
            .iter()
            .find(|c| str_at(c, "/type") == Some(type_))
    }

    fn new_condition(&self, type_: &str, ok: bool, reason: &str, message: String) -> Value {
        let now = util::timestamp(self.pass.now);
        json!({
            "type": type_,
            "status": if ok { "True" } else { "False" },
            "lastUpdateTime": now,
            "lastTransitionTime": now,
            "reason": reason,
            "message": message,
        })
    }

    /// `SetDeploymentCondition`: same status and reason changes nothing; the condition moves
    /// to the end of the list.
    fn set_condition(&mut self, mut cond: Value) {
        let type_ = str_at(&cond, "/type").unwrap_or("").to_string();
        if let Some(cur) = self.condition(&type_) {
            if cur.get("status") == cond.get("status") && cur.get("reason") == cond.get("reason") {
                return;
            }
            if cur.get("status") == cond.get("status") {
                cond["lastTransitionTime"] = cur["lastTransitionTime"].clone();
            }
        }
        self.remove_condition(&type_);
        self.conditions.push(cond);
    }

    fn remove_condition(&mut self, type_: &str) {
        self.conditions
            .retain(|c| str_at(c, "/type") != Some(type_));
    }

    /// `calculateStatus` and, for rollouts, `syncRolloutStatus`; then the writes.
    fn finish(mut self, rollout: bool, out: &mut Out) {
        let d = self.d;
        let now = self.pass.now;
        let sum = |f: &str| -> i64 { self.rss.iter().map(|r| r.status(f)).sum() };
        let available = sum("availableReplicas");
        let total_spec: i64 = self.rss.iter().map(Rs::replicas).sum();
        let status_replicas = sum("replicas");
        let ready = sum("readyReplicas");
        let updated = self.new_idx.map_or(0, |i| self.rss[i].status("replicas"));
        let unavailable = (total_spec - available).max(0);
        let generation = util::generation(d);
        if available >= self.replicas - self.max_unavailable {
            let c = self.new_condition(
                "Available",
                true,
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            );
            self.set_condition(c);
        } else {
            let c = self.new_condition(
                "Available",
                false,
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            );
            self.set_condition(c);
        }
        let old_status = |f: &str| util::i64_at(d, &format!("/status/{f}")).unwrap_or(0);
        if rollout {
            match self.progress_deadline {
                None => self.remove_condition("Progressing"),
                Some(deadline) => {
                    let current = self.condition("Progressing").cloned();
                    let complete_before = status_replicas == updated
                        && current.as_ref().and_then(|c| str_at(c, "/reason"))
                            == Some("NewReplicaSetAvailable");
                    let new_name = self.new_idx.map(|i| self.rss[i].name().to_string());
                    let rs_or = |what: &str| match &new_name {
                        Some(n) => format!("ReplicaSet \"{n}\" {what}"),
                        None => format!("Deployment \"{}\" {what}", util::name(d)),
                    };
                    if !complete_before {
                        let complete = updated == self.replicas
                            && status_replicas == self.replicas
                            && available == self.replicas;
                        let progressing = updated > old_status("updatedReplicas")
                            || (status_replicas - updated)
                                < (old_status("replicas") - old_status("updatedReplicas"))
                            || ready > old_status("readyReplicas")
                            || available > old_status("availableReplicas");
                        if complete {
                            let c = self.new_condition(
                                "Progressing",
                                true,
                                "NewReplicaSetAvailable",
                                rs_or("has successfully progressed."),
                            );
                            self.set_condition(c);
                        } else if progressing {
                            let mut c = self.new_condition(
                                "Progressing",
                                true,
                                "ReplicaSetUpdated",
                                rs_or("is progressing."),
                            );
                            if let Some(cur) = &current
                                && str_at(cur, "/status") == Some("True")
                            {
                                c["lastTransitionTime"] = cur["lastTransitionTime"].clone();
                            }
                            self.remove_condition("Progressing");
                            self.set_condition(c);
                        } else if let Some(cond) = self.condition("Progressing").cloned() {
                            let reason = str_at(&cond, "/reason").unwrap_or("");
                            let from = util::time_at(&cond, "/lastUpdateTime");
                            let timed_out = reason == "ProgressDeadlineExceeded"
                                || (reason != "NewReplicaSetAvailable"
                                    && from.is_some_and(|f| {
                                        f + time::Duration::seconds(deadline) < now
                                    }));
                            if timed_out {
                                let c = self.new_condition(
                                    "Progressing",
                                    false,
                                    "ProgressDeadlineExceeded",
                                    rs_or("has timed out progressing."),
                                );
                                self.set_condition(c);
                            } else if reason != "NewReplicaSetAvailable"
                                && let Some(f) = from
                            {
                                // requeueStuckDeployment
                                out.requeue_at(now, f + time::Duration::seconds(deadline + 1));
                            }
                        }
                    }
                }
            }
        }
        let mut status = Map::new();
        for (k, v) in [
            ("observedGeneration", generation),
            ("replicas", status_replicas),
            ("updatedReplicas", updated),
            ("readyReplicas", ready),
            ("availableReplicas", available),
            ("unavailableReplicas", unavailable),
        ] {
            if v != 0 {
                status.insert(k.into(), json!(v));
            }
        }
        if !self.conditions.is_empty() {
            status.insert("conditions".into(), Value::Array(self.conditions.clone()));
        }
        let mut collision = util::i64_at(d, "/status/collisionCount");
        if self.collision_bump {
            collision = Some(collision.unwrap_or(0) + 1);
        }
        if let Some(c) = collision {
            status.insert("collisionCount".into(), json!(c));
        }
        let status = Value::Object(status);

        // ReplicaSet writes.
        for rs in &self.rss {
            if !rs.dirty {
                continue;
            }
            match rs.orig {
                Some(_) => {
                    out.write(Action::Update {
                        resource: Resource::ReplicaSets,
                        object: rs.obj.clone(),
                    });
                }
                None => {
                    out.write(Action::Create {
                        resource: Resource::ReplicaSets,
                        object: rs.obj.clone(),
                    });
                }
            }
        }

        // Deployment writes: one per pass. The status of a pass that created the new
        // ReplicaSet goes first (it carries NewReplicaSetCreated); otherwise the revision
        // annotation does, and the status follows next pass.
        let revision_changed = self
            .revision
            .as_deref()
            .is_some_and(|r| util::annotation(d, REVISION_ANNOTATION) != Some(r));
        let status_changed = d.get("status") != Some(&status);
        if revision_changed && !self.created_new {
            let mut copy = d.clone();
            if let Some(r) = &self.revision {
                match copy["metadata"]["annotations"].as_object_mut() {
                    Some(a) => {
                        a.insert(REVISION_ANNOTATION.into(), json!(r));
                    }
                    None => copy["metadata"]["annotations"] = json!({ REVISION_ANNOTATION: r }),
                }
            }
            out.write(Action::Update {
                resource: Resource::Deployments,
                object: copy,
            });
        } else if status_changed {
            let mut copy = d.clone();
            copy["status"] = status;
            out.write(Action::UpdateStatus {
                resource: Resource::Deployments,
                object: copy,
            });
        }
    }
}

/// `ResolveFenceposts`: maxSurge rounds up, maxUnavailable down; both zero means one
/// unavailable.
fn fenceposts(d: &Value, replicas: i64) -> (i64, i64) {
    let ru = d.pointer("/spec/strategy/rollingUpdate");
    let surge = util::scaled_value(ru.and_then(|r| r.get("maxSurge")), "25%", replicas, true);
    let unavailable = util::scaled_value(
        ru.and_then(|r| r.get("maxUnavailable")),
        "25%",
        replicas,
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge.max(0), unavailable.max(0))
    }
}

/// `EqualIgnoreHash`: templates equal once `pod-template-hash` is ignored.
fn equal_ignore_hash(a: Option<&Value>, b: &Value) -> bool {
    let Some(a) = a else { return false };
    let strip = |t: &Value| {
        let mut t = util::go_roundtrip(t, true);
        if let Some(l) = t
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            l.remove(POD_TEMPLATE_HASH_LABEL);
            if l.is_empty()
                && let Some(m) = t.pointer_mut("/metadata").and_then(Value::as_object_mut)
            {
                m.remove("labels");
            }
        }
        t
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testkit::*;
    use super::*;
    use crate::sim::cluster;
    use crate::sim::model::{Behaviour, IpamStrategy};

    fn web(strategy: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": strategy,
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "img:v1"}]}}
            }
        })
    }

    fn rolling(surge: Value, unavailable: Value) -> Value {
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
    }

    fn set_image(store: &mut FakeStore, ns: &str, name: &str, container: usize, image: &str) {
        store.patch(Resource::Deployments, ns, name, |d| {
            d["spec"]["template"]["spec"]["containers"][container]["image"] = json!(image)
        });
    }

    fn dep(store: &FakeStore, ns: &str, name: &str) -> Value {
        store.get(Resource::Deployments, ns, name).unwrap()
    }

    /// (revision, image, replicas) of every ReplicaSet, by revision.
    fn history(store: &FakeStore) -> Vec<(i64, String, i64)> {
        let mut v: Vec<(i64, String, i64)> = store
            .list(Resource::ReplicaSets)
            .iter()
            .map(|rs| {
                (
                    util::annotation(rs, REVISION_ANNOTATION)
                        .unwrap()
                        .parse()
                        .unwrap(),
                    rs["spec"]["template"]["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    rs["spec"]["replicas"].as_i64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    }

    fn live_pods(store: &FakeStore, app: &str) -> Vec<Value> {
        store
            .pods_with_label("app", app)
            .into_iter()
            .filter(|p| !util::is_deleting(p))
            .collect()
    }

    fn condition_reason(d: &Value, t: &str) -> String {
        util::condition(d, t).unwrap()["reason"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn creates_a_replicaset_with_revision_and_reports_status() {
        let mut store = FakeStore::with_nodes(0, 3);
        store.put(
            Resource::Deployments,
            web(rolling(json!("25%"), json!("25%"))),
        );
        store.settle(&Behaviour::default(), 100);
        let d = dep(&store, "default", "web");
        assert_eq!(util::annotation(&d, REVISION_ANNOTATION), Some("1"));
        assert_eq!(
            d["status"],
            json!({
                "observedGeneration": 1, "replicas": 3, "updatedReplicas": 3,
                "readyReplicas": 3, "availableReplicas": 3,
                "conditions": d["status"]["conditions"].clone()
            })
        );
        assert_eq!(
            condition_reason(&d, "Available"),
            "MinimumReplicasAvailable"
        );
        assert_eq!(
            condition_reason(&d, "Progressing"),
            "NewReplicaSetAvailable"
        );
        let rs = &store.list(Resource::ReplicaSets)[0];
        let hash = rs["metadata"]["labels"]["pod-template-hash"]
            .as_str()
            .unwrap();
        assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
        assert_eq!(
            rs["spec"]["selector"]["matchLabels"]["pod-template-hash"],
            hash
        );
        assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
        assert_eq!(util::annotation(rs, DESIRED_REPLICAS_ANNOTATION), Some("3"));
        assert_eq!(util::annotation(rs, MAX_REPLICAS_ANNOTATION), Some("4"));
        assert!(store.events.iter().any(|e| e.reason == "ScalingReplicaSet"
            && e.message == format!("Scaled up replica set web-{hash} from 0 to 3")));
        assert_eq!(live_pods(&store, "web").len(), 3);
    }

    #[test]
    fn rolling_update_respects_surge_and_unavailable() {
        let mut store = FakeStore::with_nodes(0, 3);
        store.put(Resource::Deployments, web(rolling(json!(1), json!(0))));
        store.settle(&Behaviour::default(), 100);
        set_image(&mut store, "default", "web", 0, "img:v2");
        store.patch(Resource::Deployments, "default", "web", |d| {
            d["metadata"]["annotations"]["kubernetes.io/change-cause"] = json!("set image v2")
        });
        for _ in 0..300 {
            let r = store.pass(&Behaviour::default());
            let pods = live_pods(&store, "web");
            assert!(pods.len() <= 4, "at most replicas + maxSurge pods");
            let ready = pods.iter().filter(|p| util::pod_is_ready(p)).count();
            assert!(ready >= 3, "maxUnavailable 0 keeps 3 ready");
            if r.actions.is_empty() {
                break;
            }
        }
        let pods = live_pods(&store, "web");
        assert_eq!(pods.len(), 3);
        assert!(
            pods.iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "img:v2")
        );
        assert_eq!(
            history(&store),
            vec![(1, "img:v1".into(), 0), (2, "img:v2".into(), 3)]
        );
        let new_rs = store
            .list(Resource::ReplicaSets)
            .into_iter()
            .find(|rs| util::annotation(rs, REVISION_ANNOTATION) == Some("2"))
            .unwrap();
        assert_eq!(
            util::annotation(&new_rs, "kubernetes.io/change-cause"),
            Some("set image v2")
        );
        let d = dep(&store, "default", "web");
        assert_eq!(util::annotation(&d, REVISION_ANNOTATION), Some("2"));
        assert_eq!(d["status"]["updatedReplicas"], 3);
        assert_eq!(d["status"]["observedGeneration"], 2);
        let messages: Vec<&str> = store
            .events
            .iter()
            .filter(|e| e.reason == "ScalingReplicaSet")
            .map(|e| e.message.as_str())
            .collect();
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("Scaled up replica set web-") && m.ends_with("from 0 to 1"))
        );
        assert!(
            messages.iter().any(
                |m| m.starts_with("Scaled down replica set web-") && m.ends_with("from 3 to 2")
            )
        );
    }

    #[test]
    fn a_settled_deployment_is_left_alone_after_a_metadata_change() {
        let mut store = FakeStore::with_nodes(0, 3);
        store.put(Resource::Deployments, web(rolling(json!(1), json!(0))));
        store.settle(&Behaviour::default(), 100);
        store.patch(Resource::Deployments, "default", "web", |d| {
            d["metadata"]["annotations"]["a"] = json!("1")
        });
        let rv = dep(&store, "default", "web")["metadata"]["resourceVersion"].clone();
        store.settle(&Behaviour::default(), 100);
        let d = dep(&store, "default", "web");
        assert_eq!(d["metadata"]["resourceVersion"], rv, "{d:#}");
        // The annotation reaches the current ReplicaSet, as upstream copies it.
        let rs = &store.list(Resource::ReplicaSets)[0];
        assert_eq!(util::annotation(rs, "a"), Some("1"));
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let d = web(rolling(json!("25%"), json!("25%")));
        assert_eq!(fenceposts(&d, 3), (1, 0));
        assert_eq!(fenceposts(&d, 10), (3, 2));
        let d = web(rolling(json!(0), json!(0)));
        assert_eq!(fenceposts(&d, 3), (0, 1));
    }

    #[test]
    fn recreate_removes_old_pods_before_creating_new_ones() {
        let mut store = FakeStore::with_nodes(0, 3);
        store.put(Resource::Deployments, web(json!({"type": "Recreate"})));
        store.settle(&Behaviour::default(), 100);
        set_image(&mut store, "default", "web", 0, "img:v2");
        for _ in 0..300 {
            let r = store.pass(&Behaviour::default());
            let pods = store.pods_with_label("app", "web");
            let images: HashSet<&str> = pods
                .iter()
                .map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap())
                .collect();
            assert!(
                images.len() <= 1,
                "old and new pods never coexist: {images:?}"
            );
            if r.actions.is_empty() {
                break;
            }
        }
        assert_eq!(live_pods(&store, "web").len(), 3);
        assert_eq!(
            history(&store),
            vec![(1, "img:v1".into(), 0), (2, "img:v2".into(), 3)]
        );
        assert_eq!(
            dep(&store, "default", "web")["status"]["availableReplicas"],
            3
        );
    }

    #[test]
    fn scale_to_zero_and_back() {
        let mut store = FakeStore::with_nodes(0, 3);
        store.put(Resource::Deployments, web(rolling(json!(1), json!(0))));
        store.settle(&Behaviour::default(), 100);
        store.patch(Resource::Deployments, "default", "web", |d| {
            d["spec"]["replicas"] = json!(0)
        });
        store.settle(&Behaviour::default(), 100);
        assert!(store.pods_with_label("app", "web").is_empty());
        let d = dep(&store, "default", "web");
        assert!(d["status"].get("replicas").is_none());
        store.patch(Resource::Deployments, "default", "web", |d| {
            d["spec"]["replicas"] = json!(3)
        });
        store.settle(&Behaviour::default(), 100);
        assert_eq!(live_pods(&store, "web").len(), 3);
        let d = dep(&store, "default", "web");
        assert_eq!(d["status"]["availableReplicas"], 3);
        assert_eq!(history(&store), vec![(1, "img:v1".into(), 3)]);
        let messages: Vec<&str> = store
            .events
            .iter()
            .filter(|e| e.reason == "ScalingReplicaSet")
            .map(|e| e.message.as_str())
            .collect();
        assert_eq!(messages.len(), 3);
        assert!(messages[1].ends_with("from 3 to 0"));
        assert!(messages[2].ends_with("from 0 to 3"));
    }

    #[test]
    fn undo_reuses_the_old_replicaset_and_renumbers_it() {
        let mut store = FakeStore::with_nodes(0, 3);
        store.put(Resource::Deployments, web(rolling(json!(1), json!(0))));
        store.settle(&Behaviour::default(), 100);
        set_image(&mut store, "default", "web", 0, "img:v2");
        store.settle(&Behaviour::default(), 100);
        // `rollout undo --to-revision=1`: the ReplicaSet's template without the hash label.
        let rs1 = store
            .list(Resource::ReplicaSets)
            .into_iter()
            .find(|rs| util::annotation(rs, REVISION_ANNOTATION) == Some("1"))
            .unwrap();
        let mut t = rs1["spec"]["template"].clone();
        t["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove(POD_TEMPLATE_HASH_LABEL);
        store.patch(Resource::Deployments, "default", "web", |d| {
            d["spec"]["template"] = t
        });
        store.settle(&Behaviour::default(), 100);
        assert_eq!(
            history(&store),
            vec![(2, "img:v2".into(), 0), (3, "img:v1".into(), 3)]
        );
        let rs = store
            .get(Resource::ReplicaSets, "default", util::name(&rs1))
            .unwrap();
        assert_eq!(
            util::annotation(&rs, REVISION_HISTORY_ANNOTATION),
            Some("1")
        );
        assert_eq!(
            util::annotation(&dep(&store, "default", "web"), REVISION_ANNOTATION),
            Some("3")
        );
        assert_eq!(store.list(Resource::ReplicaSets).len(), 2);
    }

    #[test]
    fn revision_history_limit_deletes_the_oldest() {
        let mut store = FakeStore::with_nodes(0, 3);
        let mut d = web(rolling(json!(1), json!(0)));
        d["spec"]["revisionHistoryLimit"] = json!(1);
        store.put(Resource::Deployments, d);
        store.settle(&Behaviour::default(), 100);
        for v in 2..=4 {
            set_image(&mut store, "default", "web", 0, &format!("img:v{v}"));
            store.settle(&Behaviour::default(), 200);
        }
        assert_eq!(
            history(&store),
            vec![(3, "img:v3".into(), 0), (4, "img:v4".into(), 3)]
        );
    }

    #[test]
    fn progress_deadline_exceeded_when_stuck() {
        let mut store = FakeStore::with_nodes(0, 3);
        store.put(Resource::Deployments, web(rolling(json!(1), json!(0))));
        store.settle(&Behaviour::default(), 100);
        let broken = Behaviour {
            broken_image: Some(":broken$".into()),
            ..Default::default()
        };
        set_image(&mut store, "default", "web", 0, "img:broken");
        store.settle(&broken, 100);
        let d = dep(&store, "default", "web");
        assert_eq!(condition_reason(&d, "Progressing"), "ReplicaSetUpdated");
        store.advance(Duration::from_secs(2));
        store.settle(&broken, 100);
        let r = crate::sim::controllers::reconcile(&store.snapshot(), &broken);
        let wait = r.requeue_after.unwrap();
        assert!(
            wait > Duration::from_secs(590) && wait <= Duration::from_secs(601),
            "{wait:?}"
        );
        store.advance(wait);
        store.settle(&broken, 100);
        let d = dep(&store, "default", "web");
        let c = util::condition(&d, "Progressing").unwrap();
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "ProgressDeadlineExceeded");
        assert!(
            c["message"]
                .as_str()
                .unwrap()
                .ends_with("has timed out progressing.")
        );
        // The old pods still serve.
        assert_eq!(
            condition_reason(&d, "Available"),
            "MinimumReplicasAvailable"
        );
        let pod = live_pods(&store, "web")
            .into_iter()
            .find(|p| p["spec"]["containers"][0]["image"] == "img:broken")
            .unwrap();
        assert_eq!(
            pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ImagePullBackOff"
        );
    }

    fn sop_cluster(strategy: IpamStrategy) -> FakeStore {
        let mut store = FakeStore::with_nodes(3, 2);
        let image = format!("{}:v1.9.3", cluster::IMAGE_REPOSITORY);
        store.put(
            Resource::Deployments,
            cluster::ipam_deployment(&image, strategy),
        );
        store.settle(&Behaviour::default(), 100);
        store
    }

    #[test]
    fn sop_host_port_conflict_then_scale_zero_and_back() {
        let mut store = sop_cluster(IpamStrategy::Rolling);
        let pods = live_pods(&store, "cce-eni-ipam");
        let nodes: HashSet<&str> = pods
            .iter()
            .map(|p| p["spec"]["nodeName"].as_str().unwrap())
            .collect();
        assert_eq!(nodes, HashSet::from(["master-1", "master-2", "master-3"]));
        let v4 = format!("{}:v1.9.4", cluster::IMAGE_REPOSITORY);
        set_image(&mut store, "kube-system", "cce-eni-ipam", 0, &v4);
        store.settle(&Behaviour::default(), 100);
        let pending: Vec<Value> = live_pods(&store, "cce-eni-ipam")
            .into_iter()
            .filter(|p| p.pointer("/spec/nodeName").is_none())
            .collect();
        assert_eq!(pending.len(), 1, "the surge pod cannot fit anywhere");
        let msg = "0/5 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, \
            3 node(s) didn't have free ports for the requested pod ports. preemption: 0/5 nodes are \
            available: 2 Preemption is not helpful for scheduling, 3 No preemption victims found for incoming pod.";
        assert_eq!(
            util::condition(&pending[0], "PodScheduled").unwrap()["message"],
            msg
        );
        assert!(
            store
                .events
                .iter()
                .any(|e| e.reason == "FailedScheduling" && e.message == msg)
        );
        let d = dep(&store, "kube-system", "cce-eni-ipam");
        assert_eq!(d["status"]["updatedReplicas"], 1);
        assert_eq!(d["status"]["availableReplicas"], 3);
        // The SOP's remedy.
        store.patch(Resource::Deployments, "kube-system", "cce-eni-ipam", |d| {
            d["spec"]["replicas"] = json!(0)
        });
        store.settle(&Behaviour::default(), 100);
        assert!(store.pods_with_label("app", "cce-eni-ipam").is_empty());
        store.patch(Resource::Deployments, "kube-system", "cce-eni-ipam", |d| {
            d["spec"]["replicas"] = json!(3)
        });
        store.settle(&Behaviour::default(), 100);
        let pods = live_pods(&store, "cce-eni-ipam");
        assert_eq!(pods.len(), 3);
        assert!(
            pods.iter()
                .all(|p| p["spec"]["containers"][0]["image"] == v4.as_str())
        );
        assert!(pods.iter().all(util::pod_is_ready));
        let d = dep(&store, "kube-system", "cce-eni-ipam");
        assert_eq!(d["status"]["updatedReplicas"], 3);
        assert_eq!(d["status"]["availableReplicas"], 3);
        assert_eq!(
            condition_reason(&d, "Progressing"),
            "NewReplicaSetAvailable"
        );
    }

    #[test]
    fn sop_recreate_has_no_conflict() {
        let mut store = sop_cluster(IpamStrategy::Recreate);
        let v4 = format!("{}:v1.9.4", cluster::IMAGE_REPOSITORY);
        set_image(&mut store, "kube-system", "cce-eni-ipam", 0, &v4);
        store.settle(&Behaviour::default(), 100);
        let pods = live_pods(&store, "cce-eni-ipam");
        assert_eq!(pods.len(), 3);
        assert!(
            pods.iter().all(
                |p| util::pod_is_ready(p) && p["spec"]["containers"][0]["image"] == v4.as_str()
            )
        );
    }

    #[test]
    fn default_cluster_starts_with_two_revisions_of_each_workload() {
        let mut store = FakeStore::new();
        for (r, obj) in cluster::default_objects(&Default::default()) {
            if matches!(
                r,
                Resource::Nodes
                    | Resource::DaemonSets
                    | Resource::Deployments
                    | Resource::ReplicaSets
                    | Resource::ControllerRevisions
            ) {
                store.put(r, obj);
            }
        }
        store.settle(&Behaviour::default(), 200);
        let v2 = format!("{}:v1.9.2", cluster::IMAGE_REPOSITORY);
        let v3 = format!("{}:v1.9.3", cluster::IMAGE_REPOSITORY);
        assert_eq!(
            history(&store),
            vec![(1, v2.clone(), 0), (2, v3.clone(), 3)]
        );
        let mut crs: Vec<(i64, String)> = store
            .list(Resource::ControllerRevisions)
            .iter()
            .map(|c| {
                (
                    c["revision"].as_i64().unwrap(),
                    c["data"]["spec"]["template"]["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect();
        crs.sort();
        assert_eq!(crs, vec![(1, v2), (2, v3)]);
        assert!(
            store
                .list(Resource::ControllerRevisions)
                .iter()
                .chain(store.list(Resource::ReplicaSets).iter())
                .all(|o| util::controller_uid(o).is_some())
        );
        assert_eq!(store.pods_with_label("name", "cce-cni-node-agent").len(), 5);
        assert_eq!(live_pods(&store, "cce-eni-ipam").len(), 3);
        let d = dep(&store, "kube-system", "cce-eni-ipam");
        assert_eq!(util::annotation(&d, REVISION_ANNOTATION), Some("2"));
    }
}
