//! Recording attempt results, set-based: a batch's deliveries are read and locked by one
//! statement, its attempts logged by one and its deliveries moved by one, and its endpoints'
//! counters and minute rollups written by one each, whatever the batch's size; the four writes
//! go in one flight, so a batch is two round trips after its lane locks. (One statement per
//! attempt made three round trips and three statement executions for each, the most PostgreSQL
//! did per delivery after the claims: docs/benchmarks.md, issue 19, session 19.)
//!
//! What each result does is decided in Rust ([`plan`], from what the read found), the same for a
//! batch and for a single result in a savepoint of its own.
use std::collections::{HashMap, HashSet};

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::lanes::{self, Lane};
use super::rows::get;
use super::writes::query;
use crate::store::common::{
    attempt_outcome, counter_bump, millis, transition, CounterBump, CounterTally, Recorded,
};
use crate::store::minutes::by_minute;
use crate::store::{
    AttemptResult, DeliveryId, DeliveryState, EndpointRef, NextStep, RecordOutcome, Result,
    StoreError,
};

/// A delivery being recorded, as the read found (and locked) it.
#[derive(Clone, Debug)]
pub struct Found {
    pub state: String,
    pub lease_owner: Option<String>,
    pub endpoint: EndpointRef,
    pub event_id: String,
    pub event_type: String,
    /// Its endpoint is held.
    pub held: bool,
    pub lane: Option<String>,
    pub attempts: i32,
}

/// The attempts a batch logs, column by column (the `unnest` of one insert).
#[derive(Debug, Default)]
pub struct AttemptRows<'a> {
    delivery_id: Vec<i64>,
    event_id: Vec<String>,
    event_type: Vec<String>,
    namespace: Vec<String>,
    endpoint: Vec<String>,
    attempt: Vec<i32>,
    at: Vec<i64>,
    status_code: Vec<Option<i32>>,
    latency_ms: Vec<Option<i64>>,
    error: Vec<Option<&'a str>>,
    response_snippet: Vec<Option<&'a str>>,
    success: Vec<bool>,
    outcome: Vec<&'static str>,
}

/// The deliveries a batch moves, column by column (the `unnest` of one update).
#[derive(Debug, Default)]
pub struct Moves<'a> {
    id: Vec<i64>,
    state: Vec<&'static str>,
    next_attempt_at: Vec<Option<i64>>,
    at: Vec<i64>,
    status_code: Vec<Option<i32>>,
    error: Vec<Option<&'a str>>,
    delivered_at: Vec<Option<i64>>,
    dead_letter_reason: Vec<Option<&'a str>>,
    finished_at: Vec<Option<i64>>,
}

/// A laned delivery that finished: its lane moves on, after its endpoint is paused if it
/// dead-lettered with `pause_on_dead_letter`.
#[derive(Debug)]
pub struct LaneStep<'a> {
    lane: Lane,
    at: i64,
    pause: Option<(DeliveryId, String, &'a str)>,
}

/// Everything a batch writes, in the order its results came.
#[derive(Debug, Default)]
pub struct Writes<'a> {
    pub attempts: AttemptRows<'a>,
    pub moves: Moves<'a>,
    pub lanes: Vec<LaneStep<'a>>,
}

/// Decides what `result` does to its delivery as `found` (None: no such delivery), adds the rows
/// it writes to `writes` and returns its outcome with what it adds to its endpoint's counters.
/// Pure.
pub fn plan<'a>(
    found: Option<&Found>,
    result: &'a AttemptResult,
    writes: &mut Writes<'a>,
) -> Recorded {
    let Some(found) = found else {
        return (RecordOutcome::NotFound, None);
    };
    let record = &result.record;
    if i64::from(found.attempts) >= i64::from(record.attempt) {
        return (RecordOutcome::AlreadyRecorded, None);
    }
    let at = millis(record.at);
    let success = matches!(result.next, NextStep::Delivered);
    let holds_lease = found.state == DeliveryState::InFlight.as_str()
        && found.lease_owner.as_deref() == Some(&result.owner);
    let outcome = attempt_outcome(&result.next, holds_lease && found.held);
    let status_code = record.status_code.map(i32::from);
    let rows = &mut writes.attempts;
    rows.delivery_id.push(result.delivery_id.0);
    rows.event_id.push(found.event_id.clone());
    rows.event_type.push(found.event_type.clone());
    rows.namespace.push(found.endpoint.namespace.clone());
    rows.endpoint.push(found.endpoint.name.clone());
    rows.attempt
        .push(i32::try_from(record.attempt).unwrap_or(i32::MAX));
    rows.at.push(at);
    rows.status_code.push(status_code);
    rows.latency_ms.push(
        record
            .latency_ms
            .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)),
    );
    rows.error.push(record.error.as_deref());
    rows.response_snippet
        .push(record.response_snippet.as_deref());
    rows.success.push(success);
    rows.outcome.push(outcome.as_str());
    let bump = Some((
        found.endpoint.clone(),
        counter_bump(result, outcome, success),
    ));
    if !holds_lease {
        return (RecordOutcome::LeaseLost, bump);
    }
    let next = transition(result, outcome);
    let moves = &mut writes.moves;
    moves.id.push(result.delivery_id.0);
    moves.state.push(next.state.as_str());
    moves.next_attempt_at.push(next.next_attempt_at);
    moves.at.push(at);
    moves.status_code.push(status_code);
    moves.error.push(record.error.as_deref());
    moves.delivered_at.push(next.delivered_at);
    moves.dead_letter_reason.push(next.dead_letter_reason);
    moves.finished_at.push(next.finished_at);
    if let Some(lane) = found.lane.as_ref().filter(|_| next.state.is_finished()) {
        let pause = match (&result.next, result.pause_on_dead_letter) {
            (NextStep::DeadLetter { reason }, true) => {
                Some((result.delivery_id, found.event_id.clone(), reason.as_str()))
            }
            _ => None,
        };
        writes.lanes.push(LaneStep {
            lane: Lane {
                namespace: found.endpoint.namespace.clone(),
                endpoint: found.endpoint.name.clone(),
                lane: lane.clone(),
            },
            at,
            pause,
        });
    }
    (RecordOutcome::Applied, bump)
}

/// Reads and locks the deliveries `ids` (in id order, so two batches never deadlock on them),
/// with what recording needs of their events and endpoints.
async fn read_locked(tx: &Transaction<'_>, ids: &[i64]) -> Result<HashMap<i64, Found>> {
    let rows = query(
        tx,
        "SELECT d.id, d.state, d.lease_owner, d.namespace, d.endpoint, d.event_id, e.event_type, \
         EXISTS (SELECT 1 FROM held_endpoints h WHERE h.namespace = d.namespace AND h.endpoint = d.endpoint), \
         d.lane, d.attempts FROM deliveries d JOIN events e ON e.event_id = d.event_id \
         WHERE d.id = ANY($1) ORDER BY d.id FOR UPDATE OF d",
        &[&ids],
        "read deliveries",
    )
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                get(row, 0)?,
                Found {
                    state: get(row, 1)?,
                    lease_owner: get(row, 2)?,
                    endpoint: EndpointRef {
                        namespace: get(row, 3)?,
                        name: get(row, 4)?,
                    },
                    event_id: get(row, 5)?,
                    event_type: get(row, 6)?,
                    held: get(row, 7)?,
                    lane: get(row, 8)?,
                    attempts: get(row, 9)?,
                },
            ))
        })
        .collect()
}

const LOG_ATTEMPTS: &str =
    "INSERT INTO attempts (delivery_id, event_id, event_type, namespace, endpoint, attempt, \
     at, status_code, latency_ms, error, response_snippet, success, outcome) \
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::integer[], $7::bigint[], $8::integer[], $9::bigint[], $10::text[], $11::text[], \
     $12::boolean[], $13::text[])";

const MOVE_DELIVERIES: &str =
    "UPDATE deliveries d SET state = v.state, attempts = d.attempts + 1, \
     next_attempt_at = v.next_attempt_at, lease_owner = NULL, lease_expires_at = NULL, \
     last_attempt_at = v.at, last_status_code = v.status_code, last_error = v.error, \
     delivered_at = v.delivered_at, dead_letter_reason = v.reason, finished_at = v.finished_at \
     FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::integer[], \
     $6::text[], $7::bigint[], $8::text[], $9::bigint[]) \
     AS v(id, state, next_attempt_at, at, status_code, error, delivered_at, reason, finished_at) \
     WHERE d.id = v.id";

/// Each endpoint's attempts added to its totals; "last" values move only forward in time, and a
/// `NULL` (a filtered attempt has no last attempt, status, success or failure) leaves one as is.
const ADD_TO_COUNTERS: &str =
    "INSERT INTO endpoint_counters AS c (namespace, endpoint, delivered, failed_attempts, \
     dead_lettered, retries, filtered, last_attempt_at, last_success_at, last_failure_at, \
     last_status_code, last_error) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], \
     $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], \
     $10::bigint[], $11::integer[], $12::text[]) \
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
       last_failure_at = GREATEST(c.last_failure_at, EXCLUDED.last_failure_at)";

/// The attempts added to their minutes' rollups ([`crate::store::minutes`]), counts and latency
/// counts summed in the upsert (replicas may add to the same minute at once). Only the batch's
/// few latencies are walked, each looked up in the stored map, which `||` then overwrites them
/// in: unpacking and regrouping the whole stored map (hundreds of latencies a minute) made this
/// the record path's costliest statement.
const ADD_TO_MINUTES: &str =
    "INSERT INTO attempt_minutes AS m (namespace, endpoint, minute, attempts, successes, \
     available, latencies) SELECT t.namespace, t.endpoint, t.minute, t.attempts, t.successes, \
     t.available, t.latencies::jsonb FROM unnest($1::text[], $2::text[], $3::bigint[], \
     $4::bigint[], $5::bigint[], $6::bigint[], $7::text[]) \
     AS t(namespace, endpoint, minute, attempts, successes, available, latencies) \
     ON CONFLICT (namespace, endpoint, minute) DO UPDATE SET \
       attempts = m.attempts + EXCLUDED.attempts, \
       successes = m.successes + EXCLUDED.successes, \
       available = m.available + EXCLUDED.available, \
       latencies = m.latencies || COALESCE((SELECT jsonb_object_agg(e.ms, \
         COALESCE((m.latencies ->> e.ms)::bigint, 0) + e.n::bigint) \
         FROM jsonb_each_text(EXCLUDED.latencies) AS e(ms, n)), '{}')";

/// A statement of a flight: its SQL, parameters and what it does (for errors).
type Statement<'p> = (&'static str, Vec<&'p (dyn ToSql + Sync)>, &'static str);

/// Runs `statements` in one flight: prepared first (cached per connection, so usually no round
/// trip), then sent together and answered together, reaching the server in this order.
async fn fly(tx: &Transaction<'_>, statements: &[Statement<'_>]) -> Result<()> {
    let mut prepared = Vec::with_capacity(statements.len());
    for (sql, _, context) in statements {
        prepared.push(tx.prepare_cached(sql).await.map_err(super::db(context))?);
    }
    // Each execution is sent when first polled, and `try_join_all` polls them in order.
    futures::future::try_join_all(prepared.iter().zip(statements).map(
        |(statement, (_, params, context))| async move {
            tx.execute(statement, params)
                .await
                .map_err(super::db(context))
        },
    ))
    .await?;
    Ok(())
}

/// Writes what [`plan`] decided and what the recorded attempts add to their endpoints' counters
/// and minute rollups, in one flight of at most four statements (one each, whatever the batch's
/// size), then each finished lane's step. `bumps` name each endpoint once, in endpoint order
/// ([`crate::store::common::CounterTally::into_bumps`]): rows are locked in that order, so two
/// replicas' batches cannot deadlock on them.
pub async fn write_all(
    tx: &Transaction<'_>,
    writes: &Writes<'_>,
    bumps: &[(EndpointRef, CounterBump)],
) -> Result<()> {
    let (a, m) = (&writes.attempts, &writes.moves);
    let counters = CounterColumns::of(bumps);
    let minutes = MinuteRows::of(bumps);
    let mut flight: Vec<Statement<'_>> = Vec::with_capacity(4);
    if !a.delivery_id.is_empty() {
        flight.push((
            LOG_ATTEMPTS,
            vec![
                &a.delivery_id,
                &a.event_id,
                &a.event_type,
                &a.namespace,
                &a.endpoint,
                &a.attempt,
                &a.at,
                &a.status_code,
                &a.latency_ms,
                &a.error,
                &a.response_snippet,
                &a.success,
                &a.outcome,
            ],
            "log attempts",
        ));
    }
    if !m.id.is_empty() {
        flight.push((
            MOVE_DELIVERIES,
            vec![
                &m.id,
                &m.state,
                &m.next_attempt_at,
                &m.at,
                &m.status_code,
                &m.error,
                &m.delivered_at,
                &m.dead_letter_reason,
                &m.finished_at,
            ],
            "move deliveries",
        ));
    }
    if !bumps.is_empty() {
        flight.push((
            ADD_TO_COUNTERS,
            counters.params(),
            "update endpoint counters",
        ));
    }
    if !minutes.minute.is_empty() {
        flight.push((ADD_TO_MINUTES, minutes.params(), "add to minute rollups"));
    }
    fly(tx, &flight).await?;
    for step in &writes.lanes {
        if let Some((delivery_id, event_id, reason)) = &step.pause {
            let endpoint = EndpointRef {
                namespace: step.lane.namespace.clone(),
                name: step.lane.endpoint.clone(),
            };
            lanes::pause(tx, &endpoint, *delivery_id, event_id, reason, step.at).await?;
        }
        lanes::advance(tx, std::slice::from_ref(&step.lane), step.at).await?;
    }
    Ok(())
}

/// Logs each attempt of `results` and moves its delivery if the caller still holds its lease
/// (fencing: the deliveries are locked first, so a concurrent claim or recovery cannot move one
/// in between). The caller holds the lane locks of those that may finish
/// ([`lock_finishing_lanes`]) and writes the counters returned ([`write_all`], or [`record_all`] does both).
///
/// A batch naming one delivery twice is recorded one result after the other, each seeing the
/// one before.
pub async fn record_locked(
    tx: &Transaction<'_>,
    results: &[AttemptResult],
) -> Result<Vec<Recorded>> {
    if names_a_delivery_twice(results) {
        let mut recorded = Vec::with_capacity(results.len());
        for result in results {
            recorded.extend(Box::pin(record_locked(tx, std::slice::from_ref(result))).await?);
        }
        return Ok(recorded);
    }
    let (recorded, writes) = read_and_plan(tx, results).await?;
    write_all(tx, &writes, &[]).await?;
    Ok(recorded)
}

/// Whether `results` name one delivery more than once (then each must see the one before).
fn names_a_delivery_twice(results: &[AttemptResult]) -> bool {
    let mut seen = HashSet::with_capacity(results.len());
    !results.iter().all(|r| seen.insert(r.delivery_id))
}

/// Reads and locks the deliveries of `results` (each named once), and plans what each result
/// does to its delivery: the outcomes, and the rows to write.
async fn read_and_plan<'a>(
    tx: &Transaction<'_>,
    results: &'a [AttemptResult],
) -> Result<(Vec<Recorded>, Writes<'a>)> {
    let ids: Vec<i64> = results.iter().map(|r| r.delivery_id.0).collect();
    let found = read_locked(tx, &ids).await?;
    let mut writes = Writes::default();
    let recorded = results
        .iter()
        .map(|result| plan(found.get(&result.delivery_id.0), result, &mut writes))
        .collect();
    Ok((recorded, writes))
}

/// Records `results` and what they add to their endpoints' counters, each answered as
/// [`record_locked`] would. The caller holds their lanes' locks ([`lock_finishing_lanes`]).
/// Unless the batch names a delivery twice, that is two round trips: the read, then one flight
/// of every write ([`write_all`]).
pub async fn record_all(
    tx: &Transaction<'_>,
    results: &[AttemptResult],
) -> Result<Vec<RecordOutcome>> {
    let (recorded, writes) = if names_a_delivery_twice(results) {
        // Written result by result; only the counters are left.
        (record_locked(tx, results).await?, Writes::default())
    } else {
        read_and_plan(tx, results).await?
    };
    write_counted(tx, recorded.into_iter().map(Ok), &writes)
        .await?
        .into_iter()
        .collect()
}

/// Writes `writes` ([`write_all`]) with what the recorded attempts add to their endpoints'
/// counters, folded into one bump per endpoint, in endpoint order; returns their outcomes.
pub async fn write_counted(
    tx: &Transaction<'_>,
    recorded: impl IntoIterator<Item = Result<Recorded>>,
    writes: &Writes<'_>,
) -> Result<Vec<Result<RecordOutcome>>> {
    let mut counters = CounterTally::default();
    let outcomes = recorded
        .into_iter()
        .map(|recorded| recorded.map(|recorded| counters.take(recorded)))
        .collect();
    write_all(tx, writes, &counters.into_bumps()).await?;
    Ok(outcomes)
}

/// The one answer of a job that recorded one attempt.
pub fn the_only<T>(mut answers: Vec<T>) -> Result<T> {
    match (answers.pop(), answers.is_empty()) {
        (Some(answer), true) => Ok(answer),
        _ => Err(StoreError::Backend {
            context: "record an attempt",
            source: "not one outcome for the attempt".into(),
        }),
    }
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

/// [`record_locked`] for one result in a savepoint of its own: the inner result is the
/// attempt's (rolled back when it failed), the outer one the savepoint's.
pub async fn record_in_savepoint(
    tx: &mut Transaction<'_>,
    result: &AttemptResult,
) -> Result<Result<Recorded>> {
    let savepoint = tx
        .savepoint("record")
        .await
        .map_err(super::db("savepoint"))?;
    let recorded = record_locked(&savepoint, std::slice::from_ref(result))
        .await
        .and_then(the_only);
    if recorded.is_ok() {
        savepoint
            .commit()
            .await
            .map_err(super::db("release savepoint"))?;
    } else {
        savepoint
            .rollback()
            .await
            .map_err(super::db("roll back to savepoint"))?;
    }
    Ok(recorded)
}

/// The counter bumps of a batch, column by column (the `unnest` of [`ADD_TO_COUNTERS`]).
struct CounterColumns<'a> {
    namespace: Vec<&'a str>,
    endpoint: Vec<&'a str>,
    delivered: Vec<i64>,
    failed_attempts: Vec<i64>,
    dead_lettered: Vec<i64>,
    retries: Vec<i64>,
    filtered: Vec<i64>,
    last_attempt_at: Vec<Option<i64>>,
    last_success_at: Vec<Option<i64>>,
    last_failure_at: Vec<Option<i64>>,
    last_status_code: Vec<Option<i32>>,
    last_error: Vec<Option<&'a str>>,
}

impl<'a> CounterColumns<'a> {
    fn of(bumps: &'a [(EndpointRef, CounterBump)]) -> Self {
        let column = |f: fn(&CounterBump) -> i64| bumps.iter().map(|(_, b)| f(b)).collect();
        let at = |f: fn(&CounterBump) -> Option<i64>| bumps.iter().map(|(_, b)| f(b)).collect();
        Self {
            namespace: bumps.iter().map(|(e, _)| e.namespace.as_str()).collect(),
            endpoint: bumps.iter().map(|(e, _)| e.name.as_str()).collect(),
            delivered: column(|b| b.delivered),
            failed_attempts: column(|b| b.failed_attempts),
            dead_lettered: column(|b| b.dead_lettered),
            retries: column(|b| b.retries),
            filtered: column(|b| b.filtered),
            last_attempt_at: at(|b| b.last_attempt_at),
            last_success_at: at(|b| b.last_success_at),
            last_failure_at: at(|b| b.last_failure_at),
            last_status_code: bumps
                .iter()
                .map(|(_, b)| b.last_status_code.map(i32::from))
                .collect(),
            last_error: bumps.iter().map(|(_, b)| b.last_error.as_deref()).collect(),
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.namespace,
            &self.endpoint,
            &self.delivered,
            &self.failed_attempts,
            &self.dead_lettered,
            &self.retries,
            &self.filtered,
            &self.last_attempt_at,
            &self.last_success_at,
            &self.last_failure_at,
            &self.last_status_code,
            &self.last_error,
        ]
    }
}

/// The minute rollups a batch adds to, column by column (the `unnest` of [`ADD_TO_MINUTES`]):
/// each (endpoint, minute) once, endpoints in order.
#[derive(Default)]
struct MinuteRows<'a> {
    namespace: Vec<&'a str>,
    endpoint: Vec<&'a str>,
    minute: Vec<i64>,
    attempts: Vec<i64>,
    successes: Vec<i64>,
    available: Vec<i64>,
    latencies: Vec<String>,
}

impl<'a> MinuteRows<'a> {
    fn of(bumps: &'a [(EndpointRef, CounterBump)]) -> Self {
        let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut rows = Self::default();
        for (endpoint, bump) in bumps {
            for (minute, totals) in by_minute(&bump.samples) {
                rows.namespace.push(endpoint.namespace.as_str());
                rows.endpoint.push(endpoint.name.as_str());
                rows.minute.push(minute);
                rows.attempts.push(signed(totals.attempts));
                rows.successes.push(signed(totals.successes));
                rows.available.push(signed(totals.available));
                rows.latencies.push(totals.latencies_json());
            }
        }
        rows
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.namespace,
            &self.endpoint,
            &self.minute,
            &self.attempts,
            &self.successes,
            &self.available,
            &self.latencies,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AttemptRecord;
    use jiff::Timestamp;

    fn found(state: DeliveryState, owner: &str, lane: Option<&str>) -> Found {
        Found {
            state: state.as_str().to_owned(),
            lease_owner: Some(owner.to_owned()),
            endpoint: EndpointRef {
                namespace: "ns".into(),
                name: "crm".into(),
            },
            event_id: "evt_1".into(),
            event_type: "user.created".into(),
            held: false,
            lane: lane.map(str::to_owned),
            attempts: 0,
        }
    }

    fn result(next: NextStep, pause_on_dead_letter: bool) -> AttemptResult {
        AttemptResult {
            delivery_id: DeliveryId(7),
            owner: "w".into(),
            record: AttemptRecord {
                at: Timestamp::from_second(1_800_000_000).expect("in range"),
                attempt: 1,
                status_code: Some(500),
                latency_ms: Some(12),
                error: Some("HTTP 500".into()),
                response_snippet: None,
            },
            next,
            pause_on_dead_letter,
        }
    }

    #[test]
    fn a_lost_lease_logs_the_attempt_but_moves_nothing() {
        let mut writes = Writes::default();
        let result = result(NextStep::Delivered, false);
        let (outcome, bump) = plan(
            Some(&found(DeliveryState::InFlight, "other", None)),
            &result,
            &mut writes,
        );
        assert_eq!(outcome, RecordOutcome::LeaseLost);
        assert!(bump.is_some(), "the attempt was made: it counts");
        assert_eq!(writes.attempts.delivery_id, [7]);
        assert!(writes.moves.id.is_empty());
    }

    #[test]
    fn a_dead_letter_in_a_pausing_lane_pauses_then_moves_the_lane_on() {
        let mut writes = Writes::default();
        let result = result(
            NextStep::DeadLetter {
                reason: "gone".into(),
            },
            true,
        );
        let lane = found(DeliveryState::InFlight, "w", Some("user-1"));
        assert_eq!(
            plan(Some(&lane), &result, &mut writes).0,
            RecordOutcome::Applied
        );
        assert_eq!(writes.moves.state, ["dead_lettered"]);
        assert_eq!(writes.lanes.len(), 1);
        assert_eq!(writes.lanes[0].lane.lane, "user-1");
        assert!(matches!(
            writes.lanes[0].pause,
            Some((DeliveryId(7), _, "gone"))
        ));
    }

    #[test]
    fn a_retry_in_a_lane_keeps_the_lane_and_a_recorded_attempt_writes_nothing() {
        let mut writes = Writes::default();
        let retry = result(
            NextStep::Retry {
                at: Timestamp::from_second(1_800_000_060).expect("in range"),
            },
            true,
        );
        let lane = found(DeliveryState::InFlight, "w", Some("user-1"));
        assert_eq!(
            plan(Some(&lane), &retry, &mut writes).0,
            RecordOutcome::Applied
        );
        assert!(writes.lanes.is_empty());
        let recorded = Found {
            attempts: 1,
            ..lane
        };
        let mut none = Writes::default();
        assert_eq!(
            plan(Some(&recorded), &retry, &mut none),
            (RecordOutcome::AlreadyRecorded, None)
        );
        assert!(none.attempts.delivery_id.is_empty() && none.moves.id.is_empty());
        assert_eq!(plan(None, &retry, &mut none).0, RecordOutcome::NotFound);
    }
}
