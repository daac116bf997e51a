//! webhook-operator: a Kubernetes operator that delivers signed webhooks.
//!
//! Layers (who may import whom), as in DESIGN.md:
//! - `api`: CRD types, conditions, validation, effective policy. Imports nothing of ours.
//! - `delivery`: payload, signing, retry, circuit breaker, rate limit, egress policy. Pure except `client`.
//! - `store`: durable queue, delivery log and dead letters.
//! - `controller`: reconcilers for endpoints and subscriptions.
pub mod api;
pub mod controller;
pub mod delivery;
pub mod dispatcher;
pub mod runtime;
pub mod store;
