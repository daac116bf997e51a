//! `webhook-operator`: one binary, one subcommand per process. Wiring only.
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use webhook_operator::{api, controller, dispatcher, runtime, transform};

/// mimalloc instead of glibc's allocator: a jq run is hundreds of small allocations, and in the
/// transform workers glibc's malloc took most of the CPU (see docs/benchmarks.md, Transforms).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "webhook-operator",
    version,
    about = "Delivers signed webhooks, the Kubernetes way"
)]
struct Cli {
    /// Log as JSON lines (for log pipelines) instead of human-readable text.
    #[arg(long, global = true, env = "WEBHOOK_OPERATOR_LOG_JSON")]
    log_json: bool,
    /// Export spans over OTLP/HTTP to this collector (`http://collector:4318`; `/v1/traces` is
    /// appended). Off when unset. The batch settings follow the SDK's `OTEL_BSP_*` variables.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reconcile WebhookEndpoints and WebhookSubscriptions.
    Controller(controller::ControllerConfig),
    /// Deliver events from WebhookEvents and the ingest API to endpoints.
    Dispatcher(Box<dispatcher::DispatcherConfig>),
    /// Write the CustomResourceDefinitions generated from the types to a directory.
    Crdgen {
        /// Where to write the YAML files.
        #[arg(long, default_value = "crds")]
        out: PathBuf,
    },
    /// Runs transforms for a dispatcher over stdin and stdout (the dispatcher starts these).
    #[command(hide = true)]
    TransformWorker {
        /// The address-space limit of this process, in bytes.
        #[arg(long)]
        memory_limit: u64,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::TransformWorker { memory_limit } = cli.command {
        // No logging and no async runtime: a small process that only runs programs.
        return match transform::worker::main(memory_limit) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("webhook-operator transform-worker: {error}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    // Before anything builds an HTTP client (the OTLP exporter is one).
    runtime::tls::install_default_provider();
    let service = match &cli.command {
        Command::Controller(_) => "webhook-operator-controller",
        Command::Dispatcher(_) => "webhook-operator-dispatcher",
        _ => "webhook-operator",
    };
    let _exporter =
        match runtime::logging::init(cli.log_json, cli.otlp_endpoint.as_deref(), service) {
            Ok(exporter) => exporter,
            Err(error) => {
                eprintln!("webhook-operator: {error}");
                return std::process::ExitCode::FAILURE;
            }
        };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("webhook-operator: starting the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Controller(config) => controller::run(config).await,
            Command::Dispatcher(config) => dispatcher::run(*config).await,
            Command::Crdgen { out } => crdgen(&out),
            Command::TransformWorker { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            let message = describe(&error);
            tracing::error!(error = %message, "exiting");
            eprintln!("webhook-operator: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn crdgen(out: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (file, yaml) in api::crds::render_yaml().context("rendering the CRDs")? {
        let path = out.join(file);
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The error and its causes, `: `-separated, leaving out a cause whose text its parent's message
/// already includes (our errors often embed their source), so nothing is said twice.
fn describe(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    let mut parent = message.clone();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !parent.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        parent = text;
    }
    message
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the file: {0}")]
    struct Embeds(#[source] std::io::Error);

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let embedded = anyhow::Error::new(Embeds(io()));
        assert_eq!(describe(&embedded), "reading the file: no such file");
        let wrapped = anyhow::Error::new(io()).context("opening the store");
        assert_eq!(describe(&wrapped), "opening the store: no such file");
    }
}
