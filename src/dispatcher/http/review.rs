//! TokenReview and SubjectAccessReview calls, with their answers cached for
//! `--auth-cache-seconds` (see [`super::auth`] for the decisions and the cache).
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use super::auth::{self, Access, Authn, Authz, Identity, TokenHash, TtlCache};
use super::error::ApiError;

/// Cached decisions at most (per cache); a flood of distinct tokens cannot grow memory beyond it.
const CACHE_CAPACITY: usize = 4096;

/// How long one review may take. An API server that hangs (not one that refuses connections,
/// which fails at once) would otherwise hold the publisher for the client's read timeout
/// (minutes); past this the request is answered 503 `auth_unavailable` and can be retried. A
/// slow one still answers in time: 2 s of latency each way costs about 10 s on a new connection
/// (TCP, TLS and the request), as scripts/faults.py measures.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Reviewer {
    client: kube::Client,
    /// `--token-audience`: asked of TokenReview and checked in its answer (empty: the API server's).
    audiences: Vec<String>,
    authn: Mutex<TtlCache<TokenHash, Authn>>,
    authz: Mutex<TtlCache<(Identity, Access), Authz>>,
}

impl Reviewer {
    pub fn new(client: kube::Client, ttl: Duration, audiences: Vec<String>) -> Self {
        Self {
            client,
            audiences,
            authn: Mutex::new(TtlCache::new(ttl, CACHE_CAPACITY)),
            authz: Mutex::new(TtlCache::new(ttl, CACHE_CAPACITY)),
        }
    }

    /// Authenticates the request's bearer token and checks that its user may do `access`.
    /// Returns who the caller is.
    pub async fn check(&self, headers: &HeaderMap, access: Access) -> Result<Identity, ApiError> {
        let token = auth::bearer_token(headers).map_err(ApiError::Unauthenticated)?;
        let identity = self.identify(token).await?;
        tracing::Span::current().record("user", identity.username.as_str());
        match self.authorize(&identity, &access).await? {
            Authz::Allowed => Ok(identity),
            Authz::Denied(reason) => Err(ApiError::Forbidden {
                user: identity.username,
                access: access.describe(),
                reason,
            }),
        }
    }

    /// Who `token` belongs to (TokenReview, cached); `TokenRejected` when it is not valid.
    pub async fn identify(&self, token: &str) -> Result<Identity, ApiError> {
        match self.authenticate(token).await? {
            Authn::Authenticated(identity) => Ok(identity),
            Authn::Rejected(reason) => Err(ApiError::TokenRejected(reason)),
        }
    }

    /// Whether `identity` may do `access` (SubjectAccessReview, cached).
    pub async fn allows(&self, identity: &Identity, access: &Access) -> Result<bool, ApiError> {
        Ok(matches!(
            self.authorize(identity, access).await?,
            Authz::Allowed
        ))
    }

    async fn authenticate(&self, token: &str) -> Result<Authn, ApiError> {
        cached(
            &self.authn,
            auth::token_hash(token),
            self.token_review(token),
        )
        .await
    }

    async fn token_review(&self, token: &str) -> Result<Authn, ApiError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        let api = Api::<TokenReview>::all(self.client.clone());
        let answer =
            within_timeout("TokenReview", api.create(&PostParams::default(), &review)).await?;
        Ok(auth::authn_decision(
            answer.status.as_ref(),
            &self.audiences,
        ))
    }

    async fn authorize(&self, identity: &Identity, access: &Access) -> Result<Authz, ApiError> {
        let key = (identity.clone(), access.clone());
        cached(&self.authz, key, self.access_review(identity, access)).await
    }

    async fn access_review(&self, identity: &Identity, access: &Access) -> Result<Authz, ApiError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: (!access.namespace.is_empty()).then(|| access.namespace.clone()),
                    verb: Some(access.verb.to_owned()),
                    group: Some(access.group.to_owned()),
                    resource: Some(access.resource.to_owned()),
                    name: access.name.clone(),
                    ..Default::default()
                }),
                ..identity.review_spec()
            },
            ..Default::default()
        };
        let api = Api::<SubjectAccessReview>::all(self.client.clone());
        let answer = within_timeout(
            "SubjectAccessReview",
            api.create(&PostParams::default(), &review),
        )
        .await?;
        Ok(auth::authz_decision(answer.status.as_ref()))
    }
}

/// `call`'s answer, or `AuthUnavailable` naming `what` when it fails or outlasts [`REVIEW_TIMEOUT`].
async fn within_timeout<T>(
    what: &str,
    call: impl std::future::Future<Output = kube::Result<T>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(REVIEW_TIMEOUT, call).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(ApiError::AuthUnavailable(format!("{what} failed: {e}"))),
        Err(_) => Err(ApiError::AuthUnavailable(format!(
            "{what} got no answer from the API server within {}s",
            REVIEW_TIMEOUT.as_secs()
        ))),
    }
}

/// The cached answer for `key`, or `review`'s (cached when it succeeds; errors are not).
async fn cached<K, V>(
    cache: &Mutex<TtlCache<K, V>>,
    key: K,
    review: impl std::future::Future<Output = Result<V, ApiError>>,
) -> Result<V, ApiError>
where
    K: Eq + std::hash::Hash + Clone,
    V: Clone,
{
    if let Some(hit) = lock(cache).get(&key, Instant::now()) {
        return Ok(hit);
    }
    let decision = review.await?;
    lock(cache).insert(key, decision.clone(), Instant::now());
    Ok(decision)
}

/// The cache's lock; a panic while holding it cannot leave the cache inconsistent, so a poisoned
/// lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
