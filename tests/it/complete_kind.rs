//! The `complete` route kind on the real engine: a plain external task served by a Python
//! command whose exit decides it — variables that history shows typed, a BPMN error caught by a
//! boundary event, failures down to an incident that carries the last stderr line and a run
//! after the incident is resolved — and the route tables the worker refuses. The lock, the
//! `--max-tasks` slot and shutdown are in `complete_kind_lock`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::{config_file, rejects};
use crate::support::engine::{shared_engine, Rest};
use crate::support::{binary, eventually, metric_value, WorkerProcess};

/// How long the instances may take on a shared machine.
pub(crate) const WAIT: Duration = Duration::from_secs(120);

/// A process of its own (`key`): start → external task on `topic` → end, with an error boundary
/// event on the task catching code `BIZ` and ending in `caught_end`.
pub(crate) fn plain_task_bpmn(key: &str, topic: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="defs_{key}" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:error id="error_{key}" name="business error" errorCode="BIZ" />
  <bpmn:process id="{key}" isExecutable="true" camunda:historyTimeToLive="P1D">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="to_work" sourceRef="start" targetRef="work" />
    <bpmn:serviceTask id="work" camunda:type="external" camunda:topic="{topic}" />
    <bpmn:sequenceFlow id="to_done" sourceRef="work" targetRef="done" />
    <bpmn:endEvent id="done" />
    <bpmn:boundaryEvent id="caught" attachedToRef="work">
      <bpmn:errorEventDefinition errorRef="error_{key}" />
    </bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="to_caught_end" sourceRef="caught" targetRef="caught_end" />
    <bpmn:endEvent id="caught_end" />
  </bpmn:process>
</bpmn:definitions>
"#
    )
}

/// Deploys a plain-task process for `name`; its (key, topic).
pub(crate) async fn deploy_plain(rest: &Rest, name: &str) -> (String, String) {
    let key = format!("plain_{name}");
    let topic = format!("plainTask_{name}");
    rest.deploy_bpmn(&key, plain_task_bpmn(&key, &topic)).await;
    (key, topic)
}

/// Writes `body` as an executable Python program `name` in `dir`; its path. The interpreter is
/// named by its full path: the command runs with a filtered environment.
pub(crate) fn python_command(dir: &Path, name: &str, body: &str) -> String {
    let interpreter = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    let interpreter = String::from_utf8(interpreter.stdout).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!{}\n{body}", interpreter.trim())).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A config file with one complete route on `topic` running `command`, plus `extra` keys.
pub(crate) fn complete_route(topic: &str, command: &str, extra: &str) -> tempfile::NamedTempFile {
    config_file(&format!(
        "[[route]]\ntopic = {topic:?}\nkind = \"complete\"\ncommand = [{command:?}]\n{extra}"
    ))
}

/// Starts one instance of `key` with `business_key`; its id.
pub(crate) async fn start_one(rest: &Rest, key: &str, business_key: &str) -> String {
    let (status, body) = rest
        .post(
            &format!("process-definition/key/{key}/start"),
            json!({"businessKey": business_key}),
        )
        .await;
    assert_eq!(status, 200, "start answered {status}: {body}");
    serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The instance's variables as history keeps them: name → (type, value).
pub(crate) async fn history_variables(rest: &Rest, instance: &str) -> Vec<(String, String, Value)> {
    let found = rest
        .get(
            "history/variable-instance",
            &[("processInstanceId", instance)],
        )
        .await;
    found
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_owned(),
                v["type"].as_str().unwrap_or_default().to_owned(),
                v["value"].clone(),
            )
        })
        .collect()
}

/// The activities the instance went through, by id.
async fn activities(rest: &Rest, instance: &str) -> Vec<String> {
    let found = rest
        .get(
            "history/activity-instance",
            &[("processInstanceId", instance)],
        )
        .await;
    found
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["activityId"].as_str().unwrap().to_owned())
        .collect()
}

/// A command that reads its task and completes it with an integer and a string (the business
/// key it read): the instance ends on its normal path with both variables typed in history;
/// `status` showed the task open before; the metrics count the completion on the route's topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_route_completes_its_task_with_the_commands_typed_variables() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic) = deploy_plain(&rest, "variables").await;
    let dir = tempfile::tempdir().unwrap();
    let command = python_command(
        dir.path(),
        "work.py",
        "import json, sys\ntask = json.load(sys.stdin)\nprint(json.dumps({'count': 42, 'label': 'seen ' + task['businessKey']}))\n",
    );
    let file = complete_route(&topic, &command, "");
    let config = file.path().to_str().unwrap();
    let instance = start_one(&rest, &key, "order-9").await;

    let status = binary()
        .args(["--engine-url", &engine.url, "--config", config, "status"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("open tasks on topic {topic}: 1 (0 locked)")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("incidents on topic {topic}: 0")),
        "{shown}"
    );

    let worker = WorkerProcess::spawn("complete", &engine.url, &["--config", config]);
    rest.wait_instances_completed(std::slice::from_ref(&instance), WAIT)
        .await;
    let variables = history_variables(&rest, &instance).await;
    assert!(
        variables.contains(&("count".to_owned(), "Integer".to_owned(), json!(42))),
        "{variables:?}"
    );
    assert!(
        variables.contains(&(
            "label".to_owned(),
            "String".to_owned(),
            json!("seen order-9")
        )),
        "{variables:?}"
    );
    assert!(activities(&rest, &instance)
        .await
        .contains(&"done".to_owned()));
    let completed = format!("camunda_worker_tasks_completed_total{{topic=\"{topic}\"}}");
    let metrics = worker.scrape_settled(&completed, 1.0).await;
    assert_eq!(metric_value(&metrics, &completed), 1.0, "{metrics}");
}

/// A command that prints a `bpmnError` object: the boundary event catches it (the instance ends
/// in `caught_end`, never in `done`), with the error's variables set on the instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bpmn_error_from_the_command_is_caught_by_the_boundary_event_with_its_variables() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic) = deploy_plain(&rest, "bpmn_error").await;
    let dir = tempfile::tempdir().unwrap();
    let command = python_command(
        dir.path(),
        "refuse.py",
        "import json\nprint(json.dumps({'bpmnError': {'code': 'BIZ', 'message': 'no such order', 'variables': {'reason': 'gone', 'attempt': 1}}}))\n",
    );
    let file = complete_route(&topic, &command, "");
    let instance = start_one(&rest, &key, "order-1").await;
    let _worker = WorkerProcess::spawn(
        "bpmn-error",
        &engine.url,
        &["--config", file.path().to_str().unwrap()],
    );
    rest.wait_instances_completed(std::slice::from_ref(&instance), WAIT)
        .await;
    let path = activities(&rest, &instance).await;
    assert!(path.contains(&"caught_end".to_owned()), "{path:?}");
    assert!(!path.contains(&"done".to_owned()), "{path:?}");
    let variables = history_variables(&rest, &instance).await;
    assert!(
        variables.contains(&("reason".to_owned(), "String".to_owned(), json!("gone"))),
        "{variables:?}"
    );
    assert!(
        variables.contains(&("attempt".to_owned(), "Integer".to_owned(), json!(1))),
        "{variables:?}"
    );
}

/// A command that fails until a flag file exists, on a route with `retries = 1` and
/// `retry_timeout = "1s"`: it runs twice (the first failure leaves one retry, handed out again
/// after the retry timeout), then the incident carries its last stderr line. Once the flag is
/// there and the operator sets the task's retries again, it runs a third time and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_ends_in_an_incident_with_its_last_stderr_line_and_runs_again_once_resolved(
) {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic) = deploy_plain(&rest, "incident").await;
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("fixed");
    let runs = dir.path().join("runs");
    let command = python_command(
        dir.path(),
        "flaky.py",
        &format!(
            "import json, os, sys\nopen({runs:?}, 'a').write('run\\n')\nif os.path.exists({flag:?}):\n    print(json.dumps({{'fixed': True}}))\n    sys.exit(0)\nprint('looking for the flag', file=sys.stderr)\nprint('the flag file is missing', file=sys.stderr)\nsys.exit(3)\n",
            runs = runs.to_str().unwrap(),
            flag = flag.to_str().unwrap(),
        ),
    );
    let file = complete_route(&topic, &command, "retries = 1\nretry_timeout = \"1s\"\n");
    let instance = start_one(&rest, &key, "order-3").await;
    let worker = WorkerProcess::spawn(
        "incident",
        &engine.url,
        &["--config", file.path().to_str().unwrap()],
    );
    let incident = eventually(WAIT, "an incident on the task", || async {
        let found = rest
            .get("incident", &[("processInstanceId", instance.as_str())])
            .await;
        found.as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(
        incident["incidentMessage"],
        json!("the flag file is missing")
    );
    assert_eq!(incident["incidentType"], json!("failedExternalTask"));
    let ran = std::fs::read_to_string(&runs).unwrap().lines().count();
    assert_eq!(ran, 2, "one run, then one retry");

    std::fs::write(&flag, "").unwrap();
    let task = rest
        .get("external-task", &[("processInstanceId", instance.as_str())])
        .await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = reqwest::Client::new()
        .put(format!("{}/external-task/{task}/retries", engine.url))
        .json(&json!({"retries": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 204);
    rest.wait_instances_completed(std::slice::from_ref(&instance), WAIT)
        .await;
    let variables = history_variables(&rest, &instance).await;
    assert!(
        variables.contains(&("fixed".to_owned(), "Boolean".to_owned(), json!(true))),
        "{variables:?}"
    );
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 3);
    let failed = format!("camunda_worker_tasks_failed_total{{topic=\"{topic}\"}}");
    let metrics = worker.scrape_settled(&failed, 2.0).await;
    assert_eq!(metric_value(&metrics, &failed), 2.0, "{metrics}");
}

/// The route tables a complete route refuses, one line each and exit 2.
#[test]
fn a_contradictory_or_work_less_route_is_refused_naming_the_key() {
    let route = "[[route]]\ntopic = \"a\"\n";
    let complete = format!("{route}kind = \"complete\"\n");
    let with_command = format!("{complete}command = [\"sh\"]\n");
    for (text, needles) in [
        (
            format!("{route}kind = \"plain\"\n"),
            &[
                "[[route]] #1 (topic \"a\")",
                "unknown kind \"plain\"",
                "\"complete\"",
            ][..],
        ),
        (complete.clone(), &["(topic \"a\")", "needs `command`"][..]),
        (
            format!("{complete}command = []\n"),
            &["(topic \"a\")", "needs `command`"][..],
        ),
        (
            format!("{with_command}message_name = \"m\"\n"),
            &["key `message_name`", "sends no message"][..],
        ),
        (
            format!("{with_command}correlation_delay = \"1s\"\n"),
            &["key `correlation_delay`"][..],
        ),
        (
            format!("{with_command}message_variables = {{ m = 1 }}\n"),
            &["key `message_variables`"][..],
        ),
        (
            format!("{with_command}variables = {{ v = 1 }}\n"),
            &["key `variables`", "command's output"][..],
        ),
        (
            format!("{route}command = [\"sh\"]\nfollow_up_command = [\"sh\"]\n"),
            &["`command` and `follow_up_command`"][..],
        ),
        (
            format!("{route}retries = 2\n"),
            &["key `retries`", "kind \"complete\""][..],
        ),
        (
            format!("{with_command}retries = -1\n"),
            &["key `retries`"][..],
        ),
        (
            format!("{with_command}retry_timeout = \"soon\"\n"),
            &["key `retry_timeout`", "soon"][..],
        ),
        (
            format!("{complete}command = [\"/no/such/program\"]\n"),
            &["key `command`", "/no/such/program"][..],
        ),
    ] {
        let file = config_file(&text);
        let path = file.path().to_str().unwrap();
        rejects(binary().args(["--config", path, "--print-config"]), needles);
    }
}

/// `command` is the message kind's key too, and a complete route's report shows its own keys.
#[test]
fn command_names_a_message_routes_work_and_the_report_shows_a_complete_route() {
    let file = config_file(
        "retries = 5\n[[route]]\ntopic = \"m\"\ncommand = [\"sh\", \"-c\", \"echo {}\"]\n\n[[route]]\ntopic = \"c\"\nkind = \"complete\"\ncommand = [\"sh\"]\nretry_timeout = \"3s\"\n",
    );
    let output = binary()
        .args(["--config", file.path().to_str().unwrap(), "--print-config"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        shown.contains("kind = \"message\"")
            && shown.contains("follow_up_command = [\"sh\", \"-c\", \"echo {}\"]"),
        "{shown}"
    );
    assert!(
        shown.contains("kind = \"complete\"\nlock_duration"),
        "{shown}"
    );
    assert!(shown.contains("command = [\"sh\"]"), "{shown}");
    assert!(
        shown.contains("retries = 5"),
        "the top-level default: {shown}"
    );
    assert!(shown.contains("retry_timeout = \"3s\""), "{shown}");
}

/// `status` counts a complete route within its tenants: with `tenant_ids`, the totals are its
/// tenants' and one line per tenant counts that tenant's tasks only (two in one tenant, one in
/// the other; the task without a tenant is not the route's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_splits_a_complete_routes_tasks_by_tenant() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic) = ("plain_status_tenants", "plainTask_status_tenants");
    let mut definitions = Vec::new();
    for tenant in [Some("ck-tenant-a"), Some("ck-tenant-b"), None] {
        let bpmn = plain_task_bpmn(key, topic);
        definitions.push(crate::subscriptions::deploy(&rest, key, bpmn, tenant).await);
    }
    for (definition, count) in definitions.iter().zip([2, 1, 1]) {
        for n in 0..count {
            crate::subscriptions::start(&rest, definition, &format!("st-{n}"), json!({})).await;
        }
    }
    let file = complete_route(
        topic,
        "/bin/true",
        "tenant_ids = [\"ck-tenant-a\", \"ck-tenant-b\"]\n",
    );
    let output = binary()
        .args(["--engine-url", &engine.url, "--config"])
        .arg(file.path())
        .arg("status")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{shown}");
    for line in [
        format!("open tasks on topic {topic}: 3 (0 locked)"),
        "  tenant ck-tenant-a: 2 open tasks (0 locked), 0 incidents".to_owned(),
        "  tenant ck-tenant-b: 1 open tasks (0 locked), 0 incidents".to_owned(),
    ] {
        assert!(
            shown.lines().any(|l| l == line),
            "no line {line:?} in:\n{shown}"
        );
    }
}
