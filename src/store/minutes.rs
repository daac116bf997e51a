//! Per-minute rollups of each endpoint's attempts, so that an endpoint's windowed statistics
//! (last hour, last day) cost a read of at most one row per minute instead of a scan of every
//! attempt in the window. Read on every status round, those scans grew with an endpoint's
//! traffic: at 10 attempts a second an hour is 36,000 rows and a day 864,000, and they were a
//! third of PostgreSQL's statement time in a 13-second benchmark (docs/benchmarks.md, issue 19,
//! session 18).
//!
//! The rollup of (endpoint, minute) is written with the attempts, in the same transaction
//! (added to, never replaced, so an attempt recorded late still lands in its minute), and holds
//! the window's sums and every latency with its count, so the p95 stays exact. A window is cut
//! by [`WindowPlan`] into the whole minutes inside it (read from the rollups) and the partial
//! minutes at its two edges (scanned from the attempts): the figures are exactly those of a scan.
//! Pure; the backends hold the SQL.
use std::collections::BTreeMap;

use crate::store::common::{p95_offset, unsigned, window_stats};
use crate::store::{StoreError, WindowStats};

/// A minute in milliseconds; rollups are keyed by `at.div_euclid(MINUTE_MS)`.
pub const MINUTE_MS: i64 = 60_000;

/// Rollups older than this many minutes before the newest are purged: no window reaches them
/// (the longest is a day).
pub const ROLLUP_KEPT_MINUTES: i64 = 24 * 60 + 1;

/// The minute an attempt at `at` (unix milliseconds) counts in.
pub fn minute_of(at: i64) -> i64 {
    at.div_euclid(MINUTE_MS)
}

/// Whether an answer says the receiver is up: a status below 500 other than 408 (a 4xx is a
/// failed delivery from a receiver that is up); no answer is not.
pub fn is_available(status_code: Option<i64>) -> bool {
    status_code.is_some_and(|code| code < 500 && code != 408)
}

/// One attempt as the windows count it (filtered attempts sent no request and are left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptSample {
    pub at: i64,
    pub success: bool,
    pub available: bool,
    pub latency_ms: Option<i64>,
}

/// What some attempts add up to: a minute's rollup, a raw edge of a window, or a whole window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WindowTotals {
    pub attempts: u64,
    pub successes: u64,
    pub available: u64,
    /// Every latency (milliseconds) with how many attempts took it.
    pub latencies: BTreeMap<i64, u64>,
}

impl WindowTotals {
    pub fn add(&mut self, sample: &AttemptSample) {
        self.attempts += 1;
        self.successes += u64::from(sample.success);
        self.available += u64::from(sample.available);
        if let Some(ms) = sample.latency_ms {
            *self.latencies.entry(ms).or_default() += 1;
        }
    }

    pub fn merge(&mut self, other: WindowTotals) {
        self.attempts += other.attempts;
        self.successes += other.successes;
        self.available += other.available;
        for (ms, n) in other.latencies {
            *self.latencies.entry(ms).or_default() += n;
        }
    }

    /// The latencies as the rollup row stores them: a JSON object `{"<ms>": <count>, …}`.
    pub fn latencies_json(&self) -> String {
        // A map of integers to integers always serialises.
        serde_json::to_string(&self.latencies).unwrap_or_else(|_| "{}".to_owned())
    }

    /// A rollup row's columns.
    pub fn from_row(
        attempts: i64,
        successes: i64,
        available: i64,
        latencies: &str,
    ) -> Result<WindowTotals, StoreError> {
        let latencies = serde_json::from_str(latencies)
            .map_err(|e| StoreError::Commit(format!("an attempt_minutes row's latencies: {e}")))?;
        Ok(WindowTotals {
            attempts: unsigned(attempts),
            successes: unsigned(successes),
            available: unsigned(available),
            latencies,
        })
    }

    /// The window's statistics: rates, the mean latency and the nearest-rank p95.
    pub fn into_stats(self) -> WindowStats {
        let with_latency: u64 = self.latencies.values().sum();
        let (avg, p95) = if with_latency == 0 {
            (None, None)
        } else {
            let total: i128 = self
                .latencies
                .iter()
                .map(|(ms, n)| i128::from(*ms) * i128::from(*n))
                .sum();
            let offset = p95_offset(i64::try_from(with_latency).unwrap_or(i64::MAX));
            let mut seen = 0u64;
            let p95 = self.latencies.iter().find_map(|(ms, n)| {
                seen += n;
                (i64::try_from(seen).unwrap_or(i64::MAX) > offset).then_some(*ms)
            });
            (
                Some(total as f64 / with_latency as f64),
                p95.map(|ms| u64::try_from(ms).unwrap_or(0)),
            )
        };
        window_stats(self.attempts, self.successes, self.available, avg, p95)
    }
}

/// `samples` summed per minute, in minute order.
pub fn by_minute(samples: &[AttemptSample]) -> Vec<(i64, WindowTotals)> {
    let mut minutes: BTreeMap<i64, WindowTotals> = BTreeMap::new();
    for sample in samples {
        minutes.entry(minute_of(sample.at)).or_default().add(sample);
    }
    minutes.into_iter().collect()
}

/// How to read the window `since < at <= now`: the attempts of each `raw` range
/// (`lo < at <= hi`), and the rollups of the whole minutes `minutes` (first, last; inclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowPlan {
    pub raw: Vec<(i64, i64)>,
    pub minutes: Option<(i64, i64)>,
}

impl WindowPlan {
    pub fn new(since: i64, now: i64) -> WindowPlan {
        // The first minute that starts after `since` and the last that ends before `now`'s own.
        let first = minute_of(since) + 1;
        let last = minute_of(now) - 1;
        if first > last {
            return WindowPlan {
                raw: vec![(since, now)],
                minutes: None,
            };
        }
        WindowPlan {
            raw: vec![
                (since, first * MINUTE_MS - 1),
                ((last + 1) * MINUTE_MS - 1, now),
            ],
            minutes: Some((first, last)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(at: i64, success: bool, latency_ms: Option<i64>) -> AttemptSample {
        AttemptSample {
            at,
            success,
            available: success,
            latency_ms,
        }
    }

    #[test]
    fn a_short_window_is_all_raw_and_a_long_one_is_cut_at_whole_minutes() {
        assert_eq!(
            WindowPlan::new(10_000, 100_000),
            WindowPlan {
                raw: vec![(10_000, 100_000)],
                minutes: None
            }
        );
        // (61 s, 300.5 s]: minutes 2, 3 and 4 are whole; 61–120 s and 300–300.5 s are raw.
        assert_eq!(
            WindowPlan::new(61_000, 300_500),
            WindowPlan {
                raw: vec![(61_000, 119_999), (299_999, 300_500)],
                minutes: Some((2, 4))
            }
        );
    }

    #[test]
    fn the_p95_is_the_nearest_rank_of_the_counted_latencies() {
        let mut totals = WindowTotals::default();
        for (i, ms) in [10, 20, 30, 40, 400].into_iter().enumerate() {
            totals.add(&sample(i as i64, ms < 100, Some(ms)));
        }
        totals.add(&sample(9, false, None));
        let stats = totals.into_stats();
        assert_eq!((stats.attempts, stats.successes), (6, 4));
        assert_eq!(stats.p95_latency_ms, Some(400), "the 5th of 5");
        assert_eq!(stats.avg_latency_ms, Some(100.0));
        assert_eq!(WindowTotals::default().into_stats(), WindowStats::default());
    }

    #[test]
    fn latencies_round_trip_through_the_row() {
        let mut totals = WindowTotals::default();
        for ms in [0, 3, 3, 1_200] {
            totals.add(&sample(0, true, Some(ms)));
        }
        let json = totals.latencies_json();
        assert_eq!(json, r#"{"0":1,"3":2,"1200":1}"#);
        let back = WindowTotals::from_row(4, 4, 4, &json).unwrap();
        assert_eq!(back, totals);
        assert!(WindowTotals::from_row(1, 1, 1, "[1]").is_err());
    }

    fn any_sample() -> impl Strategy<Value = AttemptSample> {
        (
            0i64..600_000,
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(0i64..50),
        )
            .prop_map(|(at, success, available, latency_ms)| AttemptSample {
                at,
                success,
                available,
                latency_ms,
            })
    }

    proptest! {
        /// Whole minutes from their rollups plus the raw edges give exactly the statistics of
        /// a scan of the window, whatever the order the attempts were rolled up in.
        #[test]
        fn rollups_and_edges_equal_a_scan(
            samples in proptest::collection::vec(any_sample(), 0..200),
            since in 0i64..600_000,
            length in 0i64..600_000,
        ) {
            let now = since + length;
            let mut scan = WindowTotals::default();
            for s in samples.iter().filter(|s| s.at > since && s.at <= now) {
                scan.add(s);
            }
            // Rolled up in two halves, as two record batches would.
            let (early, late) = samples.split_at(samples.len() / 2);
            let mut rollups: BTreeMap<i64, WindowTotals> = BTreeMap::new();
            for (minute, totals) in by_minute(late).into_iter().chain(by_minute(early)) {
                rollups.entry(minute).or_default().merge(totals);
            }
            let plan = WindowPlan::new(since, now);
            let mut planned = WindowTotals::default();
            for (lo, hi) in &plan.raw {
                for s in samples.iter().filter(|s| s.at > *lo && s.at <= *hi) {
                    planned.add(s);
                }
            }
            if let Some((first, last)) = plan.minutes {
                for (_, totals) in rollups.range(first..=last) {
                    planned.merge(totals.clone());
                }
            }
            prop_assert_eq!(planned.clone(), scan.clone());
            prop_assert_eq!(planned.into_stats(), scan.into_stats());
        }
    }
}
