//! Finished WebhookEvents are deleted once their TTL has passed, by the replica that owns them.
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, DeleteParams};
use kube::runtime::reflector;
use kube::ResourceExt;
use tracing::{info, warn};

use crate::api::WebhookEvent;
use crate::dispatcher::Shared;

/// Deletes finished WebhookEvents once `ttlSecondsAfterFinished` (or the default) has passed.
pub async fn expire_events(shared: Arc<Shared>, events: reflector::Store<WebhookEvent>) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = Timestamp::now();
        for event in events.state() {
            let Some(finished) = event
                .status
                .as_ref()
                .and_then(|s| s.finished_time.as_deref())
                .and_then(|t| t.parse::<Timestamp>().ok())
            else {
                continue;
            };
            let ttl = event
                .spec
                .ttl_seconds_after_finished
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(shared.config.event_ttl_seconds);
            let expires = finished
                .saturating_add(Duration::from_secs(ttl))
                .unwrap_or(Timestamp::MAX);
            let namespace = event.namespace().unwrap_or_default();
            if expires <= now
                && event.metadata.deletion_timestamp.is_none()
                && shared.ownership.owns(&namespace, &event.name_any())
            {
                let api: Api<WebhookEvent> = Api::namespaced(shared.client.clone(), &namespace);
                match api
                    .delete(&event.name_any(), &DeleteParams::default())
                    .await
                {
                    Ok(_) => {
                        info!(event = %event.name_any(), "deleted a finished WebhookEvent after its TTL")
                    }
                    Err(error) => warn!(%error, "deleting a finished WebhookEvent failed"),
                }
            }
        }
    }
}
