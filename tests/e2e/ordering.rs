//! Ordered delivery (`spec.ordering`) against the real control plane and a loopback receiver:
//! per-key order through random receiver failures and a `kill -9` of the dispatcher, and what
//! follows a dead letter (`onDeadLetter: Continue` and `Pause` with the resume annotation).
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{ListParams, Patch, PatchParams};
use reqwest::StatusCode;
use serde_json::{json, Value};
use webhook_operator::api::WebhookEndpoint;

use crate::dispatcher::Setup;
use crate::ingest::{answer, wait_until_ready, ADMIN};
use crate::receiver::{Behavior, Received, Receiver};
use crate::scaleout::{wait_for_holders, Replicas};
use crate::support::{kubectl, wait_for, Process};

const T: Duration = Duration::from_secs(120);

/// A dispatcher of the setup's namespace on its SQLite store, and its ingest base URL.
fn start_dispatcher(setup: &Setup, tag: &str) -> (Process, String, String) {
    let store = setup.store_path().display().to_string();
    let (process, listen, metrics) =
        Process::dispatcher_with(&setup.ns.name, tag, &["--store-path", &store]);
    (process, format!("http://{listen}"), metrics)
}

/// Publishes `events` in one `events:batch` request as the admin; the event ids in order.
pub async fn publish_batch(
    http: &reqwest::Client,
    api: &str,
    ns: &str,
    events: Vec<Value>,
) -> Vec<String> {
    let url = format!("{api}/v1/namespaces/{ns}/events:batch");
    let body = json!({ "events": events });
    let answer = wait_for("the batch accepted", T, || async {
        let response = http
            .post(&url)
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .ok()?;
        match answer(response).await {
            (StatusCode::ACCEPTED, answer) => Some(answer),
            (StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE, _) => None,
            (status, answer) => panic!("publish refused: {status} {answer}"),
        }
    })
    .await;
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect()
}

fn update(key: u64, seq: u64) -> Value {
    json!({"type": "user.updated", "data": {"user": {"id": format!("u{key}")}, "seq": seq}})
}

/// The (key, seq) a received request carries.
fn key_and_seq(received: &Received) -> (String, u64) {
    let data = &received.body["data"];
    (
        data["user"]["id"].as_str().unwrap_or_default().to_owned(),
        data["seq"].as_u64().unwrap_or(u64::MAX),
    )
}

/// Per key, the sequence numbers in the order the receiver accepted them.
fn sequences(received: &[Received]) -> BTreeMap<String, Vec<u64>> {
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in received {
        let (key, seq) = key_and_seq(r);
        by_key.entry(key).or_default().push(seq);
    }
    by_key
}

/// Waits until `receiver` has every update `0..updates` of each of `keys` keys, then asserts each
/// key's updates arrived in order with no gap (a repeat only ever repeats the update just
/// received: an attempt in flight at a kill, made again).
async fn assert_complete_in_order(receiver: &Receiver, keys: u64, updates: u64, label: &str) {
    let complete = wait_for("every update of every key received", T, || async {
        let by_key = sequences(&receiver.received());
        let done = by_key.len() == keys as usize
            && by_key.values().all(|seqs| {
                let mut distinct = seqs.clone();
                distinct.dedup();
                distinct.len() == updates as usize
            });
        done.then_some(by_key)
    })
    .await;
    for (key, seqs) in &complete {
        assert!(
            seqs.windows(2).all(|w| w[0] <= w[1]),
            "{label} {key}: updates out of order: {seqs:?}"
        );
        let mut distinct = seqs.clone();
        distinct.dedup();
        assert_eq!(
            distinct,
            (0..updates).collect::<Vec<_>>(),
            "{label} {key}: a gap"
        );
    }
}

/// Fails about 30% of requests with a 500, by a fixed pseudo-random function of the request's
/// number (the same run every time).
fn flaky(_: &Value, request: usize) -> u16 {
    let draw = (request as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 57;
    if draw < 38 {
        500
    } else {
        200
    }
}

/// ByKey: 20 keys × 12 updates, published interleaved in batches through ingest, a receiver
/// that fails ~30% of requests, and the dispatcher killed with SIGKILL halfway and restarted on
/// its store. Every key's updates arrive complete and in order; a repeat (an attempt in flight
/// at the kill, made again) only ever repeats the update just received.
#[tokio::test]
async fn by_key_order_survives_random_failures_and_kill_9() {
    let setup = Setup::new_without_dispatcher("order-kill").await;
    let receiver = Receiver::start(Behavior::decide(flaky)).await;
    let policy = json!({
        "ordering": {"mode": "ByKey", "key": "data.user.id"},
        "rateLimit": {"requestsPerMinute": 600000, "burst": 1000},
        "retryPolicy": {"maxAttempts": 20, "baseDelay": "50ms", "maxDelay": "200ms", "jitter": 0},
        "circuitBreaker": {"failureThreshold": 1000},
    });
    setup.endpoint("crm", &receiver, policy).await;
    let http = webhook_operator::runtime::tls::http_client();
    let (mut first, api, metrics) = start_dispatcher(&setup, "d1");
    wait_until_ready(&http, &metrics).await;
    let (keys, updates) = (20, 12);
    for seq in 0..updates / 2 {
        let batch = (0..keys).map(|key| update(key, seq)).collect();
        publish_batch(&http, &api, &setup.ns.name, batch).await;
    }
    // Let some deliveries be in flight, then crash.
    wait_for("some deliveries", T, || async {
        (receiver.received().len() > 20).then_some(())
    })
    .await;
    first.kill();
    let (_second, api, metrics) = start_dispatcher(&setup, "d2");
    wait_until_ready(&http, &metrics).await;
    for seq in updates / 2..updates {
        let batch = (0..keys).map(|key| update(key, seq)).collect();
        publish_batch(&http, &api, &setup.ns.name, batch).await;
    }
    assert_complete_in_order(&receiver, keys, updates, "crm").await;
    assert!(
        receiver.requests() > receiver.received().len(),
        "the receiver did fail some requests"
    );
    assert!(receiver.received().iter().all(|r| r.verified));
}

/// A receiver that refuses (400, not retried) the update with `seq == 2` while `refusing` is set.
fn refuses_seq_2(refusing: Arc<AtomicBool>) -> Behavior {
    Behavior::decide(move |body, _| {
        let bad = body["data"]["seq"].as_u64() == Some(2) && refusing.load(Ordering::SeqCst);
        if bad {
            400
        } else {
            200
        }
    })
}

fn seqs_received(receiver: &Receiver) -> Vec<u64> {
    receiver
        .received()
        .iter()
        .map(|r| key_and_seq(r).1)
        .collect()
}

/// Strict order and a dead letter in the middle: with `Continue` the lane goes on past it; with
/// `Pause` the endpoint stops (status, the `Paused` column, an Event), later events wait, and the
/// resume annotation naming the event sends it again first, then the rest in order.
#[tokio::test]
async fn a_dead_letter_continues_or_pauses_until_resumed() {
    let setup = Setup::new_without_dispatcher("order-pause").await;
    let refusing = Arc::new(AtomicBool::new(true));
    let continuing = Receiver::start(refuses_seq_2(refusing.clone())).await;
    let pausing = Receiver::start(refuses_seq_2(refusing.clone())).await;
    let strict = |on_dead_letter: &str| {
        json!({
            "ordering": {"mode": "Strict", "onDeadLetter": on_dead_letter},
            "rateLimit": {"requestsPerMinute": 600000, "burst": 1000},
        })
    };
    setup
        .endpoint_for_types("goes-on", &continuing, &["user.*"], strict("Continue"))
        .await;
    setup
        .endpoint_for_types("stops", &pausing, &["user.*"], strict("Pause"))
        .await;
    let http = webhook_operator::runtime::tls::http_client();
    let (_dispatcher, api, metrics) = start_dispatcher(&setup, "d1");
    wait_until_ready(&http, &metrics).await;
    let ids = publish_batch(
        &http,
        &api,
        &setup.ns.name,
        (0..6).map(|seq| update(1, seq)).collect(),
    )
    .await;

    wait_for(
        "the continuing endpoint past its dead letter",
        T,
        || async { (seqs_received(&continuing) == [0, 1, 3, 4, 5]).then_some(()) },
    )
    .await;

    let endpoints = setup.ns.api::<WebhookEndpoint>();
    let paused = wait_for("the pausing endpoint paused", T, || async {
        let endpoint = endpoints.get("stops").await.ok()?;
        let ordering = endpoint.status?.ordering?;
        ordering.paused.then_some(ordering)
    })
    .await;
    let by = paused.paused_by.expect("pausedBy");
    assert_eq!(by.event_id, ids[2]);
    assert!(by.reason.contains("400"), "{}", by.reason);
    assert_eq!(paused.queued, 3, "seq 3, 4 and 5 wait");
    assert_eq!(seqs_received(&pausing), [0, 1]);
    let (_, table) = kubectl(&["get", "webhookendpoints", "-n", &setup.ns.name], "");
    let row = table
        .lines()
        .find(|l| l.starts_with("stops"))
        .unwrap_or_default();
    assert!(row.contains("true"), "the Paused column: {table}");
    let events = setup.ns.api::<K8sEvent>();
    wait_for("the OrderedDeliveryPaused Event", T, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("OrderedDeliveryPaused")
                && e.note.as_deref().unwrap_or_default().contains(&ids[2])
        })
    })
    .await;

    // A stale annotation naming another event changes nothing.
    let annotate = |value: String| {
        Patch::Merge(json!({"metadata": {"annotations": {"webhooks.pitchey.io/resume": value}}}))
    };
    endpoints
        .patch("stops", &PatchParams::default(), &annotate(ids[0].clone()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(seqs_received(&pausing), [0, 1]);

    // Fixed receiver; retry the dead letter first, then the rest in order.
    refusing.store(false, Ordering::SeqCst);
    endpoints
        .patch(
            "stops",
            &PatchParams::default(),
            &annotate(format!("retry:{}", ids[2])),
        )
        .await
        .unwrap();
    wait_for("every update at the resumed endpoint", T, || async {
        (seqs_received(&pausing) == [0, 1, 2, 3, 4, 5]).then_some(())
    })
    .await;
    wait_for("the pause cleared from status", T, || async {
        let ordering = endpoints.get("stops").await.ok()?.status?.ordering?;
        (!ordering.paused && ordering.queued == 0).then_some(())
    })
    .await;
}

/// The same on PostgreSQL with two replicas: 4 ByKey endpoints (spread over both replicas'
/// partitions), 10 keys × 10 updates each, published through both replicas' ingest in turn (each
/// batch after the previous one's 202), receivers failing ~30%, and one replica killed with
/// SIGKILL after a third. The survivor takes its partitions over; every key's updates arrive
/// complete and in order.
#[tokio::test]
async fn by_key_order_holds_across_replicas_when_one_is_killed() {
    let setup = Setup::new_without_dispatcher("order-pg").await;
    let mut replicas = Replicas::start(&setup.ns.name, &["d1", "d2"]);
    wait_for_holders(&setup, &["d1", "d2"], T).await;
    let policy = json!({
        "ordering": {"mode": "ByKey", "key": "data.user.id"},
        "rateLimit": {"requestsPerMinute": 600000, "burst": 1000},
        "retryPolicy": {"maxAttempts": 20, "baseDelay": "50ms", "maxDelay": "200ms", "jitter": 0},
        "circuitBreaker": {"failureThreshold": 1000},
    });
    let mut receivers = Vec::new();
    for i in 0..4 {
        let receiver = Receiver::start(Behavior::decide(flaky)).await;
        setup
            .endpoint(&format!("ep{i}"), &receiver, policy.clone())
            .await;
        receivers.push(receiver);
    }
    let http = webhook_operator::runtime::tls::http_client();
    let (keys, updates) = (10, 10);
    for seq in 0..updates {
        if seq == updates / 3 {
            let (mut d1, _) = replicas.processes.remove("d1").unwrap();
            d1.kill();
        }
        let urls = replicas.ingest_urls();
        let api = &urls[seq as usize % urls.len()];
        let batch = (0..keys).map(|key| update(key, seq)).collect();
        publish_batch(&http, api, &setup.ns.name, batch).await;
    }
    for (i, receiver) in receivers.iter().enumerate() {
        assert_complete_in_order(receiver, keys, updates, &format!("ep{i}")).await;
    }
}

/// WebhookEvents created while no dispatcher runs are taken in creation order when it starts,
/// not in the API server's list order (by name: `e10` before `e2`).
#[tokio::test]
async fn webhook_events_created_while_down_are_delivered_in_creation_order() {
    let setup = Setup::new_without_dispatcher("order-events").await;
    let receiver = Receiver::start(Behavior::Ok).await;
    let strict = json!({
        "ordering": {"mode": "Strict"},
        "rateLimit": {"requestsPerMinute": 600000, "burst": 1000},
    });
    setup.endpoint("crm", &receiver, strict).await;
    for seq in 0..12u64 {
        setup
            .event(
                &format!("e{seq}"),
                "user.updated",
                json!({"user": {"id": "u1"}, "seq": seq}),
            )
            .await;
    }
    let http = webhook_operator::runtime::tls::http_client();
    let (_dispatcher, _, metrics) = start_dispatcher(&setup, "d1");
    wait_until_ready(&http, &metrics).await;
    wait_for("all twelve at the receiver", T, || async {
        (receiver.received().len() >= 12).then_some(())
    })
    .await;
    assert_eq!(seqs_received(&receiver), (0..12).collect::<Vec<_>>());
}
