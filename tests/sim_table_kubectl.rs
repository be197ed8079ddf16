//! Real kubectl prints the sim's Tables as it prints a real apiserver's: a minimal HTTP
//! endpoint serves discovery and `table::render` output, and `kubectl get` (plain and
//! `-o wide`) must print the expected columns and cells.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;

use cce_cni_guard::sim::model::{Object, Resource};
use cce_cni_guard::sim::table;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

fn kubectl_available() -> bool {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let message = "kubectl is not on the PATH: the Table printing test cannot run";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{message}");
        }
        eprintln!("\n!!! SKIPPING: {message} !!!\n");
    }
    found
}

fn days_ago(days: i64) -> String {
    (OffsetDateTime::now_utc() - Duration::days(days))
        .format(&Rfc3339)
        .unwrap()
}

fn api_resource(name: &str, kind: &str, short: &str, namespaced: bool) -> Value {
    json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
           "verbs": ["get", "list", "watch"], "shortNames": [short]})
}

/// Serves `routes` (path → JSON body) over plain HTTP until the process ends.
fn serve(routes: HashMap<String, String>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // Drain the headers; every request here is a bodiless GET.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .split('?')
                .next()
                .unwrap_or("/")
                .to_string();
            let (status, body) = match routes.get(&path) {
                Some(body) => ("200 OK", body.clone()),
                None => (
                    "404 Not Found",
                    r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#
                        .to_string(),
                ),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn kubectl_get(port: u16, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: sim, cluster: {{server: \"http://127.0.0.1:{port}\"}}}}]\n\
             contexts: [{{name: sim, context: {{cluster: sim, user: u}}}}]\nusers: [{{name: u, user: {{}}}}]\n\
             current-context: sim\n"
        ),
    )
    .unwrap();
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args(["-n", "kube-system", "get"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl get {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn kubectl_prints_the_sims_tables() {
    if !kubectl_available() {
        return;
    }
    let image = "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.3";
    let daemonset = json!({
        "kind": "DaemonSet", "apiVersion": "apps/v1",
        "metadata": {"name": "cce-cni-node-agent", "namespace": "kube-system", "creationTimestamp": days_ago(90)},
        "spec": {"selector": {"matchLabels": {"name": "cce-cni-node-agent"}},
                 "template": {"spec": {
                     "initContainers": [{"name": "install-cni-binary", "image": image}],
                     "containers": [{"name": "cce-cni-node-agent", "image": image}]}}},
        "status": {"desiredNumberScheduled": 5, "currentNumberScheduled": 5, "numberReady": 4,
                   "updatedNumberScheduled": 3, "numberAvailable": 4}
    });
    let deployment = json!({
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": "cce-eni-ipam", "namespace": "kube-system", "creationTimestamp": days_ago(90)},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "cce-eni-ipam"}},
                 "template": {"spec": {"nodeSelector": {"cluster-role": "master"},
                                       "containers": [{"name": "cce-eni-ipam", "image": image}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 1, "availableReplicas": 2}
    });
    let pod = json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": "cce-eni-ipam-6f7d9-x2x4q", "namespace": "kube-system", "creationTimestamp": days_ago(3)},
        "spec": {"nodeName": "10.0.0.3", "containers": [{"name": "cce-eni-ipam", "image": image}]},
        "status": {"phase": "Pending", "podIPs": [{"ip": "10.0.0.3"}],
                   "containerStatuses": [{"name": "cce-eni-ipam", "ready": false, "restartCount": 0,
                                          "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}
    });
    let event = json!({
        "kind": "Event", "apiVersion": "v1",
        "metadata": {"name": "cce-eni-ipam-6f7d9-x2x4q.1", "namespace": "kube-system"},
        "involvedObject": {"kind": "Pod", "name": "cce-eni-ipam-6f7d9-x2x4q"},
        "type": "Warning", "reason": "Failed", "message": "Error: ImagePullBackOff",
        "source": {"component": "kubelet", "host": "10.0.0.3"},
        "firstTimestamp": days_ago(3), "lastTimestamp": days_ago(2), "count": 12
    });
    let now = OffsetDateTime::now_utc();
    let table = |resource: Resource, object: Value| {
        let objects: Vec<Object> = vec![Arc::new(object)];
        table::render(resource, &objects, "100", now).to_string()
    };
    let mut routes = HashMap::new();
    routes.insert(
        "/version".to_string(),
        json!({"major": "1", "minor": "30", "gitVersion": "v1.30.4", "platform": "linux/amd64"})
            .to_string(),
    );
    routes.insert(
        "/api".to_string(),
        json!({"kind": "APIVersions", "versions": ["v1"],
               "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
        .to_string(),
    );
    routes.insert(
        "/apis".to_string(),
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{"name": "apps",
               "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
               "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]})
        .to_string(),
    );
    routes.insert(
        "/api/v1".to_string(),
        json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            api_resource("pods", "Pod", "po", true), api_resource("events", "Event", "ev", true)]})
        .to_string(),
    );
    routes.insert(
        "/apis/apps/v1".to_string(),
        json!({"kind": "APIResourceList", "groupVersion": "apps/v1", "resources": [
            api_resource("daemonsets", "DaemonSet", "ds", true),
            api_resource("deployments", "Deployment", "deploy", true)]})
        .to_string(),
    );
    routes.insert(
        "/apis/apps/v1/namespaces/kube-system/daemonsets/cce-cni-node-agent".to_string(),
        table(Resource::DaemonSets, daemonset),
    );
    routes.insert(
        "/apis/apps/v1/namespaces/kube-system/deployments/cce-eni-ipam".to_string(),
        table(Resource::Deployments, deployment),
    );
    routes.insert(
        "/api/v1/namespaces/kube-system/pods".to_string(),
        table(Resource::Pods, pod),
    );
    routes.insert(
        "/api/v1/namespaces/kube-system/events".to_string(),
        table(Resource::Events, event),
    );
    let port = serve(routes);

    assert_eq!(
        kubectl_get(port, &["ds", "cce-cni-node-agent"]),
        "NAME                 DESIRED   CURRENT   READY   UP-TO-DATE   AVAILABLE   NODE SELECTOR   AGE\n\
         cce-cni-node-agent   5         5         4       3            4           <none>          90d\n"
    );
    assert_eq!(
        kubectl_get(port, &["ds", "cce-cni-node-agent", "-o", "wide"]),
        format!(
            "NAME                 DESIRED   CURRENT   READY   UP-TO-DATE   AVAILABLE   NODE SELECTOR   AGE   CONTAINERS           IMAGES                                                SELECTOR\n\
             cce-cni-node-agent   5         5         4       3            4           <none>          90d   cce-cni-node-agent   {image}   name=cce-cni-node-agent\n"
        )
    );
    assert_eq!(
        kubectl_get(port, &["deploy", "cce-eni-ipam"]),
        "NAME           READY   UP-TO-DATE   AVAILABLE   AGE\n\
         cce-eni-ipam   2/3     1            2           90d\n"
    );
    assert_eq!(
        kubectl_get(port, &["pods", "-o", "wide"]),
        "NAME                       READY   STATUS             RESTARTS   AGE   IP         NODE       NOMINATED NODE   READINESS GATES\n\
         cce-eni-ipam-6f7d9-x2x4q   0/1     ImagePullBackOff   0          3d    10.0.0.3   10.0.0.3   <none>           <none>\n"
    );
    assert_eq!(
        kubectl_get(port, &["events"]),
        "LAST SEEN   TYPE      REASON   OBJECT                         MESSAGE\n\
         2d          Warning   Failed   pod/cce-eni-ipam-6f7d9-x2x4q   Error: ImagePullBackOff\n"
    );
}
