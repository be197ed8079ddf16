//! The simulated CCE v1 cluster (`cce-cni-guard sim`): an HTTPS API server that the real
//! kubectl and our own kube client drive, with in-memory storage, watch, patches, and
//! controllers (DaemonSet, Deployment, ReplicaSet, scheduler, kubelet).
//!
//! The API server (store, HTTP, discovery, watch) performs all I/O; the controllers in
//! `controllers` are pure functions from a [`model::Snapshot`] to [`model::Action`]s.

pub mod admission;
pub mod cluster;
pub mod controllers;
pub mod model;
pub mod smp;
pub mod table;

use std::path::PathBuf;

/// Flags of `cce-cni-guard sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Where to write the kubeconfig once the simulated cluster serves.
    #[arg(long, env = "CCE_SIM_KUBECONFIG")]
    pub kubeconfig: PathBuf,
}

/// Runs the simulated cluster until SIGINT/SIGTERM.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "the simulated cluster is not built yet (kubeconfig {})",
        args.kubeconfig.display()
    )
}
