//! The product document's integration templates (Express code posting to Slack, HubSpot and
//! Mailchimp) against the WebhookEndpoints of `examples/30-integration-slack.yaml`,
//! `31-integration-hubspot.yaml` and `32-integration-mailchimp.yaml`, which claim to send
//! exactly what those templates send, straight to the three APIs.
//!
//! The examples are applied as they are (only the namespace, the URLs of loopback fakes of the
//! three APIs, and test tokens changed) and subscribed to every event type, beside a plain
//! endpoint that records each event's payload. Randomly generated events (types from the seed's
//! catalog, `data.user` objects no one chose: unicode, quotes, numeric or string ids, fields
//! absent or null, sometimes no user at all; the seed is printed, `TEMPLATES_SEED` replays it) are
//! published through the ingest API. Then the document's own code (`tests/templates/seed-templates.js`,
//! run by `run-templates.js` with `node`) is run on the payloads the plain endpoint received, and
//! for every event and template what the JavaScript would have sent must be what the fakes got:
//! the same method, path, `Authorization`, `Content-Type` and a JSON-equal body; nothing where the
//! JavaScript sends nothing (the transform filtered the event, or dead-lettered it where the
//! template throws).
//!
//! `TEMPLATES_SEED=<n>` replays the events of a run; `TEMPLATES_EXAMPLES_DIR=<dir>` reads the
//! three YAML files from a copy of `examples/`, to try a change to them first. On a failure the
//! payloads and what the templates made of them are left in `<target>/tmp/e2e-logs/<namespace>/`.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::Router;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use webhook_operator::api::conditions;
use webhook_operator::api::event_types::CATALOG;
use webhook_operator::api::{WebhookEndpoint, WebhookSubscription};

use crate::dispatcher::Setup;
use crate::ingest::{answer, wait_until_ready, ADMIN};
use crate::support::{wait_for, Process};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// How many events are published.
const EVENTS: usize = 64;
const T: Duration = Duration::from_secs(60);
/// Long enough for Slack's example rate limit (60 a minute, burst 5) to let every event through.
const SETTLE: Duration = Duration::from_secs(300);
/// The header that names the event of a request (src/delivery/headers.rs).
const EVENT_ID_HEADER: &str = "x-webhook-event-id";

/// Where the three APIs are, as the JavaScript is told and as the fakes are reached.
const SLACK_PATH: &str = "/services/T000/B000/XXXX";
const SLACK_URL_FOR_JS: &str = "https://hooks.slack.com/services/T000/B000/XXXX";
const HUBSPOT_PATH: &str = "/crm/v3/objects/contacts";
const MAILCHIMP_LIST_ID: &str = "LIST123";
const HUBSPOT_TOKEN: &str = "hubspot-test-token-Ω";
const MAILCHIMP_TOKEN: &str = "mailchimp-test-key-us1";
const TEMPLATES: [&str; 3] = ["slack", "hubspot", "mailchimp"];

// ---------------------------------------------------------------------------------------------
// A fake API on loopback: records every request (path, method, every header, the raw body) and
// answers 200.

#[derive(Clone, Debug)]
struct Recorded {
    /// Path and query.
    path: String,
    method: String,
    /// Every header, names in lower case, in the order received.
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Recorded {
    /// Every value of header `name`.
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn event_id(&self) -> Option<&str> {
        self.header_values(EVENT_ID_HEADER).first().copied()
    }
}

#[derive(Clone)]
struct FakeApi {
    requests: Arc<Mutex<Vec<Recorded>>>,
    addr: SocketAddr,
}

impl FakeApi {
    async fn start() -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(record).with_state(requests.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { requests, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

async fn record(
    State(requests): State<Arc<Mutex<Vec<Recorded>>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let headers = headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    requests.lock().unwrap().push(Recorded {
        path,
        method: method.to_string(),
        headers,
        body,
    });
    StatusCode::OK
}

// ---------------------------------------------------------------------------------------------
// Events no one chose.

/// Characters random strings are made of: ASCII, quotes and backslashes, markup, accents, CJK,
/// emoji (outside the BMP), control characters and JavaScript's line separators.
const ALPHABET: &[char] = &[
    'a', 'b', 'k', 'x', 'Z', 'Q', '0', '7', ' ', '.', '-', '_', '@', '"', '\'', '`', '\\', '/',
    '<', '>', '&', '%', '$', '{', '}', 'é', 'ü', 'ß', 'Ø', 'Ω', 'ж', 'ع', '中', '文', '한', '😀',
    '🚀', '👩', '\u{200d}', '\n', '\t', '\r', '\u{0}', '\u{7f}', '\u{2028}', '\u{2029}',
    '\u{feff}',
];

fn random_string(rng: &mut StdRng, max: usize) -> String {
    let len = rng.random_range(0..=max);
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect()
}

fn random_name(rng: &mut StdRng) -> Value {
    const NAMES: &[&str] = &[
        "Ada",
        "José",
        "O'Brien",
        "Zoë",
        "李",
        "Nguyễn",
        "D\"Artagnan",
        "",
        "Ana María",
    ];
    match rng.random_range(0..10) {
        0..=3 => json!(NAMES[rng.random_range(0..NAMES.len())]),
        4..=8 => json!(random_string(rng, 16)),
        _ => random_scalar(rng),
    }
}

/// A value of any JSON kind, small.
fn random_scalar(rng: &mut StdRng) -> Value {
    match rng.random_range(0..6) {
        0 => json!(rng.random_range(-1000..1000)),
        1 => json!(rng.random_bool(0.5)),
        2 => json!([random_string(rng, 4), rng.random_range(0..10)]),
        3 => json!({"value": random_string(rng, 6)}),
        4 => json!(rng.random_range(-100.0..100.0_f64)),
        _ => json!(random_string(rng, 8)),
    }
}

fn random_email(rng: &mut StdRng) -> Value {
    match rng.random_range(0..10) {
        0..=5 => json!(format!(
            "{}.{}@example.com",
            random_string(rng, 8),
            rng.random_range(0..10_000)
        )),
        6..=8 => json!(random_string(rng, 20)),
        _ => random_scalar(rng),
    }
}

/// An id as producers send them: mostly integers, sometimes strings, now and then numbers that
/// JavaScript and JSON tools treat differently (fractions, `7.0`, beyond 2^53, exponents).
fn random_id(rng: &mut StdRng) -> Value {
    match rng.random_range(0..100) {
        0..=44 => json!(rng.random_range(1..1_000_000)),
        45..=54 => json!(rng.random_range(1_000_000..(1_i64 << 53))),
        55..=59 => json!(-rng.random_range(0..100_000)),
        60..=74 => json!(random_string(rng, 12)),
        75..=79 => json!(format!("{:06}", rng.random_range(0..1_000_000))),
        80..=84 => json!(format!(
            "{:08x}-{:04x}-4{:03x}",
            rng.random::<u32>(),
            rng.random::<u16>(),
            rng.random_range(0..0x1000)
        )),
        85..=89 => json!(f64::from(rng.random_range(1..100_000)) + rng.random_range(0.01..0.99)),
        90..=93 => json!(f64::from(rng.random_range(1..100_000))),
        94..=97 => json!(rng.random_range((1_u64 << 53) + 1..u64::MAX)),
        _ => json!(rng.random_range(1.0e15..1.0e22_f64)),
    }
}

/// A field of the user: usually present, sometimes null, sometimes absent.
fn maybe(
    rng: &mut StdRng,
    user: &mut Map<String, Value>,
    key: &str,
    value: impl FnOnce(&mut StdRng) -> Value,
) {
    match rng.random_range(0..100) {
        0..=74 => {
            let value = value(rng);
            user.insert(key.to_owned(), value);
        }
        75..=84 => {
            user.insert(key.to_owned(), Value::Null);
        }
        _ => {}
    }
}

fn random_user(rng: &mut StdRng) -> Value {
    let mut user = Map::new();
    if rng.random_range(0..100) < 92 {
        let id = random_id(rng);
        user.insert("id".into(), id);
    } else if rng.random_bool(0.5) {
        user.insert("id".into(), Value::Null);
    }
    maybe(rng, &mut user, "email", random_email);
    maybe(rng, &mut user, "first_name", random_name);
    maybe(rng, &mut user, "last_name", random_name);
    maybe(rng, &mut user, "company_name", |rng| {
        json!(random_string(rng, 24))
    });
    maybe(rng, &mut user, "user_type", |rng| {
        const TYPES: &[&str] = &["creator", "investor", "production", "admin"];
        if rng.random_bool(0.8) {
            json!(TYPES[rng.random_range(0..TYPES.len())])
        } else {
            random_name(rng)
        }
    });
    maybe(rng, &mut user, "username", |rng| {
        json!(random_string(rng, 12))
    });
    maybe(rng, &mut user, "created_at", |_| {
        json!("2024-01-15T10:30:00Z")
    });
    if rng.random_bool(0.2) {
        let key = random_string(rng, 6);
        let value = random_scalar(rng);
        user.insert(key, value);
    }
    Value::Object(user)
}

/// One event: its type (user.created and user.verified weighted up) and its data.
fn random_event(rng: &mut StdRng) -> (String, Value) {
    let event_type = match rng.random_range(0..100) {
        0..=29 => "user.created",
        30..=59 => "user.verified",
        _ => CATALOG[rng.random_range(0..CATALOG.len())],
    };
    let mut data = Map::new();
    match rng.random_range(0..100) {
        // No user at all.
        0..=5 => {}
        6..=9 => {
            data.insert("user".into(), Value::Null);
        }
        // Not an object.
        10..=12 => {
            let user = random_scalar(rng);
            data.insert("user".into(), user);
        }
        _ => {
            let user = random_user(rng);
            data.insert("user".into(), user);
        }
    }
    if rng.random_bool(0.3) {
        data.insert(
            "pitch".into(),
            json!({"id": rng.random_range(1..1000), "title": random_string(rng, 20)}),
        );
    }
    if rng.random_bool(0.1) {
        data.insert("source".into(), random_scalar(rng));
    }
    (event_type.to_owned(), Value::Object(data))
}

// ---------------------------------------------------------------------------------------------
// The examples, applied as they are but for where they send and the tokens.

/// Where the examples are read from: `examples/`, or `TEMPLATES_EXAMPLES_DIR` (to try a change to
/// them on a copy).
fn examples_dir() -> String {
    std::env::var("TEMPLATES_EXAMPLES_DIR").unwrap_or_else(|_| format!("{ROOT}/examples"))
}

/// The documents of `examples/<file>`.
fn example_documents(file: &str) -> Vec<Value> {
    let path = format!("{}/{file}", examples_dir());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_norway::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
        })
        .filter(|document| !document.is_null())
        .collect()
}

fn of_kind<'a>(documents: &'a [Value], kind: &str, file: &str) -> Vec<&'a Value> {
    let found: Vec<&Value> = documents.iter().filter(|d| d["kind"] == kind).collect();
    assert!(!found.is_empty(), "examples/{file} has no {kind}");
    found
}

/// The object in the test namespace: `metadata.namespace` replaced.
fn in_namespace(object: &Value, namespace: &str) -> Value {
    let mut object = object.clone();
    object["metadata"]["namespace"] = json!(namespace);
    object
}

/// Creates the example's Secret with `values` (keys of `stringData`) replaced; every key replaced
/// must be in the example.
async fn create_secret(setup: &Setup, secret: &Value, values: &[(&str, String)]) {
    let mut secret = in_namespace(secret, &setup.ns.name);
    for (key, value) in values {
        let data = &mut secret["stringData"];
        assert!(
            data.get(*key).is_some(),
            "the example Secret {} has no stringData.{key}",
            secret["metadata"]["name"]
        );
        data[*key] = json!(value);
    }
    let secret: Secret = serde_json::from_value(secret).unwrap();
    setup
        .ns
        .api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// Creates a WebhookEndpoint from its JSON as it is (a dynamic object: no field the Rust type
/// might not know is dropped on the way).
async fn create_endpoint(setup: &Setup, endpoint: Value) {
    let resource = ApiResource::erase::<WebhookEndpoint>(&());
    let api: Api<DynamicObject> =
        Api::namespaced_with(setup.ns.client.clone(), &setup.ns.name, &resource);
    let object: DynamicObject = serde_json::from_value(endpoint).unwrap();
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating {:?}: {e}", object.metadata.name));
}

/// Subscribes endpoint `name` to every event type.
async fn subscribe_to_everything(setup: &Setup, name: &str) {
    let subscription: WebhookSubscription = serde_json::from_value(json!({
        "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookSubscription",
        "metadata": {"name": format!("{name}-everything")},
        "spec": {"endpointRef": {"name": name}, "eventTypes": ["*"]}
    }))
    .unwrap();
    setup
        .ns
        .api::<WebhookSubscription>()
        .create(&PostParams::default(), &subscription)
        .await
        .unwrap();
}

/// The example's only WebhookEndpoint, checked to be named `name`.
fn example_endpoint<'a>(documents: &'a [Value], file: &str, name: &str) -> &'a Value {
    let endpoints = of_kind(documents, "WebhookEndpoint", file);
    assert_eq!(endpoints.len(), 1, "examples/{file}: one WebhookEndpoint");
    assert_eq!(endpoints[0]["metadata"]["name"], name, "examples/{file}");
    endpoints[0]
}

/// The example's Secret named `name`.
fn secret_named<'a>(documents: &'a [Value], file: &str, name: &Value) -> &'a Value {
    of_kind(documents, "Secret", file)
        .into_iter()
        .find(|s| &s["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("examples/{file}: no Secret {name}"))
}

/// The example's `headersFrom` Secret key of the `Authorization` header.
fn authorization_key(endpoint: &Value, file: &str) -> (Value, String) {
    let header = endpoint["spec"]["headersFrom"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| {
            h["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("authorization"))
        })
        .unwrap_or_else(|| panic!("examples/{file}: no Authorization in headersFrom"));
    let key = header["secretKeyRef"]["key"].as_str().unwrap().to_owned();
    (header["secretKeyRef"]["name"].clone(), key)
}

struct Fakes {
    slack: FakeApi,
    hubspot: FakeApi,
    mailchimp: FakeApi,
    raw: FakeApi,
}

impl Fakes {
    fn of(&self, template: &str) -> &FakeApi {
        match template {
            "slack" => &self.slack,
            "hubspot" => &self.hubspot,
            "mailchimp" => &self.mailchimp,
            other => panic!("no fake for {other}"),
        }
    }
}

/// Applies the three examples (and the raw endpoint) to point at the fakes; waits until each is
/// Ready and known to the dispatcher.
async fn apply_examples(setup: &Setup, fakes: &Fakes, http: &reqwest::Client, api: &str) {
    let ns = setup.ns.name.as_str();

    // Slack: the incoming-webhook URL from a Secret.
    let file = "30-integration-slack.yaml";
    let documents = example_documents(file);
    let endpoint = example_endpoint(&documents, file, "slack");
    let url_ref = &endpoint["spec"]["urlFrom"]["secretKeyRef"];
    let secret = secret_named(&documents, file, &url_ref["name"]);
    let url_key = url_ref["key"].as_str().unwrap();
    create_secret(setup, secret, &[(url_key, fakes.slack.url(SLACK_PATH))]).await;
    create_endpoint(setup, in_namespace(endpoint, ns)).await;

    // HubSpot: a fixed URL, the token from a Secret.
    let file = "31-integration-hubspot.yaml";
    let documents = example_documents(file);
    let endpoint = example_endpoint(&documents, file, "hubspot");
    let (secret_name, key) = authorization_key(endpoint, file);
    let secret = secret_named(&documents, file, &secret_name);
    create_secret(setup, secret, &[(&key, format!("Bearer {HUBSPOT_TOKEN}"))]).await;
    let mut endpoint = in_namespace(endpoint, ns);
    assert!(
        endpoint["spec"]["url"].is_string(),
        "examples/{file}: spec.url"
    );
    endpoint["spec"]["url"] = json!(fakes.hubspot.url(HUBSPOT_PATH));
    create_endpoint(setup, endpoint).await;

    // Mailchimp: the members URL and the key from one Secret.
    let file = "32-integration-mailchimp.yaml";
    let documents = example_documents(file);
    let endpoint = example_endpoint(&documents, file, "mailchimp");
    let url_ref = &endpoint["spec"]["urlFrom"]["secretKeyRef"];
    let (secret_name, key) = authorization_key(endpoint, file);
    assert_eq!(
        url_ref["name"], secret_name,
        "examples/{file}: one Secret for the URL and the key"
    );
    let secret = secret_named(&documents, file, &secret_name);
    let members = fakes
        .mailchimp
        .url(&format!("/3.0/lists/{MAILCHIMP_LIST_ID}/members"));
    create_secret(
        setup,
        secret,
        &[
            (url_ref["key"].as_str().unwrap(), members),
            (&key, format!("Bearer {MAILCHIMP_TOKEN}")),
        ],
    )
    .await;
    create_endpoint(setup, in_namespace(endpoint, ns)).await;

    // The payload as the document defines it, untransformed.
    create_endpoint(
        setup,
        json!({
            "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookEndpoint",
            "metadata": {"name": "raw", "namespace": ns},
            "spec": {"url": fakes.raw.url("/webhooks/pitchey"), "displayName": "Raw payloads"}
        }),
    )
    .await;

    let endpoints = setup.ns.api::<WebhookEndpoint>();
    let config_maps = setup.ns.api::<ConfigMap>();
    for name in ["slack", "hubspot", "mailchimp", "raw"] {
        subscribe_to_everything(setup, name).await;
        wait_for(&format!("{name}: Ready=True"), T, || async {
            let status = endpoints.get(name).await.ok()?.status?;
            conditions::is_true(&status.conditions, "Ready").then_some(())
        })
        .await;
        wait_for(&format!("{name}: the delivery ConfigMap"), T, || async {
            config_maps
                .get_opt(&format!("{name}-delivery"))
                .await
                .ok()??;
            Some(())
        })
        .await;
        wait_for(
            &format!("the dispatcher's API to know {name}"),
            T,
            || async {
                let response = http
                    .get(format!("{api}/endpoints/{name}/deliveries"))
                    .bearer_auth(ADMIN)
                    .send()
                    .await
                    .ok()?;
                (response.status() == reqwest::StatusCode::OK).then_some(())
            },
        )
        .await;
    }
    // Routing needs the subscriptions and the ConfigMaps in the dispatcher's caches too.
    tokio::time::sleep(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------------
// The dispatcher's side.

/// How each event's delivery to `endpoint` ended (`delivered`, `filtered`, `dead_lettered`) and
/// the last error, from the delivery log (every page).
async fn finished(
    http: &reqwest::Client,
    api: &str,
    endpoint: &str,
) -> HashMap<String, (String, Option<String>)> {
    let mut done = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{api}/endpoints/{endpoint}/deliveries?limit=500");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let response = http.get(url).bearer_auth(ADMIN).send().await.unwrap();
        let (code, page) = answer(response).await;
        assert_eq!(code, reqwest::StatusCode::OK, "{page}");
        for attempt in page["items"].as_array().unwrap() {
            let outcome = attempt["outcome"].as_str().unwrap_or_default();
            if matches!(outcome, "delivered" | "filtered" | "dead_lettered") {
                let event_id = attempt["event_id"].as_str().unwrap().to_owned();
                let error = attempt["error"].as_str().map(str::to_owned);
                done.insert(event_id, (outcome.to_owned(), error));
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return done,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The document's side.

#[derive(Debug, Deserialize)]
struct JsRun {
    event_id: Option<String>,
    template: String,
    calls: Vec<JsCall>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JsCall {
    url: String,
    method: String,
    headers: Map<String, Value>,
    body: Option<String>,
}

impl JsCall {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    }
}

/// Runs the seed's templates on the payloads file with `node`.
async fn run_templates(payloads: &Path) -> Vec<JsRun> {
    let script = format!("{ROOT}/tests/templates/run-templates.js");
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .args(["--slack-webhook-url", SLACK_URL_FOR_JS])
        .args(["--hubspot-token", HUBSPOT_TOKEN])
        .args(["--mailchimp-list-id", MAILCHIMP_LIST_ID])
        .args(["--mailchimp-token", MAILCHIMP_TOKEN])
        .arg(payloads)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "running `node {script}` failed ({e}): this test needs Node.js (`node` on PATH, \
                 18 or newer; Debian: apt-get install nodejs). It is not skipped: CI installs it."
            )
        });
    assert!(
        output.status.success(),
        "node {script} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Comparing.

/// JSON equality with numbers compared as numbers (1 == 1.0, as JavaScript has one number type)
/// and key order ignored.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let as_int = |n: &serde_json::Number| {
                n.as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))
            };
            match (as_int(x), as_int(y)) {
                (Some(i), Some(j)) if i == j => true,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// The differences between what the JavaScript sent for one event and what the fake got.
fn compare(
    js: &JsRun,
    ours: &[&Recorded],
    outcome: Option<&(String, Option<String>)>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let outcome_text = outcome.map_or("none".to_owned(), |(o, e)| match e {
        Some(e) => format!("{o} ({e})"),
        None => o.clone(),
    });
    let Some(call) = js.calls.first() else {
        // The JavaScript sent nothing: neither may we.
        if !ours.is_empty() {
            problems.push(format!(
                "the template sent nothing ({}) but we sent {} request(s): {}",
                js.error.as_deref().unwrap_or("not its event type"),
                ours.len(),
                String::from_utf8_lossy(&ours[0].body)
            ));
        }
        // ... and the delivery ended as the template did: dead-lettered where it throws, filtered
        // where it does nothing.
        let expected = if js.error.is_some() {
            "dead_lettered"
        } else {
            "filtered"
        };
        match outcome {
            Some((o, error)) if o == expected => {
                if expected == "dead_lettered"
                    && !error
                        .as_deref()
                        .unwrap_or_default()
                        .starts_with("transform: ")
                {
                    problems.push(format!(
                        "dead-lettered, but not by the transform: {outcome_text}"
                    ));
                }
            }
            _ => problems.push(format!(
                "the template {} but our delivery ended {outcome_text}",
                js.error
                    .as_ref()
                    .map_or("sent nothing".to_owned(), |e| format!("threw {e}"))
            )),
        }
        return problems;
    };
    if js.calls.len() != 1 || js.error.is_some() {
        problems.push(format!(
            "the template made {} fetch call(s) and threw {:?}: not a case this test knows",
            js.calls.len(),
            js.error
        ));
    }
    let js_body = call.body.as_deref().unwrap_or_default();
    if ours.len() != 1 {
        problems.push(format!(
            "the template sent {js_body} but we sent {} request(s) (delivery: {outcome_text})",
            ours.len()
        ));
        return problems;
    }
    let ours = ours[0];
    if !ours.method.eq_ignore_ascii_case(&call.method) {
        problems.push(format!(
            "method: template {}, ours {}",
            call.method, ours.method
        ));
    }
    let js_url = url::Url::parse(&call.url).unwrap();
    let js_path = match js_url.query() {
        Some(query) => format!("{}?{query}", js_url.path()),
        None => js_url.path().to_owned(),
    };
    if ours.path != js_path {
        problems.push(format!("path: template {js_path}, ours {}", ours.path));
    }
    let our_authorization = ours.header_values("authorization");
    let js_authorization = call.header("authorization");
    if our_authorization.len() > 1
        || our_authorization.first().map(|v| v.to_string()) != js_authorization
    {
        problems.push(format!(
            "Authorization: template {js_authorization:?}, ours {our_authorization:?}"
        ));
    }
    let our_type = ours.header_values("content-type");
    let js_type = call.header("content-type");
    if js_type.as_deref() != Some("application/json")
        || our_type != [js_type.as_deref().unwrap_or_default()]
    {
        problems.push(format!(
            "Content-Type: template {js_type:?}, ours {our_type:?}"
        ));
    }
    let js_json: Value = serde_json::from_str(js_body)
        .unwrap_or_else(|e| panic!("the template's body is not JSON ({e}): {js_body}"));
    match serde_json::from_slice::<Value>(&ours.body) {
        Ok(our_json) if json_equal(&js_json, &our_json) => {}
        Ok(our_json) => problems.push(format!(
            "body:\n      template {js_json}\n      ours     {our_json}"
        )),
        Err(e) => problems.push(format!(
            "our body is not JSON ({e}): {}",
            String::from_utf8_lossy(&ours.body)
        )),
    }
    if outcome.map(|(o, _)| o.as_str()) != Some("delivered") {
        problems.push(format!("our delivery ended {outcome_text}, not delivered"));
    }
    problems
}

/// Where the test leaves the payloads and the JavaScript's output, for a look after a failure.
fn artifacts_dir(namespace: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("e2e-logs")
        .join(namespace);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn the_integration_examples_send_what_the_documents_templates_send() {
    let seed = match std::env::var("TEMPLATES_SEED") {
        Ok(seed) => seed
            .trim()
            .parse::<u64>()
            .unwrap_or_else(|e| panic!("TEMPLATES_SEED={seed:?}: {e}")),
        Err(_) => rand::random(),
    };
    println!(
        "templates: TEMPLATES_SEED={seed} (set it to replay these events), examples from {}",
        examples_dir()
    );
    // Fail before starting anything when node is missing.
    let version = std::process::Command::new("node").arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "this test needs Node.js (`node` on PATH, 18 or newer; Debian: apt-get install nodejs) to \
         run the document's templates; it is not skipped: CI installs it ({version:?})"
    );

    let setup = Setup::new_without_dispatcher("templates").await;
    let store = tempfile::tempdir().unwrap();
    let store_path = store.path().join("d.db").display().to_string();
    let (_dispatcher, listen, metrics) =
        Process::dispatcher_with(&setup.ns.name, "d1", &["--store-path", &store_path]);
    let http = webhook_operator::runtime::tls::http_client();
    wait_until_ready(&http, &metrics).await;
    let api = format!("http://{listen}/v1/namespaces/{}", setup.ns.name);

    let fakes = Fakes {
        slack: FakeApi::start().await,
        hubspot: FakeApi::start().await,
        mailchimp: FakeApi::start().await,
        raw: FakeApi::start().await,
    };
    apply_examples(&setup, &fakes, &http, &api).await;

    // Publish events no one chose.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut published: Vec<(String, String, Value)> = Vec::new();
    for _ in 0..EVENTS {
        let (event_type, data) = random_event(&mut rng);
        let body = json!({"type": event_type, "data": data});
        let accepted = wait_for("the dispatcher to accept an event", T, || async {
            let response = http
                .post(format!("{api}/events"))
                .bearer_auth(ADMIN)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .ok()?;
            match answer(response).await {
                (reqwest::StatusCode::ACCEPTED, accepted) => Some(accepted),
                (reqwest::StatusCode::TOO_MANY_REQUESTS, _) => None,
                (status, answer) => panic!("publishing {body}: {status}: {answer}"),
            }
        })
        .await;
        assert_eq!(
            accepted["deliveries"], 4,
            "every event goes to slack, hubspot, mailchimp and raw: {accepted}"
        );
        let event_id = accepted["event_id"].as_str().unwrap().to_owned();
        published.push((event_id, event_type, data));
    }
    let ids: HashSet<&str> = published.iter().map(|(id, _, _)| id.as_str()).collect();

    // Every payload at the raw endpoint, and every delivery to the three finished.
    wait_for("the raw endpoint to get every event", SETTLE, || async {
        let got: HashSet<String> = fakes
            .raw
            .requests()
            .iter()
            .filter_map(|r| r.event_id().map(str::to_owned))
            .collect();
        ids.iter().all(|id| got.contains(*id)).then_some(())
    })
    .await;
    let mut outcomes = BTreeMap::new();
    for template in TEMPLATES {
        let done = wait_for(
            &format!("every delivery to {template} to finish"),
            SETTLE,
            || async {
                let done = finished(&http, &api, template).await;
                ids.iter().all(|id| done.contains_key(*id)).then_some(done)
            },
        )
        .await;
        outcomes.insert(template, done);
    }

    // The exact bodies the raw endpoint got, one a line, in publishing order.
    let raw = fakes.raw.requests();
    let mut payloads = String::new();
    for (event_id, _, _) in &published {
        let request = raw
            .iter()
            .find(|r| r.event_id() == Some(event_id.as_str()))
            .unwrap();
        let text = std::str::from_utf8(&request.body).expect("the payload is UTF-8");
        assert!(!text.contains('\n'), "a payload on several lines: {text}");
        let parsed: Value = serde_json::from_str(text).unwrap();
        assert_eq!(parsed["event_id"], event_id.as_str(), "{text}");
        payloads.push_str(text);
        payloads.push('\n');
    }
    let artifacts = artifacts_dir(&setup.ns.name);
    let payloads_path = artifacts.join("payloads.jsonl");
    std::fs::write(&payloads_path, &payloads).unwrap();

    let runs = run_templates(&payloads_path).await;
    let mut js_output = String::new();
    for run in &runs {
        let _ = writeln!(js_output, "{run:?}");
    }
    std::fs::write(artifacts.join("templates.txt"), js_output).unwrap();
    assert_eq!(
        runs.len(),
        EVENTS * TEMPLATES.len(),
        "one result per event and template"
    );

    // Per event and template: what the JavaScript sent is what we sent.
    let by_event: HashMap<&str, (&str, &Value)> = published
        .iter()
        .map(|(id, event_type, data)| (id.as_str(), (event_type.as_str(), data)))
        .collect();
    let mut disagreements = Vec::new();
    // Per template: how often the JavaScript sent, sent nothing (filtered), threw.
    let mut counts: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    for run in &runs {
        let event_id = run.event_id.as_deref().expect("the payload's event_id");
        let template = run.template.as_str();
        assert!(TEMPLATES.contains(&template), "unknown template {template}");
        let requests = fakes.of(template).requests();
        let ours: Vec<&Recorded> = requests
            .iter()
            .filter(|r| r.event_id() == Some(event_id))
            .collect();
        let outcome = outcomes[template].get(event_id);
        let problems = compare(run, &ours, outcome);
        let kind = match (&run.error, run.calls.is_empty()) {
            (Some(_), _) => 2,
            (None, true) => 1,
            (None, false) => 0,
        };
        counts.entry(template).or_default()[kind] += 1;
        if !problems.is_empty() {
            let (event_type, data) = by_event[event_id];
            let mut text = format!("{template}, {event_id} ({event_type}), data {data}:");
            for problem in problems {
                let _ = write!(text, "\n    {problem}");
            }
            disagreements.push(text);
        }
    }
    // Nothing else reached the fakes.
    for template in TEMPLATES {
        for request in fakes.of(template).requests() {
            if !request.event_id().is_some_and(|id| ids.contains(id)) {
                disagreements.push(format!(
                    "{template} got a request for no published event: {request:?}"
                ));
            }
        }
    }
    println!("templates: [sent, filtered, threw] per template: {counts:?}");
    assert!(
        disagreements.is_empty(),
        "TEMPLATES_SEED={seed}: the examples disagree with the document's templates on {} \
         (event, template) pairs (payloads and the templates' output: {}):\n{}",
        disagreements.len(),
        artifacts.display(),
        disagreements.join("\n")
    );
    // Not vacuous: the templates that choose by type both sent and filtered.
    for template in ["hubspot", "mailchimp"] {
        let [yes, filtered, _] = counts.get(template).copied().unwrap_or_default();
        assert!(
            yes > 0 && filtered > 0,
            "TEMPLATES_SEED={seed}: {template} sent {yes} times and filtered {filtered}: both must occur"
        );
    }
    assert_eq!(
        counts.get("slack").map(|c| c[0]),
        Some(EVENTS),
        "Slack posts every event"
    );
}
