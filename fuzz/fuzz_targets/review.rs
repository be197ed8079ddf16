//! AdmissionReview bodies as the webhook receives them, any bytes at all: `review` never
//! panics, always answers JSON, and its HTTP status, body and decision tell one story.
#![no_main]

use cce_cni_guard::policy::{Config, NoSiblings};
use cce_cni_guard::review::review;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static CONFIG: LazyLock<Config> = LazyLock::new(Config::default);

fuzz_target!(|data: &[u8]| {
    let outcome = review(data, &CONFIG, &NoSiblings);
    let body: serde_json::Value = serde_json::from_slice(&outcome.body)
        .unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {:?}", outcome.body));
    match outcome.http_status {
        200 => {
            let decision = outcome.decision.as_ref().expect("a 200 carries a decision");
            assert_eq!(body["kind"], "AdmissionReview", "{body}");
            let response = &body["response"];
            assert_eq!(response["uid"].as_str(), Some(outcome.summary.uid.as_str()));
            assert!(
                !outcome.summary.uid.is_empty(),
                "answered a request without uid"
            );
            assert_eq!(
                response["allowed"].as_bool(),
                Some(decision.allowed()),
                "{body}"
            );
            assert_eq!(
                body["apiVersion"].as_str(),
                Some(outcome.summary.api_version.as_str())
            );
        }
        400 => {
            assert!(outcome.decision.is_none());
            assert!(body["error"].is_string(), "{body}");
        }
        other => panic!("unexpected HTTP status {other}"),
    }
});
