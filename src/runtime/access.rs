//! Authentication and authorization decisions delegated to Kubernetes, without I/O: reading the
//! bearer token, what each API route asks RBAC, how TokenReview and SubjectAccessReview answers
//! are read, and a small bounded TTL cache for both (keyed by a hash of the token, never the
//! token). Used by the dispatcher's HTTP API (`dispatcher::http::review` makes the reviews) and by
//! the `/metrics` guard of both processes ([`super::metrics_auth`]).
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use http::header::AUTHORIZATION;
use http::HeaderMap;
use k8s_openapi::api::authentication::v1::TokenReviewStatus;
use k8s_openapi::api::authorization::v1::SubjectAccessReviewStatus;
use sha2::{Digest, Sha256};

/// The API group of the resources the API checks access to.
pub const GROUP: &str = "webhooks.pitchey.io";

/// Longest bearer token accepted (service account tokens are ~1 KiB; anything far larger is not
/// a token and is not worth a TokenReview).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a request carries no usable bearer token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing Authorization header; send `Authorization: Bearer <token>`")]
    Missing,
    #[error("malformed Authorization header; send `Authorization: Bearer <token>`")]
    Malformed,
}

/// The bearer token of a request.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, TokenError> {
    let value = headers.get(AUTHORIZATION).ok_or(TokenError::Missing)?;
    let value = value.to_str().map_err(|_| TokenError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.len() > MAX_TOKEN_LEN
        || token.contains(char::is_whitespace)
    {
        return Err(TokenError::Malformed);
    }
    Ok(token)
}

/// The client's IP address of a request, when the server recorded it (`ConnectInfo`, see
/// `runtime::health::serve`): for the security log.
pub fn peer_address(extensions: &http::Extensions) -> Option<String> {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|axum::extract::ConnectInfo(peer)| peer.ip().to_string())
}

/// SHA-256 of a token: the cache key of its decisions.
pub type TokenHash = [u8; 32];

pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// What a route asks RBAC: `verb` on `resource` (in [`GROUP`]) in `namespace`, optionally one
/// object `name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// The API group: [`GROUP`], or the query API's group for its reads.
    pub group: &'static str,
    pub namespace: String,
    pub verb: &'static str,
    pub resource: &'static str,
    pub name: Option<String>,
}

impl Access {
    /// Publishing events: `create` on `webhookevents`.
    pub fn publish(namespace: &str) -> Self {
        Self {
            group: GROUP,
            namespace: namespace.to_owned(),
            verb: "create",
            resource: "webhookevents",
            name: None,
        }
    }

    /// Reading dead letters, deliveries or analytics: `get` on the endpoint `name`, or `list` on
    /// endpoints when the request is not about one endpoint.
    pub fn read_endpoints(namespace: &str, name: Option<&str>) -> Self {
        Self {
            group: GROUP,
            namespace: namespace.to_owned(),
            verb: if name.is_some() { "get" } else { "list" },
            resource: "webhookendpoints",
            name: name.map(str::to_owned),
        }
    }

    /// `verb` on `resource` (in [`GROUP`]), in `namespace` (empty: every namespace).
    pub fn new(
        namespace: &str,
        verb: &'static str,
        resource: &'static str,
        name: Option<&str>,
    ) -> Self {
        Self {
            group: GROUP,
            namespace: namespace.to_owned(),
            verb,
            resource,
            name: name.map(str::to_owned),
        }
    }

    /// `verb` on `resource` of the query API (`query.webhooks.pitchey.io`) in `namespace`
    /// (empty: every namespace).
    pub fn query(
        namespace: &str,
        verb: &'static str,
        resource: &'static str,
        name: Option<&str>,
    ) -> Self {
        Self {
            group: crate::query::GROUP,
            ..Self::new(namespace, verb, resource, name)
        }
    }

    /// Sending a test delivery: `update` on the endpoint `name`.
    pub fn test_endpoint(namespace: &str, name: &str) -> Self {
        Self {
            group: GROUP,
            namespace: namespace.to_owned(),
            verb: "update",
            resource: "webhookendpoints",
            name: Some(name.to_owned()),
        }
    }

    /// E.g. ``create webhookevents.webhooks.pitchey.io in namespace `shop` ``.
    pub fn describe(&self) -> String {
        let object = match &self.name {
            Some(name) => format!("{}.{} `{name}`", self.resource, self.group),
            None => format!("{}.{}", self.resource, self.group),
        };
        format!("{} {object} in namespace `{}`", self.verb, self.namespace)
    }
}

/// Who a token belongs to, as TokenReview reports it (what SubjectAccessReview needs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Identity {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: Vec<(String, Vec<String>)>,
}

impl Identity {
    /// A SubjectAccessReview spec asking about this user (its user, uid, groups and extra); the
    /// caller sets what is asked (`resource_attributes` or `non_resource_attributes`).
    pub fn review_spec(&self) -> k8s_openapi::api::authorization::v1::SubjectAccessReviewSpec {
        k8s_openapi::api::authorization::v1::SubjectAccessReviewSpec {
            user: Some(self.username.clone()),
            uid: self.uid.clone(),
            groups: Some(self.groups.clone()),
            extra: (!self.extra.is_empty()).then(|| self.extra.iter().cloned().collect()),
            ..Default::default()
        }
    }
}

/// A TokenReview's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authn {
    Authenticated(Identity),
    /// The token is not valid; the reason as the API server gave it (may be empty).
    Rejected(String),
}

/// Reads a TokenReview status. With `audiences` (what the review asked for), the token must have
/// been issued for at least one of them: the API server answers with the audiences the token is
/// valid for, and a client must check the intersection itself.
pub fn authn_decision(status: Option<&TokenReviewStatus>, audiences: &[String]) -> Authn {
    let Some(status) = status else {
        return Authn::Rejected("TokenReview returned no status".into());
    };
    // Where the API server refuses a token for its audience it says so itself; either way the
    // caller learns how to mint a token this API accepts.
    let mint_hint = |reason: String| match audiences.first() {
        Some(audience) => Authn::Rejected(format!(
            "{reason}; this API takes tokens minted with \
             `kubectl create token <serviceaccount> --audience {audience}`"
        )),
        None => Authn::Rejected(reason),
    };
    if status.authenticated == Some(true) && !audiences.is_empty() {
        let issued_for = status.audiences.as_deref().unwrap_or_default();
        if !issued_for.iter().any(|a| audiences.contains(a)) {
            return mint_hint(format!("the token is issued for {issued_for:?}"));
        }
    }
    if status.authenticated != Some(true) {
        return mint_hint(status.error.clone().unwrap_or_default());
    }
    let Some(user) = status
        .user
        .as_ref()
        .filter(|u| u.username.as_deref().is_some_and(|name| !name.is_empty()))
    else {
        return Authn::Rejected("the token has no user name".into());
    };
    let mut extra: Vec<(String, Vec<String>)> = user
        .extra
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    extra.sort();
    Authn::Authenticated(Identity {
        username: user.username.clone().unwrap_or_default(),
        uid: user.uid.clone().filter(|u| !u.is_empty()),
        groups: user.groups.clone().unwrap_or_default(),
        extra,
    })
}

/// A SubjectAccessReview's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authz {
    Allowed,
    /// Not allowed; the reason as the authorizer gave it (may be empty).
    Denied(String),
}

/// Reads a SubjectAccessReview status: allowed only when `allowed` and not `denied`.
pub fn authz_decision(status: Option<&SubjectAccessReviewStatus>) -> Authz {
    match status {
        Some(s) if s.allowed && s.denied != Some(true) => Authz::Allowed,
        Some(s) => Authz::Denied(
            s.reason
                .clone()
                .or_else(|| s.evaluation_error.clone())
                .unwrap_or_default(),
        ),
        None => Authz::Denied("SubjectAccessReview returned no status".into()),
    }
}

/// A map whose entries expire after `ttl`, holding at most `capacity` entries: when full, expired
/// entries go first, then the entry closest to expiry. Time is passed in.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<K, (Instant, V)>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// A zero `ttl` or `capacity` caches nothing.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: HashMap::new(),
        }
    }

    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        self.entries
            .get(key)
            .filter(|(expires, _)| now < *expires)
            .map(|(_, value)| value.clone())
    }

    pub fn insert(&mut self, key: K, value: V, now: Instant) {
        if self.ttl.is_zero() || self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (expires, _)| now < *expires);
            if self.entries.len() >= self.capacity {
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (expires, _))| *expires)
                    .map(|(k, _)| k.clone());
                if let Some(soonest) = soonest {
                    self.entries.remove(&soonest);
                }
            }
        }
        self.entries.insert(key, (now + self.ttl, value));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use k8s_openapi::api::authentication::v1::UserInfo;
    use std::collections::BTreeMap;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token(&HeaderMap::new()), Err(TokenError::Missing));
        assert_eq!(bearer_token(&headers("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(&headers("bearer  abc ")), Ok("abc"));
        assert_eq!(
            bearer_token(&headers("Basic dXNlcjpwYXNz")),
            Err(TokenError::Malformed)
        );
        assert_eq!(bearer_token(&headers("Bearer")), Err(TokenError::Malformed));
        assert_eq!(
            bearer_token(&headers("Bearer ")),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            bearer_token(&headers("Bearer a b")),
            Err(TokenError::Malformed)
        );
        let huge = format!("Bearer {}", "x".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(bearer_token(&headers(&huge)), Err(TokenError::Malformed));
    }

    #[test]
    fn token_hash_is_sha256_and_hides_the_token() {
        let hash = token_hash("abc");
        assert_eq!(
            hex::encode(hash),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(token_hash("abc"), token_hash("abd"));
    }

    #[test]
    fn route_access() {
        let publish = Access::publish("shop");
        assert_eq!(
            (publish.verb, publish.resource, publish.name.as_deref()),
            ("create", "webhookevents", None)
        );
        assert_eq!(
            publish.describe(),
            "create webhookevents.webhooks.pitchey.io in namespace `shop`"
        );
        let one = Access::read_endpoints("shop", Some("crm"));
        assert_eq!((one.verb, one.name.as_deref()), ("get", Some("crm")));
        assert_eq!(
            one.describe(),
            "get webhookendpoints.webhooks.pitchey.io `crm` in namespace `shop`"
        );
        assert_eq!(Access::read_endpoints("shop", None).verb, "list");
        let test = Access::test_endpoint("shop", "crm");
        assert_eq!(
            (test.verb, test.resource, test.name.as_deref()),
            ("update", "webhookendpoints", Some("crm"))
        );
    }

    #[test]
    fn token_review_answers() {
        assert!(matches!(authn_decision(None, &[]), Authn::Rejected(_)));
        let rejected = TokenReviewStatus {
            authenticated: Some(false),
            error: Some("invalid bearer token".into()),
            ..Default::default()
        };
        assert_eq!(
            authn_decision(Some(&rejected), &[]),
            Authn::Rejected("invalid bearer token".into())
        );
        let accepted = TokenReviewStatus {
            authenticated: Some(true),
            user: Some(UserInfo {
                username: Some("publisher".into()),
                uid: Some("publisher".into()),
                groups: Some(vec!["publishers".into(), "system:authenticated".into()]),
                extra: Some(BTreeMap::from([("b".into(), vec!["2".into()])])),
            }),
            ..Default::default()
        };
        assert_eq!(
            authn_decision(Some(&accepted), &[]),
            Authn::Authenticated(Identity {
                username: "publisher".into(),
                uid: Some("publisher".into()),
                groups: vec!["publishers".into(), "system:authenticated".into()],
                extra: vec![("b".into(), vec!["2".into()])],
            })
        );
        let nameless = TokenReviewStatus {
            authenticated: Some(true),
            user: Some(UserInfo::default()),
            ..Default::default()
        };
        assert!(matches!(
            authn_decision(Some(&nameless), &[]),
            Authn::Rejected(_)
        ));
    }

    #[test]
    fn token_audiences_must_intersect_when_asked_for() {
        let issued_for = |audiences: Option<Vec<&str>>| TokenReviewStatus {
            authenticated: Some(true),
            audiences: audiences.map(|a| a.into_iter().map(String::from).collect()),
            user: Some(UserInfo {
                username: Some("system:serviceaccount:crm:debug".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let wanted = vec!["webhook-operator".to_string()];
        let ours = issued_for(Some(vec!["other", "webhook-operator"]));
        assert!(matches!(
            authn_decision(Some(&ours), &wanted),
            Authn::Authenticated(_)
        ));
        for theirs in [
            issued_for(Some(vec!["https://kubernetes.default.svc"])),
            issued_for(None),
        ] {
            match authn_decision(Some(&theirs), &wanted) {
                Authn::Rejected(reason) => {
                    assert!(reason.contains("--audience webhook-operator"), "{reason}")
                }
                other => panic!("accepted a token of another audience: {other:?}"),
            }
        }
        // Without audiences asked for, the API server's own audience is enough.
        assert!(matches!(
            authn_decision(Some(&issued_for(None)), &[]),
            Authn::Authenticated(_)
        ));
    }

    #[test]
    fn access_review_answers() {
        let allowed = SubjectAccessReviewStatus {
            allowed: true,
            ..Default::default()
        };
        assert_eq!(authz_decision(Some(&allowed)), Authz::Allowed);
        let denied_wins = SubjectAccessReviewStatus {
            allowed: true,
            denied: Some(true),
            reason: Some("webhook says no".into()),
            ..Default::default()
        };
        assert_eq!(
            authz_decision(Some(&denied_wins)),
            Authz::Denied("webhook says no".into())
        );
        assert_eq!(
            authz_decision(Some(&SubjectAccessReviewStatus::default())),
            Authz::Denied(String::new())
        );
        assert!(matches!(authz_decision(None), Authz::Denied(_)));
    }

    #[test]
    fn cache_entries_expire() {
        let t0 = Instant::now();
        let mut cache = TtlCache::new(Duration::from_secs(10), 8);
        cache.insert("a", 1, t0);
        assert_eq!(cache.get(&"a", t0 + Duration::from_secs(9)), Some(1));
        assert_eq!(cache.get(&"a", t0 + Duration::from_secs(10)), None);
        assert_eq!(cache.get(&"b", t0), None);
    }

    #[test]
    fn cache_is_bounded() {
        let t0 = Instant::now();
        let mut cache = TtlCache::new(Duration::from_secs(10), 3);
        for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
            cache.insert(key, i, t0 + Duration::from_secs(i as u64));
        }
        // Full: the entry closest to expiry ("a") makes room.
        cache.insert("d", 3, t0 + Duration::from_secs(3));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&"a", t0 + Duration::from_secs(3)), None);
        assert_eq!(cache.get(&"d", t0 + Duration::from_secs(3)), Some(3));
        // Expired entries are dropped first.
        cache.insert("e", 4, t0 + Duration::from_secs(12));
        assert_eq!(cache.len(), 2);
        // Re-inserting a present key does not evict anything.
        cache.insert("e", 5, t0 + Duration::from_secs(12));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&"e", t0 + Duration::from_secs(12)), Some(5));
    }

    #[test]
    fn zero_ttl_caches_nothing() {
        let mut cache = TtlCache::new(Duration::ZERO, 8);
        cache.insert("a", 1, Instant::now());
        assert!(cache.is_empty());
    }
}
