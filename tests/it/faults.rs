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
use crate::support::mock::{error_body, task, MockEngine};
use crate::support::{
    config_for, eventually, lines_with, sample, scrape, TestWorker, WorkerProcess,
};

const WAIT: Duration = Duration::from_secs(15);

const NO_MATCH: &str = "org.camunda.bpm.engine.MismatchingMessageCorrelationException: Cannot correlate message 'sample_response': No process definition or execution matches the parameters";
const MANY_MATCH: &str = "org.camunda.bpm.engine.MismatchingMessageCorrelationException: ENGINE-13031 Cannot correlate a message with name 'sample_response' to a single execution. 2 executions match the correlation keys: CorrelationSet [businessKey=shared, processInstanceId=null, processDefinitionId=null, correlationKeys=null, localCorrelationKeys=null, tenantId=null, isTenantIdSet=false, isExecutionsOnly=false]";

fn no_match() -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(error_body("RestException", NO_MATCH, Some(0)))
}

/// The history the "has the instance moved on?" check reads: still ACTIVE, catch event not passed.
async fn instance_still_active(engine: &MockEngine, id: &str) {
    engine
        .on_get(
            &format!("history/process-instance/{id}"),
            ResponseTemplate::new(200).set_body_json(json!({"id": id, "state": "ACTIVE"})),
        )
        .await;
    engine
        .on_get(
            "history/activity-instance/count",
            ResponseTemplate::new(200).set_body_json(json!({"count": 0})),
        )
        .await;
}

fn metrics_flag(port: u16) -> String {
    format!("127.0.0.1:{port}")
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
    let mut worker = WorkerProcess::spawn(&[
        "--engine-url",
        &engine.url(),
        "--metrics-addr",
        "127.0.0.1:0",
        "--reconcile-interval",
        "0",
    ]);
    // Four failures with backoff (0.25–0.5 s, 0.5–1 s, 1–2 s, 2–4 s), then empty polls again.
    eventually(WAIT, "polling to resume after the outage", || async {
        (engine.requests_to("/fetchAndLock").len() >= 6).then_some(())
    })
    .await;
    let log = worker.stderr();
    assert_eq!(worker.terminate(WAIT), Some(0));
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
    let mut worker = WorkerProcess::spawn(&[
        "--engine-url",
        &closed,
        "--metrics-addr",
        "127.0.0.1:0",
        "--max-backoff",
        "1s",
    ]);
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
    let worker = TestWorker::spawn(
        &engine.url(),
        &["--long-poll", "1s", "--reconcile-interval", "0"],
    );
    // Long poll 1 s + margin 1 s: the client gives up at 2 s, backs off, and asks again.
    eventually(WAIT, "a second fetch after the timeout", || async {
        (engine.requests_to("/fetchAndLock").len() >= 2).then_some(())
    })
    .await;
    worker.shutdown().await;
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
    let worker = TestWorker::spawn(
        &engine.url(),
        &["--correlation-delay", "0s", "--reconcile-interval", "0"],
    );
    eventually(WAIT, "the follow-up", || async {
        engine.requests_to("/message").first().cloned()
    })
    .await;
    worker.shutdown().await;
    assert_eq!(engine.requests_to("/t1/complete").len(), 3);
    assert_eq!(engine.requests_to("/message").len(), 1);
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
    let port = free_port();
    let worker = TestWorker::spawn(
        &engine.url(),
        &[
            "--lock-duration",
            "1500ms",
            "--correlation-delay",
            "0s",
            "--reconcile-interval",
            "0",
            "--metrics-addr",
            &metrics_flag(port),
        ],
    );
    let metrics = eventually(WAIT, "the task to be dropped", || async {
        let text = scrape(port).await;
        (sample(
            &text,
            "camunda_worker_tasks_dropped_total{reason=\"lock_lost\"}",
        ) == 1.0)
            .then_some(text)
    })
    .await;
    worker.shutdown().await;
    assert!(
        engine.requests_to("/t1/complete").len() >= 2,
        "retried while the lock lasted"
    );
    assert!(engine.requests_to("/message").is_empty());
    assert_eq!(
        sample(&metrics, "camunda_worker_tasks_completed_total"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_before_the_instance_waits_is_retried_until_it_matches() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("k1"))])]).await;
    engine
        .on("external-task/t1/complete", ResponseTemplate::new(204))
        .await;
    engine
        .on_sequence(
            "message",
            vec![no_match(), no_match(), ResponseTemplate::new(204)],
        )
        .await;
    instance_still_active(&engine, "pi-t1").await;
    let port = free_port();
    let worker = TestWorker::spawn(
        &engine.url(),
        &[
            "--correlation-delay",
            "0s",
            "--reconcile-interval",
            "0",
            "--metrics-addr",
            &metrics_flag(port),
        ],
    );
    let metrics = eventually(WAIT, "the follow-up to be sent", || async {
        let text = scrape(port).await;
        (sample(&text, "camunda_worker_follow_ups_sent_total") == 1.0).then_some(text)
    })
    .await;
    worker.shutdown().await;
    assert_eq!(engine.requests_to("/message").len(), 3);
    assert_eq!(
        sample(&metrics, "camunda_worker_follow_ups_retried_total"),
        2.0
    );
    assert_eq!(
        sample(&metrics, "camunda_worker_follow_ups_given_up_total"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_never_matches_is_given_up_after_the_correlation_timeout_with_an_error() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("order-7"))])]).await;
    engine
        .on("external-task/t1/complete", ResponseTemplate::new(204))
        .await;
    engine.on("message", no_match()).await;
    instance_still_active(&engine, "pi-t1").await;
    let mut worker = WorkerProcess::spawn(&[
        "--engine-url",
        &engine.url(),
        "--metrics-addr",
        "127.0.0.1:0",
        "--correlation-delay",
        "0s",
        "--correlation-timeout",
        "1s",
        "--reconcile-interval",
        "0",
    ]);
    let log = eventually(WAIT, "the ERROR after the correlation timeout", || async {
        let log = worker.stderr();
        log.contains("correlation-timeout").then_some(log)
    })
    .await;
    assert_eq!(worker.terminate(WAIT), Some(0));
    let line = log
        .lines()
        .find(|l| l.contains("correlation-timeout"))
        .unwrap();
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("order-7"), "names the business key: {line}");
    assert!(line.contains("pi-t1"), "names the process instance: {line}");
    let attempts = engine.requests_to("/message").len();
    assert!(
        (2..=10).contains(&attempts),
        "retried with backoff, not in a loop: {attempts}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_match_for_an_instance_that_already_moved_on_is_not_an_error() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("k1"))])]).await;
    engine
        .on("external-task/t1/complete", ResponseTemplate::new(204))
        .await;
    engine.on("message", no_match()).await;
    engine
        .on_get(
            "history/process-instance/pi-t1",
            ResponseTemplate::new(200).set_body_json(json!({"id": "pi-t1", "state": "COMPLETED"})),
        )
        .await;
    let port = free_port();
    let worker = TestWorker::spawn(
        &engine.url(),
        &[
            "--correlation-delay",
            "0s",
            "--reconcile-interval",
            "0",
            "--metrics-addr",
            &metrics_flag(port),
        ],
    );
    eventually(WAIT, "the history check", || async {
        (!engine
            .requests_to("/history/process-instance/pi-t1")
            .is_empty())
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let metrics = scrape(port).await;
    worker.shutdown().await;
    assert_eq!(
        engine.requests_to("/message").len(),
        1,
        "no retry once the instance moved on"
    );
    assert_eq!(
        sample(&metrics, "camunda_worker_follow_ups_given_up_total"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_key_shared_by_several_instances_is_reported_once_and_not_retried() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("shared"))])]).await;
    engine
        .on("external-task/t1/complete", ResponseTemplate::new(204))
        .await;
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
    let mut worker = WorkerProcess::spawn(&[
        "--engine-url",
        &engine.url(),
        "--metrics-addr",
        "127.0.0.1:0",
        "--correlation-delay",
        "0s",
        "--reconcile-interval",
        "0",
    ]);
    let log = eventually(WAIT, "the ERROR about the shared key", || async {
        let log = worker.stderr();
        log.contains("several process instances").then_some(log)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(worker.terminate(WAIT), Some(0));
    assert_eq!(engine.requests_to("/message").len(), 1);
    let line = log
        .lines()
        .find(|l| l.contains("several process instances"))
        .unwrap();
    assert!(
        line.contains("ERROR") && line.contains("shared") && line.contains("--correlate-by"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlating_by_process_instance_sends_the_instance_id() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("shared"))])]).await;
    engine
        .on("external-task/t1/complete", ResponseTemplate::new(204))
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let worker = TestWorker::spawn(
        &engine.url(),
        &[
            "--correlation-delay",
            "0s",
            "--correlate-by",
            "both",
            "--reconcile-interval",
            "0",
        ],
    );
    let message = eventually(WAIT, "the follow-up", || async {
        engine.requests_to("/message").first().cloned()
    })
    .await;
    worker.shutdown().await;
    assert_eq!(
        message.body,
        json!({"messageName": "sample_response", "businessKey": "shared", "processInstanceId": "pi-t1"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_refused_with_5xx_is_retried() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("k1"))])]).await;
    engine
        .on("external-task/t1/complete", ResponseTemplate::new(204))
        .await;
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
    let worker = TestWorker::spawn(
        &engine.url(),
        &["--correlation-delay", "0s", "--reconcile-interval", "0"],
    );
    eventually(WAIT, "the retried follow-up", || async {
        (engine.requests_to("/message").len() == 2).then_some(())
    })
    .await;
    worker.shutdown().await;
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
    let worker = TestWorker::spawn(&engine.url(), &["--reconcile-interval", "0"]);
    let failure = eventually(WAIT, "the failure report", || async {
        engine.requests_to("/t1/failure").first().cloned()
    })
    .await;
    worker.shutdown().await;
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

fn spawn_picky(
    engine: &MockEngine,
    flags: &[&str],
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let config = config_for(&engine.url(), flags);
    let stop = CancellationToken::new();
    let token = stop.clone();
    let handle = tokio::spawn(async move {
        camunda_worker::daemon::run_with_handler(&config, Picky, token)
            .await
            .unwrap();
    });
    (stop, handle)
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
    let (stop, handle) = spawn_picky(
        &engine,
        &[
            "--retries",
            "3",
            "--retry-timeout",
            "45s",
            "--worker-id",
            "w-1",
            "--reconcile-interval",
            "0",
        ],
    );
    eventually(WAIT, "two failure reports", || async {
        (engine.requests_to("/failure").len() == 2).then_some(())
    })
    .await;
    stop.cancel();
    handle.await.unwrap();
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
    let (stop, handle) = spawn_picky(&engine, &["--reconcile-interval", "0"]);
    eventually(
        WAIT,
        "both tasks reported (the loop survived the panic)",
        || async { (engine.requests_to("/failure").len() == 2).then_some(()) },
    )
    .await;
    stop.cancel();
    handle.await.unwrap();
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
    let (stop, handle) = spawn_picky(
        &engine,
        &[
            "--lock-duration",
            "1s",
            "--worker-id",
            "w-1",
            "--reconcile-interval",
            "0",
        ],
    );
    eventually(WAIT, "the completion", || async {
        (!engine.requests_to("/slow/complete").is_empty()).then_some(())
    })
    .await;
    stop.cancel();
    handle.await.unwrap();
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
    let mut worker = WorkerProcess::spawn(&[
        "--engine-url",
        &engine.url(),
        "--metrics-addr",
        "127.0.0.1:0",
        "--username",
        "alice",
        "--password",
        "hunter2-secret",
        "--reconcile-interval",
        "0",
    ]);
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
    let mut worker = WorkerProcess::spawn(&[
        "--engine-url",
        &engine.url(),
        "--metrics-addr",
        "127.0.0.1:0",
        "--reconcile-interval",
        "0",
    ]);
    eventually(WAIT, "polling to go on", || async {
        (engine.requests_to("/fetchAndLock").len() >= 3).then_some(())
    })
    .await;
    let log = worker.stderr();
    assert_eq!(worker.terminate(WAIT), Some(0));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cancels_the_open_long_poll_at_once_and_exits_zero() {
    let engine = MockEngine::start(vec![]).await;
    engine
        .fetch_first(
            100,
            ResponseTemplate::new(200)
                .set_body_json(json!([]))
                .set_delay(Duration::from_secs(30)),
        )
        .await;
    let mut worker = WorkerProcess::spawn(&[
        "--engine-url",
        &engine.url(),
        "--metrics-addr",
        "127.0.0.1:0",
        "--long-poll",
        "30s",
    ]);
    eventually(WAIT, "the long poll to be open", || async {
        (!engine.requests_to("/fetchAndLock").is_empty()).then_some(())
    })
    .await;
    // Bounded far below the 30 s long poll: shutdown does not wait for the engine's answer.
    assert_eq!(
        worker.terminate(Duration::from_secs(5)),
        Some(0),
        "{}",
        worker.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_pending_follow_ups_now_instead_of_after_the_delay() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("k1"))])]).await;
    engine
        .on("external-task/t1/complete", ResponseTemplate::new(204))
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let mut worker = WorkerProcess::spawn(&[
        "--engine-url",
        &engine.url(),
        "--metrics-addr",
        "127.0.0.1:0",
        "--correlation-delay",
        "10m",
        "--reconcile-interval",
        "0",
    ]);
    eventually(WAIT, "the completion", || async {
        (!engine.requests_to("/t1/complete").is_empty()).then_some(())
    })
    .await;
    assert_eq!(worker.terminate(WAIT), Some(0), "{}", worker.stderr());
    assert_eq!(
        engine.requests_to("/message").len(),
        1,
        "the pending follow-up was sent on shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_and_an_expired_grace_exits_non_zero() {
    for (grace, second_signal, expected) in [("60s", true, 130), ("1s", false, 1)] {
        let engine = MockEngine::start(vec![json!([task("t1", Some("k1"))])]).await;
        engine
            .on("external-task/t1/complete", ResponseTemplate::new(204))
            .await;
        engine.on("message", no_match()).await;
        instance_still_active(&engine, "pi-t1").await;
        let mut worker = WorkerProcess::spawn(&[
            "--engine-url",
            &engine.url(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--correlation-delay",
            "0s",
            "--shutdown-grace",
            grace,
            "--reconcile-interval",
            "0",
        ]);
        eventually(WAIT, "a retried follow-up", || async {
            (engine.requests_to("/message").len() >= 2).then_some(())
        })
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
            assert!(
                worker.stderr().contains("reconciler of the next start"),
                "{}",
                worker.stderr()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_correlates_instances_left_waiting_by_process_instance_id() {
    let engine = MockEngine::start(vec![]).await;
    engine
        .on_get(
            "event-subscription",
            ResponseTemplate::new(200).set_body_json(json!([
                {"id": "s1", "eventType": "message", "eventName": "sample_response", "processInstanceId": "lost-1", "activityId": "wait_for_response", "createdDate": "2026-11-22T10:00:00.000+0000"},
                {"id": "s2", "eventType": "message", "eventName": "sample_response", "processInstanceId": null, "activityId": "start", "createdDate": "2026-11-22T10:00:00.000+0000"}
            ])),
        )
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let client = camunda_worker::engine::EngineClient::new(
        camunda_worker::engine::EngineSettings::new(engine.url().parse().unwrap()),
    )
    .unwrap();
    let metrics = Arc::new(camunda_worker::metrics::Metrics::new());
    let tracker = tokio_util::task::TaskTracker::new();
    let follow_ups = camunda_worker::correlation::FollowUps::new(
        client.clone(),
        Arc::clone(&metrics),
        Default::default(),
        tracker,
        CancellationToken::new(),
        CancellationToken::new(),
    );
    let mut reconciler =
        camunda_worker::reconciler::Reconciler::new(client, follow_ups, Arc::clone(&metrics))
            .with_min_wait(Duration::from_millis(100));
    let first = reconciler.pass().await.unwrap();
    assert_eq!(
        (first.waiting, first.recovered),
        (1, 0),
        "first sighting: too early to tell"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = reconciler.pass().await.unwrap();
    assert_eq!(second.recovered, 1);
    assert_eq!(
        engine.requests_to("/message")[0].body,
        json!({"messageName": "sample_response", "processInstanceId": "lost-1"})
    );
    assert!(metrics
        .render()
        .contains("camunda_worker_follow_ups_recovered_total 1"));
}

/// The engine keeps a long poll parked after the worker hung up, and may still lock tasks for the
/// stopping worker's id; the shutdown sweep gives them back until that poll has timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_unlocks_tasks_the_abandoned_long_poll_locked_for_this_worker() {
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
            ResponseTemplate::new(200).set_body_json(json!([task("late", Some("k"))])),
        )
        .await;
    engine
        .on("external-task/late/unlock", ResponseTemplate::new(204))
        .await;
    let mut worker = WorkerProcess::spawn(&[
        "--engine-url",
        &engine.url(),
        "--metrics-addr",
        "127.0.0.1:0",
        "--long-poll",
        "2s",
        "--worker-id",
        "stopping-1",
        "--reconcile-interval",
        "0",
    ]);
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
