//! The dispatcher's pipeline in miniature: render, sign, build headers, send.
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use ipnet::IpNet;
use jiff::Timestamp;
use serde_json::json;
use webhook_operator::delivery::client::{ClientConfig, DeliveryClient, DeliveryRequest};
use webhook_operator::delivery::egress::EgressPolicy;
use webhook_operator::delivery::headers::{build_headers, HeaderInputs};
use webhook_operator::delivery::outcome::HttpResult;
use webhook_operator::delivery::payload::{self, WebhookRef};
use webhook_operator::delivery::signing::{self, SigningKeys, SigningScheme};

pub const PITCHEY_SECRET: &str = "my-webhook-secret";
pub const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A rendered event ready to be sent to one endpoint.
pub struct Event {
    pub id: String,
    pub event_type: String,
    pub body: Bytes,
    pub scheme: SigningScheme,
    pub keys: SigningKeys,
    pub custom: BTreeMap<String, String>,
}

pub fn event(scheme: SigningScheme) -> Event {
    let id = payload::new_event_id(Timestamp::now(), &mut rand::rng());
    let data = json!({"user": {"id": 123, "email": "user@example.com", "username": "newuser"}});
    let serde_json::Value::Object(data) = data else {
        unreachable!()
    };
    let webhook = WebhookRef {
        id: "42".into(),
        name: "My Webhook Endpoint".into(),
    };
    let body = payload::render(&id, Timestamp::now(), &webhook, "user.created", &data).unwrap();
    let secret = match scheme {
        SigningScheme::Pitchey => PITCHEY_SECRET,
        SigningScheme::StandardWebhooks => STANDARD_SECRET,
        SigningScheme::None => panic!("these receivers verify signatures; scheme none has none"),
    };
    Event {
        id,
        event_type: "user.created".into(),
        body,
        scheme,
        keys: SigningKeys::new(secret),
        custom: BTreeMap::from([("X-Custom-Header".to_string(), "value".to_string())]),
    }
}

pub fn loopback_policy() -> EgressPolicy {
    EgressPolicy::allowing(["127.0.0.0/8".parse::<IpNet>().unwrap()])
}

pub fn client_with(egress: EgressPolicy) -> DeliveryClient {
    DeliveryClient::new(ClientConfig {
        egress,
        max_response_capture_bytes: 1024,
        connect_timeout: Duration::from_secs(2),
        static_hosts: [
            (
                "receiver.test".to_string(),
                vec!["127.0.0.1".parse().unwrap()],
            ),
            (
                "rebind.test".to_string(),
                vec![
                    "169.254.169.254".parse().unwrap(),
                    "10.0.0.1".parse().unwrap(),
                ],
            ),
        ]
        .into_iter()
        .collect(),
        ..ClientConfig::default()
    })
    .unwrap()
}

/// A client allowed to reach 127.0.0.0/8 over plain http.
pub fn loopback_client() -> DeliveryClient {
    client_with(loopback_policy())
}

/// Signs and sends attempt number `attempt` of `event` to `url`.
pub async fn send(
    client: &DeliveryClient,
    url: url::Url,
    event: &Event,
    attempt: u32,
    timeout: Duration,
) -> HttpResult {
    let signature = signing::sign(
        event.scheme,
        &event.keys,
        &event.id,
        Timestamp::now().as_second(),
        &event.body,
    )
    .unwrap();
    let built = build_headers(HeaderInputs {
        event_id: &event.id,
        event_type: &event.event_type,
        attempt,
        signature: &signature,
        custom: &event.custom,
    })
    .unwrap();
    assert!(built.skipped.is_empty());
    client
        .send(&DeliveryRequest {
            method: http::Method::POST,
            url,
            headers: built.headers,
            body: event.body.clone(),
            timeout,
        })
        .await
}
