//! The PostgreSQL server tests use: `WO_POSTGRES_URL` (scripts/test.sh starts a throwaway
//! cluster and sets it), or, when unset, the throwaway cluster `scripts/postgres.sh start` starts
//! (left running for the next test process; `scripts/postgres.sh stop` removes it). No silent
//! skip: without a server the tests that need one fail. The throwaway cluster also serves TLS with
//! a certificate from its own CA ([`server_ca`]; `WO_POSTGRES_CA` for another server).
use std::sync::OnceLock;

pub fn server_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Some(url) = env_value("WO_POSTGRES_URL") {
            return url;
        }
        let stdout = postgres_sh(
            "start",
            "WO_POSTGRES_URL is not set and `scripts/postgres.sh start` failed",
        );
        stdout
            .lines()
            .last()
            .filter(|line| line.starts_with("postgres"))
            .unwrap_or_else(|| panic!("scripts/postgres.sh printed no URL: {stdout:?}"))
            .to_owned()
    })
    .clone()
}

/// The PEM file of the CA that signed the test server's TLS certificate: `WO_POSTGRES_CA`, or
/// what `scripts/postgres.sh ca` prints (the throwaway cluster's CA; `start` creates it).
#[allow(dead_code)] // used by tests/store_postgres.rs, not by every test that includes this file
pub fn server_ca() -> String {
    static CA: OnceLock<String> = OnceLock::new();
    CA.get_or_init(|| {
        if let Some(ca) = env_value("WO_POSTGRES_CA") {
            return ca;
        }
        server_url(); // starts the throwaway cluster (with TLS) if needed
        postgres_sh(
            "ca",
            "`scripts/postgres.sh ca` failed: with WO_POSTGRES_URL pointing elsewhere, set \
             WO_POSTGRES_CA to the CA file of that server's TLS certificate",
        )
        .trim()
        .to_owned()
    })
    .clone()
}

/// The environment variable `var`, trimmed, unless unset or blank.
fn env_value(var: &str) -> Option<String> {
    let value = std::env::var(var).ok()?;
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// What `scripts/postgres.sh <subcommand>` prints on stdout; panics with `failure` if it fails.
fn postgres_sh(subcommand: &str, failure: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres.sh");
    let out = std::process::Command::new("bash")
        .args([script, subcommand])
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run scripts/postgres.sh {subcommand}: {e}"));
    assert!(out.status.success(), "{failure} ({})", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Drops a test schema on the test server. Runs on a thread and runtime of its own, so it can be
/// called from `Drop` inside a test's runtime.
pub fn drop_schema(schema: &str) {
    let (url, schema) = (server_url(), schema.to_owned());
    let cleanup = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cleanup runtime");
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect for cleanup");
            tokio::spawn(connection);
            // The test's runtime is blocked here: a connection of it still in a transaction
            // cannot finish it, so do not wait for its locks (the schema is then left behind
            // in the throwaway cluster, which is harmless).
            let dropped = client
                .batch_execute(&format!(
                    "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
                ))
                .await;
            if let Err(e) = dropped {
                eprintln!("test schema {schema} left behind: {e}");
            }
        });
    });
    let _ = cleanup.join();
}
