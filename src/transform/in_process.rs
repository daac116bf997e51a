//! Runs in the dispatcher itself the programs whose cost `bounds` proves small: no worker
//! round trip (two process wake-ups each way) for straight-line templates. Every other program,
//! and a bounded one on a payload too large for its bound to stay cheap, goes to a worker.
//!
//! A program is checked once, on a thread with a large stack (parsing a deeply nested program
//! recurses), while its first runs go to the workers; the verdict is kept by program text.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::debug;

use super::bounds::{self, Cost};
use super::pool::TransformError;
use super::program::{Output, Program};
use super::CHECK_STACK;

/// Programs whose verdict is kept; past that the verdicts start over (endpoints' programs
/// change rarely, so this only bounds what old programs cost).
const KEPT_VERDICTS: usize = 1024;

enum Verdict {
    /// Being checked: meanwhile its runs go to a worker.
    Checking,
    /// No bound (recursion, iteration, a builtin not bounded): always a worker.
    Worker,
    /// Bounded: runs here when the payload keeps it within budget.
    Here(Arc<Bounded>),
}

struct Bounded {
    program: Program,
    cost: Cost,
}

/// The verdicts, shared with the threads that check programs.
pub struct InProcess {
    verdicts: Arc<Mutex<HashMap<Arc<str>, Verdict>>>,
    max_output: usize,
}

impl InProcess {
    pub fn new(max_output: usize) -> Self {
        InProcess {
            verdicts: Arc::default(),
            max_output,
        }
    }

    /// The answer of `program` on `payload` when it may run here; `None` sends it to a worker.
    /// A program seen for the first time is checked in the background and goes to a worker.
    pub fn try_run(
        &self,
        program: &Arc<str>,
        payload: &[u8],
    ) -> Option<Result<Output, TransformError>> {
        let bounded = {
            // A poisoned lock (a panic elsewhere while holding it) leaves every run to workers.
            let mut verdicts = self.verdicts.lock().ok()?;
            match verdicts.get(program) {
                Some(Verdict::Here(bounded)) => bounded.clone(),
                Some(Verdict::Checking | Verdict::Worker) => return None,
                None => {
                    if verdicts.len() >= KEPT_VERDICTS {
                        verdicts.clear();
                    }
                    verdicts.insert(program.clone(), Verdict::Checking);
                    drop(verdicts);
                    self.check(program.clone());
                    return None;
                }
            }
        };
        if !bounded.cost.fits_in_process(payload) {
            return None;
        }
        Some(
            bounded
                .program
                .run(payload, self.max_output)
                .map_err(|error| TransformError::Run(error.to_string())),
        )
    }

    /// Whether `program` has been checked and runs here (for tests and the docs' examples).
    pub fn runs_here(&self, program: &str) -> Option<bool> {
        let verdicts = self.verdicts.lock().ok()?;
        match verdicts.get(program)? {
            Verdict::Checking => None,
            Verdict::Worker => Some(false),
            Verdict::Here(_) => Some(true),
        }
    }

    fn check(&self, program: Arc<str>) {
        let verdicts = self.verdicts.clone();
        let checked = program.clone();
        let spawned = std::thread::Builder::new()
            .name("transform-bound".into())
            .stack_size(CHECK_STACK)
            .spawn(move || {
                let verdict = verdict_of(&checked);
                if let Ok(mut verdicts) = verdicts.lock() {
                    verdicts.insert(checked, verdict);
                }
            });
        if let Err(error) = spawned {
            debug!(%error, "checking a transform's bound failed: it runs in a worker");
            if let Ok(mut verdicts) = self.verdicts.lock() {
                verdicts.insert(program, Verdict::Worker);
            }
        }
    }
}

fn verdict_of(code: &str) -> Verdict {
    match bounds::cost(code) {
        // A program that does not compile gets its error from a worker, as always.
        Ok(cost) => match Program::compile(code) {
            Ok(program) => {
                debug!(?cost, "transform runs in the dispatcher");
                Verdict::Here(Arc::new(Bounded { program, cost }))
            }
            Err(_) => Verdict::Worker,
        },
        Err(why) => {
            debug!(reason = %why, "transform runs in a worker");
            Verdict::Worker
        }
    }
}
