//! The write operations, each inside a transaction the caller opens and commits (enqueues inside
//! a group commit, see [`super::writer`]). Transactions run at READ COMMITTED; rows that several
//! replicas may race for are taken with `FOR UPDATE` (claims with `SKIP LOCKED`).
use std::collections::HashSet;

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::enqueue::{insert_deliveries, NewDeliveries};
use super::lanes::{self, Locks};
use super::rows::{self, get, Params, DELIVERY_COLUMNS, DELIVERY_WIDTH, EVENT_COLUMNS};
use super::{db, reads};
use crate::store::common::{count, millis, sql_limit};
use crate::store::minutes::ROLLUP_KEPT_MINUTES;
use crate::store::{
    ClaimRequest, ClaimScope, ClaimedDelivery, DeliveryId, EndpointCaps, EndpointRef,
    EnqueueRequest, PurgeStats, ReplayRequest, ReplayResult, Result, StoreError,
};

/// Runs `sql` (prepared once per connection) in a transaction or, on a pooled connection, as a
/// statement of its own, and returns its rows.
pub async fn query<C: GenericClient>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    context: &'static str,
) -> Result<Vec<Row>> {
    let statement = client.prepare_cached(sql).await.map_err(db(context))?;
    client.query(&statement, params).await.map_err(db(context))
}

/// Runs `sql` (prepared once per connection) and returns how many rows it changed.
pub async fn execute<C: GenericClient>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    context: &'static str,
) -> Result<u64> {
    let statement = client.prepare_cached(sql).await.map_err(db(context))?;
    client
        .execute(&statement, params)
        .await
        .map_err(db(context))
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
/// the fixed order means two batches never deadlock on each other.
/// [`super::enqueue::enqueue_round`] relies on these locks being held.
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

/// Makes every delivery whose lease expired by `now_ms` due again (as of its expiry), whatever
/// the claimer's scope: it is due for any claimer. Rows another transaction holds are left to
/// the next sweep.
pub async fn expire_leases<C: GenericClient>(client: &C, now_ms: i64) -> Result<u64> {
    execute(
        client,
        &format!(
            "UPDATE deliveries d SET state = {UNLESS_HELD}, next_attempt_at = d.lease_expires_at, \
             lease_owner = NULL, lease_expires_at = NULL WHERE d.id IN (SELECT c.id FROM deliveries c \
             WHERE c.state = 'in_flight' AND c.lease_expires_at <= $1 FOR UPDATE SKIP LOCKED)"
        ),
        &[&now_ms],
        "expire leases",
    )
    .await
}

/// Claims due deliveries under a lease, in one statement (atomic on its own: the caller needs no
/// transaction). (Expired leases come back through [`expire_leases`] first.)
///
/// One statement picks the due deliveries, locks them with `FOR UPDATE SKIP LOCKED` (rows another replica is
/// claiming or recording right now are passed over, never waited for nor taken twice) and marks
/// them in flight, returning them with their events. With a per-endpoint limit the candidates
/// come from a loose index scan over the endpoints with pending work (or the scope's endpoint
/// list) and each endpoint's earliest due rows, so a round does not grow with the backlog.
pub async fn claim<C: GenericClient>(
    client: &C,
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
            // The candidates are looked up by primary key (`= ANY(ARRAY(…))`) whatever the
            // statistics say: as `IN (…)`, on a schema analyzed at a few thousand rows the
            // planner expected one candidate and read every due row of the pending index to
            // join them (seen in the benchmark's plans), a cost that grows with the backlog.
            format!(
                "WITH RECURSIVE endpoints (namespace, endpoint, partition_hash) AS ({endpoints}), \
                 candidates AS (SELECT c.id, c.next_attempt_at FROM (SELECT * FROM endpoints p{filter}) p CROSS JOIN LATERAL \
                   (SELECT c.id, c.next_attempt_at FROM deliveries c WHERE c.state = 'pending' \
                    AND c.namespace = p.namespace AND c.endpoint = p.endpoint \
                    AND c.next_attempt_at <= {at}{condition} \
                    ORDER BY c.next_attempt_at, c.id LIMIT {endpoint_limit}) c \
                   ORDER BY c.next_attempt_at, c.id LIMIT {limit}), \
                 due AS (SELECT c.id FROM deliveries c WHERE c.id = ANY(ARRAY(SELECT id FROM candidates)) \
                   AND c.state = 'pending' AND c.next_attempt_at <= {at} AND {NOT_HELD} \
                   FOR UPDATE OF c SKIP LOCKED)"
            )
        }
    };
    let (owner, until) = (params.push(request.owner.clone()), params.push(expires));
    let rows = query(
        client,
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
    // Before the candidates are read: a purge that ran first has committed, one that comes
    // next waits for this replay's deliveries and sees them.
    query(
        tx,
        "SELECT pg_advisory_xact_lock_shared($1)",
        &[&PURGE_LOCK],
        "wait for purges",
    )
    .await?;
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
        let mut delivery = NewDeliveries::default();
        let lane = candidate.lane.as_deref();
        delivery.push(
            &candidate.event_id,
            &endpoint.namespace,
            &endpoint.name,
            lane,
            None,
            now,
        );
        insert_deliveries(tx, &delivery, &request.replay_id).await?;
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

/// Taken by a purge (exclusive) and a replay (shared), so that a replay never inserts a
/// delivery for an event a purge deletes. A replay is the only writer of deliveries for an event
/// committed earlier (an enqueue inserts its event in the same transaction), and there is no
/// foreign key from deliveries to events to catch it: its check locked the event row for every
/// delivery inserted (docs/benchmarks.md, issue 19, session 19). Each statement of a purge
/// chunk takes its snapshot after the lock, so it sees every replay that held it.
pub const PURGE_LOCK: i64 = 0x776f_7075_7267_6521;

/// Deletes up to `chunk` finished deliveries (with their attempts) finished before
/// `older_than_ms`, then up to `chunk` events created before it that have no delivery left.
/// Rows another transaction holds are skipped (the next purge takes them).
pub async fn purge_chunk(
    tx: &Transaction<'_>,
    older_than_ms: i64,
    chunk: usize,
) -> Result<PurgeStats> {
    let chunk = sql_limit(chunk.max(1));
    query(
        tx,
        "SELECT pg_advisory_xact_lock($1)",
        &[&PURGE_LOCK],
        "wait for replays",
    )
    .await?;
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
