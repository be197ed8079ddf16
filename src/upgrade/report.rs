//! What the cluster commands print: tables for people, JSON for machines. Pure.

use std::time::Duration;

use k8s_openapi::api::core::v1::PodSpec;
use serde_json::{Value, json};

use super::apply::{LogEntry, human};
use super::inspect::ClusterObjects;
use super::plan::{Plan, Targets, common_image, deploy_spec, ds_spec, locate, same_image};
use super::record::{Operation, Phase, Record};
use super::revisions::Revision;
use crate::policy::{Config, GuardedWorkload, ImageRef, PodTemplateImages};

fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.iter().map(Vec::len).max().unwrap_or(0))
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == row.len() {
                    cell.clone()
                } else {
                    format!(
                        "{cell:<width$}",
                        width = widths.get(i).copied().unwrap_or(0)
                    )
                }
            })
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

fn version_of(image: &str) -> String {
    ImageRef::parse(image)
        .ok()
        .and_then(|r| r.version())
        .map(|v| v.to_string())
        .unwrap_or_else(|| "(not a version)".into())
}

/// One rollout's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRollout {
    pub desired: i32,
    pub current: i32,
    pub ready: i32,
    pub updated: i32,
    pub available: i32,
    pub generation: i64,
    pub observed_generation: i64,
    pub in_progress: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusWebhook {
    Registered(Vec<String>),
    NotRegistered,
    NotVisible,
}

struct WorkloadStatus {
    workload: GuardedWorkload,
    present: bool,
    images: Vec<(String, String)>,
    error: Option<String>,
    rollout: Option<StatusRollout>,
}

/// The SOP's checks as one report.
pub struct Status {
    configmap: bool,
    workloads: Vec<WorkloadStatus>,
    webhook: StatusWebhook,
    lock: Option<(Option<String>, Option<Record>)>,
    problems: Vec<String>,
    notes: Vec<String>,
}

impl Status {
    pub fn new(
        targets: &Targets,
        config: &Config,
        configmap: bool,
        agent: Option<(Option<&PodSpec>, StatusRollout)>,
        ipam: Option<(Option<&PodSpec>, StatusRollout)>,
        webhook: StatusWebhook,
        lock: Option<(Option<String>, Option<Record>)>,
    ) -> Self {
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        if !configmap {
            problems.push(format!(
                "ConfigMap {}/{} not found: not a CCE v1 container network",
                targets.agent.namespace, targets.agent.name
            ));
        }
        let mut workloads = Vec::new();
        for (w, found) in [(&targets.agent, agent), (&targets.ipam, ipam)] {
            let mut ws = WorkloadStatus {
                workload: w.clone(),
                present: found.is_some(),
                images: Vec::new(),
                error: None,
                rollout: None,
            };
            match found {
                None => problems.push(format!("{} not found", w.display_name())),
                Some((spec, rollout)) => {
                    match locate(w, spec) {
                        Ok(slots) => {
                            if common_image(&slots).is_none() {
                                problems.push(format!(
                                    "the guarded containers of {} disagree",
                                    w.display_name()
                                ));
                            }
                            ws.images = slots.into_iter().map(|s| (s.container, s.image)).collect();
                        }
                        Err(e) => {
                            problems.push(e.clone());
                            ws.error = Some(e);
                        }
                    }
                    if let Some(why) = &rollout.in_progress {
                        problems.push(format!("{}: rollout in progress ({why})", w.display_name()));
                    } else if rollout.ready < rollout.desired {
                        if w.kind == crate::policy::WorkloadKind::DaemonSet {
                            problems.push(format!(
                                "{}: {} of {} pods Ready",
                                w.display_name(),
                                rollout.ready,
                                rollout.desired
                            ));
                        } else if rollout.ready == 0 {
                            problems.push(format!("{}: no pod Ready", w.display_name()));
                        } else {
                            notes.push(format!(
                                "{}: {} of {} Ready (only the elected leader serves; healthy)",
                                w.display_name(),
                                rollout.ready,
                                rollout.desired
                            ));
                        }
                    }
                    ws.rollout = Some(rollout);
                }
            }
            workloads.push(ws);
        }
        let images: Vec<&str> = workloads
            .iter()
            .flat_map(|w| w.images.iter().map(|(_, i)| i.as_str()))
            .collect();
        if let Some(first) = images.first()
            && images.iter().any(|i| !same_image(i, first))
            && workloads.iter().all(|w| !w.images.is_empty())
        {
            let a: Vec<&str> = workloads
                .iter()
                .filter_map(|w| w.images.first().map(|(_, i)| i.as_str()))
                .collect();
            let same_line = match (
                a.first().and_then(|i| ImageRef::parse(i).ok()),
                a.get(1).and_then(|i| ImageRef::parse(i).ok()),
            ) {
                (Some(x), Some(y)) => {
                    config.same_repository(&x.repository(), &y.repository())
                        && x.version()
                            .zip(y.version())
                            .is_some_and(|(v, w)| v.same_line(&w))
                }
                _ => false,
            };
            problems.push(if same_line {
                "the workloads run different patch versions (an upgrade is half done): finish it with `cce-cni-guard upgrade`".to_owned()
            } else {
                "the workloads run different repositories or release lines".to_owned()
            });
        }
        if let Some((Some(holder), _)) = &lock {
            problems.push(format!("an upgrade is running (lock held by {holder})"));
        } else if let Some((None, Some(record))) = &lock
            && (!record.phase.is_terminal() || record.rollback_to_resume(false))
        {
            problems.push(format!(
                "an interrupted {} is recorded at phase {}: rerun `cce-cni-guard upgrade` or `rollback` to converge",
                match record.operation {
                    Operation::Upgrade => "upgrade",
                    Operation::Rollback => "rollback",
                },
                record.phase.as_str()
            ));
        }
        Self {
            configmap,
            workloads,
            webhook,
            lock,
            problems,
            notes,
        }
    }

    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "v1 network: {}\n\n",
            if self.configmap {
                "yes (ConfigMap cce-cni-node-agent present)"
            } else {
                "NO (ConfigMap cce-cni-node-agent missing)"
            }
        ));
        let mut rows = vec![vec![
            "WORKLOAD".into(),
            "CONTAINER".into(),
            "IMAGE".into(),
            "VERSION".into(),
        ]];
        for w in &self.workloads {
            if !w.present {
                rows.push(vec![
                    w.workload.display_name(),
                    "-".into(),
                    "(not found)".into(),
                    "-".into(),
                ]);
            }
            for (c, i) in &w.images {
                rows.push(vec![
                    w.workload.display_name(),
                    c.clone(),
                    i.clone(),
                    version_of(i),
                ]);
            }
        }
        out.push_str(&table(&rows));
        out.push('\n');
        let mut rows = vec![
            [
                "WORKLOAD",
                "DESIRED",
                "CURRENT",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "GENERATION",
                "OBSERVED",
                "ROLLOUT",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>(),
        ];
        for w in &self.workloads {
            if let Some(r) = &w.rollout {
                rows.push(vec![
                    w.workload.display_name(),
                    r.desired.to_string(),
                    r.current.to_string(),
                    r.ready.to_string(),
                    r.updated.to_string(),
                    r.available.to_string(),
                    r.generation.to_string(),
                    r.observed_generation.to_string(),
                    r.in_progress.clone().unwrap_or_else(|| "complete".into()),
                ]);
            }
        }
        out.push_str(&table(&rows));
        out.push('\n');
        out.push_str(&format!(
            "guard webhook: {}\n",
            match &self.webhook {
                StatusWebhook::Registered(names) => format!("registered: {}", names.join(", ")),
                StatusWebhook::NotRegistered => "not registered".into(),
                StatusWebhook::NotVisible =>
                    "not visible (no permission to list ValidatingWebhookConfigurations)".into(),
            }
        ));
        out.push_str(&format!(
            "upgrade lock: {}\n",
            match &self.lock {
                None => "free (no upgrade recorded)".to_owned(),
                Some((Some(holder), _)) => format!("held by {holder}"),
                Some((None, Some(r))) => format!(
                    "free; last {} {} ({}, {})",
                    match r.operation {
                        Operation::Upgrade => "upgrade to",
                        Operation::Rollback => "rollback",
                    },
                    r.target,
                    r.phase.as_str(),
                    r.updated_at
                ),
                Some((None, None)) => "free".to_owned(),
            }
        ));
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        if self.healthy() {
            out.push_str("\nHEALTHY\n");
        } else {
            out.push_str("\nNOT HEALTHY\n");
            for p in &self.problems {
                out.push_str(&format!("- {p}\n"));
            }
        }
        out
    }

    pub fn json(&self) -> Value {
        json!({
            "healthy": self.healthy(),
            "v1Network": self.configmap,
            "workloads": self.workloads.iter().map(|w| json!({
                "workload": w.workload.display_name(),
                "kind": w.workload.kind.to_string(),
                "namespace": w.workload.namespace,
                "name": w.workload.name,
                "present": w.present,
                "error": w.error,
                "containers": w.images.iter().map(|(c, i)| json!({"name": c, "image": i, "version": version_of(i)})).collect::<Vec<_>>(),
                "consistent": w.images.windows(2).all(|p| same_image(&p[0].1, &p[1].1)),
                "rollout": w.rollout.as_ref().map(|r| json!({
                    "desired": r.desired, "current": r.current, "ready": r.ready,
                    "upToDate": r.updated, "available": r.available,
                    "generation": r.generation, "observedGeneration": r.observed_generation,
                    "complete": r.in_progress.is_none(), "inProgress": r.in_progress,
                })),
            })).collect::<Vec<_>>(),
            "webhook": match &self.webhook {
                StatusWebhook::Registered(names) => json!({"state": "registered", "configurations": names}),
                StatusWebhook::NotRegistered => json!({"state": "not-registered"}),
                StatusWebhook::NotVisible => json!({"state": "not-visible"}),
            },
            "lock": self.lock.as_ref().map(|(holder, record)| json!({
                "holder": holder,
                "lastPhase": record.as_ref().map(|r| r.phase.as_str()),
                "lastTarget": record.as_ref().map(|r| r.target.clone()),
            })),
            "problems": self.problems,
            "notes": self.notes,
        })
    }
}

/// One revision of one workload, as `history` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub workload: String,
    pub kind: String,
    pub revision: i64,
    pub name: String,
    pub hash: String,
    pub current: bool,
    pub images: Vec<(String, String)>,
    pub change_cause: Option<String>,
    pub created: Option<String>,
}

impl HistoryRow {
    pub fn new(w: &GuardedWorkload, r: &Revision, current: bool) -> Self {
        let spec = r.pod_template().and_then(|t| t.spec);
        let images = spec
            .as_ref()
            .map(PodTemplateImages::from_pod_spec)
            .map(|t| {
                w.containers
                    .iter()
                    .flat_map(|c| {
                        t.named(c)
                            .map(|x| (x.name.clone(), x.image.clone()))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            workload: w.display_name(),
            kind: w.kind.to_string(),
            revision: r.number,
            name: r.name.clone(),
            hash: r.hash.clone(),
            current,
            images,
            change_cause: r.change_cause.clone(),
            created: r.created.clone(),
        }
    }
}

pub fn history_text(rows: &[HistoryRow]) -> String {
    let mut table_rows = vec![
        [
            "WORKLOAD",
            "REVISION",
            "NAME",
            "IMAGES",
            "CHANGE-CAUSE",
            "CREATED",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect::<Vec<_>>(),
    ];
    for r in rows {
        let images: Vec<String> = r.images.iter().map(|(c, i)| format!("{c}={i}")).collect();
        table_rows.push(vec![
            r.workload.clone(),
            format!(
                "{}{}",
                r.revision,
                if r.current { " (current)" } else { "" }
            ),
            r.name.clone(),
            images.join(" "),
            r.change_cause.clone().unwrap_or_else(|| "<none>".into()),
            r.created.clone().unwrap_or_default(),
        ]);
    }
    let mut out = table(&table_rows);
    out.push_str(
        "\nroll back with: cce-cni-guard rollback --component agent|ipam --to-revision N\n",
    );
    out
}

pub fn history_json(rows: &[HistoryRow]) -> Value {
    json!({"revisions": rows.iter().map(|r| json!({
        "workload": r.workload, "kind": r.kind, "revision": r.revision, "name": r.name,
        "hash": r.hash, "current": r.current,
        "containers": r.images.iter().map(|(c, i)| json!({"name": c, "image": i})).collect::<Vec<_>>(),
        "changeCause": r.change_cause, "created": r.created,
    })).collect::<Vec<_>>()})
}

pub fn plan_text(plan: &Plan, targets: &Targets, change_cause: &str) -> String {
    let mut out = format!(
        "plan (dry run, nothing written): {} → {}{}\n",
        plan.from_version,
        plan.to_version,
        if plan.downgrade { " (downgrade)" } else { "" }
    );
    let mut rows = vec![
        ["STEP", "WORKLOAD", "CONTAINERS", "FROM", "TO"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>(),
    ];
    for (n, (w, p)) in [(&targets.agent, &plan.agent), (&targets.ipam, &plan.ipam)]
        .iter()
        .enumerate()
    {
        rows.push(vec![
            (n + 1).to_string(),
            w.display_name(),
            p.slots
                .iter()
                .map(|s| format!("{}{}", s.container, if s.init { " (init)" } else { "" }))
                .collect::<Vec<_>>()
                .join(", "),
            p.from.clone(),
            if p.change {
                plan.target.clone()
            } else {
                "(already there)".into()
            },
        ]);
    }
    out.push_str(&table(&rows));
    out.push_str(&format!(
        "each workload: one JSON Patch with test ops on the current images, change-cause {change_cause:?}; wait for the rollout; ipam remedy (scale 0 → {}) once if new pods cannot get free host ports; automatic rollback on failure\n",
        plan.ipam.desired
    ));
    out
}

pub fn plan_json(plan: &Plan, targets: &Targets, change_cause: &str) -> Value {
    json!({
        "outcome": "plan",
        "dryRun": true,
        "from": plan.from_version,
        "to": plan.to_version,
        "target": plan.target,
        "downgrade": plan.downgrade,
        "changeCause": change_cause,
        "steps": [
            {"workload": targets.agent.display_name(), "from": plan.agent.from, "change": plan.agent.change,
             "containers": plan.agent.slots.iter().map(|s| json!({"name": s.container, "init": s.init, "index": s.index})).collect::<Vec<_>>()},
            {"workload": targets.ipam.display_name(), "from": plan.ipam.from, "change": plan.ipam.change,
             "containers": plan.ipam.slots.iter().map(|s| json!({"name": s.container, "init": s.init, "index": s.index})).collect::<Vec<_>>()},
        ],
    })
}

/// The final report of `upgrade` or `rollback`.
pub struct RunReport {
    pub value: Value,
    text: String,
}

fn outcome_name(operation: Operation, phase: Phase) -> &'static str {
    match (operation, phase) {
        (_, Phase::Succeeded) => "succeeded",
        (Operation::Upgrade, Phase::RolledBack) => "failed-rolled-back",
        (Operation::Rollback, Phase::RolledBack) => "rolled-back",
        (_, Phase::Failed) => "failed-not-rolled-back",
        _ => "rollback-failed",
    }
}

impl RunReport {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        record: &Record,
        phase: Phase,
        exit_code: u8,
        log: &[LogEntry],
        elapsed: Duration,
        writes: u64,
        observed: Option<&ClusterObjects>,
        targets: &Targets,
    ) -> Self {
        let now_images = |w: &GuardedWorkload, spec: Option<&PodSpec>| {
            locate(w, spec)
                .ok()
                .and_then(|s| common_image(&s).map(str::to_owned))
        };
        let agent_now = observed
            .and_then(|o| o.agent.as_ref())
            .and_then(|d| now_images(&targets.agent, ds_spec(d)));
        let ipam_now = observed
            .and_then(|o| o.ipam.as_ref())
            .and_then(|d| now_images(&targets.ipam, deploy_spec(d)));
        let outcome = outcome_name(record.operation, phase);
        let value = json!({
            "operation": match record.operation { Operation::Upgrade => "upgrade", Operation::Rollback => "rollback" },
            "outcome": outcome,
            "exitCode": exit_code,
            "target": record.target,
            "phase": phase.as_str(),
            "failure": record.failure,
            "rollbackFailure": record.rollback_failure,
            "remedyUsed": record.remedy_used,
            "elapsedSeconds": elapsed.as_secs_f64(),
            "writes": writes,
            "workloads": [
                {"workload": targets.agent.display_name(), "before": record.agent.image(),
                 "beforeRevision": record.agent.revision, "beforeHash": record.agent.hash, "now": agent_now,
                 "readyBefore": record.agent.ready, "skipped": record.skip_agent},
                {"workload": targets.ipam.display_name(), "before": record.ipam.image(),
                 "beforeRevision": record.ipam.revision, "beforeHash": record.ipam.hash, "now": ipam_now,
                 "readyBefore": record.ipam.ready, "replicas": record.ipam.replicas, "skipped": record.skip_ipam},
            ],
            "log": log,
        });
        let mut text = format!(
            "{}: {} in {} (exit {exit_code}, {writes} writes)\n",
            match record.operation {
                Operation::Upgrade => format!("upgrade to {}", record.target),
                Operation::Rollback => "rollback".to_owned(),
            },
            outcome,
            human(elapsed)
        );
        let label = match record.operation {
            Operation::Upgrade => "BEFORE",
            Operation::Rollback => "TARGET",
        };
        let mut rows = vec![vec![
            "WORKLOAD".into(),
            label.into(),
            "REVISION".into(),
            "NOW".into(),
        ]];
        for (w, s, now, skipped) in [
            (&targets.agent, &record.agent, agent_now, record.skip_agent),
            (&targets.ipam, &record.ipam, ipam_now, record.skip_ipam),
        ] {
            rows.push(vec![
                w.display_name(),
                if skipped {
                    "(not rolled back)".to_owned()
                } else {
                    s.image().unwrap_or("-").to_owned()
                },
                if skipped {
                    "-".to_owned()
                } else {
                    format!("{} ({})", s.revision, s.hash)
                },
                now.unwrap_or_else(|| "-".into()),
            ]);
        }
        text.push_str(&table(&rows));
        if record.remedy_used {
            text.push_str("ipam remedy (scale to 0 and back) was used\n");
        }
        if let Some(f) = &record.failure {
            text.push_str(&format!("failure: {f}\n"));
        }
        if let Some(f) = &record.rollback_failure {
            text.push_str(&format!("rollback failure: {f}\n"));
        }
        Self { value, text }
    }

    pub fn json(&self) -> String {
        self.value.to_string()
    }

    pub fn text(&self) -> String {
        self.text.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use serde_json::json;

    fn spec(images: &[(&str, &str, bool)]) -> PodSpec {
        let (init, main): (Vec<_>, Vec<_>) = images.iter().partition(|(_, _, init)| *init);
        serde_json::from_value(json!({
            "initContainers": init.iter().map(|(n, i, _)| json!({"name": n, "image": i})).collect::<Vec<_>>(),
            "containers": main.iter().map(|(n, i, _)| json!({"name": n, "image": i})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    fn rollout(desired: i32, ready: i32) -> StatusRollout {
        StatusRollout {
            desired,
            current: desired,
            ready,
            updated: desired,
            available: ready,
            generation: 1,
            observed_generation: 1,
            in_progress: None,
        }
    }

    const V3: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.3";
    const V4: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4";

    fn status(agent: &PodSpec, ipam: &PodSpec, ipam_ready: i32, configmap: bool) -> Status {
        let targets = Targets::from_config(&Config::default()).unwrap();
        Status::new(
            &targets,
            &Config::default(),
            configmap,
            Some((Some(agent), rollout(5, 5))),
            Some((Some(ipam), rollout(3, ipam_ready))),
            StatusWebhook::NotVisible,
            None,
        )
    }

    #[test]
    fn healthy_includes_a_leader_elected_ipam() {
        let agent = spec(&[
            ("install-cni-binary", V3, true),
            ("cce-cni-node-agent", V3, false),
        ]);
        let ipam = spec(&[("cce-eni-ipam", V3, false)]);
        let s = status(&agent, &ipam, 1, true);
        assert!(s.healthy(), "{}", s.text());
        assert!(s.text().contains("only the elected leader"));
        assert_eq!(
            s.json()["workloads"][0]["containers"][0]["version"],
            "v1.9.3"
        );
        assert!(!status(&agent, &ipam, 0, true).healthy());
    }

    #[test]
    fn unhealthy_says_why() {
        let agent = spec(&[
            ("install-cni-binary", V3, true),
            ("cce-cni-node-agent", V4, false),
        ]);
        let ipam = spec(&[("cce-eni-ipam", V3, false)]);
        let s = status(&agent, &ipam, 3, true);
        assert!(!s.healthy());
        assert!(s.text().contains("disagree"), "{}", s.text());
        let agent = spec(&[
            ("install-cni-binary", V4, true),
            ("cce-cni-node-agent", V4, false),
        ]);
        let s = status(&agent, &ipam, 3, false);
        let text = s.text();
        assert!(
            text.contains("half done") && text.contains("not a CCE v1"),
            "{text}"
        );
    }

    #[test]
    fn history_rows_show_guarded_images_and_change_cause() {
        let targets = Targets::from_config(&Config::default()).unwrap();
        let revision = Revision {
            name: "cce-eni-ipam-abc".into(),
            number: 2,
            hash: "abc".into(),
            change_cause: Some("cce-cni-guard upgrade --to v1.9.4".into()),
            created: None,
            template: json!({"spec": {"containers": [{"name": "cce-eni-ipam", "image": V4}, {"name": "sidecar", "image": "x"}]}}),
        };
        let row = HistoryRow::new(&targets.ipam, &revision, true);
        assert_eq!(row.images, vec![("cce-eni-ipam".to_owned(), V4.to_owned())]);
        let text = history_text(std::slice::from_ref(&row));
        assert!(
            text.contains("2 (current)") && text.contains("--to v1.9.4"),
            "{text}"
        );
        assert_eq!(history_json(&[row])["revisions"][0]["current"], true);
    }
}
