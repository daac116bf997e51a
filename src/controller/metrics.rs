//! Controller metrics. Labels are bounded: the controller kind, a result, an error class.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `endpoint` or `subscription`.
    pub controller: &'static str,
    /// `ok`, `invalid_spec` or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

/// The controller's metrics.
#[derive(Clone)]
pub struct Metrics {
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<ControllerLabel, Histogram>,
    pub leader: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 14))
            }),
            leader: Gauge::default(),
        };
        let sub = registry.sub_registry_with_prefix("webhook_operator_controller");
        sub.register(
            "reconciles",
            "Reconciliations by result",
            metrics.reconciles.clone(),
        );
        sub.register(
            "reconcile_errors",
            "Reconcile errors by class",
            metrics.errors.clone(),
        );
        sub.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            metrics.duration.clone(),
        );
        sub.register(
            "leader",
            "1 while this replica holds the leader Lease",
            metrics.leader.clone(),
        );
        metrics
    }
}
