//! WebhookEvent status: the phase derived from the event's deliveries, the per-endpoint records,
//! and the `webhooks.pitchey.io/phase` label that lets `kubectl get whev -l …` select by phase.
use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};

use super::apply::{status_patch, FIELD_MANAGER};
use super::WriteError;
use crate::api::conditions::{self, Condition, DesiredCondition, Reason, DELIVERED, READY};
use crate::api::event::{EventDeliveryStatus, EventPhase, WebhookEventStatus};
use crate::api::time::rfc3339;
use crate::api::{WebhookEvent, PHASE_LABEL};
use crate::store::{DeliveryRecord, DeliveryState, EventSource, EventStatus};

/// The phase of an event from its deliveries: Pending until a first attempt is made (or
/// started), Delivering while any delivery is unfinished (held ones included), then Delivered,
/// PartiallyFailed or Failed.
pub fn event_phase(deliveries: &[DeliveryRecord]) -> EventPhase {
    if deliveries.is_empty() {
        return EventPhase::NoSubscribers;
    }
    // Held deliveries (a suspended endpoint) count as under way: the dispatcher has them and
    // sends them on resumption. An in-flight one is an attempt being made.
    let untouched = |d: &DeliveryRecord| d.state == DeliveryState::Pending && d.attempts == 0;
    if deliveries.iter().all(untouched) {
        return EventPhase::Pending;
    }
    if deliveries.iter().any(|d| !d.state.is_finished()) {
        return EventPhase::Delivering;
    }
    // A delivery its endpoint's transform filtered out went as intended: not a failure.
    let delivered = deliveries
        .iter()
        .filter(|d| matches!(d.state, DeliveryState::Delivered | DeliveryState::Filtered))
        .count();
    match delivered {
        0 => EventPhase::Failed,
        n if n == deliveries.len() => EventPhase::Delivered,
        _ => EventPhase::PartiallyFailed,
    }
}

pub fn phase_name(phase: EventPhase) -> &'static str {
    match phase {
        EventPhase::Pending => "Pending",
        EventPhase::Delivering => "Delivering",
        EventPhase::Delivered => "Delivered",
        EventPhase::PartiallyFailed => "PartiallyFailed",
        EventPhase::Failed => "Failed",
        EventPhase::NoSubscribers => "NoSubscribers",
    }
}

fn state_name(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Pending | DeliveryState::InFlight => "Pending",
        DeliveryState::Delivered => "Delivered",
        DeliveryState::DeadLettered => "DeadLettered",
        DeliveryState::Held => "Held",
        DeliveryState::Queued => "Queued",
        DeliveryState::Filtered => "Filtered",
    }
}

/// The merge patch that sets the phase label, or `None` when the object already carries it.
pub fn phase_label_patch(
    labels: Option<&BTreeMap<String, String>>,
    phase: EventPhase,
) -> Option<Value> {
    let name = phase_name(phase);
    let current = labels.and_then(|l| l.get(PHASE_LABEL));
    (current.map(String::as_str) != Some(name))
        .then(|| json!({"metadata": {"labels": {PHASE_LABEL: name}}}))
}

/// The generation a WebhookEvent's conditions describe: its spec is immutable (a CEL rule of the
/// CRD), so it is always the first.
const GENERATION: Option<i64> = Some(1);

/// The status of a WebhookEvent refused for an invalid spec: Failed, finished `now` (so its TTL
/// applies), with a Ready condition saying why.
pub fn invalid_event_status(errors: &str, now: Timestamp) -> WebhookEventStatus {
    let ready = DesiredCondition::new(
        READY,
        false,
        Reason::InvalidSpec,
        format!("invalid spec: {errors}"),
    );
    let now = rfc3339(now);
    WebhookEventStatus {
        phase: Some(EventPhase::Failed),
        conditions: conditions::merge(&[], &[ready], GENERATION, &now),
        observed_generation: GENERATION,
        finished_time: Some(now),
        ..WebhookEventStatus::default()
    }
}

/// The status of a stored event, from its deliveries: the phase, one record per delivery, and
/// when it finished (so its TTL applies). Pure.
pub fn event_status(status: &EventStatus, now: Timestamp) -> WebhookEventStatus {
    let phase = event_phase(&status.deliveries);
    let deliveries: Vec<EventDeliveryStatus> = status
        .deliveries
        .iter()
        .map(|d| EventDeliveryStatus {
            endpoint: match &d.replay_id {
                Some(replay) => format!("{} (replay {replay})", d.endpoint.name),
                None => d.endpoint.name.clone(),
            },
            state: state_name(d.state).to_string(),
            attempts: i64::from(d.attempts),
            last_status_code: d.last_status_code.map(i32::from),
            last_error: d.last_error.clone(),
            next_attempt_time: (!d.state.is_finished())
                .then_some(d.next_attempt_at)
                .flatten()
                .map(rfc3339),
            delivered_time: d.delivered_at.map(rfc3339),
        })
        .collect();
    let finished = phase.is_finished().then(|| {
        status
            .deliveries
            .iter()
            .filter_map(|d| d.finished_at)
            .max()
            .unwrap_or(now)
    });
    let conditions = event_conditions(phase, &deliveries, status.event.created_at, finished);
    WebhookEventStatus {
        phase: Some(phase),
        event_id: Some(status.event.event_id.clone()),
        observed_generation: GENERATION,
        conditions,
        deliveries,
        finished_time: finished.map(rfc3339),
    }
}

/// `Ready` (stored and routed) and `Delivered` (every delivery succeeded), for `kubectl wait`.
/// Built from the store alone: a condition's `lastTransitionTime` is when it last became what
/// it is, which is the acceptance for `Ready` and for `Delivered=False`, and the finish for
/// `Delivered=True`. Pure.
fn event_conditions(
    phase: EventPhase,
    deliveries: &[EventDeliveryStatus],
    accepted: Timestamp,
    finished: Option<Timestamp>,
) -> Vec<Condition> {
    let count = |state: &str| deliveries.iter().filter(|d| d.state == state).count();
    let mut summary = format!(
        "{} of {} deliveries delivered, {} dead-lettered",
        count("Delivered"),
        deliveries.len(),
        count("DeadLettered")
    );
    let filtered = count("Filtered");
    if filtered > 0 {
        summary.push_str(&format!(", {filtered} filtered by a transform"));
    }
    let (delivered, reason) = match phase {
        EventPhase::Delivered => (true, Reason::AllDelivered),
        EventPhase::Pending | EventPhase::Delivering => (false, Reason::InProgress),
        EventPhase::PartiallyFailed | EventPhase::Failed => (false, Reason::DeadLettered),
        EventPhase::NoSubscribers => (false, Reason::NoSubscribers),
    };
    let ready = DesiredCondition::new(
        READY,
        true,
        Reason::Accepted,
        format!("stored with {} deliveries", deliveries.len()),
    );
    let delivered_condition = DesiredCondition::new(DELIVERED, delivered, reason, summary);
    let accepted_at = rfc3339(accepted);
    let mut conditions =
        conditions::merge(&[], &[ready, delivered_condition], GENERATION, &accepted_at);
    if let (true, Some(at)) = (delivered, finished) {
        if let Some(c) = conditions.iter_mut().find(|c| c.type_ == DELIVERED) {
            c.last_transition_time = rfc3339(at);
        }
    }
    conditions
}

/// Applies a WebhookEvent's `status`, then sets the phase label if the object does not carry it
/// yet: a label patch only when the phase changes.
pub async fn apply_event_status(
    api: &Api<WebhookEvent>,
    name: &str,
    status: &WebhookEventStatus,
) -> Result<(), kube::Error> {
    let phase = status.phase.unwrap_or_default();
    let applied = api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(status_patch::<WebhookEvent>(status)),
        )
        .await?;
    if let Some(label) = phase_label_patch(applied.metadata.labels.as_ref(), phase) {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&label))
            .await?;
    }
    Ok(())
}

/// Writes the status of a WebhookEvent from its deliveries in the store.
pub(super) async fn write_event(shared: &super::Shared, event_id: &str) -> Result<(), WriteError> {
    let Some(status) = shared.store.event_status(event_id).await? else {
        return Ok(());
    };
    let EventSource::Resource { name, .. } = &status.event.source else {
        return Ok(());
    };
    let written = event_status(&status, Timestamp::now());
    let api: Api<WebhookEvent> = Api::namespaced(shared.client.clone(), &status.event.namespace);
    apply_event_status(&api, name, &written).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::ConditionStatus;
    use crate::store::{DeliveryId, EndpointRef};

    fn delivery(state: DeliveryState) -> DeliveryRecord {
        DeliveryRecord {
            attempts: 1,
            next_attempt_at: None,
            ..DeliveryRecord::new(
                DeliveryId(1),
                "evt_1".into(),
                EndpointRef::new("ns", "e"),
                state,
                Timestamp::UNIX_EPOCH,
            )
        }
    }

    fn untried(state: DeliveryState) -> DeliveryRecord {
        DeliveryRecord {
            attempts: 0,
            ..delivery(state)
        }
    }

    #[test]
    fn phases_follow_the_deliveries() {
        use DeliveryState::*;
        assert_eq!(event_phase(&[]), EventPhase::NoSubscribers);
        // Nothing tried yet.
        assert_eq!(event_phase(&[untried(Pending)]), EventPhase::Pending);
        assert_eq!(
            event_phase(&[untried(Pending), untried(Pending)]),
            EventPhase::Pending
        );
        // A first attempt under way, made, or one endpoint holding its delivery.
        assert_eq!(event_phase(&[untried(InFlight)]), EventPhase::Delivering);
        assert_eq!(
            event_phase(&[untried(Pending), delivery(Pending)]),
            EventPhase::Delivering
        );
        assert_eq!(event_phase(&[untried(Held)]), EventPhase::Delivering);
        assert_eq!(
            event_phase(&[untried(Pending), untried(Held)]),
            EventPhase::Delivering
        );
        assert_eq!(
            event_phase(&[delivery(Delivered), untried(Pending)]),
            EventPhase::Delivering
        );
        assert_eq!(
            event_phase(&[delivery(Delivered), delivery(Pending)]),
            EventPhase::Delivering
        );
        assert_eq!(
            event_phase(&[delivery(Delivered), delivery(Held)]),
            EventPhase::Delivering
        );
        assert_eq!(
            event_phase(&[delivery(Delivered), delivery(Delivered)]),
            EventPhase::Delivered
        );
        assert_eq!(
            event_phase(&[delivery(Delivered), delivery(DeadLettered)]),
            EventPhase::PartiallyFailed
        );
        assert_eq!(event_phase(&[delivery(DeadLettered)]), EventPhase::Failed);
        // Filtered by a transform is not a failure.
        assert_eq!(
            event_phase(&[delivery(Delivered), delivery(Filtered)]),
            EventPhase::Delivered
        );
        assert_eq!(
            event_phase(&[delivery(Filtered), delivery(DeadLettered)]),
            EventPhase::PartiallyFailed
        );
        // Dead-lettered without an attempt (e.g. the endpoint was deleted) is still finished.
        assert_eq!(event_phase(&[untried(DeadLettered)]), EventPhase::Failed);
    }

    #[test]
    fn the_phase_label_is_patched_only_when_it_changes() {
        let patch = phase_label_patch(None, EventPhase::Pending).unwrap();
        assert_eq!(patch["metadata"]["labels"][PHASE_LABEL], "Pending");
        let mut labels = BTreeMap::from([("app".to_string(), "x".to_string())]);
        assert!(phase_label_patch(Some(&labels), EventPhase::Failed).is_some());
        labels.insert(PHASE_LABEL.to_string(), "Delivering".to_string());
        assert_eq!(
            phase_label_patch(Some(&labels), EventPhase::Delivering),
            None
        );
        let patch = phase_label_patch(Some(&labels), EventPhase::Delivered).unwrap();
        assert_eq!(patch["metadata"]["labels"][PHASE_LABEL], "Delivered");
    }

    #[test]
    fn a_finished_event_records_each_delivery_and_when_the_last_ended() {
        let at = |s: i64| Timestamp::from_second(s).unwrap();
        let stored = EventStatus {
            event: crate::store::EventRecord {
                event_id: "evt_1".into(),
                namespace: "ns".into(),
                event_type: "user.created".into(),
                data: bytes::Bytes::new(),
                created_at: at(0),
                source: EventSource::Resource {
                    name: "e".into(),
                    uid: "u".into(),
                },
                idempotency_key: None,
                trace_parent: None,
            },
            deliveries: vec![
                DeliveryRecord {
                    delivered_at: Some(at(10)),
                    finished_at: Some(at(10)),
                    last_status_code: Some(200),
                    ..delivery(DeliveryState::Delivered)
                },
                DeliveryRecord {
                    finished_at: Some(at(20)),
                    replay_id: Some("r1".into()),
                    last_error: Some("HTTP 500".into()),
                    ..delivery(DeliveryState::DeadLettered)
                },
            ],
        };
        let status = event_status(&stored, at(99));
        assert_eq!(status.phase, Some(EventPhase::PartiallyFailed));
        assert_eq!(status.event_id.as_deref(), Some("evt_1"));
        assert_eq!(
            status.finished_time.as_deref(),
            Some("1970-01-01T00:00:20Z")
        );
        let states: Vec<(&str, &str)> = status
            .deliveries
            .iter()
            .map(|d| (d.endpoint.as_str(), d.state.as_str()))
            .collect();
        assert_eq!(
            states,
            [("e", "Delivered"), ("e (replay r1)", "DeadLettered")]
        );
        assert_eq!(status.deliveries[1].last_error.as_deref(), Some("HTTP 500"));
    }

    #[test]
    fn an_invalid_event_is_failed_and_finished() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let status =
            serde_json::to_value(invalid_event_status("spec.type: too short", now)).unwrap();
        assert_eq!(status["phase"], "Failed");
        // A finish time, so ttlSecondsAfterFinished deletes it.
        assert_eq!(status["finishedTime"], "2023-11-14T22:13:20Z");
        assert_eq!(status["conditions"][0]["type"], READY);
        assert_eq!(status["conditions"][0]["status"], "False");
        assert_eq!(status["conditions"][0]["reason"], "InvalidSpec");
        assert!(status["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("spec.type: too short"));
    }

    #[test]
    fn events_carry_ready_and_delivered_conditions_for_kubectl_wait() {
        let at = |s: i64| Timestamp::from_second(s).unwrap();
        let delivery = |state: &str| EventDeliveryStatus {
            endpoint: "e".into(),
            state: state.into(),
            ..EventDeliveryStatus::default()
        };
        let done = event_conditions(
            EventPhase::Delivered,
            &[delivery("Delivered"), delivery("Delivered")],
            at(10),
            Some(at(20)),
        );
        let ready = conditions::find(&done, READY).unwrap();
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::True, "Accepted")
        );
        assert_eq!(ready.last_transition_time, rfc3339(at(10)));
        let delivered = conditions::find(&done, DELIVERED).unwrap();
        assert_eq!(delivered.status, ConditionStatus::True);
        assert_eq!(delivered.reason, "AllDelivered");
        assert_eq!(
            delivered.message,
            "2 of 2 deliveries delivered, 0 dead-lettered"
        );
        assert_eq!(delivered.last_transition_time, rfc3339(at(20)));
        let partly = event_conditions(
            EventPhase::PartiallyFailed,
            &[delivery("Delivered"), delivery("DeadLettered")],
            at(10),
            Some(at(20)),
        );
        let delivered = conditions::find(&partly, DELIVERED).unwrap();
        assert_eq!(
            (delivered.status, delivered.reason.as_str()),
            (ConditionStatus::False, "DeadLettered")
        );
        assert_eq!(delivered.last_transition_time, rfc3339(at(10)));
        let pending =
            event_conditions(EventPhase::Delivering, &[delivery("Pending")], at(10), None);
        assert_eq!(
            conditions::find(&pending, DELIVERED).unwrap().reason,
            "InProgress"
        );
    }
}
