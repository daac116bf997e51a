//! Subscriptions indexed by the event types they can match, per namespace: routing an event reads
//! only its candidates instead of every subscription (10,000 subscriptions: a scan per event was
//! most of the dispatcher's CPU). A prefilter only: the router still checks each candidate.
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::api::WebhookSubscription;

/// The index of one snapshot of the subscriptions.
#[derive(Default)]
pub struct SubscriptionIndex {
    namespaces: HashMap<String, Patterns>,
}

#[derive(Default)]
struct Patterns {
    /// `user.created` → subscriptions listing it.
    exact: HashMap<String, Vec<Arc<WebhookSubscription>>>,
    /// `user.` (from `user.*`), `` (from `*`) → subscriptions listing the pattern.
    prefix: HashMap<String, Vec<Arc<WebhookSubscription>>>,
}

impl SubscriptionIndex {
    pub fn build(subscriptions: impl IntoIterator<Item = Arc<WebhookSubscription>>) -> Self {
        let mut index = Self::default();
        for subscription in subscriptions {
            let Some(namespace) = subscription.metadata.namespace.clone() else {
                continue;
            };
            let patterns = index.namespaces.entry(namespace).or_default();
            for pattern in &subscription.spec.event_types {
                let (map, key) = match pattern.strip_suffix('*') {
                    Some(prefix) => (&mut patterns.prefix, prefix),
                    None => (&mut patterns.exact, pattern.as_str()),
                };
                map.entry(key.to_string())
                    .or_default()
                    .push(subscription.clone());
            }
        }
        index
    }

    /// The subscriptions of `namespace` with a pattern that matches `event_type` (one entry per
    /// matching pattern, so a subscription may appear more than once).
    pub fn candidates(&self, namespace: &str, event_type: &str) -> Vec<Arc<WebhookSubscription>> {
        let Some(patterns) = self.namespaces.get(namespace) else {
            return Vec::new();
        };
        let mut found: Vec<Arc<WebhookSubscription>> =
            patterns.exact.get(event_type).cloned().unwrap_or_default();
        // A prefix pattern matches event types strictly longer than its prefix.
        for (end, _) in event_type.char_indices() {
            if let Some(subscriptions) = patterns.prefix.get(&event_type[..end]) {
                found.extend(subscriptions.iter().cloned());
            }
        }
        found
    }
}

/// The index of the latest snapshot, rebuilt on first use after the subscriptions changed.
#[derive(Clone, Default)]
pub struct SharedIndex {
    /// Bumped by the subscription watch after each change reached the reflector's store.
    changes: Arc<std::sync::atomic::AtomicU64>,
    built: Arc<RwLock<Option<Built>>>,
}

/// An index and the change count it was built at.
type Built = (u64, Arc<SubscriptionIndex>);

impl SharedIndex {
    /// Records that the subscriptions changed.
    pub fn changed(&self) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// The index as of the latest change, built from `snapshot` when stale.
    pub fn current(
        &self,
        snapshot: impl FnOnce() -> Vec<Arc<WebhookSubscription>>,
    ) -> Arc<SubscriptionIndex> {
        let version = self.changes.load(std::sync::atomic::Ordering::Acquire);
        if let Ok(built) = self.built.read() {
            if let Some((at, index)) = built.as_ref() {
                if *at == version {
                    return index.clone();
                }
            }
        }
        let index = Arc::new(SubscriptionIndex::build(snapshot()));
        if let Ok(mut built) = self.built.write() {
            *built = Some((version, index.clone()));
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::event_types::pattern_matches;
    use proptest::prelude::*;
    use serde_json::json;

    fn subscription(ns: &str, name: &str, types: &[&str]) -> Arc<WebhookSubscription> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"endpointRef": {"name": "e"}, "eventTypes": types}
            }))
            .unwrap(),
        )
    }

    fn names(found: Vec<Arc<WebhookSubscription>>) -> Vec<String> {
        let mut names: Vec<String> = found
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    #[test]
    fn candidates_are_the_matching_subscriptions_of_the_namespace() {
        let index = SubscriptionIndex::build([
            subscription("a", "exact", &["user.created"]),
            subscription("a", "prefix", &["user.*"]),
            subscription("a", "all", &["*"]),
            subscription("a", "other", &["pitch.created", "userx.*"]),
            subscription("b", "elsewhere", &["*"]),
        ]);
        assert_eq!(
            names(index.candidates("a", "user.created")),
            ["all", "exact", "prefix"]
        );
        assert_eq!(
            names(index.candidates("a", "user.deleted")),
            ["all", "prefix"]
        );
        assert_eq!(
            names(index.candidates("a", "pitch.created")),
            ["all", "other"]
        );
        assert_eq!(
            names(index.candidates("c", "user.created")),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_shared_index_rebuilds_only_after_a_change() {
        let shared = SharedIndex::default();
        let first = shared.current(|| vec![subscription("a", "s", &["*"])]);
        let again = shared.current(|| unreachable!("no change, no rebuild"));
        assert!(Arc::ptr_eq(&first, &again));
        shared.changed();
        let rebuilt = shared.current(Vec::new);
        assert!(rebuilt.candidates("a", "x.y").is_empty());
    }

    proptest! {
        /// The index finds exactly the subscriptions a scan with `pattern_matches` finds.
        #[test]
        fn candidates_equal_a_full_scan(
            patterns in proptest::collection::vec(
                proptest::sample::select(vec!["*", "user.*", "user.created", "u*", "pitch.*", "user.created.*", "pitch.created"]),
                0..12,
            ),
            event_type in proptest::sample::select(vec!["user.created", "user.deleted", "pitch.created", "user.created.v2", "us"]),
        ) {
            let subscriptions: Vec<_> = patterns
                .iter()
                .enumerate()
                .map(|(i, p)| subscription("ns", &format!("s{i}"), &[p]))
                .collect();
            let index = SubscriptionIndex::build(subscriptions.clone());
            let scanned: Vec<String> = names(
                subscriptions
                    .into_iter()
                    .filter(|s| s.spec.event_types.iter().any(|p| pattern_matches(p, event_type)))
                    .collect(),
            );
            prop_assert_eq!(names(index.candidates("ns", event_type)), scanned);
        }
    }
}
