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
use crate::support::{
    eventually, lines_with, metric_sum, metric_value, settled_total, WorkerProcess,
};

const INSTANCES: usize = 200;
const RUN_LIMIT: Duration = Duration::from_secs(240);

/// A process of this test's own on an engine, with the proxy in front of that engine.
struct Scenario {
    rest: Rest,
    proxy: FaultProxy,
    key: String,
    topic: String,
    message: String,
}

impl Scenario {
    async fn on(engine: &RealEngine, suffix: &str) -> Scenario {
        Self::with_bpmn(engine, suffix, |bpmn| bpmn).await
    }

    async fn with_bpmn(
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
    fn worker(&self, flags: &[&str]) -> WorkerProcess {
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
    async fn assert_exactly_once(
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
fn stop(worker: WorkerProcess) {
    stop_and_read(worker);
}

/// Stops the worker (SIGTERM, exit 0) and returns everything it logged.
fn stop_and_read(mut worker: WorkerProcess) -> String {
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

/// The engine goes away while every slot is busy completing (the fetch loop is not polling at
/// all): the engine client notices, logs one WARN, `/readyz` says 503; when the engine is back,
/// one INFO and `/readyz` 200 — and every instance still gets exactly one follow-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_while_every_slot_is_busy_is_reported_once_by_the_client() {
    let scenario = Scenario::on(shared_engine(), "busy_outage").await;
    // Slow completes keep both slots busy: the fetch loop waits for a slot, not for the engine.
    scenario.proxy.add_rule(
        Rule::on("POST", r"/external-task/[^/]+/complete$")
            .then(Fault::Delay(Duration::from_millis(200))),
    );
    let ids = scenario
        .rest
        .start_instances(&scenario.key, "busy_outage", INSTANCES)
        .await;
    // A call the dead proxy neither answers nor closes fails after the request timeout.
    let mut worker = scenario.worker(&[
        "--max-tasks",
        "2",
        "--max-backoff",
        "1s",
        "--request-timeout",
        "2s",
    ]);
    eventually(RUN_LIMIT, "a few completions", || async {
        (worker.count("camunda_worker_tasks_completed_total").await >= 4).then_some(())
    })
    .await;
    scenario.proxy.set_down(true);
    eventually(
        Duration::from_secs(30),
        "/readyz reports the engine gone",
        || async { (worker.probe("/readyz").await == 503).then_some(()) },
    )
    .await;
    // An observation window, not a deadline: the worker keeps trying while the engine is gone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    worker.assert_running("during the outage");
    scenario.proxy.set_down(false);
    eventually(
        Duration::from_secs(30),
        "/readyz reports the engine back",
        || async { (worker.probe("/readyz").await == 200).then_some(()) },
    )
    .await;
    scenario
        .assert_exactly_once(&mut worker, "busy_outage", &ids)
        .await;
    // Read once the process has exited: every line it wrote is in.
    let log_after = stop_and_read(worker);
    assert_eq!(
        lines_with(&log_after, "engine unavailable"),
        1,
        "{log_after}"
    );
    assert_eq!(
        lines_with(&log_after, "the engine answers again"),
        1,
        "{log_after}"
    );
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

/// An idle worker on an engine that cancels parked polls (`fetch-and-lock-unique-worker-request`,
/// on in the bundled engine) exits within moments of SIGTERM: without the cancel, its sweep
/// would wait for the 60 s long poll, cut off only by the 25 s grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_cancels_its_parked_poll_and_exits_at_once() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (_, topic, message) = rest.deploy_variant("idle_exit").await;
    let mut worker = WorkerProcess::spawn(
        "idle",
        &engine.url,
        &[
            "--topic",
            &topic,
            "--message-name",
            &message,
            "--long-poll",
            "60s",
            "--reconcile-interval",
            "0",
        ],
    );
    eventually(Duration::from_secs(30), "the worker ready", || async {
        (worker.probe("/readyz").await == 200).then_some(())
    })
    .await;
    // An observation window, not a deadline: the first long poll goes out and parks.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(worker.terminate(Duration::from_secs(10)), Some(0));
    let log = worker.stderr();
    assert!(!log.contains("abandoned long poll"), "{log}");
}

/// A worker restarted under traffic: the old one stops with SIGTERM (exit 0) while instances keep
/// arriving, and no task stays locked by its worker id — neither on an engine that cancels the
/// parked poll (the bundled one) nor on one that cannot (the sweep outlasts the poll's expiry).
async fn restart_under_traffic(engine: &RealEngine, suffix: &str, old_flags: &[&str]) {
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant(suffix).await;
    let old_id = format!("{suffix}-old-{}", std::process::id());
    let keep_starting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let traffic = {
        let rest = rest.clone();
        let key = key.clone();
        let suffix = suffix.to_owned();
        let keep_starting = std::sync::Arc::clone(&keep_starting);
        tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut round = 0;
            while keep_starting.load(std::sync::atomic::Ordering::SeqCst) {
                ids.extend(
                    rest.start_instances(&key, &format!("{suffix}-{round}"), 2)
                        .await,
                );
                round += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ids
        })
    };
    let mut flags = vec![
        "--worker-id",
        &old_id,
        "--topic",
        &topic,
        "--message-name",
        &message,
        "--correlation-delay",
        "200ms",
        // A stranded task would hold for 5 minutes: far past every wait below.
        "--lock-duration",
        "5m",
    ];
    flags.extend(old_flags);
    let mut old = WorkerProcess::spawn("old", &engine.url, &flags);
    eventually(RUN_LIMIT, "the old worker at work", || async {
        (old.count("camunda_worker_tasks_completed_total").await >= 20).then_some(())
    })
    .await;
    assert_eq!(
        old.terminate(crate::support::SHUTDOWN_LIMIT),
        Some(0),
        "{}",
        old.stderr()
    );
    let locked_by_old = || async {
        rest.count(
            "external-task/count",
            &[
                ("topicName", &topic),
                ("workerId", &old_id),
                ("locked", "true"),
            ],
        )
        .await
    };
    // Instances arrive while no worker runs: none may be locked for the worker that is gone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        locked_by_old().await,
        0,
        "a task is locked by the stopped worker"
    );
    let new = WorkerProcess::spawn(
        "new",
        &engine.url,
        &[
            "--topic",
            &topic,
            "--message-name",
            &message,
            "--correlation-delay",
            "200ms",
        ],
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    keep_starting.store(false, std::sync::atomic::Ordering::SeqCst);
    let ids = traffic.await.unwrap();
    // Bounded well below the old worker's 5-minute lock: nothing waits for a lock to expire.
    rest.wait_instances_ended(&ids, Duration::from_secs(90))
        .await;
    assert_eq!(locked_by_old().await, 0);
    assert_eq!(rest.incidents(&key).await, 0, "no incidents");
    stop(new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restarted_under_traffic_strands_no_task_on_an_engine_that_cancels_its_poll() {
    restart_under_traffic(shared_engine(), "restart_cancel", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restarted_under_traffic_strands_no_task_on_an_engine_that_cannot() {
    // The sweep must cover the old worker's last poll (5 s) plus the engine's lateness.
    restart_under_traffic(
        plain_engine(),
        "restart_sweep",
        &["--long-poll", "5s", "--shutdown-grace", "15s"],
    )
    .await;
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
fn plain_engine() -> &'static RealEngine {
    engine_with(&[
        "--camunda.bpm.history-level=none",
        "--server.servlet.context-parameters.fetch-and-lock-unique-worker-request=false",
    ])
}
