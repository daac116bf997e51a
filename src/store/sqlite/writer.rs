//! Group commit: one dedicated thread owns the write connection. Callers send jobs through a
//! bounded channel and await a oneshot; the thread takes every job waiting (up to a batch size),
//! runs them inside one `BEGIN IMMEDIATE` transaction, commits once (one fsync for the batch) and
//! only then answers the callers.
//!
//! Jobs run optimistically first: straight in the transaction, with no savepoint
//! ([`Isolation::Shared`]). A savepoint costs a copy of every page a job first changes (SQLite's
//! sub-journal): 8% of the dispatcher's CPU under load, for failures that almost never happen.
//! If any job fails, the transaction is rolled back and the batch runs again, each job in a
//! savepoint of its own ([`Isolation::Own`]): a job that fails then rolls back its savepoint
//! only, and the others still commit. So jobs must be re-runnable (`Fn`), and a job that
//! handles many items (attempt results) may, in `Own`, isolate each item in a savepoint too. If
//! the commit itself fails, every job of the batch gets [`StoreError::Commit`] and nothing of it
//! is stored.
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

/// How a job runs in its batch's transaction (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Straight in the transaction: any failure fails the batch's first pass.
    Shared,
    /// In a savepoint of its own: a failure undoes this job only.
    Own,
}

/// A unit of work run on the write connection.
trait Job: Send {
    /// Runs the work (in `Own`, in a savepoint of the batch's transaction); true if it succeeded.
    fn run(&mut self, tx: &mut Transaction<'_>, isolation: Isolation) -> bool;
    /// Answers the caller once the batch is committed (or failed).
    fn finish(self: Box<Self>, commit: std::result::Result<(), String>);
}

struct TypedJob<T, F> {
    work: F,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> TypedJob<T, F>
where
    F: Fn(&Connection, Isolation) -> Result<T>,
{
    fn attempt(&self, conn: &Connection, isolation: Isolation) -> Result<T> {
        catch_unwind(AssertUnwindSafe(|| (self.work)(conn, isolation)))
            .unwrap_or_else(|_| Err(StoreError::Commit("store operation panicked".into())))
    }
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send + 'static,
    F: Fn(&Connection, Isolation) -> Result<T> + Send + 'static,
{
    fn run(&mut self, tx: &mut Transaction<'_>, isolation: Isolation) -> bool {
        let result = match isolation {
            Isolation::Shared => self.attempt(tx, isolation),
            Isolation::Own => match tx.savepoint() {
                Ok(savepoint) => match self.attempt(&savepoint, isolation) {
                    Ok(value) => savepoint
                        .commit()
                        .map(|()| value)
                        .map_err(StoreError::backend("release savepoint")),
                    // Dropping the savepoint rolls it back.
                    Err(e) => Err(e),
                },
                Err(e) => Err(StoreError::backend("open savepoint")(e)),
            },
        };
        let succeeded = result.is_ok();
        self.result = Some(result);
        succeeded
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

    /// Runs `work` in the next group commit and returns its result once committed. It may run
    /// twice (the first run rolled back), so it must not consume what it captures.
    pub async fn submit<T, F>(&self, admission: Admission, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T> + Send + 'static,
    {
        self.submit_isolating(admission, move |conn, _| work(conn))
            .await
    }

    /// As [`submit`](Self::submit), for work that is told how it runs: in
    /// [`Isolation::Own`] it may put each of its items in a savepoint of its own, and in
    /// [`Isolation::Shared`] fail as a whole instead.
    pub async fn submit_isolating<T, F>(&self, admission: Admission, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection, Isolation) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(TypedJob {
            work,
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

/// Runs the batch without savepoints and commits; if a job failed, rolls that back and runs
/// the batch again with a savepoint per job.
fn commit_batch(
    conn: &mut Connection,
    batch: &mut [Box<dyn Job>],
) -> std::result::Result<(), String> {
    let mut tx = begin(conn)?;
    if batch
        .iter_mut()
        .all(|job| job.run(&mut tx, Isolation::Shared))
    {
        return tx.commit().map_err(|e| format!("commit: {e}"));
    }
    // A failed statement may have ended the transaction already; either way it is gone.
    let _ = tx.rollback();
    let mut tx = begin(conn)?;
    for job in batch.iter_mut() {
        job.run(&mut tx, Isolation::Own);
    }
    tx.commit().map_err(|e| format!("commit: {e}"))
}

fn begin(conn: &mut Connection) -> std::result::Result<Transaction<'_>, String> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| format!("begin: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn job<T, F>(work: F) -> (Box<dyn Job>, oneshot::Receiver<Result<T>>)
    where
        T: Send + 'static,
        F: Fn(&Connection, Isolation) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = TypedJob {
            work,
            result: None,
            reply,
        };
        (Box::new(job), answer)
    }

    fn insert(value: i64) -> impl Fn(&Connection, Isolation) -> Result<()> {
        move |conn, _| {
            conn.execute("INSERT INTO t (v) VALUES (?1)", [value])
                .map(drop)
                .map_err(StoreError::backend("insert"))
        }
    }

    fn values(conn: &Connection) -> Vec<i64> {
        let mut statement = conn.prepare("SELECT v FROM t ORDER BY v").unwrap();
        let rows = statement.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    }

    fn run_batch(conn: &mut Connection, jobs: Vec<Box<dyn Job>>) {
        let mut batch = jobs;
        let commit = commit_batch(conn, &mut batch);
        assert_eq!(commit, Ok(()));
        for job in batch {
            job.finish(commit.clone());
        }
    }

    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)")
            .unwrap();
        conn
    }

    #[test]
    fn a_failing_job_is_undone_alone_and_the_others_commit() {
        let mut conn = table();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (first, first_answer) = job(insert(1));
        let (failing, failing_answer) = job(|conn: &Connection, _| -> Result<()> {
            conn.execute("INSERT INTO t (v) VALUES (2)", [])
                .map_err(StoreError::backend("insert"))?;
            Err(StoreError::InvalidArgument("refused".into()))
        });
        let record = seen.clone();
        let (watched, watched_answer) = job(move |conn: &Connection, isolation| {
            record.lock().unwrap().push(isolation);
            insert(3)(conn, isolation)
        });
        run_batch(&mut conn, vec![first, failing, watched]);
        assert_eq!(values(&conn), [1, 3]);
        assert!(first_answer.blocking_recv().unwrap().is_ok());
        assert!(matches!(
            failing_answer.blocking_recv().unwrap(),
            Err(StoreError::InvalidArgument(_))
        ));
        assert!(watched_answer.blocking_recv().unwrap().is_ok());
        // The first pass stopped at the failure; the second ran every job in its savepoint.
        assert_eq!(*seen.lock().unwrap(), [Isolation::Own]);
    }

    #[test]
    fn a_batch_that_succeeds_runs_once_without_savepoints() {
        let mut conn = table();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let (watched, answer) = job(move |conn: &Connection, isolation| {
            record.lock().unwrap().push(isolation);
            insert(7)(conn, isolation)
        });
        let (other, _) = job(insert(8));
        run_batch(&mut conn, vec![watched, other]);
        assert_eq!(values(&conn), [7, 8]);
        assert!(answer.blocking_recv().unwrap().is_ok());
        assert_eq!(*seen.lock().unwrap(), [Isolation::Shared]);
    }

    #[test]
    fn a_panicking_job_fails_alone() {
        let mut conn = table();
        let (panics, answer) = job(|_: &Connection, _| -> Result<()> { panic!("boom") });
        let (other, other_answer) = job(insert(5));
        run_batch(&mut conn, vec![panics, other]);
        assert_eq!(values(&conn), [5]);
        assert!(matches!(
            answer.blocking_recv().unwrap(),
            Err(StoreError::Commit(_))
        ));
        assert!(other_answer.blocking_recv().unwrap().is_ok());
    }
}
