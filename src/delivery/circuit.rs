//! The per-endpoint circuit breaker.
//!
//! ```text
//!  Closed ──(failure_threshold consecutive failures)──▶ Open ──(open_duration elapsed)──▶ HalfOpen
//!    ▲                                                   ▲                                    │
//!    └──────────────── probe succeeded ──────────────────┼──────── probe failed ──────────────┘
//! ```
//!
//! In `HalfOpen` exactly one request (the probe) is let through; everything else waits until it
//! reports. Each permitted request gets a [`Permit`] that must be handed back with
//! [`CircuitBreaker::on_success`], [`CircuitBreaker::on_failure`] or [`CircuitBreaker::abandon`].
//! Reports from permits issued before the last state change (requests started while Closed that
//! finish after the circuit opened) are ignored, so they cannot be mistaken for the probe.
//!
//! A probe that reports nothing for `open_duration` (a lost worker) counts as failed, so the
//! circuit cannot stay stuck half-open. Keep request timeouts below `open_duration`.
use std::time::{Duration, Instant};

/// When the circuit opens and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitConfig {
    /// Consecutive failures that open the circuit (0 counts as 1).
    pub failure_threshold: u32,
    /// How long the circuit stays open before a single probe.
    pub open_duration: Duration,
}

impl Default for CircuitConfig {
    /// The seed's values: 5 consecutive failures, open for 5 minutes.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_duration: Duration::from_secs(300),
        }
    }
}

/// The breaker's state (status shows it as [`crate::api::endpoint::CircuitState`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "Closed",
            BreakerState::Open => "Open",
            BreakerState::HalfOpen => "HalfOpen",
        }
    }
}

/// Permission to send one request. Hand it back with the request's result.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "report the request's result with on_success, on_failure or abandon"]
pub struct Permit {
    probe: bool,
    epoch: u64,
}

impl Permit {
    /// This request is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// Why a request may not be sent now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// The circuit is open; a probe will be allowed from `until` on.
    Open { until: Instant },
    /// The half-open probe is in flight; it reports by `deadline` at the latest.
    ProbeInFlight { deadline: Instant },
}

impl Rejected {
    /// The earliest time worth asking again.
    pub fn retry_at(&self) -> Instant {
        match *self {
            Rejected::Open { until } => until,
            Rejected::ProbeInFlight { deadline } => deadline,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_started: Option<Instant> },
}

/// One endpoint's circuit breaker. Not synchronized: the dispatcher keeps it behind its lock.
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    config: CircuitConfig,
    inner: Inner,
    epoch: u64,
    since: Instant,
    failures: u32,
}

impl CircuitBreaker {
    /// A closed breaker; `now` becomes [`CircuitBreaker::since`].
    pub fn new(config: CircuitConfig, now: Instant) -> Self {
        Self {
            config,
            inner: Inner::Closed { failures: 0 },
            epoch: 0,
            since: now,
            failures: 0,
        }
    }

    /// Applies a new configuration (e.g. after the endpoint was edited), keeping the state.
    pub fn set_config(&mut self, config: CircuitConfig) {
        self.config = config;
    }

    /// May a request be sent at `now`? Moves Open → HalfOpen once `open_duration` has passed, and
    /// declares a silent probe failed after `open_duration`.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, Rejected> {
        match self.inner {
            Inner::Closed { .. } => Ok(Permit {
                probe: false,
                epoch: self.epoch,
            }),
            Inner::Open { until } if now < until => Err(Rejected::Open { until }),
            Inner::Open { .. }
            | Inner::HalfOpen {
                probe_started: None,
            } => {
                if !matches!(self.inner, Inner::HalfOpen { .. }) {
                    self.transition(
                        Inner::HalfOpen {
                            probe_started: None,
                        },
                        now,
                    );
                }
                self.inner = Inner::HalfOpen {
                    probe_started: Some(now),
                };
                Ok(Permit {
                    probe: true,
                    epoch: self.epoch,
                })
            }
            Inner::HalfOpen {
                probe_started: Some(started),
            } => {
                let deadline = started
                    .checked_add(self.config.open_duration)
                    .unwrap_or(started);
                if now >= deadline {
                    let until = self.open(now);
                    Err(Rejected::Open { until })
                } else {
                    Err(Rejected::ProbeInFlight { deadline })
                }
            }
        }
    }

    /// The request of `permit` succeeded: resets the failure count; a probe closes the circuit.
    pub fn on_success(&mut self, permit: Permit, now: Instant) {
        if permit.epoch != self.epoch {
            return;
        }
        match self.inner {
            Inner::Closed { .. } => {
                self.failures = 0;
                self.inner = Inner::Closed { failures: 0 };
            }
            Inner::HalfOpen { .. } if permit.probe => {
                self.failures = 0;
                self.transition(Inner::Closed { failures: 0 }, now);
            }
            Inner::HalfOpen { .. } | Inner::Open { .. } => {}
        }
    }

    /// The request of `permit` failed (see
    /// [`super::outcome::HttpResult::is_endpoint_failure`]): counts toward the threshold; a
    /// failed probe opens the circuit again.
    pub fn on_failure(&mut self, permit: Permit, now: Instant) {
        if permit.epoch != self.epoch {
            return;
        }
        match self.inner {
            Inner::Closed { failures } => {
                let failures = failures.saturating_add(1);
                self.failures = failures;
                if failures >= self.config.failure_threshold.max(1) {
                    self.open(now);
                } else {
                    self.inner = Inner::Closed { failures };
                }
            }
            Inner::HalfOpen { .. } if permit.probe => {
                self.failures = self.failures.saturating_add(1);
                self.open(now);
            }
            Inner::HalfOpen { .. } | Inner::Open { .. } => {}
        }
    }

    /// The request of `permit` ended without a verdict (cancelled, shutting down): a probe slot
    /// is freed for the next request; otherwise nothing changes.
    pub fn abandon(&mut self, permit: Permit) {
        if permit.probe
            && permit.epoch == self.epoch
            && matches!(self.inner, Inner::HalfOpen { .. })
        {
            self.inner = Inner::HalfOpen {
                probe_started: None,
            };
        }
    }

    /// The current state (without applying time: an Open circuit whose time is up still shows
    /// Open until the next [`CircuitBreaker::try_acquire`]).
    pub fn state(&self) -> BreakerState {
        match self.inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Consecutive failures so far (kept while Open and HalfOpen, reset by a success).
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// When the current state began.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// When an Open circuit allows a probe; `None` in other states.
    pub fn open_until(&self) -> Option<Instant> {
        match self.inner {
            Inner::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Whether a half-open probe is in flight.
    pub fn probe_in_flight(&self) -> bool {
        matches!(
            self.inner,
            Inner::HalfOpen {
                probe_started: Some(_)
            }
        )
    }

    fn open(&mut self, now: Instant) -> Instant {
        let until = now.checked_add(self.config.open_duration).unwrap_or(now);
        self.transition(Inner::Open { until }, now);
        until
    }

    fn transition(&mut self, inner: Inner, now: Instant) {
        self.inner = inner;
        self.epoch = self.epoch.wrapping_add(1);
        self.since = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OPEN: Duration = Duration::from_secs(300);

    fn breaker(t0: Instant) -> CircuitBreaker {
        CircuitBreaker::new(CircuitConfig::default(), t0)
    }

    fn fail(b: &mut CircuitBreaker, now: Instant) {
        let permit = b.try_acquire(now).unwrap();
        b.on_failure(permit, now);
    }

    #[test]
    fn opens_after_threshold_then_half_opens_then_closes() {
        let t0 = Instant::now();
        let mut b = breaker(t0);
        for _ in 0..4 {
            fail(&mut b, t0);
        }
        assert_eq!(
            (b.state(), b.consecutive_failures()),
            (BreakerState::Closed, 4)
        );
        fail(&mut b, t0 + Duration::from_secs(1));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.since(), t0 + Duration::from_secs(1));
        let until = t0 + Duration::from_secs(1) + OPEN;
        assert_eq!(
            b.try_acquire(until - Duration::from_millis(1)),
            Err(Rejected::Open { until })
        );
        let probe = b.try_acquire(until).unwrap();
        assert!(probe.is_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(matches!(
            b.try_acquire(until),
            Err(Rejected::ProbeInFlight { .. })
        ));
        b.on_success(probe, until + Duration::from_secs(1));
        assert_eq!(
            (b.state(), b.consecutive_failures()),
            (BreakerState::Closed, 0)
        );
        assert!(!b.try_acquire(until).unwrap().is_probe());
    }

    #[test]
    fn failed_probe_reopens() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(
            CircuitConfig {
                failure_threshold: 1,
                open_duration: OPEN,
            },
            t0,
        );
        fail(&mut b, t0);
        let probe = b.try_acquire(t0 + OPEN).unwrap();
        b.on_failure(probe, t0 + OPEN);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(
            b.try_acquire(t0 + OPEN),
            Err(Rejected::Open {
                until: t0 + OPEN + OPEN
            })
        );
    }

    #[test]
    fn success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = breaker(t0);
        for _ in 0..4 {
            fail(&mut b, t0);
        }
        let permit = b.try_acquire(t0).unwrap();
        b.on_success(permit, t0);
        for _ in 0..4 {
            fail(&mut b, t0);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn stale_reports_are_ignored() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(
            CircuitConfig {
                failure_threshold: 1,
                open_duration: OPEN,
            },
            t0,
        );
        let slow = b.try_acquire(t0).unwrap();
        fail(&mut b, t0);
        let probe = b.try_acquire(t0 + OPEN).unwrap();
        // The slow request started while Closed must not close the circuit in the probe's place.
        b.on_success(slow, t0 + OPEN);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.probe_in_flight());
        b.on_failure(probe, t0 + OPEN);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn lost_probe_times_out_and_abandoned_probe_frees_the_slot() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(
            CircuitConfig {
                failure_threshold: 1,
                open_duration: OPEN,
            },
            t0,
        );
        fail(&mut b, t0);
        let lost = b.try_acquire(t0 + OPEN).unwrap();
        assert!(matches!(
            b.try_acquire(t0 + OPEN + OPEN),
            Err(Rejected::Open { .. })
        ));
        b.on_success(lost, t0 + OPEN + OPEN);
        assert_eq!(b.state(), BreakerState::Open);
        let probe = b.try_acquire(t0 + OPEN * 3).unwrap();
        b.abandon(probe);
        assert!(!b.probe_in_flight());
        assert!(b.try_acquire(t0 + OPEN * 3).unwrap().is_probe());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Acquire,
        Succeed(usize),
        Fail(usize),
        Abandon(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Acquire),
            2 => any::<usize>().prop_map(Op::Succeed),
            3 => any::<usize>().prop_map(Op::Fail),
            1 => any::<usize>().prop_map(Op::Abandon),
            2 => (0u64..400).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #[test]
        fn invariants_hold_for_any_sequence(ops in proptest::collection::vec(op(), 1..200), threshold in 1u32..6) {
            let t0 = Instant::now();
            let config = CircuitConfig { failure_threshold: threshold, open_duration: Duration::from_secs(60) };
            let mut b = CircuitBreaker::new(config, t0);
            let mut now = t0;
            let mut outstanding: Vec<Permit> = Vec::new();
            for op in ops {
                match op {
                    Op::Acquire => {
                        if let Ok(permit) = b.try_acquire(now) {
                            outstanding.push(permit);
                        }
                    }
                    Op::Advance(secs) => now += Duration::from_secs(secs),
                    Op::Succeed(i) | Op::Fail(i) | Op::Abandon(i) if outstanding.is_empty() => { let _ = i; }
                    Op::Succeed(i) => {
                        let permit = outstanding.remove(i % outstanding.len());
                        let current = permit.epoch == b.epoch;
                        let state = b.state();
                        b.on_success(permit, now);
                        if current && state == BreakerState::Closed {
                            prop_assert_eq!(b.consecutive_failures(), 0, "a success resets the count");
                        }
                    }
                    Op::Fail(i) => {
                        let permit = outstanding.remove(i % outstanding.len());
                        b.on_failure(permit, now);
                    }
                    Op::Abandon(i) => {
                        let permit = outstanding.remove(i % outstanding.len());
                        b.abandon(permit);
                    }
                }
                // Never two live probes at once.
                let live_probes = outstanding.iter().filter(|p| p.probe && p.epoch == b.epoch).count();
                prop_assert!(live_probes <= 1);
                prop_assert_eq!(live_probes == 1, b.probe_in_flight());
                match b.state() {
                    BreakerState::Closed => prop_assert!(b.consecutive_failures() < threshold),
                    BreakerState::Open => prop_assert!(b.try_acquire(b.since()).is_err() || config.open_duration.is_zero()),
                    BreakerState::HalfOpen => {}
                }
            }
        }
    }
}
