//! The delivery loop: claims due deliveries, gates them per endpoint (suspension, circuit
//! breaker, rate limit, concurrency), sends them without blocking the loop, and records the
//! outcomes in batches. A claim takes of each endpoint only what its concurrency can take: its
//! attempts in flight plus as many waiting behind them, in memory under their lease, that go on
//! the task of the next attempt to that endpoint that finishes (no store round trip, no fixed
//! delay). A delivery that may not go for another reason (circuit open, rate limit, suspended)
//! is given back to the store, due when its gate opens, so no worker waits on a slow or dead
//! endpoint.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info_span, warn, Instrument};

use super::cache::{NotReady, PolicyCache};
use super::gate::Gate;
use super::metrics::EndpointLabels;
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
    AttemptRecord, AttemptResult, ClaimRequest, ClaimedDelivery, DeliveryId, EndpointCaps,
    EndpointRef, EventSource, NextStep, RecordOutcome,
};

/// Claims per round at most.
const CLAIM_BATCH: usize = 512;
/// How often the loop looks for due retries when nothing wakes it.
const POLL: Duration = Duration::from_millis(200);
/// A claim's lease: longer than the longest attempt (timeout ≤ 300 s).
const LEASE: Duration = Duration::from_secs(330);
/// When an endpoint's policy or secret is not there yet.
const NOT_READY_RETRY: Duration = Duration::from_secs(5);
/// When a delivery claimed for an endpoint whose attempts in flight and waiting deliveries are
/// all taken comes back (rare: claims are capped by what each endpoint can take).
const BUSY_RETRY: Duration = Duration::from_millis(250);
/// Attempt results recorded per store job at most.
const RECORD_BATCH: usize = 1024;
/// Attempt results that may wait for the recorder before attempt tasks wait for it.
const RECORD_QUEUE: usize = 4096;
/// How long a stopping loop waits for the recorder to commit the results of finished attempts.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Converts a monotonic instant into wall-clock time.
fn wall_clock(at: Instant, now: Instant, now_ts: Timestamp) -> Timestamp {
    let wait = at.saturating_duration_since(now);
    now_ts.saturating_add(wait).unwrap_or(Timestamp::MAX)
}

/// How many deliveries a claim may take of each busy endpoint: each endpoint may have
/// `per_endpoint` attempts in flight and as many claimed deliveries waiting behind them, so a
/// claim takes at most what fills that, and at most `per_endpoint` a round. Only endpoints capped
/// below `per_endpoint` are named. Pure.
pub fn claim_caps<'a>(
    in_flight: impl IntoIterator<Item = (&'a EndpointRef, usize)>,
    waiting: impl IntoIterator<Item = (&'a EndpointRef, usize)>,
    per_endpoint: usize,
) -> EndpointCaps {
    let mut taken: HashMap<&EndpointRef, usize> = HashMap::new();
    for (endpoint, count) in in_flight.into_iter().chain(waiting) {
        *taken.entry(endpoint).or_default() += count;
    }
    let room = per_endpoint.saturating_mul(2);
    taken
        .into_iter()
        .map(|(endpoint, taken)| (endpoint, room.saturating_sub(taken).min(per_endpoint)))
        .filter(|(_, cap)| *cap < per_endpoint)
        .map(|(endpoint, cap)| (endpoint.clone(), cap))
        .collect()
}

/// The delivery loop's state, shared with its attempt tasks.
struct Engine {
    shared: Arc<Shared>,
    /// Attempts in flight over all endpoints (`--concurrency`).
    slots: Arc<Semaphore>,
    /// Claimed deliveries whose endpoint had its maximum in flight, per endpoint, oldest first.
    /// They wait under their lease (not in the store) and go on the task of the next attempt to
    /// that endpoint that finishes. At most `per_endpoint_concurrency` per endpoint; only busy
    /// endpoints have any, so at most `concurrency` in all.
    waiting: Mutex<HashMap<EndpointRef, VecDeque<ClaimedDelivery>>>,
    /// Parsed endpoint policies, by ConfigMap version.
    policies: PolicyCache,
    /// Attempt results on their way to the store (see [`record_results`]).
    results: mpsc::Sender<ToRecorder>,
    /// Turns true on shutdown: no attempt starts any more (see [`drain`]).
    stop: watch::Receiver<bool>,
}

/// What becomes of a claimed delivery.
enum Admission {
    /// Send it now (the gate's permit; the caller finds a slot).
    Go(Box<ClaimedDelivery>, Arc<EffectivePolicy>, Permit),
    /// Waiting behind its endpoint's attempts in flight.
    Waiting,
    /// Give it back to the store, due at this time.
    Defer(Timestamp, DeliveryId),
    /// Nothing more to do (dead-lettered because its endpoint is gone).
    Done,
}

impl Engine {
    fn per_endpoint(&self) -> usize {
        self.shared.config.per_endpoint_concurrency.max(1)
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn lock_waiting(&self) -> MutexGuard<'_, HashMap<EndpointRef, VecDeque<ClaimedDelivery>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The caps of the next claim (see [`claim_caps`]).
    fn caps(&self) -> EndpointCaps {
        let in_flight = self.shared.gates.in_flight();
        let waiting = self.lock_waiting();
        claim_caps(
            in_flight.iter().map(|(e, n)| (e, *n)),
            waiting.iter().map(|(e, q)| (e, q.len())),
            self.per_endpoint(),
        )
    }

    /// Decides what becomes of a delivery claimed (or waiting) now.
    async fn admit(&self, delivery: ClaimedDelivery, now: Instant, now_ts: Timestamp) -> Admission {
        let shared = &self.shared;
        let endpoint = &delivery.delivery.endpoint;
        // Its partition moved to another replica while it waited: give it back, due now, so the
        // new owner (one sender per endpoint) takes it.
        if !shared.ownership.owns_endpoint(endpoint) {
            return Admission::Defer(now_ts, delivery.delivery.id);
        }
        let policy = match self
            .policies
            .get(&shared.cache, &endpoint.namespace, &endpoint.name)
        {
            Ok(policy) => policy,
            Err(NotReady::EndpointGone(_)) => {
                let reason = "the WebhookEndpoint was deleted".to_string();
                finish_without_attempt(shared, &delivery, reason).await;
                return Admission::Done;
            }
            Err(other) => {
                debug!(endpoint = %format!("{}/{}", endpoint.namespace, endpoint.name), reason = %other, "deferring");
                let at = now_ts
                    .saturating_add(NOT_READY_RETRY)
                    .unwrap_or(Timestamp::MAX);
                return Admission::Defer(at, delivery.delivery.id);
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
            return Admission::Defer(now_ts, delivery.delivery.id);
        }
        // A delivery that waited must still hold its lease for a whole attempt.
        let needed = Duration::from_secs(u64::from(policy.timeout_seconds) + 30);
        if now_ts.saturating_add(needed).unwrap_or(Timestamp::MAX) > delivery.lease_expires_at {
            return Admission::Defer(now_ts, delivery.delivery.id);
        }
        // Decided under the waiting lock, so a delivery never waits for an endpoint with no
        // attempt in flight: an attempt that finishes looks at the queue after giving its
        // permit back.
        let mut waiting = self.lock_waiting();
        match shared
            .gates
            .acquire(endpoint, &policy, now, self.per_endpoint())
        {
            Gate::Go(permit) => Admission::Go(Box::new(delivery), policy, permit),
            Gate::Later(at) => Admission::Defer(wall_clock(at, now, now_ts), delivery.delivery.id),
            Gate::Busy => {
                let queue = waiting.entry(endpoint.clone()).or_default();
                if queue.len() < self.per_endpoint() {
                    queue.push_back(delivery);
                    Admission::Waiting
                } else {
                    let at = now_ts.saturating_add(BUSY_RETRY).unwrap_or(Timestamp::MAX);
                    Admission::Defer(at, delivery.delivery.id)
                }
            }
        }
    }

    /// The next delivery waiting for `endpoint` that may go now. Deliveries that may not go
    /// (circuit open, rate limit, endpoint suspended or gone) leave the queue for the store.
    async fn next_waiting(
        &self,
        endpoint: &EndpointRef,
    ) -> Option<(ClaimedDelivery, Arc<EffectivePolicy>, Permit)> {
        loop {
            let (delivery, remaining) = {
                let mut waiting = self.lock_waiting();
                let queue = waiting.get_mut(endpoint)?;
                let Some(delivery) = queue.pop_front() else {
                    waiting.remove(endpoint);
                    return None;
                };
                (delivery, queue.len())
            };
            if remaining <= self.per_endpoint() / 2 {
                // Room behind this endpoint: let the loop claim more.
                self.shared.wake.notify_one();
            }
            let (now, now_ts) = (Instant::now(), Timestamp::now());
            match self.admit(delivery, now, now_ts).await {
                Admission::Go(delivery, policy, permit) => {
                    return Some((*delivery, policy, permit))
                }
                // Another attempt to the endpoint started meanwhile; it takes the queue on.
                Admission::Waiting => return None,
                Admission::Defer(at, id) => {
                    let mut ids = vec![id];
                    if at > now_ts {
                        // The endpoint's gate is closed until then: the rest waits in the store.
                        let mut waiting = self.lock_waiting();
                        if let Some(queue) = waiting.remove(endpoint) {
                            ids.extend(queue.into_iter().map(|d| d.delivery.id));
                        }
                    }
                    self.defer(ids, at).await;
                }
                Admission::Done => {}
            }
        }
    }

    async fn defer(&self, ids: Vec<DeliveryId>, at: Timestamp) {
        let shared = &self.shared;
        if let Err(error) = shared.store.defer(shared.owner.clone(), ids, at).await {
            warn!(%error, "giving deliveries back failed; their lease expiry brings them back");
        }
    }
}

/// What a stopped delivery loop did with its work (see [`drain`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drained {
    /// Every attempt in flight at the stop finished within the deadline.
    pub attempts_finished: bool,
    /// Claimed deliveries that had not started, given back to the store (due at once).
    pub given_back: usize,
    /// The recorder committed every finished attempt's result before the loop returned.
    pub results_committed: bool,
}

/// Runs the delivery loop until `stop` turns true, then drains: no attempt starts any more,
/// attempts in flight get `grace` to finish, and the loop returns once their results are
/// committed. Whatever does not finish stays claimed in the store and is made again after the
/// restart (`recover_in_flight`) or when its lease expires.
pub async fn run(shared: Arc<Shared>, stop: watch::Receiver<bool>, grace: Duration) -> Drained {
    // Stopped (or a watch gone) before anything was claimed: nothing to drain.
    let nothing_started = Drained {
        attempts_finished: true,
        given_back: 0,
        results_committed: true,
    };
    // Without complete caches an existing endpoint would look deleted.
    tokio::select! {
        ready = shared.cache.wait_until_ready() => {
            if ready.is_err() {
                return nothing_started;
            }
        }
        _ = crate::runtime::shutdown::stopped(stop.clone()) => return nothing_started,
    }
    let (results, queue) = mpsc::channel(RECORD_QUEUE);
    tokio::spawn(record_results(shared.clone(), queue));
    let engine = Arc::new(Engine {
        slots: Arc::new(Semaphore::new(shared.config.concurrency.max(1))),
        shared,
        waiting: Mutex::new(HashMap::new()),
        policies: PolicyCache::default(),
        results,
        stop,
    });
    claim_loop(&engine).await;
    drain(&engine, grace).await
}

/// Claims and starts due deliveries until the stop signal.
async fn claim_loop(engine: &Arc<Engine>) {
    let mut stop = engine.stop.clone();
    while !engine.stopping() {
        let free = engine.slots.available_permits();
        let mut claimed_count = 0;
        if free > 0 {
            match claim_round(engine, free.min(CLAIM_BATCH)).await {
                Ok(count) => claimed_count = count,
                Err(error) => {
                    warn!(%error, "claiming due deliveries failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        if claimed_count == 0 || engine.slots.available_permits() == 0 {
            tokio::select! {
                _ = engine.shared.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// After the stop: waits up to `grace` for the attempts in flight (each holds a slot until its
/// result is handed to the recorder), gives the claimed deliveries that never started back to
/// the store, then waits for the recorder to commit everything handed to it. So a finished
/// attempt is never made again after a graceful stop.
async fn drain(engine: &Engine, grace: Duration) -> Drained {
    let slots = u32::try_from(engine.shared.config.concurrency.max(1)).unwrap_or(u32::MAX);
    let attempts_finished = matches!(
        tokio::time::timeout(grace, engine.slots.acquire_many(slots)).await,
        Ok(Ok(_))
    );
    // Attempt tasks take no waiting delivery once stopping; those left go back, due now.
    let ids: Vec<DeliveryId> = {
        let mut waiting = engine.lock_waiting();
        waiting
            .drain()
            .flat_map(|(_, queue)| queue.into_iter().map(|d| d.delivery.id))
            .collect()
    };
    let given_back = ids.len();
    if !ids.is_empty() {
        engine.defer(ids, Timestamp::now()).await;
    }
    let (flushed, committed) = oneshot::channel();
    let results_committed = engine
        .results
        .send(ToRecorder::Flush(flushed))
        .await
        .is_ok()
        && matches!(
            tokio::time::timeout(FLUSH_TIMEOUT, committed).await,
            Ok(Ok(()))
        );
    Drained {
        attempts_finished,
        given_back,
        results_committed,
    }
}

/// One claim: sends what may go now, queues what waits for its endpoint, gives the rest back.
/// Returns how many were claimed.
async fn claim_round(
    engine: &Arc<Engine>,
    limit: usize,
) -> Result<usize, crate::store::StoreError> {
    let shared = &engine.shared;
    let now_ts = Timestamp::now();
    let claimed = shared
        .store
        .claim_due_capped(
            ClaimRequest {
                now: now_ts,
                limit,
                per_endpoint_limit: Some(engine.per_endpoint()),
                owner: shared.owner.clone(),
                lease: LEASE,
                scope: shared.ownership.claim_scope(),
            },
            engine.caps(),
        )
        .await?;
    let count = claimed.len();
    let now = Instant::now();
    let mut deferred: HashMap<Timestamp, Vec<DeliveryId>> = HashMap::new();
    for delivery in claimed {
        match engine.admit(delivery, now, now_ts).await {
            Admission::Go(delivery, policy, permit) => {
                let endpoint = delivery.delivery.endpoint.clone();
                // Claimed just before the stop: back to the store, due at once.
                let slot = if engine.stopping() {
                    None
                } else {
                    engine.slots.clone().try_acquire_owned().ok()
                };
                let Some(slot) = slot else {
                    shared.gates.abandon(&endpoint, permit);
                    deferred
                        .entry(now_ts)
                        .or_default()
                        .push(delivery.delivery.id);
                    continue;
                };
                tokio::spawn(send_all(engine.clone(), *delivery, policy, permit, slot));
            }
            Admission::Defer(at, id) => deferred.entry(at).or_default().push(id),
            Admission::Waiting | Admission::Done => {}
        }
    }
    for (at, ids) in deferred {
        engine.defer(ids, at).await;
    }
    Ok(count)
}

/// Sends a delivery, then, on the same task and slot, the deliveries waiting for its endpoint
/// as long as they may go.
async fn send_all(
    engine: Arc<Engine>,
    mut delivery: ClaimedDelivery,
    mut policy: Arc<EffectivePolicy>,
    mut permit: Permit,
    slot: OwnedSemaphorePermit,
) {
    loop {
        let endpoint = delivery.delivery.endpoint.clone();
        let span = info_span!(
            "delivery",
            event_id = %delivery.event.event_id,
            namespace = %endpoint.namespace,
            endpoint = %endpoint.name,
            attempt = delivery.delivery.attempts + 1,
        );
        attempt(&engine, delivery, &policy, permit)
            .instrument(span)
            .await;
        if engine.stopping() {
            // Shutting down: the deliveries waiting for this endpoint go back to the store.
            break;
        }
        match engine.next_waiting(&endpoint).await {
            Some(next) => (delivery, policy, permit) = next,
            None => break,
        }
    }
    drop(slot);
    // A slot is free: the loop may claim again.
    engine.shared.wake.notify_one();
}

/// What the recorder is handed.
enum ToRecorder {
    Result(Box<Recorded>),
    /// Answered once everything handed over before it is committed (or failed to commit).
    Flush(oneshot::Sender<()>),
}

/// An attempt's result on its way to the store.
struct Recorded {
    result: AttemptResult,
    endpoint: EndpointRef,
    /// The event, if it has a status to write (a `WebhookEvent`; ingested events have none).
    event_id: Option<String>,
    retry: bool,
}

/// The event id to mark for a status write: only `WebhookEvent` resources have a status. Marking
/// ingested events too cost a store read per delivered event every status round for nothing.
fn status_event(delivery: &ClaimedDelivery) -> Option<&str> {
    matches!(delivery.event.source, EventSource::Resource { .. })
        .then_some(delivery.event.event_id.as_str())
}

/// Records attempt results in batches (one store job for all that wait: with SQLite one
/// savepoint each in one group commit), then marks their endpoints and events for status and
/// wakes the loop for retries. Until a result is recorded its delivery stays in flight under its
/// lease, so a crash before that makes the attempt again (at least once).
async fn record_results(shared: Arc<Shared>, mut queue: mpsc::Receiver<ToRecorder>) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while queue.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        let mut marks = Vec::with_capacity(batch.len());
        let mut flushes = Vec::new();
        let mut retry = false;
        let mut results = Vec::with_capacity(batch.len());
        for message in batch.drain(..) {
            match message {
                ToRecorder::Result(recorded) => {
                    let recorded = *recorded;
                    retry |= recorded.retry;
                    marks.push((recorded.endpoint, recorded.event_id));
                    results.push(recorded.result);
                }
                ToRecorder::Flush(done) => flushes.push(done),
            }
        }
        if results.is_empty() {
            answer_flushes(flushes);
            continue;
        }
        match shared.store.record_attempts(results).await {
            Ok(outcomes) => {
                for outcome in outcomes {
                    if let Err(error) = outcome {
                        warn!(%error, "recording an attempt failed; the lease expiry makes it due again");
                    }
                }
            }
            Err(error) => {
                warn!(%error, attempts = marks.len(), "recording attempts failed; their lease expiry makes them due again");
            }
        }
        for (endpoint, event_id) in &marks {
            shared.dirty.endpoint(endpoint);
            if let Some(event_id) = event_id {
                shared.dirty.event(event_id);
            }
        }
        if retry {
            shared.wake.notify_one();
        }
        // Everything received before a flush was in this batch or an earlier one.
        answer_flushes(flushes);
    }
}

fn answer_flushes(flushes: Vec<oneshot::Sender<()>>) {
    for done in flushes {
        // The drain may have given up waiting; nothing to tell then.
        let _ = done.send(());
    }
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
    match shared.store.record_attempt(result).await {
        Ok(RecordOutcome::Applied) => {
            let endpoint = &delivery.delivery.endpoint;
            shared.metrics.dead_lettered_without_attempt(endpoint);
            shared.dirty.endpoint(endpoint);
        }
        // No longer ours (lease lost) or purged: not dead-lettered by us.
        Ok(_) => {}
        Err(error) => warn!(%error, "recording a dead letter failed"),
    }
    if let Some(event_id) = status_event(delivery) {
        shared.dirty.event(event_id);
    }
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
    #[error("the stored event data is unreadable ({0}); it cannot be sent as it was accepted")]
    StoredData(String),
    #[error("signing failed: {0}")]
    Signing(String),
}

impl PrepareError {
    /// Whether waiting can fix it (a Secret or ConfigMap that is not there yet).
    fn is_transient(&self) -> bool {
        matches!(self, PrepareError::NotReady(_))
    }
}

/// The event's fields as stored: a JSON object, or an error that dead-letters the delivery (never
/// an empty object sent in its place).
pub fn stored_data(
    bytes: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, PrepareError> {
    serde_json::from_slice(bytes).map_err(|e| PrepareError::StoredData(e.to_string()))
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

/// One attempt of one delivery; its result goes to the recorder.
async fn attempt(
    engine: &Engine,
    delivery: ClaimedDelivery,
    policy: &EffectivePolicy,
    permit: Permit,
) {
    let shared = &engine.shared;
    let endpoint = delivery.delivery.endpoint.clone();
    let attempt_number = delivery.delivery.attempts + 1;
    let event = &delivery.event;
    let prepared = stored_data(&event.data).and_then(|data| {
        prepare(
            shared,
            &endpoint,
            policy,
            &event.event_id,
            &event.event_type,
            event.created_at,
            &data,
            attempt_number,
        )
    });
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
                finish_without_attempt(shared, &delivery, error.to_string()).await;
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
    observe(shared, &endpoint, &result, &outcome);
    if transition.from != transition.to {
        circuit_changed(shared, &endpoint, transition.to, &result).await;
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
        super::status::endpoint_gone(shared, &endpoint, &result).await;
    }
    let record = AttemptRecord {
        at: now_ts,
        attempt: attempt_number,
        status_code: result.status,
        latency_ms: Some(u64::try_from(result.latency.as_millis()).unwrap_or(u64::MAX)),
        error: (!result.is_success()).then(|| result.summary()),
        response_snippet: (!result.body_snippet.is_empty()).then(|| result.body_snippet.clone()),
    };
    debug!(outcome = outcome.as_str(), status = ?result.status, "attempt finished");
    let recorded = Recorded {
        result: AttemptResult {
            delivery_id: delivery.delivery.id,
            owner: shared.owner.clone(),
            record,
            next,
        },
        endpoint,
        event_id: status_event(&delivery).map(str::to_owned),
        retry: matches!(outcome, Outcome::Retry { .. }),
    };
    let recorded = ToRecorder::Result(Box::new(recorded));
    if engine.results.send(recorded).await.is_err() {
        warn!("the attempt recorder stopped; the lease expiry makes the delivery due again");
    }
}

fn observe(shared: &Shared, endpoint: &EndpointRef, result: &HttpResult, outcome: &Outcome) {
    let labels = EndpointLabels::of(endpoint);
    shared.metrics.count_delivery(endpoint, outcome.as_str());
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
            shared.metrics.count_dead_letter(endpoint);
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
        .get_or_create(&EndpointLabels::of(endpoint))
        .set(value);
    super::status::circuit_event(shared, endpoint, to, result).await;
    shared.dirty.endpoint(endpoint);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ep(i: usize) -> EndpointRef {
        EndpointRef::new("ns", format!("ep-{i}"))
    }

    #[test]
    fn unreadable_stored_data_is_an_error_not_an_empty_object() {
        let fields = stored_data(br#"{"user":{"id":1}}"#).unwrap();
        assert_eq!(fields["user"]["id"], 1);
        for bad in [&b"{\"user\": "[..], b"[1,2]", b"\xff\xfe", b""] {
            let error = stored_data(bad).unwrap_err();
            assert!(!error.is_transient(), "{error}");
            assert!(
                error.to_string().starts_with("the stored event data is unreadable"),
                "{error}"
            );
        }
    }

    #[test]
    fn idle_endpoints_are_not_capped() {
        let busy = [(ep(0), 3)];
        let caps = claim_caps(busy.iter().map(|(e, n)| (e, *n)), [], 16);
        // 3 in flight: room for 29 more, at most 16 a round, so no cap.
        assert!(caps.is_empty());
    }

    #[test]
    fn full_endpoints_get_nothing_and_filling_ones_get_the_rest() {
        let in_flight = [(ep(0), 16), (ep(1), 16), (ep(2), 16)];
        let waiting = [(ep(0), 16), (ep(1), 10)];
        let caps = claim_caps(
            in_flight.iter().map(|(e, n)| (e, *n)),
            waiting.iter().map(|(e, n)| (e, *n)),
            16,
        );
        assert_eq!(caps.get(&ep(0)), Some(&0));
        assert_eq!(caps.get(&ep(1)), Some(&6));
        // 16 in flight, none waiting: a whole round still fits behind them.
        assert_eq!(caps.get(&ep(2)), None);
    }

    proptest! {
        /// Whatever a claim takes within the caps, no endpoint ends up with more than its
        /// in-flight limit plus as many waiting, and an endpoint with room is never shut out.
        #[test]
        fn caps_never_overfill_an_endpoint(
            counts in proptest::collection::vec((0usize..40, 0usize..40), 0..20),
            per_endpoint in 1usize..32,
        ) {
            let endpoints: Vec<EndpointRef> = (0..counts.len()).map(ep).collect();
            let caps = claim_caps(
                endpoints.iter().zip(&counts).map(|(e, (f, _))| (e, *f)),
                endpoints.iter().zip(&counts).map(|(e, (_, w))| (e, *w)),
                per_endpoint,
            );
            for (endpoint, (in_flight, waiting)) in endpoints.iter().zip(&counts) {
                let cap = caps.get(endpoint).copied().unwrap_or(per_endpoint);
                prop_assert!(cap <= per_endpoint);
                let taken = in_flight + waiting;
                if taken < 2 * per_endpoint {
                    prop_assert_eq!(cap, (2 * per_endpoint - taken).min(per_endpoint));
                } else {
                    prop_assert_eq!(cap, 0);
                }
            }
        }
    }
}
