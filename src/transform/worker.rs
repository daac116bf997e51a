//! `webhook-operator transform-worker`: the process that runs transforms for the dispatcher. One
//! request at a time from stdin, one answer each on stdout. It runs in its own process because
//! a jq program can recurse without end (a stack overflow aborts the process) or allocate without
//! bound; here that ends this process only, under an address-space limit, and the dispatcher
//! starts another. Its environment is emptied by the dispatcher, so `env` shows nothing.
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;

use super::program::Program;
use super::protocol::{encode_response, parse_request, Inbox, Request, Response};

/// Compiled programs kept; past this many the cache starts over (programs are few and small).
const CACHED_PROGRAMS: usize = 256;

/// Room for one read of stdin: the requests the dispatcher wrote at once come in one read.
const READ_SIZE: usize = 64 << 10;

/// Serves requests until stdin closes. `memory_limit`: the address-space limit in bytes.
pub fn main(memory_limit: u64) -> io::Result<()> {
    end_with_parent()?;
    limit_memory(memory_limit)?;
    // The pipes themselves, without std's buffers: a request is parsed where it was read, and an
    // answer leaves in one write.
    let mut input = File::from(io::stdin().as_fd().try_clone_to_owned()?);
    let mut output = File::from(io::stdout().as_fd().try_clone_to_owned()?);
    let mut inbox = Inbox::default();
    let mut answer = Vec::new();
    let mut programs: HashMap<String, Result<Program, String>> = HashMap::new();
    loop {
        let Some((request, used)) = parse_request(inbox.pending())? else {
            let count = match input.read(inbox.space(READ_SIZE)) {
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            if count == 0 {
                // The dispatcher closed the pipe: a clean end between requests only.
                if inbox.pending().is_empty() {
                    return Ok(());
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            inbox.filled(count);
            continue;
        };
        let response = respond(&mut programs, &request);
        inbox.consume(used);
        answer.clear();
        encode_response(&mut answer, &response);
        // Each answer goes out at once, even when more requests wait: the next program may loop,
        // and the dispatcher times each run from the answer before it.
        output.write_all(&answer)?;
    }
}

/// Runs one request with its program, compiled on first use and kept.
fn respond(programs: &mut HashMap<String, Result<Program, String>>, request: &Request) -> Response {
    let program = if let Some(program) = programs.get(request.program) {
        program
    } else {
        if programs.len() >= CACHED_PROGRAMS {
            programs.clear();
        }
        let compiled = Program::compile(request.program).map_err(|e| e.0);
        programs
            .entry(request.program.to_owned())
            .or_insert(compiled)
    };
    match program {
        Err(message) => Response::CompileError(message.clone()),
        Ok(program) => match program.run(request.payload, request.max_output) {
            Ok(super::Output::Body(body)) => Response::Body(body),
            Ok(super::Output::Filtered) => Response::Filtered,
            Err(error) => Response::RunError(error.to_string()),
        },
    }
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

/// Caps the address space at what the process has mapped now plus `bytes` (a program building an
/// endless array fails to allocate and the process aborts) and turns off core dumps. Counted from
/// what is mapped now (the binary, the allocator's start): a cap below that left no room to grow
/// even the stack, and a moderately recursive program aborted its worker.
fn limit_memory(bytes: u64) -> io::Result<()> {
    let mapped = mapped_bytes()?;
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
    set(libc::RLIMIT_AS, mapped.saturating_add(bytes))
}

/// The process's address space now, in bytes (the first field of `/proc/self/statm`, in pages).
fn mapped_bytes() -> io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .next()
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| io::Error::other(format!("unreadable /proc/self/statm: {statm:?}")))?;
    // SAFETY: sysconf has no preconditions.
    let page_size = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .map_err(|_| io::Error::other("the page size is unknown"))?;
    Ok(pages.saturating_mul(page_size))
}
