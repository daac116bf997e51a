//! Costs of the dispatcher's per-event and per-delivery decisions: routing an event against
//! 10,000 subscriptions, the per-endpoint gate (concurrency, breaker, limiter), reading an
//! endpoint's policy from its ConfigMap JSON (done for every claimed delivery), and one claim
//! round of the store against a backlog of due deliveries.
//!
//! `cargo bench --bench dispatch -- --warm-up-time 1 --measurement-time 3`
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use jiff::Timestamp;
use serde_json::json;
use webhook_operator::api::policy::EffectivePolicy;
use webhook_operator::api::validation::validate_endpoint;
use webhook_operator::api::{WebhookEndpoint, WebhookSubscription};
use webhook_operator::delivery::outcome::HttpResult;
use webhook_operator::dispatcher::gate::{Gate, Gates};
use webhook_operator::dispatcher::router::{route, route_with};
use webhook_operator::dispatcher::subscription_index::SubscriptionIndex;
use webhook_operator::store::sqlite::{SqliteConfig, SqliteStore};
use webhook_operator::store::{
    ClaimRequest, ClaimScope, EnqueueRequest, EventSource, NewEvent, Store,
};

const NS: &str = "bench";

fn endpoint(i: usize) -> WebhookEndpoint {
    serde_json::from_value(json!({
        "metadata": {"name": format!("ep-{i}"), "namespace": NS,
                     "labels": {"team": format!("team-{}", i % 100)}},
        "spec": {"url": format!("https://ep-{i}.example.com/hook")}
    }))
    .expect("endpoint")
}

fn subscription(i: usize, spec: serde_json::Value) -> WebhookSubscription {
    serde_json::from_value(json!({
        "metadata": {"name": format!("sub-{i}"), "namespace": NS},
        "spec": spec
    }))
    .expect("subscription")
}

fn routing(c: &mut Criterion) {
    const N: usize = 10_000;
    let endpoints: Vec<WebhookEndpoint> = (0..N).map(endpoint).collect();
    let endpoint_refs: Vec<&WebhookEndpoint> = endpoints.iter().collect();
    // Each subscription names its own endpoint; event types spread over 100 families, so an
    // event of one type matches 1% of them (100 endpoints).
    let by_ref_sparse: Vec<WebhookSubscription> = (0..N)
        .map(|i| {
            subscription(
                i,
                json!({"endpointRef": {"name": format!("ep-{i}")},
                       "eventTypes": [format!("family{}.created", i % 100), format!("family{}.*", i % 100)]}),
            )
        })
        .collect();
    // Every subscription matches (`user.*`): 10,000 endpoints receive the event.
    let by_ref_all: Vec<WebhookSubscription> = (0..N)
        .map(|i| {
            subscription(
                i,
                json!({"endpointRef": {"name": format!("ep-{i}")}, "eventTypes": ["user.*"]}),
            )
        })
        .collect();
    // 100 label selectors (one per team), 10,000 endpoints.
    let by_selector: Vec<WebhookSubscription> = (0..100)
        .map(|i| {
            subscription(
                i,
                json!({"endpointSelector": {"matchLabels": {"team": format!("team-{i}")}},
                       "eventTypes": ["user.created"]}),
            )
        })
        .collect();

    let mut group = c.benchmark_group("route");
    group.sample_size(10);
    group.bench_function("10k_subs_by_ref_1pct_match", |b| {
        b.iter(|| {
            black_box(route(
                NS,
                black_box("family7.created"),
                &by_ref_sparse,
                &endpoint_refs,
            ))
        })
    });
    group.bench_function("10k_subs_by_ref_no_match", |b| {
        b.iter(|| {
            black_box(route(
                NS,
                black_box("nda.signed"),
                &by_ref_sparse,
                &endpoint_refs,
            ))
        })
    });
    group.bench_function("10k_subs_by_ref_all_match", |b| {
        b.iter(|| {
            black_box(route(
                NS,
                black_box("user.created"),
                &by_ref_all,
                &endpoint_refs,
            ))
        })
    });
    // As the dispatcher routes (`Cache::route`): endpoints looked up by name, subscriptions
    // either all scanned or only the candidates of the per-namespace event-type index.
    let names: std::collections::HashSet<String> = (0..N).map(|i| format!("ep-{i}")).collect();
    let shared: Vec<Arc<WebhookSubscription>> =
        by_ref_sparse.iter().cloned().map(Arc::new).collect();
    let index = SubscriptionIndex::build(shared.iter().cloned());
    let no_selector = |_: &mut dyn FnMut(&WebhookEndpoint)| {};
    group.bench_function("10k_subs_by_ref_1pct_match_scan_by_name", |b| {
        b.iter(|| {
            black_box(route_with(
                NS,
                black_box("family7.created"),
                shared.iter().map(|s| s.as_ref()),
                |name| names.contains(name),
                no_selector,
            ))
        })
    });
    group.bench_function("10k_subs_by_ref_1pct_match_indexed", |b| {
        b.iter(|| {
            let candidates = index.candidates(NS, black_box("family7.created"));
            black_box(route_with(
                NS,
                "family7.created",
                candidates.iter().map(|s| s.as_ref()),
                |name| names.contains(name),
                no_selector,
            ))
        })
    });
    group.bench_function("100_selectors_10k_endpoints", |b| {
        b.iter(|| {
            black_box(route(
                NS,
                black_box("user.created"),
                &by_selector,
                &endpoint_refs,
            ))
        })
    });
    group.finish();
}

fn policy(i: usize) -> EffectivePolicy {
    let spec = serde_json::from_value(json!({
        "url": format!("https://ep-{i}.example.com/hook"),
        "rateLimit": {"requestsPerMinute": 6_000_000, "burst": 100_000, "adaptive": true}
    }))
    .expect("spec");
    validate_endpoint(&spec, &format!("ep-{i}"), false).expect("valid spec")
}

fn gates(c: &mut Criterion) {
    let mut group = c.benchmark_group("gate");
    let ok = HttpResult {
        status: Some(200),
        latency: Duration::from_millis(1),
        ..HttpResult::default()
    };
    for endpoints in [1usize, 10_000] {
        let refs: Vec<_> = (0..endpoints)
            .map(|i| webhook_operator::store::EndpointRef::new(NS, format!("ep-{i}")))
            .collect();
        let policies: Vec<_> = (0..endpoints).map(policy).collect();
        let gates = Gates::default();
        let t0 = Instant::now();
        let mut tick = 0u64;
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::new("acquire_finish", endpoints),
            &endpoints,
            |b, &n| {
                b.iter(|| {
                    tick += 1;
                    let i = (tick as usize) % n;
                    let now = t0 + Duration::from_micros(tick);
                    match gates.acquire(&refs[i], &policies[i], now, 16) {
                        Gate::Go(permit) => {
                            black_box(gates.finish(&refs[i], permit, &ok, now));
                        }
                        Gate::Later(at) => {
                            black_box(at);
                        }
                        Gate::Busy => {}
                    }
                })
            },
        );
    }
    group.finish();
}

fn policy_json(c: &mut Criterion) {
    let json = policy(1).to_config_json();
    c.bench_function("policy_from_config_json", |b| {
        b.iter(|| black_box(EffectivePolicy::from_config_json(black_box(&json))))
    });
}

/// One engine claim round (limit 512, 16 per endpoint) against a backlog of due deliveries
/// spread over 100 endpoints; the claimed rows are given back (untimed) so the backlog stays.
fn claim(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("store_claim_512");
    group.sample_size(10);
    for backlog in [1_000usize, 20_000] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store: Arc<dyn Store> = Arc::new(
            runtime
                .block_on(SqliteStore::open(SqliteConfig::new(
                    dir.path().join("claim.db"),
                )))
                .expect("open store"),
        );
        let data = bytes::Bytes::from(format!(r#"{{"padding":"{}"}}"#, "x".repeat(1024 - 15)));
        let past = Timestamp::now() - Duration::from_secs(60);
        runtime.block_on(async {
            for chunk in 0..backlog / 1000 {
                let requests = (0..1000)
                    .map(|i| EnqueueRequest {
                        event: NewEvent {
                            event_id: format!("evt_{chunk}_{i}"),
                            namespace: NS.into(),
                            event_type: "user.created".into(),
                            data: data.clone(),
                            created_at: past,
                            source: EventSource::Ingest,
                            idempotency_key: None,
                            trace_parent: None,
                        },
                        endpoints: vec![format!("ep-{}", (chunk * 1000 + i) % 100)],
                        lanes: Default::default(),
                        claim: None,
                    })
                    .collect();
                store.enqueue_batch(requests).await.expect("enqueue");
            }
        });
        group.throughput(Throughput::Elements(512));
        group.bench_with_input(BenchmarkId::new("backlog", backlog), &backlog, |b, _| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iterations {
                        let started = Instant::now();
                        let claimed = store
                            .claim_due(ClaimRequest {
                                now: Timestamp::now(),
                                limit: 512,
                                per_endpoint_limit: Some(16),
                                owner: "bench".into(),
                                lease: Duration::from_secs(330),
                                scope: ClaimScope::All,
                            })
                            .await
                            .expect("claim");
                        spent += started.elapsed();
                        let ids = claimed.iter().map(|c| c.delivery.id).collect();
                        store.defer("bench".into(), ids, past).await.expect("defer");
                    }
                    spent
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, routing, gates, policy_json, claim);
criterion_main!(benches);
