//! The CRDs' CEL rules (`x-kubernetes-validations`, read from `crds/`) and, for each, specs it
//! must accept and specs it must refuse. Two tests use them: `tests/cel_rules.rs` evaluates the
//! rules with a CEL interpreter (the fast tier), and the end-to-end suite applies the same specs
//! with `kubectl` to the real API server, which must refuse the invalid ones with the rule's message
//! (`tests/e2e/server_validation.rs`).
#![allow(dead_code)] // each test target uses part of it
use serde_json::{json, Value as Json};

/// A rule found in a CRD: the file, the schema path it sits on, its expression.
#[derive(Debug)]
pub struct Rule {
    pub file: String,
    pub path: String,
    pub expression: String,
    pub message: String,
}

pub fn rules() -> Vec<Rule> {
    let mut found = Vec::new();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let crd: Json = serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for version in crd["spec"]["versions"].as_array().unwrap() {
            collect(&file, "", &version["schema"]["openAPIV3Schema"], &mut found);
        }
    }
    found
}

fn collect(file: &str, path: &str, schema: &Json, found: &mut Vec<Rule>) {
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        found.push(Rule {
            file: file.to_owned(),
            path: path.to_owned(),
            expression: rule["rule"].as_str().unwrap().to_owned(),
            message: rule["message"].as_str().unwrap_or_default().to_owned(),
        });
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, child) in properties {
            collect(file, &format!("{path}.{name}"), child, found);
        }
    }
    if schema["items"].is_object() {
        collect(file, &format!("{path}[]"), &schema["items"], found);
    }
}

/// (file, schema path, `self`, `oldSelf`, whether the rule accepts it)
pub type Case = (&'static str, &'static str, Json, Option<Json>, bool);

pub fn cases() -> Vec<Case> {
    let endpoint = "webhookendpoints.yaml";
    let subscription = "webhooksubscriptions.yaml";
    let event = "webhookevents.yaml";
    let replay = "webhookreplays.yaml";
    let header = |name: &str| json!([{"name": name, "secretKeyRef": {"name": "s", "key": "k"}}]);
    vec![
        (
            endpoint,
            ".spec",
            json!({"url": "https://crm.example.com/hooks"}),
            None,
            true,
        ),
        (
            endpoint,
            ".spec",
            json!({"url": "http://receiver.default.svc/hooks"}),
            None,
            true,
        ),
        (
            endpoint,
            ".spec",
            json!({"url": "ftp://crm.example.com/hooks"}),
            None,
            false,
        ),
        (
            endpoint,
            ".spec",
            json!({"url": "crm.example.com"}),
            None,
            false,
        ),
        (
            endpoint,
            ".spec",
            json!({"urlFrom": {"secretKeyRef": {"name": "slack", "key": "url"}}}),
            None,
            true,
        ),
        (
            endpoint,
            ".spec",
            json!({"url": "https://crm.example.com/hooks", "urlFrom": {"secretKeyRef": {"name": "slack", "key": "url"}}}),
            None,
            false,
        ),
        (endpoint, ".spec", json!({"method": "PUT"}), None, false),
        (
            endpoint,
            ".spec.ordering",
            json!({"mode": "Strict"}),
            None,
            true,
        ),
        (
            endpoint,
            ".spec.ordering",
            json!({"mode": "ByKey", "key": "data.user.id", "onDeadLetter": "Pause"}),
            None,
            true,
        ),
        (
            endpoint,
            ".spec.ordering",
            json!({"mode": "ByKey"}),
            None,
            false,
        ),
        (
            endpoint,
            ".spec.ordering",
            json!({"mode": "Strict", "key": "data.user.id"}),
            None,
            false,
        ),
        (
            endpoint,
            ".spec.ordering",
            json!({"key": "data.user.id"}),
            None,
            false,
        ),
        (endpoint, ".spec.retryPolicy", json!({}), None, true),
        (
            endpoint,
            ".spec.retryPolicy",
            json!({"baseDelay": "1s", "maxDelay": "1h"}),
            None,
            true,
        ),
        (
            endpoint,
            ".spec.retryPolicy",
            json!({"baseDelay": "1h30m", "maxDelay": "90m"}),
            None,
            true,
        ),
        (
            endpoint,
            ".spec.retryPolicy",
            json!({"baseDelay": "500ms"}),
            None,
            true,
        ),
        (
            endpoint,
            ".spec.retryPolicy",
            json!({"baseDelay": "10m", "maxDelay": "1s"}),
            None,
            false,
        ),
        (
            endpoint,
            ".spec.headersFrom",
            header("Authorization"),
            None,
            true,
        ),
        (
            endpoint,
            ".spec.headersFrom",
            header("X-Api-Key"),
            None,
            true,
        ),
        (
            endpoint,
            ".spec.headersFrom",
            header("Content-Type"),
            None,
            false,
        ),
        (
            endpoint,
            ".spec.headersFrom",
            header("x-webhook-signature"),
            None,
            false,
        ),
        (
            endpoint,
            ".spec.headersFrom",
            header("Webhook-Id"),
            None,
            false,
        ),
        (
            endpoint,
            ".spec.headersFrom",
            header("Proxy-Authorization"),
            None,
            false,
        ),
        (endpoint, ".spec.headersFrom", header("HOST"), None, false),
        (
            subscription,
            ".spec",
            json!({"endpointRef": {"name": "crm"}, "eventTypes": ["*"]}),
            None,
            true,
        ),
        (
            subscription,
            ".spec",
            json!({"endpointSelector": {"matchLabels": {"a": "b"}}, "eventTypes": ["*"]}),
            None,
            true,
        ),
        (
            subscription,
            ".spec",
            json!({"eventTypes": ["*"]}),
            None,
            false,
        ),
        (
            subscription,
            ".spec",
            json!({"endpointRef": {"name": "crm"}, "endpointSelector": {}, "eventTypes": ["*"]}),
            None,
            false,
        ),
        (
            event,
            ".spec",
            json!({"type": "user.created", "data": {"a": 1}}),
            Some(json!({"type": "user.created", "data": {"a": 1}})),
            true,
        ),
        (
            event,
            ".spec",
            json!({"type": "user.created", "data": {"a": 2}}),
            Some(json!({"type": "user.created", "data": {"a": 1}})),
            false,
        ),
        (
            replay,
            ".spec",
            json!({"endpointRef": {"name": "crm"}, "from": "2024-02-01T00:00:00Z"}),
            None,
            true,
        ),
        (
            replay,
            ".spec",
            json!({"endpointRef": {"name": "crm"}, "from": "2024-02-01T00:00:00Z", "to": "2024-02-02T00:00:00Z"}),
            None,
            true,
        ),
        (
            replay,
            ".spec",
            json!({"endpointRef": {"name": "crm"}, "from": "2024-02-02T00:00:00Z", "to": "2024-02-01T00:00:00Z"}),
            None,
            false,
        ),
        (
            replay,
            ".spec",
            json!({"endpointRef": {"name": "crm"}, "from": "2024-02-01T00:00:00Z"}),
            Some(json!({"endpointRef": {"name": "crm"}, "from": "2024-02-01T00:00:00Z"})),
            true,
        ),
        (
            replay,
            ".spec",
            json!({"endpointRef": {"name": "other"}, "from": "2024-02-01T00:00:00Z"}),
            Some(json!({"endpointRef": {"name": "crm"}, "from": "2024-02-01T00:00:00Z"})),
            false,
        ),
    ]
}
