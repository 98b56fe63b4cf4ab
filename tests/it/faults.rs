//! Fault behaviour, one test per row of the README's "Failure behaviour" table, with the exact
//! engine replies pinned on a mock engine.

use std::sync::Arc;
use std::time::Duration;

use camunda_worker::engine::ExternalTask;
use camunda_worker::handler::{Handler, HandlerError, TaskResult};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wiremock::ResponseTemplate;

use crate::support::engine::free_port;
use crate::support::mock::{
    error_body, follow_up_message, owed_marker, task, MockEngine, Seen, MARKER, OWED,
};
use crate::support::proxy::{FaultKind, FaultProxy};
use crate::support::{eventually, lines_with, metric_value, TestWorker, WorkerProcess};

const WAIT: Duration = Duration::from_secs(15);

const NO_MATCH: &str = "org.camunda.bpm.engine.MismatchingMessageCorrelationException: Cannot correlate message 'sample_response': No process definition or execution matches the parameters";
const MANY_MATCH: &str = "org.camunda.bpm.engine.MismatchingMessageCorrelationException: ENGINE-13031 Cannot correlate a message with name 'sample_response' to a single execution. 2 executions match the correlation keys: CorrelationSet [businessKey=shared, processInstanceId=null, processDefinitionId=null, correlationKeys=null, localCorrelationKeys=null, tenantId=null, isTenantIdSet=false, isExecutionsOnly=false]";

fn no_match() -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(error_body("RestException", NO_MATCH, Some(0)))
}

fn bad_gateway() -> ResponseTemplate {
    ResponseTemplate::new(504).set_body_string("<html>504 Gateway Time-out</html>")
}

/// The engine's 404 for task t1, which no longer exists.
fn task_gone() -> ResponseTemplate {
    ResponseTemplate::new(404).set_body_json(error_body(
        "RestException",
        "External task with id t1 does not exist",
        Some(0),
    ))
}

/// `complete` of t1 reaches the engine, but its reply is lost (a proxy's 504); the retry finds the
/// task gone, because it was completed.
async fn complete_reply_lost_then_task_gone(engine: &MockEngine) {
    engine
        .on_sequence(
            "external-task/t1/complete",
            vec![bad_gateway(), task_gone()],
        )
        .await;
}

/// The marker reads of a mock: `GET /variable-instance` (the reconciler's range query is a POST),
/// each checked to ask for one instance's marker, undeserialized.
fn marker_reads(engine: &MockEngine, instance: &str) -> Vec<Seen> {
    let reads: Vec<Seen> = engine
        .requests_to("/variable-instance")
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    for read in &reads {
        assert_eq!(
            (
                read.param("processInstanceIdIn"),
                read.param("variableName"),
                read.param("deserializeValues")
            ),
            (Some(instance), Some(MARKER), Some("false")),
            "{read:?}"
        );
    }
    reads
}

/// The owed marker the (first) `complete` of `task_id` set.
fn owed_by_complete(engine: &MockEngine, task_id: &str) -> String {
    let completes = engine.requests_to(&format!("/{task_id}/complete"));
    let owed = owed_marker(&completes[0].body, task_id);
    for complete in &completes {
        assert_eq!(
            owed_marker(&complete.body, task_id),
            owed,
            "a retried complete sets the same marker"
        );
    }
    owed
}

/// Every message sent, checked to be the one follow-up of t1 (business key `key`, instance
/// pi-t1): the same compare-and-set each time, so a repeat cannot be correlated twice.
fn follow_ups_of_t1(engine: &MockEngine, key: Option<&str>, instance: Option<&str>) -> Vec<Seen> {
    let expected = follow_up_message(&owed_by_complete(engine, "t1"), "t1", key, instance);
    let messages = engine.requests_to("/message");
    for message in &messages {
        assert_eq!(message.body, expected);
    }
    messages
}

const SENT: &str = "camunda_worker_follow_ups_sent_total";
const ALREADY: &str = "camunda_worker_follow_ups_already_delivered_total";
const RETRIED: &str = "camunda_worker_follow_ups_retried_total";
const COMPLETED: &str = "camunda_worker_tasks_completed_total";
const GIVEN_UP: &str = "camunda_worker_follow_ups_given_up_total";
const TASK_GONE: &str = "camunda_worker_tasks_dropped_total{reason=\"task_gone\"}";

/// Whether the exposition shows `series` at `value`.
fn at(series: &'static str, value: f64) -> impl Fn(&str) -> bool {
    move |metrics| metric_value(metrics, series) == value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_answering_503_is_backed_off_with_one_warning_and_one_recovery_notice() {
    let engine = MockEngine::start(vec![]).await;
    engine
        .fetch_first(
            4,
            ResponseTemplate::new(503).set_body_string("Service Unavailable"),
        )
        .await;
    // Four failures with backoff (0.25–0.5 s, 0.5–1 s, 1–2 s, 2–4 s), then empty polls again.
    let log = engine
        .worker(&[])
        .stop_once(WAIT, "polling to resume after the outage", |_| {
            engine.requests_to("/fetchAndLock").len() >= 6
        })
        .await
        .log;
    assert_eq!(lines_with(&log, "engine unavailable"), 1, "{log}");
    assert_eq!(lines_with(&log, "answers again"), 1, "{log}");
    // No busy loop: between the 1st and 5th request at least three backoff delays passed.
    let fetches = engine.requests_to("/fetchAndLock");
    let outage = fetches[4].at.duration_since(fetches[0].at);
    assert!(
        outage >= Duration::from_millis(1750),
        "5 requests within {outage:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_engine_never_ends_the_worker() {
    let closed = format!("http://127.0.0.1:{}/engine-rest", free_port());
    let mut worker = WorkerProcess::spawn("worker", &closed, &["--max-backoff", "1s"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        worker.is_running(),
        "the worker must keep trying: {}",
        worker.stderr()
    );
    let log = worker.stderr();
    assert_eq!(worker.terminate(WAIT), Some(0), "{log}");
    assert_eq!(
        lines_with(&log, "engine unavailable"),
        1,
        "one WARN for the outage: {log}"
    );
    assert!(
        log.contains("Connection refused") || log.contains("connect"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_a_silent_connection_times_out_and_polls_again() {
    let engine = MockEngine::start(vec![]).await;
    // The first fetch never answers in time (a half-open connection, as far as the client knows).
    engine
        .fetch_first(
            1,
            ResponseTemplate::new(200)
                .set_body_json(json!([]))
                .set_delay(Duration::from_secs(120)),
        )
        .await;
    // Long poll 1 s + margin 1 s: the client gives up at 2 s, backs off, and asks again.
    engine
        .worker(&["--long-poll", "1s"])
        .stop_once(WAIT, "a second fetch after the timeout", |_| {
            engine.requests_to("/fetchAndLock").len() >= 2
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_is_retried_after_optimistic_locking_and_5xx_then_followed_up_once() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("k1"))])]).await;
    engine
        .on_sequence(
            "external-task/t1/complete",
            vec![
                ResponseTemplate::new(500).set_body_json(error_body(
                    "OptimisticLockingException",
                    "ENGINE-03005 Execution of 'UPDATE ExecutionEntity' failed.",
                    Some(1),
                )),
                ResponseTemplate::new(503).set_body_string("busy"),
                ResponseTemplate::new(204),
            ],
        )
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    engine
        .quick_worker(&[])
        .stop_once(WAIT, "the follow-up", |_| {
            !engine.requests_to("/message").is_empty()
        })
        .await;
    assert_eq!(engine.requests_to("/t1/complete").len(), 3);
    assert_eq!(
        follow_ups_of_t1(&engine, Some("k1"), Some("pi-t1")).len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_that_keeps_failing_is_given_up_when_the_lock_runs_out_without_a_follow_up() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("k1"))])]).await;
    engine
        .on(
            "external-task/t1/complete",
            ResponseTemplate::new(502).set_body_string("bad gateway"),
        )
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let stopped = engine
        .quick_worker(&["--lock-duration", "1500ms"])
        .stop_once(
            WAIT,
            "the task to be dropped",
            at(
                "camunda_worker_tasks_dropped_total{reason=\"lock_lost\"}",
                1.0,
            ),
        )
        .await;
    assert!(
        engine.requests_to("/t1/complete").len() >= 2,
        "retried while the lock lasted"
    );
    assert!(engine.requests_to("/message").is_empty());
    assert_eq!(stopped.value(COMPLETED), 0.0);
}

/// `complete` reaches the engine and commits, but its reply is lost (here: a proxy's 504); the
/// retry answers 404 because the task is done. The marker holds exactly the owed value this
/// worker's `complete` sent, so the task counts as completed and its follow-up is sent. The
/// history (which would show the completion too) is not asked: a completion with a follow-up is
/// proved by its marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_whose_reply_was_lost_is_completed_and_followed_up_not_dropped() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("k1"))])]).await;
    complete_reply_lost_then_task_gone(&engine).await;
    engine.completed_by("t1", "w-1").await;
    engine.marker("pi-t1", vec![Some(OWED)]).await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let stopped = engine
        .quick_worker(&["--worker-id", "w-1"])
        .stop_once(WAIT, "the follow-up", at(SENT, 1.0))
        .await;
    assert_eq!(
        (stopped.value(COMPLETED), stopped.value(TASK_GONE)),
        (1.0, 0.0),
        "counted as completed, not as gone"
    );
    assert_eq!(stopped.value(ALREADY), 0.0, "sent, not found delivered");
    assert_eq!(engine.requests_to("/t1/complete").len(), 2);
    assert_eq!(
        marker_reads(&engine, "pi-t1").len(),
        1,
        "one read proves the completion"
    );
    assert!(engine.requests_to("/external-task-log").is_empty());
    assert_eq!(
        follow_ups_of_t1(&engine, Some("k1"), Some("pi-t1")).len(),
        1
    );
}

/// The same lost reply on an engine without history (level `none`: the history query finds
/// nothing), and the follow-up delivered meanwhile by another worker (the marker says
/// `delivered:t1`): the marker proves the completion all the same, and the follow-up counts as
/// delivered once its own message matches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_history_a_lost_complete_reply_is_proved_by_the_marker_even_once_delivered() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("k1"))])]).await;
    complete_reply_lost_then_task_gone(&engine).await;
    engine
        .on_get(
            "history/external-task-log",
            ResponseTemplate::new(200).set_body_json(json!([])),
        )
        .await;
    engine.marker("pi-t1", vec![Some("delivered:t1")]).await;
    engine.on("message", no_match()).await;
    let stopped = engine
        .quick_worker(&[])
        .stop_once(
            WAIT,
            "the follow-up to count as delivered",
            at(ALREADY, 1.0),
        )
        .await;
    assert_eq!((stopped.value(COMPLETED), stopped.value(SENT)), (1.0, 1.0));
    assert!(engine.requests_to("/external-task-log").is_empty());
    assert_eq!(
        marker_reads(&engine, "pi-t1").len(),
        2,
        "one read proves the completion, one decides the mismatch"
    );
    assert_eq!(
        follow_ups_of_t1(&engine, Some("k1"), Some("pi-t1")).len(),
        1
    );
}

/// A first 404 with no lost reply before it is a task that is really gone: no follow-up, and
/// the engine's state (the marker, the history) is not even asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_answered_404_at_once_is_dropped_without_reading_the_engine_state() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("k1"))])]).await;
    engine.on("external-task/t1/complete", task_gone()).await;
    engine.completed_by("t1", "someone-else").await;
    engine.marker("pi-t1", vec![Some(OWED)]).await;
    engine.on("message", ResponseTemplate::new(204)).await;
    engine
        .quick_worker(&[])
        .stop_once(WAIT, "the task to be dropped", at(TASK_GONE, 1.0))
        .await;
    assert!(engine.requests_to("/history/external-task-log").is_empty());
    assert!(marker_reads(&engine, "pi-t1").is_empty());
    assert!(engine.requests_to("/message").is_empty());
}

/// Camunda 7 does not buffer messages: one that comes before the instance reaches the catch event
/// matches nothing. The marker, still owed to this task, says "not waiting yet" (read at the first
/// mismatch, not at each): the same message is tried again with backoff until it matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_comes_before_the_wait_is_retried_until_it_matches() {
    let engine = MockEngine::one_task("k1").await;
    engine.marker("pi-t1", vec![Some(OWED)]).await;
    engine.message_waits("pi-t1", &[]).await;
    engine
        .on_sequence(
            "message",
            vec![no_match(), no_match(), ResponseTemplate::new(204)],
        )
        .await;
    let stopped = engine
        .quick_worker(&[])
        .stop_once(WAIT, "the follow-up to be sent", at(SENT, 1.0))
        .await;
    assert_eq!(
        follow_ups_of_t1(&engine, Some("k1"), Some("pi-t1")).len(),
        3
    );
    assert_eq!(
        stopped.value(RETRIED),
        2.0,
        "two messages found no wait yet"
    );
    assert_eq!(
        (stopped.value(ALREADY), stopped.sum(GIVEN_UP, &[])),
        (0.0, 0.0)
    );
    assert_eq!(
        marker_reads(&engine, "pi-t1").len(),
        1,
        "read at the first mismatch only"
    );
    assert!(
        engine.requests_to("/event-subscription").is_empty(),
        "no diagnosis after a read that found the marker owed"
    );
}

/// A message that never matches (the instance does not reach the catch event) is retried until
/// `--correlation-timeout`, reading the marker at the first mismatch and every fourth, then given
/// up with one ERROR that names the target, and an incident on the instance (which waits for no
/// message, so on its own execution) that Cockpit shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_never_matches_is_given_up_after_the_correlation_timeout_with_an_error() {
    let engine = MockEngine::one_task("order-7").await;
    engine.marker("pi-t1", vec![Some(OWED)]).await;
    engine.message_waits("pi-t1", &[]).await;
    engine.takes_incidents().await;
    engine.on("message", no_match()).await;
    let stopped = engine
        .quick_worker(&["--correlation-timeout", "1s"])
        .stop_once(WAIT, "the incident after the correlation timeout", |_| {
            !engine.requests_to("/create-incident").is_empty()
        })
        .await;
    assert_eq!(
        stopped.value("camunda_worker_follow_ups_given_up_total{reason=\"timeout\"}"),
        1.0
    );
    let log = stopped.log;
    assert_eq!(lines_with(&log, " ERROR "), 1, "one ERROR: {log}");
    let line = log
        .lines()
        .find(|l| l.contains("correlation-timeout"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("order-7"), "names the business key: {line}");
    assert!(line.contains("pi-t1"), "names the process instance: {line}");
    let messages = follow_ups_of_t1(&engine, Some("order-7"), Some("pi-t1")).len();
    assert!(
        (2..=10).contains(&messages),
        "retried with backoff, not in a loop: {messages}"
    );
    assert_eq!(
        marker_reads(&engine, "pi-t1").len(),
        1 + (messages - 1) / 4,
        "read at the first mismatch and every fourth, of {messages}"
    );
    let incidents = engine.requests_to("/incident");
    assert_eq!(incidents.len(), 1, "asked once whether one is open");
    assert_eq!(
        (
            incidents[0].param("incidentType"),
            incidents[0].param("configuration")
        ),
        (Some("camundaWorkerFollowUp"), Some("t1"))
    );
    let waits = engine.requests_to("/event-subscription");
    assert!(
        waits
            .iter()
            .all(|w| w.param("processInstanceId") == Some("pi-t1")
                && w.param("eventType") == Some("message")
                && w.param("eventName").is_none()),
        "{waits:?}"
    );
    let created = engine.requests_to("/create-incident");
    assert_eq!(created.len(), 1);
    assert_eq!(
        created[0].path,
        "/engine-rest/execution/pi-t1/create-incident"
    );
    assert_eq!(
        created[0].body["incidentType"],
        json!("camundaWorkerFollowUp")
    );
    assert_eq!(created[0].body["configuration"], json!("t1"));
    let message = created[0].body["message"].as_str().unwrap();
    assert!(
        message.contains("t1") && message.contains("correlation-timeout"),
        "{message}"
    );
}

/// The message reaches the engine and is correlated, but its reply is lost (a proxy's 504). The
/// retry matches nothing — the marker it names was flipped — and the marker, read at once, says
/// `delivered:t1`, or is gone with the instance, which ran to its end: delivered, counted once,
/// no ERROR, nothing correlated twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_reply_was_lost_counts_as_delivered_once_the_marker_shows_it() {
    for marker in [Some("delivered:t1"), None] {
        let engine = MockEngine::one_task("k1").await;
        engine.marker("pi-t1", vec![marker]).await;
        engine
            .on_sequence("message", vec![bad_gateway(), no_match()])
            .await;
        let stopped = engine
            .quick_worker(&[])
            .stop_once(WAIT, "the follow-up to count as delivered", at(SENT, 1.0))
            .await;
        assert_eq!(
            (stopped.value(ALREADY), stopped.sum(GIVEN_UP, &[])),
            (1.0, 0.0),
            "marker {marker:?}"
        );
        assert_eq!(
            follow_ups_of_t1(&engine, Some("k1"), Some("pi-t1")).len(),
            2,
            "the repeat names the same owed marker"
        );
        assert_eq!(marker_reads(&engine, "pi-t1").len(), 1);
        let log = stopped.worker.stderr();
        assert_eq!(lines_with(&log, " ERROR "), 0, "{log}");
    }
}

/// A process that loops back to the same catch event waits again right after our message, owing
/// the next round's follow-up (a new task, a new owed marker). The retry after the lost reply
/// names our owed value, so it cannot match the new wait, and the marker of a later round shows
/// that ours arrived: counted as delivered, not retried as missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_is_not_mistaken_for_a_missing_message_when_the_process_loops_back() {
    let engine = MockEngine::one_task("k1").await;
    let next_round = "owed:messageSending:1796236000000:t2";
    engine.marker("pi-t1", vec![Some(next_round)]).await;
    engine
        .on_sequence("message", vec![bad_gateway(), no_match()])
        .await;
    let stopped = engine
        .quick_worker(&[])
        .stop_once(
            WAIT,
            "the follow-up to count as delivered",
            at(ALREADY, 1.0),
        )
        .await;
    assert_eq!(stopped.sum(GIVEN_UP, &[]), 0.0);
    let messages = follow_ups_of_t1(&engine, Some("k1"), Some("pi-t1"));
    assert_eq!(messages.len(), 2);
    assert!(
        messages
            .iter()
            .all(|m| !m.body.to_string().contains(next_round)),
        "the new wait got no message of ours"
    );
}

/// Correlating by business key alone, a key shared by several waiting instances makes the engine
/// refuse the message as ambiguous: no retry can fix that. One ERROR that names the key and the
/// flag, no marker read, and an incident on the execution that waits for the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_key_shared_by_several_instances_is_reported_once_and_not_retried() {
    let engine = MockEngine::one_task("shared").await;
    engine
        .message_waits("pi-t1", &[("sample_response", "ex-wait-1")])
        .await;
    engine.takes_incidents().await;
    engine.marker("pi-t1", vec![Some(OWED)]).await;
    engine
        .on(
            "message",
            ResponseTemplate::new(400).set_body_json(error_body(
                "RestException",
                MANY_MATCH,
                Some(0),
            )),
        )
        .await;
    let stopped = engine
        .quick_worker(&["--correlate-by", "business-key"])
        .stop_once(WAIT, "the incident about the shared key", |_| {
            !engine.requests_to("/create-incident").is_empty()
        })
        .await;
    assert_eq!(
        (
            stopped.value("camunda_worker_follow_ups_given_up_total{reason=\"ambiguous\"}"),
            stopped.value(RETRIED)
        ),
        (1.0, 0.0)
    );
    let log = stopped.log;
    assert_eq!(
        follow_ups_of_t1(&engine, Some("shared"), None).len(),
        1,
        "not retried"
    );
    assert!(
        marker_reads(&engine, "pi-t1").is_empty(),
        "an ambiguous message is no mismatch to decide"
    );
    assert_eq!(lines_with(&log, " ERROR "), 1, "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("several executions"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("ERROR") && line.contains("shared") && line.contains("--correlate-by"),
        "{line}"
    );
    let created = engine.requests_to("/create-incident");
    assert_eq!(created.len(), 1);
    assert_eq!(
        created[0].path, "/engine-rest/execution/ex-wait-1/create-incident",
        "on the waiting execution"
    );
    assert_eq!(created[0].body["configuration"], json!("t1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlating_by_process_instance_sends_the_instance_id() {
    let engine = MockEngine::one_task("shared").await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let message = engine
        .first_request(
            engine.quick_worker(&["--correlate-by", "both"]),
            "/message",
            WAIT,
        )
        .await;
    let owed = owed_by_complete(&engine, "t1");
    assert_eq!(
        message.body,
        json!({
            "messageName": "sample_response",
            "businessKey": "shared",
            "processInstanceId": "pi-t1",
            "correlationKeys": {MARKER: {"type": "String", "value": owed, "valueInfo": {}}},
            "processVariables": {
                MARKER: {"type": "String", "value": "delivered:t1", "valueInfo": {}}
            }
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_refused_with_5xx_is_retried() {
    let engine = MockEngine::one_task("k1").await;
    engine
        .on_sequence(
            "message",
            vec![
                ResponseTemplate::new(500).set_body_json(error_body(
                    "ProcessEngineException",
                    "database gone",
                    Some(0),
                )),
                ResponseTemplate::new(204),
            ],
        )
        .await;
    engine
        .quick_worker(&[])
        .stop_once(WAIT, "the retried follow-up", |_| {
            engine.requests_to("/message").len() == 2
        })
        .await;
    assert_eq!(
        follow_ups_of_t1(&engine, Some("k1"), Some("pi-t1")).len(),
        2
    );
}

/// On a cluster, two nodes (or two replicas) may correlate one instance at once: the loser gets
/// `OptimisticLockingException` (500, code 1). The winner flipped the marker, so the next attempt
/// matches nothing, and that mismatch reads the marker at once (not only at every fourth):
/// `delivered:t1`, one correlation, counted as delivered, no ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_loses_an_optimistic_locking_race_is_delivered_once_without_an_error() {
    let engine = MockEngine::one_task("k1").await;
    engine
        .marker("pi-t1", vec![Some(OWED), Some("delivered:t1")])
        .await;
    engine
        .on_sequence(
            "message",
            vec![
                no_match(),
                ResponseTemplate::new(500).set_body_json(error_body(
                    "OptimisticLockingException",
                    "ENGINE-03005 Execution of 'DELETE EventSubscriptionEntity[s1]' failed. Entity was updated by another transaction concurrently.",
                    Some(1),
                )),
                no_match(),
            ],
        )
        .await;
    let stopped = engine
        .quick_worker(&[])
        .stop_once(
            WAIT,
            "the follow-up to count as delivered",
            at(ALREADY, 1.0),
        )
        .await;
    assert_eq!(stopped.sum(GIVEN_UP, &[]), 0.0);
    assert_eq!(
        follow_ups_of_t1(&engine, Some("k1"), Some("pi-t1")).len(),
        3,
        "decided at the mismatch right after the race"
    );
    assert_eq!(marker_reads(&engine, "pi-t1").len(), 2);
    let log = stopped.worker.stderr();
    assert_eq!(lines_with(&log, " ERROR "), 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_without_business_key_becomes_an_incident_instead_of_a_lost_message() {
    let engine = MockEngine::start(vec![json!([task("t1", None)])]).await;
    engine
        .on("external-task/t1/failure", ResponseTemplate::new(204))
        .await;
    engine
        .on("external-task/t1/complete", ResponseTemplate::new(204))
        .await;
    let failure = engine
        .first_request(engine.worker(&[]), "/t1/failure", WAIT)
        .await;
    assert!(
        engine.requests_to("/t1/complete").is_empty(),
        "not completed"
    );
    assert_eq!(failure.body["retries"], json!(0), "an incident at once");
    let message = failure.body["errorMessage"].as_str().unwrap();
    assert!(message.contains("no business key"), "{message}");
    assert!(failure.body["errorDetails"]
        .as_str()
        .unwrap()
        .contains("--correlate-by process-instance"));
}

/// A library handler that fails, panics or takes its time, depending on the task id.
struct Picky;

impl Handler for Picky {
    async fn handle(&self, task: &ExternalTask) -> Result<TaskResult, HandlerError> {
        match task.id.as_str() {
            "slow" => {
                tokio::time::sleep(Duration::from_millis(1700)).await;
                Ok(TaskResult::Complete {
                    variables: Default::default(),
                    follow_up: None,
                })
            }
            "boom" => panic!("handler bug"),
            _ => Err(HandlerError::transient(
                "inventory service down",
                "GET /stock: connection refused",
            )),
        }
    }
}

/// The daemon in this process against `engine`, serving with [`Picky`], reconciler off.
fn spawn_picky(engine: &MockEngine, flags: &[&str]) -> TestWorker {
    let mut all = vec!["--reconcile-interval", "0"];
    all.extend(flags);
    TestWorker::spawn(&engine.url(), &all, Picky)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_error_is_reported_with_message_details_and_decreasing_retries() {
    let mut first = task("fresh", Some("k1"));
    first["retries"] = json!(null);
    let mut again = task("again", Some("k2"));
    again["retries"] = json!(2);
    let engine = MockEngine::start(vec![json!([first, again])]).await;
    engine
        .on(
            "external-task/(fresh|again)/failure",
            ResponseTemplate::new(204),
        )
        .await;
    let worker = spawn_picky(
        &engine,
        &[
            "--retries",
            "3",
            "--retry-timeout",
            "45s",
            "--worker-id",
            "w-1",
        ],
    );
    eventually(WAIT, "two failure reports", || async {
        (engine.requests_to("/failure").len() == 2).then_some(())
    })
    .await;
    worker.shutdown().await;
    let fresh = &engine.requests_to("/fresh/failure")[0].body;
    assert_eq!(
        fresh,
        &json!({
            "workerId": "w-1",
            "errorMessage": "inventory service down",
            "errorDetails": "GET /stock: connection refused",
            "retries": 3,
            "retryTimeout": 45000
        })
    );
    assert_eq!(
        engine.requests_to("/again/failure")[0].body["retries"],
        json!(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_contained_and_reported() {
    let engine = MockEngine::start(vec![
        json!([task("boom", Some("k1"))]),
        json!([task("other", Some("k2"))]),
    ])
    .await;
    engine
        .on(
            "external-task/(boom|other)/failure",
            ResponseTemplate::new(204),
        )
        .await;
    let worker = spawn_picky(&engine, &[]);
    eventually(
        WAIT,
        "both tasks reported (the loop survived the panic)",
        || async { (engine.requests_to("/failure").len() == 2).then_some(()) },
    )
    .await;
    worker.shutdown().await;
    let boom = &engine.requests_to("/boom/failure")[0].body;
    assert_eq!(boom["errorMessage"], json!("the handler panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_running_past_half_its_lock_gets_the_lock_extended() {
    let engine = MockEngine::start(vec![json!([task("slow", Some("k1"))])]).await;
    engine
        .on("external-task/slow/extendLock", ResponseTemplate::new(204))
        .await;
    engine
        .on("external-task/slow/complete", ResponseTemplate::new(204))
        .await;
    let worker = spawn_picky(&engine, &["--lock-duration", "1s", "--worker-id", "w-1"]);
    eventually(WAIT, "the completion", || async {
        (!engine.requests_to("/slow/complete").is_empty()).then_some(())
    })
    .await;
    worker.shutdown().await;
    let extensions = engine.requests_to("/slow/extendLock");
    // 1.7 s of work with a 1 s lock: extended at ~0.5 s, ~1.0 s and ~1.5 s.
    assert!(extensions.len() >= 2, "{} extensions", extensions.len());
    assert_eq!(
        extensions[0].body,
        json!({"workerId": "w-1", "newDuration": 1000})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_give_one_clear_error_and_backoff_without_leaking_the_password() {
    let engine = MockEngine::start(vec![]).await;
    engine.fetch_first(1000, ResponseTemplate::new(401)).await;
    let mut worker = engine.worker(&["--username", "alice", "--password", "hunter2-secret"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(worker.is_running());
    let log = worker.stderr();
    assert_eq!(worker.terminate(WAIT), Some(0));
    assert_eq!(
        lines_with(&log, "engine rejected the credentials for user alice"),
        1,
        "{log}"
    );
    assert!(
        !log.contains("hunter2-secret"),
        "the password leaked: {log}"
    );
    let attempts = engine.requests_to("/fetchAndLock").len();
    assert!(
        (2..=6).contains(&attempts),
        "backoff, no retry storm: {attempts} requests in 3 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_is_not_json_is_logged_with_an_excerpt_and_treated_as_transient() {
    let engine = MockEngine::start(vec![]).await;
    engine
        .fetch_first(
            1,
            ResponseTemplate::new(200)
                .set_body_string("<html><body>502 from the ingress</body></html>"),
        )
        .await;
    let log = engine
        .worker(&[])
        .stop_once(WAIT, "polling to go on", |_| {
            engine.requests_to("/fetchAndLock").len() >= 3
        })
        .await
        .log;
    let line = log
        .lines()
        .find(|l| l.contains("unexpected body"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("WARN") && line.contains("502 from the ingress"),
        "{line}"
    );
    assert!(!log.contains("panicked"));
}

/// A mock that cannot cancel a parked long poll (as an engine without
/// `fetch-and-lock-unique-worker-request`): every fetch is held 30 s, and the shutdown sweep
/// (`GET /external-task`) finds `locked` still locked for the worker.
async fn engine_keeping_polls_parked(locked: serde_json::Value) -> MockEngine {
    let engine = MockEngine::start(vec![]).await;
    engine
        .fetch_first(
            100,
            ResponseTemplate::new(200)
                .set_body_json(json!([]))
                .set_delay(Duration::from_secs(30)),
        )
        .await;
    engine
        .on_get(
            "external-task",
            ResponseTemplate::new(200).set_body_json(locked),
        )
        .await;
    engine
}

/// An engine that cannot cancel a parked long poll (no `fetch-and-lock-unique-worker-request`)
/// keeps it parked: the worker asks, waits a moment, sweeps — and still exits 0 within its grace,
/// far sooner than the 30 s long poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_never_waits_past_the_grace_for_a_long_poll_the_engine_keeps_parked() {
    let engine = engine_keeping_polls_parked(json!([])).await;
    let mut worker = engine.worker(&["--long-poll", "30s", "--shutdown-grace", "3s"]);
    eventually(WAIT, "the long poll to be open", || async {
        (!engine.requests_to("/fetchAndLock").is_empty()).then_some(())
    })
    .await;
    // Bounded far below the 30 s long poll: the grace (3 s) ends the sweep.
    assert_eq!(
        worker.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        worker.stderr()
    );
    let cancels = engine
        .requests_to("/fetchAndLock")
        .iter()
        .filter(|r| r.body["maxTasks"] == json!(0))
        .count();
    assert_eq!(
        cancels, 1,
        "the worker asked the engine to end its parked poll"
    );
    assert!(
        engine.requests_to("/external-task").len() >= 2,
        "swept while the grace lasted"
    );
    assert!(
        worker
            .stderr()
            .contains("fetch-and-lock-unique-worker-request"),
        "{}",
        worker.stderr()
    );
}

/// SIGTERM sends the follow-ups still in their delay at once. One that does not go through then
/// (t2: its instance does not wait yet) is not retried until the grace ends: it stays owed in the
/// engine for the reconciler of any worker, and the daemon says so in one WARN with the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_pending_follow_ups_now_instead_of_after_the_delay() {
    let engine = MockEngine::start(vec![json!([
        task("t1", Some("k1")),
        task("t2", Some("k2"))
    ])])
    .await;
    engine
        .on("external-task/t[12]/complete", ResponseTemplate::new(204))
        .await;
    engine.marker("pi-t2", vec![Some(OWED)]).await;
    engine
        .on_message_with(json!({"processInstanceId": "pi-t2"}), no_match())
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let mut worker = engine.worker(&["--correlation-delay", "10m"]);
    eventually(WAIT, "both completions", || async {
        (engine.requests_to("/complete").len() == 2).then_some(())
    })
    .await;
    // Well within the 25 s grace: the follow-up that does not go through does not hold it.
    assert_eq!(worker.terminate(WAIT), Some(0), "{}", worker.stderr());
    let messages = engine.requests_to("/message");
    let to = |instance: &str| {
        messages
            .iter()
            .filter(|m| m.body["processInstanceId"] == json!(instance))
            .count()
    };
    assert_eq!(
        (to("pi-t1"), to("pi-t2")),
        (1, 1),
        "the pending follow-ups were sent on shutdown, once each"
    );
    let log = worker.stderr();
    assert_eq!(
        lines_with(&log, "not delivered before shutdown"),
        1,
        "{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("not delivered before shutdown"))
        .unwrap();
    assert!(
        line.contains(" WARN ") && line.contains("1 follow-up not"),
        "{line}"
    );
    assert_eq!(lines_with(&log, " ERROR "), 0, "{log}");
}

/// What holds the grace is a task still being completed (t2: the engine keeps failing, the lock
/// lasts): a second signal ends the process at once, an expired grace exits non-zero. A
/// follow-up that does not go through (t1) never holds it: it is left owed in the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_and_an_expired_grace_exits_non_zero() {
    for (grace, second_signal, expected) in [("60s", true, 130), ("1s", false, 1)] {
        let engine = MockEngine::start(vec![json!([
            task("t1", Some("k1")),
            task("t2", Some("k2"))
        ])])
        .await;
        engine
            .on("external-task/t1/complete", ResponseTemplate::new(204))
            .await;
        engine
            .on(
                "external-task/t2/complete",
                ResponseTemplate::new(500).set_body_json(error_body(
                    "ProcessEngineException",
                    "database gone",
                    Some(0),
                )),
            )
            .await;
        engine.on("message", no_match()).await;
        engine.marker("pi-t1", vec![Some(OWED)]).await;
        engine.message_waits("pi-t1", &[]).await;
        let mut worker = engine.quick_worker(&["--lock-duration", "5m", "--shutdown-grace", grace]);
        eventually(
            WAIT,
            "a retried follow-up and a retried complete",
            || async {
                (engine.requests_to("/message").len() >= 2
                    && engine.requests_to("/t2/complete").len() >= 2)
                    .then_some(())
            },
        )
        .await;
        worker.signal("TERM");
        tokio::time::sleep(Duration::from_millis(300)).await;
        if second_signal {
            worker.signal("TERM");
        }
        assert_eq!(
            worker.wait_exit(Duration::from_secs(10)),
            Some(expected),
            "{}",
            worker.stderr()
        );
        if !second_signal {
            let log = worker.stderr();
            assert_eq!(
                lines_with(&log, &format!("shutdown grace of {grace} is over")),
                1,
                "{log}"
            );
            assert_eq!(
                lines_with(&log, "complete not sent, the lock will expire"),
                1,
                "{log}"
            );
            assert_eq!(
                lines_with(&log, "1 follow-up not delivered before shutdown"),
                1,
                "{log}"
            );
        }
    }
}

/// The reconciler finds owed markers past their due time with one range query on the marker's
/// value, and delivers each with the marker's own compare-and-set message, by process instance
/// id; a marker of a topic that merely starts like ours is left alone, a failed recovery does not
/// end the pass, and one that failed is tried again only after its wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_delivers_owed_markers_past_due_by_compare_and_set() {
    let engine = MockEngine::start(vec![]).await;
    let owed = |topic: &str, task: &str| format!("owed:{topic}:1700000000000:{task}");
    let variable = |instance: &str, value: &str| {
        json!({"name": "camundaWorkerFollowUp", "type": "String", "value": value,
               "processInstanceId": instance})
    };
    engine
        .on(
            "variable-instance",
            ResponseTemplate::new(200).set_body_json(json!([
                variable("lost-0", &owed("messageSending", "t0")),
                variable("lost-1", &owed("messageSending", "t1")),
                variable("other-1", &owed("messageSending:other", "t2")),
            ])),
        )
        .await;
    // The first recovery of a pass fails (the engine errs): the pass goes on with the next.
    engine
        .on_message_with(
            json!({"processInstanceId": "lost-0"}),
            ResponseTemplate::new(500).set_body_json(error_body(
                "ProcessEngineException",
                "database gone",
                Some(0),
            )),
        )
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    engine
        .on_get(
            "incident",
            ResponseTemplate::new(200).set_body_json(json!([])),
        )
        .await;
    let client = camunda_worker::engine::EngineClient::new(
        camunda_worker::engine::EngineSettings::new(engine.url().parse().unwrap()),
    )
    .unwrap();
    let metrics = Arc::new(camunda_worker::metrics::Metrics::new());
    let follow_ups = camunda_worker::correlation::FollowUps::new(
        client.clone(),
        Arc::clone(&metrics),
        Default::default(),
        tokio_util::task::TaskTracker::new(),
        CancellationToken::new(),
        CancellationToken::new(),
    );
    let mut reconciler = camunda_worker::reconciler::Reconciler::new(
        client,
        follow_ups,
        Arc::clone(&metrics),
        Default::default(),
        "messageSending",
    )
    .with_first_retry_wait(Duration::from_secs(3600));
    let first = reconciler.pass().await.unwrap();
    assert_eq!(
        (first.overdue, first.recovered, first.failed),
        (2, 2 - 1, 1),
        "a failed recovery does not end the pass: {first:?}"
    );
    let query = &engine.requests_to("/variable-instance")[0].body;
    assert_eq!(query["variableName"], json!("camundaWorkerFollowUp"));
    assert_eq!(
        query["variableValues"][0],
        json!({"name": "camundaWorkerFollowUp", "operator": "gteq", "value": "owed:messageSending:"})
    );
    let second = reconciler.pass().await.unwrap();
    assert_eq!(
        (second.recovered, second.skipped),
        (1, 1),
        "lost-1 again (the mock still lists it), lost-0 waits for its retry: {second:?}"
    );
    let recovered: Vec<_> = engine
        .requests_to("/message")
        .into_iter()
        .filter(|r| r.body["processInstanceId"] == json!("lost-1"))
        .collect();
    assert_eq!(
        recovered[0].body,
        json!({
            "messageName": "sample_response",
            "processInstanceId": "lost-1",
            "correlationKeys": {"camundaWorkerFollowUp":
                {"type": "String", "value": owed("messageSending", "t1"), "valueInfo": {}}},
            "processVariables": {"camundaWorkerFollowUp":
                {"type": "String", "value": "delivered:t1", "valueInfo": {}}},
        })
    );
    assert!(engine
        .requests_to("/message")
        .iter()
        .all(|r| r.body["processInstanceId"] != json!("other-1")));
    let exposition = metrics.render();
    assert_eq!(
        crate::support::metric_value(
            &exposition,
            "camunda_worker_follow_ups_recovered_total{topic=\"messageSending\"}"
        ),
        2.0,
        "{exposition}"
    );
}

/// A handler that runs past its first lock gets the lock extended; `complete` is then retried
/// until the *extended* lock runs out, not the first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_is_retried_until_the_extended_lock_runs_out() {
    let engine = MockEngine::start(vec![json!([task("slow", Some("k1"))])]).await;
    engine
        .on("external-task/slow/extendLock", ResponseTemplate::new(204))
        .await;
    engine
        .on_sequence(
            "external-task/slow/complete",
            vec![
                ResponseTemplate::new(502).set_body_string("bad gateway"),
                ResponseTemplate::new(204),
            ],
        )
        .await;
    // The handler ends at 1.7 s; the first lock (1 s) ran out long before, the extended one did not.
    let worker = spawn_picky(&engine, &["--lock-duration", "1s"]);
    eventually(WAIT, "the second complete", || async {
        (engine.requests_to("/slow/complete").len() == 2).then_some(())
    })
    .await;
    worker.shutdown().await;
}

/// A server (or proxy) that closed an idle keep-alive connection in the instant the worker reuses
/// it: the call is sent again at once on a new connection — no backoff, no warning, no outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_a_connection_the_server_closed_is_sent_again_at_once() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("k1"))])]).await;
    // Every later poll holds its connection, so the one `complete` used is the only idle one
    // when the follow-up starts a second later.
    engine.park_polls(Duration::from_secs(30)).await;
    engine
        .on("external-task/t1/complete", ResponseTemplate::new(204))
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let proxy = FaultProxy::start(&engine.server.uri()).await;
    proxy.close_idle_after(Some(Duration::from_millis(500)));
    let stopped = WorkerProcess::spawn(
        "worker",
        &format!("{}/engine-rest", proxy.url()),
        &[
            "--correlation-delay",
            "1s",
            "--reconcile-interval",
            "0",
            "--shutdown-grace",
            "2s",
        ],
    )
    .stop_once(WAIT, "the follow-up", at(SENT, 1.0))
    .await;
    assert!(
        proxy.applied_count(FaultKind::StaleClose) >= 1,
        "the race was provoked"
    );
    assert!(
        stopped.sum("camunda_worker_engine_stale_connection_retries_total", &[]) >= 1.0,
        "{}",
        stopped.metrics
    );
    assert_eq!(
        stopped.sum(
            "camunda_worker_fetch_requests_total",
            &["outcome=\"error\""]
        ),
        0.0
    );
    // The log before SIGTERM: stopping against this mock (which cannot cancel a parked poll) warns.
    let log = stopped.log;
    assert_eq!(lines_with(&log, " WARN "), 0, "{log}");
    assert_eq!(lines_with(&log, "engine unavailable"), 0, "{log}");
}

/// The engine keeps a long poll parked after the worker hung up, and may still lock tasks for the
/// stopping worker's id; the shutdown sweep gives them back until that poll has timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_unlocks_tasks_the_abandoned_long_poll_locked_for_this_worker() {
    let engine = engine_keeping_polls_parked(json!([task("late", Some("k"))])).await;
    engine
        .on("external-task/late/unlock", ResponseTemplate::new(204))
        .await;
    let mut worker = engine.worker(&["--long-poll", "2s", "--worker-id", "stopping-1"]);
    eventually(WAIT, "the long poll to be open", || async {
        (!engine.requests_to("/fetchAndLock").is_empty()).then_some(())
    })
    .await;
    assert_eq!(worker.terminate(WAIT), Some(0), "{}", worker.stderr());
    assert!(
        !engine.requests_to("/late/unlock").is_empty(),
        "{}",
        worker.stderr()
    );
    let sweeps = engine.requests_to("/external-task");
    assert!(
        sweeps.len() >= 2,
        "repeated while the abandoned poll could still lock: {}",
        sweeps.len()
    );
}

/// A gateway in front of the engine may turn its 204 into another 2xx: a 200 to `complete` and
/// to the message is a success all the same — completed once, followed up once, nothing retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_instead_of_204_to_complete_and_to_the_message_counts_as_success() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("k1"))])]).await;
    engine
        .on("external-task/t1/complete", ResponseTemplate::new(200))
        .await;
    engine
        .on(
            "message",
            ResponseTemplate::new(200).set_body_json(json!([{"resultType": "Execution"}])),
        )
        .await;
    let stopped = engine
        .quick_worker(&[])
        .stop_once(WAIT, "the follow-up", at(SENT, 1.0))
        .await;
    let count = |series: &str| stopped.value(series);
    assert_eq!(
        (count(COMPLETED), count(ALREADY), count(RETRIED)),
        (1.0, 0.0, 0.0),
        "{}",
        stopped.metrics
    );
    assert_eq!(stopped.sum("camunda_worker_tasks_dropped_total", &[]), 0.0);
    assert_eq!(engine.requests_to("/t1/complete").len(), 1);
    assert_eq!(
        follow_ups_of_t1(&engine, Some("k1"), Some("pi-t1")).len(),
        1
    );
}

/// A 400 to `complete` that is not about the lock (here: a variable the engine cannot
/// deserialize) would come back on every retry and from every worker: the task is reported as a
/// failure with no retries left (an incident, with the engine's message in its details), and no
/// message follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_refused_for_a_bad_variable_becomes_a_failure_without_retries() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("k1"))])]).await;
    let refusal = "Cannot deserialize object in variable 'doc': SPIN/JACKSON-JSON-01004 Unable to find 'Json' data format";
    engine
        .on(
            "external-task/t1/complete",
            ResponseTemplate::new(400).set_body_json(json!({
                "type": "RestException",
                "message": refusal,
                "code": null
            })),
        )
        .await;
    engine
        .on("external-task/t1/failure", ResponseTemplate::new(204))
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let dropped = at("camunda_worker_tasks_dropped_total{reason=\"failed\"}", 1.0);
    let stopped = engine
        .quick_worker(&["--worker-id", "w-1"])
        .stop_once(
            WAIT,
            "the failure report, and the task counted failed",
            |m| !engine.requests_to("/t1/failure").is_empty() && dropped(m),
        )
        .await;
    let failure = engine.requests_to("/t1/failure").remove(0);
    assert_eq!(
        (
            stopped.value(COMPLETED),
            stopped.value("camunda_worker_tasks_failed_total")
        ),
        (0.0, 1.0)
    );
    assert_eq!(engine.requests_to("/t1/complete").len(), 1, "not retried");
    assert_eq!(engine.requests_to("/t1/failure").len(), 1);
    assert_eq!(failure.body["workerId"], json!("w-1"));
    assert_eq!(failure.body["retries"], json!(0), "an incident at once");
    assert!(
        failure.body["errorMessage"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        failure.body
    );
    let details = failure.body["errorDetails"].as_str().unwrap_or_default();
    assert!(details.contains(refusal), "{details}");
    assert!(engine.requests_to("/message").is_empty());
}

/// A 404 page that is not the engine's (a proxy's HTML, no engine error body) says nothing about
/// the task: it is an outage, retried, not "task gone". The next `complete` goes through, and the
/// follow-up is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_404_page_to_complete_is_an_outage_that_is_retried_not_a_task_gone() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("k1"))])]).await;
    engine
        .on_sequence(
            "external-task/t1/complete",
            vec![
                ResponseTemplate::new(404).set_body_raw("<html>Not Found</html>", "text/html"),
                ResponseTemplate::new(204),
            ],
        )
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let stopped = engine
        .quick_worker(&[])
        .stop_once(WAIT, "the follow-up", at(SENT, 1.0))
        .await;
    assert_eq!(
        (stopped.value(COMPLETED), stopped.value(TASK_GONE)),
        (1.0, 0.0),
        "completed, not dropped"
    );
    let log = stopped.log;
    assert_eq!(engine.requests_to("/t1/complete").len(), 2, "retried");
    assert_eq!(
        follow_ups_of_t1(&engine, Some("k1"), Some("pi-t1")).len(),
        1
    );
    assert_eq!(
        lines_with(&log, "engine unavailable"),
        1,
        "an outage: {log}"
    );
}
