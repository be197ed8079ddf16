//! `status` and `history` against the simulated cluster.

mod common;

use cce_cni_guard::sim::model::{IpamStrategy, Resource};
use common::{AGENT, Env, IPAM, image};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn status_of_the_default_cluster_is_healthy() {
    let env = Env::start(|_| {}).await;
    let out = env.run(&["status"], &[]).await;
    assert_eq!(out.code, 0, "{out}");
    for needle in [
        "v1 network: yes",
        "install-cni-binary",
        "cce-eni-ipam",
        "UP-TO-DATE",
        "OBSERVED",
        "HEALTHY",
    ] {
        assert!(out.stdout.contains(needle), "{needle}: {out}");
    }
    let json = env.run(&["status", "-o", "json"], &[]).await.json();
    assert_eq!(json["healthy"], true, "{json}");
    assert_eq!(json["v1Network"], true);
    let agent = &json["workloads"][0];
    assert_eq!(agent["consistent"], true);
    assert_eq!(agent["containers"].as_array().unwrap().len(), 2);
    assert_eq!(agent["rollout"]["desired"], 5, "3 masters + 2 workers");
    assert_eq!(json["workloads"][1]["rollout"]["desired"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_is_unhealthy_without_the_v1_configmap_or_with_a_lock_held() {
    let env = Env::start(|_| {}).await;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    env.sim
        .create(
            Resource::Leases,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "cce-cni-guard-upgrade", "namespace": "kube-system"},
                "spec": {"holderIdentity": "elsewhere/1/x", "leaseDurationSeconds": 600,
                         "renewTime": now}}),
        )
        .await
        .unwrap();
    let out = env.run(&["status", "-o", "json"], &[]).await;
    assert_eq!(out.code, 1, "{out}");
    let problems = out.json()["problems"].to_string();
    assert!(problems.contains("elsewhere/1/x"), "{problems}");

    let env = Env::start(|o| o.seed_default_cluster = false).await;
    let out = env.run(&["status"], &[]).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stdout.contains("NOT HEALTHY"), "{out}");
    assert!(out.stdout.contains("not a CCE v1"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn history_lists_both_workloads_revisions_with_images_and_change_cause() {
    let env = Env::start(|o| o.cluster.ipam_strategy = IpamStrategy::Recreate).await;
    assert_eq!(env.upgrade(&["--to", "v1.9.4"], &[]).await.code, 0);
    let out = env.run(&["history"], &[]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("CHANGE-CAUSE"), "{out}");
    let json = env.run(&["history", "-o", "json"], &[]).await.json();
    let revisions = json["revisions"].as_array().unwrap();
    for (kind, name) in [("DaemonSet", AGENT), ("Deployment", IPAM)] {
        let of: Vec<_> = revisions.iter().filter(|r| r["kind"] == kind).collect();
        assert_eq!(
            of.len(),
            3,
            "{name}: v1.9.2, v1.9.3 and the upgrade: {json}"
        );
        let current = of.iter().find(|r| r["current"] == true).unwrap();
        assert!(
            current["containers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["image"] == image("v1.9.4")),
            "{current}"
        );
        let previous = of
            .iter()
            .filter(|r| r["current"] == false)
            .max_by_key(|r| r["revision"].as_i64())
            .unwrap();
        assert!(
            previous["containers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["image"] == image("v1.9.3")),
            "{previous}"
        );
    }
    let ipam_current = revisions
        .iter()
        .find(|r| r["kind"] == "Deployment" && r["current"] == true)
        .unwrap();
    assert_eq!(
        ipam_current["changeCause"], "cce-cni-guard upgrade --to v1.9.4",
        "the Deployment controller copies the annotation to the ReplicaSet"
    );
}
