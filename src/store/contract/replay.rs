//! Dead letters and replays: a replay id runs once, across restarts.
use super::{at, claim_all, claim_and_finish, endpoint, event, names, result, Harness};
use crate::store::{DeliveryState, FinalOutcome, NextStep, ReplayFilter, ReplayRequest, Result};

fn filter(event_types: &[&str], outcomes: &[FinalOutcome]) -> ReplayFilter {
    ReplayFilter {
        endpoint: endpoint("a"),
        from: at(0),
        to: at(100),
        event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
        outcomes: outcomes.to_vec(),
    }
}

fn request(replay_id: &str, filter: ReplayFilter, seconds: i64) -> ReplayRequest {
    ReplayRequest {
        replay_id: replay_id.to_owned(),
        filter,
        now: at(seconds),
    }
}

pub async fn dead_letter_and_replay_once<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open().await?;
    store
        .enqueue(event("evt_1", "user.created", 0), names(&["a"]))
        .await?;
    store
        .enqueue(event("evt_2", "pitch.created", 1), names(&["a"]))
        .await?;
    store
        .enqueue(event("evt_3", "user.updated", 2), names(&["a"]))
        .await?;
    store
        .enqueue(event("evt_late", "user.created", 150), names(&["a"]))
        .await?;
    let claimed = store.claim_due(claim_all("w", 10)).await?;
    assert_eq!(claimed.len(), 3);
    for c in &claimed {
        let next = match c.event.event_id.as_str() {
            "evt_3" => NextStep::Delivered,
            _ => NextStep::DeadLetter {
                reason: "HTTP 410".into(),
            },
        };
        store
            .record_attempt(result(c.delivery.id, "w", 1, 11, Some(410), 5, next))
            .await?;
    }
    claim_and_finish(
        store.as_ref(),
        "w",
        150,
        410,
        NextStep::DeadLetter {
            reason: "gone".into(),
        },
    )
    .await?;

    let dead_users = filter(&["user.*"], &[FinalOutcome::DeadLettered]);
    let candidates = store.replay_candidates(dead_users.clone(), 100).await?;
    assert_eq!(
        candidates
            .iter()
            .map(|d| d.event_id.as_str())
            .collect::<Vec<_>>(),
        vec!["evt_1"]
    );
    assert_eq!(
        store.replay_candidates(filter(&[], &[]), 2).await?.len(),
        2,
        "limit applies"
    );

    let first = store
        .replay(request("replay-1", dead_users.clone(), 200))
        .await?;
    assert!(first.first_run);
    assert_eq!((first.matched, first.requeued), (1, 1));
    let redelivery = store.claim_due(claim_all("w", 200)).await?;
    assert_eq!(redelivery.len(), 1);
    assert_eq!(redelivery[0].event.event_id, "evt_1");
    assert_eq!(
        redelivery[0].delivery.replay_id.as_deref(),
        Some("replay-1")
    );
    assert_eq!(
        redelivery[0].delivery.attempts, 0,
        "a replay is a new delivery"
    );

    let again = store
        .replay(request("replay-1", dead_users.clone(), 201))
        .await?;
    assert!(!again.first_run, "a replay id runs once");
    assert_eq!(
        (again.matched, again.requeued),
        (1, 1),
        "the first run's counts are reported"
    );
    assert!(store.claim_due(claim_all("w", 202)).await?.is_empty());

    drop(store);
    let store = harness.open().await?;
    let after_restart = store.replay(request("replay-1", dead_users, 203)).await?;
    assert!(
        !after_restart.first_run,
        "a replay id runs once across restarts"
    );
    assert_eq!(
        store.queue_counts().await?.in_flight,
        1,
        "no new delivery was created"
    );

    let status = store.event_status("evt_1").await?.expect("event");
    assert_eq!(status.deliveries.len(), 2, "original and replayed delivery");
    assert_eq!(status.deliveries[0].state, DeliveryState::DeadLettered);

    let everything = filter(&[], &[FinalOutcome::Delivered, FinalOutcome::DeadLettered]);
    let all = store.replay(request("replay-2", everything, 204)).await?;
    assert_eq!(
        (all.matched, all.requeued),
        (3, 3),
        "one redelivery per event in range"
    );

    let progress = store
        .replay_progress("replay-1")
        .await?
        .expect("replay-1 ran");
    assert_eq!(
        (progress.matched, progress.requeued, progress.outstanding),
        (1, 1, 1)
    );
    assert_eq!(progress.endpoint, endpoint("a"));
    let id = redelivery[0].delivery.id;
    store
        .record_attempt(result(id, "w", 1, 205, Some(200), 5, NextStep::Delivered))
        .await?;
    let progress = store
        .replay_progress("replay-1")
        .await?
        .expect("replay-1 ran");
    assert_eq!(
        (
            progress.outstanding,
            progress.delivered,
            progress.dead_lettered
        ),
        (0, 1, 0)
    );
    assert!(store.replay_progress("never").await?.is_none());
    Ok(())
}
