//! References from one resource to another object in the same namespace.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference by name to an object in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// Name of the object, in the same namespace.
    pub name: String,
}

/// A key of a Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret, in the same namespace.
    pub name: String,
    /// Key inside the Secret's data.
    pub key: String,
}
