//! `analytics ENDPOINT`: the endpoint's WebhookAnalytics, with a chart of its last 24 hours.
use super::Ctx;
use crate::plugin::cli::AnalyticsArgs;
use crate::plugin::render;
use crate::plugin::Exit;
use crate::query::{Resource, WebhookAnalytics};

pub async fn run(ctx: &mut Ctx<'_>, args: AnalyticsArgs) -> anyhow::Result<Exit> {
    let analytics: WebhookAnalytics = ctx
        .query()
        .get(&ctx.namespace, Resource::Analytics, &args.endpoint)
        .await?;
    let now = ctx.now();
    ctx.show(args.output.output, &analytics, || {
        render::analytics_text(&analytics, now)
    })?;
    Ok(Exit::Ok)
}
