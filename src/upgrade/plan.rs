//! Preflight and plan (design §3 step 1), the guarded JSON Patches, and the guard check that
//! runs before every write. Pure: inputs are typed objects as read, outputs are decisions.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::policy::{
    Config, GuardedWorkload, ImageRef, Operation, PodTemplateImages, Request, SiblingLookup,
    SiblingState, UserIdentity, Version, WorkloadKind, decide, object_labels,
};

/// Annotation kubectl shows as CHANGE-CAUSE in `rollout history`.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// One guarded container and where it sits in the pod template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub container: String,
    /// In `initContainers` rather than `containers`.
    pub init: bool,
    pub index: usize,
    pub image: String,
}

impl Slot {
    pub fn pointer(&self) -> String {
        format!(
            "/spec/template/spec/{}/{}",
            if self.init {
                "initContainers"
            } else {
                "containers"
            },
            self.index
        )
    }
}

/// The agent (DaemonSet) and ipam (Deployment) of the configuration.
#[derive(Debug, Clone)]
pub struct Targets {
    pub agent: GuardedWorkload,
    pub ipam: GuardedWorkload,
}

impl Targets {
    /// The first guarded DaemonSet and the first guarded Deployment.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let find = |kind| config.workloads.iter().find(|w| w.kind == kind).cloned();
        match (find(WorkloadKind::DaemonSet), find(WorkloadKind::Deployment)) {
            (Some(agent), Some(ipam)) => Ok(Self { agent, ipam }),
            _ => Err(
                "the guard configuration must name one DaemonSet (the agent) and one Deployment (ipam)"
                    .into(),
            ),
        }
    }
}

/// Finds every guarded container of `workload` in `spec` (containers and initContainers).
pub fn locate(workload: &GuardedWorkload, spec: Option<&PodSpec>) -> Result<Vec<Slot>, String> {
    let Some(spec) = spec else {
        return Err(format!("{} has no pod template", workload.display_name()));
    };
    let mut slots = Vec::new();
    for name in &workload.containers {
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .enumerate()
            .filter(|(_, c)| &c.name == name)
            .map(|(i, c)| (true, i, c));
        let main = spec
            .containers
            .iter()
            .enumerate()
            .filter(|(_, c)| &c.name == name)
            .map(|(i, c)| (false, i, c));
        let found: Vec<_> = init.chain(main).collect();
        if found.is_empty() {
            return Err(format!(
                "{} has no container {name:?} (looked in containers and initContainers)",
                workload.display_name()
            ));
        }
        for (init, index, c) in found {
            slots.push(Slot {
                container: name.clone(),
                init,
                index,
                image: c.image.clone().unwrap_or_default(),
            });
        }
    }
    Ok(slots)
}

pub fn template_spec(template: Option<&PodTemplateSpec>) -> Option<&PodSpec> {
    template.and_then(|t| t.spec.as_ref())
}

pub fn ds_spec(ds: &DaemonSet) -> Option<&PodSpec> {
    template_spec(Some(&ds.spec.template))
}

pub fn deploy_spec(d: &Deployment) -> Option<&PodSpec> {
    template_spec(Some(&d.spec.template))
}

/// Two image strings name the same image (normalised when both parse).
pub fn same_image(a: &str, b: &str) -> bool {
    match (ImageRef::parse(a), ImageRef::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The one image all slots carry, if they agree.
pub fn common_image(slots: &[Slot]) -> Option<&str> {
    let first = slots.first()?;
    slots
        .iter()
        .all(|s| same_image(&s.image, &first.image))
        .then_some(first.image.as_str())
}

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `--to v1.9.4`: the current repository with this tag.
    Version(String),
    /// `--image REF`: a full reference.
    Image(String),
}

/// Why the upgrader refuses to start (exit 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub way_forward: String,
}

impl Refusal {
    fn new(reason: impl Into<String>, way_forward: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            way_forward: way_forward.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\nway forward: {}", self.reason, self.way_forward)
    }
}

/// The state of one workload at plan time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadPlan {
    pub slots: Vec<Slot>,
    /// The image every guarded container carries now.
    pub from: String,
    /// Whether its images differ from the target (a half-done earlier upgrade may leave the
    /// agent already at the target).
    pub change: bool,
    pub desired: i32,
    pub ready: i32,
}

/// The upgrade to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub target: String,
    pub from_version: String,
    pub to_version: String,
    pub agent: WorkloadPlan,
    pub ipam: WorkloadPlan,
    pub downgrade: bool,
}

/// The outcome of preflight.
#[derive(Debug, Clone, PartialEq)]
pub enum Preflight {
    /// Both workloads already run the target: exit 0, nothing written.
    NothingToDo {
        image: String,
    },
    Go(Plan),
}

/// What preflight reads.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub v1_configmap: bool,
    pub agent: Option<&'a DaemonSet>,
    pub ipam: Option<&'a Deployment>,
}

/// The DaemonSet's rollout, as `kubectl rollout status` judges it.
pub fn ds_rollout_in_progress(ds: &DaemonSet) -> Option<String> {
    let generation = ds.metadata.generation.unwrap_or(0);
    let status = ds.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < generation {
        return Some("the controller has not yet observed its latest spec".into());
    }
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    if updated < desired {
        return Some(format!("{updated} of {desired} pods are updated"));
    }
    None
}

/// The Deployment's rollout (readiness is not required: a leader-elected ipam has 1 Ready).
pub fn deploy_rollout_in_progress(d: &Deployment) -> Option<String> {
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < generation {
        return Some("the controller has not yet observed its latest spec".into());
    }
    let replicas = d.spec.replicas.unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    if updated < replicas {
        return Some(format!("{updated} of {replicas} replicas are updated"));
    }
    if total > updated {
        return Some(format!(
            "{} old replicas are pending termination",
            total - updated
        ));
    }
    None
}

fn resolve_target(target: &Target, current: &ImageRef) -> Result<ImageRef, Refusal> {
    match target {
        Target::Version(v) => {
            let v = v.trim();
            if Version::parse_tag(v).is_none() {
                return Err(Refusal::new(
                    format!("--to {v:?} is not a version (MAJOR.MINOR.PATCH, e.g. v1.9.4)"),
                    "give a version such as --to v1.9.4, or a full reference with --image",
                ));
            }
            // Keep the cluster's tag style: `v1.9.4` when the current tag is `v1.9.3`.
            let current_v = current.tag().unwrap_or("").starts_with('v');
            let tag = match (current_v, v.starts_with('v')) {
                (true, false) => format!("v{v}"),
                (false, true) => v.trim_start_matches('v').to_owned(),
                _ => v.to_owned(),
            };
            Ok(current.with_tag(&tag))
        }
        Target::Image(r) => ImageRef::parse(r.trim()).map_err(|e| {
            Refusal::new(
                format!("--image: {e}"),
                "give a full reference such as registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4",
            )
        }),
    }
}

fn workload_plan(
    workload: &GuardedWorkload,
    spec: Option<&PodSpec>,
    desired: i32,
    ready: i32,
) -> Result<WorkloadPlan, Refusal> {
    let slots = locate(workload, spec).map_err(|e| {
        Refusal::new(
            e,
            "the guarded containers must exist in the workload; check --config",
        )
    })?;
    let Some(from) = common_image(&slots).map(str::to_owned) else {
        let images: Vec<String> = slots
            .iter()
            .map(|s| format!("{}={}", s.container, s.image))
            .collect();
        return Err(Refusal::new(
            format!(
                "the guarded containers of {} disagree: {}",
                workload.display_name(),
                images.join(", ")
            ),
            format!(
                "make them agree first, e.g. kubectl -n {} set image {} with every guarded container, then rerun",
                workload.namespace,
                workload.kubectl_ref()
            ),
        ));
    };
    Ok(WorkloadPlan {
        slots,
        from,
        change: false,
        desired,
        ready,
    })
}

/// Preflight (design §3 step 1): read only, refuses with the reason and the way forward.
pub fn preflight(
    observed: Observed<'_>,
    targets: &Targets,
    target: &Target,
    allow_downgrade: bool,
    config: &Config,
) -> Result<Preflight, Refusal> {
    if !observed.v1_configmap {
        return Err(Refusal::new(
            format!(
                "this is not a CCE v1 container network: ConfigMap {}/{} was not found",
                targets.agent.namespace, targets.agent.name
            ),
            "the patch upgrade applies only to v1 networks (SOP 2.1.1); other networks upgrade through their own chart",
        ));
    }
    let Some(ds) = observed.agent else {
        return Err(Refusal::new(
            format!("{} was not found", targets.agent.display_name()),
            "check --namespace and --config",
        ));
    };
    let Some(deploy) = observed.ipam else {
        return Err(Refusal::new(
            format!("{} was not found", targets.ipam.display_name()),
            "check --namespace and --config",
        ));
    };
    let ds_status = ds.status.clone().unwrap_or_default();
    let mut agent = workload_plan(
        &targets.agent,
        ds_spec(ds),
        ds_status.desired_number_scheduled,
        ds_status.number_ready,
    )?;
    let d_status = deploy.status.clone().unwrap_or_default();
    let mut ipam = workload_plan(
        &targets.ipam,
        deploy_spec(deploy),
        deploy.spec.replicas.unwrap_or(1),
        d_status.ready_replicas.unwrap_or(0),
    )?;
    let parse = |w: &GuardedWorkload, image: &str| {
        ImageRef::parse(image).map_err(|e| {
            Refusal::new(
                format!(
                    "{}: the current image cannot be read: {e}",
                    w.display_name()
                ),
                "fix the image reference first",
            )
        })
    };
    let agent_ref = parse(&targets.agent, &agent.from)?;
    let ipam_ref = parse(&targets.ipam, &ipam.from)?;
    let version_of = |w: &GuardedWorkload, r: &ImageRef| {
        r.version().ok_or_else(|| {
            Refusal::new(
                format!(
                    "{} runs {r}, whose tag is not a version: no change from it can be proven a patch change",
                    w.display_name()
                ),
                "move to a version tag through the CCE network plugin's helm chart",
            )
        })
    };
    let agent_v = version_of(&targets.agent, &agent_ref)?;
    let ipam_v = version_of(&targets.ipam, &ipam_ref)?;
    if !config.same_repository(&agent_ref.repository(), &ipam_ref.repository())
        || !agent_v.same_line(&ipam_v)
    {
        return Err(Refusal::new(
            format!(
                "the workloads disagree: {} runs {}, {} runs {}",
                targets.agent.display_name(),
                agent.from,
                targets.ipam.display_name(),
                ipam.from
            ),
            "bring both workloads to one repository and MAJOR.MINOR through the CCE network plugin's helm chart",
        ));
    }
    let target_ref = resolve_target(target, &agent_ref)?;
    let Some(target_v) = target_ref.version() else {
        return Err(Refusal::new(
            format!("the target {target_ref} has no version tag"),
            "give a version tag such as v1.9.4",
        ));
    };
    if !config.same_repository(&target_ref.repository(), &agent_ref.repository()) {
        return Err(Refusal::new(
            format!(
                "the target {target_ref} is in another repository than the running {}",
                agent_ref.repository()
            ),
            "a repository change (e.g. another architecture's build) goes through the CCE network plugin's helm chart",
        ));
    }
    if target_v.major() != agent_v.major() || target_v.minor() != agent_v.minor() {
        return Err(Refusal::new(
            format!(
                "{} → {} is not a patch upgrade: the release line moves from {} to {}",
                agent_v,
                target_v,
                agent_v.line(),
                target_v.line()
            ),
            format!(
                "minor and major versions go through the v{} helm chart of the CCE network plugin; patch upgrades within {} are `cce-cni-guard upgrade --to v{}.N`",
                target_v.line(),
                agent_v.line(),
                agent_v.line()
            ),
        ));
    }
    let target_image = target_ref.to_string();
    agent.change = !same_image(&agent.from, &target_image);
    ipam.change = !same_image(&ipam.from, &target_image);
    if !agent.change && !ipam.change {
        return Ok(Preflight::NothingToDo {
            image: target_image,
        });
    }
    let highest = if agent_v > ipam_v { &agent_v } else { &ipam_v };
    let downgrade = target_v < *highest;
    if downgrade && !allow_downgrade {
        return Err(Refusal::new(
            format!("{target_v} is lower than the running {highest}"),
            "to go back, use `cce-cni-guard rollback`, or pass --allow-downgrade",
        ));
    }
    if agent.change
        && let Some(why) = ds_rollout_in_progress(ds)
    {
        return Err(Refusal::new(
            format!(
                "a rollout of {} is in progress: {why}",
                targets.agent.display_name()
            ),
            "wait until `cce-cni-guard status` shows it complete, then rerun",
        ));
    }
    if let Some(why) = deploy_rollout_in_progress(deploy) {
        return Err(Refusal::new(
            format!(
                "a rollout of {} is in progress: {why}",
                targets.ipam.display_name()
            ),
            "wait until `cce-cni-guard status` shows it complete, then rerun",
        ));
    }
    Ok(Preflight::Go(Plan {
        target: target_image,
        from_version: agent_v.to_string(),
        to_version: target_v.to_string(),
        agent,
        ipam,
        downgrade,
    }))
}

/// The JSON Patch that moves every slot to `to`: `test` on each container's name and
/// current image (a concurrent edit fails the patch instead of being overwritten), then the
/// images and the change-cause annotation.
pub fn image_patch(
    slots: &[Slot],
    to: &str,
    change_cause: &str,
    has_annotations: bool,
) -> json_patch::Patch {
    let mut ops = Vec::new();
    for slot in slots {
        ops.push(json!({"op": "test", "path": format!("{}/name", slot.pointer()), "value": slot.container}));
        ops.push(
            json!({"op": "test", "path": format!("{}/image", slot.pointer()), "value": slot.image}),
        );
    }
    for slot in slots {
        ops.push(
            json!({"op": "replace", "path": format!("{}/image", slot.pointer()), "value": to}),
        );
    }
    ops.push(annotation_op(change_cause, has_annotations));
    // The operations above are well-formed by construction.
    serde_json::from_value(Value::Array(ops)).unwrap_or_default()
}

fn annotation_op(change_cause: &str, has_annotations: bool) -> Value {
    if has_annotations {
        json!({"op": "add", "path": "/metadata/annotations/kubernetes.io~1change-cause", "value": change_cause})
    } else {
        json!({"op": "add", "path": "/metadata/annotations", "value": {CHANGE_CAUSE: change_cause}})
    }
}

/// The JSON Patch that puts a whole pod template back (a rollback), guarded by `test` ops
/// on the current images.
pub fn template_patch(
    current: &[Slot],
    template: &Value,
    change_cause: &str,
    has_annotations: bool,
) -> json_patch::Patch {
    let mut ops = Vec::new();
    for slot in current {
        ops.push(json!({"op": "test", "path": format!("{}/name", slot.pointer()), "value": slot.container}));
        ops.push(
            json!({"op": "test", "path": format!("{}/image", slot.pointer()), "value": slot.image}),
        );
    }
    ops.push(json!({"op": "replace", "path": "/spec/template", "value": template}));
    ops.push(annotation_op(change_cause, has_annotations));
    serde_json::from_value(Value::Array(ops)).unwrap_or_default()
}

/// A sibling known from the cluster, for the guard check.
struct ReadSibling<'a> {
    workload: &'a GuardedWorkload,
    images: Option<&'a PodTemplateImages>,
}

impl SiblingLookup for ReadSibling<'_> {
    fn sibling(&self, workload: &GuardedWorkload) -> SiblingState {
        if workload != self.workload {
            return SiblingState::Unknown;
        }
        match self.images {
            Some(images) => SiblingState::Present(images.clone()),
            None => SiblingState::Absent,
        }
    }
}

/// Builds the would-be object by applying `patch` to `current` and asks the guard's policy
/// whether it would allow the change. Returns the object and the guard's warnings, or the
/// guard's denial message.
pub fn guard_check(
    workload: &GuardedWorkload,
    current: &Value,
    patch: &json_patch::Patch,
    sibling: (&GuardedWorkload, Option<&PodTemplateImages>),
    config: &Config,
) -> Result<(Value, Vec<String>), String> {
    let mut next = current.clone();
    json_patch::patch(&mut next, patch)
        .map_err(|e| format!("the planned patch does not apply: {e}"))?;
    let old = PodTemplateImages::from_workload(current);
    let new = PodTemplateImages::from_workload(&next);
    let (old_labels, labels) = (object_labels(current), object_labels(&next));
    let user = UserIdentity::default();
    let kind = workload.kind.to_string();
    let request = Request {
        operation: Operation::Update,
        group: "apps",
        kind: &kind,
        sub_resource: None,
        namespace: &workload.namespace,
        name: &workload.name,
        object: Some(new.as_ref()),
        old_object: Some(old.as_ref()),
        labels: Some(&labels),
        old_labels: Some(&old_labels),
        user: &user,
    };
    let lookup = ReadSibling {
        workload: sibling.0,
        images: sibling.1,
    };
    let decision = decide(&request, &lookup, config);
    if decision.allowed() {
        Ok((next, decision.warnings))
    } else {
        Err(decision.message)
    }
}

#[cfg(test)]
mod tests;
