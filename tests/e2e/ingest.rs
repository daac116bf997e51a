//! The dispatcher's HTTP API against the real control plane: TokenReview + SubjectAccessReview,
//! the documented error codes for bad input with nothing stored, idempotent ids, batches, the
//! read APIs and test deliveries, with a real receiver on loopback.
use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::PostParams;
use reqwest::StatusCode;
use serde_json::{json, Value};
use webhook_operator::api::{WebhookEndpoint, WebhookEvent, WebhookSubscription};

use crate::receiver::{Behavior, Receiver};
use crate::support::{wait_for, Process, TestNamespace};

const T: Duration = Duration::from_secs(60);
/// A token of the control plane's cluster admin (may publish and read everywhere).
pub const ADMIN: &str = "test-admin-token";
const PUBLISHER: &str = "test-publisher-token";
const NOBODY: &str = "test-nobody-token";
/// The dispatcher's default `--max-body-bytes`.
const MAX_BODY: usize = 256 * 1024;

/// A namespace with the controller, a dispatcher (API and metrics on known ports), an endpoint
/// `crm` to a receiver subscribed to `*`, and `publisher` allowed to publish there.
struct Setup {
    ns: TestNamespace,
    receiver: Receiver,
    api: String,
    metrics: String,
    http: reqwest::Client,
    _controller: Process,
    _dispatcher: Process,
    _store: tempfile::TempDir,
}

impl Setup {
    async fn new(prefix: &str) -> Self {
        Self::with_dispatcher_args(prefix, &[]).await
    }

    /// As [`Setup::new`], with extra dispatcher flags.
    async fn with_dispatcher_args(prefix: &str, extra: &[&str]) -> Self {
        let ns = TestNamespace::new(prefix).await;
        let controller = Process::controller(&ns.name, "c", &["--allow-plain-http"]);
        let store = tempfile::tempdir().unwrap();
        let store_path = store.path().join("d.db").display().to_string();
        let mut args = vec!["--store-path", store_path.as_str()];
        args.extend_from_slice(extra);
        let (dispatcher, listen, metrics) = Process::dispatcher_with(&ns.name, "ingest", &args);
        let receiver = Receiver::start(Behavior::Ok).await;
        let http = webhook_operator::runtime::tls::http_client();
        wait_until_ready(&http, &metrics).await;
        let setup = Self {
            ns,
            receiver,
            api: format!("http://{listen}"),
            metrics: format!("http://{metrics}/metrics"),
            http,
            _controller: controller,
            _dispatcher: dispatcher,
            _store: store,
        };
        setup.grant_publisher().await;
        setup.endpoint("crm").await;
        setup
    }

    /// `publisher` may create webhookevents in the namespace (and nothing else).
    async fn grant_publisher(&self) {
        let rbac = "rbac.authorization.k8s.io";
        create_in::<Role>(&self.ns, json!({
            "metadata": {"name": "publish-events"},
            "rules": [{"apiGroups": ["webhooks.pitchey.io"], "resources": ["webhookevents"], "verbs": ["create"]}]
        }))
        .await;
        create_in::<RoleBinding>(
            &self.ns,
            json!({
                "metadata": {"name": "publisher-publishes"},
                "roleRef": {"apiGroup": rbac, "kind": "Role", "name": "publish-events"},
                "subjects": [{"apiGroup": rbac, "kind": "User", "name": "publisher"}]
            }),
        )
        .await;
    }

    /// An endpoint to the receiver subscribed to `*`; waits until the dispatcher's API knows it.
    async fn endpoint(&self, name: &str) {
        create_in::<WebhookEndpoint>(
            &self.ns,
            json!({
                "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookEndpoint",
                "metadata": {"name": name},
                "spec": {"url": self.receiver.url(), "displayName": "ingest receiver"}
            }),
        )
        .await;
        create_in::<WebhookSubscription>(
            &self.ns,
            json!({
                "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookSubscription",
                "metadata": {"name": format!("{name}-all")},
                "spec": {"endpointRef": {"name": name}, "eventTypes": ["*"]}
            }),
        )
        .await;
        let secret = self.ns.signing_secret(name).await;
        self.receiver.set_secret(&secret);
        let path = format!("endpoints/{name}/deliveries");
        wait_for("the dispatcher's API to know the endpoint", T, || async {
            let response = self.get(ADMIN, &path).await.ok()?;
            (response.status() == StatusCode::OK).then_some(())
        })
        .await;
        // Routing needs the subscription and the delivery ConfigMap in the caches too.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/namespaces/{}/{path}", self.api, self.ns.name)
    }

    async fn get(&self, token: &str, path: &str) -> reqwest::Result<reqwest::Response> {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
    }

    /// POSTs raw bytes to a path of the namespace; returns status and JSON body.
    async fn post_raw(
        &self,
        token: Option<&str>,
        path: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.unwrap()).await
    }

    async fn publish(&self, token: &str, body: Value) -> (StatusCode, Value) {
        self.post_raw(Some(token), "events", body.to_string().into_bytes())
            .await
    }

    /// Publishes as the admin until the store takes it (retrying 429 "saturated"); the 202 body.
    async fn publish_accepted(&self, body: Value) -> Value {
        wait_for("the store to accept a publish", T, || async {
            match self.publish(ADMIN, body.clone()).await {
                (StatusCode::ACCEPTED, answer) => Some(answer),
                (StatusCode::TOO_MANY_REQUESTS, _) => None,
                (status, answer) => panic!("{status}: {answer}"),
            }
        })
        .await
    }

    async fn get_json(&self, token: &str, path: &str) -> (StatusCode, Value) {
        answer(self.get(token, path).await.unwrap()).await
    }

    /// Event ids of the endpoint's delivery log (all pages).
    async fn logged_event_ids(&self, endpoint: &str) -> HashSet<String> {
        let mut ids = HashSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("endpoints/{endpoint}/deliveries?limit=2");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let (status, page) = self.get_json(ADMIN, &path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            for item in page["items"].as_array().unwrap() {
                ids.insert(item["event_id"].as_str().unwrap().to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return ids,
            }
        }
    }

    async fn metric(&self, name_and_labels: &str) -> f64 {
        let text = crate::support::scrape(&self.http, &self.metrics).await;
        text.lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == name_and_labels).then(|| value.parse().ok())?
            })
            .unwrap_or(0.0)
    }

    /// Publishes a sentinel event and waits until the receiver has it: whatever was stored before
    /// has been delivered by then. Returns the event ids the receiver saw (tests excluded).
    async fn settle(&self) -> HashSet<String> {
        let body = self
            .publish_accepted(json!({"type": "system.sentinel", "data": {}}))
            .await;
        let sentinel = body["event_id"].as_str().unwrap().to_owned();
        wait_for("the sentinel to be delivered", T, || async {
            self.received_ids().contains(&sentinel).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut ids = self.received_ids();
        ids.remove(&sentinel);
        ids
    }

    fn received_ids(&self) -> HashSet<String> {
        self.receiver
            .received()
            .into_iter()
            .filter(|r| r.event_type != "webhook.test")
            .map(|r| r.event_id)
            .collect()
    }
}

/// Polls the dispatcher's `/readyz` (at `metrics_addr`) until it answers 200: its caches are
/// synced and its store is open. Before that it answers 503 (or is not listening yet).
/// Creates an object of kind `K` in the test namespace from its JSON.
async fn create_in<K>(ns: &TestNamespace, object: Value)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Clone
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(object).unwrap();
    ns.api::<K>()
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

pub async fn wait_until_ready(http: &reqwest::Client, metrics_addr: &str) {
    let url = format!("http://{metrics_addr}/readyz");
    let body = wait_for("the dispatcher's /readyz to answer 200", T, || async {
        let response = http.get(&url).send().await.ok()?;
        (response.status() == StatusCode::OK).then_some(())?;
        response.text().await.ok()
    })
    .await;
    assert_eq!(body, "ready");
}

/// The status and JSON body of a response.
pub async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text}"));
    (status, body)
}

/// Asserts an error answer: its status, code and (when given) the field it names.
#[track_caller]
fn refused(answer: &(StatusCode, Value), status: StatusCode, code: &str, field: Option<&str>) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    if let Some(field) = field {
        assert_eq!(error["field"], field, "{body}");
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "the message names the field: {body}"
        );
    }
}

#[tokio::test]
async fn ingest_authenticates_and_authorizes_with_kubernetes_rbac() {
    let setup = Setup::new("ingest-auth").await;
    let event = json!({"type": "user.created", "data": {"user_id": 1}});

    // No token, a malformed header, a token the API server does not know: 401.
    let (status, body) = setup
        .post_raw(None, "events", event.to_string().into_bytes())
        .await;
    refused(
        &(status, body),
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        None,
    );
    let response = setup
        .http
        .post(setup.url("events"))
        .header("authorization", "Basic cHVibGlzaGVyOng=")
        .header("content-type", "application/json")
        .body(event.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    refused(
        &answer(response).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        None,
    );
    refused(
        &setup.publish("garbage-token", event.clone()).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        None,
    );

    // Known users without the right: 403, naming the user and what was refused.
    let nobody = setup.publish(NOBODY, event.clone()).await;
    refused(&nobody, StatusCode::FORBIDDEN, "forbidden", None);
    let message = nobody.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("nobody") && message.contains("webhookevents"),
        "{message}"
    );
    let elsewhere = setup
        .http
        .post(format!("{}/v1/namespaces/default/events", setup.api))
        .bearer_auth(PUBLISHER)
        .header("content-type", "application/json")
        .body(event.to_string())
        .send()
        .await
        .unwrap();
    refused(
        &answer(elsewhere).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
    // Publishing does not grant reading or testing endpoints.
    refused(
        &setup.get_json(PUBLISHER, "endpoints/crm/deliveries").await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
    refused(
        &setup.get_json(PUBLISHER, "deadletters").await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
    refused(
        &setup
            .post_raw(Some(PUBLISHER), "endpoints/crm/test", Vec::new())
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
    // Nor does it reveal whether an endpoint exists.
    refused(
        &setup.get_json(NOBODY, "endpoints/nope/analytics").await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );

    // The publisher may publish: 202 once durably stored, and the receiver gets it signed.
    let (status, accepted) = setup.publish(PUBLISHER, event.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["deliveries"], 1, "{accepted}");
    assert_eq!(accepted["duplicate"], false, "{accepted}");
    let event_id = accepted["event_id"].as_str().unwrap().to_owned();
    assert!(event_id.starts_with("evt_"), "{event_id}");
    // A second request within the cache window is answered from the cached decisions.
    let (status, again) = setup
        .publish(PUBLISHER, json!({"type": "user.updated", "data": {}}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");

    let received = setup.settle().await;
    let expected: HashSet<String> = [event_id.clone(), again["event_id"].as_str().unwrap().into()]
        .into_iter()
        .collect();
    assert_eq!(
        received, expected,
        "only the accepted events were delivered"
    );
    let delivered = setup
        .receiver
        .received()
        .into_iter()
        .find(|r| r.event_id == event_id)
        .unwrap();
    assert!(delivered.verified, "the delivery is signed");
    assert_eq!(delivered.body["data"]["event_type"], "user.created");
    assert_eq!(delivered.body["data"]["user_id"], 1);

    // Every response is counted by code.
    assert!(
        setup
            .metric("webhook_operator_dispatcher_ingest_requests_total{code=\"401\"}")
            .await
            >= 3.0
    );
    assert!(
        setup
            .metric("webhook_operator_dispatcher_ingest_requests_total{code=\"403\"}")
            .await
            >= 6.0
    );
    assert!(
        setup
            .metric("webhook_operator_dispatcher_ingest_requests_total{code=\"202\"}")
            .await
            >= 3.0
    ); // The SLO histogram counted both deliveries, each within the time the test took; requests
       // are timed; the build and the process are described.
    let ns = &setup.ns.name;
    let count = setup
        .metric(&format!(
            "webhook_operator_dispatcher_end_to_end_seconds_count{{namespace=\"{ns}\"}}"
        ))
        .await;
    let delivered = setup.receiver.received().len() as f64;
    assert!(delivered >= 2.0);
    assert_eq!(
        count, delivered,
        "one observation per delivery answered 2xx"
    );
    let within_a_minute = setup
        .metric(&format!(
            "webhook_operator_dispatcher_end_to_end_seconds_bucket{{le=\"81.92\",namespace=\"{ns}\"}}"
        ))
        .await;
    assert_eq!(within_a_minute, delivered);
    assert!(
        setup
            .metric("webhook_operator_dispatcher_request_seconds_count")
            .await
            >= 12.0
    );
    let build = format!(
        "webhook_operator_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(setup.metric(&build).await, 1.0);
    assert!(setup.metric("process_open_fds").await >= 3.0);
    assert!(setup.metric("process_resident_memory_bytes").await > 1e6);
}

#[tokio::test]
async fn ingest_refuses_bad_input_with_named_fields_and_stores_nothing() {
    let setup = Setup::new("ingest-bad").await;
    let raw = |body: &str| body.as_bytes().to_vec();

    let malformed = setup
        .post_raw(
            Some(PUBLISHER),
            "events",
            raw("{\"type\": \"user.created\",\n \"data\": {"),
        )
        .await;
    refused(&malformed, StatusCode::BAD_REQUEST, "malformed_json", None);
    assert!(
        malformed.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 2"),
        "says where: {}",
        malformed.1
    );
    let bad_events = [
        (json!({"data": {"a": 1}}), "missing_field", "type"),
        (
            json!({"type": "User Created!", "data": {}}),
            "invalid_field",
            "type",
        ),
        (json!({"type": 42}), "invalid_field", "type"),
        (
            json!({"type": "user.created", "data": [1, 2]}),
            "invalid_field",
            "data",
        ),
        (
            json!({"type": "user.created", "data": "text"}),
            "invalid_field",
            "data",
        ),
        (
            json!({"type": "user.created", "data": {"event_type": "user.deleted"}}),
            "invalid_field",
            "data.event_type",
        ),
    ];
    for (event, code, field) in bad_events {
        let answer = setup.publish(PUBLISHER, event).await;
        refused(&answer, StatusCode::BAD_REQUEST, code, Some(field));
    }
    let batch = json!({"events": [
        {"type": "user.created", "data": {}},
        {"type": "user.updated", "data": {}},
        {"type": "pitch.created", "data": {}},
        {"type": "not valid", "data": {}}
    ]});
    refused(
        &setup
            .post_raw(
                Some(PUBLISHER),
                "events:batch",
                batch.to_string().into_bytes(),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("events[3].type"),
    );
    // Over --max-body-bytes: 413.
    let huge = json!({"type": "user.created", "data": {"pad": "x".repeat(MAX_BODY + 1024)}});
    refused(
        &setup
            .post_raw(Some(PUBLISHER), "events", huge.to_string().into_bytes())
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        None,
    );
    // Bad query parameters of the read APIs.
    let bad_reads = [
        ("endpoints/crm/analytics?start_date=last-week", "start_date"),
        ("endpoints/crm/analytics?end_date=2024-13-01", "end_date"),
        ("endpoints/crm/analytics?period=week", "period"),
        ("endpoints/crm/deliveries?limit=0", "limit"),
        ("deadletters?cursor=garbage", "cursor"),
    ];
    for (path, field) in bad_reads {
        let answer = setup.get_json(ADMIN, path).await;
        refused(
            &answer,
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some(field),
        );
    }
    refused(
        &setup.get_json(ADMIN, "endpoints/nope/deliveries").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );

    // Nothing of the refused requests was stored: no deliveries, no dead letters, an empty queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(setup.logged_event_ids("crm").await.is_empty());
    let (status, dead) = setup.get_json(ADMIN, "deadletters").await;
    assert_eq!(status, StatusCode::OK, "{dead}");
    assert_eq!(dead["items"], json!([]), "{dead}");
    assert_eq!(
        setup
            .metric("webhook_operator_dispatcher_queue_depth")
            .await,
        0.0
    );
    assert!(
        setup
            .metric("webhook_operator_dispatcher_ingest_requests_total{code=\"400\"}")
            .await
            >= 10.0
    );
    assert!(
        setup
            .metric("webhook_operator_dispatcher_ingest_requests_total{code=\"413\"}")
            .await
            >= 1.0
    );

    // The same id twice is one event: same event_id, no new delivery.
    let order = json!({"type": "investment.made", "data": {"amount": 10}, "id": "order-1"});
    let (status, first) = setup.publish(PUBLISHER, order.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["duplicate"], false);
    let (status, second) = setup.publish(PUBLISHER, order).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{second}");
    assert_eq!(second["event_id"], first["event_id"]);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["deliveries"], first["deliveries"]);

    // A valid batch: one result per event, in order.
    let batch = json!({"events": [
        {"type": "user.created", "data": {"n": 1}},
        {"type": "user.created", "data": {"n": 2}, "id": "order-1"}
    ]});
    let (status, results) = setup
        .post_raw(
            Some(PUBLISHER),
            "events:batch",
            batch.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{results}");
    let results = results["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["duplicate"], false);
    assert_eq!(
        results[1]["event_id"], first["event_id"],
        "same id, same event"
    );
    assert_eq!(results[1]["duplicate"], true);

    let received = setup.settle().await;
    let expected: HashSet<String> = [&first["event_id"], &results[0]["event_id"]]
        .into_iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(received, expected, "one delivery per accepted event");
    assert_eq!(
        setup
            .receiver
            .received()
            .iter()
            .filter(|r| r.event_id == first["event_id"])
            .count(),
        1,
        "the idempotent id was delivered once"
    );
    wait_for(
        "the delivery log to hold the accepted events",
        T,
        || async {
            let logged = setup.logged_event_ids("crm").await;
            expected.is_subset(&logged).then_some(())
        },
    )
    .await;
    let logged = setup.logged_event_ids("crm").await;
    assert_eq!(
        logged.len(),
        expected.len() + 1,
        "plus the sentinel: {logged:?}"
    );

    // Analytics count the attempts.
    let (status, analytics) = setup.get_json(ADMIN, "endpoints/crm/analytics").await;
    assert_eq!(status, StatusCode::OK, "{analytics}");
    assert_eq!(analytics["period"], "hour");
    assert!(
        analytics["buckets"].as_array().unwrap().len() >= 24,
        "{analytics}"
    );
    assert_eq!(analytics["totals"]["attempts"], 3, "{analytics}");
    assert_eq!(analytics["totals"]["success_rate"], 1.0, "{analytics}");

    // A test delivery through the API reaches the receiver and is answered with its result.
    let (status, test) = setup
        .post_raw(
            Some(ADMIN),
            "endpoints/crm/test",
            json!({"test_payload": {"message": "hello"}})
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{test}");
    assert_eq!(test["statusCode"], 200, "{test}");
    let nonce = test["nonce"].as_str().unwrap().to_owned();
    let sent = setup
        .receiver
        .received()
        .into_iter()
        .find(|r| r.event_type == "webhook.test")
        .expect("the receiver got the test");
    assert_eq!(sent.body["data"]["nonce"], nonce.as_str());
    assert_eq!(sent.body["data"]["message"], "hello");
    assert!(sent.verified);
}

/// A delivery the receiver refuses for good (400, not retried) becomes a dead letter that the
/// dead-letter API returns whole: the event with its payload, the reason and the attempt history.
#[tokio::test]
async fn dead_letters_are_listed_with_their_payload_reason_and_history() {
    let setup = Setup::new("ingest-dead").await;
    setup.receiver.set_behavior(Behavior::Status(400));
    let (status, accepted) = setup
        .publish(
            PUBLISHER,
            json!({"type": "invoice.paid", "data": {"invoice": {"id": "inv-7", "amount": 42}}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let event_id = accepted["event_id"].as_str().unwrap().to_owned();

    let path = "deadletters?endpoint=crm";
    let page = wait_for("the dead letter", T, || async {
        let (status, page) = setup.get_json(ADMIN, path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        (!page["items"].as_array()?.is_empty()).then_some(page)
    })
    .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert!(page["next_cursor"].is_null(), "{page}");
    let dead = &items[0];
    assert_eq!(dead["endpoint"], "crm", "{dead}");
    assert_eq!(dead["event"]["event_id"], event_id.as_str(), "{dead}");
    assert_eq!(dead["event"]["event_type"], "invoice.paid", "{dead}");
    assert_eq!(dead["event"]["data"]["invoice"]["id"], "inv-7", "{dead}");
    assert_eq!(dead["event"]["data"]["invoice"]["amount"], 42, "{dead}");
    assert_eq!(dead["attempts"], 1, "a 400 is not retried: {dead}");
    assert_eq!(dead["last_status_code"], 400, "{dead}");
    let reason = dead["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("400"),
        "the reason names the answer: {dead}"
    );
    let history = dead["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{dead}");
    assert_eq!(history[0]["attempt"], 1, "{dead}");
    assert_eq!(history[0]["status_code"], 400, "{dead}");
    assert_eq!(history[0]["event_id"], event_id.as_str(), "{dead}");
    assert_eq!(history[0]["success"], false, "{dead}");

    // The namespace-wide list has it too; another endpoint's list does not.
    let (status, all) = setup.get_json(ADMIN, "deadletters").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["items"].as_array().unwrap().len(), 1, "{all}");
    let (status, other) = setup.get_json(ADMIN, "deadletters?endpoint=other").await;
    assert_eq!(status, StatusCode::OK, "{other}");
    assert_eq!(other["items"], json!([]), "{other}");
    let series = format!(
        "webhook_operator_dispatcher_dead_letters_total{{namespace=\"{}\",endpoint=\"crm\"}}",
        setup.ns.name
    );
    assert_eq!(setup.metric(&series).await, 1.0, "{series}");
    assert!(
        setup.receiver.received().is_empty(),
        "a 400 is not a delivery"
    );
}

/// Backpressure: with a store queue of one, a burst of publishes gets some 429s (JSON body,
/// `Retry-After`) and nothing is lost or half-stored: every 202 is delivered, a refused `id` was
/// not stored (publishing it again is not a duplicate), and WebhookEvents created during the
/// bursts are all delivered: those the store refused (in most runs some are) are retried until
/// it takes them, where before they waited for a watch event that never came.
#[tokio::test]
async fn a_saturated_store_answers_429_and_loses_nothing() {
    let setup = Setup::with_dispatcher_args("ingest-full", &["--store-queue-capacity", "1"]).await;
    let mut accepted: HashSet<String> = HashSet::new();
    let mut refused_keys: Vec<String> = Vec::new();
    let mut resources = Vec::new();
    for round in 0..20 {
        let burst = (0..64).map(|i| {
            let key = format!("k-{round}-{i}");
            let request = setup
                .http
                .post(setup.url("events"))
                .bearer_auth(ADMIN)
                .header("content-type", "application/json")
                .body(json!({"type": "user.created", "id": key, "data": {"i": i}}).to_string())
                .send();
            async move { (key, request.await.unwrap()) }
        });
        // The WebhookEvent is created while the burst fills the store's queue, so its publish
        // is often refused and must be retried (the dispatcher logs "retrying with backoff").
        let name = format!("burst-{round}");
        let create = create_in::<WebhookEvent>(
            &setup.ns,
            json!({
                "apiVersion": "webhooks.pitchey.io/v1alpha1",
                "kind": "WebhookEvent",
                "metadata": {"name": name},
                "spec": {"type": "user.created", "data": {"round": round}},
            }),
        );
        let (answers, ()) = tokio::join!(futures::future::join_all(burst), create);
        resources.push(name);
        for (key, response) in answers {
            let retry_after = response.headers().get("retry-after").cloned();
            let (status, body) = answer(response).await;
            match status {
                StatusCode::ACCEPTED => {
                    accepted.insert(body["event_id"].as_str().unwrap().to_owned());
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    refused(&(status, body), status, "saturated", None);
                    assert!(retry_after.is_some(), "a 429 says when to retry");
                    refused_keys.push(key);
                }
                other => panic!("{other}: {body}"),
            }
        }
        if !refused_keys.is_empty() && round >= 4 {
            break;
        }
    }
    assert!(
        !refused_keys.is_empty(),
        "a store queue of one refuses some of 64 concurrent publishes"
    );

    let events = setup.ns.api::<WebhookEvent>();
    for name in &resources {
        wait_for(&format!("WebhookEvent {name} delivered"), T, || async {
            let event = events.get(name).await.ok()?;
            let phase = event.status?.phase?;
            (phase == webhook_operator::api::event::EventPhase::Delivered).then_some(())
        })
        .await;
    }
    let delivered = setup.settle().await;
    assert!(
        accepted.is_subset(&delivered),
        "every accepted event is delivered: {} missing",
        accepted.difference(&delivered).count()
    );
    // Delivered but not accepted through ingest: only the WebhookEvents.
    assert_eq!(
        delivered.len(),
        accepted.len() + resources.len(),
        "refused publishes were not stored"
    );
    let key = &refused_keys[0];
    let body = setup
        .publish_accepted(json!({"type": "user.created", "id": key, "data": {}}))
        .await;
    assert_eq!(
        body["duplicate"], false,
        "the refused request stored nothing: {body}"
    );
}

/// Bound ServiceAccount tokens (TokenRequest, what `kubectl create token` mints). With
/// `--token-audience`, a token for that audience publishes; one for the API server's own
/// audience (a plain `kubectl create token`, or the control plane's static tokens) is refused with
/// 401 and told how to mint the right one.
#[tokio::test]
async fn service_account_tokens_must_carry_the_configured_audience() {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let ns = TestNamespace::new("ingest-aud").await;
    let store = tempfile::tempdir().unwrap();
    let store_path = store.path().join("d.db").display().to_string();
    let (_dispatcher, listen, metrics) = Process::dispatcher_with(
        &ns.name,
        "aud",
        &[
            "--store-path",
            &store_path,
            "--token-audience",
            "webhook-operator",
        ],
    );
    let http = webhook_operator::runtime::tls::http_client();
    wait_until_ready(&http, &metrics).await;
    let rbac = "rbac.authorization.k8s.io";
    create_in::<ServiceAccount>(&ns, json!({"metadata": {"name": "producer"}})).await;
    create_in::<Role>(
        &ns,
        json!({
            "metadata": {"name": "publish-events"},
            "rules": [{"apiGroups": ["webhooks.pitchey.io"], "resources": ["webhookevents"], "verbs": ["create"]}]
        }),
    )
    .await;
    create_in::<RoleBinding>(
        &ns,
        json!({
            "metadata": {"name": "producer-publishes"},
            "roleRef": {"apiGroup": rbac, "kind": "Role", "name": "publish-events"},
            "subjects": [{"kind": "ServiceAccount", "name": "producer", "namespace": ns.name}]
        }),
    )
    .await;
    let token_for = |audiences: Vec<String>| async {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences,
                expiration_seconds: Some(600),
                ..Default::default()
            },
            ..Default::default()
        };
        ns.api::<ServiceAccount>()
            .create_token_request("producer", &PostParams::default(), &request)
            .await
            .unwrap()
            .status
            .unwrap()
            .token
    };
    let publish = |token: String| {
        let (http, url) = (
            &http,
            format!("http://{listen}/v1/namespaces/{}/events", ns.name),
        );
        async move {
            let response = http
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(json!({"type": "user.created", "data": {"user_id": 7}}).to_string())
                .send()
                .await
                .unwrap();
            answer(response).await
        }
    };

    let (status, body) = publish(token_for(vec!["webhook-operator".into()]).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    for theirs in [token_for(vec![]).await, ADMIN.to_owned()] {
        let refusal = publish(theirs).await;
        refused(&refusal, StatusCode::UNAUTHORIZED, "invalid_token", None);
        let message = refusal.1["error"]["message"].as_str().unwrap();
        assert!(message.contains("--audience webhook-operator"), "{message}");
    }
}
