//! Accepting an event: validate, route, persist durably, wake the delivery engine. Shared by the
//! WebhookEvent watcher and the ingest API.
use std::time::Duration;

use jiff::Timestamp;

use super::cache::Cache;
use super::engine::Reserved;
use super::Shared;
use crate::api::event_types;
use crate::delivery::{ordering, payload};
use crate::store::{EnqueueOutcome, EnqueueRequest, EventSource, NewEvent, Store, StoreError};

/// An event to publish.
#[derive(Clone, Debug)]
pub struct PublishRequest {
    pub namespace: String,
    pub event_type: String,
    pub data: serde_json::Map<String, serde_json::Value>,
    /// Idempotency key.
    pub id: Option<String>,
    pub source: EventSource,
    /// The W3C `traceparent` it is published in (`runtime::trace_context`).
    pub trace_parent: Option<String>,
}

/// What was accepted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    pub event_id: String,
    /// Deliveries of the event (those of the first one for a duplicate).
    pub deliveries: usize,
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "type: `{0}` is not an event type; write dot-separated lowercase words, e.g. user.created"
    )]
    InvalidType(String),
    #[error("data.event_type: must equal type or be left out")]
    ConflictingEventType,
    #[error("the store is saturated; retry later")]
    Saturated,
    #[error("the dispatcher is starting: its caches of endpoints and subscriptions are not loaded yet; retry shortly")]
    NotReady,
    #[error("storing the event failed: {0}")]
    Store(#[source] StoreError),
    #[error("this dispatcher is draining (--drain): it takes no new events; publish through the dispatcher that replaces it")]
    Draining,
}

/// How long a request made while the dispatcher starts waits for its caches before it is
/// refused with 503 (routing needs them complete; once synced there is no wait).
pub const CACHE_WAIT: Duration = Duration::from_secs(5);

/// Waits at most `limit` for every cache to have listed its objects once.
pub async fn caches_synced(cache: &Cache, limit: Duration) -> Result<(), PublishError> {
    match tokio::time::timeout(limit, cache.wait_until_ready()).await {
        Ok(Ok(())) => Ok(()),
        // Timed out, or a watch stopped before it listed anything.
        _ => Err(PublishError::NotReady),
    }
}

/// Checks an event before anything is stored: its type's syntax, and a `data.event_type` equal
/// to the type if present. The ingest API runs it while parsing (so a batch is refused whole);
/// [`publish_batch`] runs it for every path. Borrowed: nothing is copied to check.
pub fn check(
    event_type: &str,
    data: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), PublishError> {
    if !event_types::is_valid_event_type(event_type) {
        return Err(PublishError::InvalidType(event_type.to_owned()));
    }
    payload::check_event_type(event_type, data).map_err(|_| PublishError::ConflictingEventType)
}

/// The ordering lane of the event's delivery to each ordered endpoint, read from the endpoint's
/// spec as the cache has it now (an endpoint's ConfigMap may lag behind it).
fn lanes(
    cache: &Cache,
    request: &PublishRequest,
    endpoints: &[String],
) -> std::collections::BTreeMap<String, String> {
    endpoints
        .iter()
        .filter_map(|name| {
            let endpoint = cache.endpoint(&request.namespace, name)?;
            let lane = ordering::lane(
                endpoint.spec.ordering.as_ref(),
                &request.event_type,
                &request.data,
            )?;
            Some((name.clone(), lane))
        })
        .collect()
}

/// Validates, routes and durably stores a batch (one commit); all or nothing.
pub async fn publish_batch(
    shared: &Shared,
    requests: Vec<PublishRequest>,
) -> Result<Vec<Published>, PublishError> {
    if shared.config.drain {
        return Err(PublishError::Draining);
    }
    for request in &requests {
        check(&request.event_type, &request.data)?;
    }
    // Routing needs complete caches (at startup only; immediate afterwards).
    caches_synced(&shared.cache, CACHE_WAIT).await?;
    let now = Timestamp::now();
    let mut enqueue = Vec::with_capacity(requests.len());
    let mut reserved = Vec::with_capacity(requests.len());
    for request in requests {
        let event_id = payload::new_event_id(now, &mut rand::rng());
        let endpoints = shared.cache.route(&request.namespace, &request.event_type);
        let lanes = lanes(&shared.cache, &request, &endpoints);
        // Room for the deliveries this replica can start as soon as they are stored.
        let reservation = shared
            .handoff
            .reserve(&request.namespace, &endpoints, &lanes, now);
        // Checked and rendered once: what every attempt sends (see `payload::canonical_data`).
        let data =
            payload::canonical_data(&request.event_type, &request.data).map_err(|e| match e {
                payload::PayloadError::ConflictingEventType { .. } => {
                    PublishError::ConflictingEventType
                }
                other => PublishError::Store(StoreError::InvalidArgument(format!("data: {other}"))),
            })?;
        enqueue.push(EnqueueRequest {
            event: NewEvent {
                event_id,
                namespace: request.namespace,
                event_type: request.event_type,
                data,
                created_at: now,
                source: request.source,
                idempotency_key: request.id,
                trace_parent: request.trace_parent,
            },
            endpoints,
            lanes,
            claim: reservation.as_ref().map(Reserved::claim),
        });
        reserved.push(reservation);
    }
    let (outcomes, all_started) = if reserved.iter().any(Option::is_some) {
        // On a task of its own: once the store has created deliveries claimed, only their start
        // releases them before their lease expires, so a request dropped mid-commit (the client
        // went away) must not cancel it.
        let store = shared.store.clone();
        tokio::spawn(async move { store_and_start(&*store, enqueue, reserved).await })
            .await
            .map_err(|e| {
                PublishError::Store(StoreError::Commit(format!("the enqueue task failed: {e}")))
            })?
    } else {
        store_and_start(&*shared.store, enqueue, reserved).await
    }
    .map_err(|e| match e {
        StoreError::Saturated { .. } => PublishError::Saturated,
        other => PublishError::Store(other),
    })?;
    if !all_started {
        // Stored Pending: the claim loop takes them.
        shared.wake.notify_one();
    }
    Ok(outcomes
        .into_iter()
        .map(|o| Published {
            event_id: o.event_id,
            deliveries: o.deliveries.len(),
            duplicate: o.duplicate,
        })
        .collect())
}

/// Stores the events and starts the deliveries created claimed for their reservations (on
/// failure the reservations are dropped: given back). True when every new delivery was started.
async fn store_and_start(
    store: &dyn Store,
    enqueue: Vec<EnqueueRequest>,
    reserved: Vec<Option<Reserved>>,
) -> Result<(Vec<EnqueueOutcome>, bool), StoreError> {
    let mut outcomes = store.enqueue_batch(enqueue).await?;
    let mut all_started = true;
    for (outcome, reservation) in outcomes.iter_mut().zip(reserved) {
        let claimed = std::mem::take(&mut outcome.claimed);
        let started = reservation.map_or(0, |r| r.start(claimed));
        all_started &= outcome.duplicate || started == outcome.deliveries.len();
    }
    Ok((outcomes, all_started))
}

/// Publishes one event.
pub async fn publish(shared: &Shared, request: PublishRequest) -> Result<Published, PublishError> {
    let mut published = publish_batch(shared, vec![request]).await?;
    published
        .pop()
        .ok_or(PublishError::Store(StoreError::Commit("no outcome".into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatcher::named;
    use crate::dispatcher::subscription_index::SharedIndex;
    use kube::runtime::reflector;

    /// A request made before the caches synced is refused after the wait, not left hanging.
    #[tokio::test]
    async fn unsynced_caches_refuse_after_the_wait() {
        // The writers are kept (never fed): the caches stay unsynced.
        let (endpoints, _endpoints_writer) = reflector::store();
        let (subscriptions, _subscriptions_writer) = reflector::store();
        let (secrets, _secrets_writer) = named::store();
        let (config_maps, _config_maps_writer) = named::store();
        let cache = Cache {
            endpoints,
            subscriptions,
            secrets,
            config_maps,
            index: SharedIndex::default(),
        };
        let waited = tokio::time::timeout(
            Duration::from_secs(10),
            caches_synced(&cache, Duration::from_millis(100)),
        )
        .await
        .expect("bounded by its limit");
        assert!(matches!(waited, Err(PublishError::NotReady)), "{waited:?}");
        assert!(PublishError::NotReady.to_string().contains("starting"));
    }
}
