//! The guard's policy: pure functions that judge a change to a guarded workload's images.
//!
//! Shared by the webhook, the offline `review`/`check` commands and the upgrader. No I/O.

pub mod config;
pub mod decide;
pub mod image;
pub mod selector;
pub mod template;

pub use config::{Config, ConfigError, Exemptions, GuardedWorkload, WorkloadKind};
pub use decide::{Decision, Operation, Request, Rule, UserIdentity, Verdict, Violation, decide};
pub use image::{ImageRef, ImageRefError, Version};
pub use selector::{LabelSelector, Labels, labels_from_json, object_labels};
pub use template::{ContainerImage, PodTemplateImages, TemplateError};

/// What is known about a sibling workload's current images (design §1, rule 3).
#[derive(Debug, Clone, PartialEq)]
pub enum SiblingState {
    /// No cluster to ask (offline use without `--sibling`, or a webhook run without a
    /// cluster): the sibling rule is skipped.
    Unknown,
    /// The cluster was asked and the workload does not exist (some CNI modes have no ipam).
    Absent,
    /// The workload exists with these guarded images.
    Present(PodTemplateImages),
}

/// Where the policy learns a sibling workload's current images.
pub trait SiblingLookup: Send + Sync {
    fn sibling(&self, workload: &GuardedWorkload) -> SiblingState;
}

/// A lookup that knows nothing: rule 3 is skipped for every workload.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSiblings;

impl SiblingLookup for NoSiblings {
    fn sibling(&self, _workload: &GuardedWorkload) -> SiblingState {
        SiblingState::Unknown
    }
}
