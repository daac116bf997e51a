//! Settings of `webhook-operator dispatcher`.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

#[derive(Clone, Debug, clap::Args)]
pub struct DispatcherConfig {
    /// Address of the ingest and query API (`/v1/...`).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8000")]
    pub listen_addr: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Require a bearer token allowed to `get` the non-resource URL `/metrics` (TokenReview, then
    /// SubjectAccessReview) to scrape `/metrics`; `/healthz` and `/readyz` stay open.
    #[arg(long, env = "METRICS_AUTH", default_value_t = false, action = clap::ArgAction::Set)]
    pub metrics_auth: bool,
    /// Connections the ingest API keeps open at once; more wait in the listen backlog.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (slowloris, idle keep-alive).
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10)]
    pub header_read_timeout_seconds: u64,
    /// Seconds a whole ingest API request may take (its body and the answer); 408 beyond.
    #[arg(long, env = "REQUEST_TIMEOUT_SECONDS", default_value_t = 60)]
    pub request_timeout_seconds: u64,
    /// Address of the aggregated query API (`query.webhooks.pitchey.io`, TLS; docs/query-api.md).
    /// Off when unset; needs --query-api-tls-cert-file and --query-api-tls-key-file.
    #[arg(long, env = "QUERY_API_ADDR", requires_all = ["query_api_tls_cert_file", "query_api_tls_key_file"])]
    pub query_api_addr: Option<SocketAddr>,
    /// The query API's serving certificate (PEM), valid for the Service the APIService names
    /// (`<service>.<namespace>.svc`). Re-read every minute.
    #[arg(long, env = "QUERY_API_TLS_CERT_FILE")]
    pub query_api_tls_cert_file: Option<std::path::PathBuf>,
    /// The query API's serving key (PEM).
    #[arg(long, env = "QUERY_API_TLS_KEY_FILE")]
    pub query_api_tls_key_file: Option<std::path::PathBuf>,
    /// The SQLite database file (on a persistent volume).
    #[arg(
        long,
        env = "STORE_PATH",
        default_value = "/var/lib/webhook-operator/dispatcher.db"
    )]
    pub store_path: PathBuf,
    /// Where deliveries are kept: `sqlite` (embedded, one replica) or `postgres` (shared by
    /// several replicas, which split the endpoints between them through Leases).
    #[arg(long, env = "STORE", value_enum, default_value_t = StoreKind::Sqlite)]
    pub store: StoreKind,
    /// PostgreSQL connection (libpq URL or `key=value` string) for `--store postgres`; mount it
    /// from a Secret.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// PostgreSQL schema for the tables (created if missing); the connection's default if unset.
    #[arg(long, env = "DATABASE_SCHEMA")]
    pub database_schema: Option<String>,
    /// PostgreSQL connections per replica at most.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,
    /// Partitions the endpoints are hashed into (`--store postgres`); each is owned by one
    /// replica at a time. Every replica must use the same value.
    #[arg(long, env = "PARTITIONS", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
    /// Namespace of the partition and member Leases; the client's default namespace if unset.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name prefix of the Leases (and the value of their group label); one per dispatcher group.
    #[arg(long, env = "LEASE_PREFIX", default_value = "webhook-operator-dispatcher", value_parser = lease_prefix)]
    pub lease_prefix: String,
    /// Seconds a partition Lease is valid without renewal: a dead replica's partitions and
    /// in-flight deliveries are taken over about this long (plus one 2 s round) after it dies.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    pub lease_duration_seconds: u64,
    /// Take no new events (ingest answers 503, WebhookEvents are left to other dispatchers) but
    /// keep delivering what the store holds: for migrating to another store.
    #[arg(long, env = "DRAIN")]
    pub drain: bool,
    /// Create the deliveries this replica can start at once already claimed, in the transaction
    /// that stores their event, and start them when it commits, without a claim round trip
    /// (docs/architecture.md, "Deliver from memory"); `false` stores every delivery Pending for
    /// the claim loop to take. On with either store (PostgreSQL since its enqueue went
    /// set-based: docs/benchmarks.md, issue 19, session 20).
    #[arg(long, env = "DELIVER_FROM_MEMORY", default_value_t = true, action = clap::ArgAction::Set)]
    pub deliver_from_memory: bool,
    /// After a claim that took fewer deliveries than it asked for (nothing more was due), the
    /// next claim waits until this many milliseconds after it started: claims then take what
    /// arrived meanwhile together instead of one or two rows each. Unset: 0 with SQLite (claims
    /// are local), 10 with PostgreSQL (each claim is a statement on the shared server;
    /// docs/benchmarks.md, issue 19, session 19).
    #[arg(long, env = "CLAIM_INTERVAL_MS")]
    pub claim_interval_ms: Option<u64>,
    /// After recording fewer attempt results than a batch may hold (nothing more was waiting),
    /// the next record batch gathers results until this many milliseconds after it: results are
    /// written in fewer, larger transactions. Attempts are not held back (their slot is free
    /// before their result is recorded), and a result something waits for (an ordering lane's
    /// next delivery, a retry to schedule, a shutdown's flush) is written at once with what was
    /// gathered. Unset: 0 with SQLite (its group commit batches already), 25 with PostgreSQL
    /// (docs/benchmarks.md, issue 19, session 20).
    #[arg(long, env = "RECORD_INTERVAL_MS")]
    pub record_interval_ms: Option<u64>,
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
    /// A PEM file of CA certificates trusted for receivers in addition to the public roots
    /// (in-cluster receivers whose certificate comes from a private CA).
    #[arg(long, env = "RECEIVER_CA_FILE")]
    pub receiver_ca_file: Option<std::path::PathBuf>,
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
    /// How long finished deliveries and their attempt log are kept in the store (e.g. `7d`,
    /// `36h`, `30m`). Purged every quarter of it, at most hourly.
    #[arg(long, env = "RETENTION", default_value = "7d", value_parser = window,
          conflicts_with = "retention_days")]
    pub retention: Duration,
    /// The same in whole days (the chart's `dispatcher.retentionDays`); when given, it is used.
    #[arg(long)]
    pub retention_days: Option<u64>,
    /// Seconds between status write-backs of one object (at most one patch per object per interval).
    #[arg(long, default_value_t = 3)]
    pub status_interval_seconds: u64,
    /// Endpoint status writes per second at most, averaged over a round (state changes first,
    /// then counter updates in turn): bounds the API server load at any number of endpoints.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub status_writes_per_second: u32,
    /// Seconds an authentication or authorization decision is cached.
    #[arg(long, default_value_t = 10)]
    pub auth_cache_seconds: u64,
    /// Audiences a bearer token must be issued for (repeatable). Empty: the API server's own
    /// audience, so `kubectl create token SA` works as is; set, tokens must be minted with
    /// `kubectl create token SA --audience <one of them>` and other tokens are refused (401).
    #[arg(
        long = "token-audience",
        env = "TOKEN_AUDIENCES",
        value_delimiter = ','
    )]
    pub token_audiences: Vec<String>,
    /// How long the same ingest `id` in a namespace is the same event (e.g. `24h`, `90m`): a
    /// repeat within it gets the first event back and no new deliveries.
    #[arg(long, env = "IDEMPOTENCY_WINDOW", default_value = "24h", value_parser = window)]
    pub idempotency_window: Duration,
    /// New events that may wait for the store's writer. Beyond it the ingest API answers 429
    /// with `Retry-After` and stores nothing (backpressure, never a silent loss); WebhookEvents
    /// are retried from the watch. Attempt results always wait: they are never refused.
    #[arg(long, env = "STORE_QUEUE_CAPACITY", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub store_queue_capacity: u32,
    /// Seconds attempts in flight at SIGTERM get to finish before the process exits; those cut
    /// short are made again after the restart. Keep it below the pod's
    /// terminationGracePeriodSeconds.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_timeout_seconds: u64,
    /// Worker processes that run endpoints' transforms (`spec.transform`), started on first use.
    #[arg(long, env = "TRANSFORM_WORKERS", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub transform_workers: u16,
    /// Time one transform run may take (e.g. `1s`, `250ms`); past it the worker is stopped and
    /// the delivery dead-lettered.
    #[arg(long, env = "TRANSFORM_TIMEOUT", default_value = "1s", value_parser = transform_timeout)]
    pub transform_timeout: Duration,
    /// Largest request body a transform may produce, in bytes.
    #[arg(long, env = "TRANSFORM_MAX_OUTPUT_BYTES", default_value_t = 1024 * 1024)]
    pub transform_max_output_bytes: usize,
    /// Address space each transform worker may add to what it maps at start, in MiB: a program
    /// that allocates without bound ends its worker, not the dispatcher.
    #[arg(long, env = "TRANSFORM_MEMORY_MIB", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(64..=65536))]
    pub transform_memory_mib: u64,
    /// How long security log entries are kept (e.g. `30d`, `2160h`).
    #[arg(long, env = "SECURITY_LOG_RETENTION", default_value = "30d", value_parser = window)]
    pub security_log_retention: Duration,
    /// Serve the developer dashboard under `/ui/` on the API port.
    #[arg(long, env = "DASHBOARD", default_value_t = true, action = clap::ArgAction::Set)]
    pub dashboard: bool,
    /// How long a dashboard session lasts from login (e.g. `8h`).
    #[arg(long, env = "DASHBOARD_SESSION_TTL", default_value = "8h", value_parser = window)]
    pub dashboard_session_ttl: Duration,
    /// A dashboard session without a request for this long ends (e.g. `1h`).
    #[arg(long, env = "DASHBOARD_IDLE_TIMEOUT", default_value = "1h", value_parser = window)]
    pub dashboard_idle_timeout: Duration,
    /// Mark the session cookie `Secure` (set when the dashboard is reached over HTTPS, e.g.
    /// through an Ingress that terminates TLS).
    #[arg(long, env = "DASHBOARD_SECURE_COOKIE", default_value_t = false, action = clap::ArgAction::Set)]
    pub dashboard_secure_cookie: bool,
}

impl DispatcherConfig {
    /// The shortest time between a partial claim and the next (`--claim-interval-ms`, or the
    /// store's default).
    pub fn claim_interval(&self) -> Duration {
        self.store_round_interval(self.claim_interval_ms, 10)
    }

    /// How long a record batch after a partial one gathers results (`--record-interval-ms`, or
    /// the store's default).
    pub fn record_interval(&self) -> Duration {
        self.store_round_interval(self.record_interval_ms, 25)
    }

    /// `set`, or the store's default pace: none with SQLite (local and group-committed),
    /// `postgres_ms` with PostgreSQL (each round is a statement on the shared server).
    fn store_round_interval(&self, set: Option<u64>, postgres_ms: u64) -> Duration {
        let default = match self.store {
            StoreKind::Sqlite => 0,
            StoreKind::Postgres => postgres_ms,
        };
        Duration::from_millis(set.unwrap_or(default))
    }

    /// How long finished deliveries are kept: `--retention-days` when given, else `--retention`.
    pub fn delivery_retention(&self) -> Duration {
        self.retention_days.map_or(self.retention, |days| {
            Duration::from_secs(days.saturating_mul(86_400))
        })
    }

    /// The transform pool's settings; workers are this binary run as `transform-worker`.
    pub fn transform_pool(&self) -> std::io::Result<crate::transform::PoolConfig> {
        let mut pool = crate::transform::PoolConfig::new(std::env::current_exe()?);
        pool.workers = usize::from(self.transform_workers);
        pool.timeout = self.transform_timeout;
        pool.max_output = self.transform_max_output_bytes;
        pool.memory_limit = self.transform_memory_mib << 20;
        Ok(pool)
    }
}

/// The store backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

/// An idempotency window: a humantime duration (`24h`, `1h 30m`, `3600s`), from 1 s to 365 days.
fn window(value: &str) -> Result<Duration, String> {
    let parsed = humantime::parse_duration(value.trim())
        .map_err(|e| format!("`{value}` is not a duration like 24h or 90m: {e}"))?;
    if parsed < Duration::from_secs(1) || parsed > Duration::from_secs(365 * 86_400) {
        return Err(format!("`{value}`: use from 1s to 365d"));
    }
    Ok(parsed)
}

/// A transform's time limit: 10ms to 60s.
fn transform_timeout(value: &str) -> Result<Duration, String> {
    let parsed = humantime::parse_duration(value.trim())
        .map_err(|e| format!("`{value}` is not a duration like 1s or 250ms: {e}"))?;
    if parsed < Duration::from_millis(10) || parsed > Duration::from_secs(60) {
        return Err(format!("`{value}`: use from 10ms to 60s"));
    }
    Ok(parsed)
}

/// A Lease name prefix is also a label value: at most 63 characters, `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn lease_prefix(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 50
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if valid {
        Ok(value.to_string())
    } else {
        Err("use 1–50 lowercase letters, digits and '-', starting and ending with a letter or digit".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_windows() {
        assert_eq!(window("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(window("1h 30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(window(" 3600s "), Ok(Duration::from_secs(3_600)));
        assert_eq!(window("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(window("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "24", "tomorrow", "0s", "500ms", "400d"] {
            assert!(window(bad).is_err(), "{bad:?} should be refused");
        }
    }

    /// The dispatcher's flags as a command line parses them.
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: DispatcherConfig,
    }

    #[test]
    fn defaults() {
        use clap::Parser;
        let cli = Cli::try_parse_from(["dispatcher"]).unwrap();
        assert_eq!(cli.config.idempotency_window, Duration::from_secs(86_400));
        assert_eq!(cli.config.shutdown_timeout_seconds, 30);
        assert_eq!(cli.config.store_queue_capacity, 10_000);
        let cli = Cli::try_parse_from(["dispatcher", "--idempotency-window", "2h"]).unwrap();
        assert_eq!(cli.config.idempotency_window, Duration::from_secs(7_200));
        assert!(Cli::try_parse_from(["dispatcher", "--idempotency-window", "soon"]).is_err());
        assert_eq!(
            cli.config.delivery_retention(),
            Duration::from_secs(7 * 86_400)
        );
        let cli = Cli::try_parse_from(["dispatcher", "--retention", "30m"]).unwrap();
        assert_eq!(cli.config.delivery_retention(), Duration::from_secs(1_800));
        let cli = Cli::try_parse_from(["dispatcher", "--retention-days", "14"]).unwrap();
        assert_eq!(
            cli.config.delivery_retention(),
            Duration::from_secs(14 * 86_400)
        );
        assert!(
            Cli::try_parse_from(["dispatcher", "--retention", "1d", "--retention-days", "2"])
                .is_err()
        );
    }

    /// Deliver from memory is on with either store unless set off.
    #[test]
    fn delivering_from_memory_is_on_unless_set_off() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["dispatcher"].iter().chain(args))
                .unwrap()
                .config
                .deliver_from_memory
        };
        assert!(parse(&[]));
        assert!(parse(&["--store", "postgres"]));
        assert!(!parse(&[
            "--store",
            "postgres",
            "--deliver-from-memory",
            "false"
        ]));
        assert!(!parse(&["--deliver-from-memory", "false"]));
    }

    /// The claim and record intervals are the store's default unless set: none with SQLite,
    /// 10 and 25 ms with PostgreSQL; each flag sets its own.
    #[test]
    fn the_store_round_intervals_default_by_store() {
        use clap::Parser;
        type Interval = fn(&DispatcherConfig) -> Duration;
        let cases: [(&str, Interval, u64); 2] = [
            ("--claim-interval-ms", DispatcherConfig::claim_interval, 10),
            (
                "--record-interval-ms",
                DispatcherConfig::record_interval,
                25,
            ),
        ];
        for (flag, interval, postgres_ms) in cases {
            let parse = |args: &[&str]| {
                interval(
                    &Cli::try_parse_from(["dispatcher"].iter().chain(args))
                        .unwrap()
                        .config,
                )
            };
            assert_eq!(parse(&[]), Duration::ZERO, "{flag}");
            let postgres = Duration::from_millis(postgres_ms);
            assert_eq!(parse(&["--store", "postgres"]), postgres, "{flag}");
            assert_eq!(parse(&["--store", "postgres", flag, "0"]), Duration::ZERO);
            assert_eq!(parse(&[flag, "25"]), Duration::from_millis(25), "{flag}");
            let other = if flag == "--claim-interval-ms" {
                "--record-interval-ms"
            } else {
                "--claim-interval-ms"
            };
            assert_eq!(
                parse(&[other, "25"]),
                Duration::ZERO,
                "{other} sets only its own"
            );
        }
    }
}
