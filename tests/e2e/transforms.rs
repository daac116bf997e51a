//! Transforms (`spec.transform.jq`) end to end: a program reshapes the body (and the reshaped
//! bytes are what is signed), drops events (`Filtered`), and its failures stay its own: a program
//! that loops forever and one that raises errors are dead-lettered with `transform: …` while
//! another endpoint keeps receiving. A program that does not compile is refused at apply time,
//! with its position. The preview route runs programs on samples, stored events and drafts.
use std::time::Duration;

use kube::api::PostParams;
use reqwest::StatusCode;
use serde_json::{json, Value};
use webhook_operator::api::conditions::{self, ConditionStatus};
use webhook_operator::api::event::EventPhase;
use webhook_operator::api::{WebhookEndpoint, WebhookEvent};

use crate::dispatcher::Setup;
use crate::ingest::{answer, wait_until_ready, ADMIN};
use crate::receiver::{Behavior, Receiver};
use crate::support::{wait_for, Process};

const T: Duration = Duration::from_secs(60);

/// The delivery of `event` to `endpoint`, as the WebhookEvent's status shows it.
async fn delivery_of(
    setup: &Setup,
    event: &str,
    endpoint: &str,
) -> webhook_operator::api::event::EventDeliveryStatus {
    let api = setup.ns.api::<WebhookEvent>();
    let event = api.get(event).await.unwrap();
    event
        .status
        .unwrap()
        .deliveries
        .into_iter()
        .find(|d| d.endpoint == endpoint)
        .unwrap_or_else(|| panic!("no delivery to {endpoint}"))
}

#[tokio::test]
async fn transforms_reshape_filter_and_fail_alone() {
    let setup = Setup::new_without_dispatcher("transform").await;
    let store = tempfile::tempdir().unwrap();
    let store_path = store.path().join("d.db").display().to_string();
    let (_dispatcher, listen, metrics) = Process::dispatcher_with(
        &setup.ns.name,
        "d1",
        // One attempt in flight per endpoint: the deliveries behind it wait, and have their
        // transforms run ahead while they do (engine/ahead.rs).
        &[
            "--store-path",
            &store_path,
            "--transform-timeout",
            "500ms",
            "--per-endpoint-concurrency",
            "1",
        ],
    );
    let http = webhook_operator::runtime::tls::http_client();
    wait_until_ready(&http, &metrics).await;

    let shaped = Receiver::start(Behavior::Ok).await;
    let looping = Receiver::start(Behavior::Ok).await;
    let failing = Receiver::start(Behavior::Ok).await;
    let shape = r#"select(.data.event_type != "user.deleted")
        | {kind: .data.event_type, id: .data.user.id, sent_for: .webhook.id}"#;
    setup
        .endpoint("shaped", &shaped, json!({"transform": {"jq": shape}}))
        .await;
    setup
        .endpoint(
            "looping",
            &looping,
            json!({"transform": {"jq": "def f: f; f"}}),
        )
        .await;
    setup
        .endpoint(
            "failing",
            &failing,
            json!({"transform": {"jq": ".data.user.id | ascii_downcase"}}),
        )
        .await;

    // A program that does not compile is refused when applied, with the position.
    let typo: WebhookEndpoint = serde_json::from_value(json!({
        "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookEndpoint",
        "metadata": {"name": "typo"},
        "spec": {"url": shaped.url(), "transform": {"jq": "{id: .data.user.id\n  | tostrin}"}}
    }))
    .unwrap();
    let endpoints = setup.ns.api::<WebhookEndpoint>();
    endpoints
        .create(&PostParams::default(), &typo)
        .await
        .unwrap();
    let ready = wait_for("typo: Ready=False", T, || async {
        let status = endpoints.get("typo").await.ok()?.status?;
        let ready = conditions::find(&status.conditions, "Ready")?.clone();
        (ready.status == ConditionStatus::False).then_some(ready)
    })
    .await;
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(
        ready
            .message
            .contains("spec.transform.jq: line 2, column 5: undefined filter tostrin"),
        "{}",
        ready.message
    );

    for (name, event_type, id) in [
        ("created-1", "user.created", 1),
        ("deleted-2", "user.deleted", 2),
        ("created-3", "user.created", 3),
        ("updated-4", "user.updated", 4),
    ] {
        setup
            .event(name, event_type, json!({"user": {"id": id}}))
            .await;
    }

    // Every event to keep reached the shaped endpoint, reshaped and signed over the new bytes,
    // however long the looping program held a worker.
    let got = wait_for("three reshaped deliveries", T, || async {
        let got = shaped.received();
        (got.len() >= 3).then_some(got)
    })
    .await;
    let mut bodies: Vec<Value> = got.iter().map(|r| r.body.clone()).collect();
    bodies.sort_by_key(|b| b["id"].as_i64());
    let sent_for = format!("{}/shaped", setup.ns.name);
    assert_eq!(
        bodies,
        vec![
            json!({"kind": "user.created", "id": 1, "sent_for": sent_for}),
            json!({"kind": "user.created", "id": 3, "sent_for": sent_for}),
            json!({"kind": "user.updated", "id": 4, "sent_for": sent_for}),
        ]
    );
    assert!(
        got.iter().all(|r| r.verified),
        "the transformed body is what is signed"
    );

    // The dropped event is Filtered: finished, not failed, not sent.
    setup
        .event_phase("deleted-2", EventPhase::PartiallyFailed)
        .await;
    let filtered = delivery_of(&setup, "deleted-2", "shaped").await;
    assert_eq!(filtered.state, "Filtered");
    assert_eq!(filtered.last_error, None);
    let stopped = delivery_of(&setup, "deleted-2", "looping").await;
    assert_eq!(stopped.state, "DeadLettered");
    assert_eq!(stopped.attempts, 1, "a transform failure is not retried");
    let reason = stopped.last_error.unwrap_or_default();
    assert!(
        reason.starts_with("transform: the program ran longer than 500ms"),
        "{reason}"
    );
    let raised = delivery_of(&setup, "deleted-2", "failing").await;
    assert_eq!(raised.state, "DeadLettered");
    let reason = raised.last_error.unwrap_or_default();
    assert!(reason.starts_with("transform: "), "{reason}");
    assert!(looping.received().is_empty() && failing.received().is_empty());

    // Counted in status and in the history.
    let total_filtered = wait_for("status.delivery.totalFiltered", T, || async {
        let status = endpoints.get("shaped").await.ok()?.status?;
        let filtered = status.delivery?.total_filtered;
        (filtered >= 1).then_some(filtered)
    })
    .await;
    assert_eq!(total_filtered, 1);
    let api = format!("http://{listen}/v1/namespaces/{}", setup.ns.name);
    let (code, history) = answer(
        http.get(format!("{api}/endpoints/shaped/deliveries"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let outcomes: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["outcome"].as_str())
        .collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "filtered").count(), 1);
    assert_eq!(outcomes.iter().filter(|o| **o == "delivered").count(), 3);

    // Preview: the endpoint's program on a catalog sample, on a stored event, and drafts.
    let preview = |endpoint: &'static str, body: Value| {
        let request = http
            .post(format!("{api}/endpoints/{endpoint}/transform:preview"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send();
        async move { answer(request.await.unwrap()).await }
    };
    let (code, sample) = preview("shaped", json!({"event_type": "user.created"})).await;
    assert_eq!(code, StatusCode::OK, "{sample}");
    assert_eq!(sample["result"], "body");
    assert_eq!(
        sample["output"],
        json!({"kind": "user.created", "id": 123, "sent_for": sent_for})
    );
    assert_eq!(sample["input"]["data"]["event_type"], "user.created");
    let event_id = setup
        .ns
        .api::<WebhookEvent>()
        .get("created-3")
        .await
        .unwrap()
        .status
        .unwrap()
        .event_id
        .unwrap();
    let (_, stored) = preview("shaped", json!({"event_id": event_id})).await;
    assert_eq!(stored["output"]["id"], 3);
    assert_eq!(stored["input"]["event_id"], event_id.as_str());
    let (_, dropped) = preview("shaped", json!({"event_type": "user.deleted"})).await;
    assert_eq!(
        (dropped["result"].as_str(), &dropped["output"]),
        (Some("filtered"), &Value::Null)
    );
    let (_, draft) = preview(
        "looping",
        json!({"event_type": "pitch.published", "program": "{title: .data.pitch.title}"}),
    )
    .await;
    assert_eq!(draft["output"], json!({"title": "The Difference Engine"}));
    let (_, endless) = preview("looping", json!({"event_type": "user.created"})).await;
    assert_eq!(endless["result"], "error");
    assert!(
        endless["error"]
            .as_str()
            .unwrap_or_default()
            .contains("ran longer than 500ms"),
        "{endless}"
    );
    let (code, bad) = preview("shaped", json!({"event_type": "nope"})).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(bad["error"]["field"], "event_type");
    let (code, _) = preview("shaped", json!({"event_id": "evt_not_stored"})).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}
