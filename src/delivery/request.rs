//! The HTTP request of one attempt, built from the event and the endpoint's settings: the body
//! ([`payload::render`]: the bytes signed are the bytes sent), its signature for this attempt's
//! time ([`signing::sign`]) and the headers ([`build_headers`]). Pure: keys, custom headers and
//! the clock are passed in; [`super::client`] sends the result.
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use jiff::Timestamp;
use serde_json::{Map, Value};
use url::Url;

use super::headers::{build_headers, HeaderInputs};
use super::payload::{self, WebhookRef};
use super::signing::{self, SigningKeys, SigningScheme};
use crate::api::endpoint::HttpMethod;

/// A request ready to send.
#[derive(Clone, Debug)]
pub struct DeliveryRequest {
    pub method: http::Method,
    pub url: Url,
    /// From [`build_headers`].
    pub headers: HeaderMap,
    /// From [`payload::render`]; the exact bytes that were signed.
    pub body: Bytes,
    /// Total time for the attempt: connecting, sending, and reading the (capped) response.
    pub timeout: Duration,
}

/// The event being delivered.
#[derive(Clone, Copy, Debug)]
pub struct EventParts<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    /// When it happened: the payload's `timestamp`, the same on every attempt.
    pub created_at: Timestamp,
    pub data: EventData<'a>,
}

/// The event's data: its fields, or the canonical `data` object the store keeps
/// ([`payload::canonical_data`], spliced in without a parse).
#[derive(Clone, Copy, Debug)]
pub enum EventData<'a> {
    Fields(&'a Map<String, Value>),
    Stored(&'a [u8]),
}

/// Where and how it goes: the endpoint's side of the request.
#[derive(Clone, Copy, Debug)]
pub struct Destination<'a> {
    pub url: &'a str,
    pub method: HttpMethod,
    /// The payload's `webhook` object.
    pub webhook: &'a WebhookRef,
    pub scheme: SigningScheme,
    pub keys: &'a SigningKeys,
    /// The endpoint's static headers and those read from Secrets.
    pub custom: &'a BTreeMap<String, String>,
    pub timeout: Duration,
}

/// Why a request could not be built; none of these gets better by waiting.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the endpoint URL is invalid: {0}")]
    Url(#[from] url::ParseError),
    #[error("the event cannot be rendered: {0}")]
    Payload(#[from] payload::PayloadError),
    #[error("signing failed: {0}")]
    Signing(#[from] signing::SigningError),
    #[error("the headers cannot be built: {0}")]
    Headers(#[from] super::headers::HeaderError),
}

/// Builds attempt number `attempt` (1-based) of `event` to `to`, signed at `now`.
pub fn build_request(
    to: &Destination<'_>,
    event: &EventParts<'_>,
    attempt: u32,
    now: Timestamp,
) -> Result<DeliveryRequest, RequestError> {
    let body = render_body(to.webhook, event)?;
    build_request_with_body(to, event, body, attempt, now)
}

/// The payload of `event` as the document shapes it (before any transform).
pub fn render_body(webhook: &WebhookRef, event: &EventParts<'_>) -> Result<Bytes, RequestError> {
    let body = match event.data {
        EventData::Fields(fields) => payload::render(
            event.event_id,
            event.created_at,
            webhook,
            event.event_type,
            fields,
        ),
        EventData::Stored(stored) => payload::render_stored(
            event.event_id,
            event.created_at,
            webhook,
            event.event_type,
            stored,
        ),
    }?;
    Ok(body)
}

/// Builds the request that sends `body` (the payload, or a transform's output): signed at `now`
/// over exactly these bytes, with the headers of attempt `attempt`.
pub fn build_request_with_body(
    to: &Destination<'_>,
    event: &EventParts<'_>,
    body: Bytes,
    attempt: u32,
    now: Timestamp,
) -> Result<DeliveryRequest, RequestError> {
    let url = Url::parse(to.url)?;
    let signature = signing::sign(to.scheme, to.keys, event.event_id, now.as_second(), &body)?;
    let built = build_headers(HeaderInputs {
        event_id: event.event_id,
        event_type: event.event_type,
        attempt,
        signature: &signature,
        custom: to.custom,
    })?;
    let method = match to.method {
        HttpMethod::Post => http::Method::POST,
        HttpMethod::Put => http::Method::PUT,
        HttpMethod::Patch => http::Method::PATCH,
    };
    Ok(DeliveryRequest {
        method,
        url,
        headers: built.headers,
        body,
        timeout: to.timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::verify;
    use serde_json::json;

    fn data() -> Map<String, Value> {
        match json!({"user": {"id": 7}}) {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    /// Builds attempt 2 of a `user.created` event (created at 10:30) to `url`, signed at 10:31.
    fn build_to(url: &str) -> Result<DeliveryRequest, RequestError> {
        let keys = SigningKeys::new("secret-key");
        let webhook = WebhookRef {
            id: "crm/hooks".into(),
            name: "CRM".into(),
        };
        let custom = BTreeMap::from([("X-Team".to_string(), "crm".to_string())]);
        let to = Destination {
            url,
            method: HttpMethod::Post,
            webhook: &webhook,
            scheme: SigningScheme::Pitchey,
            keys: &keys,
            custom: &custom,
            timeout: Duration::from_secs(30),
        };
        let data = data();
        let event = EventParts {
            event_id: "evt_1",
            event_type: "user.created",
            created_at: "2024-01-15T10:30:00Z".parse().unwrap(),
            data: EventData::Fields(&data),
        };
        build_request(&to, &event, 2, signed_at())
    }

    fn signed_at() -> Timestamp {
        "2024-01-15T10:31:00Z".parse().unwrap()
    }

    #[test]
    fn the_request_is_signed_for_its_attempt_time_and_verifies() {
        let request = build_to("https://crm.example.com/hooks").unwrap();
        let now = signed_at();
        assert_eq!(request.url.as_str(), "https://crm.example.com/hooks");
        assert_eq!(request.headers["x-team"], "crm");
        assert_eq!(
            request.headers["x-webhook-timestamp"],
            now.as_second().to_string().as_str()
        );
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["timestamp"], "2024-01-15T10:30:00Z");
        assert_eq!(body["data"]["event_type"], "user.created");
        let verified = verify::verify_pitchey(
            "secret-key",
            &request.headers,
            &request.body,
            now,
            Duration::from_secs(300),
        )
        .unwrap();
        assert_eq!(verified, now.as_second());
    }

    #[test]
    fn a_bad_url_is_an_error_not_a_panic() {
        let error = build_to("not a url").unwrap_err();
        assert!(matches!(error, RequestError::Url(_)), "{error}");
    }
}
