//! THE REFERENCE FLOOR for the load benchmark (`scripts/bench-load`): the least an admission
//! webhook on this stack can do. axum + hyper + rustls (ring, the same TLS versions and ALPN as
//! `serve`), one `POST /validate` that reads the whole body, parses it as an AdmissionReview
//! (every byte of JSON checked, only the uid kept) and answers allowed, in the review's own
//! apiVersion. No policy, no metrics, no logs, no limits, no timeouts, no certificate reload:
//! whatever `serve` costs beyond this is the guard's own.
//!
//! Usage: `floor --listen 127.0.0.1:9443 --tls-cert tls.crt --tls-key tls.key`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;

#[derive(Deserialize)]
struct Review {
    #[serde(rename = "apiVersion")]
    api_version: String,
    request: ReviewRequest,
}

/// Every other field is read and checked as JSON by serde's unknown-field skipping
/// (`IgnoredAny`): nothing is built for it.
#[derive(Deserialize)]
struct ReviewRequest {
    uid: String,
}

async fn validate(body: Bytes) -> Response {
    match serde_json::from_slice::<Review>(&body) {
        Ok(review) => {
            let answer = serde_json::json!({
                "apiVersion": review.api_version,
                "kind": "AdmissionReview",
                "response": { "uid": review.request.uid, "allowed": true },
            });
            (
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::to_vec(&answer).unwrap_or_default(),
            )
                .into_response()
        }
        Err(err) => (StatusCode::BAD_REQUEST, err.to_string()).into_response(),
    }
}

fn arg(args: &[String], name: &str) -> Result<String, String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .ok_or_else(|| format!("missing {name} <value>"))
}

fn tls_config(cert: &str, key: &str) -> Result<rustls::ServerConfig, String> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).map_err(|e| format!("{cert}: {e}"))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| format!("{cert}: {e}"))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).map_err(|e| format!("{key}: {e}"))?,
    ))
    .map_err(|e| format!("{key}: {e}"))?
    .ok_or_else(|| format!("{key}: no private key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let listen: SocketAddr = arg(&args, "--listen")?
        .parse()
        .map_err(|e| format!("--listen: {e}"))?;
    let config = tls_config(&arg(&args, "--tls-cert")?, &arg(&args, "--tls-key")?)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("{listen}: {e}"))?;
    let app = Router::new().route("/validate", post(validate));
    println!(
        "floor listening on https://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
