//! The adaptive concurrency limit (`--concurrency adaptive`, the default) against a mock engine:
//! how fast the engine answers `complete` moves how many tasks the worker keeps in flight, and so
//! the `maxTasks` its fetches ask for. The mock answers each `complete` after a fixed delay, so the
//! round trips the limit reads are that delay, not the machine's noise.

use std::time::Duration;

use serde_json::Value;
use wiremock::ResponseTemplate;

use crate::support::eventually;
use crate::support::mock::{task, MockEngine};

const WAIT: Duration = Duration::from_secs(60);
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(30);
const LIMIT: &str = "camunda_worker_concurrency_limit";

/// `count` tasks waiting, each with a business key of its own.
fn backlog(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| task(&format!("t{i}"), Some(&format!("k{i}"))))
        .collect()
}

/// The `maxTasks` of every fetch so far (not the shutdown's fetch for none).
fn asked(engine: &MockEngine) -> Vec<u64> {
    engine
        .requests_to("/fetchAndLock")
        .iter()
        .filter_map(|s| s.body["maxTasks"].as_u64())
        .filter(|n| *n > 0)
        .collect()
}

fn completing_after(delay_ms: u64) -> ResponseTemplate {
    ResponseTemplate::new(204).set_delay(Duration::from_millis(delay_ms))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_the_engine_completes_steadily_raises_the_limit_to_max_tasks() {
    let engine = MockEngine::with_tasks(backlog(600)).await;
    engine
        .on("external-task/t[0-9]+/complete", completing_after(20))
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let mut worker = engine.quick_worker(&["--max-tasks", "64"]);
    eventually(WAIT, "the limit at --max-tasks", || async {
        (worker.metric(LIMIT).await == 64.0).then_some(())
    })
    .await;
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    let asked = asked(&engine);
    assert_eq!(asked[0], 16, "the limit starts low: {asked:?}");
    assert!(asked.iter().any(|&n| n > 32), "{asked:?}");
    assert!(asked.iter().all(|&n| n <= 64), "{asked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_whose_complete_slows_down_is_asked_for_fewer_tasks() {
    let engine = MockEngine::with_tasks(backlog(600)).await;
    // 120 completions at 20 ms, then every one at 1.5 s: 75 times as slow, for long enough that
    // the limit stays down for seconds before that becomes the usual.
    let mut replies = vec![completing_after(20); 120];
    replies.push(completing_after(1500));
    engine
        .on_sequence("external-task/t[0-9]+/complete", replies)
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let mut worker = engine.quick_worker(&["--max-tasks", "64"]);
    eventually(WAIT, "the limit down to 8 or fewer", || async {
        (worker.metric(LIMIT).await <= 8.0).then_some(())
    })
    .await;
    let before = asked(&engine).len();
    eventually(WAIT, "three more fetches", || async {
        (asked(&engine).len() >= before + 3).then_some(())
    })
    .await;
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    let asked = asked(&engine);
    assert!(
        asked[..before].iter().any(|&n| n > 16),
        "it had grown: {asked:?}"
    );
    assert!(
        asked[before..].iter().all(|&n| n <= 8),
        "fetches after the limit came down: {asked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_concurrency_asks_for_max_tasks_from_the_first_fetch() {
    let engine = MockEngine::with_tasks(backlog(100)).await;
    engine
        .on("external-task/t[0-9]+/complete", completing_after(20))
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let mut worker = engine.quick_worker(&["--max-tasks", "64", "--concurrency", "fixed"]);
    eventually(WAIT, "a first fetch", || async {
        (!asked(&engine).is_empty()).then_some(())
    })
    .await;
    assert_eq!(worker.metric(LIMIT).await, 64.0);
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    assert_eq!(asked(&engine)[0], 64);
}
