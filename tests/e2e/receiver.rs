//! A webhook receiver on loopback for tests: records every request, verifies signatures with the
//! crate's `verify` module, and answers as told (succeed, fail, fail N times, hang).
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::Method;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use axum::Router;
use tokio::sync::Notify;
use webhook_operator::delivery::verify;

/// How the receiver answers.
#[derive(Clone, Debug)]
pub enum Behavior {
    Ok,
    Status(u16),
    /// Fail the first `n` requests with `status`, then succeed.
    FailFirst(usize, u16),
    /// Hold every request until released.
    Hang,
    /// Answer what the function says for (the request body, the request's number from 1).
    Decide(Decider),
}

/// A receiver's answer as a function of the body and the request number.
#[derive(Clone)]
pub struct Decider(pub Arc<DecideFn>);

/// The status to answer for (the request body, the request's number from 1).
pub type DecideFn = dyn Fn(&serde_json::Value, usize) -> u16 + Send + Sync;

impl std::fmt::Debug for Decider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decider")
    }
}

impl Behavior {
    /// Answers `status(body, request number)`.
    pub fn decide(
        status: impl Fn(&serde_json::Value, usize) -> u16 + Send + Sync + 'static,
    ) -> Self {
        Self::Decide(Decider(Arc::new(status)))
    }
}

#[derive(Clone, Debug)]
pub struct Received {
    pub event_id: String,
    pub event_type: String,
    pub attempt: u32,
    pub body: serde_json::Value,
    /// Whether the pitchey signature verified with the secret the test gave.
    pub verified: bool,
    /// When the request arrived.
    pub at: std::time::Instant,
    /// The request's method.
    pub method: String,
    /// Its `Authorization` header, if any.
    pub authorization: Option<String>,
    /// Whether it carried signature headers of either scheme.
    pub signed: bool,
    /// Its W3C `traceparent` header, if any.
    pub traceparent: Option<String>,
}

struct Inner {
    behavior: Mutex<Behavior>,
    received: Mutex<Vec<Received>>,
    requests: Mutex<usize>,
    /// When each request arrived, answered or not.
    arrivals: Mutex<Vec<std::time::Instant>>,
    secret: Mutex<Option<String>>,
    release: Notify,
    /// How long every request waits before it is answered.
    delay: Mutex<std::time::Duration>,
}

#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Inner>,
    pub addr: SocketAddr,
}

impl Receiver {
    pub async fn start(behavior: Behavior) -> Self {
        let inner = Arc::new(Inner {
            behavior: Mutex::new(behavior),
            received: Mutex::default(),
            requests: Mutex::new(0),
            arrivals: Mutex::default(),
            secret: Mutex::new(None),
            release: Notify::new(),
            delay: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/hook", any(handle))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { inner, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every request from now on waits `delay` before it is answered.
    pub fn set_delay(&self, delay: std::time::Duration) {
        *self.inner.delay.lock().unwrap() = delay;
    }

    pub fn set_behavior(&self, behavior: Behavior) {
        *self.inner.behavior.lock().unwrap() = behavior;
    }

    pub fn set_secret(&self, secret: &str) {
        *self.inner.secret.lock().unwrap() = Some(secret.to_string());
    }

    /// Lets every held request answer (200).
    pub fn release(&self) {
        self.set_behavior(Behavior::Ok);
        self.inner.release.notify_waiters();
    }

    /// Successful deliveries recorded so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// Requests seen, answered or not.
    pub fn requests(&self) -> usize {
        *self.inner.requests.lock().unwrap()
    }

    /// When each request arrived (failed ones too), in order.
    pub fn arrivals(&self) -> Vec<std::time::Instant> {
        self.inner.arrivals.lock().unwrap().clone()
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    inner
        .arrivals
        .lock()
        .unwrap()
        .push(std::time::Instant::now());
    let seen = {
        let mut requests = inner.requests.lock().unwrap();
        *requests += 1;
        *requests
    };
    let delay = *inner.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let behavior = inner.behavior.lock().unwrap().clone();
    match behavior {
        Behavior::Status(code) => return StatusCode::from_u16(code).unwrap(),
        Behavior::FailFirst(n, code) if seen <= n => return StatusCode::from_u16(code).unwrap(),
        Behavior::Hang => {
            let released = inner.release.notified();
            released.await;
        }
        Behavior::Decide(Decider(decide)) => {
            let parsed = serde_json::from_slice(&body).unwrap_or_default();
            let code = decide(&parsed, seen);
            if !(200..300).contains(&code) {
                return StatusCode::from_u16(code).unwrap();
            }
        }
        _ => {}
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let secret = inner.secret.lock().unwrap().clone();
    let verified = secret.is_some_and(|secret| {
        verify::verify_pitchey(
            &secret,
            &headers,
            &body,
            jiff::Timestamp::now(),
            verify::DEFAULT_TOLERANCE,
        )
        .is_ok()
    });
    inner.received.lock().unwrap().push(Received {
        event_id: header("x-webhook-event-id"),
        event_type: header("x-webhook-event-type"),
        attempt: header("x-webhook-attempt").parse().unwrap_or(0),
        body: serde_json::from_slice(&body).unwrap_or_default(),
        verified,
        at: std::time::Instant::now(),
        method: method.to_string(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        signed: headers.contains_key("x-webhook-signature")
            || headers.contains_key("webhook-signature"),
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    StatusCode::OK
}
