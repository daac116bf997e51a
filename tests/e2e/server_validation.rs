//! What the API server itself enforces, applied with `kubectl` as a user would: every CEL rule
//! of the CRDs (the cases of `tests/common/cel_cases.rs`: valid specs pass, invalid ones are
//! refused with the rule's message), immutable specs refused on update, and strict field
//! validation refusing unknown fields.
use serde_json::{json, Value};

use crate::cel_cases::{cases, rules};
use crate::support::{kubectl, TestNamespace};

/// The kind of a CRD file and a minimal valid spec of it, into which a case's value is put.
fn kind_and_base(file: &str) -> (&'static str, Value) {
    match file {
        "webhookendpoints.yaml" => (
            "WebhookEndpoint",
            json!({"url": "https://crm.example.com/hooks"}),
        ),
        "webhooksubscriptions.yaml" => (
            "WebhookSubscription",
            json!({"endpointRef": {"name": "crm"}, "eventTypes": ["*"]}),
        ),
        "webhookevents.yaml" => ("WebhookEvent", json!({"type": "user.created", "data": {}})),
        "webhookreplays.yaml" => (
            "WebhookReplay",
            json!({"endpointRef": {"name": "crm"}, "from": "2024-02-01T00:00:00Z"}),
        ),
        other => panic!("no kind for {other}"),
    }
}

/// An object of `file`'s kind whose value at `path` (".spec" or ".spec.a.b") is `value`.
fn object(file: &str, name: &str, path: &str, value: &Value) -> Value {
    let (kind, mut spec) = kind_and_base(file);
    let mut keys: Vec<&str> = path.trim_start_matches(".spec").split('.').collect();
    keys.retain(|k| !k.is_empty());
    match keys.split_last() {
        None => spec = value.clone(),
        Some((last, parents)) => {
            let mut at = &mut spec;
            for key in parents {
                at = at.as_object_mut().unwrap().entry(*key).or_insert(json!({}));
            }
            at[*last] = value.clone();
        }
    }
    json!({
        "apiVersion": "webhooks.pitchey.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    })
}

#[tokio::test]
async fn the_api_server_enforces_every_cel_rule_with_its_message() {
    let ns = TestNamespace::new("cel").await;
    let rules = rules();
    for (i, (file, path, this, old, valid)) in cases().into_iter().enumerate() {
        let name = format!("case-{i}");
        let apply = |value: &Value, dry_run: bool| {
            let mut args = vec![
                "apply",
                "-n",
                &ns.name,
                "--server-side",
                "--validate=strict",
                "-f",
                "-",
            ];
            if dry_run {
                args.push("--dry-run=server");
            }
            kubectl(&args, &object(file, &name, path, value).to_string())
        };
        let (applied, output) = match &old {
            // A transition rule: the old object is created for real, then updated.
            Some(old) => {
                let (created, out) = apply(old, false);
                assert!(
                    created,
                    "case {i}: creating the old {file} object failed: {out}"
                );
                apply(&this, false)
            }
            None => apply(&this, true),
        };
        if valid {
            assert!(
                applied,
                "case {i}: the server refused a valid {file} {path}={this}: {output}"
            );
        } else {
            assert!(
                !applied,
                "case {i}: the server accepted an invalid {file} {path}={this}"
            );
            let messages: Vec<&str> = rules
                .iter()
                .filter(|r| r.file == file && r.path == path)
                .map(|r| r.message.as_str())
                .collect();
            assert!(
                messages.iter().any(|m| output.contains(m)),
                "case {i}: {file} {path}={this} was refused without one of the rules' messages \
                 {messages:?}: {output}"
            );
        }
    }
}

#[tokio::test]
async fn strict_field_validation_refuses_unknown_fields_naming_them() {
    let ns = TestNamespace::new("strict").await;
    let mut endpoint = object(
        "webhookendpoints.yaml",
        "typo",
        ".spec",
        &json!({"url": "https://crm.example.com/"}),
    );
    endpoint["spec"]["retryPolicy"] = json!({"maxAtempts": 3});
    // A create (and client-side apply) with strict field validation, and server-side apply,
    // which always refuses fields the schema does not declare.
    for (args, expected) in [
        (
            vec!["create", "--validate=strict", "--dry-run=server"],
            "unknown field \"spec.retryPolicy.maxAtempts\"",
        ),
        (
            vec!["apply", "--server-side", "--dry-run=server"],
            ".spec.retryPolicy.maxAtempts: field not declared in schema",
        ),
    ] {
        let mut args = args;
        args.extend(["-n", &ns.name, "-f", "-"]);
        let (applied, output) = kubectl(&args, &endpoint.to_string());
        assert!(!applied, "kubectl {args:?} accepted an unknown field");
        assert!(output.contains(expected), "kubectl {args:?}: {output}");
    }
}
