//! `rotate-secret ENDPOINT`: a new value of the annotation `webhooks.pitchey.io/rotate-secret`;
//! the controller generates a new key in the Secret `<endpoint>-signing`, and the previous key
//! keeps signing for `spec.signing.rotationGracePeriod`. Keys you manage
//! (`spec.signing.secretRef`) are rotated in your Secret, not by this.
use serde_json::json;

use super::Ctx;
use crate::api::ROTATE_SECRET_ANNOTATION;
use crate::plugin::cli::{Format, RotateArgs};
use crate::plugin::render;
use crate::plugin::Exit;

pub async fn run(ctx: &mut Ctx<'_>, args: RotateArgs) -> anyhow::Result<Exit> {
    let name = args.endpoint.as_str();
    let endpoint = ctx.endpoint(name).await?;
    if let Some(secret) = &endpoint.spec.signing.secret_ref {
        anyhow::bail!(
            "{name} signs with a key you manage (spec.signing.secretRef: Secret {} key {}): \
             rotate it by changing that Secret; the rotate annotation rotates generated keys only",
            secret.name,
            secret.key
        );
    }
    let before = endpoint
        .status
        .as_ref()
        .and_then(|s| s.signing.as_ref())
        .and_then(|s| s.last_rotation_time.clone());
    let token = (ctx.env.token)();
    let patched = ctx
        .patch_endpoint(
            name,
            &format!("requesting a rotation of {name}'s signing key (annotating it)"),
            json!({ "metadata": { "annotations": { ROTATE_SECRET_ANNOTATION: token } } }),
        )
        .await?;
    let format = args.output.output;
    if format == Format::Text {
        ctx.print(&render::rotation_requested_text(
            name,
            &token,
            &endpoint.spec.signing.rotation_grace_period,
        ))?;
    }
    if !args.wait {
        if format == Format::Json {
            ctx.print(&render::json(&patched))?;
        }
        return Ok(Exit::Ok);
    }
    let deadline = ctx.deadline(args.timeout);
    loop {
        let current = ctx.endpoint(name).await?;
        let rotated = current
            .status
            .as_ref()
            .and_then(|s| s.signing.as_ref())
            .and_then(|s| s.last_rotation_time.clone());
        if rotated.is_some() && rotated != before {
            ctx.show(format, &current, || render::rotated_text(name, &current))?;
            return Ok(Exit::Ok);
        }
        if !deadline.tick().await {
            anyhow::bail!(
                "the controller did not report rotating {name}'s key within {}: is it running \
                 (kubectl get pods -A -l app.kubernetes.io/component=controller)? See the \
                 endpoint's Events: kubectl describe webhookendpoint {name} -n {}",
                crate::api::duration::format(args.timeout),
                ctx.namespace
            );
        }
    }
}
