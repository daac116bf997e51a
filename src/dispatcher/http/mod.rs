//! The dispatcher's HTTP API (`--listen-addr`): ingest, dead letters, delivery history,
//! analytics, test deliveries.
//!
//! # Routes
//! | method and path | access checked (SubjectAccessReview, group `webhooks.pitchey.io`) | answer |
//! | --- | --- | --- |
//! | `POST /v1/namespaces/{ns}/events` | `create webhookevents` in `{ns}` | 202 [`Published`](crate::dispatcher::publish::Published) |
//! | `POST /v1/namespaces/{ns}/events:batch` | `create webhookevents` in `{ns}` | 202 `{"results": [Published, …]}` |
//! | `GET /v1/namespaces/{ns}/deadletters?endpoint=&cursor=&limit=` | `get webhookendpoints {endpoint}`, or `list webhookendpoints` without `endpoint` | 200 page of dead letters |
//! | `GET /v1/namespaces/{ns}/endpoints/{name}/deliveries?cursor=&limit=` | `get webhookendpoints {name}` | 200 page of attempts |
//! | `GET /v1/namespaces/{ns}/endpoints/{name}/analytics?period=&start_date=&end_date=` | `get webhookendpoints {name}` | 200 analytics |
//! | `POST /v1/namespaces/{ns}/endpoints/{name}/test` | `update webhookendpoints {name}` | 200 `status.lastTest` |
//! | `POST /v1/namespaces/{ns}/endpoints/{name}/transform:preview` | `get webhookendpoints {name}` | 200 what the transform makes of an event ([`transform_preview`]) |
//! | `GET /v1/namespaces/{ns}/security-events?kind=&cursor=&limit=` | `list webhookendpoints` in `{ns}` | 200 page of the namespace's security log |
//! | `GET /v1/security-events?kind=&cursor=&limit=` | `list webhookendpoints` in every namespace | 200 page of the whole security log (entries of no namespace included) |
//!
//! The developer dashboard is mounted under `/ui/` (`crate::dashboard`, unless `--dashboard=false`);
//! it has its own sessions and the same checks (docs/dashboard.md).
//!
//! Every route needs `Authorization: Bearer <token>`: the token is checked with a TokenReview,
//! then the user and groups it names with a SubjectAccessReview, so Kubernetes RBAC decides who
//! may publish or read where. Both answers are cached for `--auth-cache-seconds` (keyed by the
//! SHA-256 of the token; at most 4096 entries each). Authentication and authorization come
//! before anything else, so an unauthorized caller learns nothing (not even whether an endpoint
//! exists).
//!
//! # Publishing
//! `POST …/events` with `{"type": "user.created", "data": {…}, "id": "optional-idempotency-key"}`
//! (`data` defaults to `{}`; `data.event_type`, if given, must equal `type`). The answer comes
//! only after the event and its deliveries are durably committed:
//! `202 {"event_id": "evt_…", "deliveries": 2, "duplicate": false}`. The same `id` in the
//! namespace within the idempotency window (`--idempotency-window`, default 24 h) is the same
//! event: `duplicate: true`, the first `event_id`, no new deliveries.
//!
//! `POST …/events:batch` with `{"events": [{type, data, id}, …]}` (1 to 1000 events): all are
//! validated before any is stored (a 400 names the index, e.g. `events[3].type`), then stored in
//! one commit: `202 {"results": [{"event_id", "deliveries", "duplicate"}, …]}` in request order.
//!
//! # Reads
//! Pages are newest first: `{"items": [...], "next_cursor": "…" | null}`; pass `next_cursor` as
//! `cursor` for the next page; `limit` is 1 to 500 (default 50).
//!
//! A delivery attempt (`…/deliveries`):
//! `{"delivery_id": 7, "event_id": "evt_…", "event_type": "user.created", "attempt": 1,
//! "at": "<RFC 3339>", "status_code": 500 | null, "latency_ms": 12 | null, "error": "…" | null,
//! "response_snippet": "…" | null, "success": false, "outcome": "retry"}` (`outcome`: what followed
//! the attempt: `delivered`, `retry`, `dead_lettered`, `held`, `filtered`).
//!
//! A dead letter (`…/deadletters`): `{"delivery_id", "endpoint", "event": {"event_id",
//! "event_type", "created_at", "data": {…}}, "attempts": 5, "reason", "last_status_code",
//! "last_error", "dead_lettered_at", "replay_id", "history": [attempt, … oldest first]}`.
//! Dead letters of endpoints that no longer exist are still listed.
//!
//! Analytics (`…/analytics`): `period` is `hour` (default) or `day`; `start_date`/`end_date` are
//! RFC 3339 times or dates `YYYY-MM-DD` (UTC; an end date includes its day); the default range is
//! the last 24 hours; at most 1000 buckets.
//! `{"endpoint": "crm", "period": "day", "start_date": "<RFC 3339>", "end_date": "<RFC 3339>",
//! "buckets": [{"start", "attempts", "successes", "failures", "success_rate": 0.98 | null,
//! "avg_latency_ms": 41.5 | null}, …], "totals": {"attempts", "successes", "failures",
//! "success_rate", "avg_latency_ms"}}`; every bucket of the range is present, empty ones too.
//!
//! # Test deliveries
//! `POST …/endpoints/{name}/test` with an optional `{"test_payload": {…}}` sends a signed
//! `webhook.test` event at once and answers 200 with the result, as recorded in
//! `status.lastTest`: `{"nonce": "api-…", "time", "statusCode", "latencyMs", "error"}`. A
//! receiver's failure is a 200 whose `error` says what happened; 409 when the endpoint is not
//! ready (no signing Secret or policy yet).
//!
//! # Errors
//! `{"error": {"code": "…", "message": "…", "field": "…"}}`, `field` when one part of the request
//! is at fault (`type`, `data`, `events[3].type`, `limit`, `start_date`, …):
//! 400 (`malformed_json` with line and column, `missing_field`, `invalid_field`, `unknown_field`,
//! `invalid_body`, `invalid_query`), 401 (`unauthenticated`, `invalid_token`), 403 (`forbidden`),
//! 404 (`not_found`: an endpoint not in the cache, a namespace this dispatcher does not watch, an
//! unknown route), 405, 409 (`endpoint_not_ready`), 413 (`payload_too_large`, over
//! `--max-body-bytes`), 429 (`saturated`, with `Retry-After`), 502, 503 (`store_unavailable`,
//! `auth_unavailable`, or `starting`: the dispatcher has just started and its caches are not
//! synced after a 5 s wait; with `Retry-After`). Nothing is stored for a refused request.
//!
//! Every response is counted in `webhook_operator_dispatcher_ingest_requests_total{code}`, and
//! every request runs in a tracing span `api` (method, path, user, status).
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tracing::Instrument;

use super::metrics::IngestLabels;
use super::publish::{caches_synced, CACHE_WAIT};
use super::Shared;
use crate::api::WebhookEndpoint;

pub mod auth;
pub mod error;
pub mod history;
pub mod ingest;
pub mod review;
pub mod security;
pub mod test_endpoint;
pub mod transform_preview;

use error::ApiError;
pub use review::Reviewer;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    shared: Arc<Shared>,
    reviewer: Arc<Reviewer>,
}

impl ApiState {
    /// 404 for a namespace this dispatcher does not watch (it could route nothing there).
    fn served(&self, namespace: &str) -> Result<(), ApiError> {
        match &self.shared.config.watch_namespace {
            Some(watched) if watched != namespace => Err(ApiError::NotFound(format!(
                "this dispatcher serves namespace `{watched}` only, not `{namespace}`"
            ))),
            _ => Ok(()),
        }
    }

    /// The endpoint as the dispatcher's cache holds it; 404 unless it exists.
    async fn endpoint_known(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<WebhookEndpoint>, ApiError> {
        self.served(namespace)?;
        caches_synced(&self.shared.cache, CACHE_WAIT).await?;
        self.shared.cache.endpoint(namespace, name).ok_or_else(|| {
            ApiError::NotFound(format!(
                "WebhookEndpoint `{name}` not found in namespace `{namespace}`"
            ))
        })
    }

    /// The request body, at most `--max-body-bytes` (413 beyond).
    async fn body(&self, request: Request) -> Result<Bytes, ApiError> {
        let limit = self.shared.config.max_body_bytes;
        match Bytes::from_request(request, &()).await {
            Ok(body) => Ok(body),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge { limit })
            }
            Err(rejection) => Err(ApiError::bad_request(
                "unreadable_body",
                format!("reading the request body failed: {}", rejection.body_text()),
            )),
        }
    }
}

/// The `/v1/...` routes.
pub fn router(shared: Arc<Shared>, dashboard: Option<crate::dashboard::Dashboard>) -> axum::Router {
    let reviewer = Arc::new(Reviewer::new(
        shared.client.clone(),
        Duration::from_secs(shared.config.auth_cache_seconds),
        shared.config.token_audiences.clone(),
    ));
    let limit = shared.config.max_body_bytes;
    let state = ApiState {
        shared: shared.clone(),
        reviewer,
    };
    let mut app = routes().with_state(state);
    if let Some(dashboard) = dashboard {
        app = app.nest("/ui", crate::dashboard::router(dashboard));
    }
    app.layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(shared, observe))
}

fn routes() -> axum::Router<ApiState> {
    axum::Router::new()
        .route("/v1/namespaces/{ns}/events", post(ingest::publish_one))
        .route(
            "/v1/namespaces/{ns}/events:batch",
            post(ingest::publish_many),
        )
        .route(
            "/v1/namespaces/{ns}/deadletters",
            get(history::dead_letters),
        )
        .route(
            "/v1/namespaces/{ns}/endpoints/{name}/deliveries",
            get(history::deliveries),
        )
        .route(
            "/v1/namespaces/{ns}/endpoints/{name}/analytics",
            get(history::analytics),
        )
        .route(
            "/v1/namespaces/{ns}/endpoints/{name}/test",
            post(test_endpoint::send),
        )
        .route(
            "/v1/namespaces/{ns}/endpoints/{name}/transform:preview",
            post(transform_preview::preview),
        )
        .route(
            "/v1/namespaces/{ns}/security-events",
            get(security::in_namespace),
        )
        .route("/v1/security-events", get(security::everywhere))
        .fallback(|request: Request| async move {
            ApiError::NotFound(format!(
                "no route {} {}",
                request.method(),
                request.uri().path()
            ))
        })
        .method_not_allowed_fallback(|request: Request| async move {
            ApiError::MethodNotAllowed(format!(
                "{} is not allowed on {}",
                request.method(),
                request.uri().path()
            ))
        })
}

/// A tracing span per request, and every response counted by status code.
async fn observe(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "api",
        method = %request.method(),
        path = %request.uri().path(),
        user = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    // A caller's trace context makes this request's span a child of the caller's.
    crate::runtime::trace_context::set_parent(
        &span,
        request
            .headers()
            .get(crate::runtime::trace_context::TRACEPARENT)
            .and_then(|v| v.to_str().ok()),
    );
    let started = Instant::now();
    let source = auth::peer_address(request.extensions());
    // Filed under the path's namespace only when this dispatcher serves it (its Events go there).
    let namespace = namespace_of(request.uri().path()).filter(|ns| {
        shared
            .config
            .watch_namespace
            .as_ref()
            .is_none_or(|watched| watched == ns)
    });
    let path = request.uri().path().to_owned();
    let response = next.run(request).instrument(span.clone()).await;
    let code = response.status().as_u16();
    if code == 401 || code == 403 {
        shared.security.record(refusal(
            code,
            &path,
            namespace.as_deref(),
            source,
            response.extensions().get::<error::Refused>(),
        ));
    }
    span.record("status", code);
    shared
        .metrics
        .ingest_requests
        .get_or_create(&IngestLabels { code })
        .inc();
    shared
        .metrics
        .request_seconds
        .observe(started.elapsed().as_secs_f64());
    span.in_scope(|| {
        tracing::debug!(
            status = code,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request"
        )
    });
    response.into_response()
}

/// The namespace a `/v1/namespaces/{ns}/…` path addresses.
fn namespace_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v1/namespaces/")?;
    let namespace = rest.split('/').next()?;
    (!namespace.is_empty()).then(|| namespace.to_owned())
}

/// The security log entry of a 401 or 403 answer.
fn refusal(
    code: u16,
    path: &str,
    namespace: Option<&str>,
    source: Option<String>,
    refused: Option<&error::Refused>,
) -> crate::security::SecurityEvent {
    use crate::security::{SecurityEvent, SecurityKind};
    let event = match (code, refused) {
        (403, Some(refused)) => SecurityEvent::new(
            SecurityKind::AccessDenied,
            format!("{path}: {} may not {}", refused.user, refused.access),
        )
        .user(Some(&refused.user)),
        (403, None) => SecurityEvent::new(SecurityKind::AccessDenied, format!("{path}: forbidden")),
        _ => SecurityEvent::new(
            SecurityKind::AuthenticationFailed,
            format!("{path}: no valid bearer token"),
        ),
    };
    let event = event.source(source);
    match namespace {
        Some(namespace) => event.namespace(namespace),
        None => event,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_namespace_the_source_and_the_user() {
        assert_eq!(
            namespace_of("/v1/namespaces/shop/events").as_deref(),
            Some("shop")
        );
        assert_eq!(namespace_of("/v1/security-events"), None);
        assert_eq!(namespace_of("/ui/login"), None);
        let denied = refusal(
            403,
            "/v1/namespaces/shop/events",
            Some("shop"),
            Some("10.0.0.9".into()),
            Some(&error::Refused {
                user: "bob".into(),
                access: "create webhookevents".into(),
            }),
        );
        assert_eq!(denied.kind, crate::security::SecurityKind::AccessDenied);
        assert_eq!(denied.user.as_deref(), Some("bob"));
        assert_eq!(denied.namespace.as_deref(), Some("shop"));
        assert_eq!(denied.source.as_deref(), Some("10.0.0.9"));
        let anonymous = refusal(401, "/v1/x", None, None, None);
        assert_eq!(
            anonymous.kind,
            crate::security::SecurityKind::AuthenticationFailed
        );
        assert_eq!(anonymous.namespace, None);
    }

    /// `events` and `events:batch` are distinct routes (axum 0.8 path syntax).
    #[tokio::test]
    async fn batch_suffix_routes() {
        let app: axum::Router = axum::Router::new()
            .route("/v1/namespaces/{ns}/events", post(|| async { "one" }))
            .route(
                "/v1/namespaces/{ns}/events:batch",
                post(|| async { "batch" }),
            )
            .route("/v1/namespaces/{ns}/deadletters", get(|| async { "dead" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = crate::runtime::tls::http_client();
        let post = |path: &str| client.post(format!("http://{addr}{path}")).send();
        let text =
            |r: reqwest::Response| async move { (r.status().as_u16(), r.text().await.unwrap()) };
        assert_eq!(
            text(post("/v1/namespaces/a/events").await.unwrap()).await,
            (200, "one".to_string())
        );
        assert_eq!(
            text(post("/v1/namespaces/a/events:batch").await.unwrap()).await,
            (200, "batch".to_string())
        );
        assert_eq!(
            post("/v1/namespaces/a/events:other")
                .await
                .unwrap()
                .status(),
            404
        );
    }
}
