//! The endpoints the user may see, across namespaces; the table refreshes itself every 5 s.
use axum::extract::State;
use jiff::Timestamp;
use kube::ResourceExt;
use maud::{html, Markup};

use super::{ago, condition_badge, redacted_url};
use crate::api::conditions::{find, ConditionStatus};
use crate::api::WebhookEndpoint;
use crate::dashboard::error::PageError;
use crate::dashboard::layout::{self, Nav};
use crate::dashboard::user::User;
use crate::dashboard::Dashboard;

/// Where an endpoint sends: its URL without credentials or query, or the Secret it comes from.
pub fn destination(endpoint: &WebhookEndpoint) -> String {
    match (&endpoint.spec.url, &endpoint.spec.url_from) {
        (Some(url), _) => redacted_url(url),
        (None, Some(from)) => format!("from Secret {}", from.secret_key_ref.name),
        (None, None) => "(no URL)".into(),
    }
}

fn row(endpoint: &WebhookEndpoint, now: Timestamp) -> Markup {
    let namespace = endpoint.namespace().unwrap_or_default();
    let name = endpoint.name_any();
    let status = endpoint.status.as_ref();
    let conditions = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let delivery = status.and_then(|s| s.delivery.as_ref());
    let circuit = status
        .and_then(|s| s.circuit.as_ref())
        .map(|c| format!("{:?}", c.state));
    let circuit_class = match circuit.as_deref() {
        Some("Closed") => "ok",
        Some("HalfOpen") => "warn",
        Some(_) => "bad",
        None => "muted",
    };
    html! {
        tr {
            td { (namespace) }
            td { a href=(format!("/ui/namespaces/{namespace}/endpoints/{name}")) { (name) } }
            td.hide-narrow { code { (destination(endpoint)) } }
            td {
                (condition_badge(find(conditions, "Ready"), ConditionStatus::True))
                @if endpoint.spec.suspend { " " span.badge.warn { "suspended" } }
            }
            td { span class=(format!("badge {circuit_class}")) { (circuit.as_deref().unwrap_or("—")) } }
            td.num { (delivery.and_then(|d| d.success_rate_last_hour.clone()).unwrap_or_else(|| "—".into())) }
            td.num { (delivery.and_then(|d| d.health_score).map(|h| h.to_string()).unwrap_or_else(|| "—".into())) }
            td.num { (delivery.map(|d| d.pending).unwrap_or(0)) }
            td { (ago(delivery.and_then(|d| d.last_delivery_time.as_deref()), now)) }
        }
    }
}

async fn tbody(dashboard: &Dashboard, user: &User) -> Result<Markup, PageError> {
    let endpoints = dashboard.visible_endpoints(user).await?;
    let now = Timestamp::now();
    Ok(html! {
        tbody #endpoint-rows hx-get="/ui/endpoints/rows" hx-trigger="every 5s" hx-swap="outerHTML" {
            @for endpoint in &endpoints { (row(endpoint, now)) }
            @if endpoints.is_empty() {
                tr { td colspan="9" { "No endpoints you may see. Ask for " code { "get" } " on " code { "webhookendpoints" } " in a namespace." } }
            }
        }
    })
}

/// `GET /ui/endpoints`.
pub async fn page(State(dashboard): State<Dashboard>, user: User) -> Result<Markup, PageError> {
    let body = tbody(&dashboard, &user).await?;
    Ok(layout::page(
        &user,
        Nav::Endpoints,
        "Endpoints",
        html! {
            p.muted { "Updates every 5 seconds. Success rate is over the last hour." }
            div.table-wrap {
                table #endpoints {
                    thead { tr {
                        th scope="col" { "Namespace" } th scope="col" { "Name" }
                        th.hide-narrow scope="col" { "URL" } th scope="col" { "Ready" }
                        th scope="col" { "Circuit" } th.num scope="col" { "Success" }
                        th.num scope="col" { "Health" } th.num scope="col" { "Pending" }
                        th scope="col" { "Last delivery" }
                    } }
                    (body)
                }
            }
        },
    ))
}

/// `GET /ui/endpoints/rows`: the table body alone, for the refresh.
pub async fn rows(State(dashboard): State<Dashboard>, user: User) -> Result<Markup, PageError> {
    tbody(&dashboard, &user).await
}
