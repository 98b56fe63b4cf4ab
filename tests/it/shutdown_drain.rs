//! What a shutdown does on a mock engine: it never waits past the grace for a parked long poll,
//! sends pending follow-ups at once instead of after their delay, unlocks the tasks an abandoned
//! long poll locked, exits at once on a second signal and non-zero when the grace runs out.

use std::time::Duration;

use serde_json::json;
use wiremock::ResponseTemplate;

use crate::support::faults::{engine_keeping_polls_parked, no_match, WAIT};
use crate::support::mock::{error_body, task, MockEngine, OWED};
use crate::support::{eventually, lines_with};

/// An engine that cannot cancel a parked long poll (no `fetch-and-lock-unique-worker-request`)
/// keeps it parked: the worker asks, waits a moment, sweeps — and still exits 0 within its grace,
/// far sooner than the 30 s long poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_never_waits_past_the_grace_for_a_long_poll_the_engine_keeps_parked() {
    let engine = engine_keeping_polls_parked(json!([])).await;
    let mut worker = engine.worker(&["--long-poll", "30s", "--shutdown-grace", "3s"]);
    eventually(WAIT, "the long poll to be open", || async {
        (!engine.requests_to("/fetchAndLock").is_empty()).then_some(())
    })
    .await;
    // Bounded far below the 30 s long poll: the grace (3 s) ends the sweep.
    assert_eq!(
        worker.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        worker.stderr()
    );
    let cancels = engine
        .requests_to("/fetchAndLock")
        .iter()
        .filter(|r| r.body["maxTasks"] == json!(0))
        .count();
    assert_eq!(
        cancels, 1,
        "the worker asked the engine to end its parked poll"
    );
    assert!(
        engine.requests_to("/external-task").len() >= 2,
        "swept while the grace lasted"
    );
    assert!(
        worker
            .stderr()
            .contains("fetch-and-lock-unique-worker-request"),
        "{}",
        worker.stderr()
    );
}

/// SIGTERM sends the follow-ups still in their delay at once. One that does not go through then
/// (t2: its instance does not wait yet) is not retried until the grace ends: it stays owed in the
/// engine for the reconciler of any worker, and the daemon says so in one WARN with the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_pending_follow_ups_now_instead_of_after_the_delay() {
    let engine = MockEngine::start(vec![json!([
        task("t1", Some("k1")),
        task("t2", Some("k2"))
    ])])
    .await;
    engine
        .on("external-task/t[12]/complete", ResponseTemplate::new(204))
        .await;
    engine.marker("pi-t2", vec![Some(OWED)]).await;
    engine
        .on_message_with(json!({"processInstanceId": "pi-t2"}), no_match())
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let mut worker = engine.worker(&["--correlation-delay", "10m"]);
    eventually(WAIT, "both completions", || async {
        (engine.requests_to("/complete").len() == 2).then_some(())
    })
    .await;
    // Well within the 25 s grace: the follow-up that does not go through does not hold it.
    assert_eq!(worker.terminate(WAIT), Some(0), "{}", worker.stderr());
    let messages = engine.requests_to("/message");
    let to = |instance: &str| {
        messages
            .iter()
            .filter(|m| m.body["processInstanceId"] == json!(instance))
            .count()
    };
    assert_eq!(
        (to("pi-t1"), to("pi-t2")),
        (1, 1),
        "the pending follow-ups were sent on shutdown, once each"
    );
    let log = worker.stderr();
    assert_eq!(
        lines_with(&log, "not delivered before shutdown"),
        1,
        "{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("not delivered before shutdown"))
        .unwrap();
    assert!(
        line.contains(" WARN ") && line.contains("1 follow-up not"),
        "{line}"
    );
    assert_eq!(lines_with(&log, " ERROR "), 0, "{log}");
}

/// What holds the grace is a task still being completed (t2: the engine keeps failing, the lock
/// lasts): a second signal ends the process at once, an expired grace exits non-zero. A
/// follow-up that does not go through (t1) never holds it: it is left owed in the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_and_an_expired_grace_exits_non_zero() {
    for (grace, second_signal, expected) in [("60s", true, 130), ("1s", false, 1)] {
        let engine = MockEngine::start(vec![json!([
            task("t1", Some("k1")),
            task("t2", Some("k2"))
        ])])
        .await;
        engine
            .on("external-task/t1/complete", ResponseTemplate::new(204))
            .await;
        engine
            .on(
                "external-task/t2/complete",
                ResponseTemplate::new(500).set_body_json(error_body(
                    "ProcessEngineException",
                    "database gone",
                    Some(0),
                )),
            )
            .await;
        engine.on("message", no_match()).await;
        engine.marker("pi-t1", vec![Some(OWED)]).await;
        engine.message_waits("pi-t1", &[]).await;
        let mut worker = engine.quick_worker(&["--lock-duration", "5m", "--shutdown-grace", grace]);
        eventually(
            WAIT,
            "a retried follow-up and a retried complete",
            || async {
                (engine.requests_to("/message").len() >= 2
                    && engine.requests_to("/t2/complete").len() >= 2)
                    .then_some(())
            },
        )
        .await;
        worker.signal("TERM");
        // Kept: the drain begins; a second signal, where sent, must arrive during it, not before.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if second_signal {
            worker.signal("TERM");
        }
        assert_eq!(
            worker.wait_exit(Duration::from_secs(10)),
            Some(expected),
            "{}",
            worker.stderr()
        );
        if !second_signal {
            let log = worker.stderr();
            assert_eq!(
                lines_with(&log, &format!("shutdown grace of {grace} is over")),
                1,
                "{log}"
            );
            assert_eq!(
                lines_with(&log, "complete not sent, the lock will expire"),
                1,
                "{log}"
            );
            assert_eq!(
                lines_with(&log, "1 follow-up not delivered before shutdown"),
                1,
                "{log}"
            );
        }
    }
}

/// The engine keeps a long poll parked after the worker hung up, and may still lock tasks for the
/// stopping worker's id; the shutdown sweep gives them back until that poll has timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_unlocks_tasks_the_abandoned_long_poll_locked_for_this_worker() {
    let engine = engine_keeping_polls_parked(json!([task("late", Some("k"))])).await;
    engine
        .on("external-task/late/unlock", ResponseTemplate::new(204))
        .await;
    let mut worker = engine.worker(&["--long-poll", "2s", "--worker-id", "stopping-1"]);
    eventually(WAIT, "the long poll to be open", || async {
        (!engine.requests_to("/fetchAndLock").is_empty()).then_some(())
    })
    .await;
    assert_eq!(worker.terminate(WAIT), Some(0), "{}", worker.stderr());
    assert!(
        !engine.requests_to("/late/unlock").is_empty(),
        "{}",
        worker.stderr()
    );
    let sweeps = engine.requests_to("/external-task");
    assert!(
        sweeps.len() >= 2,
        "repeated while the abandoned poll could still lock: {}",
        sweeps.len()
    );
}
