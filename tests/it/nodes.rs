//! Several engine nodes (mock engines): one long poll per node, slots shared, readiness while
//! one node answers, calls to any node that answers, and a node list that changes while the
//! worker runs (what DNS discovery does).

use std::sync::Arc;
use std::time::Duration;

use camunda_worker::correlation::FollowUps;
use camunda_worker::engine::{EngineClient, EngineSettings, NodeTarget};
use camunda_worker::handler::MessageCorrelationHandler;
use camunda_worker::metrics::Metrics;
use camunda_worker::worker::{DaemonHandles, StopTokens, Worker, WorkerSettings};
use serde_json::json;
use tokio_util::task::TaskTracker;
use wiremock::ResponseTemplate;

use crate::support::engine::free_port;
use crate::support::mock::{task, MockEngine};
use crate::support::{eventually, metric_sum, metric_value, WorkerProcess};

const WAIT: Duration = Duration::from_secs(15);

fn tasks(prefix: &str, n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| task(&format!("{prefix}{i}"), Some(&format!("k-{prefix}{i}"))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_gets_its_own_long_poll_and_the_slots_are_shared() {
    // Four tasks, three slots: never more than three in flight. Node A cannot take them all
    // (it has two), so node B is polled too, whichever node the worker asks first.
    let a = MockEngine::with_tasks(tasks("a", 2)).await;
    let b = MockEngine::with_tasks(tasks("b", 2)).await;
    for engine in [&a, &b] {
        // Completing takes a while: slots stay taken, so what was fetched is what is in flight.
        engine
            .on(
                "external-task/[ab][0-9]/complete",
                ResponseTemplate::new(204).set_delay(Duration::from_secs(20)),
            )
            .await;
        engine.on("message", ResponseTemplate::new(204)).await;
    }
    let urls = format!("{},{}", a.url(), b.url());
    let worker = WorkerProcess::spawn(
        "two-nodes",
        &urls,
        &["--max-tasks", "3", "--reconcile-interval", "0"],
    );
    eventually(Duration::from_secs(60), "both nodes polled", || async {
        (!a.requests_to("/fetchAndLock").is_empty() && !b.requests_to("/fetchAndLock").is_empty())
            .then_some(())
    })
    .await;
    let fetched = eventually(WAIT, "three tasks in flight", || async {
        let metrics = worker.scrape().await;
        let fetched = metric_sum(&metrics, "camunda_worker_tasks_fetched_total", &[]);
        (fetched >= 3.0).then_some(metrics)
    })
    .await;
    // Still within the first complete's delay: nothing finished, so nothing more may be fetched.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = worker.scrape().await;
    assert_eq!(
        metric_sum(&metrics, "camunda_worker_tasks_fetched_total", &[]),
        3.0,
        "never more than --max-tasks in flight over both nodes: {fetched}"
    );
    assert_eq!(
        metric_value(&metrics, "camunda_worker_tasks_in_flight"),
        3.0
    );
    for engine in [&a, &b] {
        let asked = engine.requests_to("/fetchAndLock");
        assert!(
            asked
                .iter()
                .all(|r| r.body["maxTasks"].as_u64().unwrap() <= 3),
            "{asked:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_is_ready_while_one_node_answers_and_reports_each_node() {
    let up = MockEngine::start(vec![]).await;
    let down = format!("http://127.0.0.1:{}/engine-rest", free_port());
    let urls = format!("{},{}", up.url(), down);
    let mut worker = WorkerProcess::spawn(
        "one-down",
        &urls,
        &["--reconcile-interval", "0", "--max-backoff", "1s"],
    );
    eventually(WAIT, "ready", || async {
        (worker.probe("/readyz").await == 200).then_some(())
    })
    .await;
    let metrics = eventually(WAIT, "both nodes judged", || async {
        let metrics = worker.scrape().await;
        let failed = metric_value(
            &metrics,
            &format!("camunda_worker_fetch_requests_total{{node=\"{down}\",outcome=\"error\"}}"),
        );
        (failed >= 2.0).then_some(metrics)
    })
    .await;
    assert_eq!(
        metric_value(
            &metrics,
            &format!("camunda_worker_engine_up{{node=\"{}\"}}", up.url())
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            &format!("camunda_worker_engine_up{{node=\"{down}\"}}")
        ),
        0.0
    );
    assert!(
        metric_value(
            &metrics,
            &format!("camunda_worker_fetch_backoff_seconds{{node=\"{down}\"}}")
        ) > 0.0,
        "the node that is down backs off: {metrics}"
    );
    assert_eq!(worker.probe("/readyz").await, 200);
    assert_eq!(worker.terminate(WAIT), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_completed_and_followed_up_through_any_node_that_answers() {
    // Tasks come from A; B refuses connections. Whichever node the calls go to first, they end up
    // on A.
    let a = MockEngine::start(vec![json!([
        task("t1", Some("k1")),
        task("t2", Some("k2"))
    ])])
    .await;
    a.on("external-task/t[12]/complete", ResponseTemplate::new(204))
        .await;
    a.on("message", ResponseTemplate::new(204)).await;
    let down = format!("http://127.0.0.1:{}/engine-rest", free_port());
    let mut worker = WorkerProcess::spawn(
        "failover",
        &format!("{down},{}", a.url()),
        &["--reconcile-interval", "0", "--correlation-delay", "0s"],
    );
    eventually(WAIT, "both follow-ups", || async {
        (worker.count("camunda_worker_follow_ups_sent_total").await == 2).then_some(())
    })
    .await;
    assert_eq!(a.requests_to("/complete").len(), 2);
    assert_eq!(a.requests_to("/message").len(), 2);
    assert_eq!(worker.terminate(WAIT), Some(0));
}

/// What DNS discovery does to a running worker: a node that appears is polled, one that leaves
/// is polled no more once its last poll ended, and its metrics go away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_follows_a_changing_node_list_without_a_restart() {
    let a = MockEngine::start(vec![]).await;
    let b = MockEngine::start(vec![]).await;
    let target = |engine: &MockEngine| NodeTarget {
        url: engine.url().parse().unwrap(),
        address: None,
    };
    let metrics = Arc::new(Metrics::new());
    let client = EngineClient::new(EngineSettings::new(a.url().parse().unwrap()))
        .unwrap()
        .with_metrics(Arc::clone(&metrics));
    let tracker = TaskTracker::new();
    let stop = StopTokens::default();
    let follow_ups = FollowUps::new(
        client.clone(),
        Arc::clone(&metrics),
        Default::default(),
        tracker.clone(),
        stop.shutdown.clone(),
        stop.abort.clone(),
    );
    let worker = Worker::new(
        client.clone(),
        MessageCorrelationHandler {
            variables: Default::default(),
            correlate_by: Default::default(),
            fetch_variables: Vec::new(),
        },
        WorkerSettings {
            long_poll: Duration::from_millis(200),
            ..Default::default()
        },
        DaemonHandles {
            metrics: Arc::clone(&metrics),
            liveness: Default::default(),
            tracker,
            stop: stop.clone(),
        },
        follow_ups,
    );
    let running = tokio::spawn(async move { worker.run().await });
    eventually(WAIT, "A polled", || async {
        (!a.requests_to("/fetchAndLock").is_empty()).then_some(())
    })
    .await;
    assert!(client.set_nodes(&[target(&a), target(&b)]).unwrap());
    eventually(WAIT, "B polled once it appeared", || async {
        (!b.requests_to("/fetchAndLock").is_empty()).then_some(())
    })
    .await;
    assert!(client.set_nodes(&[target(&b)]).unwrap());
    // A's last poll is parked at most 200 ms (the mock's long poll) before its loop ends.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let polls_of_a = a.requests_to("/fetchAndLock").len();
    let polls_of_b = b.requests_to("/fetchAndLock").len();
    // Kept: a second with node A out of the list, to prove that no more polls go to it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        a.requests_to("/fetchAndLock").len(),
        polls_of_a,
        "A is not polled any more"
    );
    assert!(
        b.requests_to("/fetchAndLock").len() > polls_of_b,
        "B still is"
    );
    let text = metrics.render();
    assert!(!text.contains(&a.url()), "A's series are gone: {text}");
    assert!(text.contains(&b.url()), "{text}");
    stop.shutdown.cancel();
    tokio::time::timeout(WAIT, running).await.unwrap().unwrap();
}
