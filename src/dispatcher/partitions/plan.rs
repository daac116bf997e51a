//! The pure half of partition ownership: from the Leases as listed, what this replica renews,
//! takes, drains and gives back, and which dead replicas' in-flight work must be recovered.
//!
//! Every replica renews a *member* Lease; the live members split the partitions evenly: each
//! aims at `ceil(partitions / members)`. A replica above its share first *drains* the excess (stops
//! claiming from it for one round, so attempts in flight there can finish) and then releases it;
//! a replica below its share takes free or expired partitions, preferring them in an order
//! unique to it (rendezvous hashing), so replicas starting together do not all race for the same
//! ones.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::LeaseSpec;

use crate::runtime::lease::{decide_by_age, Decision};
use crate::store::partition_hash;

/// Leases of one dispatcher group, by what they stand for.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Partition number → its Lease's spec (absent when the Lease does not exist yet).
    pub partitions: BTreeMap<u32, LeaseSpec>,
    /// Member Leases' specs.
    pub members: Vec<LeaseSpec>,
    /// How long each Lease's record has gone unchanged while this replica watched it. Expiry is
    /// judged by these, on this replica's own clock, as client-go does: never by comparing our
    /// clock with the `renewTime` another replica's clock wrote. `None` (the tests' wall clock):
    /// ages are `now - renewTime`.
    pub ages: Option<Ages>,
}

/// Ages of the observed Leases' records, measured locally (`RecordClock`).
#[derive(Clone, Debug, Default)]
pub struct Ages {
    pub partitions: BTreeMap<u32, Duration>,
    /// Aligned with [`Observed::members`].
    pub members: Vec<Option<Duration>>,
}

impl Observed {
    fn partition_age(&self, partition: u32, now: Timestamp) -> Option<Duration> {
        match &self.ages {
            Some(ages) => ages.partitions.get(&partition).copied(),
            None => wall_age(self.partitions.get(&partition), now),
        }
    }

    fn member_age(&self, index: usize, now: Timestamp) -> Option<Duration> {
        match &self.ages {
            Some(ages) => ages.members.get(index).copied().flatten(),
            None => wall_age(self.members.get(index), now),
        }
    }
}

/// `now - renewTime` (zero when renewTime is ahead).
fn wall_age(spec: Option<&LeaseSpec>, now: Timestamp) -> Option<Duration> {
    let renewed = spec?.renew_time.as_ref()?;
    Some(Duration::try_from(now.duration_since(renewed.0)).unwrap_or(Duration::ZERO))
}

/// What to do this round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Live replicas (holders of unexpired member Leases, and this one), sorted.
    pub members: Vec<String>,
    /// Partitions each replica aims at.
    pub share: u32,
    /// Held partitions to keep and claim from (renewed when `renew_due`).
    pub keep: BTreeSet<u32>,
    /// Kept partitions whose Lease is due for renewal this round.
    pub renew_due: BTreeSet<u32>,
    /// Free or expired partitions to take.
    pub acquire: BTreeSet<u32>,
    /// Held partitions above the share: renewed, but not claimed from; released next round.
    pub drain: BTreeSet<u32>,
    /// Partitions drained last round and still above the share: give them back now.
    pub release: BTreeSet<u32>,
    /// Other replicas whose member Lease expired: their in-flight deliveries are made due again.
    pub dead_members: BTreeSet<String>,
}

/// Decides one round for replica `me`, given the partitions it drained last round.
pub fn plan(
    count: u32,
    me: &str,
    now: Timestamp,
    timings: Timings,
    observed: &Observed,
    drained: &BTreeSet<u32>,
) -> Plan {
    let mut live: BTreeSet<String> = BTreeSet::from([me.to_string()]);
    let mut dead = BTreeSet::new();
    for (index, spec) in observed.members.iter().enumerate() {
        let Some(holder) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else {
            continue;
        };
        if holder == me {
            continue;
        }
        // Decided from a third party's view: Follow = valid, Acquire = expired.
        let age = observed.member_age(index, now);
        match decide_by_age(Some(spec), "", age, timings.duration) {
            Decision::Follow { .. } => {
                live.insert(holder.to_string());
            }
            _ => {
                dead.insert(holder.to_string());
            }
        }
    }
    // A replica both dead (an old Lease) and live (a current one) is live.
    dead.retain(|d| !live.contains(d));
    let members = u32::try_from(live.len()).unwrap_or(u32::MAX).max(1);
    let share = count.div_ceil(members);

    let mut held = Vec::new();
    let mut free = Vec::new();
    for partition in 0..count {
        match decide_by_age(
            observed.partitions.get(&partition),
            me,
            observed.partition_age(partition, now),
            timings.duration,
        ) {
            Decision::Renew => held.push(partition),
            Decision::Acquire => free.push(partition),
            Decision::Follow { .. } => {}
        }
    }
    let by_preference = |a: &u32, b: &u32| rank(me, *b).cmp(&rank(me, *a)).then(a.cmp(b));
    held.sort_by(by_preference);
    free.sort_by(by_preference);

    let share_len = usize::try_from(share).unwrap_or(usize::MAX);
    let (kept, excess) = held.split_at(held.len().min(share_len));
    let mut result = Plan {
        members: live.into_iter().collect(),
        share,
        dead_members: dead,
        ..Plan::default()
    };
    for &partition in kept {
        result.keep.insert(partition);
        if renewal_due(observed.partitions.get(&partition), now, timings) {
            result.renew_due.insert(partition);
        }
    }
    for &partition in excess {
        if drained.contains(&partition) {
            result.release.insert(partition);
        } else {
            result.drain.insert(partition);
        }
    }
    let room = share_len.saturating_sub(kept.len());
    result.acquire = free.into_iter().take(room).collect();
    result
}

/// Lease timings of the partition and member Leases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// How long a Lease is valid without renewal.
    pub duration: Duration,
    /// A held Lease is renewed once this much of it has passed.
    pub renew_after: Duration,
    /// Ownership is given up locally this long before the Lease expires (clock skew, latency).
    pub margin: Duration,
}

impl Timings {
    pub fn from_duration(duration: Duration) -> Self {
        Self {
            duration,
            renew_after: duration / 3,
            margin: (duration / 5).min(Duration::from_secs(3)),
        }
    }
}

/// Whether a held Lease should be renewed now.
pub fn renewal_due(spec: Option<&LeaseSpec>, now: Timestamp, timings: Timings) -> bool {
    let Some(renewed) = spec.and_then(|s| s.renew_time.as_ref()) else {
        return true;
    };
    Duration::try_from(now.duration_since(renewed.0)).map_or(true, |age| age >= timings.renew_after)
}

/// How long a Lease renewed at `renewed` may still be relied on, margin deducted.
pub fn remaining(renewed: Timestamp, now: Timestamp, timings: Timings) -> Duration {
    let age = Duration::try_from(now.duration_since(renewed)).unwrap_or(Duration::ZERO);
    timings
        .duration
        .saturating_sub(timings.margin)
        .saturating_sub(age)
}

/// Rendezvous rank of a partition for a replica.
fn rank(me: &str, partition: u32) -> u32 {
    partition_hash(me, &partition.to_string())
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
