//! One worker run on the real engine, from start to a clean stop, for the tests that judge it by
//! its counters.

use std::time::Duration;

use super::engine::Rest;
use super::{WorkerProcess, SHUTDOWN_LIMIT};

/// Runs the worker binary on `topic` and `message` (with `flags` added) until the instances `ids`
/// have completed and it has counted a follow-up sent for each, then stops it; returns what it
/// showed while it ran. The real-engine metric tests all run the worker this way.
pub async fn metrics_of_a_run_to_completion(
    rest: &Rest,
    engine_url: &str,
    topic: &str,
    message: &str,
    ids: &[String],
    flags: &[&str],
) -> String {
    let mut all = vec!["--topic", topic, "--message-name", message];
    all.extend(flags);
    let mut worker = WorkerProcess::spawn("worker", engine_url, &all);
    rest.wait_instances_completed(ids, Duration::from_secs(120))
        .await;
    // Scraped while the worker runs, as Prometheus would.
    let metrics = worker
        .scrape_settled("camunda_worker_follow_ups_sent_total", ids.len() as f64)
        .await;
    assert_eq!(worker.terminate(SHUTDOWN_LIMIT), Some(0));
    metrics
}
