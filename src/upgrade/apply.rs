//! The executor: reads, writes and waits as the record's state machine says, recording the
//! intent before each write. All decisions come from the pure modules.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::lock::{Lock, LockError};
use super::plan::{
    Slot, Targets, deploy_spec, ds_spec, guard_check, image_patch, locate, template_patch,
};
use super::record::{
    Component, Now, Operation, Phase, Record, Step, after_scale_down, after_scale_up, after_wait,
    next_step, on_failure, remedy_phase,
};
use super::revisions::{self, selector_string};
use super::wait::{Counts, Progress, agent_progress, ipam_progress};
use crate::cluster::watch::{Control, View, watch_until};
use crate::cluster::{Cluster, ClusterError};
use crate::policy::{Config, GuardedWorkload, PodTemplateImages};

/// How long to wait, and how to talk while waiting.
#[derive(Debug, Clone)]
pub struct WaitOptions {
    /// The agent's deadline; `None`: 5 min + 30 s per desired pod.
    pub agent_timeout: Option<Duration>,
    pub ipam_timeout: Duration,
    /// How long new ipam pods must stay unschedulable for free ports before the remedy.
    pub stuck_after: Duration,
    /// A progress line at least this often while nothing changes.
    pub progress_every: Duration,
    pub no_rollback: bool,
}

impl WaitOptions {
    pub fn agent_deadline(&self, desired: i32) -> Duration {
        self.agent_timeout.unwrap_or_else(|| {
            Duration::from_secs(300 + 30 * u64::try_from(desired.max(0)).unwrap_or(0))
        })
    }
}

/// One line of the run's log, for the final report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogEntry {
    pub at_seconds: f64,
    pub phase: String,
    pub note: String,
}

/// Why the executor had to stop without reaching a terminal phase (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0}")]
    Lock(#[from] LockError),
}

/// What a step failed on.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Lock(#[from] LockError),
}

impl From<ExecError> for StepError {
    fn from(err: ExecError) -> Self {
        match err {
            ExecError::Lock(lock) => Self::Lock(lock),
        }
    }
}

/// The current objects, as the state machine sees them.
struct Observed {
    agent: DaemonSet,
    ipam: Deployment,
    now: Now,
}

enum WaitOutcome {
    Done(Counts),
    Stuck(Vec<String>),
}

pub struct Executor<'a> {
    pub cluster: &'a Cluster,
    pub targets: &'a Targets,
    pub config: &'a Config,
    pub lock: &'a Lock,
    pub options: &'a WaitOptions,
    pub record: Record,
    pub log: Vec<LogEntry>,
    started: Instant,
    /// Concurrent-edit re-plans left before giving up.
    replans: u32,
}

fn now_string() -> String {
    Timestamp::now().to_string()
}

impl<'a> Executor<'a> {
    pub fn new(
        cluster: &'a Cluster,
        targets: &'a Targets,
        config: &'a Config,
        lock: &'a Lock,
        options: &'a WaitOptions,
        record: Record,
    ) -> Self {
        Self {
            cluster,
            targets,
            config,
            lock,
            options,
            record,
            log: Vec::new(),
            started: Instant::now(),
            replans: 3,
        }
    }

    fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("{}", note);
        self.log.push(LogEntry {
            at_seconds: (self.started.elapsed().as_millis() as f64) / 1000.0,
            phase: self.record.phase.as_str().into(),
            note,
        });
    }

    async fn goto(&mut self, phase: Phase) -> Result<(), ExecError> {
        self.record.advance(phase, &now_string());
        self.lock.save(&self.record).await?;
        Ok(())
    }

    async fn observe(&self) -> Result<Observed, StepError> {
        let (a, i) = (&self.targets.agent, &self.targets.ipam);
        let agent = self
            .cluster
            .daemonset(&a.namespace, &a.name)
            .await?
            .ok_or_else(|| StepError::Failed(format!("{} disappeared", a.display_name())))?;
        let ipam = self
            .cluster
            .deployment(&i.namespace, &i.name)
            .await?
            .ok_or_else(|| StepError::Failed(format!("{} disappeared", i.display_name())))?;
        let now = Now {
            agent: locate(a, ds_spec(&agent)).map_err(StepError::Failed)?,
            ipam: locate(i, deploy_spec(&ipam)).map_err(StepError::Failed)?,
            ipam_replicas: ipam.spec.replicas.unwrap_or(1),
        };
        Ok(Observed { agent, ipam, now })
    }

    /// Runs until a terminal phase. `Err` only when the record can no longer be written.
    pub async fn run(&mut self) -> Result<Phase, ExecError> {
        loop {
            let result = match self.observe().await {
                Ok(observed) => {
                    let step = next_step(&self.record, &observed.now);
                    if let Step::Finished(phase) = step {
                        return Ok(phase);
                    }
                    self.execute(step, &observed).await
                }
                Err(err) => Err(err),
            };
            if let Err(err) = result {
                if let StepError::Lock(lock) = err {
                    return Err(ExecError::Lock(lock));
                }
                self.fail(err.to_string()).await?;
            }
        }
    }

    async fn fail(&mut self, why: String) -> Result<(), ExecError> {
        let next = on_failure(&self.record, self.options.no_rollback);
        let objects = self.observe().await.ok();
        if self.record.phase.is_rollback() {
            self.note(format!("rollback failed: {why}"));
            self.record.rollback_failure = Some(why.clone());
            self.event(objects.as_ref(), "RollbackFailed", &why, true)
                .await;
        } else {
            self.note(format!("upgrade failed: {why}"));
            self.record.failure = Some(why.clone());
            let reason = match self.record.operation {
                Operation::Upgrade => "UpgradeFailed",
                Operation::Rollback => "RollbackFailed",
            };
            self.event(objects.as_ref(), reason, &why, true).await;
            if next == Phase::RollbackIpam {
                self.note("rolling back: ipam first, then the agent");
                self.event(
                    objects.as_ref(),
                    "RollbackStarted",
                    "rolling back to the recorded revisions",
                    true,
                )
                .await;
            }
        }
        self.goto(next).await
    }

    async fn execute(&mut self, step: Step, observed: &Observed) -> Result<(), StepError> {
        match step {
            Step::Finished(_) => Ok(()),
            Step::Advance(phase) => {
                self.replans = 3;
                Ok(self.goto(phase).await?)
            }
            Step::Fail(why) => Err(StepError::Failed(why)),
            Step::PatchImages(component) => self.patch_images(component, observed).await,
            Step::Restore(component) => self.restore(component, observed).await,
            Step::Wait { component, back } => {
                let outcome = match component {
                    Component::Agent => self.wait_agent(observed, back).await?,
                    Component::Ipam => self.wait_ipam(observed, back).await?,
                };
                match outcome {
                    WaitOutcome::Done(counts) => {
                        let (reason, what) = match (component, back) {
                            (Component::Agent, false) => {
                                ("AgentUpdated", "agent DaemonSet updated")
                            }
                            (Component::Ipam, false) => ("IpamUpdated", "ipam Deployment updated"),
                            (Component::Agent, true) => {
                                ("AgentRolledBack", "agent DaemonSet rolled back")
                            }
                            (Component::Ipam, true) => {
                                ("IpamRolledBack", "ipam Deployment rolled back")
                            }
                        };
                        let message = format!("{what}: {}", counts.line());
                        self.note(message.clone());
                        if !back {
                            self.event(Some(observed), reason, &message, false).await;
                        }
                        Ok(self.goto(after_wait(self.record.phase)).await?)
                    }
                    WaitOutcome::Stuck(pods) => {
                        let replicas = self
                            .record
                            .ipam
                            .replicas
                            .unwrap_or(self.record.ipam.desired);
                        let message = format!(
                            "new ipam pods {} cannot be scheduled (no free host ports): scaling to 0 and back to {replicas} (SOP 2.3.2.1)",
                            pods.join(", ")
                        );
                        self.note(message.clone());
                        self.event(Some(observed), "IpamRemedy", &message, true)
                            .await;
                        self.record.remedy_used = true;
                        Ok(self.goto(remedy_phase(self.record.phase)).await?)
                    }
                }
            }
            Step::ScaleDown { already } => {
                let i = &self.targets.ipam;
                if !already {
                    self.lock.check()?;
                    self.cluster
                        .scale_deployment(&i.namespace, &i.name, 0)
                        .await?;
                }
                self.wait_no_pods(observed).await?;
                Ok(self.goto(after_scale_down(self.record.phase)).await?)
            }
            Step::ScaleUp { replicas, already } => {
                let i = &self.targets.ipam;
                if !already {
                    self.lock.check()?;
                    self.cluster
                        .scale_deployment(&i.namespace, &i.name, replicas)
                        .await?;
                }
                Ok(self.goto(after_scale_up(self.record.phase)).await?)
            }
            Step::Verify { back } => self.verify(observed, back).await,
        }
    }

    fn component(&self, component: Component) -> (&'a GuardedWorkload, &'a GuardedWorkload) {
        match component {
            Component::Agent => (&self.targets.agent, &self.targets.ipam),
            Component::Ipam => (&self.targets.ipam, &self.targets.agent),
        }
    }

    fn parts(
        &self,
        component: Component,
        observed: &Observed,
    ) -> Result<(Value, Vec<Slot>, Option<PodTemplateImages>, bool), StepError> {
        let (value, slots, sibling, annotations) = match component {
            Component::Agent => (
                serde_json::to_value(&observed.agent),
                observed.now.agent.clone(),
                deploy_spec(&observed.ipam).map(PodTemplateImages::from_pod_spec),
                observed.agent.metadata.annotations.is_some(),
            ),
            Component::Ipam => (
                serde_json::to_value(&observed.ipam),
                observed.now.ipam.clone(),
                ds_spec(&observed.agent).map(PodTemplateImages::from_pod_spec),
                observed.ipam.metadata.annotations.is_some(),
            ),
        };
        let value = value.map_err(|e| StepError::Failed(format!("encoding the object: {e}")))?;
        Ok((value, slots, sibling, annotations))
    }

    /// Sends a planned patch after the guard's policy has allowed the would-be object.
    async fn send_patch(
        &mut self,
        component: Component,
        current: &Value,
        patch: json_patch::Patch,
        sibling_images: Option<&PodTemplateImages>,
    ) -> Result<(), StepError> {
        let (workload, sibling) = self.component(component);
        let (_, warnings) = guard_check(
            workload,
            current,
            &patch,
            (sibling, sibling_images),
            self.config,
        )
        .map_err(|message| {
            StepError::Failed(format!(
                "the guard would refuse the planned change to {}:\n{message}",
                workload.display_name()
            ))
        })?;
        for w in warnings {
            eprintln!("warning: {w}");
        }
        self.lock.check()?;
        let result = match component {
            Component::Agent => self
                .cluster
                .json_patch::<DaemonSet>(&workload.namespace, "DaemonSet", &workload.name, patch)
                .await
                .map(|_| ()),
            Component::Ipam => self
                .cluster
                .json_patch::<Deployment>(&workload.namespace, "Deployment", &workload.name, patch)
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => Ok(()),
            // A failed `test`: someone edited the object since we read it. Re-read and
            // re-plan; never overwrite.
            Err(err) if err.is_conflict() && self.replans > 0 => {
                self.replans -= 1;
                self.note(format!("{err}; re-reading and re-planning"));
                Ok(())
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn patch_images(
        &mut self,
        component: Component,
        observed: &Observed,
    ) -> Result<(), StepError> {
        let (value, slots, sibling_images, annotations) = self.parts(component, observed)?;
        let (workload, _) = self.component(component);
        self.note(format!(
            "setting {} of {} to {}",
            slots
                .iter()
                .map(|s| s.container.as_str())
                .collect::<Vec<_>>()
                .join(" and "),
            workload.display_name(),
            self.record.target
        ));
        let patch = image_patch(
            &slots,
            &self.record.target,
            &self.record.change_cause,
            annotations,
        );
        self.send_patch(component, &value, patch, sibling_images.as_ref())
            .await
    }

    async fn restore(
        &mut self,
        component: Component,
        observed: &Observed,
    ) -> Result<(), StepError> {
        let (value, slots, sibling_images, annotations) = self.parts(component, observed)?;
        let (workload, _) = self.component(component);
        let snapshot = match component {
            Component::Agent => self.record.agent.clone(),
            Component::Ipam => self.record.ipam.clone(),
        };
        let selector = match component {
            Component::Agent => selector_string(Some(&observed.agent.spec.selector)),
            Component::Ipam => selector_string(Some(&observed.ipam.spec.selector)),
        };
        let revisions = match component {
            Component::Agent => {
                let crs = self
                    .cluster
                    .controller_revisions(&workload.namespace, &selector)
                    .await?;
                revisions::ds_revisions(&observed.agent, &crs)
            }
            Component::Ipam => {
                let rss = self
                    .cluster
                    .replica_sets(&workload.namespace, &selector)
                    .await?;
                revisions::deploy_revisions(&observed.ipam, &rss)
            }
        };
        let cause = format!("{} (rollback)", self.record.change_cause);
        let patch = match revisions::find_recorded(
            &revisions,
            &snapshot.hash,
            &snapshot.revision_name,
        )
        .filter(|r| r.template.is_object())
        {
            Some(revision) => {
                self.note(format!(
                    "restoring {} to revision {} ({}, now numbered {})",
                    workload.display_name(),
                    snapshot.revision,
                    revision.name,
                    revision.number
                ));
                template_patch(&slots, &revision.template, &cause, annotations)
            }
            None => {
                // The revision was pruned (revisionHistoryLimit): put the images back.
                self.note(format!(
                    "revision {} of {} is gone; restoring the recorded images",
                    snapshot.revision,
                    workload.display_name()
                ));
                let mut ops = Vec::new();
                for slot in &slots {
                    let Some(old) = snapshot
                        .slots
                        .iter()
                        .find(|s| s.container == slot.container)
                    else {
                        continue;
                    };
                    ops.push(serde_json::json!({"op": "test", "path": format!("{}/image", slot.pointer()), "value": slot.image}));
                    ops.push(serde_json::json!({"op": "replace", "path": format!("{}/image", slot.pointer()), "value": old.image}));
                }
                serde_json::from_value(Value::Array(ops)).unwrap_or_default()
            }
        };
        self.send_patch(component, &value, patch, sibling_images.as_ref())
            .await
    }

    fn wait_image(&self, component: Component, back: bool) -> String {
        if back {
            let snapshot = match component {
                Component::Agent => &self.record.agent,
                Component::Ipam => &self.record.ipam,
            };
            snapshot
                .image()
                .or_else(|| snapshot.slots.first().map(|s| s.image.as_str()))
                .unwrap_or_default()
                .to_owned()
        } else {
            self.record.target.clone()
        }
    }

    async fn wait_agent(
        &mut self,
        observed: &Observed,
        back: bool,
    ) -> Result<WaitOutcome, StepError> {
        let a = &self.targets.agent;
        let desired = observed
            .agent
            .status
            .as_ref()
            .map(|s| s.desired_number_scheduled)
            .unwrap_or(0);
        let deadline = self.options.agent_deadline(desired);
        let image = self.wait_image(Component::Agent, back);
        let ready_before = self.record.agent.ready;
        let containers = a.containers.clone();
        let selector = selector_string(Some(&observed.agent.spec.selector));
        let label = a.display_name();
        let mut printer = ProgressPrinter::new(label, deadline, self.options.progress_every);
        let outcome = watch_until(
            self.cluster.api::<DaemonSet>(&a.namespace),
            self.cluster.api::<Pod>(&a.namespace),
            &a.name,
            &selector,
            Duration::from_secs(1),
            |view: &View<DaemonSet>, now| {
                let Some(ds) = &view.workload else {
                    return Control::Break(Err(format!(
                        "{} was deleted while waiting",
                        a.display_name()
                    )));
                };
                let pods: Vec<&Pod> = view.pods.values().collect();
                match agent_progress(ds, &pods, &containers, &image, ready_before) {
                    Progress::Done(counts) => Control::Break(Ok(counts)),
                    Progress::Failed(why) => Control::Break(Err(why)),
                    Progress::Waiting(counts) => printer.still_rolling(counts.line(), now),
                }
            },
        )
        .await;
        outcome.map(WaitOutcome::Done).map_err(StepError::Failed)
    }

    async fn wait_ipam(
        &mut self,
        observed: &Observed,
        back: bool,
    ) -> Result<WaitOutcome, StepError> {
        let i = &self.targets.ipam;
        let deadline = self.options.ipam_timeout;
        let image = self.wait_image(Component::Ipam, back);
        let ready_before = self.record.ipam.ready;
        let containers = i.containers.clone();
        let selector = selector_string(Some(&observed.ipam.spec.selector));
        let remedy_available = !self.record.remedy_used;
        let stuck_after = self.options.stuck_after;
        let mut stuck_since: Option<tokio::time::Instant> = None;
        let mut printer =
            ProgressPrinter::new(i.display_name(), deadline, self.options.progress_every);
        let outcome = watch_until(
            self.cluster.api::<Deployment>(&i.namespace),
            self.cluster.api::<Pod>(&i.namespace),
            &i.name,
            &selector,
            Duration::from_secs(1),
            |view: &View<Deployment>, now| {
                let Some(d) = &view.workload else {
                    return Control::Break(Err(format!(
                        "{} was deleted while waiting",
                        i.display_name()
                    )));
                };
                let pods: Vec<&Pod> = view.pods.values().collect();
                let judgement = ipam_progress(d, &pods, &containers, &image, ready_before);
                match judgement.progress {
                    Progress::Done(counts) => Control::Break(Ok(WaitOutcome::Done(counts))),
                    Progress::Failed(why) => Control::Break(Err(why)),
                    Progress::Waiting(counts) => {
                        if judgement.stuck.is_empty() {
                            stuck_since = None;
                        } else {
                            let since = *stuck_since.get_or_insert(now);
                            if remedy_available && now.duration_since(since) >= stuck_after {
                                return Control::Break(Ok(WaitOutcome::Stuck(judgement.stuck)));
                            }
                        }
                        printer.still_rolling(counts.line(), now)
                    }
                }
            },
        )
        .await;
        outcome.map_err(StepError::Failed)
    }

    async fn wait_no_pods(&mut self, observed: &Observed) -> Result<(), StepError> {
        let i = &self.targets.ipam;
        let deadline = self.options.ipam_timeout;
        let selector = selector_string(Some(&observed.ipam.spec.selector));
        let mut printer =
            ProgressPrinter::new(i.display_name(), deadline, self.options.progress_every);
        let outcome = watch_until(
            self.cluster.api::<Deployment>(&i.namespace),
            self.cluster.api::<Pod>(&i.namespace),
            &i.name,
            &selector,
            Duration::from_secs(1),
            |view: &View<Deployment>, now| {
                if view.pods.is_empty() {
                    return Control::Break(Ok(()));
                }
                if printer.expired(now) {
                    return Control::Break(Err(format!(
                        "{} still has {} pods {} after scaling to 0",
                        i.display_name(),
                        view.pods.len(),
                        human(deadline)
                    )));
                }
                let line = format!("scaled to 0, {} pods left", view.pods.len());
                printer.show(&line, now);
                Control::Continue(line)
            },
        )
        .await;
        outcome.map_err(StepError::Failed)
    }

    async fn verify(&mut self, observed: &Observed, back: bool) -> Result<(), StepError> {
        let agent_image = self.wait_image(Component::Agent, back);
        let ipam_image = self.wait_image(Component::Ipam, back);
        let mut problems = Vec::new();
        let check =
            |slots: &[Slot], image: &str, who: &GuardedWorkload, problems: &mut Vec<String>| {
                for s in slots {
                    if !super::plan::same_image(&s.image, image) {
                        problems.push(format!(
                            "{} container {} runs {}, expected {image}",
                            who.display_name(),
                            s.container,
                            s.image
                        ));
                    }
                }
            };
        if !(back && self.record.skip_agent) {
            check(
                &observed.now.agent,
                &agent_image,
                &self.targets.agent,
                &mut problems,
            );
            match agent_progress(
                &observed.agent,
                &[],
                &self.targets.agent.containers,
                &agent_image,
                self.record.agent.ready,
            ) {
                Progress::Done(_) => {}
                Progress::Waiting(c) => problems.push(format!(
                    "{}: {}",
                    self.targets.agent.display_name(),
                    c.line()
                )),
                Progress::Failed(why) => problems.push(why),
            }
        }
        if !(back && self.record.skip_ipam) {
            check(
                &observed.now.ipam,
                &ipam_image,
                &self.targets.ipam,
                &mut problems,
            );
            let i = &self.targets.ipam;
            let pods = self
                .cluster
                .pods(
                    &i.namespace,
                    &selector_string(Some(&observed.ipam.spec.selector)),
                )
                .await?;
            let refs: Vec<&Pod> = pods.iter().collect();
            match ipam_progress(
                &observed.ipam,
                &refs,
                &i.containers,
                &ipam_image,
                self.record.ipam.ready,
            )
            .progress
            {
                Progress::Done(_) => {}
                Progress::Waiting(c) => {
                    problems.push(format!("{}: {}", i.display_name(), c.line()))
                }
                Progress::Failed(why) => problems.push(why),
            }
        }
        if !problems.is_empty() {
            return Err(StepError::Failed(format!(
                "verification failed: {}",
                problems.join("; ")
            )));
        }
        let (phase, reason, message) = if back {
            (
                Phase::RolledBack,
                "RolledBack",
                "rolled back to the recorded revisions and verified".to_owned(),
            )
        } else {
            (
                Phase::Succeeded,
                "UpgradeSucceeded",
                format!(
                    "both workloads run {} and are rolled out",
                    self.record.target
                ),
            )
        };
        self.note(message.clone());
        self.event(Some(observed), reason, &message, false).await;
        Ok(self.goto(phase).await?)
    }

    /// Records an Event on both workloads.
    async fn event(&self, observed: Option<&Observed>, reason: &str, message: &str, warning: bool) {
        let Some(observed) = observed else { return };
        let objects = [
            (
                &self.targets.agent,
                "DaemonSet",
                observed.agent.metadata.uid.clone(),
            ),
            (
                &self.targets.ipam,
                "Deployment",
                observed.ipam.metadata.uid.clone(),
            ),
        ];
        for (w, kind, uid) in objects {
            let e = event(w, kind, uid, reason, message, warning, &self.lock.identity);
            self.cluster.event(&e).await;
        }
    }
}

/// A core/v1 Event about a guarded workload, from `cce-cni-guard`.
pub fn event(
    w: &GuardedWorkload,
    kind: &str,
    uid: Option<String>,
    reason: &str,
    message: &str,
    warning: bool,
    instance: &str,
) -> Event {
    let now = Time(Timestamp::now());
    Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{}",
                w.name,
                crate::cluster::retry::random_suffix()
            )),
            namespace: Some(w.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some(kind.into()),
            name: Some(w.name.clone()),
            namespace: Some(w.namespace.clone()),
            uid,
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.chars().take(1024).collect()),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource {
            component: Some("cce-cni-guard".into()),
            host: None,
        }),
        reporting_component: Some("cce-cni-guard".into()),
        reporting_instance: Some(instance.chars().take(128).collect()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    }
}

/// Prints a progress line on stderr when it changes, and at least every `every`.
struct ProgressPrinter {
    label: String,
    started: tokio::time::Instant,
    deadline: Duration,
    every: Duration,
    last: Option<(String, tokio::time::Instant)>,
}

impl ProgressPrinter {
    fn new(label: String, deadline: Duration, every: Duration) -> Self {
        Self {
            label,
            started: tokio::time::Instant::now(),
            deadline,
            every,
            last: None,
        }
    }

    fn expired(&self, now: tokio::time::Instant) -> bool {
        now.duration_since(self.started) >= self.deadline
    }

    /// A rollout still under way: past the deadline a failure, else a progress line.
    fn still_rolling<T>(
        &mut self,
        line: String,
        now: tokio::time::Instant,
    ) -> Control<Result<T, String>> {
        if self.expired(now) {
            return Control::Break(Err(format!(
                "{} did not finish its rollout within {} ({line})",
                self.label,
                human(self.deadline)
            )));
        }
        self.show(&line, now);
        Control::Continue(line)
    }

    fn show(&mut self, line: &str, now: tokio::time::Instant) {
        // A changed line at most once a second (a 1,000-node rollout changes on every pod),
        // an unchanged one every `every`.
        let due = match &self.last {
            None => true,
            Some((last, at)) => {
                let since = now.duration_since(*at);
                (last != line && since >= Duration::from_secs(1)) || since >= self.every
            }
        };
        if due {
            eprintln!(
                "  {}: {line} [{} elapsed, deadline {}]",
                self.label,
                human(now.duration_since(self.started)),
                human(self.deadline)
            );
            self.last = Some((line.to_owned(), now));
        }
    }
}

/// `1m30s`, `45s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}
