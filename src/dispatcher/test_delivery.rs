//! Test deliveries (the seed's "Test Endpoint"): a signed `webhook.test` event sent at once,
//! outside the queue, with the result recorded in the endpoint's `status.lastTest`.
//!
//! `lastTest` is written with the rest of the dispatcher's part of the endpoint status, under
//! the same field manager: server-side apply removes whatever a manager's apply leaves out, so
//! one writer carries all of it. The replica that owns the endpoint writes it in its next status
//! round (seconds); another replica (a test through its API) applies it at once together with the
//! owner's fields as its cache shows them.
use jiff::Timestamp;
use serde_json::{Map, Value};

use super::engine::{prepare, EndpointLookup, PrepareError, Prepared};
use super::status::EndpointStatusPatch;
use super::Shared;
use crate::api::endpoint::TestDeliveryStatus;
use crate::api::event_types::TEST_EVENT_TYPE;
use crate::delivery::payload;
use crate::delivery::request::{EventData, EventParts};
use crate::store::EndpointRef;

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
        .endpoints
        .policy(&endpoint)
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
    let event_id = payload::new_event_id(now, &mut rand::rng());
    let event = EventParts {
        event_id: &event_id,
        event_type: TEST_EVENT_TYPE,
        created_at: now,
        data: EventData::Fields(&data),
    };
    let prepared = prepare(
        &*shared.endpoints,
        &shared.transforms,
        &endpoint,
        &policy,
        &event,
        1,
        None,
    )
    .await?;
    let request = match prepared {
        Prepared::Send(request) => request,
        Prepared::Filtered => {
            let status = TestDeliveryStatus {
                nonce,
                time: crate::api::time::rfc3339(now),
                error: Some(format!(
                    "the endpoint's transform filtered the {TEST_EVENT_TYPE} event; nothing was sent"
                )),
                ..TestDeliveryStatus::default()
            };
            record(shared, &endpoint, status.clone()).await?;
            return Ok(status);
        }
    };
    let result = shared.http.send(&request).await;
    let status = TestDeliveryStatus {
        nonce,
        time: crate::api::time::rfc3339(now),
        status_code: result.status.map(i32::from),
        latency_ms: Some(i64::try_from(result.latency.as_millis()).unwrap_or(i64::MAX)),
        error: (!result.is_success()).then(|| result.summary()),
    };
    record(shared, &endpoint, status.clone()).await?;
    Ok(status)
}

/// Records a test result in the endpoint's `status.lastTest` (see the module comment).
async fn record(
    shared: &Shared,
    endpoint: &EndpointRef,
    result: TestDeliveryStatus,
) -> Result<(), kube::Error> {
    if shared.ownership.owns_endpoint(endpoint) {
        shared.dirty.test_result(endpoint, result);
        return Ok(());
    }
    let Some(resource) = shared.cache.endpoint(&endpoint.namespace, &endpoint.name) else {
        return Ok(());
    };
    let mut patch = EndpointStatusPatch::current(resource.status.as_ref());
    patch.last_test = newest(Some(result), patch.last_test.take());
    patch.apply(&shared.client, endpoint).await
}

/// The later of two test results (by their time; `a` on a tie or an unreadable time).
pub fn newest(
    a: Option<TestDeliveryStatus>,
    b: Option<TestDeliveryStatus>,
) -> Option<TestDeliveryStatus> {
    let time = |t: &TestDeliveryStatus| t.time.parse::<Timestamp>().ok();
    match (a, b) {
        (Some(a), Some(b)) if time(&b) > time(&a) => Some(b),
        (Some(a), _) => Some(a),
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_at(nonce: &str, time: &str) -> TestDeliveryStatus {
        TestDeliveryStatus {
            nonce: nonce.into(),
            time: time.into(),
            ..TestDeliveryStatus::default()
        }
    }

    #[test]
    fn the_newest_test_result_wins() {
        let old = test_at("a", "2024-01-15T10:30:00Z");
        let new = test_at("b", "2024-01-15T10:30:01Z");
        assert_eq!(
            newest(Some(old.clone()), Some(new.clone())),
            Some(new.clone())
        );
        assert_eq!(
            newest(Some(new.clone()), Some(old.clone())),
            Some(new.clone())
        );
        assert_eq!(newest(None, Some(old.clone())), Some(old.clone()));
        assert_eq!(newest(Some(old.clone()), None), Some(old.clone()));
        assert_eq!(newest(None, None), None);
        let unreadable = test_at("c", "yesterday");
        assert_eq!(newest(Some(new.clone()), Some(unreadable)), Some(new));
    }
}
