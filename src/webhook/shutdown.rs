//! Shutdown: a signal that any number of tasks can wait on, and the process signals that
//! raise it.

use tokio::sync::watch;

/// Raised once; every clone of the matching [`ShutdownSignal`] sees it.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Waits for the trigger.
#[derive(Debug, Clone)]
pub struct ShutdownSignal(watch::Receiver<bool>);

pub fn channel() -> (ShutdownTrigger, ShutdownSignal) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), ShutdownSignal(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// A new signal for the same trigger.
    pub fn subscribe(&self) -> ShutdownSignal {
        ShutdownSignal(self.0.subscribe())
    }
}

impl ShutdownSignal {
    /// Resolves once shutdown was triggered (at once if it already was, or if the trigger
    /// is gone, which also means nobody can keep the server running).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|raised| *raised).await;
    }

    pub fn is_raised(&self) -> bool {
        *self.0.borrow()
    }
}

/// Resolves on SIGTERM (what the kubelet sends) or SIGINT (Ctrl-C).
pub async fn terminate_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
