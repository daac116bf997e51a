//! Kubernetes Events that attempts give rise to (CircuitOpened, CircuitClosed, EndpointGone,
//! RateReduced).
//! An attempt task only queues a notice ([`Notices::send`] never waits); the task of [`raise`]
//! publishes them, so no Kubernetes call runs inside an attempt or holds a delivery slot.
use std::sync::Arc;

use kube::runtime::events::EventType;
use tokio::sync::mpsc;
use tracing::warn;

use crate::delivery::circuit::BreakerState;
use crate::dispatcher::Shared;
use crate::store::EndpointRef;

/// Notices that may wait for the Events task; beyond it new ones are dropped (and logged):
/// circuit changes are rare, and an Event is a hint, the status carries the truth.
const CAPACITY: usize = 1024;

/// EndpointGone at most this often per endpoint: a gone receiver answers 410 to every event, and
/// one Event a minute says it as well as one per event would, without an API call per delivery.
const GONE_EVENT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Something about an endpoint worth a Kubernetes Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointNotice {
    /// The circuit breaker changed state after an attempt whose answer is `last_attempt`.
    CircuitChanged {
        endpoint: EndpointRef,
        to: BreakerState,
        last_attempt: String,
    },
    /// The receiver answered 410 Gone.
    ReceiverGone {
        endpoint: EndpointRef,
        last_attempt: String,
    },
    /// The adaptive limiter cut the endpoint's rate for the first time since it last ran at
    /// its configured rate.
    RateReduced {
        endpoint: EndpointRef,
        /// Why, for people (the cut reason's message).
        why: String,
        /// The rate allowed now, per minute.
        rate_per_minute: u64,
    },
}

/// The Event for a notice: its type, reason and note; `None` when there is nothing to say
/// (a half-open circuit).
pub fn describe(notice: &EndpointNotice) -> Option<(EventType, &'static str, String)> {
    match notice {
        EndpointNotice::CircuitChanged {
            to: BreakerState::Open,
            last_attempt,
            ..
        } => Some((
            EventType::Warning,
            "CircuitOpened",
            format!("deliveries paused after consecutive failures; last: {last_attempt}"),
        )),
        EndpointNotice::CircuitChanged {
            to: BreakerState::Closed,
            ..
        } => Some((
            EventType::Normal,
            "CircuitClosed",
            "the endpoint recovered; deliveries resumed".to_string(),
        )),
        EndpointNotice::CircuitChanged {
            to: BreakerState::HalfOpen,
            ..
        } => None,
        EndpointNotice::ReceiverGone { last_attempt, .. } => Some((
            EventType::Warning,
            "EndpointGone",
            format!(
                "the receiver answered {last_attempt}; consider suspending or deleting this endpoint"
            ),
        )),
        EndpointNotice::RateReduced {
            why,
            rate_per_minute,
            ..
        } => Some((
            EventType::Warning,
            "RateReduced",
            format!("{why}; sending at most {rate_per_minute} requests per minute until it recovers"),
        )),
    }
}

/// The sending side, shared by every attempt task.
#[derive(Clone, Debug)]
pub struct Notices(mpsc::Sender<EndpointNotice>);

impl Notices {
    /// A queue of notices and its receiving end (for [`raise`]).
    pub fn channel() -> (Self, mpsc::Receiver<EndpointNotice>) {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        (Self(sender), receiver)
    }

    /// Queues a notice without waiting.
    pub fn send(&self, notice: EndpointNotice) {
        if let Err(error) = self.0.try_send(notice) {
            warn!(%error, "a Kubernetes Event was dropped: its queue is full or closed");
        }
    }
}

/// Publishes each notice as an Event about its endpoint, as long as the endpoint exists.
pub async fn raise(shared: Arc<Shared>, mut notices: mpsc::Receiver<EndpointNotice>) {
    let mut gone_raised = std::collections::HashMap::new();
    while let Some(notice) = notices.recv().await {
        let (EndpointNotice::CircuitChanged { endpoint, .. }
        | EndpointNotice::ReceiverGone { endpoint, .. }
        | EndpointNotice::RateReduced { endpoint, .. }) = &notice;
        let Some((type_, reason, note)) = describe(&notice) else {
            continue;
        };
        if matches!(notice, EndpointNotice::ReceiverGone { .. }) {
            let now = std::time::Instant::now();
            if !due(gone_raised.get(endpoint).copied(), now, GONE_EVENT_INTERVAL) {
                continue;
            }
            gone_raised.retain(|_, at: &mut std::time::Instant| {
                now.duration_since(*at) < GONE_EVENT_INTERVAL
            });
            gone_raised.insert(endpoint.clone(), now);
        }
        if let Some(resource) = shared.cache.endpoint(&endpoint.namespace, &endpoint.name) {
            super::raise_kube_event(&shared, resource.as_ref(), type_, reason, note).await;
        }
    }
}

/// Whether an Event last raised at `last` may be raised again at `now`.
fn due(
    last: Option<std::time::Instant>,
    now: std::time::Instant,
    interval: std::time::Duration,
) -> bool {
    last.is_none_or(|last| now.duration_since(last) >= interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_event_waits_out_its_interval() {
        let t0 = std::time::Instant::now();
        let minute = std::time::Duration::from_secs(60);
        assert!(due(None, t0, minute));
        assert!(!due(
            Some(t0),
            t0 + std::time::Duration::from_secs(59),
            minute
        ));
        assert!(due(Some(t0), t0 + minute, minute));
    }

    fn circuit(to: BreakerState) -> EndpointNotice {
        EndpointNotice::CircuitChanged {
            endpoint: EndpointRef::new("ns", "crm"),
            to,
            last_attempt: "HTTP 503".into(),
        }
    }

    #[test]
    fn each_notice_has_its_event() {
        let (type_, reason, note) = describe(&circuit(BreakerState::Open)).unwrap();
        assert_eq!((type_, reason), (EventType::Warning, "CircuitOpened"));
        assert!(note.ends_with("last: HTTP 503"), "{note}");
        let (type_, reason, _) = describe(&circuit(BreakerState::Closed)).unwrap();
        assert_eq!((type_, reason), (EventType::Normal, "CircuitClosed"));
        assert_eq!(describe(&circuit(BreakerState::HalfOpen)), None);
        let gone = EndpointNotice::ReceiverGone {
            endpoint: EndpointRef::new("ns", "crm"),
            last_attempt: "HTTP 410".into(),
        };
        let (_, reason, note) = describe(&gone).unwrap();
        assert_eq!(reason, "EndpointGone");
        assert!(note.contains("HTTP 410"), "{note}");
        let reduced = EndpointNotice::RateReduced {
            endpoint: EndpointRef::new("ns", "crm"),
            why: "6 of the last minute's 10 attempts timed out or could not connect".into(),
            rate_per_minute: 300,
        };
        let (type_, reason, note) = describe(&reduced).unwrap();
        assert_eq!((type_, reason), (EventType::Warning, "RateReduced"));
        assert!(
            note.starts_with("6 of the last minute's") && note.contains("at most 300"),
            "{note}"
        );
    }

    #[tokio::test]
    async fn sending_never_waits_even_when_the_queue_is_full() {
        let (notices, mut receiver) = Notices::channel();
        for _ in 0..CAPACITY + 10 {
            notices.send(circuit(BreakerState::Open));
        }
        let mut queued = 0;
        while receiver.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, CAPACITY);
    }
}
