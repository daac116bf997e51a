//! Small text charts for a terminal: a sparkline (one character per value, eight heights) and
//! the hour axis under it. Pure.
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// The eight heights of a sparkline, lowest first.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
/// A value of zero: a dot, so an empty hour is not mistaken for a small one.
const ZERO: char = '·';

/// One character per value, scaled to `max` (values above it are drawn at full height). Any value
/// above zero is at least the lowest bar, so one failure among thousands still shows.
pub fn sparkline(values: &[u64], max: u64) -> String {
    values
        .iter()
        .map(|&value| {
            if value == 0 || max == 0 {
                return ZERO;
            }
            let scaled = (u128::from(value.min(max)) * BARS.len() as u128)
                .div_ceil(u128::from(max))
                .clamp(1, BARS.len() as u128);
            BARS[usize::try_from(scaled - 1).unwrap_or(0)]
        })
        .collect()
}

/// Labels under a sparkline of hourly buckets: the UTC hour (`09`) of every `every`-th bucket,
/// starting with the first, at its column. Labels that would overlap the next are left out.
pub fn hour_axis(starts: &[Timestamp], every: usize) -> String {
    let every = every.max(3);
    let mut axis = String::new();
    for (column, start) in starts.iter().enumerate().step_by(every) {
        while axis.chars().count() < column {
            axis.push(' ');
        }
        let hour = start.to_zoned(TimeZone::UTC).hour();
        axis.push_str(&format!("{hour:02}"));
    }
    axis
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_to_the_maximum() {
        assert_eq!(sparkline(&[0, 1, 4, 8], 8), "·▁▄█");
        assert_eq!(sparkline(&[1, 1000], 1000), "▁█", "small values still show");
        assert_eq!(sparkline(&[5, 20], 10), "▄█", "values above max are full");
        assert_eq!(sparkline(&[0, 0], 0), "··");
        assert_eq!(sparkline(&[], 3), "");
        assert_eq!(
            sparkline(&[u64::MAX, u64::MAX / 2], u64::MAX),
            "█▄",
            "no overflow"
        );
    }

    #[test]
    fn the_axis_labels_every_sixth_hour() {
        let start: Timestamp = "2026-01-09T10:00:00Z".parse().unwrap();
        let starts: Vec<Timestamp> = (0..24)
            .map(|h| start + jiff::SignedDuration::from_hours(h))
            .collect();
        assert_eq!(hour_axis(&starts, 6), "10    16    22    04");
        assert_eq!(hour_axis(&starts[..2], 6), "10");
        assert_eq!(hour_axis(&[], 6), "");
    }
}
