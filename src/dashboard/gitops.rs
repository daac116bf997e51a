//! Who else manages an endpoint's spec (from `metadata.managedFields`), so the dashboard can warn
//! that a change made there may be reverted by a GitOps tool or the next `kubectl apply`. Pure.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use serde_json::Value;

/// The field manager of the dashboard's own changes.
pub const DASHBOARD_MANAGER: &str = "webhook-operator-dashboard";

/// Managers that re-apply what is in Git or a chart.
const DECLARATIVE: &[&str] = &[
    "kubectl-client-side-apply",
    "kustomize-controller",
    "helm-controller",
    "helm",
    "argocd-controller",
    "argocd-application-controller",
];

/// Declarative managers of the spec, and whether one of them owns `field` (e.g. `suspend`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SpecOwners {
    /// Managers that apply the spec declaratively (server-side apply, or a known GitOps tool).
    pub managers: Vec<String>,
    /// Of those, the ones that own `spec.<field>` itself.
    pub owning_field: Vec<String>,
}

impl SpecOwners {
    pub fn any(&self) -> bool {
        !self.managers.is_empty()
    }
}

fn owns_spec(fields: &Value) -> Option<&serde_json::Map<String, Value>> {
    fields.get("f:spec").and_then(Value::as_object)
}

/// The declarative owners of the spec of an object with these managed fields.
pub fn spec_owners(entries: &[ManagedFieldsEntry], field: &str) -> SpecOwners {
    let mut owners = SpecOwners::default();
    let field_key = format!("f:{field}");
    for entry in entries {
        let Some(manager) = entry.manager.as_deref() else {
            continue;
        };
        if manager == DASHBOARD_MANAGER
            || entry.subresource.as_deref().is_some_and(|s| !s.is_empty())
        {
            continue;
        }
        let declarative =
            entry.operation.as_deref() == Some("Apply") || DECLARATIVE.contains(&manager);
        let Some(spec) = entry.fields_v1.as_ref().and_then(|f| owns_spec(&f.0)) else {
            continue;
        };
        if !declarative {
            continue;
        }
        if !owners.managers.iter().any(|m| m == manager) {
            owners.managers.push(manager.to_owned());
        }
        if spec.contains_key(&field_key) && !owners.owning_field.iter().any(|m| m == manager) {
            owners.owning_field.push(manager.to_owned());
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
    use serde_json::json;

    fn entry(
        manager: &str,
        operation: &str,
        subresource: Option<&str>,
        fields: Value,
    ) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            subresource: subresource.map(str::to_owned),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    #[test]
    fn server_side_apply_and_gitops_tools_own_the_spec() {
        let entries = vec![
            entry(
                "kustomize-controller",
                "Apply",
                None,
                json!({"f:spec": {"f:url": {}, "f:suspend": {}}}),
            ),
            entry(
                "kubectl-client-side-apply",
                "Update",
                None,
                json!({"f:spec": {"f:url": {}}}),
            ),
            entry(
                "kubectl-edit",
                "Update",
                None,
                json!({"f:spec": {"f:suspend": {}}}),
            ),
            entry(
                "webhook-operator-dispatcher",
                "Update",
                Some("status"),
                json!({"f:status": {}}),
            ),
            entry(
                DASHBOARD_MANAGER,
                "Apply",
                None,
                json!({"f:spec": {"f:suspend": {}}}),
            ),
        ];
        let owners = spec_owners(&entries, "suspend");
        assert_eq!(
            owners.managers,
            vec!["kustomize-controller", "kubectl-client-side-apply"]
        );
        assert_eq!(owners.owning_field, vec!["kustomize-controller"]);
        assert!(owners.any());
    }

    #[test]
    fn imperative_managers_alone_are_no_reason_to_warn() {
        let entries = vec![entry(
            "kubectl-create",
            "Update",
            None,
            json!({"f:spec": {"f:url": {}}}),
        )];
        assert!(!spec_owners(&entries, "suspend").any());
        assert!(!spec_owners(&[], "suspend").any());
    }
}
