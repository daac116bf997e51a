//! Times as resources show them: RFC 3339, UTC, whole seconds (`2024-01-15T10:30:00Z`).
use jiff::Timestamp;

pub fn rfc3339(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn whole_seconds_in_utc() {
        let at = jiff::Timestamp::from_millisecond(1_705_314_600_123).unwrap();
        assert_eq!(super::rfc3339(at), "2024-01-15T10:30:00Z");
    }
}
