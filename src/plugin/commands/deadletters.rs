//! `deadletters [ENDPOINT] [-A]`: dead-lettered deliveries. The query API lists them one
//! namespace at a time, so `-A` reads the namespaces that hold WebhookEndpoints and lists each.
use std::collections::BTreeSet;

use super::Ctx;
use crate::plugin::cli::{DeadLettersArgs, Format};
use crate::plugin::client::MAX_PAGE;
use crate::plugin::render;
use crate::plugin::Exit;
use crate::query::{ObjectList, Resource, WebhookDeadLetter};

/// The namespaces with WebhookEndpoints the user may list.
async fn namespaces(ctx: &Ctx<'_>) -> anyhow::Result<Vec<String>> {
    let endpoints = ctx.endpoints(None).await?;
    let namespaces: BTreeSet<String> = endpoints
        .into_iter()
        .filter_map(|e| e.metadata.namespace)
        .collect();
    Ok(namespaces.into_iter().collect())
}

pub async fn run(ctx: &mut Ctx<'_>, args: DeadLettersArgs) -> anyhow::Result<Exit> {
    let selector = match &args.endpoint {
        Some(endpoint) => {
            ctx.endpoint(endpoint).await?;
            format!("endpoint={endpoint}")
        }
        None => String::new(),
    };
    let namespaces = if args.all_namespaces {
        namespaces(ctx).await?
    } else {
        vec![ctx.namespace.clone()]
    };
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let mut items: Vec<WebhookDeadLetter> = Vec::new();
    for namespace in &namespaces {
        let read = ctx
            .query()
            .collect::<WebhookDeadLetter>(
                Some(namespace),
                Resource::DeadLetters,
                &selector,
                limit,
                limit.min(MAX_PAGE),
            )
            .await;
        match read {
            Ok(collected) => items.extend(collected.items),
            // With -A, a namespace the user may not read is left out, not the whole answer.
            Err(error) if args.all_namespaces => {
                ctx.warn(&format!("namespace {namespace} left out: {error:#}"))
            }
            Err(error) => return Err(error),
        }
    }
    if items.is_empty() && args.output.output == Format::Text {
        let scope = match (&args.endpoint, args.all_namespaces) {
            (Some(endpoint), _) => {
                format!("for endpoint {endpoint} in namespace {}", ctx.namespace)
            }
            (None, true) => "in any namespace".to_owned(),
            (None, false) => format!("in namespace {}", ctx.namespace),
        };
        ctx.note(&format!("No dead letters found {scope}."));
        return Ok(Exit::Ok);
    }
    let list = ObjectList::new(Resource::DeadLetters, items, String::new(), None);
    let now = ctx.now();
    ctx.show(args.output.output, &list, || {
        render::dead_letters_text(&list.items, args.all_namespaces, now)
    })?;
    Ok(Exit::Ok)
}
