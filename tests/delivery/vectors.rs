//! Fixed secret, timestamp and body → header values, the expected values computed by
//! independent implementations (OpenSSL, Python's `hmac`), not by the code under test.
use jiff::Timestamp;
use serde_json::json;
use webhook_operator::delivery::payload::{self, WebhookRef};
use webhook_operator::delivery::signing::{self, SigningKeys, SigningScheme};
use webhook_operator::delivery::verify;

const EVENT_ID: &str = "evt_01HMA7ZQ5V3KX9P2D4E6F8G0JB";
/// 2024-01-15T10:30:00Z.
const TS: i64 = 1705314600;
const BODY: &str = r#"{"event_id":"evt_01HMA7ZQ5V3KX9P2D4E6F8G0JB","timestamp":"2024-01-15T10:30:00Z","webhook":{"id":"42","name":"My Webhook Endpoint"},"data":{"event_type":"user.created","user":{"email":"user@example.com","id":123,"username":"newuser"}}}"#;

/// BODY='…as above…'
/// printf '%s' "1705314600.$BODY" | openssl dgst -sha256 -hmac "my-webhook-secret"
/// python3 -c 'import hmac,hashlib,sys; b=sys.argv[1]; print(hmac.new(b"my-webhook-secret", ("1705314600."+b).encode(), hashlib.sha256).hexdigest())' "$BODY"
const PITCHEY_SIG: &str = "sha256=4ce1340ba2aea1900b5596c649cbe927058ed80c4a0d57765cd8e156329af6f9";
/// printf '%s' "1705314600.$BODY" | openssl dgst -sha256 -hmac "old-webhook-secret"
const PITCHEY_PREVIOUS_SIG: &str =
    "sha256=5d19de505046da17ac3f42730aa4e774c6d636526307323578ab85ce4262226e";

/// python3 -c 'import hmac,hashlib,base64,sys; b=sys.argv[1]; k=base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"); print(base64.b64encode(hmac.new(k, ("evt_01HMA7ZQ5V3KX9P2D4E6F8G0JB.1705314600."+b).encode(), hashlib.sha256).digest()).decode())' "$BODY"
/// printf '%s' "evt_01HMA7ZQ5V3KX9P2D4E6F8G0JB.1705314600.$BODY" | openssl dgst -sha256 -mac HMAC -macopt hexkey:$(printf '%s' MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw | base64 -d | xxd -p -c 256) -binary | base64
const STANDARD_SIG: &str = "v1,By4sLwMZjQi7lecp+9f67DdTfaPhiZ/yA7teZw5tKfs=";
/// The same with key base64decode("c2VjcmV0LXR3by1vbGQ=") = "secret-two-old".
const STANDARD_PREVIOUS_SIG: &str = "v1,dNgiK+VE7rbZVPgqK4aQJGrKbGccWQrg0Pws2taGILE=";

fn header<'a>(headers: &'a [(http::HeaderName, http::HeaderValue)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn payload_renders_the_vector_body() {
    let data = json!({"user": {"email": "user@example.com", "id": 123, "username": "newuser"}});
    let serde_json::Value::Object(data) = data else {
        unreachable!()
    };
    let webhook = WebhookRef {
        id: "42".into(),
        name: "My Webhook Endpoint".into(),
    };
    let ts = Timestamp::from_second(TS).unwrap();
    let body = payload::render(EVENT_ID, ts, &webhook, "user.created", &data).unwrap();
    assert_eq!(std::str::from_utf8(&body).unwrap(), BODY);
}

#[test]
fn pitchey_vector_with_rotation() {
    let keys = SigningKeys {
        primary: "my-webhook-secret".into(),
        previous: Some("old-webhook-secret".into()),
    };
    let headers =
        signing::sign(SigningScheme::Pitchey, &keys, EVENT_ID, TS, BODY.as_bytes()).unwrap();
    assert_eq!(header(&headers, "x-webhook-timestamp"), "1705314600");
    assert_eq!(header(&headers, "x-webhook-signature"), PITCHEY_SIG);
    assert_eq!(
        header(&headers, "x-webhook-signature-previous"),
        PITCHEY_PREVIOUS_SIG
    );
}

#[test]
fn standard_webhooks_vector_with_rotation() {
    let keys = SigningKeys {
        primary: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        previous: None,
    };
    let headers = signing::sign(
        SigningScheme::StandardWebhooks,
        &keys,
        EVENT_ID,
        TS,
        BODY.as_bytes(),
    )
    .unwrap();
    assert_eq!(header(&headers, "webhook-id"), EVENT_ID);
    assert_eq!(header(&headers, "webhook-timestamp"), "1705314600");
    assert_eq!(header(&headers, "webhook-signature"), STANDARD_SIG);
    let rotating = SigningKeys {
        previous: Some("whsec_c2VjcmV0LXR3by1vbGQ=".into()),
        ..keys
    };
    let headers = signing::sign(
        SigningScheme::StandardWebhooks,
        &rotating,
        EVENT_ID,
        TS,
        BODY.as_bytes(),
    )
    .unwrap();
    assert_eq!(
        header(&headers, "webhook-signature"),
        format!("{STANDARD_SIG} {STANDARD_PREVIOUS_SIG}")
    );
}

/// The example of the Standard Webhooks specification's test suites:
/// python3 -c 'import hmac,hashlib,base64; k=base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"); print(base64.b64encode(hmac.new(k, b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{\"test\": 2432232314}", hashlib.sha256).digest()).decode())'
#[test]
fn standard_webhooks_specification_vector() {
    let body = br#"{"test": 2432232314}"#;
    let keys = SigningKeys::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let headers = signing::sign(
        SigningScheme::StandardWebhooks,
        &keys,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        body,
    )
    .unwrap();
    assert_eq!(
        header(&headers, "webhook-signature"),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    let map: http::HeaderMap = headers.into_iter().collect();
    let now = Timestamp::from_second(1614265330 + 60).unwrap();
    assert_eq!(
        verify::verify_standard(&keys.primary, &map, body, now, verify::DEFAULT_TOLERANCE),
        Ok(1614265330)
    );
}

/// Keys longer than SHA-256's block and non-ASCII keys (UTF-8 bytes, as Node's createHmac uses them):
/// K=$(python3 -c 'print("k"*100)'); printf '%s' "1705314600.{}" | openssl dgst -sha256 -hmac "$K"
/// printf '%s' "1705314600.{}" | openssl dgst -sha256 -hmac "ключ-🔑"
#[test]
fn pitchey_long_and_unicode_keys() {
    assert_eq!(
        signing::pitchey_signature(&"k".repeat(100), TS, b"{}"),
        "sha256=40593c1e16069cdf01632c679487d8ed7af682bf9177c8c05180a81ebf709e70"
    );
    assert_eq!(
        signing::pitchey_signature("ключ-🔑", TS, b"{}"),
        "sha256=487e9063119e126c35969c2c17f407d1b25627ce0fb0cf839fff5224185a899a"
    );
}

/// Python's hmac, run now, agrees for bodies and secrets the test makes up (skipped with a
/// printed reason if python3 is missing).
#[test]
fn python_hmac_agrees_on_random_inputs() {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut cases = Vec::new();
    for i in 0..20 {
        let body: String = (0..rng.random_range(0..3000))
            .map(|_| rng.random_range(' '..='~'))
            .collect();
        let secret: String = (0..rng.random_range(1..90))
            .map(|_| rng.random_range('!'..='~'))
            .collect();
        let ts = rng.random_range(0..4_000_000_000i64);
        let ours = signing::pitchey_signature(&secret, ts, body.as_bytes());
        cases.push(json!({"i": i, "secret": secret, "ts": ts, "body": body, "sig": ours}));
    }
    let script = r#"
import hmac, hashlib, json, sys
for case in json.load(sys.stdin):
    expected = "sha256=" + hmac.new(case["secret"].encode(), (str(case["ts"]) + "." + case["body"]).encode(), hashlib.sha256).hexdigest()
    assert expected == case["sig"], case["i"]
print("ok")
"#;
    let Some(output) = super::run_with_stdin(
        "python3",
        &["-c", script],
        &serde_json::to_vec(&cases).unwrap(),
    ) else {
        return;
    };
    assert_eq!(output.trim(), "ok");
}
