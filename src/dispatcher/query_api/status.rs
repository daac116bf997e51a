//! The query API's errors as Kubernetes writes them: a `v1` Status with a reason and code, so
//! kubectl prints `Error from server (Forbidden): …` as it does for any resource.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::dispatcher::http::error::ApiError;
use crate::query::GROUP;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{resource}.{GROUP} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    #[error("{0}")]
    NotFoundPath(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl QueryError {
    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            QueryError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            QueryError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            QueryError::NotFound { .. } | QueryError::NotFoundPath(_) => {
                (StatusCode::NOT_FOUND, "NotFound")
            }
            QueryError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            QueryError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            QueryError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            QueryError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }

    /// The `v1` Status body.
    pub fn body(&self) -> serde_json::Value {
        let (code, reason) = self.status();
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code.as_u16(),
        });
        if let QueryError::NotFound { resource, name } = self {
            status["details"] = json!({ "name": name, "group": GROUP, "kind": resource });
        }
        status
    }
}

impl From<StoreError> for QueryError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InvalidArgument(message) => QueryError::BadRequest(format!(
                "continue: {message}; pass metadata.continue exactly as returned"
            )),
            other => QueryError::Unavailable(format!("the delivery store: {other}")),
        }
    }
}

impl From<ApiError> for QueryError {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::AuthUnavailable(message) => QueryError::Unavailable(message),
            other => QueryError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let (code, _) = self.status();
        if code.is_server_error() {
            tracing::warn!(error = %self, "query API request failed");
        }
        (code, axum::Json(self.body())).into_response()
    }
}
