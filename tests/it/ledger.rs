//! The engine keeps the ledger: each follow-up owed is a marker variable committed with the task's
//! completion, and flipped by the one message that can match it. These scenarios run the worker
//! binary against real engines at every history level and judge it by the engine's runtime state
//! (which every history level keeps) and the worker's own metrics.

use std::time::{Duration, Instant};

use crate::support::engine::{EngineOptions, RealEngine, Rest};
use crate::support::{eventually, WorkerProcess};

const FOLLOW_UPS_SENT: &str = "camunda_worker_follow_ups_sent_total";
const FOLLOW_UPS_RECOVERED: &str = "camunda_worker_follow_ups_recovered_total";
const TASKS_COMPLETED: &str = "camunda_worker_tasks_completed_total";
const MARKER: &str = "camundaWorkerFollowUp";

/// An engine at `level`, started once per level for the whole suite.
fn engine_at(level: &'static str) -> &'static RealEngine {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static ENGINES: OnceLock<Mutex<HashMap<&'static str, &'static RealEngine>>> = OnceLock::new();
    let engines = ENGINES.get_or_init(Mutex::default);
    let mut engines = engines.lock().unwrap_or_else(|p| p.into_inner());
    engines.entry(level).or_insert_with(|| {
        Box::leak(Box::new(RealEngine::start(EngineOptions {
            args: vec![format!("--camunda.bpm.history-level={level}")],
            ..Default::default()
        })))
    })
}

/// Instances of `key` still running (runtime state: there at every history level).
async fn running(rest: &Rest, key: &str) -> u64 {
    rest.count("process-instance/count", &[("processDefinitionKey", key)])
        .await
}

/// Instances waiting at the catch event for `message`.
async fn waiting_for(rest: &Rest, message: &str) -> u64 {
    rest.count(
        "event-subscription/count",
        &[("eventType", "message"), ("eventName", message)],
    )
    .await
}

/// Markers with the value `like` (a `%` pattern), across instances.
async fn markers_like(rest: &Rest, like: &str) -> u64 {
    let (status, body) = rest
        .post(
            "variable-instance/count",
            serde_json::json!({
                "variableName": MARKER,
                "variableValues": [{"name": MARKER, "operator": "like", "value": like}],
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["count"]
        .as_u64()
        .unwrap()
}

/// A worker is killed with 100 follow-ups owed (its message name matches nothing, so none was
/// delivered); the next worker delivers every one from the markers alone, and nothing else.
async fn a_kill_9_with_follow_ups_owed_is_recovered_at(level: &'static str) {
    let engine = engine_at(level);
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant(&format!("crash_{level}")).await;
    rest.start_instances(&key, "crash", 100).await;

    let mut doomed = WorkerProcess::spawn(
        "doomed",
        &engine.url,
        &[
            "--topic",
            &topic,
            "--message-name",
            "nobody_waits_for_this",
            "--correlation-delay",
            "0s",
            "--reconcile-interval",
            "0",
        ],
    );
    eventually(
        Duration::from_secs(90),
        "all 100 instances wait at the catch event with a follow-up owed",
        || async {
            let owed = markers_like(&rest, &format!("owed:{topic}:%")).await;
            (waiting_for(&rest, &message).await == 100 && owed == 100).then_some(())
        },
    )
    .await;
    assert_eq!(doomed.count(FOLLOW_UPS_SENT).await, 0);
    doomed.kill_hard();

    let mut next = WorkerProcess::spawn(
        "next",
        &engine.url,
        &[
            "--topic",
            &topic,
            "--message-name",
            &message,
            "--reconcile-interval",
            "2s",
        ],
    );
    eventually(
        Duration::from_secs(120),
        "every instance continued and ended",
        || async { (running(&rest, &key).await == 0).then_some(()) },
    )
    .await;
    let recovered = eventually(
        Duration::from_secs(15),
        "the worker counted 100 recoveries",
        || async {
            let n = next.count(FOLLOW_UPS_RECOVERED).await;
            (n >= 100).then_some(n)
        },
    )
    .await;
    assert_eq!(recovered, 100, "each owed follow-up delivered exactly once");
    assert_eq!(next.count(TASKS_COMPLETED).await, 0);
    assert_eq!(waiting_for(&rest, &message).await, 0);
    assert_eq!(next.terminate(crate::support::SHUTDOWN_LIMIT), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_at_history_full_the_next_worker_delivers_every_owed_follow_up() {
    a_kill_9_with_follow_ups_owed_is_recovered_at("full").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_at_history_audit_the_next_worker_delivers_every_owed_follow_up() {
    a_kill_9_with_follow_ups_owed_is_recovered_at("audit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_at_history_activity_the_next_worker_delivers_every_owed_follow_up() {
    a_kill_9_with_follow_ups_owed_is_recovered_at("activity").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_at_history_none_the_next_worker_delivers_every_owed_follow_up() {
    a_kill_9_with_follow_ups_owed_is_recovered_at("none").await;
}

/// A misspelled `--message-name`: the worker says what the instances wait for (a metric, and one
/// ERROR naming the message and the flag), and however many follow-ups keep failing, its load on
/// the engine stays within the retry budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelled_message_name_is_named_and_its_retries_stay_within_the_budget() {
    let engine = engine_at("audit");
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("misspelled").await;
    rest.start_instances(&key, "typo", 300).await;
    let typo = format!("{message}_typo");
    let mut worker = WorkerProcess::spawn(
        "typo",
        &engine.url,
        &[
            "--topic",
            &topic,
            "--message-name",
            &typo,
            "--correlation-delay",
            "0s",
            "--retry-budget",
            "20",
        ],
    );
    eventually(
        Duration::from_secs(90),
        "the worker names the message the instances wait for",
        || async {
            (worker.metric("camunda_worker_follow_ups_misdirected").await == 1.0).then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(90),
        "all 300 completed (first attempts made)",
        || async { (worker.count(TASKS_COMPLETED).await == 300).then_some(()) },
    )
    .await;
    let requests = |text: String| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("camunda_worker_engine_request_duration_seconds_count"))
            .filter(|l| !l.contains("endpoint=\"fetchAndLock\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = requests(worker.scrape().await);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = requests(worker.scrape().await);
    // The bound follows the time that really passed: the budget's rate, plus one second's burst.
    let allowed = 20.0 * started.elapsed().as_secs_f64() + 20.0;
    let made = after - before;
    assert!(
        made <= allowed,
        "{made} requests (besides fetches) in {:?}: more than the budget allows ({allowed})",
        started.elapsed()
    );
    assert!(made > 0.0, "the follow-ups do retry");
    assert_eq!(worker.count(FOLLOW_UPS_SENT).await, 0);
    let log = worker.stderr();
    assert_eq!(
        crate::support::lines_with(&log, "check --message-name"),
        1,
        "one ERROR naming the flag: {log}"
    );
    assert!(log.contains(&message) && log.contains("wait_for_response"));
    // SIGTERM: the undeliverable follow-ups stay owed in the engine and do not hold the grace.
    assert_eq!(worker.terminate(crate::support::SHUTDOWN_LIMIT), Some(0));
    let log = worker.stderr();
    assert_eq!(
        crate::support::lines_with(&log, "not delivered before shutdown"),
        1,
        "one WARN with the count: {log}"
    );
    assert_eq!(markers_like(&rest, &format!("owed:{topic}:%")).await, 300);
}
