//! A webhook receiver in Rust (axum) that verifies deliveries with the crate's `verify` module.
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_... PORT=9000 cargo run --example receiver
//! ```
//! Env: `WEBHOOK_SECRET` (the endpoint's signing secret), `WEBHOOK_SCHEME` (`pitchey`, the
//! default, or `standard-webhooks`), `PORT` (default 9000), `RECEIVED_LOG` (optional file: one
//! JSON line per accepted event). Duplicate event ids (retries, redeliveries) are acknowledged
//! and ignored.
use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use webhook_operator::delivery::verify::{verify_pitchey, verify_standard, DEFAULT_TOLERANCE};

struct Receiver {
    secret: String,
    standard: bool,
    seen: Mutex<HashSet<String>>,
    log: Option<Mutex<std::fs::File>>,
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let now = jiff::Timestamp::now();
    let verified = if r.standard {
        verify_standard(&r.secret, &headers, &body, now, DEFAULT_TOLERANCE)
    } else {
        verify_pitchey(&r.secret, &headers, &body, now, DEFAULT_TOLERANCE)
    };
    if let Err(error) = verified {
        eprintln!("rejected: {error}");
        return (StatusCode::UNAUTHORIZED, "invalid signature");
    }
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON");
    };
    let event_id = event["event_id"].as_str().unwrap_or_default().to_string();
    let first_time = r
        .seen
        .lock()
        .map(|mut s| s.insert(event_id.clone()))
        .unwrap_or(true);
    if !first_time {
        return (StatusCode::OK, "duplicate ignored");
    }
    let event_type = event["data"]["event_type"].as_str().unwrap_or_default();
    let attempt = headers
        .get("x-webhook-attempt")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("1");
    println!("received {event_type} {event_id} (attempt {attempt})");
    if let Some(log) = &r.log {
        if let Ok(mut file) = log.lock() {
            let line = serde_json::json!({"event_id": event_id, "event_type": event_type, "attempt": attempt});
            let _ = writeln!(file, "{line}");
        }
    }
    (StatusCode::OK, "ok")
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let secret =
        std::env::var("WEBHOOK_SECRET").map_err(|_| std::io::Error::other("set WEBHOOK_SECRET"))?;
    let standard = std::env::var("WEBHOOK_SCHEME").is_ok_and(|s| s == "standard-webhooks");
    let port = std::env::var("PORT").unwrap_or_else(|_| "9000".into());
    let log = match std::env::var("RECEIVED_LOG") {
        Ok(path) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        )),
        Err(_) => None,
    };
    let state = Arc::new(Receiver {
        secret,
        standard,
        seen: Mutex::default(),
        log,
    });
    let app = Router::new().fallback(post(receive)).with_state(state);
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("listening on http://127.0.0.1:{port}");
    axum::serve(listener, app).await
}
