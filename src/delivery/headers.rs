//! The headers of one attempt: fixed headers, signature headers, then the endpoint's custom
//! headers, which can never replace or add to a reserved one.
//!
//! Fixed headers on every request:
//! - `X-Webhook-Event-Id`: the event id, stable across retries (receivers deduplicate on it);
//! - `X-Webhook-Event-Type`: the event type;
//! - `X-Webhook-Attempt`: 1 for the first attempt, 2 for the first retry, …;
//! - `Content-Type: application/json`;
//! - `User-Agent: webhook-operator/<version>`.
use std::collections::BTreeMap;

use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue};

/// `X-Webhook-Event-Id`.
pub const X_WEBHOOK_EVENT_ID: HeaderName = HeaderName::from_static("x-webhook-event-id");
/// `X-Webhook-Event-Type`.
pub const X_WEBHOOK_EVENT_TYPE: HeaderName = HeaderName::from_static("x-webhook-event-type");
/// `X-Webhook-Attempt`.
pub const X_WEBHOOK_ATTEMPT: HeaderName = HeaderName::from_static("x-webhook-attempt");

/// The User-Agent of every request.
pub const USER_AGENT_VALUE: &str = concat!("webhook-operator/", env!("CARGO_PKG_VERSION"));

/// Whether a custom header named `name` would be refused (case-insensitive): ours
/// (`x-webhook-*`, `webhook-*`, content type, user agent) and those that control the connection,
/// message framing or a proxy. Validation refuses the same names (one shared list) with
/// `InvalidSpec`, so the sender drops one only for a spec that bypassed validation.
pub use crate::api::validation::reserved_headers::is_reserved;

/// A fixed header could not be built from the event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("event id {0:?} cannot be sent in a header")]
    InvalidEventId(String),
    #[error("event type {0:?} cannot be sent in a header")]
    InvalidEventType(String),
}

/// A custom header that was left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedHeader {
    pub name: String,
    pub reason: SkipReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The name is reserved (see [`is_reserved`]).
    Reserved,
    /// The name is not a valid HTTP header name.
    InvalidName,
    /// The value is not a valid HTTP header value (e.g. contains a newline).
    InvalidValue,
}

/// What goes into one attempt's headers.
#[derive(Clone, Copy, Debug)]
pub struct HeaderInputs<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    /// 1-based attempt number.
    pub attempt: u32,
    /// From [`super::signing::sign`].
    pub signature: &'a [(HeaderName, HeaderValue)],
    /// The endpoint's static headers and those read from Secrets.
    pub custom: &'a BTreeMap<String, String>,
}

/// The headers of one attempt.
#[derive(Clone, Debug)]
pub struct BuiltHeaders {
    pub headers: HeaderMap,
    /// Custom headers that were not sent; report them (they are a configuration error, not a
    /// reason to fail the delivery).
    pub skipped: Vec<SkippedHeader>,
}

/// Builds the fixed, signature and custom headers of one attempt.
pub fn build_headers(inputs: HeaderInputs<'_>) -> Result<BuiltHeaders, HeaderError> {
    let mut headers = HeaderMap::with_capacity(8 + inputs.custom.len());
    let event_id = HeaderValue::from_str(inputs.event_id)
        .map_err(|_| HeaderError::InvalidEventId(inputs.event_id.to_string()))?;
    let event_type = HeaderValue::from_str(inputs.event_type)
        .map_err(|_| HeaderError::InvalidEventType(inputs.event_type.to_string()))?;
    headers.insert(X_WEBHOOK_EVENT_ID, event_id);
    headers.insert(X_WEBHOOK_EVENT_TYPE, event_type);
    headers.insert(X_WEBHOOK_ATTEMPT, HeaderValue::from(inputs.attempt));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    for (name, value) in inputs.signature {
        headers.insert(name.clone(), value.clone());
    }
    let mut skipped = Vec::new();
    for (name, value) in inputs.custom {
        let skip = |reason| SkippedHeader {
            name: name.clone(),
            reason,
        };
        if is_reserved(name) {
            skipped.push(skip(SkipReason::Reserved));
            continue;
        }
        let Ok(header_name) = HeaderName::from_bytes(name.trim().as_bytes()) else {
            skipped.push(skip(SkipReason::InvalidName));
            continue;
        };
        let Ok(header_value) = HeaderValue::from_str(value) else {
            skipped.push(skip(SkipReason::InvalidValue));
            continue;
        };
        // Not reserved, so it cannot collide with a header set above; names differing only in
        // case are the same header and are sent as repeated values.
        headers.append(header_name, header_value);
    }
    Ok(BuiltHeaders { headers, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::signing::{sign, SigningKeys, SigningScheme};
    use proptest::prelude::*;

    fn build(custom: &BTreeMap<String, String>) -> BuiltHeaders {
        let signature = sign(
            SigningScheme::Pitchey,
            &SigningKeys::new("s"),
            "evt_1",
            1,
            b"{}",
        )
        .unwrap();
        build_headers(HeaderInputs {
            event_id: "evt_1",
            event_type: "user.created",
            attempt: 2,
            signature: &signature,
            custom,
        })
        .unwrap()
    }

    #[test]
    fn fixed_and_signature_headers() {
        let built = build(&BTreeMap::new());
        let h = &built.headers;
        assert_eq!(h["x-webhook-event-id"], "evt_1");
        assert_eq!(h["x-webhook-event-type"], "user.created");
        assert_eq!(h["x-webhook-attempt"], "2");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(
            h["user-agent"],
            format!("webhook-operator/{}", env!("CARGO_PKG_VERSION")).as_str()
        );
        assert!(h.contains_key("x-webhook-signature") && h.contains_key("x-webhook-timestamp"));
        assert!(built.skipped.is_empty());
    }

    #[test]
    fn custom_headers_cannot_override_reserved_ones() {
        let custom: BTreeMap<String, String> = [
            ("X-Webhook-Signature", "forged"),
            ("x-webhook-event-id", "evt_other"),
            ("Content-Type", "text/plain"),
            ("USER-AGENT", "curl"),
            ("Host", "internal"),
            ("webhook-signature", "v1,forged"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Encoding", "gzip"),
            ("Proxy-Authorization", "Basic eA=="),
            ("X-Custom-Header", "value"),
            ("Authorization", "Bearer t"),
            ("bad name", "v"),
            ("X-Newline", "a\r\nInjected: 1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let built = build(&custom);
        let h = &built.headers;
        assert_eq!(h["x-custom-header"], "value");
        assert_eq!(h["authorization"], "Bearer t");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["x-webhook-event-id"], "evt_1");
        assert!(h["x-webhook-signature"]
            .to_str()
            .unwrap()
            .starts_with("sha256="));
        assert!(
            !h.contains_key("host")
                && !h.contains_key("webhook-signature")
                && !h.contains_key("transfer-encoding")
                && !h.contains_key("content-encoding")
                && !h.contains_key("proxy-authorization")
        );
        assert!(!h.contains_key("injected") && !h.contains_key("x-newline"));
        assert_eq!(built.skipped.len(), 11);
        assert!(built
            .skipped
            .iter()
            .any(|s| s.name == "bad name" && s.reason == SkipReason::InvalidName));
        assert!(built
            .skipped
            .iter()
            .any(|s| s.name == "X-Newline" && s.reason == SkipReason::InvalidValue));
    }

    #[test]
    fn invalid_event_fields_are_errors() {
        let err = build_headers(HeaderInputs {
            event_id: "evt\n",
            event_type: "t",
            attempt: 1,
            signature: &[],
            custom: &BTreeMap::new(),
        });
        assert_eq!(
            err.unwrap_err(),
            HeaderError::InvalidEventId("evt\n".into())
        );
    }

    /// Validation and the sender agree: a header name is refused by one exactly when the other
    /// drops it as reserved, so no accepted header vanishes at send time.
    fn validation_refuses(name: &str) -> bool {
        let mut spec: crate::api::WebhookEndpointSpec =
            serde_json::from_value(serde_json::json!({"url": "https://example.com/"})).unwrap();
        spec.headers.insert(name.to_string(), "v".to_string());
        crate::api::validation::validate_endpoint(&spec, "x", false).is_err()
    }

    fn sender_drops(name: &str) -> bool {
        let custom = BTreeMap::from([(name.to_string(), "v".to_string())]);
        build(&custom)
            .skipped
            .iter()
            .any(|s| s.reason == SkipReason::Reserved)
    }

    #[test]
    fn validation_and_sender_agree_on_known_names() {
        for name in [
            "Content-Encoding",
            "Trailer",
            "Expect",
            "Proxy-Authorization",
            "X-Webhook-Attempt",
            "Host",
        ] {
            assert!(validation_refuses(name) && sender_drops(name), "{name}");
        }
        for name in ["Authorization", "X-Team", "Content-Language", "X-Proxy-Id"] {
            assert!(!validation_refuses(name) && !sender_drops(name), "{name}");
        }
    }

    proptest! {
        #[test]
        fn validation_and_sender_agree(name in "(x-webhook-|webhook-|proxy-|content-|)[A-Za-z-]{1,12}") {
            prop_assert_eq!(validation_refuses(&name), sender_drops(&name), "{}", name);
        }

        #[test]
        fn reserved_values_always_survive(names in proptest::collection::btree_map("[A-Za-z-]{1,24}", "[ -~]{0,20}", 0..12)) {
            let built = build(&names);
            prop_assert_eq!(&built.headers["x-webhook-event-id"], "evt_1");
            prop_assert_eq!(&built.headers["content-type"], "application/json");
            prop_assert_eq!(&built.headers["user-agent"], USER_AGENT_VALUE);
            prop_assert_eq!(built.headers.get_all("x-webhook-signature").iter().count(), 1);
            for name in names.keys() {
                if is_reserved(name) {
                    prop_assert!(built.skipped.iter().any(|s| &s.name == name));
                }
            }
        }
    }
}
