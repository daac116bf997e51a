//! The one wrapper every reconciler runs in (in the spirit of controller-rs's
//! `count_and_measure`): it reads the object's namespace (a namespaced kind without one is an
//! error, not a panic), counts the reconcile by result, times it, and clears the object's error
//! backoff when it succeeds.
use std::future::Future;
use std::time::Instant;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::context::{object_key, Context};
use super::error::Error;
use super::metrics::{ControllerLabel, ReconcileLabels};

/// What a reconciler's body reports besides its action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The spec was valid and acted upon.
    Applied,
    /// The spec is invalid: reported in status, nothing provisioned, no retry until it changes.
    InvalidSpec,
}

impl Verdict {
    /// The `result` label of the reconcile counter.
    fn label(result: &Result<(Action, Verdict), Error>) -> &'static str {
        match result {
            Ok((_, Verdict::Applied)) => "ok",
            Ok((_, Verdict::InvalidSpec)) => "invalid_spec",
            Err(_) => "error",
        }
    }
}

/// Runs `body(namespace)` for `object` of the `controller` ("endpoint", "subscription").
pub async fn count_and_measure<K, F, Fut>(
    ctx: &Context,
    controller: &'static str,
    kind: &'static str,
    object: &K,
    body: F,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>,
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<(Action, Verdict), Error>>,
{
    let started = Instant::now();
    let result = match object.namespace() {
        Some(namespace) => body(namespace).await,
        None => Err(Error::MissingNamespace {
            kind,
            name: object.name_any(),
        }),
    };
    ctx.metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            controller,
            result: Verdict::label(&result),
        })
        .inc();
    ctx.metrics
        .duration
        .get_or_create(&ControllerLabel { controller })
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.record_success(&object_key(object));
    }
    result.map(|(action, _)| action)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_have_bounded_labels() {
        let ok = Ok((Action::await_change(), Verdict::Applied));
        let invalid = Ok((Action::await_change(), Verdict::InvalidSpec));
        let failed = Err(Error::MissingNamespace {
            kind: "WebhookEndpoint",
            name: "x".into(),
        });
        assert_eq!(Verdict::label(&ok), "ok");
        assert_eq!(Verdict::label(&invalid), "invalid_spec");
        assert_eq!(Verdict::label(&failed), "error");
    }
}
