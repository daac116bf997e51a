//! What the commands that change something print: test, replay, publish, suspend, rotate.
use super::{dash, short, table, ERROR_WIDTH};
use crate::api::conditions;
use crate::api::endpoint::TestDeliveryStatus;
use crate::api::event::EventPhase;
use crate::api::replay::{ReplayPhase, WebhookReplayStatus};
use crate::api::{WebhookEndpoint, WebhookEvent, WebhookReplay};

/// The result of a test delivery on one line (`describe`, `test`).
pub(super) fn test_summary(test: &TestDeliveryStatus) -> String {
    let mut text = String::new();
    if test_succeeded(test) {
        text.push_str("succeeded: ");
    } else {
        text.push_str("failed: ");
    }
    let mut parts = Vec::new();
    if let Some(code) = test.status_code {
        parts.push(format!("HTTP {code}"));
    }
    if let Some(ms) = test.latency_ms {
        parts.push(format!("in {ms}ms"));
    }
    text.push_str(&parts.join(" "));
    if let Some(error) = &test.error {
        if !parts.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&short(error, 200));
    }
    text
}

/// Whether a test delivery got a 2xx and no error.
pub fn test_succeeded(test: &TestDeliveryStatus) -> bool {
    test.error.is_none() && test.status_code.is_some_and(|c| (200..300).contains(&c))
}

/// The result of `test`.
pub fn test_text(endpoint: &str, test: &TestDeliveryStatus) -> String {
    format!(
        "Test delivery to {endpoint} {} (nonce {}, sent {})\n",
        test_summary(test),
        test.nonce,
        test.time
    )
}

/// The first line `replay` prints: what was created, and what it replays.
pub fn replay_created_text(replay: &WebhookReplay) -> String {
    let spec = &replay.spec;
    let outcomes: Vec<&str> = spec
        .outcomes
        .iter()
        .map(|o| match o {
            crate::api::replay::ReplayOutcome::DeadLettered => "dead-lettered",
            crate::api::replay::ReplayOutcome::Delivered => "delivered",
        })
        .collect();
    let types = if spec.event_types.is_empty() {
        String::new()
    } else {
        format!(" of types {}", spec.event_types.join(", "))
    };
    let to = spec
        .to
        .as_deref()
        .map(|t| format!(" until {t}"))
        .unwrap_or_default();
    format!(
        "webhookreplay.webhooks.pitchey.io/{} created: {} deliveries{types} to {} since {}{to}\n",
        replay.metadata.name.as_deref().unwrap_or_default(),
        outcomes.join(" and "),
        spec.endpoint_ref.name,
        spec.from
    )
}

/// A replay's progress on one line: its phase and its Complete condition's message.
pub fn replay_progress_text(status: Option<&WebhookReplayStatus>) -> String {
    let Some(status) = status else {
        return "Pending: waiting for the dispatcher to start the replay\n".to_owned();
    };
    let phase = status.phase.unwrap_or_default();
    let message = conditions::find(&status.conditions, conditions::COMPLETE)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    let counts = format!(
        "{} matched, {} redelivered, {} failed",
        status.matched, status.redelivered, status.failed
    );
    match phase {
        ReplayPhase::Complete | ReplayPhase::Failed if !message.is_empty() => {
            format!("{phase:?}: {message}\n")
        }
        ReplayPhase::Running if !message.is_empty() => format!("{phase:?}: {message} ({counts})\n"),
        _ => format!("{phase:?}: {counts}\n"),
    }
}

/// Whether a finished replay failed: refused, or some redeliveries failed again.
pub fn replay_failed(status: &WebhookReplayStatus) -> bool {
    status.phase == Some(ReplayPhase::Failed) || status.failed > 0
}

/// What `publish` prints once the event is created.
pub fn event_created_text(event: &WebhookEvent) -> String {
    format!(
        "webhookevent.webhooks.pitchey.io/{} created ({} in namespace {})\n",
        event.metadata.name.as_deref().unwrap_or_default(),
        event.spec.type_,
        event.metadata.namespace.as_deref().unwrap_or_default()
    )
}

/// A finished event: its phase, and each delivery.
pub fn event_result_text(event: &WebhookEvent) -> String {
    let status = event.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let message = conditions::find(&status.conditions, conditions::DELIVERED)
        .map(|c| format!(": {}", c.message))
        .unwrap_or_default();
    let mut out = format!("{phase:?}{message}\n");
    if let Some(id) = &status.event_id {
        out.push_str(&format!("Event ID: {id}\n"));
    }
    if !status.deliveries.is_empty() {
        let rows: Vec<Vec<String>> = status
            .deliveries
            .iter()
            .map(|d| {
                vec![
                    d.endpoint.clone(),
                    d.state.clone(),
                    d.attempts.to_string(),
                    dash(d.last_status_code),
                    d.last_error
                        .as_deref()
                        .map_or_else(|| "-".to_owned(), |e| short(e, ERROR_WIDTH)),
                ]
            })
            .collect();
        out.push_str(&table(
            &["ENDPOINT", "STATE", "ATTEMPTS", "LAST CODE", "LAST ERROR"],
            &rows,
        ));
    }
    out
}

/// Whether an event ended delivered everywhere.
pub fn event_delivered(event: &WebhookEvent) -> bool {
    event.status.as_ref().and_then(|s| s.phase) == Some(EventPhase::Delivered)
}

/// What `suspend` and `resume` print.
pub fn suspend_text(name: &str, suspend: bool, changed: bool) -> String {
    let verb = if suspend { "suspended" } else { "resumed" };
    if changed {
        format!("webhookendpoint.webhooks.pitchey.io/{name} {verb}\n")
    } else {
        format!("webhookendpoint.webhooks.pitchey.io/{name} already {verb} (no change)\n")
    }
}

/// What `rotate-secret` prints once the rotation is requested.
pub fn rotation_requested_text(name: &str, token: &str, grace: &str) -> String {
    format!(
        "webhookendpoint.webhooks.pitchey.io/{name}: signing key rotation requested \
         (webhooks.pitchey.io/rotate-secret={token}); the previous key keeps signing for {grace}\n"
    )
}

/// What `rotate-secret --wait` prints once the controller rotated.
pub fn rotated_text(name: &str, endpoint: &WebhookEndpoint) -> String {
    let signing = endpoint.status.as_ref().and_then(|s| s.signing.as_ref());
    let at = signing
        .and_then(|s| s.last_rotation_time.as_deref())
        .unwrap_or("-");
    let until = signing
        .and_then(|s| s.previous_key_expiry_time.as_deref())
        .map(|t| format!("; the previous key signs until {t}"))
        .unwrap_or_default();
    format!("Rotated {name}'s signing key at {at}{until}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::Condition;

    #[test]
    fn test_results_read_as_success_or_failure() {
        let ok = TestDeliveryStatus {
            nonce: "n1".into(),
            time: "2026-01-10T10:00:00Z".into(),
            status_code: Some(204),
            latency_ms: Some(12),
            error: None,
        };
        assert!(test_succeeded(&ok));
        assert_eq!(
            test_text("crm", &ok),
            "Test delivery to crm succeeded: HTTP 204 in 12ms (nonce n1, sent 2026-01-10T10:00:00Z)\n"
        );
        let refused = TestDeliveryStatus {
            status_code: None,
            latency_ms: Some(1),
            error: Some("connect: connection refused".into()),
            ..ok.clone()
        };
        assert!(!test_succeeded(&refused));
        assert!(test_text("crm", &refused)
            .starts_with("Test delivery to crm failed: in 1ms: connect: connection refused"));
        let gone = TestDeliveryStatus {
            status_code: Some(410),
            error: Some("HTTP 410 Gone".into()),
            ..ok
        };
        assert!(!test_succeeded(&gone));
    }

    #[test]
    fn replay_progress_says_what_is_left() {
        assert!(replay_progress_text(None).starts_with("Pending"));
        let running = WebhookReplayStatus {
            phase: Some(ReplayPhase::Running),
            matched: 5,
            redelivered: 2,
            conditions: vec![Condition {
                type_: "Complete".into(),
                status: crate::api::conditions::ConditionStatus::False,
                last_transition_time: "2026-01-10T10:00:00Z".into(),
                observed_generation: None,
                reason: "Running".into(),
                message: "3 deliveries outstanding".into(),
            }],
            ..WebhookReplayStatus::default()
        };
        assert_eq!(
            replay_progress_text(Some(&running)),
            "Running: 3 deliveries outstanding (5 matched, 2 redelivered, 0 failed)\n"
        );
        assert!(!replay_failed(&running));
        let failed_again = WebhookReplayStatus {
            phase: Some(ReplayPhase::Complete),
            failed: 1,
            ..running
        };
        assert!(replay_failed(&failed_again));
    }
}
