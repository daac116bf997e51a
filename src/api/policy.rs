//! The effective delivery policy of an endpoint: its spec with every default filled in and every
//! duration parsed. The controller writes it to the ConfigMap `<endpoint>-delivery`; the
//! dispatcher reads it from there.
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;
use std::sync::Arc;

use super::endpoint::{Backoff, HeaderFromSecret, HttpMethod, OrderingSpec, SigningScheme};
use super::references::SecretKeySelector;

/// Key of the ConfigMap entry holding the policy as JSON.
pub const POLICY_KEY: &str = "policy.json";

/// Everything the dispatcher needs to deliver to one endpoint, except secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectivePolicy {
    /// Empty when the URL comes from a Secret (`url_from`).
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_from: Option<SecretKeySelector>,
    #[serde(default)]
    pub method: HttpMethod,
    pub display_name: String,
    pub timeout_seconds: u32,
    pub retry: EffectiveRetry,
    pub rate_limit: EffectiveRateLimit,
    pub circuit_breaker: EffectiveCircuitBreaker,
    pub signing: EffectiveSigning,
    /// Static headers added to every request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values the dispatcher reads from Secret keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_from: Vec<HeaderFromSecret>,
    pub suspend: bool,
    /// Ordered delivery, when the endpoint asks for it (absent: parallel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<OrderingSpec>,
    /// The jq program that turns each payload into the request body (`spec.transform.jq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Arc<str>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveRetry {
    /// Retries after the first attempt.
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    pub jitter_percent: u8,
    /// One retry at once after a 5xx or transport failure of the first attempt (absent in
    /// ConfigMaps written before it existed: off, their schedule unchanged).
    #[serde(default)]
    pub immediate_retry: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveRateLimit {
    pub requests_per_minute: u32,
    pub burst: u32,
    pub adaptive: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveCircuitBreaker {
    pub failure_threshold: u32,
    pub open_duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveSigning {
    pub scheme: SigningScheme,
    pub rotation_grace_period_ms: u64,
    /// The Secret holding the signing key (generated `<endpoint>-signing` or the user's).
    pub secret_name: String,
    /// The key of the current signing secret in that Secret.
    pub secret_key: String,
    /// The key of the previous signing secret, honoured while present (rotation grace period).
    pub previous_secret_key: String,
}

/// Name of the Secret the controller generates for an endpoint.
pub fn generated_secret_name(endpoint: &str) -> String {
    format!("{endpoint}-signing")
}

/// Name of the ConfigMap holding an endpoint's effective policy.
pub fn config_map_name(endpoint: &str) -> String {
    format!("{endpoint}-delivery")
}

/// Key of the current signing secret in a generated Secret.
pub const GENERATED_SECRET_KEY: &str = "secret";
/// Key of the previous signing secret in a generated Secret (present during a grace period).
pub const GENERATED_PREVIOUS_KEY: &str = "previous";

impl EffectivePolicy {
    /// Whether a dead letter in one of this endpoint's ordering lanes pauses it
    /// (`ordering.onDeadLetter: Pause`).
    pub fn pauses_on_dead_letter(&self) -> bool {
        self.ordering
            .as_ref()
            .is_some_and(|o| o.on_dead_letter == super::endpoint::OnDeadLetter::Pause)
    }

    /// The policy as the ConfigMap stores it (stable, pretty JSON so `kubectl get -o yaml` reads well).
    pub fn to_config_json(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads the policy back from the ConfigMap's JSON.
    pub fn from_config_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}
