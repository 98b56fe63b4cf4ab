//! Subscriptions like the official clients' (real engine): each `[[route]]` subscription key
//! changes which of its topic's tasks the engine hands out. Every test starts instances some of
//! which the route's key excludes, runs the worker binary with that route, and asserts on the
//! engine: the included instances ran to their end, the excluded ones still wait at a task that
//! no worker ever locked. What the keys bring with a task is in `subscriptions_payload`, the
//! fetch's order in `subscriptions_order`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::config_file;
use crate::support::engine::{shared_engine, Rest};
use crate::support::{metric_value, WorkerProcess, SHUTDOWN_LIMIT};

/// How long the included instances may take on a shared machine.
pub(crate) const WAIT: Duration = Duration::from_secs(120);

/// A process of a test's own: the bundled BPMN with its key, topic and message renamed.
pub(crate) struct Process {
    pub key: String,
    pub topic: String,
    pub message: String,
}

impl Process {
    /// The process of test `name` (its key, topic and message all carry the name).
    pub fn named(name: &str) -> Process {
        Process {
            key: format!("sub_{name}"),
            topic: format!("sub_topic_{name}"),
            message: format!("sub_message_{name}"),
        }
    }

    /// Its BPMN, changed by `edit` after the renaming.
    pub fn bpmn(&self, edit: impl Fn(String) -> String) -> String {
        let bpmn = camunda_worker::commands::BUNDLED_BPMN
            .replace("\"message_correlation\"", &format!("\"{}\"", self.key))
            .replace("\"messageSending\"", &format!("\"{}\"", self.topic))
            .replace("\"sample_response\"", &format!("\"{}\"", self.message));
        edit(bpmn)
    }

    /// A `[[route]]` table serving this process's topic with `keys` (TOML lines) added.
    pub fn route(&self, keys: &str) -> String {
        format!(
            "[[route]]\ntopic = {:?}\nmessage_name = {:?}\n{keys}\n",
            self.topic, self.message
        )
    }
}

/// Deploys `bpmn` (as `{name}.bpmn`), for `tenant` when given, and returns the id of the
/// process definition it created. The test support's `deploy_bpmn` has no tenant; the
/// multipart field `tenant-id` is the REST API's.
pub(crate) async fn deploy(rest: &Rest, name: &str, bpmn: String, tenant: Option<&str>) -> String {
    let mut form = reqwest::multipart::Form::new()
        .text("deployment-name", format!("test-{name}"))
        .part(
            "process.bpmn",
            reqwest::multipart::Part::bytes(bpmn.into_bytes()).file_name(format!("{name}.bpmn")),
        );
    if let Some(tenant) = tenant {
        form = form.text("tenant-id", tenant.to_owned());
    }
    let reply = reqwest::Client::new()
        .post(format!("{}/deployment/create", rest.url))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = reply.status();
    let body: Value = reply.json().await.unwrap();
    assert!(status.is_success(), "deploy answered {status}: {body}");
    let definitions = body["deployedProcessDefinitions"].as_object().unwrap();
    assert_eq!(definitions.len(), 1, "{body}");
    let (id, definition) = definitions.iter().next().unwrap();
    assert_eq!(definition["tenantId"].as_str(), tenant, "{body}");
    id.clone()
}

/// Starts an instance of the process definition `definition` (by id: unambiguous whatever the
/// tenants and versions of its key) with `business_key` and typed `variables`; its id.
pub(crate) async fn start(
    rest: &Rest,
    definition: &str,
    business_key: &str,
    variables: Value,
) -> String {
    let (status, body) = rest
        .post(
            &format!("process-definition/{definition}/start"),
            json!({"businessKey": business_key, "variables": variables}),
        )
        .await;
    assert_eq!(status, 200, "start answered {status}: {body}");
    let started: Value = serde_json::from_str(&body).unwrap();
    started["id"].as_str().unwrap().to_owned()
}

/// The worker binary serving the `[[route]]` tables of `routes`, its follow-ups sent at once.
pub(crate) fn serve(routes: &str) -> (WorkerProcess, tempfile::NamedTempFile) {
    serve_with_flags(routes, &[])
}

/// [`serve`] with these flags besides the config file.
pub(crate) fn serve_with_flags(
    routes: &str,
    flags: &[&str],
) -> (WorkerProcess, tempfile::NamedTempFile) {
    let file = config_file(&format!("correlation_delay = \"0s\"\n\n{routes}"));
    let mut args = vec!["--config", file.path().to_str().unwrap()];
    args.extend(flags);
    let worker = WorkerProcess::spawn("subscriptions", &shared_engine().url, &args);
    (worker, file)
}

/// Runs the worker with `process`'s route and `keys` until the `included` instances ended, then
/// asserts that the engine handed out exactly their tasks: the worker completed as many tasks
/// as there are included instances, and each `excluded` instance still waits at its task,
/// never locked by any worker.
async fn served_exactly(process: &Process, keys: &str, included: &[String], excluded: &[String]) {
    let rest = Rest::new(&shared_engine().url);
    let (mut worker, _file) = serve(&process.route(keys));
    rest.wait_instances_completed(included, WAIT).await;
    let completed = format!(
        "camunda_worker_tasks_completed_total{{topic=\"{}\"}}",
        process.topic
    );
    let metrics = worker
        .scrape_settled(&completed, included.len() as f64)
        .await;
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    assert_eq!(
        metric_value(&metrics, &completed),
        included.len() as f64,
        "{metrics}"
    );
    for instance in excluded {
        let tasks = rest
            .get("external-task", &[("processInstanceId", instance)])
            .await;
        let tasks = tasks.as_array().unwrap();
        assert_eq!(tasks.len(), 1, "instance {instance}: {tasks:?}");
        assert_eq!(tasks[0]["workerId"], Value::Null, "{:?}", tasks[0]);
        assert_eq!(
            tasks[0]["lockExpirationTime"],
            Value::Null,
            "{:?}",
            tasks[0]
        );
        let log = rest
            .get(
                "history/external-task-log",
                &[("processInstanceId", instance), ("successLog", "true")],
            )
            .await;
        assert_eq!(log, json!([]), "instance {instance} was completed once");
    }
}

/// Deploys `process` once for each of `tenants` (`None`: without a tenant); the definition
/// ids, in order.
async fn deploy_each(rest: &Rest, process: &Process, tenants: &[Option<&str>]) -> Vec<String> {
    let mut ids = Vec::new();
    for tenant in tenants {
        let id = deploy(rest, &process.key, process.bpmn(|b| b), *tenant).await;
        ids.push(id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_ids_fetch_only_the_tasks_of_those_tenants() {
    let rest = Rest::new(&shared_engine().url);
    let process = Process::named("tenant_ids");
    let tenants = [Some("sub-tenant-a"), Some("sub-tenant-b"), None];
    let ids = deploy_each(&rest, &process, &tenants).await;
    let mut instances = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        instances.push(start(&rest, id, &format!("ti-{n}"), json!({})).await);
    }
    let keys = "tenant_ids = [\"sub-tenant-a\"]";
    served_exactly(&process, keys, &instances[..1], &instances[1..]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tenant_id_fetches_only_the_tasks_without_a_tenant() {
    let rest = Rest::new(&shared_engine().url);
    let process = Process::named("without_tenant_id");
    let ids = deploy_each(&rest, &process, &[None, Some("sub-tenant-a")]).await;
    let mut instances = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        instances.push(start(&rest, id, &format!("wt-{n}"), json!({})).await);
    }
    let keys = "without_tenant_id = true";
    served_exactly(&process, keys, &instances[..1], &instances[1..]).await;
}

/// Two processes whose service tasks share one topic: the route takes one key's tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_definition_keys_fetch_only_the_tasks_of_those_processes() {
    let rest = Rest::new(&shared_engine().url);
    let process = Process::named("definition_keys");
    let other = Process {
        key: format!("{}_other", process.key),
        ..Process::named("definition_keys")
    };
    let wanted = deploy(&rest, &process.key, process.bpmn(|b| b), None).await;
    let unwanted = deploy(&rest, &other.key, other.bpmn(|b| b), None).await;
    let included = vec![start(&rest, &wanted, "dk-0", json!({})).await];
    let excluded = vec![start(&rest, &unwanted, "dk-1", json!({})).await];
    let keys = format!("process_definition_keys = [{:?}]", process.key);
    served_exactly(&process, &keys, &included, &excluded).await;
}

/// Two versions of one process: the route takes the first version's tasks only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_definition_ids_fetch_only_the_tasks_of_those_definitions() {
    let rest = Rest::new(&shared_engine().url);
    let process = Process::named("definition_ids");
    let ids = deploy_each(&rest, &process, &[None, None]).await;
    assert_ne!(ids[0], ids[1], "two versions");
    let included = vec![start(&rest, &ids[0], "di-0", json!({})).await];
    let excluded = vec![start(&rest, &ids[1], "di-1", json!({})).await];
    let keys = format!("process_definition_ids = [{:?}]", ids[0]);
    served_exactly(&process, &keys, &included, &excluded).await;
}

/// Two versions of one process, tagged `v1` and `v2`: the route takes `v2`'s tasks only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_definition_version_tag_fetches_only_the_tasks_of_that_tagged_version() {
    let rest = Rest::new(&shared_engine().url);
    let process = Process::named("version_tag");
    let tagged = |tag: &'static str| {
        move |bpmn: String| {
            bpmn.replacen(
                "isExecutable=\"true\"",
                &format!("isExecutable=\"true\" camunda:versionTag=\"{tag}\""),
                1,
            )
        }
    };
    let v1 = deploy(&rest, &process.key, process.bpmn(tagged("v1")), None).await;
    let v2 = deploy(&rest, &process.key, process.bpmn(tagged("v2")), None).await;
    let excluded = vec![start(&rest, &v1, "vt-1", json!({})).await];
    let included = vec![start(&rest, &v2, "vt-2", json!({})).await];
    let keys = "process_definition_version_tag = \"v2\"";
    served_exactly(&process, keys, &included, &excluded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_key_fetches_only_the_task_of_that_instance() {
    let rest = Rest::new(&shared_engine().url);
    let process = Process::named("business_key");
    let id = deploy(&rest, &process.key, process.bpmn(|b| b), None).await;
    let included = vec![start(&rest, &id, "bk-wanted", json!({})).await];
    let excluded = vec![
        start(&rest, &id, "bk-other", json!({})).await,
        start(&rest, &id, "bk-wanted-not", json!({})).await,
    ];
    let keys = "business_key = \"bk-wanted\"";
    served_exactly(&process, keys, &included, &excluded).await;
}

/// The engine matches `processVariables` with OR: an instance is fetched when any one of the
/// named variables equals its value, type included (an integer matches an `Integer`, not a
/// `String` "3"). Two instances match one variable each; two match none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_variables_fetch_only_the_tasks_with_one_of_those_values() {
    let rest = Rest::new(&shared_engine().url);
    let process = Process::named("process_variables");
    let id = deploy(&rest, &process.key, process.bpmn(|b| b), None).await;
    let variables = |color: &str, size: Value, size_type: &str| {
        json!({
            "color": {"value": color, "type": "String"},
            "size": {"value": size, "type": size_type},
        })
    };
    let mut included = Vec::new();
    for (n, values) in [
        variables("red", json!(1), "Integer"),
        variables("blue", json!(3), "Integer"),
    ]
    .into_iter()
    .enumerate()
    {
        included.push(start(&rest, &id, &format!("pv-in-{n}"), values).await);
    }
    let mut excluded = Vec::new();
    for (n, values) in [
        variables("blue", json!(4), "Integer"),
        variables("green", json!("3"), "String"),
    ]
    .into_iter()
    .enumerate()
    {
        excluded.push(start(&rest, &id, &format!("pv-out-{n}"), values).await);
    }
    let keys = "process_variables = { color = \"red\", size = 3 }";
    served_exactly(&process, keys, &included, &excluded).await;
}
