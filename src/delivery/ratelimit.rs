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
//! Adaptive mode also watches the endpoint's performance ([`super::performance`]): while its
//! latency is well above its own baseline or many attempts time out, an attempt that itself
//! shows the problem (a slow answer; a timeout or connect failure) cuts the rate the same way
//! (without a pause), at most once per [`PERFORMANCE_COOLDOWN`] after any cut: the windows behind
//! the verdict move in 10-second steps, so answers already in flight would otherwise cut again
//! and again for the same slow minute. A fast answer never cuts, even while the last minute
//! still holds slow ones. The rate grows back as the endpoint recovers: each success raises it
//! as above unless it is itself slow (above the endpoint's latency trigger,
//! [`super::performance::PerformanceStats::latency_trigger`]).
//! [`RateLimiter::on_attempt`] is the entry point for all of it; [`RateLimiter::last_cut`] says why
//! the rate was last cut, for status and Events.
//!
//! The arithmetic is exact (integers in units of nanosecond × milli-requests-per-minute), so in
//! any window of length W the permits never exceed `requests_per_minute × W + burst`.
use std::time::{Duration, Instant};

use super::performance::{CutReason, Observed, PerformanceStats, PerformanceTracker};

/// The longest pause a `Retry-After` can impose on an endpoint.
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);
/// Throttling answers within this time after a cut do not cut again.
pub const DECREASE_COOLDOWN: Duration = Duration::from_secs(1);
/// Performance verdicts within this time after a cut do not cut again: the last minute's window
/// moves in 10-second steps, so a verdict holds for at least that long after the answers that
/// caused it; one cut per step, and the requests already in flight when it was cut, is enough.
pub const PERFORMANCE_COOLDOWN: Duration = Duration::from_secs(10);

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

/// What the limiter needs to know about one finished attempt, built by the caller from the
/// HTTP result (so this module does not depend on HTTP types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptSignal {
    /// How the attempt went for the performance tracker; `None` when it says nothing about the
    /// endpoint (the request was never sent, e.g. refused by the egress policy).
    pub observed: Option<Observed>,
    /// From sending to the end of the answer; recorded only for [`Observed::Answered`].
    pub latency: Duration,
    /// A 2xx answer.
    pub success: bool,
    /// 429, 503 or a `Retry-After` (see [`super::outcome::HttpResult::is_throttled`]).
    pub throttled: bool,
    /// The parsed `Retry-After`, if any.
    pub retry_after: Option<Duration>,
}

/// A cut of the allowed rate: why, when, and to what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    pub reason: CutReason,
    pub at: Instant,
    rate_milli: u64,
}

impl Cut {
    /// The rate allowed after the cut, in requests per minute.
    pub fn rate_per_minute(&self) -> f64 {
        self.rate_milli as f64 / 1000.0
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
    /// The latest cut (also the ones that found the rate at the floor already): the cooldowns
    /// count from it.
    last_cut: Option<Cut>,
    /// Only in adaptive mode; boxed because it is a few kilobytes of fixed buckets.
    tracker: Option<Box<PerformanceTracker>>,
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
            last_cut: None,
            tracker: tracker_for(config, now),
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
        if !config.adaptive {
            self.tracker = None;
        } else if self.tracker.is_none() {
            self.tracker = tracker_for(config, now);
        }
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

    /// Gives back a permit that sent nothing (the delivery was not prepared, or its transform
    /// dropped it), up to the bucket's capacity.
    pub fn refund(&mut self) {
        self.credit = (self.credit + COST).min(self.config.capacity());
    }

    /// The receiver throttled a request (429, 503 or `Retry-After`); `retry_after` as parsed by
    /// [`super::retry::parse_retry_after`]. No effect unless adaptive. [`Self::on_attempt`]
    /// does the same and also says whether the rate went down.
    pub fn on_throttled(&mut self, now: Instant, retry_after: Option<Duration>) {
        self.throttle(now, retry_after);
    }

    /// A request succeeded: in adaptive mode the rate grows back toward the configured rate.
    /// (Unconditionally: [`RateLimiter::on_attempt`] decides when a success should count.)
    pub fn on_success(&mut self, now: Instant) {
        if !self.config.adaptive {
            return;
        }
        self.refill(now);
        self.raise();
    }

    /// Reports a finished attempt: records it for the performance verdict, then cuts the rate
    /// (throttled; or the endpoint's performance calls for it, this attempt shows it and the
    /// cooldown has passed) or raises it (a success that is not slow). No effect unless
    /// adaptive. Returns the cut when the rate went down.
    pub fn on_attempt(&mut self, now: Instant, signal: &AttemptSignal) -> Option<Cut> {
        if !self.config.adaptive {
            return None;
        }
        self.refill(now);
        let stats = self.observe(now, signal);
        if signal.throttled {
            return self.throttle(now, signal.retry_after);
        }
        let slow = is_slow(stats.as_ref(), signal);
        if let Some(reason) = stats.as_ref().and_then(PerformanceStats::verdict) {
            if shows(reason, signal, slow) && !self.cooling(now, PERFORMANCE_COOLDOWN) {
                return self.cut(now, reason);
            }
        }
        if signal.success && !slow {
            self.raise();
        }
        None
    }

    /// The latest cut, if any (it may have been recovered from since: see [`Self::is_cut`]).
    pub fn last_cut(&self) -> Option<Cut> {
        self.last_cut
    }

    /// The allowed rate is below the configured rate.
    pub fn is_cut(&self) -> bool {
        self.rate_milli < self.config.configured_milli()
    }

    /// The rate currently allowed, in requests per minute.
    pub fn current_rate_per_minute(&self) -> f64 {
        self.rate_milli as f64 / 1000.0
    }

    /// Until when a `Retry-After` pauses the endpoint, if it does.
    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Pauses for `retry_after` and cuts, unless within [`DECREASE_COOLDOWN`] of a cut; the cut
    /// if the rate went down.
    fn throttle(&mut self, now: Instant, retry_after: Option<Duration>) -> Option<Cut> {
        if !self.config.adaptive {
            return None;
        }
        self.refill(now);
        if let Some(delay) = retry_after {
            let until = now.checked_add(delay.min(MAX_PAUSE)).unwrap_or(now);
            self.paused_until = Some(
                self.paused_until
                    .map_or(until, |current| current.max(until)),
            );
        }
        if self.cooling(now, DECREASE_COOLDOWN) {
            return None;
        }
        self.cut(now, CutReason::Throttled)
    }

    /// Records the attempt; the windows as they stand after it.
    fn observe(&mut self, now: Instant, signal: &AttemptSignal) -> Option<PerformanceStats> {
        let tracker = self.tracker.as_deref_mut()?;
        if let Some(kind) = signal.observed {
            let latency = (kind == Observed::Answered).then_some(signal.latency);
            tracker.observe(now, latency, kind);
        }
        Some(tracker.stats(now))
    }

    /// Within `cooldown` after the latest cut.
    fn cooling(&self, now: Instant, cooldown: Duration) -> bool {
        self.last_cut
            .is_some_and(|cut| now >= cut.at && now.saturating_duration_since(cut.at) < cooldown)
    }

    /// Halves the rate (not below the floor) and empties the bucket; the cut if the rate went
    /// down. Recorded either way, so the cooldown and the reason reflect the latest signal.
    fn cut(&mut self, now: Instant, reason: CutReason) -> Option<Cut> {
        let before = self.rate_milli;
        self.rate_milli = (before / 2).max(self.config.floor_milli());
        self.credit = 0;
        let cut = Cut {
            reason,
            at: now,
            rate_milli: self.rate_milli,
        };
        self.last_cut = Some(cut);
        (self.rate_milli < before).then_some(cut)
    }

    /// One additive step (a twentieth of the configured rate) back toward the configured rate.
    fn raise(&mut self) {
        let configured = self.config.configured_milli();
        let step = (configured / 20).max(1);
        self.rate_milli = self.rate_milli.saturating_add(step).min(configured);
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

/// An answer above the endpoint's latency trigger (unknown without a baseline: not slow).
fn is_slow(stats: Option<&PerformanceStats>, signal: &AttemptSignal) -> bool {
    signal.observed == Some(Observed::Answered)
        && stats
            .and_then(PerformanceStats::latency_trigger)
            .is_some_and(|trigger| signal.latency > trigger)
}

/// The attempt itself shows what the verdict is about, so it may cut: a fast answer arriving
/// while the last minute still holds slow ones does not.
fn shows(reason: CutReason, signal: &AttemptSignal, slow: bool) -> bool {
    match reason {
        CutReason::Throttled => signal.throttled,
        CutReason::LatencyRising { .. } => slow,
        CutReason::Timeouts { .. } => signal.observed.is_some_and(Observed::is_unreachable),
    }
}

/// A performance tracker when adaptive.
fn tracker_for(config: RateLimitConfig, now: Instant) -> Option<Box<PerformanceTracker>> {
    config
        .adaptive
        .then(|| Box::new(PerformanceTracker::new(now)))
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
    fn a_refunded_permit_can_be_taken_again_but_never_beyond_the_burst() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(config(60, 2, false), t0);
        assert_eq!(limiter.try_acquire(t0), Ok(()));
        assert_eq!(limiter.try_acquire(t0), Ok(()));
        assert!(limiter.try_acquire(t0).is_err());
        limiter.refund();
        assert_eq!(limiter.try_acquire(t0), Ok(()));
        for _ in 0..5 {
            limiter.refund();
        }
        assert_eq!(limiter.try_acquire(t0), Ok(()));
        assert_eq!(limiter.try_acquire(t0), Ok(()));
        assert!(
            limiter.try_acquire(t0).is_err(),
            "refunds stop at the burst"
        );
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

    const MS: Duration = Duration::from_millis(1);

    fn answer(latency: Duration) -> AttemptSignal {
        AttemptSignal {
            observed: Some(Observed::Answered),
            latency,
            success: true,
            throttled: false,
            retry_after: None,
        }
    }

    fn failure(observed: Observed) -> AttemptSignal {
        AttemptSignal {
            observed: Some(observed),
            latency: Duration::from_secs(10),
            success: false,
            throttled: false,
            retry_after: None,
        }
    }

    fn throttled() -> AttemptSignal {
        AttemptSignal {
            observed: Some(Observed::Answered),
            latency: 5 * MS,
            success: false,
            throttled: true,
            retry_after: None,
        }
    }

    /// A sender that asks for a permit every `tick` and sends when it gets one; every attempt
    /// is answered with `signal` (reported when it is sent). Records the cuts and the rate after
    /// each attempt.
    struct Sender {
        limiter: RateLimiter,
        now: Instant,
        cuts: Vec<Cut>,
        rates: Vec<f64>,
        sent: u32,
    }

    impl Sender {
        fn new(config: RateLimitConfig) -> Self {
            let now = Instant::now();
            Self {
                limiter: RateLimiter::new(config, now),
                now,
                cuts: Vec::new(),
                rates: Vec::new(),
                sent: 0,
            }
        }

        fn run(&mut self, duration: Duration, tick: Duration, signal: AttemptSignal) {
            let end = self.now + duration;
            while self.now < end {
                self.now += tick;
                if self.limiter.try_acquire(self.now).is_ok() {
                    self.sent += 1;
                    self.cuts.extend(self.limiter.on_attempt(self.now, &signal));
                    self.rates.push(self.limiter.current_rate_per_minute());
                }
            }
        }
    }

    /// Feeds `signal` every `every` for `duration` without asking for permits (answers to
    /// requests already in flight); returns the cuts.
    fn feed(
        limiter: &mut RateLimiter,
        now: &mut Instant,
        duration: Duration,
        every: Duration,
        signal: AttemptSignal,
    ) -> Vec<Cut> {
        let end = *now + duration;
        let mut cuts = Vec::new();
        while *now < end {
            *now += every;
            cuts.extend(limiter.on_attempt(*now, &signal));
        }
        cuts
    }

    /// Ten minutes of 50 ms answers, two a second, at the configured 120 per minute.
    fn fast_for_ten_minutes() -> Sender {
        let mut sender = Sender::new(config(120, 10, true));
        sender.run(Duration::from_secs(600), 500 * MS, answer(50 * MS));
        assert!(sender.cuts.is_empty());
        assert_eq!(sender.sent, 1200);
        sender
    }

    #[test]
    fn a_slow_receiver_is_cut_then_recovers_additively() {
        let mut sender = fast_for_ten_minutes();
        let slow_from = sender.now;
        sender.run(Duration::from_secs(180), 500 * MS, answer(1000 * MS));

        // Cut within seconds, because latency rose, then every cooldown down to the floor.
        let first = sender.cuts.first().expect("the slow receiver was cut");
        assert!(first.at - slow_from <= Duration::from_secs(5), "{first:?}");
        let CutReason::LatencyRising {
            recent_p95,
            baseline_p95,
        } = first.reason
        else {
            panic!("{first:?}");
        };
        assert!(recent_p95 > 707 * MS && baseline_p95 < 63 * MS);
        let rates: Vec<f64> = sender.cuts.iter().map(Cut::rate_per_minute).collect();
        assert_eq!(rates, vec![60.0, 30.0, 15.0, 12.0]);
        for pair in sender.cuts.windows(2) {
            assert!(pair[1].at - pair[0].at >= PERFORMANCE_COOLDOWN, "{pair:?}");
            assert!(pair[1].at - pair[0].at <= PERFORMANCE_COOLDOWN + 5000 * MS);
        }
        // Slow successes do not raise it: still at the floor after three minutes.
        assert_eq!(sender.limiter.current_rate_per_minute(), 12.0);
        assert!(sender.limiter.is_cut());
        assert_eq!(
            sender.limiter.last_cut().map(|cut| cut.reason.as_str()),
            Some("LatencyRising")
        );

        // Normal latency again: one step of a twentieth (6/min) per success, back to 120.
        let recovering_from = sender.rates.len();
        sender.cuts.clear();
        sender.run(Duration::from_secs(120), 500 * MS, answer(50 * MS));
        assert!(sender.cuts.is_empty(), "{:?}", sender.cuts);
        let mut previous = 12.0;
        for &rate in &sender.rates[recovering_from..] {
            assert!(
                rate == previous + 6.0 || rate == 120.0 && previous == 120.0,
                "{previous} → {rate}"
            );
            previous = rate;
        }
        assert_eq!(sender.limiter.current_rate_per_minute(), 120.0);
        assert!(!sender.limiter.is_cut());
    }

    #[test]
    fn a_cooldown_separates_performance_cuts() {
        let sender = fast_for_ten_minutes();
        let (mut limiter, mut now) = (sender.limiter, sender.now);
        // Slow answers every 100 ms, as if many were in flight.
        let cuts = feed(
            &mut limiter,
            &mut now,
            25_000 * MS,
            100 * MS,
            answer(2000 * MS),
        );
        assert_eq!(cuts.len(), 3, "{cuts:?}");
        assert_eq!(cuts[1].at - cuts[0].at, PERFORMANCE_COOLDOWN);
        assert_eq!(cuts[2].at - cuts[1].at, PERFORMANCE_COOLDOWN);
        // A throttling answer only waits for its own, shorter cooldown…
        now = cuts[2].at + DECREASE_COOLDOWN;
        let throttle = limiter.on_attempt(now, &throttled()).expect("cut");
        assert_eq!(throttle.reason, CutReason::Throttled);
        // …and performance cuts count theirs from it (the rate is at the floor now, so look at
        // the recorded cut: a cut at the floor is recorded but not reported).
        let during = feed(
            &mut limiter,
            &mut now,
            9_900 * MS,
            100 * MS,
            answer(2000 * MS),
        );
        assert!(during.is_empty());
        assert_eq!(limiter.last_cut(), Some(throttle));
        feed(
            &mut limiter,
            &mut now,
            100 * MS,
            100 * MS,
            answer(2000 * MS),
        );
        let last = limiter.last_cut().expect("cut again");
        assert_eq!(last.at - throttle.at, PERFORMANCE_COOLDOWN);
        assert_eq!(last.reason.as_str(), "LatencyRising");
        assert_eq!(last.rate_per_minute(), 12.0);
    }

    #[test]
    fn timeouts_cut_the_rate() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(config(100, 10, true), t0);
        let mut now = t0;
        let mut cuts = feed(
            &mut limiter,
            &mut now,
            10_000 * MS,
            1000 * MS,
            answer(20 * MS),
        );
        assert!(cuts.is_empty());
        cuts.extend(feed(
            &mut limiter,
            &mut now,
            4000 * MS,
            1000 * MS,
            failure(Observed::TimedOut),
        ));
        assert!(cuts.is_empty(), "4 are not enough");
        cuts.extend(feed(
            &mut limiter,
            &mut now,
            1000 * MS,
            1000 * MS,
            failure(Observed::ConnectFailed),
        ));
        assert_eq!(
            cuts.iter()
                .map(|cut| (cut.reason, cut.rate_per_minute()))
                .collect::<Vec<_>>(),
            vec![(
                CutReason::Timeouts {
                    failures: 5,
                    attempts: 15
                },
                50.0
            )]
        );
        // A success while the timeouts are still in the window does not cut (it does not show
        // them); other failures do not either.
        assert_eq!(limiter.on_attempt(now, &answer(20 * MS)), None);
        assert_eq!(
            limiter.on_attempt(now + PERFORMANCE_COOLDOWN, &failure(Observed::OtherError)),
            None
        );
    }

    #[test]
    fn a_slow_success_does_not_raise_a_cut_rate() {
        let sender = fast_for_ten_minutes();
        let (mut limiter, mut now) = (sender.limiter, sender.now + 120_000 * MS);
        limiter.on_attempt(now, &throttled());
        assert_eq!(limiter.current_rate_per_minute(), 60.0);
        now += 1000 * MS;
        // Too few answers in the last minute for a verdict; this one is slow for the endpoint.
        assert_eq!(limiter.on_attempt(now, &answer(1000 * MS)), None);
        assert_eq!(limiter.current_rate_per_minute(), 60.0);
        assert_eq!(limiter.on_attempt(now, &answer(50 * MS)), None);
        assert_eq!(limiter.current_rate_per_minute(), 66.0);
        // Without a baseline, there is no telling slow: every success raises, as before.
        let mut fresh = RateLimiter::new(config(120, 10, true), now);
        fresh.on_attempt(now, &throttled());
        fresh.on_attempt(now, &answer(5000 * MS));
        assert_eq!(fresh.current_rate_per_minute(), 66.0);
    }

    #[test]
    fn a_non_adaptive_limiter_never_cuts() {
        let mut sender = Sender::new(config(120, 10, false));
        sender.run(Duration::from_secs(600), 500 * MS, answer(50 * MS));
        sender.run(Duration::from_secs(120), 500 * MS, answer(2000 * MS));
        sender.run(
            Duration::from_secs(30),
            500 * MS,
            failure(Observed::TimedOut),
        );
        sender.run(Duration::from_secs(30), 500 * MS, throttled());
        assert!(sender.cuts.is_empty());
        assert!(sender.rates.iter().all(|&rate| rate == 120.0));
        assert!(sender.limiter.last_cut().is_none() && !sender.limiter.is_cut());
        assert!(sender.limiter.tracker.is_none(), "no tracker kept");
    }

    #[test]
    fn switching_adaptive_off_and_on_drops_and_restarts_the_tracker() {
        let mut sender = fast_for_ten_minutes();
        let now = sender.now;
        sender.limiter.set_config(config(120, 10, false), now);
        assert!(sender.limiter.tracker.is_none());
        sender.limiter.set_config(config(120, 10, true), now);
        let stats = sender.limiter.tracker.as_ref().map(|t| t.stats(now));
        assert_eq!(stats.map(|s| s.baseline_samples), Some(0));
    }

    #[test]
    fn attempts_that_never_left_are_not_observed() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(config(100, 10, true), t0);
        let blocked = AttemptSignal {
            observed: None,
            ..failure(Observed::OtherError)
        };
        for _ in 0..10 {
            assert_eq!(limiter.on_attempt(t0, &blocked), None);
        }
        for _ in 0..10 {
            limiter.on_attempt(t0, &failure(Observed::TimedOut));
        }
        let stats = limiter.tracker.as_ref().map(|t| t.stats(t0));
        assert_eq!(
            stats.map(|s| (s.recent_attempts, s.recent_unreachable)),
            Some((10, 10))
        );
    }

    #[derive(Clone, Debug)]
    enum Event {
        Acquire,
        Throttled(Option<u16>),
        Success,
    }

    /// A generated attempt's answer.
    fn arb_signal() -> impl Strategy<Value = AttemptSignal> {
        let latency = prop_oneof![
            Just(20u64),
            Just(50),
            Just(300),
            Just(1000),
            Just(5000),
            0u64..10_000
        ];
        let observed = prop_oneof![
            6 => Just(Some(Observed::Answered)),
            2 => Just(Some(Observed::TimedOut)),
            1 => Just(Some(Observed::ConnectFailed)),
            1 => Just(Some(Observed::OtherError)),
            1 => Just(None),
        ];
        (
            latency,
            observed,
            any::<bool>(),
            prop::bool::weighted(0.05),
            proptest::option::of(0u64..120),
        )
            .prop_map(
                |(ms, observed, success, throttled, retry_after)| AttemptSignal {
                    observed,
                    latency: Duration::from_millis(ms),
                    success: success && observed == Some(Observed::Answered),
                    throttled,
                    retry_after: retry_after.filter(|_| throttled).map(Duration::from_secs),
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn attempts_keep_the_rate_between_floor_and_configured_and_the_bucket_bound(
            rpm in 1u32..2_000, burst in 1u32..20, adaptive in any::<bool>(),
            steps in proptest::collection::vec((0u64..4_000, prop_oneof![3 => Just(None), 4 => arb_signal().prop_map(Some)]), 1..1_500),
            quiet in proptest::option::of(0u64..7_200),
        ) {
            let cfg = config(rpm, burst, adaptive);
            let t0 = Instant::now();
            let mut limiter = RateLimiter::new(cfg, t0);
            let mut now = t0;
            let mut granted: Vec<Instant> = Vec::new();
            let floor = cfg.floor_milli() as f64 / 1000.0;
            for (index, (advance_ms, step)) in steps.into_iter().enumerate() {
                now += Duration::from_millis(advance_ms);
                if index == 700 {
                    // Sometimes a long quiet stretch in the middle.
                    now += Duration::from_secs(quiet.unwrap_or(0));
                }
                match step {
                    None => if limiter.try_acquire(now).is_ok() { granted.push(now) },
                    Some(signal) => {
                        let cut = limiter.on_attempt(now, &signal);
                        if let Some(cut) = cut {
                            prop_assert!(adaptive);
                            prop_assert_eq!(cut.at, now);
                            prop_assert_eq!(cut.rate_per_minute(), limiter.current_rate_per_minute());
                        }
                    }
                }
                let rate = limiter.current_rate_per_minute();
                if adaptive {
                    prop_assert!(rate >= floor && rate <= f64::from(rpm), "{} not in [{}, {}]", rate, floor, rpm);
                } else {
                    prop_assert_eq!(rate, f64::from(rpm));
                    prop_assert!(limiter.last_cut().is_none());
                }
                prop_assert_eq!(limiter.is_cut(), rate < f64::from(rpm));
            }
            // Any window from one grant to a later one: permits ≤ rate × window + burst.
            for i in 0..granted.len() {
                for j in i..granted.len() {
                    let window = granted[j] - granted[i];
                    let allowed = u128::from(rpm) * window.as_nanos() / 60_000_000_000 + u128::from(burst);
                    prop_assert!((j - i + 1) as u128 <= allowed, "{} permits in {:?}", j - i + 1, window);
                }
            }
        }
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
