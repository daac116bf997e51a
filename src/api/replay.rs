//! `WebhookReplay`: a declarative, auditable redelivery request.
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::references::LocalObjectReference;

/// Redelivers past deliveries of one endpoint, chosen by time range, event types and outcome.
/// Runs once, whatever restarts happen.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "webhooks.pitchey.io",
    version = "v1alpha1",
    kind = "WebhookReplay",
    namespaced,
    status = "WebhookReplayStatus",
    shortname = "whrp",
    category = "webhooks",
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.endpointRef.name"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Matched","type":"integer","priority":1,"jsonPath":".status.matched"}"#,
    printcolumn = r#"{"name":"Redelivered","type":"integer","priority":1,"jsonPath":".status.redelivered"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","priority":1,"jsonPath":".status.failed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WebhookReplaySpec {
    /// The endpoint whose deliveries are replayed.
    pub endpoint_ref: LocalObjectReference,
    /// Start of the time range (RFC 3339), inclusive.
    #[schemars(schema_with = "super::schema::date_time")]
    pub from: String,
    /// End of the time range (RFC 3339), exclusive; now when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::optional_date_time")]
    pub to: Option<String>,
    /// Event types (exact, `prefix.*`, `*`); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    /// Which outcomes to replay. Default: dead-lettered deliveries only.
    #[serde(default = "default_outcomes")]
    pub outcomes: Vec<ReplayOutcome>,
}

fn default_outcomes() -> Vec<ReplayOutcome> {
    vec![ReplayOutcome::DeadLettered]
}

/// Delivery outcomes a replay can select.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ReplayOutcome {
    DeadLettered,
    Delivered,
}

/// Where a replay is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReplayPhase {
    #[default]
    Pending,
    Running,
    Complete,
    Failed,
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookReplayStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Complete` once every matched delivery was redelivered or failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ReplayPhase>,
    /// Deliveries that matched the spec.
    #[serde(default)]
    pub matched: i64,
    /// Matched deliveries delivered again.
    #[serde(default)]
    pub redelivered: i64,
    /// Matched deliveries whose redelivery failed.
    #[serde(default)]
    pub failed: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
}
