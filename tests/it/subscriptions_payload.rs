//! What a route's subscription keys bring with a task (real engine): `local_variables`,
//! `include_extension_properties` and `deserialize_values` change what the engine hands out
//! with each task, and so what a route's command reads on stdin. Each test deploys one process
//! for a route with the key and one for a route without it, serves both with one worker whose
//! `complete` routes run the same command — it completes its task with everything it read as one
//! String variable — and compares the two reads, taken from the engine's history. A `message`
//! route's follow-up command reads the extension properties the same way.

use serde_json::{json, Value};

use crate::complete_kind::{plain_task_bpmn, python_command};
use crate::subscriptions::{deploy, serve, start, Process, WAIT};
use crate::support::engine::{shared_engine, Rest};
use crate::support::{eventually, SHUTDOWN_LIMIT};

/// A command that completes its task with one variable, `stdin`: the task as it read it.
const ECHO: &str = "import json, sys\nprint(json.dumps({'stdin': sys.stdin.read()}))\n";

/// One side of a comparison: a process of its own whose route sets `keys`.
struct Side {
    key: String,
    topic: String,
    keys: &'static str,
}

impl Side {
    fn new(name: &str, with: bool, keys: &'static str) -> Side {
        let side = if with { "with" } else { "without" };
        Side {
            key: format!("payload_{name}_{side}"),
            topic: format!("payloadTask_{name}_{side}"),
            keys: if with { keys } else { "" },
        }
    }

    /// Its `complete` route: `command`, fetching `variables`, plus its keys.
    fn route(&self, command: &str, variables: &[&str]) -> String {
        format!(
            "[[route]]\ntopic = {:?}\nkind = \"complete\"\ncommand = [{command:?}]\nfetch_variables = {variables:?}\n{}\n",
            self.topic, self.keys
        )
    }
}

/// What the command read on stdin for a task of a process whose service task carries
/// `extension` (the BPMN of its `extensionElements`, when not empty), started with `variables`, fetching
/// `fetched`: (with the route's `keys`, without them).
async fn read_with_and_without(
    name: &str,
    keys: &'static str,
    extension: &str,
    variables: Value,
    fetched: &[&str],
) -> (Value, Value) {
    let rest = Rest::new(&shared_engine().url);
    let sides = [Side::new(name, true, keys), Side::new(name, false, keys)];
    let dir = tempfile::tempdir().unwrap();
    let command = python_command(dir.path(), "echo.py", ECHO);
    let mut instances = Vec::new();
    let mut routes = String::new();
    for side in &sides {
        let task = format!(
            "<bpmn:serviceTask id=\"work\" camunda:type=\"external\" camunda:topic=\"{}\"",
            side.topic
        );
        let mut bpmn = plain_task_bpmn(&side.key, &side.topic);
        if !extension.is_empty() {
            bpmn = bpmn.replacen(
                &format!("{task} />"),
                &format!("{task}><bpmn:extensionElements>{extension}</bpmn:extensionElements></bpmn:serviceTask>"),
                1,
            );
            assert!(bpmn.contains(extension), "{bpmn}");
        }
        let definition = deploy(&rest, &side.key, bpmn, None).await;
        instances.push(start(&rest, &definition, &side.key, variables.clone()).await);
        routes.push_str(&side.route(&command, fetched));
    }
    let (mut worker, _file) = serve(&routes);
    rest.wait_instances_completed(&instances, WAIT).await;
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    (
        stdin_of(&rest, &instances[0]).await,
        stdin_of(&rest, &instances[1]).await,
    )
}

/// The task the command read, from the `stdin` variable it completed the task with.
async fn stdin_of(rest: &Rest, instance: &str) -> Value {
    let text = eventually(
        WAIT,
        "the command's `stdin` variable in history",
        || async {
            let found = rest
                .get(
                    "history/variable-instance",
                    &[("processInstanceId", instance), ("variableName", "stdin")],
                )
                .await;
            found[0]["value"].as_str().map(str::to_owned)
        },
    )
    .await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The service task has an input parameter `localVar` (a variable local to its execution); the
/// instance was started with `processVar`. Both named in `fetch_variables`: with
/// `local_variables` only the local one comes, without it both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_variables_bring_only_the_variables_local_to_the_task() {
    let input = "<camunda:inputOutput><camunda:inputParameter name=\"localVar\">local value</camunda:inputParameter></camunda:inputOutput>";
    let (with, without) = read_with_and_without(
        "local",
        "local_variables = true",
        input,
        json!({"processVar": {"value": "process value", "type": "String"}}),
        &["localVar", "processVar"],
    )
    .await;
    assert_eq!(
        with["variables"],
        json!({"localVar": "local value"}),
        "{with}"
    );
    assert_eq!(
        without["variables"],
        json!({"localVar": "local value", "processVar": "process value"}),
        "{without}"
    );
}

/// The service task has `camunda:properties`: with `include_extension_properties` the command
/// reads them as `extensionProperties`; without it the engine sends none (an empty object,
/// which the worker leaves out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_extension_properties_brings_the_tasks_camunda_properties() {
    let properties = "<camunda:properties><camunda:property name=\"template\" value=\"invoice\" /><camunda:property name=\"copies\" value=\"2\" /></camunda:properties>";
    let (with, without) = read_with_and_without(
        "properties",
        "include_extension_properties = true",
        properties,
        json!({}),
        &[],
    )
    .await;
    assert_eq!(
        with["extensionProperties"],
        json!({"template": "invoice", "copies": "2"}),
        "{with}"
    );
    assert_eq!(without.get("extensionProperties"), None, "{without}");
}

/// An `Object` variable serialized as JSON (a `java.util.HashMap`, which the bundled engine
/// deserializes with its Spin plugin): with `deserialize_values` the command reads the object
/// itself, without it the serialized text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deserialize_values_brings_object_variables_as_objects() {
    let serialized = "{\"amount\":12,\"currency\":\"EUR\"}";
    let object = json!({
        "order": {
            "type": "Object",
            "value": serialized,
            "valueInfo": {
                "objectTypeName": "java.util.HashMap",
                "serializationDataFormat": "application/json",
            },
        },
    });
    let (with, without) = read_with_and_without(
        "deserialize",
        "deserialize_values = true",
        "",
        object,
        &["order"],
    )
    .await;
    assert_eq!(
        with["variables"]["order"],
        json!({"amount": 12, "currency": "EUR"}),
        "{with}"
    );
    assert_eq!(
        without["variables"]["order"],
        json!(serialized),
        "{without}"
    );
}

/// A `message` route's follow-up command reads them too: it runs after its task was completed,
/// from the task as it was fetched. Its output is the message's variables, which history keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_extension_properties_reach_a_message_routes_follow_up_command() {
    let rest = Rest::new(&shared_engine().url);
    let process = Process::named("payload_follow_up");
    let bpmn = process.bpmn(|bpmn| {
        let task = format!("camunda:topic=\"{}\">", process.topic);
        bpmn.replacen(
            &task,
            &format!("{task}<bpmn:extensionElements><camunda:properties><camunda:property name=\"channel\" value=\"mail\" /></camunda:properties></bpmn:extensionElements>"),
            1,
        )
    });
    assert!(bpmn.contains("\"channel\""), "{bpmn}");
    let definition = deploy(&rest, &process.key, bpmn, None).await;
    let instance = start(&rest, &definition, "follow-up-1", json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let command = python_command(dir.path(), "echo.py", ECHO);
    let keys = format!("command = [{command:?}]\ninclude_extension_properties = true");
    let (mut worker, _file) = serve(&process.route(&keys));
    rest.wait_instances_completed(std::slice::from_ref(&instance), WAIT)
        .await;
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    let read = stdin_of(&rest, &instance).await;
    assert_eq!(
        read["extensionProperties"],
        json!({"channel": "mail"}),
        "{read}"
    );
    assert_eq!(read["businessKey"], json!("follow-up-1"), "{read}");
}
