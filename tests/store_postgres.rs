//! The store contract suite against a real PostgreSQL, plus PostgreSQL-specific checks (group
//! commit, schema versioning, two stores sharing one database as two replicas would).
//!
//! The server: `WO_POSTGRES_URL` (scripts/test.sh starts a throwaway cluster and sets it), or,
//! when unset, the throwaway cluster `scripts/postgres.sh start` starts (and leaves running for
//! the next test process; `scripts/postgres.sh stop` removes it). Each test gets a fresh schema,
//! dropped at its end. There is no silent skip: without a server every test fails.
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use webhook_operator::store::contract::{
    self, at, claim_all, endpoint, event, names, result, CommitCounter, Harness,
};
use webhook_operator::store::postgres::{PostgresConfig, PostgresStore};
use webhook_operator::store::{
    ClaimScope, EnqueueRequest, NextStep, Result, ResumeAction, Store, StoreError,
};

#[path = "common/postgres_server.rs"]
mod postgres_server;
use postgres_server::{server_ca, server_url};

/// The server's URL, found (or started) once per test process.
/// A fresh schema on the test server, dropped when the harness is.
struct PostgresHarness {
    schema: String,
}

impl PostgresHarness {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        Self {
            schema: format!(
                "wo_test_{}_{}_{nanos}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    fn config(&self) -> PostgresConfig {
        self.config_for(server_url())
    }

    fn config_for(&self, url: String) -> PostgresConfig {
        PostgresConfig {
            schema: Some(self.schema.clone()),
            pool_size: 4,
            ..PostgresConfig::new(url)
        }
    }

    /// The test server's URL with `params` (`key=value&…`) added.
    fn config_with(&self, params: &str) -> PostgresConfig {
        let url = server_url();
        let separator = if url.contains('?') { '&' } else { '?' };
        self.config_for(format!("{url}{separator}{params}"))
    }
}

impl Drop for PostgresHarness {
    fn drop(&mut self) {
        postgres_server::drop_schema(&self.schema);
    }
}

#[async_trait]
impl Harness for PostgresHarness {
    async fn open(&self) -> Result<Arc<dyn Store>> {
        Ok(Arc::new(PostgresStore::open(self.config()).await?))
    }

    async fn open_with_tiny_queue(&self, capacity: usize) -> Result<Arc<dyn Store>> {
        let config = PostgresConfig {
            queue_capacity: capacity,
            max_batch: 1,
            ..self.config()
        };
        Ok(Arc::new(PostgresStore::open(config).await?))
    }

    fn idempotency_window(&self) -> Duration {
        self.config().idempotency_window
    }
}

webhook_operator::store_contract_tests!(PostgresHarness::new());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_share_commits() -> Result<()> {
    let harness = PostgresHarness::new();
    let counter = CommitCounter::default();
    let config = PostgresConfig {
        on_commit: Some(counter.observer()),
        ..harness.config()
    };
    let store = Arc::new(PostgresStore::open(config).await?);
    contract::concurrent_enqueues_share_commits(store, &counter).await
}

#[tokio::test]
async fn refuses_a_schema_from_a_newer_binary() -> Result<()> {
    let harness = PostgresHarness::new();
    drop(harness.open().await?);
    let (client, connection) = tokio_postgres::connect(&server_url(), tokio_postgres::NoTls)
        .await
        .map_err(StoreError::backend("connect"))?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "UPDATE {}.schema_version SET version = 999",
            harness.schema
        ))
        .await
        .map_err(StoreError::backend("bump version"))?;
    assert!(matches!(harness.open().await, Err(StoreError::Schema(_))));
    Ok(())
}

/// A schema from before the `filtered` counter (version 2) is migrated: existing endpoint
/// totals are kept, with a filtered total of 0, and a filtered attempt counts from there.
#[tokio::test]
async fn a_version_2_schema_gains_the_filtered_total() -> Result<()> {
    let harness = PostgresHarness::new();
    drop(harness.open().await?);
    let (client, connection) = tokio_postgres::connect(&server_url(), tokio_postgres::NoTls)
        .await
        .map_err(StoreError::backend("connect"))?;
    tokio::spawn(connection);
    let schema = &harness.schema;
    client
        .batch_execute(&format!(
            "ALTER TABLE {schema}.endpoint_counters DROP COLUMN filtered; \
             DROP TABLE {schema}.security_events; \
             DROP INDEX {schema}.events_namespace_created; \
             DROP INDEX {schema}.attempts_namespace_at; \
             ALTER TABLE {schema}.events DROP COLUMN traceparent; \
             DROP TABLE {schema}.attempt_minutes; \
             UPDATE {schema}.schema_version SET version = 2; \
             INSERT INTO {schema}.endpoint_counters (namespace, endpoint, delivered) \
             VALUES ('ns', 'a', 7)"
        ))
        .await
        .map_err(StoreError::backend("downgrade"))?;
    let store = harness.open().await?;
    let stats = store.endpoint_stats(&endpoint("a"), at(100)).await?;
    assert_eq!((stats.delivered_total, stats.filtered_total), (7, 0));
    store
        .enqueue(event("evt_1", "user.created", 0), names(&["a"]))
        .await?;
    let claimed = store.claim_due(claim_all("w", 0)).await?;
    store
        .record_attempt(contract::filtered(claimed[0].delivery.id, "w", 1, 1))
        .await?;
    let stats = store.endpoint_stats(&endpoint("a"), at(100)).await?;
    assert_eq!((stats.delivered_total, stats.filtered_total), (7, 1));
    Ok(())
}

#[tokio::test]
async fn refuses_a_bad_schema_name_and_url() {
    let config = PostgresConfig {
        schema: Some("x; DROP TABLE events".into()),
        ..PostgresConfig::new(server_url())
    };
    assert!(matches!(
        PostgresStore::open(config).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(PostgresStore::open(PostgresConfig::new("not a url ://"))
        .await
        .is_err());
}

/// Two stores on one database, as two replicas: claiming concurrently, every delivery is claimed
/// exactly once (`FOR UPDATE SKIP LOCKED`), and partition scopes split the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_claim_the_same_delivery() -> Result<()> {
    let harness = PostgresHarness::new();
    let (one, two) = (harness.open().await?, harness.open().await?);
    let endpoints = ["a", "b", "c", "d", "e", "f", "g", "h"];
    for i in 0..100 {
        one.enqueue(
            event(&format!("evt_{i}"), "user.created", 0),
            names(&endpoints),
        )
        .await?;
    }
    let claimer = |store: Arc<dyn Store>, owner: &'static str| async move {
        let mut got = Vec::new();
        loop {
            let mut request = claim_all(owner, 1);
            request.limit = 7;
            request.per_endpoint_limit = if owner == "r1" { Some(3) } else { None };
            let claimed = store.claim_due(request).await?;
            if claimed.is_empty() {
                return Ok::<_, StoreError>(got);
            }
            got.extend(claimed.into_iter().map(|c| c.delivery.id));
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(claimer(one.clone(), "r1")),
        tokio::spawn(claimer(two.clone(), "r2"))
    );
    let (a, b) = (
        a.map_err(StoreError::backend("join"))??,
        b.map_err(StoreError::backend("join"))??,
    );
    let all: HashSet<_> = a.iter().chain(&b).collect();
    assert_eq!(a.len() + b.len(), 800, "every delivery claimed");
    assert_eq!(all.len(), 800, "no delivery claimed twice");
    assert_eq!(one.queue_counts().await?.in_flight, 800);

    // After the leases expire, each replica takes over only its own partitions.
    let mut mine = claim_all("r1", 1000);
    mine.scope = ClaimScope::Partitions {
        count: 2,
        owned: vec![0],
    };
    let taken = one.claim_due(mine).await?;
    assert!(taken
        .iter()
        .all(|c| c.delivery.endpoint.partition_hash().is_multiple_of(2)));
    let expected = endpoints
        .iter()
        .filter(|n| endpoint(n).partition_hash().is_multiple_of(2))
        .count();
    assert_eq!(taken.len(), expected * 100);
    Ok(())
}

/// The same event enqueued through two stores at once is stored once (advisory locks on its
/// identity): one enqueue stores it, the other reports the duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_from_two_replicas_is_stored_once() -> Result<()> {
    let harness = PostgresHarness::new();
    let (one, two) = (harness.open().await?, harness.open().await?);
    for i in 0..50 {
        let mut evt = event(&format!("evt_{i}"), "user.created", 0);
        evt.idempotency_key = Some(format!("key-{i}"));
        let mut other = evt.clone();
        other.event_id = format!("evt_other_{i}");
        let (x, y) = tokio::join!(
            one.enqueue(evt, names(&["a"])),
            two.enqueue(other, names(&["a"]))
        );
        let (x, y) = (x?, y?);
        assert!(
            x.duplicate != y.duplicate,
            "exactly one of two racing enqueues of key-{i} stores it"
        );
        assert_eq!(x.event_id, y.event_id);
    }
    assert_eq!(one.pending_count().await?, 50);
    Ok(())
}

/// TLS: the throwaway cluster serves a certificate for 127.0.0.1 signed by its own CA
/// (`scripts/postgres.sh ca`). `require` and the verify modes with that CA as `sslrootcert` give
/// an encrypted session, in a URL and in a key=value string.
#[tokio::test]
async fn tls_with_the_servers_ca_is_encrypted() -> Result<()> {
    let ca = server_ca();
    for mode in ["require", "verify-ca", "verify-full", "prefer"] {
        let harness = PostgresHarness::new();
        let store =
            PostgresStore::open(harness.config_with(&format!("sslmode={mode}&sslrootcert={ca}")))
                .await?;
        assert!(store.connection_encrypted().await?, "sslmode={mode}");
        drop(store);
    }

    let server: tokio_postgres::Config = server_url()
        .parse()
        .map_err(StoreError::backend("parse the server URL"))?;
    let host = match &server.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        other => panic!("the test server is not on TCP: {other:?}"),
    };
    // A key=value string with `host_params` and the server's port, user and database.
    let key_value = |host_params: &str| {
        format!(
            "{host_params} port={} user={} dbname={} sslmode=require sslrootcert='{}'",
            server.get_ports().first().copied().unwrap_or(5432),
            server.get_user().unwrap_or("postgres"),
            server.get_dbname().unwrap_or("postgres"),
            ca.replace('\\', "\\\\").replace('\'', "\\'"),
        )
    };
    let harness = PostgresHarness::new();
    let store = PostgresStore::open(harness.config_for(key_value(&format!("host={host}")))).await?;
    assert!(store.connection_encrypted().await?);
    drop(store);

    // The host name is checked: the throwaway cluster's certificate names 127.0.0.1 and
    // localhost. `hostaddr` keeps the connection on the test server while `host` is the name
    // verified.
    for (name, ok) in [("localhost", true), ("db.wrong-name.invalid", false)] {
        let key_value = key_value(&format!("host={name} hostaddr=127.0.0.1"));
        match PostgresStore::open(harness.config_for(key_value)).await {
            Ok(store) => {
                assert!(
                    ok,
                    "{name}: connected although the certificate does not name it"
                );
                assert!(store.connection_encrypted().await?);
            }
            Err(err) => {
                let err = err.to_string();
                assert!(!ok, "{name}: {err}");
                assert!(err.contains("certificate could not be verified"), "{err}");
                assert!(err.contains("not valid for name"), "{err}");
            }
        }
    }
    Ok(())
}

/// A CA that did not sign the server's certificate: `require` refuses the server, saying the
/// certificate could not be verified and against which roots; the built-in public roots do not
/// know the throwaway CA either.
#[tokio::test]
async fn tls_with_another_ca_fails_verification() -> Result<()> {
    let dir = tempfile::tempdir().map_err(StoreError::backend("tempdir"))?;
    let other_ca = dir.path().join("other-ca.crt");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=another throwaway CA",
            "-keyout",
        ])
        .arg(dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(StoreError::backend("run openssl"))?;
    assert!(status.success(), "openssl req failed: {status}");
    let other_ca = other_ca.display().to_string();

    let harness = PostgresHarness::new();
    for (params, roots) in [
        (
            format!("sslmode=require&sslrootcert={other_ca}"),
            other_ca.as_str(),
        ),
        (
            "sslmode=verify-full".to_owned(),
            "built into the dispatcher",
        ),
    ] {
        let err = match PostgresStore::open(harness.config_with(&params)).await {
            Ok(_) => panic!("{params}: connected with an unverifiable certificate"),
            Err(err) => err.to_string(),
        };
        assert!(
            err.contains("certificate could not be verified"),
            "{params}: {err}"
        );
        assert!(err.contains(roots), "{params}: {err}");
        assert!(err.contains("sslrootcert=<PEM file>"), "{params}: {err}");
    }
    Ok(())
}

/// An sslrootcert that cannot be read fails before connecting, naming the file.
#[tokio::test]
async fn tls_with_an_unreadable_ca_file_names_it() {
    let harness = PostgresHarness::new();
    let path = "/nonexistent/webhook-operator-test/ca.crt";
    let err = match PostgresStore::open(
        harness.config_with(&format!("sslmode=require&sslrootcert={path}")),
    )
    .await
    {
        Ok(_) => panic!("opened with a missing CA file"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains(path), "{err}");
    assert!(err.contains("cannot read the CA file"), "{err}");
}

/// `disable` connects without TLS; `prefer` (the default) without a CA that verifies the server
/// falls back to a plain connection, as libpq's `prefer` still connects.
#[tokio::test]
async fn tls_disabled_or_unverifiable_prefer_is_plain() -> Result<()> {
    for params in [
        "sslmode=disable",
        "sslmode=prefer",
        "application_name=wo-test",
    ] {
        let harness = PostgresHarness::new();
        let store = PostgresStore::open(harness.config_with(params)).await?;
        assert!(!store.connection_encrypted().await?, "{params}");
        drop(store);
    }
    Ok(())
}

/// A partition-scoped claim with a per-endpoint limit (the dispatcher's claim) takes only the
/// owned partitions' deliveries, however many pending deliveries other partitions hold.
#[tokio::test]
async fn per_endpoint_claims_take_only_owned_partitions() -> Result<()> {
    let harness = PostgresHarness::new();
    let store = harness.open().await?;
    let endpoints = ["a", "b", "c", "d", "e", "f", "g", "h"];
    for i in 0..20 {
        store
            .enqueue(
                event(&format!("evt_{i}"), "user.created", 0),
                names(&endpoints),
            )
            .await?;
    }
    let mut request = claim_all("r1", 1);
    request.limit = 1000;
    request.per_endpoint_limit = Some(5);
    request.scope = ClaimScope::Partitions {
        count: 2,
        owned: vec![1],
    };
    let taken = store.claim_due(request).await?;
    let owned = endpoints
        .iter()
        .filter(|n| endpoint(n).partition_hash() % 2 == 1)
        .count();
    assert!(owned > 0 && owned < endpoints.len(), "both partitions used");
    assert_eq!(taken.len(), owned * 5, "5 per owned endpoint");
    assert!(taken
        .iter()
        .all(|c| c.delivery.endpoint.partition_hash() % 2 == 1));
    Ok(())
}

/// An event to `endpoint` in `lane`.
fn laned(id: &str, endpoint: &str, lane: &str) -> EnqueueRequest {
    EnqueueRequest {
        event: event(id, "user.updated", 0),
        endpoints: names(&[endpoint]),
        lanes: [(endpoint.to_owned(), lane.to_owned())]
            .into_iter()
            .collect(),
        claim: None,
    }
}

/// Two replicas enqueue into three lanes of one endpoint while one of them finishes the heads
/// as fast as it can: no lane ever has two heads, and nothing is left Queued (an enqueue racing
/// the finish of its lane's head is promoted by it: lane advisory locks).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lanes_survive_enqueues_racing_finishes() -> Result<()> {
    let harness = PostgresHarness::new();
    let (one, two) = (harness.open().await?, harness.open().await?);
    let n = 300;
    let enqueuer = |store: Arc<dyn Store>, prefix: &'static str| async move {
        for i in 0..n {
            let lane = format!("l{}", i % 3);
            store
                .enqueue_batch(vec![laned(&format!("{prefix}_{i}"), "s", &lane)])
                .await?;
        }
        Ok::<_, StoreError>(())
    };
    let a = tokio::spawn(enqueuer(one.clone(), "evt_a"));
    let b = tokio::spawn(enqueuer(two.clone(), "evt_b"));
    let (mut delivered, mut idle) = (0, 0);
    while idle < 20 {
        let claimed = one.claim_due(claim_all("w", 1000)).await?;
        let lanes: HashSet<_> = claimed.iter().map(|c| c.delivery.lane.clone()).collect();
        assert_eq!(lanes.len(), claimed.len(), "two heads in one lane");
        for c in &claimed {
            one.record_attempt(result(
                c.delivery.id,
                "w",
                1,
                1000,
                Some(200),
                1,
                NextStep::Delivered,
            ))
            .await?;
        }
        delivered += claimed.len();
        if claimed.is_empty() && a.is_finished() && b.is_finished() {
            idle += 1;
        } else if !claimed.is_empty() {
            idle = 0;
        }
        tokio::task::yield_now().await;
    }
    a.await.map_err(StoreError::backend("join"))??;
    b.await.map_err(StoreError::backend("join"))??;
    assert_eq!(one.queue_counts().await?.queued, 0, "a lane lost its head");
    assert_eq!(delivered, 2 * n);
    Ok(())
}

/// A resume on one replica races, on the other, the finish of another lane's head and an
/// enqueue into a new lane: afterwards both lanes have their head due (nothing stuck Queued
/// behind a pause that is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resume_racing_finishes_and_enqueues_loses_no_lane() -> Result<()> {
    let harness = PostgresHarness::new();
    let (one, two) = (harness.open().await?, harness.open().await?);
    for i in 0..100 {
        let ep = format!("p{i}");
        for (id, lane) in [("x1", "x"), ("y1", "y"), ("y2", "y")] {
            one.enqueue_batch(vec![laned(&format!("e{i}_{id}"), &ep, lane)])
                .await?;
        }
        let claimed = one.claim_due(claim_all("w", 1000)).await?;
        let head = |id: &str| {
            claimed
                .iter()
                .find(|c| c.event.event_id == format!("e{i}_{id}"))
                .map(|c| c.delivery.id)
                .expect("head claimed")
        };
        let mut pausing = result(
            head("x1"),
            "w",
            1,
            1000,
            Some(400),
            1,
            NextStep::DeadLetter {
                reason: "HTTP 400".into(),
            },
        );
        pausing.pause_on_dead_letter = true;
        one.record_attempt(pausing).await?;
        let (finished, resumed, enqueued) = tokio::join!(
            one.record_attempt(result(
                head("y1"),
                "w",
                1,
                1000,
                Some(200),
                1,
                NextStep::Delivered
            )),
            two.resume_endpoint(
                endpoint(&ep),
                format!("e{i}_x1"),
                ResumeAction::Skip,
                at(1000)
            ),
            two.enqueue_batch(vec![laned(&format!("e{i}_z1"), &ep, "z")]),
        );
        finished?;
        resumed?;
        enqueued?;
        let mut due: Vec<_> = one
            .claim_due(claim_all("w", 1000))
            .await?
            .into_iter()
            .map(|c| c.event.event_id)
            .collect();
        due.sort();
        assert_eq!(
            due,
            [format!("e{i}_y2"), format!("e{i}_z1")],
            "iteration {i}"
        );
    }
    Ok(())
}

/// A batch of attempt results runs first with no savepoint; one that PostgreSQL refuses (a NUL
/// character in text) fails that transaction, and the batch is recorded again with a savepoint
/// per result: the others are recorded, and only the refused one is answered with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_result_does_not_undo_its_batch() -> Result<()> {
    let harness = PostgresHarness::new();
    let store = harness.open().await?;
    store
        .enqueue(event("evt_1", "user.created", 0), names(&["a", "b", "c"]))
        .await?;
    let claimed = store.claim_due(claim_all("w", 1)).await?;
    assert_eq!(claimed.len(), 3);
    let delivered = |i: usize| {
        result(
            claimed[i].delivery.id,
            "w",
            1,
            2,
            Some(200),
            5,
            NextStep::Delivered,
        )
    };
    let mut refused = delivered(1);
    refused.next = NextStep::Retry { at: at(60) };
    refused.record.error = Some("bad\0byte".into());
    let outcomes = store
        .record_attempts(vec![delivered(0), refused, delivered(2)])
        .await?;
    assert!(matches!(
        outcomes[0],
        Ok(webhook_operator::store::RecordOutcome::Applied)
    ));
    assert!(
        outcomes[1].is_err(),
        "the NUL byte is refused: {outcomes:?}"
    );
    assert!(matches!(
        outcomes[2],
        Ok(webhook_operator::store::RecordOutcome::Applied)
    ));
    let stats = store.endpoint_stats(&endpoint("a"), at(10)).await?;
    assert_eq!(stats.delivered_total, 1);
    let refused_stats = store.endpoint_stats(&endpoint("b"), at(10)).await?;
    assert_eq!(
        (
            refused_stats.failed_attempts_total,
            refused_stats.in_flight_count
        ),
        (0, 1)
    );
    Ok(())
}

/// Enqueues that share a group commit go to PostgreSQL together (pipelined). One that PostgreSQL
/// refuses (a NUL character in a text column) fails alone: the others are stored, including a
/// duplicate of an event of the same commit, which still sees the event it repeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_enqueue_fails_alone_in_a_pipelined_commit() -> Result<()> {
    let harness = PostgresHarness::new();
    let store = harness.open().await?;
    let mut refused = event("evt_bad", "user.created", 0);
    refused.trace_parent = Some("bad\0trace".into());
    let mut attempts = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        attempts.push(tokio::spawn(async move {
            store
                .enqueue(event(&format!("evt_{i}"), "user.created", 0), names(&["a"]))
                .await
        }));
    }
    let again = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .enqueue(event("evt_0", "user.created", 0), names(&["a"]))
                .await
        })
    };
    let bad = {
        let store = store.clone();
        tokio::spawn(async move { store.enqueue(refused, names(&["a"])).await })
    };
    let mut duplicates = 0;
    for attempt in attempts {
        duplicates += usize::from(attempt.await.expect("join")?.duplicate);
    }
    duplicates += usize::from(again.await.expect("join")?.duplicate);
    assert_eq!(duplicates, 1, "evt_0 is stored once, whichever came first");
    let refusal = bad.await.expect("join");
    assert!(
        matches!(refusal, Err(StoreError::Backend { .. })),
        "the NUL byte is refused: {refusal:?}"
    );
    assert_eq!(store.pending_count().await?, 8);
    Ok(())
}

/// A group commit's round of enqueues is a few set-based statements. When PostgreSQL refuses
/// one of its events (a NUL character in a text column), the whole statement fails; the writer
/// then runs the batch again an enqueue a round to find the job, refuses that job alone and
/// stores the others. On one thread the three jobs are queued before the writer runs, so they
/// share one batch (the counter checks it) and, sharing no key, one round.
#[tokio::test(flavor = "current_thread")]
async fn a_refused_event_in_a_set_based_round_fails_alone() -> Result<()> {
    let harness = PostgresHarness::new();
    let counter = CommitCounter::default();
    let config = PostgresConfig {
        on_commit: Some(counter.observer()),
        ..harness.config()
    };
    let store = PostgresStore::open(config).await?;
    let mut refused = event("evt_bad", "user.created", 0);
    refused.trace_parent = Some("bad\0trace".into());
    let (first, bad, last) = futures::join!(
        store.enqueue(event("evt_1", "user.created", 0), names(&["a", "b"])),
        store.enqueue(refused, names(&["a"])),
        store.enqueue(event("evt_2", "user.created", 0), names(&["b"])),
    );
    assert_eq!(counter.largest(), 3, "the three jobs shared one batch");
    assert!(
        matches!(bad, Err(StoreError::Backend { .. })),
        "the NUL byte is refused: {bad:?}"
    );
    let (first, last) = (first?, last?);
    assert_eq!((first.deliveries.len(), last.deliveries.len()), (2, 1));
    assert!(
        first.deliveries[0] < first.deliveries[1],
        "ids follow the endpoints' order"
    );
    assert_eq!(store.pending_count().await?, 3);
    Ok(())
}

/// A purge and a replay never run at once (there is no foreign key from deliveries to events to
/// stop a replay from inserting a delivery for an event a purge deletes): each waits for the
/// other's lock, taken here on a connection of the test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_and_a_replay_wait_for_each_other() -> Result<()> {
    use webhook_operator::store::{FinalOutcome, ReplayFilter, ReplayRequest};
    let harness = PostgresHarness::new();
    let store = harness.open().await?;
    dead_letter(store.as_ref(), "evt_1", 0).await?;
    let (mut client, connection) = tokio_postgres::connect(&server_url(), tokio_postgres::NoTls)
        .await
        .map_err(StoreError::backend("connect"))?;
    tokio::spawn(connection);
    // A replay holds the lock: a purge waits for it.
    let replay_holding = hold_purge_lock(&mut client, false).await?;
    let purge = tokio::spawn({
        let store = store.clone();
        async move { store.purge_finished(at(100)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!purge.is_finished(), "the purge ran beside a replay");
    replay_holding
        .commit()
        .await
        .map_err(StoreError::backend("commit"))?;
    let purged = purge
        .await
        .map_err(|e| StoreError::Commit(e.to_string()))??;
    assert_eq!((purged.deliveries, purged.events), (1, 1));

    // A purge holds it: a replay waits for it.
    dead_letter(store.as_ref(), "evt_2", 200).await?;
    let purge_holding = hold_purge_lock(&mut client, true).await?;
    let replay = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .replay(ReplayRequest {
                    replay_id: "r1".into(),
                    filter: ReplayFilter {
                        endpoint: endpoint("a"),
                        from: at(0),
                        to: at(1000),
                        event_types: Vec::new(),
                        outcomes: vec![FinalOutcome::DeadLettered],
                    },
                    now: at(300),
                })
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!replay.is_finished(), "the replay ran beside a purge");
    purge_holding
        .commit()
        .await
        .map_err(StoreError::backend("commit"))?;
    let replayed = replay
        .await
        .map_err(|e| StoreError::Commit(e.to_string()))??;
    assert_eq!(replayed.requeued, 1);
    Ok(())
}

/// Takes the purge lock (exclusive as a purge does, else shared as a replay does) in a
/// transaction of `client`'s that holds it until committed.
async fn hold_purge_lock(
    client: &mut tokio_postgres::Client,
    exclusive: bool,
) -> Result<tokio_postgres::Transaction<'_>> {
    let tx = client
        .transaction()
        .await
        .map_err(StoreError::backend("begin"))?;
    let lock = if exclusive {
        "SELECT pg_advisory_xact_lock($1)"
    } else {
        "SELECT pg_advisory_xact_lock_shared($1)"
    };
    tx.execute(lock, &[&webhook_operator::store::postgres::PURGE_LOCK])
        .await
        .map_err(StoreError::backend("lock"))?;
    Ok(tx)
}

/// Enqueues `event_id` to endpoint `a` at `seconds` and dead-letters it at its first attempt.
async fn dead_letter(store: &dyn Store, event_id: &str, seconds: i64) -> Result<()> {
    store
        .enqueue(event(event_id, "user.created", seconds), names(&["a"]))
        .await?;
    let claimed = store.claim_due(claim_all("w", seconds + 1)).await?;
    let dead = NextStep::DeadLetter {
        reason: "gone".into(),
    };
    let id = claimed.first().map(|c| c.delivery.id);
    let id = id.ok_or_else(|| StoreError::Commit(format!("{event_id} was not claimed")))?;
    store
        .record_attempt(result(id, "w", 1, seconds + 2, Some(410), 5, dead))
        .await?;
    Ok(())
}
