//! Group commit: one dedicated thread owns the write connection. Callers send jobs through a
//! channel and await a oneshot; the thread takes the jobs waiting (up to a batch size), runs them
//! inside one `BEGIN IMMEDIATE` transaction, commits once (one fsync for the batch) and only then
//! answers the callers.
//!
//! Two lanes share each transaction ([`plan_batch`]). Work already accepted (claims, attempt
//! results, give-backs: the delivery side) goes first, all of it. New work (enqueues) takes the
//! rest, at most [`INTAKE_ROWS_PER_COMMIT`] rows a transaction. Without that, publishers using
//! `events:batch` filled every transaction with tens of thousands of rows, each claim and record
//! waited behind them, and deliveries fell to under 900/s while ingest accepted 10,000 events/s
//! (docs/benchmarks.md, issue 19). New work that waits is bounded in jobs (`queue_capacity`):
//! beyond it enqueues fail fast with [`StoreError::Saturated`].
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
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::store::{Result, StoreError};

/// Called after each commit with the number of jobs and how long the transaction took.
pub type CommitObserver = Arc<dyn Fn(usize, Duration) + Send + Sync>;

/// Rows of new work (events and their deliveries) one transaction takes at most, after the
/// delivery side's jobs; a single larger job still goes alone. Enough for 64 publishers of one
/// event each to share one commit, small enough that a transaction stays a few milliseconds.
pub const INTAKE_ROWS_PER_COMMIT: usize = 512;

/// Which lane a job takes (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// New work (enqueue) of this many rows: refused with [`StoreError::Saturated`] when the
    /// queue of new work is full, and rationed per transaction.
    FailFast { rows: usize },
    /// Work already accepted (attempt results, claims): never refused, first in every
    /// transaction.
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

/// A job on its way to the writer thread, with its lane.
struct Queued {
    job: Box<dyn Job>,
    /// Rows of new work; `None` for work already accepted.
    intake_rows: Option<usize>,
    /// New work's place in the bounded queue, given back once the job is answered.
    place: Option<OwnedSemaphorePermit>,
}

/// The handle callers use; cheap to clone. The thread stops when every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    /// Unbounded: new work is bounded by `intake`, and the delivery side by its own callers
    /// (one claim at a time, the recorder's batches).
    jobs: mpsc::UnboundedSender<Queued>,
    /// Places for new work waiting (`queue_capacity`).
    intake: Arc<Semaphore>,
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
        let (jobs, receiver) = mpsc::unbounded_channel();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(conn, receiver, config.max_batch.max(1), config.on_commit))
            .map_err(StoreError::backend("spawn the store writer thread"))?;
        let intake = Arc::new(Semaphore::new(capacity));
        Ok((
            Writer {
                jobs,
                intake,
                capacity,
            },
            handle,
        ))
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
        let queued =
            match admission {
                Admission::FailFast { rows } => {
                    let place = self.intake.clone().try_acquire_owned().map_err(|_| {
                        StoreError::Saturated {
                            capacity: self.capacity,
                        }
                    })?;
                    Queued {
                        job,
                        intake_rows: Some(rows.max(1)),
                        place: Some(place),
                    }
                }
                Admission::Wait => Queued {
                    job,
                    intake_rows: None,
                    place: None,
                },
            };
        self.jobs.send(queued).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// The writer thread's waiting jobs, by lane, oldest first.
struct Lanes<T> {
    accepted: VecDeque<T>,
    /// With their rows.
    intake: VecDeque<(usize, T)>,
}

impl<T> Default for Lanes<T> {
    fn default() -> Self {
        Self {
            accepted: VecDeque::new(),
            intake: VecDeque::new(),
        }
    }
}

impl<T> Lanes<T> {
    fn is_empty(&self) -> bool {
        self.accepted.is_empty() && self.intake.is_empty()
    }
}

/// The next transaction's jobs: every accepted job waiting (up to `max_batch`), then new work
/// while its rows stay within `intake_rows` (the first one always goes, so a large job is not
/// stuck). Each lane keeps its order. Pure.
fn plan_batch<T>(lanes: &mut Lanes<T>, max_batch: usize, intake_rows: usize) -> Vec<T> {
    let max_batch = max_batch.max(1);
    let mut batch: Vec<T> = Vec::with_capacity(max_batch.min(lanes.accepted.len() + 64));
    while batch.len() < max_batch {
        match lanes.accepted.pop_front() {
            Some(job) => batch.push(job),
            None => break,
        }
    }
    let mut rows = 0;
    while batch.len() < max_batch {
        match lanes.intake.front() {
            Some((next, _)) if rows == 0 || rows + next <= intake_rows => {
                if let Some((next, job)) = lanes.intake.pop_front() {
                    rows += next;
                    batch.push(job);
                }
            }
            _ => break,
        }
    }
    batch
}

fn run(
    mut conn: Connection,
    mut receiver: mpsc::UnboundedReceiver<Queued>,
    max_batch: usize,
    on_commit: Option<CommitObserver>,
) {
    let mut lanes: Lanes<Queued> = Lanes::default();
    let sort = |lanes: &mut Lanes<Queued>, queued: Queued| match queued.intake_rows {
        Some(rows) => lanes.intake.push_back((rows, queued)),
        None => lanes.accepted.push_back(queued),
    };
    loop {
        if lanes.is_empty() {
            match receiver.blocking_recv() {
                Some(queued) => sort(&mut lanes, queued),
                None => break,
            }
        }
        // Everything waiting, so that the delivery side's jobs behind new work are seen.
        while let Ok(queued) = receiver.try_recv() {
            sort(&mut lanes, queued);
        }
        let batch = plan_batch(&mut lanes, max_batch, INTAKE_ROWS_PER_COMMIT);
        let mut jobs: Vec<Box<dyn Job>> = Vec::with_capacity(batch.len());
        let mut places = Vec::with_capacity(batch.len());
        for queued in batch {
            jobs.push(queued.job);
            places.push(queued.place);
        }
        let started = Instant::now();
        let commit = commit_batch(&mut conn, &mut jobs);
        if let Err(message) = &commit {
            tracing::error!(jobs = jobs.len(), error = %message, "store group commit failed");
        }
        if let Some(observer) = &on_commit {
            observer(jobs.len(), started.elapsed());
        }
        for job in jobs {
            job.finish(commit.clone());
        }
        // The places of the new work just answered are free for the next.
        drop(places);
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

    fn lanes(accepted: usize, intake: &[usize]) -> Lanes<String> {
        Lanes {
            accepted: (0..accepted).map(|i| format!("a{i}")).collect(),
            intake: intake
                .iter()
                .enumerate()
                .map(|(i, rows)| (*rows, format!("n{i}")))
                .collect(),
        }
    }

    #[test]
    fn accepted_work_goes_first_and_new_work_is_rationed_by_rows() {
        let mut waiting = lanes(3, &[50; 20]);
        let batch = plan_batch(&mut waiting, 1_000, 512);
        // 10 jobs of 50 rows fit in 512; the 11th would not.
        let expected: Vec<String> = ["a0", "a1", "a2"]
            .into_iter()
            .map(String::from)
            .chain((0..10).map(|i| format!("n{i}")))
            .collect();
        assert_eq!(batch, expected);
        assert_eq!(waiting.intake.len(), 10);
        assert_eq!(plan_batch(&mut waiting, 1_000, 512).len(), 10);
        assert!(waiting.is_empty());
    }

    #[test]
    fn new_work_larger_than_the_ration_goes_alone() {
        let mut waiting = lanes(0, &[5_000, 1]);
        assert_eq!(plan_batch(&mut waiting, 1_000, 512), ["n0"]);
        assert_eq!(plan_batch(&mut waiting, 1_000, 512), ["n1"]);
    }

    proptest::proptest! {
        /// Nothing is lost or reordered within a lane; accepted work never waits behind new
        /// work; new work stays within its ration unless one job alone exceeds it; a batch is
        /// never empty while anything waits.
        #[test]
        fn plan_batch_keeps_its_promises(
            accepted in 0usize..50,
            intake in proptest::collection::vec(1usize..300, 0..50),
            max_batch in 1usize..40,
            ration in 1usize..600,
        ) {
            let mut waiting = lanes(accepted, &intake);
            let mut seen = Vec::new();
            let mut rounds = 0;
            while !waiting.is_empty() {
                let before = waiting.accepted.len();
                let batch = plan_batch(&mut waiting, max_batch, ration);
                proptest::prop_assert!(!batch.is_empty() && batch.len() <= max_batch);
                let taken_accepted = batch.iter().filter(|j| j.starts_with('a')).count();
                proptest::prop_assert_eq!(taken_accepted, before.min(max_batch));
                let new: Vec<usize> = batch
                    .iter()
                    .filter_map(|j| j.strip_prefix('n'))
                    .map(|i| intake[i.parse::<usize>().unwrap()])
                    .collect();
                proptest::prop_assert!(new.len() <= 1 || new.iter().sum::<usize>() <= ration);
                seen.extend(batch);
                rounds += 1;
                proptest::prop_assert!(rounds <= accepted + intake.len());
            }
            let expected_accepted: Vec<String> = (0..accepted).map(|i| format!("a{i}")).collect();
            let expected_new: Vec<String> = (0..intake.len()).map(|i| format!("n{i}")).collect();
            let got_accepted: Vec<String> = seen.iter().filter(|j| j.starts_with('a')).cloned().collect();
            let got_new: Vec<String> = seen.iter().filter(|j| j.starts_with('n')).cloned().collect();
            proptest::prop_assert_eq!(got_accepted, expected_accepted);
            proptest::prop_assert_eq!(got_new, expected_new);
        }
    }

    /// A writer whose thread is held by a job until the returned sender is dropped.
    async fn held_writer(capacity: usize) -> (Writer, std::sync::mpsc::Sender<()>) {
        let (writer, _) = Writer::spawn(
            table(),
            WriterConfig {
                queue_capacity: capacity,
                max_batch: 1_000,
                on_commit: None,
            },
        )
        .unwrap();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        let (started, running) = oneshot::channel();
        let started = Mutex::new(Some(started));
        let holder = writer.clone();
        tokio::spawn(async move {
            holder
                .submit(Admission::Wait, move |_| {
                    if let Some(started) = started.lock().unwrap().take() {
                        let _ = started.send(());
                    }
                    // Until `release` is dropped.
                    let _ = held.lock().unwrap().recv();
                    Ok(())
                })
                .await
        });
        running.await.unwrap();
        (writer, release)
    }

    #[tokio::test]
    async fn the_delivery_side_overtakes_waiting_new_work_which_is_bounded() {
        let (writer, release) = held_writer(20).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for i in 0..20 {
            let (order, writer) = (order.clone(), writer.clone());
            waiting.push(tokio::spawn(async move {
                writer
                    .submit(Admission::FailFast { rows: 50 }, move |conn| {
                        order.lock().unwrap().push(format!("new {i}"));
                        insert(i)(conn, Isolation::Shared)
                    })
                    .await
            }));
        }
        // The queue of new work is full: the next is refused at once, stored nowhere.
        tokio::task::yield_now().await;
        let refused = writer
            .submit(Admission::FailFast { rows: 1 }, |_| Ok(()))
            .await;
        assert!(matches!(
            refused,
            Err(StoreError::Saturated { capacity: 20 })
        ));
        // Work already accepted is never refused, and goes before the new work waiting.
        let (accepted_order, accepting) = (order.clone(), writer.clone());
        let accepted = tokio::spawn(async move {
            accepting
                .submit(Admission::Wait, move |_| {
                    accepted_order.lock().unwrap().push("accepted".into());
                    Ok(())
                })
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(release);
        accepted.await.unwrap().unwrap();
        for job in waiting {
            job.await.unwrap().unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order.len(), 21);
        assert_eq!(order[0], "accepted");
        // And the places free again once answered.
        assert!(writer
            .submit(Admission::FailFast { rows: 1 }, |_| Ok(()))
            .await
            .is_ok());
    }
}
