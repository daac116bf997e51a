//! Test harness: the local control plane, a namespace per test, operator subprocesses.
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Starts the control plane once per test process (or reuses a running one) and installs the CRDs.
pub fn kubeconfig_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let status = Command::new(format!("{ROOT}/scripts/control-plane.sh"))
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .expect("running scripts/control-plane.sh");
        assert!(status.success(), "scripts/control-plane.sh start failed");
        let dir = std::env::var("WO_CONTROL_PLANE_DIR")
            .unwrap_or_else(|_| "/tmp/webhook-operator-cp".to_string());
        PathBuf::from(dir).join("kubeconfig")
    })
}

/// Runs the control plane's own kubectl (the same release as the API server) with `args`,
/// `stdin` fed to it; returns whether it succeeded and what it printed (stdout, then stderr).
pub fn kubectl(args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    static BIN: OnceLock<String> = OnceLock::new();
    let bin = BIN.get_or_init(|| {
        let out = Command::new(format!("{ROOT}/scripts/control-plane.sh"))
            .arg("bin")
            .output()
            .expect("running scripts/control-plane.sh bin");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    });
    let mut child = Command::new(format!("{bin}/kubectl"))
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub async fn client() -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("reading the kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// Creates or updates the CRDs from the types (what `crdgen` writes).
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in webhook_operator::api::crds::all() {
        let name = crd.metadata.name.clone().unwrap();
        match api.get_opt(&name).await.unwrap() {
            None => match api.create(&PostParams::default(), &crd).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => panic!("creating CRD {name}: {e}"),
            },
            Some(existing) => {
                let mut updated = crd.clone();
                updated.metadata.resource_version = existing.metadata.resource_version;
                // A concurrent test process may have updated it first; that is fine.
                let _ = api.replace(&name, &PostParams::default(), &updated).await;
            }
        }
    }
    // Wait until the API server serves every kind.
    wait_for("CRDs established", Duration::from_secs(30), || async {
        let crds = api.list(&Default::default()).await.ok()?;
        let established = crds
            .items
            .iter()
            .filter(|c| c.spec.group == "webhooks.pitchey.io")
            .filter(|c| {
                c.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
            })
            .count();
        (established == 4).then_some(())
    })
    .await;
}

/// A fresh namespace, deleted when dropped.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    pub async fn new(prefix: &str) -> Self {
        let client = client().await;
        install_crds(&client).await;
        let name = format!(
            "{prefix}-{}",
            &ulid::Ulid::new().to_string().to_lowercase()[16..]
        );
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}
        }))
        .unwrap();
        api.create(&PostParams::default(), &ns)
            .await
            .expect("creating namespace");
        Self { name, client }
    }

    /// Waits for the signing key the controller generates for endpoint `name`.
    pub async fn signing_secret(&self, name: &str) -> String {
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = self.api();
        wait_for("the signing Secret", Duration::from_secs(60), || async {
            let secret = secrets.get_opt(&format!("{name}-signing")).await.ok()??;
            let bytes = secret.data?.get("secret")?.0.clone();
            String::from_utf8(bytes).ok()
        })
        .await
    }

    /// The Kubernetes Events about the WebhookEndpoint `name`: events.k8s.io/v1, as the
    /// controller's and the dispatcher's recorder (kube-runtime) write them, naming it in
    /// `regarding`.
    pub async fn endpoint_events(&self, name: &str) -> kube::Result<Vec<EventV1>> {
        let list = self.api::<EventV1>().list(&Default::default()).await?;
        Ok(list
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("WebhookEndpoint") && r.name.as_deref() == Some(name)
                })
            })
            .collect())
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // The test's runtime is shutting down: delete on a thread of our own, and wait for it,
        // so a reused control plane does not collect test namespaces.
        let name = self.name.clone();
        let deleted = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                // A client of this runtime: the test's one stops with the test's runtime.
                let api: Api<Namespace> = Api::all(client().await);
                let params = DeleteParams::default();
                let delete = api.delete(&name, &params);
                let _ = tokio::time::timeout(Duration::from_secs(5), delete).await;
            });
        });
        let _ = deleted.join();
    }
}

/// An operator subprocess, killed when dropped.
pub struct Process {
    pub child: Child,
}

impl Process {
    pub fn spawn(name: &str, args: &[&str]) -> Self {
        let log_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-logs");
        std::fs::create_dir_all(&log_dir).unwrap();
        let log = std::fs::File::create(log_dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_webhook-operator"))
            .args(args)
            .env("KUBECONFIG", kubeconfig_path())
            .env("RUST_LOG", "info,kube=warn,kube_client=error")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting webhook-operator");
        Self { child }
    }

    /// The controller, reconciling only `namespace`, with its Lease there too.
    pub fn controller(namespace: &str, identity: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "controller",
            "--watch-namespace",
            namespace,
            "--lease-namespace",
            namespace,
            "--identity",
            identity,
            "--metrics-addr",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        Self::spawn(&format!("{namespace}-{identity}"), &args)
    }

    /// The dispatcher for `namespace`, with its store at `store`, allowed to deliver to loopback
    /// over plain HTTP. Returns the process and its ingest address.
    pub fn dispatcher(namespace: &str, store: &std::path::Path, tag: &str) -> (Self, String) {
        let (process, listen, _) = Self::dispatcher_with_metrics(namespace, store, tag);
        (process, listen)
    }

    /// Like [`Process::dispatcher`], also returning the metrics address.
    pub fn dispatcher_with_metrics(
        namespace: &str,
        store: &std::path::Path,
        tag: &str,
    ) -> (Self, String, String) {
        let store = store.display().to_string();
        Self::dispatcher_with(namespace, tag, &["--store-path", &store])
    }

    /// A dispatcher for `namespace` with the given store flags, allowed to deliver to loopback
    /// over plain HTTP. Returns the process, its ingest and its metrics address. Ports are
    /// picked free and the start is retried on new ones if another process took them in between.
    pub fn dispatcher_with(
        namespace: &str,
        tag: &str,
        store_args: &[&str],
    ) -> (Self, String, String) {
        for _ in 0..5 {
            let listen = format!("127.0.0.1:{}", free_port());
            let metrics = format!("127.0.0.1:{}", free_port());
            let mut args = vec![
                "dispatcher",
                "--watch-namespace",
                namespace,
                "--listen-addr",
                &listen,
                "--metrics-addr",
                &metrics,
                "--identity",
                tag,
                "--allow-plain-http",
                "--egress-allow-cidr",
                "127.0.0.0/8",
                "--status-interval-seconds",
                "1",
            ];
            args.extend_from_slice(store_args);
            let mut process = Self::spawn(&format!("{namespace}-{tag}"), &args);
            if process.bound(&listen) {
                return (process, listen, metrics);
            }
        }
        panic!("the dispatcher could not bind free ports five times");
    }

    /// Whether the process is listening on `addr` (false when it exited, e.g. port taken).
    fn bound(&mut self, addr: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if std::net::TcpStream::connect(addr).is_ok() {
                // Make sure the listener is ours: a process that lost the race exits at once.
                std::thread::sleep(Duration::from_millis(200));
                return !matches!(self.child.try_wait(), Ok(Some(_)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Sends SIGTERM (a graceful stop, as the kubelet does) without waiting; whether `kill`
    /// succeeded.
    pub fn sigterm(&self) -> bool {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|status| status.success())
    }

    /// SIGTERM and up to 10 s for the process to exit, then SIGKILL.
    pub fn terminate(&mut self) {
        self.sigterm();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A port free right now on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The text of a `/metrics` page.
pub async fn scrape(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

/// The value of the sample `name{labels…}` in a Prometheus text page (labels in any order).
pub fn metric(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let wanted = series_name == name
            && labels.iter().all(|(k, v)| {
                series_labels
                    .split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\""))
            });
        wanted.then(|| value.parse().ok()).flatten()
    })
}
