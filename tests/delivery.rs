//! Integration tests of the delivery engine (`src/delivery`): real HTTP servers on 127.0.0.1
//! started by the tests, signature test vectors from independent implementations, and the
//! seed's own Node receiver. Traffic goes to loopback only.
#[path = "delivery/egress.rs"]
mod egress;
#[path = "delivery/libraries.rs"]
mod libraries;
#[path = "delivery/node.rs"]
mod node;
#[path = "delivery/scenarios.rs"]
mod scenarios;
#[path = "delivery/server.rs"]
mod server;
#[path = "delivery/support.rs"]
mod support;
#[path = "delivery/vectors.rs"]
mod vectors;

/// Runs `program args` with `stdin`, returning its stdout; `None` (with a printed reason) if
/// the program is not installed.
pub fn run_with_stdin(program: &str, args: &[&str], stdin: &[u8]) -> Option<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            println!("skipped: {program} is not available ({err})");
            return None;
        }
    };
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).unwrap())
}
