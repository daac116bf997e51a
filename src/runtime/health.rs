//! `/metrics` (Prometheus text format), `/healthz` (the process answers) and `/readyz` (the
//! process is ready for its job: caches synced, store open).
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

/// Shared readiness flag and metrics registry.
#[derive(Clone)]
pub struct Health {
    ready: Arc<AtomicBool>,
    registry: Arc<Mutex<Registry>>,
    /// When set, `/metrics` needs a token allowed to `get /metrics` (`--metrics-auth`).
    metrics_auth: Option<Arc<super::metrics_auth::MetricsAuth>>,
}

impl Health {
    /// Serves `registry` plus the build info and process metrics ([`super::process_metrics`]).
    pub fn new(mut registry: Registry) -> Self {
        super::process_metrics::register(&mut registry);
        Self {
            ready: Arc::new(AtomicBool::new(false)),
            registry: Arc::new(Mutex::new(registry)),
            metrics_auth: None,
        }
    }

    /// Puts `/metrics` behind TokenReview and SubjectAccessReview (`/healthz` and `/readyz` stay
    /// open: the kubelet probes them).
    pub fn with_metrics_auth(mut self, client: Option<kube::Client>) -> Self {
        self.metrics_auth = client.map(|c| Arc::new(super::metrics_auth::MetricsAuth::new(c)));
        self
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Ready from when `ready` resolves until `stop` does: not ready while starting, ready once
    /// started, not ready again as soon as the shutdown begins (so no new traffic is sent while
    /// the process drains). Returns once `stop` resolved; whether the process had become ready.
    pub async fn ready_until(
        &self,
        ready: impl std::future::Future<Output = ()>,
        stop: impl std::future::Future<Output = ()>,
    ) -> bool {
        tokio::pin!(stop);
        tokio::select! {
            _ = ready => {}
            _ = &mut stop => return false,
        }
        self.set_ready(true);
        tracing::info!("ready");
        stop.await;
        self.set_ready(false);
        true
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode_metrics(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &registry) {
                tracing::warn!(%error, "encoding metrics failed");
            }
        }
        out
    }

    /// The router serving `/metrics`, `/healthz` and `/readyz`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .with_state(self.clone())
    }
}

async fn metrics(
    State(health): State<Health>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if let Some(auth) = &health.metrics_auth {
        match auth.check(&headers).await {
            Ok(super::metrics_auth::Verdict::Allowed) => {}
            Ok(refused) => {
                let message = match &refused {
                    super::metrics_auth::Verdict::Unauthenticated(m)
                    | super::metrics_auth::Verdict::Forbidden(m) => m.clone(),
                    super::metrics_auth::Verdict::Allowed => String::new(),
                };
                return (refused.status(), message).into_response();
            }
            Err(error) => {
                tracing::warn!(%error, "could not check a /metrics scrape's token");
                return (StatusCode::SERVICE_UNAVAILABLE, error).into_response();
            }
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.encode_metrics(),
    )
        .into_response()
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if health.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves `router` on a bound listener until `shutdown` resolves, within the default limits
/// (`runtime::http_server`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    super::http_server::serve(listener, router, Default::default(), shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    async fn readyz(client: &reqwest::Client, addr: std::net::SocketAddr) -> u16 {
        client
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Waits (bounded) until `/readyz` answers `code`: the flag is set by another task.
    async fn answers(client: &reqwest::Client, addr: std::net::SocketAddr, code: u16) {
        for _ in 0..100 {
            if readyz(client, addr).await == code {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("/readyz never answered {code}");
    }

    #[tokio::test]
    async fn readyz_follows_start_ready_and_shutdown() {
        let health = Health::new(Registry::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, health.router(), std::future::pending()));
        let client = crate::runtime::tls::http_client();

        let (started, ready) = oneshot::channel::<()>();
        let (stop, stopped) = oneshot::channel::<()>();
        let tracked = tokio::spawn({
            let health = health.clone();
            async move {
                health
                    .ready_until(async { drop(ready.await) }, async { drop(stopped.await) })
                    .await
            }
        });
        // Starting: alive but not ready.
        assert_eq!(readyz(&client, addr).await, 503);
        let healthz = client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(healthz.status().as_u16(), 200);
        // Started.
        started.send(()).unwrap();
        answers(&client, addr, 200).await;
        // Shutdown: not ready at once, still alive while draining.
        stop.send(()).unwrap();
        assert!(tracked.await.unwrap(), "it had become ready");
        assert_eq!(readyz(&client, addr).await, 503);
        assert!(!health.is_ready());
    }

    #[tokio::test]
    async fn a_stop_while_starting_never_reports_ready() {
        let health = Health::new(Registry::default());
        let ready = std::future::pending::<()>();
        assert!(!health.ready_until(ready, async {}).await);
        assert!(!health.is_ready());
    }
}
