//! The CRDs' CEL rules (`x-kubernetes-validations`), evaluated with a CEL interpreter: the local
//! control plane (Kubernetes 1.20) ignores them, but every API server from 1.25 on enforces
//! them, and refuses a CRD whose rule does not compile. Each rule in `crds/` must compile, accept
//! the valid cases and refuse the invalid ones below, and every rule must have cases here.
use std::collections::BTreeSet;
use std::sync::Arc;

use cel_interpreter::extractors::This;
use cel_interpreter::{Context, Program, Value};
use serde_json::{json, Value as Json};

/// A rule found in a CRD: the file, the schema path it sits on, its expression.
#[derive(Debug)]
struct Rule {
    file: String,
    path: String,
    expression: String,
}

fn rules() -> Vec<Rule> {
    let mut found = Vec::new();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let crd: Json = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
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

/// `lowerAscii` comes from the Kubernetes CEL string library, not the CEL standard.
fn lower_ascii(This(this): This<Arc<String>>) -> String {
    this.to_ascii_lowercase()
}

fn evaluate(rule: &Rule, this: &Json, old: Option<&Json>) -> Result<bool, String> {
    let program = Program::compile(&rule.expression).map_err(|e| format!("{e:?}"))?;
    let mut context = Context::default();
    context.add_function("lowerAscii", lower_ascii);
    context
        .add_variable("self", this.clone())
        .map_err(|e| e.to_string())?;
    if let Some(old) = old {
        context
            .add_variable("oldSelf", old.clone())
            .map_err(|e| e.to_string())?;
    }
    match program.execute(&context).map_err(|e| e.to_string())? {
        Value::Bool(ok) => Ok(ok),
        other => Err(format!("a rule must give a bool, gave {other:?}")),
    }
}

/// (file, schema path, `self`, `oldSelf`, whether the rule accepts it)
type Case = (&'static str, &'static str, Json, Option<Json>, bool);

fn cases() -> Vec<Case> {
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

#[test]
fn every_rule_compiles() {
    let rules = rules();
    assert!(rules.len() >= 7, "found {} rules", rules.len());
    for rule in &rules {
        if let Err(err) = Program::compile(&rule.expression) {
            panic!("{} {}: {err:?}\n{}", rule.file, rule.path, rule.expression);
        }
    }
}

#[test]
fn rules_accept_valid_and_refuse_invalid_specs() {
    let rules = rules();
    let mut covered = BTreeSet::new();
    for (file, path, this, old, expected) in cases() {
        let on_path: Vec<&Rule> = rules
            .iter()
            .filter(|r| r.file == file && r.path == path)
            // A transition rule (oldSelf) is only evaluated on updates.
            .filter(|r| old.is_some() || !r.expression.contains("oldSelf"))
            .collect();
        assert!(!on_path.is_empty(), "no rule on {file} {path}");
        let verdicts: Vec<bool> = on_path
            .iter()
            .map(|rule| {
                covered.insert(rule.expression.clone());
                evaluate(rule, &this, old.as_ref())
                    .unwrap_or_else(|err| panic!("{file} {path}: {err}\n{}", rule.expression))
            })
            .collect();
        assert_eq!(
            verdicts.iter().all(|ok| *ok),
            expected,
            "{file} {path} self={this} oldSelf={old:?}"
        );
    }
    let untested: Vec<&Rule> = rules
        .iter()
        .filter(|r| !covered.contains(&r.expression))
        .collect();
    assert!(untested.is_empty(), "rules without cases: {untested:#?}");
}
