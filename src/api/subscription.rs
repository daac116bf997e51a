//! `WebhookSubscription`: which event types go to which endpoints.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::references::LocalObjectReference;

/// Routes event types (exact, `prefix.*` or `*`) to endpoints of the same namespace, chosen by
/// name (`endpointRef`) or by labels (`endpointSelector`).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "webhooks.pitchey.io",
    version = "v1alpha1",
    kind = "WebhookSubscription",
    namespaced,
    status = "WebhookSubscriptionStatus",
    shortname = "whsub",
    category = "webhooks",
    printcolumn = r#"{"name":"Endpoints","type":"string","jsonPath":".status.endpoints"}"#,
    printcolumn = r#"{"name":"Event types","type":"string","jsonPath":".spec.eventTypes"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Suspended","type":"boolean","priority":1,"jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSubscriptionSpec {
    /// One endpoint by name. Set this or `endpointSelector`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_ref: Option<LocalObjectReference>,
    /// Endpoints by labels. Set this or `endpointRef`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_selector: Option<LabelSelector>,
    /// Event types to deliver: exact (`user.created`), a prefix (`pitch.*`) or everything (`*`).
    #[schemars(schema_with = "super::schema::event_type_patterns")]
    pub event_types: Vec<String>,
    /// Skips this subscription while true.
    #[serde(default)]
    pub suspend: bool,
}

/// The endpoints a subscription resolves to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSubscriptionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (False with reason `EndpointNotFound` when nothing resolves), `Suspended`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Names of the endpoints this subscription currently resolves to, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
}
