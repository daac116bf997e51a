//! Which endpoint statuses a round writes, within the round's write budget.
//!
//! Every delivery dirties its endpoint, so at 10,000 busy endpoints an unbounded round is up to
//! 10,000 server-side applies every `--status-interval-seconds`: the API server and etcd then
//! spend more CPU on status than the dispatcher spends on deliveries. Rounds are therefore
//! bounded (`--status-writes-per-second` × the interval). State changes (circuit, rate cut, dead
//! letters, test results, suspension, resume) go first; endpoints whose counters alone changed
//! follow in the order they became dirty, so every endpoint is written in turn and none starves.
//! Nothing is dropped: what a round leaves stays queued for the next.
use std::collections::{HashMap, VecDeque};

use crate::store::EndpointRef;

/// What changed about an endpoint since its status was last written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Delivery counters, rates and times only.
    Counters,
    /// Something `kubectl get` should show at once: circuit, rate cut, dead letters, a test
    /// result, suspension or an ordering resume.
    State,
}

/// Endpoints waiting for a status write, each once, state changes ahead of counters.
#[derive(Debug, Default)]
pub struct StatusQueue {
    state: VecDeque<(EndpointRef, u64)>,
    counters: VecDeque<(EndpointRef, u64)>,
    /// The authoritative set, with the ticket of each endpoint's live deque entry: an entry
    /// whose ticket differs (the endpoint moved ahead, or was written and queued again) is
    /// stale and skipped.
    queued: HashMap<EndpointRef, (Change, u64)>,
    tickets: u64,
}

impl StatusQueue {
    /// Queues an endpoint; one already queued keeps its place, moving ahead if it now has a
    /// state change.
    pub fn push(&mut self, endpoint: EndpointRef, change: Change) {
        if self
            .queued
            .get(&endpoint)
            .is_some_and(|(queued, _)| *queued >= change)
        {
            return;
        }
        self.tickets += 1;
        let ticket = self.tickets;
        self.queued.insert(endpoint.clone(), (change, ticket));
        match change {
            Change::State => self.state.push_back((endpoint, ticket)),
            Change::Counters => self.counters.push_back((endpoint, ticket)),
        }
    }

    /// The next endpoint to write and what changed about it.
    pub fn pop(&mut self) -> Option<(EndpointRef, Change)> {
        for (deque, change) in [
            (&mut self.state, Change::State),
            (&mut self.counters, Change::Counters),
        ] {
            while let Some((endpoint, ticket)) = deque.pop_front() {
                if self.queued.get(&endpoint) == Some(&(change, ticket)) {
                    self.queued.remove(&endpoint);
                    return Some((endpoint, change));
                }
            }
        }
        None
    }

    /// How many endpoints wait.
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }
}

/// Writes one round may make: `per_second` × the interval, at least one.
pub fn round_budget(per_second: u32, interval_seconds: u64) -> usize {
    let writes = u64::from(per_second).saturating_mul(interval_seconds.max(1));
    usize::try_from(writes).unwrap_or(usize::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn endpoint(n: u8) -> EndpointRef {
        EndpointRef {
            namespace: "ns".into(),
            name: format!("e{n}"),
        }
    }

    fn drain(queue: &mut StatusQueue) -> Vec<(EndpointRef, Change)> {
        std::iter::from_fn(|| queue.pop()).collect()
    }

    #[test]
    fn state_changes_go_first_then_counters_in_the_order_they_became_dirty() {
        let mut queue = StatusQueue::default();
        queue.push(endpoint(1), Change::Counters);
        queue.push(endpoint(2), Change::Counters);
        queue.push(endpoint(3), Change::State);
        queue.push(endpoint(1), Change::Counters);
        assert_eq!(queue.len(), 3);
        assert_eq!(
            drain(&mut queue),
            [
                (endpoint(3), Change::State),
                (endpoint(1), Change::Counters),
                (endpoint(2), Change::Counters),
            ]
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn a_state_change_moves_a_queued_endpoint_ahead_and_a_later_counter_change_does_not_demote_it()
    {
        let mut queue = StatusQueue::default();
        queue.push(endpoint(1), Change::Counters);
        queue.push(endpoint(2), Change::Counters);
        queue.push(endpoint(2), Change::State);
        queue.push(endpoint(2), Change::Counters);
        assert_eq!(
            drain(&mut queue),
            [
                (endpoint(2), Change::State),
                (endpoint(1), Change::Counters)
            ]
        );
    }

    #[test]
    fn budgets_scale_with_the_interval_and_never_reach_zero() {
        assert_eq!(round_budget(50, 3), 150);
        assert_eq!(round_budget(50, 0), 50);
        assert_eq!(round_budget(0, 3), 1);
    }

    proptest! {
        /// Whatever the pushes and partial rounds, every endpoint pushed is popped exactly once
        /// per time it was queued, with the strongest change it had, state changes before
        /// counters within each round, and counters in first-dirtied order.
        #[test]
        fn nothing_is_lost_or_written_twice(
            rounds in proptest::collection::vec(
                (proptest::collection::vec((0u8..12, any::<bool>()), 0..20), 0usize..8),
                1..12,
            )
        ) {
            let mut queue = StatusQueue::default();
            // The model: endpoint → (change, when it was first queued).
            let mut model: HashMap<EndpointRef, (Change, usize)> = HashMap::new();
            let mut clock = 0usize;
            for (pushes, budget) in rounds {
                for (n, state) in pushes {
                    let change = if state { Change::State } else { Change::Counters };
                    clock += 1;
                    let entry = model.entry(endpoint(n)).or_insert((change, clock));
                    entry.0 = entry.0.max(change);
                    queue.push(endpoint(n), change);
                }
                prop_assert_eq!(queue.len(), model.len());
                let mut seen = HashSet::new();
                let mut last: Option<Change> = None;
                for _ in 0..budget {
                    let Some((popped, change)) = queue.pop() else { break };
                    prop_assert!(seen.insert(popped.clone()), "written twice in one round");
                    let Some((expected, _)) = model.remove(&popped) else {
                        return Err(TestCaseError::fail("popped an endpoint not queued"));
                    };
                    prop_assert_eq!(change, expected);
                    if let Some(before) = last {
                        prop_assert!(before >= change, "counters before a state change");
                    }
                    last = Some(change);
                }
            }
            let rest = drain(&mut queue);
            prop_assert_eq!(rest.len(), model.len());
            let counters: Vec<usize> = rest
                .iter()
                .filter(|(_, c)| *c == Change::Counters)
                .map(|(e, _)| model[e].1)
                .collect();
            // Endpoints that only ever had counter changes leave in first-dirtied order.
            let mut sorted = counters.clone();
            sorted.sort_unstable();
            prop_assert_eq!(counters, sorted);
        }
    }
}
