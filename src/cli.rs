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
    /// Log line format on stderr.
    #[arg(long, global = true, env = "CCE_GUARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing env-filter syntax), e.g. `info`, `debug`, `cce_cni_guard=debug`.
    #[arg(long, global = true, env = "CCE_GUARD_LOG", default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up structured logging on stderr; stdout stays for command output.
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(with_quiet_tls(filter)).unwrap_or_else(|err| {
            eprintln!("warning: --log-level {filter:?} is not a valid filter ({err}); using info");
            tracing_subscriber::EnvFilter::new(with_quiet_tls("info"))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// rustls warns at every handshake about harmless client quirks (an IP address sent as SNI, as
/// curl and load generators do): one line per connection on the accept path. Our own
/// handshake-failure line says what matters; `--log-level rustls=debug` brings them back.
fn with_quiet_tls(filter: &str) -> String {
    if filter.contains("rustls") {
        filter.to_owned()
    } else {
        format!("{filter},rustls=error")
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the validating admission webhook over HTTPS.
    Serve(crate::webhook::ServeArgs),
    /// Judge one AdmissionReview offline; prints the response exactly as `serve` answers.
    /// Exit 0 allowed, 1 denied, 2 invalid input.
    Review(crate::offline::ReviewArgs),
    /// Judge a change between two manifests offline. Exit 0 allowed, 1 denied, 2 invalid input.
    Check(crate::offline::CheckArgs),
    /// Write a CA and a serving certificate for the webhook Service.
    Certs(crate::certs::CertsArgs),
    /// Run the simulated CCE v1 cluster until stopped.
    #[cfg(feature = "sim")]
    Sim(crate::sim::SimArgs),
    /// The SOP's checks as one table. Exit 0 healthy, 1 not.
    Status(crate::upgrade::InspectArgs),
    /// Revisions of both workloads with the image of every guarded container.
    History(crate::upgrade::InspectArgs),
    /// The sanctioned patch upgrade of both workloads, verified, with automatic rollback.
    /// Exit 0 done or nothing to do, 1 failed and rolled back, 2 refused, 3 rollback failed.
    Upgrade(crate::upgrade::UpgradeArgs),
    /// Roll back (SOP §3): ipam first, then the agent. Exit 0 done, 1 failed, 2 refused.
    Rollback(crate::upgrade::RollbackArgs),
    /// Everything end to end on the embedded simulated cluster, in one command (under a minute).
    #[cfg(feature = "sim")]
    Demo(crate::demo::DemoArgs),
}

pub fn main() -> ExitCode {
    crate::install_crypto_provider();
    let cli = Cli::parse();
    // The demo's transcript is its output; its in-process servers only speak up for problems.
    let level = match &cli.command {
        #[cfg(feature = "sim")]
        Command::Demo(_) if cli.log_level == "info" => "warn",
        _ => cli.log_level.as_str(),
    };
    init_logging(cli.log_format, level);
    match &cli.command {
        Command::Review(args) => return offline_exit(crate::offline::review(args)),
        Command::Check(args) => return offline_exit(crate::offline::check(args)),
        _ => {}
    }
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
    let cluster_command = runtime.block_on(async {
        match &cli.command {
            Command::Status(args) => Some(crate::upgrade::status(args.clone()).await),
            Command::History(args) => Some(crate::upgrade::history(args.clone()).await),
            Command::Upgrade(args) => Some(crate::upgrade::upgrade(args.clone()).await),
            Command::Rollback(args) => Some(crate::upgrade::rollback(args.clone()).await),
            #[cfg(feature = "sim")]
            Command::Demo(args) => {
                Some(crate::demo::run(args.clone()).await.unwrap_or_else(|err| {
                    eprintln!("error: the demo could not start: {err:#}");
                    2
                }))
            }
            _ => None,
        }
    });
    if let Some(code) = cluster_command {
        return ExitCode::from(code);
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => crate::webhook::run(args).await,
            Command::Certs(args) => crate::certs::run(args),
            #[cfg(feature = "sim")]
            Command::Sim(args) => crate::sim::run(args).await,
            Command::Review(_)
            | Command::Check(_)
            | Command::Status(_)
            | Command::History(_)
            | Command::Upgrade(_)
            | Command::Rollback(_) => Ok(()),
            #[cfg(feature = "sim")]
            Command::Demo(_) => Ok(()),
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

fn offline_exit(result: Result<ExitCode, crate::offline::OfflineError>) -> ExitCode {
    result.unwrap_or_else(|err| {
        eprintln!("error: {err}");
        ExitCode::from(crate::offline::EXIT_INVALID)
    })
}

#[cfg(test)]
mod tests {
    use super::with_quiet_tls;

    #[test]
    fn rustls_is_quiet_unless_asked_for() {
        assert_eq!(with_quiet_tls("info"), "info,rustls=error");
        assert_eq!(with_quiet_tls("debug,rustls=debug"), "debug,rustls=debug");
        for filter in ["info", "warn", "cce_cni_guard=debug", ""] {
            assert!(
                tracing_subscriber::EnvFilter::try_new(with_quiet_tls(filter)).is_ok(),
                "{filter:?}"
            );
        }
    }
}
