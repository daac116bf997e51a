//! The security log's writer: entries are queued without waiting (never on a delivery's or a
//! request's path), written to the store in batches, fed to the detectors, and each alert is
//! stored too, raised as a Warning Event and counted.
//!
//! Where an alert's Event goes: on the endpoint for `RepeatedRefusals` and `DnsRebinding`; for an
//! `AuthFailureBurst`, on the Namespace the failed requests addressed, else on the dispatcher's
//! own Pod (`POD_NAME`/`POD_NAMESPACE`), else only the log, the metric and a warning line.
use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use kube::runtime::events::{Event, EventType};
use kube::Resource;
use tokio::sync::mpsc;
use tracing::warn;

use super::metrics::{AlertLabels, Metrics, SecurityLabels};
use super::Shared;
use crate::security::detect::{Detector, Thresholds};
use crate::security::{SecurityEvent, SecurityKind};
use crate::store::{EndpointRef, StatsWindows};

/// Entries that may wait for the writer.
const CAPACITY: usize = 4096;
/// Entries written in one store call at most.
const BATCH: usize = 256;

/// An entry and when it happened.
type Entry = (Timestamp, SecurityEvent);

/// The handle every part of the dispatcher records through. Cheap to clone.
#[derive(Clone)]
pub struct SecurityLog {
    sender: mpsc::Sender<Entry>,
    metrics: Metrics,
}

/// The receiving end, for [`run`].
pub struct SecurityLogReceiver(mpsc::Receiver<Entry>);

impl SecurityLog {
    pub fn channel(metrics: Metrics) -> (Self, SecurityLogReceiver) {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        let log = Self { sender, metrics };
        (log, SecurityLogReceiver(receiver))
    }

    /// Records `event` as happening now. Never waits and never fails the caller: when the queue
    /// is full the entry is dropped, counted and logged.
    pub fn record(&self, event: SecurityEvent) {
        self.metrics
            .security_events
            .get_or_create(&SecurityLabels {
                kind: event.kind.as_str(),
            })
            .inc();
        tracing::info!(
            target: "audit",
            kind = event.kind.as_str(),
            namespace = event.namespace.as_deref(),
            endpoint = event.endpoint.as_deref(),
            source = event.source.as_deref(),
            user = event.user.as_deref(),
            address = event.address.as_deref(),
            "{}",
            event.detail
        );
        if self.sender.try_send((Timestamp::now(), event)).is_err() {
            self.metrics.security_log_dropped.inc();
            warn!("a security log entry was dropped: its queue is full");
        }
    }
}

/// Writes queued entries in batches, runs the detectors and raises alerts, until the senders
/// are gone.
pub async fn run(shared: Arc<Shared>, SecurityLogReceiver(mut receiver): SecurityLogReceiver) {
    let mut detector = Detector::new(Thresholds::default());
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        let mut rows = Vec::with_capacity(batch.len());
        let mut alerts = Vec::new();
        let last_success = last_successes(&shared, &batch).await;
        for (at, event) in batch.drain(..) {
            let endpoint = event.namespace.clone().zip(event.endpoint.clone());
            let success = endpoint.and_then(|key| last_success.get(&key).copied().flatten());
            for mut alert in detector.observe(&event, at, success) {
                // A burst is per source; it is filed (and its Event raised) under the
                // namespace the request that completed it addressed, if any.
                if alert.namespace.is_none() {
                    alert.namespace.clone_from(&event.namespace);
                }
                alerts.push((at, alert, event.namespace.clone()));
            }
            rows.push((at, event));
        }
        for (at, alert, namespace) in &alerts {
            shared
                .metrics
                .security_alerts
                .get_or_create(&AlertLabels {
                    alert: alert.kind.as_str(),
                })
                .inc();
            shared
                .metrics
                .security_events
                .get_or_create(&SecurityLabels {
                    kind: alert.kind.as_str(),
                })
                .inc();
            warn!(target: "audit", alert = alert.kind.as_str(), "{}", alert.detail);
            raise(&shared, alert, namespace.as_deref()).await;
            rows.push((*at, alert.clone()));
        }
        if rows.is_empty() {
            continue;
        }
        if let Err(error) = shared.store.record_security_events(rows).await {
            warn!(%error, "writing the security log failed; these entries are in the audit log lines only");
        }
    }
}

/// When each endpoint with a refused destination in `batch` last delivered successfully, read
/// from the store once per endpoint per batch: refusals are rare, so the delivery path records
/// nothing for the DNS rebinding detector.
async fn last_successes(
    shared: &Shared,
    batch: &[Entry],
) -> HashMap<(String, String), Option<Timestamp>> {
    let mut found = HashMap::new();
    for (at, event) in batch {
        if event.kind != SecurityKind::DestinationRefused {
            continue;
        }
        let (Some(namespace), Some(name)) = (&event.namespace, &event.endpoint) else {
            continue;
        };
        let key = (namespace.clone(), name.clone());
        if found.contains_key(&key) {
            continue;
        }
        let stats = shared
            .store
            .endpoint_stats_with(&EndpointRef::new(namespace, name), *at, StatsWindows::NONE)
            .await;
        let success = match stats {
            Ok(stats) => stats.last_success_at,
            Err(error) => {
                warn!(%error, "reading an endpoint's last success for the DNS rebinding check failed");
                None
            }
        };
        found.insert(key, success);
    }
    found
}

/// The object an alert's Event is about.
fn subject(
    shared: &Shared,
    alert: &SecurityEvent,
    namespace: Option<&str>,
) -> Option<ObjectReference> {
    if let (Some(ns), Some(name)) = (&alert.namespace, &alert.endpoint) {
        return shared
            .cache
            .endpoint(ns, name)
            .map(|endpoint| endpoint.object_ref(&()));
    }
    let namespace = namespace.or(alert.namespace.as_deref());
    if let Some(namespace) = namespace {
        let mut object = Namespace::default();
        object.metadata.name = Some(namespace.to_owned());
        let mut reference = object.object_ref(&());
        // Recorded in that namespace (`kubectl get events -n <ns>` shows it), not in `default`
        // where Events of cluster-scoped objects go otherwise.
        reference.namespace = Some(namespace.to_owned());
        return Some(reference);
    }
    let config = &shared.config;
    match (&config.identity, &config.lease_namespace) {
        (Some(pod), Some(pod_namespace)) => Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.clone()),
            namespace: Some(pod_namespace.clone()),
            ..ObjectReference::default()
        }),
        _ => None,
    }
}

async fn raise(shared: &Shared, alert: &SecurityEvent, namespace: Option<&str>) {
    debug_assert!(alert.kind.is_alert());
    let Some(object) = subject(shared, alert, namespace) else {
        return;
    };
    let event = Event {
        type_: EventType::Warning,
        reason: alert.kind.reason().to_owned(),
        note: Some(alert.detail.chars().take(1000).collect()),
        action: "Detect".to_owned(),
        secondary: None,
    };
    if let Err(error) = shared.recorder.publish(&event, &object).await {
        warn!(%error, reason = alert.kind.reason(), "publishing a security alert Event failed");
    }
}
