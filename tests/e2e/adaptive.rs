//! Performance-adaptive rate limits end to end: a loopback receiver that becomes too slow to
//! answer within the endpoint's timeout gets its rate cut (status, condition, Event, metric),
//! and when it is fast again the rate climbs back to the configured one.
//!
//! The latency path (p95 of the last minute above 3× the last hour's) needs five minutes of
//! baseline by design; it is proved with an injected clock in `delivery::ratelimit`'s tests
//! (`a_slow_receiver_is_cut_then_recovers_additively`), not here in real time.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::ListParams;
use serde_json::json;
use webhook_operator::api::conditions::{self, ConditionStatus, RATE_REDUCED};
use webhook_operator::api::WebhookEndpoint;

use crate::dispatcher::Setup;
use crate::ingest::{wait_until_ready, ADMIN};
use crate::receiver::{Behavior, Receiver};
use crate::support::{wait_for, Process};

const CONFIGURED: i64 = 600;
/// The rate falls within this long of the receiver turning slow (stated in docs/resources.md).
const CUT_WITHIN: Duration = Duration::from_secs(20);
/// And is back at the configured rate within this long of it recovering.
const RECOVERED_WITHIN: Duration = Duration::from_secs(60);

/// The endpoint's allowed rate and its `RateReduced` condition, as status shows them.
async fn rate_and_condition(
    endpoints: &kube::Api<WebhookEndpoint>,
) -> Option<(i64, ConditionStatus, String)> {
    let status = endpoints.get("crm").await.ok()?.status?;
    let rate = status.delivery?.current_rate_per_minute?;
    let reduced = conditions::find(&status.conditions, RATE_REDUCED)?;
    Some((rate, reduced.status, reduced.reason.clone()))
}

#[tokio::test]
async fn a_receiver_that_times_out_gets_less_traffic_until_it_recovers() {
    let setup = Setup::new_without_dispatcher("adaptive").await;
    let receiver = Receiver::start(Behavior::Ok).await;
    let policy = json!({
        "timeoutSeconds": 1,
        "rateLimit": {"requestsPerMinute": CONFIGURED, "burst": 10, "adaptive": true},
        "retryPolicy": {"maxAttempts": 20, "baseDelay": "200ms", "maxDelay": "1s"},
        "circuitBreaker": {"failureThreshold": 1000},
    });
    setup.endpoint("crm", &receiver, policy).await;
    let store = setup.store_path().display().to_string();
    let (_dispatcher, listen, metrics) =
        Process::dispatcher_with(&setup.ns.name, "d1", &["--store-path", &store]);
    let http = webhook_operator::runtime::tls::http_client();
    wait_until_ready(&http, &metrics).await;

    // Steady traffic: 5 events a second for the whole test.
    let publishing = Arc::new(AtomicBool::new(true));
    let url = format!("http://{listen}/v1/namespaces/{}/events", setup.ns.name);
    let publisher = tokio::spawn({
        let (http, publishing) = (http.clone(), publishing.clone());
        async move {
            let mut n = 0;
            while publishing.load(Ordering::SeqCst) {
                let body = json!({"type": "user.login", "data": {"n": n}}).to_string();
                let _ = http
                    .post(&url)
                    .bearer_auth(ADMIN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });

    let endpoints = setup.ns.api::<WebhookEndpoint>();
    let (rate, reduced, _) = wait_for(
        "the configured rate in status",
        Duration::from_secs(60),
        || async {
            rate_and_condition(&endpoints)
                .await
                .filter(|(rate, ..)| *rate == CONFIGURED)
        },
    )
    .await;
    assert_eq!(rate, CONFIGURED);
    assert_eq!(reduced, ConditionStatus::False);

    // Too slow for the 1 s timeout.
    receiver.set_delay(Duration::from_millis(1500));
    let slow_since = Instant::now();
    let (rate, _, reason) = wait_for("the rate cut for timeouts", CUT_WITHIN, || async {
        rate_and_condition(&endpoints)
            .await
            .filter(|(rate, status, _)| *rate < CONFIGURED && *status == ConditionStatus::True)
    })
    .await;
    assert_eq!(reason, "Timeouts");
    assert!(rate <= CONFIGURED / 2, "a cut halves the rate: {rate}");
    eprintln!(
        "cut to {rate}/min {:?} after the receiver turned slow",
        slow_since.elapsed()
    );
    let events = setup.ns.api::<K8sEvent>();
    let event = wait_for("the RateReduced Event", Duration::from_secs(30), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("RateReduced"))
    })
    .await;
    assert!(
        event
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("timed out"),
        "{:?}",
        event.note
    );
    let scrape = crate::support::scrape(&http, &format!("http://{metrics}/metrics")).await;
    assert!(
        scrape.lines().any(
            |l| l.starts_with("webhook_operator_dispatcher_rate_cuts_total")
                && l.contains("reason=\"Timeouts\"")
        ),
        "no rate cut counted:\n{scrape}"
    );

    // Fast again: the rate climbs back additively.
    receiver.set_delay(Duration::ZERO);
    let recovered_since = Instant::now();
    wait_for(
        "the rate back at the configured one",
        RECOVERED_WITHIN,
        || async {
            rate_and_condition(&endpoints)
                .await
                .filter(|(rate, status, _)| {
                    *rate == CONFIGURED && *status == ConditionStatus::False
                })
        },
    )
    .await;
    eprintln!(
        "back to {CONFIGURED}/min {:?} after the receiver recovered",
        recovered_since.elapsed()
    );
    publishing.store(false, Ordering::SeqCst);
    publisher.await.unwrap();
}
