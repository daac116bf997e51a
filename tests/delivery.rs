//! Integration tests of the delivery engine (`src/delivery`): real HTTP servers on 127.0.0.1
//! started by the tests, signature test vectors from independent implementations, and the
//! seed's own Node receiver. Traffic goes to loopback only.
#[path = "delivery/egress.rs"]
mod egress;
#[path = "delivery/http2.rs"]
mod http2;
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

/// A test whose outside tool is missing: skipped with the reason on a developer's machine, but a
/// failure in CI (`CI` set, as `.ci/run` does), which installs every tool these tests need, so
/// that no check silently stops running there.
pub fn skip_unless_ci(reason: &str) {
    let in_ci = std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false");
    assert!(!in_ci, "{reason}: CI must install it (.ci/run)");
    println!("skipped: {reason}");
}

/// Runs `program args` with `stdin`, returning its stdout; `None` (after `skip_unless_ci`) if
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
            skip_unless_ci(&format!("{program} is not available ({err})"));
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
