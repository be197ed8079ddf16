//! Test bed for the upgrader: the simulated cluster in-process, the real binary as a child
//! process (so the crash hook can kill it), and readers of what the sim stores.

#![allow(dead_code)]

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use cce_cni_guard::policy::Config;
use cce_cni_guard::sim::guard::{self, RunningGuard};
use cce_cni_guard::sim::model::Resource;
use cce_cni_guard::sim::{Sim, SimHandle, SimOptions};
use serde_json::Value;

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
    /// The guard's webhook, registered in the sim the way the chart registers it.
    pub guard: RunningGuard,
    _dir: tempfile::TempDir,
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
        options.users.push(guard::guard_user());
        tweak(&mut options);
        let version = options.k8s_version;
        let sim = Sim::start(options).await.unwrap();
        sim.settle().await;
        let guard = guard::start(&sim, version, Config::default())
            .await
            .unwrap();
        Self {
            sim,
            kubeconfig,
            guard,
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

    /// The guard's webhook judged at least `n` writes of the guarded workloads and denied
    /// none (read from its Prometheus counters).
    pub fn assert_guard_allowed_all(&self, n: u64) {
        let text = self.guard.server().metrics().encode();
        let count = |decision: &str| -> u64 {
            let label = format!("decision=\"{decision}\"");
            text.lines()
                .filter(|l| l.starts_with("cce_cni_guard_admission_requests_total{"))
                .filter(|l| l.contains(&label))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .map(|v| v as u64)
                .sum()
        };
        assert_eq!(count("denied"), 0, "the guard denied a write:\n{text}");
        assert!(
            count("allowed") >= n,
            "the guard judged too few writes:\n{text}"
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

impl Env {
    /// Runs the binary like [`Env::run`], but kills it (SIGKILL, as the kubelet kills an
    /// evicted Job pod) once `after` has passed. `None`: it was killed before finishing.
    pub async fn run_killed_after(
        &self,
        after: Duration,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Option<Out> {
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
        // Dropping the unfinished `output()` future kills the child.
        let out = tokio::time::timeout(after, cmd.output()).await.ok()?.ok()?;
        Some(Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}
