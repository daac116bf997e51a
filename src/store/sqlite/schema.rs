//! The SQLite schema and its migrations. `PRAGMA user_version` holds the schema version; each
//! migration runs once, in order, in one transaction with the version bump.
//!
//! Times are unix milliseconds (INTEGER). Delivery states and attempt outcomes are the names of
//! [`DeliveryState::as_str`](crate::store::DeliveryState::as_str) and
//! [`AttemptOutcome::as_str`](crate::store::AttemptOutcome::as_str).
use rusqlite::Connection;

use crate::store::{Result, StoreError};

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    event_id        TEXT PRIMARY KEY,
    namespace       TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    data            BLOB NOT NULL,
    created_at      INTEGER NOT NULL,
    resource_name   TEXT,              -- NULL for ingested events
    resource_uid    TEXT,
    idempotency_key TEXT
) STRICT;
CREATE UNIQUE INDEX events_resource_uid ON events (resource_uid) WHERE resource_uid IS NOT NULL;
CREATE INDEX events_idempotency ON events (namespace, idempotency_key, created_at)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_created ON events (created_at);

CREATE TABLE deliveries (
    id                 INTEGER PRIMARY KEY,
    event_id           TEXT NOT NULL REFERENCES events (event_id),
    namespace          TEXT NOT NULL,
    endpoint           TEXT NOT NULL,
    partition_hash     INTEGER NOT NULL,  -- EndpointRef::partition_hash
    replay_id          TEXT NOT NULL DEFAULT '',  -- '' for the original delivery
    state              TEXT NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    INTEGER,
    lease_owner        TEXT,
    lease_expires_at   INTEGER,
    last_attempt_at    INTEGER,
    last_status_code   INTEGER,
    last_error         TEXT,
    delivered_at       INTEGER,
    dead_letter_reason TEXT,
    finished_at        INTEGER,
    created_at         INTEGER NOT NULL,
    UNIQUE (event_id, namespace, endpoint, replay_id)
) STRICT;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX deliveries_lease ON deliveries (lease_expires_at) WHERE state = 'in_flight';
CREATE INDEX deliveries_endpoint ON deliveries (namespace, endpoint, state, finished_at, id);
CREATE INDEX deliveries_finished ON deliveries (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX deliveries_held ON deliveries (namespace, endpoint) WHERE state = 'held';
CREATE INDEX deliveries_replay ON deliveries (replay_id) WHERE replay_id <> '';

-- The delivery log: every attempt.
CREATE TABLE attempts (
    id               INTEGER PRIMARY KEY,
    delivery_id      INTEGER NOT NULL,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    namespace        TEXT NOT NULL,
    endpoint         TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    at               INTEGER NOT NULL,
    status_code      INTEGER,
    latency_ms       INTEGER,
    error            TEXT,
    response_snippet TEXT,
    success          INTEGER NOT NULL,
    outcome          TEXT NOT NULL
) STRICT;
CREATE INDEX attempts_endpoint_at ON attempts (namespace, endpoint, at, id);
CREATE INDEX attempts_delivery ON attempts (delivery_id);

-- Per-endpoint totals and last-seen values; kept when finished rows are purged.
CREATE TABLE endpoint_counters (
    namespace        TEXT NOT NULL,
    endpoint         TEXT NOT NULL,
    delivered        INTEGER NOT NULL DEFAULT 0,
    failed_attempts  INTEGER NOT NULL DEFAULT 0,
    dead_lettered    INTEGER NOT NULL DEFAULT 0,
    retries          INTEGER NOT NULL DEFAULT 0,
    last_attempt_at  INTEGER,
    last_success_at  INTEGER,
    last_failure_at  INTEGER,
    last_status_code INTEGER,
    last_error       TEXT,
    PRIMARY KEY (namespace, endpoint)
) STRICT, WITHOUT ROWID;

-- Suspended endpoints: their deliveries are held.
CREATE TABLE held_endpoints (
    namespace TEXT NOT NULL,
    endpoint  TEXT NOT NULL,
    since     INTEGER NOT NULL,
    PRIMARY KEY (namespace, endpoint)
) STRICT, WITHOUT ROWID;

-- Replays that ran (never purged: a replay runs once).
CREATE TABLE replays (
    replay_id  TEXT PRIMARY KEY,
    namespace  TEXT NOT NULL,
    endpoint   TEXT NOT NULL,
    matched    INTEGER NOT NULL,
    requeued   INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
"#,
    // Claims with a per-endpoint limit seek each endpoint's earliest due deliveries here
    // instead of ranking every due row.
    r#"
CREATE INDEX deliveries_pending_endpoint ON deliveries (namespace, endpoint, next_attempt_at)
    WHERE state = 'pending';
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
    since       INTEGER NOT NULL,
    delivery_id INTEGER NOT NULL,
    event_id    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    PRIMARY KEY (namespace, endpoint)
) STRICT, WITHOUT ROWID;
"#,
    // Per-endpoint transforms: deliveries the transform dropped finish as state 'filtered' and
    // their attempts are logged with outcome 'filtered' (states and outcomes are free TEXT, so
    // neither needs a change here); the endpoint's total of them is kept with the others.
    r#"
ALTER TABLE endpoint_counters ADD COLUMN filtered INTEGER NOT NULL DEFAULT 0;
"#,
    // The security log (refused destinations, authentication failures, user actions, alerts),
    // and the index the dashboard's event search reads events of a namespace by.
    r#"
CREATE TABLE security_events (
    id        INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    namespace TEXT,
    endpoint  TEXT,
    source    TEXT,
    user_name TEXT,
    address   TEXT,
    detail    TEXT NOT NULL
) STRICT;
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
    // `latencies` is a JSON object {"<ms>": <count>}. Filled from the attempts already logged.
    r#"
CREATE TABLE attempt_minutes (
    namespace TEXT NOT NULL,
    endpoint  TEXT NOT NULL,
    minute    INTEGER NOT NULL,  -- at / 60000
    attempts  INTEGER NOT NULL,
    successes INTEGER NOT NULL,
    available INTEGER NOT NULL,
    latencies TEXT NOT NULL,
    PRIMARY KEY (namespace, endpoint, minute)
) STRICT, WITHOUT ROWID;
CREATE INDEX attempt_minutes_minute ON attempt_minutes (minute);
INSERT INTO attempt_minutes (namespace, endpoint, minute, attempts, successes, available, latencies)
SELECT namespace, endpoint, minute, SUM(n), SUM(s), SUM(a),
       COALESCE(json_group_object(CAST(latency_ms AS TEXT), n) FILTER (WHERE latency_ms IS NOT NULL), '{}')
FROM (SELECT namespace, endpoint, at / 60000 AS minute, latency_ms, COUNT(*) AS n, SUM(success) AS s,
             SUM(status_code IS NOT NULL AND status_code < 500 AND status_code <> 408) AS a
      FROM attempts WHERE outcome <> 'filtered' GROUP BY 1, 2, 3, 4)
GROUP BY 1, 2, 3;
"#,
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`SCHEMA_VERSION`]; refuses a database from a newer binary.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(StoreError::backend("read schema version"))?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Schema(format!(
            "database schema version {current} is newer than this binary's {SCHEMA_VERSION}"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn
            .transaction()
            .map_err(StoreError::backend("begin migration"))?;
        tx.execute_batch(sql).map_err(|e| {
            StoreError::Schema(format!("migration to version {}: {e}", version + 1))
        })?;
        tx.pragma_update(None, "user_version", version as i64 + 1)
            .map_err(StoreError::backend("write schema version"))?;
        tx.commit()
            .map_err(StoreError::backend("commit migration"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(migrate(&mut conn), Err(StoreError::Schema(_))));
    }

    #[test]
    fn version_3_counters_get_a_zero_filtered_total() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute(
            "INSERT INTO endpoint_counters (namespace, endpoint, delivered) VALUES ('ns', 'a', 7)",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let (delivered, filtered): (i64, i64) = conn
            .query_row(
                "SELECT delivered, filtered FROM endpoint_counters WHERE endpoint = 'a'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((delivered, filtered), (7, 0));
    }

    #[test]
    fn version_7_attempts_are_rolled_up_by_minute() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..7] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 7).unwrap();
        let attempts = [
            (60_000, Some(200), Some(12), true, "delivered"),
            (119_999, Some(503), Some(30), false, "retry"),
            (100_000, Some(404), None, false, "dead_lettered"),
            (110_000, None, None, false, "filtered"),
            (120_000, Some(200), Some(12), true, "delivered"),
        ];
        for (at, status, latency, success, outcome) in attempts {
            conn.execute(
                "INSERT INTO attempts (delivery_id, event_id, event_type, namespace, endpoint, attempt, \
                 at, status_code, latency_ms, success, outcome) \
                 VALUES (1, 'e', 't', 'ns', 'a', 1, ?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![at, status, latency, success, outcome],
            )
            .unwrap();
        }
        migrate(&mut conn).unwrap();
        let rows: Vec<(i64, i64, i64, i64, String)> = conn
            .prepare("SELECT minute, attempts, successes, available, latencies FROM attempt_minutes ORDER BY minute")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (1, 3, 1, 2, r#"{"12":1,"30":1}"#.to_owned()),
                (2, 1, 1, 1, r#"{"12":1}"#.to_owned()),
            ],
            "the filtered attempt is left out; the 404 is available, the 503 is not"
        );
    }
}
