//! A webhook receiver in Rust (axum) that verifies deliveries with the crate's `verify` module.
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_... PORT=9000 cargo run --example receiver
//! ```
//! Env: `WEBHOOK_SECRET` (the endpoint's signing secret), `WEBHOOK_SCHEME` (`pitchey`, the
//! default, or `standard-webhooks`), `PORT` (default 9000), `RECEIVED_LOG` (optional file: one
//! JSON line per accepted event, `{"event_id","event_type","attempt"}`), `TOLERANCE_SECONDS`
//! (allowed clock difference of the signed timestamp, default 300). Any path accepts POSTs;
//! `GET /healthz` answers `ok`. Duplicate event ids (retries, redeliveries) are acknowledged
//! and ignored; ids already in `RECEIVED_LOG` count as seen, so a restart does not forget them.
use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use webhook_operator::delivery::verify::{verify_pitchey, verify_standard, DEFAULT_TOLERANCE};

struct Receiver {
    secret: String,
    standard: bool,
    tolerance: Duration,
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
        verify_standard(&r.secret, &headers, &body, now, r.tolerance)
    } else {
        verify_pitchey(&r.secret, &headers, &body, now, r.tolerance)
    };
    if let Err(error) = verified {
        eprintln!("401 rejected: {error}");
        return (StatusCode::UNAUTHORIZED, "invalid signature");
    }
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON");
    };
    let event_id = event["event_id"].as_str().unwrap_or_default().to_string();
    let event_type = event["data"]["event_type"].as_str().unwrap_or_default();
    let attempt: u32 = headers
        .get("x-webhook-attempt")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(1);
    let first_time = r
        .seen
        .lock()
        .map(|mut s| s.insert(event_id.clone()))
        .unwrap_or(true);
    if !first_time {
        println!("200 duplicate {event_id} ({event_type}, attempt {attempt}) ignored");
        return (StatusCode::OK, "duplicate ignored");
    }
    println!("received {event_type} {event_id} (attempt {attempt})");
    if let Some(log) = &r.log {
        if let Ok(mut file) = log.lock() {
            let line = serde_json::json!({"event_id": event_id, "event_type": event_type, "attempt": attempt});
            let _ = writeln!(file, "{line}");
        }
    }
    (StatusCode::OK, "ok")
}

/// The event ids already in `RECEIVED_LOG` (none when it does not exist yet).
fn logged_ids(path: &str) -> HashSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|line| line["event_id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let secret =
        std::env::var("WEBHOOK_SECRET").map_err(|_| std::io::Error::other("set WEBHOOK_SECRET"))?;
    let standard = std::env::var("WEBHOOK_SCHEME").is_ok_and(|s| s == "standard-webhooks");
    let port = std::env::var("PORT").unwrap_or_else(|_| "9000".into());
    let tolerance = match std::env::var("TOLERANCE_SECONDS") {
        Ok(seconds) => Duration::from_secs(seconds.parse().map_err(|_| {
            std::io::Error::other(format!("TOLERANCE_SECONDS={seconds:?} is not a number"))
        })?),
        Err(_) => DEFAULT_TOLERANCE,
    };
    let (seen, log) = match std::env::var("RECEIVED_LOG") {
        Ok(path) if !path.is_empty() => (
            logged_ids(&path),
            Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
        ),
        _ => (HashSet::new(), None),
    };
    let state = Arc::new(Receiver {
        secret,
        standard,
        tolerance,
        seen: Mutex::new(seen),
        log,
    });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(post(receive))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("listening on http://127.0.0.1:{port}");
    axum::serve(listener, app).await
}
