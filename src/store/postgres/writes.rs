//! The write operations, each inside a transaction the caller opens and commits (enqueues inside
//! a group commit, see [`super::writer`]). Transactions run at READ COMMITTED; rows that several
//! replicas may race for are taken with `FOR UPDATE` (claims with `SKIP LOCKED`).
use std::collections::{HashMap, HashSet};

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::lanes::{self, Lane, Locks};
use super::rows::{self, get, Params, DELIVERY_COLUMNS, DELIVERY_WIDTH, EVENT_COLUMNS};
use super::{db, reads};
use crate::store::common::{
    attempt_outcome, claim_on_insert, claimed_at_insert, count, counter_bump, distinct_endpoints,
    millis, resource_columns, sql_limit, transition, CounterBump, Recorded,
};
use crate::store::minutes::{by_minute, AttemptSample, ROLLUP_KEPT_MINUTES};
use crate::store::{
    partition_hash, AttemptResult, ClaimOnInsert, ClaimRequest, ClaimScope, ClaimedDelivery,
    DeliveryId, DeliveryState, EndpointCaps, EndpointRef, EnqueueOutcome, EnqueueRequest,
    EventSource, NewEvent, NextStep, PurgeStats, RecordOutcome, ReplayRequest, ReplayResult,
    Result, StoreError,
};

/// Runs `sql` (prepared once per connection) and returns its rows.
pub async fn query(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    context: &'static str,
) -> Result<Vec<Row>> {
    let statement = tx.prepare_cached(sql).await.map_err(db(context))?;
    tx.query(&statement, params).await.map_err(db(context))
}

/// Runs `sql` (prepared once per connection) and returns how many rows it changed.
pub async fn execute(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    context: &'static str,
) -> Result<u64> {
    let statement = tx.prepare_cached(sql).await.map_err(db(context))?;
    tx.execute(&statement, params).await.map_err(db(context))
}

/// The state an in-flight delivery (alias `d`) returns to: Held if its endpoint is held.
pub(super) const UNLESS_HELD: &str =
    "CASE WHEN EXISTS (SELECT 1 FROM held_endpoints h WHERE h.namespace = d.namespace \
     AND h.endpoint = d.endpoint) THEN 'held' ELSE 'pending' END";

/// Excludes deliveries (alias `c`) of held endpoints: a delivery that became pending while its
/// endpoint was being held (a race between two transactions) is still not claimed.
const NOT_HELD: &str =
    "NOT EXISTS (SELECT 1 FROM held_endpoints h WHERE h.namespace = c.namespace \
     AND h.endpoint = c.endpoint)";

/// Takes, in one consistent order, the transaction-scoped advisory locks on every identity a
/// batch of enqueues dedupes on (event id, resource UID, idempotency key), then those its laned
/// deliveries need (their endpoints shared, their lanes: see [`lanes`]). Replicas enqueueing
/// the same event at once then run one after the other, and the second sees the first's event;
/// the fixed order means two batches never deadlock on each other. [`enqueue_one`] relies on
/// these locks being held.
pub async fn lock_identities<'a>(
    tx: &Transaction<'_>,
    requests: impl Iterator<Item = &'a EnqueueRequest>,
) -> Result<()> {
    let mut locks = Locks::default();
    for request in requests {
        for identity in super::pipeline::identities(&request.event) {
            locks.identity(identity);
        }
        locks.add_enqueue(request);
    }
    lanes::take(tx, &locks).await
}

/// Persists one event and its deliveries; a duplicate returns the earlier event. The caller
/// holds [`lock_identities`]'s locks for the request.
pub async fn enqueue_one(
    tx: &Transaction<'_>,
    request: &EnqueueRequest,
    window_ms: i64,
) -> Result<EnqueueOutcome> {
    let event = &request.event;
    if let Some(existing) = find_duplicate(tx, event, window_ms).await? {
        let deliveries = query(
            tx,
            "SELECT id FROM deliveries WHERE event_id = $1 AND replay_id = '' ORDER BY id",
            &[&existing],
            "read deliveries of event",
        )
        .await?
        .iter()
        .map(|row| get(row, 0).map(DeliveryId))
        .collect::<Result<_>>()?;
        return Ok(EnqueueOutcome {
            event_id: existing,
            deliveries,
            duplicate: true,
            claimed: Vec::new(),
        });
    }
    let (resource_name, resource_uid) = resource_columns(&event.source);
    let created_at = millis(event.created_at);
    execute(
        tx,
        "INSERT INTO events (event_id, namespace, event_type, data, created_at, resource_name, \
         resource_uid, idempotency_key, traceparent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &event.event_id,
            &event.namespace,
            &event.event_type,
            &&event.data[..],
            &created_at,
            &resource_name,
            &resource_uid,
            &event.idempotency_key,
            &event.trace_parent,
        ],
        "insert event",
    )
    .await?;
    let names = distinct_endpoints(request);
    let delivery_lanes: Vec<Option<&str>> = names
        .iter()
        .map(|name| request.lanes.get(*name).map(String::as_str))
        .collect();
    let claims: Vec<bool> = names
        .iter()
        .map(|name| claim_on_insert(request, name).is_some())
        .collect();
    let inserted = insert_deliveries(
        tx,
        &event.event_id,
        &event.namespace,
        &names,
        &delivery_lanes,
        "",
        created_at,
        request
            .claim
            .as_ref()
            .map(|claim| (claim, claims.as_slice())),
    )
    .await?;
    let claimed = names
        .iter()
        .zip(&inserted)
        .filter_map(|(name, (id, state))| {
            let endpoint = EndpointRef::new(event.namespace.clone(), *name);
            claimed_at_insert(request, endpoint, *id, *state)
        })
        .collect();
    Ok(EnqueueOutcome {
        event_id: event.event_id.clone(),
        deliveries: inserted.into_iter().map(|(id, _)| id).collect(),
        claimed,
        duplicate: false,
    })
}

/// The earlier event this one repeats: same id, same resource UID, or same idempotency key
/// within the window (in that order of precedence).
async fn find_duplicate(
    tx: &Transaction<'_>,
    event: &NewEvent,
    window_ms: i64,
) -> Result<Option<String>> {
    let uid = match &event.source {
        EventSource::Resource { uid, .. } => Some(uid.as_str()),
        EventSource::Ingest => None,
    };
    let since = millis(event.created_at).saturating_sub(window_ms);
    let found = query(
        tx,
        "SELECT event_id FROM ( \
           SELECT 1 AS rank, event_id FROM events WHERE event_id = $1 \
           UNION ALL SELECT 2, event_id FROM events WHERE resource_uid = $2 \
           UNION ALL (SELECT 3, event_id FROM events WHERE namespace = $3 AND idempotency_key = $4 \
             AND created_at >= $5 ORDER BY created_at DESC LIMIT 1) \
         ) found ORDER BY rank LIMIT 1",
        &[
            &event.event_id,
            &uid,
            &event.namespace,
            &event.idempotency_key,
            &since,
        ],
        "look up duplicate event",
    )
    .await?;
    found.first().map(|row| get(row, 0)).transpose()
}

/// Inserts one delivery per name (distinct), in one statement, due at `due_ms`: Queued where it
/// has a lane (`lanes[i]` for `names[i]`) that must wait ([`lanes::must_queue_sql`]), else Held
/// where the endpoint is held, else InFlight under `claim`'s lease where `claims[i]`, else
/// Pending. Returns their ids and states in `names` order (the existing delivery's where
/// `(event, endpoint, replay)` exists). The caller holds the locks of the lanes given
/// ([`Locks::lane`]); each endpoint is named once, so no two rows of the statement share a lane.
#[allow(clippy::too_many_arguments)]
async fn insert_deliveries(
    tx: &Transaction<'_>,
    event_id: &str,
    namespace: &str,
    names: &[&str],
    lanes: &[Option<&str>],
    replay_id: &str,
    due_ms: i64,
    claim: Option<(&ClaimOnInsert, &[bool])>,
) -> Result<Vec<(DeliveryId, DeliveryState)>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let owner = claim.map(|(claim, _)| claim.owner.as_str());
    let expires = claim.map(|(claim, _)| millis(claim.lease_expires_at));
    let claims: Vec<bool> = match claim {
        Some((_, claims)) => claims.to_vec(),
        None => vec![false; names.len()],
    };
    let hashes: Vec<i64> = names
        .iter()
        .map(|name| i64::from(partition_hash(namespace, name)))
        .collect();
    // `OFFSET 0` keeps the subquery from being pulled up into the outer SELECT: pulled up, its
    // `state` (lane check and `held_endpoints` probe) was evaluated for each of its three uses,
    // and ingest on PostgreSQL fell to 0.66× (docs/benchmarks.md, issue 19, session 16).
    let rows = query(
        tx,
        &format!(
            "INSERT INTO deliveries (event_id, namespace, endpoint, partition_hash, replay_id, state, \
             next_attempt_at, created_at, lane, lease_owner, lease_expires_at) \
             SELECT $1::text, $2::text, s.name, s.hash, $3::text, s.state, $4::bigint, $4::bigint, s.lane, \
               CASE WHEN s.state = 'in_flight' THEN $8::text END, \
               CASE WHEN s.state = 'in_flight' THEN $9::bigint END \
             FROM (SELECT t.name, t.hash, t.lane, t.ord, \
               CASE WHEN (CASE WHEN t.lane IS NULL THEN false ELSE {} END) THEN 'queued' \
               WHEN EXISTS (SELECT 1 FROM held_endpoints h WHERE h.namespace = $2::text \
                 AND h.endpoint = t.name) THEN 'held' \
               WHEN t.claim THEN 'in_flight' ELSE 'pending' END AS state \
             FROM unnest($5::text[], $6::bigint[], $7::text[], $10::bool[]) \
               WITH ORDINALITY AS t(name, hash, lane, claim, ord) OFFSET 0) s \
             ORDER BY s.ord \
             ON CONFLICT (event_id, namespace, endpoint, replay_id) DO UPDATE SET state = deliveries.state \
             RETURNING endpoint, id, state",
            lanes::must_queue_sql("$2::text", "t.name", "t.lane"),
        ),
        &[
            &event_id, &namespace, &replay_id, &due_ms, &names, &hashes, &lanes, &owner, &expires,
            &claims,
        ],
        "insert deliveries",
    )
    .await?;
    let ids: HashMap<String, (i64, String)> = rows
        .iter()
        .map(|row| Ok((get(row, 0)?, (get(row, 1)?, get(row, 2)?))))
        .collect::<Result<_>>()?;
    names
        .iter()
        .map(|name| {
            let (id, state) = ids
                .get(*name)
                .ok_or_else(|| StoreError::Commit(format!("no delivery id for endpoint {name}")))?;
            let state = DeliveryState::parse(state)
                .ok_or_else(|| StoreError::Commit(format!("unknown delivery state {state:?}")))?;
            Ok((DeliveryId(*id), state))
        })
        .collect()
}

/// A claim scope as SQL on alias `c`: a condition, and for an endpoint list the endpoints as a
/// row source. `None` when it selects nothing.
struct Scope {
    condition: String,
    endpoints: Option<String>,
    /// A filter on the endpoints of the loose index scan (`p`, with its `partition_hash`), so
    /// endpoints out of scope are skipped before their pending rows are read.
    endpoint_filter: String,
}

fn scope(scope: &ClaimScope, params: &mut Params) -> Result<Option<Scope>> {
    match scope {
        ClaimScope::All => Ok(Some(Scope {
            condition: String::new(),
            endpoints: None,
            endpoint_filter: String::new(),
        })),
        ClaimScope::Endpoints(endpoints) if endpoints.is_empty() => Ok(None),
        ClaimScope::Endpoints(endpoints) => {
            let namespaces = params.push(
                endpoints
                    .iter()
                    .map(|e| e.namespace.clone())
                    .collect::<Vec<_>>(),
            );
            let names = params.push(endpoints.iter().map(|e| e.name.clone()).collect::<Vec<_>>());
            let source = format!("unnest({namespaces}::text[], {names}::text[])");
            Ok(Some(Scope {
                condition: format!(" AND (c.namespace, c.endpoint) IN (SELECT * FROM {source})"),
                endpoints: Some(format!(
                    "SELECT DISTINCT namespace, endpoint, 0::bigint FROM {source} AS t(namespace, endpoint)"
                )),
                endpoint_filter: String::new(),
            }))
        }
        ClaimScope::Partitions { count: 0, .. } => Err(StoreError::InvalidArgument(
            "partition count must be at least 1".into(),
        )),
        ClaimScope::Partitions { owned, .. } if owned.is_empty() => Ok(None),
        ClaimScope::Partitions { count, owned } => {
            let count = params.push(i64::from(*count));
            let owned = params.push(owned.iter().map(|p| i64::from(*p)).collect::<Vec<_>>());
            Ok(Some(Scope {
                condition: format!(" AND c.partition_hash % {count} = ANY({owned}::bigint[])"),
                endpoints: None,
                endpoint_filter: format!(
                    " WHERE p.partition_hash % {count} = ANY({owned}::bigint[])"
                ),
            }))
        }
    }
}

/// Claims due deliveries under a lease.
///
/// First expired leases become due again (as of their expiry). Then one statement
/// picks the due deliveries, locks them with `FOR UPDATE SKIP LOCKED` (rows another replica is
/// claiming or recording right now are passed over, never waited for nor taken twice) and marks
/// them in flight, returning them with their events. With a per-endpoint limit the candidates
/// come from a loose index scan over the endpoints with pending work (or the scope's endpoint
/// list) and each endpoint's earliest due rows, so a round does not grow with the backlog.
pub async fn claim(
    tx: &Transaction<'_>,
    request: &ClaimRequest,
    caps: &EndpointCaps,
) -> Result<Vec<ClaimedDelivery>> {
    if request.limit == 0 {
        return Ok(Vec::new());
    }
    let now = millis(request.now);
    let lease_ms = i64::try_from(request.lease.as_millis()).unwrap_or(i64::MAX);
    let expires = now.saturating_add(lease_ms);
    let expires_at = jiff::Timestamp::from_millisecond(expires)
        .map_err(|e| StoreError::InvalidArgument(format!("lease expiry out of range: {e}")))?;

    // Every expired lease, whatever the scope: a delivery whose lease expired is due again for
    // any claimer (rows another transaction holds are left to the next round).
    execute(
        tx,
        &format!(
            "UPDATE deliveries d SET state = {UNLESS_HELD}, next_attempt_at = d.lease_expires_at, \
             lease_owner = NULL, lease_expires_at = NULL WHERE d.id IN (SELECT c.id FROM deliveries c \
             WHERE c.state = 'in_flight' AND c.lease_expires_at <= $1 FOR UPDATE SKIP LOCKED)"
        ),
        &[&now],
        "expire leases",
    )
    .await?;

    let mut params = Params::default();
    let Some(scope) = scope(&request.scope, &mut params)? else {
        return Ok(Vec::new());
    };
    let condition = &scope.condition;
    let (at, limit) = (params.push(now), params.push(sql_limit(request.limit)));
    let due = match request.per_endpoint_limit {
        None => format!(
            "WITH due AS (SELECT c.id FROM deliveries c WHERE c.state = 'pending' \
             AND c.next_attempt_at <= {at}{condition} AND {NOT_HELD} \
             ORDER BY c.next_attempt_at, c.id LIMIT {limit} FOR UPDATE OF c SKIP LOCKED)"
        ),
        Some(per_endpoint) => {
            let per_endpoint = params.push(sql_limit(per_endpoint));
            // Endpoints named in `caps` take at most their cap (never more than per_endpoint).
            let (cap_namespaces, cap_names, cap_values) = (
                params.push(caps.keys().map(|e| e.namespace.clone()).collect::<Vec<_>>()),
                params.push(caps.keys().map(|e| e.name.clone()).collect::<Vec<_>>()),
                params.push(caps.values().map(|c| sql_limit(*c)).collect::<Vec<_>>()),
            );
            let endpoint_limit = format!(
                "LEAST({per_endpoint}, COALESCE((SELECT k.cap FROM unnest({cap_namespaces}::text[], \
                 {cap_names}::text[], {cap_values}::bigint[]) AS k(namespace, endpoint, cap) \
                 WHERE k.namespace = p.namespace AND k.endpoint = p.endpoint), {per_endpoint}))"
            );
            // Every endpoint's partition hash rides along (it is a function of the endpoint, so
            // any of its rows has it), so out-of-scope endpoints are filtered before the lateral
            // reads their pending rows: a round does not grow with other replicas' backlogs.
            let endpoints = scope.endpoints.clone().unwrap_or_else(|| {
                "(SELECT namespace, endpoint, partition_hash FROM deliveries WHERE state = 'pending' \
                  ORDER BY namespace, endpoint LIMIT 1) \
                 UNION ALL SELECT n.namespace, n.endpoint, n.partition_hash FROM endpoints p CROSS JOIN LATERAL \
                 (SELECT namespace, endpoint, partition_hash FROM deliveries WHERE state = 'pending' \
                  AND (namespace, endpoint) > (p.namespace, p.endpoint) \
                  ORDER BY namespace, endpoint LIMIT 1) n"
                    .to_owned()
            });
            let filter = &scope.endpoint_filter;
            format!(
                "WITH RECURSIVE endpoints (namespace, endpoint, partition_hash) AS ({endpoints}), \
                 candidates AS (SELECT c.id, c.next_attempt_at FROM (SELECT * FROM endpoints p{filter}) p CROSS JOIN LATERAL \
                   (SELECT c.id, c.next_attempt_at FROM deliveries c WHERE c.state = 'pending' \
                    AND c.namespace = p.namespace AND c.endpoint = p.endpoint \
                    AND c.next_attempt_at <= {at}{condition} \
                    ORDER BY c.next_attempt_at, c.id LIMIT {endpoint_limit}) c \
                   ORDER BY c.next_attempt_at, c.id LIMIT {limit}), \
                 due AS (SELECT c.id FROM deliveries c WHERE c.id IN (SELECT id FROM candidates) \
                   AND c.state = 'pending' AND c.next_attempt_at <= {at} AND {NOT_HELD} \
                   FOR UPDATE OF c SKIP LOCKED)"
            )
        }
    };
    let (owner, until) = (params.push(request.owner.clone()), params.push(expires));
    let rows = query(
        tx,
        &format!(
            "{due} UPDATE deliveries d SET state = 'in_flight', lease_owner = {owner}, \
             lease_expires_at = {until} FROM due, events e WHERE d.id = due.id AND e.event_id = d.event_id \
             RETURNING {DELIVERY_COLUMNS}, {EVENT_COLUMNS}"
        ),
        &params.refs(),
        "claim due deliveries",
    )
    .await?;
    let mut claimed = rows
        .iter()
        .map(|row| {
            Ok(ClaimedDelivery {
                delivery: rows::delivery(row, 0)?,
                event: rows::event(row, DELIVERY_WIDTH)?,
                lease_expires_at: expires_at,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    claimed.sort_by_key(|c| (c.delivery.next_attempt_at, c.delivery.id));
    Ok(claimed)
}

fn ids(ids: &[DeliveryId]) -> Vec<i64> {
    ids.iter().map(|id| id.0).collect()
}

/// Extends the leases `owner` holds on `ids`.
pub async fn extend_leases(
    tx: &Transaction<'_>,
    owner: &str,
    delivery_ids: &[DeliveryId],
    until_ms: i64,
) -> Result<u64> {
    execute(
        tx,
        "UPDATE deliveries SET lease_expires_at = $1 WHERE id = ANY($2) AND state = 'in_flight' \
         AND lease_owner = $3",
        &[&until_ms, &ids(delivery_ids), &owner],
        "extend leases",
    )
    .await
}

/// Gives claimed deliveries back without an attempt, due again at `until_ms` (Held if their
/// endpoint is held). Only deliveries `owner` still holds move.
pub async fn defer(
    tx: &Transaction<'_>,
    owner: &str,
    delivery_ids: &[DeliveryId],
    until_ms: i64,
) -> Result<u64> {
    execute(
        tx,
        &format!(
            "UPDATE deliveries d SET state = {UNLESS_HELD}, next_attempt_at = $1, lease_owner = NULL, \
             lease_expires_at = NULL WHERE d.id = ANY($2) AND d.state = 'in_flight' AND d.lease_owner = $3"
        ),
        &[&until_ms, &ids(delivery_ids), &owner],
        "defer",
    )
    .await
}

/// Makes in-flight deliveries (all, or `owner`'s) due at `now_ms`. (The store runs the lane
/// repair, [`lanes::repair`], before it.)
pub async fn recover_in_flight(
    tx: &Transaction<'_>,
    owner: Option<&str>,
    now_ms: i64,
) -> Result<u64> {
    execute(
        tx,
        &format!(
            "UPDATE deliveries d SET state = {UNLESS_HELD}, next_attempt_at = $1, lease_owner = NULL, \
             lease_expires_at = NULL WHERE d.state = 'in_flight' AND ($2::text IS NULL OR d.lease_owner = $2)"
        ),
        &[&now_ms, &owner],
        "recover in-flight deliveries",
    )
    .await
}

/// Whether `result` finishes its delivery (if applied): then its lane moves on.
fn finishes(result: &AttemptResult) -> bool {
    matches!(
        result.next,
        NextStep::Delivered | NextStep::DeadLetter { .. } | NextStep::Filtered
    )
}

/// Takes the locks (endpoint shared, lane) every result of `results` that finishes a laned
/// delivery needs, all at once (sorted), before any delivery row is locked: see [`lanes`].
pub async fn lock_finishing_lanes(tx: &Transaction<'_>, results: &[AttemptResult]) -> Result<()> {
    let finishing: Vec<i64> = results
        .iter()
        .filter(|r| finishes(r))
        .map(|r| r.delivery_id.0)
        .collect();
    lanes::lock_lanes_of(tx, &finishing).await
}

/// Logs an attempt and moves the delivery if the caller still holds its lease: takes the
/// delivery's lane locks if it may finish, then [`record_attempt_locked`].
pub async fn record_attempt(tx: &Transaction<'_>, result: &AttemptResult) -> Result<RecordOutcome> {
    lock_finishing_lanes(tx, std::slice::from_ref(result)).await?;
    let (outcome, bump) = record_attempt_locked(tx, result).await?;
    if let Some((endpoint, bump)) = bump {
        bump_counters(tx, &endpoint, &bump).await?;
    }
    Ok(outcome)
}

/// Logs an attempt and moves the delivery if the caller still holds its lease (the delivery row
/// is locked first, so a concurrent claim or recovery cannot move it in between). When it
/// finishes a laned delivery it pauses the endpoint (a dead letter with `pause_on_dead_letter`)
/// and advances the lane; the caller holds that lane's locks ([`lock_finishing_lanes`]). What
/// the attempt adds to its endpoint's counters is returned, for the caller to write
/// ([`bump_counters`], once per endpoint for a batch).
pub async fn record_attempt_locked(
    tx: &Transaction<'_>,
    result: &AttemptResult,
) -> Result<Recorded> {
    let found = query(
        tx,
        "SELECT d.state, d.lease_owner, d.namespace, d.endpoint, d.event_id, e.event_type, \
         EXISTS (SELECT 1 FROM held_endpoints h WHERE h.namespace = d.namespace AND h.endpoint = d.endpoint), \
         d.lane, d.attempts FROM deliveries d JOIN events e ON e.event_id = d.event_id WHERE d.id = $1 FOR UPDATE OF d",
        &[&result.delivery_id.0],
        "read delivery",
    )
    .await?;
    let Some(row) = found.first() else {
        return Ok((RecordOutcome::NotFound, None));
    };
    let (state, lease_owner): (String, Option<String>) = (get(row, 0)?, get(row, 1)?);
    let endpoint = EndpointRef {
        namespace: get(row, 2)?,
        name: get(row, 3)?,
    };
    let (event_id, event_type, held): (String, String, bool) =
        (get(row, 4)?, get(row, 5)?, get(row, 6)?);
    let lane: Option<String> = get(row, 7)?;
    let recorded_attempts: i32 = get(row, 8)?;
    let record = &result.record;
    if i64::from(recorded_attempts) >= i64::from(record.attempt) {
        return Ok((RecordOutcome::AlreadyRecorded, None));
    }
    let at = millis(record.at);
    let success = matches!(result.next, NextStep::Delivered);
    let holds_lease =
        state == DeliveryState::InFlight.as_str() && lease_owner.as_deref() == Some(&result.owner);
    let outcome = attempt_outcome(&result.next, holds_lease && held);
    let attempt = i32::try_from(record.attempt).unwrap_or(i32::MAX);
    let status = record.status_code.map(i32::from);
    let latency = record
        .latency_ms
        .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
    execute(
        tx,
        "INSERT INTO attempts (delivery_id, event_id, event_type, namespace, endpoint, attempt, at, \
         status_code, latency_ms, error, response_snippet, success, outcome) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        &[
            &result.delivery_id.0,
            &event_id,
            &event_type,
            &endpoint.namespace,
            &endpoint.name,
            &attempt,
            &at,
            &status,
            &latency,
            &record.error,
            &record.response_snippet,
            &success,
            &outcome.as_str(),
        ],
        "insert attempt",
    )
    .await?;
    let bump = counter_bump(result, outcome, success);
    if !holds_lease {
        return Ok((RecordOutcome::LeaseLost, Some((endpoint, bump))));
    }
    let next = transition(result, outcome);
    execute(
        tx,
        "UPDATE deliveries SET state = $1, attempts = attempts + 1, next_attempt_at = $2, \
         lease_owner = NULL, lease_expires_at = NULL, last_attempt_at = $3, last_status_code = $4, \
         last_error = $5, delivered_at = $6, dead_letter_reason = $7, finished_at = $8 WHERE id = $9",
        &[
            &next.state.as_str(),
            &next.next_attempt_at,
            &at,
            &status,
            &record.error,
            &next.delivered_at,
            &next.dead_letter_reason,
            &next.finished_at,
            &result.delivery_id.0,
        ],
        "move delivery",
    )
    .await?;
    if let Some(lane) = lane.filter(|_| next.state.is_finished()) {
        if let (NextStep::DeadLetter { reason }, true) = (&result.next, result.pause_on_dead_letter)
        {
            lanes::pause(tx, &endpoint, result.delivery_id, &event_id, reason, at).await?;
        }
        let lane = Lane {
            namespace: endpoint.namespace.clone(),
            endpoint: endpoint.name.clone(),
            lane,
        };
        lanes::advance(tx, &[lane], at).await?;
    }
    Ok((RecordOutcome::Applied, Some((endpoint, bump))))
}

/// [`record_attempt_locked`] in a savepoint of its own: the inner result is the attempt's
/// (rolled back when it failed), the outer one the savepoint's.
pub async fn record_in_savepoint(
    tx: &mut Transaction<'_>,
    result: &AttemptResult,
) -> Result<Result<Recorded>> {
    let savepoint = tx.savepoint("record").await.map_err(db("savepoint"))?;
    let recorded = record_attempt_locked(&savepoint, result).await;
    if recorded.is_ok() {
        savepoint.commit().await.map_err(db("release savepoint"))?;
    } else {
        savepoint
            .rollback()
            .await
            .map_err(db("roll back to savepoint"))?;
    }
    Ok(recorded)
}

/// Adds attempts to the endpoint's totals; "last" values move only forward in time, and a
/// `NULL` (a filtered attempt has no last attempt, status, success or failure) leaves one as is.
pub async fn bump_counters(
    tx: &Transaction<'_>,
    endpoint: &EndpointRef,
    bump: &CounterBump,
) -> Result<()> {
    execute(
        tx,
        "INSERT INTO endpoint_counters AS c (namespace, endpoint, delivered, failed_attempts, \
         dead_lettered, retries, filtered, last_attempt_at, last_success_at, last_failure_at, \
         last_status_code, last_error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (namespace, endpoint) DO UPDATE SET \
           delivered = c.delivered + EXCLUDED.delivered, \
           failed_attempts = c.failed_attempts + EXCLUDED.failed_attempts, \
           dead_lettered = c.dead_lettered + EXCLUDED.dead_lettered, \
           retries = c.retries + EXCLUDED.retries, \
           filtered = c.filtered + EXCLUDED.filtered, \
           last_status_code = CASE WHEN EXCLUDED.last_attempt_at IS NOT NULL AND (c.last_attempt_at IS NULL \
             OR EXCLUDED.last_attempt_at >= c.last_attempt_at) \
             THEN EXCLUDED.last_status_code ELSE c.last_status_code END, \
           last_attempt_at = GREATEST(c.last_attempt_at, EXCLUDED.last_attempt_at), \
           last_success_at = GREATEST(c.last_success_at, EXCLUDED.last_success_at), \
           last_error = CASE WHEN EXCLUDED.last_failure_at IS NOT NULL AND (c.last_failure_at IS NULL \
             OR EXCLUDED.last_failure_at >= c.last_failure_at) THEN EXCLUDED.last_error ELSE c.last_error END, \
           last_failure_at = GREATEST(c.last_failure_at, EXCLUDED.last_failure_at)",
        &[
            &endpoint.namespace,
            &endpoint.name,
            &bump.delivered,
            &bump.failed_attempts,
            &bump.dead_lettered,
            &bump.retries,
            &bump.filtered,
            &bump.last_attempt_at,
            &bump.last_success_at,
            &bump.last_failure_at,
            &bump.last_status_code.map(i32::from),
            &bump.last_error,
        ],
        "update endpoint counters",
    )
    .await?;
    add_to_minutes(tx, endpoint, &bump.samples).await
}

/// Adds attempts to their minutes' rollups ([`crate::store::minutes`]), counts and latency
/// counts summed in the upsert (replicas may add to the same minute at once).
async fn add_to_minutes(
    tx: &Transaction<'_>,
    endpoint: &EndpointRef,
    samples: &[AttemptSample],
) -> Result<()> {
    for (minute, totals) in by_minute(samples) {
        let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        execute(
            tx,
            "INSERT INTO attempt_minutes AS m (namespace, endpoint, minute, attempts, successes, \
             available, latencies) VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb) \
             ON CONFLICT (namespace, endpoint, minute) DO UPDATE SET \
               attempts = m.attempts + EXCLUDED.attempts, \
               successes = m.successes + EXCLUDED.successes, \
               available = m.available + EXCLUDED.available, \
               latencies = (SELECT COALESCE(jsonb_object_agg(l.ms, l.n), '{}') FROM \
                 (SELECT ms, sum(n::bigint) AS n FROM \
                   (SELECT * FROM jsonb_each_text(m.latencies) \
                    UNION ALL SELECT * FROM jsonb_each_text(EXCLUDED.latencies)) AS both_(ms, n) \
                  GROUP BY ms) AS l)",
            &[
                &endpoint.namespace,
                &endpoint.name,
                &minute,
                &signed(totals.attempts),
                &signed(totals.successes),
                &signed(totals.available),
                &totals.latencies_json(),
            ],
            "add to minute rollup",
        )
        .await?;
    }
    Ok(())
}

/// Holds an endpoint's pending deliveries (and later ones).
pub async fn hold_endpoint(
    tx: &Transaction<'_>,
    endpoint: &EndpointRef,
    now_ms: i64,
) -> Result<u64> {
    execute(
        tx,
        "INSERT INTO held_endpoints (namespace, endpoint, since) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        &[&endpoint.namespace, &endpoint.name, &now_ms],
        "hold endpoint",
    )
    .await?;
    execute(
        tx,
        "UPDATE deliveries SET state = 'held' WHERE namespace = $1 AND endpoint = $2 AND state = 'pending'",
        &[&endpoint.namespace, &endpoint.name],
        "hold deliveries",
    )
    .await
}

/// Releases an endpoint's held deliveries: due now, or at their later retry time.
pub async fn release_endpoint(
    tx: &Transaction<'_>,
    endpoint: &EndpointRef,
    now_ms: i64,
) -> Result<u64> {
    execute(
        tx,
        "DELETE FROM held_endpoints WHERE namespace = $1 AND endpoint = $2",
        &[&endpoint.namespace, &endpoint.name],
        "release endpoint",
    )
    .await?;
    execute(
        tx,
        "UPDATE deliveries SET state = 'pending', next_attempt_at = GREATEST(next_attempt_at, $3) \
         WHERE namespace = $1 AND endpoint = $2 AND state = 'held'",
        &[&endpoint.namespace, &endpoint.name, &now_ms],
        "release deliveries",
    )
    .await
}

/// Runs a replay once: new deliveries for the matched events and the replay id, in the caller's
/// transaction. An advisory lock on the replay id makes a concurrent run of the same id (another
/// replica) wait, then report the first run.
pub async fn replay(tx: &Transaction<'_>, request: &ReplayRequest) -> Result<ReplayResult> {
    if request.replay_id.is_empty() {
        return Err(StoreError::InvalidArgument(
            "replay id must not be empty".into(),
        ));
    }
    let key = format!("replay:{}", request.replay_id);
    query(
        tx,
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&key],
        "lock replay id",
    )
    .await?;
    let earlier = query(
        tx,
        "SELECT matched, requeued FROM replays WHERE replay_id = $1",
        &[&request.replay_id],
        "look up replay",
    )
    .await?;
    if let Some(row) = earlier.first() {
        let (matched, requeued): (i64, i64) = (get(row, 0)?, get(row, 1)?);
        return Ok(ReplayResult {
            replay_id: request.replay_id.clone(),
            matched: u64::try_from(matched).unwrap_or(0),
            requeued: u64::try_from(requeued).unwrap_or(0),
            first_run: false,
        });
    }
    let endpoint = &request.filter.endpoint;
    let now = millis(request.now);
    let mut events = HashSet::new();
    let candidates: Vec<_> = reads::replay_candidates(tx, &request.filter, usize::MAX)
        .await?
        .into_iter()
        .filter(|candidate| events.insert(candidate.event_id.clone()))
        .collect();
    // Laned candidates queue in their lanes like new events: the same locks as an enqueue (the
    // endpoint shared and each lane, or the endpoint whole when there are many), all at once,
    // before the first insert.
    let mut locks = Locks::default();
    for lane in candidates.iter().filter_map(|c| c.lane.as_deref()) {
        locks.lane(endpoint, lane);
    }
    lanes::take(tx, &locks).await?;
    let mut requeued = 0u64;
    // One insert per candidate, in candidate order (oldest event first): each sees the ones
    // before it, so a lane's replayed deliveries queue in the original order.
    for candidate in &candidates {
        insert_deliveries(
            tx,
            &candidate.event_id,
            &endpoint.namespace,
            &[endpoint.name.as_str()],
            &[candidate.lane.as_deref()],
            &request.replay_id,
            now,
            None,
        )
        .await?;
        requeued += 1;
    }
    let matched = count(events.len());
    execute(
        tx,
        "INSERT INTO replays (replay_id, namespace, endpoint, matched, requeued, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &request.replay_id,
            &endpoint.namespace,
            &endpoint.name,
            &i64::try_from(matched).unwrap_or(i64::MAX),
            &i64::try_from(requeued).unwrap_or(i64::MAX),
            &now,
        ],
        "record replay",
    )
    .await?;
    Ok(ReplayResult {
        replay_id: request.replay_id.clone(),
        matched,
        requeued,
        first_run: true,
    })
}

/// Deletes up to `chunk` finished deliveries (with their attempts) finished before
/// `older_than_ms`, then up to `chunk` events created before it that have no delivery left.
/// Rows another transaction holds are skipped (the next purge takes them).
pub async fn purge_chunk(
    tx: &Transaction<'_>,
    older_than_ms: i64,
    chunk: usize,
) -> Result<PurgeStats> {
    let chunk = sql_limit(chunk.max(1));
    let rows = query(
        tx,
        "WITH victims AS (SELECT id FROM deliveries WHERE finished_at < $1 ORDER BY finished_at \
           LIMIT $2 FOR UPDATE SKIP LOCKED), \
         gone_attempts AS (DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM victims) RETURNING 1), \
         gone AS (DELETE FROM deliveries WHERE id IN (SELECT id FROM victims) RETURNING 1) \
         SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM gone_attempts)",
        &[&older_than_ms, &chunk],
        "purge finished deliveries",
    )
    .await?;
    let row = rows
        .first()
        .ok_or(StoreError::Commit("purge returned no row".into()))?;
    let (deliveries, attempts): (i64, i64) = (get(row, 0)?, get(row, 1)?);
    // Rollups serve windows of a day at most, and go with the attempts they add up before that.
    execute(
        tx,
        "DELETE FROM attempt_minutes WHERE minute < GREATEST($1::bigint / 60000, \
         (SELECT COALESCE(max(minute), 0) FROM attempt_minutes) - $2::bigint)",
        &[&older_than_ms, &ROLLUP_KEPT_MINUTES],
        "purge minute rollups",
    )
    .await?;
    let events = execute(
        tx,
        "DELETE FROM events WHERE event_id IN (SELECT e.event_id FROM events e WHERE e.created_at < $1 \
         AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.event_id) LIMIT $2 \
         FOR UPDATE SKIP LOCKED)",
        &[&older_than_ms, &chunk],
        "purge events",
    )
    .await?;
    Ok(PurgeStats {
        deliveries: u64::try_from(deliveries).unwrap_or(0),
        attempts: u64::try_from(attempts).unwrap_or(0),
        events,
    })
}
