use super::*;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};

const REPO: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni";

fn ds(tag: &str, init_tag: &str) -> DaemonSet {
    serde_json::from_value(json!({
        "metadata": {"name": "cce-cni-node-agent", "namespace": "kube-system", "generation": 1},
        "spec": {"selector": {"matchLabels": {"name": "cce-cni-node-agent"}},
            "template": {"metadata": {"labels": {"name": "cce-cni-node-agent"}}, "spec": {
                "initContainers": [{"name": "install-cni-binary", "image": format!("{REPO}:{init_tag}")}],
                "containers": [{"name": "cce-cni-node-agent", "image": format!("{REPO}:{tag}")}]}}},
        "status": {"observedGeneration": 1, "desiredNumberScheduled": 5, "currentNumberScheduled": 5,
            "numberMisscheduled": 0, "numberReady": 5, "updatedNumberScheduled": 5, "numberAvailable": 5}
    }))
    .unwrap()
}

fn deploy(tag: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "cce-eni-ipam", "namespace": "kube-system", "generation": 1},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "cce-eni-ipam"}},
            "template": {"metadata": {"labels": {"app": "cce-eni-ipam"}}, "spec": {
                "containers": [{"name": "cce-eni-ipam", "image": format!("{REPO}:{tag}")}]}}},
        "status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 1, "availableReplicas": 1}
    }))
    .unwrap()
}

fn targets() -> Targets {
    Targets::from_config(&Config::default()).unwrap()
}

fn run(agent: &DaemonSet, ipam: &Deployment, target: Target) -> Result<Preflight, Refusal> {
    preflight(
        Observed {
            v1_configmap: true,
            agent: Some(agent),
            ipam: Some(ipam),
        },
        &targets(),
        &target,
        false,
        &Config::default(),
    )
}

fn to(v: &str) -> Target {
    Target::Version(v.into())
}

#[test]
fn plans_both_workloads_with_containers_where_they_sit() {
    let Preflight::Go(plan) =
        run(&ds("v1.9.3", "v1.9.3"), &deploy("v1.9.3"), to("v1.9.4")).unwrap()
    else {
        panic!("expected a plan")
    };
    assert_eq!(plan.target, format!("{REPO}:v1.9.4"));
    assert!(plan.agent.change && plan.ipam.change);
    let init = plan
        .agent
        .slots
        .iter()
        .find(|s| s.container == "install-cni-binary")
        .unwrap();
    assert!(init.init);
    assert_eq!(init.pointer(), "/spec/template/spec/initContainers/0");
    assert_eq!(
        (plan.agent.ready, plan.ipam.ready, plan.ipam.desired),
        (5, 1, 3)
    );
}

#[test]
fn keeps_the_tag_style_and_accepts_full_references() {
    let Preflight::Go(plan) = run(&ds("v1.9.3", "v1.9.3"), &deploy("v1.9.3"), to("1.9.4")).unwrap()
    else {
        panic!()
    };
    assert!(plan.target.ends_with(":v1.9.4"));
    let Preflight::Go(plan) = run(
        &ds("v1.9.3", "v1.9.3"),
        &deploy("v1.9.3"),
        Target::Image(format!("{REPO}:v1.9.5")),
    )
    .unwrap() else {
        panic!()
    };
    assert!(plan.target.ends_with(":v1.9.5"));
}

#[test]
fn same_version_is_nothing_to_do() {
    assert!(matches!(
        run(&ds("v1.9.3", "v1.9.3"), &deploy("v1.9.3"), to("v1.9.3")).unwrap(),
        Preflight::NothingToDo { .. }
    ));
}

#[test]
fn a_half_done_upgrade_only_moves_what_is_behind() {
    let Preflight::Go(plan) =
        run(&ds("v1.9.4", "v1.9.4"), &deploy("v1.9.3"), to("v1.9.4")).unwrap()
    else {
        panic!()
    };
    assert!(!plan.agent.change && plan.ipam.change);
}

#[test]
fn refusals_say_why_and_the_way_forward() {
    let cases: Vec<(DaemonSet, Deployment, Target, &str, &str)> = vec![
        (
            ds("v1.9.3", "v1.9.3"),
            deploy("v1.9.3"),
            to("v1.10.0"),
            "not a patch upgrade",
            "helm chart",
        ),
        (
            ds("v1.9.3", "v1.9.3"),
            deploy("v1.9.3"),
            to("v2.9.4"),
            "not a patch upgrade",
            "helm chart",
        ),
        (
            ds("v1.9.3", "v1.9.3"),
            deploy("v1.9.3"),
            to("v1.9.2"),
            "lower than",
            "rollback",
        ),
        (
            ds("v1.9.3", "v1.9.3"),
            deploy("v1.9.3"),
            to("latest"),
            "not a version",
            "--to v1.9.4",
        ),
        (
            ds("v1.9.3", "v1.9.2"),
            deploy("v1.9.3"),
            to("v1.9.4"),
            "disagree",
            "set image",
        ),
        (
            ds("v1.9.3", "v1.9.3"),
            deploy("v1.8.3"),
            to("v1.9.4"),
            "workloads disagree",
            "helm chart",
        ),
        (
            ds("v1.9.3", "v1.9.3"),
            deploy("v1.9.3"),
            Target::Image("registry.baidubce.com/cce-plugin-pro/cce-cni-arm64:v1.9.4".into()),
            "another repository",
            "helm chart",
        ),
    ];
    for (agent, ipam, target, reason, forward) in cases {
        let refusal = run(&agent, &ipam, target.clone()).unwrap_err();
        assert!(refusal.reason.contains(reason), "{target:?}: {refusal}");
        assert!(
            refusal.way_forward.contains(forward),
            "{target:?}: {refusal}"
        );
    }
}

#[test]
fn refuses_without_v1_network_or_during_a_rollout() {
    let (agent, ipam) = (ds("v1.9.3", "v1.9.3"), deploy("v1.9.3"));
    let refusal = preflight(
        Observed {
            v1_configmap: false,
            agent: Some(&agent),
            ipam: Some(&ipam),
        },
        &targets(),
        &to("v1.9.4"),
        false,
        &Config::default(),
    )
    .unwrap_err();
    assert!(refusal.reason.contains("not a CCE v1"), "{refusal}");
    let mut rolling = agent.clone();
    rolling.metadata.generation = Some(2);
    let refusal = run(&rolling, &ipam, to("v1.9.4")).unwrap_err();
    assert!(refusal.reason.contains("rollout"), "{refusal}");
    let refusal = preflight(
        Observed {
            v1_configmap: true,
            agent: Some(&agent),
            ipam: None,
        },
        &targets(),
        &to("v1.9.4"),
        false,
        &Config::default(),
    )
    .unwrap_err();
    assert!(refusal.reason.contains("not found"));
}

#[test]
fn the_planned_patch_passes_the_guard_and_carries_preconditions() {
    let t = targets();
    let agent = ds("v1.9.3", "v1.9.3");
    let ipam = deploy("v1.9.3");
    let slots = locate(&t.agent, ds_spec(&agent)).unwrap();
    let target = format!("{REPO}:v1.9.4");
    let patch = image_patch(&slots, &target, "cce-cni-guard upgrade --to v1.9.4", false);
    let text = serde_json::to_string(&patch).unwrap();
    assert!(
        text.contains(r#""op":"test","path":"/spec/template/spec/initContainers/0/image""#),
        "{text}"
    );
    assert!(text.contains("kubernetes.io/change-cause"), "{text}");
    let ipam_images = PodTemplateImages::from_pod_spec(deploy_spec(&ipam).unwrap());
    let current = serde_json::to_value(&agent).unwrap();
    let (next, _) = guard_check(
        &t.agent,
        &current,
        &patch,
        (&t.ipam, Some(&ipam_images)),
        &Config::default(),
    )
    .unwrap();
    let images = PodTemplateImages::from_workload(&next).unwrap();
    assert!(images.containers.iter().all(|c| c.image == target));
    assert_eq!(
        next["metadata"]["annotations"][CHANGE_CAUSE],
        "cce-cni-guard upgrade --to v1.9.4"
    );
    // A patch that would leave the containers disagreeing is refused before any write.
    let one = image_patch(&slots[..1], &target, "x", false);
    let err = guard_check(
        &t.agent,
        &current,
        &one,
        (&t.ipam, Some(&ipam_images)),
        &Config::default(),
    )
    .unwrap_err();
    assert!(err.contains("consistent"), "{err}");
    // A stale precondition does not apply.
    let moved = serde_json::to_value(ds("v1.9.5", "v1.9.5")).unwrap();
    let err = guard_check(
        &t.agent,
        &moved,
        &patch,
        (&t.ipam, Some(&ipam_images)),
        &Config::default(),
    )
    .unwrap_err();
    assert!(err.contains("does not apply"), "{err}");
}

#[test]
fn a_rollback_template_patch_replaces_the_template() {
    let t = targets();
    let agent = ds("v1.9.4", "v1.9.4");
    let slots = locate(&t.agent, ds_spec(&agent)).unwrap();
    let old = serde_json::to_value(&ds("v1.9.3", "v1.9.3").spec.template).unwrap();
    let patch = template_patch(&slots, &old, "rollback", false);
    let current = serde_json::to_value(&agent).unwrap();
    let (next, warnings) = guard_check(
        &t.agent,
        &current,
        &patch,
        (&t.ipam, None),
        &Config::default(),
    )
    .unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("downgrade")),
        "{warnings:?}"
    );
    assert_eq!(next["spec"]["template"], old);
}
