//! What the plugin prints, as pure functions of the objects read and the time: kubectl-style
//! tables (columns padded to the widest cell, three spaces apart, `-` for nothing), describe's
//! `Key:  value` blocks, and the JSON documents of `-o json`. Nothing here does I/O. One file per
//! view: `status`, `history` (attempts, `tail`'s lines, dead letters), `analytics`, `describe`,
//! and `actions` (what test, replay, publish, suspend and rotate print).
use jiff::Timestamp;
use serde::Serialize;

use crate::api::endpoint::DeliveryStats;
use crate::query::objects::AnalyticsTotals;
use crate::query::table::age;

mod actions;
mod analytics;
mod describe;
mod history;
mod status;

pub use actions::*;
pub use analytics::*;
pub use describe::*;
pub use history::*;
pub use status::*;

/// Errors in a table cell are cut to this many characters.
const ERROR_WIDTH: usize = 60;

/// Rows under headers, each column as wide as its widest cell, three spaces apart, no trailing
/// spaces: what `kubectl get` prints.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            text.push_str(cell);
            if i + 1 < cells.len() {
                let pad = widths[i] - cell.chars().count() + 3;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text.truncate(text.trim_end().len());
        text.push('\n');
        text
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Pretty JSON and a newline.
pub fn json(value: &impl Serialize) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("\"{e}\""));
    text.push('\n');
    text
}

/// One object as a JSON line (`tail -o json`).
pub fn json_line(value: &impl Serialize) -> String {
    let mut text = serde_json::to_string(value).unwrap_or_else(|e| format!("\"{e}\""));
    text.push('\n');
    text
}

fn dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `98.5%`, or `-`.
pub fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// `12ms`, or `-`.
fn millis(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms}ms"))
}

/// An average latency: whole milliseconds.
fn avg_millis(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| format!("{}ms", ms.round()))
}

/// An error on one short line: its first line, cut to `width` characters with `…`.
pub fn short(error: &str, width: usize) -> String {
    let line = error.lines().next().unwrap_or("").trim();
    if line.chars().count() <= width {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Attempts per second: `12/s`, `1.5/s`, `0.03/s`, `<0.01/s`, `0/s`.
pub fn rate(per_second: f64) -> String {
    if per_second <= 0.0 {
        "0/s".to_owned()
    } else if per_second >= 10.0 {
        format!("{per_second:.0}/s")
    } else if per_second >= 1.0 {
        format!("{per_second:.1}/s")
    } else if per_second >= 0.01 {
        format!("{per_second:.2}/s")
    } else {
        "<0.01/s".to_owned()
    }
}

/// `1 retry`, `3 retries`.
pub fn count(n: impl Into<i128>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `3m ago`, from an RFC 3339 time as resources write them (the text itself if unreadable).
fn ago_text(time: &str, now: Timestamp) -> String {
    match time.parse::<Timestamp>() {
        Ok(at) => format!("{} ago", age(at, now)),
        Err(_) => time.to_owned(),
    }
}

/// An endpoint's totals on one line.
fn deliveries_text(t: &AnalyticsTotals) -> String {
    format!(
        "{} delivered, {}, {} dead-lettered, {}, {} filtered",
        t.delivered,
        count(t.failed_attempts, "failed attempt", "failed attempts"),
        t.dead_lettered,
        count(t.retries, "retry", "retries"),
        t.filtered,
    )
}

/// The totals an endpoint's status carries, as the analytics' (older status, same meaning).
fn totals_of(d: &DeliveryStats) -> AnalyticsTotals {
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    AnalyticsTotals {
        delivered: n(d.total_delivered),
        failed_attempts: n(d.total_failed),
        dead_lettered: n(d.total_dead_lettered),
        filtered: n(d.total_filtered),
        retries: n(d.total_retries),
    }
}

/// The last failure's error and when it happened: from the analytics when read, else from the
/// endpoint's status.
pub fn last_error(
    analytics: Option<&crate::query::WebhookAnalytics>,
    delivery: Option<&DeliveryStats>,
) -> Option<(String, Option<Timestamp>)> {
    match analytics {
        Some(a) => a.last_error.clone().map(|e| (e, a.last_failure_time)),
        None => delivery.and_then(|d| {
            d.last_error.clone().map(|e| {
                let at = d.last_failure_time.as_deref().and_then(|t| t.parse().ok());
                (e, at)
            })
        }),
    }
}

/// `error (3m ago)`, cut to `width`.
fn error_with_age(error: &str, at: Option<Timestamp>, width: usize, now: Timestamp) -> String {
    match at {
        Some(at) => format!("{} ({} ago)", short(error, width), age(at, now)),
        None => short(error, width),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_like_kubectl() {
        let text = table(
            &["NAME", "READY", "LAST ERROR"],
            &[
                vec!["crm".into(), "True".into(), "-".into()],
                vec!["billing-prod".into(), "False".into(), "HTTP 503".into()],
            ],
        );
        assert_eq!(
            text,
            "NAME           READY   LAST ERROR\n\
             crm            True    -\n\
             billing-prod   False   HTTP 503\n"
        );
        assert_eq!(table(&["A", "B"], &[]), "A   B\n");
    }

    #[test]
    fn cells_are_short_and_readable() {
        assert_eq!(short("first line\nsecond", 60), "first line");
        assert_eq!(short("abcdef", 4), "abc…");
        assert_eq!(short("abcd", 4), "abcd");
        assert_eq!(percent(Some(0.985)), "98.5%");
        assert_eq!(percent(None), "-");
        assert_eq!(rate(0.0), "0/s");
        assert_eq!(rate(36.0 / 3600.0), "0.01/s");
        assert_eq!(
            rate(12.0 / 3600.0),
            "<0.01/s",
            "some traffic never reads as none"
        );
        assert_eq!(count(1u32, "retry", "retries"), "1 retry");
        assert_eq!(count(0i64, "retry", "retries"), "0 retries");
        assert_eq!(rate(2.5), "2.5/s");
        assert_eq!(rate(120.4), "120/s");
        assert_eq!(avg_millis(Some(12.6)), "13ms");
    }
}
