//! Strategic merge patch, as the apiserver applies it to the kinds the sim serves.

use serde_json::Value;

use super::model::Resource;

/// Why a strategic merge patch could not be applied (answered as 400 or 422 by the server).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SmpError {
    #[error("invalid strategic merge patch: {0}")]
    Invalid(String),
}

/// Applies a strategic merge patch to `original` using the merge keys and patch strategies of
/// `resource`'s schema, returning the patched object.
pub fn apply(resource: Resource, original: &Value, patch: &Value) -> Result<Value, SmpError> {
    let _ = (resource, original, patch);
    Err(SmpError::Invalid(
        "strategic merge patch is not built yet".into(),
    ))
}
