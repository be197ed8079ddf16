//! Command-line interface: parses flags (each also from an environment variable) and
//! dispatches to the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cce-cni-guard",
    version,
    about = "Guards and upgrades the CCE v1 container network"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the validating admission webhook over HTTPS.
    Serve(crate::webhook::ServeArgs),
    /// Write a CA and a serving certificate for the webhook Service.
    Certs(crate::certs::CertsArgs),
    /// Run the simulated CCE v1 cluster until stopped.
    Sim(crate::sim::SimArgs),
}

pub fn main() -> ExitCode {
    crate::install_crypto_provider();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => crate::webhook::run(args).await,
            Command::Certs(args) => crate::certs::run(args),
            Command::Sim(args) => crate::sim::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
