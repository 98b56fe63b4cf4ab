//! Misconfiguration seen at once, on the real engine: a misspelled `--message-name` is diagnosed
//! at the route's first mismatch — one ERROR naming the topic, the message sent and the one the
//! instances wait for, and `follow_ups_misconfigured{cause,topic}` at 1 — however many
//! follow-ups are pending, while their retries keep the engine's load within the retry budget.
//! Judged by state: the route's other mismatches wait for its diagnosis, so once any follow-up
//! has gone on to retry (`follow_ups_retried_total` ≥ 1) the gauge must already be 1. On a mock
//! engine: the diagnosis clears once a message of the route goes through.

use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::ResponseTemplate;

use crate::ledger::{FOLLOW_UPS_SENT, TASKS_COMPLETED};
use crate::support::engine::{shared_engine, Rest};
use crate::support::mock::{error_body, MockEngine, OWED};
use crate::support::{engine_requests, eventually, metric_value, WorkerProcess, SHUTDOWN_LIMIT};

const RETRIED: &str = "camunda_worker_follow_ups_retried_total";
const BUDGET_SPENT: &str = "camunda_worker_retry_budget_spent_total";
/// Generous for a loaded 2-core machine: a timeout, not a speed claim.
const RUN_LIMIT: Duration = Duration::from_secs(240);
/// `--retry-budget`, requests per second.
const BUDGET: f64 = 20.0;

/// The gauge of the route `topic` and cause `message_name`.
fn misconfigured(topic: &str) -> String {
    format!("camunda_worker_follow_ups_misconfigured{{cause=\"message_name\",topic=\"{topic}\"}}")
}

/// A worker whose `--message-name` is misspelled, against `pending` instances of a fresh variant
/// (suffix `suffix`, unique per test); returns it with the names, once every task is completed
/// and the route was diagnosed at its first mismatch.
async fn misspelled(suffix: &str, pending: usize) -> (WorkerProcess, String, String, Instant) {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant(suffix).await;
    rest.start_instances(&key, suffix, pending).await;
    // Not a suffix or prefix of the real name, so a line names one or the other unambiguously.
    let typo = message.replace("sample_response", "sample_respnose");
    let started = Instant::now();
    let worker = WorkerProcess::spawn(
        suffix,
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
            "--reconcile-interval",
            "0",
        ],
    );
    let first = eventually(
        RUN_LIMIT,
        "a follow-up's first mismatched attempt is over",
        || async {
            let text = worker.scrape().await;
            (metric_value(&text, RETRIED) >= 1.0).then_some(text)
        },
    )
    .await;
    assert_eq!(
        metric_value(&first, &misconfigured(&topic)),
        1.0,
        "diagnosed before any follow-up retried: {first}"
    );
    assert_eq!(
        metric_value(&first, "camunda_worker_follow_ups_misdirected"),
        1.0
    );
    eventually(RUN_LIMIT, "every task completed", || async {
        (worker.count(TASKS_COMPLETED).await == pending as u64).then_some(())
    })
    .await;
    (worker, typo, message, started)
}

/// The log after the worker's exit (SIGTERM, exit 0) holds exactly one ERROR, and it names the
/// topic, the message sent and the message the instances wait for (and its activity).
fn one_error_naming_both(worker: &mut WorkerProcess, typo: &str, message: &str, topic: &str) {
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    let log = worker.stderr();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert_eq!(errors.len(), 1, "one ERROR: {log}");
    let line = errors[0];
    for name in [typo, message, topic, "wait_for_response", "--message-name"] {
        assert!(line.contains(name), "the ERROR names {name}: {line}");
    }
}

/// 1,000 follow-ups pending on a misspelled name: the route is diagnosed at its first mismatch,
/// once; the diagnosis asks the engine one question of each kind, not one per follow-up; and
/// the engine's load beyond each task's own requests stays within the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelled_message_name_is_named_at_the_first_mismatch_with_1000_pending() {
    const PENDING: usize = 1000;
    let (mut worker, typo, message, started) = misspelled("diagnosis_many", PENDING).await;
    let topic = "messageSending_diagnosis_many";

    // Each task's own requests are exempt from the budget: its complete, its follow-up's first
    // message and the marker read that decides that message's mismatch. Everything beyond them,
    // over the whole run, is within the budget's rate (plus one second's burst).
    let text = worker.scrape().await;
    let elapsed = started.elapsed().as_secs_f64();
    let completed = metric_value(&text, TASKS_COMPLETED);
    let beyond = engine_requests(&text, None) - 3.0 * completed;
    assert!(
        beyond <= BUDGET * elapsed + BUDGET,
        "{beyond} requests beyond the tasks' own in {elapsed:.1} s: more than the budget allows"
    );
    assert_eq!(
        (
            engine_requests(&text, Some("eventSubscriptionCount")),
            engine_requests(&text, Some("eventSubscriptions"))
        ),
        (1.0, 1.0),
        "one diagnosis for the route, not one per follow-up: {text}"
    );

    // And over a window once every first attempt is made, as `ledger.rs` measures it.
    eventually(
        RUN_LIMIT,
        "every follow-up made its first attempt",
        || async {
            let text = worker.scrape().await;
            let exempt = engine_requests(&text, None) - metric_value(&text, BUDGET_SPENT);
            (exempt >= 3.0 * PENDING as f64).then_some(())
        },
    )
    .await;
    let before = engine_requests(&worker.scrape().await, None);
    let window = Instant::now();
    // Kept: a ten-second window whose requests are counted against the budget's rate.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let text = worker.scrape().await;
    let made = engine_requests(&text, None) - before;
    let allowed = BUDGET * window.elapsed().as_secs_f64() + BUDGET;
    assert!(
        made <= allowed,
        "{made} requests in {:?}: more than the budget allows ({allowed})",
        window.elapsed()
    );
    assert!(made > 0.0, "the follow-ups do retry");
    assert_eq!(metric_value(&text, FOLLOW_UPS_SENT), 0.0);
    assert_eq!(metric_value(&text, &misconfigured(topic)), 1.0, "it lasts");

    one_error_naming_both(&mut worker, &typo, &message, topic);
}

/// The same with one follow-up pending: its first mismatch is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelled_message_name_is_named_at_the_first_mismatch_with_1_pending() {
    let (mut worker, typo, message, _) = misspelled("diagnosis_one", 1).await;
    let text = worker.scrape().await;
    assert_eq!(metric_value(&text, FOLLOW_UPS_SENT), 0.0);
    one_error_naming_both(&mut worker, &typo, &message, "messageSending_diagnosis_one");
}

/// On a mock engine: the instance waits for `other_message`, nobody for `sample_response`, so the
/// first mismatch names both (one ERROR, the gauge at 1); when the instance then takes the message
/// (the process was fixed meanwhile), the gauge goes back to 0 with one INFO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diagnosis_is_cleared_once_a_message_of_the_route_goes_through() {
    let engine = MockEngine::one_task("order-9").await;
    engine.marker("pi-t1", vec![Some(OWED)]).await;
    engine
        .message_waits("pi-t1", &[("other_message", "ex-t1")])
        .await;
    engine
        .on_get(
            "event-subscription/count",
            ResponseTemplate::new(200).set_body_json(json!({"count": 0})),
        )
        .await;
    let no_match = ResponseTemplate::new(400).set_body_json(error_body(
        "RestException",
        "org.camunda.bpm.engine.MismatchingMessageCorrelationException: Cannot correlate message 'sample_response': No process definition or execution matches the parameters",
        Some(0),
    ));
    engine
        .on_sequence("message", vec![no_match, ResponseTemplate::new(204)])
        .await;
    let stopped = engine
        .worker(&["--correlation-delay", "0s"])
        .stop_once(Duration::from_secs(15), "the follow-up sent", |m| {
            metric_value(m, FOLLOW_UPS_SENT) == 1.0
        })
        .await;
    assert_eq!(
        metric_value(&stopped.metrics, &misconfigured("messageSending")),
        0.0,
        "cleared: {}",
        stopped.metrics
    );
    assert_eq!(
        metric_value(&stopped.metrics, RETRIED),
        1.0,
        "{}",
        stopped.metrics
    );
    let log = &stopped.log;
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].contains("sample_response") && errors[0].contains("other_message"),
        "{log}"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains(" INFO ") && l.contains("no longer diagnosed misconfigured"))
            .count(),
        1,
        "{log}"
    );
    assert_eq!(
        (
            engine.requests_to("/event-subscription/count").len(),
            engine.requests_to("/event-subscription").len()
        ),
        (1, 1),
        "one diagnosis"
    );
}

/// Two routes in one daemon, one of them with a misspelled message name: only that route is
/// diagnosed (its gauge 1, one ERROR naming its topic and both of its names), while the other
/// route's follow-ups are delivered and its gauge stays 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_route_with_the_misspelled_name_is_diagnosed() {
    const EACH: usize = 20;
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key_a, topic_a, message_a) = rest.deploy_variant("diagnosis_route_a").await;
    let (key_b, topic_b, message_b) = rest.deploy_variant("diagnosis_route_b").await;
    rest.start_instances(&key_a, "diagnosis_route_a", EACH)
        .await;
    rest.start_instances(&key_b, "diagnosis_route_b", EACH)
        .await;
    let typo_b = message_b.replace("sample_response", "sample_respnose");
    let file = crate::cli::config_file(&format!(
        r#"correlation_delay = "0s"
reconcile_interval = "0s"

[[route]]
topic = {topic_a:?}
message_name = {message_a:?}

[[route]]
topic = {topic_b:?}
message_name = {typo_b:?}
"#
    ));
    let mut worker = WorkerProcess::spawn(
        "routes",
        &engine.url,
        &["--config", file.path().to_str().unwrap()],
    );
    eventually(RUN_LIMIT, "route b diagnosed", || async {
        (worker.metric(&misconfigured(&topic_b)).await == 1.0).then_some(())
    })
    .await;
    eventually(RUN_LIMIT, "route a's instances ended", || async {
        (crate::ledger::running(&rest, &key_a).await == 0).then_some(())
    })
    .await;
    let sent_a = format!("{FOLLOW_UPS_SENT}{{topic=\"{topic_a}\"}}");
    let text = worker.scrape_settled(&sent_a, EACH as f64).await;
    assert_eq!(metric_value(&text, &misconfigured(&topic_b)), 1.0, "{text}");
    assert_eq!(metric_value(&text, &misconfigured(&topic_a)), 0.0, "{text}");
    assert_eq!(metric_value(&text, &sent_a), EACH as f64);
    assert_eq!(
        metric_value(&text, &format!("{FOLLOW_UPS_SENT}{{topic=\"{topic_b}\"}}")),
        0.0
    );
    one_error_naming_both(&mut worker, &typo_b, &message_b, &topic_b);
    let log = worker.stderr();
    assert!(!log.contains(&format!("topic {topic_a} ")), "{log}");
}
