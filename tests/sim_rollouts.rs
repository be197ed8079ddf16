//! The SOP end to end against the simulated cluster's controllers, with the real kubectl
//! (1.27, 1.30 and 1.33, picked by the dispatcher from the server's `/version`): the default
//! cluster's history, `set image` on both workloads, the ipam host-port conflict and its
//! scale 0/3 remedy, `rollout status`, `rollout history` (with `--revision`), `rollout undo`
//! (with and without `--to-revision`, and DaemonSet "skipped rollback"), `get pods`, `get events`.

use std::path::PathBuf;

use cce_cni_guard::sim::model::{Behaviour, Resource};
use cce_cni_guard::sim::{Sim, SimHandle, SimOptions};
use serde_json::Value;

const NS: &str = "kube-system";
const IMAGE: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni";
const FREE_PORTS: &str = "3 node(s) didn't have free ports for the requested pod ports";

/// Whether kubectl can run here; without it the tests say so loudly, and fail on CI.
fn kubectl_available() -> bool {
    let found = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("kubectl is not on the PATH, and CI=true requires these tests to run");
        }
        eprintln!("\n*** SKIPPING sim_rollouts: kubectl is not on the PATH ***\n");
    }
    found
}

struct Kubectl {
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    /// Runs kubectl with its own fresh cache dir.
    async fn run(&self, args: &[&str]) -> Run {
        let cache = tempfile::tempdir_in(self.dir.path()).unwrap();
        let out = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(cache.path())
            .args(args)
            .output()
            .await
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `kubectl -n kube-system ARGS…`, requires success, returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", NS];
        full.extend_from_slice(args);
        let run = self.run(&full).await;
        assert_eq!(
            run.code, 0,
            "kubectl {full:?} failed:\nstdout: {}\nstderr: {}",
            run.stdout, run.stderr
        );
        run.stdout
    }
}

async fn start(version: &str) -> (SimHandle, Kubectl) {
    start_with_delay(version, std::time::Duration::ZERO).await
}

async fn start_with_delay(version: &str, delay: std::time::Duration) -> (SimHandle, Kubectl) {
    cce_cni_guard::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let handle = Sim::start(SimOptions {
        kubeconfig: Some(kubeconfig.clone()),
        k8s_version: version.parse().unwrap(),
        behaviour: Behaviour {
            pod_ready_delay: delay,
            ..Default::default()
        },
        ..SimOptions::default()
    })
    .await
    .unwrap();
    handle.settle().await;
    (handle, Kubectl { kubeconfig, dir })
}

/// The rows of a `kubectl get` table, split on whitespace, header first.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// REVISION numbers listed by `rollout history`.
fn revisions(out: &str) -> Vec<u32> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

fn pods(handle: &SimHandle, key: &str, value: &str) -> Vec<Value> {
    handle
        .list(Resource::Pods, Some(NS))
        .into_iter()
        .filter(|p| p["metadata"]["labels"][key] == value)
        .map(|p| p.as_ref().clone())
        .collect()
}

fn ipam_images(handle: &SimHandle) -> Vec<String> {
    pods(handle, "app", "cce-eni-ipam")
        .iter()
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn agent_images(handle: &SimHandle) -> Vec<String> {
    pods(handle, "name", "cce-cni-node-agent")
        .iter()
        .flat_map(|p| {
            [
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                p["spec"]["initContainers"][0]["image"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ]
        })
        .collect()
}

fn all_are(images: &[String], image: &str) -> bool {
    !images.is_empty() && images.iter().all(|i| i == image)
}

/// The SOP's remedy: scale to 0, wait, scale back to 3, wait until rolled out.
async fn scale_zero_and_back(handle: &SimHandle, k: &Kubectl) {
    let out = k
        .ok(&["scale", "deploy", "cce-eni-ipam", "--replicas=0"])
        .await;
    assert_eq!(out.trim(), "deployment.apps/cce-eni-ipam scaled");
    handle.settle().await;
    assert!(pods(handle, "app", "cce-eni-ipam").is_empty());
    let out = k
        .ok(&["scale", "deploy", "cce-eni-ipam", "--replicas=3"])
        .await;
    assert_eq!(out.trim(), "deployment.apps/cce-eni-ipam scaled");
    handle.settle().await;
    let out = k
        .ok(&["rollout", "status", "deploy/cce-eni-ipam", "--timeout=60s"])
        .await;
    assert!(
        out.contains("deployment \"cce-eni-ipam\" successfully rolled out"),
        "{out}"
    );
    let get = rows(&k.ok(&["get", "deploy", "cce-eni-ipam"]).await);
    assert_eq!(get[1][1..4], ["3/3", "3", "3"], "{get:?}");
}

/// After an ipam image change: one new pod Pending on the free-ports failure.
async fn ipam_stuck_on_ports(handle: &SimHandle, k: &Kubectl) {
    handle.settle().await;
    let listed = rows(&k.ok(&["get", "pods", "-l", "app=cce-eni-ipam"]).await);
    assert_eq!(listed[0][..3], ["NAME", "READY", "STATUS"], "{listed:?}");
    let pending: Vec<&Vec<String>> = listed.iter().filter(|r| r[2] == "Pending").collect();
    assert_eq!(pending.len(), 1, "{listed:?}");
    assert_eq!(pending[0][1], "0/1");
    let events = k.ok(&["get", "events"]).await;
    assert!(
        events
            .lines()
            .any(|l| l.contains("FailedScheduling") && l.contains(FREE_PORTS)),
        "{events}"
    );
    let get = rows(&k.ok(&["get", "deploy", "cce-eni-ipam"]).await);
    assert_eq!(get[0][..4], ["NAME", "READY", "UP-TO-DATE", "AVAILABLE"]);
    assert_eq!(get[1][1..4], ["3/3", "1", "3"], "{get:?}");
}

async fn sop(version: &str) {
    if !kubectl_available() {
        return;
    }
    let (handle, k) = start(version).await;
    let v2 = format!("{IMAGE}:v1.9.2");
    let v3 = format!("{IMAGE}:v1.9.3");
    let v4 = format!("{IMAGE}:v1.9.4");

    // 2.1.1: the v1 network is there.
    let cm = rows(&k.ok(&["get", "cm", "cce-cni-node-agent"]).await);
    assert_eq!(cm[0], ["NAME", "DATA", "AGE"]);
    assert_eq!(cm[1][..2], ["cce-cni-node-agent", "1"]);

    // The cluster starts as one upgraded v1.9.2 -> v1.9.3.
    let ds_history = k
        .ok(&["rollout", "history", "daemonset/cce-cni-node-agent"])
        .await;
    assert!(ds_history.starts_with("daemonset.apps/cce-cni-node-agent"));
    assert_eq!(revisions(&ds_history), [1, 2], "{ds_history}");
    let deploy_history = k.ok(&["rollout", "history", "deploy/cce-eni-ipam"]).await;
    assert!(deploy_history.contains("REVISION  CHANGE-CAUSE"));
    assert_eq!(revisions(&deploy_history), [1, 2], "{deploy_history}");
    let skipped = k
        .ok(&[
            "rollout",
            "undo",
            "daemonset/cce-cni-node-agent",
            "--to-revision=2",
        ])
        .await;
    assert_eq!(
        skipped.trim(),
        "daemonset.apps/cce-cni-node-agent skipped rollback (current template already matches revision 2)"
    );

    // 2.2: both agent containers to v1.9.4.
    let agent_image_pairs = format!("cce-cni-node-agent={v4}");
    let install_pair = format!("install-cni-binary={v4}");
    let out = k
        .ok(&[
            "set",
            "image",
            "daemonset/cce-cni-node-agent",
            &agent_image_pairs,
            &install_pair,
        ])
        .await;
    assert_eq!(
        out.trim(),
        "daemonset.apps/cce-cni-node-agent image updated"
    );
    handle.settle().await;
    let out = k
        .ok(&[
            "rollout",
            "status",
            "ds/cce-cni-node-agent",
            "--timeout=60s",
        ])
        .await;
    assert!(
        out.contains("daemon set \"cce-cni-node-agent\" successfully rolled out"),
        "{out}"
    );
    let ds = rows(&k.ok(&["get", "ds", "cce-cni-node-agent"]).await);
    assert_eq!(
        ds[0],
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE",
            "SELECTOR",
            "AGE"
        ]
    );
    assert_eq!(ds[1][1..6], ["5", "5", "5", "5", "5"], "{ds:?}");
    assert!(all_are(&agent_images(&handle), &v4));

    // 2.3: ipam to v1.9.4; the surge pod cannot get the host ports on any master.
    let ipam_pair = format!("cce-eni-ipam={v4}");
    let out = k
        .ok(&["set", "image", "deployment/cce-eni-ipam", &ipam_pair])
        .await;
    assert_eq!(out.trim(), "deployment.apps/cce-eni-ipam image updated");
    ipam_stuck_on_ports(&handle, &k).await;
    // 2.3.2.1: scale down and up.
    scale_zero_and_back(&handle, &k).await;
    assert!(all_are(&ipam_images(&handle), &v4));

    // 3.1: look at the history, then roll ipam back to revision 2.
    let history = k.ok(&["rollout", "history", "deploy/cce-eni-ipam"]).await;
    assert_eq!(revisions(&history), [1, 2, 3], "{history}");
    let rev2 = k
        .ok(&["rollout", "history", "deploy/cce-eni-ipam", "--revision=2"])
        .await;
    assert!(
        rev2.contains("deployment.apps/cce-eni-ipam with revision #2"),
        "{rev2}"
    );
    assert!(
        rev2.contains(&format!("Image:\t{v3}")) || rev2.contains(&v3),
        "{rev2}"
    );
    assert!(rev2.contains("pod-template-hash="), "{rev2}");
    let out = k
        .ok(&["rollout", "undo", "deploy/cce-eni-ipam", "--to-revision=2"])
        .await;
    assert_eq!(out.trim(), "deployment.apps/cce-eni-ipam rolled back");
    ipam_stuck_on_ports(&handle, &k).await;
    scale_zero_and_back(&handle, &k).await;
    assert!(all_are(&ipam_images(&handle), &v3));
    let history = k.ok(&["rollout", "history", "deploy/cce-eni-ipam"]).await;
    assert_eq!(revisions(&history), [1, 3, 4], "{history}");
    let gone = k
        .run(&[
            "-n",
            NS,
            "rollout",
            "undo",
            "deploy/cce-eni-ipam",
            "--to-revision=2",
        ])
        .await;
    assert_eq!(gone.code, 1);
    assert!(
        gone.stderr
            .contains("unable to find specified revision 2 in history"),
        "{}",
        gone.stderr
    );
    // 3: plain undo goes back to the newest older revision (v1.9.4).
    let out = k.ok(&["rollout", "undo", "deploy/cce-eni-ipam"]).await;
    assert_eq!(out.trim(), "deployment.apps/cce-eni-ipam rolled back");
    ipam_stuck_on_ports(&handle, &k).await;
    scale_zero_and_back(&handle, &k).await;
    assert!(all_are(&ipam_images(&handle), &v4));
    let history = k.ok(&["rollout", "history", "deploy/cce-eni-ipam"]).await;
    assert_eq!(revisions(&history), [1, 4, 5], "{history}");

    // The agent: undo to revision 2 renumbers it to 4; undoing to 4 is then a no-op.
    let rev2 = k
        .ok(&[
            "rollout",
            "history",
            "daemonset/cce-cni-node-agent",
            "--revision=2",
        ])
        .await;
    assert!(rev2.contains(&v3), "{rev2}");
    let out = k
        .ok(&[
            "rollout",
            "undo",
            "daemonset/cce-cni-node-agent",
            "--to-revision=2",
        ])
        .await;
    assert_eq!(out.trim(), "daemonset.apps/cce-cni-node-agent rolled back");
    handle.settle().await;
    let out = k
        .ok(&[
            "rollout",
            "status",
            "daemonset/cce-cni-node-agent",
            "--timeout=60s",
        ])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    assert!(all_are(&agent_images(&handle), &v3));
    let history = k
        .ok(&["rollout", "history", "daemonset/cce-cni-node-agent"])
        .await;
    assert_eq!(revisions(&history), [1, 3, 4], "{history}");
    let skipped = k
        .ok(&[
            "rollout",
            "undo",
            "daemonset/cce-cni-node-agent",
            "--to-revision=4",
        ])
        .await;
    assert!(
        skipped.contains("skipped rollback (current template already matches revision 4)"),
        "{skipped}"
    );
    let out = k
        .ok(&["rollout", "undo", "daemonset/cce-cni-node-agent"])
        .await;
    assert_eq!(out.trim(), "daemonset.apps/cce-cni-node-agent rolled back");
    handle.settle().await;
    assert!(all_are(&agent_images(&handle), &v4));
    let history = k
        .ok(&["rollout", "history", "daemonset/cce-cni-node-agent"])
        .await;
    assert_eq!(revisions(&history), [1, 4, 5], "{history}");
    let ds = rows(&k.ok(&["get", "ds", "cce-cni-node-agent"]).await);
    assert_eq!(ds[1][1..6], ["5", "5", "5", "5", "5"], "{ds:?}");
    // Nothing of v1.9.2 runs, but it stays in the history as revision 1.
    assert!(!agent_images(&handle).contains(&v2));
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sop_on_kubectl_1_27() {
    sop("1.27").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sop_on_kubectl_1_30() {
    sop("1.30").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sop_on_kubectl_1_33() {
    sop("1.33").await;
}

/// With a real ready delay, `rollout status` watches the agent roll node by node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_status_follows_a_slow_agent_rollout() {
    if !kubectl_available() {
        return;
    }
    let (handle, k) = start_with_delay("1.30", std::time::Duration::from_millis(300)).await;
    // Start from a fully available agent, so the update goes one node at a time (pods that
    // are not available yet would all be replaced at once, as upstream does).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let ds = handle
            .get(Resource::DaemonSets, Some(NS), "cce-cni-node-agent")
            .unwrap();
        if ds["status"]["numberAvailable"] == 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "agent never became available: {:#}",
            ds["status"]
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let v4 = format!("{IMAGE}:v1.9.4");
    let pairs = [
        format!("cce-cni-node-agent={v4}"),
        format!("install-cni-binary={v4}"),
    ];
    k.ok(&[
        "set",
        "image",
        "daemonset/cce-cni-node-agent",
        &pairs[0],
        &pairs[1],
    ])
    .await;
    let out = k
        .ok(&[
            "rollout",
            "status",
            "ds/cce-cni-node-agent",
            "--timeout=60s",
        ])
        .await;
    assert!(
        out.contains("Waiting for daemon set \"cce-cni-node-agent\" rollout to finish"),
        "{out}"
    );
    assert!(
        out.trim_end()
            .ends_with("daemon set \"cce-cni-node-agent\" successfully rolled out"),
        "{out}"
    );
    assert!(all_are(&agent_images(&handle), &v4));
    let ds = rows(&k.ok(&["get", "ds", "cce-cni-node-agent"]).await);
    assert_eq!(ds[1][1..6], ["5", "5", "5", "5", "5"], "{ds:?}");
    handle.shutdown().await;
}
