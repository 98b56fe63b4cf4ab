//! HTTP contract: the exact requests the worker sends, pinned against a mock engine.

use std::time::Duration;

use serde_json::json;
use wiremock::ResponseTemplate;

use crate::support::mock::{
    error_body, follow_up_message, owed_marker, task, MockEngine, MARKER, OWED,
};
use crate::support::{eventually, metric_value};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_and_lock_asks_for_the_topic_with_worker_id_slots_long_poll_and_lock() {
    let engine = MockEngine::start(vec![]).await;
    let fetch = engine
        .first_request(
            engine.worker(&[
                "--worker-id",
                "w-1",
                "--max-tasks",
                "7",
                "--long-poll",
                "1500ms",
                "--lock-duration",
                "45s",
            ]),
            "/fetchAndLock",
            WAIT,
        )
        .await;
    assert_eq!(
        fetch.body,
        json!({
            "workerId": "w-1",
            "maxTasks": 7,
            "usePriority": true,
            "asyncResponseTimeout": 1500,
            "topics": [{"topicName": "messageSending", "lockDuration": 45000, "variables": []}]
        })
    );
}

/// `complete` carries the handler's typed variables and the follow-up marker, owed for this task;
/// the message that follows after the delay names that owed value as its correlation key and
/// flips it to delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_completed_with_typed_variables_and_its_message_follows_after_the_delay() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("order-42"))])]).await;
    engine
        .on("external-task/t1/complete", ResponseTemplate::new(204))
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    // Mounted only to record a look-up, should the worker make one.
    engine.marker("pi-t1", vec![Some(OWED)]).await;
    engine
        .message_waits("pi-t1", &[("sample_response", "ex-t1")])
        .await;
    let message = engine
        .first_request(
            engine.worker(&["--worker-id", "w-1", "--correlation-delay", "700ms"]),
            "/message",
            WAIT,
        )
        .await;
    let complete = engine.requests_to("/t1/complete");
    assert_eq!(complete.len(), 1);
    let owed = owed_marker(&complete[0].body, "t1");
    assert_eq!(
        complete[0].body,
        json!({
            "workerId": "w-1",
            "variables": {
                "var1": {"type": "Integer", "value": 1, "valueInfo": {}},
                "var2": {"type": "String", "value": "value", "valueInfo": {}},
                MARKER: {"type": "String", "value": owed, "valueInfo": {}}
            }
        })
    );
    assert_eq!(
        message.body,
        follow_up_message(&owed, "t1", Some("order-42"), Some("pi-t1"))
    );
    assert_eq!(engine.requests_to("/message").len(), 1);
    assert!(
        engine.requests_to("/variable-instance").is_empty()
            && engine.requests_to("/event-subscription").is_empty(),
        "sent at once, without a look-up first"
    );
    let gap = message.at.duration_since(complete[0].at);
    assert!(
        gap >= Duration::from_millis(700),
        "message came {gap:?} after complete, before the 700ms delay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_variables_replace_the_defaults_and_keep_explicit_types() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("k"))])]).await;
    engine
        .on("external-task/t1/complete", ResponseTemplate::new(204))
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let complete = engine
        .first_request(
            engine.quick_worker(&[
                "--var",
                "amount=5000000000",
                "--var",
                "ok=true",
                "--var",
                "doc={\"a\":1}",
            ]),
            "/t1/complete",
            WAIT,
        )
        .await;
    // The marker is the worker's own, next to the custom variables: var1 and var2 are gone.
    let owed = owed_marker(&complete.body, "t1");
    assert_eq!(
        complete.body["variables"],
        json!({
            "amount": {"type": "Long", "value": 5000000000_i64, "valueInfo": {}},
            "ok": {"type": "Boolean", "value": true, "valueInfo": {}},
            "doc": {"type": "Json", "value": "{\"a\":1}", "valueInfo": {}},
            MARKER: {"type": "String", "value": owed, "valueInfo": {}}
        })
    );
}

/// Completion refused in the ways the engine refuses it, or never confirmed: nothing may be
/// correlated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_correlated_when_complete_is_refused_or_never_confirmed() {
    let engine = MockEngine::start(vec![json!([
        task("gone", Some("k-gone")),
        task("taken", Some("k-taken")),
        task("odd", Some("k-odd"))
    ])])
    .await;
    engine
        .on(
            "external-task/gone/complete",
            ResponseTemplate::new(404).set_body_json(error_body(
                "InvalidRequestException",
                "External task with id gone does not exist",
                Some(0),
            )),
        )
        .await;
    engine
        .on(
            "external-task/taken/complete",
            ResponseTemplate::new(400).set_body_json(error_body(
                "BadUserRequestException",
                "External Task taken cannot be completed by worker 'w-1'. It is locked by worker 'other'.",
                Some(0),
            )),
        )
        .await;
    // A proxy's own 404 page, not the engine's answer about the task: an outage, retried while
    // the lock lasts (1 s here), then dropped.
    engine
        .on(
            "external-task/odd/complete",
            ResponseTemplate::new(404).set_body_raw("<html>Not Found</html>", "text/html"),
        )
        .await;
    engine
        .on("external-task/[a-z]+/failure", ResponseTemplate::new(204))
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let stopped = engine
        .quick_worker(&["--worker-id", "w-1", "--lock-duration", "1s"])
        .stop_once(WAIT, "all three tasks to be dropped", |metrics| {
            let dropped = |reason: &str| {
                let series = format!("camunda_worker_tasks_dropped_total{{reason=\"{reason}\"}}");
                metric_value(metrics, &series)
            };
            dropped("task_gone") == 1.0 && dropped("lock_lost") == 2.0
        })
        .await;
    assert_eq!(stopped.value("camunda_worker_tasks_completed_total"), 0.0);
    assert_eq!(
        engine.requests_to("/gone/complete").len(),
        1,
        "404 is not retried"
    );
    assert_eq!(
        engine.requests_to("/taken/complete").len(),
        1,
        "400 is not retried"
    );
    assert!(
        engine.requests_to("/odd/complete").len() >= 2,
        "a proxy's 404 page is retried"
    );
    assert!(
        engine.requests_to("/failure").is_empty(),
        "a refusal about the lock is no failure of the task"
    );
    assert!(
        engine.requests_to("/message").is_empty(),
        "no message without a confirmed completion"
    );
}

/// maxTasks equals the free slots: with 3 slots and 2 tasks still being completed, the next
/// fetch asks for 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tasks_never_exceeds_the_free_slots() {
    let engine =
        MockEngine::start(vec![json!([task("a", Some("ka")), task("b", Some("kb"))])]).await;
    engine
        .on(
            "external-task/(a|b)/complete",
            ResponseTemplate::new(204).set_delay(Duration::from_millis(1500)),
        )
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let worker = engine.quick_worker(&["--max-tasks", "3"]);
    eventually(WAIT, "both follow-ups", || async {
        (engine.requests_to("/message").len() == 2).then_some(())
    })
    .await;
    // One more poll after the slots were freed again.
    let polls_before = engine.requests_to("/fetchAndLock").len();
    worker
        .stop_once(WAIT, "a poll after the tasks finished", |_| {
            engine.requests_to("/fetchAndLock").len() > polls_before + 1
        })
        .await;
    // At shutdown the worker asks the engine to end its parked poll with a fetch for no task.
    let asked: Vec<u64> = engine
        .requests_to("/fetchAndLock")
        .iter()
        .map(|s| s.body["maxTasks"].as_u64().unwrap())
        .filter(|n| *n > 0)
        .collect();
    assert_eq!(asked[0], 3, "{asked:?}");
    assert_eq!(asked[1], 1, "two slots busy while completing: {asked:?}");
    assert!(asked.iter().all(|n| *n <= 3), "{asked:?}");
    assert_eq!(*asked.last().unwrap(), 3, "all slots free again: {asked:?}");
}

/// By business key alone, a follow-up stays within its task's tenant: `tenantId` for a task of a
/// tenant, `withoutTenantId: true` for a task without one (the real engine's side of it is
/// `tenancy::a_message_by_business_key_*`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_by_business_key_names_its_tasks_tenant_or_none() {
    let mut of_tenant = task("t1", Some("shared"));
    of_tenant["tenantId"] = json!("tenant-a");
    let engine = MockEngine::start(vec![json!([of_tenant, task("t2", Some("shared"))])]).await;
    engine
        .on("external-task/t[12]/complete", ResponseTemplate::new(204))
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    engine
        .quick_worker(&["--correlate-by", "business-key"])
        .stop_once(WAIT, "both follow-ups", |_| {
            engine.requests_to("/message").len() == 2
        })
        .await;
    let message_of = |task_id: &str| {
        let delivered = json!(format!("delivered:{task_id}"));
        let messages = engine.requests_to("/message");
        let found: Vec<_> = messages
            .iter()
            .filter(|m| m.body["processVariables"][MARKER]["value"] == delivered)
            .collect();
        assert_eq!(found.len(), 1, "{messages:?}");
        found[0].body.clone()
    };
    let owed = |task_id: &str| {
        owed_marker(
            &engine.requests_to(&format!("/{task_id}/complete"))[0].body,
            task_id,
        )
    };
    let mut in_tenant = follow_up_message(&owed("t1"), "t1", Some("shared"), None);
    in_tenant.as_object_mut().unwrap().remove("withoutTenantId");
    in_tenant["tenantId"] = json!("tenant-a");
    assert_eq!(message_of("t1"), in_tenant);
    let without = message_of("t2");
    assert_eq!(
        without,
        follow_up_message(&owed("t2"), "t2", Some("shared"), None)
    );
    assert_eq!(without["withoutTenantId"], json!(true), "{without}");
}
