//! Per-endpoint gates: concurrency, circuit breaker and rate limiter, held in memory by the
//! dispatcher that owns the endpoint. Decisions are made by the pure delivery types; this file
//! only keeps one of each per endpoint.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::api::policy::EffectivePolicy;
use crate::delivery::circuit::{BreakerState, CircuitBreaker, CircuitConfig, Permit};
use crate::delivery::outcome::HttpResult;
use crate::delivery::ratelimit::{RateLimitConfig, RateLimiter};
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

/// What the breaker did after an attempt, for Events and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

/// A snapshot for status.
#[derive(Clone, Copy, Debug)]
pub struct GateSnapshot {
    pub state: BreakerState,
    pub since: Instant,
    pub consecutive_failures: u32,
    pub rate_per_minute: f64,
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
            };
        };
        gate.in_flight = gate.in_flight.saturating_sub(1);
        let from = gate.breaker.state();
        if result.is_endpoint_failure() {
            gate.breaker.on_failure(permit, now);
        } else {
            gate.breaker.on_success(permit, now);
        }
        if result.is_throttled() {
            let retry_after = result
                .retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
            gate.limiter.on_throttled(now, retry_after);
        } else if result.is_success() {
            gate.limiter.on_success(now);
        }
        Transition {
            from,
            to: gate.breaker.state(),
        }
    }

    /// Gives a permit back without an attempt (the delivery could not be prepared).
    pub fn abandon(&self, endpoint: &EndpointRef, permit: Permit) {
        let mut gates = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gate) = gates.get_mut(endpoint) {
            gate.in_flight = gate.in_flight.saturating_sub(1);
            gate.breaker.abandon(permit);
        }
    }

    pub fn snapshot(&self, endpoint: &EndpointRef) -> Option<GateSnapshot> {
        let gates = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        gates.get(endpoint).map(|gate| GateSnapshot {
            state: gate.breaker.state(),
            since: gate.breaker.since(),
            consecutive_failures: gate.breaker.consecutive_failures(),
            rate_per_minute: gate.limiter.current_rate_per_minute(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::endpoint::WebhookEndpointSpec;
    use crate::api::validation::validate_endpoint;

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
