//! Per-endpoint gates: concurrency, circuit breaker and rate limiter, held in memory by the
//! dispatcher that owns the endpoint. Decisions are made by the pure delivery types; this file
//! only keeps one of each per endpoint.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::api::policy::EffectivePolicy;
use crate::delivery::circuit::{BreakerState, CircuitBreaker, CircuitConfig, Permit};
use crate::delivery::outcome::{ErrorKind, HttpResult};
use crate::delivery::performance::Observed;
use crate::delivery::ratelimit::{AttemptSignal, Cut, RateLimitConfig, RateLimiter};
use crate::delivery::retry::parse_retry_after;
use crate::store::EndpointRef;

struct EndpointGate {
    breaker: CircuitBreaker,
    limiter: RateLimiter,
    in_flight: usize,
    circuit: CircuitConfig,
    rate: RateLimitConfig,
}

/// The outcome of asking an endpoint's gates.
pub enum Gate {
    /// Send now; give the permit back with [`Gates::finish`].
    Go(Permit),
    /// The endpoint already has its maximum in flight: send when one of those finishes.
    Busy,
    /// Not before this instant.
    Later(Instant),
}

/// What the breaker and the rate limiter did after an attempt, for Events and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
    /// The adaptive limiter lowered the endpoint's rate after this attempt: why, and to what
    /// ([`Cut::rate_per_minute`]).
    pub rate_cut: Option<Cut>,
    /// The rate was already below the configured one before this attempt (so a cut now is not
    /// the first of an episode).
    pub rate_was_cut: bool,
}

/// A snapshot for status.
#[derive(Clone, Copy, Debug)]
pub struct GateSnapshot {
    pub state: BreakerState,
    pub since: Instant,
    pub consecutive_failures: u32,
    pub rate_per_minute: f64,
    /// The allowed rate is below the configured one (the adaptive limiter cut it).
    pub rate_is_cut: bool,
    /// The limiter's latest cut (why and when), also after it has recovered.
    pub last_rate_cut: Option<Cut>,
}

#[derive(Default)]
pub struct Gates {
    inner: Mutex<HashMap<EndpointRef, EndpointGate>>,
}

impl Gates {
    /// Asks whether a delivery to `endpoint` may be sent at `now`.
    pub fn acquire(
        &self,
        endpoint: &EndpointRef,
        policy: &EffectivePolicy,
        now: Instant,
        max_in_flight: usize,
    ) -> Gate {
        let circuit = CircuitConfig::from(&policy.circuit_breaker);
        let rate = RateLimitConfig::from(&policy.rate_limit);
        let mut gates = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let gate = gates
            .entry(endpoint.clone())
            .or_insert_with(|| EndpointGate {
                breaker: CircuitBreaker::new(circuit, now),
                limiter: RateLimiter::new(rate, now),
                in_flight: 0,
                circuit,
                rate,
            });
        if gate.circuit != circuit {
            gate.breaker.set_config(circuit);
            gate.circuit = circuit;
        }
        if gate.rate != rate {
            gate.limiter.set_config(rate, now);
            gate.rate = rate;
        }
        if gate.in_flight >= max_in_flight {
            return Gate::Busy;
        }
        let permit = match gate.breaker.try_acquire(now) {
            Ok(permit) => permit,
            Err(rejected) => return Gate::Later(rejected.retry_at()),
        };
        if let Err(not_before) = gate.limiter.try_acquire(now) {
            gate.breaker.abandon(permit);
            return Gate::Later(not_before);
        }
        gate.in_flight += 1;
        Gate::Go(permit)
    }

    /// Reports an attempt's result to the endpoint's breaker and limiter.
    pub fn finish(
        &self,
        endpoint: &EndpointRef,
        permit: Permit,
        result: &HttpResult,
        now: Instant,
    ) -> Transition {
        let mut gates = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(gate) = gates.get_mut(endpoint) else {
            return Transition {
                from: BreakerState::Closed,
                to: BreakerState::Closed,
                rate_cut: None,
                rate_was_cut: false,
            };
        };
        gate.in_flight = gate.in_flight.saturating_sub(1);
        let from = gate.breaker.state();
        if result.is_endpoint_failure() {
            gate.breaker.on_failure(permit, now);
        } else {
            gate.breaker.on_success(permit, now);
        }
        let rate_was_cut = gate.limiter.is_cut();
        let rate_cut = gate.limiter.on_attempt(now, &attempt_signal(result));
        Transition {
            from,
            to: gate.breaker.state(),
            rate_cut,
            rate_was_cut,
        }
    }

    /// Gives a permit back without an attempt (the delivery could not be prepared, or its
    /// transform dropped it): the breaker's probe and the rate limit's token are not used up.
    pub fn abandon(&self, endpoint: &EndpointRef, permit: Permit) {
        let mut gates = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gate) = gates.get_mut(endpoint) {
            gate.in_flight = gate.in_flight.saturating_sub(1);
            gate.breaker.abandon(permit);
            gate.limiter.refund();
        }
    }

    pub fn snapshot(&self, endpoint: &EndpointRef) -> Option<GateSnapshot> {
        let gates = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        gates.get(endpoint).map(|gate| GateSnapshot {
            state: gate.breaker.state(),
            since: gate.breaker.since(),
            consecutive_failures: gate.breaker.consecutive_failures(),
            rate_per_minute: gate.limiter.current_rate_per_minute(),
            rate_is_cut: gate.limiter.is_cut(),
            last_rate_cut: gate.limiter.last_cut(),
        })
    }

    /// Whether `endpoint` has `max_in_flight` attempts in flight (a delivery to it would wait).
    pub fn is_full(&self, endpoint: &EndpointRef, max_in_flight: usize) -> bool {
        let gates = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        gates
            .get(endpoint)
            .is_some_and(|gate| gate.in_flight >= max_in_flight)
    }

    /// Attempts in flight to `endpoint`.
    pub fn in_flight_of(&self, endpoint: &EndpointRef) -> usize {
        let gates = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        gates.get(endpoint).map_or(0, |gate| gate.in_flight)
    }

    /// Attempts in flight per endpoint, for the endpoints that have any.
    pub fn in_flight(&self) -> Vec<(EndpointRef, usize)> {
        let gates = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        gates
            .iter()
            .filter(|(_, gate)| gate.in_flight > 0)
            .map(|(endpoint, gate)| (endpoint.clone(), gate.in_flight))
            .collect()
    }

    /// Forgets an endpoint (deleted).
    pub fn remove(&self, endpoint: &EndpointRef) {
        let mut gates = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        gates.remove(endpoint);
    }

    /// Forgets the endpoints `keep` rejects that have no attempt in flight (their partition
    /// moved to another replica, which starts them afresh); returns them.
    pub fn forget_unless(&self, keep: impl Fn(&EndpointRef) -> bool) -> Vec<EndpointRef> {
        let mut gates = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let forgotten: Vec<EndpointRef> = gates
            .iter()
            .filter(|(endpoint, gate)| gate.in_flight == 0 && !keep(endpoint))
            .map(|(endpoint, _)| endpoint.clone())
            .collect();
        for endpoint in &forgotten {
            gates.remove(endpoint);
        }
        forgotten
    }
}

/// What the rate limiter needs to know about an attempt.
fn attempt_signal(result: &HttpResult) -> AttemptSignal {
    let retry_after = result
        .retry_after
        .as_deref()
        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
    AttemptSignal {
        observed: observed(result),
        latency: result.latency,
        success: result.is_success(),
        throttled: result.is_throttled(),
        retry_after,
    }
}

/// How the attempt went for the performance tracker: any response head is an answer (a 3xx
/// comes with a `Redirect` error but was answered); a destination the egress policy refused was
/// never sent, so it says nothing about the endpoint.
fn observed(result: &HttpResult) -> Option<Observed> {
    if result.status.is_some() {
        return Some(Observed::Answered);
    }
    match result.error_kind() {
        Some(ErrorKind::Blocked) => None,
        Some(ErrorKind::Timeout) => Some(Observed::TimedOut),
        Some(ErrorKind::Connect) => Some(Observed::ConnectFailed),
        Some(ErrorKind::Reset | ErrorKind::Redirect | ErrorKind::Other) | None => {
            Some(Observed::OtherError)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::endpoint::WebhookEndpointSpec;
    use crate::api::validation::validate_endpoint;
    use crate::delivery::performance::CutReason;
    use std::time::Duration;

    fn policy() -> EffectivePolicy {
        let spec: WebhookEndpointSpec =
            serde_json::from_value(serde_json::json!({"url": "https://example.com/hook"})).unwrap();
        validate_endpoint(&spec, "ep", false).unwrap()
    }

    fn status(code: u16, latency_ms: u64) -> HttpResult {
        HttpResult {
            status: Some(code),
            latency: Duration::from_millis(latency_ms),
            ..HttpResult::default()
        }
    }

    /// Sends one attempt through the gates at `now` (which must let it go) and reports `result`.
    fn attempt(
        gates: &Gates,
        endpoint: &EndpointRef,
        now: Instant,
        result: &HttpResult,
    ) -> Transition {
        let Gate::Go(permit) = gates.acquire(endpoint, &policy(), now, 100) else {
            panic!("the gate let the attempt go");
        };
        gates.finish(endpoint, permit, result, now)
    }

    #[test]
    fn a_throttling_answer_reports_the_cut_and_status_sees_it() {
        let gates = Gates::default();
        let endpoint = EndpointRef::new("ns", "ep");
        let now = Instant::now();
        let first = attempt(&gates, &endpoint, now, &status(200, 20));
        assert_eq!(first.rate_cut, None);
        let before = gates.snapshot(&endpoint).unwrap();
        assert!(!before.rate_is_cut && before.last_rate_cut.is_none());

        let throttled = attempt(&gates, &endpoint, now, &status(429, 5));
        let cut = throttled.rate_cut.expect("the 429 cut the rate");
        assert_eq!(cut.reason, CutReason::Throttled);
        assert_eq!(cut.rate_per_minute(), 50.0);
        let after = gates.snapshot(&endpoint).unwrap();
        assert_eq!(after.rate_per_minute, 50.0);
        assert!(after.rate_is_cut);
        assert_eq!(after.last_rate_cut, Some(cut));
    }

    #[test]
    fn timeouts_through_the_gate_cut_with_their_reason() {
        let gates = Gates::default();
        let endpoint = EndpointRef::new("ns", "ep");
        let t0 = Instant::now();
        let mut cuts = Vec::new();
        for second in 0..10u64 {
            let now = t0 + Duration::from_secs(second);
            let result = if second < 5 {
                status(200, 20)
            } else {
                HttpResult::failed(ErrorKind::Timeout, "timed out", Duration::from_secs(10))
            };
            cuts.extend(attempt(&gates, &endpoint, now, &result).rate_cut);
        }
        let reasons: Vec<_> = cuts.iter().map(|cut| cut.reason).collect();
        assert_eq!(
            reasons,
            vec![CutReason::Timeouts {
                failures: 5,
                attempts: 10
            }]
        );
        assert_eq!(
            gates
                .snapshot(&endpoint)
                .unwrap()
                .last_rate_cut
                .map(|c| c.reason.as_str()),
            Some("Timeouts")
        );
    }

    #[test]
    fn attempts_are_classified_for_the_tracker() {
        let redirect = HttpResult {
            status: Some(301),
            error: Some(crate::delivery::outcome::AttemptError {
                kind: ErrorKind::Redirect,
                message: "not followed".into(),
            }),
            ..HttpResult::default()
        };
        let failed = |kind| HttpResult::failed(kind, "x", Duration::ZERO);
        assert_eq!(observed(&status(503, 1)), Some(Observed::Answered));
        assert_eq!(observed(&redirect), Some(Observed::Answered));
        assert_eq!(
            observed(&failed(ErrorKind::Timeout)),
            Some(Observed::TimedOut)
        );
        assert_eq!(
            observed(&failed(ErrorKind::Connect)),
            Some(Observed::ConnectFailed)
        );
        assert_eq!(
            observed(&failed(ErrorKind::Reset)),
            Some(Observed::OtherError)
        );
        assert_eq!(observed(&failed(ErrorKind::Blocked)), None);
        let mut throttled = status(200, 7);
        throttled.retry_after = Some("30".into());
        let signal = attempt_signal(&throttled);
        assert!(signal.throttled && signal.success);
        assert_eq!(signal.retry_after, Some(Duration::from_secs(30)));
        assert_eq!(signal.latency, Duration::from_millis(7));
    }

    #[test]
    fn forgetting_keeps_owned_endpoints_and_those_with_attempts_in_flight() {
        let spec: WebhookEndpointSpec =
            serde_json::from_value(serde_json::json!({"url": "https://example.com/hook"})).unwrap();
        let policy = validate_endpoint(&spec, "ep", false).unwrap();
        let gates = Gates::default();
        let now = Instant::now();
        let (owned, moved, busy) = (
            EndpointRef::new("ns", "owned"),
            EndpointRef::new("ns", "moved"),
            EndpointRef::new("ns", "busy"),
        );
        for endpoint in [&owned, &moved, &busy] {
            let Gate::Go(permit) = gates.acquire(endpoint, &policy, now, 4) else {
                panic!("a fresh gate lets the first attempt go");
            };
            if endpoint != &busy {
                gates.abandon(endpoint, permit);
            }
        }
        let forgotten = gates.forget_unless(|e| e == &owned);
        assert_eq!(forgotten, vec![moved.clone()]);
        assert!(gates.snapshot(&owned).is_some());
        assert!(gates.snapshot(&busy).is_some());
        assert!(gates.snapshot(&moved).is_none());
    }
}
