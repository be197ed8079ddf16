//! Test bed for the upgrader: the simulated cluster in-process, the real binary as a child
//! process (so the crash hook can kill it), and readers of what the sim stores.

#![allow(dead_code)]

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cce_cni_guard::policy::{
    Config, Operation, PodTemplateImages, Request, SiblingLookup, SiblingState, UserIdentity,
    WorkloadKind, decide,
};
use cce_cni_guard::sim::model::Resource;
use cce_cni_guard::sim::server::admission::{
    AdmissionHook, AdmissionRequest, AdmissionVerdict, Operation as SimOperation,
};
use cce_cni_guard::sim::{Sim, SimHandle, SimOptions};
use futures::future::BoxFuture;
use serde_json::{Value, json};

pub const NS: &str = "kube-system";
pub const AGENT: &str = "cce-cni-node-agent";
pub const IPAM: &str = "cce-eni-ipam";
pub const REPO: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni";
pub const USER_AGENT_PREFIX: &str = "cce-cni-guard/";

/// Flags that keep test runs short: a short lease so a rerun can take over a dead
/// upgrader's lock, and a quick remedy.
pub const FAST: &[&str] = &[
    "--stuck-after",
    "1s",
    "--lease-duration",
    "2",
    "--lock-wait",
    "20s",
    "--timeout",
    "90s",
    "--ipam-timeout",
    "90s",
    "--progress-every",
    "5s",
];

pub struct Env {
    pub sim: SimHandle,
    pub kubeconfig: PathBuf,
    /// Every judgement the guard's policy made on a workload write: (allowed, message).
    pub judged: Arc<Mutex<Vec<(bool, String)>>>,
    _dir: tempfile::TempDir,
}

/// The guard's policy as the sim's admission hook: every write of a guarded workload is
/// judged by `policy::decide` with the other workload (as stored) as the sibling, so a
/// write the guard would refuse fails as it would on a cluster with the webhook registered.
struct PolicyGuard {
    sim: Mutex<Option<SimHandle>>,
    judged: Arc<Mutex<Vec<(bool, String)>>>,
}

struct StoredSiblings(Option<SimHandle>);

impl SiblingLookup for StoredSiblings {
    fn sibling(&self, workload: &cce_cni_guard::policy::GuardedWorkload) -> SiblingState {
        let Some(sim) = &self.0 else {
            return SiblingState::Unknown;
        };
        let resource = match workload.kind {
            WorkloadKind::DaemonSet => Resource::DaemonSets,
            WorkloadKind::Deployment => Resource::Deployments,
        };
        match sim.get(resource, Some(&workload.namespace), &workload.name) {
            None => SiblingState::Absent,
            Some(object) => PodTemplateImages::from_workload(&object)
                .map(SiblingState::Present)
                .unwrap_or(SiblingState::Unknown),
        }
    }
}

impl AdmissionHook for PolicyGuard {
    fn admit(&self, request: AdmissionRequest) -> BoxFuture<'static, AdmissionVerdict> {
        let sim = self.sim.lock().unwrap().clone();
        let judged = self.judged.clone();
        Box::pin(async move {
            let operation = match request.operation {
                SimOperation::Create => Operation::Create,
                SimOperation::Update => Operation::Update,
                SimOperation::Delete => Operation::Delete,
            };
            let new = request
                .object
                .as_ref()
                .map(PodTemplateImages::from_workload);
            let old = request
                .old_object
                .as_ref()
                .map(PodTemplateImages::from_workload);
            let user = UserIdentity {
                username: request.user.username.clone(),
                groups: request.user.groups.clone(),
            };
            let decision = decide(
                &Request {
                    operation,
                    group: &request.group,
                    kind: &request.kind,
                    sub_resource: request.subresource.as_deref(),
                    namespace: request.namespace.as_deref().unwrap_or(""),
                    name: &request.name,
                    object: new.as_ref().map(|r| r.as_ref()),
                    old_object: old.as_ref().map(|r| r.as_ref()),
                    user: &user,
                },
                &StoredSiblings(sim),
                &Config::default(),
            );
            if decision.workload.is_none() {
                return AdmissionVerdict::allow();
            }
            judged
                .lock()
                .unwrap()
                .push((decision.allowed(), decision.message.clone()));
            if decision.allowed() {
                AdmissionVerdict::Allow {
                    warnings: decision.warnings,
                }
            } else {
                AdmissionVerdict::Deny {
                    status: json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "Forbidden", "code": 403,
                        "message": format!("admission webhook \"cce-cni-guard.cce.baidubce.com\" denied the request: {}", decision.message)}),
                    warnings: decision.warnings,
                }
            }
        })
    }
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

pub fn image(tag: &str) -> String {
    format!("{REPO}:{tag}")
}

impl Env {
    pub async fn start(tweak: impl FnOnce(&mut SimOptions)) -> Self {
        cce_cni_guard::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let mut options = SimOptions {
            kubeconfig: Some(kubeconfig.clone()),
            ..SimOptions::default()
        };
        options.behaviour.pod_ready_delay = Duration::from_millis(30);
        tweak(&mut options);
        let sim = Sim::start(options).await.unwrap();
        sim.settle().await;
        let judged = Arc::new(Mutex::new(Vec::new()));
        sim.set_admission_hook(Some(Arc::new(PolicyGuard {
            sim: Mutex::new(Some(sim.clone())),
            judged: judged.clone(),
        })));
        Self {
            sim,
            kubeconfig,
            judged,
            _dir: dir,
        }
    }

    /// A kube client as the sim's admin.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// The guard judged at least `n` workload writes and refused none of them.
    pub fn assert_guard_allowed_all(&self, n: usize) {
        let judged = self.judged.lock().unwrap();
        let denied: Vec<&String> = judged.iter().filter(|(a, _)| !a).map(|(_, m)| m).collect();
        assert!(denied.is_empty(), "the guard refused: {denied:?}");
        assert!(
            judged.len() >= n,
            "the guard judged only {} writes",
            judged.len()
        );
    }

    /// Runs the binary with `args`, the sim's kubeconfig and `env`; nothing leaks in from the
    /// outer environment's `CCE_GUARD_*` variables.
    pub async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        self.run_within(Duration::from_secs(300), args, env).await
    }

    pub async fn run_within(&self, limit: Duration, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cce-cni-guard"));
        for (key, _) in std::env::vars() {
            if key.starts_with("CCE_GUARD_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("CCE_GUARD_LOG", "warn")
            .envs(env.iter().copied())
            .kill_on_drop(true);
        let out = tokio::time::timeout(limit, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("the command did not finish within {limit:?}"))
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `upgrade` with the fast flags.
    pub async fn upgrade(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut all = vec!["upgrade"];
        all.extend_from_slice(args);
        all.extend_from_slice(FAST);
        self.run(&all, env).await
    }

    /// `rollback` with the fast flags.
    pub async fn rollback(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut all = vec!["rollback"];
        all.extend_from_slice(args);
        all.extend_from_slice(FAST);
        self.run(&all, env).await
    }

    pub fn get(&self, resource: Resource, name: &str) -> Value {
        self.sim
            .get(resource, Some(NS), name)
            .map(|o| (*o).clone())
            .unwrap_or(Value::Null)
    }

    /// Every guarded image of both workloads: (agent images, ipam images).
    pub fn images(&self) -> (Vec<String>, Vec<String>) {
        let read = |object: &Value, names: &[&str]| -> Vec<String> {
            let spec = &object["spec"]["template"]["spec"];
            let mut out = Vec::new();
            for list in ["initContainers", "containers"] {
                for c in spec[list].as_array().into_iter().flatten() {
                    if names.contains(&c["name"].as_str().unwrap_or("")) {
                        out.push(c["image"].as_str().unwrap_or("").to_owned());
                    }
                }
            }
            out
        };
        (
            read(
                &self.get(Resource::DaemonSets, AGENT),
                &["cce-cni-node-agent", "install-cni-binary"],
            ),
            read(&self.get(Resource::Deployments, IPAM), &["cce-eni-ipam"]),
        )
    }

    pub fn assert_images(&self, agent_tag: &str, ipam_tag: &str) {
        let (agent, ipam) = self.images();
        assert_eq!(agent, vec![image(agent_tag); 2], "agent images");
        assert_eq!(ipam, vec![image(ipam_tag)], "ipam images");
    }

    pub fn resource_version(&self, resource: Resource, name: &str) -> String {
        self.get(resource, name)["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// The upgrader's requests that change something.
    pub fn upgrader_writes(&self) -> Vec<String> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.user_agent.starts_with(USER_AGENT_PREFIX) && r.method != "GET")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    pub fn upgrader_requests(&self) -> u64 {
        self.sim.request_count_by_user_agent(USER_AGENT_PREFIX)
    }

    /// Reasons of the Events `cce-cni-guard` recorded on `kind`.
    pub fn event_reasons(&self, kind: &str) -> Vec<String> {
        self.sim
            .list(Resource::Events, Some(NS))
            .iter()
            .filter(|e| {
                e["source"]["component"] == "cce-cni-guard" && e["involvedObject"]["kind"] == kind
            })
            .filter_map(|e| e["reason"].as_str().map(str::to_owned))
            .collect()
    }

    /// The upgrade record in the Lease, if any.
    pub fn record(&self) -> Value {
        let lease = self.get(Resource::Leases, "cce-cni-guard-upgrade");
        lease["metadata"]["annotations"]["cce-cni-guard.cce.baidubce.com/upgrade-record"]
            .as_str()
            .map(|t| serde_json::from_str(t).unwrap())
            .unwrap_or(Value::Null)
    }

    pub fn controller_revisions(&self) -> usize {
        self.sim
            .list(Resource::ControllerRevisions, Some(NS))
            .iter()
            .filter(|c| c["metadata"]["labels"]["name"] == AGENT)
            .count()
    }

    pub fn deployment_revision(&self) -> String {
        self.get(Resource::Deployments, IPAM)["metadata"]["annotations"]
            ["deployment.kubernetes.io/revision"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}
