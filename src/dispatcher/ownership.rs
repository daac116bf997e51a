//! Which endpoints this replica is responsible for: all of them with the embedded store (one
//! replica), or those in the partitions it holds a Lease for with a shared store. Claims,
//! endpoint status, test deliveries and TTL deletion consult it, so each endpoint's rate limit,
//! circuit breaker and status have exactly one writer.
use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Instant;

use tokio::sync::Notify;

use crate::store::{partition_hash, ClaimScope, EndpointRef};

/// This replica's share of the work.
pub enum Ownership {
    /// Everything (a single replica).
    All,
    /// The partitions held, each until a local deadline (renewals move it on).
    Partitions(Partitioned),
}

pub struct Partitioned {
    count: u32,
    valid_until: RwLock<BTreeMap<u32, Instant>>,
    /// Notified when partitions are gained (work that waited for an owner can start).
    pub gained: Notify,
}

impl Ownership {
    pub fn partitioned(count: u32) -> Self {
        Self::Partitions(Partitioned {
            count: count.max(1),
            valid_until: RwLock::default(),
            gained: Notify::new(),
        })
    }

    /// What `claim_due` may take now.
    pub fn claim_scope(&self) -> ClaimScope {
        match self {
            Self::All => ClaimScope::All,
            Self::Partitions(p) => ClaimScope::Partitions {
                count: p.count,
                owned: p.owned(Instant::now()),
            },
        }
    }

    /// Whether this replica is responsible for the endpoint (or any object keyed by
    /// namespace/name, such as a WebhookEvent for its TTL) now.
    pub fn owns(&self, namespace: &str, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Partitions(p) => {
                let partition = partition_hash(namespace, name) % p.count;
                p.valid_until
                    .read()
                    .ok()
                    .and_then(|map| map.get(&partition).copied())
                    .is_some_and(|until| until > Instant::now())
            }
        }
    }

    pub fn owns_endpoint(&self, endpoint: &EndpointRef) -> bool {
        self.owns(&endpoint.namespace, &endpoint.name)
    }
}

impl Partitioned {
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Partitions held at `now`.
    pub fn owned(&self, now: Instant) -> Vec<u32> {
        self.valid_until
            .read()
            .map(|map| {
                map.iter()
                    .filter(|(_, until)| **until > now)
                    .map(|(k, _)| *k)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Replaces the held set; returns whether a partition was gained.
    pub fn set(&self, held: BTreeMap<u32, Instant>) -> bool {
        let now = Instant::now();
        let Ok(mut map) = self.valid_until.write() else {
            return false;
        };
        let gained = held
            .keys()
            .any(|k| map.get(k).is_none_or(|until| *until <= now));
        *map = held;
        gained
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn all_owns_everything() {
        assert!(Ownership::All.owns("ns", "ep"));
        assert_eq!(Ownership::All.claim_scope(), ClaimScope::All);
    }

    #[test]
    fn partitioned_owns_only_held_unexpired_partitions() {
        let ownership = Ownership::partitioned(4);
        let Ownership::Partitions(p) = &ownership else {
            unreachable!()
        };
        let k = partition_hash("ns", "ep") % 4;
        assert!(!ownership.owns("ns", "ep"));
        let later = Instant::now() + Duration::from_secs(60);
        assert!(p.set(BTreeMap::from([(k, later)])));
        assert!(ownership.owns("ns", "ep"));
        assert_eq!(
            ownership.claim_scope(),
            ClaimScope::Partitions {
                count: 4,
                owned: vec![k]
            }
        );
        // Renewing is not gaining.
        assert!(!p.set(BTreeMap::from([(k, later)])));
        // An expired deadline is not ownership.
        p.set(BTreeMap::from([(k, Instant::now())]));
        assert!(!ownership.owns("ns", "ep"));
        assert_eq!(p.owned(Instant::now()), Vec::<u32>::new());
    }
}
