//! The dispatcher's side of transforms: a few worker processes (`worker.rs`), started when the
//! first transform runs, each serving one request at a time from a shared queue. A run that
//! passes its deadline kills its worker, and a worker that dies (stack overflow, memory limit)
//! is replaced; either way only that run fails, and the other workers keep serving, so a hostile
//! program on one endpoint costs the others at most one worker for one deadline per event.
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot, Mutex};
use tracing::warn;

use super::protocol::{decode_response, encode_request, part_length, Response};
use super::Output;

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
    /// The address-space limit of each worker process.
    pub memory_limit: u64,
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
    reply: oneshot::Sender<Result<Output, TransformError>>,
}

/// Runs transforms in worker processes. Cheap to share; workers start on first use.
pub struct TransformPool {
    jobs: mpsc::Sender<Job>,
}

impl TransformPool {
    /// The pool and its worker tasks (no process is started until a transform runs).
    pub fn start(config: PoolConfig) -> Arc<Self> {
        let (jobs, queue) = mpsc::channel::<Job>(1024);
        let queue = Arc::new(Mutex::new(queue));
        let config = Arc::new(config);
        for _ in 0..config.workers.max(1) {
            tokio::spawn(serve(config.clone(), queue.clone()));
        }
        Arc::new(TransformPool { jobs })
    }

    /// Runs `program` on `payload` in a worker.
    pub async fn run(
        &self,
        program: Arc<str>,
        payload: bytes::Bytes,
    ) -> Result<Output, TransformError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            program,
            payload,
            reply,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| TransformError::Unavailable("the pool has stopped".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(TransformError::Unavailable("the worker stopped".into())))
    }
}

/// One worker slot: takes jobs from the shared queue and runs them in its process, replacing
/// the process when a run kills it or overstays.
async fn serve(config: Arc<PoolConfig>, queue: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut worker: Option<Worker> = None;
    loop {
        let job = { queue.lock().await.recv().await };
        let Some(job) = job else { return };
        let process = match worker.as_mut() {
            Some(process) => process,
            None => match Worker::spawn(&config) {
                Ok(process) => worker.insert(process),
                Err(error) => {
                    warn!(%error, "starting a transform worker failed");
                    let _ = job
                        .reply
                        .send(Err(TransformError::Unavailable(error.to_string())));
                    continue;
                }
            },
        };
        let frame = encode_request(&job.program, &job.payload, config.max_output);
        let result = match tokio::time::timeout(config.timeout, process.call(&frame)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(match worker.take() {
                Some(dead) => TransformError::Crashed(dead.exit_reason().await),
                None => TransformError::Crashed("unknown".into()),
            }),
            Err(_) => {
                if let Some(mut stuck) = worker.take() {
                    stuck.kill().await;
                }
                Err(TransformError::Timeout(config.timeout))
            }
        };
        let answer = result.and_then(|response| match response {
            Response::Body(body) => Ok(Output::Body(body)),
            Response::Filtered => Ok(Output::Filtered),
            Response::RunError(message) => Err(TransformError::Run(message)),
            Response::CompileError(message) => Err(TransformError::Compile(message)),
        });
        // The asker may have given up (its attempt was cancelled at shutdown).
        let _ = job.reply.send(answer);
    }
}

/// A running worker process and its pipes.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Worker {
    fn spawn(config: &PoolConfig) -> std::io::Result<Self> {
        let mut child = Command::new(&config.binary)
            .arg("transform-worker")
            .arg("--memory-limit")
            .arg(config.memory_limit.to_string())
            .env_clear()
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
        })
    }

    /// Sends one request and reads its answer.
    async fn call(&mut self, frame: &[u8]) -> std::io::Result<Response> {
        self.stdin.write_all(frame).await?;
        self.stdin.flush().await?;
        let tag = self.stdout.read_u8().await?;
        let mut header = [0u8; 4];
        self.stdout.read_exact(&mut header).await?;
        let mut bytes = vec![0u8; part_length(header)?];
        self.stdout.read_exact(&mut bytes).await?;
        decode_response(tag, bytes)
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
