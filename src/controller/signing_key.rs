//! The generated signing key of an endpoint and its rotation, as pure decisions.
//!
//! The Secret `<endpoint>-signing` holds `secret` (the current key, `whsec_<base64 of 32 random
//! bytes>`) and, during a rotation's grace period, `previous`. Annotations on the Secret record
//! when the previous key expires and which rotation request was last handled.
//!
//! Rotation is requested with the endpoint annotation `webhooks.pitchey.io/rotate-secret=<token>`:
//! each new token rotates once. The token is an opaque trigger (a date, a ticket number), never key
//! material: annotations are readable by anyone who can read the endpoint.
use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use jiff::Timestamp;
use rand::Rng;

pub const PREVIOUS_EXPIRES_ANNOTATION: &str = "webhooks.pitchey.io/previous-key-expires-at";
pub const ROTATED_AT_ANNOTATION: &str = "webhooks.pitchey.io/rotated-at";
pub const ROTATION_TOKEN_ANNOTATION: &str = "webhooks.pitchey.io/rotation-token";

/// What the Secret holds, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyState {
    pub current: String,
    pub previous: Option<String>,
    pub previous_expires_at: Option<Timestamp>,
    pub rotated_at: Option<Timestamp>,
    pub rotation_token: Option<String>,
}

/// What changed, for Events and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyChange {
    Created,
    Rotated,
    PreviousExpired,
    Unchanged,
}

/// A new random key: `whsec_` + base64 of 32 random bytes (the Standard Webhooks format, which
/// the `pitchey` scheme uses as an opaque string).
pub fn generate_key(rng: &mut impl Rng) -> String {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Decides the key state. `existing` is `None` when the Secret does not exist yet;
/// `requested_token` is the endpoint's rotate annotation.
pub fn plan(
    existing: Option<&KeyState>,
    requested_token: Option<&str>,
    now: Timestamp,
    grace: Duration,
    new_key: impl FnOnce() -> String,
) -> (KeyState, KeyChange) {
    let Some(existing) = existing else {
        // A new endpoint: the current token counts as handled, so creation does not rotate.
        return (
            KeyState {
                current: new_key(),
                previous: None,
                previous_expires_at: None,
                rotated_at: None,
                rotation_token: requested_token.map(str::to_string),
            },
            KeyChange::Created,
        );
    };
    let wants_rotation =
        requested_token.is_some_and(|token| existing.rotation_token.as_deref() != Some(token));
    if wants_rotation {
        let expires = now
            .checked_add(jiff::SignedDuration::try_from(grace).unwrap_or(jiff::SignedDuration::MAX))
            .unwrap_or(Timestamp::MAX);
        return (
            KeyState {
                current: new_key(),
                previous: Some(existing.current.clone()),
                previous_expires_at: Some(expires),
                rotated_at: Some(now),
                rotation_token: requested_token.map(str::to_string),
            },
            KeyChange::Rotated,
        );
    }
    let expired =
        existing.previous.is_some() && existing.previous_expires_at.is_none_or(|at| at <= now);
    if expired {
        return (
            KeyState {
                previous: None,
                previous_expires_at: None,
                ..existing.clone()
            },
            KeyChange::PreviousExpired,
        );
    }
    (existing.clone(), KeyChange::Unchanged)
}

/// When the controller must look again (the previous key's expiry), if ever.
pub fn next_check(state: &KeyState, now: Timestamp) -> Option<Duration> {
    let at = state.previous_expires_at?;
    let wait = at.duration_since(now);
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO) + Duration::from_secs(1))
}

/// Reads the state from a Secret's data and annotations; `None` when the key is missing.
pub fn from_secret(
    data: &BTreeMap<String, Vec<u8>>,
    annotations: &BTreeMap<String, String>,
) -> Option<KeyState> {
    let text = |key: &str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.clone()).ok())
            .filter(|s| !s.is_empty())
    };
    let time = |key: &str| annotations.get(key).and_then(|v| v.parse().ok());
    Some(KeyState {
        current: text(crate::api::policy::GENERATED_SECRET_KEY)?,
        previous: text(crate::api::policy::GENERATED_PREVIOUS_KEY),
        previous_expires_at: time(PREVIOUS_EXPIRES_ANNOTATION),
        rotated_at: time(ROTATED_AT_ANNOTATION),
        rotation_token: annotations.get(ROTATION_TOKEN_ANNOTATION).cloned(),
    })
}

/// The Secret's data and annotations for a state.
pub fn to_secret(state: &KeyState) -> (BTreeMap<String, Vec<u8>>, BTreeMap<String, String>) {
    let mut data = BTreeMap::new();
    data.insert(
        crate::api::policy::GENERATED_SECRET_KEY.to_string(),
        state.current.as_bytes().to_vec(),
    );
    if let Some(previous) = &state.previous {
        data.insert(
            crate::api::policy::GENERATED_PREVIOUS_KEY.to_string(),
            previous.as_bytes().to_vec(),
        );
    }
    let mut annotations = BTreeMap::new();
    if let Some(at) = state.previous_expires_at {
        annotations.insert(PREVIOUS_EXPIRES_ANNOTATION.to_string(), at.to_string());
    }
    if let Some(at) = state.rotated_at {
        annotations.insert(ROTATED_AT_ANNOTATION.to_string(), at.to_string());
    }
    if let Some(token) = &state.rotation_token {
        annotations.insert(ROTATION_TOKEN_ANNOTATION.to_string(), token.clone());
    }
    (data, annotations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const DAY: Duration = Duration::from_secs(86_400);

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn generated_keys_are_whsec_with_32_bytes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let key = generate_key(&mut rng);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(key.strip_prefix("whsec_").unwrap())
            .unwrap();
        assert_eq!(raw.len(), 32);
        assert_ne!(key, generate_key(&mut rng));
    }

    #[test]
    fn creation_does_not_rotate_for_an_existing_token() {
        let (state, change) = plan(None, Some("r1"), t(0), DAY, || "k1".into());
        assert_eq!(change, KeyChange::Created);
        let (again, change) = plan(Some(&state), Some("r1"), t(10), DAY, || "k2".into());
        assert_eq!(change, KeyChange::Unchanged);
        assert_eq!(again.current, "k1");
    }

    #[test]
    fn existing_key_is_never_regenerated_without_a_request() {
        let (state, _) = plan(None, None, t(0), DAY, || "k1".into());
        let (again, change) = plan(Some(&state), None, t(1_000_000), DAY, || "k2".into());
        assert_eq!(
            (again.current.as_str(), change),
            ("k1", KeyChange::Unchanged)
        );
    }

    #[test]
    fn rotation_keeps_the_previous_key_for_the_grace_period() {
        let (state, _) = plan(None, None, t(0), DAY, || "k1".into());
        let (rotated, change) = plan(Some(&state), Some("r1"), t(100), DAY, || "k2".into());
        assert_eq!(change, KeyChange::Rotated);
        assert_eq!(rotated.current, "k2");
        assert_eq!(rotated.previous.as_deref(), Some("k1"));
        assert_eq!(rotated.previous_expires_at, Some(t(100 + 86_400)));
        assert_eq!(
            next_check(&rotated, t(100)),
            Some(DAY + Duration::from_secs(1))
        );

        let (during, change) = plan(Some(&rotated), Some("r1"), t(50_000), DAY, || "x".into());
        assert_eq!(change, KeyChange::Unchanged);
        assert_eq!(during.previous.as_deref(), Some("k1"));

        let (after, change) = plan(Some(&rotated), Some("r1"), t(100 + 86_400), DAY, || {
            "x".into()
        });
        assert_eq!(change, KeyChange::PreviousExpired);
        assert_eq!(
            (after.current.as_str(), after.previous.as_deref()),
            ("k2", None)
        );
        assert_eq!(next_check(&after, t(0)), None);
    }

    #[test]
    fn a_new_token_rotates_again() {
        let (state, _) = plan(None, None, t(0), DAY, || "k1".into());
        let (r1, _) = plan(Some(&state), Some("r1"), t(1), DAY, || "k2".into());
        let (r2, change) = plan(Some(&r1), Some("r2"), t(2), DAY, || "k3".into());
        assert_eq!(change, KeyChange::Rotated);
        assert_eq!(
            (r2.current.as_str(), r2.previous.as_deref()),
            ("k3", Some("k2"))
        );
    }

    #[test]
    fn secret_round_trip() {
        let (state, _) = plan(None, None, t(0), DAY, || "k1".into());
        let (rotated, _) = plan(Some(&state), Some("r1"), t(5), DAY, || "k2".into());
        let (data, annotations) = to_secret(&rotated);
        assert_eq!(from_secret(&data, &annotations), Some(rotated));
        assert_eq!(from_secret(&BTreeMap::new(), &annotations), None);
    }
}
