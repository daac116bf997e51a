//! The `RateReduced` condition: whether, and why, the adaptive limiter holds an endpoint below
//! its configured rate (`status.delivery.currentRatePerMinute` has the rate). Pure.
use crate::api::conditions::{DesiredCondition, Reason, RATE_REDUCED};
use crate::delivery::performance::CutReason;
use crate::dispatcher::gate::GateSnapshot;

/// The condition's reason for a cut.
pub fn reason_of(cut: &CutReason) -> Reason {
    match cut {
        CutReason::Throttled => Reason::Throttled,
        CutReason::LatencyRising { .. } => Reason::LatencyRising,
        CutReason::Timeouts { .. } => Reason::Timeouts,
    }
}

/// `RateReduced`, from the endpoint's gate (none yet: nothing sent, nothing cut).
pub fn rate_reduced(
    snapshot: Option<&GateSnapshot>,
    configured_per_minute: u32,
) -> DesiredCondition {
    let cut = snapshot
        .filter(|s| s.rate_is_cut)
        .and_then(|s| s.last_rate_cut.map(|cut| (s.rate_per_minute, cut)));
    match cut {
        Some((rate, cut)) => DesiredCondition::new(
            RATE_REDUCED,
            true,
            reason_of(&cut.reason),
            format!(
                "{}; sending at most {} of the configured {configured_per_minute} requests per minute, \
                 recovering as the endpoint does",
                cut.reason,
                rate.round()
            ),
        ),
        None => DesiredCondition::new(
            RATE_REDUCED,
            false,
            Reason::ConfiguredRate,
            format!("sending at up to the configured {configured_per_minute} requests per minute"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::api::conditions::ConditionStatus;
    use crate::delivery::circuit::BreakerState;
    use crate::delivery::ratelimit::{AttemptSignal, RateLimitConfig, RateLimiter};

    fn snapshot(limiter: &RateLimiter) -> GateSnapshot {
        GateSnapshot {
            state: BreakerState::Closed,
            since: Instant::now(),
            consecutive_failures: 0,
            rate_per_minute: limiter.current_rate_per_minute(),
            rate_is_cut: limiter.is_cut(),
            last_rate_cut: limiter.last_cut(),
        }
    }

    #[test]
    fn a_throttled_endpoint_is_rate_reduced_with_the_reason() {
        let now = Instant::now();
        let config = RateLimitConfig {
            requests_per_minute: 600,
            burst: 10,
            adaptive: true,
        };
        let mut limiter = RateLimiter::new(config, now);
        let at_rate = rate_reduced(Some(&snapshot(&limiter)), 600);
        assert_eq!(at_rate.status, ConditionStatus::False);
        assert_eq!(at_rate.reason, "ConfiguredRate");
        assert_eq!(rate_reduced(None, 600).reason, "ConfiguredRate");
        let throttled = AttemptSignal {
            observed: None,
            latency: Duration::from_millis(5),
            success: false,
            throttled: true,
            retry_after: None,
        };
        assert!(limiter.on_attempt(now, &throttled).is_some());
        let cut = rate_reduced(Some(&snapshot(&limiter)), 600);
        assert_eq!(cut.status, ConditionStatus::True);
        assert_eq!(cut.reason, "Throttled");
        assert!(
            cut.message.contains("at most 300 of the configured 600"),
            "{}",
            cut.message
        );
    }
}
