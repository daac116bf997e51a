//! `/metrics` (Prometheus text format), `/healthz` (the process answers) and `/readyz` (the
//! process is ready for its job: caches synced, store open).
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

use super::metrics_text::{self, EncodeError};

/// Shared readiness flag and metrics registry.
#[derive(Clone)]
pub struct Health {
    ready: Arc<AtomicBool>,
    registry: Arc<Mutex<Registry>>,
    /// The length of the last plain-text exposition: the next one's buffer starts there.
    text_len: Arc<AtomicUsize>,
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
            text_len: Arc::new(AtomicUsize::new(0)),
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

    /// The metrics in the OpenMetrics text format, gzip-compressed when `gzip`
    /// ([`super::metrics_text`]). Blocking: the encoding of a large registry takes a while.
    fn exposition(&self, gzip: bool) -> Result<Exposition, EncodeError> {
        let registry = self.registry.lock().map_err(|_| EncodeError::poisoned())?;
        if gzip {
            return metrics_text::encode_gzip(&registry).map(Exposition::Gzip);
        }
        let last = self.text_len.load(Ordering::Relaxed);
        let text = metrics_text::encode_text(&registry, last + last / 8)?;
        self.text_len.store(text.len(), Ordering::Relaxed);
        Ok(Exposition::Text(text))
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
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .is_some_and(metrics_text::accepts_gzip);
    let encoded = tokio::task::spawn_blocking(move || health.exposition(gzip)).await;
    match encoded {
        Ok(Ok(Exposition::Text(text))) => {
            ([(header::CONTENT_TYPE, metrics_text::CONTENT_TYPE)], text).into_response()
        }
        Ok(Ok(Exposition::Gzip(bytes))) => (
            [
                (header::CONTENT_TYPE, metrics_text::CONTENT_TYPE),
                (header::CONTENT_ENCODING, "gzip"),
                (header::VARY, "Accept-Encoding"),
            ],
            bytes,
        )
            .into_response(),
        Ok(Err(error)) => {
            tracing::warn!(%error, "encoding metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "the metrics encoding task failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed").into_response()
        }
    }
}

/// A scrape's body.
enum Exposition {
    Text(String),
    Gzip(Vec<u8>),
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
    async fn metrics_are_gzipped_for_a_scraper_that_accepts_it() {
        let mut registry = Registry::default();
        let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
        registry.register("scrapes_seen", "A counter", counter.clone());
        counter.inc_by(7);
        let health = Health::new(registry);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, health.router(), std::future::pending()));
        let client = crate::runtime::tls::http_client();
        let url = format!("http://{addr}/metrics");

        let plain = client.get(&url).send().await.unwrap();
        assert_eq!(plain.headers().get("content-encoding"), None);
        let text = plain.text().await.unwrap();
        assert!(text.contains("scrapes_seen_total 7"), "{text}");

        let gzipped = client
            .get(&url)
            .header("accept-encoding", "gzip, deflate")
            .send()
            .await
            .unwrap();
        assert_eq!(gzipped.status().as_u16(), 200);
        assert_eq!(gzipped.headers()["content-encoding"], "gzip");
        assert_eq!(gzipped.headers()["vary"], "Accept-Encoding");
        let body = gzipped.bytes().await.unwrap();
        let mut unpacked = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(body.as_ref()),
            &mut unpacked,
        )
        .unwrap();
        // The process metrics move between scrapes; the registry's own series do not.
        let own = |text: &str| {
            text.lines()
                .filter(|l| l.contains("scrapes_seen"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(own(&unpacked), own(&text));
        assert!(unpacked.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn a_stop_while_starting_never_reports_ready() {
        let health = Health::new(Registry::default());
        let ready = std::future::pending::<()>();
        assert!(!health.ready_until(ready, async {}).await);
        assert!(!health.is_ready());
    }
}
