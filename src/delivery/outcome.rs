//! What one attempt produced ([`HttpResult`]) and what happens next ([`Outcome`]).
//!
//! | attempt | outcome |
//! | --- | --- |
//! | 2xx | `Delivered` |
//! | 5xx, 408, 429, timeout, connection refused/reset, other transport errors | `Retry` while retries are left, then `DeadLetter` |
//! | 410 Gone | `DeadLetter` with `endpoint_gone` (the dispatcher surfaces it on the endpoint) |
//! | other 4xx, 3xx (redirects are never followed), other statuses | `DeadLetter` |
//! | destination refused by the egress policy | `Blocked` (never retried) |
//!
//! A `Retry-After` on a retried response is honoured: the delay is the larger of it and the
//! backoff, clamped to the policy's `max_delay`.
use std::time::Duration;

use http::StatusCode;
use jiff::Timestamp;

use super::retry::{self, RetryPolicy};

/// How an attempt failed below HTTP (or, for `Redirect`, why a 3xx is a failure).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No complete response within the request's timeout (or connect timeout).
    Timeout,
    /// The connection could not be established (refused, unreachable, DNS failure, TLS handshake).
    Connect,
    /// The connection was reset or closed before a complete response head arrived.
    Reset,
    /// The receiver answered 3xx; redirects are not followed.
    Redirect,
    /// The egress policy refused the destination.
    Blocked,
    /// Anything else (protocol errors, …).
    Other,
}

impl ErrorKind {
    /// A short, stable name for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Reset => "reset",
            ErrorKind::Redirect => "redirect",
            ErrorKind::Blocked => "blocked",
            ErrorKind::Other => "other",
        }
    }
}

/// An attempt's failure, with a human-readable message for status and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptError {
    pub kind: ErrorKind,
    pub message: String,
}

/// What the receiver answered to one attempt (or why there was no answer), as recorded for status
/// and metrics. The store's record of an attempt is [`crate::store::AttemptResult`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpResult {
    /// The response status, if a response head arrived.
    pub status: Option<u16>,
    /// From sending the request to the end of reading the (capped) response.
    pub latency: Duration,
    /// The first bytes of the response body (lossy UTF-8), for diagnostics.
    pub body_snippet: String,
    /// The body was longer than what was kept (or its reading was cut short).
    pub body_truncated: bool,
    /// Why the attempt failed below HTTP, or `Redirect` for a 3xx.
    pub error: Option<AttemptError>,
    /// The raw `Retry-After` header of the response, parsed by [`decide`] against its clock.
    pub retry_after: Option<String>,
    /// The HTTP version the response came with (`HTTP/1.1`, `HTTP/2.0`), for diagnostics.
    pub http_version: Option<String>,
    /// For a destination the egress policy refused: the address (or host) it refused.
    pub refused_address: Option<String>,
}

impl HttpResult {
    /// A result for an attempt that failed below HTTP.
    pub fn failed(kind: ErrorKind, message: impl Into<String>, latency: Duration) -> Self {
        Self {
            latency,
            error: Some(AttemptError {
                kind,
                message: message.into(),
            }),
            ..Self::default()
        }
    }

    /// The error kind, if any.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        self.error.as_ref().map(|error| error.kind)
    }

    /// A 2xx response.
    pub fn is_success(&self) -> bool {
        self.status
            .is_some_and(|status| (200..300).contains(&status))
    }

    /// Counts as a failure for the circuit breaker: the endpoint is unhealthy (transport errors,
    /// 5xx, 408). A 4xx (including 429, which the rate limiter handles), a 3xx or a refused
    /// destination says nothing about the endpoint's health.
    pub fn is_endpoint_failure(&self) -> bool {
        match self.status {
            Some(status) => status >= 500 || status == 408,
            None => !matches!(self.error_kind(), Some(ErrorKind::Blocked)),
        }
    }

    /// The receiver asks us to slow down: 429, 503, or a `Retry-After` header. Feed it to
    /// [`super::ratelimit::RateLimiter::on_throttled`].
    pub fn is_throttled(&self) -> bool {
        matches!(self.status, Some(429 | 503)) || self.retry_after.is_some()
    }

    /// One line describing the attempt, e.g. `HTTP 503 Service Unavailable` or `timeout: …`.
    pub fn summary(&self) -> String {
        match (&self.error, self.status) {
            (Some(error), _) => format!("{}: {}", error.kind.as_str(), error.message),
            (None, Some(status)) => describe_status(status),
            (None, None) => "no response".to_string(),
        }
    }
}

fn describe_status(status: u16) -> String {
    match StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
    {
        Some(reason) => format!("HTTP {status} {reason}"),
        None => format!("HTTP {status}"),
    }
}

/// What happens after an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver accepted the delivery (2xx).
    Delivered { status: u16, latency: Duration },
    /// Try again at `at` (= now + `after`).
    Retry {
        at: Timestamp,
        after: Duration,
        reason: String,
    },
    /// Give up: not retryable, or retries exhausted. `endpoint_gone` is set for 410 Gone.
    DeadLetter { reason: String, endpoint_gone: bool },
    /// The egress policy refused the destination; not retried.
    Blocked { reason: String },
}

impl Outcome {
    /// A short, stable name for metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::DeadLetter { .. } => "dead_letter",
            Outcome::Blocked { .. } => "blocked",
        }
    }
}

enum Verdict {
    Success(u16),
    Retryable(String),
    Permanent { reason: String, gone: bool },
    Blocked(String),
}

fn classify(result: &HttpResult) -> Verdict {
    if let Some(error) = result
        .error
        .as_ref()
        .filter(|error| error.kind == ErrorKind::Blocked)
    {
        return Verdict::Blocked(error.message.clone());
    }
    match result.status {
        Some(status) if (200..300).contains(&status) => Verdict::Success(status),
        Some(status) if status >= 500 || status == 408 || status == 429 => {
            Verdict::Retryable(result.summary())
        }
        Some(410) => Verdict::Permanent {
            reason: format!("{} (endpoint gone)", result.summary()),
            gone: true,
        },
        Some(_) => Verdict::Permanent {
            reason: result.summary(),
            gone: false,
        },
        None => Verdict::Retryable(result.summary()),
    }
}

/// Retries a delivery may have: the policy's, plus the immediate one when it is on.
fn retries_allowed(policy: &RetryPolicy) -> u32 {
    policy
        .max_retries
        .saturating_add(u32::from(policy.immediate_retry))
}

/// The wait before retrying after failed attempt number `attempt` (1-based). With the immediate
/// retry on, a 5xx or transport failure of the first attempt is retried at once and the delays
/// then start at the first (`baseDelay`): at once, 1 s, 2 s, 4 s by default. A first failure of
/// another kind (429, 408) waits `baseDelay` as usual.
fn backoff(
    policy: &RetryPolicy,
    result: &HttpResult,
    attempt: u32,
    jitter_sample: f64,
) -> Duration {
    if !policy.immediate_retry {
        return retry::delay(policy, attempt, jitter_sample);
    }
    let server_or_transport = result.status.is_none_or(|code| code >= 500);
    if attempt <= 1 && server_or_transport {
        return Duration::ZERO;
    }
    retry::delay(policy, attempt.saturating_sub(1), jitter_sample)
}

/// Decides what follows attempt number `attempt` (1 = the first attempt) of a delivery.
///
/// `now` is the time the attempt finished; `jitter_sample` a uniform random number in `[0, 1)`
/// (see [`retry::delay`]). Pure: the same inputs give the same outcome.
pub fn decide(
    policy: &RetryPolicy,
    result: &HttpResult,
    attempt: u32,
    now: Timestamp,
    jitter_sample: f64,
) -> Outcome {
    match classify(result) {
        Verdict::Success(status) => Outcome::Delivered {
            status,
            latency: result.latency,
        },
        Verdict::Blocked(reason) => Outcome::Blocked { reason },
        Verdict::Permanent { reason, gone } => Outcome::DeadLetter {
            reason,
            endpoint_gone: gone,
        },
        Verdict::Retryable(reason) if attempt > retries_allowed(policy) => Outcome::DeadLetter {
            reason: format!("gave up after {attempt} attempts; last: {reason}"),
            endpoint_gone: false,
        },
        Verdict::Retryable(reason) => {
            let backoff = backoff(policy, result, attempt, jitter_sample);
            let requested = result
                .retry_after
                .as_deref()
                .and_then(|value| retry::parse_retry_after(value, now.into()));
            let after = requested
                .map_or(backoff, |asked| asked.max(backoff))
                .min(policy.max_delay);
            let at = now.saturating_add(after).unwrap_or(Timestamp::MAX);
            Outcome::Retry { at, after, reason }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn status(code: u16) -> HttpResult {
        HttpResult {
            status: Some(code),
            latency: Duration::from_millis(12),
            ..Default::default()
        }
    }

    fn decide_first(result: &HttpResult) -> Outcome {
        decide(&RetryPolicy::default(), result, 1, now(), 0.5)
    }

    #[test]
    fn success_is_delivered() {
        for code in [200, 201, 204, 299] {
            assert_eq!(
                decide_first(&status(code)),
                Outcome::Delivered {
                    status: code,
                    latency: Duration::from_millis(12)
                }
            );
        }
    }

    #[test]
    fn retryable_statuses_and_errors_follow_the_schedule() {
        let retryable = [
            status(500),
            status(502),
            status(503),
            status(408),
            status(429),
            status(599),
        ]
        .into_iter()
        .chain(
            [
                ErrorKind::Timeout,
                ErrorKind::Connect,
                ErrorKind::Reset,
                ErrorKind::Other,
            ]
            .map(|kind| HttpResult::failed(kind, "x", Duration::ZERO)),
        );
        // Without the immediate retry (an endpoint's own schedule): 1 s, 2 s, 4 s.
        let own = RetryPolicy {
            immediate_retry: false,
            ..RetryPolicy::default()
        };
        for result in retryable {
            for (attempt, secs) in [(1, 1), (2, 2), (3, 4)] {
                let outcome = decide(&own, &result, attempt, now(), 0.5);
                let Outcome::Retry { at, after, .. } = outcome else {
                    panic!("{result:?} → {outcome:?}")
                };
                assert_eq!(after, Duration::from_secs(secs));
                assert_eq!(at.as_second(), now().as_second() + secs as i64);
            }
            let last = decide(&own, &result, 4, now(), 0.5);
            assert!(
                matches!(&last, Outcome::DeadLetter { reason, endpoint_gone: false } if reason.starts_with("gave up after 4 attempts")),
                "{last:?}"
            );
        }
    }

    /// The document's schedule, the default: a 5xx or a transport failure is retried at once,
    /// then after 1 s, 2 s and 4 s; a first 408 or 429 waits 1 s instead of the immediate retry.
    #[test]
    fn the_default_schedule_is_the_documents() {
        let immediate: Vec<HttpResult> = [status(500), status(503)]
            .into_iter()
            .chain(
                [ErrorKind::Timeout, ErrorKind::Connect, ErrorKind::Reset]
                    .map(|kind| HttpResult::failed(kind, "x", Duration::ZERO)),
            )
            .collect();
        let schedules = immediate
            .into_iter()
            .map(|r| (r, [0, 1, 2, 4]))
            .chain([status(408), status(429)].map(|r| (r, [1, 1, 2, 4])));
        for (result, delays) in schedules {
            for (attempt, secs) in (1..).zip(delays) {
                let outcome = decide(&RetryPolicy::default(), &result, attempt, now(), 0.5);
                let Outcome::Retry { after, .. } = outcome else {
                    panic!("{result:?} attempt {attempt} → {outcome:?}")
                };
                assert_eq!(
                    after,
                    Duration::from_secs(secs),
                    "{result:?} attempt {attempt}"
                );
            }
            let last = decide(&RetryPolicy::default(), &result, 5, now(), 0.5);
            assert!(
                matches!(&last, Outcome::DeadLetter { reason, .. } if reason.starts_with("gave up after 5 attempts")),
                "{last:?}"
            );
        }
    }

    #[test]
    fn client_errors_and_redirects_are_dead_letters() {
        for code in [400, 401, 403, 404, 422] {
            assert!(matches!(
                decide_first(&status(code)),
                Outcome::DeadLetter {
                    endpoint_gone: false,
                    ..
                }
            ));
        }
        let gone = decide_first(&status(410));
        assert_eq!(
            gone,
            Outcome::DeadLetter {
                reason: "HTTP 410 Gone (endpoint gone)".into(),
                endpoint_gone: true
            }
        );
        let redirect = HttpResult {
            status: Some(301),
            error: Some(AttemptError {
                kind: ErrorKind::Redirect,
                message: "redirect to https://elsewhere/ not followed".into(),
            }),
            ..Default::default()
        };
        assert!(
            matches!(decide_first(&redirect), Outcome::DeadLetter { reason, .. } if reason.contains("not followed"))
        );
    }

    #[test]
    fn blocked_is_never_retried() {
        let blocked =
            HttpResult::failed(ErrorKind::Blocked, "127.0.0.1 is loopback", Duration::ZERO);
        assert_eq!(
            decide_first(&blocked),
            Outcome::Blocked {
                reason: "127.0.0.1 is loopback".into()
            }
        );
        assert!(!blocked.is_endpoint_failure());
    }

    #[test]
    fn retry_after_is_honoured_and_clamped() {
        let mut throttled = status(429);
        throttled.retry_after = Some("30".into());
        assert!(
            matches!(decide_first(&throttled), Outcome::Retry { after, .. } if after == Duration::from_secs(30))
        );
        throttled.retry_after = Some(httpdate::fmt_http_date(
            std::time::SystemTime::from(now()) + Duration::from_secs(45),
        ));
        assert!(
            matches!(decide_first(&throttled), Outcome::Retry { after, .. } if after == Duration::from_secs(45))
        );
        throttled.retry_after = Some("86400".into());
        assert!(
            matches!(decide_first(&throttled), Outcome::Retry { after, .. } if after == Duration::from_secs(3600))
        );
        // Never earlier than the backoff.
        throttled.retry_after = Some("0".into());
        assert!(
            matches!(decide(&RetryPolicy::default(), &throttled, 4, now(), 0.5), Outcome::Retry { after, .. } if after == Duration::from_secs(4))
        );
        throttled.retry_after = Some("garbage".into());
        assert!(
            matches!(decide_first(&throttled), Outcome::Retry { after, .. } if after == Duration::from_secs(1))
        );
        assert!(throttled.is_throttled());
    }

    #[test]
    fn breaker_and_limiter_signals() {
        assert!(status(500).is_endpoint_failure() && status(408).is_endpoint_failure());
        assert!(
            !status(429).is_endpoint_failure()
                && !status(404).is_endpoint_failure()
                && !status(200).is_endpoint_failure()
        );
        assert!(HttpResult::failed(ErrorKind::Timeout, "t", Duration::ZERO).is_endpoint_failure());
        assert!(
            status(503).is_throttled() && status(429).is_throttled() && !status(500).is_throttled()
        );
    }

    proptest! {
        #[test]
        fn decide_never_panics_and_respects_max_delay(
            code in proptest::option::of(0u16..1000), attempt in any::<u32>(), retry_after in proptest::option::of(".{0,30}"),
            secs in any::<i32>(), sample in any::<f64>(), max_delay in any::<u64>(),
        ) {
            let policy = RetryPolicy { max_delay: Duration::from_millis(max_delay), jitter_percent: 50, ..Default::default() };
            let result = HttpResult { status: code, retry_after, ..Default::default() };
            let now = Timestamp::from_second(i64::from(secs)).unwrap();
            match decide(&policy, &result, attempt, now, sample) {
                Outcome::Retry { at, after, .. } => {
                    prop_assert!(after <= policy.max_delay);
                    prop_assert!(attempt <= policy.max_retries);
                    prop_assert!(at >= now);
                }
                Outcome::Delivered { status, .. } => prop_assert!((200..300).contains(&status)),
                Outcome::DeadLetter { .. } | Outcome::Blocked { .. } => {}
            }
        }
    }
}
