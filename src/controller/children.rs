//! The objects an endpoint owns, built as pure functions of the endpoint.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use kube::{Resource, ResourceExt};

use crate::api::policy::{config_map_name, generated_secret_name, EffectivePolicy, POLICY_KEY};
use crate::api::{WebhookEndpoint, ENDPOINT_LABEL};

fn owner(endpoint: &WebhookEndpoint) -> Option<Vec<OwnerReference>> {
    endpoint.controller_owner_ref(&()).map(|r| vec![r])
}

fn labels(endpoint: &WebhookEndpoint) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ENDPOINT_LABEL.to_string(), endpoint.name_any()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "webhook-operator".to_string(),
        ),
    ])
}

/// The ConfigMap `<endpoint>-delivery` holding the effective policy, owned by the endpoint.
pub fn delivery_config_map(endpoint: &WebhookEndpoint, policy: &EffectivePolicy) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(config_map_name(&endpoint.name_any())),
            namespace: endpoint.namespace(),
            labels: Some(labels(endpoint)),
            owner_references: owner(endpoint),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            POLICY_KEY.to_string(),
            policy.to_config_json(),
        )])),
        ..Default::default()
    }
}

/// The Secret `<endpoint>-signing`, owned by the endpoint.
pub fn signing_secret(
    endpoint: &WebhookEndpoint,
    data: BTreeMap<String, Vec<u8>>,
    annotations: BTreeMap<String, String>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(generated_secret_name(&endpoint.name_any())),
            namespace: endpoint.namespace(),
            labels: Some(labels(endpoint)),
            annotations: Some(annotations),
            owner_references: owner(endpoint),
            ..Default::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Default::default()
    }
}

/// A Secret's data as plain bytes.
pub fn secret_bytes(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validation::validate_endpoint;

    fn endpoint() -> WebhookEndpoint {
        let mut endpoint = WebhookEndpoint::new(
            "crm",
            serde_json::from_value(serde_json::json!({"url": "https://crm.example.com/h"}))
                .unwrap(),
        );
        endpoint.metadata.namespace = Some("team-a".into());
        endpoint.metadata.uid = Some("uid-1".into());
        endpoint
    }

    #[test]
    fn config_map_is_owned_and_holds_the_policy() {
        let endpoint = endpoint();
        let policy = validate_endpoint(&endpoint.spec, "crm", false).unwrap();
        let cm = delivery_config_map(&endpoint, &policy);
        assert_eq!(cm.metadata.name.as_deref(), Some("crm-delivery"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("team-a"));
        let owner = &cm.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("WebhookEndpoint", "uid-1")
        );
        assert_eq!(owner.controller, Some(true));
        let json = &cm.data.unwrap()[POLICY_KEY];
        assert_eq!(EffectivePolicy::from_config_json(json).unwrap(), policy);
    }

    #[test]
    fn secret_is_owned_and_labelled() {
        let secret = signing_secret(
            &endpoint(),
            BTreeMap::from([("secret".to_string(), b"whsec_x".to_vec())]),
            BTreeMap::new(),
        );
        assert_eq!(secret.metadata.name.as_deref(), Some("crm-signing"));
        assert_eq!(secret.metadata.labels.unwrap()[ENDPOINT_LABEL], "crm");
        assert!(secret.metadata.owner_references.is_some());
        assert_eq!(
            secret_bytes(&Secret {
                data: secret.data,
                ..Default::default()
            })["secret"],
            b"whsec_x"
        );
    }
}
