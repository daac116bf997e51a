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
use crate::store::{EventQuery, EventRecord, EventStatus, EventTypePattern, PageRequest};

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

/// Events at most in a search by type.
const FOUND: usize = 100;

pub fn events_table(events: &[EventRecord], now: Timestamp) -> Markup {
    html! {
        div.table-wrap { table #events {
            thead { tr { th scope="col" { "When" } th scope="col" { "Namespace" } th scope="col" { "Type" } th scope="col" { "Event" } } }
            tbody {
                @for e in events { tr {
                    td { (relative(e.created_at, now)) }
                    td { (e.namespace) }
                    td { code { (e.event_type) } }
                    td { a href=(format!("/ui/events?q={}", e.event_id)) { (e.event_id) } }
                } }
                @if events.is_empty() { tr { td colspan="4" { "No events found." } } }
            }
        } }
    }
}

/// Events of a type (exact, `prefix.*` or `*`), newest first, in the readable namespaces.
async fn by_type(
    dashboard: &Dashboard,
    readable: &std::collections::BTreeSet<String>,
    q: &str,
    now: Timestamp,
) -> Result<Markup, PageError> {
    if !crate::api::event_types::is_valid_pattern(q) {
        return Ok(html! {
            p.notice.error role="alert" {
                code { (q) } " is neither an event id (" code { "evt_…" } ") nor an event type or pattern such as "
                code { "user.created" } ", " code { "pitch.*" } " or " code { "*" } "."
            }
        });
    }
    let mut found = Vec::new();
    for namespace in readable {
        let page = dashboard
            .shared
            .store
            .find_events(EventQuery {
                namespace: namespace.clone(),
                event_type: EventTypePattern::parse(q),
                page: PageRequest::first(FOUND),
            })
            .await?;
        found.extend(page.items);
    }
    found.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then(b.event_id.cmp(&a.event_id))
    });
    found.truncate(FOUND);
    Ok(events_table(&found, now))
}
