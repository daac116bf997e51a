//! The `kubectl webhooks` plugin's commands against a fake API server holding a seeded history
//! (`plugin/seed.rs`), at a fixed time: each command's standard output and error, exit code and
//! the API requests it made are compared with its golden file in `tests/golden/plugin/`.
//!
//! After an intended change of the output, regenerate the files and review the diff:
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test --test plugin
//! git diff tests/golden/plugin/
//! ```
//!
//! The same commands against a real control plane and dispatcher: `tests/e2e/plugin.rs`.
#[path = "plugin/fake_api.rs"]
mod fake_api;
#[path = "plugin/seed.rs"]
mod seed;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use tokio::sync::Notify;
use webhook_operator::plugin::cli::Cli;
use webhook_operator::plugin::{self, Env};

use fake_api::World;

/// The namespace of the kubeconfig's context in these tests.
const CONTEXT_NAMESPACE: &str = "crm";

/// The plugin's environment in tests: the seed's clock, tokens `t1`, `t2`, …, a read a second
/// (on tokio's paused clock, which moves only while every task waits: the number of reads a
/// wait makes is exact), and an interrupt when the fake server holds a watch open.
fn env(interrupted: Arc<Notify>) -> Env {
    let counter = Arc::new(AtomicUsize::new(0));
    Env {
        now: Box::new(|| seed::NOW.parse().unwrap()),
        token: Box::new(move || format!("t{}", counter.fetch_add(1, Ordering::SeqCst) + 1)),
        poll: Duration::from_secs(1),
        interrupted: Box::new(move || {
            let interrupted = interrupted.clone();
            Box::pin(async move { interrupted.notified().await })
        }),
    }
}

/// Runs `kubectl webhooks ARGS` against `world`; the transcript the golden files hold.
async fn transcript(args: &[&str], world: World) -> String {
    let world = Arc::new(Mutex::new(world));
    let interrupted = Arc::new(Notify::new());
    let client = fake_api::serve(world.clone(), interrupted.clone());
    let env = env(interrupted);
    let mut out = Vec::new();
    let mut err = Vec::new();
    let exit = match Cli::try_parse_from(
        std::iter::once("kubectl-webhooks").chain(args.iter().copied()),
    ) {
        Ok(cli) => tokio::time::timeout(
            Duration::from_secs(20),
            plugin::run_with(cli, client, CONTEXT_NAMESPACE, &env, &mut out, &mut err),
        )
        .await
        .expect("the command finished") as i32,
        Err(error) => {
            err.extend(error.render().to_string().into_bytes());
            error.exit_code()
        }
    };
    let quoted: Vec<String> = args
        .iter()
        .map(|a| {
            if a.chars().any(|c| " {}[]\"*'".contains(c)) {
                format!("'{a}'")
            } else {
                (*a).to_owned()
            }
        })
        .collect();
    let mut text = format!("$ kubectl webhooks {}\n", quoted.join(" "));
    text.push_str(&String::from_utf8(out).expect("UTF-8 output"));
    let err = String::from_utf8(err).expect("UTF-8 errors");
    if !err.is_empty() {
        text.push_str("--- stderr\n");
        text.push_str(&err);
    }
    text.push_str(&format!("--- exit code {exit}\n--- requests\n"));
    for request in &world.lock().unwrap().seen {
        text.push_str(request);
        text.push('\n');
    }
    text
}

/// Compares the transcript of `args` with `tests/golden/plugin/NAME.txt` (or writes it with
/// `UPDATE_GOLDEN=1`).
async fn golden_with(name: &str, args: &[&str], change: impl FnOnce(&mut World)) {
    let mut world = seed::world();
    change(&mut world);
    let actual = transcript(args, world).await;
    let path = format!(
        "{}/tests/golden/plugin/{name}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("{path} is missing: run `UPDATE_GOLDEN=1 cargo test --test plugin` and review it")
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "the output differs from {path} at line {}:\n  expected: {:?}\n  actual:   {:?}\n\n\
             whole output:\n{actual}\nIf the change is intended: UPDATE_GOLDEN=1 cargo test --test plugin",
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first),
        );
    }
}

async fn golden(name: &str, args: &[&str]) {
    golden_with(name, args, |_| {}).await;
}

#[tokio::test(start_paused = true)]
async fn status_of_a_namespace() {
    golden("status", &["status"]).await;
}

#[tokio::test(start_paused = true)]
async fn status_of_every_namespace() {
    golden("status-all", &["status", "-A"]).await;
}

#[tokio::test(start_paused = true)]
async fn status_as_json() {
    golden("status-json", &["status", "-n", "shop", "-o", "json"]).await;
}

#[tokio::test(start_paused = true)]
async fn status_without_the_query_api() {
    golden_with("status-query-down", &["status"], |w| w.query_down = true).await;
}

#[tokio::test(start_paused = true)]
async fn status_of_an_empty_namespace() {
    golden("status-empty", &["status", "-n", "empty"]).await;
}

#[tokio::test(start_paused = true)]
async fn describe_a_healthy_endpoint() {
    golden("describe-crm", &["describe", "crm"]).await;
}

#[tokio::test(start_paused = true)]
async fn describe_a_failing_endpoint() {
    golden("describe-billing", &["describe", "billing"]).await;
}

#[tokio::test(start_paused = true)]
async fn describe_a_paused_endpoint() {
    golden("describe-orders", &["describe", "orders", "-n", "shop"]).await;
}

#[tokio::test(start_paused = true)]
async fn describe_without_the_query_api() {
    golden_with("describe-query-down", &["describe", "crm"], |w| {
        w.query_down = true
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn describe_a_missing_endpoint() {
    golden("describe-missing", &["describe", "crn"]).await;
}

#[tokio::test(start_paused = true)]
async fn history_of_an_endpoint() {
    golden("history", &["history", "crm"]).await;
}

#[tokio::test(start_paused = true)]
async fn history_of_failures_over_pages() {
    golden(
        "history-failed",
        &["history", "billing", "--outcome", "failed", "--limit", "2"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn history_follows_continue_through_filtered_pages() {
    // Pages of two: the first holds two failures, the second one failure and one delivery.
    golden_with(
        "history-pages",
        &["history", "billing", "--outcome", "Failed", "--limit", "3"],
        |w| w.page_size = Some(2),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn history_as_json() {
    golden(
        "history-json",
        &["history", "crm", "--type", "user.created", "-o", "json"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn history_without_the_query_api() {
    golden_with("history-query-down", &["history", "crm"], |w| {
        w.query_down = true
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn dead_letters_of_a_namespace() {
    golden("deadletters", &["deadletters"]).await;
}

#[tokio::test(start_paused = true)]
async fn dead_letters_of_every_namespace() {
    golden("deadletters-all", &["deadletters", "-A"]).await;
}

#[tokio::test(start_paused = true)]
async fn dead_letters_of_an_endpoint_as_json() {
    golden(
        "deadletters-json",
        &["deadletters", "orders", "-n", "shop", "-o", "json"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn no_dead_letters() {
    golden("deadletters-none", &["deadletters", "crm"]).await;
}

#[tokio::test(start_paused = true)]
async fn analytics_with_a_chart() {
    golden("analytics", &["analytics", "crm"]).await;
}

#[tokio::test(start_paused = true)]
async fn analytics_of_a_failing_endpoint() {
    golden("analytics-billing", &["analytics", "billing"]).await;
}

#[tokio::test(start_paused = true)]
async fn analytics_as_json() {
    golden(
        "analytics-json",
        &["analytics", "orders", "-n", "shop", "-o", "json"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn analytics_of_a_missing_endpoint() {
    golden("analytics-missing", &["analytics", "crn"]).await;
}

#[tokio::test(start_paused = true)]
async fn a_test_delivery_that_succeeds() {
    golden("test", &["test", "crm"]).await;
}

#[tokio::test(start_paused = true)]
async fn a_test_delivery_that_fails() {
    golden("test-failed", &["test", "billing", "-o", "json"]).await;
}

#[tokio::test(start_paused = true)]
async fn a_test_delivery_without_an_answer() {
    golden_with("test-timeout", &["test", "crm", "--timeout", "3s"], |w| {
        w.nobody_reacts = true
    })
    .await;
}

fn replay_statuses(world: &mut World, failed: i64) {
    let complete = |status: &str, reason: &str, message: &str| {
        serde_json::json!([{"type": "Complete", "status": status, "reason": reason,
            "message": message, "lastTransitionTime": seed::NOW}])
    };
    world.replay_statuses = vec![
        serde_json::Value::Null,
        serde_json::json!({"phase": "Running", "matched": 2, "redelivered": 0, "failed": 0,
            "conditions": complete("False", "Running", "2 deliveries outstanding")}),
        serde_json::json!({"phase": "Running", "matched": 2, "redelivered": 0, "failed": 0,
            "conditions": complete("False", "Running", "2 deliveries outstanding")}),
        serde_json::json!({"phase": "Running", "matched": 2, "redelivered": 1, "failed": 0,
            "conditions": complete("False", "Running", "1 deliveries outstanding")}),
        serde_json::json!({"phase": "Complete", "matched": 2, "redelivered": 2 - failed,
            "failed": failed, "startTime": seed::NOW, "completionTime": seed::NOW,
            "conditions": complete("True", "Complete",
                &format!("2 matched, {} redelivered, {failed} failed", 2 - failed))}),
    ];
}

#[tokio::test(start_paused = true)]
async fn a_replay_followed_to_completion() {
    golden_with(
        "replay",
        &[
            "replay",
            "billing",
            "--since",
            "2h",
            "--types",
            "payment.*",
            "--wait",
        ],
        |w| replay_statuses(w, 0),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_replay_whose_redeliveries_fail() {
    golden_with(
        "replay-failed",
        &["replay", "billing", "--since", "1d", "--wait", "-o", "json"],
        |w| replay_statuses(w, 1),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_replay_not_waited_for() {
    golden(
        "replay-nowait",
        &[
            "replay",
            "crm",
            "--from",
            "2026-01-15T08:00:00Z",
            "--to",
            "2026-01-15T09:00:00Z",
            "--outcomes",
            "DeadLettered,Delivered",
        ],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_replay_the_api_would_refuse() {
    golden(
        "replay-invalid",
        &["replay", "crm", "--since", "2h", "--types", "User"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn suspend_warns_of_gitops() {
    golden("suspend", &["suspend", "crm"]).await;
}

#[tokio::test(start_paused = true)]
async fn suspend_what_is_suspended() {
    golden("suspend-noop", &["suspend", "legacy"]).await;
}

#[tokio::test(start_paused = true)]
async fn resume() {
    golden("resume", &["resume", "legacy"]).await;
}

#[tokio::test(start_paused = true)]
async fn rotate_and_wait() {
    golden("rotate-secret", &["rotate-secret", "crm", "--wait"]).await;
}

#[tokio::test(start_paused = true)]
async fn rotate_a_key_you_manage() {
    golden(
        "rotate-secret-user-key",
        &["rotate-secret", "orders", "-n", "shop"],
    )
    .await;
}

fn event_statuses(world: &mut World) {
    world.event_statuses = vec![
        serde_json::json!({"phase": "Pending"}),
        serde_json::json!({"phase": "Delivering", "eventId": "evt_01KF0000000000000000001047",
            "deliveries": [{"endpoint": "crm", "state": "Pending", "attempts": 0}]}),
        serde_json::json!({"phase": "Delivered", "eventId": "evt_01KF0000000000000000001047",
            "finishedTime": seed::NOW,
            "conditions": [{"type": "Delivered", "status": "True", "reason": "AllDelivered",
                "message": "delivered to 1 endpoint", "lastTransitionTime": seed::NOW}],
            "deliveries": [{"endpoint": "crm", "state": "Delivered", "attempts": 1,
                "lastStatusCode": 200, "deliveredTime": seed::NOW}]}),
    ];
}

#[tokio::test(start_paused = true)]
async fn publish_and_wait() {
    golden_with(
        "publish",
        &[
            "publish",
            "shop",
            "user.created",
            "--data",
            r#"{"user":{"id":42}}"#,
            "--wait",
        ],
        event_statuses,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn publish_as_json_without_waiting() {
    golden(
        "publish-json",
        &[
            "publish",
            "pitch.created",
            "-n",
            "shop",
            "--id",
            "order-7",
            "-o",
            "json",
        ],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn publish_data_that_is_not_an_object() {
    golden(
        "publish-bad-data",
        &["publish", "user.created", "--data", "[1]"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn tail_follows_new_attempts_across_watches() {
    golden("tail", &["tail", "crm", "--last", "2"]).await;
}

#[tokio::test(start_paused = true)]
async fn tail_as_json_lines() {
    golden(
        "tail-json",
        &["tail", "billing", "--outcome", "Failed", "-o", "json"],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_usage_error_exits_2() {
    golden("usage", &["history", "crm", "--outcome", "Lost"]).await;
}

/// plugins/krew/webhooks.yaml: a krew Plugin for linux and darwin on amd64 and arm64, each
/// installing the binary cargo builds, with the placeholders a release fills in.
#[test]
fn the_krew_manifest_installs_the_binary_on_every_platform() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/plugins/krew/webhooks.yaml"
    ))
    .unwrap();
    let manifest: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(
        manifest["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(manifest["kind"], "Plugin");
    assert_eq!(manifest["metadata"]["name"], "webhooks", "kubectl webhooks");
    // The [[bin]] cargo builds.
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-webhooks"))
        .file_name()
        .unwrap();
    let mut seen = Vec::new();
    for platform in manifest["spec"]["platforms"].as_sequence().unwrap() {
        let labels = &platform["selector"]["matchLabels"];
        let (os, arch) = (
            labels["os"].as_str().unwrap(),
            labels["arch"].as_str().unwrap(),
        );
        assert_eq!(platform["bin"].as_str(), binary.to_str());
        assert_eq!(
            platform["uri"].as_str().unwrap(),
            format!("https://github.com/pitchey/webhook-operator/releases/download/vVERSION/kubectl-webhooks_vVERSION_{os}_{arch}.tar.gz")
        );
        assert_eq!(
            platform["sha256"].as_str().unwrap(),
            format!("SHA256_{}_{}", os.to_uppercase(), arch.to_uppercase())
        );
        seen.push(format!("{os}/{arch}"));
    }
    seen.sort();
    assert_eq!(
        seen,
        ["darwin/amd64", "darwin/arm64", "linux/amd64", "linux/arm64"]
    );
    assert!(text.contains("filled at release time"));
}
