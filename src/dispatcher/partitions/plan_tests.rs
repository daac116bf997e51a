use super::*;
use crate::runtime::lease::fixtures::{held_by as lease, t};
use proptest::prelude::*;

const TIMINGS: Timings = Timings {
    duration: Duration::from_secs(15),
    renew_after: Duration::from_secs(5),
    margin: Duration::from_secs(3),
};

fn set(items: &[u32]) -> BTreeSet<u32> {
    items.iter().copied().collect()
}

#[test]
fn a_lone_replica_takes_every_partition() {
    let p = plan(
        8,
        "a",
        t(0),
        TIMINGS,
        &Observed::default(),
        &BTreeSet::new(),
    );
    assert_eq!(p.members, vec!["a".to_string()]);
    assert_eq!(p.share, 8);
    assert_eq!(p.acquire, (0..8).collect());
    assert!(p.keep.is_empty() && p.drain.is_empty() && p.release.is_empty());
}

#[test]
fn a_joining_member_makes_the_holder_drain_then_release_half() {
    let mut observed = Observed {
        partitions: (0..8).map(|k| (k, lease("a", 0))).collect(),
        members: vec![lease("a", 0), lease("b", 0)],
        ages: None,
    };
    let first = plan(8, "a", t(1), TIMINGS, &observed, &BTreeSet::new());
    assert_eq!(first.share, 4);
    assert_eq!(first.keep.len(), 4);
    assert_eq!(first.drain.len(), 4);
    assert!(first.release.is_empty());
    // b sees nothing free yet.
    let b = plan(8, "b", t(1), TIMINGS, &observed, &BTreeSet::new());
    assert!(b.acquire.is_empty());

    let second = plan(8, "a", t(2), TIMINGS, &observed, &first.drain);
    assert_eq!(second.release, first.drain);
    assert_eq!(second.keep, first.keep);
    for k in &second.release {
        observed.partitions.remove(k);
    }
    let b = plan(8, "b", t(2), TIMINGS, &observed, &BTreeSet::new());
    assert_eq!(b.acquire, second.release);
}

#[test]
fn expired_partitions_and_members_are_taken_over() {
    let observed = Observed {
        partitions: BTreeMap::from([(0, lease("dead", 0)), (1, lease("b", 20))]),
        members: vec![lease("dead", 0), lease("b", 20)],
        ages: None,
    };
    let p = plan(2, "a", t(20), TIMINGS, &observed, &BTreeSet::new());
    assert_eq!(p.members, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(p.dead_members, BTreeSet::from(["dead".to_string()]));
    assert_eq!(p.acquire, set(&[0]));
}

#[test]
fn a_member_with_a_fresh_lease_is_not_dead() {
    let observed = Observed {
        partitions: BTreeMap::new(),
        members: vec![lease("b", 0), lease("b", 30)],
        ages: None,
    };
    let p = plan(4, "a", t(30), TIMINGS, &observed, &BTreeSet::new());
    assert!(p.dead_members.is_empty());
    assert_eq!(p.share, 2);
}

#[test]
fn renewal_is_due_after_a_third_of_the_lease() {
    assert!(!renewal_due(Some(&lease("a", 0)), t(4), TIMINGS));
    assert!(renewal_due(Some(&lease("a", 0)), t(5), TIMINGS));
    assert!(renewal_due(None, t(0), TIMINGS));
    let p = plan(
        2,
        "a",
        t(6),
        TIMINGS,
        &Observed {
            partitions: BTreeMap::from([(0, lease("a", 0)), (1, lease("a", 3))]),
            members: vec![],
            ages: None,
        },
        &BTreeSet::new(),
    );
    assert_eq!(p.keep, set(&[0, 1]));
    assert_eq!(p.renew_due, set(&[0]));
}

#[test]
fn ownership_ends_a_margin_before_the_lease_expires() {
    assert_eq!(remaining(t(0), t(0), TIMINGS), Duration::from_secs(12));
    assert_eq!(remaining(t(0), t(10), TIMINGS), Duration::from_secs(2));
    assert_eq!(remaining(t(0), t(20), TIMINGS), Duration::ZERO);
    assert_eq!(
        Timings::from_duration(Duration::from_secs(15)),
        Timings {
            duration: Duration::from_secs(15),
            renew_after: Duration::from_secs(5),
            margin: Duration::from_secs(3),
        }
    );
}

/// Replicas planning one after another against one Lease table (a write only succeeds on a Lease
/// that is free or already ours, as optimistic concurrency guarantees).
fn simulate(count: u32, replicas: &[String], rounds: usize) -> BTreeMap<u32, String> {
    let mut table: BTreeMap<u32, String> = BTreeMap::new();
    let mut drained: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for round in 0..rounds {
        // One more replica joins every round until all have.
        let joined = &replicas[..replicas.len().min(round + 1)];
        let members: Vec<LeaseSpec> = joined.iter().map(|r| lease(r, 0)).collect();
        for me in joined {
            let observed = Observed {
                partitions: table.iter().map(|(k, h)| (*k, lease(h, 0))).collect(),
                members: members.clone(),
                ages: None,
            };
            let mine = drained.entry(me.clone()).or_default();
            let p = plan(count, me, t(1), TIMINGS, &observed, mine);
            for k in &p.release {
                assert_eq!(table.remove(k).as_deref(), Some(me.as_str()));
            }
            for k in &p.acquire {
                if !table.contains_key(k) {
                    table.insert(*k, me.clone());
                }
            }
            *mine = p.drain.clone();
            assert!(
                p.keep.len() + p.drain.len() <= count as usize,
                "round {round}: {p:?}"
            );
        }
    }
    table
}

proptest! {
    #[test]
    fn replicas_converge_to_every_partition_owned_once_within_the_share(
        count in 1u32..64,
        replicas in 1usize..6,
    ) {
        let names: Vec<String> = (0..replicas).map(|i| format!("dispatcher-{i}")).collect();
        let table = simulate(count, &names, 3 * replicas + 3);
        prop_assert_eq!(table.len(), count as usize, "every partition owned");
        let share = count.div_ceil(replicas as u32) as usize;
        for name in &names {
            let owned = table.values().filter(|h| *h == name).count();
            prop_assert!(owned <= share, "{} owns {} > share {}", name, owned, share);
        }
    }

    #[test]
    fn a_replica_never_plans_to_take_a_partition_someone_else_validly_holds(
        count in 1u32..32,
        holders in proptest::collection::vec(0usize..4, 32),
    ) {
        let names = ["a", "b", "c", "d"];
        let observed = Observed {
            partitions: (0..count).map(|k| (k, lease(names[holders[k as usize]], 0))).collect(),
            members: names.iter().map(|n| lease(n, 0)).collect(),
            ages: None,
        };
        let p = plan(count, "a", t(1), TIMINGS, &observed, &BTreeSet::new());
        for k in p.acquire.iter().chain(&p.keep).chain(&p.drain) {
            prop_assert_eq!(holders[*k as usize], 0);
        }
    }
}

/// Clock skew: expiry follows how long this replica has watched a record stay unchanged, not the
/// holder's `renewTime` against our clock.
#[test]
fn expiry_follows_the_local_watch_not_the_holders_clock() {
    // `b`'s clock runs an hour behind ours: its renewTime looks long expired, yet we just saw its
    // record change, so its partition is held and it is alive.
    let behind = lease("b", -3600);
    let live = Observed {
        partitions: BTreeMap::from([(0, behind.clone())]),
        members: vec![behind.clone()],
        ages: Some(Ages {
            partitions: BTreeMap::from([(0, Duration::from_secs(1))]),
            members: vec![Some(Duration::from_secs(1))],
        }),
    };
    let p = plan(1, "a", t(0), TIMINGS, &live, &BTreeSet::new());
    assert!(p.acquire.is_empty(), "{p:?}");
    assert!(p.dead_members.is_empty(), "{p:?}");
    assert_eq!(p.members, vec!["a".to_string(), "b".to_string()]);

    // `c`'s clock runs an hour ahead: its renewTime looks fresh, but its record has not changed
    // for longer than the Lease lasts, so it is dead and its partition is taken.
    let ahead = lease("c", 3600);
    let stale = Observed {
        partitions: BTreeMap::from([(0, ahead.clone())]),
        members: vec![ahead],
        ages: Some(Ages {
            partitions: BTreeMap::from([(0, Duration::from_secs(16))]),
            members: vec![Some(Duration::from_secs(16))],
        }),
    };
    let p = plan(1, "a", t(0), TIMINGS, &stale, &BTreeSet::new());
    assert_eq!(p.acquire, set(&[0]));
    assert_eq!(p.dead_members, BTreeSet::from(["c".to_string()]));
}
