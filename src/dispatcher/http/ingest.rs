//! `POST /v1/namespaces/{ns}/events` and `POST /v1/namespaces/{ns}/events:batch`: validation
//! (all of a batch before anything is stored) and the durable publish.
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};

use super::auth::Access;
use super::error::ApiError;
use super::ApiState;
use crate::dispatcher::publish::{self, PublishRequest, Published};
use crate::runtime::trace_context;
use crate::store::EventSource;

/// Most events in one batch.
pub const MAX_BATCH: usize = 1000;
/// Longest idempotency key (as a WebhookEvent's `spec.id`).
const MAX_ID_LEN: usize = 253;

/// One event of a request, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct EventInput {
    pub event_type: String,
    pub data: Map<String, Value>,
    pub id: Option<String>,
}

impl EventInput {
    pub fn into_request(self, namespace: &str, trace_parent: Option<String>) -> PublishRequest {
        PublishRequest {
            namespace: namespace.to_owned(),
            event_type: self.event_type,
            data: self.data,
            id: self.id,
            source: EventSource::Ingest,
            trace_parent,
        }
    }
}

/// The JSON of a body, or a 400 that says where it breaks.
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "malformed_json",
            "the request body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "malformed_json",
            format!(
                "the request body is not valid JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// 400: a required field is absent.
fn missing(field: &str, hint: &str) -> ApiError {
    ApiError::field("missing_field", field, format!("{field}: required; {hint}"))
}

/// 400: a field holds the wrong kind of JSON value.
pub fn wrong_kind(field: &str, expected: &str, found: &Value) -> ApiError {
    ApiError::field(
        "invalid_field",
        field,
        format!("{field}: must be {expected}, not {}", kind(found)),
    )
}

/// 400 naming the first field left in `object` (the known ones were removed); `hint` says which
/// fields there are.
pub fn reject_unknown(object: &Map<String, Value>, hint: &str) -> Result<(), ApiError> {
    match object.keys().next() {
        Some(unknown) => Err(ApiError::field(
            "unknown_field",
            unknown.clone(),
            format!("{unknown}: unknown field; {hint}"),
        )),
        None => Ok(()),
    }
}

/// Validates one event object (`{type, data?, id?}`); errors name the field relative to it.
pub fn parse_event(value: Value) -> Result<EventInput, ApiError> {
    let Value::Object(mut object) = value else {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!(
                "an event must be a JSON object {{\"type\": …, \"data\": {{…}}, \"id\": …}}, not {}",
                kind(&value)
            ),
        ));
    };
    let event_type = match object.remove("type") {
        None => return Err(missing("type", "the event type, e.g. \"user.created\"")),
        Some(Value::String(s)) => s,
        Some(other) => return Err(wrong_kind("type", "a string", &other)),
    };
    let data = match object.remove("data") {
        None => Map::new(),
        Some(Value::Object(data)) => data,
        Some(other) => return Err(wrong_kind("data", "a JSON object", &other)),
    };
    let id = match object.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_ID_LEN => Some(id),
        Some(Value::String(_)) => {
            return Err(ApiError::field(
                "invalid_field",
                "id",
                format!("id: must be 1 to {MAX_ID_LEN} characters"),
            ))
        }
        Some(other) => return Err(wrong_kind("id", "a string", &other)),
    };
    reject_unknown(&object, "an event has type, data and id")?;
    let input = EventInput {
        event_type,
        data,
        id,
    };
    // The publish checks (event type syntax, data.event_type) before anything is stored.
    publish::check(&input.event_type, &input.data)?;
    Ok(input)
}

/// The body of `POST …/events`.
pub fn parse_single(body: &[u8]) -> Result<EventInput, ApiError> {
    parse_event(parse_json(body)?)
}

/// The body of `POST …/events:batch`: `{"events": [event, …]}`. Every event is validated
/// before any is stored; the first error names its index (`events[3].type`).
pub fn parse_batch(body: &[u8]) -> Result<Vec<EventInput>, ApiError> {
    let Value::Object(mut object) = parse_json(body)? else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must be a JSON object {\"events\": [...]}",
        ));
    };
    let events = match object.remove("events") {
        None => return Err(missing("events", "an array of {type, data, id} objects")),
        Some(Value::Array(events)) => events,
        Some(other) => return Err(wrong_kind("events", "an array", &other)),
    };
    reject_unknown(&object, "a batch has only events")?;
    if events.is_empty() || events.len() > MAX_BATCH {
        return Err(ApiError::field(
            "invalid_field",
            "events",
            format!(
                "events: must hold 1 to {MAX_BATCH} events, not {}",
                events.len()
            ),
        ));
    }
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let prefix = format!("events[{i}]");
            parse_event(event).map_err(|e| match e {
                ApiError::BadRequest {
                    code,
                    field: None,
                    message,
                } => ApiError::field(code, prefix.clone(), format!("{prefix}: {message}")),
                other => other.within(&prefix),
            })
        })
        .collect()
}

/// `POST …/events:batch`'s answer: one result per event, in request order.
#[derive(Debug, Serialize)]
pub struct BatchResponse {
    pub results: Vec<Published>,
}

/// The body of a publish request, once the caller may publish in `namespace`, and the trace
/// context its events are published in: the request's span (a child of the caller's
/// `traceparent`) when spans are exported, else the caller's `traceparent` itself.
async fn publisher_body(
    state: &ApiState,
    namespace: &str,
    request: Request,
) -> Result<(axum::body::Bytes, Option<String>), ApiError> {
    state
        .reviewer
        .check(request.headers(), Access::publish(namespace))
        .await?;
    state.served(namespace)?;
    let caller = request
        .headers()
        .get(trace_context::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let trace_parent = trace_context::of_span(&tracing::Span::current(), caller.as_deref());
    Ok((state.body(request).await?, trace_parent))
}

/// `POST /v1/namespaces/{ns}/events`.
pub async fn publish_one(
    State(state): State<ApiState>,
    Path(namespace): Path<String>,
    request: Request,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let (body, trace_parent) = publisher_body(&state, &namespace, request).await?;
    let input = parse_single(&body)?;
    let published =
        publish::publish(&state.shared, input.into_request(&namespace, trace_parent)).await?;
    Ok((StatusCode::ACCEPTED, Json(published)))
}

/// `POST /v1/namespaces/{ns}/events:batch`.
pub async fn publish_many(
    State(state): State<ApiState>,
    Path(namespace): Path<String>,
    request: Request,
) -> Result<(StatusCode, Json<BatchResponse>), ApiError> {
    let (body, trace_parent) = publisher_body(&state, &namespace, request).await?;
    let inputs = parse_batch(&body)?;
    let requests = inputs
        .into_iter()
        .map(|input| input.into_request(&namespace, trace_parent.clone()))
        .collect();
    let results = publish::publish_batch(&state.shared, requests).await?;
    Ok((StatusCode::ACCEPTED, Json(BatchResponse { results })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error(result: Result<impl std::fmt::Debug, ApiError>) -> Value {
        match result {
            Err(e) => {
                assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e}");
                e.body()["error"].clone()
            }
            Ok(v) => panic!("accepted: {v:?}"),
        }
    }

    #[test]
    fn accepts_an_event() {
        let input =
            parse_single(br#"{"type":"user.created","data":{"user_id":1},"id":"k1"}"#).unwrap();
        assert_eq!(input.event_type, "user.created");
        assert_eq!(input.data["user_id"], 1);
        assert_eq!(input.id.as_deref(), Some("k1"));
        let bare = parse_single(br#"{"type":"user.created"}"#).unwrap();
        assert!(bare.data.is_empty() && bare.id.is_none());
        let matching =
            parse_single(br#"{"type":"user.created","data":{"event_type":"user.created"}}"#);
        assert!(matching.is_ok());
    }

    #[test]
    fn malformed_json_says_where() {
        let e = error(parse_single(b"{\"type\": \"user.created\",\n  \"data\": {"));
        assert_eq!(e["code"], "malformed_json");
        assert!(e["message"].as_str().unwrap().contains("line 2"), "{e}");
        assert!(e.get("field").is_none());
        assert_eq!(error(parse_single(b"  "))["code"], "malformed_json");
    }

    #[test]
    fn names_the_field() {
        let cases: &[(&[u8], &str, &str)] = &[
            (br#"{"data":{}}"#, "missing_field", "type"),
            (br#"{"type":5}"#, "invalid_field", "type"),
            (br#"{"type":"User Created"}"#, "invalid_field", "type"),
            (br#"{"type":"user"}"#, "invalid_field", "type"),
            (
                br#"{"type":"user.created","data":[1]}"#,
                "invalid_field",
                "data",
            ),
            (
                br#"{"type":"user.created","data":"x"}"#,
                "invalid_field",
                "data",
            ),
            (
                br#"{"type":"user.created","data":{"event_type":"user.deleted"}}"#,
                "invalid_field",
                "data.event_type",
            ),
            (br#"{"type":"user.created","id":""}"#, "invalid_field", "id"),
            (br#"{"type":"user.created","id":7}"#, "invalid_field", "id"),
            (
                br#"{"type":"user.created","event_type":"x"}"#,
                "unknown_field",
                "event_type",
            ),
        ];
        for (body, code, field) in cases {
            let e = error(parse_single(body));
            assert_eq!(e["code"], *code, "{e}");
            assert_eq!(e["field"], *field, "{e}");
            assert!(e["message"].as_str().unwrap().starts_with(field), "{e}");
        }
        assert_eq!(error(parse_single(b"[1]"))["code"], "invalid_body");
    }

    #[test]
    fn batch_is_validated_whole() {
        let ok = parse_batch(
            br#"{"events":[{"type":"user.created"},{"type":"pitch.created","data":{"a":1}}]}"#,
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        let body = json!({"events": [
            {"type": "user.created"}, {"type": "user.created"}, {"type": "user.created"},
            {"type": "Bad"}
        ]});
        let e = error(parse_batch(body.to_string().as_bytes()));
        assert_eq!(e["field"], "events[3].type");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .starts_with("events[3].type:"),
            "{e}"
        );
        let e = error(parse_batch(br#"{"events":[{"type":"a.b"},7]}"#));
        assert_eq!(e["field"], "events[1]");
        let e = error(parse_batch(br#"{"events":[{"type":"a.b","data":1}]}"#));
        assert_eq!(e["field"], "events[0].data");
        assert_eq!(error(parse_batch(br#"{"events":[]}"#))["field"], "events");
        assert_eq!(error(parse_batch(br#"{}"#))["field"], "events");
        assert_eq!(error(parse_batch(br#"{"events":{}}"#))["field"], "events");
        assert_eq!(error(parse_batch(br#"{"events":[],"x":1}"#))["field"], "x");
        let many = json!({"events": vec![json!({"type": "a.b"}); MAX_BATCH + 1]});
        assert_eq!(
            error(parse_batch(many.to_string().as_bytes()))["field"],
            "events"
        );
    }
}
