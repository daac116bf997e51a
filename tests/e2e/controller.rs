//! The controller against the real control plane.
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use webhook_operator::api::conditions::{self, READY};
use webhook_operator::api::policy::{EffectivePolicy, POLICY_KEY};
use webhook_operator::api::{WebhookEndpoint, WebhookSubscription};

use crate::support::{free_port, metric, wait_for, Process, TestNamespace};

const T: Duration = Duration::from_secs(30);

fn endpoint(name: &str, spec: serde_json::Value) -> WebhookEndpoint {
    serde_json::from_value(json!({
        "apiVersion": "webhooks.pitchey.io/v1alpha1",
        "kind": "WebhookEndpoint",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

async fn create_endpoint(ns: &TestNamespace, name: &str, spec: serde_json::Value) {
    ns.api::<WebhookEndpoint>()
        .create(&PostParams::default(), &endpoint(name, spec))
        .await
        .expect("creating endpoint");
}

/// Waits until the endpoint's Ready condition has `status` and returns its reason and message.
async fn ready(ns: &TestNamespace, name: &str, status: &str) -> (String, String) {
    let api = ns.api::<WebhookEndpoint>();
    wait_for(&format!("{name} Ready={status}"), T, || async {
        let endpoint = api.get(name).await.ok()?;
        let conditions = endpoint.status?.conditions;
        let ready = conditions::find(&conditions, READY)?;
        (format!("{:?}", ready.status) == status)
            .then(|| (ready.reason.clone(), ready.message.clone()))
    })
    .await
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// Reasons of the Kubernetes Events published about endpoint `name` so far.
async fn event_reasons(ns: &TestNamespace, name: &str) -> Option<Vec<String>> {
    let events = ns.endpoint_events(name).await.ok()?;
    Some(events.into_iter().filter_map(|e| e.reason).collect())
}

/// Waits until Kubernetes Events with each of `reasons` were published about endpoint `name`.
async fn wait_for_events(ns: &TestNamespace, name: &str, reasons: &[&str]) {
    wait_for(&format!("Events {reasons:?} about {name}"), T, || async {
        let seen = event_reasons(ns, name).await?;
        reasons
            .iter()
            .all(|r| seen.iter().any(|s| s == r))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn endpoint_children_are_provisioned_owned_and_garbage_collected() {
    let ns = TestNamespace::new("children").await;
    let _controller = Process::controller(&ns.name, "a", &[]);
    create_endpoint(&ns, "crm", json!({"url": "https://crm.example.com/hook"})).await;
    let (reason, _) = ready(&ns, "crm", "True").await;
    assert_eq!(reason, "Provisioned");

    let secret = ns.api::<Secret>().get("crm-signing").await.unwrap();
    let key = secret_value(&secret, "secret").unwrap();
    assert!(key.starts_with("whsec_") && key.len() == 6 + 44, "{key}");
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("WebhookEndpoint", "crm")
    );

    let config_map = ns.api::<ConfigMap>().get("crm-delivery").await.unwrap();
    let policy =
        EffectivePolicy::from_config_json(&config_map.data.as_ref().unwrap()[POLICY_KEY]).unwrap();
    assert_eq!(policy.retry.base_delay_ms, 1000);
    assert_eq!(policy.rate_limit.requests_per_minute, 100);
    assert_eq!(policy.signing.secret_name, "crm-signing");
    assert!(config_map.metadata.owner_references.is_some());
    wait_for_events(&ns, "crm", &["SecretProvisioned", "ConfigMapProvisioned"]).await;

    // The status names the Secret but never holds key material.
    let status = ns
        .api::<WebhookEndpoint>()
        .get("crm")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.signing.as_ref().unwrap().secret_name, "crm-signing");
    assert!(!serde_json::to_string(&status).unwrap().contains(&key));

    // A second reconcile never regenerates the key.
    ns.api::<WebhookEndpoint>()
        .patch(
            "crm",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"timeoutSeconds": 10}})),
        )
        .await
        .unwrap();
    wait_for("the new timeout in the ConfigMap", T, || async {
        let cm = ns.api::<ConfigMap>().get("crm-delivery").await.ok()?;
        cm.data?[POLICY_KEY]
            .contains("\"timeoutSeconds\": 10")
            .then_some(())
    })
    .await;
    let again = ns.api::<Secret>().get("crm-signing").await.unwrap();
    assert_eq!(secret_value(&again, "secret").unwrap(), key);

    ns.api::<WebhookEndpoint>()
        .delete("crm", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "Secret and ConfigMap garbage-collected",
        Duration::from_secs(60),
        || async {
            let secret = ns.api::<Secret>().get_opt("crm-signing").await.ok()?;
            let cm = ns.api::<ConfigMap>().get_opt("crm-delivery").await.ok()?;
            (secret.is_none() && cm.is_none()).then_some(())
        },
    )
    .await;
    // The spec edit updated the ConfigMap: that is no hand edit to report.
    let reasons = event_reasons(&ns, "crm").await.unwrap();
    assert!(
        !reasons.iter().any(|r| r == "ConfigMapRestored"),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn rotation_keeps_the_previous_key_for_the_grace_period_then_drops_it() {
    let ns = TestNamespace::new("rotation").await;
    let _controller = Process::controller(&ns.name, "a", &[]);
    create_endpoint(
        &ns,
        "crm",
        json!({"url": "https://crm.example.com/hook", "signing": {"rotationGracePeriod": "4s"}}),
    )
    .await;
    ready(&ns, "crm", "True").await;
    let secrets = ns.api::<Secret>();
    let first = secret_value(&secrets.get("crm-signing").await.unwrap(), "secret").unwrap();

    ns.api::<WebhookEndpoint>()
        .patch(
            "crm",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"webhooks.pitchey.io/rotate-secret": "2026-11-29"}}})),
        )
        .await
        .unwrap();
    let rotated = wait_for("a rotated key", T, || async {
        let secret = secrets.get("crm-signing").await.ok()?;
        let current = secret_value(&secret, "secret")?;
        (current != first).then_some(secret)
    })
    .await;
    assert_eq!(
        secret_value(&rotated, "previous").as_deref(),
        Some(first.as_str())
    );
    let status = wait_for("rotation in status", T, || async {
        let signing = ns
            .api::<WebhookEndpoint>()
            .get("crm")
            .await
            .ok()?
            .status?
            .signing?;
        signing.last_rotation_time.is_some().then_some(signing)
    })
    .await;
    assert!(status.previous_key_expiry_time.is_some());
    wait_for_events(&ns, "crm", &["SecretRotated"]).await;

    wait_for(
        "the previous key dropped after the grace period",
        T,
        || async {
            let secret = secrets.get("crm-signing").await.ok()?;
            secret_value(&secret, "previous").is_none().then_some(())
        },
    )
    .await;
    let after = secrets.get("crm-signing").await.unwrap();
    assert_ne!(secret_value(&after, "secret").unwrap(), first);
}

#[tokio::test]
async fn invalid_spec_is_reported_with_the_field_and_recovers_when_fixed() {
    let ns = TestNamespace::new("invalid").await;
    let _controller = Process::controller(&ns.name, "a", &[]);
    // What the schema and CEL rules leave to the controller: a custom header the dispatcher sets
    // itself (map keys of unbounded length cannot be checked by a CEL rule within the server's cost
    // budget). Rules the server enforces are tested in server_validation.rs.
    create_endpoint(
        &ns,
        "bad",
        json!({"url": "https://x.example.com/", "headers": {"X-Webhook-Signature": "forged"}}),
    )
    .await;
    let (reason, message) = ready(&ns, "bad", "False").await;
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains("spec.headers[X-Webhook-Signature]"),
        "{message}"
    );
    wait_for_events(&ns, "bad", &["InvalidSpec"]).await;
    // Nothing is provisioned for an invalid spec.
    assert!(ns
        .api::<Secret>()
        .get_opt("bad-signing")
        .await
        .unwrap()
        .is_none());

    ns.api::<WebhookEndpoint>()
        .patch(
            "bad",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"headers": {"X-Webhook-Signature": null, "X-Team": "crm"}}}),
            ),
        )
        .await
        .unwrap();
    ready(&ns, "bad", "True").await;
}

#[tokio::test]
async fn user_provided_secret_is_used_as_is_and_awaited() {
    let ns = TestNamespace::new("usersecret").await;
    let _controller = Process::controller(&ns.name, "a", &[]);
    create_endpoint(
        &ns,
        "mail",
        json!({"url": "https://mail.example.com/", "signing": {"secretRef": {"name": "mail-key", "key": "token"}}}),
    )
    .await;
    let (reason, message) = ready(&ns, "mail", "False").await;
    assert_eq!(reason, "SecretNotFound");
    assert!(message.contains("mail-key"), "{message}");

    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "mail-key"},
        "stringData": {"token": "my-own-secret"}
    }))
    .unwrap();
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    ready(&ns, "mail", "True").await;
    let cm = ns.api::<ConfigMap>().get("mail-delivery").await.unwrap();
    let policy = EffectivePolicy::from_config_json(&cm.data.unwrap()[POLICY_KEY]).unwrap();
    assert_eq!(
        (
            policy.signing.secret_name.as_str(),
            policy.signing.secret_key.as_str()
        ),
        ("mail-key", "token")
    );
    assert!(ns
        .api::<Secret>()
        .get_opt("mail-signing")
        .await
        .unwrap()
        .is_none());
    let after = ns.api::<Secret>().get("mail-key").await.unwrap();
    assert_eq!(
        secret_value(&after, "token").as_deref(),
        Some("my-own-secret")
    );
}

#[tokio::test]
async fn hand_edited_config_map_is_restored() {
    let ns = TestNamespace::new("drift").await;
    let _controller = Process::controller(&ns.name, "a", &[]);
    create_endpoint(&ns, "crm", json!({"url": "https://crm.example.com/"})).await;
    ready(&ns, "crm", "True").await;
    let cms = ns.api::<ConfigMap>();
    let original = cms.get("crm-delivery").await.unwrap().data.unwrap()[POLICY_KEY].clone();
    cms.patch(
        "crm-delivery",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {POLICY_KEY: "{\"tampered\": true}"}})),
    )
    .await
    .unwrap();
    wait_for("the ConfigMap restored", T, || async {
        let data = cms.get("crm-delivery").await.ok()?.data?;
        (data[POLICY_KEY] == original).then_some(())
    })
    .await;
    wait_for_events(&ns, "crm", &["ConfigMapRestored"]).await;
}

async fn subscription_endpoints(ns: &TestNamespace, name: &str, want: &[&str]) -> String {
    let api = ns.api::<WebhookSubscription>();
    wait_for(&format!("{name} to resolve to {want:?}"), T, || async {
        let status = api.get(name).await.ok()?.status?;
        let ready = conditions::find(&status.conditions, READY)?;
        (status.endpoints == want).then(|| ready.reason.clone())
    })
    .await
}

#[tokio::test]
async fn subscription_resolution_follows_label_changes() {
    let ns = TestNamespace::new("labels").await;
    let _controller = Process::controller(&ns.name, "a", &[]);
    create_endpoint(&ns, "a", json!({"url": "https://a.example.com/"})).await;
    create_endpoint(&ns, "b", json!({"url": "https://b.example.com/"})).await;
    let label = |name: &str, value: Option<&str>| {
        let api = ns.api::<WebhookEndpoint>();
        let name = name.to_string();
        let patch = json!({"metadata": {"labels": {"team": value}}});
        async move {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap()
        }
    };
    label("a", Some("crm")).await;
    let subscription: WebhookSubscription = serde_json::from_value(json!({
        "apiVersion": "webhooks.pitchey.io/v1alpha1",
        "kind": "WebhookSubscription",
        "metadata": {"name": "crm-events"},
        "spec": {"endpointSelector": {"matchLabels": {"team": "crm"}}, "eventTypes": ["user.*"]}
    }))
    .unwrap();
    ns.api::<WebhookSubscription>()
        .create(&PostParams::default(), &subscription)
        .await
        .unwrap();
    assert_eq!(
        subscription_endpoints(&ns, "crm-events", &["a"]).await,
        "Resolved"
    );
    label("b", Some("crm")).await;
    subscription_endpoints(&ns, "crm-events", &["a", "b"]).await;
    label("a", None).await;
    subscription_endpoints(&ns, "crm-events", &["b"]).await;
    ns.api::<WebhookEndpoint>()
        .delete("b", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        subscription_endpoints(&ns, "crm-events", &[]).await,
        "EndpointNotFound"
    );
}

async fn lease_holder(ns: &TestNamespace) -> Option<String> {
    let lease = ns
        .api::<Lease>()
        .get_opt("webhook-operator-controller")
        .await
        .ok()??;
    lease.spec?.holder_identity
}

#[tokio::test]
async fn a_second_controller_takes_over_when_the_leader_stops() {
    let ns = TestNamespace::new("leader").await;
    let lease = ["--lease-duration-seconds", "4"];
    let mut first = Process::controller(&ns.name, "first", &lease);
    wait_for("first to lead", T, || async {
        (lease_holder(&ns).await? == "first").then_some(())
    })
    .await;
    let mut second = Process::controller(&ns.name, "second", &lease);
    create_endpoint(&ns, "one", json!({"url": "https://one.example.com/"})).await;
    ready(&ns, "one", "True").await;
    // The follower stays a follower while the leader renews.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(lease_holder(&ns).await.as_deref(), Some("first"));

    // A crash: the Lease expires and the follower takes over.
    first.kill();
    wait_for("second to lead", T, || async {
        (lease_holder(&ns).await? == "second").then_some(())
    })
    .await;
    create_endpoint(&ns, "two", json!({"url": "https://two.example.com/"})).await;
    ready(&ns, "two", "True").await;

    // A graceful stop releases the Lease at once.
    second.terminate();
    let released = lease_holder(&ns).await;
    assert_eq!(released, None, "SIGTERM should release the Lease");
}

/// A controller started with `--log-json` and its metrics server on a port chosen here.
struct JsonController {
    process: Process,
    base: String,
    log: std::path::PathBuf,
}

impl JsonController {
    /// Starts it for `ns` and waits until /healthz answers; a port another process took in
    /// between makes ours exit, and the start is retried on a new port.
    async fn start(ns: &TestNamespace, identity: &str) -> Self {
        let http = webhook_operator::runtime::tls::http_client();
        for _ in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port());
            let tag = format!("{}-{identity}-json", ns.name);
            let mut process = Process::spawn(
                &tag,
                &[
                    "controller",
                    "--log-json",
                    "--watch-namespace",
                    &ns.name,
                    "--lease-namespace",
                    &ns.name,
                    "--identity",
                    identity,
                    "--metrics-addr",
                    &addr,
                    "--lease-duration-seconds",
                    "4",
                ],
            );
            // Where Process::spawn writes the process's stdout and stderr.
            let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join("e2e-logs")
                .join(format!("{tag}.log"));
            let base = format!("http://{addr}");
            let deadline = std::time::Instant::now() + T;
            while std::time::Instant::now() < deadline {
                if matches!(process.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                let healthz = http.get(format!("{base}/healthz")).send().await;
                if healthz.is_ok_and(|r| r.status() == 200) {
                    // Make sure the answer was ours: a process that lost the port exits at once.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if matches!(process.child.try_wait(), Ok(None)) {
                        return Self { process, base, log };
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("the controller could not serve /healthz on a free port five times");
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// Stops it with SIGTERM and returns what it logged.
    fn stop(mut self) -> String {
        self.process.terminate();
        std::fs::read_to_string(&self.log).unwrap()
    }
}

/// Every line is a JSON object with a level and a message; returns the messages.
fn json_log_messages(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "nothing was logged");
    lines
        .iter()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            let level = value["level"].as_str();
            assert!(
                matches!(level, Some("TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR")),
                "no level: {line}"
            );
            value["message"]
                .as_str()
                .unwrap_or_else(|| panic!("no message: {line}"))
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn health_readiness_metrics_and_json_logs() {
    let ns = TestNamespace::new("ops").await;
    let leader = JsonController::start(&ns, "leader").await;
    assert_eq!(leader.get("/healthz").await, (200, "ok".to_string()));
    wait_for("leader to lead", T, || async {
        (lease_holder(&ns).await? == "leader").then_some(())
    })
    .await;
    assert_eq!(leader.get("/readyz").await.0, 200);

    create_endpoint(&ns, "crm", json!({"url": "https://crm.example.com/hook"})).await;
    ready(&ns, "crm", "True").await;
    let reconciles = wait_for("the endpoint reconcile counted", T, || async {
        let (_, page) = leader.get("/metrics").await;
        let labels = [("controller", "endpoint"), ("result", "ok")];
        metric(
            &page,
            "webhook_operator_controller_reconciles_total",
            &labels,
        )
        .filter(|v| *v >= 1.0)
        .map(|v| (v, page))
    })
    .await;
    let (count, page) = reconciles;
    assert!(count >= 1.0, "{page}");
    assert_eq!(
        metric(&page, "webhook_operator_controller_leader", &[]),
        Some(1.0),
        "{page}"
    );
    assert!(
        metric(
            &page,
            "webhook_operator_controller_reconcile_duration_seconds_count",
            &[("controller", "endpoint")]
        )
        .is_some_and(|v| v >= 1.0),
        "{page}"
    );

    // A standby is ready too: readiness means "healthy and doing its job", and a standby's job
    // is to wait for the Lease. It reconciles nothing meanwhile.
    let standby = JsonController::start(&ns, "standby").await;
    wait_for("the standby ready", T, || async {
        (standby.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let (_, standby_page) = standby.get("/metrics").await;
    assert_eq!(
        metric(&standby_page, "webhook_operator_controller_leader", &[]),
        Some(0.0),
        "{standby_page}"
    );
    assert_eq!(
        metric(
            &standby_page,
            "webhook_operator_controller_reconciles_total",
            &[("controller", "endpoint")]
        ),
        None,
        "{standby_page}"
    );
    assert_eq!(lease_holder(&ns).await.as_deref(), Some("leader"));

    let standby_messages = json_log_messages(&standby.stop());
    assert!(
        standby_messages
            .iter()
            .any(|m| m == "waiting for leadership"),
        "{standby_messages:?}"
    );
    let messages = json_log_messages(&leader.stop());
    assert!(
        messages
            .iter()
            .any(|m| m == "reconciling WebhookEndpoints and WebhookSubscriptions"),
        "{messages:?}"
    );
}
