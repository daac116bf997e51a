//! The page shell (head, navigation, the CSRF token for htmx) and the security headers of every
//! dashboard response.
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::user::User;

/// Only this origin: the stylesheet and htmx are served from `/ui/assets/`.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Security headers on every dashboard response; pages are never cached. `Referrer-Policy:
/// same-origin`, not `no-referrer`: with the latter, browsers send `Origin: null` on form posts,
/// which [`super::user::same_origin`] must refuse.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/assets/");
    let from_htmx = request.headers().contains_key("hx-request");
    let mut response = next.run(request).await;
    // An error answering htmx goes into the page it came from: the notice alone.
    if from_htmx {
        if let Some(notice) = response.extensions_mut().remove::<ErrorNotice>() {
            let status = response.status();
            response = (status, notice.0).into_response();
        }
        // htmx's request would follow a 303 itself and never see `HX-Redirect`: answer 200 with
        // the header, and htmx navigates (to the login page after logout or a lapsed session).
        if response.status().is_redirection() && response.headers().contains_key("hx-redirect") {
            *response.status_mut() = axum::http::StatusCode::OK;
            response.headers_mut().remove(header::LOCATION);
        }
    }
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // htmx must not inject a <style> element (the CSP allows none), and shows errors
            // (a refused action is a 403 whose body says why) where the result would go.
            meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"responseHandling":[{"code":"204","swap":false},{"code":"[2345]..","swap":true}]}"#;
            title { (title) " · webhook-operator" }
            link rel="stylesheet" href=(super::assets::STYLESHEET);
            script src=(super::assets::HTMX) defer {}
        }
    }
}

/// Which navigation entry is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Endpoints,
    Events,
    Subscriptions,
    Security,
}

/// A page for a logged-in user: navigation, the user, logout, and the CSRF token htmx sends
/// with every request (`hx-headers` on `<body>`).
pub fn page(user: &User, nav: Nav, title: &str, body: Markup) -> Markup {
    let csrf = serde_json::json!({ "X-CSRF-Token": user.session.csrf }).to_string();
    let item = |target: Nav, href: &str, label: &str| {
        html! {
            li { a href=(href) aria-current=[(nav == target).then_some("page")] { (label) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body hx-headers=(csrf) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/endpoints" { "webhook-operator" }
                    nav aria-label="Main" {
                        ul {
                            (item(Nav::Endpoints, "/ui/endpoints", "Endpoints"))
                            (item(Nav::Events, "/ui/events", "Events"))
                            (item(Nav::Subscriptions, "/ui/subscriptions", "Subscriptions"))
                            (item(Nav::Security, "/ui/security", "Security log"))
                        }
                    }
                    div.who {
                        span.user title="Kubernetes user" { (user.name()) }
                        button.link type="button" hx-post="/ui/logout" { "Log out" }
                    }
                }
                main #main { h1 { (title) } (body) }
            }
        }
    }
}

/// A page without a user (login, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top { a.brand href="/ui/endpoints" { "webhook-operator" } }
                main #main { h1 { (title) } (body) }
            }
        }
    }
}

/// The notice of an error page, for [`security_headers`] to answer htmx with.
#[derive(Clone)]
pub struct ErrorNotice(pub Markup);
