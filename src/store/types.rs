//! Plain data types of the store: what goes in, what comes out. No Kubernetes, no HTTP.
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;

/// An endpoint: a `WebhookEndpoint`'s namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointRef {
    pub namespace: String,
    pub name: String,
}

impl EndpointRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Stable 32-bit hash (FNV-1a over `namespace/name`) that assigns the endpoint to a partition:
    /// `partition_hash() % count`. Every backend and every replica computes the same value.
    pub fn partition_hash(&self) -> u32 {
        partition_hash(&self.namespace, &self.name)
    }
}

/// FNV-1a (32 bit) of `namespace/name`; see [`EndpointRef::partition_hash`].
pub fn partition_hash(namespace: &str, name: &str) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    namespace
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(name.bytes())
        .fold(OFFSET, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(PRIME)
        })
}

/// Where an event came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventSource {
    /// The HTTP ingest API.
    Ingest,
    /// A `WebhookEvent` resource; its UID dedupes the event across restarts and watch replays.
    Resource { name: String, uid: String },
}

/// An event to persist together with its deliveries.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// `evt_…`, chosen by the caller; enqueuing an existing id is a duplicate.
    pub event_id: String,
    pub namespace: String,
    pub event_type: String,
    /// The event's `data` object as JSON bytes.
    pub data: Bytes,
    /// Acceptance time; also the reference point of the idempotency window.
    pub created_at: Timestamp,
    pub source: EventSource,
    /// Same `(namespace, key)` within the idempotency window = the same event.
    pub idempotency_key: Option<String>,
    /// The W3C `traceparent` the event was published in (its deliveries carry it on).
    pub trace_parent: Option<String>,
}

/// One event and the names of the endpoints (in the event's namespace) it goes to.
#[derive(Clone, Debug, PartialEq)]
pub struct EnqueueRequest {
    pub event: NewEvent,
    pub endpoints: Vec<String>,
    /// The ordering lane of the delivery to each ordered endpoint (`spec.ordering`), by endpoint
    /// name. A delivery in a lane waits (Queued) until every earlier delivery of the lane is
    /// finished. Endpoints not named here are delivered unordered.
    pub lanes: std::collections::BTreeMap<String, String>,
    /// Deliveries to create already claimed, for the caller to start at once (deliver from
    /// memory, no claim round trip). `None`: every delivery waits in the store for a claim.
    pub claim: Option<ClaimOnInsert>,
}

impl EnqueueRequest {
    /// An event to `endpoints`, none of them ordered, none claimed at insert.
    pub fn unordered(event: NewEvent, endpoints: Vec<String>) -> Self {
        Self {
            event,
            endpoints,
            lanes: Default::default(),
            claim: None,
        }
    }
}

/// Which of an enqueue's deliveries are created InFlight under a lease, as if claimed by
/// `owner` in the same transaction ([`EnqueueOutcome::claimed`]). Only a delivery that would
/// otherwise be Pending is claimed: one Queued behind its lane or Held by its suspended endpoint
/// is created as usual, and a duplicate event creates none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimOnInsert {
    pub owner: String,
    pub lease_expires_at: Timestamp,
    /// Endpoint names of the request.
    pub endpoints: std::collections::BTreeSet<String>,
}

/// Identifies one delivery (one event to one endpoint, or one replay of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(pub i64);

/// What `enqueue` did. Returned only once the data is durably committed.
#[derive(Clone, Debug, PartialEq)]
pub struct EnqueueOutcome {
    /// The stored event's id: the caller's, or the earlier event's when `duplicate`.
    pub event_id: String,
    /// The event's (original) deliveries.
    pub deliveries: Vec<DeliveryId>,
    /// True when an earlier event matched (same id, resource UID, or idempotency key in the
    /// window); nothing new was stored.
    pub duplicate: bool,
    /// The deliveries created claimed ([`EnqueueRequest::claim`]), as a claim returns them.
    pub claimed: Vec<ClaimedDelivery>,
}

/// Where a delivery is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Due at `next_attempt_at`.
    Pending,
    /// Claimed by a worker under a lease.
    InFlight,
    Delivered,
    /// Retries exhausted or failed without retry; payload and attempts are kept.
    DeadLettered,
    /// The endpoint is suspended; the delivery waits for `release_endpoint`.
    Held,
    /// Ordered delivery: waiting behind an earlier unfinished delivery of its lane (or for its
    /// paused endpoint to be resumed). It becomes Pending when it reaches the head.
    Queued,
    /// The endpoint's transform dropped the event: no request was sent. Final, like Delivered;
    /// not a failure, not retried, not a dead letter.
    Filtered,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 7] = [
        DeliveryState::Pending,
        DeliveryState::InFlight,
        DeliveryState::Delivered,
        DeliveryState::DeadLettered,
        DeliveryState::Held,
        DeliveryState::Queued,
        DeliveryState::Filtered,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::InFlight => "in_flight",
            DeliveryState::Delivered => "delivered",
            DeliveryState::DeadLettered => "dead_lettered",
            DeliveryState::Held => "held",
            DeliveryState::Queued => "queued",
            DeliveryState::Filtered => "filtered",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// Delivered, dead-lettered or filtered: nothing more will happen.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            DeliveryState::Delivered | DeliveryState::DeadLettered | DeliveryState::Filtered
        )
    }
}

/// A stored event.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRecord {
    pub event_id: String,
    pub namespace: String,
    pub event_type: String,
    pub data: Bytes,
    pub created_at: Timestamp,
    pub source: EventSource,
    pub idempotency_key: Option<String>,
    /// The W3C `traceparent` it was published in.
    pub trace_parent: Option<String>,
}

/// A stored delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub event_id: String,
    pub endpoint: EndpointRef,
    pub state: DeliveryState,
    /// Attempts recorded so far.
    pub attempts: u32,
    pub next_attempt_at: Option<Timestamp>,
    pub last_attempt_at: Option<Timestamp>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<Timestamp>,
    pub dead_letter_reason: Option<String>,
    /// When it became Delivered, DeadLettered or Filtered.
    pub finished_at: Option<Timestamp>,
    /// Set on deliveries created by a replay.
    pub replay_id: Option<String>,
    pub created_at: Timestamp,
    /// The ordering lane, for a delivery to an ordered endpoint (see [`EnqueueRequest::lanes`]).
    pub lane: Option<String>,
}

impl DeliveryRecord {
    /// A delivery just created (never attempted), due at its creation.
    pub fn new(
        id: DeliveryId,
        event_id: String,
        endpoint: EndpointRef,
        state: DeliveryState,
        created_at: Timestamp,
    ) -> Self {
        Self {
            id,
            event_id,
            endpoint,
            state,
            attempts: 0,
            next_attempt_at: Some(created_at),
            last_attempt_at: None,
            last_status_code: None,
            last_error: None,
            delivered_at: None,
            dead_letter_reason: None,
            finished_at: None,
            replay_id: None,
            created_at,
            lane: None,
        }
    }
}

/// Which deliveries a claimer may take. The SQLite backend has one process, so `All`; with several
/// replicas each claims the partitions (or endpoints) it holds a Kubernetes Lease for.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ClaimScope {
    #[default]
    All,
    /// Only these endpoints.
    Endpoints(Vec<EndpointRef>),
    /// Only endpoints whose `partition_hash() % count` is in `owned`.
    Partitions { count: u32, owned: Vec<u32> },
}

/// `claim_due`'s arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRequest {
    pub now: Timestamp,
    /// At most this many deliveries.
    pub limit: usize,
    /// At most this many per endpoint (fairness); unlimited when `None`.
    pub per_endpoint_limit: Option<usize>,
    /// Who holds the lease (process or replica id).
    pub owner: String,
    /// The lease: if the owner has not recorded an attempt by `now + lease`, the delivery is due
    /// again. Make it longer than the longest attempt timeout.
    pub lease: Duration,
    pub scope: ClaimScope,
}

/// Per-endpoint caps for one claim ([`crate::store::Store::claim_due_capped`]): an endpoint named
/// here gets at most this many (0: none) instead of `per_endpoint_limit`, e.g. what its free
/// concurrency allows. Endpoints not named keep `per_endpoint_limit`.
pub type EndpointCaps = std::collections::HashMap<EndpointRef, usize>;

/// A claimed delivery with its event payload.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedDelivery {
    pub delivery: DeliveryRecord,
    pub event: EventRecord,
    pub lease_expires_at: Timestamp,
}

/// One attempt, as it is logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    pub at: Timestamp,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub status_code: Option<u16>,
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
    /// The start of the response body, for debugging.
    pub response_snippet: Option<String>,
}

/// What happens to a delivery after an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextStep {
    Retry {
        at: Timestamp,
    },
    Delivered,
    DeadLetter {
        reason: String,
    },
    /// Wait for `release_endpoint` (the endpoint was suspended).
    Held,
    /// The endpoint's transform dropped the event (jq `empty`): no request was sent. The delivery
    /// is finished as Filtered; the attempt is logged (outcome `filtered`) but is neither a
    /// success nor a failure and is left out of the window statistics and analytics.
    Filtered,
}

/// `record_attempt`'s argument: the attempt, who made it, and what comes next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptResult {
    pub delivery_id: DeliveryId,
    /// The lease owner that claimed the delivery.
    pub owner: String,
    pub record: AttemptRecord,
    pub next: NextStep,
    /// If this dead-letters a delivery in an ordering lane: pause the endpoint (no later
    /// delivery is sent until it is resumed) instead of going on with the next one
    /// (`spec.ordering.onDeadLetter: Pause`).
    pub pause_on_dead_letter: bool,
}

/// What `record_attempt` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Logged and the delivery moved to its next state.
    Applied,
    /// Logged, but the delivery was not moved: it is no longer in flight under this owner (its
    /// lease expired and another claimer took it, or it was recovered).
    LeaseLost,
    /// No such delivery (purged); nothing logged.
    NotFound,
    /// This attempt, or a later one, was recorded already (the delivery's attempt count has
    /// reached it): nothing logged or moved again. A record retried after a commit whose answer
    /// was lost (a cut connection) lands here.
    AlreadyRecorded,
}

/// What followed an attempt (the `next` it was recorded with).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    Retry,
    DeadLettered,
    Held,
    /// The transform dropped the event; nothing was sent.
    Filtered,
}

impl AttemptOutcome {
    pub fn of(next: &NextStep) -> Self {
        match next {
            NextStep::Retry { .. } => AttemptOutcome::Retry,
            NextStep::Delivered => AttemptOutcome::Delivered,
            NextStep::DeadLetter { .. } => AttemptOutcome::DeadLettered,
            NextStep::Held => AttemptOutcome::Held,
            NextStep::Filtered => AttemptOutcome::Filtered,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::DeadLettered => "dead_lettered",
            AttemptOutcome::Held => "held",
            AttemptOutcome::Filtered => "filtered",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Delivered,
            Self::Retry,
            Self::DeadLettered,
            Self::Held,
            Self::Filtered,
        ]
        .into_iter()
        .find(|outcome| outcome.as_str() == s)
    }
}

/// One line of the delivery log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptLogEntry {
    /// The attempt's row id: unique, and increasing in the order attempts were recorded (with
    /// PostgreSQL, in the order they were inserted, which concurrent commits may reorder).
    pub seq: i64,
    pub delivery_id: DeliveryId,
    pub event_id: String,
    pub event_type: String,
    pub endpoint: EndpointRef,
    pub record: AttemptRecord,
    /// The attempt succeeded (the delivery became Delivered).
    pub success: bool,
    pub outcome: AttemptOutcome,
}

/// Which attempts a read of the attempt log covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptScope {
    /// Every namespace.
    All,
    Namespace(String),
    Endpoint(EndpointRef),
}

impl AttemptScope {
    /// Whether an attempt of `endpoint` is in scope.
    pub fn covers(&self, endpoint: &EndpointRef) -> bool {
        match self {
            AttemptScope::All => true,
            AttemptScope::Namespace(namespace) => &endpoint.namespace == namespace,
            AttemptScope::Endpoint(only) => only == endpoint,
        }
    }
}

/// A page request: `cursor` from the previous page's `next_cursor`, `None` for the first page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageRequest {
    pub cursor: Option<String>,
    pub limit: usize,
}

impl PageRequest {
    /// The first page.
    pub fn first(limit: usize) -> Self {
        Self {
            cursor: None,
            limit,
        }
    }

    /// The page after `cursor` (the first page when `None`).
    pub fn after(cursor: Option<String>, limit: usize) -> Self {
        Self { cursor, limit }
    }
}

/// A page of results, newest first; `next_cursor` is `None` on the last page.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A dead-lettered delivery with its payload and attempt history (oldest attempt first).
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    pub delivery: DeliveryRecord,
    pub event: EventRecord,
    pub attempts: Vec<AttemptLogEntry>,
}

/// Analytics bucket width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketWidth {
    Hour,
    Day,
}

impl BucketWidth {
    pub fn millis(self) -> i64 {
        match self {
            BucketWidth::Hour => 3_600_000,
            BucketWidth::Day => 86_400_000,
        }
    }
}

/// `analytics`' arguments: attempts of one endpoint with `from <= at < to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnalyticsQuery {
    pub endpoint: EndpointRef,
    pub bucket: BucketWidth,
    pub from: Timestamp,
    pub to: Timestamp,
}

/// Attempts in one bucket (UTC-aligned). Every bucket of the range is present, empty ones too.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalyticsBucket {
    pub start: Timestamp,
    pub attempts: u64,
    pub successes: u64,
    pub failures: u64,
    /// successes / attempts; `None` without attempts.
    pub success_rate: Option<f64>,
    pub avg_latency_ms: Option<f64>,
}

/// Attempts of one endpoint in a trailing window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowStats {
    pub attempts: u64,
    pub successes: u64,
    pub failures: u64,
    pub success_rate: Option<f64>,
    pub error_rate: Option<f64>,
    /// Attempts the receiver answered without a server-side failure: a status below 500 other
    /// than 408. A 4xx is a failed delivery but a receiver that is up.
    pub available: u64,
    /// available / attempts; `None` without attempts.
    pub availability: Option<f64>,
    pub avg_latency_ms: Option<f64>,
    /// Nearest-rank 95th percentile.
    pub p95_latency_ms: Option<u64>,
}

/// Which of [`EndpointStats`]'s windows to compute. Each is a scan of the window's attempts,
/// so a caller that already has one recent enough (the status writer) leaves it out; a window
/// left out comes back as `WindowStats::default()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatsWindows {
    pub hour: bool,
    pub day: bool,
}

impl StatsWindows {
    pub const ALL: Self = Self {
        hour: true,
        day: true,
    };
    pub const NONE: Self = Self {
        hour: false,
        day: false,
    };
}

/// Everything an endpoint's status needs. Totals survive `purge_finished`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointStats {
    /// Deliveries that succeeded.
    pub delivered_total: u64,
    /// Attempts that failed.
    pub failed_attempts_total: u64,
    /// Deliveries that were dead-lettered.
    pub dead_lettered_total: u64,
    /// Deliveries the endpoint's transform dropped (Filtered): final, not failures.
    pub filtered_total: u64,
    /// Attempts followed by a retry.
    pub retries_total: u64,
    pub last_hour: WindowStats,
    pub last_day: WindowStats,
    pub last_attempt_at: Option<Timestamp>,
    pub last_success_at: Option<Timestamp>,
    pub last_failure_at: Option<Timestamp>,
    pub last_status_code: Option<u16>,
    /// The error of the most recent failed attempt.
    pub last_error: Option<String>,
    /// Dead letters currently stored.
    pub dead_letter_count: u64,
    pub pending_count: u64,
    pub in_flight_count: u64,
    pub held_count: u64,
    /// Ordered deliveries waiting behind an earlier one of their lane.
    pub queued_count: u64,
    /// Set while the endpoint is paused after a dead letter (`onDeadLetter: Pause`).
    pub paused: Option<EndpointPause>,
}

/// Why an ordered endpoint stopped: the dead letter that paused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPause {
    pub since: Timestamp,
    /// The dead-lettered delivery and its event.
    pub delivery_id: DeliveryId,
    pub event_id: String,
    pub reason: String,
}

/// What `resume_endpoint` does with the dead letter that paused an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeAction {
    /// Leave it dead-lettered and go on with the next delivery of its lane.
    Skip,
    /// Make it due again now, at the head of its lane, with a fresh retry schedule.
    Retry,
}

/// What `resume_endpoint` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// The endpoint was paused by that event and now delivers again.
    Resumed,
    /// The endpoint is not paused (never was, or already resumed).
    NotPaused,
    /// It is paused by another event (the one named): nothing changed.
    OtherEvent(String),
}

/// An event and all its deliveries (original and replayed), for `WebhookEvent` status.
#[derive(Clone, Debug, PartialEq)]
pub struct EventStatus {
    pub event: EventRecord,
    pub deliveries: Vec<DeliveryRecord>,
}

/// Final outcomes a replay can select.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FinalOutcome {
    Delivered,
    DeadLettered,
}

impl FinalOutcome {
    pub fn state(self) -> DeliveryState {
        match self {
            FinalOutcome::Delivered => DeliveryState::Delivered,
            FinalOutcome::DeadLettered => DeliveryState::DeadLettered,
        }
    }
}

/// An event type pattern: exact, `prefix.*`, or `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventTypePattern {
    Any,
    Prefix(String),
    Exact(String),
}

impl EventTypePattern {
    pub fn parse(pattern: &str) -> Self {
        if pattern == "*" {
            EventTypePattern::Any
        } else if let Some(prefix) = pattern.strip_suffix(".*") {
            EventTypePattern::Prefix(format!("{prefix}."))
        } else {
            EventTypePattern::Exact(pattern.to_owned())
        }
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            EventTypePattern::Any => true,
            EventTypePattern::Prefix(prefix) => event_type.starts_with(prefix.as_str()),
            EventTypePattern::Exact(exact) => event_type == exact,
        }
    }
}

/// Which past deliveries of one endpoint a replay selects: events created in `from <= t < to`
/// whose type matches one of `event_types` (all when empty) and whose delivery ended in one of
/// `outcomes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayFilter {
    pub endpoint: EndpointRef,
    pub from: Timestamp,
    pub to: Timestamp,
    pub event_types: Vec<String>,
    pub outcomes: Vec<FinalOutcome>,
}

impl ReplayFilter {
    /// Whether an event type passes the type filter.
    pub fn matches_type(&self, event_type: &str) -> bool {
        self.event_types.is_empty()
            || self
                .event_types
                .iter()
                .any(|p| EventTypePattern::parse(p).matches(event_type))
    }
}

/// `replay`'s arguments. `replay_id` (e.g. the WebhookReplay's UID) makes it run once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayRequest {
    pub replay_id: String,
    pub filter: ReplayFilter,
    pub now: Timestamp,
}

/// What a replay did (or, when `first_run` is false, had done before).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayResult {
    pub replay_id: String,
    /// Events matched (each is redelivered once, however many deliveries of it matched).
    pub matched: u64,
    /// New deliveries created.
    pub requeued: u64,
    /// False when this replay id had already run; nothing new was created.
    pub first_run: bool,
}

/// Where a replay's deliveries are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayProgress {
    pub replay_id: String,
    pub endpoint: EndpointRef,
    pub created_at: Timestamp,
    pub matched: u64,
    pub requeued: u64,
    /// Pending, in flight, held or queued.
    pub outstanding: u64,
    pub delivered: u64,
    pub dead_lettered: u64,
    /// Finished as Filtered (the endpoint's transform dropped the event).
    pub filtered: u64,
}

/// Unfinished deliveries by state, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub pending: u64,
    pub in_flight: u64,
    pub held: u64,
    pub queued: u64,
}

impl QueueCounts {
    pub fn total(&self) -> u64 {
        self.pending + self.in_flight + self.held + self.queued
    }
}

/// What `purge_finished` removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeStats {
    pub deliveries: u64,
    pub attempts: u64,
    pub events: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_hash_is_fnv1a() {
        // FNV-1a 32 of "ns/ep", computed independently.
        assert_eq!(partition_hash("ns", "ep"), 0xb8fb_9f0e);
        assert_eq!(
            EndpointRef::new("ns", "ep").partition_hash(),
            partition_hash("ns", "ep")
        );
        assert_ne!(partition_hash("ns", "a"), partition_hash("ns", "b"));
    }

    #[test]
    fn event_type_patterns() {
        assert!(EventTypePattern::parse("*").matches("user.created"));
        assert!(EventTypePattern::parse("user.*").matches("user.created"));
        assert!(!EventTypePattern::parse("user.*").matches("username.created"));
        assert!(EventTypePattern::parse("user.created").matches("user.created"));
        assert!(!EventTypePattern::parse("user.created").matches("user.updated"));
    }

    #[test]
    fn state_names_round_trip() {
        for state in DeliveryState::ALL {
            assert_eq!(DeliveryState::parse(state.as_str()), Some(state));
        }
    }

    #[test]
    fn filtered_is_final() {
        assert_eq!(DeliveryState::Filtered.as_str(), "filtered");
        assert!(DeliveryState::Filtered.is_finished());
        assert_eq!(
            AttemptOutcome::of(&NextStep::Filtered),
            AttemptOutcome::Filtered
        );
        assert_eq!(AttemptOutcome::Filtered.as_str(), "filtered");
        assert_eq!(
            AttemptOutcome::parse("filtered"),
            Some(AttemptOutcome::Filtered)
        );
    }
}

/// `security_events`' arguments: newest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecurityQuery {
    /// One namespace's entries, or (`None`) every entry, those of no namespace included.
    pub namespace: Option<String>,
    /// Only these kinds; every kind when empty.
    pub kinds: Vec<crate::security::SecurityKind>,
    pub page: PageRequest,
}

/// `find_events`' arguments: a namespace's events, newest first, of a type pattern.
#[derive(Clone, Debug, PartialEq)]
pub struct EventQuery {
    pub namespace: String,
    pub event_type: EventTypePattern,
    pub page: PageRequest,
}
