//! The guard end to end: the real kubectl against `sim --with-guard` (the webhook in-process
//! over HTTPS, registered from deploy/'s configuration), on every write path.

use std::path::PathBuf;

use cce_cni_guard::policy::{Config, Exemptions};
use cce_cni_guard::sim::guard::{self, GUARD_NAMESPACE, GUARD_USER, RunningGuard};
use cce_cni_guard::sim::model::{Behaviour, Resource};
use cce_cni_guard::sim::server::UserSpec;
use cce_cni_guard::sim::{Sim, SimHandle, SimOptions};
use serde_json::Value;

const R: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni";

fn kubectl_available() -> bool {
    let found = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "kubectl is required when CI=true"
        );
        eprintln!("\n*** SKIPPING the guard's kubectl tests: kubectl is not on the PATH ***\n");
    }
    found
}

struct Cluster {
    sim: SimHandle,
    guard: Option<RunningGuard>,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Cluster {
    async fn start(version: &str) -> Self {
        cce_cni_guard::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let sim = Sim::start(SimOptions {
            kubeconfig: Some(kubeconfig.clone()),
            k8s_version: version.parse().unwrap(),
            behaviour: Behaviour {
                pod_ready_delay: std::time::Duration::ZERO,
                ..Default::default()
            },
            users: vec![
                guard::guard_user(),
                UserSpec {
                    name: "helm-operator".into(),
                    groups: vec!["system:authenticated".into()],
                },
            ],
            ..SimOptions::default()
        })
        .await
        .unwrap();
        let config = Config {
            exempt: Exemptions {
                users: ["helm-operator".to_owned()].into(),
                ..Default::default()
            },
            ..Config::default()
        };
        let guard = guard::start(&sim, version.parse().unwrap(), config)
            .await
            .unwrap();
        Self {
            sim,
            guard: Some(guard),
            kubeconfig,
            dir,
        }
    }

    async fn kubectl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let cache = tempfile::tempdir_in(self.dir.path()).unwrap();
        let mut command = tokio::process::Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(cache.path())
            .args(args);
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().await.unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn kubectl(&self, args: &[&str]) -> Run {
        self.kubectl_env(args, &[]).await
    }

    #[track_caller]
    fn image(&self, resource: Resource, name: &str, list: &str) -> String {
        let object = self.sim.get(resource, Some("kube-system"), name).unwrap();
        object["spec"]["template"]["spec"][list][0]["image"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn agent_images(&self) -> (String, String) {
        (
            self.image(Resource::DaemonSets, "cce-cni-node-agent", "containers"),
            self.image(Resource::DaemonSets, "cce-cni-node-agent", "initContainers"),
        )
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Waits until the controllers have settled, so resourceVersions stand still.
    async fn settle(&self) {
        let mut last = self.sim.resource_version();
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let now = self.sim.resource_version();
            if now == last {
                return;
            }
            last = now;
        }
    }
}

#[track_caller]
fn refused(run: &Run, webhooks: &[String], needle: &str) {
    assert_eq!(
        run.code, 1,
        "expected a refusal:\nstdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let denied = |w: &String| {
        format!("admission webhook \"{w}\" denied the request: cce-cni-guard refused this change")
    };
    assert!(
        webhooks.iter().any(|w| run.stderr.contains(&denied(w))),
        "stderr lacks a denial by {webhooks:?}:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(needle),
        "stderr lacks {needle:?}:\n{}",
        run.stderr
    );
}

#[track_caller]
fn accepted(run: &Run) {
    assert_eq!(
        run.code, 0,
        "expected success:\nstdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
}

async fn every_write_path(version: &str) {
    let c = Cluster::start(version).await;
    let webhook = c.guard.as_ref().unwrap().webhook_names().to_vec();
    let ns = ["-n", "kube-system"];
    let v = |tag: &str| format!("{R}:{tag}");
    let before = c.agent_images();
    assert_eq!(before, (v("v1.9.3"), v("v1.9.3")));

    // set image: the typos the guard exists for.
    let run = c
        .kubectl(
            &[
                &ns[..],
                &[
                    "set",
                    "image",
                    "ds/cce-cni-node-agent",
                    &format!("cce-cni-node-agent={}", v("v1.9.4")),
                ],
            ]
            .concat(),
        )
        .await;
    refused(
        &run,
        &webhook,
        "install-cni-binary=registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4",
    );
    assert!(
        run.stderr
            .starts_with("error: failed to patch image update to pod template: admission webhook"),
        "{}",
        run.stderr
    );
    let run = c
        .kubectl(
            &[
                &ns[..],
                &[
                    "set",
                    "image",
                    "ds/cce-cni-node-agent",
                    &format!("*={}", v("v1.10.0")),
                ],
            ]
            .concat(),
        )
        .await;
    refused(&run, &webhook, "moves the minor version (1.9 → 1.10)");
    let run = c
        .kubectl(
            &[
                &ns[..],
                &[
                    "set",
                    "image",
                    "ds/cce-cni-node-agent",
                    &format!("*={}", v("v2.0.0")),
                ],
            ]
            .concat(),
        )
        .await;
    refused(&run, &webhook, "moves the major version (1 → 2)");
    let run = c
        .kubectl(
            &[
                &ns[..],
                &[
                    "set",
                    "image",
                    "ds/cce-cni-node-agent",
                    &format!("*={R}-arm64:v1.9.4"),
                ],
            ]
            .concat(),
        )
        .await;
    refused(&run, &webhook, "changes the repository");
    assert_eq!(c.agent_images(), before, "nothing refused was stored");

    // --dry-run=server: the same decision, and nothing stored either way.
    c.settle().await;
    let rv = c.sim.resource_version();
    let run = c
        .kubectl(
            &[
                &ns[..],
                &[
                    "set",
                    "image",
                    "ds/cce-cni-node-agent",
                    &format!("*={}", v("v1.10.0")),
                    "--dry-run=server",
                ],
            ]
            .concat(),
        )
        .await;
    refused(&run, &webhook, "moves the minor version");
    let run = c
        .kubectl(
            &[
                &ns[..],
                &[
                    "set",
                    "image",
                    "ds/cce-cni-node-agent",
                    &format!("*={}", v("v1.9.4")),
                    "--dry-run=server",
                ],
            ]
            .concat(),
        )
        .await;
    accepted(&run);
    assert!(run.stdout.contains("(server dry run)"), "{}", run.stdout);
    assert_eq!(c.sim.resource_version(), rv, "a dry run stores nothing");

    // The SOP's command, verbatim.
    let run = c
        .kubectl(
            &[
                &ns[..],
                &[
                    "set",
                    "image",
                    "daemonset/cce-cni-node-agent",
                    &format!("cce-cni-node-agent={}", v("v1.9.4")),
                    &format!("install-cni-binary={}", v("v1.9.4")),
                ],
            ]
            .concat(),
        )
        .await;
    accepted(&run);
    assert!(run.stderr.contains("Warning: cce-cni-guard: Deployment kube-system/cce-eni-ipam runs v1.9.3; bring it to v1.9.4 next"), "{}", run.stderr);
    assert_eq!(c.agent_images(), (v("v1.9.4"), v("v1.9.4")));

    // patch, all three types, on ipam.
    let run = c.kubectl(&[&ns[..], &["patch", "deploy", "cce-eni-ipam", "-p", &format!(r#"{{"spec":{{"template":{{"spec":{{"containers":[{{"name":"cce-eni-ipam","image":"{}"}}]}}}}}}}}"#, v("v1.10.0"))]].concat()).await;
    refused(&run, &webhook, "moves the minor version");
    assert!(
        run.stderr
            .starts_with("Error from server (Forbidden): admission webhook"),
        "{}",
        run.stderr
    );
    let run = c.kubectl(&[&ns[..], &["patch", "deploy", "cce-eni-ipam", "--type=json", "-p", &format!(r#"[{{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"{}"}}]"#, v("latest"))]].concat()).await;
    refused(&run, &webhook, "\"latest\" is not a version");
    let run = c
        .kubectl(
            &[
                &ns[..],
                &[
                    "patch",
                    "ds",
                    "cce-cni-node-agent",
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"labels":{"team":"network"}}}"#,
                ],
            ]
            .concat(),
        )
        .await;
    accepted(&run);
    let run = c.kubectl(&[&ns[..], &["patch", "deploy", "cce-eni-ipam", "--type=json", "-p", &format!(r#"[{{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"{}"}}]"#, v("v1.9.4"))]].concat()).await;
    accepted(&run);

    // apply of an edited manifest, replace, and edit.
    let yaml = c
        .kubectl(&[&ns[..], &["get", "ds", "cce-cni-node-agent", "-o", "yaml"]].concat())
        .await
        .stdout;
    let edited = yaml.replace(&v("v1.9.4"), &v("v1.11.0"));
    let file = c.file("edited.yaml", &edited);
    let run = c.kubectl(&["apply", "-f", file.to_str().unwrap()]).await;
    refused(&run, &webhook, "moves the minor version (1.9 → 1.11)");
    let run = c.kubectl(&["replace", "-f", file.to_str().unwrap()]).await;
    refused(&run, &webhook, "moves the minor version (1.9 → 1.11)");
    let script = c.file(
        "editor.sh",
        &format!(
            "#!/bin/sh\nsed -i 's#{}#{}#' \"$1\"\n",
            v("v1.9.4"),
            v("v1.10.2")
        ),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let run = c
        .kubectl_env(
            &[&ns[..], &["edit", "ds", "cce-cni-node-agent"]].concat(),
            &[("KUBE_EDITOR", script.to_str().unwrap())],
        )
        .await;
    refused(&run, &webhook, "moves the minor version (1.9 → 1.10)");
    assert!(
        run.stderr.contains("could not be patched"),
        "{}",
        run.stderr
    );
    assert_eq!(c.agent_images(), (v("v1.9.4"), v("v1.9.4")));

    // rollout undo to an earlier patch revision: a patch downgrade, allowed with a warning.
    let run = c
        .kubectl(
            &[
                &ns[..],
                &["rollout", "undo", "daemonset/cce-cni-node-agent"],
            ]
            .concat(),
        )
        .await;
    accepted(&run);
    assert!(run.stderr.contains("patch downgrade"), "{}", run.stderr);
    assert_eq!(c.agent_images(), (v("v1.9.3"), v("v1.9.3")));

    // An exempt identity may make a minor change; the response carries the warning.
    let context = "helm-operator@cce-sim";
    let run = c
        .kubectl(
            &[
                &ns[..],
                &[
                    "--context",
                    context,
                    "set",
                    "image",
                    "ds/cce-cni-node-agent",
                    &format!("*={}", v("v1.10.0")),
                ],
            ]
            .concat(),
        )
        .await;
    accepted(&run);
    assert!(
        run.stderr
            .contains("Warning: cce-cni-guard: exempted (user:helm-operator)"),
        "{}",
        run.stderr
    );

    // CREATE of a mismatched DaemonSet is refused.
    let mut ds: Value = serde_json::from_str(
        &c.kubectl(&[&ns[..], &["get", "ds", "cce-cni-node-agent", "-o", "json"]].concat())
            .await
            .stdout,
    )
    .unwrap();
    accepted(
        &c.kubectl(
            &[
                &ns[..],
                &["delete", "ds", "cce-cni-node-agent", "--wait=false"],
            ]
            .concat(),
        )
        .await,
    );
    for field in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
        "managedFields",
    ] {
        ds["metadata"].as_object_mut().unwrap().remove(field);
    }
    ds.as_object_mut().unwrap().remove("status");
    ds["spec"]["template"]["spec"]["containers"][0]["image"] = v("v1.10.1").into();
    let file = c.file("mismatched.json", &ds.to_string());
    let run = c.kubectl(&["create", "-f", file.to_str().unwrap()]).await;
    refused(
        &run,
        &webhook,
        "\"install-cni-binary\" runs registry.baidubce.com/cce-plugin-pro/cce-cni:v1.10.0",
    );

    // With the webhook stopped, guarded writes fail closed; other objects are unaffected.
    let mut c = c;
    c.guard.take().unwrap().stop().await;
    let run = c
        .kubectl(
            &[
                &ns[..],
                &["scale", "deploy", "cce-eni-ipam", "--replicas=3"],
            ]
            .concat(),
        )
        .await;
    accepted(&run);
    let run = c
        .kubectl(
            &[
                &ns[..],
                &[
                    "set",
                    "image",
                    "deploy/cce-eni-ipam",
                    &format!("cce-eni-ipam={}", v("v1.9.5")),
                ],
            ]
            .concat(),
        )
        .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("Internal error occurred: failed calling webhook"),
        "{}",
        run.stderr
    );
    let run = c
        .kubectl(
            &[
                &ns[..],
                &["create", "configmap", "unrelated", "--from-literal=a=b"],
            ]
            .concat(),
        )
        .await;
    accepted(&run);
    // The configuration scopes the two workloads only: another DaemonSet in kube-system and a
    // Deployment in the guard's own namespace are never sent to the (stopped) webhook.
    let masq = c.file(
        "masq.yaml",
        &daemonset_yaml("kube-system", "cce-ip-masq-agent"),
    );
    accepted(&c.kubectl(&["create", "-f", masq.to_str().unwrap()]).await);
    let own = c.file(
        "own.yaml",
        &deployment_yaml(GUARD_NAMESPACE, "cce-cni-guard"),
    );
    accepted(&c.kubectl(&["create", "-f", own.to_str().unwrap()]).await);
    if version != "1.27" {
        // With matchConditions even other Deployments of kube-system are out of scope (the
        // pre-1.30 fallback cannot narrow ipam by labels, which upstream's ipam lacks).
        let coredns = c.file("coredns.yaml", &deployment_yaml("kube-system", "coredns"));
        accepted(
            &c.kubectl(&["create", "-f", coredns.to_str().unwrap()])
                .await,
        );
    }
    let _ = GUARD_USER;
    c.sim.shutdown().await;
}

/// Before 1.30 the webhook entry finds the agent by its label. An update that drops the label
/// is the last one the entry would see: the guard refuses it on every write path that can
/// drop it, and the workload stays guarded.
async fn the_label_the_entry_selects_by_is_kept(version: &str) {
    let c = Cluster::start(version).await;
    let webhook = c.guard.as_ref().unwrap().webhook_names().to_vec();
    let ds = ["-n", "kube-system", "label", "ds/cce-cni-node-agent"];
    let needle = "no longer satisfy k8s-app=cce-cni-node-agent";
    let run = c.kubectl(&[&ds[..], &["k8s-app-"]].concat()).await;
    refused(&run, &webhook, needle);
    assert!(run.stderr.contains("[rule labels-kept:"), "{}", run.stderr);
    let run = c
        .kubectl(&[&ds[..], &["k8s-app=renamed", "--overwrite"]].concat())
        .await;
    refused(&run, &webhook, needle);
    let run = c
        .kubectl(&[
            "-n",
            "kube-system",
            "patch",
            "ds/cce-cni-node-agent",
            "--type=json",
            "-p",
            r#"[{"op": "remove", "path": "/metadata/labels"}]"#,
        ])
        .await;
    refused(&run, &webhook, needle);
    let labels = |c: &Cluster| {
        c.sim
            .get(
                Resource::DaemonSets,
                Some("kube-system"),
                "cce-cni-node-agent",
            )
            .unwrap()["metadata"]["labels"]
            .clone()
    };
    assert_eq!(labels(&c)["k8s-app"], "cce-cni-node-agent");
    // Other labels are free, and the workload is still guarded afterwards.
    accepted(&c.kubectl(&[&ds[..], &["team=network"]].concat()).await);
    let run = c
        .kubectl(&[
            "-n",
            "kube-system",
            "set",
            "image",
            "ds/cce-cni-node-agent",
            &format!("*={R}:v1.10.0"),
        ])
        .await;
    refused(&run, &webhook, "moves the minor version (1.9 → 1.10)");
    // An exempted identity (the CNI's helm) may take the label away, with a warning.
    let run = c
        .kubectl(
            &[
                &["--context", "helm-operator@cce-sim"][..],
                &ds[..],
                &["k8s-app-"],
            ]
            .concat(),
        )
        .await;
    accepted(&run);
    assert!(
        run.stderr.contains("exempted (user:helm-operator)") && run.stderr.contains("labels-kept"),
        "{}",
        run.stderr
    );
    assert!(labels(&c).get("k8s-app").is_none());
    c.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_label_the_selector_fallback_needs_is_kept_1_29() {
    if kubectl_available() {
        the_label_the_entry_selects_by_is_kept("1.29").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_label_is_kept_with_match_conditions_too_1_33() {
    if kubectl_available() {
        the_label_the_entry_selects_by_is_kept("1.33").await;
    }
}

fn daemonset_yaml(namespace: &str, name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers: [{{name: c, image: \"{R}:v1.9.3\"}}]\n"
    )
}

fn deployment_yaml(namespace: &str, name: &str) -> String {
    daemonset_yaml(namespace, name).replace("kind: DaemonSet", "kind: Deployment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_the_sim_cannot_evaluate_is_refused_at_registration() {
    if !kubectl_available() {
        return;
    }
    let c = Cluster::start("1.33").await;
    let file = c.file(
        "vwc.yaml",
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {name: other}\nwebhooks:\n- name: other.example.com\n  admissionReviewVersions: [v1]\n  sideEffects: None\n  clientConfig: {url: \"https://127.0.0.1:9/validate\"}\n  rules: [{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [configmaps]}]\n  matchConditions:\n  - {name: authz, expression: \"authorizer.group('').resource('configmaps').check('create').allowed()\"}\n",
    );
    let run = c.kubectl(&["create", "-f", file.to_str().unwrap()]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("Invalid"), "{}", run.stderr);
    assert!(
        run.stderr.contains("undeclared reference to 'authorizer'"),
        "{}",
        run.stderr
    );
    c.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_path_with_match_conditions_1_33() {
    if kubectl_available() {
        every_write_path("1.33").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_path_with_the_selector_fallback_1_27() {
    if kubectl_available() {
        every_write_path("1.27").await;
    }
}
