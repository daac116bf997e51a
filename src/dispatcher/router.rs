//! Routing: which endpoints of a namespace receive an event. Pure.
use std::collections::{BTreeSet, HashSet};

use kube::ResourceExt;

use crate::api::event_types::pattern_matches;
use crate::api::{selector, WebhookEndpoint, WebhookSubscription};

/// Whether an endpoint of `namespace` can receive events: in the namespace, not being deleted.
pub fn routable(endpoint: &WebhookEndpoint, namespace: &str) -> bool {
    endpoint.metadata.namespace.as_deref() == Some(namespace)
        && endpoint.metadata.deletion_timestamp.is_none()
}

/// The endpoint names an event of `event_type` in `namespace` goes to: every endpoint reached by
/// a non-suspended subscription of the namespace whose `eventTypes` match, once each, sorted.
/// Suspended endpoints are included: their deliveries are held, not dropped.
pub fn route<'a>(
    namespace: &str,
    event_type: &str,
    subscriptions: impl IntoIterator<Item = &'a WebhookSubscription>,
    endpoints: &[&'a WebhookEndpoint],
) -> Vec<String> {
    let in_namespace: Vec<&WebhookEndpoint> = endpoints
        .iter()
        .copied()
        .filter(|e| routable(e, namespace))
        .collect();
    // By name in O(1): subscriptions by `endpointRef` never scan all endpoints.
    let by_name: HashSet<&str> = in_namespace
        .iter()
        .filter_map(|e| e.metadata.name.as_deref())
        .collect();
    route_with(
        namespace,
        event_type,
        subscriptions,
        |name| by_name.contains(name),
        |each| in_namespace.iter().for_each(|e| each(e)),
    )
}

/// [`route`] over any endpoint source: `exists(name)` says whether a routable endpoint has that
/// name (for `endpointRef`); `each_endpoint` calls back with every routable endpoint of the
/// namespace (for selectors; called only when a matching subscription has a selector).
pub fn route_with<'a>(
    namespace: &str,
    event_type: &str,
    subscriptions: impl IntoIterator<Item = &'a WebhookSubscription>,
    exists: impl Fn(&str) -> bool,
    mut each_endpoint: impl FnMut(&mut dyn FnMut(&WebhookEndpoint)),
) -> Vec<String> {
    let mut names = BTreeSet::new();
    for subscription in subscriptions {
        let spec = &subscription.spec;
        if subscription.metadata.namespace.as_deref() != Some(namespace)
            || spec.suspend
            || !spec
                .event_types
                .iter()
                .any(|p| pattern_matches(p, event_type))
        {
            continue;
        }
        match (&spec.endpoint_ref, &spec.endpoint_selector) {
            (Some(reference), None)
                if !names.contains(reference.name.as_str()) && exists(&reference.name) =>
            {
                names.insert(reference.name.clone());
            }
            (None, Some(selector)) => each_endpoint(&mut |endpoint| {
                if selector::matches(selector, endpoint.labels()) {
                    names.insert(endpoint.name_any());
                }
            }),
            _ => {}
        }
    }
    names.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn endpoint(ns: &str, name: &str, team: &str) -> WebhookEndpoint {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": {"team": team}},
            "spec": {"url": "https://x.example.com/"}
        }))
        .unwrap()
    }

    fn subscription(ns: &str, spec: serde_json::Value) -> WebhookSubscription {
        serde_json::from_value(json!({"metadata": {"name": "s", "namespace": ns}, "spec": spec}))
            .unwrap()
    }

    #[test]
    fn routes_by_type_pattern_and_deduplicates_endpoints() {
        let crm = endpoint("a", "crm", "growth");
        let mail = endpoint("a", "mail", "growth");
        let other_ns = endpoint("b", "crm", "growth");
        let endpoints = [&crm, &mail, &other_ns];
        let subs = [
            subscription(
                "a",
                json!({"endpointRef": {"name": "crm"}, "eventTypes": ["user.created"]}),
            ),
            subscription(
                "a",
                json!({"endpointSelector": {"matchLabels": {"team": "growth"}}, "eventTypes": ["user.*"]}),
            ),
            subscription(
                "a",
                json!({"endpointRef": {"name": "mail"}, "eventTypes": ["pitch.*"]}),
            ),
        ];
        assert_eq!(
            route("a", "user.created", &subs, &endpoints),
            ["crm", "mail"]
        );
        assert_eq!(route("a", "pitch.created", &subs, &endpoints), ["mail"]);
        assert!(route("a", "nda.signed", &subs, &endpoints).is_empty());
        // Never across namespaces.
        assert!(route("b", "user.created", &subs, &endpoints).is_empty());
    }

    #[test]
    fn endpoint_refs_never_list_endpoints() {
        let subs = [subscription(
            "a",
            json!({"endpointRef": {"name": "crm"}, "eventTypes": ["user.*"]}),
        )];
        let mut listed = false;
        let names = route_with(
            "a",
            "user.created",
            &subs,
            |name| name == "crm",
            |_| listed = true,
        );
        assert_eq!(names, ["crm"]);
        assert!(!listed, "an endpointRef is looked up by name");
        // A reference to an endpoint that does not exist (or is being deleted) routes nowhere.
        assert!(route_with("a", "user.created", &subs, |_| false, |_| {}).is_empty());
    }

    #[test]
    fn endpoints_being_deleted_or_elsewhere_are_not_routable() {
        let mut crm = endpoint("a", "crm", "x");
        assert!(routable(&crm, "a"));
        assert!(!routable(&crm, "b"));
        crm.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert!(!routable(&crm, "a"));
    }

    #[test]
    fn suspended_subscriptions_are_skipped() {
        let crm = endpoint("a", "crm", "x");
        let subs = [subscription(
            "a",
            json!({"endpointRef": {"name": "crm"}, "eventTypes": ["*"], "suspend": true}),
        )];
        assert!(route("a", "user.created", &subs, &[&crm]).is_empty());
    }
}
