//! What a user can do from an endpoint's page. Suspend, resume, rotate and replay are requests to
//! the Kubernetes API made with the user's own token (RBAC, admission and the audit log see that
//! user); a test delivery needs `update` on the endpoint, as the HTTP API's test route does.
//! Each answers an HTML fragment that says what was done.
use axum::extract::{Path, State};
use axum::Form;
use jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use super::error::PageError;
use super::gitops::{spec_owners, DASHBOARD_MANAGER};
use super::user::User;
use super::Dashboard;
use crate::api::references::LocalObjectReference;
use crate::api::replay::ReplayOutcome;
use crate::api::{WebhookEndpoint, WebhookReplay, WebhookReplaySpec, ROTATE_SECRET_ANNOTATION};
use crate::dispatcher::send_test;
use crate::security::SecurityKind;

fn done(message: Markup) -> Markup {
    html! { div.notice.success role="status" { (message) } }
}

/// The Kubernetes API's refusal, in its own words.
fn refused(action: &str, error: kube::Error) -> PageError {
    match error {
        kube::Error::Api(status) if status.code == 403 || status.code == 422 => {
            PageError::Refused(format!(
                "{action} was refused by the Kubernetes API: {}",
                status.message
            ))
        }
        kube::Error::Api(status) if status.code == 404 => {
            PageError::NotFound(format!("{action}: {}", status.message))
        }
        other => PageError::Unavailable(format!("{action} failed: {other}")),
    }
}

fn endpoints_api(
    dashboard: &Dashboard,
    user: &User,
    namespace: &str,
) -> Result<Api<WebhookEndpoint>, PageError> {
    Ok(Api::namespaced(user.client(dashboard)?, namespace))
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(DASHBOARD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// `POST …/test`: a signed `webhook.test` delivery, sent now; the result as recorded in
/// `status.lastTest`.
pub async fn test_delivery(
    State(dashboard): State<Dashboard>,
    Path((namespace, name)): Path<(String, String)>,
    user: User,
) -> Result<Markup, PageError> {
    dashboard.endpoint_for(&user, &namespace, &name).await?;
    if !dashboard.may(&user, "update", &namespace, &name).await? {
        return Err(PageError::Refused(format!(
            "a test delivery needs `update` on webhookendpoints `{name}` in `{namespace}`, which {} does not have",
            user.name()
        )));
    }
    let nonce = format!("ui-{}", ulid::Ulid::new().to_string().to_lowercase());
    let result = send_test(&dashboard.shared, &namespace, &name, nonce, None)
        .await
        .map_err(|e| PageError::Unavailable(format!("the test delivery could not be sent: {e}")))?;
    dashboard.shared.security.record(
        user.did(
            SecurityKind::TestDelivery,
            format!("test delivery {} sent from the dashboard", result.nonce),
        )
        .endpoint(&namespace, &name),
    );
    let ok = result.error.is_none() && result.status_code.is_some_and(|c| (200..300).contains(&c));
    Ok(html! {
        div class=(if ok { "notice success" } else { "notice error" }) role="status" #test-result {
            strong { @if ok { "Test delivered" } @else { "Test failed" } }
            ": "
            @if let Some(code) = result.status_code { "HTTP " (code) }
            @if let Some(ms) = result.latency_ms { " in " (ms) " ms" }
            @if let Some(error) = &result.error { " — " (error) }
            " (nonce " code { (result.nonce) } ", recorded in status.lastTest)"
        }
    })
}

async fn set_suspend(
    dashboard: Dashboard,
    namespace: String,
    name: String,
    user: User,
    suspend: bool,
) -> Result<Markup, PageError> {
    dashboard.endpoint_for(&user, &namespace, &name).await?;
    let api = endpoints_api(&dashboard, &user, &namespace)?;
    let action = if suspend { "Suspending" } else { "Resuming" };
    let patched = api
        .patch(
            &name,
            &params(),
            &Patch::Merge(json!({ "spec": { "suspend": suspend } })),
        )
        .await
        .map_err(|e| refused(&format!("{action} {name}"), e))?;
    let kind = if suspend {
        SecurityKind::EndpointSuspended
    } else {
        SecurityKind::EndpointResumed
    };
    let detail = format!("spec.suspend set to {suspend} from the dashboard");
    dashboard
        .shared
        .security
        .record(user.did(kind, detail).endpoint(&namespace, &name));
    let owners = spec_owners(patched.managed_fields(), "suspend");
    Ok(html! {
        (done(html! {
            @if suspend { "Suspended " } @else { "Resumed " }
            code { (name) } ": spec.suspend is now " code { (suspend) } " (changed as " (user.name()) ")."
        }))
        @if owners.any() {
            div.notice.warning role="alert" {
                "This endpoint's spec is also managed by " (owners.managers.join(", "))
                ". A GitOps tool or the next apply may revert this change; change it in its source too."
            }
        }
    })
}

/// `POST …/suspend`.
pub async fn suspend(
    State(dashboard): State<Dashboard>,
    Path((namespace, name)): Path<(String, String)>,
    user: User,
) -> Result<Markup, PageError> {
    set_suspend(dashboard, namespace, name, user, true).await
}

/// `POST …/resume`.
pub async fn resume(
    State(dashboard): State<Dashboard>,
    Path((namespace, name)): Path<(String, String)>,
    user: User,
) -> Result<Markup, PageError> {
    set_suspend(dashboard, namespace, name, user, false).await
}

/// `POST …/rotate`: a new value of the rotate annotation; the controller rotates the key.
pub async fn rotate(
    State(dashboard): State<Dashboard>,
    Path((namespace, name)): Path<(String, String)>,
    user: User,
) -> Result<Markup, PageError> {
    dashboard.endpoint_for(&user, &namespace, &name).await?;
    let api = endpoints_api(&dashboard, &user, &namespace)?;
    let token = format!("ui-{}", ulid::Ulid::new().to_string().to_lowercase());
    api.patch(
        &name,
        &params(),
        &Patch::Merge(
            json!({ "metadata": { "annotations": { ROTATE_SECRET_ANNOTATION: token } } }),
        ),
    )
    .await
    .map_err(|e| refused(&format!("Rotating the signing secret of {name}"), e))?;
    dashboard.shared.security.record(
        user.did(
            SecurityKind::SecretRotated,
            format!("signing secret rotation requested from the dashboard ({token})"),
        )
        .endpoint(&namespace, &name),
    );
    Ok(done(html! {
        "Rotation requested: annotation " code { (ROTATE_SECRET_ANNOTATION) "=" (token) }
        ". The controller generates a new key; the previous one keeps signing for the grace period "
        "(see status.signing and the endpoint's Events)."
    }))
}

#[derive(Deserialize)]
pub struct ReplayForm {
    /// `1h`, `6h`, `24h`, `168h` (what the duration parser takes), or empty with `from`.
    #[serde(default)]
    since: String,
    /// `datetime-local` values (UTC), when `since` is empty.
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    /// Event types, comma separated (`user.*`); all when empty.
    #[serde(default)]
    types: String,
}

fn parse_local(value: &str, field: &str) -> Result<Timestamp, PageError> {
    let civil: jiff::civil::DateTime = value.parse().map_err(|e| {
        PageError::BadRequest(format!("{field}: `{value}` is not a date and time: {e}"))
    })?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp())
        .map_err(|e| PageError::BadRequest(format!("{field}: {e}")))
}

/// The replay's range from the form.
fn range(form: &ReplayForm, now: Timestamp) -> Result<(Timestamp, Option<Timestamp>), PageError> {
    if !form.since.is_empty() {
        let span = crate::api::duration::parse(&form.since)
            .map_err(|e| PageError::BadRequest(format!("since: {e}")))?;
        let from = now
            .checked_sub(
                SignedDuration::try_from(span).map_err(|e| PageError::BadRequest(e.to_string()))?,
            )
            .map_err(|e| PageError::BadRequest(format!("since: {e}")))?;
        return Ok((from, None));
    }
    if form.from.is_empty() {
        return Err(PageError::BadRequest(
            "choose a range: `since`, or `from` (and optionally `to`)".into(),
        ));
    }
    let from = parse_local(&form.from, "from")?;
    let to = (!form.to.is_empty())
        .then(|| parse_local(&form.to, "to"))
        .transpose()?;
    if to.is_some_and(|to| to <= from) {
        return Err(PageError::BadRequest("`to` must be after `from`".into()));
    }
    Ok((from, to))
}

/// `POST …/replay`: creates a WebhookReplay of the endpoint's dead letters in the range, so the
/// record stays in Kubernetes; the fragment follows its progress.
pub async fn replay(
    State(dashboard): State<Dashboard>,
    Path((namespace, name)): Path<(String, String)>,
    user: User,
    Form(form): Form<ReplayForm>,
) -> Result<Markup, PageError> {
    dashboard.endpoint_for(&user, &namespace, &name).await?;
    let (from, to) = range(&form, Timestamp::now())?;
    let event_types: Vec<String> = form
        .types
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let replay = WebhookReplay {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-ui-")),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: WebhookReplaySpec {
            endpoint_ref: LocalObjectReference { name: name.clone() },
            from: from.to_string(),
            to: to.map(|t| t.to_string()),
            event_types,
            outcomes: vec![ReplayOutcome::DeadLettered],
        },
        status: None,
    };
    let api: Api<WebhookReplay> = Api::namespaced(user.client(&dashboard)?, &namespace);
    let created = api
        .create(
            &PostParams {
                field_manager: Some(DASHBOARD_MANAGER.to_owned()),
                ..PostParams::default()
            },
            &replay,
        )
        .await
        .map_err(|e| refused(&format!("Creating a WebhookReplay for {name}"), e))?;
    let replay_name = created.name_any();
    dashboard.shared.security.record(
        user.did(
            SecurityKind::ReplayCreated,
            format!("WebhookReplay {replay_name} created from the dashboard (from {from})"),
        )
        .endpoint(&namespace, &name),
    );
    let href = format!("/ui/namespaces/{namespace}/replays/{replay_name}");
    Ok(html! {
        (done(html! {
            "Created WebhookReplay " a href=(href) { (replay_name) } " for dead letters since " (from.to_string()) "."
        }))
        div hx-get=(format!("{href}?fragment=1")) hx-trigger="load" hx-swap="outerHTML" {}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(since: &str, from: &str, to: &str) -> ReplayForm {
        ReplayForm {
            since: since.into(),
            from: from.into(),
            to: to.into(),
            types: String::new(),
        }
    }

    #[test]
    fn replay_ranges() {
        let now: Timestamp = "2026-12-05T12:00:00Z".parse().unwrap();
        assert_eq!(
            range(&form("2h", "", ""), now).unwrap(),
            ("2026-12-05T10:00:00Z".parse().unwrap(), None)
        );
        assert_eq!(
            range(&form("", "2026-12-01T08:30", "2026-12-01T09:00"), now).unwrap(),
            (
                "2026-12-01T08:30:00Z".parse().unwrap(),
                Some("2026-12-01T09:00:00Z".parse().unwrap())
            )
        );
        assert!(range(&form("", "", ""), now).is_err());
        assert!(range(&form("", "2026-12-01T09:00", "2026-12-01T08:00"), now).is_err());
        assert!(range(&form("soon", "", ""), now)
            .unwrap_err()
            .to_string()
            .contains("since"));
    }
}
