//! Real-engine resilience scenarios: shutdown under load, crash recovery, replicas, an engine
//! restart, and Basic auth.
//!
//! Every scenario runs the worker binary as an operator would, judges it by the engine's state and
//! by the worker's own `/metrics`, and bounds every wait. Tests on the shared engine deploy a
//! process of their own (key, topic and message renamed), so they can run side by side.

use std::time::Duration;

use serde_json::json;
use tempfile::NamedTempFile;

use crate::support::engine::{shared_engine, EngineOptions, RealEngine, Rest};
use crate::support::{
    binary, deploy_with_binary, eventually, metric_sum, metric_value, settled_total, WorkerProcess,
};

const TASKS_COMPLETED: &str = "camunda_worker_tasks_completed_total";
const FOLLOW_UPS_SENT: &str = "camunda_worker_follow_ups_sent_total";
const FOLLOW_UPS_RECOVERED: &str = "camunda_worker_follow_ups_recovered_total";

/// Instances waiting at the catch event for `message`.
async fn waiting_for(rest: &Rest, message: &str) -> u64 {
    rest.count(
        "event-subscription/count",
        &[("eventType", "message"), ("eventName", message)],
    )
    .await
}

/// External tasks of `topic` not yet completed (locked or not).
async fn tasks_left(rest: &Rest, topic: &str) -> u64 {
    rest.count("external-task/count", &[("topicName", topic)])
        .await
}

/// Waits until at least `n` instances of `key` are COMPLETED.
async fn wait_for_completed(rest: &Rest, key: &str, n: u64, limit: Duration) {
    eventually(
        limit,
        &format!("{n} instances of {key} completed"),
        || async { (rest.completed(key).await >= n).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_every_follow_up_and_exits_zero() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("sigterm").await;
    rest.start_instances(&key, "sigterm", 300).await;

    // A short lock, so that a task whose fetch reply was cut off by the shutdown comes back soon.
    let flags = [
        "--topic",
        &topic,
        "--message-name",
        &message,
        "--correlation-delay",
        "1s",
        "--shutdown-grace",
        "25s",
        "--lock-duration",
        "10s",
        // One task at a time, so that the signal surely lands mid-run (with more slots the whole
        // batch can be done before the test has seen the first completions).
        "--max-tasks",
        "1",
    ];
    let mut first = WorkerProcess::spawn("first", &engine.url, &flags);
    wait_for_completed(&rest, &key, 1, Duration::from_secs(120)).await;
    first.assert_running("under load");
    let code = first.terminate(crate::support::SHUTDOWN_LIMIT);
    assert_eq!(code, Some(0), "a drained shutdown exits 0");
    assert!(
        first
            .stderr()
            .contains("shutdown complete: every task and follow-up finished"),
        "{}",
        first.stderr()
    );

    // Every task the worker completed got its message during the drain: nothing waits at the
    // catch event, and each instance is either COMPLETED or still at the service task.
    assert_eq!(
        waiting_for(&rest, &message).await,
        0,
        "instances left waiting"
    );
    let completed = rest.completed(&key).await;
    let left = tasks_left(&rest, &topic).await;
    assert_eq!(
        completed + left,
        300,
        "{completed} completed, {left} tasks left"
    );
    assert!(left > 0, "the SIGTERM came after all the work was done");
    assert_eq!(rest.incidents(&key).await, 0, "no incidents");

    // A second worker finishes the rest.
    let mut second = WorkerProcess::spawn(
        "second",
        &engine.url,
        &[
            "--topic",
            &topic,
            "--message-name",
            &message,
            "--correlation-delay",
            "500ms",
            "--long-poll",
            "5s",
        ],
    );
    rest.wait_completed(&key, 300, Duration::from_secs(150))
        .await;
    assert_eq!(second.terminate(crate::support::SHUTDOWN_LIMIT), Some(0));
    assert_eq!(waiting_for(&rest, &message).await, 0);
    assert_eq!(rest.incidents(&key).await, 0, "no incidents");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_complete_500_instances_each_task_exactly_once() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("replicas").await;

    let mut replicas: Vec<WorkerProcess> = (0..3)
        .map(|i| {
            let id = format!("replica-{i}");
            WorkerProcess::spawn(
                &id,
                &engine.url,
                &[
                    "--worker-id",
                    &id,
                    "--topic",
                    &topic,
                    "--message-name",
                    &message,
                    "--correlation-delay",
                    "500ms",
                ],
            )
        })
        .collect();
    rest.start_instances(&key, "replicas", 500).await;
    rest.wait_completed(&key, 500, Duration::from_secs(240))
        .await;

    for replica in &mut replicas {
        replica.assert_running("after the run");
    }
    let all: Vec<&WorkerProcess> = replicas.iter().collect();
    let delivered = settled_total(&all, &[FOLLOW_UPS_SENT, FOLLOW_UPS_RECOVERED], 500).await;
    settled_total(&all, &[TASKS_COMPLETED], 500).await;
    let mut completed = Vec::new();
    for replica in &replicas {
        completed.push(replica.count(TASKS_COMPLETED).await);
    }
    eprintln!("tasks completed per replica: {completed:?}");
    if completed.iter().sum::<u64>() != 500 {
        // What the replicas say about the tasks they did not count, for the failure below.
        for replica in &replicas {
            let metrics = replica.scrape().await;
            let dropped: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("camunda_worker_tasks_dropped_total"))
                .collect();
            eprintln!("{}: {dropped:?}\n{}", replica.name, replica.stderr());
        }
    }
    assert_eq!(
        completed.iter().sum::<u64>(),
        500,
        "each task completed exactly once: {completed:?}"
    );
    assert_eq!(delivered, 500, "each message correlated exactly once");
    assert_eq!(waiting_for(&rest, &message).await, 0);
    assert_eq!(rest.incidents(&key).await, 0, "no incidents");
    for replica in &mut replicas {
        let code = replica.terminate(crate::support::SHUTDOWN_LIMIT);
        assert_eq!(code, Some(0), "replica {} exits 0", replica.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_one_of_three_replicas_is_killed_mid_run_the_survivors_finish_every_instance() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("replica_kill").await;
    rest.start_instances(&key, "replica_kill", 300).await;

    // Short locks and reconciler passes, so that the survivors take over soon. The victim holds
    // its follow-ups for a minute, so that every message it owed is provably lost with it.
    let replica = |id: &str, delay: &str| {
        WorkerProcess::spawn(
            id,
            &engine.url,
            &[
                "--worker-id",
                id,
                "--topic",
                &topic,
                "--message-name",
                &message,
                "--correlation-delay",
                delay,
                "--lock-duration",
                "5s",
                "--long-poll",
                "5s",
                "--reconcile-interval",
                "5s",
            ],
        )
    };
    let mut victim = replica("victim", "60s");
    let mut survivors = [replica("survivor-1", "2s"), replica("survivor-2", "2s")];

    let owed = eventually(
        Duration::from_secs(120),
        "a third of the tasks completed, some by the victim",
        || async {
            let left = tasks_left(&rest, &topic).await;
            let by_victim = victim.count(TASKS_COMPLETED).await;
            (left <= 200 && by_victim > 0).then_some(by_victim)
        },
    )
    .await;
    assert_eq!(victim.count(FOLLOW_UPS_SENT).await, 0);
    victim.kill_hard();
    assert!(
        rest.completed(&key).await < 300,
        "the kill came after the run"
    );

    rest.wait_completed(&key, 300, Duration::from_secs(180))
        .await;
    for survivor in &mut survivors {
        survivor.assert_running("after the run");
    }
    let both: Vec<&WorkerProcess> = survivors.iter().collect();
    settled_total(&both, &[FOLLOW_UPS_SENT, FOLLOW_UPS_RECOVERED], 300).await;
    let mut sent = 0;
    let mut recovered = 0;
    for survivor in &survivors {
        sent += survivor.count(FOLLOW_UPS_SENT).await;
        recovered += survivor.count(FOLLOW_UPS_RECOVERED).await;
    }
    eprintln!("victim owed at least {owed}; survivors sent {sent}, recovered {recovered}");
    assert!(
        recovered >= owed,
        "the survivors recovered {recovered} of the victim's {owed} lost follow-ups"
    );
    assert_eq!(
        sent + recovered,
        300,
        "each message correlated exactly once"
    );
    assert_eq!(waiting_for(&rest, &message).await, 0);
    assert_eq!(tasks_left(&rest, &topic).await, 0);
    assert_eq!(rest.incidents(&key).await, 0, "no incidents");
    for survivor in &mut survivors {
        let code = survivor.terminate(crate::support::SHUTDOWN_LIMIT);
        assert_eq!(code, Some(0), "{} exits 0", survivor.name);
    }
}

/// The engine is stopped mid-run (file H2, so its state survives) and started again on the same
/// port: the worker rides it out without a restart, and every instance gets exactly one
/// follow-up. Judged by the engine's state and the worker's metrics only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_rides_out_an_engine_restart_without_being_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let engine = RealEngine::start(EngineOptions {
        h2_file: Some(dir.path().join("engine")),
        ..Default::default()
    });
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("restart").await;
    rest.start_instances(&key, "restart", 200).await;

    // Two tasks at a time, so that the engine goes away mid-run; a short backoff cap, so that the
    // worker notices the engine is back soon after it is.
    let mut worker = WorkerProcess::spawn(
        "worker",
        &engine.url,
        &[
            "--topic",
            &topic,
            "--message-name",
            &message,
            "--max-tasks",
            "2",
            "--correlation-delay",
            "1s",
            "--max-backoff",
            "5s",
        ],
    );
    eventually(Duration::from_secs(90), "30 tasks completed", || async {
        (worker.count(TASKS_COMPLETED).await >= 30).then_some(())
    })
    .await;
    engine.stop();
    let before = worker.count(TASKS_COMPLETED).await;
    assert!(before < 200, "the engine stopped after the run");
    eventually(
        Duration::from_secs(60),
        "/readyz reports the engine gone",
        || async { (worker.probe("/readyz").await == 503).then_some(()) },
    )
    .await;
    // An observation window: the worker keeps trying while the engine is gone.
    tokio::time::sleep(Duration::from_secs(10)).await;
    worker.assert_running("while the engine was down");

    let _restarted = engine.restart();
    rest.wait_completed(&key, 200, Duration::from_secs(180))
        .await;
    worker.assert_running("after the run");
    eventually(
        Duration::from_secs(60),
        "/readyz reports the engine back",
        || async { (worker.probe("/readyz").await == 200).then_some(()) },
    )
    .await;
    // The engine commits before it answers: wait for the worker to count the last reply.
    let metrics = eventually(
        Duration::from_secs(30),
        "the worker counted every follow-up",
        || async {
            let metrics = worker.scrape().await;
            (metric_value(&metrics, FOLLOW_UPS_SENT) >= 200.0).then_some(metrics)
        },
    )
    .await;
    let completed = metric_value(&metrics, TASKS_COMPLETED);
    let sent = metric_value(&metrics, FOLLOW_UPS_SENT);
    let given_up = metric_sum(&metrics, "camunda_worker_follow_ups_given_up_total", &[]);
    let recovered = metric_value(&metrics, FOLLOW_UPS_RECOVERED);
    assert_eq!(
        completed, 200.0,
        "each task completed by this worker: {metrics}"
    );
    assert_eq!(
        sent + recovered,
        200.0,
        "each message delivered once: {metrics}"
    );
    assert_eq!(completed, sent + given_up, "the counters add up: {metrics}");
    assert_eq!(given_up, 0.0, "{metrics}");
    assert_eq!(
        metric_value(
            &metrics,
            &format!("camunda_worker_engine_up{{node=\"{}\"}}", engine.url)
        ),
        1.0
    );
    assert_eq!(waiting_for(&rest, &message).await, 0);
    assert_eq!(tasks_left(&rest, &topic).await, 0);
    assert_eq!(rest.incidents(&key).await, 0, "no incidents");
    assert_eq!(worker.terminate(crate::support::SHUTDOWN_LIMIT), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_basic_auth_right_credentials_complete_instances_and_wrong_ones_are_reported_once() {
    let engine = RealEngine::start(EngineOptions {
        basic_auth: true,
        h2_file: None,
        ..Default::default()
    });
    let rest = Rest::new(&engine.url).with_basic("demo", "demo");

    // Without credentials the engine refuses; with them the binary deploys.
    let refused = binary()
        .args(["--engine-url", &engine.url, "deploy"])
        .output()
        .unwrap();
    let refused_err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{refused_err}");
    assert!(
        refused_err.contains("engine rejected the credentials"),
        "{refused_err}"
    );
    deploy_with_binary(&[
        "--engine-url",
        &engine.url,
        "--username",
        "demo",
        "--password",
        "demo",
        "deploy",
    ]);

    // (a) The right credentials, given as a flag (for the bundled process the binary deployed),
    // then in a file (for a variant of its own: a stopped worker's last long poll stays parked in
    // the engine, and could lock tasks of a topic it served).
    let password_file = NamedTempFile::new().unwrap();
    std::fs::write(password_file.path(), "demo\n").unwrap();
    let file = password_file.path().to_str().unwrap();
    let bundled = (
        "message_correlation".to_owned(),
        "messageSending".to_owned(),
        "sample_response".to_owned(),
    );
    let variant = rest.deploy_variant("password_file").await;
    for (name, credentials, (key, topic, message)) in [
        ("password", ["--password", "demo"], bundled),
        ("password-file", ["--password-file", file], variant),
    ] {
        rest.start_instances(&key, name, 20).await;
        let flags = [
            "--username",
            "demo",
            credentials[0],
            credentials[1],
            "--topic",
            &topic,
            "--message-name",
            &message,
            "--correlation-delay",
            "500ms",
        ];
        let mut worker = WorkerProcess::spawn(name, &engine.url, &flags);
        rest.wait_completed(&key, 20, Duration::from_secs(90)).await;
        assert_eq!(worker.probe("/readyz").await, 200, "{name}: ready");
        assert_eq!(worker.terminate(crate::support::SHUTDOWN_LIMIT), Some(0));
        assert_eq!(rest.incidents(&key).await, 0, "{name}: no incidents");
    }

    // (b) Wrong credentials, for a throwaway user (wrong passwords can lock a user out).
    let (status, body) = rest
        .post(
            "user/create",
            json!({
                "profile": {
                    "id": "mallory",
                    "firstName": "Mallory",
                    "lastName": "Test",
                    "email": "mallory@example.com"
                },
                "credentials": {"password": "right-one"}
            }),
        )
        .await;
    assert_eq!(status, 204, "user/create: {body}");
    let wrong = "wrong-Pa55word-7c1e";
    let mut mallory = WorkerProcess::spawn(
        "mallory",
        &engine.url,
        &["--username", "mallory", "--password", wrong],
    );
    // An observation window, not a deadline: what the worker does in five seconds of refusals.
    tokio::time::sleep(Duration::from_secs(5)).await;
    mallory.assert_running("while the engine refuses its credentials");
    let errors = crate::support::metric_sum(
        &mallory.scrape().await,
        "camunda_worker_fetch_requests_total",
        &["outcome=\"error\""],
    ) as u64;
    assert!(
        (1..=6).contains(&errors),
        "{errors} refused fetches in 5 s: expected a few, with backoff"
    );
    assert_eq!(mallory.count(TASKS_COMPLETED).await, 0);
    // Not ready (the engine refuses us), but alive: the loop keeps polling, with backoff.
    assert_eq!(mallory.probe("/readyz").await, 503);
    assert_eq!(mallory.probe("/healthz").await, 200);
    assert_eq!(mallory.terminate(crate::support::SHUTDOWN_LIMIT), Some(0));

    let log = mallory.stderr();
    let needle = "engine rejected the credentials for user mallory";
    let errors_logged = log
        .lines()
        .filter(|l| l.contains(" ERROR ") && l.contains(needle))
        .count();
    assert_eq!(
        errors_logged, 1,
        "one ERROR line, not one per retry:\n{log}"
    );
    let mentions = log.lines().filter(|l| l.contains(needle)).count();
    assert!(mentions <= 3, "{mentions} lines about the refusal:\n{log}");
    assert!(
        !log.contains(wrong),
        "the password leaked into the log:\n{log}"
    );
}
