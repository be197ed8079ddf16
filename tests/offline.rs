//! The offline commands through the real binary: `check` and `review`, exit codes 0/1/2, and
//! objects shaped by the real kubectl (`kubectl set image --local`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

const R: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cce-cni-guard"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn yaml(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn with_images(mut object: Value, agent: &str, install: &str) -> Value {
    object["spec"]["template"]["spec"]["containers"][0]["image"] = json!(agent);
    object["spec"]["template"]["spec"]["initContainers"][0]["image"] = json!(install);
    object
}

fn write_json(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path
}

fn admission_review(api_version: &str, operation: &str, old: Option<&Value>, new: &Value) -> Value {
    let kind = new["kind"].as_str().unwrap();
    let resource = if kind == "DaemonSet" {
        "daemonsets"
    } else {
        "deployments"
    };
    json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "5f5e0c1e-7b1a-4b59-9a52-4d1f3c3a9b0e",
            "kind": {"group": "apps", "version": "v1", "kind": kind},
            "resource": {"group": "apps", "version": "v1", "resource": resource},
            "requestKind": {"group": "apps", "version": "v1", "kind": kind},
            "requestResource": {"group": "apps", "version": "v1", "resource": resource},
            "name": new["metadata"]["name"],
            "namespace": "kube-system",
            "operation": operation,
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": new,
            "oldObject": old,
            "dryRun": false,
            "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-set"}
        }
    })
}

#[test]
fn check_allows_the_sop_command_and_refuses_a_cross_minor_typo() {
    let dir = tempfile::tempdir().unwrap();
    let old = yaml("agent-daemonset.yaml");
    let good = write_json(
        dir.path(),
        "good.json",
        &with_images(old.clone(), &format!("{R}:v1.9.4"), &format!("{R}:v1.9.4")),
    );
    let bad = write_json(
        dir.path(),
        "bad.json",
        &with_images(
            old.clone(),
            &format!("{R}:v1.10.4"),
            &format!("{R}:v1.10.4"),
        ),
    );
    let old_path = fixture("agent-daemonset.yaml");
    let sibling = fixture("ipam-deployment.yaml");

    let out = run(
        bin()
            .args(["check", "--old"])
            .arg(&old_path)
            .arg("--new")
            .arg(&good)
            .arg("--sibling")
            .arg(&sibling),
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("ALLOWED  DaemonSet kube-system/cce-cni-node-agent"),
        "{stdout}"
    );
    assert!(stdout.contains("bring it to v1.9.4 next"), "{stdout}");

    let out = run(
        bin()
            .args(["check", "--old"])
            .arg(&old_path)
            .arg("--new")
            .arg(&bad),
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("moves the minor version (1.9 → 1.10)"),
        "{stdout}"
    );

    let out = run(
        bin()
            .args(["check", "-o", "json", "--old"])
            .arg(&old_path)
            .arg("--new")
            .arg(&bad),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["verdict"], "denied");
    assert_eq!(json["rules"][0], "patch-only");
    assert_eq!(json["violations"].as_array().unwrap().len(), 2);
}

#[test]
fn check_gives_exit_2_on_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "apiVersion: apps/v1\nkind: [DaemonSet\n").unwrap();
    let other = write_json(dir.path(), "other.json", &{
        let mut v = yaml("agent-daemonset.yaml");
        v["metadata"]["name"] = json!("another");
        v
    });
    for args in [
        vec!["check".into(), "--new".into(), broken.display().to_string()],
        vec![
            "check".into(),
            "--new".into(),
            "/nonexistent/ds.yaml".into(),
        ],
        vec![
            "check".into(),
            "--old".into(),
            fixture("agent-daemonset.yaml").display().to_string(),
            "--new".into(),
            other.display().to_string(),
        ],
        vec![
            "check".into(),
            "--new".into(),
            fixture("agent-daemonset.yaml").display().to_string(),
            "--sibling".into(),
            other.display().to_string(),
        ],
    ] {
        let out = run(bin().args(&args), None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn review_answers_in_the_request_version_with_exit_codes() {
    let old = yaml("agent-daemonset.yaml");
    let one_container = with_images(old.clone(), &format!("{R}:v1.9.4"), &format!("{R}:v1.9.3"));
    let both = with_images(old.clone(), &format!("{R}:v1.9.4"), &format!("{R}:v1.9.4"));
    for version in ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"] {
        let body = serde_json::to_vec(&admission_review(
            version,
            "UPDATE",
            Some(&old),
            &one_container,
        ))
        .unwrap();
        let out = run(bin().arg("review"), Some(&body));
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let response: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(response["apiVersion"], version);
        assert_eq!(response["kind"], "AdmissionReview");
        assert_eq!(
            response["response"]["uid"],
            "5f5e0c1e-7b1a-4b59-9a52-4d1f3c3a9b0e"
        );
        assert_eq!(response["response"]["allowed"], false);
        assert_eq!(response["response"]["status"]["code"], 403);
        assert_eq!(response["response"]["status"]["reason"], "Forbidden");
        let message = response["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message
                .contains("install-cni-binary=registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4"),
            "{message}"
        );

        let body =
            serde_json::to_vec(&admission_review(version, "UPDATE", Some(&old), &both)).unwrap();
        let out = run(bin().arg("review"), Some(&body));
        assert_eq!(out.status.code(), Some(0));
        let response: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(response["response"]["allowed"], true);
        assert_eq!(response["apiVersion"], version);
    }
}

/// `review` (the webhook's reader) and `check` (the manifest reader) judge the labels the
/// pre-1.30 webhook entry selects by alike, junk values included.
#[test]
fn review_and_check_agree_on_the_selected_labels() {
    let dir = tempfile::tempdir().unwrap();
    let old = yaml("agent-daemonset.yaml");
    let old_file = write_json(dir.path(), "old.json", &old);
    let relabel = |labels: Value| {
        let mut new = old.clone();
        new["metadata"]["labels"] = labels;
        new
    };
    let cases = [
        (
            "label kept, one added",
            relabel(json!({"k8s-app": "cce-cni-node-agent", "team": "net"})),
            0,
        ),
        ("label removed", relabel(json!({})), 1),
        ("label renamed", relabel(json!({"k8s-app": "agent"})), 1),
        (
            "label value not a string",
            relabel(json!({"k8s-app": 7})),
            1,
        ),
        ("labels not a map", relabel(json!("k8s-app")), 1),
    ];
    for (what, new, expected) in cases {
        let new_file = write_json(dir.path(), "new.json", &new);
        let check = run(
            bin()
                .args(["check", "-o", "json", "--old"])
                .arg(&old_file)
                .arg("--new")
                .arg(&new_file),
            None,
        );
        let body = serde_json::to_vec(&admission_review(
            "admission.k8s.io/v1",
            "UPDATE",
            Some(&old),
            &new,
        ))
        .unwrap();
        let review = run(bin().arg("review"), Some(&body));
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert_eq!(
            check.status.code(),
            Some(expected),
            "check, {what}: {stderr}"
        );
        assert_eq!(review.status.code(), Some(expected), "review, {what}");
        if expected == 1 {
            let verdict: Value = serde_json::from_slice(&check.stdout).unwrap();
            assert_eq!(verdict["rules"], json!(["labels-kept"]), "{what}");
            let response: Value = serde_json::from_slice(&review.stdout).unwrap();
            let message = response["response"]["status"]["message"].as_str().unwrap();
            assert!(message.contains("[rule labels-kept:"), "{what}: {message}");
        }
    }
}

#[test]
fn review_uses_the_sibling_manifest_for_rule_3() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = yaml("ipam-deployment.yaml");
    let create = admission_review(
        "admission.k8s.io/v1",
        "CREATE",
        None,
        &with_images(
            yaml("agent-daemonset.yaml"),
            &format!("{R}:v1.10.0"),
            &format!("{R}:v1.10.0"),
        ),
    );
    let file = write_json(dir.path(), "review.json", &create);
    let out = run(bin().arg("review").arg(&file), None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "without a sibling rule 3 is skipped"
    );
    let sibling = write_json(dir.path(), "ipam.json", &ipam);
    let out = run(
        bin()
            .arg("review")
            .arg(&file)
            .arg("--sibling")
            .arg(&sibling),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let response: Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = response["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("sibling Deployment kube-system/cce-eni-ipam"),
        "{message}"
    );
}

#[test]
fn review_refuses_what_is_not_an_admission_review() {
    for body in [
        &b"{not json"[..],
        br#"{"apiVersion":"v1","kind":"ConfigMap"}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""}}"#,
        b"",
    ] {
        let out = run(bin().arg("review"), Some(body));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
}

#[test]
fn a_guarded_object_that_cannot_be_decoded_is_denied_with_the_reason() {
    let mut review = admission_review(
        "admission.k8s.io/v1",
        "UPDATE",
        None,
        &yaml("agent-daemonset.yaml"),
    );
    review["request"]["object"]["spec"]["template"]["spec"]["containers"] = json!({"oops": true});
    review["request"]["oldObject"] = yaml("agent-daemonset.yaml");
    let out = run(
        bin().arg("review"),
        Some(&serde_json::to_vec(&review).unwrap()),
    );
    assert_eq!(out.status.code(), Some(1));
    let response: Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = response["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "request.object.spec.template.spec.containers: invalid type: map, expected a sequence"
        ),
        "{message}"
    );

    // metadata that does not decode at all: still answered, with the uid, and refused.
    review["request"]["object"]["metadata"] = json!("not a map");
    let out = run(
        bin().arg("review"),
        Some(&serde_json::to_vec(&review).unwrap()),
    );
    assert_eq!(out.status.code(), Some(1));
    let response: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        response["response"]["uid"],
        "5f5e0c1e-7b1a-4b59-9a52-4d1f3c3a9b0e"
    );
    assert_eq!(response["response"]["allowed"], false);
}

/// Objects as the real kubectl shapes them: `kubectl set image --local -o json`.
#[test]
fn kubectl_set_image_output_is_judged_like_the_sop_says() {
    let Some(kubectl) = kubectl() else { return };
    let old_path = fixture("agent-daemonset.yaml");
    let old = yaml("agent-daemonset.yaml");
    let set_image = |assignments: &[String]| -> Value {
        let cache = tempfile::tempdir().unwrap();
        let out = Command::new(&kubectl)
            .args(["set", "image", "--local", "-o", "json", "--cache-dir"])
            .arg(cache.path())
            .arg("-f")
            .arg(&old_path)
            .args(assignments)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let judge = |new: &Value| -> (i32, Value) {
        let body = serde_json::to_vec(&admission_review(
            "admission.k8s.io/v1",
            "UPDATE",
            Some(&old),
            new,
        ))
        .unwrap();
        let out = run(
            bin()
                .arg("review")
                .arg("--sibling")
                .arg(fixture("ipam-deployment.yaml")),
            Some(&body),
        );
        (
            out.status.code().unwrap(),
            serde_json::from_slice(&out.stdout).unwrap(),
        )
    };

    let sop = set_image(&[
        format!("cce-cni-node-agent={R}:v1.9.4"),
        format!("install-cni-binary={R}:v1.9.4"),
    ]);
    assert_eq!(
        sop["spec"]["template"]["spec"]["initContainers"][0]["image"],
        format!("{R}:v1.9.4")
    );
    assert_eq!(judge(&sop).0, 0, "the SOP's command must pass");

    let star = set_image(&[format!("*={R}:v1.9.5")]);
    assert_eq!(judge(&star).0, 0, "`*=` sets both containers");

    let (code, response) = judge(&set_image(&[format!("cce-cni-node-agent={R}:v1.9.4")]));
    assert_eq!(code, 1);
    let message = response["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "\"install-cni-binary\" runs registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.3"
        ),
        "{message}"
    );

    let (code, _) = judge(&set_image(&[format!("*={R}:v1.10.0")]));
    assert_eq!(code, 1, "cross-minor");
    let (code, _) = judge(&set_image(&[format!("*={R}-arm64:v1.9.4")]));
    assert_eq!(code, 1, "repository swap");
}

fn kubectl() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("kubectl"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "kubectl is required when CI=true"
        );
        eprintln!("SKIPPED: kubectl is not on the PATH; install it to run this test");
    }
    found
}
