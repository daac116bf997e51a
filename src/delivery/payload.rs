//! The request body, exactly as the seed's "Payload Format":
//!
//! ```json
//! {"event_id":"evt_…","timestamp":"2024-01-15T10:30:00Z","webhook":{"id":"…","name":"…"},
//!  "data":{"event_type":"user.created", …the event's fields}}
//! ```
//!
//! Keys appear in that order (`event_type` first inside `data`, the event's own fields after it in
//! key order). `timestamp` is when the event happened, in RFC 3339 UTC with whole seconds; it is
//! part of the body and therefore stable across retries, whereas the signature's timestamp header
//! is the time of each attempt. Render the body once and send the same bytes on every attempt.
use bytes::Bytes;
use jiff::Timestamp;
use rand::RngExt;
use serde::de::IgnoredAny;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{Map, Value};

/// Prefix of every event id.
pub const EVENT_ID_PREFIX: &str = "evt_";

/// The endpoint as receivers see it in the payload's `webhook` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WebhookRef {
    pub id: String,
    pub name: String,
}

/// Why a payload could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("event data has an `event_type` field ({found}) that differs from the event's type `{expected}`")]
    ConflictingEventType { expected: String, found: String },
    #[error("the stored event data is unreadable ({0}); it cannot be sent as it was accepted")]
    Unreadable(String),
    #[error("could not serialize the payload of event {event_id}: {source}")]
    Serialize {
        event_id: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A new event id: `evt_` + a ULID (26 Crockford base32 characters) whose first 48 bits are the
/// millisecond time, so ids sort by creation time. Times before 1970 count as 1970.
pub fn new_event_id<R: rand::Rng + ?Sized>(now: Timestamp, rng: &mut R) -> String {
    let millis = u64::try_from(now.as_millisecond()).unwrap_or(0);
    let random: u128 = rng.random::<u128>() & ((1u128 << 80) - 1);
    format!(
        "{EVENT_ID_PREFIX}{}",
        ulid::Ulid::from_parts(millis, random)
    )
}

/// Formats a timestamp as the payload carries it: RFC 3339, UTC, whole seconds (`2024-01-15T10:30:00Z`).
pub fn format_timestamp(timestamp: Timestamp) -> String {
    crate::api::time::rfc3339(timestamp)
}

/// Renders the body. `data` holds the event's fields; `event_type` is put first in `data`. A
/// field `event_type` in `data` is accepted only if it equals `event_type` (it is then not repeated).
pub fn render(
    event_id: &str,
    timestamp: Timestamp,
    webhook: &WebhookRef,
    event_type: &str,
    data: &Map<String, Value>,
) -> Result<Bytes, PayloadError> {
    check_event_type(event_type, data)?;
    let body = Body {
        event_id,
        timestamp: format_timestamp(timestamp),
        webhook,
        data: Data {
            event_type,
            fields: data,
        },
    };
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .map_err(|source| PayloadError::Serialize {
            event_id: event_id.to_string(),
            source,
        })
}

/// How canonical data starts (see [`canonical_data`]).
const CANONICAL_PREFIX: &[u8] = b"{\"event_type\":";

/// The payload's `data` object, rendered once when the event is accepted: `event_type` first,
/// then the event's fields in key order, exactly as every attempt sends it. This is what the
/// store keeps; [`render_stored`] splices it into each attempt's body without parsing it.
pub fn canonical_data(
    event_type: &str,
    fields: &Map<String, Value>,
) -> Result<Bytes, PayloadError> {
    check_event_type(event_type, fields)?;
    serde_json::to_vec(&Data { event_type, fields })
        .map(Bytes::from)
        .map_err(|e| PayloadError::Unreadable(e.to_string()))
}

/// The event's fields from stored data, as they were published (canonical data's leading
/// `event_type` left out).
pub fn stored_fields(stored: &[u8]) -> Result<Map<String, Value>, PayloadError> {
    let mut fields: Map<String, Value> =
        serde_json::from_slice(stored).map_err(|e| PayloadError::Unreadable(e.to_string()))?;
    if stored.starts_with(CANONICAL_PREFIX) {
        fields.remove("event_type");
    }
    Ok(fields)
}

/// Renders the body of an attempt from the data the store keeps. Canonical data is checked to be
/// one JSON value for this event type (a scan, no tree built) and spliced in byte for byte; data
/// stored before canonical storage existed (a bare object of fields) is parsed and rendered.
pub fn render_stored(
    event_id: &str,
    timestamp: Timestamp,
    webhook: &WebhookRef,
    event_type: &str,
    stored: &[u8],
) -> Result<Bytes, PayloadError> {
    if !stored.starts_with(CANONICAL_PREFIX) {
        let fields = stored_fields(stored)?;
        return render(event_id, timestamp, webhook, event_type, &fields);
    }
    let expected = serde_json::to_vec(event_type).map_err(|source| PayloadError::Serialize {
        event_id: event_id.to_string(),
        source,
    })?;
    let rest = &stored[CANONICAL_PREFIX.len()..];
    if !rest.starts_with(&expected) || !matches!(rest.get(expected.len()), Some(b',' | b'}')) {
        return Err(PayloadError::Unreadable(format!(
            "its data does not start with event_type {event_type:?}"
        )));
    }
    serde_json::from_slice::<IgnoredAny>(stored)
        .map_err(|e| PayloadError::Unreadable(e.to_string()))?;
    let head = Head {
        event_id,
        timestamp: format_timestamp(timestamp),
        webhook,
    };
    let mut body = serde_json::to_vec(&head).map_err(|source| PayloadError::Serialize {
        event_id: event_id.to_string(),
        source,
    })?;
    // `{…"webhook":{…}}` becomes `{…"webhook":{…},"data":<stored>}`.
    body.pop();
    body.reserve(stored.len() + 9);
    body.extend_from_slice(b",\"data\":");
    body.extend_from_slice(stored);
    body.push(b'}');
    Ok(Bytes::from(body))
}

/// A `data.event_type` is allowed only if it equals the event's type (it is then not repeated).
pub fn check_event_type(event_type: &str, data: &Map<String, Value>) -> Result<(), PayloadError> {
    match data.get("event_type") {
        Some(found) if found.as_str() != Some(event_type) => {
            Err(PayloadError::ConflictingEventType {
                expected: event_type.to_string(),
                found: found.to_string(),
            })
        }
        _ => Ok(()),
    }
}

/// The body's members before `data`.
#[derive(Serialize)]
struct Head<'a> {
    event_id: &'a str,
    timestamp: String,
    webhook: &'a WebhookRef,
}

#[derive(Serialize)]
struct Body<'a> {
    event_id: &'a str,
    timestamp: String,
    webhook: &'a WebhookRef,
    data: Data<'a>,
}

struct Data<'a> {
    event_type: &'a str,
    fields: &'a Map<String, Value>,
}

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("event_type", self.event_type)?;
        for (key, value) in self.fields.iter().filter(|(key, _)| *key != "event_type") {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use serde_json::json;

    fn webhook() -> WebhookRef {
        WebhookRef {
            id: "42".into(),
            name: "My Webhook Endpoint".into(),
        }
    }

    fn fields(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn renders_the_seed_shape_byte_for_byte() {
        let ts: Timestamp = "2024-01-15T10:30:00Z".parse().unwrap();
        let data = fields(json!({"user": {"email": "user@example.com", "id": 123}}));
        let body = render("evt_1234567890", ts, &webhook(), "user.created", &data).unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"event_id":"evt_1234567890","timestamp":"2024-01-15T10:30:00Z","webhook":{"id":"42","name":"My Webhook Endpoint"},"data":{"event_type":"user.created","user":{"email":"user@example.com","id":123}}}"#
        );
    }

    #[test]
    fn stored_canonical_data_renders_the_same_bytes_without_a_parse() {
        let ts: Timestamp = "2024-01-15T10:30:00Z".parse().unwrap();
        let data = fields(json!({"user": {"email": "user@example.com", "id": 123}}));
        let stored = canonical_data("user.created", &data).unwrap();
        assert!(stored.starts_with(br#"{"event_type":"user.created","user""#));
        assert_eq!(
            render_stored("evt_1", ts, &webhook(), "user.created", &stored).unwrap(),
            render("evt_1", ts, &webhook(), "user.created", &data).unwrap()
        );
        assert_eq!(stored_fields(&stored).unwrap(), data);
    }

    #[test]
    fn data_stored_before_canonical_storage_still_renders() {
        let ts = Timestamp::UNIX_EPOCH;
        let data = fields(json!({"a": 1}));
        let legacy = serde_json::to_vec(&data).unwrap();
        assert_eq!(
            render_stored("evt_1", ts, &webhook(), "x.y", &legacy).unwrap(),
            render("evt_1", ts, &webhook(), "x.y", &data).unwrap()
        );
    }

    #[test]
    fn unreadable_stored_data_is_an_error_never_an_empty_object() {
        let ts = Timestamp::UNIX_EPOCH;
        for bad in [
            &br#"{"event_type":"user.created","user":"#[..],
            br#"{"event_type":"user.deleted","user":1}"#,
            br#"{"event_type":"user.created"}{"#,
            br#"{"user": "#,
            b"[1,2]",
            b"\xff\xfe",
            b"",
        ] {
            let error = render_stored("evt_1", ts, &webhook(), "user.created", bad).unwrap_err();
            assert!(
                error
                    .to_string()
                    .starts_with("the stored event data is unreadable"),
                "{}: {error}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn timestamp_drops_subseconds_and_is_utc() {
        let ts: Timestamp = "2024-01-15T12:30:00.987+02:00".parse().unwrap();
        assert_eq!(format_timestamp(ts), "2024-01-15T10:30:00Z");
    }

    #[test]
    fn equal_event_type_in_data_is_not_repeated() {
        let data = fields(json!({"event_type": "user.created", "a": 1}));
        let body = render(
            "evt_1",
            Timestamp::UNIX_EPOCH,
            &webhook(),
            "user.created",
            &data,
        )
        .unwrap();
        let text = std::str::from_utf8(&body).unwrap();
        assert_eq!(text.matches("event_type").count(), 1);
        assert!(text.ends_with(r#""data":{"event_type":"user.created","a":1}}"#));
    }

    #[test]
    fn conflicting_event_type_is_rejected() {
        for bad in [json!("user.deleted"), json!(7), json!(null)] {
            let data = fields(json!({ "event_type": bad }));
            let err = render(
                "evt_1",
                Timestamp::UNIX_EPOCH,
                &webhook(),
                "user.created",
                &data,
            )
            .unwrap_err();
            assert!(
                matches!(err, PayloadError::ConflictingEventType { .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn event_ids_are_prefixed_ulids_sorted_by_time() {
        let mut rng = StdRng::seed_from_u64(7);
        let early = new_event_id("2024-01-15T10:30:00Z".parse().unwrap(), &mut rng);
        let later = new_event_id("2024-01-15T10:30:00.001Z".parse().unwrap(), &mut rng);
        assert!(
            early.starts_with("evt_") && early.len() == 4 + 26,
            "{early}"
        );
        assert!(early < later);
        assert!(ulid::Ulid::from_string(&early[4..]).is_ok());
        let pre_epoch = new_event_id("1960-01-01T00:00:00Z".parse().unwrap(), &mut rng);
        assert!(pre_epoch.starts_with("evt_0000000000"), "{pre_epoch}");
    }

    proptest! {
        #[test]
        fn body_round_trips(event_type in "[a-z]{1,8}\\.[a-z]{1,8}", key in "[a-z_]{1,10}", n in any::<i64>(), secs in 0i64..4_000_000_000) {
            let mut data = Map::new();
            data.insert(key.clone(), json!(n));
            let ts = Timestamp::from_second(secs).unwrap();
            let result = render("evt_x", ts, &webhook(), &event_type, &data);
            if key == "event_type" {
                prop_assert!(result.is_err());
            } else {
                let parsed: Value = serde_json::from_slice(&result.unwrap()).unwrap();
                prop_assert_eq!(&parsed["data"]["event_type"], &json!(event_type));
                prop_assert_eq!(&parsed["data"][&key], &json!(n));
                prop_assert_eq!(parsed["timestamp"].as_str().unwrap().parse::<Timestamp>().unwrap(), ts);
            }
        }

        /// Whatever the fields (nested, unicode, escapes), the stored canonical form renders the
        /// exact bytes a render from the fields gives.
        #[test]
        fn stored_and_fresh_renders_agree(
            event_type in "[a-z]{1,8}\\.[a-z]{1,8}",
            entries in proptest::collection::btree_map("[a-zA-Z_\"\\\\é]{1,8}", "[ -~é\n]{0,12}", 0..6),
            n in any::<i64>(),
        ) {
            let mut data = Map::new();
            for (k, v) in &entries {
                data.insert(k.clone(), json!({"text": v, "n": n, "list": [v, n]}));
            }
            data.remove("event_type");
            let ts = Timestamp::UNIX_EPOCH;
            let stored = canonical_data(&event_type, &data).unwrap();
            prop_assert_eq!(
                render_stored("evt_x", ts, &webhook(), &event_type, &stored).unwrap(),
                render("evt_x", ts, &webhook(), &event_type, &data).unwrap()
            );
            prop_assert_eq!(stored_fields(&stored).unwrap(), data);
        }
    }
}
