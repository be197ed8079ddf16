//! The simulated CCE v1 cluster (`cce-cni-guard sim`): an HTTPS API server that the real
//! kubectl and our own kube client drive, with in-memory storage, watch, patches, and
//! controllers (DaemonSet, Deployment, ReplicaSet, scheduler, kubelet).
//!
//! The API server (store, HTTP, discovery, watch) performs all I/O; the controllers in
//! `controllers` are pure functions from a [`model::Snapshot`] to [`model::Action`]s.

pub mod admission;
pub mod cluster;
pub mod controllers;
pub mod guard;
pub mod model;
pub mod server;
pub mod smp;
pub mod table;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use server::{Sim, SimError, SimHandle, SimOptions};

use model::{Behaviour, ClusterSpec, IpamStrategy};
use server::{FaultRule, K8sVersion, UserSpec};

/// Flags of `cce-cni-guard sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Where to write the kubeconfig once the simulated cluster serves.
    #[arg(long, env = "CCE_SIM_KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Address to serve HTTPS on (port 0 picks a free port).
    #[arg(long, env = "CCE_SIM_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Kubernetes version to claim: 1.MINOR or 1.MINOR.PATCH (kubectl's dispatcher picks by it).
    #[arg(long, env = "CCE_SIM_K8S_VERSION", default_value = "1.32")]
    pub k8s_version: K8sVersion,
    /// Master nodes (label cluster-role=master).
    #[arg(long, env = "CCE_SIM_MASTERS", default_value_t = 3)]
    pub masters: usize,
    /// Worker nodes.
    #[arg(long, env = "CCE_SIM_WORKERS", default_value_t = 2)]
    pub workers: usize,
    /// Image tag of every guarded container at start.
    #[arg(long, env = "CCE_SIM_CNI_VERSION", default_value = "v1.9.3")]
    pub cni_version: String,
    /// How the ipam Deployment rolls out: rolling (maxSurge 1, the SOP's port conflict) or recreate.
    #[arg(long, env = "CCE_SIM_IPAM_STRATEGY", default_value = "rolling", value_parser = parse_strategy)]
    pub ipam_strategy: IpamStrategy,
    /// Only one ipam pod is Ready at a time, like the leader-elected ipam.
    #[arg(long, env = "CCE_SIM_IPAM_LEADER_ONLY")]
    pub ipam_leader_only: bool,
    /// Time from a pod being bound until it is Running and Ready, e.g. 300ms, 2s, 0.
    #[arg(long, env = "CCE_SIM_POD_READY_DELAY", default_value = "300ms", value_parser = parse_duration)]
    pub pod_ready_delay: Duration,
    /// Images matching this regular expression fail to pull.
    #[arg(long, env = "CCE_SIM_BROKEN_IMAGE")]
    pub broken_image: Option<String>,
    /// Extra users, each with its own token and kubeconfig context: NAME or NAME:GROUP
    /// (several groups joined with '+'); repeat the flag or separate users with commas.
    #[arg(long = "user", env = "CCE_SIM_USERS", value_delimiter = ',')]
    pub users: Vec<UserSpec>,
    /// Fail requests: METHOD:PATH-SUBSTRING:STATUS:COUNT, METHOD may be '*'; repeatable.
    #[arg(long = "fault", env = "CCE_SIM_FAULTS", value_delimiter = ',')]
    pub faults: Vec<FaultRule>,
    /// Latency added to every request, e.g. 50ms.
    #[arg(long, env = "CCE_SIM_LATENCY", default_value = "0", value_parser = parse_duration)]
    pub latency: Duration,
    /// Also run the guard's webhook in this process over HTTPS and register it the way the
    /// chart does (the ValidatingWebhookConfiguration from deploy/).
    #[arg(long, env = "CCE_SIM_WITH_GUARD")]
    pub with_guard: bool,
    /// With --with-guard: the guard's configuration (YAML), e.g. exempt users.
    #[arg(long, env = "CCE_SIM_GUARD_CONFIG", requires = "with_guard")]
    pub guard_config: Option<PathBuf>,
}

fn parse_strategy(text: &str) -> Result<IpamStrategy, String> {
    match text.to_ascii_lowercase().as_str() {
        "rolling" | "rollingupdate" => Ok(IpamStrategy::Rolling),
        "recreate" => Ok(IpamStrategy::Recreate),
        _ => Err(format!(
            "invalid ipam strategy {text:?}: expected rolling or recreate"
        )),
    }
}

/// `300ms`, `2s`, `1.5s`, `1m`, or `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("invalid duration {text:?}: expected e.g. 300ms, 2s, 1m or 0");
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let (number, unit) = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| t.split_at(i))
        .ok_or_else(bad)?;
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

impl SimArgs {
    fn users_with_guard(&self) -> Vec<UserSpec> {
        let mut users = self.users.clone();
        if self.with_guard && !users.iter().any(|u| u.name == guard::GUARD_USER) {
            users.push(guard::guard_user());
        }
        users
    }

    pub fn options(&self) -> SimOptions {
        SimOptions {
            listen: self.listen,
            kubeconfig: Some(self.kubeconfig.clone()),
            k8s_version: self.k8s_version,
            cluster: ClusterSpec {
                masters: self.masters,
                workers: self.workers,
                cni_version: self.cni_version.clone(),
                ipam_strategy: self.ipam_strategy,
            },
            behaviour: Behaviour {
                pod_ready_delay: self.pod_ready_delay,
                broken_image: self.broken_image.clone(),
                ipam_leader_only: self.ipam_leader_only,
            },
            users: self.users_with_guard(),
            faults: self.faults.clone(),
            latency: self.latency,
            ..SimOptions::default()
        }
    }
}

/// Runs the simulated cluster until SIGINT/SIGTERM.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    // Read the guard's configuration before anything starts: a bad file is a usage error.
    let guard_config = match &args.guard_config {
        Some(path) => Some(
            crate::offline::ConfigArg {
                config: Some(path.clone()),
            }
            .load()
            .map_err(|e| anyhow::anyhow!("--guard-config: {e}"))?,
        ),
        None => None,
    };
    let mut options = args.options();
    // With the guard, the kubeconfig is written only once the webhook is registered too.
    let kubeconfig = options.kubeconfig.take();
    let handle = Sim::start(options).await?;
    let guard = if args.with_guard {
        let config = guard_config.unwrap_or_default();
        match guard::start(&handle, args.k8s_version, config).await {
            Ok(g) => Some(g),
            Err(e) => {
                handle.shutdown().await;
                return Err(e.into());
            }
        }
    } else {
        None
    };
    if let Some(path) = &kubeconfig {
        server::auth::write_atomically(path, handle.kubeconfig())
            .map_err(|e| anyhow::anyhow!("cannot write the kubeconfig {}: {e}", path.display()))?;
    }
    eprintln!(
        "simulated cluster serving at {}; kubeconfig written to {}",
        handle.url(),
        args.kubeconfig.display()
    );
    if let Some(g) = &guard {
        eprintln!(
            "guard webhook serving at https://{} and registered as {}",
            g.addr(),
            g.webhook_names().join(", ")
        );
    }
    wait_for_signal().await?;
    tracing::info!("stopping the simulated cluster");
    if let Some(g) = guard {
        g.stop().await;
    }
    handle.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn flags_parse_and_reject_bad_values() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Wrapper {
            #[command(flatten)]
            sim: SimArgs,
        }
        let w = Wrapper::try_parse_from([
            "x",
            "--kubeconfig",
            "k",
            "--k8s-version",
            "1.30",
            "--user",
            "alice:dev,bob",
            "--ipam-strategy",
            "recreate",
            "--pod-ready-delay",
            "0",
        ])
        .unwrap();
        assert_eq!(w.sim.k8s_version.minor, 30);
        assert_eq!(w.sim.users.len(), 2);
        assert_eq!(w.sim.ipam_strategy, IpamStrategy::Recreate);
        assert!(
            Wrapper::try_parse_from(["x", "--kubeconfig", "k", "--k8s-version", "2.0"]).is_err()
        );
        assert!(
            Wrapper::try_parse_from(["x", "--kubeconfig", "k", "--ipam-strategy", "x"]).is_err()
        );
        assert!(Wrapper::try_parse_from(["x", "--kubeconfig", "k", "--listen", "nope"]).is_err());
    }
}
