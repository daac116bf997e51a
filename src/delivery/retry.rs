//! The retry schedule: how long to wait before retry number n, and the receiver's `Retry-After`.
//!
//! All arithmetic saturates: any retry number, base or maximum delay gives a delay in
//! `[0, max_delay]` without overflow or panic.
use std::time::{Duration, SystemTime};

/// How the delay grows between retries (the CRD's enum: one definition for both layers).
pub use crate::api::endpoint::Backoff;

/// An endpoint's retry policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so at most `max_retries + 1` attempts).
    pub max_retries: u32,
    pub backoff: Backoff,
    /// Delay before the first retry.
    pub base_delay: Duration,
    /// Upper bound of any delay, including a receiver's `Retry-After`.
    pub max_delay: Duration,
    /// Each delay is randomized by up to this percentage either way (values above 100 count as 100).
    pub jitter_percent: u8,
    /// One retry at once when the first attempt gets a 5xx or a transport failure, before the
    /// delays (it does not count toward `max_retries`).
    pub immediate_retry: bool,
}

impl Default for RetryPolicy {
    /// The seed's schedule: on a 5xx or transport failure one retry at once, then 3 retries
    /// after 1 s, 2 s and 4 s; at most 1 h; no jitter.
    fn default() -> Self {
        Self {
            max_retries: 3,
            backoff: Backoff::Exponential,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(3600),
            jitter_percent: 0,
            immediate_retry: true,
        }
    }
}

/// The delay before retry number `retry_number` (1 = the first retry; 0 counts as 1).
///
/// `jitter_sample` is a uniform random number in `[0, 1)` (e.g. `rng.gen::<f64>()`): 0.5 means no
/// change, 0 means `-jitter_percent`, 1 means `+jitter_percent`. Out-of-range samples are clamped
/// and NaN counts as 0.5. The result never exceeds `max_delay`.
pub fn delay(policy: &RetryPolicy, retry_number: u32, jitter_sample: f64) -> Duration {
    let n = retry_number.max(1);
    let base = policy.base_delay;
    let raw = match policy.backoff {
        Backoff::Fixed => base,
        Backoff::Linear => base.saturating_mul(n),
        Backoff::Exponential => match 1u32.checked_shl(n - 1) {
            Some(factor) => base.saturating_mul(factor),
            None if base.is_zero() => Duration::ZERO,
            None => Duration::MAX,
        },
    };
    jitter(
        raw.min(policy.max_delay),
        policy.jitter_percent,
        jitter_sample,
    )
    .min(policy.max_delay)
}

fn jitter(delay: Duration, percent: u8, sample: f64) -> Duration {
    if percent == 0 || delay.is_zero() {
        return delay;
    }
    let sample = if sample.is_nan() {
        0.5
    } else {
        sample.clamp(0.0, 1.0)
    };
    let spread = f64::from(percent.min(100)) / 100.0;
    let factor = 1.0 + (2.0 * sample - 1.0) * spread;
    Duration::try_from_secs_f64(delay.as_secs_f64() * factor).unwrap_or(if factor > 1.0 {
        Duration::MAX
    } else {
        Duration::ZERO
    })
}

/// Parses a `Retry-After` value: delay-seconds (`120`) or an HTTP date, relative to `now`. A date
/// in the past gives zero; anything else unparseable gives `None`. Not clamped: the caller clamps
/// to its maximum delay.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: only overflow can fail, and a huge delay saturates.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn defaults_give_one_two_four_seconds() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.max_retries, 3);
        let delays: Vec<_> = (1..=3).map(|n| delay(&policy, n, 0.9)).collect();
        assert_eq!(delays, [secs(1), secs(2), secs(4)]);
    }

    #[test]
    fn linear_fixed_and_clamp() {
        let linear = RetryPolicy {
            backoff: Backoff::Linear,
            base_delay: secs(10),
            max_delay: secs(25),
            ..Default::default()
        };
        assert_eq!(
            (1..=4).map(|n| delay(&linear, n, 0.5)).collect::<Vec<_>>(),
            [secs(10), secs(20), secs(25), secs(25)]
        );
        let fixed = RetryPolicy {
            backoff: Backoff::Fixed,
            base_delay: secs(7),
            ..Default::default()
        };
        assert_eq!(delay(&fixed, 1, 0.5), secs(7));
        assert_eq!(delay(&fixed, 1000, 0.5), secs(7));
        assert_eq!(delay(&RetryPolicy::default(), 0, 0.5), secs(1));
        assert_eq!(delay(&RetryPolicy::default(), 40, 0.5), secs(3600));
    }

    #[test]
    fn jitter_spreads_both_ways() {
        let policy = RetryPolicy {
            jitter_percent: 20,
            base_delay: secs(10),
            ..Default::default()
        };
        assert_eq!(delay(&policy, 1, 0.0), secs(8));
        assert_eq!(delay(&policy, 1, 0.5), secs(10));
        assert_eq!(delay(&policy, 1, 1.0), secs(12));
        assert_eq!(delay(&policy, 1, f64::NAN), secs(10));
        assert_eq!(delay(&policy, 1, -3.0), secs(8));
        let capped = RetryPolicy {
            max_delay: secs(11),
            ..policy
        };
        assert_eq!(delay(&capped, 1, 1.0), secs(11));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + secs(1_700_000_000);
        assert_eq!(parse_retry_after("120", now), Some(secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(secs(u64::MAX))
        );
        let later = httpdate::fmt_http_date(now + secs(90));
        assert_eq!(parse_retry_after(&later, now), Some(secs(90)));
        let earlier = httpdate::fmt_http_date(now - secs(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        for bad in ["", "-1", "1.5", "soon", "Wed, 99 Foo 2015 07:28:00 GMT"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn delay_never_panics_and_stays_bounded(
            n in any::<u32>(), base in any::<u64>(), base_nanos in 0u32..1_000_000_000, max in any::<u64>(),
            jitter in any::<u8>(), sample in any::<f64>(), kind in 0u8..3,
        ) {
            let backoff = [Backoff::Exponential, Backoff::Linear, Backoff::Fixed][usize::from(kind)];
            let policy = RetryPolicy { max_retries: 3, backoff, base_delay: Duration::new(base, base_nanos), max_delay: secs(max), jitter_percent: jitter, immediate_retry: false };
            prop_assert!(delay(&policy, n, sample) <= policy.max_delay);
        }

        #[test]
        fn exponential_is_monotonic_without_jitter(base in 0u64..10_000, n in 1u32..200) {
            let policy = RetryPolicy { base_delay: Duration::from_millis(base), max_delay: Duration::MAX, ..Default::default() };
            prop_assert!(delay(&policy, n, 0.5) <= delay(&policy, n + 1, 0.5));
        }

        #[test]
        fn retry_after_never_panics(value in ".{0,40}", now in any::<u32>()) {
            let _ = parse_retry_after(&value, SystemTime::UNIX_EPOCH + secs(u64::from(now)));
        }
    }
}
