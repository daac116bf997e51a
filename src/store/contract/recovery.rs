//! Crash recovery, lease expiry and fencing; retention.
use super::{at, claim_all, claim_and_finish, endpoint, event, names, result, Harness};
use crate::store::{
    DeliveryState, FinalOutcome, NextStep, PageRequest, PurgeStats, RecordOutcome, ReplayFilter,
    ReplayRequest, Result,
};

/// A store dropped with deliveries in flight comes back with them; expired leases are due again
/// for anyone; a claimer whose lease was taken over cannot move the delivery.
pub async fn crash_recovery_and_leases<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    for i in 0..3 {
        store
            .enqueue(event(&format!("evt_{i}"), "user.created", i), names(&["a"]))
            .await?;
    }
    let mut two = claim_all("w1", 5);
    two.limit = 2;
    let first = store.claim_due(two).await?;
    assert_eq!(first.len(), 2);
    drop(store);

    let store = harness.open().await?;
    let rest = store.claim_due(claim_all("w2", 6)).await?;
    assert_eq!(
        rest.len(),
        1,
        "in-flight leases survive a restart; the unclaimed delivery is due"
    );
    assert_eq!(store.queue_counts().await?.in_flight, 3);
    assert_eq!(
        store.recover_in_flight(Some("w1".into()), at(7)).await?,
        2,
        "the crashed owner's work"
    );
    let recovered = store.claim_due(claim_all("w3", 7)).await?;
    assert_eq!(recovered.len(), 2, "recovered deliveries are due at once");

    let stale = result(
        recovered[0].delivery.id,
        "w1",
        1,
        8,
        Some(200),
        5,
        NextStep::Delivered,
    );
    assert_eq!(
        store.record_attempt(stale).await?,
        RecordOutcome::LeaseLost,
        "fenced: w1 lost the lease"
    );
    let status = store
        .event_status(&recovered[0].event.event_id)
        .await?
        .expect("event");
    assert_eq!(
        status.deliveries[0].state,
        DeliveryState::InFlight,
        "a fenced result does not move the delivery"
    );
    let log = store
        .delivery_log(&endpoint("a"), PageRequest::first(10))
        .await?;
    assert_eq!(log.items.len(), 1, "the fenced attempt is still logged");

    // w2's lease expires at 66, w3's at 67: a claim at 67 takes all three over.
    let taken_over = store.claim_due(claim_all("w4", 67)).await?;
    assert_eq!(
        taken_over.len(),
        3,
        "expired leases are due for any claimer"
    );
    let id = taken_over[0].delivery.id;
    let late = result(id, "w3", 1, 68, Some(200), 5, NextStep::Delivered);
    assert_eq!(store.record_attempt(late).await?, RecordOutcome::LeaseLost);
    let owner = result(id, "w4", 1, 68, Some(200), 5, NextStep::Delivered);
    assert_eq!(store.record_attempt(owner).await?, RecordOutcome::Applied);

    let others: Vec<_> = taken_over[1..].iter().map(|c| c.delivery.id).collect();
    assert_eq!(
        store
            .extend_leases("w4".into(), others.clone(), at(1000))
            .await?,
        2
    );
    assert_eq!(
        store.extend_leases("w1".into(), others, at(2000)).await?,
        0,
        "only the owner extends"
    );
    assert!(
        store.claim_due(claim_all("w5", 500)).await?.is_empty(),
        "extended leases hold"
    );
    assert_eq!(store.recover_in_flight(None, at(501)).await?, 2);
    assert_eq!(store.queue_counts().await?.pending, 2);
    Ok(())
}

/// Finished rows go, unfinished stay, totals and replay ids survive.
pub async fn purge_keeps_totals_and_replays<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    store
        .enqueue(event("evt_1", "user.created", 0), names(&["a"]))
        .await?;
    claim_and_finish(store.as_ref(), "w", 0, 200, NextStep::Delivered).await?;
    store
        .enqueue(event("evt_2", "user.created", 1), names(&["a"]))
        .await?;
    claim_and_finish(
        store.as_ref(),
        "w",
        1,
        500,
        NextStep::DeadLetter {
            reason: "no".into(),
        },
    )
    .await?;
    store
        .enqueue(event("evt_4", "user.created", 3), Vec::new())
        .await?;
    let replay = ReplayRequest {
        replay_id: "r".into(),
        filter: ReplayFilter {
            endpoint: endpoint("a"),
            from: at(0),
            to: at(1),
            event_types: Vec::new(),
            outcomes: vec![FinalOutcome::Delivered],
        },
        now: at(4),
    };
    assert_eq!(store.replay(replay.clone()).await?.requeued, 1);
    claim_and_finish(store.as_ref(), "w", 5, 200, NextStep::Delivered).await?;
    store
        .enqueue(event("evt_3", "user.created", 6), names(&["a"]))
        .await?;
    let before = store.endpoint_stats(&endpoint("a"), at(10)).await?;

    let purged = store.purge_finished(at(100)).await?;
    assert_eq!(
        purged,
        PurgeStats {
            deliveries: 3,
            attempts: 3,
            events: 3
        }
    );
    assert!(store.event_status("evt_1").await?.is_none());
    assert!(
        store.event_status("evt_4").await?.is_none(),
        "an event without deliveries goes too"
    );
    assert!(
        store.event_status("evt_3").await?.is_some(),
        "unfinished work is kept"
    );
    assert_eq!(store.pending_count().await?, 1);
    let after = store.endpoint_stats(&endpoint("a"), at(10)).await?;
    assert_eq!(before.delivered_total, 2);
    assert_eq!(after.delivered_total, 2, "totals survive a purge");
    assert_eq!(after.dead_lettered_total, 1);
    assert_eq!(after.dead_letter_count, 0, "the dead letter itself is gone");
    assert!(
        !store.replay(replay).await?.first_run,
        "a purged replay still runs once"
    );
    assert_eq!(store.purge_finished(at(100)).await?, PurgeStats::default());
    Ok(())
}

/// A record retried after its commit (a connection cut before the answer) changes nothing: the
/// delivery's attempt count says the attempt is in, so it is neither logged nor counted twice, and
/// a stale retry cannot move a delivery that is in flight again for its next attempt.
pub async fn records_retried_after_their_commit<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    store
        .enqueue(event("evt_1", "user.created", 0), names(&["a"]))
        .await?;
    let id = store.claim_due(claim_all("w1", 0)).await?[0].delivery.id;
    let first = result(id, "w1", 1, 1, Some(503), 5, NextStep::Retry { at: at(10) });
    assert_eq!(
        store.record_attempt(first.clone()).await?,
        RecordOutcome::Applied
    );
    assert_eq!(
        store.record_attempt(first.clone()).await?,
        RecordOutcome::AlreadyRecorded
    );
    // In flight again (attempt 2) under the same owner: attempt 1's retried record is refused.
    assert_eq!(store.claim_due(claim_all("w1", 10)).await?.len(), 1);
    assert_eq!(
        store.record_attempt(first).await?,
        RecordOutcome::AlreadyRecorded
    );
    let second = result(id, "w1", 2, 11, Some(200), 5, NextStep::Delivered);
    assert_eq!(
        store.record_attempt(second.clone()).await?,
        RecordOutcome::Applied
    );
    assert_eq!(
        store.record_attempt(second).await?,
        RecordOutcome::AlreadyRecorded
    );
    let log = store
        .delivery_log(&endpoint("a"), PageRequest::first(10))
        .await?;
    assert_eq!(log.items.len(), 2, "each attempt logged once");
    let status = store.event_status("evt_1").await?.expect("event");
    assert_eq!(status.deliveries[0].state, DeliveryState::Delivered);
    assert_eq!(status.deliveries[0].attempts, 2);
    Ok(())
}
