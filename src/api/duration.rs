//! Durations written the Go / Kubernetes way: `500ms`, `1s`, `5m`, `1h30m`, `24h`.
use std::time::Duration;

/// The schema pattern for a duration string (one or more number+unit groups).
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{input}` is not a duration: {reason}; write e.g. `500ms`, `1s`, `5m`, `1h30m`")]
pub struct DurationError {
    pub input: String,
    pub reason: String,
}

/// Parses a Go-style duration. Units `ms`, `s`, `m`, `h`; groups may repeat (`1h30m`).
/// The result is rounded to whole milliseconds, the resolution [`format`] writes, so a parsed
/// duration formats and parses back to itself (fractions like `1.5s` are exact; `0.0004s` is 0).
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |reason: &str| DurationError {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    if input.is_empty() {
        return Err(err("it is empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = input;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("the last number has no unit"))?;
        if number_len == 0 {
            return Err(err("a unit must follow a number"));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| err("a number is malformed"))?;
        rest = &rest[number_len..];
        let (unit_seconds, unit_len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else {
            return Err(err("units are ms, s, m and h"));
        };
        rest = &rest[unit_len..];
        let part = Duration::try_from_secs_f64(number * unit_seconds)
            .map_err(|_| err("it is out of range"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| err("it is out of range"))?;
    }
    // Float arithmetic leaves sub-millisecond noise (`1699999.99999999m` is 0.999999404 s past
    // a millisecond): round it away.
    let millis = (total.as_nanos() + 500_000) / 1_000_000;
    u64::try_from(millis)
        .map(Duration::from_millis)
        .map_err(|_| err("it is out of range"))
}

/// Formats a duration in the shortest Go-style form (`1h30m`, `250ms`).
pub fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_string();
    }
    let (hours, rest) = (millis / 3_600_000, millis % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let (seconds, ms) = (rest / 1000, rest % 1000);
    let mut out = String::new();
    for (value, unit) in [(hours, "h"), (minutes, "m"), (seconds, "s"), (ms, "ms")] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_kubernetes_style_durations() {
        assert_eq!(parse("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1_500)));
        // Whole milliseconds: what format writes parses back to the same duration (a fuzz finding).
        let odd = parse("1699999.99999999m17m4m").unwrap();
        assert_eq!(odd.subsec_nanos() % 1_000_000, 0);
        assert_eq!(parse(&format(odd)), Ok(odd));
    }

    #[test]
    fn refuses_malformed_durations_with_a_reason() {
        for bad in ["", "1", "s", "1d", "-1s", "1 s", "1.2.3s"] {
            let error = parse(bad).expect_err(bad);
            assert!(error.to_string().contains("write e.g."), "{error}");
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(millis in 0u64..10_000_000_000) {
            let duration = Duration::from_millis(millis);
            prop_assert_eq!(parse(&format(duration)), Ok(duration));
        }

        #[test]
        fn parse_never_panics(input in "\\PC{0,12}") {
            let _ = parse(&input);
        }
    }
}
