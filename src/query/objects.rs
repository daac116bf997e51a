//! The objects of `query.webhooks.pitchey.io/v1alpha1`, built from the store's records. They are
//! not stored in etcd: every read is answered from the delivery store.
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta, Time};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{names, Resource, API_VERSION};
use crate::store::{
    AnalyticsBucket as StoreBucket, AttemptLogEntry, AttemptOutcome, DeadLetter, EndpointStats,
    WindowStats,
};

/// Label: the endpoint an object belongs to.
pub const ENDPOINT_LABEL: &str = "webhooks.pitchey.io/endpoint";
/// Label: a delivery attempt's outcome (`Delivered`, `Failed`, `Filtered`, `Held`).
pub const OUTCOME_LABEL: &str = "webhooks.pitchey.io/outcome";
/// Label: the event's type (`user.created`).
pub const EVENT_TYPE_LABEL: &str = "webhooks.pitchey.io/event-type";

/// What an attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The receiver answered 2xx: the delivery is done.
    Delivered,
    /// The attempt failed; `next` says whether a retry follows or it was dead-lettered.
    Failed,
    /// The endpoint's transform dropped the event: nothing was sent.
    Filtered,
    /// The endpoint was suspended: the delivery waits for it to resume.
    Held,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Delivered,
        Outcome::Failed,
        Outcome::Filtered,
        Outcome::Held,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "Delivered",
            Outcome::Failed => "Failed",
            Outcome::Filtered => "Filtered",
            Outcome::Held => "Held",
        }
    }

    /// The outcome of a stored attempt, and what followed a failed one.
    pub fn of(outcome: AttemptOutcome) -> (Outcome, Option<Next>) {
        match outcome {
            AttemptOutcome::Delivered => (Outcome::Delivered, None),
            AttemptOutcome::Retry => (Outcome::Failed, Some(Next::Retry)),
            AttemptOutcome::DeadLettered => (Outcome::Failed, Some(Next::DeadLetter)),
            AttemptOutcome::Filtered => (Outcome::Filtered, None),
            AttemptOutcome::Held => (Outcome::Held, None),
        }
    }
}

/// What followed a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Next {
    Retry,
    DeadLetter,
}

impl Next {
    pub fn as_str(self) -> &'static str {
        match self {
            Next::Retry => "Retry",
            Next::DeadLetter => "DeadLetter",
        }
    }
}

/// One delivery attempt. Named `<endpoint>.<deliveryId>.<attempt>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub endpoint: String,
    #[serde(rename = "eventID")]
    pub event_id: String,
    pub event_type: String,
    #[serde(rename = "deliveryID")]
    pub delivery_id: i64,
    /// 1 for the first attempt of the delivery.
    pub attempt: u32,
    /// When the attempt was made (RFC 3339).
    pub time: Timestamp,
    pub outcome: Outcome,
    /// After a failed attempt: `Retry` or `DeadLetter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Next>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The start of the receiver's response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_snippet: Option<String>,
}

fn meta(
    name: String,
    namespace: &str,
    created: Timestamp,
    labels: BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_owned()),
        creation_timestamp: Some(Time(created)),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

impl WebhookDelivery {
    pub fn from_attempt(entry: &AttemptLogEntry) -> Self {
        let (outcome, next) = Outcome::of(entry.outcome);
        let labels = BTreeMap::from([
            (ENDPOINT_LABEL.to_owned(), entry.endpoint.name.clone()),
            (OUTCOME_LABEL.to_owned(), outcome.as_str().to_owned()),
            (EVENT_TYPE_LABEL.to_owned(), label_value(&entry.event_type)),
        ]);
        let mut metadata = meta(
            names::delivery(
                &entry.endpoint.name,
                entry.delivery_id.0,
                entry.record.attempt,
            ),
            &entry.endpoint.namespace,
            entry.record.at,
            labels,
        );
        metadata.resource_version = Some(entry.seq.to_string());
        Self {
            api_version: API_VERSION.to_owned(),
            kind: Resource::Deliveries.kind().to_owned(),
            metadata,
            endpoint: entry.endpoint.name.clone(),
            event_id: entry.event_id.clone(),
            event_type: entry.event_type.clone(),
            delivery_id: entry.delivery_id.0,
            attempt: entry.record.attempt,
            time: entry.record.at,
            outcome,
            next,
            status_code: entry.record.status_code,
            latency_ms: entry.record.latency_ms,
            error: entry.record.error.clone(),
            response_snippet: entry.record.response_snippet.clone(),
        }
    }
}

/// A label value: at most 63 characters of `[A-Za-z0-9._-]`, starting and ending alphanumeric.
/// Event types already are; anything else is cut to fit (the full value is in a field).
fn label_value(value: &str) -> String {
    let kept: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    kept.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// One attempt of a dead letter's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptSummary {
    pub attempt: u32,
    pub time: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A dead-lettered delivery, with its event's data and every attempt. Named
/// `<endpoint>.<deliveryId>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDeadLetter {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub endpoint: String,
    #[serde(rename = "eventID")]
    pub event_id: String,
    pub event_type: String,
    pub event_time: Timestamp,
    #[serde(rename = "deliveryID")]
    pub delivery_id: i64,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_lettered_at: Option<Timestamp>,
    /// Set when the delivery was itself a replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<String>,
    /// The event's `data`, as stored.
    pub data: Value,
    /// Every attempt, oldest first.
    pub history: Vec<AttemptSummary>,
}

impl WebhookDeadLetter {
    pub fn from_dead_letter(dead: &DeadLetter) -> Self {
        let delivery = &dead.delivery;
        let labels = BTreeMap::from([
            (ENDPOINT_LABEL.to_owned(), delivery.endpoint.name.clone()),
            (
                EVENT_TYPE_LABEL.to_owned(),
                label_value(&dead.event.event_type),
            ),
        ]);
        let finished = delivery.finished_at.unwrap_or(delivery.created_at);
        let data = crate::delivery::payload::stored_fields(&dead.event.data)
            .map(Value::Object)
            .unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&dead.event.data).into_owned())
            });
        Self {
            api_version: API_VERSION.to_owned(),
            kind: Resource::DeadLetters.kind().to_owned(),
            metadata: meta(
                names::dead_letter(&delivery.endpoint.name, delivery.id.0),
                &delivery.endpoint.namespace,
                finished,
                labels,
            ),
            endpoint: delivery.endpoint.name.clone(),
            event_id: dead.event.event_id.clone(),
            event_type: dead.event.event_type.clone(),
            event_time: dead.event.created_at,
            delivery_id: delivery.id.0,
            attempts: delivery.attempts,
            reason: delivery.dead_letter_reason.clone(),
            last_status_code: delivery.last_status_code,
            last_error: delivery.last_error.clone(),
            dead_lettered_at: delivery.finished_at,
            replay: delivery.replay_id.clone().filter(|r| !r.is_empty()),
            data,
            history: dead
                .attempts
                .iter()
                .map(|a| AttemptSummary {
                    attempt: a.record.attempt,
                    time: a.record.at,
                    status_code: a.record.status_code,
                    latency_ms: a.record.latency_ms,
                    error: a.record.error.clone(),
                })
                .collect(),
        }
    }
}

/// Attempts over a window (the last hour, the last day).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsWindow {
    pub attempts: u64,
    pub successes: u64,
    pub failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    /// Attempts the receiver answered without a server-side failure, over all attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_latency_ms: Option<u64>,
}

impl From<&WindowStats> for AnalyticsWindow {
    fn from(w: &WindowStats) -> Self {
        Self {
            attempts: w.attempts,
            successes: w.successes,
            failures: w.failures,
            success_rate: w.success_rate,
            availability: w.availability,
            avg_latency_ms: w.avg_latency_ms,
            p95_latency_ms: w.p95_latency_ms,
        }
    }
}

/// One hour of attempts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsBucket {
    pub start: Timestamp,
    pub attempts: u64,
    pub successes: u64,
    pub failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_latency_ms: Option<f64>,
}

impl From<&StoreBucket> for AnalyticsBucket {
    fn from(b: &StoreBucket) -> Self {
        Self {
            start: b.start,
            attempts: b.attempts,
            successes: b.successes,
            failures: b.failures,
            avg_latency_ms: b.avg_latency_ms,
        }
    }
}

/// Totals since the endpoint was created (they survive retention).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsTotals {
    pub delivered: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    pub filtered: u64,
    pub retries: u64,
}

/// Deliveries not finished, and dead letters kept.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsQueue {
    pub pending: u64,
    pub in_flight: u64,
    pub held: u64,
    /// Ordered deliveries waiting behind an earlier one of their lane.
    pub queued: u64,
    pub dead_letters: u64,
}

/// An endpoint's delivery analytics: windows, totals, queue, last results and the last 24
/// hours by hour. Named after the endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAnalytics {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub endpoint: String,
    pub last_hour: AnalyticsWindow,
    pub last_day: AnalyticsWindow,
    pub totals: AnalyticsTotals,
    pub queue: AnalyticsQueue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The last 24 hours, oldest first, one bucket an hour.
    pub hourly: Vec<AnalyticsBucket>,
}

impl WebhookAnalytics {
    pub fn new(
        namespace: &str,
        endpoint: &str,
        stats: &EndpointStats,
        hourly: &[StoreBucket],
        now: Timestamp,
    ) -> Self {
        let labels = BTreeMap::from([(ENDPOINT_LABEL.to_owned(), endpoint.to_owned())]);
        Self {
            api_version: API_VERSION.to_owned(),
            kind: Resource::Analytics.kind().to_owned(),
            metadata: meta(endpoint.to_owned(), namespace, now, labels),
            endpoint: endpoint.to_owned(),
            last_hour: (&stats.last_hour).into(),
            last_day: (&stats.last_day).into(),
            totals: AnalyticsTotals {
                delivered: stats.delivered_total,
                failed_attempts: stats.failed_attempts_total,
                dead_lettered: stats.dead_lettered_total,
                filtered: stats.filtered_total,
                retries: stats.retries_total,
            },
            queue: AnalyticsQueue {
                pending: stats.pending_count,
                in_flight: stats.in_flight_count,
                held: stats.held_count,
                queued: stats.queued_count,
                dead_letters: stats.dead_letter_count,
            },
            last_attempt_time: stats.last_attempt_at,
            last_success_time: stats.last_success_at,
            last_failure_time: stats.last_failure_at,
            last_status_code: stats.last_status_code,
            last_error: stats.last_error.clone(),
            hourly: hourly.iter().map(AnalyticsBucket::from).collect(),
        }
    }
}

/// A list of one kind: `<Kind>List`, with `metadata.continue` when more pages follow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectList<T> {
    pub api_version: String,
    pub kind: String,
    pub metadata: ListMeta,
    pub items: Vec<T>,
}

impl<T> ObjectList<T> {
    pub fn new(
        resource: Resource,
        items: Vec<T>,
        resource_version: String,
        next: Option<String>,
    ) -> Self {
        Self {
            api_version: API_VERSION.to_owned(),
            kind: format!("{}List", resource.kind()),
            metadata: ListMeta {
                resource_version: Some(resource_version),
                continue_: next,
                ..ListMeta::default()
            },
            items,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_fit_kubernetes_rules() {
        assert_eq!(label_value("user.created"), "user.created");
        assert_eq!(label_value("a b/c"), "a_b_c");
        assert_eq!(label_value("-x-"), "x");
        assert_eq!(label_value(&"y".repeat(80)).len(), 63);
    }

    #[test]
    fn failed_attempts_say_what_followed() {
        assert_eq!(
            Outcome::of(AttemptOutcome::Retry),
            (Outcome::Failed, Some(Next::Retry))
        );
        assert_eq!(
            Outcome::of(AttemptOutcome::DeadLettered),
            (Outcome::Failed, Some(Next::DeadLetter))
        );
        assert_eq!(
            Outcome::of(AttemptOutcome::Delivered),
            (Outcome::Delivered, None)
        );
    }
}
