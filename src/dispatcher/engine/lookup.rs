//! What the engine reads about an endpoint: its effective policy, whether it is suspended, and
//! the signing keys and headers of a request. Behind a trait so the engine does not depend on
//! the reflector caches (or on Kubernetes at all).
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::policy::EffectivePolicy;
use crate::delivery::signing::SigningKeys;
use crate::dispatcher::cache::{Cache, NotReady};
use crate::store::EndpointRef;

/// An endpoint's delivery settings, as the engine needs them.
pub trait EndpointLookup: Send + Sync {
    /// The effective policy the controller provisioned (`EndpointGone` once it is deleted).
    fn policy(&self, endpoint: &EndpointRef) -> Result<Arc<EffectivePolicy>, NotReady>;
    /// Whether `spec.suspend` is set (read from the endpoint: its ConfigMap may lag behind).
    fn suspended(&self, endpoint: &EndpointRef) -> bool;
    /// The signing keys the policy names.
    fn signing_keys(
        &self,
        endpoint: &EndpointRef,
        policy: &EffectivePolicy,
    ) -> Result<SigningKeys, NotReady>;
    /// The receiver's URL: the policy's `url`, or the value of its `urlFrom` Secret key.
    fn url(&self, endpoint: &EndpointRef, policy: &EffectivePolicy) -> Result<String, NotReady>;
    /// The policy's static headers plus the values of its `headersFrom`.
    fn headers(
        &self,
        endpoint: &EndpointRef,
        policy: &EffectivePolicy,
    ) -> Result<BTreeMap<String, String>, NotReady>;
}

/// The lookup over the dispatcher's caches (policies are parsed as their ConfigMaps arrive).
pub struct CachedEndpoints {
    cache: Cache,
}

impl CachedEndpoints {
    pub fn new(cache: Cache) -> Self {
        Self { cache }
    }
}

impl EndpointLookup for CachedEndpoints {
    fn policy(&self, endpoint: &EndpointRef) -> Result<Arc<EffectivePolicy>, NotReady> {
        self.cache.policy(&endpoint.namespace, &endpoint.name)
    }

    fn suspended(&self, endpoint: &EndpointRef) -> bool {
        self.cache.suspended(endpoint)
    }

    fn signing_keys(
        &self,
        endpoint: &EndpointRef,
        policy: &EffectivePolicy,
    ) -> Result<SigningKeys, NotReady> {
        self.cache
            .signing_keys(&endpoint.namespace, &endpoint.name, policy)
    }

    fn url(&self, endpoint: &EndpointRef, policy: &EffectivePolicy) -> Result<String, NotReady> {
        self.cache.url(&endpoint.namespace, &endpoint.name, policy)
    }

    fn headers(
        &self,
        endpoint: &EndpointRef,
        policy: &EffectivePolicy,
    ) -> Result<BTreeMap<String, String>, NotReady> {
        self.cache
            .headers(&endpoint.namespace, &endpoint.name, policy)
    }
}
