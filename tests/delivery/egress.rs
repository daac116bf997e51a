//! Egress rules end to end: refused destinations never receive a request, are reported as
//! `Blocked` (not retried) and leave an audit line; loopback works only when allowed.
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use jiff::Timestamp;
use webhook_operator::delivery::egress::EgressPolicy;
use webhook_operator::delivery::outcome::{decide, ErrorKind, HttpResult, Outcome};
use webhook_operator::delivery::retry::RetryPolicy;
use webhook_operator::delivery::signing::SigningScheme;

use super::server::Recorder;
use super::support;

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

async fn send_to(policy: EgressPolicy, url: &str) -> HttpResult {
    let client = support::client_with(policy);
    let event = support::event(SigningScheme::Pitchey);
    support::send(&client, url::Url::parse(url).unwrap(), &event, 1, TIMEOUT).await
}

fn assert_blocked(result: &HttpResult, needle: &str) {
    assert_eq!(result.error_kind(), Some(ErrorKind::Blocked), "{result:?}");
    let message = &result.error.as_ref().unwrap().message;
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
    let outcome = decide(&RetryPolicy::default(), result, 1, Timestamp::now(), 0.5);
    assert!(matches!(outcome, Outcome::Blocked { .. }), "{outcome:?}");
}

fn http_only() -> EgressPolicy {
    EgressPolicy {
        allow_http: true,
        ..EgressPolicy::default()
    }
}

#[tokio::test]
async fn loopback_is_refused_by_default_and_allowed_explicitly() {
    let server = Recorder::ok().await;
    let port = server.addr.port();
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // Default policy: plain http is refused before anything else.
    assert_blocked(
        &send_to(
            EgressPolicy::default(),
            &format!("http://127.0.0.1:{port}/h?token=s3cret"),
        )
        .await,
        "plain http",
    );
    // https to loopback literals, in every spelling.
    for url in [
        format!("https://127.0.0.1:{port}/h"),
        format!("https://2130706433:{port}/h"),
        format!("https://0x7f.1:{port}/h"),
        format!("https://[::1]:{port}/h"),
        format!("https://[::ffff:127.0.0.1]:{port}/h"),
        format!("https://localhost:{port}/h"),
    ] {
        assert_blocked(&send_to(EgressPolicy::default(), &url).await, "loopback");
    }
    // http allowed, loopback still refused: literals, localhost, and names resolving to it.
    assert_blocked(
        &send_to(http_only(), &format!("http://127.0.0.1:{port}/h")).await,
        "127.0.0.1 is a loopback address",
    );
    assert_blocked(
        &send_to(http_only(), &format!("http://localhost:{port}/h")).await,
        "loopback",
    );
    assert_blocked(
        &send_to(http_only(), &format!("http://receiver.test:{port}/h")).await,
        "receiver.test resolves only to refused addresses: 127.0.0.1",
    );
    assert!(
        server.received().is_empty(),
        "no refused request reached the server"
    );

    let audit = capture.text();
    assert!(
        audit.contains("WARN audit:") && audit.contains("egress refused"),
        "{audit}"
    );
    assert!(!audit.contains("s3cret"), "queries are not logged: {audit}");

    // Explicitly allowed: the literal and a name resolving to it.
    let allowed = support::loopback_policy();
    assert_eq!(
        send_to(allowed.clone(), &format!("http://127.0.0.1:{port}/h"))
            .await
            .status,
        Some(200)
    );
    assert_eq!(
        send_to(allowed.clone(), &format!("http://receiver.test:{port}/h"))
            .await
            .status,
        Some(200)
    );
    assert_eq!(
        send_to(allowed, &format!("http://localhost:{port}/h"))
            .await
            .status,
        Some(200)
    );
    assert_eq!(server.received().len(), 3);
}

#[tokio::test]
async fn private_and_metadata_destinations_are_refused_even_with_loopback_allowed() {
    let allowed = support::loopback_policy();
    for (url, needle) in [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fd00:ec2::254]/", "unique local"),
        ("http://10.0.0.1/", "private"),
        ("http://100.64.0.1/", "CGNAT"),
        ("http://[::1]/", "loopback"),
        ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),
        (
            "http://rebind.test/",
            "rebind.test resolves only to refused addresses",
        ),
        ("ftp://127.0.0.1/", "scheme `ftp`"),
    ] {
        let started = std::time::Instant::now();
        let result = send_to(allowed.clone(), url).await;
        assert_blocked(&result, needle);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "refused without connecting: {url}"
        );
    }
}

#[tokio::test]
async fn deny_list_wins_over_allow_list() {
    let server = Recorder::ok().await;
    let mut policy = support::loopback_policy();
    policy.deny.push("127.0.0.1/32".parse::<IpNet>().unwrap());
    let result = send_to(
        policy,
        &format!("http://127.0.0.1:{}/h", server.addr.port()),
    )
    .await;
    assert_blocked(&result, "denied by the egress policy");
    assert!(server.received().is_empty());
}
