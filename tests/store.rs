//! The store contract suite against the SQLite backend on a temporary file, plus SQLite-specific
//! checks (group commit, schema versioning, limits).
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use tempfile::TempDir;
use webhook_operator::store::contract::{self, at, endpoint, event, names, CommitCounter, Harness};
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
    let counter = CommitCounter::default();
    let config = SqliteConfig {
        on_commit: Some(counter.observer()),
        ..harness.config()
    };
    let store = Arc::new(SqliteStore::open(config).await?);
    contract::concurrent_enqueues_share_commits(store, &counter).await
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

/// `record_attempts` commits a batch in one writer job (one group commit); what it answers is
/// the contract suite's `batched_records`.
#[tokio::test]
async fn record_attempts_share_one_commit() -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use webhook_operator::store::NextStep;
    let harness = SqliteHarness::new();
    let commits = Arc::new(AtomicUsize::new(0));
    let counted = commits.clone();
    let config = SqliteConfig {
        on_commit: Some(Arc::new(move |_, _| {
            counted.fetch_add(1, Ordering::Relaxed);
        })),
        ..harness.config()
    };
    let store = SqliteStore::open(config).await?;
    store
        .enqueue(event("evt_1", "user.created", 0), names(&["a", "b", "c"]))
        .await?;
    let claimed = store.claim_due(contract::claim_all("w", 1)).await?;
    let commits_before = commits.load(Ordering::Relaxed);
    let results = claimed
        .iter()
        .map(|c| contract::result(c.delivery.id, "w", 1, 2, Some(200), 5, NextStep::Delivered))
        .collect();
    let outcomes = store.record_attempts(results).await?;
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes.iter().all(Result::is_ok));
    assert_eq!(
        commits.load(Ordering::Relaxed) - commits_before,
        1,
        "one group commit"
    );
    Ok(())
}

/// Set in the child process of [`acknowledged_enqueues_survive_kill_9`]: the database to load.
const KILL_CHILD_DB: &str = "STORE_KILL_CHILD_DB";

/// A child process enqueues (and claims) as fast as it can, printing each acknowledged event id;
/// it is killed with SIGKILL mid-load. Every acknowledged event must be in the file afterwards,
/// and every in-flight delivery must come back due.
#[test]
fn acknowledged_enqueues_survive_kill_9() -> Result<()> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    if let Ok(path) = std::env::var(KILL_CHILD_DB) {
        return kill_child(path.into());
    }
    let harness = SqliteHarness::new();
    let exe = std::env::current_exe().map_err(StoreError::backend("find test binary"))?;
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "acknowledged_enqueues_survive_kill_9",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL_CHILD_DB, harness.config().path)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(StoreError::backend("spawn child"))?;
    let stdout = child.stdout.take().expect("child stdout");
    let mut acknowledged = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    while acknowledged.len() < 500 {
        let Some(line) = lines.next() else { break };
        let line = line.map_err(StoreError::backend("read child"))?;
        if let Some(id) = line.strip_prefix("ACK ") {
            acknowledged.push(id.to_owned());
        }
    }
    child.kill().map_err(StoreError::backend("kill child"))?;
    // Acknowledgements already in the pipe count too.
    for line in lines {
        let line = line.map_err(StoreError::backend("read child"))?;
        if let Some(id) = line.strip_prefix("ACK ") {
            acknowledged.push(id.to_owned());
        }
    }
    child.wait().map_err(StoreError::backend("reap child"))?;
    assert!(
        acknowledged.len() >= 500,
        "the child acknowledged {} events",
        acknowledged.len()
    );

    let runtime = tokio::runtime::Runtime::new().map_err(StoreError::backend("runtime"))?;
    runtime.block_on(async {
        let store = harness.open().await?;
        for id in &acknowledged {
            let status = store.event_status(id).await?;
            assert_eq!(
                status.map(|s| s.deliveries.len()),
                Some(2),
                "acknowledged {id} was lost"
            );
        }
        store.recover_in_flight(None, at(0)).await?;
        let counts = store.queue_counts().await?;
        assert_eq!(counts.in_flight, 0);
        assert!(counts.pending >= 2 * acknowledged.len() as u64);
        Ok(())
    })
}

fn kill_child(path: std::path::PathBuf) -> Result<()> {
    use std::io::Write;
    let runtime = tokio::runtime::Runtime::new().map_err(StoreError::backend("runtime"))?;
    runtime.block_on(async move {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(SqliteConfig::new(path)).await?);
        let workers = (0..8).map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..100_000 {
                    let id = format!("evt_{w}_{i}");
                    store
                        .enqueue(event(&id, "user.created", 0), names(&["a", "b"]))
                        .await?;
                    {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "ACK {id}");
                        let _ = out.flush();
                    }
                    if i % 10 == 0 {
                        store
                            .claim_due(webhook_operator::store::contract::claim_all("child", 0))
                            .await?;
                    }
                }
                Ok::<_, StoreError>(())
            })
        });
        for joined in join_all(workers).await {
            joined.map_err(StoreError::backend("join"))??;
        }
        Ok(())
    })
}
