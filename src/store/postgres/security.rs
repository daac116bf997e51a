//! The security log (append, read, purge) and the event search, on PostgreSQL.
use deadpool_postgres::Transaction;
use jiff::Timestamp;

use super::rows::{self, get, EVENT_COLUMNS};
use super::writes::{execute, query};
use crate::security::{SecurityEvent, SecurityRecord};
use crate::store::common::{
    event_page, event_page_bounds, kinds_filter, millis, page_bounds, page_of, security_record,
    sql_limit, type_filter, SECURITY_COLUMNS,
};
use crate::store::{EventQuery, EventRecord, Page, Result, SecurityQuery};

/// Appends entries.
pub async fn record(tx: &Transaction<'_>, events: &[(Timestamp, SecurityEvent)]) -> Result<()> {
    for (at, e) in events {
        execute(
            tx,
            "INSERT INTO security_events (at, kind, namespace, endpoint, source, user_name, address, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &millis(*at),
                &e.kind.as_str(),
                &e.namespace,
                &e.endpoint,
                &e.source,
                &e.user,
                &e.address,
                &e.detail,
            ],
            "append to the security log",
        )
        .await?;
    }
    Ok(())
}

/// Deletes entries older than `older_than`.
pub async fn purge(tx: &Transaction<'_>, older_than: Timestamp) -> Result<u64> {
    execute(
        tx,
        "DELETE FROM security_events WHERE at < $1",
        &[&millis(older_than)],
        "purge the security log",
    )
    .await
}

/// Entries, newest first.
pub async fn read(tx: &Transaction<'_>, q: &SecurityQuery) -> Result<Page<SecurityRecord>> {
    let (limit, before_at, before_id) = page_bounds(&q.page)?;
    let kinds = kinds_filter(&q.kinds);
    let found = query(
        tx,
        &format!(
            "SELECT {SECURITY_COLUMNS} FROM security_events \
             WHERE ($1::text IS NULL OR namespace = $1::text) \
             AND ($2::text = '' OR strpos($2::text, ',' || kind || ',') > 0) \
             AND (at < $3 OR (at = $3 AND id < $4)) ORDER BY at DESC, id DESC LIMIT $5"
        ),
        &[
            &q.namespace,
            &kinds,
            &before_at,
            &before_id,
            &(sql_limit(limit) + 1),
        ],
        "read the security log",
    )
    .await?
    .iter()
    .map(|row| {
        let (id, at): (i64, i64) = (get(row, 0)?, get(row, 1)?);
        let kind: String = get(row, 2)?;
        let record = security_record(
            id,
            at,
            &kind,
            get(row, 3)?,
            get(row, 4)?,
            get(row, 5)?,
            get(row, 6)?,
            get(row, 7)?,
            get(row, 8)?,
        )?;
        Ok((record, at, id))
    })
    .collect::<Result<Vec<_>>>()?;
    Ok(page_of(found, limit))
}

/// A namespace's events of a type pattern, newest first.
pub async fn find_events(tx: &Transaction<'_>, q: &EventQuery) -> Result<Page<EventRecord>> {
    let (limit, before_at, before_id) = event_page_bounds(&q.page)?;
    let (exact, prefix) = type_filter(&q.event_type);
    let found = query(
        tx,
        &format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.namespace = $1 \
             AND ($2::text IS NULL OR e.event_type = $2::text) \
             AND ($3::text IS NULL OR substr(e.event_type, 1, length($3::text)) = $3::text) \
             AND (e.created_at < $4 OR (e.created_at = $4 AND e.event_id < $5)) \
             ORDER BY e.created_at DESC, e.event_id DESC LIMIT $6"
        ),
        &[
            &q.namespace,
            &exact,
            &prefix,
            &before_at,
            &before_id,
            &(sql_limit(limit) + 1),
        ],
        "find events",
    )
    .await?
    .iter()
    .map(|row| rows::event(row, 0))
    .collect::<Result<Vec<_>>>()?;
    Ok(event_page(found, limit))
}
