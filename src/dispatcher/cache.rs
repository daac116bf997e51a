//! The dispatcher's view of the cluster: reflector caches of endpoints, subscriptions, Secrets
//! and delivery ConfigMaps. Deliveries read from here, never from the API server.
use std::collections::BTreeMap;
use std::sync::Arc;

use std::time::Duration;

use kube::runtime::reflector::store::WriterDropped;
use kube::runtime::reflector::{ObjectRef, Store as Reflector};

use super::named::{NamedStore, WriterGone};
use super::projected::{CachedPolicy, CachedSecret};
use super::router;
use super::subscription_index::SharedIndex;
use crate::api::policy::EffectivePolicy;
use crate::api::{WebhookEndpoint, WebhookSubscription};
use crate::delivery::signing::SigningKeys;
use crate::store::EndpointRef;

#[derive(Clone)]
pub struct Cache {
    pub endpoints: Reflector<WebhookEndpoint>,
    pub subscriptions: Reflector<WebhookSubscription>,
    /// Secrets as their data only.
    pub secrets: NamedStore<CachedSecret>,
    /// Delivery ConfigMaps as their parsed policies.
    pub config_maps: NamedStore<CachedPolicy>,
    /// Subscriptions by event type (see [`SharedIndex`]); the subscription watch reports changes.
    pub index: SharedIndex,
}

/// Why an endpoint cannot be delivered to right now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("WebhookEndpoint {0} does not exist")]
    EndpointGone(String),
    #[error("the delivery policy of {0} is not provisioned yet (ConfigMap {0}-delivery)")]
    NoPolicy(String),
    #[error("the signing secret of {0} is missing: {1}")]
    NoSigningKey(String, String),
    #[error("header {header} of {endpoint}: {reason}")]
    HeaderSecret {
        endpoint: String,
        header: String,
        reason: String,
    },
    #[error("the URL of {endpoint} (urlFrom): {reason}")]
    UrlSecret { endpoint: String, reason: String },
}

/// Waits for one store. A waiter that starts before the store is ready is not always woken
/// when it becomes ready (seen with kube 5 under several concurrent waiters), so wait in short
/// rounds.
async fn ready<K>(store: &Reflector<K>) -> Result<(), WriterGone>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await {
            Ok(result) => return result.map_err(|_: WriterDropped| WriterGone),
            Err(_) => continue,
        }
    }
}

impl Cache {
    /// Waits until every cache has listed its objects once.
    pub async fn wait_until_ready(&self) -> Result<(), WriterGone> {
        ready(&self.endpoints).await?;
        ready(&self.subscriptions).await?;
        self.secrets.wait_until_ready().await?;
        self.config_maps.wait_until_ready().await
    }

    pub fn endpoint(&self, namespace: &str, name: &str) -> Option<Arc<WebhookEndpoint>> {
        self.endpoints.get(&ObjectRef::new(name).within(namespace))
    }

    /// Whether the endpoint has `spec.suspend` set (false once it is gone).
    pub fn suspended(&self, endpoint: &EndpointRef) -> bool {
        self.endpoint(&endpoint.namespace, &endpoint.name)
            .is_some_and(|e| e.spec.suspend)
    }

    /// Endpoint names an event goes to (see [`router::route`]). `endpointRef` subscriptions look
    /// their endpoint up by name; the namespace's endpoints are listed only if a matching
    /// subscription has a selector, so an event costs O(subscriptions), not a copy of every cached
    /// endpoint.
    pub fn route(&self, namespace: &str, event_type: &str) -> Vec<String> {
        let subscriptions = self
            .index
            .current(|| self.subscriptions.state())
            .candidates(namespace, event_type);
        if subscriptions.is_empty() {
            return Vec::new();
        }
        let mut listed: Option<Vec<Arc<WebhookEndpoint>>> = None;
        router::route_with(
            namespace,
            event_type,
            subscriptions.iter().map(|s| s.as_ref()),
            |name| {
                self.endpoint(namespace, name)
                    .is_some_and(|e| router::routable(&e, namespace))
            },
            |each| {
                let endpoints = listed.get_or_insert_with(|| {
                    self.endpoints
                        .state()
                        .into_iter()
                        .filter(|e| router::routable(e, namespace))
                        .collect()
                });
                endpoints.iter().for_each(|e| each(e));
            },
        )
    }

    /// The effective policy the controller provisioned for an endpoint (its delivery ConfigMap's,
    /// parsed when the ConfigMap arrived), if the endpoint exists.
    pub fn policy(&self, namespace: &str, name: &str) -> Result<Arc<EffectivePolicy>, NotReady> {
        if self.endpoint(namespace, name).is_none() {
            return Err(NotReady::EndpointGone(format!("{namespace}/{name}")));
        }
        self.config_maps
            .get(namespace, &crate::api::policy::config_map_name(name))
            .and_then(|cached| cached.policy())
            .ok_or_else(|| NotReady::NoPolicy(format!("{namespace}/{name}")))
    }

    /// The signing keys named by a policy.
    pub fn signing_keys(
        &self,
        namespace: &str,
        name: &str,
        policy: &EffectivePolicy,
    ) -> Result<SigningKeys, NotReady> {
        let signing = &policy.signing;
        let secret = self
            .secrets
            .get(namespace, &signing.secret_name)
            .ok_or_else(|| {
                NotReady::NoSigningKey(
                    format!("{namespace}/{name}"),
                    format!("Secret {} not found", signing.secret_name),
                )
            })?;
        let primary = secret.text(&signing.secret_key).ok_or_else(|| {
            NotReady::NoSigningKey(
                format!("{namespace}/{name}"),
                format!(
                    "Secret {} has no key {}",
                    signing.secret_name, signing.secret_key
                ),
            )
        })?;
        Ok(SigningKeys {
            primary,
            previous: secret.text(&signing.previous_secret_key),
        })
    }

    /// The URL the policy names: `url`, or the value of its `urlFrom` Secret key (trimmed).
    pub fn url(
        &self,
        namespace: &str,
        name: &str,
        policy: &EffectivePolicy,
    ) -> Result<String, NotReady> {
        let Some(reference) = &policy.url_from else {
            return Ok(policy.url.clone());
        };
        self.secrets
            .get(namespace, &reference.name)
            .and_then(|s| s.text(&reference.key))
            .map(|url| url.trim().to_owned())
            .ok_or_else(|| NotReady::UrlSecret {
                endpoint: format!("{namespace}/{name}"),
                reason: format!("Secret {} has no key {}", reference.name, reference.key),
            })
    }

    /// Static headers plus the values of `headersFrom`.
    pub fn headers(
        &self,
        namespace: &str,
        name: &str,
        policy: &EffectivePolicy,
    ) -> Result<BTreeMap<String, String>, NotReady> {
        let mut headers = policy.headers.clone();
        for from in &policy.headers_from {
            let reference = &from.secret_key_ref;
            let value = self
                .secrets
                .get(namespace, &reference.name)
                .and_then(|s| s.text(&reference.key))
                .ok_or_else(|| NotReady::HeaderSecret {
                    endpoint: format!("{namespace}/{name}"),
                    header: from.name.clone(),
                    reason: format!("Secret {} has no key {}", reference.name, reference.key),
                })?;
            headers.insert(from.name.clone(), value);
        }
        Ok(headers)
    }
}
