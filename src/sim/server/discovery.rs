//! `/version`, legacy discovery (`/api`, `/apis`, group-versions) and aggregated discovery.

use serde_json::{Value, json};

use super::resources::{ApiResource, GROUP_VERSIONS, in_group_version};

/// The Kubernetes version the sim claims, e.g. `v1.30.4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct K8sVersion {
    pub minor: u32,
    pub patch: u32,
}

impl std::str::FromStr for K8sVersion {
    type Err = String;

    /// `1.30`, `1.30.4` or `v1.30.4`; the major must be 1.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad =
            || format!("invalid Kubernetes version {text:?}: expected 1.MINOR or 1.MINOR.PATCH");
        let trimmed = text.trim().trim_start_matches('v');
        let mut parts = trimmed.split('.');
        let major: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let minor: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let patch = match parts.next() {
            Some(p) => Some(p.parse::<u32>().map_err(|_| bad())?),
            None => None,
        };
        if major != 1 || parts.next().is_some() || minor > 99 {
            return Err(bad());
        }
        // A patch level that existed for the minors kubectl's dispatcher knows.
        let default_patch = match minor {
            27 => 16,
            28 => 15,
            29 => 14,
            30 => 4,
            31 => 9,
            32 => 5,
            33 => 1,
            _ => 0,
        };
        Ok(Self {
            minor,
            patch: patch.unwrap_or(default_patch),
        })
    }
}

impl K8sVersion {
    pub fn git_version(&self) -> String {
        format!("v1.{}.{}", self.minor, self.patch)
    }

    pub fn version_json(&self) -> Value {
        json!({
            "major": "1",
            "minor": self.minor.to_string(),
            "gitVersion": self.git_version(),
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.23.4",
            "compiler": "gc",
            "platform": "linux/amd64",
        })
    }
}

const SUB_VERBS: &[&str] = &["get", "patch", "update"];

fn resource_entries(r: &ApiResource) -> Vec<Value> {
    let mut out = vec![json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": r.verbs,
        "shortNames": r.short_names,
        "categories": r.categories,
    })];
    for sub in r.subresources() {
        if sub == "scale" {
            out.push(
                json!({"name": format!("{}/scale", r.plural), "singularName": "",
                "namespaced": r.namespaced, "group": "autoscaling", "version": "v1",
                "kind": "Scale", "verbs": SUB_VERBS}),
            );
        } else {
            out.push(
                json!({"name": format!("{}/{sub}", r.plural), "singularName": "",
                "namespaced": r.namespaced, "kind": r.kind, "verbs": SUB_VERBS}),
            );
        }
    }
    out
}

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// `APIResourceList` of a served group-version, or None.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if !GROUP_VERSIONS.contains(&(group, version)) {
        return None;
    }
    let resources: Vec<Value> = in_group_version(group, version)
        .flat_map(resource_entries)
        .collect();
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(group, version),
        "resources": resources,
    }))
}

pub fn api_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

fn api_group(name: &str) -> Option<Value> {
    let versions: Vec<Value> = GROUP_VERSIONS
        .iter()
        .filter(|(g, _)| *g == name)
        .map(|(g, v)| json!({"groupVersion": group_version(g, v), "version": v}))
        .collect();
    let preferred = versions.first()?.clone();
    Some(json!({"name": name, "versions": versions, "preferredVersion": preferred}))
}

/// `APIGroup` for `/apis/<group>`.
pub fn group(name: &str) -> Option<Value> {
    if name.is_empty() {
        return None;
    }
    let mut g = api_group(name)?;
    if let Some(map) = g.as_object_mut() {
        map.insert("kind".into(), json!("APIGroup"));
        map.insert("apiVersion".into(), json!("v1"));
    }
    Some(g)
}

pub fn group_list() -> Value {
    let mut names: Vec<&str> = Vec::new();
    for (g, _) in GROUP_VERSIONS {
        if !g.is_empty() && !names.contains(g) {
            names.push(g);
        }
    }
    let groups: Vec<Value> = names.iter().filter_map(|n| api_group(n)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// Which aggregated discovery version the Accept header asks for first, if any.
pub fn aggregated_version(accept: &str) -> Option<&'static str> {
    for range in accept.split(',') {
        let params: Vec<&str> = range.split(';').map(str::trim).collect();
        if !params.contains(&"as=APIGroupDiscoveryList")
            || !params.contains(&"g=apidiscovery.k8s.io")
        {
            continue;
        }
        if params.contains(&"v=v2") {
            return Some("v2");
        }
        if params.contains(&"v=v2beta1") {
            return Some("v2beta1");
        }
    }
    None
}

pub fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}

fn discovery_resource(r: &ApiResource) -> Value {
    let subresources: Vec<Value> = r
        .subresources()
        .into_iter()
        .map(|sub| {
            let kind = if sub == "scale" {
                json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
            } else {
                json!({"group": r.group, "version": r.version, "kind": r.kind})
            };
            json!({"subresource": sub, "responseKind": kind, "verbs": SUB_VERBS})
        })
        .collect();
    let mut entry = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
        "shortNames": r.short_names,
        "categories": r.categories,
    });
    if !subresources.is_empty()
        && let Some(map) = entry.as_object_mut()
    {
        map.insert("subresources".into(), json!(subresources));
    }
    entry
}

/// `APIGroupDiscoveryList` for `/api` (core only) or `/apis` (every other group).
pub fn aggregated(core: bool, version: &str) -> Value {
    let mut names: Vec<&str> = Vec::new();
    for (g, _) in GROUP_VERSIONS {
        if g.is_empty() == core && !names.contains(g) {
            names.push(g);
        }
    }
    let items: Vec<Value> = names
        .iter()
        .map(|name| {
            let versions: Vec<Value> = GROUP_VERSIONS
                .iter()
                .filter(|(g, _)| g == name)
                .map(|(g, v)| {
                    let resources: Vec<Value> =
                        in_group_version(g, v).map(discovery_resource).collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let mut metadata = json!({"creationTimestamp": null});
            if !name.is_empty() {
                metadata["name"] = json!(name);
            }
            json!({"metadata": metadata, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        let v: K8sVersion = "1.32".parse().unwrap();
        assert_eq!(v.git_version(), "v1.32.5");
        assert_eq!(v.version_json()["minor"], "32");
        let v: K8sVersion = "v1.30.7".parse().unwrap();
        assert_eq!(v.git_version(), "v1.30.7");
        for bad in ["2.1", "1", "1.x", "1.30.4.1", ""] {
            assert!(bad.parse::<K8sVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn short_names_and_scale_are_advertised() {
        let apps = resource_list("apps", "v1").unwrap();
        let resources = apps["resources"].as_array().unwrap();
        let ds = resources
            .iter()
            .find(|r| r["name"] == "daemonsets")
            .unwrap();
        assert_eq!(ds["shortNames"], json!(["ds"]));
        let scale = resources
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
        assert!(resources.iter().any(|r| r["name"] == "daemonsets/status"));
        assert!(resource_list("batch", "v1").is_none());
    }

    #[test]
    fn accept_headers_pick_the_aggregated_version() {
        let k127 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        let k133 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(k127), Some("v2beta1"));
        assert_eq!(aggregated_version(k133), Some("v2"));
        assert_eq!(aggregated_version("application/json, */*"), None);
        let core = aggregated(true, "v2");
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        let groups = aggregated(false, "v2");
        assert!(
            groups["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["metadata"]["name"] == "apps")
        );
    }
}
