//! The endpoint page's charts: attempts bucketed by hour or day with success rate, p50/p95
//! latency, volume and failures by category. Pure: computed from the attempt log.
use jiff::{SignedDuration, Timestamp};

use crate::store::{AttemptLogEntry, AttemptOutcome};

/// Why an attempt failed, as the charts group it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCategory {
    Timeout,
    Connect,
    Tls,
    Client4xx,
    Server5xx,
    Blocked,
    Other,
}

impl ErrorCategory {
    pub const ALL: [ErrorCategory; 7] = [
        ErrorCategory::Timeout,
        ErrorCategory::Connect,
        ErrorCategory::Tls,
        ErrorCategory::Client4xx,
        ErrorCategory::Server5xx,
        ErrorCategory::Blocked,
        ErrorCategory::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ErrorCategory::Timeout => "timeouts",
            ErrorCategory::Connect => "connect",
            ErrorCategory::Tls => "TLS",
            ErrorCategory::Client4xx => "4xx",
            ErrorCategory::Server5xx => "5xx",
            ErrorCategory::Blocked => "blocked",
            ErrorCategory::Other => "other",
        }
    }

    /// The category of a failed attempt, from its status code and recorded error. The engine
    /// records errors as `<kind>: <message>` (`timeout: …`, `connect: …`, `blocked: …`); TLS
    /// failures are connect errors whose message names TLS or a certificate.
    pub fn of(status_code: Option<u16>, error: Option<&str>) -> ErrorCategory {
        match status_code {
            Some(400..=499) => return ErrorCategory::Client4xx,
            Some(500..=599) => return ErrorCategory::Server5xx,
            _ => {}
        }
        let Some(error) = error else {
            return ErrorCategory::Other;
        };
        let lower = error.to_ascii_lowercase();
        let (kind, message) = lower.split_once(':').unwrap_or(("", lower.as_str()));
        let mentions_tls = ["tls", "certificate", "handshake", "x509"]
            .iter()
            .any(|word| message.contains(word));
        match kind.trim() {
            "timeout" => ErrorCategory::Timeout,
            "blocked" => ErrorCategory::Blocked,
            "connect" if mentions_tls => ErrorCategory::Tls,
            "connect" | "reset" => ErrorCategory::Connect,
            _ if mentions_tls => ErrorCategory::Tls,
            _ => ErrorCategory::Other,
        }
    }
}

/// Hour or day buckets (UTC): the store's analytics widths.
pub use crate::store::BucketWidth as Width;

fn seconds(width: Width) -> i64 {
    width.millis() / 1000
}

/// One bucket of the charts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bucket {
    pub start: Timestamp,
    pub attempts: u64,
    pub successes: u64,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    /// Failures per category, in [`ErrorCategory::ALL`] order.
    pub errors: [u64; 7],
}

impl Bucket {
    pub fn success_rate(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.successes as f64 / self.attempts as f64)
    }

    pub fn failures(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// The start of the bucket holding `at`.
fn floor(at: Timestamp, width: Width) -> Timestamp {
    let seconds = at.as_second().div_euclid(seconds(width)) * seconds(width);
    Timestamp::from_second(seconds).unwrap_or(at)
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Buckets `[from, to)` with every bucket present, empty ones too. Attempts outside the range
/// and filtered ones (nothing was sent) are left out.
pub fn bucket(
    attempts: &[AttemptLogEntry],
    from: Timestamp,
    to: Timestamp,
    width: Width,
) -> Vec<Bucket> {
    let first = floor(from, width);
    let step = SignedDuration::from_secs(seconds(width));
    let mut buckets = Vec::new();
    let mut start = first;
    while start < to {
        buckets.push(Bucket {
            start,
            ..Bucket::default()
        });
        let Ok(next) = start.checked_add(step) else {
            break;
        };
        start = next;
    }
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); buckets.len()];
    for entry in attempts {
        let at = entry.record.at;
        if at < from || at >= to || entry.outcome == AttemptOutcome::Filtered {
            continue;
        }
        let index = ((at.as_second() - first.as_second()) / seconds(width)) as usize;
        let Some(bucket) = buckets.get_mut(index) else {
            continue;
        };
        bucket.attempts += 1;
        if entry.success {
            bucket.successes += 1;
        } else {
            let category =
                ErrorCategory::of(entry.record.status_code, entry.record.error.as_deref());
            bucket.errors[category as usize] += 1;
        }
        if let Some(latency) = entry.record.latency_ms {
            latencies[index].push(latency);
        }
    }
    for (bucket, mut values) in buckets.iter_mut().zip(latencies) {
        values.sort_unstable();
        bucket.p50_ms = percentile(&values, 0.50);
        bucket.p95_ms = percentile(&values, 0.95);
    }
    buckets
}

/// The sum of the buckets, with percentiles over all latencies.
pub fn totals(attempts: &[AttemptLogEntry], from: Timestamp, to: Timestamp) -> Bucket {
    let mut all = bucket(attempts, from, to, Width::Day);
    let mut total = Bucket {
        start: from,
        ..Bucket::default()
    };
    let mut latencies: Vec<u64> = attempts
        .iter()
        .filter(|e| e.record.at >= from && e.record.at < to)
        .filter(|e| e.outcome != AttemptOutcome::Filtered)
        .filter_map(|e| e.record.latency_ms)
        .collect();
    latencies.sort_unstable();
    for bucket in all.drain(..) {
        total.attempts += bucket.attempts;
        total.successes += bucket.successes;
        for (sum, part) in total.errors.iter_mut().zip(bucket.errors) {
            *sum += part;
        }
    }
    total.p50_ms = percentile(&latencies, 0.50);
    total.p95_ms = percentile(&latencies, 0.95);
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AttemptRecord, EndpointRef};

    fn attempt(
        at: &str,
        status: Option<u16>,
        latency: u64,
        error: Option<&str>,
    ) -> AttemptLogEntry {
        let success = matches!(status, Some(200..=299));
        AttemptLogEntry {
            seq: 1,
            delivery_id: crate::store::DeliveryId(1),
            event_id: "evt_1".into(),
            event_type: "user.created".into(),
            endpoint: EndpointRef::new("ns", "crm"),
            record: AttemptRecord {
                at: at.parse().unwrap(),
                attempt: 1,
                status_code: status,
                latency_ms: Some(latency),
                error: error.map(str::to_owned),
                response_snippet: None,
            },
            success,
            outcome: if success {
                AttemptOutcome::Delivered
            } else {
                AttemptOutcome::Retry
            },
        }
    }

    #[test]
    fn categories() {
        use ErrorCategory::*;
        assert_eq!(ErrorCategory::of(Some(404), None), Client4xx);
        assert_eq!(ErrorCategory::of(Some(503), Some("HTTP 503")), Server5xx);
        assert_eq!(
            ErrorCategory::of(None, Some("timeout: operation timed out")),
            Timeout
        );
        assert_eq!(
            ErrorCategory::of(None, Some("connect: connection refused")),
            Connect
        );
        assert_eq!(
            ErrorCategory::of(
                None,
                Some("connect: invalid peer certificate: UnknownIssuer")
            ),
            Tls
        );
        assert_eq!(
            ErrorCategory::of(None, Some("blocked: 10.0.0.1 is a private address")),
            Blocked
        );
        assert_eq!(
            ErrorCategory::of(None, Some("reset: connection closed")),
            Connect
        );
        assert_eq!(
            ErrorCategory::of(None, Some("other: protocol error")),
            Other
        );
        assert_eq!(ErrorCategory::of(None, None), Other);
    }

    #[test]
    fn buckets_cover_the_range_and_count_each_attempt_once() {
        let attempts = vec![
            attempt("2026-12-01T10:05:00Z", Some(200), 10, None),
            attempt("2026-12-01T10:10:00Z", Some(200), 30, None),
            attempt("2026-12-01T10:20:00Z", Some(500), 90, Some("HTTP 500")),
            attempt(
                "2026-12-01T12:00:00Z",
                None,
                5000,
                Some("timeout: timed out"),
            ),
            // Outside the range:
            attempt("2026-12-01T09:59:59Z", Some(200), 1, None),
            attempt("2026-12-01T13:00:00Z", Some(200), 1, None),
        ];
        let from: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let to: Timestamp = "2026-12-01T13:00:00Z".parse().unwrap();
        let buckets = bucket(&attempts, from, to, Width::Hour);
        assert_eq!(buckets.len(), 3);
        assert_eq!(buckets[0].attempts, 3);
        assert_eq!(buckets[0].successes, 2);
        assert_eq!(buckets[0].p50_ms, Some(30));
        assert_eq!(buckets[0].p95_ms, Some(90));
        assert_eq!(buckets[0].errors[ErrorCategory::Server5xx as usize], 1);
        assert_eq!(buckets[1].attempts, 0);
        assert_eq!(buckets[1].success_rate(), None);
        assert_eq!(buckets[2].errors[ErrorCategory::Timeout as usize], 1);
        let total = totals(&attempts, from, to);
        assert_eq!(
            (total.attempts, total.successes, total.failures()),
            (4, 2, 2)
        );
        assert_eq!(total.p50_ms, Some(30));
    }

    #[test]
    fn filtered_attempts_are_not_counted() {
        let mut filtered = attempt("2026-12-01T10:05:00Z", None, 0, None);
        filtered.outcome = AttemptOutcome::Filtered;
        let from: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let to: Timestamp = "2026-12-02T00:00:00Z".parse().unwrap();
        let buckets = bucket(&[filtered], from, to, Width::Day);
        assert_eq!(buckets.len(), 1);
        assert_eq!(buckets[0].attempts, 0);
    }

    proptest::proptest! {
        /// Every attempt in the range lands in exactly one bucket, as a success or one category.
        #[test]
        fn conservation(offsets in proptest::collection::vec((0i64..86_400 * 3, proptest::option::of(100u16..600)), 0..200)) {
            let from: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
            let to = from.checked_add(SignedDuration::from_secs(86_400 * 3)).unwrap();
            let attempts: Vec<_> = offsets.iter().map(|(offset, status)| {
                let at = from.checked_add(SignedDuration::from_secs(*offset)).unwrap().to_string();
                attempt(&at, *status, 1, status.is_none().then_some("connect: refused"))
            }).collect();
            for width in [Width::Hour, Width::Day] {
                let buckets = bucket(&attempts, from, to, width);
                let counted: u64 = buckets.iter().map(|b| b.attempts).sum();
                proptest::prop_assert_eq!(counted, attempts.len() as u64);
                for b in &buckets {
                    proptest::prop_assert_eq!(b.successes + b.failures(), b.attempts);
                }
            }
        }
    }
}
