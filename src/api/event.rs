//! `WebhookEvent`: one event to deliver, and what became of each delivery.
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;

/// One event (type + data) to deliver to every subscribed endpoint of its namespace.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "webhooks.pitchey.io",
    version = "v1alpha1",
    kind = "WebhookEvent",
    namespaced,
    status = "WebhookEventStatus",
    shortname = "whev",
    category = "webhooks",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Delivered","type":"string","jsonPath":".status.conditions[?(@.type==\"Delivered\")].status"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Delivered\")].message"}"#,
    printcolumn = r#"{"name":"Event ID","type":"string","priority":1,"jsonPath":".status.eventId"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEventSpec {
    /// The event type from the catalog, e.g. `user.created`.
    #[serde(rename = "type")]
    #[schemars(length(min = 3, max = 128), regex(pattern = super::event_types::EVENT_TYPE_REGEX))]
    pub type_: String,
    /// The event's fields, sent under `data` next to `event_type`.
    #[serde(default)]
    #[schemars(schema_with = "super::schema::free_object")]
    pub data: serde_json::Map<String, serde_json::Value>,
    /// Idempotency key: events with the same id in a namespace are delivered once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub id: Option<String>,
    /// Seconds to keep the event once finished; the dispatcher's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
}

/// Where an event is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EventPhase {
    /// Accepted and routed; no delivery attempted yet.
    #[default]
    Pending,
    /// Deliveries under way: an attempt made or being made, or held for a suspended endpoint.
    Delivering,
    /// Every delivery succeeded.
    Delivered,
    /// Some deliveries succeeded, others were dead-lettered.
    PartiallyFailed,
    /// Every delivery was dead-lettered, or the spec is invalid (see the `Ready` condition).
    Failed,
    /// No subscription matched the event's type.
    NoSubscribers,
}

impl EventPhase {
    /// Whether no more deliveries will happen.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            EventPhase::Delivered
                | EventPhase::PartiallyFailed
                | EventPhase::Failed
                | EventPhase::NoSubscribers
        )
    }
}

/// What became of an event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEventStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<EventPhase>,
    /// The `event_id` sent in the payload (`evt_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// One record per endpoint the event is delivered to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<EventDeliveryStatus>,
    /// When the event finished (its last delivery ended, or it was refused as invalid);
    /// `ttlSecondsAfterFinished` counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_time: Option<String>,
}

/// The delivery of one event to one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventDeliveryStatus {
    /// The endpoint's name.
    pub endpoint: String,
    /// `Pending`, `Queued` (ordered delivery: behind an earlier one), `Delivered`, `DeadLettered`
    /// or `Held`.
    pub state: String,
    /// Attempts made so far.
    pub attempts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_time: Option<String>,
}
