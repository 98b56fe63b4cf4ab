//! The fetch loop: long-poll each engine node for tasks and start each task it locks.
//!
//! With several engine nodes (a cluster), each node gets its own long poll: a node wakes only the
//! polls parked on itself when a task is created, so a poll parked elsewhere would find the task
//! only at that node's periodic re-check, 30 s later. All polls share the slots.
//!
//! The rooms:
//! - [`context`]: the settings, stop tokens and the one shared [`context::WorkerContext`].
//! - [`admission`]: the slots and follow-up room a fetch takes before it locks anything.
//! - [`concurrency`]: how many of the slots may be taken now, from the engine's latency;
//!   [`slot_limit`] holds back the slots above that limit.
//! - [`poll`]: one node's long poll; one poll step is [`Worker::poll_once`].
//! - [`pacing`]: the minimum pause after a poll that came back empty.
//! - [`fetch_size`]: how many tasks a poll asks for after a fetch reply outgrew its bound.
//! - [`task`]: one task's lifecycle after the fetch.
//! - `lock`: keeping a task's lock while its handler runs.
//! - [`handback`]: what shutdown gives back to the engine.
//!
//! This file follows the client's node list: a node that appears gets a fetch loop, one that
//! leaves sees its loop end after its current poll.

pub(crate) mod admission;
pub(crate) mod concurrency;
pub mod context;
mod fetch_size;
pub(crate) mod handback;
mod lock;
pub(crate) mod pacing;
pub mod poll;
mod settle;
pub(crate) mod slot_limit;
mod spawn;
pub mod task;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

pub use context::{generated_worker_id, DaemonHandles, StopTokens, Subscription, WorkerSettings};
pub use handback::EXPIRY_MARGIN;
pub use poll::{FetchOutcome, PollOutcome};
pub use task::DropReason;

use crate::correlation::FollowUps;
use crate::engine::{EngineClient, EngineError, Node};
use crate::handler::Handler;
use crate::metrics::NoOutcome;
use crate::supervisor::Supervisor;
use context::WorkerContext;
use poll::NodePoll;

/// Serves one topic: fetch, handle, complete, follow up.
pub struct Worker<H> {
    ctx: Arc<WorkerContext<H>>,
}

impl<H: Handler> Worker<H> {
    /// A worker whose tasks run on `shared.tracker` (shared with the follow-ups, so one wait
    /// drains both).
    pub fn new(
        client: EngineClient,
        handler: H,
        settings: WorkerSettings,
        shared: DaemonHandles,
        follow_ups: FollowUps,
    ) -> Self {
        let metrics = &shared.metrics;
        metrics.set_config(
            settings.max_tasks,
            settings.long_poll,
            follow_ups.policy().capacity,
        );
        for subscription in &settings.subscriptions {
            let topic = &subscription.topic;
            metrics.preset_topic::<task::DropReason>(&metrics.tasks_dropped, topic);
            metrics.preset_topic::<NoOutcome>(&metrics.tasks_completed, topic);
            metrics.preset_topic::<NoOutcome>(&metrics.tasks_failed, topic);
            follow_ups.preset_topic(topic);
        }
        let ctx = WorkerContext::new(client, handler, settings, shared, follow_ups);
        let limit = i64::try_from(ctx.admission.limit.current()).unwrap_or(i64::MAX);
        ctx.metrics.concurrency_limit.set(limit);
        Worker { ctx: Arc::new(ctx) }
    }

    /// Polls every engine node until shutdown, backing off while a node is unavailable. Follows
    /// the client's node list. Returns when shutdown has begun and every poll has ended; the
    /// tasks it started keep running on the tracker. A node's fetch loop that ends (or panics)
    /// while its node is still listed is a death ([`crate::supervisor`]): it fails `/healthz`
    /// and begins the shutdown, rather than leave a worker that no longer polls that node.
    pub async fn run(&self) {
        let ctx = &self.ctx;
        let mut nodes = ctx.client.subscribe();
        let mut polls = Supervisor::new(
            Arc::clone(&ctx.liveness),
            Arc::clone(&ctx.metrics),
            ctx.stop.shutdown.clone(),
        );
        let mut retire_tokens: HashMap<String, CancellationToken> = HashMap::new();
        info!(
            worker_id = %ctx.settings.worker_id,
            topics = %ctx.settings.topics(),
            engine = %names(&nodes.borrow()),
            "polling for tasks"
        );
        loop {
            let current = Arc::clone(&nodes.borrow_and_update());
            for node in current.iter() {
                // A node that left and came back: its old loop ends by itself (its token is
                // cancelled, so that end is no death); a new one starts.
                if retire_tokens
                    .get(node.name())
                    .is_some_and(|retire| !retire.is_cancelled())
                {
                    continue;
                }
                let retire = CancellationToken::new();
                let poll = NodePoll {
                    ctx: Arc::clone(ctx),
                    node: Arc::clone(node),
                };
                let stop = retire.clone();
                polls.spawn(
                    "fetch_loop",
                    format!("the fetch loop of engine node {}", node.name()),
                    retire.clone(),
                    async move { poll.run(&stop).await },
                );
                retire_tokens.insert(node.name().to_owned(), retire);
            }
            for (name, retire) in &retire_tokens {
                if !current.iter().any(|n| n.name() == name) && !retire.is_cancelled() {
                    info!(node = %name, "engine node left: its fetch loop ends after its current poll");
                    retire.cancel();
                }
            }
            tokio::select! {
                changed = nodes.changed() => if changed.is_err() { break },
                _ = ctx.stop.shutdown.cancelled() => break,
                // A death begins the shutdown: the next turn ends the loop.
                Some(_) = polls.join_next(), if !polls.is_empty() => {}
            }
        }
        // Each poll ends by itself once shutdown has begun (a parked one is cancelled on the
        // engine, or times out): wait for all of them.
        while polls.join_next().await.is_some() {}
        debug!("fetching stopped");
    }

    /// One poll of the first node: wait for a free slot, fetch as many tasks as there are free
    /// slots (and room for follow-ups), and start each.
    pub async fn poll_once(&self) -> Result<PollOutcome, EngineError> {
        let nodes = self.ctx.client.nodes();
        let Some(node) = nodes.first() else {
            return Err(EngineError::NoNode("fetch-and-lock".into()));
        };
        let poll = NodePoll {
            ctx: Arc::clone(&self.ctx),
            node: Arc::clone(node),
        };
        poll.poll_once(usize::MAX, false).await
    }

    /// Until when the engine may still lock tasks for this worker through a long poll left
    /// parked at shutdown; `None` when every poll ended.
    pub fn abandoned_poll_until(&self) -> Option<Instant> {
        self.ctx.abandoned_poll_until()
    }

    /// Unlocks every task the engine holds for this worker id and this worker does not handle,
    /// until `until` (at least once) and never past `deadline`: see [`handback`].
    pub async fn release_locks(&self, until: Instant, deadline: Instant) {
        handback::release_locks(&self.ctx, until, deadline).await;
    }
}

/// The nodes' names, for a log line.
fn names(nodes: &[Arc<Node>]) -> String {
    nodes
        .iter()
        .map(|n| n.name())
        .collect::<Vec<_>>()
        .join(", ")
}
