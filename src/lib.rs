//! cce-cni-guard: an admission guard and a safe patch upgrader for the Baidu CCE "v1"
//! container network (DaemonSet `cce-cni-node-agent`, Deployment `cce-eni-ipam`).
//!
//! Layout: `policy` is pure decision logic; `review` turns AdmissionReview bytes into a
//! response with it; `webhook` serves it over HTTPS; `sim` is the simulated cluster used by
//! tests and the demo; `cli` wires commands to all of them.

pub mod certs;
pub mod certs_cluster;
pub mod cli;
pub mod cluster;
#[cfg(feature = "sim")]
pub mod demo;
pub mod manifest;
pub mod offline;
pub mod policy;
pub mod review;
#[cfg(feature = "sim")]
pub mod sim;
pub mod tls;
pub mod upgrade;
pub mod webhook;

/// Installs the process-wide rustls crypto provider (ring). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
