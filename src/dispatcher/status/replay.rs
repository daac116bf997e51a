//! WebhookReplay status, built from the store's progress of a replay (pure; written with
//! [`super::apply::apply_status`]). The dispatcher writes the whole status: it is its only writer.
use jiff::Timestamp;

use crate::api::conditions::{self, DesiredCondition, Reason, COMPLETE, READY};
use crate::api::replay::{ReplayPhase, WebhookReplayStatus};
use crate::api::time::rfc3339;
use crate::store::ReplayProgress;

/// `Complete` and `Ready` (the same verdict: what `kubectl wait --for=condition=Ready` and kstatus
/// read on every kind) of `generation`.
fn conditions_of(
    complete: DesiredCondition,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<crate::api::conditions::Condition> {
    let ready = DesiredCondition {
        type_: READY,
        ..complete.clone()
    };
    conditions::merge(&[], &[ready, complete], generation, &rfc3339(now))
}

/// A replay whose spec is invalid: Failed, with `Complete=False InvalidSpec` saying why.
pub fn invalid_replay_status(
    errors: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> WebhookReplayStatus {
    let condition = DesiredCondition::new(
        COMPLETE,
        false,
        Reason::InvalidSpec,
        format!("invalid spec: {errors}"),
    );
    WebhookReplayStatus {
        observed_generation: generation,
        phase: Some(ReplayPhase::Failed),
        conditions: conditions_of(condition, generation, now),
        ..WebhookReplayStatus::default()
    }
}

/// A started replay: Running while deliveries are outstanding, then Complete with its counts.
pub fn replay_progress_status(
    progress: &ReplayProgress,
    generation: Option<i64>,
    now: Timestamp,
) -> WebhookReplayStatus {
    let done = progress.outstanding == 0;
    let condition = if done {
        DesiredCondition::new(
            COMPLETE,
            true,
            Reason::Complete,
            if progress.filtered == 0 {
                format!(
                    "{} matched, {} redelivered, {} failed",
                    progress.matched, progress.delivered, progress.dead_lettered
                )
            } else {
                format!(
                    "{} matched, {} redelivered, {} failed, {} filtered by the transform",
                    progress.matched, progress.delivered, progress.dead_lettered, progress.filtered
                )
            },
        )
    } else {
        DesiredCondition::new(
            COMPLETE,
            false,
            Reason::Running,
            format!("{} deliveries outstanding", progress.outstanding),
        )
    };
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    WebhookReplayStatus {
        phase: Some(if done {
            ReplayPhase::Complete
        } else {
            ReplayPhase::Running
        }),
        matched: count(progress.matched),
        redelivered: count(progress.delivered),
        failed: count(progress.dead_lettered),
        start_time: Some(rfc3339(progress.created_at)),
        completion_time: done.then(|| rfc3339(now)),
        observed_generation: generation,
        conditions: conditions_of(condition, generation, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EndpointRef;

    fn progress(outstanding: u64) -> ReplayProgress {
        ReplayProgress {
            replay_id: "r".into(),
            endpoint: EndpointRef::new("ns", "crm"),
            created_at: "2024-02-01T00:00:00Z".parse().unwrap(),
            matched: 5,
            requeued: 5,
            outstanding,
            delivered: 5 - outstanding - 1,
            dead_lettered: 1,
            filtered: 0,
        }
    }

    #[test]
    fn a_running_replay_says_what_is_outstanding() {
        let status = replay_progress_status(&progress(3), Some(1), Timestamp::UNIX_EPOCH);
        assert_eq!(status.phase, Some(ReplayPhase::Running));
        assert_eq!(status.completion_time, None);
        assert_eq!(status.conditions[0].reason, "Running");
        assert_eq!(status.conditions[0].message, "3 deliveries outstanding");
    }

    #[test]
    fn a_finished_replay_is_complete_with_its_counts() {
        let now: Timestamp = "2024-02-01T00:05:00Z".parse().unwrap();
        let status = replay_progress_status(&progress(0), Some(2), now);
        assert_eq!(status.phase, Some(ReplayPhase::Complete));
        assert_eq!(
            (status.matched, status.redelivered, status.failed),
            (5, 4, 1)
        );
        assert_eq!(status.start_time.as_deref(), Some("2024-02-01T00:00:00Z"));
        assert_eq!(
            status.completion_time.as_deref(),
            Some("2024-02-01T00:05:00Z")
        );
        assert_eq!(
            status.conditions[0].message,
            "5 matched, 4 redelivered, 1 failed"
        );
        // Ready says the same as Complete, for `kubectl wait --for=condition=Ready` and kstatus,
        // and both name the generation they describe.
        let types: Vec<_> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, vec!["Ready", "Complete"]);
        assert!(status.conditions.iter().all(|c| c.status
            == crate::api::conditions::ConditionStatus::True
            && c.observed_generation == Some(2)));
        assert_eq!(status.observed_generation, Some(2));
    }

    #[test]
    fn an_invalid_replay_fails_with_the_reason() {
        let status = invalid_replay_status(
            "spec.to must be after spec.from",
            Some(1),
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(status.phase, Some(ReplayPhase::Failed));
        assert_eq!(status.conditions[0].reason, "InvalidSpec");
        assert!(status.conditions[0]
            .message
            .contains("spec.to must be after"));
    }
}
