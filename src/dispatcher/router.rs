//! Routing: which endpoints of a namespace receive an event. Pure.
use std::collections::{BTreeSet, HashMap};

use kube::ResourceExt;

use crate::api::event_types::pattern_matches;
use crate::api::{selector, WebhookEndpoint, WebhookSubscription};

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
        .filter(|e| e.namespace().as_deref() == Some(namespace))
        .filter(|e| e.metadata.deletion_timestamp.is_none())
        .collect();
    // By name in O(1): subscriptions by `endpointRef` never scan all endpoints.
    let by_name: HashMap<&str, &WebhookEndpoint> = in_namespace
        .iter()
        .filter_map(|e| e.metadata.name.as_deref().map(|n| (n, *e)))
        .collect();
    let mut names = BTreeSet::new();
    for subscription in subscriptions {
        let spec = &subscription.spec;
        if subscription.namespace().as_deref() != Some(namespace)
            || spec.suspend
            || !spec
                .event_types
                .iter()
                .any(|p| pattern_matches(p, event_type))
        {
            continue;
        }
        match (&spec.endpoint_ref, &spec.endpoint_selector) {
            (Some(reference), None) if by_name.contains_key(reference.name.as_str()) => {
                names.insert(reference.name.clone());
            }
            (None, Some(selector)) => {
                for endpoint in &in_namespace {
                    if selector::matches(selector, endpoint.labels()) {
                        names.insert(endpoint.name_any());
                    }
                }
            }
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
    fn suspended_subscriptions_are_skipped() {
        let crm = endpoint("a", "crm", "x");
        let subs = [subscription(
            "a",
            json!({"endpointRef": {"name": "crm"}, "eventTypes": ["*"], "suspend": true}),
        )];
        assert!(route("a", "user.created", &subs, &[&crm]).is_empty());
    }
}
