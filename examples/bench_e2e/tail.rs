//! `--tail-timeline`: when, in a fixed-rate window, the deliveries slower than the p99 arrived.
//! Slow deliveries bunched into a few short stretches point at a stall (a commit's `fsync`, a
//! status round, a lock); spread evenly over the window they point at queueing on shared cores.

/// One delivery as the receiver saw it: when the event was published, and how long it took.
#[derive(Clone, Copy, Debug)]
pub struct Receipt {
    pub sent_us: u64,
    pub latency_us: u32,
}

/// The width of a timeline slice.
const SLICE_US: u64 = 100_000;
/// Slices listed, the busiest first.
const LISTED: usize = 12;

/// What the timeline shows, for the output and for tests.
#[derive(Debug, PartialEq)]
pub struct Timeline {
    /// The window's first publish (the benchmark's clock, µs).
    pub start_us: u64,
    /// Deliveries above the threshold.
    pub slow: usize,
    /// Slices of the window, and those with at least one slow delivery.
    pub slices: usize,
    pub slices_with_slow: usize,
    /// Share of the slow deliveries in the busiest 5% of slices.
    pub share_in_busiest_twentieth: f64,
    /// The busiest slices: their start (ms after the window's first publish) and slow count,
    /// in time order.
    pub busiest: Vec<(u64, usize)>,
}

/// The timeline of `receipts` slower than `threshold_us`, in slices of 100 ms from the first
/// publish.
pub fn timeline(receipts: &[Receipt], threshold_us: u32) -> Timeline {
    let Some(start) = receipts.iter().map(|r| r.sent_us).min() else {
        return Timeline {
            start_us: 0,
            slow: 0,
            slices: 0,
            slices_with_slow: 0,
            share_in_busiest_twentieth: 0.0,
            busiest: Vec::new(),
        };
    };
    let end = receipts.iter().map(|r| r.sent_us).max().unwrap_or(start);
    let slices = usize::try_from((end - start) / SLICE_US + 1).unwrap_or(usize::MAX);
    let mut counts = vec![0usize; slices];
    let mut slow = 0;
    for receipt in receipts.iter().filter(|r| r.latency_us > threshold_us) {
        let slice = usize::try_from((receipt.sent_us - start) / SLICE_US).unwrap_or(0);
        if let Some(count) = counts.get_mut(slice) {
            *count += 1;
            slow += 1;
        }
    }
    let mut ranked: Vec<(usize, usize)> = counts.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let twentieth = slices.div_ceil(20);
    let in_busiest: usize = ranked.iter().take(twentieth).map(|(_, count)| count).sum();
    let mut busiest: Vec<(u64, usize)> = ranked
        .iter()
        .take(LISTED)
        .filter(|(_, count)| *count > 0)
        .map(|&(slice, count)| (slice as u64 * SLICE_US / 1000, count))
        .collect();
    busiest.sort_unstable();
    Timeline {
        start_us: start,
        slow,
        slices,
        slices_with_slow: counts.iter().filter(|&&count| count > 0).count(),
        share_in_busiest_twentieth: if slow == 0 {
            0.0
        } else {
            in_busiest as f64 / slow as f64
        },
        busiest,
    }
}

/// The timeline as lines of the benchmark's output. `unix_offset_us` turns the benchmark's clock
/// into Unix time, to line the slices up with the dispatcher's log.
pub fn print(label: &str, threshold_ms: f64, timeline: &Timeline, unix_offset_us: u64) {
    println!(
        "  {label}: from Unix ms {}, {} deliveries above {threshold_ms:.2} ms in {} of {} 100-ms slices; {:.0}% of them in the busiest 5% of slices",
        (timeline.start_us + unix_offset_us) / 1000,
        timeline.slow,
        timeline.slices_with_slow,
        timeline.slices,
        timeline.share_in_busiest_twentieth * 100.0
    );
    let listed: Vec<String> = timeline
        .busiest
        .iter()
        .map(|(ms, count)| format!("+{:.1}s:{count}", *ms as f64 / 1000.0))
        .collect();
    println!(
        "  {label}: busiest slices (start:slow) {}",
        listed.join(" ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipts(pattern: impl Fn(u64) -> u32) -> Vec<Receipt> {
        // One publish a millisecond for ten seconds.
        (0..10_000u64)
            .map(|ms| Receipt {
                sent_us: 5_000_000 + ms * 1000,
                latency_us: pattern(ms),
            })
            .collect()
    }

    #[test]
    fn a_stall_is_one_busy_slice() {
        // 50 slow in a row at +4.2 s.
        let timeline = timeline(
            &receipts(|ms| {
                if (4200..4250).contains(&ms) {
                    30_000
                } else {
                    500
                }
            }),
            10_000,
        );
        assert_eq!(timeline.slow, 50);
        assert_eq!(timeline.slices, 100);
        assert_eq!(timeline.slices_with_slow, 1);
        assert_eq!(timeline.busiest, vec![(4200, 50)]);
        assert!((timeline.share_in_busiest_twentieth - 1.0).abs() < 1e-9);
    }

    #[test]
    fn evenly_spread_slowness_fills_every_slice() {
        let timeline = timeline(
            &receipts(|ms| if ms % 100 == 7 { 30_000 } else { 500 }),
            10_000,
        );
        assert_eq!(timeline.slow, 100);
        assert_eq!(timeline.slices_with_slow, 100);
        assert!((timeline.share_in_busiest_twentieth - 0.05).abs() < 1e-9);
        assert_eq!(timeline.busiest.len(), LISTED);
    }

    #[test]
    fn nothing_received_is_an_empty_timeline() {
        let timeline = timeline(&[], 1);
        assert_eq!((timeline.slow, timeline.slices), (0, 0));
    }
}
