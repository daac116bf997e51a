//! `publish TYPE --data JSON`: creates a WebhookEvent in the namespace; the dispatcher delivers it
//! to every endpoint subscribed to its type. --wait follows it until every delivery finished.
use std::io::Read;

use anyhow::Context as _;
use kube::api::ObjectMeta;
use serde_json::{Map, Value};

use super::Ctx;
use crate::api::validation::validate_event;
use crate::api::{WebhookEvent, WebhookEventSpec};
use crate::plugin::cli::{Format, PublishArgs};
use crate::plugin::error::UsageError;
use crate::plugin::render;
use crate::plugin::Exit;

/// The event's data from `--data`: JSON text, `@FILE`, or `@-` for `stdin`. It must be a JSON
/// object.
pub fn data(value: &str, stdin: impl Read) -> anyhow::Result<Map<String, Value>> {
    let (text, source) = match value.strip_prefix('@') {
        Some("-") => {
            let mut text = String::new();
            let mut stdin = stdin;
            stdin
                .read_to_string(&mut text)
                .context("reading --data from stdin")?;
            (text, "stdin".to_owned())
        }
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| UsageError(format!("--data @{path}: cannot read it: {e}")))?;
            (text, path.to_owned())
        }
        None => (value.to_owned(), "--data".to_owned()),
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(UsageError(format!(
            "{source}: the event's data must be a JSON object, not {}; e.g. '{{\"user\":{{\"id\":42}}}}'",
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        ))
        .into()),
        Err(e) => Err(UsageError(format!("{source} is not JSON: {e}")).into()),
    }
}

/// `user.created` → `user-created-`: a generateName of the event's type.
fn name_prefix(event_type: &str) -> String {
    let prefix: String = event_type
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(200)
        .collect();
    format!("{}-", prefix.trim_matches('-'))
}

pub async fn run(ctx: &mut Ctx<'_>, args: PublishArgs) -> anyhow::Result<Exit> {
    // `publish NAMESPACE TYPE` has set the namespace already (plugin::run): the type is last.
    let event_type = args.words.last().cloned().unwrap_or_default();
    let spec = WebhookEventSpec {
        type_: event_type.clone(),
        data: data(&args.data, std::io::stdin())?,
        id: args.id.clone(),
        ttl_seconds_after_finished: None,
    };
    validate_event(&spec).map_err(|e| UsageError(format!("the event would be refused: {e}")))?;
    let event = WebhookEvent {
        metadata: ObjectMeta {
            generate_name: Some(name_prefix(&event_type)),
            namespace: Some(ctx.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    };
    let created = ctx
        .create(&event, &format!("a WebhookEvent of type {event_type}"))
        .await?;
    let format = args.output.output;
    if format == Format::Text {
        ctx.print(&render::event_created_text(&created))?;
    }
    if !args.wait {
        if format == Format::Json {
            ctx.print(&render::json(&created))?;
        }
        return Ok(Exit::Ok);
    }
    let name = created.metadata.name.clone().unwrap_or_default();
    let deadline = ctx.deadline(args.timeout);
    loop {
        let current: WebhookEvent = ctx.get(&name).await?;
        let finished = current
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.is_finished());
        if finished {
            ctx.show(format, &current, || render::event_result_text(&current))?;
            return Ok(if render::event_delivered(&current) {
                Exit::Ok
            } else {
                Exit::Unhealthy
            });
        }
        if !deadline.tick().await {
            let phase = current
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .map(|p| format!("{p:?}"))
                .unwrap_or_else(|| "not yet accepted by a dispatcher".to_owned());
            anyhow::bail!(
                "webhookevent {name} did not finish within {} (it is {phase}); deliveries go on: \
                 kubectl get webhookevent {name} -n {} -w",
                crate::api::duration::format(args.timeout),
                ctx.namespace
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_a_json_object_from_text_a_file_or_stdin() {
        let map = data(r#"{"user":{"id":42}}"#, std::io::empty()).unwrap();
        assert_eq!(map["user"]["id"], 42);
        let map = data("@-", &b"{\"a\":1}"[..]).unwrap();
        assert_eq!(map["a"], 1);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("event.json");
        std::fs::write(&file, "{\"b\":true}").unwrap();
        let map = data(&format!("@{}", file.display()), std::io::empty()).unwrap();
        assert_eq!(map["b"], true);
        for (bad, says) in [
            ("[1]", "not an array"),
            ("{", "is not JSON"),
            ("@/nonexistent/x.json", "cannot read it"),
        ] {
            let error = data(bad, std::io::empty()).unwrap_err();
            assert!(error.downcast_ref::<UsageError>().is_some(), "{bad}");
            assert!(error.to_string().contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn names_come_from_the_type() {
        assert_eq!(name_prefix("user.created"), "user-created-");
        assert_eq!(name_prefix("nda_v2.signed"), "nda-v2-signed-");
    }
}
