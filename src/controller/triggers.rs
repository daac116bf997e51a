//! What makes an object be reconciled again besides its own changes.
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store as Reflector};
use kube::runtime::watcher;
use kube::ResourceExt;

use crate::api::{WebhookEndpoint, WebhookSubscription, ENDPOINT_LABEL};

/// Endpoints to reconcile when a Secret changes: the owner of a generated Secret, and every
/// endpoint whose `spec.signing.secretRef` or `spec.urlFrom` names it.
pub fn endpoints_for_secret(
    endpoints: Reflector<WebhookEndpoint>,
) -> impl Fn(PartialObjectMeta<Secret>) -> Vec<ObjectRef<WebhookEndpoint>> + Send + Sync + 'static {
    move |secret| {
        let namespace = secret.namespace().unwrap_or_default();
        let name = secret.name_any();
        let mut refs: Vec<ObjectRef<WebhookEndpoint>> = secret
            .labels()
            .get(ENDPOINT_LABEL)
            .map(|owner| ObjectRef::new(owner).within(&namespace))
            .into_iter()
            .collect();
        refs.extend(
            endpoints
                .state()
                .iter()
                // Cheapest test first, no copies: this runs for every Secret change over every
                // cached endpoint.
                .filter(|e| e.spec.reads_secret(&name))
                .filter(|e| e.metadata.namespace.as_deref() == Some(namespace.as_str()))
                .map(|e| ObjectRef::from_obj(e.as_ref())),
        );
        refs
    }
}

/// Subscriptions to reconcile when an endpoint appears, disappears or changes labels: those of
/// its namespace that can resolve to it, i.e. every selector and the `endpointRef`s naming it.
/// Not every subscription of the namespace: creating N endpoints would reconcile N² times
/// (10,000 endpoints: 195,000 subscription status applies before a fifth of them were Ready).
pub fn subscriptions_for_endpoint(
    subscriptions: Reflector<WebhookSubscription>,
) -> impl Fn(PartialObjectMeta<WebhookEndpoint>) -> Vec<ObjectRef<WebhookSubscription>>
       + Send
       + Sync
       + 'static {
    move |endpoint| {
        let namespace = endpoint.metadata.namespace.as_deref();
        let name = endpoint.metadata.name.as_deref().unwrap_or_default();
        subscriptions
            .state()
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == namespace)
            .filter(|s| may_resolve_to(&s.spec, name))
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect()
    }
}

/// Whether a subscription's resolution can change with the endpoint `name`: a selector may
/// match any endpoint; an `endpointRef` only the one it names. Pure.
pub fn may_resolve_to(spec: &crate::api::WebhookSubscriptionSpec, name: &str) -> bool {
    spec.endpoint_ref
        .as_ref()
        .is_none_or(|reference| reference.name == name)
}

fn labels_hash<K: ResourceExt>(object: &K) -> u64 {
    let mut hasher = DefaultHasher::new();
    object.labels().hash(&mut hasher);
    hasher.finish()
}

/// Passes endpoint events that can change subscription membership: creations, deletions and
/// label changes. Status and spec updates are dropped.
pub fn membership_changes(
    events: impl Stream<Item = Result<watcher::Event<PartialObjectMeta<WebhookEndpoint>>, watcher::Error>>
        + Send
        + 'static,
) -> impl Stream<Item = Result<PartialObjectMeta<WebhookEndpoint>, watcher::Error>> + Send + 'static
{
    let mut seen: HashMap<ObjectRef<PartialObjectMeta<WebhookEndpoint>>, u64> = HashMap::new();
    events.flat_map(move |event| {
        let out: Vec<Result<_, watcher::Error>> = match event {
            Ok(watcher::Event::Apply(object)) | Ok(watcher::Event::InitApply(object)) => {
                let hash = labels_hash(&object);
                let key = ObjectRef::from_obj(&object);
                if seen.insert(key, hash) == Some(hash) {
                    vec![]
                } else {
                    vec![Ok(object)]
                }
            }
            Ok(watcher::Event::Delete(object)) => {
                seen.remove(&ObjectRef::from_obj(&object));
                vec![Ok(object)]
            }
            Ok(watcher::Event::Init) | Ok(watcher::Event::InitDone) => vec![],
            Err(error) => vec![Err(error)],
        };
        futures::stream::iter(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WebhookSubscriptionSpec;

    fn spec(value: serde_json::Value) -> WebhookSubscriptionSpec {
        serde_json::from_value(value).expect("a subscription spec")
    }

    #[test]
    fn endpoints_read_the_secrets_of_signing_and_url_from() {
        let endpoint = |value: serde_json::Value| -> crate::api::WebhookEndpointSpec {
            serde_json::from_value(value).expect("an endpoint spec")
        };
        let by_url = endpoint(
            serde_json::json!({"urlFrom": {"secretKeyRef": {"name": "slack", "key": "url"}}}),
        );
        let by_key = endpoint(serde_json::json!({"url": "https://a.example.com/",
            "signing": {"secretRef": {"name": "keys", "key": "k"}}}));
        assert!(by_url.reads_secret("slack") && !by_url.reads_secret("keys"));
        assert!(by_key.reads_secret("keys") && !by_key.reads_secret("slack"));
    }

    #[test]
    fn an_endpoint_change_reaches_selectors_and_the_refs_naming_it() {
        let by_ref = spec(serde_json::json!({"endpointRef": {"name": "crm"}, "eventTypes": ["*"]}));
        let by_selector = spec(serde_json::json!({
            "endpointSelector": {"matchLabels": {"team": "growth"}}, "eventTypes": ["*"]
        }));
        assert!(may_resolve_to(&by_ref, "crm"));
        assert!(!may_resolve_to(&by_ref, "mail"));
        assert!(may_resolve_to(&by_selector, "crm"));
        assert!(may_resolve_to(&by_selector, "mail"));
    }
}
