//! `cce-cni-guard demo`: the whole product on the embedded simulated cluster, in one command.
//!
//! Starts a simulated CCE v1 cluster with the guard registered (as `sim --with-guard`), then
//! shows through the real kubectl (or, without it, through our own client, saying so) what the
//! guard refuses and accepts, runs the sanctioned upgrade including the stuck-ipam remedy, and
//! prints the final status. Each step says what it proved; the exit code is 0 only if every
//! step behaved as it should.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{Api, Patch, PatchParams};

use crate::sim::model::{Behaviour, ClusterSpec};
use crate::sim::{Sim, SimHandle, SimOptions, guard};

const IMAGE: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni";
const FROM: &str = "v1.9.3";
const TO: &str = "v1.9.4";

/// Flags of `cce-cni-guard demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Use the built-in client even when kubectl is installed.
    #[arg(long, env = "CCE_DEMO_NO_KUBECTL")]
    pub no_kubectl: bool,
    /// Keep the simulated cluster running at the end until Ctrl-C, to try commands by hand.
    #[arg(long, env = "CCE_DEMO_KEEP")]
    pub keep: bool,
}

/// What one command printed.
struct Shown {
    code: i32,
    output: String,
}

struct Demo {
    sim: SimHandle,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    kubectl: bool,
    failures: Vec<String>,
    refused: usize,
}

/// Runs the demo; returns the process exit code.
pub async fn run(args: DemoArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let version: crate::sim::server::K8sVersion =
        "1.32".parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let sim = Sim::start(SimOptions {
        kubeconfig: None,
        k8s_version: version,
        cluster: ClusterSpec {
            cni_version: FROM.into(),
            ..ClusterSpec::default()
        },
        behaviour: Behaviour {
            pod_ready_delay: Duration::from_millis(200),
            ..Behaviour::default()
        },
        users: vec![guard::guard_user()],
        ..SimOptions::default()
    })
    .await?;
    let guard = guard::start(&sim, version, crate::policy::Config::default()).await?;
    crate::sim::server::auth::write_atomically(&kubeconfig, sim.kubeconfig())?;
    let kubectl = !args.no_kubectl && kubectl_installed();

    println!("cce-cni-guard demo");
    println!("==================");
    println!(
        "A simulated CCE v1 cluster (3 masters, 2 workers) is serving at {}.",
        sim.url()
    );
    println!(
        "The guard's webhook serves at https://{} and is registered as {:?}, as the chart registers it.",
        guard.addr(),
        guard.webhook_names()
    );
    if kubectl {
        println!("Commands below run through the real kubectl.");
    } else {
        println!(
            "kubectl is not installed: the commands below are sent by cce-cni-guard's own client instead."
        );
    }
    let mut demo = Demo {
        sim,
        kubeconfig,
        _dir: dir,
        kubectl,
        failures: Vec::new(),
        refused: 0,
    };
    demo.script().await;

    let elapsed = started.elapsed();
    println!();
    if demo.failures.is_empty() {
        println!(
            "demo finished in {:.1}s: {} changes refused, the SOP's command accepted, the upgrade done and verified.",
            elapsed.as_secs_f64(),
            demo.refused
        );
    } else {
        println!(
            "demo finished in {:.1}s with {} unexpected results:",
            elapsed.as_secs_f64(),
            demo.failures.len()
        );
        for f in &demo.failures {
            println!("  - {f}");
        }
    }
    if args.keep {
        println!(
            "\nThe cluster keeps running; try: KUBECONFIG={} kubectl -n kube-system get ds,deploy,pods",
            demo.kubeconfig.display()
        );
        println!("(the kubeconfig lives in a temporary directory removed on exit; Ctrl-C to stop)");
        let _ = tokio::signal::ctrl_c().await;
    }
    guard.stop().await;
    demo.sim.clone().shutdown().await;
    Ok(if demo.failures.is_empty() { 0 } else { 1 })
}

fn kubectl_installed() -> bool {
    std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Demo {
    async fn script(&mut self) {
        let ns = "kube-system";
        let both = |tag: &str| {
            vec![
                format!("cce-cni-node-agent={IMAGE}:{tag}"),
                format!("install-cni-binary={IMAGE}:{tag}"),
            ]
        };

        self.section("1. Is this a v1 container network? (SOP 2.1.1)");
        let shown = self
            .kubectl_get(&["-n", ns, "get", "cm", "cce-cni-node-agent"])
            .await;
        self.expect(
            shown.code == 0,
            "the ConfigMap cce-cni-node-agent exists: the cluster runs the v1 network",
        );
        self.kubectl_get(&["-n", ns, "get", "ds", "cce-cni-node-agent"])
            .await;
        self.kubectl_get(&["-n", ns, "get", "deploy", "cce-eni-ipam"])
            .await;

        self.section("2. A typo across a minor version");
        let shown = self.set_image(&both("v1.10.4"), false).await;
        self.expect_refused(
            &shown,
            "moves the minor version",
            "a change from 1.9 to 1.10 by image swap is refused before it reaches a node",
        );

        self.section("3. Updating one container and not the other");
        let shown = self
            .set_image(&[format!("cce-cni-node-agent={IMAGE}:{TO}")], false)
            .await;
        self.expect_refused(
            &shown,
            "install-cni-binary=registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4",
            "setting cce-cni-node-agent without install-cni-binary is refused, and the refusal gives the command that sets both",
        );

        self.section("4. The SOP's own command (server-side dry run: accepted, nothing changed)");
        let shown = self.set_image(&both(TO), true).await;
        self.expect(
            shown.code == 0,
            "the SOP's command that sets both containers is accepted",
        );

        self.section("5. The sanctioned upgrade: both workloads, in the SOP's order, verified");
        let shown = self
            .own(&[
                "upgrade",
                "--to",
                TO,
                "--stuck-after",
                "3s",
                "--progress-every",
                "2s",
            ])
            .await;
        self.expect(shown.code == 0, "the upgrade succeeded");
        self.expect(
            shown.output.contains("scaling to 0 and back"),
            "new ipam pods could not be scheduled (host ports held on the masters) and the SOP's remedy fixed it",
        );

        self.section("6. Final status");
        let shown = self.own(&["status"]).await;
        self.expect(
            shown.code == 0,
            "both workloads run v1.9.4, consistent and rolled out",
        );
    }

    fn section(&self, title: &str) {
        println!("\n## {title}");
    }

    fn expect(&mut self, ok: bool, what: &str) {
        if ok {
            println!("  -> proved: {what}");
        } else {
            println!("  -> NOT as expected: {what}");
            self.failures.push(what.to_owned());
        }
    }

    fn expect_refused(&mut self, shown: &Shown, needle: &str, what: &str) {
        let ok = shown.code != 0
            && shown.output.contains("denied the request")
            && shown.output.contains(needle);
        if ok {
            self.refused += 1;
        }
        self.expect(ok, what);
    }

    async fn kubectl_get(&mut self, args: &[&str]) -> Shown {
        if self.kubectl {
            return self.kubectl(args).await;
        }
        // Without kubectl, show what the same GET returns, through the sim's own view.
        println!(
            "$ kubectl {}   (shown by the built-in client)",
            args.join(" ")
        );
        let resource = match args.get(3).copied() {
            Some("cm") => crate::sim::model::Resource::ConfigMaps,
            Some("ds") => crate::sim::model::Resource::DaemonSets,
            _ => crate::sim::model::Resource::Deployments,
        };
        let name = args.get(4).copied().unwrap_or_default();
        match self.sim.get(resource, Some("kube-system"), name) {
            Some(object) => {
                let output = format!(
                    "{:?} kube-system/{name} exists (resourceVersion {})",
                    resource, object["metadata"]["resourceVersion"]
                );
                println!("{output}");
                Shown { code: 0, output }
            }
            None => Shown {
                code: 1,
                output: format!("{name} not found"),
            },
        }
    }

    async fn set_image(&mut self, assignments: &[String], dry_run: bool) -> Shown {
        if self.kubectl {
            let mut args = vec![
                "-n",
                "kube-system",
                "set",
                "image",
                "daemonset/cce-cni-node-agent",
            ];
            args.extend(assignments.iter().map(String::as_str));
            if dry_run {
                args.push("--dry-run=server");
            }
            return self.kubectl(&args).await;
        }
        self.set_image_with_client(assignments, dry_run).await
    }

    /// The same strategic merge patch `kubectl set image` sends.
    async fn set_image_with_client(&mut self, assignments: &[String], dry_run: bool) -> Shown {
        println!(
            "$ kubectl -n kube-system set image daemonset/cce-cni-node-agent {}{}   (sent by the built-in client)",
            assignments.join(" "),
            if dry_run { " --dry-run=server" } else { "" }
        );
        let mut containers = Vec::new();
        let mut init = Vec::new();
        for a in assignments {
            let Some((name, image)) = a.split_once('=') else {
                continue;
            };
            let entry = serde_json::json!({"name": name, "image": image});
            if name == "install-cni-binary" {
                init.push(entry)
            } else {
                containers.push(entry)
            }
        }
        let mut spec = serde_json::Map::new();
        if !containers.is_empty() {
            spec.insert("containers".into(), containers.into());
        }
        if !init.is_empty() {
            spec.insert("initContainers".into(), init.into());
        }
        let patch = serde_json::json!({"spec": {"template": {"spec": spec}}});
        let result = async {
            let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
            let config =
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
            let client = kube::Client::try_from(config)?;
            let api: Api<DaemonSet> = Api::namespaced(client, "kube-system");
            let params = PatchParams {
                dry_run,
                field_manager: Some("kubectl-set".into()),
                ..Default::default()
            };
            api.patch("cce-cni-node-agent", &params, &Patch::Strategic(patch))
                .await?;
            anyhow::Ok(())
        }
        .await;
        let shown = match result {
            Ok(()) => Shown {
                code: 0,
                output: format!(
                    "daemonset.apps/cce-cni-node-agent image updated{}",
                    if dry_run { " (server dry run)" } else { "" }
                ),
            },
            Err(e) => {
                // Print what kubectl would: the apiserver's Status message, not its Debug form.
                let output = match e.downcast_ref::<kube::Error>() {
                    Some(kube::Error::Api(status)) => {
                        format!("Error from server ({}): {}", status.reason, status.message)
                    }
                    _ => format!("error: {e:#}"),
                };
                Shown { code: 1, output }
            }
        };
        println!("{}", shown.output);
        shown
    }

    async fn kubectl(&mut self, args: &[&str]) -> Shown {
        println!("$ kubectl {}", args.join(" "));
        let cache = tempfile::tempdir();
        let mut command = tokio::process::Command::new("kubectl");
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        if let Ok(cache) = &cache {
            command.arg("--cache-dir").arg(cache.path());
        }
        self.capture(command.args(args)).await
    }

    /// This binary's own commands against the simulated cluster.
    async fn own(&mut self, args: &[&str]) -> Shown {
        println!("$ cce-cni-guard {}", args.join(" "));
        let exe =
            std::env::current_exe().unwrap_or_else(|_| Path::new("cce-cni-guard").to_path_buf());
        let mut command = tokio::process::Command::new(exe);
        command.args(args).arg("--kubeconfig").arg(&self.kubeconfig);
        self.capture(&mut command).await
    }

    async fn capture(&mut self, command: &mut tokio::process::Command) -> Shown {
        // Both streams into one file, so the transcript keeps the order a terminal shows.
        let run = async {
            let file = tempfile::tempfile()?;
            let status = command
                .stdin(Stdio::null())
                .stdout(Stdio::from(file.try_clone()?))
                .stderr(Stdio::from(file.try_clone()?))
                .status()
                .await?;
            let mut file = file;
            let mut text = String::new();
            std::io::Seek::rewind(&mut file)?;
            std::io::Read::read_to_string(&mut file, &mut text)?;
            std::io::Result::Ok((status, text))
        };
        match run.await {
            Ok((status, text)) => {
                for line in text.lines() {
                    println!("  {line}");
                }
                Shown {
                    code: status.code().unwrap_or(-1),
                    output: text,
                }
            }
            Err(e) => {
                println!("  (could not run: {e})");
                Shown {
                    code: -1,
                    output: e.to_string(),
                }
            }
        }
    }
}
