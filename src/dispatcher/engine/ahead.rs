//! Transforms run ahead. A delivery that waits behind its endpoint's attempts in flight has its
//! endpoint's transform run meanwhile, so the attempt that takes it over sends at once.
//!
//! Why: an endpoint's attempts in flight are capped (`--per-endpoint-concurrency`), and a
//! transform is a round trip to a worker process (two process wake-ups each way). Run inside the
//! attempt, that round trip held one of the endpoint's slots; on a loaded machine it was about a
//! millisecond, a quarter of a slot's time at one busy endpoint (docs/benchmarks.md, issue 14).
//! Run ahead, it overlaps the attempts in flight.
//!
//! The output is used only if the endpoint's program and display name are still the ones it was
//! run with when the attempt starts; otherwise the attempt runs the transform again. A delivery
//! given back to the store drops its run (the task is aborted).
use std::sync::Arc;

use tokio::task::JoinHandle;
use tracing::{debug_span, Instrument};

use super::Deps;
use crate::api::policy::EffectivePolicy;
use crate::delivery::payload::WebhookRef;
use crate::delivery::request::{render_body, EventData, EventParts};
use crate::store::{ClaimedDelivery, EndpointRef};
use crate::transform::{Output, TransformError};

/// A claimed delivery that waits behind its endpoint's attempts in flight.
pub(super) struct Queued {
    pub(super) delivery: ClaimedDelivery,
    pub(super) ahead: Option<Ahead>,
}

impl Queued {
    /// Just claimed: no transform run yet.
    pub(super) fn new(delivery: ClaimedDelivery) -> Self {
        Self {
            delivery,
            ahead: None,
        }
    }

    /// Whether its attempt can start without waiting for a transform: none runs ahead, or the
    /// run has finished.
    pub(super) fn ready(&self) -> bool {
        self.ahead.as_ref().is_none_or(|a| a.run.is_finished())
    }
}

/// A transform running (or run) ahead of its attempt.
pub struct Ahead {
    program: Arc<str>,
    display_name: String,
    run: JoinHandle<Result<Output, TransformError>>,
}

impl Ahead {
    /// Starts the endpoint's transform on the delivery's payload; `None` if the endpoint has no
    /// transform or the payload cannot be rendered (the attempt then reports why).
    pub(super) fn start(
        deps: &Deps,
        delivery: &ClaimedDelivery,
        policy: &EffectivePolicy,
    ) -> Option<Ahead> {
        let program = policy.transform.clone()?;
        let endpoint = &delivery.delivery.endpoint;
        let body = render_body(&webhook_ref(endpoint, policy), &stored_parts(delivery)).ok()?;
        let transforms = deps.transforms.clone();
        let input = program.clone();
        let span = debug_span!("transform_ahead", event_id = %delivery.event.event_id);
        let run = tokio::spawn(async move { transforms.run(input, body).await }.instrument(span));
        Some(Ahead {
            program,
            display_name: policy.display_name.clone(),
            run,
        })
    }

    /// A run that never finishes (tests of what waits for one).
    #[cfg(test)]
    pub(super) fn never_finishing(policy: &EffectivePolicy) -> Ahead {
        Ahead {
            program: policy.transform.clone().unwrap_or_else(|| "".into()),
            display_name: policy.display_name.clone(),
            run: tokio::spawn(std::future::pending()),
        }
    }

    /// The output, if it was run with the program and display name `policy` has now (`None`:
    /// the endpoint changed meanwhile, run it again).
    pub(super) async fn output_for(
        mut self,
        policy: &EffectivePolicy,
    ) -> Option<Result<Output, TransformError>> {
        let current = policy.transform.as_ref()?;
        if *current != self.program || policy.display_name != self.display_name {
            return None;
        }
        // `None` if the run's task panicked or was aborted: the attempt runs it again.
        (&mut self.run).await.ok()
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        // Finished: a no-op. Otherwise nobody will read it.
        self.run.abort();
    }
}

/// How the payload names the endpoint it goes to.
pub(super) fn webhook_ref(endpoint: &EndpointRef, policy: &EffectivePolicy) -> WebhookRef {
    WebhookRef {
        id: format!("{}/{}", endpoint.namespace, endpoint.name),
        name: policy.display_name.clone(),
    }
}

/// A stored delivery's event, as the payload renders it (the canonical data is spliced in).
pub(super) fn stored_parts(delivery: &ClaimedDelivery) -> EventParts<'_> {
    let event = &delivery.event;
    EventParts {
        event_id: &event.event_id,
        event_type: &event.event_type,
        created_at: event.created_at,
        data: EventData::Stored(&event.data),
    }
}
