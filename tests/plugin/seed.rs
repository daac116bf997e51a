//! The seeded history the golden files show, at a fixed time ([`NOW`]).
//!
//! Namespace `crm`: `crm` (healthy, one retried delivery, a transform-filtered one), `billing`
//! (failing: circuit open, dead letters, ordered), `legacy` (not Ready, suspended). Namespace
//! `shop`: `orders` (ordered by key, paused by a dead letter, signing with a Secret of its own).
use std::collections::VecDeque;

use serde_json::{json, Value};
use webhook_operator::query::{WebhookAnalytics, WebhookDeadLetter, WebhookDelivery};

use crate::fake_api::World;

/// The time every command runs at.
pub const NOW: &str = "2026-01-15T12:00:00Z";

fn condition(type_: &str, status: &str, reason: &str, message: &str, since: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": since})
}

fn endpoint(namespace: &str, name: &str, spec: Value, status: Value, extra_meta: Value) -> Value {
    let mut metadata = json!({"name": name, "namespace": namespace,
        "creationTimestamp": "2026-01-10T09:00:00Z", "uid": format!("uid-{name}")});
    if let (Some(metadata), Some(extra)) = (metadata.as_object_mut(), extra_meta.as_object()) {
        metadata.extend(extra.clone());
    }
    json!({"apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookEndpoint",
           "metadata": metadata, "spec": spec, "status": status})
}

#[allow(clippy::too_many_arguments)]
fn attempt(
    namespace: &str,
    endpoint: &str,
    delivery: i64,
    attempt: u32,
    time: &str,
    event_type: &str,
    outcome: &str,
    next: Option<&str>,
    code: Option<u16>,
    latency: Option<u64>,
    error: Option<&str>,
    seq: i64,
) -> WebhookDelivery {
    serde_json::from_value(json!({
        "apiVersion": "query.webhooks.pitchey.io/v1alpha1", "kind": "WebhookDelivery",
        "metadata": {"name": format!("{endpoint}.{delivery}.{attempt}"), "namespace": namespace,
            "creationTimestamp": time, "resourceVersion": seq.to_string(),
            "labels": {"webhooks.pitchey.io/endpoint": endpoint,
                       "webhooks.pitchey.io/outcome": outcome,
                       "webhooks.pitchey.io/event-type": event_type}},
        "endpoint": endpoint, "eventID": format!("evt_01KF{delivery:022}"),
        "eventType": event_type, "deliveryID": delivery, "attempt": attempt, "time": time,
        "outcome": outcome, "next": next, "statusCode": code, "latencyMs": latency,
        "error": error,
    }))
    .unwrap()
}

/// 24 hourly buckets ending with the current hour, from attempt and failure counts.
fn hourly(attempts: [u64; 24], failures: [u64; 24]) -> Value {
    let first: jiff::Timestamp = "2026-01-14T13:00:00Z".parse().unwrap();
    (0..24)
        .map(|i| {
            let start = first + jiff::SignedDuration::from_hours(i as i64);
            let mut bucket = json!({"start": start.to_string(), "attempts": attempts[i],
                "successes": attempts[i] - failures[i], "failures": failures[i]});
            if attempts[i] > 0 {
                bucket["avgLatencyMs"] = json!(40.0 + i as f64);
            }
            bucket
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn analytics(
    namespace: &str,
    endpoint: &str,
    last_hour: Value,
    last_day: Value,
    totals: Value,
    queue: Value,
    last: Value,
    hourly: Value,
) -> WebhookAnalytics {
    let mut object = json!({
        "apiVersion": "query.webhooks.pitchey.io/v1alpha1", "kind": "WebhookAnalytics",
        "metadata": {"name": endpoint, "namespace": namespace, "creationTimestamp": NOW,
                     "labels": {"webhooks.pitchey.io/endpoint": endpoint}},
        "endpoint": endpoint, "lastHour": last_hour, "lastDay": last_day, "totals": totals,
        "queue": queue, "hourly": hourly,
    });
    if let (Some(object), Some(last)) = (object.as_object_mut(), last.as_object()) {
        object.extend(last.clone());
    }
    serde_json::from_value(object).unwrap()
}

fn window(attempts: u64, successes: u64, available: f64, avg: f64, p95: u64) -> Value {
    json!({"attempts": attempts, "successes": successes, "failures": attempts - successes,
           "successRate": successes as f64 / attempts as f64, "availability": available,
           "avgLatencyMs": avg, "p95LatencyMs": p95})
}

#[allow(clippy::too_many_arguments)]
fn dead_letter(
    namespace: &str,
    endpoint: &str,
    delivery: i64,
    event_type: &str,
    at: &str,
    attempts: Value,
    reason: &str,
    last_code: Option<u16>,
    last_error: &str,
) -> WebhookDeadLetter {
    let count = attempts.as_array().map_or(0, Vec::len);
    serde_json::from_value(json!({
        "apiVersion": "query.webhooks.pitchey.io/v1alpha1", "kind": "WebhookDeadLetter",
        "metadata": {"name": format!("{endpoint}.{delivery}"), "namespace": namespace,
            "creationTimestamp": at,
            "labels": {"webhooks.pitchey.io/endpoint": endpoint,
                       "webhooks.pitchey.io/event-type": event_type}},
        "endpoint": endpoint, "eventID": format!("evt_01KF{delivery:022}"),
        "eventType": event_type, "eventTime": "2026-01-15T08:00:00Z", "deliveryID": delivery,
        "attempts": count, "reason": reason, "lastStatusCode": last_code,
        "lastError": last_error, "deadLetteredAt": at,
        "data": {"invoice": {"id": format!("inv_{delivery}"), "amount": 4200}},
        "history": attempts,
    }))
    .unwrap()
}

fn put(world: &mut World, plural: &str, object: Value) {
    let namespace = object["metadata"]["namespace"].as_str().unwrap().to_owned();
    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
    world
        .objects
        .insert((plural.to_owned(), namespace, name), object);
}

/// The seeded world.
pub fn world() -> World {
    let mut world = World::default();
    world.now = NOW.to_owned();
    let ready = |since: &str| {
        condition(
            "Ready",
            "True",
            "Provisioned",
            "signing Secret and delivery ConfigMap provisioned",
            since,
        )
    };
    put(
        &mut world,
        "webhookendpoints",
        endpoint(
            "crm",
            "crm",
            json!({"url": "https://crm.example.com/hooks", "displayName": "CRM",
                   "headers": {"X-Team": "crm"},
                   "headersFrom": [{"name": "Authorization",
                                    "secretKeyRef": {"name": "crm-token", "key": "token"}}]}),
            json!({
                "conditions": [
                    ready("2026-01-10T09:00:05Z"),
                    condition("Healthy", "True", "Delivering", "98.3% of attempts succeeded in the last hour", "2026-01-15T08:00:00Z"),
                    condition("CircuitOpen", "False", "Closed", "the circuit is closed", "2026-01-10T09:00:05Z"),
                ],
                "signing": {"secretName": "crm-signing", "secretKey": "secret", "source": "Generated",
                            "lastRotationTime": "2026-01-12T10:00:00Z"},
                "deliveryConfigMap": "crm-delivery",
                "delivery": {"totalDelivered": 5120, "totalFailed": 41, "totalDeadLettered": 0,
                    "totalRetries": 41, "totalFiltered": 12, "deadLetterCount": 0, "pending": 0,
                    "successRateLastHour": "98.3%", "successRateLastDay": "99.1%",
                    "healthScore": 97, "currentRatePerMinute": 100,
                    "lastError": "HTTP 503 Service Unavailable",
                    "lastFailureTime": "2026-01-15T11:41:06Z"},
                "circuit": {"state": "Closed", "since": "2026-01-10T09:00:05Z", "consecutiveFailures": 0},
                "lastTest": {"nonce": "ui-01kf0000000000000000000000", "time": "2026-01-15T11:30:00Z",
                             "statusCode": 200, "latencyMs": 41},
            }),
            json!({"managedFields": [{"manager": "argocd-controller", "operation": "Apply",
                "apiVersion": "webhooks.pitchey.io/v1alpha1", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:url": {}, "f:suspend": {}}}}]}),
        ),
    );
    put(
        &mut world,
        "webhookendpoints",
        endpoint(
            "crm",
            "billing",
            json!({"url": "https://billing.example.com/webhooks",
                   "retryPolicy": {"maxAttempts": 5, "backoff": "linear", "baseDelay": "30s", "maxDelay": "10m"},
                   "circuitBreaker": {"failureThreshold": 10, "openDuration": "2m"},
                   "ordering": {"mode": "Strict", "onDeadLetter": "Continue"},
                   "transform": {"jq": "{text: .data.invoice.id}\n"}}),
            json!({
                "conditions": [
                    ready("2026-01-10T09:00:05Z"),
                    condition("Healthy", "False", "CircuitOpen", "the circuit is open after 12 consecutive failures", "2026-01-15T11:52:00Z"),
                    condition("CircuitOpen", "True", "FailureThresholdReached", "12 consecutive failures; next probe at 2026-01-15T12:01:00Z", "2026-01-15T11:52:00Z"),
                ],
                "signing": {"secretName": "billing-signing", "secretKey": "secret", "source": "Generated"},
                "delivery": {"totalDelivered": 880, "totalFailed": 230, "totalDeadLettered": 7,
                    "totalRetries": 223, "deadLetterCount": 2, "pending": 4,
                    "successRateLastHour": "41.7%", "successRateLastDay": "88.0%",
                    "healthScore": 31, "lastError": "timeout: no response within 30s",
                    "lastFailureTime": "2026-01-15T11:52:00Z"},
                "circuit": {"state": "Open", "since": "2026-01-15T11:52:00Z", "consecutiveFailures": 12},
                "ordering": {"paused": false, "queued": 4},
            }),
            json!({}),
        ),
    );
    put(
        &mut world,
        "webhookendpoints",
        endpoint(
            "crm",
            "legacy",
            json!({"url": "http://legacy.internal/hook", "suspend": true}),
            json!({"conditions": [
                condition("Ready", "False", "InvalidSpec", "spec.url: `http://legacy.internal/hook` is plain HTTP; use https://", "2026-01-11T14:00:00Z"),
                condition("Suspended", "True", "Suspended", "spec.suspend is true: deliveries are held", "2026-01-11T14:00:00Z"),
            ]}),
            json!({}),
        ),
    );
    put(
        &mut world,
        "webhookendpoints",
        endpoint(
            "shop",
            "orders",
            json!({"url": "https://orders.example.com/in",
                   "ordering": {"mode": "ByKey", "key": "data.order.id", "onDeadLetter": "Pause"},
                   "signing": {"scheme": "standard-webhooks",
                               "secretRef": {"name": "orders-signing", "key": "key"}}}),
            json!({
                "conditions": [ready("2026-01-12T08:00:00Z")],
                "signing": {"secretName": "orders-signing", "secretKey": "key", "source": "User"},
                "circuit": {"state": "Closed", "consecutiveFailures": 0},
                "ordering": {"paused": true, "queued": 2, "pausedBy": {
                    "eventId": "evt_01KF0000000000000000000003",
                    "reason": "HTTP 422 Unprocessable Entity", "since": "2026-01-15T10:15:00Z"}},
            }),
            json!({}),
        ),
    );

    world.deliveries = vec![
        attempt(
            "crm",
            "crm",
            1042,
            1,
            "2026-01-15T11:58:30Z",
            "user.updated",
            "Delivered",
            None,
            Some(200),
            Some(38),
            None,
            220,
        ),
        attempt(
            "crm",
            "billing",
            1043,
            3,
            "2026-01-15T11:52:00Z",
            "payment.failed",
            "Failed",
            Some("DeadLetter"),
            None,
            Some(30000),
            Some("timeout: no response within 30s"),
            219,
        ),
        attempt(
            "crm",
            "crm",
            1041,
            2,
            "2026-01-15T11:41:07Z",
            "user.created",
            "Delivered",
            None,
            Some(200),
            Some(45),
            None,
            218,
        ),
        attempt(
            "crm",
            "crm",
            1041,
            1,
            "2026-01-15T11:41:06Z",
            "user.created",
            "Failed",
            Some("Retry"),
            Some(503),
            Some(120),
            Some("HTTP 503 Service Unavailable"),
            217,
        ),
        attempt(
            "crm",
            "billing",
            1043,
            2,
            "2026-01-15T11:51:30Z",
            "payment.failed",
            "Failed",
            Some("Retry"),
            Some(503),
            Some(80),
            Some("HTTP 503 Service Unavailable"),
            216,
        ),
        attempt(
            "crm",
            "billing",
            1043,
            1,
            "2026-01-15T11:51:00Z",
            "payment.failed",
            "Failed",
            Some("Retry"),
            Some(503),
            Some(75),
            Some("HTTP 503 Service Unavailable"),
            215,
        ),
        attempt(
            "crm",
            "crm",
            1040,
            1,
            "2026-01-15T11:20:00Z",
            "pitch.published",
            "Delivered",
            None,
            Some(201),
            Some(52),
            None,
            210,
        ),
        attempt(
            "shop",
            "orders",
            3,
            2,
            "2026-01-15T10:15:00Z",
            "order.placed",
            "Failed",
            Some("DeadLetter"),
            Some(422),
            Some(18),
            Some("HTTP 422 Unprocessable Entity: {\"error\":\"unknown sku\"}"),
            205,
        ),
        attempt(
            "crm",
            "crm",
            1039,
            1,
            "2026-01-15T10:05:00Z",
            "user.created",
            "Filtered",
            None,
            None,
            None,
            None,
            200,
        ),
        attempt(
            "crm",
            "billing",
            1038,
            1,
            "2026-01-15T09:00:00Z",
            "payment.succeeded",
            "Delivered",
            None,
            Some(200),
            Some(95),
            None,
            190,
        ),
    ];
    world.dead_letters = vec![
        dead_letter(
            "crm",
            "billing",
            1043,
            "payment.failed",
            "2026-01-15T11:52:00Z",
            json!([{"attempt": 1, "time": "2026-01-15T11:51:00Z", "statusCode": 503, "latencyMs": 75},
                   {"attempt": 2, "time": "2026-01-15T11:51:30Z", "statusCode": 503, "latencyMs": 80},
                   {"attempt": 3, "time": "2026-01-15T11:52:00Z", "latencyMs": 30000,
                    "error": "timeout: no response within 30s"}]),
            "retries exhausted",
            None,
            "timeout: no response within 30s",
        ),
        dead_letter(
            "crm",
            "billing",
            1017,
            "invoice.created",
            "2026-01-14T22:10:00Z",
            json!([{"attempt": 1, "time": "2026-01-14T22:00:00Z", "statusCode": 503, "latencyMs": 60},
                   {"attempt": 2, "time": "2026-01-14T22:10:00Z", "statusCode": 503, "latencyMs": 64}]),
            "retries exhausted",
            Some(503),
            "HTTP 503 Service Unavailable",
        ),
        dead_letter(
            "shop",
            "orders",
            3,
            "order.placed",
            "2026-01-15T10:15:00Z",
            json!([{"attempt": 1, "time": "2026-01-15T10:14:00Z", "statusCode": 422, "latencyMs": 20},
                   {"attempt": 2, "time": "2026-01-15T10:15:00Z", "statusCode": 422, "latencyMs": 18}]),
            "HTTP 422 Unprocessable Entity is not retried",
            Some(422),
            "HTTP 422 Unprocessable Entity: {\"error\":\"unknown sku\"}",
        ),
    ];
    let quiet = [0; 24];
    world.analytics = vec![
        analytics(
            "crm",
            "crm",
            window(180, 177, 1.0, 44.2, 120),
            window(2410, 2388, 0.998, 47.9, 140),
            json!({"delivered": 5120, "failedAttempts": 41, "deadLettered": 0, "filtered": 12, "retries": 41}),
            json!({"pending": 0, "inFlight": 0, "held": 0, "queued": 0, "deadLetters": 0}),
            json!({"lastAttemptTime": "2026-01-15T11:58:30Z", "lastSuccessTime": "2026-01-15T11:58:30Z",
                   "lastFailureTime": "2026-01-15T11:41:06Z", "lastStatusCode": 200,
                   "lastError": "HTTP 503 Service Unavailable"}),
            hourly(
                [
                    40, 32, 25, 18, 12, 8, 5, 4, 6, 9, 20, 45, 80, 120, 150, 170, 160, 140, 130,
                    150, 175, 190, 185, 180,
                ],
                [
                    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1, 0, 0, 4, 0, 0, 0, 3, 0, 6, 3,
                ],
            ),
        ),
        analytics(
            "crm",
            "billing",
            window(12, 5, 0.5, 2540.0, 30000),
            window(300, 264, 0.9, 310.0, 2200),
            json!({"delivered": 880, "failedAttempts": 230, "deadLettered": 7, "filtered": 0, "retries": 223}),
            json!({"pending": 3, "inFlight": 0, "held": 0, "queued": 1, "deadLetters": 2}),
            json!({"lastAttemptTime": "2026-01-15T11:52:00Z", "lastSuccessTime": "2026-01-15T11:20:00Z",
                   "lastFailureTime": "2026-01-15T11:52:00Z",
                   "lastError": "timeout: no response within 30s"}),
            hourly(
                [
                    10, 12, 11, 14, 13, 12, 10, 9, 11, 12, 14, 15, 16, 13, 12, 11, 10, 14, 15, 13,
                    12, 11, 10, 12,
                ],
                [
                    0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 5, 6, 8, 7, 7,
                ],
            ),
        ),
        analytics(
            "crm",
            "legacy",
            json!({"attempts": 0, "successes": 0, "failures": 0}),
            json!({"attempts": 0, "successes": 0, "failures": 0}),
            json!({"delivered": 0, "failedAttempts": 0, "deadLettered": 0, "filtered": 0, "retries": 0}),
            json!({"pending": 0, "inFlight": 0, "held": 6, "queued": 0, "deadLetters": 0}),
            json!({}),
            hourly(quiet, quiet),
        ),
        analytics(
            "shop",
            "orders",
            window(2, 0, 1.0, 19.0, 20),
            window(96, 94, 1.0, 22.5, 35),
            json!({"delivered": 410, "failedAttempts": 2, "deadLettered": 1, "filtered": 0, "retries": 1}),
            json!({"pending": 0, "inFlight": 0, "held": 0, "queued": 2, "deadLetters": 1}),
            json!({"lastAttemptTime": "2026-01-15T10:15:00Z", "lastSuccessTime": "2026-01-15T09:40:00Z",
                   "lastFailureTime": "2026-01-15T10:15:00Z", "lastStatusCode": 422,
                   "lastError": "HTTP 422 Unprocessable Entity: {\"error\":\"unknown sku\"}"}),
            hourly(
                [
                    4, 4, 3, 4, 5, 3, 2, 2, 3, 4, 5, 6, 5, 4, 4, 5, 4, 4, 5, 4, 4, 4, 2, 0,
                ],
                [
                    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0,
                ],
            ),
        ),
    ];
    world
        .test_answers
        .insert("crm".into(), json!({"statusCode": 204, "latencyMs": 43}));
    world.test_answers.insert(
        "billing".into(),
        json!({"statusCode": 503, "latencyMs": 81, "error": "HTTP 503 Service Unavailable"}),
    );
    world.watches = VecDeque::from([
        vec![attempt(
            "crm",
            "crm",
            1044,
            1,
            "2026-01-15T12:00:04Z",
            "user.created",
            "Delivered",
            None,
            Some(200),
            Some(40),
            None,
            221,
        )],
        vec![
            attempt(
                "crm",
                "billing",
                1045,
                1,
                "2026-01-15T12:00:05Z",
                "payment.failed",
                "Failed",
                Some("Retry"),
                Some(503),
                Some(70),
                Some("HTTP 503 Service Unavailable"),
                222,
            ),
            attempt(
                "crm",
                "crm",
                1046,
                1,
                "2026-01-15T12:00:09Z",
                "pitch.created",
                "Failed",
                Some("Retry"),
                None,
                Some(3),
                Some("connect: connection refused (crm.example.com:443)"),
                223,
            ),
        ],
    ]);
    world
}
