//! The `kubectl webhooks` plugin (the binary `kubectl-webhooks`) against the real control plane:
//! the controller, a dispatcher serving the query API through the aggregation layer
//! ([`QueryApi`]), and receivers on loopback. Every command, with the kubeconfig the tests use.
//! The fast tier (every command's exact output against a fake API server) is `tests/plugin.rs`.
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use webhook_operator::api::WebhookEndpoint;

use crate::query_api::{seed, QueryApi};
use crate::receiver::Behavior;
use crate::support::{kubeconfig_path, wait_for};

const T: Duration = Duration::from_secs(60);
const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-webhooks");

/// What one run of the plugin did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// `kubectl webhooks ARGS -n NS` with the tests' kubeconfig, off the test's runtime.
async fn plugin(ns: &str, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(PLUGIN);
    command
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(["-n", ns])
        .args(args)
        .env_remove("KUBECONFIG");
    let out = tokio::time::timeout(T * 3, command.output())
        .await
        .unwrap_or_else(|_| panic!("kubectl webhooks {args:?} did not finish"))
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs and asserts the exit code; the run.
async fn expect(ns: &str, code: i32, args: &[&str]) -> Run {
    let run = plugin(ns, args).await;
    assert_eq!(
        run.code, code,
        "kubectl webhooks {args:?}: exit {}\nstdout:\n{}\nstderr:\n{}",
        run.code, run.stdout, run.stderr
    );
    run
}

#[tokio::test]
async fn every_command_against_the_control_plane() {
    let api = QueryApi::start("plugin").await;
    // crm: two 503s, then every event delivered; gone: 410, so each event is a dead letter.
    let (crm, gone) = seed(&api).await;
    let ns = api.ns().to_owned();
    let ns = ns.as_str();

    // status: both Ready (exit 0), with the query API's analytics.
    let run = expect(ns, 0, &["status"]).await;
    let header = run.stdout.lines().next().unwrap_or_default();
    for column in [
        "NAME",
        "READY",
        "CIRCUIT",
        "RATE",
        "PENDING",
        "SUCCESS 24h",
        "LAST ERROR",
    ] {
        assert!(header.contains(column), "{column}: {}", run.stdout);
    }
    let crm_line = run.stdout.lines().find(|l| l.starts_with("crm ")).unwrap();
    assert!(
        crm_line.contains("True") && crm_line.contains("60.0%"),
        "{crm_line}"
    );
    assert!(run.stderr.is_empty(), "no fallback warning: {}", run.stderr);
    let rows = expect(ns, 0, &["status", "-o", "json"]).await.json();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    let all = expect(ns, 0, &["status", "-A"]).await;
    assert!(all.stdout.lines().next().unwrap().starts_with("NAMESPACE"));

    // describe: spec, conditions, the last attempts and the dead-letter count.
    let run = expect(ns, 0, &["describe", "gone"]).await;
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("  Ready ") && l.contains(" True ")),
        "{}",
        run.stdout
    );
    for expected in [
        "Name:             gone",
        "Dead Letters:     3 (kubectl webhooks deadletters gone)",
        "Recent Attempts (last 3):",
        "DeadLetter",
    ] {
        assert!(run.stdout.contains(expected), "{expected}: {}", run.stdout);
    }
    let run = expect(ns, 1, &["describe", "nope"]).await;
    assert!(
        run.stderr.contains("webhookendpoint \"nope\" not found"),
        "{}",
        run.stderr
    );

    // history: the two 503s; JSON is the API's list.
    let run = expect(ns, 0, &["history", "crm", "--outcome", "Failed"]).await;
    let rows: Vec<&str> = run.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{}", run.stdout);
    assert!(
        rows.iter()
            .all(|r| r.contains("503") && r.contains("Retry")),
        "{}",
        run.stdout
    );
    let list = expect(ns, 0, &["history", "gone", "-o", "json"])
        .await
        .json();
    assert_eq!(list["kind"], "WebhookDeliveryList");
    assert_eq!(list["items"].as_array().unwrap().len(), 3, "{list}");
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["next"] == "DeadLetter" && d["statusCode"] == 410));

    // deadletters: gone's three.
    let run = expect(ns, 0, &["deadletters"]).await;
    assert_eq!(run.stdout.lines().skip(1).count(), 3, "{}", run.stdout);
    let list = expect(ns, 0, &["deadletters", "gone", "-o", "json"])
        .await
        .json();
    assert_eq!(list["items"].as_array().unwrap().len(), 3, "{list}");
    assert!(list["items"][0]["data"].is_object(), "{list}");

    // analytics: the day's five attempts to crm, three successful, and the chart.
    let run = expect(ns, 0, &["analytics", "crm"]).await;
    assert!(run.stdout.contains("  attempts  "), "{}", run.stdout);
    let analytics = expect(ns, 0, &["analytics", "crm", "-o", "json"])
        .await
        .json();
    assert_eq!(analytics["lastDay"]["attempts"], 5, "{analytics}");
    assert_eq!(analytics["lastDay"]["successes"], 3, "{analytics}");

    // test: crm answers 2xx (exit 0) and gets the nonce; gone answers 410 (exit 3).
    let run = expect(ns, 0, &["test", "crm", "--timeout", "60s"]).await;
    assert!(
        run.stdout.contains("Test delivery to crm succeeded"),
        "{}",
        run.stdout
    );
    let nonce = run
        .stdout
        .split("(nonce ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_owned();
    wait_for("the test delivery at the receiver", T, || {
        let nonce = nonce.clone();
        let crm = crm.clone();
        async move {
            crm.received()
                .into_iter()
                .find(|r| r.event_type == "webhook.test" && r.body["data"]["nonce"] == nonce)
        }
    })
    .await;
    let run = expect(ns, 3, &["test", "gone", "-o", "json"]).await;
    assert_eq!(run.json()["statusCode"], 410, "{}", run.stdout);

    // tail: follows crm while an event is published with the plugin and waited for.
    let mut tail = tokio::process::Command::new(PLUGIN)
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(["-n", ns, "tail", "crm"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(tail.stdout.take().unwrap()).lines();
    let header = tokio::time::timeout(T, lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(header.unwrap_or_default().starts_with("TIME"));
    // Delivered to crm, dead-lettered by gone: PartiallyFailed, exit code 3.
    let run = expect(
        ns,
        3,
        &[
            "publish",
            "pitch.created",
            "--data",
            r#"{"pitch":{"id":7}}"#,
            "--wait",
        ],
    )
    .await;
    assert!(run.stdout.contains("PartiallyFailed"), "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("crm ") && l.contains("Delivered")),
        "{}",
        run.stdout
    );
    let streamed = tokio::time::timeout(T, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("pitch.created") {
                return line;
            }
        }
        String::new()
    })
    .await
    .expect("tail printed the new attempt");
    assert!(streamed.contains("Delivered"), "{streamed}");
    // Ctrl-C ends it with exit code 0.
    assert!(std::process::Command::new("kill")
        .args(["-INT", &tail.id().unwrap().to_string()])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(T, tail.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));

    // publish: the issue's `publish NS TYPE` form (-n may say the same), JSON out; gone never
    // delivers: exit 3.
    let event = expect(
        ns,
        3,
        &[
            "publish",
            ns,
            "user.created",
            "--data",
            "{}",
            "--wait",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(
        event.json()["status"]["phase"],
        "PartiallyFailed",
        "{}",
        event.stdout
    );

    // replay: gone's dead letters again; gone still answers 410, so they fail again: exit 3.
    let run = expect(ns, 3, &["replay", "gone", "--since", "1h", "--wait"]).await;
    assert!(run.stdout.contains("created"), "{}", run.stdout);
    assert!(
        run.stdout.lines().last().unwrap().starts_with("Complete"),
        "{}",
        run.stdout
    );
    // After the receiver recovers, a replay of them delivers: exit 0.
    gone.set_behavior(Behavior::Ok);
    expect(
        ns,
        0,
        &[
            "replay", "gone", "--since", "1h", "--types", "user.*", "--wait",
        ],
    )
    .await;

    // suspend and resume.
    let run = expect(ns, 0, &["suspend", "crm"]).await;
    assert!(run.stdout.contains("crm suspended"), "{}", run.stdout);
    let endpoints = api.setup.ns.api::<WebhookEndpoint>();
    assert!(endpoints.get("crm").await.unwrap().spec.suspend);
    let run = expect(ns, 0, &["status"]).await;
    assert!(run.stdout.contains("True,Suspended"), "{}", run.stdout);
    expect(ns, 0, &["resume", "crm"]).await;
    assert!(!endpoints.get("crm").await.unwrap().spec.suspend);

    // rotate-secret: the controller rotates the generated key.
    let before = api.setup.ns.signing_secret("crm").await;
    let run = expect(ns, 0, &["rotate-secret", "crm", "--wait"]).await;
    assert!(
        run.stdout.contains("Rotated crm's signing key"),
        "{}",
        run.stdout
    );
    assert_ne!(api.setup.ns.signing_secret("crm").await, before);

    // completion needs no cluster.
    let run = expect(ns, 0, &["completion", "bash"]).await;
    assert!(run.stdout.contains("complete -F _kubectl_webhooks"));

    // Usage errors exit 2 before any request.
    let run = expect(ns, 2, &["publish", "user.created", "--data", "[1]"]).await;
    assert!(
        run.stderr.contains("must be a JSON object"),
        "{}",
        run.stderr
    );
}
