//! Deliver from memory. When ingest stores an event, the deliveries this replica could start at
//! once are created already claimed (InFlight under its lease, in the same transaction as the
//! event) and handed to the engine when the commit returns: no claim statement, no claim round,
//! and no wait for the claim loop to wake (docs/architecture.md, "Deliver from memory").
//!
//! Room is reserved before the insert, so a fast publisher cannot hand over more than an
//! endpoint can take: a reservation holds a slot (`--concurrency`) and counts against its
//! endpoint's room like a waiting delivery (what [`super::claim_caps`] allows a claim). Whatever
//! has no room, is ordered, belongs to another replica, or is suspended is stored Pending and
//! claimed as before. Recovery is unchanged: a delivery created claimed is InFlight like a
//! claimed one, so a crash leaves it to `recover_in_flight` or its lease's expiry.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock, Weak};

use jiff::Timestamp;
use tokio::sync::OwnedSemaphorePermit;
use tracing::warn;

use super::ahead::Queued;
use super::transforming::{admit_when_transformed, Counted};
use super::{Engine, LEASE};
use crate::dispatcher::metrics::ClaimPath;
use crate::store::{ClaimOnInsert, ClaimedDelivery, EndpointRef};

/// Where ingest finds the engine of this replica (none until it runs, or when disabled: then
/// every delivery is stored Pending).
#[derive(Default)]
pub struct Handoff {
    /// `--deliver-from-memory`.
    enabled: bool,
    engine: OnceLock<Weak<Engine>>,
}

/// Room reserved for one delivery: a slot, and a place in its endpoint's room.
struct Reservation {
    slot: OwnedSemaphorePermit,
    counted: Counted,
}

/// The reservations of one event's deliveries (see [`Handoff::reserve`]). Dropped unused (the
/// event was a duplicate, the insert failed), they are given back.
pub struct Reserved {
    engine: Arc<Engine>,
    claim: ClaimOnInsert,
    reservations: HashMap<String, Reservation>,
}

impl Handoff {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            engine: OnceLock::new(),
        }
    }

    /// Lets ingest hand deliveries to `engine` (when enabled).
    pub(super) fn attach(&self, engine: &Arc<Engine>) {
        if !self.enabled {
            return;
        }
        if self.engine.set(Arc::downgrade(engine)).is_err() {
            warn!("a second delivery engine started; ingest keeps handing over to the first");
        }
    }

    /// Reserves room for the deliveries of an event (in `namespace`, to `endpoints`) that this
    /// replica could start as soon as they are stored: unordered (no lane), owned by this
    /// replica, with a policy loaded, not suspended, and with room behind their endpoint. `None`
    /// when there are none, or the engine is not running.
    pub fn reserve(
        &self,
        namespace: &str,
        endpoints: &[String],
        lanes: &BTreeMap<String, String>,
        now: Timestamp,
    ) -> Option<Reserved> {
        let engine = self.engine.get()?.upgrade()?;
        if engine.stopping() {
            return None;
        }
        let deps = &engine.deps;
        let mut reservations = HashMap::new();
        for name in endpoints {
            if lanes.contains_key(name) || reservations.contains_key(name) {
                continue;
            }
            let endpoint = EndpointRef::new(namespace, name.as_str());
            let startable = deps.ownership.owns_endpoint(&endpoint)
                && deps.endpoints.policy(&endpoint).is_ok()
                && !deps.endpoints.suspended(&endpoint)
                && engine.has_room(&endpoint);
            if !startable {
                continue;
            }
            let Some(slot) = engine.take_slot() else {
                break;
            };
            let counted = Counted::new(engine.clone(), endpoint);
            reservations.insert(name.clone(), Reservation { slot, counted });
        }
        if reservations.is_empty() {
            return None;
        }
        let claim = ClaimOnInsert {
            owner: deps.owner.clone(),
            lease_expires_at: now.saturating_add(LEASE).unwrap_or(Timestamp::MAX),
            endpoints: reservations.keys().cloned().collect::<BTreeSet<_>>(),
        };
        Some(Reserved {
            engine,
            claim,
            reservations,
        })
    }
}

impl Reserved {
    /// What the store is asked to claim at insert.
    pub fn claim(&self) -> ClaimOnInsert {
        self.claim.clone()
    }

    /// Starts the deliveries the store created claimed, each on a task of its own holding its
    /// reserved slot: its transform first if its endpoint has one, then its admission (it goes,
    /// waits behind its endpoint, or goes back to the store). Returns how many were started;
    /// reservations left unused are given back.
    pub fn start(mut self, claimed: Vec<ClaimedDelivery>) -> usize {
        let engine = self.engine.clone();
        let mut started = 0;
        let mut orphans = Vec::new();
        for delivery in claimed {
            let Some(Reservation { slot, counted }) =
                self.reservations.remove(&delivery.delivery.endpoint.name)
            else {
                // Not asked for: nobody would start it before its lease expires.
                orphans.push(delivery.delivery.id);
                continue;
            };
            let mut queued = Queued::new(delivery);
            // A transform starts here; the task admits the delivery once it has answered.
            engine.start_transform(&mut queued);
            tokio::spawn(admit_when_transformed(
                engine.clone(),
                queued,
                slot,
                counted,
            ));
            started += 1;
        }
        engine.deps.metrics.count_claims(ClaimPath::Insert, started);
        if !orphans.is_empty() {
            warn!(
                count = orphans.len(),
                "the store claimed deliveries at insert that were not asked for; giving them back"
            );
            tokio::spawn(async move { engine.defer(orphans, Timestamp::now()).await });
        }
        started
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if !self.reservations.is_empty() {
            self.reservations.clear();
            // Slots came free: the claim loop may be waiting for one.
            self.engine.slots_returned();
        }
    }
}
