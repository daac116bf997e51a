//! `POST /v1/namespaces/{ns}/endpoints/{name}/test`: a signed `webhook.test` delivery sent at
//! once (the seed's "Test Endpoint"), answered with the result that is also recorded in the
//! endpoint's `status.lastTest`.
use axum::extract::{Path, Request, State};
use axum::Json;
use serde_json::{Map, Value};

use super::auth::Access;
use super::error::ApiError;
use super::ingest::{parse_json, reject_unknown, wrong_kind};
use super::ApiState;
use crate::api::endpoint::TestDeliveryStatus;
use crate::dispatcher::cache::NotReady;
use crate::dispatcher::engine::PrepareError;
use crate::dispatcher::{send_test, TestError};
use crate::security::{SecurityEvent, SecurityKind};

/// The optional body `{"test_payload": {…}}`: fields added to the test event's `data`.
pub fn parse_test_body(body: &[u8]) -> Result<Option<Map<String, Value>>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let Value::Object(mut object) = parse_json(body)? else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must be a JSON object {\"test_payload\": {…}} (or empty)",
        ));
    };
    let payload = match object.remove("test_payload") {
        None | Some(Value::Null) => None,
        Some(Value::Object(payload)) => Some(payload),
        Some(other) => return Err(wrong_kind("test_payload", "a JSON object", &other)),
    };
    reject_unknown(&object, "the body has only test_payload")?;
    Ok(payload)
}

/// A nonce for a test sent through the API (the annotation carries the user's own).
fn new_nonce() -> String {
    format!("api-{}", ulid::Ulid::new().to_string().to_lowercase())
}

impl From<TestError> for ApiError {
    fn from(error: TestError) -> Self {
        match &error {
            TestError::Prepare(PrepareError::NotReady(NotReady::EndpointGone(_))) => {
                ApiError::NotFound(error.to_string())
            }
            TestError::Prepare(_) => ApiError::EndpointNotReady(error.to_string()),
            TestError::Status(_) => ApiError::Upstream(format!(
                "the test delivery was sent but {error}; see the dispatcher's log"
            )),
        }
    }
}

/// `POST /v1/namespaces/{ns}/endpoints/{name}/test`.
pub async fn send(
    State(state): State<ApiState>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Result<Json<TestDeliveryStatus>, ApiError> {
    let identity = state
        .reviewer
        .check(request.headers(), Access::test_endpoint(&namespace, &name))
        .await?;
    state.endpoint_known(&namespace, &name).await?;
    let source = super::auth::peer_address(request.extensions());
    let body = state.body(request).await?;
    let payload = parse_test_body(&body)?;
    let status = send_test(&state.shared, &namespace, &name, new_nonce(), payload).await?;
    state.shared.security.record(
        SecurityEvent::new(
            SecurityKind::TestDelivery,
            format!("test delivery {} sent through the API", status.nonce),
        )
        .endpoint(&namespace, &name)
        .user(Some(&identity.username))
        .source(source),
    );
    Ok(Json(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_bodies() {
        assert_eq!(parse_test_body(b"").unwrap(), None);
        assert_eq!(parse_test_body(b"{}").unwrap(), None);
        let payload = parse_test_body(br#"{"test_payload":{"message":"hi"}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(payload["message"], "hi");
        let e = parse_test_body(br#"{"test_payload":[1]}"#).unwrap_err();
        assert_eq!(e.body()["error"]["field"], "test_payload");
        let e = parse_test_body(br#"{"payload":{}}"#).unwrap_err();
        assert_eq!(e.body()["error"]["field"], "payload");
        let e = parse_test_body(b"{").unwrap_err();
        assert_eq!(e.body()["error"]["code"], "malformed_json");
    }

    #[test]
    fn nonces_are_unique() {
        assert_ne!(new_nonce(), new_nonce());
        assert!(new_nonce().starts_with("api-"));
    }
}
