//! Mapping between rows and the store's types: column lists and times.
use bytes::Bytes;
use jiff::Timestamp;
use rusqlite::types::Type;
use rusqlite::Row;

use crate::store::{
    AttemptLogEntry, AttemptOutcome, AttemptRecord, DeliveryId, DeliveryRecord, DeliveryState,
    EndpointRef, EventRecord, EventSource,
};

pub use crate::store::common::millis;

/// Column lists, shared by the backends: [`delivery`], [`event`] and [`attempt`] read them by
/// position.
pub use crate::store::common::{ATTEMPT_COLUMNS, DELIVERY_COLUMNS, DELIVERY_WIDTH, EVENT_COLUMNS};

fn conversion<E>(column: usize, source: E) -> rusqlite::Error
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    rusqlite::Error::FromSqlConversionFailure(column, Type::Integer, source.into())
}

pub fn timestamp_at(row: &Row<'_>, column: usize) -> rusqlite::Result<Timestamp> {
    let ms: i64 = row.get(column)?;
    Timestamp::from_millisecond(ms).map_err(|e| conversion(column, e))
}

fn opt_timestamp_at(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<Timestamp>> {
    row.get::<_, Option<i64>>(column)?
        .map(|ms| Timestamp::from_millisecond(ms).map_err(|e| conversion(column, e)))
        .transpose()
}

fn unsigned_at<T: TryFrom<i64>>(row: &Row<'_>, column: usize) -> rusqlite::Result<T> {
    let value: i64 = row.get(column)?;
    T::try_from(value).map_err(|_| conversion(column, format!("{value} out of range")))
}

fn opt_unsigned_at<T: TryFrom<i64>>(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<T>> {
    row.get::<_, Option<i64>>(column)?
        .map(|value| {
            T::try_from(value).map_err(|_| conversion(column, format!("{value} out of range")))
        })
        .transpose()
}

/// A delivery from [`DELIVERY_COLUMNS`] starting at column `at`.
pub fn delivery(row: &Row<'_>, at: usize) -> rusqlite::Result<DeliveryRecord> {
    let state: String = row.get(at + 4)?;
    let replay_id: String = row.get(at + 13)?;
    Ok(DeliveryRecord {
        id: DeliveryId(row.get(at)?),
        event_id: row.get(at + 1)?,
        endpoint: EndpointRef {
            namespace: row.get(at + 2)?,
            name: row.get(at + 3)?,
        },
        state: DeliveryState::parse(&state)
            .ok_or_else(|| conversion(at + 4, format!("unknown delivery state {state:?}")))?,
        attempts: unsigned_at(row, at + 5)?,
        next_attempt_at: opt_timestamp_at(row, at + 6)?,
        last_attempt_at: opt_timestamp_at(row, at + 7)?,
        last_status_code: opt_unsigned_at(row, at + 8)?,
        last_error: row.get(at + 9)?,
        delivered_at: opt_timestamp_at(row, at + 10)?,
        dead_letter_reason: row.get(at + 11)?,
        finished_at: opt_timestamp_at(row, at + 12)?,
        replay_id: (!replay_id.is_empty()).then_some(replay_id),
        created_at: timestamp_at(row, at + 14)?,
        lane: row.get(at + 15)?,
    })
}

/// An event from [`EVENT_COLUMNS`] starting at column `at`.
pub fn event(row: &Row<'_>, at: usize) -> rusqlite::Result<EventRecord> {
    let data: Vec<u8> = row.get(at + 3)?;
    let resource_name: Option<String> = row.get(at + 5)?;
    let resource_uid: Option<String> = row.get(at + 6)?;
    let source = match (resource_name, resource_uid) {
        (Some(name), Some(uid)) => EventSource::Resource { name, uid },
        _ => EventSource::Ingest,
    };
    Ok(EventRecord {
        event_id: row.get(at)?,
        namespace: row.get(at + 1)?,
        event_type: row.get(at + 2)?,
        data: Bytes::from(data),
        created_at: timestamp_at(row, at + 4)?,
        source,
        idempotency_key: row.get(at + 7)?,
        trace_parent: row.get(at + 8)?,
    })
}

/// An attempt from [`ATTEMPT_COLUMNS`] starting at column 0.
pub fn attempt(row: &Row<'_>) -> rusqlite::Result<AttemptLogEntry> {
    let outcome: String = row.get(12)?;
    Ok(AttemptLogEntry {
        seq: row.get(13)?,
        delivery_id: DeliveryId(row.get(0)?),
        event_id: row.get(1)?,
        event_type: row.get(2)?,
        endpoint: EndpointRef {
            namespace: row.get(3)?,
            name: row.get(4)?,
        },
        record: AttemptRecord {
            at: timestamp_at(row, 6)?,
            attempt: unsigned_at(row, 5)?,
            status_code: opt_unsigned_at(row, 7)?,
            latency_ms: opt_unsigned_at(row, 8)?,
            error: row.get(9)?,
            response_snippet: row.get(10)?,
        },
        success: row.get(11)?,
        outcome: AttemptOutcome::parse(&outcome)
            .ok_or_else(|| conversion(12, format!("unknown attempt outcome {outcome:?}")))?,
    })
}
