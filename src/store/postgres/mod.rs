//! The PostgreSQL backend: one shared database for several dispatcher replicas.
//!
//! # Connection
//! [`PostgresConfig::url`] is a libpq-style URL or key/value string
//! (`postgres://user:password@host:5432/db`, `host=… user=… password=… dbname=…`). In a cluster it
//! comes from a Secret, exposed to the dispatcher as the environment variable `DATABASE_URL`
//! ([`PostgresConfig::from_env`]). TLS (rustls) follows the string's `sslmode` and
//! `sslrootcert` ([`tls`]): `require` (and `verify-ca`, `verify-full`) means a verified
//! certificate, `disable` plain TCP, `prefer` (the default) verified TLS when possible. The tables
//! live in [`PostgresConfig::schema`] (created if missing) or in the connection's default schema.
//!
//! # Durability
//! `enqueue` answers after `COMMIT`; with the server's default `synchronous_commit = on` that is
//! after the WAL is flushed, so an acknowledged event survives a crash of the dispatcher and of
//! the server. Enqueues are group-committed ([`writer`]): one transaction, one flush, for every
//! enqueue waiting. Other writes (claims, attempt results, …) each run in their own short
//! transaction on a pooled connection.
//!
//! # Several replicas
//! Everything is safe to run from several processes at once: claims lock the rows they take with
//! `FOR UPDATE SKIP LOCKED` (a row is claimed by one replica; the others pass over it without
//! waiting), `record_attempt` locks its delivery and checks the lease (fencing), enqueues take
//! transaction-scoped advisory locks on the identities they dedupe on (event id, resource UID,
//! idempotency key) in a fixed order, and a replay takes one on its id. Ordered delivery adds
//! advisory locks per lane and per endpoint, so an enqueue, a finish and a resume on one lane run
//! one after the other ([`lanes`] explains why and in which order). Which replica claims which
//! endpoints is the caller's choice, through [`ClaimScope`](crate::store::ClaimScope)
//! (`Partitions` filters on the stored `partition_hash`).
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use jiff::Timestamp;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::store::common::{millis, validate_enqueue};
use crate::store::{
    AnalyticsBucket, AnalyticsQuery, AttemptLogEntry, AttemptResult, AttemptScope, ClaimRequest,
    ClaimedDelivery, DeadLetter, DeliveryId, DeliveryRecord, EndpointCaps, EndpointRef,
    EndpointStats, EnqueueOutcome, EnqueueRequest, EventQuery, EventRecord, EventStatus, Page,
    PageRequest, PurgeStats, QueueCounts, RecordOutcome, ReplayFilter, ReplayProgress,
    ReplayRequest, ReplayResult, Result, ResumeAction, ResumeOutcome, SecurityQuery, StatsWindows,
    Store, StoreError,
};

mod enqueue;
mod lanes;
mod pipeline;
mod reads;
mod record;
mod rows;
pub mod schema;
mod security;
pub mod tls;
pub mod writer;
mod writes;

pub use writes::PURGE_LOCK;

use tls::TlsSettings;
pub use writer::CommitObserver;
use writer::{Writer, WriterConfig};

/// Endpoints per transaction of the lane repair in `recover_in_flight` (one exclusive advisory
/// lock each).
const REPAIR_CHUNK: usize = 64;

/// Settings of the PostgreSQL store.
#[derive(Clone)]
pub struct PostgresConfig {
    /// libpq-style connection URL or key/value string (from a Secret: `DATABASE_URL`).
    pub url: String,
    /// Schema holding the tables (`[a-z_][a-z0-9_]*`, created if missing); the connection's
    /// default (`public`) when `None`.
    pub schema: Option<String>,
    /// Connections at most (the group-commit writer takes one per batch from the same pool).
    pub pool_size: usize,
    /// Same `(namespace, idempotency_key)` within this window is the same event.
    pub idempotency_window: Duration,
    /// Enqueues that may wait for the writer; beyond it `enqueue` is `Saturated`.
    pub queue_capacity: usize,
    /// Enqueue operations per group commit at most.
    pub max_batch: usize,
    /// How long opening one connection may take.
    pub connect_timeout: Duration,
    /// Rows per purge transaction.
    pub purge_chunk: usize,
    /// Called after every group commit (batch size, duration), e.g. for a metric.
    pub on_commit: Option<CommitObserver>,
}

impl PostgresConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            pool_size: 8,
            idempotency_window: Duration::from_secs(24 * 3600),
            queue_capacity: 10_000,
            max_batch: 1_000,
            connect_timeout: Duration::from_secs(10),
            purge_chunk: 5_000,
            on_commit: None,
        }
    }

    /// The settings with the connection URL from environment variable `var` (e.g.
    /// `DATABASE_URL`, set from a Secret).
    pub fn from_env(var: &str) -> Result<Self> {
        let url = std::env::var(var).map_err(|_| {
            StoreError::InvalidArgument(format!("environment variable {var} is not set"))
        })?;
        Ok(Self::new(url))
    }
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        f.debug_struct("PostgresConfig")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("idempotency_window", &self.idempotency_window)
            .field("queue_capacity", &self.queue_capacity)
            .field("max_batch", &self.max_batch)
            .field("purge_chunk", &self.purge_chunk)
            .finish_non_exhaustive()
    }
}

/// Wraps a database error with what the store was doing. A lost connection, a deadlock or a
/// serialization failure is [`StoreError::Commit`]: transient, nothing of it was committed.
fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| {
        let transient = e.is_closed()
            || e.code().is_some_and(|code| {
                *code == SqlState::T_R_DEADLOCK_DETECTED
                    || *code == SqlState::T_R_SERIALIZATION_FAILURE
            });
        if transient {
            StoreError::Commit(format!("{context}: {e}"))
        } else {
            StoreError::backend(context)(e)
        }
    }
}

/// Whether `error` is PostgreSQL refusing a statement because an earlier one of the transaction
/// failed (25P02): the symptom, not the cause, when statements are pipelined.
fn failed_before(error: &StoreError) -> bool {
    match error {
        StoreError::Backend { source, .. } => {
            source
                .downcast_ref::<tokio_postgres::Error>()
                .and_then(tokio_postgres::Error::code)
                == Some(&SqlState::IN_FAILED_SQL_TRANSACTION)
        }
        _ => false,
    }
}

/// How often a store makes expired leases due again, at most (claim time): a lease is 330 s, so a
/// second more is nothing, and every claim sweeping cost a statement and a round trip each.
const LEASE_SWEEP_MS: i64 = 1_000;

/// Whether a claim at `now_ms` sweeps expired leases, given the last sweep (updated when it
/// does). Time going back (another clock, a test) sweeps.
fn lease_sweep_due(last: &AtomicI64, now_ms: i64) -> bool {
    let since = now_ms.saturating_sub(last.load(Ordering::Relaxed));
    if (0..LEASE_SWEEP_MS).contains(&since) {
        return false;
    }
    last.store(now_ms, Ordering::Relaxed);
    true
}

/// The PostgreSQL store. Dropping the last handle stops the writer once it has committed what was
/// queued.
pub struct PostgresStore {
    pool: Pool,
    writer: Writer,
    purge_chunk: usize,
    /// When (claim time, ms) this store last made expired leases due again.
    last_lease_sweep: AtomicI64,
    /// To explain a connection that fails TLS later.
    tls: TlsSettings,
}

/// Runs `$body` inside a transaction on a pooled connection and commits it.
macro_rules! in_transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut client = $store.client().await?;
        let $tx = client.transaction().await.map_err(db("begin"))?;
        let value = $body;
        $tx.commit().await.map_err(db("commit"))?;
        Ok(value)
    }};
}

/// Runs `$body` inside a read-only REPEATABLE READ transaction (one snapshot).
macro_rules! in_snapshot {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut client = $store.client().await?;
        let $tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db("begin read"))?;
        let value = $body;
        $tx.commit().await.map_err(db("end read"))?;
        Ok(value)
    }};
}

impl PostgresStore {
    /// Records a batch in one transaction; `isolate_each`: each result in a savepoint of its
    /// own (one that fails is answered with its error), else the first failure fails the batch.
    /// The endpoints' counters are written once per endpoint at the end.
    async fn record_batch(
        &self,
        results: &[AttemptResult],
        isolate_each: bool,
    ) -> Result<Vec<Result<RecordOutcome>>> {
        let mut client = self.client().await?;
        let mut tx = client.transaction().await.map_err(db("begin"))?;
        record::lock_finishing_lanes(&tx, results).await?;
        let outcomes = if isolate_each {
            let mut each = Vec::with_capacity(results.len());
            for result in results {
                each.push(record::record_in_savepoint(&mut tx, result).await?);
            }
            record::write_counted(&tx, each, &record::Writes::default()).await?
        } else {
            record::record_all(&tx, results)
                .await?
                .into_iter()
                .map(Ok)
                .collect()
        };
        tx.commit().await.map_err(db("commit"))?;
        Ok(outcomes)
    }

    /// Connects, creates and migrates the schema, and starts the group-commit writer. Unlike the
    /// SQLite store, do not call `recover_in_flight(None, …)` at the start of one replica: other
    /// replicas' deliveries are in flight too; expired leases come back by themselves.
    pub async fn open(config: PostgresConfig) -> Result<Self> {
        let split = tls::split_tls_params(&config.url)
            .map_err(|e| e.into_store_error("parse the database URL"))?;
        let mut pg: tokio_postgres::Config = split
            .rest
            .parse()
            .map_err(StoreError::backend("parse the database URL"))?;
        let tls = TlsSettings::new(split.sslmode, split.sslrootcert.as_deref())
            .map_err(|e| e.into_store_error("database TLS settings"))?;
        pg.ssl_mode(tls.tokio_mode());
        pg.connect_timeout(config.connect_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("webhook-operator");
        }
        if let Some(schema) = &config.schema {
            if !schema::valid_schema_name(schema) {
                return Err(StoreError::InvalidArgument(format!(
                    "schema name {schema:?} is not [a-z_][a-z0-9_]*"
                )));
            }
            pg.options(format!("-c search_path={schema}"));
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls.choose_connector(&pg).await? {
            Some(rustls) => Manager::from_config(pg, rustls, manager_config),
            None => Manager::from_config(pg, NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(config.connect_timeout))
            .build()
            .map_err(StoreError::backend("build the connection pool"))?;
        let mut client = pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => {
                tls.connect_error("connect to the database", e)
            }
            other => StoreError::backend("connect to the database")(other),
        })?;
        // For the log only: a server that hides pg_stat_ssl still works.
        match session_encrypted(&client).await {
            Ok(tls) => tracing::info!(tls, "connected to PostgreSQL"),
            Err(error) => tracing::info!(%error, "connected to PostgreSQL (TLS state unknown)"),
        }
        schema::migrate(&mut client, config.schema.as_deref()).await?;
        drop(client);
        let writer = Writer::spawn(
            pool.clone(),
            WriterConfig {
                queue_capacity: config.queue_capacity,
                max_batch: config.max_batch,
                idempotency_window_ms: i64::try_from(config.idempotency_window.as_millis())
                    .unwrap_or(i64::MAX),
                on_commit: config.on_commit.clone(),
            },
        );
        Ok(Self {
            pool,
            writer,
            purge_chunk: config.purge_chunk,
            last_lease_sweep: AtomicI64::new(i64::MIN),
            tls,
        })
    }

    /// Whether the store's connections to the server are encrypted (TLS), as the server sees a
    /// pooled connection (`pg_stat_ssl`).
    pub async fn connection_encrypted(&self) -> Result<bool> {
        let client = self.client().await?;
        session_encrypted(&client).await
    }

    async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) if TlsSettings::is_tls_failure(&e) => {
                self.tls.connect_error("get a database connection", e)
            }
            deadpool_postgres::PoolError::Backend(e) => db("get a database connection")(e),
            other => StoreError::Commit(format!("get a database connection: {other}")),
        })
    }
}

/// Whether the server sees the session of `client` as TLS.
async fn session_encrypted(client: &tokio_postgres::Client) -> Result<bool> {
    let row = client
        .query_opt(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(db("read pg_stat_ssl"))?;
    match row {
        Some(row) => row.try_get(0).map_err(db("read pg_stat_ssl")),
        None => Ok(false),
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn enqueue_batch(&self, requests: Vec<EnqueueRequest>) -> Result<Vec<EnqueueOutcome>> {
        requests.iter().try_for_each(validate_enqueue)?;
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        self.writer.enqueue(requests).await
    }

    async fn claim_due_capped(
        &self,
        request: ClaimRequest,
        caps: EndpointCaps,
    ) -> Result<Vec<ClaimedDelivery>> {
        // Two statements of their own, no transaction: one round trip a claim, not four.
        let client = self.client().await?;
        let now = millis(request.now);
        if lease_sweep_due(&self.last_lease_sweep, now) {
            writes::expire_leases(&client, now).await?;
        }
        writes::claim(&client, &request, &caps).await
    }

    async fn defer(&self, owner: String, ids: Vec<DeliveryId>, until: Timestamp) -> Result<u64> {
        in_transaction!(self, |tx| writes::defer(&tx, &owner, &ids, millis(until))
            .await?)
    }

    async fn extend_leases(
        &self,
        owner: String,
        ids: Vec<DeliveryId>,
        until: Timestamp,
    ) -> Result<u64> {
        in_transaction!(self, |tx| writes::extend_leases(
            &tx,
            &owner,
            &ids,
            millis(until)
        )
        .await?)
    }

    /// First the lane repair (as SQLite's): every lane left with a Queued delivery and no head is
    /// advanced, a few endpoints per transaction (each under its exclusive lock, see [`lanes`]).
    async fn recover_in_flight(&self, owner: Option<String>, now: Timestamp) -> Result<u64> {
        let mut after: Option<EndpointRef> = None;
        loop {
            let step: Result<Option<EndpointRef>> = in_transaction!(self, |tx| lanes::repair(
                &tx,
                after.as_ref(),
                REPAIR_CHUNK,
                millis(now)
            )
            .await?);
            match step? {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        in_transaction!(self, |tx| writes::recover_in_flight(
            &tx,
            owner.as_deref(),
            millis(now)
        )
        .await?)
    }

    async fn record_attempt(&self, result: AttemptResult) -> Result<RecordOutcome> {
        let outcomes = self
            .record_batch(std::slice::from_ref(&result), false)
            .await?;
        record::the_only(outcomes)?
    }

    /// One transaction (one commit, one WAL flush) for the batch. Tried first with no savepoint
    /// (two round trips per result saved); if a result fails, that transaction is rolled back
    /// and the batch recorded again with each result in a savepoint of its own, so one failing
    /// does not undo the others. The lane locks of the whole batch are taken first, at once
    /// (see [`lanes`]).
    async fn record_attempts(
        &self,
        results: Vec<AttemptResult>,
    ) -> Result<Vec<Result<RecordOutcome>>> {
        match self.record_batch(&results, false).await {
            Ok(outcomes) => Ok(outcomes),
            Err(error) => {
                tracing::debug!(%error, attempts = results.len(), "a batch of attempt results failed as a whole; recording each in a savepoint of its own");
                self.record_batch(&results, true).await
            }
        }
    }

    async fn resume_endpoint(
        &self,
        endpoint: EndpointRef,
        event_id: String,
        action: ResumeAction,
        now: Timestamp,
    ) -> Result<ResumeOutcome> {
        in_transaction!(self, |tx| lanes::resume(
            &tx,
            &endpoint,
            &event_id,
            action,
            millis(now)
        )
        .await?)
    }

    async fn hold_endpoint(&self, endpoint: EndpointRef, now: Timestamp) -> Result<u64> {
        in_transaction!(self, |tx| writes::hold_endpoint(
            &tx,
            &endpoint,
            millis(now)
        )
        .await?)
    }

    async fn release_endpoint(&self, endpoint: EndpointRef, now: Timestamp) -> Result<u64> {
        in_transaction!(self, |tx| writes::release_endpoint(
            &tx,
            &endpoint,
            millis(now)
        )
        .await?)
    }

    async fn replay(&self, request: ReplayRequest) -> Result<ReplayResult> {
        in_transaction!(self, |tx| writes::replay(&tx, &request).await?)
    }

    async fn purge_finished(&self, older_than: Timestamp) -> Result<PurgeStats> {
        let older_than = millis(older_than);
        let mut total = PurgeStats::default();
        loop {
            let step: Result<PurgeStats> = in_transaction!(self, |tx| writes::purge_chunk(
                &tx,
                older_than,
                self.purge_chunk
            )
            .await?);
            let step = step?;
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
        in_transaction!(self, |tx| security::record(&tx, &events).await?)
    }

    async fn purge_security_events(&self, older_than: Timestamp) -> Result<u64> {
        in_transaction!(self, |tx| security::purge(&tx, older_than).await?)
    }

    async fn security_events(
        &self,
        query: SecurityQuery,
    ) -> Result<Page<crate::security::SecurityRecord>> {
        in_snapshot!(self, |tx| security::read(&tx, &query).await?)
    }

    async fn find_events(&self, query: EventQuery) -> Result<Page<EventRecord>> {
        in_snapshot!(self, |tx| security::find_events(&tx, &query).await?)
    }

    async fn event_status(&self, event_id: &str) -> Result<Option<EventStatus>> {
        in_snapshot!(self, |tx| reads::event_status(&tx, event_id).await?)
    }

    async fn attempt_log(
        &self,
        scope: AttemptScope,
        page: PageRequest,
    ) -> Result<Page<AttemptLogEntry>> {
        in_snapshot!(self, |tx| reads::attempt_log(&tx, &scope, &page).await?)
    }

    async fn attempts_after(
        &self,
        scope: AttemptScope,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<AttemptLogEntry>> {
        in_snapshot!(self, |tx| reads::attempts_after(
            &tx, &scope, after_seq, limit
        )
        .await?)
    }

    async fn last_attempt_seq(&self) -> Result<i64> {
        in_snapshot!(self, |tx| reads::last_attempt_seq(&tx).await?)
    }

    async fn delivery_history(&self, id: DeliveryId) -> Result<Option<DeadLetter>> {
        in_snapshot!(self, |tx| reads::delivery_history(&tx, id).await?)
    }

    async fn dead_letters(
        &self,
        namespace: &str,
        endpoint: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<DeadLetter>> {
        in_snapshot!(self, |tx| reads::dead_letters(
            &tx, namespace, endpoint, &page
        )
        .await?)
    }

    async fn analytics(&self, query: AnalyticsQuery) -> Result<Vec<AnalyticsBucket>> {
        in_snapshot!(self, |tx| reads::analytics(&tx, &query).await?)
    }

    async fn endpoint_stats_with(
        &self,
        endpoint: &EndpointRef,
        now: Timestamp,
        windows: StatsWindows,
    ) -> Result<EndpointStats> {
        in_snapshot!(self, |tx| reads::endpoint_stats(
            &tx, endpoint, now, windows
        )
        .await?)
    }

    async fn replay_candidates(
        &self,
        filter: ReplayFilter,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>> {
        in_snapshot!(self, |tx| reads::replay_candidates(&tx, &filter, limit)
            .await?)
    }

    async fn replay_progress(&self, replay_id: &str) -> Result<Option<ReplayProgress>> {
        in_snapshot!(self, |tx| reads::replay_progress(&tx, replay_id).await?)
    }

    async fn queue_counts(&self) -> Result<QueueCounts> {
        in_snapshot!(self, |tx| reads::queue_counts(&tx).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_swept_at_most_once_a_second_of_claim_time() {
        let last = AtomicI64::new(i64::MIN);
        assert!(lease_sweep_due(&last, 10_000), "the first claim sweeps");
        assert!(!lease_sweep_due(&last, 10_000));
        assert!(!lease_sweep_due(&last, 10_999));
        assert!(lease_sweep_due(&last, 11_000));
        assert!(!lease_sweep_due(&last, 11_500));
        assert!(lease_sweep_due(&last, 5_000), "time going back sweeps");
        assert!(lease_sweep_due(&last, i64::MAX));
    }
}
