//! A restart under traffic strands no task, on an engine that cancels an abandoned long poll and
//! on one that cannot; an idle worker cancels its parked poll and exits at once (the worker
//! binary against the real engine through the fault proxy).

use std::time::Duration;

use crate::delivery::{plain_engine, stop, RUN_LIMIT};
use crate::support::engine::{shared_engine, RealEngine, Rest};
use crate::support::{eventually, WorkerProcess};

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
                // Kept: the pace of the traffic generator (one round each 100 ms), not a wait for a state.
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
    // Kept: the old worker serves the traffic for two seconds before the restart; time passing is the point.
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
