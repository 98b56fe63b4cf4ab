//! The fetch loop: long-poll each engine node for tasks and start each task it locks.
//!
//! The loop never locks a task it has no room for: it takes free slots (semaphore permits, one
//! per task in flight) and room for a follow-up first, asks the engine for exactly that many
//! tasks, and moves the permits into the tasks it starts. One poll is one call of
//! [`Worker::poll_once`], which returns what happened; [`Worker::run`] decides between polling
//! again, backing off and stopping. What happens to a task after that lives in [`crate::task`].
//!
//! With several engine nodes (a cluster), each node gets its own long poll: a node wakes only the
//! polls parked on itself when a task is created, so a poll parked elsewhere would find the task
//! only at that node's periodic re-check, 30 s later. All polls share the slots.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn, Instrument};

use crate::backoff::Backoff;
use crate::correlation::FollowUps;
use crate::engine::{
    millis, EngineClient, EngineError, ExternalTask, FetchAndLockRequest, Node, TopicRequest,
};
use crate::handler::Handler;
use crate::metrics::{FetchOutcome, Metrics};
use crate::task::TaskRun;

/// While fetching keeps failing the same way (in a way the engine's health does not already
/// report), a reminder is logged this often.
const TROUBLE_REMINDER: Duration = Duration::from_secs(60);

/// At shutdown, how long to wait for the engine to end a parked long poll after asking it to
/// (see [`EngineClient::cancel_parked_poll`]). An engine that supports it answers within
/// milliseconds; one that does not keeps the poll parked, and the shutdown sweep takes over.
const CANCEL_WAIT: Duration = Duration::from_secs(1);

/// Under saturation, how long a fetch waits for more slots to come free (see
/// [`Worker::take_permits`]): a few engine round trips, nothing a waiting task would notice.
const BATCH_LINGER: Duration = Duration::from_millis(20);

/// Within [`CANCEL_WAIT`], how often the cancel is asked again.
const CANCEL_RETRY: Duration = Duration::from_millis(250);

/// How the worker fetches and handles tasks.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Who takes the locks. Must differ between replicas: the engine only compares worker ids,
    /// so two workers with one id complete each other's tasks.
    pub worker_id: String,
    /// The topic to serve.
    pub topic: String,
    /// How long a fetched task stays locked; longer-running handlers get it extended.
    pub lock_duration: Duration,
    /// How long the engine may park a fetch when no task is available (at most 30 min).
    pub long_poll: Duration,
    /// Tasks in flight at once, over all engine nodes; also the most a single fetch asks for.
    pub max_tasks: u32,
    /// Retries reported on a task's first failure (then the task's own count − 1).
    pub retries: i32,
    /// How long the engine waits before handing a failed task out again.
    pub retry_timeout: Duration,
    /// Cap of the backoff while the engine is unavailable.
    pub max_backoff: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            worker_id: generated_worker_id(),
            topic: "messageSending".to_owned(),
            lock_duration: Duration::from_secs(60),
            long_poll: Duration::from_secs(45),
            max_tasks: 64,
            retries: 3,
            retry_timeout: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// A worker id unique to this process: the host name (the pod name in Kubernetes) and a random
/// suffix. Never a constant: replicas sharing an id would complete each other's tasks.
pub fn generated_worker_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host = if host.is_empty() {
        "camunda-worker".to_owned()
    } else {
        host
    };
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}

/// What one poll did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// Tasks were fetched and started.
    Fetched {
        /// How many.
        tasks: usize,
        /// Whether the engine filled every slot the fetch asked for (more may be waiting).
        saturated: bool,
    },
    /// The long poll ended without a task.
    Empty,
    /// Shutdown began; nothing more is fetched from this node.
    Stopped,
}

/// The tokens that stop a worker: `shutdown` ends fetching (and hurries follow-ups), `abort`
/// ends what is still running once the grace period is over.
#[derive(Debug, Clone, Default)]
pub struct StopTokens {
    /// Stop fetching; let running work finish.
    pub shutdown: CancellationToken,
    /// Stop everything now.
    pub abort: CancellationToken,
}

/// Everything the fetch loop and the tasks it starts share, behind one `Arc`.
pub(crate) struct WorkerContext<H> {
    pub(crate) client: EngineClient,
    pub(crate) handler: H,
    pub(crate) settings: WorkerSettings,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) follow_ups: FollowUps,
    /// One permit per task in flight, over all nodes.
    slots: Arc<Semaphore>,
    pub(crate) tracker: TaskTracker,
    pub(crate) stop: StopTokens,
    /// Ids of the tasks in flight: the shutdown sweep must not unlock these.
    in_flight: Mutex<HashSet<String>>,
    /// Long polls left parked on the engine at shutdown, and until when the engine may still
    /// lock tasks through them (it does not notice that the client went away).
    abandoned_polls: Mutex<Vec<Instant>>,
    /// Whether fetching is paused for lack of room for follow-ups (logged once per pause).
    paused: AtomicBool,
    /// Which nodes' last poll filled every slot it asked for.
    saturation: Saturation,
}

/// Which engine nodes are saturated (their last poll filled every slot it asked for), with a
/// wake-up for the nodes that wait until none is.
#[derive(Default)]
struct Saturation {
    nodes: Mutex<HashSet<String>>,
    changed: tokio::sync::Notify,
}

impl Saturation {
    fn set(&self, node: &str, saturated: bool) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let changed = if saturated {
            nodes.insert(node.to_owned())
        } else {
            nodes.remove(node)
        };
        drop(nodes);
        if changed {
            self.changed.notify_waiters();
        }
    }

    fn any(&self) -> bool {
        !self
            .nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Resolves at the next change (create it before checking [`Saturation::any`]).
    fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

impl<H> WorkerContext<H> {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // Single inserts and removes cannot leave the set inconsistent.
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this task is being handled right now.
    pub(crate) fn is_in_flight(&self, task_id: &str) -> bool {
        self.in_flight().contains(task_id)
    }

    pub(crate) fn finished(&self, task_id: &str) {
        self.in_flight().remove(task_id);
    }
}

/// Serves one topic: fetch, handle, complete, follow up.
pub struct Worker<H> {
    ctx: Arc<WorkerContext<H>>,
}

impl<H: Handler> Worker<H> {
    /// A worker whose tasks run on `tracker` (shared with the follow-ups, so one wait drains both).
    pub fn new(
        client: EngineClient,
        handler: H,
        settings: WorkerSettings,
        metrics: Arc<Metrics>,
        follow_ups: FollowUps,
        tracker: TaskTracker,
        stop: StopTokens,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(settings.max_tasks as usize));
        metrics.set_config(
            settings.max_tasks,
            settings.long_poll,
            follow_ups.settings().capacity,
        );
        Worker {
            ctx: Arc::new(WorkerContext {
                client,
                handler,
                settings,
                metrics,
                follow_ups,
                slots,
                tracker,
                stop,
                in_flight: Mutex::default(),
                abandoned_polls: Mutex::default(),
                paused: AtomicBool::new(false),
                saturation: Saturation::default(),
            }),
        }
    }

    /// Polls every engine node until shutdown, backing off while a node is unavailable. Follows
    /// the client's node list: a node that appears gets a fetch loop, one that leaves sees its loop
    /// end after its current poll. Returns when shutdown has begun and every poll has ended; the
    /// tasks it started keep running on the tracker.
    pub async fn run(&self) {
        let mut nodes = self.ctx.client.subscribe();
        let mut loops: HashMap<String, (CancellationToken, tokio::task::JoinHandle<()>)> =
            HashMap::new();
        let mut retired = Vec::new();
        info!(
            worker_id = %self.ctx.settings.worker_id,
            topic = %self.ctx.settings.topic,
            engine = %names(&nodes.borrow()),
            "polling for tasks"
        );
        loop {
            let current = Arc::clone(&nodes.borrow_and_update());
            for node in current.iter() {
                match loops.get(node.name()) {
                    Some((retire, _)) if !retire.is_cancelled() => continue,
                    // A node that left and came back: its old loop ends by itself.
                    Some(_) => {
                        if let Some(old) = loops.remove(node.name()) {
                            retired.push(old.1);
                        }
                    }
                    None => {}
                }
                let retire = CancellationToken::new();
                let worker = Worker {
                    ctx: Arc::clone(&self.ctx),
                };
                let name = node.name().to_owned();
                let node = Arc::clone(node);
                let handle = {
                    let retire = retire.clone();
                    tokio::spawn(async move { worker.run_node(&node, &retire).await })
                };
                loops.insert(name, (retire, handle));
            }
            for (name, (retire, _)) in &loops {
                if !current.iter().any(|n| n.name() == name) && !retire.is_cancelled() {
                    info!(node = %name, "engine node left: its fetch loop ends after its current poll");
                    retire.cancel();
                }
            }
            tokio::select! {
                changed = nodes.changed() => if changed.is_err() { break },
                _ = self.ctx.stop.shutdown.cancelled() => break,
            }
        }
        let handles = loops.into_values().map(|(_, handle)| handle);
        for handle in handles.chain(retired) {
            if let Err(e) = handle.await {
                error!("a fetch loop ended abnormally: {e}");
            }
        }
        debug!("fetching stopped");
    }

    /// The fetch loop of one node, until shutdown or until the node leaves (`retire`).
    async fn run_node(&self, node: &Node, retire: &CancellationToken) {
        // Readiness must not wait for the first long poll to return: ask the node once now.
        if let Err(e) = self.ctx.client.ping(node).await {
            debug!(node = %node.name(), "the engine does not answer yet: {e}");
        }
        let mut backoff = Backoff::new(self.ctx.settings.max_backoff);
        let mut trouble: Option<String> = None;
        let mut reminded = Instant::now();
        let mut trouble_since = Instant::now();
        let mut last = None;
        while !retire.is_cancelled() {
            // Alone, a node's poll takes every free slot; among several, a node that just handed
            // out tasks takes all free slots again, an idle one parks with a single slot.
            let alone = self.ctx.client.nodes().len() <= 1;
            let share = if alone || matches!(last, Some(PollOutcome::Fetched { .. })) {
                usize::MAX
            } else {
                1
            };
            let saturated = matches!(
                last,
                Some(PollOutcome::Fetched {
                    saturated: true,
                    ..
                })
            );
            self.ctx.saturation.set(node.name(), saturated);
            if !saturated && !self.wait_while_another_node_is_saturated(retire).await {
                break;
            }
            let error = match self.poll_once_sharing(node, share, saturated).await {
                Ok(PollOutcome::Stopped) => break,
                Ok(outcome) => {
                    if trouble.take().is_some() {
                        info!(node = %node.name(), "fetch-and-lock works again");
                    }
                    last = Some(outcome);
                    backoff.reset();
                    self.ctx
                        .metrics
                        .set_fetch_backoff(node.name(), Duration::ZERO);
                    continue;
                }
                Err(error) => error,
            };
            last = None;
            // An engine that is gone or refuses the credentials is reported by the client's
            // node health, once; the loop reports what only it sees.
            if !(error.engine_gone() || error.is_unauthorized()) {
                let kind = error_kind(&error);
                if trouble.as_deref() != Some(kind.as_str()) {
                    trouble_since = Instant::now();
                    reminded = Instant::now();
                    if error.is_replaced() {
                        warn!(node = %node.name(), worker_id = %self.ctx.settings.worker_id, "the engine ended this worker's long poll because another fetch with the same worker id arrived: do two workers share --worker-id?");
                    } else if error.is_transient() {
                        warn!(node = %node.name(), "fetch-and-lock failed, backing off: {error}");
                    } else {
                        error!(node = %node.name(), "fetch-and-lock refused, backing off: {error}");
                    }
                    trouble = Some(kind);
                } else if reminded.elapsed() >= TROUBLE_REMINDER {
                    warn!(
                        node = %node.name(),
                        "fetch-and-lock still failing after {}s: {error}",
                        trouble_since.elapsed().as_secs()
                    );
                    reminded = Instant::now();
                } else {
                    debug!("still failing: {error}");
                }
            } else {
                debug!("fetch-and-lock failed: {error}");
            }
            let delay = backoff.next_delay();
            self.ctx.metrics.set_fetch_backoff(node.name(), delay);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.ctx.stop.shutdown.cancelled() => break,
                _ = retire.cancelled() => break,
            }
        }
        self.ctx.saturation.set(node.name(), false);
    }

    /// While another node's poll fills every slot it asks for (a backlog), a node whose last poll
    /// found little waits instead of polling: any node can lock any task of the shared database,
    /// so under saturation one node's large fetches serve best, and parked polls on the other
    /// nodes would only hold slots and split the batches. When no node is saturated any more,
    /// every node parks its long poll again. Returns `false` when the loop should end.
    async fn wait_while_another_node_is_saturated(&self, retire: &CancellationToken) -> bool {
        loop {
            let changed = self.ctx.saturation.changed();
            if !self.ctx.saturation.any() {
                return true;
            }
            tokio::select! {
                _ = changed => {}
                _ = self.ctx.stop.shutdown.cancelled() => return false,
                _ = retire.cancelled() => return false,
            }
        }
    }

    /// One poll of the first node: wait for a free slot, fetch as many tasks as there are free
    /// slots (and room for follow-ups), and start each.
    pub async fn poll_once(&self) -> Result<PollOutcome, EngineError> {
        let nodes = self.ctx.client.nodes();
        let Some(node) = nodes.first() else {
            return Err(EngineError::NoNode("fetch-and-lock".into()));
        };
        self.poll_once_sharing(node, usize::MAX, false).await
    }

    /// One poll of `node`, taking at most `share` of the free slots.
    async fn poll_once_sharing(
        &self,
        node: &Node,
        share: usize,
        gather: bool,
    ) -> Result<PollOutcome, EngineError> {
        let Some(permits) = self.take_permits(share, gather).await else {
            return Ok(PollOutcome::Stopped);
        };
        let asked = permits.len();
        let settings = &self.ctx.settings;
        let request = FetchAndLockRequest {
            worker_id: settings.worker_id.clone(),
            max_tasks: u32::try_from(permits.len()).unwrap_or(u32::MAX),
            use_priority: true,
            async_response_timeout: millis(settings.long_poll),
            topics: vec![TopicRequest {
                topic_name: settings.topic.clone(),
                lock_duration: millis(settings.lock_duration),
                variables: self.ctx.handler.variables_to_fetch(),
            }],
        };
        let parked_until = Instant::now() + settings.long_poll;
        let fetch = self.ctx.client.fetch_and_lock(node, &request);
        tokio::pin!(fetch);
        let fetched = tokio::select! {
            fetched = &mut fetch => fetched,
            _ = self.ctx.stop.shutdown.cancelled() => {
                self.end_parked_poll(node, fetch, permits, parked_until).await;
                return Ok(PollOutcome::Stopped);
            }
        };
        let tasks = match fetched {
            Ok(tasks) => tasks,
            Err(error) => {
                self.ctx
                    .metrics
                    .fetched(node.name(), FetchOutcome::Error, 0);
                return Err(error);
            }
        };
        if tasks.is_empty() {
            self.ctx
                .metrics
                .fetched(node.name(), FetchOutcome::Empty, 0);
            return Ok(PollOutcome::Empty);
        }
        self.ctx
            .metrics
            .fetched(node.name(), FetchOutcome::Tasks, tasks.len());
        let count = tasks.len();
        self.start_tasks(node, tasks, permits);
        Ok(PollOutcome::Fetched {
            tasks: count,
            saturated: count >= asked,
        })
    }

    /// At shutdown, ends this node's long poll. Dropping the request would close the connection,
    /// but the engine keeps the poll parked until its timeout, still able to lock tasks for this
    /// worker id; so the engine is asked to cancel it — more than once, because the poll may
    /// reach the engine's queue only after the first request — and the poll's answer is awaited.
    /// Tasks it hands out meanwhile are started, which (shutdown having begun) gives them back.
    async fn end_parked_poll<F>(
        &self,
        node: &Node,
        mut fetch: std::pin::Pin<&mut F>,
        permits: Vec<Permits>,
        parked_until: Instant,
    ) where
        F: std::future::Future<Output = Result<Vec<ExternalTask>, EngineError>>,
    {
        let worker_id = &self.ctx.settings.worker_id;
        let deadline = Instant::now() + CANCEL_WAIT;
        let answer = loop {
            let (_, answer) = tokio::join!(
                tokio::time::timeout_at(
                    deadline,
                    self.ctx.client.cancel_parked_poll(node, worker_id)
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
                self.start_tasks(node, tasks, permits);
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
                self.abandoned(parked_until);
            }
            None => {
                debug!(node = %node.name(), "the engine keeps the long poll parked (no fetch-and-lock-unique-worker-request)");
                self.abandoned(parked_until);
            }
        }
    }

    /// Waits for one free slot and room for one follow-up, then takes as many more of both as
    /// are free, up to `share`. `None` when shutdown began first.
    async fn take_permits(&self, share: usize, gather: bool) -> Option<Vec<Permits>> {
        let ctx = &self.ctx;
        let shutdown = &ctx.stop.shutdown;
        let slot = tokio::select! {
            permit = Arc::clone(&ctx.slots).acquire_owned() => permit.ok()?,
            _ = shutdown.cancelled() => return None,
        };
        let room_left = ctx.follow_ups.room();
        let room = match Arc::clone(&room_left).try_acquire_owned() {
            Ok(room) => room,
            Err(_) => {
                self.pause(true);
                let room = tokio::select! {
                    permit = Arc::clone(&room_left).acquire_owned() => permit.ok()?,
                    _ = shutdown.cancelled() => return None,
                };
                self.pause(false);
                room
            }
        };
        let mut permits = vec![Permits { slot, room }];
        // Under saturation (the last fetch filled every slot it asked for), linger a moment for
        // half the slots to come free: fewer, larger fetches cost the engine less than one fetch
        // per freed slot.
        let target = if gather {
            share.min((ctx.settings.max_tasks as usize / 2).max(1))
        } else {
            1
        };
        let linger_until = Instant::now() + BATCH_LINGER;
        while permits.len() < share {
            let slot = match Arc::clone(&ctx.slots).try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) if permits.len() < target => {
                    match tokio::time::timeout_at(
                        linger_until,
                        Arc::clone(&ctx.slots).acquire_owned(),
                    )
                    .await
                    {
                        Ok(Ok(slot)) => slot,
                        _ => break,
                    }
                }
                Err(_) => break,
            };
            let Ok(room) = Arc::clone(&room_left).try_acquire_owned() else {
                break;
            };
            permits.push(Permits { slot, room });
        }
        Some(permits)
    }

    /// Records (and logs once) that fetching waits for room among the pending follow-ups.
    fn pause(&self, paused: bool) {
        let ctx = &self.ctx;
        if ctx.paused.swap(paused, Ordering::Relaxed) == paused {
            return;
        }
        ctx.metrics.set_fetch_paused(paused);
        if paused {
            warn!(
                capacity = ctx.follow_ups.settings().capacity,
                "pending follow-ups are at capacity (--max-pending-follow-ups): fetching paused until messages are delivered or given up"
            );
        } else {
            info!("room for follow-ups again: fetching resumed");
        }
    }

    fn abandoned(&self, until: Instant) {
        self.ctx
            .abandoned_polls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(until);
    }

    /// Until when the engine may still lock tasks for this worker through a long poll left
    /// parked at shutdown; `None` when every poll ended.
    pub fn abandoned_poll_until(&self) -> Option<Instant> {
        self.ctx
            .abandoned_polls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .max()
            .copied()
    }

    /// Unlocks every task the engine holds for this worker id and this worker does not handle,
    /// until `until` (at least once) and never past `deadline`: see [`crate::release`].
    pub async fn release_locks(&self, until: Instant, deadline: Instant) {
        crate::release::release_locks(&self.ctx, until, deadline).await;
    }

    fn start_tasks(&self, node: &Node, tasks: Vec<ExternalTask>, mut permits: Vec<Permits>) {
        if tasks.len() > permits.len() {
            warn!(
                node = %node.name(),
                asked = permits.len(),
                got = tasks.len(),
                "the engine handed out more tasks than asked for; handling them all"
            );
        }
        let fetched_at = Instant::now();
        for task in tasks {
            self.start_task(task, permits.pop(), fetched_at);
        }
    }

    fn start_task(&self, task: ExternalTask, permits: Option<Permits>, fetched_at: Instant) {
        let span = tracing::info_span!(
            "task",
            task_id = %task.id,
            process_instance_id = task.process_instance_id.as_deref().unwrap_or(""),
            business_key = task.business_key.as_deref().unwrap_or(""),
            topic = %self.ctx.settings.topic,
        );
        self.ctx.in_flight().insert(task.id.clone());
        self.ctx.metrics.add_in_flight(1);
        let (slot, room) = match permits {
            Some(Permits { slot, room }) => (Some(slot), Some(room)),
            None => (None, None),
        };
        let run = TaskRun::new(Arc::clone(&self.ctx), task, fetched_at, room);
        let ctx = Arc::clone(&self.ctx);
        self.ctx.tracker.spawn(
            async move {
                let task_id = run.task_id().to_owned();
                let outcome = run.process().await;
                debug!(?outcome, "task done");
                ctx.finished(&task_id);
                ctx.metrics.add_in_flight(-1);
                drop(slot);
            }
            .instrument(span),
        );
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

/// What a task takes before it is fetched: a slot (a task in flight) and room for its follow-up.
struct Permits {
    slot: OwnedSemaphorePermit,
    room: OwnedSemaphorePermit,
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
        EngineError::Credentials(text) | EngineError::NoNode(text) => text.clone(),
        EngineError::Resent(inner) => error_kind(inner),
    }
}
