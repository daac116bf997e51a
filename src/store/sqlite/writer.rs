//! Group commit: one dedicated thread owns the write connection. Callers send jobs through a
//! bounded channel and await a oneshot; the thread takes every job waiting (up to a batch size),
//! runs each in its own savepoint inside one `BEGIN IMMEDIATE` transaction, commits once (one
//! fsync for the batch) and only then answers the callers.
//!
//! A job that fails rolls back its savepoint only; the others in the batch still commit. If the
//! commit itself fails, every job of the batch gets [`StoreError::Commit`] and nothing of it is
//! stored.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::store::{Result, StoreError};

/// Called after each commit with the number of jobs and how long the transaction took.
pub type CommitObserver = Arc<dyn Fn(usize, Duration) + Send + Sync>;

/// How a job enters a full queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Fail with [`StoreError::Saturated`] (new work: enqueue).
    FailFast,
    /// Wait for room (work already accepted: attempt results, claims).
    Wait,
}

/// A unit of work run on the write connection.
trait Job: Send {
    /// Runs in a savepoint of the batch's transaction.
    fn run(&mut self, tx: &mut Transaction<'_>);
    /// Answers the caller once the batch is committed (or failed).
    fn finish(self: Box<Self>, commit: std::result::Result<(), String>);
}

struct TypedJob<T, F> {
    work: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    fn run(&mut self, tx: &mut Transaction<'_>) {
        let Some(work) = self.work.take() else { return };
        let result = match tx.savepoint() {
            Ok(savepoint) => match catch_unwind(AssertUnwindSafe(|| work(&savepoint)))
                .unwrap_or_else(|_| Err(StoreError::Commit("store operation panicked".into())))
            {
                Ok(value) => savepoint
                    .commit()
                    .map(|()| value)
                    .map_err(StoreError::backend("release savepoint")),
                // Dropping the savepoint rolls it back.
                Err(e) => Err(e),
            },
            Err(e) => Err(StoreError::backend("open savepoint")(e)),
        };
        self.result = Some(result);
    }

    fn finish(self: Box<Self>, commit: std::result::Result<(), String>) {
        let answer = match (commit, self.result) {
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::Commit("job did not run".into())),
            (Err(message), _) => Err(StoreError::Commit(message)),
        };
        // The caller may have gone away (cancelled); its work is committed all the same.
        let _ = self.reply.send(answer.map_err(disk_full));
    }
}

/// A failure because the disk is full, named as such ([`StoreError::DiskFull`]). A statement's
/// error carries SQLite's code; a failed commit only its text (`commit_batch` answers every job
/// of the batch with it), which is SQLite's fixed message for `SQLITE_FULL`.
fn disk_full(error: StoreError) -> StoreError {
    let full = match &error {
        StoreError::Backend { source, .. } => {
            source
                .downcast_ref::<rusqlite::Error>()
                .and_then(rusqlite::Error::sqlite_error_code)
                == Some(rusqlite::ErrorCode::DiskFull)
        }
        StoreError::Commit(message) => message.contains("database or disk is full"),
        _ => false,
    };
    if full {
        StoreError::DiskFull(error.to_string())
    } else {
        error
    }
}

/// The handle callers use; cheap to clone. The thread stops when every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
    capacity: usize,
}

/// The writer's settings.
pub struct WriterConfig {
    /// Jobs that may wait; beyond it `Admission::FailFast` jobs are refused.
    pub queue_capacity: usize,
    /// Jobs per transaction at most.
    pub max_batch: usize,
    pub on_commit: Option<CommitObserver>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub fn spawn(conn: Connection, config: WriterConfig) -> Result<(Writer, JoinHandle<()>)> {
        let capacity = config.queue_capacity.max(1);
        let (jobs, receiver) = mpsc::channel(capacity);
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(conn, receiver, config.max_batch.max(1), config.on_commit))
            .map_err(StoreError::backend("spawn the store writer thread"))?;
        Ok((Writer { jobs, capacity }, handle))
    }

    /// Runs `work` in the next group commit and returns its result once committed.
    pub async fn submit<T, F>(&self, admission: Admission, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(TypedJob {
            work: Some(work),
            result: None,
            reply,
        });
        match admission {
            Admission::FailFast => self.jobs.try_send(job).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Saturated {
                    capacity: self.capacity,
                },
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            })?,
            Admission::Wait => self.jobs.send(job).await.map_err(|_| StoreError::Closed)?,
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

fn run(
    mut conn: Connection,
    mut receiver: mpsc::Receiver<Box<dyn Job>>,
    max_batch: usize,
    on_commit: Option<CommitObserver>,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch);
    while let Some(first) = receiver.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let commit = commit_batch(&mut conn, &mut batch);
        if let Err(message) = &commit {
            tracing::error!(jobs = batch.len(), error = %message, "store group commit failed");
        }
        if let Some(observer) = &on_commit {
            observer(batch.len(), started.elapsed());
        }
        for job in batch.drain(..) {
            job.finish(commit.clone());
        }
    }
    tracing::debug!("store writer stopped");
}

fn commit_batch(
    conn: &mut Connection,
    batch: &mut [Box<dyn Job>],
) -> std::result::Result<(), String> {
    let mut tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| format!("begin: {e}"))?;
    for job in batch.iter_mut() {
        job.run(&mut tx);
    }
    tx.commit().map_err(|e| format!("commit: {e}"))
}
