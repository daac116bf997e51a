//! Under load: backpressure without loss, and concurrent enqueues that all survive a restart.
use futures::future::join_all;

use super::{event, names, Harness};
use crate::store::{Result, StoreError};

/// A burst against a tiny write queue: some enqueues are refused with `Saturated`; every accepted
/// event is stored and no refused one is.
pub async fn saturation_refuses_without_loss<H: Harness>(harness: &H) -> Result<()> {
    let store = harness.open_with_tiny_queue(1).await?;
    let burst = (0..400).map(|i| {
        let store = store.clone();
        async move {
            let id = format!("evt_{i:03}");
            let outcome = store
                .enqueue(event(&id, "user.created", 0), names(&["a"]))
                .await;
            (id, outcome)
        }
    });
    let outcomes = join_all(burst).await;
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    for (id, outcome) in outcomes {
        match outcome {
            Ok(out) => {
                assert!(!out.duplicate);
                accepted.push(id);
            }
            Err(StoreError::Saturated { .. }) => refused.push(id),
            Err(other) => return Err(other),
        }
    }
    assert!(
        !refused.is_empty(),
        "a burst of 400 against a queue of 1 saturates it"
    );
    assert!(!accepted.is_empty(), "the queue still takes work");
    for id in &accepted {
        assert!(
            store.event_status(id).await?.is_some(),
            "accepted {id} is stored"
        );
    }
    for id in &refused {
        assert!(
            store.event_status(id).await?.is_none(),
            "refused {id} is not stored"
        );
    }
    assert_eq!(store.pending_count().await?, accepted.len() as u64);
    let retry = store
        .enqueue(event(&refused[0], "user.created", 1), names(&["a"]))
        .await?;
    assert!(!retry.duplicate, "a refused event can be sent again");
    Ok(())
}

/// Many tasks enqueue at once; after a restart every event and delivery is there.
pub async fn concurrent_enqueues_are_durable<H: Harness>(harness: &H) -> Result<()> {
    const TASKS: usize = 32;
    const PER_TASK: usize = 25;
    let store = harness.open().await?;
    let tasks = (0..TASKS).map(|t| {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..PER_TASK {
                let out = store
                    .enqueue(
                        event(&format!("evt_{t}_{i}"), "user.created", 0),
                        names(&["a", "b"]),
                    )
                    .await?;
                assert_eq!(out.deliveries.len(), 2);
            }
            Ok::<_, StoreError>(())
        })
    });
    for joined in join_all(tasks).await {
        joined.map_err(StoreError::backend("join enqueue task"))??;
    }
    drop(store);

    let store = harness.open().await?;
    for t in 0..TASKS {
        for i in 0..PER_TASK {
            let status = store.event_status(&format!("evt_{t}_{i}")).await?;
            assert_eq!(
                status.map(|s| s.deliveries.len()),
                Some(2),
                "evt_{t}_{i} survived the restart"
            );
        }
    }
    assert_eq!(store.pending_count().await?, (TASKS * PER_TASK * 2) as u64);
    Ok(())
}
