//! The transform pool against real worker processes (this crate's binary): a program that loops
//! forever, one that recurses without end and one that allocates without bound each fail only
//! their own run, and the pool keeps serving other programs meanwhile.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use webhook_operator::transform::{Output, PoolConfig, TransformError, TransformPool};

const PAYLOAD: &str = r#"{"event_id":"evt_1","timestamp":"2024-01-15T10:30:00Z","webhook":{"id":"ns/ep","name":"ep"},"data":{"event_type":"user.created","user":{"id":7}}}"#;

fn pool(timeout: Duration) -> Arc<TransformPool> {
    let mut config = PoolConfig::new(PathBuf::from(env!("CARGO_BIN_EXE_webhook-operator")));
    config.timeout = timeout;
    config.memory_limit = 512 << 20;
    TransformPool::start(config)
}

async fn run(pool: &TransformPool, program: &str) -> Result<Output, TransformError> {
    pool.run(Arc::from(program), Bytes::from_static(PAYLOAD.as_bytes()))
        .await
}

#[tokio::test]
async fn runs_programs_and_reports_their_errors() {
    let pool = pool(Duration::from_secs(5));
    assert_eq!(
        run(&pool, "{id: .data.user.id}").await,
        Ok(Output::Body(br#"{"id":7}"#.to_vec()))
    );
    assert_eq!(run(&pool, "empty").await, Ok(Output::Filtered));
    assert!(matches!(
        run(&pool, "nosuch").await,
        Err(TransformError::Compile(m)) if m.contains("undefined filter nosuch")
    ));
    assert!(matches!(
        run(&pool, r#"error("bad event")"#).await,
        Err(TransformError::Run(m)) if m.contains("bad event")
    ));
}

#[tokio::test]
async fn a_program_that_loops_forever_is_stopped_and_the_pool_serves_on() {
    let pool = pool(Duration::from_secs(3));
    let looping = tokio::spawn({
        let pool = pool.clone();
        async move { run(&pool, "def f: f; f").await }
    });
    // While one worker is stuck, the other answers.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(run(&pool, "empty").await, Ok(Output::Filtered));
    assert!(
        !looping.is_finished(),
        "the looping run ended before its deadline"
    );
    assert_eq!(
        looping.await.unwrap(),
        Err(TransformError::Timeout(Duration::from_secs(3)))
    );
    assert!(matches!(
        run(&pool, "last(range(1e18))").await,
        Err(TransformError::Timeout(_))
    ));
    // The stopped worker was replaced.
    for _ in 0..4 {
        assert_eq!(
            run(&pool, ".data.user.id").await,
            Ok(Output::Body(b"7".to_vec()))
        );
    }
}

#[tokio::test]
async fn endless_recursion_and_memory_crash_only_their_worker() {
    let pool = pool(Duration::from_secs(20));
    let recursion = run(&pool, "def f: 1 + f; f").await;
    assert!(
        matches!(&recursion, Err(TransformError::Crashed(why)) if why.contains("stack")),
        "{recursion:?}"
    );
    let memory = run(&pool, "[repeat(\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\")]").await;
    assert!(
        matches!(&memory, Err(TransformError::Crashed(_))),
        "{memory:?}"
    );
    assert_eq!(
        run(&pool, ".data.user.id").await,
        Ok(Output::Body(b"7".to_vec()))
    );
}
