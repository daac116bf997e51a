//! A WebhookReplay's progress, read as the user; it refreshes itself until the replay is done.
use axum::extract::{Path, Query, State};
use jiff::Timestamp;
use kube::api::Api;
use maud::{html, Markup};
use serde::Deserialize;

use super::{ago, condition_badge};
use crate::api::conditions::{find, ConditionStatus};
use crate::api::replay::ReplayPhase;
use crate::api::WebhookReplay;
use crate::dashboard::error::PageError;
use crate::dashboard::layout::{self, Nav};
use crate::dashboard::user::User;
use crate::dashboard::Dashboard;

#[derive(Debug, Default, Deserialize)]
pub struct FragmentParams {
    /// Set by the self-refresh: the progress block alone.
    fragment: Option<String>,
}

fn progress(replay: &WebhookReplay, href: &str, now: Timestamp) -> Markup {
    let status = replay.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let finished = matches!(phase, ReplayPhase::Complete | ReplayPhase::Failed);
    html! {
        div #replay-progress data-phase=(format!("{phase:?}"))
            hx-get=[(!finished).then(|| format!("{href}?fragment=1"))]
            hx-trigger=[(!finished).then_some("every 2s")] hx-swap="outerHTML" {
            dl.facts {
                dt { "Phase" } dd { strong { (format!("{phase:?}")) } }
                dt { "Complete" } dd { (condition_badge(find(&status.conditions, "Complete"), ConditionStatus::True)) }
                dt { "Matched" } dd { (status.matched) }
                dt { "Redelivered" } dd { (status.redelivered) }
                dt { "Failed" } dd { (status.failed) }
                dt { "Started" } dd { (ago(status.start_time.as_deref(), now)) }
                dt { "Completed" } dd { (ago(status.completion_time.as_deref(), now)) }
            }
            @if let Some(c) = find(&status.conditions, "Complete") { p { (c.message) } }
        }
    }
}

/// `GET /ui/namespaces/{ns}/replays/{name}`.
pub async fn page(
    State(dashboard): State<Dashboard>,
    Path((namespace, name)): Path<(String, String)>,
    Query(params): Query<FragmentParams>,
    user: User,
) -> Result<Markup, PageError> {
    let api: Api<WebhookReplay> = Api::namespaced(user.client(&dashboard)?, &namespace);
    let replay = api.get(&name).await.map_err(|e| match e {
        kube::Error::Api(status) if status.code == 404 || status.code == 403 => {
            PageError::NotFound(format!(
                "WebhookReplay `{name}` in `{namespace}` was not found, or you may not get it"
            ))
        }
        other => PageError::Unavailable(format!("reading WebhookReplay {name} failed: {other}")),
    })?;
    let href = format!("/ui/namespaces/{namespace}/replays/{name}");
    let now = Timestamp::now();
    if params.fragment.is_some() {
        return Ok(progress(&replay, &href, now));
    }
    let endpoint = &replay.spec.endpoint_ref.name;
    Ok(layout::page(
        &user,
        Nav::Endpoints,
        &format!("Replay {namespace}/{name}"),
        html! {
            p {
                "Redelivers dead letters of "
                a href=(format!("/ui/namespaces/{namespace}/endpoints/{endpoint}")) { (endpoint) }
                " from " (replay.spec.from)
                @if let Some(to) = &replay.spec.to { " to " (to) }
                "."
            }
            (progress(&replay, &href, now))
        },
    ))
}
