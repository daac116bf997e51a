//! `describe ENDPOINT`: the endpoint's spec, conditions, circuit and last test (its resource),
//! its analytics and last 10 attempts (the query API). Without the query API it still describes
//! the resource, and says why the rest is missing.
use super::Ctx;
use crate::plugin::cli::DescribeArgs;
use crate::plugin::render::{self, Description};
use crate::plugin::Exit;
use crate::query::{Resource, WebhookAnalytics, WebhookDelivery};

/// Attempts `describe` shows.
const RECENT: usize = 10;

pub async fn run(ctx: &mut Ctx<'_>, args: DescribeArgs) -> anyhow::Result<Exit> {
    let endpoint = ctx.endpoint(&args.endpoint).await?;
    let selector = format!("endpoint={}", args.endpoint);
    let query = ctx.query();
    let (recent, analytics) = futures::join!(
        query.collect::<WebhookDelivery>(
            Some(&ctx.namespace),
            Resource::Deliveries,
            &selector,
            RECENT,
            RECENT,
        ),
        query.get::<WebhookAnalytics>(&ctx.namespace, Resource::Analytics, &args.endpoint),
    );
    let query_error = match (&recent, &analytics) {
        (Err(error), _) | (_, Err(error)) => Some(format!("{error:#}")),
        _ => None,
    };
    if let Some(error) = &query_error {
        ctx.warn(error);
    }
    let description = Description {
        endpoint,
        analytics: analytics.ok(),
        recent_attempts: recent.ok().map(|c| c.items),
        query_error,
    };
    let now = ctx.now();
    ctx.show(args.output.output, &description, || {
        render::describe_text(&description, now)
    })?;
    Ok(Exit::Ok)
}
