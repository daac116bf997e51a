//! How the dispatcher writes status: a server-side apply of the part it owns, under its field
//! manager, with the resource's `apiVersion` and `kind` taken from its Rust type
//! ([`status_patch`], shared with the controller). [`apply_status`] does the whole write; the WebhookEvent writer uses
//! [`status_patch`] itself because it reads the applied object's labels. The builders of each
//! status (endpoint, event, replay) are pure and live beside this module.
use kube::api::{Api, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The field manager of everything the dispatcher writes.
pub const FIELD_MANAGER: &str = "webhook-operator-dispatcher";

pub use crate::runtime::status_patch::status_patch;

/// Applies `status` to the object `namespace/name` of kind `K` (forcing ownership of its fields:
/// the dispatcher is their only writer); returns the object as written.
pub async fn apply_status<K>(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    status: &impl Serialize,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(status_patch::<K>(status)),
    )
    .await
}
