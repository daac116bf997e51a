//! Test deliveries (the seed's "Test Endpoint"): a signed `webhook.test` event sent at once,
//! outside the queue, with the result recorded in the endpoint's `status.lastTest`.
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Map, Value};

use super::engine::{prepare, PrepareError};
use super::Shared;
use crate::api::endpoint::TestDeliveryStatus;
use crate::api::event_types::TEST_EVENT_TYPE;
use crate::api::WebhookEndpoint;
use crate::delivery::payload;
use crate::store::EndpointRef;

/// Its own field manager, so that `lastTest` and the delivery statistics (written separately)
/// never remove each other under server-side apply.
const FIELD_MANAGER: &str = "webhook-operator-dispatcher-test";

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("cannot send a test delivery: {0}")]
    Prepare(#[from] PrepareError),
    #[error("recording status.lastTest failed: {0}")]
    Status(#[from] kube::Error),
}

/// Sends a test delivery carrying `nonce` (and `payload`'s fields) and records `status.lastTest`.
pub async fn send_test(
    shared: &Shared,
    namespace: &str,
    name: &str,
    nonce: String,
    payload: Option<Map<String, Value>>,
) -> Result<TestDeliveryStatus, TestError> {
    let endpoint = EndpointRef::new(namespace, name);
    let policy = shared
        .cache
        .policy(namespace, name)
        .map_err(PrepareError::from)?;
    let mut data = Map::new();
    data.insert("test".into(), Value::Bool(true));
    data.insert("nonce".into(), Value::String(nonce.clone()));
    data.insert(
        "message".into(),
        Value::String("Test webhook delivery".into()),
    );
    data.extend(
        payload
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k != "event_type"),
    );
    let now = Timestamp::now();
    let event_id = payload::new_event_id(now, &mut rand::thread_rng());
    let prepared = prepare(
        shared,
        &endpoint,
        &policy,
        &event_id,
        TEST_EVENT_TYPE,
        now,
        &data,
        1,
    )?;
    let result = shared.http.send(&prepared.request).await;
    let status = TestDeliveryStatus {
        nonce,
        time: crate::api::time::rfc3339(now),
        status_code: result.status.map(i32::from),
        latency_ms: Some(i64::try_from(result.latency.as_millis()).unwrap_or(i64::MAX)),
        error: (!result.is_success()).then(|| result.summary()),
    };
    let api: Api<WebhookEndpoint> = Api::namespaced(shared.client.clone(), namespace);
    let patch = json!({
        "apiVersion": "webhooks.pitchey.io/v1alpha1",
        "kind": "WebhookEndpoint",
        "status": {"lastTest": status},
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(status)
}
