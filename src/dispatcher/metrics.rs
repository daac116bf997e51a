//! Dispatcher metrics. Endpoint labels are bounded by the number of endpoints; outcomes, codes
//! and states are fixed sets.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::delivery::circuit::BreakerState;
use crate::store::EndpointRef;

/// The `outcome` label of a dead-lettered delivery (as `Outcome::DeadLetter` names it).
const DEAD_LETTER: &str = "dead_letter";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub namespace: String,
    pub endpoint: String,
    /// delivered, retry, dead_letter, blocked.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub namespace: String,
    pub endpoint: String,
}

fn circuit_labels(endpoint: &EndpointRef, state: &'static str) -> CircuitLabels {
    CircuitLabels {
        namespace: endpoint.namespace.clone(),
        endpoint: endpoint.name.clone(),
        state,
    }
}

impl EndpointLabels {
    pub fn of(endpoint: &EndpointRef) -> Self {
        Self {
            namespace: endpoint.namespace.clone(),
            endpoint: endpoint.name.clone(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CircuitLabels {
    pub namespace: String,
    pub endpoint: String,
    /// closed, half_open, open.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub namespace: String,
}

/// The `state` label values of `circuit_state`.
const CIRCUIT_STATES: [(BreakerState, &str); 3] = [
    (BreakerState::Closed, "closed"),
    (BreakerState::HalfOpen, "half_open"),
    (BreakerState::Open, "open"),
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateCutLabels {
    pub namespace: String,
    pub endpoint: String,
    /// Throttled, LatencyRising, Timeouts.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    /// The HTTP status code class and code, e.g. 202, 400.
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecurityLabels {
    /// A `SecurityKind` name (a fixed set).
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransformRunLabels {
    /// `dispatcher` (a program proved bounded, run in process) or `worker`.
    pub place: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimLabels {
    /// A [`ClaimPath`] name (a fixed set).
    pub path: &'static str,
}

/// How this replica came to hold a delivery (the `path` label of `claims`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimPath {
    /// Created claimed by this replica's ingest and started at once (deliver from memory).
    Insert,
    /// Claimed from the store (new deliveries it could not start at once, retries, recovery).
    Store,
}

impl ClaimPath {
    pub const ALL: [Self; 2] = [Self::Insert, Self::Store];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::Store => "store",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransformOutputLabels {
    /// A [`TransformOutputSource`] name (a fixed set).
    pub source: &'static str,
}

impl TransformOutputLabels {
    fn of(source: TransformOutputSource) -> Self {
        Self {
            source: source.as_str(),
        }
    }
}

/// Where an attempt's transform output came from (the `source` label of `transform_outputs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransformOutputSource {
    /// Run ahead, and answered before the attempt started.
    Ready,
    /// Run ahead; the attempt waited for the answer holding its slot.
    Waited,
    /// Run by the attempt itself.
    Attempt,
}

impl TransformOutputSource {
    pub const ALL: [Self; 3] = [Self::Ready, Self::Waited, Self::Attempt];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Waited => "waited",
            Self::Attempt => "attempt",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    /// auth_failure_burst, repeated_refusals, dns_rebinding.
    pub alert: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    /// Attempts by what came of them (named `deliveries_total` before 0.2: it always counted
    /// attempts).
    pub attempts: Family<DeliveryLabels, Counter>,
    /// Accept → first 2xx of a delivery (replays excluded), per namespace: the SLO figure.
    pub end_to_end: Family<NamespaceLabels, Histogram>,
    /// Time to answer an API request (publishing, reads), any status.
    pub request_seconds: Histogram,
    pub attempt_latency: Family<EndpointLabels, Histogram>,
    pub retries: Family<EndpointLabels, Counter>,
    pub dead_letters: Family<EndpointLabels, Counter>,
    /// 1 for the endpoint's breaker state (`state` label), 0 for the others.
    pub circuit_state: Family<CircuitLabels, Gauge>,
    /// Requests per minute the adaptive limiter allows now.
    pub rate_limit: Family<EndpointLabels, Gauge>,
    /// Cuts of the allowed rate, by reason (`Throttled`, `LatencyRising`, `Timeouts`).
    pub rate_cuts: Family<RateCutLabels, Counter>,
    pub queue_depth: Gauge,
    /// Endpoints whose status waits for a write (beyond a round's `--status-writes-per-second`).
    pub status_writes_waiting: Gauge,
    pub in_flight: Gauge,
    /// Partitions this replica holds (several replicas on a shared store).
    pub partitions_owned: Gauge,
    pub ingest_requests: Family<IngestLabels, Counter>,
    pub store_commit_seconds: Histogram,
    /// Security log entries by kind.
    pub security_events: Family<SecurityLabels, Counter>,
    /// Alerts of suspicious activity by alert.
    pub security_alerts: Family<AlertLabels, Counter>,
    /// Security log entries dropped because its queue was full.
    pub security_log_dropped: Counter,
    /// Attempts of deliveries with a transform, by where the output came from.
    pub transform_outputs: Family<TransformOutputLabels, Counter>,
    /// Deliveries this replica took, by how (see [`ClaimPath`]).
    pub claims: Family<ClaimLabels, Counter>,
    /// Transform runs by where they ran.
    pub transform_runs: Family<TransformRunLabels, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            attempts: Family::default(),
            end_to_end: Family::new_with_constructor(|| {
                // 5 ms … ~1.5 h: a retried delivery's wait is part of what the SLO measures.
                Histogram::new(exponential_buckets(0.005, 2.0, 21))
            }),
            request_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            attempt_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.002, 2.0, 14))
            }),
            retries: Family::default(),
            dead_letters: Family::default(),
            circuit_state: Family::default(),
            rate_limit: Family::default(),
            rate_cuts: Family::default(),
            queue_depth: Gauge::default(),
            status_writes_waiting: Gauge::default(),
            in_flight: Gauge::default(),
            partitions_owned: Gauge::default(),
            ingest_requests: Family::default(),
            store_commit_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            security_events: Family::default(),
            security_alerts: Family::default(),
            security_log_dropped: Counter::default(),
            transform_outputs: Family::default(),
            claims: Family::default(),
            transform_runs: Family::default(),
        };
        for place in ["dispatcher", "worker"] {
            let _ = metrics
                .transform_runs
                .get_or_create(&TransformRunLabels { place });
        }
        for path in ClaimPath::ALL {
            let _ = metrics.claims.get_or_create(&ClaimLabels {
                path: path.as_str(),
            });
        }
        for source in TransformOutputSource::ALL {
            let _ = metrics
                .transform_outputs
                .get_or_create(&TransformOutputLabels::of(source));
        }
        // Every series from the start, so alert rules and dashboards find them before the first.
        for kind in crate::security::SecurityKind::ALL {
            let _ = metrics.security_events.get_or_create(&SecurityLabels {
                kind: kind.as_str(),
            });
            if kind.is_alert() {
                let _ = metrics.security_alerts.get_or_create(&AlertLabels {
                    alert: kind.as_str(),
                });
            }
        }
        let r = registry.sub_registry_with_prefix("webhook_operator_dispatcher");
        r.register(
            "attempts",
            "Delivery attempts by outcome",
            metrics.attempts.clone(),
        );
        r.register(
            "end_to_end_seconds",
            "Time from accepting an event to the first 2xx of each of its deliveries (replays excluded)",
            metrics.end_to_end.clone(),
        );
        r.register(
            "request_seconds",
            "Time to answer a request of the HTTP API (publishing and reads)",
            metrics.request_seconds.clone(),
        );
        r.register(
            "attempt_latency_seconds",
            "Latency of delivery attempts",
            metrics.attempt_latency.clone(),
        );
        r.register(
            "retries",
            "Attempts followed by a retry",
            metrics.retries.clone(),
        );
        r.register(
            "dead_letters",
            "Deliveries dead-lettered",
            metrics.dead_letters.clone(),
        );
        r.register(
            "circuit_state",
            "Circuit breaker state: 1 for the current state (label state: closed, half_open, open), 0 for the others",
            metrics.circuit_state.clone(),
        );
        r.register(
            "rate_limit_per_minute",
            "Requests per minute the adaptive rate limiter allows an endpoint now",
            metrics.rate_limit.clone(),
        );
        r.register(
            "rate_cuts",
            "Cuts of an endpoint's allowed rate by the adaptive limiter, by reason",
            metrics.rate_cuts.clone(),
        );
        r.register(
            "queue_depth",
            "Unfinished deliveries in the store",
            metrics.queue_depth.clone(),
        );
        r.register(
            "status_writes_waiting",
            "Endpoints whose status waits for a write after this round's budget was spent",
            metrics.status_writes_waiting.clone(),
        );
        r.register(
            "in_flight",
            "Delivery attempts in flight",
            metrics.in_flight.clone(),
        );
        r.register(
            "partitions_owned",
            "Endpoint partitions this replica holds a Lease for (shared store only)",
            metrics.partitions_owned.clone(),
        );
        r.register(
            "ingest_requests",
            "Ingest API requests by status code",
            metrics.ingest_requests.clone(),
        );
        r.register(
            "store_commit_seconds",
            "Duration of one group commit",
            metrics.store_commit_seconds.clone(),
        );
        r.register(
            "security_events",
            "Security log entries by kind (refused destinations, 401/403, logins, user actions, alerts)",
            metrics.security_events.clone(),
        );
        r.register(
            "security_alerts",
            "Alerts of suspicious activity: auth_failure_burst, repeated_refusals, dns_rebinding",
            metrics.security_alerts.clone(),
        );
        r.register(
            "security_log_dropped",
            "Security log entries dropped because the log's queue was full",
            metrics.security_log_dropped.clone(),
        );
        r.register(
            "transform_outputs",
            "Attempts of deliveries with a transform, by where the output came from: ready (run ahead, answered), waited (run ahead, the attempt waited holding its slot), attempt (run in the attempt)",
            metrics.transform_outputs.clone(),
        );
        r.register(
            "transform_runs",
            "Transform runs by place: dispatcher (the program is proved bounded and its payload fits the budget, run in process) or worker (a transform worker process)",
            metrics.transform_runs.clone(),
        );
        r.register(
            "claims",
            "Deliveries this replica took, by path: insert (created claimed by its ingest and started at once), store (claimed from the store: deliveries not started at once, retries, recovery)",
            metrics.claims.clone(),
        );
        metrics
    }

    /// Counts deliveries this replica took by `path`.
    pub fn count_claims(&self, path: ClaimPath, count: usize) {
        self.claims
            .get_or_create(&ClaimLabels {
                path: path.as_str(),
            })
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    /// The transform pool's counters of runs by place (shared with these series).
    pub fn transform_run_counters(&self) -> crate::transform::RunCounters {
        let counter = |place| {
            self.transform_runs
                .get_or_create(&TransformRunLabels { place })
                .clone()
        };
        crate::transform::RunCounters {
            in_process: counter("dispatcher"),
            in_worker: counter("worker"),
        }
    }

    /// Counts an attempt's transform output by where it came from.
    pub fn count_transform_output(&self, source: TransformOutputSource) {
        self.transform_outputs
            .get_or_create(&TransformOutputLabels::of(source))
            .inc();
    }

    /// Sets the endpoint's breaker state: its series 1, the other states' 0.
    pub fn set_circuit(&self, endpoint: &EndpointRef, state: BreakerState) {
        for (each, name) in CIRCUIT_STATES {
            self.circuit_state
                .get_or_create(&circuit_labels(endpoint, name))
                .set(i64::from(each == state));
        }
    }

    /// Drops the endpoint's breaker series (another replica reports it now).
    pub fn forget_circuit(&self, endpoint: &EndpointRef) {
        for (_, name) in CIRCUIT_STATES {
            self.circuit_state.remove(&circuit_labels(endpoint, name));
        }
    }

    /// Counts an outcome (`delivered`, `retry`, `dead_letter`, `blocked`) in `attempts`.
    pub fn count_attempt(&self, endpoint: &EndpointRef, outcome: &'static str) {
        self.attempts
            .get_or_create(&DeliveryLabels {
                namespace: endpoint.namespace.clone(),
                endpoint: endpoint.name.clone(),
                outcome,
            })
            .inc();
    }

    /// Counts a dead letter in `dead_letters`.
    pub fn count_dead_letter(&self, endpoint: &EndpointRef) {
        self.dead_letters
            .get_or_create(&EndpointLabels::of(endpoint))
            .inc();
    }

    /// Counts a delivery dead-lettered without an attempt (its endpoint deleted, its request
    /// impossible to build) exactly as one dead-lettered after an attempt: in `attempts`
    /// with outcome `dead_letter` and in `dead_letters`.
    pub fn dead_lettered_without_attempt(&self, endpoint: &EndpointRef) {
        self.count_attempt(endpoint, DEAD_LETTER);
        self.count_dead_letter(endpoint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::outcome::Outcome;

    #[test]
    fn dead_letters_without_attempt_count_like_the_others() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let endpoint = EndpointRef::new("shop", "crm");
        metrics.dead_lettered_without_attempt(&endpoint);
        metrics.dead_lettered_without_attempt(&endpoint);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let value = |series: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
        };
        assert_eq!(
            value("webhook_operator_dispatcher_dead_letters_total{namespace=\"shop\",endpoint=\"crm\"}"),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            value("webhook_operator_dispatcher_attempts_total{namespace=\"shop\",endpoint=\"crm\",outcome=\"dead_letter\"}"),
            Some(2.0),
            "{text}"
        );
        // The same label value as a dead letter after an attempt.
        let after_attempt = Outcome::DeadLetter {
            reason: String::new(),
            endpoint_gone: false,
        };
        assert_eq!(after_attempt.as_str(), DEAD_LETTER);
    }

    #[test]
    fn the_circuit_state_is_a_label() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let endpoint = EndpointRef::new("shop", "crm");
        metrics.set_circuit(&endpoint, BreakerState::Open);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let series = |state: &str| {
            format!("webhook_operator_dispatcher_circuit_state{{namespace=\"shop\",endpoint=\"crm\",state=\"{state}\"}}")
        };
        let value = |state: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&series(state))?.trim().parse::<i64>().ok())
        };
        assert_eq!(
            (value("open"), value("closed"), value("half_open")),
            (Some(1), Some(0), Some(0)),
            "{text}"
        );
        metrics.forget_circuit(&endpoint);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("endpoint=\"crm\",state"), "{text}");
    }
}
