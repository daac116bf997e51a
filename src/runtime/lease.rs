//! Leases (`coordination.k8s.io/v1`): the pure hold/take/follow decision shared by the
//! controller's leader election and the dispatcher's partition ownership, and an elector for one
//! Lease. Leader election: several controller replicas are safe:
//! one reconciles, the others wait and take over when its Lease is not renewed.
//!
//! Writes use the Lease's resourceVersion (optimistic concurrency), so two candidates can never
//! both believe they acquired it.
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

/// Timings of the election.
#[derive(Clone, Copy, Debug)]
pub struct LeaseTimings {
    /// How long a Lease is valid without renewal.
    pub duration: Duration,
    /// How often the leader renews, and followers retry.
    pub retry: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(15),
            retry: Duration::from_secs(2),
        }
    }
}

/// What a candidate should do with the Lease as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it (or the holder let it expire): take it.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds a valid Lease.
    Follow { holder: String },
}

/// Decides from the Lease's spec (`None` when the Lease does not exist), judging another holder's
/// Lease by its `renewTime` against our wall clock `now`. The partition planner uses this (its
/// `margin` absorbs small skews); leader election uses [`decide_by_age`], which needs no clock
/// agreement at all.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp, default: Duration) -> Decision {
    let age = spec
        .and_then(|s| s.renew_time.as_ref())
        .map(|renewed| Duration::try_from(now.duration_since(renewed.0)).unwrap_or(Duration::ZERO));
    decide_by_age(spec, me, age, default)
}

/// Decides from the Lease's spec and `age`: how long the record has gone unchanged (`None`:
/// never renewed). Another holder's Lease is expired once `age` exceeds its duration.
pub fn decide_by_age(
    spec: Option<&LeaseSpec>,
    me: &str,
    age: Option<Duration>,
    default: Duration,
) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Decision::Acquire;
    }
    if holder == me {
        return Decision::Renew;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(default);
    let expired = spec.renew_time.is_none() || age.is_none_or(|age| age > duration);
    if expired {
        Decision::Acquire
    } else {
        Decision::Follow {
            holder: holder.to_string(),
        }
    }
}

/// How long a Lease's record has gone unchanged, on this process's monotonic clock: as client-go's
/// leader election does, a holder's Lease expires when *we* have not seen it change for its
/// duration, whatever its `renewTime` says. A holder whose clock runs ahead or behind ours can
/// neither keep a dead Lease alive nor lose a live one.
#[derive(Debug, Default)]
pub struct RecordClock {
    /// The record last seen (holder, renew and acquire times, transitions) and when it was first
    /// seen as such.
    seen: Option<(RecordKey, std::time::Instant)>,
}

type RecordKey = (
    Option<String>,
    Option<MicroTime>,
    Option<MicroTime>,
    Option<i32>,
);

impl RecordClock {
    /// The record's age at `now` (`None` when the Lease was never renewed): zero when it differs
    /// from what was seen before.
    pub fn age(&mut self, spec: Option<&LeaseSpec>, now: std::time::Instant) -> Option<Duration> {
        let spec = spec?;
        spec.renew_time.as_ref()?;
        let key = (
            spec.holder_identity.clone(),
            spec.renew_time.clone(),
            spec.acquire_time.clone(),
            spec.lease_transitions,
        );
        match &self.seen {
            Some((seen, since)) if *seen == key => Some(now.saturating_duration_since(*since)),
            _ => {
                self.seen = Some((key, now));
                Some(Duration::ZERO)
            }
        }
    }
}

/// The spec after acting on a decision.
pub fn next_spec(
    current: Option<&LeaseSpec>,
    decision: &Decision,
    me: &str,
    now: Timestamp,
    timings: LeaseTimings,
) -> Option<LeaseSpec> {
    let seconds = i32::try_from(timings.duration.as_secs()).unwrap_or(i32::MAX);
    match decision {
        Decision::Follow { .. } => None,
        Decision::Renew => Some(LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(seconds),
            ..current.cloned().unwrap_or_default()
        }),
        Decision::Acquire => {
            let transitions = current.and_then(|s| s.lease_transitions).unwrap_or(0);
            Some(LeaseSpec {
                holder_identity: Some(me.to_string()),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_duration_seconds: Some(seconds),
                lease_transitions: Some(transitions.saturating_add(1)),
                ..Default::default()
            })
        }
    }
}

/// Who holds the Lease (an empty holder is nobody).
pub fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()?
        .holder_identity
        .as_deref()
        .filter(|h| !h.is_empty())
}

/// Gives the Lease up if `me` holds it (holder and renew time cleared, so another candidate may
/// take it at once); returns whether it did.
pub fn give_up(lease: &mut Lease, me: &str) -> bool {
    if holder(lease) != Some(me) {
        return false;
    }
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = None;
        spec.renew_time = None;
    }
    true
}

/// A candidate for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: LeaseTimings,
    /// When the Lease's record last changed, as we saw it.
    record: std::sync::Mutex<RecordClock>,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timings: LeaseTimings) -> Self {
        Self {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            timings,
            record: std::sync::Mutex::new(RecordClock::default()),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn timings(&self) -> LeaseTimings {
        self.timings
    }

    /// One round: returns whether we hold the Lease afterwards.
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let lease = self.api.get_opt(&self.name).await?;
        let spec = lease.as_ref().and_then(|l| l.spec.as_ref());
        let age = self
            .record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .age(spec, std::time::Instant::now());
        let decision = decide_by_age(spec, &self.identity, age, self.timings.duration);
        let Some(next) = next_spec(spec, &decision, &self.identity, now, self.timings) else {
            if let Decision::Follow { holder } = decision {
                tracing::debug!(%holder, "following the current leader");
            }
            return Ok(false);
        };
        let result = match lease {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(next),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                lease.spec = Some(next);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => {
                if decision == Decision::Acquire {
                    tracing::info!(identity = %self.identity, lease = %self.name, "acquired leadership");
                }
                Ok(true)
            }
            // Someone else wrote first: not leading this round.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Gives the Lease up so a follower can take over at once (graceful shutdown).
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        if give_up(&mut lease, &self.identity) {
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await?;
            tracing::info!(identity = %self.identity, "released leadership");
        }
        Ok(())
    }
}

/// Lease fixtures for the tests of everything built on Leases (here and the partition planner).
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A fixed instant plus `secs` seconds.
    pub fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    /// A 15-second Lease held by `holder`, last renewed at `t(renewed)`, taken over 3 times.
    pub fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(t(renewed))),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(3),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{held_by, t};
    use super::*;

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn only_the_holder_gives_a_lease_up() {
        let mut lease = Lease {
            spec: Some(held_by("a", 0)),
            ..Default::default()
        };
        assert_eq!(holder(&lease), Some("a"));
        assert!(!give_up(&mut lease, "b"));
        assert_eq!(holder(&lease), Some("a"));
        assert!(give_up(&mut lease, "a"));
        assert_eq!(holder(&lease), None);
        assert_eq!(lease.spec.as_ref().and_then(|s| s.renew_time.clone()), None);
        assert_eq!(decide(lease.spec.as_ref(), "b", t(1), D), Decision::Acquire);
    }

    #[test]
    fn missing_or_released_lease_is_acquired() {
        assert_eq!(decide(None, "a", t(0), D), Decision::Acquire);
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", t(0), D),
            Decision::Acquire
        );
    }

    #[test]
    fn own_lease_is_renewed() {
        assert_eq!(
            decide(Some(&held_by("a", 0)), "a", t(100), D),
            Decision::Renew
        );
    }

    #[test]
    fn valid_foreign_lease_is_followed_and_expired_one_taken() {
        let lease = held_by("b", 0);
        assert_eq!(
            decide(Some(&lease), "a", t(10), D),
            Decision::Follow { holder: "b".into() }
        );
        assert_eq!(decide(Some(&lease), "a", t(16), D), Decision::Acquire);
    }

    /// A holder whose clock is an hour off, either way: its Lease expires exactly when we have
    /// not seen it renewed for its duration, never earlier or later.
    #[test]
    fn skewed_clocks_do_not_move_expiry() {
        let start = std::time::Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        for skew in [-3600i64, 0, 3600] {
            let mut clock = RecordClock::default();
            // The holder writes renewTime with its own clock: `skew` seconds off ours.
            let mut lease = held_by("b", skew);
            let decide_at = |clock: &mut RecordClock, lease: &LeaseSpec, now| {
                decide_by_age(Some(lease), "a", clock.age(Some(lease), now), D)
            };
            assert_eq!(
                decide_at(&mut clock, &lease, at(0)),
                Decision::Follow { holder: "b".into() }
            );
            assert_eq!(
                decide_at(&mut clock, &lease, at(10)),
                Decision::Follow { holder: "b".into() },
                "skew {skew}"
            );
            // Renewed at our t=12 (its clock says 12 + skew): valid again for 15 s from then.
            lease.renew_time = Some(MicroTime(t(12 + skew)));
            assert_eq!(
                decide_at(&mut clock, &lease, at(12)),
                Decision::Follow { holder: "b".into() }
            );
            assert_eq!(
                decide_at(&mut clock, &lease, at(26)),
                Decision::Follow { holder: "b".into() },
                "skew {skew}"
            );
            // Not renewed for more than 15 s on our clock: expired.
            assert_eq!(
                decide_at(&mut clock, &lease, at(28)),
                Decision::Acquire,
                "skew {skew}"
            );
        }
        // By contrast, the wall-clock judgement of the same Lease is wrong under skew: an hour
        // behind looks expired at once, an hour ahead looks valid for an hour.
        assert_eq!(
            decide(Some(&held_by("b", -3600)), "a", t(1), D),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&held_by("b", 3600)), "a", t(100), D),
            Decision::Follow { holder: "b".into() }
        );
    }

    #[test]
    fn a_never_renewed_or_released_lease_is_free_whatever_the_clock() {
        let mut clock = RecordClock::default();
        let mut lease = held_by("b", 0);
        lease.renew_time = None;
        let now = std::time::Instant::now();
        assert_eq!(clock.age(Some(&lease), now), None);
        assert_eq!(decide_by_age(Some(&lease), "a", None, D), Decision::Acquire);
    }

    #[test]
    fn acquiring_counts_a_transition_and_renewing_keeps_it() {
        let lease = held_by("b", 0);
        let timings = LeaseTimings::default();
        let taken = next_spec(Some(&lease), &Decision::Acquire, "a", t(20), timings).unwrap();
        assert_eq!(taken.holder_identity.as_deref(), Some("a"));
        assert_eq!(taken.lease_transitions, Some(4));
        let renewed = next_spec(Some(&taken), &Decision::Renew, "a", t(22), timings).unwrap();
        assert_eq!(renewed.lease_transitions, Some(4));
        assert_eq!(renewed.renew_time, Some(MicroTime(t(22))));
        assert_eq!(renewed.acquire_time, Some(MicroTime(t(20))));
        assert!(next_spec(
            Some(&lease),
            &Decision::Follow { holder: "b".into() },
            "a",
            t(1),
            timings
        )
        .is_none());
    }
}
