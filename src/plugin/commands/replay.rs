//! `replay ENDPOINT --since 2h`: creates a WebhookReplay of the endpoint's deliveries in the range
//! (dead letters unless --outcomes says otherwise) and, with --wait, follows its status to the
//! Complete condition.
use jiff::{SignedDuration, Timestamp};
use kube::api::ObjectMeta;

use super::Ctx;
use crate::api::references::LocalObjectReference;
use crate::api::replay::{ReplayOutcome, ReplayPhase};
use crate::api::time::rfc3339;
use crate::api::validation::validate_replay;
use crate::api::{WebhookReplay, WebhookReplaySpec};
use crate::plugin::cli::{Format, ReplayArgs, ReplayOutcomeArg};
use crate::plugin::error::UsageError;
use crate::plugin::render;
use crate::plugin::Exit;

/// The replay's spec from the command line; a range the API would refuse is a usage error.
pub fn spec(args: &ReplayArgs, now: Timestamp) -> Result<WebhookReplaySpec, UsageError> {
    let from = match (args.since, args.from) {
        (Some(since), _) => SignedDuration::try_from(since)
            .ok()
            .and_then(|since| now.checked_sub(since).ok())
            .ok_or_else(|| UsageError("--since reaches before the year -9999".to_owned()))?,
        (None, Some(from)) => from,
        (None, None) => return Err(UsageError("give --since or --from".to_owned())),
    };
    let spec = WebhookReplaySpec {
        endpoint_ref: LocalObjectReference {
            name: args.endpoint.clone(),
        },
        from: rfc3339(from),
        to: args.to.map(rfc3339),
        event_types: args.types.clone(),
        outcomes: args
            .outcomes
            .iter()
            .map(|o| match o {
                ReplayOutcomeArg::DeadLettered => ReplayOutcome::DeadLettered,
                ReplayOutcomeArg::Delivered => ReplayOutcome::Delivered,
            })
            .collect(),
    };
    validate_replay(&spec).map_err(|e| UsageError(format!("the replay would be refused: {e}")))?;
    Ok(spec)
}

pub async fn run(ctx: &mut Ctx<'_>, args: ReplayArgs) -> anyhow::Result<Exit> {
    let spec = spec(&args, ctx.now())?;
    ctx.endpoint(&args.endpoint).await?;
    let prefix: String = format!("{}-", args.endpoint).chars().take(200).collect();
    let replay = WebhookReplay {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: Some(ctx.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    };
    let created = ctx
        .create(&replay, &format!("a WebhookReplay of {}", args.endpoint))
        .await?;
    let name = created.metadata.name.clone().unwrap_or_default();
    let format = args.output.output;
    if format == Format::Text {
        ctx.print(&render::replay_created_text(&created))?;
    }
    if !args.wait {
        if format == Format::Json {
            ctx.print(&render::json(&created))?;
        } else {
            ctx.note(&format!(
                "Follow it with `kubectl get webhookreplay {name} -n {} -w`, or run this with --wait.",
                ctx.namespace
            ));
        }
        return Ok(Exit::Ok);
    }
    let deadline = ctx.deadline(args.timeout);
    let mut last_line = String::new();
    loop {
        let current: WebhookReplay = ctx.get(&name).await?;
        let status = current.status.as_ref();
        let line = render::replay_progress_text(status);
        if format == Format::Text && line != last_line {
            ctx.print(&line)?;
            last_line = line;
        }
        let phase = status.and_then(|s| s.phase);
        if let (Some(ReplayPhase::Complete | ReplayPhase::Failed), Some(status)) = (phase, status) {
            if format == Format::Json {
                ctx.print(&render::json(&current))?;
            }
            return Ok(if render::replay_failed(status) {
                Exit::Unhealthy
            } else {
                Exit::Ok
            });
        }
        if !deadline.tick().await {
            anyhow::bail!(
                "webhookreplay {name} did not complete within {}; it goes on: follow it with \
                 `kubectl get webhookreplay {name} -n {} -w`",
                crate::api::duration::format(args.timeout),
                ctx.namespace
            );
        }
    }
}
