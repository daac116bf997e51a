//! `kubectl webhooks`: a kubectl plugin for webhook-operator (binary `kubectl-webhooks`,
//! `src/bin/kubectl-webhooks.rs`; docs/kubectl-plugin.md). It reads the kubeconfig as kubectl
//! does, reads history, dead letters and analytics from the aggregated query API
//! (`crate::query`'s types), and changes endpoints, replays and events on the CRDs
//! (`crate::api`'s types) with the user's own credentials.
//!
//! - `cli.rs`: the command line (clap); `commands/`: one file per command, on a [`Ctx`];
//! - `client.rs`: the kubeconfig, and the query API's requests (get, paged lists, watch);
//! - `error.rs`: errors that say what to fix; usage errors (exit code 2);
//! - `render/` (one file per view) and `chart.rs`: what is printed, as pure functions of the
//!   objects and the time.
pub mod chart;
pub mod cli;
pub mod client;
pub mod commands;
pub mod error;
pub mod render;

use std::io::Write;
use std::process::ExitCode;

pub use commands::{Ctx, Env};

use cli::{Cli, Command};
use error::UsageError;

/// How a command ended: the process's exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Ok = 0,
    /// 1: an error (the API refused or could not be reached, a wait timed out).
    Error = 1,
    /// 2: the command line was wrong.
    Usage = 2,
    /// 3: done, but what was looked at is not healthy or failed (an endpoint not Ready, a
    /// failed test delivery, a replay or event that did not deliver).
    Unhealthy = 3,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// The exit code of an error: 2 for a usage error, 1 for anything else.
pub fn exit_of(error: &anyhow::Error) -> Exit {
    if error.downcast_ref::<UsageError>().is_some() {
        Exit::Usage
    } else {
        Exit::Error
    }
}

/// Whether the error is only that whoever read the output went away (`| head`): not an error.
fn closed_output(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `publish NAMESPACE TYPE` (the form) is `publish TYPE -n NAMESPACE`.
fn normalize(mut cli: Cli) -> Result<Cli, UsageError> {
    if let Command::Publish(publish) = &cli.command {
        if let [namespace, _type] = publish.words.as_slice() {
            match &cli.kube.namespace {
                Some(flag) if flag != namespace => {
                    return Err(UsageError(format!(
                        "publish: the namespace is given twice, as `{namespace}` and as -n {flag}; \
                         write `publish TYPE -n NAMESPACE`"
                    )))
                }
                _ => cli.kube.namespace = Some(namespace.clone()),
            }
        }
    }
    Ok(cli)
}

/// Runs a parsed command line against the cluster of its kubeconfig, printing to `out` and
/// `err`; the exit code.
pub async fn run(
    cli: Cli,
    env: &Env,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Exit {
    if let Command::Completion(args) = &cli.command {
        return finish(commands::completion(out, args.shell), err);
    }
    match client::connect(&cli.kube).await {
        Ok((client, namespace)) => run_with(cli, client, &namespace, env, out, err).await,
        Err(error) => finish(Err(error), err),
    }
}

/// Runs a parsed command line with `client`; the namespace is `-n`, else `default_namespace`
/// (the kubeconfig context's).
pub async fn run_with(
    cli: Cli,
    client: kube::Client,
    default_namespace: &str,
    env: &Env,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Exit {
    let cli = match normalize(cli) {
        Ok(cli) => cli,
        Err(error) => return finish(Err(error.into()), err),
    };
    let namespace = cli
        .kube
        .namespace
        .clone()
        .unwrap_or_else(|| default_namespace.to_owned());
    let mut ctx = Ctx {
        client,
        namespace,
        out: &mut *out,
        err: &mut *err,
        env,
    };
    let result = commands::run(cli.command, &mut ctx).await;
    finish(result, err)
}

/// The exit code of a command's result, its error printed as kubectl prints one.
pub fn finish(result: anyhow::Result<Exit>, err: &mut (dyn Write + Send)) -> Exit {
    match result {
        Ok(exit) => exit,
        Err(error) if closed_output(&error) => Exit::Ok,
        Err(error) => {
            let _ = writeln!(err, "error: {error:#}");
            exit_of(&error)
        }
    }
}

/// The binary's `main`: parses the command line (usage errors exit 2, as clap does), runs the
/// command on a single-threaded runtime, and exits with its code.
pub fn main() -> ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    crate::runtime::tls::install_default_provider();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the async runtime: {error}");
            return Exit::Error.into();
        }
    };
    let env = Env::system();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    runtime.block_on(run(cli, &env, &mut out, &mut err)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn publish_takes_the_namespace_first_or_from_n() {
        let cli = normalize(
            Cli::try_parse_from(["kubectl-webhooks", "publish", "crm", "user.created"]).unwrap(),
        )
        .unwrap();
        assert_eq!(cli.kube.namespace.as_deref(), Some("crm"));
        let cli = normalize(
            Cli::try_parse_from(["kubectl-webhooks", "publish", "user.created", "-n", "crm"])
                .unwrap(),
        )
        .unwrap();
        assert_eq!(cli.kube.namespace.as_deref(), Some("crm"));
        let twice = normalize(
            Cli::try_parse_from([
                "kubectl-webhooks",
                "publish",
                "crm",
                "user.created",
                "-n",
                "billing",
            ])
            .unwrap(),
        );
        assert!(twice.is_err());
    }

    #[test]
    fn errors_map_to_exit_codes() {
        let mut err = Vec::new();
        let usage = anyhow::Error::new(UsageError("bad".into()));
        assert_eq!(finish(Err(usage), &mut err), Exit::Usage);
        assert_eq!(String::from_utf8(err).unwrap(), "error: bad\n");
        let mut err = Vec::new();
        let other = anyhow::anyhow!("the API refused");
        assert_eq!(finish(Err(other), &mut err), Exit::Error);
        let mut err = Vec::new();
        let pipe = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing the output");
        assert_eq!(finish(Err(pipe), &mut err), Exit::Ok);
        assert!(err.is_empty());
        assert_eq!(ExitCode::from(Exit::Unhealthy), ExitCode::from(3));
    }
}
