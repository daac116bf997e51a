//! `history ENDPOINT`: the endpoint's attempts, newest first, through the query API's field
//! selectors (`endpoint`, `outcome`, `eventType`).
use super::Ctx;
use crate::plugin::cli::HistoryArgs;
use crate::plugin::client::MAX_PAGE;
use crate::plugin::render;
use crate::plugin::Exit;
use crate::query::{ObjectList, Resource, WebhookDelivery};

/// The field selector of an endpoint's attempts, narrowed by outcome and event type.
pub fn selector(endpoint: &str, outcome: Option<&str>, event_type: Option<&str>) -> String {
    let mut selector = format!("endpoint={endpoint}");
    if let Some(outcome) = outcome {
        selector.push_str(&format!(",outcome={outcome}"));
    }
    if let Some(event_type) = event_type {
        selector.push_str(&format!(",eventType={event_type}"));
    }
    selector
}

pub async fn run(ctx: &mut Ctx<'_>, args: HistoryArgs) -> anyhow::Result<Exit> {
    // The endpoint exists: a typo is an error, not an empty history.
    ctx.endpoint(&args.endpoint).await?;
    let outcome = args.outcome.map(|o| o.as_str());
    let selector = selector(&args.endpoint, outcome, args.event_type.as_deref());
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    // The store reads one endpoint's attempts; other requirements filter each page, so pages
    // are read whole when there are any.
    let page = if outcome.is_some() || args.event_type.is_some() {
        MAX_PAGE
    } else {
        limit.min(MAX_PAGE)
    };
    let collected = ctx
        .query()
        .collect::<WebhookDelivery>(
            Some(&ctx.namespace),
            Resource::Deliveries,
            &selector,
            limit,
            page,
        )
        .await?;
    if collected.items.is_empty() && args.output.output == crate::plugin::cli::Format::Text {
        ctx.note(&format!(
            "No attempts found for endpoint {} in namespace {} (selector {selector}).",
            args.endpoint, ctx.namespace
        ));
        return Ok(Exit::Ok);
    }
    let list = ObjectList::new(
        Resource::Deliveries,
        collected.items,
        collected.resource_version,
        None,
    );
    let now = ctx.now();
    ctx.show(args.output.output, &list, || {
        render::history_text(&list.items, now)
    })?;
    Ok(Exit::Ok)
}
