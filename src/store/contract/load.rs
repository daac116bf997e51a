//! Under load: backpressure without loss, and concurrent enqueues that all survive a restart.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;

use super::{event, names, Harness};
use crate::store::{Result, Store, StoreError};

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

/// Counts a backend's group commits through its commit observer (`on_commit` of the SQLite and
/// PostgreSQL configs).
#[derive(Clone, Default)]
pub struct CommitCounter {
    commits: Arc<AtomicUsize>,
    largest: Arc<AtomicUsize>,
}

impl CommitCounter {
    /// The observer to put in the backend's config.
    pub fn observer(&self) -> Arc<dyn Fn(usize, Duration) + Send + Sync> {
        let (commits, largest) = (self.commits.clone(), self.largest.clone());
        Arc::new(move |jobs, _took| {
            commits.fetch_add(1, Ordering::Relaxed);
            largest.fetch_max(jobs, Ordering::Relaxed);
        })
    }

    /// The most jobs one commit has held so far.
    pub fn largest(&self) -> usize {
        self.largest.load(Ordering::Relaxed)
    }
}

/// 200 concurrent enqueues on a store opened with `counter`'s observer share commits.
pub async fn concurrent_enqueues_share_commits(
    store: Arc<dyn Store>,
    counter: &CommitCounter,
) -> Result<()> {
    let enqueues = (0..200).map(|i| {
        let store = store.clone();
        async move {
            store
                .enqueue(event(&format!("evt_{i}"), "user.created", 0), names(&["a"]))
                .await
        }
    });
    for outcome in join_all(enqueues).await {
        outcome?;
    }
    let (commits, largest) = (
        counter.commits.load(Ordering::Relaxed),
        counter.largest.load(Ordering::Relaxed),
    );
    assert!(
        commits < 200,
        "200 concurrent enqueues took {commits} commits: not grouped"
    );
    assert!(largest > 1, "largest commit held {largest} operations");
    assert_eq!(store.pending_count().await?, 200);
    Ok(())
}
