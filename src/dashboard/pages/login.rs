//! Login with a Kubernetes bearer token, and logout.
use std::time::Instant;

use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use crate::dashboard::error::PageError;
use crate::dashboard::layout;
use crate::dashboard::session::Token;
use crate::dashboard::user::{same_origin, set_cookie, User};
use crate::dashboard::Dashboard;
use crate::dispatcher::http::auth::peer_address;
use crate::dispatcher::http::error::ApiError;
use crate::security::{SecurityEvent, SecurityKind};

fn login_page(error: Option<&str>) -> Markup {
    layout::bare(
        "Log in",
        html! {
            div.login {
                @if let Some(error) = error {
                    div.notice.error role="alert" { (error) }
                }
                p {
                    "Paste a Kubernetes bearer token. What you see and may do here is what "
                    "Kubernetes RBAC grants that token's user; changes are made as that user."
                }
                form method="post" action="/ui/login" {
                    label for="token" { "Bearer token" }
                    textarea #token name="token" required autocomplete="off" spellcheck="false" autofocus {}
                    p { button.primary type="submit" { "Log in" } }
                }
                details {
                    summary { "Where do I get a token?" }
                    p { "For a ServiceAccount (Kubernetes 1.24 and later):" }
                    pre { "kubectl create token <serviceaccount> -n <namespace> --duration 8h" }
                    p {
                        "On Kubernetes 1.20 to 1.23 (no " code { "kubectl create token" } "), use the token "
                        "of the ServiceAccount's token Secret:"
                    }
                    pre { "kubectl get secret -n <namespace> <serviceaccount-token-secret> -o jsonpath='{.data.token}' | base64 -d" }
                    p { "Tokens of your own kubeconfig user work too, when it has one (OIDC id tokens included)." }
                }
            }
        },
    )
}

/// `GET /ui/login`.
pub async fn form() -> Markup {
    login_page(None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /ui/login`: TokenReview, then a session.
pub async fn submit(
    State(dashboard): State<Dashboard>,
    request: Request,
) -> Result<Response, PageError> {
    same_origin(request.headers())?;
    let from = peer_address(request.extensions());
    let Form(LoginForm { token }) = Form::<LoginForm>::from_request(request, &())
        .await
        .map_err(|e| PageError::BadRequest(format!("the login form was not readable: {e}")))?;
    let token = token.trim();
    if token.is_empty() {
        return Ok((
            StatusCode::BAD_REQUEST,
            login_page(Some("Paste a token first.")),
        )
            .into_response());
    }
    let identity = match dashboard.reviewer.identify(token).await {
        Ok(identity) => identity,
        Err(ApiError::TokenRejected(reason)) => {
            let reason = if reason.is_empty() {
                String::new()
            } else {
                format!(" ({reason})")
            };
            let message = format!(
                "The API server did not accept this token{reason}. Check that it is complete and not expired."
            );
            return Ok((StatusCode::UNAUTHORIZED, login_page(Some(&message))).into_response());
        }
        Err(other) => return Err(other.into()),
    };
    let lifetimes = dashboard.sessions.lifetimes();
    let username = identity.username.clone();
    let id = dashboard
        .sessions
        .create(Token::new(token), identity, Instant::now());
    dashboard.shared.security.record(
        SecurityEvent::new(
            SecurityKind::DashboardLogin,
            format!("{username} logged in to the dashboard"),
        )
        .user(Some(&username))
        .source(from),
    );
    let cookie = set_cookie(&id, dashboard.secure_cookie, lifetimes.absolute);
    Ok((
        [(header::SET_COOKIE, cookie)],
        Redirect::to("/ui/endpoints"),
    )
        .into_response())
}

/// `POST /ui/logout`: ends the session and clears the cookie.
pub async fn logout(State(dashboard): State<Dashboard>, user: Result<User, PageError>) -> Response {
    if let Ok(user) = &user {
        dashboard.sessions.remove(&user.session_id);
        dashboard.shared.security.record(user.did(
            SecurityKind::DashboardLogout,
            format!("{} logged out", user.name()),
        ));
    }
    // Without a verified session (no CSRF token, or it had ended) nothing is removed; clearing
    // this browser's cookie is harmless either way.
    let cookie = set_cookie("", dashboard.secure_cookie, std::time::Duration::ZERO);
    (
        [
            (header::SET_COOKIE, cookie),
            (
                header::HeaderName::from_static("hx-redirect"),
                "/ui/login".to_owned(),
            ),
        ],
        Redirect::to("/ui/login"),
    )
        .into_response()
}
