//! A failed work among many open incidents of the follow-ups' type: the reconciler still tells
//! when its incident is resolved. One reply with every open incident would outgrow the bound of a
//! query's reply (an incident carries up to 3,900 characters of its cause), so past a page the
//! pass reads the incidents of the failed works' instances instead.

use serde_json::json;

use crate::support::engine::{engine_with, Rest};
use crate::support::work::{
    open_incidents, resolve_incident, start_instance, worker_flags, Script, WAIT,
};
use crate::support::{eventually, WorkerProcess, SHUTDOWN_LIMIT};

/// Other follow-ups' incidents, each with the longest cause the worker writes.
const OTHER_INCIDENTS: usize = 1000;

/// `OTHER_INCIDENTS` open incidents of the follow-ups' type on instances of process `key`, each
/// naming a task of its own.
async fn other_incidents(rest: &Rest, key: &str) {
    rest.start_instances(key, "other-incident", OTHER_INCIDENTS)
        .await;
    // An incident needs the execution at an activity: the one of each instance's external task.
    let limit = OTHER_INCIDENTS.to_string();
    let tasks = rest
        .get(
            "external-task",
            &[("processDefinitionKey", key), ("maxResults", &limit)],
        )
        .await;
    let executions: Vec<String> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["executionId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(executions.len(), OTHER_INCIDENTS);
    let cause = "a long cause of a failed work ".repeat(130);
    let mut pending = tokio::task::JoinSet::new();
    for (i, execution) in executions.into_iter().enumerate() {
        let rest = rest.clone();
        let body = json!({
            "incidentType": "camundaWorkerFollowUp",
            "configuration": format!("other-task-{i}#000000000000"),
            "message": cause.clone(),
        });
        pending.spawn(async move {
            let (status, text) = rest
                .post(&format!("execution/{execution}/create-incident"), body)
                .await;
            assert_eq!(status, 200, "create-incident answered {status}: {text}");
        });
        if pending.len() >= 16 {
            pending.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(done) = pending.join_next().await {
        done.unwrap();
    }
}

/// With 1,000 other open incidents of the type (about 4.5 MB as one reply), a work that failed
/// for good shows its incident, and resolving that incident runs the work again: the instance
/// finishes. On an engine of its own, so that no other test sees these incidents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_incident_is_found_among_more_open_incidents_than_one_reply_may_carry() {
    let engine = engine_with(&["--spring.application.name=many-incidents"]);
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("work_many_incidents").await;
    let (others, _, _) = rest.deploy_variant("work_many_incidents_others").await;
    other_incidents(&rest, &others).await;
    let open = rest
        .count(
            "incident/count",
            &[("incidentType", "camundaWorkerFollowUp")],
        )
        .await;
    assert_eq!(open, OTHER_INCIDENTS as u64);

    let script = Script::failing_until_fixed();
    let instance = start_instance(&rest, &key, "many-incidents-1", json!({})).await;
    let mut flags = worker_flags(&topic, &message, &script);
    flags.extend(["--follow-up-retries", "0", "--reconcile-interval", "1s"]);
    let mut worker = WorkerProcess::spawn("many-incidents", &engine.url, &flags);
    let incident = eventually(WAIT, "an incident on the instance", || async {
        open_incidents(&rest, &instance).await.into_iter().next()
    })
    .await;
    script.fix();
    resolve_incident(&rest, incident["id"].as_str().unwrap()).await;
    rest.wait_instances_completed(std::slice::from_ref(&instance), WAIT)
        .await;
    assert_eq!(script.lines("runs").len(), 2, "the work ran again once");
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
}
