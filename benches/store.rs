//! Store throughput: N enqueues (1 KiB of data each) committed on a temporary SQLite file with
//! `synchronous = FULL`, either as N concurrent `enqueue` calls (group commit) or as one
//! `enqueue_batch`. Run with `cargo bench --bench store`; criterion reports the median time per
//! N events.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::future::join_all;
use webhook_operator::store::sqlite::{SqliteConfig, SqliteStore};
use webhook_operator::store::{EnqueueRequest, EventSource, NewEvent, Store};

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

fn enqueues(c: &mut Criterion) {
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
    let data = Bytes::from(format!(r#"{{"padding":"{}"}}"#, "x".repeat(1024 - 15)));
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

criterion_group!(benches, enqueues);
criterion_main!(benches);
