//! Admission: whether a claimed (or waiting) delivery goes now, waits in memory behind its
//! endpoint's attempts in flight, or goes back to the store until its gate opens.
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tracing::{debug, warn};

use super::ahead::{Ahead, Queued};
use super::recorder::finish_without_attempt;
use super::{wall_clock, Engine, BUSY_RETRY, NOT_READY_RETRY};
use crate::api::policy::EffectivePolicy;
use crate::delivery::circuit::Permit;
use crate::dispatcher::cache::NotReady;
use crate::dispatcher::gate::Gate;
use crate::store::{DeliveryId, EndpointRef};

/// What becomes of a claimed delivery.
pub(super) enum Admission {
    /// Send it now (the gate's permit; the caller finds a slot).
    Go(Box<Queued>, Arc<EffectivePolicy>, Permit),
    /// Waiting behind its endpoint's attempts in flight.
    Waiting,
    /// Give it back to the store, due at this time.
    Defer(Timestamp, DeliveryId),
    /// Nothing more to do (dead-lettered because its endpoint is gone).
    Done,
}

impl Engine {
    /// Decides what becomes of a delivery claimed (or waiting) now. One that waits has its
    /// endpoint's transform run meanwhile ([`Ahead`]) unless it already ran.
    pub(super) async fn admit(&self, queued: Queued, now: Instant, now_ts: Timestamp) -> Admission {
        let deps = &*self.deps;
        let delivery = &queued.delivery;
        let endpoint = &delivery.delivery.endpoint;
        // Its partition moved to another replica while it waited: give it back, due now, so the
        // new owner (one sender per endpoint) takes it.
        if !deps.ownership.owns_endpoint(endpoint) {
            return Admission::Defer(now_ts, delivery.delivery.id);
        }
        let policy = match deps.endpoints.policy(endpoint) {
            Ok(policy) => policy,
            Err(NotReady::EndpointGone(_)) => {
                let reason = "the WebhookEndpoint was deleted".to_string();
                // Nobody to pause for: the endpoint is gone.
                finish_without_attempt(deps, delivery, reason, false).await;
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
        if deps.endpoints.suspended(endpoint) {
            // Hold the endpoint; this delivery goes back and becomes Held too.
            if let Err(error) = deps.store.hold_endpoint(endpoint.clone(), now_ts).await {
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
        match deps
            .gates
            .acquire(endpoint, &policy, now, self.per_endpoint())
        {
            Gate::Go(permit) => Admission::Go(Box::new(queued), policy, permit),
            Gate::Later(at) => Admission::Defer(wall_clock(at, now, now_ts), delivery.delivery.id),
            Gate::Busy => {
                let queue = waiting.entry(endpoint.clone()).or_default();
                if queue.len() < self.waiting_per_endpoint() {
                    let mut queued = queued;
                    if queued.ahead.is_none() {
                        queued.ahead = Ahead::start(deps, &queued.delivery, &policy, true);
                    }
                    queue.push_back(queued);
                    Admission::Waiting
                } else {
                    let at = now_ts.saturating_add(BUSY_RETRY).unwrap_or(Timestamp::MAX);
                    Admission::Defer(at, delivery.delivery.id)
                }
            }
        }
    }

    /// The next delivery waiting for `endpoint` that may go now (see [`Queued::ready`]).
    /// Deliveries that may not go (circuit open, rate limit, endpoint suspended or gone) leave
    /// the queue for the store.
    pub(super) async fn next_waiting(
        &self,
        endpoint: &EndpointRef,
    ) -> Option<(Queued, Arc<EffectivePolicy>, Permit)> {
        loop {
            let (delivery, remaining) = {
                let mut waiting = self.lock_waiting();
                let queue = waiting.get_mut(endpoint)?;
                // The oldest whose transform has finished running ahead goes first: taking one
                // still running would hold the endpoint's slot while it runs (order among an
                // endpoint's waiting deliveries is not promised; an ordering lane has at most
                // one delivery claimed).
                let next = queue.iter().position(Queued::ready).unwrap_or(0);
                let Some(queued) = queue.remove(next) else {
                    waiting.remove(endpoint);
                    return None;
                };
                (queued, queue.len())
            };
            if remaining <= self.waiting_per_endpoint() / 2 {
                // Room behind this endpoint: let the loop claim more.
                self.deps.wake.notify_one();
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
                            ids.extend(queue.into_iter().map(|q| q.delivery.delivery.id));
                        }
                    }
                    self.defer(ids, at).await;
                }
                Admission::Done => {}
            }
        }
    }
}
