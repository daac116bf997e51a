//! `status [-A]`: one line per endpoint, from the endpoints' status and the query API's
//! analytics. Exit code 3 when any endpoint is not Ready.
use super::Ctx;
use crate::plugin::cli::StatusArgs;
use crate::plugin::client::MAX_PAGE;
use crate::plugin::render::{self, StatusRow};
use crate::plugin::Exit;
use crate::query::{Resource, WebhookAnalytics};

pub async fn run(ctx: &mut Ctx<'_>, args: StatusArgs) -> anyhow::Result<Exit> {
    let namespace = (!args.all_namespaces).then(|| ctx.namespace.clone());
    let endpoints = ctx.endpoints(namespace.as_deref()).await?;
    if endpoints.is_empty() {
        match &namespace {
            Some(ns) => ctx.note(&format!("No WebhookEndpoints found in namespace {ns}.")),
            None => ctx.note("No WebhookEndpoints found."),
        }
        if args.output.output == crate::plugin::cli::Format::Json {
            ctx.print(&render::json(&Vec::<StatusRow>::new()))?;
        }
        return Ok(Exit::Ok);
    }
    let analytics = match ctx
        .query()
        .collect::<WebhookAnalytics>(
            namespace.as_deref(),
            Resource::Analytics,
            "",
            usize::MAX,
            MAX_PAGE,
        )
        .await
    {
        Ok(collected) => Some(collected.items),
        Err(error) => {
            ctx.warn(&format!(
                "{error:#}; RATE is unknown and the other columns come from the endpoints' status"
            ));
            None
        }
    };
    let rows = render::status_rows(&endpoints, analytics.as_deref());
    let now = ctx.now();
    ctx.show(args.output.output, &rows, || {
        render::status_text(&rows, args.all_namespaces, now)
    })?;
    Ok(if rows.iter().all(StatusRow::is_ready) {
        Exit::Ok
    } else {
        Exit::Unhealthy
    })
}
