//! A fake Kubernetes API server in memory (tower-test, as the controller's fast tests use), for
//! the plugin's commands: the CRDs of `webhooks.pitchey.io` (get, list, merge patch, create) and
//! the query API of `query.webhooks.pitchey.io` (get, paged and field-selected lists, watch). It
//! plays the controller's and the dispatcher's part where a command waits for them: a test
//! annotation gets a `status.lastTest`, a rotate annotation a new `lastRotationTime`, a created
//! WebhookReplay or WebhookEvent the statuses scripted for it, one step per read.
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tower_test::mock;
use webhook_operator::api::{ROTATE_SECRET_ANNOTATION, TEST_ANNOTATION};
use webhook_operator::query::fields::{
    FieldSelector, ANALYTICS_FIELDS, DEAD_LETTER_FIELDS, DELIVERY_FIELDS,
};
use webhook_operator::query::{WebhookAnalytics, WebhookDeadLetter, WebhookDelivery};

const CRD_GROUP: &str = "webhooks.pitchey.io";
const QUERY_GROUP: &str = "query.webhooks.pitchey.io";

/// What the fake API server holds and how it reacts.
#[derive(Default)]
pub struct World {
    /// CRD objects by (plural, namespace, name).
    pub objects: BTreeMap<(String, String, String), Value>,
    /// Attempts, newest first.
    pub deliveries: Vec<WebhookDelivery>,
    /// Dead letters, newest first.
    pub dead_letters: Vec<WebhookDeadLetter>,
    pub analytics: Vec<WebhookAnalytics>,
    /// What each watch of webhookdeliveries streams, in turn; once none is left, a watch is held
    /// open and the command is interrupted.
    pub watches: VecDeque<Vec<WebhookDelivery>>,
    /// The most objects a page of the query API holds (the real one: 500).
    pub page_size: Option<usize>,
    /// The query API answers 503, as the aggregator does when the APIService is not Available.
    pub query_down: bool,
    /// The `status.lastTest` fields (`statusCode`, `latencyMs`, `error`) a test of an endpoint
    /// records.
    pub test_answers: BTreeMap<String, Value>,
    /// The statuses a created WebhookReplay shows, one a read (the last one stays).
    pub replay_statuses: Vec<Value>,
    /// The statuses a created WebhookEvent shows, one a read.
    pub event_statuses: Vec<Value>,
    /// No controller or dispatcher runs: annotations get no answer.
    pub nobody_reacts: bool,
    /// The clock of the controller and dispatcher played here.
    pub now: String,
    /// Every request: method, path and decoded query, and the body of a write.
    pub seen: Vec<String>,
    /// Reads of each created object.
    reads: BTreeMap<(String, String, String), usize>,
    /// Status changes applied at the second read of an object after the change that causes
    /// them (a dispatcher takes a moment).
    delayed: Vec<((String, String, String), usize, Value)>,
}

enum Answer {
    Json(u16, Value),
    Lines(Vec<Value>),
    /// Never answered: a watch left open.
    Hold,
}

/// A client whose requests `world` answers; `interrupted` is notified once a watch is held.
pub fn serve(world: Arc<Mutex<World>>, interrupted: Arc<Notify>) -> Client {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let answer = world
                .lock()
                .unwrap()
                .answer(&parts.method, &parts.uri, &bytes);
            let (code, body) = match answer {
                Answer::Json(code, value) => (code, serde_json::to_vec(&value).unwrap()),
                Answer::Lines(lines) => (
                    200,
                    lines
                        .iter()
                        .map(|l| format!("{l}\n"))
                        .collect::<String>()
                        .into_bytes(),
                ),
                Answer::Hold => {
                    interrupted.notify_one();
                    held.push(respond);
                    continue;
                }
            };
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            respond.send_response(response);
        }
    });
    Client::new(service, "default")
}

fn status(code: u16, reason: &str, message: &str, name: Option<&str>) -> Answer {
    let mut status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    if let Some(name) = name {
        status["details"] = json!({ "name": name });
    }
    Answer::Json(code, status)
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target = target.as_object_mut().unwrap();
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn kind_of(plural: &str) -> &'static str {
    match plural {
        "webhookendpoints" => "WebhookEndpoint",
        "webhookreplays" => "WebhookReplay",
        "webhookevents" => "WebhookEvent",
        "webhooksubscriptions" => "WebhookSubscription",
        _ => "Unknown",
    }
}

/// A page of `items` from the offset in `continue`, and the next offset.
fn page<T: serde::Serialize>(
    items: Vec<T>,
    query: &BTreeMap<String, String>,
    page_size: Option<usize>,
) -> (Vec<Value>, Option<String>) {
    let from: usize = query
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(500)
        .min(page_size.unwrap_or(500));
    let end = (from + limit).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    let page = items
        .into_iter()
        .skip(from)
        .take(limit)
        .map(|i| serde_json::to_value(i).unwrap())
        .collect();
    (page, next)
}

fn list(kind: &str, group: &str, items: Vec<Value>, rv: &str, next: Option<String>) -> Answer {
    let mut metadata = json!({ "resourceVersion": rv });
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    Answer::Json(
        200,
        json!({
            "apiVersion": format!("{group}/v1alpha1"), "kind": format!("{kind}List"),
            "metadata": metadata, "items": items,
        }),
    )
}

impl World {
    fn answer(&mut self, method: &Method, uri: &http::Uri, body: &[u8]) -> Answer {
        let url = url::Url::parse(&format!("http://fake{uri}")).unwrap();
        let query: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        let mut line = format!("{method} {}", url.path());
        if !query.is_empty() {
            let pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            line.push_str(&format!("?{}", pairs.join("&")));
        }
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if !body.is_null() {
            line.push_str(&format!(" {body}"));
        }
        self.seen.push(line);
        let segments: Vec<&str> = url.path().trim_matches('/').split('/').collect();
        let (group, rest) = match segments.as_slice() {
            ["apis", group, "v1alpha1", rest @ ..] => (*group, rest),
            _ => return status(404, "NotFound", "404 page not found", None),
        };
        let (namespace, plural, name) = match rest {
            ["namespaces", ns, plural] => (Some(*ns), *plural, None),
            ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
            [plural] => (None, *plural, None),
            _ => return status(404, "NotFound", "404 page not found", None),
        };
        match group {
            CRD_GROUP => self.crd(method, namespace, plural, name, body),
            QUERY_GROUP if self.query_down => status(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
                None,
            ),
            QUERY_GROUP => self.query(namespace, plural, name, &query),
            _ => status(404, "NotFound", "404 page not found", None),
        }
    }

    fn crd(
        &mut self,
        method: &Method,
        namespace: Option<&str>,
        plural: &str,
        name: Option<&str>,
        body: Value,
    ) -> Answer {
        match (method.as_str(), namespace, name) {
            ("GET", _, None) => {
                let items = self
                    .objects
                    .iter()
                    .filter(|((p, ns, _), _)| p == plural && namespace.is_none_or(|n| n == ns))
                    .map(|(_, object)| object.clone())
                    .collect();
                list(kind_of(plural), CRD_GROUP, items, "1", None)
            }
            ("GET", Some(ns), Some(name)) => {
                let key = (plural.to_owned(), ns.to_owned(), name.to_owned());
                self.read(&key);
                match self.objects.get(&key) {
                    Some(object) => Answer::Json(200, object.clone()),
                    None => status(
                        404,
                        "NotFound",
                        &format!("{plural}.{CRD_GROUP} \"{name}\" not found"),
                        Some(name),
                    ),
                }
            }
            ("PATCH", Some(ns), Some(name)) => {
                let key = (plural.to_owned(), ns.to_owned(), name.to_owned());
                let Some(object) = self.objects.get_mut(&key) else {
                    return status(
                        404,
                        "NotFound",
                        &format!("{plural}.{CRD_GROUP} \"{name}\" not found"),
                        Some(name),
                    );
                };
                merge(object, &body);
                let object = object.clone();
                self.react(&key, &body);
                Answer::Json(200, object)
            }
            ("POST", Some(ns), None) => {
                let mut object = body;
                let name = match object["metadata"]["name"].as_str() {
                    Some(name) => name.to_owned(),
                    None => format!(
                        "{}x7k2p",
                        object["metadata"]["generateName"].as_str().unwrap_or("")
                    ),
                };
                object["metadata"]["name"] = json!(name);
                object["metadata"]["namespace"] = json!(ns);
                object["metadata"]["creationTimestamp"] = json!(self.now);
                object["metadata"]["uid"] = json!("00000000-0000-0000-0000-000000000001");
                self.objects
                    .insert((plural.to_owned(), ns.to_owned(), name), object.clone());
                Answer::Json(201, object)
            }
            _ => status(405, "MethodNotAllowed", "not in the fake", None),
        }
    }

    /// A read of an object: created objects step through their scripted statuses, and delayed
    /// status changes come due.
    fn read(&mut self, key: &(String, String, String)) {
        let reads = self.reads.entry(key.clone()).or_insert(0);
        let step = *reads;
        *reads += 1;
        let script = match key.0.as_str() {
            "webhookreplays" => &self.replay_statuses,
            "webhookevents" => &self.event_statuses,
            _ => &Vec::new(),
        };
        if let (Some(status), Some(object)) = (
            script.get(step.min(script.len().saturating_sub(1))),
            self.objects.get_mut(key),
        ) {
            if !status.is_null() {
                object["status"] = status.clone();
            }
        }
        let mut due = Vec::new();
        self.delayed.retain_mut(|(k, wait, change)| {
            if k != key {
                return true;
            }
            if *wait == 0 {
                due.push(change.clone());
                return false;
            }
            *wait -= 1;
            true
        });
        if let Some(object) = self.objects.get_mut(key) {
            for change in due {
                merge(object, &change);
            }
        }
    }

    /// What the controller or dispatcher does after a patch of an endpoint.
    fn react(&mut self, key: &(String, String, String), patch: &Value) {
        if self.nobody_reacts {
            return;
        }
        let annotations = &patch["metadata"]["annotations"];
        if let Some(nonce) = annotations[TEST_ANNOTATION].as_str() {
            let mut test = self.test_answers.get(&key.2).cloned().unwrap_or(json!({}));
            test["nonce"] = json!(nonce);
            test["time"] = json!(self.now);
            self.delayed
                .push((key.clone(), 1, json!({"status": {"lastTest": test}})));
        }
        if annotations[ROTATE_SECRET_ANNOTATION].is_string() {
            let until: jiff::Timestamp = self.now.parse().unwrap();
            let until = until + jiff::SignedDuration::from_hours(24);
            self.delayed.push((
                key.clone(),
                1,
                json!({"status": {"signing": {
                    "lastRotationTime": self.now,
                    "previousKeyExpiryTime": webhook_operator::api::time::rfc3339(until),
                }}}),
            ));
        }
    }

    fn query(
        &mut self,
        namespace: Option<&str>,
        plural: &str,
        name: Option<&str>,
        query: &BTreeMap<String, String>,
    ) -> Answer {
        let in_namespace = |ns: &Option<String>| namespace.is_none_or(|n| ns.as_deref() == Some(n));
        let selector = query.get("fieldSelector").map(String::as_str).unwrap_or("");
        match plural {
            "webhookdeliveries" => {
                let fields = FieldSelector::parse(selector, DELIVERY_FIELDS).unwrap();
                let selected = |d: &WebhookDelivery| {
                    in_namespace(&d.metadata.namespace) && fields.matches(|f| d.field(f))
                };
                if query.get("watch").map(String::as_str) == Some("true") {
                    return match self.watches.pop_front() {
                        Some(batch) => Answer::Lines(
                            batch
                                .into_iter()
                                .filter(|d| selected(d))
                                .map(|d| json!({"type": "ADDED", "object": d}))
                                .collect(),
                        ),
                        None => Answer::Hold,
                    };
                }
                if let Some(name) = name {
                    return match self
                        .deliveries
                        .iter()
                        .find(|d| d.metadata.name.as_deref() == Some(name))
                    {
                        Some(d) => Answer::Json(200, json!(d)),
                        None => status(404, "NotFound", "not found", Some(name)),
                    };
                }
                let rv = self
                    .deliveries
                    .iter()
                    .filter_map(|d| d.metadata.resource_version.as_deref())
                    .filter_map(|rv| rv.parse::<i64>().ok())
                    .max()
                    .unwrap_or(0)
                    .to_string();
                let endpoint = fields.equal_to("endpoint");
                let items: Vec<WebhookDelivery> = self
                    .deliveries
                    .iter()
                    .filter(|d| in_namespace(&d.metadata.namespace))
                    .filter(|d| endpoint.is_none_or(|e| d.endpoint == e))
                    .cloned()
                    .collect();
                // As the dispatcher does: the page is cut from the namespace's (or endpoint's)
                // attempts, then the other requirements filter it.
                let (page, next) = page(items, query, self.page_size);
                let page = page
                    .into_iter()
                    .filter(|v| {
                        let d: WebhookDelivery = serde_json::from_value(v.clone()).unwrap();
                        selected(&d)
                    })
                    .collect();
                list("WebhookDelivery", QUERY_GROUP, page, &rv, next)
            }
            "webhookdeadletters" => {
                let Some(namespace) = namespace else {
                    return status(
                        400,
                        "BadRequest",
                        "webhookdeadletters are listed one namespace at a time: add -n NAMESPACE",
                        None,
                    );
                };
                let fields = FieldSelector::parse(selector, DEAD_LETTER_FIELDS).unwrap();
                let items: Vec<WebhookDeadLetter> = self
                    .dead_letters
                    .iter()
                    .filter(|d| d.metadata.namespace.as_deref() == Some(namespace))
                    .filter(|d| fields.matches(|f| d.field(f)))
                    .cloned()
                    .collect();
                let (page, next) = page(items, query, self.page_size);
                list("WebhookDeadLetter", QUERY_GROUP, page, "0", next)
            }
            "webhookanalytics" => {
                let fields = FieldSelector::parse(selector, ANALYTICS_FIELDS).unwrap();
                let items: Vec<WebhookAnalytics> = self
                    .analytics
                    .iter()
                    .filter(|a| in_namespace(&a.metadata.namespace))
                    .filter(|a| fields.matches(|f| a.field(f)))
                    .cloned()
                    .collect();
                if let Some(name) = name {
                    return match items.iter().find(|a| a.endpoint == name) {
                        Some(a) => Answer::Json(200, json!(a)),
                        None => status(
                            404,
                            "NotFound",
                            &format!("webhookanalytics.{QUERY_GROUP} \"{name}\" not found"),
                            Some(name),
                        ),
                    };
                }
                let (page, next) = page(items, query, self.page_size);
                list("WebhookAnalytics", QUERY_GROUP, page, "0", next)
            }
            _ => status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                None,
            ),
        }
    }
}
