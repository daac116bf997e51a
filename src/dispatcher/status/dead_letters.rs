//! `DeliveriesDeadLettered` Events, aggregated and rate-limited: at most one per endpoint every
//! [`MIN_GAP`], carrying the number of deliveries dead-lettered since the previous one.
//!
//! What has been reported is written with the endpoint's status
//! (`status.delivery.deadLettersReported` and `deadLettersReportedTime`), so a restarted
//! dispatcher, or the replica that takes an endpoint over, reports exactly the dead letters
//! nobody has reported yet: those of its first round included, none a second time.
use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;

use crate::api::endpoint::DeliveryStats;
use crate::store::EndpointRef;

/// The shortest time between two `DeliveriesDeadLettered` Events about one endpoint.
pub const MIN_GAP: Duration = Duration::from_secs(60);

/// What has been reported about an endpoint's dead letters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    /// The endpoint's dead-lettered total up to which Events were published.
    pub total: u64,
    /// When the last Event was published.
    pub at: Option<Timestamp>,
}

impl Reported {
    /// What an endpoint's status says was reported. A status written by a dispatcher that did
    /// not record it counts its dead-lettered total as reported (that version announced every
    /// status round); an endpoint without delivery statistics has had nothing reported.
    pub fn from_status(delivery: Option<&DeliveryStats>) -> Self {
        let Some(delivery) = delivery else {
            return Self::default();
        };
        let total = delivery
            .dead_letters_reported
            .unwrap_or(delivery.total_dead_lettered);
        Self {
            total: u64::try_from(total).unwrap_or(0),
            at: delivery
                .dead_letters_reported_time
                .as_deref()
                .and_then(|t| t.parse().ok()),
        }
    }

    /// The more recent of two views (totals only grow): this process's memory, and the status
    /// that may have been written by another process since.
    pub fn latest(self, other: Self) -> Self {
        if (other.total, other.at) > (self.total, self.at) {
            other
        } else {
            self
        }
    }
}

/// What to do about an endpoint's dead letters now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadLetterReport {
    /// Nothing new to report.
    Nothing,
    /// Publish one Event for `count` dead letters.
    Publish { count: u64 },
    /// `count` dead letters wait until `due`, one gap after the previous Event.
    Wait { count: u64, due: Timestamp },
}

/// The decision for an endpoint whose dead-lettered total is `total` at `now`, and what is
/// reported afterwards (assuming a `Publish` is carried out).
pub fn decide(reported: Reported, total: u64, now: Timestamp) -> (DeadLetterReport, Reported) {
    if total < reported.total {
        // A different or reset store: count from what it says now.
        return (
            DeadLetterReport::Nothing,
            Reported {
                total,
                at: reported.at,
            },
        );
    }
    let count = total - reported.total;
    if count == 0 {
        return (DeadLetterReport::Nothing, reported);
    }
    let due = reported
        .at
        .and_then(|at| at.checked_add(MIN_GAP).ok())
        .filter(|due| *due > now);
    match due {
        Some(due) => (DeadLetterReport::Wait { count, due }, reported),
        None => (
            DeadLetterReport::Publish { count },
            Reported {
                total,
                at: Some(now),
            },
        ),
    }
}

/// The status task's memory of what was reported, and of the endpoints whose dead letters wait
/// for their gap to pass (they are written again then, even if nothing else changed).
#[derive(Default)]
pub struct DeadLetterReports {
    reported: HashMap<EndpointRef, Reported>,
    waiting: HashMap<EndpointRef, Timestamp>,
}

impl DeadLetterReports {
    /// What has been reported about `endpoint`: the latest of this process's memory and the
    /// endpoint's status.
    pub fn known(&self, endpoint: &EndpointRef, status: Option<&DeliveryStats>) -> Reported {
        let remembered = self.reported.get(endpoint).copied().unwrap_or_default();
        remembered.latest(Reported::from_status(status))
    }

    /// Records the outcome of a decision (`reported` once its Event is out, or as it was).
    pub fn record(
        &mut self,
        endpoint: &EndpointRef,
        reported: Reported,
        wait_until: Option<Timestamp>,
    ) {
        self.reported.insert(endpoint.clone(), reported);
        match wait_until {
            Some(due) => self.waiting.insert(endpoint.clone(), due),
            None => self.waiting.remove(endpoint),
        };
    }

    /// Takes the endpoints whose wait is over at `now`.
    pub fn take_due(&mut self, now: Timestamp) -> Vec<EndpointRef> {
        let due: Vec<EndpointRef> = self
            .waiting
            .iter()
            .filter(|(_, due)| **due <= now)
            .map(|(endpoint, _)| endpoint.clone())
            .collect();
        for endpoint in &due {
            self.waiting.remove(endpoint);
        }
        due
    }

    /// Forgets a deleted endpoint.
    pub fn forget(&mut self, endpoint: &EndpointRef) {
        self.reported.remove(endpoint);
        self.waiting.remove(endpoint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    #[test]
    fn the_first_dead_letters_are_reported_at_once() {
        let (notice, after) = decide(Reported::default(), 3, at(0));
        assert_eq!(notice, DeadLetterReport::Publish { count: 3 });
        assert_eq!(
            after,
            Reported {
                total: 3,
                at: Some(at(0))
            }
        );
        assert_eq!(decide(after, 3, at(1)), (DeadLetterReport::Nothing, after));
    }

    #[test]
    fn later_ones_are_summed_into_one_event_a_minute() {
        let reported = Reported {
            total: 3,
            at: Some(at(0)),
        };
        // Within the gap: wait, however many arrive.
        assert_eq!(
            decide(reported, 4, at(10)),
            (
                DeadLetterReport::Wait {
                    count: 1,
                    due: at(60)
                },
                reported
            )
        );
        assert_eq!(
            decide(reported, 9, at(59)),
            (
                DeadLetterReport::Wait {
                    count: 6,
                    due: at(60)
                },
                reported
            )
        );
        // Once it passed: one Event with the sum.
        let (notice, after) = decide(reported, 9, at(60));
        assert_eq!(notice, DeadLetterReport::Publish { count: 6 });
        assert_eq!(
            after,
            Reported {
                total: 9,
                at: Some(at(60))
            }
        );
    }

    #[test]
    fn a_restart_reports_what_nobody_reported_and_nothing_twice() {
        // The previous process reported 5 of 7 before it stopped, a minute ago.
        let status = DeliveryStats {
            total_dead_lettered: 7,
            dead_letters_reported: Some(5),
            dead_letters_reported_time: Some("2023-11-14T22:13:20Z".into()),
            ..DeliveryStats::default()
        };
        let notices = DeadLetterReports::default();
        let endpoint = EndpointRef::new("ns", "e");
        let known = notices.known(&endpoint, Some(&status));
        let (notice, after) = decide(known, 8, at(60));
        assert_eq!(notice, DeadLetterReport::Publish { count: 3 });
        assert_eq!(after.total, 8);
        // Had it restarted within a minute of that Event, it would wait for the gap.
        let (notice, _) = decide(known, 8, at(30));
        assert_eq!(
            notice,
            DeadLetterReport::Wait {
                count: 3,
                due: at(60)
            }
        );
    }

    #[test]
    fn a_status_from_an_older_dispatcher_counts_its_total_as_reported() {
        let status = DeliveryStats {
            total_dead_lettered: 4,
            ..DeliveryStats::default()
        };
        assert_eq!(
            Reported::from_status(Some(&status)),
            Reported { total: 4, at: None }
        );
        assert_eq!(Reported::from_status(None), Reported::default());
    }

    #[test]
    fn memory_and_status_merge_to_the_latest() {
        let old = Reported {
            total: 2,
            at: Some(at(0)),
        };
        let new = Reported {
            total: 5,
            at: Some(at(70)),
        };
        assert_eq!(old.latest(new), new);
        assert_eq!(new.latest(old), new);
    }

    #[test]
    fn a_smaller_total_starts_counting_again() {
        let reported = Reported {
            total: 10,
            at: Some(at(0)),
        };
        let (notice, after) = decide(reported, 2, at(100));
        assert_eq!(notice, DeadLetterReport::Nothing);
        assert_eq!(after.total, 2);
        assert_eq!(
            decide(after, 3, at(101)).0,
            DeadLetterReport::Publish { count: 1 }
        );
    }

    #[test]
    fn waiting_endpoints_come_due_once() {
        let mut notices = DeadLetterReports::default();
        let endpoint = EndpointRef::new("ns", "e");
        notices.record(&endpoint, Reported::default(), Some(at(60)));
        assert!(notices.take_due(at(59)).is_empty());
        assert_eq!(notices.take_due(at(60)), vec![endpoint.clone()]);
        assert!(notices.take_due(at(61)).is_empty());
    }
}
