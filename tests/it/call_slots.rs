//! The calls the worker has open against the engine at once: never more than its call slots,
//! however many tasks and follow-ups want a call, and every instance still finishes. The worker
//! binary on the real engine, through the fault proxy, which slows each `complete` and message so
//! that calls pile up, and counts the calls open at once (long polls aside).

use std::time::Duration;

use camunda_worker::engine::CALL_SLOTS;

use crate::support::engine::{shared_engine, Rest};
use crate::support::proxy::{Fault, FaultProxy, Rule};
use crate::support::WorkerProcess;

/// 64 tasks in flight (fixed) and their messages due at once, each call held 300 ms by the proxy:
/// about a hundred calls want to be open, and no more than the slots are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_has_at_most_its_call_slots_open_against_the_engine() {
    let engine = shared_engine();
    let rest = Rest::new(&engine.url);
    let (key, topic, message) = rest.deploy_variant("call_slots").await;
    let proxy = FaultProxy::start(&format!("http://127.0.0.1:{}", engine.port)).await;
    let slow = Duration::from_millis(300);
    proxy.add_rule(Rule::on("POST", "/external-task/[^/]+/complete$").then(Fault::Delay(slow)));
    proxy.add_rule(Rule::on("POST", "/message$").then(Fault::Delay(slow)));
    rest.start_instances(&key, "slots", 200).await;
    let mut worker = WorkerProcess::spawn(
        "call-slots",
        &format!("{}/engine-rest", proxy.url()),
        &[
            "--topic",
            &topic,
            "--message-name",
            &message,
            "--correlation-delay",
            "0s",
            "--concurrency",
            "fixed",
            "--max-tasks",
            "64",
        ],
    );
    rest.wait_completed(&key, 200, Duration::from_secs(180))
        .await;
    // Without the slots, 96 were open at once here (64 completions and 32 message sends).
    let most = proxy.most_calls_open();
    assert!(
        most <= CALL_SLOTS,
        "{most} calls open at once, long polls aside: more than the {CALL_SLOTS} slots"
    );
    assert!(
        most >= CALL_SLOTS * 3 / 4,
        "only {most} calls open at once: the load did not fill the slots, so it tests nothing"
    );
    assert_eq!(rest.incidents(&key).await, 0, "no incident");
    assert_eq!(proxy.upstream_errors(), 0, "the engine answered every call");
    assert_eq!(worker.terminate(Duration::from_secs(30)), Some(0));
}
