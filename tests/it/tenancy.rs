//! Multi-tenancy end to end (real engine): two tenants, and an instance without a tenant beside
//! them, deploy the same process (same key, topic and message) and start instances with the same
//! business keys. One worker serves the topic for all of them, and each message reaches its own
//! tenant's instance, whatever `--correlate-by` says; a message by business key alone is kept
//! within its tenant by `tenantId` / `withoutTenantId`, which the engine honours (shown with a
//! twin instance that holds the very same marker). Recovery is in `tenancy_recovery`, the CLI in
//! `tenancy_cli`.

use serde_json::{json, Value};

use crate::cli::config_file;
use crate::subscriptions::{deploy, start, Process, WAIT};
use crate::support::engine::{shared_engine, Rest};
use crate::support::mock::MARKER;
use crate::support::{eventually, metric_sum, WorkerProcess, SHUTDOWN_LIMIT};

/// The two tenants and the instances without one, in the order tests start them.
pub(crate) const TENANTS: [Option<&str>; 3] = [Some("tenant-a"), Some("tenant-b"), None];

/// The message catch event of the bundled process.
const CATCH_EVENT: &str = "wait_for_response";

/// An instance a test started, and the tenant it belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Instance {
    pub id: String,
    pub tenant: Option<String>,
}

/// Deploys `process` for each of `tenants`, then starts one instance per business key in `keys`
/// in each: every business key is shared by all the tenants.
pub(crate) async fn start_in_each(
    rest: &Rest,
    process: &Process,
    tenants: &[Option<&str>],
    keys: &[&str],
) -> Vec<Instance> {
    let mut instances = Vec::new();
    for tenant in tenants {
        let definition = deploy(rest, &process.key, process.bpmn(|b| b), *tenant).await;
        for key in keys {
            instances.push(Instance {
                id: start(rest, &definition, key, json!({})).await,
                tenant: tenant.map(str::to_owned),
            });
        }
    }
    instances
}

/// The ids of `instances`.
pub(crate) fn ids(instances: &[Instance]) -> Vec<String> {
    instances.iter().map(|i| i.id.clone()).collect()
}

/// The worker binary serving the `[[route]]` tables of `routes` with `flags`.
pub(crate) fn worker(
    name: &str,
    routes: &str,
    flags: &[&str],
) -> (WorkerProcess, tempfile::NamedTempFile) {
    let file = config_file(routes);
    let mut all = vec!["--config", file.path().to_str().unwrap()];
    all.extend(flags);
    (WorkerProcess::spawn(name, &shared_engine().url, &all), file)
}

/// The one task of `instance` a worker completed, as the history's external-task log has it.
pub(crate) async fn completed_task(rest: &Rest, instance: &str) -> Value {
    let log = rest
        .get(
            "history/external-task-log",
            &[("processInstanceId", instance), ("successLog", "true")],
        )
        .await;
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 1, "one completion in {instance}: {log:?}");
    log[0].clone()
}

/// The marker variable of a running `instance` (runtime state), if it has one.
pub(crate) async fn live_marker(rest: &Rest, instance: &str) -> Option<String> {
    let found = rest
        .get(
            "variable-instance",
            &[("processInstanceIdIn", instance), ("variableName", MARKER)],
        )
        .await;
    found
        .as_array()
        .unwrap()
        .first()
        .map(|v| v["value"].as_str().unwrap().to_owned())
}

/// The marker's last value in `instance`, from history (the instance may have ended).
pub(crate) async fn final_marker(rest: &Rest, instance: &str) -> String {
    let found = rest
        .get(
            "history/variable-instance",
            &[("processInstanceId", instance), ("variableName", MARKER)],
        )
        .await;
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "one marker in {instance}: {found:?}");
    found[0]["value"].as_str().unwrap().to_owned()
}

/// Requires that each of `instances` ended, in its own tenant, after exactly one message: its
/// task was completed once (in its tenant), its marker names that very task as delivered — so
/// the message that ended it was the one owed for its own task, not a twin's — and its catch
/// event was passed once.
pub(crate) async fn assert_each_got_its_own_message(rest: &Rest, instances: &[Instance]) {
    for instance in instances {
        let id = &instance.id;
        let history = rest
            .get(&format!("history/process-instance/{id}"), &[])
            .await;
        assert_eq!(history["state"], "COMPLETED", "{history}");
        assert_eq!(
            history["tenantId"].as_str(),
            instance.tenant.as_deref(),
            "{history}"
        );
        let task = completed_task(rest, id).await;
        assert_eq!(
            task["tenantId"].as_str(),
            instance.tenant.as_deref(),
            "{task}"
        );
        let task_id = task["externalTaskId"].as_str().unwrap();
        assert_eq!(
            final_marker(rest, id).await,
            format!("delivered:{task_id}"),
            "instance {id} ({:?}) got the message owed for its own task",
            instance.tenant
        );
        let waits = rest
            .get(
                "history/activity-instance",
                &[("processInstanceId", id), ("activityId", CATCH_EVENT)],
            )
            .await;
        let waits = waits.as_array().unwrap();
        assert_eq!(waits.len(), 1, "one wait in {id}: {waits:?}");
        assert!(waits[0]["endTime"].is_string(), "{waits:?}");
    }
}

/// One worker, no tenant filter, correlating by `mode`, serves two tenants' and a tenant-less
/// instance's tasks, two business keys each, each key shared by the three: every instance ends
/// with its own message, and the worker sent exactly one message per instance, none retried nor
/// given up.
async fn each_message_reaches_its_own_tenants_instance(mode: &str) {
    let rest = Rest::new(&shared_engine().url);
    let process = Process::named(&format!("tenancy_{}", mode.replace('-', "_")));
    let instances = start_in_each(&rest, &process, &TENANTS, &["shared-1", "shared-2"]).await;
    let flags = [
        "--correlate-by",
        mode,
        "--correlation-delay",
        "0s",
        "--reconcile-interval",
        "0",
    ];
    let (mut worker, _file) = worker("tenancy", &process.route(""), &flags);
    rest.wait_instances_completed(&ids(&instances), WAIT).await;
    let sent = format!(
        "camunda_worker_follow_ups_sent_total{{topic=\"{}\"}}",
        process.topic
    );
    let metrics = worker.scrape_settled(&sent, instances.len() as f64).await;
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    let total = |name: &str| metric_sum(&metrics, name, &[]);
    assert_eq!(
        total("camunda_worker_follow_ups_sent_total"),
        instances.len() as f64,
        "{metrics}"
    );
    for name in [
        "camunda_worker_follow_ups_retried_total",
        "camunda_worker_follow_ups_given_up_total",
        "camunda_worker_follow_ups_already_delivered_total",
        "camunda_worker_follow_ups_recovered_total",
    ] {
        assert_eq!(total(name), 0.0, "{name}: {metrics}");
    }
    assert_each_got_its_own_message(&rest, &instances).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_business_key_each_tenants_message_reaches_its_own_instance() {
    each_message_reaches_its_own_tenants_instance("business-key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_process_instance_each_tenants_message_reaches_its_own_instance() {
    each_message_reaches_its_own_tenants_instance("process-instance").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_both_each_tenants_message_reaches_its_own_instance() {
    each_message_reaches_its_own_tenants_instance("both").await;
}

/// Locks the one open task of `process` (the twin's: the test's own instance is past its task)
/// for the test itself, and completes it with `marker` as its marker — the twin now waits at the
/// catch event with the same business key and the same owed marker as the worker's instance.
async fn complete_twin_with(rest: &Rest, process: &Process, twin: &str, marker: &str) {
    let (status, body) = rest
        .post(
            "external-task/fetchAndLock",
            json!({"workerId": "tenancy-forger", "maxTasks": 2,
                   "topics": [{"topicName": process.topic, "lockDuration": 60000}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let tasks: Value = serde_json::from_str(&body).unwrap();
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), 1, "only the twin's task is open: {tasks:?}");
    assert_eq!(tasks[0]["processInstanceId"], twin, "{tasks:?}");
    let (status, body) = rest
        .post(
            &format!(
                "external-task/{}/complete",
                tasks[0]["id"].as_str().unwrap()
            ),
            json!({"workerId": "tenancy-forger",
                   "variables": {MARKER: {"value": marker, "type": "String"}}}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
}

/// Whether `instance` waits at the catch event.
async fn waits(rest: &Rest, instance: &str) -> bool {
    rest.count(
        "event-subscription/count",
        &[("processInstanceId", instance), ("eventType", "message")],
    )
    .await
        == 1
}

/// The worker's instance (`own`'s tenant, served through `keys`) and a twin in another tenant
/// (`twin`'s) wait with the same business key and the same owed marker, so that only the tenant
/// tells them apart: the engine finds both for a message without one (checked first). The
/// worker correlates by business key; its follow-up, sent at SIGTERM, ends its own instance and
/// leaves the twin waiting with the marker untouched.
async fn only_the_tenant_tells_the_twins_apart(
    name: &str,
    own: Option<&str>,
    twin: Option<&str>,
    keys: &str,
) {
    let rest = Rest::new(&shared_engine().url);
    let process = Process::named(name);
    let mine = start_in_each(&rest, &process, &[own], &["twin"]).await;
    let theirs = start_in_each(&rest, &process, &[twin], &["twin"]).await;
    let (mine, theirs) = (&mine[0].id, &theirs[0].id);
    let flags = [
        "--correlate-by",
        "business-key",
        "--correlation-delay",
        "1h",
        "--reconcile-interval",
        "0",
    ];
    let (mut worker, _file) = worker("twins", &process.route(keys), &flags);
    let owed = eventually(WAIT, "the worker's instance to wait, owed", || async {
        let marker = live_marker(&rest, mine).await?;
        (marker.starts_with("owed:") && waits(&rest, mine).await).then_some(marker)
    })
    .await;
    complete_twin_with(&rest, &process, theirs, &owed).await;
    assert!(waits(&rest, theirs).await);
    let (status, body) = rest
        .post(
            "message",
            json!({"messageName": process.message, "businessKey": "twin",
                   "correlationKeys": {MARKER: {"value": owed, "type": "String"}}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("2 executions match"), "{body}");
    // SIGTERM sends the follow-up held in its delay at once.
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    rest.wait_instances_completed(std::slice::from_ref(mine), WAIT)
        .await;
    let task = completed_task(&rest, mine).await;
    assert_eq!(
        final_marker(&rest, mine).await,
        format!("delivered:{}", task["externalTaskId"].as_str().unwrap())
    );
    assert!(waits(&rest, theirs).await, "the twin still waits");
    assert_eq!(live_marker(&rest, theirs).await, Some(owed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_by_business_key_names_its_tenant_and_skips_a_twin_of_another_tenant() {
    only_the_tenant_tells_the_twins_apart(
        "tenancy_twin_tenant",
        Some("tenant-a"),
        Some("tenant-b"),
        "tenant_ids = [\"tenant-a\"]",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_by_business_key_without_tenant_skips_a_twin_of_a_tenant() {
    only_the_tenant_tells_the_twins_apart(
        "tenancy_twin_none",
        None,
        Some("tenant-a"),
        "without_tenant_id = true",
    )
    .await;
}
