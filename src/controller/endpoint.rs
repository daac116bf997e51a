//! Reconciles a WebhookEndpoint: validates it, provisions its signing Secret and delivery
//! ConfigMap, and reports `Ready` and `Suspended`.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde_json::json;
use tracing::{info, instrument, warn};

use super::children::{
    config_map_change, delivery_config_map, secret_bytes, signing_secret, ConfigMapChange,
};
use super::context::{now_rfc3339, object_key, rfc3339, Context, FIELD_MANAGER};
use super::error::{kube_error, Error};
use super::reconcile::{count_and_measure, Verdict};
use super::signing_key::{self, KeyChange};
use super::url_secret::url_from_problem;
use crate::api::conditions::{self, DesiredCondition, Reason, READY, SUSPENDED};
use crate::api::endpoint::{SigningStatus, WebhookEndpointSpec};
use crate::api::policy::{config_map_name, EffectivePolicy};
use crate::api::validation::{validate_endpoint, FieldError, SpecErrors};
use crate::api::{WebhookEndpoint, ROTATE_SECRET_ANNOTATION};
use crate::runtime::status_patch::status_patch;

const KIND: &str = "WebhookEndpoint";
/// Look again now and then even when nothing changed (drift of children is caught by watches).
const RESYNC: Duration = Duration::from_secs(3600);

/// Reconciles one endpoint.
#[instrument(skip_all, fields(namespace = endpoint.namespace().unwrap_or_default(), endpoint = %endpoint.name_any()))]
pub async fn reconcile(endpoint: Arc<WebhookEndpoint>, ctx: Arc<Context>) -> Result<Action, Error> {
    count_and_measure(&ctx, "endpoint", KIND, endpoint.as_ref(), |namespace| {
        reconcile_inner(&endpoint, &ctx, namespace)
    })
    .await
}

/// Backoff for transient errors; invalid specs never get here (they wait for a change).
pub fn error_policy(endpoint: Arc<WebhookEndpoint>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.requeue_after_error("endpoint", error, &object_key(endpoint.as_ref()))
}

/// The validation's result with the transform's compile error added, if it has one: the
/// language's message with line and column, so a typo shows at apply time, not as dead letters.
async fn with_transform_checked(
    validated: Result<EffectivePolicy, SpecErrors>,
    spec: &WebhookEndpointSpec,
) -> Result<EffectivePolicy, SpecErrors> {
    let Some(transform) = &spec.transform else {
        return validated;
    };
    let Some(problem) = crate::transform::check_isolated(transform.jq.clone()).await else {
        return validated;
    };
    let mut errors = validated.err().unwrap_or(SpecErrors(Vec::new()));
    errors.0.push(FieldError {
        field: "spec.transform.jq".into(),
        message: problem,
    });
    Err(errors)
}

/// Returns the action and whether the spec was valid.
async fn reconcile_inner(
    endpoint: &WebhookEndpoint,
    ctx: &Context,
    namespace: String,
) -> Result<(Action, Verdict), Error> {
    let name = endpoint.name_any();
    let endpoints: Api<WebhookEndpoint> = Api::namespaced(ctx.client.clone(), &namespace);

    let validated = validate_endpoint(&endpoint.spec, &name, ctx.allow_plain_http);
    let policy = match with_transform_checked(validated, &endpoint.spec).await {
        Ok(policy) => policy,
        Err(errors) => {
            let message = format!("invalid spec: {errors}");
            let already_reported = conditions::find(status_conditions(endpoint), READY)
                .is_some_and(|c| c.reason == Reason::InvalidSpec && c.message == message);
            if !already_reported {
                warn!(%message, "invalid endpoint spec");
                ctx.publish(
                    endpoint,
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
            apply_status(&endpoints, endpoint, &desired, None, None).await?;
            return Ok((Action::await_change(), Verdict::InvalidSpec));
        }
    };

    let (signing, requeue) = match &endpoint.spec.signing.secret_ref {
        None => ensure_generated_secret(endpoint, &namespace, &policy, ctx).await?,
        Some(user) => {
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
            let secret = secrets
                .get_opt(&user.name)
                .await
                .map_err(kube_error("reading", "Secret", &namespace, &user.name))?;
            let has_key = secret.as_ref().is_some_and(|s| {
                secret_bytes(s)
                    .get(&user.key)
                    .is_some_and(|v| !v.is_empty())
            });
            if !has_key {
                let message = format!(
                    "spec.signing.secretRef: Secret {}/{} with a non-empty key `{}` not found; create it, or remove secretRef to have one generated",
                    namespace, user.name, user.key
                );
                let desired = [DesiredCondition::new(
                    READY,
                    false,
                    Reason::SecretNotFound,
                    message,
                )];
                apply_status(&endpoints, endpoint, &desired, None, None).await?;
                // The Secret watch brings us back when it appears.
                return Ok((Action::requeue(RESYNC), Verdict::Applied));
            }
            let status = SigningStatus {
                secret_name: user.name.clone(),
                secret_key: user.key.clone(),
                source: "User".to_string(),
                last_rotation_time: None,
                previous_key_expiry_time: None,
            };
            (status, None)
        }
    };

    if let Some(reference) = &policy.url_from {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        let secret = secrets.get_opt(&reference.name).await.map_err(kube_error(
            "reading",
            "Secret",
            &namespace,
            &reference.name,
        ))?;
        let value = secret
            .as_ref()
            .and_then(|s| secret_bytes(s).remove(&reference.key));
        let problem = url_from_problem(
            &namespace,
            reference,
            value.as_deref(),
            ctx.allow_plain_http,
        );
        if let Some(condition) = problem {
            apply_status(&endpoints, endpoint, &[condition], None, None).await?;
            // The Secret watch brings us back when it changes.
            return Ok((Action::requeue(RESYNC), Verdict::Applied));
        }
    }

    ensure_config_map(endpoint, &namespace, &policy, ctx).await?;

    let suspended = endpoint.spec.suspend;
    let desired = [
        DesiredCondition::new(
            READY,
            true,
            Reason::Provisioned,
            format!(
                "signing Secret {} and delivery ConfigMap {} are in place",
                signing.secret_name,
                config_map_name(&name)
            ),
        ),
        if suspended {
            DesiredCondition::new(
                SUSPENDED,
                true,
                Reason::Suspended,
                "spec.suspend is true: deliveries are held until it is false",
            )
        } else {
            DesiredCondition::new(SUSPENDED, false, Reason::Active, "deliveries are sent")
        },
    ];
    apply_status(
        &endpoints,
        endpoint,
        &desired,
        Some(signing),
        Some(config_map_name(&name)),
    )
    .await?;
    Ok((
        Action::requeue(requeue.unwrap_or(RESYNC).min(RESYNC)),
        Verdict::Applied,
    ))
}

/// Applies the delivery ConfigMap when it is missing or differs, with an Event when it is
/// created or a hand edit is reverted.
async fn ensure_config_map(
    endpoint: &WebhookEndpoint,
    namespace: &str,
    policy: &EffectivePolicy,
    ctx: &Context,
) -> Result<(), Error> {
    let name = config_map_name(&endpoint.name_any());
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let existing = config_maps.get_opt(&name).await.map_err(kube_error(
        "reading",
        "ConfigMap",
        namespace,
        &name,
    ))?;
    let desired = delivery_config_map(endpoint, policy);
    let spec_reconciled = endpoint.metadata.generation.is_some()
        && endpoint.status.as_ref().and_then(|s| s.observed_generation)
            == endpoint.metadata.generation;
    let change = config_map_change(existing.as_ref(), &desired, spec_reconciled, FIELD_MANAGER);
    if change == ConfigMapChange::Unchanged {
        return Ok(());
    }
    // Server-side apply with force: fields a hand edit took over come back to us.
    config_maps
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(kube_error("applying", "ConfigMap", namespace, &name))?;
    info!(config_map = %name, ?change, "applied delivery ConfigMap");
    let (type_, reason, note) = match change {
        ConfigMapChange::Created => (
            EventType::Normal,
            "ConfigMapProvisioned",
            format!("created delivery ConfigMap {name} with the effective delivery policy"),
        ),
        ConfigMapChange::Restored => (
            EventType::Warning,
            "ConfigMapRestored",
            format!("reverted an edit of ConfigMap {name}; change the endpoint's spec instead"),
        ),
        // A spec change the user made themselves needs no Event.
        ConfigMapChange::Updated | ConfigMapChange::Unchanged => return Ok(()),
    };
    ctx.publish(endpoint, type_, reason, "Provision", note)
        .await;
    Ok(())
}

/// Creates the generated signing Secret once, and rotates it on request.
async fn ensure_generated_secret(
    endpoint: &WebhookEndpoint,
    namespace: &str,
    policy: &EffectivePolicy,
    ctx: &Context,
) -> Result<(SigningStatus, Option<Duration>), Error> {
    let secret_name = policy.signing.secret_name.clone();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let existing = secrets.get_opt(&secret_name).await.map_err(kube_error(
        "reading",
        "Secret",
        namespace,
        &secret_name,
    ))?;
    let state = existing
        .as_ref()
        .and_then(|s| signing_key::from_secret(&secret_bytes(s), s.annotations()));
    let requested = endpoint
        .annotations()
        .get(ROTATE_SECRET_ANNOTATION)
        .map(String::as_str);
    let now = jiff::Timestamp::now();
    let grace = Duration::from_millis(policy.signing.rotation_grace_period_ms);
    let (next, change) = signing_key::plan(state.as_ref(), requested, now, grace, || {
        signing_key::generate_key(&mut rand::rng())
    });
    let (data, annotations) = signing_key::to_secret(&next);
    let desired = signing_secret(endpoint, data, annotations);
    match (&existing, change) {
        (_, KeyChange::Unchanged) => {}
        (None, _) => {
            secrets
                .create(&PostParams::default(), &desired)
                .await
                .map_err(kube_error("creating", "Secret", namespace, &secret_name))?;
            info!(secret = %secret_name, "generated signing Secret");
            ctx.publish(
                endpoint,
                EventType::Normal,
                "SecretProvisioned",
                "Provision",
                format!("generated signing Secret {secret_name}"),
            )
            .await;
        }
        (Some(current), _) => {
            // Replace with the resourceVersion we read: a concurrent writer makes this fail
            // (409) and the next reconcile starts over, so a key is never rotated twice.
            let mut replacement = desired;
            replacement.metadata.resource_version = current.resource_version();
            secrets
                .replace(&secret_name, &PostParams::default(), &replacement)
                .await
                .map_err(kube_error("updating", "Secret", namespace, &secret_name))?;
            let note = match change {
                KeyChange::Rotated => format!(
                    "rotated the signing key in {secret_name}; the previous key keeps signing until {}",
                    next.previous_expires_at.map(rfc3339).unwrap_or_default()
                ),
                KeyChange::PreviousExpired => format!("the previous signing key in {secret_name} expired and was removed"),
                _ => format!("restored the signing key in {secret_name}"),
            };
            info!(secret = %secret_name, ?change, "updated signing Secret");
            ctx.publish(endpoint, EventType::Normal, "SecretRotated", "Rotate", note)
                .await;
        }
    }
    let status = SigningStatus {
        secret_name,
        secret_key: policy.signing.secret_key.clone(),
        source: "Generated".to_string(),
        last_rotation_time: next.rotated_at.map(rfc3339),
        previous_key_expiry_time: next.previous_expires_at.map(rfc3339),
    };
    Ok((status, signing_key::next_check(&next, now)))
}

fn status_conditions(endpoint: &WebhookEndpoint) -> &[conditions::Condition] {
    endpoint
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default()
}

/// Applies the controller's part of the status (server-side apply, own field manager).
async fn apply_status(
    api: &Api<WebhookEndpoint>,
    endpoint: &WebhookEndpoint,
    desired: &[DesiredCondition],
    signing: Option<SigningStatus>,
    config_map: Option<String>,
) -> Result<(), Error> {
    let generation = endpoint.metadata.generation;
    let merged = conditions::merge(
        status_conditions(endpoint),
        desired,
        generation,
        &now_rfc3339(),
    );
    // Only the conditions this controller owns go into its apply.
    let owned: Vec<_> = merged
        .into_iter()
        .filter(|c| desired.iter().any(|d| d.type_ == c.type_))
        .collect();
    // Keep what we reported before when this round has nothing new (e.g. an invalid spec).
    let previous = endpoint.status.as_ref();
    let signing = signing.or_else(|| previous.and_then(|s| s.signing.clone()));
    let config_map = config_map.or_else(|| previous.and_then(|s| s.delivery_config_map.clone()));
    let patch = status_patch::<WebhookEndpoint>(&json!({
        "observedGeneration": generation,
        "conditions": owned,
        "signing": signing,
        "deliveryConfigMap": config_map,
    }));
    let name = endpoint.name_any();
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(kube_error(
        "updating status of",
        KIND,
        &endpoint.namespace().unwrap_or_default(),
        &name,
    ))?;
    Ok(())
}
