//! The decision (design §1): rules 1–7 over the old and new pod templates of a guarded
//! workload, the sibling workloads' current images, and the caller's identity.

use std::collections::BTreeMap;
use std::fmt;

use super::config::{Config, GuardedWorkload, WorkloadKind};
use super::image::{ImageRef, Version};
use super::selector::Labels;
use super::template::{PodTemplateImages, TemplateError};
use super::{SiblingLookup, SiblingState};

/// The operation of an admission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

/// Who sent the request, as the apiserver authenticated them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserIdentity {
    pub username: String,
    pub groups: Vec<String>,
}

/// A request to judge. Objects are already reduced to their pod template's images; a
/// template that could not be read is passed as its error so that the guard fails closed.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub operation: Operation,
    /// API group of the object (`apps`).
    pub group: &'a str,
    /// Kind of the object (`DaemonSet`).
    pub kind: &'a str,
    pub sub_resource: Option<&'a str>,
    pub namespace: &'a str,
    pub name: &'a str,
    pub object: Option<Result<&'a PodTemplateImages, &'a TemplateError>>,
    pub old_object: Option<Result<&'a PodTemplateImages, &'a TemplateError>>,
    /// `metadata.labels` of the object and of the stored object; `None` where the caller
    /// does not know them (the label rule is then skipped).
    pub labels: Option<&'a Labels>,
    pub old_labels: Option<&'a Labels>,
    pub user: &'a UserIdentity,
}

/// The rules of design §1, by the names metrics, logs and messages use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// Rule 1: all guarded containers of a workload carry one image.
    Consistent,
    /// Rule 2: only the patch number may change by image swap, in the same repository.
    PatchOnly,
    /// Rule 3: the workloads agree on repository and MAJOR.MINOR.
    SiblingsAgree,
    /// Rule 5: guarded containers are not removed or renamed.
    ContainerRemoved,
    /// Rule 5 for labels: the workload keeps the labels its webhook entry selects it by.
    LabelsKept,
    /// A guarded container's image is not a valid reference.
    InvalidImage,
    /// Rule 7: a guarded object that cannot be read is refused.
    Undecodable,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Consistent => "consistent",
            Self::PatchOnly => "patch-only",
            Self::SiblingsAgree => "siblings-agree",
            Self::ContainerRemoved => "container-removed",
            Self::LabelsKept => "labels-kept",
            Self::InvalidImage => "invalid-image",
            Self::Undecodable => "undecodable",
        }
    }

    /// What the rule asks, for the end of a violation line.
    fn summary(self) -> &'static str {
        match self {
            Self::Consistent => "all guarded containers of a workload carry one image",
            Self::PatchOnly => {
                "only the patch number may change by image swap, in the same repository"
            }
            Self::SiblingsAgree => "the guarded workloads stay on one repository and MAJOR.MINOR",
            Self::ContainerRemoved => "guarded containers are never removed or renamed",
            Self::LabelsKept => {
                "a guarded workload keeps the labels the guard's webhook selects it by"
            }
            Self::InvalidImage => "guarded images must be valid references",
            Self::Undecodable => "a guarded object that cannot be read is refused",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    /// The guarded container concerned, if the rule is about one.
    pub container: Option<String>,
    /// What is wrong, naming images old → new.
    pub detail: String,
}

/// The outcome class, as metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Not a guarded request (other objects, subresources, DELETE): allowed at once.
    NotGuarded,
    Allowed,
    Denied,
    /// Would have been denied; allowed because of the caller's identity.
    Exempted,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotGuarded => "not-guarded",
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Exempted => "exempted",
        }
    }
}

/// What the policy decided, with everything the webhook answers and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The guarded workload, when the request was about one.
    pub workload: Option<GuardedWorkload>,
    pub violations: Vec<Violation>,
    /// The denial message for the person who typed the command (empty when allowed).
    pub message: String,
    pub warnings: Vec<String>,
    pub audit_annotations: BTreeMap<String, String>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.verdict != Verdict::Denied
    }

    /// The first broken rule, as metrics label a denial.
    pub fn primary_rule(&self) -> Option<Rule> {
        self.violations.first().map(|v| v.rule)
    }

    fn not_guarded() -> Self {
        Self {
            verdict: Verdict::NotGuarded,
            workload: None,
            violations: Vec::new(),
            message: String::new(),
            warnings: Vec::new(),
            audit_annotations: BTreeMap::new(),
        }
    }
}

const WARNING_PREFIX: &str = "cce-cni-guard: ";

/// Judges one request (design §1). Pure: everything it needs is in its arguments.
pub fn decide(request: &Request<'_>, siblings: &dyn SiblingLookup, config: &Config) -> Decision {
    let Some(workload) = guarded_workload(request, config) else {
        return Decision::not_guarded();
    };
    let mut judge = Judge::new(workload, config);
    if request.operation == Operation::Update
        && let (Some(old), Some(new)) = (request.old_labels, request.labels)
    {
        judge.check_labels_kept(old, new);
    } else if request.operation == Operation::Create
        && let Some(new) = request.labels
    {
        judge.note_unselected(new);
    }
    match (request.operation, request.object, request.old_object) {
        (_, Some(Err(err)), _) => judge.undecodable("the new object", err),
        (Operation::Update, _, Some(Err(err))) => judge.undecodable("the stored object", err),
        (Operation::Create, Some(Ok(new)), _) => judge.create(new, siblings),
        (Operation::Update, Some(Ok(new)), Some(Ok(old))) => judge.update(old, new, siblings),
        (Operation::Update, Some(Ok(new)), None) => judge.create(new, siblings),
        (Operation::Delete | Operation::Connect, Some(Ok(_)), _) => return Decision::not_guarded(),
        (_, None, _) => judge.violation(
            Rule::Undecodable,
            None,
            "the request carries no object".into(),
        ),
    }
    judge.finish(request.user)
}

fn guarded_workload<'c>(request: &Request<'_>, config: &'c Config) -> Option<&'c GuardedWorkload> {
    if request.sub_resource.is_some_and(|s| !s.is_empty()) {
        return None;
    }
    if !matches!(request.operation, Operation::Create | Operation::Update)
        || request.group != "apps"
    {
        return None;
    }
    let kind = WorkloadKind::from_kind(request.kind)?;
    config.workload(kind, request.namespace, request.name)
}

/// A guarded container's image after parsing.
struct Guarded<'a> {
    name: &'a str,
    raw: &'a str,
    parsed: Result<ImageRef, String>,
}

fn guarded_images<'a>(
    workload: &'a GuardedWorkload,
    template: &'a PodTemplateImages,
) -> Vec<Guarded<'a>> {
    workload
        .containers
        .iter()
        .flat_map(|name| template.named(name))
        .map(|c| Guarded {
            name: &c.name,
            raw: &c.image,
            parsed: ImageRef::parse(&c.image).map_err(|e| e.to_string()),
        })
        .collect()
}

/// Accumulates violations and warnings for one guarded workload.
struct Judge<'c> {
    workload: &'c GuardedWorkload,
    config: &'c Config,
    violations: Vec<Violation>,
    warnings: Vec<String>,
    /// A single image that would satisfy every rule, for the way-forward hint.
    suggestion: Option<ImageRef>,
    /// Extra way-forward lines, in order, deduplicated.
    forward: Vec<String>,
    /// Warnings for an allowed change only (e.g. which workload to upgrade next).
    hints: Vec<String>,
}

impl<'c> Judge<'c> {
    fn new(workload: &'c GuardedWorkload, config: &'c Config) -> Self {
        Self {
            workload,
            config,
            violations: Vec::new(),
            warnings: Vec::new(),
            suggestion: None,
            forward: Vec::new(),
            hints: Vec::new(),
        }
    }

    fn violation(&mut self, rule: Rule, container: Option<&str>, detail: String) {
        let v = Violation {
            rule,
            container: container.map(str::to_owned),
            detail,
        };
        if !self.violations.contains(&v) {
            self.violations.push(v);
        }
    }

    fn warn(&mut self, text: String) {
        let text = format!("{WARNING_PREFIX}{text}");
        if !self.warnings.contains(&text) {
            self.warnings.push(text);
        }
    }

    /// Advice that only makes sense if the change goes through.
    fn hint(&mut self, text: String) {
        let text = format!("{WARNING_PREFIX}{text}");
        if !self.hints.contains(&text) {
            self.hints.push(text);
        }
    }

    fn forward(&mut self, line: String) {
        if !self.forward.contains(&line) {
            self.forward.push(line);
        }
    }

    fn undecodable(&mut self, which: &str, err: &TemplateError) {
        self.violation(
            Rule::Undecodable,
            None,
            format!("{which} cannot be read: {err}"),
        );
        self.forward(
            "fix the manifest so that spec.template.spec lists its containers by name and image"
                .into(),
        );
    }

    fn create(&mut self, new: &PodTemplateImages, siblings: &dyn SiblingLookup) {
        let images = guarded_images(self.workload, new);
        for name in &self.workload.containers {
            if !images.iter().any(|g| g.name == name.as_str()) {
                self.warn(format!(
                    "{} has no guarded container {name:?}",
                    self.workload.display_name()
                ));
            }
        }
        let changed: Vec<&Guarded<'_>> = images.iter().collect();
        self.check_images_valid(&changed);
        self.check_consistent(&images);
        self.check_siblings(&changed, siblings);
    }

    fn update(
        &mut self,
        old: &PodTemplateImages,
        new: &PodTemplateImages,
        siblings: &dyn SiblingLookup,
    ) {
        let old_images = guarded_images(self.workload, old);
        let new_images = guarded_images(self.workload, new);
        for name in &self.workload.containers {
            let before = old_images.iter().find(|g| g.name == name.as_str());
            let after = new_images.iter().any(|g| g.name == name.as_str());
            if let (Some(before), false) = (before, after) {
                self.violation(
                    Rule::ContainerRemoved,
                    Some(name),
                    format!(
                        "container {name:?} (image {}) is removed or renamed",
                        before.raw
                    ),
                );
                self.forward(format!(
                    "keep container {name:?}; change images with: kubectl -n {} set image {} …",
                    self.workload.namespace,
                    self.workload.kubectl_ref()
                ));
            }
        }
        // Only the change is judged (rule 4): a container whose image is untouched is not.
        let changed: Vec<&Guarded<'_>> = new_images
            .iter()
            .filter(|g| {
                let before = old_images.iter().find(|o| o.name == g.name);
                before.is_none_or(|o| !same_image(&o.parsed, &g.parsed, o.raw, g.raw))
            })
            .collect();
        if changed.is_empty() {
            if self.violations.is_empty() {
                self.note_preexisting_mismatch(&new_images);
            }
            return;
        }
        self.check_images_valid(&changed);
        for g in &changed {
            match old_images.iter().find(|o| o.name == g.name) {
                Some(old) => self.check_patch_only(old, g),
                None => self.check_new_container(&old_images, g),
            }
        }
        self.check_consistent(&new_images);
        self.check_siblings(&changed, siblings);
    }

    /// An update that takes the workload out of its webhook entry's objectSelector is the
    /// last one the guard sees where matchConditions are off: refused.
    fn check_labels_kept(&mut self, old: &Labels, new: &Labels) {
        let selector = &self.workload.object_selector;
        if selector.is_empty() || !selector.matches(old) || selector.matches(new) {
            return;
        }
        let w = self.workload;
        self.violation(
            Rule::LabelsKept,
            None,
            format!(
                "the labels would no longer satisfy {}: the guard's webhook finds {} by {selector} where matchConditions are off (clusters before 1.30), so no later change would reach the guard",
                selector.unmet(new).join(", "),
                w.kubectl_ref()
            ),
        );
        self.forward(format!(
            "keep the labels {selector}; to stop guarding by them, change the guard's configuration first (chart value workloads[].objectSelector)"
        ));
    }

    /// A new workload outside the selector is one the pre-1.30 webhook entry never sees.
    fn note_unselected(&mut self, new: &Labels) {
        let selector = &self.workload.object_selector;
        if !selector.matches(new) {
            self.warn(format!(
                "{} lacks the labels {selector}: where matchConditions are off, the guard's webhook does not see it",
                self.workload.display_name()
            ));
        }
    }

    fn check_images_valid(&mut self, changed: &[&Guarded<'_>]) {
        for g in changed {
            if let Err(err) = &g.parsed {
                self.violation(
                    Rule::InvalidImage,
                    Some(g.name),
                    format!("container {:?}: {err}", g.name),
                );
                self.forward("use a full image reference such as registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4".into());
            }
        }
    }

    /// Rule 2 for one container whose image changed.
    fn check_patch_only(&mut self, old: &Guarded<'_>, new: &Guarded<'_>) {
        let (Ok(old_ref), Ok(new_ref)) = (&old.parsed, &new.parsed) else {
            if let Err(err) = &old.parsed {
                self.violation(
                    Rule::InvalidImage,
                    Some(old.name),
                    format!(
                        "container {:?}: the current image cannot be read: {err}",
                        old.name
                    ),
                );
            }
            return;
        };
        let name = new.name;
        // Built lazily: the allowed path (the common one) formats nothing.
        let change = || format!("container {name:?}: {} → {}", old.raw, new.raw);
        if !(old_ref.same_repository(new_ref)
            || self
                .config
                .same_repository(&old_ref.repository(), &new_ref.repository()))
        {
            self.violation(
                Rule::PatchOnly,
                Some(name),
                format!(
                    "{} changes the repository from {} to {}",
                    change(),
                    old_ref.repository(),
                    new_ref.repository()
                ),
            );
            if let Some(tag) = new_ref.tag() {
                self.suggest_or_forward(old_ref.with_tag(tag), old_ref);
            }
            return;
        }
        let (old_v, new_v) = match (old_ref.version(), new_ref.version()) {
            (Some(o), Some(n)) => (o, n),
            (None, _) => {
                self.violation(
                    Rule::PatchOnly,
                    Some(name),
                    format!(
                        "{}: the current tag {} is not a version (MAJOR.MINOR.PATCH), so no change can be proven a patch change",
                        change(),
                        tag_text(old_ref)
                    ),
                );
                self.forward(
                    "move off a non-version tag through the CCE network plugin's helm chart, or by an exempted identity".into(),
                );
                return;
            }
            (Some(o), None) => {
                self.violation(
                    Rule::PatchOnly,
                    Some(name),
                    format!(
                        "{}: the new tag {} is not a version (MAJOR.MINOR.PATCH), so it cannot be proven a patch change",
                        change(),
                        tag_text(new_ref)
                    ),
                );
                self.forward(format!(
                    "use a version tag of the {} line, e.g. {}",
                    o.line(),
                    old_ref.with_tag(&format!(
                        "{}{}.{}.{}",
                        if o.tag().starts_with('v') { "v" } else { "" },
                        o.major(),
                        o.minor(),
                        o.patch() + 1
                    ))
                ));
                return;
            }
        };
        if old_v.major() != new_v.major() {
            self.violation(
                Rule::PatchOnly,
                Some(name),
                format!(
                    "{} moves the major version ({} → {})",
                    change(),
                    old_v.major(),
                    new_v.major()
                ),
            );
            self.forward(format!(
                "a major version replaces the component (v{} → v{} is a migration, not an upgrade): it is not done by image swap",
                old_v.major(),
                new_v.major()
            ));
            self.forward(format!(
                "patch upgrades within {} are safe: cce-cni-guard upgrade --to v{}.x",
                old_v.line(),
                old_v.line()
            ));
        } else if old_v.minor() != new_v.minor() {
            self.violation(
                Rule::PatchOnly,
                Some(name),
                format!(
                    "{} moves the minor version ({} → {})",
                    change(),
                    old_v.line(),
                    new_v.line()
                ),
            );
            self.forward(format!(
                "minor versions bring features and may be incompatible: upgrade to {} with the v{} helm chart of the CCE network plugin, not by image swap",
                new_v.line(),
                new_v.line()
            ));
            self.forward(format!(
                "patch upgrades within {} are safe: cce-cni-guard upgrade --to v{}.x",
                old_v.line(),
                old_v.line()
            ));
        } else {
            if new_v < old_v {
                self.warn(format!(
                    "{}: {name} moves down from {old_v} to {new_v} (a patch downgrade, as a rollback does)",
                    self.workload.display_name()
                ));
            }
            if new_v.is_prerelease() {
                self.warn(format!(
                    "{}: {new_v} is a pre-release",
                    self.workload.display_name()
                ));
            }
            self.suggest(new_ref.clone());
        }
    }

    /// A guarded container that did not exist before: it must match the ones that did.
    fn check_new_container(&mut self, old_images: &[Guarded<'_>], new: &Guarded<'_>) {
        if let Some(old) = old_images.iter().find(|o| o.parsed.is_ok()) {
            self.check_patch_only(old, new);
        }
    }

    /// Rule 1 over every guarded container after the change.
    fn check_consistent(&mut self, images: &[Guarded<'_>]) {
        let Some(first) = images.iter().find(|g| g.parsed.is_ok()) else {
            return;
        };
        let Ok(first_ref) = &first.parsed else { return };
        for g in images {
            if let Ok(r) = &g.parsed
                && r != first_ref
            {
                self.violation(
                    Rule::Consistent,
                    Some(g.name),
                    format!(
                        "container {:?} would run {} while {:?} runs {}",
                        first.name, first.raw, g.name, g.raw
                    ),
                );
            }
        }
    }

    /// Rule 3: every changed image agrees with each sibling's current images.
    fn check_siblings(&mut self, changed: &[&Guarded<'_>], siblings: &dyn SiblingLookup) {
        for sibling in self.config.siblings_of(self.workload) {
            let SiblingState::Present(template) = siblings.sibling(sibling) else {
                continue;
            };
            for s in guarded_images(sibling, &template) {
                let Ok(sibling_ref) = &s.parsed else { continue };
                for g in changed {
                    let Ok(new_ref) = &g.parsed else { continue };
                    // A change that already breaks rule 2 is not also reported against siblings.
                    if self.violations.iter().any(|v| {
                        v.container.as_deref() == Some(g.name)
                            && matches!(v.rule, Rule::PatchOnly | Rule::InvalidImage)
                    }) {
                        continue;
                    }
                    let what = || {
                        format!(
                            "container {:?} would run {} while the sibling {} runs {}",
                            g.name,
                            g.raw,
                            sibling.display_name(),
                            s.raw
                        )
                    };
                    if !(new_ref.same_repository(sibling_ref)
                        || self
                            .config
                            .same_repository(&new_ref.repository(), &sibling_ref.repository()))
                    {
                        self.violation(
                            Rule::SiblingsAgree,
                            Some(g.name),
                            format!("{}: another repository", what()),
                        );
                        continue;
                    }
                    match (new_ref.version(), sibling_ref.version()) {
                        (Some(n), Some(sv)) if n.same_line(&sv) => {
                            if n != sv {
                                self.hint(format!(
                                    "{} runs {}; bring it to {} next",
                                    sibling.display_name(),
                                    sv,
                                    n
                                ));
                            }
                        }
                        (Some(n), Some(sv)) => {
                            self.violation(
                                Rule::SiblingsAgree,
                                Some(g.name),
                                format!(
                                    "{}: release line {} differs from {}",
                                    what(),
                                    n.line(),
                                    sv.line()
                                ),
                            );
                            self.forward(
                                "bring both workloads to one MAJOR.MINOR through the CCE network plugin's helm chart; `cce-cni-guard status` shows both".into(),
                            );
                        }
                        _ => {
                            self.violation(
                                Rule::SiblingsAgree,
                                Some(g.name),
                                format!(
                                    "{}: a tag that is not a version cannot be proven to agree",
                                    what(),
                                ),
                            );
                        }
                    }
                }
            }
        }
    }

    /// Where a container's change passes rule 2, the same image for all is the way forward.
    fn suggest(&mut self, image: ImageRef) {
        if self.suggestion.is_none() {
            self.suggestion = Some(image);
        }
    }

    /// A corrected image (e.g. the old repository with the new tag): suggest it when it would
    /// be a patch change, else explain the helm route.
    fn suggest_or_forward(&mut self, corrected: ImageRef, old: &ImageRef) {
        match (old.version(), corrected.version()) {
            (Some(o), Some(n)) if o.same_line(&n) => {
                self.forward(format!("keep the repository {}", old.repository()));
                self.suggest(corrected);
            }
            _ => self.forward(format!(
                "keep the repository {}; moving to another repository (e.g. another architecture's build) goes through the CCE network plugin's helm chart",
                old.repository()
            )),
        }
    }

    fn note_preexisting_mismatch(&mut self, images: &[Guarded<'_>]) {
        let distinct: Vec<&str> = images.iter().fold(Vec::new(), |mut acc, g| {
            if !acc.contains(&g.raw) {
                acc.push(g.raw);
            }
            acc
        });
        if distinct.len() > 1 {
            self.warn(format!(
                "the guarded containers of {} disagree ({}); this change leaves them alone — fix with `cce-cni-guard upgrade`",
                self.workload.display_name(),
                distinct.join(", ")
            ));
        }
    }

    fn finish(mut self, user: &UserIdentity) -> Decision {
        let workload = self.workload.clone();
        let mut audit = BTreeMap::new();
        if self.violations.is_empty() {
            audit.insert("decision".to_owned(), "allowed".to_owned());
            self.warnings.append(&mut self.hints);
            return Decision {
                verdict: Verdict::Allowed,
                workload: Some(workload),
                violations: Vec::new(),
                message: String::new(),
                warnings: self.warnings,
                audit_annotations: audit,
            };
        }
        let rules: Vec<&str> =
            self.violations
                .iter()
                .map(|v| v.rule.as_str())
                .fold(Vec::new(), |mut acc, r| {
                    if !acc.contains(&r) {
                        acc.push(r);
                    }
                    acc
                });
        audit.insert("rules".to_owned(), rules.join(","));
        let message = self.message();
        if let Some(by) = exemption(&self.config.exempt, user) {
            audit.insert("decision".to_owned(), "exempted".to_owned());
            audit.insert("exempted-by".to_owned(), by.clone());
            self.warn(format!(
                "exempted ({by}): {} would otherwise be refused ({})",
                workload.display_name(),
                rules.join(", ")
            ));
            return Decision {
                verdict: Verdict::Exempted,
                workload: Some(workload),
                violations: self.violations,
                message: String::new(),
                warnings: self.warnings,
                audit_annotations: audit,
            };
        }
        audit.insert("decision".to_owned(), "denied".to_owned());
        Decision {
            verdict: Verdict::Denied,
            workload: Some(workload),
            violations: self.violations,
            message,
            warnings: self.warnings,
            audit_annotations: audit,
        }
    }

    /// The denial message: what, which rule, and the way forward.
    fn message(&self) -> String {
        let w = self.workload;
        let mut out = format!("cce-cni-guard refused this change to {}:", w.display_name());
        for v in &self.violations {
            out.push_str(&format!(
                "\n- {} [rule {}: {}]",
                v.detail,
                v.rule,
                v.rule.summary()
            ));
        }
        let structural = self.violations.iter().any(|v| {
            matches!(
                v.rule,
                Rule::PatchOnly
                    | Rule::SiblingsAgree
                    | Rule::ContainerRemoved
                    | Rule::LabelsKept
                    | Rule::Undecodable
            )
        });
        let mut forward: Vec<String> = Vec::new();
        if let Some(image) = &self.suggestion
            && !self
                .violations
                .iter()
                .any(|v| v.rule == Rule::SiblingsAgree)
        {
            let sets: Vec<String> = w
                .containers
                .iter()
                .map(|c| format!("{c}={image}"))
                .collect();
            forward.push(format!(
                "set every guarded container in one command:\n  kubectl -n {} set image {} {}",
                w.namespace,
                w.kubectl_ref(),
                sets.join(" ")
            ));
            for sibling in self.config.siblings_of(w) {
                let sets: Vec<String> = sibling
                    .containers
                    .iter()
                    .map(|c| format!("{c}={image}"))
                    .collect();
                forward.push(format!(
                    "{} {} follows with:\n  kubectl -n {} set image {} {}",
                    if sibling.kind == WorkloadKind::Deployment && w.kind == WorkloadKind::DaemonSet
                    {
                        "once it has rolled out,"
                    } else {
                        "keep the workloads together:"
                    },
                    sibling.display_name(),
                    sibling.namespace,
                    sibling.kubectl_ref(),
                    sets.join(" ")
                ));
            }
            if let Some(tag) = image.tag() {
                forward.push(format!("or let the upgrader do both workloads, verified and with automatic rollback:\n  cce-cni-guard upgrade --to {tag}"));
            }
        }
        if structural || forward.is_empty() {
            forward.extend(self.forward.iter().cloned());
        }
        if forward.is_empty() {
            forward
                .push("see `cce-cni-guard status` for the current images of both workloads".into());
        }
        out.push_str("\nWay forward:");
        for line in forward {
            out.push_str("\n* ");
            out.push_str(&line.replace('\n', "\n  "));
        }
        out
    }
}

fn same_image(
    a: &Result<ImageRef, String>,
    b: &Result<ImageRef, String>,
    raw_a: &str,
    raw_b: &str,
) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        _ => raw_a == raw_b,
    }
}

fn tag_text(image: &ImageRef) -> String {
    match (image.tag(), image.digest()) {
        (Some(tag), _) => format!("{tag:?}"),
        (None, Some(_)) => "(digest only)".into(),
        (None, None) => "(none, which means \"latest\")".into(),
    }
}

/// Which exemption, if any, covers the caller: `user:NAME`, `group:NAME` or
/// `serviceaccount:NS/NAME`.
fn exemption(exempt: &super::config::Exemptions, user: &UserIdentity) -> Option<String> {
    if exempt.users.contains(&user.username) {
        return Some(format!("user:{}", user.username));
    }
    if let Some(sa) = user.username.strip_prefix("system:serviceaccount:")
        && let Some((ns, name)) = sa.split_once(':')
    {
        let key = format!("{ns}/{name}");
        if exempt.service_accounts.contains(&key) {
            return Some(format!("serviceaccount:{key}"));
        }
    }
    user.groups
        .iter()
        .find(|g| exempt.groups.contains(*g))
        .map(|g| format!("group:{g}"))
}

/// The version of a guarded workload's images, if all its guarded containers agree on one.
pub fn workload_version(
    workload: &GuardedWorkload,
    template: &PodTemplateImages,
) -> Option<(ImageRef, Version)> {
    let images = guarded_images(workload, template);
    let first = images.first()?.parsed.as_ref().ok()?.clone();
    if images
        .iter()
        .all(|g| g.parsed.as_ref().is_ok_and(|r| *r == first))
    {
        let version = first.version()?;
        Some((first, version))
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
