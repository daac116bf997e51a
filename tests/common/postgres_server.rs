//! The PostgreSQL server tests use: `WO_POSTGRES_URL` (scripts/test.sh starts a throwaway
//! cluster and sets it), or, when unset, the throwaway cluster `scripts/postgres.sh start` starts
//! (left running for the next test process; `scripts/postgres.sh stop` removes it). No silent
//! skip: without a server the tests that need one fail.
use std::sync::OnceLock;

pub fn server_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("WO_POSTGRES_URL") {
            if !url.trim().is_empty() {
                return url.trim().to_owned();
            }
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres.sh");
        let out = std::process::Command::new("bash")
            .args([script, "start"])
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run scripts/postgres.sh start");
        assert!(
            out.status.success(),
            "WO_POSTGRES_URL is not set and `scripts/postgres.sh start` failed ({})",
            out.status
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .last()
            .filter(|line| line.starts_with("postgres"))
            .unwrap_or_else(|| panic!("scripts/postgres.sh printed no URL: {stdout:?}"))
            .to_owned()
    })
    .clone()
}
