//! A follow-up's work holds a lease on its marker for as long as it runs: two workers serve one
//! topic with works that run more than twice as long as the lease, each worker's reconciler passing
//! every second over the other's markers — and no work runs twice.

use std::time::Duration;

use crate::support::engine::{shared_engine, Rest};
use crate::support::{metric_sum, WorkerProcess};

/// A work that takes `seconds`, appending its task id to `runs` when it starts.
fn slow_work(dir: &std::path::Path, runs: &std::path::Path, seconds: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("slow-work.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ninput=$(cat)\ntask=$(printf '%s' \"$input\" | sed -E 's/.*\"taskId\":\"([^\"]+)\".*/\\1/')\necho \"$task\" >> {runs}\nsleep {seconds}\necho '{{\"slept\": {seconds}}}'\n",
            runs = runs.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_longer_than_its_lease_is_renewed_and_never_run_twice_by_racing_replicas() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("lease_race").await;
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let script = slow_work(dir.path(), &runs, 20);
    let script = script.to_str().unwrap();
    let flags = [
        "--topic",
        &topic,
        "--message-name",
        &message,
        "--correlation-delay",
        "0s",
        "--follow-up-command",
        script,
        "--follow-up-lease",
        "8s",
        "--reconcile-interval",
        "1s",
    ];
    let mut first = WorkerProcess::spawn("first", &engine.url, &flags);
    let mut second = WorkerProcess::spawn("second", &engine.url, &flags);
    let ids = rest.start_instances(&key, "lease", 4).await;
    rest.wait_instances_completed(&ids, Duration::from_secs(120))
        .await;

    let text = std::fs::read_to_string(&runs).unwrap();
    let mut started: Vec<&str> = text.lines().collect();
    assert_eq!(started.len(), 4, "one run per task, none twice: {text}");
    started.sort_unstable();
    started.dedup();
    assert_eq!(started.len(), 4, "four different tasks: {text}");
    let mut succeeded = 0.0;
    for worker in [&first, &second] {
        let metrics = worker.scrape().await;
        succeeded += metric_sum(
            &metrics,
            "camunda_worker_follow_up_work_runs_total",
            &["outcome=\"succeeded\""],
        );
        assert_eq!(
            metric_sum(&metrics, "camunda_worker_follow_ups_recovered_total", &[]),
            0.0,
            "{}: no reconciler took a leased follow-up over",
            worker.name
        );
    }
    assert_eq!(succeeded, 4.0);
    // History: each instance's work result arrived with its one message.
    for id in &ids {
        let slept = rest
            .get(
                "history/variable-instance",
                &[("processInstanceId", id), ("variableName", "slept")],
            )
            .await;
        assert_eq!(slept.as_array().map(Vec::len), Some(1), "{slept}");
        assert_eq!(slept[0]["type"], "Integer");
    }
    for worker in [&mut first, &mut second] {
        assert_eq!(worker.terminate(crate::support::SHUTDOWN_LIMIT), Some(0));
        let log = worker.stderr();
        assert_eq!(
            crate::support::lines_with(&log, "lease ran out"),
            0,
            "{}: {log}",
            worker.name
        );
    }
}
