//! What the follow-up work tests share (`work.rs`, `work_interrupted.rs`): the command each test
//! writes — a Python script started with the interpreter's real path (not a version manager's
//! shim), so that its pid is the one the worker started and signals; it gets its directory as its
//! first argument (`--follow-up-arg`), appends the task id to `runs` each time it starts, and,
//! where a test needs to find it, its pid to `pids` — and the engine state the tests judge by.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use super::engine::Rest;
use super::{eventually, metric_sum};

pub const MARKER: &str = "camundaWorkerFollowUp";
pub const WORK_RUNS: &str = "camunda_worker_follow_up_work_runs_total";
pub const GIVEN_UP: &str = "camunda_worker_follow_ups_given_up_total";
pub const FOLLOW_UPS_SENT: &str = "camunda_worker_follow_ups_sent_total";
pub const RECOVERED: &str = "camunda_worker_follow_ups_recovered_total";
pub const RUNNING: &str = "camunda_worker_follow_up_work_running";
pub const PASSES: &str = "camunda_worker_reconciler_passes_total";
/// How long an instance may take to get where a test waits for it (the machine is shared).
pub const WAIT: Duration = Duration::from_secs(120);
/// The catch event of the bundled process.
pub const CATCH_EVENT: &str = "wait_for_response";

/// The Python interpreter itself (`sys.executable`), resolved once. No Python 3: the test fails.
pub fn python() -> &'static str {
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
pub const PRELUDE: &str = r#"
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
pub struct Script {
    dir: tempfile::TempDir,
    program: PathBuf,
}

impl Script {
    /// A Python script: [`PRELUDE`], then `body`.
    pub fn python(body: &str) -> Script {
        Self::write(&format!("#!{}\n{PRELUDE}\n{body}\n", python()))
    }

    /// A Python script that fails (exit 1, `boom: not yet` on stderr) until [`Script::fix`] has
    /// run, and then succeeds with `{"fixed": true}`: a work an operator repairs.
    pub fn failing_until_fixed() -> Script {
        Self::python(
            r#"
if not os.path.exists(path("fixed")):
    print("boom: not yet", file=sys.stderr)
    sys.exit(1)
json.dump({"fixed": True}, sys.stdout)
"#,
        )
    }

    /// Creates the file `fixed` in the script's directory: the next run of a
    /// [`Script::failing_until_fixed`], or of any script that looks for that file, succeeds.
    pub fn fix(&self) {
        std::fs::write(self.file("fixed"), "").unwrap();
    }

    /// A script with exactly this text (its `#!` line included).
    pub fn write(text: &str) -> Script {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("work");
        std::fs::write(&program, text).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        Script { dir, program }
    }

    pub fn program(&self) -> &str {
        self.program.to_str().unwrap()
    }

    pub fn dir(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The lines of a file the script writes (none while it does not exist).
    pub fn lines(&self, name: &str) -> Vec<String> {
        match std::fs::read_to_string(self.file(name)) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The pids the script recorded.
    pub fn pids(&self) -> Vec<u32> {
        self.lines("pids")
            .iter()
            .map(|l| l.trim().parse().unwrap())
            .collect()
    }

    /// The flags that make this script the follow-up's work, its directory its argument.
    pub fn flags(&self) -> Vec<&str> {
        vec![
            "--follow-up-command",
            self.program(),
            "--follow-up-arg",
            self.dir(),
        ]
    }

    /// Waits until the script has recorded `n` pids, and returns them.
    pub async fn wait_pids(&self, n: usize) -> Vec<u32> {
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
    pub fn running(&self) -> Vec<u32> {
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
    pub async fn wait_none_running(&self, what: &str) {
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
pub fn alive(pid: u32) -> bool {
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
pub async fn wait_gone(pids: &[u32], what: &str) {
    eventually(Duration::from_secs(15), what, || async {
        pids.iter().all(|pid| !alive(*pid)).then_some(())
    })
    .await;
}

/// The flags of a worker for this process with `script` as its work, the message sent as soon
/// as the work is done.
pub fn worker_flags<'a>(topic: &'a str, message: &'a str, script: &'a Script) -> Vec<&'a str> {
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
pub async fn start_instance(
    rest: &Rest,
    key: &str,
    business_key: &str,
    variables: Value,
) -> String {
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
pub async fn task_id_of(rest: &Rest, instance: &str) -> String {
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
pub async fn history_variables(rest: &Rest, instance: &str) -> HashMap<String, (String, Value)> {
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
pub fn assert_variable(
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
pub async fn marker_of(rest: &Rest, instance: &str) -> String {
    let variable = rest
        .get(
            &format!("process-instance/{instance}/variables/{MARKER}"),
            &[],
        )
        .await;
    variable["value"].as_str().unwrap().to_owned()
}

/// The value of the instance's lease variable (the marker's, see `src/ledger.rs`), if it has one.
pub async fn lease_of(rest: &Rest, instance: &str) -> Option<String> {
    let name = format!("{MARKER}Lease");
    let found = rest
        .get(
            "variable-instance",
            &[("processInstanceIdIn", instance), ("variableName", &name)],
        )
        .await;
    found[0]["value"].as_str().map(str::to_owned)
}

/// The due time (Unix ms) of an owed marker (or lease) `owed:<topic>:<due>:<task id>` of `topic`.
pub fn owed_due(marker: &str, topic: &str, task_id: &str) -> u64 {
    let due = marker
        .strip_prefix(&format!("owed:{topic}:"))
        .and_then(|rest| rest.strip_suffix(&format!(":{task_id}")))
        .unwrap_or_else(|| panic!("{marker} is not owed:{topic}:<due>:{task_id}"));
    due.parse().unwrap()
}

pub fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

/// Open incidents of the instance.
pub async fn open_incidents(rest: &Rest, instance: &str) -> Vec<Value> {
    let found = rest
        .get("incident", &[("processInstanceId", instance)])
        .await;
    found.as_array().unwrap().clone()
}

/// Executions of the instance waiting for `message`.
pub async fn waits_for(rest: &Rest, instance: &str, message: &str) -> Vec<Value> {
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
pub async fn catch_event_passes(rest: &Rest, instance: &str) -> Vec<Value> {
    let found = rest
        .get(
            "history/activity-instance",
            &[("processInstanceId", instance), ("activityId", CATCH_EVENT)],
        )
        .await;
    found.as_array().unwrap().clone()
}

/// Asserts the instance passed the catch event exactly once, by a message (not cancelled).
pub async fn assert_one_message(rest: &Rest, instance: &str) {
    let passes = catch_event_passes(rest, instance).await;
    assert_eq!(passes.len(), 1, "one pass of the catch event: {passes:?}");
    assert!(
        passes[0]["endTime"].is_string() && passes[0]["canceled"] == json!(false),
        "the catch event completed: {passes:?}"
    );
}

/// `DELETE /incident/{id}`: what an operator's "resolve" in Cockpit does.
pub async fn resolve_incident(rest: &Rest, id: &str) {
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
pub async fn delete_instance(rest: &Rest, instance: &str) {
    let reply = reqwest::Client::new()
        .delete(format!("{}/process-instance/{instance}", rest.url))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 204, "delete instance {instance}");
}

/// One series of the worker's follow-up work runs (`succeeded`, `retried`, ...).
pub fn runs_of(metrics: &str, outcome: &str) -> f64 {
    metric_sum(metrics, WORK_RUNS, &[&format!("outcome=\"{outcome}\"")])
}

/// A process whose external task is followed by a catch event for `message`, and whose gateway
/// after the catch loops back to the task until `rounds` rounds are done. The rounds are counted
/// in the instance variable `round` by execution listeners (JUEL, no script engine).
pub fn looping_bpmn(key: &str, topic: &str, message: &str, rounds: u32) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    id="definitions_{key}" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="{key}" isExecutable="true" camunda:historyTimeToLive="P1D">
    <bpmn:startEvent id="start">
      <bpmn:extensionElements>
        <camunda:executionListener event="end" expression="${{execution.setVariable('round', 0)}}" />
      </bpmn:extensionElements>
      <bpmn:outgoing>to_task</bpmn:outgoing>
    </bpmn:startEvent>
    <bpmn:serviceTask id="send_message_task" camunda:type="external" camunda:topic="{topic}">
      <bpmn:extensionElements>
        <camunda:executionListener event="start" expression="${{execution.setVariable('round', round + 1)}}" />
      </bpmn:extensionElements>
      <bpmn:incoming>to_task</bpmn:incoming>
      <bpmn:incoming>again</bpmn:incoming>
      <bpmn:outgoing>to_wait</bpmn:outgoing>
    </bpmn:serviceTask>
    <bpmn:intermediateCatchEvent id="wait_for_response">
      <bpmn:incoming>to_wait</bpmn:incoming>
      <bpmn:outgoing>to_gate</bpmn:outgoing>
      <bpmn:messageEventDefinition messageRef="the_message" />
    </bpmn:intermediateCatchEvent>
    <bpmn:exclusiveGateway id="gate" default="done">
      <bpmn:incoming>to_gate</bpmn:incoming>
      <bpmn:outgoing>again</bpmn:outgoing>
      <bpmn:outgoing>done</bpmn:outgoing>
    </bpmn:exclusiveGateway>
    <bpmn:endEvent id="end">
      <bpmn:incoming>done</bpmn:incoming>
    </bpmn:endEvent>
    <bpmn:sequenceFlow id="to_task" sourceRef="start" targetRef="send_message_task" />
    <bpmn:sequenceFlow id="to_wait" sourceRef="send_message_task" targetRef="wait_for_response" />
    <bpmn:sequenceFlow id="to_gate" sourceRef="wait_for_response" targetRef="gate" />
    <bpmn:sequenceFlow id="again" sourceRef="gate" targetRef="send_message_task">
      <bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">${{round &lt; {rounds}}}</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="done" sourceRef="gate" targetRef="end" />
  </bpmn:process>
  <bpmn:message id="the_message" name="{message}" />
</bpmn:definitions>
"#
    )
}
