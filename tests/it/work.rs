//! The follow-up's work (issue 15): after the task is completed, the worker runs the work — here a
//! small command each test writes into a directory of its own — and sends the message with the
//! work's result. Every scenario runs the worker binary against the real engine and judges it by
//! the engine's state (history variables, incidents, the marker, the catch event's activity
//! instances), the worker's metrics, and the files the command writes.
//!
//! Each command is a Python script started with the interpreter's real path (not a version
//! manager's shim), so that its pid is the one the worker started and signals. The script gets its
//! directory as its first argument (`--follow-up-arg`), appends the task id to `runs` each time it
//! starts, and, where a test needs to find it, its pid to `pids`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::engine::{shared_engine, Rest};
use crate::support::{binary, eventually, lines_with, metric_sum, WorkerProcess, SHUTDOWN_LIMIT};

const MARKER: &str = "camundaWorkerFollowUp";
const WORK_RUNS: &str = "camunda_worker_follow_up_work_runs_total";
const GIVEN_UP: &str = "camunda_worker_follow_ups_given_up_total";
const FOLLOW_UPS_SENT: &str = "camunda_worker_follow_ups_sent_total";
const RECOVERED: &str = "camunda_worker_follow_ups_recovered_total";
const RUNNING: &str = "camunda_worker_follow_up_work_running";
const PASSES: &str = "camunda_worker_reconciler_passes_total";
/// How long an instance may take to get where a test waits for it (the machine is shared).
const WAIT: Duration = Duration::from_secs(120);
/// The catch event of the bundled process.
const CATCH_EVENT: &str = "wait_for_response";

/// The Python interpreter itself (`sys.executable`), resolved once. No Python 3: the test fails.
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let output = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 must be installed for the follow-up command tests");
        assert!(output.status.success(), "python3 -c failed: {output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    })
}

/// What every script starts with: its directory, the task read from stdin, and the run recorded.
const PRELUDE: &str = r#"
import json, os, signal, sys, time
DIR = sys.argv[1]
task = json.load(sys.stdin)
def path(name):
    return os.path.join(DIR, name)
def append(name, line):
    with open(path(name), "a") as f:
        f.write(line + "\n")
def lines(name):
    if not os.path.exists(path(name)):
        return []
    with open(path(name)) as f:
        return f.read().splitlines()
append("runs", task["taskId"])
RUN = len(lines("runs"))
"#;

/// A follow-up command in a temporary directory of its own. Any of its processes still running
/// when the test ends is killed by pid.
struct Script {
    dir: tempfile::TempDir,
    program: PathBuf,
}

impl Script {
    /// A Python script: [`PRELUDE`], then `body`.
    fn python(body: &str) -> Script {
        Self::write(&format!("#!{}\n{PRELUDE}\n{body}\n", python()))
    }

    /// A script with exactly this text (its `#!` line included).
    fn write(text: &str) -> Script {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("work");
        std::fs::write(&program, text).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        Script { dir, program }
    }

    fn program(&self) -> &str {
        self.program.to_str().unwrap()
    }

    fn dir(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The lines of a file the script writes (none while it does not exist).
    fn lines(&self, name: &str) -> Vec<String> {
        match std::fs::read_to_string(self.file(name)) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The pids the script recorded.
    fn pids(&self) -> Vec<u32> {
        self.lines("pids")
            .iter()
            .map(|l| l.trim().parse().unwrap())
            .collect()
    }

    /// The flags that make this script the follow-up's work, its directory its argument.
    fn flags(&self) -> Vec<&str> {
        vec![
            "--follow-up-command",
            self.program(),
            "--follow-up-arg",
            self.dir(),
        ]
    }

    /// Waits until the script has recorded `n` pids, and returns them.
    async fn wait_pids(&self, n: usize) -> Vec<u32> {
        eventually(WAIT, &format!("the command recorded {n} pids"), || async {
            let pids = self.pids();
            (pids.len() >= n).then_some(pids)
        })
        .await
    }
}

impl Script {
    /// The processes of this script still running: every process whose last argument is the
    /// script's directory (the script itself, and what it starts with that argument), found in
    /// `/proc` whether or not the script got as far as recording its pid. The worker, which has
    /// the directory among its flags, is not one.
    fn running(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline);
                let args: Vec<&str> = cmdline.split('\0').filter(|a| !a.is_empty()).collect();
                args.last() == Some(&self.dir())
                    && !args[0].ends_with("camunda-worker")
                    && alive(*pid)
            })
            .collect()
    }

    /// Waits until no process of this script runs any more.
    async fn wait_none_running(&self, what: &str) {
        eventually(Duration::from_secs(15), what, || async {
            self.running().is_empty().then_some(())
        })
        .await;
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        for pid in self.running() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Whether process `pid` still runs (a zombie, dead but not yet reaped, does not).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // pid (comm) STATE ...: the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("");
    !matches!(state, "Z" | "X" | "x")
}

/// Waits until none of `pids` runs any more.
async fn wait_gone(pids: &[u32], what: &str) {
    eventually(Duration::from_secs(15), what, || async {
        pids.iter().all(|pid| !alive(*pid)).then_some(())
    })
    .await;
}

/// The flags of a worker for this process with `script` as its work, the message sent as soon
/// as the work is done.
fn worker_flags<'a>(topic: &'a str, message: &'a str, script: &'a Script) -> Vec<&'a str> {
    let mut flags = vec![
        "--topic",
        topic,
        "--message-name",
        message,
        "--correlation-delay",
        "0s",
    ];
    flags.extend(script.flags());
    flags
}

/// Starts one instance of `key` with `business_key` and `variables` (already typed); its id.
async fn start_instance(rest: &Rest, key: &str, business_key: &str, variables: Value) -> String {
    let (status, body) = rest
        .post(
            &format!("process-definition/key/{key}/start"),
            json!({"businessKey": business_key, "variables": variables}),
        )
        .await;
    assert_eq!(status, 200, "start answered {status}: {body}");
    serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The external task the instance's service task created (from the engine's task log).
async fn task_id_of(rest: &Rest, instance: &str) -> String {
    let log = rest
        .get(
            "history/external-task-log",
            &[("processInstanceId", instance), ("creationLog", "true")],
        )
        .await;
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 1, "one task created: {log:?}");
    log[0]["externalTaskId"].as_str().unwrap().to_owned()
}

/// The instance's variables as history keeps them: name → (type, value), a Json value parsed.
async fn history_variables(rest: &Rest, instance: &str) -> HashMap<String, (String, Value)> {
    let found = rest
        .get(
            "history/variable-instance",
            &[
                ("processInstanceId", instance),
                ("deserializeValues", "false"),
            ],
        )
        .await;
    found
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let value_type = v["type"].as_str().unwrap().to_owned();
            let value = match (value_type.as_str(), &v["value"]) {
                ("Json", Value::String(text)) => serde_json::from_str(text).unwrap(),
                (_, value) => value.clone(),
            };
            (v["name"].as_str().unwrap().to_owned(), (value_type, value))
        })
        .collect()
}

/// Asserts that history shows `name` on the instance with this type and value.
fn assert_variable(
    variables: &HashMap<String, (String, Value)>,
    name: &str,
    value_type: &str,
    value: Value,
) {
    let found = variables
        .get(name)
        .unwrap_or_else(|| panic!("variable {name} missing; the instance has {variables:?}"));
    assert_eq!(
        found,
        &(value_type.to_owned(), value),
        "variable {name} (type, value)"
    );
}

/// The marker's value on a running instance.
async fn marker_of(rest: &Rest, instance: &str) -> String {
    let variable = rest
        .get(
            &format!("process-instance/{instance}/variables/{MARKER}"),
            &[],
        )
        .await;
    variable["value"].as_str().unwrap().to_owned()
}

/// The due time (Unix ms) of an owed marker `owed:<topic>:<due>:<task id>` of `topic`.
fn owed_due(marker: &str, topic: &str, task_id: &str) -> u64 {
    let due = marker
        .strip_prefix(&format!("owed:{topic}:"))
        .and_then(|rest| rest.strip_suffix(&format!(":{task_id}")))
        .unwrap_or_else(|| panic!("{marker} is not owed:{topic}:<due>:{task_id}"));
    due.parse().unwrap()
}

fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

/// Open incidents of the instance.
async fn open_incidents(rest: &Rest, instance: &str) -> Vec<Value> {
    let found = rest
        .get("incident", &[("processInstanceId", instance)])
        .await;
    found.as_array().unwrap().clone()
}

/// Executions of the instance waiting for `message`.
async fn waits_for(rest: &Rest, instance: &str, message: &str) -> Vec<Value> {
    let found = rest
        .get(
            "event-subscription",
            &[
                ("processInstanceId", instance),
                ("eventType", "message"),
                ("eventName", message),
            ],
        )
        .await;
    found.as_array().unwrap().clone()
}

/// The catch event's activity instances of the instance (history): one per message it got.
async fn catch_event_passes(rest: &Rest, instance: &str) -> Vec<Value> {
    let found = rest
        .get(
            "history/activity-instance",
            &[("processInstanceId", instance), ("activityId", CATCH_EVENT)],
        )
        .await;
    found.as_array().unwrap().clone()
}

/// Asserts the instance passed the catch event exactly once, by a message (not cancelled).
async fn assert_one_message(rest: &Rest, instance: &str) {
    let passes = catch_event_passes(rest, instance).await;
    assert_eq!(passes.len(), 1, "one pass of the catch event: {passes:?}");
    assert!(
        passes[0]["endTime"].is_string() && passes[0]["canceled"] == json!(false),
        "the catch event completed: {passes:?}"
    );
}

/// `DELETE /incident/{id}`: what an operator's "resolve" in Cockpit does.
async fn resolve_incident(rest: &Rest, id: &str) {
    let reply = reqwest::Client::new()
        .delete(format!("{}/incident/{id}", rest.url))
        .send()
        .await
        .unwrap();
    let status = reply.status();
    assert_eq!(
        status,
        204,
        "resolve answered {status}: {:?}",
        reply.text().await
    );
}

/// Ends an instance this test leaves waiting, so that the shared engine does not keep it.
async fn delete_instance(rest: &Rest, instance: &str) {
    let reply = reqwest::Client::new()
        .delete(format!("{}/process-instance/{instance}", rest.url))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 204, "delete instance {instance}");
}

/// One series of the worker's follow-up work runs (`succeeded`, `retried`, ...).
fn runs_of(metrics: &str, outcome: &str) -> f64 {
    metric_sum(metrics, WORK_RUNS, &[&format!("outcome=\"{outcome}\"")])
}

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
    assert_eq!(incident["configuration"], json!(task_id), "{incident}");
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
    eventually(WAIT, "the marker says failed", || async {
        (marker_of(&rest, &instance).await == failed).then_some(())
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

    std::fs::write(script.file("fixed"), "").unwrap();
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
    let script = Script::python(
        r#"
if not os.path.exists(path("fixed")):
    print("boom: not yet", file=sys.stderr)
    sys.exit(1)
json.dump({"fixed": True}, sys.stdout)
"#,
    );
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
    std::fs::write(script.file("fixed"), "").unwrap();
    resolve_incident(&rest, incident["id"].as_str().unwrap()).await;
    rest.wait_instances_completed(std::slice::from_ref(&instance), Duration::from_secs(20))
        .await;
    let variables = history_variables(&rest, &instance).await;
    assert_variable(&variables, "fixed", "Boolean", json!(true));
    assert_eq!(script.lines("runs").len(), 2, "the work ran again once");
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
}

/// `kill -9` while the command runs: a second worker, whose reconciler passes come after the first
/// lease would have run out, leaves the work alone while the first renews the lease; once the
/// first is killed and the lease has run out, the second runs the work again, and the instance
/// gets exactly one message, with the second run's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_during_the_command_another_worker_runs_it_again_and_the_instance_ends_once()
{
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("work_kill").await;
    let script = Script::python(
        r#"
if RUN == 1:
    append("pids", str(os.getpid()))
    time.sleep(300)
json.dump({"run": RUN}, sys.stdout)
"#,
    );
    let instance = start_instance(&rest, &key, "work-kill-1", json!({})).await;
    let mut flags = worker_flags(&topic, &message, &script);
    flags.extend(["--follow-up-lease", "3s", "--reconcile-interval", "1s"]);
    let mut first = WorkerProcess::spawn("first", &engine.url, &flags);
    script.wait_pids(1).await;
    let task_id = task_id_of(&rest, &instance).await;
    let first_due = owed_due(&marker_of(&rest, &instance).await, &topic, &task_id);

    // The second worker fetches nothing, so its reconciler's passes grow apart (1 s, then 4 s,
    // 16 s, ...): its second pass, 4 s after its start, comes after the first, unrenewed lease
    // of 3 s would have run out; the pass after it comes after the kill.
    let mut second = WorkerProcess::spawn("second", &engine.url, &flags);
    let passes = |metrics: &str| metric_sum(metrics, PASSES, &["outcome=\"ok\""]);
    eventually(
        WAIT,
        "the second worker's reconciler made 2 passes",
        || async { (passes(&second.scrape().await) >= 2.0).then_some(()) },
    )
    .await;
    assert_eq!(
        script.lines("runs").len(),
        1,
        "while the first worker renews its lease, nobody runs the work again"
    );
    let due = owed_due(&marker_of(&rest, &instance).await, &topic, &task_id);
    assert!(
        due > first_due && due > unix_ms(),
        "the lease was renewed and is held: due {due}, first due {first_due}"
    );
    first.assert_running("before the kill");
    first.kill_hard();

    rest.wait_instances_completed(std::slice::from_ref(&instance), WAIT)
        .await;
    assert_eq!(
        script.lines("runs"),
        vec![task_id.clone(), task_id.clone()],
        "the work ran twice, for the same task"
    );
    let variables = history_variables(&rest, &instance).await;
    assert_variable(&variables, "run", "Integer", json!(2));
    assert_variable(
        &variables,
        MARKER,
        "String",
        json!(format!("delivered:{task_id}")),
    );
    assert_one_message(&rest, &instance).await;
    let metrics = second.scrape_settled(FOLLOW_UPS_SENT, 1.0).await;
    assert_eq!(metric_sum(&metrics, FOLLOW_UPS_SENT, &[]), 1.0, "{metrics}");
    assert_eq!(metric_sum(&metrics, RECOVERED, &[]), 1.0, "{metrics}");
    assert_eq!(runs_of(&metrics, "succeeded"), 1.0, "{metrics}");
    assert_eq!(second.terminate(SHUTDOWN_LIMIT), Some(0));
}

/// SIGTERM while a long command runs: the command gets SIGTERM (and, a Python script, ends), the
/// worker exits well within the grace, and leaves the follow-up owed and due now; the next start,
/// the command now fast, finishes the instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_long_command_exits_within_the_grace_and_the_next_start_finishes_it() {
    sigterm_during_a_long_command("work_sigterm", false).await;
}

/// The same with a command that ignores SIGTERM: it is killed at the end of the grace, the worker
/// still exits within it (exit 1: something had to be abandoned, as README says), the follow-up
/// stays owed, and the next start finishes the instance. (Handing the lease back is not asserted
/// here: at the end of the grace it is a last try, and otherwise the 3 s lease runs out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_ignores_sigterm_is_killed_at_the_end_of_the_grace() {
    sigterm_during_a_long_command("work_sigterm_ignored", true).await;
}

async fn sigterm_during_a_long_command(suffix: &str, ignores_sigterm: bool) {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant(suffix).await;
    let setup = if ignores_sigterm {
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    } else {
        "pass"
    };
    let script = Script::python(&format!(
        r#"
if RUN == 1:
    {setup}
    append("pids", str(os.getpid()))
    time.sleep(60)
json.dump({{"run": RUN}}, sys.stdout)
"#
    ));
    let instance = start_instance(&rest, &key, &format!("{suffix}-1"), json!({})).await;
    let mut flags = worker_flags(&topic, &message, &script);
    flags.extend([
        "--shutdown-grace",
        "3s",
        "--follow-up-lease",
        if ignores_sigterm { "3s" } else { "60s" },
        "--reconcile-interval",
        "1s",
    ]);
    let mut first = WorkerProcess::spawn("first", &engine.url, &flags);
    script.wait_pids(1).await;
    assert_eq!(first.count(RUNNING).await, 1, "the work runs");
    let task_id = task_id_of(&rest, &instance).await;

    first.signal("TERM");
    let code = first.wait_exit(Duration::from_secs(10));
    script.wait_none_running("the command has ended").await;
    let marker = marker_of(&rest, &instance).await;
    let due = owed_due(&marker, &topic, &task_id);
    if ignores_sigterm {
        assert_eq!(code, Some(1), "the grace had to abandon the command");
    } else {
        assert_eq!(code, Some(0), "everything ended within the grace");
        let log = first.stderr();
        assert_eq!(
            lines_with(&log, "not delivered before shutdown"),
            1,
            "one WARN: the follow-up stays owed: {log}"
        );
        assert!(
            due <= unix_ms(),
            "the follow-up is handed back, due now, not at the end of its 60 s lease: {marker}"
        );
    }
    assert_eq!(waits_for(&rest, &instance, &message).await.len(), 1);

    let mut next = WorkerProcess::spawn("next", &engine.url, &flags);
    rest.wait_instances_completed(std::slice::from_ref(&instance), WAIT)
        .await;
    assert_eq!(script.lines("runs"), vec![task_id.clone(), task_id.clone()]);
    let variables = history_variables(&rest, &instance).await;
    assert_variable(&variables, "run", "Integer", json!(2));
    assert_one_message(&rest, &instance).await;
    assert_eq!(next.terminate(SHUTDOWN_LIMIT), Some(0));
}

/// A shell script's work is usually another program it starts: at shutdown that program ends with
/// the script instead of outliving the worker (and holding the script's output pipes open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_the_programs_a_shell_command_started_end_with_it() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("work_sh_children").await;
    let script = Script::write(&format!(
        "#!/bin/sh\ncat >/dev/null\necho $$ >>\"$1/pids\"\n\
             {} -c 'import time; time.sleep(60)' \"$1\" &\n\
             echo $! >>\"$1/pids\"\nwait\necho '{{}}'\n",
        python()
    ));
    let instance = start_instance(&rest, &key, "work-sh-1", json!({})).await;
    let mut flags = worker_flags(&topic, &message, &script);
    flags.extend(["--shutdown-grace", "3s", "--reconcile-interval", "0"]);
    let mut worker = WorkerProcess::spawn("sh", &engine.url, &flags);
    let pids = script.wait_pids(2).await;
    worker.signal("TERM");
    let code = worker.wait_exit(Duration::from_secs(10));
    wait_gone(&pids[..1], "the shell script has ended").await;
    wait_gone(
        &pids[1..],
        "the program the shell script started has ended too",
    )
    .await;
    assert_eq!(
        code,
        Some(0),
        "the script and its program ended within the grace"
    );
    delete_instance(&rest, &instance).await;
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
