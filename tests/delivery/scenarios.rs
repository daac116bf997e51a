//! Deliveries to real servers on 127.0.0.1: what the client reports and what `decide` makes of it.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use jiff::Timestamp;
use webhook_operator::delivery::circuit::{BreakerState, CircuitBreaker, CircuitConfig};
use webhook_operator::delivery::outcome::{decide, ErrorKind, Outcome};
use webhook_operator::delivery::ratelimit::{RateLimitConfig, RateLimiter};
use webhook_operator::delivery::retry::{self, RetryPolicy};
use webhook_operator::delivery::signing::SigningScheme;
use webhook_operator::delivery::verify;

use super::server::{self, Recorder};
use super::support::{self, PITCHEY_SECRET, STANDARD_SECRET};

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn delivered_with_verifiable_signature_and_headers() {
    let server = Recorder::ok().await;
    let client = support::loopback_client();
    for scheme in [SigningScheme::Pitchey, SigningScheme::StandardWebhooks] {
        let event = support::event(scheme);
        let result =
            support::send(&client, server.url("/webhooks/pitchey"), &event, 1, TIMEOUT).await;
        assert_eq!((result.status, result.error.clone()), (Some(200), None));
        assert_eq!(result.body_snippet, "ok");
        assert_eq!(result.http_version.as_deref(), Some("HTTP/1.1"));
        let outcome = decide(&RetryPolicy::default(), &result, 1, Timestamp::now(), 0.5);
        assert!(
            matches!(outcome, Outcome::Delivered { status: 200, .. }),
            "{outcome:?}"
        );

        let received = server.received().pop().unwrap();
        assert_eq!(
            received.body, event.body,
            "the bytes signed are the bytes sent"
        );
        let h = &received.headers;
        assert_eq!(h["x-webhook-event-id"], event.id.as_str());
        assert_eq!(h["x-webhook-event-type"], "user.created");
        assert_eq!(h["x-webhook-attempt"], "1");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(
            h["user-agent"],
            concat!("webhook-operator/", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(h["x-custom-header"], "value");
        let now = Timestamp::now();
        match scheme {
            SigningScheme::Pitchey => {
                verify::verify_pitchey(
                    PITCHEY_SECRET,
                    h,
                    &received.body,
                    now,
                    verify::DEFAULT_TOLERANCE,
                )
                .unwrap();
            }
            SigningScheme::StandardWebhooks => {
                assert_eq!(h["webhook-id"], event.id.as_str());
                verify::verify_standard(
                    STANDARD_SECRET,
                    h,
                    &received.body,
                    now,
                    verify::DEFAULT_TOLERANCE,
                )
                .unwrap();
            }
            SigningScheme::None => panic!("scheme none is not verified by receivers"),
        }
    }
}

#[tokio::test]
async fn connections_are_kept_alive_and_reused() {
    let server = Recorder::ok().await;
    let client = support::loopback_client();
    let event = support::event(SigningScheme::Pitchey);
    for attempt in 1..=3 {
        assert_eq!(
            support::send(&client, server.url("/a"), &event, attempt, TIMEOUT)
                .await
                .status,
            Some(200)
        );
    }
    let peers: Vec<_> = server.received().iter().map(|r| r.peer).collect();
    assert!(
        peers.windows(2).all(|w| w[0] == w[1]),
        "one pooled connection: {peers:?}"
    );
}

#[tokio::test]
async fn server_error_then_success_retries_with_the_same_event_id() {
    let server = Recorder::start(|n| {
        if n == 0 {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        } else {
            StatusCode::OK.into_response()
        }
    })
    .await;
    let client = support::loopback_client();
    let event = support::event(SigningScheme::Pitchey);
    let t0 = Instant::now();
    let mut breaker = CircuitBreaker::new(CircuitConfig::default(), t0);
    let policy = RetryPolicy::default();

    let permit = breaker.try_acquire(t0).unwrap();
    let first = support::send(&client, server.url("/h"), &event, 1, TIMEOUT).await;
    assert_eq!(first.status, Some(503));
    assert!(first.is_endpoint_failure());
    breaker.on_failure(permit, t0);
    let now = Timestamp::now();
    let outcome = decide(&policy, &first, 1, now, 0.5);
    // A 5xx is retried at once (the document's first step).
    assert_eq!(
        outcome,
        Outcome::Retry {
            at: now,
            after: Duration::ZERO,
            reason: "HTTP 503 Service Unavailable".into()
        }
    );

    let permit = breaker.try_acquire(t0).unwrap();
    let second = support::send(&client, server.url("/h"), &event, 2, TIMEOUT).await;
    breaker.on_success(permit, t0);
    assert!(matches!(
        decide(&policy, &second, 2, Timestamp::now(), 0.5),
        Outcome::Delivered { status: 200, .. }
    ));
    assert_eq!(
        (breaker.state(), breaker.consecutive_failures()),
        (BreakerState::Closed, 0)
    );

    let received = server.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].headers["x-webhook-event-id"],
        received[1].headers["x-webhook-event-id"]
    );
    assert_eq!(received[0].headers["x-webhook-attempt"], "1");
    assert_eq!(received[1].headers["x-webhook-attempt"], "2");
}

#[tokio::test]
async fn too_many_requests_with_retry_after() {
    let server = Recorder::start(|_| {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "7")],
            "slow down",
        )
            .into_response()
    })
    .await;
    let client = support::loopback_client();
    let event = support::event(SigningScheme::Pitchey);
    let result = support::send(&client, server.url("/h"), &event, 1, TIMEOUT).await;
    assert_eq!(result.status, Some(429));
    assert_eq!(result.retry_after.as_deref(), Some("7"));
    assert_eq!(result.body_snippet, "slow down");
    assert!(result.is_throttled() && !result.is_endpoint_failure());
    let outcome = decide(&RetryPolicy::default(), &result, 1, Timestamp::now(), 0.5);
    assert!(
        matches!(outcome, Outcome::Retry { after, .. } if after == Duration::from_secs(7)),
        "{outcome:?}"
    );

    // The limiter slows down and pauses the endpoint until Retry-After has passed.
    let t0 = Instant::now();
    let mut limiter = RateLimiter::new(RateLimitConfig::default(), t0);
    let retry_after = result
        .retry_after
        .as_deref()
        .and_then(|v| retry::parse_retry_after(v, std::time::SystemTime::now()));
    limiter.on_throttled(t0, retry_after);
    assert_eq!(limiter.current_rate_per_minute(), 50.0);
    assert_eq!(limiter.try_acquire(t0), Err(t0 + Duration::from_secs(7)));
}

#[tokio::test]
async fn gone_and_client_errors_are_dead_letters() {
    let server = Recorder::start(|n| {
        if n == 0 {
            StatusCode::GONE.into_response()
        } else {
            StatusCode::BAD_REQUEST.into_response()
        }
    })
    .await;
    let client = support::loopback_client();
    let event = support::event(SigningScheme::Pitchey);
    let gone = support::send(&client, server.url("/h"), &event, 1, TIMEOUT).await;
    assert!(matches!(
        decide(&RetryPolicy::default(), &gone, 1, Timestamp::now(), 0.5),
        Outcome::DeadLetter {
            endpoint_gone: true,
            ..
        }
    ));
    let bad = support::send(&client, server.url("/h"), &event, 1, TIMEOUT).await;
    assert!(matches!(
        decide(&RetryPolicy::default(), &bad, 1, Timestamp::now(), 0.5),
        Outcome::DeadLetter {
            endpoint_gone: false,
            ..
        }
    ));
}

#[tokio::test]
async fn no_answer_times_out() {
    let addr = server::raw(|stream| async move {
        let _open = stream;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let client = support::loopback_client();
    let event = support::event(SigningScheme::Pitchey);
    let started = Instant::now();
    let url = url::Url::parse(&format!("http://{addr}/h")).unwrap();
    let result = support::send(&client, url, &event, 1, Duration::from_millis(300)).await;
    assert_eq!(result.error_kind(), Some(ErrorKind::Timeout), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(result.latency >= Duration::from_millis(300));
    assert!(matches!(
        decide(&RetryPolicy::default(), &result, 1, Timestamp::now(), 0.5),
        Outcome::Retry { .. }
    ));
    assert!(result.is_endpoint_failure());
}

#[tokio::test]
async fn connection_refused() {
    let addr = server::closed_port().await;
    let client = support::loopback_client();
    let event = support::event(SigningScheme::Pitchey);
    let url = url::Url::parse(&format!("http://{addr}/h")).unwrap();
    let result = support::send(&client, url, &event, 1, TIMEOUT).await;
    assert_eq!(result.error_kind(), Some(ErrorKind::Connect), "{result:?}");
    let message = &result.error.as_ref().unwrap().message;
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(
        !message.contains("http://"),
        "the URL (which may hold secrets) is left out: {message}"
    );
    // The default schedule: at once, then 1 s, 2 s, 4 s; the fifth failure is final.
    for (attempt, secs) in [(1, 0), (2, 1), (3, 2), (4, 4)] {
        assert!(
            matches!(decide(&RetryPolicy::default(), &result, attempt, Timestamp::now(), 0.5), Outcome::Retry { after, .. } if after == Duration::from_secs(secs)),
            "attempt {attempt}"
        );
    }
    assert!(matches!(
        decide(&RetryPolicy::default(), &result, 5, Timestamp::now(), 0.5),
        Outcome::DeadLetter { .. }
    ));
}

#[tokio::test]
async fn reset_mid_response() {
    let addr = server::raw(|mut stream| async move {
        server::write(&mut stream, b"HTTP/1.1 200 OK\r\nContent-Le").await;
        #[allow(deprecated)]
        stream.set_linger(Some(Duration::ZERO)).ok();
        drop(stream);
    })
    .await;
    let client = support::loopback_client();
    let event = support::event(SigningScheme::Pitchey);
    let url = url::Url::parse(&format!("http://{addr}/h")).unwrap();
    let result = support::send(&client, url, &event, 1, TIMEOUT).await;
    assert_eq!(result.status, None);
    assert_eq!(result.error_kind(), Some(ErrorKind::Reset), "{result:?}");
    assert!(matches!(
        decide(&RetryPolicy::default(), &result, 1, Timestamp::now(), 0.5),
        Outcome::Retry { .. }
    ));
}

#[tokio::test]
async fn slow_body_keeps_the_status_and_what_arrived() {
    let addr = server::raw(|mut stream| async move {
        server::write(
            &mut stream,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nfirst bytes;",
        )
        .await;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if !server::write(&mut stream, b".").await {
                return;
            }
        }
    })
    .await;
    let client = support::loopback_client();
    let event = support::event(SigningScheme::Pitchey);
    let url = url::Url::parse(&format!("http://{addr}/h")).unwrap();
    let started = Instant::now();
    let result = support::send(&client, url, &event, 1, Duration::from_millis(600)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "body reading is bounded by the timeout"
    );
    assert_eq!(result.status, Some(200));
    assert!(result.body_truncated);
    assert!(
        result.body_snippet.starts_with("first bytes;"),
        "{:?}",
        result.body_snippet
    );
    assert!(matches!(
        decide(&RetryPolicy::default(), &result, 1, Timestamp::now(), 0.5),
        Outcome::Delivered { status: 200, .. }
    ));
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = Recorder::ok().await;
    let location = target.url("/elsewhere").to_string();
    let server = Recorder::start(move |_| {
        (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location.clone())],
        )
            .into_response()
    })
    .await;
    let client = support::loopback_client();
    let event = support::event(SigningScheme::Pitchey);
    let result = support::send(&client, server.url("/h"), &event, 1, TIMEOUT).await;
    assert_eq!(result.status, Some(307));
    assert_eq!(result.error_kind(), Some(ErrorKind::Redirect));
    assert!(
        result
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("/elsewhere not followed"),
        "{result:?}"
    );
    assert!(target.received().is_empty());
    let outcome = decide(&RetryPolicy::default(), &result, 1, Timestamp::now(), 0.5);
    assert!(
        matches!(&outcome, Outcome::DeadLetter { reason, .. } if reason.contains("redirect")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn huge_body_is_capped() {
    let written = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&written);
    let addr = server::raw(move |mut stream| {
        let counter = Arc::clone(&counter);
        async move {
            server::write(
                &mut stream,
                b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n",
            )
            .await;
            let chunk = vec![b'x'; 64 * 1024];
            while counter.load(Ordering::Relaxed) < (1 << 30)
                && server::write(&mut stream, &chunk).await
            {
                counter.fetch_add(chunk.len(), Ordering::Relaxed);
            }
        }
    })
    .await;
    let client = support::loopback_client();
    let event = support::event(SigningScheme::Pitchey);
    let url = url::Url::parse(&format!("http://{addr}/h")).unwrap();
    let result = support::send(&client, url, &event, 1, Duration::from_secs(10)).await;
    assert_eq!(result.status, Some(200));
    assert_eq!(result.body_snippet.len(), 1024);
    assert!(result.body_truncated);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = written.load(Ordering::Relaxed);
    assert!(
        sent < 64 << 20,
        "the client stopped reading early, the server wrote {sent} bytes"
    );
}

/// A receiver answering with an endless body (gigabytes, as fast as it can): the client reads
/// the snippet and stops, long before the body would end; the status is kept.
#[tokio::test]
async fn an_endless_body_is_read_only_up_to_the_snippet() {
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = written.clone();
    let addr = server::raw(move |mut stream| {
        let counter = counter.clone();
        async move {
            let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n";
            if !server::write(&mut stream, head).await {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            // 10 GB announced; stops when the client goes away.
            for _ in 0..(10_000_000_000usize / chunk.len()) {
                if !server::write(&mut stream, &chunk).await {
                    return;
                }
                counter.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
            }
        }
    })
    .await;
    let client = support::loopback_client();
    let event = support::event(SigningScheme::Pitchey);
    let url = url::Url::parse(&format!("http://{addr}/h")).unwrap();
    let result = support::send(&client, url, &event, 1, Duration::from_secs(5)).await;
    assert_eq!(result.status, Some(200));
    assert!(result.body_truncated);
    assert!(
        result.body_snippet.len() <= 4096,
        "{}",
        result.body_snippet.len()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = written.load(std::sync::atomic::Ordering::Relaxed);
    // What the server pushed before the client hung up: socket buffers, not gigabytes.
    assert!(
        sent < 64 * 1024 * 1024,
        "the client kept reading: {sent} bytes"
    );
}
