//! Claiming due deliveries: how much a claim may take of each endpoint, the loop that claims
//! whenever slots are free, and the drain that ends it at shutdown.
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::oneshot;
use tracing::warn;

use super::admission::Admission;
use super::ahead::Queued;
use super::attempt::send_all;
use super::pacing::next_round_after;
use super::recorder::ToRecorder;
use super::transforming::{transform_first, TransformFirst};
use super::{Drained, Engine, CLAIM_BATCH, FLUSH_TIMEOUT, LEASE, POLL, WAITING_PER_SLOT};
use crate::dispatcher::metrics::ClaimPath;
use crate::store::{ClaimRequest, DeliveryId, EndpointCaps, EndpointRef};

/// How many deliveries a claim may take of each busy endpoint: each endpoint may have
/// `per_endpoint` attempts in flight and [`WAITING_PER_SLOT`] times as many claimed deliveries
/// waiting behind them, so a claim takes at most what fills that, and at most `per_endpoint` a
/// round. Only endpoints capped below `per_endpoint` are named. Pure.
pub fn claim_caps<'a>(
    in_flight: impl IntoIterator<Item = (&'a EndpointRef, usize)>,
    waiting: impl IntoIterator<Item = (&'a EndpointRef, usize)>,
    per_endpoint: usize,
) -> EndpointCaps {
    let mut taken: HashMap<&EndpointRef, usize> = HashMap::new();
    for (endpoint, count) in in_flight.into_iter().chain(waiting) {
        *taken.entry(endpoint).or_default() += count;
    }
    let room = per_endpoint.saturating_mul(1 + WAITING_PER_SLOT);
    taken
        .into_iter()
        .map(|(endpoint, taken)| (endpoint, room.saturating_sub(taken).min(per_endpoint)))
        .filter(|(_, cap)| *cap < per_endpoint)
        .map(|(endpoint, cap)| (endpoint.clone(), cap))
        .collect()
}

/// Claims and starts due deliveries until the stop signal.
pub(super) async fn claim_loop(engine: &Arc<Engine>) {
    let mut stop = engine.stop.clone();
    // Set after a partial claim: the next one waits for it (`--claim-interval-ms`).
    let mut not_before: Option<Instant> = None;
    while !engine.stopping() {
        if let Some(at) = not_before.take() {
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = stop.changed() => continue,
            }
        }
        let free = engine.slots.available_permits();
        let mut claimed_count = 0;
        if free > 0 {
            let (started, asked) = (Instant::now(), free.min(CLAIM_BATCH));
            match claim_round(engine, asked).await {
                Ok(count) => {
                    claimed_count = count;
                    not_before =
                        next_round_after(started, count, asked, engine.deps.claim_interval);
                }
                Err(error) => {
                    warn!(%error, "claiming due deliveries failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        if claimed_count == 0 || engine.slots.available_permits() == 0 {
            if engine.slots.available_permits() == 0 {
                // Said before looking again, so a slot given back in between is not missed
                // (`Engine::slots_returned` wakes the loop only when this is set).
                engine.slot_wanted.store(true, Ordering::SeqCst);
                if engine.slots.available_permits() > 0 {
                    continue;
                }
            }
            tokio::select! {
                _ = engine.deps.wake.notified() => {}
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
pub(super) async fn drain(engine: &Engine, grace: Duration) -> Drained {
    let slots = u32::try_from(engine.deps.concurrency.max(1)).unwrap_or(u32::MAX);
    let attempts_finished = matches!(
        tokio::time::timeout(grace, engine.slots.acquire_many(slots)).await,
        Ok(Ok(_))
    );
    // Attempt tasks take no waiting delivery once stopping; those left go back, due now.
    let ids: Vec<DeliveryId> = {
        let mut waiting = engine.lock_waiting();
        waiting
            .drain()
            .flat_map(|(_, queue)| queue.into_iter().map(|q| q.delivery.delivery.id))
            .collect()
    };
    // With those whose transform answered after the stop (they gave themselves back).
    let given_back = ids.len() + engine.given_back.load(Ordering::Relaxed);
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
    let deps = &engine.deps;
    let now_ts = Timestamp::now();
    let claimed = deps
        .store
        .claim_due_capped(
            ClaimRequest {
                now: now_ts,
                limit,
                per_endpoint_limit: Some(engine.per_endpoint()),
                owner: deps.owner.clone(),
                lease: LEASE,
                scope: deps.ownership.claim_scope(),
            },
            engine.caps(),
        )
        .await?;
    let count = claimed.len();
    deps.metrics.count_claims(ClaimPath::Store, count);
    let now = Instant::now();
    let mut deferred: HashMap<Timestamp, Vec<DeliveryId>> = HashMap::new();
    for delivery in claimed {
        let queued = match transform_first(engine, Queued::new(delivery)) {
            TransformFirst::Started => continue,
            TransformFirst::NoSlot(id) => {
                deferred.entry(now_ts).or_default().push(id);
                continue;
            }
            TransformFirst::NotNeeded(queued) => *queued,
        };
        // The slot is taken before admission: a delivery admitted to go must go. (Giving its
        // gate permit back for want of a slot could leave one that another admission put to
        // wait behind it with no attempt to take it on; ingest's hand-over admits concurrently.)
        let Some(slot) = engine.take_slot() else {
            deferred
                .entry(now_ts)
                .or_default()
                .push(queued.delivery.delivery.id);
            continue;
        };
        match engine.admit(queued, now, now_ts).await {
            Admission::Go(queued, policy, permit) => {
                tokio::spawn(send_all(engine.clone(), *queued, policy, permit, slot));
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ep(i: usize) -> EndpointRef {
        EndpointRef::new("ns", format!("ep-{i}"))
    }

    #[test]
    fn idle_endpoints_are_not_capped() {
        let busy = [(ep(0), 3)];
        let caps = claim_caps(busy.iter().map(|(e, n)| (e, *n)), [], 16);
        // 3 in flight: room for 45 more, at most 16 a round, so no cap.
        assert!(caps.is_empty());
    }

    #[test]
    fn full_endpoints_get_nothing_and_filling_ones_get_the_rest() {
        let in_flight = [(ep(0), 16), (ep(1), 16), (ep(2), 16)];
        let waiting = [(ep(0), 32), (ep(1), 26)];
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
        /// in-flight limit plus `WAITING_PER_SLOT` times as many waiting, and an endpoint with
        /// room is never shut out.
        #[test]
        fn caps_never_overfill_an_endpoint(
            counts in proptest::collection::vec((0usize..40, 0usize..80), 0..20),
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
                let room = (1 + WAITING_PER_SLOT) * per_endpoint;
                if taken < room {
                    prop_assert_eq!(cap, (room - taken).min(per_endpoint));
                } else {
                    prop_assert_eq!(cap, 0);
                }
            }
        }
    }
}
