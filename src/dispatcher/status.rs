//! Status write-back: batched server-side apply (field manager `webhook-operator-dispatcher`) of
//! endpoint delivery statistics, circuit state and the last test delivery, and of WebhookEvent
//! phases. Objects changed since the last round are written once per round, so each object gets
//! at most one patch per interval and the API request rate is bounded.
pub mod apply;
mod dead_letters;
pub mod event;
pub mod notices;
mod ordering;
pub mod queue;
mod rate_limit;
pub mod replay;
pub mod windows;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::runtime::events::{Event, EventType};
use kube::Resource;
use serde::Serialize;
use tracing::{debug, warn};

use self::dead_letters::{DeadLetterReport, DeadLetterReports};
use self::queue::{round_budget, Change, StatusQueue};
use self::windows::WindowCache;
use super::Shared;
use crate::api::conditions::{
    self, Condition, DesiredCondition, Reason, CIRCUIT_OPEN, HEALTHY, RATE_REDUCED,
};
use crate::api::endpoint::{
    CircuitState, CircuitStatus, DeliveryStats, OrderingStatus, TestDeliveryStatus,
    WebhookEndpointStatus,
};
use crate::api::WebhookEndpoint;
use crate::delivery::circuit::BreakerState;
use crate::dispatcher::metrics::EndpointLabels;
use crate::store::{EndpointRef, EndpointStats};

pub use apply::FIELD_MANAGER;

/// Objects whose status changed since the last write-back, and the test results that go into
/// endpoint statuses.
#[derive(Default)]
pub struct Dirty {
    endpoints: Mutex<HashMap<EndpointRef, Change>>,
    events: Mutex<HashSet<String>>,
    tests: Mutex<HashMap<EndpointRef, TestDeliveryStatus>>,
}

impl Dirty {
    /// Records a test delivery's result for the next write of the endpoint's status.
    pub fn test_result(&self, endpoint: &EndpointRef, result: TestDeliveryStatus) {
        if let Ok(mut tests) = self.tests.lock() {
            tests.insert(endpoint.clone(), result);
        }
        self.endpoint_state(endpoint);
    }

    /// The last test result this process recorded for the endpoint.
    pub fn last_test(&self, endpoint: &EndpointRef) -> Option<TestDeliveryStatus> {
        self.tests.lock().ok()?.get(endpoint).cloned()
    }

    fn forget_tests(&self, endpoint: &EndpointRef) {
        if let Ok(mut tests) = self.tests.lock() {
            tests.remove(endpoint);
        }
    }

    /// Marks an endpoint whose delivery counters changed: written in turn, within the budget.
    pub fn endpoint(&self, endpoint: &EndpointRef) {
        self.endpoint_changed(endpoint, Change::Counters);
    }

    /// Marks an endpoint whose state changed (circuit, rate cut, dead letters, suspension,
    /// resume): written ahead of counter-only changes.
    pub fn endpoint_state(&self, endpoint: &EndpointRef) {
        self.endpoint_changed(endpoint, Change::State);
    }

    pub fn endpoint_changed(&self, endpoint: &EndpointRef, change: Change) {
        if let Ok(mut map) = self.endpoints.lock() {
            let entry = map.entry(endpoint.clone()).or_insert(change);
            *entry = (*entry).max(change);
        }
    }

    pub fn event(&self, event_id: &str) {
        if let Ok(mut set) = self.events.lock() {
            set.insert(event_id.to_string());
        }
    }

    pub fn take_endpoints(&self) -> Vec<(EndpointRef, Change)> {
        self.endpoints
            .lock()
            .map(|mut map| map.drain().collect())
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
pub fn health_score(stats: &EndpointStats, circuit: BreakerState, timeout: Duration) -> i32 {
    let mut score = stats.last_hour.success_rate.map_or(100.0, |r| r * 100.0);
    let slow = stats
        .last_hour
        .p95_latency_ms
        .is_some_and(|p95| u128::from(p95) * 2 > timeout.as_millis());
    if slow {
        score -= 10.0;
    }
    let cap = match circuit {
        BreakerState::Closed => 100.0,
        BreakerState::HalfOpen => 50.0,
        BreakerState::Open => 20.0,
    };
    score.clamp(0.0, cap).round() as i32
}

/// Writes statuses every `interval` until the task is dropped: each round at most
/// [`round_budget`] endpoints, state changes first (see [`queue`]).
pub async fn run(shared: Arc<Shared>) {
    let interval = Duration::from_secs(shared.config.status_interval_seconds.max(1));
    let budget = round_budget(shared.config.status_writes_per_second, interval.as_secs());
    let mut reports = DeadLetterReports::default();
    let mut windows = WindowCache::default();
    let mut queue = StatusQueue::default();
    loop {
        tokio::time::sleep(interval).await;
        for (endpoint, change) in shared.dirty.take_endpoints() {
            queue.push(endpoint, change);
        }
        // Dead letters held back by the rate limit are reported once their gap has passed, even
        // if nothing else about the endpoint changed.
        for endpoint in reports.take_due(Timestamp::now()) {
            queue.push(endpoint, Change::State);
        }
        let mut written = 0;
        let mut retry = Vec::new();
        while written < budget {
            let Some((endpoint, change)) = queue.pop() else {
                break;
            };
            // One writer per endpoint: its circuit state lives in the replica that owns it.
            if !shared.ownership.owns_endpoint(&endpoint) {
                continue;
            }
            written += 1;
            if let Err(error) = write_endpoint(&shared, &endpoint, &mut reports, &mut windows).await
            {
                debug!(%error, endpoint = %endpoint.name, "endpoint status write failed");
                if error.worth_retrying() {
                    retry.push((endpoint, change));
                }
            }
        }
        for (endpoint, change) in retry {
            queue.push(endpoint, change);
        }
        shared
            .metrics
            .status_writes_waiting
            .set(i64::try_from(queue.len()).unwrap_or(i64::MAX));
        for event_id in shared.dirty.take_events() {
            if let Err(error) = event::write_event(&shared, &event_id).await {
                debug!(%error, %event_id, "event status write failed");
                // Kept for the next round: an API server outage delays a status, never loses it.
                if error.worth_retrying() {
                    shared.dirty.event(&event_id);
                }
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

/// The part of a WebhookEndpoint's status the dispatcher owns under [`FIELD_MANAGER`]. Every
/// apply carries all of it: server-side apply removes a field its manager leaves out.
#[derive(Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatusPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit: Option<CircuitStatus>,
    /// `Healthy`, `CircuitOpen` and `RateReduced` only (the controller owns the others).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_test: Option<TestDeliveryStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering: Option<OrderingStatus>,
}

impl EndpointStatusPatch {
    /// The dispatcher's part of a status as it stands (e.g. in the cache).
    pub fn current(status: Option<&WebhookEndpointStatus>) -> Self {
        let Some(status) = status else {
            return Self::default();
        };
        Self {
            delivery: status.delivery.clone(),
            circuit: status.circuit.clone(),
            conditions: status
                .conditions
                .iter()
                .filter(|c| [HEALTHY, CIRCUIT_OPEN, RATE_REDUCED].contains(&c.type_.as_str()))
                .cloned()
                .collect(),
            last_test: status.last_test.clone(),
            ordering: status.ordering.clone(),
        }
    }

    /// Applies it to the endpoint's status.
    pub async fn apply(
        &self,
        client: &kube::Client,
        endpoint: &EndpointRef,
    ) -> Result<(), kube::Error> {
        apply::apply_status::<WebhookEndpoint>(client, &endpoint.namespace, &endpoint.name, self)
            .await?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

impl WriteError {
    /// Whether the next status round should try again: not when the object is gone (404) or
    /// the API server refused the write as such (400, 422), which a retry would not change.
    fn worth_retrying(&self) -> bool {
        !matches!(self, WriteError::Kube(kube::Error::Api(status))
            if matches!(status.code, 400 | 404 | 422))
    }
}

/// Reports dead letters nobody reported yet: one Event now, or later once the gap since the
/// previous one has passed. Returns what is reported, for the status.
async fn report_dead_letters(
    shared: &Shared,
    resource: &WebhookEndpoint,
    endpoint: &EndpointRef,
    stats: &EndpointStats,
    reports: &mut DeadLetterReports,
    now: Timestamp,
) -> dead_letters::Reported {
    let status = resource.status.as_ref().and_then(|s| s.delivery.as_ref());
    let before = reports.known(endpoint, status);
    let (notice, after) = dead_letters::decide(before, stats.dead_lettered_total, now);
    match notice {
        DeadLetterReport::Nothing => reports.record(endpoint, after, None),
        DeadLetterReport::Wait { due, .. } => reports.record(endpoint, after, Some(due)),
        // Published before the status that records it is written: a crash in between repeats
        // the announcement rather than losing it.
        DeadLetterReport::Publish { count } => {
            let note = format!(
                "{count} {} dead-lettered since the last report; last error: {}",
                if count == 1 { "delivery" } else { "deliveries" },
                stats.last_error.clone().unwrap_or_default()
            );
            let warning = EventType::Warning;
            if raise_kube_event(shared, resource, warning, "DeliveriesDeadLettered", note).await {
                reports.record(endpoint, after, None);
            } else {
                // Try again after a gap rather than every round.
                let retry = now.checked_add(dead_letters::MIN_GAP).unwrap_or(now);
                reports.record(endpoint, before, Some(retry));
                return before;
            }
        }
    }
    after
}

async fn write_endpoint(
    shared: &Shared,
    endpoint: &EndpointRef,
    reports: &mut DeadLetterReports,
    windows: &mut WindowCache,
) -> Result<(), WriteError> {
    let Some(resource) = shared.cache.endpoint(&endpoint.namespace, &endpoint.name) else {
        shared.gates.remove(endpoint);
        shared.dirty.forget_tests(endpoint);
        reports.forget(endpoint);
        windows.forget(endpoint);
        return Ok(());
    };
    let now = Timestamp::now();
    let wanted = windows.wanted(endpoint, Instant::now());
    let mut stats = shared
        .store
        .endpoint_stats_with(endpoint, now, wanted)
        .await?;
    windows.fill(endpoint, Instant::now(), wanted, &mut stats);
    let snapshot = shared.gates.snapshot(endpoint);
    let circuit_state = snapshot.map_or(BreakerState::Closed, |s| s.state);
    let timeout = Duration::from_secs(resource.spec.timeout_seconds.into());
    let reported = report_dead_letters(shared, &resource, endpoint, &stats, reports, now).await;
    let delivery = DeliveryStats {
        total_delivered: i64::try_from(stats.delivered_total).unwrap_or(i64::MAX),
        total_filtered: i64::try_from(stats.filtered_total).unwrap_or(i64::MAX),
        total_failed: i64::try_from(stats.failed_attempts_total).unwrap_or(i64::MAX),
        total_dead_lettered: i64::try_from(stats.dead_lettered_total).unwrap_or(i64::MAX),
        total_retries: i64::try_from(stats.retries_total).unwrap_or(i64::MAX),
        dead_letter_count: i64::try_from(stats.dead_letter_count).unwrap_or(i64::MAX),
        dead_letters_reported: Some(i64::try_from(reported.total).unwrap_or(i64::MAX)),
        dead_letters_reported_time: reported.at.map(rfc3339),
        pending: i64::try_from(
            stats.pending_count + stats.in_flight_count + stats.held_count + stats.queued_count,
        )
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
        uptime: percent(stats.last_day.availability),
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
            BreakerState::Closed => CircuitState::Closed,
            BreakerState::Open => CircuitState::Open,
            BreakerState::HalfOpen => CircuitState::HalfOpen,
        },
        since,
        consecutive_failures: snapshot.map_or(0, |s| i64::from(s.consecutive_failures)),
    };
    let low_success =
        stats.last_hour.attempts >= 5 && stats.last_hour.success_rate.is_some_and(|r| r < 0.5);
    let healthy = match (circuit_state, low_success) {
        (BreakerState::Open, _) => DesiredCondition::new(
            HEALTHY,
            false,
            Reason::CircuitOpen,
            format!(
                "{} consecutive failures opened the circuit; last error: {}",
                circuit.consecutive_failures,
                stats.last_error.clone().unwrap_or_default()
            ),
        ),
        (_, true) => DesiredCondition::new(
            HEALTHY,
            false,
            Reason::LowSuccessRate,
            format!(
                "{} of attempts succeeded in the last hour",
                delivery.success_rate_last_hour.clone().unwrap_or_default()
            ),
        ),
        _ if stats.last_hour.attempts == 0 => DesiredCondition::new(
            HEALTHY,
            true,
            Reason::NoRecentTraffic,
            "no attempts in the last hour",
        ),
        _ => DesiredCondition::new(
            HEALTHY,
            true,
            Reason::Delivering,
            format!(
                "{} of attempts succeeded in the last hour",
                delivery.success_rate_last_hour.clone().unwrap_or_default()
            ),
        ),
    };
    let open = DesiredCondition::new(
        CIRCUIT_OPEN,
        circuit_state == BreakerState::Open,
        if circuit_state == BreakerState::Open {
            Reason::FailureThresholdReached
        } else {
            Reason::Closed
        },
        if circuit_state == BreakerState::Open {
            "deliveries are paused; the breaker probes again after circuitBreaker.openDuration"
        } else {
            "deliveries flow"
        },
    );
    let current = resource
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let reduced = rate_limit::rate_reduced(
        snapshot.as_ref(),
        resource.spec.rate_limit.requests_per_minute,
    );
    if let Some(s) = snapshot.as_ref() {
        shared
            .metrics
            .rate_limit
            .get_or_create(&EndpointLabels::of(endpoint))
            .set(s.rate_per_minute.round() as i64);
    }
    let desired = [healthy, open, reduced];
    let merged: Vec<_> = conditions::merge(
        current,
        &desired,
        resource.metadata.generation,
        &rfc3339(now),
    )
    .into_iter()
    .filter(|c| desired.iter().any(|d| d.type_ == c.type_))
    .collect();
    // The newest test result: recorded here, or already in the status (written by the replica
    // that owned the endpoint before, or by a test this replica did not own).
    let cached_test = resource.status.as_ref().and_then(|s| s.last_test.clone());
    let last_test = super::test_delivery::newest(shared.dirty.last_test(endpoint), cached_test);
    let ordering = ordering::ordering_status(resource.spec.ordering.as_ref(), &stats);
    let before = resource.status.as_ref().and_then(|s| s.ordering.as_ref());
    if let Some(paused_by) = ordering::new_pause(before, ordering.as_ref()) {
        let note = format!(
            "a dead letter paused ordered delivery (onDeadLetter: Pause): event {} ({}); resume \
             with the annotation webhooks.pitchey.io/resume={} (skip it) or =retry:{} (send it again)",
            paused_by.event_id, paused_by.reason, paused_by.event_id, paused_by.event_id
        );
        let warning = EventType::Warning;
        raise_kube_event(shared, &*resource, warning, "OrderedDeliveryPaused", note).await;
    }
    let patch = EndpointStatusPatch {
        delivery: Some(delivery),
        circuit: Some(circuit),
        conditions: merged,
        last_test,
        ordering,
    };
    patch.apply(&shared.client, endpoint).await?;
    Ok(())
}

/// Publishes a Kubernetes Event about an object; failures are logged (and returned as `false`).
pub async fn raise_kube_event<K: Resource<DynamicType = ()>>(
    shared: &Shared,
    object: &K,
    type_: EventType,
    reason: &str,
    note: String,
) -> bool {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note.chars().take(1000).collect()),
        action: "Deliver".to_string(),
        secondary: None,
    };
    match shared
        .recorder
        .publish(&event, &object.object_ref(&()))
        .await
    {
        Ok(()) => true,
        Err(error) => {
            warn!(%error, reason, "publishing a Kubernetes Event failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_writes_are_retried_unless_the_object_is_gone_or_refused() {
        let api = |code: u16| {
            let status = json!({"status": "Failure", "message": "m", "code": code});
            WriteError::Kube(kube::Error::Api(
                serde_json::from_value::<kube::core::Status>(status)
                    .unwrap()
                    .boxed(),
            ))
        };
        assert!(api(500).worth_retrying());
        assert!(api(429).worth_retrying());
        assert!(!api(404).worth_retrying());
        assert!(!api(422).worth_retrying());
        let unreachable = WriteError::Kube(kube::Error::Service("connection refused".into()));
        assert!(unreachable.worth_retrying());
    }
    #[test]
    fn health_score_reflects_success_latency_and_circuit() {
        let mut stats = EndpointStats::default();
        let timeout = Duration::from_secs(30);
        assert_eq!(health_score(&stats, BreakerState::Closed, timeout), 100);
        stats.last_hour.success_rate = Some(0.9);
        assert_eq!(health_score(&stats, BreakerState::Closed, timeout), 90);
        stats.last_hour.p95_latency_ms = Some(20_000);
        assert_eq!(health_score(&stats, BreakerState::Closed, timeout), 80);
        assert_eq!(health_score(&stats, BreakerState::HalfOpen, timeout), 50);
        assert_eq!(health_score(&stats, BreakerState::Open, timeout), 20);
    }

    fn condition(type_: &str) -> Condition {
        Condition {
            type_: type_.into(),
            ..Condition::default()
        }
    }

    #[test]
    fn the_dispatchers_status_part_carries_all_it_owns() {
        let status = WebhookEndpointStatus {
            conditions: vec![
                condition("Ready"),
                condition(HEALTHY),
                condition(CIRCUIT_OPEN),
            ],
            delivery: Some(DeliveryStats {
                total_delivered: 3,
                ..DeliveryStats::default()
            }),
            circuit: Some(CircuitStatus::default()),
            last_test: Some(TestDeliveryStatus {
                nonce: "n".into(),
                ..TestDeliveryStatus::default()
            }),
            delivery_config_map: Some("e-delivery".into()),
            ..WebhookEndpointStatus::default()
        };
        let part = EndpointStatusPatch::current(Some(&status));
        let json = serde_json::to_value(&part).unwrap();
        // The controller's fields stay out; the dispatcher's are all in.
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["circuit", "conditions", "delivery", "lastTest"]);
        let types: Vec<&str> = part.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [HEALTHY, CIRCUIT_OPEN]);
        assert_eq!(json["delivery"]["totalDelivered"], 3);
        assert_eq!(json["lastTest"]["nonce"], "n");
        // Nothing written yet: an empty part, no nulls.
        let empty = serde_json::to_value(EndpointStatusPatch::current(None)).unwrap();
        assert_eq!(empty, json!({}));
    }
}
