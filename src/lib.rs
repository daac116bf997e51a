//! webhook-operator: a Kubernetes operator that delivers signed webhooks.
//!
//! Layers (who may import whom; the module map and the rules: docs/architecture.md):
//! - `api`: CRD types, conditions, validation, effective policy. Imports nothing of ours.
//! - `delivery`: payload, signing, request building, retry, circuit breaker, rate limit, egress
//!   policy. Pure except `client`.
//! - `store`: durable queue, delivery log and dead letters. Knows nothing of Kubernetes.
//! - `controller`: reconcilers for endpoints and subscriptions.
//! - `dispatcher`: ingest, the delivery engine, status write-back. Never imports `controller`.
//! - `security`: the security log's entries and the detectors of suspicious activity. Pure.
//! - `runtime`: logging, the health server, shutdown, leases.
//! - `dashboard`: the developer dashboard, served by the dispatcher under `/ui/`: sessions,
//!   SubjectAccessReview per page, server-rendered HTML. Uses `dispatcher`; `dispatcher` mounts it.
//! - `query`: the aggregated query API's objects (`query.webhooks.pitchey.io`): names, selectors,
//!   kubectl's Table. Pure; served by `dispatcher::query_api`, read by the `kubectl webhooks` plugin.
//! - `transform`: per-endpoint jq transforms: the pure program, the worker process and its pool.
//! - `plugin`: the `kubectl webhooks` plugin (binary `kubectl-webhooks`): reads the query API and
//!   changes the CRDs with the user's kubeconfig. Uses `api`, `query` and `dashboard::gitops`;
//!   nothing imports it.
pub mod api;
pub mod controller;
pub mod dashboard;
pub mod delivery;
pub mod dispatcher;
#[doc(hidden)]
pub mod fuzzing;
pub mod plugin;
pub mod query;
pub mod runtime;
pub mod security;
pub mod store;
pub mod transform;
