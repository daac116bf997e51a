//! Transforms run ahead. A claimed delivery to an endpoint with a transform goes through its
//! endpoint's gate only once its transform has answered ([`super::transforming`]), and one that
//! waits behind its endpoint's attempts in flight has it run meanwhile; so the attempt that takes
//! it sends at once.
//!
//! Why: an endpoint's attempts in flight are capped (`--per-endpoint-concurrency`), and a
//! transform is a round trip to a worker process (two process wake-ups each way). Run inside the
//! attempt, that round trip held one of the endpoint's slots; on a loaded machine it was about a
//! millisecond, a quarter of a slot's time at one busy endpoint (docs/benchmarks.md, issue 14).
//! Run ahead, it overlaps the attempts in flight.
//!
//! The output is used only if the endpoint's program and display name are still the ones it was
//! run with when the attempt starts; otherwise the attempt runs the transform again. A delivery
//! given back to the store drops its run (the pool skips a run nobody waits for).
use std::sync::Arc;

use super::Deps;
use crate::api::policy::EffectivePolicy;
use crate::delivery::payload::WebhookRef;
use crate::delivery::request::{render_body, EventData, EventParts};
use crate::dispatcher::metrics::TransformOutputSource;
use crate::store::{ClaimedDelivery, EndpointRef};
use crate::transform::{AheadRun, Output, TransformError, TransformPool};

/// A claimed delivery on its way to an attempt.
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
        self.ahead.as_ref().is_none_or(Ahead::answered)
    }
}

/// A transform running (or run) ahead of its attempt.
pub struct Ahead {
    program: Arc<str>,
    display_name: String,
    run: Run,
}

/// A run ahead, before and after its answer was taken off the channel.
enum Run {
    Pending(AheadRun),
    /// `None`: the pool dropped the run (it stopped); the attempt runs it again.
    Answered(Option<Result<Output, TransformError>>),
}

impl Ahead {
    /// Starts the endpoint's transform on the delivery's payload; `None` if the endpoint has no
    /// transform, the payload cannot be rendered (the attempt then reports why) or the pool's
    /// queue is full. `patient`: the delivery waits behind its endpoint anyway, so the run may
    /// wait a little for others to share its worker's wake-up.
    pub(super) fn start(
        deps: &Deps,
        delivery: &ClaimedDelivery,
        policy: &EffectivePolicy,
        patient: bool,
    ) -> Option<Ahead> {
        let program = policy.transform.clone()?;
        let endpoint = &delivery.delivery.endpoint;
        let body = render_body(&webhook_ref(endpoint, policy), &stored_parts(delivery)).ok()?;
        let run = deps
            .transforms
            .start_ahead(program.clone(), body, patient)?;
        Some(Ahead {
            program,
            display_name: policy.display_name.clone(),
            run: Run::Pending(run),
        })
    }

    /// A run that never finishes (tests of what waits for one).
    #[cfg(test)]
    pub(super) fn never_finishing(policy: &EffectivePolicy) -> Ahead {
        let (answer, run) = tokio::sync::oneshot::channel();
        // Never sent and never dropped: the run stays under way.
        std::mem::forget(answer);
        Ahead {
            program: policy.transform.clone().unwrap_or_else(|| "".into()),
            display_name: policy.display_name.clone(),
            run: Run::Pending(run),
        }
    }

    /// Whether the run has answered.
    fn answered(&self) -> bool {
        match &self.run {
            Run::Pending(run) => !run.is_empty(),
            Run::Answered(_) => true,
        }
    }

    /// Waits for the run's answer and keeps it for the attempt.
    pub(super) async fn wait(&mut self) {
        if let Run::Pending(run) = &mut self.run {
            let answer = run.await.ok();
            self.run = Run::Answered(answer);
        }
    }

    /// Where an attempt with `policy` takes its output from (the `transform_outputs` metric):
    /// ready, waited for, or run in the attempt (none ran ahead, or the endpoint's program or
    /// display name changed since the run).
    pub(super) fn source(ahead: Option<&Ahead>, policy: &EffectivePolicy) -> TransformOutputSource {
        match ahead {
            Some(ahead) if ahead.ran_with(policy) && ahead.answered() => {
                TransformOutputSource::Ready
            }
            Some(ahead) if ahead.ran_with(policy) => TransformOutputSource::Waited,
            _ => TransformOutputSource::Attempt,
        }
    }

    /// Whether it ran with the program and display name `policy` has now.
    fn ran_with(&self, policy: &EffectivePolicy) -> bool {
        policy.transform.as_ref() == Some(&self.program) && policy.display_name == self.display_name
    }

    /// The output, if it was run with the program and display name `policy` has now (`None`:
    /// the endpoint changed meanwhile, run it again).
    pub(super) async fn output_for(
        self,
        policy: &EffectivePolicy,
        transforms: &TransformPool,
    ) -> Option<Result<Output, TransformError>> {
        if !self.ran_with(policy) {
            return None;
        }
        match self.run {
            Run::Answered(answer) => answer,
            Run::Pending(run) => {
                if run.is_empty() {
                    // Not answered yet, and this attempt holds a slot while it waits.
                    transforms.hurry();
                }
                // `None` if the pool dropped the run (it stopped): the attempt runs it again.
                run.await.ok()
            }
        }
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
