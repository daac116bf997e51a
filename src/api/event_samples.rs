//! A sample `data` object for each type of the event catalog, shaped as the document's payload
//! example (`data.user` for user events, `data.pitch` for pitch events, …): what a transform is
//! previewed on when no stored event is named.
use serde_json::{json, Map, Value};

/// Sample data for `event_type` (without `event_type`, which the payload puts first): the
/// resource its family is about, with the fields the document's templates read.
pub fn sample_data(event_type: &str) -> Map<String, Value> {
    let user = json!({
        "id": 123,
        "email": "user@example.com",
        "username": "newuser",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "company_name": "Analytical Engines Ltd",
        "user_type": "creator",
        "created_at": "2024-01-15T10:30:00Z"
    });
    let pitch = json!({
        "id": 456,
        "title": "The Difference Engine",
        "genre": "drama",
        "status": "published",
        "creator_id": 123,
        "created_at": "2024-01-15T10:30:00Z"
    });
    let family = event_type.split('.').next().unwrap_or_default();
    let data = match family {
        "user" => json!({ "user": user }),
        "pitch" => json!({ "pitch": pitch, "user": user }),
        "nda" => json!({
            "nda": {"id": 789, "pitch_id": 456, "requester_id": 321, "status": "pending"},
            "pitch": pitch
        }),
        "investment" => json!({
            "investment": {"id": 1011, "pitch_id": 456, "investor_id": 321, "amount": 25000, "currency": "USD"},
            "pitch": pitch
        }),
        "message" => json!({
            "message": {"id": 1213, "sender_id": 321, "recipient_id": 123, "subject": "Your pitch"}
        }),
        "payment" => json!({
            "payment": {"id": 1415, "user_id": 123, "amount": 4900, "currency": "USD", "status": "succeeded"}
        }),
        "subscription" => json!({
            "subscription": {"id": 1617, "user_id": 123, "plan": "pro", "status": "active"}
        }),
        _ => json!({ "message": "Sample event" }),
    };
    match data {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::event_types::CATALOG;

    #[test]
    fn every_catalog_type_has_a_sample_about_its_family() {
        for event_type in CATALOG {
            let data = sample_data(event_type);
            let family = event_type.split('.').next().unwrap();
            assert!(data.contains_key(family), "{event_type}: {data:?}");
            assert!(!data.contains_key("event_type"));
        }
        assert_eq!(sample_data("user.created")["user"]["id"], 123);
        assert!(sample_data("custom.thing").contains_key("message"));
    }
}
