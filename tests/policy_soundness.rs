//! Policy soundness over random tags and reference shapes (issue #8).
//!
//! The images are generated as structured values (repository, spelling, tag, digest), so the
//! oracles below know what a reference means without asking the crate's own parser:
//! - a change the policy allows never moves MAJOR or MINOR, never changes the repository and
//!   never uses a tag that is not a version, unless the caller is exempted;
//! - a same-repository patch change of all guarded containers together is never denied;
//! - `review`, `check` and `serve` reach the same verdict for the same request: `serve` answers
//!   byte for byte what `review` answers, and `check` allows and names rules alike.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use axum::body::Body;
use http::{Request as HttpRequest, header};
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};
use tower::ServiceExt;

use cce_cni_guard::manifest::{Manifest, ManifestSiblings};
use cce_cni_guard::policy::{
    Config, ContainerImage, Exemptions, GuardedWorkload, Operation, PodTemplateImages, Request,
    SiblingLookup, SiblingState, UserIdentity, Verdict, decide,
};
use cce_cni_guard::webhook::{AppState, Metrics, Siblings, router};

// ---------------------------------------------------------------------------------------------
// Images as structured values

/// A repository and every way of spelling it that normalises to the same `host/path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repo {
    Baidu,
    /// The arm64 build: another repository, as upstream names it.
    BaiduArm64,
    /// The same host with an explicit port is another registry host.
    BaiduWithPort,
    PortRegistry,
    Ipv6Registry,
    Localhost,
    /// A one-segment Docker Hub name (`library/NAME`).
    HubLibrary,
    HubUser,
    /// A mirror of the Baidu repository; with aliases off it is another repository.
    Mirror,
}

impl Repo {
    const ALL: [Repo; 9] = [
        Repo::Baidu,
        Repo::BaiduArm64,
        Repo::BaiduWithPort,
        Repo::PortRegistry,
        Repo::Ipv6Registry,
        Repo::Localhost,
        Repo::HubLibrary,
        Repo::HubUser,
        Repo::Mirror,
    ];

    fn spellings(self) -> &'static [&'static str] {
        match self {
            Repo::Baidu => &["registry.baidubce.com/cce-plugin-pro/cce-cni"],
            Repo::BaiduArm64 => &["registry.baidubce.com/cce-plugin-pro/cce-cni-arm64"],
            Repo::BaiduWithPort => &["registry.baidubce.com:443/cce-plugin-pro/cce-cni"],
            Repo::PortRegistry => &["10.0.0.5:5000/cce/cce-cni"],
            Repo::Ipv6Registry => &["[fd00::1]:5000/cce/cce-cni"],
            Repo::Localhost => &["localhost:5000/cce-cni", "localhost:5000/cce-cni"],
            Repo::HubLibrary => &[
                "cce-cni",
                "library/cce-cni",
                "docker.io/cce-cni",
                "docker.io/library/cce-cni",
                "index.docker.io/library/cce-cni",
            ],
            Repo::HubUser => &[
                "cceplugin/cce-cni",
                "docker.io/cceplugin/cce-cni",
                "index.docker.io/cceplugin/cce-cni",
            ],
            Repo::Mirror => &["mirror.example.com/cce-plugin-pro/cce-cni"],
        }
    }
}

/// Tags that are not versions, though some look close to one.
const WORDS: &[&str] = &[
    "latest",
    "host-local",
    "host-local-eri",
    "test",
    "v1.9",
    "1.9.3.1",
    "v01.9.3",
    "V1.9.3",
    "v1.9.3-",
    "v1.9.3_1",
];

/// Strings that are no image reference at all.
const INVALID: &[&str] = &[
    "",
    "registry.baidubce.com/CCE/cce-cni:v1.9.4",
    "registry.baidubce.com/cce-plugin-pro/cce-cni:",
    "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4+build",
    "cce cni:v1.9.4",
    "registry.baidubce.com/cce-plugin-pro/cce-cni@sha256:abc",
    "registry.baidubce.com//cce-cni:v1.9.4",
];

const DIGESTS: [&str; 2] = [
    "sha256:1111111111111111111111111111111111111111111111111111111111111111",
    "sha256:2222222222222222222222222222222222222222222222222222222222222222",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tag {
    Version {
        v: bool,
        major: u64,
        minor: u64,
        patch: u64,
        pre: Option<&'static str>,
    },
    Word(&'static str),
    None,
}

impl Tag {
    fn text(&self) -> Option<String> {
        match self {
            Tag::Version {
                v,
                major,
                minor,
                patch,
                pre,
            } => {
                let mut t = format!("{}{major}.{minor}.{patch}", if *v { "v" } else { "" });
                if let Some(pre) = pre {
                    t.push('-');
                    t.push_str(pre);
                }
                Some(t)
            }
            Tag::Word(w) => Some((*w).to_owned()),
            Tag::None => None,
        }
    }

    fn line(&self) -> Option<(u64, u64)> {
        match self {
            Tag::Version { major, minor, .. } => Some((*major, *minor)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Image {
    Valid {
        repo: Repo,
        spelling: usize,
        tag: Tag,
        digest: Option<usize>,
    },
    Invalid(&'static str),
}

impl Image {
    fn text(&self) -> String {
        match self {
            Image::Valid {
                repo,
                spelling,
                tag,
                digest,
            } => {
                let spellings = repo.spellings();
                let mut s = spellings[spelling % spellings.len()].to_owned();
                if let Some(t) = tag.text() {
                    s.push(':');
                    s.push_str(&t);
                }
                if let Some(d) = digest {
                    s.push('@');
                    s.push_str(DIGESTS[d % DIGESTS.len()]);
                }
                s
            }
            Image::Invalid(s) => (*s).to_owned(),
        }
    }

    /// What the reference means: repository, tag text and digest (spelling aside).
    fn meaning(&self) -> Option<(Repo, Option<String>, Option<usize>)> {
        match self {
            Image::Valid {
                repo, tag, digest, ..
            } => Some((*repo, tag.text(), digest.map(|d| d % DIGESTS.len()))),
            Image::Invalid(_) => None,
        }
    }

    fn repo(&self) -> Option<Repo> {
        self.meaning().map(|m| m.0)
    }

    fn line(&self) -> Option<(u64, u64)> {
        match self {
            Image::Valid { tag, .. } => tag.line(),
            Image::Invalid(_) => None,
        }
    }

    /// The same image, as the policy compares images: by meaning, or by text when unreadable.
    fn same(&self, other: &Image) -> bool {
        match (self.meaning(), other.meaning()) {
            (Some(a), Some(b)) => a == b,
            _ => self.text() == other.text(),
        }
    }
}

fn weighted_major() -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(0u64), 8 => Just(1u64), 1 => Just(2u64)]
}

fn weighted_minor() -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(8u64), 8 => Just(9u64), 1 => Just(10u64)]
}

fn pre() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![6 => Just(None), 1 => Just(Some("rc.1")), 1 => Just(Some("alpha"))]
}

fn version_tag_on(major: u64, minor: u64) -> impl Strategy<Value = Tag> {
    (any::<bool>(), 0u64..12, pre()).prop_map(move |(v, patch, pre)| Tag::Version {
        v,
        major,
        minor,
        patch,
        pre,
    })
}

fn tag() -> impl Strategy<Value = Tag> {
    prop_oneof![
        6 => (weighted_major(), weighted_minor())
            .prop_flat_map(|(major, minor)| version_tag_on(major, minor)),
        1 => prop::sample::select(WORDS).prop_map(Tag::Word),
        1 => Just(Tag::None),
    ]
}

fn repo() -> impl Strategy<Value = Repo> {
    prop_oneof![8 => Just(Repo::Baidu), 4 => prop::sample::select(Repo::ALL.to_vec())]
}

fn digest() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![6 => Just(None), 1 => (0usize..2).prop_map(Some)]
}

fn image() -> impl Strategy<Value = Image> {
    prop_oneof![
        12 => (repo(), 0usize..5, tag(), digest()).prop_map(|(repo, spelling, tag, digest)| {
            Image::Valid { repo, spelling, tag, digest }
        }),
        1 => prop::sample::select(INVALID).prop_map(Image::Invalid),
    ]
}

/// An image in `repo` with a version tag on `major.minor`, spelled any way.
fn patch_image(repo: Repo, major: u64, minor: u64) -> impl Strategy<Value = Image> {
    (0usize..5, version_tag_on(major, minor), digest()).prop_map(move |(spelling, tag, digest)| {
        Image::Valid {
            repo,
            spelling,
            tag,
            digest,
        }
    })
}

/// The image a container moves to: mostly near the old one, so that allowed changes are common.
fn next_image(old: Image) -> BoxedStrategy<Image> {
    let near = match &old {
        Image::Valid { repo, tag, .. } => match tag.line() {
            Some((major, minor)) => patch_image(*repo, major, minor).boxed(),
            None => image().boxed(),
        },
        Image::Invalid(_) => image().boxed(),
    };
    let respelled = match &old {
        Image::Valid {
            repo, tag, digest, ..
        } => {
            let (repo, tag, digest) = (*repo, tag.clone(), *digest);
            (0usize..5)
                .prop_map(move |spelling| Image::Valid {
                    repo,
                    spelling,
                    tag: tag.clone(),
                    digest,
                })
                .boxed()
        }
        Image::Invalid(_) => Just(old.clone()).boxed(),
    };
    prop_oneof![
        3 => Just(old),
        4 => near,
        1 => respelled,
        3 => image(),
    ]
    .boxed()
}

/// A runner with a fixed case count; failures are reported with their minimal input, not
/// written to files next to the sources.
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

// ---------------------------------------------------------------------------------------------
// Workloads and templates

fn config() -> Config {
    Config::default()
}

/// A container of a generated template.
#[derive(Debug, Clone)]
struct Slot {
    name: String,
    image: Image,
    init: bool,
}

fn template(slots: &[Slot], sidecar: Option<&str>) -> PodTemplateImages {
    let mut containers: Vec<ContainerImage> = slots
        .iter()
        .map(|s| ContainerImage {
            name: s.name.clone(),
            image: s.image.text(),
            init: s.init,
        })
        .collect();
    if let Some(image) = sidecar {
        containers.push(ContainerImage {
            name: "sidecar".into(),
            image: image.into(),
            init: false,
        });
    }
    // Init containers first, as the template lists them.
    containers.sort_by_key(|c| !c.init);
    PodTemplateImages { containers }
}

fn sidecar() -> impl Strategy<Value = Option<&'static str>> {
    prop::option::of(prop::sample::select(vec![
        "busybox",
        "registry.baidubce.com/cce-plugin-pro/cce-cni:v2.0.0",
        "not a reference",
    ]))
}

/// The guarded workload a case is about: 0 the agent DaemonSet, 1 the ipam Deployment.
fn workload(index: usize) -> GuardedWorkload {
    config().workloads[index % 2].clone()
}

/// Guarded containers of `w`, each with its own image and place.
fn slots_for(w: &GuardedWorkload) -> impl Strategy<Value = Vec<Slot>> + use<> {
    let names = w.containers.clone();
    proptest::collection::vec((image(), any::<bool>()), names.len()).prop_map(move |images| {
        names
            .iter()
            .zip(images)
            .map(|(name, (image, init))| Slot {
                name: name.clone(),
                image,
                // The agent's installer sits in initContainers upstream; either place counts.
                init: init && name == "install-cni-binary",
            })
            .collect()
    })
}

/// What happens to one container in an update.
#[derive(Debug, Clone)]
enum Edit {
    Keep,
    SetImage(Image),
    Remove,
    Rename,
}

fn edits_for(old: &[Slot]) -> BoxedStrategy<Vec<Edit>> {
    let per: Vec<BoxedStrategy<Edit>> = old
        .iter()
        .map(|s| {
            prop_oneof![
                2 => Just(Edit::Keep),
                8 => next_image(s.image.clone()).prop_map(Edit::SetImage),
                1 => Just(Edit::Remove),
                1 => Just(Edit::Rename),
            ]
            .boxed()
        })
        .collect();
    per.boxed()
}

fn apply_edits(old: &[Slot], edits: &[Edit]) -> Vec<Slot> {
    old.iter()
        .zip(edits)
        .filter_map(|(slot, edit)| match edit {
            Edit::Keep => Some(slot.clone()),
            Edit::SetImage(image) => Some(Slot {
                image: image.clone(),
                ..slot.clone()
            }),
            Edit::Remove => None,
            Edit::Rename => Some(Slot {
                name: format!("{}-renamed", slot.name),
                ..slot.clone()
            }),
        })
        .collect()
}

/// Who asks, and the exemptions configured.
#[derive(Debug, Clone)]
struct Caller {
    user: UserIdentity,
    exempt: Exemptions,
}

impl Caller {
    /// Whether an exemption covers this caller (by user, group or service account).
    fn exempted(&self) -> bool {
        let sa = self
            .user
            .username
            .strip_prefix("system:serviceaccount:")
            .and_then(|s| s.split_once(':'))
            .map(|(ns, name)| format!("{ns}/{name}"));
        self.exempt.users.contains(&self.user.username)
            || sa.is_some_and(|sa| self.exempt.service_accounts.contains(&sa))
            || self
                .user
                .groups
                .iter()
                .any(|g| self.exempt.groups.contains(g))
    }
}

fn caller() -> impl Strategy<Value = Caller> {
    let users = prop::sample::select(vec![
        "kubernetes-admin",
        "alice@example.com",
        "system:serviceaccount:kube-system:helm-operator",
        "system:serviceaccount:kube-system:default",
        "",
    ]);
    let groups = prop::sample::subsequence(
        vec!["system:authenticated", "system:masters", "cce:helm", "ops"],
        0..3,
    );
    let exempt = prop_oneof![
        3 => Just(Exemptions::default()),
        1 => Just(Exemptions {
            users: ["alice@example.com".to_owned()].into(),
            ..Default::default()
        }),
        1 => Just(Exemptions {
            groups: ["cce:helm".to_owned()].into(),
            ..Default::default()
        }),
        1 => Just(Exemptions {
            service_accounts: ["kube-system/helm-operator".to_owned()].into(),
            ..Default::default()
        }),
    ];
    (users, groups, exempt).prop_map(|(user, groups, exempt)| Caller {
        user: UserIdentity {
            username: user.to_owned(),
            groups: groups.into_iter().map(str::to_owned).collect(),
        },
        exempt,
    })
}

struct Sibling(SiblingState);

impl SiblingLookup for Sibling {
    fn sibling(&self, _workload: &GuardedWorkload) -> SiblingState {
        self.0.clone()
    }
}

/// The sibling workload's guarded images, or what stands for "unknown" and "absent".
#[derive(Debug, Clone)]
enum SiblingCase {
    Unknown,
    Absent,
    Present(Vec<Slot>),
}

impl SiblingCase {
    fn state(&self) -> SiblingState {
        match self {
            SiblingCase::Unknown => SiblingState::Unknown,
            SiblingCase::Absent => SiblingState::Absent,
            SiblingCase::Present(slots) => SiblingState::Present(template(slots, None)),
        }
    }

    fn images(&self) -> Vec<Image> {
        match self {
            SiblingCase::Present(slots) => slots.iter().map(|s| s.image.clone()).collect(),
            _ => Vec::new(),
        }
    }
}

fn sibling_of(w: &GuardedWorkload) -> GuardedWorkload {
    let c = config();
    c.siblings_of(w)
        .next()
        .cloned()
        .expect("each default workload has a sibling")
}

fn sibling_case(of: &GuardedWorkload) -> impl Strategy<Value = SiblingCase> + use<> {
    let sibling = sibling_of(of);
    prop_oneof![
        1 => Just(SiblingCase::Unknown),
        1 => Just(SiblingCase::Absent),
        3 => slots_for(&sibling).prop_map(SiblingCase::Present),
    ]
}

// ---------------------------------------------------------------------------------------------
// Property: what the policy allows is a patch change (or exempted)

/// One random request about a guarded workload.
#[derive(Debug, Clone)]
struct Case {
    workload: usize,
    create: bool,
    old: Vec<Slot>,
    new: Vec<Slot>,
    old_sidecar: Option<&'static str>,
    new_sidecar: Option<&'static str>,
    sibling: SiblingCase,
    caller: Caller,
}

fn case() -> impl Strategy<Value = Case> {
    (0usize..2, prop::bool::weighted(0.2)).prop_flat_map(|(index, create)| {
        let w = workload(index);
        let old = slots_for(&w);
        (
            old.prop_flat_map(|old| {
                let edits = edits_for(&old);
                (Just(old), edits)
            }),
            sidecar(),
            sidecar(),
            sibling_case(&w),
            caller(),
        )
            .prop_map(
                move |((old, edits), old_sidecar, new_sidecar, sibling, caller)| {
                    let new = apply_edits(&old, &edits);
                    Case {
                        workload: index,
                        create,
                        old,
                        new,
                        old_sidecar,
                        new_sidecar,
                        sibling,
                        caller,
                    }
                },
            )
    })
}

/// Why an allowed decision is unsound, if it is.
fn unsound_allowance(case: &Case) -> Option<String> {
    let w = workload(case.workload);
    let guarded = |s: &&Slot| w.containers.contains(&s.name);
    let new: Vec<&Slot> = case.new.iter().filter(guarded).collect();
    let old: Vec<&Slot> = if case.create {
        Vec::new()
    } else {
        case.old.iter().filter(guarded).collect()
    };
    for o in &old {
        if !new.iter().any(|n| n.name == o.name) {
            return Some(format!("guarded container {:?} was removed", o.name));
        }
    }
    let changed: Vec<&Slot> = if case.create {
        new.clone()
    } else {
        new.iter()
            .filter(|n| {
                old.iter()
                    .find(|o| o.name == n.name)
                    .is_none_or(|o| !o.image.same(&n.image))
            })
            .copied()
            .collect()
    };
    for n in &changed {
        if n.image.meaning().is_none() {
            return Some(format!("{:?} moved to an invalid reference", n.name));
        }
        // The image it is judged against: the same container's, or for a container that is
        // new, the first readable guarded one.
        let before = old
            .iter()
            .find(|o| o.name == n.name)
            .or_else(|| old.iter().find(|o| o.image.meaning().is_some()));
        if let Some(before) = before {
            if before.image.repo() != n.image.repo() {
                return Some(format!(
                    "{:?} changed repository: {} → {}",
                    n.name,
                    before.image.text(),
                    n.image.text()
                ));
            }
            match (before.image.line(), n.image.line()) {
                (Some(a), Some(b)) if a == b => {}
                _ => {
                    return Some(format!(
                        "{:?} is not a patch change: {} → {}",
                        n.name,
                        before.image.text(),
                        n.image.text()
                    ));
                }
            }
        }
        for s in case.sibling.images() {
            if s.meaning().is_none() {
                continue;
            }
            if s.repo() != n.image.repo() || s.line().is_none() || s.line() != n.image.line() {
                return Some(format!(
                    "{:?} runs {} while the sibling runs {}",
                    n.name,
                    n.image.text(),
                    s.text()
                ));
            }
        }
    }
    if !changed.is_empty() {
        let readable: Vec<&Slot> = new
            .iter()
            .filter(|n| n.image.meaning().is_some())
            .copied()
            .collect();
        if let Some(first) = readable.first()
            && readable.iter().any(|n| !n.image.same(&first.image))
        {
            return Some("the guarded containers disagree after the change".into());
        }
    }
    None
}

fn judge(case: &Case) -> cce_cni_guard::policy::Decision {
    let w = workload(case.workload);
    let config = Config {
        exempt: case.caller.exempt.clone(),
        ..config()
    };
    let old = template(&case.old, case.old_sidecar);
    let new = template(&case.new, case.new_sidecar);
    let request = Request {
        operation: if case.create {
            Operation::Create
        } else {
            Operation::Update
        },
        group: "apps",
        kind: &w.kind.to_string(),
        sub_resource: None,
        namespace: &w.namespace,
        name: &w.name,
        object: Some(Ok(&new)),
        old_object: (!case.create).then_some(Ok(&old)),
        // Labels are judged apart from images (policy table, guard_e2e); here they are unknown.
        labels: None,
        old_labels: None,
        user: &case.caller.user,
    };
    decide(&request, &Sibling(case.sibling.state()), &config)
}

#[test]
fn what_is_allowed_is_a_patch_change_or_exempted() {
    let mut runner = runner(3000);
    let seen = std::cell::RefCell::new([0usize; 4]);
    runner
        .run(&case(), |case| {
            let d = judge(&case);
            let exempted = case.caller.exempted();
            let w = workload(case.workload);
            match d.verdict {
                Verdict::NotGuarded => {
                    return Err(TestCaseError::fail("a guarded workload was not guarded"));
                }
                Verdict::Allowed => {
                    seen.borrow_mut()[0] += 1;
                    if let Some(why) = unsound_allowance(&case) {
                        return Err(TestCaseError::fail(format!("allowed, but {why}")));
                    }
                    prop_assert!(d.violations.is_empty());
                    prop_assert_eq!(
                        d.audit_annotations.get("decision").map(String::as_str),
                        Some("allowed")
                    );
                }
                Verdict::Denied => {
                    seen.borrow_mut()[1] += 1;
                    prop_assert!(!exempted, "an exempted caller was denied: {}", d.message);
                    prop_assert!(!d.violations.is_empty());
                    prop_assert!(d.message.contains(&w.display_name()), "{}", d.message);
                    prop_assert!(d.message.contains("Way forward:"), "{}", d.message);
                }
                Verdict::Exempted => {
                    seen.borrow_mut()[2] += 1;
                    prop_assert!(exempted, "exempted without an exemption");
                    prop_assert!(!d.violations.is_empty(), "exempted from nothing");
                    prop_assert!(d.audit_annotations.contains_key("exempted-by"));
                    prop_assert_eq!(
                        d.audit_annotations.get("decision").map(String::as_str),
                        Some("exempted")
                    );
                }
            }
            // The same request without the exemption: an unsound allowance is never hidden
            // behind one.
            if exempted {
                let plain = Case {
                    caller: Caller {
                        exempt: Exemptions::default(),
                        ..case.caller.clone()
                    },
                    ..case.clone()
                };
                let d = judge(&plain);
                if d.verdict == Verdict::Allowed
                    && let Some(why) = unsound_allowance(&plain)
                {
                    return Err(TestCaseError::fail(format!("allowed, but {why}")));
                }
                seen.borrow_mut()[3] += 1;
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let seen = seen.into_inner();
    eprintln!(
        "allowed {}, denied {}, exempted {}, exempt callers re-judged {}",
        seen[0], seen[1], seen[2], seen[3]
    );
    // Each outcome must be reached often, or the generators test nothing.
    assert!(seen.iter().all(|&n| n >= 100), "{seen:?}");
}

// ---------------------------------------------------------------------------------------------
// Property: a pure same-repository patch change of all guarded containers is never denied

#[derive(Debug, Clone)]
struct PatchCase {
    workload: usize,
    create: bool,
    old: Vec<Slot>,
    /// One image for every guarded container after the change, spelled per container.
    new: Vec<Slot>,
    old_sidecar: Option<&'static str>,
    new_sidecar: Option<&'static str>,
    sibling: SiblingCase,
    caller: Caller,
}

fn patch_case() -> impl Strategy<Value = PatchCase> {
    let line = (
        prop::sample::select(Repo::ALL.to_vec()),
        weighted_major(),
        weighted_minor(),
    );
    (0usize..2, prop::bool::weighted(0.15), line).prop_flat_map(
        |(index, create, (repo, major, minor))| {
            let w = workload(index);
            let names = w.containers.clone();
            let n = names.len();
            let places = proptest::collection::vec(any::<bool>(), n);
            let old = proptest::collection::vec(patch_image(repo, major, minor), n);
            let new_tag = (version_tag_on(major, minor), digest());
            let spellings = proptest::collection::vec(0usize..5, n);
            let sibling_names = sibling_of(&w).containers;
            let sibling = prop_oneof![
                1 => Just(None),
                1 => Just(Some(None)),
                3 => proptest::collection::vec(patch_image(repo, major, minor), sibling_names.len())
                    .prop_map(Some).prop_map(Some),
            ];
            (
                places,
                old,
                new_tag,
                spellings,
                sibling,
                sidecar(),
                sidecar(),
                caller(),
            )
                .prop_map(
                    move |(
                        places,
                        old,
                        (tag, digest),
                        spellings,
                        sibling,
                        old_sc,
                        new_sc,
                        caller,
                    )| {
                        let slot = |i: usize, image: Image| Slot {
                            name: names[i].clone(),
                            image,
                            init: places[i] && names[i] == "install-cni-binary",
                        };
                        let old_slots = old
                            .into_iter()
                            .enumerate()
                            .map(|(i, im)| slot(i, im))
                            .collect();
                        let new_slots = spellings
                            .iter()
                            .enumerate()
                            .map(|(i, &spelling)| {
                                slot(
                                    i,
                                    Image::Valid {
                                        repo,
                                        spelling,
                                        tag: tag.clone(),
                                        digest,
                                    },
                                )
                            })
                            .collect();
                        let sibling = match sibling {
                            None => SiblingCase::Unknown,
                            Some(None) => SiblingCase::Absent,
                            Some(Some(images)) => SiblingCase::Present(
                                sibling_names
                                    .iter()
                                    .zip(images)
                                    .map(|(name, image)| Slot {
                                        name: name.clone(),
                                        image,
                                        init: name == "install-cni-binary",
                                    })
                                    .collect(),
                            ),
                        };
                        PatchCase {
                            workload: index,
                            create,
                            old: old_slots,
                            new: new_slots,
                            old_sidecar: old_sc,
                            new_sidecar: new_sc,
                            sibling,
                            caller,
                        }
                    },
                )
        },
    )
}

#[test]
fn a_patch_change_of_all_guarded_containers_together_is_never_denied() {
    let mut runner = runner(2000);
    runner
        .run(&patch_case(), |pc| {
            let case = Case {
                workload: pc.workload,
                create: pc.create,
                old: pc.old.clone(),
                new: pc.new.clone(),
                old_sidecar: pc.old_sidecar,
                new_sidecar: pc.new_sidecar,
                sibling: pc.sibling.clone(),
                caller: pc.caller.clone(),
            };
            let d = judge(&case);
            prop_assert_eq!(
                d.verdict,
                Verdict::Allowed,
                "{:?} → {:?}: {} {:?}",
                pc.old.iter().map(|s| s.image.text()).collect::<Vec<_>>(),
                pc.new.iter().map(|s| s.image.text()).collect::<Vec<_>>(),
                d.message,
                d.violations
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

// ---------------------------------------------------------------------------------------------
// Property: review, check and serve agree

/// A whole request as the three paths receive it.
#[derive(Debug, Clone)]
struct Wire {
    kind: &'static str,
    api_version: &'static str,
    name: &'static str,
    namespace: &'static str,
    review_version: &'static str,
    case: Case,
    /// Break the new object's container list (not a list): the guard must fail closed.
    malformed: bool,
}

fn wire() -> impl Strategy<Value = Wire> {
    (
        prop::sample::select(vec!["DaemonSet", "Deployment"]),
        prop_oneof![8 => Just("apps/v1"), 1 => Just("extensions/v1beta1")],
        prop_oneof![
            4 => Just(None),
            1 => prop::sample::select(vec!["cce-ip-masq-agent", "cce-cni-node-agent", "cce-eni-ipam"]).prop_map(Some),
        ],
        prop_oneof![6 => Just("kube-system"), 1 => Just("default")],
        prop::sample::select(vec!["admission.k8s.io/v1", "admission.k8s.io/v1beta1"]),
        case(),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(kind, api_version, name, namespace, review_version, case, malformed)| {
                let w = workload(case.workload);
                // Mostly the guarded workload itself; sometimes a neighbour of the same kind
                // or the wrong kind for the name.
                let (kind, name) = match name {
                    None => (
                        match w.kind {
                            cce_cni_guard::policy::WorkloadKind::DaemonSet => "DaemonSet",
                            cce_cni_guard::policy::WorkloadKind::Deployment => "Deployment",
                        },
                        if w.name == "cce-cni-node-agent" {
                            "cce-cni-node-agent"
                        } else {
                            "cce-eni-ipam"
                        },
                    ),
                    Some(other) => (kind, other),
                };
                Wire {
                    kind,
                    api_version,
                    name,
                    namespace,
                    review_version,
                    case,
                    malformed,
                }
            },
        )
}

fn containers_json(slots: &[Slot], sidecar: Option<&str>) -> (Vec<Value>, Vec<Value>) {
    let t = template(slots, sidecar);
    let mut init = Vec::new();
    let mut main = Vec::new();
    for c in t.containers {
        let v = json!({"name": c.name, "image": c.image, "imagePullPolicy": "IfNotPresent"});
        if c.init { init.push(v) } else { main.push(v) }
    }
    (init, main)
}

fn manifest(
    wire: &Wire,
    api_version: &str,
    kind: &str,
    name: &str,
    slots: &[Slot],
    sidecar: Option<&str>,
    malformed: bool,
) -> Value {
    let (init, main) = containers_json(slots, sidecar);
    let mut spec = json!({"containers": main, "hostNetwork": true});
    if !init.is_empty() {
        spec["initContainers"] = Value::Array(init);
    }
    if malformed {
        spec["containers"] = json!({"name": "not-a-list"});
    }
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": wire.namespace, "labels": {"app": name},
                     "annotations": {"deprecated.daemonset.template.generation": "3"}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec}
        }
    })
}

fn admission_review(wire: &Wire, new: &Value, old: Option<&Value>) -> Value {
    let (group, version) = wire
        .api_version
        .split_once('/')
        .unwrap_or(("", wire.api_version));
    let resource = if wire.kind == "DaemonSet" {
        "daemonsets"
    } else {
        "deployments"
    };
    let c = &wire.case;
    json!({
        "apiVersion": wire.review_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "5a1e7d3c-0000-4000-8000-000000000008",
            "kind": {"group": group, "version": version, "kind": wire.kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": wire.kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": wire.name,
            "namespace": wire.namespace,
            "operation": if old.is_some() { "UPDATE" } else { "CREATE" },
            "userInfo": {"username": c.caller.user.username, "groups": c.caller.user.groups},
            "object": new,
            "oldObject": old,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": if old.is_some() { "UpdateOptions" } else { "CreateOptions" }}
        }
    })
}

fn binary(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cce-cni-guard"));
    for (key, _) in std::env::vars() {
        if key.starts_with("CCE_GUARD_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .args(args)
        .env("CCE_GUARD_LOG", "warn")
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path.display().to_string()
}

async fn serve(state: AppState, body: Vec<u8>) -> (u16, Vec<u8>) {
    let request = HttpRequest::post("/validate")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = router(state).oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

#[test]
fn review_check_and_serve_agree() {
    cce_cni_guard::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Each case runs the binary twice (`check` and `review`): a few dozen cases take seconds.
    let mut runner = runner(64);
    let verdicts = std::cell::RefCell::new(std::collections::BTreeMap::<String, usize>::new());
    runner
        .run(&wire(), |wire| {
            let dir = tempfile::tempdir().unwrap();
            let c = &wire.case;
            let config = Config {
                exempt: c.caller.exempt.clone(),
                ..config()
            };
            let config_path = write(
                dir.path(),
                "config.json",
                &serde_json::to_value(&config).unwrap(),
            );
            let new = manifest(
                &wire,
                wire.api_version,
                wire.kind,
                wire.name,
                &c.new,
                c.new_sidecar,
                wire.malformed,
            );
            let old = (!c.create).then(|| {
                manifest(
                    &wire,
                    wire.api_version,
                    wire.kind,
                    wire.name,
                    &c.old,
                    c.old_sidecar,
                    false,
                )
            });
            let new_path = write(dir.path(), "new.json", &new);
            let old_path = old.as_ref().map(|o| write(dir.path(), "old.json", o));

            // The sibling stands in as a manifest for all three paths.
            let w = workload(c.workload);
            let sibling_workload = sibling_of(&w);
            let mut siblings = ManifestSiblings::default();
            let sibling_path = match &c.sibling {
                SiblingCase::Present(slots) => {
                    let kind = sibling_workload.kind.to_string();
                    let sibling_wire = Wire {
                        namespace: "kube-system",
                        ..wire.clone()
                    };
                    let m = manifest(
                        &sibling_wire,
                        "apps/v1",
                        &kind,
                        &sibling_workload.name,
                        slots,
                        None,
                        false,
                    );
                    let path = write(dir.path(), "sibling.json", &m);
                    let parsed =
                        Manifest::parse("sibling.json", &serde_json::to_vec(&m).unwrap()).unwrap();
                    siblings.add(&parsed, &config).unwrap();
                    Some(path)
                }
                _ => None,
            };
            let body = serde_json::to_vec(&admission_review(&wire, &new, old.as_ref())).unwrap();
            let review_path = dir.path().join("review.json");
            std::fs::write(&review_path, &body).unwrap();

            // review, in process.
            let reviewed = cce_cni_guard::review::review(&body, &config, &siblings);
            prop_assert_eq!(
                reviewed.http_status,
                200,
                "{}",
                String::from_utf8_lossy(&reviewed.body)
            );
            let decision = reviewed.decision.clone().expect("a judged request");
            *verdicts
                .borrow_mut()
                .entry(decision.verdict.as_str().to_owned())
                .or_default() += 1;

            // serve: the router in process, byte for byte the same answer.
            let state = AppState::new(
                config.clone(),
                Siblings::Fixed(Arc::new(siblings.clone())),
                Arc::new(Metrics::new()),
            );
            let (status, served) = runtime.block_on(serve(state, body.clone()));
            prop_assert_eq!(status, 200);
            prop_assert_eq!(
                String::from_utf8_lossy(&served),
                String::from_utf8_lossy(&reviewed.body),
                "serve and review answer differently"
            );

            // review, the command: prints the same answer.
            let mut args = vec![
                "review".to_owned(),
                review_path.display().to_string(),
                "--config".into(),
                config_path.clone(),
            ];
            if let Some(s) = &sibling_path {
                args.extend(["--sibling".into(), s.clone()]);
            }
            let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, stdout, stderr) = binary(&args_ref);
            prop_assert_eq!(code, if decision.allowed() { 0 } else { 1 }, "{}", stderr);
            prop_assert_eq!(
                stdout.trim_end(),
                String::from_utf8_lossy(&reviewed.body),
                "the review command"
            );

            // check: the same verdict and rules from the manifests.
            let mut args = vec![
                "check".to_owned(),
                "--new".into(),
                new_path,
                "--config".into(),
                config_path,
                "-o".into(),
                "json".into(),
                "--as-user".into(),
                c.caller.user.username.clone(),
            ];
            if let Some(o) = old_path {
                args.extend(["--old".into(), o]);
            }
            if !c.caller.user.groups.is_empty() {
                args.extend(["--as-group".into(), c.caller.user.groups.join(",")]);
            }
            if let Some(s) = &sibling_path {
                args.extend(["--sibling".into(), s.clone()]);
            }
            let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, stdout, stderr) = binary(&args_ref);
            prop_assert_eq!(
                code,
                if decision.allowed() { 0 } else { 1 },
                "check: {}\n{}",
                stdout,
                stderr
            );
            let checked: Value = serde_json::from_str(stdout.trim())
                .map_err(|e| TestCaseError::fail(format!("{e}: {stdout}")))?;
            let answer: Value = serde_json::from_slice(&reviewed.body).unwrap();
            let response = &answer["response"];
            prop_assert_eq!(&checked["allowed"], &response["allowed"]);
            prop_assert_eq!(checked["verdict"].as_str(), Some(decision.verdict.as_str()));
            let rules: Vec<&str> = checked["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut unique: Vec<&str> = Vec::new();
            for r in rules {
                if !unique.contains(&r) {
                    unique.push(r);
                }
            }
            prop_assert_eq!(
                response["auditAnnotations"]["rules"].as_str().unwrap_or(""),
                unique.join(","),
                "the same rules"
            );
            if !decision.allowed() && !unique.contains(&"undecodable") {
                // Messages only differ where each path reads a broken object its own way.
                prop_assert_eq!(
                    checked["message"].as_str(),
                    response["status"]["message"].as_str()
                );
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let verdicts = verdicts.into_inner();
    eprintln!("verdicts: {verdicts:?}");
    for verdict in ["allowed", "denied", "not-guarded"] {
        assert!(
            verdicts.contains_key(verdict),
            "no {verdict} case: {verdicts:?}"
        );
    }
}
