//! The container images of a workload's pod template, read from any object shape we meet
//! (API JSON, YAML manifests, typed k8s-openapi values).

use serde_json::Value;

/// One container of a pod template and its image, as written (not normalised).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerImage {
    pub name: String,
    pub image: String,
    /// Whether it sits in `initContainers` rather than `containers`.
    pub init: bool,
}

/// Every container and init container of a pod template, in manifest order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodTemplateImages {
    pub containers: Vec<ContainerImage>,
}

/// Why a workload's pod template could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("the object is not a JSON object")]
    NotAnObject,
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{0} is not a list")]
    NotAList(&'static str),
    #[error("{list}[{index}] has no name")]
    Unnamed { list: &'static str, index: usize },
    #[error("{list}[{index}] ({name:?}) has an image that is not a string")]
    ImageNotAString {
        list: &'static str,
        index: usize,
        name: String,
    },
    #[error("{0}")]
    Unreadable(String),
}

const CONTAINERS: &str = "spec.template.spec.containers";
const INIT_CONTAINERS: &str = "spec.template.spec.initContainers";

impl PodTemplateImages {
    /// Reads `spec.template.spec.{initContainers,containers}` of a DaemonSet, Deployment or
    /// any object with a pod template.
    pub fn from_workload(object: &Value) -> Result<Self, TemplateError> {
        let object = object.as_object().ok_or(TemplateError::NotAnObject)?;
        let spec = object.get("spec").ok_or(TemplateError::Missing("spec"))?;
        let template = spec
            .get("template")
            .ok_or(TemplateError::Missing("spec.template"))?;
        let pod_spec = template
            .get("spec")
            .ok_or(TemplateError::Missing("spec.template.spec"))?;
        let mut containers = Vec::new();
        read_list(
            pod_spec.get("initContainers"),
            INIT_CONTAINERS,
            true,
            &mut containers,
        )?;
        read_list(
            pod_spec.get("containers"),
            CONTAINERS,
            false,
            &mut containers,
        )?;
        Ok(Self { containers })
    }

    /// The same from a typed pod spec (the webhook's sibling cache holds typed objects).
    pub fn from_pod_spec(spec: &k8s_openapi::api::core::v1::PodSpec) -> Self {
        let init = spec.init_containers.iter().flatten().map(|c| (c, true));
        let main = spec.containers.iter().map(|c| (c, false));
        let containers = init
            .chain(main)
            .map(|(c, init)| ContainerImage {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                init,
            })
            .collect();
        Self { containers }
    }

    /// Every container (init or not) with this name.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ContainerImage> + 'a {
        self.containers.iter().filter(move |c| c.name == name)
    }
}

fn read_list(
    list: Option<&Value>,
    field: &'static str,
    init: bool,
    out: &mut Vec<ContainerImage>,
) -> Result<(), TemplateError> {
    let items = match list {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(TemplateError::NotAList(field)),
    };
    for (index, item) in items.iter().enumerate() {
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or(TemplateError::Unnamed { list: field, index })?;
        let image = match item.get("image") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(TemplateError::ImageNotAString {
                    list: field,
                    index,
                    name: name.to_owned(),
                });
            }
        };
        out.push(ContainerImage {
            name: name.to_owned(),
            image,
            init,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_init_and_main_containers() {
        let ds = json!({"spec": {"template": {"spec": {
            "initContainers": [{"name": "install-cni-binary", "image": "r/cni:v1.9.3"}],
            "containers": [{"name": "cce-cni-node-agent", "image": "r/cni:v1.9.3"}]
        }}}});
        let images = PodTemplateImages::from_workload(&ds).unwrap();
        assert_eq!(images.containers.len(), 2);
        assert!(images.named("install-cni-binary").all(|c| c.init));
        assert!(images.named("cce-cni-node-agent").all(|c| !c.init));
    }

    #[test]
    fn says_what_is_wrong() {
        let cases = [
            (json!([]), "not a JSON object"),
            (json!({"kind": "DaemonSet"}), "spec is missing"),
            (json!({"spec": {}}), "spec.template is missing"),
            (
                json!({"spec": {"template": {"spec": {"containers": {}}}}}),
                "containers is not a list",
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
                "[0] has no name",
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": 3}]}}}}),
                "not a string",
            ),
        ];
        for (object, needle) in cases {
            let err = PodTemplateImages::from_workload(&object)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{object}: {err}");
        }
    }

    #[test]
    fn typed_and_json_agree() {
        let value = json!({
            "initContainers": [{"name": "install-cni-binary", "image": "r/cni:v1.9.3"}],
            "containers": [{"name": "cce-cni-node-agent", "image": "r/cni:v1.9.3"}]
        });
        let typed: k8s_openapi::api::core::v1::PodSpec =
            serde_json::from_value(value.clone()).unwrap();
        let from_json =
            PodTemplateImages::from_workload(&json!({"spec": {"template": {"spec": value}}}))
                .unwrap();
        assert_eq!(PodTemplateImages::from_pod_spec(&typed), from_json);
    }
}
