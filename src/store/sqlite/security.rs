//! The security log (append, read, purge) and the event search, on SQLite.
use jiff::Timestamp;
use rusqlite::{params, Connection};

use super::rows::{self, millis, EVENT_COLUMNS};
use crate::security::{SecurityEvent, SecurityRecord};
use crate::store::common::{
    event_page, event_page_bounds, kinds_filter, page_bounds, page_of, security_record,
    type_filter, SECURITY_COLUMNS,
};
use crate::store::{EventQuery, EventRecord, Page, Result, SecurityQuery, StoreError};

fn db(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    StoreError::backend(context)
}

/// Appends entries (one statement each, in the writer's transaction).
pub fn record(conn: &Connection, events: &[(Timestamp, SecurityEvent)]) -> Result<()> {
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO security_events (at, kind, namespace, endpoint, source, user_name, address, detail) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(db("prepare security log insert"))?;
    for (at, e) in events {
        insert
            .execute(params![
                millis(*at),
                e.kind.as_str(),
                e.namespace,
                e.endpoint,
                e.source,
                e.user,
                e.address,
                e.detail
            ])
            .map_err(db("append to the security log"))?;
    }
    Ok(())
}

/// Deletes entries older than `older_than_ms`.
pub fn purge(conn: &Connection, older_than_ms: i64) -> Result<u64> {
    conn.execute(
        "DELETE FROM security_events WHERE at < ?1",
        params![older_than_ms],
    )
    .map(|n| n as u64)
    .map_err(db("purge the security log"))
}

/// Entries, newest first.
pub fn read(conn: &Connection, query: &SecurityQuery) -> Result<Page<SecurityRecord>> {
    let (limit, before_at, before_id) = page_bounds(&query.page)?;
    let kinds = kinds_filter(&query.kinds);
    let found = conn
        .prepare_cached(&format!(
            "SELECT {SECURITY_COLUMNS} FROM security_events \
             WHERE (?1 IS NULL OR namespace = ?1) \
             AND (?2 = '' OR instr(?2, ',' || kind || ',') > 0) \
             AND (at < ?3 OR (at = ?3 AND id < ?4)) ORDER BY at DESC, id DESC LIMIT ?5"
        ))
        .and_then(|mut s| {
            s.query_map(
                params![
                    query.namespace,
                    kinds,
                    before_at,
                    before_id,
                    limit as i64 + 1
                ],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                        row.get(7)?,
                        row.get::<_, String>(8)?,
                    ))
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db("read the security log"))?;
    let found = found
        .into_iter()
        .map(|(id, at, kind, ns, ep, source, user, address, detail)| {
            Ok((
                security_record(id, at, &kind, ns, ep, source, user, address, detail)?,
                at,
                id,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(page_of(found, limit))
}

/// A namespace's events of a type pattern, newest first.
pub fn find_events(conn: &Connection, query: &EventQuery) -> Result<Page<EventRecord>> {
    let (limit, before_at, before_id) = event_page_bounds(&query.page)?;
    let (exact, prefix) = type_filter(&query.event_type);
    let found = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.namespace = ?1 \
             AND (?2 IS NULL OR e.event_type = ?2) \
             AND (?3 IS NULL OR substr(e.event_type, 1, length(?3)) = ?3) \
             AND (e.created_at < ?4 OR (e.created_at = ?4 AND e.event_id < ?5)) \
             ORDER BY e.created_at DESC, e.event_id DESC LIMIT ?6"
        ))
        .and_then(|mut s| {
            s.query_map(
                params![
                    query.namespace,
                    exact,
                    prefix,
                    before_at,
                    before_id,
                    limit as i64 + 1
                ],
                |row| rows::event(row, 0),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db("find events"))?;
    Ok(event_page(found, limit))
}
