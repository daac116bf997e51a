//! The logged-in user of a request: the session cookie, the token re-checked, CSRF on POSTs, and
//! a Kubernetes client that acts as the user.
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use cookie::{Cookie, SameSite};

use super::error::PageError;
use super::session::{csrf_matches, Session, Token};
use super::Dashboard;
use crate::dispatcher::http::auth::{peer_address, Identity};
use crate::security::{SecurityEvent, SecurityKind};

/// The session cookie's name.
pub const COOKIE: &str = "webhook_dashboard_session";

/// A request's user. Extracting it checks the session, the token (TokenReview, cached) and, on
/// POST, the CSRF token and the origin.
pub struct User {
    pub session_id: String,
    pub session: Session,
    pub identity: Identity,
    /// The client's address, for the security log.
    pub source: Option<String>,
}

impl User {
    /// A Kubernetes client that authenticates as this user (their token, nothing of ours).
    pub fn client(&self, dashboard: &Dashboard) -> Result<kube::Client, PageError> {
        user_client(dashboard, &self.session.token)
    }

    pub fn name(&self) -> &str {
        &self.identity.username
    }

    /// A security log entry of something this user did (from their address).
    pub fn did(&self, kind: SecurityKind, detail: String) -> SecurityEvent {
        SecurityEvent::new(kind, detail)
            .user(Some(self.name()))
            .source(self.source.clone())
    }
}

pub fn user_client(dashboard: &Dashboard, token: &Token) -> Result<kube::Client, PageError> {
    let mut config = (*dashboard.kube_config).clone();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.expose().to_owned().into()),
        ..Default::default()
    };
    kube::Client::try_from(config).map_err(|e| {
        PageError::Unavailable(format!("cannot build a client for the API server: {e}"))
    })
}

/// The session id from the request's cookies.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == COOKIE)
        .map(|cookie| cookie.value().to_owned())
}

/// `Set-Cookie` for a new session (or, with an empty id, one that removes it).
pub fn set_cookie(id: &str, secure: bool, max_age: std::time::Duration) -> String {
    let mut cookie = Cookie::build((COOKIE, id.to_owned()))
        .path("/ui")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .build();
    let seconds = if id.is_empty() {
        0
    } else {
        i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)
    };
    cookie.set_max_age(cookie::time::Duration::seconds(seconds));
    cookie.to_string()
}

/// Refuses a cross-site POST: `Origin` (sent by browsers on every POST) must be this host, and
/// `Sec-Fetch-Site` must not say `cross-site`.
pub fn same_origin(headers: &HeaderMap) -> Result<(), PageError> {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site == "cross-site")
    {
        return Err(PageError::Csrf("cross-site requests are refused".into()));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, host)| host);
    match (origin_host, host) {
        (Some(origin), Some(host)) if origin.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(PageError::Csrf(
            "the request came from another origin; reload the dashboard and try again".into(),
        )),
    }
}

impl FromRequestParts<Dashboard> for User {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        dashboard: &Dashboard,
    ) -> Result<Self, Self::Rejection> {
        let session_id = session_cookie(&parts.headers).ok_or(PageError::Login)?;
        let session = dashboard
            .sessions
            .get(&session_id, Instant::now())
            .ok_or(PageError::Login)?;
        if parts.method == Method::POST {
            same_origin(&parts.headers)?;
            let sent = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok());
            if !csrf_matches(&session, sent) {
                return Err(PageError::Csrf(
                    "the request lacks this session's CSRF token; reload the page and try again"
                        .into(),
                ));
            }
        }
        // A token revoked or expired since login ends the session.
        let identity = match dashboard.reviewer.identify(session.token.expose()).await {
            Ok(identity) => identity,
            Err(crate::dispatcher::http::error::ApiError::TokenRejected(_)) => {
                dashboard.sessions.remove(&session_id);
                return Err(PageError::Login);
            }
            Err(other) => return Err(other.into()),
        };
        Ok(User {
            session_id,
            session,
            identity,
            source: peer_address(&parts.extensions),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; webhook_dashboard_session=abc; b=2")]);
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        assert_eq!(session_cookie(&headers(&[("cookie", "a=1")])), None);
    }

    #[test]
    fn the_cookie_is_httponly_strict_and_scoped() {
        let cookie = set_cookie("abc", false, std::time::Duration::from_secs(60));
        assert!(cookie.contains("HttpOnly"), "{cookie}");
        assert!(cookie.contains("SameSite=Strict"), "{cookie}");
        assert!(cookie.contains("Path=/ui"), "{cookie}");
        assert!(cookie.contains("Max-Age=60"), "{cookie}");
        assert!(!cookie.contains("Secure"), "{cookie}");
        assert!(set_cookie("abc", true, std::time::Duration::from_secs(1)).contains("Secure"));
        assert!(set_cookie("", false, std::time::Duration::from_secs(60)).contains("Max-Age=0"));
    }

    #[test]
    fn cross_origin_posts_are_refused() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8000")])).is_ok());
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "http://127.0.0.1:8000")
        ]))
        .is_ok());
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "http://evil.example")
        ]))
        .is_err());
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8000"), ("origin", "null")])).is_err());
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8000"),
            ("sec-fetch-site", "cross-site")
        ]))
        .is_err());
    }
}
