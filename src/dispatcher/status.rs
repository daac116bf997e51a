//! Status write-back: batched server-side apply (field manager `webhook-operator-dispatcher`) of
//! endpoint delivery statistics and circuit state, and of WebhookEvent phases. Objects changed
//! since the last round are written once per round, so each object gets at most one patch per
//! interval and the API request rate is bounded.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::Resource;
use serde_json::json;
use tracing::{debug, warn};

use super::Shared;
use crate::api::conditions::{self, DesiredCondition, CIRCUIT_OPEN, HEALTHY};
use crate::api::endpoint::{CircuitState as ApiCircuitState, CircuitStatus, DeliveryStats};
use crate::api::event::{DeliveryRecord as ApiDeliveryRecord, EventPhase};
use crate::api::{WebhookEndpoint, WebhookEvent, PHASE_LABEL};
use crate::delivery::circuit::CircuitState;
use crate::delivery::outcome::AttemptResult as HttpResult;
use crate::store::{DeliveryRecord, DeliveryState, EndpointRef, EndpointStats, EventSource};

/// Field manager of every status write the dispatcher makes.
pub const FIELD_MANAGER: &str = "webhook-operator-dispatcher";

/// Objects whose status changed since the last write-back.
#[derive(Default)]
pub struct Dirty {
    endpoints: Mutex<HashSet<EndpointRef>>,
    events: Mutex<HashSet<String>>,
}

impl Dirty {
    pub fn endpoint(&self, endpoint: &EndpointRef) {
        if let Ok(mut set) = self.endpoints.lock() {
            set.insert(endpoint.clone());
        }
    }

    pub fn event(&self, event_id: &str) {
        if let Ok(mut set) = self.events.lock() {
            set.insert(event_id.to_string());
        }
    }

    pub fn take_endpoints(&self) -> Vec<EndpointRef> {
        self.endpoints
            .lock()
            .map(|mut set| set.drain().collect())
            .unwrap_or_default()
    }

    pub fn take_events(&self) -> Vec<String> {
        self.events
            .lock()
            .map(|mut set| set.drain().collect())
            .unwrap_or_default()
    }
}

use crate::api::time::rfc3339;

fn percent(rate: Option<f64>) -> Option<String> {
    rate.map(|r| format!("{:.1}%", r * 100.0))
}

/// The health score, 0–100: the success rate of the last hour (100 without traffic), minus 10
/// when the p95 latency exceeds half the timeout; at most 50 while half-open and 20 while open.
pub fn health_score(stats: &EndpointStats, circuit: CircuitState, timeout: Duration) -> i32 {
    let mut score = stats.last_hour.success_rate.map_or(100.0, |r| r * 100.0);
    let slow = stats
        .last_hour
        .p95_latency_ms
        .is_some_and(|p95| u128::from(p95) * 2 > timeout.as_millis());
    if slow {
        score -= 10.0;
    }
    let cap = match circuit {
        CircuitState::Closed => 100.0,
        CircuitState::HalfOpen => 50.0,
        CircuitState::Open => 20.0,
    };
    score.clamp(0.0, cap).round() as i32
}

/// The phase of an event from its deliveries.
pub fn event_phase(deliveries: &[DeliveryRecord]) -> EventPhase {
    if deliveries.is_empty() {
        return EventPhase::NoSubscribers;
    }
    if deliveries.iter().any(|d| !d.state.is_finished()) {
        return EventPhase::Delivering;
    }
    let delivered = deliveries
        .iter()
        .filter(|d| d.state == DeliveryState::Delivered)
        .count();
    match delivered {
        0 => EventPhase::Failed,
        n if n == deliveries.len() => EventPhase::Delivered,
        _ => EventPhase::PartiallyFailed,
    }
}

fn phase_name(phase: EventPhase) -> &'static str {
    match phase {
        EventPhase::Pending => "Pending",
        EventPhase::Delivering => "Delivering",
        EventPhase::Delivered => "Delivered",
        EventPhase::PartiallyFailed => "PartiallyFailed",
        EventPhase::Failed => "Failed",
        EventPhase::NoSubscribers => "NoSubscribers",
    }
}

fn state_name(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Pending | DeliveryState::InFlight => "Pending",
        DeliveryState::Delivered => "Delivered",
        DeliveryState::DeadLettered => "DeadLettered",
        DeliveryState::Held => "Held",
    }
}

/// Writes statuses every `interval` until the task is dropped.
pub async fn run(shared: Arc<Shared>) {
    let interval = Duration::from_secs(shared.config.status_interval_seconds.max(1));
    let mut dead_letters_seen: HashMap<EndpointRef, u64> = HashMap::new();
    loop {
        tokio::time::sleep(interval).await;
        for endpoint in shared.dirty.take_endpoints() {
            // One writer per endpoint: its circuit state lives in the replica that owns it.
            if !shared.ownership.owns_endpoint(&endpoint) {
                continue;
            }
            if let Err(error) = write_endpoint(&shared, &endpoint, &mut dead_letters_seen).await {
                debug!(%error, endpoint = %endpoint.name, "endpoint status write failed");
            }
        }
        for event_id in shared.dirty.take_events() {
            if let Err(error) = write_event(&shared, &event_id).await {
                debug!(%error, %event_id, "event status write failed");
            }
        }
        if let Ok(counts) = shared.store.queue_counts().await {
            shared
                .metrics
                .queue_depth
                .set(i64::try_from(counts.total()).unwrap_or(i64::MAX));
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

async fn write_endpoint(
    shared: &Shared,
    endpoint: &EndpointRef,
    dead_letters_seen: &mut HashMap<EndpointRef, u64>,
) -> Result<(), WriteError> {
    let Some(resource) = shared.cache.endpoint(&endpoint.namespace, &endpoint.name) else {
        shared.gates.remove(endpoint);
        return Ok(());
    };
    let now = Timestamp::now();
    let stats = shared.store.endpoint_stats(endpoint, now).await?;
    let snapshot = shared.gates.snapshot(endpoint);
    let circuit_state = snapshot.map_or(CircuitState::Closed, |s| s.state);
    let timeout = Duration::from_secs(resource.spec.timeout_seconds.into());
    let delivery = DeliveryStats {
        total_delivered: i64::try_from(stats.delivered_total).unwrap_or(i64::MAX),
        total_failed: i64::try_from(stats.failed_attempts_total).unwrap_or(i64::MAX),
        total_dead_lettered: i64::try_from(stats.dead_lettered_total).unwrap_or(i64::MAX),
        total_retries: i64::try_from(stats.retries_total).unwrap_or(i64::MAX),
        dead_letter_count: i64::try_from(stats.dead_letter_count).unwrap_or(i64::MAX),
        pending: i64::try_from(stats.pending_count + stats.in_flight_count + stats.held_count)
            .unwrap_or(i64::MAX),
        success_rate_last_hour: percent(stats.last_hour.success_rate),
        success_rate_last_day: percent(stats.last_day.success_rate),
        error_rate_last_hour: percent(stats.last_hour.error_rate),
        error_rate_last_day: percent(stats.last_day.error_rate),
        average_response_ms: stats.last_hour.avg_latency_ms.map(|ms| ms.round() as i64),
        p95_response_ms: stats
            .last_hour
            .p95_latency_ms
            .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)),
        uptime: percent(stats.last_day.success_rate.map(|_| {
            // Share of the day's attempts that got an answer other than a server error.
            1.0 - stats.last_day.error_rate.unwrap_or(0.0)
        })),
        health_score: Some(health_score(&stats, circuit_state, timeout)),
        current_rate_per_minute: snapshot.map(|s| s.rate_per_minute.round() as i64),
        last_delivery_time: stats.last_attempt_at.map(rfc3339),
        last_success_time: stats.last_success_at.map(rfc3339),
        last_failure_time: stats.last_failure_at.map(rfc3339),
        last_status_code: stats.last_status_code.map(i32::from),
        last_error: stats.last_error.clone(),
    };
    let since = snapshot.map(|s| {
        let age = Instant::now().saturating_duration_since(s.since);
        rfc3339(now.saturating_sub(age).unwrap_or(now))
    });
    let circuit = CircuitStatus {
        state: match circuit_state {
            CircuitState::Closed => ApiCircuitState::Closed,
            CircuitState::Open => ApiCircuitState::Open,
            CircuitState::HalfOpen => ApiCircuitState::HalfOpen,
        },
        since,
        consecutive_failures: snapshot.map_or(0, |s| i64::from(s.consecutive_failures)),
    };
    let low_success =
        stats.last_hour.attempts >= 5 && stats.last_hour.success_rate.is_some_and(|r| r < 0.5);
    let healthy = match (circuit_state, low_success) {
        (CircuitState::Open, _) => DesiredCondition::new(
            HEALTHY,
            false,
            "CircuitOpen",
            format!(
                "{} consecutive failures opened the circuit; last error: {}",
                circuit.consecutive_failures,
                stats.last_error.clone().unwrap_or_default()
            ),
        ),
        (_, true) => DesiredCondition::new(
            HEALTHY,
            false,
            "LowSuccessRate",
            format!(
                "{} of attempts succeeded in the last hour",
                delivery.success_rate_last_hour.clone().unwrap_or_default()
            ),
        ),
        _ if stats.last_hour.attempts == 0 => DesiredCondition::new(
            HEALTHY,
            true,
            "NoRecentTraffic",
            "no attempts in the last hour",
        ),
        _ => DesiredCondition::new(
            HEALTHY,
            true,
            "Delivering",
            format!(
                "{} of attempts succeeded in the last hour",
                delivery.success_rate_last_hour.clone().unwrap_or_default()
            ),
        ),
    };
    let open = DesiredCondition::new(
        CIRCUIT_OPEN,
        circuit_state == CircuitState::Open,
        if circuit_state == CircuitState::Open {
            "FailureThresholdReached"
        } else {
            "Closed"
        },
        "",
    );
    let current = resource
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let desired = [healthy, open];
    let merged: Vec<_> = conditions::merge(
        current,
        &desired,
        resource.metadata.generation,
        &rfc3339(now),
    )
    .into_iter()
    .filter(|c| desired.iter().any(|d| d.type_ == c.type_))
    .collect();
    let patch = json!({
        "apiVersion": "webhooks.pitchey.io/v1alpha1",
        "kind": "WebhookEndpoint",
        "status": { "delivery": delivery, "circuit": circuit, "conditions": merged }
    });
    let api: Api<WebhookEndpoint> = Api::namespaced(shared.client.clone(), &endpoint.namespace);
    api.patch_status(
        &endpoint.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;

    // Dead letters since the last round, as one aggregated Event.
    let previous = dead_letters_seen.insert(endpoint.clone(), stats.dead_lettered_total);
    if let Some(previous) = previous {
        let new = stats.dead_lettered_total.saturating_sub(previous);
        if new > 0 {
            publish(
                shared,
                resource.as_ref(),
                EventType::Warning,
                "DeliveriesDeadLettered",
                format!(
                    "{new} deliveries dead-lettered; last error: {}",
                    stats.last_error.unwrap_or_default()
                ),
            )
            .await;
        }
    }
    Ok(())
}

async fn write_event(shared: &Shared, event_id: &str) -> Result<(), WriteError> {
    let Some(status) = shared.store.event_status(event_id).await? else {
        return Ok(());
    };
    let EventSource::Resource { name, .. } = &status.event.source else {
        return Ok(());
    };
    let phase = event_phase(&status.deliveries);
    let deliveries: Vec<ApiDeliveryRecord> = status
        .deliveries
        .iter()
        .map(|d| ApiDeliveryRecord {
            endpoint: match &d.replay_id {
                Some(replay) => format!("{} (replay {replay})", d.endpoint.name),
                None => d.endpoint.name.clone(),
            },
            state: state_name(d.state).to_string(),
            attempts: i64::from(d.attempts),
            last_status_code: d.last_status_code.map(i32::from),
            last_error: d.last_error.clone(),
            next_attempt_time: (!d.state.is_finished())
                .then_some(d.next_attempt_at)
                .flatten()
                .map(rfc3339),
            delivered_time: d.delivered_at.map(rfc3339),
        })
        .collect();
    let finished = phase.is_finished().then(|| {
        status
            .deliveries
            .iter()
            .filter_map(|d| d.finished_at)
            .max()
            .unwrap_or_else(Timestamp::now)
    });
    let patch = json!({
        "apiVersion": "webhooks.pitchey.io/v1alpha1",
        "kind": "WebhookEvent",
        "status": {
            "phase": phase_name(phase),
            "eventId": status.event.event_id,
            "deliveries": deliveries,
            "finishedTime": finished.map(rfc3339),
        }
    });
    let api: Api<WebhookEvent> = Api::namespaced(shared.client.clone(), &status.event.namespace);
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    let label = json!({"metadata": {"labels": {PHASE_LABEL: phase_name(phase)}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&label))
        .await?;
    Ok(())
}

/// Publishes a Kubernetes Event about an object; failures are logged only.
pub async fn publish<K: Resource<DynamicType = ()>>(
    shared: &Shared,
    object: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note.chars().take(1000).collect()),
        action: "Deliver".to_string(),
        secondary: None,
    };
    if let Err(error) = shared
        .recorder
        .publish(&event, &object.object_ref(&()))
        .await
    {
        warn!(%error, reason, "publishing a Kubernetes Event failed");
    }
}

/// CircuitOpened / CircuitClosed Events.
pub async fn circuit_event(
    shared: &Shared,
    endpoint: &EndpointRef,
    to: CircuitState,
    result: &HttpResult,
) {
    let Some(resource) = shared.cache.endpoint(&endpoint.namespace, &endpoint.name) else {
        return;
    };
    match to {
        CircuitState::Open => {
            publish(
                shared,
                resource.as_ref(),
                EventType::Warning,
                "CircuitOpened",
                format!(
                    "deliveries paused after consecutive failures; last: {}",
                    result.summary()
                ),
            )
            .await
        }
        CircuitState::Closed => {
            publish(
                shared,
                resource.as_ref(),
                EventType::Normal,
                "CircuitClosed",
                "the endpoint recovered; deliveries resumed".to_string(),
            )
            .await
        }
        CircuitState::HalfOpen => {}
    }
}

/// EndpointGone: the receiver answered 410 Gone.
pub async fn endpoint_gone(shared: &Shared, endpoint: &EndpointRef, result: &HttpResult) {
    if let Some(resource) = shared.cache.endpoint(&endpoint.namespace, &endpoint.name) {
        publish(
            shared,
            resource.as_ref(),
            EventType::Warning,
            "EndpointGone",
            format!(
                "the receiver answered {}; consider suspending or deleting this endpoint",
                result.summary()
            ),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DeliveryId;

    fn delivery(state: DeliveryState) -> DeliveryRecord {
        DeliveryRecord {
            id: DeliveryId(1),
            event_id: "evt_1".into(),
            endpoint: EndpointRef::new("ns", "e"),
            state,
            attempts: 1,
            next_attempt_at: None,
            last_attempt_at: None,
            last_status_code: None,
            last_error: None,
            delivered_at: None,
            dead_letter_reason: None,
            finished_at: None,
            replay_id: None,
            created_at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn phases_follow_the_deliveries() {
        use DeliveryState::*;
        assert_eq!(event_phase(&[]), EventPhase::NoSubscribers);
        assert_eq!(
            event_phase(&[delivery(Delivered), delivery(Pending)]),
            EventPhase::Delivering
        );
        assert_eq!(
            event_phase(&[delivery(Delivered), delivery(Held)]),
            EventPhase::Delivering
        );
        assert_eq!(
            event_phase(&[delivery(Delivered), delivery(Delivered)]),
            EventPhase::Delivered
        );
        assert_eq!(
            event_phase(&[delivery(Delivered), delivery(DeadLettered)]),
            EventPhase::PartiallyFailed
        );
        assert_eq!(event_phase(&[delivery(DeadLettered)]), EventPhase::Failed);
    }

    #[test]
    fn health_score_reflects_success_latency_and_circuit() {
        let mut stats = EndpointStats::default();
        let timeout = Duration::from_secs(30);
        assert_eq!(health_score(&stats, CircuitState::Closed, timeout), 100);
        stats.last_hour.success_rate = Some(0.9);
        assert_eq!(health_score(&stats, CircuitState::Closed, timeout), 90);
        stats.last_hour.p95_latency_ms = Some(20_000);
        assert_eq!(health_score(&stats, CircuitState::Closed, timeout), 80);
        assert_eq!(health_score(&stats, CircuitState::HalfOpen, timeout), 50);
        assert_eq!(health_score(&stats, CircuitState::Open, timeout), 20);
    }
}
