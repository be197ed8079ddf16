//! Micro-benchmarks of the guard's hot path: image-reference parsing, the policy decision,
//! and a whole review (decode → decide → encode) of a ~22 KB DaemonSet UPDATE as the
//! apiserver sends it (managedFields, status, env, volumes, last-applied annotation).
//!
//! `cargo bench --bench policy` measures; `cargo test --benches` runs each once.

use std::hint::black_box;

use cce_cni_guard::policy::{
    Config, ContainerImage, ImageRef, Labels, NoSiblings, Operation, PodTemplateImages, Request,
    UserIdentity, decide,
};
use criterion::{Criterion, criterion_group, criterion_main};

const REVIEW: &str = include_str!("../tests/fixtures/review-daemonset-update.json");
const IMAGE: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni:v1.9.4";

fn template(tag: &str) -> PodTemplateImages {
    let image = format!("registry.baidubce.com/cce-plugin-pro/cce-cni:{tag}");
    PodTemplateImages {
        containers: vec![
            ContainerImage {
                name: "install-cni-binary".into(),
                image: image.clone(),
                init: true,
            },
            ContainerImage {
                name: "cce-cni-node-agent".into(),
                image,
                init: false,
            },
        ],
    }
}

fn benches(c: &mut Criterion) {
    c.bench_function("image_ref_parse", |b| {
        b.iter(|| ImageRef::parse(black_box(IMAGE)))
    });

    let config = Config::default();
    let old = template("v1.9.3");
    let new = template("v1.9.4");
    let user = UserIdentity {
        username: "kubernetes-admin".into(),
        groups: vec!["system:masters".into()],
    };
    let labels: Labels = [("k8s-app".to_owned(), "cce-cni-node-agent".to_owned())].into();
    c.bench_function("policy_decide_patch_upgrade", |b| {
        b.iter(|| {
            let request = Request {
                operation: Operation::Update,
                group: "apps",
                kind: "DaemonSet",
                sub_resource: None,
                namespace: "kube-system",
                name: "cce-cni-node-agent",
                object: Some(Ok(black_box(&new))),
                old_object: Some(Ok(black_box(&old))),
                labels: Some(black_box(&labels)),
                old_labels: Some(black_box(&labels)),
                user: &user,
            };
            decide(&request, &NoSiblings, &config)
        })
    });

    let body = REVIEW.as_bytes();
    let outcome = cce_cni_guard::review::review(body, &config, &NoSiblings);
    assert_eq!(
        outcome.http_status, 200,
        "the benchmark fixture must be a valid review"
    );
    // The floor under any serde_json-based review: every byte checked, nothing built.
    c.bench_function("json_validate_only_22kb", |b| {
        b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(body)).is_ok())
    });
    c.bench_function("whole_review_22kb", |b| {
        b.iter(|| cce_cni_guard::review::review(black_box(body), &config, &NoSiblings))
    });
}

criterion_group!(policy, benches);
criterion_main!(policy);
