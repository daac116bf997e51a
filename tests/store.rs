//! The store contract suite against the SQLite backend on a temporary file, plus SQLite-specific
//! checks (group commit, schema versioning, limits).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use tempfile::TempDir;
use webhook_operator::store::contract::{at, endpoint, event, names, Harness};
use webhook_operator::store::sqlite::{SqliteConfig, SqliteStore};
use webhook_operator::store::{AnalyticsQuery, BucketWidth, Result, Store, StoreError};

/// A database file in a fresh temporary directory.
struct SqliteHarness {
    dir: TempDir,
}

impl SqliteHarness {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    fn config(&self) -> SqliteConfig {
        SqliteConfig::new(self.dir.path().join("store.db"))
    }
}

#[async_trait]
impl Harness for SqliteHarness {
    async fn open(&self) -> Result<Arc<dyn Store>> {
        Ok(Arc::new(SqliteStore::open(self.config()).await?))
    }

    async fn open_with_tiny_queue(&self, capacity: usize) -> Result<Arc<dyn Store>> {
        let config = SqliteConfig {
            queue_capacity: capacity,
            max_batch: 1,
            ..self.config()
        };
        Ok(Arc::new(SqliteStore::open(config).await?))
    }

    fn idempotency_window(&self) -> Duration {
        self.config().idempotency_window
    }
}

webhook_operator::store_contract_tests!(SqliteHarness::new());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_share_commits() -> Result<()> {
    let harness = SqliteHarness::new();
    let commits = Arc::new(AtomicUsize::new(0));
    let largest = Arc::new(AtomicUsize::new(0));
    let (c, l) = (commits.clone(), largest.clone());
    let config = SqliteConfig {
        on_commit: Some(Arc::new(move |jobs, _took| {
            c.fetch_add(1, Ordering::Relaxed);
            l.fetch_max(jobs, Ordering::Relaxed);
        })),
        ..harness.config()
    };
    let store = Arc::new(SqliteStore::open(config).await?);
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
        commits.load(Ordering::Relaxed),
        largest.load(Ordering::Relaxed),
    );
    assert!(
        commits < 200,
        "200 concurrent enqueues took {commits} commits: not grouped"
    );
    assert!(largest > 1, "largest commit held {largest} operations");
    Ok(())
}

#[tokio::test]
async fn refuses_a_database_from_a_newer_binary() -> Result<()> {
    let harness = SqliteHarness::new();
    drop(harness.open().await?);
    let conn =
        rusqlite::Connection::open(harness.config().path).map_err(StoreError::backend("open"))?;
    conn.pragma_update(None, "user_version", 999)
        .map_err(StoreError::backend("bump version"))?;
    drop(conn);
    assert!(matches!(harness.open().await, Err(StoreError::Schema(_))));
    Ok(())
}

#[tokio::test]
async fn refuses_huge_analytics_ranges() -> Result<()> {
    let harness = SqliteHarness::new();
    let store = harness.open().await?;
    let query = AnalyticsQuery {
        endpoint: endpoint("a"),
        bucket: BucketWidth::Hour,
        from: at(0),
        to: at(10 * 365 * 86_400),
    };
    assert!(matches!(
        store.analytics(query).await,
        Err(StoreError::InvalidArgument(_))
    ));
    Ok(())
}

#[tokio::test]
async fn enqueue_batch_of_nothing_is_nothing() -> Result<()> {
    let harness = SqliteHarness::new();
    let store = harness.open().await?;
    assert!(store.enqueue_batch(Vec::new()).await?.is_empty());
    assert_eq!(store.pending_count().await?, 0);
    Ok(())
}
