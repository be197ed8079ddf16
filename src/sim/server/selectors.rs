//! Label and field selectors (`?labelSelector=`, `?fieldSelector=`), as the apiserver parses them.

use serde_json::Value;

use super::super::model::Resource;

/// Why a selector could not be parsed (answered as 400 BadRequest).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SelectorError {
    #[error("unable to parse requirement: {0}")]
    Label(String),
    #[error("invalid selector: '{0}'; can't understand '{1}'")]
    Field(String, String),
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    GreaterThan(i64),
    LessThan(i64),
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn valid_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
    });
    name_ok && prefix_ok
}

fn valid_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn parse_set(text: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| SelectorError::Label(format!("{whole}: expected a set in parentheses")))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    if let Some(bad) = values.iter().find(|v| !valid_value(v)) {
        return Err(SelectorError::Label(format!(
            "invalid label value: \"{bad}\""
        )));
    }
    Ok(values)
}

fn parse_requirement(text: &str) -> Result<Requirement, SelectorError> {
    let text = text.trim();
    let bad = || SelectorError::Label(format!("found '{text}', expected: a label requirement"));
    if text.is_empty() {
        return Err(bad());
    }
    let (key, op) = if let Some(key) = text.strip_prefix('!') {
        (key.trim().to_string(), Op::DoesNotExist)
    } else if let Some((key, value)) = text.split_once("!=") {
        (
            key.trim().to_string(),
            Op::NotEquals(value.trim().to_string()),
        )
    } else if let Some((key, value)) = text.split_once("==") {
        (key.trim().to_string(), Op::Equals(value.trim().to_string()))
    } else if let Some((key, value)) = text.split_once('=') {
        (key.trim().to_string(), Op::Equals(value.trim().to_string()))
    } else if let Some((key, value)) = text.split_once('>') {
        let n = value.trim().parse().map_err(|_| bad())?;
        (key.trim().to_string(), Op::GreaterThan(n))
    } else if let Some((key, value)) = text.split_once('<') {
        let n = value.trim().parse().map_err(|_| bad())?;
        (key.trim().to_string(), Op::LessThan(n))
    } else if let Some(pos) = text.find(" notin ").or_else(|| text.find(" notin(")) {
        let (key, rest) = text.split_at(pos);
        let set = rest.trim_start().trim_start_matches("notin");
        (key.trim().to_string(), Op::NotIn(parse_set(set, text)?))
    } else if let Some(pos) = text.find(" in ").or_else(|| text.find(" in(")) {
        let (key, rest) = text.split_at(pos);
        let set = rest.trim_start().trim_start_matches("in");
        (key.trim().to_string(), Op::In(parse_set(set, text)?))
    } else {
        (text.to_string(), Op::Exists)
    };
    if !valid_key(&key) {
        return Err(SelectorError::Label(format!("invalid label key \"{key}\"")));
    }
    if let Op::Equals(v) | Op::NotEquals(v) = &op
        && !valid_value(v)
    {
        return Err(SelectorError::Label(format!(
            "invalid label value: \"{v}\""
        )));
    }
    Ok(Requirement { key, op })
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let requirements = split_top_level(text)
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<_, _>>()?;
        Ok(Self { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.requirements.iter().all(|r| match &r.op {
            Op::Equals(v) => label(&r.key) == Some(v.as_str()),
            Op::NotEquals(v) => label(&r.key) != Some(v.as_str()),
            Op::In(set) => label(&r.key).is_some_and(|l| set.iter().any(|v| v == l)),
            Op::NotIn(set) => label(&r.key).is_none_or(|l| set.iter().all(|v| v != l)),
            Op::Exists => label(&r.key).is_some(),
            Op::DoesNotExist => label(&r.key).is_none(),
            Op::GreaterThan(n) => label(&r.key)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l > *n),
            Op::LessThan(n) => label(&r.key)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l < *n),
        })
    }
}

/// A parsed field selector; only equality and inequality, as the apiserver supports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

/// The fields each resource can be selected by, beyond `metadata.name` and `metadata.namespace`.
fn extra_fields(resource: Resource) -> &'static [&'static str] {
    match resource {
        Resource::Pods => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        Resource::Events => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        Resource::Nodes => &["spec.unschedulable"],
        Resource::Namespaces => &["status.phase"],
        Resource::ReplicaSets => &["status.replicas"],
        _ => &[],
    }
}

impl FieldSelector {
    pub fn parse(text: &str, resource: Resource) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        for term in text.split(',') {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(SelectorError::Field(text.to_string(), term.to_string()));
            };
            let field = field.trim();
            if field != "metadata.name"
                && field != "metadata.namespace"
                && !extra_fields(resource).contains(&field)
            {
                return Err(SelectorError::UnsupportedField(field.to_string()));
            }
            terms.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(Self { terms })
    }

    /// The name a `metadata.name=` term pins, for a direct lookup.
    pub fn pinned_name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|(f, eq, _)| *eq && f == "metadata.name")
            .map(|(_, _, v)| v.as_str())
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(field, equal, value)| {
            let actual = field_value(object, field);
            (actual == *value) == *equal
        })
    }
}

fn field_value(object: &Value, field: &str) -> String {
    let path = if field == "source" {
        "/source/component".to_string()
    } else {
        format!("/{}", field.replace('.', "/"))
    };
    match object.pointer(&path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ if field == "spec.unschedulable" || field == "spec.hostNetwork" => "false".into(),
        _ => String::new(),
    }
}

/// Formats a `metav1.LabelSelector` the way `metav1.LabelSelectorAsSelector(...).String()` does.
pub fn format_label_selector(selector: &Value) -> String {
    let mut parts: Vec<(String, String)> = Vec::new();
    if let Some(Value::Object(labels)) = selector.get("matchLabels") {
        for (k, v) in labels {
            parts.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())));
        }
    }
    if let Some(Value::Array(exprs)) = selector.get("matchExpressions") {
        for expr in exprs {
            let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
            let mut values: Vec<&str> = expr
                .get("values")
                .and_then(Value::as_array)
                .map(|vs| vs.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            values.sort_unstable();
            let text = match expr.get("operator").and_then(Value::as_str) {
                Some("In") => format!("{key} in ({})", values.join(",")),
                Some("NotIn") => format!("{key} notin ({})", values.join(",")),
                Some("Exists") => key.to_string(),
                Some("DoesNotExist") => format!("!{key}"),
                _ => continue,
            };
            parts.push((key.to_string(), text));
        }
    }
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    parts
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labelled(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}})
    }

    #[test]
    fn equality_forms() {
        let obj = labelled(json!({"app": "cce-eni-ipam", "tier": "net"}));
        for sel in [
            "app=cce-eni-ipam",
            "app==cce-eni-ipam",
            "app=cce-eni-ipam,tier",
        ] {
            assert!(LabelSelector::parse(sel).unwrap().matches(&obj), "{sel}");
        }
        for sel in ["app!=cce-eni-ipam", "app=other", "!tier", "missing"] {
            assert!(!LabelSelector::parse(sel).unwrap().matches(&obj), "{sel}");
        }
    }

    #[test]
    fn set_forms() {
        let obj = labelled(json!({"app": "a"}));
        assert!(LabelSelector::parse("app in (a, b)").unwrap().matches(&obj));
        assert!(
            !LabelSelector::parse("app notin (a,b)")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            LabelSelector::parse("other notin (a)")
                .unwrap()
                .matches(&obj)
        );
        assert!(!LabelSelector::parse("other in (a)").unwrap().matches(&obj));
        assert!(
            LabelSelector::parse("app in (a,b),!x")
                .unwrap()
                .matches(&obj)
        );
    }

    #[test]
    fn no_labels_at_all() {
        let obj = json!({"metadata": {}});
        assert!(LabelSelector::parse("!a").unwrap().matches(&obj));
        assert!(LabelSelector::parse("a!=b").unwrap().matches(&obj));
        assert!(!LabelSelector::parse("a").unwrap().matches(&obj));
        assert!(LabelSelector::parse("").unwrap().matches(&obj));
    }

    #[test]
    fn bad_selectors_are_errors() {
        for sel in ["a in b", "=x", "app=bad value!", "a,,b"] {
            assert!(LabelSelector::parse(sel).is_err(), "{sel}");
        }
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "kube-system"},
            "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let sel =
            FieldSelector::parse("spec.nodeName=n1,status.phase!=Pending", Resource::Pods).unwrap();
        assert!(sel.matches(&pod));
        let sel = FieldSelector::parse("metadata.name==q", Resource::Pods).unwrap();
        assert!(!sel.matches(&pod));
        assert_eq!(sel.pinned_name(), Some("q"));
        assert_eq!(
            FieldSelector::parse("spec.nodeName=n1", Resource::ConfigMaps),
            Err(SelectorError::UnsupportedField("spec.nodeName".into()))
        );
        assert!(FieldSelector::parse("nonsense", Resource::Pods).is_err());
    }

    #[test]
    fn formats_selectors_like_apimachinery() {
        let sel = json!({"matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [{"key": "c", "operator": "In", "values": ["y", "x"]}]});
        assert_eq!(format_label_selector(&sel), "a=1,b=2,c in (x,y)");
        assert_eq!(
            format_label_selector(&json!({"matchLabels": {"app": "cce-eni-ipam"}})),
            "app=cce-eni-ipam"
        );
    }
}
