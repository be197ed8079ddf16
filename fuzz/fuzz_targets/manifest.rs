//! The offline `check`: manifests as YAML or JSON, any bytes. Input is the new manifest, or
//! `OLD NUL NEW` for an update. Parsing never panics; a parsed manifest printed as JSON
//! reads back with the same identity and pod template; the change is judged without panic.
#![no_main]

use cce_cni_guard::manifest::Manifest;
use cce_cni_guard::policy::{
    Config, NoSiblings, Operation, Request, UserIdentity, decide, object_labels,
};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static CONFIG: LazyLock<Config> = LazyLock::new(Config::default);

fuzz_target!(|data: &[u8]| {
    let (old, new) = match data.iter().position(|&b| b == 0) {
        Some(split) => (Some(&data[..split]), &data[split + 1..]),
        None => (None, data),
    };
    let Ok(new) = Manifest::parse("new", new) else {
        return;
    };
    check_json_round_trip(&new);
    let old = match old.map(|bytes| Manifest::parse("old", bytes)) {
        Some(Ok(old)) => {
            check_json_round_trip(&old);
            Some(old)
        }
        Some(Err(_)) => return,
        None => None,
    };
    let namespace = new.namespace.clone().unwrap_or_else(|| "default".into());
    let new_template = new.template();
    let old_template = old.as_ref().map(Manifest::template);
    // `check` hands the policy the template error of a manifest it could not read.
    let new_error = new_template.as_ref().err().map(template_error);
    let old_error = old_template
        .as_ref()
        .and_then(|t| t.as_ref().err())
        .map(template_error);
    let user = UserIdentity::default();
    let labels = object_labels(&new.object);
    let old_labels = old.as_ref().map(|o| object_labels(&o.object));
    let request = Request {
        operation: if old.is_some() {
            Operation::Update
        } else {
            Operation::Create
        },
        group: new.group(),
        kind: &new.kind,
        sub_resource: None,
        namespace: &namespace,
        name: &new.name,
        object: Some(match &new_template {
            Ok(t) => Ok(t),
            Err(_) => Err(new_error.as_ref().expect("set for an error")),
        }),
        old_object: old_template.as_ref().map(|t| match t {
            Ok(t) => Ok(t),
            Err(_) => Err(old_error.as_ref().expect("set for an error")),
        }),
        labels: Some(&labels),
        old_labels: old_labels.as_ref(),
        user: &user,
    };
    let decision = decide(&request, &NoSiblings, &CONFIG);
    if !decision.allowed() {
        assert!(!decision.message.is_empty(), "a denial without a message");
    }
});

fn template_error(
    e: &cce_cni_guard::manifest::ManifestError,
) -> cce_cni_guard::policy::TemplateError {
    match e {
        cce_cni_guard::manifest::ManifestError::Template { error, .. } => error.clone(),
        other => cce_cni_guard::policy::TemplateError::Unreadable(other.to_string()),
    }
}

/// YAML and JSON are two spellings of one object: converting must not change what the
/// guard sees.
fn check_json_round_trip(manifest: &Manifest) {
    let json = serde_json::to_vec(&manifest.object).expect("a parsed object prints as JSON");
    let again = Manifest::parse("again", &json)
        .unwrap_or_else(|e| panic!("the JSON form does not parse: {e}"));
    assert_eq!(
        (
            &again.api_version,
            &again.kind,
            &again.namespace,
            &again.name
        ),
        (
            &manifest.api_version,
            &manifest.kind,
            &manifest.namespace,
            &manifest.name
        )
    );
    assert_eq!(
        again.template().map_err(|e| template_error(&e)),
        manifest.template().map_err(|e| template_error(&e))
    );
}
