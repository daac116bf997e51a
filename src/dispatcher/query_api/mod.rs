//! The aggregated query API (`query.webhooks.pitchey.io/v1alpha1`), served over TLS on
//! `--query-api-addr` and registered with the Kubernetes API server by an APIService, as
//! metrics-server is: `kubectl get webhookdeliveries -n crm --field-selector endpoint=crm`
//! works with any kubeconfig that works with the cluster (tokens, client certificates, exec
//! plugins), because the API server authenticates the user and proxies the request here.
//!
//! Authentication: the API server's front-proxy client certificate, verified against
//! `requestheader-client-ca-file` from ConfigMap `kube-system/extension-apiserver-authentication`
//! (re-read every minute, with the serving certificate files), and the user it names in
//! `X-Remote-User`/`-Group`/`-Extra-*` ([`front_proxy`]). Authorization: a SubjectAccessReview
//! for that user, per request (cached like the HTTP API's). Reads come from the delivery store,
//! so with PostgreSQL any replica answers for any endpoint. Objects and selectors: `crate::query`;
//! the whole reference: docs/query-api.md.
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use tokio::net::TcpListener;
use tracing::{info, warn, Instrument};

use super::http::Reviewer;
use super::Shared;
use status::QueryError;

pub mod front_proxy;
pub mod handlers;
pub mod status;
pub mod tls;
pub mod watch;

use front_proxy::FrontProxy;
pub use tls::ServingFiles;

/// How often the front-proxy settings and the serving certificate are re-read.
const REFRESH: Duration = Duration::from_secs(60);
/// How soon a failed read is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share.
#[derive(Clone)]
pub struct QueryState {
    pub shared: Arc<Shared>,
    pub reviewer: Arc<Reviewer>,
    proxy: Arc<RwLock<Option<FrontProxy>>>,
}

/// The verified client certificate's common name, per connection.
#[derive(Clone)]
struct ClientName(Option<String>);

/// The routes, behind authentication.
fn router(state: QueryState) -> axum::Router {
    let base = "/apis/query.webhooks.pitchey.io/v1alpha1";
    axum::Router::new()
        .route("/apis", get(handlers::group_list))
        .route("/apis/query.webhooks.pitchey.io", get(handlers::group))
        .route(base, get(handlers::resources))
        .route(
            &format!("{base}/{{resource}}"),
            get(handlers::list_all).fallback(handlers::read_only),
        )
        .route(
            &format!("{base}/namespaces/{{ns}}/{{resource}}"),
            get(handlers::list_namespaced).fallback(handlers::read_only),
        )
        .route(
            &format!("{base}/namespaces/{{ns}}/{{resource}}/{{name}}"),
            get(handlers::get_one).fallback(handlers::read_only),
        )
        .fallback(handlers::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// Every request: a verified front-proxy certificate; resource requests: a named user too.
async fn authenticate(
    State(state): State<QueryState>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = request
        .extensions()
        .get::<ClientName>()
        .and_then(|c| c.0.clone());
    let proxy = state
        .proxy
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let Some(proxy) = proxy else {
        return QueryError::Unavailable("the front-proxy settings are not loaded yet".to_owned())
            .into_response();
    };
    let path = request.uri().path().to_owned();
    let discovery = path == "/apis" || path.matches('/').count() <= 3;
    let identity = match proxy.identify(client.as_deref(), request.headers()) {
        Ok(identity) => identity,
        Err(front_proxy::Refused::NoUser) if discovery && client.is_some() => Default::default(),
        Err(refused) => return QueryError::Unauthorized(refused.to_string()).into_response(),
    };
    let span = tracing::info_span!("query", method = %request.method(), path = %path, user = %identity.username);
    request.extensions_mut().insert(identity);
    let response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(status = response.status().as_u16(), "answered"));
    response
}

/// Serves until `stop` resolves. Connections are refused until the front-proxy settings and
/// the serving certificate have been read once.
pub async fn serve(
    shared: Arc<Shared>,
    reviewer: Arc<Reviewer>,
    listener: TcpListener,
    files: ServingFiles,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let proxy = Arc::new(RwLock::new(None));
    let tls = Arc::new(RwLock::new(None));
    tokio::spawn(refresh(
        shared.client.clone(),
        files,
        proxy.clone(),
        tls.clone(),
    ));
    let state = QueryState {
        shared,
        reviewer,
        proxy,
    };
    let app = router(state);
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "query API listening (TLS)");
    }
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "query API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let config = tls
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(config) = config else {
            continue; // not ready: the connection is closed
        };
        tokio::spawn(connection(tcp, peer, config, app.clone()));
    }
}

/// One connection: the handshake, then HTTP/1.1 with the client's certificate name attached.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    app: axum::Router,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "query API: TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let name = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| tls::common_name(cert));
    let app = app.layer(Extension(ClientName(name)));
    let service = hyper_util::service::TowerToHyperService::new(app);
    if let Err(error) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%peer, %error, "query API connection ended with an error");
    }
}

/// Reads the front-proxy settings and the serving files now and every [`REFRESH`].
async fn refresh(
    client: kube::Client,
    files: ServingFiles,
    proxy: Arc<RwLock<Option<FrontProxy>>>,
    tls: Arc<RwLock<Option<Arc<rustls::ServerConfig>>>>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, front_proxy::CONFIG_MAP_NAMESPACE);
    let mut last_error = String::new();
    loop {
        let loaded = async {
            let config_map = api.get(front_proxy::CONFIG_MAP_NAME).await.map_err(|e| {
                format!(
                    "reading ConfigMap {}/{}: {e}",
                    front_proxy::CONFIG_MAP_NAMESPACE,
                    front_proxy::CONFIG_MAP_NAME
                )
            })?;
            let settings = FrontProxy::from_config_map(&config_map.data.unwrap_or_default())
                .map_err(|e| e.to_string())?;
            let server =
                tls::server_config(&files, &settings.client_ca_pem).map_err(|e| e.to_string())?;
            Ok::<_, String>((settings, server))
        }
        .await;
        let retry = if loaded.is_ok() { REFRESH } else { RETRY };
        match loaded {
            Ok((settings, server)) => {
                if !last_error.is_empty() || proxy.read().map(|p| p.is_none()).unwrap_or(true) {
                    info!("query API: front-proxy settings and serving certificate loaded");
                }
                last_error.clear();
                *proxy
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(settings);
                *tls.write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(server);
            }
            Err(error) => {
                if error != last_error {
                    warn!(%error, "query API: cannot load its TLS settings (keeping the last good ones)");
                    last_error = error;
                }
            }
        }
        tokio::time::sleep(retry).await;
    }
}
