//! The dashboard's pages; small rendering helpers shared by them.
use axum::response::Redirect;
use jiff::Timestamp;
use maud::{html, Markup};

use crate::api::conditions::{Condition, ConditionStatus};

pub mod endpoint;
pub mod endpoints;
pub mod events;
pub mod login;
pub mod replay;
pub mod security;
pub mod subscriptions;

/// `GET /ui/`.
pub async fn home() -> Redirect {
    Redirect::to("/ui/endpoints")
}

/// A condition's status as a coloured badge (`good` is the healthy status).
pub fn condition_badge(condition: Option<&Condition>, good: ConditionStatus) -> Markup {
    match condition {
        None => html! { span.badge.muted { "unknown" } },
        Some(c) => {
            let class = if c.status == good {
                "ok"
            } else if c.status == ConditionStatus::Unknown {
                "warn"
            } else {
                "bad"
            };
            html! {
                span class=(format!("badge {class}")) title=(c.message) {
                    (c.type_) "=" (format!("{:?}", c.status))
                }
            }
        }
    }
}

/// An RFC 3339 time as "3 min ago" with the exact time as a tooltip.
pub fn ago(time: Option<&str>, now: Timestamp) -> Markup {
    let Some(time) = time else {
        return html! { span.muted { "never" } };
    };
    let Ok(at) = time.parse::<Timestamp>() else {
        return html! { (time) };
    };
    html! { time datetime=(time) title=(time) { (relative(at, now)) } }
}

/// `at` relative to `now`: "12 s ago", "5 min ago", "3 h ago", "2 d ago".
pub fn relative(at: Timestamp, now: Timestamp) -> String {
    let seconds = now.as_second() - at.as_second();
    match seconds {
        s if s < 0 => "just now".into(),
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86_400),
    }
}

/// A URL without credentials or query (they may hold secrets).
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => format!("{}{}", parsed.origin().ascii_serialization(), parsed.path()),
        Err(_) => "(not a valid URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        let now: Timestamp = "2026-12-05T12:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(relative(at("2026-12-05T11:59:50Z"), now), "10 s ago");
        assert_eq!(relative(at("2026-12-05T11:55:00Z"), now), "5 min ago");
        assert_eq!(relative(at("2026-12-05T09:00:00Z"), now), "3 h ago");
        assert_eq!(relative(at("2026-12-03T12:00:00Z"), now), "2 d ago");
        assert_eq!(relative(at("2026-12-05T12:00:05Z"), now), "just now");
    }

    #[test]
    fn urls_lose_credentials_and_query() {
        assert_eq!(
            redacted_url("https://user:pw@hooks.example.com/a/b?token=x"),
            "https://hooks.example.com/a/b"
        );
        assert_eq!(redacted_url("nope"), "(not a valid URL)");
    }
}
