//! The per-endpoint rate limiter: a token bucket of `burst` requests refilled at
//! `requests_per_minute`, adaptive (AIMD) when enabled.
//!
//! It never drops work: [`RateLimiter::try_acquire`] answers "now" (`Ok`) or "not before T"
//! (`Err(T)`), and the dispatcher holds the delivery until then.
//!
//! Adaptive mode: a throttling answer (429, 503 or a `Retry-After`, see
//! [`super::outcome::HttpResult::is_throttled`]) halves the allowed rate, not below a floor of
//! a tenth of the configured rate (at least 1 per minute), empties the bucket, and with a
//! `Retry-After` pauses the endpoint until then (at most [`MAX_PAUSE`]). Further throttling
//! answers within [`DECREASE_COOLDOWN`] of a cut (answers to requests already in flight) do not
//! cut again. Each success raises the rate by a twentieth of the configured rate until it is
//! back at the configured rate.
//!
//! The arithmetic is exact (integers in units of nanosecond × milli-requests-per-minute), so in
//! any window of length W the permits never exceed `requests_per_minute × W + burst`.
use std::time::{Duration, Instant};

/// The longest pause a `Retry-After` can impose on an endpoint.
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);
/// Throttling answers within this time after a cut do not cut again.
pub const DECREASE_COOLDOWN: Duration = Duration::from_secs(1);

/// Units of credit one request costs: one minute in nanoseconds × 1000 (rates are kept in
/// milli-requests per minute, so refilling adds `elapsed_ns × rate_milli` units).
const COST: u128 = 60_000_000_000 * 1000;

/// An endpoint's rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained requests per minute (0 counts as 1).
    pub requests_per_minute: u32,
    /// Requests that may be sent at once above the sustained rate (0 counts as 1).
    pub burst: u32,
    /// Slow down on throttling answers and speed up again on success.
    pub adaptive: bool,
}

impl Default for RateLimitConfig {
    /// 100 requests per minute (the seed's default), bursts of 10, adaptive.
    fn default() -> Self {
        Self {
            requests_per_minute: 100,
            burst: 10,
            adaptive: true,
        }
    }
}

impl RateLimitConfig {
    fn configured_milli(&self) -> u64 {
        u64::from(self.requests_per_minute.max(1)) * 1000
    }

    fn floor_milli(&self) -> u64 {
        (self.configured_milli() / 10)
            .max(1000)
            .min(self.configured_milli())
    }

    fn capacity(&self) -> u128 {
        u128::from(self.burst.max(1)) * COST
    }
}

/// One endpoint's rate limiter. Not synchronized: the dispatcher keeps it behind its lock.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    rate_milli: u64,
    credit: u128,
    last: Instant,
    paused_until: Option<Instant>,
    last_decrease: Option<Instant>,
}

impl RateLimiter {
    /// A limiter with a full bucket at `now`.
    pub fn new(config: RateLimitConfig, now: Instant) -> Self {
        Self {
            config,
            rate_milli: config.configured_milli(),
            credit: config.capacity(),
            last: now,
            paused_until: None,
            last_decrease: None,
        }
    }

    /// Applies a new configuration, keeping the bucket's fill (capped to the new burst) and an
    /// adaptive cut (capped to the new rate).
    pub fn set_config(&mut self, config: RateLimitConfig, now: Instant) {
        self.refill(now);
        self.config = config;
        self.credit = self.credit.min(config.capacity());
        self.rate_milli = if config.adaptive {
            self.rate_milli
                .clamp(config.floor_milli(), config.configured_milli())
        } else {
            config.configured_milli()
        };
    }

    /// `Ok(())` takes a permit to send now; `Err(t)`: nothing may be sent before `t` (no permit
    /// is taken; ask again then).
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Instant> {
        if let Some(until) = self.paused_until {
            if now < until {
                return Err(until);
            }
            self.paused_until = None;
        }
        self.refill(now);
        if self.credit >= COST {
            self.credit -= COST;
            return Ok(());
        }
        let missing = COST - self.credit;
        let rate = u128::from(self.rate_milli.max(1));
        let wait_ns = missing.div_ceil(rate);
        let wait = Duration::from_nanos(u64::try_from(wait_ns).unwrap_or(u64::MAX));
        Err(now.checked_add(wait).unwrap_or(now))
    }

    /// The receiver throttled a request (429, 503 or `Retry-After`); `retry_after` as parsed by
    /// [`super::retry::parse_retry_after`]. No effect unless adaptive.
    pub fn on_throttled(&mut self, now: Instant, retry_after: Option<Duration>) {
        if !self.config.adaptive {
            return;
        }
        self.refill(now);
        if let Some(delay) = retry_after {
            let until = now.checked_add(delay.min(MAX_PAUSE)).unwrap_or(now);
            self.paused_until = Some(
                self.paused_until
                    .map_or(until, |current| current.max(until)),
            );
        }
        let cooling = self
            .last_decrease
            .is_some_and(|at| now.saturating_duration_since(at) < DECREASE_COOLDOWN && now >= at);
        if cooling {
            return;
        }
        self.rate_milli = (self.rate_milli / 2).max(self.config.floor_milli());
        self.credit = 0;
        self.last_decrease = Some(now);
    }

    /// A request succeeded: in adaptive mode the rate grows back toward the configured rate.
    pub fn on_success(&mut self, now: Instant) {
        if !self.config.adaptive {
            return;
        }
        self.refill(now);
        let configured = self.config.configured_milli();
        let step = (configured / 20).max(1);
        self.rate_milli = self.rate_milli.saturating_add(step).min(configured);
    }

    /// The rate currently allowed, in requests per minute.
    pub fn current_rate_per_minute(&self) -> f64 {
        self.rate_milli as f64 / 1000.0
    }

    /// Until when a `Retry-After` pauses the endpoint, if it does.
    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    fn refill(&mut self, now: Instant) {
        if now <= self.last {
            return;
        }
        let elapsed = now.duration_since(self.last).as_nanos();
        let added = elapsed.saturating_mul(u128::from(self.rate_milli));
        self.credit = self
            .credit
            .saturating_add(added)
            .min(self.config.capacity());
        self.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(rpm: u32, burst: u32, adaptive: bool) -> RateLimitConfig {
        RateLimitConfig {
            requests_per_minute: rpm,
            burst,
            adaptive,
        }
    }

    #[test]
    fn burst_then_steady_rate() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(config(60, 3, false), t0);
        for _ in 0..3 {
            assert_eq!(limiter.try_acquire(t0), Ok(()));
        }
        assert_eq!(limiter.try_acquire(t0), Err(t0 + Duration::from_secs(1)));
        assert_eq!(
            limiter.try_acquire(t0 + Duration::from_millis(999)),
            Err(t0 + Duration::from_secs(1))
        );
        assert_eq!(limiter.try_acquire(t0 + Duration::from_secs(1)), Ok(()));
        // Idle time refills up to the burst only.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(limiter.try_acquire(later), Ok(()));
        }
        assert!(limiter.try_acquire(later).is_err());
    }

    #[test]
    fn adaptive_cuts_to_floor_and_recovers() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(config(100, 10, true), t0);
        assert_eq!(limiter.current_rate_per_minute(), 100.0);
        limiter.on_throttled(t0, None);
        assert_eq!(limiter.current_rate_per_minute(), 50.0);
        limiter.on_throttled(t0 + Duration::from_millis(10), None);
        assert_eq!(
            limiter.current_rate_per_minute(),
            50.0,
            "cooldown: in-flight answers do not cut again"
        );
        let mut now = t0;
        for _ in 0..10 {
            now += DECREASE_COOLDOWN;
            limiter.on_throttled(now, None);
        }
        assert_eq!(limiter.current_rate_per_minute(), 10.0, "floor is a tenth");
        // The bucket was emptied: the next permit is one interval (6 s at 10/min) away.
        assert_eq!(limiter.try_acquire(now), Err(now + Duration::from_secs(6)));
        for _ in 0..18 {
            limiter.on_success(now);
        }
        assert_eq!(limiter.current_rate_per_minute(), 100.0);
        limiter.on_success(now);
        assert_eq!(limiter.current_rate_per_minute(), 100.0);
    }

    #[test]
    fn retry_after_pauses_and_is_capped() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(config(100, 10, true), t0);
        limiter.on_throttled(t0, Some(Duration::from_secs(30)));
        assert_eq!(
            limiter.try_acquire(t0 + Duration::from_secs(29)),
            Err(t0 + Duration::from_secs(30))
        );
        assert!(limiter.try_acquire(t0 + Duration::from_secs(31)).is_ok());
        limiter.on_throttled(t0 + Duration::from_secs(40), Some(Duration::MAX));
        assert_eq!(
            limiter.paused_until(),
            Some(t0 + Duration::from_secs(40) + MAX_PAUSE)
        );
    }

    #[test]
    fn non_adaptive_ignores_feedback() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(config(100, 1, false), t0);
        limiter.on_throttled(t0, Some(Duration::from_secs(30)));
        assert_eq!(limiter.current_rate_per_minute(), 100.0);
        assert!(limiter.try_acquire(t0).is_ok());
    }

    #[test]
    fn zero_config_is_treated_as_one() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(config(0, 0, true), t0);
        assert!(limiter.try_acquire(t0).is_ok());
        assert_eq!(limiter.try_acquire(t0), Err(t0 + Duration::from_secs(60)));
        limiter.on_throttled(t0, None);
        assert_eq!(limiter.current_rate_per_minute(), 1.0);
    }

    #[derive(Clone, Debug)]
    enum Event {
        Acquire,
        Throttled(Option<u16>),
        Success,
    }

    proptest! {
        #[test]
        fn permits_never_exceed_rate_times_window_plus_burst(
            rpm in 1u32..100_000, burst in 1u32..50, adaptive in any::<bool>(),
            steps in proptest::collection::vec((0u64..3_000, prop_oneof![6 => Just(Event::Acquire), 1 => proptest::option::of(0u16..120).prop_map(Event::Throttled), 2 => Just(Event::Success)]), 1..300),
        ) {
            let t0 = Instant::now();
            let mut limiter = RateLimiter::new(config(rpm, burst, adaptive), t0);
            let mut now = t0;
            let mut granted: Vec<Instant> = Vec::new();
            for (advance_ms, event) in steps {
                now += Duration::from_millis(advance_ms);
                match event {
                    Event::Acquire => match limiter.try_acquire(now) {
                        Ok(()) => granted.push(now),
                        Err(not_before) => {
                            prop_assert!(not_before > now);
                            // Asking again at the answer succeeds unless a pause intervenes.
                            let mut copy = limiter.clone();
                            prop_assert!(copy.try_acquire(not_before).is_ok() || limiter.paused_until().is_some());
                        }
                    },
                    Event::Throttled(secs) => limiter.on_throttled(now, secs.map(|s| Duration::from_secs(u64::from(s)))),
                    Event::Success => limiter.on_success(now),
                }
                prop_assert!(limiter.current_rate_per_minute() <= f64::from(rpm));
                prop_assert!(limiter.current_rate_per_minute() >= 1.0);
            }
            // Every window [granted[i], granted[j]]: j - i + 1 permits ≤ rate × window + burst.
            for i in 0..granted.len() {
                for j in i..granted.len() {
                    let window = granted[j] - granted[i];
                    let allowed = u128::from(rpm) * window.as_nanos() / 60_000_000_000 + u128::from(burst);
                    prop_assert!((j - i + 1) as u128 <= allowed, "{} permits in {:?}", j - i + 1, window);
                }
            }
        }
    }
}
