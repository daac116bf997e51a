//! Conditions in the shape of `metav1.Condition`, and the rule that `lastTransitionTime` moves
//! only when a condition's status flips.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The Ready condition: valid spec and everything provisioned.
pub const READY: &str = "Ready";
/// True while the resource's `spec.suspend` is set.
pub const SUSPENDED: &str = "Suspended";
/// False while deliveries to an endpoint mostly fail or its circuit is open.
pub const HEALTHY: &str = "Healthy";
/// True while an endpoint's circuit breaker is open.
pub const CIRCUIT_OPEN: &str = "CircuitOpen";
/// True once a replay has finished.
pub const COMPLETE: &str = "Complete";
/// True once every delivery of a WebhookEvent succeeded (`kubectl wait --for=condition=Delivered`).
pub const DELIVERED: &str = "Delivered";
/// True while the adaptive rate limiter holds an endpoint below its configured rate.
pub const RATE_REDUCED: &str = "RateReduced";

/// The machine-readable `reason` of every condition this operator writes: one list, so readers
/// (tests, dashboards, `kubectl wait` users) and writers cannot drift apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Ready=False: the spec is invalid (the message names the fields).
    InvalidSpec,
    /// Ready=False: a Secret the spec names does not exist yet.
    SecretNotFound,
    /// Ready=True for an endpoint: its Secret and ConfigMap exist.
    Provisioned,
    /// Ready=True for a subscription: its endpoints are resolved.
    Resolved,
    /// Ready=False for a subscription: the endpoint it names does not exist.
    EndpointNotFound,
    /// Suspended=True.
    Suspended,
    /// Suspended=False.
    Active,
    /// Healthy=True with recent successful attempts.
    Delivering,
    /// Healthy=True without attempts in the last hour.
    NoRecentTraffic,
    /// Healthy=False: most recent attempts failed.
    LowSuccessRate,
    /// Healthy=False: the circuit is open.
    CircuitOpen,
    /// CircuitOpen=True.
    FailureThresholdReached,
    /// CircuitOpen=False.
    Closed,
    /// Complete=False while a replay runs.
    Running,
    /// Complete=True once a replay has finished.
    Complete,
    /// RateReduced=True: the receiver answered 429, 503 or `Retry-After`.
    Throttled,
    /// RateReduced=True: the receiver's latency rose well above its own baseline.
    LatencyRising,
    /// RateReduced=True: many attempts timed out or could not connect.
    Timeouts,
    /// RateReduced=False.
    ConfiguredRate,
    /// Ready=True for a WebhookEvent: stored, its deliveries routed.
    Accepted,
    /// Delivered=True: every delivery succeeded.
    AllDelivered,
    /// Delivered=False: deliveries still to be made or retried (phase Pending or Delivering).
    InProgress,
    /// Delivered=False for good: some or all deliveries were dead-lettered.
    DeadLettered,
    /// Delivered=False for good: no subscription matched the event's type.
    NoSubscribers,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidSpec => "InvalidSpec",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::Provisioned => "Provisioned",
            Reason::Resolved => "Resolved",
            Reason::EndpointNotFound => "EndpointNotFound",
            Reason::Suspended => "Suspended",
            Reason::Active => "Active",
            Reason::Delivering => "Delivering",
            Reason::NoRecentTraffic => "NoRecentTraffic",
            Reason::LowSuccessRate => "LowSuccessRate",
            Reason::CircuitOpen => "CircuitOpen",
            Reason::FailureThresholdReached => "FailureThresholdReached",
            Reason::Closed => "Closed",
            Reason::Running => "Running",
            Reason::Complete => "Complete",
            Reason::Throttled => "Throttled",
            Reason::LatencyRising => "LatencyRising",
            Reason::Timeouts => "Timeouts",
            Reason::ConfiguredRate => "ConfiguredRate",
            Reason::Accepted => "Accepted",
            Reason::AllDelivered => "AllDelivered",
            Reason::InProgress => "InProgress",
            Reason::DeadLettered => "DeadLettered",
            Reason::NoSubscribers => "NoSubscribers",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<Reason> for String {
    fn eq(&self, other: &Reason) -> bool {
        self == other.as_str()
    }
}

/// A condition as in `metav1.Condition`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation of the spec this condition describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// A CamelCase machine-readable reason.
    pub reason: String,
    /// A human-readable message.
    pub message: String,
}

/// Status of a condition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    #[default]
    Unknown,
}

impl ConditionStatus {
    pub fn from_bool(value: bool) -> Self {
        if value {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// What a reconciler wants a condition to say; the time is filled in by [`merge`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    pub type_: &'static str,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
}

impl DesiredCondition {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status: ConditionStatus::from_bool(status),
            reason: reason.as_str().to_owned(),
            message: message.into(),
        }
    }
}

/// Merges desired conditions into the current ones. A condition keeps its `lastTransitionTime`
/// unless its status changes; conditions not mentioned are kept as they are.
pub fn merge(
    current: &[Condition],
    desired: &[DesiredCondition],
    generation: Option<i64>,
    now_rfc3339: &str,
) -> Vec<Condition> {
    let mut merged: Vec<Condition> = current.to_vec();
    for want in desired {
        let existing = merged.iter_mut().find(|c| c.type_ == want.type_);
        match existing {
            Some(condition) => {
                if condition.status != want.status {
                    condition.last_transition_time = now_rfc3339.to_string();
                }
                condition.status = want.status;
                condition.reason.clone_from(&want.reason);
                condition.message.clone_from(&want.message);
                condition.observed_generation = generation;
            }
            None => merged.push(Condition {
                type_: want.type_.to_string(),
                status: want.status,
                last_transition_time: now_rfc3339.to_string(),
                observed_generation: generation,
                reason: want.reason.clone(),
                message: want.message.clone(),
            }),
        }
    }
    merged
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of that type exists and is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: bool, reason: Reason) -> DesiredCondition {
        DesiredCondition::new(READY, status, reason, "m")
    }

    #[test]
    fn new_condition_gets_the_current_time() {
        let merged = merge(&[], &[ready(true, Reason::Provisioned)], Some(1), "t1");
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].last_transition_time, "t1");
        assert_eq!(merged[0].observed_generation, Some(1));
    }

    #[test]
    fn transition_time_stays_when_status_does_not_flip() {
        let first = merge(&[], &[ready(true, Reason::Provisioned)], Some(1), "t1");
        let second = merge(&first, &[ready(true, Reason::Resolved)], Some(2), "t2");
        assert_eq!(second[0].last_transition_time, "t1");
        assert_eq!(second[0].reason, Reason::Resolved);
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn transition_time_moves_when_status_flips() {
        let first = merge(&[], &[ready(true, Reason::Provisioned)], Some(1), "t1");
        let second = merge(&first, &[ready(false, Reason::InvalidSpec)], Some(2), "t2");
        assert_eq!(second[0].last_transition_time, "t2");
        assert_eq!(second[0].status, ConditionStatus::False);
    }

    #[test]
    fn unmentioned_conditions_are_kept() {
        let first = merge(
            &[],
            &[DesiredCondition::new(
                HEALTHY,
                true,
                Reason::Delivering,
                "m",
            )],
            None,
            "t1",
        );
        let second = merge(&first, &[ready(true, Reason::Provisioned)], None, "t2");
        assert!(is_true(&second, HEALTHY));
        assert!(is_true(&second, READY));
    }
}
