//! `complete` under faults: retried after optimistic locking and 5xx, given up when the lock runs
//! out, a lost reply proved by the engine's state, a 404 dropped, a 200 taken for a 204, a bad
//! variable a failure — with the exact engine replies pinned on a mock engine (rows of the
//! README's "Failure behaviour" table).

use serde_json::json;
use wiremock::ResponseTemplate;

use crate::support::eventually;
use crate::support::faults::{
    at, complete_reply_lost_then_task_gone, follow_ups_of_t1, marker_reads, no_match, spawn_picky,
    task_gone, ALREADY, COMPLETED, RETRIED, SENT, TASK_GONE, WAIT,
};
use crate::support::mock::{error_body, task, MockEngine, OWED};

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
