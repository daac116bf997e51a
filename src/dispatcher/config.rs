//! Settings of `webhook-operator dispatcher`.
use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;

#[derive(Clone, Debug, clap::Args)]
pub struct DispatcherConfig {
    /// Address of the ingest and query API (`/v1/...`).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8000")]
    pub listen_addr: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// The SQLite database file (on a persistent volume).
    #[arg(
        long,
        env = "STORE_PATH",
        default_value = "/var/lib/webhook-operator/dispatcher.db"
    )]
    pub store_path: PathBuf,
    /// Watch only this namespace; all namespaces when unset.
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// This replica's name, the owner of the deliveries it claims.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Allow plain `http://` receivers (in-cluster or local). Off: https only.
    #[arg(long, env = "ALLOW_PLAIN_HTTP")]
    pub allow_plain_http: bool,
    /// Destinations allowed although private/loopback (e.g. 10.0.0.0/8 for in-cluster receivers).
    /// Repeatable or comma-separated.
    #[arg(
        long = "egress-allow-cidr",
        env = "EGRESS_ALLOW_CIDRS",
        value_delimiter = ','
    )]
    pub egress_allow: Vec<IpNet>,
    /// Destinations refused in addition to the built-in private and metadata ranges.
    #[arg(
        long = "egress-deny-cidr",
        env = "EGRESS_DENY_CIDRS",
        value_delimiter = ','
    )]
    pub egress_deny: Vec<IpNet>,
    /// Delivery attempts in flight at most, over all endpoints.
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
    /// Delivery attempts in flight at most per endpoint.
    #[arg(long, default_value_t = 16)]
    pub per_endpoint_concurrency: usize,
    /// Largest accepted ingest request body, in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds a finished WebhookEvent is kept when it sets no ttlSecondsAfterFinished.
    #[arg(long, default_value_t = 3600)]
    pub event_ttl_seconds: u64,
    /// Days finished deliveries and their attempt log are kept in the store.
    #[arg(long, default_value_t = 7)]
    pub retention_days: u64,
    /// Seconds between status write-backs of one object (at most one patch per object per interval).
    #[arg(long, default_value_t = 3)]
    pub status_interval_seconds: u64,
    /// Seconds an authentication or authorization decision is cached.
    #[arg(long, default_value_t = 10)]
    pub auth_cache_seconds: u64,
}
