//! The read queries. Each runs on a reader connection inside one read transaction (a snapshot).
use jiff::Timestamp;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::rows::{
    self, decode_cursor, encode_cursor, millis, page_limit, ATTEMPT_COLUMNS, DELIVERY_COLUMNS,
};
use super::rows::{DELIVERY_WIDTH, EVENT_COLUMNS};
use crate::store::{
    AnalyticsBucket, AnalyticsQuery, AttemptLogEntry, DeadLetter, DeliveryRecord, DeliveryState,
    EndpointRef, EndpointStats, EventStatus, Page, PageRequest, QueueCounts, ReplayFilter,
    ReplayProgress, Result, StoreError, WindowStats,
};

/// Analytics ranges are refused beyond this many buckets.
const MAX_BUCKETS: i64 = 10_000;

fn db(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    StoreError::backend(context)
}

fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// An event and all its deliveries.
pub fn event_status(conn: &Connection, event_id: &str) -> Result<Option<EventStatus>> {
    let event = conn
        .query_row(
            &format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.event_id = ?1"),
            [event_id],
            |row| rows::event(row, 0),
        )
        .optional()
        .map_err(db("read event"))?;
    let Some(event) = event else { return Ok(None) };
    let deliveries = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.event_id = ?1 ORDER BY d.id"
        ))
        .and_then(|mut s| {
            s.query_map([event_id], |row| rows::delivery(row, 0))?
                .collect()
        })
        .map_err(db("read deliveries of event"))?;
    Ok(Some(EventStatus { event, deliveries }))
}

/// An endpoint's attempts, newest first, keyset-paginated on `(at, id)`.
pub fn delivery_log(
    conn: &Connection,
    endpoint: &EndpointRef,
    page: &PageRequest,
) -> Result<Page<AttemptLogEntry>> {
    let (limit, before_at, before_id) = page_bounds(page)?;
    let mut found = conn
        .prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS}, a.id FROM attempts a WHERE a.namespace = ?1 AND a.endpoint = ?2 \
             AND (a.at < ?3 OR (a.at = ?3 AND a.id < ?4)) ORDER BY a.at DESC, a.id DESC LIMIT ?5"
        ))
        .and_then(|mut s| {
            s.query_map(
                params![endpoint.namespace, endpoint.name, before_at, before_id, limit as i64 + 1],
                |row| Ok((rows::attempt(row)?, row.get::<_, i64>(13)?)),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db("read delivery log"))?;
    let next_cursor = next_cursor(&mut found, limit, |(entry, id)| {
        encode_cursor(millis(entry.record.at), *id)
    });
    Ok(Page {
        items: found.into_iter().map(|(entry, _)| entry).collect(),
        next_cursor,
    })
}

/// The page size and the `(time, id)` every item of the page is before.
fn page_bounds(page: &PageRequest) -> Result<(usize, i64, i64)> {
    let (before_at, before_id) = match &page.cursor {
        Some(cursor) => decode_cursor(cursor)?,
        None => (i64::MAX, i64::MAX),
    };
    Ok((page_limit(page.limit), before_at, before_id))
}

/// Truncates a `limit + 1` result to `limit` and returns the cursor after the last kept item.
fn next_cursor<T>(
    found: &mut Vec<T>,
    limit: usize,
    cursor: impl Fn(&T) -> String,
) -> Option<String> {
    if found.len() <= limit {
        return None;
    }
    found.truncate(limit);
    found.last().map(cursor)
}

/// Dead letters, most recently dead-lettered first, with payload and attempts.
pub fn dead_letters(
    conn: &Connection,
    namespace: &str,
    endpoint: Option<&str>,
    page: &PageRequest,
) -> Result<Page<DeadLetter>> {
    let (limit, before_at, before_id) = page_bounds(page)?;
    let mut found = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS}, {EVENT_COLUMNS} FROM deliveries d JOIN events e ON e.event_id = d.event_id \
             WHERE d.namespace = ?1 AND (?2 IS NULL OR d.endpoint = ?2) AND d.state = 'dead_lettered' \
             AND (d.finished_at < ?3 OR (d.finished_at = ?3 AND d.id < ?4)) \
             ORDER BY d.finished_at DESC, d.id DESC LIMIT ?5"
        ))
        .and_then(|mut s| {
            s.query_map(params![namespace, endpoint, before_at, before_id, limit as i64 + 1], |row| {
                Ok((rows::delivery(row, 0)?, rows::event(row, DELIVERY_WIDTH)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db("read dead letters"))?;
    let next_cursor = next_cursor(&mut found, limit, |(delivery, _)| {
        encode_cursor(
            delivery.finished_at.map(millis).unwrap_or_default(),
            delivery.id.0,
        )
    });
    let mut attempts = conn
        .prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts a WHERE a.delivery_id = ?1 ORDER BY a.at, a.id"
        ))
        .map_err(db("prepare attempts of delivery"))?;
    let items = found
        .into_iter()
        .map(|(delivery, event)| {
            let history = attempts
                .query_map([delivery.id.0], rows::attempt)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(db("read attempts of delivery"))?;
            Ok(DeadLetter {
                delivery,
                event,
                attempts: history,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Page { items, next_cursor })
}

/// Attempts per UTC-aligned bucket over `[from, to)`; empty buckets included.
pub fn analytics(conn: &Connection, query: &AnalyticsQuery) -> Result<Vec<AnalyticsBucket>> {
    let width = query.bucket.millis();
    let (from, to) = (millis(query.from), millis(query.to));
    if from >= to {
        return Ok(Vec::new());
    }
    let base = from.div_euclid(width) * width;
    let buckets = (to - base + width - 1) / width;
    if buckets > MAX_BUCKETS {
        return Err(StoreError::InvalidArgument(format!(
            "analytics range spans {buckets} buckets; at most {MAX_BUCKETS}"
        )));
    }
    let mut out: Vec<AnalyticsBucket> = (0..buckets)
        .map(|i| {
            let start = Timestamp::from_millisecond(base + i * width)
                .map_err(|e| StoreError::InvalidArgument(format!("analytics range: {e}")))?;
            Ok(AnalyticsBucket {
                start,
                attempts: 0,
                successes: 0,
                failures: 0,
                success_rate: None,
                avg_latency_ms: None,
            })
        })
        .collect::<Result<_>>()?;
    let mut statement = conn
        .prepare_cached(
            "SELECT (a.at - ?3) / ?5 AS bucket, COUNT(*), COALESCE(SUM(a.success), 0), AVG(a.latency_ms) \
             FROM attempts a WHERE a.namespace = ?1 AND a.endpoint = ?2 AND a.at >= ?6 AND a.at < ?4 \
             GROUP BY bucket ORDER BY bucket",
        )
        .map_err(db("prepare analytics"))?;
    let rows = statement
        .query_map(
            params![
                query.endpoint.namespace,
                query.endpoint.name,
                base,
                to,
                width,
                from
            ],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<f64>>(3)?,
                ))
            },
        )
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db("read analytics"))?;
    for (index, attempts, successes, avg_latency_ms) in rows {
        let Some(bucket) = usize::try_from(index).ok().and_then(|i| out.get_mut(i)) else {
            continue;
        };
        bucket.attempts = unsigned(attempts);
        bucket.successes = unsigned(successes);
        bucket.failures = bucket.attempts.saturating_sub(bucket.successes);
        bucket.success_rate = ratio(bucket.successes, bucket.attempts);
        bucket.avg_latency_ms = avg_latency_ms;
    }
    Ok(out)
}

/// Attempts of an endpoint with `since < at <= now`.
fn window(conn: &Connection, endpoint: &EndpointRef, since: i64, now: i64) -> Result<WindowStats> {
    let (attempts, successes, avg_latency_ms, with_latency) = conn
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(success), 0), AVG(latency_ms), COUNT(latency_ms) FROM attempts \
             WHERE namespace = ?1 AND endpoint = ?2 AND at > ?3 AND at <= ?4",
        )
        .and_then(|mut s| {
            s.query_row(params![endpoint.namespace, endpoint.name, since, now], |r| {
                Ok((unsigned(r.get(0)?), unsigned(r.get(1)?), r.get::<_, Option<f64>>(2)?, r.get::<_, i64>(3)?))
            })
        })
        .map_err(db("read window stats"))?;
    let p95_latency_ms = if with_latency > 0 {
        // Nearest rank: the ceil(0.95 n)-th smallest.
        let rank = (with_latency * 95 + 99) / 100;
        conn.prepare_cached(
            "SELECT latency_ms FROM attempts WHERE namespace = ?1 AND endpoint = ?2 AND at > ?3 AND at <= ?4 \
             AND latency_ms IS NOT NULL ORDER BY latency_ms LIMIT 1 OFFSET ?5",
        )
        .and_then(|mut s| {
            s.query_row(params![endpoint.namespace, endpoint.name, since, now, rank - 1], |r| r.get::<_, i64>(0))
                .optional()
        })
        .map_err(db("read p95 latency"))?
        .map(unsigned)
    } else {
        None
    };
    let failures = attempts.saturating_sub(successes);
    Ok(WindowStats {
        attempts,
        successes,
        failures,
        success_rate: ratio(successes, attempts),
        error_rate: ratio(failures, attempts),
        avg_latency_ms,
        p95_latency_ms,
    })
}

/// Totals, windows and queue counts of one endpoint.
pub fn endpoint_stats(
    conn: &Connection,
    endpoint: &EndpointRef,
    now: Timestamp,
) -> Result<EndpointStats> {
    let now_ms = millis(now);
    let mut stats = EndpointStats {
        last_hour: window(conn, endpoint, now_ms - 3_600_000, now_ms)?,
        last_day: window(conn, endpoint, now_ms - 86_400_000, now_ms)?,
        ..EndpointStats::default()
    };
    let counters = conn
        .prepare_cached(
            "SELECT delivered, failed_attempts, dead_lettered, retries, last_attempt_at, last_success_at, \
             last_failure_at, last_status_code, last_error FROM endpoint_counters WHERE namespace = ?1 AND endpoint = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![endpoint.namespace, endpoint.name], |r| {
                let time = |i: usize| -> rusqlite::Result<Option<Timestamp>> {
                    Ok(r.get::<_, Option<i64>>(i)?.and_then(|ms| Timestamp::from_millisecond(ms).ok()))
                };
                Ok(EndpointStats {
                    delivered_total: unsigned(r.get(0)?),
                    failed_attempts_total: unsigned(r.get(1)?),
                    dead_lettered_total: unsigned(r.get(2)?),
                    retries_total: unsigned(r.get(3)?),
                    last_attempt_at: time(4)?,
                    last_success_at: time(5)?,
                    last_failure_at: time(6)?,
                    last_status_code: r.get::<_, Option<i64>>(7)?.and_then(|c| u16::try_from(c).ok()),
                    last_error: r.get(8)?,
                    ..EndpointStats::default()
                })
            })
            .optional()
        })
        .map_err(db("read endpoint counters"))?;
    if let Some(counters) = counters {
        stats = EndpointStats {
            last_hour: stats.last_hour,
            last_day: stats.last_day,
            ..counters
        };
    }
    let by_state = count_by_state(
        conn,
        "SELECT state, COUNT(*) FROM deliveries WHERE namespace = ?1 AND endpoint = ?2 \
         AND state IN ('pending', 'in_flight', 'held', 'dead_lettered') GROUP BY state",
        params![endpoint.namespace, endpoint.name],
    )?;
    for (state, n) in by_state {
        match state {
            DeliveryState::Pending => stats.pending_count = n,
            DeliveryState::InFlight => stats.in_flight_count = n,
            DeliveryState::Held => stats.held_count = n,
            DeliveryState::DeadLettered => stats.dead_letter_count = n,
            DeliveryState::Delivered => {}
        }
    }
    Ok(stats)
}

/// Deliveries a replay with `filter` selects, oldest event first, at most `limit`.
pub fn replay_candidates(
    conn: &Connection,
    filter: &ReplayFilter,
    limit: usize,
) -> Result<Vec<DeliveryRecord>> {
    let outcomes: Vec<DeliveryState> = if filter.outcomes.is_empty() {
        vec![DeliveryState::Delivered, DeliveryState::DeadLettered]
    } else {
        filter.outcomes.iter().map(|o| o.state()).collect()
    };
    let states = vec!["?"; outcomes.len()].join(", ");
    let mut values = vec![
        Value::Text(filter.endpoint.namespace.clone()),
        Value::Text(filter.endpoint.name.clone()),
        Value::Integer(millis(filter.from)),
        Value::Integer(millis(filter.to)),
    ];
    values.extend(outcomes.iter().map(|s| Value::Text(s.as_str().to_owned())));
    let mut statement = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS}, e.event_type FROM deliveries d JOIN events e ON e.event_id = d.event_id \
             WHERE d.namespace = ? AND d.endpoint = ? AND e.created_at >= ? AND e.created_at < ? \
             AND d.state IN ({states}) ORDER BY e.created_at, d.id"
        ))
        .map_err(db("prepare replay candidates"))?;
    let mut rows = statement
        .query(params_from_iter(values))
        .map_err(db("read replay candidates"))?;
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(row) = rows.next().map_err(db("read replay candidates"))? else {
            break;
        };
        let event_type: String = row
            .get(DELIVERY_WIDTH)
            .map_err(db("read replay candidates"))?;
        if filter.matches_type(&event_type) {
            out.push(rows::delivery(row, 0).map_err(db("read replay candidates"))?);
        }
    }
    Ok(out)
}

/// A replay's counts and where its deliveries are.
pub fn replay_progress(conn: &Connection, replay_id: &str) -> Result<Option<ReplayProgress>> {
    let found = conn
        .query_row(
            "SELECT namespace, endpoint, matched, requeued, created_at FROM replays WHERE replay_id = ?1",
            [replay_id],
            |r| {
                Ok((
                    EndpointRef { namespace: r.get(0)?, name: r.get(1)? },
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            },
        )
        .optional()
        .map_err(db("read replay"))?;
    let Some((endpoint, matched, requeued, created_at)) = found else {
        return Ok(None);
    };
    let mut progress = ReplayProgress {
        replay_id: replay_id.to_owned(),
        endpoint,
        created_at: Timestamp::from_millisecond(created_at)
            .map_err(|e| StoreError::InvalidArgument(format!("replay time: {e}")))?,
        matched: unsigned(matched),
        requeued: unsigned(requeued),
        outstanding: 0,
        delivered: 0,
        dead_lettered: 0,
    };
    for (state, n) in count_by_state(
        conn,
        "SELECT state, COUNT(*) FROM deliveries WHERE replay_id = ?1 GROUP BY state",
        [replay_id],
    )? {
        match state {
            DeliveryState::Delivered => progress.delivered += n,
            DeliveryState::DeadLettered => progress.dead_lettered += n,
            _ => progress.outstanding += n,
        }
    }
    Ok(Some(progress))
}

fn count_by_state(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<(DeliveryState, u64)>> {
    let found = conn
        .prepare_cached(sql)
        .and_then(|mut s| {
            s.query_map(params, |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db("count deliveries by state"))?;
    Ok(found
        .into_iter()
        .filter_map(|(state, n)| Some((DeliveryState::parse(&state)?, unsigned(n))))
        .collect())
}

/// Unfinished deliveries by state.
pub fn queue_counts(conn: &Connection) -> Result<QueueCounts> {
    let one = |sql: &str| -> Result<u64> {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
            .map(unsigned)
            .map_err(db("count queue"))
    };
    Ok(QueueCounts {
        pending: one("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")?,
        in_flight: one("SELECT COUNT(*) FROM deliveries WHERE state = 'in_flight'")?,
        held: one("SELECT COUNT(*) FROM deliveries WHERE state = 'held'")?,
    })
}
