//! The follow-up message under faults: early, never matching, lost, ambiguous, refused or racing,
//! it is retried, given up or counted as delivered exactly as the marker proves — with the exact
//! engine replies pinned on a mock engine (rows of the README's "Failure behaviour" table).

use serde_json::json;
use wiremock::ResponseTemplate;

use crate::support::faults::{
    at, bad_gateway, follow_ups_of_t1, marker_reads, no_match, owed_by_complete, ALREADY, GIVEN_UP,
    MANY_MATCH, RETRIED, SENT, WAIT,
};
use crate::support::lines_with;
use crate::support::mock::{error_body, task, MockEngine, MARKER, OWED};

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
                && engine.requests_to("/incident").len() >= 2
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
    assert_eq!(
        incidents.len(),
        2,
        "asked whether one is open, and after raising one whether another replica raised one too"
    );
    for asked in &incidents {
        assert_eq!(
            (
                asked.param("incidentType"),
                asked.param("processInstanceId")
            ),
            (Some("camundaWorkerFollowUp"), Some("pi-t1"))
        );
    }
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
    crate::support::assert_names_follow_up(&created[0].body["configuration"], "t1");
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
    crate::support::assert_names_follow_up(&created[0].body["configuration"], "t1");
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
