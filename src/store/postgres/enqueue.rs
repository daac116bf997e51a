//! Enqueues, set-based. A round of a group commit ([`super::pipeline::rounds`]: no two of its
//! enqueues share an identity or an ordering lane) is one statement that looks up duplicates,
//! then one that inserts the new events and one that inserts all their deliveries, whatever the
//! round's size. One statement per event and per event's deliveries cost each a statement's fixed
//! work on the server (executor start, its subplans) for a row or two (docs/benchmarks.md,
//! issue 19, session 20). The caller holds [`super::writes::lock_identities`]'s locks.
use std::collections::HashMap;

use deadpool_postgres::Transaction;

use super::lanes;
use super::rows::get;
use super::writes::{execute, query};
use crate::store::common::{
    claim_on_insert, claimed_at_insert, distinct_endpoints, millis, resource_columns,
};
use crate::store::{
    partition_hash, ClaimOnInsert, DeliveryId, DeliveryState, EndpointRef, EnqueueOutcome,
    EnqueueRequest, Result, StoreError,
};

/// Persists a round's events and their deliveries; a duplicate gets the earlier event's outcome.
/// Outcomes are in `requests` order. A statement's error fails the whole round: the caller runs
/// the requests one round each to find which one it was.
pub async fn enqueue_round(
    tx: &Transaction<'_>,
    requests: &[&EnqueueRequest],
    window_ms: i64,
) -> Result<Vec<EnqueueOutcome>> {
    let earlier = find_duplicates(tx, requests, window_ms).await?;
    let repeated: Vec<&str> = earlier.iter().flatten().map(String::as_str).collect();
    let fresh: Vec<&EnqueueRequest> = requests
        .iter()
        .zip(&earlier)
        .filter(|(_, earlier)| earlier.is_none())
        .map(|(request, _)| *request)
        .collect();
    // Each fresh request's endpoints, once, in order: its deliveries' rows and its outcome.
    let names: Vec<Vec<&str>> = fresh.iter().map(|r| distinct_endpoints(r)).collect();
    let mut deliveries = NewDeliveries::default();
    for (request, names) in fresh.iter().zip(&names) {
        let event = &request.event;
        for &name in names {
            let lane = request.lanes.get(name).map(String::as_str);
            let claim = claim_on_insert(request, name);
            let due = millis(event.created_at);
            deliveries.push(&event.event_id, &event.namespace, name, lane, claim, due);
        }
    }
    // Issued together (pipelined): none of them reads what another writes.
    let (earlier_deliveries, (), inserted) = futures::try_join!(
        deliveries_of(tx, &repeated),
        insert_events(tx, &fresh),
        insert_deliveries(tx, &deliveries, ""),
    )?;
    let mut inserted = inserted.into_iter();
    let mut fresh_names = names.iter();
    let mut outcomes = Vec::with_capacity(requests.len());
    for (request, earlier) in requests.iter().zip(earlier) {
        if let Some(existing) = earlier {
            let deliveries = earlier_deliveries
                .get(&existing)
                .cloned()
                .unwrap_or_default();
            outcomes.push(EnqueueOutcome {
                event_id: existing,
                deliveries,
                duplicate: true,
                claimed: Vec::new(),
            });
            continue;
        }
        let event = &request.event;
        let mut ids = Vec::new();
        let mut claimed = Vec::new();
        for &name in fresh_names.next().into_iter().flatten() {
            let (id, state) = inserted
                .next()
                .ok_or_else(|| StoreError::Commit(format!("no delivery id for endpoint {name}")))?;
            ids.push(id);
            let endpoint = EndpointRef::new(event.namespace.clone(), name);
            claimed.extend(claimed_at_insert(request, endpoint, id, state));
        }
        outcomes.push(EnqueueOutcome {
            event_id: event.event_id.clone(),
            deliveries: ids,
            claimed,
            duplicate: false,
        });
    }
    Ok(outcomes)
}

/// For each request, the earlier event it repeats, if any: same id, same resource UID, or same
/// idempotency key within the window (in that order of precedence).
async fn find_duplicates(
    tx: &Transaction<'_>,
    requests: &[&EnqueueRequest],
    window_ms: i64,
) -> Result<Vec<Option<String>>> {
    let ids: Vec<&str> = requests.iter().map(|r| r.event.event_id.as_str()).collect();
    let uids: Vec<Option<&str>> = requests
        .iter()
        .map(|r| resource_columns(&r.event.source).1)
        .collect();
    let namespaces: Vec<&str> = requests
        .iter()
        .map(|r| r.event.namespace.as_str())
        .collect();
    let keys: Vec<Option<&str>> = requests
        .iter()
        .map(|r| r.event.idempotency_key.as_deref())
        .collect();
    let since: Vec<i64> = requests
        .iter()
        .map(|r| millis(r.event.created_at).saturating_sub(window_ms))
        .collect();
    let rows = query(
        tx,
        "SELECT (SELECT event_id FROM ( \
           SELECT 1 AS rank, event_id FROM events WHERE event_id = t.id \
           UNION ALL SELECT 2, event_id FROM events WHERE resource_uid = t.uid \
           UNION ALL (SELECT 3, event_id FROM events WHERE namespace = t.ns \
             AND idempotency_key = t.key AND created_at >= t.since ORDER BY created_at DESC LIMIT 1) \
         ) found ORDER BY rank LIMIT 1) \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) \
           WITH ORDINALITY AS t(id, uid, ns, key, since, ord) ORDER BY t.ord",
        &[&ids, &uids, &namespaces, &keys, &since],
        "look up duplicate events",
    )
    .await?;
    if rows.len() != requests.len() {
        return Err(StoreError::Commit(format!(
            "duplicate lookup answered {} of {} events",
            rows.len(),
            requests.len()
        )));
    }
    rows.iter().map(|row| get(row, 0)).collect()
}

/// The original deliveries of each of `events`, by event, in id order.
async fn deliveries_of(
    tx: &Transaction<'_>,
    events: &[&str],
) -> Result<HashMap<String, Vec<DeliveryId>>> {
    let mut found: HashMap<String, Vec<DeliveryId>> = HashMap::new();
    if events.is_empty() {
        return Ok(found);
    }
    let rows = query(
        tx,
        "SELECT event_id, id FROM deliveries WHERE event_id = ANY($1) AND replay_id = '' \
         ORDER BY id",
        &[&events],
        "read deliveries of events",
    )
    .await?;
    for row in &rows {
        let event: String = get(row, 0)?;
        found
            .entry(event)
            .or_default()
            .push(DeliveryId(get(row, 1)?));
    }
    Ok(found)
}

async fn insert_events(tx: &Transaction<'_>, requests: &[&EnqueueRequest]) -> Result<()> {
    if requests.is_empty() {
        return Ok(());
    }
    let events = requests.iter().map(|r| &r.event);
    let ids: Vec<&str> = events.clone().map(|e| e.event_id.as_str()).collect();
    let namespaces: Vec<&str> = events.clone().map(|e| e.namespace.as_str()).collect();
    let types: Vec<&str> = events.clone().map(|e| e.event_type.as_str()).collect();
    let data: Vec<&[u8]> = events.clone().map(|e| &e.data[..]).collect();
    let created: Vec<i64> = events.clone().map(|e| millis(e.created_at)).collect();
    let (names, uids): (Vec<Option<&str>>, Vec<Option<&str>>) =
        events.clone().map(|e| resource_columns(&e.source)).unzip();
    let keys: Vec<Option<&str>> = events
        .clone()
        .map(|e| e.idempotency_key.as_deref())
        .collect();
    let traces: Vec<Option<&str>> = events.map(|e| e.trace_parent.as_deref()).collect();
    execute(
        tx,
        "INSERT INTO events (event_id, namespace, event_type, data, created_at, resource_name, \
         resource_uid, idempotency_key, traceparent) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[], \
           $6::text[], $7::text[], $8::text[], $9::text[])",
        &[
            &ids,
            &namespaces,
            &types,
            &data,
            &created,
            &names,
            &uids,
            &keys,
            &traces,
        ],
        "insert events",
    )
    .await?;
    Ok(())
}

/// Deliveries to insert, a column each, a row per delivery (in the order they are pushed).
#[derive(Default)]
pub(super) struct NewDeliveries<'a> {
    event_ids: Vec<&'a str>,
    namespaces: Vec<&'a str>,
    names: Vec<&'a str>,
    hashes: Vec<i64>,
    lanes: Vec<Option<&'a str>>,
    /// The owner and lease expiry of a delivery to create claimed ([`ClaimOnInsert`]).
    owners: Vec<Option<&'a str>>,
    expires: Vec<Option<i64>>,
    /// When it is due, and its creation time: its event's creation, or a replay's start.
    due: Vec<i64>,
}

impl<'a> NewDeliveries<'a> {
    pub(super) fn push(
        &mut self,
        event_id: &'a str,
        namespace: &'a str,
        name: &'a str,
        lane: Option<&'a str>,
        claim: Option<&'a ClaimOnInsert>,
        due_ms: i64,
    ) {
        self.event_ids.push(event_id);
        self.namespaces.push(namespace);
        self.names.push(name);
        self.hashes.push(i64::from(partition_hash(namespace, name)));
        self.lanes.push(lane);
        self.owners.push(claim.map(|c| c.owner.as_str()));
        self.expires.push(claim.map(|c| millis(c.lease_expires_at)));
        self.due.push(due_ms);
    }
}

/// Inserts `new`'s deliveries in one statement: Queued where it has a lane that must wait
/// ([`lanes::must_queue_sql`]), else Held where the endpoint is held, else InFlight under its
/// claim where it has one, else Pending. Returns their ids and states in `new`'s order, ids
/// ascending in that order (a lane's queue is ordered by id).
///
/// The caller holds the locks of the lanes given ([`lanes::Locks::lane`]), and no two rows share
/// a lane: the lane check reads the table as it was before the statement. No
/// `(event, endpoint, replay)` exists yet: an enqueue's event is new (a duplicate was answered
/// before, under its identity locks) and a replay's id runs once, each event once; a plain
/// insert skips the speculative insertion `ON CONFLICT` costs every row.
pub(super) async fn insert_deliveries(
    tx: &Transaction<'_>,
    new: &NewDeliveries<'_>,
    replay_id: &str,
) -> Result<Vec<(DeliveryId, DeliveryState)>> {
    if new.names.is_empty() {
        return Ok(Vec::new());
    }
    // `OFFSET 0` keeps the subquery from being pulled up into the outer SELECT: pulled up, its
    // `state` (lane check and `held_endpoints` probe) was evaluated for each of its three uses,
    // and ingest on PostgreSQL fell to 0.66× (docs/benchmarks.md, issue 19, session 16).
    let rows = query(
        tx,
        &format!(
            "INSERT INTO deliveries (event_id, namespace, endpoint, partition_hash, replay_id, state, \
             next_attempt_at, created_at, lane, lease_owner, lease_expires_at) \
             SELECT s.event_id, s.ns, s.name, s.hash, $1::text, s.state, s.due, s.due, s.lane, \
               CASE WHEN s.state = 'in_flight' THEN s.owner END, \
               CASE WHEN s.state = 'in_flight' THEN s.expires END \
             FROM (SELECT t.event_id, t.ns, t.name, t.hash, t.lane, t.owner, t.expires, t.due, t.ord, \
               CASE WHEN (CASE WHEN t.lane IS NULL THEN false ELSE {} END) THEN 'queued' \
               WHEN EXISTS (SELECT 1 FROM held_endpoints h WHERE h.namespace = t.ns \
                 AND h.endpoint = t.name) THEN 'held' \
               WHEN t.owner IS NOT NULL THEN 'in_flight' ELSE 'pending' END AS state \
             FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], \
               $7::text[], $8::bigint[], $9::bigint[]) \
               WITH ORDINALITY AS t(event_id, ns, name, hash, lane, owner, expires, due, ord) \
             OFFSET 0) s \
             ORDER BY s.ord \
             RETURNING event_id, endpoint, id, state",
            lanes::must_queue_sql("t.ns", "t.name", "t.lane"),
        ),
        &[
            &replay_id,
            &new.event_ids,
            &new.namespaces,
            &new.names,
            &new.hashes,
            &new.lanes,
            &new.owners,
            &new.expires,
            &new.due,
        ],
        "insert deliveries",
    )
    .await?;
    let mut ids: HashMap<(String, String), (i64, String)> = HashMap::with_capacity(rows.len());
    for row in &rows {
        ids.insert((get(row, 0)?, get(row, 1)?), (get(row, 2)?, get(row, 3)?));
    }
    new.event_ids
        .iter()
        .zip(&new.names)
        .map(|(event, name)| {
            let (id, state) = ids
                .get(&((*event).to_owned(), (*name).to_owned()))
                .ok_or_else(|| StoreError::Commit(format!("no delivery id for endpoint {name}")))?;
            let state = DeliveryState::parse(state)
                .ok_or_else(|| StoreError::Commit(format!("unknown delivery state {state:?}")))?;
            Ok((DeliveryId(*id), state))
        })
        .collect()
}
