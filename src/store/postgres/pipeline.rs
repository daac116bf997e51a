//! Which enqueues of one group commit may go to PostgreSQL together. Statements issued together
//! on one connection are pipelined (sent without waiting for each answer), so a group commit of
//! 64 events costs a few round trips instead of four per event, one after the other. That
//! sequence bounded ingest to about 1,000 events/s with any number of replicas
//! (docs/benchmarks.md, issue 19).
//!
//! Two enqueues must still run in batch order when they share a key: an identity (the later one
//! may be a duplicate of the earlier, which it must see) or an ordering lane (the later delivery
//! must queue behind the earlier one). [`rounds`] orders them; everything else runs together.
use std::collections::HashMap;

use crate::store::{EnqueueRequest, EventSource, NewEvent};

/// The identities an event is deduplicated on: its id, its resource's UID, its idempotency key.
pub fn identities(event: &NewEvent) -> Vec<String> {
    let mut keys = vec![format!("id:{}", event.event_id)];
    if let EventSource::Resource { uid, .. } = &event.source {
        keys.push(format!("uid:{uid}"));
    }
    if let Some(key) = &event.idempotency_key {
        keys.push(format!("key:{}/{key}", event.namespace));
    }
    keys
}

/// The keys on which `request` must run after an earlier enqueue of the same transaction: its
/// identities and the lanes of its ordered deliveries.
pub fn conflict_keys(request: &EnqueueRequest) -> Vec<String> {
    let event = &request.event;
    let mut keys = identities(event);
    for (endpoint, lane) in &request.lanes {
        if request.endpoints.contains(endpoint) {
            keys.push(format!("lane:{}/{endpoint}/{lane}", event.namespace));
        }
    }
    keys
}

/// The requests (by index) of each round, in order: a request runs one round after the last
/// earlier request it shares a key with (the first round if none), so requests that share a key
/// run in batch order and the others together. Pure.
pub fn rounds(keys: &[Vec<String>]) -> Vec<Vec<usize>> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (index, request_keys) in keys.iter().enumerate() {
        let round = request_keys
            .iter()
            .filter_map(|key| last.get(key.as_str()))
            .map(|round| round + 1)
            .max()
            .unwrap_or(0);
        for key in request_keys {
            last.insert(key, round);
        }
        if rounds.len() <= round {
            rounds.resize_with(round + 1, Vec::new);
        }
        rounds[round].push(index);
    }
    rounds
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(sets: &[&[&str]]) -> Vec<Vec<String>> {
        sets.iter()
            .map(|set| set.iter().map(|k| k.to_string()).collect())
            .collect()
    }

    #[test]
    fn independent_requests_share_one_round_and_repeats_follow_in_order() {
        let batch = keys(&[
            &["id:a"],
            &["id:b"],
            &["id:a"],
            &["id:c", "lane:x"],
            &["id:a", "lane:x"],
        ]);
        assert_eq!(rounds(&batch), vec![vec![0, 1, 3], vec![2], vec![4]]);
    }

    proptest! {
        /// Every request runs once; two that share a key run in batch order, in different
        /// rounds; a request is never later than it must be.
        #[test]
        fn rounds_keep_shared_keys_in_order(
            batch in proptest::collection::vec(proptest::collection::vec(0u8..8, 1..4), 0..40),
        ) {
            let batch: Vec<Vec<String>> = batch
                .iter()
                .map(|set| set.iter().map(|k| format!("k{k}")).collect())
                .collect();
            let planned = rounds(&batch);
            let mut round_of = vec![usize::MAX; batch.len()];
            for (round, indexes) in planned.iter().enumerate() {
                prop_assert!(!indexes.is_empty());
                for &index in indexes {
                    prop_assert_eq!(round_of[index], usize::MAX);
                    round_of[index] = round;
                }
            }
            prop_assert!(round_of.iter().all(|r| *r != usize::MAX));
            for later in 0..batch.len() {
                let mut needed = 0;
                for earlier in 0..later {
                    if batch[earlier].iter().any(|k| batch[later].contains(k)) {
                        prop_assert!(round_of[earlier] < round_of[later]);
                        needed = needed.max(round_of[earlier] + 1);
                    }
                }
                prop_assert_eq!(round_of[later], needed);
            }
        }
    }
}
