//! `kubectl get`'s server-side printing: a `meta.k8s.io/v1` Table of rows, with `-o wide`
//! columns at priority 1. Ages are rendered as `kubectl` renders them (`45s`, `12m`, `3h`, `5d`).
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{json, Value};

use super::objects::{WebhookAnalytics, WebhookDeadLetter, WebhookDelivery};

/// A column: name, JSON type, and priority (1: shown with `-o wide` only).
pub struct Column {
    pub name: &'static str,
    pub kind: &'static str,
    pub priority: u8,
    pub description: &'static str,
}

const fn column(
    name: &'static str,
    kind: &'static str,
    priority: u8,
    description: &'static str,
) -> Column {
    Column {
        name,
        kind,
        priority,
        description,
    }
}

/// What a row carries of its object (`?includeObject=`): by default its metadata only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(value: Option<&str>) -> Result<IncludeObject, String> {
        match value {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(format!(
                "includeObject: must be None, Metadata or Object, not `{other}`"
            )),
        }
    }
}

/// An object kubectl can print as a row.
pub trait Printable: Serialize {
    fn columns() -> &'static [Column];
    fn cells(&self, now: Timestamp) -> Vec<Value>;
    fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
}

/// A Table of `objects`, with the list's resource version and continue token.
pub fn table<T: Printable>(
    objects: &[T],
    include: IncludeObject,
    resource_version: &str,
    next: Option<&str>,
    now: Timestamp,
) -> Value {
    let columns: Vec<Value> = T::columns()
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.kind,
                "format": if c.name == "Name" { "name" } else { "" },
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut row = json!({ "cells": object.cells(now) });
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": object.metadata(),
                    });
                }
                IncludeObject::Object => {
                    row["object"] = serde_json::to_value(object).unwrap_or(Value::Null);
                }
            }
            row
        })
        .collect();
    let mut metadata = json!({ "resourceVersion": resource_version });
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// `kubectl`'s short age: seconds under 2 minutes, then minutes, hours, days, years.
pub fn age(since: Timestamp, now: Timestamp) -> String {
    let seconds = now.as_second().saturating_sub(since.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 60 * 60 => format!("{}m", s / 60),
        s if s < 48 * 60 * 60 => format!("{}h", s / 3600),
        s if s < 365 * 24 * 60 * 60 => format!("{}d", s / 86_400),
        s => format!("{}y", s / (365 * 86_400)),
    }
}

fn percent(rate: Option<f64>) -> Value {
    rate.map(|r| json!(format!("{:.1}%", r * 100.0)))
        .unwrap_or(json!("-"))
}

fn text(value: Option<impl ToString>) -> Value {
    value.map(|v| json!(v.to_string())).unwrap_or(json!(""))
}

/// An error cut to one short line for a cell (the object has it whole).
fn short(error: Option<&str>) -> Value {
    match error {
        None => json!(""),
        Some(e) => {
            let line = e.lines().next().unwrap_or("");
            let cut: String = line.chars().take(60).collect();
            json!(if cut.len() < line.len() {
                format!("{cut}…")
            } else {
                cut
            })
        }
    }
}

impl Printable for WebhookDelivery {
    fn columns() -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            column("Name", "string", 0, "<endpoint>.<deliveryID>.<attempt>"),
            column("Endpoint", "string", 0, "The WebhookEndpoint"),
            column("Event Type", "string", 0, "The event's type"),
            column(
                "Attempt",
                "integer",
                0,
                "1 for the delivery's first attempt",
            ),
            column(
                "Outcome",
                "string",
                0,
                "Delivered, Failed, Filtered or Held",
            ),
            column("Code", "string", 0, "The receiver's HTTP status"),
            column("Latency", "string", 0, "Time to the response"),
            column("Age", "string", 0, "Since the attempt"),
            column("Event ID", "string", 1, "The event's id"),
            column("Next", "string", 1, "After a failure: Retry or DeadLetter"),
            column("Error", "string", 1, "Why the attempt failed"),
        ];
        COLUMNS
    }

    fn cells(&self, now: Timestamp) -> Vec<Value> {
        vec![
            json!(self.metadata.name),
            json!(self.endpoint),
            json!(self.event_type),
            json!(self.attempt),
            json!(self.outcome.as_str()),
            text(self.status_code),
            text(self.latency_ms.map(|ms| format!("{ms}ms"))),
            json!(age(self.time, now)),
            json!(self.event_id),
            text(self.next.map(|n| n.as_str())),
            short(self.error.as_deref()),
        ]
    }

    fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }
}

impl Printable for WebhookDeadLetter {
    fn columns() -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            column("Name", "string", 0, "<endpoint>.<deliveryID>"),
            column("Endpoint", "string", 0, "The WebhookEndpoint"),
            column("Event Type", "string", 0, "The event's type"),
            column("Attempts", "integer", 0, "Attempts made"),
            column("Reason", "string", 0, "Why it was dead-lettered"),
            column("Age", "string", 0, "Since it was dead-lettered"),
            column("Event ID", "string", 1, "The event's id"),
            column("Last Code", "string", 1, "The last HTTP status"),
            column("Replay", "string", 1, "The replay that made this delivery"),
        ];
        COLUMNS
    }

    fn cells(&self, now: Timestamp) -> Vec<Value> {
        vec![
            json!(self.metadata.name),
            json!(self.endpoint),
            json!(self.event_type),
            json!(self.attempts),
            short(self.reason.as_deref()),
            json!(age(self.dead_lettered_at.unwrap_or(self.event_time), now)),
            json!(self.event_id),
            text(self.last_status_code),
            text(self.replay.as_deref()),
        ]
    }

    fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }
}

impl Printable for WebhookAnalytics {
    fn columns() -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            column("Name", "string", 0, "The WebhookEndpoint"),
            column(
                "Attempts 24h",
                "integer",
                0,
                "Attempts in the last 24 hours",
            ),
            column(
                "Success 24h",
                "string",
                0,
                "Successful attempts in the last 24 hours",
            ),
            column(
                "P95 24h",
                "string",
                0,
                "95th percentile latency, last 24 hours",
            ),
            column("Pending", "integer", 0, "Deliveries waiting or in flight"),
            column("Dead Letters", "integer", 0, "Dead letters kept"),
            column("Last Error", "string", 0, "The most recent failure"),
            column("Attempts 1h", "integer", 1, "Attempts in the last hour"),
            column(
                "Success 1h",
                "string",
                1,
                "Successful attempts in the last hour",
            ),
            column("Delivered", "integer", 1, "Deliveries delivered, ever"),
        ];
        COLUMNS
    }

    fn cells(&self, _now: Timestamp) -> Vec<Value> {
        vec![
            json!(self.metadata.name),
            json!(self.last_day.attempts),
            percent(self.last_day.success_rate),
            text(self.last_day.p95_latency_ms.map(|ms| format!("{ms}ms"))),
            json!(self.queue.pending + self.queue.in_flight + self.queue.queued),
            json!(self.queue.dead_letters),
            short(self.last_error.as_deref()),
            json!(self.last_hour.attempts),
            percent(self.last_hour.success_rate),
            json!(self.totals.delivered),
        ]
    }

    fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now = ts("2026-01-10T00:00:00Z");
        assert_eq!(age(ts("2026-01-09T23:59:15Z"), now), "45s");
        assert_eq!(age(ts("2026-01-09T23:50:00Z"), now), "10m");
        assert_eq!(age(ts("2026-01-09T00:00:00Z"), now), "24h");
        assert_eq!(age(ts("2026-01-05T00:00:00Z"), now), "5d");
        assert_eq!(
            age(ts("2026-01-11T00:00:00Z"), now),
            "0s",
            "clock skew is not negative"
        );
    }

    #[test]
    fn rows_match_columns_and_carry_metadata() {
        let delivery: WebhookDelivery = serde_json::from_value(json!({
            "apiVersion": "query.webhooks.pitchey.io/v1alpha1", "kind": "WebhookDelivery",
            "metadata": {"name": "crm.7.2", "namespace": "crm"},
            "endpoint": "crm", "eventID": "evt_1", "eventType": "user.created", "deliveryID": 7,
            "attempt": 2, "time": "2026-01-09T23:59:00Z", "outcome": "Failed", "next": "Retry",
            "statusCode": 503, "latencyMs": 12, "error": "HTTP 503\nmore"
        }))
        .unwrap();
        let t = table(
            &[delivery],
            IncludeObject::Metadata,
            "42",
            Some("next"),
            ts("2026-01-10T00:00:00Z"),
        );
        assert_eq!(t["metadata"]["continue"], "next");
        let cells = t["rows"][0]["cells"].as_array().unwrap();
        assert_eq!(
            cells.len(),
            t["columnDefinitions"].as_array().unwrap().len()
        );
        assert_eq!(cells[4], "Failed");
        assert_eq!(cells[5], "503");
        assert_eq!(cells[7], "60s");
        assert_eq!(cells[10], "HTTP 503");
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "crm.7.2");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert!(IncludeObject::parse(Some("Everything")).is_err());
    }
}
