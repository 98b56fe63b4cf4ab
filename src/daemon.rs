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
use crate::engine::{EngineClient, TenantScope};
use crate::handler::Handler;
use crate::health::Liveness;
use crate::metrics::Metrics;
use crate::reconciler::Reconciler;
use crate::route::{Route, RouteHandler, RouteKind};
use crate::supervisor::Supervisor;
use crate::work::{DynWork, FollowUpWork};
use crate::worker::{DaemonHandles, StopTokens, Worker, EXPIRY_MARGIN};

/// At the end of the grace period, how long abandoned work gets to log and give up before the
/// process ends; taken from the grace, not added to it.
const ABORT_WAIT: Duration = Duration::from_millis(500);

/// How a daemon run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// Whether everything finished within the shutdown grace.
    pub drained: bool,
    /// The background task that ended before shutdown, if one did (the run then failed).
    pub died: Option<String>,
}

impl RunSummary {
    /// Whether the run ended as asked: drained, and no task died.
    pub fn succeeded(&self) -> bool {
        self.drained && self.died.is_none()
    }
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

/// Everything wired (`works[i]` is the work of `config.routes[i]`): built, run until stopped,
/// drained.
async fn serve<H: Handler>(
    config: &Config,
    handler: H,
    works: Vec<Arc<dyn DynWork>>,
    shutdown: CancellationToken,
) -> anyhow::Result<RunSummary> {
    let mut daemon = Daemon::build(config, handler, works, shutdown).await?;
    let grace_ends = daemon.run_until_stopped().await;
    Ok(daemon.drain(grace_ends).await)
}

/// The daemon's parts, between build and drain.
struct Daemon<H> {
    worker: Worker<H>,
    follow_ups: FollowUps,
    liveness: Arc<Liveness>,
    /// Tasks and follow-ups: the drain waits for them.
    tracker: TaskTracker,
    stop: StopTokens,
    grace: Duration,
    /// The reconcilers, discovery and the listener: a death among them ends the worker.
    background: Supervisor,
    /// Stops the listener, last of all.
    listener_stop: CancellationToken,
}

impl<H: Handler> Daemon<H> {
    /// Builds every part and starts the background tasks: the listener (bound now, so a taken
    /// port fails at start), one reconciler per route, discovery.
    async fn build(
        config: &Config,
        handler: H,
        works: Vec<Arc<dyn DynWork>>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let client = EngineClient::new(config.engine.clone())
            .context("cannot set up the engine client")?
            .with_metrics(Arc::clone(&metrics));
        let liveness = Arc::new(Liveness::default());
        let mut background = Supervisor::new(
            Arc::clone(&liveness),
            Arc::clone(&metrics),
            shutdown.clone(),
        );
        let listener_stop = CancellationToken::new();
        let probed = Probed {
            metrics: &metrics,
            liveness: &liveness,
            client: &client,
        };
        start_listener(config, probed, &mut background, &listener_stop).await?;

        let handles = DaemonHandles {
            metrics: Arc::clone(&metrics),
            liveness: Arc::clone(&liveness),
            tracker: TaskTracker::new(),
            stop: StopTokens {
                shutdown: shutdown.clone(),
                abort: CancellationToken::new(),
            },
        };
        let follow_ups = follow_ups_for(config, &client, &handles, &works)?;
        start_reconcilers(config, &client, &follow_ups, &handles, &mut background);
        if config.engine_discovery == EngineDiscovery::Dns {
            start_discovery(config, &client, &mut background).await?;
        }

        let (tracker, stop) = (handles.tracker.clone(), handles.stop.clone());
        let worker = Worker::new(
            client,
            handler,
            config.worker.clone(),
            handles,
            follow_ups.clone(),
        );
        Ok(Daemon {
            worker,
            follow_ups,
            liveness,
            tracker,
            stop,
            grace: config.shutdown_grace,
            background,
            listener_stop,
        })
    }

    /// Fetches until the shutdown begins (asked for, or a background task died) and every poll
    /// has ended; returns when the grace ends, counted from the moment shutdown was asked for.
    async fn run_until_stopped(&mut self) -> Instant {
        let shutdown = self.stop.shutdown.clone();
        let fetching = self.worker.run();
        tokio::pin!(fetching);
        let mut grace_ends = None;
        let mut fetched = false;
        while !(fetched && grace_ends.is_some()) {
            tokio::select! {
                () = &mut fetching, if !fetched => {
                    fetched = true;
                    // It returns once the shutdown has begun; before, it would leave a worker
                    // that fetches nothing.
                    if !shutdown.is_cancelled() {
                        self.background
                            .record_death("fetch_loop", "the fetch loop ended before shutdown");
                    }
                }
                () = shutdown.cancelled(), if grace_ends.is_none() => {
                    grace_ends = Some(Instant::now() + self.grace);
                }
                // A death begins the shutdown (see `Supervisor`); one that ended as told waits
                // for the others.
                Some(_) = self.background.join_next(), if !self.background.is_empty() => {}
            }
        }
        grace_ends.unwrap_or_else(|| Instant::now() + self.grace)
    }

    /// Drains until `grace_ends`: tasks and follow-ups finish (what still runs then is
    /// abandoned), what the engine still locks for this worker is given back, the background
    /// tasks are joined, the listener last.
    async fn drain(mut self, grace_ends: Instant) -> RunSummary {
        let grace = self.grace;
        let tracker = self.tracker.clone();
        let abort = self.stop.abort.clone();
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
            abort.cancel();
            let _ = tokio::time::timeout_at(grace_ends, tracker.wait()).await;
            false
        };
        // Meanwhile, give back whatever the engine still locks for this worker id.
        let sweep_until = self
            .worker
            .abandoned_poll_until()
            .map_or_else(Instant::now, |until| until + EXPIRY_MARGIN);
        let (drained, ()) = tokio::join!(drain, self.worker.release_locks(sweep_until, grace_ends));
        self.follow_ups.report_left_owed();
        // The reconcilers and discovery stopped at the shutdown, but a pass in flight is not
        // waited for past a moment; the listener served the probes until now.
        let background_until = grace_ends.min(Instant::now() + ABORT_WAIT);
        self.listener_stop.cancel();
        self.background.join_all(background_until).await;
        RunSummary {
            drained,
            died: self.liveness.dead_task().map(str::to_owned),
        }
    }
}

/// What the probes judge by, borrowed for [`start_listener`].
struct Probed<'a> {
    metrics: &'a Arc<Metrics>,
    liveness: &'a Arc<Liveness>,
    client: &'a EngineClient,
}

/// Binds `--metrics-addr` now (a taken port fails at start) and serves it on `background` until
/// `stop`; nothing with `--metrics-addr off`.
async fn start_listener(
    config: &Config,
    probed: Probed<'_>,
    background: &mut Supervisor,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let Some(addr) = config.metrics_addr else {
        info!("--metrics-addr off: no /metrics, /healthz nor /readyz");
        return Ok(());
    };
    let (bound, listener) = crate::health::serve(
        addr,
        Arc::clone(probed.metrics),
        Arc::clone(probed.liveness),
        probed.client.clone(),
        // A poll cycle lasts the long poll (plus its margin), or the minimum poll pause when
        // that is longer: /healthz must not call a paced loop stuck.
        config.worker.long_poll.max(config.worker.min_poll_interval),
        stop.clone(),
    )
    .await
    .with_context(|| format!("--metrics-addr {addr}: cannot listen"))?;
    info!(address = %bound, "metrics on /metrics, health on /healthz and /readyz");
    background.spawn(
        "listener",
        "the metrics listener".to_owned(),
        stop.clone(),
        listener,
    );
    Ok(())
}

/// The follow-ups under the worker-wide policy, every route added alike: `works[i]` is the work
/// of `config.routes[i]`.
fn follow_ups_for(
    config: &Config,
    client: &EngineClient,
    handles: &DaemonHandles,
    works: &[Arc<dyn DynWork>],
) -> anyhow::Result<FollowUps> {
    if config.routes.is_empty() || works.is_empty() {
        anyhow::bail!("the configuration has no route");
    }
    let follow_ups = FollowUps::new(
        client.clone(),
        Arc::clone(&handles.metrics),
        config.correlation.clone(),
        handles.tracker.clone(),
        handles.stop.shutdown.clone(),
        handles.stop.abort.clone(),
    );
    for (route, work) in config.routes.iter().zip(works) {
        follow_ups.add_route(&route.topic, route.message.clone(), Arc::clone(work));
    }
    Ok(follow_ups)
}

/// One reconciler per route, on `background`: each reads its own topic's markers, within its
/// route's tenants. They share the budget. None when `--reconcile-interval` is 0.
fn start_reconcilers(
    config: &Config,
    client: &EngineClient,
    follow_ups: &FollowUps,
    handles: &DaemonHandles,
    background: &mut Supervisor,
) {
    let Some(interval) = config.reconcile_interval else {
        return;
    };
    let shutdown = background.shutdown().clone();
    // A complete route owes no follow-ups: there is nothing for a reconciler to find.
    let message_routes = config
        .routes
        .iter()
        .filter(|route| matches!(route.kind, RouteKind::Message));
    for route in message_routes {
        let reconciler = Reconciler::new(
            client.clone(),
            follow_ups.for_topic(&route.topic),
            Arc::clone(&handles.metrics),
            Arc::clone(&handles.liveness),
            &route.topic,
        )
        .within(TenantScope::of(&route.filter));
        background.spawn(
            "reconciler",
            format!("the reconciler of topic {}", route.topic),
            shutdown.clone(),
            reconciler.run(interval, shutdown.clone()),
        );
    }
}

/// Discovery of the engine's nodes on `background`, with its first answer in before the first
/// poll, so that every node is polled from the start.
async fn start_discovery(
    config: &Config,
    client: &EngineClient,
    background: &mut Supervisor,
) -> anyhow::Result<()> {
    let discovery = first_discovery(config, client).await?;
    let shutdown = background.shutdown().clone();
    background.spawn(
        "discovery",
        "engine discovery".to_owned(),
        shutdown.clone(),
        discovery.run(DISCOVERY_INTERVAL, shutdown),
    );
    Ok(())
}

/// Discovery with its first lookup done (or given up after 5 s).
async fn first_discovery(
    config: &Config,
    client: &EngineClient,
) -> anyhow::Result<Discovery<SystemDns>> {
    let seed = config
        .engine
        .nodes
        .first()
        .cloned()
        .context("no --engine-url")?;
    let mut discovery = Discovery::new(client.clone(), seed, SystemDns);
    if tokio::time::timeout(Duration::from_secs(5), discovery.refresh())
        .await
        .is_err()
    {
        warn!("engine discovery: the first lookup did not answer within 5 s; polling the URL as given meanwhile");
    }
    Ok(discovery)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::Handler;

    /// A handler never called: the engine URL names a closed port, so no task is fetched.
    struct Unused;

    impl Handler for Unused {
        async fn handle(
            &self,
            _: &crate::engine::ExternalTask,
        ) -> Result<crate::handler::TaskResult, crate::handler::HandlerError> {
            unreachable!("no engine answers")
        }
    }

    #[tokio::test]
    async fn a_background_task_that_ends_early_stops_the_daemon_and_fails_its_run() {
        let (_, _, config) = crate::config::load([
            "camunda-worker",
            "--engine-url",
            "http://127.0.0.1:9/engine-rest",
            "--metrics-addr",
            "off",
            "--shutdown-grace",
            "2s",
        ])
        .expect("a valid configuration");
        let shutdown = CancellationToken::new();
        let works = configured_works(&config);
        let mut daemon = Daemon::build(&config, Unused, works, shutdown.clone())
            .await
            .expect("the daemon builds");
        // A reconciler that returns at once, as one that met a bug would.
        daemon.background.spawn(
            "reconciler",
            "the reconciler of topic t".to_owned(),
            CancellationToken::new(),
            async {},
        );
        let run = async {
            let grace_ends = daemon.run_until_stopped().await;
            assert!(shutdown.is_cancelled(), "the death began the shutdown");
            assert_eq!(
                daemon.liveness.dead_task(),
                Some("the reconciler of topic t ended before shutdown")
            );
            daemon.drain(grace_ends).await
        };
        // Bounded for a loaded machine; nobody cancels the token but the death.
        let summary = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("the daemon stops by itself");
        assert!(!summary.succeeded());
        assert_eq!(
            summary.died.as_deref(),
            Some("the reconciler of topic t ended before shutdown")
        );
    }
}
