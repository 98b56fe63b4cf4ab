//! The adaptive concurrency limit on the real engine: the worker binary through the fault proxy,
//! where the engine's own answers raise the limit and a `complete` slowed down by the proxy (an
//! engine in trouble) brings it down, with every instance still finished.

use std::time::{Duration, SystemTime};

use crate::support::engine::{shared_engine, Rest};
use crate::support::proxy::{Exchange, Fault, FaultProxy, Rule};
use crate::support::{eventually, WorkerProcess};

const LIMIT: &str = "camunda_worker_concurrency_limit";
const COMPLETE: &str = "/external-task/[^/]+/complete$";

/// The `maxTasks` of the fetches sent before (`false`) or from (`true`) `at` that asked for tasks,
/// in the order sent.
fn asked(exchanges: &[Exchange], at: SystemTime, from: bool) -> Vec<u64> {
    let mut fetches: Vec<&Exchange> = exchanges
        .iter()
        .filter(|e| e.path.ends_with("/fetchAndLock") && (e.sent >= at) == from)
        .collect();
    fetches.sort_by_key(|e| e.sent);
    fetches
        .iter()
        .filter_map(|e| e.body["maxTasks"].as_u64())
        .filter(|n| *n > 0)
        .collect()
}

/// A backlog the engine completes at its own pace raises the limit above where it starts; once the
/// proxy holds every `complete` for 3 s, the limit comes down to 8 or fewer and a fetch asks for no
/// more than that, and every instance of both batches still finishes. (A slowdown that lasts
/// becomes the usual after some windows, and the limit grows again: the test asserts the fall.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_rises_on_the_real_engine_and_falls_when_complete_slows_down() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("adaptive_limit").await;
    let proxy = FaultProxy::start(&format!("http://127.0.0.1:{}", engine.port)).await;
    let via_proxy = format!("{}/engine-rest", proxy.url());
    rest.start_instances(&key, "steady", 300).await;
    let mut worker = WorkerProcess::spawn(
        "adaptive",
        &via_proxy,
        &[
            "--topic",
            &topic,
            "--message-name",
            &message,
            "--correlation-delay",
            "0s",
            "--max-tasks",
            "64",
        ],
    );
    rest.wait_completed(&key, 300, Duration::from_secs(120))
        .await;

    let armed = SystemTime::now();
    proxy.add_rule(Rule::on("POST", COMPLETE).then(Fault::Delay(Duration::from_secs(3))));
    rest.start_instances(&key, "slowed", 80).await;
    eventually(
        Duration::from_secs(60),
        "the limit down to 8 or fewer",
        || async { (worker.metric(LIMIT).await <= 8.0).then_some(()) },
    )
    .await;
    rest.wait_completed(&key, 380, Duration::from_secs(180))
        .await;
    let exchanges = proxy.exchanges();
    let before = asked(&exchanges, armed, false);
    let after = asked(&exchanges, armed, true);
    assert_eq!(
        before.first(),
        Some(&16),
        "the limit starts at 16: {before:?}"
    );
    assert!(before.iter().any(|&n| n > 16), "it had grown: {before:?}");
    assert!(
        after.iter().any(|&n| n <= 8),
        "a fetch after the slowdown asked for 8 or fewer: {after:?}"
    );
    let open = rest
        .count("external-task/count", &[("topicName", topic.as_str())])
        .await;
    assert_eq!(open, 0, "no task of the topic left");
    assert_eq!(worker.terminate(Duration::from_secs(30)), Some(0));
}
