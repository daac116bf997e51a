//! `status`: one row per endpoint.
use jiff::Timestamp;
use serde::Serialize;

use super::{dash, error_with_age, last_error, percent, rate, table, ERROR_WIDTH};
use crate::api::conditions::{self, Condition, READY};
use crate::api::WebhookEndpoint;
use crate::query::WebhookAnalytics;

fn ready_condition(endpoint: &WebhookEndpoint) -> Option<&Condition> {
    endpoint
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, READY))
}

/// One line of `status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusRow {
    pub namespace: String,
    pub name: String,
    /// The Ready condition's status: `True`, `False` or `Unknown`.
    pub ready: String,
    pub suspended: bool,
    /// An ordered endpoint paused by a dead letter.
    pub paused: bool,
    /// `Closed`, `Open` or `HalfOpen`, once the dispatcher reported it.
    pub circuit: Option<String>,
    /// Attempts per second over the last hour.
    pub rate_per_second: Option<f64>,
    /// Deliveries not finished: pending, in flight, held and queued.
    pub pending: Option<u64>,
    /// Successful attempts over the last 24 hours, 0–1.
    pub success_rate_24h: Option<f64>,
    pub last_error: Option<String>,
    pub last_failure_time: Option<Timestamp>,
}

impl StatusRow {
    pub fn is_ready(&self) -> bool {
        self.ready == "True"
    }
}

/// The rows of `status`, sorted by namespace and name: the endpoints' status, and the query
/// API's analytics where given (fresher; without them the status's own figures are used).
pub fn status_rows(
    endpoints: &[WebhookEndpoint],
    analytics: Option<&[WebhookAnalytics]>,
) -> Vec<StatusRow> {
    let mut rows: Vec<StatusRow> = endpoints
        .iter()
        .map(|endpoint| {
            let namespace = endpoint.metadata.namespace.clone().unwrap_or_default();
            let name = endpoint.metadata.name.clone().unwrap_or_default();
            let status = endpoint.status.as_ref();
            let delivery = status.and_then(|s| s.delivery.as_ref());
            let found = analytics.and_then(|all| {
                all.iter().find(|a| {
                    a.endpoint == name && a.metadata.namespace.as_deref() == Some(&namespace)
                })
            });
            let (rate_per_second, pending, success_rate_24h) = match found {
                Some(a) => (
                    Some(a.last_hour.attempts as f64 / 3600.0),
                    Some(a.queue.pending + a.queue.in_flight + a.queue.held + a.queue.queued),
                    a.last_day.success_rate,
                ),
                None => (
                    None,
                    delivery.and_then(|d| u64::try_from(d.pending).ok()),
                    delivery
                        .and_then(|d| d.success_rate_last_day.as_deref())
                        .and_then(|r| r.trim_end_matches('%').parse::<f64>().ok())
                        .map(|r| r / 100.0),
                ),
            };
            let (last_error, last_failure_time) = match last_error(found, delivery) {
                Some((error, at)) => (Some(error), at),
                None => (None, None),
            };
            StatusRow {
                ready: ready_condition(endpoint)
                    .map_or_else(|| "Unknown".to_owned(), |c| format!("{:?}", c.status)),
                suspended: endpoint.spec.suspend,
                paused: status
                    .and_then(|s| s.ordering.as_ref())
                    .is_some_and(|o| o.paused),
                circuit: status
                    .and_then(|s| s.circuit.as_ref())
                    .map(|c| format!("{:?}", c.state)),
                rate_per_second,
                pending,
                success_rate_24h,
                last_error,
                last_failure_time,
                namespace,
                name,
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows
}

/// `status` as a table; with `all_namespaces` a NAMESPACE column first.
pub fn status_text(rows: &[StatusRow], all_namespaces: bool, now: Timestamp) -> String {
    let mut headers = vec![
        "NAME",
        "READY",
        "CIRCUIT",
        "RATE",
        "PENDING",
        "SUCCESS 24h",
        "LAST ERROR",
    ];
    if all_namespaces {
        headers.insert(0, "NAMESPACE");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut ready = row.ready.clone();
            if row.suspended {
                ready.push_str(",Suspended");
            }
            if row.paused {
                ready.push_str(",Paused");
            }
            let last_error = row.last_error.as_deref().map_or_else(
                || "-".to_owned(),
                |e| error_with_age(e, row.last_failure_time, ERROR_WIDTH, now),
            );
            let mut cells = vec![
                row.name.clone(),
                ready,
                dash(row.circuit.as_deref()),
                row.rate_per_second.map_or_else(|| "-".to_owned(), rate),
                dash(row.pending),
                percent(row.success_rate_24h),
                last_error,
            ];
            if all_namespaces {
                cells.insert(0, row.namespace.clone());
            }
            cells
        })
        .collect();
    table(&headers, &cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn status_rows_prefer_analytics_and_fall_back_to_status() {
        let endpoint: WebhookEndpoint = serde_json::from_value(serde_json::json!({
            "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookEndpoint",
            "metadata": {"name": "crm", "namespace": "crm"},
            "spec": {"url": "https://crm.example.com", "suspend": true},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Provisioned",
                "message": "ok", "lastTransitionTime": "2026-01-10T09:00:00Z"}],
                "delivery": {"totalDelivered": 1, "totalFailed": 0, "totalDeadLettered": 0,
                    "totalRetries": 0, "deadLetterCount": 0, "pending": 4,
                    "successRateLastDay": "97.5%", "lastError": "HTTP 503 Service Unavailable",
                    "lastFailureTime": "2026-01-10T09:58:00Z"}}
        }))
        .unwrap();
        let rows = status_rows(std::slice::from_ref(&endpoint), None);
        assert_eq!(rows[0].pending, Some(4));
        assert_eq!(rows[0].success_rate_24h, Some(0.975));
        assert_eq!(rows[0].rate_per_second, None);
        assert!(rows[0].is_ready());
        let text = status_text(&rows, false, ts("2026-01-10T10:00:00Z"));
        assert_eq!(
            text,
            "NAME   READY            CIRCUIT   RATE   PENDING   SUCCESS 24h   LAST ERROR\n\
             crm    True,Suspended   -         -      4         97.5%         HTTP 503 Service Unavailable (2m ago)\n"
        );
    }
}
