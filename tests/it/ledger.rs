//! The engine keeps the ledger: each follow-up owed is a marker variable committed with the task's
//! completion, and flipped by the one message that can match it. These scenarios run the worker
//! binary against real engines at every history level and judge it by the engine's runtime state
//! (which every history level keeps) and the worker's own metrics. `ledger_faults.rs` adds the
//! scenarios that need the fault proxy to fail messages on purpose.

use std::time::{Duration, Instant};

use crate::support::engine::{engine_with, shared_engine, RealEngine, Rest};
use crate::support::proxy::{Exchange, Fault, FaultKind, FaultProxy, Rule};
use crate::support::work::looping_bpmn;
use crate::support::{engine_requests, eventually, lines_with, metric_value, WorkerProcess};

pub(crate) const FOLLOW_UPS_SENT: &str = "camunda_worker_follow_ups_sent_total";
pub(crate) const FOLLOW_UPS_RECOVERED: &str = "camunda_worker_follow_ups_recovered_total";
pub(crate) const TASKS_COMPLETED: &str = "camunda_worker_tasks_completed_total";
pub(crate) const MARKER: &str = "camundaWorkerFollowUp";
/// The message endpoint, as a proxy rule names it.
pub(crate) const MESSAGE: &str = r"/engine-rest/message$";

/// An engine at `level`, started once per level for the whole suite.
pub(crate) fn engine_at(level: &'static str) -> &'static RealEngine {
    engine_with(&[&format!("--camunda.bpm.history-level={level}")])
}

/// Instances of `key` still running (runtime state: there at every history level).
pub(crate) async fn running(rest: &Rest, key: &str) -> u64 {
    rest.count("process-instance/count", &[("processDefinitionKey", key)])
        .await
}

/// Instances waiting at the catch event for `message`.
pub(crate) async fn waiting_for(rest: &Rest, message: &str) -> u64 {
    rest.count(
        "event-subscription/count",
        &[("eventType", "message"), ("eventName", message)],
    )
    .await
}

/// Markers with the value `like` (a `%` pattern), across instances.
pub(crate) async fn markers_like(rest: &Rest, like: &str) -> u64 {
    let (status, body) = rest
        .post(
            "variable-instance/count",
            serde_json::json!({
                "variableName": MARKER,
                "variableValues": [{"name": MARKER, "operator": "like", "value": like}],
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["count"]
        .as_u64()
        .unwrap()
}

/// The value of an instance's marker variable, `None` when it has none (or has ended).
pub(crate) async fn marker_of(rest: &Rest, instance: &str) -> Option<String> {
    let found = rest
        .get(
            "variable-instance",
            &[("processInstanceIdIn", instance), ("variableName", MARKER)],
        )
        .await;
    found.as_array().unwrap().first().map(|v| {
        assert_eq!(v["type"], "String", "{v}");
        v["value"].as_str().unwrap().to_owned()
    })
}

/// An owed marker's due time (Unix ms) and task id: `owed:<topic>:<13 digits>:<task id>`.
pub(crate) fn owed_parts(marker: &str, topic: &str) -> (u64, String) {
    let rest = marker
        .strip_prefix(&format!("owed:{topic}:"))
        .unwrap_or_else(|| panic!("{marker} is not owed for topic {topic}"));
    let (due, task) = rest.split_once(':').unwrap();
    assert_eq!(due.len(), 13, "{marker}");
    (due.parse().unwrap(), task.to_owned())
}

/// Messages to `instance` the engine accepted (204), as the proxy saw them.
pub(crate) fn accepted_messages<'a>(
    exchanges: &'a [Exchange],
    instance: &str,
) -> Vec<&'a Exchange> {
    exchanges
        .iter()
        .filter(|e| e.path.ends_with("/message") && e.engine_status == Some(204))
        .filter(|e| e.body["processInstanceId"] == instance)
        .collect()
}

/// Starts a worker for a scenario: its name, the engine's URL, its flags.
pub(crate) type Spawn = fn(&str, &str, &[&str]) -> WorkerProcess;

/// A worker is killed with 100 follow-ups owed (its message name matches nothing, so none was
/// delivered); the next worker delivers every one from the markers alone, and nothing else.
async fn a_kill_9_with_follow_ups_owed_is_recovered_at(level: &'static str) {
    let name = format!("crash_{level}");
    let spawn: Spawn = WorkerProcess::spawn;
    owed_follow_ups_outlive_a_kill_9(level, &name, 100, spawn, spawn).await;
}

/// `instances` instances of a process of their own (`name`); the worker `doomed` starts completes
/// every task and is killed with every follow-up owed (its message name matches nothing, so none
/// was delivered); the worker `next` starts delivers each one from the markers alone, exactly
/// once, and completes no task of its own.
pub(crate) async fn owed_follow_ups_outlive_a_kill_9(
    level: &'static str,
    name: &str,
    instances: u64,
    doomed: Spawn,
    next: Spawn,
) {
    let engine = engine_at(level);
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant(name).await;
    rest.start_instances(&key, name, instances as usize).await;

    let mut dying = doomed(
        "doomed",
        &engine.url,
        &[
            "--topic",
            &topic,
            "--message-name",
            "nobody_waits_for_this",
            "--correlation-delay",
            "0s",
            "--reconcile-interval",
            "0",
        ],
    );
    eventually(
        Duration::from_secs(90),
        "every instance waits at the catch event with a follow-up owed",
        || async {
            let owed = markers_like(&rest, &format!("owed:{topic}:%")).await;
            (waiting_for(&rest, &message).await == instances && owed == instances).then_some(())
        },
    )
    .await;
    assert_eq!(dying.count(FOLLOW_UPS_SENT).await, 0);
    dying.kill_hard();

    let mut next = next(
        "next",
        &engine.url,
        &[
            "--topic",
            &topic,
            "--message-name",
            &message,
            "--reconcile-interval",
            "2s",
        ],
    );
    eventually(
        Duration::from_secs(120),
        "every instance continued and ended",
        || async { (running(&rest, &key).await == 0).then_some(()) },
    )
    .await;
    let recovered = eventually(
        Duration::from_secs(15),
        "the next worker counted every recovery",
        || async {
            let n = next.count(FOLLOW_UPS_RECOVERED).await;
            (n >= instances).then_some(n)
        },
    )
    .await;
    assert_eq!(
        recovered, instances,
        "each owed follow-up delivered exactly once (a second attempt would be counted too)"
    );
    assert_eq!(next.count(TASKS_COMPLETED).await, 0);
    assert_eq!(waiting_for(&rest, &message).await, 0);
    assert_eq!(next.terminate(crate::support::SHUTDOWN_LIMIT), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_at_history_full_the_next_worker_delivers_every_owed_follow_up() {
    a_kill_9_with_follow_ups_owed_is_recovered_at("full").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_at_history_audit_the_next_worker_delivers_every_owed_follow_up() {
    a_kill_9_with_follow_ups_owed_is_recovered_at("audit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_at_history_activity_the_next_worker_delivers_every_owed_follow_up() {
    a_kill_9_with_follow_ups_owed_is_recovered_at("activity").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_at_history_none_the_next_worker_delivers_every_owed_follow_up() {
    a_kill_9_with_follow_ups_owed_is_recovered_at("none").await;
}

/// A misspelled `--message-name`: the worker says what the instances wait for (a metric, and one
/// ERROR naming the message and the flag), and however many follow-ups keep failing, its load on
/// the engine stays within the retry budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelled_message_name_is_named_and_its_retries_stay_within_the_budget() {
    let engine = engine_at("audit");
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("misspelled").await;
    rest.start_instances(&key, "typo", 300).await;
    let typo = format!("{message}_typo");
    let mut worker = WorkerProcess::spawn(
        "typo",
        &engine.url,
        &[
            "--topic",
            &topic,
            "--message-name",
            &typo,
            "--correlation-delay",
            "0s",
            "--retry-budget",
            "20",
        ],
    );
    eventually(
        Duration::from_secs(90),
        "the worker names the message the instances wait for",
        || async {
            (worker.metric("camunda_worker_follow_ups_misdirected").await == 1.0).then_some(())
        },
    )
    .await;
    eventually(Duration::from_secs(90), "all 300 completed", || async {
        (worker.count(TASKS_COMPLETED).await == 300).then_some(())
    })
    .await;
    // The window starts once the exempt requests are made: 300 completes, and each follow-up's
    // first message and the marker read that decides its first mismatch. On a busy engine they
    // can take a while after the completions; everything after them is a retry.
    eventually(
        Duration::from_secs(90),
        "every follow-up made its first attempt",
        || async {
            let text = worker.scrape().await;
            let spent = metric_value(&text, "camunda_worker_retry_budget_spent_total");
            (engine_requests(&text, None) - spent >= 900.0).then_some(())
        },
    )
    .await;
    let before = engine_requests(&worker.scrape().await, None);
    let started = Instant::now();
    // Kept: a ten-second window whose requests are counted against the budget's rate.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = engine_requests(&worker.scrape().await, None);
    // The bound follows the time that really passed: the budget's rate, plus one second's burst.
    let allowed = 20.0 * started.elapsed().as_secs_f64() + 20.0;
    let made = after - before;
    assert!(
        made <= allowed,
        "{made} requests (besides fetches) in {:?}: more than the budget allows ({allowed})",
        started.elapsed()
    );
    assert!(made > 0.0, "the follow-ups do retry");
    assert_eq!(worker.count(FOLLOW_UPS_SENT).await, 0);
    let log = worker.stderr();
    assert_eq!(
        crate::support::lines_with(&log, "check --message-name"),
        1,
        "one ERROR naming the flag: {log}"
    );
    assert!(log.contains(&message) && log.contains("wait_for_response"));
    // SIGTERM: the undeliverable follow-ups stay owed in the engine and do not hold the grace.
    assert_eq!(worker.terminate(crate::support::SHUTDOWN_LIMIT), Some(0));
    let log = worker.stderr();
    assert_eq!(
        crate::support::lines_with(&log, "not delivered before shutdown"),
        1,
        "one WARN with the count: {log}"
    );
    assert_eq!(markers_like(&rest, &format!("owed:{topic}:%")).await, 300);
}

/// The `round` variable of an instance.
async fn round_of(rest: &Rest, instance: &str) -> i64 {
    let found = rest
        .get(
            "variable-instance",
            &[("processInstanceIdIn", instance), ("variableName", "round")],
        )
        .await;
    found[0]["value"].as_i64().unwrap()
}

/// A process that loops back to the catch event three times: each round's task sets a new owed
/// marker, so each round gets exactly one message. While round 2 waits (its message held at the
/// proxy), a stale recovery for round 1 — round 1's owed marker in `correlationKeys`, as a late
/// reconciler would send it — matches nothing, and leaves round 2's marker as it was for round
/// 2's own message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_process_gets_one_message_per_round_and_a_stale_recovery_matches_nothing() {
    const ROUNDS: usize = 3;
    const HOLD: Duration = Duration::from_secs(10);
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = (
        "ledger_loop".to_owned(),
        "ledgerLoop".to_owned(),
        "ledger_loop_done".to_owned(),
    );
    rest.deploy_bpmn(&key, looping_bpmn(&key, &topic, &message, ROUNDS as u32))
        .await;
    let proxy = FaultProxy::start(&format!("http://127.0.0.1:{}", engine.port)).await;
    // The second message is round 2 of the one instance started first: held before it is
    // forwarded, so that round 2 waits meanwhile.
    proxy.add_rule(
        Rule::on("POST", MESSAGE)
            .skip(1)
            .times(1)
            .then(Fault::Delay(HOLD)),
    );
    let stale_target = rest.start_instances(&key, "loop-stale", 1).await.remove(0);
    let mut worker = WorkerProcess::spawn(
        "loop",
        &format!("{}/engine-rest", proxy.url()),
        &[
            "--topic",
            &topic,
            "--message-name",
            &message,
            "--correlation-delay",
            "0s",
            "--reconcile-interval",
            "0",
        ],
    );
    let held = eventually(
        Duration::from_secs(60),
        "round 2's message is held at the proxy",
        || async {
            proxy
                .applied()
                .into_iter()
                .find(|a| a.kind == FaultKind::Delay(HOLD))
        },
    )
    .await;
    let held_at = held.at;
    assert_eq!(held.body["processInstanceId"], stale_target.as_str());
    let round_2 = held.body["correlationKeys"][MARKER]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let exchanges = proxy.exchanges();
    let round_1_message = accepted_messages(&exchanges, &stale_target);
    assert_eq!(round_1_message.len(), 1, "{round_1_message:?}");
    let round_1 = round_1_message[0].body["correlationKeys"][MARKER]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(round_1, round_2, "each round owes its own marker");
    assert_eq!(round_of(&rest, &stale_target).await, 2);
    assert_eq!(
        marker_of(&rest, &stale_target).await.as_deref(),
        Some(round_2.as_str())
    );
    // Other instances loop meanwhile, their messages unhindered.
    let others = rest.start_instances(&key, "loop", 4).await;

    // The stale recovery, straight to the engine, in the reconciler's shape.
    let (_, round_1_task) = owed_parts(&round_1, &topic);
    let (status, body) = rest
        .post(
            "message",
            serde_json::json!({
                "messageName": message,
                "processInstanceId": stale_target,
                "correlationKeys": {
                    MARKER: {"type": "String", "value": round_1, "valueInfo": {}}
                },
                "processVariables": {
                    MARKER: {"type": "String", "value": format!("delivered:{round_1_task}"), "valueInfo": {}}
                },
            }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("MismatchingMessageCorrelationException")
            && body.contains("No process definition or execution matches"),
        "{body}"
    );
    assert!(
        held_at.elapsed() < HOLD,
        "the stale message went while round 2's own was still held"
    );
    assert_eq!(
        marker_of(&rest, &stale_target).await.as_deref(),
        Some(round_2.as_str()),
        "the stale message changed nothing"
    );
    assert_eq!(round_of(&rest, &stale_target).await, 2);

    let mut all = others.clone();
    all.push(stale_target.clone());
    rest.wait_instances_completed(&all, Duration::from_secs(120))
        .await;
    // An instance shows completed once the engine commits its last message, a moment before that
    // reply reaches the proxy's record: wait for the record of every round's message (the count is
    // then checked exactly, so a duplicate still fails).
    eventually(
        Duration::from_secs(60),
        "the proxy recorded every round's accepted message",
        || async {
            let exchanges = proxy.exchanges();
            all.iter()
                .all(|instance| accepted_messages(&exchanges, instance).len() >= ROUNDS)
                .then_some(())
        },
    )
    .await;
    let exchanges = proxy.exchanges();
    for instance in &all {
        let accepted = accepted_messages(&exchanges, instance);
        let markers: std::collections::HashSet<&str> = accepted
            .iter()
            .map(|e| e.body["correlationKeys"][MARKER]["value"].as_str().unwrap())
            .collect();
        assert_eq!(accepted.len(), ROUNDS, "{instance}: {accepted:?}");
        assert_eq!(markers.len(), ROUNDS, "one per round: {markers:?}");
        let caught = rest
            .count(
                "history/activity-instance/count",
                &[
                    ("processInstanceId", instance),
                    ("activityId", "wait_for_response"),
                    ("finished", "true"),
                ],
            )
            .await;
        assert_eq!(caught, ROUNDS as u64, "{instance}: one catch per round");
    }
    assert!(
        accepted_messages(&exchanges, &stale_target)
            .iter()
            .any(|e| e.body["correlationKeys"][MARKER]["value"] == round_2.as_str()),
        "round 2 got its own message after the stale one"
    );
    assert!(
        exchanges
            .iter()
            .filter(|e| e.path.ends_with("/message"))
            .all(|e| e.engine_status == Some(204)),
        "the worker sent no message that matched nothing"
    );
    let sent = worker
        .scrape_settled(FOLLOW_UPS_SENT, (all.len() * ROUNDS) as f64)
        .await;
    assert_eq!(
        crate::support::metric_value(&sent, FOLLOW_UPS_SENT),
        (all.len() * ROUNDS) as f64
    );
    assert_eq!(worker.terminate(crate::support::SHUTDOWN_LIMIT), Some(0));
    let log = worker.stderr();
    assert_eq!(lines_with(&log, " ERROR "), 0, "{log}");
}
