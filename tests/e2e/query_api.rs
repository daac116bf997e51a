//! The aggregated query API through the real aggregation layer: the API server proxies
//! `kubectl get webhookdeliveries` to the dispatcher with its front-proxy client certificate, and
//! the dispatcher authorizes the user it names. Users with a token, with a client certificate,
//! and without rights; selectors, Table columns, `-o yaml`, pagination and `--watch`.
//!
//! An APIService is cluster-wide, so the tests that register one hold [`registration_lock`]: a
//! file lock, because nextest runs every test in its own process.
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use crate::dispatcher::Setup;
use crate::receiver::{Behavior, Receiver};
use crate::support::{free_port, kubectl, wait_for};

const T: Duration = Duration::from_secs(60);
pub const SERVICE: &str = "webhook-operator-query";

/// The query API of one test's dispatcher, registered with the API server.
pub struct QueryApi {
    pub setup: Setup,
    _certs: tempfile::TempDir,
    /// Where the dispatcher serves it (TLS).
    pub port: u16,
    /// Held while the test runs and released last (fields drop in order), after the dispatcher.
    _guard: std::fs::File,
}

/// Waits for, then holds, the lock on the one APIService registration (shared by every process
/// on this machine that runs these tests).
async fn registration_lock() -> std::fs::File {
    let path = std::env::temp_dir().join("webhook-operator-e2e-query-apiservice.lock");
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        file.lock()
            .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
        file
    })
    .await
    .unwrap()
}

impl Drop for QueryApi {
    /// Unregisters the APIService while the lock is still held (fields drop after this): left
    /// pointing at this test's stopped dispatcher, it makes discovery stale, and the namespace
    /// controller then deletes no namespace at all (`NamespaceDeletionDiscoveryFailure`), which
    /// stalls every later test and the demo on the same control plane.
    fn drop(&mut self) {
        let (ok, out) = kubectl(
            &[
                "delete",
                "apiservice",
                "v1alpha1.query.webhooks.pitchey.io",
                "--ignore-not-found",
            ],
            "",
        );
        if !ok {
            eprintln!("unregistering the query API failed: {out}");
        }
    }
}

impl QueryApi {
    /// A namespace with the controller and a dispatcher serving the query API, registered as
    /// `v1alpha1.query.webhooks.pitchey.io` (an ExternalName Service to 127.0.0.1: locally there
    /// are no Pods and no kube-proxy) and Available.
    pub async fn start(prefix: &str) -> QueryApi {
        let guard = registration_lock().await;
        let certs = tempfile::tempdir().unwrap();
        let port = free_port();
        let ns_placeholder = Setup::new_without_dispatcher(prefix).await;
        let ns = ns_placeholder.ns.name.clone();
        let ca_pem = serving_certificate(certs.path(), &format!("{SERVICE}.{ns}.svc"));
        let addr = format!("127.0.0.1:{port}");
        let cert = certs.path().join("tls.crt").display().to_string();
        let key = certs.path().join("tls.key").display().to_string();
        let mut setup = ns_placeholder;
        setup.start_dispatcher(&[
            "--query-api-addr",
            &addr,
            "--query-api-tls-cert-file",
            &cert,
            "--query-api-tls-key-file",
            &key,
        ]);
        register(&setup, port, &ca_pem).await;
        QueryApi {
            _guard: guard,
            setup,
            _certs: certs,
            port,
        }
    }

    pub fn ns(&self) -> &str {
        &self.setup.ns.name
    }
}

/// A CA and a serving certificate for `host` in `dir` (tls.crt, tls.key); the CA's PEM.
fn serving_certificate(dir: &std::path::Path, host: &str) -> String {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "query-api-test-ca");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![host.to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    ca.pem()
}

/// The ExternalName Service and the APIService; waits until kubectl reaches the group.
async fn register(setup: &Setup, port: u16, ca_pem: &str) {
    let ns = &setup.ns.name;
    let apply = PatchParams::apply("e2e").force();
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": ns},
        "spec": {"type": "ExternalName", "externalName": "127.0.0.1",
                 "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}
    }))
    .unwrap();
    setup
        .ns
        .api::<Service>()
        .patch(SERVICE, &apply, &Patch::Apply(&service))
        .await
        .unwrap();
    let gvk = GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService");
    let api: kube::Api<DynamicObject> =
        kube::Api::all_with(setup.ns.client.clone(), &ApiResource::from_gvk(&gvk));
    let api_service = json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v1alpha1.query.webhooks.pitchey.io"},
        "spec": {
            "group": "query.webhooks.pitchey.io", "version": "v1alpha1",
            "groupPriorityMinimum": 100, "versionPriority": 100,
            "service": {"namespace": ns, "name": SERVICE, "port": port},
            "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
        }
    });
    let object: DynamicObject = serde_json::from_value(api_service).unwrap();
    api.patch(
        "v1alpha1.query.webhooks.pitchey.io",
        &apply,
        &Patch::Apply(&object),
    )
    .await
    .unwrap();
    // Available, and this dispatcher answering (a previous test's registration may linger).
    let ns = ns.clone();
    wait_for("the query API Available through the aggregator", T, || {
        let ns = ns.clone();
        async move {
            let (ok, out) = kube(&["get", "webhookanalytics", "-n", &ns, "-o", "name"]).await;
            ok.then_some(()).or_else(|| {
                eprintln!("not yet: {out}");
                None
            })
        }
    })
    .await;
}

/// kubectl off the test's runtime.
pub async fn kube(args: &[&str]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kubectl(&args, "")
    })
    .await
    .unwrap()
}

/// A kubeconfig for a client-certificate user (scripts/control-plane.sh user-kubeconfig).
fn certificate_user(name: &str, group: &str) -> String {
    let out = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/control-plane.sh"
    ))
    .args(["user-kubeconfig", name, group])
    .output()
    .expect("scripts/control-plane.sh user-kubeconfig");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Lets `subject` (`User:name` or `Group:name`) read the query API in `ns`.
async fn grant_read(ns: &str, subject: &str) {
    let (kind, name) = subject.split_once(':').unwrap();
    let manifest = json!({
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "history-reader", "namespace": ns},
             "rules": [{"apiGroups": ["query.webhooks.pitchey.io"],
                        "resources": ["webhookdeliveries", "webhookdeadletters", "webhookanalytics"],
                        "verbs": ["get", "list", "watch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": format!("history-reader-{}", name.replace(':', "-")), "namespace": ns},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "history-reader"},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}]}
        ]
    })
    .to_string();
    let (ok, out) = tokio::task::spawn_blocking(move || kubectl(&["apply", "-f", "-"], &manifest))
        .await
        .unwrap();
    assert!(ok, "{out}");
}

/// Seeds a history: `crm` answers its first two requests 503, then delivers every event; `gone` answers 410, so
/// every event becomes a dead letter at its first attempt.
pub async fn seed(api: &QueryApi) -> (Receiver, Receiver) {
    let crm = Receiver::start(Behavior::FailFirst(2, 503)).await;
    let gone = Receiver::start(Behavior::Status(410)).await;
    let retry =
        json!({"retryPolicy": {"baseDelay": "100ms", "maxDelay": "200ms", "maxAttempts": 5}});
    api.setup.endpoint("crm", &crm, retry.clone()).await;
    api.setup.endpoint("gone", &gone, retry).await;
    for i in 0..3 {
        api.setup
            .event(
                &format!("signup-{i}"),
                "user.created",
                json!({"user": {"id": i}}),
            )
            .await;
    }
    let ns = api.ns().to_owned();
    wait_for("every delivery finished", T, || {
        let ns = ns.clone();
        async move {
            let (ok, out) = kube(&[
                "get",
                "webhookdeliveries",
                "-n",
                &ns,
                "-o",
                "name",
                "--field-selector",
                "outcome=Delivered",
            ])
            .await;
            (ok && out.lines().count() == 3).then_some(())
        }
    })
    .await;
    (crm, gone)
}

/// `who` (kubectl flags naming a user) gets 403 listing `resource` until `subject` is granted
/// reading, then lists `count` objects.
async fn forbidden_until_granted(
    ns: &str,
    who: &[&str],
    subject: &str,
    resource: &str,
    count: usize,
) {
    let list = [who, &["get", resource, "-n", ns, "-o", "name"]].concat();
    let (ok, out) = kube(&list).await;
    assert!(
        !ok && out.contains("Forbidden") && out.contains("cannot list"),
        "{subject}: {out}"
    );
    grant_read(ns, subject).await;
    let (ok, out) = kube(&list).await;
    assert!(ok && out.lines().count() == count, "{subject}: {out}");
}

#[tokio::test]
async fn kubectl_reads_history_through_the_aggregation_layer() {
    let api = QueryApi::start("query").await;
    let _receivers = seed(&api).await;
    let ns = api.ns().to_owned();

    // Discovery: kubectl knows the resources, their short names and the category.
    let (ok, out) = kube(&["api-resources", "--api-group", "query.webhooks.pitchey.io"]).await;
    assert!(ok, "{out}");
    for expected in [
        "webhookdeliveries",
        "whdel",
        "webhookdeadletters",
        "webhookanalytics",
    ] {
        assert!(out.contains(expected), "{expected}: {out}");
    }

    // Table output with the documented columns; the issue's own command.
    let (ok, out) = kube(&[
        "get",
        "webhookdeliveries",
        "-n",
        &ns,
        "--field-selector",
        "endpoint=crm,outcome=Failed",
    ])
    .await;
    assert!(ok, "{out}");
    let header = out.lines().next().unwrap();
    for column in [
        "NAME",
        "ENDPOINT",
        "EVENT TYPE",
        "ATTEMPT",
        "OUTCOME",
        "CODE",
        "LATENCY",
        "AGE",
    ] {
        assert!(header.contains(column), "{column}: {out}");
    }
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "two 503s before crm recovered: {out}");
    assert!(
        rows.iter()
            .all(|r| r.contains("Failed") && r.contains("503")),
        "{out}"
    );
    let (ok, wide) = kube(&[
        "get",
        "whdel",
        "-n",
        &ns,
        "-o",
        "wide",
        "--field-selector",
        "endpoint=gone",
    ])
    .await;
    assert!(
        ok && wide.lines().next().unwrap().contains("NEXT"),
        "{wide}"
    );
    assert_eq!(
        wide.lines()
            .skip(1)
            .filter(|l| l.contains("DeadLetter"))
            .count(),
        3,
        "{wide}"
    );

    // Label selectors, and the set-based form.
    let (ok, out) = kube(&[
        "get",
        "webhookdeliveries",
        "-n",
        &ns,
        "-o",
        "name",
        "-l",
        "webhooks.pitchey.io/endpoint in (gone),webhooks.pitchey.io/outcome=Failed",
    ])
    .await;
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");

    // -o yaml of one attempt, by name; a missing name is NotFound.
    let name = out
        .lines()
        .next()
        .unwrap()
        .trim()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let (ok, yaml) = kube(&["get", "webhookdelivery", &name, "-n", &ns, "-o", "yaml"]).await;
    assert!(ok, "{yaml}");
    for expected in [
        "kind: WebhookDelivery",
        "endpoint: gone",
        "outcome: Failed",
        "next: DeadLetter",
        "statusCode: 410",
        "eventType: user.created",
    ] {
        assert!(yaml.contains(expected), "{expected}: {yaml}");
    }
    let (ok, out) = kube(&["get", "webhookdelivery", "gone.999999.1", "-n", &ns]).await;
    assert!(!ok && out.contains("NotFound"), "{out}");
    let (ok, out) = kube(&[
        "get",
        "webhookdeliveries",
        "-n",
        &ns,
        "--field-selector",
        "spec.url=x",
    ])
    .await;
    assert!(!ok && out.contains("field label not supported"), "{out}");

    // Pagination: 8 attempts, 5 a page; kubectl follows metadata.continue.
    let (ok, all) = kube(&[
        "get",
        "webhookdeliveries",
        "-n",
        &ns,
        "-o",
        "name",
        "--chunk-size",
        "5",
    ])
    .await;
    assert!(ok, "{all}");
    let names: std::collections::HashSet<&str> = all.lines().collect();
    assert_eq!(
        names.len(),
        8,
        "crm: 2 failed + 3 delivered; gone: 3 dead letters: {all}"
    );
    let (ok, raw) = kube(&[
        "get",
        "--raw",
        &format!(
            "/apis/query.webhooks.pitchey.io/v1alpha1/namespaces/{ns}/webhookdeliveries?limit=5"
        ),
    ])
    .await;
    assert!(ok, "{raw}");
    let page: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    let next = page["metadata"]["continue"]
        .as_str()
        .expect("a continue token")
        .to_owned();
    let (ok, raw) = kube(&["get", "--raw", &format!(
        "/apis/query.webhooks.pitchey.io/v1alpha1/namespaces/{ns}/webhookdeliveries?limit=5&continue={next}"
    )]).await;
    assert!(ok, "{raw}");
    let second: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(second["items"].as_array().unwrap().len(), 3);
    assert_ne!(
        second["items"][0]["metadata"]["name"],
        page["items"][0]["metadata"]["name"]
    );

    // Dead letters and analytics.
    let (ok, out) = kube(&["get", "webhookdeadletters", "-n", &ns]).await;
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().skip(1).filter(|l| l.contains("gone")).count(),
        3,
        "{out}"
    );
    let (ok, out) = kube(&["get", "webhookanalytics", "crm", "-n", &ns, "-o", "json"]).await;
    assert!(ok, "{out}");
    let analytics: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(analytics["lastDay"]["attempts"], 5, "{out}");
    assert_eq!(analytics["lastDay"]["successes"], 3, "{out}");
    assert_eq!(analytics["hourly"].as_array().unwrap().len(), 24, "{out}");

    // A user with a token, and one with a client certificate (no token anywhere) through its
    // group: each forbidden until granted, then reading.
    forbidden_until_granted(
        &ns,
        &["--token", "test-publisher-token"],
        "User:publisher",
        "webhookdeliveries",
        8,
    )
    .await;
    let kubeconfig = certificate_user("cert-reader", "history-readers");
    forbidden_until_granted(
        &ns,
        &["--kubeconfig", &kubeconfig],
        "Group:history-readers",
        "webhookdeadletters",
        3,
    )
    .await;

    // A user without rights: 403 from kubectl, also for a watch and for one object.
    let nobody = ["--token", "test-nobody-token"];
    for args in [
        vec!["get", "webhookdeliveries", "-n", &ns],
        vec!["get", "webhookanalytics", "crm", "-n", &ns],
        vec![
            "get",
            "webhookdeliveries",
            "-n",
            &ns,
            "--watch",
            "--request-timeout",
            "5s",
        ],
    ] {
        let (ok, out) = kube(&[&nobody[..], &args[..]].concat()).await;
        assert!(!ok && out.contains("Forbidden"), "{args:?}: {out}");
    }

    // The dispatcher authorizes on its own too (the API server already did): straight to it with
    // the front proxy's certificate, a user without rights is refused by its SubjectAccessReview;
    // without the certificate, or without a user, nothing is answered.
    let pki =
        std::env::var("WO_CONTROL_PLANE_DIR").unwrap_or("/tmp/webhook-operator-cp".into()) + "/pki";
    let url = format!(
        "https://127.0.0.1:{}/apis/query.webhooks.pitchey.io/v1alpha1/namespaces/{ns}/webhookdeliveries",
        api.port
    );
    let direct = |cert: bool, user: Option<&str>| {
        let mut args = vec![
            "-sk".to_owned(),
            "-o".into(),
            "-".into(),
            "-w".into(),
            "\n%{http_code}".into(),
        ];
        if cert {
            args.extend([
                "--cert".into(),
                format!("{pki}/front-proxy-client.crt"),
                "--key".into(),
                format!("{pki}/front-proxy-client.key"),
            ]);
        }
        if let Some(user) = user {
            args.extend(["-H".into(), format!("X-Remote-User: {user}")]);
        }
        args.push(url.clone());
        let out = std::process::Command::new("curl")
            .args(&args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let refused = direct(true, Some("nobody"));
    assert!(
        refused.ends_with("403") && refused.contains(r#"User \"nobody\" cannot list"#),
        "{refused}"
    );
    assert!(direct(true, Some("publisher")).ends_with("200"));
    let anonymous = direct(false, Some("admin"));
    assert!(
        anonymous.ends_with("401") && anonymous.contains("front-proxy"),
        "{anonymous}"
    );
    assert!(direct(true, None).ends_with("401"));

    // Writes are refused: the API is read-only.
    let (ok, out) = kube(&["delete", "webhookdelivery", &name, "-n", &ns]).await;
    assert!(!ok, "{out}");
}

#[tokio::test]
async fn watch_streams_new_attempts() {
    let api = QueryApi::start("qwatch").await;
    let receiver = Receiver::start(Behavior::Ok).await;
    api.setup.endpoint("crm", &receiver, json!({})).await;
    api.setup.event("first", "user.created", json!({})).await;
    let ns = api.ns().to_owned();
    wait_for("the first attempt", T, || {
        let ns = ns.clone();
        async move {
            let (ok, out) = kube(&["get", "whdel", "-n", &ns, "-o", "name"]).await;
            (ok && out.lines().count() == 1).then_some(())
        }
    })
    .await;
    // kubectl get --watch: lists, then streams what comes after, as Table rows.
    let bin = String::from_utf8(
        std::process::Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/control-plane.sh"
        ))
        .arg("bin")
        .output()
        .unwrap()
        .stdout,
    )
    .unwrap();
    let mut watch = tokio::process::Command::new(format!("{}/kubectl", bin.trim()))
        .args([
            "get",
            "webhookdeliveries",
            "-n",
            &ns,
            "--watch",
            "--field-selector",
            "endpoint=crm",
        ])
        .env(
            "KUBECONFIG",
            std::env::var("WO_CONTROL_PLANE_DIR").unwrap_or("/tmp/webhook-operator-cp".into())
                + "/kubeconfig",
        )
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut seen = Vec::new();
    let mut published = false;
    let result = tokio::time::timeout(T, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push(line.clone());
            // The header and the first attempt arrive from the list; then publish a second.
            if !published && line.contains("crm.") {
                published = true;
                api.setup.event("second", "pitch.created", json!({})).await;
            }
            if line.contains("pitch.created") {
                return;
            }
        }
    })
    .await;
    assert!(
        result.is_ok(),
        "the second attempt never streamed: {seen:?}"
    );
    assert!(seen[0].contains("OUTCOME"), "{seen:?}");
    assert!(
        seen.iter()
            .any(|l| l.contains("pitch.created") && l.contains("Delivered")),
        "{seen:?}"
    );
}
