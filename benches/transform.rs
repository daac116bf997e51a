//! Cost of a transform per delivery: the three integration templates of `examples/30–32` run on
//! a `user.created` / `user.verified` payload, in process (the pure `Program::run`: parse the
//! payload, run the program, serialize and check the output) and through the pool, as a delivery
//! pays it: Slack's and Mailchimp's templates are proved bounded (`transform/bounds/`) and run
//! in the dispatcher once checked, HubSpot's (it recurses) makes the round trip to a worker
//! process over its pipes. And 16 runs at once through the pool, as a busy endpoint's
//! deliveries ask for them (the workers take the waiting runs together), for Slack (in process)
//! and HubSpot (workers).
//!
//! `cargo bench --bench transform -- --warm-up-time 1 --measurement-time 3`
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::Deserialize;
use webhook_operator::transform::{PoolConfig, Program, TransformPool};

/// The transform program of an example file's WebhookEndpoint.
fn example_program(file: &str) -> String {
    let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    for document in serde_norway::Deserializer::from_str(&text) {
        let Ok(value) = serde_norway::Value::deserialize(document) else {
            continue;
        };
        if value["kind"].as_str() == Some("WebhookEndpoint") {
            if let Some(jq) = value["spec"]["transform"]["jq"].as_str() {
                return jq.to_owned();
            }
        }
    }
    panic!("no transform in {path}");
}

/// A rendered payload of `event_type` as the dispatcher sends it to a transform.
fn payload(event_type: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "event_id": "evt_01HQ3V9K8Z6Y5X4W3V2U1T0S9R",
            "timestamp": "2024-01-15T10:30:00Z",
            "webhook": {"id": "pitchey/crm", "name": "CRM"},
            "data": {
                "event_type": event_type,
                "user": {
                    "id": 123, "email": "user@example.com", "username": "newuser",
                    "first_name": "Ada", "last_name": "Lovelace", "company_name": "Engines Ltd",
                    "user_type": "creator", "created_at": "2024-01-15T10:30:00Z"
                }
            }
        })
        .to_string(),
    )
}

const TEMPLATES: [(&str, &str, &str); 3] = [
    ("slack", "30-integration-slack.yaml", "nda.signed"),
    ("hubspot", "31-integration-hubspot.yaml", "user.created"),
    (
        "mailchimp",
        "32-integration-mailchimp.yaml",
        "user.verified",
    ),
];

fn in_process(c: &mut Criterion) {
    let mut group = c.benchmark_group("transform_in_process");
    for (name, file, event_type) in TEMPLATES {
        let program = Program::compile(&example_program(file)).expect("the example compiles");
        let payload = payload(event_type);
        group.bench_function(name, |b| {
            b.iter(|| black_box(program.run(black_box(&payload), 1 << 20)))
        });
    }
    group.finish();
}

/// Runs asked for at once in the second group: a busy endpoint's in-flight deliveries (the
/// dispatcher's default `--per-endpoint-concurrency`).
const AT_ONCE: u64 = 16;

fn through_the_pool(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_webhook-operator"));
    let pool = runtime.block_on(async { TransformPool::start(PoolConfig::new(binary)) });
    let mut group = c.benchmark_group("transform_through_pool");
    for (name, file, event_type) in TEMPLATES {
        let program: Arc<str> = Arc::from(example_program(file));
        let payload = payload(event_type);
        group.bench_function(name, |b| {
            b.iter(|| runtime.block_on(pool.run(program.clone(), payload.clone())))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("transform_through_pool_16_at_once");
    group.throughput(Throughput::Elements(AT_ONCE));
    for (name, file, event_type) in [TEMPLATES[0], TEMPLATES[1]] {
        let program: Arc<str> = Arc::from(example_program(file));
        let payload = payload(event_type);
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let runs = (0..AT_ONCE).map(|_| {
                        let (pool, program, payload) =
                            (pool.clone(), program.clone(), payload.clone());
                        tokio::spawn(async move { pool.run(program, payload).await })
                    });
                    for run in futures::future::join_all(runs).await {
                        black_box(run.expect("the run's task")).expect("the template runs");
                    }
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, in_process, through_the_pool);
criterion_main!(benches);
