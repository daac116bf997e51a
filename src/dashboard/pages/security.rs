//! The security log: refused destinations, authentication failures, logins and the actions
//! users took, and the alerts of suspicious activity; rows of the namespaces where the user may
//! list endpoints, and rows of no namespace only for users who may list them cluster-wide.
use axum::extract::{Query, State};
use jiff::Timestamp;
use maud::{html, Markup};
use serde::Deserialize;

use super::relative;
use crate::dashboard::error::PageError;
use crate::dashboard::layout::{self, Nav};
use crate::dashboard::user::User;
use crate::dashboard::Dashboard;
use crate::dispatcher::http::auth::Access;
use crate::security::{SecurityKind, SecurityRecord};
use crate::store::{PageRequest, SecurityQuery};

/// Rows shown at most.
const ROWS: usize = 200;

#[derive(Debug, Default, Deserialize)]
pub struct SecurityParams {
    /// One kind (`destination_refused`, …); all when empty.
    #[serde(default)]
    kind: String,
}

fn rows(records: &[SecurityRecord], now: Timestamp) -> Markup {
    html! {
        div.table-wrap { table #security-events {
            thead { tr {
                th scope="col" { "When" } th scope="col" { "Kind" } th scope="col" { "Namespace" }
                th scope="col" { "Endpoint" } th scope="col" { "User" } th scope="col" { "Source" }
                th scope="col" { "Address" } th scope="col" { "Detail" }
            } }
            tbody {
                @for r in records {
                    @let e = &r.event;
                    tr {
                        td { time datetime=(r.at.to_string()) title=(r.at.to_string()) { (relative(r.at, now)) } }
                        td { span class=(if e.kind.is_alert() { "badge bad" } else { "badge muted" }) { (e.kind.as_str()) } }
                        td { (e.namespace.as_deref().unwrap_or("—")) }
                        td {
                            @match (&e.namespace, &e.endpoint) {
                                (Some(ns), Some(name)) => a href=(format!("/ui/namespaces/{ns}/endpoints/{name}")) { (name) },
                                (_, Some(name)) => (name),
                                _ => "—",
                            }
                        }
                        td { (e.user.as_deref().unwrap_or("—")) }
                        td { (e.source.as_deref().unwrap_or("—")) }
                        td { (e.address.as_deref().unwrap_or("—")) }
                        td { (e.detail) }
                    }
                }
                @if records.is_empty() { tr { td colspan="8" { "Nothing recorded that you may see." } } }
            }
        } }
    }
}

async fn records(
    dashboard: &Dashboard,
    user: &User,
    kinds: Vec<SecurityKind>,
) -> Result<Vec<SecurityRecord>, PageError> {
    let store = &dashboard.shared.store;
    let everything = dashboard
        .reviewer
        .allows(
            &user.identity,
            &Access::new("", "list", "webhookendpoints", None),
        )
        .await?;
    if everything {
        let page = store
            .security_events(SecurityQuery {
                namespace: None,
                kinds,
                page: PageRequest::first(ROWS),
            })
            .await?;
        return Ok(page.items);
    }
    let mut all = Vec::new();
    for namespace in dashboard.readable_namespaces(user).await? {
        let page = store
            .security_events(SecurityQuery {
                namespace: Some(namespace),
                kinds: kinds.clone(),
                page: PageRequest::first(ROWS),
            })
            .await?;
        all.extend(page.items);
    }
    all.sort_by(|a, b| b.at.cmp(&a.at).then(b.id.cmp(&a.id)));
    all.truncate(ROWS);
    Ok(all)
}

/// `GET /ui/security?kind=`.
pub async fn page(
    State(dashboard): State<Dashboard>,
    Query(params): Query<SecurityParams>,
    user: User,
) -> Result<Markup, PageError> {
    let kinds = match params.kind.as_str() {
        "" => Vec::new(),
        kind => vec![SecurityKind::parse(kind).ok_or_else(|| {
            PageError::BadRequest(format!("kind: `{kind}` is not a security log kind"))
        })?],
    };
    let found = records(&dashboard, &user, kinds).await?;
    let now = Timestamp::now();
    Ok(layout::page(
        &user,
        Nav::Security,
        "Security log",
        html! {
            form.actions method="get" action="/ui/security" {
                div {
                    label for="kind" { "Kind" }
                    select #kind name="kind" {
                        option value="" selected[params.kind.is_empty()] { "all" }
                        @for kind in SecurityKind::ALL {
                            option value=(kind.as_str()) selected[params.kind == kind.as_str()] { (kind.as_str()) }
                        }
                    }
                }
                button type="submit" { "Show" }
            }
            p.muted { "Newest first, at most " (ROWS) " rows. Alerts (suspicious activity) are also Kubernetes Events and metrics." }
            (rows(&found, now))
        },
    ))
}
