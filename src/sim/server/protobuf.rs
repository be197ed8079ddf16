//! Just enough of the Kubernetes protobuf encoding to read the bodies kubectl 1.32+ sends
//! from its typed clients (`kubectl create configmap …`, `kubectl create namespace …`).
//! Everything else the sim answers and accepts is JSON.

use base64::Engine;
use serde_json::{Map, Value, json};

/// Why a protobuf body could not be read (answered as 415 or 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtobufError {
    #[error("not a Kubernetes protobuf envelope")]
    NoEnvelope,
    #[error("malformed protobuf: {0}")]
    Malformed(&'static str),
    #[error("protobuf bodies of kind {0} are not supported; send JSON")]
    UnsupportedKind(String),
}

const MAGIC: &[u8] = b"k8s\x00";

struct Reader<'a> {
    bytes: &'a [u8],
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .bytes
                .split_first()
                .ok_or(ProtobufError::Malformed("truncated varint"))?;
            self.bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtobufError::Malformed("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        if n > self.bytes.len() {
            return Err(ProtobufError::Malformed("truncated field"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, ProtobufError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| ProtobufError::Malformed("length too large"))?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed
            }
            _ => return Err(ProtobufError::Malformed("unsupported wire type")),
        };
        Ok(Some((key >> 3, field)))
    }
}

fn fields(bytes: &[u8]) -> Result<Vec<(u64, Field<'_>)>, ProtobufError> {
    let mut reader = Reader { bytes };
    let mut out = Vec::new();
    while let Some(f) = reader.next()? {
        out.push(f);
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String, ProtobufError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ProtobufError::Malformed("string is not UTF-8"))
}

/// A `map<string, string>` entry, or with `binary` a `map<string, bytes>` entry as base64.
fn map_entry(bytes: &[u8], binary: bool) -> Result<(String, Value), ProtobufError> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for (n, f) in fields(bytes)? {
        match (n, f) {
            (1, Field::Bytes(b)) => key = text(b)?,
            (2, Field::Bytes(b)) if binary => {
                value = json!(base64::engine::general_purpose::STANDARD.encode(b));
            }
            (2, Field::Bytes(b)) => value = json!(text(b)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn object_meta(bytes: &[u8]) -> Result<Value, ProtobufError> {
    let mut meta = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = Vec::new();
    for (n, f) in fields(bytes)? {
        // Optional strings arrive even when empty; empty means unset.
        let field = match (n, &f) {
            (1, _) => Some("name"),
            (2, _) => Some("generateName"),
            (3, _) => Some("namespace"),
            (6, _) => Some("resourceVersion"),
            _ => None,
        };
        if let (Some(field), Field::Bytes(b)) = (field, &f) {
            if !b.is_empty() {
                meta.insert(field.into(), json!(text(b)?));
            }
            continue;
        }
        match (n, f) {
            (11, Field::Bytes(b)) => {
                let (k, v) = map_entry(b, false)?;
                labels.insert(k, v);
            }
            (12, Field::Bytes(b)) => {
                let (k, v) = map_entry(b, false)?;
                annotations.insert(k, v);
            }
            (14, Field::Bytes(b)) => finalizers.push(json!(text(b)?)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        meta.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(meta))
}

fn config_map(bytes: &[u8]) -> Result<Value, ProtobufError> {
    let mut object = Map::new();
    let mut data = Map::new();
    let mut binary = Map::new();
    for (n, f) in fields(bytes)? {
        match (n, f) {
            (1, Field::Bytes(b)) => {
                object.insert("metadata".into(), object_meta(b)?);
            }
            (2, Field::Bytes(b)) => {
                let (k, v) = map_entry(b, false)?;
                data.insert(k, v);
            }
            (3, Field::Bytes(b)) => {
                let (k, v) = map_entry(b, true)?;
                binary.insert(k, v);
            }
            (4, Field::Varint(v)) => {
                object.insert("immutable".into(), json!(v != 0));
            }
            _ => {}
        }
    }
    if !data.is_empty() {
        object.insert("data".into(), Value::Object(data));
    }
    if !binary.is_empty() {
        object.insert("binaryData".into(), Value::Object(binary));
    }
    Ok(Value::Object(object))
}

fn namespace(bytes: &[u8]) -> Result<Value, ProtobufError> {
    let mut object = Map::new();
    for (n, f) in fields(bytes)? {
        if let (1, Field::Bytes(b)) = (n, f) {
            object.insert("metadata".into(), object_meta(b)?);
        }
    }
    Ok(Value::Object(object))
}

/// Decodes a `k8s\0`-prefixed `runtime.Unknown` into the JSON object it carries.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoEnvelope)?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, f) in fields(envelope)? {
        match (n, f) {
            (1, Field::Bytes(type_meta)) => {
                for (m, g) in fields(type_meta)? {
                    match (m, g) {
                        (1, Field::Bytes(b)) => api_version = text(b)?,
                        (2, Field::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let mut object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "ConfigMap") => config_map(raw)?,
        ("v1", "Namespace") => namespace(raw)?,
        _ => {
            return Err(ProtobufError::UnsupportedKind(format!(
                "{api_version}/{kind}"
            )));
        }
    };
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), json!(api_version));
        map.insert("kind".into(), json!(kind));
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::try_from((n << 3) | 2).unwrap()];
        out.push(u8::try_from(bytes.len()).unwrap());
        out.extend_from_slice(bytes);
        out
    }

    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        [field(1, k.as_bytes()), field(2, v)].concat()
    }

    #[test]
    fn decodes_a_configmap_as_kubectl_sends_it() {
        let meta = [
            field(1, b"scratch"),
            field(2, b""),
            field(3, b"kube-system"),
            field(11, &entry("app", b"x")),
        ]
        .concat();
        let cm = [
            field(1, &meta),
            field(2, &entry("a", b"b")),
            field(3, &entry("bin", &[0, 1])),
            vec![0x20, 0x01],
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &cm)].concat();
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "scratch", "namespace": "kube-system", "labels": {"app": "x"}},
                "data": {"a": "b"}, "binaryData": {"bin": "AAE="}, "immutable": true})
        );
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        assert_eq!(decode(b"{}"), Err(ProtobufError::NoEnvelope));
        assert!(matches!(
            decode(b"k8s\x00\x0a\x05ab"),
            Err(ProtobufError::Malformed(_))
        ));
        let type_meta = [field(1, b"apps/v1"), field(2, b"Deployment")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta)].concat();
        assert!(matches!(
            decode(&body),
            Err(ProtobufError::UnsupportedKind(_))
        ));
    }
}
