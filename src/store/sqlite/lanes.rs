//! Ordered delivery: lanes, their heads, and endpoints paused after a dead letter.
//!
//! A delivery with a lane is Queued while an earlier delivery of its lane is unfinished (or its
//! endpoint is paused), and is made Pending by [`advance`] in the transaction that finishes the
//! one before it. The claim path never sees a Queued delivery, so ordering costs it nothing.
use rusqlite::{params, Connection, OptionalExtension};

use super::rows::timestamp_at;
use super::writes::UNLESS_HELD;
use crate::store::{
    DeliveryId, EndpointPause, EndpointRef, Result, ResumeAction, ResumeOutcome, StoreError,
};

fn db(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    StoreError::backend(context)
}

/// Whether a new delivery in `lane` must queue: the lane has an unfinished delivery, or the
/// endpoint is paused.
pub fn must_queue(conn: &Connection, endpoint: &EndpointRef, lane: &str) -> Result<bool> {
    if is_paused(conn, endpoint)? {
        return Ok(true);
    }
    conn.prepare_cached(
        "SELECT 1 FROM deliveries WHERE namespace = ?1 AND endpoint = ?2 AND lane = ?3 \
         AND state IN ('pending', 'in_flight', 'held', 'queued') LIMIT 1",
    )
    .and_then(|mut s| s.exists(params![endpoint.namespace, endpoint.name, lane]))
    .map_err(db("look up lane"))
}

fn is_paused(conn: &Connection, endpoint: &EndpointRef) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM paused_endpoints WHERE namespace = ?1 AND endpoint = ?2")
        .and_then(|mut s| s.exists(params![endpoint.namespace, endpoint.name]))
        .map_err(db("look up paused endpoint"))
}

/// Makes the next Queued delivery of `lane` due now (Held if its endpoint is held), unless the
/// lane still has an unfinished delivery or the endpoint is paused. Returns whether one moved.
pub fn advance(conn: &Connection, endpoint: &EndpointRef, lane: &str, now_ms: i64) -> Result<bool> {
    if is_paused(conn, endpoint)? {
        return Ok(false);
    }
    let active = conn
        .prepare_cached(
            "SELECT 1 FROM deliveries WHERE namespace = ?1 AND endpoint = ?2 AND lane = ?3 \
             AND state IN ('pending', 'in_flight', 'held') LIMIT 1",
        )
        .and_then(|mut s| s.exists(params![endpoint.namespace, endpoint.name, lane]))
        .map_err(db("look up lane head"))?;
    if active {
        return Ok(false);
    }
    let moved = conn
        .prepare_cached(&format!(
            "UPDATE deliveries SET state = {UNLESS_HELD}, next_attempt_at = ?4 WHERE id = \
             (SELECT id FROM deliveries WHERE namespace = ?1 AND endpoint = ?2 AND lane = ?3 \
              AND state = 'queued' ORDER BY id LIMIT 1)"
        ))
        .and_then(|mut s| s.execute(params![endpoint.namespace, endpoint.name, lane, now_ms]))
        .map_err(db("advance lane"))?;
    Ok(moved > 0)
}

/// Advances every lane of `endpoint` (all endpoints when `None`) whose head is Queued. A repair
/// as much as a step: after a resume, and at startup.
pub fn advance_all(conn: &Connection, endpoint: Option<&EndpointRef>, now_ms: i64) -> Result<u64> {
    let lanes: Vec<(String, String, String)> = conn
        .prepare_cached(
            "SELECT DISTINCT namespace, endpoint, lane FROM deliveries \
             WHERE state = 'queued' AND (?1 IS NULL OR (namespace = ?1 AND endpoint = ?2))",
        )
        .and_then(|mut s| {
            s.query_map(
                params![endpoint.map(|e| &e.namespace), endpoint.map(|e| &e.name)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?
            .collect()
        })
        .map_err(db("list queued lanes"))?;
    let mut moved = 0;
    for (namespace, name, lane) in lanes {
        if advance(conn, &EndpointRef::new(namespace, name), &lane, now_ms)? {
            moved += 1;
        }
    }
    Ok(moved)
}

/// Pauses an endpoint after the dead letter of `delivery_id` (the first pause is kept).
pub fn pause(
    conn: &Connection,
    endpoint: &EndpointRef,
    delivery_id: DeliveryId,
    event_id: &str,
    reason: &str,
    now_ms: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO paused_endpoints (namespace, endpoint, since, delivery_id, event_id, reason) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
    )
    .and_then(|mut s| {
        s.execute(params![
            endpoint.namespace,
            endpoint.name,
            now_ms,
            delivery_id.0,
            event_id,
            reason
        ])
    })
    .map_err(db("pause endpoint"))?;
    Ok(())
}

/// The pause of an endpoint, if it is paused.
pub fn pause_of(conn: &Connection, endpoint: &EndpointRef) -> Result<Option<EndpointPause>> {
    conn.prepare_cached(
        "SELECT since, delivery_id, event_id, reason FROM paused_endpoints \
         WHERE namespace = ?1 AND endpoint = ?2",
    )
    .and_then(|mut s| {
        s.query_row(params![endpoint.namespace, endpoint.name], |r| {
            Ok(EndpointPause {
                since: timestamp_at(r, 0)?,
                delivery_id: DeliveryId(r.get(1)?),
                event_id: r.get(2)?,
                reason: r.get(3)?,
            })
        })
        .optional()
    })
    .map_err(db("read endpoint pause"))
}

/// Resumes an endpoint paused by `event_id`'s dead letter: skips or retries it, then advances
/// every lane.
pub fn resume(
    conn: &Connection,
    endpoint: &EndpointRef,
    event_id: &str,
    action: ResumeAction,
    now_ms: i64,
) -> Result<ResumeOutcome> {
    let Some(pause) = pause_of(conn, endpoint)? else {
        return Ok(ResumeOutcome::NotPaused);
    };
    if pause.event_id != event_id {
        return Ok(ResumeOutcome::OtherEvent(pause.event_id));
    }
    conn.execute(
        "DELETE FROM paused_endpoints WHERE namespace = ?1 AND endpoint = ?2",
        params![endpoint.namespace, endpoint.name],
    )
    .map_err(db("resume endpoint"))?;
    if action == ResumeAction::Retry {
        conn.execute(
            &format!(
                "UPDATE deliveries SET state = {UNLESS_HELD}, attempts = 0, next_attempt_at = ?2, \
                 dead_letter_reason = NULL, finished_at = NULL WHERE id = ?1 AND state = 'dead_lettered'"
            ),
            params![pause.delivery_id.0, now_ms],
        )
        .map_err(db("retry dead letter"))?;
    }
    advance_all(conn, Some(endpoint), now_ms)?;
    Ok(ResumeOutcome::Resumed)
}
