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
