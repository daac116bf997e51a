//! Transform first. A just-claimed delivery to an endpoint with a transform has the transform
//! run before it goes through its endpoint's gate, and is admitted only once the run has
//! answered. So no attempt holds one of the endpoint's slots (`--per-endpoint-concurrency`)
//! while a transform runs: at one busy endpoint those slots are what bounds throughput, and a
//! transform is a round trip to a worker process (docs/benchmarks.md, issue 14, session 14).
//!
//! The delivery keeps a global slot (`--concurrency`) while its run is under way, so claims stay
//! bounded by free slots and the drain waits for it; and it is counted against its endpoint's
//! room in the claim caps, like a waiting delivery.
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use jiff::Timestamp;
use tokio::sync::OwnedSemaphorePermit;

use super::admission::Admission;
use super::ahead::{Ahead, Queued};
use super::attempt::send_all;
use super::Engine;
use crate::store::{DeliveryId, EndpointRef};

/// What became of a just-claimed delivery (see [`transform_first`]).
pub(super) enum TransformFirst {
    /// Its transform runs; a task admits it once the run has answered.
    Started,
    /// No slot is free (or the engine is stopping): give it back, due now.
    NoSlot(DeliveryId),
    /// Nothing to run first: admit it now.
    NotNeeded(Box<Queued>),
}

/// Starts a just-claimed delivery's transform, if its endpoint has one, on a task of its own
/// that holds a slot and admits the delivery once the run has answered.
pub(super) fn transform_first(engine: &Arc<Engine>, mut queued: Queued) -> TransformFirst {
    if !engine.start_transform(&mut queued) {
        return TransformFirst::NotNeeded(Box::new(queued));
    }
    let Some(slot) = engine.take_slot() else {
        // Dropping the run cancels it.
        return TransformFirst::NoSlot(queued.delivery.delivery.id);
    };
    let counted = Counted::new(engine.clone(), queued.delivery.delivery.endpoint.clone());
    tokio::spawn(admit_when_transformed(
        engine.clone(),
        queued,
        slot,
        counted,
    ));
    TransformFirst::Started
}

impl Engine {
    /// Starts the transform of a just-claimed delivery ahead of its admission; false when there
    /// is nothing to run first (no transform, the endpoint not ready, or the pool's queue full),
    /// and admission goes on as for any delivery.
    pub(super) fn start_transform(&self, queued: &mut Queued) -> bool {
        let deps = &*self.deps;
        let endpoint = &queued.delivery.delivery.endpoint;
        let Ok(policy) = deps.endpoints.policy(endpoint) else {
            return false;
        };
        // A run for a delivery that would wait behind its endpoint anyway may wait a little for
        // company (one worker wake-up for several runs).
        let patient = deps.gates.is_full(endpoint, self.per_endpoint());
        queued.ahead = Ahead::start(deps, &queued.delivery, &policy, patient);
        queued.ahead.is_some()
    }

    pub(super) fn lock_starting(&self) -> MutexGuard<'_, HashMap<EndpointRef, usize>> {
        self.starting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Waits for the transform of a delivery started by [`Engine::start_transform`] (if one was),
/// then admits it (see [`admit_holding`]).
pub(super) async fn admit_when_transformed(
    engine: Arc<Engine>,
    mut queued: Queued,
    slot: OwnedSemaphorePermit,
    counted: Counted,
) {
    if let Some(ahead) = queued.ahead.as_mut() {
        ahead.wait().await;
    }
    admit_holding(engine, queued, slot, counted).await;
}

/// Admits a delivery that holds `slot`: it goes on this task with the slot, waits behind its
/// endpoint (its transform's output, if any, kept for its attempt), or goes back to the store.
/// On shutdown it goes back, due at once.
async fn admit_holding(
    engine: Arc<Engine>,
    queued: Queued,
    slot: OwnedSemaphorePermit,
    counted: Counted,
) {
    drop(counted);
    if engine.stopping() {
        engine.given_back.fetch_add(1, Ordering::Relaxed);
        engine
            .defer(vec![queued.delivery.delivery.id], Timestamp::now())
            .await;
    } else {
        match engine.admit(queued, Instant::now(), Timestamp::now()).await {
            Admission::Go(queued, policy, permit) => {
                send_all(engine, *queued, policy, permit, slot).await;
                return;
            }
            Admission::Defer(at, id) => engine.defer(vec![id], at).await,
            Admission::Waiting | Admission::Done => {}
        }
    }
    engine.return_slot(slot);
}

/// A claimed delivery not yet admitted (its transform runs first, or ingest has reserved room
/// for it: see [`super::handoff`]), counted for the claim caps while it lives (from its claim,
/// so the next claim sees it).
pub(super) struct Counted {
    engine: Arc<Engine>,
    endpoint: EndpointRef,
}

impl Counted {
    pub(super) fn new(engine: Arc<Engine>, endpoint: EndpointRef) -> Self {
        *engine.lock_starting().entry(endpoint.clone()).or_default() += 1;
        Self { engine, endpoint }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut starting = self.engine.lock_starting();
        if let Some(count) = starting.get_mut(&self.endpoint) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                starting.remove(&self.endpoint);
            }
        }
    }
}
