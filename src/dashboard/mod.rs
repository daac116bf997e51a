//! The developer dashboard: server-rendered pages under `/ui/` on the dispatcher's API port.
//!
//! # Why the dispatcher serves it
//! The dashboard shows what only the dispatcher has: the store (attempts, dead letters,
//! analytics, the security log), its caches of endpoints and subscriptions, and test deliveries.
//! Served from the same process and port as the HTTP API, it reads them directly, needs no second
//! Deployment, Service or credentials, and sees exactly what the API sees (with PostgreSQL, any
//! replica answers for any endpoint, as the API does).
//!
//! # Trust model: the API's
//! - Login takes a Kubernetes bearer token, checked by TokenReview (for the API server's own
//!   audience: the token is used against the API server). The cookie carries only an opaque
//!   session id (HttpOnly, SameSite=Strict, Path=/ui); the token stays in this process's memory
//!   ([`session`]). Sessions end at logout, after `--dashboard-idle-timeout` without a request,
//!   after `--dashboard-session-ttl`, or as soon as the token stops passing TokenReview.
//! - Every page asks SubjectAccessReview for that user ([`access`]): a user sees only the
//!   namespaces and endpoints RBAC lets them `get`/`list`, and an endpoint they may not `get`
//!   is "not found", exactly like one that does not exist.
//! - Mutations (suspend, resume, rotate the signing secret, replay) are made against the
//!   Kubernetes API **with the user's token**, so RBAC, admission and the cluster's audit log see
//!   the real person. A test delivery needs `update` on the endpoint, as the HTTP API does.
//! - Every POST needs the session's CSRF token in `X-CSRF-Token` and, when the browser sends
//!   `Origin`, the dashboard's own origin.
//! - Nothing is fetched at run time: the stylesheet and htmx (vendored, Zero-Clause BSD) are
//!   compiled into the binary ([`assets`]); a Content-Security-Policy allows only this origin.
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};

use crate::dispatcher::http::Reviewer;
use crate::dispatcher::Shared;

mod access;
mod actions;
pub mod analytics;
mod assets;
pub mod charts;
mod error;
pub mod gitops;
mod layout;
mod pages;
pub mod session;
mod user;

use session::{Lifetimes, Sessions};

/// What every dashboard handler shares.
#[derive(Clone)]
pub struct Dashboard {
    shared: Arc<Shared>,
    /// TokenReview without audiences: the token must work against the API server.
    reviewer: Arc<Reviewer>,
    sessions: Arc<Sessions>,
    /// How to reach the API server; the user's token replaces the dispatcher's credentials.
    kube_config: Arc<kube::Config>,
    secure_cookie: bool,
}

impl Dashboard {
    pub fn new(shared: Arc<Shared>, kube_config: kube::Config) -> Self {
        let config = &shared.config;
        let reviewer = Arc::new(Reviewer::new(
            shared.client.clone(),
            Duration::from_secs(config.auth_cache_seconds),
            Vec::new(),
        ));
        let sessions = Arc::new(Sessions::new(Lifetimes {
            absolute: config.dashboard_session_ttl,
            idle: config.dashboard_idle_timeout,
        }));
        Self {
            secure_cookie: config.dashboard_secure_cookie,
            shared,
            reviewer,
            sessions,
            kube_config: Arc::new(kube_config),
        }
    }
}

/// The `/ui` routes (nested under `/ui` by the API router).
pub fn router(dashboard: Dashboard) -> axum::Router {
    axum::Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login::form).post(pages::login::submit))
        .route("/logout", post(pages::login::logout))
        .route("/assets/{file}", get(assets::serve))
        .route("/endpoints", get(pages::endpoints::page))
        .route("/endpoints/rows", get(pages::endpoints::rows))
        .route(
            "/namespaces/{ns}/endpoints/{name}",
            get(pages::endpoint::page),
        )
        .route(
            "/namespaces/{ns}/endpoints/{name}/test",
            post(actions::test_delivery),
        )
        .route(
            "/namespaces/{ns}/endpoints/{name}/suspend",
            post(actions::suspend),
        )
        .route(
            "/namespaces/{ns}/endpoints/{name}/resume",
            post(actions::resume),
        )
        .route(
            "/namespaces/{ns}/endpoints/{name}/rotate",
            post(actions::rotate),
        )
        .route(
            "/namespaces/{ns}/endpoints/{name}/replay",
            post(actions::replay),
        )
        .route("/namespaces/{ns}/replays/{name}", get(pages::replay::page))
        .route("/events", get(pages::events::page))
        .route("/subscriptions", get(pages::subscriptions::page))
        .route("/security", get(pages::security::page))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn(layout::security_headers))
        .with_state(dashboard)
}
