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

/// What applying the desired delivery ConfigMap changes, for the Event it deserves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigMapChange {
    /// It does not exist yet.
    Created,
    /// Someone else edited what we wrote for a spec we had already reconciled.
    Restored,
    /// The spec (or what we derive from it) changed.
    Updated,
    /// It already is as desired; nothing to write.
    Unchanged,
}

/// Compares the ConfigMap in the cluster with the desired one. `spec_reconciled` is whether the
/// endpoint's current generation was reconciled before (`status.observedGeneration`): a
/// difference then is drift, not a spec change. A hand edit also leaves a field manager other
/// than `ours` in `managedFields`; requiring both keeps a spec change that follows an old edit
/// (whose manager entry lingers) from being reported as a restore.
pub fn config_map_change(
    existing: Option<&ConfigMap>,
    desired: &ConfigMap,
    spec_reconciled: bool,
    ours: &str,
) -> ConfigMapChange {
    let Some(existing) = existing else {
        return ConfigMapChange::Created;
    };
    let data_matches = desired.data.iter().flatten().all(|(key, value)| {
        existing
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .is_some_and(|v| v == value)
    });
    let labels_match = desired
        .metadata
        .labels
        .iter()
        .flatten()
        .all(|(key, value)| existing.labels().get(key) == Some(value));
    let owned = desired
        .metadata
        .owner_references
        .iter()
        .flatten()
        .all(|owner| existing.owner_references().contains(owner));
    if data_matches && labels_match && owned {
        return ConfigMapChange::Unchanged;
    }
    let edited_by_others = existing
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|entry| entry.manager.as_deref() != Some(ours));
    if spec_reconciled && edited_by_others {
        ConfigMapChange::Restored
    } else {
        ConfigMapChange::Updated
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

    fn edited_by(mut cm: ConfigMap, manager: &str) -> ConfigMap {
        cm.metadata.managed_fields = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
                manager: Some("ours".into()),
                ..Default::default()
            },
            k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
                manager: Some(manager.into()),
                ..Default::default()
            },
        ]);
        cm
    }

    #[test]
    fn config_map_changes_are_told_apart() {
        let endpoint = endpoint();
        let policy = validate_endpoint(&endpoint.spec, "crm", false).unwrap();
        let desired = delivery_config_map(&endpoint, &policy);
        let change = |existing: Option<&ConfigMap>, reconciled| {
            config_map_change(existing, &desired, reconciled, "ours")
        };
        assert_eq!(change(None, true), ConfigMapChange::Created);
        // Extra keys and labels of others are left alone and are no drift.
        let mut same = edited_by(desired.clone(), "kubectl-label");
        same.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert("extra".into(), "x".into());
        assert_eq!(change(Some(&same), true), ConfigMapChange::Unchanged);

        let mut tampered = desired.clone();
        tampered.data = Some(BTreeMap::from([(POLICY_KEY.into(), "{}".into())]));
        let tampered = edited_by(tampered, "kubectl-edit");
        assert_eq!(change(Some(&tampered), true), ConfigMapChange::Restored);
        // The spec changed since the last reconcile: an update, even after an old hand edit.
        assert_eq!(change(Some(&tampered), false), ConfigMapChange::Updated);

        // Only we ever wrote it: a new policy (e.g. after an upgrade) is an update.
        let mut stale = desired.clone();
        stale.data = Some(BTreeMap::from([(POLICY_KEY.into(), "{}".into())]));
        assert_eq!(change(Some(&stale), true), ConfigMapChange::Updated);

        let mut orphaned = edited_by(desired.clone(), "kubectl-patch");
        orphaned.metadata.owner_references = None;
        assert_eq!(change(Some(&orphaned), true), ConfigMapChange::Restored);
        let mut unlabelled = edited_by(desired.clone(), "kubectl-label");
        unlabelled.metadata.labels = None;
        assert_eq!(change(Some(&unlabelled), true), ConfigMapChange::Restored);
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
