//! How often the engine goes to the store when it has little to take each time. Each claim and
//! each record batch is a statement (PostgreSQL: a transaction on the shared server) whose fixed
//! cost does not shrink with its rows, so a replica with a trickle of work waits a moment after a
//! partial round and takes what arrived meanwhile together (docs/benchmarks.md, issue 19,
//! sessions 19 and 20).
use std::time::{Duration, Instant};

/// When the round after one that started at `started` and took `took` of the `room` it had may
/// start: a partial round (less was waiting than it could take) holds the next back until
/// `interval` after it; a full one, or one that took nothing (the caller then waits for work
/// anyway), holds nothing back. Pure.
pub fn next_round_after(
    started: Instant,
    took: usize,
    room: usize,
    interval: Duration,
) -> Option<Instant> {
    (took > 0 && took < room && !interval.is_zero()).then(|| started + interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_partial_round_holds_the_next_back() {
        let (started, interval) = (Instant::now(), Duration::from_millis(10));
        assert_eq!(
            next_round_after(started, 3, 512, interval),
            Some(started + interval)
        );
        assert_eq!(next_round_after(started, 512, 512, interval), None, "full");
        assert_eq!(next_round_after(started, 0, 512, interval), None, "empty");
        assert_eq!(next_round_after(started, 3, 512, Duration::ZERO), None);
    }
}
