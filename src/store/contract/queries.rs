//! Read queries: pagination of the log and dead letters, analytics buckets, endpoint stats.
use std::collections::HashSet;

use super::{at, claim_all, endpoint, event, names, result, Harness};
use crate::store::{
    AnalyticsQuery, AttemptScope, BucketWidth, EndpointStats, NextStep, PageRequest, Result,
    StoreError,
};

/// 25 attempts paged by 10 (newest first, no overlap, ties broken); 7 dead letters paged by 3.
pub async fn pagination<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    for i in 0..25 {
        store
            .enqueue(
                event(&format!("evt_{i:02}"), "user.created", i),
                names(&["a"]),
            )
            .await?;
    }
    let claimed = store.claim_due(claim_all("w", 100)).await?;
    assert_eq!(claimed.len(), 25);
    for (i, c) in (0i64..).zip(&claimed) {
        let seconds = if i == 6 { 105 } else { 100 + i }; // 5 and 6 tie
        let next = if i < 7 {
            NextStep::DeadLetter {
                reason: format!("dead {i}"),
            }
        } else {
            NextStep::Retry { at: at(10_000) }
        };
        store
            .record_attempt(result(c.delivery.id, "w", 1, seconds, Some(500), 10, next))
            .await?;
    }

    let mut seen = HashSet::new();
    let mut sizes = Vec::new();
    let mut last_time = None;
    let mut cursor = None;
    loop {
        let page = store
            .delivery_log(&endpoint("a"), PageRequest::after(cursor.clone(), 10))
            .await?;
        sizes.push(page.items.len());
        for entry in &page.items {
            assert!(seen.insert(entry.delivery_id), "no attempt appears twice");
            assert!(
                last_time.is_none_or(|t| entry.record.at <= t),
                "newest first"
            );
            last_time = Some(entry.record.at);
        }
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(sizes, vec![10, 10, 5]);

    for filter in [None, Some("a")] {
        let mut letters = HashSet::new();
        let mut sizes = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .dead_letters("ns", filter, PageRequest::after(cursor.clone(), 3))
                .await?;
            sizes.push(page.items.len());
            for letter in &page.items {
                assert!(
                    letters.insert(letter.delivery.id),
                    "no dead letter appears twice"
                );
                assert_eq!(letter.attempts.len(), 1);
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(sizes, vec![3, 3, 1]);
    }
    assert!(store
        .dead_letters("ns", Some("zzz"), PageRequest::first(3))
        .await?
        .items
        .is_empty());
    assert!(store
        .dead_letters("other", None, PageRequest::first(3))
        .await?
        .items
        .is_empty());
    let garbage = PageRequest::after(Some("not a cursor".into()), 10);
    assert!(matches!(
        store.delivery_log(&endpoint("a"), garbage).await,
        Err(StoreError::InvalidArgument(_))
    ));
    Ok(())
}

/// Hour and day buckets (empty ones included) and an endpoint's totals, windows and last values.
pub async fn analytics_and_endpoint_stats<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    for i in 0..5 {
        store
            .enqueue(event(&format!("evt_{i}"), "user.created", 0), names(&["a"]))
            .await?;
    }
    let claimed = store.claim_due(claim_all("w", 0)).await?;
    let plan: [(i64, u16, u64, NextStep); 5] = [
        (10, 200, 100, NextStep::Delivered),
        (20, 200, 200, NextStep::Delivered),
        (
            30,
            400,
            300,
            NextStep::DeadLetter {
                reason: "permanent".into(),
            },
        ),
        (40, 503, 400, NextStep::Retry { at: at(100_000) }),
        (7260, 200, 50, NextStep::Delivered),
    ];
    for (c, (seconds, status, latency, next)) in claimed.iter().zip(plan) {
        store
            .record_attempt(result(
                c.delivery.id,
                "w",
                1,
                seconds,
                Some(status),
                latency,
                next,
            ))
            .await?;
    }

    let query = |bucket, from, to| AnalyticsQuery {
        endpoint: endpoint("a"),
        bucket,
        from: at(from),
        to: at(to),
    };
    let hours = store.analytics(query(BucketWidth::Hour, 0, 10_800)).await?;
    assert_eq!(
        hours.iter().map(|b| b.start).collect::<Vec<_>>(),
        vec![at(0), at(3600), at(7200)]
    );
    assert_eq!(
        (hours[0].attempts, hours[0].successes, hours[0].failures),
        (4, 2, 2)
    );
    assert_eq!(hours[0].success_rate, Some(0.5));
    assert_eq!(hours[0].avg_latency_ms, Some(250.0));
    assert_eq!(
        (
            hours[1].attempts,
            hours[1].success_rate,
            hours[1].avg_latency_ms
        ),
        (0, None, None)
    );
    assert_eq!(
        (
            hours[2].attempts,
            hours[2].success_rate,
            hours[2].avg_latency_ms
        ),
        (1, Some(1.0), Some(50.0))
    );

    let days = store.analytics(query(BucketWidth::Day, 0, 86_400)).await?;
    assert_eq!(days.len(), 1);
    assert_eq!((days[0].attempts, days[0].successes), (5, 3));
    assert_eq!(days[0].avg_latency_ms, Some(210.0));

    let mid_hour = store
        .analytics(query(BucketWidth::Hour, 1800, 10_800))
        .await?;
    assert_eq!(mid_hour.len(), 3, "buckets are aligned to the hour");
    assert_eq!(mid_hour[0].start, at(0));
    assert_eq!(
        mid_hour[0].attempts, 0,
        "attempts before `from` are not counted"
    );
    assert_eq!(mid_hour[2].attempts, 1);
    assert!(store
        .analytics(query(BucketWidth::Hour, 100, 100))
        .await?
        .is_empty());

    let stats = store.endpoint_stats(&endpoint("a"), at(7800)).await?;
    assert_eq!(stats.delivered_total, 3);
    assert_eq!(stats.failed_attempts_total, 2);
    assert_eq!(stats.dead_lettered_total, 1);
    assert_eq!(stats.retries_total, 1);
    assert_eq!(
        (stats.last_hour.attempts, stats.last_hour.success_rate),
        (1, Some(1.0))
    );
    assert_eq!(stats.last_hour.p95_latency_ms, Some(50));
    assert_eq!(
        (
            stats.last_day.attempts,
            stats.last_day.successes,
            stats.last_day.failures
        ),
        (5, 3, 2)
    );
    assert_eq!(stats.last_day.success_rate, Some(0.6));
    assert_eq!(stats.last_day.error_rate, Some(0.4));
    assert_eq!(
        (stats.last_day.available, stats.last_day.availability),
        (4, Some(0.8)),
        "the 400 is a failure from a receiver that is up; the 503 is not"
    );
    assert_eq!(stats.last_hour.availability, Some(1.0));
    assert_eq!(stats.last_day.avg_latency_ms, Some(210.0));
    assert_eq!(
        stats.last_day.p95_latency_ms,
        Some(400),
        "nearest rank: the 5th of 5"
    );
    assert_eq!(stats.last_attempt_at, Some(at(7260)));
    assert_eq!(stats.last_success_at, Some(at(7260)));
    assert_eq!(stats.last_failure_at, Some(at(40)));
    assert_eq!(stats.last_status_code, Some(200));
    assert_eq!(stats.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(
        (
            stats.dead_letter_count,
            stats.pending_count,
            stats.in_flight_count
        ),
        (1, 1, 0)
    );

    let empty = store.endpoint_stats(&endpoint("nobody"), at(7800)).await?;
    assert_eq!(empty, EndpointStats::default());
    Ok(())
}

/// The attempt log by scope (an endpoint, a namespace, every namespace), newest first and paged;
/// `seq` increases in the order attempts are recorded, and `attempts_after` follows it.
pub async fn attempt_scopes<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    assert_eq!(store.last_attempt_seq().await?, 0, "no attempts yet");
    for i in 0..6 {
        let target = if i % 2 == 0 { "a" } else { "b" };
        store
            .enqueue(
                event(&format!("evt_{i}"), "user.created", i),
                names(&[target]),
            )
            .await?;
    }
    let mut elsewhere = event("evt_other", "user.created", 50);
    elsewhere.namespace = "other".to_owned();
    // The trace context an event is published in comes back with its claimed deliveries.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    elsewhere.trace_parent = Some(traceparent.to_owned());
    store.enqueue(elsewhere, names(&["a"])).await?;
    let mut claimed = store.claim_due(claim_all("w", 100)).await?;
    claimed.sort_by_key(|c| c.delivery.event_id.clone());
    assert_eq!(claimed.len(), 7);
    for c in &claimed {
        let expected = (c.event.event_id == "evt_other").then_some(traceparent);
        assert_eq!(c.event.trace_parent.as_deref(), expected);
    }
    let mut recorded = Vec::new();
    for (i, c) in (0i64..).zip(&claimed) {
        store
            .record_attempt(result(
                c.delivery.id,
                "w",
                1,
                200 + i,
                Some(200),
                5,
                NextStep::Delivered,
            ))
            .await?;
        recorded.push(c.delivery.id);
    }

    let read = |scope: AttemptScope| {
        let store = store.clone();
        async move {
            let mut all = Vec::new();
            let mut cursor = None;
            loop {
                let page = store
                    .attempt_log(scope.clone(), PageRequest::after(cursor, 2))
                    .await?;
                assert!(page.items.len() <= 2);
                all.extend(page.items);
                cursor = page.next_cursor;
                if cursor.is_none() {
                    return Ok::<_, StoreError>(all);
                }
            }
        }
    };
    let namespace = read(AttemptScope::Namespace("ns".into())).await?;
    assert_eq!(namespace.len(), 6, "the namespace's six, not the other's");
    assert!(namespace.iter().all(|e| e.endpoint.namespace == "ns"));
    assert!(
        namespace
            .windows(2)
            .all(|w| w[0].record.at >= w[1].record.at),
        "newest first"
    );
    let everything = read(AttemptScope::All).await?;
    assert_eq!(everything.len(), 7);
    let only_a = read(AttemptScope::Endpoint(endpoint("a"))).await?;
    assert_eq!(only_a.len(), 3);
    assert!(only_a.iter().all(|e| e.endpoint.name == "a"));

    // seq: unique, in recording order; attempts_after resumes after any of them.
    let mut by_recording: Vec<_> = everything.clone();
    by_recording.sort_by_key(|e| recorded.iter().position(|id| *id == e.delivery_id));
    let seqs: Vec<i64> = by_recording.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(store.last_attempt_seq().await?, *seqs.last().unwrap_or(&0));
    let after = store
        .attempts_after(AttemptScope::Namespace("ns".into()), seqs[2], 100)
        .await?;
    let expected: Vec<i64> = by_recording[3..]
        .iter()
        .filter(|e| e.endpoint.namespace == "ns")
        .map(|e| e.seq)
        .collect();
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), expected);
    let limited = store.attempts_after(AttemptScope::All, 0, 2).await?;
    assert_eq!(limited.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs[..2]);
    assert!(store
        .attempts_after(AttemptScope::All, *seqs.last().unwrap_or(&0), 10)
        .await?
        .is_empty());

    // One delivery with its event and attempts, by id.
    let history = store
        .delivery_history(recorded[1])
        .await?
        .ok_or_else(|| StoreError::InvalidArgument("recorded delivery not found".into()))?;
    assert_eq!(history.delivery.id, recorded[1]);
    assert_eq!(history.event.event_id, history.delivery.event_id);
    assert_eq!(history.attempts.len(), 1);
    assert_eq!(history.attempts[0].delivery_id, recorded[1]);
    assert!(store
        .delivery_history(crate::store::DeliveryId(i64::MAX))
        .await?
        .is_none());
    Ok(())
}
