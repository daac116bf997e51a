//! Requests to third-party APIs: the URL from a Secret (`urlFrom`), another method, an
//! `Authorization` header from a Secret (`headersFrom`), no signature (`signing.scheme: none`),
//! and a URL in a Secret that is not one, dead-lettered with the reason.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use webhook_operator::api::conditions::{self, ConditionStatus};
use webhook_operator::api::event::EventPhase;
use webhook_operator::api::WebhookEndpoint;

use crate::dispatcher::Setup;
use crate::receiver::{Behavior, Receiver};
use crate::support::wait_for;

async fn secret(setup: &Setup, name: &str, data: &[(&str, &str)]) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    };
    setup
        .ns
        .api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

#[tokio::test]
async fn url_method_and_token_from_secrets_without_a_signature() {
    let setup = Setup::new("thirdparty").await;
    let receiver = Receiver::start(Behavior::Ok).await;
    secret(
        &setup,
        "slack",
        &[("url", &format!("{}\n", receiver.url()))],
    )
    .await;
    secret(
        &setup,
        "api",
        &[
            ("token", "Bearer s3cr3t"),
            // Usable at first (so the endpoint is provisioned); broken below.
            ("bad-url", &receiver.url()),
        ],
    )
    .await;
    let from = |key: &str| json!({"secretKeyRef": {"name": if key == "url" { "slack" } else { "api" }, "key": key}});
    let third_party = |url_key: &str| {
        json!({
            "url": null,
            "urlFrom": from(url_key),
            "method": "PUT",
            "signing": {"scheme": "none"},
            "headersFrom": [{"name": "Authorization", "secretKeyRef": {"name": "api", "key": "token"}}],
        })
    };
    setup.endpoint_at("slack", "", third_party("url")).await;
    setup
        .endpoint_at("broken", "", third_party("bad-url"))
        .await;
    // The value turns unusable: the controller reports it (Ready=False, InvalidSpec) ...
    let secrets = setup.ns.api::<Secret>();
    let broken = json!({"stringData": {"bad-url": "ftp://files.example.com/in"}});
    secrets
        .patch("api", &PatchParams::default(), &Patch::Merge(broken))
        .await
        .unwrap();
    let endpoints = setup.ns.api::<WebhookEndpoint>();
    let ready = wait_for(
        "broken: Ready=False",
        std::time::Duration::from_secs(60),
        || async {
            let status = endpoints.get("broken").await.ok()?.status?;
            let ready = conditions::find(&status.conditions, "Ready")?.clone();
            (ready.status == ConditionStatus::False).then_some(ready)
        },
    )
    .await;
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(
        ready.message.contains("spec.urlFrom") && ready.message.contains("ftp"),
        "{}",
        ready.message
    );
    // ... and the dispatcher, which reads it again for each delivery, dead-letters instead of sending.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    setup
        .event("hello", "user.created", json!({"user": {"id": 1}}))
        .await;

    let got = wait_for(
        "the request at the receiver",
        std::time::Duration::from_secs(60),
        || async { receiver.received().into_iter().next() },
    )
    .await;
    assert_eq!(got.method, "PUT");
    assert_eq!(got.authorization.as_deref(), Some("Bearer s3cr3t"));
    assert!(
        !got.signed,
        "signing.scheme none sends no signature headers"
    );
    assert_eq!(got.body["data"]["user"]["id"], 1);

    // The URL in the other Secret is not one: dead-lettered, saying why, never sent.
    let event = setup
        .event_phase("hello", EventPhase::PartiallyFailed)
        .await;
    let broken = event
        .status
        .unwrap()
        .deliveries
        .into_iter()
        .find(|d| d.endpoint == "broken")
        .expect("a delivery to broken");
    assert_eq!(broken.state, "DeadLettered");
    let error = broken.last_error.unwrap_or_default();
    assert!(
        error.contains("urlFrom") && error.contains("ftp"),
        "{error}"
    );
    assert_eq!(receiver.received().len(), 1);
}
