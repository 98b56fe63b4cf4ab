//! What the mock-engine fault tests share: the engine's exact error replies, what the worker sent
//! (marker reads, the owed marker, the one follow-up of `t1`), the counters they judge by, and a
//! handler that fails on request.

use std::time::Duration;

use camunda_worker::engine::ExternalTask;
use camunda_worker::handler::{Handler, HandlerError, TaskResult};
use serde_json::json;
use wiremock::ResponseTemplate;

use super::mock::{error_body, follow_up_message, owed_marker, MockEngine, Seen, MARKER};
use super::{metric_value, TestWorker};

pub const WAIT: Duration = Duration::from_secs(15);

pub const NO_MATCH: &str = "org.camunda.bpm.engine.MismatchingMessageCorrelationException: Cannot correlate message 'sample_response': No process definition or execution matches the parameters";
pub const MANY_MATCH: &str = "org.camunda.bpm.engine.MismatchingMessageCorrelationException: ENGINE-13031 Cannot correlate a message with name 'sample_response' to a single execution. 2 executions match the correlation keys: CorrelationSet [businessKey=shared, processInstanceId=null, processDefinitionId=null, correlationKeys=null, localCorrelationKeys=null, tenantId=null, isTenantIdSet=false, isExecutionsOnly=false]";

pub fn no_match() -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(error_body("RestException", NO_MATCH, Some(0)))
}

pub fn bad_gateway() -> ResponseTemplate {
    ResponseTemplate::new(504).set_body_string("<html>504 Gateway Time-out</html>")
}

/// The engine's 404 for task t1, which no longer exists.
pub fn task_gone() -> ResponseTemplate {
    ResponseTemplate::new(404).set_body_json(error_body(
        "RestException",
        "External task with id t1 does not exist",
        Some(0),
    ))
}

/// `complete` of t1 reaches the engine, but its reply is lost (a proxy's 504); the retry finds the
/// task gone, because it was completed.
pub async fn complete_reply_lost_then_task_gone(engine: &MockEngine) {
    engine
        .on_sequence(
            "external-task/t1/complete",
            vec![bad_gateway(), task_gone()],
        )
        .await;
}

/// The marker reads of a mock: `GET /variable-instance` (the reconciler's range query is a POST),
/// each checked to ask for one instance's marker, undeserialized.
pub fn marker_reads(engine: &MockEngine, instance: &str) -> Vec<Seen> {
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
pub fn owed_by_complete(engine: &MockEngine, task_id: &str) -> String {
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
pub fn follow_ups_of_t1(
    engine: &MockEngine,
    key: Option<&str>,
    instance: Option<&str>,
) -> Vec<Seen> {
    let expected = follow_up_message(&owed_by_complete(engine, "t1"), "t1", key, instance);
    let messages = engine.requests_to("/message");
    for message in &messages {
        assert_eq!(message.body, expected);
    }
    messages
}

pub const SENT: &str = "camunda_worker_follow_ups_sent_total";
pub const ALREADY: &str = "camunda_worker_follow_ups_already_delivered_total";
pub const RETRIED: &str = "camunda_worker_follow_ups_retried_total";
pub const COMPLETED: &str = "camunda_worker_tasks_completed_total";
pub const GIVEN_UP: &str = "camunda_worker_follow_ups_given_up_total";
pub const TASK_GONE: &str = "camunda_worker_tasks_dropped_total{reason=\"task_gone\"}";

/// Whether the exposition shows `series` at `value`.
pub fn at(series: &'static str, value: f64) -> impl Fn(&str) -> bool {
    move |metrics| metric_value(metrics, series) == value
}

/// A library handler that fails, panics or takes its time, depending on the task id.
pub struct Picky;

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
pub fn spawn_picky(engine: &MockEngine, flags: &[&str]) -> TestWorker {
    let mut all = vec!["--reconcile-interval", "0"];
    all.extend(flags);
    TestWorker::spawn(&engine.url(), &all, Picky)
}

/// A mock that cannot cancel a parked long poll (as an engine without
/// `fetch-and-lock-unique-worker-request`): every fetch is held 30 s, and the shutdown sweep
/// (`GET /external-task`) finds `locked` still locked for the worker.
pub async fn engine_keeping_polls_parked(locked: serde_json::Value) -> MockEngine {
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
