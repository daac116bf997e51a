//! The write operations, each run by the writer thread inside a savepoint of a group commit.
use std::collections::HashSet;

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::lanes;
use super::queries;
use super::rows::{self, millis, DELIVERY_COLUMNS, DELIVERY_WIDTH, EVENT_COLUMNS};
use super::Isolation;
use crate::store::common::{
    attempt_outcome, claim_on_insert, claimed_at_insert, count, counter_bump, distinct_endpoints,
    resource_columns, transition, CounterBump, CounterTally, Recorded,
};
use crate::store::minutes::{by_minute, AttemptSample, WindowTotals, ROLLUP_KEPT_MINUTES};
use crate::store::{
    partition_hash, AttemptResult, ClaimOnInsert, ClaimRequest, ClaimScope, ClaimedDelivery,
    DeliveryId, DeliveryState, EndpointCaps, EndpointRef, EnqueueOutcome, EnqueueRequest,
    EventSource, NewEvent, NextStep, PurgeStats, RecordOutcome, ReplayRequest, ReplayResult,
    Result, StoreError,
};

fn db(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    StoreError::backend(context)
}

/// The state an in-flight delivery returns to: Held if its endpoint is held, else Pending.
pub(super) const UNLESS_HELD: &str =
    "CASE WHEN EXISTS (SELECT 1 FROM held_endpoints h WHERE h.namespace = deliveries.namespace \
     AND h.endpoint = deliveries.endpoint) THEN 'held' ELSE 'pending' END";

/// Persists events and their deliveries; duplicates return the earlier event.
pub fn enqueue(
    conn: &Connection,
    requests: &[EnqueueRequest],
    window_ms: i64,
) -> Result<Vec<EnqueueOutcome>> {
    requests
        .iter()
        .map(|request| enqueue_one(conn, request, window_ms))
        .collect()
}

fn enqueue_one(
    conn: &Connection,
    request: &EnqueueRequest,
    window_ms: i64,
) -> Result<EnqueueOutcome> {
    let event = &request.event;
    if let Some(existing) = find_duplicate(conn, event, window_ms)? {
        let deliveries = original_deliveries(conn, &existing)?;
        return Ok(EnqueueOutcome {
            event_id: existing,
            deliveries,
            duplicate: true,
            claimed: Vec::new(),
        });
    }
    let (resource_name, resource_uid) = resource_columns(&event.source);
    let created_at = millis(event.created_at);
    conn.prepare_cached(
        "INSERT INTO events (event_id, namespace, event_type, data, created_at, resource_name, resource_uid, \
         idempotency_key, traceparent) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            event.event_id,
            event.namespace,
            event.event_type,
            &event.data[..],
            created_at,
            resource_name,
            resource_uid,
            event.idempotency_key,
            event.trace_parent,
        ])
    })
    .map_err(db("insert event"))?;
    let mut deliveries = Vec::with_capacity(request.endpoints.len());
    let mut claimed = Vec::new();
    for name in distinct_endpoints(request) {
        let endpoint = EndpointRef::new(event.namespace.clone(), name);
        let lane = request.lanes.get(&endpoint.name).map(String::as_str);
        let claim = claim_on_insert(request, name);
        let (id, state) = insert_delivery(
            conn,
            &event.event_id,
            &endpoint,
            "",
            lane,
            created_at,
            claim,
        )?;
        deliveries.push(id);
        claimed.extend(claimed_at_insert(request, endpoint, id, state));
    }
    Ok(EnqueueOutcome {
        event_id: event.event_id.clone(),
        deliveries,
        duplicate: false,
        claimed,
    })
}

/// The earlier event this one repeats: same id, same resource UID, or same idempotency key
/// within the window.
fn find_duplicate(conn: &Connection, event: &NewEvent, window_ms: i64) -> Result<Option<String>> {
    let by_id: Option<String> = conn
        .prepare_cached("SELECT event_id FROM events WHERE event_id = ?1")
        .and_then(|mut s| s.query_row([&event.event_id], |r| r.get(0)).optional())
        .map_err(db("look up event id"))?;
    if by_id.is_some() {
        return Ok(by_id);
    }
    if let EventSource::Resource { uid, .. } = &event.source {
        let by_uid: Option<String> = conn
            .prepare_cached("SELECT event_id FROM events WHERE resource_uid = ?1")
            .and_then(|mut s| s.query_row([uid], |r| r.get(0)).optional())
            .map_err(db("look up resource uid"))?;
        if by_uid.is_some() {
            return Ok(by_uid);
        }
    }
    let Some(key) = &event.idempotency_key else {
        return Ok(None);
    };
    let since = millis(event.created_at).saturating_sub(window_ms);
    conn.prepare_cached(
        "SELECT event_id FROM events WHERE namespace = ?1 AND idempotency_key = ?2 AND created_at >= ?3 \
         ORDER BY created_at DESC LIMIT 1",
    )
    .and_then(|mut s| s.query_row(params![event.namespace, key, since], |r| r.get(0)).optional())
    .map_err(db("look up idempotency key"))
}

fn original_deliveries(conn: &Connection, event_id: &str) -> Result<Vec<DeliveryId>> {
    let mut statement = conn
        .prepare_cached(
            "SELECT id FROM deliveries WHERE event_id = ?1 AND replay_id = '' ORDER BY id",
        )
        .map_err(db("prepare deliveries of event"))?;
    let ids = statement
        .query_map([event_id], |r| r.get(0).map(DeliveryId))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db("read deliveries of event"));
    ids
}

fn is_held(conn: &Connection, endpoint: &EndpointRef) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM held_endpoints WHERE namespace = ?1 AND endpoint = ?2")
        .and_then(|mut s| s.exists(params![endpoint.namespace, endpoint.name]))
        .map_err(db("look up held endpoint"))
}

/// Inserts a delivery due at `due_ms`: Queued behind its lane, else Held if the endpoint is
/// held, else InFlight under `claim`'s lease when given, else Pending; `None` replay id is `''`.
/// Returns the new id and state, or the existing delivery's when `(event, endpoint, replay)`
/// exists.
fn insert_delivery(
    conn: &Connection,
    event_id: &str,
    endpoint: &EndpointRef,
    replay_id: &str,
    lane: Option<&str>,
    due_ms: i64,
    claim: Option<&ClaimOnInsert>,
) -> Result<(DeliveryId, DeliveryState)> {
    let queued = match lane {
        Some(lane) => lanes::must_queue(conn, endpoint, lane)?,
        None => false,
    };
    let state = if queued {
        DeliveryState::Queued
    } else if is_held(conn, endpoint)? {
        DeliveryState::Held
    } else if claim.is_some() {
        DeliveryState::InFlight
    } else {
        DeliveryState::Pending
    };
    let (owner, expires) = match (state, claim) {
        (DeliveryState::InFlight, Some(claim)) => (
            Some(claim.owner.as_str()),
            Some(millis(claim.lease_expires_at)),
        ),
        _ => (None, None),
    };
    conn.prepare_cached(
        "INSERT INTO deliveries (event_id, namespace, endpoint, partition_hash, replay_id, state, next_attempt_at, \
         created_at, lane, lease_owner, lease_expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10) \
         ON CONFLICT (event_id, namespace, endpoint, replay_id) DO UPDATE SET id = id RETURNING id, state",
    )
    .and_then(|mut s| {
        s.query_row(
            params![
                event_id,
                endpoint.namespace,
                endpoint.name,
                partition_hash(&endpoint.namespace, &endpoint.name),
                replay_id,
                state.as_str(),
                due_ms,
                lane,
                owner,
                expires,
            ],
            |r| Ok((r.get(0).map(DeliveryId)?, r.get::<_, String>(1)?)),
        )
    })
    .map_err(db("insert delivery"))
    .and_then(|(id, stored)| {
        DeliveryState::parse(&stored)
            .map(|state| (id, state))
            .ok_or_else(|| StoreError::Commit(format!("unknown delivery state {stored:?}")))
    })
}

/// The scope as an SQL condition on alias `d` and its parameters; `None` when it selects nothing.
fn scope_condition(scope: &ClaimScope) -> Result<Option<(String, Vec<Value>)>> {
    match scope {
        ClaimScope::All => Ok(Some((String::new(), Vec::new()))),
        ClaimScope::Endpoints(endpoints) if endpoints.is_empty() => Ok(None),
        ClaimScope::Endpoints(endpoints) => {
            let tuples = vec!["(?, ?)"; endpoints.len()].join(", ");
            let values = endpoints
                .iter()
                .flat_map(|e| {
                    [
                        Value::Text(e.namespace.clone()),
                        Value::Text(e.name.clone()),
                    ]
                })
                .collect();
            Ok(Some((
                format!(" AND (d.namespace, d.endpoint) IN (VALUES {tuples})"),
                values,
            )))
        }
        ClaimScope::Partitions { count: 0, .. } => Err(StoreError::InvalidArgument(
            "partition count must be at least 1".into(),
        )),
        ClaimScope::Partitions { owned, .. } if owned.is_empty() => Ok(None),
        ClaimScope::Partitions { count, owned } => {
            let owned = owned
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            Ok(Some((
                format!(" AND (d.partition_hash % {count}) IN ({owned})"),
                Vec::new(),
            )))
        }
    }
}

/// Claims due deliveries under a lease; with a per-endpoint limit, endpoints in `caps` get at
/// most their cap.
pub fn claim(
    conn: &Connection,
    request: &ClaimRequest,
    caps: &EndpointCaps,
) -> Result<Vec<ClaimedDelivery>> {
    if request.limit == 0 {
        return Ok(Vec::new());
    }
    let Some((scope, mut values)) = scope_condition(&request.scope)? else {
        return Ok(Vec::new());
    };
    let now = millis(request.now);
    let lease_ms = i64::try_from(request.lease.as_millis()).unwrap_or(i64::MAX);
    let expires = now.saturating_add(lease_ms);
    // Expired leases: due again, as of when they expired.
    conn.prepare_cached(
        &format!(
            "UPDATE deliveries SET state = {UNLESS_HELD}, next_attempt_at = lease_expires_at, lease_owner = NULL, \
             lease_expires_at = NULL WHERE state = 'in_flight' AND lease_expires_at <= ?1"
        ),
    )
    .and_then(|mut s| s.execute([now]))
    .map_err(db("expire leases"))?;

    let mut claimed = match request.per_endpoint_limit {
        None => {
            let limit = i64::try_from(request.limit).unwrap_or(i64::MAX);
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS}, {EVENT_COLUMNS} FROM deliveries d JOIN events e ON e.event_id = d.event_id \
                 WHERE d.state = 'pending' AND d.next_attempt_at <= ? {scope} ORDER BY d.next_attempt_at, d.id LIMIT ?"
            );
            values.insert(0, Value::Integer(now));
            values.push(Value::Integer(limit));
            conn.prepare_cached(&sql)
                .and_then(|mut s| {
                    s.query_map(params_from_iter(values), |row| {
                        Ok((rows::delivery(row, 0)?, rows::event(row, DELIVERY_WIDTH)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db("select due deliveries"))?
        }
        Some(per_endpoint) => {
            let ids =
                due_per_endpoint(conn, &request.scope, now, request.limit, per_endpoint, caps)?;
            let mut select = conn
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS}, {EVENT_COLUMNS} FROM deliveries d \
                     JOIN events e ON e.event_id = d.event_id WHERE d.id = ?1"
                ))
                .map_err(db("prepare select claimed"))?;
            let mut claimed = Vec::with_capacity(ids.len());
            for id in ids {
                let row = select
                    .query_row([id], |row| {
                        Ok((rows::delivery(row, 0)?, rows::event(row, DELIVERY_WIDTH)?))
                    })
                    .map_err(db("select due deliveries"))?;
                claimed.push(row);
            }
            claimed
        }
    };
    let expires_at = jiff::Timestamp::from_millisecond(expires)
        .map_err(|e| StoreError::InvalidArgument(format!("lease expiry out of range: {e}")))?;
    let mut mark = conn
        .prepare_cached(
            "UPDATE deliveries SET state = 'in_flight', lease_owner = ?1, lease_expires_at = ?2 WHERE id = ?3",
        )
        .map_err(db("prepare claim"))?;
    for (delivery, _) in &mut claimed {
        mark.execute(params![request.owner, expires, delivery.id.0])
            .map_err(db("mark claimed"))?;
        delivery.state = DeliveryState::InFlight;
    }
    Ok(claimed
        .into_iter()
        .map(|(delivery, event)| ClaimedDelivery {
            delivery,
            event,
            lease_expires_at: expires_at,
        })
        .collect())
}

/// The ids of the due deliveries a per-endpoint-limited claim takes: at most `per_endpoint` of
/// each endpoint (its earliest due), then the earliest `limit` of those, ordered by
/// `(next_attempt_at, id)`. Each endpoint with pending deliveries costs two seeks in
/// `deliveries_pending_endpoint` (a loose index scan), so a round does not grow with the backlog
/// behind the endpoints, as a window function over every due row would. `INDEXED BY` pins that
/// index: without statistics the planner prefers the covering `deliveries_endpoint`, which also
/// holds finished deliveries, and walks an endpoint's whole delivered history before its first
/// pending row, so every round grew with the history (the profile's top entry: ≈ 5 ms per seek
/// after 120k deliveries).
fn due_per_endpoint(
    conn: &Connection,
    scope: &ClaimScope,
    now: i64,
    limit: usize,
    per_endpoint: usize,
    caps: &EndpointCaps,
) -> Result<Vec<i64>> {
    let endpoints: Vec<(String, String)> = match scope {
        ClaimScope::Endpoints(endpoints) => endpoints
            .iter()
            .map(|e| (e.namespace.clone(), e.name.clone()))
            .collect(),
        ClaimScope::All | ClaimScope::Partitions { .. } => {
            let mut first = conn
                .prepare_cached(
                    "SELECT namespace, endpoint FROM deliveries INDEXED BY deliveries_pending_endpoint \
                     WHERE state = 'pending' ORDER BY namespace, endpoint LIMIT 1",
                )
                .map_err(db("prepare endpoint scan"))?;
            // The next endpoint in the same namespace, else the first of a later namespace: two
            // seeks. A row value `(namespace, endpoint) > (?1, ?2)` is not a seek: SQLite walks
            // every pending row of the current endpoint (5 ms for 77k pending rows).
            let mut next_in_namespace = conn
                .prepare_cached(
                    "SELECT namespace, endpoint FROM deliveries INDEXED BY deliveries_pending_endpoint \
                     WHERE state = 'pending' AND namespace = ?1 AND endpoint > ?2 \
                     ORDER BY namespace, endpoint LIMIT 1",
                )
                .map_err(db("prepare endpoint scan"))?;
            let mut next_namespace = conn
                .prepare_cached(
                    "SELECT namespace, endpoint FROM deliveries INDEXED BY deliveries_pending_endpoint \
                     WHERE state = 'pending' AND namespace > ?1 \
                     ORDER BY namespace, endpoint LIMIT 1",
                )
                .map_err(db("prepare endpoint scan"))?;
            let pair = |r: &rusqlite::Row<'_>| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?));
            let mut found = Vec::new();
            let mut current = first
                .query_row([], pair)
                .optional()
                .map_err(db("scan endpoints"))?;
            while let Some((namespace, endpoint)) = current {
                current = match next_in_namespace
                    .query_row(params![namespace, endpoint], pair)
                    .optional()
                    .map_err(db("scan endpoints"))?
                {
                    Some(next) => Some(next),
                    None => next_namespace
                        .query_row([&namespace], pair)
                        .optional()
                        .map_err(db("scan endpoints"))?,
                };
                found.push((namespace, endpoint));
            }
            if let ClaimScope::Partitions { count, owned } = scope {
                found.retain(|(namespace, endpoint)| {
                    owned.contains(&(partition_hash(namespace, endpoint) % count))
                });
            }
            found
        }
    };
    let mut due = conn
        .prepare_cached(
            "SELECT next_attempt_at, id FROM deliveries INDEXED BY deliveries_pending_endpoint \
             WHERE state = 'pending' AND namespace = ?1 \
             AND endpoint = ?2 AND next_attempt_at <= ?3 ORDER BY next_attempt_at, id LIMIT ?4",
        )
        .map_err(db("prepare due of endpoint"))?;
    let mut candidates: Vec<(i64, i64)> = Vec::new();
    let mut key = EndpointRef::new(String::new(), String::new());
    for (namespace, endpoint) in endpoints {
        (key.namespace, key.name) = (namespace, endpoint);
        let cap = caps
            .get(&key)
            .map_or(per_endpoint, |&cap| cap.min(per_endpoint));
        if cap == 0 {
            continue;
        }
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let rows = due
            .query_map(params![key.namespace, key.name, now, cap], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<(i64, i64)>>>())
            .map_err(db("select due of endpoint"))?;
        candidates.extend(rows);
    }
    candidates.sort_unstable();
    // An endpoint named twice in the scope.
    candidates.dedup();
    candidates.truncate(limit);
    Ok(candidates.into_iter().map(|(_, id)| id).collect())
}

/// Extends the leases `owner` holds on `ids`.
pub fn extend_leases(
    conn: &Connection,
    owner: &str,
    ids: &[DeliveryId],
    until_ms: i64,
) -> Result<u64> {
    let mut statement = conn
        .prepare_cached(
            "UPDATE deliveries SET lease_expires_at = ?1 WHERE id = ?2 AND state = 'in_flight' AND lease_owner = ?3",
        )
        .map_err(db("prepare lease extension"))?;
    let mut extended = 0;
    for id in ids {
        extended += statement
            .execute(params![until_ms, id.0, owner])
            .map_err(db("extend lease"))?;
    }
    Ok(count(extended))
}

/// Gives claimed deliveries back without an attempt, due again at `until_ms` (Held if their
/// endpoint is held). Only deliveries `owner` still holds move.
pub fn defer(conn: &Connection, owner: &str, ids: &[DeliveryId], until_ms: i64) -> Result<u64> {
    let mut statement = conn
        .prepare_cached(&format!(
            "UPDATE deliveries SET state = {UNLESS_HELD}, next_attempt_at = ?1, lease_owner = NULL, \
             lease_expires_at = NULL WHERE id = ?2 AND state = 'in_flight' AND lease_owner = ?3"
        ))
        .map_err(db("prepare defer"))?;
    let mut moved = 0;
    for id in ids {
        moved += statement
            .execute(params![until_ms, id.0, owner])
            .map_err(db("defer"))?;
    }
    Ok(count(moved))
}

/// Makes in-flight deliveries (all, or `owner`'s) due at `now_ms`, and advances any lane left
/// without a head.
pub fn recover_in_flight(conn: &Connection, owner: Option<&str>, now_ms: i64) -> Result<u64> {
    lanes::advance_all(conn, None, now_ms)?;
    conn.execute(
        &format!(
            "UPDATE deliveries SET state = {UNLESS_HELD}, next_attempt_at = ?1, lease_owner = NULL, \
             lease_expires_at = NULL WHERE state = 'in_flight' AND (?2 IS NULL OR lease_owner = ?2)"
        ),
        params![now_ms, owner],
    )
    .map(count)
    .map_err(db("recover in-flight deliveries"))
}

/// Records several attempts in the caller's transaction. Run [`Isolation::Shared`] (the group
/// commit's first pass), one that fails fails the whole job, which the writer then runs again
/// [`Isolation::Own`]: each attempt in a savepoint of its own, so one that fails is rolled
/// back alone and answered with its error. The endpoints' counters are written once per
/// endpoint at the end, from the attempts that were recorded; if that fails, the job fails.
pub fn record_attempts(
    conn: &Connection,
    results: &[AttemptResult],
    isolation: Isolation,
) -> Result<Vec<Result<RecordOutcome>>> {
    let mut tally = CounterTally::default();
    let mut outcomes = Vec::with_capacity(results.len());
    for result in results {
        let recorded = match isolation {
            Isolation::Shared => Ok(record_logged(conn, result)?),
            Isolation::Own => record_in_savepoint(conn, result)?,
        };
        outcomes.push(recorded.map(|recorded| tally.take(recorded)));
    }
    for (endpoint, bump) in tally.into_bumps() {
        bump_counters(conn, &endpoint, &bump)?;
    }
    Ok(outcomes)
}

/// [`record_logged`] in a savepoint of its own: the inner result is the attempt's (rolled back
/// when it failed), the outer one the savepoint's.
fn record_in_savepoint(conn: &Connection, result: &AttemptResult) -> Result<Result<Recorded>> {
    // Cached statements: parsing three savepoint statements per attempt showed in profiles.
    run_cached(conn, "SAVEPOINT record_attempt", "open attempt savepoint")?;
    let recorded = record_logged(conn, result);
    if recorded.is_err() {
        run_cached(
            conn,
            "ROLLBACK TO record_attempt",
            "roll back attempt savepoint",
        )?;
    }
    run_cached(conn, "RELEASE record_attempt", "release attempt savepoint")?;
    Ok(recorded)
}

/// Runs a statement without parameters through the statement cache.
fn run_cached(conn: &Connection, sql: &str, what: &'static str) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(drop)
        .map_err(db(what))
}

/// Logs an attempt and moves the delivery if the caller still holds its lease.
pub fn record_attempt(conn: &Connection, result: &AttemptResult) -> Result<RecordOutcome> {
    let (outcome, bump) = record_logged(conn, result)?;
    if let Some((endpoint, bump)) = bump {
        bump_counters(conn, &endpoint, &bump)?;
    }
    Ok(outcome)
}

/// Logs an attempt and moves the delivery if the caller still holds its lease; what the
/// attempt adds to its endpoint's counters is returned, for the caller to write.
fn record_logged(conn: &Connection, result: &AttemptResult) -> Result<Recorded> {
    let found = conn
        .prepare_cached(
            "SELECT d.state, d.lease_owner, d.namespace, d.endpoint, d.event_id, e.event_type, d.lane, \
             d.attempts FROM deliveries d JOIN events e ON e.event_id = d.event_id WHERE d.id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([result.delivery_id.0], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    EndpointRef {
                        namespace: r.get(2)?,
                        name: r.get(3)?,
                    },
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })
            .optional()
        })
        .map_err(db("read delivery"))?;
    let Some((state, lease_owner, endpoint, event_id, event_type, lane, recorded_attempts)) = found
    else {
        return Ok((RecordOutcome::NotFound, None));
    };
    let record = &result.record;
    if recorded_attempts >= i64::from(record.attempt) {
        return Ok((RecordOutcome::AlreadyRecorded, None));
    }
    let at = millis(record.at);
    let success = matches!(result.next, NextStep::Delivered);
    let holds_lease =
        state == DeliveryState::InFlight.as_str() && lease_owner.as_deref() == Some(&result.owner);
    let held =
        holds_lease && matches!(result.next, NextStep::Retry { .. }) && is_held(conn, &endpoint)?;
    let outcome = attempt_outcome(&result.next, held);
    let latency = record
        .latency_ms
        .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
    conn.prepare_cached(
        "INSERT INTO attempts (delivery_id, event_id, event_type, namespace, endpoint, attempt, at, status_code, \
         latency_ms, error, response_snippet, success, outcome) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )
    .and_then(|mut s| {
        s.execute(params![
            result.delivery_id.0,
            event_id,
            event_type,
            endpoint.namespace,
            endpoint.name,
            record.attempt,
            at,
            record.status_code,
            latency,
            record.error,
            record.response_snippet,
            success,
            outcome.as_str(),
        ])
    })
    .map_err(db("insert attempt"))?;
    let bump = counter_bump(result, outcome, success);
    if !holds_lease {
        return Ok((RecordOutcome::LeaseLost, Some((endpoint, bump))));
    }
    let next = transition(result, outcome);
    conn.prepare_cached(
        "UPDATE deliveries SET state = ?1, attempts = attempts + 1, next_attempt_at = ?2, lease_owner = NULL, \
         lease_expires_at = NULL, last_attempt_at = ?3, last_status_code = ?4, last_error = ?5, \
         delivered_at = ?6, dead_letter_reason = ?7, finished_at = ?8 WHERE id = ?9",
    )
    .and_then(|mut s| {
        s.execute(params![
            next.state.as_str(),
            next.next_attempt_at,
            at,
            record.status_code,
            record.error,
            next.delivered_at,
            next.dead_letter_reason,
            next.finished_at,
            result.delivery_id.0,
        ])
    })
    .map_err(db("move delivery"))?;
    if let Some(lane) = lane.filter(|_| next.state.is_finished()) {
        if let (NextStep::DeadLetter { reason }, true) = (&result.next, result.pause_on_dead_letter)
        {
            lanes::pause(conn, &endpoint, result.delivery_id, &event_id, reason, at)?;
        }
        lanes::advance(conn, &endpoint, &lane, at)?;
    }
    Ok((RecordOutcome::Applied, Some((endpoint, bump))))
}

/// Adds attempts to the endpoint's totals; "last" values move only forward in time, and a
/// `NULL` (a filtered attempt has no last attempt, status, success or failure) leaves one as is.
fn bump_counters(conn: &Connection, endpoint: &EndpointRef, bump: &CounterBump) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO endpoint_counters (namespace, endpoint, delivered, failed_attempts, dead_lettered, retries, \
         filtered, last_attempt_at, last_success_at, last_failure_at, last_status_code, last_error) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
         ON CONFLICT (namespace, endpoint) DO UPDATE SET \
           delivered = delivered + excluded.delivered, \
           failed_attempts = failed_attempts + excluded.failed_attempts, \
           dead_lettered = dead_lettered + excluded.dead_lettered, \
           retries = retries + excluded.retries, \
           filtered = filtered + excluded.filtered, \
           last_status_code = CASE WHEN excluded.last_attempt_at IS NOT NULL AND (last_attempt_at IS NULL \
             OR excluded.last_attempt_at >= last_attempt_at) THEN excluded.last_status_code ELSE last_status_code END, \
           last_attempt_at = CASE WHEN excluded.last_attempt_at IS NOT NULL AND (last_attempt_at IS NULL \
             OR excluded.last_attempt_at >= last_attempt_at) THEN excluded.last_attempt_at ELSE last_attempt_at END, \
           last_success_at = CASE WHEN excluded.last_success_at IS NOT NULL AND (last_success_at IS NULL \
             OR excluded.last_success_at >= last_success_at) THEN excluded.last_success_at ELSE last_success_at END, \
           last_error = CASE WHEN excluded.last_failure_at IS NOT NULL AND (last_failure_at IS NULL \
             OR excluded.last_failure_at >= last_failure_at) THEN excluded.last_error ELSE last_error END, \
           last_failure_at = CASE WHEN excluded.last_failure_at IS NOT NULL AND (last_failure_at IS NULL \
             OR excluded.last_failure_at >= last_failure_at) THEN excluded.last_failure_at ELSE last_failure_at END",
    )
    .and_then(|mut s| {
        s.execute(params![
            endpoint.namespace,
            endpoint.name,
            bump.delivered,
            bump.failed_attempts,
            bump.dead_lettered,
            bump.retries,
            bump.filtered,
            bump.last_attempt_at,
            bump.last_success_at,
            bump.last_failure_at,
            bump.last_status_code,
            bump.last_error,
        ])
    })
    .map_err(db("update endpoint counters"))?;
    add_to_minutes(conn, endpoint, &bump.samples)
}

/// Adds attempts to their minutes' rollups ([`crate::store::minutes`]). Read, merged and written
/// back: the store writer is the only writer, and this runs in its transaction.
fn add_to_minutes(
    conn: &Connection,
    endpoint: &EndpointRef,
    samples: &[AttemptSample],
) -> Result<()> {
    for (minute, mut totals) in by_minute(samples) {
        let kept = conn
            .prepare_cached(
                "SELECT attempts, successes, available, latencies FROM attempt_minutes \
                 WHERE namespace = ?1 AND endpoint = ?2 AND minute = ?3",
            )
            .and_then(|mut s| {
                s.query_row(params![endpoint.namespace, endpoint.name, minute], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?))
                })
                .optional()
            })
            .map_err(db("read minute rollup"))?;
        if let Some((attempts, successes, available, latencies)) = kept {
            totals.merge(WindowTotals::from_row(
                attempts, successes, available, &latencies,
            )?);
        }
        conn.prepare_cached(
            "INSERT OR REPLACE INTO attempt_minutes (namespace, endpoint, minute, attempts, successes, \
             available, latencies) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut s| {
            s.execute(params![
                endpoint.namespace,
                endpoint.name,
                minute,
                i64::try_from(totals.attempts).unwrap_or(i64::MAX),
                i64::try_from(totals.successes).unwrap_or(i64::MAX),
                i64::try_from(totals.available).unwrap_or(i64::MAX),
                totals.latencies_json(),
            ])
        })
        .map_err(db("write minute rollup"))?;
    }
    Ok(())
}

/// Holds an endpoint's pending deliveries (and later ones).
pub fn hold_endpoint(conn: &Connection, endpoint: &EndpointRef, now_ms: i64) -> Result<u64> {
    conn.execute(
        "INSERT INTO held_endpoints (namespace, endpoint, since) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        params![endpoint.namespace, endpoint.name, now_ms],
    )
    .map_err(db("hold endpoint"))?;
    conn.execute(
        "UPDATE deliveries SET state = 'held' WHERE namespace = ?1 AND endpoint = ?2 AND state = 'pending'",
        params![endpoint.namespace, endpoint.name],
    )
    .map(count)
    .map_err(db("hold deliveries"))
}

/// Releases an endpoint's held deliveries: due now, or at their later retry time.
pub fn release_endpoint(conn: &Connection, endpoint: &EndpointRef, now_ms: i64) -> Result<u64> {
    conn.execute(
        "DELETE FROM held_endpoints WHERE namespace = ?1 AND endpoint = ?2",
        params![endpoint.namespace, endpoint.name],
    )
    .map_err(db("release endpoint"))?;
    conn.execute(
        "UPDATE deliveries SET state = 'pending', next_attempt_at = MAX(COALESCE(next_attempt_at, ?3), ?3) \
         WHERE namespace = ?1 AND endpoint = ?2 AND state = 'held'",
        params![endpoint.namespace, endpoint.name, now_ms],
    )
    .map(count)
    .map_err(db("release deliveries"))
}

/// Runs a replay once: new deliveries for the matched events and the replay id, in one savepoint.
pub fn replay(conn: &Connection, request: &ReplayRequest) -> Result<ReplayResult> {
    if request.replay_id.is_empty() {
        return Err(StoreError::InvalidArgument(
            "replay id must not be empty".into(),
        ));
    }
    let earlier: Option<(i64, i64)> = conn
        .query_row(
            "SELECT matched, requeued FROM replays WHERE replay_id = ?1",
            [&request.replay_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db("look up replay"))?;
    if let Some((matched, requeued)) = earlier {
        return Ok(ReplayResult {
            replay_id: request.replay_id.clone(),
            matched: u64::try_from(matched).unwrap_or(0),
            requeued: u64::try_from(requeued).unwrap_or(0),
            first_run: false,
        });
    }
    let endpoint = &request.filter.endpoint;
    let mut events = HashSet::new();
    let mut requeued = 0u64;
    let now = millis(request.now);
    for candidate in queries::replay_candidates(conn, &request.filter, usize::MAX)? {
        if events.insert(candidate.event_id.clone()) {
            insert_delivery(
                conn,
                &candidate.event_id,
                endpoint,
                &request.replay_id,
                candidate.lane.as_deref(),
                now,
                None,
            )?;
            requeued += 1;
        }
    }
    let matched = count(events.len());
    conn.execute(
        "INSERT INTO replays (replay_id, namespace, endpoint, matched, requeued, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            request.replay_id,
            endpoint.namespace,
            endpoint.name,
            i64::try_from(matched).unwrap_or(i64::MAX),
            i64::try_from(requeued).unwrap_or(i64::MAX),
            now
        ],
    )
    .map_err(db("record replay"))?;
    Ok(ReplayResult {
        replay_id: request.replay_id.clone(),
        matched,
        requeued,
        first_run: true,
    })
}

/// Deletes up to `chunk` finished deliveries (with their attempts) finished before
/// `older_than_ms`, and up to `chunk` events created before it that have no delivery left.
pub fn purge_chunk(conn: &Connection, older_than_ms: i64, chunk: usize) -> Result<PurgeStats> {
    let chunk = i64::try_from(chunk.max(1)).unwrap_or(i64::MAX);
    conn.execute_batch("CREATE TEMP TABLE IF NOT EXISTS purge_ids (id INTEGER PRIMARY KEY); DELETE FROM temp.purge_ids;")
        .map_err(db("prepare purge"))?;
    conn.execute(
        "INSERT INTO temp.purge_ids (id) SELECT id FROM deliveries WHERE finished_at < ?1 \
         ORDER BY finished_at LIMIT ?2",
        params![older_than_ms, chunk],
    )
    .map_err(db("select finished deliveries"))?;
    let attempts = conn
        .execute(
            "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM temp.purge_ids)",
            [],
        )
        .map_err(db("purge attempts"))?;
    let deliveries = conn
        .execute(
            "DELETE FROM deliveries WHERE id IN (SELECT id FROM temp.purge_ids)",
            [],
        )
        .map_err(db("purge deliveries"))?;
    // Rollups serve windows of a day at most, and go with the attempts they add up before that.
    conn.execute(
        "DELETE FROM attempt_minutes WHERE minute < MAX(?1 / 60000, \
         (SELECT COALESCE(MAX(minute), 0) FROM attempt_minutes) - ?2)",
        params![older_than_ms, ROLLUP_KEPT_MINUTES],
    )
    .map_err(db("purge minute rollups"))?;
    let events = conn
        .execute(
            "DELETE FROM events WHERE event_id IN (SELECT e.event_id FROM events e WHERE e.created_at < ?1 \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.event_id) LIMIT ?2)",
            params![older_than_ms, chunk],
        )
        .map_err(db("purge events"))?;
    Ok(PurgeStats {
        deliveries: count(deliveries),
        attempts: count(attempts),
        events: count(events),
    })
}
