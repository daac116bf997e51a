//! The example receivers in Node, Python and Rust (examples/receivers/) against real deliveries
//! from the dispatcher, for both signing schemes: every event arrives verified, exactly once in
//! their logs, and a WebhookReplay that sends the same events again (same event ids) is
//! acknowledged with a 2xx but not processed twice.
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use serde_json::json;

use webhook_operator::api::conditions::{self, COMPLETE};

use crate::dispatcher::Setup;
use crate::support::{free_port, wait_for};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

struct Receiver {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a receiver on a free port, retrying on another port if it was taken in between.
fn start_listening(language: &str, secret: &str, scheme: &str) -> (Receiver, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut receiver = start(language, port, secret, scheme);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = receiver.child.try_wait() {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                std::thread::sleep(Duration::from_millis(200));
                if receiver.child.try_wait().ok().flatten().is_none() {
                    return (receiver, port);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = receiver.child.kill();
    }
    panic!("the {language} receiver could not listen on a free port");
}

fn start(language: &str, port: u16, secret: &str, scheme: &str) -> Receiver {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut command = match language {
        "node" => {
            let dir = format!("{ROOT}/examples/receivers/node");
            if !Path::new(&dir).join("node_modules").exists() {
                let status = Command::new("npm")
                    .args(["ci", "--silent", "--prefix", &dir])
                    .status()
                    .expect("npm (Node.js) is needed for the Node receiver");
                assert!(status.success(), "npm ci failed");
            }
            let mut c = Command::new("node");
            c.arg(format!("{dir}/server.js"));
            c
        }
        "python" => {
            let mut c = Command::new("python3");
            c.arg(format!("{ROOT}/examples/receivers/python/receiver.py"));
            c
        }
        "rust" => Command::new(rust_receiver()),
        other => panic!("no receiver in {other}"),
    };
    let child = command
        .env("PORT", port.to_string())
        .env("WEBHOOK_SECRET", secret)
        .env("WEBHOOK_SCHEME", scheme)
        .env("RECEIVED_LOG", log.path())
        .spawn()
        .expect("starting the receiver");
    Receiver { child, log }
}

/// The Rust receiver, the crate's `receiver` example (examples/receivers/rust). `cargo nextest run
/// --test e2e` builds no examples, so this asks cargo to build it next to the binary under test
/// (same target directory and profile; a no-op when it is up to date).
fn rust_receiver() -> PathBuf {
    let profile_dir = Path::new(env!("CARGO_BIN_EXE_webhook-operator"))
        .parent()
        .expect("the binary's directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let target_dir = profile_dir.parent().expect("the target directory");
    let mut cargo = Command::new(env!("CARGO"));
    // The variables cargo sets for this test (CARGO_MANIFEST_DIR, CARGO_PKG_*, …) describe the
    // test, not this build; inherited, they make cargo rebuild the crate it has already built
    // (about 30 s here) instead of finding the example up to date.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_TARGET_TMPDIR",
            "CARGO_PRIMARY_PACKAGE",
        ]
        .iter()
        .any(|prefix| key.starts_with(prefix))
        {
            cargo.env_remove(key.as_ref());
        }
    }
    let status = cargo
        .args([
            "build",
            "--quiet",
            "--example",
            "receiver",
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(ROOT)
        .status()
        .expect("running cargo build --example receiver");
    assert!(status.success(), "cargo build --example receiver failed");
    let binary = profile_dir
        .join("examples")
        .join(format!("receiver{}", std::env::consts::EXE_SUFFIX));
    assert!(binary.exists(), "{} was not built", binary.display());
    binary
}

fn logged(receiver: &Receiver) -> Vec<serde_json::Value> {
    std::fs::read_to_string(receiver.log.path())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

async fn check(language: &str, scheme: &str) {
    let setup = Setup::new(&format!("recv-{language}")).await;
    // A key we provide (signing.secretRef), so the receiver can listen before the endpoint exists.
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    );
    let key: Secret = serde_json::from_value(json!({
        "metadata": {"name": "app-key"}, "stringData": {"key": secret}
    }))
    .unwrap();
    setup
        .ns
        .api::<Secret>()
        .create(&PostParams::default(), &key)
        .await
        .unwrap();
    let (receiver, port) = start_listening(language, &secret, scheme);
    setup
        .endpoint_at(
            "app",
            &format!("http://127.0.0.1:{port}/webhooks/pitchey"),
            json!({
                "signing": {"scheme": scheme, "secretRef": {"name": "app-key", "key": "key"}},
                "retryPolicy": {"baseDelay": "200ms"}
            }),
        )
        .await;
    let types = ["user.created", "pitch.liked", "payment.failed"];
    for (i, event_type) in types.iter().enumerate() {
        setup
            .event(&format!("e{i}"), event_type, json!({"n": i}))
            .await;
    }
    let lines = wait_for(
        &format!("{language}/{scheme} to log 3 events"),
        Duration::from_secs(60),
        || async {
            let lines = logged(&receiver);
            (lines.len() >= 3).then_some(lines)
        },
    )
    .await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let mut got: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["event_type"].as_str())
        .collect();
    got.sort();
    assert_eq!(got, ["payment.failed", "pitch.liked", "user.created"]);
    assert!(lines.iter().all(|l| l["event_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("evt_"))));

    // The dispatcher sends the three events again with their event ids: the receiver answers
    // 2xx (the replay counts them redelivered) and logs nothing new.
    let done = setup.replay("again", "app", &["Delivered"]).await;
    assert_eq!(
        (done.matched, done.redelivered, done.failed),
        (3, 3, 0),
        "{language}/{scheme}: the duplicates were not all acknowledged"
    );
    assert!(conditions::is_true(&done.conditions, COMPLETE));
    assert_eq!(
        logged(&receiver),
        lines,
        "{language}/{scheme} processed a duplicate event id"
    );
}

#[tokio::test]
async fn node_receiver_verifies_pitchey_deliveries() {
    check("node", "pitchey").await;
}

#[tokio::test]
async fn node_receiver_verifies_standard_webhooks_deliveries() {
    check("node", "standard-webhooks").await;
}

#[tokio::test]
async fn python_receiver_verifies_pitchey_deliveries() {
    check("python", "pitchey").await;
}

#[tokio::test]
async fn python_receiver_verifies_standard_webhooks_deliveries() {
    check("python", "standard-webhooks").await;
}

#[tokio::test]
async fn rust_receiver_verifies_pitchey_deliveries() {
    check("rust", "pitchey").await;
}

#[tokio::test]
async fn rust_receiver_verifies_standard_webhooks_deliveries() {
    check("rust", "standard-webhooks").await;
}
