//! The real kubectl (1.27, 1.30 and 1.33, picked by the dispatcher from `/version`) against the
//! simulated cluster: the SOP's commands verbatim, plus patch, replace, apply, edit, scale,
//! server dry runs, create/delete and a bad token.

use std::path::PathBuf;
use std::process::Output;

use cce_cni_guard::sim::model::Resource;
use cce_cni_guard::sim::{Sim, SimHandle, SimOptions};
use serde_json::{Value, json};

const NS: &str = "kube-system";
const IMAGE: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni";

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
        eprintln!("\n*** SKIPPING kubectl tests: kubectl is not on the PATH ***\n");
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

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Kubectl {
    /// Runs kubectl with a fresh cache dir, so each command does discovery like a cold client.
    async fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
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
        command.output().await.unwrap().into()
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[]).await
    }

    /// Runs and requires success, returning stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert_eq!(
            run.code, 0,
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            run.stdout, run.stderr
        );
        run.stdout
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn agent_configmap() -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cce-cni-node-agent", "namespace": NS},
        "data": {"cce-cni-node-agent.yaml": "cniMode: vpc-secondary-ip-auto-detect\n"}})
}

fn agent_daemonset() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "cce-cni-node-agent", "namespace": NS},
        "spec": {"selector": {"matchLabels": {"name": "cce-cni-node-agent"}},
            "template": {"metadata": {"labels": {"name": "cce-cni-node-agent"}},
                "spec": {"hostNetwork": true, "tolerations": [{"operator": "Exists"}],
                    "initContainers": [{"name": "install-cni-binary", "image": format!("{IMAGE}:v1.9.3"),
                        "imagePullPolicy": "Always"}],
                    "containers": [{"name": "cce-cni-node-agent", "image": format!("{IMAGE}:v1.9.3"),
                        "imagePullPolicy": "Always"}]}}}})
}

fn ipam_deployment() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cce-eni-ipam", "namespace": NS},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "cce-eni-ipam"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": {"app": "cce-eni-ipam"}},
                "spec": {"hostNetwork": true, "nodeSelector": {"cluster-role": "master"},
                    "containers": [{"name": "cce-eni-ipam", "image": format!("{IMAGE}:v1.9.3"),
                        "ports": [{"containerPort": 9997}, {"containerPort": 9998}]}]}}}})
}

/// Starts a sim claiming `version`, with the CCE v1 workloads present.
async fn start(version: &str) -> (SimHandle, Kubectl) {
    cce_cni_guard::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let handle = Sim::start(SimOptions {
        kubeconfig: Some(kubeconfig.clone()),
        k8s_version: version.parse().unwrap(),
        // Controllers settle at once, so a settled store stays still between commands.
        behaviour: cce_cni_guard::sim::model::Behaviour {
            pod_ready_delay: std::time::Duration::ZERO,
            ..Default::default()
        },
        ..SimOptions::default()
    })
    .await
    .unwrap();
    for (resource, name, object) in [
        (
            Resource::ConfigMaps,
            "cce-cni-node-agent",
            agent_configmap(),
        ),
        (
            Resource::DaemonSets,
            "cce-cni-node-agent",
            agent_daemonset(),
        ),
        (Resource::Deployments, "cce-eni-ipam", ipam_deployment()),
    ] {
        if handle.get(resource, Some(NS), name).is_none() {
            handle.create(resource, object).await.unwrap();
        }
    }
    handle.settle().await;
    (handle, Kubectl { kubeconfig, dir })
}

fn image_of(
    handle: &SimHandle,
    resource: Resource,
    name: &str,
    list: &str,
    container: &str,
) -> String {
    let object = handle.get(resource, Some(NS), name).unwrap();
    object["spec"]["template"]["spec"][list]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == container)
        .unwrap()["image"]
        .as_str()
        .unwrap()
        .to_string()
}

fn replicas(handle: &SimHandle) -> i64 {
    handle
        .get(Resource::Deployments, Some(NS), "cce-eni-ipam")
        .unwrap()["spec"]["replicas"]
        .as_i64()
        .unwrap()
}

async fn get_and_output_formats(handle: &SimHandle, k: &Kubectl, minor: u32) {
    let out = k.ok(&["-n", NS, "get", "cm", "cce-cni-node-agent"]).await;
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "DATA", "AGE"], "{out}");
    assert_eq!(lines[1][..2], ["cce-cni-node-agent", "1"], "{out}");
    // The dispatcher ran the kubectl matching the server's minor version.
    let agents: Vec<String> = handle
        .requests()
        .iter()
        .map(|r| r.user_agent.clone())
        .filter(|ua| ua.starts_with("kubectl/"))
        .collect();
    assert!(
        agents
            .iter()
            .all(|ua| ua.starts_with(&format!("kubectl/v1.{minor}."))),
        "{agents:?}"
    );
    let table = handle.requests().iter().any(|r| {
        r.path == "/api/v1/namespaces/kube-system/configmaps/cce-cni-node-agent" && r.status == 200
    });
    assert!(table);
    for args in [
        ["get", "ds", "cce-cni-node-agent"],
        ["get", "deploy", "cce-eni-ipam"],
    ] {
        let out = k.ok(&["-n", NS, args[0], args[1], args[2]]).await;
        assert!(out.contains(args[2]), "{out}");
    }
    for kind in [
        "ds",
        "deploy",
        "pods",
        "events",
        "rs",
        "controllerrevisions",
        "nodes",
        "ns",
        "svc",
    ] {
        let run = k.run(&["-n", NS, "get", kind]).await;
        assert_eq!(run.code, 0, "get {kind}: {}", run.stderr);
    }
    let yaml = k
        .ok(&["-n", NS, "get", "ds", "cce-cni-node-agent", "-o", "yaml"])
        .await;
    assert!(yaml.contains("kind: DaemonSet"), "{yaml}");
    assert!(
        yaml.contains("type: RollingUpdate"),
        "defaulted updateStrategy: {yaml}"
    );
    assert!(yaml.contains("generation: 1"), "{yaml}");
    let jsonpath = k
        .ok(&[
            "-n",
            NS,
            "get",
            "deploy",
            "cce-eni-ipam",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}",
        ])
        .await;
    assert_eq!(jsonpath, format!("3 {IMAGE}:v1.9.3"));
    let run = k.run(&["-n", NS, "get", "foo"]).await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains("the server doesn't have a resource type \"foo\""),
        "{}",
        run.stderr
    );
    let run = k.run(&["-n", NS, "get", "deploy", "nosuch"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("Error from server (NotFound): deployments.apps \"nosuch\" not found"),
        "{}",
        run.stderr
    );
}

async fn set_image_on_both_workloads(handle: &SimHandle, k: &Kubectl) {
    let v194 = format!("{IMAGE}:v1.9.4");
    let out = k
        .ok(&[
            "-n",
            NS,
            "set",
            "image",
            "daemonset/cce-cni-node-agent",
            &format!("cce-cni-node-agent={v194}"),
            &format!("install-cni-binary={v194}"),
        ])
        .await;
    assert_eq!(
        out.trim(),
        "daemonset.apps/cce-cni-node-agent image updated"
    );
    for (list, container) in [
        ("containers", "cce-cni-node-agent"),
        ("initContainers", "install-cni-binary"),
    ] {
        assert_eq!(
            image_of(
                handle,
                Resource::DaemonSets,
                "cce-cni-node-agent",
                list,
                container
            ),
            v194
        );
    }
    let ds = handle
        .get(Resource::DaemonSets, Some(NS), "cce-cni-node-agent")
        .unwrap();
    assert_eq!(ds["metadata"]["generation"], 2);
    // The same images again: kubectl sends no PATCH and prints nothing.
    let out = k
        .ok(&[
            "-n",
            NS,
            "set",
            "image",
            "ds/cce-cni-node-agent",
            &format!("cce-cni-node-agent={v194}"),
        ])
        .await;
    assert_eq!(out.trim(), "");
    let out = k
        .ok(&[
            "-n",
            NS,
            "set",
            "image",
            "deployment/cce-eni-ipam",
            &format!("cce-eni-ipam={v194}"),
        ])
        .await;
    assert_eq!(out.trim(), "deployment.apps/cce-eni-ipam image updated");
    assert_eq!(
        image_of(
            handle,
            Resource::Deployments,
            "cce-eni-ipam",
            "containers",
            "cce-eni-ipam"
        ),
        v194
    );
    let run = k
        .run(&[
            "-n",
            NS,
            "set",
            "image",
            "ds/cce-cni-node-agent",
            "nosuch=x:1",
        ])
        .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("unable to find container named \"nosuch\""),
        "{}",
        run.stderr
    );
}

async fn patches(handle: &SimHandle, k: &Kubectl) {
    // `patched (no change)` compares with the GET: no controller write may come in between.
    handle.settle().await;
    let p = r#"{"metadata":{"annotations":{"cce.example/note":"a"}}}"#;
    let out = k
        .ok(&["-n", NS, "patch", "deploy", "cce-eni-ipam", "-p", p])
        .await;
    assert_eq!(out.trim(), "deployment.apps/cce-eni-ipam patched");
    let out = k
        .ok(&["-n", NS, "patch", "deploy", "cce-eni-ipam", "-p", p])
        .await;
    assert_eq!(
        out.trim(),
        "deployment.apps/cce-eni-ipam patched (no change)"
    );
    let out = k
        .ok(&[
            "-n",
            NS,
            "patch",
            "deploy",
            "cce-eni-ipam",
            "--type=merge",
            "-p",
            r#"{"metadata":{"annotations":{"cce.example/note":"b"}}}"#,
        ])
        .await;
    assert_eq!(out.trim(), "deployment.apps/cce-eni-ipam patched");
    let out = k
        .ok(&[
            "-n",
            NS,
            "patch",
            "deploy",
            "cce-eni-ipam",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/metadata/annotations/cce.example~1note","value":"c"}]"#,
        ])
        .await;
    assert_eq!(out.trim(), "deployment.apps/cce-eni-ipam patched");
    let d = handle
        .get(Resource::Deployments, Some(NS), "cce-eni-ipam")
        .unwrap();
    assert_eq!(d["metadata"]["annotations"]["cce.example/note"], "c");
    let run = k
        .run(&[
            "-n",
            NS,
            "patch",
            "deploy",
            "cce-eni-ipam",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/nosuch/x","value":1}]"#,
        ])
        .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("The request is invalid"),
        "{}",
        run.stderr
    );
    // A strategic patch of the DaemonSet's initContainers merges by name.
    let out = k
        .ok(&[
            "-n",
            NS,
            "patch",
            "ds",
            "cce-cni-node-agent",
            "-p",
            &format!(
                r#"{{"spec":{{"template":{{"spec":{{"initContainers":[{{"name":"install-cni-binary","image":"{IMAGE}:v1.9.3"}}]}}}}}}}}"#
            ),
        ])
        .await;
    assert_eq!(out.trim(), "daemonset.apps/cce-cni-node-agent patched");
    assert_eq!(
        image_of(
            handle,
            Resource::DaemonSets,
            "cce-cni-node-agent",
            "initContainers",
            "install-cni-binary"
        ),
        format!("{IMAGE}:v1.9.3")
    );
    assert_eq!(
        image_of(
            handle,
            Resource::DaemonSets,
            "cce-cni-node-agent",
            "containers",
            "cce-cni-node-agent"
        ),
        format!("{IMAGE}:v1.9.4")
    );
}

async fn replace_apply_and_edit(handle: &SimHandle, k: &Kubectl) {
    // The controllers may write the Deployment's status between the get and the replace, as
    // on a real cluster; a fresh copy is then fetched again.
    let path = k.dir.path().join("ipam-replace.yaml");
    let file = path.to_str().unwrap();
    let mut replaced = false;
    for _ in 0..5 {
        handle.settle().await;
        let yaml = k
            .ok(&["-n", NS, "get", "deploy", "cce-eni-ipam", "-o", "yaml"])
            .await;
        let edited = yaml.replace(&format!("{IMAGE}:v1.9.4"), &format!("{IMAGE}:v1.9.5"));
        std::fs::write(&path, edited).unwrap();
        let run = k.run(&["-n", NS, "replace", "-f", file]).await;
        if run.code == 0 {
            assert_eq!(run.stdout.trim(), "deployment.apps/cce-eni-ipam replaced");
            replaced = true;
            break;
        }
        assert!(run.stderr.contains("(Conflict)"), "{}", run.stderr);
    }
    assert!(replaced, "replace -f kept conflicting");
    assert_eq!(
        image_of(
            handle,
            Resource::Deployments,
            "cce-eni-ipam",
            "containers",
            "cce-eni-ipam"
        ),
        format!("{IMAGE}:v1.9.5")
    );
    // The same file again carries a stale resourceVersion.
    let run = k.run(&["-n", NS, "replace", "-f", file]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "Error from server (Conflict): error when replacing \"{file}\": Operation cannot be fulfilled on deployments.apps \"cce-eni-ipam\": the object has been modified; please apply your changes to the latest version and try again"
        )),
        "{}",
        run.stderr
    );

    // apply -f of an edited manifest (our own, without status or resourceVersion).
    let mut manifest = ipam_deployment();
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!(format!("{IMAGE}:v1.9.6"));
    let file = k.file("ipam-apply.json", &manifest.to_string());
    let file = file.to_str().unwrap();
    let run = k.run(&["-n", NS, "apply", "-f", file]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "deployment.apps/cce-eni-ipam configured");
    assert!(
        run.stderr
            .contains("missing the kubectl.kubernetes.io/last-applied-configuration annotation"),
        "{}",
        run.stderr
    );
    assert_eq!(
        image_of(
            handle,
            Resource::Deployments,
            "cce-eni-ipam",
            "containers",
            "cce-eni-ipam"
        ),
        format!("{IMAGE}:v1.9.6")
    );
    let out = k.ok(&["-n", NS, "apply", "-f", file]).await;
    assert_eq!(out.trim(), "deployment.apps/cce-eni-ipam unchanged");
    let new_cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "wire-test", "namespace": NS}, "data": {"a": "b"}});
    let file = k.file("cm-apply.json", &new_cm.to_string());
    let out = k
        .ok(&["-n", NS, "apply", "-f", file.to_str().unwrap()])
        .await;
    assert_eq!(out.trim(), "configmap/wire-test created");
    assert!(
        handle
            .get(Resource::ConfigMaps, Some(NS), "wire-test")
            .is_some()
    );

    // edit with a scripted editor.
    let editor = k.file(
        "editor.sh",
        &format!("#!/bin/sh\nsed -i 's#{IMAGE}:v1.9.6#{IMAGE}:v1.9.7#' \"$1\"\n"),
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let run = k
        .run_with(
            &["-n", NS, "edit", "deploy", "cce-eni-ipam"],
            &[("KUBE_EDITOR", editor.to_str().unwrap())],
        )
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "deployment.apps/cce-eni-ipam edited");
    assert_eq!(
        image_of(
            handle,
            Resource::Deployments,
            "cce-eni-ipam",
            "containers",
            "cce-eni-ipam"
        ),
        format!("{IMAGE}:v1.9.7")
    );
}

async fn scale_and_dry_runs(handle: &SimHandle, k: &Kubectl) {
    let out = k
        .ok(&["-n", NS, "scale", "deploy", "cce-eni-ipam", "--replicas=0"])
        .await;
    assert_eq!(out.trim(), "deployment.apps/cce-eni-ipam scaled");
    assert_eq!(replicas(handle), 0);
    let out = k
        .ok(&["-n", NS, "scale", "deploy", "cce-eni-ipam", "--replicas=3"])
        .await;
    assert_eq!(out.trim(), "deployment.apps/cce-eni-ipam scaled");
    assert_eq!(replicas(handle), 3);
    // The precondition form: GET /scale, then a PUT without a Content-Type.
    let out = k
        .ok(&[
            "-n",
            NS,
            "scale",
            "deploy",
            "cce-eni-ipam",
            "--current-replicas=3",
            "--replicas=2",
        ])
        .await;
    assert_eq!(out.trim(), "deployment.apps/cce-eni-ipam scaled");
    assert_eq!(replicas(handle), 2);

    let out = k
        .ok(&[
            "-n",
            NS,
            "scale",
            "deploy",
            "cce-eni-ipam",
            "--replicas=5",
            "--dry-run=server",
        ])
        .await;
    assert_eq!(
        out.trim(),
        "deployment.apps/cce-eni-ipam scaled (server dry run)"
    );
    let out = k
        .ok(&[
            "-n",
            NS,
            "set",
            "image",
            "ds/cce-cni-node-agent",
            &format!("cce-cni-node-agent={IMAGE}:v1.9.9"),
            "--dry-run=server",
        ])
        .await;
    assert_eq!(
        out.trim(),
        "daemonset.apps/cce-cni-node-agent image updated (server dry run)"
    );
    let out = k
        .ok(&[
            "-n",
            NS,
            "create",
            "cm",
            "dry-cm",
            "--from-literal=a=b",
            "--dry-run=server",
        ])
        .await;
    assert_eq!(out.trim(), "configmap/dry-cm created (server dry run)");
    // Server dry runs store nothing.
    assert_eq!(replicas(handle), 2);
    assert_ne!(
        image_of(
            handle,
            Resource::DaemonSets,
            "cce-cni-node-agent",
            "containers",
            "cce-cni-node-agent"
        ),
        format!("{IMAGE}:v1.9.9")
    );
    assert!(
        handle
            .get(Resource::ConfigMaps, Some(NS), "dry-cm")
            .is_none()
    );
}

async fn create_delete_and_auth(handle: &SimHandle, k: &Kubectl) {
    let out = k
        .ok(&["-n", NS, "create", "cm", "scratch", "--from-literal=a=b"])
        .await;
    assert_eq!(out.trim(), "configmap/scratch created");
    let run = k
        .run(&["-n", NS, "create", "cm", "scratch", "--from-literal=a=b"])
        .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("configmaps \"scratch\" already exists"),
        "{}",
        run.stderr
    );
    let out = k.ok(&["-n", NS, "delete", "cm", "scratch"]).await;
    assert_eq!(out.trim(), "configmap \"scratch\" deleted");
    assert!(
        handle
            .get(Resource::ConfigMaps, Some(NS), "scratch")
            .is_none()
    );
    let run = k.run(&["-n", NS, "delete", "cm", "scratch"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("Error from server (NotFound): configmaps \"scratch\" not found"),
        "{}",
        run.stderr
    );
    let run = k
        .run(&[
            "--token",
            "not-a-valid-token",
            "-n",
            NS,
            "get",
            "cm",
            "cce-cni-node-agent",
        ])
        .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("You must be logged in to the server")
            || run.stderr.contains("Unauthorized"),
        "{}",
        run.stderr
    );
    assert!(handle.requests().iter().any(|r| r.status == 401));
}

/// Denies images tagged `:bad`; warns about every other DaemonSet write.
struct Guard;

impl cce_cni_guard::sim::server::AdmissionHook for Guard {
    fn admit(
        &self,
        request: cce_cni_guard::sim::server::AdmissionRequest,
    ) -> futures::future::BoxFuture<'static, cce_cni_guard::sim::server::AdmissionVerdict> {
        use cce_cni_guard::sim::server::AdmissionVerdict;
        let verdict = if request.user.username != "admin" || request.plural != "daemonsets" {
            AdmissionVerdict::allow()
        } else if request
            .object
            .as_ref()
            .is_some_and(|o| o.to_string().contains(":bad\""))
        {
            AdmissionVerdict::Deny {
                status: json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "Forbidden", "code": 403,
                    "message": "admission webhook \"cce-cni-guard.cce.baidubce.com\" denied the request: images must be consistent"}),
                warnings: Vec::new(),
            }
        } else {
            AdmissionVerdict::Allow {
                warnings: vec!["cce-cni-guard: this is an admission warning".into()],
            }
        };
        Box::pin(async move { verdict })
    }
}

async fn admission_warnings_and_denials(handle: &SimHandle, k: &Kubectl) {
    handle.set_admission_hook(Some(std::sync::Arc::new(Guard)));
    let run = k
        .run(&[
            "-n",
            NS,
            "set",
            "image",
            "ds/cce-cni-node-agent",
            &format!("cce-cni-node-agent={IMAGE}:v1.9.8"),
        ])
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("Warning: cce-cni-guard: this is an admission warning"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stdout.trim(),
        "daemonset.apps/cce-cni-node-agent image updated"
    );
    let run = k
        .run(&[
            "-n",
            NS,
            "set",
            "image",
            "ds/cce-cni-node-agent",
            &format!("cce-cni-node-agent={IMAGE}:bad"),
        ])
        .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(
            "error: failed to patch image update to pod template: admission webhook \"cce-cni-guard.cce.baidubce.com\" denied the request: images must be consistent"
        ),
        "{}",
        run.stderr
    );
    let run = k
        .run(&[
            "-n",
            NS,
            "patch",
            "ds",
            "cce-cni-node-agent",
            "-p",
            &format!(
                r#"{{"spec":{{"template":{{"spec":{{"containers":[{{"name":"cce-cni-node-agent","image":"{IMAGE}:bad"}}]}}}}}}}}"#
            ),
        ])
        .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(
            "Error from server (Forbidden): admission webhook \"cce-cni-guard.cce.baidubce.com\" denied the request: images must be consistent"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(
        image_of(
            handle,
            Resource::DaemonSets,
            "cce-cni-node-agent",
            "containers",
            "cce-cni-node-agent"
        ),
        format!("{IMAGE}:v1.9.8")
    );
    handle.set_admission_hook(None);
}

async fn sop_against(version: &str) {
    if !kubectl_available() {
        return;
    }
    let (handle, k) = start(version).await;
    let minor: u32 = version.trim_start_matches("1.").parse().unwrap();
    get_and_output_formats(&handle, &k, minor).await;
    set_image_on_both_workloads(&handle, &k).await;
    patches(&handle, &k).await;
    replace_apply_and_edit(&handle, &k).await;
    scale_and_dry_runs(&handle, &k).await;
    create_delete_and_auth(&handle, &k).await;
    admission_warnings_and_denials(&handle, &k).await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27() {
    sop_against("1.27").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_30() {
    sop_against("1.30").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33() {
    sop_against("1.33").await;
}
