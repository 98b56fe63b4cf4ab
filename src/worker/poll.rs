//! One engine node's long poll: take permits, fetch as many tasks as there are permits, start
//! each, and decide between polling again, backing off and stopping.
//!
//! One poll is one call of [`NodePoll::poll_once`], which returns what happened;
//! [`NodePoll::run`] is the loop around it. At shutdown a poll that is parked on the engine is
//! ended explicitly (see [`NodePoll::end_parked_poll`]), because the engine would otherwise keep
//! it parked and lock tasks for a worker that is gone.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use super::admission::Permits;
use super::context::WorkerContext;
use super::fetch_size::FetchCeiling;
pub use super::pacing::PollOutcome;
use super::pacing::{Pace, Wait};
use super::spawn::spawn_tasks;
use crate::engine::{millis, EngineError, ExternalTask, FetchAndLockRequest, Node, TopicRequest};
use crate::handler::Handler;
use crate::metrics::Outcome;
use crate::traces;

/// While fetching keeps failing the same way (in a way the engine's health does not already
/// report), a reminder is logged this often.
const TROUBLE_REMINDER: Duration = Duration::from_secs(60);

/// At shutdown, how long to wait for the engine to end a parked long poll after asking it to
/// (see [`crate::engine::EngineClient::cancel_parked_poll`]). An engine that supports it answers
/// within milliseconds; one that does not keeps the poll parked, and the shutdown sweep takes over.
const CANCEL_WAIT: Duration = Duration::from_secs(1);

/// Within [`CANCEL_WAIT`], how often the cancel is asked again.
const CANCEL_RETRY: Duration = Duration::from_millis(250);

/// How a fetch-and-lock request ended (the `outcome` of `fetch_requests_total`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The engine handed out at least one task.
    Tasks,
    /// The long poll ended without a task.
    Empty,
    /// The call failed (engine down, refused, unreadable reply).
    Error,
}

impl Outcome for FetchOutcome {
    const ALL: &'static [Self] = &[
        FetchOutcome::Tasks,
        FetchOutcome::Empty,
        FetchOutcome::Error,
    ];
    const LABEL: &'static str = "outcome";

    fn label(self) -> &'static str {
        match self {
            FetchOutcome::Tasks => "tasks",
            FetchOutcome::Empty => "empty",
            FetchOutcome::Error => "error",
        }
    }
}

/// The long poll of one engine node.
pub(crate) struct NodePoll<H> {
    pub(crate) ctx: Arc<WorkerContext<H>>,
    pub(crate) node: Arc<Node>,
}

impl<H: Handler> NodePoll<H> {
    /// Polls until shutdown or until the node leaves (`retire`), backing off while it fails.
    pub(crate) async fn run(&self, retire: &CancellationToken) {
        let ctx = &self.ctx;
        let node = &self.node;
        ctx.metrics.preset_fetches::<FetchOutcome>(node.name());
        // Readiness must not wait for the first long poll to return: ask the node once now —
        // racing shutdown, since the call may hang (a name lookup, an engine that does not answer)
        // for up to its timeout, longer than the grace.
        let pinged = tokio::select! {
            pinged = ctx.client.ping(node) => pinged,
            _ = ctx.stop.shutdown.cancelled() => return,
            _ = retire.cancelled() => return,
        };
        if let Err(e) = pinged {
            debug!(node = %node.name(), "the engine does not answer yet: {e}");
        }
        let mut pace = Pace::new(ctx.settings.min_poll_interval, ctx.settings.max_backoff);
        let mut trouble = Trouble::default();
        let mut ceiling = FetchCeiling::new(ctx.settings.max_tasks as usize);
        let stops = [&ctx.stop.shutdown, retire];
        while !retire.is_cancelled() {
            let share = pace.share(ctx.client.nodes().len() <= 1);
            let saturated = pace.saturated();
            ctx.admission.saturation.set(node.name(), saturated);
            if !saturated && !ctx.admission.saturation.wait_until_none(stops).await {
                break;
            }
            let polled_at = Instant::now();
            let wait = match self.poll_within(share, saturated, &mut ceiling).await {
                Ok(PollOutcome::Stopped) => break,
                Ok(outcome) => {
                    if trouble.clear() {
                        info!(node = %node.name(), "fetch-and-lock works again");
                    }
                    ctx.metrics.set_fetch_backoff(node.name(), Duration::ZERO);
                    pace.after_poll(polled_at, outcome)
                }
                Err(error) => {
                    trouble.report(node, &ctx.settings.worker_id, &error);
                    let delay = pace.after_error();
                    ctx.metrics.set_fetch_backoff(node.name(), delay);
                    Wait::BackOff(delay)
                }
            };
            if !pace.wait(wait, stops).await {
                break;
            }
        }
        ctx.admission.saturation.set(node.name(), false);
    }

    /// One poll: wait for a free slot, fetch as many tasks as there are free slots (and room for
    /// follow-ups), at most `share`, and start each.
    pub(crate) async fn poll_once(
        &self,
        share: usize,
        gather: bool,
    ) -> Result<PollOutcome, EngineError> {
        let full = self.ctx.settings.max_tasks as usize;
        self.poll_within(share, gather, &mut FetchCeiling::new(full))
            .await
    }

    /// [`NodePoll::poll_once`] under the loop's fetch ceiling (see `fetch_size.rs`), which an
    /// oversized reply lowers and replies that fit raise again.
    async fn poll_within(
        &self,
        share: usize,
        gather: bool,
        ceiling: &mut FetchCeiling,
    ) -> Result<PollOutcome, EngineError> {
        let ctx = &self.ctx;
        let node = &self.node;
        let Some(permits) = ctx
            .admission
            .take(ceiling.cap(share), gather, &ctx.stop.shutdown, &ctx.metrics)
            .await
        else {
            return Ok(PollOutcome::Stopped);
        };
        let asked = permits.len();
        let request = self.fetch_request(asked);
        let parked_until = Instant::now() + ctx.settings.long_poll;
        // A trace of its own (see `crate::traces`): every task it brings links to it.
        let span = tracing::debug_span!(parent: None, "fetch", node = %node.name(), asked);
        let fetch = ctx
            .client
            .fetch_and_lock(node, &request)
            .instrument(span.clone());
        tokio::pin!(fetch);
        let fetched = tokio::select! {
            fetched = &mut fetch => fetched,
            _ = ctx.stop.shutdown.cancelled() => {
                self.end_parked_poll(fetch, permits, parked_until).await;
                return Ok(PollOutcome::Stopped);
            }
        };
        let tasks = self.record_fetch(fetched, asked, ceiling)?;
        if tasks.is_empty() {
            return Ok(PollOutcome::Empty);
        }
        let count = tasks.len();
        let fetched_by = traces::span_context(&span);
        drop(span);
        spawn_tasks(ctx, node, tasks, permits, fetched_by.as_ref());
        Ok(PollOutcome::Fetched {
            tasks: count,
            saturated: count >= asked,
        })
    }

    /// The fetch-and-lock request for `max_tasks` tasks: one fetch for every route, since the
    /// engine takes several topics, each with its own lock duration and variables.
    fn fetch_request(&self, max_tasks: usize) -> FetchAndLockRequest {
        let ctx = &self.ctx;
        let settings = &ctx.settings;
        FetchAndLockRequest {
            worker_id: settings.worker_id.clone(),
            max_tasks: u32::try_from(max_tasks).unwrap_or(u32::MAX),
            use_priority: settings.use_priority,
            async_response_timeout: millis(settings.long_poll),
            sorting: settings.sorting.clone(),
            topics: settings
                .subscriptions
                .iter()
                .map(|subscription| TopicRequest {
                    topic_name: subscription.topic.clone(),
                    lock_duration: millis(subscription.lock_duration),
                    variables: ctx.handler.variables_to_fetch_for(&subscription.topic),
                    filter: subscription.filter.clone(),
                })
                .collect(),
        }
    }

    /// Records what a fetch that asked for `asked` tasks got — in the fetch ceiling, the
    /// liveness check and the metrics — and passes it on.
    fn record_fetch(
        &self,
        fetched: Result<Vec<ExternalTask>, EngineError>,
        asked: usize,
        ceiling: &mut FetchCeiling,
    ) -> Result<Vec<ExternalTask>, EngineError> {
        let ctx = &self.ctx;
        let node = self.node.name();
        let tasks = match fetched {
            Ok(tasks) => tasks,
            Err(error) => {
                if error.is_too_large() {
                    ceiling.too_large(node, asked);
                }
                ctx.liveness.polled(0);
                ctx.metrics.fetched(node, FetchOutcome::Error, 0);
                return Err(error);
            }
        };
        ceiling.fitted(node, asked, tasks.len());
        ctx.liveness.polled(tasks.len());
        ctx.metrics.polled_successfully();
        let outcome = if tasks.is_empty() {
            FetchOutcome::Empty
        } else {
            FetchOutcome::Tasks
        };
        ctx.metrics.fetched(node, outcome, tasks.len());
        Ok(tasks)
    }

    /// At shutdown, ends this node's long poll. Dropping the request would close the connection,
    /// but the engine keeps the poll parked until its timeout, still able to lock tasks for this
    /// worker id; so the engine is asked to cancel it — more than once, because the poll may
    /// reach the engine's queue only after the first request — and the poll's answer is awaited.
    /// Tasks it hands out meanwhile are started, which (shutdown having begun) gives them back.
    async fn end_parked_poll<F>(
        &self,
        mut fetch: std::pin::Pin<&mut F>,
        permits: Vec<Permits>,
        parked_until: Instant,
    ) where
        F: std::future::Future<Output = Result<Vec<ExternalTask>, EngineError>>,
    {
        let ctx = &self.ctx;
        let node = &self.node;
        let deadline = Instant::now() + CANCEL_WAIT;
        let answer = loop {
            let (_, answer) = tokio::join!(
                tokio::time::timeout_at(
                    deadline,
                    ctx.client.cancel_parked_poll(node, &ctx.settings.worker_id)
                ),
                tokio::time::timeout_at((Instant::now() + CANCEL_RETRY).min(deadline), &mut fetch),
            );
            match answer {
                Ok(answer) => break Some(answer),
                Err(_) if Instant::now() >= deadline => break None,
                Err(_) => continue,
            }
        };
        match answer {
            Some(Ok(tasks)) => {
                spawn_tasks(ctx, node, tasks, permits, None);
                debug!(node = %node.name(), "the parked long poll ended");
            }
            Some(Err(e))
                if e.is_replaced()
                    || e.status() == Some(reqwest::StatusCode::SERVICE_UNAVAILABLE) =>
            {
                debug!(node = %node.name(), "the engine cancelled the parked long poll");
            }
            Some(Err(e)) => {
                debug!(node = %node.name(), "the parked long poll ended with an error: {e}");
                ctx.abandoned(parked_until);
            }
            None => {
                debug!(node = %node.name(), "the engine keeps the long poll parked (no fetch-and-lock-unique-worker-request)");
                ctx.abandoned(parked_until);
            }
        }
    }
}

/// What a node's fetch loop reports about failing fetches: a changed failure once, a reminder
/// while it lasts. An engine that is gone or refuses the credentials is reported by the client's
/// node health instead, once; the loop reports only what it alone sees.
#[derive(Default)]
struct Trouble {
    /// The kind of the failure being reported (see [`error_kind`]), with since when and when
    /// it was last reminded of.
    current: Option<(String, Instant, Instant)>,
}

impl Trouble {
    /// Forgets the failure; whether there was one.
    fn clear(&mut self) -> bool {
        self.current.take().is_some()
    }

    fn report(&mut self, node: &Node, worker_id: &str, error: &EngineError) {
        // The client reports an outage or refused credentials through the node's health, and a
        // reply it refused (too large, a redirect) itself.
        if error.engine_gone() || error.is_unauthorized() || error.refused_reply() {
            debug!("fetch-and-lock failed: {error}");
            return;
        }
        let kind = error_kind(error);
        let now = Instant::now();
        match &mut self.current {
            Some((current, since, reminded)) if *current == kind => {
                if now.duration_since(*reminded) >= TROUBLE_REMINDER {
                    warn!(
                        node = %node.name(),
                        "fetch-and-lock still failing after {}s: {error}",
                        now.duration_since(*since).as_secs()
                    );
                    *reminded = now;
                } else {
                    debug!("still failing: {error}");
                }
            }
            _ => {
                if error.is_replaced() {
                    warn!(node = %node.name(), worker_id = %worker_id, "the engine ended this worker's long poll because another fetch with the same worker id arrived: do two workers share --worker-id?");
                } else if error.is_transient() {
                    warn!(node = %node.name(), "fetch-and-lock failed, backing off: {error}");
                } else {
                    error!(node = %node.name(), "fetch-and-lock refused, backing off: {error}");
                }
                self.current = Some((kind, now, now));
            }
        }
    }
}

/// A short description of an error, to log a changed failure once instead of every poll.
fn error_kind(error: &EngineError) -> String {
    match error {
        EngineError::Unreachable { .. } => "unreachable".to_owned(),
        EngineError::ConnectionClosed { .. } => "connection closed".to_owned(),
        EngineError::Unauthorized { status, .. } => format!("unauthorized {status}"),
        EngineError::Rejected { status, kind, .. } => format!("{status} {kind}"),
        EngineError::UnexpectedReply { status, .. } => format!("unexpected {status}"),
        EngineError::Replaced { .. } => "replaced".to_owned(),
        EngineError::TooLarge { .. } => "reply too large".to_owned(),
        EngineError::Redirected { status, .. } => format!("redirect {status}"),
        EngineError::Credentials(text) | EngineError::NoNode(text) => text.clone(),
        EngineError::Resent(inner) => error_kind(inner),
    }
}
