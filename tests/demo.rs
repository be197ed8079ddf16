//! `cce-cni-guard demo` as a newcomer runs it: exit 0, a transcript with refusals, the SOP's
//! command accepted, the upgrade with the stuck-ipam remedy, and a healthy final status.

use std::process::Command;

fn demo(extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cce-cni-guard"))
        .arg("demo")
        .args(extra)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[track_caller]
fn assert_transcript(code: i32, text: &str) {
    assert_eq!(code, 0, "{text}");
    assert!(text.matches("denied the request").count() >= 2, "{text}");
    for proved in [
        "-> proved: a change from 1.9 to 1.10 by image swap is refused",
        "-> proved: setting cce-cni-node-agent without install-cni-binary is refused",
        "-> proved: the SOP's command that sets both containers is accepted",
        "-> proved: the upgrade succeeded",
        "-> proved: new ipam pods could not be scheduled",
        "-> proved: both workloads run v1.9.4",
    ] {
        assert!(
            text.contains(proved),
            "the transcript lacks {proved:?}:\n{text}"
        );
    }
    assert!(!text.contains("NOT as expected"), "{text}");
    assert!(text.contains("HEALTHY"), "{text}");
}

#[test]
fn demo_through_kubectl() {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "kubectl is required when CI=true"
        );
        eprintln!("\n*** SKIPPING the kubectl demo: kubectl is not on the PATH ***\n");
        return;
    }
    let (code, text) = demo(&[]);
    assert!(
        text.contains("Commands below run through the real kubectl."),
        "{text}"
    );
    assert!(
        text.contains("error: failed to patch image update to pod template: admission webhook"),
        "{text}"
    );
    assert_transcript(code, &text);
}

#[test]
fn demo_through_the_built_in_client() {
    let (code, text) = demo(&["--no-kubectl"]);
    assert!(
        text.contains("sent by cce-cni-guard's own client instead"),
        "{text}"
    );
    assert_transcript(code, &text);
}
