//! Test bed for the upgrader: the simulated cluster in-process, the real binary as a child
//! process (so the crash hook can kill it), and readers of what the sim stores.

#![allow(dead_code)]

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use cce_cni_guard::policy::Config;
use cce_cni_guard::sim::guard::{self, RunningGuard};
use cce_cni_guard::sim::model::Resource;
use cce_cni_guard::sim::{Sim, SimHandle, SimOptions};
use serde_json::Value;

pub const NS: &str = "kube-system";
pub const AGENT: &str = "cce-cni-node-agent";
pub const IPAM: &str = "cce-eni-ipam";
pub const REPO: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni";
pub const USER_AGENT_PREFIX: &str = "cce-cni-guard/";

/// Flags that keep test runs short: a short lease so a rerun can take over a dead
/// upgrader's lock, and a quick remedy.
pub const FAST: &[&str] = &[
    "--stuck-after",
    "1s",
    "--lease-duration",
    "2",
    "--lock-wait",
    "20s",
    "--timeout",
    "90s",
    "--ipam-timeout",
    "90s",
    "--progress-every",
    "5s",
];

pub struct Env {
    pub sim: SimHandle,
    pub kubeconfig: PathBuf,
    /// The guard's webhook, registered in the sim the way the chart registers it.
    pub guard: RunningGuard,
    _dir: tempfile::TempDir,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

pub fn image(tag: &str) -> String {
    format!("{REPO}:{tag}")
}

impl Env {
    pub async fn start(tweak: impl FnOnce(&mut SimOptions)) -> Self {
        cce_cni_guard::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let mut options = SimOptions {
            kubeconfig: Some(kubeconfig.clone()),
            ..SimOptions::default()
        };
        options.behaviour.pod_ready_delay = Duration::from_millis(30);
        options.users.push(guard::guard_user());
        tweak(&mut options);
        let version = options.k8s_version;
        let sim = Sim::start(options).await.unwrap();
        sim.settle().await;
        let guard = guard::start(&sim, version, Config::default())
            .await
            .unwrap();
        Self {
            sim,
            kubeconfig,
            guard,
            _dir: dir,
        }
    }

    /// A kube client as the sim's admin.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// The guard's webhook judged at least `n` writes of the guarded workloads and denied
    /// none (read from its Prometheus counters).
    pub fn assert_guard_allowed_all(&self, n: u64) {
        let text = self.guard.server().metrics().encode();
        let count = |decision: &str| -> u64 {
            let label = format!("decision=\"{decision}\"");
            text.lines()
                .filter(|l| l.starts_with("cce_cni_guard_admission_requests_total{"))
                .filter(|l| l.contains(&label))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .map(|v| v as u64)
                .sum()
        };
        assert_eq!(count("denied"), 0, "the guard denied a write:\n{text}");
        assert!(
            count("allowed") >= n,
            "the guard judged too few writes:\n{text}"
        );
    }

    /// Runs the binary with `args`, the sim's kubeconfig and `env`; nothing leaks in from the
    /// outer environment's `CCE_GUARD_*` variables.
    pub async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        self.run_within(Duration::from_secs(300), args, env).await
    }

    pub async fn run_within(&self, limit: Duration, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cce-cni-guard"));
        for (key, _) in std::env::vars() {
            if key.starts_with("CCE_GUARD_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("CCE_GUARD_LOG", "warn")
            .envs(env.iter().copied())
            .kill_on_drop(true);
        let out = tokio::time::timeout(limit, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("the command did not finish within {limit:?}"))
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `upgrade` with the fast flags.
    pub async fn upgrade(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut all = vec!["upgrade"];
        all.extend_from_slice(args);
        all.extend_from_slice(FAST);
        self.run(&all, env).await
    }

    /// `rollback` with the fast flags.
    pub async fn rollback(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut all = vec!["rollback"];
        all.extend_from_slice(args);
        all.extend_from_slice(FAST);
        self.run(&all, env).await
    }

    pub fn get(&self, resource: Resource, name: &str) -> Value {
        self.sim
            .get(resource, Some(NS), name)
            .map(|o| (*o).clone())
            .unwrap_or(Value::Null)
    }

    /// Every guarded image of both workloads: (agent images, ipam images).
    pub fn images(&self) -> (Vec<String>, Vec<String>) {
        let read = |object: &Value, names: &[&str]| -> Vec<String> {
            let spec = &object["spec"]["template"]["spec"];
            let mut out = Vec::new();
            for list in ["initContainers", "containers"] {
                for c in spec[list].as_array().into_iter().flatten() {
                    if names.contains(&c["name"].as_str().unwrap_or("")) {
                        out.push(c["image"].as_str().unwrap_or("").to_owned());
                    }
                }
            }
            out
        };
        (
            read(
                &self.get(Resource::DaemonSets, AGENT),
                &["cce-cni-node-agent", "install-cni-binary"],
            ),
            read(&self.get(Resource::Deployments, IPAM), &["cce-eni-ipam"]),
        )
    }

    pub fn assert_images(&self, agent_tag: &str, ipam_tag: &str) {
        let (agent, ipam) = self.images();
        assert_eq!(agent, vec![image(agent_tag); 2], "agent images");
        assert_eq!(ipam, vec![image(ipam_tag)], "ipam images");
    }

    pub fn resource_version(&self, resource: Resource, name: &str) -> String {
        self.get(resource, name)["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// The upgrader's requests that change something.
    pub fn upgrader_writes(&self) -> Vec<String> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.user_agent.starts_with(USER_AGENT_PREFIX) && r.method != "GET")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    pub fn upgrader_requests(&self) -> u64 {
        self.sim.request_count_by_user_agent(USER_AGENT_PREFIX)
    }

    /// Reasons of the Events `cce-cni-guard` recorded on `kind`.
    pub fn event_reasons(&self, kind: &str) -> Vec<String> {
        self.sim
            .list(Resource::Events, Some(NS))
            .iter()
            .filter(|e| {
                e["source"]["component"] == "cce-cni-guard" && e["involvedObject"]["kind"] == kind
            })
            .filter_map(|e| e["reason"].as_str().map(str::to_owned))
            .collect()
    }

    /// The upgrade record in the Lease, if any.
    pub fn record(&self) -> Value {
        let lease = self.get(Resource::Leases, "cce-cni-guard-upgrade");
        lease["metadata"]["annotations"]["cce-cni-guard.cce.baidubce.com/upgrade-record"]
            .as_str()
            .map(|t| serde_json::from_str(t).unwrap())
            .unwrap_or(Value::Null)
    }

    pub fn controller_revisions(&self) -> usize {
        self.sim
            .list(Resource::ControllerRevisions, Some(NS))
            .iter()
            .filter(|c| c["metadata"]["labels"]["name"] == AGENT)
            .count()
    }

    pub fn deployment_revision(&self) -> String {
        self.get(Resource::Deployments, IPAM)["metadata"]["annotations"]
            ["deployment.kubernetes.io/revision"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

impl Env {
    /// Runs the binary like [`Env::run`], but kills it (SIGKILL, as the kubelet kills an
    /// evicted Job pod) once `after` has passed. `None`: it was killed before finishing.
    pub async fn run_killed_after(
        &self,
        after: Duration,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Option<Out> {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cce-cni-guard"));
        for (key, _) in std::env::vars() {
            if key.starts_with("CCE_GUARD_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("CCE_GUARD_LOG", "warn")
            .envs(env.iter().copied())
            .kill_on_drop(true);
        // Dropping the unfinished `output()` future kills the child.
        let out = tokio::time::timeout(after, cmd.output()).await.ok()?.ok()?;
        Some(Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// `cce-cni-guard serve` as a child process over real TLS on loopback: its addresses from the
/// log, its memory from `/proc`, SIGTERM, and clients that trust its CA.
pub mod serve {
    use std::io::{BufRead, BufReader};
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http::{Request, StatusCode, header};
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::ServerName;
    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream;

    use cce_cni_guard::certs::{CertSpec, GeneratedCerts};

    pub const BIN: &str = env!("CARGO_BIN_EXE_cce-cni-guard");

    /// The binary to serve with: this build's, or another one named by
    /// `CCE_CNI_GUARD_TEST_BIN` (e.g. a release build, to measure its memory).
    pub fn bin() -> PathBuf {
        std::env::var_os("CCE_CNI_GUARD_TEST_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(BIN))
    }

    pub fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/webhook/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// A CA and a serving certificate for 127.0.0.1.
    pub fn loopback_certs() -> GeneratedCerts {
        cce_cni_guard::install_crypto_provider();
        let mut spec = CertSpec::new("cce-cni-guard", "kube-system");
        spec.ip_addresses = vec!["127.0.0.1".parse().unwrap()];
        cce_cni_guard::certs::generate(&spec).unwrap()
    }

    /// Writes one revision of a Kubernetes Secret volume into `dir` the way the kubelet
    /// does: a timestamped directory, `..data` swapped atomically to point at it, and
    /// `tls.crt`/`tls.key` as symlinks through `..data`.
    pub fn secret_volume_revision(dir: &Path, revision: &str, cert: &str, key: &str) {
        let target = dir.join(revision);
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("tls.crt"), cert).unwrap();
        std::fs::write(target.join("tls.key"), key).unwrap();
        let staged = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&staged);
        std::os::unix::fs::symlink(revision, &staged).unwrap();
        std::fs::rename(&staged, dir.join("..data")).unwrap();
        for file in ["tls.crt", "tls.key"] {
            let link = dir.join(file);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{file}"), &link).unwrap();
            }
        }
    }

    /// Resident and peak memory of a process, from `/proc/<pid>/status`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Memory {
        pub rss_kib: u64,
        pub peak_kib: u64,
    }

    impl std::fmt::Display for Memory {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "VmRSS {:.1} MiB, VmHWM {:.1} MiB",
                self.rss_kib as f64 / 1024.0,
                self.peak_kib as f64 / 1024.0
            )
        }
    }

    pub fn memory_of(pid: u32) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        };
        Memory {
            rss_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
        }
    }

    /// A running `serve`; killed when dropped.
    pub struct Guard {
        child: Child,
        pub addr: SocketAddr,
        pub health: SocketAddr,
        lines: Arc<Mutex<Vec<String>>>,
        exited: Option<ExitStatus>,
    }

    /// Starts `serve --no-cluster` on loopback with `cert`/`key` and `extra` flags, and waits
    /// until it logs both addresses.
    pub fn start(cert: &Path, key: &Path, extra: &[&str]) -> Guard {
        match try_start(cert, key, extra, Duration::from_secs(30)) {
            Ok(guard) => guard,
            Err((status, log)) => panic!("serve exited with {status:?}:\n{}", log.join("\n")),
        }
    }

    /// Like [`start`], but a `serve` that exits before listening gives its status and log.
    pub fn try_start(
        cert: &Path,
        key: &Path,
        extra: &[&str],
        within: Duration,
    ) -> Result<Guard, (ExitStatus, Vec<String>)> {
        let mut command = Command::new(bin());
        for (key, _) in std::env::vars() {
            if key.starts_with("CCE_GUARD_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .arg("--no-cluster")
            .args(extra)
            .env_remove("KUBECONFIG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + within;
        loop {
            let log = lines.lock().unwrap().clone();
            let addr = address_after(&log, "listening on https://");
            let health = address_after(&log, "health and metrics on http://");
            if let (Some(addr), Some(health)) = (addr, health) {
                return Ok(Guard {
                    child,
                    addr,
                    health,
                    lines,
                    exited: None,
                });
            }
            if let Some(status) = child.try_wait().unwrap() {
                // Let the reader drain the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Err((status, lines.lock().unwrap().clone()));
            }
            assert!(
                Instant::now() < deadline,
                "serve did not start listening:\n{}",
                log.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn address_after(log: &[String], marker: &str) -> Option<SocketAddr> {
        log.iter().find_map(|l| {
            let rest = &l[l.find(marker)? + marker.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
    }

    impl Guard {
        pub fn pid(&self) -> u32 {
            self.child.id()
        }

        pub fn memory(&self) -> Memory {
            memory_of(self.pid())
        }

        /// Everything it logged so far.
        pub fn log(&self) -> Vec<String> {
            self.lines.lock().unwrap().clone()
        }

        /// Waits until a log line contains `needle`.
        pub async fn wait_for_log(&self, needle: &str, within: Duration) -> String {
            let deadline = Instant::now() + within;
            loop {
                if let Some(line) = self.log().into_iter().find(|l| l.contains(needle)) {
                    return line;
                }
                assert!(
                    Instant::now() < deadline,
                    "no log line with {needle:?} within {within:?}:\n{}",
                    self.log().join("\n")
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        pub fn sigterm(&self) {
            let sent = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status()
                .unwrap();
            assert!(sent.success(), "kill -TERM failed");
        }

        /// The exit status, if it exits within `within`.
        pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
            let deadline = Instant::now() + within;
            loop {
                if let Some(status) = self.exited {
                    return Some(status);
                }
                if let Some(status) = self.child.try_wait().unwrap() {
                    self.exited = Some(status);
                    return Some(status);
                }
                if Instant::now() >= deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        pub fn is_running(&mut self) -> bool {
            self.exited.is_none() && self.child.try_wait().unwrap().is_none()
        }

        /// `/metrics` from the plain port.
        pub async fn metrics(&self) -> String {
            plain_get(self.health, "/metrics").await
        }

        pub async fn metric(&self, name: &str) -> Option<f64> {
            metric(&self.metrics().await, name)
        }

        /// Waits until `name` reads `value`.
        pub async fn wait_metric(&self, name: &str, value: f64, within: Duration) {
            let deadline = Instant::now() + within;
            loop {
                let text = self.metrics().await;
                if metric(&text, name) == Some(value) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name} never read {value} within {within:?}:\n{text}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if self.exited.is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }

    /// The value of an unlabelled (or fully labelled) sample `name`.
    pub fn metric(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    pub async fn plain_get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: guard\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    pub fn client_config(cas: &[&str], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        cce_cni_guard::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        for ca in cas {
            for cert in rustls_pemfile::certs(&mut ca.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    pub async fn connect(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::IpAddress(addr.ip().into());
        TlsConnector::from(config).connect(name, tcp).await
    }

    pub fn validate_request(body: Vec<u8>) -> Request<Full<Bytes>> {
        Request::post("/validate")
            .header(header::HOST, "cce-cni-guard.kube-system.svc")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }

    /// One request on a fresh HTTP/1.1 connection: status and body, or what went wrong.
    pub async fn post_h1(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let stream = connect(addr, config)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, body.to_vec()))
    }

    /// The error reason of a refusal (`{"error": ...}`), or the response's message.
    pub fn reason(body: &[u8]) -> String {
        let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        json["error"]
            .as_str()
            .or(json["response"]["status"]["message"].as_str())
            .unwrap_or("")
            .to_owned()
    }

    /// Proves the server still judges correctly: a sanctioned patch upgrade is allowed and
    /// a one-container change is denied, each on a new connection.
    pub async fn assert_still_serving(addr: SocketAddr, ca: &str) {
        let config = client_config(&[ca], &[b"http/1.1"]);
        for (file, allowed) in [
            ("agent-patch-upgrade.v1.json", true),
            ("agent-one-container.v1.json", false),
        ] {
            let answered = tokio::time::timeout(
                Duration::from_secs(10),
                post_h1(addr, config.clone(), validate_request(fixture(file))),
            )
            .await
            .unwrap_or_else(|_| panic!("{file}: no answer within 10s"));
            let (status, body) = answered.unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(status, StatusCode::OK, "{file}");
            let review: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(review["response"]["allowed"], allowed, "{file}: {review}");
        }
    }

    /// A serving certificate and key written to `dir` as `tls.crt`/`tls.key`.
    pub fn write_pair(dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
        let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        (cert_path, key_path)
    }
}
