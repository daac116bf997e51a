//! The API's errors and their JSON form:
//! `{"error": {"code": "missing_field", "message": "type: required …", "field": "type"}}`
//! (`field` only when one field is at fault).
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::TokenError;
use crate::dispatcher::publish::PublishError;
use crate::store::StoreError;

/// Seconds a client is asked to wait after 429 or 503.
const RETRY_AFTER_SATURATED: &str = "1";
const RETRY_AFTER_UNAVAILABLE: &str = "5";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; `field` names the part at fault (`type`, `events[3].data`, `limit`).
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        field: Option<String>,
        message: String,
    },
    #[error("{0}")]
    Unauthenticated(TokenError),
    #[error("the bearer token was not accepted{}", reason_suffix(.0))]
    TokenRejected(String),
    #[error("user `{user}` may not {access}{}", reason_suffix(.reason))]
    Forbidden {
        user: String,
        access: String,
        reason: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the store is saturated; nothing was stored, retry later")]
    Saturated,
    #[error("the store is unavailable ({0}); nothing was stored, retry later")]
    StoreUnavailable(String),
    /// The store's disk is full: 507, nothing stored.
    #[error("{0}; retry later")]
    StoreFull(String),
    #[error("authentication is unavailable ({0}); retry later")]
    AuthUnavailable(String),
    /// The dispatcher has just started and its caches are not synced yet; nothing was stored.
    #[error("{0}; nothing was stored")]
    Starting(String),
    #[error("{0}")]
    EndpointNotReady(String),
    #[error("{0}")]
    Upstream(String),
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

impl ApiError {
    /// 400 naming `field`.
    pub fn field(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// 400 without one field at fault (e.g. malformed JSON).
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            field: None,
            message: message.into(),
        }
    }

    /// The same error, its field (and message) prefixed, e.g. `type` → `events[3].type`.
    pub fn within(self, prefix: &str) -> Self {
        match self {
            ApiError::BadRequest {
                code,
                field: Some(field),
                message,
            } => {
                let message = match message.strip_prefix(&format!("{field}:")) {
                    Some(rest) => format!("{prefix}.{field}:{rest}"),
                    None => format!("{prefix}.{field}: {message}"),
                };
                ApiError::BadRequest {
                    code,
                    field: Some(format!("{prefix}.{field}")),
                    message,
                }
            }
            other => other,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated(_) | ApiError::TokenRejected(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Saturated => StatusCode::TOO_MANY_REQUESTS,
            ApiError::EndpointNotReady(_) => StatusCode::CONFLICT,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::StoreUnavailable(_)
            | ApiError::AuthUnavailable(_)
            | ApiError::Starting(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::StoreFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::TokenRejected(_) => "invalid_token",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Saturated => "saturated",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::StoreFull(_) => "store_full",
            ApiError::AuthUnavailable(_) => "auth_unavailable",
            ApiError::Starting(_) => "starting",
            ApiError::EndpointNotReady(_) => "endpoint_not_ready",
            ApiError::Upstream(_) => "upstream_failed",
        }
    }

    fn field_name(&self) -> Option<&str> {
        match self {
            ApiError::BadRequest { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({"code": self.code(), "message": self.to_string()});
        if let (Some(field), Some(object)) = (self.field_name(), error.as_object_mut()) {
            object.insert("field".into(), field.into());
        }
        json!({ "error": error })
    }
}

impl From<PublishError> for ApiError {
    fn from(error: PublishError) -> Self {
        match error {
            PublishError::InvalidType(_) => {
                ApiError::field("invalid_field", "type", error.to_string())
            }
            PublishError::ConflictingEventType => {
                ApiError::field("invalid_field", "data.event_type", error.to_string())
            }
            PublishError::Saturated => ApiError::Saturated,
            PublishError::NotReady => ApiError::Starting(error.to_string()),
            PublishError::Draining => ApiError::StoreUnavailable(error.to_string()),
            PublishError::Store(store) => store.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Saturated { .. } => ApiError::Saturated,
            full @ StoreError::DiskFull(_) => ApiError::StoreFull(full.to_string()),
            other => ApiError::StoreUnavailable(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, %status, "request refused");
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthenticated(_) | ApiError::TokenRejected(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Forbidden { user, access, .. } => {
                // For the security log (the `observe` middleware): who was refused what.
                response.extensions_mut().insert(Refused { user, access });
            }
            ApiError::Saturated => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SATURATED),
                );
            }
            ApiError::StoreUnavailable(_)
            | ApiError::StoreFull(_)
            | ApiError::AuthUnavailable(_)
            | ApiError::Starting(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_UNAVAILABLE),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_names_the_field() {
        let error = ApiError::field("missing_field", "type", "type: required");
        assert_eq!(
            error.body(),
            json!({"error": {"code": "missing_field", "message": "type: required", "field": "type"}})
        );
        let nested = error.within("events[3]");
        assert_eq!(
            nested.body(),
            json!({"error": {"code": "missing_field", "message": "events[3].type: required", "field": "events[3].type"}})
        );
        assert_eq!(nested.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn body_without_field() {
        let body = ApiError::bad_request("malformed_json", "at line 1").body();
        assert_eq!(body["error"]["code"], "malformed_json");
        assert!(body["error"].get("field").is_none());
    }

    #[test]
    fn a_full_disk_is_507_with_retry_after() {
        let error = ApiError::from(StoreError::DiskFull("database or disk is full".into()));
        assert_eq!(error.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(error.body()["error"]["code"], "store_full");
        assert!(error.to_string().contains("nothing was stored"));
        let response = error.into_response();
        assert!(response.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn publish_errors_map_to_codes() {
        assert_eq!(
            ApiError::from(PublishError::Saturated).status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            ApiError::from(PublishError::Store(StoreError::Closed)).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let conflict = ApiError::from(PublishError::ConflictingEventType);
        assert_eq!(conflict.body()["error"]["field"], "data.event_type");
        let saturated = ApiError::Saturated.into_response();
        assert_eq!(saturated.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn unsynced_caches_answer_503_starting() {
        let starting = ApiError::from(PublishError::NotReady);
        assert_eq!(starting.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = starting.body();
        assert_eq!(body["error"]["code"], "starting", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("starting") && message.contains("not loaded"),
            "{message}"
        );
        let response = starting.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }

    #[test]
    fn forbidden_names_user_and_access() {
        let error = ApiError::Forbidden {
            user: "nobody".into(),
            access: "create webhookevents.webhooks.pitchey.io in namespace `a`".into(),
            reason: String::new(),
        };
        assert_eq!(
            error.to_string(),
            "user `nobody` may not create webhookevents.webhooks.pitchey.io in namespace `a`"
        );
    }
}

/// Who a 403 refused, and what: kept on the response for the security log.
#[derive(Clone, Debug)]
pub struct Refused {
    pub user: String,
    pub access: String,
}
