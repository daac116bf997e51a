//! The PostgreSQL schema and its migrations. Table `schema_version` (one row) holds the version;
//! each migration runs once, in order, in one transaction with the version bump, under an advisory
//! lock so that replicas starting together migrate once.
//!
//! The layout follows the SQLite backend's: times are unix milliseconds (`BIGINT`), states and
//! outcomes are the names of [`DeliveryState::as_str`](crate::store::DeliveryState::as_str) and
//! [`AttemptOutcome::as_str`](crate::store::AttemptOutcome::as_str), and `partition_hash` (a
//! `u32`) is a `BIGINT`.
use deadpool_postgres::{Object, Transaction};

use super::db;
use crate::store::{Result, StoreError};

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    event_id        TEXT PRIMARY KEY,
    namespace       TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    data            BYTEA NOT NULL,
    created_at      BIGINT NOT NULL,
    resource_name   TEXT,              -- NULL for ingested events
    resource_uid    TEXT,
    idempotency_key TEXT
);
CREATE UNIQUE INDEX events_resource_uid ON events (resource_uid) WHERE resource_uid IS NOT NULL;
CREATE INDEX events_idempotency ON events (namespace, idempotency_key, created_at)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_created ON events (created_at);

CREATE TABLE deliveries (
    id                 BIGSERIAL PRIMARY KEY,
    event_id           TEXT NOT NULL REFERENCES events (event_id),
    namespace          TEXT NOT NULL,
    endpoint           TEXT NOT NULL,
    partition_hash     BIGINT NOT NULL,  -- EndpointRef::partition_hash
    replay_id          TEXT NOT NULL DEFAULT '',  -- '' for the original delivery
    state              TEXT NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    BIGINT,
    lease_owner        TEXT,
    lease_expires_at   BIGINT,
    last_attempt_at    BIGINT,
    last_status_code   INTEGER,
    last_error         TEXT,
    delivered_at       BIGINT,
    dead_letter_reason TEXT,
    finished_at        BIGINT,
    created_at         BIGINT NOT NULL,
    UNIQUE (event_id, namespace, endpoint, replay_id)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX deliveries_pending_endpoint ON deliveries (namespace, endpoint, next_attempt_at, id)
    WHERE state = 'pending';
CREATE INDEX deliveries_lease ON deliveries (lease_expires_at) WHERE state = 'in_flight';
CREATE INDEX deliveries_endpoint ON deliveries (namespace, endpoint, state, finished_at, id);
CREATE INDEX deliveries_finished ON deliveries (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX deliveries_held ON deliveries (namespace, endpoint) WHERE state = 'held';
CREATE INDEX deliveries_replay ON deliveries (replay_id) WHERE replay_id <> '';

-- The delivery log: every attempt.
CREATE TABLE attempts (
    id               BIGSERIAL PRIMARY KEY,
    delivery_id      BIGINT NOT NULL,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    namespace        TEXT NOT NULL,
    endpoint         TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    at               BIGINT NOT NULL,
    status_code      INTEGER,
    latency_ms       BIGINT,
    error            TEXT,
    response_snippet TEXT,
    success          BOOLEAN NOT NULL,
    outcome          TEXT NOT NULL
);
CREATE INDEX attempts_endpoint_at ON attempts (namespace, endpoint, at, id);
CREATE INDEX attempts_delivery ON attempts (delivery_id);

-- Per-endpoint totals and last-seen values; kept when finished rows are purged.
CREATE TABLE endpoint_counters (
    namespace        TEXT NOT NULL,
    endpoint         TEXT NOT NULL,
    delivered        BIGINT NOT NULL DEFAULT 0,
    failed_attempts  BIGINT NOT NULL DEFAULT 0,
    dead_lettered    BIGINT NOT NULL DEFAULT 0,
    retries          BIGINT NOT NULL DEFAULT 0,
    last_attempt_at  BIGINT,
    last_success_at  BIGINT,
    last_failure_at  BIGINT,
    last_status_code INTEGER,
    last_error       TEXT,
    PRIMARY KEY (namespace, endpoint)
);

-- Suspended endpoints: their deliveries are held.
CREATE TABLE held_endpoints (
    namespace TEXT NOT NULL,
    endpoint  TEXT NOT NULL,
    since     BIGINT NOT NULL,
    PRIMARY KEY (namespace, endpoint)
);

-- Replays that ran (never purged: a replay runs once).
CREATE TABLE replays (
    replay_id  TEXT PRIMARY KEY,
    namespace  TEXT NOT NULL,
    endpoint   TEXT NOT NULL,
    matched    BIGINT NOT NULL,
    requeued   BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
"#,
    // Ordered delivery (`spec.ordering`): a delivery's lane (NULL: unordered), the lanes' heads
    // and queues found by (endpoint, lane, state), and endpoints paused after a dead letter.
    r#"
ALTER TABLE deliveries ADD COLUMN lane TEXT;
CREATE INDEX deliveries_lane ON deliveries (namespace, endpoint, lane, state, id)
    WHERE lane IS NOT NULL;
CREATE TABLE paused_endpoints (
    namespace   TEXT NOT NULL,
    endpoint    TEXT NOT NULL,
    since       BIGINT NOT NULL,
    delivery_id BIGINT NOT NULL,
    event_id    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    PRIMARY KEY (namespace, endpoint)
);
"#,
    // Per-endpoint transforms: deliveries the transform dropped finish as state 'filtered' and
    // their attempts are logged with outcome 'filtered' (states and outcomes are free TEXT, so
    // neither needs a change here); the endpoint's total of them is kept with the others.
    r#"
ALTER TABLE endpoint_counters ADD COLUMN filtered BIGINT NOT NULL DEFAULT 0;
"#,
    // The security log (refused destinations, authentication failures, user actions, alerts),
    // and the index the dashboard's event search reads events of a namespace by.
    r#"
CREATE TABLE security_events (
    id        BIGSERIAL PRIMARY KEY,
    at        BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    namespace TEXT,
    endpoint  TEXT,
    source    TEXT,
    user_name TEXT,
    address   TEXT,
    detail    TEXT NOT NULL
);
CREATE INDEX security_events_at ON security_events (at, id);
CREATE INDEX security_events_namespace ON security_events (namespace, at, id);
CREATE INDEX events_namespace_created ON events (namespace, created_at);
"#,
    // The query API lists a namespace's attempts newest first (`kubectl get webhookdeliveries`).
    r#"
CREATE INDEX attempts_namespace_at ON attempts (namespace, at, id);
"#,
    // The W3C trace context an event was published in, carried to its deliveries' requests.
    r#"
ALTER TABLE events ADD COLUMN traceparent TEXT;
"#,
    // Per-minute rollups of each endpoint's attempts (store/minutes.rs): the windowed
    // statistics read these instead of scanning every attempt of the last hour and day.
    // `latencies` maps each latency in milliseconds to its count. Filled from the attempts
    // already logged.
    r#"
CREATE TABLE attempt_minutes (
    namespace TEXT NOT NULL,
    endpoint  TEXT NOT NULL,
    minute    BIGINT NOT NULL,  -- at / 60000
    attempts  BIGINT NOT NULL,
    successes BIGINT NOT NULL,
    available BIGINT NOT NULL,
    latencies JSONB NOT NULL,
    PRIMARY KEY (namespace, endpoint, minute)
);
CREATE INDEX attempt_minutes_minute ON attempt_minutes (minute);
INSERT INTO attempt_minutes (namespace, endpoint, minute, attempts, successes, available, latencies)
SELECT namespace, endpoint, minute, sum(n), sum(s), sum(a),
       COALESCE(jsonb_object_agg(latency_ms::text, n) FILTER (WHERE latency_ms IS NOT NULL), '{}')
FROM (SELECT namespace, endpoint, at / 60000 AS minute, latency_ms, count(*) AS n,
             count(*) FILTER (WHERE success) AS s,
             count(*) FILTER (WHERE status_code < 500 AND status_code <> 408) AS a
      FROM attempts WHERE outcome <> 'filtered' GROUP BY 1, 2, 3, 4) per_latency
GROUP BY 1, 2, 3;
"#,
    // No foreign key from deliveries to events: its check locked the event row (a WAL record)
    // for every delivery inserted. A delivery is inserted with its new event in one transaction,
    // or by a replay of an event it holds a lock against purges for (`PURGE_LOCK`, writes.rs).
    r#"
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_event_id_fkey;
"#,
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Serialises migrations of every replica (and every schema) of this database.
const MIGRATION_LOCK: i64 = 0x776f_6d69_6772_6174;

/// Whether `name` may be used as a schema name unquoted: `[a-z_][a-z0-9_]*`, at most 63 bytes.
pub fn valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Creates `schema` if given and missing, and brings it to [`SCHEMA_VERSION`]; refuses a schema
/// written by a newer binary. The connection's `search_path` must name `schema` first.
pub async fn migrate(client: &mut Object, schema: Option<&str>) -> Result<()> {
    let tx = client.transaction().await.map_err(db("begin migration"))?;
    match migrate_in(&tx, schema).await {
        Ok(()) => tx.commit().await.map_err(db("commit migration")),
        Err(e) => {
            // Release the migration lock now, not whenever the connection is next used.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn migrate_in(tx: &Transaction<'_>, schema: Option<&str>) -> Result<()> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db("take the migration lock"))?;
    if let Some(schema) = schema {
        if !valid_schema_name(schema) {
            return Err(StoreError::InvalidArgument(format!(
                "schema name {schema:?} is not [a-z_][a-z0-9_]*"
            )));
        }
        let exists = tx
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
            .await
            .map_err(db("look up schema"))?
            .is_some();
        if !exists {
            tx.batch_execute(&format!("CREATE SCHEMA {schema}"))
                .await
                .map_err(db("create schema"))?;
        }
    }
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .await
        .map_err(db("create schema_version"))?;
    let current: i32 = match tx
        .query_opt("SELECT version FROM schema_version", &[])
        .await
        .map_err(db("read schema version"))?
    {
        Some(row) => row.try_get(0).map_err(db("read schema version"))?,
        None => {
            tx.execute("INSERT INTO schema_version (version) VALUES (0)", &[])
                .await
                .map_err(db("initialise schema version"))?;
            0
        }
    };
    if current > SCHEMA_VERSION {
        return Err(StoreError::Schema(format!(
            "database schema version {current} is newer than this binary's {SCHEMA_VERSION}"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).await.map_err(|e| {
            // The server's own message says what failed; the error's Display says "db error".
            let why = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |db| db.to_string());
            StoreError::Schema(format!("migration to version {}: {why}", version + 1))
        })?;
    }
    if current < SCHEMA_VERSION {
        tx.execute("UPDATE schema_version SET version = $1", &[&SCHEMA_VERSION])
            .await
            .map_err(db("write schema version"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        assert!(valid_schema_name("webhook_operator"));
        assert!(valid_schema_name("_t1"));
        assert!(!valid_schema_name(""));
        assert!(!valid_schema_name("1abc"));
        assert!(!valid_schema_name("a-b"));
        assert!(!valid_schema_name("a; DROP TABLE x"));
        assert!(!valid_schema_name(&"a".repeat(64)));
    }
}
