//! Attempts (`history`, `describe`), `tail`'s lines as they arrive, and dead letters.
use jiff::Timestamp;

use super::{dash, millis, short, table, ERROR_WIDTH};
use crate::api::time::rfc3339;
use crate::query::table::age;
use crate::query::{WebhookDeadLetter, WebhookDelivery};

const HISTORY_HEADERS: [&str; 10] = [
    "NAME",
    "EVENT TYPE",
    "EVENT ID",
    "ATTEMPT",
    "OUTCOME",
    "NEXT",
    "CODE",
    "LATENCY",
    "AGE",
    "ERROR",
];

fn history_cells(d: &WebhookDelivery, now: Timestamp) -> Vec<String> {
    vec![
        d.metadata.name.clone().unwrap_or_default(),
        d.event_type.clone(),
        d.event_id.clone(),
        d.attempt.to_string(),
        d.outcome.as_str().to_owned(),
        dash(d.next.map(|n| n.as_str())),
        dash(d.status_code),
        millis(d.latency_ms),
        age(d.time, now),
        d.error
            .as_deref()
            .map_or_else(|| "-".to_owned(), |e| short(e, ERROR_WIDTH)),
    ]
}

/// Attempts as a table, in the order given (the API's: newest first).
pub fn history_text(attempts: &[WebhookDelivery], now: Timestamp) -> String {
    let rows: Vec<Vec<String>> = attempts.iter().map(|d| history_cells(d, now)).collect();
    table(&HISTORY_HEADERS, &rows)
}

/// Widths of `tail`'s columns: a stream cannot measure its rows, so typical widths are used and
/// longer cells push the rest of their line along.
const TAIL_WIDTHS: [usize; 7] = [20, 16, 18, 7, 10, 10, 4];
const TAIL_HEADERS: [&str; 9] = [
    "TIME",
    "NAME",
    "EVENT TYPE",
    "ATTEMPT",
    "OUTCOME",
    "NEXT",
    "CODE",
    "LATENCY",
    "ERROR",
];

fn tail_line(cells: &[String]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        line.push_str(cell);
        if i + 1 < cells.len() {
            let width = TAIL_WIDTHS.get(i).copied().unwrap_or(8);
            let pad = width.saturating_sub(cell.chars().count()) + 3;
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    line.truncate(line.trim_end().len());
    line.push('\n');
    line
}

/// The header `tail` prints before its first attempt.
pub fn tail_header() -> String {
    let cells: Vec<String> = TAIL_HEADERS.iter().map(|h| (*h).to_owned()).collect();
    tail_line(&cells)
}

/// One attempt as `tail` prints it as it arrives: its time rather than an age.
pub fn tail_text(d: &WebhookDelivery) -> String {
    tail_line(&[
        rfc3339(d.time),
        d.metadata.name.clone().unwrap_or_default(),
        d.event_type.clone(),
        d.attempt.to_string(),
        d.outcome.as_str().to_owned(),
        dash(d.next.map(|n| n.as_str())),
        dash(d.status_code),
        millis(d.latency_ms),
        d.error
            .as_deref()
            .map_or_else(|| "-".to_owned(), |e| short(e, ERROR_WIDTH)),
    ])
}

/// Dead letters as a table; with `all_namespaces` a NAMESPACE column first.
pub fn dead_letters_text(
    dead_letters: &[WebhookDeadLetter],
    all_namespaces: bool,
    now: Timestamp,
) -> String {
    let mut headers = vec![
        "NAME",
        "ENDPOINT",
        "EVENT TYPE",
        "EVENT ID",
        "ATTEMPTS",
        "LAST CODE",
        "AGE",
        "REASON",
    ];
    if all_namespaces {
        headers.insert(0, "NAMESPACE");
    }
    let rows: Vec<Vec<String>> = dead_letters
        .iter()
        .map(|d| {
            let mut cells = vec![
                d.metadata.name.clone().unwrap_or_default(),
                d.endpoint.clone(),
                d.event_type.clone(),
                d.event_id.clone(),
                d.attempts.to_string(),
                dash(d.last_status_code),
                age(d.dead_lettered_at.unwrap_or(d.event_time), now),
                d.reason
                    .as_deref()
                    .or(d.last_error.as_deref())
                    .map_or_else(|| "-".to_owned(), |r| short(r, ERROR_WIDTH)),
            ];
            if all_namespaces {
                cells.insert(0, d.metadata.namespace.clone().unwrap_or_default());
            }
            cells
        })
        .collect();
    table(&headers, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines_keep_their_columns_and_push_long_cells_along() {
        let delivery: WebhookDelivery = serde_json::from_value(serde_json::json!({
            "apiVersion": "query.webhooks.pitchey.io/v1alpha1", "kind": "WebhookDelivery",
            "metadata": {"name": "a-very-long-endpoint-name.12.1", "namespace": "crm"},
            "endpoint": "a-very-long-endpoint-name", "eventID": "evt_1",
            "eventType": "user.created", "deliveryID": 12, "attempt": 1,
            "time": "2026-01-15T12:00:00Z", "outcome": "Held"
        }))
        .unwrap();
        let header = tail_header();
        let line = tail_text(&delivery);
        assert_eq!(header.find("NAME"), line.find("a-very"));
        assert!(line
            .starts_with("2026-01-15T12:00:00Z   a-very-long-endpoint-name.12.1   user.created"));
        assert!(
            line.ends_with("Held         -            -      -          -\n"),
            "{line:?}"
        );
        let text = history_text(&[delivery], "2026-01-15T12:01:00Z".parse().unwrap());
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().nth(1).unwrap().contains("   60s   "));
    }
}
