//! Filtered deliveries: the endpoint's transform dropped the event, so no request was sent. Final
//! like Delivered, never a failure nor a dead letter; logged, and counted in `filtered_total` only.
use super::{at, claim_all, endpoint, event, filtered, names, result, Harness};
use crate::store::{
    AnalyticsQuery, AttemptOutcome, BucketWidth, DeliveryState, EndpointStats, NextStep,
    PageRequest, PurgeStats, QueueCounts, RecordOutcome, ReplayFilter, ReplayRequest, Result,
};

/// A Filtered attempt finishes its delivery (not claimable again, not a dead letter), is logged
/// with outcome `filtered`, bumps `filtered_total` and nothing else of the endpoint's stats
/// (windows, analytics, failures, last values); replays leave it out, a replay's progress counts
/// it as finished, and a purge removes it like any finished delivery.
pub async fn filtered_deliveries_finish_without_failing<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    // Endpoint a's history: a failed attempt, then a delivery.
    store
        .enqueue(event("evt_0", "user.created", 0), names(&["a"]))
        .await?;
    let first = store.claim_due(claim_all("w", 0)).await?;
    assert_eq!(first.len(), 1);
    let retry = NextStep::Retry { at: at(10) };
    store
        .record_attempt(result(
            first[0].delivery.id,
            "w",
            1,
            1,
            Some(500),
            120,
            retry,
        ))
        .await?;
    let second = store.claim_due(claim_all("w", 10)).await?;
    assert_eq!(second.len(), 1);
    store
        .record_attempt(result(
            second[0].delivery.id,
            "w",
            2,
            10,
            Some(200),
            80,
            NextStep::Delivered,
        ))
        .await?;
    let before = store.endpoint_stats(&endpoint("a"), at(100)).await?;
    assert_eq!(before.filtered_total, 0);

    // The transform drops evt_1.
    store
        .enqueue(event("evt_1", "user.created", 20), names(&["a"]))
        .await?;
    let claimed = store.claim_due(claim_all("w", 20)).await?;
    assert_eq!(claimed.len(), 1);
    let id = claimed[0].delivery.id;
    assert_eq!(
        store.record_attempt(filtered(id, "w", 1, 30)).await?,
        RecordOutcome::Applied
    );

    let status = store.event_status("evt_1").await?.expect("stored");
    let delivery = &status.deliveries[0];
    assert_eq!(delivery.state, DeliveryState::Filtered);
    assert!(delivery.state.is_finished());
    assert_eq!(delivery.finished_at, Some(at(30)));
    assert_eq!(delivery.delivered_at, None, "nothing was delivered");
    assert_eq!(delivery.dead_letter_reason, None, "no dead letter");
    assert_eq!(delivery.next_attempt_at, None, "never retried");
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.last_status_code, None);
    assert_eq!(delivery.last_error, None);

    // Final: not claimable again, not given back by a recovery.
    assert!(store.claim_due(claim_all("w2", 10_000)).await?.is_empty());
    assert_eq!(store.recover_in_flight(None, at(40)).await?, 0);
    assert!(
        store.claim_due(claim_all("w2", 10_000)).await?.is_empty(),
        "a filtered delivery is never due again"
    );
    assert_eq!(store.queue_counts().await?, QueueCounts::default());

    // Not a dead letter.
    assert!(store
        .dead_letters("ns", None, PageRequest::first(10))
        .await?
        .items
        .is_empty());
    assert!(store
        .dead_letters("ns", Some("a"), PageRequest::first(10))
        .await?
        .items
        .is_empty());

    // Logged, so the history shows why nothing was sent.
    let log = store
        .delivery_log(&endpoint("a"), PageRequest::first(10))
        .await?;
    assert_eq!(log.items.len(), 3);
    let entry = &log.items[0];
    assert_eq!(entry.delivery_id, id);
    assert_eq!(entry.event_id, "evt_1");
    assert_eq!(entry.outcome, AttemptOutcome::Filtered);
    assert!(!entry.success, "a filtered attempt is no success");
    assert_eq!(entry.record.at, at(30));
    assert_eq!(entry.record.attempt, 1);
    assert_eq!(entry.record.status_code, None);
    assert_eq!(entry.record.latency_ms, None);
    assert_eq!(entry.record.error, None);

    // Counted in filtered_total, and in nothing else.
    let after = store.endpoint_stats(&endpoint("a"), at(100)).await?;
    assert_eq!(after.filtered_total, 1);
    assert_eq!(after.delivered_total, 1);
    assert_eq!(after.failed_attempts_total, 1, "no failed attempt");
    assert_eq!(after.dead_lettered_total, 0);
    assert_eq!(after.retries_total, 1);
    assert_eq!(after.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(after.last_failure_at, Some(at(1)));
    assert_eq!(after.last_success_at, Some(at(10)));
    assert_eq!(after.last_attempt_at, Some(at(10)), "no request was sent");
    assert_eq!(after.last_status_code, Some(200));
    assert_eq!(after.dead_letter_count, 0);
    for window in [&after.last_hour, &after.last_day] {
        assert_eq!((window.attempts, window.successes), (2, 1));
        assert_eq!(window.success_rate, Some(0.5));
        assert_eq!(window.availability, Some(0.5));
        assert_eq!(window.avg_latency_ms, Some(100.0));
    }
    assert_eq!(
        EndpointStats {
            filtered_total: 0,
            ..after
        },
        before,
        "a filtered attempt moves nothing but filtered_total"
    );
    let buckets = store
        .analytics(AnalyticsQuery {
            endpoint: endpoint("a"),
            bucket: BucketWidth::Hour,
            from: at(0),
            to: at(3600),
        })
        .await?;
    assert_eq!(buckets.len(), 1);
    assert_eq!(
        (
            buckets[0].attempts,
            buckets[0].successes,
            buckets[0].failures
        ),
        (2, 1, 1),
        "analytics leave filtered attempts out"
    );

    // An endpoint whose first attempt is filtered has that total and nothing else.
    store
        .enqueue(event("evt_2", "user.created", 40), names(&["fresh"]))
        .await?;
    let fresh = store.claim_due(claim_all("w", 40)).await?;
    assert_eq!(fresh.len(), 1);
    store
        .record_attempt(filtered(fresh[0].delivery.id, "w", 1, 41))
        .await?;
    assert_eq!(
        store.endpoint_stats(&endpoint("fresh"), at(100)).await?,
        EndpointStats {
            filtered_total: 1,
            ..EndpointStats::default()
        }
    );

    // Replays select Delivered and DeadLettered only: the transform would drop evt_1 again.
    let filter = ReplayFilter {
        endpoint: endpoint("a"),
        from: at(0),
        to: at(100),
        event_types: Vec::new(),
        outcomes: Vec::new(),
    };
    let candidates = store.replay_candidates(filter.clone(), 100).await?;
    let events: Vec<&str> = candidates.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(events, ["evt_0"]);
    let replay = store
        .replay(ReplayRequest {
            replay_id: "r1".into(),
            filter,
            now: at(50),
        })
        .await?;
    assert_eq!((replay.matched, replay.requeued), (1, 1));
    // A replayed delivery the transform drops is finished in the replay's progress (recorded
    // through the batch path this time).
    let replayed = store.claim_due(claim_all("w", 50)).await?;
    assert_eq!(replayed.len(), 1);
    let outcomes = store
        .record_attempts(vec![filtered(replayed[0].delivery.id, "w", 1, 51)])
        .await?;
    assert!(matches!(outcomes[..], [Ok(RecordOutcome::Applied)]));
    let progress = store.replay_progress("r1").await?.expect("the replay ran");
    assert_eq!(
        (
            progress.outstanding,
            progress.delivered,
            progress.dead_lettered,
            progress.filtered
        ),
        (0, 0, 0, 1)
    );
    assert_eq!(
        store
            .endpoint_stats(&endpoint("a"), at(100))
            .await?
            .filtered_total,
        2
    );

    // Purged like any finished delivery; the total survives.
    assert_eq!(
        store.purge_finished(at(1000)).await?,
        PurgeStats {
            deliveries: 4,
            attempts: 5,
            events: 3
        }
    );
    assert!(store.event_status("evt_1").await?.is_none());
    assert_eq!(
        store
            .endpoint_stats(&endpoint("a"), at(100))
            .await?
            .filtered_total,
        2,
        "totals survive a purge"
    );
    Ok(())
}
