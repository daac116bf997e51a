//! Mapping between PostgreSQL rows and the store's types, and a builder of numbered parameters.
use bytes::Bytes;
use jiff::Timestamp;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::Row;

use crate::store::{
    AttemptLogEntry, AttemptOutcome, AttemptRecord, DeliveryId, DeliveryRecord, DeliveryState,
    EndpointRef, EventRecord, EventSource, Result, StoreError,
};

/// Column lists, shared by the backends: [`delivery`], [`event`] and [`attempt`] read them by
/// position.
pub use crate::store::common::{ATTEMPT_COLUMNS, DELIVERY_COLUMNS, DELIVERY_WIDTH, EVENT_COLUMNS};

/// Column `i` of `row`.
pub fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i).map_err(StoreError::backend("read a column"))
}

fn out_of_range(what: String) -> StoreError {
    StoreError::Backend {
        context: "read a column",
        source: what.into(),
    }
}

pub fn timestamp(ms: i64) -> Result<Timestamp> {
    Timestamp::from_millisecond(ms).map_err(|e| out_of_range(format!("time {ms}: {e}")))
}

fn timestamp_at(row: &Row, i: usize) -> Result<Timestamp> {
    timestamp(get(row, i)?)
}

pub fn opt_timestamp_at(row: &Row, i: usize) -> Result<Option<Timestamp>> {
    get::<Option<i64>>(row, i)?.map(timestamp).transpose()
}

fn narrow<T: TryFrom<i64>>(value: i64) -> Result<T> {
    T::try_from(value).map_err(|_| out_of_range(format!("{value} out of range")))
}

fn opt_narrow<T: TryFrom<i64>>(value: Option<i64>) -> Result<Option<T>> {
    value.map(narrow).transpose()
}

/// A delivery from [`DELIVERY_COLUMNS`] starting at column `at`.
pub fn delivery(row: &Row, at: usize) -> Result<DeliveryRecord> {
    let state: String = get(row, at + 4)?;
    let replay_id: String = get(row, at + 13)?;
    Ok(DeliveryRecord {
        id: DeliveryId(get(row, at)?),
        event_id: get(row, at + 1)?,
        endpoint: EndpointRef {
            namespace: get(row, at + 2)?,
            name: get(row, at + 3)?,
        },
        state: DeliveryState::parse(&state)
            .ok_or_else(|| out_of_range(format!("unknown delivery state {state:?}")))?,
        attempts: narrow(i64::from(get::<i32>(row, at + 5)?))?,
        next_attempt_at: opt_timestamp_at(row, at + 6)?,
        last_attempt_at: opt_timestamp_at(row, at + 7)?,
        last_status_code: opt_narrow(get::<Option<i32>>(row, at + 8)?.map(i64::from))?,
        last_error: get(row, at + 9)?,
        delivered_at: opt_timestamp_at(row, at + 10)?,
        dead_letter_reason: get(row, at + 11)?,
        finished_at: opt_timestamp_at(row, at + 12)?,
        replay_id: (!replay_id.is_empty()).then_some(replay_id),
        created_at: timestamp_at(row, at + 14)?,
        lane: get(row, at + 15)?,
    })
}

/// An event from [`EVENT_COLUMNS`] starting at column `at`.
pub fn event(row: &Row, at: usize) -> Result<EventRecord> {
    let data: Vec<u8> = get(row, at + 3)?;
    let resource_name: Option<String> = get(row, at + 5)?;
    let resource_uid: Option<String> = get(row, at + 6)?;
    let source = match (resource_name, resource_uid) {
        (Some(name), Some(uid)) => EventSource::Resource { name, uid },
        _ => EventSource::Ingest,
    };
    Ok(EventRecord {
        event_id: get(row, at)?,
        namespace: get(row, at + 1)?,
        event_type: get(row, at + 2)?,
        data: Bytes::from(data),
        created_at: timestamp_at(row, at + 4)?,
        source,
        idempotency_key: get(row, at + 7)?,
        trace_parent: get(row, at + 8)?,
    })
}

/// An attempt from [`ATTEMPT_COLUMNS`] starting at column 0.
pub fn attempt(row: &Row) -> Result<AttemptLogEntry> {
    let outcome: String = get(row, 12)?;
    Ok(AttemptLogEntry {
        seq: get(row, 13)?,
        delivery_id: DeliveryId(get(row, 0)?),
        event_id: get(row, 1)?,
        event_type: get(row, 2)?,
        endpoint: EndpointRef {
            namespace: get(row, 3)?,
            name: get(row, 4)?,
        },
        record: AttemptRecord {
            at: timestamp_at(row, 6)?,
            attempt: narrow(i64::from(get::<i32>(row, 5)?))?,
            status_code: opt_narrow(get::<Option<i32>>(row, 7)?.map(i64::from))?,
            latency_ms: opt_narrow(get(row, 8)?)?,
            error: get(row, 9)?,
            response_snippet: get(row, 10)?,
        },
        success: get(row, 11)?,
        outcome: AttemptOutcome::parse(&outcome)
            .ok_or_else(|| out_of_range(format!("unknown attempt outcome {outcome:?}")))?,
    })
}

/// Parameters of a statement built piece by piece: [`Params::push`] returns the placeholder.
#[derive(Default)]
pub struct Params {
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Params {
    pub fn push(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.values.push(Box::new(value));
        format!("${}", self.values.len())
    }

    pub fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|value| &**value as &(dyn ToSql + Sync))
            .collect()
    }
}
