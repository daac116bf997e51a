//! `analytics`: the windows, totals, queue and the chart of the last 24 hours.
use jiff::Timestamp;

use super::{avg_millis, count, deliveries_text, millis, percent, short, table};
use crate::plugin::chart;
use crate::query::table::age;
use crate::query::{AnalyticsWindow, WebhookAnalytics};

fn window_rows(hour: &AnalyticsWindow, day: &AnalyticsWindow) -> Vec<Vec<String>> {
    let row = |label: &str, f: &dyn Fn(&AnalyticsWindow) -> String| {
        vec![label.to_owned(), f(hour), f(day)]
    };
    vec![
        row("Attempts", &|w| w.attempts.to_string()),
        row("Successes", &|w| w.successes.to_string()),
        row("Failures", &|w| w.failures.to_string()),
        row("Success rate", &|w| percent(w.success_rate)),
        row("Availability", &|w| percent(w.availability)),
        row("Avg latency", &|w| avg_millis(w.avg_latency_ms)),
        row("P95 latency", &|w| millis(w.p95_latency_ms)),
    ]
}

/// The chart of `hourly`: attempts and failures per hour on one scale, and the UTC hours.
pub fn hourly_chart(analytics: &WebhookAnalytics) -> String {
    let hourly = &analytics.hourly;
    if hourly.is_empty() {
        return "No hourly data.\n".to_owned();
    }
    let attempts: Vec<u64> = hourly.iter().map(|b| b.attempts).collect();
    let failures: Vec<u64> = hourly.iter().map(|b| b.failures).collect();
    let max = attempts.iter().copied().max().unwrap_or(0);
    let starts: Vec<Timestamp> = hourly.iter().map(|b| b.start).collect();
    let mut out = format!(
        "Last {} hours, one column an hour (UTC), oldest first; ▁ to █ up to {max} attempts:\n",
        hourly.len()
    );
    out.push_str(&format!(
        "  attempts  {}\n",
        chart::sparkline(&attempts, max)
    ));
    out.push_str(&format!(
        "  failures  {}\n",
        chart::sparkline(&failures, max)
    ));
    out.push_str(&format!("            {}\n", chart::hour_axis(&starts, 6)));
    out
}

/// `analytics` as text: the two windows side by side, totals, queue, the last results and the
/// hourly chart.
pub fn analytics_text(a: &WebhookAnalytics, now: Timestamp) -> String {
    let line = |key: &str, value: String| format!("{:<12}{value}\n", format!("{key}:"));
    let namespace = a.metadata.namespace.as_deref().unwrap_or_default();
    let mut out = line(
        "Endpoint",
        format!("{} (namespace {namespace})", a.endpoint),
    );
    out.push('\n');
    out.push_str(&table(
        &["", "LAST HOUR", "LAST 24H"],
        &window_rows(&a.last_hour, &a.last_day),
    ));
    let t = &a.totals;
    let q = &a.queue;
    out.push('\n');
    out.push_str(&line("Totals", deliveries_text(t)));
    out.push_str(&line(
        "Queue",
        format!(
            "{} pending, {} in flight, {} held, {} queued, {}",
            q.pending,
            q.in_flight,
            q.held,
            q.queued,
            count(q.dead_letters, "dead letter", "dead letters")
        ),
    ));
    let when = |t: Option<Timestamp>| {
        t.map_or_else(|| "never".to_owned(), |t| format!("{} ago", age(t, now)))
    };
    out.push_str(&line(
        "Last",
        format!(
            "attempt {}, success {}, failure {}",
            when(a.last_attempt_time),
            when(a.last_success_time),
            when(a.last_failure_time)
        ),
    ));
    if let Some(error) = &a.last_error {
        out.push_str(&line("Last error", short(error, 200)));
    }
    out.push('\n');
    out.push_str(&hourly_chart(a));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_scales_failures_with_attempts() {
        let mut analytics: WebhookAnalytics = serde_json::from_value(serde_json::json!({
            "apiVersion": "query.webhooks.pitchey.io/v1alpha1", "kind": "WebhookAnalytics",
            "metadata": {"name": "crm", "namespace": "crm"}, "endpoint": "crm",
            "lastHour": {"attempts": 0, "successes": 0, "failures": 0},
            "lastDay": {"attempts": 0, "successes": 0, "failures": 0},
            "totals": {"delivered": 0, "failedAttempts": 0, "deadLettered": 0, "filtered": 0, "retries": 0},
            "queue": {"pending": 0, "inFlight": 0, "held": 0, "queued": 0, "deadLetters": 0},
            "hourly": [
                {"start": "2026-01-15T10:00:00Z", "attempts": 8, "successes": 4, "failures": 4},
                {"start": "2026-01-15T11:00:00Z", "attempts": 0, "successes": 0, "failures": 0}
            ]
        }))
        .unwrap();
        let chart = hourly_chart(&analytics);
        assert!(chart.contains("up to 8 attempts"), "{chart}");
        assert!(chart.contains("  attempts  █·\n"), "{chart}");
        assert!(chart.contains("  failures  ▄·\n"), "{chart}");
        assert!(chart.ends_with("            10\n"), "{chart}");
        analytics.hourly.clear();
        assert_eq!(hourly_chart(&analytics), "No hourly data.\n");
    }
}
