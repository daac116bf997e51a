//! The controller: reconciles WebhookEndpoints (signing Secret, delivery ConfigMap, conditions)
//! and WebhookSubscriptions (endpoint resolution), behind a leader-election Lease.
pub mod children;
pub mod context;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod metrics;
mod reconcile;
#[cfg(test)]
mod reconcile_tests;
pub mod signing_key;
pub mod subscription;
pub mod triggers;
mod url_secret;

mod endpoint;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{reflector, watcher, Controller, Predicate, WatchStreamExt};
use kube::Client;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::api::{WebhookEndpoint, WebhookSubscription, ENDPOINT_LABEL};
use crate::runtime::health::{self, Health};
use crate::runtime::kube::{default_identity, scoped};
use crate::runtime::lease::{Elector, LeaseTimings};
use crate::runtime::shutdown::{self, stopped};
use context::Context;
use metrics::Metrics;

pub use endpoint::{error_policy as endpoint_error_policy, reconcile as reconcile_endpoint};

/// Settings of `webhook-operator controller`.
#[derive(Clone, Debug, clap::Args)]
pub struct ControllerConfig {
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Require a bearer token allowed to `get` the non-resource URL `/metrics` (TokenReview, then
    /// SubjectAccessReview) to scrape `/metrics`; `/healthz` and `/readyz` stay open.
    #[arg(long, env = "METRICS_AUTH", default_value_t = false, action = clap::ArgAction::Set)]
    pub metrics_auth: bool,
    /// Accept `http://` endpoint URLs (in-cluster receivers, local demos). Off: https only.
    #[arg(long, env = "ALLOW_PLAIN_HTTP")]
    pub allow_plain_http: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "webhook-operator-controller")]
    pub lease_name: String,
    /// This replica's identity in the Lease (the Pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Reconcile only this namespace (a namespace-scoped install); all namespaces when unset.
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// How long a Lease stays valid without renewal, in seconds.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
}

/// Errors that stop the controller process.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("connecting to the Kubernetes API: {0}")]
    Client(#[source] kube::Error),
    #[error("serving metrics and health on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the leader Lease {0}")]
    LostLease(String),
}

/// Runs the controller until SIGTERM / Ctrl-C.
pub async fn run(config: ControllerConfig) -> anyhow::Result<()> {
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let health =
        Health::new(registry).with_metrics_auth(config.metrics_auth.then(|| client.clone()));
    let stop_rx = shutdown::on_signal();

    let listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .map_err(|source| RunError::Serve {
            addr: config.metrics_addr,
            source,
        })?;
    tokio::spawn(health::serve(
        listener,
        health.router(),
        stopped(stop_rx.clone()),
    ));

    let identity = config
        .identity
        .clone()
        .unwrap_or_else(|| default_identity("controller"));
    let timings = LeaseTimings {
        duration: Duration::from_secs(config.lease_duration_seconds.max(2)),
        retry: Duration::from_secs((config.lease_duration_seconds / 7).max(1)),
    };
    let elector = Elector::new(
        Api::<Lease>::namespaced(client.clone(), &config.lease_namespace),
        &config.lease_name,
        &identity,
        timings,
    );
    // A standby replica is ready: it serves its purpose by waiting.
    health.set_ready(true);
    // Leading ends when the Lease cannot be renewed (an API server outage longer than the Lease)
    // or another replica holds it. The reconcilers stop (their watches and caches dropped), and
    // this replica campaigns again: when it leads once more they start from a fresh list, as a
    // restarted process would, without the restart.
    loop {
        info!(%identity, lease = %config.lease_name, "waiting for leadership");
        if !acquire(&elector, stop_rx.clone()).await {
            return Ok(());
        }
        metrics.leader.set(1);
        let controllers = run_controllers(
            client.clone(),
            metrics.clone(),
            config.allow_plain_http,
            config.watch_namespace.clone(),
        );
        let lost = tokio::select! {
            _ = controllers => None,
            lost = keep_leading(&elector) => Some(lost),
            _ = stopped(stop_rx.clone()) => None,
        };
        metrics.leader.set(0);
        if let Err(error) = elector.release().await {
            warn!(%error, "releasing the leader Lease failed; a follower takes over when it expires");
        }
        match lost {
            Some(lost) => warn!(error = %lost, "reconcilers stopped; campaigning again"),
            None => return Ok(()),
        }
    }
}

/// Waits until this replica leads; false when shutdown came first.
async fn acquire(elector: &Elector, stop: watch::Receiver<bool>) -> bool {
    let mut stop_wait = Box::pin(stopped(stop));
    loop {
        match elector.try_lead().await {
            Ok(true) => return true,
            Ok(false) => {}
            Err(error) => warn!(%error, "leader election round failed"),
        }
        tokio::select! {
            _ = &mut stop_wait => return false,
            _ = tokio::time::sleep(elector.timings().retry) => {}
        }
    }
}

/// Renews the Lease; returns when it cannot be held any more.
async fn keep_leading(elector: &Elector) -> RunError {
    let timings = elector.timings();
    let mut last_renewal = Instant::now();
    loop {
        tokio::time::sleep(timings.retry).await;
        match elector.try_lead().await {
            Ok(true) => last_renewal = Instant::now(),
            Ok(false) => return RunError::LostLease(elector.identity().to_string()),
            Err(error) => {
                warn!(%error, "renewing the leader Lease failed");
                // Stop before the Lease can expire, so two leaders never overlap.
                if last_renewal.elapsed() + timings.retry >= timings.duration {
                    return RunError::LostLease(elector.identity().to_string());
                }
            }
        }
    }
}

/// Runs both reconcilers until their watches end.
async fn run_controllers(
    client: Client,
    metrics: Metrics,
    allow_plain_http: bool,
    namespace: Option<String>,
) {
    let ns = namespace.as_deref();
    let endpoints: Api<WebhookEndpoint> = scoped(&client, ns);
    let subscriptions: Api<WebhookSubscription> = scoped(&client, ns);
    let (endpoint_reader, endpoint_writer) = reflector::store();
    let endpoint_changes = watcher(endpoints.clone(), watcher::Config::default())
        .default_backoff()
        .reflect(endpoint_writer)
        .applied_objects()
        // Status writes (ours and the dispatcher's) do not need a reconcile.
        .predicate_filter(
            kube::runtime::predicates::generation.combine(kube::runtime::predicates::annotations),
            Default::default(),
        );
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: context::FIELD_MANAGER.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let ctx = Arc::new(Context::new(
        client.clone(),
        recorder,
        metrics,
        allow_plain_http,
        endpoint_reader.clone(),
    ));

    let secrets = watcher(
        scoped::<PartialObjectMeta<Secret>>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    let endpoint_controller = Controller::for_stream(endpoint_changes, endpoint_reader.clone())
        .owns(
            scoped::<ConfigMap>(&client, ns),
            watcher::Config::default().labels(ENDPOINT_LABEL),
        )
        .watches_stream(secrets, triggers::endpoints_for_secret(endpoint_reader))
        .run(endpoint::reconcile, endpoint::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "endpoint controller event");
            }
        });

    let (subscription_reader, subscription_writer) = reflector::store();
    let subscription_changes = watcher(subscriptions, watcher::Config::default())
        .default_backoff()
        .reflect(subscription_writer)
        .applied_objects()
        .predicate_filter(kube::runtime::predicates::generation, Default::default());
    let membership = triggers::membership_changes(
        watcher(
            scoped::<PartialObjectMeta<WebhookEndpoint>>(&client, ns),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    let subscription_controller =
        Controller::for_stream(subscription_changes, subscription_reader.clone())
            .watches_stream(
                membership,
                triggers::subscriptions_for_endpoint(subscription_reader),
            )
            .run(subscription::reconcile, subscription::error_policy, ctx)
            .for_each(|result| async move {
                if let Err(error) = result {
                    tracing::debug!(%error, "subscription controller event");
                }
            });
    info!("reconciling WebhookEndpoints and WebhookSubscriptions");
    futures::join!(endpoint_controller, subscription_controller);
}
