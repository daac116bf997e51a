//! The endpoint's effective policy (as the controller writes it, [`crate::api::policy`]) turned
//! into the delivery engine's configuration types.
use std::time::Duration;

use crate::api::policy::{EffectiveCircuitBreaker, EffectiveRateLimit, EffectiveRetry};

use super::circuit::CircuitConfig;
use super::ratelimit::RateLimitConfig;
use super::retry::RetryPolicy;

impl From<&EffectiveRetry> for RetryPolicy {
    fn from(retry: &EffectiveRetry) -> Self {
        RetryPolicy {
            max_retries: retry.max_attempts,
            backoff: retry.backoff,
            base_delay: Duration::from_millis(retry.base_delay_ms),
            max_delay: Duration::from_millis(retry.max_delay_ms),
            jitter_percent: retry.jitter_percent,
            immediate_retry: retry.immediate_retry,
        }
    }
}

impl From<&EffectiveRateLimit> for RateLimitConfig {
    fn from(limit: &EffectiveRateLimit) -> Self {
        RateLimitConfig {
            requests_per_minute: limit.requests_per_minute,
            burst: limit.burst,
            adaptive: limit.adaptive,
        }
    }
}

impl From<&EffectiveCircuitBreaker> for CircuitConfig {
    fn from(breaker: &EffectiveCircuitBreaker) -> Self {
        CircuitConfig {
            failure_threshold: breaker.failure_threshold,
            open_duration: Duration::from_millis(breaker.open_duration_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_defaults_give_the_seed_schedule() {
        let retry = EffectiveRetry {
            max_attempts: 3,
            backoff: Default::default(),
            base_delay_ms: 1000,
            max_delay_ms: 3_600_000,
            jitter_percent: 0,
            immediate_retry: true,
        };
        assert_eq!(RetryPolicy::from(&retry), RetryPolicy::default());
        let breaker = EffectiveCircuitBreaker {
            failure_threshold: 5,
            open_duration_ms: 300_000,
        };
        assert_eq!(CircuitConfig::from(&breaker), CircuitConfig::default());
        let limit = EffectiveRateLimit {
            requests_per_minute: 100,
            burst: 10,
            adaptive: true,
        };
        assert_eq!(RateLimitConfig::from(&limit), RateLimitConfig::default());
    }
}
