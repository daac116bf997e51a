//! The delivery loop: claims due deliveries, gates them per endpoint (suspension, circuit
//! breaker, rate limit, concurrency), sends them without blocking the loop, and records the
//! outcome. A delivery that may not go now is given back to the store, due when its gate opens,
//! so no worker waits on a slow or dead endpoint and nothing is held in memory.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info_span, warn, Instrument};

use super::cache::NotReady;
use super::gate::Gate;
use super::metrics::{DeliveryLabels, EndpointLabels};
use super::Shared;
use crate::api::policy::EffectivePolicy;
use crate::delivery::circuit::{CircuitState, Permit};
use crate::delivery::client::DeliveryRequest;
use crate::delivery::headers::{build_headers, HeaderInputs};
use crate::delivery::outcome::{decide, AttemptResult as HttpResult, Outcome};
use crate::delivery::payload::{self, WebhookRef};
use crate::delivery::retry::RetryPolicy;
use crate::delivery::signing;
use crate::store::{
    AttemptRecord, AttemptResult, ClaimRequest, ClaimedDelivery, DeliveryId,
    EndpointRef, NextStep,
};

/// Claims per round at most.
const CLAIM_BATCH: usize = 512;
/// How often the loop looks for due retries when nothing wakes it.
const POLL: Duration = Duration::from_millis(200);
/// A claim's lease: longer than the longest attempt (timeout ≤ 300 s).
const LEASE: Duration = Duration::from_secs(330);
/// When an endpoint's policy or secret is not there yet.
const NOT_READY_RETRY: Duration = Duration::from_secs(5);

/// Converts a monotonic instant into wall-clock time.
fn wall_clock(at: Instant, now: Instant, now_ts: Timestamp) -> Timestamp {
    let wait = at.saturating_duration_since(now);
    now_ts.saturating_add(wait).unwrap_or(Timestamp::MAX)
}

/// Runs the delivery loop until the task is dropped.
pub async fn run(shared: Arc<Shared>) {
    // Without complete caches an existing endpoint would look deleted.
    if shared.cache.wait_until_ready().await.is_err() {
        return;
    }
    let slots = Arc::new(Semaphore::new(shared.config.concurrency.max(1)));
    loop {
        let free = slots.available_permits();
        let mut claimed_count = 0;
        if free > 0 {
            match claim_round(&shared, &slots, free.min(CLAIM_BATCH)).await {
                Ok(count) => claimed_count = count,
                Err(error) => {
                    warn!(%error, "claiming due deliveries failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        if claimed_count == 0 || slots.available_permits() == 0 {
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// One claim: sends what may go now, gives the rest back. Returns how many were claimed.
async fn claim_round(
    shared: &Arc<Shared>,
    slots: &Arc<Semaphore>,
    limit: usize,
) -> Result<usize, crate::store::StoreError> {
    let now_ts = Timestamp::now();
    let claimed = shared
        .store
        .claim_due(ClaimRequest {
            now: now_ts,
            limit,
            per_endpoint_limit: Some(shared.config.per_endpoint_concurrency.max(1)),
            owner: shared.owner.clone(),
            lease: LEASE,
            scope: shared.ownership.claim_scope(),
        })
        .await?;
    let count = claimed.len();
    let now = Instant::now();
    let mut deferred: HashMap<Timestamp, Vec<DeliveryId>> = HashMap::new();
    for delivery in claimed {
        let endpoint = delivery.delivery.endpoint.clone();
        let policy = match shared.cache.policy(&endpoint.namespace, &endpoint.name) {
            Ok(policy) => policy,
            Err(NotReady::EndpointGone(_)) => {
                let reason = "the WebhookEndpoint was deleted".to_string();
                finish_without_attempt(shared, &delivery, reason).await;
                continue;
            }
            Err(other) => {
                debug!(endpoint = %format!("{}/{}", endpoint.namespace, endpoint.name), reason = %other, "deferring");
                let at = now_ts
                    .saturating_add(NOT_READY_RETRY)
                    .unwrap_or(Timestamp::MAX);
                deferred.entry(at).or_default().push(delivery.delivery.id);
                continue;
            }
        };
        // Suspension is read from the endpoint itself: the ConfigMap may lag behind it.
        let suspended = shared
            .cache
            .endpoint(&endpoint.namespace, &endpoint.name)
            .is_some_and(|e| e.spec.suspend);
        if suspended {
            // Hold the endpoint; this delivery goes back and becomes Held too.
            if let Err(error) = shared.store.hold_endpoint(endpoint.clone(), now_ts).await {
                warn!(%error, "holding a suspended endpoint failed");
            }
            deferred
                .entry(now_ts)
                .or_default()
                .push(delivery.delivery.id);
            continue;
        }
        match shared.gates.acquire(
            &endpoint,
            &policy,
            now,
            shared.config.per_endpoint_concurrency,
        ) {
            Gate::Later(at) => {
                let at = wall_clock(at, now, now_ts);
                deferred.entry(at).or_default().push(delivery.delivery.id);
            }
            Gate::Go(permit) => {
                let slot = match slots.clone().try_acquire_owned() {
                    Ok(slot) => slot,
                    Err(_) => {
                        shared.gates.abandon(&endpoint, permit);
                        deferred
                            .entry(now_ts)
                            .or_default()
                            .push(delivery.delivery.id);
                        continue;
                    }
                };
                let shared = shared.clone();
                let span = info_span!(
                    "delivery",
                    event_id = %delivery.event.event_id,
                    namespace = %endpoint.namespace,
                    endpoint = %endpoint.name,
                    attempt = delivery.delivery.attempts + 1,
                );
                tokio::spawn(
                    async move { attempt(shared, delivery, policy, permit, slot).await }
                        .instrument(span),
                );
            }
        }
    }
    for (at, ids) in deferred {
        if let Err(error) = shared.store.defer(shared.owner.clone(), ids, at).await {
            warn!(%error, "giving deliveries back failed; their lease expiry brings them back");
        }
    }
    Ok(count)
}

/// Dead-letters a delivery that cannot be attempted at all (its endpoint is gone).
async fn finish_without_attempt(shared: &Shared, delivery: &ClaimedDelivery, reason: String) {
    let record = AttemptRecord {
        at: Timestamp::now(),
        attempt: delivery.delivery.attempts + 1,
        status_code: None,
        latency_ms: None,
        error: Some(reason.clone()),
        response_snippet: None,
    };
    let result = AttemptResult {
        delivery_id: delivery.delivery.id,
        owner: shared.owner.clone(),
        record,
        next: NextStep::DeadLetter { reason },
    };
    if let Err(error) = shared.store.record_attempt(result).await {
        warn!(%error, "recording a dead letter failed");
    }
    shared.dirty.event(&delivery.event.event_id);
}

/// A request ready to send.
pub struct Prepared {
    pub request: DeliveryRequest,
}

/// Why a delivery could not be turned into a request.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    NotReady(#[from] NotReady),
    #[error("the endpoint URL is invalid: {0}")]
    Url(String),
    #[error("the event cannot be rendered: {0}")]
    Payload(String),
    #[error("signing failed: {0}")]
    Signing(String),
}

impl PrepareError {
    /// Whether waiting can fix it (a Secret or ConfigMap that is not there yet).
    fn is_transient(&self) -> bool {
        matches!(self, PrepareError::NotReady(_))
    }
}

/// Renders, signs and builds the request of one attempt.
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    shared: &Shared,
    endpoint: &EndpointRef,
    policy: &EffectivePolicy,
    event_id: &str,
    event_type: &str,
    created_at: Timestamp,
    data: &serde_json::Map<String, serde_json::Value>,
    attempt: u32,
) -> Result<Prepared, PrepareError> {
    let keys = shared
        .cache
        .signing_keys(&endpoint.namespace, &endpoint.name, policy)?;
    let custom = shared
        .cache
        .headers(&endpoint.namespace, &endpoint.name, policy)?;
    let url = url::Url::parse(&policy.url).map_err(|e| PrepareError::Url(e.to_string()))?;
    let webhook = WebhookRef {
        id: format!("{}/{}", endpoint.namespace, endpoint.name),
        name: policy.display_name.clone(),
    };
    let body = payload::render(event_id, created_at, &webhook, event_type, data)
        .map_err(|e| PrepareError::Payload(e.to_string()))?;
    let signature = signing::sign(
        policy.signing.scheme,
        &keys,
        event_id,
        Timestamp::now().as_second(),
        &body,
    )
    .map_err(|e| PrepareError::Signing(e.to_string()))?;
    let built = build_headers(HeaderInputs {
        event_id,
        event_type,
        attempt,
        signature: &signature,
        custom: &custom,
    })
    .map_err(|e| PrepareError::Signing(e.to_string()))?;
    Ok(Prepared {
        request: DeliveryRequest {
            url,
            headers: built.headers,
            body,
            timeout: Duration::from_secs(policy.timeout_seconds.into()),
        },
    })
}

/// One attempt of one delivery.
async fn attempt(
    shared: Arc<Shared>,
    delivery: ClaimedDelivery,
    policy: EffectivePolicy,
    permit: Permit,
    _slot: OwnedSemaphorePermit,
) {
    let endpoint = delivery.delivery.endpoint.clone();
    let attempt_number = delivery.delivery.attempts + 1;
    let event = &delivery.event;
    let data: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&event.data).unwrap_or_default();
    let prepared = prepare(
        &shared,
        &endpoint,
        &policy,
        &event.event_id,
        &event.event_type,
        event.created_at,
        &data,
        attempt_number,
    );
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            shared.gates.abandon(&endpoint, permit);
            if error.is_transient() {
                let at = Timestamp::now()
                    .saturating_add(NOT_READY_RETRY)
                    .unwrap_or(Timestamp::MAX);
                warn!(%error, "delivery not ready; retrying later");
                let _ = shared
                    .store
                    .defer(shared.owner.clone(), vec![delivery.delivery.id], at)
                    .await;
            } else {
                warn!(%error, "delivery cannot be prepared; dead-lettering");
                finish_without_attempt(&shared, &delivery, error.to_string()).await;
            }
            return;
        }
    };

    shared.metrics.in_flight.inc();
    let result = shared.http.send(&prepared.request).await;
    shared.metrics.in_flight.dec();
    let now_ts = Timestamp::now();
    let transition = shared
        .gates
        .finish(&endpoint, permit, &result, Instant::now());
    let retry_policy = RetryPolicy::from(&policy.retry);
    let outcome = decide(
        &retry_policy,
        &result,
        attempt_number,
        now_ts,
        rand::random::<f64>(),
    );
    observe(&shared, &endpoint, &result, &outcome);
    if transition.from != transition.to {
        circuit_changed(&shared, &endpoint, transition.to, &result).await;
    }

    let next = match &outcome {
        Outcome::Delivered { .. } => NextStep::Delivered,
        Outcome::Retry { at, .. } => NextStep::Retry { at: *at },
        Outcome::DeadLetter { reason, .. } => NextStep::DeadLetter {
            reason: reason.clone(),
        },
        Outcome::Blocked { reason } => NextStep::DeadLetter {
            reason: format!("destination refused by the egress policy: {reason}"),
        },
    };
    if let Outcome::DeadLetter {
        endpoint_gone: true,
        ..
    } = &outcome
    {
        super::status::endpoint_gone(&shared, &endpoint, &result).await;
    }
    let record = AttemptRecord {
        at: now_ts,
        attempt: attempt_number,
        status_code: result.status,
        latency_ms: Some(u64::try_from(result.latency.as_millis()).unwrap_or(u64::MAX)),
        error: (!result.is_success()).then(|| result.summary()),
        response_snippet: (!result.body_snippet.is_empty()).then(|| result.body_snippet.clone()),
    };
    let recorded = shared
        .store
        .record_attempt(AttemptResult {
            delivery_id: delivery.delivery.id,
            owner: shared.owner.clone(),
            record,
            next,
        })
        .await;
    if let Err(error) = recorded {
        warn!(%error, "recording the attempt failed; the lease expiry makes it due again");
    }
    debug!(outcome = outcome.as_str(), status = ?result.status, "attempt finished");
    shared.dirty.endpoint(&endpoint);
    shared.dirty.event(&delivery.event.event_id);
    if matches!(outcome, Outcome::Retry { .. }) {
        shared.wake.notify_one();
    }
}

fn observe(shared: &Shared, endpoint: &EndpointRef, result: &HttpResult, outcome: &Outcome) {
    let labels = EndpointLabels {
        namespace: endpoint.namespace.clone(),
        endpoint: endpoint.name.clone(),
    };
    shared
        .metrics
        .deliveries
        .get_or_create(&DeliveryLabels {
            namespace: endpoint.namespace.clone(),
            endpoint: endpoint.name.clone(),
            outcome: outcome.as_str(),
        })
        .inc();
    shared
        .metrics
        .attempt_latency
        .get_or_create(&labels)
        .observe(result.latency.as_secs_f64());
    match outcome {
        Outcome::Retry { .. } => {
            shared.metrics.retries.get_or_create(&labels).inc();
        }
        Outcome::DeadLetter { .. } | Outcome::Blocked { .. } => {
            shared.metrics.dead_letters.get_or_create(&labels).inc();
        }
        Outcome::Delivered { .. } => {}
    }
}

async fn circuit_changed(
    shared: &Shared,
    endpoint: &EndpointRef,
    to: CircuitState,
    result: &HttpResult,
) {
    let value = match to {
        CircuitState::Closed => 0,
        CircuitState::HalfOpen => 1,
        CircuitState::Open => 2,
    };
    shared
        .metrics
        .circuit_state
        .get_or_create(&EndpointLabels {
            namespace: endpoint.namespace.clone(),
            endpoint: endpoint.name.clone(),
        })
        .set(value);
    super::status::circuit_event(shared, endpoint, to, result).await;
    shared.dirty.endpoint(endpoint);
}
