//! The HTTP client: the only part of the delivery engine that does I/O.
//!
//! One [`DeliveryClient`] (one reqwest client, one connection pool with keep-alive) serves all
//! endpoints. It speaks HTTP/2 when a TLS server offers it through ALPN, never follows redirects
//! (a 3xx is a failure with the `Location` in its message), never uses an environment proxy
//! (which would bypass the egress checks), reads at most `max_response_capture_bytes` of a
//! response body, and enforces the [`EgressPolicy`] twice: on the URL before sending (scheme, IP
//! literals, which reqwest never resolves) and on every address a host name resolves to, at
//! connect time, through a custom resolver — so DNS rebinding cannot reach a refused address.
//! A refused destination gives an [`ErrorKind::Blocked`] result and a `warn` line with target
//! `audit`.
use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

use super::egress::{self, EgressError, EgressPolicy};
use super::outcome::{AttemptError, ErrorKind, HttpResult};

/// How the shared client behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub egress: EgressPolicy,
    /// Response body bytes kept for diagnostics; reading stops after them.
    pub max_response_capture_bytes: usize,
    /// Time to establish a connection (TCP + TLS), for all endpoints.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per host (`host:port`). At least the dispatcher's concurrency:
    /// many endpoints can share a host (`hooks.slack.com`), and a connection closed for want of
    /// idle room costs a new TCP (and TLS) handshake on the next attempt.
    pub pool_max_idle_per_host: usize,
    /// Host names answered without DNS (like `/etc/hosts`), still subject to the egress policy.
    pub static_hosts: HashMap<String, Vec<IpAddr>>,
    /// PEM certificates trusted in addition to the Mozilla roots: the CA of in-cluster receivers
    /// that serve a certificate from a private CA.
    pub extra_roots_pem: Option<Vec<u8>>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            egress: EgressPolicy::default(),
            max_response_capture_bytes: 4096,
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 512,
            static_hosts: HashMap::new(),
            extra_roots_pem: None,
        }
    }
}

pub use super::request::DeliveryRequest;

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    #[error(
        "the extra CA bundle is not usable: {0}; give PEM `-----BEGIN CERTIFICATE-----` blocks"
    )]
    CaBundle(String),
    #[error("could not set up TLS: {0}")]
    Tls(String),
}

/// The shared delivery client. Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct DeliveryClient {
    http: reqwest::Client,
    egress: Arc<EgressPolicy>,
    capture: usize,
}

impl DeliveryClient {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let egress = Arc::new(config.egress);
        let resolver = EgressResolver {
            egress: Arc::clone(&egress),
            static_hosts: Arc::new(
                config
                    .static_hosts
                    .into_iter()
                    .map(|(host, ips)| (host.to_ascii_lowercase(), ips))
                    .collect(),
            ),
        };
        let tls = tls_config(config.extra_roots_pem.as_deref())?;
        let builder = reqwest::Client::builder().tls_backend_preconfigured(tls);
        let http = builder
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .tcp_keepalive(Some(Duration::from_secs(60)))
            .tcp_nodelay(true)
            .dns_resolver(Arc::new(resolver))
            .build()
            .map_err(ClientError::Build)?;
        Ok(Self {
            http,
            egress,
            capture: config.max_response_capture_bytes,
        })
    }

    /// The egress policy in force.
    pub fn egress(&self) -> &EgressPolicy {
        &self.egress
    }

    /// Sends one attempt. Never fails: every problem is described in the result.
    pub async fn send(&self, request: &DeliveryRequest) -> HttpResult {
        let started = Instant::now();
        if let Err(err) = egress::check_url(&request.url, &self.egress) {
            tracing::warn!(target: "audit", destination = %redact(&request.url), reason = %err, "egress refused a delivery");
            return HttpResult {
                refused_address: err.refused_address(),
                ..HttpResult::failed(ErrorKind::Blocked, err.to_string(), started.elapsed())
            };
        }
        let sent = self
            .http
            .request(request.method.clone(), request.url.clone())
            .headers(request.headers.clone())
            .body(request.body.clone())
            .timeout(request.timeout)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                let (error, refused_address) = describe_error(err);
                if error.kind == ErrorKind::Blocked {
                    tracing::warn!(target: "audit", destination = %redact(&request.url), reason = %error.message, "egress refused a delivery");
                }
                return HttpResult {
                    latency: started.elapsed(),
                    error: Some(error),
                    refused_address,
                    ..HttpResult::default()
                };
            }
        };
        let status = response.status();
        let header = |name: http::HeaderName| {
            response
                .headers()
                .get(name)
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        };
        let retry_after = header(http::header::RETRY_AFTER);
        let error = status.is_redirection().then(|| AttemptError {
            kind: ErrorKind::Redirect,
            message: match header(http::header::LOCATION) {
                Some(location) => format!(
                    "HTTP {} redirect to {location} not followed",
                    status.as_u16()
                ),
                None => format!("HTTP {} redirect not followed", status.as_u16()),
            },
        });
        let http_version = Some(format!("{:?}", response.version()));
        let (snippet, truncated) = read_capped(response, self.capture).await;
        HttpResult {
            status: Some(status.as_u16()),
            latency: started.elapsed(),
            body_snippet: String::from_utf8_lossy(&snippet).into_owned(),
            body_truncated: truncated,
            error,
            retry_after,
            http_version,
            refused_address: None,
        }
    }
}

/// Reads at most `cap` bytes of the body. `true` if more was there, or reading was cut short
/// (timeout, reset): the status is already known, so the attempt's verdict does not change.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::with_capacity(cap.min(64 * 1024));
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if chunk.len() > room {
                    return (kept, true);
                }
            }
            Ok(None) => return (kept, false),
            Err(_) => return (kept, true),
        }
    }
}

/// Scheme, host, port and path of a URL, without credentials or query (which may hold secrets).
fn redact(url: &Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

/// Classifies a reqwest error and describes it without the URL; with the refused address when
/// the egress policy refused the destination.
fn describe_error(err: reqwest::Error) -> (AttemptError, Option<String>) {
    let err = err.without_url();
    let mut sources: Vec<&(dyn StdError + 'static)> = Vec::new();
    let mut next = err.source();
    while let Some(source) = next {
        sources.push(source);
        next = source.source();
    }
    if let Some(egress) = sources
        .iter()
        .find_map(|source| source.downcast_ref::<EgressError>())
    {
        return (
            AttemptError {
                kind: ErrorKind::Blocked,
                message: egress.to_string(),
            },
            egress.refused_address(),
        );
    }
    let io_kind = sources
        .iter()
        .find_map(|source| source.downcast_ref::<std::io::Error>())
        .map(|io| io.kind());
    let hyper_error = sources
        .iter()
        .find_map(|source| source.downcast_ref::<hyper::Error>());
    use std::io::ErrorKind as Io;
    let kind = if err.is_timeout() || io_kind == Some(Io::TimedOut) {
        ErrorKind::Timeout
    } else if err.is_connect() {
        ErrorKind::Connect
    } else if matches!(
        io_kind,
        Some(Io::ConnectionReset | Io::ConnectionAborted | Io::BrokenPipe | Io::UnexpectedEof)
    ) || hyper_error
        .is_some_and(|e| e.is_incomplete_message() || e.is_canceled() || e.is_closed())
    {
        ErrorKind::Reset
    } else {
        ErrorKind::Other
    };
    let mut message = err.to_string();
    for source in sources {
        let text = source.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    (AttemptError { kind, message }, None)
}

/// Resolves host names (static entries first, then the system resolver) and lets through only
/// the addresses the egress policy allows.
struct EgressResolver {
    egress: Arc<EgressPolicy>,
    static_hosts: Arc<HashMap<String, Vec<IpAddr>>>,
}

impl Resolve for EgressResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let egress = Arc::clone(&self.egress);
        let static_hosts = Arc::clone(&self.static_hosts);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match static_hosts.get(host.trim_end_matches('.')) {
                Some(ips) => ips.iter().map(|ip| SocketAddr::new(*ip, 0)).collect(),
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            let (allowed, blocked) = egress.filter_resolved(addrs);
            for (ip, reason) in &blocked {
                tracing::warn!(target: "audit", host = %host, ip = %ip, reason = %reason, "egress refused a resolved address");
            }
            if allowed.is_empty() {
                if blocked.is_empty() {
                    let err = std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("{host} has no addresses"),
                    );
                    return Err(Box::new(err) as Box<dyn StdError + Send + Sync>);
                }
                return Err(Box::new(EgressError::NoAllowedAddress { host, blocked })
                    as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The TLS settings of deliveries: rustls with the ring provider (the one TLS stack of the whole
/// binary), the Mozilla roots compiled in (webpki-roots, so an image without a CA bundle still
/// verifies), plus `extra_roots_pem`; HTTP/2 when the server offers it through ALPN.
fn tls_config(extra_roots_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, ClientError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_roots_pem {
        let certificates = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| ClientError::CaBundle(err.to_string()))?;
        if certificates.is_empty() {
            return Err(ClientError::CaBundle("it holds no certificate".into()));
        }
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|err| ClientError::CaBundle(err.to_string()))?;
        }
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(crate::runtime::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| ClientError::Tls(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}
