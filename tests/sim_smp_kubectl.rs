//! The sim's strategic merge patch against the real one: `kubectl patch --local` applies a
//! strategic merge patch with the strategicpatch code and API types compiled into kubectl,
//! without a server. Every case here must give the same object (or fail alike) both ways.

use std::process::Command;

use cce_cni_guard::sim::model::Resource;
use cce_cni_guard::sim::smp;
use serde_json::{Value, json};

/// The real implementation's answer: the patched object, or kubectl's stderr.
fn kubectl_patch(original: &Value, patch: &Value) -> Option<Result<Value, String>> {
    let dir = tempfile::tempdir().ok()?;
    let object = dir.path().join("object.json");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&object, original.to_string()).ok()?;
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").ok()?;
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args([
            "patch",
            "--local",
            "--type",
            "strategic",
            "-o",
            "json",
            "-f",
        ])
        .arg(&object)
        .arg("-p")
        .arg(patch.to_string())
        .output()
        .ok()?;
    if output.status.success() {
        let value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("kubectl printed no JSON ({e}) for patch {patch}"));
        Some(Ok(value))
    } else {
        Some(Err(String::from_utf8_lossy(&output.stderr).into_owned()))
    }
}

fn kubectl_available() -> bool {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let message = "kubectl is not on the PATH: the differential strategic merge patch test \
                       cannot run";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{message}");
        }
        eprintln!("\n!!! SKIPPING: {message} !!!\n");
    }
    found
}

/// kubectl prints the map-level result; the apiserver's typed decode drops directive keys
/// left in it, and so does the sim.
fn without_directive_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| {
                    k != "$patch"
                        && k != "$retainKeys"
                        && !k.starts_with("$setElementOrder")
                        && !k.starts_with("$deleteFromPrimitiveList")
                })
                .map(|(k, v)| (k, without_directive_keys(v)))
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(without_directive_keys).collect())
        }
        other => other,
    }
}

fn resource_of(object: &Value) -> Resource {
    match object["kind"].as_str() {
        Some("DaemonSet") => Resource::DaemonSets,
        Some("Deployment") => Resource::Deployments,
        Some("Pod") => Resource::Pods,
        Some("Service") => Resource::Services,
        Some("Node") => Resource::Nodes,
        Some("ConfigMap") => Resource::ConfigMaps,
        other => panic!("no resource for kind {other:?}"),
    }
}

/// Compares every case; returns how many applied and how many were rejected (both ways).
fn check(cases: &[(Value, Value)]) -> (usize, usize) {
    let mut failures = Vec::new();
    let (mut applied, mut rejected) = (0, 0);
    for (original, patch) in cases {
        let Some(theirs) = kubectl_patch(original, patch) else {
            panic!("kubectl could not be run for patch {patch}");
        };
        let ours = smp::apply(resource_of(original), original, patch);
        match (theirs, ours) {
            (Ok(theirs), Ok(ours)) => {
                applied += 1;
                let theirs = without_directive_keys(theirs);
                if theirs != ours {
                    failures.push(format!(
                        "patch {patch}\n  on  {original}\n  kubectl {theirs}\n  sim     {ours}"
                    ));
                }
            }
            (Err(stderr), Err(ours)) => {
                rejected += 1;
                if !stderr.contains(ours.message()) {
                    failures.push(format!(
                        "patch {patch}\n  kubectl failed with {stderr}\n  sim failed with {ours}"
                    ));
                }
            }
            (Ok(theirs), Err(ours)) => failures.push(format!(
                "patch {patch}\n  on  {original}\n  kubectl gave {theirs}\n  sim failed: {ours}"
            )),
            (Err(stderr), Ok(ours)) => failures.push(format!(
                "patch {patch}\n  on  {original}\n  kubectl failed: {stderr}\n  sim gave {ours}"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    (applied, rejected)
}

fn agent_daemonset() -> Value {
    let image = "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.3";
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "cce-cni-node-agent", "namespace": "kube-system",
                     "labels": {"app": "cce-cni-node-agent"}},
        "spec": {
            "selector": {"matchLabels": {"name": "cce-cni-node-agent"}},
            "template": {
                "metadata": {"labels": {"name": "cce-cni-node-agent"}},
                "spec": {
                    "hostNetwork": true,
                    "initContainers": [{"name": "install-cni-binary", "image": image,
                                        "volumeMounts": [{"name": "cni-bin", "mountPath": "/opt/cni/bin"}]}],
                    "containers": [{"name": "cce-cni-node-agent", "image": image,
                                    "env": [{"name": "NODE_NAME", "value": "x"}]}],
                    "tolerations": [{"operator": "Exists"}],
                    "volumes": [{"name": "cni-bin", "hostPath": {"path": "/opt/cni/bin"}}]
                }
            }
        }
    })
}

#[test]
fn kubectl_bodies_patch_like_the_real_strategic_merge() {
    if !kubectl_available() {
        return;
    }
    let image_v4 = "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4";
    let ds = agent_daemonset();
    let ipam = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "cce-eni-ipam", "namespace": "kube-system",
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}\n"}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "cce-eni-ipam"}},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                 "template": {"metadata": {"labels": {"app": "cce-eni-ipam"}},
                              "spec": {"containers": [{"name": "cce-eni-ipam", "image": "i:1",
                                                       "ports": [{"containerPort": 9997, "hostPort": 9997}],
                                                       "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}}}
    });
    let cases = vec![
        // set image (kubectl-wire §2)
        (
            ds.clone(),
            json!({"spec":{"template":{"spec":{
                "$setElementOrder/containers":[{"name":"cce-cni-node-agent"}],
                "$setElementOrder/initContainers":[{"name":"install-cni-binary"}],
                "containers":[{"image":image_v4,"name":"cce-cni-node-agent"}],
                "initContainers":[{"image":image_v4,"name":"install-cni-binary"}]}}}}),
        ),
        // rollout undo (§8.2)
        (
            ds.clone(),
            json!({"spec":{"template":{"$patch":"replace",
                "metadata":{"creationTimestamp":null,"labels":{"name":"cce-cni-node-agent"}},
                "spec":{"containers":[{"image":"x:v1.9.2","name":"cce-cni-node-agent"}]}}}}),
        ),
        // apply (§9.3)
        (
            ipam.clone(),
            json!({"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"a\":1}\n"}},
                   "spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"cce-eni-ipam"}],
                   "containers":[{"image":image_v4,"name":"cce-eni-ipam"}]}}}}),
        ),
        // edit (§9.4): env changed, one removed, one added; strategy switched
        (
            ipam.clone(),
            json!({"spec":{"replicas":2,
                "strategy":{"$retainKeys":["type"],"rollingUpdate":null,"type":"Recreate"},
                "template":{"spec":{"$setElementOrder/containers":[{"name":"cce-eni-ipam"}],
                "containers":[{"$setElementOrder/env":[{"name":"B"},{"name":"C"}],
                               "env":[{"$patch":"delete","name":"A"},{"name":"B","value":"3"},{"name":"C","value":"4"}],
                               "name":"cce-eni-ipam"}]}}}}),
        ),
        // patch without an order list, adding a container and a port
        (
            ipam.clone(),
            json!({"spec":{"template":{"spec":{"containers":[
                {"name":"sidecar","image":"s"},
                {"name":"cce-eni-ipam","ports":[{"containerPort":9998,"hostPort":9998}]}]}}}}),
        ),
        // directive errors
        (
            ipam.clone(),
            json!({"spec":{"strategy":{"$patch":"merge","type":"Recreate"}}}),
        ),
        (
            ipam.clone(),
            json!({"spec":{"template":{"spec":{"containers":[{"name":"x","$patch":"merge"}]}}}}),
        ),
        (
            ipam.clone(),
            json!({"spec":{"template":{"spec":{"containers":[{"image":"no-name"}]}}}}),
        ),
        (
            ipam.clone(),
            json!({"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":{"maxSurge":2}}}}),
        ),
        // tolerations replace, volumes retainKeys, finalizers
        (
            ds.clone(),
            json!({"metadata":{"finalizers":["a","b"]},"spec":{"template":{"spec":{
                "tolerations":[{"key":"k","operator":"Exists"}],
                "volumes":[{"$retainKeys":["emptyDir","name"],"emptyDir":{},"name":"cni-bin"}]}}}}),
        ),
        // node taints and pod conditions
        (
            json!({"apiVersion":"v1","kind":"Node","metadata":{"name":"n"},
                   "spec":{"taints":[{"key":"a","effect":"NoSchedule"}]},
                   "status":{"conditions":[{"type":"Ready","status":"True"},{"type":"DiskPressure","status":"False"}]}}),
            json!({"spec":{"taints":[{"key":"b","effect":"NoSchedule"}]},
                   "status":{"conditions":[{"type":"Ready","status":"False"}]}}),
        ),
        // service ports by port
        (
            json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},
                   "spec":{"ports":[{"port":80,"name":"http"},{"port":443,"name":"https"}]}}),
            json!({"spec":{"ports":[{"port":443,"targetPort":8443},{"port":8080}]}}),
        ),
    ];
    let (applied, rejected) = check(&cases);
    assert_eq!((applied, rejected), (8, 4));
}

/// A small deterministic generator (xorshift), so the cases are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn some<'a>(&mut self, items: &[&'a str], at_most: usize) -> Vec<&'a str> {
        let mut chosen: Vec<&str> = Vec::new();
        for _ in 0..self.below(at_most + 1) {
            let item = self.pick(items);
            if !chosen.contains(&item) {
                chosen.push(item);
            }
        }
        chosen
    }
}

fn generated_original(rng: &mut Rng) -> Value {
    let names = ["a", "b", "c", "d"];
    let containers: Vec<Value> = rng
        .some(&names, 3)
        .into_iter()
        .map(|name| {
            let env: Vec<Value> = rng
                .some(&["A", "B", "C", "D"], 3)
                .into_iter()
                .map(|n| json!({"name": n, "value": "1"}))
                .collect();
            json!({"name": name, "image": "img:1", "env": env, "args": ["--a", "--b"]})
        })
        .collect();
    let mut original = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "x", "labels": {"app": "x", "tier": "t"}},
        "spec": {"selector": {"matchLabels": {"app": "x"}},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                 "template": {"metadata": {"labels": {"app": "x"}},
                              "spec": {"containers": containers}}}
    });
    if rng.chance(50) {
        original["metadata"]["finalizers"] = json!(rng.some(&["f1", "f2", "f3"], 3));
    }
    original
}

fn generated_list_patch(
    rng: &mut Rng,
    names: &[&str],
    item: &mut dyn FnMut(&mut Rng, &str) -> Value,
) -> Vec<Value> {
    rng.some(names, 3)
        .into_iter()
        .map(|name| match rng.below(10) {
            0 => json!({"name": name, "$patch": "delete"}),
            1 => json!({"$patch": rng.pick(&["replace", "delete"])}),
            _ => item(rng, name),
        })
        .collect()
}

fn order_for(rng: &mut Rng, items: &[Value], extra: &[&str]) -> Vec<Value> {
    let mut order: Vec<String> = items
        .iter()
        .filter(|i| i.get("$patch").is_none())
        .filter_map(|i| i["name"].as_str().map(str::to_string))
        .collect();
    for name in rng.some(extra, 2) {
        if !order.iter().any(|o| o == name) {
            let at = rng.below(order.len() + 1);
            order.insert(at, name.to_string());
        }
    }
    if rng.chance(10) {
        order.reverse();
    }
    order.into_iter().map(|n| json!({"name": n})).collect()
}

fn generated_patch(rng: &mut Rng) -> Value {
    let mut patch = json!({});
    if rng.chance(30) {
        patch["metadata"] = match rng.below(4) {
            0 => json!({"labels": {"tier": null, "new": "v"}}),
            1 => json!({"$deleteFromPrimitiveList/finalizers": rng.some(&["f1", "f9"], 2)}),
            2 => json!({"$setElementOrder/finalizers": rng.some(&["f3", "f2", "f1", "f5"], 4)}),
            _ => json!({"finalizers": rng.some(&["f1", "f5"], 2)}),
        };
    }
    if rng.chance(25) {
        patch["spec"]["strategy"] = match rng.below(3) {
            0 => json!({"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}),
            1 => json!({"$patch": "replace", "type": "Recreate"}),
            _ => json!({"rollingUpdate": {"maxUnavailable": 1}}),
        };
    }
    let containers = generated_list_patch(rng, &["a", "b", "c", "e"], &mut |rng, name| {
        let mut container = json!({"name": name});
        if rng.chance(60) {
            container["image"] = json!(rng.pick(&["img:2", "img:1"]));
        }
        if rng.chance(60) {
            let env = generated_list_patch(
                rng,
                &["A", "B", "C", "E"],
                &mut |rng, n| json!({"name": n, "value": rng.pick(&["2", "3"])}),
            );
            if rng.chance(50) {
                container["$setElementOrder/env"] = json!(order_for(rng, &env, &["A", "D"]));
            }
            container["env"] = json!(env);
        }
        if rng.chance(15) {
            container["$deleteFromPrimitiveList/args"] = json!(["--a"]);
        }
        container
    });
    if rng.chance(60) {
        patch["spec"]["template"]["spec"]["$setElementOrder/containers"] =
            json!(order_for(rng, &containers, &["d", "c"]));
    }
    patch["spec"]["template"]["spec"]["containers"] = json!(containers);
    patch
}

#[test]
fn generated_patches_match_kubectl() {
    if !kubectl_available() {
        return;
    }
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let cases: Vec<(Value, Value)> = (0..48)
        .map(|_| (generated_original(&mut rng), generated_patch(&mut rng)))
        .collect();
    let (applied, rejected) = check(&cases);
    // The generator must reach both the merge paths and the error paths.
    assert!(
        applied >= 24 && rejected >= 2,
        "{applied} applied, {rejected} rejected"
    );
}

#[test]
fn the_kubectl_helper_reports_failures() {
    if !kubectl_available() {
        return;
    }
    // A patch that cannot apply must come back as kubectl's error, not as an object.
    let answer = kubectl_patch(
        &agent_daemonset(),
        &json!({"spec":{"template":{"spec":{"containers":[{"name":"x","$patch":"merge"}]}}}}),
    );
    let Some(Err(stderr)) = answer else {
        panic!("expected kubectl to fail, got {answer:?}");
    };
    assert!(
        stderr.contains("merging lists cannot yet be specified"),
        "{stderr}"
    );
}
