//! `upgrade` and `rollback` against the simulated cluster, the binary run as a child process.

mod common;

use std::time::Duration;

use cce_cni_guard::sim::model::{IpamStrategy, Resource};
use cce_cni_guard::sim::server::FaultRule;
use common::{AGENT, Env, IPAM, NS, image};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn happy_path_on_the_default_cluster_uses_the_ipam_remedy() {
    let env = Env::start(|_| {}).await;
    env.assert_images("v1.9.3", "v1.9.3");
    let out = env.upgrade(&["--to", "v1.9.4", "-o", "json"], &[]).await;
    assert_eq!(out.code, 0, "{out}");
    let report = out.json();
    assert_eq!(report["outcome"], "succeeded", "{out}");
    assert_eq!(
        report["remedyUsed"], true,
        "the default cluster's ipam cannot surge on 3 masters with host ports: {out}"
    );
    env.assert_images("v1.9.4", "v1.9.4");
    let ds = env.get(Resource::DaemonSets, AGENT);
    assert_eq!(
        ds["metadata"]["annotations"]["kubernetes.io/change-cause"],
        "cce-cni-guard upgrade --to v1.9.4"
    );
    assert_eq!(
        env.get(Resource::Deployments, IPAM)["spec"]["replicas"],
        3,
        "scaled back to the recorded replicas"
    );
    for kind in ["DaemonSet", "Deployment"] {
        let reasons = env.event_reasons(kind);
        for reason in [
            "UpgradeStarted",
            "AgentUpdated",
            "IpamRemedy",
            "IpamUpdated",
            "UpgradeSucceeded",
        ] {
            assert!(
                reasons.iter().any(|r| r == reason),
                "{kind} lacks {reason}: {reasons:?}"
            );
        }
    }
    assert!(
        out.stderr.contains("updated") && out.stderr.contains("deadline"),
        "progress lines on stderr: {out}"
    );
    let record = env.record();
    assert_eq!(record["phase"], "succeeded");
    assert_eq!(
        record["agent"]["revision"], 2,
        "v1.9.2 then v1.9.3 before the upgrade"
    );
    assert!(!record["agent"]["hash"].as_str().unwrap_or("").is_empty());
    let status = env.run(&["status"], &[]).await;
    assert_eq!(status.code, 0, "healthy after the upgrade: {status}");
    env.assert_guard_allowed_all(2);
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_elected_ipam_with_one_ready_pod_completes() {
    let env = Env::start(|o| o.behaviour.ipam_leader_only = true).await;
    let out = env.upgrade(&["--to", "v1.9.4", "-o", "json"], &[]).await;
    assert_eq!(out.code, 0, "{out}");
    env.assert_images("v1.9.4", "v1.9.4");
    assert_eq!(out.json()["workloads"][1]["readyBefore"], 1, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn recreate_strategy_needs_no_remedy() {
    let env = Env::start(|o| o.cluster.ipam_strategy = IpamStrategy::Recreate).await;
    let out = env.upgrade(&["--to", "v1.9.4", "-o", "json"], &[]).await;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.json()["remedyUsed"], false, "{out}");
    env.assert_images("v1.9.4", "v1.9.4");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_target_image_is_rolled_back_automatically() {
    let env = Env::start(|o| o.behaviour.broken_image = Some(r"cce-cni:v1\.9\.4$".into())).await;
    let agent_revision = env.resource_version(Resource::DaemonSets, AGENT);
    assert!(!agent_revision.is_empty());
    let out = env.upgrade(&["--to", "v1.9.4", "-o", "json"], &[]).await;
    assert_eq!(out.code, 1, "failed and rolled back: {out}");
    let report = out.json();
    assert_eq!(report["outcome"], "failed-rolled-back");
    let failure = report["failure"].as_str().unwrap_or("");
    assert!(
        failure.contains("ErrImagePull") || failure.contains("ImagePullBackOff"),
        "fail fast names the reason: {failure}"
    );
    env.assert_images("v1.9.3", "v1.9.3");
    let reasons = env.event_reasons("DaemonSet");
    for reason in ["UpgradeFailed", "RollbackStarted", "RolledBack"] {
        assert!(reasons.iter().any(|r| r == reason), "{reasons:?}");
    }
    let status = env.run(&["status"], &[]).await;
    assert_eq!(status.code, 0, "healthy again after the rollback: {status}");
    env.assert_guard_allowed_all(2);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_rollback_leaves_the_failure_in_place() {
    let env = Env::start(|o| o.behaviour.broken_image = Some(r"cce-cni:v1\.9\.4$".into())).await;
    let out = env.upgrade(&["--to", "v1.9.4", "--no-rollback"], &[]).await;
    assert_eq!(out.code, 3, "{out}");
    let (agent, _) = env.images();
    assert_eq!(agent, vec![image("v1.9.4"); 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_upgrader_is_refused() {
    let env = Env::start(|_| {}).await;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    env.sim
        .create(
            Resource::Leases,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "cce-cni-guard-upgrade", "namespace": NS},
                "spec": {"holderIdentity": "other-host/42/abcd", "leaseDurationSeconds": 600,
                         "acquireTime": now, "renewTime": now}}),
        )
        .await
        .unwrap();
    let out = env
        .run(&["upgrade", "--to", "v1.9.4", "--stuck-after", "1s"], &[])
        .await;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("other-host/42/abcd"),
        "names the holder: {out}"
    );
    env.assert_images("v1.9.3", "v1.9.3");
    assert!(
        env.upgrader_writes().is_empty(),
        "{:?}",
        env.upgrader_writes()
    );

    // And two real upgraders at once: one wins, the other is refused.
    let env = Env::start(|_| {}).await;
    let (a, b) = tokio::join!(
        env.run(&["upgrade", "--to", "v1.9.4", "--stuck-after", "1s"], &[]),
        async {
            // Start the second once the first holds the lock.
            for _ in 0..500 {
                if !env.record().is_null() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            env.run(&["upgrade", "--to", "v1.9.4", "--stuck-after", "1s"], &[])
                .await
        }
    );
    assert_eq!(a.code, 0, "{a}");
    assert_eq!(b.code, 2, "{b}");
    assert!(b.stderr.contains("another upgrader"), "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_api_errors_and_dropped_watches_do_not_stop_it() {
    let env = Env::start(|_| {}).await;
    for rule in [
        "PATCH:/daemonsets/:503:2",
        "GET:/deployments/:500:3",
        "POST:/leases:429:1",
        "PATCH:/scale:502:1",
        "PUT:/leases/:500:2",
    ] {
        env.sim.fail_next(rule.parse::<FaultRule>().unwrap());
    }
    let dropper = {
        let sim = env.sim.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(700)).await;
                sim.drop_watches();
            }
        })
    };
    let out = env.upgrade(&["--to", "v1.9.4"], &[]).await;
    dropper.abort();
    assert_eq!(out.code, 0, "{out}");
    env.assert_images("v1.9.4", "v1.9.4");
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_changes_nothing() {
    let env = Env::start(|_| {}).await;
    let before = (
        env.resource_version(Resource::DaemonSets, AGENT),
        env.resource_version(Resource::Deployments, IPAM),
    );
    let out = env.upgrade(&["--to", "v1.9.4", "--dry-run"], &[]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("dry run") && out.stdout.contains("v1.9.4"),
        "{out}"
    );
    let json = env
        .upgrade(&["--to", "v1.9.4", "--dry-run", "-o", "json"], &[])
        .await;
    assert_eq!(json.json()["steps"][0]["change"], true, "{json}");
    let after = (
        env.resource_version(Resource::DaemonSets, AGENT),
        env.resource_version(Resource::Deployments, IPAM),
    );
    assert_eq!(before, after);
    assert!(
        env.upgrader_writes().is_empty(),
        "{:?}",
        env.upgrader_writes()
    );
    assert!(env.get(Resource::Leases, "cce-cni-guard-upgrade").is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_exit_2_and_same_version_exits_0_without_writing() {
    let env = Env::start(|_| {}).await;
    let out = env.upgrade(&["--to", "v1.10.0"], &[]).await;
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("not a patch upgrade"), "{out}");
    assert!(out.stderr.contains("helm chart"), "the way forward: {out}");
    let out = env.upgrade(&["--to", "v2.0.0", "-o", "json"], &[]).await;
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(out.json()["outcome"], "refused");
    let out = env.upgrade(&["--to", "v1.9.2"], &[]).await;
    assert_eq!(out.code, 2, "downgrade without --allow-downgrade: {out}");
    let out = env.upgrade(&["--to", "v1.9.3"], &[]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("nothing to do"), "{out}");
    env.assert_images("v1.9.3", "v1.9.3");
    assert!(
        env.upgrader_writes().is_empty(),
        "{:?}",
        env.upgrader_writes()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_to_a_chosen_revision() {
    let env = Env::start(|o| o.cluster.ipam_strategy = IpamStrategy::Recreate).await;
    assert_eq!(env.upgrade(&["--to", "v1.9.4"], &[]).await.code, 0);
    assert_eq!(env.upgrade(&["--to", "v1.9.5"], &[]).await.code, 0);
    env.assert_images("v1.9.5", "v1.9.5");

    let out = env.rollback(&["--to-revision", "1"], &[]).await;
    assert_eq!(out.code, 2, "--to-revision needs one component: {out}");
    let out = env
        .rollback(&["--component", "ipam", "--to-revision", "99"], &[])
        .await;
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("unable to find revision 99"), "{out}");

    // ipam revisions: 1 v1.9.2, 2 v1.9.3, 3 v1.9.4, 4 v1.9.5.
    let out = env
        .rollback(&["--component", "ipam", "--to-revision", "2"], &[])
        .await;
    assert_eq!(out.code, 0, "{out}");
    env.assert_images("v1.9.5", "v1.9.3");

    // Without --to-revision: each workload back to the revision before its current one.
    let out = env.rollback(&["--component", "agent"], &[]).await;
    assert_eq!(out.code, 0, "{out}");
    env.assert_images("v1.9.4", "v1.9.3");

    let history = env.run(&["history", "-o", "json"], &[]).await;
    assert_eq!(history.code, 0, "{history}");
    let revisions = history.json()["revisions"].as_array().unwrap().clone();
    let current_ipam = revisions
        .iter()
        .find(|r| r["kind"] == "Deployment" && r["current"] == true)
        .unwrap();
    assert_eq!(current_ipam["containers"][0]["image"], image("v1.9.3"));
    assert_eq!(
        current_ipam["revision"], 5,
        "a rollback renumbers: {current_ipam}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_refuses_a_revision_the_guard_would_refuse() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use kube::api::{Api, Patch, PatchParams};
    let env = Env::start(|o| o.cluster.ipam_strategy = IpamStrategy::Recreate).await;
    // Someone without the guard moved the agent to another minor version and back.
    env.sim.set_admission_hook(None);
    let api: Api<DaemonSet> = Api::namespaced(env.client().await, NS);
    for tag in ["v1.8.9", "v1.9.3"] {
        let patch = json!({"spec": {"template": {"spec": {
            "initContainers": [{"name": "install-cni-binary", "image": image(tag)}],
            "containers": [{"name": "cce-cni-node-agent", "image": image(tag)}]}}}});
        api.patch(AGENT, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .unwrap();
        env.sim.settle().await;
    }
    let history = env.run(&["history", "-o", "json"], &[]).await.json();
    let minor = history["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "DaemonSet" && r["containers"][0]["image"] == image("v1.8.9"))
        .unwrap_or_else(|| panic!("{history}"))["revision"]
        .as_i64()
        .unwrap()
        .to_string();
    let out = env
        .rollback(&["--component", "agent", "--to-revision", &minor], &[])
        .await;
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("the guard would refuse"), "{out}");
    assert!(out.stderr.contains("1.8"), "names the release lines: {out}");
    env.assert_images("v1.9.3", "v1.9.3");
}
