//! `suspend ENDPOINT` and `resume ENDPOINT`: `spec.suspend` set by a merge patch. The dispatcher
//! holds the endpoint's deliveries while it is suspended and sends them once it is resumed.
use kube::ResourceExt;
use serde_json::json;

use super::Ctx;
use crate::dashboard::gitops::spec_owners;
use crate::plugin::cli::ChangeArgs;
use crate::plugin::render;
use crate::plugin::Exit;

pub async fn run(ctx: &mut Ctx<'_>, args: ChangeArgs, suspend: bool) -> anyhow::Result<Exit> {
    let name = args.endpoint.as_str();
    let current = ctx.endpoint(name).await?;
    if current.spec.suspend == suspend {
        ctx.show(args.output.output, &current, || {
            render::suspend_text(name, suspend, false)
        })?;
        return Ok(Exit::Ok);
    }
    let action = if suspend { "suspending" } else { "resuming" };
    let patched = ctx
        .patch_endpoint(
            name,
            &format!("{action} {name}"),
            json!({ "spec": { "suspend": suspend } }),
        )
        .await?;
    ctx.show(args.output.output, &patched, || {
        render::suspend_text(name, suspend, true)
    })?;
    let owners = spec_owners(patched.managed_fields(), "suspend");
    if owners.any() {
        ctx.warn(&format!(
            "{name}'s spec is also applied by {}: the next apply may set spec.suspend back; \
             change it in its source too",
            owners.managers.join(", ")
        ));
    }
    Ok(Exit::Ok)
}
