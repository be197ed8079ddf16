//! `cce-cni-guard serve`: the HTTPS admission webhook, with health and metrics on a plain port.

use std::path::PathBuf;

/// Flags of `cce-cni-guard serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address of the HTTPS webhook listener.
    #[arg(long, env = "CCE_GUARD_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: String,
    /// Serving certificate (PEM); reloaded when it changes on disk.
    #[arg(long, env = "CCE_GUARD_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// Private key of the serving certificate (PEM).
    #[arg(long, env = "CCE_GUARD_TLS_KEY")]
    pub tls_key: PathBuf,
}

/// Runs the webhook until SIGTERM/SIGINT.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("serve is not built yet ({})", args.listen)
}
