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

/// The windows read whole minutes from their rollups and the partial minutes at their edges
/// from the attempts: their figures are those of the attempts in the window, for attempts
/// recorded out of time order, in batches, two endpoints sharing minutes, and a retry.
pub async fn windows_from_minute_rollups<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    let count = 150i64;
    for i in 0..count {
        store
            .enqueue(
                event(&format!("evt_{i:03}"), "user.created", 0),
                names(&["a", "b"]),
            )
            .await?;
    }
    let claimed = store.claim_due(claim_all("w", 0)).await?;
    // Attempt i of endpoint "a" at 91·i s plus a bit, wrapped at half the span (spread over two
    // hours, two per 91 s, so several per
    // minute), its status and latency from i; "b" answers every attempt at once.
    let plan = |i: i64| -> (i64, u16, u64) {
        let seconds = (i * 91) % (count * 91 / 2) + i % 3;
        let status = match i % 7 {
            0 => 503,
            1 => 404,
            _ => 200,
        };
        (seconds, status, ((i * 37) % 400) as u64)
    };
    let mut results = Vec::new();
    let mut expected = Vec::new();
    for (n, c) in (0i64..).zip(&claimed) {
        let i = n / 2;
        if c.delivery.endpoint.name == "b" {
            results.push(result(
                c.delivery.id,
                "w",
                1,
                plan(i).0,
                Some(200),
                1,
                NextStep::Delivered,
            ));
            continue;
        }
        let (seconds, status, latency) = plan(i);
        let next = if status == 200 {
            NextStep::Delivered
        } else {
            NextStep::Retry { at: at(30_000) }
        };
        results.push(result(
            c.delivery.id,
            "w",
            1,
            seconds,
            Some(status),
            latency,
            next,
        ));
        expected.push((seconds, status, latency));
    }
    // Out of time order, in batches of 16: a later minute's attempts land before earlier ones.
    results.reverse();
    for batch in results.chunks(16) {
        for outcome in store.record_attempts(batch.to_vec()).await? {
            outcome?;
        }
    }
    // A retry of the first 503, recorded after everything else, in an early minute.
    let first_retry = claimed
        .iter()
        .find(|c| c.delivery.endpoint.name == "a")
        .map(|c| c.delivery.id)
        .ok_or_else(|| StoreError::Commit("no delivery of a".into()))?;
    let retried = store.claim_due(claim_all("w", 30_000)).await?;
    assert!(retried.iter().any(|c| c.delivery.id == first_retry));
    for c in &retried {
        store
            .record_attempt(result(
                c.delivery.id,
                "w",
                2,
                5,
                Some(200),
                7,
                NextStep::Delivered,
            ))
            .await?;
        expected.push((5, 200, 7));
    }

    // The hour starts at 5,380 s, 9 s after two attempts (5,371 s) of the same minute.
    let now_seconds = 5_380 + 3600;
    let reference = |since_seconds: i64| {
        let mut latencies: Vec<u64> = Vec::new();
        let (mut attempts, mut successes, mut available) = (0u64, 0u64, 0u64);
        let since_ms = at(since_seconds).as_millisecond();
        let now_ms = at(now_seconds).as_millisecond();
        for (seconds, status, latency) in &expected {
            let ms = at(*seconds).as_millisecond();
            if ms > since_ms && ms <= now_ms {
                attempts += 1;
                successes += u64::from(*status == 200);
                available += u64::from(*status < 500);
                latencies.push(*latency);
            }
        }
        latencies.sort_unstable();
        let rank = (latencies.len() * 95).div_ceil(100);
        let p95 = rank.checked_sub(1).map(|i| latencies[i]);
        let avg = (!latencies.is_empty())
            .then(|| latencies.iter().sum::<u64>() as f64 / latencies.len() as f64);
        (attempts, successes, available, avg, p95)
    };
    let stats = store
        .endpoint_stats(&endpoint("a"), at(now_seconds))
        .await?;
    for (window, since) in [
        (&stats.last_hour, now_seconds - 3600),
        (&stats.last_day, now_seconds - 86_400),
    ] {
        let figures = (
            window.attempts,
            window.successes,
            window.available,
            window.avg_latency_ms,
            window.p95_latency_ms,
        );
        assert_eq!(figures, reference(since), "the window since {since} s");
    }
    assert!(
        stats.last_hour.attempts > 0 && stats.last_hour.attempts < stats.last_day.attempts,
        "the hour is part of the day: {} of {}",
        stats.last_hour.attempts,
        stats.last_day.attempts
    );
    let other = store
        .endpoint_stats(&endpoint("b"), at(now_seconds))
        .await?;
    assert_eq!(other.last_day.attempts, count as u64);
    assert_eq!(other.last_day.p95_latency_ms, Some(1));
    Ok(())
}
