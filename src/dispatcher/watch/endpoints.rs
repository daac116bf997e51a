//! WebhookEndpoints: suspension holds their deliveries, resumption releases them, and a new test
//! annotation sends a test delivery (once per nonce, from the owning replica).
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use kube::runtime::watcher;
use kube::ResourceExt;
use tracing::{info, warn};

use crate::api::{WebhookEndpoint, TEST_ANNOTATION};
use crate::dispatcher::ownership::Ownership;
use crate::dispatcher::test_delivery::send_test;
use crate::dispatcher::Shared;
use crate::security::{SecurityEvent, SecurityKind};
use crate::store::EndpointRef;

/// Reacts to endpoint changes: suspension holds deliveries, resumption releases them, a new
/// test annotation sends a test delivery, and every endpoint gets its status written.
pub async fn watch_endpoints(
    shared: Arc<Shared>,
    endpoints: impl Stream<Item = Result<WebhookEndpoint, watcher::Error>>,
) {
    let mut suspended: HashMap<EndpointRef, bool> = HashMap::new();
    let tests_sent: TestsSent = Arc::default();
    let rescans = tokio::spawn(rescan_on_gain(shared.clone(), tests_sent.clone()));
    let _abort_rescans = AbortOnDrop(rescans);
    let mut endpoints = std::pin::pin!(endpoints);
    while let Some(item) = endpoints.next().await {
        let Ok(endpoint) = item else { continue };
        let key = EndpointRef::new(
            endpoint.namespace().unwrap_or_default(),
            endpoint.name_any(),
        );
        let now_suspended = endpoint.spec.suspend;
        if suspended.insert(key.clone(), now_suspended) != Some(now_suspended) {
            let result = if now_suspended {
                shared
                    .store
                    .hold_endpoint(key.clone(), Timestamp::now())
                    .await
            } else {
                shared
                    .store
                    .release_endpoint(key.clone(), Timestamp::now())
                    .await
            };
            match result {
                Ok(moved) if moved > 0 => {
                    info!(endpoint = %key.name, moved, suspended = now_suspended, "endpoint suspension changed");
                    shared.wake.notify_one();
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(%error, endpoint = %key.name, "holding or releasing deliveries failed")
                }
            }
            shared.dirty.endpoint_state(&key);
        }
        send_test_if_requested(&shared, &endpoint, &tests_sent);
        super::resume::resume_if_requested(&shared, &endpoint).await;
    }
}

type TestsSent = Arc<Mutex<HashSet<(EndpointRef, String)>>>;

/// Sends a test delivery when the endpoint's test annotation holds a nonce not yet answered in
/// its status, once per nonce, and only from the replica that owns the endpoint.
fn send_test_if_requested(
    shared: &Arc<Shared>,
    endpoint: &WebhookEndpoint,
    tests_sent: &TestsSent,
) {
    let key = EndpointRef::new(
        endpoint.namespace().unwrap_or_default(),
        endpoint.name_any(),
    );
    if !shared.ownership.owns_endpoint(&key) {
        return;
    }
    let nonce = endpoint.annotations().get(TEST_ANNOTATION).cloned();
    let last = endpoint
        .status
        .as_ref()
        .and_then(|s| s.last_test.as_ref())
        .map(|t| t.nonce.clone());
    let Some(nonce) = nonce.filter(|n| Some(n) != last.as_ref()) else {
        return;
    };
    let first_time = tests_sent
        .lock()
        .map(|mut set| set.insert((key.clone(), nonce.clone())))
        .unwrap_or(false);
    if !first_time {
        return;
    }
    let shared = shared.clone();
    let tests_sent = tests_sent.clone();
    tokio::spawn(async move {
        let outcome = send_test(&shared, &key.namespace, &key.name, nonce.clone(), None).await;
        // The annotation's author is in the API server's audit log, not here.
        shared.security.record(
            SecurityEvent::new(
                SecurityKind::TestDelivery,
                format!("test delivery {nonce} requested by the {TEST_ANNOTATION} annotation"),
            )
            .endpoint(&key.namespace, &key.name),
        );
        if let Err(error) = outcome {
            warn!(%error, endpoint = %key.name, "test delivery failed");
            // Let a later change try again.
            if let Ok(mut set) = tests_sent.lock() {
                set.remove(&(key, nonce));
            }
        }
    });
}

/// Looks again at every cached endpoint when this replica gains partitions: test requests that
/// arrived while nobody owned their endpoint are answered now.
async fn rescan_on_gain(shared: Arc<Shared>, tests_sent: TestsSent) {
    let Ownership::Partitions(partitioned) = &*shared.ownership else {
        return;
    };
    loop {
        partitioned.gained.notified().await;
        for endpoint in shared.cache.endpoints.state() {
            send_test_if_requested(&shared, &endpoint, &tests_sent);
        }
    }
}

/// Aborts a helper task when its parent task ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
