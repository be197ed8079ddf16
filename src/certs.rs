//! `cce-cni-guard certs`: a CA and a serving certificate for the webhook Service.

use std::path::PathBuf;

/// Flags of `cce-cni-guard certs`.
#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    /// Name of the webhook's Service.
    #[arg(long, env = "CCE_GUARD_SERVICE")]
    pub service: String,
    /// Namespace of the webhook's Service.
    #[arg(long, env = "CCE_GUARD_NAMESPACE")]
    pub namespace: String,
    /// Directory to write ca.crt, tls.crt and tls.key into.
    #[arg(long, env = "CCE_GUARD_CERTS_OUT")]
    pub out: PathBuf,
}

/// Writes the certificates and prints the base64 caBundle.
pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    anyhow::bail!("certs is not built yet ({})", args.out.display())
}
