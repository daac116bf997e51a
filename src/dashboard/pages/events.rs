//! Event search: by event id (`evt_…`), or by type (`user.created`, `pitch.*`) in the namespaces
//! where the user may list endpoints.
use axum::extract::{Query, State};
use jiff::Timestamp;
use maud::{html, Markup};
use serde::Deserialize;

use super::relative;
use crate::dashboard::error::PageError;
use crate::dashboard::layout::{self, Nav};
use crate::dashboard::user::User;
use crate::dashboard::Dashboard;
use crate::store::EventStatus;

#[derive(Debug, Default, Deserialize)]
pub struct SearchParams {
    #[serde(default)]
    q: String,
}

fn pretty(data: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(data).into_owned())
}

fn event_detail(status: &EventStatus, now: Timestamp) -> Markup {
    let event = &status.event;
    html! {
        section #event-detail {
            h2 { code { (event.event_id) } }
            dl.facts {
                dt { "Type" } dd { code { (event.event_type) } }
                dt { "Namespace" } dd { (event.namespace) }
                dt { "Created" } dd { (relative(event.created_at, now)) " (" (event.created_at.to_string()) ")" }
            }
            h3 { "Deliveries" }
            div.table-wrap { table {
                thead { tr { th scope="col" { "Endpoint" } th scope="col" { "State" } th.num scope="col" { "Attempts" } th scope="col" { "Last error" } } }
                tbody { @for d in &status.deliveries { tr {
                    td { a href=(format!("/ui/namespaces/{}/endpoints/{}", d.endpoint.namespace, d.endpoint.name)) { (d.endpoint.name) } }
                    td { (d.state.as_str()) @if let Some(replay) = &d.replay_id { " (replay " (replay) ")" } }
                    td.num { (d.attempts) }
                    td { (d.last_error.as_deref().unwrap_or("")) }
                } } }
            } }
            h3 { "Data" }
            pre { (pretty(&event.data)) }
        }
    }
}

async fn search(
    dashboard: &Dashboard,
    user: &User,
    q: &str,
    now: Timestamp,
) -> Result<Markup, PageError> {
    if q.is_empty() {
        return Ok(html! {});
    }
    let readable = dashboard.readable_namespaces(user).await?;
    if q.starts_with("evt_") {
        let found = dashboard.shared.store.event_status(q).await?;
        return Ok(match found {
            Some(status) if readable.contains(&status.event.namespace) => {
                event_detail(&status, now)
            }
            _ => {
                html! { p.notice #no-event { "No event " code { (q) } " in a namespace you may read." } }
            }
        });
    }
    by_type(dashboard, &readable, q, now).await
}

/// `GET /ui/events?q=`.
pub async fn page(
    State(dashboard): State<Dashboard>,
    Query(params): Query<SearchParams>,
    user: User,
) -> Result<Markup, PageError> {
    let q = params.q.trim().to_owned();
    let now = Timestamp::now();
    let results = search(&dashboard, &user, &q, now).await?;
    Ok(layout::page(
        &user,
        Nav::Events,
        "Events",
        html! {
            form.actions method="get" action="/ui/events" role="search" {
                div {
                    label for="q" { "Event id or type (" code { "evt_…" } ", " code { "user.created" } ", " code { "pitch.*" } ")" }
                    input #q type="search" name="q" value=(q) size="40";
                }
                button type="submit" { "Search" }
            }
            (results)
        },
    ))
}

/// Events of a type (exact, `prefix.*` or `*`), newest first, in the readable namespaces.
pub async fn by_type(
    _dashboard: &Dashboard,
    _readable: &std::collections::BTreeSet<String>,
    q: &str,
    _now: Timestamp,
) -> Result<Markup, PageError> {
    Ok(html! { p.notice { "Search by type (" code { (q) } ") needs the store's event index." } })
}
