//! The follow-up's work, pinned on a mock engine: what a `--follow-up-command` reads and what its
//! output turns into on the wire, and what a command that keeps failing leaves in the engine.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::ResponseTemplate;

use crate::support::mock::{owed_marker, task, MockEngine, Seen, MARKER};
use crate::support::{eventually, WorkerProcess, SHUTDOWN_LIMIT};

const WAIT: Duration = Duration::from_secs(20);

/// Writes an executable `sh` script into `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A mock that hands out task t1 and takes what failed work does: the marker set to failed, and
/// an incident on the execution that waits for the message (a message would be recorded too).
async fn engine_for_failing_work() -> MockEngine {
    let engine = MockEngine::start(vec![json!([task("t1", Some("order-1"))])]).await;
    engine
        .on("external-task/t1/complete", ResponseTemplate::new(204))
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    engine
        .on(
            "process-instance/pi-t1/variables",
            ResponseTemplate::new(204),
        )
        .await;
    engine
        .message_waits("pi-t1", &[("sample_response", "ex-t1")])
        .await;
    engine.takes_incidents().await;
    engine
}

/// A worker sending follow-ups at once with `command` as their work (and `flags`), and the first
/// request the mock sees to `path`: each work test waits for one request, then judges the run.
async fn work_until_the_first(
    engine: &MockEngine,
    command: &Path,
    flags: &[&str],
    path: &str,
    waiting_for: &str,
) -> (WorkerProcess, Seen) {
    let mut all = vec!["--follow-up-command", command.to_str().unwrap()];
    all.extend(flags);
    let worker = engine.quick_worker(&all);
    let first = eventually(WAIT, waiting_for, || async {
        engine.requests_to(path).first().cloned()
    })
    .await;
    (worker, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_reads_the_task_and_its_fetched_variables_and_its_output_goes_with_the_message()
{
    let dir = tempfile::tempdir().unwrap();
    let stdin_copy = dir.path().join("stdin.json");
    let command = script(
        dir.path(),
        "work.sh",
        &format!(
            "cat > {}\necho 'working' >&2\necho '{{\"n\": 1, \"big\": 5000000000, \"doc\": {{\"a\": [1]}}}}'",
            stdin_copy.display()
        ),
    );
    let mut fetched = task("t1", Some("order-1"));
    fetched["variables"] = json!({"orderId": {"type": "String", "value": "A-7", "valueInfo": {}}});
    let engine = MockEngine::start(vec![json!([fetched])]).await;
    engine
        .on("external-task/t1/complete", ResponseTemplate::new(204))
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let (mut worker, message) = work_until_the_first(
        &engine,
        &command,
        &[
            "--fetch-var",
            "orderId",
            "--message-var",
            "note=\"from the flag\"",
        ],
        "/message",
        "the follow-up message",
    )
    .await;
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));

    let fetch = &engine.requests_to("/fetchAndLock")[0];
    assert_eq!(fetch.body["topics"][0]["variables"], json!(["orderId"]));
    let input: Value =
        serde_json::from_str(&std::fs::read_to_string(&stdin_copy).unwrap()).unwrap();
    assert_eq!(
        input,
        json!({
            "taskId": "t1",
            "topic": "messageSending",
            "businessKey": "order-1",
            "processInstanceId": "pi-t1",
            "variables": {"orderId": "A-7"}
        })
    );
    let complete = &engine.requests_to("/t1/complete")[0];
    let owed = owed_marker(&complete.body, "t1");
    assert_eq!(
        message.body["correlationKeys"],
        json!({MARKER: {"type": "String", "value": owed, "valueInfo": {}}})
    );
    assert_eq!(
        message.body["processVariables"],
        json!({
            "n": {"type": "Integer", "value": 1, "valueInfo": {}},
            "big": {"type": "Long", "value": 5000000000_i64, "valueInfo": {}},
            "doc": {"type": "Json", "value": "{\"a\":[1]}", "valueInfo": {}},
            "note": {"type": "String", "value": "from the flag", "valueInfo": {}},
            MARKER: {"type": "String", "value": "delivered:t1", "valueInfo": {}}
        })
    );
    assert_eq!(engine.requests_to("/message").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_keeps_failing_is_run_again_then_raises_an_incident_with_its_last_stderr_line(
) {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let command = script(
        dir.path(),
        "fail.sh",
        &format!(
            "cat > /dev/null\necho run >> {}\necho 'starting' >&2\necho 'boom: the archive is full' >&2\nexit 3",
            runs.display()
        ),
    );
    let engine = engine_for_failing_work().await;
    let (mut worker, marked) = work_until_the_first(
        &engine,
        &command,
        &["--follow-up-retries", "1"],
        "/process-instance/pi-t1/variables",
        "the marker set to failed",
    )
    .await;
    let failed_runs = worker
        .metric("camunda_worker_follow_up_work_runs_total{outcome=\"failed\"}")
        .await;
    let retried_runs = worker
        .metric("camunda_worker_follow_up_work_runs_total{outcome=\"retried\"}")
        .await;
    let given_up = worker
        .metric("camunda_worker_follow_ups_given_up_total{reason=\"work_failed\"}")
        .await;
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));

    assert_eq!(
        marked.body,
        json!({"modifications": {format!("{MARKER}Lease"): {"type": "String", "value": "failed:messageSending:t1", "valueInfo": {}}}})
    );
    let incident = &engine.requests_to("/execution/ex-t1/create-incident")[0];
    assert_eq!(incident.body["incidentType"], "camundaWorkerFollowUp");
    crate::support::assert_names_follow_up(&incident.body["configuration"], "t1");
    let text = incident.body["message"].as_str().unwrap();
    assert!(
        text.contains("exited with status 3: boom: the archive is full"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 2);
    assert_eq!((retried_runs, failed_runs, given_up), (1.0, 1.0, 1.0));
    assert!(
        engine.requests_to("/message").is_empty(),
        "no message for failed work"
    );
}

/// Two replicas that give the same follow-up up at once may each raise an incident: the worker
/// reads the open incidents again after raising one and resolves all but the first (the lowest
/// id, which every replica picks). An unreadable answer to the first read is read again, not
/// taken for "none open". (Found by the chaos gate: a follow-up with two open incidents.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_incident_for_the_same_failed_work_is_resolved_and_the_first_kept() {
    let dir = tempfile::tempdir().unwrap();
    let command = script(
        dir.path(),
        "fail.sh",
        "cat > /dev/null\necho 'boom' >&2\nexit 3",
    );
    let engine = engine_for_failing_work().await;
    let open = |ids: &[&str]| {
        let incidents: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "incidentType": "camundaWorkerFollowUp", "configuration": "t1"}))
            .collect();
        ResponseTemplate::new(200).set_body_json(incidents)
    };
    // Ahead of the mock's own "none open": unreadable, then none, then two (another replica's
    // raised at the same moment, with the lower id).
    engine
        .on_get_sequence(
            "incident",
            vec![
                ResponseTemplate::new(503),
                open(&[]),
                open(&["incident-b", "incident-a"]),
            ],
        )
        .await;
    engine
        .on_delete("incident/[^/]+", ResponseTemplate::new(204))
        .await;
    let (mut worker, _resolved) = work_until_the_first(
        &engine,
        &command,
        &["--follow-up-retries", "0"],
        "/incident/incident-b",
        "the second incident resolved",
    )
    .await;
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));

    assert_eq!(
        engine.requests_to("/create-incident").len(),
        1,
        "one raised"
    );
    let resolved: Vec<String> = engine
        .requests_to("")
        .iter()
        .filter(|seen| seen.method == "DELETE")
        .map(|seen| seen.path.clone())
        .collect();
    assert_eq!(
        resolved,
        vec!["/engine-rest/incident/incident-b"],
        "the first one kept"
    );
    assert_eq!(
        engine.requests_to("/incident").len(),
        3,
        "read, read again, read after raising"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_over_the_bound_or_not_a_json_object_is_a_failure_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    for (name, body, expected) in [
        (
            "huge.sh",
            "cat > /dev/null\nhead -c 3000000 /dev/zero | tr '\\0' 'a'",
            "printed more than 1048576 bytes on stdout",
        ),
        ("words.sh", "cat > /dev/null\necho ok", "stdout is not JSON"),
        (
            "list.sh",
            "cat > /dev/null\necho '[1, 2]'",
            "JSON but not an object",
        ),
    ] {
        let command = script(dir.path(), name, body);
        let engine = engine_for_failing_work().await;
        let (mut worker, incident) = work_until_the_first(
            &engine,
            &command,
            &[
                "--follow-up-retries",
                "0",
                // Reported at once, not when the command would have been killed.
                "--follow-up-timeout",
                "10m",
            ],
            "/execution/ex-t1/create-incident",
            "the incident",
        )
        .await;
        assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
        let text = incident.body["message"].as_str().unwrap();
        assert!(text.contains(expected), "{name}: {text}");
        assert!(engine.requests_to("/message").is_empty(), "{name}");
    }
}

/// A library work: fails its first run, then answers; it names the variables it reads.
struct FlakyWork {
    runs: std::sync::atomic::AtomicU32,
}

impl camunda_worker::work::FollowUpWork for FlakyWork {
    fn variables_to_fetch(&self) -> Vec<String> {
        vec!["amount".to_owned()]
    }

    async fn run(
        &self,
        task: &camunda_worker::work::CompletedTask,
        _: &tokio_util::sync::CancellationToken,
    ) -> Result<camunda_worker::variables::Variables, camunda_worker::work::WorkError> {
        let run = self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if run == 1 {
            return Err(camunda_worker::work::WorkError::transient(
                "the service is warming up",
            ));
        }
        let amount = task.variables["amount"].as_i64().unwrap_or_default();
        Ok(camunda_worker::variables::Variables::from([(
            "doubled".to_owned(),
            camunda_worker::variables::TypedValue::from_json(json!(amount * 2)),
        )]))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_work_is_fetched_for_run_again_after_a_failure_and_its_result_goes_with_the_message(
) {
    let mut fetched = task("t1", Some("order-1"));
    fetched["variables"] = json!({"amount": {"type": "Integer", "value": 21, "valueInfo": {}}});
    let engine = MockEngine::start(vec![json!([fetched])]).await;
    engine
        .on("external-task/t1/complete", ResponseTemplate::new(204))
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let config = crate::support::config_for(
        &engine.url(),
        &["--correlation-delay", "0s", "--reconcile-interval", "0"],
    );
    let work = std::sync::Arc::new(FlakyWork {
        runs: std::sync::atomic::AtomicU32::new(0),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let handle = {
        let stop = stop.clone();
        let work = std::sync::Arc::clone(&work);
        tokio::spawn(
            async move { camunda_worker::daemon::run_with_work(&config, work, stop).await },
        )
    };
    let message = eventually(WAIT, "the follow-up message", || async {
        engine.requests_to("/message").first().cloned()
    })
    .await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    assert_eq!(
        engine.requests_to("/fetchAndLock")[0].body["topics"][0]["variables"],
        json!(["amount"])
    );
    assert_eq!(work.runs.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(
        message.body["processVariables"]["doubled"],
        json!({"type": "Integer", "value": 42, "valueInfo": {}})
    );
}
