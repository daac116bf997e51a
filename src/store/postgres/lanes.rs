//! Ordered delivery: lanes, their heads, endpoints paused after a dead letter, and the advisory
//! locks that keep lanes right with several replicas writing at once.
//!
//! A delivery with a lane is Queued while an earlier delivery of its lane is unfinished (or its
//! endpoint is paused), and is made Pending by [`advance`] in the transaction that finishes the
//! one before it. The claim path never sees a Queued delivery, so ordering costs it nothing.
//!
//! # Why locks
//! SQLite has one writer, so "look at the lane, then write" is atomic there. Here transactions run
//! at READ COMMITTED on several replicas, and check-then-write steps race:
//!
//! - **Enqueue vs finish.** An enqueue (any replica) sees the lane's head in flight and inserts its
//!   delivery Queued, while the head's owner finishes it and, not yet seeing that uncommitted row,
//!   promotes nothing: the new row would stay Queued forever.
//! - **Enqueue vs enqueue.** Two enqueues into an empty lane both see it empty: two heads.
//! - **Resume vs enqueue.** An enqueue sees the pause (the resume is not committed) and queues into
//!   a lane the resume does not see yet, so does not advance: stuck.
//! - **Resume vs finish.** A finish sees the pause and does not advance its lane, while the resume
//!   sees the lane's head still in flight and does not advance it either: stuck.
//!
//! # Which locks
//! Transaction-scoped advisory locks (held to commit), on two levels:
//!
//! - A step on some lanes of an endpoint takes the **endpoint lock shared** and each **lane lock**
//!   (`(namespace, endpoint, lane)`) exclusive: an enqueue or replay of a laned delivery, and a
//!   finish (`record_attempt` moving a laned delivery to Delivered, DeadLettered or Filtered).
//! - A step on every lane of an endpoint takes the **endpoint lock exclusive**, which stands for
//!   all its lanes: a resume, the startup repair, and an enqueue batch or replay with more than
//!   [`MAX_LANE_LOCKS`] lanes of one endpoint (so a transaction never holds thousands of locks:
//!   PostgreSQL keeps them in a bounded shared table).
//!
//! So any two steps on one lane conflict: both hold its lane lock, or one holds the endpoint
//! exclusively and the other holds it in some mode. Each step reads the lane (and the pause) in
//! statements that start after it has its locks. Under READ COMMITTED each statement takes a new
//! snapshot, and a transaction's commit is visible before its locks are released, so the later of
//! two conflicting steps sees all of the earlier one's writes: an enqueue after a finish sees the
//! head finished (and the successor it promoted); a finish after an enqueue sees the new Queued
//! row and promotes it; a resume lists the lanes to advance after every enqueue into them has
//! committed, and sees every finish on them done (or the finish, after the resume, sees no
//! pause). Every pair of steps on one lane is serial, so the lane never loses its head nor gets
//! two. Steps that do not conflict need no lock: a finish that pauses the endpoint and an
//! enqueue or finish on another lane that does not see the pause yet give the same result in the
//! other order (a pause makes nothing Pending and moves nothing back); a hold racing an advance
//! leaves a Pending delivery of a held endpoint, which the claim already skips.
//!
//! # Deadlocks
//! Every transaction takes its advisory locks before it waits for any row, in one statement
//! ([`take`], [`lock_lanes_of`]) and in one global order: event identities (only enqueues take
//! them), then endpoints, then lanes, each group sorted by hash. A replay takes its replay-id lock
//! (only replays take those) before that statement. A finish takes the locks of its delivery (of
//! the whole batch, for `record_attempts`) before it locks the delivery row. So no two
//! transactions wait for each other through these locks. A pause insert may wait for another
//! finish's uncommitted pause insert (same key); a resume deletes the pause only under the
//! endpoint's exclusive lock, so no finish of the endpoint runs then.
use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::Transaction;

use super::rows::{get, timestamp};
use super::writes::{execute, query, UNLESS_HELD};
use crate::store::{
    DeliveryId, EndpointPause, EndpointRef, EnqueueRequest, Result, ResumeAction, ResumeOutcome,
};

/// Lanes of one endpoint a transaction locks one by one at most; beyond, it locks the whole
/// endpoint (exclusive) instead.
pub const MAX_LANE_LOCKS: usize = 32;

/// One lane: `(namespace, endpoint, lane)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lane {
    pub namespace: String,
    pub endpoint: String,
    pub lane: String,
}

/// The advisory-lock key of a lane, as an SQL expression over three text expressions. Every lane
/// lock is computed by this one expression, so all agree.
fn lane_hash(namespace: &str, endpoint: &str, lane: &str) -> String {
    format!("hashtextextended('lane:' || {namespace} || '/' || {endpoint} || '/' || {lane}, 0)")
}

/// The advisory-lock key of an endpoint, as an SQL expression over two text expressions.
fn endpoint_hash(namespace: &str, endpoint: &str) -> String {
    format!("hashtextextended('endpoint:' || {namespace} || '/' || {endpoint}, 0)")
}

/// Takes the locks `keys` lists (a query of `(rank, shared, h)`), sorted by rank then hash.
fn lock_sorted(keys: &str) -> String {
    format!(
        "SELECT count(CASE WHEN s.shared THEN pg_advisory_xact_lock_shared(s.h) \
           ELSE pg_advisory_xact_lock(s.h) END) \
         FROM (SELECT DISTINCT u.rank, u.shared, u.h FROM ({keys}) u ORDER BY u.rank, u.h) s"
    )
}

/// Advisory locks to take at once, in the order every transaction uses (see the module doc).
#[derive(Debug, Default)]
pub struct Locks {
    /// Exclusive, on the text keys given (event identities: `id:…`, `uid:…`, `key:…`).
    identities: Vec<String>,
    /// Lanes to lock, by endpoint (the endpoint shared, each lane exclusive).
    lanes: BTreeMap<EndpointRef, BTreeSet<String>>,
    /// Endpoints to lock whole (exclusive).
    endpoints: BTreeSet<EndpointRef>,
}

/// [`Locks`] as the arrays of the lock statement.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    identities: Vec<String>,
    endpoint_namespaces: Vec<String>,
    endpoint_names: Vec<String>,
    endpoint_shared: Vec<bool>,
    lane_namespaces: Vec<String>,
    lane_endpoints: Vec<String>,
    lane_names: Vec<String>,
}

impl Locks {
    pub fn identity(&mut self, key: String) {
        self.identities.push(key);
    }

    pub fn lane(&mut self, endpoint: &EndpointRef, lane: &str) {
        self.lanes
            .entry(endpoint.clone())
            .or_default()
            .insert(lane.to_owned());
    }

    /// Every lane of `endpoint` (its lock exclusive).
    pub fn endpoint(&mut self, endpoint: &EndpointRef) {
        self.endpoints.insert(endpoint.clone());
    }

    /// The lanes of `request`'s laned deliveries (only endpoints it delivers to count).
    pub fn add_enqueue(&mut self, request: &EnqueueRequest) {
        for (name, lane) in &request.lanes {
            if request.endpoints.iter().any(|e| e == name) {
                self.lane(
                    &EndpointRef::new(request.event.namespace.clone(), name.clone()),
                    lane,
                );
            }
        }
    }

    fn plan(&self) -> Plan {
        let mut plan = Plan {
            identities: self.identities.clone(),
            ..Plan::default()
        };
        let mut endpoint = |e: &EndpointRef, shared: bool| {
            plan.endpoint_namespaces.push(e.namespace.clone());
            plan.endpoint_names.push(e.name.clone());
            plan.endpoint_shared.push(shared);
        };
        let mut lanes = Vec::new();
        for e in &self.endpoints {
            endpoint(e, false);
        }
        for (e, names) in &self.lanes {
            if self.endpoints.contains(e) {
                continue;
            }
            if names.len() > MAX_LANE_LOCKS {
                endpoint(e, false);
            } else {
                endpoint(e, true);
                lanes.extend(names.iter().map(|lane| (e, lane)));
            }
        }
        for (e, lane) in lanes {
            plan.lane_namespaces.push(e.namespace.clone());
            plan.lane_endpoints.push(e.name.clone());
            plan.lane_names.push(lane.clone());
        }
        plan
    }
}

/// Takes `locks` (transaction-scoped: held to commit) in one statement: identities, then
/// endpoints, then lanes, each group sorted by hash, so two transactions never take two of them
/// in opposite orders.
pub async fn take(tx: &Transaction<'_>, locks: &Locks) -> Result<()> {
    let plan = locks.plan();
    if plan == Plan::default() {
        return Ok(());
    }
    query(
        tx,
        &lock_sorted(&format!(
            "SELECT 0 AS rank, false AS shared, hashtextextended(k, 0) AS h \
               FROM unnest($1::text[]) AS k \
             UNION ALL SELECT 1, e.shared, {} \
               FROM unnest($2::text[], $3::text[], $4::bool[]) AS e(ns, ep, shared) \
             UNION ALL SELECT 2, false, {} \
               FROM unnest($5::text[], $6::text[], $7::text[]) AS l(ns, ep, lane)",
            endpoint_hash("e.ns", "e.ep"),
            lane_hash("l.ns", "l.ep", "l.lane"),
        )),
        &[
            &plan.identities,
            &plan.endpoint_namespaces,
            &plan.endpoint_names,
            &plan.endpoint_shared,
            &plan.lane_namespaces,
            &plan.lane_endpoints,
            &plan.lane_names,
        ],
        "take advisory locks",
    )
    .await?;
    Ok(())
}

/// Takes the locks finishing the laned deliveries among `ids` needs (their endpoints shared,
/// their lanes; one statement, sorted). A finish calls it before it locks the delivery rows.
/// Lanes never change, so reading them unlocked is safe.
pub async fn lock_lanes_of(tx: &Transaction<'_>, ids: &[i64]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    query(
        tx,
        &lock_sorted(&format!(
            "SELECT 1 AS rank, true AS shared, {} AS h FROM deliveries d \
               WHERE d.id = ANY($1) AND d.lane IS NOT NULL \
             UNION ALL SELECT 2, false, {} FROM deliveries d \
               WHERE d.id = ANY($1) AND d.lane IS NOT NULL",
            endpoint_hash("d.namespace", "d.endpoint"),
            lane_hash("d.namespace", "d.endpoint", "d.lane"),
        )),
        &[&ids],
        "lock lanes of deliveries",
    )
    .await?;
    Ok(())
}

/// Whether the lane of a new delivery must queue, as an SQL condition: the endpoint is paused or
/// the lane has an unfinished delivery. `namespace`, `endpoint` and `lane` are SQL expressions;
/// the caller holds the lane's locks and checks that the lane is not NULL first.
pub fn must_queue_sql(namespace: &str, endpoint: &str, lane: &str) -> String {
    format!(
        "(EXISTS (SELECT 1 FROM paused_endpoints p WHERE p.namespace = {namespace} \
          AND p.endpoint = {endpoint}) \
         OR EXISTS (SELECT 1 FROM deliveries q WHERE q.namespace = {namespace} \
          AND q.endpoint = {endpoint} AND q.lane = {lane} \
          AND q.state IN ('pending', 'in_flight', 'held', 'queued')))"
    )
}

/// Makes the next Queued delivery of each lane due at `now_ms` (Held if its endpoint is held),
/// unless the lane still has an unfinished delivery or its endpoint is paused. The caller holds
/// the lanes' locks. Returns how many moved.
pub async fn advance(tx: &Transaction<'_>, lanes: &[Lane], now_ms: i64) -> Result<u64> {
    if lanes.is_empty() {
        return Ok(0);
    }
    let namespaces: Vec<&str> = lanes.iter().map(|l| l.namespace.as_str()).collect();
    let endpoints: Vec<&str> = lanes.iter().map(|l| l.endpoint.as_str()).collect();
    let names: Vec<&str> = lanes.iter().map(|l| l.lane.as_str()).collect();
    execute(
        tx,
        &format!(
            "UPDATE deliveries d SET state = {UNLESS_HELD}, next_attempt_at = $4 \
             WHERE d.state = 'queued' AND d.id IN ( \
               SELECT (SELECT q.id FROM deliveries q WHERE q.namespace = t.ns AND q.endpoint = t.ep \
                       AND q.lane = t.lane AND q.state = 'queued' ORDER BY q.id LIMIT 1) \
               FROM unnest($1::text[], $2::text[], $3::text[]) AS t(ns, ep, lane) \
               WHERE NOT EXISTS (SELECT 1 FROM paused_endpoints p \
                   WHERE p.namespace = t.ns AND p.endpoint = t.ep) \
                 AND NOT EXISTS (SELECT 1 FROM deliveries a WHERE a.namespace = t.ns \
                   AND a.endpoint = t.ep AND a.lane = t.lane \
                   AND a.state IN ('pending', 'in_flight', 'held')))"
        ),
        &[&namespaces, &endpoints, &names, &now_ms],
        "advance lanes",
    )
    .await
}

/// The lanes with a Queued delivery among `endpoints`.
async fn queued_lanes(tx: &Transaction<'_>, endpoints: &[EndpointRef]) -> Result<Vec<Lane>> {
    let namespaces: Vec<&str> = endpoints.iter().map(|e| e.namespace.as_str()).collect();
    let names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
    let rows = query(
        tx,
        "SELECT DISTINCT d.namespace, d.endpoint, d.lane FROM deliveries d \
         JOIN unnest($1::text[], $2::text[]) AS e(ns, ep) \
           ON d.namespace = e.ns AND d.endpoint = e.ep \
         WHERE d.lane IS NOT NULL AND d.state = 'queued'",
        &[&namespaces, &names],
        "list queued lanes",
    )
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Lane {
                namespace: get(row, 0)?,
                endpoint: get(row, 1)?,
                lane: get(row, 2)?,
            })
        })
        .collect()
}

/// One step of the startup repair: advances every lane of the next `limit` endpoints (after
/// `after`, in name order) that have a Queued delivery, under their exclusive locks. Returns the
/// last endpoint done, or `None` when there is no more. The caller commits each step on its own,
/// so no transaction holds more than `limit` locks.
pub async fn repair(
    tx: &Transaction<'_>,
    after: Option<&EndpointRef>,
    limit: usize,
    now_ms: i64,
) -> Result<Option<EndpointRef>> {
    let limit_sql = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
    let rows = query(
        tx,
        "SELECT DISTINCT namespace, endpoint FROM deliveries \
         WHERE lane IS NOT NULL AND state = 'queued' \
         AND ($1::text IS NULL OR (namespace, endpoint) > ($1, $2)) \
         ORDER BY namespace, endpoint LIMIT $3",
        &[
            &after.map(|e| e.namespace.as_str()),
            &after.map(|e| e.name.as_str()),
            &limit_sql,
        ],
        "list endpoints with queued lanes",
    )
    .await?;
    let endpoints = rows
        .iter()
        .map(|row| {
            Ok(EndpointRef::new(
                get::<String>(row, 0)?,
                get::<String>(row, 1)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    if endpoints.is_empty() {
        return Ok(None);
    }
    let mut locks = Locks::default();
    for endpoint in &endpoints {
        locks.endpoint(endpoint);
    }
    take(tx, &locks).await?;
    // Listed again under the locks: complete for these endpoints.
    advance(tx, &queued_lanes(tx, &endpoints).await?, now_ms).await?;
    Ok(match endpoints.last() {
        Some(last) if endpoints.len() >= limit.max(1) => Some(last.clone()),
        _ => None,
    })
}

/// Pauses an endpoint after the dead letter of `delivery_id` (the first pause is kept).
pub async fn pause(
    tx: &Transaction<'_>,
    endpoint: &EndpointRef,
    delivery_id: DeliveryId,
    event_id: &str,
    reason: &str,
    now_ms: i64,
) -> Result<()> {
    execute(
        tx,
        "INSERT INTO paused_endpoints (namespace, endpoint, since, delivery_id, event_id, reason) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        &[
            &endpoint.namespace,
            &endpoint.name,
            &now_ms,
            &delivery_id.0,
            &event_id,
            &reason,
        ],
        "pause endpoint",
    )
    .await?;
    Ok(())
}

/// The pause of an endpoint, if it is paused.
pub async fn pause_of(
    tx: &Transaction<'_>,
    endpoint: &EndpointRef,
) -> Result<Option<EndpointPause>> {
    let rows = query(
        tx,
        "SELECT since, delivery_id, event_id, reason FROM paused_endpoints \
         WHERE namespace = $1 AND endpoint = $2",
        &[&endpoint.namespace, &endpoint.name],
        "read endpoint pause",
    )
    .await?;
    rows.first()
        .map(|row| {
            Ok(EndpointPause {
                since: timestamp(get(row, 0)?)?,
                delivery_id: DeliveryId(get(row, 1)?),
                event_id: get(row, 2)?,
                reason: get(row, 3)?,
            })
        })
        .transpose()
}

/// Resumes an endpoint paused by `event_id`'s dead letter: skips or retries it, then advances
/// every lane. It holds the endpoint's lock exclusively (all its lanes: see the module doc)
/// before it reads anything.
pub async fn resume(
    tx: &Transaction<'_>,
    endpoint: &EndpointRef,
    event_id: &str,
    action: ResumeAction,
    now_ms: i64,
) -> Result<ResumeOutcome> {
    let mut locks = Locks::default();
    locks.endpoint(endpoint);
    take(tx, &locks).await?;
    let Some(pause) = pause_of(tx, endpoint).await? else {
        return Ok(ResumeOutcome::NotPaused);
    };
    if pause.event_id != event_id {
        return Ok(ResumeOutcome::OtherEvent(pause.event_id));
    }
    execute(
        tx,
        "DELETE FROM paused_endpoints WHERE namespace = $1 AND endpoint = $2",
        &[&endpoint.namespace, &endpoint.name],
        "resume endpoint",
    )
    .await?;
    if action == ResumeAction::Retry {
        execute(
            tx,
            &format!(
                "UPDATE deliveries d SET state = {UNLESS_HELD}, attempts = 0, next_attempt_at = $2, \
                 dead_letter_reason = NULL, finished_at = NULL \
                 WHERE d.id = $1 AND d.state = 'dead_lettered'"
            ),
            &[&pause.delivery_id.0, &now_ms],
            "retry dead letter",
        )
        .await?;
    }
    let lanes = queued_lanes(tx, std::slice::from_ref(endpoint)).await?;
    advance(tx, &lanes, now_ms).await?;
    Ok(ResumeOutcome::Resumed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventSource, NewEvent};

    fn request(endpoints: &[&str], lanes: &[(&str, &str)]) -> EnqueueRequest {
        EnqueueRequest {
            event: NewEvent {
                event_id: "evt".into(),
                namespace: "ns".into(),
                event_type: "t".into(),
                data: Default::default(),
                created_at: jiff::Timestamp::UNIX_EPOCH,
                source: EventSource::Ingest,
                idempotency_key: None,
                trace_parent: None,
            },
            endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
            lanes: lanes
                .iter()
                .map(|(e, l)| ((*e).to_owned(), (*l).to_owned()))
                .collect(),
            claim: None,
        }
    }

    fn lanes_of(plan: &Plan) -> Vec<(&str, &str)> {
        plan.lane_endpoints
            .iter()
            .zip(&plan.lane_names)
            .map(|(e, l)| (e.as_str(), l.as_str()))
            .collect()
    }

    #[test]
    fn an_enqueue_locks_the_endpoints_shared_and_the_lanes_it_delivers_to() {
        let mut locks = Locks::default();
        locks.add_enqueue(&request(&["a", "b"], &[("a", "x"), ("c", "y")]));
        let plan = locks.plan();
        assert_eq!(plan.endpoint_names, ["a"]);
        assert_eq!(plan.endpoint_shared, [true]);
        assert_eq!(lanes_of(&plan), [("a", "x")]);
    }

    #[test]
    fn an_unordered_enqueue_takes_no_lane_lock() {
        let mut locks = Locks::default();
        locks.add_enqueue(&request(&["a", "b"], &[]));
        assert_eq!(locks.plan(), Plan::default());
    }

    #[test]
    fn a_whole_endpoint_lock_stands_for_its_lanes() {
        let mut locks = Locks::default();
        locks.lane(&EndpointRef::new("ns", "a"), "x");
        locks.lane(&EndpointRef::new("ns", "b"), "y");
        locks.endpoint(&EndpointRef::new("ns", "a"));
        let plan = locks.plan();
        assert_eq!(plan.endpoint_names, ["a", "b"]);
        assert_eq!(plan.endpoint_shared, [false, true]);
        assert_eq!(lanes_of(&plan), [("b", "y")]);
    }

    #[test]
    fn many_lanes_of_one_endpoint_lock_it_whole() {
        let mut locks = Locks::default();
        let a = EndpointRef::new("ns", "a");
        for i in 0..=MAX_LANE_LOCKS {
            locks.lane(&a, &format!("k{i}"));
        }
        for _ in 0..3 {
            locks.lane(&EndpointRef::new("ns", "b"), "same");
        }
        let plan = locks.plan();
        assert_eq!(plan.endpoint_names, ["a", "b"]);
        assert_eq!(plan.endpoint_shared, [false, true]);
        assert_eq!(lanes_of(&plan), [("b", "same")], "lanes once each");
    }

    #[test]
    fn lane_keys_are_one_expression() {
        // The lock by delivery ids and the lock by lane name hash the same text.
        assert_eq!(
            lane_hash("d.namespace", "d.endpoint", "d.lane"),
            "hashtextextended('lane:' || d.namespace || '/' || d.endpoint || '/' || d.lane, 0)"
        );
        assert_ne!(endpoint_hash("n", "e"), lane_hash("n", "e", "''"));
    }
}
