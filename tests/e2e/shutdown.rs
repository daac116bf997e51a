//! Graceful shutdown of the dispatcher: SIGTERM in the middle of an ingest load, with attempts
//! held in flight at the receiver. The attempts in flight finish and are recorded before the
//! process exits (0), nothing new starts, and after a restart every accepted event is delivered
//! exactly once.
use std::collections::{HashMap, HashSet};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::dispatcher::Setup;
use crate::ingest::{answer, wait_until_ready, ADMIN};
use crate::receiver::{Behavior, Receiver};
use crate::support::{wait_for, Process};

const T: Duration = Duration::from_secs(60);
/// Events the publisher sends at most.
const LOAD: usize = 300;
/// The dispatcher's `--shutdown-timeout-seconds` in this test.
const GRACE_SECONDS: u64 = 20;

/// Publishes `{type, data: {n}}` events one after another until `LOAD` or the first refusal
/// (the API closes on SIGTERM); returns the ids of the accepted ones (202).
async fn publish_until_refused(
    http: reqwest::Client,
    url: String,
    accepted: Arc<Mutex<Vec<String>>>,
) {
    for n in 0..LOAD {
        let response = http
            .post(&url)
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(json!({"type": "order.placed", "data": {"n": n}}).to_string())
            .send()
            .await;
        let Ok(response) = response else { return };
        if response.status() != StatusCode::ACCEPTED {
            return;
        }
        let (_, body) = answer(response).await;
        let id = body["event_id"].as_str().expect("an event_id").to_owned();
        accepted.lock().unwrap().push(id);
    }
}

/// Waits (bounded) for the process to exit; its exit status.
async fn exit_status(process: &mut Process, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = process
            .child
            .try_wait()
            .expect("waiting for the dispatcher")
        {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the dispatcher did not exit within {within:?} of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How often the receiver got each event id.
fn counts(receiver: &Receiver) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for received in receiver.received() {
        *counts.entry(received.event_id).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn sigterm_finishes_attempts_in_flight_and_resends_nothing() {
    let setup = Setup::new_without_dispatcher("shutdown").await;
    // Held until released: the dispatcher's attempts stay in flight until the test says.
    let receiver = Receiver::start(Behavior::Hang).await;
    setup
        .endpoint(
            "crm",
            &receiver,
            json!({"rateLimit": {"requestsPerMinute": 600000, "burst": 1000}}),
        )
        .await;
    let store = setup.store_path().display().to_string();
    let grace = GRACE_SECONDS.to_string();
    let args = [
        "--store-path",
        store.as_str(),
        "--shutdown-timeout-seconds",
        grace.as_str(),
    ];
    let (mut first, listen, metrics) = Process::dispatcher_with(&setup.ns.name, "d1", &args);
    let http = webhook_operator::runtime::tls::http_client();
    wait_until_ready(&http, &metrics).await;

    // The load: published while the first attempts hang at the receiver.
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let url = format!("http://{listen}/v1/namespaces/{}/events", setup.ns.name);
    let publisher = tokio::spawn(publish_until_refused(http.clone(), url, accepted.clone()));
    wait_for("attempts in flight and a load stored", T, || async {
        let stored = accepted.lock().unwrap().len();
        // The endpoint's attempts in flight are all taken (--per-endpoint-concurrency 16).
        (receiver.requests() >= 16 && stored >= LOAD / 2).then_some(())
    })
    .await;

    assert!(first.sigterm(), "kill -TERM failed");
    // Not ready (or no longer listening) once the shutdown began; the stop is seen by then.
    let readyz = format!("http://{metrics}/readyz");
    wait_for("/readyz to stop answering 200", T, || async {
        let ready = http
            .get(&readyz)
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        (!ready).then_some(())
    })
    .await;
    let in_flight_at_stop = receiver.requests();
    assert!(receiver.received().is_empty(), "nothing answered yet");
    // The attempts in flight may now finish: within the grace period, during the drain.
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.release();
    let status = exit_status(&mut first, Duration::from_secs(GRACE_SECONDS + 10)).await;
    assert!(status.success(), "a graceful stop exits 0: {status}");
    publisher.await.unwrap();
    let finished_at_stop = receiver.received().len();
    assert_eq!(
        finished_at_stop, in_flight_at_stop,
        "the attempts in flight at SIGTERM finished, and no new one started after it"
    );

    // The restart delivers the rest, and nothing the first process finished again.
    let (_second, listen, _) = Process::dispatcher_with(&setup.ns.name, "d2", &args);
    let accepted: HashSet<String> = accepted.lock().unwrap().iter().cloned().collect();
    assert!(accepted.len() >= LOAD / 2, "{} accepted", accepted.len());
    wait_for("every accepted event at the receiver", T * 2, || async {
        let seen = counts(&receiver);
        accepted
            .iter()
            .all(|id| seen.contains_key(id))
            .then_some(())
    })
    .await;
    // A last event, due after everything else: once it arrived, any resend would have too.
    let (status, sentinel) = answer(
        http.post(format!(
            "http://{listen}/v1/namespaces/{}/events",
            setup.ns.name
        ))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(json!({"type": "order.sentinel", "data": {}}).to_string())
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{sentinel}");
    let sentinel = sentinel["event_id"].as_str().unwrap().to_owned();
    wait_for("the sentinel at the receiver", T, || async {
        counts(&receiver).contains_key(&sentinel).then_some(())
    })
    .await;
    // Attempts started in the sentinel's round may answer just after it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let duplicates: Vec<(String, usize)> = counts(&receiver)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(
        duplicates.is_empty(),
        "a graceful stop resends nothing: {duplicates:?}"
    );
    assert!(receiver.received().iter().all(|r| r.verified));
}
