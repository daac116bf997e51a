//! The SQLite store on a full disk: a tmpfs of 2 MiB fills up. Publishing then fails with a
//! clear error (no acknowledgement for anything not stored), every event acknowledged before is
//! still there after a restart, and publishing works again once space returns. Needs root (it
//! mounts the tmpfs); CI runs as root, and elsewhere the test says why it did not run.
use std::process::Command;

use webhook_operator::store::contract::{event, names};
use webhook_operator::store::sqlite::{SqliteConfig, SqliteStore};
use webhook_operator::store::{Store, StoreError};

fn mount(dir: &std::path::Path, options: &str) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_clearly_loses_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    if !mount(dir.path(), "size=2m") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must mount a tmpfs"
        );
        eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs this test)");
        return;
    }
    let config = SqliteConfig::new(dir.path().join("store.db"));
    let store = SqliteStore::open(config.clone()).await.unwrap();
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for i in 0..10_000 {
        let mut new = event(&format!("evt_{i:05}"), "user.created", i);
        new.data = format!(r#"{{"padding":"{}"}}"#, "x".repeat(4000)).into();
        match store.enqueue(new, names(&["a"])).await {
            Ok(_) => acknowledged.push(format!("evt_{i:05}")),
            Err(error) => {
                refusal = Some(error);
                break;
            }
        }
    }
    let refusal = refusal.expect("a 2 MiB disk fills up");
    assert!(
        matches!(refusal, StoreError::DiskFull(_)),
        "a full disk is named as such: {refusal:?}"
    );
    assert!(refusal.to_string().contains("full"), "{refusal}");
    assert!(!acknowledged.is_empty());
    drop(store);

    // Space returns: the same store opens, has every acknowledged event, and takes new ones.
    assert!(mount(dir.path(), "remount,size=64m"));
    let store = SqliteStore::open(config).await.unwrap();
    for id in &acknowledged {
        assert!(
            store.event_status(id).await.unwrap().is_some(),
            "{id} was acknowledged"
        );
    }
    store
        .enqueue(event("evt_after", "user.created", 1), names(&["a"]))
        .await
        .expect("publishing works again");
    drop(store);
    let _ = Command::new("umount").arg(dir.path()).status();
}
