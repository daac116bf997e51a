//! One endpoint: actions, conditions and Events, analytics charts, recent attempts with what was
//! sent, and dead letters.
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use maud::{html, Markup};
use serde::Deserialize;

use super::endpoints::destination;
use super::{ago, condition_badge, relative};
use crate::api::conditions::ConditionStatus;
use crate::api::WebhookEndpoint;
use crate::dashboard::analytics::{self, Bucket, ErrorCategory, Width};
use crate::dashboard::charts::{self, Series};
use crate::dashboard::error::PageError;
use crate::dashboard::gitops::spec_owners;
use crate::dashboard::layout::{self, Nav};
use crate::dashboard::user::User;
use crate::dashboard::Dashboard;
use crate::dispatcher::engine::EndpointLookup;
use crate::store::{AttemptLogEntry, EndpointRef, EventRecord, PageRequest};

/// Attempts read for the charts at most; beyond it the charts cover the newest ones only.
const MAX_CHART_ATTEMPTS: usize = 20_000;
const RECENT_ATTEMPTS: usize = 20;
const DEAD_LETTERS: usize = 20;

#[derive(Debug, Default, Deserialize)]
pub struct RangeParams {
    /// `24h` (default), `7d` or `30d`.
    range: Option<String>,
    /// `hour` or `day`; hour for 24 h, day otherwise, by default.
    bucket: Option<String>,
}

struct ChartRange {
    label: &'static str,
    from: Timestamp,
    to: Timestamp,
    width: Width,
}

fn chart_range(params: &RangeParams, now: Timestamp) -> Result<ChartRange, PageError> {
    let (label, hours) = match params.range.as_deref().unwrap_or("24h") {
        "24h" => ("24h", 24),
        "7d" => ("7d", 24 * 7),
        "30d" => ("30d", 24 * 30),
        other => {
            return Err(PageError::BadRequest(format!(
                "range: `{other}` is not one of 24h, 7d, 30d"
            )))
        }
    };
    let width = match params.bucket.as_deref() {
        Some("hour") => Width::Hour,
        Some("day") => Width::Day,
        None if hours <= 24 => Width::Hour,
        None => Width::Day,
        Some(other) => {
            return Err(PageError::BadRequest(format!(
                "bucket: `{other}` is not hour or day"
            )))
        }
    };
    // Whole buckets: from the start of the bucket `hours` ago to the end of the current one.
    let step = width.millis() / 1000;
    let end = (now.as_second().div_euclid(step) + 1) * step;
    let to = Timestamp::from_second(end).map_err(|e| PageError::BadRequest(e.to_string()))?;
    let from = to
        .checked_sub(SignedDuration::from_hours(hours))
        .map_err(|e| PageError::BadRequest(e.to_string()))?;
    Ok(ChartRange {
        label,
        from,
        to,
        width,
    })
}

/// The endpoint's attempts newer than `from`, newest first (at most [`MAX_CHART_ATTEMPTS`]).
async fn attempts_since(
    dashboard: &Dashboard,
    endpoint: &EndpointRef,
    from: Timestamp,
) -> Result<(Vec<AttemptLogEntry>, bool), PageError> {
    let mut attempts = Vec::new();
    let mut cursor = None;
    loop {
        let page = dashboard
            .shared
            .store
            .delivery_log(endpoint, PageRequest::after(cursor, 500))
            .await?;
        let older = page.items.iter().any(|a| a.record.at < from);
        attempts.extend(page.items.into_iter().filter(|a| a.record.at >= from));
        if attempts.len() >= MAX_CHART_ATTEMPTS {
            attempts.truncate(MAX_CHART_ATTEMPTS);
            return Ok((attempts, true));
        }
        match page.next_cursor {
            Some(next) if !older => cursor = Some(next),
            _ => return Ok((attempts, false)),
        }
    }
}

fn bucket_label(start: Timestamp, width: Width) -> String {
    let utc = start.to_zoned(jiff::tz::TimeZone::UTC);
    match width {
        Width::Hour => utc.strftime("%m-%d %H:00").to_string(),
        Width::Day => utc.strftime("%Y-%m-%d").to_string(),
    }
}

fn charts_section(buckets: &[Bucket], range: &ChartRange, capped: bool) -> Markup {
    let labels: Vec<String> = buckets
        .iter()
        .map(|b| bucket_label(b.start, range.width))
        .collect();
    let values = |f: &dyn Fn(&Bucket) -> Option<f64>| buckets.iter().map(f).collect::<Vec<_>>();
    let rate = charts::lines(
        "Success rate",
        "%",
        &labels,
        &[Series {
            name: "success rate",
            class: "s-ok",
            values: values(&|b| b.success_rate().map(|r| r * 100.0)),
        }],
    );
    let latency = charts::lines(
        "Latency",
        " ms",
        &labels,
        &[
            Series {
                name: "p50",
                class: "s-p50",
                values: values(&|b| b.p50_ms.map(|v| v as f64)),
            },
            Series {
                name: "p95",
                class: "s-p95",
                values: values(&|b| b.p95_ms.map(|v| v as f64)),
            },
        ],
    );
    let volume = charts::stacked_bars(
        "Volume",
        &labels,
        &[
            Series {
                name: "succeeded",
                class: "s-ok",
                values: values(&|b| Some(b.successes as f64)),
            },
            Series {
                name: "failed",
                class: "s-bad",
                values: values(&|b| Some(b.failures() as f64)),
            },
        ],
    );
    let category_series: Vec<Series<'_>> = ErrorCategory::ALL
        .iter()
        .map(|c| Series {
            name: c.label(),
            class: match c {
                ErrorCategory::Timeout => "s-timeout",
                ErrorCategory::Connect => "s-connect",
                ErrorCategory::Tls => "s-tls",
                ErrorCategory::Client4xx => "s-4xx",
                ErrorCategory::Server5xx => "s-5xx",
                ErrorCategory::Blocked => "s-blocked",
                ErrorCategory::Other => "s-other",
            },
            values: buckets
                .iter()
                .map(|b| Some(b.errors[*c as usize] as f64))
                .collect(),
        })
        .collect();
    let errors = charts::stacked_bars("Errors by category", &labels, &category_series);
    html! {
        @if capped { p.notice.warning { "More attempts than the charts read; they show the newest " (MAX_CHART_ATTEMPTS) "." } }
        div.grid #charts data-range=(range.label) { (rate) (latency) (volume) (errors) }
    }
}

fn totals_facts(total: &Bucket) -> Markup {
    let rate = total
        .success_rate()
        .map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "—".into());
    html! {
        dl.facts #totals {
            dt { "Attempts" } dd { (total.attempts) }
            dt { "Success rate" } dd { (rate) }
            dt { "Latency p50 / p95" } dd { (total.p50_ms.map(|v| format!("{v} ms")).unwrap_or_else(|| "—".into())) " / " (total.p95_ms.map(|v| format!("{v} ms")).unwrap_or_else(|| "—".into())) }
            dt { "Failures" } dd {
                @let parts: Vec<String> = ErrorCategory::ALL.iter().filter(|c| total.errors[**c as usize] > 0)
                    .map(|c| format!("{} {}", total.errors[*c as usize], c.label())).collect();
                @if parts.is_empty() { "none" } @else { (parts.join(", ")) }
            }
        }
    }
}

/// The request an attempt sent, as far as the dashboard may show it: the document's payload
/// and the headers, with signatures and Secret values redacted.
struct Sent {
    payload: String,
    headers: Vec<(String, String)>,
}

fn sent(
    dashboard: &Dashboard,
    endpoint: &WebhookEndpoint,
    event: &EventRecord,
    attempt: u32,
) -> Sent {
    use crate::delivery::payload::{render_stored, WebhookRef};
    use crate::delivery::signing::{sign, SigningKeys, SigningScheme};
    let namespace = endpoint.namespace().unwrap_or_default();
    let name = endpoint.name_any();
    let policy = dashboard
        .shared
        .endpoints
        .policy(&EndpointRef::new(&namespace, &name))
        .ok();
    let webhook = WebhookRef {
        id: format!("{namespace}/{name}"),
        name: policy
            .as_ref()
            .map_or_else(|| name.clone(), |p| p.display_name.clone()),
    };
    let payload = render_stored(
        &event.event_id,
        event.created_at,
        &webhook,
        &event.event_type,
        &event.data,
    )
    .ok()
    .and_then(|body| serde_json::from_slice::<serde_json::Value>(&body).ok())
    .and_then(|value| serde_json::to_string_pretty(&value).ok())
    .unwrap_or_else(|| String::from_utf8_lossy(&event.data).into_owned());
    let mut headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        (
            "User-Agent".to_owned(),
            crate::delivery::headers::USER_AGENT_VALUE.to_owned(),
        ),
        ("X-Webhook-Event-Id".to_owned(), event.event_id.clone()),
        ("X-Webhook-Event-Type".to_owned(), event.event_type.clone()),
        ("X-Webhook-Attempt".to_owned(), attempt.to_string()),
    ];
    let scheme = policy
        .as_ref()
        .map_or(SigningScheme::Pitchey, |p| p.signing.scheme);
    let placeholder = SigningKeys::new("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    for (header, _) in sign(scheme, &placeholder, &event.event_id, 0, b"").unwrap_or_default() {
        headers.push((header.to_string(), "[redacted]".to_owned()));
    }
    for (header, value) in &endpoint.spec.headers {
        headers.push((header.clone(), value.clone()));
    }
    for from in &endpoint.spec.headers_from {
        headers.push((
            from.name.clone(),
            format!("[from Secret {}, redacted]", from.secret_key_ref.name),
        ));
    }
    if endpoint.spec.transform.is_some() {
        headers.push((
            "(body)".into(),
            "the endpoint's transform made the body sent from this payload".into(),
        ));
    }
    Sent { payload, headers }
}

fn attempts_table(
    dashboard: &Dashboard,
    endpoint: &WebhookEndpoint,
    attempts: &[AttemptLogEntry],
    events: &HashMap<String, EventRecord>,
    now: Timestamp,
) -> Markup {
    html! {
        div.table-wrap {
            table #attempts {
                thead { tr {
                    th scope="col" { "When" } th scope="col" { "Event" } th.num scope="col" { "Attempt" }
                    th.num scope="col" { "Status" } th.num scope="col" { "Latency" } th scope="col" { "Outcome" } th scope="col" { "Details" }
                } }
                tbody {
                    @for a in attempts {
                        tr {
                            td { (relative(a.record.at, now)) }
                            td { code { (a.event_type) } br; small.muted { (a.event_id) } }
                            td.num { (a.record.attempt) }
                            td.num { (a.record.status_code.map(|c| c.to_string()).unwrap_or_else(|| "—".into())) }
                            td.num { (a.record.latency_ms.map(|v| format!("{v} ms")).unwrap_or_else(|| "—".into())) }
                            td { span class=(if a.success { "badge ok" } else { "badge bad" }) { (a.outcome.as_str()) } }
                            td {
                                @if let Some(error) = &a.record.error { div.bad { (error) } }
                                details {
                                    summary { "Request and response" }
                                    @if let Some(event) = events.get(&a.event_id) {
                                        @let sent = sent(dashboard, endpoint, event, a.record.attempt);
                                        h3 { "Headers sent" }
                                        pre { @for (n, v) in &sent.headers { (n) ": " (v) "\n" } }
                                        h3 { "Payload" }
                                        pre.payload { (sent.payload) }
                                    } @else {
                                        p.muted { "The event is no longer in the store." }
                                    }
                                    h3 { "Response snippet" }
                                    pre { (a.record.response_snippet.as_deref().unwrap_or("(none)")) }
                                }
                            }
                        }
                    }
                    @if attempts.is_empty() { tr { td colspan="7" { "No attempts yet." } } }
                }
            }
        }
    }
}

async fn dead_letters_section(
    dashboard: &Dashboard,
    namespace: &str,
    name: &str,
    now: Timestamp,
) -> Result<Markup, PageError> {
    let page = dashboard
        .shared
        .store
        .dead_letters(namespace, Some(name), PageRequest::first(DEAD_LETTERS))
        .await?;
    Ok(html! {
        div.table-wrap {
            table #dead-letters {
                thead { tr { th scope="col" { "Dead-lettered" } th scope="col" { "Event" } th scope="col" { "Reason" } th scope="col" { "Payload and history" } } }
                tbody {
                    @for letter in &page.items {
                        tr {
                            td { (ago(letter.delivery.finished_at.map(|t| t.to_string()).as_deref(), now)) }
                            td { code { (letter.event.event_type) } br; small.muted { (letter.event.event_id) } }
                            td { (letter.delivery.dead_letter_reason.as_deref().or(letter.delivery.last_error.as_deref()).unwrap_or("—")) }
                            td {
                                details {
                                    summary { (letter.attempts.len()) " attempts" }
                                    pre { (serde_json::from_slice::<serde_json::Value>(&letter.event.data).ok().and_then(|v| serde_json::to_string_pretty(&v).ok()).unwrap_or_else(|| String::from_utf8_lossy(&letter.event.data).into_owned())) }
                                    ol {
                                        @for a in &letter.attempts {
                                            li { (a.record.at.to_string()) ": " (a.record.status_code.map(|c| format!("HTTP {c}")).unwrap_or_default()) " " (a.record.error.as_deref().unwrap_or("")) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if page.items.is_empty() { tr { td colspan="4" { "No dead letters." } } }
                }
            }
        }
    })
}

async fn events_section(dashboard: &Dashboard, user: &User, namespace: &str, name: &str) -> Markup {
    let listed = async {
        let api: Api<Event> = Api::namespaced(user.client(dashboard)?, namespace);
        let selector = format!("involvedObject.kind=WebhookEndpoint,involvedObject.name={name}");
        api.list(&ListParams::default().fields(&selector))
            .await
            .map_err(|e| {
                PageError::Refused(format!(
                    "Events could not be listed as {}: {e}",
                    user.name()
                ))
            })
    };
    match listed.await {
        Err(error) => html! { p.notice.warning { (error) } },
        Ok(list) => {
            let mut events = list.items;
            let when = |e: &Event| {
                e.last_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .or(e.event_time.as_ref().map(|t| t.0))
            };
            events.sort_by_key(|e| std::cmp::Reverse(when(e)));
            events.truncate(20);
            html! {
                div.table-wrap { table #k8s-events {
                    thead { tr { th scope="col" { "Type" } th scope="col" { "Reason" } th scope="col" { "Message" } th.num scope="col" { "Count" } } }
                    tbody {
                        @for e in &events {
                            tr {
                                td { span class=(if e.type_.as_deref() == Some("Warning") { "badge warn" } else { "badge muted" }) { (e.type_.as_deref().unwrap_or("")) } }
                                td { (e.reason.as_deref().unwrap_or("")) }
                                td { (e.message.as_deref().unwrap_or("")) }
                                td.num { (e.count.unwrap_or(1)) }
                            }
                        }
                        @if events.is_empty() { tr { td colspan="4" { "No Events." } } }
                    }
                } }
            }
        }
    }
}

fn actions_section(endpoint: &WebhookEndpoint, base: &str) -> Markup {
    let owners = spec_owners(endpoint.managed_fields(), "suspend");
    html! {
        div.actions {
            button.primary type="button" hx-post=(format!("{base}/test")) hx-target="#action-result" { "Send test delivery" }
            @if endpoint.spec.suspend {
                button type="button" hx-post=(format!("{base}/resume")) hx-target="#action-result" { "Resume" }
            } @else {
                button type="button" hx-post=(format!("{base}/suspend")) hx-target="#action-result" { "Suspend" }
            }
            button.danger type="button" hx-post=(format!("{base}/rotate")) hx-target="#action-result"
                hx-confirm="Rotate the signing secret? The previous key keeps signing for the grace period." { "Rotate signing secret" }
        }
        form.actions hx-post=(format!("{base}/replay")) hx-target="#action-result" aria-label="Replay dead letters" {
            div { label for="since" { "Replay dead letters of the last" }
                select #since name="since" {
                    option value="1h" { "hour" } option value="6h" { "6 hours" } option value="24h" selected { "24 hours" }
                    option value="168h" { "7 days" } option value="" { "range below" }
                } }
            div { label for="from" { "or from (UTC)" } input #from type="datetime-local" name="from"; }
            div { label for="to" { "to (UTC)" } input #to type="datetime-local" name="to"; }
            div { label for="types" { "event types" } input #types type="text" name="types" placeholder="user.*, payment.failed"; }
            button type="submit" { "Replay" }
        }
        @if owners.any() {
            p.notice.warning #gitops-warning {
                "The spec is managed by " (owners.managers.join(", "))
                @if !owners.owning_field.is_empty() { " (which owns spec.suspend)" }
                ". A suspension made here may be reverted by it."
            }
        }
        div #action-result aria-live="polite" {}
    }
}

/// `GET /ui/namespaces/{ns}/endpoints/{name}`.
pub async fn page(
    State(dashboard): State<Dashboard>,
    Path((namespace, name)): Path<(String, String)>,
    Query(params): Query<RangeParams>,
    user: User,
) -> Result<Markup, PageError> {
    let cached = dashboard.endpoint_for(&user, &namespace, &name).await?;
    // Read as the user for managedFields (the caches drop them) and the freshest status.
    let api: Api<WebhookEndpoint> = Api::namespaced(user.client(&dashboard)?, &namespace);
    let endpoint = match api.get(&name).await {
        Ok(fresh) => fresh,
        Err(_) => (*cached).clone(),
    };
    let now = Timestamp::now();
    let range = chart_range(&params, now)?;
    let reference = EndpointRef::new(&namespace, &name);
    let (attempts, capped) = attempts_since(&dashboard, &reference, range.from).await?;
    let buckets = analytics::bucket(&attempts, range.from, range.to, range.width);
    let total = analytics::totals(&attempts, range.from, range.to);
    let recent: Vec<AttemptLogEntry> = if attempts.len() >= RECENT_ATTEMPTS {
        attempts[..RECENT_ATTEMPTS].to_vec()
    } else {
        dashboard
            .shared
            .store
            .delivery_log(&reference, PageRequest::first(RECENT_ATTEMPTS))
            .await?
            .items
    };
    let mut events = HashMap::new();
    for attempt in &recent {
        if !events.contains_key(&attempt.event_id) {
            if let Some(status) = dashboard
                .shared
                .store
                .event_status(&attempt.event_id)
                .await?
            {
                events.insert(attempt.event_id.clone(), status.event);
            }
        }
    }
    let base = format!("/ui/namespaces/{namespace}/endpoints/{name}");
    let status = endpoint.status.clone().unwrap_or_default();
    let delivery = status.delivery.clone().unwrap_or_default();
    let k8s_events = events_section(&dashboard, &user, &namespace, &name).await;
    let dead = dead_letters_section(&dashboard, &namespace, &name, now).await?;
    let range_link = |r: &str, b: &str, label: &str| {
        let current = range.label == r
            && (b.is_empty()
                || matches!(
                    (b, range.width),
                    ("hour", Width::Hour) | ("day", Width::Day)
                ));
        html! { a href=(format!("{base}?range={r}{}", if b.is_empty() { String::new() } else { format!("&bucket={b}") })) aria-current=[current.then_some("true")] { (label) } }
    };
    Ok(layout::page(
        &user,
        Nav::Endpoints,
        &format!("{namespace}/{name}"),
        html! {
            dl.facts #summary {
                dt { "URL" } dd { code { (destination(&endpoint)) } }
                dt { "Ready" } dd { (condition_badge(crate::api::conditions::find(&status.conditions, "Ready"), ConditionStatus::True)) @if endpoint.spec.suspend { " " span.badge.warn { "suspended" } } }
                dt { "Circuit" } dd { (status.circuit.as_ref().map(|c| format!("{:?}", c.state)).unwrap_or_else(|| "—".into())) }
                dt { "Health score" } dd { (delivery.health_score.map(|h| h.to_string()).unwrap_or_else(|| "—".into())) }
                dt { "Delivered / failed attempts / dead letters" } dd { (delivery.total_delivered) " / " (delivery.total_failed) " / " (delivery.total_dead_lettered) }
                dt { "Pending" } dd { (delivery.pending) }
                dt { "Last delivery" } dd { (ago(delivery.last_delivery_time.as_deref(), now)) }
                dt { "Last test" } dd #last-test {
                    @if let Some(test) = &status.last_test {
                        (test.status_code.map(|c| format!("HTTP {c}")).unwrap_or_default()) " " (test.error.as_deref().unwrap_or("")) " (" (ago(Some(&test.time), now)) ")"
                    } @else { "never" }
                }
            }
            h2 { "Actions" }
            (actions_section(&endpoint, &base))
            h2 { "Conditions" }
            div.table-wrap { table #conditions {
                thead { tr { th scope="col" { "Type" } th scope="col" { "Status" } th scope="col" { "Reason" } th scope="col" { "Message" } th scope="col" { "Since" } } }
                tbody { @for c in &status.conditions { tr {
                    td { (c.type_) } td { (format!("{:?}", c.status)) } td { (c.reason) } td { (c.message) } td { (ago(Some(&c.last_transition_time), now)) }
                } } }
            } }
            h2 { "Events" }
            (k8s_events)
            h2 #analytics { "Analytics" }
            nav.actions aria-label="Analytics range" {
                (range_link("24h", "hour", "24 hours by hour")) (range_link("7d", "hour", "7 days by hour"))
                (range_link("7d", "day", "7 days by day")) (range_link("30d", "day", "30 days by day"))
            }
            (totals_facts(&total))
            (charts_section(&buckets, &range, capped))
            h2 { "Recent attempts" }
            (attempts_table(&dashboard, &endpoint, &recent, &events, now))
            h2 { "Dead letters" }
            (dead)
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_whole_buckets() {
        let now: Timestamp = "2026-12-05T10:20:00Z".parse().unwrap();
        let day = chart_range(&RangeParams::default(), now).unwrap();
        assert_eq!(day.to, "2026-12-05T11:00:00Z".parse::<Timestamp>().unwrap());
        assert_eq!(
            day.from,
            "2026-12-04T11:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(day.width, Width::Hour);
        let week = chart_range(
            &RangeParams {
                range: Some("7d".into()),
                bucket: None,
            },
            now,
        )
        .unwrap();
        assert_eq!(week.width, Width::Day);
        assert_eq!(
            week.to,
            "2026-12-06T00:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert!(chart_range(
            &RangeParams {
                range: Some("1y".into()),
                bucket: None
            },
            now
        )
        .is_err());
        assert!(chart_range(
            &RangeParams {
                range: None,
                bucket: Some("week".into())
            },
            now
        )
        .is_err());
    }
}
