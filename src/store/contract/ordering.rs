//! Ordered delivery: lanes, their heads through retries, crashes, suspension and replays, and
//! endpoints paused after a dead letter.
use std::collections::BTreeMap;

use super::{at, claim_all, endpoint, event, filtered, names, result, Harness};
use crate::store::{
    ClaimedDelivery, DeliveryState, EnqueueRequest, NewEvent, NextStep, RecordOutcome,
    ReplayFilter, ReplayRequest, Result, ResumeAction, ResumeOutcome, Store,
};

/// An event to `endpoints`, the ordered ones in the lanes given.
fn to_lanes(event: NewEvent, endpoints: &[&str], lanes: &[(&str, &str)]) -> EnqueueRequest {
    EnqueueRequest {
        event,
        endpoints: names(endpoints),
        lanes: lanes
            .iter()
            .map(|(e, l)| ((*e).to_owned(), (*l).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        claim: None,
    }
}

async fn publish(store: &dyn Store, id: &str, seconds: i64, lanes: &[(&str, &str)]) -> Result<()> {
    let endpoints: Vec<&str> = lanes.iter().map(|(e, _)| *e).collect();
    store
        .enqueue_batch(vec![to_lanes(
            event(id, "user.updated", seconds),
            &endpoints,
            lanes,
        )])
        .await?;
    Ok(())
}

fn ids(claimed: &[ClaimedDelivery]) -> Vec<&str> {
    let mut ids: Vec<&str> = claimed.iter().map(|c| c.event.event_id.as_str()).collect();
    ids.sort_unstable();
    ids
}

async fn finish(
    store: &dyn Store,
    c: &ClaimedDelivery,
    seconds: i64,
    next: NextStep,
) -> Result<()> {
    let attempt = c.delivery.attempts + 1;
    store
        .record_attempt(result(
            c.delivery.id,
            "w",
            attempt,
            seconds,
            Some(200),
            5,
            next,
        ))
        .await?;
    Ok(())
}

fn dead(reason: &str) -> NextStep {
    NextStep::DeadLetter {
        reason: reason.into(),
    }
}

/// One lane: one delivery at a time in publish order, through a retry and a dead letter; lanes
/// of one endpoint go in parallel; unordered endpoints of the same event are not held back.
pub async fn ordered_lanes<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    for (i, id) in ["evt_1", "evt_2", "evt_3"].into_iter().enumerate() {
        store
            .enqueue_batch(vec![to_lanes(
                event(id, "user.updated", i as i64),
                &["s", "u"],
                &[("s", "*")],
            )])
            .await?;
    }
    let status = store.event_status("evt_2").await?.expect("stored");
    let state_of = |name: &str| {
        status
            .deliveries
            .iter()
            .find(|d| d.endpoint.name == name)
            .map(|d| (d.state, d.lane.clone()))
    };
    assert_eq!(
        state_of("s"),
        Some((DeliveryState::Queued, Some("*".into())))
    );
    assert_eq!(state_of("u"), Some((DeliveryState::Pending, None)));
    assert_eq!(store.queue_counts().await?.queued, 2);

    let claimed = store.claim_due(claim_all("w", 10)).await?;
    let ordered: Vec<_> = claimed
        .iter()
        .filter(|c| c.delivery.endpoint.name == "s")
        .collect();
    assert_eq!(
        claimed.len(),
        4,
        "three unordered deliveries and the lane's head"
    );
    assert_eq!(ordered.len(), 1);
    assert_eq!(
        ordered[0].event.event_id, "evt_1",
        "the head is the first published"
    );

    // A retry keeps the head: nothing behind it goes meanwhile.
    finish(
        store.as_ref(),
        ordered[0],
        11,
        NextStep::Retry { at: at(20) },
    )
    .await?;
    assert!(
        store.claim_due(claim_all("w", 15)).await?.is_empty(),
        "the lane waits for its head's retry"
    );
    let retried = store.claim_due(claim_all("w", 20)).await?;
    assert_eq!(ids(&retried), ["evt_1"]);
    finish(store.as_ref(), &retried[0], 21, NextStep::Delivered).await?;

    // Its successor is due once it is delivered: at the time of the result.
    let second = store.claim_due(claim_all("w", 21)).await?;
    assert_eq!(ids(&second), ["evt_2"]);
    // A dead letter (onDeadLetter: Continue) lets the lane go on.
    finish(store.as_ref(), &second[0], 22, dead("HTTP 400")).await?;
    let third = store.claim_due(claim_all("w", 22)).await?;
    assert_eq!(ids(&third), ["evt_3"]);
    finish(store.as_ref(), &third[0], 23, NextStep::Delivered).await?;
    assert_eq!(
        store.queue_counts().await?.total(),
        3,
        "only the unordered ones are left in flight"
    );

    // ByKey: one head per lane, lanes in parallel.
    publish(store.as_ref(), "evt_a1", 30, &[("k", "\"a\"")]).await?;
    publish(store.as_ref(), "evt_b1", 31, &[("k", "\"b\"")]).await?;
    publish(store.as_ref(), "evt_a2", 32, &[("k", "\"a\"")]).await?;
    publish(store.as_ref(), "evt_b2", 33, &[("k", "\"b\"")]).await?;
    let heads = store.claim_due(claim_all("w", 40)).await?;
    let heads: Vec<_> = heads
        .iter()
        .filter(|c| c.delivery.endpoint.name == "k")
        .cloned()
        .collect();
    assert_eq!(ids(&heads), ["evt_a1", "evt_b1"]);
    let a1 = heads
        .iter()
        .find(|c| c.event.event_id == "evt_a1")
        .expect("a1");
    finish(store.as_ref(), a1, 41, NextStep::Delivered).await?;
    let next = store.claim_due(claim_all("w", 41)).await?;
    assert_eq!(
        ids(&next),
        ["evt_a2"],
        "lane a goes on while b's head is still in flight"
    );
    Ok(())
}

/// A lane survives a crash (recovery and lease expiry give back its head, never the next one),
/// suspension (the next head is Held), and a replay (queued in the original order).
pub async fn ordered_lanes_survive_crashes_suspension_and_replays<H: Harness>(
    harness: &H,
) -> Result<()> {
    let store = harness.open().await?;
    for (i, id) in ["evt_1", "evt_2", "evt_3"].into_iter().enumerate() {
        publish(store.as_ref(), id, i as i64, &[("s", "*")]).await?;
    }
    let first = store.claim_due(claim_all("w", 10)).await?;
    assert_eq!(ids(&first), ["evt_1"]);
    // The process dies; the next one opens the store and recovers what was in flight.
    drop(store);
    let store = harness.open().await?;
    store.recover_in_flight(None, at(12)).await?;
    let again = store.claim_due(claim_all("w2", 12)).await?;
    assert_eq!(
        ids(&again),
        ["evt_1"],
        "the head is sent again, not the next one"
    );
    // Its lease expires (another replica takes over the endpoint): again the head.
    let taken_over = store.claim_due(claim_all("w3", 12 + 61)).await?;
    assert_eq!(ids(&taken_over), ["evt_1"]);
    store
        .record_attempt(result(
            taken_over[0].delivery.id,
            "w3",
            2,
            74,
            Some(200),
            5,
            NextStep::Delivered,
        ))
        .await?;

    // Suspended while evt_2 is in flight: evt_3 becomes its head as Held.
    let second = store.claim_due(claim_all("w3", 74)).await?;
    assert_eq!(ids(&second), ["evt_2"]);
    store.hold_endpoint(endpoint("s"), at(75)).await?;
    store
        .record_attempt(result(
            second[0].delivery.id,
            "w3",
            1,
            76,
            Some(200),
            5,
            NextStep::Delivered,
        ))
        .await?;
    let held = store
        .event_status("evt_3")
        .await?
        .expect("stored")
        .deliveries[0]
        .state;
    assert_eq!(held, DeliveryState::Held);
    assert!(store.claim_due(claim_all("w3", 77)).await?.is_empty());
    store.release_endpoint(endpoint("s"), at(78)).await?;
    let third = store.claim_due(claim_all("w3", 78)).await?;
    assert_eq!(ids(&third), ["evt_3"]);
    store
        .record_attempt(result(
            third[0].delivery.id,
            "w3",
            1,
            79,
            Some(200),
            5,
            NextStep::Delivered,
        ))
        .await?;

    // A replay of all three queues them in their lane in the original order.
    let replay = store
        .replay(ReplayRequest {
            replay_id: "r1".into(),
            filter: ReplayFilter {
                endpoint: endpoint("s"),
                from: at(0),
                to: at(100),
                event_types: Vec::new(),
                outcomes: Vec::new(),
            },
            now: at(80),
        })
        .await?;
    assert_eq!(replay.requeued, 3);
    let mut order = Vec::new();
    for second in 80..90 {
        let claimed = store.claim_due(claim_all("w", second)).await?;
        assert!(claimed.len() <= 1, "one replayed delivery at a time");
        for c in &claimed {
            order.push(c.event.event_id.clone());
            finish(store.as_ref(), c, second, NextStep::Delivered).await?;
        }
    }
    assert_eq!(order, ["evt_1", "evt_2", "evt_3"]);
    Ok(())
}

/// `onDeadLetter: Pause`: a dead letter stops the endpoint, later events queue, and a resume
/// naming the event skips or retries it. A resume naming another event changes nothing.
pub async fn paused_endpoints_resume<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    for (i, id) in ["evt_1", "evt_2", "evt_3"].into_iter().enumerate() {
        publish(store.as_ref(), id, i as i64, &[("p", "*")]).await?;
    }
    let first = store.claim_due(claim_all("w", 10)).await?;
    let mut pausing = result(
        first[0].delivery.id,
        "w",
        1,
        11,
        Some(400),
        5,
        dead("HTTP 400"),
    );
    pausing.pause_on_dead_letter = true;
    store.record_attempt(pausing).await?;
    let stats = store.endpoint_stats(&endpoint("p"), at(12)).await?;
    let pause = stats.paused.expect("paused");
    assert_eq!(pause.event_id, "evt_1");
    assert_eq!(pause.reason, "HTTP 400");
    assert_eq!(pause.since, at(11));
    assert_eq!(stats.queued_count, 2);
    publish(store.as_ref(), "evt_4", 12, &[("p", "*")]).await?;
    assert!(
        store.claim_due(claim_all("w", 20)).await?.is_empty(),
        "nothing goes while paused"
    );

    assert_eq!(
        store
            .resume_endpoint(endpoint("p"), "evt_9".into(), ResumeAction::Skip, at(21))
            .await?,
        ResumeOutcome::OtherEvent("evt_1".into())
    );
    assert!(store.claim_due(claim_all("w", 21)).await?.is_empty());
    assert_eq!(
        store
            .resume_endpoint(endpoint("p"), "evt_1".into(), ResumeAction::Skip, at(22))
            .await?,
        ResumeOutcome::Resumed
    );
    assert_eq!(
        store
            .resume_endpoint(endpoint("p"), "evt_1".into(), ResumeAction::Skip, at(22))
            .await?,
        ResumeOutcome::NotPaused,
        "a resume is idempotent"
    );
    let skipped = store
        .event_status("evt_1")
        .await?
        .expect("stored")
        .deliveries[0]
        .state;
    assert_eq!(
        skipped,
        DeliveryState::DeadLettered,
        "a skipped dead letter stays one"
    );
    let second = store.claim_due(claim_all("w", 22)).await?;
    assert_eq!(ids(&second), ["evt_2"]);

    // Paused again by evt_2; a retry resume sends it again, first, with a fresh schedule.
    let mut pausing = result(
        second[0].delivery.id,
        "w",
        1,
        23,
        Some(400),
        5,
        dead("HTTP 400"),
    );
    pausing.pause_on_dead_letter = true;
    store.record_attempt(pausing).await?;
    assert!(store.claim_due(claim_all("w", 24)).await?.is_empty());
    store
        .resume_endpoint(endpoint("p"), "evt_2".into(), ResumeAction::Retry, at(25))
        .await?;
    let retried = store.claim_due(claim_all("w", 25)).await?;
    assert_eq!(ids(&retried), ["evt_2"]);
    assert_eq!(retried[0].delivery.attempts, 0, "a fresh retry schedule");
    assert!(retried[0].delivery.dead_letter_reason.is_none());
    finish(store.as_ref(), &retried[0], 26, NextStep::Delivered).await?;
    let third = store.claim_due(claim_all("w", 26)).await?;
    assert_eq!(ids(&third), ["evt_3"]);
    assert!(store
        .endpoint_stats(&endpoint("p"), at(26))
        .await?
        .paused
        .is_none());
    Ok(())
}

/// A Filtered head (the transform dropped its event) finishes it like Delivered: the next Queued
/// delivery of its lane is promoted in the same step, due at the time of the result, by a single
/// record and by a batch finishing the heads of several lanes; `pause_on_dead_letter` has no
/// effect on it.
pub async fn filtered_heads_advance_their_lanes<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    for (i, id) in ["evt_1", "evt_2", "evt_3"].into_iter().enumerate() {
        publish(store.as_ref(), id, i as i64, &[("s", "*")]).await?;
    }
    let head = store.claim_due(claim_all("w", 10)).await?;
    assert_eq!(ids(&head), ["evt_1"]);
    let mut dropped = filtered(head[0].delivery.id, "w", 1, 11);
    dropped.pause_on_dead_letter = true;
    assert_eq!(store.record_attempt(dropped).await?, RecordOutcome::Applied);
    let stats = store.endpoint_stats(&endpoint("s"), at(11)).await?;
    assert!(stats.paused.is_none(), "a filtered head never pauses");
    assert_eq!(stats.queued_count, 1);
    assert_eq!(stats.filtered_total, 1);
    let first = store.event_status("evt_1").await?.expect("stored");
    assert_eq!(first.deliveries[0].state, DeliveryState::Filtered);

    // evt_2 was promoted, due at the time of the result.
    assert!(store.claim_due(claim_all("w", 10)).await?.is_empty());
    let second = store.claim_due(claim_all("w", 11)).await?;
    assert_eq!(ids(&second), ["evt_2"]);
    // Filtered again, in a batch: evt_3 goes next.
    let outcomes = store
        .record_attempts(vec![filtered(second[0].delivery.id, "w", 1, 12)])
        .await?;
    assert!(matches!(outcomes[..], [Ok(RecordOutcome::Applied)]));
    let third = store.claim_due(claim_all("w", 12)).await?;
    assert_eq!(ids(&third), ["evt_3"]);
    finish(store.as_ref(), &third[0], 13, NextStep::Delivered).await?;
    assert_eq!(store.queue_counts().await?.total(), 0);

    // ByKey: one batch filters the heads of two lanes; both lanes go on.
    publish(store.as_ref(), "evt_a1", 20, &[("k", "\"a\"")]).await?;
    publish(store.as_ref(), "evt_b1", 21, &[("k", "\"b\"")]).await?;
    publish(store.as_ref(), "evt_a2", 22, &[("k", "\"a\"")]).await?;
    publish(store.as_ref(), "evt_b2", 23, &[("k", "\"b\"")]).await?;
    let heads = store.claim_due(claim_all("w", 30)).await?;
    assert_eq!(ids(&heads), ["evt_a1", "evt_b1"]);
    let outcomes = store
        .record_attempts(
            heads
                .iter()
                .map(|c| filtered(c.delivery.id, "w", 1, 31))
                .collect(),
        )
        .await?;
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, Ok(RecordOutcome::Applied))));
    let next = store.claim_due(claim_all("w", 31)).await?;
    assert_eq!(ids(&next), ["evt_a2", "evt_b2"]);
    for c in &next {
        finish(store.as_ref(), c, 32, NextStep::Delivered).await?;
    }
    let stats = store.endpoint_stats(&endpoint("k"), at(40)).await?;
    assert_eq!((stats.filtered_total, stats.delivered_total), (2, 2));
    assert_eq!(store.queue_counts().await?.total(), 0);
    Ok(())
}
