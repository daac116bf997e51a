//! Backend-independent pieces every SQL backend shares: argument validation, page cursors,
//! analytics buckets, window statistics and what an attempt does to a delivery. Only the SQL
//! differs between backends; what the contract checks about these is decided here, once.
use jiff::Timestamp;

use crate::store::minutes::{is_available, AttemptSample};
use crate::store::{
    AnalyticsBucket, AnalyticsQuery, AttemptOutcome, AttemptResult, ClaimOnInsert, ClaimedDelivery,
    DeliveryId, DeliveryRecord, DeliveryState, EndpointRef, EndpointStats, EnqueueRequest,
    EventRecord, EventSource, EventTypePattern, NextStep, Page, PageRequest, RecordOutcome,
    ReplayFilter, ReplayProgress, Result, StoreError, WindowStats,
};

/// Columns of a delivery row, from alias `d` (each backend maps them by position).
pub const DELIVERY_COLUMNS: &str =
    "d.id, d.event_id, d.namespace, d.endpoint, d.state, d.attempts, \
     d.next_attempt_at, d.last_attempt_at, d.last_status_code, d.last_error, d.delivered_at, \
     d.dead_letter_reason, d.finished_at, d.replay_id, d.created_at, d.lane";
pub const DELIVERY_WIDTH: usize = 16;

/// Columns of an event row, from alias `e`.
pub const EVENT_COLUMNS: &str = "e.event_id, e.namespace, e.event_type, e.data, e.created_at, \
     e.resource_name, e.resource_uid, e.idempotency_key, e.traceparent";

/// Columns of an attempt row, from alias `a`.
pub const ATTEMPT_COLUMNS: &str = "a.delivery_id, a.event_id, a.event_type, a.namespace, a.endpoint, \
     a.attempt, a.at, a.status_code, a.latency_ms, a.error, a.response_snippet, a.success, a.outcome, a.id";

/// Analytics ranges are refused beyond this many buckets.
pub const MAX_BUCKETS: i64 = 10_000;

/// Unix milliseconds, the unit every backend stores times in.
pub fn millis(t: Timestamp) -> i64 {
    t.as_millisecond()
}

/// A count as `u64` (saturating).
pub fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A database count as `u64` (negative reads as 0).
pub fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A `usize` limit as a SQL integer (saturating).
pub fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Refuses events and endpoint names the store cannot key on.
pub fn validate_enqueue(request: &EnqueueRequest) -> Result<()> {
    let event = &request.event;
    let empty = [
        ("event_id", &event.event_id),
        ("namespace", &event.namespace),
        ("event_type", &event.event_type),
    ]
    .into_iter()
    .find(|(_, value)| value.is_empty());
    if let Some((field, _)) = empty {
        return Err(StoreError::InvalidArgument(format!(
            "event {field} must not be empty"
        )));
    }
    if request.endpoints.iter().any(String::is_empty) {
        return Err(StoreError::InvalidArgument(
            "endpoint names must not be empty".into(),
        ));
    }
    Ok(())
}

/// The `(resource_name, resource_uid)` columns of an event's source (`NULL`s when ingested).
pub fn resource_columns(source: &EventSource) -> (Option<&str>, Option<&str>) {
    match source {
        EventSource::Ingest => (None, None),
        EventSource::Resource { name, uid } => (Some(name.as_str()), Some(uid.as_str())),
    }
}

/// The endpoint names of an enqueue, each once, in the order given.
pub fn distinct_endpoints(request: &EnqueueRequest) -> Vec<&str> {
    let mut seen = std::collections::HashSet::new();
    request
        .endpoints
        .iter()
        .map(String::as_str)
        .filter(|name| seen.insert(*name))
        .collect()
}

/// The claim under which the delivery of `request` to endpoint `name` is created, if it asks for
/// one ([`EnqueueRequest::claim`]). A delivery with a lane is never claimed at insert: whether it
/// may go depends on the lane's earlier deliveries.
pub fn claim_on_insert<'a>(request: &'a EnqueueRequest, name: &str) -> Option<&'a ClaimOnInsert> {
    request
        .claim
        .as_ref()
        .filter(|claim| claim.endpoints.contains(name) && !request.lanes.contains_key(name))
}

/// The delivery of `request` to `endpoint` just inserted as `id` in `state`, as a claim of it
/// would read it back (times in the store's milliseconds), if the insert claimed it: the request
/// asked for a claim and the delivery is InFlight.
pub fn claimed_at_insert(
    request: &EnqueueRequest,
    endpoint: EndpointRef,
    id: DeliveryId,
    state: DeliveryState,
) -> Option<ClaimedDelivery> {
    let claim = request.claim.as_ref()?;
    if state != DeliveryState::InFlight {
        return None;
    }
    let lease_expires_at = claim.lease_expires_at;
    let event = &request.event;
    let created_at =
        Timestamp::from_millisecond(millis(event.created_at)).unwrap_or(event.created_at);
    Some(ClaimedDelivery {
        delivery: DeliveryRecord::new(
            id,
            event.event_id.clone(),
            endpoint,
            DeliveryState::InFlight,
            created_at,
        ),
        event: EventRecord {
            event_id: event.event_id.clone(),
            namespace: event.namespace.clone(),
            event_type: event.event_type.clone(),
            data: event.data.clone(),
            created_at,
            source: event.source.clone(),
            idempotency_key: event.idempotency_key.clone(),
            trace_parent: event.trace_parent.clone(),
        },
        lease_expires_at: Timestamp::from_millisecond(millis(lease_expires_at))
            .unwrap_or(lease_expires_at),
    })
}

/// A keyset page cursor: the sort time and row id of the last item returned.
pub fn encode_cursor(time_ms: i64, id: i64) -> String {
    format!("{time_ms}.{id}")
}

/// Parses [`encode_cursor`]'s format; anything else is [`StoreError::InvalidArgument`].
pub fn decode_cursor(cursor: &str) -> Result<(i64, i64)> {
    let invalid = || StoreError::InvalidArgument(format!("malformed page cursor {cursor:?}"));
    let (time, id) = cursor.split_once('.').ok_or_else(invalid)?;
    Ok((
        time.parse().map_err(|_| invalid())?,
        id.parse().map_err(|_| invalid())?,
    ))
}

/// The cursor of an event page: its creation time and id (events have no row number in every
/// backend; event ids are unique).
pub fn encode_event_cursor(created_ms: i64, event_id: &str) -> String {
    format!("{created_ms}.{event_id}")
}

/// The page size and the `(created_at, event_id)` every event of the page is before.
pub fn event_page_bounds(page: &PageRequest) -> Result<(usize, i64, String)> {
    let Some(cursor) = &page.cursor else {
        // `~` sorts after every event id (`evt_…`, ASCII letters and digits).
        return Ok((page_limit(page.limit), i64::MAX, "~".into()));
    };
    let invalid = || StoreError::InvalidArgument(format!("malformed page cursor {cursor:?}"));
    let (time, id) = cursor.split_once('.').ok_or_else(invalid)?;
    Ok((
        page_limit(page.limit),
        time.parse().map_err(|_| invalid())?,
        id.to_owned(),
    ))
}

/// A page of events from a `limit + 1` result, newest first.
pub fn event_page(mut found: Vec<EventRecord>, limit: usize) -> Page<EventRecord> {
    let next_cursor = next_cursor(&mut found, limit, |e| {
        encode_event_cursor(e.created_at.as_millisecond(), &e.event_id)
    });
    Page {
        items: found,
        next_cursor,
    }
}

/// A type pattern as two SQL parameters: the exact type, or the prefix (`user.` of `user.*`);
/// both `None` for `*`.
pub fn type_filter(pattern: &EventTypePattern) -> (Option<String>, Option<String>) {
    match pattern {
        EventTypePattern::Any => (None, None),
        EventTypePattern::Prefix(prefix) => (None, Some(prefix.clone())),
        EventTypePattern::Exact(exact) => (Some(exact.clone()), None),
    }
}

/// Security kinds as one SQL parameter (`,a,b,`; empty: every kind).
pub fn kinds_filter(kinds: &[crate::security::SecurityKind]) -> String {
    if kinds.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    format!(",{},", names.join(","))
}

/// The columns of a security log row, in the order [`security_record`] reads them.
pub const SECURITY_COLUMNS: &str =
    "id, at, kind, namespace, endpoint, source, user_name, address, detail";

/// A security log row from its columns' values.
#[allow(clippy::too_many_arguments)]
pub fn security_record(
    id: i64,
    at_ms: i64,
    kind: &str,
    namespace: Option<String>,
    endpoint: Option<String>,
    source: Option<String>,
    user: Option<String>,
    address: Option<String>,
    detail: String,
) -> Result<crate::security::SecurityRecord> {
    let kind = crate::security::SecurityKind::parse(kind).ok_or_else(|| {
        StoreError::Schema(format!(
            "unknown security log kind {kind:?} (written by a newer binary?)"
        ))
    })?;
    Ok(crate::security::SecurityRecord {
        id,
        at: Timestamp::from_millisecond(at_ms)
            .map_err(|e| StoreError::Schema(format!("security log time {at_ms}: {e}")))?,
        event: crate::security::SecurityEvent {
            kind,
            namespace,
            endpoint,
            source,
            user,
            address,
            detail,
        },
    })
}

/// A page size within 1..=1000.
pub fn page_limit(limit: usize) -> usize {
    limit.clamp(1, 1000)
}

/// The page size and the `(time, id)` every item of the page is before.
pub fn page_bounds(page: &PageRequest) -> Result<(usize, i64, i64)> {
    let (before_at, before_id) = match &page.cursor {
        Some(cursor) => decode_cursor(cursor)?,
        None => (i64::MAX, i64::MAX),
    };
    Ok((page_limit(page.limit), before_at, before_id))
}

/// Truncates a `limit + 1` result to `limit` and returns the cursor after the last kept item.
pub fn next_cursor<T>(
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

/// A page from a `limit + 1` result of `(item, sort time ms, row id)`.
pub fn page_of<T>(mut found: Vec<(T, i64, i64)>, limit: usize) -> Page<T> {
    let next_cursor = next_cursor(&mut found, limit, |(_, at, id)| encode_cursor(*at, *id));
    Page {
        items: found.into_iter().map(|(item, _, _)| item).collect(),
        next_cursor,
    }
}

/// The empty, UTC-aligned buckets of an analytics query and the first bucket's start (ms):
/// attempt `at` falls in bucket `(at - base) / width`. `None` for an empty range.
pub fn empty_buckets(query: &AnalyticsQuery) -> Result<Option<(i64, Vec<AnalyticsBucket>)>> {
    let width = query.bucket.millis();
    let (from, to) = (millis(query.from), millis(query.to));
    if from >= to {
        return Ok(None);
    }
    let base = from.div_euclid(width) * width;
    let buckets = (to - base + width - 1) / width;
    if buckets > MAX_BUCKETS {
        return Err(StoreError::InvalidArgument(format!(
            "analytics range spans {buckets} buckets; at most {MAX_BUCKETS}"
        )));
    }
    let out = (0..buckets)
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
    Ok(Some((base, out)))
}

/// Fills bucket `index` (as the SQL computed it) with its counts; out-of-range indexes are ignored.
pub fn fill_bucket(
    buckets: &mut [AnalyticsBucket],
    index: i64,
    attempts: i64,
    successes: i64,
    avg_latency_ms: Option<f64>,
) {
    let Some(bucket) = usize::try_from(index).ok().and_then(|i| buckets.get_mut(i)) else {
        return;
    };
    bucket.attempts = unsigned(attempts);
    bucket.successes = unsigned(successes);
    bucket.failures = bucket.attempts.saturating_sub(bucket.successes);
    bucket.success_rate = ratio(bucket.successes, bucket.attempts);
    bucket.avg_latency_ms = avg_latency_ms;
}

/// The nearest-rank 95th percentile's zero-based offset among `n` sorted latencies (`n > 0`).
pub fn p95_offset(n: i64) -> i64 {
    (n * 95 + 99) / 100 - 1
}

/// A window's statistics from its counts.
pub fn window_stats(
    attempts: u64,
    successes: u64,
    available: u64,
    avg_latency_ms: Option<f64>,
    p95_latency_ms: Option<u64>,
) -> WindowStats {
    let failures = attempts.saturating_sub(successes);
    WindowStats {
        attempts,
        successes,
        failures,
        success_rate: ratio(successes, attempts),
        error_rate: ratio(failures, attempts),
        available,
        availability: ratio(available, attempts),
        avg_latency_ms,
        p95_latency_ms,
    }
}

/// Adds a count of an endpoint's deliveries in `state` to its stats.
pub fn add_endpoint_count(stats: &mut EndpointStats, state: DeliveryState, n: u64) {
    match state {
        DeliveryState::Pending => stats.pending_count = n,
        DeliveryState::InFlight => stats.in_flight_count = n,
        DeliveryState::Held => stats.held_count = n,
        DeliveryState::Queued => stats.queued_count = n,
        DeliveryState::DeadLettered => stats.dead_letter_count = n,
        // Finished and not kept as a count: the totals come from the counters.
        DeliveryState::Delivered | DeliveryState::Filtered => {}
    }
}

/// Adds a count of a replay's deliveries in `state` to its progress.
pub fn add_replay_count(progress: &mut ReplayProgress, state: DeliveryState, n: u64) {
    match state {
        DeliveryState::Delivered => progress.delivered += n,
        DeliveryState::DeadLettered => progress.dead_lettered += n,
        DeliveryState::Filtered => progress.filtered += n,
        DeliveryState::Pending
        | DeliveryState::InFlight
        | DeliveryState::Held
        | DeliveryState::Queued => progress.outstanding += n,
    }
}

/// The final states a replay filter selects (both when it names none). Filtered deliveries are
/// never selected: replayed, the transform would drop the event again.
pub fn replay_states(filter: &ReplayFilter) -> Vec<DeliveryState> {
    if filter.outcomes.is_empty() {
        vec![DeliveryState::Delivered, DeliveryState::DeadLettered]
    } else {
        filter.outcomes.iter().map(|o| o.state()).collect()
    }
}

/// Where a delivery goes after an attempt its claimer still held the lease for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition<'a> {
    pub state: DeliveryState,
    pub next_attempt_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub dead_letter_reason: Option<&'a str>,
    pub finished_at: Option<i64>,
}

/// The attempt's outcome as logged: a retry of an endpoint held meanwhile is `Held`.
pub fn attempt_outcome(next: &NextStep, endpoint_held: bool) -> AttemptOutcome {
    match AttemptOutcome::of(next) {
        AttemptOutcome::Retry if endpoint_held => AttemptOutcome::Held,
        outcome => outcome,
    }
}

/// The delivery's next state after an attempt logged with `outcome` (from [`attempt_outcome`]).
pub fn transition(result: &AttemptResult, outcome: AttemptOutcome) -> Transition<'_> {
    let at = millis(result.record.at);
    let moved = |state, next_attempt_at| Transition {
        state,
        next_attempt_at,
        delivered_at: None,
        dead_letter_reason: None,
        finished_at: None,
    };
    match (&result.next, outcome) {
        // A retry of a held endpoint keeps its time: released early, it still waits for it.
        (NextStep::Retry { at: retry_at }, AttemptOutcome::Held) => {
            moved(DeliveryState::Held, Some(millis(*retry_at)))
        }
        (NextStep::Retry { at: retry_at }, _) => {
            moved(DeliveryState::Pending, Some(millis(*retry_at)))
        }
        (NextStep::Delivered, _) => Transition {
            delivered_at: Some(at),
            finished_at: Some(at),
            ..moved(DeliveryState::Delivered, None)
        },
        (NextStep::DeadLetter { reason }, _) => Transition {
            dead_letter_reason: Some(reason.as_str()),
            finished_at: Some(at),
            ..moved(DeliveryState::DeadLettered, None)
        },
        (NextStep::Held, _) => moved(DeliveryState::Held, None),
        // Finished without a request: no delivered_at, no dead letter reason.
        (NextStep::Filtered, _) => Transition {
            finished_at: Some(at),
            ..moved(DeliveryState::Filtered, None)
        },
    }
}

/// Whether an attempt logged with `outcome` counts as a request made: in the failure counters,
/// the endpoint's last attempt, status and error, the window statistics and analytics (whose SQL
/// leaves out `outcome = 'filtered'`). A filtered attempt sent nothing: it counts in none.
pub fn counts_as_attempt(outcome: AttemptOutcome) -> bool {
    outcome != AttemptOutcome::Filtered
}

/// What one attempt adds to its endpoint's counters (`endpoint_counters`): the increments, and
/// the "last" values, which the backends move only forward in time (`None` leaves one as is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterBump {
    pub delivered: i64,
    pub failed_attempts: i64,
    pub dead_lettered: i64,
    pub retries: i64,
    pub filtered: i64,
    pub last_attempt_at: Option<i64>,
    pub last_success_at: Option<i64>,
    pub last_failure_at: Option<i64>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    /// The attempts the endpoint's per-minute rollups add up ([`crate::store::minutes`]); none
    /// for a filtered attempt.
    pub samples: Vec<AttemptSample>,
}

impl CounterBump {
    /// Folds in a bump recorded after this one, so that applying the result once leaves the
    /// backends' upsert where applying the two in turn would: counts add up, and each "last"
    /// value is the later one (the later bump's on a tie), its status or error moving with it.
    pub fn then(&mut self, later: CounterBump) {
        self.delivered += later.delivered;
        self.failed_attempts += later.failed_attempts;
        self.dead_lettered += later.dead_lettered;
        self.retries += later.retries;
        self.filtered += later.filtered;
        if moves_forward(later.last_attempt_at, self.last_attempt_at) {
            self.last_attempt_at = later.last_attempt_at;
            self.last_status_code = later.last_status_code;
        }
        if moves_forward(later.last_success_at, self.last_success_at) {
            self.last_success_at = later.last_success_at;
        }
        if moves_forward(later.last_failure_at, self.last_failure_at) {
            self.last_failure_at = later.last_failure_at;
            self.last_error = later.last_error;
        }
        self.samples.extend(later.samples);
    }
}

/// The upsert's rule for a "last" time: a new value replaces none or one no later than itself.
fn moves_forward(new: Option<i64>, current: Option<i64>) -> bool {
    new.is_some_and(|new| current.is_none_or(|current| new >= current))
}

/// What recording one attempt did, and what it adds to its endpoint's counters (none when
/// nothing was logged), for the caller to write.
pub type Recorded = (RecordOutcome, Option<(EndpointRef, CounterBump)>);

/// The counter bumps of a batch of attempts, folded into one per endpoint: a batch then writes
/// each endpoint's counters (and minute rollups) once instead of once per attempt.
#[derive(Debug, Default)]
pub struct CounterTally {
    bumps: Vec<(EndpointRef, CounterBump)>,
    index: std::collections::HashMap<EndpointRef, usize>,
}

impl CounterTally {
    pub fn add(&mut self, endpoint: EndpointRef, bump: CounterBump) {
        match self.index.get(&endpoint) {
            Some(&at) => self.bumps[at].1.then(bump),
            None => {
                self.index.insert(endpoint.clone(), self.bumps.len());
                self.bumps.push((endpoint, bump));
            }
        }
    }

    /// Adds a recorded attempt's bump, if it has one, and gives back its outcome.
    pub fn take(&mut self, (outcome, bump): Recorded) -> RecordOutcome {
        if let Some((endpoint, bump)) = bump {
            self.add(endpoint, bump);
        }
        outcome
    }

    /// The bumps in endpoint order: two batches that write the same endpoints' rows lock them
    /// in the same order (on PostgreSQL, two replicas' batches cannot deadlock on them).
    pub fn into_bumps(mut self) -> Vec<(EndpointRef, CounterBump)> {
        self.bumps.sort_by(|(a, _), (b, _)| {
            (a.namespace.as_str(), a.name.as_str()).cmp(&(b.namespace.as_str(), b.name.as_str()))
        });
        self.bumps
    }
}

/// The counters an attempt logged with `outcome` bumps (`success`: it delivered).
pub fn counter_bump(result: &AttemptResult, outcome: AttemptOutcome, success: bool) -> CounterBump {
    let at = millis(result.record.at);
    let counted = counts_as_attempt(outcome);
    let failed = counted && !success;
    CounterBump {
        delivered: i64::from(success),
        failed_attempts: i64::from(failed),
        dead_lettered: i64::from(outcome == AttemptOutcome::DeadLettered),
        retries: i64::from(outcome == AttemptOutcome::Retry),
        filtered: i64::from(outcome == AttemptOutcome::Filtered),
        last_attempt_at: counted.then_some(at),
        last_success_at: success.then_some(at),
        last_failure_at: failed.then_some(at),
        last_status_code: result.record.status_code.filter(|_| counted),
        last_error: failure_text(result, success),
        samples: counted
            .then(|| AttemptSample {
                at,
                success,
                available: is_available(result.record.status_code.map(i64::from)),
                latency_ms: result
                    .record
                    .latency_ms
                    .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)),
            })
            .into_iter()
            .collect(),
    }
}

/// The error an endpoint's "last error" shows for a failed attempt; `None` for a success and
/// for a filtered attempt (which is no failure).
pub fn failure_text(result: &AttemptResult, success: bool) -> Option<String> {
    match (&result.record.error, result.record.status_code) {
        _ if success || matches!(result.next, NextStep::Filtered) => None,
        (Some(error), _) => Some(error.clone()),
        (None, Some(code)) => Some(format!("HTTP {code}")),
        (None, None) => Some("attempt failed".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The backends' upsert of one bump into a stored row (the row starts as the first bump).
    fn upsert(row: &mut CounterBump, bump: &CounterBump) {
        let old = row.clone();
        row.delivered += bump.delivered;
        row.failed_attempts += bump.failed_attempts;
        row.dead_lettered += bump.dead_lettered;
        row.retries += bump.retries;
        row.filtered += bump.filtered;
        // Every CASE reads the row as it was before the statement, as SQL does.
        if bump.last_attempt_at.is_some()
            && (old.last_attempt_at.is_none() || bump.last_attempt_at >= old.last_attempt_at)
        {
            row.last_status_code = bump.last_status_code;
            row.last_attempt_at = bump.last_attempt_at;
        }
        if bump.last_success_at.is_some()
            && (old.last_success_at.is_none() || bump.last_success_at >= old.last_success_at)
        {
            row.last_success_at = bump.last_success_at;
        }
        if bump.last_failure_at.is_some()
            && (old.last_failure_at.is_none() || bump.last_failure_at >= old.last_failure_at)
        {
            row.last_error.clone_from(&bump.last_error);
            row.last_failure_at = bump.last_failure_at;
        }
    }

    fn any_bump() -> impl Strategy<Value = CounterBump> {
        let at = proptest::option::of(0i64..5);
        (
            (0i64..2, 0i64..2, 0i64..2, 0i64..2, 0i64..2),
            (at.clone(), at.clone(), at),
            proptest::option::of(200u16..203),
            proptest::option::of("[a-c]"),
        )
            .prop_map(
                |((d, f, x, r, t), (attempt, success, failure), code, error)| CounterBump {
                    delivered: d,
                    failed_attempts: f,
                    dead_lettered: x,
                    retries: r,
                    filtered: t,
                    last_attempt_at: attempt,
                    last_success_at: success,
                    last_failure_at: failure,
                    last_status_code: code,
                    last_error: error,
                    samples: Vec::new(),
                },
            )
    }

    proptest! {
        /// A batch's tally written once leaves an endpoint's counters exactly where writing
        /// each attempt's bump in turn would (times out of order and ties included).
        #[test]
        fn a_folded_batch_upserts_like_its_attempts_in_turn(
            row in any_bump(),
            batch in proptest::collection::vec(any_bump(), 1..12),
        ) {
            let mut in_turn = row.clone();
            for bump in &batch {
                upsert(&mut in_turn, bump);
            }
            let endpoint = EndpointRef { namespace: "ns".into(), name: "e".into() };
            let mut tally = CounterTally::default();
            for bump in batch {
                tally.add(endpoint.clone(), bump);
            }
            let bumps = tally.into_bumps();
            prop_assert_eq!(bumps.len(), 1);
            let mut at_once = row;
            upsert(&mut at_once, &bumps[0].1);
            prop_assert_eq!(at_once, in_turn);
        }
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        assert_eq!(
            decode_cursor(&encode_cursor(1_700_000_000_000, 42)).unwrap(),
            (1_700_000_000_000, 42)
        );
        assert_eq!(decode_cursor(&encode_cursor(-5, 1)).unwrap(), (-5, 1));
        assert!(decode_cursor("nope").is_err());
        assert!(decode_cursor("1.x").is_err());
    }

    fn attempt(next: NextStep) -> AttemptResult {
        AttemptResult {
            delivery_id: crate::store::DeliveryId(1),
            owner: "w".into(),
            record: crate::store::AttemptRecord {
                at: Timestamp::from_millisecond(5_000).unwrap(),
                attempt: 2,
                status_code: None,
                latency_ms: None,
                error: None,
                response_snippet: None,
            },
            next,
            pause_on_dead_letter: true,
        }
    }

    #[test]
    fn a_filtered_attempt_finishes_without_delivering_or_failing() {
        let result = attempt(NextStep::Filtered);
        let outcome = attempt_outcome(&result.next, true);
        assert_eq!(outcome, AttemptOutcome::Filtered, "held or not");
        assert_eq!(
            transition(&result, outcome),
            Transition {
                state: DeliveryState::Filtered,
                next_attempt_at: None,
                delivered_at: None,
                dead_letter_reason: None,
                finished_at: Some(5_000),
            }
        );
        assert_eq!(failure_text(&result, false), None);
        assert_eq!(
            counter_bump(&result, outcome, false),
            CounterBump {
                delivered: 0,
                failed_attempts: 0,
                dead_lettered: 0,
                retries: 0,
                filtered: 1,
                last_attempt_at: None,
                last_success_at: None,
                last_failure_at: None,
                last_status_code: None,
                last_error: None,
                samples: Vec::new(),
            }
        );
        // A failed attempt without a status still counts as one.
        let failed = attempt(NextStep::Retry {
            at: Timestamp::from_millisecond(9_000).unwrap(),
        });
        let bump = counter_bump(&failed, AttemptOutcome::Retry, false);
        assert_eq!(
            (bump.failed_attempts, bump.retries, bump.filtered),
            (1, 1, 0)
        );
        assert_eq!(bump.last_failure_at, Some(5_000));
        assert_eq!(bump.last_error.as_deref(), Some("attempt failed"));
    }

    #[test]
    fn filtered_deliveries_count_as_finished_in_progress_and_stats() {
        let mut progress = ReplayProgress {
            replay_id: "r".into(),
            endpoint: crate::store::EndpointRef::new("ns", "a"),
            created_at: Timestamp::UNIX_EPOCH,
            matched: 3,
            requeued: 3,
            outstanding: 0,
            delivered: 0,
            dead_lettered: 0,
            filtered: 0,
        };
        add_replay_count(&mut progress, DeliveryState::Filtered, 2);
        add_replay_count(&mut progress, DeliveryState::Queued, 1);
        assert_eq!((progress.filtered, progress.outstanding), (2, 1));
        let mut stats = EndpointStats::default();
        add_endpoint_count(&mut stats, DeliveryState::Filtered, 4);
        assert_eq!(stats, EndpointStats::default(), "totals come from counters");
    }

    #[test]
    fn p95_is_nearest_rank() {
        assert_eq!(p95_offset(1), 0);
        assert_eq!(p95_offset(5), 4);
        assert_eq!(p95_offset(20), 18);
        assert_eq!(p95_offset(100), 94);
    }
}
