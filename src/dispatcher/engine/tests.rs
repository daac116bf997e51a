//! The engine's trickiest decisions pinned without an API server (see
//! [`crate::dispatcher::fixtures`]): admission, the waiting queue, lease headroom, the drain at
//! shutdown and the recorder.
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use super::admission::Admission;
use super::ahead::{Ahead, Queued};
use super::recorder::{record_results, Recorded, ToRecorder};
use super::transforming::{transform_first, TransformFirst};
use super::{claims, Drained, Engine, Reserved, BUSY_RETRY, LEASE};
use crate::dispatcher::fixtures::{Fixture, NAMESPACE, OWNER};
use crate::dispatcher::metrics::TransformOutputSource;
use crate::dispatcher::status::queue::Change;
use crate::store::{
    AttemptRecord, AttemptResult, ClaimedDelivery, DeliveryRecord, DeliveryState, EndpointRef,
    NextStep,
};

/// An engine on the fixture's state, its recorder queue (not running unless a test starts it)
/// and its stop switch.
fn engine(fixture: &Fixture) -> (Arc<Engine>, mpsc::Receiver<ToRecorder>, watch::Sender<bool>) {
    let (results, queue) = mpsc::channel(16);
    let (stop, stopped) = watch::channel(false);
    let engine = Engine::new(fixture.deps(), results, stopped);
    (Arc::new(engine), queue, stop)
}

/// The store's record of the (only) delivery of `delivery`'s event.
async fn record_of(fixture: &Fixture, delivery: &ClaimedDelivery) -> DeliveryRecord {
    let status = fixture
        .shared
        .store
        .event_status(&delivery.event.event_id)
        .await
        .unwrap()
        .unwrap();
    status.deliveries.into_iter().next().unwrap()
}

async fn state_of(
    fixture: &Fixture,
    delivery: &ClaimedDelivery,
) -> (DeliveryState, Option<String>) {
    let record = record_of(fixture, delivery).await;
    (record.state, record.dead_letter_reason)
}

/// The result of a first attempt of `delivery` that got `status_code`, for the recorder.
fn first_attempt(delivery: &ClaimedDelivery, status_code: Option<u16>, next: NextStep) -> Recorded {
    let failed = !matches!(next, NextStep::Delivered);
    Recorded {
        result: AttemptResult {
            delivery_id: delivery.delivery.id,
            owner: OWNER.into(),
            record: AttemptRecord {
                at: Timestamp::now(),
                attempt: 1,
                status_code,
                latency_ms: Some(1),
                error: failed.then(|| format!("HTTP {}", status_code.unwrap_or_default())),
                response_snippet: None,
            },
            next,
            pause_on_dead_letter: false,
        },
        endpoint: delivery.delivery.endpoint.clone(),
        event_id: None,
        wake: false,
    }
}

/// The delivery is due again in the store, unclaimed and never attempted.
async fn assert_given_back_unattempted(fixture: &Fixture, delivery: &ClaimedDelivery) {
    let record = record_of(fixture, delivery).await;
    assert_eq!(record.state, DeliveryState::Pending);
    assert_eq!(record.attempts, 0);
}

/// A drain in which every attempt finished, one delivery went back, and every result was
/// committed.
const CLEAN_DRAIN_OF_ONE: Drained = Drained {
    attempts_finished: true,
    given_back: 1,
    results_committed: true,
};

fn now() -> (Instant, Timestamp) {
    (Instant::now(), Timestamp::now())
}

#[tokio::test]
async fn a_delivery_whose_endpoint_was_deleted_is_dead_lettered_without_an_attempt() {
    let mut fixture = Fixture::new(&[]).await;
    fixture.endpoint("crm", json!({}));
    let mut claimed = fixture.claimed("crm", 1, LEASE).await;
    fixture.delete_endpoint("crm");
    let (engine, _queue, _stop) = engine(&fixture);
    let delivery = claimed.remove(0);
    let (at, at_ts) = now();
    assert!(matches!(
        engine.admit(Queued::new(delivery.clone()), at, at_ts).await,
        Admission::Done
    ));
    let (state, reason) = state_of(&fixture, &delivery).await;
    assert_eq!(state, DeliveryState::DeadLettered);
    assert_eq!(reason.as_deref(), Some("the WebhookEndpoint was deleted"));
}

#[tokio::test]
async fn a_suspended_endpoint_holds_its_deliveries_instead_of_sending() {
    let mut fixture = Fixture::new(&[]).await;
    fixture.endpoint("crm", json!({"suspend": true}));
    let mut claimed = fixture.claimed("crm", 1, LEASE).await;
    let (engine, _queue, _stop) = engine(&fixture);
    let delivery = claimed.remove(0);
    let (at, at_ts) = now();
    let Admission::Defer(due, id) = engine.admit(Queued::new(delivery.clone()), at, at_ts).await
    else {
        panic!("a suspended endpoint's delivery went on");
    };
    assert_eq!((due, id), (at_ts, delivery.delivery.id));
    engine.defer(vec![id], due).await;
    assert_eq!(state_of(&fixture, &delivery).await.0, DeliveryState::Held);
}

#[tokio::test]
async fn a_lease_too_short_for_a_whole_attempt_sends_the_delivery_back() {
    let mut fixture = Fixture::new(&[]).await;
    // A 30 s timeout needs 60 s of lease left (timeout + 30 s).
    fixture.endpoint("crm", json!({"timeoutSeconds": 30}));
    let short = fixture.claimed("crm", 1, Duration::from_secs(59)).await;
    let long = fixture.claimed("crm", 1, Duration::from_secs(61)).await;
    let (engine, _queue, _stop) = engine(&fixture);
    let (at, at_ts) = now();
    assert!(matches!(
        engine.admit(Queued::new(short[0].clone()), at, at_ts).await,
        Admission::Defer(due, _) if due == at_ts
    ));
    assert!(matches!(
        engine.admit(Queued::new(long[0].clone()), at, at_ts).await,
        Admission::Go(..)
    ));
}

#[tokio::test]
async fn a_busy_endpoint_queues_twice_as_many_as_it_may_have_in_flight_and_defers_the_rest() {
    let mut fixture = Fixture::new(&["--per-endpoint-concurrency", "1"]).await;
    fixture.endpoint(
        "crm",
        json!({"rateLimit": {"requestsPerMinute": 6000, "burst": 100}}),
    );
    let claimed = fixture.claimed("crm", 4, LEASE).await;
    let (engine, _queue, _stop) = engine(&fixture);
    let (at, at_ts) = now();
    let Admission::Go(first, _, permit) = engine
        .admit(Queued::new(claimed[0].clone()), at, at_ts)
        .await
    else {
        panic!("the first delivery to an idle endpoint must go");
    };
    for waiting in &claimed[1..3] {
        assert!(matches!(
            engine.admit(Queued::new(waiting.clone()), at, at_ts).await,
            Admission::Waiting
        ));
    }
    let Admission::Defer(due, _) = engine
        .admit(Queued::new(claimed[3].clone()), at, at_ts)
        .await
    else {
        panic!("a full waiting queue must send the delivery back");
    };
    assert_eq!(due, at_ts.checked_add(BUSY_RETRY).unwrap());
    let endpoint = EndpointRef::new(NAMESPACE, "crm");
    assert_eq!(engine.lock_waiting()[&endpoint].len(), 2);

    // The attempt in flight finishes: the waiting deliveries go next, in turn, on its task.
    fixture.shared.gates.abandon(&endpoint, permit);
    let (next, _, permit) = engine
        .next_waiting(&endpoint)
        .await
        .expect("the queued delivery");
    assert_eq!(next.delivery.delivery.id, claimed[1].delivery.id);
    assert_ne!(next.delivery.delivery.id, first.delivery.delivery.id);
    fixture.shared.gates.abandon(&endpoint, permit);
    let (last, _, _) = engine
        .next_waiting(&endpoint)
        .await
        .expect("the second queued delivery");
    assert_eq!(last.delivery.delivery.id, claimed[2].delivery.id);
    assert!(engine.next_waiting(&endpoint).await.is_none());
    assert!(!engine.lock_waiting().contains_key(&endpoint));
}

#[tokio::test]
async fn the_drain_gives_waiting_deliveries_back_and_waits_for_the_recorder() {
    let mut fixture = Fixture::new(&["--per-endpoint-concurrency", "1"]).await;
    fixture.endpoint("crm", json!({}));
    let claimed = fixture.claimed("crm", 2, LEASE).await;
    let (engine, queue, stop) = engine(&fixture);
    tokio::spawn(record_results(fixture.deps(), queue));
    let (at, at_ts) = now();
    let Admission::Go(sent, _, permit) = engine
        .admit(Queued::new(claimed[0].clone()), at, at_ts)
        .await
    else {
        panic!("the first delivery must go");
    };
    assert!(matches!(
        engine
            .admit(Queued::new(claimed[1].clone()), at, at_ts)
            .await,
        Admission::Waiting
    ));
    // The attempt in flight finished and handed its result over just before the stop.
    fixture
        .shared
        .gates
        .abandon(&EndpointRef::new(NAMESPACE, "crm"), permit);
    let delivered = first_attempt(&sent.delivery, Some(200), NextStep::Delivered);
    engine
        .results
        .send(ToRecorder::Result(Box::new(delivered)))
        .await
        .unwrap();
    stop.send(true).unwrap();

    let drained = claims::drain(&engine, Duration::from_secs(5)).await;
    assert_eq!(drained, CLEAN_DRAIN_OF_ONE);
    // Committed before the drain returned; the waiting one is due again, unclaimed.
    assert_eq!(
        state_of(&fixture, &sent.delivery).await.0,
        DeliveryState::Delivered
    );
    assert_given_back_unattempted(&fixture, &claimed[1]).await;
}

#[tokio::test]
async fn a_flush_is_answered_only_after_what_came_before_it_is_committed() {
    let mut fixture = Fixture::new(&[]).await;
    fixture.endpoint("crm", json!({}));
    let claimed = fixture.claimed("crm", 3, LEASE).await;
    let (results, queue) = mpsc::channel(16);
    tokio::spawn(record_results(fixture.deps(), queue));
    for delivery in &claimed {
        let gone = NextStep::DeadLetter {
            reason: "gone".into(),
        };
        let recorded = first_attempt(delivery, Some(410), gone);
        results
            .send(ToRecorder::Result(Box::new(recorded)))
            .await
            .unwrap();
    }
    let (flushed, committed) = oneshot::channel();
    results.send(ToRecorder::Flush(flushed)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), committed)
        .await
        .unwrap()
        .unwrap();
    for delivery in &claimed {
        let (state, reason) = state_of(&fixture, delivery).await;
        assert_eq!(state, DeliveryState::DeadLettered);
        assert_eq!(reason.as_deref(), Some("gone"));
    }
    // Their endpoint is marked for a status write, ahead of counter-only changes.
    assert!(fixture
        .shared
        .dirty
        .take_endpoints()
        .contains(&(EndpointRef::new(NAMESPACE, "crm"), Change::State)));
}

#[tokio::test]
async fn a_waiting_delivery_has_its_transform_run_ahead_and_used_only_with_that_program() {
    let mut fixture = Fixture::new(&["--per-endpoint-concurrency", "1"]).await;
    fixture.endpoint("slack", json!({"transform": {"jq": "{text: .event}"}}));
    let claimed = fixture.claimed("slack", 2, LEASE).await;
    let (engine, _queue, _stop) = engine(&fixture);
    let (at, at_ts) = now();
    let Admission::Go(first, policy, _permit) = engine
        .admit(Queued::new(claimed[0].clone()), at, at_ts)
        .await
    else {
        panic!("the first delivery to an idle endpoint must go");
    };
    // Sent at once: its transform runs in its attempt.
    assert!(first.ahead.is_none());
    assert!(matches!(
        engine
            .admit(Queued::new(claimed[1].clone()), at, at_ts)
            .await,
        Admission::Waiting
    ));
    let endpoint = EndpointRef::new(NAMESPACE, "slack");
    let take_ahead = || {
        let mut waiting = engine.lock_waiting();
        let queued = waiting.get_mut(&endpoint).unwrap().front_mut().unwrap();
        queued
            .ahead
            .take()
            .expect("a waiting delivery's transform runs ahead")
    };
    // The endpoint's program changed while it waited: the attempt runs the new one.
    let mut changed = (*policy).clone();
    changed.transform = Some("{text: .type}".into());
    assert!(take_ahead()
        .output_for(&changed, &engine.deps.transforms)
        .await
        .is_none());
    // So does a changed display name, which the payload carries.
    let mut renamed = (*policy).clone();
    renamed.display_name = "renamed".into();
    assert!(Ahead::start(&engine.deps, &claimed[1], &policy, false)
        .unwrap()
        .output_for(&renamed, &engine.deps.transforms)
        .await
        .is_none());
    // Unchanged: the run's answer is the attempt's (whatever the pool answered).
    let ahead = Ahead::start(&engine.deps, &claimed[1], &policy, false).unwrap();
    assert!(ahead
        .output_for(&policy, &engine.deps.transforms)
        .await
        .is_some());
    // No transform, nothing to run ahead.
    let mut plain = (*policy).clone();
    plain.transform = None;
    assert!(Ahead::start(&engine.deps, &claimed[1], &plain, false).is_none());
}

#[tokio::test]
async fn a_waiting_delivery_whose_transform_has_finished_goes_before_one_still_running() {
    let mut fixture = Fixture::new(&["--per-endpoint-concurrency", "2"]).await;
    fixture.endpoint("slack", json!({"transform": {"jq": "{text: .event}"}}));
    let claimed = fixture.claimed("slack", 4, LEASE).await;
    let (engine, _queue, _stop) = engine(&fixture);
    let (at, at_ts) = now();
    let mut permits = Vec::new();
    let mut policy = None;
    for delivery in &claimed[..2] {
        let Admission::Go(_, p, permit) =
            engine.admit(Queued::new(delivery.clone()), at, at_ts).await
        else {
            panic!("an idle endpoint takes two at once");
        };
        permits.push(permit);
        policy = Some(p);
    }
    let policy = policy.unwrap();
    for delivery in &claimed[2..] {
        let admitted = engine.admit(Queued::new(delivery.clone()), at, at_ts).await;
        assert!(matches!(admitted, Admission::Waiting));
    }
    let endpoint = EndpointRef::new(NAMESPACE, "slack");
    // The older waiting delivery's run never finishes; the younger one's does.
    engine.lock_waiting().get_mut(&endpoint).unwrap()[0].ahead =
        Some(Ahead::never_finishing(&policy));
    let younger_ready = || engine.lock_waiting()[&endpoint][1].ready();
    for _ in 0..500 {
        if younger_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        younger_ready(),
        "the younger delivery's transform ran ahead"
    );
    assert!(!engine.lock_waiting()[&endpoint][0].ready());

    for permit in permits {
        fixture.shared.gates.abandon(&endpoint, permit);
    }
    let (next, _, _) = engine
        .next_waiting(&endpoint)
        .await
        .expect("a waiting delivery");
    assert_eq!(
        next.delivery.delivery.id, claimed[3].delivery.id,
        "the ready one goes first"
    );
    // None ready: the oldest goes (its attempt waits for, or reruns, its transform).
    let (next, _, _) = engine
        .next_waiting(&endpoint)
        .await
        .expect("a waiting delivery");
    assert_eq!(next.delivery.delivery.id, claimed[2].delivery.id);
}

/// Polls `done` every 10 ms for up to 5 s.
async fn eventually(done: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[tokio::test]
async fn a_claimed_delivery_goes_through_its_gate_only_after_its_transform_has_answered() {
    let mut fixture = Fixture::new(&["--per-endpoint-concurrency", "2"]).await;
    fixture.endpoint("slack", json!({"transform": {"jq": "{text: .event}"}}));
    let claimed = fixture.claimed("slack", 5, LEASE).await;
    let (engine, _queue, _stop) = engine(&fixture);
    let endpoint = EndpointRef::new(NAMESPACE, "slack");
    let (at, at_ts) = now();
    let mut permits = Vec::new();
    for delivery in &claimed[..2] {
        let Admission::Go(_, _, permit) =
            engine.admit(Queued::new(delivery.clone()), at, at_ts).await
        else {
            panic!("an idle endpoint takes two at once");
        };
        permits.push(permit);
    }
    let free = engine.slots.available_permits();
    for delivery in &claimed[2..] {
        assert!(matches!(
            transform_first(&engine, Queued::new(delivery.clone())),
            TransformFirst::Started
        ));
    }
    // Nothing has run yet (this test's runtime has one thread): each holds a slot, none holds
    // one of the endpoint's, and the claim caps count them as waiting: 2 in flight + 3 of room 6.
    assert_eq!(engine.slots.available_permits(), free - 3);
    assert_eq!(engine.lock_starting().get(&endpoint), Some(&3));
    assert_eq!(engine.caps().get(&endpoint), Some(&1));
    assert_eq!(
        fixture.shared.gates.in_flight(),
        vec![(endpoint.clone(), 2)]
    );

    // Once answered, each went through the gate: the endpoint is full, so they wait, ready.
    let all_waiting_ready = || {
        engine.lock_starting().is_empty()
            && engine
                .lock_waiting()
                .get(&endpoint)
                .is_some_and(|queue| queue.len() == 3 && queue.iter().all(Queued::ready))
    };
    assert!(eventually(all_waiting_ready).await, "all three wait, ready");
    assert_eq!(engine.slots.available_permits(), free);
    assert_eq!(
        fixture.shared.gates.in_flight(),
        vec![(endpoint.clone(), 2)]
    );
    // The output waits with them: the attempt uses it without a run of its own, and the
    // transform_outputs metric counts it as ready.
    let policy = engine.deps.endpoints.policy(&endpoint).unwrap();
    {
        let waiting = engine.lock_waiting();
        let answered = waiting[&endpoint][0].ahead.as_ref();
        assert_eq!(
            Ahead::source(answered, &policy),
            TransformOutputSource::Ready
        );
        let mut changed = (*policy).clone();
        changed.transform = Some("{text: .type}".into());
        assert_eq!(
            Ahead::source(answered, &changed),
            TransformOutputSource::Attempt
        );
    }
    assert_eq!(Ahead::source(None, &policy), TransformOutputSource::Attempt);
    let unanswered = Ahead::never_finishing(&policy);
    assert_eq!(
        Ahead::source(Some(&unanswered), &policy),
        TransformOutputSource::Waited
    );
    let ahead = engine.lock_waiting().get_mut(&endpoint).unwrap()[0]
        .ahead
        .take()
        .expect("the run's answer");
    // (Whatever the pool answered: unit tests have no worker binary, tests/transform_pool.rs does.)
    let output = ahead.output_for(&policy, &engine.deps.transforms).await;
    assert!(output.is_some(), "the run's answer was kept");
    for permit in permits {
        fixture.shared.gates.abandon(&endpoint, permit);
    }
}

#[tokio::test]
async fn a_delivery_whose_transform_answers_after_the_stop_goes_back_to_the_store() {
    let mut fixture = Fixture::new(&[]).await;
    fixture.endpoint("slack", json!({"transform": {"jq": "{text: .event}"}}));
    let claimed = fixture.claimed("slack", 1, LEASE).await;
    let (engine, queue, stop) = engine(&fixture);
    tokio::spawn(record_results(fixture.deps(), queue));
    assert!(matches!(
        transform_first(&engine, Queued::new(claimed[0].clone())),
        TransformFirst::Started
    ));
    stop.send(true).unwrap();
    let drained = claims::drain(&engine, Duration::from_secs(5)).await;
    assert_eq!(drained, CLEAN_DRAIN_OF_ONE);
    assert_given_back_unattempted(&fixture, &claimed[0]).await;
    // And nothing new starts once stopping: a claimed delivery gets no slot.
    let again = fixture.claimed("slack", 1, LEASE).await;
    assert!(matches!(
        transform_first(&engine, Queued::new(again[0].clone())),
        TransformFirst::NoSlot(id) if id == again[0].delivery.id
    ));
}

/// An event for `endpoints` of the fixture's namespace, claiming at insert what `reserved` holds.
fn insert_claiming(
    id: &str,
    endpoints: &[&str],
    reserved: Option<&Reserved>,
) -> crate::store::EnqueueRequest {
    let event = crate::store::NewEvent {
        event_id: format!("evt_{id}_{}", ulid::Ulid::new()),
        namespace: NAMESPACE.into(),
        event_type: "user.created".into(),
        data: bytes::Bytes::from_static(br#"{"user":{"id":1}}"#),
        created_at: Timestamp::now(),
        source: crate::store::EventSource::Ingest,
        idempotency_key: None,
        trace_parent: None,
    };
    let mut request = crate::store::EnqueueRequest::unordered(
        event,
        endpoints.iter().map(|e| (*e).to_owned()).collect(),
    );
    request.claim = reserved.map(Reserved::claim);
    request
}

#[tokio::test]
async fn ingest_reserves_room_only_for_deliveries_this_engine_can_start() {
    let mut fixture =
        Fixture::new(&["--per-endpoint-concurrency", "1", "--concurrency", "8"]).await;
    fixture.endpoint("crm", json!({}));
    fixture.endpoint("paused", json!({"suspend": true}));
    let names = |list: &[&str]| list.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>();
    let handoff = fixture.shared.handoff.clone();
    let lanes = std::collections::BTreeMap::new();
    let now_ts = Timestamp::now();
    assert!(
        handoff
            .reserve(NAMESPACE, &names(&["crm"]), &lanes, now_ts)
            .is_none(),
        "no engine runs yet: every delivery waits for a claim"
    );
    let (engine, _queue, stop) = engine(&fixture);
    handoff.attach(&engine);

    // Suspended, unknown and ordered endpoints are stored Pending; one endpoint's room is its
    // in-flight limit plus WAITING_PER_SLOT times as many (3 at 1 slot).
    let ordered = std::collections::BTreeMap::from([("crm".to_owned(), "lane".to_owned())]);
    assert!(handoff
        .reserve(NAMESPACE, &names(&["crm"]), &ordered, now_ts)
        .is_none());
    let reserved: Vec<Reserved> = (0..3)
        .map(|_| {
            handoff
                .reserve(
                    NAMESPACE,
                    &names(&["crm", "paused", "ghost", "crm"]),
                    &lanes,
                    now_ts,
                )
                .expect("room for crm")
        })
        .collect();
    for each in &reserved {
        let claim = each.claim();
        assert_eq!(claim.endpoints, ["crm".to_owned()].into_iter().collect());
        assert_eq!(claim.owner, OWNER);
        assert_eq!(claim.lease_expires_at, now_ts.checked_add(LEASE).unwrap());
    }
    assert!(
        handoff
            .reserve(NAMESPACE, &names(&["crm"]), &lanes, now_ts)
            .is_none(),
        "the endpoint's room is full"
    );
    let endpoint = EndpointRef::new(NAMESPACE, "crm");
    assert_eq!(engine.lock_starting().get(&endpoint), Some(&3));
    assert_eq!(engine.slots.available_permits(), 5);
    assert_eq!(
        engine.caps().get(&endpoint),
        Some(&0),
        "a claim takes nothing more of it"
    );

    // Unused reservations (a duplicate, a failed insert) are given back.
    drop(reserved);
    assert!(engine.lock_starting().is_empty());
    assert_eq!(engine.slots.available_permits(), 8);

    stop.send(true).unwrap();
    assert!(
        handoff
            .reserve(NAMESPACE, &names(&["crm"]), &lanes, now_ts)
            .is_none(),
        "a stopping engine takes nothing new"
    );
}

#[tokio::test]
async fn deliveries_created_claimed_start_on_the_reserved_slot_and_go_back_at_a_stop() {
    let mut fixture = Fixture::new(&["--concurrency", "4"]).await;
    fixture.endpoint("crm", json!({}));
    let (engine, queue, stop) = engine(&fixture);
    tokio::spawn(record_results(fixture.deps(), queue));
    let handoff = fixture.shared.handoff.clone();
    handoff.attach(&engine);
    let reserved = handoff
        .reserve(
            NAMESPACE,
            &["crm".to_owned(), "other".to_owned()],
            &Default::default(),
            Timestamp::now(),
        )
        .expect("room for crm");
    let mut outcomes = fixture
        .shared
        .store
        .enqueue_batch(vec![insert_claiming(
            "1",
            &["crm", "other"],
            Some(&reserved),
        )])
        .await
        .unwrap();
    let outcome = outcomes.pop().unwrap();
    assert_eq!(outcome.deliveries.len(), 2);
    assert_eq!(
        outcome.claimed.len(),
        1,
        "only the reserved delivery is claimed"
    );
    let claimed = outcome.claimed[0].clone();
    assert_eq!(claimed.delivery.endpoint.name, "crm");
    assert_eq!(
        record_of(&fixture, &claimed).await.state,
        DeliveryState::InFlight
    );

    // Stopped between the insert and the start: the delivery goes back, due now, and the
    // drain counts it.
    stop.send(true).unwrap();
    assert_eq!(reserved.start(outcome.claimed), 1);
    let drained = claims::drain(&engine, Duration::from_secs(5)).await;
    assert_eq!(drained, CLEAN_DRAIN_OF_ONE);
    assert_given_back_unattempted(&fixture, &claimed).await;
    assert!(engine.lock_starting().is_empty());
}

/// Whether the claim loop's wake-up is pending (it consumes it).
async fn woken(engine: &Engine) -> bool {
    tokio::time::timeout(Duration::from_millis(50), engine.deps.wake.notified())
        .await
        .is_ok()
}

#[tokio::test]
async fn a_slot_given_back_without_an_attempt_wakes_the_loop_only_when_it_waits_for_one() {
    let fixture = Fixture::new(&[]).await;
    let (engine, _queue, _stop) = engine(&fixture);
    woken(&engine).await;
    // The delivery went to wait behind its endpoint: no endpoint gained room.
    engine.return_slot(engine.take_slot().unwrap());
    assert!(!woken(&engine).await);
    // The loop found no slot free and said so: the slot given back is what it waits for.
    engine
        .slot_wanted
        .store(true, std::sync::atomic::Ordering::SeqCst);
    engine.return_slot(engine.take_slot().unwrap());
    assert!(woken(&engine).await);
    // Said once: the next one does not wake it again.
    engine.return_slot(engine.take_slot().unwrap());
    assert!(!woken(&engine).await);
    // A finished attempt's slot always does (its endpoint has room again).
    engine.release(engine.take_slot().unwrap());
    assert!(woken(&engine).await);
}
