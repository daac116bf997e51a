//! Group commit of enqueues. Callers put their batch in a bounded channel (full: the enqueue is
//! refused at once with [`StoreError::Saturated`] and nothing is stored) and await a oneshot. One
//! task takes every job waiting (up to a batch size) and runs them all in one transaction, so one
//! commit (one WAL flush on the server) covers them all, then answers each caller.
//!
//! Each round of the batch's enqueues ([`pipeline::rounds`]) is a few set-based statements
//! ([`enqueue::enqueue_round`]). When one fails with an error of its own (not the connection's),
//! the transaction is run again with each enqueue as a round of its own, pipelined, to find the
//! job it came from: that job is answered with its error and the transaction is run again
//! without it, so the other jobs still commit. If the connection or the commit fails,
//! every job of the batch gets [`StoreError::Commit`] (transient: nothing of it may be assumed
//! stored, and retrying it is safe because enqueues are idempotent).
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::{enqueue, pipeline, writes};
use crate::store::{EnqueueOutcome, EnqueueRequest, Result, StoreError};

/// Called after each commit with the number of jobs and how long the transaction took.
pub type CommitObserver = Arc<dyn Fn(usize, Duration) + Send + Sync>;

struct Job {
    requests: Vec<EnqueueRequest>,
    reply: oneshot::Sender<Result<Vec<EnqueueOutcome>>>,
}

impl Job {
    fn answer(self, result: Result<Vec<EnqueueOutcome>>) {
        // The caller may have gone away (cancelled); its work is committed all the same.
        let _ = self.reply.send(result);
    }
}

/// The writer's settings.
pub struct WriterConfig {
    /// Jobs that may wait; beyond it enqueues are refused.
    pub queue_capacity: usize,
    /// Jobs per transaction at most.
    pub max_batch: usize,
    pub idempotency_window_ms: i64,
    pub on_commit: Option<CommitObserver>,
}

/// The handle callers use; cheap to clone. The task stops when every handle is dropped, after
/// committing what was queued.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    capacity: usize,
}

impl Writer {
    /// Starts the writer task (on the current tokio runtime).
    pub fn spawn(pool: Pool, config: WriterConfig) -> Writer {
        let capacity = config.queue_capacity.max(1);
        let (jobs, receiver) = mpsc::channel(capacity);
        tokio::spawn(run(pool, receiver, config));
        Writer { jobs, capacity }
    }

    /// Enqueues `requests` in the next group commit; answers once committed.
    pub async fn enqueue(&self, requests: Vec<EnqueueRequest>) -> Result<Vec<EnqueueOutcome>> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .try_send(Job { requests, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Saturated {
                    capacity: self.capacity,
                },
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

async fn run(pool: Pool, mut receiver: mpsc::Receiver<Job>, config: WriterConfig) {
    let max_batch = config.max_batch.max(1);
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (jobs, started) = (batch.len(), Instant::now());
        commit(&pool, &mut batch, config.idempotency_window_ms).await;
        if let Some(observer) = &config.on_commit {
            observer(jobs, started.elapsed());
        }
    }
    tracing::debug!("postgres store writer stopped");
}

/// Why a batch's transaction did not commit.
enum Failed {
    /// Job `index` failed by itself; the others may be run again without it.
    Job(usize, StoreError),
    /// A round of several enqueues failed by itself: run the batch one enqueue a round to find
    /// which.
    Round,
    /// The connection or the transaction failed: every job fails.
    Batch(String),
}

/// Commits the batch (without the jobs that fail by themselves) and answers every job.
async fn commit(pool: &Pool, batch: &mut Vec<Job>, window_ms: i64) {
    let mut one_by_one = false;
    while !batch.is_empty() {
        match run_batch(pool, batch, window_ms, one_by_one).await {
            Ok(outcomes) => {
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    job.answer(Ok(outcome));
                }
            }
            Err(Failed::Job(index, error)) => batch.remove(index).answer(Err(error)),
            Err(Failed::Round) => one_by_one = true,
            Err(Failed::Batch(message)) => {
                tracing::error!(jobs = batch.len(), error = %message, "postgres group commit failed");
                for job in batch.drain(..) {
                    job.answer(Err(StoreError::Commit(message.clone())));
                }
            }
        }
    }
}

async fn run_batch(
    pool: &Pool,
    batch: &[Job],
    window_ms: i64,
    one_by_one: bool,
) -> std::result::Result<Vec<Vec<EnqueueOutcome>>, Failed> {
    let whole = |what: &str| {
        let what = what.to_owned();
        move |e: &dyn std::fmt::Display| Failed::Batch(format!("{what}: {e}"))
    };
    let mut client = pool.get().await.map_err(|e| whole("connect")(&e))?;
    let tx = client.transaction().await.map_err(|e| whole("begin")(&e))?;
    writes::lock_identities(&tx, batch.iter().flat_map(|job| &job.requests))
        .await
        .map_err(|e| whole("lock")(&e))?;
    // Every request with the index of its job, in batch order.
    let requests: Vec<(usize, &EnqueueRequest)> = batch
        .iter()
        .enumerate()
        .flat_map(|(index, job)| job.requests.iter().map(move |r| (index, r)))
        .collect();
    let keys: Vec<Vec<String>> = requests
        .iter()
        .map(|(_, request)| pipeline::conflict_keys(request))
        .collect();
    let mut done: Vec<Option<EnqueueOutcome>> = Vec::new();
    done.resize_with(requests.len(), || None);
    for round in pipeline::rounds(&keys) {
        let (sets, pieces);
        let parts: &[Vec<usize>] = if one_by_one {
            pieces = round.iter().map(|&k| vec![k]).collect::<Vec<_>>();
            &pieces
        } else {
            sets = [round];
            &sets
        };
        // Issued together: the connection pipelines them.
        let tx = &tx;
        let answers = futures::future::join_all(parts.iter().map(|part| {
            let part: Vec<&EnqueueRequest> = part.iter().map(|&k| requests[k].1).collect();
            async move { enqueue::enqueue_round(tx, &part, window_ms).await }
        }))
        .await;
        let mut culprit = None;
        let mut failed = false;
        for (part, answer) in parts.iter().zip(answers) {
            match answer {
                Ok(outcomes) => {
                    for (&k, outcome) in part.iter().zip(outcomes) {
                        done[k] = Some(outcome);
                    }
                }
                Err(e) if e.is_transient() => return Err(whole("enqueue")(&e)),
                Err(e) => {
                    failed = true;
                    // The others fail only because this one ended the transaction.
                    if culprit.is_none() && !super::failed_before(&e) {
                        culprit = Some(match part[..] {
                            [k] => Failed::Job(requests[k].0, e),
                            _ => Failed::Round,
                        });
                    }
                }
            }
        }
        if failed {
            return Err(culprit.unwrap_or_else(|| {
                Failed::Batch("enqueue: the transaction failed and no statement says why".into())
            }));
        }
    }
    let mut outcomes: Vec<Vec<EnqueueOutcome>> = batch
        .iter()
        .map(|job| Vec::with_capacity(job.requests.len()))
        .collect();
    for ((index, _), outcome) in requests.iter().zip(done) {
        match outcome {
            Some(outcome) => outcomes[*index].push(outcome),
            None => return Err(Failed::Batch("enqueue: a request was not run".into())),
        }
    }
    tx.commit().await.map_err(|e| whole("commit")(&e))?;
    Ok(outcomes)
}
