//! Recovery of follow-ups the live path did not deliver: the reconciler delivers owed markers past
//! due by compare-and-set (mock engine), and never correlates an instance of another process
//! (real engine).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use wiremock::ResponseTemplate;

use crate::delivery::{stop, RUN_LIMIT};
use crate::support::engine::{shared_engine, Rest};
use crate::support::mock::{error_body, MockEngine};
use crate::support::{eventually, settled_total, WorkerProcess};

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

/// The reconciler recovers only instances whose wait follows a completed task of its topic.
/// Another process in the same engine waits for a message of the same name: it never gets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_never_correlates_an_instance_of_another_process() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("attribution").await;
    // Another process: start → the same message catch event → end, no task of our topic.
    let foreign = format!("someone_else_{}", std::process::id());
    rest.deploy_bpmn(
        &foreign,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
                  id="Definitions_{foreign}" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="{foreign}" isExecutable="true" camunda:historyTimeToLive="P1D">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="to_wait" sourceRef="start" targetRef="wait" />
    <bpmn:intermediateCatchEvent id="wait">
      <bpmn:messageEventDefinition messageRef="the_message" />
    </bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="to_end" sourceRef="wait" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
  <bpmn:message id="the_message" name="{message}" />
</bpmn:definitions>"#
        ),
    )
    .await;
    let others = rest.start_instances(&foreign, "attribution_other", 5).await;
    let ours = rest.start_instances(&key, "attribution", 20).await;
    let waiting = |n: u64| {
        let rest = rest.clone();
        let message = message.clone();
        move || {
            let rest = rest.clone();
            let message = message.clone();
            async move {
                let count = rest
                    .count(
                        "event-subscription/count",
                        &[("eventType", "message"), ("eventName", &message)],
                    )
                    .await;
                (count == n).then_some(())
            }
        }
    };
    // A worker completes ours and holds every follow-up for a minute; killed, it loses them all.
    let mut doomed = WorkerProcess::spawn(
        "doomed",
        &engine.url,
        &[
            "--topic",
            &topic,
            "--message-name",
            &message,
            "--correlation-delay",
            "60s",
            "--reconcile-interval",
            "0",
        ],
    );
    eventually(RUN_LIMIT, "ours and theirs all wait", waiting(25)).await;
    assert_eq!(
        settled_total(&[&doomed], &["camunda_worker_tasks_completed_total"], 20).await,
        20
    );
    doomed.kill_hard();

    let next = WorkerProcess::spawn(
        "next",
        &engine.url,
        &[
            "--topic",
            &topic,
            "--message-name",
            &message,
            "--correlation-delay",
            "0s",
            "--reconcile-interval",
            "2s",
        ],
    );
    rest.wait_instances_completed(&ours, RUN_LIMIT).await;
    // Every pass after that sees the others too, older than the minimum wait: still left alone.
    let passes = next
        .count("camunda_worker_reconciler_passes_total{outcome=\"ok\"}")
        .await;
    eventually(
        Duration::from_secs(30),
        "two more reconciler passes",
        || async {
            (next
                .count("camunda_worker_reconciler_passes_total{outcome=\"ok\"}")
                .await
                >= passes + 2)
                .then_some(())
        },
    )
    .await;
    eventually(Duration::from_secs(5), "only theirs wait", waiting(5)).await;
    assert_eq!(
        settled_total(&[&next], &["camunda_worker_follow_ups_recovered_total"], 20).await,
        20
    );
    let completed_others = rest.completed(&foreign).await;
    assert_eq!(
        completed_others, 0,
        "no forged message for the other process"
    );
    assert_eq!(others.len(), 5);
    stop(next);
}
