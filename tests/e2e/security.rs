//! The security log end to end: a refused destination recorded with its address, bursts of bad
//! tokens, repeated refusals and a refused destination after successes raised as alerts (a
//! record, a Kubernetes Event, a metric), and the API route's access rules.
use std::time::Duration;

use k8s_openapi::api::events::v1::Event as EventV1;
use serde_json::{json, Value};
use webhook_operator::api::WebhookEndpoint;

use crate::dispatcher::Setup;
use crate::receiver::{Behavior, Receiver};
use crate::support::{scrape, wait_for, Process};

const T: Duration = Duration::from_secs(30);

async fn get(http: &reqwest::Client, url: &str, token: &str) -> (u16, Value) {
    let response = http.get(url).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn records(http: &reqwest::Client, listen: &str, ns: &str, kind: &str) -> Vec<Value> {
    let url = format!("http://{listen}/v1/namespaces/{ns}/security-events?kind={kind}");
    let (status, body) = get(http, &url, "test-admin-token").await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

async fn namespace_event(setup: &Setup, reason: &str) -> Option<EventV1> {
    let list = setup
        .ns
        .api::<EventV1>()
        .list(&Default::default())
        .await
        .ok()?;
    list.items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some(reason))
}

#[tokio::test]
async fn refusals_and_bad_tokens_are_logged_and_alerted() {
    let setup = Setup::new_without_dispatcher("security").await;
    let ns = setup.ns.name.clone();
    let store = setup.store_path().display().to_string();
    let (_dispatcher, listen, metrics) = Process::dispatcher_with(
        &ns,
        "d1",
        &[
            "--store-path",
            &store,
            "--egress-deny-cidr",
            "127.0.0.66/32",
        ],
    );
    let http = webhook_operator::runtime::tls::http_client();
    let receiver = Receiver::start(Behavior::Ok).await;

    // An endpoint that delivers, then is pointed at a refused address: a refused destination
    // after successes (the DNS rebinding alert), and five refusals (repeated refusals).
    setup
        .endpoint(
            "moving",
            &receiver,
            json!({"retryPolicy": {"maxAttempts": 0, "immediateRetry": false}}),
        )
        .await;
    setup
        .event("first", "user.created", json!({"user": {"id": 1}}))
        .await;
    wait_for("the first delivery", T, || async {
        (receiver.requests() >= 1).then_some(())
    })
    .await;
    setup
        .ns
        .api::<WebhookEndpoint>()
        .patch(
            "moving",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"url": "http://127.0.0.66:9/hook"}})),
        )
        .await
        .unwrap();
    // The dispatcher reads the URL from the endpoint's policy ConfigMap, rewritten by the controller.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..5 {
        setup
            .event(
                &format!("refused-{i}"),
                "user.created",
                json!({"user": {"id": i}}),
            )
            .await;
    }

    let refused = wait_for("refused destinations in the security log", T, || async {
        let found = records(&http, &listen, &ns, "destination_refused").await;
        (found.len() >= 5).then_some(found)
    })
    .await;
    assert_eq!(refused[0]["endpoint"], "moving");
    assert_eq!(refused[0]["address"], "127.0.0.66");
    assert_eq!(refused[0]["namespace"], ns.as_str());
    for (kind, reason) in [
        ("dns_rebinding", "DnsRebinding"),
        ("repeated_refusals", "RepeatedRefusals"),
    ] {
        let alert = wait_for(kind, T, || async {
            records(&http, &listen, &ns, kind).await.into_iter().next()
        })
        .await;
        assert_eq!(alert["endpoint"], "moving", "{alert}");
        wait_for(
            &format!("the {reason} Event on the endpoint"),
            T,
            || async {
                let events = setup.ns.endpoint_events("moving").await.ok()?;
                events.into_iter().find(|e| {
                    e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some("Warning")
                })
            },
        )
        .await;
    }

    // A burst of bad tokens from one source.
    for i in 0..12 {
        let response = http
            .post(format!("http://{listen}/v1/namespaces/{ns}/events"))
            .bearer_auth(format!("not-a-token-{i}"))
            .header("content-type", "application/json")
            .body(json!({"type": "user.created", "data": {}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    let burst = wait_for("the auth failure burst", T, || async {
        records(&http, &listen, &ns, "auth_failure_burst")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(burst["source"], "127.0.0.1");
    wait_for("the 12 failures in the log", T, || async {
        let failures = records(&http, &listen, &ns, "authentication_failed").await;
        (failures.len() == 12).then_some(())
    })
    .await;
    let event = wait_for("the AuthFailureBurst Event", T, || {
        namespace_event(&setup, "AuthFailureBurst")
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(event.note.unwrap_or_default().contains("127.0.0.1"));
    let text = scrape(&http, &format!("http://{metrics}/metrics")).await;
    for alert in ["auth_failure_burst", "repeated_refusals", "dns_rebinding"] {
        let line =
            format!("webhook_operator_dispatcher_security_alerts_total{{alert=\"{alert}\"}} 1");
        assert!(text.contains(&line), "{line} missing from /metrics");
    }

    // Access: a user without rights gets 403; a namespace reader sees the namespace's entries
    // but not the whole log.
    let (status, _) = get(
        &http,
        &format!("http://{listen}/v1/namespaces/{ns}/security-events"),
        "test-nobody-token",
    )
    .await;
    assert_eq!(status, 403);
    let token = crate::dashboard::service_account(
        &ns,
        "auditor",
        "[{apiGroups: [webhooks.pitchey.io], resources: [webhookendpoints], verbs: [list]}]",
    )
    .await;
    let (status, body) = get(
        &http,
        &format!("http://{listen}/v1/namespaces/{ns}/security-events?limit=500"),
        &token,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    assert!(!items.is_empty());
    assert!(items.iter().all(|r| r["namespace"] == ns.as_str()));
    let (status, _) = get(
        &http,
        &format!("http://{listen}/v1/security-events"),
        &token,
    )
    .await;
    assert_eq!(status, 403, "the whole log needs list in every namespace");
    let (status, body) = get(
        &http,
        &format!("http://{listen}/v1/security-events?kind=nope"),
        "test-admin-token",
    )
    .await;
    assert_eq!(status, 400, "{body}");
}
