//! The recorder: attempt results go to the store in batches (one store job for all that wait),
//! then their endpoints and events are marked for status and the loop is woken for retries.
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::pacing::next_round_after;
use super::Deps;
use super::RECORD_BATCH;
use crate::dispatcher::status::queue::Change;
use crate::store::{
    AttemptRecord, AttemptResult, ClaimedDelivery, EndpointRef, EventSource, NextStep,
    RecordOutcome,
};

/// What the recorder is handed.
pub(super) enum ToRecorder {
    Result(Box<Recorded>),
    /// Answered once everything handed over before it is committed (or failed to commit).
    Flush(oneshot::Sender<()>),
}

/// An attempt's result on its way to the store.
pub(super) struct Recorded {
    pub(super) result: AttemptResult,
    pub(super) endpoint: EndpointRef,
    /// The event, if it has a status to write (a `WebhookEvent`; ingested events have none).
    pub(super) event_id: Option<String>,
    /// Wake the loop once it is recorded: a retry is due later, or a delivery of an ordering
    /// lane finished and its successor is due now.
    pub(super) wake: bool,
}

/// The event id to mark for a status write: only `WebhookEvent` resources have a status. Marking
/// ingested events too cost a store read per delivered event every status round for nothing.
pub(super) fn status_event(delivery: &ClaimedDelivery) -> Option<&str> {
    matches!(delivery.event.source, EventSource::Resource { .. })
        .then_some(delivery.event.event_id.as_str())
}

/// Records attempt results in batches (one store job for all that wait: with SQLite one
/// savepoint each in one group commit), then marks their endpoints and events for status and
/// wakes the loop for retries. Until a result is recorded its delivery stays in flight under its
/// lease, so a crash before that makes the attempt again (at least once).
///
/// After a job smaller than [`RECORD_BATCH`], the next gathers results until
/// `--record-interval-ms` after it was taken, so a replica with a trickle of results writes them
/// in fewer, larger transactions. Slots are given back before results reach the recorder, so
/// that holds no attempt back; a result something waits for (a flush, a lane's successor or a
/// retry to schedule: [`waited_for`]) ends the gathering at once.
pub(super) async fn record_results(deps: Arc<Deps>, mut queue: mpsc::Receiver<ToRecorder>) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    let mut gather_until: Option<Instant> = None;
    loop {
        if queue.recv_many(&mut batch, RECORD_BATCH).await == 0 {
            break;
        }
        if let Some(until) = gather_until.take() {
            gather(&mut queue, &mut batch, until).await;
        }
        let taken = Instant::now();
        gather_until = next_round_after(taken, batch.len(), RECORD_BATCH, deps.record_interval);
        let mut marks = Vec::with_capacity(batch.len());
        let mut flushes = Vec::new();
        let mut wake = false;
        let mut results = Vec::with_capacity(batch.len());
        for message in batch.drain(..) {
            match message {
                ToRecorder::Result(recorded) => {
                    let recorded = *recorded;
                    wake |= recorded.wake;
                    let change = match recorded.result.next {
                        NextStep::DeadLetter { .. } => Change::State,
                        _ => Change::Counters,
                    };
                    marks.push((recorded.endpoint, change, recorded.event_id));
                    results.push(recorded.result);
                }
                ToRecorder::Flush(done) => flushes.push(done),
            }
        }
        if results.is_empty() {
            answer_flushes(flushes);
            continue;
        }
        match record_with_retries(&deps, results).await {
            Ok(outcomes) => {
                for outcome in outcomes {
                    if let Err(error) = outcome {
                        warn!(%error, "recording an attempt failed; the lease expiry makes it due again");
                    }
                }
            }
            Err(error) => {
                warn!(%error, attempts = marks.len(), "recording attempts failed, retries too; their lease expiry makes them due again");
            }
        }
        for (endpoint, change, event_id) in &marks {
            deps.dirty.endpoint_changed(endpoint, *change);
            if let Some(event_id) = event_id {
                deps.dirty.event(event_id);
            }
        }
        if wake {
            deps.wake.notify_one();
        }
        // Everything received before a flush was in this batch or an earlier one.
        answer_flushes(flushes);
    }
}

/// Whether something waits for this to be recorded: a flush, or a result that wakes the loop.
fn waited_for(message: &ToRecorder) -> bool {
    match message {
        ToRecorder::Result(recorded) => recorded.wake,
        ToRecorder::Flush(_) => true,
    }
}

/// Receives more into `batch` until `until`, until it is full, or until something waits for
/// what it holds ([`waited_for`]).
async fn gather(
    queue: &mut mpsc::Receiver<ToRecorder>,
    batch: &mut Vec<ToRecorder>,
    until: Instant,
) {
    let deadline = tokio::time::sleep_until(until.into());
    tokio::pin!(deadline);
    let mut looked_at = 0;
    loop {
        if batch[looked_at..].iter().any(waited_for) || batch.len() >= RECORD_BATCH {
            return;
        }
        looked_at = batch.len();
        let room = RECORD_BATCH - batch.len();
        tokio::select! {
            _ = &mut deadline => return,
            // Cancel-safe: nothing is lost when the deadline wins.
            received = queue.recv_many(batch, room) => if received == 0 { return },
        }
    }
}

/// Waits before each retry of a batch whose transaction failed (a cut connection, a database
/// restarting): about 16 s in all, then the claim lease takes over.
const RECORD_RETRY_DELAYS_MS: [u64; 6] = [250, 500, 1_000, 2_000, 4_000, 8_000];

/// Records a batch; when the whole transaction fails, tries it again after each delay. A retry
/// after a commit whose answer was lost is harmless: the store answers `AlreadyRecorded` for
/// attempts it holds. Without it those deliveries would wait out their claim lease (330 s) and
/// be sent again.
async fn record_with_retries(
    deps: &Deps,
    results: Vec<AttemptResult>,
) -> crate::store::Result<Vec<crate::store::Result<RecordOutcome>>> {
    let mut delays = RECORD_RETRY_DELAYS_MS.iter();
    loop {
        match deps.store.record_attempts(results.clone()).await {
            Ok(outcomes) => return Ok(outcomes),
            Err(error) => match delays.next() {
                Some(&delay) => {
                    warn!(%error, attempts = results.len(), retry_in_ms = delay, "recording attempts failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                }
                None => return Err(error),
            },
        }
    }
}

fn answer_flushes(flushes: Vec<oneshot::Sender<()>>) {
    for done in flushes {
        // The drain may have given up waiting; nothing to tell then.
        let _ = done.send(());
    }
}

/// Dead-letters a delivery that cannot be attempted at all (its endpoint is gone, its stored
/// data unreadable); `pause`: as [`AttemptResult::pause_on_dead_letter`].
pub(super) async fn finish_without_attempt(
    deps: &Deps,
    delivery: &ClaimedDelivery,
    reason: String,
    pause: bool,
) {
    let record = AttemptRecord {
        at: Timestamp::now(),
        attempt: delivery.delivery.attempts + 1,
        status_code: None,
        latency_ms: None,
        error: Some(reason.clone()),
        response_snippet: None,
    };
    let result = AttemptResult {
        delivery_id: delivery.delivery.id,
        owner: deps.owner.clone(),
        record,
        next: NextStep::DeadLetter { reason },
        pause_on_dead_letter: pause,
    };
    match deps.store.record_attempt(result).await {
        Ok(RecordOutcome::Applied) => {
            let endpoint = &delivery.delivery.endpoint;
            deps.metrics.dead_lettered_without_attempt(endpoint);
            deps.dirty.endpoint_state(endpoint);
        }
        // No longer ours (lease lost) or purged: not dead-lettered by us.
        Ok(_) => {}
        Err(error) => warn!(%error, "recording a dead letter failed"),
    }
    if let Some(event_id) = status_event(delivery) {
        deps.dirty.event(event_id);
    }
    if delivery.delivery.lane.is_some() {
        // Its lane's next delivery is due now.
        deps.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{contract, DeliveryId};
    use std::time::Duration;

    fn result(id: i64, wake: bool) -> ToRecorder {
        ToRecorder::Result(Box::new(Recorded {
            result: contract::result(
                DeliveryId(id),
                "replica-0",
                1,
                0,
                Some(200),
                1,
                NextStep::Delivered,
            ),
            endpoint: EndpointRef::new("ns", "ep"),
            event_id: None,
            wake,
        }))
    }

    /// Results nobody waits for are gathered until the deadline, whenever they arrive.
    #[tokio::test(start_paused = true)]
    async fn gathering_takes_what_arrives_until_the_deadline() {
        let (sender, mut queue) = mpsc::channel(16);
        let start = tokio::time::Instant::now();
        let until = Instant::now() + Duration::from_millis(25);
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            sender.send(result(2, false)).await.ok();
            tokio::time::sleep(Duration::from_millis(30)).await;
            sender.send(result(3, false)).await.ok();
        });
        let mut batch = vec![result(1, false)];
        gather(&mut queue, &mut batch, until).await;
        assert_eq!(batch.len(), 2, "the one sent after the deadline waits");
        assert!(start.elapsed() >= Duration::from_millis(25));
        late.await.unwrap();
    }

    /// A result that wakes the loop (a lane's successor, a retry), or a flush, ends it at once.
    #[tokio::test(start_paused = true)]
    async fn gathering_ends_when_something_waits() {
        let until = Instant::now() + Duration::from_secs(60);
        let (sender, mut queue) = mpsc::channel(16);
        let start = tokio::time::Instant::now();
        let mut batch = vec![result(1, true)];
        gather(&mut queue, &mut batch, until).await;
        assert_eq!((batch.len(), start.elapsed()), (1, Duration::ZERO));

        let (done, _answer) = tokio::sync::oneshot::channel();
        sender.send(result(2, false)).await.unwrap();
        sender.send(ToRecorder::Flush(done)).await.unwrap();
        let mut batch = vec![result(1, false)];
        gather(&mut queue, &mut batch, until).await;
        assert_eq!((batch.len(), start.elapsed()), (3, Duration::ZERO));
    }
}
