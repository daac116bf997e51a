//! `/metrics` behind Kubernetes authentication, as controller-runtime does by default: the bearer
//! token is checked with a TokenReview, then its user with a SubjectAccessReview for `get` on the
//! non-resource URL `/metrics` (the chart's `<release>-metrics-reader` ClusterRole grants it).
//! Decisions are cached per token (by its SHA-256) for a minute; failures of the reviews
//! themselves are not cached.
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use super::access::{authn_decision, authz_decision, bearer_token, token_hash, Authn, Authz};
use super::access::{TokenHash, TtlCache};

const TTL: Duration = Duration::from_secs(60);
const CAPACITY: usize = 1024;

/// What a scrape is answered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// 401: no token, or one the API server rejects.
    Unauthenticated(String),
    /// 403: the user may not `get /metrics`.
    Forbidden(String),
}

impl Verdict {
    pub fn status(&self) -> StatusCode {
        match self {
            Verdict::Allowed => StatusCode::OK,
            Verdict::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Verdict::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }
}

/// The guard of `/metrics`.
pub struct MetricsAuth {
    client: kube::Client,
    cache: Mutex<TtlCache<TokenHash, Verdict>>,
}

impl MetricsAuth {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cache: Mutex::new(TtlCache::new(TTL, CAPACITY)),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, TtlCache<TokenHash, Verdict>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The verdict on a scrape's headers; `Err` (503) when the reviews could not be made.
    pub async fn check(&self, headers: &HeaderMap) -> Result<Verdict, String> {
        let token = match bearer_token(headers) {
            Ok(token) => token,
            Err(error) => return Ok(Verdict::Unauthenticated(error.to_string())),
        };
        let key = token_hash(token);
        if let Some(verdict) = self.cache().get(&key, Instant::now()) {
            return Ok(verdict);
        }
        let verdict = self.review(token).await?;
        self.cache().insert(key, verdict.clone(), Instant::now());
        Ok(verdict)
    }

    async fn review(&self, token: &str) -> Result<Verdict, String> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("TokenReview failed: {e}"))?;
        let identity = match authn_decision(answer.status.as_ref(), &[]) {
            Authn::Authenticated(identity) => identity,
            Authn::Rejected(reason) => {
                return Ok(Verdict::Unauthenticated(format!(
                    "the API server rejected the token: {reason}"
                )))
            }
        };
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some("/metrics".into()),
                    verb: Some("get".into()),
                }),
                ..identity.review_spec()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await
            .map_err(|e| format!("SubjectAccessReview failed: {e}"))?;
        Ok(match authz_decision(answer.status.as_ref()) {
            Authz::Allowed => Verdict::Allowed,
            Authz::Denied(reason) => Verdict::Forbidden(format!(
                "{} may not get /metrics (bind the metrics-reader ClusterRole){}",
                identity.username,
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                }
            )),
        })
    }
}
