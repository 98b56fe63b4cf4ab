//! A `complete` route's command while it runs, on the real engine: its task stays locked past
//! the lock duration (no other worker gets it), it holds a `--max-tasks` slot, and a shutdown
//! whose grace runs out kills the command's process group and hands the lock back, so the next
//! worker takes the task at once.

use std::time::Duration;

use serde_json::{json, Value};

use crate::complete_kind::{
    complete_route, deploy_plain, history_variables, python_command, start_one, WAIT,
};
use crate::support::engine::{shared_engine, Rest};
use crate::support::metrics::engine_requests;
use crate::support::{eventually, metric_value, WorkerProcess, SHUTDOWN_LIMIT};

/// The engine's log of a task's completions (`successLog`): the worker ids that completed it.
async fn completions(rest: &Rest, task: &str) -> Vec<String> {
    let logs = rest
        .get(
            "history/external-task-log",
            &[("externalTaskId", task), ("successLog", "true")],
        )
        .await;
    logs.as_array()
        .unwrap()
        .iter()
        .map(|log| log["workerId"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The one external task of `instance`, once it exists.
async fn task_of(rest: &Rest, instance: &str) -> Value {
    eventually(WAIT, "the instance's external task", || async {
        let found = rest
            .get("external-task", &[("processInstanceId", instance)])
            .await;
        found.as_array().unwrap().first().cloned()
    })
    .await
}

/// `lock_duration = "2s"` and a command that runs about 5 s: the lock is extended while it runs,
/// so a second worker polling the same topic meanwhile never gets the task; the command runs
/// once and the engine logs one completion, by the first worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_is_extended_past_its_duration_while_the_command_runs() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic) = deploy_plain(&rest, "long_lock").await;
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let command = python_command(
        dir.path(),
        "slow.py",
        &format!(
            "import json, time\nopen({:?}, 'a').write('run\\n')\ntime.sleep(5)\nprint(json.dumps({{'slow': True}}))\n",
            runs.to_str().unwrap()
        ),
    );
    let file = complete_route(&topic, &command, "lock_duration = \"2s\"\n");
    let config = file.path().to_str().unwrap();
    let instance = start_one(&rest, &key, "slow-1").await;
    let first = WorkerProcess::spawn(
        "first",
        &engine.url,
        &["--config", config, "--worker-id", "first"],
    );
    let task = eventually(WAIT, "the first worker locks the task", || async {
        let task = task_of(&rest, &instance).await;
        (task["workerId"] == json!("first")).then_some(task)
    })
    .await;
    let task_id = task["id"].as_str().unwrap().to_owned();
    let second = WorkerProcess::spawn(
        "second",
        &engine.url,
        &["--config", config, "--worker-id", "second"],
    );

    rest.wait_instances_completed(std::slice::from_ref(&instance), WAIT)
        .await;
    assert_eq!(completions(&rest, &task_id).await, vec!["first".to_owned()]);
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 1);
    let completed = format!("camunda_worker_tasks_completed_total{{topic=\"{topic}\"}}");
    let metrics = first.scrape_settled(&completed, 1.0).await;
    assert_eq!(metric_value(&metrics, &completed), 1.0, "{metrics}");
    assert_eq!(second.metric(&completed).await, 0.0);
    assert!(
        engine_requests(&metrics, Some("extendLock")) >= 1.0,
        "the lock was extended: {metrics}"
    );
}

/// `--max-tasks 1` and three instances: the command holds the one slot while it runs, so no two
/// runs overlap (each would fail, seeing another's mark) and every instance ends completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_command_holds_its_max_tasks_slot() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic) = deploy_plain(&rest, "one_slot").await;
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("running");
    let command = python_command(
        dir.path(),
        "alone.py",
        &format!(
            "import json, os, sys, time\ntry:\n    os.mkdir({mark:?})\nexcept FileExistsError:\n    print('another run is going on', file=sys.stderr)\n    sys.exit(1)\ntime.sleep(1)\nos.rmdir({mark:?})\nprint(json.dumps({{'alone': True}}))\n",
            mark = mark.to_str().unwrap()
        ),
    );
    let file = complete_route(&topic, &command, "retries = 0\n");
    let instances = vec![
        start_one(&rest, &key, "slot-1").await,
        start_one(&rest, &key, "slot-2").await,
        start_one(&rest, &key, "slot-3").await,
    ];
    let worker = WorkerProcess::spawn(
        "one-slot",
        &engine.url,
        &[
            "--config",
            file.path().to_str().unwrap(),
            "--max-tasks",
            "1",
        ],
    );
    rest.wait_instances_completed(&instances, WAIT).await;
    let completed = format!("camunda_worker_tasks_completed_total{{topic=\"{topic}\"}}");
    let metrics = worker.scrape_settled(&completed, 3.0).await;
    assert_eq!(metric_value(&metrics, &completed), 3.0, "{metrics}");
    let failed = format!("camunda_worker_tasks_failed_total{{topic=\"{topic}\"}}");
    assert_eq!(metric_value(&metrics, &failed), 0.0, "{metrics}");
    assert_eq!(rest.incidents(&key).await, 0);
}

/// SIGTERM while the command runs (it and a child of its own sleep far past the grace): when
/// the grace runs out the worker kills the command's whole process group and unlocks the task
/// (the engine shows no lock), and a second worker takes it at once and completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_an_abandoned_command_is_killed_and_its_task_unlocked_for_the_next_worker() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic) = deploy_plain(&rest, "handed_back").await;
    let dir = tempfile::tempdir().unwrap();
    let fast = dir.path().join("fast");
    let pids = dir.path().join("pids");
    let command = python_command(
        dir.path(),
        "stubborn.py",
        &format!(
            "import json, os, subprocess, sys, time\nif os.path.exists({fast:?}):\n    print(json.dumps({{'by': 'next'}}))\n    sys.exit(0)\nchild = subprocess.Popen(['sleep', '600'])\nopen({pids:?}, 'w').write(f'{{os.getpid()}} {{child.pid}}\\n')\ntime.sleep(600)\n",
            fast = fast.to_str().unwrap(),
            pids = pids.to_str().unwrap(),
        ),
    );
    // A lock far longer than the test may wait: only the unlock lets the next worker in.
    let file = complete_route(&topic, &command, "lock_duration = \"10m\"\n");
    let config = file.path().to_str().unwrap();
    let instance = start_one(&rest, &key, "stop-1").await;
    let mut stopping = WorkerProcess::spawn(
        "stopping",
        &engine.url,
        &[
            "--config",
            config,
            "--worker-id",
            "stopping",
            "--shutdown-grace",
            "2s",
        ],
    );
    let running: Vec<i32> = eventually(WAIT, "the command and its child run", || async {
        let text = std::fs::read_to_string(&pids).ok()?;
        let pids: Vec<i32> = text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        (pids.len() == 2).then_some(pids)
    })
    .await;
    let task_id = task_of(&rest, &instance).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        stopping.terminate(SHUTDOWN_LIMIT),
        Some(1),
        "abandoned work is no clean drain; log:\n{}",
        stopping.stderr()
    );
    for pid in running {
        eventually(
            Duration::from_secs(10),
            &format!("process {pid} ended"),
            || async {
                let alive = std::process::Command::new("kill")
                    .args(["-0", &pid.to_string()])
                    .stderr(std::process::Stdio::null())
                    .status()
                    .unwrap()
                    .success();
                (!alive || is_zombie(pid)).then_some(())
            },
        )
        .await;
    }
    let task = rest.get(&format!("external-task/{task_id}"), &[]).await;
    assert_eq!(task["workerId"], Value::Null, "{task}");
    assert_eq!(task["lockExpirationTime"], Value::Null, "{task}");

    std::fs::write(&fast, "").unwrap();
    let _next = WorkerProcess::spawn(
        "next",
        &engine.url,
        &["--config", config, "--worker-id", "next"],
    );
    rest.wait_instances_completed(std::slice::from_ref(&instance), WAIT)
        .await;
    assert_eq!(completions(&rest, &task_id).await, vec!["next".to_owned()]);
    let variables = history_variables(&rest, &instance).await;
    assert!(
        variables.contains(&("by".to_owned(), "String".to_owned(), json!("next"))),
        "{variables:?}"
    );
}

/// Whether `pid` is a zombie: ended, waiting for a parent that is gone to be reaped by init.
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}
