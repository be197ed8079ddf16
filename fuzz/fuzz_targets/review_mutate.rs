//! Real AdmissionReviews, edited the ways that matter to the guard (images, container
//! names and lists, kind, name, operation, user, arbitrary fields), so the decoder and the
//! policy are reached on every input rather than only when the fuzzer happens on valid JSON.
//!
//! Besides "never panics", two properties: the answer is deterministic byte for byte
//! (`serve` and `review` rely on it), and the webhook's one-pass decoder judges exactly as
//! the generic pod-template reader that `check` uses would.
#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use cce_cni_guard::manifest::{Manifest, ManifestSiblings};
use cce_cni_guard::policy::{
    Config, NoSiblings, Operation, PodTemplateImages, Request, SiblingLookup, UserIdentity, decide,
    object_labels,
};
use cce_cni_guard::review::review;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const REVIEWS: [&str; 5] = [
    include_str!("../../tests/fixtures/review-daemonset-update.json"),
    include_str!("../../tests/fixtures/webhook/agent-one-container.v1.json"),
    include_str!("../../tests/fixtures/webhook/agent-one-container.v1beta1.json"),
    include_str!("../../tests/fixtures/webhook/agent-patch-upgrade.v1.json"),
    include_str!("../../tests/fixtures/webhook/configmap-create.v1.json"),
];
const AGENT: &str = include_str!("../../tests/fixtures/agent-daemonset.yaml");
const IPAM: &str = include_str!("../../tests/fixtures/ipam-deployment.yaml");

const REGISTRY: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni";
/// Names the default configuration guards, so edits hit guarded objects often.
const NAMES: [&str; 6] = [
    "cce-cni-node-agent",
    "install-cni-binary",
    "cce-eni-ipam",
    "kube-system",
    "cce-ip-masq-agent",
    "helm-operator",
];

struct Fixtures {
    reviews: Vec<Value>,
    default_config: Config,
    exempting_config: Config,
    siblings: ManifestSiblings,
}

static FIXTURES: LazyLock<Fixtures> = LazyLock::new(|| {
    let default_config = Config::default();
    let mut exempting_config = Config::default();
    exempting_config.exempt.users.insert("helm-operator".into());
    exempting_config
        .exempt
        .groups
        .insert("system:masters".into());
    let mut siblings = ManifestSiblings::default();
    for (name, text) in [("agent", AGENT), ("ipam", IPAM)] {
        let manifest = Manifest::parse(name, text.as_bytes()).expect("fixture manifest");
        siblings
            .add(&manifest, &default_config)
            .expect("fixture sibling");
    }
    Fixtures {
        reviews: REVIEWS
            .iter()
            .map(|r| serde_json::from_str(r).expect("fixture review"))
            .collect(),
        default_config,
        exempting_config,
        siblings,
    }
});

#[derive(Arbitrary, Debug)]
struct Input {
    base: u8,
    exempting_config: bool,
    with_siblings: bool,
    edits: Vec<Edit>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Side {
    Object,
    OldObject,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum List {
    Containers,
    InitContainers,
}

#[derive(Arbitrary, Debug)]
enum Edit {
    Image {
        side: Side,
        list: List,
        index: u8,
        image: Image,
    },
    ContainerName {
        side: Side,
        list: List,
        index: u8,
        name: Text,
    },
    RemoveContainer {
        side: Side,
        list: List,
        index: u8,
    },
    AddContainer {
        side: Side,
        list: List,
        name: Text,
        image: Image,
    },
    CopyObjectToOld,
    Operation(Text),
    Kind(Text),
    Group(Text),
    RequestName(Text),
    ObjectName {
        side: Side,
        name: Text,
    },
    Namespace(Text),
    SubResource(Option<Text>),
    User(Text),
    Groups(Vec<Text>),
    ApiVersion(Text),
    Set {
        path: Vec<Step>,
        value: Leaf,
    },
    Remove {
        path: Vec<Step>,
    },
}

#[derive(Arbitrary, Debug)]
enum Text {
    Known(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Image {
    /// The guarded repository with a version-like tag: the patch and sibling rules engage.
    Version {
        v_prefix: bool,
        major: u8,
        minor: u8,
        patch: u8,
        pre: Option<String>,
    },
    Tagged {
        repository: Text,
        tag: String,
    },
    Digest {
        tag: Option<String>,
        hex: [u8; 32],
    },
    Raw(String),
    NotAString(Leaf),
}

#[derive(Arbitrary, Debug)]
enum Step {
    Key(Text),
    Index(u8),
}

#[derive(Arbitrary, Debug)]
enum Leaf {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    EmptyObject,
    EmptyArray,
}

/// Fields the decoders read, offered to path edits next to arbitrary keys.
const KEYS: [&str; 14] = [
    "request",
    "object",
    "oldObject",
    "spec",
    "template",
    "containers",
    "initContainers",
    "metadata",
    "name",
    "image",
    "userInfo",
    "uid",
    "kind",
    "dryRun",
];

impl Text {
    fn to_string(&self, known: &[&str]) -> String {
        match self {
            Text::Known(i) => known[usize::from(*i) % known.len()].to_owned(),
            Text::Raw(s) => s.clone(),
        }
    }
}

impl Leaf {
    fn to_value(&self) -> Value {
        match self {
            Leaf::Null => Value::Null,
            Leaf::Bool(b) => json!(b),
            Leaf::Int(i) => json!(i),
            Leaf::Float(f) => json!(f),
            Leaf::Str(s) => json!(s),
            Leaf::EmptyObject => json!({}),
            Leaf::EmptyArray => json!([]),
        }
    }
}

impl Image {
    fn to_value(&self) -> Value {
        match self {
            Image::Version {
                v_prefix,
                major,
                minor,
                patch,
                pre,
            } => {
                let v = if *v_prefix { "v" } else { "" };
                let pre = pre.as_deref().map(|p| format!("-{p}")).unwrap_or_default();
                json!(format!(
                    "{REGISTRY}:{v}{}.{}.{}{pre}",
                    major % 3,
                    minor % 12,
                    patch
                ))
            }
            Image::Tagged { repository, tag } => {
                let repository =
                    repository.to_string(&[REGISTRY, "cce-cni", "r.example.com/cce/cce-cni"]);
                json!(format!("{repository}:{tag}"))
            }
            Image::Digest { tag, hex } => {
                let hex: String = hex.iter().map(|b| format!("{b:02x}")).collect();
                let tag = tag.as_deref().map(|t| format!(":{t}")).unwrap_or_default();
                json!(format!("{REGISTRY}{tag}@sha256:{hex}"))
            }
            Image::Raw(s) => json!(s),
            Image::NotAString(leaf) => leaf.to_value(),
        }
    }
}

fn side_key(side: Side) -> &'static str {
    match side {
        Side::Object => "object",
        Side::OldObject => "oldObject",
    }
}

fn list_key(list: List) -> &'static str {
    match list {
        List::Containers => "containers",
        List::InitContainers => "initContainers",
    }
}

fn container_list(review: &mut Value, side: Side, list: List) -> Option<&mut Vec<Value>> {
    review
        .get_mut("request")?
        .get_mut(side_key(side))?
        .pointer_mut("/spec/template/spec")?
        .get_mut(list_key(list))?
        .as_array_mut()
}

fn container(review: &mut Value, side: Side, list: List, index: u8) -> Option<&mut Value> {
    let list = container_list(review, side, list)?;
    let len = list.len();
    list.get_mut(usize::from(index) % len.max(1))
}

fn request(review: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    review.get_mut("request")?.as_object_mut()
}

/// Sets `value` at `path`, creating objects on the way; indices address existing items.
fn set_path(mut at: &mut Value, path: &[Step], value: Value) {
    for step in path {
        at = match step {
            Step::Key(key) => {
                if !at.is_object() {
                    *at = json!({});
                }
                at.as_object_mut()
                    .expect("just made an object")
                    .entry(key.to_string(&KEYS))
                    .or_insert(Value::Null)
            }
            Step::Index(i) => match at.as_array_mut() {
                Some(items) if !items.is_empty() => {
                    let len = items.len();
                    &mut items[usize::from(*i) % len]
                }
                _ => return,
            },
        };
    }
    *at = value;
}

fn remove_path(mut at: &mut Value, path: &[Step]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    for step in parents {
        let next = match step {
            Step::Key(key) => at.get_mut(key.to_string(&KEYS)),
            Step::Index(i) => {
                let len = at.as_array().map_or(0, Vec::len);
                at.get_mut(usize::from(*i) % len.max(1))
            }
        };
        match next {
            Some(next) => at = next,
            None => return,
        }
    }
    match (last, at) {
        (Step::Key(key), Value::Object(map)) => {
            map.remove(&key.to_string(&KEYS));
        }
        (Step::Index(i), Value::Array(items)) if !items.is_empty() => {
            let len = items.len();
            items.remove(usize::from(*i) % len);
        }
        _ => {}
    }
}

/// Sets a key where there is an object; an earlier edit may have put anything there.
fn set_key(at: &mut Value, key: &str, value: Value) {
    if let Some(map) = at.as_object_mut() {
        map.insert(key.to_owned(), value);
    }
}

fn apply(review: &mut Value, edit: &Edit) {
    let set_request = |review: &mut Value, key: &str, value: Value| {
        if let Some(request) = request(review) {
            request.insert(key.to_owned(), value);
        }
    };
    match edit {
        Edit::Image {
            side,
            list,
            index,
            image,
        } => {
            if let Some(c) = container(review, *side, *list, *index).and_then(Value::as_object_mut)
            {
                c.insert("image".into(), image.to_value());
            }
        }
        Edit::ContainerName {
            side,
            list,
            index,
            name,
        } => {
            if let Some(c) = container(review, *side, *list, *index).and_then(Value::as_object_mut)
            {
                c.insert("name".into(), json!(name.to_string(&NAMES)));
            }
        }
        Edit::RemoveContainer { side, list, index } => {
            if let Some(items) = container_list(review, *side, *list)
                && !items.is_empty()
            {
                let len = items.len();
                items.remove(usize::from(*index) % len);
            }
        }
        Edit::AddContainer {
            side,
            list,
            name,
            image,
        } => {
            if let Some(pod) = review
                .get_mut("request")
                .and_then(|r| r.get_mut(side_key(*side)))
                .and_then(|o| o.pointer_mut("/spec/template/spec"))
                .and_then(Value::as_object_mut)
            {
                let entry = pod.entry(list_key(*list)).or_insert_with(|| json!([]));
                if let Some(items) = entry.as_array_mut() {
                    items.push(json!({"name": name.to_string(&NAMES), "image": image.to_value()}));
                }
            }
        }
        Edit::CopyObjectToOld => {
            if let Some(request) = request(review)
                && let Some(object) = request.get("object").cloned()
            {
                request.insert("oldObject".into(), object);
            }
        }
        Edit::Operation(op) => set_request(
            review,
            "operation",
            json!(op.to_string(&["CREATE", "UPDATE", "DELETE", "CONNECT"])),
        ),
        Edit::Kind(kind) => {
            let kind = kind.to_string(&["DaemonSet", "Deployment", "ConfigMap", "Pod"]);
            if let Some(k) = request(review).and_then(|r| r.get_mut("kind")) {
                set_key(k, "kind", json!(kind));
            }
        }
        Edit::Group(group) => {
            let group = group.to_string(&["apps", "", "extensions"]);
            if let Some(k) = request(review).and_then(|r| r.get_mut("kind")) {
                set_key(k, "group", json!(group));
            }
        }
        Edit::RequestName(name) => set_request(review, "name", json!(name.to_string(&NAMES))),
        Edit::ObjectName { side, name } => {
            if let Some(meta) = review
                .get_mut("request")
                .and_then(|r| r.get_mut(side_key(*side)))
                .and_then(|o| o.get_mut("metadata"))
                .and_then(Value::as_object_mut)
            {
                meta.insert("name".into(), json!(name.to_string(&NAMES)));
            }
        }
        Edit::Namespace(ns) => set_request(review, "namespace", json!(ns.to_string(&NAMES))),
        Edit::SubResource(sub) => set_request(
            review,
            "subResource",
            sub.as_ref()
                .map_or(Value::Null, |s| json!(s.to_string(&["status", "scale"]))),
        ),
        Edit::User(user) => {
            if let Some(info) = request(review).and_then(|r| r.get_mut("userInfo")) {
                set_key(info, "username", json!(user.to_string(&NAMES)));
            }
        }
        Edit::Groups(groups) => {
            let groups: Vec<String> = groups
                .iter()
                .map(|g| g.to_string(&["system:masters", "system:authenticated"]))
                .collect();
            if let Some(info) = request(review).and_then(|r| r.get_mut("userInfo")) {
                set_key(info, "groups", json!(groups));
            }
        }
        Edit::ApiVersion(v) => {
            let version = v.to_string(&["admission.k8s.io/v1", "admission.k8s.io/v1beta1"]);
            set_key(review, "apiVersion", json!(version));
        }
        Edit::Set { path, value } => set_path(review, path, value.to_value()),
        Edit::Remove { path } => remove_path(review, path),
    }
}

fuzz_target!(|input: Input| {
    let fixtures = &*FIXTURES;
    let mut body = fixtures.reviews[usize::from(input.base) % fixtures.reviews.len()].clone();
    for edit in input.edits.iter().take(16) {
        apply(&mut body, edit);
    }
    let Ok(bytes) = serde_json::to_vec(&body) else {
        return;
    };
    let config = if input.exempting_config {
        &fixtures.exempting_config
    } else {
        &fixtures.default_config
    };
    let siblings: &dyn SiblingLookup = if input.with_siblings {
        &fixtures.siblings
    } else {
        &NoSiblings
    };
    let outcome = review(&bytes, config, siblings);
    let answer: Value = serde_json::from_slice(&outcome.body).expect("the answer is JSON");
    let again = review(&bytes, config, siblings);
    assert_eq!(
        again.body, outcome.body,
        "the same review answered twice differently"
    );
    if outcome.http_status != 200 {
        assert!(answer["error"].is_string());
        return;
    }
    let decision = outcome.decision.as_ref().expect("a 200 carries a decision");
    assert_eq!(
        answer["response"]["allowed"].as_bool(),
        Some(decision.allowed())
    );
    if outcome.error.is_none() {
        judge_as_check_would(&body, config, siblings, decision.verdict);
    }
});

/// The same request judged from the objects as `serde_json::Value`s, through the pod-template
/// reader of the offline `check`: both paths must reach the same verdict.
fn judge_as_check_would(
    body: &Value,
    config: &Config,
    siblings: &dyn SiblingLookup,
    verdict: cce_cni_guard::policy::Verdict,
) {
    let request = &body["request"];
    let template = |key: &str| {
        request
            .get(key)
            .filter(|o| !o.is_null())
            .map(PodTemplateImages::from_workload)
    };
    let (object, old_object) = (template("object"), template("oldObject"));
    let labels = |key: &str| request.get(key).filter(|o| !o.is_null()).map(object_labels);
    let (labels, old_labels) = (labels("object"), labels("oldObject"));
    let str_at = |v: &Value, pointer: &str| {
        v.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut name = str_at(request, "/name");
    if name.is_empty() {
        name = str_at(request, "/object/metadata/name");
    }
    let user = UserIdentity {
        username: str_at(request, "/userInfo/username"),
        groups: request
            .pointer("/userInfo/groups")
            .and_then(Value::as_array)
            .map(|g| {
                g.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    };
    let operation = match request["operation"].as_str() {
        Some("CREATE") => Operation::Create,
        Some("UPDATE") => Operation::Update,
        Some("DELETE") => Operation::Delete,
        _ => Operation::Connect,
    };
    let (group, kind) = (
        str_at(request, "/kind/group"),
        str_at(request, "/kind/kind"),
    );
    let namespace = str_at(request, "/namespace");
    let sub_resource = request["subResource"].as_str();
    let check_request = Request {
        operation,
        group: &group,
        kind: &kind,
        sub_resource,
        namespace: &namespace,
        name: &name,
        object: object.as_ref().map(Result::as_ref),
        old_object: old_object.as_ref().map(Result::as_ref),
        labels: labels.as_ref(),
        old_labels: old_labels.as_ref(),
        user: &user,
    };
    let check_decision = decide(&check_request, siblings, config);
    assert_eq!(
        check_decision.verdict, verdict,
        "webhook and check disagree: {}",
        check_decision.message
    );
}
