//! `meta.k8s.io/v1` Table rendering with the real apiserver's columns.
//!
//! Columns and cells follow the server-side printers of kubernetes
//! (`pkg/printers/internalversion/printers.go`), which the apiserver runs with `Wide: true`.
//! Those printers see objects after API defaulting; where the sim may store an object without
//! a defaulted field (replicas, Service type, port protocol, Namespace phase), the default is
//! applied here so the cell reads as it would on a real cluster.

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::model::{Object, Resource};

/// Renders `objects` of `resource` as a `meta.k8s.io/v1` Table, as the apiserver does for
/// `Accept: application/json;as=Table`: every column (priority 1 included), each row with a
/// `PartialObjectMetadata` object. `now` is used for AGE and LAST SEEN cells.
pub fn render(
    resource: Resource,
    objects: &[Object],
    list_resource_version: &str,
    now: time::OffsetDateTime,
) -> Value {
    render_with(
        resource,
        objects,
        list_resource_version,
        now,
        IncludeObject::Metadata,
    )
}

/// What each row carries in `object`, as the `includeObject` query parameter asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// `None`: no object (`null`).
    None,
    /// `Metadata`, the default: a `PartialObjectMetadata`.
    #[default]
    Metadata,
    /// `Object`: the whole object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query value; `None` for an unknown value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "None" => Some(Self::None),
            "Metadata" => Some(Self::Metadata),
            "Object" => Some(Self::Object),
            _ => None,
        }
    }
}

/// [`render`], with the rows' `object` chosen by `include`.
pub fn render_with(
    resource: Resource,
    objects: &[Object],
    list_resource_version: &str,
    now: time::OffsetDateTime,
    include: IncludeObject,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| render_row(resource, object, now, include))
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": list_resource_version},
        "columnDefinitions": column_definitions(resource),
        "rows": rows,
    })
}

/// The column definitions of `resource`'s Table, in order.
pub fn column_definitions(resource: Resource) -> Value {
    Value::Array(
        columns(resource)
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": c.type_,
                    "format": c.format,
                    "description": c.description,
                    "priority": c.priority,
                })
            })
            .collect(),
    )
}

fn render_row(
    resource: Resource,
    object: &Value,
    now: OffsetDateTime,
    include: IncludeObject,
) -> Value {
    let cells = cells(resource, object, now);
    let embedded = match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
        IncludeObject::Object => object.clone(),
    };
    let mut row = json!({"cells": cells, "object": embedded});
    if resource == Resource::Pods {
        let condition = match str_at(object, &["status", "phase"]) {
            "Succeeded" => Some(("Succeeded", "The pod has completed successfully.")),
            "Failed" => Some(("Failed", "The pod failed.")),
            _ => None,
        };
        if let Some((reason, message)) = condition {
            row["conditions"] = json!([{
                "type": "Completed", "status": "True", "reason": reason, "message": message
            }]);
        }
    }
    row
}

/// The cells of one row, in column order.
pub fn cells(resource: Resource, object: &Value, now: OffsetDateTime) -> Vec<Value> {
    match resource {
        Resource::Namespaces => namespace_cells(object, now),
        Resource::Nodes => node_cells(object, now),
        Resource::Pods => pod_cells(object, now),
        Resource::ConfigMaps => configmap_cells(object, now),
        Resource::Services => service_cells(object, now),
        Resource::Events => event_cells(object, now),
        Resource::Leases => lease_cells(object, now),
        Resource::DaemonSets => daemonset_cells(object, now),
        Resource::Deployments => deployment_cells(object, now),
        Resource::ReplicaSets => replicaset_cells(object, now),
        Resource::ControllerRevisions => controller_revision_cells(object, now),
        Resource::ValidatingWebhookConfigurations => webhook_configuration_cells(object, now),
    }
}

// --- Columns -------------------------------------------------------------------------------

struct Column {
    name: &'static str,
    type_: &'static str,
    format: &'static str,
    description: &'static str,
    priority: u8,
}

const fn col(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 1,
    }
}

const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DOC: &str = "Names of each container in the template.";
const IMAGES_DOC: &str = "Images referenced by each container in the template.";
const SELECTOR_DOC: &str = "A label query over pods that should match the replica count. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";

const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: NAME_DOC,
    priority: 0,
};
const AGE: Column = col("Age", "string", AGE_DOC);

fn columns(resource: Resource) -> Vec<Column> {
    match resource {
        Resource::Namespaces => vec![
            NAME,
            col("Status", "string", "The status of the namespace"),
            AGE,
        ],
        Resource::Nodes => vec![
            NAME,
            col("Status", "string", "The status of the node"),
            col("Roles", "string", "The roles of the node"),
            AGE,
            col("Version", "string", "Kubelet Version reported by the node."),
            wide(
                "Internal-IP",
                "string",
                "List of addresses reachable to the node.",
            ),
            wide(
                "External-IP",
                "string",
                "List of addresses reachable to the node.",
            ),
            wide(
                "OS-Image",
                "string",
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            ),
            wide(
                "Kernel-Version",
                "string",
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            ),
            wide(
                "Container-Runtime",
                "string",
                "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            ),
        ],
        Resource::Pods => vec![
            NAME,
            col(
                "Ready",
                "string",
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            col(
                "Status",
                "string",
                "The aggregate status of the containers in this pod.",
            ),
            col(
                "Restarts",
                "string",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            AGE,
            wide(
                "IP",
                "string",
                "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            wide(
                "Node",
                "string",
                "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName.",
            ),
            wide(
                "Nominated Node",
                "string",
                "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.",
            ),
            wide(
                "Readiness Gates",
                "string",
                "If specified, all readiness gates will be evaluated for pod readiness.",
            ),
        ],
        Resource::ConfigMaps => vec![
            NAME,
            col(
                "Data",
                "string",
                "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
            ),
            AGE,
        ],
        Resource::Services => vec![
            NAME,
            col(
                "Type",
                "string",
                "type determines how the Service is exposed. Defaults to ClusterIP.",
            ),
            col(
                "Cluster-IP",
                "string",
                "clusterIP is the IP address of the service and is usually assigned randomly.",
            ),
            col(
                "External-IP",
                "string",
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            col(
                "Port(s)",
                "string",
                "The list of ports that are exposed by this service.",
            ),
            AGE,
            wide(
                "Selector",
                "string",
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        Resource::Events => vec![
            col(
                "Last Seen",
                "string",
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            col(
                "Type",
                "string",
                "Type of this event (Normal, Warning), new types could be added in the future",
            ),
            col(
                "Reason",
                "string",
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            col("Object", "string", "The object that this event is about."),
            wide(
                "Subobject",
                "string",
                "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
            ),
            wide(
                "Source",
                "string",
                "The component reporting this event. Should be a short machine understandable string.",
            ),
            col(
                "Message",
                "string",
                "A human-readable description of the status of this operation.",
            ),
            wide(
                "First Seen",
                "string",
                "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
            ),
            wide(
                "Count",
                "string",
                "The number of times this event has occurred.",
            ),
            Column {
                priority: 1,
                ..NAME
            },
        ],
        Resource::Leases => vec![
            NAME,
            col(
                "Holder",
                "string",
                "holderIdentity contains the identity of the holder of a current lease.",
            ),
            AGE,
        ],
        Resource::DaemonSets => vec![
            NAME,
            col(
                "Desired",
                "integer",
                "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).",
            ),
            col(
                "Current",
                "integer",
                "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
            ),
            col(
                "Ready",
                "integer",
                "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
            ),
            col(
                "Up-to-date",
                "integer",
                "The total number of nodes that are running updated daemon pod",
            ),
            col(
                "Available",
                "integer",
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
            ),
            col(
                "Node Selector",
                "string",
                "NodeSelector is a selector which must be true for the pod to fit on a node.",
            ),
            AGE,
            wide("Containers", "string", CONTAINERS_DOC),
            wide("Images", "string", IMAGES_DOC),
            wide("Selector", "string", SELECTOR_DOC),
        ],
        Resource::Deployments => vec![
            NAME,
            col("Ready", "string", "Number of the pod with ready state"),
            col(
                "Up-to-date",
                "string",
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            col(
                "Available",
                "string",
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            AGE,
            wide("Containers", "string", CONTAINERS_DOC),
            wide("Images", "string", IMAGES_DOC),
            wide("Selector", "string", SELECTOR_DOC),
        ],
        Resource::ReplicaSets => vec![
            NAME,
            col(
                "Desired",
                "integer",
                "Replicas is the number of desired replicas.",
            ),
            col(
                "Current",
                "integer",
                "Replicas is the most recently observed number of replicas.",
            ),
            col(
                "Ready",
                "integer",
                "The number of ready replicas for this replica set.",
            ),
            AGE,
            wide("Containers", "string", CONTAINERS_DOC),
            wide("Images", "string", IMAGES_DOC),
            wide("Selector", "string", SELECTOR_DOC),
        ],
        Resource::ControllerRevisions => vec![
            NAME,
            col("Controller", "string", "Controller of the object"),
            col(
                "Revision",
                "string",
                "Revision indicates the revision of the state represented by Data.",
            ),
            AGE,
        ],
        Resource::ValidatingWebhookConfigurations => vec![
            NAME,
            col(
                "Webhooks",
                "integer",
                "Webhooks indicates the number of webhooks registered in this configuration",
            ),
            AGE,
        ],
    }
}

// --- Cells ---------------------------------------------------------------------------------

fn name_of(object: &Value) -> Value {
    json!(str_at(object, &["metadata", "name"]))
}

fn age_of(object: &Value, now: OffsetDateTime) -> Value {
    json!(since(object.pointer("/metadata/creationTimestamp"), now))
}

fn namespace_cells(object: &Value, now: OffsetDateTime) -> Vec<Value> {
    // The registry sets phase Active on create.
    let phase = non_empty_or(str_at(object, &["status", "phase"]), "Active");
    vec![name_of(object), json!(phase), age_of(object, now)]
}

fn node_cells(object: &Value, now: OffsetDateTime) -> Vec<Value> {
    let mut status = Vec::new();
    if let Some(ready) = items_at(object, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| str_at(c, &["type"]) == "Ready")
    {
        status.push(if str_at(ready, &["status"]) == "True" {
            "Ready".to_string()
        } else {
            "NotReady".to_string()
        });
    }
    if status.is_empty() {
        status.push("Unknown".to_string());
    }
    if object.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
        status.push("SchedulingDisabled".to_string());
    }

    let mut roles = BTreeSet::new();
    if let Some(labels) = object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
    {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if key == "kubernetes.io/role"
                && let Some(role) = value.as_str().filter(|r| !r.is_empty())
            {
                roles.insert(role.to_string());
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };

    let address = |kind: &str| {
        items_at(object, &["status", "addresses"])
            .iter()
            .find(|a| str_at(a, &["type"]) == kind)
            .map(|a| str_at(a, &["address"]).to_string())
            .unwrap_or_else(|| "<none>".to_string())
    };
    let info =
        |field: &str| non_empty_or(str_at(object, &["status", "nodeInfo", field]), "<unknown>");
    vec![
        name_of(object),
        json!(status.join(",")),
        json!(roles),
        age_of(object, now),
        json!(str_at(object, &["status", "nodeInfo", "kubeletVersion"])),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn pod_cells(pod: &Value, now: OffsetDateTime) -> Vec<Value> {
    let status = PodStatusSummary::of(pod, now);
    let node = non_empty_or(str_at(pod, &["spec", "nodeName"]), "<none>");
    let nominated = non_empty_or(str_at(pod, &["status", "nominatedNodeName"]), "<none>");
    // The kubelet reports podIP and podIPs together; a sim pod may carry only podIP.
    let ip = items_at(pod, &["status", "podIPs"])
        .first()
        .map(|ip| str_at(ip, &["ip"]))
        .unwrap_or_else(|| str_at(pod, &["status", "podIP"]));
    let gates = items_at(pod, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = items_at(pod, &["status", "conditions"]);
        let passing = gates
            .iter()
            .filter(|gate| {
                let wanted = str_at(gate, &["conditionType"]);
                conditions
                    .iter()
                    .find(|c| str_at(c, &["type"]) == wanted)
                    .is_some_and(|c| str_at(c, &["status"]) == "True")
            })
            .count();
        format!("{passing}/{}", gates.len())
    };
    vec![
        name_of(pod),
        json!(format!("{}/{}", status.ready, status.total)),
        json!(status.reason),
        json!(status.restarts),
        age_of(pod, now),
        json!(non_empty_or(ip, "<none>")),
        json!(node),
        json!(nominated),
        json!(readiness_gates),
    ]
}

/// The READY, STATUS and RESTARTS of a pod, with the printer's precedence of reasons.
struct PodStatusSummary {
    ready: usize,
    total: usize,
    reason: String,
    restarts: String,
}

impl PodStatusSummary {
    fn of(pod: &Value, now: OffsetDateTime) -> Self {
        let init_specs = items_at(pod, &["spec", "initContainers"]);
        let restartable = |name: &str| {
            init_specs
                .iter()
                .any(|c| str_at(c, &["name"]) == name && str_at(c, &["restartPolicy"]) == "Always")
        };
        let total = items_at(pod, &["spec", "containers"]).len()
            + init_specs
                .iter()
                .filter(|c| str_at(c, &["restartPolicy"]) == "Always")
                .count();
        let mut ready = 0;
        let mut restarts: i64 = 0;
        let mut sidecar_restarts: i64 = 0;
        let mut last_restart: Option<OffsetDateTime> = None;
        let mut last_sidecar_restart: Option<OffsetDateTime> = None;

        let phase = str_at(pod, &["status", "phase"]);
        let mut reason = non_empty_or(str_at(pod, &["status", "reason"]), phase);
        let conditions = items_at(pod, &["status", "conditions"]);
        if conditions.iter().any(|c| {
            str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated"
        }) {
            reason = "SchedulingGated".to_string();
        }

        let init_statuses = items_at(pod, &["status", "initContainerStatuses"]);
        let mut initializing = false;
        for (index, container) in init_statuses.iter().enumerate() {
            let count = int_at(container, &["restartCount"]);
            restarts += count;
            let finished = timestamp(container.pointer("/lastState/terminated/finishedAt"));
            later(&mut last_restart, finished);
            let is_sidecar = restartable(str_at(container, &["name"]));
            if is_sidecar {
                sidecar_restarts += count;
                later(&mut last_sidecar_restart, finished);
            }
            let terminated = present(container.pointer("/state/terminated"));
            let waiting_reason = str_at(container, &["state", "waiting", "reason"]);
            if terminated.is_some() && int_at(container, &["state", "terminated", "exitCode"]) == 0
            {
                continue;
            }
            if is_sidecar && container.get("started") == Some(&Value::Bool(true)) {
                if container.get("ready") == Some(&Value::Bool(true)) {
                    ready += 1;
                }
                continue;
            }
            if terminated.is_some() {
                let why = str_at(container, &["state", "terminated", "reason"]);
                let signal = int_at(container, &["state", "terminated", "signal"]);
                reason = if !why.is_empty() {
                    format!("Init:{why}")
                } else if signal != 0 {
                    format!("Init:Signal:{signal}")
                } else {
                    format!(
                        "Init:ExitCode:{}",
                        int_at(container, &["state", "terminated", "exitCode"])
                    )
                };
            } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
                reason = format!("Init:{waiting_reason}");
            } else {
                reason = format!("Init:{index}/{}", init_specs.len());
            }
            initializing = true;
            break;
        }

        let initialized = conditions
            .iter()
            .any(|c| str_at(c, &["type"]) == "Initialized" && str_at(c, &["status"]) == "True");
        if !initializing || initialized {
            restarts = sidecar_restarts;
            last_restart = last_sidecar_restart;
            let mut has_running = false;
            for container in items_at(pod, &["status", "containerStatuses"]).iter().rev() {
                restarts += int_at(container, &["restartCount"]);
                later(
                    &mut last_restart,
                    timestamp(container.pointer("/lastState/terminated/finishedAt")),
                );
                let waiting = str_at(container, &["state", "waiting", "reason"]);
                let terminated = present(container.pointer("/state/terminated"));
                let terminated_reason = str_at(container, &["state", "terminated", "reason"]);
                if !waiting.is_empty() {
                    reason = waiting.to_string();
                } else if terminated.is_some() && !terminated_reason.is_empty() {
                    reason = terminated_reason.to_string();
                } else if terminated.is_some() {
                    let signal = int_at(container, &["state", "terminated", "signal"]);
                    reason = if signal != 0 {
                        format!("Signal:{signal}")
                    } else {
                        format!(
                            "ExitCode:{}",
                            int_at(container, &["state", "terminated", "exitCode"])
                        )
                    };
                } else if container.get("ready") == Some(&Value::Bool(true))
                    && present(container.pointer("/state/running")).is_some()
                {
                    has_running = true;
                    ready += 1;
                }
            }
            if reason == "Completed" && has_running {
                let pod_ready = conditions
                    .iter()
                    .any(|c| str_at(c, &["type"]) == "Ready" && str_at(c, &["status"]) == "True");
                reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
            }
        }

        let deleting = pod
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|t| !t.is_null());
        if deleting && str_at(pod, &["status", "reason"]) == "NodeLost" {
            reason = "Unknown".to_string();
        } else if deleting && phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_string();
        }

        let restarts = match last_restart {
            Some(at) if restarts != 0 => {
                format!("{restarts} ({} ago)", human_duration(now - at))
            }
            _ => restarts.to_string(),
        };
        Self {
            ready,
            total,
            reason,
            restarts,
        }
    }
}

fn later(latest: &mut Option<OffsetDateTime>, candidate: Option<OffsetDateTime>) {
    if let Some(candidate) = candidate
        && latest.is_none_or(|current| current < candidate)
    {
        *latest = Some(candidate);
    }
}

fn configmap_cells(object: &Value, now: OffsetDateTime) -> Vec<Value> {
    let count = |field: &str| {
        object
            .get(field)
            .and_then(Value::as_object)
            .map_or(0, |m| m.len())
    };
    vec![
        name_of(object),
        json!(count("data") + count("binaryData")),
        age_of(object, now),
    ]
}

fn service_cells(object: &Value, now: OffsetDateTime) -> Vec<Value> {
    let service_type = non_empty_or(str_at(object, &["spec", "type"]), "ClusterIP");
    // The apiserver fills clusterIPs from clusterIP.
    let cluster_ip = items_at(object, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .or_else(|| {
            object
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .filter(|ip| !ip.is_empty())
        })
        .unwrap_or("<none>")
        .to_string();
    let external_ips: Vec<&str> = items_at(object, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external = match service_type.as_str() {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let ingress: BTreeSet<&str> = items_at(object, &["status", "loadBalancer", "ingress"])
                .iter()
                .filter_map(|i| {
                    let ip = str_at(i, &["ip"]);
                    let host = str_at(i, &["hostname"]);
                    if !ip.is_empty() {
                        Some(ip)
                    } else if !host.is_empty() {
                        Some(host)
                    } else {
                        None
                    }
                })
                .collect();
            let mut all: Vec<&str> = ingress.into_iter().collect();
            if !external_ips.is_empty() {
                all.extend(external_ips.iter().copied());
            }
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => str_at(object, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = items_at(object, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]);
            let protocol = non_empty_or(str_at(p, &["protocol"]), "TCP");
            let node_port = int_at(p, &["nodePort"]);
            if node_port > 0 {
                format!("{port}:{node_port}/{protocol}")
            } else {
                format!("{port}/{protocol}")
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };
    vec![
        name_of(object),
        json!(service_type),
        json!(cluster_ip),
        json!(external),
        json!(ports),
        age_of(object, now),
        json!(format_labels(object.pointer("/spec/selector"))),
    ]
}

fn event_cells(event: &Value, now: OffsetDateTime) -> Vec<Value> {
    let first = match timestamp(event.get("firstTimestamp")) {
        Some(_) => since(event.get("firstTimestamp"), now),
        None => since(event.get("eventTime"), now),
    };
    let mut last = match timestamp(event.get("lastTimestamp")) {
        Some(_) => since(event.get("lastTimestamp"), now),
        None => first.clone(),
    };
    let mut count = int_at(event, &["count"]);
    if let Some(series) = event.get("series").filter(|s| s.is_object()) {
        last = since(series.get("lastObservedTime"), now);
        count = int_at(series, &["count"]);
    } else if count == 0 {
        // Singleton events of the events.k8s.io API carry no count.
        count = 1;
    }
    let kind = str_at(event, &["involvedObject", "kind"]).to_lowercase();
    let involved_name = str_at(event, &["involvedObject", "name"]);
    let target = if involved_name.is_empty() {
        kind
    } else {
        format!("{kind}/{involved_name}")
    };
    let component = non_empty_or(
        str_at(event, &["source", "component"]),
        str_at(event, &["reportingComponent"]),
    );
    let host = non_empty_or(
        str_at(event, &["source", "host"]),
        str_at(event, &["reportingInstance"]),
    );
    let source = if host.is_empty() {
        component
    } else {
        format!("{component}, {host}")
    };
    vec![
        json!(last),
        json!(str_at(event, &["type"])),
        json!(str_at(event, &["reason"])),
        json!(target),
        json!(str_at(event, &["involvedObject", "fieldPath"])),
        json!(source),
        json!(str_at(event, &["message"]).trim()),
        json!(first),
        json!(count),
        name_of(event),
    ]
}

fn lease_cells(object: &Value, now: OffsetDateTime) -> Vec<Value> {
    vec![
        name_of(object),
        json!(str_at(object, &["spec", "holderIdentity"])),
        age_of(object, now),
    ]
}

fn daemonset_cells(object: &Value, now: OffsetDateTime) -> Vec<Value> {
    let status = |field: &str| json!(int_at(object, &["status", field]));
    let (names, images) = container_cells(object);
    vec![
        name_of(object),
        status("desiredNumberScheduled"),
        status("currentNumberScheduled"),
        status("numberReady"),
        status("updatedNumberScheduled"),
        status("numberAvailable"),
        json!(format_labels(
            object.pointer("/spec/template/spec/nodeSelector")
        )),
        age_of(object, now),
        json!(names),
        json!(images),
        json!(format_label_selector(object.pointer("/spec/selector"))),
    ]
}

fn deployment_cells(object: &Value, now: OffsetDateTime) -> Vec<Value> {
    let (names, images) = container_cells(object);
    let selector = match label_selector_string(object.pointer("/spec/selector")) {
        Ok(selector) => selector,
        Err(()) => "<invalid>".to_string(),
    };
    vec![
        name_of(object),
        json!(format!(
            "{}/{}",
            int_at(object, &["status", "readyReplicas"]),
            desired_replicas(object)
        )),
        json!(int_at(object, &["status", "updatedReplicas"])),
        json!(int_at(object, &["status", "availableReplicas"])),
        age_of(object, now),
        json!(names),
        json!(images),
        json!(selector),
    ]
}

fn replicaset_cells(object: &Value, now: OffsetDateTime) -> Vec<Value> {
    let (names, images) = container_cells(object);
    vec![
        name_of(object),
        json!(desired_replicas(object)),
        json!(int_at(object, &["status", "replicas"])),
        json!(int_at(object, &["status", "readyReplicas"])),
        age_of(object, now),
        json!(names),
        json!(images),
        json!(format_label_selector(object.pointer("/spec/selector"))),
    ]
}

/// `spec.replicas`, which API defaulting sets to 1 when absent.
fn desired_replicas(object: &Value) -> i64 {
    object
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn controller_revision_cells(object: &Value, now: OffsetDateTime) -> Vec<Value> {
    let controller = items_at(object, &["metadata", "ownerReferences"])
        .iter()
        .find(|r| r.get("controller") == Some(&Value::Bool(true)))
        .map(|owner| {
            let api_version = str_at(owner, &["apiVersion"]);
            let group = api_version.split_once('/').map_or("", |(group, _)| group);
            let kind = str_at(owner, &["kind"]);
            let name = str_at(owner, &["name"]);
            if kind.is_empty() && group.is_empty() {
                name.to_string()
            } else if group.is_empty() {
                format!("{}/{name}", kind.to_lowercase())
            } else {
                format!("{}.{}/{name}", kind.to_lowercase(), group.to_lowercase())
            }
        })
        .unwrap_or_else(|| "<none>".to_string());
    vec![
        name_of(object),
        json!(controller),
        json!(int_at(object, &["revision"])),
        age_of(object, now),
    ]
}

fn webhook_configuration_cells(object: &Value, now: OffsetDateTime) -> Vec<Value> {
    vec![
        name_of(object),
        json!(items_at(object, &["webhooks"]).len()),
        age_of(object, now),
    ]
}

/// The CONTAINERS and IMAGES cells: `spec.template.spec.containers` only, joined by `,`.
fn container_cells(object: &Value) -> (String, String) {
    let containers = items_at(object, &["spec", "template", "spec", "containers"]);
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

// --- Formatting helpers, as in apimachinery ------------------------------------------------

/// `labels.FormatLabels`: `k=v` sorted by key, joined by `,`, or `<none>`.
fn format_labels(labels: Option<&Value>) -> String {
    let pairs: Vec<String> = labels
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        "<none>".to_string()
    } else {
        pairs.join(",")
    }
}

/// `metav1.FormatLabelSelector`: the selector string, `<none>` when empty, `<error>` when bad.
fn format_label_selector(selector: Option<&Value>) -> String {
    match label_selector_string(selector) {
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s,
        Err(()) => "<error>".to_string(),
    }
}

/// `metav1.LabelSelectorAsSelector(...).String()`: requirements sorted by key.
fn label_selector_string(selector: Option<&Value>) -> Result<String, ()> {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return Ok(String::new());
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (key, value) in labels {
            requirements.push((
                key.clone(),
                format!("{key}={}", value.as_str().unwrap_or("")),
            ));
        }
    }
    for expression in items_at(selector, &["matchExpressions"]) {
        let key = str_at(expression, &["key"]);
        let mut values: Vec<&str> = items_at(expression, &["values"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        // labels.NewRequirement: In/NotIn need values, Exists/DoesNotExist take none.
        let text = match (str_at(expression, &["operator"]), values.is_empty()) {
            ("In", false) => format!("{key} in ({})", values.join(",")),
            ("NotIn", false) => format!("{key} notin ({})", values.join(",")),
            ("Exists", true) => key.to_string(),
            ("DoesNotExist", true) => format!("!{key}"),
            _ => return Err(()),
        };
        requirements.push((key.to_string(), text));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(requirements
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(","))
}

/// `translateTimestampSince`: the human duration since an RFC 3339 timestamp, `<unknown>`
/// when there is none.
fn since(value: Option<&Value>, now: OffsetDateTime) -> String {
    match timestamp(value) {
        Some(at) => human_duration(now - at),
        None => "<unknown>".to_string(),
    }
}

fn timestamp(value: Option<&Value>) -> Option<OffsetDateTime> {
    value
        .and_then(Value::as_str)
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
}

/// `k8s.io/apimachinery/pkg/util/duration.HumanDuration`.
pub fn human_duration(d: time::Duration) -> String {
    let seconds = d.whole_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d.whole_minutes();
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d.whole_hours();
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

// --- JSON access ---------------------------------------------------------------------------

fn at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// The string at `path`, or "" as Go's zero value.
fn str_at<'v>(value: &'v Value, path: &[&str]) -> &'v str {
    at(value, path).and_then(Value::as_str).unwrap_or("")
}

/// The integer at `path`, or 0 as Go's zero value.
fn int_at(value: &Value, path: &[&str]) -> i64 {
    at(value, path).and_then(Value::as_i64).unwrap_or(0)
}

/// The list at `path`, or an empty one.
fn items_at<'v>(value: &'v Value, path: &[&str]) -> &'v [Value] {
    at(value, path)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A field that is set: present and not null.
fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null())
}

fn non_empty_or(value: &str, fallback: &str) -> String {
    if value.is_empty() {
        fallback.to_string()
    } else {
        value.to_string()
    }
}
