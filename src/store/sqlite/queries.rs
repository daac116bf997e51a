//! The read queries. Each runs on a reader connection inside one read transaction (a snapshot).
use jiff::Timestamp;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::rows::{self, millis, ATTEMPT_COLUMNS, DELIVERY_COLUMNS};
use super::rows::{DELIVERY_WIDTH, EVENT_COLUMNS};
use crate::store::common::{
    add_endpoint_count, add_replay_count, empty_buckets, fill_bucket, page_bounds, page_of,
    replay_states, unsigned,
};
use crate::store::minutes::{is_available, AttemptSample, WindowPlan, WindowTotals};
use crate::store::{
    AnalyticsBucket, AnalyticsQuery, AttemptLogEntry, AttemptScope, DeadLetter, DeliveryId,
    DeliveryRecord, DeliveryState, EndpointRef, EndpointStats, EventStatus, Page, PageRequest,
    QueueCounts, ReplayFilter, ReplayProgress, Result, StatsWindows, StoreError, WindowStats,
};

fn db(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    StoreError::backend(context)
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

/// Attempts in `scope`, newest first, keyset-paginated on `(at, id)`. Each scope has its own
/// statement so that SQLite uses the index that serves it (`attempts_endpoint_at`,
/// `attempts_namespace_at`; every namespace is a scan, kept to the page by LIMIT).
pub fn attempt_log(
    conn: &Connection,
    scope: &AttemptScope,
    page: &PageRequest,
) -> Result<Page<AttemptLogEntry>> {
    let (limit, before_at, before_id) = page_bounds(page)?;
    let keyset =
        "(a.at < :at OR (a.at = :at AND a.id < :id)) ORDER BY a.at DESC, a.id DESC LIMIT :limit";
    let (filter, namespace, name) = match scope {
        AttemptScope::All => ("", None, None),
        AttemptScope::Namespace(namespace) => {
            ("a.namespace = :ns AND", Some(namespace.as_str()), None)
        }
        AttemptScope::Endpoint(endpoint) => (
            "a.namespace = :ns AND a.endpoint = :ep AND",
            Some(endpoint.namespace.as_str()),
            Some(endpoint.name.as_str()),
        ),
    };
    let mut statement = conn
        .prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts a WHERE {filter} {keyset}"
        ))
        .map_err(db("prepare attempt log"))?;
    let mut bound: Vec<(&str, &dyn rusqlite::ToSql)> =
        vec![(":at", &before_at), (":id", &before_id)];
    let fetch = limit as i64 + 1;
    bound.push((":limit", &fetch));
    if let Some(namespace) = &namespace {
        bound.push((":ns", namespace));
    }
    if let Some(name) = &name {
        bound.push((":ep", name));
    }
    let found = statement
        .query_map(bound.as_slice(), |row| {
            let entry = rows::attempt(row)?;
            let (at, id) = (millis(entry.record.at), entry.seq);
            Ok((entry, at, id))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db("read attempt log"))?;
    Ok(page_of(found, limit))
}

/// Attempts in `scope` after `after_seq`, in `seq` order (the rowid: a range scan).
pub fn attempts_after(
    conn: &Connection,
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
    conn.prepare_cached(&format!(
        "SELECT {ATTEMPT_COLUMNS} FROM attempts a WHERE a.id > ?1 \
         AND (?2 IS NULL OR a.namespace = ?2) AND (?3 IS NULL OR a.endpoint = ?3) \
         ORDER BY a.id LIMIT ?4"
    ))
    .and_then(|mut s| {
        s.query_map(
            params![after_seq, namespace, name, limit as i64],
            rows::attempt,
        )?
        .collect()
    })
    .map_err(db("read attempts after a sequence number"))
}

/// The greatest attempt id, 0 without attempts.
pub fn last_attempt_seq(conn: &Connection) -> Result<i64> {
    conn.query_row("SELECT COALESCE(MAX(id), 0) FROM attempts", [], |row| {
        row.get(0)
    })
    .map_err(db("read the last attempt id"))
}

/// One delivery with its event and every attempt, oldest first.
pub fn delivery_history(conn: &Connection, id: DeliveryId) -> Result<Option<DeadLetter>> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS}, {EVENT_COLUMNS} FROM deliveries d \
             JOIN events e ON e.event_id = d.event_id WHERE d.id = ?1"
        ))
        .and_then(|mut s| {
            s.query_row([id.0], |row| {
                Ok((rows::delivery(row, 0)?, rows::event(row, DELIVERY_WIDTH)?))
            })
            .optional()
        })
        .map_err(db("read delivery"))?;
    let Some((delivery, event)) = found else {
        return Ok(None);
    };
    let attempts = conn
        .prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts a WHERE a.delivery_id = ?1 ORDER BY a.at, a.id"
        ))
        .and_then(|mut s| s.query_map([id.0], rows::attempt)?.collect())
        .map_err(db("read attempts of delivery"))?;
    Ok(Some(DeadLetter {
        delivery,
        event,
        attempts,
    }))
}

/// Dead letters, most recently dead-lettered first, with payload and attempts.
pub fn dead_letters(
    conn: &Connection,
    namespace: &str,
    endpoint: Option<&str>,
    page: &PageRequest,
) -> Result<Page<DeadLetter>> {
    let (limit, before_at, before_id) = page_bounds(page)?;
    let found = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS}, {EVENT_COLUMNS} FROM deliveries d JOIN events e ON e.event_id = d.event_id \
             WHERE d.namespace = ?1 AND (?2 IS NULL OR d.endpoint = ?2) AND d.state = 'dead_lettered' \
             AND (d.finished_at < ?3 OR (d.finished_at = ?3 AND d.id < ?4)) \
             ORDER BY d.finished_at DESC, d.id DESC LIMIT ?5"
        ))
        .and_then(|mut s| {
            s.query_map(params![namespace, endpoint, before_at, before_id, limit as i64 + 1], |row| {
                let delivery = rows::delivery(row, 0)?;
                let (finished, id) = (delivery.finished_at.map(millis).unwrap_or_default(), delivery.id.0);
                Ok(((delivery, rows::event(row, DELIVERY_WIDTH)?), finished, id))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db("read dead letters"))?;
    let Page {
        items: found,
        next_cursor,
    } = page_of(found, limit);
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
    let Some((base, mut out)) = empty_buckets(query)? else {
        return Ok(Vec::new());
    };
    let (width, from, to) = (query.bucket.millis(), millis(query.from), millis(query.to));
    let mut statement = conn
        .prepare_cached(
            "SELECT (a.at - ?3) / ?5 AS bucket, COUNT(*), COALESCE(SUM(a.success), 0), AVG(a.latency_ms) \
             FROM attempts a WHERE a.namespace = ?1 AND a.endpoint = ?2 AND a.at >= ?6 AND a.at < ?4 \
             AND a.outcome <> 'filtered' GROUP BY bucket ORDER BY bucket",
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
        fill_bucket(&mut out, index, attempts, successes, avg_latency_ms);
    }
    Ok(out)
}

/// Attempts of an endpoint with `since < at <= now`; filtered ones (no request was sent) are
/// left out. Whole minutes come from their rollups, the partial ones at the edges from the
/// attempts ([`WindowPlan`]).
fn window(conn: &Connection, endpoint: &EndpointRef, since: i64, now: i64) -> Result<WindowStats> {
    let plan = WindowPlan::new(since, now);
    let mut totals = WindowTotals::default();
    for (lo, hi) in plan.raw {
        let mut statement = conn
            .prepare_cached(
                "SELECT at, success, status_code, latency_ms FROM attempts \
                 WHERE namespace = ?1 AND endpoint = ?2 AND at > ?3 AND at <= ?4 AND outcome <> 'filtered'",
            )
            .map_err(db("read window attempts"))?;
        let samples = statement
            .query_map(params![endpoint.namespace, endpoint.name, lo, hi], |r| {
                Ok(AttemptSample {
                    at: r.get(0)?,
                    success: r.get(1)?,
                    available: is_available(r.get(2)?),
                    latency_ms: r.get(3)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db("read window attempts"))?;
        for sample in &samples {
            totals.add(sample);
        }
    }
    if let Some((first, last)) = plan.minutes {
        let mut statement = conn
            .prepare_cached(
                "SELECT attempts, successes, available, latencies FROM attempt_minutes \
                 WHERE namespace = ?1 AND endpoint = ?2 AND minute >= ?3 AND minute <= ?4",
            )
            .map_err(db("read window rollups"))?;
        let rows = statement
            .query_map(
                params![endpoint.namespace, endpoint.name, first, last],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?)),
            )
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db("read window rollups"))?;
        for (attempts, successes, available, latencies) in rows {
            totals.merge(WindowTotals::from_row(
                attempts, successes, available, &latencies,
            )?);
        }
    }
    Ok(totals.into_stats())
}

/// Totals, the `windows` asked for and queue counts of one endpoint.
pub fn endpoint_stats(
    conn: &Connection,
    endpoint: &EndpointRef,
    now: Timestamp,
    windows: StatsWindows,
) -> Result<EndpointStats> {
    let now_ms = millis(now);
    let span = |wanted: bool, ms: i64| -> Result<WindowStats> {
        if wanted {
            window(conn, endpoint, now_ms - ms, now_ms)
        } else {
            Ok(WindowStats::default())
        }
    };
    let mut stats = EndpointStats {
        last_hour: span(windows.hour, 3_600_000)?,
        last_day: span(windows.day, 86_400_000)?,
        ..EndpointStats::default()
    };
    let counters = conn
        .prepare_cached(
            "SELECT delivered, failed_attempts, dead_lettered, retries, last_attempt_at, last_success_at, \
             last_failure_at, last_status_code, last_error, filtered FROM endpoint_counters \
             WHERE namespace = ?1 AND endpoint = ?2",
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
                    filtered_total: unsigned(r.get(9)?),
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
         AND state IN ('pending', 'in_flight', 'held', 'queued', 'dead_lettered') GROUP BY state",
        params![endpoint.namespace, endpoint.name],
    )?;
    for (state, n) in by_state {
        add_endpoint_count(&mut stats, state, n);
    }
    stats.paused = super::lanes::pause_of(conn, endpoint)?;
    Ok(stats)
}

/// Deliveries a replay with `filter` selects, oldest event first, at most `limit`.
pub fn replay_candidates(
    conn: &Connection,
    filter: &ReplayFilter,
    limit: usize,
) -> Result<Vec<DeliveryRecord>> {
    let outcomes = replay_states(filter);
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
        filtered: 0,
    };
    for (state, n) in count_by_state(
        conn,
        "SELECT state, COUNT(*) FROM deliveries WHERE replay_id = ?1 GROUP BY state",
        [replay_id],
    )? {
        add_replay_count(&mut progress, state, n);
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
        queued: one("SELECT COUNT(*) FROM deliveries WHERE state = 'queued'")?,
    })
}
