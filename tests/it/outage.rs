//! An engine that is down, slow, refusing or garbled: the worker backs off, reports it once and
//! recovers, never ends — with the exact engine replies pinned on a mock engine (rows of the
//! README's "Failure behaviour" table).

use std::time::Duration;

use serde_json::json;
use wiremock::ResponseTemplate;

use crate::delivery::{stop_and_read, Scenario, INSTANCES, RUN_LIMIT};
use crate::support::engine::{free_port, shared_engine};
use crate::support::faults::{at, follow_ups_of_t1, COMPLETED, SENT, TASK_GONE, WAIT};
use crate::support::mock::{task, MockEngine};
use crate::support::proxy::{Fault, FaultKind, FaultProxy, Rule};
use crate::support::{eventually, lines_with, WorkerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_answering_503_is_backed_off_with_one_warning_and_one_recovery_notice() {
    let engine = MockEngine::start(vec![]).await;
    engine
        .fetch_first(
            4,
            ResponseTemplate::new(503).set_body_string("Service Unavailable"),
        )
        .await;
    // Four failures with backoff (0.25–0.5 s, 0.5–1 s, 1–2 s, 2–4 s), then empty polls again.
    let log = engine
        .worker(&[])
        .stop_once(WAIT, "polling to resume after the outage", |_| {
            engine.requests_to("/fetchAndLock").len() >= 6
        })
        .await
        .log;
    assert_eq!(lines_with(&log, "engine unavailable"), 1, "{log}");
    assert_eq!(lines_with(&log, "answers again"), 1, "{log}");
    // No busy loop: between the 1st and 5th request at least three backoff delays passed.
    let fetches = engine.requests_to("/fetchAndLock");
    let outage = fetches[4].at.duration_since(fetches[0].at);
    assert!(
        outage >= Duration::from_millis(1750),
        "5 requests within {outage:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_engine_never_ends_the_worker() {
    let closed = format!("http://127.0.0.1:{}/engine-rest", free_port());
    let mut worker = WorkerProcess::spawn("worker", &closed, &["--max-backoff", "1s"]);
    // Kept: an observation window, not a deadline: the worker keeps backing off and does not end.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        worker.is_running(),
        "the worker must keep trying: {}",
        worker.stderr()
    );
    let log = worker.stderr();
    assert_eq!(worker.terminate(WAIT), Some(0), "{log}");
    assert_eq!(
        lines_with(&log, "engine unavailable"),
        1,
        "one WARN for the outage: {log}"
    );
    assert!(
        log.contains("Connection refused") || log.contains("connect"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_a_silent_connection_times_out_and_polls_again() {
    let engine = MockEngine::start(vec![]).await;
    // The first fetch never answers in time (a half-open connection, as far as the client knows).
    engine
        .fetch_first(
            1,
            ResponseTemplate::new(200)
                .set_body_json(json!([]))
                .set_delay(Duration::from_secs(120)),
        )
        .await;
    // Long poll 1 s + margin 1 s: the client gives up at 2 s, backs off, and asks again.
    engine
        .worker(&["--long-poll", "1s"])
        .stop_once(WAIT, "a second fetch after the timeout", |_| {
            engine.requests_to("/fetchAndLock").len() >= 2
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_give_one_clear_error_and_backoff_without_leaking_the_password() {
    let engine = MockEngine::start(vec![]).await;
    engine.fetch_first(1000, ResponseTemplate::new(401)).await;
    let mut worker = engine.worker(&["--username", "alice", "--password", "hunter2-secret"]);
    // Kept: an observation window, not a deadline: three seconds of refused credentials.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(worker.is_running());
    let log = worker.stderr();
    assert_eq!(worker.terminate(WAIT), Some(0));
    assert_eq!(
        lines_with(&log, "engine rejected the credentials for user alice"),
        1,
        "{log}"
    );
    assert!(
        !log.contains("hunter2-secret"),
        "the password leaked: {log}"
    );
    let attempts = engine.requests_to("/fetchAndLock").len();
    assert!(
        (2..=6).contains(&attempts),
        "backoff, no retry storm: {attempts} requests in 3 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_is_not_json_is_logged_with_an_excerpt_and_treated_as_transient() {
    let engine = MockEngine::start(vec![]).await;
    engine
        .fetch_first(
            1,
            ResponseTemplate::new(200)
                .set_body_string("<html><body>502 from the ingress</body></html>"),
        )
        .await;
    let log = engine
        .worker(&[])
        .stop_once(WAIT, "polling to go on", |_| {
            engine.requests_to("/fetchAndLock").len() >= 3
        })
        .await
        .log;
    let line = log
        .lines()
        .find(|l| l.contains("unexpected body"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("WARN") && line.contains("502 from the ingress"),
        "{line}"
    );
    assert!(!log.contains("panicked"));
}

/// A server (or proxy) that closed an idle keep-alive connection in the instant the worker reuses
/// it: the call is sent again at once on a new connection — no backoff, no warning, no outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_a_connection_the_server_closed_is_sent_again_at_once() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("k1"))])]).await;
    // Every later poll holds its connection, so the one `complete` used is the only idle one
    // when the follow-up starts a second later.
    engine.park_polls(Duration::from_secs(30)).await;
    engine
        .on("external-task/t1/complete", ResponseTemplate::new(204))
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let proxy = FaultProxy::start(&engine.server.uri()).await;
    proxy.close_idle_after(Some(Duration::from_millis(500)));
    let stopped = WorkerProcess::spawn(
        "worker",
        &format!("{}/engine-rest", proxy.url()),
        &[
            "--correlation-delay",
            "1s",
            "--reconcile-interval",
            "0",
            "--shutdown-grace",
            "2s",
        ],
    )
    .stop_once(WAIT, "the follow-up", at(SENT, 1.0))
    .await;
    assert!(
        proxy.applied_count(FaultKind::StaleClose) >= 1,
        "the race was provoked"
    );
    assert!(
        stopped.sum("camunda_worker_engine_stale_connection_retries_total", &[]) >= 1.0,
        "{}",
        stopped.metrics
    );
    assert_eq!(
        stopped.sum(
            "camunda_worker_fetch_requests_total",
            &["outcome=\"error\""]
        ),
        0.0
    );
    // The log before SIGTERM: stopping against this mock (which cannot cancel a parked poll) warns.
    let log = stopped.log;
    assert_eq!(lines_with(&log, " WARN "), 0, "{log}");
    assert_eq!(lines_with(&log, "engine unavailable"), 0, "{log}");
}

/// A 404 page that is not the engine's (a proxy's HTML, no engine error body) says nothing about
/// the task: it is an outage, retried, not "task gone". The next `complete` goes through, and the
/// follow-up is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_404_page_to_complete_is_an_outage_that_is_retried_not_a_task_gone() {
    let engine = MockEngine::start(vec![json!([task("t1", Some("k1"))])]).await;
    engine
        .on_sequence(
            "external-task/t1/complete",
            vec![
                ResponseTemplate::new(404).set_body_raw("<html>Not Found</html>", "text/html"),
                ResponseTemplate::new(204),
            ],
        )
        .await;
    engine.on("message", ResponseTemplate::new(204)).await;
    let stopped = engine
        .quick_worker(&[])
        .stop_once(WAIT, "the follow-up", at(SENT, 1.0))
        .await;
    assert_eq!(
        (stopped.value(COMPLETED), stopped.value(TASK_GONE)),
        (1.0, 0.0),
        "completed, not dropped"
    );
    let log = stopped.log;
    assert_eq!(engine.requests_to("/t1/complete").len(), 2, "retried");
    assert_eq!(
        follow_ups_of_t1(&engine, Some("k1"), Some("pi-t1")).len(),
        1
    );
    assert_eq!(
        lines_with(&log, "engine unavailable"),
        1,
        "an outage: {log}"
    );
}

/// The engine goes away while every slot is busy completing (the fetch loop is not polling at
/// all): the engine client notices, logs one WARN, `/readyz` says 503; when the engine is back,
/// one INFO and `/readyz` 200 — and every instance still gets exactly one follow-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_while_every_slot_is_busy_is_reported_once_by_the_client() {
    let scenario = Scenario::on(shared_engine(), "busy_outage").await;
    // Slow completes keep both slots busy: the fetch loop waits for a slot, not for the engine.
    scenario.proxy.add_rule(
        Rule::on("POST", r"/external-task/[^/]+/complete$")
            .then(Fault::Delay(Duration::from_millis(200))),
    );
    let ids = scenario
        .rest
        .start_instances(&scenario.key, "busy_outage", INSTANCES)
        .await;
    // A call the dead proxy neither answers nor closes fails after the request timeout.
    let mut worker = scenario.worker(&[
        "--max-tasks",
        "2",
        "--max-backoff",
        "1s",
        "--request-timeout",
        "2s",
    ]);
    eventually(RUN_LIMIT, "a few completions", || async {
        (worker.count("camunda_worker_tasks_completed_total").await >= 4).then_some(())
    })
    .await;
    scenario.proxy.set_down(true);
    eventually(
        Duration::from_secs(30),
        "/readyz reports the engine gone",
        || async { (worker.probe("/readyz").await == 503).then_some(()) },
    )
    .await;
    // An observation window, not a deadline: the worker keeps trying while the engine is gone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    worker.assert_running("during the outage");
    scenario.proxy.set_down(false);
    eventually(
        Duration::from_secs(30),
        "/readyz reports the engine back",
        || async { (worker.probe("/readyz").await == 200).then_some(()) },
    )
    .await;
    scenario
        .assert_exactly_once(&mut worker, "busy_outage", &ids)
        .await;
    // Read once the process has exited: every line it wrote is in.
    let log_after = stop_and_read(worker);
    assert_eq!(
        lines_with(&log_after, "engine unavailable"),
        1,
        "{log_after}"
    );
    assert_eq!(
        lines_with(&log_after, "the engine answers again"),
        1,
        "{log_after}"
    );
}
