//! Reading Kubernetes manifests (YAML or JSON) for the offline commands, and standing a
//! manifest in for a sibling workload that would otherwise come from the cluster.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use crate::policy::{
    GuardedWorkload, PodTemplateImages, SiblingLookup, SiblingState, TemplateError, WorkloadKind,
};

/// Larger inputs are refused rather than read: no manifest of these workloads comes close.
pub const MAX_INPUT_BYTES: u64 = 8 * 1024 * 1024;

/// Why an input could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {source_name}: {error}")]
    Io {
        source_name: String,
        error: std::io::Error,
    },
    #[error("{0} is larger than {MAX_INPUT_BYTES} bytes")]
    TooLarge(String),
    #[error("{source_name} is not valid UTF-8")]
    NotUtf8 { source_name: String },
    #[error("{source_name} is neither JSON nor YAML: {error}")]
    Parse { source_name: String, error: String },
    #[error("{source_name} holds {count} documents; give one object per file")]
    MultipleDocuments { source_name: String, count: usize },
    #[error("{source_name} is empty")]
    Empty { source_name: String },
    #[error("{source_name} is not a Kubernetes object: {what}")]
    NotAnObject { source_name: String, what: String },
    #[error("{source_name}: {error}")]
    Template {
        source_name: String,
        error: TemplateError,
    },
}

/// Reads a file, or standard input for `-`, within [`MAX_INPUT_BYTES`].
pub fn read_input(path: &Path) -> Result<(String, Vec<u8>), ManifestError> {
    let source_name = if path == Path::new("-") {
        "standard input".to_owned()
    } else {
        path.display().to_string()
    };
    let io = |error| ManifestError::Io {
        source_name: source_name.clone(),
        error,
    };
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(MAX_INPUT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
    } else {
        std::fs::File::open(path)
            .map_err(io)?
            .take(MAX_INPUT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
    }
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(ManifestError::TooLarge(source_name));
    }
    Ok((source_name, bytes))
}

/// A manifest's object with the identity the guard matches on.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub source_name: String,
    pub object: Value,
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl Manifest {
    /// Parses one object from JSON or YAML text.
    pub fn parse(source_name: &str, bytes: &[u8]) -> Result<Self, ManifestError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8 {
            source_name: source_name.into(),
        })?;
        let object = parse_one(source_name, text)?;
        let not_object = |what: &str| ManifestError::NotAnObject {
            source_name: source_name.into(),
            what: what.into(),
        };
        let map = object
            .as_object()
            .ok_or_else(|| not_object("the document is not a mapping"))?;
        let field = |name: &str| map.get(name).and_then(Value::as_str).map(str::to_owned);
        let api_version = field("apiVersion").ok_or_else(|| not_object("apiVersion is missing"))?;
        let kind = field("kind").ok_or_else(|| not_object("kind is missing"))?;
        let metadata = map
            .get("metadata")
            .ok_or_else(|| not_object("metadata is missing"))?;
        let name = metadata
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| not_object("metadata.name is missing"))?
            .to_owned();
        let namespace = metadata
            .get("namespace")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(Self {
            source_name: source_name.into(),
            object,
            api_version,
            kind,
            namespace,
            name,
        })
    }

    /// Reads and parses a file (or `-`).
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let (source_name, bytes) = read_input(path)?;
        Self::parse(&source_name, &bytes)
    }

    /// API group from `apiVersion` (`apps/v1` → `apps`, `v1` → ``).
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }

    pub fn template(&self) -> Result<PodTemplateImages, ManifestError> {
        PodTemplateImages::from_workload(&self.object).map_err(|error| ManifestError::Template {
            source_name: self.source_name.clone(),
            error,
        })
    }
}

fn parse_one(source_name: &str, text: &str) -> Result<Value, ManifestError> {
    if text.trim().is_empty() {
        return Err(ManifestError::Empty {
            source_name: source_name.into(),
        });
    }
    // JSON first: it is what tools produce, and its errors are the clearer ones for it.
    if text.trim_start().starts_with(['{', '['])
        && let Ok(value) = serde_json::from_str::<Value>(text)
    {
        return Ok(value);
    }
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Parse {
        source_name: source_name.into(),
        error: e.to_string(),
    })?;
    let mut docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    match docs.len() {
        0 => Err(ManifestError::Empty {
            source_name: source_name.into(),
        }),
        1 => Ok(docs.remove(0)),
        count => Err(ManifestError::MultipleDocuments {
            source_name: source_name.into(),
            count,
        }),
    }
}

/// Sibling workloads given as manifests (`--sibling`), standing in for the cluster.
/// Workloads not given stay unknown, so rule 3 is skipped for them.
#[derive(Debug, Clone, Default)]
pub struct ManifestSiblings {
    entries: Vec<(WorkloadKind, String, String, PodTemplateImages)>,
}

impl ManifestSiblings {
    /// Adds a manifest; it must be one of the guarded workloads of `config`.
    pub fn add(
        &mut self,
        manifest: &Manifest,
        config: &crate::policy::Config,
    ) -> Result<(), String> {
        let kind = WorkloadKind::from_kind(&manifest.kind)
            .filter(|_| manifest.group() == "apps")
            .ok_or_else(|| {
                format!(
                    "{}: a sibling must be a DaemonSet or Deployment, not {}",
                    manifest.source_name, manifest.kind
                )
            })?;
        let namespace = manifest
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        if config.workload(kind, &namespace, &manifest.name).is_none() {
            return Err(format!(
                "{}: {kind} {namespace}/{} is not a guarded workload, so it cannot stand in for a sibling",
                manifest.source_name, manifest.name
            ));
        }
        let template = manifest.template().map_err(|e| e.to_string())?;
        self.entries
            .push((kind, namespace, manifest.name.clone(), template));
        Ok(())
    }
}

impl SiblingLookup for ManifestSiblings {
    fn sibling(&self, workload: &GuardedWorkload) -> SiblingState {
        self.entries
            .iter()
            .find(|(kind, ns, name, _)| {
                *kind == workload.kind && *ns == workload.namespace && *name == workload.name
            })
            .map_or(SiblingState::Unknown, |(_, _, _, t)| {
                SiblingState::Present(t.clone())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DS_YAML: &str = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: cce-cni-node-agent\n  namespace: kube-system\nspec:\n  template:\n    spec:\n      initContainers:\n      - name: install-cni-binary\n        image: r.example.com/cce/cce-cni:v1.9.3\n      containers:\n      - name: cce-cni-node-agent\n        image: r.example.com/cce/cce-cni:v1.9.3\n";

    #[test]
    fn reads_yaml_and_json() {
        let m = Manifest::parse("ds.yaml", DS_YAML.as_bytes()).unwrap();
        assert_eq!(
            (m.group(), m.kind.as_str(), m.name.as_str()),
            ("apps", "DaemonSet", "cce-cni-node-agent")
        );
        assert_eq!(m.template().unwrap().containers.len(), 2);
        let json = serde_json::to_string(&m.object).unwrap();
        let again = Manifest::parse("ds.json", json.as_bytes()).unwrap();
        assert_eq!(again.object, m.object);
    }

    #[test]
    fn bad_input_gets_clear_errors() {
        for (input, needle) in [
            ("", "is empty"),
            ("{\"kind\": ", "neither JSON nor YAML"),
            ("key: [unclosed\n", "neither JSON nor YAML"),
            ("- a\n- b\n", "not a mapping"),
            ("apiVersion: v1\nmetadata: {name: x}\n", "kind is missing"),
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
                "metadata.name is missing",
            ),
            ("a: 1\n---\nb: 2\n", "2 documents"),
        ] {
            let err = Manifest::parse("in.yaml", input.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
        let err = Manifest::parse("bin", &[0xff, 0xfe])
            .unwrap_err()
            .to_string();
        assert!(err.contains("UTF-8"), "{err}");
    }

    #[test]
    fn a_sibling_must_be_guarded() {
        let config = crate::policy::Config::default();
        let mut siblings = ManifestSiblings::default();
        let m = Manifest::parse("ds.yaml", DS_YAML.as_bytes()).unwrap();
        siblings.add(&m, &config).unwrap();
        assert!(matches!(
            siblings.sibling(&config.workloads[0]),
            SiblingState::Present(_)
        ));
        assert_eq!(
            siblings.sibling(&config.workloads[1]),
            SiblingState::Unknown
        );
        let other = Manifest::parse(
            "x",
            DS_YAML
                .replace("cce-cni-node-agent\n  namespace", "other\n  namespace")
                .as_bytes(),
        )
        .unwrap();
        assert!(
            siblings
                .add(&other, &config)
                .unwrap_err()
                .contains("not a guarded workload")
        );
    }
}
