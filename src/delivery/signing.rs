//! Request signatures.
//!
//! # `pitchey` (the default, as the seed's "Signature Verification")
//! - `X-Webhook-Timestamp: <unix seconds>`
//! - `X-Webhook-Signature: sha256=<lowercase hex of HMAC-SHA256(key, "<timestamp>.<raw body>")>`
//!
//! The key is the secret string's UTF-8 bytes, used as is (no decoding), exactly as the seed's
//! receiver code (`crypto.createHmac('sha256', secret)`) uses it.
//!
//! During a secret's rotation grace period the new key's signature stays in
//! `X-Webhook-Signature` (so receivers that already have the new secret, and the seed's code, work
//! unchanged) and the previous key's signature, in the same `sha256=<hex>` form over the same
//! string, is sent in **`X-Webhook-Signature-Previous`**. A receiver still holding the old secret
//! checks that header instead.
//!
//! # `standard-webhooks` (<https://www.standardwebhooks.com/>)
//! - `webhook-id: <event id>`, `webhook-timestamp: <unix seconds>`
//! - `webhook-signature: v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<raw body>")>`
//!
//! The key is the base64-decoded part of a `whsec_<base64>` secret (the prefix is optional, as in
//! the reference libraries). During rotation both signatures are sent, space-separated, the new
//! one first: `v1,<new> v1,<previous>`.
use base64::Engine;
use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue};
use sha2::Sha256;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// `X-Webhook-Timestamp` (pitchey).
pub const X_WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("x-webhook-timestamp");
/// `X-Webhook-Signature` (pitchey): the current key's signature.
pub const X_WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("x-webhook-signature");
/// `X-Webhook-Signature-Previous` (pitchey): the previous key's signature during rotation.
pub const X_WEBHOOK_SIGNATURE_PREVIOUS: HeaderName =
    HeaderName::from_static("x-webhook-signature-previous");
/// `webhook-id` (standard-webhooks).
pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
/// `webhook-timestamp` (standard-webhooks).
pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
/// `webhook-signature` (standard-webhooks).
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// The prefix of standard-webhooks secrets.
pub const WHSEC_PREFIX: &str = "whsec_";

/// The signature scheme of an endpoint (the CRD's enum: one definition for both layers).
pub use crate::api::endpoint::SigningScheme;

/// The secrets an endpoint signs with: the current one, and the previous one during a rotation's
/// grace period. Secrets are the strings stored in the Secret (for standard-webhooks `whsec_…`).
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeys {
    pub primary: String,
    pub previous: Option<String>,
}

impl SigningKeys {
    /// Keys without a rotation in progress.
    pub fn new(primary: impl Into<String>) -> Self {
        Self {
            primary: primary.into(),
            previous: None,
        }
    }
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("primary", &"<redacted>")
            .field("previous", &self.previous.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a request could not be signed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    #[error("the {which} signing secret is empty")]
    EmptySecret { which: KeyRole },
    #[error("the {which} standard-webhooks secret is not `whsec_<base64>`: {reason}")]
    InvalidStandardSecret { which: KeyRole, reason: String },
    #[error("event id {event_id:?} cannot be sent in a header")]
    InvalidEventId { event_id: String },
}

/// Which of the two keys an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    Primary,
    Previous,
}

impl std::fmt::Display for KeyRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyRole::Primary => "current",
            KeyRole::Previous => "previous",
        })
    }
}

/// The signature headers of one attempt. `unix_ts` is the attempt's time in Unix seconds.
pub fn sign(
    scheme: SigningScheme,
    keys: &SigningKeys,
    event_id: &str,
    unix_ts: i64,
    body: &[u8],
) -> Result<Vec<(HeaderName, HeaderValue)>, SigningError> {
    let timestamp = HeaderValue::from(unix_ts);
    let previous = keys.previous.as_deref().filter(|s| !s.is_empty());
    match scheme {
        SigningScheme::None => Ok(Vec::new()),
        SigningScheme::Pitchey => {
            let mut headers = vec![
                (X_WEBHOOK_TIMESTAMP, timestamp),
                (
                    X_WEBHOOK_SIGNATURE,
                    pitchey_header(&keys.primary, KeyRole::Primary, unix_ts, body)?,
                ),
            ];
            if let Some(previous) = previous {
                let value = pitchey_header(previous, KeyRole::Previous, unix_ts, body)?;
                headers.push((X_WEBHOOK_SIGNATURE_PREVIOUS, value));
            }
            Ok(headers)
        }
        SigningScheme::StandardWebhooks => {
            let id = HeaderValue::from_str(event_id).map_err(|_| SigningError::InvalidEventId {
                event_id: event_id.to_string(),
            })?;
            let mut signature =
                standard_signature(&keys.primary, KeyRole::Primary, event_id, unix_ts, body)?;
            if let Some(previous) = previous {
                signature.push(' ');
                signature.push_str(&standard_signature(
                    previous,
                    KeyRole::Previous,
                    event_id,
                    unix_ts,
                    body,
                )?);
            }
            Ok(vec![
                (WEBHOOK_ID, id),
                (WEBHOOK_TIMESTAMP, timestamp),
                (WEBHOOK_SIGNATURE, header_value(signature)),
            ])
        }
    }
}

/// `sha256=<hex>` for the pitchey scheme.
pub fn pitchey_signature(secret: &str, unix_ts: i64, body: &[u8]) -> String {
    let mac = pitchey_mac(secret.as_bytes(), unix_ts, body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `v1,<base64>` for the standard-webhooks scheme.
pub fn standard_signature_with_key(
    key: &[u8],
    event_id: &str,
    unix_ts: i64,
    body: &[u8],
) -> String {
    let mac = standard_mac(key, event_id, unix_ts, body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// The HMAC over `<timestamp>.<body>`, ready to finalize or verify.
pub(crate) fn pitchey_mac(key: &[u8], unix_ts: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = new_mac(key);
    mac.update(unix_ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The HMAC over `<id>.<timestamp>.<body>`, ready to finalize or verify.
pub(crate) fn standard_mac(key: &[u8], event_id: &str, unix_ts: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = new_mac(key);
    mac.update(event_id.as_bytes());
    mac.update(b".");
    mac.update(unix_ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// HMAC-SHA256 keyed with `key`, without a fallible constructor: HMAC (RFC 2104) hashes keys
/// longer than the 64-byte block and zero-pads the rest to the block size, so the padded block
/// is the same key.
fn new_mac(key: &[u8]) -> HmacSha256 {
    use sha2::Digest;
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    <HmacSha256 as hmac::KeyInit>::new(&block.into())
}

/// Decodes a standard-webhooks secret (`whsec_<base64>`, prefix optional) into key bytes.
pub fn decode_standard_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .trim()
        .strip_prefix(WHSEC_PREFIX)
        .unwrap_or(secret.trim());
    let key = BASE64_LENIENT
        .decode(encoded)
        .map_err(|err| err.to_string())?;
    if key.is_empty() {
        return Err("the key is empty".to_string());
    }
    Ok(key)
}

/// Standard base64, padding optional (secrets get copied around without it).
const BASE64_LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

fn pitchey_header(
    secret: &str,
    which: KeyRole,
    unix_ts: i64,
    body: &[u8],
) -> Result<HeaderValue, SigningError> {
    if secret.is_empty() {
        return Err(SigningError::EmptySecret { which });
    }
    Ok(header_value(pitchey_signature(secret, unix_ts, body)))
}

fn standard_signature(
    secret: &str,
    which: KeyRole,
    event_id: &str,
    unix_ts: i64,
    body: &[u8],
) -> Result<String, SigningError> {
    if secret.is_empty() {
        return Err(SigningError::EmptySecret { which });
    }
    let key = decode_standard_secret(secret)
        .map_err(|reason| SigningError::InvalidStandardSecret { which, reason })?;
    Ok(standard_signature_with_key(&key, event_id, unix_ts, body))
}

/// Signatures are ASCII (`sha256=`, hex, `v1,`, base64, spaces), always valid header values.
fn header_value(ascii: String) -> HeaderValue {
    HeaderValue::try_from(ascii).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn get<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn pitchey_headers_without_rotation() {
        let headers = sign(
            SigningScheme::Pitchey,
            &SigningKeys::new("s"),
            "evt_1",
            1700000000,
            b"{}",
        )
        .unwrap();
        assert_eq!(headers.len(), 2);
        assert_eq!(get(&headers, "x-webhook-timestamp"), Some("1700000000"));
        let sig = get(&headers, "x-webhook-signature").unwrap();
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64, "{sig}");
    }

    #[test]
    fn pitchey_rotation_adds_previous_header() {
        let keys = SigningKeys {
            primary: "new".into(),
            previous: Some("old".into()),
        };
        let headers = sign(SigningScheme::Pitchey, &keys, "evt_1", 5, b"x").unwrap();
        assert_eq!(
            get(&headers, "x-webhook-signature"),
            Some(pitchey_signature("new", 5, b"x").as_str())
        );
        assert_eq!(
            get(&headers, "x-webhook-signature-previous"),
            Some(pitchey_signature("old", 5, b"x").as_str())
        );
    }

    #[test]
    fn standard_rotation_is_space_separated_new_first() {
        let keys = SigningKeys {
            primary: "whsec_bmV3".into(),
            previous: Some("whsec_b2xk".into()),
        };
        let headers = sign(SigningScheme::StandardWebhooks, &keys, "evt_1", 5, b"x").unwrap();
        let value = get(&headers, "webhook-signature").unwrap();
        let parts: Vec<_> = value.split(' ').collect();
        assert_eq!(
            parts,
            [
                standard_signature_with_key(b"new", "evt_1", 5, b"x"),
                standard_signature_with_key(b"old", "evt_1", 5, b"x"),
            ]
        );
        assert_eq!(get(&headers, "webhook-id"), Some("evt_1"));
        assert_eq!(get(&headers, "webhook-timestamp"), Some("5"));
    }

    #[test]
    fn scheme_none_sends_no_signature_headers() {
        let keys = SigningKeys::new("whatever");
        assert!(sign(SigningScheme::None, &keys, "evt_1", 5, b"x")
            .unwrap()
            .is_empty());
        assert_eq!(
            serde_json::to_string(&SigningScheme::None).unwrap(),
            "\"none\""
        );
    }

    #[test]
    fn bad_secrets_are_errors() {
        let err = sign(SigningScheme::Pitchey, &SigningKeys::new(""), "e", 1, b"").unwrap_err();
        assert_eq!(
            err,
            SigningError::EmptySecret {
                which: KeyRole::Primary
            }
        );
        let keys = SigningKeys {
            primary: "whsec_bmV3".into(),
            previous: Some("whsec_!!".into()),
        };
        let err = sign(SigningScheme::StandardWebhooks, &keys, "e", 1, b"").unwrap_err();
        assert!(
            matches!(
                err,
                SigningError::InvalidStandardSecret {
                    which: KeyRole::Previous,
                    ..
                }
            ),
            "{err}"
        );
        let err = sign(
            SigningScheme::StandardWebhooks,
            &SigningKeys::new("whsec_bmV3"),
            "e\n",
            1,
            b"",
        )
        .unwrap_err();
        assert!(matches!(err, SigningError::InvalidEventId { .. }));
    }

    #[test]
    fn standard_secret_prefix_and_padding_are_optional() {
        assert_eq!(decode_standard_secret("whsec_bmV3").unwrap(), b"new");
        assert_eq!(decode_standard_secret("bmV3").unwrap(), b"new");
        assert_eq!(decode_standard_secret("whsec_bg").unwrap(), b"n");
        assert_eq!(decode_standard_secret("whsec_bg==").unwrap(), b"n");
        assert!(decode_standard_secret("whsec_").is_err());
    }

    #[test]
    fn keys_debug_is_redacted() {
        let keys = SigningKeys {
            primary: "topsecret".into(),
            previous: Some("oldsecret".into()),
        };
        let shown = format!("{keys:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("oldsecret"),
            "{shown}"
        );
    }

    #[test]
    fn scheme_serde_names() {
        assert_eq!(
            serde_json::to_string(&SigningScheme::Pitchey).unwrap(),
            r#""pitchey""#
        );
        assert_eq!(
            serde_json::to_string(&SigningScheme::StandardWebhooks).unwrap(),
            r#""standard-webhooks""#
        );
        let parsed: SigningScheme = serde_json::from_str(r#""standard-webhooks""#).unwrap();
        assert_eq!(parsed, SigningScheme::StandardWebhooks);
    }

    proptest! {
        #[test]
        fn signing_never_panics_and_headers_are_valid(secret in ".{1,40}", id in "[a-zA-Z0-9_]{1,30}", ts in any::<i64>(), body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let headers = sign(SigningScheme::Pitchey, &SigningKeys::new(secret), &id, ts, &body).unwrap();
            let expected = ts.to_string();
            prop_assert_eq!(get(&headers, "x-webhook-timestamp"), Some(expected.as_str()));
            let key = base64::engine::general_purpose::STANDARD.encode(&body);
            let result = sign(SigningScheme::StandardWebhooks, &SigningKeys::new(format!("whsec_{key}")), &id, ts, &body);
            prop_assert_eq!(result.is_ok(), !body.is_empty());
        }
    }
}
