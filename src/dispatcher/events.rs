//! Watchers that turn resources into work: WebhookEvents are published once; endpoints are held
//! and released when suspended and resumed, and send test deliveries when annotated;
//! WebhookReplays redeliver once; finished WebhookEvents are deleted after their TTL.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;
use tracing::{info, warn};

use super::publish::{publish, PublishError, PublishRequest};
use super::status::event::{apply_event_status, conditions_json, invalid_event_status};
use super::status::FIELD_MANAGER;
use super::Shared;
use crate::api::conditions::{DesiredCondition, COMPLETE};
use crate::api::event::EventPhase;
use crate::api::replay::{ReplayOutcome, ReplayPhase};
use crate::api::validation::{validate_event, validate_replay};
use crate::api::{WebhookEndpoint, WebhookEvent, WebhookReplay, TEST_ANNOTATION};
use crate::store::{EndpointRef, EventSource, FinalOutcome, ReplayFilter, ReplayRequest};

use crate::api::time::rfc3339;

fn condition_json(desired: &DesiredCondition) -> serde_json::Value {
    conditions_json(desired, &rfc3339(Timestamp::now()))
}

/// Publishes every WebhookEvent not yet accepted by this process (the store deduplicates by UID
/// across restarts). One the store cannot take now (saturated, unavailable, caches not synced)
/// is retried with backoff until it is stored: the watch would not bring it back by itself.
pub async fn watch_events(
    shared: Arc<Shared>,
    events: impl Stream<Item = Result<WebhookEvent, watcher::Error>>,
) {
    // UIDs stored by this process, found invalid, or being retried by a task of their own.
    let taken: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut events = std::pin::pin!(events);
    while let Some(item) = events.next().await {
        let Ok(event) = item else { continue };
        // A phase is only written once the event is stored: by this store (the store
        // deduplicates anyway), by another replica sharing it, or by the dispatcher this one
        // replaces (publishing again would deliver twice).
        let accepted_before = event.status.as_ref().and_then(|s| s.phase).is_some();
        let uid = event.uid().unwrap_or_default();
        let known = taken.lock().map(|s| s.contains(&uid)).unwrap_or(false);
        if shared.config.drain
            || accepted_before
            || known
            || event.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let namespace = event.namespace().unwrap_or_default();
        let name = event.name_any();
        if shared.cache.wait_until_ready().await.is_err() {
            return;
        }
        if let Ok(mut set) = taken.lock() {
            set.insert(uid.clone());
        }
        if let Err(errors) = validate_event(&event.spec) {
            report_invalid(&shared, &namespace, &name, &errors.to_string()).await;
            continue;
        }
        let request = PublishRequest {
            namespace,
            event_type: event.spec.type_.clone(),
            data: event.spec.data.clone(),
            id: event.spec.id.clone(),
            source: EventSource::Resource {
                name: name.clone(),
                uid: uid.clone(),
            },
        };
        if let Err(error) = publish_once(&shared, &name, request.clone()).await {
            warn!(%error, event = %name, "publishing a WebhookEvent failed; retrying with backoff");
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                for attempt in 1.. {
                    tokio::time::sleep(publish_retry_delay(attempt)).await;
                    match publish_once(&shared, &name, request.clone()).await {
                        Ok(()) => return,
                        Err(error) => {
                            warn!(%error, event = %name, attempt, "publishing a WebhookEvent failed again")
                        }
                    }
                }
            });
        }
    }
}

/// Publishes a WebhookEvent; `Err` only for what may succeed later. An event the store refuses
/// for good (its type or data) is reported Failed instead.
async fn publish_once(
    shared: &Arc<Shared>,
    name: &str,
    request: PublishRequest,
) -> Result<(), PublishError> {
    let namespace = request.namespace.clone();
    match publish(shared, request).await {
        Ok(published) => {
            shared.dirty.event(&published.event_id);
            Ok(())
        }
        Err(error @ (PublishError::InvalidType(_) | PublishError::ConflictingEventType)) => {
            report_invalid(shared, &namespace, name, &error.to_string()).await;
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// Failed and finished now: labelled for `-l webhooks.pitchey.io/phase=Failed`, and deleted after
/// its TTL like any finished event.
async fn report_invalid(shared: &Shared, namespace: &str, name: &str, message: &str) {
    let status = invalid_event_status(message, Timestamp::now());
    let api: Api<WebhookEvent> = Api::namespaced(shared.client.clone(), namespace);
    if let Err(error) = apply_event_status(&api, name, EventPhase::Failed, status).await {
        warn!(%error, event = %name, "reporting an invalid WebhookEvent failed");
    }
}

/// Backoff between attempts to store a WebhookEvent: 1 s, 2 s, 4 s … at most 30 s.
fn publish_retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// Deletes finished WebhookEvents once `ttlSecondsAfterFinished` (or the default) has passed.
pub async fn expire_events(shared: Arc<Shared>, events: Store<WebhookEvent>) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = Timestamp::now();
        for event in events.state() {
            let Some(finished) = event
                .status
                .as_ref()
                .and_then(|s| s.finished_time.as_deref())
                .and_then(|t| t.parse::<Timestamp>().ok())
            else {
                continue;
            };
            let ttl = event
                .spec
                .ttl_seconds_after_finished
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(shared.config.event_ttl_seconds);
            let expires = finished
                .saturating_add(Duration::from_secs(ttl))
                .unwrap_or(Timestamp::MAX);
            let namespace = event.namespace().unwrap_or_default();
            if expires <= now
                && event.metadata.deletion_timestamp.is_none()
                && shared.ownership.owns(&namespace, &event.name_any())
            {
                let api: Api<WebhookEvent> = Api::namespaced(shared.client.clone(), &namespace);
                match api
                    .delete(&event.name_any(), &DeleteParams::default())
                    .await
                {
                    Ok(_) => {
                        info!(event = %event.name_any(), "deleted a finished WebhookEvent after its TTL")
                    }
                    Err(error) => warn!(%error, "deleting a finished WebhookEvent failed"),
                }
            }
        }
    }
}

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
            shared.dirty.endpoint(&key);
        }
        send_test_if_requested(&shared, &endpoint, &tests_sent);
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
        let outcome = super::test_delivery::send_test(
            &shared,
            &key.namespace,
            &key.name,
            nonce.clone(),
            None,
        )
        .await;
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
    let super::ownership::Ownership::Partitions(partitioned) = &shared.ownership else {
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

/// Runs each WebhookReplay once and reports its progress until complete.
pub async fn watch_replays(
    shared: Arc<Shared>,
    replays: impl Stream<Item = Result<WebhookReplay, watcher::Error>>,
) {
    let active: Arc<Mutex<HashMap<String, (String, String)>>> = Arc::default();
    let progress = tokio::spawn(report_replays(shared.clone(), active.clone()));
    let mut replays = std::pin::pin!(replays);
    while let Some(item) = replays.next().await {
        let Ok(replay) = item else { continue };
        let complete = replay.status.as_ref().and_then(|s| s.phase) == Some(ReplayPhase::Complete);
        let uid = replay.uid().unwrap_or_default();
        if complete || active.lock().map(|a| a.contains_key(&uid)).unwrap_or(true) {
            continue;
        }
        let namespace = replay.namespace().unwrap_or_default();
        let name = replay.name_any();
        let api: Api<WebhookReplay> = Api::namespaced(shared.client.clone(), &namespace);
        let (from, to) = match validate_replay(&replay.spec) {
            Ok(range) => range,
            Err(errors) => {
                let condition = DesiredCondition::new(
                    COMPLETE,
                    false,
                    "InvalidSpec",
                    format!("invalid spec: {errors}"),
                );
                let patch = json!({"apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookReplay",
                    "status": {"phase": "Failed", "conditions": condition_json(&condition)}});
                let _ = api
                    .patch_status(
                        &name,
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(&patch),
                    )
                    .await;
                continue;
            }
        };
        let filter = ReplayFilter {
            endpoint: EndpointRef::new(&namespace, &replay.spec.endpoint_ref.name),
            from,
            to: to.unwrap_or_else(Timestamp::now),
            event_types: replay.spec.event_types.clone(),
            outcomes: replay
                .spec
                .outcomes
                .iter()
                .map(|o| match o {
                    ReplayOutcome::DeadLettered => FinalOutcome::DeadLettered,
                    ReplayOutcome::Delivered => FinalOutcome::Delivered,
                })
                .collect(),
        };
        match shared
            .store
            .replay(ReplayRequest {
                replay_id: uid.clone(),
                filter,
                now: Timestamp::now(),
            })
            .await
        {
            Ok(result) => {
                info!(replay = %name, matched = result.matched, requeued = result.requeued, first_run = result.first_run, "replay started");
                shared.wake.notify_one();
                if let Ok(mut a) = active.lock() {
                    a.insert(uid, (namespace, name));
                }
            }
            Err(error) => warn!(%error, replay = %name, "starting a replay failed"),
        }
    }
    progress.abort();
}

async fn report_replays(
    shared: Arc<Shared>,
    active: Arc<Mutex<HashMap<String, (String, String)>>>,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(
            shared.config.status_interval_seconds.max(1),
        ))
        .await;
        let current: Vec<(String, (String, String))> = active
            .lock()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        for (uid, (namespace, name)) in current {
            let Ok(Some(progress)) = shared.store.replay_progress(&uid).await else {
                continue;
            };
            let done = progress.outstanding == 0;
            let phase = if done { "Complete" } else { "Running" };
            let condition = if done {
                DesiredCondition::new(
                    COMPLETE,
                    true,
                    "Complete",
                    format!(
                        "{} matched, {} redelivered, {} failed",
                        progress.matched, progress.delivered, progress.dead_lettered
                    ),
                )
            } else {
                DesiredCondition::new(
                    COMPLETE,
                    false,
                    "Running",
                    format!("{} deliveries outstanding", progress.outstanding),
                )
            };
            let patch = json!({"apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookReplay", "status": {
                "phase": phase,
                "matched": progress.matched,
                "redelivered": progress.delivered,
                "failed": progress.dead_lettered,
                "startTime": rfc3339(progress.created_at),
                "completionTime": done.then(|| rfc3339(Timestamp::now())),
                "conditions": condition_json(&condition),
            }});
            let api: Api<WebhookReplay> = Api::namespaced(shared.client.clone(), &namespace);
            match api
                .patch_status(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await
            {
                Ok(_) if done => {
                    if let Ok(mut a) = active.lock() {
                        a.remove(&uid);
                    }
                }
                Ok(_) => {}
                Err(error) => warn!(%error, replay = %name, "writing replay status failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_retries_back_off_to_thirty_seconds() {
        let delays: Vec<u64> = (1..=8).map(|a| publish_retry_delay(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(publish_retry_delay(u32::MAX), Duration::from_secs(30));
    }
}
