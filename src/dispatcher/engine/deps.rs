//! What the engine works with, and nothing more: the store, an endpoint lookup and a channel of
//! notices, with the per-endpoint gates and the metrics. No Kubernetes client, no Event
//! recorder, no reflector caches: the status task does the Kubernetes side.
use std::sync::Arc;

use tokio::sync::Notify;

use super::lookup::EndpointLookup;
use crate::delivery::client::DeliveryClient;
use crate::dispatcher::gate::Gates;
use crate::dispatcher::metrics::Metrics;
use crate::dispatcher::ownership::Ownership;
use crate::dispatcher::status::notices::Notices;
use crate::dispatcher::status::Dirty;
use crate::store::Store;
use crate::transform::TransformPool;

pub struct Deps {
    /// Where deliveries are claimed, given back and recorded.
    pub store: Arc<dyn Store>,
    /// Endpoint policies, suspension, signing keys and headers.
    pub endpoints: Arc<dyn EndpointLookup>,
    /// Circuit changes and gone receivers, raised as Kubernetes Events by the status task.
    pub notices: Notices,
    /// Refused destinations go to the security log.
    pub security: crate::dispatcher::security_log::SecurityLog,
    /// Endpoints and events whose status the status task should write back.
    pub dirty: Arc<Dirty>,
    pub http: DeliveryClient,
    /// Runs endpoints' transforms in worker processes.
    pub transforms: Arc<TransformPool>,
    /// Per-endpoint breaker, limiter and concurrency.
    pub gates: Arc<Gates>,
    pub metrics: Metrics,
    /// Woken when deliveries may be due (a publish, a replay, a resumed endpoint, a retry).
    pub wake: Arc<Notify>,
    /// This replica's name: the owner of the deliveries it claims.
    pub owner: String,
    /// The endpoints this replica is responsible for.
    pub ownership: Arc<Ownership>,
    /// Attempts in flight at most, over all endpoints (`--concurrency`).
    pub concurrency: usize,
    /// Attempts in flight at most per endpoint (`--per-endpoint-concurrency`).
    pub per_endpoint_concurrency: usize,
    /// The shortest time from a claim that took less than it asked for to the next claim
    /// (`--claim-interval-ms`).
    pub claim_interval: std::time::Duration,
    /// How long the record batch after one smaller than the largest gathers results
    /// (`--record-interval-ms`).
    pub record_interval: std::time::Duration,
    /// Where ingest hands over the deliveries it creates claimed (the engine attaches itself).
    pub handoff: Arc<super::Handoff>,
}
