//! Ordered delivery: which lane a delivery takes (`spec.ordering`). Pure.
//!
//! A lane is a string the store orders deliveries by: deliveries to one endpoint in one lane
//! are sent one at a time, in publish order. `Strict` puts every delivery of the endpoint in one
//! lane; `ByKey` puts each value of the key in its own.
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::api::endpoint::{OrderingMode, OrderingSpec};
use crate::api::key_path::{KeyPath, KeyValue};

/// The lane of every delivery to a `Strict` endpoint.
pub const STRICT_LANE: &str = "*";
/// Key values longer than this (as JSON text) are stored as their SHA-256.
const MAX_LANE_LEN: usize = 128;

/// The lane of a delivery to an endpoint with `ordering`; `None` when it is unordered. A key
/// that is missing or null puts the delivery in the lane `null`, shared by every such event.
/// An unparsable key (which the CRD's schema refuses) orders the endpoint strictly: safe, if
/// slower.
pub fn lane(
    ordering: Option<&OrderingSpec>,
    event_type: &str,
    data: &Map<String, Value>,
) -> Option<String> {
    let ordering = ordering?;
    match ordering.mode {
        OrderingMode::None => None,
        OrderingMode::Strict => Some(STRICT_LANE.to_owned()),
        OrderingMode::ByKey => {
            let path = ordering.key.as_deref().map(KeyPath::parse);
            let Some(Ok(path)) = path else {
                return Some(STRICT_LANE.to_owned());
            };
            // As JSON text, so the string "1" and the number 1 are different keys.
            let text = match path.lookup(event_type, data) {
                Some(KeyValue::Str(s)) => Value::String(s.to_owned()).to_string(),
                Some(KeyValue::Json(v)) => v.to_string(),
                None => Value::Null.to_string(),
            };
            Some(bounded(text))
        }
    }
}

fn bounded(text: String) -> String {
    if text.len() <= MAX_LANE_LEN {
        return text;
    }
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn by_key(key: &str) -> OrderingSpec {
        OrderingSpec {
            mode: OrderingMode::ByKey,
            key: Some(key.into()),
            ..Default::default()
        }
    }

    fn data(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn unordered_and_strict_endpoints() {
        let d = data(json!({"user": {"id": 1}}));
        assert_eq!(lane(None, "user.created", &d), None);
        assert_eq!(
            lane(Some(&OrderingSpec::default()), "user.created", &d),
            None
        );
        let strict = OrderingSpec {
            mode: OrderingMode::Strict,
            ..Default::default()
        };
        assert_eq!(
            lane(Some(&strict), "user.created", &d).as_deref(),
            Some("*")
        );
    }

    #[test]
    fn by_key_lanes_follow_the_value_at_the_path() {
        let spec = by_key("data.user.id");
        let a = data(json!({"user": {"id": "u_1", "email": "a@x"}}));
        let b = data(json!({"user": {"id": "u_1", "email": "b@x"}}));
        let c = data(json!({"user": {"id": "u_2"}}));
        let lane_of = |d: &Map<String, Value>| lane(Some(&spec), "user.updated", d);
        assert_eq!(lane_of(&a), lane_of(&b));
        assert_ne!(lane_of(&a), lane_of(&c));
        assert_eq!(lane_of(&a).as_deref(), Some("\"u_1\""));
        // The string "1" and the number 1 are different keys.
        assert_ne!(
            lane_of(&data(json!({"user": {"id": 1}}))),
            lane_of(&data(json!({"user": {"id": "1"}})))
        );
        // Missing and null share the lane `null`.
        assert_eq!(lane_of(&data(json!({}))).as_deref(), Some("null"));
        assert_eq!(
            lane_of(&data(json!({"user": null}))).as_deref(),
            Some("null")
        );
    }

    #[test]
    fn array_indexes_and_the_event_type() {
        let d = data(json!({"items": [{"sku": "a"}, {"sku": "b"}]}));
        assert_eq!(
            lane(Some(&by_key("data.items.1.sku")), "t.x", &d).as_deref(),
            Some("\"b\"")
        );
        assert_eq!(
            lane(Some(&by_key("event_type")), "user.created", &d).as_deref(),
            Some("\"user.created\"")
        );
    }

    #[test]
    fn long_values_are_hashed() {
        let d = data(json!({"blob": "x".repeat(500)}));
        let lane = lane(Some(&by_key("data.blob")), "t.x", &d).unwrap();
        assert!(
            lane.starts_with("sha256:") && lane.len() == 7 + 64,
            "{lane}"
        );
    }

    proptest! {
        /// Equal key values always share a lane; different scalar values never do.
        #[test]
        fn lanes_are_a_function_of_the_key(a in "[a-z0-9]{0,200}", b in "[a-z0-9]{0,200}") {
            let spec = by_key("data.k");
            let la = lane(Some(&spec), "t.x", &data(json!({"k": a.clone()}))).unwrap();
            let lb = lane(Some(&spec), "t.x", &data(json!({"k": b.clone()}))).unwrap();
            prop_assert_eq!(la == lb, a == b);
            prop_assert!(la.len() <= MAX_LANE_LEN);
        }
    }
}
