//! Discovery documents: what `kubectl api-resources` and the aggregator read to learn the group's
//! resources, verbs and short names. No category: `kubectl get webhooks` (the CRDs' category)
//! must not page through the whole history.
use serde_json::{json, Value};

use super::{Resource, API_VERSION, GROUP, VERSION};

/// `GET /apis/query.webhooks.pitchey.io/v1alpha1`: an APIResourceList.
pub fn resource_list() -> Value {
    let resources: Vec<Value> = Resource::ALL
        .iter()
        .map(|r| {
            let verbs: &[&str] = if r.watchable() {
                &["get", "list", "watch"]
            } else {
                &["get", "list"]
            };
            json!({
                "name": r.plural(),
                "singularName": r.singular(),
                "namespaced": true,
                "kind": r.kind(),
                "verbs": verbs,
                "shortNames": r.short_names(),
            })
        })
        .collect();
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": API_VERSION,
        "resources": resources,
    })
}

fn group() -> Value {
    let version = json!({ "groupVersion": API_VERSION, "version": VERSION });
    json!({
        "name": GROUP,
        "versions": [version.clone()],
        "preferredVersion": version,
    })
}

/// `GET /apis/query.webhooks.pitchey.io`: an APIGroup.
pub fn api_group() -> Value {
    let mut g = group();
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    g
}

/// `GET /apis`: an APIGroupList of the one group.
pub fn api_group_list() -> Value {
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": [group()] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_deliveries_are_watchable() {
        let list = resource_list();
        let resources = list["resources"].as_array().unwrap();
        assert_eq!(resources.len(), 3);
        for r in resources {
            let watch = r["verbs"].as_array().unwrap().iter().any(|v| v == "watch");
            assert_eq!(watch, r["name"] == "webhookdeliveries");
        }
        assert_eq!(api_group()["preferredVersion"]["version"], "v1alpha1");
    }
}
