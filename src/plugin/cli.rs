//! The command line of `kubectl webhooks` (clap). Flags follow kubectl: `--kubeconfig`,
//! `--context`, `-n/--namespace` anywhere on the line, `-A` where a command lists, `-o json` on
//! every command that prints something. Every command's `--help` ends with examples.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// What the exit codes mean, at the end of the top-level help.
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error: the API refused or could not be reached, the endpoint does not exist, a wait timed out
  2  usage: an unknown flag, a bad value, --data that is not a JSON object
  3  not healthy or failed: `status` found an endpoint that is not Ready, `test` got a failure
     from the receiver, `replay --wait` ended Failed or with failed redeliveries, `publish --wait`
     ended other than Delivered

Reads come from the aggregated query API (query.webhooks.pitchey.io/v1alpha1: webhookdeliveries,
webhookdeadletters, webhookanalytics); changes are made on the webhooks.pitchey.io resources with
your own credentials, so RBAC and the audit log see you.";

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-webhooks",
    bin_name = "kubectl webhooks",
    version,
    about = "Inspect and operate webhook-operator's endpoints: health, history, dead letters, analytics, tests, replays",
    after_help = EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the cluster: as kubectl does.
#[derive(Args, Debug, Clone, Default)]
pub struct KubeArgs {
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the in-cluster
    /// ServiceAccount).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current-context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// `-o text` (default) or `-o json`.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// One line per endpoint: Ready, circuit, rate, pending, 24-hour success, last error.
    #[command(after_help = "\
Columns: READY is the Ready condition (`,Suspended` while spec.suspend is set, `,Paused` while a
dead letter pauses an ordered endpoint); RATE is attempts per second over the last hour; PENDING
counts deliveries not finished (pending, in flight, held, queued); SUCCESS 24h is the share of
successful attempts over the last 24 hours. Exit code 3 when any endpoint is not Ready.

Examples:
  kubectl webhooks status
  kubectl webhooks status -A
  kubectl webhooks status -n crm -o json")]
    Status(StatusArgs),
    /// An endpoint's spec, conditions, circuit, last test, recent attempts and dead letters.
    #[command(after_help = "\
Examples:
  kubectl webhooks describe crm
  kubectl webhooks describe crm -n crm -o json")]
    Describe(DescribeArgs),
    /// An endpoint's delivery attempts, newest first.
    #[command(after_help = "\
Examples:
  kubectl webhooks history crm
  kubectl webhooks history crm --outcome Failed --limit 50
  kubectl webhooks history crm --type user.created -o json")]
    History(HistoryArgs),
    /// Dead-lettered deliveries, of one endpoint or all of a namespace's (or every namespace's
    /// with -A).
    #[command(after_help = "\
Replay them with `kubectl webhooks replay ENDPOINT --since 24h`.

Examples:
  kubectl webhooks deadletters
  kubectl webhooks deadletters crm
  kubectl webhooks deadletters -A -o json")]
    Deadletters(DeadLettersArgs),
    /// An endpoint's analytics: the last hour and day, totals, queue, and a chart of the last 24
    /// hours.
    #[command(after_help = "\
Examples:
  kubectl webhooks analytics crm
  kubectl webhooks analytics crm -o json")]
    Analytics(AnalyticsArgs),
    /// Sends a signed `webhook.test` delivery now and prints the receiver's answer.
    #[command(after_help = "\
Sets the annotation webhooks.pitchey.io/test to a new nonce; the dispatcher that owns the endpoint
sends the test and records it in status.lastTest, which this command waits for. Needs `patch` on
the WebhookEndpoint. Exit code 3 when the receiver failed (no 2xx).

Examples:
  kubectl webhooks test crm
  kubectl webhooks test crm --timeout 1m -o json")]
    Test(TestArgs),
    /// Redelivers an endpoint's past deliveries (dead letters by default) through a
    /// WebhookReplay.
    #[command(after_help = "\
Creates a WebhookReplay (kept in the namespace as the record of what was replayed). With --wait
it follows the replay to its Complete condition, printing its progress; exit code 3 when it
ended Failed or some redeliveries failed again.

Examples:
  kubectl webhooks replay crm --since 2h
  kubectl webhooks replay crm --since 2h --types 'user.*' --wait
  kubectl webhooks replay crm --from 2026-01-15T10:00:00Z --to 2026-01-15T11:00:00Z --outcomes DeadLettered,Delivered")]
    Replay(ReplayArgs),
    /// Stops deliveries to an endpoint (spec.suspend=true): they are held, not lost.
    #[command(after_help = "\
Examples:
  kubectl webhooks suspend crm
  kubectl webhooks suspend crm -n crm")]
    Suspend(ChangeArgs),
    /// Resumes a suspended endpoint (spec.suspend=false): held deliveries are sent.
    #[command(after_help = "\
Examples:
  kubectl webhooks resume crm")]
    Resume(ChangeArgs),
    /// Rotates an endpoint's generated signing key; the previous key keeps signing for the
    /// grace period.
    #[command(after_help = "\
Sets the annotation webhooks.pitchey.io/rotate-secret to a new value; the controller rotates the
key in the Secret <endpoint>-signing. Endpoints signing with a Secret you manage
(spec.signing.secretRef) are rotated in that Secret instead. --wait waits for
status.signing.lastRotationTime to move.

Examples:
  kubectl webhooks rotate-secret crm
  kubectl webhooks rotate-secret crm --wait")]
    RotateSecret(RotateArgs),
    /// Publishes an event: creates a WebhookEvent.
    #[command(after_help = "\
The namespace is -n, as everywhere in kubectl; `publish NAMESPACE TYPE` (the issue's form) works
too. --data is JSON text, @FILE, or @- for stdin. With --wait it waits until every delivery
finished; exit code 3 unless the event ended Delivered.

Examples:
  kubectl webhooks publish user.created --data '{\"user\":{\"id\":42}}' -n crm
  kubectl webhooks publish user.created --data @event.json --wait
  kubectl webhooks publish crm user.created --data @- < event.json")]
    Publish(PublishArgs),
    /// Streams an endpoint's new delivery attempts until interrupted (Ctrl-C).
    #[command(after_help = "\
Examples:
  kubectl webhooks tail crm
  kubectl webhooks tail crm --outcome Failed --last 5
  kubectl webhooks tail crm -o json | jq .statusCode")]
    Tail(TailArgs),
    /// Prints a shell completion script for `kubectl-webhooks`.
    #[command(after_help = "\
The script completes the binary `kubectl-webhooks` itself (called directly or through an alias).

Examples:
  kubectl webhooks completion bash > /etc/bash_completion.d/kubectl-webhooks
  kubectl webhooks completion zsh > \"${fpath[1]}/_kubectl-webhooks\"
  kubectl webhooks completion fish > ~/.config/fish/completions/kubectl-webhooks.fish")]
    Completion(CompletionArgs),
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// The WebhookEndpoint.
    pub endpoint: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// What an attempt came to (the query API's `outcome` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum OutcomeArg {
    Delivered,
    Failed,
    Filtered,
    Held,
}

impl OutcomeArg {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeArg::Delivered => "Delivered",
            OutcomeArg::Failed => "Failed",
            OutcomeArg::Filtered => "Filtered",
            OutcomeArg::Held => "Held",
        }
    }
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The WebhookEndpoint.
    pub endpoint: String,
    /// Only attempts with this outcome.
    #[arg(long, value_enum, ignore_case = true)]
    pub outcome: Option<OutcomeArg>,
    /// Only attempts of this event type (e.g. user.created).
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// At most this many attempts.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct DeadLettersArgs {
    /// Only this WebhookEndpoint's dead letters.
    pub endpoint: Option<String>,
    /// Every namespace (the namespaces of the WebhookEndpoints you may list).
    #[arg(short = 'A', long, conflicts_with = "endpoint")]
    pub all_namespaces: bool,
    /// At most this many dead letters per namespace.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct AnalyticsArgs {
    /// The WebhookEndpoint.
    pub endpoint: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct TestArgs {
    /// The WebhookEndpoint.
    pub endpoint: String,
    /// How long to wait for the result (the receiver's time plus the dispatcher's next status
    /// write).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Outcomes a replay selects (WebhookReplay `spec.outcomes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum ReplayOutcomeArg {
    DeadLettered,
    Delivered,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The WebhookEndpoint.
    pub endpoint: String,
    /// Deliveries of this long ago until now: 30m, 2h, 7d.
    #[arg(long, value_parser = parse_since, required_unless_present = "from", conflicts_with = "from")]
    pub since: Option<Duration>,
    /// Start of the range (RFC 3339, e.g. 2026-01-15T10:00:00Z), instead of --since.
    #[arg(long, value_parser = parse_time)]
    pub from: Option<jiff::Timestamp>,
    /// End of the range (RFC 3339); now when unset.
    #[arg(long, value_parser = parse_time, requires = "from")]
    pub to: Option<jiff::Timestamp>,
    /// Event types or patterns, comma separated (user.created, 'user.*'); all when unset.
    #[arg(long, value_delimiter = ',', value_name = "TYPES")]
    pub types: Vec<String>,
    /// Which deliveries to replay, comma separated.
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        value_delimiter = ',',
        default_value = "DeadLettered"
    )]
    pub outcomes: Vec<ReplayOutcomeArg>,
    /// Follow the replay to completion, printing its progress.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct ChangeArgs {
    /// The WebhookEndpoint.
    pub endpoint: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct RotateArgs {
    /// The WebhookEndpoint.
    pub endpoint: String,
    /// Wait until the controller reports the rotation (status.signing.lastRotationTime).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The event type (user.created); or NAMESPACE followed by the type.
    #[arg(value_name = "TYPE", num_args = 1..=2, required = true)]
    pub words: Vec<String>,
    /// The event's data: a JSON object, @FILE, or @- for stdin.
    #[arg(long, default_value = "{}")]
    pub data: String,
    /// Idempotency key: events with the same id in a namespace are delivered once.
    #[arg(long)]
    pub id: Option<String>,
    /// Wait until every delivery finished.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct TailArgs {
    /// The WebhookEndpoint.
    pub endpoint: String,
    /// Only attempts with this outcome.
    #[arg(long, value_enum, ignore_case = true)]
    pub outcome: Option<OutcomeArg>,
    /// First print the last N attempts.
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=500))]
    pub last: u32,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `30s`, `5m`, `1h30m` (Kubernetes durations).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    crate::api::duration::parse(value).map_err(|e| e.to_string())
}

/// A duration that may also count days: `7d`, `1d12h`, or any of [`parse_duration`]'s.
pub fn parse_since(value: &str) -> Result<Duration, String> {
    let (days, rest) = match value.split_once('d') {
        Some((days, rest)) if !days.is_empty() && days.bytes().all(|b| b.is_ascii_digit()) => {
            let days: u64 = days
                .parse()
                .map_err(|_| format!("`{value}`: too many days"))?;
            (days, rest)
        }
        _ => (0, value),
    };
    let rest = if rest.is_empty() && days > 0 {
        Duration::ZERO
    } else {
        parse_duration(rest).map_err(|e| format!("{e}, or days: `7d`, `1d12h`"))?
    };
    days.checked_mul(86_400)
        .map(Duration::from_secs)
        .and_then(|d| d.checked_add(rest))
        .ok_or_else(|| format!("`{value}` is out of range"))
}

/// An RFC 3339 time.
pub fn parse_time(value: &str) -> Result<jiff::Timestamp, String> {
    value.parse().map_err(|e| {
        format!("`{value}` is not an RFC 3339 time ({e}); write e.g. 2026-01-15T10:30:00Z")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn since_counts_days_too() {
        assert_eq!(parse_since("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_since("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(
            parse_since("1d12h").unwrap(),
            Duration::from_secs(36 * 3600)
        );
        assert!(parse_since("d").is_err());
        assert!(parse_since("soon").unwrap_err().contains("7d"));
        assert!(parse_since("").is_err());
    }

    #[test]
    fn kubectl_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "kubectl-webhooks",
            "history",
            "crm",
            "-n",
            "crm",
            "--outcome",
            "Failed",
            "-o",
            "json",
            "--context",
            "prod",
        ])
        .unwrap();
        assert_eq!(cli.kube.namespace.as_deref(), Some("crm"));
        assert_eq!(cli.kube.context.as_deref(), Some("prod"));
        let Command::History(history) = cli.command else {
            panic!("history")
        };
        assert_eq!(history.outcome, Some(OutcomeArg::Failed));
        assert_eq!(history.output.output, Format::Json);
    }

    #[test]
    fn replay_needs_a_range_and_takes_one() {
        assert!(Cli::try_parse_from(["kubectl-webhooks", "replay", "crm"]).is_err());
        assert!(Cli::try_parse_from([
            "kubectl-webhooks",
            "replay",
            "crm",
            "--since",
            "2h",
            "--from",
            "2026-01-01T00:00:00Z"
        ])
        .is_err());
        let cli = Cli::try_parse_from([
            "kubectl-webhooks",
            "replay",
            "crm",
            "--since",
            "2h",
            "--types",
            "user.*,pitch.created",
            "--outcomes",
            "DeadLettered,Delivered",
        ])
        .unwrap();
        let Command::Replay(replay) = cli.command else {
            panic!("replay")
        };
        assert_eq!(replay.types, ["user.*", "pitch.created"]);
        assert_eq!(
            replay.outcomes,
            [ReplayOutcomeArg::DeadLettered, ReplayOutcomeArg::Delivered]
        );
    }

    #[test]
    fn usage_errors_exit_2() {
        let error = Cli::try_parse_from(["kubectl-webhooks", "history"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let error = Cli::try_parse_from(["kubectl-webhooks", "test", "crm", "--timeout", "soon"])
            .unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }
}
