//! Read queries: pagination of the log and dead letters, analytics buckets, endpoint stats.
use std::collections::HashSet;

use super::{at, claim_all, endpoint, event, names, result, Harness};
use crate::store::{
    AnalyticsQuery, BucketWidth, EndpointStats, NextStep, PageRequest, Result, StoreError,
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
