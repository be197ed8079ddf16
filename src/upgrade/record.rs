//! The upgrade record (kept in the Lease, written before each write with the intent) and
//! its state machine: given the record and the observed cluster, what to do next. Pure.
//!
//! Idempotence is by observation: a step whose effect is already visible (images at the
//! target, replicas already 0) is not applied again, so a rerun after a crash at any point
//! converges without doing anything twice.

use serde::{Deserialize, Serialize};

use super::plan::{Slot, common_image, same_image};

/// The Lease annotation that holds the record.
pub const RECORD_ANNOTATION: &str = "cce-cni-guard.cce.baidubce.com/upgrade-record";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Operation {
    /// `upgrade`: forward to the target, back to the recorded state on failure.
    Upgrade,
    /// `rollback`: to the recorded (chosen) revisions.
    Rollback,
}

/// Serialised as the report prints it (`agent-wait`, `rolled-back`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    AgentPatch,
    AgentWait,
    IpamPatch,
    IpamWait,
    IpamScaleDown,
    IpamScaleUp,
    Verify,
    Succeeded,
    RollbackIpam,
    RollbackIpamWait,
    RollbackIpamScaleDown,
    RollbackIpamScaleUp,
    RollbackAgent,
    RollbackAgentWait,
    RollbackVerify,
    RolledBack,
    RollbackFailed,
    /// Failed with `--no-rollback`: left as it is.
    Failed,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::RolledBack | Self::RollbackFailed | Self::Failed
        )
    }

    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            Self::RollbackIpam
                | Self::RollbackIpamWait
                | Self::RollbackIpamScaleDown
                | Self::RollbackIpamScaleUp
                | Self::RollbackAgent
                | Self::RollbackAgentWait
                | Self::RollbackVerify
                | Self::RolledBack
                | Self::RollbackFailed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgentPatch => "agent-patch",
            Self::AgentWait => "agent-wait",
            Self::IpamPatch => "ipam-patch",
            Self::IpamWait => "ipam-wait",
            Self::IpamScaleDown => "ipam-scale-down",
            Self::IpamScaleUp => "ipam-scale-up",
            Self::Verify => "verify",
            Self::Succeeded => "succeeded",
            Self::RollbackIpam => "rollback-ipam",
            Self::RollbackIpamWait => "rollback-ipam-wait",
            Self::RollbackIpamScaleDown => "rollback-ipam-scale-down",
            Self::RollbackIpamScaleUp => "rollback-ipam-scale-up",
            Self::RollbackAgent => "rollback-agent",
            Self::RollbackAgentWait => "rollback-agent-wait",
            Self::RollbackVerify => "rollback-verify",
            Self::RolledBack => "rolled-back",
            Self::RollbackFailed => "rollback-failed",
            Self::Failed => "failed",
        }
    }
}

/// The state of one workload to come back to: images, revision and readiness.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Every guarded container, where it sits, and its image before the upgrade.
    pub slots: Vec<Slot>,
    /// ControllerRevision (agent) or ReplicaSet (ipam) name.
    pub revision_name: String,
    pub revision: i64,
    /// `controller-revision-hash` (agent) or `pod-template-hash` (ipam).
    pub hash: String,
    pub desired: i32,
    pub ready: i32,
    /// ipam: `spec.replicas` before the upgrade (the remedy scales back to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
}

impl Snapshot {
    pub fn image(&self) -> Option<&str> {
        common_image(&self.slots)
    }
}

/// The record of one upgrade or rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub operation: Operation,
    /// Upgrade: the target image.
    pub target: String,
    pub change_cause: String,
    pub phase: Phase,
    pub agent: Snapshot,
    pub ipam: Snapshot,
    /// Whether the scale-to-0 remedy was used in the current direction (up or back).
    pub remedy_used: bool,
    /// Rollback of one component only (`--component`).
    #[serde(default)]
    pub skip_agent: bool,
    #[serde(default)]
    pub skip_ipam: bool,
    /// Why the upgrade failed, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_failure: Option<String>,
    pub started_at: String,
    pub updated_at: String,
    /// Who runs it (the Lease holder identity at the start).
    pub started_by: String,
}

/// Which workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Component {
    Agent,
    Ipam,
}

/// What the executor does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Patch the component's images to the target (upgrade direction).
    PatchImages(Component),
    /// Put the component's recorded template back.
    Restore(Component),
    /// Wait for the component's rollout; `back` in the rollback direction.
    Wait {
        component: Component,
        back: bool,
    },
    /// The remedy's first half: scale ipam to 0 (unless already) and wait for no pods.
    ScaleDown {
        already: bool,
    },
    /// The remedy's second half: scale ipam back to the recorded replicas (unless already).
    ScaleUp {
        replicas: i32,
        already: bool,
    },
    /// Nothing to write: record the phase and go on.
    Advance(Phase),
    /// The cluster is not as the record expects: fail (and roll back).
    Fail(String),
    /// Re-read and check the final state.
    Verify {
        back: bool,
    },
    Finished(Phase),
}

/// What the executor observed just now.
#[derive(Debug, Clone, PartialEq)]
pub struct Now {
    pub agent: Vec<Slot>,
    pub ipam: Vec<Slot>,
    pub ipam_replicas: i32,
}

fn at(slots: &[Slot], image: &str) -> bool {
    !slots.is_empty() && slots.iter().all(|s| same_image(&s.image, image))
}

fn at_snapshot(now: &[Slot], snapshot: &Snapshot) -> bool {
    !now.is_empty()
        && now.len() == snapshot.slots.len()
        && now.iter().all(|n| {
            snapshot
                .slots
                .iter()
                .any(|s| s.container == n.container && same_image(&s.image, &n.image))
        })
}

/// The next step given the record and the observed cluster.
pub fn next_step(record: &Record, now: &Now) -> Step {
    use Component::*;
    let forward = |component: Component, slots: &[Slot], snapshot: &Snapshot, next: Phase| {
        if at(slots, &record.target) {
            Step::Advance(next)
        } else if at_snapshot(slots, snapshot) {
            Step::PatchImages(component)
        } else {
            let images: Vec<String> = slots
                .iter()
                .map(|s| format!("{}={}", s.container, s.image))
                .collect();
            Step::Fail(format!(
                "{} was changed by someone else during the upgrade (now {}); not overwriting it",
                match component {
                    Agent => "the agent DaemonSet",
                    Ipam => "the ipam Deployment",
                },
                images.join(", ")
            ))
        }
    };
    let recorded_replicas = record.ipam.replicas.unwrap_or(record.ipam.desired);
    match record.phase {
        Phase::AgentPatch => forward(Agent, &now.agent, &record.agent, Phase::AgentWait),
        Phase::AgentWait => Step::Wait {
            component: Agent,
            back: false,
        },
        Phase::IpamPatch => forward(Ipam, &now.ipam, &record.ipam, Phase::IpamWait),
        Phase::IpamWait => Step::Wait {
            component: Ipam,
            back: false,
        },
        Phase::IpamScaleDown | Phase::RollbackIpamScaleDown => Step::ScaleDown {
            already: now.ipam_replicas == 0,
        },
        Phase::IpamScaleUp | Phase::RollbackIpamScaleUp => Step::ScaleUp {
            replicas: recorded_replicas,
            already: now.ipam_replicas == recorded_replicas,
        },
        Phase::Verify => Step::Verify { back: false },
        Phase::RollbackIpam => {
            if record.skip_ipam {
                Step::Advance(Phase::RollbackAgent)
            } else if at_snapshot(&now.ipam, &record.ipam) {
                Step::Advance(Phase::RollbackIpamWait)
            } else {
                Step::Restore(Ipam)
            }
        }
        Phase::RollbackIpamWait => {
            if record.skip_ipam {
                Step::Advance(Phase::RollbackAgent)
            } else {
                Step::Wait {
                    component: Ipam,
                    back: true,
                }
            }
        }
        Phase::RollbackAgent => {
            if record.skip_agent {
                Step::Advance(Phase::RollbackVerify)
            } else if at_snapshot(&now.agent, &record.agent) {
                Step::Advance(Phase::RollbackAgentWait)
            } else {
                Step::Restore(Agent)
            }
        }
        Phase::RollbackAgentWait => {
            if record.skip_agent {
                Step::Advance(Phase::RollbackVerify)
            } else {
                Step::Wait {
                    component: Agent,
                    back: true,
                }
            }
        }
        Phase::RollbackVerify => Step::Verify { back: true },
        Phase::Succeeded | Phase::RolledBack | Phase::RollbackFailed | Phase::Failed => {
            Step::Finished(record.phase)
        }
    }
}

/// Where a finished wait leads.
pub fn after_wait(phase: Phase) -> Phase {
    match phase {
        Phase::AgentWait => Phase::IpamPatch,
        Phase::IpamWait => Phase::Verify,
        Phase::RollbackIpamWait => Phase::RollbackAgent,
        Phase::RollbackAgentWait => Phase::RollbackVerify,
        other => other,
    }
}

/// Where the remedy's halves lead.
pub fn after_scale_down(phase: Phase) -> Phase {
    match phase {
        Phase::RollbackIpamScaleDown => Phase::RollbackIpamScaleUp,
        _ => Phase::IpamScaleUp,
    }
}

pub fn after_scale_up(phase: Phase) -> Phase {
    match phase {
        Phase::RollbackIpamScaleUp => Phase::RollbackIpamWait,
        _ => Phase::IpamWait,
    }
}

/// The remedy's first phase in the current direction.
pub fn remedy_phase(phase: Phase) -> Phase {
    if phase.is_rollback() {
        Phase::RollbackIpamScaleDown
    } else {
        Phase::IpamScaleDown
    }
}

/// Where a failure leads: the rollback (ipam first), or the end.
pub fn on_failure(record: &Record, no_rollback: bool) -> Phase {
    if record.phase.is_rollback() {
        Phase::RollbackFailed
    } else if no_rollback {
        Phase::Failed
    } else {
        Phase::RollbackIpam
    }
}

impl Record {
    /// Moves to `phase`; entering the rollback resets the remedy for that direction.
    pub fn advance(&mut self, phase: Phase, now: &str) {
        if phase.is_rollback() && !self.phase.is_rollback() {
            self.remedy_used = false;
        }
        self.phase = phase;
        self.updated_at = now.to_owned();
    }

    /// A run that ended with the workloads not back where the record says: the rollback
    /// failed, or the upgrade failed without one (`--no-rollback`). A rerun finishes the
    /// rollback from the record rather than start a new upgrade, which would take the broken
    /// state for the one to come back to. With `no_rollback` a failure is left as it is.
    pub fn rollback_to_resume(&self, no_rollback: bool) -> bool {
        match self.phase {
            Phase::RollbackFailed => true,
            Phase::Failed => !no_rollback,
            _ => false,
        }
    }

    /// Starts the rollback again from its first step, idempotent by observation: what is
    /// already back is not written again.
    pub fn restart_rollback(&mut self, now: &str) {
        self.phase = Phase::RollbackIpam;
        self.remedy_used = false;
        self.rollback_failure = None;
        self.updated_at = now.to_owned();
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("the upgrade record cannot be read: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.3";
    const NEW: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4";

    fn slots(names: &[(&str, bool)], image: &str) -> Vec<Slot> {
        names
            .iter()
            .map(|(n, init)| Slot {
                container: (*n).into(),
                init: *init,
                index: 0,
                image: image.into(),
            })
            .collect()
    }

    fn agent(image: &str) -> Vec<Slot> {
        slots(
            &[("cce-cni-node-agent", false), ("install-cni-binary", true)],
            image,
        )
    }

    fn ipam(image: &str) -> Vec<Slot> {
        slots(&[("cce-eni-ipam", false)], image)
    }

    fn record(phase: Phase) -> Record {
        Record {
            operation: Operation::Upgrade,
            target: NEW.into(),
            change_cause: "cce-cni-guard upgrade --to v1.9.4".into(),
            phase,
            agent: Snapshot {
                slots: agent(OLD),
                revision_name: "cce-cni-node-agent-abc".into(),
                revision: 1,
                hash: "abc".into(),
                desired: 5,
                ready: 5,
                replicas: None,
            },
            ipam: Snapshot {
                slots: ipam(OLD),
                revision_name: "cce-eni-ipam-xyz".into(),
                revision: 1,
                hash: "xyz".into(),
                desired: 3,
                ready: 1,
                replicas: Some(3),
            },
            remedy_used: false,
            skip_agent: false,
            skip_ipam: false,
            failure: None,
            rollback_failure: None,
            started_at: "t0".into(),
            updated_at: "t0".into(),
            started_by: "me".into(),
        }
    }

    fn now(agent_image: &str, ipam_image: &str, replicas: i32) -> Now {
        Now {
            agent: agent(agent_image),
            ipam: ipam(ipam_image),
            ipam_replicas: replicas,
        }
    }

    #[test]
    fn patches_once_and_recognises_its_own_write() {
        let r = record(Phase::AgentPatch);
        assert_eq!(
            next_step(&r, &now(OLD, OLD, 3)),
            Step::PatchImages(Component::Agent)
        );
        // The process died right after the patch: the rerun sees the images at target.
        assert_eq!(
            next_step(&r, &now(NEW, OLD, 3)),
            Step::Advance(Phase::AgentWait)
        );
        let r = record(Phase::IpamPatch);
        assert_eq!(
            next_step(&r, &now(NEW, OLD, 3)),
            Step::PatchImages(Component::Ipam)
        );
        assert_eq!(
            next_step(&r, &now(NEW, NEW, 3)),
            Step::Advance(Phase::IpamWait)
        );
    }

    #[test]
    fn a_concurrent_edit_fails_instead_of_being_overwritten() {
        let r = record(Phase::AgentPatch);
        let other = "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.5";
        match next_step(&r, &now(other, OLD, 3)) {
            Step::Fail(why) => assert!(why.contains("changed by someone else"), "{why}"),
            step => panic!("{step:?}"),
        }
    }

    #[test]
    fn remedy_is_idempotent_by_observation() {
        let r = record(Phase::IpamScaleDown);
        assert_eq!(
            next_step(&r, &now(NEW, NEW, 3)),
            Step::ScaleDown { already: false }
        );
        assert_eq!(
            next_step(&r, &now(NEW, NEW, 0)),
            Step::ScaleDown { already: true }
        );
        let r = record(Phase::IpamScaleUp);
        assert_eq!(
            next_step(&r, &now(NEW, NEW, 0)),
            Step::ScaleUp {
                replicas: 3,
                already: false
            }
        );
        assert_eq!(
            next_step(&r, &now(NEW, NEW, 3)),
            Step::ScaleUp {
                replicas: 3,
                already: true
            }
        );
        assert_eq!(after_scale_down(Phase::IpamScaleDown), Phase::IpamScaleUp);
        assert_eq!(after_scale_up(Phase::IpamScaleUp), Phase::IpamWait);
        assert_eq!(
            after_scale_up(Phase::RollbackIpamScaleUp),
            Phase::RollbackIpamWait
        );
    }

    #[test]
    fn rollback_goes_ipam_first_and_skips_what_is_back() {
        let r = record(Phase::RollbackIpam);
        assert_eq!(
            next_step(&r, &now(NEW, NEW, 3)),
            Step::Restore(Component::Ipam)
        );
        assert_eq!(
            next_step(&r, &now(NEW, OLD, 3)),
            Step::Advance(Phase::RollbackIpamWait)
        );
        assert_eq!(after_wait(Phase::RollbackIpamWait), Phase::RollbackAgent);
        let r = record(Phase::RollbackAgent);
        assert_eq!(
            next_step(&r, &now(NEW, OLD, 3)),
            Step::Restore(Component::Agent)
        );
        assert_eq!(
            next_step(&r, &now(OLD, OLD, 3)),
            Step::Advance(Phase::RollbackAgentWait)
        );
        let mut only_agent = record(Phase::RollbackIpam);
        only_agent.skip_ipam = true;
        assert_eq!(
            next_step(&only_agent, &now(NEW, NEW, 3)),
            Step::Advance(Phase::RollbackAgent)
        );
    }

    #[test]
    fn failures_lead_to_rollback_or_to_the_end() {
        let r = record(Phase::IpamWait);
        assert_eq!(on_failure(&r, false), Phase::RollbackIpam);
        assert_eq!(on_failure(&r, true), Phase::Failed);
        let r = record(Phase::RollbackAgentWait);
        assert_eq!(on_failure(&r, false), Phase::RollbackFailed);
        let mut r = record(Phase::IpamWait);
        r.remedy_used = true;
        r.advance(Phase::RollbackIpam, "t1");
        assert!(!r.remedy_used, "the rollback may use the remedy once too");
        assert_eq!(
            remedy_phase(Phase::RollbackIpamWait),
            Phase::RollbackIpamScaleDown
        );
        assert_eq!(remedy_phase(Phase::IpamWait), Phase::IpamScaleDown);
    }

    #[test]
    fn a_failed_rollback_is_resumed_from_its_first_step() {
        let mut r = record(Phase::RollbackFailed);
        r.remedy_used = true;
        r.rollback_failure = Some("the guard was unreachable".into());
        assert!(r.rollback_to_resume(false));
        assert!(r.rollback_to_resume(true));
        r.restart_rollback("t2");
        assert_eq!(r.phase, Phase::RollbackIpam);
        assert!(!r.remedy_used, "the new attempt may use the remedy once");
        assert_eq!(r.rollback_failure, None);
        // Idempotent: with ipam already back, the first step writes nothing.
        assert_eq!(
            next_step(&r, &now(OLD, OLD, 3)),
            Step::Advance(Phase::RollbackIpamWait)
        );
        let failed = record(Phase::Failed);
        assert!(failed.rollback_to_resume(false));
        assert!(!failed.rollback_to_resume(true), "--no-rollback leaves it");
        for p in [Phase::Succeeded, Phase::RolledBack, Phase::AgentWait] {
            assert!(!record(p).rollback_to_resume(false), "{p:?}");
        }
    }

    #[test]
    fn record_round_trips_and_bad_json_is_an_error() {
        let r = record(Phase::AgentWait);
        assert_eq!(Record::from_json(&r.to_json()).unwrap(), r);
        for p in [
            Phase::RollbackIpamScaleDown,
            Phase::RolledBack,
            Phase::IpamWait,
        ] {
            assert_eq!(
                serde_json::to_value(p).unwrap(),
                p.as_str(),
                "the record spells phases as reports do"
            );
        }
        assert!(
            Record::from_json("{")
                .unwrap_err()
                .contains("cannot be read")
        );
        for p in [Phase::Succeeded, Phase::RolledBack, Phase::Failed] {
            assert!(p.is_terminal());
            assert_eq!(next_step(&record(p), &now(OLD, OLD, 3)), Step::Finished(p));
        }
    }
}
