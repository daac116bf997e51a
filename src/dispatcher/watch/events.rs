//! WebhookEvents: each is published once (stored, routed) and its status follows its deliveries.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::watcher;
use kube::ResourceExt;
use tracing::warn;

use crate::api::validation::validate_event;
use crate::api::WebhookEvent;
use crate::dispatcher::publish::{publish, PublishError, PublishRequest};
use crate::dispatcher::status::event::{apply_event_status, invalid_event_status};
use crate::dispatcher::Shared;
use crate::store::EventSource;

/// The watch's WebhookEvents in the order they were created: each (re)list is held back until it
/// is complete and then given in creation order ([`creation_order`]), live changes as they come.
/// Without this, events created while no dispatcher ran would be accepted in the API server's
/// list order (by name: `e10` before `e2`), which ordered endpoints would deliver.
pub fn in_creation_order(
    events: impl Stream<Item = Result<watcher::Event<WebhookEvent>, watcher::Error>>,
) -> impl Stream<Item = Result<WebhookEvent, watcher::Error>> {
    events
        .scan(Vec::new(), |listed: &mut Vec<WebhookEvent>, event| {
            let out = match event {
                Ok(watcher::Event::Init) => {
                    listed.clear();
                    Vec::new()
                }
                Ok(watcher::Event::InitApply(object)) => {
                    listed.push(object);
                    Vec::new()
                }
                Ok(watcher::Event::InitDone) => {
                    let mut list = std::mem::take(listed);
                    list.sort_by(creation_order);
                    list.into_iter().map(Ok).collect()
                }
                Ok(watcher::Event::Apply(object)) => vec![Ok(object)],
                Ok(watcher::Event::Delete(_)) => Vec::new(),
                Err(error) => vec![Err(error)],
            };
            futures::future::ready(Some(futures::stream::iter(out)))
        })
        .flatten()
}

/// Creation order: `creationTimestamp` (whole seconds), then the `resourceVersion` (the etcd
/// revision that created an object nobody has modified since, which is what an event not yet
/// accepted is), then the name. Pure.
pub fn creation_order(a: &WebhookEvent, b: &WebhookEvent) -> std::cmp::Ordering {
    let key = |e: &WebhookEvent| {
        (
            e.metadata.creation_timestamp.as_ref().map(|t| t.0),
            e.metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok()),
            e.name_any(),
        )
    };
    key(a).cmp(&key(b))
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
            trace_parent: crate::runtime::trace_context::valid(
                event
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(crate::api::TRACEPARENT_ANNOTATION))
                    .map(String::as_str),
            ),
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
    if let Err(error) = apply_event_status(&api, name, &status).await {
        warn!(%error, event = %name, "reporting an invalid WebhookEvent failed");
    }
}

/// Backoff between attempts to store a WebhookEvent: 1 s, 2 s, 4 s … at most 30 s.
fn publish_retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(5)).min(Duration::from_secs(30))
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

#[cfg(test)]
mod order_tests {
    use super::*;
    use futures::executor::block_on;

    fn event(name: &str, created_second: i64, version: &str) -> WebhookEvent {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookEvent",
            "metadata": {"name": name, "resourceVersion": version,
                "creationTimestamp": jiff::Timestamp::from_second(created_second).unwrap().to_string()},
            "spec": {"type": "user.updated", "data": {}}
        }))
        .unwrap()
    }

    fn names(events: Vec<Result<WebhookEvent, watcher::Error>>) -> Vec<String> {
        events.into_iter().map(|e| e.unwrap().name_any()).collect()
    }

    #[test]
    fn a_list_is_given_in_creation_order_and_live_changes_as_they_come() {
        let listed = vec![
            Ok(watcher::Event::Init),
            // The API server lists by name.
            Ok(watcher::Event::InitApply(event("e10", 5, "110"))),
            Ok(watcher::Event::InitApply(event("e2", 5, "102"))),
            Ok(watcher::Event::InitApply(event("e3", 4, "900"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(event("e0", 9, "50"))),
            Ok(watcher::Event::Delete(event("e2", 5, "102"))),
            Ok(watcher::Event::Apply(event("e11", 9, "120"))),
        ];
        let out = block_on(in_creation_order(futures::stream::iter(listed)).collect::<Vec<_>>());
        assert_eq!(names(out), ["e3", "e2", "e10", "e0", "e11"]);
    }

    #[test]
    fn a_relist_replaces_what_an_interrupted_list_held() {
        let listed = vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(event("gone", 1, "1"))),
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(event("b", 2, "3"))),
            Ok(watcher::Event::InitApply(event("a", 2, "4"))),
            Ok(watcher::Event::InitDone),
        ];
        let out = block_on(in_creation_order(futures::stream::iter(listed)).collect::<Vec<_>>());
        assert_eq!(names(out), ["b", "a"]);
    }
}
