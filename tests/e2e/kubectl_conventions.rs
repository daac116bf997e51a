//! kubectl and kstatus conventions on every kind: `kubectl wait --for=condition=Ready` (and
//! `Delivered` on a WebhookEvent), a `Status` column with the Ready (or Delivered) message, more
//! columns with `-o wide`, and conditions that name the generation they describe.
use std::time::Duration;

use serde_json::json;
use webhook_operator::api::WebhookEndpoint;

use crate::dispatcher::Setup;
use crate::receiver::{Behavior, Receiver};
use crate::support::kubectl;

async fn kubectl_async(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kubectl(&args, "")
    })
    .await
    .unwrap()
}

async fn run(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["-n".to_owned(), ns.to_owned()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let (ok, out) = kubectl_async(all).await;
    assert!(ok, "kubectl {args:?}: {out}");
    out
}

#[tokio::test]
async fn kubectl_wait_and_wide_columns_on_every_kind() {
    let setup = Setup::new("conventions").await;
    let ns = setup.ns.name.clone();
    let receiver = Receiver::start(Behavior::Ok).await;
    setup.endpoint("crm", &receiver, json!({})).await;
    setup
        .event("hello", "user.created", json!({"user": {"id": 1}}))
        .await;

    for (what, condition) in [
        ("webhookendpoint/crm", "Ready"),
        ("webhooksubscription/crm-all", "Ready"),
        ("webhookevent/hello", "Ready"),
        ("webhookevent/hello", "Delivered"),
    ] {
        let out = run(
            &ns,
            &[
                "wait",
                &format!("--for=condition={condition}"),
                "--timeout=60s",
                what,
            ],
        )
        .await;
        assert!(out.contains("condition met"), "{what}: {out}");
    }
    setup.replay("again", "crm", &["Delivered"]).await;
    run(
        &ns,
        &[
            "wait",
            "--for=condition=Ready",
            "--timeout=60s",
            "webhookreplay/again",
        ],
    )
    .await;

    // Status columns by default; more with -o wide.
    let endpoints = run(&ns, &["get", "webhookendpoints"]).await;
    assert!(
        endpoints.lines().next().unwrap().contains("STATUS"),
        "{endpoints}"
    );
    assert!(
        endpoints.contains("are in place"),
        "the Ready message: {endpoints}"
    );
    let wide = run(&ns, &["get", "webhookendpoints", "-o", "wide"]).await;
    let header = wide.lines().next().unwrap();
    for column in ["HEALTH", "PENDING", "RATE/MIN"] {
        assert!(header.contains(column), "{column} in {header}");
        assert!(
            !endpoints.lines().next().unwrap().contains(column),
            "{column} only with -o wide"
        );
    }
    let events = run(&ns, &["get", "webhookevents", "-o", "wide"]).await;
    assert!(
        events.contains("deliveries delivered, 0 dead-lettered"),
        "the Delivered message: {events}"
    );
    assert!(
        events.contains("evt_"),
        "the event id with -o wide: {events}"
    );
    let replays = run(&ns, &["get", "webhookreplays", "-o", "wide"]).await;
    assert!(
        replays.lines().next().unwrap().contains("MATCHED"),
        "{replays}"
    );
    assert!(replays.contains("1 matched, 1 redelivered"), "{replays}");
    let subscriptions = run(&ns, &["get", "webhooksubscriptions", "-o", "wide"]).await;
    assert!(
        subscriptions.lines().next().unwrap().contains("SUSPENDED"),
        "{subscriptions}"
    );

    // Conditions name the generation they describe; a spec change is observed again.
    let endpoints_api = setup.ns.api::<WebhookEndpoint>();
    endpoints_api
        .patch(
            "crm",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"description": "changed"}})),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let endpoint = endpoints_api.get("crm").await.unwrap();
        let generation = endpoint.metadata.generation;
        let ready = endpoint
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
        if generation == Some(2) && ready.is_some_and(|c| c.observed_generation == Some(2)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Ready never observed generation 2"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let replay = run(
        &ns,
        &[
            "get",
            "webhookreplay/again",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].observedGeneration}",
        ],
    )
    .await;
    assert_eq!(replay.trim(), "1");
}
