//! `describe`: the endpoint's spec and status, and what the query API says about it.
use jiff::Timestamp;
use serde::Serialize;

use super::actions::test_summary;
use super::{
    ago_text, count, deliveries_text, error_with_age, history_text, last_error, millis, percent,
    short, table, totals_of,
};
use crate::api::conditions::Condition;
use crate::api::endpoint::{
    Backoff, CircuitStatus, DeliveryStats, OrderingMode, OrderingStatus, SigningScheme,
    SigningStatus, WebhookEndpointSpec,
};
use crate::api::WebhookEndpoint;
use crate::query::table::age;
use crate::query::{WebhookAnalytics, WebhookDelivery};

/// What `describe` shows: the endpoint, and what the query API had to say about it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Description {
    pub endpoint: WebhookEndpoint,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analytics: Option<WebhookAnalytics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_attempts: Option<Vec<WebhookDelivery>>,
    /// Why the query API's parts are missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_error: Option<String>,
}

/// `Key:` padded so values line up, as `kubectl describe` prints.
fn field(out: &mut String, key: &str, value: impl AsRef<str>) {
    out.push_str(&format!("{:<18}{}\n", format!("{key}:"), value.as_ref()));
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn spec_fields(
    out: &mut String,
    spec: &WebhookEndpointSpec,
    signing: Option<&SigningStatus>,
    now: Timestamp,
) {
    let url = match (&spec.url, &spec.url_from) {
        (Some(url), _) => url.clone(),
        (None, Some(from)) => format!(
            "from Secret {} key {}",
            from.secret_key_ref.name, from.secret_key_ref.key
        ),
        (None, None) => "-".to_owned(),
    };
    field(out, "URL", url);
    field(out, "Method", spec.method.as_str());
    if let Some(name) = &spec.display_name {
        field(out, "Display Name", name);
    }
    if let Some(description) = &spec.description {
        field(out, "Description", short(description, 200));
    }
    field(out, "Suspended", spec.suspend.to_string());
    field(out, "Timeout", format!("{}s", spec.timeout_seconds));
    let retry = &spec.retry_policy;
    field(
        out,
        "Retry",
        format!(
            "{}, {} from {} up to {}{}{}",
            count(retry.max_attempts, "retry", "retries"),
            match retry.backoff {
                Backoff::Exponential => "exponential",
                Backoff::Linear => "linear",
                Backoff::Fixed => "fixed",
            },
            retry.base_delay,
            retry.max_delay,
            if retry.jitter > 0 {
                format!(", jitter {}%", retry.jitter)
            } else {
                String::new()
            },
            if retry.effective_immediate_retry() {
                ", immediate retry on 5xx and transport errors"
            } else {
                ""
            }
        ),
    );
    let limit = &spec.rate_limit;
    field(
        out,
        "Rate Limit",
        format!(
            "{}/min, burst {}{}",
            limit.requests_per_minute,
            limit.burst,
            if limit.adaptive { ", adaptive" } else { "" }
        ),
    );
    field(
        out,
        "Circuit Breaker",
        format!(
            "opens after {}, for {}",
            count(
                spec.circuit_breaker.failure_threshold,
                "failure",
                "consecutive failures"
            ),
            spec.circuit_breaker.open_duration
        ),
    );
    let scheme = match spec.signing.scheme {
        SigningScheme::Pitchey => "pitchey",
        SigningScheme::StandardWebhooks => "standard-webhooks",
        SigningScheme::None => "none",
    };
    let key = match (&spec.signing.secret_ref, signing) {
        (Some(secret), _) => format!("key {} of Secret {} (yours)", secret.key, secret.name),
        (None, Some(signing)) => format!("generated key in Secret {}", signing.secret_name),
        (None, None) => "generated key".to_owned(),
    };
    let rotated = signing
        .and_then(|s| s.last_rotation_time.as_deref())
        .map(|t| format!(", rotated {}", ago_text(t, now)))
        .unwrap_or_default();
    field(
        out,
        "Signing",
        format!(
            "{scheme}, {key}{rotated}, rotation grace {}",
            spec.signing.rotation_grace_period
        ),
    );
    if let Some(ordering) = spec
        .ordering
        .as_ref()
        .filter(|o| o.mode != OrderingMode::None)
    {
        let key = ordering
            .key
            .as_deref()
            .map(|k| format!(" by {k}"))
            .unwrap_or_default();
        field(
            out,
            "Ordering",
            format!(
                "{:?}{key}, on dead letter {:?}",
                ordering.mode, ordering.on_dead_letter
            ),
        );
    }
    if let Some(transform) = &spec.transform {
        field(
            out,
            "Transform",
            format!(
                "jq, {}",
                count(
                    u32::try_from(transform.jq.lines().count()).unwrap_or(u32::MAX),
                    "line",
                    "lines"
                )
            ),
        );
    }
    let mut headers: Vec<String> = spec.headers.keys().cloned().collect();
    headers.extend(
        spec.headers_from
            .iter()
            .map(|h| format!("{} (from Secret {})", h.name, h.secret_key_ref.name)),
    );
    if !headers.is_empty() {
        field(out, "Headers", headers.join(", "));
    }
}

/// The conditions as an indented table.
fn conditions_text(conditions: &[Condition], now: Timestamp) -> String {
    if conditions.is_empty() {
        return "  none yet (the controller has not reconciled this endpoint)\n".to_owned();
    }
    let rows: Vec<Vec<String>> = conditions
        .iter()
        .map(|c| {
            vec![
                c.type_.clone(),
                format!("{:?}", c.status),
                c.reason.clone(),
                c.last_transition_time
                    .parse::<Timestamp>()
                    .map_or_else(|_| "-".to_owned(), |t| age(t, now)),
                short(&c.message, 100),
            ]
        })
        .collect();
    indent(&table(
        &["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"],
        &rows,
    ))
}

fn circuit_text(circuit: Option<&CircuitStatus>, now: Timestamp) -> String {
    let Some(circuit) = circuit else {
        return "- (no attempt yet)".to_owned();
    };
    let since = circuit
        .since
        .as_deref()
        .map(|s| format!(" for {}", ago_text(s, now).trim_end_matches(" ago")))
        .unwrap_or_default();
    format!(
        "{:?}{since}, {}",
        circuit.state,
        count(
            circuit.consecutive_failures,
            "consecutive failure",
            "consecutive failures"
        )
    )
}

/// An ordered endpoint's lanes: running, or paused by a dead letter and how to resume.
fn lanes_text(name: &str, ordering: &OrderingStatus) -> String {
    let state = match &ordering.paused_by {
        Some(by) if ordering.paused => format!(
            "paused since {} by dead letter {} ({}); resume with `kubectl annotate \
             webhookendpoint {name} webhooks.pitchey.io/resume={}`",
            by.since,
            by.event_id,
            short(&by.reason, 80),
            by.event_id
        ),
        _ if ordering.paused => "paused".to_owned(),
        _ => "running".to_owned(),
    };
    format!("{state}; {} queued", ordering.queued)
}

/// Totals, queue and health: from the analytics when read, else from the endpoint's status.
fn delivery_fields(
    out: &mut String,
    analytics: Option<&WebhookAnalytics>,
    delivery: Option<&DeliveryStats>,
) {
    let health = delivery
        .and_then(|d| d.health_score)
        .map(|h| format!("{h}/100, "))
        .unwrap_or_default();
    match (analytics, delivery) {
        (Some(a), _) => {
            let t = &a.totals;
            let q = &a.queue;
            field(out, "Deliveries", deliveries_text(t));
            field(
                out,
                "Queue",
                format!(
                    "{} pending, {} in flight, {} held, {} queued",
                    q.pending, q.in_flight, q.held, q.queued
                ),
            );
            field(
                out,
                "Health",
                format!(
                    "{health}success {} last hour, {} last 24h; p95 {} last hour",
                    percent(a.last_hour.success_rate),
                    percent(a.last_day.success_rate),
                    millis(a.last_hour.p95_latency_ms)
                ),
            );
        }
        (None, Some(d)) => {
            field(out, "Deliveries", deliveries_text(&totals_of(d)));
            field(out, "Pending", d.pending.to_string());
            field(
                out,
                "Health",
                format!(
                    "{health}success {} last hour, {} last 24h",
                    d.success_rate_last_hour.as_deref().unwrap_or("-"),
                    d.success_rate_last_day.as_deref().unwrap_or("-")
                ),
            );
        }
        (None, None) => field(out, "Deliveries", "none yet"),
    }
}

/// `describe` as text.
pub fn describe_text(d: &Description, now: Timestamp) -> String {
    let endpoint = &d.endpoint;
    let name = endpoint.metadata.name.as_deref().unwrap_or_default();
    let status = endpoint.status.clone().unwrap_or_default();
    let analytics = d.analytics.as_ref();
    let delivery = status.delivery.as_ref();
    let mut out = String::new();
    field(&mut out, "Name", name);
    field(
        &mut out,
        "Namespace",
        endpoint.metadata.namespace.as_deref().unwrap_or_default(),
    );
    spec_fields(&mut out, &endpoint.spec, status.signing.as_ref(), now);
    out.push_str("Conditions:\n");
    out.push_str(&conditions_text(&status.conditions, now));
    field(
        &mut out,
        "Circuit",
        circuit_text(status.circuit.as_ref(), now),
    );
    if let Some(ordering) = &status.ordering {
        field(&mut out, "Lanes", lanes_text(name, ordering));
    }
    delivery_fields(&mut out, analytics, delivery);
    if let Some((error, at)) = last_error(analytics, delivery) {
        field(&mut out, "Last Error", error_with_age(&error, at, 120, now));
    }
    if let Some(test) = &status.last_test {
        field(
            &mut out,
            "Last Test",
            format!(
                "{}, {} (nonce {})",
                test_summary(test),
                ago_text(&test.time, now),
                test.nonce
            ),
        );
    }
    let dead_letters = analytics
        .map(|a| a.queue.dead_letters)
        .or_else(|| delivery.and_then(|s| u64::try_from(s.dead_letter_count).ok()));
    field(
        &mut out,
        "Dead Letters",
        match dead_letters {
            Some(0) => "0".to_owned(),
            Some(n) => format!("{n} (kubectl webhooks deadletters {name})"),
            None => "-".to_owned(),
        },
    );
    match (&d.recent_attempts, &d.query_error) {
        (Some(attempts), _) if !attempts.is_empty() => {
            out.push_str(&format!("Recent Attempts (last {}):\n", attempts.len()));
            out.push_str(&indent(&history_text(attempts, now)));
        }
        (Some(_), _) => out.push_str("Recent Attempts:  none\n"),
        (None, Some(_)) => out.push_str(
            "Recent Attempts:  unavailable: the query API could not be read (see the warning)\n",
        ),
        (None, None) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_endpoint_is_described_without_status() {
        let endpoint: WebhookEndpoint = serde_json::from_value(serde_json::json!({
            "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookEndpoint",
            "metadata": {"name": "new", "namespace": "crm"},
            "spec": {"urlFrom": {"secretKeyRef": {"name": "slack", "key": "url"}},
                     "retryPolicy": {"maxAttempts": 1, "backoff": "fixed"}}
        }))
        .unwrap();
        let text = describe_text(
            &Description {
                endpoint,
                analytics: None,
                recent_attempts: Some(Vec::new()),
                query_error: None,
            },
            "2026-01-15T12:00:00Z".parse().unwrap(),
        );
        for line in [
            "URL:              from Secret slack key url\n",
            "Retry:            1 retry, fixed from 1s up to 1h\n",
            "  none yet (the controller has not reconciled this endpoint)\n",
            "Circuit:          - (no attempt yet)\n",
            "Deliveries:       none yet\n",
            "Dead Letters:     -\n",
            "Recent Attempts:  none\n",
        ] {
            assert!(text.contains(line), "{line:?} in:\n{text}");
        }
    }
}
