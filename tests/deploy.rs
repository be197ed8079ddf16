//! The rendered manifests in deploy/ against the code they deploy: the ConfigMap is the
//! guard's own default configuration, the RBAC names exactly the guarded workloads, and the
//! ValidatingWebhookConfiguration, loaded into the simulated apiserver's admission, scopes
//! exactly the two workloads (so a guard outage blocks nothing else).
//!
//! scripts/check-deploy keeps deploy/ equal to the chart's render and validates every chart
//! mode against the Kubernetes schemas; these tests tie the render to the Rust side.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cce_cni_guard::policy::Config;
use cce_cni_guard::sim::admission::{
    AdmissionAttributes, AdmissionOperation, AdmissionUser, AdmissionVerdict, WebhookDispatcher,
    validate_configuration,
};
use serde_json::{Value, json};

const GUARD_NAMESPACE: &str = "cce-cni-guard";
const WEBHOOK_NAME: &str = "cce-cni-guard.cce.baidubce.com";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every object of one deploy/ file.
fn objects(file: &str) -> Vec<Value> {
    let path = deploy_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn all_objects() -> Vec<Value> {
    let mut files: Vec<String> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    files.iter().flat_map(|f| objects(f)).collect()
}

fn of_kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
fn config_map_holds_the_guards_default_configuration() {
    let objs = all_objects();
    let maps = of_kind(&objs, "ConfigMap");
    assert_eq!(maps.len(), 1);
    let text = maps[0]["data"]["config.yaml"].as_str().unwrap();
    let config = Config::from_yaml(text).unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn webhook_rbac_reads_exactly_the_guarded_workloads() {
    let objs = all_objects();
    let role = of_kind(&objs, "Role")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "cce-cni-guard-read-workloads")
        .expect("the webhook's Role");
    assert_eq!(role["metadata"]["namespace"], "kube-system");
    let mut granted = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        assert_eq!(rule["verbs"], json!(["get", "list", "watch"]));
        assert_eq!(rule["apiGroups"], json!(["apps"]));
        for resource in rule["resources"].as_array().unwrap() {
            for name in rule["resourceNames"].as_array().unwrap() {
                granted.push(format!(
                    "{}/{}",
                    resource.as_str().unwrap(),
                    name.as_str().unwrap()
                ));
            }
        }
    }
    granted.sort();
    let mut expected: Vec<String> = Config::default()
        .workloads
        .iter()
        .map(|w| format!("{}/{}", w.kind.resource(), w.name))
        .collect();
    expected.sort();
    assert_eq!(granted, expected);
}

#[test]
fn webhook_server_runs_as_the_chart_promises() {
    let objs = all_objects();
    let deployments = of_kind(&objs, "Deployment");
    assert_eq!(deployments.len(), 1);
    let deployment = deployments[0];
    assert_eq!(deployment["metadata"]["namespace"], GUARD_NAMESPACE);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "serve");
    // The probes and the Service use the ports the server listens on.
    let port_of = |flag: &str| -> u16 {
        let value = args
            .iter()
            .find_map(|a| a.strip_prefix(flag))
            .unwrap_or_else(|| panic!("{flag} missing from {args:?}"));
        value.rsplit_once(':').unwrap().1.parse().unwrap()
    };
    let ports: BTreeMap<&str, u64> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports["https"], u64::from(port_of("--listen=")));
    assert_eq!(ports["health"], u64::from(port_of("--health-listen=")));
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "health");
    // The certificate comes from the whole Secret volume, so rotation reaches the server.
    let tls_mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tls")
        .unwrap();
    assert!(tls_mount.get("subPath").is_none());
    let mount = tls_mount["mountPath"].as_str().unwrap();
    assert!(args.contains(&format!("--tls-cert={mount}/tls.crt").as_str()));
    assert!(args.contains(&format!("--tls-key={mount}/tls.key").as_str()));
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert!(pod["securityContext"]["runAsUser"].as_u64().unwrap() > 0);
}

#[test]
fn webhook_configurations_register_in_the_simulated_apiserver() {
    for file in [
        "validatingwebhookconfiguration.yaml",
        "pre-1.30/validatingwebhookconfiguration.yaml",
    ] {
        let objs = objects(file);
        assert_eq!(objs.len(), 1, "{file} holds the configuration alone");
        assert_eq!(objs[0]["kind"], "ValidatingWebhookConfiguration");
        validate_configuration(&objs[0]).unwrap_or_else(|e| panic!("{file}: {e}"));
        for webhook in objs[0]["webhooks"].as_array().unwrap() {
            assert_eq!(webhook["failurePolicy"], "Fail");
            assert!(webhook["timeoutSeconds"].as_u64().unwrap() <= 5);
        }
    }
    let current = objects("validatingwebhookconfiguration.yaml");
    assert_eq!(current[0]["webhooks"][0]["name"], WEBHOOK_NAME);
}

/// A write as the apiserver hands it to admission.
struct Write {
    operation: AdmissionOperation,
    resource: &'static str,
    sub_resource: &'static str,
    namespace: &'static str,
    name: &'static str,
    labels: Value,
}

impl Write {
    fn new(resource: &'static str, namespace: &'static str, name: &'static str) -> Self {
        Self {
            operation: AdmissionOperation::Update,
            resource,
            sub_resource: "",
            namespace,
            name,
            labels: json!({}),
        }
    }

    fn attributes(&self) -> AdmissionAttributes {
        let kind = match self.resource {
            "daemonsets" => "DaemonSet",
            _ => "Deployment",
        };
        let object = json!({
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": self.labels},
            "spec": {}
        });
        AdmissionAttributes {
            operation: self.operation,
            group: "apps".into(),
            version: "v1".into(),
            resource: self.resource.into(),
            sub_resource: self.sub_resource.into(),
            kind_group: "apps".into(),
            kind_version: "v1".into(),
            kind: kind.into(),
            namespace: self.namespace.into(),
            name: self.name.into(),
            object: (self.operation != AdmissionOperation::Delete).then(|| object.clone()),
            old_object: (self.operation != AdmissionOperation::Create).then_some(object),
            dry_run: false,
            user: AdmissionUser {
                username: "kubernetes-admin".into(),
                uid: String::new(),
                groups: vec!["system:masters".into()],
            },
            options: None,
            namespace_labels: BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                self.namespace.to_owned(),
            )]),
        }
    }
}

/// With the guard down (its Service resolves nowhere), failurePolicy Fail refuses exactly
/// the writes the configuration sends to it; everything else goes through.
async fn blocked_during_an_outage(configuration: &Value, write: &Write) -> bool {
    let dispatcher = WebhookDispatcher::new(Arc::new(|_, _, _| None));
    let configurations = vec![Arc::new(configuration.clone())];
    match dispatcher.admit(&configurations, &write.attributes()).await {
        AdmissionVerdict::Allowed { .. } => false,
        AdmissionVerdict::Denied { status, code, .. } => {
            assert_eq!(code, 500, "an outage is an InternalError: {status}");
            let message = status["message"].as_str().unwrap();
            assert!(
                message.contains("failed calling webhook") && message.contains(WEBHOOK_NAME),
                "{message}"
            );
            true
        }
    }
}

fn agent_labels() -> Value {
    json!({"k8s-app": "cce-cni-node-agent"})
}

/// Writes no configuration may ever send to the guard.
fn never_guarded() -> Vec<(&'static str, Write)> {
    let mut cases = vec![
        (
            "the guard's own Deployment",
            Write::new("deployments", GUARD_NAMESPACE, "cce-cni-guard"),
        ),
        (
            "a DaemonSet of the guarded name in the guard's namespace",
            Write {
                labels: agent_labels(),
                ..Write::new("daemonsets", GUARD_NAMESPACE, "cce-cni-node-agent")
            },
        ),
        (
            "a Deployment of the guarded name in default",
            Write::new("deployments", "default", "cce-eni-ipam"),
        ),
        (
            "the masquerade agent (same image, not guarded)",
            Write {
                labels: json!({"k8s-app": "cce-ip-masq-agent"}),
                ..Write::new("daemonsets", "kube-system", "cce-ip-masq-agent")
            },
        ),
        (
            "the agent's status",
            Write {
                sub_resource: "status",
                labels: agent_labels(),
                ..Write::new("daemonsets", "kube-system", "cce-cni-node-agent")
            },
        ),
        (
            "scaling ipam (the SOP's remedy)",
            Write {
                sub_resource: "scale",
                ..Write::new("deployments", "kube-system", "cce-eni-ipam")
            },
        ),
        (
            "deleting the agent",
            Write {
                operation: AdmissionOperation::Delete,
                labels: agent_labels(),
                ..Write::new("daemonsets", "kube-system", "cce-cni-node-agent")
            },
        ),
    ];
    cases.push((
        "another DaemonSet in kube-system",
        Write {
            labels: json!({"k8s-app": "kube-proxy"}),
            ..Write::new("daemonsets", "kube-system", "kube-proxy")
        },
    ));
    cases
}

fn always_guarded() -> Vec<(&'static str, Write)> {
    vec![
        (
            "an update of the agent",
            Write {
                labels: agent_labels(),
                ..Write::new("daemonsets", "kube-system", "cce-cni-node-agent")
            },
        ),
        (
            "creating the agent",
            Write {
                operation: AdmissionOperation::Create,
                labels: agent_labels(),
                ..Write::new("daemonsets", "kube-system", "cce-cni-node-agent")
            },
        ),
        (
            "an update of ipam",
            Write::new("deployments", "kube-system", "cce-eni-ipam"),
        ),
        (
            "creating ipam",
            Write {
                operation: AdmissionOperation::Create,
                ..Write::new("deployments", "kube-system", "cce-eni-ipam")
            },
        ),
    ]
}

#[tokio::test]
async fn webhook_scopes_exactly_the_two_workloads() {
    cce_cni_guard::install_crypto_provider();
    let configuration = objects("validatingwebhookconfiguration.yaml").remove(0);
    for (what, write) in always_guarded() {
        assert!(
            blocked_during_an_outage(&configuration, &write).await,
            "{what} must reach the guard"
        );
    }
    for (what, write) in never_guarded() {
        assert!(
            !blocked_during_an_outage(&configuration, &write).await,
            "{what} must not reach the guard"
        );
    }
    // matchConditions name the object, not its labels: a lookalike is still not guarded,
    // and the agent without its label still is.
    let lookalike = Write {
        labels: agent_labels(),
        ..Write::new("daemonsets", "kube-system", "not-the-agent")
    };
    assert!(!blocked_during_an_outage(&configuration, &lookalike).await);
    let unlabelled = Write::new("daemonsets", "kube-system", "cce-cni-node-agent");
    assert!(blocked_during_an_outage(&configuration, &unlabelled).await);
    let other_deployment = Write::new("deployments", "kube-system", "coredns");
    assert!(!blocked_during_an_outage(&configuration, &other_deployment).await);
}

#[tokio::test]
async fn pre_130_webhook_scopes_by_namespace_and_labels() {
    cce_cni_guard::install_crypto_provider();
    let configuration = objects("pre-1.30/validatingwebhookconfiguration.yaml").remove(0);
    assert!(
        configuration["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w.get("matchConditions").is_none())
    );
    for (what, write) in always_guarded() {
        assert!(
            blocked_during_an_outage(&configuration, &write).await,
            "{what} must reach the guard"
        );
    }
    for (what, write) in never_guarded() {
        assert!(
            !blocked_during_an_outage(&configuration, &write).await,
            "{what} must not reach the guard"
        );
    }
    // The known limits of selectors, documented in docs/install.md: the upstream ipam
    // Deployment has no labels of its own, so every kube-system Deployment reaches the guard
    // (which allows what it does not guard at once).
    let other_deployment = Write::new("deployments", "kube-system", "coredns");
    assert!(blocked_during_an_outage(&configuration, &other_deployment).await);
}

/// The guard refuses updates that would leave a workload's pre-1.30 webhook entry; that only
/// closes the gap if it knows the very selector the entry carries.
#[test]
fn pre_130_selectors_are_the_ones_the_guard_keeps() {
    let configuration = objects("pre-1.30/validatingwebhookconfiguration.yaml").remove(0);
    let maps = objects("10-configmap.yaml");
    let config = Config::from_yaml(maps[0]["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let webhooks = configuration["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), config.workloads.len());
    for workload in &config.workloads {
        let entry = webhooks
            .iter()
            .find(|w| {
                w["name"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{}.", workload.name))
            })
            .unwrap_or_else(|| panic!("no webhook entry for {}", workload.display_name()));
        let registered: cce_cni_guard::policy::LabelSelector =
            serde_json::from_value(entry["objectSelector"].clone()).unwrap();
        assert_eq!(
            registered,
            workload.object_selector,
            "{}",
            workload.display_name()
        );
    }
    assert!(
        !config.workloads[0].object_selector.is_empty(),
        "the agent is selected by its label"
    );
}

/// A stand-in apiserver over plain HTTP for the certificate Jobs: the Secret and the
/// ValidatingWebhookConfiguration, with resourceVersions, 404, 409 and JSON patch.
mod stand_in_apiserver {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use serde_json::{Value, json};

    #[derive(Default)]
    pub struct Store {
        pub secret: Option<Value>,
        pub configuration: Option<Value>,
        version: u64,
    }

    pub type Shared = Arc<Mutex<Store>>;

    fn bump(store: &mut Store, object: &mut Value) {
        store.version += 1;
        object["metadata"]["resourceVersion"] = json!(store.version.to_string());
    }

    fn status(code: u16, reason: &str) -> Response {
        let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": reason, "reason": reason, "code": code});
        (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
    }

    async fn get_secret(State(s): State<Shared>) -> Response {
        match &s.lock().unwrap().secret {
            Some(secret) => axum::Json(secret.clone()).into_response(),
            None => status(404, "NotFound"),
        }
    }

    async fn create_secret(State(s): State<Shared>, body: Bytes) -> Response {
        let mut store = s.lock().unwrap();
        if store.secret.is_some() {
            return status(409, "AlreadyExists");
        }
        let mut secret: Value = serde_json::from_slice(&body).unwrap();
        bump(&mut store, &mut secret);
        store.secret = Some(secret.clone());
        (StatusCode::CREATED, axum::Json(secret)).into_response()
    }

    async fn replace_secret(State(s): State<Shared>, body: Bytes) -> Response {
        let mut store = s.lock().unwrap();
        let mut secret: Value = serde_json::from_slice(&body).unwrap();
        let current = store
            .secret
            .as_ref()
            .map(|c| c["metadata"]["resourceVersion"].clone());
        if current != Some(secret["metadata"]["resourceVersion"].clone()) {
            return status(409, "Conflict");
        }
        bump(&mut store, &mut secret);
        store.secret = Some(secret.clone());
        axum::Json(secret).into_response()
    }

    async fn get_configuration(State(s): State<Shared>) -> Response {
        match &s.lock().unwrap().configuration {
            Some(c) => axum::Json(c.clone()).into_response(),
            None => status(404, "NotFound"),
        }
    }

    async fn patch_configuration(State(s): State<Shared>, body: Bytes) -> Response {
        let mut store = s.lock().unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&body).unwrap();
        let Some(mut configuration) = store.configuration.clone() else {
            return status(404, "NotFound");
        };
        if json_patch::patch(&mut configuration, &patch).is_err() {
            return status(422, "Invalid");
        }
        bump(&mut store, &mut configuration);
        store.configuration = Some(configuration.clone());
        axum::Json(configuration).into_response()
    }

    /// Serves on a loopback port and writes a kubeconfig for it into `dir`.
    pub async fn start(store: Shared, dir: &std::path::Path) -> std::path::PathBuf {
        let app = Router::new()
            .route(
                "/api/v1/namespaces/cce-cni-guard/secrets",
                post(create_secret),
            )
            .route(
                "/api/v1/namespaces/cce-cni-guard/secrets/cce-cni-guard-tls",
                get(get_secret).put(replace_secret),
            )
            .route(
                "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/cce-cni-guard",
                get(get_configuration).patch(patch_configuration),
            )
            .with_state(store);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
                 clusters: [{{name: stand-in, cluster: {{server: \"http://{addr}\"}}}}]\n\
                 users: [{{name: job, user: {{token: t}}}}]\n\
                 contexts: [{{name: c, context: {{cluster: stand-in, user: job}}}}]\n"
            ),
        )
        .unwrap();
        kubeconfig
    }
}

/// The args of one of deploy/'s certificate Jobs.
fn certs_job_args(job: &str) -> Vec<String> {
    let objs = objects("30-certs-job.yaml");
    let job = objs
        .iter()
        .find(|o| o["kind"] == "Job" && o["metadata"]["name"] == job)
        .unwrap_or_else(|| panic!("no Job {job}"));
    job["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

async fn run_job(args: &[String], kubeconfig: &Path) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_cce-cni-guard"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

/// The binary, run with exactly the args of deploy/'s two certificate Jobs in the order
/// Helm runs them (before the configuration exists, then after), leaves a Secret the
/// webhook can serve and the caBundle of deploy/'s configuration set; running them again
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_jobs_write_the_secret_then_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let store = stand_in_apiserver::Shared::default();
    let kubeconfig = stand_in_apiserver::start(store.clone(), dir.path()).await;

    let pre = run_job(&certs_job_args("cce-cni-guard-certs-pre"), &kubeconfig).await;
    let stderr = String::from_utf8_lossy(&pre.stderr);
    assert!(pre.status.success(), "pre Job failed: {stderr}");
    assert!(stderr.contains("does not exist yet"), "{stderr}");
    let secret = store.lock().unwrap().secret.clone().expect("the Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");

    let mut configuration = objects("validatingwebhookconfiguration.yaml").remove(0);
    configuration["metadata"]["resourceVersion"] = json!("1");
    store.lock().unwrap().configuration = Some(configuration);
    let post = run_job(&certs_job_args("cce-cni-guard-certs-post"), &kubeconfig).await;
    assert!(
        post.status.success(),
        "post Job failed: {}",
        String::from_utf8_lossy(&post.stderr)
    );
    let ca_bundle = String::from_utf8(post.stdout).unwrap().trim().to_owned();
    let patched = store.lock().unwrap().configuration.clone().unwrap();
    for webhook in patched["webhooks"].as_array().unwrap() {
        assert_eq!(webhook["clientConfig"]["caBundle"], ca_bundle.as_str());
    }
    // The Secret was kept, and it is what the webhook's Service needs.
    let kept = store.lock().unwrap().secret.clone().unwrap();
    assert_eq!(
        kept["metadata"]["resourceVersion"],
        secret["metadata"]["resourceVersion"]
    );
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(kept).unwrap();
    let service = "cce-cni-guard";
    let names: Vec<String> = [
        service.to_owned(),
        format!("{service}.{GUARD_NAMESPACE}"),
        format!("{service}.{GUARD_NAMESPACE}.svc"),
        format!("{service}.{GUARD_NAMESPACE}.svc.cluster.local"),
    ]
    .to_vec();
    let assessment = cce_cni_guard::certs_cluster::assess_secret(
        secret.data.as_ref(),
        &names,
        time::OffsetDateTime::now_utc(),
        time::Duration::days(300),
    );
    assert!(
        matches!(
            assessment,
            cce_cni_guard::certs_cluster::Assessment::Keep { .. }
        ),
        "{assessment:?}"
    );

    let before = store.lock().unwrap().configuration.clone();
    for job in ["cce-cni-guard-certs-pre", "cce-cni-guard-certs-post"] {
        let again = run_job(&certs_job_args(job), &kubeconfig).await;
        assert!(again.status.success());
    }
    assert_eq!(store.lock().unwrap().configuration, before);
}

/// The args the chart gives `serve` and the certificate Jobs are accepted by the real
/// command line, with the meaning the chart intends.
#[test]
fn chart_args_parse_with_the_real_command_line() {
    use cce_cni_guard::cli::{Cli, Command};
    use clap::Parser;

    let objs = all_objects();
    let deployment = of_kind(&objs, "Deployment")[0];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut argv = vec!["cce-cni-guard".to_owned()];
    argv.extend(
        container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned()),
    );
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let Command::Serve(serve) = cli.command else {
        panic!("not serve: {argv:?}")
    };
    assert_eq!(serve.listen.port(), 8443);
    assert_eq!(serve.health_listen.port(), 8080);
    assert!(!serve.no_cluster, "the webhook reads the sibling workload");
    let config = serve.config.expect("--config");
    assert!(config.starts_with("/etc/cce-cni-guard/config"));
    // The pod outlives the server's own shutdown.
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(grace > (serve.shutdown_delay + serve.shutdown_grace).as_secs());

    for job in ["cce-cni-guard-certs-pre", "cce-cni-guard-certs-post"] {
        let mut argv = vec!["cce-cni-guard".to_owned()];
        argv.extend(certs_job_args(job));
        let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let Command::Certs(certs) = cli.command else {
            panic!("not certs: {argv:?}")
        };
        assert!(certs.cluster.in_cluster);
        assert_eq!(certs.service, "cce-cni-guard");
        assert_eq!(certs.namespace, GUARD_NAMESPACE);
        assert_eq!(certs.cluster.secret.as_deref(), Some("cce-cni-guard-tls"));
        assert_eq!(
            certs.cluster.webhook_config.as_deref(),
            Some("cce-cni-guard")
        );
        assert_eq!(
            certs.cluster.wait_for_webhook_config.is_some(),
            job.ends_with("-post")
        );
    }
}

/// deploy/upgrade/'s Job runs the real `upgrade` with the guard's configuration, and its Role
/// grants what the upgrader does to the two workloads and nothing cluster-wide.
#[test]
fn upgrade_job_example_runs_the_real_upgrader_with_a_narrow_role() {
    use cce_cni_guard::cli::{Cli, Command};
    use clap::Parser;

    let objs = objects("upgrade/upgrade-job.yaml");
    let job = of_kind(&objs, "Job")[0];
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert!(job["spec"]["activeDeadlineSeconds"].as_u64().unwrap() > 0);
    assert!(job["spec"]["ttlSecondsAfterFinished"].as_u64().unwrap() > 0);
    let pod = &job["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let mut argv = vec!["cce-cni-guard".to_owned()];
    argv.extend(
        container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned()),
    );
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let Command::Upgrade(upgrade) = cli.command else {
        panic!("not upgrade: {argv:?}")
    };
    assert_eq!(upgrade.to.as_deref(), Some("v1.9.5"));
    assert!(!upgrade.dry_run);
    assert_eq!(upgrade.run.cluster.namespace, "kube-system");
    // The configuration it reads is the webhook's, mounted from the same ConfigMap.
    let config_path = upgrade.run.config.config.expect("--config");
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert!(config_path.starts_with(mount));
    let all = all_objects();
    let config_map = of_kind(&all, "ConfigMap")[0];
    assert_eq!(
        pod["volumes"][0]["configMap"]["name"],
        config_map["metadata"]["name"]
    );
    assert_eq!(
        pod["serviceAccountName"],
        of_kind(&objs, "ServiceAccount")[0]["metadata"]["name"]
    );

    assert!(of_kind(&objs, "ClusterRole").is_empty());
    let role = of_kind(&objs, "Role")[0];
    assert_eq!(role["metadata"]["namespace"], "kube-system");
    let grants = |group: &str, resource: &str, verb: &str| -> Option<Vec<String>> {
        role["rules"].as_array().unwrap().iter().find_map(|r| {
            let has = |field: &str, v: &str| r[field].as_array().unwrap().iter().any(|x| x == v);
            (has("apiGroups", group) && has("resources", resource) && has("verbs", verb)).then(
                || {
                    r.get("resourceNames")
                        .and_then(Value::as_array)
                        .map(|n| n.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
                        .unwrap_or_default()
                },
            )
        })
    };
    let named = |names: &[&str]| Some(names.iter().map(|n| n.to_string()).collect::<Vec<_>>());
    assert_eq!(
        grants("apps", "daemonsets", "patch"),
        named(&["cce-cni-node-agent"])
    );
    assert_eq!(
        grants("apps", "deployments", "patch"),
        named(&["cce-eni-ipam"])
    );
    assert_eq!(
        grants("apps", "deployments/scale", "patch"),
        named(&["cce-eni-ipam"])
    );
    assert_eq!(
        grants("", "configmaps", "get"),
        named(&["cce-cni-node-agent"])
    );
    assert_eq!(
        grants("coordination.k8s.io", "leases", "update"),
        named(&["cce-cni-guard-upgrade"])
    );
    assert_eq!(
        grants("coordination.k8s.io", "leases", "create"),
        named(&[])
    );
    assert_eq!(grants("", "events", "create"), named(&[]));
    for (group, resource) in [
        ("", "pods"),
        ("apps", "replicasets"),
        ("apps", "controllerrevisions"),
    ] {
        assert_eq!(grants(group, resource, "watch"), named(&[]), "{resource}");
        assert_eq!(
            grants(group, resource, "patch"),
            None,
            "{resource} is read only"
        );
    }
    assert_eq!(grants("", "secrets", "get"), None);
}
