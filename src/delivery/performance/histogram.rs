//! Latency histograms for the performance tracker: log-spaced bins, a p95 read from them, and a
//! half-size form for the tracker's buckets.
//!
//! Every endpoint with traffic keeps twenty buckets, so a bucket's histogram is most of the
//! tracker's memory. [`CompactHistogram`] keeps 16-bit counts. When one would pass `u16::MAX`
//! (more than 65,535 answers in one bin of one bucket: over 218 a second in one five-minute
//! block), every count is halved and `scale` goes up by one: from then on each count stands for
//! 2^`scale` answers, and one answer in 2^`scale` is counted. Which ones is decided by a
//! Fibonacci hash of the bucket's running answer number, so every residue of a periodic pattern
//! (two backends behind a balancer, one slow) is sampled at the same rate. Below that volume
//! the counts are exact. [`Histogram`] has 32-bit exact counts: the windows merged.
use std::time::Duration;

/// Upper bounds of the latency bins, in microseconds: 250 ms × 2^(k/2) for k in −16..=16, about
/// 1 ms to 64 s. A latency `l` goes to the first bin whose bound is ≥ `l`; above the last bound
/// it goes to an overflow bin.
pub(super) const BOUNDS_US: [u64; 33] = [
    977, 1381, 1953, 2762, 3906, 5524, 7812, 11049, 15625, 22097, 31250, 44194, 62500, 88388,
    125000, 176777, 250000, 353553, 500000, 707107, 1000000, 1414214, 2000000, 2828427, 4000000,
    5656854, 8000000, 11313708, 16000000, 22627417, 32000000, 45254834, 64000000,
];
/// Bins per histogram: one per bound plus the overflow bin.
pub const BINS: usize = BOUNDS_US.len() + 1;

/// The bin `latency` falls in.
fn bin(latency: Duration) -> usize {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    BOUNDS_US.partition_point(|&bound| bound < micros)
}

/// Latency counts per bin, exact (saturating at `u32::MAX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Histogram {
    pub(super) counts: [u32; BINS],
}

impl Histogram {
    pub(super) const EMPTY: Histogram = Histogram { counts: [0; BINS] };

    #[cfg(test)]
    pub(super) fn add(&mut self, latency: Duration) {
        if let Some(count) = self.counts.get_mut(bin(latency)) {
            *count = count.saturating_add(1);
        }
    }

    /// Adds a bucket's counts, each standing for 2^`scale` answers.
    pub(super) fn merge(&mut self, other: &CompactHistogram) {
        for (mine, &theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(u32::from(theirs) << other.scale);
        }
    }

    pub(super) fn total(&self) -> u32 {
        self.counts
            .iter()
            .fold(0u32, |sum, &count| sum.saturating_add(count))
    }

    /// The 95th percentile (nearest rank), interpolated linearly inside its bin; the overflow
    /// bin answers its lower bound. `None` when empty.
    pub(super) fn p95(&self) -> Option<Duration> {
        let (bin, nth, count) = self.nearest_rank(950)?;
        Some(Duration::from_micros(interpolate(bin, nth, count)))
    }

    /// Where the sample of nearest rank at `per_mille`‰ is: its bin, its place in the bin
    /// (1-based) and the bin's count. `None` when empty.
    fn nearest_rank(&self, per_mille: u64) -> Option<(usize, u64, u64)> {
        let total = u64::from(self.total());
        if total == 0 {
            return None;
        }
        let rank = (total * per_mille).div_ceil(1000).max(1);
        let mut before = 0u64;
        for (bin, &count) in self.counts.iter().enumerate() {
            let count = u64::from(count);
            if before + count >= rank {
                return Some((bin, rank - before, count));
            }
            before += count;
        }
        None
    }
}

/// The `nth` (1-based) of `count` samples in `bin`, assuming they are spread evenly over it.
fn interpolate(bin: usize, nth: u64, count: u64) -> u64 {
    let lower = bin
        .checked_sub(1)
        .and_then(|below| BOUNDS_US.get(below))
        .copied()
        .unwrap_or(0);
    let Some(&upper) = BOUNDS_US.get(bin) else {
        return lower;
    };
    lower + (upper - lower) * nth / count.max(1)
}

/// The highest scale: a count of `u16::MAX` at this scale still fits a `u32` when merged.
const MAX_SCALE: u8 = 16;

/// A bucket's latency counts in 16 bits each (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CompactHistogram {
    counts: [u16; BINS],
    /// Each count stands for 2^`scale` answers.
    scale: u8,
    /// Answers seen, wrapping: what decides which are counted once `scale` > 0.
    seen: u16,
}

impl CompactHistogram {
    pub(super) const EMPTY: CompactHistogram = CompactHistogram {
        counts: [0; BINS],
        scale: 0,
        seen: 0,
    };

    pub(super) fn add(&mut self, latency: Duration) {
        let bin = bin(latency);
        let number = self.seen;
        self.seen = self.seen.wrapping_add(1);
        if self.counts.get(bin) == Some(&u16::MAX) && self.scale < MAX_SCALE {
            self.halve();
        }
        if !self.counts_answer(number) {
            return;
        }
        if let Some(count) = self.counts.get_mut(bin) {
            *count = count.saturating_add(1);
        }
    }

    /// Every count halved (rounding up, so a bin's last answers are not dropped), each now
    /// standing for twice as many.
    fn halve(&mut self) {
        for count in &mut self.counts {
            *count = count.div_ceil(2);
        }
        self.scale += 1;
    }

    /// Whether answer `number` is one of the one in 2^`scale` counted: the top `scale` bits of
    /// its Fibonacci hash are zero.
    fn counts_answer(&self, number: u16) -> bool {
        if self.scale == 0 {
            return true;
        }
        let hash = u32::from(number).wrapping_mul(0x9E37_79B9);
        hash >> (32 - u32::from(self.scale)) == 0
    }

    /// The answers this histogram stands for.
    #[cfg(test)]
    pub(super) fn total(&self) -> u32 {
        let mut merged = Histogram::EMPTY;
        merged.merge(self);
        merged.total()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn bounds_are_log_spaced_with_the_floor_among_them() {
        assert!(BOUNDS_US.contains(&(super::super::LATENCY_FLOOR.as_micros() as u64)));
        for pair in BOUNDS_US.windows(2) {
            let ratio = pair[1] as f64 / pair[0] as f64;
            assert!((ratio - std::f64::consts::SQRT_2).abs() < 0.01, "{pair:?}");
        }
    }

    #[test]
    fn p95_is_the_nearest_rank_inside_its_bin() {
        let mut histogram = Histogram::EMPTY;
        assert_eq!(histogram.p95(), None);
        for _ in 0..96 {
            histogram.add(10 * MS);
        }
        for _ in 0..4 {
            histogram.add(1000 * MS);
        }
        // Rank 95 of 100 is a 10 ms sample: bin (7.812 ms, 11.049 ms].
        let p95 = histogram.p95().unwrap();
        assert!(
            p95 > 7812 * MS / 1000 && p95 <= 11049 * MS / 1000,
            "{p95:?}"
        );
    }

    #[test]
    fn the_overflow_bin_answers_its_lower_bound() {
        let mut histogram = Histogram::EMPTY;
        histogram.add(Duration::from_secs(600));
        assert_eq!(histogram.p95(), Some(Duration::from_secs(64)));
        histogram.add(Duration::ZERO);
        assert_eq!(histogram.counts[0], 1);
    }

    #[test]
    fn compact_counts_are_exact_up_to_u16_max() {
        let mut compact = CompactHistogram::EMPTY;
        let mut exact = Histogram::EMPTY;
        for i in 0..u32::from(u16::MAX) {
            let latency = if i % 20 == 0 { 900 * MS } else { 40 * MS };
            compact.add(latency);
            exact.add(latency);
        }
        assert_eq!(compact.scale, 0);
        let mut merged = Histogram::EMPTY;
        merged.merge(&compact);
        assert_eq!(merged, exact);
    }

    #[test]
    fn past_u16_max_the_counts_halve_and_stand_for_twice_as_many() {
        let mut compact = CompactHistogram::EMPTY;
        let answers = 1_000_000u32;
        for _ in 0..answers {
            compact.add(40 * MS);
        }
        // 1,000,000 in one bin: four halvings (65,535 × 2^4 ≥ 1,000,000 > 65,535 × 2^3).
        assert_eq!(compact.scale, 4);
        let total = f64::from(compact.total());
        assert!(
            (total / f64::from(answers) - 1.0).abs() < 0.01,
            "{total} stands for {answers}"
        );
    }

    #[test]
    fn a_periodic_pattern_is_not_aliased_by_the_sampling() {
        // Fast and slow answers alternating: a sampler counting every 2nd or 4th answer would
        // see only one kind.
        let mut compact = CompactHistogram::EMPTY;
        let mut exact = Histogram::EMPTY;
        for i in 0..600_000u32 {
            let latency = if i % 2 == 0 { 20 * MS } else { 2000 * MS };
            compact.add(latency);
            exact.add(latency);
        }
        assert!(compact.scale >= 2, "{}", compact.scale);
        let mut merged = Histogram::EMPTY;
        merged.merge(&compact);
        let (fast, slow) = (bin(20 * MS), bin(2000 * MS));
        let share = f64::from(merged.counts[slow])
            / (f64::from(merged.counts[fast]) + f64::from(merged.counts[slow]));
        assert!((share - 0.5).abs() < 0.02, "slow share {share}");
        assert_eq!(bin_at(&merged, 950), bin_at(&exact, 950));
    }

    /// The bin of the sample at `per_mille`‰ (nearest rank), as `p95` finds it for 950.
    fn bin_at(histogram: &Histogram, per_mille: u64) -> usize {
        histogram
            .nearest_rank(per_mille)
            .map(|(bin, ..)| bin)
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the answers, the compact histogram is exact until it has had to sample, and
        /// then its p95 is read from a bin between the exact 94th and 96th percentiles'.
        #[test]
        fn compact_p95_stays_within_a_bin_of_the_exact_one(
            pattern in proptest::collection::vec(0u64..80_000_000, 1..40),
            repeats in 1u32..4_000,
        ) {
            let mut compact = CompactHistogram::EMPTY;
            let mut exact = Histogram::EMPTY;
            for _ in 0..repeats {
                for &micros in &pattern {
                    let latency = Duration::from_micros(micros);
                    compact.add(latency);
                    exact.add(latency);
                }
            }
            let mut merged = Histogram::EMPTY;
            merged.merge(&compact);
            if compact.scale == 0 {
                prop_assert_eq!(merged, exact);
            } else {
                let read = bin_at(&merged, 950);
                prop_assert!(
                    (bin_at(&exact, 940)..=bin_at(&exact, 960)).contains(&read),
                    "p95 read from bin {} of {:?}; exact {:?}", read, merged, exact
                );
            }
        }
    }
}
