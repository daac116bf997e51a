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
    while let Some(notice) = notices.recv().await {
        let (EndpointNotice::CircuitChanged { endpoint, .. }
        | EndpointNotice::ReceiverGone { endpoint, .. }
        | EndpointNotice::RateReduced { endpoint, .. }) = &notice;
        let Some((type_, reason, note)) = describe(&notice) else {
            continue;
        };
        if let Some(resource) = shared.cache.endpoint(&endpoint.namespace, &endpoint.name) {
            super::raise_kube_event(&shared, resource.as_ref(), type_, reason, note).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
