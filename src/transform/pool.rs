//! The dispatcher's side of transforms. Programs proved bounded run in process (`in_process.rs`);
//! the others go to a few worker processes (`worker.rs`), started when the
//! first transform runs, each serving one request at a time from a shared queue. A run that
//! passes its deadline kills its worker, and a worker that dies (stack overflow, memory limit)
//! is replaced; either way only that run fails, and the other workers keep serving, so a hostile
//! program on one endpoint costs the others at most one worker for one deadline per event.
use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tracing::warn;

use super::in_process::InProcess;
use super::protocol::{encode_request, parse_response, Inbox, Response};
use super::Output;

/// Runs counted by where they ran (the dispatcher's `transform_runs` metric; unregistered
/// counters by default).
#[derive(Clone, Debug, Default)]
pub struct RunCounters {
    /// Programs proved bounded, run in the dispatcher.
    pub in_process: Counter,
    /// Runs sent to a worker process.
    pub in_worker: Counter,
}

/// How transforms are run and bounded.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The binary to start as `<binary> transform-worker` (this one).
    pub binary: PathBuf,
    pub workers: usize,
    /// Time allowed for one run, from the moment a worker takes it.
    pub timeout: Duration,
    /// The largest request body a transform may produce.
    pub max_output: usize,
    /// The address space each worker process may add to what it maps at start.
    pub memory_limit: u64,
    pub runs: RunCounters,
}

impl PoolConfig {
    /// Defaults for `binary`: 2 workers, 1 s, 1 MiB of output, 1 GiB of address space.
    pub fn new(binary: PathBuf) -> Self {
        PoolConfig {
            binary,
            workers: 2,
            timeout: Duration::from_secs(1),
            max_output: 1 << 20,
            memory_limit: 1 << 30,
            runs: RunCounters::default(),
        }
    }
}

/// Why a transform gave no body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    #[error("the program does not compile: {0}")]
    Compile(String),
    #[error("{0}")]
    Run(String),
    #[error("the program ran longer than {0:?} and was stopped")]
    Timeout(Duration),
    #[error("the program crashed its worker ({0})")]
    Crashed(String),
    /// No worker could be started or reached: not the program's fault, so worth a retry.
    #[error("no transform worker is available: {0}")]
    Unavailable(String),
}

impl TransformError {
    /// Whether waiting can fix it (only a worker that could not be started).
    pub fn is_transient(&self) -> bool {
        matches!(self, TransformError::Unavailable(_))
    }
}

struct Job {
    program: Arc<str>,
    payload: bytes::Bytes,
    /// Run ahead of its attempt: it may wait up to [`LINGER`] for others to share its batch.
    patient: bool,
    reply: oneshot::Sender<Result<Output, TransformError>>,
}

impl Job {
    /// A job and the receiver of its answer.
    fn new(program: Arc<str>, payload: bytes::Bytes, patient: bool) -> (Job, AheadRun) {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            program,
            payload,
            patient,
            reply,
        };
        (job, answer)
    }
}

/// The answer of a run (see [`TransformPool::start_ahead`]).
pub type AheadRun = oneshot::Receiver<Result<Output, TransformError>>;

/// Runs transforms: in the dispatcher when the program is proved cheap (`in_process.rs`), else
/// in worker processes. Cheap to share; workers start on first use.
pub struct TransformPool {
    jobs: mpsc::Sender<Job>,
    /// Ends a batch's wait for company: an attempt is waiting for a run ahead.
    hurry: Arc<Notify>,
    /// Programs proved cheap run here, without a worker (`in_process.rs`).
    in_process: InProcess,
    runs: RunCounters,
}

impl TransformPool {
    /// The pool and its worker tasks (no process is started until a transform runs).
    pub fn start(config: PoolConfig) -> Arc<Self> {
        let (jobs, queue) = mpsc::channel::<Job>(1024);
        let queue = Arc::new(Mutex::new(queue));
        let config = Arc::new(config);
        let hurry = Arc::new(Notify::new());
        for _ in 0..config.workers.max(1) {
            tokio::spawn(serve(config.clone(), queue.clone(), hurry.clone()));
        }
        let in_process = InProcess::new(config.max_output);
        Arc::new(TransformPool {
            jobs,
            hurry,
            in_process,
            runs: config.runs.clone(),
        })
    }

    /// An attempt waits for a run it asked for ahead: a batch waiting for company leaves now.
    pub fn hurry(&self) {
        self.hurry.notify_one();
    }

    /// Whether `program` runs in the dispatcher: `None` until its first run has been checked.
    pub fn runs_in_process(&self, program: &str) -> Option<bool> {
        self.in_process.runs_here(program)
    }

    /// Runs `program` on `payload`: here when its cost is bounded and small, else in a worker
    /// as soon as one is free.
    pub async fn run(
        &self,
        program: Arc<str>,
        payload: bytes::Bytes,
    ) -> Result<Output, TransformError> {
        if let Some(answer) = self.run_here(&program, &payload) {
            return answer;
        }
        self.runs.in_worker.inc();
        let (job, answer) = Job::new(program, payload, false);
        self.jobs
            .send(job)
            .await
            .map_err(|_| TransformError::Unavailable("the pool has stopped".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(TransformError::Unavailable("the worker stopped".into())))
    }

    /// Queues a run ahead of a delivery's attempt, and returns at once: the answer comes on the
    /// receiver. A `patient` run (its delivery waits behind its endpoint's attempts in flight
    /// anyway) may wait up to [`LINGER`] for other runs to go to the worker with it; dropping
    /// the receiver before its batch leaves cancels it. `None` when the queue is full or the
    /// pool has stopped (the attempt then runs the transform itself).
    pub fn start_ahead(
        &self,
        program: Arc<str>,
        payload: bytes::Bytes,
        patient: bool,
    ) -> Option<AheadRun> {
        if let Some(output) = self.run_here(&program, &payload) {
            let (reply, answer) = oneshot::channel();
            let _ = reply.send(output);
            return Some(answer);
        }
        let (job, answer) = Job::new(program, payload, patient);
        self.jobs.try_send(job).ok()?;
        self.runs.in_worker.inc();
        Some(answer)
    }

    /// The answer when `program` may run in the dispatcher for this payload, counted.
    fn run_here(
        &self,
        program: &Arc<str>,
        payload: &[u8],
    ) -> Option<Result<Output, TransformError>> {
        let answer = self.in_process.try_run(program, payload)?;
        self.runs.in_process.inc();
        Some(answer)
    }
}

/// Runs a worker takes at once when several wait: one pipe write and one wake-up for all of
/// them instead of a round trip each. Small, so the other slots get work too.
const BATCH: usize = 8;

/// How long a batch of runs ahead waits for more runs to join it, unless an attempt waits for
/// one of them ([`TransformPool::hurry`]). A run ahead has the time its delivery waits behind
/// the endpoint's attempts in flight (milliseconds when it is busy), and a full batch costs the
/// worker one wake-up instead of one for every run or two.
const LINGER: Duration = Duration::from_millis(1);

/// One worker slot: takes the jobs waiting in the shared queue (up to [`BATCH`]) and runs them
/// in its process, replacing the process when a run kills it or overstays.
async fn serve(
    config: Arc<PoolConfig>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    hurry: Arc<Notify>,
) {
    let mut worker: Option<Worker> = None;
    loop {
        let mut jobs = VecDeque::with_capacity(BATCH);
        {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            jobs.push_back(first);
            while jobs.len() < BATCH {
                match queue.try_recv() {
                    Ok(job) => jobs.push_back(job),
                    Err(_) => break,
                }
            }
            if may_linger(&jobs) {
                // The timer only for a batch that may wait: a full one, or one an attempt waits
                // for, leaves without reading the clock.
                let deadline = tokio::time::sleep(LINGER);
                tokio::pin!(deadline);
                while may_linger(&jobs) {
                    tokio::select! {
                        job = queue.recv() => match job {
                            Some(job) => jobs.push_back(job),
                            None => break,
                        },
                        _ = hurry.notified() => break,
                        _ = &mut deadline => break,
                    }
                }
            }
        }
        run_batch(&config, &mut worker, jobs).await;
    }
}

/// Whether a batch may wait for more runs: it has room, and every run in it was asked for
/// ahead of its attempt (an attempt waiting for its run goes at once).
fn may_linger(jobs: &VecDeque<Job>) -> bool {
    jobs.len() < BATCH && jobs.iter().all(|job| job.patient)
}

/// Runs `jobs` in order in the slot's worker. Each run gets the full deadline from the moment
/// the worker is free for it (the answer before it arrived). The run that overstays or dies
/// fails alone; the runs after it go to a fresh worker.
async fn run_batch(config: &PoolConfig, worker: &mut Option<Worker>, mut jobs: VecDeque<Job>) {
    // Runs ahead whose delivery went back to the store meanwhile: nobody waits for them.
    jobs.retain(|job| !job.reply.is_closed());
    while !jobs.is_empty() {
        // Taken out for the batch and put back only if it answered every run: a worker that
        // overstayed or died is ours to kill or bury.
        let mut process = match worker.take() {
            Some(process) => process,
            None => match Worker::spawn(config) {
                Ok(process) => process,
                Err(error) => {
                    warn!(%error, "starting a transform worker failed");
                    for job in jobs {
                        let _ = job
                            .reply
                            .send(Err(TransformError::Unavailable(error.to_string())));
                    }
                    return;
                }
            },
        };
        let mut frames = Vec::new();
        for job in &jobs {
            encode_request(&mut frames, &job.program, &job.payload, config.max_output);
        }
        let Worker {
            stdin,
            stdout,
            inbox,
            ..
        } = &mut process;
        // Written while the answers are read: a worker whose answers fill its pipe would
        // otherwise wait for us while we wait for it to read the rest of the requests.
        let write = async {
            let _ = stdin.write_all(&frames).await;
            let _ = stdin.flush().await;
        };
        let read = async {
            while !jobs.is_empty() {
                match tokio::time::timeout(config.timeout, read_response(stdout, inbox)).await {
                    Ok(Ok(response)) => {
                        if let Some(job) = jobs.pop_front() {
                            // The asker may have given up (cancelled at shutdown).
                            let _ = job.reply.send(answer_of(response));
                        }
                    }
                    Ok(Err(_)) => return Some(Failure::Crashed),
                    Err(_) => return Some(Failure::Timeout),
                }
            }
            None
        };
        let (_, failure) = tokio::join!(write, read);
        let Some(failure) = failure else {
            *worker = Some(process);
            return;
        };
        let Some(culprit) = jobs.pop_front() else {
            return;
        };
        let error = match failure {
            Failure::Timeout => {
                process.kill().await;
                TransformError::Timeout(config.timeout)
            }
            Failure::Crashed => TransformError::Crashed(process.exit_reason().await),
        };
        let _ = culprit.reply.send(Err(error));
    }
}

/// How a run ended without an answer.
#[derive(Clone, Copy)]
enum Failure {
    Timeout,
    Crashed,
}

fn answer_of(response: Response) -> Result<Output, TransformError> {
    match response {
        Response::Body(body) => Ok(Output::Body(body)),
        Response::Filtered => Ok(Output::Filtered),
        Response::RunError(message) => Err(TransformError::Run(message)),
        Response::CompileError(message) => Err(TransformError::Compile(message)),
    }
}

/// Room for one read of a worker's answers: the answers waiting come in one read.
const READ_SIZE: usize = 16 << 10;

/// Reads one answer: from what an earlier read left in `inbox`, or else from the pipe.
async fn read_response(stdout: &mut ChildStdout, inbox: &mut Inbox) -> std::io::Result<Response> {
    loop {
        if let Some((response, used)) = parse_response(inbox.pending())? {
            inbox.consume(used);
            return Ok(response);
        }
        let count = stdout.read(inbox.space(READ_SIZE)).await?;
        if count == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        inbox.filled(count);
    }
}

/// A running worker process and its pipes.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// What was read from `stdout` and not yet taken as an answer.
    inbox: Inbox,
}

impl Worker {
    fn spawn(config: &PoolConfig) -> std::io::Result<Self> {
        let mut child = Command::new(&config.binary)
            .arg("transform-worker")
            .arg("--memory-limit")
            .arg(config.memory_limit.to_string())
            .env_clear()
            // mimalloc reserves 1 GiB of address space at start by default; the worker's limit
            // is counted from what it maps at start, so that reserve would be memory on top of
            // `memory_limit`. Without it the allocator maps as it goes, within the limit.
            .env("MIMALLOC_ARENA_RESERVE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("the worker's pipes are missing"));
        };
        Ok(Worker {
            child,
            stdin,
            stdout,
            inbox: Inbox::default(),
        })
    }

    async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Why the process ended (it closed its pipe): a signal names a stack overflow or memory.
    async fn exit_reason(mut self) -> String {
        use std::os::unix::process::ExitStatusExt;
        let status = match tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await {
            Ok(Ok(status)) => status,
            _ => {
                self.kill().await;
                return "it stopped answering".into();
            }
        };
        match status.signal() {
            Some(libc::SIGSEGV) | Some(libc::SIGBUS) => "stack overflow: recursion too deep".into(),
            Some(libc::SIGABRT) => "aborted: stack overflow or memory limit reached".into(),
            Some(libc::SIGKILL) => "killed: out of memory".into(),
            Some(signal) => format!("ended by signal {signal}"),
            None => format!("exited with {status}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(patient: &[bool]) -> VecDeque<Job> {
        patient
            .iter()
            .map(|&patient| Job::new(Arc::from("."), bytes::Bytes::new(), patient).0)
            .collect()
    }

    #[test]
    fn a_batch_of_runs_ahead_waits_for_company_until_it_is_full() {
        assert!(may_linger(&jobs(&[true])));
        assert!(may_linger(&jobs(&[true; BATCH - 1])));
        assert!(!may_linger(&jobs(&[true; BATCH])));
    }

    #[test]
    fn a_run_an_attempt_waits_for_goes_at_once() {
        assert!(!may_linger(&jobs(&[false])));
        assert!(!may_linger(&jobs(&[true, true, false])));
    }
}
