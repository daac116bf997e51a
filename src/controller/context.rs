//! What every reconciliation shares.
use std::collections::HashMap;
use std::sync::Mutex;

use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store as Reflector};
use kube::{Client, Resource};

use super::metrics::Metrics;
use crate::api::WebhookEndpoint;

/// Field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = "webhook-operator-controller";

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Whether `http://` endpoint URLs are accepted.
    pub allow_plain_http: bool,
    /// Endpoints as last seen, for resolving subscriptions without API calls.
    pub endpoints: Reflector<WebhookEndpoint>,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Metrics,
        allow_plain_http: bool,
        endpoints: Reflector<WebhookEndpoint>,
    ) -> Self {
        Self {
            client,
            recorder,
            metrics,
            allow_plain_http,
            endpoints,
            failures: Mutex::default(),
        }
    }

    /// Records one more failure of `key` and returns how many in a row.
    pub fn record_failure(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        *count - 1
    }

    /// Counts a transient reconcile error and answers with per-object exponential backoff.
    pub fn requeue_after_error(
        &self,
        controller: &'static str,
        error: &super::error::Error,
        key: &str,
    ) -> kube::runtime::controller::Action {
        self.metrics
            .errors
            .get_or_create(&super::metrics::ErrorLabels {
                controller,
                error: error.metric_label(),
            })
            .inc();
        let delay = super::error::backoff(self.record_failure(key));
        tracing::warn!(%error, retry_in = ?delay, controller, "reconciling failed");
        kube::runtime::controller::Action::requeue(delay)
    }

    pub fn record_success(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Publishes a Kubernetes Event about `object`; failures are logged, never fatal.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%error, reason, "publishing a Kubernetes Event failed");
        }
    }
}

/// A stable key for per-object bookkeeping.
pub fn object_key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    ObjectRef::from_obj(object).to_string()
}

/// Now, as the RFC 3339 string (whole seconds) used in conditions and status.
pub fn now_rfc3339() -> String {
    rfc3339(jiff::Timestamp::now())
}

pub use crate::api::time::rfc3339;
