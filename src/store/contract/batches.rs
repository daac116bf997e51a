//! Batched store operations the dispatcher's loop relies on: capped claims and recording many
//! attempt results at once.
use std::time::Duration;

use super::{at, claim_all, endpoint, event, names, result, Harness};
use crate::store::{
    AttemptResult, ClaimRequest, ClaimScope, DeliveryId, DeliveryState, EndpointCaps, NextStep,
    RecordOutcome, Result, Store,
};

/// `claim_due_capped`: an endpoint named in the caps gets at most its cap (0: none), the others
/// `per_endpoint_limit`, each its earliest due; a cap never raises the per-endpoint limit.
pub async fn capped_claims(harness: &dyn Harness) -> Result<()> {
    let store = harness.open().await?;
    for i in 0..4 {
        store
            .enqueue(
                event(&format!("evt_{i}"), "user.created", i),
                names(&["a", "b", "c"]),
            )
            .await?;
    }
    let request = |limit| ClaimRequest {
        now: at(10),
        limit,
        per_endpoint_limit: Some(3),
        owner: "w".into(),
        lease: Duration::from_secs(60),
        scope: ClaimScope::All,
    };
    let caps: EndpointCaps = [(endpoint("a"), 0), (endpoint("b"), 1), (endpoint("c"), 9)]
        .into_iter()
        .collect();
    let claimed = store.claim_due_capped(request(100), caps).await?;
    let of = |name: &str| {
        let mut ids: Vec<String> = claimed
            .iter()
            .filter(|c| c.delivery.endpoint.name == name)
            .map(|c| c.event.event_id.clone())
            .collect();
        ids.sort();
        ids
    };
    assert!(of("a").is_empty(), "cap 0 takes nothing");
    assert_eq!(of("b"), ["evt_0"], "cap 1 takes the earliest");
    assert_eq!(
        of("c"),
        ["evt_0", "evt_1", "evt_2"],
        "a cap above per_endpoint_limit does not raise it"
    );
    let rest = store
        .claim_due_capped(request(100), EndpointCaps::new())
        .await?;
    assert_eq!(
        rest.len(),
        3 + 3 + 1,
        "without caps, per_endpoint_limit alone"
    );
    Ok(())
}

/// The outcomes of recording `results` as one batch (each must have been answered).
async fn outcomes_of(store: &dyn Store, results: Vec<AttemptResult>) -> Result<Vec<RecordOutcome>> {
    store.record_attempts(results).await?.into_iter().collect()
}

/// `record_attempts` answers each result as `record_attempt` would (applied, lease lost, not
/// found), in input order, and applies the ones it may.
pub async fn batched_records(harness: &dyn Harness) -> Result<()> {
    let store = harness.open().await?;
    store
        .enqueue(event("evt_1", "user.created", 0), names(&["a", "b", "c"]))
        .await?;
    let claimed = store.claim_due(claim_all("w", 1)).await?;
    assert_eq!(claimed.len(), 3);
    let id = |i: usize| claimed[i].delivery.id;
    let delivered = |id, owner| result(id, owner, 1, 2, Some(200), 5, NextStep::Delivered);
    let outcomes = outcomes_of(
        store.as_ref(),
        vec![
            delivered(id(0), "w"),
            delivered(id(1), "someone-else"),
            delivered(DeliveryId(999_999), "w"),
            result(
                id(2),
                "w",
                1,
                2,
                Some(500),
                5,
                NextStep::Retry { at: at(60) },
            ),
        ],
    )
    .await?;
    assert_eq!(
        outcomes,
        [
            RecordOutcome::Applied,
            RecordOutcome::LeaseLost,
            RecordOutcome::NotFound,
            RecordOutcome::Applied
        ]
    );
    let status = store.event_status("evt_1").await?.expect("event stored");
    let state = |i: usize| {
        status
            .deliveries
            .iter()
            .find(|d| d.id == id(i))
            .map(|d| d.state)
    };
    assert_eq!(state(0), Some(DeliveryState::Delivered));
    assert_eq!(state(1), Some(DeliveryState::InFlight));
    assert_eq!(state(2), Some(DeliveryState::Pending));
    assert!(store.record_attempts(Vec::new()).await?.is_empty());

    // A batch naming one delivery twice: each result sees the one before it. The same attempt
    // again is already recorded; the next attempt applies on top.
    // The third delivery's attempt `attempt` at `seconds` fails with a 500, due again at `next`.
    let failed = |attempt, seconds, next| {
        let retry = NextStep::Retry { at: at(next) };
        result(id(2), "w", attempt, seconds, Some(500), 5, retry)
    };
    let again = store.claim_due(claim_all("w", 60)).await?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.id, id(2));
    let outcomes = outcomes_of(
        store.as_ref(),
        vec![failed(2, 62, 90), failed(2, 62, 90), delivered(id(0), "w")],
    )
    .await?;
    assert_eq!(
        outcomes,
        [
            RecordOutcome::Applied,
            RecordOutcome::AlreadyRecorded,
            RecordOutcome::AlreadyRecorded
        ]
    );
    // The retry is due at its time; the second delivery's lease (taken at 1 s) expired at 61 s.
    let mut retried: Vec<DeliveryId> = store
        .claim_due(claim_all("w", 91))
        .await?
        .iter()
        .map(|c| c.delivery.id)
        .collect();
    retried.sort();
    assert_eq!(retried, [id(1), id(2)]);
    let outcomes = outcomes_of(
        store.as_ref(),
        vec![
            failed(3, 92, 120),
            delivered(id(1), "w"),
            result(id(2), "w", 4, 92, Some(200), 5, NextStep::Delivered),
        ],
    )
    .await?;
    assert_eq!(
        outcomes,
        [
            RecordOutcome::Applied,
            RecordOutcome::Applied,
            RecordOutcome::LeaseLost
        ],
        "once the first moved it, the delivery is no longer in flight under the lease"
    );
    let status = store.event_status("evt_1").await?.expect("event stored");
    let third = status
        .deliveries
        .iter()
        .find(|d| d.id == id(2))
        .expect("third delivery");
    assert_eq!(third.state, DeliveryState::Pending);
    assert_eq!(third.attempts, 3);
    let second = status.deliveries.iter().find(|d| d.id == id(1));
    assert_eq!(second.map(|d| d.state), Some(DeliveryState::Delivered));
    Ok(())
}

/// An endpoint's counters after a batch of attempts (written once per endpoint at the end) are
/// what recording the same attempts one at a time gives: same totals, and the "last" values of
/// the latest attempt, whatever order the batch had them in.
pub async fn batched_counters(harness: &dyn Harness) -> Result<()> {
    let store = harness.open().await?;
    for i in 0..5 {
        store
            .enqueue(
                event(&format!("evt_{i}"), "user.created", 0),
                names(&["batch", "alone"]),
            )
            .await?;
    }
    let claimed = store.claim_due(claim_all("w", 1)).await?;
    assert_eq!(claimed.len(), 10);
    // Out of time order on purpose: the oldest success comes last.
    let plan = [
        (20, Some(200), NextStep::Delivered),
        (30, Some(500), NextStep::Retry { at: at(90) }),
        (
            25,
            Some(503),
            NextStep::DeadLetter {
                reason: "gave up".into(),
            },
        ),
        (
            31,
            Some(404),
            NextStep::DeadLetter {
                reason: "HTTP 404".into(),
            },
        ),
        (10, Some(204), NextStep::Delivered),
    ];
    let results_for = |name: &str| {
        let ids = claimed
            .iter()
            .filter(|c| c.delivery.endpoint == endpoint(name));
        ids.zip(&plan)
            .map(|(c, (seconds, status, next))| {
                result(c.delivery.id, "w", 1, *seconds, *status, 5, next.clone())
            })
            .collect::<Vec<_>>()
    };
    for outcome in store.record_attempts(results_for("batch")).await? {
        assert_eq!(outcome?, RecordOutcome::Applied);
    }
    for one in results_for("alone") {
        assert_eq!(store.record_attempt(one).await?, RecordOutcome::Applied);
    }
    let now = at(100);
    let batched = store.endpoint_stats(&endpoint("batch"), now).await?;
    let alone = store.endpoint_stats(&endpoint("alone"), now).await?;
    assert_eq!(batched, alone);
    assert_eq!(
        (batched.delivered_total, batched.dead_lettered_total),
        (2, 2)
    );
    assert_eq!(
        (batched.failed_attempts_total, batched.retries_total),
        (3, 1)
    );
    assert_eq!(batched.last_attempt_at, Some(at(31)));
    assert_eq!(batched.last_status_code, Some(404));
    assert_eq!(batched.last_success_at, Some(at(20)));
    assert_eq!(batched.last_failure_at, Some(at(31)));
    Ok(())
}
