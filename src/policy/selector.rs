//! Label selectors as the apiserver evaluates a webhook's `objectSelector`
//! (`metav1.LabelSelector`: `matchLabels` and `matchExpressions`, all ANDed).
//!
//! On clusters without matchConditions the webhook entry of a workload selects it by labels.
//! An update that takes the labels away is still sent to the guard (the old object matches),
//! but every later one is not: the policy refuses it (rule `labels-kept`), and needs the
//! selector to know which labels matter.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// An object's `metadata.labels`.
pub type Labels = BTreeMap<String, String>;

/// `metadata.labels` of an object in JSON.
pub fn object_labels(object: &serde_json::Value) -> Labels {
    object
        .pointer("/metadata/labels")
        .map(labels_from_json)
        .unwrap_or_default()
}

/// A `metadata.labels` value. Entries that are not strings, or a value that is not a map
/// (which the apiserver would never store), are left out: they cannot satisfy a selector.
/// The webhook and `check` read labels this same way, so they judge alike.
pub fn labels_from_json(labels: &serde_json::Value) -> Labels {
    labels
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

/// The operators of a `matchExpressions` requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl SelectorRequirement {
    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for SelectorRequirement {
    /// In the apiserver's selector syntax: `k in (a,b)`, `k notin (a)`, `k`, `!k`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.operator {
            SelectorOperator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            SelectorOperator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
            SelectorOperator::Exists => f.write_str(&self.key),
            SelectorOperator::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

/// A label selector. The empty selector matches every object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<SelectorRequirement>,
}

impl LabelSelector {
    pub fn matching_labels(labels: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            match_labels: labels.into_iter().collect(),
            match_expressions: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Called on every guarded update: decides without formatting anything.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// The requirements `labels` fail, in the apiserver's syntax (`k8s-app=cce-cni-node-agent`).
    pub fn unmet(&self, labels: &Labels) -> Vec<String> {
        self.requirements(Some(labels))
    }

    /// Every requirement in the apiserver's syntax, or only those `unmet_by` fails.
    fn requirements(&self, unmet_by: Option<&Labels>) -> Vec<String> {
        let pairs = self
            .match_labels
            .iter()
            .filter(|(k, v)| unmet_by.is_none_or(|l| l.get(*k) != Some(*v)))
            .map(|(k, v)| format!("{k}={v}"));
        let expressions = self
            .match_expressions
            .iter()
            .filter(|r| unmet_by.is_none_or(|l| !r.matches(l)))
            .map(ToString::to_string);
        pairs.chain(expressions).collect()
    }

    /// What the apiserver's validation of a LabelSelector refuses, so that a configuration
    /// the webhook registration could not carry is refused here too.
    pub fn validate(&self) -> Result<(), String> {
        for key in self
            .match_labels
            .keys()
            .chain(self.match_expressions.iter().map(|r| &r.key))
        {
            if key.is_empty() {
                return Err("a label key is empty".into());
            }
        }
        for r in &self.match_expressions {
            let needs_values = matches!(r.operator, SelectorOperator::In | SelectorOperator::NotIn);
            if needs_values == r.values.is_empty() {
                return Err(format!(
                    "matchExpressions {:?} {:?}: values must be {} for this operator",
                    r.key,
                    r.operator,
                    if needs_values { "non-empty" } else { "empty" }
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = self.requirements(None);
        if parts.is_empty() {
            f.write_str("(every object)")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, operator: SelectorOperator, values: &[&str]) -> SelectorRequirement {
        SelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    #[test]
    fn reads_labels_from_an_object() {
        let object = serde_json::json!({"metadata": {"labels": {"a": "b", "n": 3}}});
        assert_eq!(object_labels(&object), labels(&[("a", "b")]));
        assert!(object_labels(&serde_json::json!({"metadata": {}})).is_empty());
        assert!(object_labels(&serde_json::json!([])).is_empty());
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = LabelSelector::default();
        assert!(s.matches(&Labels::new()));
        assert!(s.matches(&labels(&[("a", "b")])));
        assert_eq!(s.to_string(), "(every object)");
    }

    #[test]
    fn match_labels_need_key_and_value() {
        let s = LabelSelector::matching_labels([("k8s-app".into(), "cce-cni-node-agent".into())]);
        assert!(s.matches(&labels(&[("k8s-app", "cce-cni-node-agent"), ("x", "y")])));
        assert_eq!(
            s.unmet(&labels(&[("k8s-app", "other")])),
            ["k8s-app=cce-cni-node-agent"]
        );
        assert!(!s.matches(&Labels::new()));
    }

    #[test]
    fn expressions_follow_the_apiserver() {
        use SelectorOperator::*;
        let none = Labels::new();
        let a = labels(&[("tier", "net")]);
        let b = labels(&[("tier", "web")]);
        let cases = [
            (expr("tier", In, &["net", "cni"]), [false, true, false]),
            (expr("tier", NotIn, &["net"]), [true, false, true]),
            (expr("tier", Exists, &[]), [false, true, true]),
            (expr("tier", DoesNotExist, &[]), [true, false, false]),
        ];
        for (requirement, expected) in cases {
            let s = LabelSelector {
                match_labels: Labels::new(),
                match_expressions: vec![requirement.clone()],
            };
            let got = [s.matches(&none), s.matches(&a), s.matches(&b)];
            assert_eq!(got, expected, "{requirement}");
        }
    }

    #[test]
    fn requirements_are_anded_and_named_when_unmet() {
        let s = LabelSelector {
            match_labels: labels(&[("k8s-app", "cce-cni-node-agent")]),
            match_expressions: vec![expr("tier", SelectorOperator::In, &["net"])],
        };
        assert!(s.matches(&labels(&[
            ("k8s-app", "cce-cni-node-agent"),
            ("tier", "net")
        ])));
        assert_eq!(
            s.unmet(&labels(&[("tier", "web")])),
            ["k8s-app=cce-cni-node-agent", "tier in (net)"]
        );
        assert_eq!(s.to_string(), "k8s-app=cce-cni-node-agent,tier in (net)");
    }

    #[test]
    fn validation_refuses_what_the_apiserver_refuses() {
        let bad = [
            LabelSelector::matching_labels([(String::new(), "v".into())]),
            LabelSelector {
                match_labels: Labels::new(),
                match_expressions: vec![expr("k", SelectorOperator::In, &[])],
            },
            LabelSelector {
                match_labels: Labels::new(),
                match_expressions: vec![expr("k", SelectorOperator::Exists, &["v"])],
            },
        ];
        for s in bad {
            assert!(s.validate().is_err(), "{s:?}");
        }
        assert!(
            LabelSelector::matching_labels([("k".into(), "v".into())])
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn reads_the_chart_shape() {
        let s: LabelSelector = serde_json::from_str(
            r#"{"matchLabels": {"k8s-app": "cce-cni-node-agent"},
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}"#,
        )
        .unwrap();
        assert_eq!(s.to_string(), "k8s-app=cce-cni-node-agent,tier notin (x)");
        assert!(serde_json::from_str::<LabelSelector>(r#"{"matchLabel": {}}"#).is_err());
    }
}
