//! The read queries. Each runs in one read-only REPEATABLE READ transaction (a snapshot), except
//! [`replay_candidates`], which a replay also runs inside its write transaction.
use deadpool_postgres::Transaction;
use futures::TryStreamExt;
use jiff::Timestamp;
use tokio_postgres::types::ToSql;

use super::db;
use super::rows::{
    self, get, opt_timestamp_at, timestamp, ATTEMPT_COLUMNS, DELIVERY_COLUMNS, DELIVERY_WIDTH,
    EVENT_COLUMNS,
};
use super::writes::query;
use crate::store::common::{
    add_endpoint_count, add_replay_count, empty_buckets, fill_bucket, millis, page_bounds, page_of,
    replay_states, sql_limit, unsigned,
};
use crate::store::minutes::{is_available, AttemptSample, WindowPlan, WindowTotals};
use crate::store::{
    AnalyticsBucket, AnalyticsQuery, AttemptLogEntry, AttemptScope, DeadLetter, DeliveryId,
    DeliveryRecord, DeliveryState, EndpointRef, EndpointStats, EventStatus, Page, PageRequest,
    QueueCounts, ReplayFilter, ReplayProgress, Result, StatsWindows, WindowStats,
};

/// An event and all its deliveries.
pub async fn event_status(tx: &Transaction<'_>, event_id: &str) -> Result<Option<EventStatus>> {
    let found = query(
        tx,
        &format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.event_id = $1"),
        &[&event_id],
        "read event",
    )
    .await?;
    let Some(row) = found.first() else {
        return Ok(None);
    };
    let event = rows::event(row, 0)?;
    let deliveries = query(
        tx,
        &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.event_id = $1 ORDER BY d.id"),
        &[&event_id],
        "read deliveries of event",
    )
    .await?
    .iter()
    .map(|row| rows::delivery(row, 0))
    .collect::<Result<_>>()?;
    Ok(Some(EventStatus { event, deliveries }))
}

/// Attempts in `scope`, newest first, keyset-paginated on `(at, id)`.
pub async fn attempt_log(
    tx: &Transaction<'_>,
    scope: &AttemptScope,
    page: &PageRequest,
) -> Result<Page<AttemptLogEntry>> {
    let (limit, before_at, before_id) = page_bounds(page)?;
    let fetch = sql_limit(limit) + 1;
    let keyset = "(a.at < $1 OR (a.at = $1 AND a.id < $2)) ORDER BY a.at DESC, a.id DESC LIMIT $3";
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&before_at, &before_id, &fetch];
    let filter = match scope {
        AttemptScope::All => "",
        AttemptScope::Namespace(namespace) => {
            params.push(namespace);
            "a.namespace = $4 AND"
        }
        AttemptScope::Endpoint(endpoint) => {
            params.push(&endpoint.namespace);
            params.push(&endpoint.name);
            "a.namespace = $4 AND a.endpoint = $5 AND"
        }
    };
    let found = query(
        tx,
        &format!("SELECT {ATTEMPT_COLUMNS} FROM attempts a WHERE {filter} {keyset}"),
        &params,
        "read attempt log",
    )
    .await?
    .iter()
    .map(|row| {
        let entry = rows::attempt(row)?;
        let (at, id) = (millis(entry.record.at), entry.seq);
        Ok((entry, at, id))
    })
    .collect::<Result<Vec<_>>>()?;
    Ok(page_of(found, limit))
}

/// Attempts in `scope` after `after_seq`, in `seq` order.
pub async fn attempts_after(
    tx: &Transaction<'_>,
    scope: &AttemptScope,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<AttemptLogEntry>> {
    let (namespace, name) = match scope {
        AttemptScope::All => (None, None),
        AttemptScope::Namespace(namespace) => (Some(namespace.as_str()), None),
        AttemptScope::Endpoint(endpoint) => (
            Some(endpoint.namespace.as_str()),
            Some(endpoint.name.as_str()),
        ),
    };
    query(
        tx,
        &format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts a WHERE a.id > $1 \
             AND ($2::text IS NULL OR a.namespace = $2::text) \
             AND ($3::text IS NULL OR a.endpoint = $3::text) ORDER BY a.id LIMIT $4"
        ),
        &[&after_seq, &namespace, &name, &sql_limit(limit)],
        "read attempts after a sequence number",
    )
    .await?
    .iter()
    .map(rows::attempt)
    .collect()
}

/// The greatest attempt id, 0 without attempts.
pub async fn last_attempt_seq(tx: &Transaction<'_>) -> Result<i64> {
    let rows = query(
        tx,
        "SELECT COALESCE(MAX(id), 0)::bigint FROM attempts",
        &[],
        "read the last attempt id",
    )
    .await?;
    rows.first().map(|row| get(row, 0)).unwrap_or(Ok(0))
}

/// Dead letters, most recently dead-lettered first, with payload and attempts.
pub async fn dead_letters(
    tx: &Transaction<'_>,
    namespace: &str,
    endpoint: Option<&str>,
    page: &PageRequest,
) -> Result<Page<DeadLetter>> {
    let (limit, before_at, before_id) = page_bounds(page)?;
    let found = query(
        tx,
        &format!(
            "SELECT {DELIVERY_COLUMNS}, {EVENT_COLUMNS} FROM deliveries d JOIN events e ON e.event_id = d.event_id \
             WHERE d.namespace = $1 AND ($2::text IS NULL OR d.endpoint = $2) AND d.state = 'dead_lettered' \
             AND (d.finished_at < $3 OR (d.finished_at = $3 AND d.id < $4)) \
             ORDER BY d.finished_at DESC, d.id DESC LIMIT $5"
        ),
        &[&namespace, &endpoint, &before_at, &before_id, &(sql_limit(limit) + 1)],
        "read dead letters",
    )
    .await?
    .iter()
    .map(|row| {
        let delivery = rows::delivery(row, 0)?;
        let (finished, id) = (delivery.finished_at.map(millis).unwrap_or_default(), delivery.id.0);
        Ok(((delivery, rows::event(row, DELIVERY_WIDTH)?), finished, id))
    })
    .collect::<Result<Vec<_>>>()?;
    let Page { items, next_cursor } = page_of(found, limit);
    let ids: Vec<i64> = items.iter().map(|(delivery, _)| delivery.id.0).collect();
    let mut history = query(
        tx,
        &format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts a WHERE a.delivery_id = ANY($1) ORDER BY a.at, a.id"
        ),
        &[&ids],
        "read attempts of dead letters",
    )
    .await?
    .iter()
    .map(rows::attempt)
    .collect::<Result<Vec<_>>>()?;
    let items = items
        .into_iter()
        .map(|(delivery, event)| {
            let (attempts, rest) = history
                .drain(..)
                .partition(|entry: &AttemptLogEntry| entry.delivery_id == delivery.id);
            history = rest;
            DeadLetter {
                delivery,
                event,
                attempts,
            }
        })
        .collect();
    Ok(Page { items, next_cursor })
}

/// One delivery with its event and every attempt, oldest first.
pub async fn delivery_history(tx: &Transaction<'_>, id: DeliveryId) -> Result<Option<DeadLetter>> {
    let found = query(
        tx,
        &format!(
            "SELECT {DELIVERY_COLUMNS}, {EVENT_COLUMNS} FROM deliveries d \
             JOIN events e ON e.event_id = d.event_id WHERE d.id = $1"
        ),
        &[&id.0],
        "read delivery",
    )
    .await?;
    let Some(row) = found.first() else {
        return Ok(None);
    };
    let (delivery, event) = (rows::delivery(row, 0)?, rows::event(row, DELIVERY_WIDTH)?);
    let attempts = query(
        tx,
        &format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts a WHERE a.delivery_id = $1 ORDER BY a.at, a.id"
        ),
        &[&id.0],
        "read attempts of delivery",
    )
    .await?
    .iter()
    .map(rows::attempt)
    .collect::<Result<Vec<_>>>()?;
    Ok(Some(DeadLetter {
        delivery,
        event,
        attempts,
    }))
}

/// Attempts per UTC-aligned bucket over `[from, to)`; empty buckets included.
pub async fn analytics(
    tx: &Transaction<'_>,
    query_: &AnalyticsQuery,
) -> Result<Vec<AnalyticsBucket>> {
    let Some((base, mut out)) = empty_buckets(query_)? else {
        return Ok(Vec::new());
    };
    let (width, from, to) = (
        query_.bucket.millis(),
        millis(query_.from),
        millis(query_.to),
    );
    let rows = query(
        tx,
        "SELECT (a.at - $3) / $5 AS bucket, count(*), count(*) FILTER (WHERE a.success), \
         avg(a.latency_ms)::float8 FROM attempts a WHERE a.namespace = $1 AND a.endpoint = $2 \
         AND a.at >= $6 AND a.at < $4 AND a.outcome <> 'filtered' GROUP BY bucket ORDER BY bucket",
        &[
            &query_.endpoint.namespace,
            &query_.endpoint.name,
            &base,
            &to,
            &width,
            &from,
        ],
        "read analytics",
    )
    .await?;
    for row in &rows {
        fill_bucket(
            &mut out,
            get(row, 0)?,
            get(row, 1)?,
            get(row, 2)?,
            get(row, 3)?,
        );
    }
    Ok(out)
}

/// Attempts of an endpoint with `since < at <= now`; filtered ones (no request was sent) are
/// left out. Whole minutes come from their rollups, the partial ones at the edges from the
/// attempts ([`WindowPlan`]).
async fn window(
    tx: &Transaction<'_>,
    endpoint: &EndpointRef,
    since: i64,
    now: i64,
) -> Result<WindowStats> {
    let plan = WindowPlan::new(since, now);
    let mut totals = WindowTotals::default();
    for (lo, hi) in plan.raw {
        let rows = query(
            tx,
            "SELECT at, success, status_code, latency_ms FROM attempts WHERE namespace = $1 \
             AND endpoint = $2 AND at > $3 AND at <= $4 AND outcome <> 'filtered'",
            &[&endpoint.namespace, &endpoint.name, &lo, &hi],
            "read window attempts",
        )
        .await?;
        for row in &rows {
            totals.add(&AttemptSample {
                at: get(row, 0)?,
                success: get(row, 1)?,
                available: is_available(get::<Option<i32>>(row, 2)?.map(i64::from)),
                latency_ms: get(row, 3)?,
            });
        }
    }
    if let Some((first, last)) = plan.minutes {
        let rows = query(
            tx,
            "SELECT attempts, successes, available, latencies::text FROM attempt_minutes \
             WHERE namespace = $1 AND endpoint = $2 AND minute >= $3 AND minute <= $4",
            &[&endpoint.namespace, &endpoint.name, &first, &last],
            "read window rollups",
        )
        .await?;
        for row in &rows {
            totals.merge(WindowTotals::from_row(
                get(row, 0)?,
                get(row, 1)?,
                get(row, 2)?,
                &get::<String>(row, 3)?,
            )?);
        }
    }
    Ok(totals.into_stats())
}

/// Totals, the `windows` asked for and queue counts of one endpoint.
pub async fn endpoint_stats(
    tx: &Transaction<'_>,
    endpoint: &EndpointRef,
    now: Timestamp,
    windows: StatsWindows,
) -> Result<EndpointStats> {
    let now_ms = millis(now);
    let mut stats = EndpointStats::default();
    if windows.hour {
        stats.last_hour = window(tx, endpoint, now_ms - 3_600_000, now_ms).await?;
    }
    if windows.day {
        stats.last_day = window(tx, endpoint, now_ms - 86_400_000, now_ms).await?;
    }
    let counters = query(
        tx,
        "SELECT delivered, failed_attempts, dead_lettered, retries, last_attempt_at, last_success_at, \
         last_failure_at, last_status_code, last_error, filtered FROM endpoint_counters \
         WHERE namespace = $1 AND endpoint = $2",
        &[&endpoint.namespace, &endpoint.name],
        "read endpoint counters",
    )
    .await?;
    if let Some(r) = counters.first() {
        stats.delivered_total = unsigned(get(r, 0)?);
        stats.failed_attempts_total = unsigned(get(r, 1)?);
        stats.dead_lettered_total = unsigned(get(r, 2)?);
        stats.retries_total = unsigned(get(r, 3)?);
        stats.last_attempt_at = opt_timestamp_at(r, 4)?;
        stats.last_success_at = opt_timestamp_at(r, 5)?;
        stats.last_failure_at = opt_timestamp_at(r, 6)?;
        stats.last_status_code = get::<Option<i32>>(r, 7)?.and_then(|c| u16::try_from(c).ok());
        stats.last_error = get(r, 8)?;
        stats.filtered_total = unsigned(get(r, 9)?);
    }
    let params: [&(dyn ToSql + Sync); 2] = [&endpoint.namespace, &endpoint.name];
    for (state, n) in count_by_state(
        tx,
        "SELECT state, count(*) FROM deliveries WHERE namespace = $1 AND endpoint = $2 \
         AND state IN ('pending', 'in_flight', 'held', 'queued', 'dead_lettered') GROUP BY state",
        &params,
    )
    .await?
    {
        add_endpoint_count(&mut stats, state, n);
    }
    stats.paused = super::lanes::pause_of(tx, endpoint).await?;
    Ok(stats)
}

/// Deliveries a replay with `filter` selects, oldest event first, at most `limit`.
pub async fn replay_candidates(
    tx: &Transaction<'_>,
    filter: &ReplayFilter,
    limit: usize,
) -> Result<Vec<DeliveryRecord>> {
    let states: Vec<&str> = replay_states(filter).iter().map(|s| s.as_str()).collect();
    let statement = tx
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS}, e.event_type FROM deliveries d JOIN events e ON e.event_id = d.event_id \
             WHERE d.namespace = $1 AND d.endpoint = $2 AND e.created_at >= $3 AND e.created_at < $4 \
             AND d.state = ANY($5) ORDER BY e.created_at, d.id"
        ))
        .await
        .map_err(db("prepare replay candidates"))?;
    let params: [&(dyn ToSql + Sync); 5] = [
        &filter.endpoint.namespace,
        &filter.endpoint.name,
        &millis(filter.from),
        &millis(filter.to),
        &states,
    ];
    let rows = tx
        .query_raw(&statement, params)
        .await
        .map_err(db("read replay candidates"))?;
    futures::pin_mut!(rows);
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(row) = rows
            .try_next()
            .await
            .map_err(db("read replay candidates"))?
        else {
            break;
        };
        let event_type: String = get(&row, DELIVERY_WIDTH)?;
        if filter.matches_type(&event_type) {
            out.push(rows::delivery(&row, 0)?);
        }
    }
    Ok(out)
}

/// A replay's counts and where its deliveries are.
pub async fn replay_progress(
    tx: &Transaction<'_>,
    replay_id: &str,
) -> Result<Option<ReplayProgress>> {
    let found = query(
        tx,
        "SELECT namespace, endpoint, matched, requeued, created_at FROM replays WHERE replay_id = $1",
        &[&replay_id],
        "read replay",
    )
    .await?;
    let Some(r) = found.first() else {
        return Ok(None);
    };
    let mut progress = ReplayProgress {
        replay_id: replay_id.to_owned(),
        endpoint: EndpointRef {
            namespace: get(r, 0)?,
            name: get(r, 1)?,
        },
        created_at: timestamp(get(r, 4)?)?,
        matched: unsigned(get(r, 2)?),
        requeued: unsigned(get(r, 3)?),
        outstanding: 0,
        delivered: 0,
        dead_lettered: 0,
        filtered: 0,
    };
    for (state, n) in count_by_state(
        tx,
        "SELECT state, count(*) FROM deliveries WHERE replay_id = $1 GROUP BY state",
        &[&replay_id],
    )
    .await?
    {
        add_replay_count(&mut progress, state, n);
    }
    Ok(Some(progress))
}

async fn count_by_state(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<(DeliveryState, u64)>> {
    let rows = query(tx, sql, params, "count deliveries by state").await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let state: String = get(row, 0)?;
        if let Some(state) = DeliveryState::parse(&state) {
            out.push((state, unsigned(get(row, 1)?)));
        }
    }
    Ok(out)
}

/// Unfinished deliveries by state.
pub async fn queue_counts(tx: &Transaction<'_>) -> Result<QueueCounts> {
    let rows = query(
        tx,
        "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'in_flight'), \
         count(*) FILTER (WHERE state = 'held'), count(*) FILTER (WHERE state = 'queued') \
         FROM deliveries WHERE state IN ('pending', 'in_flight', 'held', 'queued')",
        &[],
        "count queue",
    )
    .await?;
    let row = rows.first().ok_or(crate::store::StoreError::Commit(
        "queue count returned no row".into(),
    ))?;
    Ok(QueueCounts {
        pending: unsigned(get(row, 0)?),
        in_flight: unsigned(get(row, 1)?),
        held: unsigned(get(row, 2)?),
        queued: unsigned(get(row, 3)?),
    })
}
