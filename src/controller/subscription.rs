//! Reconciles a WebhookSubscription: resolves its endpoints and reports them in status.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde_json::json;
use tracing::instrument;

use super::context::{now_rfc3339, object_key, Context, FIELD_MANAGER};
use super::error::{kube_error, Error};
use super::reconcile::{count_and_measure, Verdict};
use crate::api::conditions::{self, DesiredCondition, Reason, READY, SUSPENDED};
use crate::api::validation::validate_subscription;
use crate::api::{selector, WebhookEndpoint, WebhookSubscription, WebhookSubscriptionSpec};
use crate::runtime::status_patch::status_patch;

const KIND: &str = "WebhookSubscription";
const RESYNC: Duration = Duration::from_secs(300);

/// The names of the endpoints a subscription resolves to, sorted. `endpoints` are the
/// endpoints of the subscription's namespace (name, labels).
pub fn resolve<'a>(
    spec: &WebhookSubscriptionSpec,
    endpoints: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
) -> Vec<String> {
    let mut names: Vec<String> = endpoints
        .into_iter()
        .filter(
            |(name, labels)| match (&spec.endpoint_ref, &spec.endpoint_selector) {
                (Some(reference), None) => reference.name == *name,
                (None, Some(selector)) => selector::matches(selector, labels),
                _ => false,
            },
        )
        .map(|(name, _)| name.to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[instrument(skip_all, fields(namespace = subscription.namespace().unwrap_or_default(), subscription = %subscription.name_any()))]
pub async fn reconcile(
    subscription: Arc<WebhookSubscription>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    count_and_measure(
        &ctx,
        "subscription",
        KIND,
        subscription.as_ref(),
        |namespace| reconcile_inner(&subscription, &ctx, namespace),
    )
    .await
}

pub fn error_policy(
    subscription: Arc<WebhookSubscription>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.requeue_after_error("subscription", error, &object_key(subscription.as_ref()))
}

async fn reconcile_inner(
    subscription: &WebhookSubscription,
    ctx: &Context,
    namespace: String,
) -> Result<(Action, Verdict), Error> {
    let api: Api<WebhookSubscription> = Api::namespaced(ctx.client.clone(), &namespace);
    let current = subscription
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();

    if let Err(errors) = validate_subscription(&subscription.spec) {
        let message = format!("invalid spec: {errors}");
        let already = conditions::find(current, READY)
            .is_some_and(|c| c.reason == Reason::InvalidSpec && c.message == message);
        if !already {
            ctx.publish(
                subscription,
                EventType::Warning,
                "InvalidSpec",
                "Validate",
                message.clone(),
            )
            .await;
        }
        let desired = [DesiredCondition::new(
            READY,
            false,
            Reason::InvalidSpec,
            message,
        )];
        apply_status(&api, subscription, &desired, &[]).await?;
        return Ok((Action::await_change(), Verdict::InvalidSpec));
    }

    // Read the endpoints (metadata only) from the API server rather than from a cache, so a
    // label change seen by the trigger is always seen here too. An `endpointRef` reads its one
    // endpoint: listing the namespace for every subscription is quadratic (10,000 subscriptions
    // each listing 10,000 endpoints took etcd to 14 GB and timed the API server out).
    let endpoints: Api<WebhookEndpoint> = Api::namespaced(ctx.client.clone(), &namespace);
    let in_namespace = match &subscription.spec.endpoint_ref {
        Some(reference) => endpoints
            .get_metadata_opt(&reference.name)
            .await
            .map_err(kube_error(
                "reading",
                "WebhookEndpoint",
                &namespace,
                &reference.name,
            ))?
            .into_iter()
            .collect(),
        None => {
            endpoints
                .list_metadata(&ListParams::default())
                .await
                .map_err(kube_error("listing", "WebhookEndpoint", &namespace, "*"))?
                .items
        }
    };
    let resolved = resolve(
        &subscription.spec,
        in_namespace
            .iter()
            .filter(|e| e.metadata.deletion_timestamp.is_none())
            .map(|e| (e.metadata.name.as_deref().unwrap_or_default(), e.labels())),
    );
    let ready = if resolved.is_empty() {
        let wanted = match (
            &subscription.spec.endpoint_ref,
            &subscription.spec.endpoint_selector,
        ) {
            (Some(reference), _) => {
                format!("no WebhookEndpoint named {} in {namespace}", reference.name)
            }
            _ => format!("no WebhookEndpoint in {namespace} matches spec.endpointSelector"),
        };
        DesiredCondition::new(READY, false, Reason::EndpointNotFound, wanted)
    } else {
        DesiredCondition::new(
            READY,
            true,
            Reason::Resolved,
            format!(
                "routes {} to {} endpoint(s)",
                subscription.spec.event_types.join(", "),
                resolved.len()
            ),
        )
    };
    let suspended = if subscription.spec.suspend {
        DesiredCondition::new(
            SUSPENDED,
            true,
            Reason::Suspended,
            "spec.suspend is true: events are not routed through this subscription",
        )
    } else {
        DesiredCondition::new(
            SUSPENDED,
            false,
            Reason::Active,
            "events are routed through this subscription",
        )
    };
    apply_status(&api, subscription, &[ready, suspended], &resolved).await?;
    Ok((Action::requeue(RESYNC), Verdict::Applied))
}

async fn apply_status(
    api: &Api<WebhookSubscription>,
    subscription: &WebhookSubscription,
    desired: &[DesiredCondition],
    endpoints: &[String],
) -> Result<(), Error> {
    let generation = subscription.metadata.generation;
    let current = subscription
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let merged = conditions::merge(current, desired, generation, &now_rfc3339());
    let patch = status_patch::<WebhookSubscription>(&json!({
        "observedGeneration": generation,
        "conditions": merged,
        "endpoints": endpoints,
    }));
    let name = subscription.name_any();
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(kube_error(
        "updating status of",
        KIND,
        &subscription.namespace().unwrap_or_default(),
        &name,
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::references::LocalObjectReference;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn labels(team: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("team".to_string(), team.to_string())])
    }

    #[test]
    fn resolves_by_name_and_by_labels() {
        let crm = labels("crm");
        let mail = labels("mail");
        let endpoints = [("b-crm", &crm), ("a-crm", &crm), ("mail", &mail)];
        let by_name = WebhookSubscriptionSpec {
            endpoint_ref: Some(LocalObjectReference {
                name: "mail".into(),
            }),
            endpoint_selector: None,
            event_types: vec!["*".into()],
            suspend: false,
        };
        assert_eq!(resolve(&by_name, endpoints), ["mail"]);
        let by_labels = WebhookSubscriptionSpec {
            endpoint_ref: None,
            endpoint_selector: Some(LabelSelector {
                match_labels: Some(labels("crm")),
                ..Default::default()
            }),
            ..by_name.clone()
        };
        assert_eq!(resolve(&by_labels, endpoints), ["a-crm", "b-crm"]);
        let missing = WebhookSubscriptionSpec {
            endpoint_ref: Some(LocalObjectReference {
                name: "nope".into(),
            }),
            ..by_name
        };
        assert!(resolve(&missing, endpoints).is_empty());
    }
}
