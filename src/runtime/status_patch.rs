//! The server-side apply patch that sets an object's `status`, with its `apiVersion` and `kind`
//! taken from the Rust type, so no writer carries its own copy of the API version. The
//! controller and the dispatcher each apply it under their own field manager.
use kube::Resource;
use serde::Serialize;
use serde_json::{json, Value};

/// The apply patch that sets `status` on an object of kind `K`.
pub fn status_patch<K: Resource<DynamicType = ()>>(status: &impl Serialize) -> Value {
    json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{WebhookEndpoint, WebhookEvent, WebhookReplay, WebhookSubscription};

    #[test]
    fn the_patch_names_the_kind_and_version_of_the_type() {
        let status = json!({"phase": "Running"});
        for (patch, kind) in [
            (status_patch::<WebhookReplay>(&status), "WebhookReplay"),
            (status_patch::<WebhookEvent>(&status), "WebhookEvent"),
            (status_patch::<WebhookEndpoint>(&status), "WebhookEndpoint"),
            (
                status_patch::<WebhookSubscription>(&status),
                "WebhookSubscription",
            ),
        ] {
            assert_eq!(patch["apiVersion"], "webhooks.pitchey.io/v1alpha1");
            assert_eq!(patch["kind"], kind);
            assert_eq!(patch["status"], status);
        }
    }
}
