//! The ledger under faults: the worker binary against the real engine through the fault proxy,
//! where a follow-up is given up and recovered later, and where three replicas' reconcilers race
//! each other's live follow-ups.

use std::time::Duration;

use serde_json::Value;

use crate::ledger::{
    accepted_messages, marker_of, owed_parts, FOLLOW_UPS_RECOVERED, MARKER, MESSAGE,
};
use crate::support::engine::{shared_engine, Rest};
use crate::support::proxy::{Fault, FaultKind, FaultProxy, Rule};
use crate::support::{eventually, lines_with, WorkerProcess};

const GIVEN_UP_TIMEOUT: &str = "camunda_worker_follow_ups_given_up_total{reason=\"timeout\"}";
const PENDING: &str = "camunda_worker_follow_ups_pending";
const INCIDENTS_RAISED: &str = "camunda_worker_follow_up_incidents_total";

/// Open incidents of one instance.
async fn open_incidents(rest: &Rest, instance: &str) -> Vec<Value> {
    let found = rest
        .get("incident", &[("processInstanceId", instance)])
        .await;
    found.as_array().unwrap().clone()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `/message` answers 500 (here the proxy's, for every attempt) until `--correlation-timeout`:
/// the follow-up is given up with one ERROR and an incident on the execution that waits (Cockpit
/// shows it, with the cause), its unit of capacity comes free, and the marker stays owed — so a
/// reconciler delivers it later, once the engine takes messages again, and resolves the incident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_failing_with_5xx_until_the_timeout_is_given_up_with_an_incident_and_recovered_later(
) {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("give_up_5xx").await;
    let proxy = FaultProxy::start(&format!("http://127.0.0.1:{}", engine.port)).await;
    let via_proxy = format!("{}/engine-rest", proxy.url());
    proxy.add_rule(Rule::on("POST", MESSAGE).then(Fault::Status(500)));
    let instance = rest.start_instances(&key, "gives-up", 1).await.remove(0);
    let flags = ["--topic", &topic, "--message-name", &message];

    let mut first = WorkerProcess::spawn(
        "first",
        &via_proxy,
        &[
            &flags[..],
            &[
                "--correlation-delay",
                "0s",
                "--correlation-timeout",
                "3s",
                "--reconcile-interval",
                "0",
                // One follow-up at a time: the next task is fetched only once this one's room is
                // back.
                "--max-pending-follow-ups",
                "1",
            ],
        ]
        .concat(),
    );
    eventually(
        Duration::from_secs(60),
        "the follow-up given up raised its incident",
        || async { (first.count(INCIDENTS_RAISED).await == 1).then_some(()) },
    )
    .await;
    assert_eq!(first.metric(GIVEN_UP_TIMEOUT).await, 1.0);
    eventually(
        Duration::from_secs(15),
        "no follow-up pending any more",
        || async { (first.metric(PENDING).await == 0.0).then_some(()) },
    )
    .await;
    let refused: Vec<_> = proxy
        .applied()
        .into_iter()
        .filter(|a| a.path.ends_with("/message"))
        .collect();
    assert!(
        refused.len() >= 2,
        "retried before the timeout: {refused:?}"
    );
    assert!(refused.iter().all(|a| a.kind == FaultKind::Status(500)));
    assert!(
        accepted_messages(&proxy.exchanges(), &instance).is_empty(),
        "no message reached the engine"
    );

    // The engine: still owed, still waiting, and an incident on the waiting execution.
    let owed = marker_of(&rest, &instance).await.expect("a marker");
    let (due_ms, task_id) = owed_parts(&owed, &topic);
    let waits = rest
        .get(
            "event-subscription",
            &[
                ("processInstanceId", &instance),
                ("eventType", "message"),
                ("eventName", &message),
            ],
        )
        .await;
    let waits = waits.as_array().unwrap();
    assert_eq!(waits.len(), 1, "the instance still waits: {waits:?}");
    let incidents = open_incidents(&rest, &instance).await;
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let incident = &incidents[0];
    assert_eq!(
        incident["incidentType"], "camundaWorkerFollowUp",
        "{incident}"
    );
    assert_eq!(
        incident["executionId"], waits[0]["executionId"],
        "{incident}"
    );
    assert_eq!(incident["activityId"], "wait_for_response", "{incident}");
    crate::support::assert_names_follow_up(&incident["configuration"], &task_id);
    let cause = incident["incidentMessage"].as_str().unwrap();
    assert!(
        cause.contains(&message)
            && cause.contains(&task_id)
            && cause.contains("--correlation-timeout")
            && cause.contains("500"),
        "the incident names the message, the task and the cause: {cause}"
    );

    // The capacity is free: with room for one follow-up, the worker takes the next task and
    // delivers its message (the engine takes messages again).
    proxy.clear_rules();
    let next = rest.start_instances(&key, "after-give-up", 1).await;
    rest.wait_instances_completed(&next, Duration::from_secs(60))
        .await;
    assert_eq!(first.terminate(crate::support::SHUTDOWN_LIMIT), Some(0));
    let log = first.stderr();
    assert_eq!(lines_with(&log, " ERROR "), 1, "one ERROR: {log}");
    let error = log.lines().find(|l| l.contains(" ERROR ")).unwrap();
    assert!(
        error.contains("given up")
            && error.contains("--correlation-timeout")
            && error.contains(&instance),
        "{error}"
    );
    assert_eq!(
        marker_of(&rest, &instance).await.as_deref(),
        Some(owed.as_str()),
        "the give-up left the marker owed"
    );

    // Later: another worker's reconciler finds the marker past due and delivers it.
    eventually(
        Duration::from_secs(30),
        "the owed marker is past its due time",
        || async { (now_ms() > due_ms).then_some(()) },
    )
    .await;
    let mut second = WorkerProcess::spawn(
        "second",
        &via_proxy,
        &[&flags[..], &["--reconcile-interval", "1s"]].concat(),
    );
    rest.wait_instances_completed(std::slice::from_ref(&instance), Duration::from_secs(60))
        .await;
    eventually(
        Duration::from_secs(15),
        "the recovery resolved the incident",
        || async {
            open_incidents(&rest, &instance)
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    assert_eq!(second.count(FOLLOW_UPS_RECOVERED).await, 1);
    let exchanges = proxy.exchanges();
    let delivered = accepted_messages(&exchanges, &instance);
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(
        delivered[0].body["correlationKeys"][MARKER]["value"],
        owed.as_str(),
        "the recovery named the owed marker"
    );
    assert_eq!(second.terminate(crate::support::SHUTDOWN_LIMIT), Some(0));
    let log = second.stderr();
    assert_eq!(lines_with(&log, " ERROR "), 0, "{log}");
}

/// Whether a message has the reconciler's shape: it names the instance, not the business key
/// (a live follow-up names both).
fn is_recovery(body: &Value) -> bool {
    body.get("businessKey").map_or(true, Value::is_null)
}

/// The task id in a message's owed marker.
fn task_of_message(body: &Value, topic: &str) -> String {
    let marker = body["correlationKeys"][MARKER]["value"].as_str().unwrap();
    owed_parts(marker, topic).1
}

/// Three replicas serve one topic while the engine refuses every message (503), so each holds
/// its ten follow-ups in backoff past their due time, and every replica's reconciler goes after
/// the other replicas' live follow-ups. Then one replica is killed (`kill -9`) and the engine
/// takes messages again: the live follow-ups and the reconcilers race for every instance, and
/// the killed replica's follow-ups are left to the survivors' reconcilers. The engine's
/// compare-and-set lets exactly one message through per instance; the survivors log no ERROR and
/// give nothing up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_one_killed_reconcilers_racing_live_follow_ups_deliver_each_once() {
    const PER_REPLICA: u64 = 10;
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("replicas_racing").await;
    let proxy = FaultProxy::start(&format!("http://127.0.0.1:{}", engine.port)).await;
    let via_proxy = format!("{}/engine-rest", proxy.url());
    proxy.add_rule(Rule::on("POST", MESSAGE).then(Fault::Status(503)));
    let ids = rest
        .start_instances(&key, "replica", 3 * PER_REPLICA as usize)
        .await;
    let room = PER_REPLICA.to_string();
    let spawn = |name: &str| {
        WorkerProcess::spawn(
            name,
            &via_proxy,
            &[
                "--worker-id",
                name,
                "--topic",
                &topic,
                "--message-name",
                &message,
                "--correlation-delay",
                "1s",
                "--reconcile-interval",
                "1s",
                "--max-backoff",
                "2s",
                "--max-tasks",
                "4",
                // A short long poll: the shutdown's sweep waits for the parked one to end.
                "--long-poll",
                "5s",
                // While no message goes through, each replica fetches exactly this many tasks.
                "--max-pending-follow-ups",
                &room,
            ],
        )
    };
    let mut survivors = [spawn("replica-a"), spawn("replica-b")];
    let mut victim = spawn("replica-c");
    for worker in survivors.iter().chain([&victim]) {
        eventually(
            Duration::from_secs(90),
            &format!("{} completed its share of the tasks", worker.name),
            || async {
                (worker.count(crate::ledger::TASKS_COMPLETED).await == PER_REPLICA).then_some(())
            },
        )
        .await;
    }
    // Which replica completed which task, from what the engine accepted.
    let completed_by: std::collections::HashMap<String, String> = proxy
        .exchanges()
        .iter()
        .filter(|e| e.path.ends_with("/complete") && e.engine_status == Some(204))
        .map(|e| {
            let task = e.path.rsplit('/').nth(1).unwrap().to_owned();
            (task, e.body["workerId"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(completed_by.len(), ids.len(), "{completed_by:?}");

    // A replica's reconciler leaves its own pending follow-ups alone: a recovery of a replica's
    // task while its follow-up is live comes from another replica.
    eventually(
        Duration::from_secs(120),
        "reconcilers went after the live follow-ups of every replica",
        || async {
            let raced: std::collections::HashSet<&str> = proxy
                .applied()
                .iter()
                .filter(|a| a.path.ends_with("/message") && is_recovery(&a.body))
                .filter_map(|a| completed_by.get(&task_of_message(&a.body, &topic)))
                .map(String::as_str)
                .collect();
            (raced.len() == 3).then_some(())
        },
    )
    .await;
    victim.assert_running("before the kill");
    victim.kill_hard();
    proxy.clear_rules();

    rest.wait_instances_completed(&ids, Duration::from_secs(180))
        .await;
    // An instance shows completed once the engine commits, a moment before its reply reaches the
    // proxy's record: wait for the record of every instance's accepted message.
    eventually(
        Duration::from_secs(60),
        "the proxy recorded an accepted message for every instance",
        || async {
            let exchanges = proxy.exchanges();
            ids.iter()
                .all(|instance| !accepted_messages(&exchanges, instance).is_empty())
                .then_some(())
        },
    )
    .await;
    let recovered =
        crate::support::settled_total(&[&survivors[0], &survivors[1]], &[FOLLOW_UPS_RECOVERED], 1)
            .await;
    let sent = crate::support::settled_total(
        &[&survivors[0], &survivors[1]],
        &[crate::ledger::FOLLOW_UPS_SENT],
        2 * PER_REPLICA,
    )
    .await;
    let exchanges = proxy.exchanges();
    for instance in &ids {
        let accepted = accepted_messages(&exchanges, instance);
        assert_eq!(
            accepted.len(),
            1,
            "one message for {instance}: {accepted:?}"
        );
        let task = task_of_message(&accepted[0].body, &topic);
        if completed_by[&task] == "replica-c" {
            assert!(
                is_recovery(&accepted[0].body),
                "the killed replica's follow-up came from a reconciler: {:?}",
                accepted[0]
            );
        }
    }
    let recoveries = exchanges
        .iter()
        .filter(|e| e.path.ends_with("/message") && e.engine_status == Some(204))
        .filter(|e| is_recovery(&e.body))
        .count() as u64;
    assert!(recoveries >= PER_REPLICA, "{recoveries}");
    assert_eq!(
        recovered, recoveries,
        "each recovery counted by its replica"
    );
    assert_eq!(
        sent,
        2 * PER_REPLICA,
        "each live follow-up ended as delivered, by itself or by a reconciler"
    );
    for worker in &survivors {
        let metrics = worker.scrape().await;
        let given_up =
            crate::support::metric_sum(&metrics, "camunda_worker_follow_ups_given_up_total", &[]);
        assert_eq!(given_up, 0.0, "{}: {metrics}", worker.name);
        worker.signal("TERM");
    }
    for worker in &mut survivors {
        assert_eq!(worker.wait_exit(crate::support::SHUTDOWN_LIMIT), Some(0));
        let log = worker.stderr();
        assert_eq!(lines_with(&log, " ERROR "), 0, "{}: {log}", worker.name);
        // The give-up's own line (the capacity notice mentions "given up" too).
        assert_eq!(
            lines_with(&log, "follow-up given up"),
            0,
            "{}: {log}",
            worker.name
        );
        assert_eq!(lines_with(&log, "gave up"), 0, "{}: {log}", worker.name);
    }
    assert_eq!(rest.incidents(&key).await, 0, "no incidents");
}
