//! A failed follow-up shows one incident, even when two replicas each raised one and the fold
//! of the two was cut short. Found by the 2-hour soak (RELIABILITY.md): two replicas ran the
//! same handed-back work to failure, each raised an incident, and the `DELETE` of the second one
//! got a 503 from a node; only the raiser folded, once, so two stayed open. Every reconciler pass
//! that finds a failed follow-up now keeps the first of its open incidents (the lowest id) and
//! resolves the others.

use serde_json::json;

use crate::support::engine::{shared_engine, Rest};
use crate::support::work::{
    delete_instance, open_incidents, start_instance, task_id_of, waits_for, worker_flags, Script,
    MARKER, WAIT,
};
use crate::support::{eventually, WorkerProcess, SHUTDOWN_LIMIT};

/// The worker raises the incident of a failed work; the test then raises a second one for the
/// same follow-up through the REST API (what the other replica's raise left behind when its fold
/// failed). The next reconciler pass resolves the one with the higher id, and nothing else moves:
/// the work does not run again, no message is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_incident_left_by_a_fold_cut_short_is_resolved_by_the_next_reconciler_pass() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("work_incident_fold").await;
    let script = Script::python(
        r#"
print("boom: the archive is full", file=sys.stderr)
sys.exit(1)
"#,
    );
    let instance = start_instance(&rest, &key, "work-fold-1", json!({})).await;
    let mut flags = worker_flags(&topic, &message, &script);
    flags.extend(["--follow-up-retries", "0", "--reconcile-interval", "1s"]);
    let mut worker = WorkerProcess::spawn("fold", &engine.url, &flags);
    let first = eventually(WAIT, "the worker's incident", || async {
        open_incidents(&rest, &instance).await.into_iter().next()
    })
    .await;
    let task_id = task_id_of(&rest, &instance).await;
    let execution = first["executionId"].as_str().unwrap().to_owned();

    let (status, body) = rest
        .post(
            &format!("execution/{execution}/create-incident"),
            json!({
                "incidentType": MARKER,
                "configuration": format!("{task_id}#otherreplica"),
                "message": "camunda-worker: follow-up not delivered (the other replica's)",
            }),
        )
        .await;
    assert_eq!(status, 200, "create-incident answered {status}: {body}");
    let second: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut ids = [
        first["id"].as_str().unwrap().to_owned(),
        second["id"].as_str().unwrap().to_owned(),
    ];
    ids.sort_unstable();

    let left = eventually(WAIT, "one open incident left", || async {
        let open = open_incidents(&rest, &instance).await;
        (open.len() == 1).then_some(open)
    })
    .await;
    assert_eq!(
        left[0]["id"].as_str(),
        Some(ids[0].as_str()),
        "the lowest id kept"
    );
    assert_eq!(script.lines("runs").len(), 1, "the work ran once");
    assert_eq!(
        waits_for(&rest, &instance, &message).await.len(),
        1,
        "the instance still waits for its message"
    );
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    delete_instance(&rest, &instance).await;
}
