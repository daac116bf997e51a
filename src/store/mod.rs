//! The durable store: events, deliveries (the queue), the delivery log and dead letters.
//!
//! [`Store`] is the one trait the dispatcher uses (as `Arc<dyn Store>`); [`sqlite`] is the default
//! embedded backend, [`postgres`] the shared one for several dispatcher replicas. [`contract`] is
//! the suite every backend must pass (each backend runs it from its own test file). Logic that
//! does not depend on the SQL (validation, page cursors, analytics buckets) is shared in `common`.
//!
//! The store knows nothing of Kubernetes or HTTP. Time is always passed in (`now`), so behaviour
//! is deterministic under test.
//!
//! # Semantics every backend keeps
//! - `enqueue` answers only once the event and its deliveries are durably committed; concurrent
//!   calls are group-committed. When the write queue is full it fails fast with
//!   [`StoreError::Saturated`] and stores nothing.
//! - Idempotency: the same event id, the same `WebhookEvent` UID, or the same
//!   `(namespace, idempotency_key)` within the idempotency window returns the earlier event
//!   (`duplicate: true`) and creates no delivery.
//! - One delivery per (event, endpoint), plus one per replay id that selected it.
//! - `claim_due` moves due deliveries to InFlight under a lease `(owner, expiry)`. A delivery whose
//!   lease expired is due again for any claimer; `recover_in_flight` makes a crashed process's
//!   in-flight deliveries due at once (at startup). At least once: an attempt in flight at a crash
//!   is made again.
//! - `record_attempt` always logs the attempt; it moves the delivery only while the caller still
//!   holds the lease (fencing against a claimer whose lease was taken over).
//! - [`NextStep::Filtered`] (the endpoint's transform dropped the event; nothing was sent)
//!   finishes a delivery as `Filtered`, like Delivered: final, never retried, no dead letter, its
//!   lane goes on (`pause_on_dead_letter` does not apply). The attempt is logged with outcome
//!   `filtered` and counts in `filtered_total` only: it is neither a success nor a failure, moves
//!   none of the endpoint's "last" values, and is left out of window statistics and analytics.
//!   Replays never select Filtered deliveries.
//! - Deliveries of a held (suspended) endpoint are `Held`, including ones enqueued or retried
//!   while it is held, until `release_endpoint`.
//! - Ordered delivery: a delivery with a lane ([`EnqueueRequest::lanes`]) is `Queued` while an
//!   earlier delivery of its lane (lower id: publish order) is unfinished, and becomes `Pending`
//!   in the same transaction that finishes the one before it. So at most one delivery per lane
//!   is ever Pending, InFlight or Held, through retries, lease expiry, crashes and handover. A
//!   dead letter with `pause_on_dead_letter` pauses the endpoint instead: nothing more of it is
//!   made Pending until `resume_endpoint`. Replays queue in their lane like new events.
//! - The security log is append-only; entries leave it only by `purge_security_events`
//!   (retention). A `SecurityQuery` without a namespace returns every entry, those of no namespace
//!   included; with one, only that namespace's.
//! - A replay id runs once: the first `replay` creates the deliveries and records the id in the
//!   same transaction; later calls (after any restart) return the first run's counts.
use async_trait::async_trait;
use jiff::Timestamp;

mod common;
/// The contract suite every backend must pass: test support, out of the production library's
/// API (the crate's own tests enable `contract-tests` through their dev-dependency on it).
#[cfg(any(test, feature = "contract-tests"))]
pub mod contract;
mod error;
mod minutes;
pub mod postgres;
pub mod sqlite;
mod types;

pub use error::{BoxError, Result, StoreError};
pub use types::*;

/// The durable queue and delivery log. Object safe: the dispatcher holds an `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- writes (group-committed) ---

    /// Persists an event and one delivery per endpoint name (in the event's namespace; duplicate
    /// names count once). Fails with [`StoreError::Saturated`] when the write queue is full.
    async fn enqueue(&self, event: NewEvent, endpoints: Vec<String>) -> Result<EnqueueOutcome> {
        let mut outcomes = self
            .enqueue_batch(vec![EnqueueRequest::unordered(event, endpoints)])
            .await?;
        outcomes
            .pop()
            .ok_or(StoreError::Commit("enqueue returned no outcome".into()))
    }

    /// Persists many events in one commit (the ingest batch endpoint). Outcomes are in request
    /// order. Either all are stored or the call fails.
    async fn enqueue_batch(&self, requests: Vec<EnqueueRequest>) -> Result<Vec<EnqueueOutcome>>;

    /// Claims due deliveries: Pending with `next_attempt_at <= now`, or InFlight with an expired
    /// lease. Oldest due first. They become InFlight, owned by `owner` until `now + lease`.
    async fn claim_due(&self, request: ClaimRequest) -> Result<Vec<ClaimedDelivery>> {
        self.claim_due_capped(request, EndpointCaps::new()).await
    }

    /// [`Store::claim_due`] with per-endpoint caps below `per_endpoint_limit` (applied only when
    /// `per_endpoint_limit` is set), so a claimer does not take deliveries of an endpoint that
    /// cannot send them now; the caller still copes with deliveries it cannot send (it gives them
    /// back with [`Store::defer`]).
    async fn claim_due_capped(
        &self,
        request: ClaimRequest,
        caps: EndpointCaps,
    ) -> Result<Vec<ClaimedDelivery>>;

    /// Gives claimed deliveries back without logging an attempt (the endpoint's circuit is open,
    /// its rate limit or concurrency is exhausted): due again at `until`, Held if the endpoint is
    /// held. Only deliveries `owner` still holds move; returns how many.
    async fn defer(&self, owner: String, ids: Vec<DeliveryId>, until: Timestamp) -> Result<u64>;

    /// Extends the leases `owner` still holds on `ids` to `until`; returns how many it holds.
    async fn extend_leases(
        &self,
        owner: String,
        ids: Vec<DeliveryId>,
        until: Timestamp,
    ) -> Result<u64>;

    /// Makes InFlight deliveries due at `now` (all of them, or only `owner`'s). Call at startup:
    /// the previous process's attempts in flight are made again.
    async fn recover_in_flight(&self, owner: Option<String>, now: Timestamp) -> Result<u64>;

    /// Logs an attempt and moves the delivery to `next` (if the caller still holds its lease).
    async fn record_attempt(&self, result: AttemptResult) -> Result<RecordOutcome>;

    /// Records several attempts, each exactly as [`Store::record_attempt`] would; the outcomes are
    /// in input order and each stands alone (one failing does not undo the others). A backend may
    /// commit them together (SQLite: one writer job, one savepoint each); the default records
    /// them one by one. The outer error means none was recorded.
    async fn record_attempts(
        &self,
        results: Vec<AttemptResult>,
    ) -> Result<Vec<Result<RecordOutcome>>> {
        let mut outcomes = Vec::with_capacity(results.len());
        for result in results {
            outcomes.push(self.record_attempt(result).await);
        }
        Ok(outcomes)
    }

    /// Suspends an endpoint: its Pending deliveries (and later ones) become Held. Idempotent;
    /// returns how many deliveries were moved.
    async fn hold_endpoint(&self, endpoint: EndpointRef, now: Timestamp) -> Result<u64>;

    /// Resumes an endpoint: its Held deliveries become Pending, due now (or at their later retry
    /// time). Idempotent; returns how many deliveries were moved.
    async fn release_endpoint(&self, endpoint: EndpointRef, now: Timestamp) -> Result<u64>;

    /// Resumes an endpoint paused by the dead letter of `event_id` (see
    /// [`AttemptResult::pause_on_dead_letter`]): that dead letter is skipped or retried
    /// (`action`), and the head of every lane goes on. Naming the event makes it idempotent and
    /// keeps a stale request from resuming a later pause.
    async fn resume_endpoint(
        &self,
        endpoint: EndpointRef,
        event_id: String,
        action: ResumeAction,
        now: Timestamp,
    ) -> Result<ResumeOutcome>;

    /// Redelivers the events matched by `filter` as new deliveries, once per replay id.
    async fn replay(&self, request: ReplayRequest) -> Result<ReplayResult>;

    /// Deletes finished deliveries (and their attempts) finished before `older_than`, and events
    /// created before it that have no delivery left. Endpoint totals are kept. Replay ids are kept
    /// so a replay never runs twice. Works in chunks so the writer is not blocked for long.
    async fn purge_finished(&self, older_than: Timestamp) -> Result<PurgeStats>;

    /// Appends entries to the security log (each with the time it happened).
    async fn record_security_events(
        &self,
        events: Vec<(Timestamp, crate::security::SecurityEvent)>,
    ) -> Result<()>;

    /// Deletes security log entries older than `older_than`; returns how many.
    async fn purge_security_events(&self, older_than: Timestamp) -> Result<u64>;

    // --- reads ---

    /// Security log entries, newest first.
    async fn security_events(
        &self,
        query: SecurityQuery,
    ) -> Result<Page<crate::security::SecurityRecord>>;

    /// A namespace's events of a type pattern, newest first.
    async fn find_events(&self, query: EventQuery) -> Result<Page<EventRecord>>;

    /// An event with all its deliveries; `None` if unknown.
    async fn event_status(&self, event_id: &str) -> Result<Option<EventStatus>>;

    /// An endpoint's attempts, newest first.
    async fn delivery_log(
        &self,
        endpoint: &EndpointRef,
        page: PageRequest,
    ) -> Result<Page<AttemptLogEntry>> {
        self.attempt_log(AttemptScope::Endpoint(endpoint.clone()), page)
            .await
    }

    /// The attempts of an endpoint, a namespace or every namespace, newest first, keyset-paginated
    /// on `(at, seq)`.
    async fn attempt_log(
        &self,
        scope: AttemptScope,
        page: PageRequest,
    ) -> Result<Page<AttemptLogEntry>>;

    /// Attempts in `scope` recorded after `after_seq` (their [`AttemptLogEntry::seq`] is
    /// greater), in `seq` order, at most `limit`: what a watch of the attempt log sends next.
    async fn attempts_after(
        &self,
        scope: AttemptScope,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<AttemptLogEntry>>;

    /// One delivery with its event and every attempt (oldest first), whatever its state; `None`
    /// if unknown or purged. (A [`DeadLetter`] is exactly that shape.)
    async fn delivery_history(&self, id: DeliveryId) -> Result<Option<DeadLetter>>;

    /// The greatest attempt `seq` so far (0 before the first attempt): where a watch starts.
    async fn last_attempt_seq(&self) -> Result<i64>;

    /// Dead letters of a namespace (optionally one endpoint), most recent first, with payload and
    /// attempt history.
    async fn dead_letters(
        &self,
        namespace: &str,
        endpoint: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<DeadLetter>>;

    /// Attempt counts, success rate and average latency per hour or day bucket.
    async fn analytics(&self, query: AnalyticsQuery) -> Result<Vec<AnalyticsBucket>>;

    /// Totals, windowed rates and latencies, last times, and queue counts of one endpoint.
    async fn endpoint_stats(
        &self,
        endpoint: &EndpointRef,
        now: Timestamp,
    ) -> Result<EndpointStats> {
        self.endpoint_stats_with(endpoint, now, StatsWindows::ALL)
            .await
    }

    /// As [`endpoint_stats`](Self::endpoint_stats), computing only the `windows` asked for.
    async fn endpoint_stats_with(
        &self,
        endpoint: &EndpointRef,
        now: Timestamp,
        windows: StatsWindows,
    ) -> Result<EndpointStats>;

    /// Deliveries a replay with `filter` would select (all deliveries, including earlier
    /// replays'), oldest event first, at most `limit`.
    async fn replay_candidates(
        &self,
        filter: ReplayFilter,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>>;

    /// A replay's counts and where its deliveries are; `None` if it never ran.
    async fn replay_progress(&self, replay_id: &str) -> Result<Option<ReplayProgress>>;

    /// Unfinished deliveries by state.
    async fn queue_counts(&self) -> Result<QueueCounts>;

    /// Unfinished deliveries (pending, in flight, held): the queue depth.
    async fn pending_count(&self) -> Result<u64> {
        Ok(self.queue_counts().await?.total())
    }
}
