//! Wiring of the dispatcher process: store, caches, tasks, HTTP servers, shutdown.
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client};
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use super::cache::Cache;
use super::config::StoreKind;
use super::named;
use super::ownership::Ownership;
use super::partitions::{self, plan::Timings};
use super::projected::{CachedPolicy, CachedSecret};
use super::subscription_index::SharedIndex;
use super::watch::slim::slim;
use super::{engine, http, metrics, status, watch, DispatcherConfig, Shared};
use crate::api::{
    WebhookEndpoint, WebhookEvent, WebhookReplay, WebhookSubscription, ENDPOINT_LABEL,
};
use crate::delivery::client::{ClientConfig, DeliveryClient};
use crate::delivery::egress::EgressPolicy;
use crate::runtime::health::{self, Health};
use crate::runtime::kube::{default_identity, scoped};
use crate::runtime::shutdown::{self, stopped};
use crate::store::postgres::{PostgresConfig, PostgresStore};
use crate::store::sqlite::{SqliteConfig, SqliteStore};
use crate::store::Store;
use crate::transform::TransformPool;

/// Errors that stop the dispatcher at startup.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("connecting to the Kubernetes API: {0}")]
    Client(#[source] kube::Error),
    #[error("opening the store ({store}): {source}")]
    Store {
        store: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("--store postgres needs --database-url (or DATABASE_URL, from a Secret)")]
    MissingDatabaseUrl,
    #[error("building the HTTP client: {0}")]
    Http(#[source] crate::delivery::client::ClientError),
    #[error("reading --receiver-ca-file {path}: {source}")]
    ReceiverCa {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the dispatcher until SIGTERM / Ctrl-C.
pub async fn run(config: DispatcherConfig) -> anyhow::Result<()> {
    let kube_config = kube::Config::infer()
        .await
        .map_err(|e| StartError::Client(kube::Error::InferConfig(e)))?;
    let client = Client::try_from(kube_config.clone()).map_err(StartError::Client)?;
    let mut registry = Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    let health =
        Health::new(registry).with_metrics_auth(config.metrics_auth.then(|| client.clone()));
    let stop_rx = shutdown::on_signal();

    let identity = config
        .identity
        .clone()
        .unwrap_or_else(|| default_identity("dispatcher"));
    let store = open_store(&config, &metrics).await?;
    // At least once: attempts in flight when this replica last stopped are made again. With a
    // shared store only our own: other replicas' are theirs, or recovered when they are dead.
    let recover_owner = match config.store {
        StoreKind::Sqlite => None,
        StoreKind::Postgres => Some(identity.clone()),
    };
    let recovered = store
        .recover_in_flight(recover_owner, Timestamp::now())
        .await
        .map_err(|source| StartError::Store {
            store: store_description(&config),
            source,
        })?;
    if recovered > 0 {
        info!(
            recovered,
            "deliveries in flight at the last stop are due again"
        );
    }

    let extra_roots_pem = match &config.receiver_ca_file {
        Some(path) => {
            Some(
                tokio::fs::read(path)
                    .await
                    .map_err(|source| StartError::ReceiverCa {
                        path: path.clone(),
                        source,
                    })?,
            )
        }
        None => None,
    };
    let http = DeliveryClient::new(ClientConfig {
        egress: EgressPolicy {
            allow_http: config.allow_plain_http,
            allow: config.egress_allow.clone(),
            deny: config.egress_deny.clone(),
        },
        extra_roots_pem,
        ..ClientConfig::default()
    })
    .map_err(StartError::Http)?;

    let ns = config.watch_namespace.as_deref();
    let (endpoints_reader, endpoints_writer) = reflector::store();
    let endpoint_stream = watcher(scoped::<WebhookEndpoint>(&client, ns), watch::config())
        .default_backoff()
        .modify(slim)
        .reflect(endpoints_writer)
        .applied_objects();
    let (subscriptions_reader, subscriptions_writer) = reflector::store();
    let subscription_stream = watcher(scoped::<WebhookSubscription>(&client, ns), watch::config())
        .default_backoff()
        .modify(slim)
        .reflect(subscriptions_writer);
    let (secrets_reader, mut secrets_writer) = named::store();
    let secret_stream = watcher(scoped::<Secret>(&client, ns), watch::config())
        .default_backoff()
        .map_ok(named::project::<Secret, CachedSecret>)
        .map_ok(move |event| secrets_writer.apply(event));
    let (config_maps_reader, mut config_maps_writer) = named::store();
    let config_map_stream = watcher(
        scoped::<ConfigMap>(&client, ns),
        watch::config().labels(ENDPOINT_LABEL),
    )
    .default_backoff()
    .map_ok(named::project::<ConfigMap, CachedPolicy>)
    .map_ok(move |event| config_maps_writer.apply(event));
    let (events_reader, events_writer) = reflector::store();
    let event_stream = watcher(scoped::<WebhookEvent>(&client, ns), watch::config())
        .default_backoff()
        .modify(slim)
        .reflect(events_writer);
    // Publish order is acceptance order: a (re)list is taken in creation order, not name order.
    let event_stream = watch::events::in_creation_order(event_stream);
    let replay_stream = watcher(scoped::<WebhookReplay>(&client, ns), watch::config())
        .default_backoff()
        .applied_objects();

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: status::FIELD_MANAGER.to_string(),
            instance: Some(identity.clone()),
        },
    );
    let cache = Cache {
        endpoints: endpoints_reader,
        subscriptions: subscriptions_reader,
        secrets: secrets_reader,
        config_maps: config_maps_reader,
        index: SharedIndex::default(),
    };
    let ownership = match config.store {
        StoreKind::Sqlite => Ownership::All,
        StoreKind::Postgres => Ownership::partitioned(config.partitions),
    };
    let (notices, notice_queue) = status::notices::Notices::channel();
    let (security, security_queue) = super::security_log::SecurityLog::channel(metrics.clone());
    let mut transform_pool = config
        .transform_pool()
        .context("finding this binary to run transform workers")?;
    transform_pool.runs = metrics.transform_run_counters();
    let transforms = TransformPool::start(transform_pool);
    let shared = Arc::new(Shared {
        store,
        cache: cache.clone(),
        endpoints: Arc::new(engine::CachedEndpoints::new(cache.clone())),
        client: client.clone(),
        http,
        transforms,
        wake: Default::default(),
        metrics,
        recorder,
        config: config.clone(),
        dirty: Default::default(),
        gates: Default::default(),
        owner: identity,
        ownership: Arc::new(ownership),
        notices,
        security,
        handoff: Arc::new(engine::Handoff::new(config.deliver_from_memory)),
    });
    tokio::spawn(status::notices::raise(shared.clone(), notice_queue));
    tokio::spawn(super::security_log::run(shared.clone(), security_queue));

    let mut tasks = tokio::task::JoinSet::new();
    let index = cache.index.clone();
    tasks.spawn(subscription_stream.for_each(move |_| {
        // After the reflector applied it: the next route rebuilds the index.
        index.changed();
        async {}
    }));
    tasks.spawn(secret_stream.for_each(|_| async {}));
    tasks.spawn(config_map_stream.for_each(|_| async {}));

    let listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.metrics_addr,
            source,
        })?;
    tasks.spawn(health::serve(
        listener,
        health.router(),
        stopped(stop_rx.clone()),
    ));
    let api_listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen_addr,
            source,
        })?;
    info!(addr = %config.listen_addr, "ingest API listening");

    // Each watch is polled by its own task; routing, delivering and the API wait for the
    // caches to have listed everything once (see `Cache::wait_until_ready`).
    tasks.spawn(watch::endpoints::watch_endpoints(
        shared.clone(),
        endpoint_stream,
    ));
    tasks.spawn(watch::events::watch_events(shared.clone(), event_stream));
    tasks.spawn(watch::expiry::expire_events(shared.clone(), events_reader));
    tasks.spawn(watch::replays::watch_replays(shared.clone(), replay_stream));
    let caches = cache.clone();
    let delivering = tokio::spawn(engine::run(
        shared.engine_deps(),
        async move { caches.wait_until_ready().await.is_ok() },
        stop_rx.clone(),
        Duration::from_secs(config.shutdown_timeout_seconds),
    ));
    let leases = lease_settings(&client, &config);
    if let Some((api, settings)) = &leases {
        tasks.spawn(partitions::run(
            shared.clone(),
            api.clone(),
            settings.clone(),
        ));
    }
    tasks.spawn(status::run(shared.clone()));
    tasks.spawn(retention(shared.clone()));
    let limits = crate::runtime::http_server::Limits {
        max_connections: config.max_connections,
        header_read_timeout: Duration::from_secs(config.header_read_timeout_seconds),
        request_timeout: Duration::from_secs(config.request_timeout_seconds),
        ..Default::default()
    };
    tasks.spawn(crate::runtime::http_server::serve(
        api_listener,
        http::router(
            shared.clone(),
            config
                .dashboard
                .then(|| crate::dashboard::Dashboard::new(shared.clone(), kube_config)),
        ),
        limits,
        stopped(stop_rx.clone()),
    ));
    if let (Some(addr), Some(cert), Some(key)) = (
        config.query_api_addr,
        config.query_api_tls_cert_file.clone(),
        config.query_api_tls_key_file.clone(),
    ) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        tasks.spawn(super::query_api::serve(
            shared.clone(),
            Arc::new(http::Reviewer::new(
                shared.client.clone(),
                Duration::from_secs(config.auth_cache_seconds),
                config.token_audiences.clone(),
            )),
            listener,
            super::query_api::ServingFiles { cert, key },
            stopped(stop_rx.clone()),
        ));
    }
    let caches_synced = async {
        if cache.wait_until_ready().await.is_err() {
            warn!("a cache stopped before it was ready");
        }
    };
    // /readyz: 503 until the caches are synced (the store is open by now), 200 until SIGTERM.
    if !health.ready_until(caches_synced, stopped(stop_rx)).await {
        return Ok(());
    }
    // The delivery loop starts nothing new from here on, lets the attempts in flight finish
    // (within --shutdown-timeout-seconds) and returns once their results are committed;
    // whatever does not finish is made again after the restart.
    match delivering.await {
        Ok(drained) if drained.attempts_finished && drained.results_committed => {
            info!(
                given_back = drained.given_back,
                "every attempt in flight finished and was recorded"
            );
        }
        Ok(drained) => warn!(
            attempts_finished = drained.attempts_finished,
            results_committed = drained.results_committed,
            "stopping with attempts unfinished or unrecorded; they are made again after the restart"
        ),
        Err(error) => warn!(%error, "the delivery loop failed"),
    }
    tasks.abort_all();
    if let Some((api, settings)) = &leases {
        partitions::release_all(&shared, api, settings).await;
    }
    info!("dispatcher stopped");
    Ok(())
}

/// Deletes finished deliveries older than the retention period, every quarter of it (at most
/// hourly, at least every minute), and security log entries older than theirs.
async fn retention(shared: Arc<Shared>) {
    let keep = shared.config.delivery_retention();
    let every = (keep / 4).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    loop {
        let cutoff = Timestamp::now()
            .saturating_sub(keep)
            .unwrap_or(Timestamp::MIN);
        match shared.store.purge_finished(cutoff).await {
            Ok(stats) => tracing::debug!(?stats, "purged finished deliveries"),
            Err(error) => warn!(%error, "purging finished deliveries failed"),
        }
        let security_cutoff = Timestamp::now()
            .saturating_sub(shared.config.security_log_retention)
            .unwrap_or(Timestamp::MIN);
        match shared.store.purge_security_events(security_cutoff).await {
            Ok(purged) => tracing::debug!(purged, "purged old security log entries"),
            Err(error) => warn!(%error, "purging the security log failed"),
        }
        tokio::time::sleep(every).await;
    }
}

fn store_description(config: &DispatcherConfig) -> String {
    match config.store {
        StoreKind::Sqlite => format!("sqlite at {}", config.store_path.display()),
        // Never the URL: it may hold a password.
        StoreKind::Postgres => "postgres at DATABASE_URL".to_string(),
    }
}

/// Opens the configured store, its commit durations observed by the metrics.
async fn open_store(
    config: &DispatcherConfig,
    metrics: &metrics::Metrics,
) -> Result<Arc<dyn Store>, StartError> {
    let commit_histogram = metrics.store_commit_seconds.clone();
    let on_commit = Arc::new(move |_: usize, duration: Duration| {
        commit_histogram.observe(duration.as_secs_f64());
    });
    let failed = |source| StartError::Store {
        store: store_description(config),
        source,
    };
    match config.store {
        StoreKind::Sqlite => {
            if let Some(dir) = config.store_path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let mut store_config = SqliteConfig::new(config.store_path.clone());
            store_config.on_commit = Some(on_commit);
            store_config.idempotency_window = config.idempotency_window;
            store_config.queue_capacity = config.store_queue_capacity as usize;
            let store = SqliteStore::open(store_config).await.map_err(failed)?;
            Ok(Arc::new(store))
        }
        StoreKind::Postgres => {
            let url = config
                .database_url
                .clone()
                .filter(|u| !u.trim().is_empty())
                .ok_or(StartError::MissingDatabaseUrl)?;
            let mut store_config = PostgresConfig::new(url);
            store_config.schema = config.database_schema.clone();
            store_config.pool_size = config.database_pool_size.max(2);
            store_config.on_commit = Some(on_commit);
            store_config.idempotency_window = config.idempotency_window;
            store_config.queue_capacity = config.store_queue_capacity as usize;
            let store = PostgresStore::open(store_config).await.map_err(failed)?;
            Ok(Arc::new(store))
        }
    }
}

/// The Lease API and settings for partition ownership (shared store only).
fn lease_settings(
    client: &Client,
    config: &DispatcherConfig,
) -> Option<(Api<Lease>, partitions::Settings)> {
    if config.store != StoreKind::Postgres {
        return None;
    }
    let namespace = config
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let settings = partitions::Settings {
        count: config.partitions,
        prefix: config.lease_prefix.clone(),
        timings: Timings::from_duration(Duration::from_secs(config.lease_duration_seconds)),
        period: Duration::from_secs(2),
    };
    Some((Api::namespaced(client.clone(), &namespace), settings))
}
