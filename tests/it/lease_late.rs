//! A lease renewal that reaches the engine late — after another replica took the follow-up over,
//! delivered it, and the process looped on — changes nothing the message depends on: a renewal
//! writes the lease, a variable no message names, never the marker. (Found by the chaos gate: a
//! late renewal set an old round's owed marker back, and that round got a second message in the
//! next round's place, which got none.) The fault proxy holds the first worker's renewal until the
//! process is in its second round: no randomness, no timing to hope for.

use serde_json::Value;

use crate::support::engine::{shared_engine, Rest};
use crate::support::proxy::{Fault, FaultKind, FaultProxy, Rule};
use crate::support::work::{
    assert_variable, history_variables, looping_bpmn, worker_flags, Script, MARKER, WAIT,
};
use crate::support::{eventually, WorkerProcess, SHUTDOWN_LIMIT};

/// The instance's marker now, if it has one.
async fn marker_now(rest: &Rest, instance: &str) -> Option<String> {
    let found = rest
        .get(
            "variable-instance",
            &[("processInstanceIdIn", instance), ("variableName", MARKER)],
        )
        .await;
    found[0]["value"].as_str().map(str::to_owned)
}

/// The task an owed marker `owed:<topic>:<due>:<task id>` names.
fn task_of(marker: &str) -> &str {
    assert!(marker.starts_with("owed:"), "{marker} is not owed");
    marker.rsplit(':').next().unwrap()
}

/// Every value the marker ever had, as history (level `full`) keeps its updates, sorted. (The
/// detail query ignores a `variableName` parameter: the answer is filtered here.)
async fn marker_history(rest: &Rest, instance: &str) -> Vec<String> {
    let details = rest
        .get(
            "history/detail",
            &[("processInstanceId", instance), ("variableUpdates", "true")],
        )
        .await;
    let mut values: Vec<String> = details
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["variableName"] == MARKER)
        .filter_map(|d| d["value"].as_str().map(str::to_owned))
        .collect();
    values.sort();
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_that_reaches_the_engine_after_the_process_looped_on_brings_no_round_back() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = ("lease_late", "lease_late_task", "lease_late_done");
    rest.deploy_bpmn(key, looping_bpmn(key, topic, message, 2))
        .await;
    // Run 1, the first worker's of round 1, outlives the test; run 2, the second worker's of the
    // same round, is quick; run 3, of round 2, waits for the test's go.
    let script = Script::python(
        r#"
if RUN == 1:
    time.sleep(120)
if RUN == 3:
    while not os.path.exists(path("go")):
        time.sleep(0.1)
json.dump({"run": RUN}, sys.stdout)
"#,
    );
    let instance = rest.start_instances(key, "lease-late", 1).await.remove(0);
    let proxy = FaultProxy::start(&format!("http://127.0.0.1:{}", engine.port)).await;
    // The first worker: its first fetch takes round 1, later ones get 503 (round 2 is the
    // second worker's); its first variable write — the first renewal — is held.
    proxy.add_rule(
        Rule::on("POST", "/external-task/fetchAndLock$")
            .skip(1)
            .then(Fault::Status(503)),
    );
    proxy.add_rule(
        Rule::on("POST", "/process-instance/[^/]+/variables$")
            .times(1)
            .then(Fault::Hold),
    );
    let mut flags = worker_flags(topic, message, &script);
    flags.extend(["--follow-up-lease", "4s", "--reconcile-interval", "1s"]);
    let mut first_flags = flags.clone();
    first_flags.extend(["--request-timeout", "100s"]);
    let via_proxy = format!("{}/engine-rest", proxy.url());
    let mut first = WorkerProcess::spawn("first", &via_proxy, &first_flags);
    let round_1 = eventually(WAIT, "round 1 completed, its marker owed", || async {
        marker_now(&rest, &instance).await
    })
    .await;
    eventually(WAIT, "the first worker's lease renewal held", || async {
        (proxy.applied_count(FaultKind::Hold) == 1).then_some(())
    })
    .await;

    let mut second = WorkerProcess::spawn("second", &engine.url, &flags);
    let round_2 = eventually(
        WAIT,
        "round 1 delivered by the second worker, round 2 owed",
        || async {
            let marker = marker_now(&rest, &instance).await?;
            (marker.starts_with("owed:") && task_of(&marker) != task_of(&round_1)).then_some(marker)
        },
    )
    .await;

    let released = proxy.exchanges().len();
    proxy.release_held();
    let renewal = eventually(WAIT, "the held renewal reached the engine", || async {
        proxy.exchanges()[released..]
            .iter()
            .find(|e| e.path.ends_with("/variables") && e.engine_status.is_some())
            .cloned()
    })
    .await;
    assert_eq!(renewal.engine_status, Some(204), "{renewal:?}");
    assert_eq!(
        marker_now(&rest, &instance).await.as_deref(),
        Some(round_2.as_str()),
        "round 2's marker is untouched by the late renewal"
    );

    let written = renewal.body["modifications"]
        .as_object()
        .expect("a variable modification");
    let lease = format!("{MARKER}Lease");
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        vec![&lease],
        "a renewal writes the lease, never the marker: {written:?}"
    );
    let value = written[&lease]["value"].as_str().unwrap();
    assert!(
        value.ends_with(task_of(&round_1)),
        "round 1's lease: {value}"
    );

    std::fs::write(script.file("go"), "").unwrap();
    rest.wait_instances_completed(std::slice::from_ref(&instance), WAIT)
        .await;
    let mut expected = vec![
        round_1.clone(),
        format!("delivered:{}", task_of(&round_1)),
        round_2.clone(),
        format!("delivered:{}", task_of(&round_2)),
    ];
    expected.sort();
    assert_eq!(
        marker_history(&rest, &instance).await,
        expected,
        "each round owed once and delivered once, nothing else"
    );
    let variables = history_variables(&rest, &instance).await;
    assert_variable(&variables, "run", "Integer", Value::from(3));
    assert_eq!(
        script.lines("runs").len(),
        3,
        "one run per round, and round 1's taken over"
    );
    first.kill_hard();
    assert_eq!(second.terminate(SHUTDOWN_LIMIT), Some(0));
}
