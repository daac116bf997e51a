//! The dashboard's static files, compiled into the binary: nothing is fetched at run time.
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// Paths carry the crate version so a new release is never served a stale cached copy.
pub const STYLESHEET: &str = concat!("/ui/assets/dashboard-", env!("CARGO_PKG_VERSION"), ".css");
pub const HTMX: &str = concat!("/ui/assets/htmx-", env!("CARGO_PKG_VERSION"), ".min.js");

/// htmx 2.0.11 (Zero-Clause BSD, `htmx.LICENSE`), from the npm package `htmx.org`.
const HTMX_JS: &[u8] = include_bytes!("assets/htmx.min.js");
const DASHBOARD_CSS: &[u8] = include_bytes!("assets/dashboard.css");

/// `GET /ui/assets/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    let path = format!("/ui/assets/{file}");
    let (body, kind) = if path == STYLESHEET {
        (DASHBOARD_CSS, "text/css; charset=utf-8")
    } else if path == HTMX {
        (HTMX_JS, "text/javascript; charset=utf-8")
    } else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=86400, immutable"),
        ],
        body,
    )
        .into_response()
}
