//! The main flow: enqueue, claim, record; idempotency; held endpoints; claim scopes.
use std::collections::BTreeSet;

use super::{at, claim_all, endpoint, event, names, result, Harness};
use crate::store::{
    AttemptOutcome, ClaimScope, DeliveryId, DeliveryState, EnqueueRequest, EventSource, NextStep,
    PageRequest, RecordOutcome, Result, StoreError,
};

/// Enqueue to two endpoints, claim, retry one and deliver the other, then dead-letter the first.
pub async fn enqueue_claim_record<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    let evt = event("evt_1", "user.created", 0);
    let out = store.enqueue(evt.clone(), names(&["a", "b", "a"])).await?;
    assert!(!out.duplicate);
    assert_eq!(out.event_id, "evt_1");
    assert_eq!(
        out.deliveries.len(),
        2,
        "one delivery per distinct endpoint"
    );

    let status = store
        .event_status("evt_1")
        .await?
        .expect("enqueued event is readable");
    assert_eq!(status.event.data, evt.data);
    assert_eq!(status.event.event_type, "user.created");
    assert!(status
        .deliveries
        .iter()
        .all(|d| d.state == DeliveryState::Pending));
    assert!(status
        .deliveries
        .iter()
        .all(|d| d.next_attempt_at == Some(at(0))));

    assert!(
        store.claim_due(claim_all("w1", -1)).await?.is_empty(),
        "nothing is due before its time"
    );
    let claimed = store.claim_due(claim_all("w1", 0)).await?;
    assert_eq!(claimed.len(), 2);
    for c in &claimed {
        assert_eq!(c.event.data, evt.data, "a claim carries the payload");
        assert_eq!(c.delivery.state, DeliveryState::InFlight);
        assert_eq!(c.lease_expires_at, at(60));
    }
    assert!(
        store.claim_due(claim_all("w2", 1)).await?.is_empty(),
        "in-flight deliveries are not claimed twice"
    );
    assert_eq!(store.queue_counts().await?.in_flight, 2);

    let id_of = |name: &str| {
        claimed
            .iter()
            .find(|c| c.delivery.endpoint.name == name)
            .map(|c| c.delivery.id)
    };
    let (a, b) = (
        id_of("a").expect("delivery to a"),
        id_of("b").expect("delivery to b"),
    );
    let retry = NextStep::Retry { at: at(10) };
    assert_eq!(
        store
            .record_attempt(result(a, "w1", 1, 1, Some(500), 120, retry))
            .await?,
        RecordOutcome::Applied
    );
    let delivered = store
        .record_attempt(result(b, "w1", 1, 1, Some(200), 80, NextStep::Delivered))
        .await?;
    assert_eq!(delivered, RecordOutcome::Applied);

    assert!(
        store.claim_due(claim_all("w1", 5)).await?.is_empty(),
        "the retry waits for its time"
    );
    let again = store.claim_due(claim_all("w1", 10)).await?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.id, a);
    assert_eq!(again[0].delivery.attempts, 1);
    assert_eq!(again[0].delivery.last_status_code, Some(500));
    let dead = NextStep::DeadLetter {
        reason: "retries exhausted".into(),
    };
    assert_eq!(
        store
            .record_attempt(result(a, "w1", 2, 11, Some(503), 90, dead))
            .await?,
        RecordOutcome::Applied
    );

    let status = store.event_status("evt_1").await?.expect("event");
    let state_of = |id: DeliveryId| {
        status
            .deliveries
            .iter()
            .find(|d| d.id == id)
            .expect("delivery")
            .clone()
    };
    let (da, db) = (state_of(a), state_of(b));
    assert_eq!(da.state, DeliveryState::DeadLettered);
    assert_eq!(da.attempts, 2);
    assert_eq!(da.dead_letter_reason.as_deref(), Some("retries exhausted"));
    assert_eq!(da.finished_at, Some(at(11)));
    assert_eq!(da.last_status_code, Some(503));
    assert_eq!(db.state, DeliveryState::Delivered);
    assert_eq!(db.delivered_at, Some(at(1)));
    assert_eq!(db.last_error, None);

    let log = store
        .delivery_log(&endpoint("a"), PageRequest::first(10))
        .await?;
    let attempts: Vec<u32> = log.items.iter().map(|e| e.record.attempt).collect();
    assert_eq!(attempts, vec![2, 1], "newest attempt first");
    assert_eq!(log.items[0].outcome, AttemptOutcome::DeadLettered);
    assert_eq!(log.items[1].record.latency_ms, Some(120));
    assert_eq!(
        log.items[1].record.response_snippet.as_deref(),
        Some("body of 500")
    );
    assert!(log.next_cursor.is_none());
    let log_b = store
        .delivery_log(&endpoint("b"), PageRequest::first(10))
        .await?;
    assert_eq!(log_b.items.len(), 1);
    assert!(log_b.items[0].success);

    let dead_letters = store
        .dead_letters("ns", None, PageRequest::first(10))
        .await?;
    assert_eq!(dead_letters.items.len(), 1);
    let letter = &dead_letters.items[0];
    assert_eq!(
        letter.event.data, evt.data,
        "a dead letter keeps the payload"
    );
    assert_eq!(
        letter
            .attempts
            .iter()
            .map(|e| e.record.attempt)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(store.pending_count().await?, 0);

    let unknown = result(
        DeliveryId(i64::MAX),
        "w1",
        1,
        12,
        Some(200),
        1,
        NextStep::Delivered,
    );
    assert_eq!(
        store.record_attempt(unknown).await?,
        RecordOutcome::NotFound
    );
    Ok(())
}

/// Same id, same resource UID, same idempotency key within the window: one event, no new delivery.
pub async fn idempotency<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    let window = i64::try_from(harness.idempotency_window().as_secs()).unwrap_or(i64::MAX / 2);
    let keyed = |id: &str, seconds: i64| {
        let mut e = event(id, "user.created", seconds);
        e.idempotency_key = Some("key-1".into());
        e
    };
    let first = store.enqueue(keyed("evt_a", 0), names(&["a", "b"])).await?;
    let second = store
        .enqueue(keyed("evt_b", 60), names(&["a", "b", "c"]))
        .await?;
    assert!(second.duplicate, "same key within the window");
    assert_eq!(second.event_id, "evt_a");
    assert_eq!(second.deliveries, first.deliveries);
    assert!(
        store.event_status("evt_b").await?.is_none(),
        "nothing stored for a duplicate"
    );

    let later = store
        .enqueue(keyed("evt_c", window + 1), names(&["a"]))
        .await?;
    assert!(!later.duplicate, "the key is free again after the window");
    let mut other_ns = keyed("evt_d", 61);
    other_ns.namespace = "other".into();
    assert!(
        !store.enqueue(other_ns, names(&["a"])).await?.duplicate,
        "keys are per namespace"
    );

    let same_id = store
        .enqueue(event("evt_a", "user.created", 62), names(&["z"]))
        .await?;
    assert!(same_id.duplicate, "same event id");
    assert_eq!(same_id.deliveries, first.deliveries);

    let from_resource = |id: &str| {
        let mut e = event(id, "user.created", 63);
        e.source = EventSource::Resource {
            name: "my-event".into(),
            uid: "uid-1".into(),
        };
        e
    };
    assert!(
        !store
            .enqueue(from_resource("evt_r1"), names(&["a"]))
            .await?
            .duplicate
    );
    let seen_again = store
        .enqueue(from_resource("evt_r2"), names(&["a"]))
        .await?;
    assert!(
        seen_again.duplicate,
        "the same WebhookEvent UID enqueues once"
    );
    assert_eq!(seen_again.event_id, "evt_r1");
    let status = store.event_status("evt_r1").await?.expect("resource event");
    assert_eq!(
        status.event.source,
        EventSource::Resource {
            name: "my-event".into(),
            uid: "uid-1".into()
        }
    );

    let mut batch_key = event("evt_x", "user.created", 64);
    batch_key.idempotency_key = Some("key-2".into());
    let mut batch_dup = batch_key.clone();
    batch_dup.event_id = "evt_y".into();
    let batch = store
        .enqueue_batch(vec![
            EnqueueRequest::unordered(batch_key, names(&["a"])),
            EnqueueRequest::unordered(batch_dup, names(&["a"])),
        ])
        .await?;
    assert!(!batch[0].duplicate);
    assert!(batch[1].duplicate, "duplicates within one batch are caught");
    assert_eq!(batch[1].event_id, "evt_x");

    // evt_a (2) + evt_c (1) + evt_d (1) + evt_r1 (1) + evt_x (1)
    assert_eq!(store.pending_count().await?, 6, "no duplicate deliveries");
    let invalid = store
        .enqueue(event("", "user.created", 0), names(&["a"]))
        .await;
    assert!(matches!(invalid, Err(StoreError::InvalidArgument(_))));
    Ok(())
}

/// A held endpoint's deliveries wait (including new ones and retries) until released.
pub async fn held_endpoints<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    store
        .enqueue(event("evt_1", "user.created", 0), names(&["a", "b"]))
        .await?;
    assert_eq!(store.hold_endpoint(endpoint("a"), at(1)).await?, 1);
    assert_eq!(
        store.hold_endpoint(endpoint("a"), at(1)).await?,
        0,
        "holding is idempotent"
    );
    let claimed = store.claim_due(claim_all("w", 2)).await?;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.endpoint, endpoint("b"));

    let out = store
        .enqueue(event("evt_2", "user.created", 3), names(&["a"]))
        .await?;
    let status = store.event_status("evt_2").await?.expect("event");
    assert_eq!(status.deliveries[0].id, out.deliveries[0]);
    assert_eq!(
        status.deliveries[0].state,
        DeliveryState::Held,
        "new deliveries of a held endpoint are held"
    );
    assert_eq!(store.queue_counts().await?.held, 2);

    // b is suspended while its delivery is in flight: the retry is held.
    assert_eq!(store.hold_endpoint(endpoint("b"), at(4)).await?, 0);
    let b = claimed[0].delivery.id;
    let retry = result(b, "w", 1, 5, Some(500), 10, NextStep::Retry { at: at(500) });
    assert_eq!(store.record_attempt(retry).await?, RecordOutcome::Applied);
    let status = store.event_status("evt_1").await?.expect("event");
    assert!(status
        .deliveries
        .iter()
        .all(|d| d.state == DeliveryState::Held));
    let log = store
        .delivery_log(&endpoint("b"), PageRequest::first(10))
        .await?;
    assert_eq!(log.items[0].outcome, AttemptOutcome::Held);

    assert_eq!(store.release_endpoint(endpoint("a"), at(10)).await?, 2);
    let released = store.claim_due(claim_all("w", 10)).await?;
    assert_eq!(released.len(), 2, "released deliveries are due at once");
    assert!(released
        .iter()
        .all(|c| c.delivery.endpoint == endpoint("a")));
    assert_eq!(store.release_endpoint(endpoint("b"), at(11)).await?, 1);
    assert!(
        store.claim_due(claim_all("w", 11)).await?.is_empty(),
        "a released retry keeps its later time"
    );
    let mut only_b = claim_all("w", 500);
    only_b.scope = ClaimScope::Endpoints(vec![endpoint("b")]);
    assert_eq!(store.claim_due(only_b).await?.len(), 1);
    assert_eq!(
        store.release_endpoint(endpoint("b"), at(12)).await?,
        0,
        "releasing is idempotent"
    );
    // Held while in flight, then the lease is recovered: it returns held, not due.
    assert_eq!(store.hold_endpoint(endpoint("b"), at(501)).await?, 0);
    assert_eq!(store.recover_in_flight(None, at(502)).await?, 1);
    assert_eq!(store.queue_counts().await?.held, 1);
    let mut expired = claim_all("w", 10_000);
    expired.scope = ClaimScope::Endpoints(vec![endpoint("b")]);
    assert!(
        store.claim_due(expired).await?.is_empty(),
        "held deliveries are not claimed"
    );

    Ok(())
}

/// Claims limited to endpoints, partitions, and a per-endpoint share.
pub async fn claim_scopes<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    let all = ["a", "b", "c", "d", "e", "f"];
    for i in 0..3 {
        store
            .enqueue(event(&format!("evt_{i}"), "user.created", i), names(&all))
            .await?;
    }
    let mut request = claim_all("w", 10);
    request.scope = ClaimScope::Endpoints(vec![endpoint("b")]);
    let only_b = store.claim_due(request.clone()).await?;
    assert_eq!(only_b.len(), 3);
    assert!(only_b.iter().all(|c| c.delivery.endpoint == endpoint("b")));

    let owned = endpoint("c").partition_hash() % 4;
    request.scope = ClaimScope::Partitions {
        count: 4,
        owned: vec![owned],
    };
    let in_partition = store.claim_due(request.clone()).await?;
    let expected: BTreeSet<&str> = all
        .iter()
        .copied()
        .filter(|n| *n != "b" && endpoint(n).partition_hash() % 4 == owned)
        .collect();
    let got: BTreeSet<&str> = in_partition
        .iter()
        .map(|c| c.delivery.endpoint.name.as_str())
        .collect();
    assert_eq!(
        got, expected,
        "a partition claim takes exactly the endpoints hashed to it"
    );
    assert_eq!(in_partition.len(), expected.len() * 3);

    request.scope = ClaimScope::All;
    request.per_endpoint_limit = Some(1);
    let fair = store.claim_due(request.clone()).await?;
    let mut per_endpoint = std::collections::BTreeMap::new();
    for c in &fair {
        *per_endpoint
            .entry(c.delivery.endpoint.name.clone())
            .or_insert(0) += 1;
        assert_eq!(c.event.event_id, "evt_0", "oldest first within an endpoint");
    }
    assert!(per_endpoint.values().all(|n| *n == 1));
    assert_eq!(per_endpoint.len(), all.len() - 1 - expected.len());

    request.scope = ClaimScope::Endpoints(Vec::new());
    assert!(store.claim_due(request.clone()).await?.is_empty());
    request.scope = ClaimScope::Partitions {
        count: 0,
        owned: vec![0],
    };
    assert!(matches!(
        store.claim_due(request.clone()).await,
        Err(StoreError::InvalidArgument(_))
    ));
    request.scope = ClaimScope::All;
    request.limit = 0;
    assert!(store.claim_due(request).await?.is_empty());
    Ok(())
}
