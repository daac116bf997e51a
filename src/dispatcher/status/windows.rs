//! The windowed figures of an endpoint's status (success and error rates, average and p95
//! latency, uptime over the last hour and day) are scans of the window's attempts, so their cost
//! grows with the traffic an endpoint had: recomputed on every status round they took 17% of the
//! dispatcher's CPU at 1,000 deliveries/s after a minute of history. The status writer keeps
//! them per endpoint and recomputes a window only when its copy is older than its refresh
//! period (spread per endpoint between half of it and all of it, so that endpoints cached in the
//! same round do not all come due in the same later round), or small enough to be cheap (under
//! [`CHEAP_ATTEMPTS`] attempts: an endpoint with little traffic always shows exact figures);
//! totals, last times and queue counts are read fresh every round.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::store::{EndpointRef, EndpointStats, StatsWindows, WindowStats};

/// How old the last hour's figures may get.
pub const HOUR_REFRESH: Duration = Duration::from_secs(30);
/// How old the last day's figures may get.
pub const DAY_REFRESH: Duration = Duration::from_secs(600);
/// A window with fewer attempts than this is recomputed every round.
pub const CHEAP_ATTEMPTS: u64 = 100;

#[derive(Debug, Default)]
struct Kept {
    hour: Option<(Instant, WindowStats)>,
    day: Option<(Instant, WindowStats)>,
}

/// The windows last computed for each endpoint, and when.
#[derive(Debug, Default)]
pub struct WindowCache {
    kept: HashMap<EndpointRef, Kept>,
}

fn stale(kept: Option<&(Instant, WindowStats)>, now: Instant, refresh: Duration) -> bool {
    kept.is_none_or(|(at, window)| {
        window.attempts < CHEAP_ATTEMPTS || now.saturating_duration_since(*at) >= refresh
    })
}

/// `refresh` for this endpoint: between half of it and all of it, fixed by the endpoint's name.
fn spread(endpoint: &EndpointRef, refresh: Duration) -> Duration {
    let share = f64::from(endpoint.partition_hash() % 1_000) / 2_000.0;
    refresh.mul_f64(0.5 + share)
}

impl WindowCache {
    /// The windows to compute for `endpoint` now: those never computed or older than their
    /// refresh period.
    pub fn wanted(&self, endpoint: &EndpointRef, now: Instant) -> StatsWindows {
        let kept = self.kept.get(endpoint);
        StatsWindows {
            hour: stale(
                kept.and_then(|k| k.hour.as_ref()),
                now,
                spread(endpoint, HOUR_REFRESH),
            ),
            day: stale(
                kept.and_then(|k| k.day.as_ref()),
                now,
                spread(endpoint, DAY_REFRESH),
            ),
        }
    }

    /// Keeps the windows just `computed` into `stats` and fills the others in from the copies.
    pub fn fill(
        &mut self,
        endpoint: &EndpointRef,
        now: Instant,
        computed: StatsWindows,
        stats: &mut EndpointStats,
    ) {
        let kept = self.kept.entry(endpoint.clone()).or_default();
        if computed.hour {
            kept.hour = Some((now, stats.last_hour.clone()));
        } else if let Some((_, hour)) = &kept.hour {
            stats.last_hour = hour.clone();
        }
        if computed.day {
            kept.day = Some((now, stats.last_day.clone()));
        } else if let Some((_, day)) = &kept.day {
            stats.last_day = day.clone();
        }
    }

    /// Drops an endpoint's copies (it is gone).
    pub fn forget(&mut self, endpoint: &EndpointRef) {
        self.kept.remove(endpoint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(attempts: u64) -> WindowStats {
        WindowStats {
            attempts,
            ..WindowStats::default()
        }
    }

    #[test]
    fn refresh_periods_spread_between_half_and_all() {
        let periods: Vec<Duration> = (0..200)
            .map(|i| spread(&EndpointRef::new("ns", format!("e{i}")), HOUR_REFRESH))
            .collect();
        assert!(periods
            .iter()
            .all(|p| *p >= HOUR_REFRESH / 2 && *p < HOUR_REFRESH));
        let distinct: std::collections::HashSet<_> = periods.iter().collect();
        assert!(distinct.len() > 100, "endpoints get different periods");
    }

    #[test]
    fn a_cheap_window_is_recomputed_every_round() {
        let endpoint = EndpointRef::new("ns", "quiet");
        let mut cache = WindowCache::default();
        let now = Instant::now();
        let mut stats = EndpointStats {
            last_hour: window(CHEAP_ATTEMPTS - 1),
            last_day: window(CHEAP_ATTEMPTS),
            ..EndpointStats::default()
        };
        cache.fill(&endpoint, now, StatsWindows::ALL, &mut stats);
        let wanted = cache.wanted(&endpoint, now + Duration::from_secs(1));
        assert_eq!(
            wanted,
            StatsWindows {
                hour: true,
                day: false
            }
        );
    }

    #[test]
    fn each_window_is_recomputed_only_when_its_copy_is_too_old() {
        let endpoint = EndpointRef::new("ns", "crm");
        let mut cache = WindowCache::default();
        let start = Instant::now();
        assert_eq!(cache.wanted(&endpoint, start), StatsWindows::ALL);
        let mut stats = EndpointStats {
            last_hour: window(10_000),
            last_day: window(100_000),
            ..EndpointStats::default()
        };
        cache.fill(&endpoint, start, StatsWindows::ALL, &mut stats);

        let soon = start + Duration::from_secs(5);
        assert_eq!(cache.wanted(&endpoint, soon), StatsWindows::NONE);
        let mut fresh = EndpointStats::default();
        cache.fill(&endpoint, soon, StatsWindows::NONE, &mut fresh);
        assert_eq!(
            (fresh.last_hour.attempts, fresh.last_day.attempts),
            (10_000, 100_000)
        );

        let later = start + spread(&endpoint, HOUR_REFRESH);
        assert_eq!(
            cache.wanted(&endpoint, later - Duration::from_millis(1)),
            StatsWindows::NONE
        );
        let hour_only = StatsWindows {
            hour: true,
            day: false,
        };
        assert_eq!(cache.wanted(&endpoint, later), hour_only);
        let mut next = EndpointStats {
            last_hour: window(12_000),
            ..EndpointStats::default()
        };
        cache.fill(&endpoint, later, hour_only, &mut next);
        assert_eq!(
            (next.last_hour.attempts, next.last_day.attempts),
            (12_000, 100_000)
        );

        assert_eq!(
            cache.wanted(&endpoint, start + spread(&endpoint, DAY_REFRESH)),
            StatsWindows::ALL
        );
        cache.forget(&endpoint);
        assert_eq!(cache.wanted(&endpoint, later), StatsWindows::ALL);
    }
}
