//! One attempt of one delivery, as typed stages: [`prepare`] builds the request (or says why it
//! cannot be built), [`send`] performs it and reports to the endpoint's gate, [`decide`] turns
//! the answer into what happens next, and the result goes to the recorder. No Kubernetes call
//! is made here: circuit changes and gone receivers are queued as notices for the status task.
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::security::{SecurityEvent, SecurityKind};
use jiff::Timestamp;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info_span, warn, Instrument};

use super::ahead::{stored_parts, webhook_ref, Ahead, Queued};
use super::lookup::EndpointLookup;
use super::recorder::{finish_without_attempt, status_event, Recorded, ToRecorder};
use super::{Deps, Engine, NOT_READY_RETRY};
use crate::api::policy::EffectivePolicy;
use crate::api::validation::url_problems;
use crate::delivery::circuit::Permit;
use crate::delivery::outcome::{self, HttpResult, Outcome};
use crate::delivery::request::{
    build_request_with_body, render_body, DeliveryRequest, Destination, EventParts,
};
use crate::delivery::retry::RetryPolicy;
use crate::dispatcher::cache::NotReady;
use crate::dispatcher::gate::Transition;
use crate::dispatcher::metrics::{EndpointLabels, NamespaceLabels, RateCutLabels};
use crate::dispatcher::status::notices::EndpointNotice;
use crate::runtime::trace_context;
use crate::store::{AttemptRecord, AttemptResult, ClaimedDelivery, EndpointRef, NextStep};
use crate::transform::{Output, TransformError, TransformPool};

/// Sends a delivery, then, on the same task and slot, the deliveries waiting for its endpoint
/// as long as they may go.
pub(super) async fn send_all(
    engine: Arc<Engine>,
    mut queued: Queued,
    mut policy: Arc<EffectivePolicy>,
    mut permit: Permit,
    slot: OwnedSemaphorePermit,
) {
    loop {
        let Queued { delivery, ahead } = queued;
        let endpoint = delivery.delivery.endpoint.clone();
        let span = info_span!(
            "delivery",
            event_id = %delivery.event.event_id,
            namespace = %endpoint.namespace,
            endpoint = %endpoint.name,
            attempt = delivery.delivery.attempts + 1,
        );
        // A child of the trace the event was published in (when spans are exported).
        trace_context::set_parent(&span, delivery.event.trace_parent.as_deref());
        attempt(&engine, delivery, ahead, &policy, permit)
            .instrument(span)
            .await;
        if engine.stopping() {
            // Shutting down: the deliveries waiting for this endpoint go back to the store.
            break;
        }
        match engine.next_waiting(&endpoint).await {
            Some(next) => (queued, policy, permit) = next,
            None => break,
        }
    }
    engine.release(slot);
}

/// Stage 1: what the attempt does.
pub enum Prepared {
    /// Send this request.
    Send(Box<DeliveryRequest>),
    /// The endpoint's transform dropped the event (jq `empty`): nothing is sent, and the
    /// delivery ends `Filtered`.
    Filtered,
}

/// Why a delivery could not be turned into a request.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    NotReady(#[from] NotReady),
    #[error(transparent)]
    Request(#[from] crate::delivery::request::RequestError),
    #[error("the URL read from urlFrom is not usable: {0}")]
    UrlFrom(String),
    /// The dead letter's reason starts with `transform:`.
    #[error("transform: {0}")]
    Transform(#[from] TransformError),
}

impl PrepareError {
    /// Whether waiting can fix it (a Secret or ConfigMap that is not there yet, a transform
    /// worker that could not be started).
    pub(super) fn is_transient(&self) -> bool {
        match self {
            PrepareError::NotReady(_) => true,
            PrepareError::Transform(error) => error.is_transient(),
            PrepareError::Request(_) | PrepareError::UrlFrom(_) => false,
        }
    }
}

/// Builds attempt number `attempt` of `event` to `endpoint`: its signing keys and custom headers
/// from the lookup, the payload through the endpoint's transform if it has one (its output taken
/// from `ahead` when it ran ahead with the program the endpoint has now), then the pure request
/// building, signed now over the bytes sent.
pub async fn prepare(
    endpoints: &dyn EndpointLookup,
    transforms: &TransformPool,
    endpoint: &EndpointRef,
    policy: &EffectivePolicy,
    event: &EventParts<'_>,
    attempt: u32,
    ahead: Option<Ahead>,
) -> Result<Prepared, PrepareError> {
    let keys = endpoints.signing_keys(endpoint, policy)?;
    let custom = endpoints.headers(endpoint, policy)?;
    let url = endpoints.url(endpoint, policy)?;
    if policy.url_from.is_some() {
        // Checked here, as the controller checks `url`: the Secret is read only now. Plain
        // http:// passes; the egress policy decides it at connect time, as for `url`.
        if let Some(problem) = url_problems(&url, true) {
            return Err(PrepareError::UrlFrom(problem));
        }
    }
    let webhook = webhook_ref(endpoint, policy);
    let to = Destination {
        url: &url,
        method: policy.method,
        webhook: &webhook,
        scheme: policy.signing.scheme,
        keys: &keys,
        custom: &custom,
        timeout: Duration::from_secs(policy.timeout_seconds.into()),
    };
    let body = match &policy.transform {
        None => render_body(&webhook, event)?,
        Some(program) => {
            let ran_ahead = match ahead {
                Some(ahead) => ahead.output_for(policy, transforms).await,
                None => None,
            };
            // The payload is rendered only when the transform has not run ahead on it.
            let output = match ran_ahead {
                Some(output) => output,
                None => {
                    let payload = render_body(&webhook, event)?;
                    transforms.run(program.clone(), payload).await
                }
            };
            match output? {
                Output::Body(transformed) => transformed.into(),
                Output::Filtered => return Ok(Prepared::Filtered),
            }
        }
    };
    let request = build_request_with_body(&to, event, body, attempt, Timestamp::now())?;
    Ok(Prepared::Send(Box::new(request)))
}

/// Stage 2: the request was sent; the gate knows how it went.
struct Sent {
    result: HttpResult,
    at: Timestamp,
    transition: Transition,
}

/// Stage 3: what happens to the delivery next.
struct Decided {
    outcome: Outcome,
    next: NextStep,
}

/// What one attempt works with, borrowed for its duration.
struct AttemptContext<'a> {
    deps: &'a Deps,
    delivery: &'a ClaimedDelivery,
    endpoint: &'a EndpointRef,
    policy: &'a EffectivePolicy,
    number: u32,
}

/// One attempt of one delivery; its result goes to the recorder.
async fn attempt(
    engine: &Engine,
    delivery: ClaimedDelivery,
    ahead: Option<Ahead>,
    policy: &EffectivePolicy,
    permit: Permit,
) {
    let deps = &*engine.deps;
    let endpoint = delivery.delivery.endpoint.clone();
    let cx = AttemptContext {
        deps,
        delivery: &delivery,
        endpoint: &endpoint,
        policy,
        number: delivery.delivery.attempts + 1,
    };
    if policy.transform.is_some() {
        let source = Ahead::source(ahead.as_ref(), policy);
        deps.metrics.count_transform_output(source);
    }
    let mut request = match prepare_stored(&cx, ahead).await {
        Ok(Prepared::Send(request)) => request,
        Ok(Prepared::Filtered) => {
            deps.gates.abandon(&endpoint, permit);
            filtered(engine, &cx).await;
            return;
        }
        Err(error) => {
            deps.gates.abandon(&endpoint, permit);
            not_prepared(engine, &cx, error).await;
            return;
        }
    };
    // The receiver joins the trace: this attempt's span, or the producer's context as it came.
    if let Some(traceparent) = trace_context::of_span(
        &tracing::Span::current(),
        delivery.event.trace_parent.as_deref(),
    )
    .and_then(|t| http::HeaderValue::from_str(&t).ok())
    {
        request
            .headers
            .insert(trace_context::TRACEPARENT, traceparent);
    }
    let sent = send(&cx, &request, permit).await;
    let decided = decide(&cx, &sent);
    observe(&cx, &sent, &decided);
    let recorded = Recorded {
        result: AttemptResult {
            delivery_id: delivery.delivery.id,
            owner: deps.owner.clone(),
            record: attempt_record(&cx, &sent),
            next: decided.next,
            pause_on_dead_letter: policy.pauses_on_dead_letter(),
        },
        endpoint: endpoint.clone(),
        event_id: status_event(&delivery).map(str::to_owned),
        wake: matches!(decided.outcome, Outcome::Retry { .. }) || delivery.delivery.lane.is_some(),
    };
    hand_over(engine, recorded).await;
}

/// Stage 1 for a stored delivery: [`prepare`] with the canonical data the store keeps (spliced
/// into the body, not parsed; unreadable data dead-letters the delivery with its reason), and
/// the transform's output if it ran ahead.
async fn prepare_stored(
    cx: &AttemptContext<'_>,
    ahead: Option<Ahead>,
) -> Result<Prepared, PrepareError> {
    prepare(
        &*cx.deps.endpoints,
        &cx.deps.transforms,
        cx.endpoint,
        cx.policy,
        &stored_parts(cx.delivery),
        cx.number,
        ahead,
    )
    .await
}

/// The transform dropped the event: the delivery ends `Filtered` (logged as an attempt that
/// sent nothing; not a failure, not retried), through the recorder like any result.
async fn filtered(engine: &Engine, cx: &AttemptContext<'_>) {
    debug!("the transform filtered the event; nothing sent");
    cx.deps.metrics.count_attempt(cx.endpoint, "filtered");
    let delivery = cx.delivery;
    let recorded = Recorded {
        result: AttemptResult {
            delivery_id: delivery.delivery.id,
            owner: cx.deps.owner.clone(),
            record: AttemptRecord {
                at: Timestamp::now(),
                attempt: cx.number,
                status_code: None,
                latency_ms: None,
                error: None,
                response_snippet: None,
            },
            next: NextStep::Filtered,
            pause_on_dead_letter: false,
        },
        endpoint: cx.endpoint.clone(),
        event_id: status_event(delivery).map(str::to_owned),
        wake: delivery.delivery.lane.is_some(),
    };
    hand_over(engine, recorded).await;
}

/// Hands a result to the recorder; until it is recorded, the delivery stays in flight under its
/// lease, so a crash in between makes the attempt again.
async fn hand_over(engine: &Engine, recorded: Recorded) {
    if engine
        .results
        .send(ToRecorder::Result(Box::new(recorded)))
        .await
        .is_err()
    {
        warn!("the attempt recorder stopped; the lease expiry makes the delivery due again");
    }
}

/// A delivery that could not be prepared: back to the store when waiting can fix it (a Secret
/// or ConfigMap not there yet), dead-lettered with the reason otherwise.
async fn not_prepared(engine: &Engine, cx: &AttemptContext<'_>, error: PrepareError) {
    if error.is_transient() {
        let at = Timestamp::now()
            .saturating_add(NOT_READY_RETRY)
            .unwrap_or(Timestamp::MAX);
        warn!(%error, "delivery not ready; retrying later");
        engine.defer(vec![cx.delivery.delivery.id], at).await;
    } else {
        warn!(%error, "delivery cannot be prepared; dead-lettering");
        let pause = cx.policy.pauses_on_dead_letter();
        finish_without_attempt(cx.deps, cx.delivery, error.to_string(), pause).await;
    }
}

/// Stage 2: sends the request and reports the answer to the endpoint's gate.
async fn send(cx: &AttemptContext<'_>, request: &DeliveryRequest, permit: Permit) -> Sent {
    let deps = cx.deps;
    deps.metrics.in_flight.inc();
    let result = deps.http.send(request).await;
    deps.metrics.in_flight.dec();
    let transition = deps
        .gates
        .finish(cx.endpoint, permit, &result, Instant::now());
    Sent {
        result,
        at: Timestamp::now(),
        transition,
    }
}

/// Stage 3: the retry policy's verdict on the answer. Pure but for the jitter's randomness.
fn decide(cx: &AttemptContext<'_>, sent: &Sent) -> Decided {
    let retry_policy = RetryPolicy::from(&cx.policy.retry);
    let outcome = outcome::decide(
        &retry_policy,
        &sent.result,
        cx.number,
        sent.at,
        rand::random::<f64>(),
    );
    let next = next_step(&outcome);
    debug!(outcome = outcome.as_str(), status = ?sent.result.status, "attempt finished");
    Decided { outcome, next }
}

/// What the store does with the delivery after an outcome.
fn next_step(outcome: &Outcome) -> NextStep {
    match outcome {
        Outcome::Delivered { .. } => NextStep::Delivered,
        Outcome::Retry { at, .. } => NextStep::Retry { at: *at },
        Outcome::DeadLetter { reason, .. } => NextStep::DeadLetter {
            reason: reason.clone(),
        },
        Outcome::Blocked { reason } => NextStep::DeadLetter {
            reason: format!("destination refused by the egress policy: {reason}"),
        },
    }
}

/// The attempt as the store's log keeps it.
fn attempt_record(cx: &AttemptContext<'_>, sent: &Sent) -> AttemptRecord {
    let result = &sent.result;
    AttemptRecord {
        at: sent.at,
        attempt: cx.number,
        status_code: result.status,
        latency_ms: Some(u64::try_from(result.latency.as_millis()).unwrap_or(u64::MAX)),
        error: (!result.is_success()).then(|| result.summary()),
        response_snippet: (!result.body_snippet.is_empty()).then(|| result.body_snippet.clone()),
    }
}

/// Metrics of the attempt, and notices for the status task (circuit changes, a gone receiver).
fn observe(cx: &AttemptContext<'_>, sent: &Sent, decided: &Decided) {
    let (deps, endpoint) = (cx.deps, cx.endpoint);
    let labels = EndpointLabels::of(endpoint);
    deps.metrics
        .count_attempt(endpoint, decided.outcome.as_str());
    deps.metrics
        .attempt_latency
        .get_or_create(&labels)
        .observe(sent.result.latency.as_secs_f64());
    match &decided.outcome {
        Outcome::Retry { .. } => {
            deps.metrics.retries.get_or_create(&labels).inc();
        }
        Outcome::DeadLetter { endpoint_gone, .. } => {
            deps.metrics.count_dead_letter(endpoint);
            if *endpoint_gone {
                deps.notices.send(EndpointNotice::ReceiverGone {
                    endpoint: endpoint.clone(),
                    last_attempt: sent.result.summary(),
                });
            }
        }
        Outcome::Blocked { reason } => {
            deps.metrics.count_dead_letter(endpoint);
            deps.security.record(
                SecurityEvent::new(
                    SecurityKind::DestinationRefused,
                    format!("destination refused by the egress policy: {reason}"),
                )
                .endpoint(&endpoint.namespace, &endpoint.name)
                .address(sent.result.refused_address.clone()),
            );
        }
        Outcome::Delivered { .. } => {
            // Accepted → delivered, for the SLO; a replay's wait since the original acceptance
            // says nothing about delivery speed.
            if cx.delivery.delivery.replay_id.is_none() {
                let waited = sent.at.duration_since(cx.delivery.event.created_at);
                let labels = NamespaceLabels {
                    namespace: endpoint.namespace.clone(),
                };
                deps.metrics
                    .end_to_end
                    .get_or_create(&labels)
                    .observe(waited.as_secs_f64().max(0.0));
            }
        }
    }
    let transition = sent.transition;
    if let Some(cut) = transition.rate_cut {
        let labels = RateCutLabels {
            namespace: endpoint.namespace.clone(),
            endpoint: endpoint.name.clone(),
            reason: cut.reason.as_str(),
        };
        deps.metrics.rate_cuts.get_or_create(&labels).inc();
        if !transition.rate_was_cut {
            deps.notices.send(EndpointNotice::RateReduced {
                endpoint: endpoint.clone(),
                why: cut.reason.to_string(),
                rate_per_minute: cut.rate_per_minute().round() as u64,
            });
        }
        deps.dirty.endpoint_state(endpoint);
    }
    if transition.from != transition.to {
        deps.metrics.set_circuit(endpoint, transition.to);
        deps.notices.send(EndpointNotice::CircuitChanged {
            endpoint: endpoint.clone(),
            to: transition.to,
            last_attempt: sent.result.summary(),
        });
        deps.dirty.endpoint_state(endpoint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_destinations_and_dead_letters_end_the_delivery_with_their_reason() {
        let blocked = next_step(&Outcome::Blocked {
            reason: "169.254.169.254 is a metadata address".into(),
        });
        assert!(matches!(
            blocked,
            NextStep::DeadLetter { ref reason } if reason.starts_with("destination refused by the egress policy: 169.254")
        ));
        let at: Timestamp = "2024-01-01T00:00:01Z".parse().unwrap();
        assert!(matches!(
            next_step(&Outcome::Retry {
                at,
                after: Duration::from_secs(1),
                reason: "503".into()
            }),
            NextStep::Retry { at: t } if t == at
        ));
    }
}
