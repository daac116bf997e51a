//! Event types (`user.created`) and subscription patterns (`user.created`, `pitch.*`, `*`).

/// Regex equivalent of [`is_valid_pattern`], used in the CRD schema.
pub const PATTERN_REGEX: &str = r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\.(\*|[a-z][a-z0-9_]*))$";
/// Regex equivalent of [`is_valid_event_type`], used in the CRD schema.
pub const EVENT_TYPE_REGEX: &str = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$";

/// The seed's event catalog.
pub const CATALOG: &[&str] = &[
    "user.created",
    "user.updated",
    "user.verified",
    "user.login",
    "user.logout",
    "pitch.created",
    "pitch.updated",
    "pitch.published",
    "pitch.viewed",
    "pitch.liked",
    "nda.requested",
    "nda.signed",
    "nda.approved",
    "nda.rejected",
    "investment.created",
    "investment.approved",
    "investment.funded",
    "message.sent",
    "message.read",
    "payment.succeeded",
    "payment.failed",
    "subscription.created",
];

/// The type of test deliveries (annotation `webhooks.pitchey.io/test` and the test API).
pub const TEST_EVENT_TYPE: &str = "webhook.test";

fn is_segment(segment: &str) -> bool {
    let mut chars = segment.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A concrete event type: two or more dot-separated lowercase segments.
pub fn is_valid_event_type(event_type: &str) -> bool {
    let segments: Vec<&str> = event_type.split('.').collect();
    event_type.len() <= 128 && segments.len() >= 2 && segments.iter().all(|s| is_segment(s))
}

/// A subscription pattern: `*`, `prefix.*`, or a concrete event type.
pub fn is_valid_pattern(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) => pattern.len() <= 128 && prefix.split('.').all(is_segment),
        None => is_valid_event_type(pattern),
    }
}

/// Whether a subscription pattern selects an event type.
pub fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        // `pitch.*` matches `pitch.created` and `pitch.x.y`, never `pitchfork.created`.
        Some(prefix) => event_type.len() > prefix.len() && event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_catalog_is_valid() {
        assert!(CATALOG.iter().all(|t| is_valid_event_type(t)));
        assert!(is_valid_event_type(TEST_EVENT_TYPE));
    }

    #[test]
    fn patterns() {
        for ok in ["*", "pitch.*", "user.created", "a.b.*", "a_1.b2"] {
            assert!(is_valid_pattern(ok), "{ok}");
        }
        for bad in [
            "",
            "user",
            "User.created",
            "pitch.",
            ".*",
            "pitch*",
            "*.created",
            "a..b",
            "a.*.b",
        ] {
            assert!(!is_valid_pattern(bad), "{bad}");
        }
    }

    #[test]
    fn matching() {
        assert!(pattern_matches("*", "user.created"));
        assert!(pattern_matches("pitch.*", "pitch.created"));
        assert!(!pattern_matches("pitch.*", "pitchfork.created"));
        assert!(!pattern_matches("pitch.*", "user.created"));
        assert!(pattern_matches("user.created", "user.created"));
        assert!(!pattern_matches("user.created", "user.created2"));
    }

    proptest! {
        #[test]
        fn schema_regex_agrees_with_the_validator(input in "[a-z0-9_.*A]{0,12}") {
            let pattern = regex_lite::Regex::new(PATTERN_REGEX).unwrap();
            let event_type = regex_lite::Regex::new(EVENT_TYPE_REGEX).unwrap();
            prop_assert_eq!(pattern.is_match(&input), is_valid_pattern(&input));
            prop_assert_eq!(event_type.is_match(&input), is_valid_event_type(&input));
        }

        #[test]
        fn a_valid_type_is_matched_by_its_prefix_pattern(
            prefix in "[a-z][a-z0-9_]{0,5}", rest in "[a-z][a-z0-9_]{0,5}"
        ) {
            let event_type = format!("{prefix}.{rest}");
            prop_assert!(is_valid_event_type(&event_type));
            let pattern = format!("{prefix}.*");
            prop_assert!(pattern_matches(&pattern, &event_type));
            prop_assert!(pattern_matches(&event_type, &event_type));
        }
    }
}
