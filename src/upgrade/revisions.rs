//! The revisions of both workloads: ControllerRevisions of the DaemonSet, ReplicaSets of the
//! Deployment — which one is current, which one a rollback goes to, and its pod template.
//! Pure.

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::Value;

pub const DEPLOYMENT_REVISION: &str = "deployment.kubernetes.io/revision";
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// `matchLabels` as a label selector string (`k=v,k2=v2`).
pub fn selector_string(selector: Option<&LabelSelector>) -> String {
    selector
        .and_then(|s| s.match_labels.as_ref())
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn owned_by(meta: &ObjectMeta, uid: Option<&str>) -> bool {
    let Some(uid) = uid else { return true };
    match &meta.owner_references {
        None => true,
        Some(refs) if refs.is_empty() => true,
        Some(refs) => refs
            .iter()
            .any(|r| r.uid == uid && r.controller == Some(true)),
    }
}

/// One revision of a workload, whatever its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    pub name: String,
    pub number: i64,
    pub hash: String,
    pub change_cause: Option<String>,
    pub created: Option<String>,
    /// The pod template to restore (without `$patch` or `pod-template-hash`).
    pub template: Value,
}

impl Revision {
    pub fn pod_template(&self) -> Option<PodTemplateSpec> {
        serde_json::from_value(self.template.clone()).ok()
    }
}

fn created(meta: &ObjectMeta) -> Option<String> {
    meta.creation_timestamp.as_ref().map(|t| t.0.to_string())
}

/// The DaemonSet's ControllerRevisions, oldest first.
pub fn ds_revisions(ds: &DaemonSet, revisions: &[ControllerRevision]) -> Vec<Revision> {
    let uid = ds.metadata.uid.as_deref();
    let mut out: Vec<Revision> = revisions
        .iter()
        .filter(|cr| owned_by(&cr.metadata, uid))
        .map(|cr| {
            let mut template = cr
                .data
                .0
                .get("spec")
                .and_then(|s| s.get("template"))
                .cloned()
                .unwrap_or(Value::Null);
            if let Some(map) = template.as_object_mut() {
                map.remove("$patch");
            }
            let labels = cr.metadata.labels.clone().unwrap_or_default();
            let name = cr.metadata.name.clone().unwrap_or_default();
            Revision {
                hash: labels
                    .get(CONTROLLER_REVISION_HASH)
                    .cloned()
                    .unwrap_or_else(|| name.rsplit('-').next().unwrap_or("").to_owned()),
                name,
                number: cr.revision.unwrap_or(0),
                change_cause: cr
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(super::plan::CHANGE_CAUSE).cloned()),
                created: created(&cr.metadata),
                template,
            }
        })
        .collect();
    out.sort_by_key(|r| r.number);
    out
}

/// The Deployment's ReplicaSets as revisions, oldest first.
pub fn deploy_revisions(d: &Deployment, sets: &[ReplicaSet]) -> Vec<Revision> {
    let uid = d.metadata.uid.as_deref();
    let mut out: Vec<Revision> = sets
        .iter()
        .filter(|rs| owned_by(&rs.metadata, uid))
        .map(|rs| {
            let annotations = rs.metadata.annotations.clone().unwrap_or_default();
            let mut template = rs
                .spec
                .template
                .as_ref()
                .and_then(|t| serde_json::to_value(t).ok())
                .unwrap_or(Value::Null);
            // As `kubectl rollout undo`: the ReplicaSet's template without its hash label.
            if let Some(labels) = template
                .pointer_mut("/metadata/labels")
                .and_then(Value::as_object_mut)
            {
                labels.remove(POD_TEMPLATE_HASH);
            }
            Revision {
                name: rs.metadata.name.clone().unwrap_or_default(),
                number: annotations
                    .get(DEPLOYMENT_REVISION)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                hash: rs
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(POD_TEMPLATE_HASH).cloned())
                    .unwrap_or_default(),
                change_cause: annotations.get(super::plan::CHANGE_CAUSE).cloned(),
                created: created(&rs.metadata),
                template,
            }
        })
        .collect();
    out.sort_by_key(|r| r.number);
    out
}

/// The current revision: the Deployment's revision annotation, else the highest number.
pub fn current(revisions: &[Revision], annotated: Option<i64>) -> Option<&Revision> {
    annotated
        .and_then(|n| revisions.iter().find(|r| r.number == n))
        .or_else(|| revisions.iter().max_by_key(|r| r.number))
}

pub fn deployment_revision(d: &Deployment) -> Option<i64> {
    d.metadata
        .annotations
        .as_ref()?
        .get(DEPLOYMENT_REVISION)?
        .parse()
        .ok()
}

/// The revision a rollback goes to: `--to-revision N`, or the newest below the current one
/// (as `kubectl rollout undo`).
pub fn rollback_target<'a>(
    revisions: &'a [Revision],
    current: Option<&Revision>,
    to_revision: Option<i64>,
) -> Result<&'a Revision, String> {
    match to_revision {
        Some(n) => revisions.iter().find(|r| r.number == n).ok_or_else(|| {
            let known: Vec<String> = revisions.iter().map(|r| r.number.to_string()).collect();
            format!(
                "unable to find revision {n} in history (revisions: {})",
                known.join(", ")
            )
        }),
        None => {
            let cur = current.map(|c| c.number).unwrap_or(i64::MAX);
            revisions
                .iter()
                .filter(|r| r.number < cur)
                .max_by_key(|r| r.number)
                .ok_or_else(|| "no previous revision to roll back to".to_owned())
        }
    }
}

/// Finds a recorded revision again: by hash first (a rollback renumbers), then by name.
pub fn find_recorded<'a>(
    revisions: &'a [Revision],
    hash: &str,
    name: &str,
) -> Option<&'a Revision> {
    revisions
        .iter()
        .find(|r| !hash.is_empty() && r.hash == hash)
        .or_else(|| revisions.iter().find(|r| r.name == name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cr(name: &str, number: i64, hash: &str, image: &str) -> ControllerRevision {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"name": "a", "controller-revision-hash": hash},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "a", "uid": "u1", "controller": true}]},
            "revision": number,
            "data": {"spec": {"template": {"$patch": "replace", "metadata": {"labels": {"name": "a"}},
                "spec": {"containers": [{"name": "a", "image": image}]}}}}
        }))
        .unwrap()
    }

    #[test]
    fn controller_revisions_in_order_with_template_and_hash() {
        let ds: DaemonSet =
            serde_json::from_value(json!({"metadata": {"name": "a", "uid": "u1"}})).unwrap();
        let revs = ds_revisions(
            &ds,
            &[
                cr("a-h2", 3, "h2", "r/c:v1.9.4"),
                cr("a-h1", 2, "h1", "r/c:v1.9.3"),
            ],
        );
        assert_eq!(revs.iter().map(|r| r.number).collect::<Vec<_>>(), [2, 3]);
        assert!(revs[0].template.get("$patch").is_none());
        assert_eq!(current(&revs, None).unwrap().hash, "h2");
        assert_eq!(
            rollback_target(&revs, current(&revs, None), None)
                .unwrap()
                .hash,
            "h1"
        );
        assert_eq!(rollback_target(&revs, None, Some(3)).unwrap().hash, "h2");
        assert!(
            rollback_target(&revs, None, Some(7))
                .unwrap_err()
                .contains("unable to find revision 7")
        );
        // Matched by hash even after renumbering.
        assert_eq!(find_recorded(&revs, "h1", "x").unwrap().number, 2);
        let other: DaemonSet =
            serde_json::from_value(json!({"metadata": {"name": "a", "uid": "u2"}})).unwrap();
        assert!(ds_revisions(&other, &[cr("a-h1", 1, "h1", "x")]).is_empty());
    }

    #[test]
    fn replica_sets_lose_their_hash_label_in_the_template() {
        let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "i", "uid": "u",
            "annotations": {"deployment.kubernetes.io/revision": "2"}}}))
        .unwrap();
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "i-abc", "labels": {"app": "i", "pod-template-hash": "abc"},
                "annotations": {"deployment.kubernetes.io/revision": "2", "kubernetes.io/change-cause": "c"}},
            "spec": {"selector": {}, "template": {"metadata": {"labels": {"app": "i", "pod-template-hash": "abc"}},
                "spec": {"containers": [{"name": "i", "image": "r/c:v1.9.3"}]}}}
        }))
        .unwrap();
        let revs = deploy_revisions(&d, &[rs]);
        assert_eq!(revs[0].number, 2);
        assert_eq!(revs[0].hash, "abc");
        assert_eq!(revs[0].change_cause.as_deref(), Some("c"));
        assert_eq!(revs[0].template["metadata"]["labels"], json!({"app": "i"}));
        assert_eq!(
            current(&revs, deployment_revision(&d)).unwrap().name,
            "i-abc"
        );
        assert!(rollback_target(&revs, current(&revs, Some(2)), None).is_err());
    }
}
