//! How an endpoint has been answering lately, for the adaptive rate limiter
//! ([`super::ratelimit::RateLimiter`]): latency and timeouts over the last minute, judged against
//! the endpoint's own last hour.
//!
//! The limiter cuts the rate when [`PerformanceTracker::verdict`] says so:
//!
//! - **Timeouts**: in the last minute at least [`MIN_UNREACHABLE`] attempts timed out or could
//!   not connect, and they are at least [`UNREACHABLE_PERCENT`]% of the attempts. A receiver
//!   that stops answering is the clearest sign of overload; checked first.
//! - **Latency rising**: the p95 latency of the last minute is above [`LATENCY_FACTOR`]× the
//!   p95 of the baseline and above [`LATENCY_FLOOR`]. Only when both windows mean something:
//!   at least [`MIN_RECENT_SAMPLES`] answers in the last minute, and a baseline of at least
//!   [`MIN_BASELINE_SAMPLES`] answers spread over at least [`MIN_BASELINE_MINUTES`] distinct
//!   minutes (a single burst after a restart is not "normal").
//!
//! Windows. The last minute is six 10-second buckets (the current one partly filled), so it
//! covers 50–60 s. The baseline is an hour of whole five-minute blocks *before* that: the
//! twelve newest blocks that ended at least two minutes ago, so it ends two to six minutes ago.
//! Were the slow minute part of its own baseline, a slowdown of a lightly used endpoint would
//! raise the baseline with it and never be seen. A sustained slowdown does enter the baseline
//! after two to six minutes; once it is more than 5% of the hour it *is* the baseline, and the
//! endpoint's new normal is no longer cut for.
//!
//! Memory is fixed and small, because every endpoint with traffic has a tracker (10,000
//! endpoints: ~17 MiB): [`RECENT_BUCKETS`] + [`BLOCK_BUCKETS`] buckets, each with a
//! [`BINS`]-bin latency histogram with log-spaced bounds (a factor √2 apart, 250 ms being one
//! of them so the floor is judged exactly). Blocks of five minutes, not minutes, and 16-bit
//! counts that sample past 65,535 answers a bin ([`histogram`]) keep it at about 1.8 KB
//! instead of 10; a block records which of its minutes had answers, so distinct minutes are
//! still counted. Percentiles come from the merged histograms, interpolated linearly inside
//! the bin, so they are estimates within a bin's width (≤ 41%) — plenty for a 3× trigger.
//! Pure: the clock is passed in.
use std::fmt;
use std::time::{Duration, Instant};

mod histogram;

pub use histogram::BINS;
use histogram::{CompactHistogram, Histogram};

/// Recent latency must be above this many times the baseline's to cut.
pub const LATENCY_FACTOR: u32 = 3;
/// …and above this: an endpoint going from 20 ms to 100 ms is still fast, not overloaded.
pub const LATENCY_FLOOR: Duration = Duration::from_millis(250);
/// Answers needed in the last minute before its p95 is trusted (the p95 of 20 answers is the
/// slowest but one).
pub const MIN_RECENT_SAMPLES: u32 = 20;
/// Answers needed in the baseline before its p95 is trusted (its five slowest are the 5%).
pub const MIN_BASELINE_SAMPLES: u32 = 100;
/// Distinct minutes with answers needed in the baseline (a burst is not a baseline).
pub const MIN_BASELINE_MINUTES: u32 = 5;
/// Timeouts and connect failures in the last minute needed to cut…
pub const MIN_UNREACHABLE: u32 = 5;
/// …that are also at least this share (percent) of the last minute's attempts.
pub const UNREACHABLE_PERCENT: u32 = 20;

/// Width of a recent bucket.
const RECENT_SPAN_SECS: u64 = 10;
/// Buckets in the last-minute window.
pub const RECENT_BUCKETS: usize = 6;
/// Width of a baseline block: five minutes.
const BLOCK_SPAN_SECS: u64 = 300;
/// A minute, the unit of the baseline's distinct-minutes count.
const MINUTE_SECS: u64 = 60;
/// Minutes in a block (each has a bit in [`Bucket::busy_minutes`]).
const MINUTES_PER_BLOCK: u32 = (BLOCK_SPAN_SECS / MINUTE_SECS) as u32;
/// Whole blocks in the baseline: an hour.
const BASELINE_BLOCKS: u32 = 12;
/// Blocks kept: the baseline's, plus the one or two the last six minutes are still filling.
pub const BLOCK_BUCKETS: usize = 14;

/// What an attempt was, as far as performance goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// A response head arrived (any status).
    Answered,
    /// No complete response within the timeout.
    TimedOut,
    /// The connection could not be established.
    ConnectFailed,
    /// Another failure below HTTP (reset, protocol error): an attempt, but not a timeout.
    OtherError,
}

impl Observed {
    /// A timeout or a connect failure: the attempts the timeouts trigger counts.
    pub fn is_unreachable(self) -> bool {
        matches!(self, Observed::TimedOut | Observed::ConnectFailed)
    }
}

/// Why the adaptive limiter cut an endpoint's rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutReason {
    /// The receiver asked to slow down (429, 503 or `Retry-After`).
    Throttled,
    /// The last minute's p95 latency is well above the last hour's.
    LatencyRising {
        recent_p95: Duration,
        baseline_p95: Duration,
    },
    /// Many of the last minute's attempts timed out or could not connect.
    Timeouts { failures: u32, attempts: u32 },
}

impl CutReason {
    /// A short, stable name for metrics labels and status.
    pub fn as_str(&self) -> &'static str {
        match self {
            CutReason::Throttled => "Throttled",
            CutReason::LatencyRising { .. } => "LatencyRising",
            CutReason::Timeouts { .. } => "Timeouts",
        }
    }
}

impl fmt::Display for CutReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CutReason::Throttled => {
                f.write_str("the receiver asked to slow down (429, 503 or Retry-After)")
            }
            CutReason::LatencyRising {
                recent_p95,
                baseline_p95,
            } => write!(
                f,
                "p95 latency {} in the last minute is above {LATENCY_FACTOR}× the last hour's {}",
                human(*recent_p95),
                human(*baseline_p95)
            ),
            CutReason::Timeouts { failures, attempts } => write!(
                f,
                "{failures} of {attempts} attempts in the last minute timed out or could not connect"
            ),
        }
    }
}

/// `1.2s` or `180ms`.
fn human(duration: Duration) -> String {
    if duration >= Duration::from_secs(1) {
        format!("{:.1}s", duration.as_secs_f64())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// Which slot of `span_secs` seconds, counted from `origin`, `now` falls in.
/// `u32` keeps buckets small: 10-second slots last 1,300 years.
fn slot(origin: Instant, now: Instant, span_secs: u64) -> u32 {
    u32::try_from(now.saturating_duration_since(origin).as_secs() / span_secs).unwrap_or(u32::MAX)
}

/// One time slot's attempts.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Which slot (time since the tracker's origin divided by the span) this bucket holds.
    slot: u32,
    latencies: CompactHistogram,
    attempts: u32,
    unreachable: u32,
    /// Baseline blocks: bit `k` is set when the block's minute `k` had a latency sample.
    busy_minutes: u8,
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        slot: 0,
        latencies: CompactHistogram::EMPTY,
        attempts: 0,
        unreachable: 0,
        busy_minutes: 0,
    };
}

/// `N` buckets of `SPAN` seconds, reused round-robin: a bucket found holding an older slot is
/// stale and reset.
#[derive(Clone, Debug)]
struct Ring<const N: usize, const SPAN: u64> {
    buckets: [Bucket; N],
}

impl<const N: usize, const SPAN: u64> Ring<N, SPAN> {
    fn new() -> Self {
        Self {
            buckets: [Bucket::EMPTY; N],
        }
    }

    fn slot(origin: Instant, now: Instant) -> u32 {
        slot(origin, now, SPAN)
    }

    fn index(slot: u32) -> usize {
        usize::try_from(slot).unwrap_or(usize::MAX) % N
    }

    /// The bucket for `slot`, reset if it held an older one; `None` if `slot` is older than
    /// the ring (an attempt reported very late: dropped).
    fn bucket_mut(&mut self, slot: u32) -> Option<&mut Bucket> {
        let bucket = &mut self.buckets[Self::index(slot)];
        if bucket.slot > slot {
            return None;
        }
        if bucket.slot < slot {
            *bucket = Bucket {
                slot,
                ..Bucket::EMPTY
            };
        }
        Some(bucket)
    }

    /// The slots `first..=last` merged (stale buckets skipped).
    fn summary(&self, first: u32, last: u32) -> Summary {
        let mut summary = Summary::default();
        for slot in first..=last {
            let bucket = &self.buckets[Self::index(slot)];
            if bucket.slot != slot {
                continue;
            }
            summary.latencies.merge(&bucket.latencies);
            summary.attempts = summary.attempts.saturating_add(bucket.attempts);
            summary.unreachable = summary.unreachable.saturating_add(bucket.unreachable);
            summary.busy_minutes += bucket.busy_minutes.count_ones();
        }
        summary
    }
}

/// Buckets merged over a window.
#[derive(Clone, Copy, Debug)]
struct Summary {
    latencies: Histogram,
    attempts: u32,
    unreachable: u32,
    /// Minutes with at least one latency sample (baseline blocks only).
    busy_minutes: u32,
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            latencies: Histogram::EMPTY,
            attempts: 0,
            unreachable: 0,
            busy_minutes: 0,
        }
    }
}

/// The windows as they stand, for status and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerformanceStats {
    /// Latency samples in the last minute.
    pub recent_samples: u32,
    /// Attempts of any kind in the last minute.
    pub recent_attempts: u32,
    /// Timeouts and connect failures in the last minute.
    pub recent_unreachable: u32,
    pub recent_p95: Option<Duration>,
    /// Latency samples in the baseline hour.
    pub baseline_samples: u32,
    /// Minutes of the baseline hour with at least one latency sample.
    pub baseline_minutes: u32,
    pub baseline_p95: Option<Duration>,
}

impl PerformanceStats {
    /// The last minute's p95, if it has enough samples to mean something.
    fn trusted_recent_p95(&self) -> Option<Duration> {
        self.recent_p95
            .filter(|_| self.recent_samples >= MIN_RECENT_SAMPLES)
    }

    /// The baseline's p95, if it has enough samples over enough minutes to mean something.
    pub fn trusted_baseline_p95(&self) -> Option<Duration> {
        self.baseline_p95.filter(|_| {
            self.baseline_samples >= MIN_BASELINE_SAMPLES
                && self.baseline_minutes >= MIN_BASELINE_MINUTES
        })
    }

    /// Latencies above this are "slow" for this endpoint: [`LATENCY_FACTOR`]× the baseline p95,
    /// at least [`LATENCY_FLOOR`]. `None` without a trusted baseline.
    pub fn latency_trigger(&self) -> Option<Duration> {
        self.trusted_baseline_p95()
            .map(|baseline| (baseline * LATENCY_FACTOR).max(LATENCY_FLOOR))
    }

    /// Whether these windows call for a cut, and why. Timeouts are checked first: they are the
    /// stronger sign.
    pub fn verdict(&self) -> Option<CutReason> {
        self.timeouts().or_else(|| self.latency_rising())
    }

    fn timeouts(&self) -> Option<CutReason> {
        let (failures, attempts) = (self.recent_unreachable, self.recent_attempts);
        let many = failures >= MIN_UNREACHABLE;
        let share =
            u64::from(failures) * 100 >= u64::from(attempts) * u64::from(UNREACHABLE_PERCENT);
        (many && share).then_some(CutReason::Timeouts { failures, attempts })
    }

    fn latency_rising(&self) -> Option<CutReason> {
        let recent_p95 = self.trusted_recent_p95()?;
        let baseline_p95 = self.trusted_baseline_p95()?;
        let trigger = self.latency_trigger()?;
        (recent_p95 > trigger).then_some(CutReason::LatencyRising {
            recent_p95,
            baseline_p95,
        })
    }
}

/// One endpoint's recent attempts: a last-minute window and a last-hour baseline, in fixed memory.
#[derive(Clone, Debug)]
pub struct PerformanceTracker {
    /// Slots count from here.
    origin: Instant,
    recent: Ring<RECENT_BUCKETS, RECENT_SPAN_SECS>,
    baseline: Ring<BLOCK_BUCKETS, BLOCK_SPAN_SECS>,
}

impl PerformanceTracker {
    /// An empty tracker; `now` is its origin.
    pub fn new(now: Instant) -> Self {
        Self {
            origin: now,
            recent: Ring::new(),
            baseline: Ring::new(),
        }
    }

    /// Records one attempt finished at `now`: `latency` when there was an answer to time.
    pub fn observe(&mut self, now: Instant, latency: Option<Duration>, kind: Observed) {
        let recent_slot = Ring::<RECENT_BUCKETS, RECENT_SPAN_SECS>::slot(self.origin, now);
        if let Some(bucket) = self.recent.bucket_mut(recent_slot) {
            bucket.attempts = bucket.attempts.saturating_add(1);
            bucket.unreachable = bucket
                .unreachable
                .saturating_add(u32::from(kind.is_unreachable()));
            if let Some(latency) = latency {
                bucket.latencies.add(latency);
            }
        }
        let minute = slot(self.origin, now, MINUTE_SECS);
        let block = minute / MINUTES_PER_BLOCK;
        if let (Some(bucket), Some(latency)) = (self.baseline.bucket_mut(block), latency) {
            bucket.latencies.add(latency);
            bucket.busy_minutes |= 1 << (minute % MINUTES_PER_BLOCK);
        }
    }

    /// The windows at `now`.
    pub fn stats(&self, now: Instant) -> PerformanceStats {
        let current = Ring::<RECENT_BUCKETS, RECENT_SPAN_SECS>::slot(self.origin, now);
        let recent_first = current.saturating_sub(RECENT_BUCKETS as u32 - 1);
        let recent = self.recent.summary(recent_first, current);
        // The newest block whose last minute is at least two minutes ago: block `b` ends with
        // minute 5b + 4, and 5b + 4 <= minute - 2 when b <= (minute - 6) / 5.
        let last_block = slot(self.origin, now, MINUTE_SECS)
            .checked_sub(MINUTES_PER_BLOCK + 1)
            .map(|minute| minute / MINUTES_PER_BLOCK);
        let baseline = match last_block {
            Some(last) => self
                .baseline
                .summary(last.saturating_sub(BASELINE_BLOCKS - 1), last),
            None => Summary::default(),
        };
        PerformanceStats {
            recent_samples: recent.latencies.total(),
            recent_attempts: recent.attempts,
            recent_unreachable: recent.unreachable,
            recent_p95: recent.latencies.p95(),
            baseline_samples: baseline.latencies.total(),
            baseline_minutes: baseline.busy_minutes,
            baseline_p95: baseline.latencies.p95(),
        }
    }

    /// Whether the endpoint's performance calls for a cut at `now`, and why (see
    /// [`PerformanceStats::verdict`]).
    pub fn verdict(&self, now: Instant) -> Option<CutReason> {
        self.stats(now).verdict()
    }

    /// See [`PerformanceStats::latency_trigger`].
    pub fn latency_trigger(&self, now: Instant) -> Option<Duration> {
        self.stats(now).latency_trigger()
    }

    /// Buckets held (fixed).
    pub fn bucket_count(&self) -> usize {
        self.recent.buckets.len() + self.baseline.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Answers of `latency` every `every` from `from` until before `until`; returns `until`.
    fn answers(
        tracker: &mut PerformanceTracker,
        from: Instant,
        until: Instant,
        every: Duration,
        latency: Duration,
    ) -> Instant {
        let mut now = from;
        while now < until {
            tracker.observe(now, Some(latency), Observed::Answered);
            now += every;
        }
        until
    }

    /// A tracker with ten minutes of 50 ms answers, one a second; returns it and the end.
    fn with_fast_baseline() -> (PerformanceTracker, Instant) {
        let t0 = Instant::now();
        let mut tracker = PerformanceTracker::new(t0);
        let end = answers(&mut tracker, t0, t0 + 600 * 1000 * MS, 1000 * MS, 50 * MS);
        (tracker, end)
    }

    #[test]
    fn p95_is_read_from_the_merged_histograms() {
        // Merged across buckets of the last minute: 94 fast in one, 6 slow in another. Rank 95
        // is then a 1 s sample: bin (707 ms, 1 s].
        let t0 = Instant::now();
        let mut tracker = PerformanceTracker::new(t0);
        for _ in 0..94 {
            tracker.observe(t0, Some(10 * MS), Observed::Answered);
        }
        for _ in 0..6 {
            tracker.observe(t0 + 25_000 * MS, Some(1000 * MS), Observed::Answered);
        }
        let stats = tracker.stats(t0 + 30_000 * MS);
        assert_eq!(stats.recent_samples, 100);
        let p95 = stats.recent_p95.unwrap();
        assert!(p95 > 707 * MS && p95 <= 1000 * MS, "{p95:?}");
    }

    #[test]
    fn latency_rising_above_three_times_the_baseline_and_the_floor_cuts() {
        let (mut tracker, start) = with_fast_baseline();
        assert_eq!(tracker.verdict(start), None);
        let stats = tracker.stats(start);
        // The first block only: the second ends with minute 9, less than two minutes ago.
        assert_eq!(
            (stats.baseline_samples, stats.baseline_minutes),
            (300, 5),
            "{stats:?}"
        );
        assert_eq!(
            stats.latency_trigger(),
            Some(LATENCY_FLOOR),
            "3× ~60 ms is under the floor"
        );
        let now = answers(
            &mut tracker,
            start,
            start + 30_000 * MS,
            1000 * MS,
            1000 * MS,
        );
        let Some(CutReason::LatencyRising {
            recent_p95,
            baseline_p95,
        }) = tracker.verdict(now)
        else {
            panic!("{:?}", tracker.stats(now));
        };
        assert!(recent_p95 > 707 * MS, "{recent_p95:?}");
        assert!(baseline_p95 > 44 * MS && baseline_p95 <= 62500 * MS / 1000);
    }

    #[test]
    fn a_rise_that_stays_under_the_floor_does_not_cut() {
        let t0 = Instant::now();
        let mut tracker = PerformanceTracker::new(t0);
        let start = answers(&mut tracker, t0, t0 + 600_000 * MS, 1000 * MS, 20 * MS);
        // 12× the baseline, but 240 ms: still fast.
        let now = answers(
            &mut tracker,
            start,
            start + 60_000 * MS,
            1000 * MS,
            240 * MS,
        );
        assert!(tracker.stats(now).recent_p95.unwrap() <= LATENCY_FLOOR);
        assert_eq!(tracker.verdict(now), None);
        // 400 ms is above the floor.
        let now = answers(&mut tracker, now, now + 30_000 * MS, 1000 * MS, 400 * MS);
        assert!(matches!(
            tracker.verdict(now),
            Some(CutReason::LatencyRising { .. })
        ));
    }

    #[test]
    fn a_rise_under_three_times_the_baseline_does_not_cut() {
        let t0 = Instant::now();
        let mut tracker = PerformanceTracker::new(t0);
        let start = answers(&mut tracker, t0, t0 + 600_000 * MS, 1000 * MS, 300 * MS);
        let now = answers(
            &mut tracker,
            start,
            start + 60_000 * MS,
            1000 * MS,
            600 * MS,
        );
        assert_eq!(tracker.verdict(now), None, "{:?}", tracker.stats(now));
    }

    #[test]
    fn too_few_samples_do_not_cut() {
        // Too few in the last minute: 19 slow answers.
        let (mut tracker, start) = with_fast_baseline();
        let quiet = start + 120_000 * MS;
        let now = answers(
            &mut tracker,
            quiet,
            quiet + 19_000 * MS,
            1000 * MS,
            5000 * MS,
        );
        assert_eq!(tracker.stats(now).recent_samples, 19);
        assert_eq!(tracker.verdict(now), None);
        tracker.observe(now, Some(5000 * MS), Observed::Answered);
        assert!(tracker.verdict(now).is_some(), "the 20th counts");

        // A baseline of many samples but from a single burst (one minute).
        let t0 = Instant::now();
        let mut burst = PerformanceTracker::new(t0);
        answers(&mut burst, t0, t0 + 50_000 * MS, 100 * MS, 50 * MS);
        let start = t0 + 480_000 * MS;
        let now = answers(&mut burst, start, start + 30_000 * MS, 500 * MS, 5000 * MS);
        let stats = burst.stats(now);
        assert!(stats.baseline_samples >= MIN_BASELINE_SAMPLES && stats.baseline_minutes == 1);
        assert_eq!(burst.verdict(now), None);

        // A baseline over many minutes but with few samples: 90 answers over 30 minutes.
        let t0 = Instant::now();
        let mut sparse = PerformanceTracker::new(t0);
        let start = answers(&mut sparse, t0, t0 + 1_800_000 * MS, 20_000 * MS, 50 * MS);
        let now = answers(&mut sparse, start, start + 30_000 * MS, 500 * MS, 5000 * MS);
        assert_eq!(
            sparse.stats(now).baseline_samples,
            75,
            "the last two to six minutes (the block in progress and the one before) are not in it"
        );
        assert_eq!(sparse.verdict(now), None);
    }

    #[test]
    fn timeouts_past_the_threshold_cut() {
        let t0 = Instant::now();
        let mut tracker = PerformanceTracker::new(t0);
        // 4 timeouts among 5 attempts: too few.
        tracker.observe(t0, Some(10 * MS), Observed::Answered);
        for _ in 0..4 {
            tracker.observe(t0, None, Observed::TimedOut);
        }
        assert_eq!(tracker.verdict(t0), None);
        tracker.observe(t0, None, Observed::ConnectFailed);
        assert_eq!(
            tracker.verdict(t0),
            Some(CutReason::Timeouts {
                failures: 5,
                attempts: 6
            })
        );
        // 5 of 30 (17%) is under the share.
        for _ in 0..24 {
            tracker.observe(t0, Some(10 * MS), Observed::Answered);
        }
        assert_eq!(tracker.verdict(t0), None);
        // Other errors are attempts but not timeouts: 5 of 25 is 20%.
        let mut other = PerformanceTracker::new(t0);
        for _ in 0..5 {
            other.observe(t0, None, Observed::TimedOut);
        }
        for _ in 0..20 {
            other.observe(t0, None, Observed::OtherError);
        }
        assert!(other.verdict(t0).is_some());
        other.observe(t0, None, Observed::OtherError);
        assert_eq!(other.verdict(t0), None);
        // Timeouts age out with the last minute.
        let mut aging = PerformanceTracker::new(t0);
        for _ in 0..10 {
            aging.observe(t0, None, Observed::TimedOut);
        }
        assert!(aging.verdict(t0 + 59_000 * MS).is_some());
        assert_eq!(aging.verdict(t0 + 60_000 * MS), None);
    }

    #[test]
    fn timeouts_are_reported_before_latency() {
        let (mut tracker, start) = with_fast_baseline();
        let now = answers(
            &mut tracker,
            start,
            start + 30_000 * MS,
            1000 * MS,
            2000 * MS,
        );
        assert!(matches!(
            tracker.verdict(now),
            Some(CutReason::LatencyRising { .. })
        ));
        for _ in 0..15 {
            tracker.observe(now, None, Observed::TimedOut);
        }
        assert!(matches!(
            tracker.verdict(now),
            Some(CutReason::Timeouts { failures: 15, .. })
        ));
    }

    #[test]
    fn an_hour_of_quiet_resets_the_windows() {
        let (mut tracker, start) = with_fast_baseline();
        let now = answers(
            &mut tracker,
            start,
            start + 30_000 * MS,
            1000 * MS,
            2000 * MS,
        );
        assert!(tracker.verdict(now).is_some());
        // An hour of baseline plus the two to six minutes before it.
        let later = now + Duration::from_secs(66 * 60);
        let stats = tracker.stats(later);
        assert_eq!(
            (
                stats.recent_samples,
                stats.baseline_samples,
                stats.baseline_p95
            ),
            (0, 0, None)
        );
        // Slow answers now have no baseline to be slow against.
        let after = answers(
            &mut tracker,
            later,
            later + 30_000 * MS,
            1000 * MS,
            2000 * MS,
        );
        assert_eq!(tracker.verdict(after), None);
        assert_eq!(tracker.latency_trigger(after), None);
    }

    #[test]
    fn the_baseline_ends_two_to_six_minutes_ago() {
        let t0 = Instant::now();
        let mut tracker = PerformanceTracker::new(t0);
        // One answer at the start of each of 40 minutes.
        answers(
            &mut tracker,
            t0,
            t0 + Duration::from_secs(40 * 60),
            60_000 * MS,
            50 * MS,
        );
        for minute in 0..40u64 {
            let now = t0 + Duration::from_secs(minute * 60 + 30);
            let stats = tracker.stats(now);
            // Minutes 0..n are in it, so its newest is minute n - 1.
            let newest = i64::from(stats.baseline_minutes) - 1;
            let age = minute as i64 - newest;
            if minute < 6 {
                assert_eq!(stats.baseline_minutes, 0, "minute {minute}");
            } else {
                assert!((2..=6).contains(&age), "minute {minute}: {stats:?}");
            }
            assert_eq!(stats.baseline_samples, stats.baseline_minutes);
        }
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut tracker = PerformanceTracker::new(t0);
        let size = std::mem::size_of::<PerformanceTracker>();
        // Three hours at 20 answers a second.
        answers(
            &mut tracker,
            t0,
            t0 + Duration::from_secs(3 * 3600),
            50 * MS,
            50 * MS,
        );
        assert_eq!(tracker.bucket_count(), RECENT_BUCKETS + BLOCK_BUCKETS);
        assert_eq!(std::mem::size_of_val(&tracker), size);
        // Every endpoint with traffic has one: 10,000 of them stay under 20 MiB.
        assert!(size < 2 * 1024, "{size} bytes");
        // The baseline holds at most its hour: old minutes were overwritten, not kept.
        let held: u64 = tracker
            .baseline
            .buckets
            .iter()
            .map(|bucket| u64::from(bucket.latencies.total()))
            .sum();
        assert!(
            held <= BLOCK_BUCKETS as u64 * BLOCK_SPAN_SECS * 20,
            "{held}"
        );
        let stats = tracker.stats(t0 + Duration::from_secs(3 * 3600));
        assert_eq!(stats.baseline_samples, 60 * 60 * 20);
        assert_eq!(stats.baseline_minutes, 60);
    }

    #[test]
    fn late_reports_older_than_the_ring_are_dropped() {
        let t0 = Instant::now();
        let mut tracker = PerformanceTracker::new(t0);
        let late = t0 + Duration::from_secs(3 * 3600);
        tracker.observe(late, Some(10 * MS), Observed::Answered);
        // An attempt reported for a time the ring has moved past.
        tracker.observe(
            late - Duration::from_secs(3600 + 120),
            Some(10 * MS),
            Observed::Answered,
        );
        tracker.observe(
            t0 - Duration::from_secs(1),
            Some(10 * MS),
            Observed::Answered,
        );
        assert_eq!(tracker.stats(late).recent_samples, 1);
    }

    #[test]
    fn reasons_have_stable_names_and_readable_messages() {
        let latency = CutReason::LatencyRising {
            recent_p95: 1200 * MS,
            baseline_p95: 180 * MS,
        };
        assert_eq!(latency.as_str(), "LatencyRising");
        assert_eq!(
            latency.to_string(),
            "p95 latency 1.2s in the last minute is above 3× the last hour's 180ms"
        );
        let timeouts = CutReason::Timeouts {
            failures: 6,
            attempts: 20,
        };
        assert_eq!(timeouts.as_str(), "Timeouts");
        assert_eq!(
            timeouts.to_string(),
            "6 of 20 attempts in the last minute timed out or could not connect"
        );
        assert_eq!(CutReason::Throttled.as_str(), "Throttled");
        assert!(CutReason::Throttled.to_string().contains("slow down"));
    }
}
