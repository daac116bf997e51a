//! What a dashboard request can fail with, rendered as a page (or, for htmx, a fragment).
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::layout;
use crate::dispatcher::http::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// No session, or it ended: back to the login page.
    #[error("log in first")]
    Login,
    /// Unknown, or not visible to this user (the two look the same).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// A POST without the session's CSRF token, or from another origin.
    #[error("{0}")]
    Csrf(String),
    /// The API server or the store could not answer.
    #[error("{0}")]
    Unavailable(String),
    /// The Kubernetes API refused an action made with the user's token (RBAC, admission).
    #[error("{0}")]
    Refused(String),
}

impl PageError {
    fn status(&self) -> StatusCode {
        match self {
            PageError::Login => StatusCode::UNAUTHORIZED,
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::Csrf(_) | PageError::Refused(_) => StatusCode::FORBIDDEN,
            PageError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::Unauthenticated(_) | ApiError::TokenRejected(_) => PageError::Login,
            ApiError::NotFound(message) => PageError::NotFound(message),
            ApiError::Forbidden { .. } => PageError::NotFound("not found".into()),
            other => PageError::Unavailable(other.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for PageError {
    fn from(error: crate::store::StoreError) -> Self {
        PageError::Unavailable(format!("the store could not answer: {error}"))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if let PageError::Login = self {
            // htmx follows HX-Redirect; a plain navigation follows the 303.
            let mut response = Redirect::to("/ui/login").into_response();
            response
                .headers_mut()
                .insert("HX-Redirect", HeaderValue::from_static("/ui/login"));
            return response;
        }
        let status = self.status();
        let body = html! {
            div.notice.error role="alert" {
                strong { (status.canonical_reason().unwrap_or("Error")) ": " }
                (self.to_string())
            }
        };
        let mut response = (status, layout::bare("Error", body.clone())).into_response();
        response.extensions_mut().insert(layout::ErrorNotice(body));
        response
    }
}

/// The fallback under `/ui/`.
pub async fn not_found() -> PageError {
    PageError::NotFound("no such page".into())
}
