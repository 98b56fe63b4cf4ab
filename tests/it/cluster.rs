//! The worker on a Camunda cluster: PostgreSQL, two engine nodes, HAProxy in front, started by
//! `engine/engine.sh cluster start`. These tests share one cluster and run one at a time
//! (`scripts/test.sh` runs them alone: `cluster:: --test-threads 1`); each leaves the cluster as
//! it found it. The reconciler is off, so every message counted is the worker's own follow-up.

use std::time::Duration;

use crate::support::cluster::shared_cluster;
use crate::support::engine::Rest;
use crate::support::{eventually, lines_with, metric_sum, metric_value, WorkerProcess};

const LIMIT: Duration = Duration::from_secs(300);

/// Starts `n` instances through `rest`'s node.
async fn start(rest: &Rest, key: &str, prefix: &str, n: usize) -> Vec<String> {
    rest.start_instances(key, prefix, n).await
}

/// The workers' counters summed, once they have counted `expected` follow-ups.
async fn totals(workers: &[WorkerProcess], expected: f64) -> (f64, f64, f64) {
    eventually(
        Duration::from_secs(60),
        "the workers counted every follow-up",
        || async {
            let mut completed = 0.0;
            let mut sent = 0.0;
            let mut given_up = 0.0;
            for worker in workers {
                let metrics = worker.scrape().await;
                completed += metric_value(&metrics, "camunda_worker_tasks_completed_total");
                sent += metric_value(&metrics, "camunda_worker_follow_ups_sent_total");
                given_up += metric_sum(&metrics, "camunda_worker_follow_ups_given_up_total", &[]);
            }
            (sent + given_up >= expected).then_some((completed, sent, given_up))
        },
    )
    .await
}

/// Successful completions of `topic` in the engine's history: one per task when each task was
/// completed exactly once.
async fn completions(rest: &Rest, topic: &str) -> u64 {
    rest.count(
        "history/external-task-log/count",
        &[("topicName", topic), ("successLog", "true")],
    )
    .await
}

fn worker_flags<'a>(topic: &'a str, message: &'a str) -> Vec<&'a str> {
    vec![
        "--topic",
        topic,
        "--message-name",
        message,
        "--correlation-delay",
        "500ms",
        "--reconcile-interval",
        "0",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_given_both_nodes_complete_1000_instances_each_task_once() {
    let cluster = shared_cluster();
    let via_lb = Rest::new(&cluster.balancer);
    let (key, topic, message) = via_lb.deploy_variant("cluster_1000").await;
    let urls = cluster.nodes.join(",");
    let flags = worker_flags(&topic, &message);
    let mut workers: Vec<WorkerProcess> = (0..3)
        .map(|i| WorkerProcess::spawn(&format!("replica-{i}"), &urls, &flags))
        .collect();
    // Half of the instances start on each node: a node wakes only the polls parked on itself.
    let (node_a, node_b) = (Rest::new(&cluster.nodes[0]), Rest::new(&cluster.nodes[1]));
    let (first, second) = tokio::join!(
        start(&node_a, &key, "cluster_1000_a", 500),
        start(&node_b, &key, "cluster_1000_b", 500),
    );
    let ids: Vec<String> = first.into_iter().chain(second).collect();
    via_lb.wait_instances_completed(&ids, LIMIT).await;

    let (completed, sent, given_up) = totals(&workers, 1000.0).await;
    assert_eq!(completed, 1000.0, "each task completed once by the workers");
    assert_eq!((sent, given_up), (1000.0, 0.0), "each message once");
    assert_eq!(
        completions(&via_lb, &topic).await,
        1000,
        "each task completed once (history)"
    );
    assert_eq!(via_lb.incidents(&key).await, 0, "no incidents");
    for worker in &mut workers {
        assert_eq!(
            lines_with(&worker.stderr(), " ERROR "),
            0,
            "{}",
            worker.stderr()
        );
        assert_eq!(worker.terminate(crate::support::SHUTDOWN_LIMIT), Some(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_run_and_restarted_loses_no_instance() {
    let cluster = shared_cluster();
    let via_lb = Rest::new(&cluster.balancer);
    let (key, topic, message) = via_lb.deploy_variant("cluster_kill").await;
    let urls = cluster.nodes.join(",");
    // A short lock: a task locked by a poll whose node died comes back soon.
    let mut flags = worker_flags(&topic, &message);
    flags.extend(["--lock-duration", "10s", "--max-backoff", "2s"]);
    let mut workers: Vec<WorkerProcess> = (0..2)
        .map(|i| WorkerProcess::spawn(&format!("worker-{i}"), &urls, &flags))
        .collect();
    let survivor = Rest::new(&cluster.nodes[1]);
    let mut ids = start(&survivor, &key, "cluster_kill_a", 200).await;
    eventually(LIMIT, "a quarter of the instances done", || async {
        (via_lb.completed(&key).await >= 100).then_some(())
    })
    .await;
    let killed = cluster.kill_node(1);
    // The second half arrives while node 1 is down: the run surely goes on across the kill.
    ids.extend(start(&survivor, &key, "cluster_kill_b", 200).await);
    // An observation window: the workers carry on with the other node.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for worker in &mut workers {
        worker.assert_running("with one node down");
    }
    killed.restart();
    via_lb.wait_instances_completed(&ids, LIMIT).await;
    let (completed, sent, given_up) = totals(&workers, 400.0).await;
    assert_eq!(completed, sent + given_up, "the counters add up");
    assert_eq!(given_up, 0.0);
    assert_eq!(
        completions(&via_lb, &topic).await,
        400,
        "each task completed once (history)"
    );
    let left = via_lb
        .count("external-task/count", &[("topicName", &topic)])
        .await;
    assert_eq!(left, 0, "nothing stuck");
    assert_eq!(via_lb.incidents(&key).await, 0, "no incidents");
    for worker in &mut workers {
        assert_eq!(worker.terminate(crate::support::SHUTDOWN_LIMIT), Some(0));
    }
}

/// A worker that knows only node B, while instances start on node A: B's parked poll learns of
/// them only at B's periodic re-check (30 s), but it does, and every instance ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_polling_only_one_node_still_finishes_instances_started_on_the_other() {
    let cluster = shared_cluster();
    let node_a = Rest::new(&cluster.nodes[0]);
    let (key, topic, message) = node_a.deploy_variant("cluster_one_node").await;
    let mut worker =
        WorkerProcess::spawn("only-b", &cluster.nodes[1], &worker_flags(&topic, &message));
    eventually(Duration::from_secs(60), "the worker ready", || async {
        (worker.probe("/readyz").await == 200).then_some(())
    })
    .await;
    let ids = start(&node_a, &key, "cluster_one_node", 20).await;
    node_a.wait_instances_completed(&ids, LIMIT).await;
    let (completed, sent, _) = totals(std::slice::from_ref(&worker), 20.0).await;
    assert_eq!((completed, sent), (20.0, 20.0));
    assert_eq!(worker.terminate(crate::support::SHUTDOWN_LIMIT), Some(0));
}
