//! Subscriptions in the namespaces where the user may list them, and the endpoints each reaches.
use axum::extract::State;
use kube::ResourceExt;
use maud::{html, Markup};

use super::condition_badge;
use crate::api::conditions::{find, ConditionStatus};
use crate::dashboard::error::PageError;
use crate::dashboard::layout::{self, Nav};
use crate::dashboard::user::User;
use crate::dashboard::Dashboard;

/// `GET /ui/subscriptions`.
pub async fn page(State(dashboard): State<Dashboard>, user: User) -> Result<Markup, PageError> {
    let subscriptions = dashboard.visible_subscriptions(&user).await?;
    Ok(layout::page(
        &user,
        Nav::Subscriptions,
        "Subscriptions",
        html! {
            div.table-wrap { table #subscriptions {
                thead { tr {
                    th scope="col" { "Namespace" } th scope="col" { "Name" } th scope="col" { "Event types" }
                    th scope="col" { "Reaches" } th scope="col" { "Ready" }
                } }
                tbody {
                    @for s in &subscriptions {
                        @let namespace = s.namespace().unwrap_or_default();
                        @let status = s.status.clone().unwrap_or_default();
                        tr {
                            td { (namespace) }
                            td { (s.name_any()) }
                            td { @for t in &s.spec.event_types { code { (t) } " " } }
                            td {
                                @for e in &status.endpoints {
                                    a href=(format!("/ui/namespaces/{namespace}/endpoints/{e}")) { (e) } " "
                                }
                                @if status.endpoints.is_empty() { span.muted { "no endpoint" } }
                            }
                            td { (condition_badge(find(&status.conditions, "Ready"), ConditionStatus::True)) }
                        }
                    }
                    @if subscriptions.is_empty() { tr { td colspan="5" { "No subscriptions you may list." } } }
                }
            } }
        },
    ))
}
