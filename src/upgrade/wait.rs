//! Completion, fail-fast and stuck rules of the waits (design §3 steps 4–5). Pure: they
//! judge one cached view (the workload and its pods) and say done, waiting or failed.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Pod;

use super::plan::same_image;

/// Container waiting reasons that mean the new image will not come up by waiting.
pub const FAIL_FAST_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "CrashLoopBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];

/// The judgement of one view.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Done(Counts),
    Waiting(Counts),
    Failed(String),
}

/// The counters a progress line shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub desired: i32,
    pub updated: i32,
    pub ready: i32,
    pub available: i32,
    /// What is still missing, for the progress line.
    pub waiting_for: String,
}

impl Counts {
    pub fn line(&self) -> String {
        format!(
            "{}/{} updated, {}/{} ready, {}/{} available{}",
            self.updated,
            self.desired,
            self.ready,
            self.desired,
            self.available,
            self.desired,
            if self.waiting_for.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.waiting_for)
            }
        )
    }
}

/// Whether every guarded container of the pod runs `image`.
pub fn pod_runs(pod: &Pod, containers: &[String], image: &str) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    let mut seen = false;
    for c in all {
        if containers.contains(&c.name) {
            seen = true;
            if !same_image(c.image.as_deref().unwrap_or(""), image) {
                return false;
            }
        }
    }
    seen
}

/// The fail-fast reason of a pod: a container (init or main) waiting on a reason that
/// waiting will not cure.
pub fn pod_failure(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let statuses = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for cs in statuses {
        if let Some(waiting) = cs.state.as_ref().and_then(|s| s.waiting.as_ref())
            && let Some(reason) = waiting.reason.as_deref()
            && FAIL_FAST_REASONS.contains(&reason)
        {
            return Some(format!(
                "pod {} container {:?} is {reason}{}",
                pod.metadata.name.as_deref().unwrap_or("?"),
                cs.name,
                waiting
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ));
        }
    }
    None
}

/// A pod the scheduler cannot place because the node's host ports are taken (the SOP's
/// ipam port conflict).
pub fn unschedulable_for_ports(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    if status.phase.as_deref().is_some_and(|p| p != "Pending") {
        return false;
    }
    status.conditions.iter().flatten().any(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message
                .as_deref()
                .is_some_and(|m| m.contains("free ports"))
    })
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// The agent DaemonSet is done: the controller observed the spec, every pod is updated and
/// available, and Ready is back to at least the pre-upgrade count. New pods (those running
/// `image`) that cannot start fail the wait at once.
pub fn agent_progress(
    ds: &DaemonSet,
    pods: &[&Pod],
    containers: &[String],
    image: &str,
    ready_before: i32,
) -> Progress {
    for pod in pods {
        if pod_runs(pod, containers, image)
            && let Some(why) = pod_failure(pod)
        {
            return Progress::Failed(why);
        }
    }
    let generation = ds.metadata.generation.unwrap_or(0);
    let status = ds.status.clone().unwrap_or_default();
    let desired = status.desired_number_scheduled;
    let mut counts = Counts {
        desired,
        updated: status.updated_number_scheduled.unwrap_or(0),
        ready: status.number_ready,
        available: status.number_available.unwrap_or(0),
        waiting_for: String::new(),
    };
    let observed = status.observed_generation.unwrap_or(0) >= generation;
    counts.waiting_for = if !observed {
        "spec update not yet observed".into()
    } else if counts.updated < desired {
        "pods to be updated".into()
    } else if counts.available < desired {
        "updated pods to become available".into()
    } else if counts.ready < ready_before.min(desired) {
        format!("Ready back to {}", ready_before.min(desired))
    } else {
        return Progress::Done(counts);
    };
    Progress::Waiting(counts)
}

/// The outcome of judging the ipam view.
#[derive(Debug, Clone, PartialEq)]
pub struct IpamJudgement {
    pub progress: Progress,
    /// New pods Pending because no node has the free host ports.
    pub stuck: Vec<String>,
}

/// The ipam Deployment is done (our own rule; kube's `is_deployment_completed` ignores
/// observedGeneration): observedGeneration ≥ generation, updatedReplicas == spec.replicas,
/// status.replicas == updatedReplicas, no pods left that run another image, and Ready back to
/// at least min(pre-upgrade Ready, replicas) — a leader-elected ipam has 1 of 3 Ready.
pub fn ipam_progress(
    deploy: &Deployment,
    pods: &[&Pod],
    containers: &[String],
    image: &str,
    ready_before: i32,
) -> IpamJudgement {
    let mut stuck = Vec::new();
    for pod in pods {
        if !pod_runs(pod, containers, image) || is_terminating(pod) {
            continue;
        }
        if let Some(why) = pod_failure(pod) {
            return IpamJudgement {
                progress: Progress::Failed(why),
                stuck,
            };
        }
        if unschedulable_for_ports(pod) {
            stuck.push(pod.metadata.name.clone().unwrap_or_default());
        }
    }
    let generation = deploy.metadata.generation.unwrap_or(0);
    let status = deploy.status.clone().unwrap_or_default();
    let replicas = deploy.spec.replicas.unwrap_or(1);
    if status.conditions.iter().flatten().any(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return IpamJudgement {
            progress: Progress::Failed("the Deployment exceeded its progress deadline".into()),
            stuck,
        };
    }
    let old_pods = pods
        .iter()
        .filter(|p| !pod_runs(p, containers, image))
        .count();
    let mut counts = Counts {
        desired: replicas,
        updated: status.updated_replicas.unwrap_or(0),
        ready: status.ready_replicas.unwrap_or(0),
        available: status.available_replicas.unwrap_or(0),
        waiting_for: String::new(),
    };
    let total = status.replicas.unwrap_or(0);
    let ready_goal = ready_before.min(replicas);
    counts.waiting_for = if status.observed_generation.unwrap_or(0) < generation {
        "spec update not yet observed".into()
    } else if counts.updated != replicas {
        "replicas to be updated".into()
    } else if total != counts.updated {
        format!("{} old replicas to terminate", total - counts.updated)
    } else if old_pods > 0 {
        format!("{old_pods} pods of old ReplicaSets to go")
    } else if counts.ready < ready_goal {
        format!("Ready back to {ready_goal}")
    } else {
        return IpamJudgement {
            progress: Progress::Done(counts),
            stuck,
        };
    };
    if !stuck.is_empty() {
        counts.waiting_for = format!(
            "{}; {} unschedulable: no free host ports",
            counts.waiting_for,
            stuck.join(", ")
        );
    }
    IpamJudgement {
        progress: Progress::Waiting(counts),
        stuck,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OLD: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.3";
    const NEW: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4";

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    fn ds(
        generation: i64,
        observed: i64,
        desired: i32,
        updated: i32,
        ready: i32,
        available: i32,
    ) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "cce-cni-node-agent", "generation": generation},
            "spec": {"selector": {}, "template": {}},
            "status": {"observedGeneration": observed, "desiredNumberScheduled": desired,
                "currentNumberScheduled": desired, "numberMisscheduled": 0,
                "updatedNumberScheduled": updated, "numberReady": ready, "numberAvailable": available}
        }))
        .unwrap()
    }

    fn agent_pod(name: &str, image: &str, waiting: Option<&str>) -> Pod {
        let mut status = json!({"phase": "Running"});
        if let Some(reason) = waiting {
            status = json!({"phase": "Pending", "initContainerStatuses": [{
                "name": "install-cni-binary", "ready": false, "restartCount": 0, "image": image, "imageID": "",
                "state": {"waiting": {"reason": reason, "message": "pull failed"}}}]});
        }
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"initContainers": [{"name": "install-cni-binary", "image": image}],
                     "containers": [{"name": "cce-cni-node-agent", "image": image}]},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn agent_done_needs_observed_updated_available_and_ready() {
        let c = names(&["cce-cni-node-agent", "install-cni-binary"]);
        let pods: Vec<Pod> = vec![];
        let refs: Vec<&Pod> = pods.iter().collect();
        for (d, want_done, why) in [
            (ds(2, 1, 5, 5, 5, 5), false, "not yet observed"),
            (ds(2, 2, 5, 3, 5, 5), false, "to be updated"),
            (ds(2, 2, 5, 5, 5, 4), false, "available"),
            (ds(2, 2, 5, 5, 5, 5), true, ""),
        ] {
            match agent_progress(&d, &refs, &c, NEW, 5) {
                Progress::Done(_) => assert!(want_done, "{why}"),
                Progress::Waiting(counts) => {
                    assert!(!want_done);
                    assert!(counts.waiting_for.contains(why), "{counts:?}");
                }
                Progress::Failed(f) => panic!("{f}"),
            }
        }
    }

    #[test]
    fn agent_fails_fast_on_new_pods_that_cannot_start() {
        let c = names(&["cce-cni-node-agent", "install-cni-binary"]);
        let broken = agent_pod("a-1", NEW, Some("ImagePullBackOff"));
        let old_broken = agent_pod("a-0", OLD, Some("CrashLoopBackOff"));
        let d = ds(2, 2, 5, 1, 4, 4);
        match agent_progress(&d, &[&broken], &c, NEW, 5) {
            Progress::Failed(why) => {
                assert!(
                    why.contains("a-1") && why.contains("ImagePullBackOff"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
        // An old pod's trouble is not the new image's fault.
        assert!(matches!(
            agent_progress(&d, &[&old_broken], &c, NEW, 5),
            Progress::Waiting(_)
        ));
    }

    fn deploy(
        generation: i64,
        observed: i64,
        replicas: i32,
        total: i32,
        updated: i32,
        ready: i32,
    ) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "cce-eni-ipam", "generation": generation},
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
            "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                       "readyReplicas": ready, "availableReplicas": ready}
        }))
        .unwrap()
    }

    fn ipam_pod(name: &str, image: &str, unschedulable: bool) -> Pod {
        let status = if unschedulable {
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable",
                "message": "0/5 nodes are available: 3 node(s) didn't have free ports for the requested pod ports."}]})
        } else {
            json!({"phase": "Running"})
        };
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "cce-eni-ipam", "image": image}]},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn ipam_leader_only_one_ready_of_three_is_done() {
        let c = names(&["cce-eni-ipam"]);
        let pods = [
            ipam_pod("i-1", NEW, false),
            ipam_pod("i-2", NEW, false),
            ipam_pod("i-3", NEW, false),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let j = ipam_progress(&deploy(2, 2, 3, 3, 3, 1), &refs, &c, NEW, 1);
        assert!(matches!(j.progress, Progress::Done(_)), "{j:?}");
        // But not while fewer are Ready than before the upgrade.
        let j = ipam_progress(&deploy(2, 2, 3, 3, 3, 1), &refs, &c, NEW, 3);
        assert!(matches!(j.progress, Progress::Waiting(_)), "{j:?}");
    }

    #[test]
    fn ipam_waits_for_old_pods_and_reports_port_conflicts() {
        let c = names(&["cce-eni-ipam"]);
        let pods = [
            ipam_pod("old-1", OLD, false),
            ipam_pod("old-2", OLD, false),
            ipam_pod("old-3", OLD, false),
            ipam_pod("new-1", NEW, true),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let j = ipam_progress(&deploy(2, 2, 3, 4, 1, 3), &refs, &c, NEW, 3);
        assert_eq!(j.stuck, ["new-1"]);
        match j.progress {
            Progress::Waiting(counts) => assert!(counts.waiting_for.contains("free host ports")),
            other => panic!("{other:?}"),
        }
        // Counters all fine but an old pod still exists: not done.
        let pods = [ipam_pod("old-1", OLD, false), ipam_pod("new-1", NEW, false)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let j = ipam_progress(&deploy(2, 2, 1, 1, 1, 1), &refs, &c, NEW, 1);
        match j.progress {
            Progress::Waiting(counts) => assert!(counts.waiting_for.contains("old ReplicaSets")),
            other => panic!("{other:?}"),
        }
        // observedGeneration behind: not done even with good counters.
        let j = ipam_progress(&deploy(3, 2, 1, 1, 1, 1), &[], &c, NEW, 1);
        assert!(matches!(j.progress, Progress::Waiting(_)));
    }

    #[test]
    fn ipam_progress_deadline_fails() {
        let mut d = deploy(2, 2, 3, 4, 1, 3);
        d.status.as_mut().unwrap().conditions = Some(vec![
            serde_json::from_value(json!({
            "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}))
            .unwrap(),
        ]);
        let j = ipam_progress(&d, &[], &names(&["cce-eni-ipam"]), NEW, 3);
        assert!(matches!(j.progress, Progress::Failed(_)));
    }
}
