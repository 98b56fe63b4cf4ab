//! The daemon, wired: metrics and health listener, engine client, worker loop, follow-ups,
//! reconciler, and the shutdown sequence that ties them together.
//!
//! Shutdown, in order: the token is cancelled (signal, or the caller) → fetching stops, and each
//! parked long poll is cancelled on the engine (or, where the engine cannot, left to time out) →
//! tasks fetched but not started are unlocked → running handlers finish and pending follow-ups
//! are sent at once, while a sweep gives back whatever the engine still locks for this worker id
//! (see [`crate::worker`]) → when `shutdown_grace` ends, whatever still runs is abandoned (the
//! reconciler of the next start delivers lost messages). Nothing runs past the grace.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::cli::EngineDiscovery;
use crate::config::Config;
use crate::correlation::FollowUps;
use crate::discovery::{Discovery, SystemDns, DISCOVERY_INTERVAL};
use crate::engine::EngineClient;
use crate::handler::Handler;
use crate::health::Liveness;
use crate::metrics::Metrics;
use crate::reconciler::Reconciler;
use crate::route::{Route, RouteHandler};
use crate::work::{DynWork, FollowUpWork};
use crate::worker::{Shared, StopTokens, Worker, EXPIRY_MARGIN};

/// At the end of the grace period, how long abandoned work gets to log and give up before the
/// process ends; taken from the grace, not added to it.
const ABORT_WAIT: Duration = Duration::from_millis(500);

/// How a daemon run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    /// Whether everything finished within the shutdown grace.
    pub drained: bool,
}

/// Runs the message-correlation daemon described by `config` until `shutdown` is cancelled: the
/// follow-ups of each route do its configured work (`follow_up_command`), or none.
pub async fn run(config: &Config, shutdown: CancellationToken) -> anyhow::Result<RunSummary> {
    run_correlating(config, configured_works(config), shutdown).await
}

/// Runs the daemon with your own follow-up work (library use): tasks are completed at once as
/// `config` says, then `work` runs (for every route), and its result goes with the message.
pub async fn run_with_work<W: FollowUpWork>(
    config: &Config,
    work: W,
    shutdown: CancellationToken,
) -> anyhow::Result<RunSummary> {
    let work: Arc<dyn DynWork> = Arc::new(work);
    let works = config.routes.iter().map(|_| Arc::clone(&work)).collect();
    run_correlating(config, works, shutdown).await
}

/// The daemon's handler over the routes, each fetching what its work reads, with `works[i]`
/// after each completion of route `i`.
async fn run_correlating(
    config: &Config,
    works: Vec<Arc<dyn DynWork>>,
    shutdown: CancellationToken,
) -> anyhow::Result<RunSummary> {
    let routes: Vec<(Route, Arc<dyn DynWork>)> =
        config.routes.iter().cloned().zip(works.clone()).collect();
    let handler = RouteHandler::new(&routes, config.correlate_by)
        .context("the configuration has no route")?;
    serve(config, handler, works, shutdown).await
}

/// Runs a worker with a custom handler (library use) until `shutdown` is cancelled; each route's
/// follow-ups do its configured work.
pub async fn run_with_handler<H: Handler>(
    config: &Config,
    handler: H,
    shutdown: CancellationToken,
) -> anyhow::Result<RunSummary> {
    serve(config, handler, configured_works(config), shutdown).await
}

/// The work each route names: its `follow_up_command`, or none.
fn configured_works(config: &Config) -> Vec<Arc<dyn DynWork>> {
    config.routes.iter().map(Route::work).collect()
}

/// Runs a worker with a handler and a follow-up work (for every route) until `shutdown` is
/// cancelled.
pub async fn run_with<H: Handler>(
    config: &Config,
    handler: H,
    work: Arc<dyn DynWork>,
    shutdown: CancellationToken,
) -> anyhow::Result<RunSummary> {
    let works = config.routes.iter().map(|_| Arc::clone(&work)).collect();
    serve(config, handler, works, shutdown).await
}

/// Everything wired: `works[i]` is the work of `config.routes[i]`.
async fn serve<H: Handler>(
    config: &Config,
    handler: H,
    works: Vec<Arc<dyn DynWork>>,
    shutdown: CancellationToken,
) -> anyhow::Result<RunSummary> {
    let (Some(first), Some(first_work)) = (config.routes.first(), works.first()) else {
        anyhow::bail!("the configuration has no route");
    };
    let metrics = Arc::new(Metrics::new());
    let client = EngineClient::new(config.engine.clone())
        .context("cannot set up the engine client")?
        .with_metrics(Arc::clone(&metrics));

    let liveness = Arc::new(Liveness::default());

    let listener_stop = CancellationToken::new();
    let (bound, listener) = crate::health::serve(
        config.metrics_addr,
        Arc::clone(&metrics),
        Arc::clone(&liveness),
        client.clone(),
        // A poll cycle lasts the long poll (plus its margin), or the minimum poll pause when
        // that is longer: /healthz must not call a paced loop stuck.
        config.worker.long_poll.max(config.worker.min_poll_interval),
        listener_stop.clone(),
    )
    .await
    .with_context(|| format!("--metrics-addr {}: cannot listen", config.metrics_addr))?;
    info!(address = %bound, "metrics on /metrics, health on /healthz and /readyz");

    // The grace counts from the moment shutdown is asked for.
    let grace = config.shutdown_grace;
    let grace_ends = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            Instant::now() + grace
        })
    };

    let tracker = TaskTracker::new();
    let stop = StopTokens {
        shutdown: shutdown.clone(),
        abort: CancellationToken::new(),
    };
    let follow_ups = FollowUps::with_work(
        client.clone(),
        Arc::clone(&metrics),
        first.correlation(&config.correlation),
        tracker.clone(),
        stop.shutdown.clone(),
        stop.abort.clone(),
        Arc::clone(first_work),
    );
    if config.routes.len() > 1 {
        for (route, work) in config.routes.iter().zip(&works) {
            let settings = route.correlation(&config.correlation);
            follow_ups.add_route(&route.topic, settings, Arc::clone(work));
        }
    }
    // One reconciler per route: each reads its own topic's markers. They share the budget.
    let reconcilers: Vec<_> = config
        .reconcile_interval
        .map(|interval| {
            config
                .routes
                .iter()
                .map(|route| {
                    let reconciler = Reconciler::new(
                        client.clone(),
                        follow_ups.for_topic(&route.topic),
                        Arc::clone(&metrics),
                        Arc::clone(&liveness),
                        &route.topic,
                    );
                    tokio::spawn(reconciler.run(interval, shutdown.clone()))
                })
                .collect()
        })
        .unwrap_or_default();

    let discovery = match config.engine_discovery {
        EngineDiscovery::None => None,
        EngineDiscovery::Dns => {
            let seed = config
                .engine
                .nodes
                .first()
                .cloned()
                .context("no --engine-url")?;
            let mut discovery = Discovery::new(client.clone(), seed, SystemDns);
            // The first answer before the first poll, so that every node is polled from the start.
            if tokio::time::timeout(Duration::from_secs(5), discovery.refresh())
                .await
                .is_err()
            {
                warn!("engine discovery: the first lookup did not answer within 5 s; polling the URL as given meanwhile");
            }
            Some(tokio::spawn(
                discovery.run(DISCOVERY_INTERVAL, shutdown.clone()),
            ))
        }
    };

    let follow_ups_report = follow_ups.clone();
    let worker = Worker::new(
        client,
        handler,
        config.worker.clone(),
        Shared {
            metrics: Arc::clone(&metrics),
            liveness,
            tracker: tracker.clone(),
            stop: stop.clone(),
        },
        follow_ups,
    );
    worker.run().await;
    let grace_ends = grace_ends.await.unwrap_or_else(|_| Instant::now() + grace);

    tracker.close();
    let drain = async {
        let drain_until = grace_ends
            .checked_sub(ABORT_WAIT)
            .unwrap_or(grace_ends)
            .max(Instant::now());
        if tokio::time::timeout_at(drain_until, tracker.wait())
            .await
            .is_ok()
        {
            info!("shutdown complete: every task and follow-up finished");
            return true;
        }
        warn!(
            "shutdown grace of {} is over: abandoning what still runs",
            humantime::format_duration(grace)
        );
        stop.abort.cancel();
        let _ = tokio::time::timeout_at(grace_ends, tracker.wait()).await;
        false
    };
    // Meanwhile, give back whatever the engine still locks for this worker id.
    let sweep_until = worker
        .abandoned_poll_until()
        .map_or_else(Instant::now, |until| until + EXPIRY_MARGIN);
    let (drained, ()) = tokio::join!(drain, worker.release_locks(sweep_until, grace_ends));
    follow_ups_report.report_left_owed();
    for reconciler in reconcilers {
        reconciler.abort();
    }
    if let Some(discovery) = discovery {
        discovery.abort();
    }
    listener_stop.cancel();
    let _ = listener.await;
    Ok(RunSummary { drained })
}
