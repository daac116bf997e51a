//! The exact requests a reconcile makes, against the scripted API server of [`super::fixtures`].
use std::time::Duration;

use kube::runtime::controller::Action;
use serde_json::{json, Value};

use super::endpoint;
use super::fixtures::{api_server, context, Answer};
use crate::api::WebhookEndpoint;

/// An endpoint `bad` in namespace `ns` whose custom header is one the dispatcher sets itself.
fn invalid_endpoint(status: Value) -> WebhookEndpoint {
    serde_json::from_value(json!({
        "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookEndpoint",
        "metadata": {"name": "bad", "namespace": "ns", "uid": "u-1", "generation": 2},
        "spec": {"url": "https://crm.example.com/hooks", "headers": {"X-Webhook-Signature": "forged"}},
        "status": status,
    }))
    .unwrap()
}

const STATUS_PATH: &str =
    "/apis/webhooks.pitchey.io/v1alpha1/namespaces/ns/webhookendpoints/bad/status?";

#[tokio::test]
async fn an_invalid_spec_is_announced_once_and_reported_in_status() {
    let endpoint = invalid_endpoint(json!({}));
    let (ctx, handle) = context();
    let server = api_server(
        handle,
        vec![
            Answer::Echo,
            Answer::Json(serde_json::to_value(&endpoint).unwrap()),
        ],
    );
    let reconciled = tokio::time::timeout(
        Duration::from_secs(10),
        endpoint::reconcile(std::sync::Arc::new(endpoint), ctx),
    )
    .await
    .expect("the reconcile made a request the script does not answer");
    assert_eq!(reconciled.unwrap(), Action::await_change());
    let seen = server.await.unwrap();
    assert_eq!(seen.len(), 2, "{seen:#?}");

    // 1. A Warning Event about the endpoint.
    assert_eq!(seen[0].method, http::Method::POST);
    assert!(
        seen[0]
            .uri
            .starts_with("/apis/events.k8s.io/v1/namespaces/ns/events"),
        "{}",
        seen[0].uri
    );
    assert_eq!(seen[0].body["reason"], "InvalidSpec");
    assert_eq!(seen[0].body["type"], "Warning");
    assert_eq!(seen[0].body["regarding"]["name"], "bad");

    // 2. Its status, by server-side apply under the controller's field manager: nothing else
    //    (no Secret, no ConfigMap) for an invalid spec.
    assert_eq!(seen[1].method, http::Method::PATCH);
    assert!(seen[1].uri.starts_with(STATUS_PATH), "{}", seen[1].uri);
    assert!(seen[1]
        .uri
        .contains("fieldManager=webhook-operator-controller"));
    assert!(seen[1].uri.contains("force=true"));
    let status = &seen[1].body["status"];
    assert_eq!(status["observedGeneration"], 2);
    let ready = &status["conditions"][0];
    assert_eq!(
        (&ready["type"], &ready["status"], &ready["reason"]),
        (&json!("Ready"), &json!("False"), &json!("InvalidSpec"))
    );
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("spec.headers[X-Webhook-Signature]"),
        "{message}"
    );
}

#[tokio::test]
async fn an_invalid_spec_already_reported_is_not_announced_again() {
    // First reconcile: what it wrote is what the object now carries.
    let (ctx, handle) = context();
    let first = invalid_endpoint(json!({}));
    let server = api_server(
        handle,
        vec![
            Answer::Echo,
            Answer::Json(serde_json::to_value(&first).unwrap()),
        ],
    );
    endpoint::reconcile(std::sync::Arc::new(first), ctx)
        .await
        .unwrap();
    let written = server.await.unwrap().remove(1).body["status"].clone();

    let (ctx, handle) = context();
    let reported = invalid_endpoint(written);
    let server = api_server(
        handle,
        vec![Answer::Json(serde_json::to_value(&reported).unwrap())],
    );
    tokio::time::timeout(
        Duration::from_secs(10),
        endpoint::reconcile(std::sync::Arc::new(reported), ctx),
    )
    .await
    .expect("an Event was published again (a request the script does not answer)")
    .unwrap();
    let seen = server.await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, http::Method::PATCH);
    assert!(seen[0].uri.starts_with(STATUS_PATH), "{}", seen[0].uri);
}

#[tokio::test]
async fn an_invalid_subscription_is_announced_and_reported_without_resolving_anything() {
    use crate::api::WebhookSubscription;
    let subscription: WebhookSubscription = serde_json::from_value(json!({
        "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookSubscription",
        "metadata": {"name": "orders", "namespace": "ns", "uid": "u-2", "generation": 1},
        "spec": {"endpointRef": {"name": ""}, "eventTypes": ["order..created"]},
    }))
    .unwrap();
    let (ctx, handle) = context();
    let server = api_server(
        handle,
        vec![
            Answer::Echo,
            Answer::Json(serde_json::to_value(&subscription).unwrap()),
        ],
    );
    let reconciled = tokio::time::timeout(
        Duration::from_secs(10),
        super::subscription::reconcile(std::sync::Arc::new(subscription), ctx),
    )
    .await
    .expect("the reconcile made a request the script does not answer (it must not list endpoints)");
    assert_eq!(reconciled.unwrap(), Action::await_change());
    let seen = server.await.unwrap();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[0].method, http::Method::POST);
    assert_eq!(seen[0].body["reason"], "InvalidSpec");
    assert_eq!(seen[1].method, http::Method::PATCH);
    assert!(
        seen[1].uri.starts_with(
            "/apis/webhooks.pitchey.io/v1alpha1/namespaces/ns/webhooksubscriptions/orders/status?"
        ),
        "{}",
        seen[1].uri
    );
    let ready = &seen[1].body["status"]["conditions"][0];
    assert_eq!(ready["reason"], "InvalidSpec");
    let message = ready["message"].as_str().unwrap();
    assert!(message.contains("spec.endpointRef.name"), "{message}");
    assert!(message.contains("spec.eventTypes"), "{message}");
}
