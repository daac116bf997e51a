//! The dispatcher's view of the cluster: reflector caches of endpoints, subscriptions, Secrets
//! and delivery ConfigMaps. Deliveries read from here, never from the API server.
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use std::time::Duration;

use kube::runtime::reflector::store::WriterDropped;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;

use super::router;
use crate::api::policy::{EffectivePolicy, POLICY_KEY};
use crate::api::{WebhookEndpoint, WebhookSubscription};
use crate::delivery::signing::SigningKeys;

#[derive(Clone)]
pub struct Cache {
    pub endpoints: Store<WebhookEndpoint>,
    pub subscriptions: Store<WebhookSubscription>,
    pub secrets: Store<Secret>,
    pub config_maps: Store<ConfigMap>,
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
}

/// Waits for one store. A waiter that starts before the store is ready is not always woken
/// when it becomes ready (seen with kube 5 under several concurrent waiters), so wait in short
/// rounds.
async fn ready<K>(store: &Store<K>) -> Result<(), WriterDropped>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await {
            Ok(result) => return result,
            Err(_) => continue,
        }
    }
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|s| !s.is_empty())
}

impl Cache {
    /// Waits until every cache has listed its objects once.
    pub async fn wait_until_ready(&self) -> Result<(), WriterDropped> {
        ready(&self.endpoints).await?;
        ready(&self.subscriptions).await?;
        ready(&self.secrets).await?;
        ready(&self.config_maps).await
    }

    pub fn endpoint(&self, namespace: &str, name: &str) -> Option<Arc<WebhookEndpoint>> {
        self.endpoints.get(&ObjectRef::new(name).within(namespace))
    }

    /// Endpoint names an event goes to (see [`router::route`]).
    pub fn route(&self, namespace: &str, event_type: &str) -> Vec<String> {
        let subscriptions: Vec<Arc<WebhookSubscription>> = self
            .subscriptions
            .state()
            .into_iter()
            .filter(|s| s.namespace().as_deref() == Some(namespace))
            .collect();
        if subscriptions.is_empty() {
            return Vec::new();
        }
        let endpoints: Vec<Arc<WebhookEndpoint>> = self
            .endpoints
            .state()
            .into_iter()
            .filter(|e| e.namespace().as_deref() == Some(namespace))
            .collect();
        let endpoint_refs: Vec<&WebhookEndpoint> = endpoints.iter().map(|e| e.as_ref()).collect();
        router::route(
            namespace,
            event_type,
            subscriptions.iter().map(|s| s.as_ref()),
            &endpoint_refs,
        )
    }

    /// The effective policy the controller provisioned for an endpoint.
    pub fn policy(&self, namespace: &str, name: &str) -> Result<EffectivePolicy, NotReady> {
        let key = format!("{namespace}/{name}");
        if self.endpoint(namespace, name).is_none() {
            return Err(NotReady::EndpointGone(key));
        }
        let config_map = self
            .config_maps
            .get(&ObjectRef::new(&crate::api::policy::config_map_name(name)).within(namespace))
            .ok_or_else(|| NotReady::NoPolicy(key.clone()))?;
        let json = config_map
            .data
            .as_ref()
            .and_then(|d| d.get(POLICY_KEY))
            .ok_or_else(|| NotReady::NoPolicy(key.clone()))?;
        EffectivePolicy::from_config_json(json).map_err(|_| NotReady::NoPolicy(key))
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
            .get(&ObjectRef::new(&signing.secret_name).within(namespace))
            .ok_or_else(|| {
                NotReady::NoSigningKey(
                    format!("{namespace}/{name}"),
                    format!("Secret {} not found", signing.secret_name),
                )
            })?;
        let primary = text(&secret, &signing.secret_key).ok_or_else(|| {
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
            previous: text(&secret, &signing.previous_secret_key),
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
                .get(&ObjectRef::new(&reference.name).within(namespace))
                .and_then(|s| text(&s, &reference.key))
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
