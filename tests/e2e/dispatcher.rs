//! The dispatcher against the real control plane and real receivers on loopback.
use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use webhook_operator::api::conditions::{self, CIRCUIT_OPEN};
use webhook_operator::api::endpoint::CircuitState;
use webhook_operator::api::event::EventPhase;
use webhook_operator::api::replay::ReplayPhase;
use webhook_operator::api::{WebhookEndpoint, WebhookEvent, WebhookReplay, WebhookSubscription};

use crate::receiver::{Behavior, Receiver};
use crate::support::{wait_for, Process, TestNamespace};

const T: Duration = Duration::from_secs(60);

/// A namespace with the controller and a dispatcher running.
pub struct Setup {
    pub ns: TestNamespace,
    _controller: Process,
    dispatcher: Option<Process>,
    store: tempfile::TempDir,
}

impl Setup {
    pub async fn new(prefix: &str) -> Self {
        let mut setup = Self::new_without_dispatcher(prefix).await;
        let store = setup.store.path().join("d.db");
        setup.dispatcher = Some(Process::dispatcher(&setup.ns.name, &store, "d1").0);
        setup
    }

    /// A namespace with the controller only (the test starts its dispatchers).
    pub async fn new_without_dispatcher(prefix: &str) -> Self {
        let ns = TestNamespace::new(prefix).await;
        let controller = Process::controller(&ns.name, "c", &["--allow-plain-http"]);
        Self {
            ns,
            _controller: controller,
            dispatcher: None,
            store: tempfile::tempdir().unwrap(),
        }
    }

    /// Starts the dispatcher (after [`Setup::new_without_dispatcher`]) with `extra` flags;
    /// its ingest address.
    pub fn start_dispatcher(&mut self, extra: &[&str]) -> String {
        let store = self.store_path().display().to_string();
        let mut args = vec!["--store-path", store.as_str()];
        args.extend_from_slice(extra);
        let (process, listen, _) = Process::dispatcher_with(&self.ns.name, "d1", &args);
        self.dispatcher = Some(process);
        listen
    }

    /// The SQLite store file of the dispatcher [`Setup::new`] starts.
    pub fn store_path(&self) -> std::path::PathBuf {
        self.store.path().join("d.db")
    }

    /// SIGKILLs the dispatcher started by [`Setup::new`].
    pub fn kill_dispatcher(&mut self) {
        if let Some(mut dispatcher) = self.dispatcher.take() {
            dispatcher.kill();
        }
    }

    /// An endpoint to `receiver` subscribed to `*`, Ready; the receiver learns its secret.
    pub async fn endpoint(&self, name: &str, receiver: &Receiver, extra: serde_json::Value) {
        self.endpoint_for_types(name, receiver, &["*"], extra).await;
    }

    /// An endpoint to `receiver` subscribed to `event_types`; the receiver learns its secret.
    pub async fn endpoint_for_types(
        &self,
        name: &str,
        receiver: &Receiver,
        event_types: &[&str],
        extra: serde_json::Value,
    ) {
        self.endpoint_subscribed(name, &receiver.url(), event_types, extra)
            .await;
        receiver.set_secret(&self.ns.signing_secret(name).await);
    }

    /// An endpoint to `url` subscribed to `*`, with its delivery policy provisioned.
    pub async fn endpoint_at(&self, name: &str, url: &str, extra: serde_json::Value) {
        self.endpoint_subscribed(name, url, &["*"], extra).await;
    }

    async fn endpoint_subscribed(
        &self,
        name: &str,
        url: &str,
        event_types: &[&str],
        extra: serde_json::Value,
    ) {
        let mut spec = json!({"url": url, "displayName": format!("{name} receiver")});
        merge(&mut spec, extra);
        let endpoint: WebhookEndpoint = serde_json::from_value(json!({
            "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookEndpoint",
            "metadata": {"name": name}, "spec": spec
        }))
        .unwrap();
        self.ns
            .api::<WebhookEndpoint>()
            .create(&PostParams::default(), &endpoint)
            .await
            .unwrap();
        let subscription: WebhookSubscription = serde_json::from_value(json!({
            "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookSubscription",
            "metadata": {"name": format!("{name}-all")},
            "spec": {"endpointRef": {"name": name}, "eventTypes": event_types}
        }))
        .unwrap();
        self.ns
            .api::<WebhookSubscription>()
            .create(&PostParams::default(), &subscription)
            .await
            .unwrap();
        let config_maps = self.ns.api::<k8s_openapi::api::core::v1::ConfigMap>();
        wait_for("the delivery ConfigMap", T, || async {
            config_maps
                .get_opt(&format!("{name}-delivery"))
                .await
                .ok()?
                .map(|_| ())
        })
        .await;
        // The dispatcher routes once it has seen the subscription and the ConfigMap.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    pub async fn event(&self, name: &str, event_type: &str, data: serde_json::Value) {
        let event: WebhookEvent = serde_json::from_value(json!({
            "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookEvent",
            "metadata": {"name": name}, "spec": {"type": event_type, "data": data}
        }))
        .unwrap();
        self.ns
            .api::<WebhookEvent>()
            .create(&PostParams::default(), &event)
            .await
            .unwrap();
    }

    /// Waits until the first delivery of WebhookEvent `name` is held (its endpoint suspended).
    async fn first_delivery_held(&self, name: &str) {
        wait_for("the delivery held", T, || async {
            let event = self.ns.api::<WebhookEvent>().get(name).await.ok()?;
            (event.status?.deliveries.first()?.state == "Held").then_some(())
        })
        .await;
    }

    /// Sets `spec.suspend: false` on the endpoint.
    async fn resume(&self, endpoint: &str) {
        self.ns
            .api::<WebhookEndpoint>()
            .patch(
                endpoint,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"suspend": false}})),
            )
            .await
            .unwrap();
    }

    pub async fn event_phase(&self, name: &str, phase: EventPhase) -> WebhookEvent {
        let api = self.ns.api::<WebhookEvent>();
        wait_for(&format!("{name} to be {phase:?}"), T, || async {
            let event = api.get(name).await.ok()?;
            (event.status.as_ref()?.phase? == phase).then_some(event)
        })
        .await
    }

    /// Creates WebhookReplay `name` of `endpoint`'s deliveries since 2020 with the given
    /// outcomes, and waits for it to complete; its status.
    pub async fn replay(
        &self,
        name: &str,
        endpoint: &str,
        outcomes: &[&str],
    ) -> webhook_operator::api::replay::WebhookReplayStatus {
        let replay: WebhookReplay = serde_json::from_value(json!({
            "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookReplay",
            "metadata": {"name": name},
            "spec": {"endpointRef": {"name": endpoint}, "from": "2020-01-01T00:00:00Z", "outcomes": outcomes}
        }))
        .unwrap();
        let replays = self.ns.api::<WebhookReplay>();
        replays
            .create(&PostParams::default(), &replay)
            .await
            .unwrap();
        wait_for(&format!("replay {name} to complete"), T, || async {
            let status = replays.get(name).await.ok()?.status?;
            (status.phase? == ReplayPhase::Complete).then_some(status)
        })
        .await
    }

    async fn endpoint_status(&self, name: &str) -> WebhookEndpoint {
        self.ns.api::<WebhookEndpoint>().get(name).await.unwrap()
    }

    /// The Kubernetes Events with `reason` about the WebhookEndpoint `name`.
    async fn endpoint_events(&self, name: &str, reason: &str) -> Vec<K8sEvent> {
        let events = self.ns.endpoint_events(name).await.unwrap_or_default();
        events
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }

    /// Waits for a Kubernetes Event with `reason` about the WebhookEndpoint `name`.
    async fn endpoint_event(&self, name: &str, reason: &str) -> K8sEvent {
        wait_for(&format!("a {reason} Event about {name}"), T, || async {
            self.endpoint_events(name, reason).await.into_iter().next()
        })
        .await
    }
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(base), serde_json::Value::Object(extra)) = (base.as_object_mut(), extra) {
        for (k, v) in extra {
            base.insert(k, v);
        }
    }
}

#[tokio::test]
async fn webhook_events_are_delivered_signed_and_reported() {
    let setup = Setup::new("deliver").await;
    let receiver = Receiver::start(Behavior::Ok).await;
    setup.endpoint("crm", &receiver, json!({})).await;
    setup
        .event(
            "signup",
            "user.created",
            json!({"user": {"id": 123, "email": "user@example.com"}}),
        )
        .await;
    // As a user waits for it: kubectl wait on the Delivered condition.
    // (On a blocking thread: the receiver answers on this test's runtime meanwhile.)
    let namespace = setup.ns.name.clone();
    let (waited, output) = tokio::task::spawn_blocking(move || {
        crate::support::kubectl(
            &[
                "wait",
                "-n",
                &namespace,
                "--for=condition=Delivered",
                "webhookevent/signup",
                "--timeout=60s",
            ],
            "",
        )
    })
    .await
    .unwrap();
    assert!(waited, "kubectl wait --for=condition=Delivered: {output}");
    let event = setup.event_phase("signup", EventPhase::Delivered).await;
    let status = event.status.unwrap();
    assert_eq!(status.deliveries.len(), 1);
    assert_eq!(status.deliveries[0].endpoint, "crm");
    assert_eq!(status.deliveries[0].last_status_code, Some(200));
    let labels = event.metadata.labels.unwrap();
    assert_eq!(labels["webhooks.pitchey.io/phase"], "Delivered");

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert!(
        got.verified,
        "the signature must verify with the endpoint's secret"
    );
    assert_eq!(Some(got.event_id.as_str()), status.event_id.as_deref());
    assert_eq!(got.event_type, "user.created");
    assert_eq!(got.attempt, 1);
    assert_eq!(got.body["data"]["event_type"], "user.created");
    assert_eq!(got.body["data"]["user"]["email"], "user@example.com");
    assert_eq!(got.body["webhook"]["name"], "crm receiver");
    assert!(got.body["event_id"].as_str().unwrap().starts_with("evt_"));

    let stats = wait_for("delivery stats", T, || async {
        let delivery = setup.endpoint_status("crm").await.status?.delivery?;
        (delivery.total_delivered == 1).then_some(delivery)
    })
    .await;
    assert_eq!(stats.last_status_code, Some(200));
    assert_eq!(stats.success_rate_last_hour.as_deref(), Some("100.0%"));
}

#[tokio::test]
async fn failed_attempts_are_retried_until_success() {
    let setup = Setup::new("retry").await;
    let receiver = Receiver::start(Behavior::FailFirst(2, 503)).await;
    setup
        .endpoint(
            "flaky",
            &receiver,
            json!({"retryPolicy": {"baseDelay": "100ms", "maxAttempts": 3}}),
        )
        .await;
    setup
        .event("order", "payment.succeeded", json!({"payment": {"id": 7}}))
        .await;
    let event = setup.event_phase("order", EventPhase::Delivered).await;
    assert_eq!(event.status.unwrap().deliveries[0].attempts, 3);
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].attempt, 3, "the attempt header counts retries");
    assert_eq!(receiver.requests(), 3);
}

/// The document's schedule with the default retry policy, timed at the receiver: after a 500 an
/// immediate retry, then 1 s, 2 s and 4 s. Each gap must be at least the delay and at most the
/// delay plus the engine's polling and the machine's noise (1.5 s). (A 503 or 429 asks to slow down: the
/// adaptive rate limit then spaces the retries, as the rate-limit tests show.)
#[tokio::test]
async fn the_default_policy_retries_at_once_then_after_1_2_and_4_seconds() {
    let setup = Setup::new("schedule").await;
    let receiver = Receiver::start(Behavior::FailFirst(4, 500)).await;
    setup.endpoint("crm", &receiver, json!({})).await;
    setup
        .event("e1", "user.created", json!({"user": {"id": 1}}))
        .await;
    let event = setup.event_phase("e1", EventPhase::Delivered).await;
    assert_eq!(event.status.unwrap().deliveries[0].attempts, 5);
    let arrivals = receiver.arrivals();
    assert_eq!(arrivals.len(), 5);
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    // Five attempts already tell the immediate retry happened (the schedule without it gives up
    // after four); the upper bound only catches a schedule gone slow, so it leaves room for a
    // loaded machine.
    let slack = Duration::from_millis(1500);
    for (gap, delay) in gaps.iter().zip([0u64, 1, 2, 4]) {
        let delay = Duration::from_secs(delay);
        assert!(
            *gap >= delay && *gap <= delay + slack,
            "gaps {gaps:?}: expected at once, then 1 s, 2 s, 4 s"
        );
    }
}

#[tokio::test]
async fn circuit_opens_after_consecutive_failures_and_closes_after_recovery() {
    let setup = Setup::new("circuit").await;
    let receiver = Receiver::start(Behavior::Status(500)).await;
    setup
        .endpoint(
            "down",
            &receiver,
            json!({
                "retryPolicy": {"baseDelay": "100ms", "maxDelay": "200ms", "maxAttempts": 20},
                "circuitBreaker": {"failureThreshold": 5, "openDuration": "2s"}
            }),
        )
        .await;
    setup
        .event("e1", "pitch.created", json!({"pitch": {"id": 1}}))
        .await;
    let open = wait_for("the circuit to open", T, || async {
        let status = setup.endpoint_status("down").await.status?;
        (status.circuit.as_ref()?.state == CircuitState::Open).then_some(status)
    })
    .await;
    assert!(conditions::is_true(&open.conditions, CIRCUIT_OPEN));
    assert!(!conditions::is_true(&open.conditions, "Healthy"));
    assert!(receiver.requests() >= 5);
    let opened = setup.endpoint_event("down", "CircuitOpened").await;
    assert_eq!(opened.type_.as_deref(), Some("Warning"));
    assert!(
        opened.note.as_deref().unwrap_or_default().contains("500"),
        "the note names the last failure: {:?}",
        opened.note
    );
    // While open, nothing is sent (one probe at most once the open duration passed).
    let before = receiver.requests();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.requests() <= before + 1);

    receiver.set_behavior(Behavior::Ok);
    setup.event_phase("e1", EventPhase::Delivered).await;
    let closed = wait_for("the circuit to close", T, || async {
        let status = setup.endpoint_status("down").await.status?;
        (status.circuit.as_ref()?.state == CircuitState::Closed).then_some(status)
    })
    .await;
    assert!(!conditions::is_true(&closed.conditions, CIRCUIT_OPEN));
    let recovered = setup.endpoint_event("down", "CircuitClosed").await;
    assert_eq!(recovered.type_.as_deref(), Some("Normal"));
}

#[tokio::test]
async fn dead_letters_are_replayed_by_a_webhook_replay() {
    let setup = Setup::new("replay").await;
    let receiver = Receiver::start(Behavior::Status(400)).await;
    setup.endpoint("strict", &receiver, json!({})).await;
    setup
        .event("bad", "nda.signed", json!({"nda": {"id": 9}}))
        .await;
    let failed = setup.event_phase("bad", EventPhase::Failed).await;
    assert_eq!(
        failed.status.unwrap().deliveries[0].attempts,
        1,
        "4xx is not retried"
    );
    wait_for("the dead letter counted", T, || async {
        let delivery = setup.endpoint_status("strict").await.status?.delivery?;
        (delivery.dead_letter_count == 1).then_some(())
    })
    .await;
    // Announced once, with its count, and recorded as announced.
    let announced = setup
        .endpoint_event("strict", "DeliveriesDeadLettered")
        .await;
    assert_eq!(announced.type_.as_deref(), Some("Warning"));
    let note = announced.note.unwrap_or_default();
    assert!(note.starts_with("1 delivery dead-lettered"), "{note}");
    wait_for("the announcement recorded in the status", T, || async {
        let delivery = setup.endpoint_status("strict").await.status?.delivery?;
        (delivery.dead_letters_reported == Some(1)).then_some(())
    })
    .await;

    receiver.set_behavior(Behavior::Ok);
    let done = setup.replay("redo", "strict", &["DeadLettered"]).await;
    assert_eq!((done.matched, done.redelivered, done.failed), (1, 1, 0));
    assert!(conditions::is_true(&done.conditions, "Complete"));
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].event_type, "nda.signed");
    assert!(received[0].verified);
    let announcements = setup
        .endpoint_events("strict", "DeliveriesDeadLettered")
        .await;
    assert_eq!(announcements.len(), 1, "one dead letter, one Event");
    assert_eq!(announcements[0].series, None, "published once");
}

#[tokio::test]
async fn a_gone_receiver_is_reported_with_an_event() {
    let setup = Setup::new("gone").await;
    let receiver = Receiver::start(Behavior::Status(410)).await;
    setup.endpoint("retired", &receiver, json!({})).await;
    setup
        .event("late", "user.deleted", json!({"user": {"id": 5}}))
        .await;
    let failed = setup.event_phase("late", EventPhase::Failed).await;
    let record = &failed.status.unwrap().deliveries[0];
    assert_eq!((record.attempts, record.last_status_code), (1, Some(410)));
    let gone = setup.endpoint_event("retired", "EndpointGone").await;
    assert_eq!(gone.type_.as_deref(), Some("Warning"));
    assert!(
        gone.note.as_deref().unwrap_or_default().contains("410"),
        "{:?}",
        gone.note
    );
    assert_eq!(receiver.requests(), 1, "a 410 is not retried");
}

#[tokio::test]
async fn the_test_annotation_sends_a_test_delivery_and_records_it() {
    let setup = Setup::new("testann").await;
    let receiver = Receiver::start(Behavior::Ok).await;
    setup.endpoint("crm", &receiver, json!({})).await;
    setup
        .ns
        .api::<WebhookEndpoint>()
        .patch(
            "crm",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"webhooks.pitchey.io/test": "nonce-42"}}}),
            ),
        )
        .await
        .unwrap();
    let last = wait_for("status.lastTest", T, || async {
        setup.endpoint_status("crm").await.status?.last_test
    })
    .await;
    assert_eq!(last.nonce, "nonce-42");
    assert_eq!(last.status_code, Some(200));
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].event_type, "webhook.test");
    assert_eq!(received[0].body["data"]["nonce"], "nonce-42");
    assert!(received[0].verified);

    // lastTest and the delivery statistics share one field manager, and later writes of the
    // statistics keep it.
    setup
        .event("after-test", "user.created", json!({"user": {"id": 1}}))
        .await;
    setup.event_phase("after-test", EventPhase::Delivered).await;
    let endpoint = wait_for("the delivery counted", T, || async {
        let endpoint = setup.endpoint_status("crm").await;
        (endpoint.status.as_ref()?.delivery.as_ref()?.total_delivered == 1).then_some(endpoint)
    })
    .await;
    let status = endpoint.status.as_ref().unwrap();
    assert_eq!(
        status.last_test.as_ref().map(|t| t.nonce.as_str()),
        Some("nonce-42")
    );
    let managers: Vec<(String, String)> = endpoint
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            let fields = m
                .fields_v1
                .as_ref()
                .map(|f| f.0.to_string())
                .unwrap_or_default();
            (m.manager.clone().unwrap_or_default(), fields)
        })
        .collect();
    let owners_of_last_test: Vec<&str> = managers
        .iter()
        .filter(|(_, fields)| fields.contains("f:lastTest"))
        .map(|(manager, _)| manager.as_str())
        .collect();
    assert_eq!(
        owners_of_last_test,
        ["webhook-operator-dispatcher"],
        "{managers:?}"
    );
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_delay_a_healthy_one() {
    let setup = Setup::new("isolation").await;
    let stuck = Receiver::start(Behavior::Hang).await;
    let healthy = Receiver::start(Behavior::Ok).await;
    setup
        .endpoint(
            "stuck",
            &stuck,
            json!({"rateLimit": {"requestsPerMinute": 6000, "burst": 100}}),
        )
        .await;
    setup
        .endpoint(
            "healthy",
            &healthy,
            json!({"rateLimit": {"requestsPerMinute": 6000, "burst": 100}}),
        )
        .await;
    for i in 0..20 {
        setup
            .event(
                &format!("e{i}"),
                "message.sent",
                json!({"message": {"id": i}}),
            )
            .await;
    }
    // Every delivery to the healthy endpoint arrives while the stuck one still holds its requests.
    wait_for("all 20 at the healthy endpoint", T, || async {
        (healthy.received().len() == 20).then_some(())
    })
    .await;
    assert!(stuck.requests() > 0, "the stuck endpoint was tried");
    assert!(stuck.received().is_empty(), "and is still hanging");
    stuck.release();
    wait_for("the stuck endpoint to catch up", T, || async {
        (stuck.received().len() >= 20).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_suspended_endpoint_holds_deliveries_until_resumed() {
    let setup = Setup::new("suspend").await;
    let receiver = Receiver::start(Behavior::Ok).await;
    setup
        .endpoint("crm", &receiver, json!({"suspend": true}))
        .await;
    setup
        .event(
            "held",
            "investment.created",
            json!({"investment": {"id": 3}}),
        )
        .await;
    setup.event_phase("held", EventPhase::Delivering).await;
    setup.first_delivery_held("held").await;
    assert!(receiver.received().is_empty());
    setup.resume("crm").await;
    setup.event_phase("held", EventPhase::Delivered).await;
    assert_eq!(receiver.received().len(), 1);
}

/// Stored event data that can no longer be read (a damaged store row) is dead-lettered with a
/// reason naming it, never sent as an empty object.
#[tokio::test]
async fn unreadable_stored_data_is_dead_lettered_not_sent_empty() {
    let mut setup = Setup::new("unreadable").await;
    let receiver = Receiver::start(Behavior::Ok).await;
    setup
        .endpoint("crm", &receiver, json!({"suspend": true}))
        .await;
    setup
        .event("damaged", "user.created", json!({"user": {"id": 1}}))
        .await;
    setup.first_delivery_held("damaged").await;
    setup.kill_dispatcher();
    let store = rusqlite::Connection::open(setup.store_path()).unwrap();
    // What the store kept is the canonical data (`{"event_type":…,…}`), cut short.
    let kept: Vec<u8> = store
        .query_row("SELECT data FROM events", [], |row| row.get(0))
        .unwrap();
    assert!(kept.starts_with(br#"{"event_type":"user.created","user":"#));
    let damaged = store
        .execute(
            "UPDATE events SET data = CAST('{\"event_type\":\"user.created\",\"user\":' AS BLOB)",
            [],
        )
        .unwrap();
    assert_eq!(damaged, 1);
    drop(store);
    let (restarted, _) = Process::dispatcher(&setup.ns.name, &setup.store_path(), "d2");
    setup.dispatcher = Some(restarted);
    setup.resume("crm").await;
    let event = setup.event_phase("damaged", EventPhase::Failed).await;
    let delivery = event.status.unwrap().deliveries.remove(0);
    assert_eq!(delivery.state, "DeadLettered");
    let error = delivery.last_error.unwrap_or_default();
    assert!(
        error.contains("the stored event data is unreadable"),
        "{error}"
    );
    assert!(receiver.received().is_empty(), "nothing may be sent");
}

/// At least once: `kill -9` in the middle of a load, then a restart on the same store: the
/// receiver sees every accepted event, duplicates only for attempts in flight at the kill.
#[tokio::test]
async fn kill_9_in_the_middle_of_a_load_loses_nothing() {
    let mut setup = Setup::new("crash").await;
    let receiver = Receiver::start(Behavior::Ok).await;
    setup
        .endpoint(
            "crm",
            &receiver,
            json!({"rateLimit": {"requestsPerMinute": 600000, "burst": 1000}}),
        )
        .await;
    let total = 150;
    for i in 0..total {
        setup
            .event(&format!("e{i}"), "user.created", json!({"user": {"id": i}}))
            .await;
        if i == total / 2 {
            if let Some(dispatcher) = setup.dispatcher.as_mut() {
                dispatcher.kill();
            }
        }
    }
    // Everything created while it was down is picked up by the restarted dispatcher.
    let (restarted, _) =
        Process::dispatcher(&setup.ns.name, &setup.store.path().join("d.db"), "d2");
    setup.dispatcher = Some(restarted);
    let ids = wait_for(
        "every event at the receiver",
        Duration::from_secs(120),
        || async {
            let ids: HashSet<String> = receiver
                .received()
                .into_iter()
                .map(|r| r.event_id)
                .collect();
            (ids.len() == total).then_some(ids)
        },
    )
    .await;
    assert_eq!(ids.len(), total);
    let duplicates = receiver.received().len() - total;
    assert!(
        duplicates <= 16,
        "duplicates only for attempts in flight: {duplicates}"
    );
    assert!(receiver.received().iter().all(|r| r.verified));
}

#[tokio::test]
async fn finished_events_are_deleted_after_their_ttl() {
    let setup = Setup::new("ttl").await;
    let receiver = Receiver::start(Behavior::Ok).await;
    setup.endpoint("crm", &receiver, json!({})).await;
    let event: WebhookEvent = serde_json::from_value(json!({
        "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookEvent",
        "metadata": {"name": "short-lived"},
        "spec": {"type": "user.login", "data": {"user": {"id": 1}}, "ttlSecondsAfterFinished": 1}
    }))
    .unwrap();
    setup
        .ns
        .api::<WebhookEvent>()
        .create(&PostParams::default(), &event)
        .await
        .unwrap();
    setup
        .event_phase("short-lived", EventPhase::Delivered)
        .await;
    // Events refused as invalid (data.event_type contradicts type) are Failed, labelled so and
    // finished, so their TTL applies too.
    for (name, ttl) in [("invalid-kept", None), ("invalid-short", Some(1))] {
        let invalid: WebhookEvent = serde_json::from_value(json!({
            "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookEvent",
            "metadata": {"name": name},
            "spec": {"type": "user.login", "data": {"event_type": "user.logout"},
                     "ttlSecondsAfterFinished": ttl}
        }))
        .unwrap();
        setup
            .ns
            .api::<WebhookEvent>()
            .create(&PostParams::default(), &invalid)
            .await
            .unwrap();
    }
    let failed = wait_for("the invalid event listed as Failed", T, || async {
        let selector = ListParams::default().labels("webhooks.pitchey.io/phase=Failed");
        let list = setup.ns.api::<WebhookEvent>().list(&selector).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.metadata.name.as_deref() == Some("invalid-kept"))
    })
    .await;
    let status = failed.status.unwrap();
    assert_eq!(status.phase, Some(EventPhase::Failed));
    assert!(status.finished_time.is_some());
    let ready = conditions::find(&status.conditions, "Ready").unwrap();
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(
        ready.message.contains("spec.data.event_type"),
        "{}",
        ready.message
    );
    for name in ["short-lived", "invalid-short"] {
        wait_for(&format!("the finished {name} to be deleted"), T, || async {
            let found = setup.ns.api::<WebhookEvent>().get_opt(name).await.ok()?;
            found.is_none().then_some(())
        })
        .await;
    }
    assert_eq!(receiver.received().len(), 1, "invalid events are not sent");
    assert!(
        setup
            .ns
            .api::<WebhookEvent>()
            .get_opt("invalid-kept")
            .await
            .unwrap()
            .is_some(),
        "the default TTL (an hour) has not passed"
    );
}
