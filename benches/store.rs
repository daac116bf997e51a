//! The store's hot path on a temporary SQLite file with `synchronous = FULL`, 1 KiB of data per
//! event. `store_enqueue`: N enqueues committed either as N concurrent `enqueue` calls (group
//! commit) or as one `enqueue_batch`. `store_claim_record`: a batch of N due deliveries claimed
//! in one `claim_due`, then their N attempt results written in one `record_attempts`, as the
//! engine's claim loop and recorder do (enqueueing them is outside the timed part).
//! `store_endpoint_stats`: an endpoint's status figures with two hours of history at 10 attempts
//! a second. Run with `cargo bench --bench store`; criterion reports the median time per N.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::future::join_all;
use webhook_operator::store::sqlite::{SqliteConfig, SqliteStore};
use webhook_operator::store::{
    AttemptRecord, AttemptResult, ClaimRequest, ClaimScope, EnqueueRequest, EventSource, NewEvent,
    NextStep, Store,
};

fn new_event(id: u64, data: &Bytes) -> NewEvent {
    NewEvent {
        event_id: format!("evt_{id}"),
        namespace: "bench".into(),
        event_type: "user.created".into(),
        data: data.clone(),
        created_at: jiff::Timestamp::now(),
        source: EventSource::Ingest,
        idempotency_key: None,
        trace_parent: None,
    }
}

/// A runtime like the dispatcher's and a fresh store in a temporary directory (kept alive by
/// the returned guard).
fn open_store() -> (tokio::runtime::Runtime, Arc<dyn Store>, tempfile::TempDir) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let store: Arc<dyn Store> = Arc::new(
        runtime
            .block_on(SqliteStore::open(SqliteConfig::new(
                dir.path().join("bench.db"),
            )))
            .expect("open store"),
    );
    (runtime, store, dir)
}

fn one_kib() -> Bytes {
    Bytes::from(format!(r#"{{"padding":"{}"}}"#, "x".repeat(1024 - 15)))
}

fn enqueues(c: &mut Criterion) {
    let (runtime, store, _dir) = open_store();
    let data = one_kib();
    let next_id = Arc::new(AtomicU64::new(0));

    let mut group = c.benchmark_group("store_enqueue");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for n in [100u64, 1000] {
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::new("concurrent", n), &n, |b, &n| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iterations {
                        let calls = (0..n).map(|_| {
                            let (store, id) =
                                (store.clone(), next_id.fetch_add(1, Ordering::Relaxed));
                            let event = new_event(id, &data);
                            async move { store.enqueue(event, vec!["a".into(), "b".into()]).await }
                        });
                        for outcome in join_all(calls).await {
                            outcome.expect("enqueue");
                        }
                    }
                    started.elapsed()
                })
            });
        });
        group.bench_with_input(BenchmarkId::new("batch", n), &n, |b, &n| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iterations {
                        let requests = (0..n)
                            .map(|_| {
                                EnqueueRequest::unordered(
                                    new_event(next_id.fetch_add(1, Ordering::Relaxed), &data),
                                    vec!["a".into(), "b".into()],
                                )
                            })
                            .collect();
                        store.enqueue_batch(requests).await.expect("enqueue batch");
                    }
                    started.elapsed()
                })
            });
        });
    }
    group.finish();
}

fn claims_and_records(c: &mut Criterion) {
    let (runtime, store, _dir) = open_store();
    let data = one_kib();
    let mut next_id = 0u64;
    let mut group = c.benchmark_group("store_claim_record");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for n in [100u64, 1000] {
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::new("batch", n), &n, |b, &n| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iterations {
                        let requests = (0..n)
                            .map(|_| {
                                next_id += 1;
                                EnqueueRequest::unordered(
                                    new_event(next_id, &data),
                                    vec!["a".into()],
                                )
                            })
                            .collect();
                        store.enqueue_batch(requests).await.expect("enqueue batch");
                        let started = Instant::now();
                        let claimed = store
                            .claim_due(ClaimRequest {
                                now: jiff::Timestamp::now(),
                                limit: n as usize,
                                per_endpoint_limit: None,
                                owner: "bench".into(),
                                lease: Duration::from_secs(330),
                                scope: ClaimScope::All,
                            })
                            .await
                            .expect("claim");
                        assert_eq!(claimed.len(), n as usize, "every enqueued delivery is due");
                        let results = claimed
                            .iter()
                            .map(|claimed| AttemptResult {
                                delivery_id: claimed.delivery.id,
                                owner: "bench".into(),
                                record: AttemptRecord {
                                    at: jiff::Timestamp::now(),
                                    attempt: 1,
                                    status_code: Some(200),
                                    latency_ms: Some(1),
                                    error: None,
                                    response_snippet: None,
                                },
                                next: NextStep::Delivered,
                                pause_on_dead_letter: false,
                            })
                            .collect();
                        store.record_attempts(results).await.expect("record");
                        timed += started.elapsed();
                    }
                    timed
                })
            });
        });
    }
    group.finish();
}

/// Attempts an endpoint had over the last two hours at 10 a second: what a busy endpoint's
/// status round reads its windowed statistics from.
const HISTORY_ATTEMPTS: u64 = 72_000;

/// Fills the store with [`HISTORY_ATTEMPTS`] attempts of endpoint `a`, spread evenly over the two
/// hours before now, with latencies of 1–300 ms and one failure in ten.
fn seed_history(runtime: &tokio::runtime::Runtime, store: &Arc<dyn Store>) {
    let data = Bytes::from_static(br#"{"n":1}"#);
    let now = jiff::Timestamp::now();
    let chunk = 1_000u64;
    runtime.block_on(async {
        for start in (0..HISTORY_ATTEMPTS).step_by(chunk as usize) {
            let requests = (start..start + chunk)
                .map(|id| EnqueueRequest::unordered(new_event(id, &data), vec!["a".into()]))
                .collect();
            store.enqueue_batch(requests).await.expect("enqueue batch");
            let claimed = store
                .claim_due(ClaimRequest {
                    now: jiff::Timestamp::now(),
                    limit: chunk as usize,
                    per_endpoint_limit: None,
                    owner: "bench".into(),
                    lease: Duration::from_secs(3_600),
                    scope: ClaimScope::All,
                })
                .await
                .expect("claim");
            let results = claimed
                .iter()
                .zip(start..)
                .map(|(claimed, i)| {
                    let ago = jiff::SignedDuration::from_millis(
                        (7_200_000 * (HISTORY_ATTEMPTS - i) / HISTORY_ATTEMPTS) as i64,
                    );
                    let failed = i % 10 == 0;
                    AttemptResult {
                        delivery_id: claimed.delivery.id,
                        owner: "bench".into(),
                        record: AttemptRecord {
                            at: now - ago,
                            attempt: 1,
                            status_code: Some(if failed { 503 } else { 200 }),
                            latency_ms: Some(1 + (i * 7919) % 300),
                            error: None,
                            response_snippet: None,
                        },
                        next: if failed {
                            NextStep::DeadLetter {
                                reason: "HTTP 503".into(),
                            }
                        } else {
                            NextStep::Delivered
                        },
                        pause_on_dead_letter: false,
                    }
                })
                .collect();
            for outcome in store.record_attempts(results).await.expect("record") {
                outcome.expect("recorded");
            }
        }
    });
}

/// `store_endpoint_stats`: one endpoint's status figures (totals, queue counts, the last hour's
/// and the last day's windows) as a status round reads them, with two hours of history.
fn endpoint_stats(c: &mut Criterion) {
    let (runtime, store, _dir) = open_store();
    seed_history(&runtime, &store);
    let endpoint = webhook_operator::store::EndpointRef::new("bench", "a");
    let check = runtime
        .block_on(store.endpoint_stats(&endpoint, jiff::Timestamp::now()))
        .expect("stats");
    assert_eq!(
        check.last_day.attempts, HISTORY_ATTEMPTS,
        "every attempt is in the day"
    );
    let mut group = c.benchmark_group("store_endpoint_stats");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("two_hours_at_10_per_s", |b| {
        b.iter(|| {
            runtime
                .block_on(store.endpoint_stats(&endpoint, jiff::Timestamp::now()))
                .expect("stats")
        });
    });
    group.finish();
}

criterion_group!(benches, enqueues, claims_and_records, endpoint_stats);
criterion_main!(benches);
