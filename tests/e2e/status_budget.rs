//! The status write budget (`--status-writes-per-second`) against the real control plane: with
//! one write a round, endpoints changed together wait their turn, the backlog gauge shows them,
//! and every one of them is written in the end.
use kube::api::Api;
use serde_json::json;
use webhook_operator::api::WebhookEndpoint;

use crate::dispatcher::Setup;
use crate::ingest::wait_until_ready;
use crate::receiver::{Behavior, Receiver};
use crate::support::{metric, scrape, wait_for, Process};

const T: std::time::Duration = std::time::Duration::from_secs(90);
const ENDPOINTS: usize = 5;

/// `webhook_operator_dispatcher_status_writes_waiting` now.
async fn waiting(http: &reqwest::Client, metrics: &str) -> Option<f64> {
    let page = scrape(http, &format!("http://{metrics}/metrics")).await;
    metric(
        &page,
        "webhook_operator_dispatcher_status_writes_waiting",
        &[],
    )
}

#[tokio::test]
async fn a_status_write_budget_makes_endpoints_wait_their_turn_and_loses_none() {
    let setup = Setup::new_without_dispatcher("budget").await;
    let mut receivers = Vec::new();
    for i in 0..ENDPOINTS {
        let receiver = Receiver::start(Behavior::Ok).await;
        setup.endpoint(&format!("r{i}"), &receiver, json!({})).await;
        receivers.push(receiver);
    }
    let store = setup.store_path().display().to_string();
    let (_dispatcher, _listen, metrics) = Process::dispatcher_with(
        &setup.ns.name,
        "d1",
        &["--store-path", &store, "--status-writes-per-second", "1"],
    );
    let http = webhook_operator::runtime::tls::http_client();
    wait_until_ready(&http, &metrics).await;
    setup
        .event("e1", "user.created", json!({"user": {"id": 1}}))
        .await;
    // Every endpoint became dirty at once (first seen, then delivered to), one is written a
    // round: the rest wait, and the gauge says so.
    let backlog = wait_for("a status backlog", T, || async {
        waiting(&http, &metrics).await.filter(|w| *w >= 1.0)
    })
    .await;
    assert!(
        backlog < ENDPOINTS as f64,
        "at most all but the one written"
    );
    // Nothing is lost: each endpoint's counters reach its status in turn.
    let endpoints: Api<WebhookEndpoint> = setup.ns.api();
    for (i, receiver) in receivers.iter().enumerate() {
        let name = format!("r{i}");
        wait_for(&format!("{name}'s delivery in its status"), T, || async {
            let delivery = endpoints.get(&name).await.ok()?.status?.delivery?;
            (delivery.total_delivered == 1).then_some(())
        })
        .await;
        assert_eq!(receiver.requests(), 1);
    }
    wait_for("the backlog to drain", T, || async {
        waiting(&http, &metrics).await.filter(|w| *w == 0.0)
    })
    .await;
}
