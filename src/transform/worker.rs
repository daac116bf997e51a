//! `webhook-operator transform-worker`: the process that runs transforms for the dispatcher. One
//! request at a time from stdin, one answer each on stdout. It runs in its own process because
//! a jq program can recurse without end (a stack overflow aborts the process) or allocate without
//! bound; here that ends this process only, under an address-space limit, and the dispatcher
//! starts another. Its environment is emptied by the dispatcher, so `env` shows nothing.
use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Write};

use super::program::Program;
use super::protocol::{read_request, write_response, Response};

/// Compiled programs kept; past this many the cache starts over (programs are few and small).
const CACHED_PROGRAMS: usize = 256;

/// Serves requests until stdin closes. `memory_limit`: the address-space limit in bytes.
pub fn main(memory_limit: u64) -> io::Result<()> {
    end_with_parent()?;
    limit_memory(memory_limit)?;
    let mut input = BufReader::new(io::stdin().lock());
    let mut output = BufWriter::new(io::stdout().lock());
    let mut programs: HashMap<String, Result<Program, String>> = HashMap::new();
    while let Some(request) = read_request(&mut input)? {
        if programs.len() >= CACHED_PROGRAMS && !programs.contains_key(&request.program) {
            programs.clear();
        }
        let program = programs
            .entry(request.program)
            .or_insert_with_key(|code| Program::compile(code).map_err(|e| e.0));
        let response = match program {
            Err(message) => Response::CompileError(message.clone()),
            Ok(program) => match program.run(&request.payload, request.max_output) {
                Ok(super::Output::Body(body)) => Response::Body(body),
                Ok(super::Output::Filtered) => Response::Filtered,
                Err(error) => Response::RunError(error.to_string()),
            },
        };
        write_response(&mut output, &response)?;
        // Each answer goes out at once, even when more requests wait: the next program may loop,
        // and the dispatcher times each run from the answer before it.
        output.flush()?;
    }
    Ok(())
}

/// A worker busy in an endless loop reads no stdin, so it would not notice a dispatcher killed
/// with SIGKILL: ask the kernel to kill it with its parent.
fn end_with_parent() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets this process's parent-death signal.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid has no preconditions. The parent may have died before the prctl.
    if unsafe { libc::getppid() } == 1 {
        return Err(io::Error::other("the dispatcher is gone"));
    }
    Ok(())
}

/// Caps the address space (a program building an endless array fails to allocate and the process
/// aborts) and turns off core dumps.
fn limit_memory(bytes: u64) -> io::Result<()> {
    let set = |resource, value: u64| {
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: setrlimit reads the struct we pass and changes only this process's limits.
        if unsafe { libc::setrlimit(resource, &limit) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    set(libc::RLIMIT_CORE, 0)?;
    set(libc::RLIMIT_AS, bytes)
}
