//! The real-engine suite: the binary against a genuine Camunda 7 engine built from `engine/`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::support::engine::{shared_engine, Rest};
use crate::support::run::metrics_of_a_run_to_completion;
use crate::support::{binary, deploy_with_binary, metric_sum, metric_value, WorkerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_binary_completes_and_correlates_200_instances_on_the_real_engine() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);

    // Deploy the bundled BPMN with the binary; a second deploy is filtered as a duplicate.
    // (Duplicate filtering compares with the last deployment of the same name: a name of our own
    // keeps other tests' deployments of the same process out of the picture.)
    let name = format!("suite-{}", std::process::id());
    deploy_with_binary(&["--engine-url", &engine.url, "deploy", "--name", &name]);
    let again = binary()
        .args(["--engine-url", &engine.url, "deploy", "--name", &name])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("unchanged"));

    // Start 200 instances with generated business keys, with the binary.
    let start = binary()
        .args(["--engine-url", &engine.url, "start", "--count", "200"])
        .output()
        .unwrap();
    assert!(
        start.status.success(),
        "{}",
        String::from_utf8_lossy(&start.stderr)
    );
    let started: HashMap<String, String> = String::from_utf8_lossy(&start.stdout)
        .lines()
        .map(|line| {
            let (id, key) = line.split_once(' ').expect("`<id> <business key>` lines");
            (id.to_owned(), key.to_owned())
        })
        .collect();
    assert_eq!(started.len(), 200);
    let keys: HashSet<&String> = started.values().collect();
    assert_eq!(keys.len(), 200, "business keys must be distinct");

    let mut worker = WorkerProcess::spawn("worker", &engine.url, &["--correlation-delay", "500ms"]);
    let ids: Vec<String> = started.keys().cloned().collect();
    rest.wait_instances_completed(&ids, Duration::from_secs(180))
        .await;
    let code = worker.terminate(crate::support::SHUTDOWN_LIMIT);
    assert_eq!(code, Some(0), "clean shutdown exits 0");

    // Every one of our instances is COMPLETED, with var1 = Integer 1 and var2 = String "value".
    let history = rest
        .get(
            "history/process-instance",
            &[
                ("processDefinitionKey", "message_correlation"),
                ("maxResults", "10000"),
            ],
        )
        .await;
    let states: HashMap<String, String> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for id in started.keys() {
        assert_eq!(
            states.get(id).map(String::as_str),
            Some("COMPLETED"),
            "instance {id}"
        );
    }
    for (name, expected_type, expected_value) in [
        ("var1", "Integer", serde_json::json!(1)),
        ("var2", "String", serde_json::json!("value")),
    ] {
        let variables = rest
            .get(
                "history/variable-instance",
                &[("variableName", name), ("maxResults", "10000")],
            )
            .await;
        let by_instance: HashMap<String, (String, serde_json::Value)> = variables
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["processInstanceId"].as_str().unwrap().to_owned(),
                    (v["type"].as_str().unwrap().to_owned(), v["value"].clone()),
                )
            })
            .collect();
        for id in started.keys() {
            let (value_type, value) = by_instance
                .get(id)
                .unwrap_or_else(|| panic!("{name} missing on {id}"));
            assert_eq!(value_type, expected_type, "{name} on {id}");
            assert_eq!(value, &expected_value, "{name} on {id}");
        }
    }
    assert_eq!(
        rest.incidents("message_correlation").await,
        0,
        "no incidents"
    );
}

/// A 2 s timer between the task and the catch event: a message sent right after completion
/// always arrives before the instance waits — the race that the original script's fixed sleep
/// hid. The worker must retry the mismatch until the instance is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_arrives_before_the_instance_waits_is_retried_on_the_real_engine() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest
        .deploy_variant_with("early", |bpmn| {
            bpmn.replace(
                r#"<bpmn:sequenceFlow id="flow_send_to_wait" sourceRef="send_message_task" targetRef="wait_for_response" />"#,
                r#"<bpmn:sequenceFlow id="flow_send_to_wait" sourceRef="send_message_task" targetRef="pause" />
    <bpmn:intermediateCatchEvent id="pause"><bpmn:timerEventDefinition><bpmn:timeDuration>PT2S</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="flow_pause_to_wait" sourceRef="pause" targetRef="wait_for_response" />"#,
            )
        })
        .await;
    let ids = rest.start_instances(&key, "early", 10).await;
    let metrics = metrics_of_a_run_to_completion(
        &rest,
        &engine.url,
        &topic,
        &message,
        &ids,
        &["--correlation-delay", "0s", "--correlation-timeout", "2m"],
    )
    .await;
    let value = |name: &str| metric_value(&metrics, name);
    assert_eq!(
        value("camunda_worker_follow_ups_sent_total"),
        10.0,
        "{metrics}"
    );
    assert!(
        value("camunda_worker_follow_ups_retried_total") >= 10.0,
        "each instance was not at the catch event yet at least once: {metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "camunda_worker_follow_ups_given_up_total", &[]),
        0.0
    );
    assert_eq!(rest.incidents(&key).await, 0);
}
