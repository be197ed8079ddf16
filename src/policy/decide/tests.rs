//! The policy table: every rule, every tag shape seen upstream, every operation.

use super::*;
use crate::policy::{ContainerImage, Exemptions, NoSiblings};

const R: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni";
const ARM: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni-arm64";

fn img(tag: &str) -> String {
    if tag.starts_with('@') {
        format!("{R}{tag}")
    } else {
        format!("{R}:{tag}")
    }
}

fn ds(agent: &str, install: &str) -> PodTemplateImages {
    PodTemplateImages {
        containers: vec![
            ContainerImage {
                name: "install-cni-binary".into(),
                image: install.into(),
                init: true,
            },
            ContainerImage {
                name: "cce-cni-node-agent".into(),
                image: agent.into(),
                init: false,
            },
        ],
    }
}

fn ipam(image: &str) -> PodTemplateImages {
    PodTemplateImages {
        containers: vec![ContainerImage {
            name: "cce-eni-ipam".into(),
            image: image.into(),
            init: false,
        }],
    }
}

struct Sibling(SiblingState);

impl SiblingLookup for Sibling {
    fn sibling(&self, _workload: &GuardedWorkload) -> SiblingState {
        self.0.clone()
    }
}

#[derive(Clone, Copy)]
enum Target {
    Agent,
    Ipam,
}

struct Case {
    name: &'static str,
    op: Operation,
    target: Target,
    old: Option<PodTemplateImages>,
    new: Option<PodTemplateImages>,
    sibling: SiblingState,
    user: &'static str,
    groups: &'static [&'static str],
    sub_resource: Option<&'static str>,
    expect: Verdict,
    rules: &'static [Rule],
    message_has: &'static [&'static str],
    warning_has: &'static [&'static str],
    /// `metadata.labels` of the new and the stored object (`None`: not known).
    labels: Option<&'static [(&'static str, &'static str)]>,
    old_labels: Option<&'static [(&'static str, &'static str)]>,
}

/// What upstream's DaemonSet carries, and the default configuration selects it by.
const AGENT_LABELS: &[(&str, &str)] = &[("k8s-app", "cce-cni-node-agent")];

fn label_map(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Default for Case {
    fn default() -> Self {
        Self {
            name: "",
            op: Operation::Update,
            target: Target::Agent,
            old: Some(ds(&img("v1.9.3"), &img("v1.9.3"))),
            new: None,
            sibling: SiblingState::Present(ipam(&img("v1.9.3"))),
            user: "kubernetes-admin",
            groups: &["system:masters", "system:authenticated"],
            sub_resource: None,
            expect: Verdict::Allowed,
            rules: &[],
            message_has: &[],
            warning_has: &[],
            labels: Some(AGENT_LABELS),
            old_labels: Some(AGENT_LABELS),
        }
    }
}

fn config() -> Config {
    Config {
        exempt: Exemptions {
            users: ["helm-operator".to_owned()].into(),
            groups: ["cce:network-admins".to_owned()].into(),
            service_accounts: ["kube-system/cce-helm".to_owned()].into(),
        },
        ..Config::default()
    }
}

fn run(case: &Case, config: &Config) -> Decision {
    let (kind, name) = match case.target {
        Target::Agent => ("DaemonSet", "cce-cni-node-agent"),
        Target::Ipam => ("Deployment", "cce-eni-ipam"),
    };
    let user = UserIdentity {
        username: case.user.into(),
        groups: case.groups.iter().map(|g| g.to_string()).collect(),
    };
    let labels = case.labels.map(label_map);
    let old_labels = case.old_labels.map(label_map);
    let request = Request {
        operation: case.op,
        group: "apps",
        kind,
        sub_resource: case.sub_resource,
        namespace: "kube-system",
        name,
        object: case.new.as_ref().map(Ok),
        old_object: case.old.as_ref().map(Ok),
        labels: labels.as_ref(),
        old_labels: old_labels.as_ref(),
        user: &user,
    };
    decide(&request, &Sibling(case.sibling.clone()), config)
}

fn cases() -> Vec<Case> {
    let same = |t: &str| Some(ds(&img(t), &img(t)));
    vec![
        // --- Allowed patch changes (rule 2 satisfied) ---
        Case {
            name: "SOP command: both containers v1.9.3 -> v1.9.4",
            new: same("v1.9.4"),
            ..Default::default()
        },
        Case {
            name: "patch upgrade warns that the sibling comes next",
            new: same("v1.9.4"),
            warning_has: &[
                "Deployment kube-system/cce-eni-ipam runs v1.9.3; bring it to v1.9.4 next",
            ],
            ..Default::default()
        },
        Case {
            name: "patch downgrade (a rollback) is allowed with a warning",
            old: same("v1.9.4"),
            new: same("v1.9.3"),
            warning_has: &["patch downgrade"],
            ..Default::default()
        },
        Case {
            name: "tag without v: 1.2.1 -> 1.2.2",
            old: same("1.2.1"),
            new: same("1.2.2"),
            sibling: SiblingState::Present(ipam(&img("1.2.1"))),
            ..Default::default()
        },
        Case {
            name: "v prefix dropped, same line: v1.9.3 -> 1.9.4",
            new: same("1.9.4"),
            ..Default::default()
        },
        Case {
            name: "pre-release in the same line is allowed with a warning",
            new: same("v1.9.4-rc.1"),
            warning_has: &["pre-release"],
            ..Default::default()
        },
        Case {
            name: "tag plus digest in the same line",
            new: same(&format!("v1.9.4@sha256:{}", "b".repeat(64))),
            ..Default::default()
        },
        Case {
            name: "registry with a port, patch change",
            old: Some(ds(
                "10.0.0.5:5000/cce/cce-cni:v1.9.3",
                "10.0.0.5:5000/cce/cce-cni:v1.9.3",
            )),
            new: Some(ds(
                "10.0.0.5:5000/cce/cce-cni:v1.9.4",
                "10.0.0.5:5000/cce/cce-cni:v1.9.4",
            )),
            sibling: SiblingState::Present(ipam("10.0.0.5:5000/cce/cce-cni:v1.9.3")),
            ..Default::default()
        },
        Case {
            name: "arm64 repository, patch change inside it",
            old: Some(ds(&format!("{ARM}:v1.9.3"), &format!("{ARM}:v1.9.3"))),
            new: Some(ds(&format!("{ARM}:v1.9.4"), &format!("{ARM}:v1.9.4"))),
            sibling: SiblingState::Present(ipam(&format!("{ARM}:v1.9.3"))),
            ..Default::default()
        },
        Case {
            name: "ipam patch upgrade after the DaemonSet",
            target: Target::Ipam,
            old: Some(ipam(&img("v1.9.3"))),
            new: Some(ipam(&img("v1.9.4"))),
            sibling: SiblingState::Present(ds(&img("v1.9.4"), &img("v1.9.4"))),
            ..Default::default()
        },
        Case {
            name: "sibling absent (no ipam in this CNI mode) skips rule 3",
            new: same("v1.9.4"),
            sibling: SiblingState::Absent,
            ..Default::default()
        },
        Case {
            name: "sibling unknown (offline) skips rule 3",
            new: same("v1.9.4"),
            sibling: SiblingState::Unknown,
            ..Default::default()
        },
        Case {
            name: "same image written back (no change) is allowed",
            new: same("v1.9.3"),
            ..Default::default()
        },
        Case {
            name: "docker.io normalisation: same image spelt two ways is no change",
            old: Some(ds("nginx:1.25.0", "nginx:1.25.0")),
            new: Some(ds("docker.io/library/nginx:1.25.0", "nginx:1.25.0")),
            sibling: SiblingState::Unknown,
            ..Default::default()
        },
        // --- Rule 4: only the change is judged ---
        Case {
            name: "pre-existing mismatch left alone: allowed with a warning",
            old: Some(ds(&img("v1.9.4"), &img("v1.9.3"))),
            new: Some(ds(&img("v1.9.4"), &img("v1.9.3"))),
            warning_has: &["disagree"],
            ..Default::default()
        },
        Case {
            name: "an update that fixes a pre-existing mismatch is allowed",
            old: Some(ds(&img("v1.9.4"), &img("v1.9.3"))),
            new: same("v1.9.4"),
            ..Default::default()
        },
        Case {
            name: "pre-existing non-version tags untouched are allowed",
            old: same("host-local"),
            new: same("host-local"),
            sibling: SiblingState::Present(ipam(&img("host-local"))),
            ..Default::default()
        },
        // --- Rule 1: consistent ---
        Case {
            name: "set image on cce-cni-node-agent only",
            new: Some(ds(&img("v1.9.4"), &img("v1.9.3"))),
            expect: Verdict::Denied,
            rules: &[Rule::Consistent],
            message_has: &[
                "DaemonSet kube-system/cce-cni-node-agent",
                "\"install-cni-binary\"",
                "v1.9.3",
                "v1.9.4",
                "kubectl -n kube-system set image daemonset/cce-cni-node-agent cce-cni-node-agent=registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4 install-cni-binary=registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4",
                "cce-cni-guard upgrade --to v1.9.4",
                "kubectl -n kube-system set image deployment/cce-eni-ipam cce-eni-ipam=registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4",
            ],
            ..Default::default()
        },
        Case {
            name: "set image on install-cni-binary only",
            new: Some(ds(&img("v1.9.3"), &img("v1.9.4"))),
            expect: Verdict::Denied,
            rules: &[Rule::Consistent],
            message_has: &[
                "cce-cni-node-agent=registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4 install-cni-binary=",
            ],
            ..Default::default()
        },
        Case {
            name: "two different patch targets in one change",
            new: Some(ds(&img("v1.9.4"), &img("v1.9.5"))),
            expect: Verdict::Denied,
            rules: &[Rule::Consistent],
            ..Default::default()
        },
        Case {
            name: "CREATE of a mismatched DaemonSet",
            op: Operation::Create,
            old: None,
            new: Some(ds(&img("v1.9.4"), &img("v1.9.3"))),
            expect: Verdict::Denied,
            rules: &[Rule::Consistent],
            ..Default::default()
        },
        // --- Rule 2: patch only ---
        Case {
            name: "cross-minor v1.9.3 -> v1.10.0",
            new: same("v1.10.0"),
            expect: Verdict::Denied,
            rules: &[Rule::PatchOnly],
            message_has: &[
                "moves the minor version (1.9 → 1.10)",
                "v1.10 helm chart",
                "upgrade --to v1.9.x",
            ],
            ..Default::default()
        },
        Case {
            name: "cross-minor downwards v1.9.3 -> v1.8.9",
            new: same("v1.8.9"),
            expect: Verdict::Denied,
            rules: &[Rule::PatchOnly],
            message_has: &["1.9 → 1.8"],
            ..Default::default()
        },
        Case {
            name: "cross-major v1.9.3 -> v2.0.0",
            new: same("v2.0.0"),
            expect: Verdict::Denied,
            rules: &[Rule::PatchOnly],
            message_has: &["moves the major version (1 → 2)", "migration"],
            ..Default::default()
        },
        Case {
            name: "cross-minor pre-release v1.9.3 -> v1.10.0-rc.1",
            new: same("v1.10.0-rc.1"),
            expect: Verdict::Denied,
            rules: &[Rule::PatchOnly],
            ..Default::default()
        },
        Case {
            name: "to latest",
            new: same("latest"),
            expect: Verdict::Denied,
            rules: &[Rule::PatchOnly],
            message_has: &["\"latest\" is not a version"],
            ..Default::default()
        },
        Case {
            name: "to no tag at all (implicit latest)",
            new: Some(ds(R, R)),
            expect: Verdict::Denied,
            rules: &[Rule::PatchOnly],
            message_has: &["means \"latest\""],
            ..Default::default()
        },
        Case {
            name: "to host-local",
            new: same("host-local"),
            expect: Verdict::Denied,
            rules: &[Rule::PatchOnly],
            message_has: &["\"host-local\" is not a version"],
            ..Default::default()
        },
        Case {
            name: "from host-local-eri to a version",
            old: same("host-local-eri"),
            new: same("v1.9.4"),
            sibling: SiblingState::Unknown,
            expect: Verdict::Denied,
            rules: &[Rule::PatchOnly],
            message_has: &["current tag \"host-local-eri\" is not a version"],
            ..Default::default()
        },
        Case {
            name: "from test to test2",
            old: same("test"),
            new: same("test2"),
            sibling: SiblingState::Unknown,
            expect: Verdict::Denied,
            rules: &[Rule::PatchOnly],
            ..Default::default()
        },
        Case {
            name: "digest only cannot be proven a patch",
            new: same(&format!("@sha256:{}", "a".repeat(64))),
            expect: Verdict::Denied,
            rules: &[Rule::PatchOnly],
            message_has: &["(digest only)"],
            ..Default::default()
        },
        Case {
            name: "repository swap to arm64, same tag",
            new: Some(ds(&format!("{ARM}:v1.9.3"), &format!("{ARM}:v1.9.3"))),
            expect: Verdict::Denied,
            rules: &[Rule::PatchOnly],
            message_has: &[
                "changes the repository from registry.baidubce.com/cce-plugin-pro/cce-cni to registry.baidubce.com/cce-plugin-pro/cce-cni-arm64",
            ],
            ..Default::default()
        },
        Case {
            name: "registry swap with a patch tag suggests the old repository",
            new: Some(ds(
                "hub.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4",
                "hub.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4",
            )),
            expect: Verdict::Denied,
            rules: &[Rule::PatchOnly],
            message_has: &[
                "keep the repository registry.baidubce.com/cce-plugin-pro/cce-cni",
                "cce-cni-node-agent=registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4",
            ],
            ..Default::default()
        },
        Case {
            name: "typo in the repository (cce-cin)",
            new: Some(ds(
                "registry.baidubce.com/cce-plugin-pro/cce-cin:v1.9.4",
                "registry.baidubce.com/cce-plugin-pro/cce-cin:v1.9.4",
            )),
            expect: Verdict::Denied,
            rules: &[Rule::PatchOnly],
            ..Default::default()
        },
        Case {
            name: "cross-minor and one container only: both rules named",
            new: Some(ds(&img("v1.10.0"), &img("v1.9.3"))),
            expect: Verdict::Denied,
            rules: &[Rule::PatchOnly, Rule::Consistent],
            ..Default::default()
        },
        Case {
            name: "ipam cross-minor",
            target: Target::Ipam,
            old: Some(ipam(&img("v1.9.3"))),
            new: Some(ipam(&img("v1.10.1"))),
            expect: Verdict::Denied,
            rules: &[Rule::PatchOnly],
            message_has: &["Deployment kube-system/cce-eni-ipam", "\"cce-eni-ipam\""],
            sibling: SiblingState::Present(ds(&img("v1.9.3"), &img("v1.9.3"))),
            ..Default::default()
        },
        Case {
            name: "invalid new image reference",
            new: same("v1.9.4:bad"),
            expect: Verdict::Denied,
            rules: &[Rule::InvalidImage],
            ..Default::default()
        },
        // --- Rule 3: siblings agree ---
        Case {
            name: "CREATE of the DaemonSet on another minor than ipam",
            op: Operation::Create,
            old: None,
            new: same("v1.10.0"),
            expect: Verdict::Denied,
            rules: &[Rule::SiblingsAgree],
            message_has: &[
                "sibling Deployment kube-system/cce-eni-ipam runs registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.3",
                "release line 1.10 differs from 1.9",
            ],
            ..Default::default()
        },
        Case {
            name: "CREATE matching the sibling's line",
            op: Operation::Create,
            old: None,
            new: same("v1.9.4"),
            ..Default::default()
        },
        Case {
            name: "CREATE without install-cni-binary warns",
            op: Operation::Create,
            old: None,
            new: Some(PodTemplateImages {
                containers: vec![ContainerImage {
                    name: "cce-cni-node-agent".into(),
                    image: img("v1.9.3"),
                    init: false,
                }],
            }),
            warning_has: &["no guarded container \"install-cni-binary\""],
            ..Default::default()
        },
        Case {
            name: "patch change while the sibling is on another minor",
            new: same("v1.9.4"),
            sibling: SiblingState::Present(ipam(&img("v1.8.2"))),
            expect: Verdict::Denied,
            rules: &[Rule::SiblingsAgree],
            message_has: &["helm chart"],
            ..Default::default()
        },
        Case {
            name: "sibling in another repository",
            new: same("v1.9.4"),
            sibling: SiblingState::Present(ipam(&format!("{ARM}:v1.9.3"))),
            expect: Verdict::Denied,
            rules: &[Rule::SiblingsAgree],
            message_has: &["another repository"],
            ..Default::default()
        },
        Case {
            name: "sibling on a non-version tag",
            new: same("v1.9.4"),
            sibling: SiblingState::Present(ipam(&img("host-local"))),
            expect: Verdict::Denied,
            rules: &[Rule::SiblingsAgree],
            ..Default::default()
        },
        // --- Rule 5: removed or renamed ---
        Case {
            name: "install-cni-binary removed",
            new: Some(PodTemplateImages {
                containers: vec![ContainerImage {
                    name: "cce-cni-node-agent".into(),
                    image: img("v1.9.3"),
                    init: false,
                }],
            }),
            expect: Verdict::Denied,
            rules: &[Rule::ContainerRemoved],
            message_has: &["\"install-cni-binary\"", "removed or renamed"],
            ..Default::default()
        },
        Case {
            name: "cce-cni-node-agent renamed",
            new: Some(PodTemplateImages {
                containers: vec![
                    ContainerImage {
                        name: "install-cni-binary".into(),
                        image: img("v1.9.3"),
                        init: true,
                    },
                    ContainerImage {
                        name: "agent".into(),
                        image: img("v1.9.3"),
                        init: false,
                    },
                ],
            }),
            expect: Verdict::Denied,
            rules: &[Rule::ContainerRemoved],
            ..Default::default()
        },
        Case {
            name: "install-cni-binary moved from initContainers to containers",
            new: Some(PodTemplateImages {
                containers: vec![
                    ContainerImage {
                        name: "cce-cni-node-agent".into(),
                        image: img("v1.9.3"),
                        init: false,
                    },
                    ContainerImage {
                        name: "install-cni-binary".into(),
                        image: img("v1.9.3"),
                        init: false,
                    },
                ],
            }),
            ..Default::default()
        },
        // --- Rule 5 for labels: the webhook's objectSelector keeps matching ---
        Case {
            name: "an update that drops the label the pre-1.30 webhook selects by",
            new: same("v1.9.3"),
            labels: Some(&[]),
            expect: Verdict::Denied,
            rules: &[Rule::LabelsKept],
            message_has: &[
                "no longer satisfy k8s-app=cce-cni-node-agent",
                "no later change would reach the guard",
                "keep the labels k8s-app=cce-cni-node-agent",
            ],
            ..Default::default()
        },
        Case {
            name: "an update that changes the label's value",
            new: same("v1.9.3"),
            labels: Some(&[("k8s-app", "agent")]),
            expect: Verdict::Denied,
            rules: &[Rule::LabelsKept],
            ..Default::default()
        },
        Case {
            name: "dropping the label together with a minor jump names both rules",
            new: same("v1.10.0"),
            labels: Some(&[("team", "net")]),
            expect: Verdict::Denied,
            rules: &[Rule::LabelsKept, Rule::PatchOnly],
            ..Default::default()
        },
        Case {
            name: "labels added next to the selected one",
            new: same("v1.9.3"),
            labels: Some(&[("k8s-app", "cce-cni-node-agent"), ("team", "net")]),
            ..Default::default()
        },
        Case {
            name: "an object already outside the selector is not judged on its labels",
            new: same("v1.9.3"),
            labels: Some(&[]),
            old_labels: Some(&[]),
            ..Default::default()
        },
        Case {
            name: "labels not known (upgrader, offline without --old): the rule is skipped",
            new: same("v1.9.3"),
            labels: None,
            ..Default::default()
        },
        Case {
            name: "an exempted identity may drop the label",
            new: same("v1.9.3"),
            labels: Some(&[]),
            user: "helm-operator",
            expect: Verdict::Exempted,
            rules: &[Rule::LabelsKept],
            warning_has: &["labels-kept"],
            ..Default::default()
        },
        Case {
            name: "ipam is selected by no label: its labels are free",
            target: Target::Ipam,
            old: Some(ipam(&img("v1.9.3"))),
            new: Some(ipam(&img("v1.9.3"))),
            sibling: SiblingState::Present(ds(&img("v1.9.3"), &img("v1.9.3"))),
            labels: Some(&[]),
            old_labels: Some(&[("app", "cce-eni-ipam")]),
            ..Default::default()
        },
        Case {
            name: "a CREATE without the label is allowed, with a warning",
            op: Operation::Create,
            old: None,
            new: same("v1.9.3"),
            labels: Some(&[]),
            old_labels: None,
            warning_has: &["lacks the labels k8s-app=cce-cni-node-agent"],
            ..Default::default()
        },
        Case {
            name: "a scale or status write is not judged on labels",
            new: same("v1.9.3"),
            labels: Some(&[]),
            sub_resource: Some("status"),
            expect: Verdict::NotGuarded,
            ..Default::default()
        },
        // --- Rule 6: exemptions by identity ---
        Case {
            name: "exempt user may make a minor change, with a warning",
            new: same("v1.10.0"),
            user: "helm-operator",
            groups: &["system:authenticated"],
            expect: Verdict::Exempted,
            rules: &[Rule::PatchOnly],
            warning_has: &["exempted (user:helm-operator)"],
            ..Default::default()
        },
        Case {
            name: "exempt group",
            new: same("v1.10.0"),
            user: "alice",
            groups: &["cce:network-admins"],
            expect: Verdict::Exempted,
            rules: &[Rule::PatchOnly],
            warning_has: &["group:cce:network-admins"],
            ..Default::default()
        },
        Case {
            name: "exempt service account",
            new: same("v1.10.0"),
            user: "system:serviceaccount:kube-system:cce-helm",
            groups: &["system:serviceaccounts"],
            expect: Verdict::Exempted,
            rules: &[Rule::PatchOnly],
            warning_has: &["serviceaccount:kube-system/cce-helm"],
            ..Default::default()
        },
        Case {
            name: "another service account of the same name elsewhere is not exempt",
            new: same("v1.10.0"),
            user: "system:serviceaccount:default:cce-helm",
            groups: &["system:serviceaccounts"],
            expect: Verdict::Denied,
            rules: &[Rule::PatchOnly],
            ..Default::default()
        },
        Case {
            name: "system:masters is not exempt by default",
            new: same("v1.10.0"),
            expect: Verdict::Denied,
            rules: &[Rule::PatchOnly],
            ..Default::default()
        },
        // --- Rule 7 and scope ---
        Case {
            name: "DELETE is not judged",
            op: Operation::Delete,
            new: None,
            expect: Verdict::NotGuarded,
            ..Default::default()
        },
        Case {
            name: "status subresource is not judged",
            sub_resource: Some("status"),
            new: same("v1.10.0"),
            expect: Verdict::NotGuarded,
            ..Default::default()
        },
        Case {
            name: "scale subresource is not judged",
            target: Target::Ipam,
            sub_resource: Some("scale"),
            old: None,
            new: None,
            expect: Verdict::NotGuarded,
            ..Default::default()
        },
        Case {
            name: "UPDATE without an object fails closed",
            new: None,
            expect: Verdict::Denied,
            rules: &[Rule::Undecodable],
            ..Default::default()
        },
    ]
}

#[test]
fn policy_table() {
    let config = config();
    let cases = cases();
    assert!(cases.len() >= 40, "the table has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let decision = run(case, &config);
        let rules: Vec<Rule> =
            decision
                .violations
                .iter()
                .map(|v| v.rule)
                .fold(Vec::new(), |mut acc, r| {
                    if !acc.contains(&r) {
                        acc.push(r);
                    }
                    acc
                });
        let mut problems = Vec::new();
        if decision.verdict != case.expect {
            problems.push(format!(
                "verdict {:?}, expected {:?}",
                decision.verdict, case.expect
            ));
        }
        if rules != case.rules {
            problems.push(format!("rules {rules:?}, expected {:?}", case.rules));
        }
        for needle in case.message_has {
            if !decision.message.contains(needle) {
                problems.push(format!("message lacks {needle:?}"));
            }
        }
        for needle in case.warning_has {
            if !decision.warnings.iter().any(|w| w.contains(needle)) {
                problems.push(format!("warnings lack {needle:?}: {:?}", decision.warnings));
            }
        }
        if decision.verdict == Verdict::Denied && decision.message.is_empty() {
            problems.push("a denial without a message".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}:\n    {}\n    message: {}",
                case.name,
                problems.join("\n    "),
                decision.message
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn objects_outside_the_guard_are_not_judged() {
    let config = Config::default();
    let user = UserIdentity::default();
    let new = ds(&img("v1.10.0"), &img("v1.9.3"));
    for (group, kind, namespace, name) in [
        ("apps", "DaemonSet", "default", "cce-cni-node-agent"),
        ("apps", "DaemonSet", "kube-system", "cce-ip-masq-agent"),
        ("apps", "StatefulSet", "kube-system", "cce-cni-node-agent"),
        ("", "ConfigMap", "kube-system", "cce-cni-node-agent"),
        (
            "extensions",
            "DaemonSet",
            "kube-system",
            "cce-cni-node-agent",
        ),
    ] {
        let request = Request {
            operation: Operation::Update,
            group,
            kind,
            sub_resource: None,
            namespace,
            name,
            object: Some(Ok(&new)),
            old_object: Some(Ok(&new)),
            labels: None,
            old_labels: None,
            user: &user,
        };
        assert_eq!(
            decide(&request, &NoSiblings, &config).verdict,
            Verdict::NotGuarded,
            "{kind} {namespace}/{name}"
        );
    }
}

#[test]
fn undecodable_guarded_object_is_refused_with_the_reason() {
    let config = Config::default();
    let user = UserIdentity::default();
    let err = TemplateError::NotAList("spec.template.spec.containers");
    let request = Request {
        operation: Operation::Create,
        group: "apps",
        kind: "DaemonSet",
        sub_resource: None,
        namespace: "kube-system",
        name: "cce-cni-node-agent",
        object: Some(Err(&err)),
        old_object: None,
        labels: None,
        old_labels: None,
        user: &user,
    };
    let decision = decide(&request, &NoSiblings, &config);
    assert_eq!(decision.verdict, Verdict::Denied);
    assert_eq!(decision.primary_rule(), Some(Rule::Undecodable));
    assert!(
        decision
            .message
            .contains("spec.template.spec.containers is not a list"),
        "{}",
        decision.message
    );
}

#[test]
fn repository_aliases_make_a_mirror_the_same_repository() {
    let mirror = "hub.baidubce.com/cce-plugin-pro/cce-cni";
    let config = Config {
        repository_aliases: vec![vec![R.to_owned(), mirror.to_owned()]],
        ..Config::default()
    };
    let case = Case {
        new: Some(ds(&format!("{mirror}:v1.9.4"), &format!("{mirror}:v1.9.4"))),
        ..Default::default()
    };
    assert_eq!(run(&case, &config).verdict, Verdict::Allowed);
    assert_eq!(run(&case, &Config::default()).verdict, Verdict::Denied);
}

#[test]
fn audit_annotations_record_the_decision() {
    let config = config();
    let denied = run(
        &Case {
            new: Some(ds(&img("v1.10.0"), &img("v1.10.0"))),
            ..Default::default()
        },
        &config,
    );
    assert_eq!(
        denied.audit_annotations.get("decision").map(String::as_str),
        Some("denied")
    );
    assert_eq!(
        denied.audit_annotations.get("rules").map(String::as_str),
        Some("patch-only")
    );
    let exempted = run(
        &Case {
            new: Some(ds(&img("v1.10.0"), &img("v1.10.0"))),
            user: "helm-operator",
            ..Default::default()
        },
        &config,
    );
    assert_eq!(
        exempted
            .audit_annotations
            .get("decision")
            .map(String::as_str),
        Some("exempted")
    );
    assert_eq!(
        exempted
            .audit_annotations
            .get("exempted-by")
            .map(String::as_str),
        Some("user:helm-operator")
    );
    assert!(exempted.message.is_empty());
}

#[test]
fn workload_version_reads_a_consistent_workload() {
    let config = Config::default();
    let agent = &config.workloads[0];
    let (image, version) = workload_version(agent, &ds(&img("v1.9.3"), &img("v1.9.3"))).unwrap();
    assert_eq!(image.tag(), Some("v1.9.3"));
    assert_eq!(version.line(), "1.9");
    assert!(workload_version(agent, &ds(&img("v1.9.3"), &img("v1.9.4"))).is_none());
}
