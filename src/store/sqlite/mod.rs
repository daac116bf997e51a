//! The embedded SQLite backend (the default): one file on a volume, one dispatcher.
//!
//! # Durability
//! WAL journal with `synchronous = FULL` by default: every commit fsyncs the WAL before the
//! writer answers, so an `enqueue` that returned (and the 202 the ingest API sends after it)
//! survives `kill -9`, an OS crash and a power cut. Group commit (see [`writer`]) amortises that
//! fsync over every operation waiting, so throughput does not collapse to one fsync per event.
//! [`Synchronous::Normal`] skips the per-commit fsync: still safe against a process crash (the WAL
//! is in the OS page cache), but an OS crash or power cut can lose the last commits; choose it only
//! where the volume is trusted more than the promise of the 202.
//!
//! # Concurrency
//! Writes go to one dedicated thread ([`writer`]); reads use a small pool of connections on
//! tokio's blocking pool ([`readers`]). No SQLite call runs on an async worker.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags};

use crate::store::common::validate_enqueue;
use crate::store::{
    AnalyticsBucket, AnalyticsQuery, AttemptLogEntry, AttemptResult, AttemptScope, ClaimRequest,
    ClaimedDelivery, DeadLetter, DeliveryId, DeliveryRecord, EndpointCaps, EndpointRef,
    EndpointStats, EnqueueOutcome, EnqueueRequest, EventQuery, EventRecord, EventStatus, Page,
    PageRequest, PurgeStats, QueueCounts, RecordOutcome, ReplayFilter, ReplayProgress,
    ReplayRequest, ReplayResult, Result, ResumeAction, ResumeOutcome, SecurityQuery, StatsWindows,
    Store, StoreError,
};

mod lanes;
mod queries;
mod readers;
mod rows;
pub mod schema;
mod security;
pub mod writer;
mod writes;

use readers::Readers;
use rows::millis;
pub use writer::CommitObserver;
pub(crate) use writer::Isolation;
use writer::{Admission, Writer, WriterConfig};

/// When a commit is durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync the WAL on every commit: durable across power loss (the default).
    #[default]
    Full,
    /// No fsync per commit: durable across a process crash, not an OS crash.
    Normal,
}

/// Settings of the SQLite store.
#[derive(Clone)]
pub struct SqliteConfig {
    /// The database file (created if missing).
    pub path: PathBuf,
    /// Same `(namespace, idempotency_key)` within this window is the same event.
    pub idempotency_window: Duration,
    /// Write operations that may wait for the writer; `enqueue` beyond it is `Saturated`.
    pub queue_capacity: usize,
    /// Operations per group commit at most.
    pub max_batch: usize,
    pub read_connections: usize,
    pub synchronous: Synchronous,
    pub busy_timeout: Duration,
    /// Rows per purge transaction.
    pub purge_chunk: usize,
    /// Called after every group commit (batch size, duration), e.g. for a metric.
    pub on_commit: Option<CommitObserver>,
}

impl SqliteConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            idempotency_window: Duration::from_secs(24 * 3600),
            queue_capacity: 10_000,
            max_batch: 1_000,
            read_connections: 4,
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            purge_chunk: 5_000,
            on_commit: None,
        }
    }
}

impl std::fmt::Debug for SqliteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteConfig")
            .field("path", &self.path)
            .field("idempotency_window", &self.idempotency_window)
            .field("queue_capacity", &self.queue_capacity)
            .field("max_batch", &self.max_batch)
            .field("read_connections", &self.read_connections)
            .field("synchronous", &self.synchronous)
            .field("purge_chunk", &self.purge_chunk)
            .finish_non_exhaustive()
    }
}

/// The SQLite store. Dropping the last handle stops the writer once it has committed what was
/// queued.
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Readers>,
    idempotency_window_ms: i64,
    purge_chunk: usize,
}

impl SqliteStore {
    /// Opens (creating and migrating) the database. Call [`Store::recover_in_flight`] next, at
    /// startup, so the previous process's in-flight deliveries are due again.
    pub async fn open(config: SqliteConfig) -> Result<Self> {
        tokio::task::spawn_blocking(move || Self::open_blocking(config))
            .await
            .map_err(StoreError::backend("open task"))?
    }

    fn open_blocking(config: SqliteConfig) -> Result<Self> {
        let mut conn = open_writer(&config)?;
        schema::migrate(&mut conn)?;
        let readers = Readers::open(
            config.path.clone(),
            config.read_connections,
            config.busy_timeout,
        )?;
        let (writer, _thread) = Writer::spawn(
            conn,
            WriterConfig {
                queue_capacity: config.queue_capacity,
                max_batch: config.max_batch,
                on_commit: config.on_commit.clone(),
            },
        )?;
        Ok(Self {
            writer,
            readers: Arc::new(readers),
            idempotency_window_ms: i64::try_from(config.idempotency_window.as_millis())
                .unwrap_or(i64::MAX),
            purge_chunk: config.purge_chunk,
        })
    }

    async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T> + Send + 'static,
    {
        self.writer.submit(Admission::Wait, work).await
    }
}

fn open_writer(config: &SqliteConfig) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(&config.path, flags)
        .map_err(StoreError::backend("open database"))?;
    conn.busy_timeout(config.busy_timeout)
        .map_err(StoreError::backend("set busy timeout"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(StoreError::backend("enable WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Schema(format!(
            "could not enable WAL journal (got {mode:?})"
        )));
    }
    let synchronous = match config.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(StoreError::backend("set synchronous"))?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(StoreError::backend("enable foreign keys"))?;
    // Every job of a group commit runs in a savepoint, and SQLite copies each page a savepoint
    // first changes to a sub-journal. In a temporary file that cost a pwrite per page, 20% of the
    // dispatcher's CPU under load (profile in docs/benchmarks.md); in memory it is a memcpy. The
    // sub-journal only serves rolling a savepoint back: durability is the WAL's.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(StoreError::backend("keep temporary data in memory"))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

#[async_trait]
impl Store for SqliteStore {
    async fn enqueue_batch(&self, requests: Vec<EnqueueRequest>) -> Result<Vec<EnqueueOutcome>> {
        requests.iter().try_for_each(validate_enqueue)?;
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let window = self.idempotency_window_ms;
        let rows = requests.iter().map(|r| 1 + r.endpoints.len()).sum();
        self.writer
            .submit(Admission::FailFast { rows }, move |conn| {
                writes::enqueue(conn, &requests, window)
            })
            .await
    }

    async fn claim_due_capped(
        &self,
        request: ClaimRequest,
        caps: EndpointCaps,
    ) -> Result<Vec<ClaimedDelivery>> {
        self.write(move |conn| writes::claim(conn, &request, &caps))
            .await
    }

    async fn defer(&self, owner: String, ids: Vec<DeliveryId>, until: Timestamp) -> Result<u64> {
        self.write(move |conn| writes::defer(conn, &owner, &ids, millis(until)))
            .await
    }

    async fn extend_leases(
        &self,
        owner: String,
        ids: Vec<DeliveryId>,
        until: Timestamp,
    ) -> Result<u64> {
        self.write(move |conn| writes::extend_leases(conn, &owner, &ids, millis(until)))
            .await
    }

    async fn recover_in_flight(&self, owner: Option<String>, now: Timestamp) -> Result<u64> {
        self.write(move |conn| writes::recover_in_flight(conn, owner.as_deref(), millis(now)))
            .await
    }

    async fn record_attempt(&self, result: AttemptResult) -> Result<RecordOutcome> {
        self.write(move |conn| writes::record_attempt(conn, &result))
            .await
    }

    async fn record_attempts(
        &self,
        results: Vec<AttemptResult>,
    ) -> Result<Vec<Result<RecordOutcome>>> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        self.writer
            .submit_isolating(Admission::Wait, move |conn, isolation| {
                writes::record_attempts(conn, &results, isolation)
            })
            .await
    }

    async fn hold_endpoint(&self, endpoint: EndpointRef, now: Timestamp) -> Result<u64> {
        self.write(move |conn| writes::hold_endpoint(conn, &endpoint, millis(now)))
            .await
    }

    async fn release_endpoint(&self, endpoint: EndpointRef, now: Timestamp) -> Result<u64> {
        self.write(move |conn| writes::release_endpoint(conn, &endpoint, millis(now)))
            .await
    }

    async fn resume_endpoint(
        &self,
        endpoint: EndpointRef,
        event_id: String,
        action: ResumeAction,
        now: Timestamp,
    ) -> Result<ResumeOutcome> {
        self.write(move |conn| lanes::resume(conn, &endpoint, &event_id, action, millis(now)))
            .await
    }

    async fn replay(&self, request: ReplayRequest) -> Result<ReplayResult> {
        self.write(move |conn| writes::replay(conn, &request)).await
    }

    async fn purge_finished(&self, older_than: Timestamp) -> Result<PurgeStats> {
        let (older_than, chunk) = (millis(older_than), self.purge_chunk);
        let mut total = PurgeStats::default();
        loop {
            let step = self
                .write(move |conn| writes::purge_chunk(conn, older_than, chunk))
                .await?;
            total.deliveries += step.deliveries;
            total.attempts += step.attempts;
            total.events += step.events;
            if step == PurgeStats::default() {
                return Ok(total);
            }
        }
    }

    async fn record_security_events(
        &self,
        events: Vec<(Timestamp, crate::security::SecurityEvent)>,
    ) -> Result<()> {
        self.write(move |conn| security::record(conn, &events))
            .await
    }

    async fn purge_security_events(&self, older_than: Timestamp) -> Result<u64> {
        let older_than = millis(older_than);
        self.write(move |conn| security::purge(conn, older_than))
            .await
    }

    async fn security_events(
        &self,
        query: SecurityQuery,
    ) -> Result<Page<crate::security::SecurityRecord>> {
        self.readers
            .read(move |conn| security::read(conn, &query))
            .await
    }

    async fn find_events(&self, query: EventQuery) -> Result<Page<EventRecord>> {
        self.readers
            .read(move |conn| security::find_events(conn, &query))
            .await
    }

    async fn event_status(&self, event_id: &str) -> Result<Option<EventStatus>> {
        let event_id = event_id.to_owned();
        self.readers
            .read(move |conn| queries::event_status(conn, &event_id))
            .await
    }

    async fn attempt_log(
        &self,
        scope: AttemptScope,
        page: PageRequest,
    ) -> Result<Page<AttemptLogEntry>> {
        self.readers
            .read(move |conn| queries::attempt_log(conn, &scope, &page))
            .await
    }

    async fn attempts_after(
        &self,
        scope: AttemptScope,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<AttemptLogEntry>> {
        self.readers
            .read(move |conn| queries::attempts_after(conn, &scope, after_seq, limit))
            .await
    }

    async fn last_attempt_seq(&self) -> Result<i64> {
        self.readers.read(queries::last_attempt_seq).await
    }

    async fn delivery_history(&self, id: DeliveryId) -> Result<Option<DeadLetter>> {
        self.readers
            .read(move |conn| queries::delivery_history(conn, id))
            .await
    }

    async fn dead_letters(
        &self,
        namespace: &str,
        endpoint: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<DeadLetter>> {
        let (namespace, endpoint) = (namespace.to_owned(), endpoint.map(str::to_owned));
        self.readers
            .read(move |conn| queries::dead_letters(conn, &namespace, endpoint.as_deref(), &page))
            .await
    }

    async fn analytics(&self, query: AnalyticsQuery) -> Result<Vec<AnalyticsBucket>> {
        self.readers
            .read(move |conn| queries::analytics(conn, &query))
            .await
    }

    async fn endpoint_stats_with(
        &self,
        endpoint: &EndpointRef,
        now: Timestamp,
        windows: StatsWindows,
    ) -> Result<EndpointStats> {
        let endpoint = endpoint.clone();
        self.readers
            .read(move |conn| queries::endpoint_stats(conn, &endpoint, now, windows))
            .await
    }

    async fn replay_candidates(
        &self,
        filter: ReplayFilter,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>> {
        self.readers
            .read(move |conn| queries::replay_candidates(conn, &filter, limit))
            .await
    }

    async fn replay_progress(&self, replay_id: &str) -> Result<Option<ReplayProgress>> {
        let replay_id = replay_id.to_owned();
        self.readers
            .read(move |conn| queries::replay_progress(conn, &replay_id))
            .await
    }

    async fn queue_counts(&self) -> Result<QueueCounts> {
        self.readers.read(queries::queue_counts).await
    }
}
