//! Exactly one follow-up, whatever the network does: the worker binary against the real engine,
//! through a fault-injecting proxy that loses replies, resets and closes connections, and takes
//! the engine away — every fault provoked on purpose, every time.
//!
//! Each scenario runs 200 instances with the reconciler off (so nothing but the worker's own
//! handling of the fault can deliver a message) and judges the run by what the engine really saw,
//! as the proxy recorded it: each task completed once, each instance sent one message that the
//! engine accepted and none it refused; every instance ended; the worker's counters add up
//! (`completed = sent + given up`), and it logged no ERROR.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::engine::{engine_with, shared_engine, RealEngine, Rest};
use crate::support::proxy::{Exchange, Fault, FaultKind, FaultProxy, Rule};
use crate::support::{eventually, lines_with, metric_sum, metric_value, WorkerProcess};

pub(crate) const INSTANCES: usize = 200;
pub(crate) const RUN_LIMIT: Duration = Duration::from_secs(240);

/// A process of this test's own on an engine, with the proxy in front of that engine.
pub(crate) struct Scenario {
    pub(crate) rest: Rest,
    pub(crate) proxy: FaultProxy,
    pub(crate) key: String,
    pub(crate) topic: String,
    pub(crate) message: String,
}

impl Scenario {
    pub(crate) async fn on(engine: &RealEngine, suffix: &str) -> Scenario {
        Self::with_bpmn(engine, suffix, |bpmn| bpmn).await
    }

    pub(crate) async fn with_bpmn(
        engine: &RealEngine,
        suffix: &str,
        edit: impl Fn(String) -> String,
    ) -> Scenario {
        let rest = Rest::new(&engine.url);
        let (key, topic, message) = rest.deploy_variant_with(suffix, edit).await;
        let proxy = FaultProxy::start(&format!("http://127.0.0.1:{}", engine.port)).await;
        Scenario {
            rest,
            proxy,
            key,
            topic,
            message,
        }
    }

    /// The worker binary against the proxy, reconciler off, with `flags` added.
    pub(crate) fn worker(&self, flags: &[&str]) -> WorkerProcess {
        let mut all = vec![
            "--topic",
            &self.topic,
            "--message-name",
            &self.message,
            "--reconcile-interval",
            "0",
            "--correlation-delay",
            "300ms",
        ];
        all.extend(flags);
        WorkerProcess::spawn(
            &self.key,
            &format!("{}/engine-rest", self.proxy.url()),
            &all,
        )
    }

    /// Waits for every instance to end, then checks that each got exactly one follow-up.
    pub(crate) async fn assert_exactly_once(
        &self,
        worker: &mut WorkerProcess,
        prefix: &str,
        ids: &[String],
    ) -> String {
        // From the runtime: the history may be off (level `none`).
        self.rest.wait_instances_ended(ids, RUN_LIMIT).await;
        let expected = ids.len() as f64;
        // The engine commits before it answers: wait for the worker to count the last reply.
        let metrics = eventually(
            Duration::from_secs(30),
            "the worker counted every follow-up",
            || async {
                let metrics = worker.scrape().await;
                (metric_value(&metrics, "camunda_worker_follow_ups_sent_total") >= expected)
                    .then_some(metrics)
            },
        )
        .await;
        let exchanges = self.proxy.exchanges();

        let accepted_completes = per_key(&exchanges, "/complete", 204, |e| e.path.clone());
        assert_eq!(accepted_completes.len(), ids.len(), "every task completed");
        assert!(
            accepted_completes.values().all(|n| *n == 1),
            "a task completed twice: {accepted_completes:?}"
        );
        let business_key = |e: &Exchange| e.body["businessKey"].as_str().unwrap_or("").to_owned();
        let accepted = per_key(&exchanges, "/message", 204, business_key);
        let ours = accepted.keys().filter(|k| k.starts_with(prefix)).count();
        assert_eq!(ours, ids.len(), "every instance got its message");
        assert!(
            accepted.values().all(|n| *n == 1),
            "an instance got its message twice: {accepted:?}"
        );
        assert_refused_only_repeats(&exchanges);

        let completed = metric_value(&metrics, "camunda_worker_tasks_completed_total");
        let sent = metric_value(&metrics, "camunda_worker_follow_ups_sent_total");
        let given_up = metric_sum(&metrics, "camunda_worker_follow_ups_given_up_total", &[]);
        assert_eq!(completed, expected, "{metrics}");
        assert_eq!(completed, sent + given_up, "the counters add up: {metrics}");
        assert_eq!(given_up, 0.0, "{metrics}");
        assert_eq!(
            metric_sum(&metrics, "camunda_worker_tasks_dropped_total", &[]),
            0.0,
            "no task counted as gone or lost: {metrics}"
        );
        assert_eq!(
            lines_with(&worker.stderr(), " ERROR "),
            0,
            "{}",
            worker.stderr()
        );
        assert_eq!(self.rest.incidents(&self.key).await, 0, "no incidents");
        metrics
    }
}

/// SIGTERM, and a clean exit.
pub(crate) fn stop(worker: WorkerProcess) {
    stop_and_read(worker);
}

/// Stops the worker (SIGTERM, exit 0) and returns everything it logged.
pub(crate) fn stop_and_read(mut worker: WorkerProcess) -> String {
    assert_eq!(
        worker.terminate(crate::support::SHUTDOWN_LIMIT),
        Some(0),
        "{}",
        worker.stderr()
    );
    worker.stderr()
}

/// How many requests to paths ending in `suffix` the engine answered with `status`, by `key`.
fn per_key(
    exchanges: &[Exchange],
    suffix: &str,
    status: u16,
    key: impl Fn(&Exchange) -> String,
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for exchange in exchanges
        .iter()
        .filter(|e| e.path.ends_with(suffix) && e.engine_status == Some(status))
    {
        *counts.entry(key(exchange)).or_default() += 1;
    }
    counts
}

/// Loses the replies to POSTs on `path` after the engine processed them: 12 replaced by a 504, 8
/// by a reset connection, 3 never answered (with `--request-timeout 2s`, the worker times out).
/// Messages the engine refused may only be repeats (after a lost reply) of a message it accepted:
/// the marker's compare-and-set turned them away. None is early, none is a second delivery.
fn assert_refused_only_repeats(exchanges: &[Exchange]) {
    let marker = |e: &Exchange| e.body["correlationKeys"]["camundaWorkerFollowUp"]["value"].clone();
    let messages = || exchanges.iter().filter(|e| e.path.ends_with("/message"));
    let accepted: Vec<serde_json::Value> = messages()
        .filter(|e| e.engine_status == Some(204))
        .map(marker)
        .collect();
    let strays: Vec<&Exchange> = messages()
        .filter(|e| e.engine_status != Some(204) && !accepted.contains(&marker(e)))
        .collect();
    assert!(
        strays.is_empty(),
        "messages refused that were not repeats of a delivered one: {strays:?}"
    );
}

/// Messages the engine accepted whose reply the worker did not see: the worker sent the same
/// message again afterwards (had it seen the 204, it would not have).
fn lost_deliveries(exchanges: &[Exchange]) -> usize {
    let marker = |e: &Exchange| e.body["correlationKeys"]["camundaWorkerFollowUp"]["value"].clone();
    let messages: Vec<&Exchange> = exchanges
        .iter()
        .filter(|e| e.path.ends_with("/message"))
        .collect();
    messages
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            e.engine_status == Some(204) && messages[i + 1..].iter().any(|l| marker(l) == marker(e))
        })
        .count()
}

/// Each `(path, every, times, fault)`: `fault` on every `every`-th POST to `path`, `times` times.
/// The lost-reply scenarios differ only in these.
fn fault_posts<'a>(
    proxy: &FaultProxy,
    faults: impl IntoIterator<Item = (&'a str, u32, u32, Fault)>,
) {
    for (path, every, times, fault) in faults {
        proxy.add_rule(Rule::on("POST", path).every(every).times(times).then(fault));
    }
}

fn lose_replies(proxy: &FaultProxy, path: &str) {
    proxy.add_rule(
        Rule::on("POST", path)
            .every(7)
            .times(12)
            .then(Fault::ReplyLost504),
    );
    proxy.add_rule(
        Rule::on("POST", path)
            .every(9)
            .times(8)
            .then(Fault::ReplyLostReset),
    );
    proxy.add_rule(
        Rule::on("POST", path)
            .every(23)
            .times(3)
            .then(Fault::ReplyLostHang),
    );
}

/// Every fault of [`lose_replies`] was provoked.
fn assert_replies_lost(proxy: &FaultProxy) {
    assert_eq!(proxy.applied_count(FaultKind::ReplyLost504), 12);
    assert_eq!(proxy.applied_count(FaultKind::ReplyLostReset), 8);
    assert_eq!(proxy.applied_count(FaultKind::ReplyLostHang), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_replies_lost_to_a_504_a_reset_or_a_timeout_still_give_one_follow_up_each() {
    let scenario = Scenario::on(shared_engine(), "lost_complete").await;
    lose_replies(&scenario.proxy, r"/external-task/[^/]+/complete$");
    let ids = scenario
        .rest
        .start_instances(&scenario.key, "lost_complete", INSTANCES)
        .await;
    let mut worker = scenario.worker(&["--request-timeout", "2s"]);
    scenario
        .assert_exactly_once(&mut worker, "lost_complete", &ids)
        .await;
    stop(worker);
    assert_replies_lost(&scenario.proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_replies_lost_to_a_504_a_reset_or_a_timeout_count_as_delivered_once() {
    let scenario = Scenario::on(shared_engine(), "lost_message").await;
    lose_replies(&scenario.proxy, r"/engine-rest/message$");
    let ids = scenario
        .rest
        .start_instances(&scenario.key, "lost_message", INSTANCES)
        .await;
    let mut worker = scenario.worker(&["--request-timeout", "2s"]);
    let metrics = scenario
        .assert_exactly_once(&mut worker, "lost_message", &ids)
        .await;
    assert_eq!(
        metric_value(
            &metrics,
            "camunda_worker_follow_ups_already_delivered_total"
        ),
        lost_deliveries(&scenario.proxy.exchanges()) as f64,
        "each delivery whose reply was lost decided from the marker: {metrics}"
    );
    stop(worker);
    assert_replies_lost(&scenario.proxy);
}

/// Servers and proxies close idle keep-alive connections; when one does so in the instant the
/// worker reuses the connection, the call is sent again at once on a new one: no WARN, no outage
/// on `/readyz`, no backoff, no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_keep_alive_connections_the_server_closed_are_sent_again_at_once() {
    let scenario = Scenario::on(shared_engine(), "stale").await;
    scenario
        .proxy
        .close_idle_after(Some(Duration::from_millis(300)));
    let mut worker = scenario.worker(&[]);
    // Bursts with pauses longer than the proxy's idle limit (and shorter than the worker's own
    // pool idle timeout): every burst begins on connections the proxy considers stale.
    let mut ids = Vec::new();
    for burst in 0..4 {
        let started = scenario
            .rest
            .start_instances(&scenario.key, &format!("stale-{burst}"), INSTANCES / 4)
            .await;
        scenario
            .rest
            .wait_instances_completed(&started, RUN_LIMIT)
            .await;
        ids.extend(started);
        // Kept: a pause between bursts, longer than the idle after which the proxy closes connections.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let log = worker.stderr();
    let metrics = scenario
        .assert_exactly_once(&mut worker, "stale-", &ids)
        .await;
    // Read while the worker idles: its only call, the parked long poll, reuses no idle connection.
    let stale_closes = scenario.proxy.applied_count(FaultKind::StaleClose);
    stop(worker);
    assert!(stale_closes >= 3, "{stale_closes} stale closes provoked");
    assert_eq!(
        metric_sum(
            &metrics,
            "camunda_worker_engine_stale_connection_retries_total",
            &[]
        ),
        stale_closes as f64,
        "each closed connection noticed once: {metrics}"
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "camunda_worker_fetch_requests_total",
            &["outcome=\"error\""]
        ),
        0.0,
        "no fetch failed: {metrics}"
    );
    assert_eq!(lines_with(&log, " WARN "), 0, "{log}");
}

/// A process that loops back to the catch event: after each message the instance runs the task
/// again and waits again, at a new subscription. Lost message replies must neither send a second
/// message into the next round nor count it as missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_message_replies_in_a_process_that_loops_back_to_the_catch_event() {
    const ROUNDS: u64 = 3;
    let scenario = Scenario::with_bpmn(shared_engine(), "loop", |bpmn| {
        bpmn.replace(
            r#"<bpmn:serviceTask id="send_message_task" name="Send message" camunda:type="external" camunda:topic="messageSending_loop">
      <bpmn:incoming>flow_start_to_send</bpmn:incoming>"#,
            r#"<bpmn:serviceTask id="send_message_task" name="Send message" camunda:type="external" camunda:topic="messageSending_loop">
      <bpmn:extensionElements>
        <camunda:executionListener event="start" expression="${execution.setVariable('round', execution.getVariable('round') == null ? 1 : execution.getVariable('round') + 1)}" />
      </bpmn:extensionElements>
      <bpmn:incoming>flow_start_to_send</bpmn:incoming>
      <bpmn:incoming>flow_again</bpmn:incoming>"#,
        )
        .replace(
            r#"<bpmn:outgoing>flow_wait_to_end</bpmn:outgoing>
      <bpmn:messageEventDefinition"#,
            r#"<bpmn:outgoing>flow_wait_to_gate</bpmn:outgoing>
      <bpmn:messageEventDefinition"#,
        )
        .replace(
            r#"<bpmn:sequenceFlow id="flow_wait_to_end" sourceRef="wait_for_response" targetRef="end" />"#,
            r#"<bpmn:sequenceFlow id="flow_wait_to_gate" sourceRef="wait_for_response" targetRef="gate" />
    <bpmn:exclusiveGateway id="gate" />
    <bpmn:sequenceFlow id="flow_again" sourceRef="gate" targetRef="send_message_task"><bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">${round &lt; 3}</bpmn:conditionExpression></bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="flow_wait_to_end" sourceRef="gate" targetRef="end"><bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">${round &gt;= 3}</bpmn:conditionExpression></bpmn:sequenceFlow>"#,
        )
        .replace(
            r#"xmlns:modeler="#,
            r#"xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:modeler="#,
        )
    })
    .await;
    fault_posts(
        &scenario.proxy,
        [
            (r"/engine-rest/message$", 5, 20, Fault::ReplyLost504),
            (r"/engine-rest/message$", 11, 8, Fault::ReplyLostReset),
        ],
    );
    let ids = scenario
        .rest
        .start_instances(&scenario.key, "loop", 50)
        .await;
    let worker = scenario.worker(&[]);
    scenario
        .rest
        .wait_instances_completed(&ids, RUN_LIMIT)
        .await;
    // The engine commits before it answers: once the worker has counted every message, the proxy
    // has recorded every answer too (it records one before passing it on).
    let metrics = eventually(
        Duration::from_secs(30),
        "the worker counted every follow-up",
        || async {
            let metrics = worker.scrape().await;
            let sent = metric_value(&metrics, "camunda_worker_follow_ups_sent_total");
            (sent >= (50 * ROUNDS) as f64).then_some(metrics)
        },
    )
    .await;
    let exchanges = scenario.proxy.exchanges();
    let business_key = |e: &Exchange| e.body["businessKey"].as_str().unwrap_or("").to_owned();
    let accepted = per_key(&exchanges, "/message", 204, business_key);
    assert_eq!(accepted.len(), 50, "{accepted:?}");
    assert!(
        accepted.values().all(|n| *n as u64 == ROUNDS),
        "one message per round: {accepted:?}"
    );
    assert_refused_only_repeats(&exchanges);
    assert_eq!(
        metric_value(&metrics, "camunda_worker_follow_ups_sent_total"),
        (50 * ROUNDS) as f64,
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "camunda_worker_follow_ups_already_delivered_total"
        ),
        lost_deliveries(&exchanges) as f64,
        "every delivery whose reply was lost decided from the marker: {metrics}"
    );
    assert_eq!(
        lines_with(&worker.stderr(), " ERROR "),
        0,
        "{}",
        worker.stderr()
    );
    stop(worker);
}

/// Follow-ups that cannot be delivered (here: a misspelled message name) pile up only to the
/// configured capacity; then the worker stops fetching, says so once, and shows it in its metrics,
/// while the tasks it did not fetch stay unlocked for other workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_follow_ups_fill_their_capacity_and_then_fetching_pauses() {
    let scenario = Scenario::on(shared_engine(), "capacity").await;
    scenario
        .rest
        .start_instances(&scenario.key, "capacity", 20)
        .await;
    let mut worker = WorkerProcess::spawn(
        "capacity",
        &format!("{}/engine-rest", scenario.proxy.url()),
        &[
            "--topic",
            &scenario.topic,
            "--message-name",
            "no_such_message",
            "--reconcile-interval",
            "0",
            "--correlation-delay",
            "0s",
            "--correlation-timeout",
            "1h",
            "--max-tasks",
            "10",
            "--max-pending-follow-ups",
            "5",
            "--shutdown-grace",
            "2s",
        ],
    );
    // The pause begins as soon as the five tasks are fetched; their completions follow.
    eventually(
        RUN_LIMIT,
        "fetching paused after five completions",
        || async {
            let paused = worker.count("camunda_worker_fetch_paused").await == 1;
            let completed = worker.count("camunda_worker_tasks_completed_total").await;
            (paused && completed == 5).then_some(())
        },
    )
    .await;
    let metrics = worker.scrape().await;
    assert_eq!(
        metric_value(&metrics, "camunda_worker_follow_ups_pending"),
        5.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "camunda_worker_follow_ups_capacity"),
        5.0
    );
    assert_eq!(
        metric_value(&metrics, "camunda_worker_tasks_completed_total"),
        5.0
    );
    let open = scenario
        .rest
        .count("external-task/count", &[("topicName", &scenario.topic)])
        .await;
    let locked = scenario
        .rest
        .count(
            "external-task/count",
            &[("topicName", &scenario.topic), ("locked", "true")],
        )
        .await;
    assert_eq!(
        (open, locked),
        (15, 0),
        "the rest is left for other workers"
    );
    let log = worker.stderr();
    assert_eq!(
        lines_with(&log, "pending follow-ups are at capacity"),
        1,
        "{log}"
    );
    // Undeliverable follow-ups stay owed in the engine: they do not hold the shutdown (exit 0).
    assert_eq!(worker.terminate(crate::support::SHUTDOWN_LIMIT), Some(0));
    assert_eq!(
        lines_with(&worker.stderr(), "not delivered before shutdown"),
        1,
        "one line for all of them"
    );
}

/// An engine without history (level `none`) and without unique worker requests: lost replies are
/// still decided from the instance's runtime state alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_history_lost_replies_still_give_one_follow_up_each() {
    let scenario = Scenario::on(plain_engine(), "no_history").await;
    fault_posts(
        &scenario.proxy,
        [
            (
                r"/external-task/[^/]+/complete$",
                6,
                10,
                Fault::ReplyLost504,
            ),
            (r"/engine-rest/message$", 6, 10, Fault::ReplyLost504),
        ],
    );
    let ids = scenario
        .rest
        .start_instances(&scenario.key, "no_history", INSTANCES)
        .await;
    let mut worker = scenario.worker(&[]);
    let metrics = scenario
        .assert_exactly_once(&mut worker, "no_history", &ids)
        .await;
    stop(worker);
    // A lost reply to a message the engine refused (its instance not waiting yet) is retried, not
    // found delivered: counted from what the proxy saw, as in the other lost-reply scenarios.
    assert_eq!(
        metric_value(
            &metrics,
            "camunda_worker_follow_ups_already_delivered_total"
        ),
        lost_deliveries(&scenario.proxy.exchanges()) as f64,
        "{metrics}"
    );
    assert_eq!(scenario.proxy.applied_count(FaultKind::ReplyLost504), 20);
}

/// A second engine for the tests that need what the bundled one is not: history level `none`,
/// and no `fetch-and-lock-unique-worker-request`.
pub(crate) fn plain_engine() -> &'static RealEngine {
    engine_with(&[
        "--camunda.bpm.history-level=none",
        "--server.servlet.context-parameters.fetch-and-lock-unique-worker-request=false",
    ])
}
