//! Per-endpoint transforms (`spec.transform.jq`): a jq program (the jaq implementation) maps the
//! payload to the request body, or drops the event. `program` is the pure compile-and-run;
//! `worker` is the process that runs programs, `protocol` its frames, and `pool` the
//! dispatcher's side that keeps workers and bounds every run in time, memory and output size.
pub mod bounds;
pub mod in_process;
pub mod pool;
pub mod program;
pub mod protocol;
pub mod worker;

pub use pool::{AheadRun, PoolConfig, RunCounters, TransformError, TransformPool};
pub use program::{check, CompileError, Output, Program, RunError, MAX_PROGRAM_BYTES};

/// The stack of a thread that parses a program: one of [`MAX_PROGRAM_BYTES`] may nest thousands
/// deep, and the parser (and the bound, `bounds/`) recurse on its nesting.
pub const CHECK_STACK: usize = 256 << 20;

/// Compiles `code` on a thread with a large stack, so a deeply nested program (bounded by
/// [`MAX_PROGRAM_BYTES`]) cannot overflow the caller's: for the controller, which only checks.
pub async fn check_isolated(code: String) -> Option<String> {
    let (done, result) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("transform-check".into())
        .stack_size(CHECK_STACK)
        .spawn(move || {
            let _ = done.send(check(&code));
        });
    if let Err(error) = spawned {
        return Some(format!("the program could not be checked: {error}"));
    }
    result
        .await
        .unwrap_or_else(|_| Some("the program could not be checked".into()))
}
