//! The delivery loop: claims due deliveries, gates them per endpoint (suspension, circuit
//! breaker, rate limit, concurrency), sends them without blocking the loop, and records the
//! outcomes in batches. A claim takes of each endpoint only what its concurrency can take: its
//! attempts in flight plus twice as many waiting behind them, in memory under their lease, that
//! go on the task of the next attempt to that endpoint that finishes (no store round trip, no
//! fixed delay). A delivery that may not go for another reason (circuit open, rate limit,
//! suspended) is given back to the store, due when its gate opens, so no worker waits on a slow
//! or dead endpoint.
//!
//! - [`claims`]: the claim loop, the caps of a claim, and the drain at shutdown;
//! - [`admission`]: whether a claimed delivery goes now, waits behind its endpoint, or goes back;
//! - [`transforming`]: a just-claimed delivery's transform, run before its admission;
//! - [`handoff`]: deliveries ingest creates already claimed, started without a claim;
//! - [`ahead`]: a transform run ahead of its attempt (before admission, or while waiting);
//! - [`attempt`]: one attempt, as typed stages (prepared, sent, decided);
//! - [`recorder`]: attempt results written to the store in batches;
//! - [`deps`] and [`lookup`]: what the engine works with (no Kubernetes client in it).
mod admission;
mod ahead;
mod attempt;
mod claims;
mod deps;
mod handoff;
mod lookup;
mod pacing;
mod recorder;
#[cfg(test)]
mod tests;
mod transforming;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::warn;

pub use ahead::Ahead;
use ahead::Queued;
pub use attempt::{prepare, PrepareError, Prepared};
pub use claims::claim_caps;
pub use deps::Deps;
pub use handoff::{Handoff, Reserved};
pub use lookup::{CachedEndpoints, EndpointLookup};

use crate::store::{DeliveryId, EndpointCaps, EndpointRef};
use recorder::ToRecorder;

/// Claimed deliveries that may wait behind an endpoint's attempts in flight, per slot
/// (`--per-endpoint-concurrency`). Two: while the waiting deliveries run down, the claim that
/// refills them is a store round trip, and a waiting delivery's transform runs ahead meanwhile;
/// with one per slot a busy endpoint's queue ran dry and most attempts ran their transform
/// holding the slot (docs/benchmarks.md, issue 14, session 13).
const WAITING_PER_SLOT: usize = 2;
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

/// The delivery loop's state, shared with its attempt tasks.
struct Engine {
    deps: Arc<Deps>,
    /// Attempts in flight over all endpoints (`--concurrency`).
    slots: Arc<Semaphore>,
    /// Claimed deliveries whose endpoint had its maximum in flight, per endpoint, oldest first.
    /// They wait under their lease (not in the store) and go on the task of the next attempt to
    /// that endpoint that finishes. At most [`WAITING_PER_SLOT`] × `per_endpoint_concurrency` per
    /// endpoint; only busy endpoints have any, so at most that many × `concurrency` in all.
    waiting: Mutex<HashMap<EndpointRef, VecDeque<Queued>>>,
    /// Claimed deliveries not admitted yet, per endpoint: their transform runs before their
    /// admission ([`transforming`]), or ingest reserved room for them ([`handoff`]). Each holds
    /// a slot meanwhile.
    starting: Mutex<HashMap<EndpointRef, usize>>,
    /// Deliveries whose transform answered after the stop, given back by their own task.
    given_back: AtomicUsize,
    /// The claim loop found no slot free and waits for one (see [`Engine::slots_returned`]).
    slot_wanted: AtomicBool,
    /// Attempt results on their way to the store (see [`record_results`]).
    results: mpsc::Sender<ToRecorder>,
    /// Turns true on shutdown: no attempt starts any more (see [`drain`]).
    stop: watch::Receiver<bool>,
}

impl Engine {
    fn new(
        deps: Arc<Deps>,
        results: mpsc::Sender<ToRecorder>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(deps.concurrency.max(1))),
            deps,
            waiting: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashMap::new()),
            given_back: AtomicUsize::new(0),
            slot_wanted: AtomicBool::new(false),
            results,
            stop,
        }
    }

    fn per_endpoint(&self) -> usize {
        self.deps.per_endpoint_concurrency.max(1)
    }

    /// How many claimed deliveries may wait for one endpoint.
    fn waiting_per_endpoint(&self) -> usize {
        self.per_endpoint().saturating_mul(WAITING_PER_SLOT)
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn lock_waiting(&self) -> MutexGuard<'_, HashMap<EndpointRef, VecDeque<Queued>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The caps of the next claim (see [`claim_caps`]); a delivery whose transform runs before
    /// its admission counts as waiting.
    fn caps(&self) -> EndpointCaps {
        let in_flight = self.deps.gates.in_flight();
        let waiting = self.lock_waiting();
        let starting = self.lock_starting();
        claim_caps(
            in_flight.iter().map(|(e, n)| (e, *n)),
            waiting
                .iter()
                .map(|(e, q)| (e, q.len()))
                .chain(starting.iter().map(|(e, n)| (e, *n))),
            self.per_endpoint(),
        )
    }

    /// Whether `endpoint` has room for one more claimed delivery: its attempts in flight, the
    /// deliveries waiting behind them and those not admitted yet stay under what a claim may
    /// fill ([`claim_caps`]).
    fn has_room(&self, endpoint: &EndpointRef) -> bool {
        let taken = self.deps.gates.in_flight_of(endpoint)
            + self.lock_waiting().get(endpoint).map_or(0, VecDeque::len)
            + self.lock_starting().get(endpoint).copied().unwrap_or(0);
        taken < self.per_endpoint().saturating_mul(1 + WAITING_PER_SLOT)
    }

    /// A slot for a delivery to start on, unless stopping (a delivery claimed just before the
    /// stop goes back to the store, due at once) or none is free.
    fn take_slot(&self) -> Option<OwnedSemaphorePermit> {
        if self.stopping() {
            return None;
        }
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Gives back the slot of an attempt that finished: its endpoint has room again, so the
    /// loop may claim again.
    fn release(&self, slot: OwnedSemaphorePermit) {
        drop(slot);
        self.deps.wake.notify_one();
    }

    /// Gives back a slot that started no attempt (its delivery waits behind its endpoint, went
    /// back to the store, or was never created): no endpoint gained room, so the loop is woken
    /// only if it waits for a slot. Waking it for each such slot ran a claim for every delivery
    /// ingest handed over to a busy endpoint.
    fn return_slot(&self, slot: OwnedSemaphorePermit) {
        drop(slot);
        self.slots_returned();
    }

    /// Slots were given back without an attempt (see [`Engine::return_slot`]).
    fn slots_returned(&self) {
        if self.slot_wanted.swap(false, Ordering::SeqCst) {
            self.deps.wake.notify_one();
        }
    }

    async fn defer(&self, ids: Vec<DeliveryId>, at: Timestamp) {
        let deps = &self.deps;
        if let Err(error) = deps.store.defer(deps.owner.clone(), ids, at).await {
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
///
/// `caches_ready` resolves to true once the caches behind `deps.endpoints` are complete (false
/// if they never will be): without them an existing endpoint would look deleted.
pub async fn run(
    deps: Deps,
    caches_ready: impl std::future::Future<Output = bool>,
    stop: watch::Receiver<bool>,
    grace: Duration,
) -> Drained {
    // Stopped (or a watch gone) before anything was claimed: nothing to drain.
    let nothing_started = Drained {
        attempts_finished: true,
        given_back: 0,
        results_committed: true,
    };
    tokio::select! {
        ready = caches_ready => {
            if !ready {
                return nothing_started;
            }
        }
        _ = crate::runtime::shutdown::stopped(stop.clone()) => return nothing_started,
    }
    let (results, queue) = mpsc::channel(RECORD_QUEUE);
    let deps = Arc::new(deps);
    tokio::spawn(recorder::record_results(deps.clone(), queue));
    let engine = Arc::new(Engine::new(deps, results, stop));
    engine.deps.handoff.attach(&engine);
    claims::claim_loop(&engine).await;
    claims::drain(&engine, grace).await
}
