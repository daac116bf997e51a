//! `POST /v1/namespaces/{ns}/endpoints/{name}/transform:preview`: runs a transform on a sample
//! event of a type, or on a stored event, in the same sandboxed workers as deliveries, and
//! answers what would be sent. Nothing is sent and nothing is stored.
//!
//! Body: `{"event_type": "user.created", "data": {…}}` (`data` defaults to the catalog's sample
//! for the type), or `{"event_id": "evt_…"}` (an event stored in this namespace), plus an
//! optional `"program"`: a jq program to try instead of the endpoint's `spec.transform.jq`, to
//! preview a change before applying it.
//!
//! Answer (200 whatever the program does): `{"input": {payload}, "result": "body" | "filtered"
//! | "error", "output": {…} | null, "error": "…" | null}`.
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::Json;
use bytes::Bytes;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};

use super::auth::Access;
use super::error::ApiError;
use super::ingest::{parse_json, reject_unknown, wrong_kind};
use super::ApiState;
use crate::api::event_samples::sample_data;
use crate::api::event_types::is_valid_event_type;
use crate::delivery::payload::WebhookRef;
use crate::delivery::request::{render_body, EventData, EventParts};
use crate::transform::{Output, MAX_PROGRAM_BYTES};

/// What the preview runs on.
#[derive(Debug, PartialEq)]
pub enum PreviewInput {
    Sample {
        event_type: String,
        data: Map<String, Value>,
    },
    Stored {
        event_id: String,
    },
}

/// A parsed preview request.
#[derive(Debug, PartialEq)]
pub struct PreviewRequest {
    pub input: PreviewInput,
    pub program: Option<String>,
}

/// The answer.
#[derive(Debug, Serialize)]
pub struct Preview {
    pub input: Value,
    pub result: &'static str,
    pub output: Option<Value>,
    pub error: Option<String>,
}

const FIELDS: &str = "the body has event_type (with optional data) or event_id, and program";

/// Parses and checks the body; errors name the field.
pub fn parse_preview(body: &[u8]) -> Result<PreviewRequest, ApiError> {
    let Value::Object(mut object) = parse_json(body)? else {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("the body must be a JSON object; {FIELDS}"),
        ));
    };
    let program = match object.remove("program") {
        None | Some(Value::Null) => None,
        Some(Value::String(program)) if program.len() <= MAX_PROGRAM_BYTES => Some(program),
        Some(Value::String(_)) => {
            return Err(ApiError::field(
                "invalid_field",
                "program",
                format!("program: at most {MAX_PROGRAM_BYTES} bytes"),
            ))
        }
        Some(other) => return Err(wrong_kind("program", "a string", &other)),
    };
    let event_id = object.remove("event_id");
    let event_type = object.remove("event_type");
    let data = object.remove("data");
    reject_unknown(&object, FIELDS)?;
    let input = match (event_id, event_type) {
        (Some(Value::String(event_id)), None) if data.is_none() => {
            PreviewInput::Stored { event_id }
        }
        (Some(Value::String(_)), _) => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "event_id names a stored event: send it without event_type and data",
            ))
        }
        (Some(other), _) => return Err(wrong_kind("event_id", "a string", &other)),
        (None, Some(Value::String(event_type))) => {
            if !is_valid_event_type(&event_type) {
                return Err(ApiError::field(
                    "invalid_field",
                    "event_type",
                    format!("event_type: `{event_type}` is not an event type such as user.created"),
                ));
            }
            let data = match data {
                None | Some(Value::Null) => sample_data(&event_type),
                Some(Value::Object(data)) => data,
                Some(other) => return Err(wrong_kind("data", "an object", &other)),
            };
            PreviewInput::Sample { event_type, data }
        }
        (None, Some(other)) => return Err(wrong_kind("event_type", "a string", &other)),
        (None, None) => {
            return Err(ApiError::field(
                "missing_field",
                "event_type",
                format!("event_type: required (or event_id); {FIELDS}"),
            ))
        }
    };
    Ok(PreviewRequest { input, program })
}

/// `POST /v1/namespaces/{ns}/endpoints/{name}/transform:preview`.
pub async fn preview(
    State(state): State<ApiState>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Result<Json<Preview>, ApiError> {
    state
        .reviewer
        .check(
            request.headers(),
            Access::read_endpoints(&namespace, Some(&name)),
        )
        .await?;
    let resource = state.endpoint_known(&namespace, &name).await?;
    let body = state.body(request).await?;
    let parsed = parse_preview(&body)?;
    let shared = &state.shared;
    let program = match parsed.program {
        Some(program) => program,
        None => match &resource.spec.transform {
            Some(transform) => transform.jq.clone(),
            None => {
                return Err(ApiError::field(
                    "missing_field",
                    "program",
                    format!("program: the endpoint `{name}` has no spec.transform; send the program to preview"),
                ))
            }
        },
    };
    let webhook = WebhookRef {
        id: format!("{namespace}/{name}"),
        name: resource
            .spec
            .display_name
            .clone()
            .unwrap_or_else(|| name.clone()),
    };
    let payload = match &parsed.input {
        PreviewInput::Sample { event_type, data } => {
            let now = Timestamp::now();
            let event_id = crate::delivery::payload::new_event_id(now, &mut rand::rng());
            render(
                &webhook,
                &event_id,
                event_type,
                now,
                EventData::Fields(data),
            )?
        }
        PreviewInput::Stored { event_id } => {
            let stored = shared.store.event_status(event_id).await?;
            // Another namespace's event is as unknown here as a missing one.
            let Some(status) = stored.filter(|s| s.event.namespace == namespace) else {
                return Err(ApiError::NotFound(format!(
                    "event `{event_id}` not found in namespace `{namespace}`"
                )));
            };
            let event = &status.event;
            render(
                &webhook,
                &event.event_id,
                &event.event_type,
                event.created_at,
                EventData::Stored(&event.data),
            )?
        }
    };
    let input = serde_json::from_slice(&payload).unwrap_or(Value::Null);
    let preview = match shared.transforms.run(Arc::from(program), payload).await {
        Ok(Output::Body(body)) => Preview {
            input,
            result: "body",
            output: Some(serde_json::from_slice(&body).unwrap_or(Value::Null)),
            error: None,
        },
        Ok(Output::Filtered) => Preview {
            input,
            result: "filtered",
            output: None,
            error: None,
        },
        Err(error) if error.is_transient() => {
            return Err(ApiError::Upstream(error.to_string()));
        }
        Err(error) => Preview {
            input,
            result: "error",
            output: None,
            error: Some(format!("transform: {error}")),
        },
    };
    Ok(Json(preview))
}

fn render(
    webhook: &WebhookRef,
    event_id: &str,
    event_type: &str,
    created_at: Timestamp,
    data: EventData<'_>,
) -> Result<Bytes, ApiError> {
    let parts = EventParts {
        event_id,
        event_type,
        created_at,
        data,
    };
    render_body(webhook, &parts).map_err(|e| {
        ApiError::bad_request("invalid_body", format!("the event cannot be rendered: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_alone_previews_the_catalog_sample() {
        let parsed = parse_preview(br#"{"event_type":"user.created"}"#).unwrap();
        assert_eq!(parsed.program, None);
        let PreviewInput::Sample { event_type, data } = parsed.input else {
            panic!("not a sample");
        };
        assert_eq!(event_type, "user.created");
        assert_eq!(data["user"]["id"], 123);
    }

    #[test]
    fn a_stored_event_and_a_draft_program() {
        let parsed = parse_preview(br#"{"event_id":"evt_1","program":"empty"}"#).unwrap();
        assert_eq!(
            parsed,
            PreviewRequest {
                input: PreviewInput::Stored {
                    event_id: "evt_1".into()
                },
                program: Some("empty".into()),
            }
        );
    }

    #[test]
    fn bad_bodies_name_their_field() {
        let field = |body: &[u8]| parse_preview(body).unwrap_err().body()["error"]["field"].clone();
        assert_eq!(field(br#"{}"#), "event_type");
        assert_eq!(field(br#"{"event_type":"nope"}"#), "event_type");
        assert_eq!(
            field(br#"{"event_type":"user.created","data":[1]}"#),
            "data"
        );
        assert_eq!(
            field(br#"{"event_type":"user.created","program":3}"#),
            "program"
        );
        assert_eq!(
            field(br#"{"event_type":"user.created","extra":1}"#),
            "extra"
        );
        let both = parse_preview(br#"{"event_id":"evt_1","event_type":"user.created"}"#);
        assert!(both.is_err());
    }
}
