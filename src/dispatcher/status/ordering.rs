//! The `status.ordering` of an ordered endpoint, and when to announce a pause. Pure.
use crate::api::endpoint::{OrderingMode, OrderingSpec, OrderingStatus, PausedBy};
use crate::api::time::rfc3339;
use crate::store::EndpointStats;

/// `status.ordering`: present while the endpoint is ordered, or still paused or queued from
/// when it was (its lanes finish in order after the mode is switched off).
pub fn ordering_status(
    spec: Option<&OrderingSpec>,
    stats: &EndpointStats,
) -> Option<OrderingStatus> {
    let ordered = spec.is_some_and(|o| o.mode != OrderingMode::None);
    if !ordered && stats.paused.is_none() && stats.queued_count == 0 {
        return None;
    }
    Some(OrderingStatus {
        paused: stats.paused.is_some(),
        queued: i64::try_from(stats.queued_count).unwrap_or(i64::MAX),
        paused_by: stats.paused.as_ref().map(|pause| PausedBy {
            event_id: pause.event_id.clone(),
            reason: pause.reason.clone(),
            since: rfc3339(pause.since),
        }),
    })
}

/// The pause to announce with an Event: one the status written before does not show yet.
pub fn new_pause<'a>(
    before: Option<&OrderingStatus>,
    now: Option<&'a OrderingStatus>,
) -> Option<&'a PausedBy> {
    let paused_by = now?.paused_by.as_ref()?;
    let known = before
        .and_then(|b| b.paused_by.as_ref())
        .is_some_and(|b| b.event_id == paused_by.event_id && b.since == paused_by.since);
    (!known).then_some(paused_by)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DeliveryId, EndpointPause};

    fn paused(event_id: &str, second: i64) -> EndpointStats {
        EndpointStats {
            queued_count: 4,
            paused: Some(EndpointPause {
                since: jiff::Timestamp::from_second(second).unwrap(),
                delivery_id: DeliveryId(7),
                event_id: event_id.into(),
                reason: "HTTP 400".into(),
            }),
            ..EndpointStats::default()
        }
    }

    #[test]
    fn unordered_endpoints_have_no_ordering_status() {
        assert_eq!(ordering_status(None, &EndpointStats::default()), None);
        let none = OrderingSpec::default();
        assert_eq!(
            ordering_status(Some(&none), &EndpointStats::default()),
            None
        );
    }

    #[test]
    fn a_paused_endpoint_says_by_what_and_how_many_wait() {
        let strict = OrderingSpec {
            mode: OrderingMode::Strict,
            ..OrderingSpec::default()
        };
        let status = ordering_status(Some(&strict), &paused("evt_1", 60)).unwrap();
        assert!(status.paused);
        assert_eq!(status.queued, 4);
        let by = status.paused_by.as_ref().unwrap();
        assert_eq!(
            (by.event_id.as_str(), by.reason.as_str()),
            ("evt_1", "HTTP 400")
        );
        assert_eq!(by.since, "1970-01-01T00:01:00Z");
        // Switched to unordered while paused: still shown until resumed.
        assert!(ordering_status(None, &paused("evt_1", 60)).unwrap().paused);
        let running = ordering_status(Some(&strict), &EndpointStats::default()).unwrap();
        assert!(!running.paused && running.paused_by.is_none());
    }

    #[test]
    fn each_pause_is_announced_once() {
        let strict = OrderingSpec {
            mode: OrderingMode::Strict,
            ..OrderingSpec::default()
        };
        let first = ordering_status(Some(&strict), &paused("evt_1", 60));
        let again = ordering_status(Some(&strict), &paused("evt_1", 60));
        let later = ordering_status(Some(&strict), &paused("evt_1", 90));
        assert!(new_pause(None, first.as_ref()).is_some());
        assert!(new_pause(first.as_ref(), again.as_ref()).is_none());
        // The same event paused it again after a retry: a new pause.
        assert!(new_pause(first.as_ref(), later.as_ref()).is_some());
        assert!(new_pause(first.as_ref(), None).is_none());
    }
}
