//! The dispatcher: takes events from WebhookEvent resources and the ingest API, persists their
//! deliveries, delivers them (signed, rate-limited, behind a circuit breaker, with retries) and
//! writes the results back into resource status.
pub mod cache;
pub mod config;
pub mod engine;
#[cfg(test)]
pub mod fixtures;
pub mod gate;
pub mod http;
pub mod metrics;
pub mod named;
pub mod ownership;
pub mod partitions;
pub mod projected;
pub mod publish;
pub mod query_api;
pub mod router;
pub mod security_log;
pub mod status;
pub mod subscription_index;
pub mod test_delivery;
pub mod watch;

mod run;

use std::sync::Arc;

use kube::runtime::events::Recorder;
use tokio::sync::Notify;

pub use config::DispatcherConfig;
pub use run::run;
pub use test_delivery::{send_test, TestError};

use crate::delivery::client::DeliveryClient;
use crate::store::Store;

/// What the dispatcher's tasks share.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub cache: cache::Cache,
    /// The engine's view of endpoints (policies parsed once per ConfigMap version).
    pub endpoints: Arc<engine::CachedEndpoints>,
    pub client: kube::Client,
    pub http: DeliveryClient,
    /// Runs endpoints' transforms in worker processes (started on first use).
    pub transforms: Arc<crate::transform::TransformPool>,
    /// Woken when new deliveries are due (a publish, a replay, a resumed endpoint).
    pub wake: Arc<Notify>,
    pub metrics: metrics::Metrics,
    /// Kubernetes Events (CircuitOpened, DeliveriesDeadLettered, EndpointGone, …).
    pub recorder: Recorder,
    pub config: DispatcherConfig,
    /// Endpoints and events whose status should be written back soon.
    pub dirty: Arc<status::Dirty>,
    /// Per-endpoint breaker, limiter and concurrency.
    pub gates: Arc<gate::Gates>,
    /// This replica's name: the owner of the deliveries it claims.
    pub owner: String,
    /// The endpoints this replica is responsible for (all of them, or its partitions).
    pub ownership: Arc<ownership::Ownership>,
    /// Kubernetes Events queued by attempts, raised by the status side (`status::notices`).
    pub notices: status::notices::Notices,
    /// The security log: refused destinations, 401/403s, user actions, alerts.
    pub security: security_log::SecurityLog,
    /// Where publishing hands the deliveries it creates claimed to the engine.
    pub handoff: Arc<engine::Handoff>,
}

impl Shared {
    /// What the delivery engine works with: the store, the endpoint lookup, the notices channel,
    /// and the gates, metrics and status marks it shares with the rest.
    pub fn engine_deps(&self) -> engine::Deps {
        engine::Deps {
            store: self.store.clone(),
            endpoints: self.endpoints.clone(),
            notices: self.notices.clone(),
            security: self.security.clone(),
            dirty: self.dirty.clone(),
            http: self.http.clone(),
            transforms: self.transforms.clone(),
            gates: self.gates.clone(),
            metrics: self.metrics.clone(),
            wake: self.wake.clone(),
            owner: self.owner.clone(),
            ownership: self.ownership.clone(),
            concurrency: self.config.concurrency,
            per_endpoint_concurrency: self.config.per_endpoint_concurrency,
            claim_interval: self.config.claim_interval(),
            record_interval: self.config.record_interval(),
            handoff: self.handoff.clone(),
        }
    }
}
