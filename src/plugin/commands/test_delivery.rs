//! `test ENDPOINT`: a new nonce in the annotation `webhooks.pitchey.io/test`; the dispatcher that
//! owns the endpoint sends a signed `webhook.test` delivery carrying it and records the answer in
//! `status.lastTest` (in its next status write, within seconds). This waits for that record.
use serde_json::json;

use super::Ctx;
use crate::api::conditions::{self, READY};
use crate::api::TEST_ANNOTATION;
use crate::plugin::cli::TestArgs;
use crate::plugin::render;
use crate::plugin::Exit;

pub async fn run(ctx: &mut Ctx<'_>, args: TestArgs) -> anyhow::Result<Exit> {
    let name = args.endpoint.as_str();
    let endpoint = ctx.endpoint(name).await?;
    let ready = endpoint
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, READY));
    if let Some(ready) = ready.filter(|c| c.status != conditions::ConditionStatus::True) {
        ctx.warn(&format!(
            "{name} is not Ready ({}: {}): the dispatcher cannot send to it until it is",
            ready.reason, ready.message
        ));
    }
    let nonce = (ctx.env.token)();
    ctx.patch_endpoint(
        name,
        &format!("requesting a test delivery to {name} (annotating it)"),
        json!({ "metadata": { "annotations": { TEST_ANNOTATION: nonce } } }),
    )
    .await?;
    let deadline = ctx.deadline(args.timeout);
    loop {
        let endpoint = ctx.endpoint(name).await?;
        let result = endpoint
            .status
            .and_then(|s| s.last_test)
            .filter(|t| t.nonce == nonce);
        if let Some(test) = result {
            ctx.show(args.output.output, &test, || render::test_text(name, &test))?;
            return Ok(if render::test_succeeded(&test) {
                Exit::Ok
            } else {
                Exit::Unhealthy
            });
        }
        if !deadline.tick().await {
            anyhow::bail!(
                "no result of test delivery {nonce} to {name} within {}: the dispatcher that owns \
                 the endpoint sends it and records status.lastTest in its next status write. Is a \
                 dispatcher running (kubectl get pods -A -l app.kubernetes.io/component=dispatcher)? \
                 A later result shows in `kubectl webhooks describe {name} -n {}`",
                crate::api::duration::format(args.timeout),
                ctx.namespace
            );
        }
    }
}
