//! Test support: the dispatcher's [`Shared`] state without an API server. The caches are
//! reflector stores the test writes into, the store is SQLite in a temporary directory, and the
//! Kubernetes client talks to a tower-test mock that nobody answers (so a test fails, by its
//! timeout, if the code under test calls Kubernetes where it must not).
use std::collections::BTreeMap;
use std::sync::Arc;

use clap::Parser;
use http::{Request, Response};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use prometheus_client::registry::Registry;
use serde_json::json;
use tower_test::mock;

use super::cache::Cache;
use super::engine::{CachedEndpoints, Deps};
use super::named::{self, NamedWriter};
use super::ownership::Ownership;
use super::projected::{CachedPolicy, CachedSecret};
use super::status::notices::{EndpointNotice, Notices};
use super::subscription_index::SharedIndex;
use super::{metrics, status, DispatcherConfig, Shared};
use crate::api::policy::{config_map_name, POLICY_KEY};
use crate::api::validation::validate_endpoint;
use crate::api::WebhookEndpoint;
use crate::delivery::client::{ClientConfig, DeliveryClient};
use crate::store::sqlite::{SqliteConfig, SqliteStore};
use crate::store::{ClaimRequest, ClaimScope, ClaimedDelivery, EventSource, NewEvent};

pub const NAMESPACE: &str = "ns";
/// The owner the fixture's claims are made for (the dispatcher's identity).
pub const OWNER: &str = "d1";

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    config: DispatcherConfig,
}

/// A dispatcher's shared state on test parts.
pub struct Fixture {
    pub shared: Arc<Shared>,
    pub notices: tokio::sync::mpsc::Receiver<EndpointNotice>,
    endpoints: Writer<WebhookEndpoint>,
    config_maps: NamedWriter<CachedPolicy>,
    secrets: NamedWriter<CachedSecret>,
    /// The API server's side of the client: kept so requests hang instead of failing fast.
    _api: mock::Handle<Request<Body>, Response<Body>>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// `flags` as on the command line (e.g. `["--per-endpoint-concurrency", "2"]`).
    pub async fn new(flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(SqliteConfig::new(dir.path().join("d.db")))
            .await
            .unwrap();
        let mut args = vec!["dispatcher", "--identity", OWNER];
        args.extend_from_slice(flags);
        let config = Flags::parse_from(args).config;
        let (service, api) = mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: status::FIELD_MANAGER.into(),
                instance: None,
            },
        );
        let (endpoints_reader, mut endpoints) = reflector::store();
        let (subscriptions, mut subscriptions_writer) = reflector::store();
        let (secrets_reader, mut secrets) = named::store();
        let (config_maps_reader, mut config_maps) = named::store();
        // Listed once (empty): the caches are ready.
        endpoints.apply_watcher_event(&watcher::Event::InitDone);
        config_maps.apply(watcher::Event::InitDone);
        secrets.apply(watcher::Event::InitDone);
        subscriptions_writer.apply_watcher_event(&watcher::Event::InitDone);
        let (notices, notice_queue) = Notices::channel();
        let metrics = metrics::Metrics::register(&mut Registry::default());
        let (security, _) = super::security_log::SecurityLog::channel(metrics.clone());
        let cache = Cache {
            endpoints: endpoints_reader,
            subscriptions,
            secrets: secrets_reader,
            config_maps: config_maps_reader,
            index: SharedIndex::default(),
        };
        let shared = Arc::new(Shared {
            store: Arc::new(store),
            endpoints: Arc::new(CachedEndpoints::new(cache.clone())),
            cache,
            client,
            http: DeliveryClient::new(ClientConfig::default()).unwrap(),
            // No fixture endpoint has a transform: no worker is ever started.
            transforms: crate::transform::TransformPool::start(crate::transform::PoolConfig::new(
                "webhook-operator".into(),
            )),
            wake: Default::default(),
            metrics,
            recorder,
            config,
            dirty: Default::default(),
            gates: Default::default(),
            owner: OWNER.into(),
            ownership: Arc::new(Ownership::All),
            notices,
            security,
            handoff: Arc::new(crate::dispatcher::engine::Handoff::new(true)),
        });
        Self {
            shared,
            notices: notice_queue,
            endpoints,
            config_maps,
            secrets,
            _api: api,
            _dir: dir,
        }
    }

    /// The engine's dependencies on the fixture's state.
    pub fn deps(&self) -> Arc<Deps> {
        Arc::new(self.shared.engine_deps())
    }

    /// An endpoint `name` (spec as JSON, `url` defaulted) with its delivery ConfigMap and
    /// signing Secret in the caches, as the controller provisions them.
    pub fn endpoint(&mut self, name: &str, spec: serde_json::Value) {
        let mut full = json!({"url": "https://receiver.example.com/hooks"});
        if let (Some(full), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
            full.extend(extra.clone());
        }
        let endpoint: WebhookEndpoint = serde_json::from_value(json!({
            "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookEndpoint",
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": format!("uid-{name}")},
            "spec": full,
        }))
        .unwrap();
        let policy = validate_endpoint(&endpoint.spec, name, false).unwrap();
        let config_map = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(config_map_name(name)),
                namespace: Some(NAMESPACE.into()),
                uid: Some(format!("cm-{name}")),
                resource_version: Some("1".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                POLICY_KEY.into(),
                policy.to_config_json(),
            )])),
            ..Default::default()
        };
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(policy.signing.secret_name.clone()),
                namespace: Some(NAMESPACE.into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                policy.signing.secret_key.clone(),
                ByteString(b"test-signing-key".to_vec()),
            )])),
            ..Default::default()
        };
        self.endpoints
            .apply_watcher_event(&watcher::Event::Apply(endpoint));
        self.config_maps
            .apply(named::project(watcher::Event::Apply(config_map)));
        self.secrets
            .apply(named::project(watcher::Event::Apply(secret)));
    }

    /// Removes the endpoint from the cache (deleted in the cluster).
    pub fn delete_endpoint(&mut self, name: &str) {
        let endpoint = self
            .shared
            .cache
            .endpoint(NAMESPACE, name)
            .expect("the endpoint is cached");
        self.endpoints
            .apply_watcher_event(&watcher::Event::Delete((*endpoint).clone()));
    }

    /// Stores `count` events for `endpoint` and claims their deliveries with a lease of `lease`.
    pub async fn claimed(
        &self,
        endpoint: &str,
        count: usize,
        lease: std::time::Duration,
    ) -> Vec<ClaimedDelivery> {
        let store = &self.shared.store;
        let now = Timestamp::now();
        for i in 0..count {
            let event = NewEvent {
                event_id: format!("evt_{endpoint}_{i}_{}", ulid::Ulid::new()),
                namespace: NAMESPACE.into(),
                event_type: "user.created".into(),
                data: bytes::Bytes::from_static(br#"{"user":{"id":1}}"#),
                created_at: now,
                source: EventSource::Ingest,
                idempotency_key: None,
                trace_parent: None,
            };
            store.enqueue(event, vec![endpoint.into()]).await.unwrap();
        }
        store
            .claim_due(ClaimRequest {
                now,
                limit: count,
                per_endpoint_limit: None,
                owner: OWNER.into(),
                lease,
                scope: ClaimScope::All,
            })
            .await
            .unwrap()
    }
}
