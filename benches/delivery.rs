//! Costs of the delivery engine's hot paths: rendering and signing a payload, and the circuit
//! breaker's and rate limiter's decisions.
//!
//! `cargo bench --bench delivery -- --warm-up-time 1 --measurement-time 3`
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use jiff::Timestamp;
use serde_json::{Map, Value};
use webhook_operator::delivery::circuit::{CircuitBreaker, CircuitConfig};
use webhook_operator::delivery::payload::{self, WebhookRef};
use webhook_operator::delivery::ratelimit::{RateLimitConfig, RateLimiter};
use webhook_operator::delivery::signing::{self, SigningKeys, SigningScheme};

/// Event data whose rendered payload is about `size` bytes.
fn data_of(size: usize) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert(
        "user".into(),
        serde_json::json!({"id": 123, "email": "user@example.com", "username": "newuser"}),
    );
    data.insert(
        "blob".into(),
        Value::String("x".repeat(size.saturating_sub(200))),
    );
    data
}

fn render_and_sign(c: &mut Criterion) {
    let webhook = WebhookRef {
        id: "42".into(),
        name: "My Webhook Endpoint".into(),
    };
    let now = Timestamp::from_second(1_705_314_600).unwrap_or(Timestamp::UNIX_EPOCH);
    let mut group = c.benchmark_group("render_and_sign");
    for (label, size) in [("1KiB", 1024), ("64KiB", 64 * 1024)] {
        let data = data_of(size);
        group.throughput(Throughput::Bytes(size as u64));
        for (scheme, keys) in [
            (
                SigningScheme::Pitchey,
                SigningKeys::new("my-webhook-secret"),
            ),
            (
                SigningScheme::StandardWebhooks,
                SigningKeys::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ),
        ] {
            let name = serde_json::to_string(&scheme)
                .unwrap_or_default()
                .replace('"', "");
            group.bench_with_input(BenchmarkId::new(name, label), &data, |b, data| {
                b.iter(|| {
                    let body = payload::render(
                        "evt_01HMA7ZQ5V3KX9P2D4E6F8G0JB",
                        now,
                        &webhook,
                        "user.created",
                        data,
                    );
                    let body = body.unwrap_or_default();
                    black_box(signing::sign(
                        scheme,
                        &keys,
                        "evt_01HMA7ZQ5V3KX9P2D4E6F8G0JB",
                        now.as_second(),
                        &body,
                    ))
                })
            });
        }
    }
    group.finish();
}

fn breaker(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut group = c.benchmark_group("circuit_breaker");
    group.bench_function("closed_acquire_and_success", |b| {
        let mut breaker = CircuitBreaker::new(CircuitConfig::default(), t0);
        b.iter(|| {
            if let Ok(permit) = breaker.try_acquire(black_box(t0)) {
                breaker.on_success(permit, t0);
            }
        })
    });
    group.bench_function("open_reject", |b| {
        let mut breaker = CircuitBreaker::new(
            CircuitConfig {
                failure_threshold: 1,
                open_duration: Duration::from_secs(300),
            },
            t0,
        );
        if let Ok(permit) = breaker.try_acquire(t0) {
            breaker.on_failure(permit, t0);
        }
        b.iter(|| black_box(breaker.try_acquire(black_box(t0)).is_err()))
    });
    group.finish();
}

fn limiter_of(requests_per_minute: u32, burst: u32, now: Instant) -> RateLimiter {
    let config = RateLimitConfig {
        requests_per_minute,
        burst,
        adaptive: true,
    };
    RateLimiter::new(config, now)
}

fn limiter(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut group = c.benchmark_group("rate_limiter");
    group.bench_function("acquire_advancing_clock", |b| {
        let mut limiter = limiter_of(6_000_000, 100, t0);
        let mut now = t0;
        b.iter(|| {
            now += Duration::from_micros(10);
            black_box(limiter.try_acquire(now))
        })
    });
    group.bench_function("acquire_rejected", |b| {
        let mut limiter = limiter_of(1, 1, t0);
        let _ = limiter.try_acquire(t0);
        b.iter(|| black_box(limiter.try_acquire(black_box(t0))))
    });
    group.finish();
}

/// The body of an attempt from what the store keeps: the canonical data spliced in (what the
/// engine does since issue 12) against parsing the stored fields and rendering them (before).
fn render_stored(c: &mut Criterion) {
    let webhook = WebhookRef {
        id: "42".into(),
        name: "My Webhook Endpoint".into(),
    };
    let now = Timestamp::from_second(1_705_314_600).unwrap_or(Timestamp::UNIX_EPOCH);
    let mut group = c.benchmark_group("render_from_store");
    for (label, size) in [("1KiB", 1024), ("64KiB", 64 * 1024)] {
        let data = data_of(size);
        let canonical = payload::canonical_data("user.created", &data).unwrap_or_default();
        let fields = serde_json::to_vec(&data).unwrap_or_default();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::new("splice_canonical", label),
            &canonical,
            |b, stored| {
                b.iter(|| {
                    black_box(payload::render_stored(
                        "evt_01HMA7ZQ5V3KX9P2D4E6F8G0JB",
                        now,
                        &webhook,
                        "user.created",
                        stored,
                    ))
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("parse_and_render", label),
            &fields,
            |b, stored| {
                b.iter(|| {
                    let parsed: Map<String, Value> =
                        serde_json::from_slice(stored).unwrap_or_default();
                    black_box(payload::render(
                        "evt_01HMA7ZQ5V3KX9P2D4E6F8G0JB",
                        now,
                        &webhook,
                        "user.created",
                        &parsed,
                    ))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, render_and_sign, render_stored, breaker, limiter);
criterion_main!(benches);
