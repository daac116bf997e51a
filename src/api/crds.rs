//! The CustomResourceDefinitions, generated from the types, with the cross-field CEL rules
//! (`x-kubernetes-validations`) the API server enforces (every supported release, 1.33+). The
//! controller checks the same rules again in `validation.rs`, on purpose: the server does not
//! re-validate objects stored before a CRD upgrade added a rule (validation ratcheting), and the
//! controller reports everything wrong with a spec at once in the Ready condition, field by field.
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, ValidationRule,
};
use kube::CustomResourceExt;

use super::{WebhookEndpoint, WebhookEvent, WebhookReplay, WebhookSubscription};

/// Every CRD with the file name `crdgen` writes it to.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    let mut crds = vec![
        ("webhookendpoints.yaml", endpoint()),
        ("webhooksubscriptions.yaml", subscription()),
        ("webhookevents.yaml", event()),
        ("webhookreplays.yaml", replay()),
    ];
    for (_, crd) in &mut crds {
        conditions_as_map(crd);
        for version in &mut crd.spec.versions {
            if let Some(root) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                visit(root, &mut |node| {
                    strip_null_from_enum(node);
                    kubernetes_integer_format(node);
                });
            }
        }
    }
    crds
}

/// Calls `f` on `node` and every schema below it (properties and array items).
fn visit(node: &mut JSONSchemaProps, f: &mut impl FnMut(&mut JSONSchemaProps)) {
    f(node);
    for child in node.properties.iter_mut().flat_map(|p| p.values_mut()) {
        visit(child, f);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = node.items.as_mut() {
        visit(items, f);
    }
}

/// An optional enum is `nullable: true` already; a `null` among its values is not valid in a
/// structural schema (the API server and kubectl reject it).
fn strip_null_from_enum(node: &mut JSONSchemaProps) {
    if let Some(values) = node.enum_.as_mut() {
        values.retain(|v| v.0 != serde_json::Value::Null);
    }
}

/// schemars names Rust's unsigned integers (`uint8`, `uint32`, …), formats the API server does
/// not know and warns about at every install. They become the wider format Kubernetes knows,
/// the Rust type's range kept (where no tighter one is set) in `minimum`/`maximum`.
fn kubernetes_integer_format(node: &mut JSONSchemaProps) {
    let (wider, min, max) = match node.format.as_deref() {
        Some("uint8") => ("int32", 0.0, f64::from(u8::MAX)),
        Some("uint16") => ("int32", 0.0, f64::from(u16::MAX)),
        Some("uint32") => ("int64", 0.0, f64::from(u32::MAX)),
        _ => return,
    };
    node.format = Some(wider.to_owned());
    node.minimum.get_or_insert(min);
    node.maximum.get_or_insert(max);
}

/// The schema node at `path` (property names from the root), in every version.
fn nodes_at<'a>(
    crd: &'a mut CustomResourceDefinition,
    path: &'a [&'a str],
) -> impl Iterator<Item = &'a mut JSONSchemaProps> + 'a {
    crd.spec.versions.iter_mut().filter_map(move |version| {
        let mut node = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())?;
        for key in path {
            node = node.properties.as_mut()?.get_mut(*key)?;
        }
        Some(node)
    })
}

/// Conditions are a list keyed by `type`, so that the controller and the dispatcher can each
/// own their own conditions under server-side apply without overwriting the other's.
fn conditions_as_map(crd: &mut CustomResourceDefinition) {
    for node in nodes_at(crd, &["status", "conditions"]) {
        node.x_kubernetes_list_type = Some("map".to_string());
        node.x_kubernetes_list_map_keys = Some(vec!["type".to_string()]);
    }
}

fn rule(rule: &str, message: &str) -> ValidationRule {
    ValidationRule {
        rule: rule.to_string(),
        message: Some(message.to_string()),
        ..Default::default()
    }
}

/// Adds rules to the schema found at `path` (property names from the root).
fn add_rules(crd: &mut CustomResourceDefinition, path: &[&str], rules: Vec<ValidationRule>) {
    for node in nodes_at(crd, path) {
        node.x_kubernetes_validations
            .get_or_insert_with(Vec::new)
            .extend(rules.clone());
    }
}

fn endpoint() -> CustomResourceDefinition {
    use super::validation::reserved_headers;
    let mut crd = WebhookEndpoint::crd();
    add_rules(
        &mut crd,
        &["spec"],
        vec![
            rule(
                "!has(self.url) || self.url.startsWith('https://') || self.url.startsWith('http://')",
                "spec.url must start with https:// (http:// only where the operator allows plain HTTP)",
            ),
            rule(
                "has(self.url) != has(self.urlFrom)",
                "set exactly one of spec.url and spec.urlFrom",
            ),
        ],
    );
    add_rules(
        &mut crd,
        &["spec", "ordering"],
        vec![
            rule(
                "!has(self.mode) || self.mode != 'ByKey' || has(self.key)",
                "spec.ordering.key is required when mode is ByKey: the path of the key in the event, e.g. data.user.id",
            ),
            rule(
                "!has(self.key) || (has(self.mode) && self.mode == 'ByKey')",
                "spec.ordering.key is only used with mode ByKey; remove it or set mode: ByKey",
            ),
        ],
    );
    add_rules(
        &mut crd,
        &["spec", "retryPolicy"],
        vec![rule(
            "!has(self.baseDelay) || !has(self.maxDelay) || duration(self.baseDelay) <= duration(self.maxDelay)",
            "spec.retryPolicy.baseDelay must be at most maxDelay",
        )],
    );
    // Generated from the list validation and the sender use, so all three agree. Only on
    // headersFrom, whose names have a maximum length: a rule over the keys of `headers` (which no
    // schema can bound in length) could exceed the API server's CEL cost budget and get the
    // whole CRD refused; the controller checks those keys (InvalidSpec).
    let reserved = reserved_headers::describe();
    add_rules(
        &mut crd,
        &["spec", "headersFrom"],
        vec![rule(
            &format!("self.all(f, {})", reserved_headers::cel_condition("f.name")),
            &format!("spec.headersFrom cannot set reserved headers ({reserved})"),
        )],
    );
    crd
}

fn subscription() -> CustomResourceDefinition {
    let mut crd = WebhookSubscription::crd();
    add_rules(
        &mut crd,
        &["spec"],
        vec![rule(
            "has(self.endpointRef) != has(self.endpointSelector)",
            "set either spec.endpointRef or spec.endpointSelector, exactly one",
        )],
    );
    crd
}

fn event() -> CustomResourceDefinition {
    let mut crd = WebhookEvent::crd();
    add_rules(
        &mut crd,
        &["spec"],
        vec![rule(
            "self == oldSelf",
            "a WebhookEvent's spec is immutable",
        )],
    );
    crd
}

fn replay() -> CustomResourceDefinition {
    let mut crd = WebhookReplay::crd();
    add_rules(
        &mut crd,
        &["spec"],
        vec![
            rule(
                "!has(self.to) || timestamp(self.from) < timestamp(self.to)",
                "spec.to must be after spec.from",
            ),
            rule("self == oldSelf", "a WebhookReplay's spec is immutable"),
        ],
    );
    crd
}

/// The CRDs as YAML documents, as `crdgen` writes them.
pub fn render_yaml() -> Result<Vec<(&'static str, String)>, serde_norway::Error> {
    all()
        .into_iter()
        .map(|(file, crd)| {
            serde_norway::to_string(&crd).map(|yaml| {
                (
                    file,
                    format!("# Generated by `webhook-operator crdgen` from src/api. Do not edit.\n{yaml}"),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails when `crds/` was not regenerated after a change to the types: run
    /// `cargo run -- crdgen` and commit the result.
    #[test]
    fn committed_crds_are_up_to_date() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        for (file, yaml) in render_yaml().unwrap() {
            let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            assert!(
                committed == yaml,
                "crds/{file} is stale: run `cargo run -- crdgen` and commit crds/"
            );
        }
    }

    #[test]
    fn conditions_are_keyed_by_type_and_cel_rules_are_present() {
        let yaml: String = render_yaml().unwrap().into_iter().map(|(_, y)| y).collect();
        assert_eq!(yaml.matches("x-kubernetes-list-type: map").count(), 4);
        assert!(yaml.contains("has(self.endpointRef) != has(self.endpointSelector)"));
        assert!(yaml.contains("duration(self.baseDelay) <= duration(self.maxDelay)"));
    }

    #[test]
    fn defaults_are_in_the_schema() {
        let json = serde_json::to_value(endpoint()).unwrap();
        let spec = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["properties"]["timeoutSeconds"]["default"], 30);
        assert_eq!(spec["properties"]["timeoutSeconds"]["maximum"], 300.0);
    }
}
