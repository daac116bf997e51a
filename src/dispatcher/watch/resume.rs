//! Resuming an ordered endpoint paused by a dead letter (`onDeadLetter: Pause`): the annotation
//! `webhooks.pitchey.io/resume` names the dead-lettered event shown in
//! `status.ordering.pausedBy.eventId`, to skip it, or `retry:<event id>` to send it again first.
//! Naming the event keeps an old annotation from resuming a later pause, and makes the resume
//! idempotent: any replica may act on it (the store decides once).
use jiff::Timestamp;
use kube::ResourceExt;
use tracing::{info, warn};

use crate::api::{WebhookEndpoint, RESUME_ANNOTATION};
use crate::dispatcher::Shared;
use crate::store::{EndpointRef, ResumeAction, ResumeOutcome};

/// What a resume annotation asks for. Pure.
pub fn parse_resume(value: &str) -> (ResumeAction, &str) {
    let value = value.trim();
    match value.strip_prefix("retry:") {
        Some(event_id) => (ResumeAction::Retry, event_id.trim()),
        None => (
            ResumeAction::Skip,
            value.strip_prefix("skip:").unwrap_or(value).trim(),
        ),
    }
}

/// Resumes the endpoint if its annotation names the event its status says paused it.
pub async fn resume_if_requested(shared: &Shared, endpoint: &WebhookEndpoint) {
    let Some(value) = endpoint.annotations().get(RESUME_ANNOTATION) else {
        return;
    };
    let paused_by = endpoint
        .status
        .as_ref()
        .and_then(|s| s.ordering.as_ref())
        .and_then(|o| o.paused_by.as_ref());
    let (action, event_id) = parse_resume(value);
    if paused_by.is_none_or(|p| p.event_id != event_id) {
        return;
    }
    let key = EndpointRef::new(
        endpoint.namespace().unwrap_or_default(),
        endpoint.name_any(),
    );
    let resumed = shared
        .store
        .resume_endpoint(key.clone(), event_id.to_owned(), action, Timestamp::now())
        .await;
    match resumed {
        Ok(ResumeOutcome::Resumed) => {
            info!(endpoint = %key.name, %event_id, ?action, "ordered delivery resumed");
            shared.wake.notify_one();
        }
        Ok(other) => info!(endpoint = %key.name, %event_id, ?other, "resume: nothing to do"),
        Err(error) => warn!(%error, endpoint = %key.name, "resuming ordered delivery failed"),
    }
    shared.dirty.endpoint_state(&key);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_annotations() {
        assert_eq!(parse_resume("evt_1"), (ResumeAction::Skip, "evt_1"));
        assert_eq!(parse_resume("skip:evt_1"), (ResumeAction::Skip, "evt_1"));
        assert_eq!(
            parse_resume(" retry:evt_1 "),
            (ResumeAction::Retry, "evt_1")
        );
        assert_eq!(parse_resume("retry: evt_1"), (ResumeAction::Retry, "evt_1"));
    }
}
