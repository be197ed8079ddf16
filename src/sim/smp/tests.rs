use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const IMAGE_V3: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.3";
const IMAGE_V4: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4";

fn patched(resource: Resource, original: &Value, patch: Value) -> Value {
    match apply(resource, original, &patch) {
        Ok(value) => value,
        Err(e) => panic!("patch {patch} failed: {e}"),
    }
}

fn failure(resource: Resource, original: &Value, patch: Value) -> String {
    match apply(resource, original, &patch) {
        Ok(value) => panic!("patch {patch} unexpectedly gave {value}"),
        Err(e) => e.to_string(),
    }
}

fn agent_daemonset() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "cce-cni-node-agent", "namespace": "kube-system",
                     "generation": 2, "labels": {"app": "cce-cni-node-agent"}},
        "spec": {
            "selector": {"matchLabels": {"name": "cce-cni-node-agent"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"name": "cce-cni-node-agent"},
                             "annotations": {"restarted": "yes"}},
                "spec": {
                    "hostNetwork": true,
                    "initContainers": [{
                        "name": "install-cni-binary", "image": IMAGE_V3,
                        "command": ["/install.sh"],
                        "volumeMounts": [{"name": "cni-bin", "mountPath": "/opt/cni/bin"}]
                    }],
                    "containers": [{
                        "name": "cce-cni-node-agent", "image": IMAGE_V3,
                        "imagePullPolicy": "Always", "args": ["--v=3"],
                        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
                    }],
                    "tolerations": [{"operator": "Exists"}],
                    "volumes": [{"name": "cni-bin", "hostPath": {"path": "/opt/cni/bin"}}]
                }
            }
        },
        "status": {"desiredNumberScheduled": 5, "numberReady": 5}
    })
}

fn ipam_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "cce-eni-ipam", "namespace": "kube-system",
                     "labels": {"app": "cce-eni-ipam", "tier": "control"},
                     "annotations": {"deployment.kubernetes.io/revision": "2",
                                     "kubectl.kubernetes.io/last-applied-configuration": "{\"old\":true}\n"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "cce-eni-ipam"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "cce-eni-ipam"}},
                "spec": {
                    "hostNetwork": true,
                    "nodeSelector": {"cluster-role": "master"},
                    "containers": [{
                        "name": "cce-eni-ipam", "image": IMAGE_V3,
                        "ports": [{"containerPort": 9997, "hostPort": 9997},
                                  {"containerPort": 9998, "hostPort": 9998}],
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "1"}]
                    }]
                }
            }
        }
    })
}

fn pod_spec(object: &Value) -> &Value {
    &object["spec"]["template"]["spec"]
}

// --- The bodies real kubectl sends -------------------------------------------------------

#[test]
fn kubectl_set_image_body_updates_both_images_and_keeps_the_rest() {
    let original = agent_daemonset();
    let body = json!({"spec":{"template":{"spec":{
        "$setElementOrder/containers":[{"name":"cce-cni-node-agent"}],
        "$setElementOrder/initContainers":[{"name":"install-cni-binary"}],
        "containers":[{"image":IMAGE_V4,"name":"cce-cni-node-agent"}],
        "initContainers":[{"image":IMAGE_V4,"name":"install-cni-binary"}]}}}});
    let result = patched(Resource::DaemonSets, &original, body);

    let mut expected = original.clone();
    expected["spec"]["template"]["spec"]["containers"][0]["image"] = json!(IMAGE_V4);
    expected["spec"]["template"]["spec"]["initContainers"][0]["image"] = json!(IMAGE_V4);
    assert_eq!(result, expected);
}

#[test]
fn set_image_of_one_container_keeps_the_order_of_its_siblings() {
    let mut original = agent_daemonset();
    original["spec"]["template"]["spec"]["containers"] = json!([
        {"name": "first", "image": "a:1"},
        {"name": "cce-cni-node-agent", "image": IMAGE_V3},
        {"name": "last", "image": "c:1"}
    ]);
    let body = json!({"spec":{"template":{"spec":{
        "$setElementOrder/containers":[{"name":"first"},{"name":"cce-cni-node-agent"},{"name":"last"}],
        "containers":[{"image":IMAGE_V4,"name":"cce-cni-node-agent"}]}}}});
    let result = patched(Resource::DaemonSets, &original, body);
    assert_eq!(
        pod_spec(&result)["containers"],
        json!([
            {"name": "first", "image": "a:1"},
            {"name": "cce-cni-node-agent", "image": IMAGE_V4},
            {"name": "last", "image": "c:1"}
        ])
    );
}

#[test]
fn daemonset_rollout_undo_replaces_the_whole_template() {
    let original = agent_daemonset();
    // The target ControllerRevision's data, as kubectl sends it.
    let body = json!({"spec":{"template":{"$patch":"replace",
        "metadata":{"creationTimestamp":null,"labels":{"name":"cce-cni-node-agent"}},
        "spec":{"containers":[{"image":"registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.2",
                               "imagePullPolicy":"Always","name":"cce-cni-node-agent"}],
                "initContainers":[{"image":"registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.2",
                                   "name":"install-cni-binary"}]}}}});
    let result = patched(Resource::DaemonSets, &original, body);
    assert_eq!(
        result["spec"]["template"],
        json!({
            "metadata": {"creationTimestamp": null, "labels": {"name": "cce-cni-node-agent"}},
            "spec": {
                "containers": [{"image": "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.2",
                                "imagePullPolicy": "Always", "name": "cce-cni-node-agent"}],
                "initContainers": [{"image": "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.2",
                                    "name": "install-cni-binary"}]
            }
        })
    );
    // Everything outside the template is untouched.
    assert_eq!(result["spec"]["selector"], original["spec"]["selector"]);
    assert_eq!(
        result["spec"]["updateStrategy"],
        original["spec"]["updateStrategy"]
    );
    assert_eq!(result["status"], original["status"]);
    assert_eq!(result["metadata"], original["metadata"]);
}

#[test]
fn kubectl_apply_three_way_patch_sets_annotation_and_image() {
    let original = ipam_deployment();
    let last_applied = "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\"}\n";
    let body = json!({
        "metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":last_applied}},
        "spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"cce-eni-ipam"}],
            "containers":[{"image":IMAGE_V4,"name":"cce-eni-ipam"}]}}}});
    let result = patched(Resource::Deployments, &original, body);
    assert_eq!(
        result["metadata"]["annotations"],
        json!({"deployment.kubernetes.io/revision": "2",
               "kubectl.kubernetes.io/last-applied-configuration": last_applied})
    );
    let container = &pod_spec(&result)["containers"][0];
    assert_eq!(container["image"], json!(IMAGE_V4));
    assert_eq!(
        container["ports"],
        pod_spec(&original)["containers"][0]["ports"]
    );
    assert_eq!(result["spec"]["strategy"], original["spec"]["strategy"]);
}

#[test]
fn kubectl_edit_two_way_patch_changes_env_replicas_and_drops_a_label() {
    let original = ipam_deployment();
    // Edited: replicas 3→2, env B changed, env C added after B, label tier removed.
    let body = json!({
        "metadata":{"labels":{"tier":null}},
        "spec":{"replicas":2,"template":{"spec":{
            "$setElementOrder/containers":[{"name":"cce-eni-ipam"}],
            "containers":[{"$setElementOrder/env":[{"name":"A"},{"name":"B"},{"name":"C"}],
                           "env":[{"name":"B","value":"2"},{"name":"C","value":"3"}],
                           "name":"cce-eni-ipam"}]}}}});
    let result = patched(Resource::Deployments, &original, body);
    assert_eq!(result["metadata"]["labels"], json!({"app": "cce-eni-ipam"}));
    assert_eq!(result["spec"]["replicas"], json!(2));
    assert_eq!(
        pod_spec(&result)["containers"][0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}])
    );
    assert!(
        !result.to_string().contains("$setElementOrder"),
        "directives must not reach the stored object: {result}"
    );
}

#[test]
fn kubectl_patch_without_set_element_order_merges_by_name() {
    let original = ipam_deployment();
    let body = json!({"spec":{"template":{"spec":{"containers":[
        {"name":"cce-eni-ipam","image":IMAGE_V4},
        {"name":"sidecar","image":"busybox"}]}}}});
    let result = patched(Resource::Deployments, &original, body);
    let containers = &pod_spec(&result)["containers"];
    assert_eq!(containers[0]["name"], "cce-eni-ipam");
    assert_eq!(containers[0]["image"], IMAGE_V4);
    assert_eq!(
        containers[0]["env"],
        pod_spec(&original)["containers"][0]["env"]
    );
    assert_eq!(
        containers[1],
        json!({"name": "sidecar", "image": "busybox"})
    );
}

#[test]
fn scale_style_merge_of_a_scalar() {
    let result = patched(
        Resource::Deployments,
        &ipam_deployment(),
        json!({"spec": {"replicas": 0}}),
    );
    assert_eq!(result["spec"]["replicas"], json!(0));
}

// --- Directives -------------------------------------------------------------------------

#[test]
fn patch_replace_on_a_map_keeps_only_the_rest_of_the_patch_map() {
    let result = patched(
        Resource::Deployments,
        &ipam_deployment(),
        json!({"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}}),
    );
    assert_eq!(result["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn patch_replace_at_the_root_replaces_the_object() {
    let result = patched(
        Resource::ConfigMaps,
        &json!({"kind": "ConfigMap", "data": {"a": "1"}}),
        json!({"$patch": "replace", "kind": "ConfigMap", "data": {"b": "2"}}),
    );
    assert_eq!(result, json!({"kind": "ConfigMap", "data": {"b": "2"}}));
}

#[test]
fn patch_delete_on_a_map_empties_it() {
    let result = patched(
        Resource::Deployments,
        &ipam_deployment(),
        json!({"spec": {"template": {"spec": {"nodeSelector": {"$patch": "delete"}}}}}),
    );
    assert_eq!(pod_spec(&result)["nodeSelector"], json!({}));
}

#[test]
fn patch_delete_on_a_list_item_removes_it_by_merge_key() {
    let result = patched(
        Resource::Deployments,
        &ipam_deployment(),
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "cce-eni-ipam", "env": [{"name": "A", "$patch": "delete"}]}
        ]}}}}),
    );
    assert_eq!(
        pod_spec(&result)["containers"][0]["env"],
        json!([{"name": "B", "value": "1"}])
    );
}

#[test]
fn patch_delete_on_a_list_item_needs_the_merge_key() {
    let message = failure(
        Resource::Deployments,
        &ipam_deployment(),
        json!({"spec": {"template": {"spec": {"containers": [{"$patch": "delete"}]}}}}),
    );
    assert_eq!(
        message,
        "map: map[$patch:delete] does not contain declared merge key: name"
    );
}

#[test]
fn patch_replace_in_a_list_replaces_the_list() {
    let result = patched(
        Resource::Deployments,
        &ipam_deployment(),
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "cce-eni-ipam", "ports": [{"$patch": "replace"}, {"containerPort": 80}]}
        ]}}}}),
    );
    assert_eq!(
        pod_spec(&result)["containers"][0]["ports"],
        json!([{"containerPort": 80}])
    );
}

#[test]
fn patch_merge_is_rejected_as_upstream_rejects_it() {
    let on_map = failure(
        Resource::Deployments,
        &ipam_deployment(),
        json!({"spec": {"strategy": {"$patch": "merge", "type": "Recreate"}}}),
    );
    assert_eq!(
        on_map,
        "unknown patch type: merge in map: map[$patch:merge type:Recreate]"
    );
    let in_list = failure(
        Resource::Deployments,
        &ipam_deployment(),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "x", "$patch": "merge"}]}}}}),
    );
    assert_eq!(
        in_list,
        "merging lists cannot yet be specified in the patch"
    );
}

#[test]
fn unknown_patch_type_is_an_error() {
    let message = failure(
        Resource::ConfigMaps,
        &json!({"data": {"a": "1"}}),
        json!({"data": {"$patch": "explode"}}),
    );
    assert_eq!(
        message,
        "unknown patch type: explode in map: map[$patch:explode]"
    );
}

#[test]
fn unknown_directive_is_an_error() {
    let message = failure(
        Resource::Pods,
        &json!({"spec": {}}),
        json!({"spec": {"$frobnicate": true}}),
    );
    assert!(message.contains("$frobnicate"), "{message}");
}

#[test]
fn delete_from_primitive_list_removes_finalizers() {
    let original = json!({"metadata": {"name": "ns", "finalizers": ["a", "b", "c", "b"]}});
    let result = patched(
        Resource::Namespaces,
        &original,
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zzz"]}}),
    );
    assert_eq!(result["metadata"]["finalizers"], json!(["a", "c"]));
}

#[test]
fn delete_from_primitive_list_of_a_missing_list_adds_nothing() {
    let original = json!({"metadata": {"name": "ns"}});
    let result = patched(
        Resource::Namespaces,
        &original,
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
    );
    assert_eq!(result, original);
}

#[test]
fn malformed_delete_from_primitive_list_key_is_an_error() {
    let message = failure(
        Resource::Namespaces,
        &json!({"metadata": {"finalizers": ["a"]}}),
        json!({"metadata": {"$deleteFromPrimitiveListfinalizers": ["a"]}}),
    );
    assert_eq!(message, "invalid patch format of primitive list");
}

#[test]
fn finalizers_merge_as_a_set() {
    let original = json!({"metadata": {"finalizers": ["a", "b"]}});
    let result = patched(
        Resource::Pods,
        &original,
        json!({"metadata": {"finalizers": ["b", "c"]}}),
    );
    assert_eq!(result["metadata"]["finalizers"], json!(["a", "b", "c"]));
}

#[test]
fn retain_keys_clears_unlisted_strategy_fields() {
    // What kubectl apply sends when switching the strategy to Recreate.
    let result = patched(
        Resource::Deployments,
        &ipam_deployment(),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}),
    );
    assert_eq!(result["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn retain_keys_must_list_every_patched_field() {
    let message = failure(
        Resource::Deployments,
        &ipam_deployment(),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}}),
    );
    assert_eq!(message, "invalid patch format of retainKeys");
    let not_a_list = failure(
        Resource::Deployments,
        &ipam_deployment(),
        json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
    );
    assert_eq!(not_a_list, "invalid patch format of retainKeys");
}

#[test]
fn retain_keys_on_volume_list_items() {
    let original = agent_daemonset();
    let body = json!({"spec": {"template": {"spec": {"volumes": [
        {"$retainKeys": ["emptyDir", "name"], "emptyDir": {}, "name": "cni-bin"}
    ]}}}});
    let result = patched(Resource::DaemonSets, &original, body);
    assert_eq!(
        pod_spec(&result)["volumes"],
        json!([{"name": "cni-bin", "emptyDir": {}}])
    );
}

#[test]
fn set_element_order_reorders_without_a_patch_list() {
    let original = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}});
    let result = patched(
        Resource::Pods,
        &original,
        json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}}),
    );
    assert_eq!(
        result["spec"]["containers"],
        json!([{"name": "c"}, {"name": "a"}, {"name": "b"}])
    );
}

#[test]
fn set_element_order_that_contradicts_the_patch_list_is_an_error() {
    let original = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
    let message = failure(
        Resource::Pods,
        &original,
        json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                        "containers": [{"name": "b", "image": "x"}, {"name": "a", "image": "y"}]}}),
    );
    assert!(
        message.contains("doesn't match $setElementOrder list"),
        "{message}"
    );
}

#[test]
fn set_element_order_must_be_a_list() {
    let message = failure(
        Resource::Pods,
        &json!({"spec": {"containers": []}}),
        json!({"spec": {"$setElementOrder/containers": {"name": "a"}}}),
    );
    assert_eq!(
        message,
        "expected a []interface {}, but received a map[string]interface {}"
    );
    let bad_key = failure(
        Resource::Pods,
        &json!({"spec": {"containers": []}}),
        json!({"spec": {"$setElementOrder": []}}),
    );
    assert_eq!(bad_key, "invalid patch format of setElementOrder list");
}

#[test]
fn null_deletes_keys_and_unmatched_nulls_are_ignored() {
    let original = json!({"data": {"a": "1", "b": "2"}});
    let result = patched(
        Resource::ConfigMaps,
        &original,
        json!({"data": {"a": null, "zzz": null}, "binaryData": null}),
    );
    assert_eq!(result, json!({"data": {"b": "2"}}));
}

#[test]
fn new_values_drop_nulls_and_maps_carrying_patch_directives() {
    // Upstream removeDirectives: a new value drops every map that carries `$patch`.
    let result = patched(
        Resource::Pods,
        &json!({"spec": {}}),
        json!({"spec": {"containers": [{"name": "c", "env": [{"name": "X", "$patch": "delete"}],
                                        "resources": {"limits": null, "requests": {"cpu": "1"}}}],
                        "dnsConfig": {"options": null, "searches": ["a"], "$patch": "merge"}}}),
    );
    assert_eq!(
        result,
        json!({"spec": {"containers": [{"name": "c", "env": [],
                                        "resources": {"requests": {"cpu": "1"}}}]}})
    );
}

#[test]
fn appended_list_items_keep_their_nested_content_raw() {
    // An item appended to a merging list is taken as sent; only the decode drops `$patch`.
    let result = patched(
        Resource::Pods,
        &json!({"spec": {"containers": [{"name": "a"}]}}),
        json!({"spec": {"containers": [{"name": "z", "env": [{"name": "X", "$patch": "delete"}]}]}}),
    );
    assert_eq!(
        result["spec"]["containers"],
        json!([{"name": "z", "env": [{"name": "X"}]}, {"name": "a"}])
    );
}

#[test]
fn a_patch_that_is_not_an_object_is_rejected() {
    for (patch, kind) in [
        (json!([1]), "array"),
        (json!("x"), "string"),
        (json!(3), "number"),
        (json!(true), "bool"),
    ] {
        assert_eq!(
            failure(Resource::Pods, &json!({}), patch),
            format!(
                "json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"
            )
        );
    }
}

#[test]
fn a_null_patch_changes_nothing_as_upstream() {
    let original = ipam_deployment();
    assert_eq!(
        patched(Resource::Deployments, &original, Value::Null),
        original
    );
}

#[test]
fn missing_merge_key_is_reported_like_the_apiserver() {
    let message = failure(
        Resource::Pods,
        &json!({"spec": {"containers": [{"name": "a"}]}}),
        json!({"spec": {"containers": [{"image": "b"}]}}),
    );
    assert_eq!(
        message,
        "map: map[image:b] does not contain declared merge key: name"
    );
}

#[test]
fn mixed_list_item_types_are_an_error() {
    let message = failure(
        Resource::Pods,
        &json!({"metadata": {"finalizers": ["a"]}}),
        json!({"metadata": {"finalizers": [1]}}),
    );
    assert_eq!(message, "list element types are not identical: [[a] [1]]");
    let lists = failure(
        Resource::Pods,
        &json!({"metadata": {"finalizers": [["a"]]}}),
        json!({"metadata": {"finalizers": [["b"]]}}),
    );
    assert_eq!(lists, "lists of lists are not supported");
}

#[test]
fn maps_as_merge_key_values_are_an_error_not_a_panic() {
    let message = failure(
        Resource::Pods,
        &json!({"spec": {"containers": [{"name": {"x": 1}}]}}),
        json!({"spec": {"containers": [{"name": {"x": 1}}]}}),
    );
    assert!(message.contains("uncomparable"), "{message}");
}

// --- Merge keys and strategies of the schema ----------------------------------------------

#[test]
fn tolerations_and_taints_are_replaced_whole() {
    let original = agent_daemonset();
    let result = patched(
        Resource::DaemonSets,
        &original,
        json!({"spec": {"template": {"spec": {"tolerations": [{"key": "a", "operator": "Exists"}]}}}}),
    );
    assert_eq!(
        pod_spec(&result)["tolerations"],
        json!([{"key": "a", "operator": "Exists"}])
    );
    let node = json!({"spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]}});
    let result = patched(
        Resource::Nodes,
        &node,
        json!({"spec": {"taints": [{"key": "y", "effect": "NoSchedule"}]}}),
    );
    assert_eq!(
        result["spec"]["taints"],
        json!([{"key": "y", "effect": "NoSchedule"}])
    );
}

#[test]
fn container_ports_merge_by_container_port() {
    let result = patched(
        Resource::Deployments,
        &ipam_deployment(),
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "cce-eni-ipam", "ports": [{"containerPort": 9998, "hostPort": 19998}]}
        ]}}}}),
    );
    assert_eq!(
        pod_spec(&result)["containers"][0]["ports"],
        json!([{"containerPort": 9997, "hostPort": 9997}, {"containerPort": 9998, "hostPort": 19998}])
    );
}

#[test]
fn init_container_volume_mounts_merge_by_mount_path() {
    let result = patched(
        Resource::DaemonSets,
        &agent_daemonset(),
        json!({"spec": {"template": {"spec": {"initContainers": [
            {"name": "install-cni-binary", "volumeMounts": [{"mountPath": "/etc/cni", "name": "cni-conf"}]}
        ]}}}}),
    );
    // Without an order list upstream puts an item the live list lacks before the
    // server-only ones.
    assert_eq!(
        pod_spec(&result)["initContainers"][0]["volumeMounts"],
        json!([{"name": "cni-conf", "mountPath": "/etc/cni"},
               {"name": "cni-bin", "mountPath": "/opt/cni/bin"}])
    );
}

#[test]
fn owner_references_merge_by_uid() {
    let original = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "rs-a"}]}});
    let result = patched(
        Resource::Pods,
        &original,
        json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "rs-b"}]}}),
    );
    assert_eq!(
        result["metadata"]["ownerReferences"],
        json!([{"uid": "2", "name": "rs-b"}, {"uid": "1", "name": "rs-a"}])
    );
}

#[test]
fn status_conditions_merge_by_type() {
    let original = json!({"status": {"conditions": [
        {"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True"}]}});
    for resource in [
        Resource::Deployments,
        Resource::DaemonSets,
        Resource::Pods,
        Resource::Nodes,
    ] {
        let result = patched(
            resource,
            &original,
            json!({"status": {"conditions": [{"type": "Available", "status": "False"}]}}),
        );
        assert_eq!(
            result["status"]["conditions"],
            json!([{"type": "Available", "status": "False"}, {"type": "Progressing", "status": "True"}]),
            "{resource:?}"
        );
    }
}

#[test]
fn service_ports_merge_by_port() {
    let original =
        json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
    let result = patched(
        Resource::Services,
        &original,
        json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}),
    );
    assert_eq!(
        result["spec"]["ports"],
        json!([{"port": 80, "name": "http"}, {"port": 443, "name": "https", "targetPort": 8443}])
    );
}

#[test]
fn webhooks_merge_by_name() {
    let original = json!({"webhooks": [{"name": "a.example", "failurePolicy": "Fail"},
                                       {"name": "b.example", "failurePolicy": "Fail"}]});
    let result = patched(
        Resource::ValidatingWebhookConfigurations,
        &original,
        json!({"webhooks": [{"name": "b.example", "failurePolicy": "Ignore"}]}),
    );
    assert_eq!(
        result["webhooks"],
        json!([{"name": "a.example", "failurePolicy": "Fail"},
               {"name": "b.example", "failurePolicy": "Ignore"}])
    );
}

#[test]
fn controller_revision_data_is_kept_raw() {
    let original = json!({"data": {"spec": {"template": {"$patch": "replace"}}}, "revision": 1});
    let result = patched(
        Resource::ControllerRevisions,
        &original,
        json!({"revision": 3}),
    );
    assert_eq!(
        result,
        json!({"data": {"spec": {"template": {"$patch": "replace"}}}, "revision": 3})
    );
}

// --- Upstream test vectors (k8s.io/apimachinery strategicpatch), restated on real fields ----

#[test]
fn upstream_preserves_patch_order_after_server_only_items() {
    // Live [1, 2, 3]; patch [3, 1] without an order list: server-only 2 goes first.
    let original = json!({"spec": {"containers": [{"name": "1"}, {"name": "2", "image": "b"}, {"name": "3"}]}});
    let result = patched(
        Resource::Pods,
        &original,
        json!({"spec": {"containers": [{"name": "3", "image": "c"}, {"name": "1", "image": "a"}]}}),
    );
    assert_eq!(
        result["spec"]["containers"],
        json!([{"name": "2", "image": "b"}, {"name": "3", "image": "c"}, {"name": "1", "image": "a"}])
    );
}

#[test]
fn upstream_patch_order_wins_when_every_item_is_patched() {
    let original = json!({"spec": {"containers": [{"name": "1"}, {"name": "2", "image": "b"}, {"name": "3"}]}});
    let result = patched(
        Resource::Pods,
        &original,
        json!({"spec": {"containers": [{"name": "3", "image": "c"}, {"name": "1", "image": "a"},
                                       {"name": "2", "args": ["x"]}]}}),
    );
    assert_eq!(
        result["spec"]["containers"],
        json!([{"name": "3", "image": "c"}, {"name": "1", "image": "a"},
               {"name": "2", "image": "b", "args": ["x"]}])
    );
}

#[test]
fn upstream_set_element_order_may_name_items_that_do_not_exist() {
    let original = json!({"spec": {"containers": [{"name": "1"}, {"name": "3"}]}});
    let result = patched(
        Resource::Pods,
        &original,
        json!({"spec": {"$setElementOrder/containers": [{"name": "3"}, {"name": "2"}, {"name": "1"}],
                        "containers": [{"name": "3", "image": "3"}, {"name": "1", "image": "1"}]}}),
    );
    assert_eq!(
        result["spec"]["containers"],
        json!([{"name": "3", "image": "3"}, {"name": "1", "image": "1"}])
    );
}

#[test]
fn upstream_merge_lists_of_maps_with_an_order_list() {
    // Live [1, 2]; the order list puts new item 4 first and new item 3 last.
    let original =
        json!({"spec": {"containers": [{"name": "1", "image": "a"}, {"name": "2", "image": "b"}]}});
    let result = patched(
        Resource::Pods,
        &original,
        json!({"spec": {"$setElementOrder/containers": [{"name": "4"}, {"name": "1"}, {"name": "2"}, {"name": "3"}],
                        "containers": [{"name": "4", "image": "4"}, {"name": "3", "image": "3"}]}}),
    );
    assert_eq!(
        result["spec"]["containers"],
        json!([{"name": "4", "image": "4"}, {"name": "1", "image": "a"},
               {"name": "2", "image": "b"}, {"name": "3", "image": "3"}])
    );
}

#[test]
fn upstream_delete_removes_every_duplicate() {
    let original = json!({"metadata": {"ownerReferences": [
        {"uid": "1"}, {"uid": "1"}, {"uid": "2", "name": "a"}, {"uid": "3"}, {"uid": "3"}]}});
    let result = patched(
        Resource::Pods,
        &original,
        json!({"metadata": {"ownerReferences": [{"uid": "1", "$patch": "delete"}, {"uid": "3", "$patch": "delete"}]}}),
    );
    assert_eq!(
        result["metadata"]["ownerReferences"],
        json!([{"uid": "2", "name": "a"}])
    );
}

#[test]
fn upstream_delete_from_a_primitive_list_with_an_order_list() {
    // The three-way case: live has an extra item 4 the patch does not know about.
    let original = json!({"metadata": {"finalizers": ["1", "2", "3", "4"]}});
    let result = patched(
        Resource::Pods,
        &original,
        json!({"metadata": {"$setElementOrder/finalizers": ["1", "2"],
                            "$deleteFromPrimitiveList/finalizers": ["3"]}}),
    );
    assert_eq!(result["metadata"]["finalizers"], json!(["1", "2", "4"]));
}

#[test]
fn upstream_primitive_order_list_reorders_and_ignores_absent_items() {
    let original = json!({"metadata": {"finalizers": ["1", "3"]}});
    let result = patched(
        Resource::Pods,
        &original,
        json!({"metadata": {"$setElementOrder/finalizers": ["3", "2", "1"]}}),
    );
    assert_eq!(result["metadata"]["finalizers"], json!(["3", "1"]));
}

#[test]
fn upstream_scalar_merge_keeps_patch_order_for_patched_items() {
    let original = json!({"metadata": {"finalizers": ["1", "2", "3"]}});
    let result = patched(
        Resource::Pods,
        &original,
        json!({"metadata": {"finalizers": ["3", "1"]}}),
    );
    assert_eq!(result["metadata"]["finalizers"], json!(["2", "3", "1"]));
}

#[test]
fn upstream_replace_directive_with_a_new_key_empties_the_rest() {
    let original = json!({"data": {"name": "1", "value": "1"}});
    let result = patched(
        Resource::ConfigMaps,
        &original,
        json!({"data": {"other": "a", "$patch": "replace"}}),
    );
    assert_eq!(result, json!({"data": {"other": "a"}}));
}

#[test]
fn upstream_replace_marker_alone_empties_a_merging_list() {
    let original = json!({"spec": {"containers": [{"name": "1"}, {"name": "2"}]}});
    let result = patched(
        Resource::Pods,
        &original,
        json!({"spec": {"containers": [{"$patch": "replace"}]}}),
    );
    assert_eq!(result["spec"]["containers"], json!([]));
}

#[test]
fn upstream_empty_patch_list_leaves_a_merging_list_alone() {
    let original = json!({"spec": {"containers": [{"name": "1"}]}});
    let result = patched(
        Resource::Pods,
        &original,
        json!({"spec": {"containers": []}}),
    );
    assert_eq!(result, original);
}

// --- Properties ------------------------------------------------------------------------------

const RESOURCES: [Resource; 12] = [
    Resource::Namespaces,
    Resource::Nodes,
    Resource::Pods,
    Resource::ConfigMaps,
    Resource::Services,
    Resource::Events,
    Resource::Leases,
    Resource::DaemonSets,
    Resource::Deployments,
    Resource::ReplicaSets,
    Resource::ControllerRevisions,
    Resource::ValidatingWebhookConfigurations,
];

/// Keys that reach the interesting paths: schema fields, merge keys and every directive.
fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "spec",
        "template",
        "metadata",
        "status",
        "containers",
        "initContainers",
        "env",
        "ports",
        "finalizers",
        "conditions",
        "name",
        "type",
        "uid",
        "containerPort",
        "image",
        "data",
        "$patch",
        "$retainKeys",
        "$setElementOrder/containers",
        "$setElementOrder/finalizers",
        "$setElementOrder/env",
        "$deleteFromPrimitiveList/finalizers",
        "$deleteFromPrimitiveList/env",
    ])
    .prop_map(str::to_string)
}

fn json_value(allow_directives: bool) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..3).prop_map(Value::from),
        Just(json!(1.5)),
        prop::sample::select(vec!["replace", "delete", "merge", "a", "b", "name"])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                key().prop_filter("no directives", move |k| allow_directives
                    || !k.starts_with('$')),
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn object(allow_directives: bool) -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        key().prop_filter("no directives", move |k| {
            allow_directives || !k.starts_with('$')
        }),
        json_value(allow_directives),
        0..5,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn an_empty_patch_is_the_identity(
        resource in prop::sample::select(RESOURCES.to_vec()),
        original in object(false),
    ) {
        prop_assert_eq!(apply(resource, &original, &json!({})), Ok(original.clone()));
    }

    #[test]
    fn arbitrary_pairs_never_panic_and_leave_no_directives(
        resource in prop::sample::select(RESOURCES.to_vec()),
        original in object(false),
        patch in json_value(true),
    ) {
        if let Ok(result) = apply(resource, &original, &patch)
            && resource != Resource::ControllerRevisions
        {
            let text = result.to_string();
            prop_assert!(!text.contains("\"$patch\""), "{}", text);
            prop_assert!(!text.contains("$setElementOrder"), "{}", text);
            prop_assert!(!text.contains("$retainKeys"), "{}", text);
        }
    }

    #[test]
    fn objects_with_directives_on_both_sides_never_panic(
        resource in prop::sample::select(RESOURCES.to_vec()),
        original in object(true),
        patch in object(true),
    ) {
        let _ = apply(resource, &original, &patch);
    }
}

// --- Behaviour pinned against kubectl's compiled-in strategicpatch (`kubectl patch --local`) ---

#[test]
fn order_list_with_a_deletion_and_a_new_item_follows_upstreams_live_positions() {
    // Live [c, d, b]; delete d, patch c, add a; order list [c, a]. Upstream orders the
    // server-only b by the live list as its merge rewrote it ([c, b, a]), so b precedes a.
    let original = json!({"spec": {"containers": [{"name": "c"}, {"name": "d"}, {"name": "b"}]}});
    let result = patched(
        Resource::Pods,
        &original,
        json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
                        "containers": [{"name": "d", "$patch": "delete"}, {"name": "c", "image": "3"},
                                       {"name": "a"}]}}),
    );
    assert_eq!(
        result["spec"]["containers"],
        json!([{"name": "c", "image": "3"}, {"name": "b"}, {"name": "a"}])
    );
}

#[test]
fn order_list_with_a_deletion_puts_the_survivor_first_when_upstream_does() {
    // Live [b, a]; delete b, add e and c; order list [e, c, d].
    let original = json!({"spec": {"containers": [{"name": "b"}, {"name": "a"}]}});
    let result = patched(
        Resource::Pods,
        &original,
        json!({"spec": {"$setElementOrder/containers": [{"name": "e"}, {"name": "c"}, {"name": "d"}],
                        "containers": [{"name": "e"}, {"name": "c"}, {"name": "b", "$patch": "delete"}]}}),
    );
    assert_eq!(
        result["spec"]["containers"],
        json!([{"name": "a"}, {"name": "e"}, {"name": "c"}])
    );
}

#[test]
fn delete_from_primitive_list_works_on_lists_without_a_merge_strategy() {
    let original = json!({"spec": {"containers": [{"name": "c", "args": ["--a", "--b", "--a"]}]}});
    let result = patched(
        Resource::Pods,
        &original,
        json!({"spec": {"containers": [{"name": "c", "$deleteFromPrimitiveList/args": ["--a"]}]}}),
    );
    assert_eq!(result["spec"]["containers"][0]["args"], json!(["--b"]));
}

#[test]
fn a_new_list_with_an_order_list_drops_directive_items() {
    let original = json!({"spec": {"containers": [{"name": "c"}]}});
    let result = patched(
        Resource::Pods,
        &original,
        json!({"spec": {"containers": [{"name": "c",
            "$setElementOrder/env": [{"name": "A"}],
            "env": [{"$patch": "delete"}, {"name": "A", "value": "1"}]}]}}),
    );
    assert_eq!(
        result["spec"]["containers"][0]["env"],
        json!([{"name": "A", "value": "1"}])
    );
}

#[test]
fn a_deletion_list_wins_over_an_addition_of_the_same_item() {
    let original = json!({"spec": {"podCIDRs": ["10.0.0.0/24", "10.0.1.0/24"]}});
    let result = patched(
        Resource::Nodes,
        &original,
        json!({"spec": {"podCIDRs": ["10.0.0.0/24", "10.0.2.0/24"],
                        "$deleteFromPrimitiveList/podCIDRs": ["10.0.0.0/24"]}}),
    );
    assert_eq!(
        result["spec"]["podCIDRs"],
        json!(["10.0.2.0/24", "10.0.1.0/24"])
    );
}

#[test]
fn errors_display_as_the_bare_apiserver_message() {
    let error = apply(Resource::Pods, &json!({}), &json!([])).unwrap_err();
    assert_eq!(error.to_string(), error.message());
    assert!(
        error
            .to_string()
            .starts_with("json: cannot unmarshal array")
    );
}
