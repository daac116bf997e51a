//! The receiver's side of [`super::signing`]: checks a delivery's signature and timestamp.
//!
//! Comparisons are constant-time (`hmac`'s `verify_slice`), the timestamp must lie within a
//! tolerance of the receiver's clock in either direction (default 5 minutes, against replays),
//! and each failure has its own [`VerifyError`] kind.
//!
//! ```
//! use webhook_operator::delivery::{signing, verify};
//! let body = br#"{"event_id":"evt_1"}"#;
//! let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
//! let keys = signing::SigningKeys::new("my-secret");
//! let mut headers = http::HeaderMap::new();
//! for (name, value) in signing::sign(signing::SigningScheme::Pitchey, &keys, "evt_1", now.as_second(), body).unwrap() {
//!     headers.insert(name, value);
//! }
//! verify::verify_pitchey("my-secret", &headers, body, now, verify::DEFAULT_TOLERANCE).unwrap();
//! ```
use std::time::Duration;

use base64::Engine;
use hmac::Mac;
use http::HeaderMap;
use jiff::Timestamp;

use super::signing::{
    decode_standard_secret, pitchey_mac, standard_mac, WEBHOOK_ID, WEBHOOK_SIGNATURE,
    WEBHOOK_TIMESTAMP, X_WEBHOOK_SIGNATURE, X_WEBHOOK_SIGNATURE_PREVIOUS, X_WEBHOOK_TIMESTAMP,
};

/// How far a signature's timestamp may be from the receiver's clock, by default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Why a delivery was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    #[error("header {0} is not valid text")]
    InvalidHeader(&'static str),
    #[error("timestamp {0:?} is not a number of Unix seconds")]
    BadTimestamp(String),
    #[error("timestamp {timestamp} is {skew_seconds} s away from now, more than the tolerance of {tolerance_seconds} s")]
    TimestampOutOfTolerance {
        timestamp: i64,
        skew_seconds: u64,
        tolerance_seconds: u64,
    },
    #[error("signature is malformed: {0}")]
    MalformedSignature(String),
    #[error("the verification secret is invalid: {0}")]
    InvalidSecret(String),
    #[error("no signature matches the secret")]
    SignatureMismatch,
}

/// Verifies a `pitchey` delivery: `X-Webhook-Timestamp` within `tolerance` of `now`, and
/// `X-Webhook-Signature` (or, during a rotation, `X-Webhook-Signature-Previous`) equal to
/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`. Returns the signed timestamp.
pub fn verify_pitchey(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: Timestamp,
    tolerance: Duration,
) -> Result<i64, VerifyError> {
    let timestamp = header(headers, &X_WEBHOOK_TIMESTAMP, "X-Webhook-Timestamp")?;
    let unix_ts = check_timestamp(timestamp, now, tolerance)?;
    let primary = header(headers, &X_WEBHOOK_SIGNATURE, "X-Webhook-Signature")?;
    let previous = match headers.get(&X_WEBHOOK_SIGNATURE_PREVIOUS) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| VerifyError::InvalidHeader("X-Webhook-Signature-Previous"))?,
        ),
        None => None,
    };
    let mut malformed = None;
    for candidate in std::iter::once(primary).chain(previous) {
        let decoded = candidate
            .trim()
            .strip_prefix("sha256=")
            .ok_or_else(|| "expected `sha256=<hex>`".to_string())
            .and_then(|hex_sig| hex::decode(hex_sig).map_err(|err| format!("bad hex: {err}")));
        match decoded {
            Ok(bytes) => {
                if pitchey_mac(secret.as_bytes(), unix_ts, body)
                    .verify_slice(&bytes)
                    .is_ok()
                {
                    return Ok(unix_ts);
                }
            }
            Err(reason) => malformed = malformed.or(Some(reason)),
        }
    }
    Err(malformed.map_or(
        VerifyError::SignatureMismatch,
        VerifyError::MalformedSignature,
    ))
}

/// Verifies a `standard-webhooks` delivery: `webhook-timestamp` within `tolerance` of `now`, and
/// one of the space-separated `v1,<base64>` entries of `webhook-signature` equal to the HMAC of
/// `"<webhook-id>.<timestamp>.<body>"` under the key of `secret` (`whsec_<base64>`). Entries of
/// other versions are ignored. Returns the signed timestamp.
pub fn verify_standard(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: Timestamp,
    tolerance: Duration,
) -> Result<i64, VerifyError> {
    let key = decode_standard_secret(secret).map_err(VerifyError::InvalidSecret)?;
    let id = header(headers, &WEBHOOK_ID, "webhook-id")?;
    let timestamp = header(headers, &WEBHOOK_TIMESTAMP, "webhook-timestamp")?;
    let unix_ts = check_timestamp(timestamp, now, tolerance)?;
    let signatures = header(headers, &WEBHOOK_SIGNATURE, "webhook-signature")?;
    let mut saw_v1 = false;
    for entry in signatures.split(' ').filter(|entry| !entry.is_empty()) {
        let Some(encoded) = entry.strip_prefix("v1,") else {
            continue;
        };
        saw_v1 = true;
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            continue;
        };
        if standard_mac(&key, id, unix_ts, body)
            .verify_slice(&bytes)
            .is_ok()
        {
            return Ok(unix_ts);
        }
    }
    if saw_v1 {
        Err(VerifyError::SignatureMismatch)
    } else {
        Err(VerifyError::MalformedSignature(
            "no `v1,<base64>` entry".to_string(),
        ))
    }
}

fn header<'a>(
    headers: &'a HeaderMap,
    name: &http::HeaderName,
    shown: &'static str,
) -> Result<&'a str, VerifyError> {
    headers
        .get(name)
        .ok_or(VerifyError::MissingHeader(shown))?
        .to_str()
        .map_err(|_| VerifyError::InvalidHeader(shown))
}

fn check_timestamp(value: &str, now: Timestamp, tolerance: Duration) -> Result<i64, VerifyError> {
    let unix_ts: i64 = value
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp(value.to_string()))?;
    let skew_seconds = now.as_second().abs_diff(unix_ts);
    if u128::from(skew_seconds) * 1000 > tolerance.as_millis() {
        return Err(VerifyError::TimestampOutOfTolerance {
            timestamp: unix_ts,
            skew_seconds,
            tolerance_seconds: tolerance.as_secs(),
        });
    }
    Ok(unix_ts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::signing::{sign, SigningKeys, SigningScheme};
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000;

    fn signed(scheme: SigningScheme, keys: &SigningKeys, ts: i64, body: &[u8]) -> HeaderMap {
        sign(scheme, keys, "evt_1", ts, body)
            .unwrap()
            .into_iter()
            .collect()
    }

    fn now() -> Timestamp {
        Timestamp::from_second(NOW).unwrap()
    }

    #[test]
    fn pitchey_round_trip_and_rotation() {
        let keys = SigningKeys {
            primary: "new".into(),
            previous: Some("old".into()),
        };
        let headers = signed(SigningScheme::Pitchey, &keys, NOW, b"body");
        assert_eq!(
            verify_pitchey("new", &headers, b"body", now(), DEFAULT_TOLERANCE),
            Ok(NOW)
        );
        assert_eq!(
            verify_pitchey("old", &headers, b"body", now(), DEFAULT_TOLERANCE),
            Ok(NOW)
        );
        assert_eq!(
            verify_pitchey("other", &headers, b"body", now(), DEFAULT_TOLERANCE),
            Err(VerifyError::SignatureMismatch)
        );
        assert_eq!(
            verify_pitchey("new", &headers, b"bodY", now(), DEFAULT_TOLERANCE),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn standard_round_trip_and_rotation() {
        let keys = SigningKeys {
            primary: "whsec_bmV3".into(),
            previous: Some("whsec_b2xk".into()),
        };
        let headers = signed(SigningScheme::StandardWebhooks, &keys, NOW, b"body");
        assert_eq!(
            verify_standard("whsec_bmV3", &headers, b"body", now(), DEFAULT_TOLERANCE),
            Ok(NOW)
        );
        assert_eq!(
            verify_standard("whsec_b2xk", &headers, b"body", now(), DEFAULT_TOLERANCE),
            Ok(NOW)
        );
        assert_eq!(
            verify_standard("whsec_eHl6", &headers, b"body", now(), DEFAULT_TOLERANCE),
            Err(VerifyError::SignatureMismatch)
        );
        let mut tampered = headers.clone();
        tampered.insert(WEBHOOK_ID, "evt_2".parse().unwrap());
        assert_eq!(
            verify_standard("whsec_bmV3", &tampered, b"body", now(), DEFAULT_TOLERANCE),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn error_kinds() {
        let keys = SigningKeys::new("s");
        let headers = signed(SigningScheme::Pitchey, &keys, NOW, b"b");
        assert_eq!(
            verify_pitchey("s", &HeaderMap::new(), b"b", now(), DEFAULT_TOLERANCE),
            Err(VerifyError::MissingHeader("X-Webhook-Timestamp"))
        );
        let mut no_sig = headers.clone();
        no_sig.remove(X_WEBHOOK_SIGNATURE);
        assert_eq!(
            verify_pitchey("s", &no_sig, b"b", now(), DEFAULT_TOLERANCE),
            Err(VerifyError::MissingHeader("X-Webhook-Signature"))
        );
        let mut bad_ts = headers.clone();
        bad_ts.insert(X_WEBHOOK_TIMESTAMP, "yesterday".parse().unwrap());
        assert!(matches!(
            verify_pitchey("s", &bad_ts, b"b", now(), DEFAULT_TOLERANCE),
            Err(VerifyError::BadTimestamp(_))
        ));
        let mut bad_sig = headers.clone();
        bad_sig.insert(X_WEBHOOK_SIGNATURE, "md5=abc".parse().unwrap());
        assert!(matches!(
            verify_pitchey("s", &bad_sig, b"b", now(), DEFAULT_TOLERANCE),
            Err(VerifyError::MalformedSignature(_))
        ));
        assert!(matches!(
            verify_standard("not base64!", &headers, b"b", now(), DEFAULT_TOLERANCE),
            Err(VerifyError::InvalidSecret(_))
        ));
        let std_headers = signed(
            SigningScheme::StandardWebhooks,
            &SigningKeys::new("whsec_bmV3"),
            NOW,
            b"b",
        );
        let mut v2 = std_headers.clone();
        v2.insert(WEBHOOK_SIGNATURE, "v2,abc".parse().unwrap());
        assert!(matches!(
            verify_standard("whsec_bmV3", &v2, b"b", now(), DEFAULT_TOLERANCE),
            Err(VerifyError::MalformedSignature(_))
        ));
    }

    #[test]
    fn tolerance_is_symmetric_and_inclusive() {
        let keys = SigningKeys::new("s");
        for (offset, ok) in [(300, true), (-300, true), (301, false), (-301, false)] {
            let headers = signed(SigningScheme::Pitchey, &keys, NOW + offset, b"b");
            let result = verify_pitchey("s", &headers, b"b", now(), DEFAULT_TOLERANCE);
            assert_eq!(result.is_ok(), ok, "offset {offset}: {result:?}");
            if !ok {
                assert!(matches!(
                    result,
                    Err(VerifyError::TimestampOutOfTolerance {
                        skew_seconds: 301,
                        ..
                    })
                ));
            }
        }
    }

    proptest! {
        #[test]
        fn any_single_bit_flip_in_body_is_rejected(body in proptest::collection::vec(any::<u8>(), 1..256), index in any::<prop::sample::Index>(), bit in 0u8..8) {
            let keys = SigningKeys::new("whsec_c2VjcmV0");
            for scheme in [SigningScheme::Pitchey, SigningScheme::StandardWebhooks] {
                let headers = signed(scheme, &keys, NOW, &body);
                let mut flipped = body.clone();
                flipped[index.index(body.len())] ^= 1 << bit;
                let verify = match scheme {
                    SigningScheme::Pitchey => verify_pitchey,
                    SigningScheme::StandardWebhooks => verify_standard,
                    SigningScheme::None => unreachable!("only signing schemes are looped over"),
                };
                prop_assert!(verify(&keys.primary, &headers, &body, now(), DEFAULT_TOLERANCE).is_ok());
                prop_assert_eq!(verify(&keys.primary, &headers, &flipped, now(), DEFAULT_TOLERANCE), Err(VerifyError::SignatureMismatch));
            }
        }
    }
}
