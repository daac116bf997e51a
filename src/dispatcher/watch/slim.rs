//! What the dispatcher drops from the objects it caches before they enter a reflector store:
//! what it never reads. With 10,000 endpoints, their Secrets, ConfigMaps and subscriptions, the
//! caches are most of its memory (`cargo bench --bench cache_memory` prints bytes per object).
//! Secrets and delivery ConfigMaps are not cached as objects at all (see [`crate::dispatcher::projected`]).
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::{WebhookEndpoint, WebhookEvent, WebhookSubscription};

/// A cached kind's own slimming.
pub trait Slim {
    fn slim(&mut self);
}

/// The watch's `modify` step: `object` as the dispatcher keeps it.
pub fn slim<K: Slim>(object: &mut K) {
    object.slim();
}

/// Server-side apply's bookkeeping and kubectl's last-applied annotation, on every kind.
fn slim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// What no cached endpoint or subscription is read for (the dashboard shows their spec, status,
/// labels and annotations; routing reads labels; the endpoint watch reads annotations).
fn slim_resource_meta(meta: &mut ObjectMeta) {
    slim_meta(meta);
    meta.owner_references = None;
    meta.creation_timestamp = None;
    meta.finalizers = None;
}

impl Slim for WebhookEndpoint {
    fn slim(&mut self) {
        slim_resource_meta(&mut self.metadata);
    }
}

impl Slim for WebhookSubscription {
    fn slim(&mut self) {
        slim_resource_meta(&mut self.metadata);
    }
}

impl Slim for WebhookEvent {
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference};

    use super::*;

    fn full_meta() -> ObjectMeta {
        ObjectMeta {
            name: Some("ep-signing".into()),
            namespace: Some("team".into()),
            uid: Some("u-1".into()),
            resource_version: Some("42".into()),
            labels: Some(BTreeMap::from([("tier".into(), "gold".into())])),
            annotations: Some(BTreeMap::from([
                (
                    "kubectl.kubernetes.io/last-applied-configuration".into(),
                    "{}".into(),
                ),
                ("webhooks.pitchey.io/test".into(), "n-1".into()),
            ])),
            managed_fields: Some(vec![ManagedFieldsEntry::default()]),
            owner_references: Some(vec![OwnerReference::default()]),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn an_endpoint_keeps_its_labels_and_annotations_but_not_bookkeeping() {
        let mut endpoint: WebhookEndpoint = serde_json::from_value(serde_json::json!({
            "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookEndpoint",
            "metadata": {"name": "ep"}, "spec": {"url": "https://r.example.com/h"},
        }))
        .expect("an endpoint");
        endpoint.metadata = full_meta();
        slim(&mut endpoint);
        let meta = &endpoint.metadata;
        assert_eq!(meta.managed_fields, None);
        assert_eq!(meta.owner_references, None);
        assert!(meta.labels.as_ref().is_some_and(|l| l.contains_key("tier")));
        let annotations = meta.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            vec!["webhooks.pitchey.io/test"]
        );
    }
}
