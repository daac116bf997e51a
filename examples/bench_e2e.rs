//! End-to-end benchmark: the real `webhook-operator controller` and `dispatcher` (release build,
//! durable SQLite store) on the local control plane, events published through the ingest API by
//! a concurrent load generator, delivered to an in-process HTTP receiver on loopback that counts
//! deliveries and measures publish → receipt latency from a send timestamp in the event data.
//! `wrk` against the same receiver, with the same POST body, gives the machine's ceiling.
//!
//! Run it with `scripts/bench-e2e.sh` (builds, starts or reuses the control plane, installs
//! `wrk`); `scripts/bench-e2e.sh --help` lists the options. Prints one line per measured window
//! and a summary (median, min, max over `--runs`).
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::http::{StatusCode, Uri};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use webhook_operator::api::conditions::ConditionStatus;
use webhook_operator::api::{WebhookEndpoint, WebhookSubscription};

#[path = "bench_e2e/tail.rs"]
mod tail;

#[derive(Parser, Debug, Clone)]
#[command(about = "End-to-end delivery benchmark (see docs/benchmarks.md)")]
struct Args {
    /// Endpoint counts to measure throughput and latency with (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    endpoints: Vec<usize>,
    /// Repetitions of every measured window.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Length of one measured window, in seconds.
    #[arg(long, default_value_t = 10)]
    window: u64,
    /// Fixed offered rates (events/s) for the latency measurement.
    #[arg(long, value_delimiter = ',', default_value = "500,1000")]
    rates: Vec<u64>,
    /// Concurrent publishers of the closed-loop (sustained throughput) load.
    #[arg(long, default_value_t = 64)]
    publishers: usize,
    /// Skip the isolation scenario (10 healthy endpoints + 1 that holds requests for 10 s).
    #[arg(long)]
    no_isolation: bool,
    /// Skip the wrk ceiling.
    #[arg(long)]
    no_ceiling: bool,
    /// The webhook-operator binary (release build).
    #[arg(long, default_value = "target/release/webhook-operator")]
    binary: PathBuf,
    /// The control plane's kubeconfig.
    #[arg(long, default_value = "/tmp/webhook-operator-cp/kubeconfig")]
    kubeconfig: PathBuf,
    /// Where stores and logs go (a fresh directory per scenario inside it).
    #[arg(long, default_value = "target/bench-e2e")]
    work_dir: PathBuf,
    /// Extra arguments for the dispatcher (e.g. `--per-endpoint-concurrency=64`).
    #[arg(long, allow_hyphen_values = true)]
    dispatcher_arg: Vec<String>,
    /// Scale-out instead: sustained throughput with this many dispatcher replicas on one
    /// PostgreSQL store, each count in turn (e.g. 1,2,3); the other scenarios are skipped.
    #[arg(long, value_delimiter = ',')]
    replicas: Vec<usize>,
    /// Endpoints of the scale-out scenarios.
    #[arg(long, default_value_t = 100)]
    replica_endpoints: usize,
    /// PostgreSQL for the scale-out scenarios (scripts/bench-e2e.sh starts a throwaway one).
    #[arg(long, env = "WO_POSTGRES_URL")]
    database_url: Option<String>,
    /// Ordered delivery: every endpoint `ordering: {mode: ByKey, key: data.user.id}`, events
    /// spread round-robin over this many user ids (0: unordered, the default).
    #[arg(long, default_value_t = 0)]
    ordering_keys: u64,
    /// Every endpoint gets a transform: the Slack template of examples/30 (keeping `sent_us`
    /// for the latency figures), so each delivery pays a run in a transform worker.
    #[arg(long)]
    transform: bool,
    /// A second webhook-operator binary (e.g. a build of main) to compare with `--binary`: each
    /// endpoint count runs with one, then the other, run by run (the first alternates), on the same
    /// receiver; figures are labelled `[new]` (`--binary`) and `[base]`, and a table of the
    /// medians' ratios (new ÷ base) closes the output.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// With `--compare`: one unmeasured run of the first endpoint count first (`--binary`, its
    /// figures discarded). The first run of an invocation was an outlier in every compare of
    /// docs/benchmarks.md's issue 19, session 16 (p99 3–10× the others), and `--compare` always
    /// gave it to `[new]`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    warm_up: bool,
    /// Hostile clients on the ingest port during the fixed-rate runs: half hold idle
    /// connections, half send their headers a byte a second (slowloris), each reconnecting
    /// when cut off; one more sends oversized headers ten times a second.
    #[arg(long, default_value_t = 0)]
    hostile: usize,
    /// Fan-out: endpoints form groups of this many (`ep-0..9`, `ep-10..19`, …) that share an
    /// event type (`bench.g_<k>`), and the load publishes those types, so each event is this
    /// many deliveries (0: one delivery per event, the default).
    #[arg(long, default_value_t = 0)]
    fanout: usize,
    /// Publish through `events:batch`, this many events per request (0: one event per
    /// `POST …/events`, the default).
    #[arg(long, default_value_t = 0)]
    batch: usize,
    /// After each fixed-rate window, when the deliveries slower than its p99 were published: in
    /// how many 100-ms slices, and the busiest (a stall bunches them; queueing spreads them).
    #[arg(long)]
    tail_timeline: bool,
    /// Endpoints with adaptive rate limits (the default for real endpoints) instead of
    /// `adaptive: false`: each endpoint with traffic then keeps a performance tracker.
    #[arg(long)]
    adaptive: bool,
}

/// Opens `count` hostile clients against `addr` until the returned handles are aborted.
fn hostile_clients(addr: &str, count: usize) -> Vec<tokio::task::JoinHandle<()>> {
    use tokio::io::AsyncWriteExt;
    let mut tasks = Vec::new();
    for i in 0..count {
        let addr = addr.to_owned();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                if i % 2 == 0 {
                    // Idle: wait to be cut off.
                    let mut byte = [0u8; 1];
                    let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut byte).await;
                } else {
                    for byte in b"POST /v1/namespaces/x/events HTTP/1.1\r\nhost: x\r\nx-slow: "
                        .iter()
                        .cycle()
                    {
                        if stream.write_all(&[*byte]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }));
    }
    let addr = addr.to_owned();
    tasks.push(tokio::spawn(async move {
        let big = format!(
            "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
            "a".repeat(1 << 20)
        );
        loop {
            if let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await {
                let _ = stream.write_all(big.as_bytes()).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }));
    tasks
}

/// Microseconds since the benchmark started: the clock of the send timestamps.
fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_micros()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// The receiver.

#[derive(Default)]
struct Receiver {
    /// Deliveries to healthy endpoints (`/ep/...`).
    delivered: AtomicU64,
    /// Requests to the stuck endpoint (`/hang`), counted when they arrive.
    hung: AtomicU64,
    /// Requests from wrk (`/ceiling`).
    ceiling: AtomicU64,
    /// Latencies (µs) while `recording`.
    recording: AtomicBool,
    latencies: Mutex<Vec<tail::Receipt>>,
}

fn sent_at(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sent_us\":";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut value = 0u64;
    let mut any = false;
    for d in digits {
        value = value * 10 + u64::from(d - b'0');
        any = true;
    }
    any.then_some(value)
}

async fn receive(receiver: Arc<Receiver>, uri: Uri, body: Bytes) -> StatusCode {
    let path = uri.path();
    if path.starts_with("/ceiling") {
        receiver.ceiling.fetch_add(1, Ordering::Relaxed);
        return StatusCode::OK;
    }
    if path.starts_with("/hang") {
        receiver.hung.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(10)).await;
        return StatusCode::OK;
    }
    receiver.delivered.fetch_add(1, Ordering::Relaxed);
    if receiver.recording.load(Ordering::Relaxed) {
        if let Some(sent) = sent_at(&body) {
            let latency = now_us().saturating_sub(sent);
            if let Ok(mut all) = receiver.latencies.lock() {
                all.push(tail::Receipt {
                    sent_us: sent,
                    latency_us: u32::try_from(latency).unwrap_or(u32::MAX),
                });
            }
        }
    }
    StatusCode::OK
}

async fn start_receiver() -> Result<(Arc<Receiver>, u16)> {
    let receiver = Arc::new(Receiver::default());
    let state = receiver.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, body: Bytes| {
        let state = state.clone();
        async move { receive(state, uri, body).await }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((receiver, port))
}

// ---------------------------------------------------------------------------------------------
// Processes.

struct Process {
    child: Child,
    name: String,
}

impl Process {
    fn spawn(binary: &Path, kubeconfig: &Path, log: &Path, args: &[String]) -> Result<Self> {
        let file = std::fs::File::create(log)?;
        let child = Command::new(binary)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn,kube_client=error")
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            child,
            name: args.first().cloned().unwrap_or_default(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// utime + stime in seconds, of the process and of its live children (the transform
    /// workers a dispatcher starts), so a transform's cost is counted wherever it runs.
    fn cpu_seconds(&self) -> f64 {
        let pid = self.pid();
        let mut total = process_cpu_seconds(pid);
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten();
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                total += process_cpu_seconds(child);
            }
        }
        total
    }

    /// Peak resident set (VmHWM) in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .unwrap_or(0.0)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop in 5 s; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of one process, in seconds.
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(14) + ticks(15)) / clock_ticks()
}

/// utime + stime of every process whose command (`/proc/<pid>/comm`) is one of `names`, by
/// pid, in seconds.
fn named_cpu_seconds(names: &[&str]) -> HashMap<u32, f64> {
    let mut found = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if names.contains(&comm.trim()) {
            found.insert(pid, process_cpu_seconds(pid));
        }
    }
    found
}

/// The CPU the processes named `names` spent between two [`named_cpu_seconds`] samples: each
/// process's growth, all of a process started in between; a process that ended in between is
/// not counted (PostgreSQL's pooled backends, the API server and etcd live through a window).
fn cpu_between(before: &HashMap<u32, f64>, after: &HashMap<u32, f64>) -> f64 {
    after
        .iter()
        .map(|(pid, cpu)| (cpu - before.get(pid).copied().unwrap_or(0.0)).max(0.0))
        .sum()
}

/// The whole machine's busy CPU (every state but idle and iowait) in seconds, from /proc/stat.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    (ticks.iter().take(8).sum::<f64>() - idle) / clock_ticks()
}

/// The processes whose CPU a window reports beside the dispatchers'.
const STORE_PROCESSES: &[&str] = &["postgres"];
const CONTROL_PLANE_PROCESSES: &[&str] = &["kube-apiserver", "etcd"];

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

// ---------------------------------------------------------------------------------------------
// Kubernetes objects.

async fn kube_client(kubeconfig: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn install_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in webhook_operator::api::crds::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        match api.get_opt(&name).await? {
            None => {
                api.create(&PostParams::default(), &crd).await?;
            }
            Some(existing) => {
                let mut updated = crd.clone();
                updated.metadata.resource_version = existing.metadata.resource_version;
                let _ = api.replace(&name, &PostParams::default(), &updated).await;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let established = api
            .list(&Default::default())
            .await?
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
        if established == 4 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("CRDs not established after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn is_ready(endpoint: &WebhookEndpoint) -> bool {
    endpoint.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
    })
}

/// Watches the namespace's endpoints until `count` are Ready; returns when that happened.
async fn wait_all_ready(endpoints: Api<WebhookEndpoint>, count: usize) -> Result<Instant> {
    use kube::runtime::watcher::{self, Event};
    let mut ready = std::collections::HashSet::new();
    let mut init = std::collections::HashSet::new();
    let mut events = std::pin::pin!(watcher::watcher(endpoints, watcher::Config::default()));
    while let Some(event) = events.next().await {
        match event? {
            Event::Apply(e) => {
                let name = e.metadata.name.clone().unwrap_or_default();
                if is_ready(&e) {
                    ready.insert(name);
                } else {
                    ready.remove(&name);
                }
            }
            Event::Delete(e) => {
                ready.remove(&e.metadata.name.clone().unwrap_or_default());
            }
            Event::Init => init.clear(),
            Event::InitApply(e) => {
                if is_ready(&e) {
                    init.insert(e.metadata.name.clone().unwrap_or_default());
                }
            }
            Event::InitDone => ready = std::mem::take(&mut init),
        }
        if ready.len() >= count {
            return Ok(Instant::now());
        }
    }
    bail!("the endpoint watch ended")
}

/// One endpoint: its URL path and the event types its subscription takes.
struct EndpointPlan {
    name: String,
    path: String,
}

/// Where a scenario's dispatchers keep their deliveries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StoreSetup {
    /// One dispatcher, its own SQLite file.
    Sqlite,
    /// This many dispatchers on one PostgreSQL schema, splitting the endpoints through Leases.
    Postgres { replicas: usize },
}

/// A namespace with endpoints, a controller and its dispatcher(s).
struct Scenario {
    client: Client,
    namespace: String,
    /// Every dispatcher's ingest address (one with SQLite).
    ingests: Vec<String>,
    metrics: String,
    dispatcher: Process,
    /// Dispatchers beyond the first (PostgreSQL scale-out).
    replicas: Vec<Process>,
    /// The PostgreSQL URL and schema (dropped at the end).
    postgres: Option<(String, String)>,
    controller: Process,
    endpoints: usize,
    created_seconds: f64,
    ready_seconds: f64,
}

impl Scenario {
    async fn start(
        args: &Args,
        client: &Client,
        label: &str,
        receiver_port: u16,
        plan: &[EndpointPlan],
        store: StoreSetup,
    ) -> Result<Self> {
        let namespace = format!(
            "bench-{label}-{}",
            &ulid::Ulid::new().to_string().to_lowercase()[20..]
        );
        let dir = args.work_dir.join(&namespace);
        std::fs::create_dir_all(&dir)?;
        let ns_api: Api<Namespace> = Api::all(client.clone());
        ns_api
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}}))?,
            )
            .await?;
        let controller = Process::spawn(
            &args.binary,
            &args.kubeconfig,
            &dir.join("controller.log"),
            &[
                "controller".into(),
                "--watch-namespace".into(),
                namespace.clone(),
                "--lease-namespace".into(),
                namespace.clone(),
                "--identity".into(),
                "bench".into(),
                "--metrics-addr".into(),
                "127.0.0.1:0".into(),
                "--allow-plain-http".into(),
            ],
        )?;
        let started = Instant::now();
        let endpoints: Api<WebhookEndpoint> = Api::namespaced(client.clone(), &namespace);
        let subscriptions: Api<WebhookSubscription> = Api::namespaced(client.clone(), &namespace);
        let creations = plan.iter().enumerate().map(|(index, e)| {
            let (endpoints, subscriptions) = (endpoints.clone(), subscriptions.clone());
            let endpoint: Result<WebhookEndpoint, _> = serde_json::from_value(serde_json::json!({
                "metadata": {"name": e.name},
                "spec": {
                    "url": format!("http://127.0.0.1:{receiver_port}{}", e.path),
                    "rateLimit": {
                        "requestsPerMinute": 6_000_000,
                        "burst": 100_000,
                        "adaptive": ADAPTIVE.get().copied().unwrap_or(false)
                    },
                    "circuitBreaker": {"failureThreshold": 1000},
                    "ordering": if ORDERING_KEYS.get().copied().unwrap_or(0) > 0 {
                        serde_json::json!({"mode": "ByKey", "key": "data.user.id"})
                    } else {
                        serde_json::json!({"mode": "None"})
                    },
                    "transform": TRANSFORM.get().copied().unwrap_or(false).then(|| {
                        serde_json::json!({"jq": SLACK_TRANSFORM})
                    })
                }
            }));
            let subscription: Result<WebhookSubscription, _> =
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": e.name},
                    "spec": {"endpointRef": {"name": e.name},
                             "eventTypes": subscribed_types(index, &e.name)}
                }));
            async move {
                endpoints.create(&PostParams::default(), &endpoint?).await?;
                subscriptions
                    .create(&PostParams::default(), &subscription?)
                    .await?;
                anyhow::Ok(())
            }
        });
        let results: Vec<_> = futures::stream::iter(creations)
            .buffer_unordered(32)
            .collect()
            .await;
        for result in results {
            result?;
        }
        let created_seconds = started.elapsed().as_secs_f64();
        // Ready = the controller validated the spec and created the Secret and ConfigMap. Watched,
        // not listed: listing 10,000 endpoints every few hundred ms would load the API server the
        // controller is writing to.
        let ready_seconds = tokio::time::timeout(
            Duration::from_secs(600),
            wait_all_ready(endpoints.clone(), plan.len()),
        )
        .await
        .map_err(|_| anyhow::anyhow!("not all {} endpoints Ready after 600 s", plan.len()))??;
        let ready_seconds = ready_seconds.duration_since(started).as_secs_f64();

        let (count, postgres) = match store {
            StoreSetup::Sqlite => (1, None),
            StoreSetup::Postgres { replicas } => {
                let url = args
                    .database_url
                    .clone()
                    .context("--replicas needs PostgreSQL: --database-url or WO_POSTGRES_URL")?;
                (replicas.max(1), Some((url, namespace.replace('-', "_"))))
            }
        };
        let mut dispatchers = Vec::new();
        let mut ingests = Vec::new();
        let mut metrics_addrs = Vec::new();
        for replica in 0..count {
            let ingest = format!("127.0.0.1:{}", free_port()?);
            let metrics = format!("127.0.0.1:{}", free_port()?);
            let identity = format!("bench-{replica}");
            let mut dispatcher_args: Vec<String> = [
                "dispatcher",
                "--watch-namespace",
                &namespace,
                "--listen-addr",
                &ingest,
                "--metrics-addr",
                &metrics,
                "--identity",
                &identity,
                "--allow-plain-http",
                "--egress-allow-cidr",
                "127.0.0.0/8",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            match &postgres {
                None => dispatcher_args.extend([
                    "--store-path".to_string(),
                    dir.join("dispatcher.db").display().to_string(),
                ]),
                Some((url, schema)) => {
                    dispatcher_args.extend(
                        [
                            "--store",
                            "postgres",
                            "--database-url",
                            url,
                            "--database-schema",
                            schema,
                            "--lease-namespace",
                            &namespace,
                        ]
                        .map(String::from),
                    );
                }
            }
            dispatcher_args.extend(args.dispatcher_arg.iter().cloned());
            dispatchers.push(Process::spawn(
                &args.binary,
                &args.kubeconfig,
                &dir.join(format!("dispatcher-{replica}.log")),
                &dispatcher_args,
            )?);
            ingests.push(ingest);
            metrics_addrs.push(metrics);
        }
        let http = webhook_operator::runtime::tls::http_client();
        let deadline = Instant::now() + Duration::from_secs(120);
        for metrics in &metrics_addrs {
            loop {
                let ok = http
                    .get(format!("http://{metrics}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("dispatcher not ready after 120 s (see {})", dir.display());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if postgres.is_some() {
            wait_partitions_settled(&http, &metrics_addrs).await?;
        }
        let mut dispatchers = dispatchers.into_iter();
        let dispatcher = dispatchers.next().context("no dispatcher started")?;
        let metrics = metrics_addrs[0].clone();
        Ok(Self {
            client: client.clone(),
            namespace,
            ingests,
            metrics,
            dispatcher,
            replicas: dispatchers.collect(),
            postgres,
            controller,
            endpoints: plan.len(),
            created_seconds,
            ready_seconds,
        })
    }

    async fn stop(self, work_dir: &Path) {
        let Scenario {
            client,
            namespace,
            dispatcher,
            replicas,
            controller,
            postgres,
            ..
        } = self;
        drop(dispatcher);
        drop(replicas);
        drop(controller);
        if let Some((url, schema)) = postgres {
            drop_schema(&url, &schema).await;
        }
        delete_namespace(client, &namespace).await;
        // The store of a run holds every delivered event (hundreds of MB): keep only the logs.
        for file in ["dispatcher.db", "dispatcher.db-wal", "dispatcher.db-shm"] {
            let _ = std::fs::remove_file(work_dir.join(&namespace).join(file));
        }
    }

    /// utime + stime of every dispatcher, in seconds.
    fn dispatcher_cpu_seconds(&self) -> f64 {
        self.dispatcher.cpu_seconds() + self.replicas.iter().map(Process::cpu_seconds).sum::<f64>()
    }

    /// Sums a metric's samples from /metrics whose line starts with `prefix`. Scrapes as
    /// Prometheus does, accepting gzip (a dispatcher with 10,000 endpoints has ~30 MB of text).
    async fn metric_sum(&self, http: &reqwest::Client, prefix: &str) -> f64 {
        let Ok(response) = http
            .get(format!("http://{}/metrics", self.metrics))
            .header("accept-encoding", "gzip")
            .send()
            .await
        else {
            return 0.0;
        };
        let gzipped = response
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v.as_bytes() == b"gzip");
        let body = response.bytes().await.unwrap_or_default();
        let text = if gzipped {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(
                &mut flate2::read::GzDecoder::new(body.as_ref()),
                &mut text,
            );
            text
        } else {
            String::from_utf8_lossy(&body).into_owned()
        };
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }
}

// ---------------------------------------------------------------------------------------------
// Load.

/// `--ordering-keys`, set once in `main`.
static ORDERING_KEYS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
/// `--transform`, set once in `main`.
static TRANSFORM: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
/// `--adaptive`.
static ADAPTIVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
/// `--fanout`, set once in `main`.
static FANOUT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Deliveries per published event of the measured load (`--fanout`, at least 1).
fn fanout() -> usize {
    FANOUT.get().copied().unwrap_or(0).max(1)
}

/// The event types of an endpoint's subscription: its own, the isolation scenario's
/// `bench.all`, and with `--fanout` its group's.
fn subscribed_types(index: usize, name: &str) -> Vec<String> {
    let mut types = vec![
        format!("bench.{}", name.replace('-', "_")),
        "bench.all".into(),
    ];
    if FANOUT.get().copied().unwrap_or(0) > 0 {
        types.push(format!("bench.g_{}", index / fanout()));
    }
    types
}

/// The Slack template's message (examples/30), plus the send time the receiver measures from.
const SLACK_TRANSFORM: &str = r#"{
  text: "New \(.data.event_type) event",
  attachments: [{color: "good", fields: [
    {title: "Event Type", value: .data.event_type, short: true},
    {title: "Timestamp", value: .timestamp, short: true}]}],
  sent_us: .data.sent_us
}"#;

/// The ingest request body: ~1 KiB of data with the send timestamp; the n-th event's user id is
/// `n % --ordering-keys` (123 when unordered).
fn event_body(event_type: &str, n: u64) -> String {
    let user = match ORDERING_KEYS.get().copied().unwrap_or(0) {
        0 => 123,
        keys => n % keys,
    };
    format!(
        r#"{{"type":"{event_type}","data":{{"sent_us":{},"user":{{"id":{user},"email":"user@example.com"}},"padding":"{}"}}}}"#,
        now_us(),
        "x".repeat(940)
    )
}

struct Publisher {
    http: reqwest::Client,
    /// One per dispatcher; events go round-robin.
    urls: Vec<String>,
    accepted: AtomicU64,
    refused: AtomicU64,
    types: Vec<String>,
    next: AtomicU64,
    /// Events per request: 1 through `…/events`, more through `…/events:batch`.
    batch: usize,
}

impl Publisher {
    fn new(ingests: &[String], namespace: &str, types: Vec<String>) -> Result<Arc<Self>> {
        Ok(Arc::new(Self {
            http: {
                webhook_operator::runtime::tls::install_default_provider();
                reqwest::Client::builder()
            }
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(30))
            .build()?,
            urls: ingests
                .iter()
                .map(|ingest| format!("http://{ingest}/v1/namespaces/{namespace}/events"))
                .collect(),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            types,
            next: AtomicU64::new(0),
            batch: 1,
        }))
    }

    /// The same publisher sending `batch` events per request (`events:batch` when more than 1).
    fn batched(self: Arc<Self>, batch: usize) -> Arc<Self> {
        if batch <= 1 {
            return self;
        }
        Arc::new(Self {
            http: self.http.clone(),
            urls: self.urls.iter().map(|url| format!("{url}:batch")).collect(),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            types: self.types.clone(),
            next: AtomicU64::new(0),
            batch,
        })
    }

    /// One request: one event, or `batch` events through `events:batch`.
    async fn publish_one(&self) {
        let n = self.next.fetch_add(self.batch as u64, Ordering::Relaxed) as usize;
        let body = if self.batch <= 1 {
            event_body(&self.types[n % self.types.len()], n as u64)
        } else {
            let events: Vec<String> = (n..n + self.batch)
                .map(|i| event_body(&self.types[i % self.types.len()], i as u64))
                .collect();
            format!(r#"{{"events":[{}]}}"#, events.join(","))
        };
        let sent = self
            .http
            .post(&self.urls[(n / self.batch) % self.urls.len()])
            .bearer_auth("test-admin-token")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => {
                self.accepted
                    .fetch_add(self.batch as u64, Ordering::Relaxed);
            }
            Ok(r) => {
                let n = self.refused.fetch_add(1, Ordering::Relaxed);
                if n < 3 {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    eprintln!("ingest refused: {status} {text}");
                }
            }
            Err(e) => {
                let n = self.refused.fetch_add(1, Ordering::Relaxed);
                if n < 3 {
                    eprintln!("ingest failed: {e}");
                }
            }
        }
    }

    /// Closed loop: `concurrency` publishers back to back until `stop`.
    fn closed_loop(
        self: &Arc<Self>,
        concurrency: usize,
        stop: Arc<AtomicBool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..concurrency)
            .map(|_| {
                let (me, stop) = (self.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        me.publish_one().await;
                    }
                })
            })
            .collect()
    }

    /// Open loop: `rate` events/s (one request every `batch`/rate s) for `duration`, whatever
    /// the answers take. Exactly `rate` × `duration` events: ticks missed while this task was
    /// held up are made up in a burst, not dropped at the end (a stall near the end once made
    /// the drain wait for events never sent).
    async fn open_loop(self: &Arc<Self>, rate: u64, duration: Duration) {
        let batch = self.batch.max(1) as u64;
        let period = Duration::from_nanos(1_000_000_000 * batch / rate.max(1));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let requests = (rate * duration.as_secs()).div_ceil(batch);
        let mut tasks = Vec::new();
        for _ in 0..requests {
            ticker.tick().await;
            let me = self.clone();
            tasks.push(tokio::spawn(async move { me.publish_one().await }));
        }
        futures::future::join_all(tasks).await;
    }
}

/// The measured load's publisher, after a warm-up of one event per endpoint
/// (`bench.ep_<i>`), all delivered (the dispatchers have every policy). It publishes one event
/// type per endpoint, or per group with `--fanout`, `batch` events per request.
async fn warmed_up_publisher(
    scenario: &Scenario,
    receiver: &Receiver,
    count: usize,
    batch: usize,
) -> Result<Arc<Publisher>> {
    let types: Vec<String> = (0..count).map(|i| format!("bench.ep_{i}")).collect();
    let publisher = Publisher::new(&scenario.ingests, &scenario.namespace, types)?;
    let d0 = receiver.delivered.load(Ordering::Relaxed);
    let warm = (0..count).map(|_| publisher.publish_one());
    futures::stream::iter(warm)
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    drain(&receiver.delivered, d0 + count as u64).await;
    let measured = if FANOUT.get().copied().unwrap_or(0) > 0 {
        let groups = count.div_ceil(fanout());
        let types = (0..groups).map(|k| format!("bench.g_{k}")).collect();
        Publisher::new(&scenario.ingests, &scenario.namespace, types)?
    } else {
        publisher
    };
    Ok(measured.batched(batch))
}

/// Waits until the receiver has `target` deliveries (or stops growing for 15 s).
async fn drain(counter: &AtomicU64, target: u64) {
    let mut last = counter.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while counter.load(Ordering::Relaxed) < target {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = counter.load(Ordering::Relaxed);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() > Duration::from_secs(15) {
            eprintln!("  drain: stuck at {now} of {target} deliveries");
            return;
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

/// Median, min, max.
fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

#[derive(Default)]
struct Figures {
    rows: BTreeMap<String, Vec<f64>>,
    order: Vec<String>,
}

impl Figures {
    fn add(&mut self, key: impl Into<String>, value: f64) {
        let key = key.into();
        if !self.rows.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.rows.entry(key).or_default().push(value);
    }

    /// For every figure labelled `new`, the median of it ÷ the median of its `base` twin.
    fn print_ratios(&self, new: &str, base: &str) {
        println!(
            "\n{:<58} {:>12} {:>12} {:>8}",
            "figure (medians)", new, base, "ratio"
        );
        for key in self.order.iter().filter(|k| k.contains(new)) {
            let Some(base_values) = self.rows.get(&key.replace(new, base)) else {
                continue;
            };
            let (n, _, _) = summary(&self.rows[key]);
            let (b, _, _) = summary(base_values);
            let figure = key.replace(&format!(" {new}"), "");
            println!("{figure:<58} {n:>12.3} {b:>12.3} {:>8.3}", n / b);
        }
    }

    fn print(&self) {
        println!(
            "\n{:<58} {:>12} {:>12} {:>12}  runs",
            "figure", "median", "min", "max"
        );
        for key in &self.order {
            let values = &self.rows[key];
            let (median, min, max) = summary(values);
            println!(
                "{key:<58} {median:>12.3} {min:>12.3} {max:>12.3}  {}",
                values.len()
            );
        }
    }
}

/// Closed-loop sustained throughput over one window.
async fn sustained(
    scenario: &Scenario,
    receiver: &Receiver,
    publisher: &Arc<Publisher>,
    args: &Args,
    figures: &mut Figures,
    label: &str,
) -> Result<()> {
    let http = webhook_operator::runtime::tls::http_client();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = publisher.closed_loop(args.publishers, stop.clone());
    // Warm up: the backlog fills and the pipeline reaches its steady state.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d0 = receiver.delivered.load(Ordering::Relaxed);
    let a0 = publisher.accepted.load(Ordering::Relaxed);
    let cpu0 = scenario.dispatcher_cpu_seconds();
    let (store0, control0) = (
        named_cpu_seconds(STORE_PROCESSES),
        named_cpu_seconds(CONTROL_PLANE_PROCESSES),
    );
    let machine0 = machine_busy_seconds();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.window)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let d1 = receiver.delivered.load(Ordering::Relaxed);
    let a1 = publisher.accepted.load(Ordering::Relaxed);
    let cpu1 = scenario.dispatcher_cpu_seconds();
    let machine = machine_busy_seconds() - machine0;
    let store_cpu = cpu_between(&store0, &named_cpu_seconds(STORE_PROCESSES));
    let control_cpu = cpu_between(&control0, &named_cpu_seconds(CONTROL_PLANE_PROCESSES));
    stop.store(true, Ordering::Relaxed);
    futures::future::join_all(tasks).await;
    let deliveries = (d1 - d0) as f64;
    let rate = deliveries / elapsed;
    let accept_rate = (a1 - a0) as f64 / elapsed;
    let cpu_per_1000 = (cpu1 - cpu0) / deliveries.max(1.0) * 1000.0;
    let pending = scenario
        .metric_sum(&http, "webhook_operator_dispatcher_queue_depth")
        .await;
    println!(
        "  {label}: {rate:.0} deliveries/s, {accept_rate:.0} accepted/s, {:.3} CPU s per 1000 deliveries, queue depth {pending:.0}, refused so far {}",
        cpu_per_1000,
        publisher.refused.load(Ordering::Relaxed)
    );
    figures.add(format!("{label}: deliveries/s"), rate);
    figures.add(format!("{label}: accepted events/s"), accept_rate);
    figures.add(
        format!("{label}: dispatcher CPU s / 1000 deliveries"),
        cpu_per_1000,
    );
    // Where the rest of the machine's CPU went, per delivery: with several replicas on one
    // machine, this says whether the shared store, the control plane or the replicas grew.
    let per_1000 = |seconds: f64| seconds / deliveries.max(1.0) * 1000.0;
    if scenario.postgres.is_some() {
        figures.add(
            format!("{label}: PostgreSQL CPU s / 1000 deliveries"),
            per_1000(store_cpu),
        );
    }
    figures.add(
        format!("{label}: API server + etcd CPU s / 1000 deliveries"),
        per_1000(control_cpu),
    );
    figures.add(
        format!("{label}: machine busy CPU s / 1000 deliveries"),
        per_1000(machine),
    );
    // Deliver the backlog before the next window.
    wait_idle(&receiver.delivered).await;
    Ok(())
}

/// Waits until no delivery arrived for 1 s (the backlog is delivered).
async fn wait_idle(counter: &AtomicU64) {
    let mut last = counter.load(Ordering::Relaxed);
    let mut quiet = Instant::now();
    let started = Instant::now();
    while quiet.elapsed() < Duration::from_secs(1) && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = counter.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet = Instant::now();
        }
    }
}

/// Fixed offered rate: p50/p99/p99.9 (ms) of publish → receipt, and the dispatcher's CPU per
/// 1,000 deliveries (every event accepted is delivered here, so unlike the closed loop's figure
/// it does not depend on how far ingest ran ahead of delivery).
async fn latency(
    scenario: &Scenario,
    receiver: &Receiver,
    publisher: &Arc<Publisher>,
    rate: u64,
    args: &Args,
    figures: &mut Figures,
    label: &str,
) {
    if let Ok(mut l) = receiver.latencies.lock() {
        l.clear();
    }
    let d0 = receiver.delivered.load(Ordering::Relaxed);
    let a0 = publisher.accepted.load(Ordering::Relaxed);
    let r0 = publisher.refused.load(Ordering::Relaxed);
    let cpu0 = scenario.dispatcher_cpu_seconds();
    receiver.recording.store(true, Ordering::Relaxed);
    let attackers = match scenario.ingests.first() {
        Some(ingest) if args.hostile > 0 => {
            let addr = ingest
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned();
            hostile_clients(&addr, args.hostile)
        }
        _ => Vec::new(),
    };
    publisher
        .open_loop(rate, Duration::from_secs(args.window))
        .await;
    for attacker in &attackers {
        attacker.abort();
    }
    // What was accepted is what must arrive (a refused publish is reported, not waited for).
    let accepted = publisher.accepted.load(Ordering::Relaxed) - a0;
    let refused = publisher.refused.load(Ordering::Relaxed) - r0;
    if refused > 0 {
        eprintln!("  {label} @ {rate}/s: {refused} publish requests refused or failed");
    }
    let expected = d0 + accepted * fanout() as u64;
    drain(&receiver.delivered, expected).await;
    receiver.recording.store(false, Ordering::Relaxed);
    let cpu_per_1000 = (scenario.dispatcher_cpu_seconds() - cpu0)
        / (receiver.delivered.load(Ordering::Relaxed) - d0).max(1) as f64
        * 1000.0;
    let receipts = receiver
        .latencies
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    let mut all: Vec<u32> = receipts.iter().map(|r| r.latency_us).collect();
    all.sort_unstable();
    let (p50, p99, p999) = (
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        percentile(&all, 99.9),
    );
    println!(
        "  {label} @ {rate}/s: {} deliveries, p50 {p50:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms, {cpu_per_1000:.3} CPU s per 1000 deliveries",
        all.len()
    );
    if args.tail_timeline {
        let threshold_us = (p99 * 1000.0) as u32;
        let unix_now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_micros() as u64);
        let unix_offset_us = unix_now_us.saturating_sub(now_us());
        tail::print(
            label,
            p99,
            &tail::timeline(&receipts, threshold_us),
            unix_offset_us,
        );
    }
    figures.add(format!("{label} @ {rate}/s: p50 ms"), p50);
    figures.add(format!("{label} @ {rate}/s: p99 ms"), p99);
    figures.add(format!("{label} @ {rate}/s: p99.9 ms"), p999);
    figures.add(
        format!("{label} @ {rate}/s: dispatcher CPU s / 1000 deliveries"),
        cpu_per_1000,
    );
    wait_idle(&receiver.delivered).await;
}

/// wrk against the receiver with a delivery-sized POST body; returns requests/s.
fn wrk_ceiling(port: u16, seconds: u64, dir: &Path) -> Result<f64> {
    let body = format!(
        r#"{{"event_id":"evt_01JBENCH0000000000000000","timestamp":"2025-01-01T00:00:00Z","webhook":{{"id":"bench/ep-0","name":"ep-0"}},"data":{{"event_type":"bench.ep-0","sent_us":1,"user":{{"id":123,"email":"user@example.com"}},"padding":"{}"}}}}"#,
        "x".repeat(940)
    );
    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{body}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"X-Webhook-Signature\"] = \"sha256=0000000000000000000000000000000000000000000000000000000000000000\"\n"
        ),
    )?;
    let output = Command::new("wrk")
        .args([
            "-t2",
            "-c64",
            &format!("-d{seconds}s"),
            "-s",
            &script.display().to_string(),
            &format!("http://127.0.0.1:{port}/ceiling"),
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))
}

fn plan(count: usize, hang: bool) -> Vec<EndpointPlan> {
    let mut plan: Vec<EndpointPlan> = (0..count)
        .map(|i| EndpointPlan {
            name: format!("ep-{i}"),
            path: format!("/ep/{i}"),
        })
        .collect();
    if hang {
        plan.push(EndpointPlan {
            name: "stuck".into(),
            path: "/hang".into(),
        });
    }
    plan
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = ORDERING_KEYS.set(args.ordering_keys);
    let _ = TRANSFORM.set(args.transform);
    let _ = ADAPTIVE.set(args.adaptive);
    let _ = FANOUT.set(args.fanout);
    now_us();
    std::fs::create_dir_all(&args.work_dir)?;
    let client = kube_client(&args.kubeconfig).await?;
    install_crds(&client).await?;
    let (receiver, port) = start_receiver().await?;
    let mut figures = Figures::default();
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name\t: "))
            .unwrap_or("?")
    );

    if !args.replicas.is_empty() {
        scale_out(&args, &client, &receiver, port, &mut figures).await?;
        figures.print();
        if args.compare.is_some() {
            figures.print_ratios("[new]", "[base]");
        }
        return Ok(());
    }

    if let (true, Some(_), Some(&count)) = (args.warm_up, &args.compare, args.endpoints.first()) {
        let one = Args {
            runs: 1,
            compare: None,
            ..args.clone()
        };
        let mut discarded = Figures::default();
        endpoint_count(
            &one,
            &client,
            &receiver,
            port,
            &mut discarded,
            count,
            "warm-up",
        )
        .await?;
    }

    for &count in &args.endpoints {
        let mut label = format!("{count} endpoint{}", if count == 1 { "" } else { "s" });
        if args.fanout > 0 {
            label += &format!(", fan-out {}", args.fanout);
        }
        if args.batch > 1 {
            label += &format!(", batches of {}", args.batch);
        }
        for (one, tagged) in schedule(&args, &label) {
            endpoint_count(&one, &client, &receiver, port, &mut figures, count, &tagged).await?;
        }
    }

    if !args.no_isolation {
        println!(
            "\n== isolation: 10 healthy endpoints, with and without 1 that holds requests for 10 s"
        );
        for (hang, label) in [
            (false, "isolation: 10 healthy"),
            (true, "isolation: 10 healthy + 1 stuck"),
        ] {
            let scenario = Scenario::start(
                &args,
                &client,
                if hang { "stuck" } else { "healthy" },
                port,
                &plan(10, hang),
                StoreSetup::Sqlite,
            )
            .await?;
            // Every event goes to all endpoints (`bench.all`), so the healthy ones get the same
            // deliveries per event in both runs.
            let publisher = Publisher::new(
                &scenario.ingests,
                &scenario.namespace,
                vec!["bench.all".into()],
            )?;
            for run in 0..args.runs {
                println!(" run {}", run + 1);
                sustained(&scenario, &receiver, &publisher, &args, &mut figures, label).await?;
            }
            println!(
                "  stuck endpoint received {} requests",
                receiver.hung.load(Ordering::Relaxed)
            );
            scenario.stop(&args.work_dir).await;
        }
        let healthy = figures
            .rows
            .get("isolation: 10 healthy: deliveries/s")
            .cloned()
            .unwrap_or_default();
        let stuck = figures
            .rows
            .get("isolation: 10 healthy + 1 stuck: deliveries/s")
            .cloned()
            .unwrap_or_default();
        for (h, s) in healthy.iter().zip(&stuck) {
            figures.add(
                "isolation ratio (healthy deliveries/s with ÷ without stuck)",
                s / h,
            );
        }
    }

    figures.print();
    if args.compare.is_some() {
        figures.print_ratios("[new]", "[base]");
    }
    Ok(())
}

/// One endpoint count with `args.binary`: its scenario started, `args.runs` runs of sustained
/// throughput (and the wrk ceiling) and of each fixed rate, figures labelled `label`.
async fn endpoint_count(
    args: &Args,
    client: &Client,
    receiver: &Receiver,
    port: u16,
    figures: &mut Figures,
    count: usize,
    label: &str,
) -> Result<()> {
    println!("\n== {label} ({})", args.binary.display());
    let scenario = Scenario::start(
        args,
        client,
        &format!("n{count}"),
        port,
        &plan(count, false),
        StoreSetup::Sqlite,
    )
    .await?;
    println!(
        "  {} endpoints (+ subscriptions) created in {:.1} s, all Ready after {:.1} s; RSS with them cached: controller {:.1} MiB, dispatcher {:.1} MiB",
        scenario.endpoints,
        scenario.created_seconds,
        scenario.ready_seconds,
        scenario.controller.peak_rss_mib(),
        scenario.dispatcher.peak_rss_mib(),
    );
    figures.add(
        format!("{label}: all endpoints Ready, s"),
        scenario.ready_seconds,
    );
    figures.add(
        format!("{label}: controller peak RSS MiB (all Ready)"),
        scenario.controller.peak_rss_mib(),
    );
    figures.add(
        format!("{label}: dispatcher peak RSS MiB (idle, all cached)"),
        scenario.dispatcher.peak_rss_mib(),
    );
    let publisher = warmed_up_publisher(&scenario, receiver, count, args.batch).await?;
    let http = webhook_operator::runtime::tls::http_client();
    for run in 0..args.runs {
        println!(" run {}", run + 1);
        sustained(&scenario, receiver, &publisher, args, figures, label).await?;
        if !args.no_ceiling {
            let ceiling = wrk_ceiling(port, 5, &args.work_dir)?;
            let (rate, _, _) = summary(
                figures.rows[&format!("{label}: deliveries/s")]
                    .last()
                    .map(std::slice::from_ref)
                    .unwrap_or(&[]),
            );
            println!(
                "  wrk ceiling: {ceiling:.0} requests/s; ratio {:.3}",
                rate / ceiling
            );
            figures.add(format!("{label}: wrk ceiling requests/s"), ceiling);
            figures.add(format!("{label}: deliveries/s ÷ ceiling"), rate / ceiling);
        }
        for &rate in &args.rates {
            latency(&scenario, receiver, &publisher, rate, args, figures, label).await;
        }
    }
    figures.add(
        format!("{label}: dispatcher peak RSS MiB"),
        scenario.dispatcher.peak_rss_mib(),
    );
    figures.add(
        format!("{label}: controller peak RSS MiB"),
        scenario.controller.peak_rss_mib(),
    );
    let commits = scenario
        .metric_sum(
            &http,
            "webhook_operator_dispatcher_store_commit_seconds_count",
        )
        .await;
    let commit_sum = scenario
        .metric_sum(
            &http,
            "webhook_operator_dispatcher_store_commit_seconds_sum",
        )
        .await;
    println!(
        "  dispatcher peak RSS {:.1} MiB; {commits:.0} store commits, mean {:.2} ms",
        scenario.dispatcher.peak_rss_mib(),
        commit_sum / commits.max(1.0) * 1000.0
    );
    if args.transform {
        // Where the attempts' transform outputs came from (docs/operations.md): run ahead and
        // answered, waited for holding an endpoint slot, or run in the attempt.
        let mut sources = Vec::new();
        for source in ["ready", "waited", "attempt"] {
            let prefix = format!(
                "webhook_operator_dispatcher_transform_outputs_total{{source=\"{source}\"}}"
            );
            let count = scenario.metric_sum(&http, &prefix).await;
            // (+ 0.0: the sum of no samples, a build without the metric, is -0.)
            sources.push(format!("{source} {:.0}", count + 0.0));
        }
        println!("  transform outputs: {}", sources.join(", "));
    }
    // How the dispatcher took its deliveries (docs/operations.md): created claimed by its ingest
    // and started at once, or claimed from the store.
    let mut paths = Vec::new();
    for path in ["insert", "store"] {
        let prefix = format!("webhook_operator_dispatcher_claims_total{{path=\"{path}\"}}");
        let count = scenario.metric_sum(&http, &prefix).await;
        paths.push(format!("{path} {:.0}", count + 0.0));
    }
    println!("  claims: {}", paths.join(", "));
    scenario.stop(&args.work_dir).await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Scale-out: several dispatchers on one PostgreSQL store.

/// Sustained throughput with each replica count of `--replicas`.
async fn scale_out(
    args: &Args,
    client: &Client,
    receiver: &Receiver,
    port: u16,
    figures: &mut Figures,
) -> Result<()> {
    let count = args.replica_endpoints;
    let url = args
        .database_url
        .clone()
        .context("--replicas needs PostgreSQL: --database-url or WO_POSTGRES_URL")?;
    // A durable store: the throwaway test cluster runs with fsync off; turn it on for the run.
    let restore_fsync = make_durable(&url).await?;
    let result = scale_out_runs(args, client, receiver, port, figures, count).await;
    if restore_fsync {
        set_fsync(&url, false).await?;
    }
    result
}

async fn scale_out_runs(
    args: &Args,
    client: &Client,
    receiver: &Receiver,
    port: u16,
    figures: &mut Figures,
    count: usize,
) -> Result<()> {
    for &replicas in &args.replicas {
        let label = format!("postgres, {replicas} replica(s), {count} endpoints");
        for (one, tagged) in schedule(args, &label) {
            replica_count(&one, client, receiver, port, figures, replicas, &tagged).await?;
        }
    }
    Ok(())
}

/// The scenarios of one figure's label: `args` as given, or with `--compare` run by run, each
/// binary in turn (which goes first alternates, so a drift in the machine's speed meets both),
/// one run each, labelled `[new]` and `[base]`.
fn schedule(args: &Args, label: &str) -> Vec<(Args, String)> {
    let Some(base) = &args.compare else {
        return vec![(args.clone(), label.to_owned())];
    };
    let pair = [("new", &args.binary), ("base", base)];
    let mut runs = Vec::with_capacity(args.runs * 2);
    for run in 0..args.runs {
        for index in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
            let (tag, binary) = pair[index];
            let one = Args {
                binary: binary.clone(),
                runs: 1,
                ..args.clone()
            };
            runs.push((one, format!("{label} [{tag}]")));
        }
    }
    runs
}

/// `replicas` dispatchers of `args.binary` on one PostgreSQL schema: `args.runs` windows of
/// sustained throughput, figures labelled `label`.
async fn replica_count(
    args: &Args,
    client: &Client,
    receiver: &Receiver,
    port: u16,
    figures: &mut Figures,
    replicas: usize,
    label: &str,
) -> Result<()> {
    let count = args.replica_endpoints;
    println!("\n== {label}");
    let scenario = Scenario::start(
        args,
        client,
        &format!("r{replicas}"),
        port,
        &plan(count, false),
        StoreSetup::Postgres { replicas },
    )
    .await?;
    let publisher = warmed_up_publisher(&scenario, receiver, count, args.batch).await?;
    if let Some((url, schema)) = &scenario.postgres {
        // Statistics from a few thousand rows, not from the warm-up's one per endpoint: a plan
        // made for 100-row tables (a sequential scan of `events` in the record path's join)
        // took 0.3 ms a lookup once the tables held 15,000 rows.
        let requests = STATS_WARM_UP_PER_ENDPOINT * count / args.batch.max(1);
        let deliveries = (requests * args.batch.max(1) * fanout().max(1)) as u64;
        let d0 = receiver.delivered.load(Ordering::Relaxed);
        futures::stream::iter((0..requests).map(|_| publisher.publish_one()))
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        drain(&receiver.delivered, d0 + deliveries).await;
        analyze_schema(url, schema).await?;
    }
    for run in 0..args.runs {
        println!(" run {}", run + 1);
        sustained(&scenario, receiver, &publisher, args, figures, label).await?;
    }
    scenario.stop(&args.work_dir).await;
    Ok(())
}

/// Waits until the replicas hold every partition between them, each some.
async fn wait_partitions_settled(http: &reqwest::Client, metrics: &[String]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut owned = Vec::new();
        for addr in metrics {
            let text = match http.get(format!("http://{addr}/metrics")).send().await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let value = text
                .lines()
                .find(|l| l.starts_with("webhook_operator_dispatcher_partitions_owned "))
                .and_then(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .unwrap_or(0.0);
            owned.push(value);
        }
        // 32 partitions by default; every replica with a share.
        if owned.iter().sum::<f64>() >= 32.0 && owned.iter().all(|o| *o > 0.0) {
            println!("  partitions per replica: {owned:?}");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("partitions not settled after 60 s: {owned:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Turns `fsync` on if it is off (returns whether it was) and reports the durability settings.
async fn make_durable(url: &str) -> Result<bool> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let fsync: String = client.query_one("SHOW fsync", &[]).await?.get(0);
    let was_off = fsync == "off";
    if was_off {
        set_fsync(url, true).await?;
    }
    let synchronous: String = client
        .query_one("SHOW synchronous_commit", &[])
        .await?
        .get(0);
    let fsync: String = client.query_one("SHOW fsync", &[]).await?.get(0);
    println!("PostgreSQL: fsync = {fsync}, synchronous_commit = {synchronous}");
    Ok(was_off)
}

async fn set_fsync(url: &str, on: bool) -> Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let statement = if on {
        "ALTER SYSTEM SET fsync = on"
    } else {
        "ALTER SYSTEM RESET fsync"
    };
    client.batch_execute(statement).await?;
    client.batch_execute("SELECT pg_reload_conf()").await?;
    // The reload is asynchronous: give the server a moment to apply it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// Events per endpoint published before a scale-out schema is analyzed.
const STATS_WARM_UP_PER_ENDPOINT: usize = 30;

/// Gives the fresh schema's tables planner statistics, as autovacuum's ANALYZE does within a
/// minute of a deployment's first traffic. Without them PostgreSQL plans blind, and the status
/// writer's attempt scans took the namespace's index and filtered every other endpoint's rows
/// (15× slower; docs/benchmarks.md, issue 19, session 18): every window measured the first
/// minute of an install instead of a running one.
async fn analyze_schema(url: &str, schema: &str) -> Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let tables = client
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1",
            &[&schema],
        )
        .await?;
    for row in tables {
        let table: String = row.get(0);
        client
            .batch_execute(&format!("ANALYZE {schema}.{table}"))
            .await?;
    }
    println!("  analyzed the schema's tables after the warm-up");
    Ok(())
}

async fn drop_schema(url: &str, schema: &str) {
    if let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await;
    }
}

/// Deletes the scenario's namespace and waits until the API server has finished deleting it. With
/// 10,000 endpoints that takes the API server minutes of CPU, which would otherwise be spent while
/// the next scenario is measured.
async fn delete_namespace(client: Client, namespace: &str) {
    const PATIENCE: Duration = Duration::from_secs(900);
    let api: Api<Namespace> = Api::all(client);
    let started = Instant::now();
    let uid = match api.delete(namespace, &DeleteParams::default()).await {
        Ok(either) => either.left().and_then(|namespace| namespace.metadata.uid),
        Err(err) => {
            eprintln!("deleting namespace {namespace}: {err}");
            return;
        }
    };
    let gone = kube::runtime::wait::await_condition(
        api,
        namespace,
        kube::runtime::wait::conditions::is_deleted(uid.as_deref().unwrap_or_default()),
    );
    match tokio::time::timeout(PATIENCE, gone).await {
        Ok(Ok(_)) => eprintln!(
            "namespace {namespace} deleted in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
        Ok(Err(err)) => eprintln!("waiting for namespace {namespace} to go: {err}"),
        Err(_) => eprintln!("namespace {namespace} still there after {PATIENCE:?}; going on"),
    }
}
