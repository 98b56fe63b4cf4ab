//! The follow-up's work (issue 15): after the task is completed, the worker runs the work — here a
//! small command each test writes into a directory of its own — and sends the message with the
//! work's result. Every scenario runs the worker binary against the real engine and judges it by
//! the engine's state (history variables, incidents, the marker, the catch event's activity
//! instances), the worker's metrics, and the files the command writes.
//!
//! Each command is a Python script (`support/work.rs`) started with the interpreter's real path (not a version
//! manager's shim), so that its pid is the one the worker started and signals. The script gets its
//! directory as its first argument (`--follow-up-arg`), appends the task id to `runs` each time it
//! starts, and, where a test needs to find it, its pid to `pids`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::engine::{shared_engine, Rest};
use crate::support::work::{
    assert_one_message, assert_variable, delete_instance, history_variables, lease_of,
    open_incidents, resolve_incident, runs_of, start_instance, task_id_of, waits_for, worker_flags,
    Script, FOLLOW_UPS_SENT, GIVEN_UP, MARKER, PASSES, WAIT, WORK_RUNS,
};
use crate::support::{binary, eventually, metric_sum, WorkerProcess, SHUTDOWN_LIMIT};

/// `--message-var` values go with every message, typed like `--var` (1 → Integer, "x" → String,
/// an object → Json): once the instance has ended, its history shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_variables_arrive_with_the_message_typed_like_var() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("work_message_vars").await;
    let instance = start_instance(&rest, &key, "message-vars-1", json!({})).await;
    let mut worker = WorkerProcess::spawn(
        "message_vars",
        &engine.url,
        &[
            "--topic",
            &topic,
            "--message-name",
            &message,
            "--correlation-delay",
            "0s",
            "--message-var",
            "n=1",
            "--message-var",
            r#"s="x""#,
            "--message-var",
            r#"j={"a":1}"#,
        ],
    );
    rest.wait_instances_completed(std::slice::from_ref(&instance), WAIT)
        .await;
    let task_id = task_id_of(&rest, &instance).await;
    let variables = history_variables(&rest, &instance).await;
    assert_variable(&variables, "n", "Integer", json!(1));
    assert_variable(&variables, "s", "String", json!("x"));
    assert_variable(&variables, "j", "Json", json!({"a": 1}));
    assert_variable(
        &variables,
        MARKER,
        "String",
        json!(format!("delivered:{task_id}")),
    );
    assert_one_message(&rest, &instance).await;
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
}

/// A Python command gets the completed task on stdin — its id, topic, business key, instance and
/// only the variables named by `--fetch-var` — and what it prints goes with the message, typed:
/// a fetched variable echoed back, a number and an object of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_commands_result_arrives_with_the_message_and_it_saw_its_task() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("work_python").await;
    let script = Script::python(
        r#"
with open(path(task["taskId"] + ".json"), "w") as f:
    json.dump(task, f)
print("archiving order " + task["variables"]["orderId"], file=sys.stderr)
json.dump({"orderEcho": task["variables"]["orderId"], "pages": 3,
           "receipt": {"archived": True, "by": "python"}}, sys.stdout)
"#,
    );
    let instance = start_instance(
        &rest,
        &key,
        "work-python-1",
        json!({
            "orderId": {"value": "A-17", "type": "String"},
            "notFetched": {"value": 5, "type": "Integer"},
        }),
    )
    .await;
    let mut flags = worker_flags(&topic, &message, &script);
    flags.extend(["--fetch-var", "orderId"]);
    let mut worker = WorkerProcess::spawn("python", &engine.url, &flags);
    rest.wait_instances_completed(std::slice::from_ref(&instance), WAIT)
        .await;

    let task_id = task_id_of(&rest, &instance).await;
    let seen: Value = serde_json::from_str(
        &std::fs::read_to_string(script.file(&format!("{task_id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        seen,
        json!({
            "taskId": task_id,
            "topic": topic,
            "businessKey": "work-python-1",
            "processInstanceId": instance,
            "variables": {"orderId": "A-17"},
        }),
        "what the command read on stdin"
    );
    let variables = history_variables(&rest, &instance).await;
    assert_variable(&variables, "orderEcho", "String", json!("A-17"));
    assert_variable(&variables, "pages", "Integer", json!(3));
    assert_variable(
        &variables,
        "receipt",
        "Json",
        json!({"archived": true, "by": "python"}),
    );
    assert_one_message(&rest, &instance).await;
    assert_eq!(script.lines("runs"), vec![task_id], "the work ran once");
    let metrics = worker.scrape_settled(FOLLOW_UPS_SENT, 1.0).await;
    assert_eq!(runs_of(&metrics, "succeeded"), 1.0, "{metrics}");
    assert_eq!(metric_sum(&metrics, WORK_RUNS, &[]), 1.0, "{metrics}");
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
}

/// The config file's forms: `follow_up_command` as a list (the program, then its argument) and a
/// `[message_variables]` table. The message carries both the table's values and the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_files_command_list_and_message_variables_table_are_used() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("work_toml").await;
    let script = Script::python(r#"json.dump({"fromScript": True}, sys.stdout)"#);
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(
        file.path(),
        format!(
            "topic = {topic:?}\nmessage_name = {message:?}\ncorrelation_delay = \"0s\"\n\
             follow_up_command = [{:?}, {:?}]\n\n[message_variables]\nsource = \"toml\"\nlevel = 2\n",
            script.program(),
            script.dir()
        ),
    )
    .unwrap();
    let instance = start_instance(&rest, &key, "work-toml-1", json!({})).await;
    let mut worker = WorkerProcess::spawn(
        "toml",
        &engine.url,
        &["--config", file.path().to_str().unwrap()],
    );
    rest.wait_instances_completed(std::slice::from_ref(&instance), WAIT)
        .await;
    let variables = history_variables(&rest, &instance).await;
    assert_variable(&variables, "fromScript", "Boolean", json!(true));
    assert_variable(&variables, "source", "String", json!("toml"));
    assert_variable(&variables, "level", "Integer", json!(2));
    assert_eq!(
        script.lines("runs").len(),
        1,
        "the command got its argument and ran once"
    );
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
}

/// A command that keeps failing: after `--follow-up-retries 1` (two runs) an incident on the
/// waiting execution carries its last stderr line, the marker says failed, and no message is
/// sent. Once the command can succeed, resolving the incident (what Cockpit does) runs the work
/// again, and its result arrives with the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_raises_an_incident_with_its_stderr_and_resolving_it_runs_it_again() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("work_failing").await;
    let script = Script::python(
        r#"
if os.path.exists(path("fixed")):
    json.dump({"archivedAfterFix": True}, sys.stdout)
    sys.exit(0)
print("connecting to the archive", file=sys.stderr)
print("boom: cannot reach the archive", file=sys.stderr)
sys.exit(1)
"#,
    );
    let instance = start_instance(&rest, &key, "work-failing-1", json!({})).await;
    let mut flags = worker_flags(&topic, &message, &script);
    flags.extend(["--follow-up-retries", "1", "--reconcile-interval", "1s"]);
    let mut worker = WorkerProcess::spawn("failing", &engine.url, &flags);

    let incident = eventually(WAIT, "an incident on the instance", || async {
        open_incidents(&rest, &instance).await.into_iter().next()
    })
    .await;
    let task_id = task_id_of(&rest, &instance).await;
    assert_eq!(incident["incidentType"], json!(MARKER), "{incident}");
    crate::support::assert_names_follow_up(&incident["configuration"], &task_id);
    let text = incident["incidentMessage"].as_str().unwrap();
    assert!(
        text.contains("boom: cannot reach the archive") && !text.contains("connecting"),
        "the incident names the last stderr line: {text}"
    );
    let waiting = waits_for(&rest, &instance, &message).await;
    assert_eq!(waiting.len(), 1, "the instance still waits: {waiting:?}");
    assert_eq!(
        incident["executionId"], waiting[0]["executionId"],
        "the incident is on the waiting execution"
    );
    let failed = format!("failed:{topic}:{task_id}");
    eventually(WAIT, "the lease says failed", || async {
        (lease_of(&rest, &instance).await.as_deref() == Some(failed.as_str())).then_some(())
    })
    .await;
    let metrics = worker.scrape_settled(WORK_RUNS, 2.0).await;
    assert_eq!(runs_of(&metrics, "retried"), 1.0, "{metrics}");
    assert_eq!(runs_of(&metrics, "failed"), 1.0, "{metrics}");
    assert_eq!(runs_of(&metrics, "succeeded"), 0.0, "{metrics}");
    assert_eq!(
        metric_sum(&metrics, GIVEN_UP, &["reason=\"work_failed\""]),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, FOLLOW_UPS_SENT, &[]),
        0.0,
        "no message"
    );
    assert_eq!(script.lines("runs").len(), 2, "one run and one retry");
    assert_eq!(open_incidents(&rest, &instance).await.len(), 1);

    script.fix();
    let resolved_at = std::time::Instant::now();
    resolve_incident(&rest, incident["id"].as_str().unwrap()).await;
    rest.wait_instances_completed(std::slice::from_ref(&instance), WAIT)
        .await;
    eprintln!(
        "the instance ended {:?} after the incident was resolved",
        resolved_at.elapsed()
    );
    let variables = history_variables(&rest, &instance).await;
    assert_variable(&variables, "archivedAfterFix", "Boolean", json!(true));
    assert_variable(
        &variables,
        MARKER,
        "String",
        json!(format!("delivered:{task_id}")),
    );
    assert_one_message(&rest, &instance).await;
    assert_eq!(script.lines("runs").len(), 3, "the work ran again once");
    let open = rest
        .count(
            "history/incident/count",
            &[("processInstanceId", &instance), ("open", "true")],
        )
        .await;
    assert_eq!(open, 0, "no open incident");
    let metrics = worker.scrape_settled(FOLLOW_UPS_SENT, 1.0).await;
    assert_eq!(runs_of(&metrics, "succeeded"), 1.0, "{metrics}");
    assert_eq!(metric_sum(&metrics, FOLLOW_UPS_SENT, &[]), 1.0, "{metrics}");
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
}

/// An idle worker's reconciler passes grow apart (up to 10 min) while they find nothing to do —
/// but a failed work waiting for its incident to be resolved is something to do: once an operator
/// resolves the incident, the work runs again at the next `--reconcile-interval`, however long
/// the worker has been idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolving_an_incident_on_an_idle_worker_runs_the_work_again_at_the_reconcile_interval() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("work_idle_resolve").await;
    let script = Script::failing_until_fixed();
    let instance = start_instance(&rest, &key, "work-idle-1", json!({})).await;
    let mut flags = worker_flags(&topic, &message, &script);
    flags.extend(["--follow-up-retries", "0", "--reconcile-interval", "1s"]);
    let mut worker = WorkerProcess::spawn("idle", &engine.url, &flags);
    let incident = eventually(WAIT, "an incident on the instance", || async {
        open_incidents(&rest, &instance).await.into_iter().next()
    })
    .await;
    // Five passes of a worker that fetches nothing more: at 1 s apart, five seconds; as the code
    // stands, the gaps have grown to 64 s or more by then.
    let passes = |metrics: &str| metric_sum(metrics, PASSES, &["outcome=\"ok\""]);
    eventually(
        Duration::from_secs(180),
        "the reconciler made five passes",
        || async { (passes(&worker.scrape().await) >= 5.0).then_some(()) },
    )
    .await;
    script.fix();
    resolve_incident(&rest, incident["id"].as_str().unwrap()).await;
    rest.wait_instances_completed(std::slice::from_ref(&instance), Duration::from_secs(20))
        .await;
    let variables = history_variables(&rest, &instance).await;
    assert_variable(&variables, "fixed", "Boolean", json!(true));
    assert_eq!(script.lines("runs").len(), 2, "the work ran again once");
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
}

/// `--follow-up-timeout 1s` and a command that takes longer: each run is killed at the timeout,
/// and after the retries an incident names the timeout; no message is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_past_its_timeout_is_killed_and_the_incident_names_the_timeout() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("work_timeout").await;
    let script = Script::python(
        r#"
print("waiting for the archive", file=sys.stderr)
sys.stderr.flush()
time.sleep(30)
json.dump({}, sys.stdout)
"#,
    );
    let instance = start_instance(&rest, &key, "work-timeout-1", json!({})).await;
    let mut flags = worker_flags(&topic, &message, &script);
    flags.extend([
        "--follow-up-timeout",
        "1s",
        "--follow-up-retries",
        "1",
        "--reconcile-interval",
        "0",
    ]);
    let mut worker = WorkerProcess::spawn("timeout", &engine.url, &flags);
    let incident = eventually(WAIT, "an incident on the instance", || async {
        open_incidents(&rest, &instance).await.into_iter().next()
    })
    .await;
    let text = incident["incidentMessage"].as_str().unwrap();
    assert!(
        text.contains("did not finish within --follow-up-timeout 1s"),
        "the incident names the timeout: {text}"
    );
    // A run may be killed before Python has read its task (the machine is shared): the metrics,
    // not the files, count the runs.
    script
        .wait_none_running("each timed-out run was killed")
        .await;
    let metrics = worker.scrape_settled(WORK_RUNS, 2.0).await;
    assert_eq!(runs_of(&metrics, "retried"), 1.0, "{metrics}");
    assert_eq!(runs_of(&metrics, "failed"), 1.0, "{metrics}");
    assert_eq!(
        metric_sum(&metrics, FOLLOW_UPS_SENT, &[]),
        0.0,
        "no message"
    );
    assert_eq!(waits_for(&rest, &instance, &message).await.len(), 1);
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    delete_instance(&rest, &instance).await;
}

/// Runs the binary with `args`, bounded; expects exit 2 and one stderr line containing every
/// `needle`.
fn rejects(args: &[&str], needles: &[&str]) {
    let mut child = binary()
        .args(["--engine-url", "http://127.0.0.1:9/engine-rest"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} did not exit: it was not rejected at start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line expected, got: {stderr}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{args:?}: `{needle}` missing from: {}",
            lines[0]
        );
    }
}

/// Bad follow-up configurations are refused at start: exit 2, one line naming the flag (or key).
#[test]
fn bad_follow_up_configurations_exit_2_with_one_line_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("not-executable.py");
    std::fs::write(&plain, "print('{}')\n").unwrap();
    let plain = plain.to_str().unwrap();
    let missing = dir.path().join("missing.py");
    let missing = missing.to_str().unwrap();

    rejects(
        &["--follow-up-command", missing],
        &["--follow-up-command", missing, "does not exist"],
    );
    rejects(
        &["--follow-up-command", plain],
        &["--follow-up-command", plain, "not an executable"],
    );
    rejects(
        &["--follow-up-command", "no-such-follow-up-program-xyz"],
        &["--follow-up-command", "not found in PATH"],
    );
    rejects(
        &["--fetch-var", "orderId"],
        &["--fetch-var", "--follow-up-command"],
    );
    rejects(
        &["--follow-up-arg", "x"],
        &["--follow-up-arg", "--follow-up-command"],
    );
    rejects(
        &["--message-var", &format!("{MARKER}=1")],
        &["--message-var", MARKER],
    );
    rejects(
        &[
            "--marker-variable",
            "ledger",
            "--message-var",
            "ledger=\"x\"",
        ],
        &["--message-var", "ledger"],
    );
    rejects(&["--message-var", "n=not json"], &["--message-var"]);
    rejects(&["--follow-up-lease", "2s"], &["--follow-up-lease", "3s"]);
    rejects(&["--follow-up-timeout", "0s"], &["--follow-up-timeout"]);

    for (text, needle) in [
        ("follow_up_command = []\n", "follow_up_command"),
        (
            &*format!("follow_up_command = [{missing:?}, \"arg\"]\n"),
            missing,
        ),
        ("fetch_variables = [\"orderId\"]\n", "follow-up-command"),
    ] {
        let file = dir.path().join("worker.toml");
        std::fs::write(&file, text).unwrap();
        rejects(&["--config", file.to_str().unwrap()], &[needle]);
    }
}
