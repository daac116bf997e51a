//! One file per command. Each reads what it needs (the CRDs through `Api<T>`, history through
//! the query API), hands it to `render`, and says how it ended ([`Exit`]). What a command needs
//! from the outside world is in [`Ctx`], so tests run them against a fake API server with a
//! fixed clock.
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::cli::{Command, Format};
use super::client::Query;
use super::error::{api_error, Target};
use super::render;
use super::Exit;
use crate::api::WebhookEndpoint;

mod analytics;
mod completion;
mod deadletters;
mod describe;
mod history;
mod publish;
mod replay;
mod rotate;
mod status;
mod suspend;
mod tail;
mod test_delivery;

/// The field manager of the plugin's changes (patches of endpoints, created replays and events).
pub const FIELD_MANAGER: &str = "kubectl-webhooks";

/// A future that completes when the user interrupts (Ctrl-C).
pub type Interrupted = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What commands take from the world besides the API: the clock, fresh tokens, the pace of
/// polling, and the user's interrupt.
pub struct Env {
    pub now: Box<dyn Fn() -> Timestamp + Send + Sync>,
    /// A fresh value for an annotation that triggers something once (test, rotate).
    pub token: Box<dyn Fn() -> String + Send + Sync>,
    /// How often a waiting command reads the object again.
    pub poll: Duration,
    /// Called once by a command that runs until interrupted (`tail`).
    pub interrupted: Box<dyn Fn() -> Interrupted + Send + Sync>,
}

impl Env {
    /// The real clock, random tokens, one read a second, Ctrl-C.
    pub fn system() -> Env {
        Env {
            now: Box::new(Timestamp::now),
            token: Box::new(|| format!("kubectl-{}", ulid::Ulid::new().to_string().to_lowercase())),
            poll: Duration::from_secs(1),
            interrupted: Box::new(|| {
                Box::pin(async {
                    // Without a signal handler there is nothing to wait for: run until the end.
                    if tokio::signal::ctrl_c().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                })
            }),
        }
    }
}

/// A command's world: the client, the namespace, where output goes, and the [`Env`].
pub struct Ctx<'a> {
    pub client: Client,
    pub namespace: String,
    pub out: &'a mut (dyn Write + Send),
    pub err: &'a mut (dyn Write + Send),
    pub env: &'a Env,
}

impl Ctx<'_> {
    pub fn now(&self) -> Timestamp {
        (self.env.now)()
    }

    /// Writes to standard output.
    pub fn print(&mut self, text: &str) -> anyhow::Result<()> {
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .context("writing the output")
    }

    /// Prints `value` as text or as JSON, as `-o` says.
    pub fn show(
        &mut self,
        format: Format,
        value: &impl Serialize,
        text: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        match format {
            Format::Json => self.print(&render::json(value)),
            Format::Text => self.print(&text()),
        }
    }

    /// A warning on standard error (the command goes on).
    pub fn warn(&mut self, message: &str) {
        // Nowhere to report a failure to write to stderr.
        let _ = writeln!(self.err, "warning: {message}");
    }

    /// A note on standard error, such as kubectl's "No resources found".
    pub fn note(&mut self, message: &str) {
        let _ = writeln!(self.err, "{message}");
    }

    pub fn query(&self) -> Query<'_> {
        Query(&self.client)
    }

    /// The namespace's API of a CRD kind.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The object `name` of kind `K` in the namespace.
    pub async fn get<K>(&self, name: &str) -> anyhow::Result<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let kind = K::kind(&());
        self.api::<K>().get(name).await.map_err(|e| {
            api_error(
                e,
                &format!("reading {} {name}", kind.to_lowercase()),
                Target::new(&kind, &self.namespace),
            )
        })
    }

    /// Creates `object` in the namespace as the plugin's field manager; `what` says what it is
    /// for errors (`a WebhookReplay of crm`).
    pub async fn create<K>(&self, object: &K, what: &str) -> anyhow::Result<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Serialize
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        self.api::<K>().create(&params, object).await.map_err(|e| {
            api_error(
                e,
                &format!("creating {what}"),
                Target::new(&K::kind(&()), &self.namespace),
            )
        })
    }

    /// The WebhookEndpoints of `namespace`, or of every namespace.
    pub async fn endpoints(&self, namespace: Option<&str>) -> anyhow::Result<Vec<WebhookEndpoint>> {
        let api: Api<WebhookEndpoint> = match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let action = match namespace {
            Some(_) => "listing webhookendpoints",
            None => "listing webhookendpoints in every namespace",
        };
        let target = Target {
            kind: "WebhookEndpoint",
            namespace,
        };
        api.list(&ListParams::default())
            .await
            .map(|list| list.items)
            .map_err(|e| api_error(e, action, target))
    }

    /// The WebhookEndpoint `name` of the namespace.
    pub async fn endpoint(&self, name: &str) -> anyhow::Result<WebhookEndpoint> {
        self.get(name).await
    }

    /// A JSON merge patch of the WebhookEndpoint `name`, as the plugin's field manager.
    pub async fn patch_endpoint(
        &self,
        name: &str,
        action: &str,
        patch: serde_json::Value,
    ) -> anyhow::Result<WebhookEndpoint> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        self.api::<WebhookEndpoint>()
            .patch(name, &params, &Patch::Merge(patch))
            .await
            .map_err(|e| api_error(e, action, Target::new("WebhookEndpoint", &self.namespace)))
    }

    /// A deadline `timeout` from now for a command that waits.
    pub fn deadline(&self, timeout: Duration) -> Deadline {
        Deadline {
            at: tokio::time::Instant::now() + timeout,
            poll: self.env.poll,
        }
    }
}

/// When a waiting command gives up, and how often it looks again.
pub struct Deadline {
    at: tokio::time::Instant,
    poll: Duration,
}

impl Deadline {
    /// Sleeps one poll interval; false once the deadline has passed.
    pub async fn tick(&self) -> bool {
        if tokio::time::Instant::now() >= self.at {
            return false;
        }
        tokio::time::sleep(self.poll).await;
        true
    }
}

/// Runs `command` (anything but `completion`, which needs no cluster: see [`completion::run`]).
pub async fn run(command: Command, ctx: &mut Ctx<'_>) -> anyhow::Result<Exit> {
    match command {
        Command::Status(args) => status::run(ctx, args).await,
        Command::Describe(args) => describe::run(ctx, args).await,
        Command::History(args) => history::run(ctx, args).await,
        Command::Deadletters(args) => deadletters::run(ctx, args).await,
        Command::Analytics(args) => analytics::run(ctx, args).await,
        Command::Test(args) => test_delivery::run(ctx, args).await,
        Command::Replay(args) => replay::run(ctx, args).await,
        Command::Suspend(args) => suspend::run(ctx, args, true).await,
        Command::Resume(args) => suspend::run(ctx, args, false).await,
        Command::RotateSecret(args) => rotate::run(ctx, args).await,
        Command::Publish(args) => publish::run(ctx, args).await,
        Command::Tail(args) => tail::run(ctx, args).await,
        Command::Completion(args) => completion::run(ctx.out, args.shell),
    }
}

pub use completion::run as completion;
