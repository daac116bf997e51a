//! Object names. An attempt is `<endpoint>.<deliveryId>.<attempt>`, a dead letter
//! `<endpoint>.<deliveryId>`, an endpoint's analytics the endpoint's name. Endpoint names are DNS
//! subdomains and may hold dots, so names are read from the right.

/// The name of attempt `attempt` of delivery `delivery_id` to `endpoint`.
pub fn delivery(endpoint: &str, delivery_id: i64, attempt: u32) -> String {
    format!("{endpoint}.{delivery_id}.{attempt}")
}

/// The name of the dead letter of delivery `delivery_id` to `endpoint`.
pub fn dead_letter(endpoint: &str, delivery_id: i64) -> String {
    format!("{endpoint}.{delivery_id}")
}

/// An attempt's name split into endpoint, delivery id and attempt; `None` if it is not one.
pub fn parse_delivery(name: &str) -> Option<(&str, i64, u32)> {
    let (rest, attempt) = name.rsplit_once('.')?;
    let (endpoint, delivery_id) = rest.rsplit_once('.')?;
    Some((endpoint, number(delivery_id)?, number(attempt)?)).filter(|(e, ..)| !e.is_empty())
}

/// A dead letter's name split into endpoint and delivery id; `None` if it is not one.
pub fn parse_dead_letter(name: &str) -> Option<(&str, i64)> {
    let (endpoint, delivery_id) = name.rsplit_once('.')?;
    Some((endpoint, number(delivery_id)?)).filter(|(e, _)| !e.is_empty())
}

/// Digits only (no sign, no `+`, no leading zero), as the names above write them, so every
/// object has exactly one name.
fn number<T: std::str::FromStr>(digits: &str) -> Option<T> {
    let canonical = digits == "0" || !digits.starts_with('0');
    if digits.is_empty() || !canonical || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_read_from_the_right() {
        assert_eq!(parse_delivery("crm.v2.17.3"), Some(("crm.v2", 17, 3)));
        assert_eq!(parse_dead_letter("crm.v2.17"), Some(("crm.v2", 17)));
        assert_eq!(parse_delivery("crm.0.0"), Some(("crm", 0, 0)));
        // One spelling per object: a leading zero is another name, not an alias.
        assert_eq!(parse_delivery("v4.174.07.11"), None);
        assert_eq!(parse_dead_letter("crm.017"), None);
        for bad in ["crm", "crm.x.1", "crm.1.-1", ".1.2", "crm.1.+2", "crm..1"] {
            assert_eq!(parse_delivery(bad), None, "{bad}");
        }
        assert_eq!(parse_dead_letter("crm.+1"), None);
    }

    proptest! {
        #[test]
        fn names_round_trip(endpoint in "[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?", id in 0i64.., attempt in 1u32..) {
            let name = delivery(&endpoint, id, attempt);
            prop_assert_eq!(parse_delivery(&name), Some((endpoint.as_str(), id, attempt)));
            let name = dead_letter(&endpoint, id);
            prop_assert_eq!(parse_dead_letter(&name), Some((endpoint.as_str(), id)));
        }
    }
}
