//! Reads: dead letters, an endpoint's delivery log and its analytics.
use axum::extract::{Path, Query, Request, State};
use axum::Json;
use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::Access;
use super::error::ApiError;
use super::ApiState;
use crate::store::{
    AnalyticsBucket, AnalyticsQuery, AttemptLogEntry, BucketWidth, DeadLetter, EndpointRef,
    EventRecord, Page, PageRequest,
};

/// Page size when `limit` is not given, and the largest accepted.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;
/// Most analytics buckets one request may span.
pub const MAX_BUCKETS: i64 = 1000;

/// `?cursor=&limit=` and, for dead letters, `&endpoint=`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    pub endpoint: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

/// `?period=&start_date=&end_date=`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsParams {
    pub period: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
}

pub(super) fn query<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(request.uri())
        .map(|Query(params)| params)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// The page size: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub fn parse_limit(limit: Option<&str>) -> Result<usize, ApiError> {
    let Some(limit) = limit else {
        return Ok(DEFAULT_LIMIT);
    };
    match limit.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::field(
            "invalid_field",
            "limit",
            format!("limit: must be a whole number from 1 to {MAX_LIMIT}, not `{limit}`"),
        )),
    }
}

pub(super) fn page(params: &PageParams) -> Result<PageRequest, ApiError> {
    let limit = parse_limit(params.limit.as_deref())?;
    let cursor = params.cursor.clone().filter(|c| !c.is_empty());
    Ok(PageRequest::after(cursor, limit))
}

/// A store error of a paged read: a cursor the store cannot read is the caller's mistake.
pub(super) fn paged_error(error: crate::store::StoreError) -> ApiError {
    match error {
        crate::store::StoreError::InvalidArgument(message) => ApiError::field(
            "invalid_field",
            "cursor",
            format!("cursor: {message}; pass a next_cursor exactly as returned"),
        ),
        other => other.into(),
    }
}

/// `hour` (the default) or `day`.
pub fn parse_period(period: Option<&str>) -> Result<BucketWidth, ApiError> {
    match period {
        None | Some("hour") => Ok(BucketWidth::Hour),
        Some("day") => Ok(BucketWidth::Day),
        Some(other) => Err(ApiError::field(
            "invalid_field",
            "period",
            format!("period: must be `hour` or `day`, not `{other}`"),
        )),
    }
}

/// An RFC 3339 time, or a date (`YYYY-MM-DD`, UTC): its start, or for an end date its end (the
/// day is included).
pub fn parse_date(field: &str, value: &str, is_end: bool) -> Result<Timestamp, ApiError> {
    if let Ok(time) = value.parse::<Timestamp>() {
        return Ok(time);
    }
    let invalid = || {
        ApiError::field(
            "invalid_field",
            field,
            format!(
                "{field}: `{value}` is neither an RFC 3339 time (2024-01-31T12:00:00Z) \
                 nor a date (2024-01-31)"
            ),
        )
    };
    // Exactly `YYYY-MM-DD` (jiff would also take a local date-time and drop its time).
    let shaped = value.len() == 10
        && value.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !shaped {
        return Err(invalid());
    }
    let date: Date = value.parse().map_err(|_| invalid())?;
    let date = if is_end {
        date.checked_add(1.day()).map_err(|_| invalid())?
    } else {
        date
    };
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp())
        .map_err(|_| invalid())
}

/// The analytics range: `[start, end)`, by default the 24 hours before `now`.
pub fn analytics_range(
    params: &AnalyticsParams,
    bucket: BucketWidth,
    now: Timestamp,
) -> Result<(Timestamp, Timestamp), ApiError> {
    let end = match params.end_date.as_deref() {
        Some(end) => parse_date("end_date", end, true)?,
        None => now,
    };
    let start = match params.start_date.as_deref() {
        Some(start) => parse_date("start_date", start, false)?,
        None => end
            .checked_sub(24.hours())
            .map_err(|_| ApiError::field("invalid_field", "end_date", "end_date: out of range"))?,
    };
    if start >= end {
        return Err(ApiError::field(
            "invalid_field",
            "start_date",
            format!("start_date: must be before end_date ({start} is not before {end})"),
        ));
    }
    let width = bucket.millis();
    let first = start.as_millisecond().div_euclid(width) * width;
    let buckets = (end.as_millisecond() - first + width - 1) / width;
    if buckets > MAX_BUCKETS {
        let unit = match bucket {
            BucketWidth::Hour => "hourly",
            BucketWidth::Day => "daily",
        };
        return Err(ApiError::field(
            "invalid_field",
            "start_date",
            format!(
                "start_date: the range spans {buckets} {unit} buckets; at most {MAX_BUCKETS} \
                 (narrow the range or use period=day)"
            ),
        ));
    }
    Ok((start, end))
}

/// One attempt of the delivery log.
#[derive(Debug, Serialize)]
pub struct AttemptJson {
    pub delivery_id: i64,
    pub event_id: String,
    pub event_type: String,
    /// 1 for the first attempt of the delivery.
    pub attempt: u32,
    /// RFC 3339.
    pub at: String,
    pub status_code: Option<u16>,
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
    /// The start of the receiver's response body.
    pub response_snippet: Option<String>,
    pub success: bool,
    /// `delivered`, `retry`, `dead_lettered`, `held` or `filtered`: what followed the attempt.
    pub outcome: &'static str,
}

impl From<AttemptLogEntry> for AttemptJson {
    fn from(entry: AttemptLogEntry) -> Self {
        Self {
            delivery_id: entry.delivery_id.0,
            event_id: entry.event_id,
            event_type: entry.event_type,
            attempt: entry.record.attempt,
            at: entry.record.at.to_string(),
            status_code: entry.record.status_code,
            latency_ms: entry.record.latency_ms,
            error: entry.record.error,
            response_snippet: entry.record.response_snippet,
            success: entry.success,
            outcome: entry.outcome.as_str(),
        }
    }
}

/// A page: `next_cursor` is `null` on the last page.
#[derive(Debug, Serialize)]
pub struct PageJson<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> PageJson<T> {
    pub(super) fn from_page<S>(page: Page<S>) -> Self
    where
        T: From<S>,
    {
        Self {
            items: page.items.into_iter().map(T::from).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

/// The event of a dead letter, with its `data` as stored.
#[derive(Debug, Serialize)]
pub struct EventJson {
    pub event_id: String,
    pub event_type: String,
    pub created_at: String,
    pub data: Value,
}

impl From<EventRecord> for EventJson {
    fn from(event: EventRecord) -> Self {
        let data = crate::delivery::payload::stored_fields(&event.data)
            .map(Value::Object)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&event.data).into_owned()));
        Self {
            event_id: event.event_id,
            event_type: event.event_type,
            created_at: event.created_at.to_string(),
            data,
        }
    }
}

/// A dead-lettered delivery.
#[derive(Debug, Serialize)]
pub struct DeadLetterJson {
    pub delivery_id: i64,
    pub endpoint: String,
    pub event: EventJson,
    /// Attempts made.
    pub attempts: u32,
    pub reason: Option<String>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub dead_lettered_at: Option<String>,
    /// Set when the delivery was itself a replay.
    pub replay_id: Option<String>,
    /// Every attempt, oldest first.
    pub history: Vec<AttemptJson>,
}

impl From<DeadLetter> for DeadLetterJson {
    fn from(dead: DeadLetter) -> Self {
        let delivery = dead.delivery;
        Self {
            delivery_id: delivery.id.0,
            endpoint: delivery.endpoint.name,
            event: dead.event.into(),
            attempts: delivery.attempts,
            reason: delivery.dead_letter_reason,
            last_status_code: delivery.last_status_code,
            last_error: delivery.last_error,
            dead_lettered_at: delivery.finished_at.map(|t| t.to_string()),
            replay_id: delivery.replay_id,
            history: dead.attempts.into_iter().map(AttemptJson::from).collect(),
        }
    }
}

/// Attempts in one bucket.
#[derive(Debug, Serialize, PartialEq)]
pub struct BucketJson {
    /// RFC 3339; buckets are aligned to UTC hours or days.
    pub start: String,
    #[serde(flatten)]
    pub counts: CountsJson,
}

/// Attempt counts of a bucket or of the whole range.
#[derive(Debug, Serialize, PartialEq)]
pub struct CountsJson {
    pub attempts: u64,
    pub successes: u64,
    pub failures: u64,
    /// successes / attempts, `null` without attempts.
    pub success_rate: Option<f64>,
    pub avg_latency_ms: Option<f64>,
}

/// An endpoint's analytics.
#[derive(Debug, Serialize, PartialEq)]
pub struct AnalyticsJson {
    pub endpoint: String,
    pub period: &'static str,
    pub start_date: String,
    pub end_date: String,
    pub buckets: Vec<BucketJson>,
    /// Over the whole range; the latency average is weighted by each bucket's attempts.
    pub totals: CountsJson,
}

/// Totals of a range of buckets.
pub fn totals(buckets: &[AnalyticsBucket]) -> CountsJson {
    let attempts: u64 = buckets.iter().map(|b| b.attempts).sum();
    let successes: u64 = buckets.iter().map(|b| b.successes).sum();
    let failures: u64 = buckets.iter().map(|b| b.failures).sum();
    let (weighted, weight) = buckets
        .iter()
        .filter_map(|b| {
            b.avg_latency_ms
                .map(|avg| (avg * b.attempts as f64, b.attempts))
        })
        .fold((0.0, 0u64), |(sum, n), (w, a)| (sum + w, n + a));
    CountsJson {
        attempts,
        successes,
        failures,
        success_rate: (attempts > 0).then(|| successes as f64 / attempts as f64),
        avg_latency_ms: (weight > 0).then(|| weighted / weight as f64),
    }
}

/// `GET /v1/namespaces/{ns}/deadletters?endpoint=&cursor=&limit=`.
pub async fn dead_letters(
    State(state): State<ApiState>,
    Path(namespace): Path<String>,
    request: Request,
) -> Result<Json<PageJson<DeadLetterJson>>, ApiError> {
    let params = query::<PageParams>(&request);
    let endpoint = params
        .as_ref()
        .ok()
        .and_then(|p| p.endpoint.clone())
        .filter(|e| !e.is_empty());
    state
        .reviewer
        .check(
            request.headers(),
            Access::read_endpoints(&namespace, endpoint.as_deref()),
        )
        .await?;
    state.served(&namespace)?;
    let params = params?;
    let page = page(&params)?;
    let found = state
        .shared
        .store
        .dead_letters(&namespace, endpoint.as_deref(), page)
        .await
        .map_err(paged_error)?;
    Ok(Json(PageJson::from_page(found)))
}

/// `GET /v1/namespaces/{ns}/endpoints/{name}/deliveries?cursor=&limit=`.
pub async fn deliveries(
    State(state): State<ApiState>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Result<Json<PageJson<AttemptJson>>, ApiError> {
    state
        .reviewer
        .check(
            request.headers(),
            Access::read_endpoints(&namespace, Some(&name)),
        )
        .await?;
    let params: PageParams = query(&request)?;
    state.endpoint_known(&namespace, &name).await?;
    if params.endpoint.is_some() {
        return Err(ApiError::field(
            "unknown_field",
            "endpoint",
            "endpoint: not a parameter here; the endpoint is in the path",
        ));
    }
    let page = page(&params)?;
    let found = state
        .shared
        .store
        .delivery_log(&EndpointRef::new(&namespace, &name), page)
        .await
        .map_err(paged_error)?;
    Ok(Json(PageJson::from_page(found)))
}

/// `GET /v1/namespaces/{ns}/endpoints/{name}/analytics?period=&start_date=&end_date=`.
pub async fn analytics(
    State(state): State<ApiState>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Result<Json<AnalyticsJson>, ApiError> {
    state
        .reviewer
        .check(
            request.headers(),
            Access::read_endpoints(&namespace, Some(&name)),
        )
        .await?;
    let params: AnalyticsParams = query(&request)?;
    state.endpoint_known(&namespace, &name).await?;
    let bucket = parse_period(params.period.as_deref())?;
    let (from, to) = analytics_range(&params, bucket, Timestamp::now())?;
    let buckets = state
        .shared
        .store
        .analytics(AnalyticsQuery {
            endpoint: EndpointRef::new(&namespace, &name),
            bucket,
            from,
            to,
        })
        .await?;
    Ok(Json(AnalyticsJson {
        endpoint: name,
        period: match bucket {
            BucketWidth::Hour => "hour",
            BucketWidth::Day => "day",
        },
        start_date: from.to_string(),
        end_date: to.to_string(),
        totals: totals(&buckets),
        buckets: buckets
            .into_iter()
            .map(|b| BucketJson {
                start: b.start.to_string(),
                counts: CountsJson {
                    attempts: b.attempts,
                    successes: b.successes,
                    failures: b.failures,
                    success_rate: b.success_rate,
                    avg_latency_ms: b.avg_latency_ms,
                },
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn field(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        let e = result.unwrap_err();
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        e.body()["error"]["field"].as_str().unwrap_or("").to_owned()
    }

    #[test]
    fn limits() {
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(parse_limit(Some("1")).unwrap(), 1);
        assert_eq!(parse_limit(Some("500")).unwrap(), 500);
        for bad in ["0", "501", "-1", "ten", ""] {
            assert_eq!(field(parse_limit(Some(bad))), "limit");
        }
    }

    #[test]
    fn periods() {
        assert_eq!(parse_period(None).unwrap(), BucketWidth::Hour);
        assert_eq!(parse_period(Some("day")).unwrap(), BucketWidth::Day);
        assert_eq!(field(parse_period(Some("week"))), "period");
    }

    #[test]
    fn dates() {
        assert_eq!(
            parse_date("start_date", "2024-01-31T12:00:00Z", false).unwrap(),
            ts("2024-01-31T12:00:00Z")
        );
        assert_eq!(
            parse_date("start_date", "2024-01-31T12:00:00+02:00", false).unwrap(),
            ts("2024-01-31T10:00:00Z")
        );
        assert_eq!(
            parse_date("start_date", "2024-01-01", false).unwrap(),
            ts("2024-01-01T00:00:00Z")
        );
        // An end date includes its day.
        assert_eq!(
            parse_date("end_date", "2024-01-31", true).unwrap(),
            ts("2024-02-01T00:00:00Z")
        );
        for bad in [
            "yesterday",
            "2024-13-01",
            "2024-01-31T12:00:00",
            "1706700000",
        ] {
            let e = parse_date("end_date", bad, true).unwrap_err();
            let body = e.body();
            assert_eq!(body["error"]["field"], "end_date");
            assert!(body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("RFC 3339"));
        }
    }

    #[test]
    fn ranges() {
        let now = ts("2024-02-10T15:30:00Z");
        let default = analytics_range(&AnalyticsParams::default(), BucketWidth::Hour, now);
        assert_eq!(default.unwrap(), (ts("2024-02-09T15:30:00Z"), now));
        let seed = AnalyticsParams {
            period: Some("day".into()),
            start_date: Some("2024-01-01".into()),
            end_date: Some("2024-01-31".into()),
        };
        assert_eq!(
            analytics_range(&seed, BucketWidth::Day, now).unwrap(),
            (ts("2024-01-01T00:00:00Z"), ts("2024-02-01T00:00:00Z"))
        );
        let backwards = AnalyticsParams {
            start_date: Some("2024-02-01".into()),
            end_date: Some("2024-01-01".into()),
            ..Default::default()
        };
        assert_eq!(
            field(analytics_range(&backwards, BucketWidth::Day, now)),
            "start_date"
        );
        let long = AnalyticsParams {
            start_date: Some("2023-01-01".into()),
            end_date: Some("2023-12-31".into()),
            ..Default::default()
        };
        assert_eq!(
            field(analytics_range(&long, BucketWidth::Hour, now)),
            "start_date"
        );
        assert!(analytics_range(&long, BucketWidth::Day, now).is_ok());
    }

    #[test]
    fn totals_weight_latency_by_attempts() {
        let bucket = |attempts, successes, avg| AnalyticsBucket {
            start: ts("2024-01-01T00:00:00Z"),
            attempts,
            successes,
            failures: attempts - successes,
            success_rate: None,
            avg_latency_ms: avg,
        };
        let t = totals(&[
            bucket(3, 3, Some(10.0)),
            bucket(1, 0, Some(50.0)),
            bucket(0, 0, None),
        ]);
        assert_eq!((t.attempts, t.successes, t.failures), (4, 3, 1));
        assert_eq!(t.success_rate, Some(0.75));
        assert_eq!(t.avg_latency_ms, Some(20.0));
        let empty = totals(&[]);
        assert_eq!((empty.success_rate, empty.avg_latency_ms), (None, None));
    }
}
