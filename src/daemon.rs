//! The daemon, wired: metrics and health listener, engine client, worker loop, follow-ups,
//! reconciler, and the shutdown sequence that ties them together.
//!
//! Shutdown, in order: the token is cancelled (signal, or the caller) → the open long poll is
//! dropped and fetching stops → tasks fetched but not started are unlocked → running handlers
//! finish and pending follow-ups are sent at once → after `shutdown_grace`, whatever still runs
//! is abandoned (the reconciler of the next start delivers lost messages) → every task the engine
//! still holds for this worker id is unlocked. The engine keeps an abandoned long poll parked
//! until its timeout and may lock new tasks for this id meanwhile, so that last sweep repeats
//! until the abandoned poll has timed out, within the grace period.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;
use crate::correlation::FollowUps;
use crate::engine::EngineClient;
use crate::handler::{Handler, MessageCorrelationHandler};
use crate::metrics::Metrics;
use crate::reconciler::Reconciler;
use crate::worker::{StopTokens, Worker};

/// After the grace period, how long abandoned work gets to log and unlock before the process ends.
const ABORT_WAIT: Duration = Duration::from_secs(2);

/// How a daemon run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    /// Whether everything finished within the shutdown grace.
    pub drained: bool,
}

/// Runs the message-correlation daemon described by `config` until `shutdown` is cancelled.
pub async fn run(config: &Config, shutdown: CancellationToken) -> anyhow::Result<RunSummary> {
    let handler = MessageCorrelationHandler {
        variables: config.variables.clone(),
        correlate_by: config.correlate_by,
    };
    run_with_handler(config, handler, shutdown).await
}

/// Runs a worker with a custom handler (library use) until `shutdown` is cancelled.
pub async fn run_with_handler<H: Handler>(
    config: &Config,
    handler: H,
    shutdown: CancellationToken,
) -> anyhow::Result<RunSummary> {
    let metrics = Arc::new(Metrics::new());
    let client = EngineClient::new(config.engine.clone())
        .context("cannot set up the engine client")?
        .with_metrics(Arc::clone(&metrics));

    let listener_stop = CancellationToken::new();
    let (bound, listener) = crate::health::serve(
        config.metrics_addr,
        Arc::clone(&metrics),
        config.worker.long_poll,
        listener_stop.clone(),
    )
    .await
    .with_context(|| format!("--metrics-addr {}: cannot listen", config.metrics_addr))?;
    info!(address = %bound, "metrics on /metrics, health on /healthz and /readyz");

    let tracker = TaskTracker::new();
    let stop = StopTokens {
        shutdown: shutdown.clone(),
        abort: CancellationToken::new(),
    };
    let follow_ups = FollowUps::new(
        client.clone(),
        Arc::clone(&metrics),
        config.correlation.clone(),
        tracker.clone(),
        stop.shutdown.clone(),
        stop.abort.clone(),
    );
    let reconciler = config.reconcile_interval.map(|interval| {
        let reconciler = Reconciler::new(client.clone(), follow_ups.clone(), Arc::clone(&metrics));
        tokio::spawn(reconciler.run(interval, shutdown.clone()))
    });

    let worker = Worker::new(
        client,
        handler,
        config.worker.clone(),
        Arc::clone(&metrics),
        follow_ups,
        tracker.clone(),
        stop.clone(),
    );
    worker.run().await;
    let grace_ends = tokio::time::Instant::now() + config.shutdown_grace;

    tracker.close();
    let drained = if tokio::time::timeout(config.shutdown_grace, tracker.wait())
        .await
        .is_ok()
    {
        info!("shutdown complete: every task and follow-up finished");
        true
    } else {
        warn!(
            "shutdown grace of {} is over: abandoning what still runs",
            humantime::format_duration(config.shutdown_grace)
        );
        stop.abort.cancel();
        let _ = tokio::time::timeout(ABORT_WAIT, tracker.wait()).await;
        false
    };
    // Nothing runs any more: give back whatever the engine still holds for this worker id.
    let sweep_until = worker
        .abandoned_poll_until()
        .map_or_else(tokio::time::Instant::now, |until| until.min(grace_ends));
    worker.release_locks(sweep_until).await;
    if let Some(reconciler) = reconciler {
        reconciler.abort();
    }
    listener_stop.cancel();
    let _ = listener.await;
    Ok(RunSummary { drained })
}
