//! What the dispatcher keeps of Secrets and delivery ConfigMaps: a Secret's data, and the policy
//! a ConfigMap holds, parsed once when it arrives. They are kept in [`super::named`] stores by
//! namespace and name, instead of the API objects in reflector stores: with 10,000 endpoints the
//! two caches were a third of the dispatcher's memory (`cargo bench --bench cache_memory`).
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use crate::api::policy::{EffectivePolicy, POLICY_KEY};

/// One key of a Secret's data and its value.
type SecretEntry = (Box<str>, Box<[u8]>);

/// A Secret's data.
#[derive(Clone, Debug, Default)]
pub struct CachedSecret {
    data: Box<[SecretEntry]>,
}

impl CachedSecret {
    /// The value of `key` as text, if present, UTF-8 and not empty.
    pub fn text(&self, key: &str) -> Option<String> {
        let (_, value) = self.data.iter().find(|(k, _)| &**k == key)?;
        std::str::from_utf8(value)
            .ok()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }
}

impl From<Secret> for CachedSecret {
    fn from(secret: Secret) -> Self {
        Self {
            data: secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(key, value)| (key.into_boxed_str(), value.0.into_boxed_slice()))
                .collect(),
        }
    }
}

/// A delivery ConfigMap's policy: `None` when it has none or it does not parse (the endpoint is
/// then not ready, as when the ConfigMap is missing).
#[derive(Clone, Debug, Default)]
pub struct CachedPolicy {
    policy: Option<Arc<EffectivePolicy>>,
}

impl CachedPolicy {
    pub fn policy(&self) -> Option<Arc<EffectivePolicy>> {
        self.policy.clone()
    }
}

impl From<ConfigMap> for CachedPolicy {
    fn from(config_map: ConfigMap) -> Self {
        let policy = config_map
            .data
            .as_ref()
            .and_then(|data| data.get(POLICY_KEY))
            .and_then(|json| EffectivePolicy::from_config_json(json).ok())
            .map(Arc::new);
        Self { policy }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team".into()),
            uid: Some("u-1".into()),
            labels: Some(BTreeMap::from([("tier".into(), "gold".into())])),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_secret_keeps_its_key_and_every_value() {
        let secret = CachedSecret::from(Secret {
            metadata: meta("ep-signing"),
            data: Some(BTreeMap::from([
                ("secret".to_string(), ByteString(b"whsec_a".to_vec())),
                ("empty".to_string(), ByteString(Vec::new())),
                ("binary".to_string(), ByteString(vec![0xff, 0xfe])),
            ])),
            ..Secret::default()
        });
        assert_eq!(secret.text("secret").as_deref(), Some("whsec_a"));
        assert_eq!(secret.text("empty"), None, "empty is absent");
        assert_eq!(secret.text("binary"), None, "not UTF-8");
        assert_eq!(secret.text("other"), None);
    }

    #[test]
    fn a_config_map_keeps_its_parsed_policy_and_none_when_it_does_not_parse() {
        let policy = crate::api::validation::validate_endpoint(
            &serde_json::from_value(serde_json::json!({"url": "https://r.example.com/h"}))
                .expect("a spec"),
            "ep",
            false,
        )
        .expect("valid");
        let with = |json: &str| {
            CachedPolicy::from(ConfigMap {
                metadata: meta("ep-delivery"),
                data: Some(BTreeMap::from([(POLICY_KEY.to_string(), json.to_string())])),
                ..ConfigMap::default()
            })
        };
        let cached = with(&policy.to_config_json());
        assert_eq!(cached.policy().as_deref(), Some(&policy));
        assert!(with("{not json").policy().is_none());
        assert!(CachedPolicy::from(ConfigMap::default()).policy().is_none());
    }
}
