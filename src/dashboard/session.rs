//! Dashboard sessions: an opaque id in an HttpOnly, SameSite=Strict cookie; the user's token,
//! identity and CSRF token stay in the dispatcher's memory. Pure apart from the random ids: the
//! clock is passed in.
//!
//! Why not the token itself in the cookie: the cookie would then be the credential, valid for as
//! long as the token is, and logout could not end it. Here logout and expiry remove the session,
//! and the token never leaves the server again after login.
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::dispatcher::http::auth::Identity;

/// Sessions kept at most; the oldest is dropped beyond it, so a login flood cannot grow memory.
const CAPACITY: usize = 10_000;

/// A bearer token, never printed.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl Token {
    pub fn new(token: &str) -> Self {
        Self(Arc::from(token))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A logged-in user.
#[derive(Clone, Debug)]
pub struct Session {
    pub token: Token,
    pub identity: Identity,
    /// Sent back on every mutating request (`X-CSRF-Token`).
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// How long a session lives.
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    /// From login, whatever the activity.
    pub absolute: Duration,
    /// Without a request.
    pub idle: Duration,
}

impl Session {
    fn expired(&self, now: Instant, lifetimes: Lifetimes) -> bool {
        now.saturating_duration_since(self.created) >= lifetimes.absolute
            || now.saturating_duration_since(self.last_seen) >= lifetimes.idle
    }
}

/// The sessions of one dispatcher replica.
pub struct Sessions {
    lifetimes: Lifetimes,
    /// Keyed by the SHA-256 of the session id, so a lookup's timing reveals nothing of live ids.
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
}

/// A random 256-bit value, URL-safe base64.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    pub fn new(lifetimes: Lifetimes) -> Self {
        Self {
            lifetimes,
            by_hash: Mutex::new(HashMap::new()),
        }
    }

    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.by_hash
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session; returns its id (for the cookie).
    pub fn create(&self, token: Token, identity: Identity, now: Instant) -> String {
        let id = random_token();
        let session = Session {
            token,
            identity,
            csrf: random_token(),
            created: now,
            last_seen: now,
        };
        let mut map = self.map();
        let lifetimes = self.lifetimes;
        map.retain(|_, s| !s.expired(now, lifetimes));
        if map.len() >= CAPACITY {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(key(&id), session);
        id
    }

    /// The live session of `id`, marked as seen at `now`; `None` when unknown or expired (an
    /// expired one is removed).
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let mut map = self.map();
        let hash = key(id);
        let session = map.get_mut(&hash)?;
        if session.expired(now, self.lifetimes) {
            map.remove(&hash);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    /// Ends a session (logout); true when there was one.
    pub fn remove(&self, id: &str) -> bool {
        self.map().remove(&key(id)).is_some()
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `sent` is the session's CSRF token (constant time).
pub fn csrf_matches(session: &Session, sent: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    sent.is_some_and(|sent| bool::from(sent.as_bytes().ct_eq(session.csrf.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        Sessions::new(Lifetimes {
            absolute: Duration::from_secs(3600),
            idle: Duration::from_secs(600),
        })
    }

    fn alice() -> Identity {
        Identity {
            username: "alice".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_session_is_found_by_its_id_only() {
        let sessions = sessions();
        let now = Instant::now();
        let id = sessions.create(Token::new("t"), alice(), now);
        let session = sessions.get(&id, now).unwrap();
        assert_eq!(session.identity.username, "alice");
        assert_eq!(session.token.expose(), "t");
        assert!(sessions.get("other", now).is_none());
        assert_ne!(session.csrf, id);
        assert_eq!(format!("{:?}", session.token), "Token(<redacted>)");
    }

    #[test]
    fn idle_and_absolute_expiry() {
        let sessions = sessions();
        let start = Instant::now();
        let id = sessions.create(Token::new("t"), alice(), start);
        // Activity keeps it alive past the idle limit...
        for minutes in [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55] {
            assert!(sessions
                .get(&id, start + Duration::from_secs(minutes * 60))
                .is_some());
        }
        // ...but not past the absolute one.
        assert!(sessions
            .get(&id, start + Duration::from_secs(3600))
            .is_none());
        let idle = sessions.create(Token::new("t"), alice(), start);
        assert!(sessions
            .get(&idle, start + Duration::from_secs(601))
            .is_none());
        assert!(sessions.is_empty());
    }

    #[test]
    fn logout_removes_the_session() {
        let sessions = sessions();
        let now = Instant::now();
        let id = sessions.create(Token::new("t"), alice(), now);
        assert!(sessions.remove(&id));
        assert!(sessions.get(&id, now).is_none());
        assert!(!sessions.remove(&id));
    }

    #[test]
    fn csrf_must_match_exactly() {
        let sessions = sessions();
        let now = Instant::now();
        let id = sessions.create(Token::new("t"), alice(), now);
        let session = sessions.get(&id, now).unwrap();
        assert!(csrf_matches(&session, Some(&session.csrf.clone())));
        assert!(!csrf_matches(&session, None));
        assert!(!csrf_matches(&session, Some("")));
        assert!(!csrf_matches(&session, Some(&session.csrf[1..])));
    }

    #[test]
    fn ids_are_random_and_long() {
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token());
    }
}
