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
    pool_of(2, timeout)
}

fn pool_of(workers: usize, timeout: Duration) -> Arc<TransformPool> {
    let mut config = PoolConfig::new(PathBuf::from(env!("CARGO_BIN_EXE_webhook-operator")));
    config.workers = workers;
    config.timeout = timeout;
    config.memory_limit = 512 << 20;
    TransformPool::start(config)
}

/// The answers to `programs` in a one-worker pool with a 500 ms deadline, warmed up first so
/// the programs, submitted at once, queue up and are taken together; in order.
async fn answers_in_one_worker(programs: &[&'static str]) -> Vec<Result<Output, TransformError>> {
    let pool = pool_of(1, Duration::from_millis(500));
    assert_eq!(run(&pool, "empty").await, Ok(Output::Filtered));
    let mut runs = Vec::new();
    for &program in programs {
        let pool = pool.clone();
        runs.push(tokio::spawn(async move { run(&pool, program).await }));
    }
    let mut answers = Vec::new();
    for handle in runs {
        answers.push(handle.await.unwrap());
    }
    answers
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
async fn a_worker_has_its_whole_memory_budget_beyond_what_it_maps_at_start() {
    // Recursion 100 and 300 deep in a fresh worker (MiBs of stack in a debug build, under the
    // 8 MiB stack limit), and about 100 MiB of values: all within the 512 MiB budget. The limit
    // once counted the allocator's reserved arena (1 GiB) against the budget, so the stack could
    // not grow, and even 100 deep aborted the worker as a "stack overflow".
    for depth in [100, 300] {
        let pool = pool_of(1, Duration::from_secs(20));
        let program = format!("def f(n): if n == 0 then 0 else 1 + f(n - 1) end; f({depth})");
        assert_eq!(
            run(&pool, &program).await,
            Ok(Output::Body(depth.to_string().into_bytes())),
            "depth {depth}"
        );
    }
    let pool = pool(Duration::from_secs(20));
    assert_eq!(
        run(&pool, "[range(4000000)] | length").await,
        Ok(Output::Body(b"4000000".to_vec()))
    );
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

#[tokio::test]
async fn runs_queued_behind_a_stuck_one_in_the_same_worker_are_still_answered() {
    let answers = answers_in_one_worker(&[
        "def f: f; f",
        ".data.user.id",
        "nosuch",
        ".data.user.id",
        "empty",
    ])
    .await;
    assert_eq!(
        answers[0],
        Err(TransformError::Timeout(Duration::from_millis(500)))
    );
    assert_eq!(answers[1], Ok(Output::Body(b"7".to_vec())));
    assert!(matches!(answers[2], Err(TransformError::Compile(_))));
    assert_eq!(answers[3], Ok(Output::Body(b"7".to_vec())));
    assert_eq!(answers[4], Ok(Output::Filtered));
}

#[tokio::test]
async fn many_concurrent_runs_each_get_their_own_answer() {
    let pool = pool(Duration::from_secs(5));
    let mut runs = Vec::new();
    for n in 0..200u32 {
        let pool = pool.clone();
        runs.push(tokio::spawn(async move {
            let program = format!("{{n: {n}, id: .data.user.id}}");
            (n, run(&pool, &program).await)
        }));
    }
    for handle in runs {
        let (n, answer) = handle.await.unwrap();
        assert_eq!(
            answer,
            Ok(Output::Body(format!(r#"{{"n":{n},"id":7}}"#).into_bytes()))
        );
    }
}

/// Runs taken by one worker together: an answer is not held back behind the next program, so
/// when that one loops, the runs before it still get their answers (not a timeout of their own).
#[tokio::test]
async fn a_loop_later_in_a_batch_does_not_hold_back_the_answers_before_it() {
    let answers = answers_in_one_worker(&[
        ".data.user.id",
        ".data.user.id",
        "def f: f; f",
        ".data.user.id",
    ])
    .await;
    let seven = Ok(Output::Body(b"7".to_vec()));
    assert_eq!(answers[0], seven);
    assert_eq!(answers[1], seven);
    assert_eq!(
        answers[2],
        Err(TransformError::Timeout(Duration::from_millis(500)))
    );
    assert_eq!(answers[3], seven);
}

#[tokio::test]
async fn runs_ahead_and_a_run_that_is_waited_for_share_a_worker_and_each_get_their_answer() {
    let pool = pool_of(1, Duration::from_secs(5));
    assert_eq!(run(&pool, "empty").await, Ok(Output::Filtered));
    let program = |i: usize| Arc::from(format!("{{n: {i}, id: .data.user.id}}"));
    let payload = || Bytes::from_static(PAYLOAD.as_bytes());
    // Runs ahead (they may wait for company), one nobody waits for any more, and runs that
    // go at once, all queued together.
    let ahead: Vec<_> = [0, 2, 4]
        .map(|i| pool.start_ahead(program(i), payload(), true).unwrap())
        .into();
    drop(pool.start_ahead(program(9), payload(), true));
    let mut waited_for = Vec::new();
    for i in [1, 3] {
        let pool = pool.clone();
        waited_for.push(tokio::spawn(async move {
            pool.run(program(i), payload()).await
        }));
    }
    let expected = |i: usize| Ok(Output::Body(format!(r#"{{"n":{i},"id":7}}"#).into_bytes()));
    for (i, answer) in [0, 2, 4].into_iter().zip(ahead) {
        assert_eq!(answer.await.unwrap(), expected(i));
    }
    for (i, handle) in [1, 3].into_iter().zip(waited_for) {
        assert_eq!(handle.await.unwrap(), expected(i));
    }
    // A lone run ahead is answered too: its batch stops waiting after the linger.
    let lone = pool.start_ahead(program(5), payload(), true).unwrap();
    assert_eq!(lone.await.unwrap(), expected(5));
}

/// Polls until the pool has checked `program`'s bound (`transform/bounds/`).
async fn verdict(pool: &TransformPool, program: &str) -> bool {
    for _ in 0..500 {
        if let Some(here) = pool.runs_in_process(program) {
            return here;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{program:?} was not checked within 5 s");
}

#[tokio::test]
async fn a_bounded_program_runs_in_the_dispatcher_with_the_answers_a_worker_gives() {
    // No worker can start in this pool: whatever it answers once a program is checked, it
    // answered in process.
    let mut config = PoolConfig::new(PathBuf::from("/nonexistent/webhook-operator"));
    config.workers = 1;
    let runs = config.runs.clone();
    let here = TransformPool::start(config);
    let workers = pool(Duration::from_secs(5));
    let programs = [
        r#"{text: "New \(.data.event_type) event", id: .data.user.id, at: .timestamp}"#,
        r#"select(.data.event_type == "user.deleted")"#,
        r#"error("bad \(.data.user.id)")"#,
        r#".data.user.id + 0.1"#,
        r#"{a: .data} | tojson"#,
        r#".data.user.id, .data.user.id"#,
        r#"@uri "https://example.com/\(.data.event_type)""#,
    ];
    for program in programs {
        // The first run is checked meanwhile and goes to a worker: none here.
        assert!(
            matches!(
                run(&here, program).await,
                Err(TransformError::Unavailable(_))
            ),
            "{program}"
        );
        assert!(
            verdict(&here, program).await,
            "{program} should run in process"
        );
        // A program's first run in a pool always goes to a worker.
        let in_worker = run(&workers, program).await;
        assert_eq!(run(&here, program).await, in_worker, "{program}");
    }
    // Each program: its first run sent to a worker, its second run here.
    assert_eq!(runs.in_worker.get(), programs.len() as u64);
    assert_eq!(runs.in_process.get(), programs.len() as u64);

    // A program with no bound stays in the workers, where it is stopped.
    for unbounded in ["def f: f; f", "[range(1e9)]", "[.[]]"] {
        let _ = run(&here, unbounded).await;
        assert!(!verdict(&here, unbounded).await, "{unbounded}");
        assert!(matches!(
            run(&here, unbounded).await,
            Err(TransformError::Unavailable(_))
        ));
    }

    // A bounded program on a payload too large for its budget goes to a worker too.
    let program = Arc::<str>::from("{id: .data.user.id}");
    let _ = here
        .run(program.clone(), Bytes::from_static(PAYLOAD.as_bytes()))
        .await;
    assert!(verdict(&here, &program).await);
    let large = PAYLOAD.replace(
        r#""id":7"#,
        &format!(r#""id":7,"bio":"{}""#, "x".repeat(4 << 20)),
    );
    assert!(matches!(
        here.run(program.clone(), Bytes::from(large.clone())).await,
        Err(TransformError::Unavailable(_))
    ));
    assert_eq!(
        workers.run(program, Bytes::from(large)).await,
        Ok(Output::Body(br#"{"id":7}"#.to_vec()))
    );
}
