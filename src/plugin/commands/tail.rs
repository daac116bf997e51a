//! `tail ENDPOINT`: lists the endpoint's attempts once (for the resourceVersion to start from and
//! the last N), then watches webhookdeliveries for new ones and prints each as it is recorded,
//! watching again from the last one whenever the server ends a watch, until interrupted.
use futures::StreamExt;
use kube::core::WatchEvent;

use super::history::selector;
use super::Ctx;
use crate::plugin::cli::{Format, TailArgs};
use crate::plugin::client::MAX_PAGE;
use crate::plugin::render;
use crate::plugin::Exit;
use crate::query::{Resource, WebhookDelivery};

fn line(format: Format, delivery: &WebhookDelivery) -> String {
    match format {
        Format::Json => render::json_line(delivery),
        Format::Text => render::tail_text(delivery),
    }
}

pub async fn run(ctx: &mut Ctx<'_>, args: TailArgs) -> anyhow::Result<Exit> {
    let name = args.endpoint.as_str();
    ctx.endpoint(name).await?;
    let outcome = args.outcome.map(|o| o.as_str());
    let selector = selector(name, outcome, None);
    let last = usize::try_from(args.last).unwrap_or(0);
    let page = if outcome.is_some() {
        MAX_PAGE
    } else {
        last.max(1)
    };
    let namespace = ctx.namespace.clone();
    let listed = ctx
        .query()
        .collect::<WebhookDelivery>(
            Some(&namespace),
            Resource::Deliveries,
            &selector,
            last.max(1),
            page,
        )
        .await?;
    let format = args.output.output;
    if format == Format::Text {
        ctx.print(&render::tail_header())?;
    }
    for delivery in listed.items.iter().take(last).rev() {
        ctx.print(&line(format, delivery))?;
    }
    let mut resource_version = listed.resource_version;
    let mut interrupted = (ctx.env.interrupted)();
    loop {
        let events = {
            let query = ctx.query();
            let watch = query.watch_deliveries(&namespace, &selector, &resource_version);
            tokio::select! {
                () = &mut interrupted => return Ok(Exit::Ok),
                events = watch => events?,
            }
        };
        let mut events = std::pin::pin!(events);
        loop {
            let event = tokio::select! {
                () = &mut interrupted => return Ok(Exit::Ok),
                event = events.next() => event,
            };
            match event {
                // The server ended the watch (its timeout): watch again from where it stopped.
                None => break,
                Some(Err(error)) => return Err(error),
                Some(Ok(WatchEvent::Added(delivery) | WatchEvent::Modified(delivery))) => {
                    if let Some(version) = &delivery.metadata.resource_version {
                        resource_version.clone_from(version);
                    }
                    ctx.print(&line(format, &delivery))?;
                }
                Some(Ok(WatchEvent::Error(status))) => anyhow::bail!(
                    "the watch of {name}'s attempts failed: {} (HTTP {})",
                    status.message,
                    status.code
                ),
                Some(Ok(WatchEvent::Deleted(_) | WatchEvent::Bookmark(_))) => {}
            }
        }
        tokio::select! {
            () = &mut interrupted => return Ok(Exit::Ok),
            () = tokio::time::sleep(ctx.env.poll) => {}
        }
    }
}
